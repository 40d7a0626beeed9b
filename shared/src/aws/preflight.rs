//! The AWS half of the preflight (see [`crate::preflight`]): EC2 writes sent
//! with `DryRun=true`, and `iam:SimulatePrincipalPolicy` for those EC2 can't
//! dry-run. Never changes anything.

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use aws_sdk_iam::types::{ContextEntry, ContextKeyTypeEnum};
use futures::future;

use super::errors::error_code;
use crate::plan::{Plan, Step, SubnetRef};
use crate::preflight::{Method, PermissionCheck, Verdict, ec2_dry_run_verdict, simulation_verdict};

/// Where the preflight's ARNs are built.
pub struct Scope<'a> {
    pub ec2: &'a aws_sdk_ec2::Client,
    pub iam: &'a aws_sdk_iam::Client,
    /// The functions' role; `None`: IAM simulations are not made.
    pub role_arn: Option<&'a str>,
    pub region: &'a str,
    pub managed_tag_key: &'a str,
    /// The opt-in tag the VPC carries (VPC_OPT_IN_TAG, checked before any
    /// preflight): the template's policy conditions the VPC writes on it,
    /// and IAM's simulation reads no tags of its own, so it is passed as
    /// `aws:ResourceTag/<key>`.
    pub vpc_tag: Option<(&'a str, &'a str)>,
}

impl Scope<'_> {
    /// `arn:<partition>:ec2:<region>:<account>:<resource>`, from the role's ARN.
    fn ec2_arn(&self, resource: &str) -> Option<String> {
        let role = self.role_arn?;
        let mut parts = role.split(':');
        let (_, partition, _, _, account) = (parts.next(), parts.next()?, parts.next(), parts.next(), parts.next()?);
        Some(format!("arn:{partition}:ec2:{}:{account}:{resource}", self.region))
    }

    /// `arn:<partition>:ec2::<account>:ipam-pool/<id>`: IPAM resources have
    /// no Region in their ARN. The account is the role's: only when EC2 gave
    /// no ARN for the pool (a pool shared from another account through AWS
    /// RAM has that account's).
    fn ipam_pool_arn(&self, pool_id: &str) -> Option<String> {
        let role = self.role_arn?;
        let mut parts = role.split(':');
        let (_, partition, _, _, account) = (parts.next(), parts.next()?, parts.next(), parts.next(), parts.next()?);
        Some(format!("arn:{partition}:ec2::{account}:ipam-pool/{pool_id}"))
    }
}

fn dry_run_check<E, R>(
    action: &str,
    resource: String,
    outcome: Result<impl Sized, aws_sdk_ec2::error::SdkError<E, R>>,
) -> PermissionCheck
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata,
{
    let (verdict, detail) = match &outcome {
        // moto and a future EC2 might act instead: say so rather than guess.
        Ok(_) => (Verdict::Unverified, "the call succeeded instead of answering DryRunOperation".to_string()),
        Err(err) => {
            let code = error_code(err);
            (ec2_dry_run_verdict(code), code.unwrap_or("no error code").to_string())
        }
    };
    PermissionCheck { action: action.into(), resource, method: Method::Ec2DryRun, verdict, detail }
}

fn string_context(key: &str, value: &str) -> ContextEntry {
    ContextEntry::builder()
        .context_key_name(key)
        .context_key_values(value)
        .context_key_type(ContextKeyTypeEnum::String)
        .build()
}

/// One IAM simulation: every resource must be allowed.
async fn simulate(
    scope: &Scope<'_>,
    action: &str,
    resources: Vec<String>,
    context: Vec<ContextEntry>,
) -> PermissionCheck {
    let shown = resources.join(", ");
    let unverified = |detail: String| PermissionCheck {
        action: action.into(),
        resource: shown.clone(),
        method: Method::IamSimulation,
        verdict: Verdict::Unverified,
        detail,
    };
    let Some(role) = scope.role_arn else {
        return unverified("FUNCTION_ROLE_ARN is not set, so IAM was not asked".into());
    };
    let answer = scope
        .iam
        .simulate_principal_policy()
        .policy_source_arn(role)
        .action_names(action)
        .set_resource_arns(Some(resources.clone()))
        .set_context_entries(Some(context))
        .send()
        .await;
    match answer {
        Err(err) => unverified(format!("SimulatePrincipalPolicy failed: {}", super::errors::message(&err))),
        Ok(out) => {
            let decisions: Vec<String> = out
                .evaluation_results()
                .iter()
                .flat_map(|r| {
                    let per_resource: Vec<String> = r
                        .resource_specific_results()
                        .iter()
                        .map(|s| s.eval_resource_decision().as_str().to_string())
                        .collect();
                    if per_resource.is_empty() { vec![r.eval_decision().as_str().to_string()] } else { per_resource }
                })
                .collect();
            let verdict = if decisions.is_empty() {
                Verdict::Unverified
            } else if decisions.iter().all(|d| simulation_verdict(d) == Verdict::Allowed) {
                Verdict::Allowed
            } else if decisions.iter().any(|d| simulation_verdict(d) == Verdict::Denied) {
                Verdict::Denied
            } else {
                Verdict::Unverified
            };
            PermissionCheck {
                action: action.into(),
                resource: shown,
                method: Method::IamSimulation,
                verdict,
                detail: decisions.join(", "),
            }
        }
    }
}

/// The request context of a write on the VPC: the Region, and the VPC's
/// opt-in tag when there is one.
fn vpc_context(scope: &Scope<'_>) -> Vec<ContextEntry> {
    let mut context = vec![string_context("aws:RequestedRegion", scope.region)];
    if let Some((key, value)) = scope.vpc_tag {
        context.push(string_context(&format!("aws:ResourceTag/{key}"), value));
    }
    context
}

/// Checks every EC2 write of `plan` without making it.
pub async fn check_plan(scope: &Scope<'_>, plan: &Plan, cluster: &str) -> Vec<PermissionCheck> {
    let vpc_arn = |vpc_id: &str| scope.ec2_arn(&format!("vpc/{vpc_id}")).unwrap_or_else(|| format!("vpc/{vpc_id}"));
    let checks = plan.steps.iter().filter_map(|step| -> Option<future::BoxFuture<'_, PermissionCheck>> {
        match step {
            Step::AssociateVpcCidr { vpc_id, .. } => {
                Some(Box::pin(simulate(scope, "ec2:AssociateVpcCidrBlock", vec![vpc_arn(vpc_id)], vpc_context(scope))))
            }
            // AssociateVpcCidrBlock has no DryRun: IAM is asked, for the VPC
            // and the pool, since the call names both.
            Step::AllocateVpcCidrFromIpamPool { vpc_id, pool_id, pool_arn, .. } => {
                // EC2's own ARN names the owner of a pool shared through RAM.
                let pool = pool_arn
                    .clone()
                    .or_else(|| scope.ipam_pool_arn(pool_id))
                    .unwrap_or_else(|| format!("ipam-pool/{pool_id}"));
                Some(Box::pin(simulate(
                    scope,
                    "ec2:AssociateVpcCidrBlock",
                    vec![vpc_arn(vpc_id), pool],
                    vpc_context(scope),
                )))
            }
            Step::CreateSubnet { vpc_id, availability_zone, cidr, tags } => Some(Box::pin(async move {
                let tag_spec = TagSpecification::builder()
                    .resource_type(ResourceType::Subnet)
                    .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()))
                    .build();
                let answer = scope
                    .ec2
                    .create_subnet()
                    .vpc_id(vpc_id)
                    .availability_zone(availability_zone)
                    .cidr_block(cidr.to_string())
                    .tag_specifications(tag_spec)
                    .dry_run(true)
                    .send()
                    .await;
                dry_run_check("ec2:CreateSubnet", format!("{vpc_id} ({cidr} in {availability_zone})"), answer)
            })),
            Step::AssociateRouteTable { route_table_id, subnet: SubnetRef::Existing(subnet_id), .. } => {
                Some(Box::pin(async move {
                    let answer = scope
                        .ec2
                        .associate_route_table()
                        .route_table_id(route_table_id)
                        .subnet_id(subnet_id)
                        .dry_run(true)
                        .send()
                        .await;
                    dry_run_check("ec2:AssociateRouteTable", format!("{route_table_id} with {subnet_id}"), answer)
                }))
            }
            // The subnet does not exist yet: ask IAM with the keys the real call carries.
            Step::AssociateRouteTable { route_table_id, subnet: SubnetRef::Planned(_), .. } => {
                // Without a role there is no account to build ARNs from: name the resources plainly.
                let table_resource = format!("route-table/{route_table_id}");
                let table = scope.ec2_arn(&table_resource).unwrap_or(table_resource);
                let subnet = scope.ec2_arn("subnet/*").unwrap_or_else(|| "subnet/*".into());
                Some(Box::pin(simulate(
                    scope,
                    "ec2:AssociateRouteTable",
                    vec![table, subnet],
                    vec![
                        string_context("ec2:Vpc", &vpc_arn(&plan.vpc_id)),
                        string_context(&format!("aws:ResourceTag/{}", scope.managed_tag_key), cluster),
                    ],
                )))
            }
            _ => None,
        }
    });
    // The disassociation that undoes a colliding IPAM block must not fail
    // half-way through a refusal: it is asked of IAM too (no DryRun on a
    // block that is not associated yet).
    let undoing = plan.steps.iter().filter_map(|step| match step {
        Step::AllocateVpcCidrFromIpamPool { vpc_id, .. } => {
            Some(simulate(scope, "ec2:DisassociateVpcCidrBlock", vec![vpc_arn(vpc_id)], vpc_context(scope)))
        }
        _ => None,
    });
    let (mut checks, undoing) = future::join(future::join_all(checks), future::join_all(undoing)).await;
    checks.extend(undoing);
    checks
}
