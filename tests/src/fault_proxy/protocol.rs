//! Each AWS protocol's shapes: errors the SDK parses as AWS's own, and XML reading.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::cloudwatch_cbor;

/// How a service encodes errors, which decides the shape of injected ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Ec2Query,
    AwsQuery,
    RestJson,
    /// Smithy RPCv2-CBOR (CloudWatch), translated for moto (cloudwatch_cbor.rs).
    RpcV2Cbor,
}

pub(super) fn plain_response(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// The error responses real AWS sends, in the shape each SDK protocol parses:
/// EC2's `<Response><Errors><Error>`, awsQuery's `<ErrorResponse><Error>`,
/// restJson's `x-amzn-ErrorType` header, RPCv2-CBOR's `__type` and
/// `x-amzn-query-error`. The codes are in the SDK's list of throttling
/// errors, so standard retries back off and retry them.
pub(super) fn fault_response(protocol: Protocol, throttle: bool, seq: u64) -> Response<Full<Bytes>> {
    let request_id = format!("00000000-0000-4000-8000-{seq:012x}");
    let cbor = |status, code, message| {
        answer_response(cloudwatch_cbor::error_answer(status, code, None, message, &request_id))
    };
    let (status, content_type, body, error_type) = match (protocol, throttle) {
        (Protocol::Ec2Query, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/xml;charset=UTF-8",
            ec2_error("RequestLimitExceeded", "Request limit exceeded.", &request_id),
            None,
        ),
        (Protocol::Ec2Query, false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/xml;charset=UTF-8",
            ec2_error("InternalError", "An internal error has occurred.", &request_id),
            None,
        ),
        (Protocol::AwsQuery, true) => (
            StatusCode::BAD_REQUEST,
            "text/xml",
            query_error("Sender", "Throttling", "Rate exceeded", &request_id),
            None,
        ),
        (Protocol::AwsQuery, false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/xml",
            query_error("Receiver", "InternalFailure", "Internal failure.", &request_id),
            None,
        ),
        (Protocol::RestJson, true) => (
            StatusCode::TOO_MANY_REQUESTS,
            "application/json",
            r#"{"message":"Rate exceeded"}"#.to_owned(),
            Some("ThrottlingException"),
        ),
        (Protocol::RestJson, false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            r#"{"message":"An internal error has occurred."}"#.to_owned(),
            Some("ServerException"),
        ),
        // CloudWatch's awsQuery codes, in the query-compatible header.
        (Protocol::RpcV2Cbor, true) => return cbor(StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded"),
        (Protocol::RpcV2Cbor, false) => {
            return cbor(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure", "Internal failure.");
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    if let Some(error_type) = error_type {
        headers.insert("x-amzn-errortype", HeaderValue::from_static(error_type));
    }
    response
}

pub(super) fn ec2_error(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
    )
}

pub(super) fn ec2_error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(ec2_error(code, &xml_escape(message), request_id))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml;charset=UTF-8"));
    response
}

pub(super) fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A service error with `code`, in each protocol's shape.
pub(super) fn error_response(
    protocol: Protocol,
    status: u16,
    code: &str,
    message: &str,
    seq: u64,
) -> Response<Full<Bytes>> {
    let request_id = format!("00000000-0000-4000-8000-{seq:012x}");
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    match protocol {
        Protocol::Ec2Query => ec2_error_response(status, code, message, &request_id),
        Protocol::AwsQuery => {
            let kind = if status.is_server_error() { "Receiver" } else { "Sender" };
            let body = query_error(kind, code, &xml_escape(message), &request_id);
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
            response
        }
        Protocol::RestJson => {
            let body = serde_json::json!({ "message": message }).to_string();
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Ok(value) = HeaderValue::from_str(code) {
                headers.insert("x-amzn-errortype", value);
            }
            response
        }
        Protocol::RpcV2Cbor => answer_response(cloudwatch_cbor::error_answer(status, code, None, message, &request_id)),
    }
}

/// A response from a translated answer (status, headers, body).
pub(super) fn answer_response((status, headers, body): cloudwatch_cbor::Answer) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// [`Fault::Crashed`]: a client error in each protocol's shape, with a code
/// no SDK retry classifier knows.
pub(super) fn crashed_response(protocol: Protocol, seq: u64) -> Response<Full<Bytes>> {
    const CODE: &str = "TestbedClientCrashed";
    const MESSAGE: &str = "the testbed simulates that the caller crashed before this call";
    error_response(protocol, 400, CODE, MESSAGE, seq)
}

pub(super) fn query_error(kind: &str, code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\"><Error>\
         <Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>\
         <RequestId>{request_id}</RequestId></ErrorResponse>"
    )
}

/// The text of the first `<element>` in `xml`.
pub(super) fn element_text(xml: &str, element: &str) -> Option<String> {
    let open = format!("<{element}>");
    let close = format!("</{element}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml[start..end].to_owned())
}
