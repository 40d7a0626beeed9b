//! CloudWatch over Smithy RPCv2-CBOR, translated for moto.
//!
//! aws-sdk-cloudwatch 1.100 and later call CloudWatch with RPCv2-CBOR:
//! `POST /service/GraniteServiceVersion20100801/operation/<Op>` with a CBOR
//! body (gzipped for a large PutMetricData), `smithy-protocol: rpc-v2-cbor`
//! and `x-amzn-query-mode: true`. moto (5.2.5) only speaks CloudWatch's
//! awsQuery and answers those requests 404. The proxy translates:
//!
//! - the request into awsQuery (`Action=<Op>&Version=2010-08-01&…`): nested
//!   structures dotted, lists as `.member.N`, maps as `.entry.N.key/value`,
//!   timestamps ISO-8601, booleans `true`/`false`. This needs no model, only
//!   which members are maps ([`MAP_MEMBERS`]), so it covers every operation;
//! - moto's XML answer into CBOR, typed by the output shapes of the
//!   operations in [`output_shape`] (GetMetricData, ListMetrics,
//!   GetMetricStatistics, and PutMetricData's empty one). An operation
//!   whose answer is empty (DeleteAlarms, …) answers `{}`; one with an
//!   answer the table lacks is refused with `TestbedUntranslatedOperation`
//!   rather than handed to the SDK untyped;
//! - moto's `<ErrorResponse>` into an RPCv2-CBOR error, as CloudWatch sends
//!   it to a query-compatible client: moto's status, the body
//!   `{"__type": "com.amazonaws.cloudwatch#<Shape>", "message": …}` and the
//!   header `x-amzn-query-error: <Code>;<Sender|Receiver>`, from which the
//!   SDK takes the awsQuery code (`InvalidParameterValue`, `Throttling`).
//!
//! The translated request keeps the caller's SigV4 headers (moto reads the
//! region from the credential scope and verifies no signature), as the proxy
//! does for every call it forwards.

use std::io::Read as _;

use bytes::Bytes;
use ciborium::Value;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri};

use super::identify::percent_encode;

/// CloudWatch's Smithy service name, the `<service>` of the RPCv2 path.
pub(super) const CLOUDWATCH_SERVICE: &str = "GraniteServiceVersion20100801";
/// CloudWatch's awsQuery API version.
const VERSION: &str = "2010-08-01";
/// The namespace of CloudWatch's shape ids (`__type`).
const SHAPE_NAMESPACE: &str = "com.amazonaws.cloudwatch";

/// Members of CloudWatch inputs that are maps, not structures (both are
/// CBOR maps): `Entity.KeyAttributes` and `Entity.Attributes` of
/// PutMetricData. No other CloudWatch input has a map.
const MAP_MEMBERS: &[&str] = &["KeyAttributes", "Attributes"];

/// `(service, operation)` of an RPCv2-CBOR request:
/// `/service/<service>/operation/<operation>`, with `smithy-protocol:
/// rpc-v2-cbor` or a CBOR content type. `None` for any other request.
pub(super) fn rpc_v2_target<'a>(path: &'a str, headers: &HeaderMap) -> Option<(&'a str, &'a str)> {
    let header_is = |name: &str, expected: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
    };
    if !header_is("smithy-protocol", "rpc-v2-cbor") && !header_is(header::CONTENT_TYPE.as_str(), "application/cbor") {
        return None;
    }
    match path.trim_start_matches('/').split('/').collect::<Vec<_>>().as_slice() {
        ["service", service, "operation", operation] if !service.is_empty() && !operation.is_empty() => {
            Some((service, operation))
        }
        _ => None,
    }
}

/// The SigV4 signing name of an RPCv2 service, for unsigned calls.
pub(super) fn signing_name(service: &str) -> &'static str {
    if service == CLOUDWATCH_SERVICE { "monitoring" } else { "unknown" }
}

/// Rewrites a CloudWatch RPCv2-CBOR request into the awsQuery request moto
/// understands: `POST /`, form body, no compression. `Err` names what
/// could not be read.
pub(super) fn to_query_request(
    mut parts: http::request::Parts,
    body: &[u8],
) -> Result<(http::request::Parts, Bytes), String> {
    let (service, operation) = rpc_v2_target(parts.uri.path(), &parts.headers)
        .ok_or_else(|| format!("{} is not an RPCv2-CBOR call", parts.uri.path()))?;
    if service != CLOUDWATCH_SERVICE {
        return Err(format!("the testbed translates RPCv2-CBOR for CloudWatch only, not {service}"));
    }
    let operation = operation.to_owned();
    let gzipped =
        parts.headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("gzip"));
    let body = if gzipped { gunzip(body)? } else { body.to_vec() };
    let form = query_form(&operation, &body)?;

    parts.uri = Uri::from_static("/");
    for name in ["smithy-protocol", "x-amzn-query-mode", "accept", "content-encoding", "content-length"] {
        parts.headers.remove(name);
    }
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"));
    Ok((parts, Bytes::from(form)))
}

fn gunzip(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(body).read_to_end(&mut plain).map_err(|e| format!("gunzipping the body: {e}"))?;
    Ok(plain)
}

/// The awsQuery form of an operation's CBOR input.
pub(super) fn query_form(operation: &str, cbor: &[u8]) -> Result<String, String> {
    let input = if cbor.is_empty() {
        Value::Map(Vec::new())
    } else {
        ciborium::from_reader::<Value, _>(cbor).map_err(|e| format!("decoding the CBOR body: {e}"))?
    };
    let Value::Map(members) = input else {
        return Err(format!("the CBOR body is not a map: {input:?}"));
    };
    let mut pairs = vec![("Action".to_owned(), operation.to_owned()), ("Version".to_owned(), VERSION.to_owned())];
    for (key, value) in &members {
        let name = member_name(key)?;
        flatten(name, name, value, &mut pairs)?;
    }
    Ok(pairs.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect::<Vec<_>>().join("&"))
}

fn member_name(key: &Value) -> Result<&str, String> {
    key.as_text().ok_or_else(|| format!("a map key that is not text: {key:?}"))
}

/// awsQuery flattening of one value at `prefix`; `member` is the name of
/// the member it is the value of (which says whether a map is a map).
fn flatten(prefix: &str, member: &str, value: &Value, out: &mut Vec<(String, String)>) -> Result<(), String> {
    match value {
        Value::Null => {}
        Value::Map(entries) if MAP_MEMBERS.contains(&member) => {
            for (i, (key, value)) in entries.iter().enumerate() {
                let entry = format!("{prefix}.entry.{}", i + 1);
                flatten(&format!("{entry}.key"), "key", key, out)?;
                flatten(&format!("{entry}.value"), "value", value, out)?;
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries {
                let name = member_name(key)?;
                flatten(&format!("{prefix}.{name}"), name, value, out)?;
            }
        }
        // An empty list is sent as the bare name, as the SDK's awsQuery did.
        Value::Array(items) if items.is_empty() => out.push((prefix.to_owned(), String::new())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}.member.{}", i + 1), "member", item, out)?;
            }
        }
        Value::Tag(1, seconds) => out.push((prefix.to_owned(), iso8601(epoch_seconds(seconds)?))),
        Value::Tag(tag, _) => return Err(format!("{prefix}: CBOR tag {tag} is not a Smithy type")),
        scalar => out.push((prefix.to_owned(), scalar_text(prefix, scalar)?)),
    }
    Ok(())
}

fn scalar_text(prefix: &str, value: &Value) -> Result<String, String> {
    Ok(match value {
        Value::Text(text) => text.clone(),
        Value::Bool(flag) => flag.to_string(),
        Value::Integer(n) => i128::from(*n).to_string(),
        Value::Float(x) => double_text(*x),
        Value::Bytes(bytes) => base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes),
        other => return Err(format!("{prefix}: unexpected CBOR value {other:?}")),
    })
}

/// A double as awsQuery writes it (`1`, `2.5`, `NaN`, `Infinity`).
fn double_text(x: f64) -> String {
    if x.is_nan() {
        "NaN".to_owned()
    } else if x.is_infinite() {
        if x > 0.0 { "Infinity".to_owned() } else { "-Infinity".to_owned() }
    } else {
        x.to_string()
    }
}

/// The content of a tag-1 timestamp: integer or float epoch seconds.
fn epoch_seconds(value: &Value) -> Result<f64, String> {
    match value {
        Value::Integer(n) => Ok(i128::from(*n) as f64),
        Value::Float(x) if x.is_finite() => Ok(*x),
        other => Err(format!("a timestamp that is not epoch seconds: {other:?}")),
    }
}

/// `2024-05-01T12:00:00Z`, with milliseconds when there are any.
fn iso8601(seconds: f64) -> String {
    let millis = (seconds * 1000.0).round() as i64;
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(time) => time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => seconds.to_string(),
    }
}

/// The type of a member of an operation's output, enough to give each
/// value of moto's XML its CBOR type.
#[derive(Debug, Clone, Copy)]
pub(super) enum Shape {
    String,
    Double,
    Integer,
    Timestamp,
    List(&'static Shape),
    /// String keys.
    Map(&'static Shape),
    Structure(&'static [(&'static str, Shape)]),
}

const DIMENSION: Shape = Shape::Structure(&[("Name", Shape::String), ("Value", Shape::String)]);
const METRIC: Shape = Shape::Structure(&[
    ("Namespace", Shape::String),
    ("MetricName", Shape::String),
    ("Dimensions", Shape::List(&DIMENSION)),
]);
const MESSAGE_DATA: Shape = Shape::Structure(&[("Code", Shape::String), ("Value", Shape::String)]);
const METRIC_DATA_RESULT: Shape = Shape::Structure(&[
    ("Id", Shape::String),
    ("Label", Shape::String),
    ("Timestamps", Shape::List(&Shape::Timestamp)),
    ("Values", Shape::List(&Shape::Double)),
    ("StatusCode", Shape::String),
    ("Messages", Shape::List(&MESSAGE_DATA)),
]);
const METRIC_ALARM: Shape = Shape::Structure(&[
    ("AlarmName", Shape::String),
    ("AlarmArn", Shape::String),
    ("AlarmDescription", Shape::String),
    ("OKActions", Shape::List(&Shape::String)),
    ("AlarmActions", Shape::List(&Shape::String)),
    ("InsufficientDataActions", Shape::List(&Shape::String)),
    ("StateValue", Shape::String),
    ("MetricName", Shape::String),
    ("Namespace", Shape::String),
    ("Statistic", Shape::String),
    ("Dimensions", Shape::List(&DIMENSION)),
    ("Period", Shape::Integer),
    ("EvaluationPeriods", Shape::Integer),
    ("DatapointsToAlarm", Shape::Integer),
    ("Threshold", Shape::Double),
    ("ComparisonOperator", Shape::String),
    ("TreatMissingData", Shape::String),
]);
const DATAPOINT: Shape = Shape::Structure(&[
    ("Timestamp", Shape::Timestamp),
    ("SampleCount", Shape::Double),
    ("Average", Shape::Double),
    ("Sum", Shape::Double),
    ("Minimum", Shape::Double),
    ("Maximum", Shape::Double),
    ("Unit", Shape::String),
    ("ExtendedStatistics", Shape::Map(&Shape::Double)),
]);

/// The output shape of the operations whose answers are translated.
pub(super) fn output_shape(operation: &str) -> Option<Shape> {
    Some(match operation {
        "PutMetricData" | "PutMetricAlarm" => Shape::Structure(&[]),
        "DescribeAlarms" => {
            Shape::Structure(&[("MetricAlarms", Shape::List(&METRIC_ALARM)), ("NextToken", Shape::String)])
        }
        "GetMetricData" => Shape::Structure(&[
            ("MetricDataResults", Shape::List(&METRIC_DATA_RESULT)),
            ("NextToken", Shape::String),
            ("Messages", Shape::List(&MESSAGE_DATA)),
        ]),
        "ListMetrics" => Shape::Structure(&[
            ("Metrics", Shape::List(&METRIC)),
            ("NextToken", Shape::String),
            ("OwningAccounts", Shape::List(&Shape::String)),
        ]),
        "GetMetricStatistics" => Shape::Structure(&[("Label", Shape::String), ("Datapoints", Shape::List(&DATAPOINT))]),
        _ => return None,
    })
}

/// One XML element as a CBOR value of `shape`.
fn xml_to_cbor(node: roxmltree::Node<'_, '_>, shape: Shape) -> Result<Value, String> {
    let text = || node.text().unwrap_or_default().trim();
    let name = node.tag_name().name();
    Ok(match shape {
        // Text as moto wrote it, untrimmed: a label may end in a space.
        Shape::String => Value::Text(node.text().unwrap_or_default().to_owned()),
        Shape::Double => {
            Value::Float(parse_double(text()).ok_or_else(|| format!("{name}: not a number: {:?}", text()))?)
        }
        Shape::Integer => {
            Value::Integer(text().parse::<i64>().map_err(|_| format!("{name}: not an integer: {:?}", text()))?.into())
        }
        Shape::Timestamp => Value::Tag(1, Box::new(Value::Float(parse_timestamp(text())?))),
        Shape::List(item) => Value::Array(
            node.children().filter(|c| c.is_element()).map(|c| xml_to_cbor(c, *item)).collect::<Result<_, _>>()?,
        ),
        Shape::Map(value) => {
            let mut entries = Vec::new();
            for entry in node.children().filter(|c| c.is_element()) {
                let child = |tag: &str| entry.children().find(|c| c.is_element() && c.tag_name().name() == tag);
                let key = child("key").and_then(|k| k.text()).unwrap_or_default().to_owned();
                let value = match child("value") {
                    Some(v) => xml_to_cbor(v, *value)?,
                    None => Value::Null,
                };
                entries.push((Value::Text(key), value));
            }
            Value::Map(entries)
        }
        Shape::Structure(members) => {
            let mut entries = Vec::new();
            for child in node.children().filter(|c| c.is_element()) {
                let member = child.tag_name().name();
                // Like the SDK, skip what the model does not know.
                if let Some((_, shape)) = members.iter().find(|(name, _)| *name == member) {
                    entries.push((Value::Text(member.to_owned()), xml_to_cbor(child, *shape)?));
                }
            }
            Value::Map(entries)
        }
    })
}

fn parse_double(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// ISO-8601 (with or without a zone, which then is UTC) to epoch seconds.
fn parse_timestamp(text: &str) -> Result<f64, String> {
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc()))
        .map_err(|e| format!("not a timestamp: {text:?}: {e}"))?;
    Ok(time.timestamp_millis() as f64 / 1000.0)
}

/// An answer to the SDK: status, headers, body.
pub(super) type Answer = (StatusCode, HeaderMap, Bytes);

/// moto's awsQuery answer (status, headers, XML) to an RPCv2-CBOR call of
/// `operation`, as CloudWatch would give it.
pub(super) fn to_cbor_answer(operation: &str, status: StatusCode, moto_headers: &HeaderMap, xml: &[u8]) -> Answer {
    let moto_request_id = moto_headers.get("x-amzn-requestid").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = String::from_utf8_lossy(xml);
    let document = roxmltree::Document::parse(&text);
    let request_id = moto_request_id
        .or_else(|| {
            let document = document.as_ref().ok()?;
            document.descendants().find(|n| n.has_tag_name("RequestId")).and_then(|n| n.text()).map(str::to_owned)
        })
        .unwrap_or_default();

    if !status.is_success() {
        let error = document.as_ref().ok().and_then(|d| d.descendants().find(|n| n.has_tag_name("Error")));
        let field = |tag: &str| {
            error.and_then(|e| e.children().find(|c| c.has_tag_name(tag))).and_then(|n| n.text()).map(str::to_owned)
        };
        let fallback = if status.is_server_error() { "InternalFailure" } else { "UnknownError" };
        let code = field("Code").unwrap_or_else(|| fallback.to_owned());
        let message = field("Message").unwrap_or_else(|| format!("moto answered {status}: {}", excerpt(&text)));
        let kind = field("Type");
        return error_answer(status, &code, kind.as_deref(), &message, &request_id);
    }

    let document = match document {
        Ok(document) => document,
        Err(error) => {
            let message = format!("moto's {operation} answer is not XML ({error}): {}", excerpt(&text));
            return error_answer(StatusCode::BAD_GATEWAY, "InternalFailure", None, &message, &request_id);
        }
    };
    let result_tag = format!("{operation}Result");
    let result = document.root_element().children().find(|c| c.is_element() && c.tag_name().name() == result_tag);
    let output = match (result, output_shape(operation)) {
        (Some(result), Some(shape)) => xml_to_cbor(result, shape),
        (None, _) => Ok(Value::Map(Vec::new())),
        (Some(result), None) if !result.children().any(|c| c.is_element()) => Ok(Value::Map(Vec::new())),
        (Some(_), None) => Err(format!(
            "the testbed's proxy does not translate CloudWatch {operation} answers to CBOR yet \
             (add its output shape to tests/src/fault_proxy/cloudwatch_cbor.rs)"
        )),
    };
    match output {
        Ok(output) => (status, cbor_headers(&request_id, None), encode(&output)),
        Err(message) => {
            error_answer(StatusCode::BAD_REQUEST, "TestbedUntranslatedOperation", None, &message, &request_id)
        }
    }
}

fn excerpt(text: &str) -> String {
    text.chars().take(300).collect()
}

fn encode(value: &Value) -> Bytes {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    ciborium::into_writer(value, &mut out).expect("CBOR encoding into memory");
    Bytes::from(out)
}

fn cbor_headers(request_id: &str, query_error: Option<String>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/cbor"));
    headers.insert(HeaderName::from_static("smithy-protocol"), HeaderValue::from_static("rpc-v2-cbor"));
    if let Ok(value) = HeaderValue::from_str(request_id)
        && !request_id.is_empty()
    {
        headers.insert(HeaderName::from_static("x-amzn-requestid"), value);
    }
    if let Some(value) = query_error.and_then(|q| HeaderValue::from_str(&q).ok()) {
        headers.insert(HeaderName::from_static("x-amzn-query-error"), value);
    }
    headers
}

/// The Smithy shape of CloudWatch's modeled errors, by awsQuery code
/// (`@awsQueryError`, as aws-sdk-cloudwatch matches them). Other codes are
/// their own shape name, but the unmodeled `Throttling`, which goes as
/// `ThrottlingException`: the SDK takes the code from `x-amzn-query-error`
/// anyway, and both names are in its list of throttling errors.
fn error_shape(code: &str) -> &str {
    match code {
        "InternalServiceError" => "InternalServiceFault",
        "InvalidFormat" => "InvalidFormatFault",
        "InvalidParameterCombination" => "InvalidParameterCombinationException",
        "InvalidParameterInput" => "DashboardInvalidInputError",
        "InvalidParameterValue" => "InvalidParameterValueException",
        "LimitExceeded" => "LimitExceededFault",
        "MissingParameter" => "MissingRequiredParameterException",
        "ValidationError" => "ValidationException",
        "Throttling" => "ThrottlingException",
        other => other,
    }
}

/// An RPCv2-CBOR error as CloudWatch answers a query-compatible client
/// (see the module doc). `kind` is awsQuery's `Sender`/`Receiver`, from the
/// status when `None`.
pub(super) fn error_answer(
    status: StatusCode,
    code: &str,
    kind: Option<&str>,
    message: &str,
    request_id: &str,
) -> Answer {
    let kind = kind.unwrap_or(if status.is_server_error() { "Receiver" } else { "Sender" });
    let body = Value::Map(vec![
        (Value::Text("__type".into()), Value::Text(format!("{SHAPE_NAMESPACE}#{}", error_shape(code)))),
        (Value::Text("message".into()), Value::Text(message.to_owned())),
    ]);
    (status, cbor_headers(request_id, Some(format!("{code};{kind}"))), encode(&body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
    }

    fn cbor(value: &Value) -> Vec<u8> {
        encode(value).to_vec()
    }

    fn decode(bytes: &[u8]) -> Value {
        ciborium::from_reader(bytes).expect("CBOR")
    }

    fn get<'a>(value: &'a Value, key: &str) -> &'a Value {
        value
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some(key)))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("{key} in {value:?}"))
    }

    #[test]
    fn put_metric_data_is_flattened_as_aws_query() {
        let dimension = |name: &str, value: &str| map(vec![("Name", text(name)), ("Value", text(value))]);
        let input = map(vec![
            ("Namespace", text("Headroom & co")),
            (
                "MetricData",
                Value::Array(vec![
                    map(vec![
                        ("MetricName", text("FreeIpAddresses")),
                        (
                            "Dimensions",
                            Value::Array(vec![dimension("ClusterName", "lab"), dimension("Az", "us-west-2b")]),
                        ),
                        ("Timestamp", Value::Tag(1, Box::new(Value::Float(1_714_564_800.25)))),
                        ("Value", Value::Float(12.0)),
                        ("Unit", text("Count")),
                        ("StorageResolution", Value::Integer(1.into())),
                    ]),
                    map(vec![
                        ("MetricName", text("Latency")),
                        ("Timestamp", Value::Tag(1, Box::new(Value::Integer(1_714_564_800.into())))),
                        ("Values", Value::Array(vec![Value::Float(0.5), Value::Float(f64::INFINITY)])),
                        ("Counts", Value::Array(vec![Value::Float(3.0), Value::Float(1.0)])),
                        ("Dimensions", Value::Array(vec![])),
                    ]),
                ]),
            ),
            (
                "EntityMetricData",
                Value::Array(vec![map(vec![(
                    "Entity",
                    map(vec![("KeyAttributes", map(vec![("Type", text("Service")), ("Name", text("headroom"))]))]),
                )])]),
            ),
            ("StrictEntityValidation", Value::Bool(false)),
            ("Absent", Value::Null),
        ]);
        let form = query_form("PutMetricData", &cbor(&input)).unwrap();
        let pairs: Vec<&str> = form.split('&').collect();
        assert_eq!(
            pairs,
            [
                "Action=PutMetricData",
                "Version=2010-08-01",
                "Namespace=Headroom%20%26%20co",
                "MetricData.member.1.MetricName=FreeIpAddresses",
                "MetricData.member.1.Dimensions.member.1.Name=ClusterName",
                "MetricData.member.1.Dimensions.member.1.Value=lab",
                "MetricData.member.1.Dimensions.member.2.Name=Az",
                "MetricData.member.1.Dimensions.member.2.Value=us-west-2b",
                "MetricData.member.1.Timestamp=2024-05-01T12%3A00%3A00.250Z",
                "MetricData.member.1.Value=12",
                "MetricData.member.1.Unit=Count",
                "MetricData.member.1.StorageResolution=1",
                "MetricData.member.2.MetricName=Latency",
                "MetricData.member.2.Timestamp=2024-05-01T12%3A00%3A00Z",
                "MetricData.member.2.Values.member.1=0.5",
                "MetricData.member.2.Values.member.2=Infinity",
                "MetricData.member.2.Counts.member.1=3",
                "MetricData.member.2.Counts.member.2=1",
                "MetricData.member.2.Dimensions=",
                "EntityMetricData.member.1.Entity.KeyAttributes.entry.1.key=Type",
                "EntityMetricData.member.1.Entity.KeyAttributes.entry.1.value=Service",
                "EntityMetricData.member.1.Entity.KeyAttributes.entry.2.key=Name",
                "EntityMetricData.member.1.Entity.KeyAttributes.entry.2.value=headroom",
                "StrictEntityValidation=false",
            ]
        );
        assert_eq!(query_form("ListMetrics", &[]).unwrap(), "Action=ListMetrics&Version=2010-08-01");
        assert!(query_form("ListMetrics", &cbor(&text("no map"))).is_err());
        assert!(query_form("ListMetrics", b"\xff\x00").is_err());
    }

    #[test]
    fn a_gzipped_request_is_rewritten_for_moto() {
        use std::io::Write as _;
        let input = map(vec![("Namespace", text("Headroom"))]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&cbor(&input)).unwrap();
        let request = http::Request::builder()
            .method("POST")
            .uri("/service/GraniteServiceVersion20100801/operation/PutMetricData")
            .header("smithy-protocol", "rpc-v2-cbor")
            .header("content-type", "application/cbor")
            .header("content-encoding", "gzip")
            .header("authorization", "AWS4-HMAC-SHA256 Credential=testing/20240101/us-west-2/monitoring/aws4_request")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let (parts, body) = to_query_request(parts, &gz.finish().unwrap()).unwrap();
        assert_eq!(&body[..], b"Action=PutMetricData&Version=2010-08-01&Namespace=Headroom");
        assert_eq!(parts.uri.path(), "/");
        assert!(parts.headers.get("content-encoding").is_none());
        assert!(parts.headers.get("smithy-protocol").is_none());
        assert!(parts.headers.get("authorization").is_some(), "moto reads the region from the signature");
        assert_eq!(parts.headers["content-type"], "application/x-www-form-urlencoded; charset=utf-8");
    }

    #[test]
    fn rpc_v2_targets_are_recognised() {
        let mut headers = HeaderMap::new();
        let path = "/service/GraniteServiceVersion20100801/operation/GetMetricData";
        assert_eq!(rpc_v2_target(path, &headers), None, "no CBOR header");
        headers.insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
        assert_eq!(rpc_v2_target(path, &headers), Some((CLOUDWATCH_SERVICE, "GetMetricData")));
        assert_eq!(rpc_v2_target("/service/x/operation/", &headers), None);
        assert_eq!(rpc_v2_target("/", &headers), None);
    }

    #[test]
    fn get_metric_data_answers_are_typed() {
        let xml = r#"<GetMetricDataResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><GetMetricDataResult><MetricDataResults><member><Id>q</Id><Label>M Sum</Label><Timestamps><member>2024-05-01T12:00:00Z</member><member>2024-05-01T11:59:00.500000+00:00</member></Timestamps><Values><member>11.5</member><member>3</member></Values><StatusCode>Complete</StatusCode></member><member><Id>e</Id><Label>e</Label><Timestamps/><Values/><StatusCode>Complete</StatusCode></member></MetricDataResults><NextToken>t1</NextToken></GetMetricDataResult><ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata></GetMetricDataResponse>"#;
        let (status, headers, body) =
            to_cbor_answer("GetMetricData", StatusCode::OK, &HeaderMap::new(), xml.as_bytes());
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/cbor");
        assert_eq!(headers["smithy-protocol"], "rpc-v2-cbor");
        assert_eq!(headers["x-amzn-requestid"], "req-1");
        let output = decode(&body);
        assert_eq!(get(&output, "NextToken"), &text("t1"));
        let results = get(&output, "MetricDataResults").as_array().unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(get(&results[0], "Label"), &text("M Sum"));
        assert_eq!(get(&results[0], "Values"), &Value::Array(vec![Value::Float(11.5), Value::Float(3.0)]));
        assert_eq!(
            get(&results[0], "Timestamps"),
            &Value::Array(vec![
                Value::Tag(1, Box::new(Value::Float(1_714_564_800.0))),
                Value::Tag(1, Box::new(Value::Float(1_714_564_740.5))),
            ])
        );
        assert_eq!(get(&results[1], "Values"), &Value::Array(vec![]));
    }

    #[test]
    fn list_metrics_and_statistics_answers_are_typed() {
        let xml = r#"<ListMetricsResponse><ListMetricsResult><Metrics><member><Namespace>T</Namespace><MetricName>M</MetricName><Dimensions><member><Name>A</Name><Value>x</Value></member></Dimensions></member></Metrics></ListMetricsResult></ListMetricsResponse>"#;
        let (_, _, body) = to_cbor_answer("ListMetrics", StatusCode::OK, &HeaderMap::new(), xml.as_bytes());
        let metrics = decode(&body);
        let metric = &get(&metrics, "Metrics").as_array().unwrap()[0];
        assert_eq!(get(metric, "MetricName"), &text("M"));
        let dimension = &get(metric, "Dimensions").as_array().unwrap()[0];
        assert_eq!((get(dimension, "Name"), get(dimension, "Value")), (&text("A"), &text("x")));

        let xml = r#"<GetMetricStatisticsResponse><GetMetricStatisticsResult><Label>M</Label><Datapoints><member><Timestamp>2024-05-01T12:00:00Z</Timestamp><Sum>11.5</Sum><ExtendedStatistics><entry><key>p90</key><value>4</value></entry></ExtendedStatistics></member></Datapoints></GetMetricStatisticsResult></GetMetricStatisticsResponse>"#;
        let (_, _, body) = to_cbor_answer("GetMetricStatistics", StatusCode::OK, &HeaderMap::new(), xml.as_bytes());
        let statistics = decode(&body);
        let point = &get(&statistics, "Datapoints").as_array().unwrap()[0];
        assert_eq!(get(point, "Sum"), &Value::Float(11.5));
        assert_eq!(get(point, "ExtendedStatistics"), &map(vec![("p90", Value::Float(4.0))]));

        // An empty answer is `{}`; a non-empty one without a shape is refused.
        let xml = "<PutMetricDataResponse><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></PutMetricDataResponse>";
        let (status, _, body) = to_cbor_answer("PutMetricData", StatusCode::OK, &HeaderMap::new(), xml.as_bytes());
        assert_eq!((status, decode(&body)), (StatusCode::OK, Value::Map(vec![])));
        let xml = "<DescribeAlarmsResponse><DescribeAlarmsResult><MetricAlarms><member><AlarmName>a</AlarmName><Period>300</Period><Threshold>16.0</Threshold><AlarmActions><member>arn:x</member></AlarmActions></member></MetricAlarms></DescribeAlarmsResult></DescribeAlarmsResponse>";
        let (_, _, body) = to_cbor_answer("DescribeAlarms", StatusCode::OK, &HeaderMap::new(), xml.as_bytes());
        let alarms = decode(&body);
        let alarm = &get(&alarms, "MetricAlarms").as_array().unwrap()[0];
        assert_eq!(get(alarm, "Period"), &Value::Integer(300.into()), "integers stay integers");
        assert_eq!(get(alarm, "Threshold"), &Value::Float(16.0));
        assert_eq!(get(alarm, "AlarmActions"), &Value::Array(vec![text("arn:x")]));
        let xml = "<DeleteAlarmsResponse><DeleteAlarmsResult><Deleted/></DeleteAlarmsResult></DeleteAlarmsResponse>";
        let (status, headers, _) = to_cbor_answer("DeleteAlarms", StatusCode::OK, &HeaderMap::new(), xml.as_bytes());
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers["x-amzn-query-error"], "TestbedUntranslatedOperation;Sender");
    }

    #[test]
    fn moto_errors_become_query_compatible_cbor_errors() {
        let xml = r#"<ErrorResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><Error><Type>Sender</Type><Code>InvalidParameterValue</Code><Message>Request parameter NextToken is invalid</Message></Error><RequestId>req-2</RequestId></ErrorResponse>"#;
        let (status, headers, body) =
            to_cbor_answer("ListMetrics", StatusCode::BAD_REQUEST, &HeaderMap::new(), xml.as_bytes());
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers["x-amzn-query-error"], "InvalidParameterValue;Sender");
        assert_eq!(headers["x-amzn-requestid"], "req-2");
        let error = decode(&body);
        assert_eq!(get(&error, "__type"), &text("com.amazonaws.cloudwatch#InvalidParameterValueException"));
        assert_eq!(get(&error, "message"), &text("Request parameter NextToken is invalid"));

        let (status, headers, _) =
            to_cbor_answer("ListMetrics", StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new(), b"<html>oops</html>");
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(headers["x-amzn-query-error"], "InternalFailure;Receiver");
    }
}
