//! The CRD schema and CEL rules of NodeClass (docs/aws-rules.md, "NodeClasses and NodePools") and the part
//! of NodePool headroom touches, enforced as the API server does: 422 with
//! one cause per field.

use std::fmt;

use serde_json::Value;

use super::{NODECLASSES, NODEPOOLS};

const MAX_TERMS: usize = 30;
const MAX_TAGS: usize = 20;

/// One rejected field, rendered like apimachinery's `field.Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub(crate) field: String,
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueTooMany`, …
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

impl FieldError {
    pub(crate) fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() { "Required value".to_owned() } else { format!("Required value: {detail}") };
        Self { field: field.into(), reason: "FieldValueRequired", message }
    }

    fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        Self { field: field.into(), reason: "FieldValueInvalid", message: format!("Invalid value: {value}: {detail}") }
    }

    fn too_many(field: impl Into<String>, got: usize, max: usize) -> Self {
        Self {
            field: field.into(),
            reason: "FieldValueTooMany",
            message: format!("Too many: {got}: must have at most {max} items"),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The keys a selector term may hold; structural-schema pruning drops the rest.
fn term_keys(list: &str) -> &'static [&'static str] {
    match list {
        "securityGroupSelectorTerms" | "podSecurityGroupSelectorTerms" => &["id", "tags", "name"],
        _ => &["id", "tags"],
    }
}

const TERM_LISTS: [&str; 4] =
    ["subnetSelectorTerms", "securityGroupSelectorTerms", "podSubnetSelectorTerms", "podSecurityGroupSelectorTerms"];

/// Drops unknown keys inside NodeClass selector terms, as the API server's
/// pruning of a structural schema does: a misspelt key vanishes silently and
/// the term is then judged without it.
pub(crate) fn prune(plural: &str, object: &mut Value) {
    if plural != NODECLASSES {
        return;
    }
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for list in TERM_LISTS {
        let allowed = term_keys(list);
        if let Some(Value::Array(terms)) = spec.get_mut(list) {
            for term in terms.iter_mut() {
                if let Value::Object(map) = term {
                    map.retain(|key, _| allowed.contains(&key.as_str()));
                }
            }
        }
    }
}

/// All violations of `object` (with `old` for an update).
pub(crate) fn validate(plural: &str, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    match plural {
        NODECLASSES => validate_nodeclass(object, old),
        NODEPOOLS => validate_nodepool(object),
        _ => Vec::new(),
    }
}

fn validate_nodeclass(object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(spec) = object.get("spec").and_then(Value::as_object) else {
        errors.push(FieldError::required("spec", ""));
        return errors;
    };

    match spec.get("role") {
        Some(Value::String(role)) if !role.is_empty() => {
            let old_role = old.and_then(|o| o.get("spec")).and_then(|s| s.get("role")).and_then(Value::as_str);
            if let Some(old_role) = old_role
                && old_role != role
            {
                errors.push(FieldError::invalid("spec.role", "\"string\"", "role is immutable"));
            }
        }
        Some(Value::String(_)) | None | Some(Value::Null) => {
            errors.push(FieldError::required("spec.role", ""));
        }
        Some(other) => {
            errors.push(FieldError::invalid("spec.role", &json_type(other), "spec.role in body must be of type string"))
        }
    }

    check_terms(spec.get("subnetSelectorTerms"), "spec.subnetSelectorTerms", true, Some("subnet-"), &mut errors);
    check_terms(
        spec.get("securityGroupSelectorTerms"),
        "spec.securityGroupSelectorTerms",
        true,
        Some("sg-"),
        &mut errors,
    );
    let pod_subnets = present(spec.get("podSubnetSelectorTerms"));
    let pod_groups = present(spec.get("podSecurityGroupSelectorTerms"));
    if pod_subnets {
        check_terms(
            spec.get("podSubnetSelectorTerms"),
            "spec.podSubnetSelectorTerms",
            true,
            Some("subnet-"),
            &mut errors,
        );
    }
    if pod_groups {
        check_terms(
            spec.get("podSecurityGroupSelectorTerms"),
            "spec.podSecurityGroupSelectorTerms",
            true,
            Some("sg-"),
            &mut errors,
        );
    }
    if pod_subnets && !pod_groups {
        errors.push(FieldError::required(
            "spec.podSecurityGroupSelectorTerms",
            "podSecurityGroupSelectorTerms is required when podSubnetSelectorTerms is set",
        ));
    }
    if pod_groups && !pod_subnets {
        errors.push(FieldError::required(
            "spec.podSubnetSelectorTerms",
            "podSubnetSelectorTerms is required when podSecurityGroupSelectorTerms is set",
        ));
    }
    errors
}

fn present(value: Option<&Value>) -> bool {
    !matches!(value, None | Some(Value::Null))
}

/// A selector-term list: required (if `required`), 1..=30 terms, each with
/// exactly one of its keys, ids with the right prefix, tag maps of 1..=20
/// non-empty keys and values.
fn check_terms(
    value: Option<&Value>,
    field: &str,
    required: bool,
    id_prefix: Option<&str>,
    errors: &mut Vec<FieldError>,
) {
    let terms = match value {
        None | Some(Value::Null) => {
            if required {
                errors.push(FieldError::required(field, ""));
            }
            return;
        }
        Some(Value::Array(terms)) => terms,
        Some(other) => {
            errors.push(FieldError::invalid(
                field,
                &json_type(other),
                &format!("{field} in body must be of type array"),
            ));
            return;
        }
    };
    if terms.is_empty() {
        errors.push(FieldError::invalid(field, "0", &format!("{field} in body should have at least 1 items")));
        return;
    }
    if terms.len() > MAX_TERMS {
        errors.push(FieldError::too_many(field, terms.len(), MAX_TERMS));
    }
    let list = field.rsplit('.').next().unwrap_or(field);
    let keys = term_keys(list);
    for (index, term) in terms.iter().enumerate() {
        let term_field = format!("{field}[{index}]");
        let Some(map) = term.as_object() else {
            errors.push(FieldError::invalid(&term_field, &json_type(term), "must be of type object"));
            continue;
        };
        let set: Vec<&str> = keys.iter().copied().filter(|key| present(map.get(*key))).collect();
        let expected = format!("['{}']", keys.join("', '"));
        match set.len() {
            0 => errors.push(FieldError::invalid(
                &term_field,
                "\"object\"",
                &format!("expected exactly one of {expected}, got none"),
            )),
            1 => {}
            _ => errors.push(FieldError::invalid(
                &term_field,
                "\"object\"",
                &format!("expected exactly one of {expected}, got {}", set.join(", ")),
            )),
        }
        if let Some(id) = map.get("id").filter(|v| present(Some(v))) {
            match (id.as_str(), id_prefix) {
                (Some(id), Some(prefix))
                    if id.len() > prefix.len()
                        && id.starts_with(prefix)
                        && id[prefix.len()..].chars().all(|c| c.is_ascii_alphanumeric()) => {}
                (Some(id), Some(prefix)) => errors.push(FieldError::invalid(
                    format!("{term_field}.id"),
                    &format!("{id:?}"),
                    &format!("{term_field}.id in body should match '^{prefix}[0-9a-z]+$'"),
                )),
                (Some(_), None) => {}
                (None, _) => errors.push(FieldError::invalid(
                    format!("{term_field}.id"),
                    &json_type(id),
                    "must be of type string",
                )),
            }
        }
        if let Some(name) = map.get("name").filter(|v| present(Some(v)))
            && name.as_str().is_none_or(str::is_empty)
        {
            errors.push(FieldError::invalid(
                format!("{term_field}.name"),
                &json_type(name),
                "must be a non-empty string",
            ));
        }
        if let Some(tags) = map.get("tags").filter(|v| present(Some(v))) {
            check_tags(tags, &format!("{term_field}.tags"), errors);
        }
    }
}

fn check_tags(tags: &Value, field: &str, errors: &mut Vec<FieldError>) {
    let Some(tags) = tags.as_object() else {
        errors.push(FieldError::invalid(field, &json_type(tags), "must be of type object"));
        return;
    };
    if tags.is_empty() {
        errors.push(FieldError::invalid(field, "\"object\"", "empty tag keys or values aren't supported"));
    }
    if tags.len() > MAX_TAGS {
        errors.push(FieldError::too_many(field, tags.len(), MAX_TAGS));
    }
    for (key, value) in tags {
        let value_ok = value.as_str().is_some_and(|v| !v.is_empty());
        if key.is_empty() || !value_ok {
            errors.push(FieldError::invalid(field, "\"object\"", "empty tag keys or values aren't supported"));
            break;
        }
    }
}

fn validate_nodepool(object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(spec) = object.get("spec").and_then(Value::as_object) else {
        errors.push(FieldError::required("spec", ""));
        return errors;
    };
    let node_class_ref = spec.get("template").and_then(|t| t.get("spec")).and_then(|s| s.get("nodeClassRef"));
    match node_class_ref.and_then(Value::as_object) {
        None => errors.push(FieldError::required("spec.template.spec.nodeClassRef", "")),
        Some(reference) => {
            for key in ["group", "kind", "name"] {
                if reference.get(key).and_then(Value::as_str).is_none_or(str::is_empty) {
                    errors.push(FieldError::required(format!("spec.template.spec.nodeClassRef.{key}"), ""));
                }
            }
        }
    }
    errors
}

fn json_type(value: &Value) -> String {
    let name = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    format!("\"{name}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nodeclass(spec: Value) -> Value {
        json!({"apiVersion": "eks.amazonaws.com/v1", "kind": "NodeClass", "metadata": {"name": "x"}, "spec": spec})
    }

    fn valid_spec() -> Value {
        json!({
            "role": "NodeRole",
            "subnetSelectorTerms": [{"id": "subnet-0abc"}, {"tags": {"k": "*"}}],
            "securityGroupSelectorTerms": [{"name": "sg"}],
        })
    }

    fn fields(errors: &[FieldError]) -> Vec<String> {
        errors.iter().map(|e| e.field.clone()).collect()
    }

    #[test]
    fn valid_nodeclass_passes() {
        assert_eq!(validate(NODECLASSES, &nodeclass(valid_spec()), None), vec![]);
    }

    #[test]
    fn required_fields() {
        let errors = validate(NODECLASSES, &nodeclass(json!({})), None);
        assert_eq!(fields(&errors), ["spec.role", "spec.subnetSelectorTerms", "spec.securityGroupSelectorTerms"]);
    }

    #[test]
    fn term_rules() {
        let mut spec = valid_spec();
        spec["subnetSelectorTerms"] = json!([
            {"id": "subnet-1", "tags": {"a": "b"}},
            {},
            {"tags": {"": "v"}},
            {"id": "sg-123"},
        ]);
        let errors = validate(NODECLASSES, &nodeclass(spec), None);
        assert_eq!(
            fields(&errors),
            [
                "spec.subnetSelectorTerms[0]",
                "spec.subnetSelectorTerms[1]",
                "spec.subnetSelectorTerms[2].tags",
                "spec.subnetSelectorTerms[3].id",
            ]
        );
    }

    #[test]
    fn limits() {
        let mut spec = valid_spec();
        spec["subnetSelectorTerms"] = Value::Array((0..31).map(|i| json!({"id": format!("subnet-{i}")})).collect());
        let tags: serde_json::Map<String, Value> = (0..21).map(|i| (format!("k{i}"), json!("v"))).collect();
        spec["securityGroupSelectorTerms"] = json!([{"tags": tags}]);
        let errors = validate(NODECLASSES, &nodeclass(spec), None);
        assert_eq!(fields(&errors), ["spec.subnetSelectorTerms", "spec.securityGroupSelectorTerms[0].tags"]);
        let mut spec = valid_spec();
        spec["subnetSelectorTerms"] = json!([]);
        assert_eq!(fields(&validate(NODECLASSES, &nodeclass(spec), None)), ["spec.subnetSelectorTerms"]);
    }

    #[test]
    fn pod_terms_come_in_pairs() {
        let mut spec = valid_spec();
        spec["podSubnetSelectorTerms"] = json!([{"tags": {"pods": "true"}}]);
        let errors = validate(NODECLASSES, &nodeclass(spec.clone()), None);
        assert_eq!(fields(&errors), ["spec.podSecurityGroupSelectorTerms"]);
        spec["podSecurityGroupSelectorTerms"] = json!([{"id": "sg-1"}]);
        assert_eq!(validate(NODECLASSES, &nodeclass(spec), None), vec![]);
    }

    #[test]
    fn role_is_immutable() {
        let old = nodeclass(valid_spec());
        let mut spec = valid_spec();
        spec["role"] = json!("Other");
        let errors = validate(NODECLASSES, &nodeclass(spec), Some(&old));
        assert_eq!(fields(&errors), ["spec.role"]);
        assert!(errors[0].message.contains("immutable"));
    }

    #[test]
    fn pruning_drops_unknown_term_keys() {
        let mut object = nodeclass(valid_spec());
        object["spec"]["subnetSelectorTerms"] = json!([{"ids": "subnet-1"}]);
        prune(NODECLASSES, &mut object);
        assert_eq!(object["spec"]["subnetSelectorTerms"], json!([{}]));
        assert_eq!(fields(&validate(NODECLASSES, &object, None)), ["spec.subnetSelectorTerms[0]"]);
    }
}
