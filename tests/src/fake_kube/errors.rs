//! `Status` error bodies, worded and coded as the real API server words them,
//! so clients classify fake failures exactly as real ones.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::state::ResourceType;
use super::validate;

/// A failed request: HTTP status plus the `Status` object body.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) code: StatusCode,
    pub(super) body: Value,
}

impl ApiError {
    pub(super) fn new(code: StatusCode, reason: &str, message: impl Into<String>, details: Option<Value>) -> Self {
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

    pub(super) fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified_plural()),
            Some(json!({"name": name, "group": rt.group, "kind": rt.plural})),
        )
    }

    pub(super) fn path_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        )
    }

    pub(super) fn method_not_allowed(method: &Method) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
            Some(json!({})),
        )
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message, None)
    }

    pub(super) fn conflict(rt: &ResourceType, name: &str) -> Self {
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

    pub(super) fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified_plural()),
            Some(json!({"name": name, "group": rt.group, "kind": rt.plural})),
        )
    }

    /// 422 with field causes, worded like the API server's CRD validation.
    pub(super) fn invalid(rt: &ResourceType, name: &str, errors: &[validate::FieldError]) -> Self {
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
    pub(super) fn rv_required(rt: &ResourceType, name: &str) -> Self {
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

    pub(super) fn unsupported_media_type(accepted: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: {accepted}"),
            Some(json!({})),
        )
    }

    /// A ValidatingAdmissionPolicy's denial, as the API server words it: the
    /// validation's `reason` picks the status (Forbidden: 403; none: Invalid, 422).
    pub(super) fn admission_denied(rt: &ResourceType, name: &str, reason: &str, message: &str) -> Self {
        let code = match reason {
            "Forbidden" => StatusCode::FORBIDDEN,
            "Unauthorized" => StatusCode::UNAUTHORIZED,
            "RequestEntityTooLarge" => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(
            code,
            reason,
            format!("{} \"{name}\" is forbidden: {message}", rt.qualified_plural()),
            Some(json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": [{"message": message}]})),
        )
    }

    pub(super) fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized", None)
    }
}

pub(super) type ApiResult = Result<(StatusCode, Value), ApiError>;
