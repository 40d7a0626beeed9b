//! What Lambda's own log filter makes of a function's output. For a custom
//! runtime with `LogFormat: JSON`, Lambda reads each line's `level` only
//! when the line also carries a valid RFC 3339 `timestamp`; any other line
//! counts as INFO, so `ApplicationLogLevel: WARN` would drop every line,
//! errors included. This runs a real function binary against the local
//! Runtime API and applies that rule to every line it wrote.

use std::time::Duration;

use headroom_testbed::harness::Harness;
use headroom_testbed::lab::Exhaustion;
use headroom_testbed::runtime_api::{FUNCTIONS, FunctionCommand, Invocation, RuntimeApi, function_binary};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(30);
const INVOKE: Duration = Duration::from_secs(60);

fn sample(name: &str) -> Value {
    let path = headroom_testbed::moto::workspace_root().join("samplecli-events").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("a sample event")).expect("JSON")
}

/// Lambda's application log levels, least severe first.
const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

/// The level Lambda gives one line of output: its own `level` when the line
/// is a JSON object with a known `level` and an RFC 3339 `timestamp`,
/// otherwise INFO (AWS Lambda Developer Guide, "Log-level filtering").
fn lambda_level(line: &str) -> &'static str {
    let Ok(record) = serde_json::from_str::<Value>(line) else { return "INFO" };
    let stamped = record["timestamp"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok());
    let level = record["level"].as_str().unwrap_or_default().to_ascii_uppercase();
    match LEVELS.iter().find(|l| **l == level) {
        Some(level) if stamped => level,
        _ => "INFO",
    }
}

/// Whether Lambda sends a line to CloudWatch Logs at `application_level`.
fn kept(line: &str, application_level: &str) -> bool {
    let rank = |level: &str| LEVELS.iter().position(|l| *l == level).unwrap_or(2);
    rank(lambda_level(line)) >= rank(application_level)
}

#[test]
fn a_line_without_a_timestamp_counts_as_info() {
    let stamped = r#"{"timestamp":"2026-12-07T07:22:22.123456Z","level":"WARN","fields":{"message":"m"}}"#;
    assert_eq!(lambda_level(stamped), "WARN");
    assert!(kept(stamped, "WARN"));
    let unstamped = r#"{"level":"ERROR","fields":{"message":"m"}}"#;
    assert_eq!(lambda_level(unstamped), "INFO");
    assert!(!kept(unstamped, "WARN"));
    assert_eq!(lambda_level(r#"{"timestamp":"yesterday","level":"ERROR"}"#), "INFO");
    assert_eq!(lambda_level("Error: plain text"), "INFO");
}

#[tokio::test]
async fn every_line_has_a_level_and_an_rfc3339_timestamp_so_warn_keeps_the_warnings() {
    for function in FUNCTIONS {
        function_binary(function).unwrap_or_else(|e| panic!("{e}"));
    }
    let harness = Harness::start(Exhaustion::Fragmented).await.expect("starting moto and the fake API server");

    // Operators set ApplicationLogLevel WARN; RUST_LOG=info (the harness's)
    // must not win over it.
    let api = RuntimeApi::start_for("on-alarm").await.expect("starting the Runtime API");
    let mut warned = FunctionCommand::function("on-alarm", &api)
        .expect("the binary")
        .harness(&harness)
        .env("AWS_LAMBDA_LOG_LEVEL", "WARN")
        .spawn()
        .expect("spawning");
    warned.wait_ready(&api, READY).await.unwrap_or_else(|e| panic!("{e}"));
    // A scheduled event is not on-alarm's: rejected, with a WARN line.
    let answer = api.invoke(sample("scheduled.json"), INVOKE).await;
    assert!(matches!(answer, Invocation::Response(ref v) if v["outcome"] == "rejected"), "{answer:?}");

    // And at the default level, a full remediation's INFO lines.
    let api_info = RuntimeApi::start_for("capacity-check").await.expect("starting the Runtime API");
    let mut info = FunctionCommand::function("capacity-check", &api_info)
        .expect("the binary")
        .harness(&harness)
        .spawn()
        .expect("spawning");
    info.wait_ready(&api_info, READY).await.unwrap_or_else(|e| panic!("{e}"));
    let answer = api_info.invoke(json!({"dryRun": true}), INVOKE).await;
    assert!(matches!(answer, Invocation::Response(ref v) if v["outcome"] == "planned"), "{answer:?}");

    for (process, filter) in [(&warned, "WARN"), (&info, "INFO")] {
        let output = process.stdout() + &process.stderr();
        let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "no output at {filter}");
        for line in &lines {
            let record: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            let level = record["level"].as_str().unwrap_or_else(|| panic!("no level: {line}"));
            assert!(LEVELS.contains(&level), "level {level:?} is not one Lambda knows: {line}");
            let timestamp = record["timestamp"].as_str().unwrap_or_else(|| panic!("no timestamp: {line}"));
            chrono::DateTime::parse_from_rfc3339(timestamp)
                .unwrap_or_else(|e| panic!("timestamp {timestamp:?} is not RFC 3339 ({e}): {line}"));
            // What the function wrote, Lambda keeps: the level filter is the function's own.
            assert!(kept(line, filter), "Lambda at {filter} would drop a line the function chose to write: {line}");
        }
        if filter == "WARN" {
            assert!(
                lines.iter().any(|l| lambda_level(l) == "WARN" && l.contains("rejected event")),
                "the rejection's warning would not survive Lambda's WARN filter:\n{output}"
            );
        } else {
            assert!(lines.iter().any(|l| lambda_level(l) == "INFO" && l.contains("report")), "{output}");
        }
    }
}
