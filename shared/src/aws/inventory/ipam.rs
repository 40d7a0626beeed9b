//! The IPAM pool of `IPAM_POOL_ID`: its description, provisioned CIDRs and
//! allocations (docs/aws-rules.md, "IPAM pools").

use std::collections::BTreeMap;

use futures::future;
use ipnet::Ipv4Net;

use super::{IPAM_POOL_ALLOCATION_PAGE, IPAM_POOL_CIDR_PAGE};
use crate::aws::errors::aws_error;
use crate::error::{Error, Result};
use crate::model::{IpamAllocation, IpamPool};

/// The IPAM pool `pool_id` (DescribeIpamPools, by id, so a single call), its
/// provisioned CIDRs (GetIpamPoolCidrs) and what it has allocated
/// (GetIpamPoolAllocations), side by side, each to the last page. A pool
/// shared through AWS RAM is described like one of the account's own.
pub async fn read_ipam_pool(ec2: &aws_sdk_ec2::Client, pool_id: &str) -> Result<IpamPool> {
    let describe = async {
        ec2.describe_ipam_pools().ipam_pool_ids(pool_id).send().await.map_err(|e| {
            let mut error = aws_error("DescribeIpamPools", e);
            // A pool that does not exist stays missing: no retry can help.
            if let Error::Aws { message, retryable, .. } = &mut error
                && message.starts_with("InvalidIpamPoolId")
            {
                *retryable = false;
                message.push_str(
                    "; check IPAM_POOL_ID, and that the pool is in this Region or shared with this account through AWS RAM",
                );
            }
            error
        })
    };
    let cidrs = ec2
        .get_ipam_pool_cidrs()
        .ipam_pool_id(pool_id)
        .into_paginator()
        .page_size(IPAM_POOL_CIDR_PAGE)
        .items()
        .send()
        .try_collect();
    let allocations = ec2
        .get_ipam_pool_allocations()
        .ipam_pool_id(pool_id)
        .into_paginator()
        .page_size(IPAM_POOL_ALLOCATION_PAGE)
        .items()
        .send()
        .try_collect();
    let (described, cidrs, allocations) = future::join3(describe, cidrs, allocations).await;
    let described = described?;
    let cidrs: Vec<aws_sdk_ec2::types::IpamPoolCidr> = cidrs.map_err(|e| aws_error("GetIpamPoolCidrs", e))?;
    let allocations: Vec<aws_sdk_ec2::types::IpamPoolAllocation> = allocations.map_err(|e| {
        let mut error = aws_error("GetIpamPoolAllocations", e);
        if let Error::Aws { message, .. } = &mut error
            && message.starts_with("UnauthorizedOperation")
        {
            message.push_str(&format!(
                "; the functions' role needs ec2:GetIpamPoolAllocations on the pool (arn:aws:ec2::<account>:ipam-pool/{pool_id}): \
                 update the stack (infra/template.yaml, policy headroom-ipam)"
            ));
        }
        error
    })?;
    let pool = described.ipam_pools().iter().find(|p| p.ipam_pool_id() == Some(pool_id)).ok_or_else(|| Error::Aws {
        operation: "DescribeIpamPools",
        message: format!(
            "IPAM pool {pool_id} (IPAM_POOL_ID) not found; check the id, and that the pool is shared with this account"
        ),
        retryable: false,
    })?;
    let netmask = |n: Option<i32>| n.and_then(|n| u8::try_from(n).ok());
    let mut provisioned_cidrs: Vec<Ipv4Net> = cidrs
        .iter()
        .filter(|c| c.state().is_some_and(|s| s.as_str() == "provisioned"))
        .filter_map(|c| c.cidr()?.parse::<Ipv4Net>().ok().map(|n| n.trunc()))
        .collect();
    provisioned_cidrs.sort_unstable();
    let allocation_resource_tags: BTreeMap<String, String> = pool
        .allocation_resource_tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string())))
        .collect();
    let mut allocations: Vec<IpamAllocation> = allocations
        .iter()
        .filter_map(|a| {
            let cidr = a.cidr()?.parse::<Ipv4Net>().ok()?.trunc();
            Some(IpamAllocation { cidr, resource_id: a.resource_id().filter(|r| !r.is_empty()).map(String::from) })
        })
        .collect();
    allocations.sort_by(|a, b| (a.cidr, &a.resource_id).cmp(&(b.cidr, &b.resource_id)));
    Ok(IpamPool {
        id: pool_id.to_string(),
        arn: pool.ipam_pool_arn().filter(|a| !a.is_empty()).map(String::from),
        state: pool.state().map(|s| s.as_str().to_string()).unwrap_or_default(),
        address_family: pool.address_family().map(|f| f.as_str().to_string()).unwrap_or_default(),
        locale: pool.locale().filter(|l| !l.is_empty() && *l != "None").map(String::from),
        allocation_min_netmask_length: netmask(pool.allocation_min_netmask_length()),
        allocation_max_netmask_length: netmask(pool.allocation_max_netmask_length()),
        provisioned_cidrs,
        allocation_resource_tags,
        allocations: Some(allocations),
    })
}
