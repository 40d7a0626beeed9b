//! The VPC's peering connections and the CIDRs on their other side.

use std::collections::BTreeMap;

use futures::future;
use ipnet::Ipv4Net;

use super::{PEERING_PAGE, filter};
use crate::aws::errors::aws_error;
use crate::error::Result;
use crate::model::Peering;

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
