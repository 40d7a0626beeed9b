//! Which secondary VPC CIDR to add: the restriction table of docs/aws-rules.md, "Secondary VPC CIDRs"
//! and the search for the lowest usable block in the pool.
//!
//! moto accepts restricted ranges, overlaps and route conflicts without a
//! word, so these rules are enforced here and tested here.

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::model::{CidrAssociation, Peering, RouteTable};

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("static CIDR")
}

/// Ranges AWS never accepts as a VPC CIDR, whatever the primary.
fn never_allowed() -> [(Ipv4Net, &'static str); 5] {
    [
        (net("0.0.0.0/8"), "the `this network` block"),
        (net("127.0.0.0/8"), "loopback"),
        (net("169.254.0.0/16"), "link-local"),
        (net("224.0.0.0/4"), "multicast"),
        (net("240.0.0.0/4"), "reserved"),
    ]
}

/// The ranges that may not be added to a VPC whose primary CIDR is `primary`
/// (`InvalidVpc.Range`), with the reason for each.
pub fn restricted_ranges(primary: Ipv4Net) -> Vec<(Ipv4Net, String)> {
    let ten = net("10.0.0.0/8");
    let one_seven_two = net("172.16.0.0/12");
    let one_nine_two = net("192.168.0.0/16");
    let one_nine_eight = net("198.19.0.0/16");
    let primary_in = |range: Ipv4Net| range.contains(&primary);

    let mut restricted: Vec<(Ipv4Net, String)> = Vec::new();
    let mut deny = |range: Ipv4Net, why: &str| restricted.push((range, format!("{range} {why} (primary {primary})")));
    if primary_in(ten) {
        deny(one_seven_two, "is a different RFC 1918 range than the primary");
        deny(one_nine_two, "is a different RFC 1918 range than the primary");
        deny(one_nine_eight, "is restricted for a 10.0.0.0/8 primary");
        if net("10.0.0.0/15").contains(&primary) {
            deny(net("10.0.0.0/16"), "is restricted when the primary is inside 10.0.0.0/15");
        }
    } else if primary_in(one_seven_two) {
        deny(ten, "is a different RFC 1918 range than the primary");
        deny(one_nine_two, "is a different RFC 1918 range than the primary");
        deny(net("172.31.0.0/16"), "is restricted for a 172.16.0.0/12 primary");
        deny(one_nine_eight, "is restricted for a 172.16.0.0/12 primary");
    } else if primary_in(one_nine_two) {
        deny(ten, "is a different RFC 1918 range than the primary");
        deny(one_seven_two, "is a different RFC 1918 range than the primary");
        deny(one_nine_eight, "is restricted for a 192.168.0.0/16 primary");
    } else if primary_in(one_nine_eight) {
        for range in [ten, one_seven_two, one_nine_two] {
            deny(range, "is RFC 1918, which a 198.19.0.0/16 primary cannot add");
        }
    } else {
        for range in [ten, one_seven_two, one_nine_two] {
            deny(range, "is RFC 1918, which a public or 100.64.0.0/10 primary cannot add");
        }
        deny(one_nine_eight, "is restricted for a public or 100.64.0.0/10 primary");
    }
    for (range, why) in never_allowed() {
        restricted.push((range, format!("{range} is {why} space")));
    }
    restricted
}

/// Why a block can't be added, or `Ok` when AWS will accept it.
pub fn restriction(primary: Ipv4Net, block: Ipv4Net) -> Result<(), String> {
    if !(16..=28).contains(&block.prefix_len()) {
        return Err(format!("{block}: VPC CIDR blocks are /16 to /28"));
    }
    match restricted_ranges(primary).into_iter().find(|(range, _)| overlaps(*range, block)) {
        Some((_, why)) => Err(why),
        None => Ok(()),
    }
}

pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Why the search passed over a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Rejection {
    Restricted,
    OverlapsVpcCidr,
    ConflictsWithRoute,
    OverlapsPeeredVpc,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SearchOutcome {
    pub chosen: Option<Ipv4Net>,
    pub restricted: usize,
    pub overlapping: usize,
    pub route_conflicts: usize,
    pub peering_conflicts: usize,
}

/// Every aligned block of `prefix_len` in the pool, lowest address first.
pub fn pool_blocks(pool: &[Ipv4Net], prefix_len: u8) -> impl Iterator<Item = Ipv4Net> {
    // Aggregating merges overlapping entries, so no block is offered twice,
    // and sorts them, so the order of CIDR_POOL does not matter.
    Ipv4Net::aggregate(&pool.to_vec())
        .into_iter()
        .filter(move |n| n.prefix_len() <= prefix_len)
        .flat_map(move |entry| entry.subnets(prefix_len).expect("prefix checked above"))
}

/// What a new block must not collide with, besides the restriction table.
#[derive(Debug, Clone, Copy)]
pub struct Neighbours<'a> {
    pub associations: &'a [CidrAssociation],
    pub route_tables: &'a [RouteTable],
    pub peerings: &'a [Peering],
}

/// Checks one block against the VPC's associations, routes and peers.
pub fn check_block(block: Ipv4Net, primary: Ipv4Net, neighbours: Neighbours<'_>) -> Result<(), Rejection> {
    let Neighbours { associations, route_tables, peerings } = neighbours;
    if restriction(primary, block).is_err() {
        return Err(Rejection::Restricted);
    }
    // Any association that is not fully gone still owns its range.
    if associations
        .iter()
        .filter(|a| a.state != crate::model::CidrState::Disassociated)
        .any(|a| overlaps(a.cidr, block))
    {
        return Err(Rejection::OverlapsVpcCidr);
    }
    // A block equal to, larger than or inside a non-local route destination
    // would hijack (or be hijacked by) traffic to a peer, TGW or VPN.
    if route_tables
        .iter()
        .flat_map(|t| &t.routes)
        .filter(|r| !r.is_local())
        .filter_map(|r| r.destination)
        .filter(|d| d.prefix_len() > 0)
        .any(|d| overlaps(d, block))
    {
        return Err(Rejection::ConflictsWithRoute);
    }
    // A peered VPC's CIDRs, routed to or not: AWS refuses overlapping blocks
    // while the peering is active, and traffic to the peer would be lost.
    if peerings.iter().flat_map(|p| &p.peer_cidrs).any(|c| overlaps(*c, block)) {
        return Err(Rejection::OverlapsPeeredVpc);
    }
    Ok(())
}

/// The lowest block of `prefix_len` in the pool that AWS will accept and that
/// collides with nothing, with counts of what was passed over.
pub fn choose_vpc_cidr(
    pool: &[Ipv4Net],
    prefix_len: u8,
    primary: Ipv4Net,
    neighbours: Neighbours<'_>,
) -> SearchOutcome {
    let mut outcome = SearchOutcome::default();
    for block in pool_blocks(pool, prefix_len) {
        match check_block(block, primary, neighbours) {
            Ok(()) => {
                outcome.chosen = Some(block);
                break;
            }
            Err(Rejection::Restricted) => outcome.restricted += 1,
            Err(Rejection::OverlapsVpcCidr) => outcome.overlapping += 1,
            Err(Rejection::ConflictsWithRoute) => outcome.route_conflicts += 1,
            Err(Rejection::OverlapsPeeredVpc) => outcome.peering_conflicts += 1,
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CidrState, Route};

    fn assoc(cidr: &str, state: CidrState) -> CidrAssociation {
        CidrAssociation { association_id: format!("assoc-{cidr}"), cidr: net(cidr), state, status_message: None }
    }

    fn around<'a>(
        associations: &'a [CidrAssociation],
        route_tables: &'a [RouteTable],
        peerings: &'a [Peering],
    ) -> Neighbours<'a> {
        Neighbours { associations, route_tables, peerings }
    }

    fn peering(cidrs: &[&str]) -> Peering {
        Peering {
            connection_id: "pcx-1".into(),
            peer_vpc_id: "vpc-peer".into(),
            peer_cidrs: cidrs.iter().map(|c| net(c)).collect(),
        }
    }

    #[test]
    fn a_peered_vpc_blocks_every_overlapping_block_without_any_route() {
        let pool = [net("100.64.0.0/10")];
        let primary = net("192.168.0.0/16");
        let peers = [peering(&["100.64.0.0/16", "100.65.128.0/17"])];
        let out = choose_vpc_cidr(&pool, 16, primary, around(&[], &[], &peers));
        assert_eq!(out.chosen, Some(net("100.66.0.0/16")));
        assert_eq!(out.peering_conflicts, 2, "100.64/16 equal, 100.65/16 holding a peer /17");
        assert_eq!(
            check_block(net("100.64.0.0/16"), primary, around(&[], &[], &peers)),
            Err(Rejection::OverlapsPeeredVpc)
        );
    }

    fn table_with_route(destination: &str, target: &str) -> RouteTable {
        RouteTable {
            id: "rtb-1".into(),
            is_main: false,
            routes: vec![Route { destination: Some(net(destination)), target: target.into() }],
            subnet_ids: vec![],
        }
    }

    #[test]
    fn restriction_table_follows_the_primary() {
        let allowed = |primary: &str, block: &str| restriction(net(primary), net(block)).is_ok();
        // 10/8 primary
        assert!(!allowed("10.1.0.0/16", "172.16.0.0/16"));
        assert!(!allowed("10.1.0.0/16", "192.168.0.0/16"));
        assert!(!allowed("10.1.0.0/16", "198.19.0.0/16"));
        assert!(!allowed("10.0.0.0/16", "10.0.0.0/17"), "10.0.0.0/16 is blocked for a primary in 10.0.0.0/15");
        assert!(allowed("10.5.0.0/16", "10.0.0.0/16"));
        assert!(allowed("10.1.0.0/16", "10.2.0.0/16"));
        assert!(allowed("10.1.0.0/16", "100.64.0.0/16"));
        // 172.16/12 primary
        assert!(!allowed("172.20.0.0/16", "10.0.0.0/16"));
        assert!(!allowed("172.20.0.0/16", "172.31.0.0/16"));
        assert!(!allowed("172.20.0.0/16", "192.168.0.0/16"));
        assert!(allowed("172.20.0.0/16", "172.21.0.0/16"));
        assert!(allowed("172.20.0.0/16", "100.64.0.0/16"));
        // 192.168/16 primary: the lab's
        assert!(!allowed("192.168.0.0/16", "10.0.0.0/16"), "the lab's InvalidVpc.Range");
        assert!(!allowed("192.168.0.0/16", "172.16.0.0/16"));
        assert!(!allowed("192.168.0.0/16", "198.19.0.0/16"));
        assert!(allowed("192.168.0.0/16", "100.64.0.0/16"));
        // 198.19/16 primary
        assert!(!allowed("198.19.0.0/16", "10.0.0.0/16"));
        assert!(allowed("198.19.0.0/16", "100.64.0.0/16"));
        // public or CGNAT primary
        assert!(!allowed("100.64.0.0/16", "10.0.0.0/16"));
        assert!(!allowed("100.64.0.0/16", "198.19.0.0/16"));
        assert!(allowed("100.64.0.0/16", "100.65.0.0/16"));
        assert!(allowed("52.0.0.0/16", "52.1.0.0/16"));
        // sizes and never-allowed space
        assert!(!allowed("192.168.0.0/16", "100.64.0.0/15"));
        assert!(!allowed("192.168.0.0/16", "100.64.0.0/29"));
        assert!(!allowed("192.168.0.0/16", "169.254.0.0/16"));
    }

    #[test]
    fn restriction_names_the_reason() {
        let why = restriction(net("192.168.0.0/16"), net("10.0.0.0/16")).unwrap_err();
        assert!(why.contains("RFC 1918"), "{why}");
    }

    #[test]
    fn chooses_the_lowest_free_block() {
        let pool = [net("100.64.0.0/10")];
        let out = choose_vpc_cidr(
            &pool,
            16,
            net("192.168.0.0/16"),
            around(&[assoc("192.168.0.0/16", CidrState::Associated)], &[], &[]),
        );
        assert_eq!(out.chosen, Some(net("100.64.0.0/16")));
    }

    #[test]
    fn skips_blocks_taken_by_associations_in_any_state_but_disassociated() {
        let pool = [net("100.64.0.0/10")];
        let primary = net("192.168.0.0/16");
        for state in [
            CidrState::Associating,
            CidrState::Associated,
            CidrState::Disassociating,
            CidrState::Failing,
            CidrState::Failed,
        ] {
            let out = choose_vpc_cidr(&pool, 16, primary, around(&[assoc("100.64.0.0/16", state)], &[], &[]));
            assert_eq!(out.chosen, Some(net("100.65.0.0/16")), "{state:?}");
            assert_eq!(out.overlapping, 1);
        }
        let out =
            choose_vpc_cidr(&pool, 16, primary, around(&[assoc("100.64.0.0/16", CidrState::Disassociated)], &[], &[]));
        assert_eq!(out.chosen, Some(net("100.64.0.0/16")));
    }

    #[test]
    fn a_route_destination_blocks_equal_inner_and_outer_blocks() {
        let pool = [net("100.64.0.0/10")];
        let primary = net("192.168.0.0/16");
        let out = choose_vpc_cidr(&pool, 16, primary, around(&[], &[table_with_route("100.64.0.0/16", "tgw-1")], &[]));
        assert_eq!(out.chosen, Some(net("100.65.0.0/16")));
        assert_eq!(out.route_conflicts, 1);
        let inner =
            choose_vpc_cidr(&pool, 16, primary, around(&[], &[table_with_route("100.64.10.0/24", "pcx-1")], &[]));
        assert_eq!(inner.chosen, Some(net("100.65.0.0/16")));
        let outer =
            choose_vpc_cidr(&pool, 16, primary, around(&[], &[table_with_route("100.64.0.0/15", "vgw-1")], &[]));
        assert_eq!(outer.chosen, Some(net("100.66.0.0/16")));
    }

    #[test]
    fn local_and_default_routes_do_not_block() {
        let pool = [net("100.64.0.0/10")];
        let tables = [table_with_route("0.0.0.0/0", "nat-1"), table_with_route("100.64.0.0/16", "local")];
        let out = choose_vpc_cidr(&pool, 16, net("192.168.0.0/16"), around(&[], &tables, &[]));
        assert_eq!(out.chosen, Some(net("100.64.0.0/16")));
    }

    #[test]
    fn a_restricted_pool_yields_nothing_and_says_why() {
        let out = choose_vpc_cidr(&[net("10.0.0.0/14")], 16, net("192.168.0.0/16"), around(&[], &[], &[]));
        assert_eq!(out.chosen, None);
        assert_eq!(out.restricted, 4);
    }

    #[test]
    fn pool_order_and_overlap_do_not_change_the_choice() {
        let a =
            pool_blocks(&[net("100.80.0.0/12"), net("100.64.0.0/10"), net("100.64.0.0/15")], 16).collect::<Vec<_>>();
        assert_eq!(a.len(), 64);
        assert_eq!(a[0], net("100.64.0.0/16"));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
    }
}
