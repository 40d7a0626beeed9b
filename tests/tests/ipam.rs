//! VPC CIDRs from an IPAM pool (`IPAM_POOL_ID`), against moto through the
//! fault proxy, which emulates the pool (moto has no IPAM;
//! `tests/src/fault_proxy/ipam.rs`): the allocation end to end, the pools
//! refused before any call (another Region, ranges the VPC may not add,
//! missing allocation tags, an exhausted pool), a block IPAM hands out that
//! collides with a route, crashes between the steps, and two runs at once.

use headroom::plan::{RefusalCode, StepKind};
use headroom::run::report::Outcome;
use headroom::{Report, RunOptions};
use headroom_testbed::fake_kube::NODECLASSES;
use headroom_testbed::harness::Harness;
use headroom_testbed::lab::{self, Exhaustion};
use headroom_testbed::{Fault, IpamPoolSpec};
use serde_json::json;

const POOL: &str = "ipam-pool-0a1b2c3d4e5f60718";

fn with_pool() -> [(&'static str, &'static str); 1] {
    [("IPAM_POOL_ID", POOL)]
}

fn put_pool(harness: &Harness, cidrs: &[&str]) {
    harness.aws.proxy().put_ipam_pool(IpamPoolSpec::new(POOL, lab::REGION, cidrs));
}

async fn run(harness: &Harness, dry_run: bool) -> Report {
    let ctx = harness.context(harness.config(&with_pool())).await;
    let trigger = headroom::trigger::parse(&json!({"clusterName": lab::CLUSTER, "dryRun": dry_run})).expect("event");
    headroom::handle(&ctx, trigger, RunOptions::default()).await.expect("handled")
}

fn mutating_calls(harness: &Harness) -> Vec<String> {
    harness.aws.proxy().mutating_calls().into_iter().map(|c| c.action).collect()
}

fn kube_writes(harness: &Harness) -> usize {
    harness.kube.requests().iter().filter(|r| r.is_write()).count()
}

fn allocations(harness: &Harness) -> Vec<String> {
    harness.aws.proxy().ipam_allocations(POOL).into_iter().map(|(_, block)| block).collect()
}

/// The lab's subnets in `vpc_block`, one /19 per AZ on the AZ's NAT table.
fn expected_subnets(harness: &Harness, blocks: [&str; 3]) -> Vec<(String, String, Option<String>)> {
    lab::AZS
        .iter()
        .zip(blocks)
        .zip(&harness.lab.private_route_tables)
        .map(|((az, cidr), table)| (az.to_string(), cidr.to_string(), Some(table.clone())))
        .collect()
}

#[tokio::test]
async fn a_block_from_the_pool_gets_the_subnets_and_a_second_run_allocates_nothing() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    // Shared from the organisation's IPAM account through RAM, as is usual.
    let shared = IpamPoolSpec {
        owner_account: "111122223333".into(),
        ..IpamPoolSpec::new(POOL, lab::REGION, &["100.64.0.0/14"])
    };
    harness.aws.proxy().put_ipam_pool(shared);
    let proxy = harness.aws.proxy();

    // The dry run shows the allocation alone, and changes nothing.
    let dry = run(&harness, true).await;
    assert_eq!(dry.outcome, Outcome::Planned, "{dry:#?}");
    let plan = dry.clusters[0].plan.as_ref().expect("a plan");
    assert_eq!(plan.steps.iter().map(|s| s.kind()).collect::<Vec<_>>(), [StepKind::AllocateVpcCidrFromIpamPool]);
    assert!(plan.to_string().contains("IPAM chooses the block at apply time"), "{plan}");
    let preflight = dry.clusters[0].preflight.as_ref().expect("a preflight");
    assert!(
        preflight.checks.iter().any(|c| c.action == "ec2:AssociateVpcCidrBlock"
            && c.resource.contains(&format!("arn:aws:ec2::111122223333:ipam-pool/{POOL}"))),
        "{preflight:#?}"
    );
    assert!(preflight.checks.iter().any(|c| c.action == "ec2:DisassociateVpcCidrBlock"), "{preflight:#?}");
    assert!(mutating_calls(&harness).is_empty(), "{:?}", mutating_calls(&harness));
    assert_eq!(proxy.call_count("DescribeIpamPools"), 1);
    assert_eq!(proxy.call_count("GetIpamPoolCidrs"), 1);
    assert_eq!(proxy.call_count("GetIpamPoolAllocations"), 1);

    proxy.reset_counters();
    // The association takes a while, as in AWS: the run waits for it.
    proxy.associating_polls(2);
    let report = run(&harness, false).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    assert!(proxy.call_count("DescribeVpcs") >= 3, "the `associating` answers were polled through");
    let cluster = &report.clusters[0];
    assert!(cluster.verification.as_ref().is_some_and(|v| v.ok), "{cluster:#?}");
    assert_eq!(cluster.changes[0].step, StepKind::AllocateVpcCidrFromIpamPool, "{:#?}", cluster.changes);
    assert!(cluster.changes[0].detail.contains("100.64.0.0/16"), "{:#?}", cluster.changes[0]);
    let count = |kind| cluster.changes.iter().filter(|c| c.step == kind).count();
    assert_eq!((count(StepKind::CreateSubnet), count(StepKind::AssociateRouteTable)), (3, 3), "{:#?}", cluster.changes);
    let second = cluster.plan.as_ref().expect("the second plan");
    assert!(second.notes[0].contains("first plan"), "{second}");

    assert!(harness.vpc_cidr_states().await.contains("100.64.0.0/16=associated"));
    assert_eq!(
        harness.managed_subnets().await,
        expected_subnets(&harness, ["100.64.0.0/19", "100.64.32.0/19", "100.64.64.0/19"])
    );
    let nodeclass = harness.kube.get_object(NODECLASSES, "headroom").expect("NodeClass headroom");
    assert_eq!(
        nodeclass["spec"]["subnetSelectorTerms"],
        json!([{"tags": {"headroom.io/cluster": lab::CLUSTER}}]),
        "{nodeclass:#}"
    );
    assert_eq!(proxy.call_count("AssociateVpcCidrBlock"), 1);
    assert_eq!(allocations(&harness), ["100.64.0.0/16"]);

    proxy.reset_counters();
    let again = run(&harness, false).await;
    assert_eq!(again.outcome, Outcome::NoOp, "{again:#?}");
    assert!(mutating_calls(&harness).is_empty(), "{:?}", mutating_calls(&harness));
    assert_eq!(allocations(&harness), ["100.64.0.0/16"], "nothing more allocated");
}

#[tokio::test]
async fn a_pool_of_ranges_the_vpc_may_not_add_is_refused_before_any_call() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    // 10/8 and 172.16/12 are refused next to the lab's 192.168.0.0/16 primary.
    put_pool(&harness, &["10.0.0.0/14", "172.16.0.0/15"]);
    let before = harness.vpc_cidr_states().await;
    let report = run(&harness, false).await;
    assert_eq!(report.outcome, Outcome::Refused, "{report:#?}");
    assert_eq!(report.clusters[0].refusal, Some(RefusalCode::RestrictedRange));
    assert!(report.reason.contains(&format!("IPAM pool {POOL}")), "{}", report.reason);
    assert!(mutating_calls(&harness).is_empty(), "{:?}", mutating_calls(&harness));
    assert_eq!(kube_writes(&harness), 0);
    assert_eq!(harness.vpc_cidr_states().await, before);

    // A pool of another Region is refused the same way, naming why.
    harness.aws.proxy().put_ipam_pool(IpamPoolSpec::new(POOL, "eu-west-1", &["100.64.0.0/14"]));
    let report = run(&harness, false).await;
    assert_eq!(report.clusters[0].refusal, Some(RefusalCode::IpamPoolUnusable), "{report:#?}");
    assert!(report.reason.contains("locale eu-west-1"), "{}", report.reason);
    assert!(mutating_calls(&harness).is_empty());

    // Without IPAM_POOL_ID no IPAM call is made at all.
    harness.aws.proxy().reset_counters();
    let ctx = harness.context(harness.config(&[])).await;
    let trigger = headroom::trigger::parse(&json!({"clusterName": lab::CLUSTER, "dryRun": true})).unwrap();
    headroom::handle(&ctx, trigger, RunOptions::default()).await.unwrap();
    let calls = harness.aws.proxy().calls();
    assert!(!calls.contains_key("DescribeIpamPools") && !calls.contains_key("GetIpamPoolCidrs"), "{calls:?}");
}

#[tokio::test]
async fn an_exhausted_pool_is_refused_before_any_call_and_the_dry_run_names_the_next_block() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    put_pool(&harness, &["100.64.0.0/15"]);
    // Another VPC holds the pool's first /16: GetIpamPoolAllocations says so.
    harness.aws.proxy().reserve_ipam_block(POOL, "vpc-elsewhere", "100.64.0.0/16");
    let dry = run(&harness, true).await;
    assert_eq!(dry.outcome, Outcome::Planned, "{dry:#?}");
    let plan = dry.clusters[0].plan.as_ref().expect("a plan");
    assert!(
        plan.notes.iter().any(
            |n| n.contains(&format!("IPAM chooses the /16; the lowest free block of pool {POOL} is 100.65.0.0/16"))
        ),
        "{plan}"
    );
    assert_eq!(harness.aws.proxy().call_count("GetIpamPoolAllocations"), 1);

    // Every /16 allocated: refused in the plan, nothing asked of EC2.
    harness.aws.proxy().reserve_ipam_block(POOL, "vpc-elsewhere-too", "100.65.0.0/16");
    let before = harness.vpc_cidr_states().await;
    let report = run(&harness, false).await;
    assert_eq!(report.outcome, Outcome::Refused, "{report:#?}");
    assert_eq!(report.clusters[0].refusal, Some(RefusalCode::PoolExhausted));
    assert!(report.reason.contains("2 are allocated by the pool to other resources"), "{}", report.reason);
    assert!(report.reason.contains("provision more CIDRs to the IPAM pool"), "{}", report.reason);
    assert!(mutating_calls(&harness).is_empty(), "{:?}", mutating_calls(&harness));
    assert_eq!(kube_writes(&harness), 0);
    assert_eq!(harness.vpc_cidr_states().await, before);
}

#[tokio::test]
async fn a_vpc_without_the_pools_allocation_resource_tags_is_refused_before_any_call() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let tagged = IpamPoolSpec {
        allocation_resource_tags: vec![("cost-center".into(), "net-42".into())],
        ..IpamPoolSpec::new(POOL, lab::REGION, &["100.64.0.0/14"])
    };
    harness.aws.proxy().put_ipam_pool(tagged);
    let report = run(&harness, false).await;
    assert_eq!(report.outcome, Outcome::Refused, "{report:#?}");
    assert_eq!(report.clusters[0].refusal, Some(RefusalCode::IpamAllocationTagsMissing));
    assert!(report.reason.contains("cost-center=net-42"), "{}", report.reason);
    assert!(mutating_calls(&harness).is_empty(), "{:?}", mutating_calls(&harness));

    lab::tag_with(&harness.direct_ec2, &harness.lab.vpc_id, &[("cost-center", "net-42")]).await.unwrap();
    let report = run(&harness, false).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    assert_eq!(allocations(&harness), ["100.64.0.0/16"]);
}

/// The alarm, a CloudTrail failure and the schedule fire together: two runs
/// read the VPC, then each allocates (the proxy holds the first call until
/// the second arrives, so both read before either allocates). One block is
/// left, and the run whose block lost says so.
#[tokio::test]
async fn two_runs_at_once_keep_one_block_from_the_pool() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    put_pool(&harness, &["100.64.0.0/14"]);
    let proxy = harness.aws.proxy();
    proxy.hold_until_arrived("AssociateVpcCidrBlock", 2);
    let (first, second) = tokio::join!(run(&harness, false), run(&harness, false));
    assert_eq!(proxy.call_count("AssociateVpcCidrBlock"), 2, "both runs allocated");
    for report in [&first, &second] {
        assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    }
    let gave_back: Vec<&headroom::run::report::ClusterReport> = [&first, &second]
        .into_iter()
        .map(|r| &r.clusters[0])
        .filter(|c| c.changes.iter().any(|ch| ch.step == StepKind::DisassociateVpcCidr))
        .collect();
    assert_eq!(gave_back.len(), 1, "exactly one run gives its block back: {first:#?} {second:#?}");
    let loser = gave_back[0];
    let undo = loser.changes.iter().find(|c| c.step == StepKind::DisassociateVpcCidr).unwrap();
    assert_eq!(undo.resource, loser.changes[0].resource, "only its own association");
    assert!(undo.detail.contains("100.64.0.0/16") && undo.detail.contains("is lower"), "{undo:?}");
    assert!(
        loser.changes.iter().any(|c| c.already_present && c.detail.contains("100.64.0.0/16 adopted")),
        "{:#?}",
        loser.changes
    );

    let cidrs = harness.vpc_cidr_states().await;
    assert!(cidrs.contains("100.64.0.0/16=associated"), "{cidrs:?}");
    assert!(!cidrs.iter().any(|c| c.starts_with("100.65.") && c.ends_with("=associated")), "{cidrs:?}");
    assert_eq!(allocations(&harness), ["100.64.0.0/16"], "one block from the pool");
    assert_eq!(
        harness.managed_subnets().await,
        expected_subnets(&harness, ["100.64.0.0/19", "100.64.32.0/19", "100.64.64.0/19"])
    );
}

/// A run that dies before it gives a colliding block back leaves it
/// associated: the next run gives it back, never adopts it, then expands
/// elsewhere once the range is kept out of the pool.
#[tokio::test]
async fn a_colliding_block_left_by_a_crash_is_given_back_not_adopted() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let ec2 = &harness.direct_ec2;
    lab::route_through_new_peer(
        ec2,
        &harness.lab.vpc_id,
        &harness.lab.private_route_tables[1],
        "100.64.0.0/16",
        "100.64.0.0/16",
    )
    .await
    .unwrap();
    put_pool(&harness, &["100.64.0.0/14"]);
    let proxy = harness.aws.proxy();
    proxy.prefer_ipam_block(POOL, "100.64.0.0/16");
    // The association lands; the process dies on the way to giving it back.
    proxy.crash_at_nth_mutating(2, Fault::DropBeforeForward);
    let crashed = run(&harness, false).await;
    assert_eq!(crashed.outcome, Outcome::Failed, "{crashed:#?}");
    assert!(proxy.has_crashed());
    assert!(harness.vpc_cidr_states().await.contains("100.64.0.0/16=associated"));
    let left = crashed.clusters[0].changes[0].resource.clone();

    proxy.reset_faults();
    proxy.reset_counters();
    // The operator keeps the range out of the pool, as the refusal advises.
    proxy.reserve_ipam_block(POOL, "custom-allocation", "100.64.0.0/16");
    let report = run(&harness, false).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    let changes = &report.clusters[0].changes;
    assert_eq!(changes[0].step, StepKind::DisassociateVpcCidr, "{changes:#?}");
    assert_eq!(changes[0].resource, left, "the block the crashed run left");
    assert_eq!(changes[1].step, StepKind::AllocateVpcCidrFromIpamPool, "{changes:#?}");
    let cidrs = harness.vpc_cidr_states().await;
    assert!(!cidrs.iter().any(|c| c.starts_with("100.64.") && c.ends_with("=associated")), "{cidrs:?}");
    assert!(cidrs.contains("100.65.0.0/16=associated"), "{cidrs:?}");
    assert_eq!(
        harness.managed_subnets().await,
        expected_subnets(&harness, ["100.65.0.0/19", "100.65.32.0/19", "100.65.64.0/19"])
    );
}

#[tokio::test]
async fn a_block_that_collides_with_a_route_is_disassociated_and_refused() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    let ec2 = &harness.direct_ec2;
    // A peer VPC in 100.64.0.0/16, routed to from one private table.
    let pcx_id = lab::route_through_new_peer(
        ec2,
        &harness.lab.vpc_id,
        &harness.lab.private_route_tables[1],
        "100.64.0.0/16",
        "100.64.0.0/16",
    )
    .await
    .unwrap();
    // The planner would pick 100.65.0.0/16; IPAM, which knows no routes, hands out 100.64.0.0/16.
    put_pool(&harness, &["100.64.0.0/14"]);
    harness.aws.proxy().prefer_ipam_block(POOL, "100.64.0.0/16");

    let report = run(&harness, false).await;
    assert_eq!(report.outcome, Outcome::Refused, "{report:#?}");
    let cluster = &report.clusters[0];
    assert_eq!(cluster.refusal, Some(RefusalCode::IpamBlockConflicts));
    assert!(report.reason.contains("100.64.0.0/16") && report.reason.contains(&pcx_id), "{}", report.reason);
    let kinds: Vec<StepKind> = cluster.changes.iter().map(|c| c.step).collect();
    assert_eq!(kinds, [StepKind::AllocateVpcCidrFromIpamPool, StepKind::DisassociateVpcCidr], "{:#?}", cluster.changes);
    assert_eq!(cluster.changes[0].resource, cluster.changes[1].resource, "only the association this run made");
    assert_eq!(mutating_calls(&harness), ["AssociateVpcCidrBlock", "DisassociateVpcCidrBlock"]);
    let cidrs = harness.vpc_cidr_states().await;
    assert!(cidrs.contains("100.64.0.0/16=disassociated"), "{cidrs:?}");
    assert!(!cidrs.iter().any(|c| c.ends_with("=associated") && !c.starts_with("192.168.")), "{cidrs:?}");
    assert!(harness.managed_subnets().await.is_empty());
    assert_eq!(kube_writes(&harness), 0);
    assert!(allocations(&harness).is_empty(), "the allocation was released with the association");
}

#[tokio::test]
async fn after_a_crash_the_association_from_the_pool_is_reused_not_allocated_again() {
    let harness = Harness::start(Exhaustion::Fragmented).await.unwrap();
    put_pool(&harness, &["100.64.0.0/14"]);
    let proxy = harness.aws.proxy();
    // The association lands, its answer is lost, and the process dies.
    proxy.crash_at_nth_mutating(1, Fault::DropAfterForward);
    let crashed = run(&harness, false).await;
    assert_eq!(crashed.outcome, Outcome::Failed, "{crashed:#?}");
    assert!(proxy.has_crashed());
    assert!(harness.vpc_cidr_states().await.contains("100.64.0.0/16=associated"));
    assert_eq!(allocations(&harness), ["100.64.0.0/16"]);

    proxy.reset_faults();
    proxy.reset_counters();
    let report = run(&harness, false).await;
    assert_eq!(report.outcome, Outcome::Applied, "{report:#?}");
    assert_eq!(proxy.call_count("AssociateVpcCidrBlock"), 0, "the pool's block is already associated");
    let plan = report.clusters[0].plan.as_ref().unwrap();
    assert!(plan.ipam_allocation().is_none(), "{plan}");
    assert_eq!(
        harness.managed_subnets().await,
        expected_subnets(&harness, ["100.64.0.0/19", "100.64.32.0/19", "100.64.64.0/19"])
    );
    assert_eq!(allocations(&harness), ["100.64.0.0/16"], "one allocation, ever");
}
