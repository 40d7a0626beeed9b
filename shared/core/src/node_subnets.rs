//! Which subnets the cluster's nodes and pods really use: the capacity that
//! counts. Pure.
//!
//! EKS Auto Mode launches nodes from NodePools, each of which names a
//! NodeClass; a NodeClass's `status.subnets` are the subnets its selectors
//! resolved to, and its `podSubnetSelectorTerms` (if any) pick the subnets
//! pods take their addresses from. The cluster's own
//! `resourcesVpcConfig.subnetIds` are where the control plane puts its
//! ENIs: often the same subnets, but not necessarily (docs/aws-rules.md,
//! "Which subnets nodes use"). So capacity is judged on the NodeClasses that
//! NodePools reference, and on the cluster's subnets only when the cluster's
//! API could not be read. The metrics, the alarms and the planner all use
//! this one set.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::capacity::AzCapacity;
use crate::config::Config;
use crate::model::{ClusterApi, NetworkSnapshot, RouteTable, Subnet};
use crate::nodeclass::{self, SelectorTarget};

/// Where the capacity figures come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum CapacityBasis {
    /// The subnets of the NodeClasses that NodePools reference.
    #[serde(rename_all = "camelCase")]
    NodeClasses {
        /// The NodeClasses counted, by name.
        nodeclasses: Vec<String>,
        /// Fallbacks taken: a status not resolved yet, a NodeClass missing.
        notes: Vec<String>,
    },
    /// The cluster's own private subnets and headroom's: the cluster's API
    /// could not be read.
    ClusterSubnets { reason: String },
}

/// The subnets whose free space counts, each once, by AZ then CIDR.
#[derive(Debug, Clone)]
pub struct NodeSubnets<'a> {
    pub subnets: Vec<&'a Subnet>,
    pub basis: CapacityBasis,
}

impl NodeSubnets<'_> {
    pub fn ids(&self) -> Vec<String> {
        self.subnets.iter().map(|s| s.id.clone()).collect()
    }

    /// Per-AZ capacity of these subnets, keyed and ordered by AZ name.
    pub fn capacity_by_az(&self) -> BTreeMap<String, AzCapacity> {
        let mut totals: BTreeMap<String, AzCapacity> = BTreeMap::new();
        for subnet in &self.subnets {
            totals.entry(subnet.availability_zone.clone()).or_default().add(&subnet.id, &subnet.capacity);
        }
        totals
    }

    /// AZs the cluster's nodes run in.
    pub fn azs(&self) -> BTreeSet<String> {
        self.subnets.iter().map(|s| s.availability_zone.clone()).collect()
    }
}

fn target(subnet: &Subnet) -> SelectorTarget {
    SelectorTarget { id: Some(subnet.id.clone()), tags: subnet.tags.clone() }
}

fn selected_by<'a>(snapshot: &'a NetworkSnapshot, terms: Option<&'a Value>) -> impl Iterator<Item = &'a Subnet> + 'a {
    snapshot.subnets.iter().filter(move |s| nodeclass::terms_select(terms, &target(s)))
}

/// The subnets one NodeClass uses.
struct NodeClassSubnets<'a> {
    /// Its nodes': `status.subnets`, or its `subnetSelectorTerms` while
    /// Auto Mode has not resolved them (`status_resolved` false).
    nodes: Vec<&'a Subnet>,
    /// Its pods': Auto Mode reports no status for them, so the
    /// `podSubnetSelectorTerms` decide.
    pods: Vec<&'a Subnet>,
    status_resolved: bool,
}

fn subnets_of<'a>(snapshot: &'a NetworkSnapshot, class: &'a Value) -> NodeClassSubnets<'a> {
    let (nodes, status_resolved) = match nodeclass::status_subnets(class) {
        Some(listed) => {
            let listed: HashSet<&str> = listed.into_iter().collect();
            (snapshot.subnets.iter().filter(|s| listed.contains(s.id.as_str())).collect(), true)
        }
        None => (selected_by(snapshot, class.pointer("/spec/subnetSelectorTerms")).collect(), false),
    };
    let pods = match class.pointer("/spec/podSubnetSelectorTerms").filter(|t| !t.is_null()) {
        Some(terms) => selected_by(snapshot, Some(terms)).collect(),
        None => Vec::new(),
    };
    NodeClassSubnets { nodes, pods, status_resolved }
}

/// The subnets nodes and pods of the cluster use, and where that came from.
pub fn node_subnets<'a>(snapshot: &'a NetworkSnapshot, config: &Config) -> NodeSubnets<'a> {
    match &snapshot.cluster_api {
        ClusterApi::Read(objects) => {
            // Each referenced NodeClass once, in name order.
            let names: BTreeSet<&str> = objects.nodepools.iter().filter_map(nodeclass::nodeclass_ref).collect();
            let mut notes = Vec::new();
            let mut subnets: Vec<&Subnet> = Vec::new();
            let mut counted = Vec::new();
            for name in names {
                let Some(class) = objects.nodeclass(name) else {
                    notes.push(format!("a NodePool references NodeClass {name}, which does not exist"));
                    continue;
                };
                counted.push(name.to_string());
                let used = subnets_of(snapshot, class);
                if !used.status_resolved {
                    notes.push(format!(
                        "NodeClass {name} has no status.subnets yet; its subnetSelectorTerms were evaluated instead"
                    ));
                }
                subnets.extend(used.nodes);
                subnets.extend(used.pods);
            }
            NodeSubnets::sorted(subnets, CapacityBasis::NodeClasses { nodeclasses: counted, notes })
        }
        ClusterApi::Unreadable { reason } => {
            let (cluster, key) = (&snapshot.cluster.name, config.managed_tag_key.as_str());
            let managed = snapshot.subnets.iter().filter(|s| s.tags.get(key) == Some(cluster));
            let subnets = cluster_node_subnets(snapshot).into_iter().chain(managed).collect();
            let basis = CapacityBasis::ClusterSubnets {
                reason: format!(
                    "the cluster's Kubernetes API could not be read ({reason}), so capacity is judged on the cluster's own subnets and headroom's"
                ),
            };
            NodeSubnets::sorted(subnets, basis)
        }
    }
}

/// Who uses a subnet: the NodeClasses that select it and the NodePools
/// that launch nodes from those NodeClasses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetUsers {
    /// NodeClasses whose nodes use the subnet (`status.subnets`, or the
    /// `subnetSelectorTerms` while the status is not resolved).
    pub nodes_of: BTreeSet<String>,
    /// NodeClasses whose pods take addresses from it (`podSubnetSelectorTerms`).
    pub pods_of: BTreeSet<String>,
    /// NodePools that reference one of those NodeClasses.
    pub nodepools: BTreeSet<String>,
}

/// Every subnet of the snapshot that a NodePool-referenced NodeClass uses,
/// by subnet id, with who uses it. Empty when the cluster's API was not read.
pub fn users_by_subnet(snapshot: &NetworkSnapshot) -> BTreeMap<String, SubnetUsers> {
    let mut users: BTreeMap<String, SubnetUsers> = BTreeMap::new();
    let Some(objects) = snapshot.cluster_api.objects() else {
        return users;
    };
    for pool in &objects.nodepools {
        let Some(name) = nodeclass::nodeclass_ref(pool) else { continue };
        let Some(class) = objects.nodeclass(name) else { continue };
        let pool_name = pool.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let used = subnets_of(snapshot, class);
        let uses = used.nodes.into_iter().map(|s| (s, false)).chain(used.pods.into_iter().map(|s| (s, true)));
        for (subnet, pods) in uses {
            let entry = users.entry(subnet.id.clone()).or_default();
            if pods { &mut entry.pods_of } else { &mut entry.nodes_of }.insert(name.to_string());
            entry.nodepools.insert(pool_name.to_string());
        }
    }
    users
}

impl<'a> NodeSubnets<'a> {
    fn sorted(mut subnets: Vec<&'a Subnet>, basis: CapacityBasis) -> Self {
        subnets.sort_by(|a, b| (&a.availability_zone, a.cidr, &a.id).cmp(&(&b.availability_zone, b.cidr, &b.id)));
        subnets.dedup_by(|a, b| a.id == b.id);
        NodeSubnets { subnets, basis }
    }
}

/// The cluster's subnets that can hold nodes: those not routed to an
/// internet gateway, or all of them if none is private.
pub fn cluster_node_subnets(snapshot: &NetworkSnapshot) -> Vec<&Subnet> {
    let cluster: Vec<&Subnet> = snapshot.cluster_subnets().collect();
    let main = snapshot.main_route_table();
    let explicit = explicit_tables(&snapshot.route_tables);
    let private: Vec<&Subnet> = cluster
        .iter()
        .copied()
        .filter(|s| {
            !explicit.get(s.id.as_str()).copied().or(main).is_some_and(RouteTable::routes_through_internet_gateway)
        })
        .collect();
    if private.is_empty() { cluster } else { private }
}

/// Each subnet's explicitly associated table, indexed once: the first table
/// that lists a subnet wins.
pub fn explicit_tables(tables: &[RouteTable]) -> std::collections::HashMap<&str, &RouteTable> {
    let mut index = std::collections::HashMap::new();
    for table in tables {
        for subnet_id in &table.subnet_ids {
            index.entry(subnet_id.as_str()).or_insert(table);
        }
    }
    index
}
