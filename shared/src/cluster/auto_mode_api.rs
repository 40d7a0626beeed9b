//! [`AutoModeApi`]: NodeClass and NodePool reads and writes against the
//! cluster's API server. What to write is decided by the pure
//! [`crate::nodeclass`]; this module only talks to the API server.
//!
//! Writes never use strategic merge (the API server answers 415 for custom
//! resources) nor merge patch (it replaces whole lists). A NodeClass is
//! extended with an RFC 6902 JSON Patch whose first op tests the list it
//! changes (docs/aws-rules.md, "Changing a NodeClass"): a concurrent change
//! to that list makes it fail with 422 and the change is recomputed from a
//! fresh read, while the Auto Mode controller's status writes, which move
//! the resourceVersion, do not get in the way.

use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use serde_json::Value;

use super::error::{ClusterError, ClusterResult as Result};
use crate::model::AutoModeObjects;
use crate::nodeclass::{self, Extension, SelectorTarget};
use crate::plan::{Applied, NodeClassIntent, Step, StepKind};
use crate::preflight::{Method, PermissionCheck, Verdict};

/// Objects per list page: the API server returns a `continue` token past it.
pub const LIST_PAGE: u32 = 100;

/// Attempts at read-modify-write before giving up on a busy NodeClass.
const MAX_CONFLICT_RETRIES: usize = 5;
const FIELD_MANAGER: &str = "headroom";

/// The longest one watch request lasts: shorter than the client's read
/// timeout, so a quiet watch ends on the server's side, not as an error.
const WATCH_SECONDS: u64 = 9;

/// The NodeClasses and NodePools of one cluster.
#[derive(Clone)]
pub struct AutoModeApi {
    nodeclasses: Api<DynamicObject>,
    nodepools: Api<DynamicObject>,
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// Every object of a kind, following `continue` to the last page.
async fn list_all(api: &Api<DynamicObject>, operation: &'static str) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(LIST_PAGE);
        if let Some(token) = token.take() {
            params = params.continue_token(&token);
        }
        let page = api.list(&params).await.map_err(|e| ClusterError::from_kube(operation, e))?;
        for object in page.items {
            items.push(to_value(object)?);
        }
        match page.metadata.continue_ {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => return Ok(items),
        }
    }
}

fn to_value(object: DynamicObject) -> Result<Value> {
    serde_json::to_value(object).map_err(|e| ClusterError::Transport {
        operation: "decode",
        message: e.to_string(),
        retryable: false,
    })
}

fn to_object(value: &Value) -> Result<DynamicObject> {
    serde_json::from_value(value.clone())
        .map_err(|e| ClusterError::Refused { operation: "encode", message: format!("not a Kubernetes object: {e}") })
}

impl AutoModeApi {
    pub fn new(client: kube::Client) -> Self {
        AutoModeApi {
            nodeclasses: Api::all_with(
                client.clone(),
                &resource(
                    nodeclass::NODECLASS_GROUP,
                    nodeclass::NODECLASS_VERSION,
                    nodeclass::NODECLASS_KIND,
                    nodeclass::NODECLASS_PLURAL,
                ),
            ),
            nodepools: Api::all_with(
                client,
                &resource(
                    nodeclass::NODEPOOL_GROUP,
                    nodeclass::NODEPOOL_VERSION,
                    nodeclass::NODEPOOL_KIND,
                    nodeclass::NODEPOOL_PLURAL,
                ),
            ),
        }
    }

    pub async fn get_nodeclass(&self, name: &str) -> Result<Option<Value>> {
        match self.nodeclasses.get_opt(name).await.map_err(|e| ClusterError::from_kube("get NodeClass", e))? {
            Some(object) => Ok(Some(to_value(object)?)),
            None => Ok(None),
        }
    }

    /// Every NodeClass and NodePool, read at once, each list to its end.
    pub async fn read(&self) -> Result<AutoModeObjects> {
        let (nodeclasses, nodepools) = futures::future::try_join(
            list_all(&self.nodeclasses, "list NodeClasses"),
            list_all(&self.nodepools, "list NodePools"),
        )
        .await?;
        Ok(AutoModeObjects { nodeclasses, nodepools })
    }

    /// Creates the NodeClass; if someone created it first, extends theirs instead.
    pub async fn create_nodeclass(
        &self,
        object: &Value,
        intent: &NodeClassIntent,
        targets: &[SelectorTarget],
    ) -> Result<Applied> {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        refuse_default(&name)?;
        match self
            .nodeclasses
            .create(
                &PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() },
                &to_object(object)?,
            )
            .await
        {
            Ok(created) => Ok(Applied {
                step: StepKind::CreateNodeclass,
                resource: name.clone(),
                detail: format!(
                    "NodeClass {name} created at resourceVersion {}",
                    created.metadata.resource_version.unwrap_or_default()
                ),
                already_present: false,
            }),
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                self.ensure_selected(&name, intent, targets, None).await
            }
            Err(e) => Err(ClusterError::from_kube("create NodeClass", e)),
        }
    }

    /// Extends the NodeClass until it selects every target, re-reading and
    /// recomputing after each concurrent change to what the patch tests.
    pub async fn ensure_selected(
        &self,
        name: &str,
        intent: &NodeClassIntent,
        targets: &[SelectorTarget],
        planned: Option<&Value>,
    ) -> Result<Applied> {
        refuse_default(name)?;
        // The planner's patch was computed from the snapshot just read: try it
        // first, and read again only if the list it tests moved on since.
        let mut planned = planned.cloned();
        let mut rejected: Option<Rejected> = None;
        for attempt in 1..=MAX_CONFLICT_RETRIES {
            let ops = match planned.take() {
                Some(ops) => ops,
                None => match self.next_patch(name, intent, targets, rejected.take()).await? {
                    Some(ops) => ops,
                    None => {
                        return Ok(Applied {
                            step: StepKind::PatchNodeclass,
                            resource: name.to_string(),
                            detail: format!("NodeClass {name} already selects the managed subnets"),
                            already_present: true,
                        });
                    }
                },
            };
            let patch: json_patch_kube::Patch = serde_json::from_value(ops.clone()).map_err(|e| {
                ClusterError::Refused { operation: "patch NodeClass", message: format!("invalid JSON Patch: {e}") }
            })?;
            let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            match self.nodeclasses.patch(name, &params, &Patch::Json::<()>(patch)).await {
                Ok(patched) => {
                    return Ok(Applied {
                        step: StepKind::PatchNodeclass,
                        resource: name.to_string(),
                        detail: format!(
                            "NodeClass {name} extended ({} mode) at resourceVersion {}",
                            intent.mode,
                            patched.metadata.resource_version.unwrap_or_default()
                        ),
                        already_present: false,
                    });
                }
                // 422: our `test` op failed (or the change is invalid: the
                // re-read tells which). 409: a conflict. Both: re-read.
                Err(kube::Error::Api(status)) if status.code == 422 || status.is_conflict() => {
                    rejected = (status.code == 422).then(|| Rejected::by(&ops, status.message.clone()));
                    tracing::info!(
                        nodeclass = name,
                        attempt,
                        code = status.code,
                        "NodeClass changed under us; re-reading"
                    );
                    tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
                }
                Err(e) => return Err(ClusterError::from_kube("patch NodeClass", e)),
            }
        }
        Err(ClusterError::Contended {
            operation: "patch NodeClass",
            message: format!(
                "NodeClass {name} kept changing during {MAX_CONFLICT_RETRIES} attempts; the next run retries"
            ),
        })
    }

    /// The patch a fresh read calls for; `None` when it already selects every target.
    /// `rejected` is a patch the API server answered 422: if what it tested
    /// still holds, the 422 was validation, not a race, and retrying cannot help.
    async fn next_patch(
        &self,
        name: &str,
        intent: &NodeClassIntent,
        targets: &[SelectorTarget],
        rejected: Option<Rejected>,
    ) -> Result<Option<Value>> {
        let current = self.get_nodeclass(name).await?.ok_or_else(|| ClusterError::Contended {
            operation: "patch NodeClass",
            message: format!("NodeClass {name} disappeared while being extended; the next run recreates it"),
        })?;
        if let Some(rejected) = rejected
            && rejected.still_holds(&current)
        {
            return Err(ClusterError::Refused {
                operation: "patch NodeClass",
                message: format!("the API server rejected the change to NodeClass {name}: {}", rejected.message),
            });
        }
        match nodeclass::extension(&current, intent, targets) {
            Extension::AlreadySelected => Ok(None),
            Extension::Patch(ops) => Ok(Some(ops)),
            Extension::Unextendable(why) => {
                Err(ClusterError::Refused { operation: "patch NodeClass", message: format!("NodeClass {name}: {why}") })
            }
        }
    }

    /// Creates the NodePool when absent; an existing one is never modified.
    pub async fn create_nodepool(&self, object: &Value) -> Result<Applied> {
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
        match self.nodepools.create(&params, &to_object(object)?).await {
            Ok(_) => Ok(Applied {
                step: StepKind::CreateNodepool,
                resource: name.clone(),
                detail: format!("NodePool {name} created"),
                already_present: false,
            }),
            Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(Applied {
                step: StepKind::CreateNodepool,
                resource: name.clone(),
                detail: format!("NodePool {name} already exists; left as it is"),
                already_present: true,
            }),
            Err(e) => Err(ClusterError::from_kube("create NodePool", e)),
        }
    }

    /// Checks that the API server would accept each Kubernetes write of the
    /// plan, by sending it with `dryRun=All` (RBAC and admission answer as for
    /// the real write; nothing is stored).
    pub async fn preflight(&self, steps: &[&Step]) -> Vec<PermissionCheck> {
        let mut checks = Vec::new();
        for step in steps {
            let (action, resource, answer) = match step {
                Step::CreateNodeClass { name, object, .. } => {
                    let params = PostParams { dry_run: true, field_manager: Some(FIELD_MANAGER.into()) };
                    let answer = match to_object(object) {
                        Ok(object) => self.nodeclasses.create(&params, &object).await.map(|_| ()),
                        Err(e) => Err(kube::Error::Service(e.to_string().into())),
                    };
                    ("create nodeclasses", name.clone(), answer)
                }
                Step::PatchNodeClass { name, patch, .. } => {
                    let params =
                        PatchParams { dry_run: true, field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
                    let answer = match serde_json::from_value::<json_patch_kube::Patch>(patch.clone()) {
                        Ok(patch) => self.nodeclasses.patch(name, &params, &Patch::Json::<()>(patch)).await.map(|_| ()),
                        Err(e) => Err(kube::Error::Service(e.to_string().into())),
                    };
                    ("patch nodeclasses", name.clone(), answer)
                }
                Step::CreateNodePool { name, object } => {
                    let params = PostParams { dry_run: true, field_manager: Some(FIELD_MANAGER.into()) };
                    let answer = match to_object(object) {
                        Ok(object) => self.nodepools.create(&params, &object).await.map(|_| ()),
                        Err(e) => Err(kube::Error::Service(e.to_string().into())),
                    };
                    ("create nodepools", name.clone(), answer)
                }
                _ => continue,
            };
            let (verdict, detail) = match answer {
                Ok(()) => (Verdict::Allowed, "accepted with dryRun=All".to_string()),
                // Authorised; only the object is already there.
                Err(kube::Error::Api(status)) if status.is_already_exists() => {
                    (Verdict::Allowed, "authorised (the object already exists)".to_string())
                }
                Err(kube::Error::Api(status)) if status.code == 401 || status.code == 403 => {
                    (Verdict::Denied, format!("{} {}: {}", status.code, status.reason, status.message))
                }
                Err(e) => (Verdict::Unverified, e.to_string()),
            };
            checks.push(PermissionCheck {
                action: action.into(),
                resource,
                method: Method::KubernetesDryRun,
                verdict,
                detail,
            });
        }
        checks
    }

    /// Waits, up to `timeout`, until `status.subnets` lists every subnet,
    /// by watching the NodeClass: the wait ends as soon as the Auto Mode
    /// controller writes the status. Returns the ids still missing (empty
    /// when all arrived). Without RBAC `watch` (an install from before it was
    /// granted) it polls instead.
    pub async fn wait_for_status_subnets(
        &self,
        name: &str,
        subnet_ids: &[String],
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let missing_from = |object: Option<&Value>| -> Vec<String> {
            let listed = object.map(nodeclass::status_subnet_ids).unwrap_or_default();
            subnet_ids.iter().filter(|id| !listed.contains(id)).cloned().collect()
        };
        let mut current = self.get_nodeclass(name).await?;
        let mut missing = missing_from(current.as_ref());
        while !missing.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let version = current
                .as_ref()
                .and_then(|c| c.pointer("/metadata/resourceVersion"))
                .and_then(Value::as_str)
                .unwrap_or("0")
                .to_owned();
            let seconds = left.as_secs().clamp(1, WATCH_SECONDS) as u32;
            let params = WatchParams::default().fields(&format!("metadata.name={name}")).timeout(seconds);
            let events = match self.nodeclasses.watch(&params, &version).await {
                Ok(events) => events,
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    tracing::warn!(
                        nodeclass = name,
                        "RBAC forbids watching NodeClasses; polling (apply infra/rbac.yaml)"
                    );
                    return self.poll_status_subnets(name, missing_from, deadline).await;
                }
                Err(e) => return Err(ClusterError::from_kube("watch NodeClass", e)),
            };
            let mut events = std::pin::pin!(events);
            let watched = tokio::time::timeout(left, async {
                while let Some(event) =
                    events.try_next().await.map_err(|e| ClusterError::from_kube("watch NodeClass", e))?
                {
                    match event {
                        WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                            current = Some(to_value(object)?);
                            missing = missing_from(current.as_ref());
                            if missing.is_empty() {
                                return Ok(());
                            }
                        }
                        WatchEvent::Deleted(_) => {
                            current = None;
                            missing = missing_from(None);
                        }
                        WatchEvent::Bookmark(bookmark) => {
                            if let Some(object) = current.as_mut() {
                                object["metadata"]["resourceVersion"] = bookmark.metadata.resource_version.into();
                            }
                        }
                        // 410: the version is too old to resume from; read afresh.
                        WatchEvent::Error(status) if status.code == 410 => {
                            current = self.get_nodeclass(name).await?;
                            missing = missing_from(current.as_ref());
                            return Ok(());
                        }
                        WatchEvent::Error(status) => {
                            return Err(ClusterError::from_kube("watch NodeClass", kube::Error::Api(status)));
                        }
                    }
                }
                // The server ended the watch (its timeout): watch again.
                Ok(())
            })
            .await;
            match watched {
                Ok(result) => result?,
                Err(_deadline) => break,
            }
        }
        Ok(missing)
    }

    /// The wait without watch: reads with growing intervals until `deadline`.
    async fn poll_status_subnets(
        &self,
        name: &str,
        missing_from: impl Fn(Option<&Value>) -> Vec<String>,
        deadline: Instant,
    ) -> Result<Vec<String>> {
        let mut interval = Duration::from_millis(200);
        loop {
            let missing = missing_from(self.get_nodeclass(name).await?.as_ref());
            if missing.is_empty() || Instant::now() + interval > deadline {
                return Ok(missing);
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(Duration::from_secs(5));
        }
    }
}

/// A JSON Patch the API server answered 422, with what its `test` op tested.
struct Rejected {
    tested: Option<(String, Value)>,
    message: String,
}

impl Rejected {
    fn by(ops: &Value, message: String) -> Self {
        let tested = ops.get(0).filter(|op| op["op"] == "test").and_then(|op| {
            Some((op.get("path")?.as_str()?.to_owned(), op.get("value").cloned().unwrap_or(Value::Null)))
        });
        Rejected { tested, message }
    }

    /// The tested value is still there: the test passed, so the 422 came
    /// from validating the change itself.
    fn still_holds(&self, current: &Value) -> bool {
        self.tested.as_ref().is_some_and(|(path, value)| current.pointer(path) == Some(value))
    }
}

fn refuse_default(name: &str) -> Result<()> {
    if name == nodeclass::DEFAULT_NODECLASS {
        return Err(ClusterError::Refused {
            operation: "write NodeClass",
            message: "the `default` NodeClass is managed by EKS; headroom never writes it".into(),
        });
    }
    Ok(())
}
