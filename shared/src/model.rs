//! A snapshot of one cluster's network: the planner's only input besides the
//! config. The inventory reader (`aws::inventory`, `cluster::nodeclass`)
//! fills it; tests build it by hand.

use std::collections::{BTreeMap, HashSet};

use ipnet::Ipv4Net;
use serde::Serialize;
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
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub cluster_security_group_id: Option<String>,
}

/// The NodeClasses the planner looks at, as raw JSON objects: headroom only
/// reads and extends a few fields and must keep every other one intact.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeClasses {
    /// The configured NodeClass, if it exists.
    pub managed: Option<Value>,
    /// The built-in `default` NodeClass, if it exists: the source of `role`
    /// and selectors for a new NodeClass.
    pub default: Option<Value>,
    /// Whether the configured NodePool exists (None: no NodePool configured).
    pub nodepool_exists: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkSnapshot {
    pub region: String,
    pub cluster: Cluster,
    pub vpc: Vpc,
    /// All subnets of the VPC.
    pub subnets: Vec<Subnet>,
    pub route_tables: Vec<RouteTable>,
    pub nodeclasses: NodeClasses,
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
