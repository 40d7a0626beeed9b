//! Reads one cluster's network into a [`NetworkSnapshot`].
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, SubnetCidrReservationType};
use futures::future;
use ipnet::Ipv4Net;

use super::errors::aws_error;
use super::retry;
use crate::capacity::{self, AddressUsage, Reservation, ReservationKind};
use crate::cluster::ClusterDescription;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{
    AccessEntry, AllowRule, CidrAssociation, CidrState, Cluster, ClusterApi, Direction, IpamPool, NetworkSnapshot,
    Peering, Route, RouteTable, Subnet, Vpc,
};

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

mod ipam;
pub use ipam::read_ipam_pool;

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

/// The VPC of the cluster: from DescribeCluster, else from its first subnet.
async fn vpc_id_of(ec2: &aws_sdk_ec2::Client, cluster: &ClusterDescription, wait: Duration) -> Result<String> {
    if let Some(id) = &cluster.vpc_id {
        return Ok(id.clone());
    }
    let first = cluster.subnet_ids.first().ok_or_else(|| Error::Inventory {
        cluster: cluster.name.clone(),
        reason: "DescribeCluster lists no subnets and no VPC".into(),
    })?;
    let out = retry::read("DescribeSubnets", wait, || ec2.describe_subnets().subnet_ids(first).send()).await?;
    out.subnets().first().and_then(|s| s.vpc_id()).map(String::from).ok_or_else(|| Error::Inventory {
        cluster: cluster.name.clone(),
        reason: format!("subnet {first} of the cluster does not exist"),
    })
}

/// The VPC and its CIDR associations. By id, because the id comes from
/// DescribeCluster and a describe by id tells a VPC EC2 does not know yet
/// (`InvalidVpcID.NotFound`, retried within `wait`) from one that is gone.
pub async fn read_vpc(ec2: &aws_sdk_ec2::Client, vpc_id: &str, wait: Duration) -> Result<Vpc> {
    let out = retry::read("DescribeVpcs", wait, || ec2.describe_vpcs().vpc_ids(vpc_id).send()).await?;
    let vpc = out.vpcs().first().ok_or_else(|| Error::Aws {
        operation: "DescribeVpcs",
        message: format!("VPC {vpc_id} not found"),
        retryable: true,
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
    let tags = vpc
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
        .collect();
    Ok(Vpc { id: vpc_id.to_string(), primary_cidr, cidr_associations, tags })
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
        .page_size(SUBNET_PAGE)
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

pub(crate) async fn read_route_tables(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<Vec<RouteTable>> {
    let tables: Vec<aws_sdk_ec2::types::RouteTable> = ec2
        .describe_route_tables()
        .filters(filter("vpc-id", vpc_id))
        .into_paginator()
        .page_size(ROUTE_TABLE_PAGE)
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
        .page_size(INTERFACE_PAGE)
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

/// A subnet's CIDR reservations, each with its type. The subnet id comes
/// from a describe, so `InvalidSubnetID.NotFound` is retried within `wait`.
async fn read_reservations(ec2: &aws_sdk_ec2::Client, subnet_id: &str, wait: Duration) -> Result<Vec<Reservation>> {
    let mut reservations = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = retry::read("GetSubnetCidrReservations", wait, || {
            ec2.get_subnet_cidr_reservations()
                .subnet_id(subnet_id)
                .max_results(RESERVATION_PAGE)
                .set_next_token(token.clone())
                .send()
        })
        .await?;
        reservations.extend(out.subnet_ipv4_cidr_reservations().iter().filter_map(|r| {
            let cidr = r.cidr()?.parse::<Ipv4Net>().ok()?.trunc();
            // An unknown future type is treated as the stricter one.
            let kind = match r.reservation_type() {
                Some(SubnetCidrReservationType::Prefix) => ReservationKind::Prefix,
                _ => ReservationKind::Explicit,
            };
            Some(Reservation { cidr, kind })
        }));
        match out.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => return Ok(reservations),
        }
    }
}

/// Active peering connections of the VPC, from either side. Two reads (a
/// filter cannot say "requester or accepter"); the answers are checked
/// again here, so an API that ignores filters still gives the right set.
pub(crate) async fn read_peerings(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<Vec<Peering>> {
    let side = |side: &'static str| {
        ec2.describe_vpc_peering_connections()
            .filters(filter(&format!("{side}-vpc-info.vpc-id"), vpc_id))
            .filters(filter("status-code", "active"))
            .into_paginator()
            .page_size(PEERING_PAGE)
            .items()
            .send()
            .try_collect()
    };
    let (as_requester, as_accepter): (Vec<aws_sdk_ec2::types::VpcPeeringConnection>, Vec<_>) =
        future::try_join(side("requester"), side("accepter"))
            .await
            .map_err(|e| aws_error("DescribeVpcPeeringConnections", e))?;
    let mut peerings: BTreeMap<String, Peering> = BTreeMap::new();
    for connection in as_requester.into_iter().chain(as_accepter) {
        let active = connection.status().and_then(|s| s.code()).is_some_and(|c| c.as_str() == "active");
        let (Some(id), true) = (connection.vpc_peering_connection_id(), active) else { continue };
        let (requester, accepter) = (connection.requester_vpc_info(), connection.accepter_vpc_info());
        let peer = match (requester.and_then(|r| r.vpc_id()), accepter.and_then(|a| a.vpc_id())) {
            (Some(r), _) if r == vpc_id => accepter,
            (_, Some(a)) if a == vpc_id => requester,
            _ => continue,
        };
        let Some(peer) = peer else { continue };
        let mut peer_cidrs: Vec<Ipv4Net> = peer
            .cidr_block_set()
            .iter()
            .filter_map(|b| b.cidr_block())
            .chain(peer.cidr_block())
            .filter_map(|c| c.parse::<Ipv4Net>().ok().map(|n| n.trunc()))
            .collect();
        peer_cidrs.sort_unstable();
        peer_cidrs.dedup();
        peerings.insert(
            id.to_string(),
            Peering {
                connection_id: id.to_string(),
                peer_vpc_id: peer.vpc_id().unwrap_or_default().to_string(),
                peer_cidrs,
            },
        );
    }
    Ok(peerings.into_values().collect())
}

/// `tcp 5432`, `udp 1000-2000`, `all traffic`, from an IP protocol and port range.
fn describe_traffic(protocol: Option<&str>, from: Option<i32>, to: Option<i32>) -> String {
    let protocol = match protocol.unwrap_or("-1") {
        "-1" | "all" => return "all traffic".into(),
        "6" => "tcp",
        "17" => "udp",
        "1" => "icmp",
        other => other,
    };
    match (from, to) {
        (Some(f), Some(t)) if f == t && f >= 0 => format!("{protocol} {f}"),
        (Some(f), Some(t)) if f >= 0 && t >= 0 => format!("{protocol} {f}-{t}"),
        _ => protocol.to_string(),
    }
}

/// The VPC's security-group ingress rules and network ACL allow entries that
/// name an IPv4 CIDR (docs/design.md, "Reachability").
async fn read_allow_rules(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<Vec<AllowRule>> {
    let groups = ec2
        .describe_security_groups()
        .filters(filter("vpc-id", vpc_id))
        .into_paginator()
        .page_size(SECURITY_GROUP_PAGE)
        .items()
        .send()
        .try_collect();
    let acls = ec2
        .describe_network_acls()
        .filters(filter("vpc-id", vpc_id))
        .into_paginator()
        .page_size(NETWORK_ACL_PAGE)
        .items()
        .send()
        .try_collect();
    let (groups, acls) = future::join(groups, acls).await;
    let groups: Vec<aws_sdk_ec2::types::SecurityGroup> = groups.map_err(|e| aws_error("DescribeSecurityGroups", e))?;
    let acls: Vec<aws_sdk_ec2::types::NetworkAcl> = acls.map_err(|e| aws_error("DescribeNetworkAcls", e))?;
    let mut rules = Vec::new();
    for group in &groups {
        let holder = format!("{} ({})", group.group_id().unwrap_or_default(), group.group_name().unwrap_or_default());
        for permission in group.ip_permissions() {
            let traffic = describe_traffic(permission.ip_protocol(), permission.from_port(), permission.to_port());
            for range in permission.ip_ranges() {
                let Some(cidr) = range.cidr_ip().and_then(|c| c.parse::<Ipv4Net>().ok()) else { continue };
                rules.push(AllowRule {
                    holder: holder.clone(),
                    rule: traffic.clone(),
                    direction: Direction::Ingress,
                    cidr: cidr.trunc(),
                });
            }
        }
    }
    for acl in &acls {
        let holder = acl.network_acl_id().unwrap_or_default().to_string();
        for entry in acl.entries() {
            let allows = entry.rule_action().is_some_and(|a| a.as_str() == "allow");
            let Some(cidr) = entry.cidr_block().and_then(|c| c.parse::<Ipv4Net>().ok()) else { continue };
            if !allows {
                continue;
            }
            let ports = entry.port_range();
            let traffic = describe_traffic(entry.protocol(), ports.and_then(|p| p.from()), ports.and_then(|p| p.to()));
            rules.push(AllowRule {
                holder: holder.clone(),
                rule: format!("rule {} {traffic}", entry.rule_number().unwrap_or_default()),
                direction: if entry.egress() == Some(true) { Direction::Egress } else { Direction::Ingress },
                cidr: cidr.trunc(),
            });
        }
    }
    Ok(rules)
}

/// The access entries of the cluster whose principal is the IAM role
/// `role` (a name or an ARN; matched by name, since entries carry the
/// role's ARN without its path), each with its type.
pub async fn read_access_entries_for(eks: &aws_sdk_eks::Client, cluster: &str, role: &str) -> Result<Vec<AccessEntry>> {
    let principals: Vec<String> = eks
        .list_access_entries()
        .cluster_name(cluster)
        .into_paginator()
        .page_size(ACCESS_ENTRY_PAGE)
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| aws_error("ListAccessEntries", e))?;
    let wanted = crate::nodeclass::role_name(role);
    let matching =
        principals.into_iter().filter(|arn| arn.contains(":role/") && crate::nodeclass::role_name(arn) == wanted);
    let described = matching.map(|arn| async move {
        let out = eks
            .describe_access_entry()
            .cluster_name(cluster)
            .principal_arn(&arn)
            .send()
            .await
            .map_err(|e| aws_error("DescribeAccessEntry", e))?;
        let kind = out.access_entry().and_then(|e| e.r#type()).unwrap_or_default().to_string();
        Ok::<_, Error>(AccessEntry { principal_arn: arn, kind })
    });
    future::try_join_all(described).await
}

/// How much of the network to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Everything, with ENIs and CIDR reservations for exact capacity.
    WithCapacity,
    /// CIDRs, subnets and route tables only: enough to verify a plan.
    Structure,
}

/// What occupies each subnet, as far as it has been read: the ENI IPs and
/// prefixes of every subnet of the VPC, the CIDR reservations of the
/// subnets asked for so far, and EC2's own free count.
#[derive(Debug, Default)]
pub struct Occupancy {
    usage: HashMap<String, AddressUsage>,
    reservations_read: HashSet<String>,
    reported_free: HashMap<String, Option<u64>>,
    wait: Duration,
}

impl Occupancy {
    /// Reads the CIDR reservations of the `subnet_ids` not read yet, concurrently.
    pub async fn read_reservations<'a>(
        &mut self,
        ec2: &aws_sdk_ec2::Client,
        subnet_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        let wait = self.wait;
        let missing: Vec<&str> = subnet_ids
            .into_iter()
            .filter(|id| self.reported_free.contains_key(*id) && !self.reservations_read.contains(*id))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let reads =
            missing.iter().map(|id| async move { Ok::<_, Error>((*id, read_reservations(ec2, id, wait).await?)) });
        for (id, reservations) in future::try_join_all(reads).await? {
            self.usage.entry(id.to_string()).or_default().reservations = reservations;
            self.reservations_read.insert(id.to_string());
        }
        Ok(())
    }

    /// Sets each subnet's capacity from what has been read. A subnet whose
    /// reservations were not read counts its ENIs only: only subnets that
    /// no capacity figure uses are left so.
    pub fn apply(&self, subnets: &mut [Subnet]) {
        let none = AddressUsage::default();
        for subnet in subnets {
            let usage = self.usage.get(&subnet.id).unwrap_or(&none);
            let reported = self.reported_free.get(&subnet.id).copied().flatten();
            subnet.capacity = capacity::subnet_capacity(subnet.cidr, usage).capped_by_reported_free(reported);
        }
    }
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
