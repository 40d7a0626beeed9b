//! NodeClass and NodePool reads and writes against the cluster's API.
//!
//! Writes never use strategic merge (the API server answers 415 for custom
//! resources) nor merge patch (it replaces whole lists). A NodeClass is
//! extended with an RFC 6902 JSON Patch whose first op tests the
//! resourceVersion that was read: a concurrent writer makes it fail with 422
//! (or 409), and the change is recomputed from a fresh read.

use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::AutoModeObjects;
use crate::nodeclass::{self, Extension, SelectorTarget};
use crate::plan::{Applied, NodeClassIntent, Step, StepKind};
use crate::preflight::{Method, PermissionCheck, Verdict};

/// Objects per list page: the API server returns a `continue` token past it.
pub const LIST_PAGE: u32 = 100;

/// Attempts at read-modify-write before giving up on a busy NodeClass.
const MAX_CONFLICT_RETRIES: usize = 5;
const FIELD_MANAGER: &str = "headroom";

#[derive(Clone)]
pub struct NodeClassApi {
    nodeclasses: Api<DynamicObject>,
    nodepools: Api<DynamicObject>,
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub(crate) fn kube_error(operation: &'static str, err: kube::Error) -> Error {
    let (message, retryable) = match &err {
        kube::Error::Api(status) => {
            // 410: a list's continue token expired; the next run lists afresh.
            let retryable = status.code == 429 || status.code == 410 || status.code >= 500 || status.is_conflict();
            let hint = match status.code {
                401 => "; the token was refused: check the function's EKS access entry",
                403 => "; RBAC forbids it: apply infra/rbac.yaml and map the access entry to its group",
                404 if status.message.contains("could not find the requested resource") => {
                    "; the NodeClass CRD is missing: is this an EKS Auto Mode cluster?"
                }
                _ => "",
            };
            (format!("{} {}: {}{hint}", status.code, status.reason, status.message), retryable)
        }
        // Connection, TLS and timeout failures can pass.
        other => (other.to_string(), !matches!(other, kube::Error::SerdeError(_) | kube::Error::BuildRequest(_))),
    };
    Error::Kube { operation, message, retryable }
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
        let page = api.list(&params).await.map_err(|e| kube_error(operation, e))?;
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
    serde_json::to_value(object).map_err(|e| Error::Kube {
        operation: "decode",
        message: e.to_string(),
        retryable: false,
    })
}

fn to_object(value: &Value) -> Result<DynamicObject> {
    serde_json::from_value(value.clone()).map_err(|e| Error::Kube {
        operation: "encode",
        message: e.to_string(),
        retryable: false,
    })
}

impl NodeClassApi {
    pub fn new(client: kube::Client) -> Self {
        NodeClassApi {
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
        match self.nodeclasses.get_opt(name).await.map_err(|e| kube_error("get NodeClass", e))? {
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
            Err(e) => Err(kube_error("create NodeClass", e)),
        }
    }

    /// Extends the NodeClass until it selects every target, re-reading and
    /// recomputing after each concurrent write.
    pub async fn ensure_selected(
        &self,
        name: &str,
        intent: &NodeClassIntent,
        targets: &[SelectorTarget],
        planned: Option<&Value>,
    ) -> Result<Applied> {
        refuse_default(name)?;
        // The planner's patch was computed from the snapshot just read: try it
        // first, and read again only if the NodeClass moved on since.
        let mut planned = planned.cloned();
        let mut rejected: Option<(Value, String)> = None;
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
            let patch: json_patch_kube::Patch = serde_json::from_value(ops.clone()).map_err(|e| Error::Kube {
                operation: "patch NodeClass",
                message: format!("invalid JSON Patch: {e}"),
                retryable: false,
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
                // 422: our `test` op saw a newer resourceVersion. 409: a conflict. Both: re-read.
                Err(kube::Error::Api(status)) if status.code == 422 || status.is_conflict() => {
                    rejected = Some((ops[0].get("value").cloned().unwrap_or_default(), status.message.clone()));
                    tracing::info!(
                        nodeclass = name,
                        attempt,
                        code = status.code,
                        "NodeClass changed under us; re-reading"
                    );
                    tokio::time::sleep(Duration::from_millis(50 * attempt as u64)).await;
                }
                Err(e) => return Err(kube_error("patch NodeClass", e)),
            }
        }
        Err(Error::Kube {
            operation: "patch NodeClass",
            message: format!(
                "NodeClass {name} kept changing during {MAX_CONFLICT_RETRIES} attempts; the next run retries"
            ),
            retryable: true,
        })
    }

    /// The patch a fresh read calls for; `None` when it already selects every target.
    /// `rejected` is the resourceVersion a refused patch tested, with the
    /// refusal: if the object has not moved since, the 422 was validation,
    /// not a race, and retrying cannot help.
    async fn next_patch(
        &self,
        name: &str,
        intent: &NodeClassIntent,
        targets: &[SelectorTarget],
        rejected: Option<(Value, String)>,
    ) -> Result<Option<Value>> {
        let current = self.get_nodeclass(name).await?.ok_or_else(|| Error::Kube {
            operation: "patch NodeClass",
            message: format!("NodeClass {name} disappeared while being extended; the next run recreates it"),
            retryable: true,
        })?;
        if let Some((tested, message)) = rejected
            && current.pointer("/metadata/resourceVersion") == Some(&tested)
        {
            return Err(Error::Kube {
                operation: "patch NodeClass",
                message: format!("the API server rejected the change to NodeClass {name}: {message}"),
                retryable: false,
            });
        }
        match nodeclass::extension(&current, intent, targets) {
            Extension::AlreadySelected => Ok(None),
            Extension::Patch(ops) => Ok(Some(ops)),
            Extension::Unextendable(why) => Err(Error::Kube {
                operation: "patch NodeClass",
                message: format!("NodeClass {name}: {why}"),
                retryable: false,
            }),
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
            Err(e) => Err(kube_error("create NodePool", e)),
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

    /// Waits, up to `timeout`, until `status.subnets` lists every subnet.
    /// Returns the ids still missing (empty when all arrived).
    pub async fn wait_for_status_subnets(
        &self,
        name: &str,
        subnet_ids: &[String],
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let started = Instant::now();
        let mut interval = Duration::from_millis(200);
        loop {
            let listed = match self.get_nodeclass(name).await? {
                Some(current) => nodeclass::status_subnet_ids(&current),
                None => Vec::new(),
            };
            let missing: Vec<String> = subnet_ids.iter().filter(|id| !listed.contains(id)).cloned().collect();
            if missing.is_empty() || started.elapsed() + interval > timeout {
                return Ok(missing);
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(Duration::from_secs(5));
        }
    }
}

fn refuse_default(name: &str) -> Result<()> {
    if name == nodeclass::DEFAULT_NODECLASS {
        return Err(Error::Kube {
            operation: "write NodeClass",
            message: "the `default` NodeClass is managed by EKS; headroom never writes it".into(),
            retryable: false,
        });
    }
    Ok(())
}
