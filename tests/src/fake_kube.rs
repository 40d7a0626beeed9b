//! An in-process fake Kubernetes API server for EKS Auto Mode `NodeClass`
//! (`eks.amazonaws.com/v1`) and Karpenter `NodePool` (`karpenter.sh/v1`).
//!
//! It reproduces the API server semantics headroom depends on, with the real
//! status codes and `Status` bodies: optimistic concurrency on
//! `resourceVersion` (409), CRD validation (422), the patch types a custom
//! resource accepts (415 for strategic merge), bearer-token auth (401), a
//! status subresource that main-resource writes cannot change, and a
//! pluggable controller that fills `status` after a spec change.
//!
//! Not implemented: watch, server-side apply (answered 415), namespaced
//! resources, YAML request bodies, aggregated discovery, pruning of unknown
//! fields outside selector terms.

mod resolver;
mod validate;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use http::{HeaderValue, Method, StatusCode, header};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{Map, Value, json};
use tokio::task::AbortHandle;

pub use resolver::ec2_status_resolver;

use crate::TestbedError;
use crate::net::{ServerTask, bind_loopback};

/// Plural of the EKS Auto Mode NodeClass resource.
pub const NODECLASSES: &str = "nodeclasses";
/// Plural of the Karpenter NodePool resource.
pub const NODEPOOLS: &str = "nodepools";

/// Computes a NodeClass's new `status` from the NodeClass (whole object), or
/// `None` to leave it unchanged; stands in for the EKS Auto Mode controller.
pub type StatusResolver = Arc<dyn Fn(Value) -> BoxFuture<'static, Option<Value>> + Send + Sync>;

/// One request as the fake API server answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub content_type: Option<String>,
    pub status: u16,
    /// Resource plural, for resource requests.
    pub plural: Option<String>,
    /// Object name: from the URL, or from the body for a create.
    pub name: Option<String>,
    /// `status` for the status subresource.
    pub subresource: Option<String>,
}

impl RecordedRequest {
    /// Whether the request tried to change state (POST, PUT, PATCH, DELETE),
    /// whatever its outcome; a dry run (`dryRun=All`) only asks.
    pub fn is_write(&self) -> bool {
        self.asks_to_write() && !self.is_dry_run()
    }

    /// A write request, dry run or not: RBAC and injected write faults
    /// answer both alike.
    pub fn asks_to_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }

    /// A write sent with `dryRun=All`: validated and authorised, never stored.
    pub fn is_dry_run(&self) -> bool {
        self.query.as_deref().is_some_and(|q| q.split('&').any(|p| p == "dryRun=All"))
    }
}

#[derive(Debug)]
struct ResourceType {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
}

impl ResourceType {
    fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// `nodeclasses.eks.amazonaws.com`, as in NotFound/Conflict messages.
    fn qualified_plural(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

const RESOURCES: [ResourceType; 2] = [
    ResourceType {
        group: "eks.amazonaws.com",
        version: "v1",
        plural: NODECLASSES,
        singular: "nodeclass",
        kind: "NodeClass",
    },
    ResourceType { group: "karpenter.sh", version: "v1", plural: NODEPOOLS, singular: "nodepool", kind: "NodePool" },
];

fn resource_type(plural: &str) -> Option<&'static ResourceType> {
    RESOURCES.iter().find(|rt| rt.plural == plural)
}

/// The `ApiResource` for NodeClass, for `kube::Api<DynamicObject>`.
pub fn nodeclass_api_resource() -> kube::discovery::ApiResource {
    kube::discovery::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("eks.amazonaws.com", "v1", "NodeClass"),
        NODECLASSES,
    )
}

/// The `ApiResource` for NodePool, for `kube::Api<DynamicObject>`.
pub fn nodepool_api_resource() -> kube::discovery::ApiResource {
    kube::discovery::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("karpenter.sh", "v1", "NodePool"),
        NODEPOOLS,
    )
}

type GetHook = Box<dyn FnOnce(&mut Value) + Send>;

/// What happens to one upcoming write (see [`FakeKubeHandle::fail_next_writes`]).
#[derive(Debug, Clone, Copy)]
enum WriteFault {
    /// Handled normally.
    Pass,
    /// Answered with this status; nothing changes.
    Refuse(StatusCode),
    /// Applied, then answered with this status instead of the result.
    LoseAnswer(StatusCode),
}

struct Store {
    resource_version: u64,
    uid_counter: u64,
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    requests: Vec<RecordedRequest>,
    get_hooks: HashMap<(String, String), VecDeque<GetHook>>,
    /// Upcoming resource writes, in order; empty: all pass.
    write_faults: VecDeque<WriteFault>,
    status_delay: Duration,
    resolver: Option<StatusResolver>,
    resolver_tasks: Vec<AbortHandle>,
    /// `Some(n)`: lists return at most n items a page, whatever `limit` asked.
    max_list_page: Option<usize>,
}

impl Store {
    fn next_rv(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    fn next_uid(&mut self) -> String {
        self.uid_counter += 1;
        format!("7e57bed0-0000-4000-8000-{:012x}", self.uid_counter)
    }

    fn objects_mut(&mut self, rt: &ResourceType) -> &mut BTreeMap<String, Value> {
        self.objects.entry(rt.plural).or_default()
    }

    fn object(&self, rt: &ResourceType, name: &str) -> Option<&Value> {
        self.objects.get(rt.plural).and_then(|objects| objects.get(name))
    }
}

struct Shared {
    url: String,
    token: String,
    /// Base64 PEM of a throwaway CA, for the kubeconfig.
    ca_data: String,
    store: Mutex<Store>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Cloneable access to a [`FakeKube`]: test hooks and client configuration.
#[derive(Clone)]
pub struct FakeKubeHandle {
    shared: Arc<Shared>,
}

/// The fake API server. Dropping it stops the server, its connections and
/// any pending status resolutions.
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
        let shared = Arc::new(Shared {
            url: format!("http://{addr}"),
            token,
            ca_data: throwaway_ca_data(),
            store: Mutex::new(Store {
                resource_version: 1000,
                uid_counter: 0,
                objects: BTreeMap::new(),
                requests: Vec::new(),
                get_hooks: HashMap::new(),
                write_faults: VecDeque::new(),
                status_delay: Duration::ZERO,
                resolver: None,
                resolver_tasks: Vec::new(),
                max_list_page: None,
            }),
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

    /// A kubeconfig (YAML) with one context: this server, bearer token auth.
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
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&self.kubeconfig()).map_err(|e| TestbedError::Kube(e.to_string()))?;
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
        let rv = store.next_rv();
        let meta = metadata_mut(&mut object);
        meta.entry("uid").or_insert(Value::String(uid));
        meta.entry("creationTimestamp").or_insert_with(|| Value::String(now_rfc3339()));
        meta.insert("generation".into(), json!(generation));
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        store.objects_mut(rt).insert(name.clone(), object.clone());
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

    /// Removes an object without a request; returns it.
    pub fn remove_object(&self, plural: &str, name: &str) -> Option<Value> {
        let rt = resource_type(plural)?;
        let mut store = self.shared.lock();
        let removed = store.objects_mut(rt).remove(name);
        if removed.is_some() {
            store.next_rv();
        }
        removed
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

    /// Simulates a concurrent writer: the next GET of this object (or LIST
    /// that returns it) is answered with the current object, then `mutate`
    /// is applied to the stored object
    /// and its resourceVersion bumped (generation too if the spec changed), so
    /// the client's following write carries a stale resourceVersion or fails
    /// a JSON Patch `test`. Hooks queue up; each GET consumes one.
    /// `mutate` runs under the server's lock: it must not call this handle.
    pub fn on_next_get(&self, plural: &str, name: &str, mutate: impl FnOnce(&mut Value) + Send + 'static) {
        self.shared
            .lock()
            .get_hooks
            .entry((plural.to_owned(), name.to_owned()))
            .or_default()
            .push_back(Box::new(mutate));
    }

    /// Makes the API server fail the next `n` resource writes (POST, PUT,
    /// PATCH, DELETE of a NodeClass or NodePool, subresources included, any
    /// object, dry runs too; counted after any write faults already queued) with `status`
    /// (e.g. 500) and a `Status` body, without applying them: the server was
    /// unavailable. Note kube-rs retries 429, 503 and 504 by itself, so a
    /// write that must fail for the client should use another status.
    pub fn fail_next_writes(&self, n: usize, status: u16) {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut store = self.shared.lock();
        store.write_faults.extend(std::iter::repeat_n(WriteFault::Refuse(code), n));
    }

    /// Lets `nth - 1` resource writes through, then answers the `nth` (from
    /// now, 1-based) with `status`. With `applied`, the server makes the
    /// change first and only the answer is an error: the client cannot know
    /// its write landed. Replaces write faults queued earlier.
    pub fn fail_nth_write(&self, nth: usize, status: u16, applied: bool) {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut store = self.shared.lock();
        store.write_faults.clear();
        store.write_faults.extend(std::iter::repeat_n(WriteFault::Pass, nth.max(1) - 1));
        store.write_faults.push_back(if applied { WriteFault::LoseAnswer(code) } else { WriteFault::Refuse(code) });
    }

    /// Drops write faults that have not fired yet.
    pub fn clear_write_faults(&self) {
        self.shared.lock().write_faults.clear();
    }

    /// Removes every NodeClass and NodePool and forgets the recorded
    /// requests, pending write faults and GET hooks; for reusing one server
    /// across scenarios. Settings (resolver, status delay) stay.
    pub fn reset(&self) {
        let mut store = self.shared.lock();
        store.objects.clear();
        store.requests.clear();
        store.write_faults.clear();
        store.get_hooks.clear();
        for task in store.resolver_tasks.drain(..) {
            task.abort();
        }
        store.next_rv();
    }

    /// Lists answer at most `n` items a page (`None`: as many as `limit`
    /// asks), so a client that ignores `continue` misses the rest.
    pub fn set_max_list_page(&self, n: Option<usize>) {
        self.shared.lock().max_list_page = n.map(|n| n.max(1));
    }

    /// Delay between a NodeClass spec write and the status resolver's run.
    pub fn set_status_delay(&self, delay: Duration) {
        self.shared.lock().status_delay = delay;
    }

    /// Installs (or removes) the controller that computes NodeClass status.
    pub fn set_status_resolver(&self, resolver: Option<StatusResolver>) {
        self.shared.lock().resolver = resolver;
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

// ---------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------

/// A failed request: HTTP status plus the `Status` object body.
#[derive(Debug)]
struct ApiError {
    code: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(code: StatusCode, reason: &str, message: impl Into<String>, details: Option<Value>) -> Self {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message.into(),
            "code": code.as_u16(),
        });
        if !reason.is_empty() {
            body["reason"] = json!(reason);
        }
        if let Some(details) = details {
            body["details"] = details;
        }
        Self { code, body }
    }

    fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified_plural()),
            Some(json!({"name": name, "group": rt.group, "kind": rt.plural})),
        )
    }

    fn path_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        )
    }

    fn method_not_allowed(method: &Method) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
            Some(json!({})),
        )
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message, None)
    }

    fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                rt.qualified_plural()
            ),
            Some(json!({"name": name, "group": rt.group, "kind": rt.plural})),
        )
    }

    fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified_plural()),
            Some(json!({"name": name, "group": rt.group, "kind": rt.plural})),
        )
    }

    /// 422 with field causes, worded like the API server's CRD validation.
    fn invalid(rt: &ResourceType, name: &str, errors: &[validate::FieldError]) -> Self {
        let rendered: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let summary = if rendered.len() == 1 { rendered[0].clone() } else { format!("[{}]", rendered.join(", ")) };
        let causes: Vec<Value> =
            errors.iter().map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field})).collect();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{}.{} \"{name}\" is invalid: {summary}", rt.kind, rt.group),
            Some(json!({"name": name, "group": rt.group, "kind": rt.kind, "causes": causes})),
        )
    }

    /// 422 for a resourceVersion-less update, as for every custom resource.
    fn rv_required(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: metadata.resourceVersion: Invalid value: 0x0: \
                 must be specified for an update",
                rt.qualified_plural()
            ),
            Some(json!({
                "name": name, "group": rt.group, "kind": rt.plural,
                "causes": [{
                    "reason": "FieldValueInvalid",
                    "message": "Invalid value: 0x0: must be specified for an update",
                    "field": "metadata.resourceVersion",
                }],
            })),
        )
    }

    fn unsupported_media_type(accepted: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: {accepted}"),
            Some(json!({})),
        )
    }

    fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized", None)
    }
}

/// An injected write failure, shaped like the API server's own 5xx answers.
fn injected_failure(code: StatusCode) -> ApiError {
    let reason = match code.as_u16() {
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        429 => "TooManyRequests",
        _ => "",
    };
    ApiError::new(code, reason, "the fake API server failed this write on purpose (fail_next_writes)", None)
}

type ApiResult = Result<(StatusCode, Value), ApiError>;

enum Route<'a> {
    Version,
    Api,
    ApiV1,
    Apis,
    GroupVersion(&'a str, &'a str),
    Collection(&'static ResourceType),
    Object(&'static ResourceType, &'a str),
    Status(&'static ResourceType, &'a str),
    Unknown,
}

fn route(path: &str) -> Route<'_> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let resource = |group: &str, version: &str, plural: &str| {
        RESOURCES.iter().find(|rt| rt.group == group && rt.version == version && rt.plural == plural)
    };
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["api"] => Route::Api,
        ["api", "v1"] => Route::ApiV1,
        ["apis"] => Route::Apis,
        ["apis", group, version] => Route::GroupVersion(group, version),
        ["apis", group, version, plural] => match resource(group, version, plural) {
            Some(rt) => Route::Collection(rt),
            None => Route::Unknown,
        },
        ["apis", group, version, plural, name] => match resource(group, version, plural) {
            Some(rt) => Route::Object(rt, name),
            None => Route::Unknown,
        },
        ["apis", group, version, plural, name, "status"] => match resource(group, version, plural) {
            Some(rt) => Route::Status(rt, name),
            None => Route::Unknown,
        },
        _ => Route::Unknown,
    }
}

async fn handle_request(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let authorized = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| token.trim() == shared.token);

    let body = match axum::body::to_bytes(body, 16 << 20).await {
        Ok(body) => body,
        Err(error) => {
            return respond(Err(ApiError::bad_request(format!("reading the request body: {error}"))));
        }
    };

    let mut record = RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: content_type.clone(),
        status: 0,
        plural: None,
        name: None,
        subresource: None,
    };
    let route = route(&path);
    match &route {
        Route::Collection(rt) => {
            record.plural = Some(rt.plural.to_owned());
            if parts.method == Method::POST {
                record.name = serde_json::from_slice::<Value>(&body).ok().and_then(|v| meta_str(&v, "name"));
            }
        }
        Route::Object(rt, name) => {
            record.plural = Some(rt.plural.to_owned());
            record.name = Some((*name).to_owned());
        }
        Route::Status(rt, name) => {
            record.plural = Some(rt.plural.to_owned());
            record.name = Some((*name).to_owned());
            record.subresource = Some("status".to_owned());
        }
        _ => {}
    }

    let is_resource_write =
        record.asks_to_write() && matches!(route, Route::Collection(_) | Route::Object(..) | Route::Status(..));
    let write_fault = if authorized && is_resource_write {
        shared.lock().write_faults.pop_front().unwrap_or(WriteFault::Pass)
    } else {
        WriteFault::Pass
    };
    let result = if !authorized {
        Err(ApiError::unauthorized())
    } else if let WriteFault::Refuse(code) = write_fault {
        Err(injected_failure(code))
    } else {
        let ctx = RequestCtx {
            shared: &shared,
            method: &parts.method,
            query: query.as_deref(),
            content_type: content_type.as_deref(),
            body: &body,
        };
        let result = dispatch(&ctx, route);
        match write_fault {
            WriteFault::LoseAnswer(code) => Err(injected_failure(code)),
            _ => result,
        }
    };
    let status = match &result {
        Ok((status, _)) => *status,
        Err(error) => error.code,
    };
    record.status = status.as_u16();
    tracing::debug!(method = %record.method, path = %record.path, status = record.status, "fake kube request");
    shared.lock().requests.push(record);
    respond(result)
}

fn respond(result: ApiResult) -> Response {
    let (status, body) = match result {
        Ok(ok) => ok,
        Err(error) => (error.code, error.body),
    };
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

struct RequestCtx<'a> {
    shared: &'a Arc<Shared>,
    method: &'a Method,
    query: Option<&'a str>,
    content_type: Option<&'a str>,
    body: &'a [u8],
}

impl RequestCtx<'_> {
    fn query_param(&self, key: &str) -> Option<String> {
        self.query?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then(|| url_decode(v))
        })
    }

    fn dry_run(&self) -> bool {
        self.query_param("dryRun").is_some_and(|v| v == "All")
    }

    /// The media type without parameters (`; charset=utf-8`).
    fn media_type(&self) -> Option<&str> {
        self.content_type.map(|ct| ct.split(';').next().unwrap_or(ct).trim())
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        match self.media_type() {
            None | Some("application/json") => {}
            Some(_) => {
                return Err(ApiError::unsupported_media_type(
                    "application/json, application/yaml, application/vnd.kubernetes.protobuf",
                ));
            }
        }
        serde_json::from_slice(self.body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    }
}

fn url_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn dispatch(ctx: &RequestCtx<'_>, route: Route<'_>) -> ApiResult {
    let method = ctx.method;
    let get_only = |body: Value| -> ApiResult {
        if *method == Method::GET { Ok((StatusCode::OK, body)) } else { Err(ApiError::method_not_allowed(method)) }
    };
    match route {
        Route::Version => get_only(json!({
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0-eks-headroom-fake",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        })),
        Route::Api => get_only(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{
                "clientCIDR": "0.0.0.0/0",
                "serverAddress": ctx.shared.url.trim_start_matches("http://"),
            }],
        })),
        Route::ApiV1 => get_only(json!({
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [],
        })),
        Route::Apis => get_only(api_group_list()),
        Route::GroupVersion(group, version) => match api_resource_list(group, version) {
            Some(list) => get_only(list),
            None => Err(ApiError::path_not_found()),
        },
        Route::Collection(rt) => match *method {
            Method::GET => {
                if ctx.query_param("watch").is_some_and(|v| v == "true" || v == "1") {
                    return Err(ApiError::bad_request("watch is not supported by the fake API server"));
                }
                list(ctx, rt)
            }
            Method::POST => create(ctx, rt),
            _ => Err(ApiError::method_not_allowed(method)),
        },
        Route::Object(rt, name) => match *method {
            Method::GET => get(ctx, rt, name),
            Method::PUT => replace(ctx, rt, name, false),
            Method::PATCH => patch(ctx, rt, name, false),
            Method::DELETE => delete(ctx, rt, name),
            _ => Err(ApiError::method_not_allowed(method)),
        },
        Route::Status(rt, name) => match *method {
            Method::GET => get(ctx, rt, name),
            Method::PUT => replace(ctx, rt, name, true),
            Method::PATCH => patch(ctx, rt, name, true),
            _ => Err(ApiError::method_not_allowed(method)),
        },
        Route::Unknown => Err(ApiError::path_not_found()),
    }
}

fn api_group_list() -> Value {
    let groups: Vec<Value> = RESOURCES
        .iter()
        .map(|rt| {
            let gv = json!({"groupVersion": rt.api_version(), "version": rt.version});
            json!({"name": rt.group, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|rt| rt.group == group && rt.version == version)
        .flat_map(|rt| {
            [
                json!({
                    "name": rt.plural,
                    "singularName": rt.singular,
                    "namespaced": false,
                    "kind": rt.kind,
                    "verbs": ["delete", "get", "list", "patch", "create", "update"],
                }),
                json!({
                    "name": format!("{}/status", rt.plural),
                    "singularName": "",
                    "namespaced": false,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }),
            ]
        })
        .collect();
    (!resources.is_empty()).then(|| {
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": format!("{group}/{version}"),
            "resources": resources,
        })
    })
}

fn get(ctx: &RequestCtx<'_>, rt: &'static ResourceType, name: &str) -> ApiResult {
    let mut store = ctx.shared.lock();
    let current = store.object(rt, name).cloned().ok_or_else(|| ApiError::not_found(rt, name))?;
    let hook = store.get_hooks.get_mut(&(rt.plural.to_owned(), name.to_owned())).and_then(VecDeque::pop_front);
    if let Some(hook) = hook {
        // The concurrent writer lands right after our read was served.
        let mut changed = current.clone();
        hook(&mut changed);
        system_write(ctx.shared, &mut store, rt, name, &current, changed);
    }
    Ok((StatusCode::OK, current))
}

/// Stores a write that bypasses validation (concurrent-writer hooks).
fn system_write(
    shared: &Arc<Shared>,
    store: &mut Store,
    rt: &'static ResourceType,
    name: &str,
    current: &Value,
    mut changed: Value,
) {
    let spec_changed = spec_of(&changed) != spec_of(current);
    let generation = generation_of(current) + i64::from(spec_changed);
    let rv = store.next_rv();
    let meta = metadata_mut(&mut changed);
    meta.insert("name".into(), json!(name));
    meta.insert("generation".into(), json!(generation));
    meta.insert("resourceVersion".into(), json!(rv.to_string()));
    store.objects_mut(rt).insert(name.to_owned(), changed.clone());
    if spec_changed && rt.plural == NODECLASSES {
        schedule_status(shared, store, name.to_owned(), generation, changed);
    }
}

/// A list, in name order, paged as the API server pages it: at most
/// `limit` items (or the forced page size, if smaller), then a `continue`
/// token that resumes after the last name returned.
fn list(ctx: &RequestCtx<'_>, rt: &'static ResourceType) -> ApiResult {
    let label_selector = ctx.query_param("labelSelector");
    let field_selector = ctx.query_param("fieldSelector");
    let limit = ctx.query_param("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
    let after = match ctx.query_param("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(token.strip_prefix(CONTINUE_PREFIX).map(str::to_owned).ok_or_else(|| {
            ApiError::new(
                StatusCode::GONE,
                "Expired",
                format!("the provided continue parameter is too old to display a consistent list result: {token}"),
                None,
            )
        })?),
        None => None,
    };
    let mut store = ctx.shared.lock();
    let page = match (limit, store.max_list_page) {
        (Some(l), Some(m)) => Some(l.min(m)),
        (l, m) => l.or(m),
    };
    let matching: Vec<(&String, &Value)> = store
        .objects
        .get(rt.plural)
        .map(|objects| {
            objects
                .iter()
                .filter(|(name, _)| after.as_deref().is_none_or(|after| name.as_str() > after))
                .filter(|(_, o)| label_selector.as_deref().is_none_or(|s| labels_match(o, s)))
                .filter(|(_, o)| field_selector.as_deref().is_none_or(|s| fields_match(o, s)))
                .collect()
        })
        .unwrap_or_default();
    let taken = page.map_or(matching.len(), |p| p.min(matching.len()));
    let mut metadata = json!({"resourceVersion": store.resource_version.to_string()});
    if taken < matching.len() {
        metadata["continue"] = json!(format!("{CONTINUE_PREFIX}{}", matching[taken - 1].0));
        metadata["remainingItemCount"] = json!(matching.len() - taken);
    }
    let items: Vec<Value> = matching[..taken].iter().map(|(_, o)| (*o).clone()).collect();
    // A list is a read of each object it returns: concurrent-writer hooks fire.
    for item in &items {
        let name = meta_str(item, "name").unwrap_or_default();
        let hook = store.get_hooks.get_mut(&(rt.plural.to_owned(), name.clone())).and_then(VecDeque::pop_front);
        if let Some(hook) = hook {
            let mut changed = item.clone();
            hook(&mut changed);
            system_write(ctx.shared, &mut store, rt, &name, item, changed);
        }
    }
    Ok((
        StatusCode::OK,
        json!({
            "apiVersion": rt.api_version(),
            "kind": format!("{}List", rt.kind),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

const CONTINUE_PREFIX: &str = "testbed-after:";

/// Equality-based label selectors: `a=b`, `a==b`, `a!=b`, `a`, `!a`.
fn labels_match(object: &Value, selector: &str) -> bool {
    let labels = object.get("metadata").and_then(|m| m.get("labels")).and_then(Value::as_object);
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    selector.split(',').map(str::trim).filter(|s| !s.is_empty()).all(|req| {
        if let Some((k, v)) = req.split_once("!=") {
            label(k.trim()) != Some(v.trim())
        } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            label(k.trim()) == Some(v.trim())
        } else if let Some(k) = req.strip_prefix('!') {
            label(k.trim()).is_none()
        } else {
            label(req).is_some()
        }
    })
}

/// Field selectors on `metadata.name` only.
fn fields_match(object: &Value, selector: &str) -> bool {
    let name = meta_str(object, "name");
    selector.split(',').map(str::trim).filter(|s| !s.is_empty()).all(|req| {
        if let Some(v) = req.strip_prefix("metadata.name!=") {
            name.as_deref() != Some(v)
        } else if let Some(v) = req.strip_prefix("metadata.name==").or_else(|| req.strip_prefix("metadata.name=")) {
            name.as_deref() == Some(v)
        } else {
            true
        }
    })
}

/// Checks `apiVersion` and `kind` of a request body.
fn check_type(rt: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let kind = object.get("kind").and_then(Value::as_str);
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    match (api_version, kind) {
        (Some(av), Some(k)) if av == rt.api_version() && k == rt.kind => Ok(()),
        (_, None) | (None, _) => {
            Err(ApiError::bad_request(format!("Object 'Kind' is missing in '{}'", truncate(&object.to_string(), 200))))
        }
        (Some(av), Some(k)) => Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) or kind ({k}) does not match the expected \
             {}, {}",
            rt.api_version(),
            rt.kind
        ))),
    }
}

fn create(ctx: &RequestCtx<'_>, rt: &'static ResourceType) -> ApiResult {
    let mut object = ctx.json_body()?;
    if !object.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    check_type(rt, &object)?;
    let mut store = ctx.shared.lock();

    let name = match meta_str(&object, "name").filter(|n| !n.is_empty()) {
        Some(name) => name,
        None => match meta_str(&object, "generateName").filter(|n| !n.is_empty()) {
            Some(prefix) => {
                let suffix = store.next_uid();
                format!("{prefix}{}", &suffix[suffix.len() - 5..])
            }
            None => {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    &[validate::FieldError::required("metadata.name", "name or generateName is required")],
                ));
            }
        },
    };
    // The storage layer refuses this, and the API server reports it as a 500.
    if meta_str(&object, "resourceVersion").is_some_and(|rv| rv.parse::<u64>().is_ok_and(|rv| rv != 0)) {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "",
            "resourceVersion should not be set on objects to be created",
            None,
        ));
    }

    // Status is a subresource: a create cannot set it.
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    validate::prune(rt.plural, &mut object);
    let errors = validate::validate(rt.plural, &object, None);
    if !errors.is_empty() {
        return Err(ApiError::invalid(rt, &name, &errors));
    }
    if store.object(rt, &name).is_some() {
        return Err(ApiError::already_exists(rt, &name));
    }

    let uid = store.next_uid();
    let meta = metadata_mut(&mut object);
    for system in ["managedFields", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        meta.remove(system);
    }
    meta.insert("name".into(), json!(name));
    meta.insert("uid".into(), json!(uid));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.insert("generation".into(), json!(1));
    if ctx.dry_run() {
        meta.insert("resourceVersion".into(), json!(""));
        return Ok((StatusCode::CREATED, object));
    }
    let rv = store.next_rv();
    metadata_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
    store.objects_mut(rt).insert(name.clone(), object.clone());
    if rt.plural == NODECLASSES {
        schedule_status(ctx.shared, &mut store, name, 1, object.clone());
    }
    Ok((StatusCode::CREATED, object))
}

fn replace(ctx: &RequestCtx<'_>, rt: &'static ResourceType, name: &str, status_only: bool) -> ApiResult {
    let candidate = ctx.json_body()?;
    if !candidate.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    check_type(rt, &candidate)?;
    let mut store = ctx.shared.lock();
    let current = store.object(rt, name).cloned().ok_or_else(|| ApiError::not_found(rt, name))?;
    // Custom resources do not allow unconditional updates.
    let Some(rv) = meta_str(&candidate, "resourceVersion").filter(|rv| !rv.is_empty()) else {
        return Err(ApiError::rv_required(rt, name));
    };
    if Some(rv) != meta_str(&current, "resourceVersion") {
        return Err(ApiError::conflict(rt, name));
    }
    commit_update(ctx, &mut store, rt, name, &current, candidate, status_only)
}

fn patch(ctx: &RequestCtx<'_>, rt: &'static ResourceType, name: &str, status_only: bool) -> ApiResult {
    let patch_body: Value = match ctx.media_type() {
        Some("application/json-patch+json") | Some("application/merge-patch+json") => {
            serde_json::from_slice(ctx.body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
        }
        Some("application/apply-patch+yaml") => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "server-side apply (application/apply-patch+yaml) is not implemented by the fake \
                 API server; use a JSON Patch or a JSON merge patch",
                Some(json!({})),
            ));
        }
        // Strategic merge needs a Go struct schema; custom resources have
        // none, so the real API server refuses it with this exact list.
        _ => {
            return Err(ApiError::unsupported_media_type(
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
    };
    let mut store = ctx.shared.lock();
    let current = store.object(rt, name).cloned().ok_or_else(|| ApiError::not_found(rt, name))?;
    let mut patched = current.clone();
    if ctx.media_type() == Some("application/json-patch+json") {
        let operations: json_patch::Patch = serde_json::from_value(patch_body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        if let Err(error) = json_patch::patch(&mut patched, &operations) {
            tracing::debug!(%error, "fake kube: JSON patch failed");
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("the server rejected our request due to an error in our request: {error}"),
                Some(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": error.to_string()}]})),
            ));
        }
    } else {
        json_patch::merge(&mut patched, &patch_body);
    }
    if !patched.is_object() {
        return Err(ApiError::bad_request("the patched object is not a JSON object"));
    }
    check_type(rt, &patched)?;
    // A patch is unconditional unless it carries a resourceVersion, which
    // then must be the current one.
    if let Some(rv) = meta_str(&patched, "resourceVersion").filter(|rv| !rv.is_empty())
        && Some(rv) != meta_str(&current, "resourceVersion")
    {
        return Err(ApiError::conflict(rt, name));
    }
    commit_update(ctx, &mut store, rt, name, &current, patched, status_only)
}

/// The common tail of PUT and PATCH: keep system fields, keep `status`
/// (main resource) or take only `status` (subresource), validate, bump
/// generation on spec change, skip no-ops, store.
fn commit_update(
    ctx: &RequestCtx<'_>,
    store: &mut Store,
    rt: &'static ResourceType,
    name: &str,
    current: &Value,
    candidate: Value,
    status_only: bool,
) -> ApiResult {
    if meta_str(&candidate, "name").as_deref() != Some(name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta_str(&candidate, "name").unwrap_or_default()
        )));
    }
    let mut updated = if status_only {
        let mut updated = current.clone();
        match candidate.get("status") {
            Some(status) => updated["status"] = status.clone(),
            None => {
                if let Some(map) = updated.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        updated
    } else {
        let mut updated = candidate;
        if let Some(map) = updated.as_object_mut() {
            match current.get("status") {
                Some(status) => {
                    map.insert("status".into(), status.clone());
                }
                None => {
                    map.remove("status");
                }
            }
        }
        validate::prune(rt.plural, &mut updated);
        let errors = validate::validate(rt.plural, &updated, Some(current));
        if !errors.is_empty() {
            return Err(ApiError::invalid(rt, name, &errors));
        }
        // System metadata is the server's, whatever the client sent.
        let meta = metadata_mut(&mut updated);
        for key in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
            match current.get("metadata").and_then(|m| m.get(key)) {
                Some(value) => meta.insert(key.into(), value.clone()),
                None => meta.remove(key),
            };
        }
        meta.remove("managedFields");
        updated
    };

    if updated == *current {
        // No-op writes do not bump resourceVersion on a real API server.
        return Ok((StatusCode::OK, updated));
    }
    let spec_changed = spec_of(&updated) != spec_of(current);
    let generation = generation_of(current) + i64::from(spec_changed);
    metadata_mut(&mut updated).insert("generation".into(), json!(generation));
    if ctx.dry_run() {
        return Ok((StatusCode::OK, updated));
    }
    let rv = store.next_rv();
    metadata_mut(&mut updated).insert("resourceVersion".into(), json!(rv.to_string()));
    store.objects_mut(rt).insert(name.to_owned(), updated.clone());
    if spec_changed && rt.plural == NODECLASSES {
        schedule_status(ctx.shared, store, name.to_owned(), generation, updated.clone());
    }
    Ok((StatusCode::OK, updated))
}

fn delete(ctx: &RequestCtx<'_>, rt: &'static ResourceType, name: &str) -> ApiResult {
    let mut store = ctx.shared.lock();
    if store.object(rt, name).is_none() {
        return Err(ApiError::not_found(rt, name));
    }
    if ctx.dry_run() {
        let object = store.object(rt, name).cloned().unwrap_or(Value::Null);
        return Ok((StatusCode::OK, object));
    }
    let removed = store.objects_mut(rt).remove(name).unwrap_or(Value::Null);
    store.next_rv();
    Ok((StatusCode::OK, removed))
}

/// Runs the status resolver for a NodeClass generation in a task. The result
/// is stored only if the generation is still current, so a slow resolution
/// of an old spec never overwrites a newer one.
fn schedule_status(shared: &Arc<Shared>, store: &mut Store, name: String, generation: i64, object: Value) {
    let Some(resolver) = store.resolver.clone() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(%name, "no tokio runtime: NodeClass status not resolved");
        return;
    };
    let delay = store.status_delay;
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let task = runtime.spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let Some(status) = resolver(object).await else {
            return;
        };
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let mut store = shared.lock();
        let rt = &RESOURCES[0];
        let Some(current) = store.object(rt, &name) else {
            return;
        };
        if generation_of(current) != generation {
            tracing::debug!(%name, generation, "stale NodeClass status resolution dropped");
            return;
        }
        let mut updated = current.clone();
        updated["status"] = status;
        let rv = store.next_rv();
        metadata_mut(&mut updated).insert("resourceVersion".into(), json!(rv.to_string()));
        store.objects_mut(rt).insert(name, updated);
    });
    store.resolver_tasks.retain(|task| !task.is_finished());
    store.resolver_tasks.push(task.abort_handle());
}

// ---------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------

fn meta_str(object: &Value, key: &str) -> Option<String> {
    object.get("metadata").and_then(|m| m.get(key)).and_then(Value::as_str).map(str::to_owned)
}

fn generation_of(object: &Value) -> i64 {
    object.get("metadata").and_then(|m| m.get("generation")).and_then(Value::as_i64).unwrap_or(1)
}

/// Everything but metadata and status: what `generation` tracks for CRs.
fn spec_of(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Value::Object(map)) => map,
        // Unreachable: set to an object just above.
        _ => unreachable!("metadata was just set to an object"),
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let object = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        assert!(labels_match(&object, "a=1"));
        assert!(labels_match(&object, "a==1,b"));
        assert!(!labels_match(&object, "a=2"));
        assert!(labels_match(&object, "a!=2,!c"));
        assert!(!labels_match(&object, "c"));
    }

    #[test]
    fn routes() {
        assert!(
            matches!(route("/apis/eks.amazonaws.com/v1/nodeclasses"), Route::Collection(rt) if rt.kind == "NodeClass")
        );
        assert!(matches!(route("/apis/karpenter.sh/v1/nodepools/x"), Route::Object(rt, "x") if rt.kind == "NodePool"));
        assert!(matches!(route("/apis/eks.amazonaws.com/v1/nodeclasses/x/status"), Route::Status(_, "x")));
        assert!(matches!(route("/apis/eks.amazonaws.com/v1/namespaces/d/nodeclasses"), Route::Unknown));
        assert!(matches!(route("/apis/eks.amazonaws.com/v2/nodeclasses"), Route::Unknown));
    }

    fn nodeclass(name: &str) -> Value {
        json!({
            "apiVersion": "eks.amazonaws.com/v1",
            "kind": "NodeClass",
            "metadata": {"name": name},
            "spec": {
                "role": "AmazonEKSAutoNodeRole",
                "subnetSelectorTerms": [{"id": "subnet-0aaa"}],
                "securityGroupSelectorTerms": [{"id": "sg-0abc"}],
            }
        })
    }

    fn code_of(result: Result<kube::api::DynamicObject, kube::Error>) -> Option<u16> {
        match result {
            Ok(_) => None,
            Err(kube::Error::Api(status)) => Some(status.code),
            Err(other) => panic!("expected an API answer, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn write_faults_refuse_or_lose_the_answer_and_spare_reads() {
        use kube::api::{Api, DynamicObject, PostParams};
        let kube = FakeKube::start().await.unwrap();
        let api: Api<DynamicObject> = Api::all_with(kube.kube_client().await.unwrap(), &nodeclass_api_resource());
        let post = PostParams::default();
        let object = |name| serde_json::from_value::<DynamicObject>(nodeclass(name)).unwrap();

        kube.fail_next_writes(2, 500);
        assert_eq!(code_of(api.create(&post, &object("a")).await), Some(500));
        assert!(api.get_opt("a").await.unwrap().is_none(), "reads pass and nothing was created");
        assert_eq!(code_of(api.create(&post, &object("a")).await), Some(500));
        assert_eq!(code_of(api.create(&post, &object("a")).await), None, "two only");
        assert_eq!(kube.writes_to(NODECLASSES, "a"), 3);

        // The second write from now lands, but its answer is a 500.
        kube.fail_nth_write(2, 500, true);
        assert_eq!(code_of(api.create(&post, &object("b")).await), None);
        assert_eq!(code_of(api.create(&post, &object("c")).await), Some(500));
        assert!(kube.get_object(NODECLASSES, "c").is_some(), "applied despite the error");
        assert_eq!(code_of(api.create(&post, &object("c")).await), Some(409), "and a retry conflicts");

        kube.fail_next_writes(1, 500);
        kube.clear_write_faults();
        assert_eq!(code_of(api.create(&post, &object("d")).await), None);

        kube.reset();
        assert!(kube.list_objects(NODECLASSES).is_empty());
        assert!(kube.requests().is_empty());
    }
}
