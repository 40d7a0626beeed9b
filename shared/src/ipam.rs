//! VPC CIDRs from an IPAM pool (`IPAM_POOL_ID`): whether the pool can
//! allocate this VPC's next block, and whether a block it allocated collides
//! with the VPC's routes or peers. Pure; the rules are in docs/aws-rules.md,
//! "IPAM pools".
//!
//! IPAM chooses the block, not headroom, and IPAM knows nothing of the VPC's
//! route tables and peering connections: what it hands out is checked here
//! against the same rules [`crate::cidr::check_block`] applies to a block
//! headroom chooses.

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
/// "Peered VPCs"), naming the route or peering for the report.
pub fn collision(block: Ipv4Net, route_tables: &[RouteTable], peerings: &[Peering]) -> Option<String> {
    for table in route_tables {
        for route in table.routes.iter().filter(|r| !r.is_local()) {
            let Some(destination) = route.destination.filter(|d| d.prefix_len() > 0) else { continue };
            if cidr::overlaps(destination, block) {
                return Some(format!(
                    "{block} overlaps the route to {destination} through {} in {}",
                    route.target, table.id
                ));
            }
        }
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
        assert!(route.contains("route to 100.64.8.0/24 through pcx-1 in rtb-1"), "{route}");
        let peered = collision(net("100.66.0.0/16"), &tables, &peers).unwrap();
        assert!(peered.contains("100.66.0.0/20 of peered VPC vpc-p (pcx-2)"), "{peered}");
        assert_eq!(collision(net("100.65.0.0/16"), &tables, &peers), None, "local and default routes never collide");
    }
}
