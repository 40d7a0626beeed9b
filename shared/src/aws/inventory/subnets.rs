//! Subnets and what occupies them: ENI addresses and prefixes, CIDR
//! reservations, and EC2's own free count.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, SubnetCidrReservationType};
use futures::future;
use ipnet::Ipv4Net;

use super::{INTERFACE_PAGE, RESERVATION_PAGE, SUBNET_PAGE, filter, parse_net};
use crate::aws::errors::aws_error;
use crate::aws::retry;
use crate::capacity::{self, AddressUsage, Reservation, ReservationKind};
use crate::error::{Error, Result};
use crate::model::Subnet;

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

/// Private IPs and prefixes of every ENI in the VPC, by subnet.
pub(super) async fn read_interface_usage(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
) -> Result<HashMap<String, AddressUsage>> {
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
pub(super) async fn read_reservations(
    ec2: &aws_sdk_ec2::Client,
    subnet_id: &str,
    wait: Duration,
) -> Result<Vec<Reservation>> {
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

/// What occupies each subnet, as far as it has been read: the ENI IPs and
/// prefixes of every subnet of the VPC, the CIDR reservations of the
/// subnets asked for so far, and EC2's own free count.
#[derive(Debug, Default)]
pub struct Occupancy {
    pub(super) usage: HashMap<String, AddressUsage>,
    pub(super) reservations_read: HashSet<String>,
    pub(super) reported_free: HashMap<String, Option<u64>>,
    pub(super) wait: Duration,
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
