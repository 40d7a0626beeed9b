//! AWS clients, built once per process.
//!
//! Loading the SDK config resolves no credentials and opens no connection:
//! the first network I/O happens inside the first invocation. Endpoints come
//! from the standard `AWS_ENDPOINT_URL` (tests and the demo point it at moto).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Retries for throttling, 5xx and dropped connections, with exponential
/// backoff and jitter (the SDK's standard mode). Eight attempts make a call
/// that is throttled 30% of the time fail about once in 15,000.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(8)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(5))
}

/// Bounds on one attempt and one call, so a hung connection costs a retry,
/// not the function's whole timeout.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(20))
        .operation_timeout(Duration::from_secs(90))
        .build()
}

#[derive(Clone, Debug)]
pub struct AwsClients {
    pub ec2: aws_sdk_ec2::Client,
    pub eks: aws_sdk_eks::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub sdk_config: SdkConfig,
}

impl AwsClients {
    /// From the environment and the default credential chain.
    pub async fn from_env() -> Self {
        let sdk_config = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry_config())
            .timeout_config(timeout_config())
            .load()
            .await;
        Self::new(sdk_config)
    }

    pub fn new(sdk_config: SdkConfig) -> Self {
        AwsClients {
            ec2: aws_sdk_ec2::Client::new(&sdk_config),
            eks: aws_sdk_eks::Client::new(&sdk_config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&sdk_config),
            sdk_config,
        }
    }

    pub fn region(&self) -> String {
        self.sdk_config.region().map(ToString::to_string).unwrap_or_default()
    }
}
