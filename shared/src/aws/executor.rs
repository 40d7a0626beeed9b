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

/// Attempts at a mutating call before giving up (throttling, 5xx, dropped connections).
const MUTATION_ATTEMPTS: u32 = 8;

/// A mutating call with headroom's own retries instead of the SDK's.
///
/// The SDK would blindly resend a request whose connection dropped after
/// AWS acted on it. Here every failure is followed by a read of the end
/// state (`reconcile`): if the change is there, by whoever made it, the
/// step is done; only otherwise is a retryable failure retried, with
/// exponential backoff and jitter.
async fn mutate<T, E, Fut, Rec>(
    operation: &'static str,
    mut act: impl FnMut() -> Fut,
    reconcile: impl Fn() -> Rec,
) -> Result<(T, bool)>
where
    Fut: std::future::Future<
            Output = std::result::Result<T, aws_sdk_ec2::error::SdkError<E, aws_smithy_runtime_api::http::Response>>,
        >,
    Rec: std::future::Future<Output = Result<Option<T>>>,
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=MUTATION_ATTEMPTS {
        let err = match act().await {
            Ok(done) => return Ok((done, false)),
            Err(err) => err,
        };
        if let Some(done) = reconcile().await? {
            return Ok((done, true));
        }
        if !super::errors::is_retryable(&err) || attempt == MUTATION_ATTEMPTS {
            return Err(err).map_err(|e| aws_error(operation, e));
        }
        tracing::info!(operation, attempt, code = ?error_code(&err), "retrying after a transient failure");
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    unreachable!("the last attempt returns")
}

/// Full jitter without a random-number crate: the sub-second clock is random enough.
fn jitter(max: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    max / 2 + max.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

/// The per-call override that turns the SDK's retries off for one mutation.
fn no_sdk_retries() -> aws_sdk_ec2::config::Builder {
    aws_sdk_ec2::config::Builder::default().retry_config(aws_config::retry::RetryConfig::disabled())
}

fn filter(name: &str, value: impl Into<String>) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// Current state of `cidr` on the VPC, if associated in any form.
async fn cidr_state(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    cidr: Ipv4Net,
) -> Result<Option<(String, CidrState, Option<String>)>> {
    let vpc = super::inventory::read_vpc(ec2, vpc_id).await?;
    Ok(vpc
        .cidr_associations
        .into_iter()
        .filter(|a| a.cidr == cidr)
        // A live association wins over leftovers of earlier failed attempts.
        .max_by_key(|a| a.state.is_live())
        .map(|a| (a.association_id, a.state, a.status_message)))
}

/// Associates `cidr` (unless it already is) and waits until it is `associated`.
pub async fn associate_vpc_cidr(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    cidr: Ipv4Net,
    timeout: Duration,
) -> Result<Applied> {
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
        Ok(match cidr_state(ec2, vpc_id, cidr).await? {
            Some((id, state, _)) if state.is_live() => Some((id, state)),
            _ => None,
        })
    };
    let act_parsed = || {
        let call = act();
        async move {
            call.await.map(|out| {
                let assoc = out.cidr_block_association();
                let state = assoc
                    .and_then(|a| a.cidr_block_state())
                    .and_then(|s| s.state())
                    .and_then(|s| CidrState::parse(s.as_str()))
                    .unwrap_or(CidrState::Associating);
                (assoc.and_then(|a| a.association_id()).unwrap_or_default().to_string(), state)
            })
        }
    };
    let ((association_id, state), already_present) =
        mutate("AssociateVpcCidrBlock", act_parsed, reconcile).await.map_err(|mut error| {
            if let Error::Aws { message, .. } = &mut error {
                if message.starts_with("CidrLimitExceeded") {
                    message.push_str("; the VPC is at its CIDR block quota: raise it and VPC_CIDR_QUOTA");
                } else if message.starts_with("InvalidVpc.Range") {
                    message.push_str("; AWS refuses this range for the VPC's primary CIDR: check CIDR_POOL");
                }
            }
            error
        })?;
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
pub async fn wait_for_association(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    cidr: Ipv4Net,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let mut interval = Duration::from_millis(250);
    loop {
        let current = cidr_state(ec2, vpc_id, cidr).await?;
        let state = match current {
            Some((_, CidrState::Associated, _)) => return Ok(()),
            Some((
                _,
                state @ (CidrState::Failed | CidrState::Failing | CidrState::Disassociated | CidrState::Disassociating),
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
pub async fn create_subnet(ec2: &aws_sdk_ec2::Client, step: &Step, managed_tag_key: &str) -> Result<Applied> {
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
    let (subnet_id, already_present) = mutate("CreateSubnet", act_parsed, reconcile).await?;
    Ok(Applied {
        step: "create-subnet",
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
pub async fn associate_route_table(
    ec2: &aws_sdk_ec2::Client,
    route_table_id: &str,
    subnet_id: &str,
) -> Result<Applied> {
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
        let tables = ec2
            .describe_route_tables()
            .filters(filter("association.subnet-id", subnet_id))
            .send()
            .await
            .map_err(|e| aws_error("DescribeRouteTables", e))?;
        let current = tables.route_tables().iter().find_map(|t| {
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
    let (association, already_present) = mutate("AssociateRouteTable", act, reconcile).await?;
    Ok(Applied {
        step: "associate-route-table",
        resource: association,
        detail: format!("{subnet_id} → {route_table_id}{}", if already_present { " (already associated)" } else { "" }),
        already_present,
    })
}
