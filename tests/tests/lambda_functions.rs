//! The three function binaries, run the way Lambda runs them: each process
//! talks to a local Lambda Runtime API (`headroom_testbed::runtime_api`), to
//! moto behind the fault proxy as AWS, and to the fake Kubernetes API. Every
//! sample event in `samplecli-events/` goes to the function that takes it
//! and must give the decision `samplecli-events/README.md` documents.
//!
//! The binaries are built by the first test that needs them
//! (`runtime_api::ensure_functions_built`: `cargo test` does not build other
//! packages' binaries); set `HEADROOM_FUNCTION_BIN_DIR` to use prebuilt ones.
//! Needs moto: run `scripts/setup-moto.sh` once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use headroom_testbed::fake_kube::NODECLASSES;
use headroom_testbed::harness::Harness;
use headroom_testbed::lab::Exhaustion;
use headroom_testbed::runtime_api::{
    FUNCTIONS, FunctionCommand, FunctionProcess, Invocation, RuntimeApi, function_binary,
};
use serde_json::Value;

/// Debug binaries reach `GET /next` in well under a second; this is slack
/// for a loaded 2-core machine.
const READY: Duration = Duration::from_secs(30);
/// One invocation, expansion included (the NodeClass wait is 5 s at most).
const INVOKE: Duration = Duration::from_secs(60);

fn events_dir() -> PathBuf {
    headroom_testbed::moto::workspace_root().join("samplecli-events")
}

fn event(name: &str) -> Value {
    let path = events_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The `.json` files of a directory under `samplecli-events/`, sorted.
fn event_files(subdir: &str) -> Vec<String> {
    let dir = events_dir().join(subdir);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .map(|name| format!("{subdir}/{name}"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no events in {}", dir.display());
    names
}

/// Builds (once) and locates every function binary before a harness is
/// started, so no moto idles through a first build.
fn binaries_ready() {
    for function in FUNCTIONS {
        function_binary(function).unwrap_or_else(|e| panic!("{e}"));
    }
}

async fn harness() -> Harness {
    Harness::start(Exhaustion::Fragmented)
        .await
        .expect("starting moto, the proxy and the fake API server (run scripts/setup-moto.sh)")
}

/// One function process with its own Runtime API.
struct Function {
    name: &'static str,
    api: RuntimeApi,
    process: FunctionProcess,
    init: Duration,
}

impl Function {
    async fn start(name: &'static str, harness: &Harness) -> Function {
        let api = RuntimeApi::start_for(name).await.expect("starting the Runtime API");
        let mut process = FunctionProcess::start(name, &api, harness).unwrap_or_else(|e| panic!("{e}"));
        let ready = process.wait_ready(&api, READY).await.unwrap_or_else(|e| panic!("{e}"));
        let init = ready.duration_since(process.spawned_at());
        Function { name, api, process, init }
    }

    async fn invoke(&self, payload: Value) -> Invocation {
        self.api.invoke(payload, INVOKE).await
    }

    /// Invokes with a sample event and returns the JSON answer; fails the
    /// test with the process output on an error or a timeout.
    async fn answer(&self, event_file: &str) -> Value {
        match self.invoke(event(event_file)).await {
            Invocation::Response(value) => value,
            other => {
                panic!("{} with {event_file}: expected an answer, got {other:?}\n{}", self.name, self.process.output())
            }
        }
    }
}

fn outcome(answer: &Value) -> &str {
    answer["outcome"].as_str().unwrap_or_else(|| panic!("no outcome in {answer:#}"))
}

fn cluster(answer: &Value) -> &Value {
    let clusters = answer["clusters"].as_array().unwrap_or_else(|| panic!("no clusters in {answer:#}"));
    assert_eq!(clusters.len(), 1, "one cluster expected: {answer:#}");
    &clusters[0]
}

/// AWS calls that read or change something; not the `PutMetricData` (and
/// SNS `Publish`) with which every invocation reports its decision.
fn total_calls(harness: &Harness) -> usize {
    harness.aws.proxy().working_calls().len()
}

/// How many decisions were reported to CloudWatch.
fn reported(harness: &Harness) -> usize {
    harness.aws.proxy().call_count("PutMetricData")
}

/// AWS calls that change infrastructure (the testbed's `mutating_calls`:
/// not reads, dry runs, metrics or notifications).
fn aws_changes(harness: &Harness) -> Vec<headroom_testbed::CallRecord> {
    harness.aws.proxy().mutating_calls()
}

fn kube_writes(harness: &Harness) -> usize {
    harness.kube.requests().iter().filter(|r| r.is_write()).count()
}

/// What the AWS and Kubernetes stand-ins have seen, to check what one
/// invocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Traffic {
    aws_calls: usize,
    reported: usize,
    aws_mutating: usize,
    kube_requests: usize,
    kube_writes: usize,
}

impl Traffic {
    fn now(harness: &Harness) -> Traffic {
        Traffic {
            aws_calls: total_calls(harness),
            reported: reported(harness),
            aws_mutating: aws_changes(harness).len(),
            kube_requests: harness.kube.requests().len(),
            kube_writes: kube_writes(harness),
        }
    }
}

/// An expansion really happened: the answer says so, the changes reached
/// moto through the proxy, and the fake API server has headroom's NodeClass.
fn assert_applied(answer: &Value, harness: &Harness, what: &str) {
    assert_eq!(outcome(answer), "applied", "{what}: {answer:#}");
    let cluster = cluster(answer);
    assert_eq!(cluster["outcome"], "applied", "{what}: {answer:#}");
    assert!(cluster["changes"].as_array().is_some_and(|c| !c.is_empty()), "{what}: no changes in {answer:#}");
    assert_eq!(cluster["verification"]["ok"], true, "{what}: {answer:#}");
    assert!(cluster["error"].is_null(), "{what}: {answer:#}");
    let proxy = harness.aws.proxy();
    assert!(
        proxy.forwarded_count("AssociateVpcCidrBlock") >= 1,
        "{what}: no CIDR associated; calls {:?}",
        proxy.calls()
    );
    assert!(proxy.forwarded_count("CreateSubnet") >= 1, "{what}: no subnet created; calls {:?}", proxy.calls());
    let nodeclass =
        harness.kube.get_object(NODECLASSES, "headroom").unwrap_or_else(|| panic!("{what}: no `headroom` NodeClass"));
    assert!(
        nodeclass["spec"]["subnetSelectorTerms"].as_array().is_some_and(|t| !t.is_empty()),
        "{what}: {nodeclass:#}"
    );
}

/// Decided from the event alone: no AWS read or change, no Kubernetes
/// request; only the decision reported (one PutMetricData).
fn assert_no_io(mut before: Traffic, harness: &Harness, what: &str) {
    let after = Traffic::now(harness);
    assert_eq!(after.reported, before.reported + 1, "{what}: the decision was not counted");
    before.reported = after.reported;
    assert_eq!(
        before,
        after,
        "{what}: made calls; AWS {:?}, kube {:?}",
        harness.aws.proxy().calls(),
        harness.kube.requests()
    );
}

/// Read, maybe, but changed nothing.
fn assert_no_change(before: Traffic, harness: &Harness, what: &str) {
    let after = Traffic::now(harness);
    assert_eq!(after.aws_mutating, before.aws_mutating, "{what}: mutating AWS calls {:?}", aws_changes(harness));
    assert_eq!(after.kube_writes, before.kube_writes, "{what}: Kubernetes writes {:?}", harness.kube.requests());
}

/// Every stdout line is a JSON log record with a level and an RFC 3339
/// timestamp; nothing on stderr; neither the
/// secret access key nor the Kubernetes bearer token appears anywhere; the
/// process spoke the Runtime API correctly.
fn assert_clean_logs(function: &Function, harness: &Harness) {
    let stdout = function.process.stdout();
    let stderr = function.process.stderr();
    let secret = function.process.env("AWS_SECRET_ACCESS_KEY").expect("the harness sets a secret key");
    let token = harness.kube.token();
    assert!(secret.len() >= 16 && token.len() >= 16, "secrets too short to search for");
    let mut lines = 0;
    for line in stdout.lines() {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}: log line is not JSON ({e}): {line}", function.name));
        assert!(record["level"].is_string(), "{}: no level in {line}", function.name);
        assert!(record["fields"].is_object(), "{}: no fields in {line}", function.name);
        // Without an RFC 3339 timestamp Lambda ignores the level (tests/lambda_logs.rs).
        let timestamp = record["timestamp"].as_str().unwrap_or_default();
        assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(), "{}: no timestamp in {line}", function.name);
        lines += 1;
    }
    assert!(lines > 0, "{}: no logs at all", function.name);
    assert!(stderr.trim().is_empty(), "{}: stderr: {stderr}", function.name);
    for (what, value) in [("AWS_SECRET_ACCESS_KEY", secret), ("the Kubernetes bearer token", token)] {
        assert!(!stdout.contains(value) && !stderr.contains(value), "{}: the logs contain {what}", function.name);
    }
    assert!(
        function.api.violations().is_empty(),
        "{}: Runtime API violations {:?}",
        function.name,
        function.api.violations()
    );
    assert!(function.api.init_errors().is_empty(), "{}: init errors {:?}", function.name, function.api.init_errors());
}

#[tokio::test]
async fn init_makes_no_call_before_the_first_event_and_bad_config_fails_init() {
    binaries_ready();
    let harness = harness().await;
    let mut functions = Vec::new();
    for name in FUNCTIONS {
        functions.push(Function::start(name, &harness).await);
    }
    // Give any background work started at init (credential or endpoint
    // resolution, a token refresh) the time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(harness.aws.proxy().calls().is_empty(), "AWS calls during init: {:?}", harness.aws.proxy().call_log());
    assert!(harness.kube.requests().is_empty(), "Kubernetes requests during init: {:?}", harness.kube.requests());
    for function in &functions {
        assert_eq!(function.api.polls(), 1, "{}", function.name);
        eprintln!("{}: spawn to first GET /next: {:?}", function.name, function.init);
    }

    // The same processes do reach AWS once an event arrives: the counter
    // above was watching the right traffic.
    for function in &functions {
        let answer = function.answer("manual-dry-run.json").await;
        assert_eq!(outcome(&answer), "planned", "{}: {answer:#}", function.name);
    }
    assert!(harness.aws.proxy().call_count("DescribeCluster") >= FUNCTIONS.len(), "{:?}", harness.aws.proxy().calls());
    for function in &functions {
        assert_clean_logs(function, &harness);
    }

    // A setting that does not validate, or one that could never converge (a
    // /28 subnet never holds 16 free prefixes), stops the process before its
    // first poll, with the setting named in its log, and without touching AWS.
    harness.aws.proxy().reset_counters();
    for (setting, value) in [("NODECLASS_NAME", "default"), ("SUBNET_PREFIX", "28")] {
        let api = RuntimeApi::start_for("capacity-check").await.expect("starting the Runtime API");
        let mut bad = FunctionCommand::function("capacity-check", &api)
            .expect("the binary")
            .harness(&harness)
            .env(setting, value)
            .spawn()
            .expect("spawning");
        let status = bad
            .wait_exit(READY)
            .await
            .unwrap_or_else(|| panic!("still running with {setting}={value}\n{}", bad.output()));
        assert!(!status.success(), "exited successfully with {setting}={value}");
        assert_eq!(api.polls(), 0, "polled for an event despite {setting}={value}");
        assert!(bad.output().contains(setting), "the error does not name {setting}:\n{}", bad.output());
    }
    assert!(harness.aws.proxy().calls().is_empty(), "{:?}", harness.aws.proxy().calls());
}

#[tokio::test]
async fn direct_alarm_expands_then_ok_insufficient_data_and_a_repeat_are_no_ops() {
    binaries_ready();
    let harness = harness().await;
    let f = Function::start("on-alarm", &harness).await;

    let answer = f.answer("alarm-direct-alarm.json").await;
    assert_applied(&answer, &harness, "alarm-direct-alarm");
    assert_eq!(answer["trigger"]["kind"]["delivery"], "direct", "{answer:#}");

    for file in ["alarm-direct-ok.json", "alarm-direct-insufficient-data.json"] {
        let before = Traffic::now(&harness);
        let answer = f.answer(file).await;
        assert_eq!(outcome(&answer), "no-op", "{file}: {answer:#}");
        assert_no_io(before, &harness, file);
    }

    // The alarm fires again before its metric catches up: capacity is read
    // and found sufficient.
    let before = Traffic::now(&harness);
    let answer = f.answer("alarm-direct-alarm.json").await;
    assert_eq!(outcome(&answer), "no-op", "{answer:#}");
    assert!(cluster(&answer)["changes"].as_array().is_some_and(Vec::is_empty), "{answer:#}");
    assert_no_change(before, &harness, "repeated alarm");
    assert_clean_logs(&f, &harness);
}

async fn expands_on(function: &'static str, event_file: &str) {
    binaries_ready();
    let harness = harness().await;
    let f = Function::start(function, &harness).await;
    let answer = f.answer(event_file).await;
    assert_applied(&answer, &harness, event_file);
    assert_clean_logs(&f, &harness);
}

#[tokio::test]
async fn eventbridge_alarm_expands() {
    expands_on("on-alarm", "alarm-eventbridge.json").await;
}

#[tokio::test]
async fn sns_alarm_expands() {
    expands_on("on-alarm", "alarm-sns.json").await;
}

/// `cloudtrail-insufficient-free-addresses.json` names its subnet
/// (`requestParameters.subnetId`), a made-up id. As delivered for the lab the
/// subnet is one of the cluster's, and the function expands; the file as it
/// is names a subnet that holds nothing of the cluster, and the function
/// leaves the cluster alone.
#[tokio::test]
async fn insufficient_free_addresses_expands_only_for_the_clusters_subnet() {
    binaries_ready();
    let harness = harness().await;
    let f = Function::start("on-prefix-failure", &harness).await;
    let file = "cloudtrail-insufficient-free-addresses.json";

    let before = Traffic::now(&harness);
    let foreign = f.answer(file).await;
    assert_eq!(outcome(&foreign), "no-op", "{foreign:#}");
    assert!(foreign["reason"].as_str().is_some_and(|r| r.contains("subnet-0b1c2d3e4f5a60718")), "{foreign:#}");
    assert_no_change(before, &harness, "a foreign subnet");

    let mut ours = event(file);
    let subnet = &mut ours["detail"]["requestParameters"]["subnetId"];
    assert_eq!(*subnet, "subnet-0b1c2d3e4f5a60718", "the sample changed");
    *subnet = Value::from(harness.lab.private_subnets[1].clone());
    let answer = match f.invoke(ours).await {
        Invocation::Response(value) => value,
        other => panic!("{other:?}\n{}", f.process.output()),
    };
    assert_applied(&answer, &harness, "the cluster's subnet");
    assert_clean_logs(&f, &harness);
}

#[tokio::test]
async fn invalid_parameter_capacity_failure_expands() {
    expands_on("on-prefix-failure", "cloudtrail-invalid-parameter-capacity.json").await;
}

#[tokio::test]
async fn ipv6_failure_expands_when_ipv4_is_low() {
    expands_on("on-prefix-failure", "cloudtrail-ipv6-insufficient.json").await;
}

#[tokio::test]
async fn allocation_failure_expands_once_redelivery_is_a_no_op_and_nau_is_refused() {
    binaries_ready();
    let harness = harness().await;
    let f = Function::start("on-prefix-failure", &harness).await;

    let answer = f.answer("cloudtrail-insufficient-cidr-blocks.json").await;
    assert_applied(&answer, &harness, "first delivery");

    // EventBridge delivers at least once: the same event again.
    let before = Traffic::now(&harness);
    let again = f.answer("cloudtrail-insufficient-cidr-blocks.json").await;
    assert_eq!(outcome(&again), "no-op", "{again:#}");
    assert_eq!(again["trigger"]["eventId"], answer["trigger"]["eventId"]);
    assert_no_change(before, &harness, "second delivery");

    let before = Traffic::now(&harness);
    let refused = f.answer("cloudtrail-nau-limit-exceeded.json").await;
    assert_eq!(outcome(&refused), "refused", "{refused:#}");
    let reason = refused["reason"].as_str().unwrap_or_default().to_ascii_lowercase();
    assert!(reason.contains("nau") || reason.contains("network address usage"), "{refused:#}");
    assert_no_io(before, &harness, "NAU failure");
    assert_clean_logs(&f, &harness);
}

#[tokio::test]
async fn manual_dry_run_plans_without_changes_then_manual_apply_applies() {
    binaries_ready();
    let harness = harness().await;
    let f = Function::start("capacity-check", &harness).await;

    let before = Traffic::now(&harness);
    let planned = f.answer("manual-dry-run.json").await;
    assert_eq!(outcome(&planned), "planned", "{planned:#}");
    assert_eq!(planned["dryRun"], true);
    let cluster_report = cluster(&planned);
    assert!(cluster_report["plan"]["steps"].as_array().is_some_and(|s| !s.is_empty()), "no plan: {planned:#}");
    assert!(cluster_report["changes"].as_array().is_some_and(Vec::is_empty), "{planned:#}");
    assert_no_change(before, &harness, "dry run");
    assert!(harness.kube.get_object(NODECLASSES, "headroom").is_none());

    let applied = f.answer("manual-apply.json").await;
    assert_applied(&applied, &harness, "manual apply");
    assert_eq!(applied["dryRun"], false);
    assert_clean_logs(&f, &harness);
}

#[tokio::test]
async fn scheduled_check_publishes_metrics_and_expands() {
    binaries_ready();
    let harness = harness().await;
    let f = Function::start("capacity-check", &harness).await;
    let answer = f.answer("scheduled.json").await;
    assert_applied(&answer, &harness, "scheduled");
    let published = cluster(&answer)["metricsPublished"].as_u64().unwrap_or(0);
    assert!(published > 0, "no metrics published: {answer:#}");
    assert!(harness.aws.proxy().forwarded_count("PutMetricData") >= 1, "{:?}", harness.aws.proxy().calls());
    assert_clean_logs(&f, &harness);
}

/// Events each function must not act on: (function, event).
const WRONG_FUNCTION: &[(&str, &str)] = &[
    ("on-alarm", "scheduled.json"),
    ("on-alarm", "cloudtrail-insufficient-cidr-blocks.json"),
    ("on-prefix-failure", "alarm-direct-alarm.json"),
    ("on-prefix-failure", "scheduled.json"),
    ("capacity-check", "alarm-sns.json"),
    ("capacity-check", "cloudtrail-nau-limit-exceeded.json"),
];

fn assert_rejected(answer: &Value, what: &str) {
    assert_eq!(outcome(answer), "rejected", "{what}: {answer:#}");
    assert_eq!(answer["error"]["retryable"], false, "{what}: {answer:#}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.len() > 10, "{what}: no useful message: {answer:#}");
    assert_eq!(answer["error"]["kind"], "InvalidEvent", "{what}: {answer:#}");
}

#[tokio::test]
async fn malformed_and_misrouted_events_are_rejected_without_any_call() {
    binaries_ready();
    let harness = harness().await;
    let mut functions = BTreeMap::new();
    for name in FUNCTIONS {
        functions.insert(name, Function::start(name, &harness).await);
    }

    let malformed = event_files("malformed");
    for file in &malformed {
        for (name, f) in &functions {
            let answer = f.answer(file).await;
            assert_rejected(&answer, &format!("{name} with {file}"));
            assert_eq!(answer["function"], *name);
        }
    }
    for (name, file) in WRONG_FUNCTION {
        let answer = functions[name].answer(file).await;
        assert_rejected(&answer, &format!("{name} with {file}"));
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(name) && message.contains("does not handle"), "{name} with {file}: {answer:#}");
    }
    // Rejected: nothing read, nothing changed; each one counted (`Remediations`, decision rejected).
    assert!(harness.aws.proxy().working_calls().is_empty(), "AWS calls: {:?}", harness.aws.proxy().call_log());
    assert_eq!(reported(&harness), malformed.len() * functions.len() + WRONG_FUNCTION.len());
    assert!(harness.kube.requests().is_empty(), "Kubernetes requests: {:?}", harness.kube.requests());

    // Valid CloudTrail events the rule filters out: if one is invoked by
    // hand anyway, nothing may be expanded on it.
    for file in event_files("negative") {
        let before = Traffic::now(&harness);
        let answer = functions["on-prefix-failure"].answer(&file).await;
        assert!(matches!(outcome(&answer), "no-op" | "rejected" | "refused"), "{file}: {answer:#}");
        assert_no_change(before, &harness, &file);
    }
    for f in functions.values() {
        assert_clean_logs(f, &harness);
    }
}

#[tokio::test]
async fn a_retryable_failure_fails_the_invocation_and_the_retry_succeeds() {
    binaries_ready();
    let harness = harness().await;
    let f = Function::start("capacity-check", &harness).await;

    // Every AWS call is throttled: the SDK's retries run out.
    harness.aws.proxy().throttle_every(1);
    let started = Instant::now();
    let failed = f.invoke(event("manual-apply.json")).await;
    let Invocation::Error { error_type, error_message } = &failed else {
        panic!("expected an /error post, got {failed:?}\n{}", f.process.output());
    };
    assert_eq!(error_type, "Headroom.RetryableFailure", "{failed:?}");
    assert!(
        error_message.to_ascii_lowercase().contains("throttl") || error_message.contains("RequestLimitExceeded"),
        "{failed:?}"
    );
    let calls = harness.aws.proxy().call_log();
    assert!(calls.len() > 1 && calls.iter().all(|c| !c.forwarded), "{calls:?}");
    assert!(kube_writes(&harness) == 0, "{:?}", harness.kube.requests());
    eprintln!(
        "throttled invocation failed after {:?} and {} calls: {error_type}: {error_message}",
        started.elapsed(),
        calls.len()
    );

    // Lambda retries the event; AWS has recovered; the same process expands.
    harness.aws.proxy().stop_throttling();
    let answer = f.answer("manual-apply.json").await;
    assert_applied(&answer, &harness, "retry");
    assert_clean_logs(&f, &harness);
}
