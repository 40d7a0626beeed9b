//! What the planner decides: a [`Decision`] holding either an ordered
//! [`Plan`], a no-op or a refusal, each with its reason.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::SubnetMode;
use crate::forecast::ForecastTrigger;
use crate::reachability::ReachabilityWarning;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Decision {
    Plan(Plan),
    NoOp { reason: String },
    Refused(Refusal),
}

impl Decision {
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Plan(_) => "planned",
            Decision::NoOp { .. } => "no-op",
            Decision::Refused(_) => "refused",
        }
    }

    pub fn plan(&self) -> Option<&Plan> {
        match self {
            Decision::Plan(plan) => Some(plan),
            _ => None,
        }
    }
}

/// Why headroom will not act. Refusals change nothing and are not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalCode {
    /// Network Address Usage quota: more CIDR makes it worse.
    NauLimit,
    /// The VPC holds as many IPv4 CIDR blocks as its quota allows.
    CidrQuota,
    /// MAX_MANAGED_CIDRS pool CIDRs are already associated.
    MaxManagedCidrs,
    /// Every block of the pool is taken or collides with a route.
    PoolExhausted,
    /// Every block of the pool is a range AWS refuses for this VPC's primary CIDR.
    RestrictedRange,
    /// No route table fits and the VPC has no main table.
    NoRouteTable,
    /// A new NodeClass needs a role and none is known.
    NoNodeRole,
    /// The NodeClass selector list is full (30 terms) or otherwise cannot be extended.
    NodeClassUnextendable,
    /// No NodePool uses a NodeClass with subnets in the cluster's VPC.
    NoNodeSubnets,
    /// No NodePool references the NodeClass and headroom may not create one:
    /// new subnets would be counted without any node using them.
    NoNodePool,
    /// The NodeClass's role is not the cluster's node role and has no EKS
    /// access entry of type EC2: its nodes could not join.
    NodeRoleNotAuthorized,
    /// One VPC CIDR cannot hold a subnet for each of the cluster's AZs.
    CannotConverge,
    /// The cluster's Kubernetes API could not be read.
    ClusterApiUnreadable,
    /// The IPAM pool of IPAM_POOL_ID cannot allocate this VPC's next CIDR:
    /// wrong address family, locale or state, or a netmask its allocation
    /// rules refuse.
    IpamPoolUnusable,
    /// The block the IPAM pool allocated collides with a route destination
    /// or a peered VPC; headroom disassociated it again.
    IpamBlockConflicts,
    /// The IPAM pool requires `AllocationResourceTags` the VPC lacks.
    IpamAllocationTagsMissing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub code: RefusalCode,
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub cluster: String,
    pub vpc_id: String,
    /// AZs below the thresholds when planned (empty for convergence-only plans).
    pub starved_azs: Vec<String>,
    pub steps: Vec<Step>,
    /// Facts a reader of the plan should know (fallbacks taken, AZs skipped).
    pub notes: Vec<String>,
    /// What the cluster's owners must know before the change lands: a new
    /// block inside a wider route destination shadows that route for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Rules that admit the VPC's existing CIDRs but not the new block:
    /// pods placed there would be refused by them.
    pub reachability: Vec<ReachabilityWarning>,
    /// Set when the plan expands ahead of a forecast, not a crossed
    /// threshold: which AZ, which measure, how fast, how long is left.
    /// Not part of the fingerprint, so a forecast told once stays told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Box<ForecastTrigger>>,
}

/// A subnet a step refers to: one that exists, or one an earlier step creates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubnetRef {
    Existing(String),
    Planned(Ipv4Net),
}

impl fmt::Display for SubnetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubnetRef::Existing(id) => f.write_str(id),
            SubnetRef::Planned(cidr) => write!(f, "new subnet {cidr}"),
        }
    }
}

/// What the NodeClass must select once the plan has run. Kept in the step so
/// the executor can recompute the patch after a concurrent write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeClassIntent {
    pub mode: SubnetMode,
    /// The selector term for headroom's subnets: `{tags: {<key>: <cluster>}}`.
    pub term: Value,
    /// Tags every managed subnet carries; used to check existing terms.
    pub managed_tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// Associate the block and wait until it is `associated`.
    AssociateVpcCidr {
        vpc_id: String,
        cidr: Ipv4Net,
    },
    /// A pool block another run associated is still `associating`: wait for it.
    AwaitVpcCidr {
        vpc_id: String,
        cidr: Ipv4Net,
    },
    /// Associate a `/netmask_length` block the IPAM pool chooses, wait until
    /// it is `associated`, and check it against the VPC's routes and peers.
    /// The block is unknown until then, so this is the only step of its
    /// plan: the run reads again and plans the subnets in it.
    AllocateVpcCidrFromIpamPool {
        vpc_id: String,
        pool_id: String,
        netmask_length: u8,
        /// The pool's ARN as EC2 gave it, for the preflight's IAM simulation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool_arn: Option<String>,
    },
    /// Give an IPAM pool block back: one that collides with a route or a
    /// peer and holds no subnet (a run that stopped between the association
    /// and its check left it). Only this association id is touched.
    GiveBackVpcCidr {
        vpc_id: String,
        association_id: String,
        cidr: Ipv4Net,
        why: String,
    },
    CreateSubnet {
        vpc_id: String,
        availability_zone: String,
        cidr: Ipv4Net,
        tags: BTreeMap<String, String>,
    },
    AssociateRouteTable {
        route_table_id: String,
        subnet: SubnetRef,
        /// The AZ had no private cluster subnet to copy; this is the main table.
        main_table_fallback: bool,
    },
    #[serde(rename = "create-nodeclass")]
    CreateNodeClass {
        name: String,
        object: Value,
        intent: NodeClassIntent,
    },
    #[serde(rename = "patch-nodeclass")]
    PatchNodeClass {
        name: String,
        /// RFC 6902 operations, led by a `test` of the resourceVersion read.
        patch: Value,
        intent: NodeClassIntent,
    },
    #[serde(rename = "create-nodepool")]
    CreateNodePool {
        name: String,
        object: Value,
    },
}

/// What a step does, without its data: how steps are named in reports,
/// notifications, logs and tests. Matching on this, never on a string, keeps
/// every reader of a plan in step with the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    AssociateVpcCidr,
    AwaitVpcCidr,
    AllocateVpcCidrFromIpamPool,
    /// Giving an IPAM pool block back: one this run allocated that collides
    /// or that a concurrent run's block supersedes (recorded in the report's
    /// changes), or one a stopped run left colliding ([`Step::GiveBackVpcCidr`]).
    DisassociateVpcCidr,
    CreateSubnet,
    AssociateRouteTable,
    CreateNodeclass,
    PatchNodeclass,
    CreateNodepool,
}

impl StepKind {
    pub const ALL: [StepKind; 9] = [
        StepKind::AssociateVpcCidr,
        StepKind::AwaitVpcCidr,
        StepKind::AllocateVpcCidrFromIpamPool,
        StepKind::DisassociateVpcCidr,
        StepKind::CreateSubnet,
        StepKind::AssociateRouteTable,
        StepKind::CreateNodeclass,
        StepKind::PatchNodeclass,
        StepKind::CreateNodepool,
    ];

    /// The kebab-case name used in reports and logs (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::AssociateVpcCidr => "associate-vpc-cidr",
            StepKind::AwaitVpcCidr => "await-vpc-cidr",
            StepKind::AllocateVpcCidrFromIpamPool => "allocate-vpc-cidr-from-ipam-pool",
            StepKind::DisassociateVpcCidr => "disassociate-vpc-cidr",
            StepKind::CreateSubnet => "create-subnet",
            StepKind::AssociateRouteTable => "associate-route-table",
            StepKind::CreateNodeclass => "create-nodeclass",
            StepKind::PatchNodeclass => "patch-nodeclass",
            StepKind::CreateNodepool => "create-nodepool",
        }
    }

    /// Steps that write to the cluster's Kubernetes API rather than to EC2.
    pub fn is_cluster_write(self) -> bool {
        matches!(self, StepKind::CreateNodeclass | StepKind::PatchNodeclass | StepKind::CreateNodepool)
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Step {
    pub fn kind(&self) -> StepKind {
        match self {
            Step::AssociateVpcCidr { .. } => StepKind::AssociateVpcCidr,
            Step::AwaitVpcCidr { .. } => StepKind::AwaitVpcCidr,
            Step::AllocateVpcCidrFromIpamPool { .. } => StepKind::AllocateVpcCidrFromIpamPool,
            Step::GiveBackVpcCidr { .. } => StepKind::DisassociateVpcCidr,
            Step::CreateSubnet { .. } => StepKind::CreateSubnet,
            Step::AssociateRouteTable { .. } => StepKind::AssociateRouteTable,
            Step::CreateNodeClass { .. } => StepKind::CreateNodeclass,
            Step::PatchNodeClass { .. } => StepKind::PatchNodeclass,
            Step::CreateNodePool { .. } => StepKind::CreateNodepool,
        }
    }
}

/// One change a step made, or found already made: the plan's counterpart in
/// the report. Lives beside the plan so verify, report and the cluster code
/// depend on the plan, not on whichever executor applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub step: StepKind,
    /// The resource the step produced or touched (subnet id, association id, …).
    pub resource: String,
    pub detail: String,
    /// The end state was already there; nothing new was created.
    pub already_present: bool,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::AssociateVpcCidr { vpc_id, cidr } => {
                write!(f, "associate CIDR {cidr} with {vpc_id} and wait until associated")
            }
            Step::AwaitVpcCidr { vpc_id, cidr } => write!(f, "wait until CIDR {cidr} of {vpc_id} is associated"),
            Step::AllocateVpcCidrFromIpamPool { vpc_id, pool_id, netmask_length, .. } => write!(
                f,
                "associate a /{netmask_length} from IPAM pool {pool_id} with {vpc_id} (IPAM chooses the block at apply \
                 time), wait until associated, then plan its subnets"
            ),
            Step::GiveBackVpcCidr { vpc_id, association_id, cidr, why } => {
                write!(f, "give {cidr} ({association_id}) of {vpc_id} back to the IPAM pool: {why}")
            }
            Step::CreateSubnet { availability_zone, cidr, .. } => {
                write!(f, "create subnet {cidr} in {availability_zone}")
            }
            Step::AssociateRouteTable { route_table_id, subnet, main_table_fallback } => write!(
                f,
                "associate {subnet} with route table {route_table_id}{}",
                if *main_table_fallback { " (main table: no private cluster subnet in this AZ)" } else { "" }
            ),
            Step::CreateNodeClass { name, .. } => write!(f, "create NodeClass {name}"),
            Step::PatchNodeClass { name, intent, .. } => {
                write!(f, "patch NodeClass {name} to select the managed subnets ({} mode)", intent.mode)
            }
            Step::CreateNodePool { name, .. } => write!(f, "create NodePool {name}"),
        }
    }
}

impl Plan {
    /// A fingerprint of what the plan changes: the CIDR, the subnets, the
    /// route tables, the NodeClass and NodePool, but not the values that
    /// move without a change (the resourceVersion a patch tests). Equal plans
    /// give equal fingerprints in every process (FNV-1a, 32 bits, so the
    /// value survives a round trip through a CloudWatch metric exactly).
    pub fn fingerprint(&self) -> u32 {
        let mut text = format!("{}|{}", self.cluster, self.vpc_id);
        for step in &self.steps {
            text.push('|');
            text.push_str(&match step {
                Step::AssociateVpcCidr { cidr, .. } => format!("associate {cidr}"),
                Step::AwaitVpcCidr { cidr, .. } => format!("await {cidr}"),
                Step::AllocateVpcCidrFromIpamPool { pool_id, netmask_length, .. } => {
                    format!("allocate {pool_id} /{netmask_length}")
                }
                Step::GiveBackVpcCidr { association_id, cidr, .. } => format!("give back {cidr} {association_id}"),
                Step::CreateSubnet { availability_zone, cidr, .. } => format!("subnet {availability_zone} {cidr}"),
                Step::AssociateRouteTable { route_table_id, subnet, .. } => format!("route {subnet} {route_table_id}"),
                Step::CreateNodeClass { name, intent, .. } => format!("create nodeclass {name} {}", intent.mode),
                Step::PatchNodeClass { name, intent, .. } => format!("patch nodeclass {name} {}", intent.mode),
                Step::CreateNodePool { name, .. } => format!("create nodepool {name}"),
            });
        }
        text.bytes().fold(0x811c_9dc5u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193))
    }
}

impl Plan {
    /// The IPAM allocation this plan makes, if it is such a plan
    /// (`(vpc_id, pool_id, netmask_length)`).
    pub fn ipam_allocation(&self) -> Option<(&str, &str, u8)> {
        self.steps.iter().find_map(|s| match s {
            Step::AllocateVpcCidrFromIpamPool { vpc_id, pool_id, netmask_length, .. } => {
                Some((vpc_id.as_str(), pool_id.as_str(), *netmask_length))
            }
            _ => None,
        })
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan for cluster {} (VPC {}):", self.cluster, self.vpc_id)?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "  {}. {step}", i + 1)?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        for warning in &self.warnings {
            writeln!(f, "  warning: {warning}")?;
        }
        for warning in &self.reachability {
            writeln!(f, "  warning: {warning}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::StepKind;

    #[test]
    fn step_kinds_are_named_as_they_serialise() {
        for kind in StepKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str(), "{kind:?}");
            assert_eq!(serde_json::from_value::<StepKind>(kind.as_str().into()).unwrap(), kind);
        }
    }

    #[test]
    fn a_serialised_plan_names_its_steps_by_kind() {
        use super::{Step, SubnetRef};
        let steps = [
            Step::AwaitVpcCidr { vpc_id: "vpc-1".into(), cidr: "100.64.0.0/16".parse().unwrap() },
            Step::AllocateVpcCidrFromIpamPool {
                vpc_id: "vpc-1".into(),
                pool_id: "ipam-pool-1".into(),
                netmask_length: 16,
                pool_arn: None,
            },
            Step::AssociateRouteTable {
                route_table_id: "rtb-1".into(),
                subnet: SubnetRef::Existing("subnet-1".into()),
                main_table_fallback: false,
            },
            Step::CreateNodePool { name: "headroom".into(), object: serde_json::json!({}) },
        ];
        for step in steps {
            assert_eq!(serde_json::to_value(&step).unwrap()["step"], step.kind().as_str(), "{step:?}");
        }
    }
}
