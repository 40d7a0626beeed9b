//! Applying a plan, or proving that it could be applied.
//!
//! [`apply_and_verify`]: EC2 in three phases, then the NodeClass and
//! NodePool (side by side), then a re-read that checks the plan holds
//! ([`crate::verify`]), then a bounded wait, watching the NodeClass, for
//! Auto Mode to list the new subnets in its status.
//!
//! [`prove`]: the preflight, every write of the plan checked without being
//! made ([`crate::preflight`]).

use std::collections::BTreeMap;
use std::time::Instant;

use futures::future;
use ipnet::Ipv4Net;
use tracing::Instrument;

use crate::aws::executor::Ec2Executor;
use crate::aws::{inventory, preflight as aws_preflight};
use crate::cluster::ClusterError;
use crate::error::{Error, Result};
use crate::ipam;
use crate::model::NetworkSnapshot;
use crate::nodeclass::SelectorTarget;
use crate::plan::{Applied, Plan, Refusal, RefusalCode, Step, StepKind, SubnetRef};
use crate::preflight::{Occasion, Preflight};
use crate::run::context::Context;
use crate::run::report::Verification;
use crate::run::snapshot;
use crate::verify;

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// Runs one step's calls in its `step` span, and says inside the span when
/// it failed: logs, and the CLI's progress, show which step it was.
async fn in_step<T, E: std::fmt::Display>(
    span: tracing::Span,
    call: impl Future<Output = std::result::Result<T, E>>,
) -> std::result::Result<T, E> {
    let result = call.instrument(span.clone()).await;
    if let Err(error) = &result {
        span.in_scope(|| tracing::error!(%error, "step failed"));
    }
    result
}

/// Disassociates a VPC CIDR headroom's own run associated (one it just got
/// from the pool, or one a stopped run left colliding), as one traced step.
async fn give_back(
    ec2: &Ec2Executor<'_>,
    vpc_id: &str,
    association_id: &str,
    cidr: Ipv4Net,
    why: &str,
) -> Result<Applied> {
    let span = tracing::info_span!("step", step = %StepKind::DisassociateVpcCidr, %cidr);
    in_step(span, ec2.disassociate_vpc_cidr(vpc_id, association_id, why)).await
}

pub type ApplyResult = (Vec<Applied>, BTreeMap<&'static str, u64>, Result<Verification>);

pub async fn apply_and_verify(ctx: &Context, before: &NetworkSnapshot, plan: &Plan) -> ApplyResult {
    let mut timings = BTreeMap::new();
    let t = Instant::now();
    let (changes, applied) = execute(ctx, before, plan).await;
    timings.insert("apply", elapsed_ms(t));
    if let Err(error) = applied {
        return (changes, timings, Err(error));
    }
    let t = Instant::now();
    let verified = verify_applied(ctx, plan).await;
    timings.insert("verify", elapsed_ms(t));
    if let Err(error) = verified {
        return (changes, timings, Err(error));
    }
    // Timed apart: this is Auto Mode's controller at work, not headroom.
    let t = Instant::now();
    let pending = await_nodeclass_status(ctx, plan, &changes).await;
    timings.insert("nodeclass_status", elapsed_ms(t));
    let verification =
        pending.map(|status_pending_subnets| Verification { ok: true, problems: Vec::new(), status_pending_subnets });
    (changes, timings, verification)
}

/// Applies the steps in three phases: CIDRs; subnets with their route
/// tables (every AZ at once); NodeClass and NodePool, at once. A failure
/// stops at the end of its phase, so what is in flight finishes and the next
/// run resumes.
pub async fn execute(ctx: &Context, before: &NetworkSnapshot, plan: &Plan) -> (Vec<Applied>, Result<()>) {
    let mut changes = Vec::new();
    let ec2 = Ec2Executor {
        ec2: &ctx.aws.ec2,
        association_timeout: ctx.config.association_timeout,
        consistency_wait: ctx.config.consistency_wait,
        managed_tag_key: &ctx.config.managed_tag_key,
    };

    for step in &plan.steps {
        let result = match step {
            Step::AssociateVpcCidr { vpc_id, cidr } => {
                let span = tracing::info_span!("step", step = %step.kind(), %cidr);
                in_step(span, ec2.associate_vpc_cidr(vpc_id, *cidr)).await.map(Some)
            }
            Step::AwaitVpcCidr { vpc_id, cidr } => {
                let span = tracing::info_span!("step", step = %step.kind(), %cidr);
                in_step(span, ec2.wait_for_association(vpc_id, *cidr)).await.map(|()| None)
            }
            Step::GiveBackVpcCidr { vpc_id, association_id, cidr, why } => {
                give_back(&ec2, vpc_id, association_id, *cidr, why).await.map(Some)
            }
            _ => continue,
        };
        match result {
            Ok(applied) => changes.extend(applied),
            Err(e) => return (changes, Err(e)),
        }
    }

    // Each AZ: create the subnet, then associate its table. AZs in parallel.
    let route_for = |cidr| {
        plan.steps.iter().find_map(|s| match s {
            Step::AssociateRouteTable { route_table_id, subnet: SubnetRef::Planned(c), .. } if *c == cidr => {
                Some(route_table_id.clone())
            }
            _ => None,
        })
    };
    let managed_key = &ctx.config.managed_tag_key;
    let chains = plan.steps.iter().filter_map(|step| match step {
        Step::CreateSubnet { cidr, availability_zone, .. } => {
            let table = route_for(*cidr);
            let span = tracing::info_span!("step", step = %StepKind::CreateSubnet, az = %availability_zone, %cidr);
            Some(async move {
                let created = in_step(span, ec2.create_subnet(step)).await?;
                let mut done = vec![created.clone()];
                if let Some(table) = table {
                    let span = tracing::info_span!("step", step = %StepKind::AssociateRouteTable, subnet = %created.resource, route_table = %table);
                    done.push(in_step(span, ec2.associate_route_table(&table, &created.resource)).await?);
                }
                Ok::<_, Error>(done)
            })
        }
        _ => None,
    });
    let routes = plan.steps.iter().filter_map(|step| match step {
        Step::AssociateRouteTable { route_table_id, subnet: SubnetRef::Existing(id), .. } => {
            let span = tracing::info_span!("step", step = %StepKind::AssociateRouteTable, subnet = %id, route_table = %route_table_id);
            Some(async move { in_step(span, ec2.associate_route_table(route_table_id, id)).await.map(|a| vec![a]) })
        }
        _ => None,
    });
    let (chain_results, route_results) = future::join(future::join_all(chains), future::join_all(routes)).await;
    let mut first_error = None;
    for result in chain_results.into_iter().chain(route_results) {
        match result {
            Ok(done) => changes.extend(done),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return (changes, Err(e));
    }

    let kube_steps: Vec<&Step> = plan.steps.iter().filter(|s| s.kind().is_cluster_write()).collect();
    if kube_steps.is_empty() {
        return (changes, Ok(()));
    }
    // The two writes are independent: a NodePool may name a NodeClass that
    // does not exist yet (Karpenter holds it not ready until it does), and
    // each is complete on its own, so the next run finishes either one.
    // The client is asked for here, not earlier: an EKS token must not age
    // during the CIDR wait.
    let targets = selector_targets(before, plan, &changes, managed_key);
    let written = ctx
        .clusters
        .with_api(&plan.cluster, |api| {
            let (targets, kube_steps) = (&targets, &kube_steps);
            async move {
                let writes = kube_steps.iter().map(|step| {
                    let api = api.clone();
                    let span = tracing::info_span!("step", step = %step.kind());
                    in_step(span, async move {
                        match step {
                            Step::CreateNodeClass { object, intent, .. } => {
                                api.create_nodeclass(object, intent, targets).await
                            }
                            Step::PatchNodeClass { name, intent, patch } => {
                                api.ensure_selected(name, intent, targets, Some(patch)).await
                            }
                            Step::CreateNodePool { object, .. } => api.create_nodepool(object).await,
                            _ => unreachable!("filtered above"),
                        }
                    })
                });
                let results = future::join_all(writes).await;
                // A refused token: let `with_api` retry the writes with a new one.
                match results.iter().position(|r| r.as_ref().is_err_and(ClusterError::is_unauthorized)) {
                    Some(i) => Err(results.into_iter().nth(i).and_then(Result::err).expect("an error")),
                    None => Ok(results),
                }
            }
        })
        .await;
    let results = match written {
        Ok(results) => results,
        Err(e) => return (changes, Err(e.into())),
    };
    let mut first_error = None;
    for result in results {
        match result {
            Ok(applied) => changes.push(applied),
            Err(e) => {
                first_error.get_or_insert(Error::from(e));
            }
        }
    }
    (changes, first_error.map_or(Ok(()), Err))
}

/// What became of an IPAM allocation ([`allocate_from_ipam`]).
#[derive(Debug, Clone, PartialEq)]
pub enum IpamAllocation {
    /// Associated and clear of the VPC's routes and peers: plan its subnets.
    /// After a concurrent allocation, the block kept (see
    /// [`ipam::settle_concurrent`]), which may be another run's.
    Usable(Ipv4Net),
    /// It collided; this run disassociated it again (both in the changes).
    Refused(Refusal),
}

/// Applies a plan whose step is an IPAM allocation
/// ([`Plan::ipam_allocation`]): gives back the colliding pool blocks the
/// plan names, associates the block IPAM chooses, waits until it is
/// `associated`, then reads the VPC afresh and
///
/// - checks the block against the VPC's route destinations and peered
///   VPCs, which IPAM knows nothing of (docs/aws-rules.md, "IPAM pools"):
///   a colliding block is disassociated at once and the decision becomes a
///   refusal;
/// - settles with concurrent runs: AssociateVpcCidrBlock has no client
///   token, so runs started together each get a block. If another new pool
///   block is lower or already holds subnets, this run gives its own back
///   and adopts that one ([`ipam::settle_concurrent`]).
pub async fn allocate_from_ipam(
    ctx: &Context,
    before: &NetworkSnapshot,
    plan: &Plan,
) -> (Vec<Applied>, Result<IpamAllocation>) {
    let mut changes = Vec::new();
    let result = allocate_into(ctx, before, plan, &mut changes).await;
    (changes, result)
}

async fn allocate_into(
    ctx: &Context,
    before: &NetworkSnapshot,
    plan: &Plan,
    changes: &mut Vec<Applied>,
) -> Result<IpamAllocation> {
    let Some((vpc_id, pool_id, netmask_length)) = plan.ipam_allocation() else {
        return Err(Error::Verification("the plan allocates nothing from an IPAM pool".into()));
    };
    let pool = before.ipam_pool.as_ref().filter(|p| p.id == pool_id).ok_or_else(|| Error::Inventory {
        cluster: plan.cluster.clone(),
        reason: format!("IPAM pool {pool_id} was not read with the VPC"),
    })?;
    let ec2 = Ec2Executor {
        ec2: &ctx.aws.ec2,
        association_timeout: ctx.config.association_timeout,
        consistency_wait: ctx.config.consistency_wait,
        managed_tag_key: &ctx.config.managed_tag_key,
    };
    // A colliding block a stopped run left is given back before another is taken.
    for step in &plan.steps {
        if let Step::GiveBackVpcCidr { vpc_id, association_id, cidr, why } = step {
            changes.push(give_back(&ec2, vpc_id, association_id, *cidr, why).await?);
        }
    }
    let known: Vec<String> = before.vpc.cidr_associations.iter().map(|a| a.association_id.clone()).collect();
    let span = tracing::info_span!("step", step = %StepKind::AllocateVpcCidrFromIpamPool, pool = %pool_id);
    let (applied, cidr, association_id) =
        in_step(span, ec2.allocate_vpc_cidr_from_ipam(vpc_id, pool, netmask_length, &known)).await?;
    changes.push(applied);

    let (vpc, subnets, route_tables, peerings) = future::try_join4(
        inventory::read_vpc(&ctx.aws.ec2, vpc_id, ctx.config.consistency_wait),
        inventory::read_subnets(&ctx.aws.ec2, vec![inventory::filter("vpc-id", vpc_id)]),
        inventory::read_route_tables(&ctx.aws.ec2, vpc_id),
        inventory::read_peerings(&ctx.aws.ec2, vpc_id),
    )
    .await?;
    if let Some(collision) = ipam::collision(cidr, &route_tables, &peerings) {
        tracing::warn!(%cidr, %collision, "the block IPAM allocated collides; disassociating it");
        changes.push(give_back(&ec2, vpc_id, &association_id, cidr, &collision).await?);
        return Ok(IpamAllocation::Refused(Refusal {
            code: RefusalCode::IpamBlockConflicts,
            message: format!(
                "IPAM pool {pool_id} allocated {cidr} to {vpc_id}, but {collision}; IPAM knows nothing of routes and \
                 peerings, so headroom disassociated the block again and changed nothing else. Keep that range out of \
                 the pool (an allocation that reserves it, or a pool without it), or remove the route or peering"
            ),
        }));
    }
    tracing::info!(%cidr, "the block IPAM allocated is clear of the VPC's routes and peers");

    // Pool blocks that appeared since the run read the VPC, other than ours.
    let others: Vec<(String, Ipv4Net, bool)> = vpc
        .cidr_associations
        .iter()
        .filter(|a| a.state.is_live() && pool.holds(&a.cidr) && !known.contains(&a.association_id))
        .filter(|a| a.association_id != association_id)
        .filter(|a| ipam::collision(a.cidr, &route_tables, &peerings).is_none())
        .map(|a| (a.association_id.clone(), a.cidr, subnets.iter().any(|s| a.cidr.contains(&s.cidr))))
        .collect();
    match ipam::settle_concurrent(cidr, &others) {
        ipam::Concurrent::Alone => Ok(IpamAllocation::Usable(cidr)),
        ipam::Concurrent::KeepOurs(theirs) => {
            let theirs: Vec<String> = theirs.iter().map(ToString::to_string).collect();
            if let Some(ours) = changes.last_mut() {
                ours.detail.push_str(&format!(
                    "; a concurrent run associated {} from the pool too: higher and without subnets, so that run \
                     gives it back and this block is kept",
                    theirs.join(", ")
                ));
            }
            Ok(IpamAllocation::Usable(cidr))
        }
        ipam::Concurrent::Adopt { association_id: theirs, cidr: adopted, why } => {
            tracing::warn!(%cidr, %adopted, %why, "a concurrent run's block wins; giving ours back");
            // Only a block this run's own call associated is given back.
            let ours_is_new = changes.last().is_some_and(|c| !c.already_present);
            if ours_is_new {
                let reason = format!("{why}, so this run gives {cidr} back and uses {adopted}");
                changes.push(give_back(&ec2, vpc_id, &association_id, cidr, &reason).await?);
            }
            changes.push(Applied {
                step: StepKind::AllocateVpcCidrFromIpamPool,
                resource: theirs,
                detail: format!("{adopted} adopted: {why}; one new block from the pool for {vpc_id}, not two"),
                already_present: true,
            });
            Ok(IpamAllocation::Usable(adopted))
        }
    }
}

/// The subnets the NodeClass must select: headroom's existing ones and the
/// ones just created, with their real ids and tags.
fn selector_targets(
    before: &NetworkSnapshot,
    plan: &Plan,
    changes: &[Applied],
    managed_key: &str,
) -> Vec<SelectorTarget> {
    let mut targets: Vec<SelectorTarget> = before
        .managed_subnets(managed_key)
        .map(|s| SelectorTarget { id: Some(s.id.clone()), tags: s.tags.clone() })
        .collect();
    // join_all keeps plan order, so created ids line up with the planned steps.
    let created = verify::created_subnet_ids(changes);
    let planned_tags = plan.steps.iter().filter_map(|s| match s {
        Step::CreateSubnet { tags, .. } => Some(tags.clone()),
        _ => None,
    });
    targets.extend(created.into_iter().zip(planned_tags).map(|(id, tags)| SelectorTarget { id: Some(id), tags }));
    targets
}

/// One level of verification: the world re-read, checked against the plan.
async fn verify_applied(ctx: &Context, plan: &Plan) -> Result<()> {
    // Capacity is not what is verified: skip the ENI and reservation reads.
    let after = snapshot::read(ctx, &plan.cluster, inventory::Depth::Structure).await?;
    if let Some(error) = after.cluster_api_error {
        return Err(error);
    }
    let problems = verify::problems(plan, &after.snapshot, &ctx.config);
    if !problems.is_empty() {
        return Err(Error::Verification(problems.join("; ")));
    }
    Ok(())
}

/// Waits (bounded) until the NodeClass status lists the new subnets: only
/// then can Auto Mode launch nodes into them. Returns the ids still missing.
async fn await_nodeclass_status(ctx: &Context, plan: &Plan, changes: &[Applied]) -> Result<Vec<String>> {
    let touches_nodeclass =
        plan.steps.iter().any(|s| matches!(s.kind(), StepKind::CreateNodeclass | StepKind::PatchNodeclass));
    let created = verify::created_subnet_ids(changes);
    if !touches_nodeclass
        || ctx.config.subnet_mode != crate::config::SubnetMode::Nodes
        || created.is_empty()
        || ctx.config.nodeclass_ready_timeout.is_zero()
    {
        return Ok(Vec::new());
    }
    let (name, timeout, created) = (&ctx.config.nodeclass_name, ctx.config.nodeclass_ready_timeout, &created);
    let pending = ctx
        .clusters
        .with_api(&plan.cluster, |api| async move { api.wait_for_status_subnets(name, created, timeout).await })
        .await?;
    if !pending.is_empty() {
        tracing::warn!(?pending, "NodeClass status does not list the new subnets yet");
    }
    Ok(pending)
}

/// The preflight: every write of `plan`, checked without being made (EC2
/// `DryRun`, IAM policy simulation, Kubernetes `dryRun=All`).
pub async fn prove(ctx: &Context, cluster: &str, plan: &Plan, occasion: Occasion) -> Result<Preflight> {
    let region = ctx.aws.region();
    let scope = aws_preflight::Scope {
        ec2: &ctx.aws.ec2,
        iam: &ctx.aws.iam,
        role_arn: ctx.config.function_role_arn.as_deref(),
        region: &region,
        managed_tag_key: &ctx.config.managed_tag_key,
        vpc_tag: ctx.config.vpc_opt_in_tag.as_ref().map(|tag| (tag.key.as_str(), tag.value.as_str())),
    };
    let kube_steps: Vec<&Step> = plan.steps.iter().filter(|s| s.kind().is_cluster_write()).collect();
    let kube = async {
        if kube_steps.is_empty() {
            return Ok(Vec::new());
        }
        let kube_steps = &kube_steps;
        ctx.clusters.with_api(cluster, |api| async move { Ok(api.preflight(kube_steps).await) }).await
    };
    let (mut checks, kube_checks) = future::join(aws_preflight::check_plan(&scope, plan, cluster), kube).await;
    checks.extend(kube_checks?);
    Ok(Preflight { occasion, checks })
}
