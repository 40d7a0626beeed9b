//! Where new subnets go: free space in the managed CIDRs first, then a new
//! block (literal, or from the IPAM pool), under AWS's rules
//! (docs/aws-rules.md, "Secondary VPC CIDRs" and "IPAM pools").

use ipnet::Ipv4Net;

use super::{Planner, refuse};
use crate::cidr;
use crate::ipam;
use crate::plan::{Refusal, RefusalCode, Step};

impl Planner<'_> {
    /// One block per AZ: free space in managed CIDRs first, then a new CIDR.
    pub(super) fn place_subnets(
        &mut self,
        azs: &[String],
        steps: &mut Vec<Step>,
    ) -> Result<Vec<(String, Ipv4Net)>, Refusal> {
        let snapshot = self.snapshot;
        let config = self.config;
        if azs.is_empty() {
            return Ok(Vec::new());
        }
        let vpc = &snapshot.vpc;
        let prefix = config.subnet_prefix;
        // With IPAM_POOL_ID the pool's provisioned CIDRs take CIDR_POOL's
        // place: a live association inside them is a managed block.
        let ipam_pool = match (&config.ipam_pool_id, &snapshot.ipam_pool) {
            (None, _) => None,
            (Some(_), Some(pool)) => Some(pool),
            (Some(id), None) => {
                return Err(refuse(
                    RefusalCode::IpamPoolUnusable,
                    format!("IPAM pool {id} (IPAM_POOL_ID) was not read, so no block of it can be planned"),
                ));
            }
        };
        let in_pool = |net: &Ipv4Net| match ipam_pool {
            Some(pool) => pool.holds(net),
            None => config.cidr_pool.iter().any(|p| p.contains(net)),
        };
        let mut managed_cidrs: Vec<_> = vpc
            .cidr_associations
            .iter()
            .filter(|a| a.state.is_live() && in_pool(&a.cidr) && a.cidr.prefix_len() <= prefix)
            .collect();
        // AWS refuses a second live association of one CIDR, but a snapshot read mid-change may still show
        // one; keep the settled copy so the plan never depends on the order EC2 listed them in.
        managed_cidrs.sort_by_key(|a| (a.cidr, a.state != crate::model::CidrState::Associated));
        managed_cidrs.dedup_by_key(|a| a.cidr);

        let taken = |block: &Ipv4Net, chosen: &[(String, Ipv4Net)]| {
            snapshot.subnets.iter().any(|s| cidr::overlaps(s.cidr, *block))
                || chosen.iter().any(|(_, c)| cidr::overlaps(*c, *block))
        };

        // IPAM knows nothing of routes and peers: a pool block that collides
        // with one (a run that stopped between the association and its check)
        // is never used. Holding no subnet, it is given back; holding some,
        // someone uses it, so it is left alone and still counts as managed.
        let mut usable_cidrs = Vec::new();
        let mut given_back = 0;
        for association in &managed_cidrs {
            let collision = match ipam_pool {
                Some(_) => ipam::collision(association.cidr, &snapshot.route_tables, &snapshot.peerings),
                None => None,
            };
            let Some(why) = collision else {
                usable_cidrs.push(*association);
                continue;
            };
            let (cidr, association_id) = (association.cidr, &association.association_id);
            if snapshot.subnets.iter().any(|s| cidr.contains(&s.cidr)) {
                self.notes.push(format!(
                    "{cidr} ({association_id}) from the IPAM pool is not used: {why}; it holds subnets, so headroom \
                     leaves it: remove the route or peering, or move the subnets and disassociate the block"
                ));
            } else {
                given_back += 1;
                steps.push(Step::GiveBackVpcCidr {
                    vpc_id: vpc.id.clone(),
                    association_id: association_id.clone(),
                    cidr,
                    why: why.clone(),
                });
            }
        }
        let managed_count = managed_cidrs.len() - given_back;

        let mut placements: Vec<(String, Ipv4Net)> = Vec::new();
        let mut remaining = azs.iter();
        let mut next_az = remaining.next();
        for association in &usable_cidrs {
            let mut used_this = false;
            for block in association.cidr.subnets(prefix).expect("prefix checked") {
                let Some(az) = next_az else { break };
                if taken(&block, &placements) {
                    continue;
                }
                placements.push((az.clone(), block));
                used_this = true;
                next_az = remaining.next();
            }
            if used_this && association.state == crate::model::CidrState::Associating {
                steps.push(Step::AwaitVpcCidr { vpc_id: vpc.id.clone(), cidr: association.cidr });
            }
            if used_this {
                let covering = cidr::covering_routes(association.cidr, &snapshot.route_tables);
                self.warnings.extend(ipam::shadow_warning(association.cidr, &covering));
            }
        }
        let Some(first_unplaced) = next_az else { return Ok(placements) };

        // Still AZs to serve: a new CIDR, if the limits allow it.
        let unplaced: Vec<&String> = std::iter::once(first_unplaced).chain(remaining).collect();
        let live = (vpc.cidr_associations.iter().filter(|a| a.state.is_live()).count() - given_back) as u32;
        let blocked = if live >= config.vpc_cidr_quota {
            Some(refuse(
                RefusalCode::CidrQuota,
                format!(
                    "VPC {} already has {live} IPv4 CIDR blocks, its quota of {} (VPC_CIDR_QUOTA); request a higher \
                     `IPv4 CIDR blocks per VPC` quota (up to 50) and raise VPC_CIDR_QUOTA, or free space in the existing blocks",
                    vpc.id, config.vpc_cidr_quota
                ),
            ))
        } else if managed_count as u32 >= config.max_managed_cidrs {
            Some(refuse(
                RefusalCode::MaxManagedCidrs,
                format!(
                    "VPC {} already has {} CIDR blocks from {}, MAX_MANAGED_CIDRS allows {}; raise MAX_MANAGED_CIDRS if more is intended",
                    vpc.id,
                    managed_count,
                    if ipam_pool.is_some() { "the IPAM pool" } else { "CIDR_POOL" },
                    config.max_managed_cidrs
                ),
            ))
        } else if let Some(why) = ipam_pool.and_then(|p| ipam::unusable(p, &snapshot.region, config.vpc_cidr_prefix)) {
            Some(refuse(RefusalCode::IpamPoolUnusable, why))
        } else if let Some(why) = ipam_pool.and_then(|p| ipam::missing_tags(p, &vpc.id, &vpc.tags)) {
            Some(refuse(RefusalCode::IpamAllocationTagsMissing, why))
        } else {
            // IPAM picks the block itself: the lowest block of its CIDRs that
            // passes every rule is what headroom would pick, and plans with,
            // until IPAM says which block it is. If none passes, IPAM could
            // only hand out a block that AWS refuses or that collides.
            let allocated = ipam_pool.map(|p| p.allocated_cidrs()).unwrap_or_default();
            let search = cidr::choose_vpc_cidr(
                ipam_pool.map_or(&config.cidr_pool, |p| &p.provisioned_cidrs),
                config.vpc_cidr_prefix,
                vpc.primary_cidr,
                cidr::Neighbours {
                    associations: &vpc.cidr_associations,
                    route_tables: &snapshot.route_tables,
                    peerings: &snapshot.peerings,
                    allocated: &allocated,
                },
            );
            match search.chosen {
                Some(new_cidr) => {
                    match ipam_pool {
                        Some(pool) => self.predict_ipam_block(pool, new_cidr),
                        None => self.warnings.extend(ipam::shadow_warning(new_cidr, &search.covering)),
                    }
                    steps.push(match ipam_pool {
                        Some(pool) => Step::AllocateVpcCidrFromIpamPool {
                            vpc_id: vpc.id.clone(),
                            pool_id: pool.id.clone(),
                            netmask_length: config.vpc_cidr_prefix,
                            pool_arn: pool.arn.clone(),
                        },
                        None => Step::AssociateVpcCidr { vpc_id: vpc.id.clone(), cidr: new_cidr },
                    });
                    let mut blocks = new_cidr.subnets(prefix).expect("prefix checked").filter(|b| !taken(b, &[]));
                    for az in &unplaced {
                        match blocks.next() {
                            Some(block) => placements.push(((*az).clone(), block)),
                            None => {
                                self.notes.push(format!(
                                    "{new_cidr} holds too few /{prefix} subnets for every AZ; {az} waits for the next run"
                                ));
                                break;
                            }
                        }
                    }
                    None
                }
                None => {
                    let (source, cidrs, fix_range, widen) = match ipam_pool {
                        Some(pool) => (
                            format!("IPAM pool {}", pool.id),
                            &pool.provisioned_cidrs,
                            "provision the pool from 100.64.0.0/10 or from the primary's own block, or set IPAM_POOL_ID to such a pool",
                            "provision more CIDRs to the IPAM pool",
                        ),
                        None => (
                            "CIDR_POOL".to_string(),
                            &config.cidr_pool,
                            "use 100.64.0.0/10 or a range from the primary's own block",
                            "widen CIDR_POOL",
                        ),
                    };
                    let pool = cidrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                    let collisions = search.overlapping
                        + search.route_conflicts
                        + search.peering_conflicts
                        + search.allocated_elsewhere;
                    Some(if search.restricted > 0 && collisions == 0 {
                        refuse(
                            RefusalCode::RestrictedRange,
                            format!(
                                "every /{} block of {source} ({pool}) is a range AWS refuses for a VPC whose primary CIDR is {}; {fix_range}",
                                config.vpc_cidr_prefix, vpc.primary_cidr
                            ),
                        )
                    } else {
                        refuse(
                            RefusalCode::PoolExhausted,
                            format!(
                                "no /{} block of {source} ({pool}) is free: {} overlap VPC CIDRs, {} are equal to or hold a \
                                 route destination, {} overlap peered VPCs, {} are restricted{}; {widen}",
                                config.vpc_cidr_prefix,
                                search.overlapping,
                                search.route_conflicts,
                                search.peering_conflicts,
                                search.restricted,
                                if search.allocated_elsewhere > 0 {
                                    format!(
                                        ", {} are allocated by the pool to other resources (GetIpamPoolAllocations)",
                                        search.allocated_elsewhere
                                    )
                                } else {
                                    String::new()
                                }
                            ),
                        )
                    })
                }
            }
        };
        if let Some(mut refusal) = blocked {
            if placements.is_empty() {
                // Say why a managed IPAM block that would have had room was passed over.
                for note in self.notes.iter().filter(|n| n.contains("from the IPAM pool is not used")) {
                    refusal.message.push_str("; ");
                    refusal.message.push_str(note);
                }
                return Err(refusal);
            }
            // Some AZs fit in space already associated: use it, say what's missing.
            let names: Vec<&str> = unplaced.iter().map(|s| s.as_str()).collect();
            self.notes.push(format!("no new space for {}: {}", names.join(", "), refusal.message));
        }
        Ok(placements)
    }

    /// What the dry run can say of the block IPAM will give: IPAM chooses,
    /// and whether it gives the lowest free block is not documented, so the
    /// lowest free block (GetIpamPoolAllocations) is named as that, with
    /// what headroom does if that is the one. `acceptable` is the lowest
    /// block that passes every rule.
    fn predict_ipam_block(&mut self, pool: &crate::model::IpamPool, acceptable: Ipv4Net) {
        let prefix = self.config.vpc_cidr_prefix;
        let Some(lowest) = ipam::lowest_free_block(pool, prefix) else {
            self.notes.push(format!(
                "IPAM chooses the /{prefix}; the pool's allocations (GetIpamPoolAllocations) were not read, so which block is unknown"
            ));
            return;
        };
        let tables = &self.snapshot.route_tables;
        let mut note = format!(
            "IPAM chooses the /{prefix}; the lowest free block of pool {} is {lowest} (GetIpamPoolAllocations)",
            pool.id
        );
        if let Some(why) = ipam::collision(lowest, tables, &self.snapshot.peerings) {
            note.push_str(&format!(
                ", which collides ({why}): if IPAM gives it, headroom gives it back at once (ipam-block-conflicts); \
                 the lowest block clear of every rule is {acceptable}"
            ));
        } else if lowest != acceptable {
            note.push_str(&format!(
                ", which the VPC cannot take (it overlaps a VPC CIDR or is restricted); the lowest block clear of \
                 every rule is {acceptable}"
            ));
        }
        self.notes.push(note);
        let expected =
            if ipam::collision(lowest, tables, &self.snapshot.peerings).is_none() { lowest } else { acceptable };
        self.warnings.extend(ipam::shadow_warning(expected, &cidr::covering_routes(expected, tables)));
    }
}
