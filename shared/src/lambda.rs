//! What the three Lambda handlers share: which events each accepts, logging
//! set-up, and turning a report into a Lambda answer.
//!
//! A retryable failure fails the invocation so Lambda retries it. Bad input,
//! refusals and non-retryable failures answer normally, with a report that
//! says why: retrying them cannot help.

use serde_json::{Value, json};

use crate::run::remediate::{self, Context, RunOptions};
use crate::trigger::{self, TriggerKind};

/// The deployed functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    OnAlarm,
    OnPrefixFailure,
    CapacityCheck,
}

impl Function {
    pub fn name(self) -> &'static str {
        match self {
            Function::OnAlarm => "on-alarm",
            Function::OnPrefixFailure => "on-prefix-failure",
            Function::CapacityCheck => "capacity-check",
        }
    }

    /// Every function takes the manual event; otherwise each takes its own trigger.
    fn accepts(self, kind: &TriggerKind) -> bool {
        matches!(
            (self, kind),
            (_, TriggerKind::Manual)
                | (Function::OnAlarm, TriggerKind::Alarm { .. })
                | (Function::OnPrefixFailure, TriggerKind::AllocationFailure(_))
                | (Function::CapacityCheck, TriggerKind::Schedule)
        )
    }

    fn options(self) -> RunOptions {
        RunOptions { publish_metrics: self == Function::CapacityCheck, ..RunOptions::default() }
    }

    fn expected(self) -> &'static str {
        match self {
            Function::OnAlarm => "a CloudWatch alarm (direct, EventBridge or SNS) or the manual event",
            Function::OnPrefixFailure => "a CloudTrail EC2 allocation failure from EventBridge or the manual event",
            Function::CapacityCheck => "a scheduled event or the manual event",
        }
    }
}

/// A failure that fails the invocation so Lambda retries it. lambda_runtime
/// reports its type name as `errorType`, which is what error metrics and the
/// dead-letter queue show.
#[derive(Debug)]
pub struct RetryableFailure(pub String);

impl std::fmt::Display for RetryableFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RetryableFailure {}

pub type HandlerError = RetryableFailure;

/// The answer to an event headroom does not take. It is counted
/// (`Remediations`, decision `rejected`), never notified.
async fn rejected(ctx: &Context, function: Function, error: &crate::Error, cluster: Option<&str>) -> Value {
    tracing::warn!(error = %error, "rejected event");
    crate::run::announce::rejected(ctx, cluster).await;
    json!({
        "function": function.name(),
        "outcome": crate::run::report::Outcome::Rejected.word(),
        "reason": error.to_string(),
        "error": { "kind": error.kind(), "message": error.to_string(), "retryable": false },
    })
}

/// Parses the payload, runs it and answers. Never panics on any input.
pub async fn invoke(ctx: &Context, function: Function, payload: Value) -> Result<Value, HandlerError> {
    let trigger = match trigger::parse(&payload) {
        Ok(t) if function.accepts(&t.kind) => t,
        Ok(t) => {
            let error = crate::Error::InvalidEvent(format!(
                "{} does not handle {} events; it takes {}",
                function.name(),
                t.kind_name(),
                function.expected()
            ));
            return Ok(rejected(ctx, function, &error, t.cluster.as_deref()).await);
        }
        Err(error) => return Ok(rejected(ctx, function, &error, None).await),
    };
    tracing::info!(
        trigger = trigger.kind_name(),
        summary = %trigger.summary,
        event_id = trigger.event_id.as_deref().unwrap_or(""),
        "invoked"
    );
    // `handle` reports every failure no retry can fix; an `Err` is retryable.
    let report =
        remediate::handle(ctx, trigger, function.options()).await.map_err(|e| RetryableFailure(e.to_string()))?;
    let answer = serde_json::to_value(&report).map_err(|e| RetryableFailure(format!("encoding the report: {e}")))?;
    tracing::info!(report = %answer, "report");
    if let Some(failure) = report.retryable_failure() {
        return Err(RetryableFailure(format!("{} (retryable): {}", failure.kind, failure.message)));
    }
    Ok(answer)
}

/// The whole life of a function process: logging, config and clients once,
/// then one [`invoke`] per event. A retryable failure reaches Lambda as
/// `errorType: Headroom.RetryableFailure`, so metrics and the dead-letter
/// queue say what it was.
pub async fn serve(function: Function) -> Result<(), lambda_runtime::Error> {
    init_logging();
    // No network I/O here: the first call happens inside the first event.
    let ctx = match Context::from_env().await {
        Ok(ctx) => ctx,
        Err(error) => {
            tracing::error!(error = %error, function = function.name(), "cannot start: fix the setting and redeploy");
            return Err(error.into());
        }
    };
    let ctx = &ctx;
    lambda_runtime::run(lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<Value>| async move {
        invoke(ctx, function, event.payload).await.map_err(|failure| lambda_runtime::Diagnostic {
            error_type: "Headroom.RetryableFailure".into(),
            error_message: failure.to_string(),
        })
    }))
    .await
}

/// The log filter: Lambda's advanced logging level (`ApplicationLogLevel`,
/// seen as `AWS_LAMBDA_LOG_LEVEL`) wins, because that is where operators set
/// it; else `RUST_LOG`; else `info`.
pub fn log_filter(lambda_level: Option<&str>, rust_log: Option<&str>) -> String {
    let level = lambda_level.unwrap_or_default().trim().to_ascii_lowercase();
    match level.as_str() {
        "trace" | "debug" | "info" | "warn" | "error" => level,
        "fatal" => "error".into(),
        _ => rust_log.map(str::trim).filter(|f| !f.is_empty()).unwrap_or("info").to_string(),
    }
}

/// JSON logs with the span fields (cluster, vpc, step) on every line, at
/// [`log_filter`]'s level. The SDK's request signing is kept quiet because
/// its TRACE output carries session tokens.
pub fn init_logging() {
    let lambda_level = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok();
    let rust_log = std::env::var("RUST_LOG").ok();
    let wanted = log_filter(lambda_level.as_deref(), rust_log.as_deref());
    let _ = tracing::subscriber::set_global_default(log_subscriber(&wanted, std::io::stdout));
}

/// One JSON object per line with `timestamp`, `level`, `fields` and the
/// current span, filtered by `wanted`: a level, or `target=level` directives
/// (span and field filters are not taken: a full `EnvFilter` would bring a
/// regex engine into every function, some 10 % of its size). The timestamp
/// (RFC 3339, UTC) is what makes Lambda's own filter honour the level:
/// without it every line counts as INFO, and `ApplicationLogLevel: WARN`
/// would drop the errors too.
fn log_subscriber<W>(wanted: &str, writer: W) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    let filter = wanted.parse::<Targets>().unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    let filter = filter
        .with_target("aws_sigv4", LevelFilter::WARN)
        .with_target("aws_smithy_runtime", LevelFilter::WARN)
        .with_target("aws_config", LevelFilter::WARN)
        .with_target("hyper_util", LevelFilter::WARN);
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_writer(writer)
        .with_max_level(LevelFilter::TRACE)
        .finish()
        .with(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_function_takes_its_own_trigger_and_the_manual_event() {
        let alarm = TriggerKind::Alarm {
            delivery: trigger::AlarmDelivery::Direct,
            alarm_name: "a".into(),
            state: "ALARM".into(),
            metric: None,
        };
        assert!(Function::OnAlarm.accepts(&alarm));
        assert!(!Function::CapacityCheck.accepts(&alarm));
        assert!(Function::CapacityCheck.accepts(&TriggerKind::Schedule));
        assert!(!Function::OnPrefixFailure.accepts(&TriggerKind::Schedule));
        for f in [Function::OnAlarm, Function::OnPrefixFailure, Function::CapacityCheck] {
            assert!(f.accepts(&TriggerKind::Manual));
        }
        assert!(Function::CapacityCheck.options().publish_metrics);
        assert!(!Function::OnAlarm.options().publish_metrics);
    }

    /// What the subscriber writes, line by line.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_log_line_has_a_level_and_an_rfc3339_timestamp() {
        // Lambda reads `level` only beside a valid RFC 3339 `timestamp`.
        let captured = Captured::default();
        let writer = captured.clone();
        tracing::subscriber::with_default(log_subscriber("warn", move || writer.clone()), || {
            tracing::error!(code = 7, "broken");
            tracing::warn!("careful");
            tracing::info!("filtered out at warn");
        });
        let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = output.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        assert_eq!(lines.len(), 2, "{output}");
        for (line, level) in lines.iter().zip(["ERROR", "WARN"]) {
            assert_eq!(line["level"], level, "{line}");
            let timestamp = line["timestamp"].as_str().unwrap_or_else(|| panic!("no timestamp: {line}"));
            chrono::DateTime::parse_from_rfc3339(timestamp).unwrap_or_else(|e| panic!("{timestamp}: {e}"));
        }
    }

    #[test]
    fn target_directives_choose_per_crate_and_request_signing_stays_quiet() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = log_subscriber("warn,headroom=debug,aws_sigv4=trace", move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "headroom::run", "ours, at debug");
            tracing::debug!(target: "kube_client", "another crate's debug");
            tracing::debug!(target: "aws_sigv4::sign", "a canonical request with a session token");
            tracing::warn!(target: "kube_client", "another crate's warning");
        });
        let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let messages: Vec<String> = output
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line")["fields"]["message"].to_string())
            .collect();
        assert_eq!(messages, [r#""ours, at debug""#, r#""another crate's warning""#], "{output}");

        // Not a directive list: INFO, as before.
        let captured = Captured::default();
        let writer = captured.clone();
        tracing::subscriber::with_default(log_subscriber("[span{x=1}]=debug", move || writer.clone()), || {
            tracing::debug!("hidden");
            tracing::info!("shown");
        });
        assert_eq!(String::from_utf8(captured.0.lock().unwrap().clone()).unwrap().lines().count(), 1);
    }

    #[test]
    fn lambdas_log_level_wins_over_rust_log() {
        assert_eq!(log_filter(Some("DEBUG"), Some("warn")), "debug");
        assert_eq!(log_filter(Some("FATAL"), None), "error");
        assert_eq!(log_filter(None, Some("headroom=trace")), "headroom=trace");
        assert_eq!(log_filter(Some(""), Some("warn")), "warn");
        assert_eq!(log_filter(None, None), "info");
    }
}
