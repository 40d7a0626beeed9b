//! The cluster's VPC: finding it from the cluster, describing it, and the
//! subnet and VPC of a network interface named by a failure event.

use std::time::Duration;

use super::parse_net;
use crate::aws::errors::{self, aws_error};
use crate::aws::retry;
use crate::cluster::ClusterDescription;
use crate::error::{Error, Result};
use crate::model::{CidrAssociation, CidrState, Vpc};

/// The VPC of the cluster: from DescribeCluster, else from its first subnet.
pub(super) async fn vpc_id_of(
    ec2: &aws_sdk_ec2::Client,
    cluster: &ClusterDescription,
    wait: Duration,
) -> Result<String> {
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

/// The subnet and VPC of a network interface named by a failure event.
/// `None` when the ENI is already gone (the CNI deletes failed ones).
pub async fn locate_interface(ec2: &aws_sdk_ec2::Client, eni_id: &str) -> Result<Option<(String, String)>> {
    let result = ec2.describe_network_interfaces().network_interface_ids(eni_id).send().await;
    match result {
        Ok(out) => Ok(out
            .network_interfaces()
            .first()
            .and_then(|eni| Some((eni.subnet_id()?.to_string(), eni.vpc_id()?.to_string())))),
        Err(e) if errors::error_code(&e) == Some("InvalidNetworkInterfaceID.NotFound") => Ok(None),
        Err(e) => Err(aws_error("DescribeNetworkInterfaces", e)),
    }
}
