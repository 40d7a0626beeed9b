//! An in-process fake Kubernetes API server for EKS Auto Mode `NodeClass`
//! (`eks.amazonaws.com/v1`) and Karpenter `NodePool` (`karpenter.sh/v1`).
//!
//! It reproduces the API server semantics headroom depends on, with the real
//! status codes and `Status` bodies: optimistic concurrency on
//! `resourceVersion` (409), CRD validation (422), the patch types a custom
//! resource accepts (415 for strategic merge), bearer-token auth (401) with
//! two identities (headroom in its group, and an administrator), headroom's
//! ValidatingAdmissionPolicy (`crate::admission`, 403 as the real denial), a
//! status subresource that main-resource writes cannot change, a pluggable
//! controller that fills `status` after a spec change, and watches
//! (`?watch=true`: initial ADDED events or a replay from a resourceVersion,
//! then live ADDED/MODIFIED/DELETED, 410 `Expired` for a resourceVersion
//! older than the [`WATCH_HISTORY`] kept changes).
//!
//! Not implemented: server-side apply (answered 415), namespaced resources,
//! YAML request bodies, aggregated discovery, pruning of unknown fields
//! outside selector terms, periodic watch bookmarks, the deprecated
//! `/watch/` paths.
//!
//! One concern a file: `state` holds the objects, requests and settings;
//! `protocol` routes and parses HTTP; `verbs` implements get, list, create,
//! replace, patch and delete; `watch` streams changes; `errors` shapes
//! `Status` bodies; `faults` injects failures; `controller` fills NodeClass
//! status; `validate` and `resolver` are the CRD schema and the Auto Mode
//! emulator. This file is the public surface: the server, its handle,
//! seeding and kubeconfig.

mod controller;
mod errors;
mod faults;
mod protocol;
mod resolver;
mod state;
mod validate;
mod verbs;
mod watch;

use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};

pub use controller::StatusResolver;
pub use resolver::ec2_status_resolver;
pub use state::{ADMIN_USERNAME, RecordedRequest, nodeclass_api_resource, nodepool_api_resource};
pub use watch::WATCH_HISTORY;

use crate::TestbedError;
use crate::admission::{AdmissionPolicy, UserInfo};
use crate::net::{ServerTask, bind_loopback};
use controller::schedule_status;
use protocol::handle_request;
use state::{RESOURCES, Shared, Store, generation_of, meta_str, metadata_mut, now_rfc3339, resource_type, spec_of};

/// Plural of the EKS Auto Mode NodeClass resource.
pub const NODECLASSES: &str = "nodeclasses";
/// Plural of the Karpenter NodePool resource.
pub const NODEPOOLS: &str = "nodepools";

/// The user headroom's token authenticates, as EKS names an access entry's
/// IAM role session.
pub const HEADROOM_USERNAME: &str = "arn:aws:sts::123456789012:assumed-role/headroom-function/headroom";
/// The Kubernetes group of headroom's access entry (template default).
pub const HEADROOM_GROUP: &str = "headroom";

/// Cloneable access to a [`FakeKube`]: test hooks and client configuration.
#[derive(Clone)]
pub struct FakeKubeHandle {
    shared: Arc<Shared>,
}

/// The fake API server. Dropping it stops the server, its connections (open
/// watches end) and any pending status resolutions.
pub struct FakeKube {
    handle: FakeKubeHandle,
    _server: ServerTask,
}

/// A self-signed CA, base64 PEM, as EKS puts the cluster's CA in a
/// kubeconfig. The server speaks plain HTTP on loopback, so it is never used
/// to verify anything; but with it kube-rs trusts that CA alone, as against
/// EKS, instead of loading every root certificate of the machine for each
/// client (~5 ms here), which would blur the timings of the benchmarks.
fn throwaway_ca_data() -> String {
    use base64::Engine as _;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("no names to check");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "headroom fake API server CA");
    let key = rcgen::KeyPair::generate().expect("a key pair");
    let ca = params.self_signed(&key).expect("a self-signed CA");
    base64::engine::general_purpose::STANDARD.encode(ca.pem())
}

impl FakeKube {
    /// Starts the server on 127.0.0.1 with a fresh bearer token.
    pub async fn start() -> Result<Self, TestbedError> {
        let (listener, addr) = bind_loopback("fake Kubernetes API server").await?;
        let token = format!("headroom-test-{:016x}", token_seed(addr.port()));
        let admin_token = format!("admin-test-{:016x}", token_seed(addr.port()).rotate_left(17));
        let shared = Arc::new(Shared {
            url: format!("http://{addr}"),
            token,
            headroom: UserInfo {
                username: HEADROOM_USERNAME.into(),
                groups: vec![HEADROOM_GROUP.into(), "system:authenticated".into()],
            },
            admin_token,
            ca_data: throwaway_ca_data(),
            store: Mutex::new(Store::new()),
        });
        let router = Router::new().fallback(handle_request).with_state(Arc::clone(&shared));
        let server = ServerTask::spawn(listener, "fake-kube", move |stream, peer| {
            let service = TowerToHyperService::new(router.clone());
            async move {
                let connection =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, %error, "fake kube connection ended with an error");
                }
            }
        });
        tracing::debug!(url = %shared.url, "fake Kubernetes API server listening");
        Ok(Self { handle: FakeKubeHandle { shared }, _server: server })
    }

    /// A handle that can be moved into tasks or closures.
    pub fn handle(&self) -> FakeKubeHandle {
        self.handle.clone()
    }
}

impl Deref for FakeKube {
    type Target = FakeKubeHandle;

    fn deref(&self) -> &FakeKubeHandle {
        &self.handle
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        let mut store = self.handle.shared.lock();
        for task in store.resolver_tasks.drain(..) {
            task.abort();
        }
    }
}

fn token_seed(port: u16) -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    nanos ^ (u64::from(port) << 48) ^ u64::from(std::process::id())
}

impl FakeKubeHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The bearer token every request must carry.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// A cluster administrator's bearer token (`system:masters`), whom the
    /// admission policy leaves alone.
    pub fn admin_token(&self) -> &str {
        &self.shared.admin_token
    }

    /// Enforces `policy` on every create and update (`None`: none), as the
    /// API server enforces a ValidatingAdmissionPolicy. Kept across
    /// [`reset`](Self::reset).
    pub fn set_admission_policy(&self, policy: Option<AdmissionPolicy>) {
        self.shared.lock().admission = policy.map(Arc::new);
    }

    /// A kube-rs client that authenticates as the administrator.
    pub async fn admin_kube_client(&self) -> Result<kube::Client, TestbedError> {
        self.client_for(&self.kubeconfig().replace(&self.shared.token, &self.shared.admin_token)).await
    }

    /// A kubeconfig (YAML) with one context: this server, bearer token auth
    /// as headroom.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: headroom-fake\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\n\
             users:\n\
             - name: headroom-fake\n  user:\n    token: {token}\n\
             contexts:\n\
             - name: headroom-fake\n  context:\n    cluster: headroom-fake\n    user: headroom-fake\n\
             current-context: headroom-fake\n\
             preferences: {{}}\n",
            url = self.shared.url,
            token = self.shared.token,
            ca = self.shared.ca_data,
        )
    }

    /// Writes [`kubeconfig`](Self::kubeconfig) to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), TestbedError> {
        std::fs::write(path, self.kubeconfig())
            .map_err(|e| TestbedError::io(format!("writing kubeconfig {}", path.display()), e))
    }

    /// A kube-rs client configured from [`kubeconfig`](Self::kubeconfig).
    pub async fn kube_client(&self) -> Result<kube::Client, TestbedError> {
        self.client_for(&self.kubeconfig()).await
    }

    async fn client_for(&self, kubeconfig: &str) -> Result<kube::Client, TestbedError> {
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(kubeconfig).map_err(|e| TestbedError::Kube(e.to_string()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| TestbedError::Kube(e.to_string()))?;
        kube::Client::try_from(config).map_err(|e| TestbedError::Kube(e.to_string()))
    }

    /// Stores `object` as is (no validation), filling `uid`,
    /// `creationTimestamp`, `generation` and a new `resourceVersion`; for
    /// seeding, e.g. the built-in `default` NodeClass. Not recorded as a
    /// request. A NodeClass without `status` is handed to the status resolver.
    pub fn put_object(&self, plural: &str, object: Value) -> Result<Value, TestbedError> {
        let rt = resource_type(plural)
            .ok_or_else(|| TestbedError::Invalid(format!("unknown resource plural {plural:?}")))?;
        let Value::Object(mut object) = object else {
            return Err(TestbedError::Invalid("object must be a JSON object".into()));
        };
        let name = object
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| TestbedError::Invalid("object needs metadata.name".into()))?;
        object.entry("apiVersion").or_insert_with(|| Value::String(rt.api_version()));
        object.entry("kind").or_insert_with(|| Value::String(rt.kind.into()));
        let mut object = Value::Object(object);

        let mut store = self.shared.lock();
        let previous = store.object(rt, &name).cloned();
        let generation = match &previous {
            Some(prev) if spec_of(prev) == spec_of(&object) => generation_of(prev),
            Some(prev) => generation_of(prev) + 1,
            None => 1,
        };
        let uid = match previous.as_ref().and_then(|p| meta_str(p, "uid")) {
            Some(uid) => uid,
            None => store.next_uid(),
        };
        let meta = metadata_mut(&mut object);
        meta.entry("uid").or_insert(Value::String(uid));
        meta.entry("creationTimestamp").or_insert_with(|| Value::String(now_rfc3339()));
        meta.insert("generation".into(), json!(generation));
        let object = store.commit(rt, &name, object);
        if rt.plural == NODECLASSES && object.get("status").is_none() {
            schedule_status(&self.shared, &mut store, name, generation, object.clone());
        }
        Ok(object)
    }

    /// The stored object, if any.
    pub fn get_object(&self, plural: &str, name: &str) -> Option<Value> {
        let rt = resource_type(plural)?;
        self.shared.lock().object(rt, name).cloned()
    }

    /// All stored objects of a kind, by name.
    pub fn list_objects(&self, plural: &str) -> Vec<Value> {
        let Some(rt) = resource_type(plural) else {
            return Vec::new();
        };
        self.shared.lock().objects.get(rt.plural).map(|objects| objects.values().cloned().collect()).unwrap_or_default()
    }

    /// Removes an object without a request (watchers see it DELETED);
    /// returns it.
    pub fn remove_object(&self, plural: &str, name: &str) -> Option<Value> {
        let rt = resource_type(plural)?;
        self.shared.lock().commit_delete(rt, name)
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Number of write requests (POST/PUT/PATCH/DELETE, any outcome,
    /// subresources included) addressed to this object. Seeding with
    /// [`put_object`](Self::put_object) is not counted.
    pub fn writes_to(&self, plural: &str, name: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.is_write() && r.plural.as_deref() == Some(plural) && r.name.as_deref() == Some(name))
            .count()
    }

    /// Removes every NodeClass and NodePool and forgets the recorded
    /// requests, pending write faults and GET hooks; for reusing one server
    /// across scenarios; open watches see the objects DELETED. Settings
    /// (resolver, status delay, page cap, latency, admission policy) stay.
    pub fn reset(&self) {
        let mut store = self.shared.lock();
        for rt in &RESOURCES {
            let names: Vec<String> =
                store.objects.get(rt.plural).map(|o| o.keys().cloned().collect()).unwrap_or_default();
            for name in names {
                store.commit_delete(rt, &name);
            }
        }
        store.requests.clear();
        store.write_faults.clear();
        store.get_hooks.clear();
        for task in store.resolver_tasks.drain(..) {
            task.abort();
        }
        store.next_rv();
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().resource_version
    }

    /// Polls the stored object until `predicate` holds (e.g. status resolved)
    /// or `timeout` passes; returns the object that satisfied it.
    pub async fn wait_for(
        &self,
        plural: &str,
        name: &str,
        timeout: Duration,
        predicate: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(object) = self.get_object(plural, name)
                && predicate(&object)
            {
                return Some(object);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
