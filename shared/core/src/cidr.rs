//! Which secondary VPC CIDR to add: the restriction table of docs/aws-rules.md, "Secondary VPC CIDRs"
//! and the search for the lowest usable block in the pool.
//!
//! moto accepts restricted ranges, overlaps and route conflicts without a
//! word, so these rules are enforced here and tested here.

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::model::{CidrAssociation, Peering, Route, RouteTable};

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
    /// An IPAM pool has given it (or part of it) to another resource.
    AllocatedInPool,
}

/// A non-local route whose destination is wider than a block and holds it:
/// AWS accepts the block, and the VPC's `local` route for it then wins, so
/// this VPC stops sending that range to the route's target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoveringRoute {
    pub destination: Ipv4Net,
    /// `tgw-…`, `pcx-…`, `vgw-…`, `nat-…`, …
    pub target: String,
    pub route_table_id: String,
}

impl std::fmt::Display for CoveringRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the route to {} through {} in {}", self.destination, self.target, self.route_table_id)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SearchOutcome {
    pub chosen: Option<Ipv4Net>,
    /// The routes the chosen block lies inside (empty: no route covers it).
    /// Set only when every acceptable block is covered by some route.
    pub covering: Vec<CoveringRoute>,
    pub restricted: usize,
    pub overlapping: usize,
    pub route_conflicts: usize,
    pub peering_conflicts: usize,
    pub allocated_elsewhere: usize,
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
    /// Blocks an IPAM pool has already allocated (empty without a pool).
    pub allocated: &'a [Ipv4Net],
}

/// The non-local, non-default routes of the VPC's tables, with their table.
fn routed<'a>(route_tables: &'a [RouteTable]) -> impl Iterator<Item = (&'a RouteTable, &'a Route, Ipv4Net)> + 'a {
    route_tables.iter().flat_map(|t| t.routes.iter().map(move |r| (t, r))).filter_map(|(t, r)| {
        let destination = r.destination.filter(|d| d.prefix_len() > 0 && !r.is_local())?;
        Some((t, r, destination))
    })
}

/// The route AWS refuses `block` for, if any: a non-local route whose
/// destination is equal to or inside the block (docs/aws-rules.md,
/// "Secondary VPC CIDRs"). A destination wider than the block is no
/// conflict (see [`covering_routes`]).
pub fn conflicting_route(block: Ipv4Net, route_tables: &[RouteTable]) -> Option<CoveringRoute> {
    routed(route_tables).find(|(_, _, d)| block.contains(d)).map(|(table, route, destination)| CoveringRoute {
        destination,
        target: route.target.clone(),
        route_table_id: table.id.clone(),
    })
}

/// The non-local routes whose destination strictly contains `block`, once
/// per destination and target, widest first: the routes a new block shadows.
pub fn covering_routes(block: Ipv4Net, route_tables: &[RouteTable]) -> Vec<CoveringRoute> {
    let mut covering: Vec<CoveringRoute> = routed(route_tables)
        .filter(|(_, _, d)| d.prefix_len() < block.prefix_len() && d.contains(&block))
        .map(|(table, route, destination)| CoveringRoute {
            destination,
            target: route.target.clone(),
            route_table_id: table.id.clone(),
        })
        .collect();
    covering.sort_by(|a, b| {
        (a.destination, &a.target, &a.route_table_id).cmp(&(b.destination, &b.target, &b.route_table_id))
    });
    covering.dedup_by(|a, b| a.destination == b.destination && a.target == b.target);
    covering
}

/// Checks one block against the VPC's associations, routes and peers.
pub fn check_block(block: Ipv4Net, primary: Ipv4Net, neighbours: Neighbours<'_>) -> Result<(), Rejection> {
    let Neighbours { associations, route_tables, peerings, allocated } = neighbours;
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
    // AWS refuses a block equal to or larger than a non-local route
    // destination; one inside a wider destination is accepted.
    if conflicting_route(block, route_tables).is_some() {
        return Err(Rejection::ConflictsWithRoute);
    }
    // A peered VPC's CIDRs, routed to or not: AWS refuses overlapping blocks
    // while the peering is active, and traffic to the peer would be lost.
    if peerings.iter().flat_map(|p| &p.peer_cidrs).any(|c| overlaps(*c, block)) {
        return Err(Rejection::OverlapsPeeredVpc);
    }
    if allocated.iter().any(|a| overlaps(*a, block)) {
        return Err(Rejection::AllocatedInPool);
    }
    Ok(())
}

/// The lowest block of `prefix_len` in the pool that AWS will accept, that
/// collides with nothing and that no route covers; else the lowest
/// acceptable block that a route covers, with those routes. Counts what was
/// passed over.
pub fn choose_vpc_cidr(
    pool: &[Ipv4Net],
    prefix_len: u8,
    primary: Ipv4Net,
    neighbours: Neighbours<'_>,
) -> SearchOutcome {
    let mut outcome = SearchOutcome::default();
    let mut first_covered: Option<(Ipv4Net, Vec<CoveringRoute>)> = None;
    for block in pool_blocks(pool, prefix_len) {
        match check_block(block, primary, neighbours) {
            Ok(()) => {
                let covering = covering_routes(block, neighbours.route_tables);
                if covering.is_empty() {
                    outcome.chosen = Some(block);
                    return outcome;
                }
                first_covered.get_or_insert((block, covering));
            }
            Err(Rejection::Restricted) => outcome.restricted += 1,
            Err(Rejection::OverlapsVpcCidr) => outcome.overlapping += 1,
            Err(Rejection::ConflictsWithRoute) => outcome.route_conflicts += 1,
            Err(Rejection::OverlapsPeeredVpc) => outcome.peering_conflicts += 1,
            Err(Rejection::AllocatedInPool) => outcome.allocated_elsewhere += 1,
        }
    }
    if let Some((block, covering)) = first_covered {
        outcome.chosen = Some(block);
        outcome.covering = covering;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CidrState;

    fn assoc(cidr: &str, state: CidrState) -> CidrAssociation {
        CidrAssociation { association_id: format!("assoc-{cidr}"), cidr: net(cidr), state, status_message: None }
    }

    fn around<'a>(
        associations: &'a [CidrAssociation],
        route_tables: &'a [RouteTable],
        peerings: &'a [Peering],
    ) -> Neighbours<'a> {
        Neighbours { associations, route_tables, peerings, allocated: &[] }
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
    fn a_route_refuses_blocks_equal_to_or_larger_than_its_destination_only() {
        let pool = [net("100.64.0.0/10")];
        let primary = net("192.168.0.0/16");
        let equal = [table_with_route("100.64.0.0/16", "tgw-1")];
        let out = choose_vpc_cidr(&pool, 16, primary, around(&[], &equal, &[]));
        assert_eq!(out.chosen, Some(net("100.65.0.0/16")));
        assert_eq!(out.route_conflicts, 1);
        assert!(out.covering.is_empty());
        // A block larger than the destination is refused too.
        let inner = [table_with_route("100.64.10.0/24", "pcx-1")];
        let out = choose_vpc_cidr(&pool, 16, primary, around(&[], &inner, &[]));
        assert_eq!((out.chosen, out.route_conflicts), (Some(net("100.65.0.0/16")), 1));
        // A block inside a wider destination is accepted by AWS, but one no
        // route covers is preferred.
        let outer = [table_with_route("100.64.0.0/15", "vgw-1")];
        assert_eq!(check_block(net("100.64.0.0/16"), primary, around(&[], &outer, &[])), Ok(()));
        let out = choose_vpc_cidr(&pool, 16, primary, around(&[], &outer, &[]));
        assert_eq!(out.chosen, Some(net("100.66.0.0/16")));
        assert_eq!(out.route_conflicts, 0, "covered blocks are no conflict");
        assert!(out.covering.is_empty());
    }

    #[test]
    fn where_only_covered_blocks_are_left_the_lowest_is_taken_and_its_routes_named() {
        // Hub and spoke: the whole pool is routed to a transit gateway.
        let primary = net("192.168.0.0/16");
        let hub = [table_with_route("100.64.0.0/10", "tgw-0hub"), table_with_route("0.0.0.0/0", "nat-1")];
        let out = choose_vpc_cidr(&[net("100.64.0.0/10")], 16, primary, around(&[], &hub, &[]));
        assert_eq!(out.chosen, Some(net("100.64.0.0/16")));
        assert_eq!(
            out.covering,
            [CoveringRoute {
                destination: net("100.64.0.0/10"),
                target: "tgw-0hub".into(),
                route_table_id: "rtb-1".into()
            }]
        );
        assert_eq!(out.covering[0].to_string(), "the route to 100.64.0.0/10 through tgw-0hub in rtb-1");
        // 10.0.0.0/8 to the hub, a 10/8 primary: the pool's first free block.
        let ten = [table_with_route("10.0.0.0/8", "tgw-0hub")];
        let out = choose_vpc_cidr(
            &[net("10.0.0.0/14")],
            16,
            net("10.0.0.0/16"),
            around(&[assoc("10.0.0.0/16", CidrState::Associated)], &ten, &[]),
        );
        assert_eq!(out.chosen, Some(net("10.1.0.0/16")));
        assert_eq!(out.covering.len(), 1);
        // A narrower route inside the pool still rules out the blocks that hold it.
        let both = [table_with_route("100.64.0.0/10", "tgw-0hub"), table_with_route("100.64.0.0/16", "pcx-1")];
        let out = choose_vpc_cidr(&[net("100.64.0.0/10")], 16, primary, around(&[], &both, &[]));
        assert_eq!(out.chosen, Some(net("100.65.0.0/16")));
        // Peerings stay conflicts on any overlap, covered or not.
        let peers = [peering(&["100.64.0.0/14"])];
        let out = choose_vpc_cidr(&[net("100.64.0.0/10")], 16, primary, around(&[], &hub, &peers));
        assert_eq!((out.chosen, out.peering_conflicts), (Some(net("100.68.0.0/16")), 4));
    }

    #[test]
    fn blocks_an_ipam_pool_allocated_elsewhere_are_passed_over() {
        let allocated = [net("100.64.0.0/16"), net("100.65.0.0/20")];
        let neighbours = Neighbours { associations: &[], route_tables: &[], peerings: &[], allocated: &allocated };
        let out = choose_vpc_cidr(&[net("100.64.0.0/14")], 16, net("192.168.0.0/16"), neighbours);
        assert_eq!((out.chosen, out.allocated_elsewhere), (Some(net("100.66.0.0/16")), 2));
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Never a block equal to or larger than a route destination; a
        /// covered block only when no acceptable block is uncovered, with
        /// every route that covers it named.
        #[test]
        fn the_route_rule_is_awss_and_uncovered_blocks_come_first(
            routes in proptest::collection::vec((0u32..64, 8u8..=20, 0usize..3), 0..5),
            prefix in 16u8..=18,
        ) {
            let pool = [net("100.64.0.0/12")];
            let primary = net("192.168.0.0/16");
            let targets = ["tgw-1", "pcx-1", "vgw-1"];
            let base = u32::from(net("100.64.0.0/12").network());
            let tables: Vec<RouteTable> = routes
                .iter()
                .map(|(offset, len, target)| {
                    let destination = Ipv4Net::new((base + offset * 65536).into(), *len).unwrap().trunc();
                    table_with_route(&destination.to_string(), targets[*target])
                })
                .collect();
            let neighbours = around(&[], &tables, &[]);
            let out = choose_vpc_cidr(&pool, prefix, primary, neighbours);
            let destinations: Vec<Ipv4Net> = tables.iter().flat_map(|t| &t.routes).filter_map(|r| r.destination).collect();
            let acceptable: Vec<Ipv4Net> = pool_blocks(&pool, prefix)
                .filter(|b| !destinations.iter().any(|d| b.contains(d)))
                .collect();
            match out.chosen {
                None => proptest::prop_assert!(acceptable.is_empty()),
                Some(chosen) => {
                    proptest::prop_assert!(!destinations.iter().any(|d| chosen.contains(d)), "{} holds a route", chosen);
                    let covered = |b: &Ipv4Net| destinations.iter().any(|d| d.prefix_len() < b.prefix_len() && d.contains(b));
                    match acceptable.iter().find(|b| !covered(b)) {
                        Some(uncovered) => {
                            proptest::prop_assert_eq!(chosen, *uncovered);
                            proptest::prop_assert!(out.covering.is_empty());
                        }
                        None => {
                            proptest::prop_assert_eq!(chosen, acceptable[0]);
                            for d in destinations.iter().filter(|d| d.prefix_len() < chosen.prefix_len() && d.contains(&chosen)) {
                                proptest::prop_assert!(out.covering.iter().any(|c| c.destination == *d), "{} not named", d);
                            }
                            proptest::prop_assert!(!out.covering.is_empty());
                        }
                    }
                }
            }
        }
    }
}
