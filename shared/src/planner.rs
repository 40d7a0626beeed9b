//! The pure planner: a [`NetworkSnapshot`] and the [`Config`] in, a
//! [`Decision`] out. No I/O, no clock, no randomness: the same snapshot always
//! gives the same plan, so concurrent runs pick the same CIDR and subnets and
//! converge instead of racing.
//!
//! The plan also completes anything a crashed run left half-done (an
//! associated CIDR without subnets, a subnet without its route table, a
//! NodeClass that does not select the subnets yet), because every step is
//! derived from the difference between the snapshot and the desired state.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::Ipv4Net;

use crate::capacity::{self, AzCapacity};
use crate::cidr;
use crate::config::Config;
use crate::model::{NetworkSnapshot, RouteTable, Subnet};
use crate::nodeclass::{self, Extension, NewNodeClassSources, SelectorTarget};
use crate::plan::{Decision, NodeClassIntent, Plan, Refusal, RefusalCode, Step, SubnetRef};

/// Whether thresholds gate the expansion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    /// Expand only if an AZ is below a threshold.
    BelowThreshold,
    /// Expand every AZ that lacks a managed subnet with headroom (manual `force`).
    Force,
}

pub fn plan(snapshot: &NetworkSnapshot, config: &Config, demand: Demand) -> Decision {
    match Planner::new(snapshot, config).run(demand) {
        Ok(decision) => decision,
        Err(refusal) => Decision::Refused(refusal),
    }
}

/// Per-AZ capacity the thresholds are checked against: the cluster's node
/// subnets plus headroom's own.
pub fn az_capacity(snapshot: &NetworkSnapshot, config: &Config) -> BTreeMap<String, AzCapacity> {
    Planner::new(snapshot, config).az_capacity()
}

/// The subnets whose free space counts: the cluster's node subnets (private
/// ones; all of them if it has no private subnet) and headroom's, each once.
pub fn capacity_subnets<'a>(snapshot: &'a NetworkSnapshot, config: &'a Config) -> Vec<&'a Subnet> {
    Planner::new(snapshot, config).capacity_subnets()
}

struct Planner<'a> {
    snapshot: &'a NetworkSnapshot,
    config: &'a Config,
    /// Cluster subnets that can hold nodes and pods (not internet-facing).
    node_subnets: Vec<&'a Subnet>,
    managed_subnets: Vec<&'a Subnet>,
    /// Each subnet's explicitly associated table, indexed once: looking it up
    /// in every table's list per subnet made a plan quadratic in subnets.
    explicit_tables: HashMap<&'a str, &'a RouteTable>,
    notes: Vec<String>,
}

/// The table a subnet's traffic uses: its explicit association, else the main table.
fn effective_table<'a>(
    snapshot: &'a NetworkSnapshot,
    explicit: &HashMap<&str, &'a RouteTable>,
    subnet_id: &str,
) -> Option<&'a RouteTable> {
    explicit.get(subnet_id).copied().or_else(|| snapshot.main_route_table())
}

fn refuse(code: RefusalCode, message: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into() }
}

impl<'a> Planner<'a> {
    fn new(snapshot: &'a NetworkSnapshot, config: &'a Config) -> Self {
        let mut explicit_tables = HashMap::new();
        for table in &snapshot.route_tables {
            for subnet_id in &table.subnet_ids {
                // The first table listing a subnet wins, as in `explicit_route_table_of`.
                explicit_tables.entry(subnet_id.as_str()).or_insert(table);
            }
        }
        let cluster_subnets: Vec<&Subnet> = snapshot.cluster_subnets().collect();
        let private: Vec<&Subnet> = cluster_subnets
            .iter()
            .copied()
            .filter(|s| {
                !effective_table(snapshot, &explicit_tables, &s.id).is_some_and(|t| t.routes_through_internet_gateway())
            })
            .collect();
        // A cluster on public subnets only still places nodes there.
        let mut node_subnets = if private.is_empty() { cluster_subnets } else { private };
        node_subnets.sort_by_key(|s| (s.availability_zone.clone(), s.cidr));
        let mut managed_subnets: Vec<&Subnet> = snapshot.managed_subnets(&config.managed_tag_key).collect();
        managed_subnets.sort_by_key(|s| (s.availability_zone.clone(), s.cidr));
        Planner { snapshot, config, node_subnets, managed_subnets, explicit_tables, notes: Vec::new() }
    }

    fn effective_route_table_of(&self, subnet_id: &str) -> Option<&'a RouteTable> {
        effective_table(self.snapshot, &self.explicit_tables, subnet_id)
    }

    fn cluster_azs(&self) -> BTreeSet<String> {
        self.node_subnets.iter().map(|s| s.availability_zone.clone()).collect()
    }

    fn capacity_subnets(&self) -> Vec<&'a Subnet> {
        let mut seen = BTreeSet::new();
        self.node_subnets.iter().chain(&self.managed_subnets).copied().filter(|s| seen.insert(s.id.as_str())).collect()
    }

    fn az_capacity(&self) -> BTreeMap<String, AzCapacity> {
        capacity::by_az(self.capacity_subnets())
    }

    fn has_headroom(&self, subnet: &Subnet) -> bool {
        let t = &self.config.thresholds;
        subnet.capacity.free_ips >= t.min_free_ips_per_az && subnet.capacity.free_prefixes >= t.min_free_prefixes_per_az
    }

    fn run(mut self, demand: Demand) -> Result<Decision, Refusal> {
        let cluster = &self.snapshot.cluster.name;
        if self.node_subnets.is_empty() {
            return Err(refuse(
                RefusalCode::NoClusterSubnets,
                format!(
                    "none of the cluster's subnets ({}) is in VPC {}; check the cluster's resourcesVpcConfig",
                    self.snapshot.cluster.subnet_ids.join(", "),
                    self.snapshot.vpc.id
                ),
            ));
        }

        let thresholds = self.config.thresholds;
        let capacity = self.az_capacity();
        let starved: Vec<String> = capacity
            .iter()
            .filter(|(_, c)| {
                c.free_ips < thresholds.min_free_ips_per_az || c.free_prefixes < thresholds.min_free_prefixes_per_az
            })
            .map(|(az, _)| az.clone())
            .collect();

        let expand_azs: Vec<String> = if demand == Demand::Force || !starved.is_empty() {
            self.cluster_azs()
                .into_iter()
                .filter(|az| !self.managed_subnets.iter().any(|s| &s.availability_zone == az && self.has_headroom(s)))
                .collect()
        } else {
            Vec::new()
        };

        let mut steps = Vec::new();
        let placements = self.place_subnets(&expand_azs, &mut steps)?;

        // New subnets, each with its route table.
        for (az, block) in &placements {
            let mut tags = BTreeMap::new();
            tags.insert("Name".to_string(), format!("headroom-{cluster}-{az}"));
            tags.insert(self.config.managed_tag_key.clone(), cluster.clone());
            steps.push(Step::CreateSubnet {
                vpc_id: self.snapshot.vpc.id.clone(),
                availability_zone: az.clone(),
                cidr: *block,
                tags,
            });
            let (route_table_id, main_table_fallback) = self.route_table_for(az)?;
            steps.push(Step::AssociateRouteTable {
                route_table_id,
                subnet: SubnetRef::Planned(*block),
                main_table_fallback,
            });
        }

        // Managed subnets a crashed run left without their route table.
        for subnet in self.managed_subnets.clone() {
            if !self.explicit_tables.contains_key(subnet.id.as_str()) {
                let (route_table_id, main_table_fallback) = self.route_table_for(&subnet.availability_zone)?;
                steps.push(Step::AssociateRouteTable {
                    route_table_id,
                    subnet: SubnetRef::Existing(subnet.id.clone()),
                    main_table_fallback,
                });
            }
        }

        let nodeclass_steps = self.nodeclass_steps(&placements)?;
        steps.extend(nodeclass_steps);

        if steps.is_empty() {
            let reason = if starved.is_empty() {
                format!(
                    "every AZ has at least {} free IPs and {} free /28 prefixes, and the managed subnets are routed and selected",
                    thresholds.min_free_ips_per_az, thresholds.min_free_prefixes_per_az
                )
            } else {
                format!(
                    "AZs {} are below the thresholds, but each already has a managed subnet with headroom that the NodeClass selects",
                    starved.join(", ")
                )
            };
            return Ok(Decision::NoOp { reason });
        }

        Ok(Decision::Plan(Plan {
            cluster: cluster.clone(),
            vpc_id: self.snapshot.vpc.id.clone(),
            starved_azs: starved,
            steps,
            notes: self.notes,
        }))
    }

    /// One block per AZ: free space in managed CIDRs first, then a new CIDR.
    fn place_subnets(&mut self, azs: &[String], steps: &mut Vec<Step>) -> Result<Vec<(String, Ipv4Net)>, Refusal> {
        let snapshot = self.snapshot;
        let config = self.config;
        if azs.is_empty() {
            return Ok(Vec::new());
        }
        let vpc = &snapshot.vpc;
        let prefix = config.subnet_prefix;
        let in_pool = |net: &Ipv4Net| config.cidr_pool.iter().any(|p| p.contains(net));
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

        let mut placements: Vec<(String, Ipv4Net)> = Vec::new();
        let mut remaining = azs.iter();
        let mut next_az = remaining.next();
        for association in &managed_cidrs {
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
        }
        let Some(first_unplaced) = next_az else { return Ok(placements) };

        // Still AZs to serve: a new CIDR, if the limits allow it.
        let unplaced: Vec<&String> = std::iter::once(first_unplaced).chain(remaining).collect();
        let live = vpc.cidr_associations.iter().filter(|a| a.state.is_live()).count() as u32;
        let blocked = if live >= config.vpc_cidr_quota {
            Some(refuse(
                RefusalCode::CidrQuota,
                format!(
                    "VPC {} already has {live} IPv4 CIDR blocks, its quota of {} (VPC_CIDR_QUOTA); request a higher \
                     `IPv4 CIDR blocks per VPC` quota (up to 50) and raise VPC_CIDR_QUOTA, or free space in the existing blocks",
                    vpc.id, config.vpc_cidr_quota
                ),
            ))
        } else if managed_cidrs.len() as u32 >= config.max_managed_cidrs {
            Some(refuse(
                RefusalCode::MaxManagedCidrs,
                format!(
                    "VPC {} already has {} CIDR blocks from CIDR_POOL, MAX_MANAGED_CIDRS allows {}; raise MAX_MANAGED_CIDRS if more is intended",
                    vpc.id,
                    managed_cidrs.len(),
                    config.max_managed_cidrs
                ),
            ))
        } else {
            let search = cidr::choose_vpc_cidr(
                &config.cidr_pool,
                config.vpc_cidr_prefix,
                vpc.primary_cidr,
                &vpc.cidr_associations,
                &snapshot.route_tables,
            );
            match search.chosen {
                Some(new_cidr) => {
                    steps.push(Step::AssociateVpcCidr { vpc_id: vpc.id.clone(), cidr: new_cidr });
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
                    let pool = config.cidr_pool.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                    Some(if search.restricted > 0 && search.overlapping == 0 && search.route_conflicts == 0 {
                        refuse(
                            RefusalCode::RestrictedRange,
                            format!(
                                "every /{} block of CIDR_POOL ({pool}) is a range AWS refuses for a VPC whose primary CIDR is {}; use 100.64.0.0/10 or a range from the primary's own block",
                                config.vpc_cidr_prefix, vpc.primary_cidr
                            ),
                        )
                    } else {
                        refuse(
                            RefusalCode::PoolExhausted,
                            format!(
                                "no /{} block of CIDR_POOL ({pool}) is free: {} overlap VPC CIDRs, {} collide with route destinations, {} are restricted; widen CIDR_POOL",
                                config.vpc_cidr_prefix, search.overlapping, search.route_conflicts, search.restricted
                            ),
                        )
                    })
                }
            }
        };
        if let Some(refusal) = blocked {
            if placements.is_empty() {
                return Err(refusal);
            }
            // Some AZs fit in space already associated: use it, say what's missing.
            let names: Vec<&str> = unplaced.iter().map(|s| s.as_str()).collect();
            self.notes.push(format!("no new space for {}: {}", names.join(", "), refusal.message));
        }
        Ok(placements)
    }

    /// The route table a managed subnet in `az` should use: that of the
    /// cluster's private subnet there (NAT first), else the main table, explicitly.
    fn route_table_for(&mut self, az: &str) -> Result<(String, bool), Refusal> {
        let tables_in_az: Vec<_> = self
            .node_subnets
            .iter()
            .filter(|s| s.availability_zone == az)
            .filter_map(|s| self.effective_route_table_of(&s.id))
            .collect();
        let chosen = tables_in_az
            .iter()
            .find(|t| t.routes_through_nat())
            .or_else(|| tables_in_az.iter().find(|t| !t.routes_through_internet_gateway()));
        if let Some(table) = chosen {
            return Ok((table.id.clone(), false));
        }
        match self.snapshot.main_route_table() {
            Some(main) => {
                let note = format!(
                    "{az}: no private cluster subnet to copy a route table from; using the main table {}",
                    main.id
                );
                if !self.notes.contains(&note) {
                    self.notes.push(note);
                }
                Ok((main.id.clone(), true))
            }
            None => Err(refuse(
                RefusalCode::NoRouteTable,
                format!("{az} has no private cluster subnet and VPC {} has no main route table", self.snapshot.vpc.id),
            )),
        }
    }

    fn nodeclass_steps(&self, placements: &[(String, Ipv4Net)]) -> Result<Vec<Step>, Refusal> {
        let config = self.config;
        let cluster = &self.snapshot.cluster.name;
        let managed_tags: BTreeMap<String, String> = [(config.managed_tag_key.clone(), cluster.clone())].into();
        let mut targets: Vec<SelectorTarget> = self
            .managed_subnets
            .iter()
            .map(|s| SelectorTarget { id: Some(s.id.clone()), tags: s.tags.clone() })
            .collect();
        targets.extend(placements.iter().map(|_| SelectorTarget { id: None, tags: managed_tags.clone() }));
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let intent = NodeClassIntent {
            mode: config.subnet_mode,
            term: nodeclass::managed_term(&config.managed_tag_key, cluster),
            managed_tags,
        };
        let name = &config.nodeclass_name;
        // Config refuses it too; this keeps the planner safe on its own.
        if name == nodeclass::DEFAULT_NODECLASS {
            return Err(refuse(
                RefusalCode::NodeClassUnextendable,
                "the `default` NodeClass is managed by EKS and never modified",
            ));
        }

        let mut steps = Vec::new();
        let nodeclasses = &self.snapshot.nodeclasses;
        let node_terms = match &nodeclasses.managed {
            Some(current) => {
                match nodeclass::extension(current, &intent, &targets) {
                    Extension::AlreadySelected => {}
                    Extension::Patch(patch) => {
                        steps.push(Step::PatchNodeClass { name: name.clone(), patch, intent: intent.clone() })
                    }
                    Extension::Unextendable(why) => {
                        return Err(refuse(RefusalCode::NodeClassUnextendable, format!("NodeClass {name}: {why}")));
                    }
                }
                current.pointer("/spec/subnetSelectorTerms").cloned()
            }
            None => {
                let cluster_subnet_ids: Vec<String> = self.node_subnets.iter().map(|s| s.id.clone()).collect();
                let sources = NewNodeClassSources {
                    default_nodeclass: nodeclasses.default.as_ref(),
                    configured_role: config.node_role.as_deref(),
                    configured_security_groups: &config.security_group_ids,
                    cluster_security_group: self.snapshot.cluster.cluster_security_group_id.as_deref(),
                    cluster_subnet_ids: &cluster_subnet_ids,
                };
                let object = nodeclass::new_nodeclass(name, &intent, &sources)
                    .map_err(|why| refuse(RefusalCode::NoNodeRole, format!("NodeClass {name}: {why}")))?;
                let terms = object.pointer("/spec/subnetSelectorTerms").cloned();
                steps.push(Step::CreateNodeClass { name: name.clone(), object, intent: intent.clone() });
                terms
            }
        };

        // Auto Mode rejects a pod subnet in an AZ with no node subnet.
        if config.subnet_mode == crate::config::SubnetMode::Pods {
            let node_azs: BTreeSet<&str> = self
                .snapshot
                .subnets
                .iter()
                .filter(|s| {
                    nodeclass::terms_select(
                        node_terms.as_ref(),
                        &SelectorTarget { id: Some(s.id.clone()), tags: s.tags.clone() },
                    )
                })
                .map(|s| s.availability_zone.as_str())
                .collect();
            let pod_azs = self
                .managed_subnets
                .iter()
                .map(|s| s.availability_zone.as_str())
                .chain(placements.iter().map(|(az, _)| az.as_str()));
            let orphaned: BTreeSet<&str> = pod_azs.filter(|az| !node_azs.contains(az)).collect();
            if !orphaned.is_empty() {
                return Err(refuse(
                    RefusalCode::NodeClassUnextendable,
                    format!(
                        "NodeClass {name}: pod subnets in {} would have no node subnet in the same AZ; select node subnets there first",
                        orphaned.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }

        if let (Some(pool), Some(false)) = (&config.nodepool_name, nodeclasses.nodepool_exists) {
            steps.push(Step::CreateNodePool { name: pool.clone(), object: nodeclass::new_nodepool(pool, name) });
        }
        Ok(steps)
    }
}

#[cfg(test)]
mod tests;
