//! A snapshot of one cluster's network: the planner's only input besides the
//! config. The inventory reader (`aws::inventory`, `cluster::auto_mode_api`)
//! fills it; tests build it by hand.

use std::collections::{BTreeMap, HashSet};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::capacity::SubnetCapacity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CidrState {
    Associating,
    Associated,
    Disassociating,
    Disassociated,
    Failing,
    Failed,
}

impl CidrState {
    pub fn parse(state: &str) -> Option<CidrState> {
        Some(match state {
            "associating" => CidrState::Associating,
            "associated" => CidrState::Associated,
            "disassociating" => CidrState::Disassociating,
            "disassociated" => CidrState::Disassociated,
            "failing" => CidrState::Failing,
            "failed" => CidrState::Failed,
            _ => return None,
        })
    }

    /// Holds address space (and a quota slot) or is about to.
    pub fn is_live(self) -> bool {
        matches!(self, CidrState::Associating | CidrState::Associated)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CidrState::Associating => "associating",
            CidrState::Associated => "associated",
            CidrState::Disassociating => "disassociating",
            CidrState::Disassociated => "disassociated",
            CidrState::Failing => "failing",
            CidrState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CidrAssociation {
    pub association_id: String,
    pub cidr: Ipv4Net,
    pub state: CidrState,
    /// Why an association failed, as EC2 reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vpc {
    pub id: String,
    pub primary_cidr: Ipv4Net,
    /// Every IPv4 association, primary included, in any state.
    pub cidr_associations: Vec<CidrAssociation>,
    /// The VPC's own tags (`VPC_OPT_IN_TAG` is checked against them).
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subnet {
    pub id: String,
    pub availability_zone: String,
    pub availability_zone_id: Option<String>,
    pub cidr: Ipv4Net,
    pub tags: BTreeMap<String, String>,
    pub capacity: SubnetCapacity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub destination: Option<Ipv4Net>,
    /// `local`, `igw-…`, `nat-…`, `tgw-…`, `pcx-…`, …
    pub target: String,
}

impl Route {
    pub fn is_local(&self) -> bool {
        self.target == "local"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteTable {
    pub id: String,
    pub is_main: bool,
    pub routes: Vec<Route>,
    /// Subnets explicitly associated with this table.
    pub subnet_ids: Vec<String>,
}

impl RouteTable {
    fn default_route_target(&self) -> Option<&str> {
        self.routes.iter().find(|r| r.destination.is_some_and(|d| d.prefix_len() == 0)).map(|r| r.target.as_str())
    }

    /// A private table sends the internet through a NAT gateway.
    pub fn routes_through_nat(&self) -> bool {
        self.default_route_target().is_some_and(|t| t.starts_with("nat-"))
    }

    pub fn routes_through_internet_gateway(&self) -> bool {
        self.default_route_target().is_some_and(|t| t.starts_with("igw-"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cluster {
    pub name: String,
    /// `resourcesVpcConfig.subnetIds`: where the control plane places its
    /// ENIs. Node capacity is judged on them only when the cluster's API
    /// cannot be read (docs/aws-rules.md, "Which subnets nodes use").
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub cluster_security_group_id: Option<String>,
    /// `computeConfig.nodeRoleArn`: the Auto Mode node role, if EKS reports one.
    pub node_role_arn: Option<String>,
}

/// A VPC peering connection of the cluster's VPC, from either side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Peering {
    pub connection_id: String,
    /// The VPC on the other side.
    pub peer_vpc_id: String,
    /// Every IPv4 CIDR of the peer VPC: a new block may overlap none of them.
    pub peer_cidrs: Vec<Ipv4Net>,
}

/// Which way traffic a rule judges flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

/// A security-group rule or network ACL entry that allows traffic from (or
/// to) an IPv4 CIDR: pods in a new block are refused by those that cover the
/// VPC's existing CIDRs but not the new block.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowRule {
    /// `sg-… (name)` or `acl-…`.
    pub holder: String,
    /// What the rule lets through: `tcp 5432`, `all traffic`, `rule 100 tcp 443`.
    pub rule: String,
    pub direction: Direction,
    pub cidr: Ipv4Net,
}

/// NodeClasses and NodePools as the cluster's API returned them, as raw JSON
/// objects: headroom reads a few fields, extends a few lists, and must keep
/// every other field intact.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AutoModeObjects {
    pub nodeclasses: Vec<Value>,
    pub nodepools: Vec<Value>,
}

fn name_of(object: &Value) -> Option<&str> {
    object.pointer("/metadata/name").and_then(Value::as_str)
}

/// The API group and kind of an EKS Auto Mode NodeClass. Here, at the
/// bottom, because reading which NodeClass a NodePool uses is part of the
/// model; [`crate::nodeclass`] builds objects with them.
pub const NODECLASS_GROUP: &str = "eks.amazonaws.com";
pub const NODECLASS_KIND: &str = "NodeClass";

/// The NodeClass a NodePool launches from: `spec.template.spec.nodeClassRef`,
/// when it refers to an EKS Auto Mode NodeClass.
pub fn nodeclass_ref(nodepool: &Value) -> Option<&str> {
    let reference = nodepool.pointer("/spec/template/spec/nodeClassRef")?;
    let field = |key: &str| reference.get(key).and_then(Value::as_str);
    let group_ok = field("group").is_none_or(|g| g == NODECLASS_GROUP);
    let kind_ok = field("kind").is_none_or(|k| k == NODECLASS_KIND);
    if group_ok && kind_ok { field("name") } else { None }
}

impl AutoModeObjects {
    pub fn nodeclass(&self, name: &str) -> Option<&Value> {
        self.nodeclasses.iter().find(|o| name_of(o) == Some(name))
    }

    pub fn nodepool(&self, name: &str) -> Option<&Value> {
        self.nodepools.iter().find(|o| name_of(o) == Some(name))
    }

    /// Names of the NodePools whose `spec.template.spec.nodeClassRef` names
    /// the NodeClass `nodeclass`, sorted.
    pub fn nodepools_using(&self, nodeclass: &str) -> Vec<&str> {
        let mut names: Vec<&str> =
            self.nodepools.iter().filter(|pool| nodeclass_ref(pool) == Some(nodeclass)).filter_map(name_of).collect();
        names.sort_unstable();
        names
    }
}

/// What headroom learnt from the cluster's Kubernetes API.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ClusterApi {
    Read(AutoModeObjects),
    /// The API could not be read: capacity falls back to the cluster's
    /// subnets and nothing is planned.
    Unreadable {
        reason: String,
    },
}

impl ClusterApi {
    pub fn objects(&self) -> Option<&AutoModeObjects> {
        match self {
            ClusterApi::Read(objects) => Some(objects),
            ClusterApi::Unreadable { .. } => None,
        }
    }
}

/// An EKS access entry of the cluster (ListAccessEntries, DescribeAccessEntry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessEntry {
    pub principal_arn: String,
    /// `STANDARD`, `EC2`, `EC2_LINUX`, …
    pub kind: String,
}

/// The IPAM pool `IPAM_POOL_ID` names, as DescribeIpamPools and
/// GetIpamPoolCidrs describe it (docs/aws-rules.md, "IPAM pools").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamPool {
    pub id: String,
    /// `IpamPoolArn`: names the account that owns the pool, which for a pool
    /// shared through RAM is the IPAM account, not this one.
    pub arn: Option<String>,
    /// `create-complete`, `modify-in-progress`, … as EC2 spells it.
    pub state: String,
    /// `ipv4` or `ipv6`.
    pub address_family: String,
    /// The Region (or Local Zone) the pool allocates in; `None`: no locale.
    pub locale: Option<String>,
    /// Shortest and longest netmask an allocation may have (`None`: no rule).
    pub allocation_min_netmask_length: Option<u8>,
    pub allocation_max_netmask_length: Option<u8>,
    /// The pool's CIDRs in state `provisioned`: what it allocates from.
    pub provisioned_cidrs: Vec<Ipv4Net>,
    /// `AllocationResourceTags`: tags a resource must carry for the pool to
    /// allocate to it (the VPC, here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocation_resource_tags: BTreeMap<String, String>,
    /// What the pool has given out (GetIpamPoolAllocations), this VPC's
    /// blocks included; `None`: not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocations: Option<Vec<IpamAllocation>>,
}

/// One allocation of an IPAM pool (GetIpamPoolAllocations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamAllocation {
    pub cidr: Ipv4Net,
    /// The VPC (or other resource) holding it, when IPAM says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
}

impl IpamPool {
    /// Whether `cidr` lies inside one of the pool's provisioned CIDRs.
    pub fn holds(&self, cidr: &Ipv4Net) -> bool {
        self.provisioned_cidrs.iter().any(|p| p.contains(cidr))
    }

    /// The tags of `AllocationResourceTags` that `tags` (the VPC's) lack or
    /// carry with another value, as `key=value`, sorted.
    pub fn missing_allocation_tags(&self, tags: &BTreeMap<String, String>) -> Vec<String> {
        self.allocation_resource_tags
            .iter()
            .filter(|(key, value)| tags.get(*key) != Some(*value))
            .map(|(key, value)| format!("{key}={value}"))
            .collect()
    }

    /// The allocated blocks, when read.
    pub fn allocated_cidrs(&self) -> Vec<Ipv4Net> {
        self.allocations.iter().flatten().map(|a| a.cidr).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkSnapshot {
    pub region: String,
    pub cluster: Cluster,
    pub vpc: Vpc,
    /// All subnets of the VPC.
    pub subnets: Vec<Subnet>,
    pub route_tables: Vec<RouteTable>,
    /// Active peering connections, with the VPC as requester or accepter.
    pub peerings: Vec<Peering>,
    /// Allow rules of the VPC's security groups (ingress) and network ACLs
    /// (both ways) that name an IPv4 CIDR.
    pub allow_rules: Vec<AllowRule>,
    pub cluster_api: ClusterApi,
    /// The access entries of the node role a NodeClass of headroom's would
    /// use, read only when that role is not the cluster's Auto Mode node
    /// role (`None`: not read).
    pub node_role_access_entries: Option<Vec<AccessEntry>>,
    /// The IPAM pool new VPC CIDRs come from, read only when `IPAM_POOL_ID`
    /// is set (`None`: not configured, or not read at this depth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipam_pool: Option<IpamPool>,
}

impl NetworkSnapshot {
    pub fn subnet(&self, id: &str) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.id == id)
    }

    pub fn main_route_table(&self) -> Option<&RouteTable> {
        self.route_tables.iter().find(|t| t.is_main)
    }

    pub fn explicit_route_table_of(&self, subnet_id: &str) -> Option<&RouteTable> {
        self.route_tables.iter().find(|t| t.subnet_ids.iter().any(|s| s == subnet_id))
    }

    /// The cluster's subnets that exist in this VPC.
    pub fn cluster_subnets(&self) -> impl Iterator<Item = &Subnet> {
        let ids: HashSet<&str> = self.cluster.subnet_ids.iter().map(String::as_str).collect();
        self.subnets.iter().filter(move |s| ids.contains(s.id.as_str()))
    }

    /// Subnets headroom created for this cluster.
    pub fn managed_subnets<'a>(&'a self, tag_key: &'a str) -> impl Iterator<Item = &'a Subnet> + 'a {
        self.subnets.iter().filter(move |s| s.tags.get(tag_key).is_some_and(|v| v == &self.cluster.name))
    }
}
