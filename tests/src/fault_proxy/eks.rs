//! The EKS that moto lacks: Auto Mode's `computeConfig` and access entries.
//!
//! moto's DescribeCluster has no `computeConfig`, and moto has no access
//! entries at all. The proxy keeps both per cluster, adds `computeConfig`
//! to moto's DescribeCluster answer, and serves ListAccessEntries,
//! DescribeAccessEntry and CreateAccessEntry itself, in EKS's shapes.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use http_body_util::Full;
use serde_json::{Value, json};

use super::identify::{form_value, percent_decode};
use super::protocol::{Protocol, error_response};

/// One access entry, as EKS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AccessEntry {
    pub(super) principal_arn: String,
    /// `STANDARD`, `EC2`, `EC2_LINUX`, …
    pub(super) kind: String,
}

#[derive(Debug, Default)]
pub(super) struct EksState {
    /// cluster → `computeConfig` (e.g. `{"enabled": true, "nodeRoleArn": …}`).
    pub(super) compute_config: HashMap<String, Value>,
    /// cluster → its access entries, by principal ARN.
    pub(super) access_entries: HashMap<String, BTreeMap<String, AccessEntry>>,
}

/// Entries per ListAccessEntries page when the caller asks for no size.
const DEFAULT_PAGE: usize = 100;

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn entry_json(cluster: &str, entry: &AccessEntry) -> Value {
    let name = entry.principal_arn.rsplit('/').next().unwrap_or_default();
    json!({
        "clusterName": cluster,
        "principalArn": entry.principal_arn,
        "kubernetesGroups": [],
        "accessEntryArn": format!("arn:aws:eks:us-west-2:123456789012:access-entry/{cluster}/role/123456789012/{name}/testbed"),
        "createdAt": 1_700_000_000.0,
        "modifiedAt": 1_700_000_000.0,
        "tags": {},
        "username": "system:node:{{EC2PrivateDNSName}}",
        "type": entry.kind,
    })
}

fn path_segments(uri: &Uri) -> Vec<String> {
    uri.path().trim_matches('/').split('/').map(percent_decode).collect()
}

/// Answers the access-entry calls, which never reach moto. `None` for
/// every other call.
pub(super) fn serve(
    state: &mut EksState,
    action: &str,
    method: &Method,
    uri: &Uri,
    body: &[u8],
    seq: u64,
) -> Option<Response<Full<Bytes>>> {
    let segments = path_segments(uri);
    let cluster = segments.get(1).cloned().unwrap_or_default();
    let not_found = |what: &str| {
        error_response(Protocol::RestJson, 404, "ResourceNotFoundException", &format!("{what} not found."), seq)
    };
    match (action, method) {
        ("ListAccessEntries", &Method::GET) => {
            let entries: Vec<&String> =
                state.access_entries.get(&cluster).map(|e| e.keys().collect()).unwrap_or_default();
            let query = uri.query().unwrap_or_default();
            let size = form_value(query, "maxResults").and_then(|n| n.parse().ok()).unwrap_or(DEFAULT_PAGE).max(1);
            let from: usize = form_value(query, "nextToken").and_then(|t| t.parse().ok()).unwrap_or(0);
            let to = (from + size).min(entries.len());
            let mut answer = json!({ "accessEntries": entries.get(from.min(to)..to).unwrap_or_default() });
            if to < entries.len() {
                answer["nextToken"] = json!(to.to_string());
            }
            Some(json_response(StatusCode::OK, answer))
        }
        ("DescribeAccessEntry", &Method::GET) => {
            let principal = segments.get(3).cloned().unwrap_or_default();
            match state.access_entries.get(&cluster).and_then(|e| e.get(&principal)) {
                Some(entry) => {
                    Some(json_response(StatusCode::OK, json!({ "accessEntry": entry_json(&cluster, entry) })))
                }
                None => Some(not_found(&format!("The specified access entry resource {principal}"))),
            }
        }
        ("CreateAccessEntry", &Method::POST) => {
            let request: Value = serde_json::from_slice(body).unwrap_or_default();
            let principal = request["principalArn"].as_str().unwrap_or_default().to_string();
            let kind = request["type"].as_str().unwrap_or("STANDARD").to_string();
            let entries = state.access_entries.entry(cluster.clone()).or_default();
            if entries.contains_key(&principal) {
                return Some(error_response(
                    Protocol::RestJson,
                    409,
                    "ResourceInUseException",
                    "The specified access entry resource is already in use on this cluster.",
                    seq,
                ));
            }
            let entry = AccessEntry { principal_arn: principal.clone(), kind };
            let answer = json!({ "accessEntry": entry_json(&cluster, &entry) });
            entries.insert(principal, entry);
            Some(json_response(StatusCode::OK, answer))
        }
        _ => None,
    }
}

/// Adds the cluster's `computeConfig` to moto's DescribeCluster answer.
pub(super) fn decorate_describe_cluster(state: &EksState, uri: &Uri, body: Bytes) -> Bytes {
    let cluster = path_segments(uri).get(1).cloned().unwrap_or_default();
    let Some(compute) = state.compute_config.get(&cluster) else {
        return body;
    };
    let Ok(mut answer) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    if let Some(described) = answer.get_mut("cluster").and_then(Value::as_object_mut) {
        described.insert("computeConfig".into(), compute.clone());
    }
    Bytes::from(answer.to_string())
}
