//! How much headroom a cluster has, per AZ and per subnet, as the functions
//! judge it: the answer to `headroom status`. Pure: built from a snapshot.
//!
//! The AZ totals are the ones the metrics publish and the planner compares
//! with the thresholds ([`crate::node_subnets`]); the subnets are those
//! totals' parts, each with the NodeClasses and NodePools that use it.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::config::{Config, SubnetMode, Thresholds};
use crate::forecast::ClusterForecast;
use crate::model::NetworkSnapshot;
use crate::node_subnets::{CapacityBasis, SubnetUsers, node_subnets, users_by_subnet};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub cluster: String,
    pub region: String,
    pub vpc_id: String,
    /// The VPC's CIDR blocks and their association states.
    pub vpc_cidrs: Vec<VpcCidr>,
    pub thresholds: Thresholds,
    /// The NodeClass headroom creates or extends, and in which mode.
    pub nodeclass: String,
    pub subnet_mode: SubnetMode,
    /// Which subnets the figures count, and why.
    pub basis: CapacityBasis,
    pub azs: Vec<AzStatus>,
    pub subnets: Vec<SubnetStatus>,
    /// Each AZ's trend and time to exhaustion, when the history was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ClusterForecast>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpcCidr {
    pub cidr: Ipv4Net,
    pub state: String,
    pub primary: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AzStatus {
    pub availability_zone: String,
    pub subnets: usize,
    pub total_ips: u64,
    pub free_ips: u64,
    pub free_prefixes: u64,
    pub utilisation_percent: f64,
    /// Fewer free IPs than `MIN_FREE_IPS_PER_AZ`.
    pub ips_below_threshold: bool,
    /// Fewer free /28 prefixes than `MIN_FREE_PREFIXES_PER_AZ`.
    pub prefixes_below_threshold: bool,
}

impl AzStatus {
    pub fn needs_space(&self) -> bool {
        self.ips_below_threshold || self.prefixes_below_threshold
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetStatus {
    pub id: String,
    pub availability_zone: String,
    pub cidr: Ipv4Net,
    pub name: Option<String>,
    pub free_ips: u64,
    pub free_prefixes: u64,
    /// headroom created it (it carries `MANAGED_TAG_KEY=<cluster>`).
    pub managed: bool,
    #[serde(flatten)]
    pub users: SubnetUsers,
}

impl ClusterStatus {
    pub fn from_snapshot(snapshot: &NetworkSnapshot, config: &Config) -> Self {
        let used = node_subnets(snapshot, config);
        let mut users = users_by_subnet(snapshot);
        let thresholds = config.thresholds;
        let azs = used
            .capacity_by_az()
            .into_iter()
            .map(|(az, c)| AzStatus {
                subnets: c.subnet_ids.len(),
                total_ips: c.total_ips,
                free_ips: c.free_ips,
                free_prefixes: c.free_prefixes,
                utilisation_percent: (c.utilisation_percent() * 10.0).round() / 10.0,
                ips_below_threshold: c.free_ips < thresholds.min_free_ips_per_az,
                prefixes_below_threshold: c.free_prefixes < thresholds.min_free_prefixes_per_az,
                availability_zone: az,
            })
            .collect();
        let cluster = &snapshot.cluster.name;
        let subnets = used
            .subnets
            .iter()
            .map(|s| SubnetStatus {
                id: s.id.clone(),
                availability_zone: s.availability_zone.clone(),
                cidr: s.cidr,
                name: s.tags.get("Name").cloned(),
                free_ips: s.capacity.free_ips,
                free_prefixes: s.capacity.free_prefixes,
                managed: s.tags.get(&config.managed_tag_key) == Some(cluster),
                users: users.remove(&s.id).unwrap_or_default(),
            })
            .collect();
        let vpc = &snapshot.vpc;
        ClusterStatus {
            cluster: cluster.clone(),
            region: snapshot.region.clone(),
            vpc_id: vpc.id.clone(),
            vpc_cidrs: vpc
                .cidr_associations
                .iter()
                .map(|a| VpcCidr {
                    cidr: a.cidr,
                    state: a.state.as_str().to_string(),
                    primary: a.cidr == vpc.primary_cidr,
                })
                .collect(),
            thresholds,
            nodeclass: config.nodeclass_name.clone(),
            subnet_mode: config.subnet_mode,
            basis: used.basis,
            azs,
            subnets,
            forecast: None,
        }
    }

    /// AZs below a threshold: where the functions would add space.
    pub fn starved_azs(&self) -> impl Iterator<Item = &AzStatus> {
        self.azs.iter().filter(|az| az.needs_space())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{
        lab, lab_with_routed_managed_subnets, nodeclass_selecting_managed_subnets, put_used_nodeclass,
    };

    fn config() -> Config {
        Config { clusters: vec!["demo-cluster".into()], ..Config::default() }
    }

    #[test]
    fn the_exhausted_lab_is_below_the_thresholds_in_every_az_on_the_subnets_nodes_use() {
        let status = ClusterStatus::from_snapshot(&lab(), &config());
        assert_eq!(status.starved_azs().count(), 3);
        let ids: Vec<&str> = status.subnets.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["subnet-priv-a", "subnet-priv-b", "subnet-priv-c"], "not the public subnets");
        for subnet in &status.subnets {
            assert_eq!(subnet.users.nodes_of.iter().collect::<Vec<_>>(), ["default"]);
            assert_eq!(subnet.users.nodepools.iter().collect::<Vec<_>>(), ["general-purpose", "system"]);
            assert!(subnet.users.pods_of.is_empty() && !subnet.managed);
        }
        let free: u64 = status.subnets.iter().filter(|s| s.availability_zone == "us-west-2a").map(|s| s.free_ips).sum();
        assert_eq!(status.azs[0].free_ips, free, "an AZ's total is its subnets' sum");
    }

    #[test]
    fn managed_subnets_count_once_a_nodepool_uses_their_nodeclass_and_name_who_uses_them() {
        let mut snapshot = lab_with_routed_managed_subnets();
        let unused = ClusterStatus::from_snapshot(&snapshot, &config());
        assert!(unused.subnets.iter().all(|s| !s.managed), "no NodePool references headroom: not capacity");

        put_used_nodeclass(&mut snapshot, nodeclass_selecting_managed_subnets());
        let used = ClusterStatus::from_snapshot(&snapshot, &config());
        assert_eq!(used.starved_azs().count(), 0);
        let managed: Vec<&SubnetStatus> = used.subnets.iter().filter(|s| s.managed).collect();
        assert_eq!(managed.len(), 3);
        for subnet in managed {
            assert_eq!(subnet.users.nodes_of.iter().collect::<Vec<_>>(), ["headroom"], "{subnet:?}");
            assert_eq!(subnet.users.nodepools.iter().collect::<Vec<_>>(), ["platform"], "{subnet:?}");
        }
    }

    #[test]
    fn pod_subnets_are_told_apart_from_node_subnets() {
        let mut snapshot = lab_with_routed_managed_subnets();
        let mut class = nodeclass_selecting_managed_subnets();
        let term = class["spec"]["subnetSelectorTerms"].take();
        class["spec"]["subnetSelectorTerms"] = serde_json::json!([{"id": "subnet-priv-a"}]);
        class["spec"]["podSubnetSelectorTerms"] = term;
        put_used_nodeclass(&mut snapshot, class);
        let status = ClusterStatus::from_snapshot(&snapshot, &config());
        let priv_a = status.subnets.iter().find(|s| s.id == "subnet-priv-a").unwrap();
        assert!(priv_a.users.nodes_of.contains("headroom") && priv_a.users.nodes_of.contains("default"));
        for subnet in status.subnets.iter().filter(|s| s.managed) {
            assert_eq!(subnet.users.pods_of.iter().collect::<Vec<_>>(), ["headroom"], "{subnet:?}");
            assert!(subnet.users.nodes_of.is_empty(), "{subnet:?}");
        }
    }
}
