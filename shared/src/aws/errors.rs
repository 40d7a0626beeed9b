//! Turning SDK errors into [`Error`]s that know whether a retry can help.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use crate::error::Error;

/// Error codes that mean "try again later".
const RETRYABLE_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestThrottled",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "ServerException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// The service error code, if the call reached the service and it answered.
pub fn error_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

/// Throttling, 5xx, timeouts and connection failures are worth retrying;
/// a well-formed refusal from the service is not.
pub fn is_retryable<E: ProvideErrorMetadata>(err: &SdkError<E, aws_smithy_runtime_api::http::Response>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(service) => {
            service.raw().status().is_server_error() || service.err().code().is_some_and(|c| RETRYABLE_CODES.contains(&c))
        }
        _ => false,
    }
}

/// Wraps an SDK error with the operation name and its retry class.
pub fn aws_error<E>(operation: &'static str, err: SdkError<E, aws_smithy_runtime_api::http::Response>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let retryable = is_retryable(&err);
    let message = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            format!(
                "{}: {}",
                e.code().unwrap_or("UnknownError"),
                e.message().unwrap_or("no message")
            )
        }
        other => format!("{}", aws_smithy_types::error::display::DisplayErrorContext(other)),
    };
    let hint = match error_code(&err) {
        Some("UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException") => {
            "; the function role lacks this permission (see infra/template.yaml)"
        }
        Some("ResourceNotFoundException") if operation == "DescribeCluster" => "; check CLUSTER_NAME and the region",
        _ => "",
    };
    Error::Aws { operation, message: format!("{message}{hint}"), retryable }
}
