//! headroom's own retries around AWS calls, on top of the SDK's.
//!
//! - Mutating calls ([`mutate`]) turn the SDK's retries off: the SDK would
//!   resend a request whose connection dropped after AWS acted on it. Every
//!   failure is followed by a read of the end state instead.
//! - EC2 is eventually consistent: right after a create, or after a describe
//!   returned an id, a call naming that id can answer `Invalid…ID.NotFound`
//!   for a few seconds (docs/aws-rules.md, "Eventual consistency"). The SDK
//!   does not retry that; [`mutate`] and [`read`] do, within
//!   `CONSISTENCY_WAIT_SECONDS`.

use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::http::Response as HttpResponse;

use super::errors::{aws_error, error_code, is_not_found, is_retryable};
use crate::error::Result;

/// Attempts at a mutating call before giving up (throttling, 5xx, dropped connections).
const MUTATION_ATTEMPTS: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between two attempts at an id EC2 does not know yet.
const MAX_NOT_FOUND_BACKOFF: Duration = Duration::from_secs(2);

/// Jitter in [max/2, max): concurrent runs that failed together do not
/// retry together.
pub fn jitter(max: Duration) -> Duration {
    let fraction = (headroom_core::rng::next_in_process() >> 11) as f64 / (1u64 << 53) as f64;
    max / 2 + max.mul_f64(fraction / 2.0)
}

/// The per-call override that turns the SDK's retries off for one mutation.
pub fn no_sdk_retries() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::config::Builder::default().retry_config(aws_config::retry::RetryConfig::disabled())
}

/// Backoff for `Invalid…ID.NotFound`: retried while the next attempt would
/// still start within `window` of the first.
struct NotFoundWindow {
    started: Instant,
    window: Duration,
    backoff: Duration,
}

impl NotFoundWindow {
    fn new(window: Duration) -> Self {
        NotFoundWindow { started: Instant::now(), window, backoff: FIRST_BACKOFF }
    }

    /// Sleeps and answers `true` if another attempt fits in the window.
    async fn wait(&mut self, operation: &'static str, code: Option<&str>) -> bool {
        if self.started.elapsed() + self.backoff > self.window {
            return false;
        }
        tracing::info!(
            operation,
            code,
            waited_ms = self.started.elapsed().as_millis() as u64,
            "EC2 does not know the id yet; retrying"
        );
        tokio::time::sleep(jitter(self.backoff)).await;
        self.backoff = (self.backoff * 2).min(MAX_NOT_FOUND_BACKOFF);
        true
    }
}

/// A read that names an id this run created or a describe just returned:
/// `Invalid…ID.NotFound` is retried within `window`; other failures are
/// the SDK's to retry and are returned as they are.
pub async fn read<T, E, Fut>(operation: &'static str, window: Duration, mut call: impl FnMut() -> Fut) -> Result<T>
where
    Fut: Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut not_found = NotFoundWindow::new(window);
    loop {
        match call().await {
            Ok(done) => return Ok(done),
            Err(err) if is_not_found(&err) && not_found.wait(operation, error_code(&err)).await => {}
            Err(err) => return Err(aws_error(operation, err)),
        }
    }
}

/// A mutating call with headroom's own retries instead of the SDK's.
///
/// Every failure is followed by a read of the end state (`reconcile`): if
/// the change is there, by whoever made it, the step is done (`true`: it
/// was already present). Otherwise a retryable failure is retried with
/// exponential backoff and jitter, up to [`MUTATION_ATTEMPTS`] times, and an
/// `Invalid…ID.NotFound` about an id EC2 has not caught up with is retried
/// within `consistency_window`.
pub async fn mutate<T, E, Fut, Rec>(
    operation: &'static str,
    consistency_window: Duration,
    mut act: impl FnMut() -> Fut,
    reconcile: impl Fn() -> Rec,
) -> Result<(T, bool)>
where
    Fut: Future<Output = std::result::Result<T, SdkError<E, HttpResponse>>>,
    Rec: Future<Output = Result<Option<T>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    let mut not_found = NotFoundWindow::new(consistency_window);
    loop {
        let err = match act().await {
            Ok(done) => return Ok((done, false)),
            Err(err) => err,
        };
        if let Some(done) = reconcile().await? {
            return Ok((done, true));
        }
        if is_not_found(&err) {
            if not_found.wait(operation, error_code(&err)).await {
                continue;
            }
            return Err(aws_error(operation, err));
        }
        if !is_retryable(&err) || attempt == MUTATION_ATTEMPTS {
            return Err(aws_error(operation, err));
        }
        tracing::info!(operation, attempt, code = ?error_code(&err), "retrying after a transient failure");
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        attempt += 1;
    }
}
