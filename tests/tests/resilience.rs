//! Resilience of the whole remediation against local AWS (moto behind the
//! fault proxy) and the fake Kubernetes API server, on the lab's scenario:
//!
//! - crash consistency: a run that dies at any mutating call (AWS or
//!   Kubernetes), before or after the change landed, followed by a clean
//!   run, ends exactly where a clean run ends;
//! - a storm of concurrent invocations converges on one expansion;
//! - 30% throttling plus a slow CIDR association still converges in time;
//! - guardrails refuse without a single mutating call;
//! - bad input is rejected without any call at all.
//!
//! Every test owns its harness (moto, proxy, API server), stopped on drop.
//! The crash sweeps reuse theirs between crash points: wiping moto and the
//! API server and seeding the lab again took 1.6–2.0 s against 2.7–3.8 s
//! for a new harness (measured on the 2-core machine); the whole file runs
//! in about 80 s there.
//!
//! A crash is simulated with the proxy's `crash_at_nth_mutating`: the k-th
//! mutating AWS call fails (`ServerError`: AWS never acted) or acts and loses
//! its answer (`DropAfterForward`), and every later call is refused with a
//! non-retryable error and never reaches moto, so AWS is left exactly as a
//! process dying at call k would leave it, and the run stops there instead
//! of retrying or reconciling its way on (headroom retries mutating calls
//! itself, after a reconciling read). Kubernetes crash points use the fake
//! API server's `fail_nth_write` (a 500, before or after the write landed).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::Filter;
use headroom::lambda::{self, Function};
use headroom::plan::StepKind;
use headroom::run::report::Outcome;
use headroom::{Report, RunOptions};
use headroom_testbed::fake_kube::{NODECLASSES, NODEPOOLS};
use headroom_testbed::harness::Harness;
use headroom_testbed::lab::{self, Exhaustion};
use headroom_testbed::{Fault, init_test_tracing};
use serde_json::{Value, json};

/// The NodePool name the crash sweep configures, so a Kubernetes crash can
/// also fall between the NodeClass and the NodePool write.
const NODEPOOL: &str = "headroom";

async fn harness() -> Harness {
    init_test_tracing();
    Harness::start(Exhaustion::Fragmented).await.expect("harness starts (run scripts/setup-moto.sh)")
}

fn apply_event() -> Value {
    json!({"clusterName": lab::CLUSTER, "dryRun": false})
}

/// One invocation as the issue describes it: a fresh context, the manual
/// apply event, default options.
async fn run(harness: &Harness, overrides: &[(&str, &str)]) -> Report {
    run_event(harness, overrides, &apply_event()).await
}

async fn run_event(harness: &Harness, overrides: &[(&str, &str)], event: &Value) -> Report {
    let ctx = harness.context(harness.config(overrides)).await;
    let trigger = headroom::trigger::parse(event).expect("a valid event");
    headroom::handle(&ctx, trigger, RunOptions::default()).await.expect("handle reaches the cluster")
}

fn describe(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}

/// Wipes moto and the API server and seeds the lab again, keeping the
/// processes: several times faster than a new harness.
async fn reseed(harness: &mut Harness) {
    harness.reseed(Exhaustion::Fragmented).await.expect("lab reseeded");
}

// --- The end state, normalised so two harnesses compare equal -------------

/// What a remediation leaves behind, with every generated id replaced by
/// what it stands for (a subnet by its AZ and CIDR, a route table by its
/// Name tag, the cluster security group by a placeholder). Lists are
/// sorted multisets: a duplicate shows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EndState {
    /// (CIDR, state) of every IPv4 association of the VPC.
    vpc_cidrs: Vec<(String, String)>,
    /// (AZ, CIDR, tags) of every subnet of the VPC.
    subnets: Vec<(String, String, BTreeMap<String, String>)>,
    /// (subnet CIDR, route table name) of every explicit association.
    route_associations: Vec<(String, String)>,
    /// NodeClass name → spec.
    nodeclasses: BTreeMap<String, Value>,
    nodepools: Vec<String>,
}

fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> BTreeMap<String, String> {
    tags.iter().filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned()))).collect()
}

fn replace_ids(value: &mut Value, names: &BTreeMap<String, String>) {
    match value {
        Value::String(s) => {
            if let Some(name) = names.get(s.as_str()) {
                *s = name.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| replace_ids(v, names)),
        Value::Object(map) => map.values_mut().for_each(|v| replace_ids(v, names)),
        _ => {}
    }
}

async fn end_state(harness: &Harness) -> EndState {
    let ec2 = &harness.direct_ec2;
    let vpc_id = &harness.lab.vpc_id;
    let vpc_filter = || Filter::builder().name("vpc-id").values(vpc_id).build();

    let vpcs = ec2.describe_vpcs().vpc_ids(vpc_id).send().await.expect("DescribeVpcs");
    let mut vpc_cidrs: Vec<(String, String)> = vpcs.vpcs()[0]
        .cidr_block_association_set()
        .iter()
        .map(|a| {
            let state = a.cidr_block_state().and_then(|s| s.state()).map(|s| s.as_str().to_owned()).unwrap_or_default();
            (a.cidr_block().unwrap_or_default().to_owned(), state)
        })
        .collect();
    vpc_cidrs.sort();

    let subnets_out = ec2.describe_subnets().filters(vpc_filter()).send().await.expect("DescribeSubnets");
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut subnets = Vec::new();
    for s in subnets_out.subnets() {
        let az = s.availability_zone().unwrap_or_default().to_owned();
        let cidr = s.cidr_block().unwrap_or_default().to_owned();
        names.insert(s.subnet_id().unwrap_or_default().to_owned(), format!("subnet<{az} {cidr}>"));
        subnets.push((az, cidr, tags_of(s.tags())));
    }
    subnets.sort();
    names.insert(harness.lab.cluster_security_group.clone(), "sg<cluster>".into());

    let tables = ec2.describe_route_tables().filters(vpc_filter()).send().await.expect("DescribeRouteTables");
    let mut route_associations = Vec::new();
    for table in tables.route_tables() {
        let is_main = table.associations().iter().any(|a| a.main() == Some(true));
        let name = tags_of(table.tags())
            .remove("Name")
            .unwrap_or_else(|| if is_main { "main".into() } else { "unnamed".into() });
        for association in table.associations() {
            if let Some(subnet) = association.subnet_id() {
                let subnet = names.get(subnet).cloned().unwrap_or_else(|| format!("unknown {subnet}"));
                route_associations.push((subnet, name.clone()));
            }
        }
    }
    route_associations.sort();

    let nodeclasses = harness
        .kube
        .list_objects(NODECLASSES)
        .into_iter()
        .map(|object| {
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let mut spec = object.get("spec").cloned().unwrap_or(Value::Null);
            replace_ids(&mut spec, &names);
            (name, spec)
        })
        .collect();
    let nodepools = harness
        .kube
        .list_objects(NODEPOOLS)
        .into_iter()
        .map(|object| object["metadata"]["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    EndState { vpc_cidrs, subnets, route_associations, nodeclasses, nodepools }
}

/// Write requests the API server received (any outcome).
fn kube_writes(harness: &Harness) -> usize {
    harness.kube.requests().iter().filter(|r| r.is_write()).count()
}

fn mutating_aws_calls(harness: &Harness) -> Vec<String> {
    harness.aws.proxy().mutating_calls().into_iter().map(|r| r.action).collect()
}

// --- Crash consistency ------------------------------------------------------

/// The fault-free run of the sweep's configuration: its end state, its
/// mutating AWS calls and its Kubernetes writes.
struct Baseline {
    state: EndState,
    aws_mutations: Vec<String>,
    kube_writes: usize,
}

/// The baseline of [`SWEEP`], computed once per test binary (plain data, so
/// tests on other runtimes share it).
static BASELINE: tokio::sync::OnceCell<Baseline> = tokio::sync::OnceCell::const_new();

/// The configuration every end-state comparison uses.
const SWEEP: [(&str, &str); 1] = [("NODEPOOL_NAME", NODEPOOL)];

async fn shared_baseline() -> &'static Baseline {
    BASELINE.get_or_init(|| baseline(&SWEEP)).await
}

async fn baseline(overrides: &[(&str, &str)]) -> Baseline {
    let harness = harness().await;
    let report = run(&harness, overrides).await;
    assert_eq!(report.outcome, Outcome::Applied, "{}", describe(&report));
    let baseline = Baseline {
        state: end_state(&harness).await,
        aws_mutations: mutating_aws_calls(&harness),
        kube_writes: kube_writes(&harness),
    };
    // A clean run after a clean run does nothing.
    harness.aws.proxy().reset_counters();
    harness.kube.clear_requests();
    let again = run(&harness, overrides).await;
    assert_eq!(again.outcome, Outcome::NoOp, "{}", describe(&again));
    assert!(mutating_aws_calls(&harness).is_empty());
    assert_eq!(kube_writes(&harness), 0);
    baseline
}

/// Sanity of the fault-free end state itself: one new /16, one subnet per
/// AZ in it, each on its AZ's private (NAT) table, one NodeClass term.
fn assert_expected_shape(state: &EndState) {
    assert_eq!(
        state.vpc_cidrs,
        [("100.64.0.0/16".to_string(), "associated".to_string()), ("192.168.0.0/16".into(), "associated".into())]
    );
    let managed: Vec<_> = state
        .subnets
        .iter()
        .filter(|(_, _, tags)| tags.get("headroom.io/cluster").map(String::as_str) == Some(lab::CLUSTER))
        .map(|(az, cidr, _)| (az.as_str(), cidr.as_str()))
        .collect();
    assert_eq!(
        managed,
        [("us-west-2a", "100.64.0.0/19"), ("us-west-2b", "100.64.32.0/19"), ("us-west-2c", "100.64.64.0/19")]
    );
    for (az, cidr) in managed {
        let suffix = az.chars().last().unwrap().to_ascii_uppercase();
        let wanted = (format!("subnet<{az} {cidr}>"), format!("demo-cluster/PrivateRouteTable{suffix}"));
        assert!(state.route_associations.contains(&wanted), "{wanted:?} in {:?}", state.route_associations);
    }
    let spec = &state.nodeclasses["headroom"];
    assert_eq!(spec["subnetSelectorTerms"], json!([{"tags": {"headroom.io/cluster": lab::CLUSTER}}]), "{spec}");
    assert_eq!(state.nodepools, ["general-purpose", NODEPOOL, "system"], "the built-in ones and headroom's");
}

#[derive(Debug, Clone, Copy)]
enum CrashPoint {
    /// The k-th mutating AWS call fails with this fault and the caller dies.
    Aws(usize, Fault),
    /// The k-th mutating AWS call fails once; the same run carries on.
    AwsTransient(usize, Fault),
    /// The j-th Kubernetes write answers 500; `applied`: after landing.
    Kube(usize, bool),
}

/// The sweep's crash points, checked against the shared baseline.
fn aws_points(fault: Fault, transient: bool, k_aws: usize) -> Vec<CrashPoint> {
    (1..=k_aws)
        .map(|k| if transient { CrashPoint::AwsTransient(k, fault) } else { CrashPoint::Aws(k, fault) })
        .collect()
}

/// For each point: a fresh lab, the faulty run, then a clean run that must
/// end exactly where a clean run ends, then a run that has nothing to do.
async fn sweep(points: impl Fn(&Baseline) -> Vec<CrashPoint>) {
    let started = Instant::now();
    let overrides = SWEEP;
    let (expected, mut harness) = tokio::join!(shared_baseline(), harness());
    let points = points(expected);
    let count = points.len();
    let mut first = true;
    for point in points {
        if !first {
            reseed(&mut harness).await;
        }
        first = false;
        let proxy = harness.aws.proxy();
        match point {
            CrashPoint::Aws(k, fault) => proxy.crash_at_nth_mutating(k, fault),
            CrashPoint::AwsTransient(k, fault) => proxy.fail_nth_mutating(k, fault),
            CrashPoint::Kube(j, applied) => harness.kube.fail_nth_write(j, 500, applied),
        }

        let crashed = run(&harness, &overrides).await;
        match point {
            CrashPoint::Aws(k, fault) => {
                assert!(proxy.has_crashed(), "{point:?}: the crash fired");
                assert_eq!(crashed.outcome, Outcome::Failed, "{point:?}: {}", describe(&crashed));
                // Nothing after call k reached AWS, and Kubernetes saw no write.
                let log = proxy.call_log();
                let at = log.iter().position(|r| r.injected == Some(fault)).expect("the crashing call");
                assert!(log[at + 1..].iter().all(|r| !r.forwarded && r.injected == Some(Fault::Crashed)), "{point:?}");
                let forwarded = log.iter().filter(|r| r.forwarded && r.changes_state()).count();
                let acted = if fault == Fault::DropAfterForward { k } else { k - 1 };
                assert_eq!(forwarded, acted, "{point:?}");
                assert_eq!(kube_writes(&harness), 0, "{point:?}");
            }
            CrashPoint::AwsTransient(..) => {
                // Not a crash: the executor reconciles and retries in the same run.
                assert_eq!(crashed.outcome, Outcome::Applied, "{point:?}: {}", describe(&crashed));
                assert_eq!(end_state(&harness).await, expected.state, "{point:?}: same run");
            }
            CrashPoint::Kube(..) => {
                assert_eq!(crashed.outcome, Outcome::Failed, "{point:?}: {}", describe(&crashed));
                let error = crashed.clusters[0].error.as_ref().expect("an error");
                assert!(error.retryable, "a 500 from the API server is retryable: {error:?}");
            }
        }

        proxy.reset_faults();
        harness.kube.clear_write_faults();
        let resumed = run(&harness, &overrides).await;
        assert!(matches!(resumed.outcome, Outcome::Applied | Outcome::NoOp), "{point:?}: {}", describe(&resumed));
        assert_eq!(end_state(&harness).await, expected.state, "{point:?}: after the clean run");
        let settled = run(&harness, &overrides).await;
        assert_eq!(settled.outcome, Outcome::NoOp, "{point:?}: {}", describe(&settled));
    }
    eprintln!("crash sweep: {count} points in {:?}", started.elapsed());
}

#[tokio::test]
async fn the_fault_free_remediation_is_what_the_sweep_expects() {
    let expected = shared_baseline().await;
    assert_expected_shape(&expected.state);
    // The lab's remediation: one CIDR, three subnets, three route table
    // associations; then the NodeClass and the NodePool.
    let mut sorted = expected.aws_mutations.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "AssociateRouteTable",
            "AssociateRouteTable",
            "AssociateRouteTable",
            "AssociateVpcCidrBlock",
            "CreateSubnet",
            "CreateSubnet",
            "CreateSubnet"
        ]
    );
    assert_eq!(expected.aws_mutations[0], "AssociateVpcCidrBlock");
    assert_eq!(expected.kube_writes, 2);
}

/// Crash before the change lands: the k-th mutating AWS call never reaches
/// AWS (500, and the caller dies), or the j-th Kubernetes write is refused.
#[tokio::test]
async fn crash_before_any_mutating_call_lands_then_a_clean_run_converges() {
    sweep(|b| {
        let mut points = aws_points(Fault::ServerError, false, b.aws_mutations.len());
        points.extend((1..=b.kube_writes).map(|j| CrashPoint::Kube(j, false)));
        points
    })
    .await;
}

/// Crash after the change lands: AWS acted on the k-th mutating call but the
/// answer was lost and the caller died; or the j-th Kubernetes write landed
/// and its answer was a 500.
#[tokio::test]
async fn crash_after_any_mutating_call_lands_then_a_clean_run_converges() {
    sweep(|b| {
        let mut points = aws_points(Fault::DropAfterForward, false, b.aws_mutations.len());
        points.extend((1..=b.kube_writes).map(|j| CrashPoint::Kube(j, true)));
        points
    })
    .await;
}

/// Not a crash: one failed or lost mutating call, and the same run
/// reconciles, retries and ends where a clean run ends.
#[tokio::test]
async fn a_transient_fault_at_any_mutating_call_is_absorbed_by_the_same_run() {
    sweep(|b| {
        let mut points = aws_points(Fault::ServerError, true, b.aws_mutations.len());
        points.extend(aws_points(Fault::DropAfterForward, true, b.aws_mutations.len()));
        points
    })
    .await;
}

// --- A storm of concurrent invocations -----------------------------------

/// 20 invocations at once (an alarm storm, EventBridge redeliveries) plan
/// the same CIDR and subnets, because the planner is deterministic. The
/// proxy makes moto answer the losers as AWS would (`InvalidVpc.Range`,
/// `InvalidSubnet.Conflict`, `Resource.AlreadyAssociated`; the API server
/// `AlreadyExists`), the executor reconciles each refusal with a read, and
/// finds its change made by another run. So every invocation must end
/// `applied` (or `no-op` if it read after the others finished), never
/// `failed`: a failure would make Lambda retry an event whose work is done,
/// and the issue asks that they converge, not fail. Retryable failures with
/// a converging follow-up run would be tolerable; none happen, so none are
/// allowed.
#[tokio::test]
async fn twenty_concurrent_invocations_converge_on_one_expansion() {
    let (expected, harness) = tokio::join!(shared_baseline(), harness());
    let contexts = futures::future::join_all((0..20).map(|_| harness.context(harness.config(&SWEEP)))).await;
    let trigger = headroom::trigger::parse(&apply_event()).unwrap();
    let runs = contexts.iter().map(|ctx| {
        let trigger = trigger.clone();
        async move { headroom::handle(ctx, trigger, RunOptions::default()).await.expect("handle") }
    });
    let started = Instant::now();
    let reports = futures::future::join_all(runs).await;
    let elapsed = started.elapsed();

    let outcomes: BTreeMap<String, usize> = reports.iter().fold(BTreeMap::new(), |mut acc, r| {
        *acc.entry(format!("{:?}", r.outcome)).or_default() += 1;
        acc
    });
    for report in &reports {
        assert!(
            matches!(report.outcome, Outcome::Applied | Outcome::NoOp),
            "every invocation converges, none fails: {outcomes:?}\n{}",
            describe(report)
        );
    }
    assert_eq!(end_state(&harness).await, expected.state, "one CIDR, one subnet per AZ, one NodeClass term");

    // Exactly one invocation made each change; the others found it made.
    let made: BTreeMap<StepKind, usize> = reports
        .iter()
        .flat_map(|r| r.clusters.iter().flat_map(|c| &c.changes))
        .filter(|c| !c.already_present)
        .fold(BTreeMap::new(), |mut acc, c| {
            *acc.entry(c.step).or_default() += 1;
            acc
        });
    assert_eq!(made.get(&StepKind::AssociateVpcCidr), Some(&1), "{made:?}");
    assert_eq!(made.get(&StepKind::CreateSubnet), Some(&3), "{made:?}");
    assert_eq!(made.get(&StepKind::AssociateRouteTable), Some(&3), "{made:?}");
    assert_eq!(
        made.get(&StepKind::CreateNodeclass).copied().unwrap_or(0)
            + made.get(&StepKind::PatchNodeclass).copied().unwrap_or(0),
        1,
        "{made:?}"
    );
    assert_eq!(made.get(&StepKind::CreateNodepool), Some(&1), "{made:?}");
    eprintln!("storm: {outcomes:?} in {elapsed:?}; AWS calls {:?}", harness.aws.proxy().calls());

    // And the storm left nothing for a later run to do.
    let after = run(&harness, &SWEEP).await;
    assert_eq!(after.outcome, Outcome::NoOp, "{}", describe(&after));
}

// --- Throttling and a slow association --------------------------------------

#[tokio::test]
async fn thirty_percent_throttling_and_a_slow_association_still_converge_in_time() {
    let (expected, harness) = tokio::join!(shared_baseline(), harness());
    let proxy = harness.aws.proxy();
    proxy.throttle_fraction(0.3, 42);
    proxy.associating_polls(3);

    let report = run(&harness, &SWEEP).await;
    assert_eq!(report.outcome, Outcome::Applied, "{}", describe(&report));
    // The function's timeout is 300 s; the report measures the invocation.
    assert!(report.total_ms < 300_000, "took {} ms", report.total_ms);
    proxy.reset_faults();
    assert_eq!(end_state(&harness).await, expected.state);

    let log = proxy.call_log();
    let throttled = log.iter().filter(|r| r.injected == Some(Fault::Throttle)).count();
    let mutating_throttled = log.iter().filter(|r| r.injected == Some(Fault::Throttle) && r.changes_state()).count();
    assert!(throttled > 0, "throttling happened: {throttled} of {}", log.len());
    // The association was seen `associating` and waited for.
    let polls = log.iter().filter(|r| r.action == "DescribeVpcs" && r.forwarded).count();
    assert!(polls >= 4, "{polls} DescribeVpcs answered");
    eprintln!(
        "throttling: {throttled} of {} calls throttled ({mutating_throttled} mutating), applied in {} ms",
        log.len(),
        report.total_ms
    );
}

// --- Guardrails --------------------------------------------------------------

/// Runs `event` and checks the refusal: outcome `refused`, the expected
/// code (or none, for a trigger refused before any read), no mutating AWS
/// call, no Kubernetes write, the network as it was.
async fn assert_refused(
    harness: &Harness,
    overrides: &[(&str, &str)],
    event: &Value,
    code: Option<&str>,
    says: &str,
) -> Report {
    let before = end_state(harness).await;
    harness.aws.proxy().reset_counters();
    harness.kube.clear_requests();
    let report = run_event(harness, overrides, event).await;
    assert_eq!(report.outcome, Outcome::Refused, "{}", describe(&report));
    assert!(report.reason.contains(says), "reason {:?} should mention {says:?}", report.reason);
    let codes: Vec<Value> =
        report.clusters.iter().filter_map(|c| c.refusal.map(|r| serde_json::to_value(r).unwrap())).collect();
    match code {
        Some(code) => assert_eq!(codes, [json!(code)], "{}", describe(&report)),
        None => assert!(report.clusters.is_empty(), "{}", describe(&report)),
    }
    assert_eq!(mutating_aws_calls(harness), Vec::<String>::new(), "no mutating AWS call");
    assert_eq!(kube_writes(harness), 0, "no Kubernetes write");
    assert_eq!(end_state(harness).await, before, "nothing changed");
    report
}

fn sample(name: &str) -> Value {
    let path = headroom_testbed::moto::workspace_root().join("samplecli-events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("sample JSON")
}

#[tokio::test]
async fn guardrail_nau_limit_failure_never_expands() {
    let harness = harness().await;
    let event = sample("cloudtrail-nau-limit-exceeded.json");
    assert_refused(&harness, &[], &event, None, "Network Address Usage").await;
    let proxy = harness.aws.proxy();
    assert!(proxy.working_calls().is_empty(), "decided from the event alone: {:?}", proxy.call_log());
    assert_eq!(proxy.call_count("PutMetricData"), 1, "the refusal is counted");
    assert!(harness.kube.requests().is_empty());
}

#[tokio::test]
async fn guardrail_vpc_cidr_quota() {
    let harness = harness().await;
    lab::fill_vpc_cidr_quota(&harness.direct_ec2, &harness.lab.vpc_id).await.expect("four more CIDRs");
    assert_refused(&harness, &[], &apply_event(), Some("cidr-quota"), "quota").await;
}

#[tokio::test]
async fn guardrail_max_managed_cidrs() {
    let harness = harness().await;
    assert_refused(
        &harness,
        &[("MAX_MANAGED_CIDRS", "0")],
        &apply_event(),
        Some("max-managed-cidrs"),
        "MAX_MANAGED_CIDRS",
    )
    .await;
}

#[tokio::test]
async fn guardrail_a_pool_inside_a_wider_peering_route_expands_and_warns() {
    let harness = harness().await;
    // AWS refuses only a block equal to or larger than a route destination:
    // every /16 of the pool lies inside 100.64.0.0/10, which AWS accepts (the
    // VPC's local route wins), so headroom expands and names the route.
    let lab = &harness.lab;
    let pcx_id = lab::route_through_new_peer(
        &harness.direct_ec2,
        &lab.vpc_id,
        &lab.private_route_tables[0],
        "10.99.0.0/16",
        "100.64.0.0/10",
    )
    .await
    .unwrap();
    let report = run_event(&harness, &[], &apply_event()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{}", describe(&report));
    let plan = report.clusters[0].plan.as_ref().expect("a plan");
    assert!(
        plan.warnings.iter().any(|w| w.contains("100.64.0.0/10") && w.contains(&pcx_id)),
        "the shadowed route and its target are named: {plan}"
    );
}

#[tokio::test]
async fn guardrail_pool_equal_to_a_peering_route() {
    let harness = harness().await;
    // The one /16 the pool holds is exactly a route's destination: AWS
    // refuses it, so nothing is asked of EC2.
    let lab = &harness.lab;
    lab::route_through_new_peer(
        &harness.direct_ec2,
        &lab.vpc_id,
        &lab.private_route_tables[0],
        "10.99.0.0/16",
        "100.64.0.0/16",
    )
    .await
    .unwrap();
    let report = assert_refused(
        &harness,
        &[("CIDR_POOL", "100.64.0.0/16")],
        &apply_event(),
        Some("pool-exhausted"),
        "equal to or hold a route destination",
    )
    .await;
    assert!(report.reason.contains("1 are equal to or hold a route destination"), "{}", report.reason);
}

#[tokio::test]
async fn guardrail_small_pool_fully_taken() {
    let harness = harness().await;
    // Someone else's 100.64.0.0/16 already covers the whole (narrower) pool.
    harness
        .direct_ec2
        .associate_vpc_cidr_block()
        .vpc_id(&harness.lab.vpc_id)
        .cidr_block("100.64.0.0/16")
        .send()
        .await
        .unwrap();
    let overrides = [("CIDR_POOL", "100.64.0.0/17"), ("VPC_CIDR_PREFIX", "17")];
    let report =
        assert_refused(&harness, &overrides, &apply_event(), Some("pool-exhausted"), "overlap VPC CIDRs").await;
    assert!(report.reason.contains("widen CIDR_POOL"), "{}", report.reason);
}

#[tokio::test]
async fn guardrail_restricted_range() {
    let harness = harness().await;
    assert_refused(&harness, &[("CIDR_POOL", "10.0.0.0/14")], &apply_event(), Some("restricted-range"), "refuses")
        .await;
}

// --- Bad input makes no call -------------------------------------------------

mod bad_input {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    /// Strings that steer the parser down its real branches.
    const WORDS: &[&str] = &[
        "aws.cloudwatch",
        "CloudWatch Alarm State Change",
        "aws.ec2",
        "AWS API Call via CloudTrail",
        "aws.events",
        "Scheduled Event",
        "ALARM",
        "OK",
        "INSUFFICIENT_DATA",
        "demo-cluster",
        "other-cluster",
        "",
        " ",
        "Client.InsufficientCidrBlocks",
        "Client.NetworkAddressUsageLimitExceeded",
        "AssignPrivateIpAddresses",
        "eni-0a1b2c3d4e5f60718",
        "{}",
        "{\"AlarmName\":1}",
        "not json",
        "ClusterName",
        "AvailabilityZone",
        "us-west-2a",
        "\u{0}",
        "💥",
    ];
    const KEYS: &[&str] = &[
        "source",
        "detail-type",
        "detail",
        "alarmData",
        "state",
        "value",
        "Records",
        "Sns",
        "Message",
        "clusterName",
        "dryRun",
        "force",
        "reason",
        "errorCode",
        "errorMessage",
        "eventName",
        "requestParameters",
        "networkInterfaceId",
        "configuration",
        "metrics",
        "alarmName",
        "resources",
        "id",
        "region",
        "time",
    ];

    fn json_strategy() -> impl Strategy<Value = Value> {
        let word = prop::sample::select(WORDS).prop_map(|w| Value::String(w.to_owned()));
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::String),
            word,
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            let key = prop_oneof![prop::sample::select(KEYS).prop_map(str::to_owned), "[a-zA-Z-]{0,8}"];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Remove,
        Replace(Value),
        Stringify,
        Wrap,
        Truncate(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            Just(Mutation::Remove),
            json_strategy().prop_map(Mutation::Replace),
            Just(Mutation::Stringify),
            Just(Mutation::Wrap),
            (0usize..8).prop_map(Mutation::Truncate),
        ]
    }

    /// Applies `mutation` at the node `path` leads to (each step picks a
    /// child by index modulo the number of children; stops at a leaf).
    fn mutate(value: &mut Value, path: &[usize], mutation: &Mutation) {
        let child_count = match value {
            Value::Array(items) => items.len(),
            Value::Object(map) => map.len(),
            _ => 0,
        };
        if let Some((&step, rest)) = path.split_first()
            && child_count > 0
        {
            let index = step % child_count;
            if rest.is_empty() && matches!(mutation, Mutation::Remove) {
                match value {
                    Value::Array(items) => {
                        items.remove(index);
                    }
                    Value::Object(map) => {
                        let key = map.keys().nth(index).cloned().unwrap();
                        map.remove(&key);
                    }
                    _ => {}
                }
                return;
            }
            let child = match value {
                Value::Array(items) => &mut items[index],
                Value::Object(map) => map.values_mut().nth(index).unwrap(),
                _ => unreachable!(),
            };
            return mutate(child, rest, mutation);
        }
        *value = match (mutation, std::mem::take(value)) {
            (Mutation::Remove, _) => Value::Null,
            (Mutation::Replace(with), _) => with.clone(),
            (Mutation::Stringify, old) => Value::String(old.to_string()),
            (Mutation::Wrap, old) => Value::Array(vec![old]),
            (Mutation::Truncate(n), Value::String(s)) => Value::String(s.chars().take(*n).collect()),
            (Mutation::Truncate(_), old) => old,
        };
    }

    fn samples() -> Vec<Value> {
        let root = headroom_testbed::moto::workspace_root().join("samplecli-events");
        let mut found = Vec::new();
        for dir in [root.clone(), root.join("malformed"), root.join("negative")] {
            for entry in std::fs::read_dir(&dir).expect("samplecli-events") {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    // A malformed sample may not even be JSON: keep it as a string.
                    found.push(serde_json::from_str(&text).unwrap_or(Value::String(text)));
                }
            }
        }
        assert!(found.len() >= 20, "{} samples", found.len());
        found
    }

    fn payloads() -> impl Strategy<Value = Value> {
        let samples = samples();
        let mutated = (
            prop::sample::select(samples),
            prop::collection::vec((prop::collection::vec(any::<usize>(), 0..6), mutation()), 1..4),
        )
            .prop_map(|(mut sample, mutations)| {
                for (path, m) in &mutations {
                    mutate(&mut sample, path, m);
                }
                sample
            });
        // Arbitrary JSON is nearly always rejected at once; mutated samples
        // are often still valid and cost a (dry) evaluation each.
        prop_oneof![3 => json_strategy(), 1 => mutated]
    }

    fn function() -> impl Strategy<Value = Function> {
        prop::sample::select(vec![Function::OnAlarm, Function::OnPrefixFailure, Function::CapacityCheck])
    }

    #[test]
    fn bad_input_is_rejected_without_any_call() {
        init_test_tracing();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let harness = runtime.block_on(harness());
        // Dry run by configuration, so an accidentally valid event plans and
        // changes nothing; the manual event's dryRun:false overrides that,
        // which the check below notices.
        let ctx = runtime.block_on(harness.context(harness.config(&[("DRY_RUN", "true")])));
        let proxy = harness.aws.proxy();
        let (rejected, accepted) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
        let started = Instant::now();

        let mut runner = TestRunner::new(Config { cases: 512, failure_persistence: None, ..Config::default() });
        let result = runner.run(&(function(), payloads()), |(function, payload)| {
            proxy.reset_counters();
            harness.kube.clear_requests();
            let answer = runtime.block_on(lambda::invoke(&ctx, function, payload.clone()));
            let Ok(answer) = answer else {
                // A retryable failure of an accepted event (Lambda retries it).
                accepted.set(accepted.get() + 1);
                return Ok(());
            };
            if answer["outcome"] == "rejected" {
                rejected.set(rejected.get() + 1);
                prop_assert_eq!(answer["error"]["retryable"].as_bool(), Some(false));
                prop_assert!(answer["reason"].as_str().is_some_and(|r| !r.is_empty()));
                // Only the rejection itself is reported (Remediations, rejected).
                let calls = proxy.working_calls();
                prop_assert!(calls.is_empty(), "rejected, yet AWS was called: {:?} for {}", calls, payload);
                prop_assert_eq!(proxy.call_count("PutMetricData"), 1);
                let requests = harness.kube.requests();
                prop_assert!(requests.is_empty(), "rejected, yet Kubernetes was called: {:?}", requests);
            } else {
                accepted.set(accepted.get() + 1);
                prop_assert!(answer["outcome"].is_string(), "{}", answer);
                if answer["dryRun"] == json!(true) {
                    // Metrics are observations, published in a dry run too;
                    // the preflight's dry-run calls ask; the network is not touched.
                    let mutating = proxy.mutating_calls();
                    prop_assert!(mutating.is_empty(), "a dry run mutated AWS: {:?}", mutating);
                    prop_assert!(
                        harness.kube.requests().iter().all(|r| !r.is_write()),
                        "a dry run wrote to Kubernetes"
                    );
                }
            }
            Ok::<(), TestCaseError>(())
        });
        let (rejected, accepted) = (rejected.get(), accepted.get());
        eprintln!("bad input: {rejected} rejected, {accepted} accepted, in {:?}", started.elapsed());
        if let Err(error) = result {
            panic!("{error}");
        }
        assert!(rejected > 100, "the generator mostly makes bad input: {rejected} rejected");
        drop(ctx);
        drop(harness);
        runtime.shutdown_timeout(Duration::from_secs(5));
    }
}
