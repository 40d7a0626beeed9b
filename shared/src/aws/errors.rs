//! Turning SDK errors into [`Error`]s that know whether a retry can help.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::error::Error;

/// The service error code, if the call reached the service and it answered.
pub fn error_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

/// `Invalid…ID.NotFound` and its kin (`InvalidSubnetID.NotFound`,
/// `InvalidRouteTableID.NotFound`, `InvalidGroup.NotFound`, …): EC2 does
/// not know the id, which right after the id was created or described means
/// it has not caught up yet (docs/aws-rules.md, "Eventual consistency").
pub fn is_not_found<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    error_code(err).is_some_and(|code| code.starts_with("Invalid") && code.ends_with(".NotFound"))
}

/// Error codes AWS SDKs retry as throttling or transient
/// (aws-runtime `THROTTLING_ERRORS` and `TRANSIENT_ERRORS`).
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Whether an AWS SDK error may go away on a later attempt: throttling,
/// 5xx and 429 responses, timeouts, dropped connections and unreadable
/// responses. Not: request construction failures, caller mistakes (4xx),
/// or dispatch failures caused by the caller's configuration.
///
/// The SDK has already retried by then; `true` means a later invocation can
/// succeed, so the Lambda should fail and be retried.
pub fn is_retryable<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ConstructionFailure(_) => false,
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        SdkError::ResponseError(_) => true,
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status();
            status.is_server_error()
                || status.as_u16() == 429
                || ctx.err().code().is_some_and(|code| RETRYABLE_CODES.contains(&code))
        }
        _ => false,
    }
}

/// A one-line description of an AWS SDK error: `Code (HTTP status): message`
/// for service errors, the whole source chain otherwise (the default
/// `Display` of `SdkError` says only "service error" or "dispatch failure").
pub fn message<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(ctx) => format!(
            "{} (HTTP {}): {}",
            ctx.err().code().unwrap_or("unknown error"),
            ctx.raw().status().as_u16(),
            ctx.err().message().unwrap_or("no message"),
        ),
        other => DisplayErrorContext(other).to_string(),
    }
}

/// Wraps an SDK error with the operation name and its retry class.
pub fn aws_error<E>(operation: &'static str, err: SdkError<E, aws_smithy_runtime_api::http::Response>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    // A NotFound that outlived the consistency wait: the next run reads the
    // network again and plans from what is really there.
    let retryable = is_retryable(&err) || is_not_found(&err);
    let message = message(&err);
    let hint = match error_code(&err) {
        Some(_) if is_not_found(&err) => {
            "; EC2 still did not know the id after CONSISTENCY_WAIT_SECONDS; the next run reads the network again"
        }
        Some("UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException") => {
            "; the function role lacks this permission (see infra/template.yaml)"
        }
        Some("ResourceNotFoundException") if operation == "DescribeCluster" => "; check CLUSTER_NAME and the region",
        _ => "",
    };
    Error::Aws { operation, message: format!("{message}{hint}"), retryable }
}
