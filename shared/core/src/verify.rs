//! After applying: does the re-read state hold what the plan asked for? Pure.

use ipnet::Ipv4Net;

use crate::config::Config;
use crate::model::NetworkSnapshot;
use crate::nodeclass::{self, Extension, SelectorTarget};
use crate::plan::{Applied, Plan, Step, StepKind, SubnetRef};

/// What is missing from `after`, one line each; empty when the plan holds.
pub fn problems(plan: &Plan, after: &NetworkSnapshot, config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let subnet_by_cidr = |cidr: &Ipv4Net| after.subnets.iter().find(|s| &s.cidr == cidr);
    for step in &plan.steps {
        match step {
            Step::AssociateVpcCidr { cidr, .. } | Step::AwaitVpcCidr { cidr, .. } => {
                let associated = after
                    .vpc
                    .cidr_associations
                    .iter()
                    .any(|a| &a.cidr == cidr && a.state == crate::model::CidrState::Associated);
                if !associated {
                    problems.push(format!("{cidr} is not associated with {}", after.vpc.id));
                }
            }
            // Its block is unknown to the plan: the executor checks it, and
            // the run plans again from a fresh read once it is associated.
            Step::AllocateVpcCidrFromIpamPool { .. } => {}
            Step::GiveBackVpcCidr { association_id, cidr, .. } => {
                let live = after
                    .vpc
                    .cidr_associations
                    .iter()
                    .any(|a| &a.association_id == association_id && a.state.is_live());
                if live {
                    problems.push(format!("{cidr} ({association_id}) is still associated with {}", after.vpc.id));
                }
            }
            Step::CreateSubnet { cidr, availability_zone, .. } => match subnet_by_cidr(cidr) {
                None => problems.push(format!("subnet {cidr} does not exist")),
                Some(s) if &s.availability_zone != availability_zone => {
                    problems.push(format!("subnet {cidr} is in {}, not {availability_zone}", s.availability_zone))
                }
                Some(s) if s.tags.get(&config.managed_tag_key) != Some(&after.cluster.name) => problems.push(format!(
                    "subnet {} ({cidr}) lacks the tag {}={}",
                    s.id, config.managed_tag_key, after.cluster.name
                )),
                Some(_) => {}
            },
            Step::AssociateRouteTable { route_table_id, subnet, .. } => {
                let id = match subnet {
                    SubnetRef::Existing(id) => Some(id.clone()),
                    SubnetRef::Planned(cidr) => subnet_by_cidr(cidr).map(|s| s.id.clone()),
                };
                let Some(id) = id else { continue };
                match after.explicit_route_table_of(&id) {
                    Some(t) if &t.id == route_table_id => {}
                    Some(t) => problems.push(format!("{id} is associated with {}, not {route_table_id}", t.id)),
                    None => problems.push(format!("{id} has no explicit route table association")),
                }
            }
            Step::CreateNodeClass { name, intent, .. } | Step::PatchNodeClass { name, intent, .. } => {
                let targets: Vec<SelectorTarget> = after
                    .managed_subnets(&config.managed_tag_key)
                    .map(|s| SelectorTarget { id: Some(s.id.clone()), tags: s.tags.clone() })
                    .collect();
                match after.cluster_api.objects().and_then(|o| o.nodeclass(name)) {
                    None => problems.push(format!("NodeClass {name} does not exist")),
                    Some(current) => {
                        if nodeclass::extension(current, intent, &targets) != Extension::AlreadySelected {
                            problems.push(format!("NodeClass {name} does not select every managed subnet"));
                        }
                    }
                }
            }
            Step::CreateNodePool { name, .. } => {
                let launches_from =
                    after.cluster_api.objects().and_then(|o| o.nodepool(name)).map(nodeclass::nodeclass_ref);
                match launches_from {
                    None => problems.push(format!("NodePool {name} does not exist")),
                    Some(Some(class)) if class == config.nodeclass_name => {}
                    Some(other) => problems.push(format!(
                        "NodePool {name} launches from NodeClass {}, not {}",
                        other.unwrap_or("(none)"),
                        config.nodeclass_name
                    )),
                }
            }
        }
    }
    problems
}

/// Subnet ids the plan created, from the executor's record.
pub fn created_subnet_ids(changes: &[Applied]) -> Vec<String> {
    changes.iter().filter(|c| c.step == StepKind::CreateSubnet).map(|c| c.resource.clone()).collect()
}
