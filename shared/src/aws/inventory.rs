//! Reads one cluster's network into a [`NetworkSnapshot`].
//!
//! Independent reads run concurrently: after DescribeCluster (and, where the
//! API omits the VPC id, one DescribeSubnets to find it), the VPC, its
//! subnets, route tables and network interfaces are read at once, and the
//! subnet CIDR reservations follow the subnets without waiting for the rest.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use aws_sdk_ec2::types::Filter;
use futures::future;
use ipnet::Ipv4Net;

use super::errors::aws_error;
use crate::capacity::{self, AddressUsage};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{CidrAssociation, CidrState, Cluster, NetworkSnapshot, NodeClasses, Route, RouteTable, Subnet, Vpc};

/// What DescribeCluster tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub name: String,
    /// Absent in some emulators; derived from the subnets then.
    pub vpc_id: Option<String>,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub cluster_security_group_id: Option<String>,
}

pub async fn describe_cluster(eks: &aws_sdk_eks::Client, name: &str) -> Result<ClusterInfo> {
    let out = eks.describe_cluster().name(name).send().await.map_err(|e| aws_error("DescribeCluster", e))?;
    let cluster = out.cluster().ok_or_else(|| Error::Inventory {
        cluster: name.to_string(),
        reason: "DescribeCluster returned no cluster".into(),
    })?;
    let vpc = cluster.resources_vpc_config();
    Ok(ClusterInfo {
        name: name.to_string(),
        vpc_id: vpc.and_then(|v| v.vpc_id()).filter(|v| !v.is_empty()).map(String::from),
        subnet_ids: vpc.map(|v| v.subnet_ids().to_vec()).unwrap_or_default(),
        security_group_ids: vpc.map(|v| v.security_group_ids().to_vec()).unwrap_or_default(),
        cluster_security_group_id: vpc.and_then(|v| v.cluster_security_group_id()).map(String::from),
    })
}

fn filter(name: &str, value: impl Into<String>) -> Filter {
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

/// The VPC of the cluster: from DescribeCluster, else from its first subnet.
async fn vpc_id_of(ec2: &aws_sdk_ec2::Client, cluster: &ClusterInfo) -> Result<String> {
    if let Some(id) = &cluster.vpc_id {
        return Ok(id.clone());
    }
    let first = cluster.subnet_ids.first().ok_or_else(|| Error::Inventory {
        cluster: cluster.name.clone(),
        reason: "DescribeCluster lists no subnets and no VPC".into(),
    })?;
    let out = ec2.describe_subnets().subnet_ids(first).send().await.map_err(|e| aws_error("DescribeSubnets", e))?;
    out.subnets().first().and_then(|s| s.vpc_id()).map(String::from).ok_or_else(|| Error::Inventory {
        cluster: cluster.name.clone(),
        reason: format!("subnet {first} of the cluster does not exist"),
    })
}

pub async fn read_vpc(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<Vpc> {
    let out = ec2.describe_vpcs().vpc_ids(vpc_id).send().await.map_err(|e| aws_error("DescribeVpcs", e))?;
    let vpc = out.vpcs().first().ok_or_else(|| Error::Aws {
        operation: "DescribeVpcs",
        message: format!("VPC {vpc_id} not found"),
        retryable: false,
    })?;
    let primary_cidr = parse_net(vpc_id, vpc.cidr_block())?;
    let mut cidr_associations = Vec::new();
    for a in vpc.cidr_block_association_set() {
        let state = a
            .cidr_block_state()
            .and_then(|s| s.state())
            .and_then(|s| CidrState::parse(s.as_str()))
            .unwrap_or(CidrState::Associating);
        cidr_associations.push(CidrAssociation {
            association_id: a.association_id().unwrap_or_default().to_string(),
            cidr: parse_net(vpc_id, a.cidr_block())?,
            state,
            status_message: a.cidr_block_state().and_then(|s| s.status_message()).map(String::from),
        });
    }
    Ok(Vpc { id: vpc_id.to_string(), primary_cidr, cidr_associations })
}

/// A subnet as EC2 describes it, before its capacity is known.
pub struct RawSubnet {
    pub id: String,
    pub availability_zone: String,
    pub availability_zone_id: Option<String>,
    pub cidr: Ipv4Net,
    pub tags: BTreeMap<String, String>,
    pub available_ip_address_count: Option<u64>,
}

pub async fn read_subnets(ec2: &aws_sdk_ec2::Client, filters: Vec<Filter>) -> Result<Vec<RawSubnet>> {
    let subnets: Vec<aws_sdk_ec2::types::Subnet> = ec2
        .describe_subnets()
        .set_filters(Some(filters))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| aws_error("DescribeSubnets", e))?;
    subnets
        .into_iter()
        .filter(|s| s.cidr_block().is_some())
        .map(|s| {
            let id = s.subnet_id().unwrap_or_default().to_string();
            Ok(RawSubnet {
                cidr: parse_net(&id, s.cidr_block())?,
                availability_zone: s.availability_zone().unwrap_or_default().to_string(),
                availability_zone_id: s.availability_zone_id().map(String::from),
                tags: s
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
                    .collect(),
                available_ip_address_count: s.available_ip_address_count().and_then(|n| u64::try_from(n).ok()),
                id,
            })
        })
        .collect()
}

async fn read_route_tables(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<Vec<RouteTable>> {
    let tables: Vec<aws_sdk_ec2::types::RouteTable> = ec2
        .describe_route_tables()
        .filters(filter("vpc-id", vpc_id))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| aws_error("DescribeRouteTables", e))?;
    Ok(tables
        .into_iter()
        .map(|t| {
            let associations = t.associations();
            RouteTable {
                id: t.route_table_id().unwrap_or_default().to_string(),
                is_main: associations.iter().any(|a| a.main() == Some(true)),
                subnet_ids: associations.iter().filter_map(|a| a.subnet_id()).map(String::from).collect(),
                routes: t
                    .routes()
                    .iter()
                    .map(|r| Route {
                        destination: r.destination_cidr_block().and_then(|d| d.parse().ok()),
                        target: [
                            r.gateway_id(),
                            r.nat_gateway_id(),
                            r.transit_gateway_id(),
                            r.vpc_peering_connection_id(),
                            r.network_interface_id(),
                            r.instance_id(),
                            r.local_gateway_id(),
                            r.carrier_gateway_id(),
                            r.egress_only_internet_gateway_id(),
                            r.core_network_arn(),
                        ]
                        .into_iter()
                        .flatten()
                        .next()
                        .unwrap_or("unknown")
                        .to_string(),
                    })
                    .collect(),
            }
        })
        .collect())
}

/// Private IPs and prefixes of every ENI in the VPC, by subnet.
async fn read_interface_usage(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<HashMap<String, AddressUsage>> {
    let interfaces: Vec<aws_sdk_ec2::types::NetworkInterface> = ec2
        .describe_network_interfaces()
        .filters(filter("vpc-id", vpc_id))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| aws_error("DescribeNetworkInterfaces", e))?;
    let mut usage: HashMap<String, AddressUsage> = HashMap::new();
    for eni in interfaces {
        let Some(subnet) = eni.subnet_id() else { continue };
        let entry = usage.entry(subnet.to_string()).or_default();
        entry
            .private_ips
            .extend(eni.private_ip_addresses().iter().filter_map(|a| a.private_ip_address()?.parse::<Ipv4Addr>().ok()));
        entry.prefixes.extend(eni.ipv4_prefixes().iter().filter_map(|p| p.ipv4_prefix()?.parse::<Ipv4Net>().ok()));
    }
    Ok(usage)
}

async fn read_reservations(ec2: &aws_sdk_ec2::Client, subnet_id: &str) -> Result<Vec<Ipv4Net>> {
    let mut reservations = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = ec2
            .get_subnet_cidr_reservations()
            .subnet_id(subnet_id)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| aws_error("GetSubnetCidrReservations", e))?;
        reservations
            .extend(out.subnet_ipv4_cidr_reservations().iter().filter_map(|r| r.cidr()?.parse::<Ipv4Net>().ok()));
        match out.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => return Ok(reservations),
        }
    }
}

/// How much of the network to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Everything, with ENIs and CIDR reservations for exact capacity.
    WithCapacity,
    /// CIDRs, subnets and route tables only: enough to verify a plan.
    Structure,
}

/// Reservations of each subnet, read concurrently.
async fn read_reservations_of(
    ec2: &aws_sdk_ec2::Client,
    subnet_ids: &[String],
) -> Result<HashMap<String, Vec<Ipv4Net>>> {
    let reads =
        subnet_ids.iter().map(|id| async move { Ok::<_, Error>((id.clone(), read_reservations(ec2, id).await?)) });
    Ok(future::try_join_all(reads).await?.into_iter().collect())
}

/// The whole network of one cluster. NodeClasses are read separately
/// (`cluster::nodeclass`); this leaves them empty.
///
/// Two chains run side by side, so the critical path is DescribeCluster
/// (done by the caller), then one round of reads (two where the VPC id must
/// first be looked up):
/// - the cluster subnets' CIDR reservations (their ids are already known);
/// - the VPC id if needed, then the VPC, its subnets (then the reservations of
///   headroom's own subnets), route tables and network interfaces at once.
pub async fn read_network(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    cluster: &ClusterInfo,
    config: &Config,
    depth: Depth,
) -> Result<NetworkSnapshot> {
    let with_capacity = depth == Depth::WithCapacity;
    let cluster_reservations =
        async { if with_capacity { read_reservations_of(ec2, &cluster.subnet_ids).await } else { Ok(HashMap::new()) } };
    let vpc_reads = async {
        let vpc_id = vpc_id_of(ec2, cluster).await?;
        let subnets = async {
            let subnets = read_subnets(ec2, vec![filter("vpc-id", vpc_id.clone())]).await?;
            let managed: Vec<String> = subnets
                .iter()
                .filter(|s| !cluster.subnet_ids.contains(&s.id))
                .filter(|s| s.tags.get(&config.managed_tag_key).is_some_and(|v| v == &cluster.name))
                .map(|s| s.id.clone())
                .collect();
            let reservations = if with_capacity { read_reservations_of(ec2, &managed).await? } else { HashMap::new() };
            Ok::<_, Error>((subnets, reservations))
        };
        let usage = async { if with_capacity { read_interface_usage(ec2, &vpc_id).await } else { Ok(HashMap::new()) } };
        future::try_join4(read_vpc(ec2, &vpc_id), subnets, read_route_tables(ec2, &vpc_id), usage).await
    };
    let ((vpc, (subnets, mut reservations), route_tables, mut usage), cluster_reservations) =
        future::try_join(vpc_reads, cluster_reservations).await?;
    reservations.extend(cluster_reservations);

    let subnets = subnets
        .into_iter()
        .map(|raw| {
            let mut occupants = usage.remove(&raw.id).unwrap_or_default();
            occupants.reservations = reservations.remove(&raw.id).unwrap_or_default();
            let capacity = capacity::subnet_capacity(raw.cidr, &occupants);
            Subnet {
                capacity: capacity.capped_by_reported_free(raw.available_ip_address_count),
                id: raw.id,
                availability_zone: raw.availability_zone,
                availability_zone_id: raw.availability_zone_id,
                cidr: raw.cidr,
                tags: raw.tags,
            }
        })
        .collect();

    Ok(NetworkSnapshot {
        region: region.to_string(),
        cluster: Cluster {
            name: cluster.name.clone(),
            subnet_ids: cluster.subnet_ids.clone(),
            security_group_ids: cluster.security_group_ids.clone(),
            cluster_security_group_id: cluster.cluster_security_group_id.clone(),
        },
        vpc,
        subnets,
        route_tables,
        nodeclasses: NodeClasses::default(),
    })
}

/// The subnet and VPC of a network interface named by a failure event.
/// `None` when the ENI is already gone (the CNI deletes failed ones).
pub async fn locate_interface(ec2: &aws_sdk_ec2::Client, eni_id: &str) -> Result<Option<(String, String)>> {
    let result = ec2.describe_network_interfaces().network_interface_ids(eni_id).send().await;
    match result {
        Ok(out) => Ok(out
            .network_interfaces()
            .first()
            .and_then(|eni| Some((eni.subnet_id()?.to_string(), eni.vpc_id()?.to_string())))),
        Err(e) if super::errors::error_code(&e) == Some("InvalidNetworkInterfaceID.NotFound") => Ok(None),
        Err(e) => Err(aws_error("DescribeNetworkInterfaces", e)),
    }
}
