//! The lab's scenario against moto (through the fault proxy): what headroom
//! changes in AWS, and what it refuses to change.

use headroom::run::report::Outcome;
use headroom::{Report, RunOptions};
use headroom_testbed::harness::Harness;
use headroom_testbed::lab::{self, Exhaustion};
use serde_json::json;

async fn run(harness: &Harness, overrides: &[(&str, &str)], event: serde_json::Value, options: RunOptions) -> Report {
    let ctx = harness.context(harness.config(overrides)).await;
    let trigger = headroom::trigger::parse(&event).expect("valid event");
    headroom::handle(&ctx, trigger, options).await.expect("handled")
}

fn apply() -> serde_json::Value {
    json!({"clusterName": lab::CLUSTER, "dryRun": false})
}

fn mutating_calls(harness: &Harness) -> Vec<String> {
    harness.aws.proxy().mutating_calls().into_iter().map(|c| c.action).collect()
}

#[tokio::test]
async fn the_lab_is_remediated_end_to_end_and_a_second_run_is_a_no_op() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let report = run(&harness, &[], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    let cluster = &report.clusters[0];
    assert!(cluster.verification.as_ref().is_some_and(|v| v.ok), "{cluster:#?}");

    assert!(harness.vpc_cidr_states().await.contains("100.64.0.0/16=associated"));
    let expected: Vec<(String, String, Option<String>)> = lab::AZS
        .iter()
        .zip(["100.64.0.0/19", "100.64.32.0/19", "100.64.64.0/19"])
        .zip(&harness.lab.private_route_tables)
        .map(|((az, cidr), table)| (az.to_string(), cidr.to_string(), Some(table.clone())))
        .collect();
    assert_eq!(harness.managed_subnets().await, expected, "one subnet per AZ, each on its AZ's NAT route table");
    let mutating = mutating_calls(&harness);
    assert_eq!(mutating.iter().filter(|a| *a == "AssociateVpcCidrBlock").count(), 1, "{mutating:?}");

    harness.aws.proxy().reset_counters();
    let again = run(&harness, &[], apply(), RunOptions::default()).await;
    assert_eq!(again.outcome, Outcome::NoOp, "{again:#?}");
    assert!(mutating_calls(&harness).is_empty(), "{:?}", mutating_calls(&harness));
    assert_eq!(harness.managed_subnets().await.len(), 3);
}

/// moto on its own leaves `resourcesVpcConfig.vpcId` out of DescribeCluster:
/// the VPC is then found through a cluster subnet, at the cost of one call.
#[tokio::test]
async fn without_a_vpc_id_from_eks_the_vpc_is_found_through_the_cluster_subnets() {
    let reads = |harness: &Harness| harness.aws.proxy().calls().get("DescribeSubnets").copied().unwrap_or(0);
    let reported = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let report = run(&reported, &[], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");

    let omitted = Harness::start_with(Exhaustion::Fragmented, lab::ClusterVpc::Omitted).await.unwrap();
    let report = run(&omitted, &[], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    assert_eq!(report.clusters[0].vpc_id.as_deref(), Some(omitted.lab.vpc_id.as_str()));
    assert_eq!(omitted.managed_subnets().await.len(), 3);
    assert_eq!(reads(&omitted), reads(&reported) + 1, "one DescribeSubnets more to find the VPC");
}

#[tokio::test]
async fn a_vpc_with_five_cidrs_is_refused_without_any_change() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    lab::fill_vpc_cidr_quota(&harness.direct_ec2, &harness.lab.vpc_id).await.unwrap();
    let before = harness.vpc_cidr_states().await;
    harness.aws.proxy().reset_counters();
    let report = run(&harness, &[], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Refused, "{report:#?}");
    assert_eq!(report.clusters[0].refusal, Some(headroom::plan::RefusalCode::CidrQuota));
    assert!(report.reason.contains("quota"), "{}", report.reason);
    assert!(mutating_calls(&harness).is_empty());
    assert!(harness.kube.requests().iter().all(|r| !r.is_write()), "no Kubernetes write");
    assert_eq!(harness.vpc_cidr_states().await, before);
}

#[tokio::test]
async fn a_route_to_100_64_moves_the_new_cidr_to_the_next_slash_16() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let ec2 = &harness.direct_ec2;
    lab::route_through_new_peer(
        ec2,
        &harness.lab.vpc_id,
        &harness.lab.private_route_tables[0],
        "100.64.0.0/16",
        "100.64.0.0/16",
    )
    .await
    .unwrap();

    let report = run(&harness, &[], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    let cidrs = harness.vpc_cidr_states().await;
    assert!(cidrs.contains("100.65.0.0/16=associated"), "{cidrs:?}");
    assert!(!cidrs.iter().any(|c| c.starts_with("100.64.")), "{cidrs:?}");
    let subnets = harness.managed_subnets().await;
    assert_eq!(
        subnets.iter().map(|(_, cidr, _)| cidr.as_str()).collect::<Vec<_>>(),
        ["100.65.0.0/19", "100.65.32.0/19", "100.65.64.0/19"]
    );
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_returns_the_plan() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let before = harness.vpc_cidr_states().await;
    harness.aws.proxy().reset_counters();
    let report = run(&harness, &[], json!({"clusterName": lab::CLUSTER, "dryRun": true}), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Planned, "{report:#?}");
    assert!(report.dry_run);
    let plan = report.clusters[0].plan.as_ref().expect("the plan");
    assert_eq!(plan.steps.len(), 9, "CIDR, 3 subnets, 3 routes, NodeClass, NodePool: {plan}");
    assert!(report.clusters[0].changes.is_empty());
    assert!(mutating_calls(&harness).is_empty(), "{:?}", mutating_calls(&harness));
    assert!(harness.kube.requests().iter().all(|r| !r.is_write()));
    assert_eq!(harness.vpc_cidr_states().await, before);
    assert!(harness.managed_subnets().await.is_empty());

    // DRY_RUN in the environment does the same for events that don't say.
    let report =
        run(&harness, &[("DRY_RUN", "true")], json!({"clusterName": lab::CLUSTER}), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Planned);
    assert!(mutating_calls(&harness).is_empty());
}

#[tokio::test]
async fn throttling_a_third_of_the_calls_and_a_slow_association_still_converge() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    harness.aws.proxy().throttle_fraction(1.0 / 3.0, 7);
    harness.aws.proxy().associating_polls(3);
    let report = run(&harness, &[], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    let throttled = harness.aws.proxy().call_log().iter().filter(|c| c.injected.is_some()).count();
    assert!(throttled > 3, "the proxy throttled only {throttled} calls");
    let polls = harness.aws.proxy().call_count("DescribeVpcs");
    assert!(polls >= 4, "3 `associating` answers must be polled through, saw {polls} DescribeVpcs");

    harness.aws.proxy().reset_faults();
    assert_eq!(harness.managed_subnets().await.len(), 3);
    let cidrs = harness.vpc_cidr_states().await;
    assert_eq!(cidrs.iter().filter(|c| c.starts_with("100.64.0.0/16")).count(), 1, "{cidrs:?}");
}

#[tokio::test]
async fn the_capacity_check_publishes_metrics_that_read_back() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let report = run(
        &harness,
        &[("DRY_RUN", "true")],
        json!({"clusterName": lab::CLUSTER}),
        RunOptions { publish_metrics: true, ..RunOptions::default() },
    )
    .await;
    let published = report.clusters[0].metrics_published.expect("metrics were published");
    // 3 node subnets × 3 + 3 AZs × 3 + 2 cluster-wide.
    assert_eq!(published, 20);

    // moto answers CloudWatch's RPCv2-CBOR 404: read it through a proxy of
    // our own, which translates, without counting in the harness's proxy.
    let translator = headroom_testbed::FaultProxy::start(harness.aws.moto_endpoint()).await.unwrap();
    let config = headroom_testbed::sdk_config(translator.endpoint(), lab::REGION).await;
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&config);
    let metric = |name: &str, dims: &[(&str, &str)]| {
        aws_sdk_cloudwatch::types::Metric::builder()
            .namespace("Headroom")
            .metric_name(name)
            .set_dimensions(Some(
                dims.iter()
                    .map(|(k, v)| aws_sdk_cloudwatch::types::Dimension::builder().name(*k).value(*v).build())
                    .collect(),
            ))
            .build()
    };
    let query = |id: &str, m| {
        aws_sdk_cloudwatch::types::MetricDataQuery::builder()
            .id(id)
            .metric_stat(aws_sdk_cloudwatch::types::MetricStat::builder().metric(m).period(60).stat("Minimum").build())
            .build()
    };
    let now = std::time::SystemTime::now();
    let out = cloudwatch
        .get_metric_data()
        .metric_data_queries(query("minprefixes", metric("MinAzFreePrefixes", &[("ClusterName", lab::CLUSTER)])))
        .metric_data_queries(query(
            "azips",
            metric("FreeIpAddresses", &[("ClusterName", lab::CLUSTER), ("AvailabilityZone", "us-west-2b")]),
        ))
        .start_time((now - std::time::Duration::from_secs(600)).into())
        .end_time((now + std::time::Duration::from_secs(600)).into())
        .send()
        .await
        .unwrap();
    let value = |id: &str| {
        out.metric_data_results().iter().find(|r| r.id() == Some(id)).and_then(|r| r.values().first().copied())
    };
    assert_eq!(value("minprefixes"), Some(0.0), "the lab's AZs have no free /28: {out:?}");
    let az_ips = value("azips").expect("per-AZ free IPs");
    assert!(az_ips > 0.0 && az_ips < 512.0, "fragmented, not empty: {az_ips}");
}

fn allocation_failure_in(subnet_id: &str) -> serde_json::Value {
    let path =
        headroom_testbed::moto::workspace_root().join("samplecli-events/cloudtrail-insufficient-free-addresses.json");
    let mut event: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["detail"]["requestParameters"]["subnetId"] = json!(subnet_id);
    event
}

#[tokio::test]
async fn an_allocation_failure_acts_only_when_it_is_in_the_clusters_subnets() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    // The CloudTrail rule sees the whole account: a failure in another VPC is not ours.
    let other_vpc = harness.direct_ec2.create_vpc().cidr_block("10.9.0.0/16").send().await.unwrap();
    let other = harness
        .direct_ec2
        .create_subnet()
        .vpc_id(other_vpc.vpc().unwrap().vpc_id().unwrap())
        .cidr_block("10.9.0.0/24")
        .availability_zone("us-west-2a")
        .send()
        .await
        .unwrap();
    let report =
        run(&harness, &[], allocation_failure_in(other.subnet().unwrap().subnet_id().unwrap()), RunOptions::default())
            .await;
    assert_eq!(report.outcome, Outcome::NoOp, "{report:#?}");
    assert!(report.reason.contains("holds no node or pod"), "{}", report.reason);
    assert!(mutating_calls(&harness).is_empty());

    let report =
        run(&harness, &[], allocation_failure_in(&harness.lab.private_subnets[1]), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    // CloudTrail can deliver the same event twice: the second is a no-op.
    harness.aws.proxy().reset_counters();
    let again = run(&harness, &[], allocation_failure_in(&harness.lab.private_subnets[1]), RunOptions::default()).await;
    assert_eq!(again.outcome, Outcome::NoOp, "{again:#?}");
    assert!(mutating_calls(&harness).is_empty());
}

/// A transit gateway in moto, for routes to point at.
async fn transit_gateway(harness: &Harness) -> String {
    let tgw = harness.direct_ec2.create_transit_gateway().send().await.expect("CreateTransitGateway");
    tgw.transit_gateway().and_then(|t| t.transit_gateway_id()).expect("a transit gateway id").to_string()
}

async fn route_to(harness: &Harness, table: &str, destination: &str, tgw: &str) {
    harness
        .direct_ec2
        .create_route()
        .route_table_id(table)
        .destination_cidr_block(destination)
        .transit_gateway_id(tgw)
        .send()
        .await
        .expect("CreateRoute");
}

/// Hub and spoke: 100.64.0.0/10 goes to a transit gateway from every
/// private table. AWS accepts a /16 inside it (the local route wins), so the
/// VPC expands there, and the plan says which route it now shadows.
#[tokio::test]
async fn a_hub_route_over_100_64_slash_10_still_expands_and_the_plan_names_the_route_it_shadows() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let tgw = transit_gateway(&harness).await;
    for table in &harness.lab.private_route_tables {
        route_to(&harness, table, "100.64.0.0/10", &tgw).await;
    }
    let report = run(&harness, &[], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    assert!(harness.vpc_cidr_states().await.contains("100.64.0.0/16=associated"));
    let plan = report.clusters[0].plan.as_ref().expect("the plan");
    let warning = plan.warnings.first().expect("the shadowed route is named");
    assert!(warning.contains(&format!("the route to 100.64.0.0/10 through {tgw}")), "{warning}");
    assert_eq!(harness.managed_subnets().await.len(), 3);
}

/// A route equal to a /16 still rules that /16 out, covered or not: the
/// proxy refuses it as AWS does, and the planner never asks.
#[tokio::test]
async fn a_route_equal_to_a_slash_16_still_rules_it_out_under_a_hub_route() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let tgw = transit_gateway(&harness).await;
    let table = &harness.lab.private_route_tables[0];
    route_to(&harness, table, "100.64.0.0/10", &tgw).await;
    route_to(&harness, table, "100.64.0.0/16", &tgw).await;

    // AWS's exact rule, as the proxy enforces it for any caller.
    let proxied = aws_sdk_ec2::Client::new(&harness.aws.sdk_config(lab::REGION).await);
    let equal = proxied.associate_vpc_cidr_block().vpc_id(&harness.lab.vpc_id).cidr_block("100.64.0.0/16").send().await;
    let error = equal.expect_err("a block equal to a route destination is refused");
    assert_eq!(aws_sdk_ec2::error::ProvideErrorMetadata::code(&error), Some("InvalidVpc.Range"), "{error:?}");
    let larger =
        proxied.associate_vpc_cidr_block().vpc_id(&harness.lab.vpc_id).cidr_block("100.64.0.0/15").send().await;
    assert!(larger.is_err(), "a block larger than a route destination is refused");
    assert!(harness.vpc_cidr_states().await.iter().all(|c| !c.starts_with("100.")), "nothing was associated");

    let report = run(&harness, &[], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    let cidrs = harness.vpc_cidr_states().await;
    assert!(cidrs.contains("100.65.0.0/16=associated"), "{cidrs:?}");
    assert!(!cidrs.iter().any(|c| c.starts_with("100.64.")), "{cidrs:?}");
    let plan = report.clusters[0].plan.as_ref().expect("the plan");
    assert!(plan.warnings.iter().any(|n| n.contains(&tgw)), "{plan}");
}
