//! Capacity analysis at scale: the pure work of one invocation on a big VPC.
//!
//!     cargo bench -p headroom-core --bench capacity
//!
//! - `subnet_capacity/1000_subnets_50k_used`: `capacity::subnet_capacity`
//!   for 1,000 /24 subnets holding 50,000 used addresses between them:
//!   20,000 ENI private IPs, 1,250 ENI /28 prefixes (20,000 addresses) and
//!   625 /28 explicit subnet CIDR reservations (10,000 addresses), placed by a seeded
//!   PRNG (overlaps happen, as in a real inventory);
//! - `plan/1000_subnets`: `planner::plan` on a snapshot of those 1,000
//!   subnets, all of them the cluster's and listed in the `status.subnets`
//!   of the NodeClass the NodePool uses, in three AZs, each explicitly
//!   associated with its AZ's NAT route table, every AZ below the thresholds:
//!   the planner finds the node subnets and their tables, sums capacity per
//!   AZ, searches the pool for a new CIDR and places three subnets;
//! - `plan_with_capacity/1000_subnets_50k_used`: both, as an invocation
//!   does them (capacity for every subnet, then the plan).
//!
//! The bench profile is the release profile (opt-level "s") with thin LTO
//! and 16 codegen units (the Lambda binaries use fat LTO and one), so it
//! builds in minutes.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, criterion_group, criterion_main};
use headroom_core::capacity::{self, AddressUsage, Reservation};
use headroom_core::config::{Config, Thresholds};
use headroom_core::model::{
    AutoModeObjects, CidrAssociation, CidrState, Cluster, ClusterApi, NetworkSnapshot, Route, RouteTable, Subnet, Vpc,
};
use headroom_core::plan::{Decision, StepKind};
use headroom_core::planner::{self, Demand};
use headroom_core::rng::SplitMix64;
use ipnet::Ipv4Net;
use serde_json::json;

const SUBNETS: usize = 1_000;
const ENI_IPS: usize = 20_000;
const ENI_PREFIXES: usize = 1_250;
const RESERVATIONS: usize = 625;
const AZS: [&str; 3] = ["us-west-2a", "us-west-2b", "us-west-2c"];

/// The i-th /24 of 10.0.0.0/14 (four /16 VPC CIDRs).
fn subnet_cidr(i: usize) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::from(0x0A00_0000u32 + ((i as u32) << 8)), 24).expect("valid")
}

/// Occupants of every subnet: 50,000 addresses in all.
fn usage() -> Vec<(Ipv4Net, AddressUsage)> {
    let mut rng = SplitMix64::seeded(0x00C0_FFEE);
    let mut usage: Vec<(Ipv4Net, AddressUsage)> =
        (0..SUBNETS).map(|i| (subnet_cidr(i), AddressUsage::default())).collect();
    let base = |cidr: &Ipv4Net| u32::from(cidr.network());
    for _ in 0..ENI_IPS {
        let (cidr, u) = &mut usage[rng.below(SUBNETS as u64) as usize];
        // Never the 4 reserved addresses at the start nor the last one.
        let offset = 4 + rng.below(251) as u32;
        u.private_ips.push(Ipv4Addr::from(base(cidr) + offset));
    }
    for _ in 0..ENI_PREFIXES {
        let (cidr, u) = &mut usage[rng.below(SUBNETS as u64) as usize];
        let block = 1 + rng.below(14) as u32; // an aligned /28 clear of the reserved ones
        u.prefixes.push(Ipv4Net::new(Ipv4Addr::from(base(cidr) + block * 16), 28).expect("valid"));
    }
    for _ in 0..RESERVATIONS {
        let (cidr, u) = &mut usage[rng.below(SUBNETS as u64) as usize];
        let block = 1 + rng.below(14) as u32;
        u.reservations
            .push(Reservation::explicit(Ipv4Net::new(Ipv4Addr::from(base(cidr) + block * 16), 28).expect("valid")));
    }
    let occupied: usize =
        usage.iter().map(|(_, u)| u.private_ips.len() + 16 * (u.prefixes.len() + u.reservations.len())).sum();
    assert_eq!(occupied, 50_000);
    usage
}

fn capacities(usage: &[(Ipv4Net, AddressUsage)]) -> Vec<capacity::SubnetCapacity> {
    usage.iter().map(|(cidr, u)| capacity::subnet_capacity(*cidr, u)).collect()
}

fn snapshot(usage: &[(Ipv4Net, AddressUsage)]) -> NetworkSnapshot {
    let subnets: Vec<Subnet> = usage
        .iter()
        .zip(capacities(usage))
        .enumerate()
        .map(|(i, ((cidr, _), capacity))| Subnet {
            id: format!("subnet-{i:017x}"),
            availability_zone: AZS[i % 3].to_string(),
            availability_zone_id: None,
            cidr: *cidr,
            tags: BTreeMap::from([("Name".to_string(), format!("node-{i}"))]),
            capacity,
        })
        .collect();
    let mut route_tables = vec![RouteTable {
        id: "rtb-main".into(),
        is_main: true,
        routes: vec![Route { destination: Some("10.0.0.0/14".parse().expect("valid")), target: "local".into() }],
        subnet_ids: Vec::new(),
    }];
    for (a, az) in AZS.iter().enumerate() {
        route_tables.push(RouteTable {
            id: format!("rtb-private-{az}"),
            is_main: false,
            routes: vec![
                Route { destination: Some("10.0.0.0/14".parse().expect("valid")), target: "local".into() },
                Route { destination: Some("0.0.0.0/0".parse().expect("valid")), target: format!("nat-{a}") },
            ],
            subnet_ids: subnets.iter().filter(|s| &s.availability_zone == az).map(|s| s.id.clone()).collect(),
        });
    }
    let cidr_associations = (0..4)
        .map(|n| CidrAssociation {
            association_id: format!("vpc-cidr-assoc-{n}"),
            cidr: Ipv4Net::new(Ipv4Addr::new(10, n, 0, 0), 16).expect("valid"),
            state: CidrState::Associated,
            status_message: None,
        })
        .collect();
    let status_subnets: Vec<serde_json::Value> =
        subnets.iter().map(|s| json!({"id": s.id, "zone": s.availability_zone})).collect();
    NetworkSnapshot {
        region: "us-west-2".into(),
        cluster: Cluster {
            name: "big-cluster".into(),
            subnet_ids: subnets.iter().map(|s| s.id.clone()).collect(),
            security_group_ids: Vec::new(),
            cluster_security_group_id: Some("sg-cluster".into()),
            node_role_arn: Some("arn:aws:iam::123456789012:role/AmazonEKSAutoNodeRole".into()),
        },
        vpc: Vpc {
            id: "vpc-big".into(),
            primary_cidr: "10.0.0.0/16".parse().expect("valid"),
            cidr_associations,
            tags: Default::default(),
        },
        subnets,
        route_tables,
        peerings: Vec::new(),
        allow_rules: Vec::new(),
        cluster_api: ClusterApi::Read(AutoModeObjects {
            nodeclasses: vec![json!({
                "apiVersion": "eks.amazonaws.com/v1",
                "kind": "NodeClass",
                "metadata": {"name": "default", "resourceVersion": "1"},
                "spec": {
                    "role": "AmazonEKSAutoNodeRole",
                    "subnetSelectorTerms": [{"tags": {"kubernetes.io/role/internal-elb": "1"}}],
                    "securityGroupSelectorTerms": [{"id": "sg-cluster"}]
                },
                // Auto Mode resolved the selector to every node subnet.
                "status": {"subnets": status_subnets}
            })],
            nodepools: vec![json!({
                "apiVersion": "karpenter.sh/v1",
                "kind": "NodePool",
                "metadata": {"name": "general-purpose"},
                "spec": {"template": {"spec": {"nodeClassRef": {"group": "eks.amazonaws.com", "kind": "NodeClass", "name": "default"}}}}
            })],
        }),
        node_role_access_entries: None,
        ipam_pool: None,
    }
}

fn config() -> Config {
    let defaults = Config::default();
    // Every AZ holds ~333 subnets with ~68,000 free IPs: demand enough
    // headroom that the planner has to expand.
    let thresholds = Thresholds { min_free_ips_per_az: 1_000_000, ..defaults.thresholds };
    Config { clusters: vec!["big-cluster".into()], thresholds, ..defaults }
}

fn benches(c: &mut Criterion) {
    let usage = usage();
    let snapshot = snapshot(&usage);
    let config = config();
    match planner::plan(&snapshot, &config, Demand::BelowThreshold) {
        Decision::Plan(plan) => assert_eq!(
            plan.steps.iter().filter(|s| s.kind() == StepKind::CreateSubnet).count(),
            3,
            "one subnet per AZ: {plan:?}"
        ),
        other => panic!("the benchmark must exercise a full plan, got {other:?}"),
    }

    let mut group = c.benchmark_group("capacity");
    group.bench_function("subnet_capacity/1000_subnets_50k_used", |b| b.iter(|| capacities(black_box(&usage))));
    group.bench_function("plan/1000_subnets", |b| {
        b.iter(|| planner::plan(black_box(&snapshot), black_box(&config), Demand::BelowThreshold))
    });
    group.bench_function("plan_with_capacity/1000_subnets_50k_used", |b| {
        b.iter(|| {
            let capacities = capacities(black_box(&usage));
            let mut snapshot = snapshot.clone();
            for (subnet, capacity) in snapshot.subnets.iter_mut().zip(capacities) {
                subnet.capacity = capacity;
            }
            planner::plan(&snapshot, black_box(&config), Demand::BelowThreshold)
        })
    });
    group.finish();
}

criterion_group!(capacity_benches, benches);
criterion_main!(capacity_benches);
