//! Applying a plan: EC2 in three phases, then the NodeClass and NodePool,
//! then a re-read that checks the plan holds ([`crate::verify`]), then a
//! bounded wait for Auto Mode to list the new subnets in the NodeClass
//! status.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::future;
use tracing::Instrument;

use crate::aws::executor::Ec2Executor;
use crate::aws::inventory;
use crate::cluster::nodeclass::NodeClassApi;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::NetworkSnapshot;
use crate::nodeclass::SelectorTarget;
use crate::plan::{Applied, Plan, Step, StepKind, SubnetRef};
use crate::report::Verification;
use crate::snapshot;
use crate::verify;

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

pub type ApplyResult = (Vec<Applied>, BTreeMap<&'static str, u64>, Result<Verification>);

pub async fn apply_and_verify(
    ctx: &Context,
    info: &inventory::ClusterInfo,
    before: &NetworkSnapshot,
    plan: &Plan,
) -> ApplyResult {
    let mut timings = BTreeMap::new();
    let t = Instant::now();
    let (changes, applied) = execute(ctx, before, plan).await;
    timings.insert("apply", elapsed_ms(t));
    if let Err(error) = applied {
        return (changes, timings, Err(error));
    }
    let t = Instant::now();
    let verification = verify_applied(ctx, info, plan, &changes).await;
    timings.insert("verify", elapsed_ms(t));
    (changes, timings, verification)
}

/// Applies the steps in three phases: CIDRs; subnets with their route
/// tables (every AZ at once); NodeClass and NodePool. A failure stops at the
/// end of its phase, so what is in flight finishes and the next run resumes.
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
            Step::AssociateVpcCidr { vpc_id, cidr } => ec2
                .associate_vpc_cidr(vpc_id, *cidr)
                .instrument(tracing::info_span!("step", step = %step.kind(), %cidr))
                .await
                .map(Some),
            Step::AwaitVpcCidr { vpc_id, cidr } => ec2
                .wait_for_association(vpc_id, *cidr)
                .instrument(tracing::info_span!("step", step = %step.kind(), %cidr))
                .await
                .map(|()| None),
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
            Some(
                async move {
                    let created = ec2.create_subnet(step).await?;
                    let mut done = vec![created.clone()];
                    if let Some(table) = table {
                        done.push(ec2.associate_route_table(&table, &created.resource).await?);
                    }
                    Ok::<_, Error>(done)
                }
                .instrument(span),
            )
        }
        _ => None,
    });
    let routes = plan.steps.iter().filter_map(|step| match step {
        Step::AssociateRouteTable { route_table_id, subnet: SubnetRef::Existing(id), .. } => Some(
            async move { ec2.associate_route_table(route_table_id, id).await.map(|a| vec![a]) }
                .instrument(tracing::info_span!("step", step = %StepKind::AssociateRouteTable, subnet = %id)),
        ),
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

    let kube_steps: Vec<&Step> = plan
        .steps
        .iter()
        .filter(|s| {
            matches!(s, Step::CreateNodeClass { .. } | Step::PatchNodeClass { .. } | Step::CreateNodePool { .. })
        })
        .collect();
    if kube_steps.is_empty() {
        return (changes, Ok(()));
    }
    // Asked for here, not earlier: an EKS token must not age during the CIDR wait.
    let api = match ctx.clusters.client_for(&plan.cluster).await {
        Ok(client) => NodeClassApi::new(client),
        Err(e) => return (changes, Err(e)),
    };
    let targets = selector_targets(before, plan, &changes, managed_key);
    for step in kube_steps {
        let span = tracing::info_span!("step", step = %step.kind());
        let result = match step {
            Step::CreateNodeClass { object, intent, .. } => {
                api.create_nodeclass(object, intent, &targets).instrument(span).await
            }
            Step::PatchNodeClass { name, intent, patch } => {
                api.ensure_selected(name, intent, &targets, Some(patch)).instrument(span).await
            }
            Step::CreateNodePool { object, .. } => api.create_nodepool(object).instrument(span).await,
            _ => unreachable!("filtered above"),
        };
        match result {
            Ok(applied) => changes.push(applied),
            Err(e) => return (changes, Err(e)),
        }
    }
    (changes, Ok(()))
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

async fn verify_applied(
    ctx: &Context,
    info: &inventory::ClusterInfo,
    plan: &Plan,
    changes: &[Applied],
) -> Result<Verification> {
    // Capacity is not what is verified: skip the ENI and reservation reads.
    let after = snapshot::read(ctx, &plan.cluster, Some(info), inventory::Depth::Structure).await?;
    if let Some(error) = after.cluster_api_error {
        return Err(error);
    }
    let problems = verify::problems(plan, &after.snapshot, &ctx.config);
    if !problems.is_empty() {
        return Err(Error::Verification(problems.join("; ")));
    }
    let touches_nodeclass =
        plan.steps.iter().any(|s| matches!(s, Step::CreateNodeClass { .. } | Step::PatchNodeClass { .. }));
    let created = verify::created_subnet_ids(changes);
    let status_pending_subnets = if touches_nodeclass
        && ctx.config.subnet_mode == crate::config::SubnetMode::Nodes
        && !created.is_empty()
        && !ctx.config.nodeclass_ready_timeout.is_zero()
    {
        let api = NodeClassApi::new(ctx.clusters.client_for(&plan.cluster).await?);
        api.wait_for_status_subnets(&ctx.config.nodeclass_name, &created, ctx.config.nodeclass_ready_timeout).await?
    } else {
        Vec::new()
    };
    if !status_pending_subnets.is_empty() {
        tracing::warn!(pending = ?status_pending_subnets, "NodeClass status does not list the new subnets yet");
    }
    Ok(Verification { ok: true, problems, status_pending_subnets })
}
