//! What the fake API server holds: the resource types it serves, the stored
//! objects with their resourceVersions and uids, the request log, and the
//! fault and controller settings, all behind one lock; plus the JSON
//! helpers every handler uses on stored objects.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::task::AbortHandle;

use super::controller::StatusResolver;
use super::faults::{GetHook, WriteFault};
use super::watch::{Change, ChangeKind, EventLog};
use super::{NODECLASSES, NODEPOOLS};
use crate::admission::{AdmissionPolicy, UserInfo};

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
    /// Object name: from the URL, from the body for a create, or from the
    /// `metadata.name=` field selector of a watch.
    pub name: Option<String>,
    /// `status` for the status subresource.
    pub subresource: Option<String>,
    /// A watch (`GET` of a collection with `watch=true`), recorded when its
    /// stream starts; never a write. Its `name` comes from a
    /// `metadata.name=` field selector.
    pub watch: bool,
    /// When the request arrived (its body read), before any added latency.
    pub arrived: Instant,
    /// When the answer (or, for a watch, the stream's headers) left.
    pub answered: Instant,
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
pub(super) struct ResourceType {
    pub(super) group: &'static str,
    pub(super) version: &'static str,
    pub(super) plural: &'static str,
    pub(super) singular: &'static str,
    pub(super) kind: &'static str,
}

impl ResourceType {
    pub(super) fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// `nodeclasses.eks.amazonaws.com`, as in NotFound/Conflict messages.
    pub(super) fn qualified_plural(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

pub(super) const RESOURCES: [ResourceType; 2] = [
    ResourceType {
        group: "eks.amazonaws.com",
        version: "v1",
        plural: NODECLASSES,
        singular: "nodeclass",
        kind: "NodeClass",
    },
    ResourceType { group: "karpenter.sh", version: "v1", plural: NODEPOOLS, singular: "nodepool", kind: "NodePool" },
];

pub(super) fn resource_type(plural: &str) -> Option<&'static ResourceType> {
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

pub(super) struct Store {
    pub(super) resource_version: u64,
    pub(super) uid_counter: u64,
    pub(super) objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    pub(super) requests: Vec<RecordedRequest>,
    pub(super) get_hooks: HashMap<(String, String), VecDeque<GetHook>>,
    /// Upcoming resource writes, in order; empty: all pass.
    pub(super) write_faults: VecDeque<WriteFault>,
    pub(super) status_delay: Duration,
    pub(super) resolver: Option<StatusResolver>,
    pub(super) resolver_tasks: Vec<AbortHandle>,
    /// `Some(n)`: lists return at most n items a page, whatever `limit` asked.
    pub(super) max_list_page: Option<usize>,
    /// Every stored change, for watches.
    pub(super) events: EventLog,
    /// How long every request waits before it is handled.
    pub(super) latency: Option<Duration>,
    /// The ValidatingAdmissionPolicy every create and update passes.
    pub(super) admission: Option<std::sync::Arc<AdmissionPolicy>>,
}

/// The resourceVersion of a fresh server; the first object gets the next.
const FIRST_RESOURCE_VERSION: u64 = 1000;

impl Store {
    pub(super) fn new() -> Self {
        Self {
            resource_version: FIRST_RESOURCE_VERSION,
            uid_counter: 0,
            objects: BTreeMap::new(),
            requests: Vec::new(),
            get_hooks: HashMap::new(),
            write_faults: VecDeque::new(),
            status_delay: Duration::ZERO,
            resolver: None,
            resolver_tasks: Vec::new(),
            max_list_page: None,
            events: EventLog::new(FIRST_RESOURCE_VERSION),
            latency: None,
            admission: None,
        }
    }

    /// Stores `object` as `name` with a new resourceVersion, and logs the
    /// change for watches; returns the stored object. Every change to an
    /// object goes through here or [`commit_delete`](Self::commit_delete).
    pub(super) fn commit(&mut self, rt: &'static ResourceType, name: &str, mut object: Value) -> Value {
        let rv = self.next_rv();
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
        let before = self.objects_mut(rt).insert(name.to_owned(), object.clone());
        let kind = if before.is_some() { ChangeKind::Modified } else { ChangeKind::Added };
        self.events.record(Change { rv, plural: rt.plural, kind, before, object: object.clone() });
        object
    }

    /// Removes an object and logs its deletion; returns its last state,
    /// carrying the deletion's resourceVersion as the real server's does.
    pub(super) fn commit_delete(&mut self, rt: &'static ResourceType, name: &str) -> Option<Value> {
        let before = self.objects_mut(rt).remove(name)?;
        let rv = self.next_rv();
        let mut object = before.clone();
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
        self.events.record(Change {
            rv,
            plural: rt.plural,
            kind: ChangeKind::Deleted,
            before: Some(before),
            object: object.clone(),
        });
        Some(object)
    }

    pub(super) fn next_rv(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    pub(super) fn next_uid(&mut self) -> String {
        self.uid_counter += 1;
        format!("7e57bed0-0000-4000-8000-{:012x}", self.uid_counter)
    }

    pub(super) fn objects_mut(&mut self, rt: &ResourceType) -> &mut BTreeMap<String, Value> {
        self.objects.entry(rt.plural).or_default()
    }

    pub(super) fn object(&self, rt: &ResourceType, name: &str) -> Option<&Value> {
        self.objects.get(rt.plural).and_then(|objects| objects.get(name))
    }
}

pub(super) struct Shared {
    pub(super) url: String,
    /// headroom's bearer token: the kubeconfig's, mapped to [`Shared::headroom`].
    pub(super) token: String,
    pub(super) headroom: UserInfo,
    /// A cluster administrator's token, for tests that write as someone else.
    pub(super) admin_token: String,
    /// Base64 PEM of a throwaway CA, for the kubeconfig.
    pub(super) ca_data: String,
    pub(super) store: Mutex<Store>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Who a bearer token authenticates, as EKS maps an access entry.
    pub(super) fn user(&self, token: &str) -> Option<UserInfo> {
        if token == self.token {
            Some(self.headroom.clone())
        } else if token == self.admin_token {
            Some(UserInfo {
                username: ADMIN_USERNAME.into(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
            })
        } else {
            None
        }
    }
}

/// The administrator [`Shared::admin_token`] authenticates.
pub const ADMIN_USERNAME: &str = "kubernetes-admin";

pub(super) fn meta_str(object: &Value, key: &str) -> Option<String> {
    object.get("metadata").and_then(|m| m.get(key)).and_then(Value::as_str).map(str::to_owned)
}

pub(super) fn generation_of(object: &Value) -> i64 {
    object.get("metadata").and_then(|m| m.get("generation")).and_then(Value::as_i64).unwrap_or(1)
}

/// Everything but metadata and status: what `generation` tracks for CRs.
pub(super) fn spec_of(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

pub(super) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Value::Object(map)) => map,
        // Unreachable: set to an object just above.
        _ => unreachable!("metadata was just set to an object"),
    }
}

pub(super) fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
