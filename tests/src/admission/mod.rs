//! headroom's ValidatingAdmissionPolicy as the API server evaluates it: the
//! policy and its binding read from the YAML stream `scripts/rbac.sh` prints,
//! their CEL evaluated ([`cel`], the subset the rendering uses) against
//! `object`, `oldObject` and `request`. The tests judge the rendered rules with it, and the fake API
//! server enforces them on every create and update.
//!
//! Only what the rendering uses is implemented (resource rules, match
//! conditions, validations with `message` and `reason`, `failurePolicy`, a
//! binding with `validationActions: [Deny]`); anything else in the policy is
//! refused when it is read, so that a rule the fake cannot evaluate is never
//! silently passed.

pub mod cel;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::TestbedError;

/// Who sent a request, as `request.userInfo` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub groups: Vec<String>,
}

/// One write the policy may judge.
#[derive(Debug, Clone)]
pub struct AdmissionRequest<'a> {
    /// `CREATE` or `UPDATE` (DELETE and CONNECT are never matched here).
    pub operation: &'a str,
    pub group: &'a str,
    pub version: &'a str,
    /// Resource plural, e.g. `nodeclasses`.
    pub resource: &'a str,
    pub kind: &'a str,
    /// `status` for the status subresource, which the policy's rules do not name.
    pub subresource: Option<&'a str>,
    pub name: &'a str,
    pub user: &'a UserInfo,
    pub object: &'a Value,
    /// The stored object, for an update.
    pub old_object: Option<&'a Value>,
    pub dry_run: bool,
}

/// What the policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Not matched (another resource, operation or user), or every validation held.
    Allowed,
    /// Refused: `reason` (`Forbidden`, `Invalid`, ...) picks the HTTP status,
    /// `message` is the API server's `ValidatingAdmissionPolicy '<p>' with
    /// binding '<b>' denied request: ...`.
    Denied { reason: String, message: String },
}

struct ResourceRule {
    groups: Vec<String>,
    resources: Vec<String>,
    operations: Vec<String>,
}

struct Expression {
    source: String,
    parsed: cel::Expr,
}

struct Validation {
    expression: Expression,
    message: Option<String>,
    reason: Option<String>,
}

/// A ValidatingAdmissionPolicy with its Deny binding.
pub struct AdmissionPolicy {
    name: String,
    binding: String,
    fail_closed: bool,
    rules: Vec<ResourceRule>,
    match_conditions: Vec<Expression>,
    validations: Vec<Validation>,
}

impl std::fmt::Debug for AdmissionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionPolicy").field("name", &self.name).field("binding", &self.binding).finish()
    }
}

fn invalid(message: impl Into<String>) -> TestbedError {
    TestbedError::Invalid(message.into())
}

/// The documents of a YAML stream, as JSON.
pub fn yaml_documents(stream: &str) -> Result<Vec<Value>, TestbedError> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(stream).map_err(|e| invalid(format!("YAML: {e}")))?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

/// `scripts/rbac.sh` run with `args`: its stdout, or its stderr as the error.
pub fn render_rbac(args: &[&str]) -> Result<String, TestbedError> {
    render_rbac_with_path(args, None)
}

/// [`render_rbac`] with `extra_path` first on `PATH` (a stand-in `aws`).
pub fn render_rbac_with_path(args: &[&str], extra_path: Option<&Path>) -> Result<String, TestbedError> {
    let script = crate::moto::workspace_root().join("scripts/rbac.sh");
    let mut command = Command::new("bash");
    command.arg(&script).args(args);
    if let Some(dir) = extra_path {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        command.env("PATH", std::env::join_paths(dirs).map_err(|e| invalid(e.to_string()))?);
    }
    let out = command.output().map_err(|e| TestbedError::io(format!("running {}", script.display()), e))?;
    if !out.status.success() {
        return Err(invalid(format!("scripts/rbac.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    String::from_utf8(out.stdout).map_err(|e| invalid(e.to_string()))
}

fn strings(value: &Value, what: &str) -> Result<Vec<String>, TestbedError> {
    value
        .as_array()
        .ok_or_else(|| invalid(format!("{what} must be a list")))?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| invalid(format!("{what} must hold strings"))))
        .collect()
}

fn compile(source: &str) -> Result<Expression, TestbedError> {
    let parsed = cel::parse(source).map_err(|e| invalid(format!("CEL {source:?}: {e}")))?;
    Ok(Expression { source: source.to_owned(), parsed })
}

/// Refuses any key of `map` outside `known`: a policy field the fake does
/// not evaluate would otherwise be ignored.
fn only(map: &Value, known: &[&str], what: &str) -> Result<(), TestbedError> {
    let keys = map.as_object().ok_or_else(|| invalid(format!("{what} must be a map")))?.keys();
    match keys.into_iter().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(invalid(format!("{what}.{unknown} is not supported by the testbed's admission policy"))),
        None => Ok(()),
    }
}

impl AdmissionPolicy {
    /// The policy and binding of a rendered YAML stream (other documents,
    /// such as the RBAC, are skipped). `None` when the stream has no policy
    /// (a rendering for a cluster older than 1.30).
    pub fn from_yaml(stream: &str) -> Result<Option<Self>, TestbedError> {
        let documents = yaml_documents(stream)?;
        let of_kind = |kind: &'static str| documents.iter().filter(move |d| d["kind"] == kind);
        let mut policies = of_kind("ValidatingAdmissionPolicy");
        let Some(policy) = policies.next() else {
            return Ok(None);
        };
        if policies.next().is_some() {
            return Err(invalid("more than one ValidatingAdmissionPolicy"));
        }
        let name = policy["metadata"]["name"].as_str().ok_or_else(|| invalid("policy without a name"))?.to_owned();
        let binding = of_kind("ValidatingAdmissionPolicyBinding")
            .find(|b| b["spec"]["policyName"] == name.as_str())
            .ok_or_else(|| invalid(format!("no ValidatingAdmissionPolicyBinding for policy {name}")))?;
        only(&binding["spec"], &["policyName", "validationActions"], "binding spec")?;
        if !strings(&binding["spec"]["validationActions"], "validationActions")?.contains(&"Deny".to_owned()) {
            return Err(invalid("the binding does not Deny"));
        }
        let binding_name = binding["metadata"]["name"].as_str().unwrap_or_default().to_owned();

        let spec = &policy["spec"];
        only(spec, &["failurePolicy", "matchConstraints", "matchConditions", "validations"], "policy spec")?;
        only(&spec["matchConstraints"], &["resourceRules"], "matchConstraints")?;
        let mut rules = Vec::new();
        for rule in spec["matchConstraints"]["resourceRules"].as_array().into_iter().flatten() {
            only(rule, &["apiGroups", "apiVersions", "operations", "resources"], "resourceRule")?;
            rules.push(ResourceRule {
                groups: strings(&rule["apiGroups"], "apiGroups")?,
                resources: strings(&rule["resources"], "resources")?,
                operations: strings(&rule["operations"], "operations")?,
            });
        }
        let mut match_conditions = Vec::new();
        for condition in spec["matchConditions"].as_array().into_iter().flatten() {
            only(condition, &["name", "expression"], "matchCondition")?;
            match_conditions.push(compile(condition["expression"].as_str().unwrap_or_default())?);
        }
        let mut validations = Vec::new();
        for validation in spec["validations"].as_array().into_iter().flatten() {
            only(validation, &["expression", "message", "reason"], "validation")?;
            validations.push(Validation {
                expression: compile(validation["expression"].as_str().unwrap_or_default())?,
                message: validation["message"].as_str().map(str::to_owned),
                reason: validation["reason"].as_str().map(str::to_owned),
            });
        }
        Ok(Some(Self {
            name,
            binding: binding_name,
            fail_closed: spec["failurePolicy"].as_str() != Some("Ignore"),
            rules,
            match_conditions,
            validations,
        }))
    }

    /// The policy `scripts/rbac.sh` renders with `args`.
    pub fn rendered(args: &[&str]) -> Result<Self, TestbedError> {
        Self::from_yaml(&render_rbac(args)?)?.ok_or_else(|| invalid(format!("scripts/rbac.sh {args:?} has no policy")))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn matches(&self, request: &AdmissionRequest<'_>) -> bool {
        let any = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
        request.subresource.is_none()
            && self.rules.iter().any(|rule| {
                any(&rule.groups, request.group)
                    && any(&rule.resources, request.resource)
                    && any(&rule.operations, request.operation)
            })
    }

    /// Evaluates the policy for `request`, as the API server's admission
    /// chain does after schema validation.
    pub fn admit(&self, request: &AdmissionRequest<'_>) -> Admission {
        if !self.matches(request) {
            return Admission::Allowed;
        }
        let variables = Self::variables(request);
        let lookup = |name: &str| variables.get(name).cloned();
        for condition in &self.match_conditions {
            match cel::eval(&condition.parsed, &lookup) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => return Admission::Allowed,
                other if self.fail_closed => {
                    return self.deny("Invalid", format!("matchCondition {:?} failed: {other:?}", condition.source));
                }
                _ => return Admission::Allowed,
            }
        }
        for validation in &self.validations {
            let failed = match cel::eval(&validation.expression.parsed, &lookup) {
                Ok(Value::Bool(true)) => continue,
                Ok(Value::Bool(false)) => None,
                Ok(other) => Some(format!("expected a bool, got {other}")),
                Err(error) => Some(error),
            };
            let (reason, message) = match failed {
                // As the API server words an evaluation error.
                Some(error) if self.fail_closed => (
                    "Invalid".to_owned(),
                    format!("expression '{}' resulted in error: {error}", validation.expression.source),
                ),
                Some(_) => continue,
                None => (
                    validation.reason.clone().unwrap_or_else(|| "Invalid".to_owned()),
                    validation
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("failed expression: {}", validation.expression.source)),
                ),
            };
            return self.deny(&reason, message);
        }
        Admission::Allowed
    }

    fn deny(&self, reason: &str, message: String) -> Admission {
        Admission::Denied {
            reason: reason.to_owned(),
            message: format!(
                "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {message}",
                self.name, self.binding
            ),
        }
    }

    /// `request`, `object` and `oldObject` (null for a create), as the API
    /// server binds them.
    fn variables(request: &AdmissionRequest<'_>) -> Value {
        json!({
            "request": {
                "operation": request.operation,
                "name": request.name,
                "namespace": "",
                "resource": {"group": request.group, "version": request.version, "resource": request.resource},
                "kind": {"group": request.group, "version": request.version, "kind": request.kind},
                "subResource": request.subresource.unwrap_or_default(),
                "userInfo": {"username": request.user.username, "groups": request.user.groups},
                "dryRun": request.dry_run,
            },
            "object": request.object,
            "oldObject": request.old_object.unwrap_or(&Value::Null),
        })
    }
}
