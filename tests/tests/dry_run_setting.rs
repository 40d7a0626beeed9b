//! `DRY_RUN=true` holds whatever the event says, and a manual dry run
//! proves the install even when nothing needs doing; against moto (through
//! the fault proxy) and the fake API server.

use headroom::run::report::Outcome;
use headroom::{Report, RunOptions};
use headroom_testbed::harness::Harness;
use headroom_testbed::lab::{self, Exhaustion};
use serde_json::{Value, json};

const ROLE: &str = "arn:aws:iam::123456789012:role/headroom-FunctionRole-TEST";

async fn run(harness: &Harness, overrides: &[(&str, &str)], event: Value) -> Report {
    let ctx = harness.context(harness.config(overrides)).await;
    let trigger = headroom::trigger::parse(&event).expect("valid event");
    headroom::handle(&ctx, trigger, RunOptions::default()).await.expect("handled")
}

fn describe(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}

/// Kubernetes writes that were made, not only asked (`dryRun=All`).
fn kube_writes(harness: &Harness) -> Vec<String> {
    harness.kube.requests().iter().filter(|r| r.is_write()).map(|r| format!("{} {}", r.method, r.path)).collect()
}

#[tokio::test]
async fn dry_run_setting_holds_against_a_manual_apply_and_says_how_to_lift_it() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let event = json!({"clusterName": lab::CLUSTER, "dryRun": false});

    let held = run(&harness, &[("DRY_RUN", "true")], event.clone()).await;
    assert_eq!(held.outcome, Outcome::Planned, "{}", describe(&held));
    assert!(held.dry_run, "{}", describe(&held));
    let note = held.dry_run_held.as_deref().expect("the report says DRY_RUN held");
    assert!(note.contains("DRY_RUN=true held") && note.contains("DryRun=false"), "{note}");
    assert!(held.clusters[0].changes.is_empty(), "{}", describe(&held));
    let mutating: Vec<String> = harness.aws.proxy().mutating_calls().into_iter().map(|r| r.action).collect();
    assert!(mutating.is_empty(), "DRY_RUN=true made AWS changes: {mutating:?}");
    assert!(kube_writes(&harness).is_empty(), "DRY_RUN=true wrote to Kubernetes: {:?}", kube_writes(&harness));
    // The JSON answer carries it, for whoever invoked the function by hand.
    assert!(serde_json::to_value(&held).unwrap()["dryRunHeld"].is_string());

    // Lifted, the same event applies; a dry run asked for is not "held".
    let applied = run(&harness, &[("DRY_RUN", "false")], event).await;
    assert_eq!(applied.outcome, Outcome::Applied, "{}", describe(&applied));
    assert!(applied.dry_run_held.is_none());
    let asked = run(&harness, &[("DRY_RUN", "true")], json!({"dryRun": true})).await;
    assert!(asked.dry_run_held.is_none(), "{}", describe(&asked));
}

#[tokio::test]
async fn a_manual_dry_run_on_a_healthy_cluster_still_proves_the_write_permissions() {
    let harness = Harness::start(Exhaustion::None).await.unwrap();
    let settings = [("FUNCTION_ROLE_ARN", ROLE)];

    let report = run(&harness, &settings, json!({"dryRun": true})).await;
    assert_eq!(report.outcome, Outcome::NoOp, "{}", describe(&report));
    let preflight = report.clusters[0].preflight.as_ref().expect("a manual dry run proves the install");
    assert_eq!(serde_json::to_value(preflight.occasion).unwrap(), "manual-dry-run");
    let actions: Vec<&str> = preflight.checks.iter().map(|c| c.action.as_str()).collect();
    for needed in ["ec2:AssociateVpcCidrBlock", "ec2:CreateSubnet", "ec2:AssociateRouteTable"] {
        assert!(actions.contains(&needed), "{needed} not proven: {actions:?}");
    }
    assert!(actions.iter().any(|a| a.contains("nodeclasses")), "no Kubernetes write proven: {actions:?}");
    assert!(harness.aws.proxy().mutating_calls().is_empty());
    assert!(kube_writes(&harness).is_empty(), "{:?}", kube_writes(&harness));

    // Every manual dry run proves it again: a person asked.
    let again = run(&harness, &settings, json!({"dryRun": true})).await;
    assert!(again.clusters[0].preflight.is_some(), "{}", describe(&again));
    // A manual run that may act and finds nothing to do has nothing to prove.
    let live = run(&harness, &settings, json!({"dryRun": false})).await;
    assert_eq!(live.outcome, Outcome::NoOp, "{}", describe(&live));
    assert!(live.clusters[0].preflight.is_none(), "{}", describe(&live));
}
