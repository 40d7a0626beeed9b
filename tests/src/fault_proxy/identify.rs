//! Which service and action a request is, from its signature, form or route.

use http::header::{self, HeaderMap};
use http::{Method, Uri};

use super::cloudwatch_cbor::{rpc_v2_target, signing_name};
use super::protocol::Protocol;

pub(super) struct CallId {
    pub(super) service: String,
    pub(super) action: String,
    pub(super) protocol: Protocol,
}

/// Service from the SigV4 credential scope, action from the RPCv2 path
/// (`/service/<service>/operation/<Op>`), the query protocol's `Action=` or
/// the EKS REST route.
pub(super) fn identify(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> CallId {
    let service = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(credential_scope_service)
        .map(str::to_owned);

    if let Some((rpc_service, operation)) = rpc_v2_target(uri.path(), headers) {
        return CallId {
            service: service.unwrap_or_else(|| signing_name(rpc_service).to_owned()),
            action: operation.to_owned(),
            protocol: Protocol::RpcV2Cbor,
        };
    }

    let gzipped =
        headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("gzip"));
    let query_action = uri
        .query()
        .and_then(|query| form_value(query, "Action"))
        .or_else(|| std::str::from_utf8(body).ok().and_then(|text| form_value(text, "Action")))
        .or_else(|| {
            // The SDK gzips large PutMetricData bodies (request compression),
            // so `Action=` is unreadable; in CloudWatch's model only
            // PutMetricData carries the compression trait.
            (gzipped && service.as_deref() == Some("monitoring")).then(|| "PutMetricData".to_owned())
        });
    if let Some(action) = query_action {
        let service = service.unwrap_or_else(|| {
            // Unsigned calls: guess from the API version.
            let version = uri
                .query()
                .and_then(|q| form_value(q, "Version"))
                .or_else(|| std::str::from_utf8(body).ok().and_then(|t| form_value(t, "Version")));
            match version.as_deref() {
                Some("2016-11-15") => "ec2".to_owned(),
                Some("2010-08-01") => "monitoring".to_owned(),
                _ => "unknown".to_owned(),
            }
        });
        let protocol = if service == "ec2" { Protocol::Ec2Query } else { Protocol::AwsQuery };
        return CallId { service, action, protocol };
    }

    let path = uri.path();
    let eks = service.as_deref() == Some("eks") || path.starts_with("/clusters");
    let action = eks
        .then(|| eks_action(method, path))
        .flatten()
        .or_else(|| {
            headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .and_then(|target| target.rsplit('.').next())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{method} {path}"));
    CallId {
        service: service.unwrap_or_else(|| if eks { "eks".into() } else { "unknown".into() }),
        action,
        protocol: Protocol::RestJson,
    }
}

/// `AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/ec2/aws4_request, …` → `ec2`.
pub(super) fn credential_scope_service(authorization: &str) -> Option<&str> {
    let credential = authorization.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    let mut parts = scope.split('/');
    // AKID / date / region / service / aws4_request
    parts.nth(3)
}

/// The value of `key` in an `a=b&c=d` string (form-decoded: `+` is a space).
pub(super) fn form_value(form: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(form.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

/// A percent-decoded URL path segment (`+` stays a `+`).
pub(super) fn percent_decode(value: &str) -> String {
    percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned()
}

/// Maps the EKS REST routes headroom and its tests use to action names.
pub(super) fn eks_action(method: &Method, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let name = match (method.as_str(), segments.as_slice()) {
        ("GET", ["clusters"]) => "ListClusters",
        ("POST", ["clusters"]) => "CreateCluster",
        ("GET", ["clusters", _]) => "DescribeCluster",
        ("DELETE", ["clusters", _]) => "DeleteCluster",
        ("POST", ["clusters", _, "update-config"]) => "UpdateClusterConfig",
        ("GET", ["clusters", _, "updates"]) => "ListUpdates",
        ("GET", ["clusters", _, "updates", _]) => "DescribeUpdate",
        ("GET", ["clusters", _, "node-groups"]) => "ListNodegroups",
        ("POST", ["clusters", _, "node-groups"]) => "CreateNodegroup",
        ("GET", ["clusters", _, "node-groups", _]) => "DescribeNodegroup",
        ("DELETE", ["clusters", _, "node-groups", _]) => "DeleteNodegroup",
        ("GET", ["clusters", _, "access-entries"]) => "ListAccessEntries",
        ("POST", ["clusters", _, "access-entries"]) => "CreateAccessEntry",
        ("GET", ["clusters", _, "access-entries", _]) => "DescribeAccessEntry",
        ("DELETE", ["clusters", _, "access-entries", _]) => "DeleteAccessEntry",
        ("GET", ["clusters", _, "addons"]) => "ListAddons",
        ("GET", ["clusters", _, "addons", _]) => "DescribeAddon",
        ("GET", ["tags", ..]) => "ListTagsForResource",
        ("POST", ["tags", ..]) => "TagResource",
        ("DELETE", ["tags", ..]) => "UntagResource",
        _ => return None,
    };
    Some(name.to_owned())
}

pub(super) fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_scope() {
        let auth = "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/ec2/aws4_request, \
                    SignedHeaders=host;x-amz-date, Signature=abc";
        assert_eq!(credential_scope_service(auth), Some("ec2"));
        assert_eq!(credential_scope_service("Bearer x"), None);
    }

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(form_value("Action=DescribeVpcs&Version=2016-11-15", "Action").as_deref(), Some("DescribeVpcs"));
        assert_eq!(form_value("CidrBlock=100.64.0.0%2F16&Action=X", "CidrBlock").as_deref(), Some("100.64.0.0/16"));
        assert_eq!(form_value("a=%", "a").as_deref(), Some("%"));
        assert_eq!(form_value("a=%2", "a").as_deref(), Some("%2"));
        assert_eq!(form_value("Version=1", "Action"), None);
    }

    #[test]
    fn rpc_v2_cbor_calls_are_named_by_operation() {
        let path = "/service/GraniteServiceVersion20100801/operation/PutMetricData";
        let mut headers = HeaderMap::new();
        headers.insert("smithy-protocol", http::HeaderValue::from_static("rpc-v2-cbor"));
        // Unsigned: the service comes from the RPCv2 service name.
        let id = identify(&Method::POST, &path.parse().unwrap(), &headers, b"\xbf\xff");
        assert_eq!(
            (id.service.as_str(), id.action.as_str(), id.protocol),
            ("monitoring", "PutMetricData", Protocol::RpcV2Cbor)
        );
        headers.insert(
            header::AUTHORIZATION,
            http::HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=t/20240101/us-east-1/monitoring/aws4_request"),
        );
        headers.insert(header::CONTENT_ENCODING, http::HeaderValue::from_static("gzip"));
        let path = "/service/GraniteServiceVersion20100801/operation/ListMetrics";
        let id = identify(&Method::POST, &path.parse().unwrap(), &headers, b"\x1f\x8b");
        assert_eq!((id.service.as_str(), id.action.as_str()), ("monitoring", "ListMetrics"));
    }

    #[test]
    fn eks_routes() {
        assert_eq!(eks_action(&Method::GET, "/clusters/lab").as_deref(), Some("DescribeCluster"));
        assert_eq!(eks_action(&Method::GET, "/clusters").as_deref(), Some("ListClusters"));
        assert_eq!(eks_action(&Method::PATCH, "/clusters/lab"), None);
    }
}
