//! The `headroom` binary against the testbed: moto behind the fault proxy
//! as AWS, the fake API server as Kubernetes, reached as an operator would,
//! through AWS_ENDPOINT_URL-style settings and a kubeconfig.

use std::process::Output;

use headroom::Report;
use headroom::status::ClusterStatus;
use headroom_testbed::harness::Harness;
use headroom_testbed::lab::{self, Exhaustion};

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<Output> for Ran {
    fn from(output: Output) -> Self {
        Ran {
            code: output.status.code().expect("exited"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs `headroom args…` with nothing of this machine's AWS or Kubernetes
/// setup, only the testbed's. Awaited on the test's runtime, which keeps
/// serving the fake API server meanwhile.
async fn headroom(harness: &Harness, args: &[&str]) -> Ran {
    let home = tempfile::tempdir().expect("a HOME");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_headroom"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("KUBECONFIG", harness.kubeconfig_path())
        .env("NODECLASS_READY_TIMEOUT_SECONDS", "5")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null());
    for (key, value) in harness.aws.env_vars(lab::REGION) {
        command.env(key, value);
    }
    let ran = Ran::from(command.output().await.expect("the headroom binary runs"));
    assert!(!ran.stdout.contains('\x1b') && !ran.stderr.contains('\x1b'), "no colour off a terminal");
    ran
}

fn kube_writes(harness: &Harness) -> usize {
    harness
        .kube
        .requests()
        .iter()
        .filter(|r| r.method != "GET" && !r.query.as_deref().unwrap_or_default().contains("dryRun"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_the_exhausted_lab_shows_the_exhaustion_per_az_and_subnet() {
    let harness = Harness::start(Exhaustion::Fragmented).await.expect("testbed");
    let ran = headroom(&harness, &["status", lab::CLUSTER]).await;
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    for az in lab::AZS {
        let line = ran.stdout.lines().find(|l| l.starts_with(az)).unwrap_or_else(|| panic!("{az} row: {}", ran.stdout));
        assert!(line.contains("below both thresholds"), "255 free IPs, no /28: {line}");
    }
    assert!(ran.stdout.contains("3 AZs below a threshold"), "{}", ran.stdout);
    assert!(ran.stdout.contains("nodes of default (NodePool general-purpose, system)"), "{}", ran.stdout);

    let json = headroom(&harness, &["status", lab::CLUSTER, "--output", "json"]).await;
    assert_eq!(json.code, 0, "{}", json.stderr);
    let status: ClusterStatus = serde_json::from_str(&json.stdout).expect("status JSON");
    assert_eq!(status.starved_azs().count(), 3);
    assert_eq!(status.subnets.len(), 3, "the lab's node subnets, one per AZ");
    for subnet in &status.subnets {
        assert_eq!(subnet.free_prefixes, 0, "fragmented: {subnet:?}");
        assert_eq!(subnet.free_ips, 255, "one 8-address hole per /28 of a /23 minus AWS's: {subnet:?}");
        assert!(subnet.users.nodes_of.contains("default"), "{subnet:?}");
    }
    assert!(harness.aws.proxy().mutating_calls().is_empty());
    assert_eq!(kube_writes(&harness), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_changes_nothing_and_renders_what_explain_renders() {
    let harness = Harness::start(Exhaustion::Fragmented).await.expect("testbed");
    let ran = headroom(&harness, &["plan", lab::CLUSTER]).await;
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("demo-cluster: planned"), "{}", ran.stdout);
    assert!(ran.stdout.contains("associate CIDR 100.64.0.0/16"), "{}", ran.stdout);
    assert_eq!(ran.stdout.matches("create subnet 100.64.").count(), 3, "{}", ran.stdout);
    assert!(ran.stdout.contains("+ spec.template.spec.nodeClassRef: {\"group\":\"eks.amazonaws.com\",\"kind\":\"NodeClass\",\"name\":\"headroom\"}"), "the NodePool references the NodeClass: {}", ran.stdout);
    assert!(ran.stdout.contains("Preflight (9 checks"), "{}", ran.stdout);
    // No FUNCTION_ROLE_ARN: IAM is asked about the caller's own role.
    assert!(!ran.stdout.contains("not verified"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("ec2:AssociateVpcCidrBlock on arn:aws:ec2:us-west-2:123456789012:vpc/"),
        "{}",
        ran.stdout
    );
    assert!(harness.aws.proxy().mutating_calls().is_empty(), "a plan changes nothing in AWS");
    assert_eq!(kube_writes(&harness), 0, "nor in the cluster");

    let json = headroom(&harness, &["plan", lab::CLUSTER, "--output", "json"]).await;
    assert_eq!(json.code, 0, "{}", json.stderr);
    let report: Report = serde_json::from_str(&json.stdout).expect("a report");
    assert_eq!(report.clusters[0].plan.as_ref().map(|p| p.steps.len()), Some(9), "{}", json.stdout);
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("plan.json");
    std::fs::write(&saved, &json.stdout).unwrap();
    let explained = headroom(&harness, &["explain", saved.to_str().unwrap()]).await;
    assert_eq!(explained.code, 0, "{}", explained.stderr);
    assert_eq!(explained.stdout, ran.stdout, "a saved report renders as the live one did");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_yes_converges_step_by_step_and_a_second_apply_is_a_no_op() {
    let harness = Harness::start(Exhaustion::Fragmented).await.expect("testbed");
    let refused = headroom(&harness, &["apply", lab::CLUSTER]).await;
    assert_eq!(refused.code, 2, "no terminal to confirm on: {}{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("pass --yes"), "{}", refused.stderr);
    assert!(harness.aws.proxy().mutating_calls().is_empty());

    let ran = headroom(&harness, &["apply", lab::CLUSTER, "--yes"]).await;
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("demo-cluster: applied"), "{}", ran.stdout);
    assert!(ran.stdout.contains("verified: the re-read network holds every change"), "{}", ran.stdout);
    // Progress: one line per step, as each completes.
    assert!(ran.stderr.contains("✓ associate-vpc-cidr cidr=100.64.0.0/16"), "{}", ran.stderr);
    assert_eq!(ran.stderr.matches("✓ create-subnet").count(), 3, "{}", ran.stderr);
    assert_eq!(ran.stderr.matches("✓ associate-route-table").count(), 3, "{}", ran.stderr);
    assert!(ran.stderr.contains("✓ create-nodeclass") && ran.stderr.contains("✓ create-nodepool"), "{}", ran.stderr);

    let after = headroom(&harness, &["status", lab::CLUSTER, "--output", "json"]).await;
    let status: ClusterStatus = serde_json::from_str(&after.stdout).expect("status JSON");
    assert_eq!(status.starved_azs().count(), 0, "{}", after.stdout);
    assert_eq!(status.subnets.iter().filter(|s| s.managed).count(), 3);
    assert!(status.subnets.iter().filter(|s| s.managed).all(|s| s.users.nodepools.contains("headroom")));

    let mutations = harness.aws.proxy().mutating_calls().len();
    let again = headroom(&harness, &["apply", lab::CLUSTER, "--yes"]).await;
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(again.stdout.contains("demo-cluster: no-op"), "{}", again.stdout);
    assert_eq!(harness.aws.proxy().mutating_calls().len(), mutations, "converged: nothing more to change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_exits_1_and_a_bad_setting_exits_2_both_changing_nothing() {
    let harness = Harness::start(Exhaustion::Fragmented).await.expect("testbed");
    let refused = headroom(&harness, &["apply", lab::CLUSTER, "--yes", "--create-nodepool", "false"]).await;
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(refused.stdout.contains("demo-cluster: refused"), "{}", refused.stdout);
    assert!(refused.stdout.contains("NodePool"), "the reason says what to set: {}", refused.stdout);

    let bad = headroom(&harness, &["plan", lab::CLUSTER, "--subnet-prefix", "28"]).await;
    assert_eq!(bad.code, 2, "{}{}", bad.stdout, bad.stderr);
    assert!(bad.stderr.contains("SUBNET_PREFIX"), "{}", bad.stderr);
    let unknown = headroom(&harness, &["frobnicate"]).await;
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    let not_a_report = headroom(&harness, &["explain", "/dev/null"]).await;
    assert_eq!(not_a_report.code, 2, "{}", not_a_report.stderr);

    assert!(harness.aws.proxy().mutating_calls().is_empty());
    assert_eq!(kube_writes(&harness), 0);
}

/// What `apply` relies on after the confirmation: a plan other than the one
/// confirmed is not applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_other_than_the_confirmed_one_changes_nothing() {
    let harness = Harness::start(Exhaustion::Fragmented).await.expect("testbed");
    let ctx = harness.context(harness.config(&[])).await;
    let event = serde_json::json!({"clusterName": lab::CLUSTER, "dryRun": false});
    let options = headroom::RunOptions { quiet: true, expected_plan: Some(0xDEAD_BEEF), ..Default::default() };
    let report = headroom::handle(&ctx, headroom::trigger::parse(&event).unwrap(), options).await.unwrap();
    let cluster = &report.clusters[0];
    assert_eq!(cluster.outcome, headroom::run::report::Outcome::Failed, "{cluster:?}");
    assert_eq!(cluster.error.as_ref().map(|e| e.kind.as_str()), Some("PlanChanged"));
    assert!(harness.aws.proxy().mutating_calls().is_empty());
    assert_eq!(kube_writes(&harness), 0);
    assert_eq!(report.published.metrics, 0, "quiet: nothing published");
}
