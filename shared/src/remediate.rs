//! The imperative shell: read → plan → apply → verify → report, per cluster.
//!
//! Handlers build one [`Context`] per process and call [`handle`] per event.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::future;
use tracing::Instrument;

use crate::aws::executor::{Applied, Ec2Executor};
use crate::aws::{inventory, metrics};
use crate::cluster::nodeclass::NodeClassApi;
use crate::config::Config;
pub use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::NetworkSnapshot;
use crate::node_subnets::node_subnets;
use crate::nodeclass::SelectorTarget;
use crate::plan::{Decision, Plan, Step, SubnetRef};
use crate::planner::{self, Demand};
use crate::report::{ClusterReport, Outcome, Report, Verification};
use crate::snapshot;
use crate::trigger::{Trigger, TriggerAction, TriggerKind};
use crate::verify;

/// What the calling function adds to the trigger.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Publish the capacity metrics (the capacity check does).
    pub publish_metrics: bool,
}

/// Handles one event end to end. Errors of individual clusters are in the
/// report; `Err` is returned only for problems before any cluster was read.
pub async fn handle(ctx: &Context, trigger: Trigger, options: RunOptions) -> Result<Report> {
    let started = Instant::now();
    let dry_run = trigger.dry_run.unwrap_or(ctx.config.dry_run);
    match &trigger.action {
        TriggerAction::Ignore(reason) => {
            tracing::info!(trigger = trigger.kind_name(), %reason, "nothing to do");
            return Ok(Report::without_clusters(trigger.clone(), dry_run, Outcome::NoOp, reason.clone()));
        }
        TriggerAction::DoNotExpand(reason) => {
            tracing::warn!(trigger = trigger.kind_name(), %reason, "refusing to expand");
            return Ok(Report::without_clusters(trigger.clone(), dry_run, Outcome::Refused, reason.clone()));
        }
        TriggerAction::Evaluate => {}
    }

    let mut trigger = trigger;
    // The rule sees every allocation failure in the account: find the subnet
    // of the failing ENI, so failures elsewhere are told apart.
    if let Some(eni) = &trigger.network_interface_id
        && let Some((subnet, _)) = inventory::locate_interface(&ctx.aws.ec2, eni).await?
        && !trigger.subnet_ids.contains(&subnet)
    {
        trigger.subnet_ids.push(subnet);
    }
    let clusters = clusters_for(ctx, &trigger).await?;
    let run = ClusterRun {
        ctx,
        demand: if trigger.force { Demand::Force } else { Demand::BelowThreshold },
        dry_run,
        options,
        subnet_hints: &trigger.subnet_ids,
    };
    let runs = clusters.iter().map(|cluster| {
        let span = tracing::info_span!("cluster", cluster = %cluster, vpc = tracing::field::Empty);
        run.remediate(cluster).instrument(span)
    });
    let reports = future::join_all(runs).await;
    let report = Report::new(trigger, dry_run, reports, started.elapsed().as_millis() as u64);
    tracing::info!(outcome = ?report.outcome, reason = %report.reason, total_ms = report.total_ms, "done");
    Ok(report)
}

/// The clusters an event concerns.
async fn clusters_for(ctx: &Context, trigger: &Trigger) -> Result<Vec<String>> {
    if trigger.kind == TriggerKind::Schedule && trigger.cluster.is_none() {
        if ctx.config.clusters.is_empty() {
            return Err(Error::NoCluster);
        }
        return Ok(ctx.config.clusters.clone());
    }
    if trigger.cluster.is_none()
        && ctx.config.clusters.len() > 1
        && let Some(eni) = &trigger.network_interface_id
    {
        // Several clusters: the failing ENI's VPC tells which one.
        if let Some((_, vpc_id)) = inventory::locate_interface(&ctx.aws.ec2, eni).await? {
            for cluster in &ctx.config.clusters {
                let info = inventory::describe_cluster(&ctx.aws.eks, cluster).await?;
                if info.vpc_id.as_deref() == Some(vpc_id.as_str()) {
                    return Ok(vec![cluster.clone()]);
                }
            }
        }
    }
    Ok(vec![ctx.config.resolve_cluster(trigger.cluster.as_deref())?])
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// One invocation's settings for every cluster it concerns.
struct ClusterRun<'a> {
    ctx: &'a Context,
    demand: Demand,
    dry_run: bool,
    options: RunOptions,
    /// Subnets the event names (a failing ENI's subnet, say).
    subnet_hints: &'a [String],
}

impl ClusterRun<'_> {
    async fn remediate(&self, cluster: &str) -> ClusterReport {
        let mut report = ClusterReport::new(cluster);
        if let Err(error) = self.remediate_into(cluster, &mut report).await {
            tracing::error!(error = %error, retryable = error.is_retryable(), "remediation failed");
            report.fail(&error);
        }
        report
    }

    async fn remediate_into(&self, cluster: &str, report: &mut ClusterReport) -> Result<()> {
        let ClusterRun { ctx, demand, dry_run, options, subnet_hints } = *self;
        let t = Instant::now();
        let reading = snapshot::read(ctx, cluster, None, inventory::Depth::WithCapacity).await?;
        let (info, snapshot) = (&reading.info, &reading.snapshot);
        report.timings_ms.insert("read", elapsed_ms(t));
        report.vpc_id = Some(snapshot.vpc.id.clone());
        tracing::Span::current().record("vpc", snapshot.vpc.id.as_str());
        let used = node_subnets(snapshot, &ctx.config);
        report.capacity = crate::capacity::by_az(used.subnets.iter().copied());
        report.capacity_basis = Some(used.basis.clone());

        let publishing = async {
            if !options.publish_metrics {
                return Ok(None);
            }
            let t = Instant::now();
            let points = metrics::capacity_metrics(snapshot, &ctx.config);
            let calls = metrics::publish(&ctx.aws.cloudwatch, &ctx.config.metric_namespace, &points).await?;
            tracing::info!(points = points.len(), calls, "capacity metrics published");
            Ok::<_, Error>(Some((points.len(), elapsed_ms(t))))
        };
        // Without the cluster's API nothing shows which NodePools would use
        // new subnets: publish what the cluster's subnets hold, then fail.
        if let Some(error) = reading.cluster_api_error {
            if let Some((points, ms)) = publishing.await? {
                report.metrics_published = Some(points);
                report.timings_ms.insert("metrics", ms);
            }
            return Err(error);
        }

        let t = Instant::now();
        let decision = match foreign_subnets(snapshot, &ctx.config, subnet_hints) {
            Some(reason) => Decision::NoOp { reason },
            None => planner::plan(snapshot, &ctx.config, demand),
        };
        report.timings_ms.insert("plan", elapsed_ms(t));
        report.set_decision(&decision);
        tracing::info!(decision = decision.name(), reason = %report.reason, "decided");

        let applying = async {
            match (&decision, dry_run) {
                (Decision::Plan(plan), false) => Some(apply_and_verify(ctx, info, snapshot, plan).await),
                _ => None,
            }
        };
        let (published, applied) = future::join(publishing, applying).await;
        // Changes are recorded before any error is raised, so the report never loses them.
        let mut verified = Ok(());
        if let Some((changes, timings, outcome)) = applied {
            report.changes = changes;
            report.timings_ms.extend(timings);
            verified = outcome.map(|verification| {
                report.outcome = Outcome::Applied;
                report.verification = Some(verification);
            });
        }
        if let Some((points, ms)) = published? {
            report.metrics_published = Some(points);
            report.timings_ms.insert("metrics", ms);
        }
        verified
    }
}

/// When the event names subnets and none of them holds this cluster's nodes
/// or pods, the failure belongs to another workload: say so, change nothing.
fn foreign_subnets(snapshot: &NetworkSnapshot, config: &Config, hints: &[String]) -> Option<String> {
    if hints.is_empty() {
        return None;
    }
    let ours = node_subnets(snapshot, config);
    if hints.iter().any(|h| ours.subnets.iter().any(|s| &s.id == h)) {
        return None;
    }
    Some(format!(
        "the failure was in {}, which holds no node or pod of cluster {}; nothing to do for this cluster",
        hints.join(", "),
        snapshot.cluster.name
    ))
}

type ApplyResult = (Vec<Applied>, BTreeMap<&'static str, u64>, Result<Verification>);

async fn apply_and_verify(
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
                .instrument(tracing::info_span!("step", step = step.name(), %cidr))
                .await
                .map(Some),
            Step::AwaitVpcCidr { vpc_id, cidr } => ec2
                .wait_for_association(vpc_id, *cidr)
                .instrument(tracing::info_span!("step", step = step.name(), %cidr))
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
            let span = tracing::info_span!("step", step = "create-subnet", az = %availability_zone, %cidr);
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
                .instrument(tracing::info_span!("step", step = "associate-route-table", subnet = %id)),
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
        let span = tracing::info_span!("step", step = step.name());
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
