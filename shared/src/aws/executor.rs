//! Applies the AWS steps of a plan. Each step either makes its change or,
//! when AWS answers that the change already exists (another run, or this
//! run's own retried request, got there first), re-reads the state and
//! counts an identical end state as success.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use ipnet::Ipv4Net;

use super::retry::{self, mutate, no_sdk_retries};
use crate::error::{Error, Result};
use crate::model::{CidrState, IpamPool};
use crate::plan::{Applied, Step, StepKind};

/// Applies EC2 steps with the run's waits: how long a new CIDR may stay
/// `associating`, and how long an id EC2 does not know yet is retried.
#[derive(Clone, Copy)]
pub struct Ec2Executor<'a> {
    pub ec2: &'a aws_sdk_ec2::Client,
    pub association_timeout: Duration,
    pub consistency_wait: Duration,
    pub managed_tag_key: &'a str,
}

fn filter(name: &str, value: impl Into<String>) -> Filter {
    Filter::builder().name(name).values(value).build()
}

impl Ec2Executor<'_> {
    /// Current state of `cidr` on the VPC, if associated in any form.
    async fn cidr_state(&self, vpc_id: &str, cidr: Ipv4Net) -> Result<Option<(String, CidrState, Option<String>)>> {
        let vpc = super::inventory::read_vpc(self.ec2, vpc_id, self.consistency_wait).await?;
        Ok(vpc
            .cidr_associations
            .into_iter()
            .filter(|a| a.cidr == cidr)
            // A live association wins over leftovers of earlier failed attempts.
            .max_by_key(|a| a.state.is_live())
            .map(|a| (a.association_id, a.state, a.status_message)))
    }

    /// Associates `cidr` (unless it already is) and waits until it is `associated`.
    pub async fn associate_vpc_cidr(&self, vpc_id: &str, cidr: Ipv4Net) -> Result<Applied> {
        let ec2 = self.ec2;
        let act = || {
            ec2.associate_vpc_cidr_block()
                .vpc_id(vpc_id)
                .cidr_block(cidr.to_string())
                .customize()
                .config_override(no_sdk_retries())
                .send()
        };
        // Another run, or our own request whose answer was lost, may have associated it.
        let reconcile = || async move {
            Ok(match self.cidr_state(vpc_id, cidr).await? {
                Some((id, state, _)) if state.is_live() => Some((id, state)),
                _ => None,
            })
        };
        let act_parsed = || {
            let call = act();
            async move {
                call.await.map(|out| {
                    let (id, _, state) = association_of(&out);
                    (id, state)
                })
            }
        };
        let ((association_id, state), already_present) =
            mutate("AssociateVpcCidrBlock", self.consistency_wait, act_parsed, reconcile).await.map_err(
                |mut error| {
                    if let Error::Aws { message, .. } = &mut error {
                        if message.starts_with("CidrLimitExceeded") {
                            message.push_str("; the VPC is at its CIDR block quota: raise it and VPC_CIDR_QUOTA");
                        } else if message.starts_with("InvalidVpc.Range") {
                            message.push_str("; AWS refuses this range for the VPC's primary CIDR: check CIDR_POOL");
                        }
                    }
                    error
                },
            )?;
        if state != CidrState::Associated {
            self.wait_for_association(vpc_id, cidr).await?;
        }
        Ok(Applied {
            step: StepKind::AssociateVpcCidr,
            resource: association_id,
            detail: format!("{cidr} associated with {vpc_id}"),
            already_present,
        })
    }

    /// Associates a `/netmask_length` block that IPAM pool `pool` chooses
    /// and waits until it is `associated`; returns the record, the block and
    /// the association id. AssociateVpcCidrBlock takes no client token, so
    /// a lost answer is told from a call that never landed by reading the
    /// VPC: a live association inside the pool's CIDRs that the snapshot
    /// (`known`, the association ids read before) did not have is this
    /// run's, or a concurrent run's, and is used rather than allocating a
    /// second block. The same read before the call narrows the window in
    /// which two concurrent runs could each allocate one.
    pub async fn allocate_vpc_cidr_from_ipam(
        &self,
        vpc_id: &str,
        pool: &IpamPool,
        netmask_length: u8,
        known: &[String],
    ) -> Result<(Applied, Ipv4Net, String)> {
        let ec2 = self.ec2;
        let pool_id = pool.id.as_str();
        let fresh = || async move {
            let vpc = super::inventory::read_vpc(ec2, vpc_id, self.consistency_wait).await?;
            Ok::<_, Error>(
                vpc.cidr_associations
                    .into_iter()
                    .filter(|a| a.state.is_live() && pool.holds(&a.cidr) && !known.contains(&a.association_id))
                    .min_by_key(|a| a.cidr)
                    .map(|a| (a.association_id, Some(a.cidr), a.state)),
            )
        };
        let (association, already_present) = match fresh().await? {
            Some(found) => (found, true),
            None => {
                let act = || {
                    let call = ec2
                        .associate_vpc_cidr_block()
                        .vpc_id(vpc_id)
                        .ipv4_ipam_pool_id(pool_id)
                        .ipv4_netmask_length(i32::from(netmask_length))
                        .customize()
                        .config_override(no_sdk_retries())
                        .send();
                    async move { call.await.map(|out| association_of(&out)) }
                };
                mutate("AssociateVpcCidrBlock", self.consistency_wait, act, fresh).await.map_err(|mut error| {
                    if let Error::Aws { message, .. } = &mut error {
                        if message.starts_with("CidrLimitExceeded") {
                            message.push_str("; the VPC is at its CIDR block quota: raise it and VPC_CIDR_QUOTA");
                        } else if message.starts_with("InvalidParameterValue")
                            || message.starts_with("IpamPoolCidrAllocation")
                        {
                            message.push_str(&format!(
                                "; IPAM pool {pool_id} could not allocate a /{netmask_length}: it may have no free \
                                 block of that size left (provision more CIDRs to the pool, or release allocations), \
                                 or its allocation rules refuse this VPC"
                            ));
                        }
                    }
                    error
                })?
            }
        };
        let (association_id, cidr, _) = association;
        // The answer may lack the block (EC2 documents it, but says nothing
        // of an `associating` allocation): the VPC says which it is.
        let cidr = match cidr {
            Some(cidr) => cidr,
            None => {
                let vpc = super::inventory::read_vpc(ec2, vpc_id, self.consistency_wait).await?;
                vpc.cidr_associations.into_iter().find(|a| a.association_id == association_id).map(|a| a.cidr).ok_or_else(
                    || Error::Aws {
                        operation: "AssociateVpcCidrBlock",
                        message: format!(
                            "association {association_id} from IPAM pool {pool_id} is not listed by {vpc_id} with a CIDR; the next run reads it again"
                        ),
                        retryable: true,
                    },
                )?
            }
        };
        self.wait_for_association(vpc_id, cidr).await?;
        let applied = Applied {
            step: StepKind::AllocateVpcCidrFromIpamPool,
            resource: association_id.clone(),
            detail: if already_present {
                format!("{cidr} from IPAM pool {pool_id} on {vpc_id} (allocated by a concurrent or earlier attempt)")
            } else {
                format!("{cidr} allocated from IPAM pool {pool_id} and associated with {vpc_id}")
            },
            already_present,
        };
        Ok((applied, cidr, association_id))
    }

    /// Disassociates one association this run made (an IPAM block that
    /// collides with a route or a peer). Only the id given is touched;
    /// `disassociating` or `disassociated` already counts as done.
    pub async fn disassociate_vpc_cidr(&self, vpc_id: &str, association_id: &str, why: &str) -> Result<Applied> {
        let ec2 = self.ec2;
        let act = || {
            let call = ec2
                .disassociate_vpc_cidr_block()
                .association_id(association_id)
                .customize()
                .config_override(no_sdk_retries())
                .send();
            async move { call.await.map(|_| ()) }
        };
        let reconcile = || async move {
            let vpc = super::inventory::read_vpc(ec2, vpc_id, self.consistency_wait).await?;
            let gone = vpc
                .cidr_associations
                .iter()
                .find(|a| a.association_id == association_id)
                .is_none_or(|a| matches!(a.state, CidrState::Disassociating | CidrState::Disassociated));
            Ok(gone.then_some(()))
        };
        let ((), already_present) = mutate("DisassociateVpcCidrBlock", self.consistency_wait, act, reconcile).await?;
        Ok(Applied {
            step: StepKind::DisassociateVpcCidr,
            resource: association_id.to_string(),
            detail: format!("disassociated from {vpc_id} again: {why}"),
            already_present,
        })
    }

    /// Polls with growing intervals until `cidr` is `associated`, or fails with
    /// its terminal state, or times out (retryable: the next run resumes).
    pub async fn wait_for_association(&self, vpc_id: &str, cidr: Ipv4Net) -> Result<()> {
        let timeout = self.association_timeout;
        let started = Instant::now();
        let mut interval = Duration::from_millis(250);
        loop {
            let current = self.cidr_state(vpc_id, cidr).await?;
            let state = match current {
                Some((_, CidrState::Associated, _)) => return Ok(()),
                Some((
                    _,
                    state @ (CidrState::Failed
                    | CidrState::Failing
                    | CidrState::Disassociated
                    | CidrState::Disassociating),
                    message,
                )) => {
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
    pub async fn create_subnet(&self, step: &Step) -> Result<Applied> {
        let (ec2, managed_tag_key) = (self.ec2, self.managed_tag_key);
        let Step::CreateSubnet { vpc_id, availability_zone, cidr, tags } = step else {
            unreachable!("create_subnet takes CreateSubnet steps")
        };
        let tag_spec = TagSpecification::builder()
            .resource_type(ResourceType::Subnet)
            .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()))
            .build();
        let act = || {
            ec2.create_subnet()
                .vpc_id(vpc_id)
                .availability_zone(availability_zone)
                .cidr_block(cidr.to_string())
                .tag_specifications(tag_spec.clone())
                .customize()
                .config_override(no_sdk_retries())
                .send()
        };
        let act_parsed = || {
            let call = act();
            async move { call.await.map(|out| out.subnet().and_then(|s| s.subnet_id()).unwrap_or_default().to_string()) }
        };
        // A subnet with this CIDR, in this AZ, with the managed tag: ours, made
        // by a concurrent run or by our own request whose answer was lost.
        let reconcile = || async move {
            let existing = super::inventory::read_subnets(
                ec2,
                vec![filter("vpc-id", vpc_id.clone()), filter("cidr-block", cidr.to_string())],
            )
            .await?;
            let wanted = tags.get(managed_tag_key);
            let ours = existing.iter().find(|s| {
                &s.availability_zone == availability_zone && wanted.is_some() && s.tags.get(managed_tag_key) == wanted
            });
            match (ours, existing.first()) {
                (Some(subnet), _) => Ok(Some(subnet.id.clone())),
                (None, Some(other)) => Err(Error::Aws {
                    operation: "CreateSubnet",
                    message: format!(
                        "{cidr} in {vpc_id} is taken by {}, which headroom does not manage; the next run plans around it",
                        other.id
                    ),
                    retryable: true,
                }),
                (None, None) => Ok(None),
            }
        };
        let (subnet_id, already_present) = mutate("CreateSubnet", self.consistency_wait, act_parsed, reconcile).await?;
        Ok(Applied {
            step: StepKind::CreateSubnet,
            resource: subnet_id,
            detail: if already_present {
                format!("{cidr} in {availability_zone} (created by a concurrent or earlier attempt)")
            } else {
                format!("{cidr} in {availability_zone}")
            },
            already_present,
        })
    }

    /// Associates the subnet with the table; an existing association with the
    /// same table is success, one with another table is left alone and reported.
    pub async fn associate_route_table(&self, route_table_id: &str, subnet_id: &str) -> Result<Applied> {
        let ec2 = self.ec2;
        let act = || {
            let call = ec2
                .associate_route_table()
                .route_table_id(route_table_id)
                .subnet_id(subnet_id)
                .customize()
                .config_override(no_sdk_retries())
                .send();
            async move { call.await.map(|out| out.association_id().unwrap_or_default().to_string()) }
        };
        let reconcile = || async move {
            // The subnet may be one this run just created: EC2 may not list it yet.
            let tables: Vec<aws_sdk_ec2::types::RouteTable> =
                retry::read("DescribeRouteTables", self.consistency_wait, || {
                    ec2.describe_route_tables()
                        .filters(filter("association.subnet-id", subnet_id))
                        .into_paginator()
                        .page_size(super::inventory::ROUTE_TABLE_PAGE)
                        .items()
                        .send()
                        .try_collect()
                })
                .await?;
            let current = tables.iter().find_map(|t| {
                t.associations().iter().find(|a| a.subnet_id() == Some(subnet_id)).map(|a| {
                    (
                        t.route_table_id().unwrap_or_default().to_string(),
                        a.route_table_association_id().unwrap_or_default().to_string(),
                    )
                })
            });
            match current {
                Some((table, association)) if table == route_table_id => Ok(Some(association)),
                Some((other, _)) => Err(Error::Aws {
                    operation: "AssociateRouteTable",
                    message: format!(
                        "{subnet_id} is associated with {other}, not {route_table_id}; someone changed it on purpose, so headroom leaves it"
                    ),
                    retryable: false,
                }),
                None => Ok(None),
            }
        };
        let (association, already_present) =
            mutate("AssociateRouteTable", self.consistency_wait, act, reconcile).await?;
        Ok(Applied {
            step: StepKind::AssociateRouteTable,
            resource: association,
            detail: format!(
                "{subnet_id} → {route_table_id}{}",
                if already_present { " (already associated)" } else { "" }
            ),
            already_present,
        })
    }
}

/// What an AssociateVpcCidrBlock answer says: the association's id, its
/// block (absent in some answers for a pool allocation) and its state
/// (`associating` when not said).
fn association_of(
    out: &aws_sdk_ec2::operation::associate_vpc_cidr_block::AssociateVpcCidrBlockOutput,
) -> (String, Option<Ipv4Net>, CidrState) {
    let assoc = out.cidr_block_association();
    let state = assoc
        .and_then(|a| a.cidr_block_state())
        .and_then(|s| s.state())
        .and_then(|s| CidrState::parse(s.as_str()))
        .unwrap_or(CidrState::Associating);
    (
        assoc.and_then(|a| a.association_id()).unwrap_or_default().to_string(),
        assoc.and_then(|a| a.cidr_block()).and_then(|c| c.parse::<Ipv4Net>().ok()),
        state,
    )
}
