//! The HTTP side of the fake API server: routing of API paths, bearer-token
//! auth (401), request parsing (query parameters, content types and 415,
//! selectors), recording each request, the discovery documents kube-rs
//! reads, and JSON answers.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use super::errors::{ApiError, ApiResult};
use super::faults::{WriteFault, injected_failure};
use super::state::{RESOURCES, RecordedRequest, ResourceType, Shared, meta_str};
use super::verbs::{create, delete, get, list, patch, replace};
use super::watch;
use crate::admission::UserInfo;

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

pub(super) async fn handle_request(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let user = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| shared.user(token.trim()));
    let authorized = user.is_some();

    let body = match axum::body::to_bytes(body, 16 << 20).await {
        Ok(body) => body,
        Err(error) => {
            return respond(Err(ApiError::bad_request(format!("reading the request body: {error}"))));
        }
    };

    let arrived = Instant::now();
    let latency = shared.lock().latency;
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }

    let mut record = RecordedRequest {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: content_type.clone(),
        status: 0,
        plural: None,
        name: None,
        subresource: None,
        watch: false,
        arrived,
        answered: arrived,
    };
    let route = route(&path);
    match &route {
        Route::Collection(rt) => {
            record.plural = Some(rt.plural.to_owned());
            if parts.method == Method::POST {
                record.name = serde_json::from_slice::<Value>(&body).ok().and_then(|v| meta_str(&v, "name"));
            }
            if parts.method == Method::GET && watch::is_watch(query.as_deref()) {
                record.watch = true;
                record.name = query_param(query.as_deref(), "fieldSelector").and_then(|s| watch::selected_name(&s));
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
            user: user.as_ref(),
            method: &parts.method,
            query: query.as_deref(),
            content_type: content_type.as_deref(),
            body: &body,
        };
        let result = match route {
            Route::Collection(rt) if record.watch => watch::start(&ctx, rt).map(Answer::Watch),
            route => dispatch(&ctx, route).map(|(status, body)| Answer::Json(status, body)),
        };
        match write_fault {
            WriteFault::LoseAnswer(code) => Err(injected_failure(code)),
            _ => result,
        }
    };
    let status = match &result {
        Ok(Answer::Json(status, _)) => *status,
        Ok(Answer::Watch(_)) => StatusCode::OK,
        Err(error) => error.code,
    };
    record.status = status.as_u16();
    record.answered = Instant::now();
    tracing::debug!(method = %record.method, path = %record.path, status = record.status, "fake kube request");
    shared.lock().requests.push(record);
    respond(result)
}

/// A successful answer: one JSON document, or a watch's event stream.
enum Answer {
    Json(StatusCode, Value),
    Watch(Body),
}

fn respond(result: Result<Answer, ApiError>) -> Response {
    let mut response = match result {
        Ok(Answer::Json(status, body)) => (status, body.to_string()).into_response(),
        Ok(Answer::Watch(events)) => (StatusCode::OK, events).into_response(),
        Err(error) => (error.code, error.body.to_string()).into_response(),
    };
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub(super) struct RequestCtx<'a> {
    pub(super) shared: &'a Arc<Shared>,
    /// Who sent it (`None` only before authentication).
    pub(super) user: Option<&'a UserInfo>,
    pub(super) method: &'a Method,
    pub(super) query: Option<&'a str>,
    pub(super) content_type: Option<&'a str>,
    pub(super) body: &'a [u8],
}

impl RequestCtx<'_> {
    pub(super) fn query_param(&self, key: &str) -> Option<String> {
        query_param(self.query, key)
    }

    pub(super) fn dry_run(&self) -> bool {
        self.query_param("dryRun").is_some_and(|v| v == "All")
    }

    /// The media type without parameters (`; charset=utf-8`).
    pub(super) fn media_type(&self) -> Option<&str> {
        self.content_type.map(|ct| ct.split(';').next().unwrap_or(ct).trim())
    }

    pub(super) fn json_body(&self) -> Result<Value, ApiError> {
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

/// The first value of `key` in a query string, URL-decoded.
pub(super) fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
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
            // Watches are answered by `watch::start` before dispatch.
            Method::GET => list(ctx, rt),
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
                    "verbs": ["delete", "get", "list", "patch", "create", "update", "watch"],
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

/// Equality-based label selectors: `a=b`, `a==b`, `a!=b`, `a`, `!a`.
pub(super) fn labels_match(object: &Value, selector: &str) -> bool {
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
pub(super) fn fields_match(object: &Value, selector: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

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
}
