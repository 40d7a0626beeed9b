//! VPC CIDRs from an IPAM pool (`IPAM_POOL_ID`): whether the pool can
//! allocate this VPC's next block, and whether a block it allocated collides
//! with the VPC's routes or peers. Pure; the rules are in docs/aws-rules.md,
//! "IPAM pools".
//!
//! IPAM chooses the block, not headroom, and IPAM knows nothing of the VPC's
//! route tables and peering connections: what it hands out is checked here
//! against the same rules [`crate::cidr::check_block`] applies to a block
//! headroom chooses.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;

use crate::cidr;
use crate::model::{IpamPool, Peering, RouteTable};

/// Pool states in which IPAM allocates. The others are being created,
/// deleted, restored or isolated, or failed.
const USABLE_STATES: [&str; 2] = ["create-complete", "modify-complete"];

/// Why `pool` cannot allocate a `/prefix` VPC CIDR in `region`, or `None`
/// when it can (as far as its description tells; its free space is another
/// matter, see [`crate::planner`]).
pub fn unusable(pool: &IpamPool, region: &str, prefix: u8) -> Option<String> {
    let id = &pool.id;
    if pool.address_family != "ipv4" {
        return Some(format!(
            "IPAM pool {id} (IPAM_POOL_ID) is an {} pool; VPC CIDRs for nodes come from an IPv4 pool",
            pool.address_family
        ));
    }
    if !USABLE_STATES.contains(&pool.state.as_str()) {
        return Some(format!(
            "IPAM pool {id} (IPAM_POOL_ID) is in state {}, in which IPAM allocates nothing; wait for create-complete or fix the pool",
            pool.state
        ));
    }
    match pool.locale.as_deref() {
        Some(locale) if locale == region => {}
        Some(locale) => {
            return Some(format!(
                "IPAM pool {id} (IPAM_POOL_ID) has locale {locale}, but the VPC is in {region}: a VPC allocates only from a pool whose locale is its Region; use a pool of {region}"
            ));
        }
        None => {
            return Some(format!(
                "IPAM pool {id} (IPAM_POOL_ID) has no locale, so no VPC can allocate from it; use a pool whose locale is {region}"
            ));
        }
    }
    let (min, max) = (pool.allocation_min_netmask_length, pool.allocation_max_netmask_length);
    if min.is_some_and(|min| prefix < min) || max.is_some_and(|max| prefix > max) {
        let rule = |v: Option<u8>| v.map_or("none".to_string(), |v| format!("/{v}"));
        return Some(format!(
            "IPAM pool {id} (IPAM_POOL_ID) allocates netmasks from {} to {}, not /{prefix} (VPC_CIDR_PREFIX); set VPC_CIDR_PREFIX within the pool's allocation rules",
            rule(min),
            rule(max)
        ));
    }
    if pool.provisioned_cidrs.is_empty() {
        return Some(format!(
            "IPAM pool {id} (IPAM_POOL_ID) has no provisioned CIDR, so it has nothing to allocate; provision one"
        ));
    }
    None
}

/// What `block` collides with among the VPC's route destinations and peered
/// VPCs' CIDRs, in words, or `None`. The same rules as
/// [`cidr::check_block`] (docs/aws-rules.md, "Secondary VPC CIDRs" and
/// "Peered VPCs"): a route destination equal to or inside the block, or any
/// overlap with a peer. A block inside a wider route destination is no
/// collision ([`cidr::covering_routes`] names the routes it shadows).
pub fn collision(block: Ipv4Net, route_tables: &[RouteTable], peerings: &[Peering]) -> Option<String> {
    if let Some(route) = cidr::conflicting_route(block, route_tables) {
        let how = if route.destination == block { "is the destination of" } else { "holds the destination of" };
        return Some(format!("{block} {how} {route}"));
    }
    for peering in peerings {
        if let Some(peer_cidr) = peering.peer_cidrs.iter().find(|c| cidr::overlaps(**c, block)) {
            return Some(format!(
                "{block} overlaps {peer_cidr} of peered VPC {} ({})",
                peering.peer_vpc_id, peering.connection_id
            ));
        }
    }
    None
}

/// Why the pool will not allocate to the VPC: the `AllocationResourceTags`
/// the VPC lacks (docs/aws-rules.md, "IPAM pools"), or `None`.
pub fn missing_tags(pool: &IpamPool, vpc_id: &str, vpc_tags: &BTreeMap<String, String>) -> Option<String> {
    let missing = pool.missing_allocation_tags(vpc_tags);
    if missing.is_empty() {
        return None;
    }
    let tags = missing.join(", ");
    let cli: Vec<String> = pool
        .allocation_resource_tags
        .iter()
        .filter(|(k, v)| vpc_tags.get(*k) != Some(*v))
        .map(|(k, v)| format!("Key={k},Value={v}"))
        .collect();
    Some(format!(
        "IPAM pool {} (IPAM_POOL_ID) allocates only to resources tagged {tags} (its AllocationResourceTags), and VPC \
         {vpc_id} lacks them; tag the VPC (aws ec2 create-tags --resources {vpc_id} --tags {}) or use another pool",
        pool.id,
        cli.join(" ")
    ))
}

/// A pool block another run associated while this run allocated its own:
/// what a run decides after its association, read afresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concurrent {
    /// No other new pool block: keep ours.
    Alone,
    /// Others appeared, none lower and none holding subnets: keep ours;
    /// their runs give theirs back. Their blocks, lowest first.
    KeepOurs(Vec<Ipv4Net>),
    /// Another block is lower or already holds subnets: give ours back and
    /// adopt that one (association id, block, why).
    Adopt { association_id: String, cidr: Ipv4Net, why: String },
}

/// Which block a run keeps, so that runs that allocated at the same time
/// end with one (docs/aws-rules.md, "IPAM pools"). `others` are the live
/// pool blocks of the VPC this run did not see before its own association
/// (`ours`) and that collide with nothing: `(association id, block, holds
/// subnets)`. One that holds subnets wins (someone already builds on it),
/// then the lowest; every run applies the same order, so all converge on
/// the same block.
pub fn settle_concurrent(ours: Ipv4Net, others: &[(String, Ipv4Net, bool)]) -> Concurrent {
    let mut others: Vec<&(String, Ipv4Net, bool)> = others.iter().filter(|(_, cidr, _)| *cidr != ours).collect();
    if others.is_empty() {
        return Concurrent::Alone;
    }
    others.sort_by_key(|(id, cidr, holds)| (!holds, *cidr, id.clone()));
    let (id, cidr, holds) = others[0];
    if *holds || *cidr < ours {
        let why = if *holds {
            format!("{cidr}, which a concurrent run associated from the pool, already holds subnets")
        } else {
            format!("{cidr}, which a concurrent run associated from the pool, is lower than {ours}")
        };
        return Concurrent::Adopt { association_id: id.clone(), cidr: *cidr, why };
    }
    let mut blocks: Vec<Ipv4Net> = others.iter().map(|(_, c, _)| *c).collect();
    blocks.sort_unstable();
    Concurrent::KeepOurs(blocks)
}

/// Words for a block that lies inside wider route destinations: AWS accepts
/// it, and the VPC's `local` route wins for it.
pub fn shadow_warning(block: Ipv4Net, covering: &[cidr::CoveringRoute]) -> Option<String> {
    if covering.is_empty() {
        return None;
    }
    let routes: Vec<String> = covering.iter().map(ToString::to_string).collect();
    let targets: Vec<&str> = covering.iter().map(|c| c.target.as_str()).collect();
    Some(format!(
        "{block} lies inside {}; AWS accepts it and the VPC's local route wins for it, so traffic from this \
         VPC to {block} stays in the VPC and no longer goes through {}; every block no route covers was taken, so \
         keep {block} out of the range the route reaches elsewhere (or add space no route covers)",
        routes.join(" and "),
        targets.join(", ")
    ))
}

/// The lowest `/prefix` block of the pool's provisioned CIDRs that no allocation
/// overlaps: the block IPAM would give if it gives the lowest free one
/// (unverified). `None` when the allocations were not read, or when
/// every block is allocated.
pub fn lowest_free_block(pool: &IpamPool, prefix: u8) -> Option<Ipv4Net> {
    let allocations = pool.allocations.as_ref()?;
    cidr::pool_blocks(&pool.provisioned_cidrs, prefix)
        .find(|block| !allocations.iter().any(|a| cidr::overlaps(a.cidr, *block)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Route;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    pub(crate) fn pool() -> IpamPool {
        IpamPool {
            arn: None,
            id: "ipam-pool-0123".into(),
            state: "create-complete".into(),
            address_family: "ipv4".into(),
            locale: Some("us-west-2".into()),
            allocation_min_netmask_length: Some(16),
            allocation_max_netmask_length: Some(20),
            provisioned_cidrs: vec![net("100.64.0.0/14")],
            allocation_resource_tags: BTreeMap::new(),
            allocations: None,
        }
    }

    #[test]
    fn a_pool_is_usable_only_for_ipv4_in_the_region_in_a_complete_state_within_its_netmask_rules() {
        assert_eq!(unusable(&pool(), "us-west-2", 16), None);
        assert_eq!(unusable(&pool(), "us-west-2", 20), None);
        let why = |edit: fn(&mut IpamPool), prefix: u8| {
            let mut p = pool();
            edit(&mut p);
            unusable(&p, "us-west-2", prefix).expect("unusable")
        };
        assert!(why(|p| p.address_family = "ipv6".into(), 16).contains("ipv6 pool"));
        assert!(why(|p| p.state = "create-in-progress".into(), 16).contains("state create-in-progress"));
        assert!(why(|p| p.state = "delete-complete".into(), 16).contains("allocates nothing"));
        assert!(why(|p| p.locale = Some("eu-west-1".into()), 16).contains("locale eu-west-1"));
        assert!(why(|p| p.locale = None, 16).contains("no locale"));
        assert!(why(|_| {}, 21).contains("from /16 to /20, not /21"));
        assert!(why(|p| p.allocation_min_netmask_length = Some(17), 16).contains("VPC_CIDR_PREFIX"));
        assert!(why(|p| p.provisioned_cidrs.clear(), 16).contains("no provisioned CIDR"));
        let mut open = pool();
        open.allocation_min_netmask_length = None;
        open.allocation_max_netmask_length = None;
        assert_eq!(unusable(&open, "us-west-2", 28), None, "no rule: any netmask");
    }

    #[test]
    fn a_block_collides_with_non_local_routes_and_peers_only() {
        let table = RouteTable {
            id: "rtb-1".into(),
            is_main: false,
            routes: vec![
                Route { destination: Some(net("0.0.0.0/0")), target: "nat-1".into() },
                Route { destination: Some(net("100.65.0.0/16")), target: "local".into() },
                Route { destination: Some(net("100.64.8.0/24")), target: "pcx-1".into() },
            ],
            subnet_ids: vec![],
        };
        let peer = Peering {
            connection_id: "pcx-2".into(),
            peer_vpc_id: "vpc-p".into(),
            peer_cidrs: vec![net("100.66.0.0/20")],
        };
        let tables = [table];
        let peers = [peer];
        let route = collision(net("100.64.0.0/16"), &tables, &peers).unwrap();
        assert!(
            route.contains("holds the destination of the route to 100.64.8.0/24 through pcx-1 in rtb-1"),
            "{route}"
        );
        let peered = collision(net("100.66.0.0/16"), &tables, &peers).unwrap();
        assert!(peered.contains("100.66.0.0/20 of peered VPC vpc-p (pcx-2)"), "{peered}");
        assert_eq!(collision(net("100.65.0.0/16"), &tables, &peers), None, "local and default routes never collide");
        // A block inside a wider destination is accepted by AWS: no collision.
        let hub = [RouteTable {
            id: "rtb-2".into(),
            is_main: false,
            routes: vec![Route { destination: Some(net("100.64.0.0/10")), target: "tgw-1".into() }],
            subnet_ids: vec![],
        }];
        assert_eq!(collision(net("100.67.0.0/16"), &hub, &[]), None);
        let shadow = shadow_warning(net("100.67.0.0/16"), &cidr::covering_routes(net("100.67.0.0/16"), &hub)).unwrap();
        assert!(shadow.contains("inside the route to 100.64.0.0/10 through tgw-1 in rtb-2"), "{shadow}");
        assert_eq!(
            collision(net("100.64.0.0/10"), &hub, &[]).unwrap(),
            "100.64.0.0/10 is the destination of the route to 100.64.0.0/10 through tgw-1 in rtb-2"
        );
    }

    #[test]
    fn concurrent_runs_settle_on_one_block_holding_subnets_first_then_the_lowest() {
        let (a, b, c) = (net("100.64.0.0/16"), net("100.65.0.0/16"), net("100.66.0.0/16"));
        let other = |id: &str, cidr, holds| (id.to_string(), cidr, holds);
        assert_eq!(settle_concurrent(a, &[]), Concurrent::Alone);
        assert_eq!(settle_concurrent(a, &[other("x", a, false)]), Concurrent::Alone, "our own, listed again");
        assert_eq!(
            settle_concurrent(a, &[other("x", c, false), other("y", b, false)]),
            Concurrent::KeepOurs(vec![b, c])
        );
        let Concurrent::Adopt { association_id, cidr, why } = settle_concurrent(b, &[other("x", a, false)]) else {
            panic!("a lower block wins")
        };
        assert_eq!((association_id.as_str(), cidr), ("x", a));
        assert!(why.contains("is lower than 100.65.0.0/16"), "{why}");
        let Concurrent::Adopt { cidr, why, .. } = settle_concurrent(a, &[other("x", b, false), other("y", c, true)])
        else {
            panic!("a block holding subnets wins")
        };
        assert_eq!(cidr, c);
        assert!(why.contains("already holds subnets"), "{why}");
        // Every run, whichever block it holds, ends on the same one.
        let all = [("x", a), ("y", b), ("z", c)];
        for (_, ours) in all {
            let others: Vec<_> = all.iter().filter(|(_, b)| *b != ours).map(|(id, b)| other(id, *b, false)).collect();
            let kept = match settle_concurrent(ours, &others) {
                Concurrent::Adopt { cidr, .. } => cidr,
                _ => ours,
            };
            assert_eq!(kept, a, "{ours}");
        }
    }

    #[test]
    fn the_vpc_must_carry_the_pools_allocation_resource_tags() {
        let mut pool = pool();
        let vpc_tags: BTreeMap<String, String> = [("team".to_string(), "net".to_string())].into();
        assert_eq!(missing_tags(&pool, "vpc-1", &vpc_tags), None, "no tags required");
        pool.allocation_resource_tags =
            [("team".to_string(), "net".to_string()), ("env".to_string(), "prod".to_string())].into();
        let why = missing_tags(&pool, "vpc-1", &vpc_tags).unwrap();
        assert!(why.contains("tagged env=prod,") || why.contains("tagged env=prod "), "{why}");
        assert!(!why.contains("team=net"), "only the missing ones: {why}");
        assert!(why.contains("--tags Key=env,Value=prod"), "{why}");
        let wrong_value: BTreeMap<String, String> =
            [("team".to_string(), "apps".to_string()), ("env".to_string(), "prod".to_string())].into();
        assert!(missing_tags(&pool, "vpc-1", &wrong_value).unwrap().contains("team=net"));
    }
}
