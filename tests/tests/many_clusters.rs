//! One deployment, many clusters (docs/deploy.md, "Many clusters"): the
//! listed cluster and every cluster tagged `headroom.io/enabled=true`, in
//! two VPCs, against moto (through the fault proxy) and one fake API server
//! per cluster. The lab's cluster is exhausted; the others are not.

use std::collections::BTreeMap;

use headroom::aws::AwsClients;
use headroom::cluster::ClusterAccess;
use headroom::config::{TAG_MIN_FREE_IPS_PER_AZ, TAG_MIN_FREE_PREFIXES_PER_AZ, TAG_NODECLASS};
use headroom::run::report::Outcome;
use headroom::{Context, Report, RunOptions};
use headroom_testbed::harness::Harness;
use headroom_testbed::lab::{self, Exhaustion, SecondVpc};
use headroom_testbed::{FakeKube, ec2_status_resolver};
use serde_json::{Value, json};

const OPT_IN: (&str, &str) = ("headroom.io/enabled", "true");
const TEAM_B1: &str = "team-b1";
const TEAM_B2: &str = "team-b2";
const NOT_OPTED_IN: &str = "not-opted-in";
const ON_ALARM: &str = "arn:aws:lambda:us-west-2:123456789012:function:headroom-on-alarm";

/// The lab (VPC A: `demo-cluster`, exhausted, listed in CLUSTER_NAME) and
/// VPC B with three clusters: `team-b1` opts in by tag, with `team_b1_tags`
/// besides, `team-b2` opts in with an override headroom must refuse (the
/// EKS-managed `default` NodeClass), `not-opted-in` has no tag.
struct Fleet {
    harness: Harness,
    second: SecondVpc,
    team_b1_api: FakeKube,
    kubeconfigs: tempfile::TempDir,
}

async fn fleet(tag_vpc_a: bool, team_b1_tags: &[(&str, &str)]) -> Fleet {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let direct = harness.aws.direct_sdk_config(lab::REGION).await;
    let eks = aws_sdk_eks::Client::new(&direct);
    if tag_vpc_a {
        lab::tag_with(&harness.direct_ec2, &harness.lab.vpc_id, &[OPT_IN]).await.unwrap();
    }
    let second = lab::seed_second_vpc(
        &harness.direct_ec2,
        &eks,
        &[OPT_IN],
        &[
            (TEAM_B1, &[&[OPT_IN], team_b1_tags].concat()),
            (TEAM_B2, &[OPT_IN, (TAG_NODECLASS, "default")]),
            (NOT_OPTED_IN, &[]),
        ],
    )
    .await
    .unwrap();
    let team_b1_api = FakeKube::start().await.unwrap();
    team_b1_api.set_status_resolver(Some(ec2_status_resolver(harness.direct_ec2.clone())));
    lab::seed_cluster_api(&team_b1_api.handle(), &harness.aws.proxy().handle(), TEAM_B1, &second.subnets).unwrap();
    // team-b1's API under a context named like the cluster; the lab's
    // kubeconfig is first, so its context stays the current one.
    let kubeconfigs = tempfile::tempdir().unwrap();
    std::fs::write(kubeconfigs.path().join(TEAM_B1), team_b1_api.kubeconfig().replace("headroom-fake", TEAM_B1))
        .unwrap();
    Fleet { harness, second, team_b1_api, kubeconfigs }
}

impl Fleet {
    async fn context(&self, overrides: &[(&str, &str)]) -> Context {
        let mut settings = vec![
            ("CLUSTER_OPT_IN_TAG", "headroom.io/enabled=true"),
            ("VPC_OPT_IN_TAG", "headroom.io/enabled=true"),
            ("MAX_CONCURRENT_CLUSTERS", "2"),
        ];
        settings.extend_from_slice(overrides);
        let config = self.harness.config(&settings);
        let sdk = self.harness.aws.sdk_config_with_retry(lab::REGION, headroom::aws::clients::retry_config()).await;
        let paths =
            std::env::join_paths([self.harness.kubeconfig_path(), self.kubeconfigs.path().join(TEAM_B1)]).unwrap();
        let clusters = ClusterAccess::with_kubeconfig(&sdk, Some(paths.as_os_str()));
        Context::new(config, AwsClients::new(sdk), clusters)
    }

    async fn run(&self, ctx: &Context, event: Value, options: RunOptions) -> Report {
        let trigger = headroom::trigger::parse(&event).expect("valid event");
        headroom::handle(ctx, trigger, options).await.expect("handled")
    }

    async fn vpc_cidrs(&self, vpc_id: &str) -> Vec<String> {
        let out = self.harness.direct_ec2.describe_vpcs().vpc_ids(vpc_id).send().await.unwrap();
        out.vpcs()[0].cidr_block_association_set().iter().map(|a| a.cidr_block().unwrap().to_string()).collect()
    }
}

fn scheduled() -> Value {
    serde_json::from_str(include_str!("../../samplecli-events/scheduled.json")).unwrap()
}

fn outcomes(report: &Report) -> BTreeMap<String, Outcome> {
    report.clusters.iter().map(|c| (c.cluster.clone(), c.outcome)).collect()
}

fn pretty(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}

#[tokio::test]
async fn one_scheduled_check_covers_every_opted_in_cluster_and_one_failure_stops_none() {
    let fleet = fleet(true, &[(TAG_MIN_FREE_PREFIXES_PER_AZ, "8")]).await;
    // As the template deploys it: the first named cluster's alarms are the template's.
    let ctx = fleet
        .context(&[
            ("CAPACITY_ALARM_PREFIX", "headroom-org"),
            ("CAPACITY_ALARMS_IN_TEMPLATE", lab::CLUSTER),
            ("CAPACITY_ALARM_ACTION_ARN", ON_ALARM),
        ])
        .await;
    let report = fleet.run(&ctx, scheduled(), RunOptions { publish_metrics: true, ..RunOptions::default() }).await;

    // The listed cluster and the two tagged ones, in name order; the untagged one is not there.
    let outcomes = outcomes(&report);
    assert_eq!(
        outcomes,
        BTreeMap::from([
            (lab::CLUSTER.to_string(), Outcome::Applied),
            (TEAM_B1.to_string(), Outcome::NoOp),
            (TEAM_B2.to_string(), Outcome::Failed),
        ]),
        "{}",
        pretty(&report)
    );

    // The exhausted cluster got its space in its own VPC; VPC B is untouched.
    let demo = &report.clusters[0];
    assert_eq!(demo.vpc_id.as_deref(), Some(fleet.harness.lab.vpc_id.as_str()));
    assert!(fleet.vpc_cidrs(&fleet.harness.lab.vpc_id).await.iter().any(|c| c.starts_with("100.64.")));
    assert_eq!(fleet.vpc_cidrs(&fleet.second.vpc_id).await, vec!["10.0.0.0/16".to_string()]);

    // team-b1 was read through its own API server and judged by its own
    // tag-lowered threshold: its capacity is in the report, nothing written.
    let b1 = &report.clusters[1];
    assert_eq!(b1.vpc_id.as_deref(), Some(fleet.second.vpc_id.as_str()));
    assert_eq!(b1.capacity.len(), 3, "one entry per AZ: {}", pretty(&report));
    assert!(fleet.team_b1_api.requests().iter().any(|r| !r.is_write()), "team-b1's own API was read");
    assert!(fleet.team_b1_api.requests().iter().all(|r| !r.is_write()));

    // team-b2's bad override fails team-b2 alone, saying which tag to fix.
    let b2 = &report.clusters[2];
    let error = b2.error.as_ref().expect("an error");
    assert_eq!(error.kind, "ClusterTag");
    assert!(!error.retryable);
    assert!(error.message.contains(TAG_NODECLASS) && error.message.contains(TEAM_B2), "{}", error.message);

    // Each cluster it could read has its two capacity alarms, at its own
    // thresholds, but the first named, whose alarms the template declares.
    let alarms = ctx.aws.cloudwatch.describe_alarms().alarm_name_prefix("headroom-org").send().await.unwrap();
    let thresholds: BTreeMap<&str, f64> =
        alarms.metric_alarms().iter().map(|a| (a.alarm_name().unwrap(), a.threshold().unwrap())).collect();
    assert_eq!(
        thresholds,
        BTreeMap::from([
            ("headroom-org.team-b1-min-az-free-ip-addresses", 512.0),
            ("headroom-org.team-b1-min-az-free-prefixes", 8.0),
        ])
    );
    assert_eq!(
        demo.capacity_alarms.as_deref(),
        Some("declared by the template (CAPACITY_ALARMS_IN_TEMPLATE)"),
        "{}",
        pretty(&report)
    );
    let b1_alarm =
        alarms.metric_alarms().iter().find(|a| a.alarm_name() == Some("headroom-org.team-b1-min-az-free-prefixes"));
    assert_eq!(b1_alarm.unwrap().alarm_actions(), [ON_ALARM.to_string()]);
    assert!(b1.capacity_alarms.as_deref().unwrap_or_default().starts_with("created or updated"), "{}", pretty(&report));

    // A second run adds nothing anywhere, and leaves the alarms as they are.
    let again = fleet.run(&ctx, scheduled(), RunOptions { publish_metrics: true, ..RunOptions::default() }).await;
    assert_eq!(again.clusters[0].outcome, Outcome::NoOp, "{}", pretty(&again));
    assert_eq!(again.clusters.len(), 3);
    assert_eq!(again.clusters[1].capacity_alarms.as_deref(), Some("2 up to date"), "{}", pretty(&again));
}

#[tokio::test]
async fn a_named_cluster_must_be_listed_or_tagged_and_its_vpc_tagged() {
    // team-b1's /20s hold 4,091 free IPs per AZ: fine by the default 512,
    // short of the 5,000 its tag asks for.
    let fleet = fleet(false, &[(TAG_MIN_FREE_IPS_PER_AZ, "5000")]).await;
    let ctx = fleet.context(&[]).await;

    // Tagged: accepted, and judged by its own threshold (a dry run changes nothing).
    let b1 = fleet.run(&ctx, json!({"clusterName": TEAM_B1, "dryRun": true}), RunOptions::default()).await;
    assert_eq!(outcomes(&b1), BTreeMap::from([(TEAM_B1.to_string(), Outcome::Planned)]), "{}", pretty(&b1));
    let plan = b1.clusters[0].plan.as_ref().expect("a plan");
    assert_eq!(plan.starved_azs.len(), 3, "every AZ is below the cluster's own threshold");
    assert_eq!(plan.vpc_id, fleet.second.vpc_id);

    // Neither listed nor tagged: refused with both ways in.
    let stranger = fleet.run(&ctx, json!({"clusterName": NOT_OPTED_IN, "dryRun": false}), RunOptions::default()).await;
    let error = stranger.error.as_ref().expect("an error");
    assert_eq!(error.kind, "UnmanagedCluster", "{}", pretty(&stranger));
    assert!(error.message.contains("tag the cluster headroom.io/enabled=true"), "{}", error.message);
    assert!(stranger.clusters.is_empty());

    // A stack whose clusters have not opted in yet (a StackSet reaches
    // accounts first): the scheduled check is a quiet no-op, not a failure.
    let nobody = fleet.context(&[("CLUSTER_NAME", ""), ("CLUSTER_OPT_IN_TAG", "headroom.io/enabled=nobody")]).await;
    let quiet = fleet.run(&nobody, scheduled(), RunOptions { publish_metrics: true, ..RunOptions::default() }).await;
    assert_eq!(quiet.outcome, Outcome::NoOp, "{}", pretty(&quiet));
    assert!(quiet.error.is_none() && quiet.clusters.is_empty(), "{}", pretty(&quiet));
    assert!(quiet.reason.contains("no cluster is listed or tagged headroom.io/enabled=nobody"), "{}", quiet.reason);

    // The listed cluster's VPC lacks the tag the IAM policy needs: it fails
    // before any change, with the fix.
    let demo = fleet.run(&ctx, json!({"clusterName": lab::CLUSTER, "dryRun": false}), RunOptions::default()).await;
    let error = demo.clusters[0].error.as_ref().expect("an error");
    assert_eq!(error.kind, "VpcNotOptedIn", "{}", pretty(&demo));
    assert!(error.message.contains(&fleet.harness.lab.vpc_id), "{}", error.message);
    assert!(fleet.harness.aws.proxy().mutating_calls().is_empty(), "nothing was changed");
    assert_eq!(fleet.vpc_cidrs(&fleet.harness.lab.vpc_id).await, vec!["192.168.0.0/16".to_string()]);
}
