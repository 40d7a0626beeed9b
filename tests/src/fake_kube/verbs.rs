//! The resource verbs: get, list (paged), create, replace, patch (JSON Patch
//! and merge patch) and delete, with optimistic concurrency, CRD validation,
//! the status subresource and generation bookkeeping.

use http::StatusCode;
use serde_json::{Value, json};

use super::NODECLASSES;
use super::controller::schedule_status;
use super::errors::{ApiError, ApiResult};
use super::faults::fire_get_hook;
use super::protocol::{RequestCtx, fields_match, labels_match};
use super::state::{ResourceType, Store, generation_of, meta_str, metadata_mut, now_rfc3339, spec_of};
use super::validate;
use crate::admission::{Admission, AdmissionRequest};

pub(super) fn get(ctx: &RequestCtx<'_>, rt: &'static ResourceType, name: &str) -> ApiResult {
    let mut store = ctx.shared.lock();
    let current = store.object(rt, name).cloned().ok_or_else(|| ApiError::not_found(rt, name))?;
    // The concurrent writer lands right after our read was served.
    fire_get_hook(ctx.shared, &mut store, rt, name, &current);
    Ok((StatusCode::OK, current))
}

/// A list, in name order, paged as the API server pages it: at most
/// `limit` items (or the forced page size, if smaller), then a `continue`
/// token that resumes after the last name returned.
pub(super) fn list(ctx: &RequestCtx<'_>, rt: &'static ResourceType) -> ApiResult {
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
        fire_get_hook(ctx.shared, &mut store, rt, &meta_str(item, "name").unwrap_or_default(), item);
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

pub(super) fn create(ctx: &RequestCtx<'_>, rt: &'static ResourceType) -> ApiResult {
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
    metadata_mut(&mut object).insert("name".into(), json!(name));
    admit(ctx, &store, rt, "CREATE", &name, &object, None)?;
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
    let object = store.commit(rt, &name, object);
    if rt.plural == NODECLASSES {
        schedule_status(ctx.shared, &mut store, name, 1, object.clone());
    }
    Ok((StatusCode::CREATED, object))
}

pub(super) fn replace(ctx: &RequestCtx<'_>, rt: &'static ResourceType, name: &str, status_only: bool) -> ApiResult {
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

pub(super) fn patch(ctx: &RequestCtx<'_>, rt: &'static ResourceType, name: &str, status_only: bool) -> ApiResult {
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
        admit(ctx, store, rt, "UPDATE", name, &updated, Some(current))?;
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
    let updated = store.commit(rt, name, updated);
    if spec_changed && rt.plural == NODECLASSES {
        schedule_status(ctx.shared, store, name.to_owned(), generation, updated.clone());
    }
    Ok((StatusCode::OK, updated))
}

/// The admission policy's verdict on a create or update of the main
/// resource, after schema validation and before storage, as the API server
/// orders them (so an existing name is refused before AlreadyExists).
fn admit(
    ctx: &RequestCtx<'_>,
    store: &Store,
    rt: &'static ResourceType,
    operation: &str,
    name: &str,
    object: &Value,
    old_object: Option<&Value>,
) -> Result<(), ApiError> {
    let (Some(policy), Some(user)) = (store.admission.as_deref(), ctx.user) else {
        return Ok(());
    };
    let request = AdmissionRequest {
        operation,
        group: rt.group,
        version: rt.version,
        resource: rt.plural,
        kind: rt.kind,
        subresource: None,
        name,
        user,
        object,
        old_object,
        dry_run: ctx.dry_run(),
    };
    match policy.admit(&request) {
        Admission::Allowed => Ok(()),
        Admission::Denied { reason, message } => Err(ApiError::admission_denied(rt, name, &reason, &message)),
    }
}

pub(super) fn delete(ctx: &RequestCtx<'_>, rt: &'static ResourceType, name: &str) -> ApiResult {
    let mut store = ctx.shared.lock();
    if store.object(rt, name).is_none() {
        return Err(ApiError::not_found(rt, name));
    }
    if ctx.dry_run() {
        let object = store.object(rt, name).cloned().unwrap_or(Value::Null);
        return Ok((StatusCode::OK, object));
    }
    let removed = store.commit_delete(rt, name).unwrap_or(Value::Null);
    Ok((StatusCode::OK, removed))
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}
