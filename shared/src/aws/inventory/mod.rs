//! Reads one cluster's network into a [`NetworkSnapshot`], one file per
//! resource: the VPC, subnets and their occupancy, route tables, peerings,
//! security rules, access entries and the IPAM pool.
//!
//! Every Describe, Get and List call follows its `NextToken` to the end,
//! with a page size set where the API takes one (EC2 refuses `MaxResults`
//! with explicit ids, so lookups by id are single calls).
//!
//! Independent reads run concurrently: after DescribeCluster (made by
//! [`crate::cluster::ClusterAccess`], which owns it, and, where the API
//! omits the VPC id, one DescribeSubnets to find it), the VPC, its
//! subnets, route tables, network interfaces and peering connections are
//! read at once, and the subnet CIDR reservations of the subnets known to
//! matter follow without waiting for the rest. [`Occupancy`] then reads the
//! reservations of any other subnet the capacity needs.

use std::collections::HashMap;

use aws_sdk_ec2::types::Filter;
use futures::future;
use ipnet::Ipv4Net;

use crate::cluster::ClusterDescription;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{
    AccessEntry, AllowRule, Cluster, ClusterApi, IpamPool, NetworkSnapshot, Peering, RouteTable, Subnet, Vpc,
};

mod access_entries;
mod allow_rules;
mod ipam;
mod peerings;
mod route_tables;
mod subnets;
mod vpc;

pub use access_entries::read_access_entries_for;
use allow_rules::read_allow_rules;
pub use ipam::read_ipam_pool;
pub(crate) use peerings::read_peerings;
pub(crate) use route_tables::read_route_tables;
pub use subnets::{Occupancy, RawSubnet, read_subnets};
use subnets::{read_interface_usage, read_reservations};
use vpc::vpc_id_of;
pub use vpc::{locate_interface, read_vpc};

/// Page sizes: the most each API returns per call.
pub const SUBNET_PAGE: i32 = 1000;

pub const ROUTE_TABLE_PAGE: i32 = 100;

pub const INTERFACE_PAGE: i32 = 1000;

pub const VPC_PAGE: i32 = 1000;

pub const PEERING_PAGE: i32 = 1000;

pub const RESERVATION_PAGE: i32 = 1000;

pub const ACCESS_ENTRY_PAGE: i32 = 100;

pub const SECURITY_GROUP_PAGE: i32 = 1000;

pub const NETWORK_ACL_PAGE: i32 = 100;

pub const IPAM_POOL_CIDR_PAGE: i32 = 1000;

pub const IPAM_POOL_ALLOCATION_PAGE: i32 = 1000;

pub(crate) fn filter(name: &str, value: impl Into<String>) -> Filter {
    Filter::builder().name(name).values(value).build()
}

fn parse_net(context: &str, cidr: Option<&str>) -> Result<Ipv4Net> {
    let cidr = cidr.unwrap_or_default();
    cidr.parse::<Ipv4Net>().map(|n| n.trunc()).map_err(|_| Error::Aws {
        operation: "Describe",
        message: format!("{context} has an unparsable IPv4 CIDR {cidr:?}"),
        retryable: false,
    })
}

/// How much of the network to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Everything, with ENIs and CIDR reservations for exact capacity.
    WithCapacity,
    /// CIDRs, subnets and route tables only: enough to verify a plan.
    Structure,
}

/// The cluster's VPC as EC2 describes it.
#[derive(Debug)]
pub struct Network {
    pub vpc: Vpc,
    /// Every subnet of the VPC, capacity set as far as [`Occupancy`] allows.
    pub subnets: Vec<Subnet>,
    pub route_tables: Vec<RouteTable>,
    pub peerings: Vec<Peering>,
    pub allow_rules: Vec<AllowRule>,
    /// The IPAM pool of `IPAM_POOL_ID`, read with everything else when set.
    pub ipam_pool: Option<IpamPool>,
}

impl Network {
    /// The snapshot of `cluster`, with what its Kubernetes API said.
    pub fn into_snapshot(
        self,
        region: &str,
        cluster: &ClusterDescription,
        cluster_api: ClusterApi,
        node_role_access_entries: Option<Vec<AccessEntry>>,
    ) -> NetworkSnapshot {
        NetworkSnapshot {
            region: region.to_string(),
            cluster: Cluster {
                name: cluster.name.clone(),
                subnet_ids: cluster.subnet_ids.clone(),
                security_group_ids: cluster.security_group_ids.clone(),
                cluster_security_group_id: cluster.cluster_security_group_id.clone(),
                node_role_arn: cluster.node_role_arn.clone(),
            },
            vpc: self.vpc,
            subnets: self.subnets,
            route_tables: self.route_tables,
            peerings: self.peerings,
            allow_rules: self.allow_rules,
            cluster_api,
            node_role_access_entries,
            ipam_pool: self.ipam_pool,
        }
    }
}

/// The whole network of one cluster; the NodeClasses are read by the
/// caller (`cluster::auto_mode_api`), side by side.
///
/// Two chains run side by side, so the critical path is DescribeCluster
/// (done by the caller), then one round of reads (two where the VPC id must
/// first be looked up):
/// - the cluster subnets' CIDR reservations (their ids are already known,
///   and they usually are the node subnets);
/// - the VPC id if needed, then the VPC, its subnets (then the reservations of
///   headroom's own subnets), route tables, network interfaces and peering
///   connections at once.
pub async fn read_network(
    ec2: &aws_sdk_ec2::Client,
    cluster: &ClusterDescription,
    config: &Config,
    depth: Depth,
) -> Result<(Network, Occupancy)> {
    let with_capacity = depth == Depth::WithCapacity;
    let wait = config.consistency_wait;
    let cluster_reservations = async {
        if !with_capacity {
            return Ok(Vec::new());
        }
        let reads = cluster
            .subnet_ids
            .iter()
            .map(|id| async move { Ok::<_, Error>((id.clone(), read_reservations(ec2, id, wait).await?)) });
        future::try_join_all(reads).await
    };
    let vpc_reads = async {
        let vpc_id = vpc_id_of(ec2, cluster, wait).await?;
        let subnets = async {
            let subnets = read_subnets(ec2, vec![filter("vpc-id", vpc_id.clone())]).await?;
            let managed: Vec<String> = subnets
                .iter()
                .filter(|s| !cluster.subnet_ids.contains(&s.id))
                .filter(|s| s.tags.get(&config.managed_tag_key).is_some_and(|v| v == &cluster.name))
                .map(|s| s.id.clone())
                .collect();
            let reads = managed
                .iter()
                .filter(|_| with_capacity)
                .map(|id| async move { Ok::<_, Error>((id.clone(), read_reservations(ec2, id, wait).await?)) });
            let reservations = future::try_join_all(reads).await?;
            Ok::<_, Error>((subnets, reservations))
        };
        // What only planning needs: the ENIs, the peers, the allow rules.
        let planning = async {
            if !with_capacity {
                return Ok((HashMap::new(), Vec::new(), Vec::new()));
            }
            future::try_join3(
                read_interface_usage(ec2, &vpc_id),
                read_peerings(ec2, &vpc_id),
                read_allow_rules(ec2, &vpc_id),
            )
            .await
        };
        future::try_join4(read_vpc(ec2, &vpc_id, wait), subnets, read_route_tables(ec2, &vpc_id), planning).await
    };
    // Only planning needs the pool, and only when IPAM_POOL_ID is set: the
    // other paths make no extra call.
    let ipam_pool = async {
        match (&config.ipam_pool_id, with_capacity) {
            (Some(id), true) => read_ipam_pool(ec2, id).await.map(Some),
            _ => Ok(None),
        }
    };
    let (
        (vpc, (subnets, managed_reservations), route_tables, (usage, peerings, allow_rules)),
        cluster_reservations,
        ipam_pool,
    ) = future::try_join3(vpc_reads, cluster_reservations, ipam_pool).await?;

    let mut occupancy = Occupancy { usage, wait, ..Occupancy::default() };
    for raw in &subnets {
        occupancy.reported_free.insert(raw.id.clone(), raw.available_ip_address_count);
    }
    for (id, reservations) in cluster_reservations.into_iter().chain(managed_reservations) {
        occupancy.usage.entry(id.clone()).or_default().reservations = reservations;
        occupancy.reservations_read.insert(id);
    }
    let mut subnets: Vec<Subnet> = subnets
        .into_iter()
        .map(|raw| Subnet {
            id: raw.id,
            availability_zone: raw.availability_zone,
            availability_zone_id: raw.availability_zone_id,
            cidr: raw.cidr,
            tags: raw.tags,
            capacity: Default::default(),
        })
        .collect();
    occupancy.apply(&mut subnets);
    Ok((Network { vpc, subnets, route_tables, peerings, allow_rules, ipam_pool }, occupancy))
}
