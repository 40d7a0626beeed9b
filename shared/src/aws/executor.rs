//! Applies the AWS steps of a plan. Each step either makes its change or,
//! when AWS answers that the change already exists (another run, or this
//! run's own retried request, got there first), re-reads the state and
//! counts an identical end state as success.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use ipnet::Ipv4Net;
use serde::Serialize;

use super::errors::{aws_error, error_code};
use crate::error::{Error, Result};
use crate::model::CidrState;
use crate::plan::Step;

/// One change made (or found already made) by a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub step: &'static str,
    /// The resource the step produced or touched (subnet id, association id, …).
    pub resource: String,
    pub detail: String,
    /// The end state was already there; nothing new was created.
    pub already_present: bool,
}

fn filter(name: &str, value: impl Into<String>) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// Current state of `cidr` on the VPC, if associated in any form.
async fn cidr_state(ec2: &aws_sdk_ec2::Client, vpc_id: &str, cidr: Ipv4Net) -> Result<Option<(String, CidrState, Option<String>)>> {
    let out = ec2
        .describe_vpcs()
        .vpc_ids(vpc_id)
        .send()
        .await
        .map_err(|e| aws_error("DescribeVpcs", e))?;
    let found = out
        .vpcs()
        .iter()
        .flat_map(|v| v.cidr_block_association_set())
        .filter(|a| a.cidr_block().and_then(|c| c.parse::<Ipv4Net>().ok()) == Some(cidr))
        .filter_map(|a| {
            let state = a.cidr_block_state()?;
            let parsed = CidrState::parse(state.state()?.as_str())?;
            Some((a.association_id().unwrap_or_default().to_string(), parsed, state.status_message().map(String::from)))
        })
        // A live association wins over leftovers of earlier failed attempts.
        .max_by_key(|(_, state, _)| state.is_live());
    Ok(found)
}

/// Associates `cidr` (unless it already is) and waits until it is `associated`.
pub async fn associate_vpc_cidr(ec2: &aws_sdk_ec2::Client, vpc_id: &str, cidr: Ipv4Net, timeout: Duration) -> Result<Applied> {
    let answer = ec2
        .associate_vpc_cidr_block()
        .vpc_id(vpc_id)
        .cidr_block(cidr.to_string())
        .send()
        .await;
    let (association_id, state, already_present) = match answer {
        Ok(out) => {
            let assoc = out.cidr_block_association();
            let state = assoc
                .and_then(|a| a.cidr_block_state())
                .and_then(|s| s.state())
                .and_then(|s| CidrState::parse(s.as_str()))
                .unwrap_or(CidrState::Associating);
            (assoc.and_then(|a| a.association_id()).unwrap_or_default().to_string(), state, false)
        }
        Err(err) => {
            // Another run (or our own retried request) may have associated it:
            // that is the end state we want, whatever the error says.
            match cidr_state(ec2, vpc_id, cidr).await? {
                Some((id, state, _)) if state.is_live() => (id, state, true),
                _ => {
                    let code = error_code(&err).unwrap_or_default().to_string();
                    let mut error = aws_error("AssociateVpcCidrBlock", err);
                    if let Error::Aws { message, .. } = &mut error {
                        message.push_str(match code.as_str() {
                            "CidrLimitExceeded" => "; the VPC is at its CIDR block quota: raise it and VPC_CIDR_QUOTA",
                            "InvalidVpc.Range" => "; AWS refuses this range for the VPC's primary CIDR: check CIDR_POOL",
                            _ => "",
                        });
                    }
                    return Err(error);
                }
            }
        }
    };
    if state != CidrState::Associated {
        wait_for_association(ec2, vpc_id, cidr, timeout).await?;
    }
    Ok(Applied {
        step: "associate-vpc-cidr",
        resource: association_id,
        detail: format!("{cidr} associated with {vpc_id}"),
        already_present,
    })
}

/// Polls with growing intervals until `cidr` is `associated`, or fails with
/// its terminal state, or times out (retryable: the next run resumes).
pub async fn wait_for_association(ec2: &aws_sdk_ec2::Client, vpc_id: &str, cidr: Ipv4Net, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let mut interval = Duration::from_millis(250);
    loop {
        let current = cidr_state(ec2, vpc_id, cidr).await?;
        let state = match current {
            Some((_, CidrState::Associated, _)) => return Ok(()),
            Some((_, state @ (CidrState::Failed | CidrState::Failing | CidrState::Disassociated | CidrState::Disassociating), message)) => {
                return Err(Error::AssociationFailed {
                    vpc_id: vpc_id.into(),
                    cidr: cidr.to_string(),
                    state: state.as_str().into(),
                    message: message.unwrap_or_else(|| "no status message".into()),
                });
            }
            Some((_, state, _)) => state.as_str().to_string(),
            None => "absent".to_string(),
        };
        let waited = started.elapsed();
        if waited + interval > timeout {
            return Err(Error::AssociationTimeout { vpc_id: vpc_id.into(), cidr: cidr.to_string(), state, waited });
        }
        tracing::debug!(%cidr, %state, ?interval, "waiting for the CIDR association");
        tokio::time::sleep(interval).await;
        interval = (interval * 3 / 2).min(Duration::from_secs(5));
    }
}

/// Creates the subnet with its tags in the same call, so no untagged subnet
/// ever exists. On a conflict, a subnet with the same CIDR, AZ and managed
/// tag counts as this step done by someone else.
pub async fn create_subnet(ec2: &aws_sdk_ec2::Client, step: &Step, managed_tag_key: &str) -> Result<Applied> {
    let Step::CreateSubnet { vpc_id, availability_zone, cidr, tags } = step else {
        unreachable!("create_subnet takes CreateSubnet steps")
    };
    let tag_spec = TagSpecification::builder()
        .resource_type(ResourceType::Subnet)
        .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()))
        .build();
    let answer = ec2
        .create_subnet()
        .vpc_id(vpc_id)
        .availability_zone(availability_zone)
        .cidr_block(cidr.to_string())
        .tag_specifications(tag_spec)
        .send()
        .await;
    match answer {
        Ok(out) => Ok(Applied {
            step: "create-subnet",
            resource: out.subnet().and_then(|s| s.subnet_id()).unwrap_or_default().to_string(),
            detail: format!("{cidr} in {availability_zone}"),
            already_present: false,
        }),
        Err(err) => {
            let existing = super::inventory::read_subnets(
                ec2,
                vec![filter("vpc-id", vpc_id.clone()), filter("cidr-block", cidr.to_string())],
            )
            .await?;
            let ours = existing.iter().find(|s| {
                &s.availability_zone == availability_zone && tags.get(managed_tag_key).is_some_and(|v| s.tags.get(managed_tag_key) == Some(v))
            });
            match ours {
                Some(subnet) => Ok(Applied {
                    step: "create-subnet",
                    resource: subnet.id.clone(),
                    detail: format!("{cidr} in {availability_zone} (created by a concurrent or earlier attempt)"),
                    already_present: true,
                }),
                None if error_code(&err) == Some("InvalidSubnet.Conflict") => Err(Error::Aws {
                    operation: "CreateSubnet",
                    message: format!("{cidr} in {vpc_id} was taken by a subnet headroom does not manage; the next run plans around it"),
                    retryable: true,
                }),
                None => Err(aws_error("CreateSubnet", err)),
            }
        }
    }
}

/// Associates the subnet with the table; an existing association with the
/// same table is success, one with another table is left alone and reported.
pub async fn associate_route_table(ec2: &aws_sdk_ec2::Client, route_table_id: &str, subnet_id: &str) -> Result<Applied> {
    let answer = ec2
        .associate_route_table()
        .route_table_id(route_table_id)
        .subnet_id(subnet_id)
        .send()
        .await;
    match answer {
        Ok(out) => Ok(Applied {
            step: "associate-route-table",
            resource: out.association_id().unwrap_or_default().to_string(),
            detail: format!("{subnet_id} → {route_table_id}"),
            already_present: false,
        }),
        Err(err) => {
            let tables = ec2
                .describe_route_tables()
                .filters(filter("association.subnet-id", subnet_id))
                .send()
                .await
                .map_err(|e| aws_error("DescribeRouteTables", e))?;
            let current = tables.route_tables().iter().find_map(|t| {
                t.associations()
                    .iter()
                    .find(|a| a.subnet_id() == Some(subnet_id))
                    .map(|a| (t.route_table_id().unwrap_or_default().to_string(), a.route_table_association_id().unwrap_or_default().to_string()))
            });
            match current {
                Some((table, association)) if table == route_table_id => Ok(Applied {
                    step: "associate-route-table",
                    resource: association,
                    detail: format!("{subnet_id} → {route_table_id} (already associated)"),
                    already_present: true,
                }),
                Some((other, _)) => Err(Error::Aws {
                    operation: "AssociateRouteTable",
                    message: format!(
                        "{subnet_id} is associated with {other}, not {route_table_id}; someone changed it on purpose, so headroom leaves it"
                    ),
                    retryable: false,
                }),
                None => Err(aws_error("AssociateRouteTable", err)),
            }
        }
    }
}
