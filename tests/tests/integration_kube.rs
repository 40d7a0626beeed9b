//! The NodeClass side of the lab's remediation, against the fake API server:
//! both modes, a concurrent writer, a user's terms, `default` untouched,
//! and a NodeClass name that headroom's admission policy refuses.

use headroom::plan::StepKind;
use headroom::run::report::Outcome;
use headroom::{Report, RunOptions};
use headroom_testbed::fake_kube::{NODECLASSES, NODEPOOLS};
use headroom_testbed::harness::Harness;
use headroom_testbed::lab::{self, Exhaustion};
use serde_json::{Value, json};

const MANAGED_TERM: fn() -> Value = || json!({"tags": {"headroom.io/cluster": "demo-cluster"}});

async fn apply(harness: &Harness, overrides: &[(&str, &str)]) -> Report {
    let ctx = harness.context(harness.config(overrides)).await;
    let trigger = headroom::trigger::parse(&json!({"clusterName": lab::CLUSTER, "dryRun": false})).unwrap();
    headroom::handle(&ctx, trigger, RunOptions::default()).await.unwrap()
}

fn nodeclass(harness: &Harness) -> Value {
    harness.kube.get_object(NODECLASSES, "headroom").expect("NodeClass headroom exists")
}

/// No write to `default`, and never a strategic-merge or merge patch.
fn assert_safe_writes(harness: &Harness) {
    assert_eq!(harness.kube.writes_to(NODECLASSES, "default"), 0, "the default NodeClass was written");
    for r in harness.kube.requests() {
        if r.method == "PATCH" {
            assert_eq!(r.content_type.as_deref(), Some("application/json-patch+json"), "{r:?}");
        }
    }
}

async fn managed_subnet_ids(harness: &Harness) -> Vec<String> {
    let mut ids: Vec<String> =
        lab::subnets_tagged(&harness.direct_ec2, &harness.lab.vpc_id, "headroom.io/cluster", lab::CLUSTER)
            .await
            .unwrap()
            .iter()
            .map(|s| s.subnet_id().unwrap().to_string())
            .collect();
    ids.sort();
    ids
}

fn user_nodeclass(subnet_terms: Value) -> Value {
    json!({
        "apiVersion": "eks.amazonaws.com/v1",
        "kind": "NodeClass",
        "metadata": {"name": "headroom"},
        "spec": {
            "role": lab::NODE_ROLE,
            "subnetSelectorTerms": subnet_terms,
            "securityGroupSelectorTerms": [{"tags": {"team": "platform"}}],
            "ephemeralStorage": {"size": "120Gi"}
        }
    })
}

#[tokio::test]
async fn nodes_mode_creates_a_nodeclass_that_auto_mode_resolves_to_the_new_subnets() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let report = apply(&harness, &[("NODEPOOL_NAME", "headroom")]).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");

    let nc = nodeclass(&harness);
    assert_eq!(nc["spec"]["subnetSelectorTerms"], json!([MANAGED_TERM()]));
    assert_eq!(nc["spec"]["role"], lab::NODE_ROLE, "role copied from default");
    assert_eq!(nc["spec"]["securityGroupSelectorTerms"], json!([{"id": harness.lab.cluster_security_group}]));
    assert!(nc["spec"].get("podSubnetSelectorTerms").is_none());

    let verification = report.clusters[0].verification.as_ref().unwrap();
    assert!(verification.status_pending_subnets.is_empty(), "{verification:?}");
    let mut status = headroom::nodeclass::status_subnet_ids(&nc);
    status.sort();
    assert_eq!(status, managed_subnet_ids(&harness).await);

    let pool = harness.kube.get_object(NODEPOOLS, "headroom").expect("NodePool created");
    assert_eq!(pool["spec"]["template"]["spec"]["nodeClassRef"]["name"], "headroom");
    assert_safe_writes(&harness);
}

#[tokio::test]
async fn pods_mode_sets_pod_subnets_and_pod_security_groups_together() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let report = apply(&harness, &[("SUBNET_MODE", "pods")]).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    let nc = nodeclass(&harness);
    assert_eq!(nc["spec"]["podSubnetSelectorTerms"], json!([MANAGED_TERM()]));
    assert_eq!(nc["spec"]["podSecurityGroupSelectorTerms"], nc["spec"]["securityGroupSelectorTerms"]);
    let node_terms: Vec<Value> = harness.lab.private_subnets.iter().map(|id| json!({"id": id})).collect();
    assert_eq!(nc["spec"]["subnetSelectorTerms"], Value::Array(node_terms), "nodes stay on the cluster's subnets");
    // The emulated Auto Mode controller accepts it: pod subnets share AZs with node subnets.
    let ready = harness
        .kube
        .wait_for(NODECLASSES, "headroom", std::time::Duration::from_secs(5), |o| {
            o.pointer("/status/conditions/0/status") == Some(&json!("True"))
        })
        .await;
    assert!(ready.is_some(), "{:#}", nodeclass(&harness));
    assert_safe_writes(&harness);
}

#[tokio::test]
async fn a_users_nodeclass_is_extended_and_keeps_every_field() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    harness.kube.put_object(NODECLASSES, user_nodeclass(json!([{"id": harness.lab.private_subnets[0]}]))).unwrap();
    let report = apply(&harness, &[]).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    let nc = nodeclass(&harness);
    assert_eq!(nc["spec"]["subnetSelectorTerms"], json!([{"id": harness.lab.private_subnets[0]}, MANAGED_TERM()]));
    assert_eq!(nc["spec"]["role"], lab::NODE_ROLE);
    assert_eq!(nc["spec"]["securityGroupSelectorTerms"], json!([{"tags": {"team": "platform"}}]));
    assert_eq!(nc["spec"]["ephemeralStorage"], json!({"size": "120Gi"}));
    // One write landed, and no attempt was refused: the patch tests the
    // list it extends, which the controller's status writes leave alone.
    let landed = harness
        .kube
        .requests()
        .into_iter()
        .filter(|r| r.is_write() && r.plural.as_deref() == Some(NODECLASSES) && r.name.as_deref() == Some("headroom"))
        .map(|r| r.status)
        .collect::<Vec<_>>();
    assert_eq!(landed, [200], "one patch, accepted at once");
    assert_safe_writes(&harness);
}

#[tokio::test]
async fn a_concurrent_writer_between_read_and_write_loses_nothing() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    harness.kube.put_object(NODECLASSES, user_nodeclass(json!([{"id": harness.lab.private_subnets[0]}]))).unwrap();
    // Right after headroom reads the NodeClass, someone else appends a term.
    harness.kube.on_next_get(NODECLASSES, "headroom", |nc| {
        nc["spec"]["subnetSelectorTerms"].as_array_mut().unwrap().push(json!({"tags": {"team": "batch"}}));
    });
    let report = apply(&harness, &[]).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");

    let nc = nodeclass(&harness);
    assert_eq!(
        nc["spec"]["subnetSelectorTerms"],
        json!([{"id": harness.lab.private_subnets[0]}, {"tags": {"team": "batch"}}, MANAGED_TERM()]),
        "the other writer's term and ours are both there"
    );
    let patches: Vec<u16> = harness
        .kube
        .requests()
        .iter()
        .filter(|r| {
            r.method == "PATCH" && r.plural.as_deref() == Some(NODECLASSES) && r.name.as_deref() == Some("headroom")
        })
        .map(|r| r.status)
        .collect();
    assert_eq!(patches, vec![422, 200], "the stale patch is refused by its test op, the recomputed one lands");
    assert_safe_writes(&harness);
}

#[tokio::test]
async fn a_nodeclass_that_already_selects_the_subnets_is_not_patched() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    harness.kube.put_object(NODECLASSES, user_nodeclass(json!([{"tags": {"headroom.io/cluster": "*"}}]))).unwrap();
    let report = apply(&harness, &[]).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    assert_eq!(managed_subnet_ids(&harness).await.len(), 3);
    assert_eq!(harness.kube.writes_to(NODECLASSES, "headroom"), 0);
    assert!(
        !report.clusters[0]
            .changes
            .iter()
            .any(|c| matches!(c.step, StepKind::CreateNodeclass | StepKind::PatchNodeclass))
    );
    assert_safe_writes(&harness);
}

#[tokio::test]
async fn a_nodeclass_that_lost_the_managed_term_gets_it_back() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let report = apply(&harness, &[]).await;
    assert_eq!(report.outcome, Outcome::Applied);
    // Someone rewrites the selector list without our term.
    let mut nc = nodeclass(&harness);
    nc["spec"]["subnetSelectorTerms"] = json!([{"id": harness.lab.private_subnets[0]}]);
    harness.kube.put_object(NODECLASSES, nc).unwrap();

    let report = apply(&harness, &[]).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    let steps: Vec<StepKind> = report.clusters[0].plan.as_ref().unwrap().steps.iter().map(|s| s.kind()).collect();
    assert_eq!(steps, [StepKind::PatchNodeclass], "the subnets exist; only the NodeClass needs work");
    assert_eq!(
        nodeclass(&harness)["spec"]["subnetSelectorTerms"],
        json!([{"id": harness.lab.private_subnets[0]}, MANAGED_TERM()])
    );
    assert_safe_writes(&harness);
}

/// headroom configured for a NodeClass its admission policy (rendered for
/// `headroom`) does not allow: the dry run's preflight shows the refusal
/// with the policy's words, and a live run fails, not to be retried, with
/// no NodeClass and no NodePool created.
#[tokio::test]
async fn a_nodeclass_the_admission_policy_does_not_allow_is_refused_and_nothing_is_created() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let settings = [("NODECLASS_NAME", "extra-ips"), ("NODEPOOL_NAME", "extra-ips")];
    let ctx = harness.context(harness.config(&settings)).await;
    let dry_run = headroom::trigger::parse(&json!({"clusterName": lab::CLUSTER, "dryRun": true})).unwrap();
    let report = headroom::handle(&ctx, dry_run, RunOptions::default()).await.unwrap();
    let preflight = report.clusters[0].preflight.as_ref().expect("a dry run proves its plan");
    let denied = |action: &str| {
        preflight.denied().find(|c| c.action == action).unwrap_or_else(|| panic!("{action}: {:#?}", preflight.checks))
    };
    let nodeclass = denied("create nodeclasses");
    assert_eq!(nodeclass.resource, "extra-ips");
    assert!(
        nodeclass.detail.contains("403 Forbidden")
            && nodeclass.detail.contains("ValidatingAdmissionPolicy 'headroom' with binding 'headroom' denied request")
            && nodeclass.detail.contains("only the NodeClass headroom"),
        "{}",
        nodeclass.detail
    );
    assert!(denied("create nodepools").detail.contains("only the NodePool headroom"));

    let report = apply(&harness, &settings).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    let error = report.clusters[0].error.as_ref().or(report.error.as_ref()).expect("the failure is reported");
    assert!(!error.retryable, "{error:?}");
    assert!(error.message.contains("ValidatingAdmissionPolicy 'headroom'"), "{}", error.message);
    assert!(error.message.contains("headroom's admission policy refuses it"), "{}", error.message);
    for plural in [NODECLASSES, NODEPOOLS] {
        let names: Vec<Value> =
            harness.kube.list_objects(plural).iter().map(|o| o["metadata"]["name"].clone()).collect();
        assert!(!names.contains(&json!("extra-ips")), "{plural}: {names:?}");
    }
    assert_safe_writes(&harness);
}
