//! Capacity that real nodes can use, against moto (through the fault proxy)
//! and the fake API server: NodePool wiring, the subnets NodeClasses really
//! select, reservation types, eventual consistency, peering, pagination and
//! custom node roles (docs/aws-rules.md states each rule).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use headroom::plan::{RefusalCode, StepKind};
use headroom::run::report::Outcome;
use headroom::{Report, RunOptions};
use headroom_testbed::Fault;
use headroom_testbed::fake_kube::{NODECLASSES, NODEPOOLS};
use headroom_testbed::harness::Harness;
use headroom_testbed::lab::{self, Exhaustion};
use serde_json::{Value, json};

async fn run(harness: &Harness, overrides: &[(&str, &str)], event: Value, options: RunOptions) -> Report {
    let ctx = harness.context(harness.config(overrides)).await;
    let trigger = headroom::trigger::parse(&event).expect("valid event");
    headroom::handle(&ctx, trigger, options).await.expect("handled")
}

fn apply() -> Value {
    json!({"clusterName": lab::CLUSTER, "dryRun": false})
}

fn describe(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}

fn mutating_calls(harness: &Harness) -> Vec<String> {
    harness.aws.proxy().mutating_calls().into_iter().map(|c| c.action).collect()
}

fn kube_writes(harness: &Harness) -> usize {
    harness.kube.requests().iter().filter(|r| r.is_write()).count()
}

async fn vpc_cidrs(harness: &Harness) -> BTreeSet<String> {
    let out = harness.direct_ec2.describe_vpcs().vpc_ids(&harness.lab.vpc_id).send().await.unwrap();
    out.vpcs()[0].cidr_block_association_set().iter().map(|a| a.cidr_block().unwrap().to_string()).collect()
}

async fn managed_subnet_ids(harness: &Harness) -> Vec<String> {
    lab::subnets_tagged(&harness.direct_ec2, &harness.lab.vpc_id, "headroom.io/cluster", lab::CLUSTER)
        .await
        .unwrap()
        .iter()
        .map(|s| s.subnet_id().unwrap().to_string())
        .collect()
}

fn refusal_of(report: &Report) -> Option<RefusalCode> {
    report.clusters.first().and_then(|c| c.refusal)
}

#[tokio::test]
async fn out_of_the_box_a_nodepool_launches_into_the_new_subnets() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let report = run(&harness, &[], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{}", describe(&report));

    // The NodePool headroom created launches from the NodeClass that selects the new subnets.
    let pool = harness.kube.get_object(NODEPOOLS, "headroom").expect("a NodePool");
    assert_eq!(pool["spec"]["template"]["spec"]["nodeClassRef"]["name"], "headroom");
    let ids: BTreeSet<String> = managed_subnet_ids(&harness).await.into_iter().collect();
    let class = harness
        .kube
        .wait_for(NODECLASSES, "headroom", std::time::Duration::from_secs(5), |o| o["status"]["subnets"].is_array())
        .await
        .expect("the NodeClass status resolves");
    let listed: BTreeSet<String> =
        headroom::nodeclass::status_subnets(&class).unwrap_or_default().into_iter().map(String::from).collect();
    assert_eq!(listed, ids, "Auto Mode resolves the NodeClass to exactly the new subnets");
    // The built-in NodePools and NodeClass are untouched.
    for name in lab::BUILT_IN_NODEPOOLS {
        assert_eq!(harness.kube.writes_to(NODEPOOLS, name), 0, "{name}");
    }
    assert_eq!(harness.kube.writes_to(NODECLASSES, "default"), 0);

    // So the capacity counts them, and the next run has nothing to do.
    harness.aws.proxy().reset_counters();
    let again = run(&harness, &[], apply(), RunOptions::default()).await;
    assert_eq!(again.outcome, Outcome::NoOp, "{}", describe(&again));
    let capacity = &again.clusters[0].capacity;
    assert!(capacity.values().all(|az| az.free_prefixes >= 510), "{capacity:?}");
    assert!(mutating_calls(&harness).is_empty());
}

#[tokio::test]
async fn without_a_nodepool_for_the_nodeclass_nothing_changes_and_the_reason_says_what_to_set() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    harness.aws.proxy().reset_counters();
    let report = run(&harness, &[("CREATE_NODEPOOL", "false")], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Refused, "{}", describe(&report));
    assert_eq!(refusal_of(&report), Some(RefusalCode::NoNodePool));
    assert!(
        report.reason.contains("NodeClass headroom") && report.reason.contains("CREATE_NODEPOOL"),
        "{}",
        report.reason
    );
    assert!(mutating_calls(&harness).is_empty(), "{:?}", mutating_calls(&harness));
    assert_eq!(kube_writes(&harness), 0);
    assert_eq!(vpc_cidrs(&harness).await, BTreeSet::from(["192.168.0.0/16".to_string()]));

    // A NodePool of the platform team's that launches from the NodeClass is enough.
    harness
        .kube
        .put_object(
            NODEPOOLS,
            json!({
                "metadata": {"name": "platform"},
                "spec": {"template": {"spec": {"nodeClassRef": {"group": "eks.amazonaws.com", "kind": "NodeClass", "name": "headroom"}}}}
            }),
        )
        .unwrap();
    let report = run(&harness, &[("CREATE_NODEPOOL", "false")], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{}", describe(&report));
    assert!(harness.kube.get_object(NODEPOOLS, "headroom").is_none(), "no NodePool of headroom's own");
}

/// The control plane's subnets are not where the nodes run: capacity is
/// read from the `status.subnets` of the NodeClass the NodePools use.
#[tokio::test]
async fn capacity_is_judged_on_the_subnets_the_nodeclasses_select() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    // Nodes run in the (roomy) public subnets; the exhausted private ones
    // hold only the control plane's ENIs.
    let mut default = harness.kube.get_object(NODECLASSES, "default").unwrap();
    default["spec"]["subnetSelectorTerms"] =
        json!(harness.lab.public_subnets.iter().map(|id| json!({"id": id})).collect::<Vec<_>>());
    default.as_object_mut().unwrap().remove("status");
    harness.kube.put_object(NODECLASSES, default).unwrap();
    harness.kube.wait_for(NODECLASSES, "default", std::time::Duration::from_secs(5), |o| o["status"].is_object()).await;

    let report = run(&harness, &[], apply(), RunOptions { publish_metrics: true, ..RunOptions::default() }).await;
    assert_eq!(report.outcome, Outcome::NoOp, "{}", describe(&report));
    let cluster = &report.clusters[0];
    let counted: BTreeSet<&String> = cluster.capacity.values().flat_map(|az| &az.subnet_ids).collect();
    assert_eq!(counted, harness.lab.public_subnets.iter().collect(), "{}", describe(&report));
    assert_eq!(
        cluster.capacity_basis.as_ref().map(|b| serde_json::to_value(b).unwrap()["source"].clone()),
        Some(json!("node-classes"))
    );
    // The metrics carry the same subnets (3 subnets × 3 + 3 AZs × 3 + 2).
    assert_eq!(cluster.metrics_published, Some(20));
    assert!(mutating_calls(&harness).iter().all(|a| a == "PutMetricData"), "{:?}", mutating_calls(&harness));
}

#[tokio::test]
async fn prefix_capacity_in_an_empty_prefix_reservation_needs_nothing() {
    let harness = Harness::start(Exhaustion::PrefixReserved).await.unwrap();
    harness.aws.proxy().reset_counters();
    let scheduled: Value = serde_json::from_str(
        &std::fs::read_to_string(headroom_testbed::moto::workspace_root().join("samplecli-events/scheduled.json"))
            .unwrap(),
    )
    .unwrap();
    let report = run(&harness, &[], scheduled, RunOptions { publish_metrics: true, ..RunOptions::default() }).await;
    assert_eq!(report.outcome, Outcome::NoOp, "{}", describe(&report));
    for (az, capacity) in &report.clusters[0].capacity {
        // 1,023 single IPs in the fragmented /21; 32 prefixes, all inside the /23 prefix reservation.
        assert_eq!((capacity.free_ips, capacity.free_prefixes), (1023, 32), "{az}: {capacity:?}");
        assert_eq!(capacity.prefix_reserved_free_ips, 512, "{az}");
    }
    assert!(mutating_calls(&harness).iter().all(|a| a == "PutMetricData"), "{:?}", mutating_calls(&harness));
    assert_eq!(kube_writes(&harness), 0);
}

#[tokio::test]
async fn a_new_subnet_ec2_does_not_know_yet_is_waited_for_in_the_same_run() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let proxy = harness.aws.proxy();
    // EC2's eventual consistency: the first three AssociateRouteTable calls
    // do not know the subnet CreateSubnet just returned.
    for _ in 0..3 {
        proxy.fail_nth("AssociateRouteTable", 1, Fault::Reject { status: 400, code: "InvalidSubnetID.NotFound" });
    }
    let report = run(&harness, &[], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{}", describe(&report));
    let rejected = proxy.call_log().iter().filter(|c| matches!(c.injected, Some(Fault::Reject { .. }))).count();
    assert_eq!(rejected, 3);
    assert!(report.clusters[0].verification.as_ref().is_some_and(|v| v.ok));
    let routed = report.clusters[0].changes.iter().filter(|c| c.step == StepKind::AssociateRouteTable).count();
    assert_eq!(routed, 3, "every new subnet routed in this one invocation");
}

#[tokio::test]
async fn an_accepted_peering_to_100_64_moves_the_new_cidr_without_any_route() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let ec2 = &harness.direct_ec2;
    let peer = ec2.create_vpc().cidr_block("100.64.0.0/16").send().await.unwrap();
    let peer_id = peer.vpc().unwrap().vpc_id().unwrap();
    let pcx =
        ec2.create_vpc_peering_connection().vpc_id(peer_id).peer_vpc_id(&harness.lab.vpc_id).send().await.unwrap();
    let pcx_id = pcx.vpc_peering_connection().unwrap().vpc_peering_connection_id().unwrap();
    ec2.accept_vpc_peering_connection().vpc_peering_connection_id(pcx_id).send().await.unwrap();

    let report = run(&harness, &[], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{}", describe(&report));
    let cidrs = vpc_cidrs(&harness).await;
    assert!(cidrs.contains("100.65.0.0/16"), "{cidrs:?}");
    assert!(!cidrs.contains("100.64.0.0/16"), "the peer's block stays out: {cidrs:?}");
}

/// Every list is read to its last page: the proxy pages EC2's lists by 7
/// items and the API server its lists by 1, and 1,000 ENIs sit in one subnet.
#[tokio::test]
async fn every_list_is_read_to_its_last_page() {
    let harness = Harness::start(Exhaustion::None).await.unwrap();
    let subnet = &harness.lab.private_subnets[0];
    let ec2 = &harness.direct_ec2;
    // 1,000 ENIs with one known address each, from 192.168.100.0 on (moto's
    // own random picks can repeat).
    let base = u32::from(Ipv4Addr::new(192, 168, 100, 0));
    for chunk in (0..1000u32).collect::<Vec<_>>().chunks(50) {
        let creates = chunk.iter().map(|i| {
            ec2.create_network_interface()
                .subnet_id(subnet)
                .private_ip_address(Ipv4Addr::from(base + i).to_string())
                .send()
        });
        for created in futures::future::join_all(creates).await {
            created.expect("CreateNetworkInterface");
        }
    }
    let unpaged = run(&harness, &[], json!({"clusterName": lab::CLUSTER, "dryRun": true}), RunOptions::default()).await;

    harness.aws.proxy().set_page_size(Some(7));
    harness.kube.set_max_list_page(Some(1));
    harness.aws.proxy().reset_counters();
    harness.kube.clear_requests();
    let paged = run(&harness, &[], json!({"clusterName": lab::CLUSTER, "dryRun": true}), RunOptions::default()).await;
    assert_eq!(paged.clusters[0].capacity, unpaged.clusters[0].capacity, "{}", describe(&paged));
    let az = &paged.clusters[0].capacity["us-west-2a"];
    assert_eq!(az.free_ips, 8192 - 5 - 1000, "{az:?}");
    // 1,000 ENIs in pages of 7 (plus the VPC's others), and more than one page of NodePools.
    assert!(harness.aws.proxy().call_count("DescribeNetworkInterfaces") >= 143);
    // (A manual dry run also proves a NodePool create, with dryRun=All: not a page.)
    let pool_pages =
        harness.kube.requests().iter().filter(|r| r.plural.as_deref() == Some(NODEPOOLS) && r.method == "GET").count();
    assert_eq!(pool_pages, lab::BUILT_IN_NODEPOOLS.len(), "one request per NodePool");
    // The same plan either way.
    assert_eq!(paged.clusters[0].plan, unpaged.clusters[0].plan);
}

#[tokio::test]
async fn a_custom_node_role_needs_an_ec2_access_entry() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    harness
        .kube
        .put_object(
            NODECLASSES,
            json!({
                "metadata": {"name": "headroom"},
                "spec": {
                    "role": "PlatformNodeRole",
                    "subnetSelectorTerms": [{"id": harness.lab.private_subnets[0]}],
                    "securityGroupSelectorTerms": [{"id": harness.lab.cluster_security_group}]
                }
            }),
        )
        .unwrap();
    harness.aws.proxy().reset_counters();
    let report = run(&harness, &[], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Refused, "{}", describe(&report));
    assert_eq!(refusal_of(&report), Some(RefusalCode::NodeRoleNotAuthorized));
    assert!(report.reason.contains("PlatformNodeRole") && report.reason.contains("--type EC2"), "{}", report.reason);
    assert!(mutating_calls(&harness).is_empty());
    assert_eq!(kube_writes(&harness), 0);
    assert_eq!(harness.aws.proxy().call_count("ListAccessEntries"), 1);

    harness.aws.proxy().put_access_entry(lab::CLUSTER, "arn:aws:iam::123456789012:role/PlatformNodeRole", "EC2");
    let report = run(&harness, &[], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{}", describe(&report));

    // With the cluster's own node role, no access entry is read at all.
    let plain = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let report = run(&plain, &[], apply(), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{}", describe(&report));
    assert_eq!(plain.aws.proxy().call_count("ListAccessEntries"), 0);
}

/// The fake API server's and moto's view agree with what the report says
/// was counted: the lab's private subnets are ENI-free but reserved.
#[tokio::test]
async fn exhaustion_is_read_from_explicit_reservations() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let reservations = harness
        .direct_ec2
        .get_subnet_cidr_reservations()
        .subnet_id(&harness.lab.private_subnets[0])
        .send()
        .await
        .unwrap();
    let kinds: BTreeSet<String> = reservations
        .subnet_ipv4_cidr_reservations()
        .iter()
        .map(|r| r.reservation_type().unwrap().as_str().to_string())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["explicit".to_string()]), "the lab exhausts with explicit reservations");
    let report = run(&harness, &[], json!({"clusterName": lab::CLUSTER, "dryRun": true}), RunOptions::default()).await;
    let az = &report.clusters[0].capacity["us-west-2a"];
    assert_eq!((az.free_ips, az.free_prefixes, az.prefix_reserved_free_ips), (255, 0, 0), "{az:?}");
}
