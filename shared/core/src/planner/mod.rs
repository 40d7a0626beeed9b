//! The pure planner: a [`NetworkSnapshot`] and the [`Config`] in, a
//! [`Decision`] out. No I/O, no clock, no randomness: the same snapshot always
//! gives the same plan, so concurrent runs pick the same CIDR and subnets and
//! converge instead of racing.
//!
//! One file per decision: [`placement`] (which block, which subnet CIDRs),
//! [`route_tables`] (which table each subnet joins), [`nodeclass_intent`]
//! (what the NodeClass and NodePool must become); this file ties them
//! together and decides whether anything needs doing.
//!
//! The plan also completes anything a crashed run left half-done (an
//! associated CIDR without subnets, a subnet without its route table, a
//! NodeClass that does not select the subnets yet), because every step is
//! derived from the difference between the snapshot and the desired state.

use std::collections::{BTreeMap, HashMap};

use ipnet::Ipv4Net;

use crate::capacity::AzCapacity;
use crate::config::Config;
use crate::forecast::ClusterForecast;
use crate::model::{NetworkSnapshot, RouteTable, Subnet};
use crate::node_subnets::{self, NodeSubnets, node_subnets};
use crate::plan::{Decision, Plan, Refusal, RefusalCode, Step, StepKind, SubnetRef};
use crate::reachability;

/// Whether thresholds gate the expansion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    /// Expand only if an AZ is below a threshold.
    BelowThreshold,
    /// Expand every AZ that lacks a managed subnet with headroom (manual `force`).
    Force,
    /// Expand as for a crossed threshold: an AZ is forecast to cross one
    /// within EXPAND_AHEAD_HOURS ([`plan_ahead`]).
    Forecast,
}

pub fn plan(snapshot: &NetworkSnapshot, config: &Config, demand: Demand) -> Decision {
    match Planner::new(snapshot, config).run(demand) {
        Ok(decision) => decision,
        Err(refusal) => Decision::Refused(refusal),
    }
}

/// [`plan`], looking ahead. When no threshold is crossed and nothing is
/// left unfinished, but `forecast` says an AZ will cross one within the
/// expand-ahead window, the cluster is planned for as if it had: every
/// guardrail of [`plan`] holds (the quota, `MAX_MANAGED_CIDRS`, the
/// NodePool wiring), free room in a managed block is used before a new one,
/// and an AZ that already has a managed subnet with headroom gets nothing.
/// The plan carries the forecast, which is its reason.
pub fn plan_ahead(snapshot: &NetworkSnapshot, config: &Config, forecast: &ClusterForecast) -> Decision {
    let now = plan(snapshot, config, Demand::BelowThreshold);
    let (Decision::NoOp { .. }, Some(due)) = (&now, &forecast.due) else {
        return now;
    };
    match plan(snapshot, config, Demand::Forecast) {
        Decision::Plan(mut ahead) => {
            ahead.forecast = Some(Box::new(due.clone()));
            Decision::Plan(ahead)
        }
        Decision::NoOp { .. } => Decision::NoOp {
            reason: format!(
                "{}; every AZ already has a managed subnet with headroom that the NodeClass selects",
                due.reason()
            ),
        },
        refused => refused,
    }
}

/// [`plan`] for an event that names the subnets where allocation failed
/// (`failing_subnets`, empty when it names none). When none of them holds
/// this cluster's nodes or pods, the failure belongs to another workload:
/// the decision is a no-op that says so.
pub fn plan_for_failure(
    snapshot: &NetworkSnapshot,
    config: &Config,
    demand: Demand,
    failing_subnets: &[String],
) -> Decision {
    if failing_subnets.is_empty() {
        return plan(snapshot, config, demand);
    }
    let used = node_subnets(snapshot, config);
    if failing_subnets.iter().any(|failing| used.subnets.iter().any(|s| &s.id == failing)) {
        return plan(snapshot, config, demand);
    }
    Decision::NoOp {
        reason: format!(
            "the failure was in {}, which holds no node or pod of cluster {}; nothing to do for this cluster",
            failing_subnets.join(", "),
            snapshot.cluster.name
        ),
    }
}

/// Per-AZ capacity the thresholds are checked against: the subnets the
/// cluster's nodes and pods use ([`node_subnets`]).
pub fn az_capacity(snapshot: &NetworkSnapshot, config: &Config) -> BTreeMap<String, AzCapacity> {
    node_subnets(snapshot, config).capacity_by_az()
}

struct Planner<'a> {
    snapshot: &'a NetworkSnapshot,
    config: &'a Config,
    /// The subnets the cluster's nodes and pods use: capacity counts these.
    used: NodeSubnets<'a>,
    /// Used subnets headroom did not create, by AZ: new subnets copy their
    /// route table from these.
    route_sources: Vec<&'a Subnet>,
    managed_subnets: Vec<&'a Subnet>,
    /// Each subnet's explicitly associated table, indexed once: looking it up
    /// in every table's list per subnet made a plan quadratic in subnets.
    explicit_tables: HashMap<&'a str, &'a RouteTable>,
    notes: Vec<String>,
    /// Routes a new block shadows (see [`Plan::warnings`]).
    warnings: Vec<String>,
}

fn refuse(code: RefusalCode, message: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into() }
}

impl<'a> Planner<'a> {
    fn new(snapshot: &'a NetworkSnapshot, config: &'a Config) -> Self {
        let explicit_tables = node_subnets::explicit_tables(&snapshot.route_tables);
        let used = node_subnets(snapshot, config);
        let is_managed = |s: &Subnet| s.tags.get(&config.managed_tag_key).is_some_and(|v| v == &snapshot.cluster.name);
        let route_sources = used.subnets.iter().copied().filter(|s| !is_managed(s)).collect();
        let mut managed_subnets: Vec<&Subnet> = snapshot.managed_subnets(&config.managed_tag_key).collect();
        managed_subnets.sort_by_key(|s| (s.availability_zone.clone(), s.cidr));
        Planner {
            snapshot,
            config,
            used,
            route_sources,
            managed_subnets,
            explicit_tables,
            notes: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn has_headroom(&self, subnet: &Subnet) -> bool {
        let t = &self.config.thresholds;
        subnet.capacity.free_ips >= t.min_free_ips_per_az && subnet.capacity.free_prefixes >= t.min_free_prefixes_per_az
    }

    fn run(mut self, demand: Demand) -> Result<Decision, Refusal> {
        let cluster = &self.snapshot.cluster.name;
        let Some(objects) = self.snapshot.cluster_api.objects() else {
            // The shell stops before planning when the API can't be read; this keeps the planner safe on its own.
            return Err(refuse(
                RefusalCode::ClusterApiUnreadable,
                format!(
                    "the Kubernetes API of cluster {cluster} could not be read, so nothing shows which NodePools would use new subnets"
                ),
            ));
        };
        if self.used.subnets.is_empty() {
            let counted = match &self.used.basis {
                node_subnets::CapacityBasis::NodeClasses { nodeclasses, .. } if !nodeclasses.is_empty() => {
                    format!("the NodeClasses NodePools reference ({}) select", nodeclasses.join(", "))
                }
                _ => "no NodePool references a NodeClass that selects".to_string(),
            };
            return Err(refuse(
                RefusalCode::NoNodeSubnets,
                format!(
                    "{counted} no subnet in VPC {}, so no node of cluster {cluster} runs here and there is no capacity to measure; check the NodePools and NodeClasses",
                    self.snapshot.vpc.id
                ),
            ));
        }

        let thresholds = self.config.thresholds;
        let capacity = self.used.capacity_by_az();
        let starved: Vec<String> = capacity
            .iter()
            .filter(|(_, c)| {
                c.free_ips < thresholds.min_free_ips_per_az || c.free_prefixes < thresholds.min_free_prefixes_per_az
            })
            .map(|(az, _)| az.clone())
            .collect();

        let expand_azs: Vec<String> = if demand != Demand::BelowThreshold || !starved.is_empty() {
            self.used
                .azs()
                .into_iter()
                .filter(|az| !self.managed_subnets.iter().any(|s| &s.availability_zone == az && self.has_headroom(s)))
                .collect()
        } else {
            Vec::new()
        };

        let azs = self.used.azs().len();
        let per_cidr = 1usize << (self.config.subnet_prefix - self.config.vpc_cidr_prefix);
        if !expand_azs.is_empty() && azs > per_cidr {
            return Err(refuse(
                RefusalCode::CannotConverge,
                format!(
                    "cluster {cluster} uses {azs} AZs, but one /{} VPC CIDR (VPC_CIDR_PREFIX) holds only {per_cidr} /{} subnets \
                     (SUBNET_PREFIX), so no expansion could serve every AZ; make VPC_CIDR_PREFIX shorter or SUBNET_PREFIX longer",
                    self.config.vpc_cidr_prefix, self.config.subnet_prefix
                ),
            ));
        }

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

        let nodeclass_steps = self.nodeclass_steps(objects, &placements)?;
        steps.extend(nodeclass_steps);

        // Capacity counts only if nodes can use it: some NodePool must launch
        // from the NodeClass, and its nodes must be able to join.
        let creates_pool = steps.iter().any(|s| matches!(s, Step::CreateNodePool { .. }));
        let name = &self.config.nodeclass_name;
        if (!steps.is_empty() || !starved.is_empty()) && objects.nodepools_using(name).is_empty() && !creates_pool {
            return Err(self.no_nodepool_refusal(objects));
        }
        if !steps.is_empty() {
            self.check_node_role(&steps)?;
        }

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

        // IPAM chooses the block when the step runs: the subnets, route tables
        // and NodeClass planned above were placed in the block headroom would
        // pick, only to prove that everything else can be done. The run reads
        // the VPC again once the block is associated and plans them for real.
        if steps.iter().any(|s| s.kind() == StepKind::AllocateVpcCidrFromIpamPool) {
            let first: Vec<Step> = steps
                .iter()
                .filter(|s| matches!(s.kind(), StepKind::AllocateVpcCidrFromIpamPool | StepKind::DisassociateVpcCidr))
                .cloned()
                .collect();
            let later = steps.len() - first.len();
            self.notes.push(format!(
                "IPAM chooses the block at apply time; once it is associated and clear of the VPC's routes and peers, \
                 the run reads the VPC again and plans the rest ({later} more steps if IPAM hands out the lowest free block)"
            ));
            return Ok(Decision::Plan(Plan {
                cluster: cluster.clone(),
                vpc_id: self.snapshot.vpc.id.clone(),
                starved_azs: starved,
                steps: first,
                notes: self.notes,
                warnings: self.warnings,
                reachability: Vec::new(),
                forecast: None,
            }));
        }

        // The blocks the new subnets are in: a rule that admits the VPC's
        // CIDRs but not these refuses the pods placed there.
        let mut parents: Vec<Ipv4Net> = self
            .snapshot
            .vpc
            .cidr_associations
            .iter()
            .filter(|a| a.state.is_live())
            .map(|a| a.cidr)
            .chain(steps.iter().filter_map(|s| match s {
                Step::AssociateVpcCidr { cidr, .. } => Some(*cidr),
                _ => None,
            }))
            .filter(|parent| placements.iter().any(|(_, block)| parent.contains(block)))
            .collect();
        parents.sort_unstable();
        parents.dedup();
        let reachability = reachability::warnings(self.snapshot, &parents);

        Ok(Decision::Plan(Plan {
            cluster: cluster.clone(),
            vpc_id: self.snapshot.vpc.id.clone(),
            starved_azs: starved,
            steps,
            notes: self.notes,
            warnings: self.warnings,
            reachability,
            forecast: None,
        }))
    }
}

mod nodeclass_intent;
mod placement;
mod route_tables;
#[cfg(test)]
pub(crate) mod tests;
