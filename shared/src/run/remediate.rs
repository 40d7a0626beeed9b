//! The imperative shell, per event: which clusters, then for each one read
//! ([`crate::run::snapshot`]) → decide ([`crate::planner`]) → apply or prove
//! ([`crate::run::apply`]) → report, then tell ([`crate::run::announce`]).
//!
//! Handlers build one [`Context`] per process ([`crate::run::context`]) and call
//! [`handle`] per event.

use std::time::Instant;

use futures::{StreamExt, future, stream};
use tracing::Instrument;

use crate::aws::metrics::{self, Memory};
use crate::aws::{alarms, inventory};
use crate::error::{Error, Result};
use crate::node_subnets::node_subnets;
use crate::plan::{Decision, Plan};
use crate::planner::{self, Demand};
use crate::preflight::Occasion;
use crate::run::apply::{self, apply_and_verify};
pub use crate::run::context::Context;
use crate::run::report::{ClusterOutcome, ClusterReport, Outcome, Report};
use crate::run::selection::{self, Selection};
use crate::run::snapshot;
use crate::run::{announce, forecast};
use crate::trigger::{Trigger, TriggerAction, TriggerKind};

/// What the caller (a function, or the CLI) adds to the trigger.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Publish the capacity metrics (the capacity check does).
    pub publish_metrics: bool,
    /// Publish nothing at the end: no outcome metric, no notification. The
    /// CLI's default: a person at a terminal is told by the terminal.
    pub quiet: bool,
    /// Apply only this plan ([`Plan::fingerprint`]): the one a person
    /// confirmed. If the world moved and the planner now decides otherwise,
    /// nothing is changed and the run fails with [`Error::PlanChanged`].
    pub expected_plan: Option<u32>,
}

/// Handles one event end to end and tells about it. Errors of individual
/// clusters are in the report, and so is an error that no retry can fix
/// (an unmanaged cluster, say); `Err` is returned only for a retryable
/// problem before any cluster was read, so that Lambda retries the event.
pub async fn handle(ctx: &Context, trigger: Trigger, options: RunOptions) -> Result<Report> {
    let started = Instant::now();
    let held = dry_run_held(ctx.config.dry_run, &trigger);
    // DRY_RUN=true is the deployment's promise to change nothing: no event
    // lifts it. Without it, a manual event's dryRun decides.
    let dry_run = ctx.config.dry_run || trigger.dry_run.unwrap_or(false);
    let (mut report, outcomes) = match &trigger.action {
        TriggerAction::Ignore(reason) => {
            tracing::info!(trigger = trigger.kind_name(), %reason, "nothing to do");
            (Report::without_clusters(trigger.clone(), dry_run, Outcome::NoOp, reason.clone()), Vec::new())
        }
        TriggerAction::DoNotExpand(reason) => {
            tracing::warn!(trigger = trigger.kind_name(), %reason, "refusing to expand");
            (Report::without_clusters(trigger.clone(), dry_run, Outcome::Refused, reason.clone()), Vec::new())
        }
        TriggerAction::Evaluate => match evaluate(ctx, trigger, dry_run, options).await {
            Ok(done) => done,
            Err((trigger, error)) if !error.is_retryable() => {
                tracing::error!(error = %error, "cannot act on this event");
                (Report::failed_without_clusters(trigger, dry_run, &error), Vec::new())
            }
            Err((_, error)) => return Err(error),
        },
    };
    report.total_ms = started.elapsed().as_millis() as u64;
    if let Some(held) = held {
        tracing::warn!(%held, "the event asked to act; DRY_RUN=true held");
        report.dry_run_held = Some(held);
    }
    if !options.quiet {
        announce::announce(ctx, &mut report, &outcomes).await;
    }
    tracing::info!(outcome = ?report.outcome, reason = %report.reason, total_ms = report.total_ms, "done");
    Ok(report)
}

type Evaluated = (Report, Vec<ClusterOutcome>);

/// What the report says when an event asked to act (`{"dryRun": false}`)
/// and `DRY_RUN=true` answered it as a dry run instead.
fn dry_run_held(dry_run_setting: bool, trigger: &Trigger) -> Option<String> {
    (dry_run_setting && trigger.dry_run == Some(false)).then(|| {
        "DRY_RUN=true held: the event asked to act ({\"dryRun\": false}) and was answered as a dry run; \
         nothing was changed. To let headroom act, set the stack parameter DryRun=false (the functions' \
         DRY_RUN); to act once from your terminal, run `headroom apply <cluster>`."
            .to_string()
    })
}

/// Reads, decides and acts for every cluster the event concerns.
async fn evaluate(
    ctx: &Context,
    mut trigger: Trigger,
    dry_run: bool,
    options: RunOptions,
) -> std::result::Result<Evaluated, (Trigger, Error)> {
    // The rule sees every allocation failure in the account: find the subnet
    // of the failing ENI, so failures elsewhere are told apart.
    if let Some(eni) = trigger.network_interface_id.clone() {
        match inventory::locate_interface(&ctx.aws.ec2, &eni).await {
            Ok(Some((subnet, _))) if !trigger.subnet_ids.contains(&subnet) => trigger.subnet_ids.push(subnet),
            Ok(_) => {}
            Err(error) => return Err((trigger, error)),
        }
    }
    let clusters = match selection::clusters_for(ctx, &trigger).await {
        Ok(Selection::Clusters(clusters)) => clusters,
        Ok(Selection::Nothing(reason)) => {
            tracing::info!(%reason, "no cluster of this deployment is concerned");
            return Ok((Report::without_clusters(trigger, dry_run, Outcome::NoOp, reason), Vec::new()));
        }
        Err(error) => return Err((trigger, error)),
    };
    let run = ClusterRun {
        ctx,
        demand: if trigger.force { Demand::Force } else { Demand::BelowThreshold },
        dry_run,
        options,
        scheduled: trigger.kind == TriggerKind::Schedule,
        manual: trigger.kind == TriggerKind::Manual,
        subnet_hints: &trigger.subnet_ids,
    };
    // At most MAX_CONCURRENT_CLUSTERS in flight, reported in cluster order;
    // each cluster's error stays in its own report.
    let runs = clusters.iter().map(|cluster| {
        let span = tracing::info_span!("cluster", cluster = %cluster, vpc = tracing::field::Empty);
        run.remediate(cluster).instrument(span)
    });
    let outcomes: Vec<ClusterOutcome> = stream::iter(runs).buffered(ctx.config.max_concurrent_clusters).collect().await;
    let reports = outcomes.iter().map(|o| o.report.clone()).collect();
    Ok((Report::new(trigger, dry_run, reports, 0), outcomes))
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
    /// A scheduled capacity check: it remembers (see [`metrics::recall`]).
    scheduled: bool,
    /// A manual invocation: its dry run always proves the install.
    manual: bool,
    /// Subnets the event names (a failing ENI's subnet, say).
    subnet_hints: &'a [String],
}

impl ClusterRun<'_> {
    async fn remediate(&self, cluster: &str) -> ClusterOutcome {
        let mut outcome = ClusterOutcome { report: ClusterReport::new(cluster), capacity: Vec::new(), memory: None };
        let result = match self.cluster_context(cluster).await {
            Ok(cluster_ctx) => self.remediate_into(&cluster_ctx, cluster, &mut outcome).await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::error!(error = %error, retryable = error.is_retryable(), "remediation failed");
            outcome.report.fail(&error);
            // The cause may be a reconfigured cluster: describe it afresh next time.
            self.ctx.clusters.invalidate(cluster).await;
        }
        outcome
    }

    /// The deployment's context under this cluster's settings: its tags may
    /// override thresholds and names ([`crate::config::Config::for_cluster`]).
    /// The description is cached, so the snapshot does not describe again.
    async fn cluster_context(&self, cluster: &str) -> Result<Context> {
        let description = self.ctx.clusters.describe(cluster).await?;
        if description.auto_mode == Some(false) {
            return Err(Error::Inventory {
                cluster: cluster.to_string(),
                reason: "it is not an EKS Auto Mode cluster (computeConfig.enabled is false); headroom extends Auto Mode NodeClasses only: remove the opt-in tag or enable Auto Mode".into(),
            });
        }
        let config = self.ctx.config.for_cluster(cluster, &description.tags)?;
        Ok(self.ctx.with_config(config))
    }

    async fn remediate_into(&self, ctx: &Context, cluster: &str, outcome: &mut ClusterOutcome) -> Result<()> {
        let ClusterRun { demand, dry_run, options, scheduled, manual, subnet_hints, .. } = *self;
        let config = &ctx.config;
        let t = Instant::now();
        let remembering = options.publish_metrics && scheduled;
        let recall = async {
            if !remembering {
                return None;
            }
            // Forgetting is safe: the plan is told again, the preflight runs again.
            Some(metrics::recall(&ctx.aws.cloudwatch, &config.metric_namespace, cluster).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read what the last runs published; telling and proving again");
                Memory { notified_plan: None, preflight_due: true }
            }))
        };
        // The capacity check keeps the cluster's alarms (CAPACITY_ALARM_PREFIX)
        // while it reads; a failure there is reported, and stops nothing.
        let keep_alarms = async {
            if !options.publish_metrics || config.capacity_alarm_prefix.is_none() {
                return None;
            }
            Some(alarms::keep(&ctx.aws.cloudwatch, cluster, config).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not keep the capacity alarms");
                format!("not kept: {e}")
            }))
        };
        let (reading, memory, alarms_kept) =
            future::join3(snapshot::read(ctx, cluster, inventory::Depth::WithCapacity), recall, keep_alarms).await;
        outcome.memory = memory;
        outcome.report.capacity_alarms = alarms_kept;
        let reading = reading?;
        let snapshot = &reading.snapshot;
        let report = &mut outcome.report;
        report.timings_ms.insert("read".into(), elapsed_ms(t));
        report.vpc_id = Some(snapshot.vpc.id.clone());
        tracing::Span::current().record("vpc", snapshot.vpc.id.as_str());
        let used = node_subnets(snapshot, config);
        report.capacity = used.capacity_by_az();
        report.capacity_basis = Some(used.basis.clone());
        // Published at the end, whatever happens next: capacity alarms must
        // keep their data even when the run fails.
        if options.publish_metrics {
            outcome.capacity = metrics::capacity_metrics(snapshot, config);
        }
        if let Some(expected) = &config.vpc_id
            && expected != &snapshot.vpc.id
        {
            return Err(Error::WrongVpc {
                cluster: cluster.to_string(),
                configured: expected.clone(),
                actual: snapshot.vpc.id.clone(),
            });
        }
        if let Some(tag) = &config.vpc_opt_in_tag
            && !tag.is_on(snapshot.vpc.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            return Err(Error::VpcNotOptedIn {
                cluster: cluster.to_string(),
                vpc_id: snapshot.vpc.id.clone(),
                tag: tag.to_string(),
            });
        }
        // Without the cluster's API nothing shows which NodePools would use
        // new subnets: the capacity of the cluster's subnets is published, then the run fails.
        if let Some(error) = reading.cluster_api_error {
            return Err(error);
        }

        // The scheduled check also looks ahead: one GetMetricData of the
        // AZs' history, then the core's forecast (EXPAND_AHEAD_HOURS=0: no call).
        let forecast = if scheduled && demand == Demand::BelowThreshold && config.expand_ahead_hours > 0 {
            let forecast = forecast::forecast(ctx, cluster, &report.capacity).await;
            if options.publish_metrics {
                outcome.capacity.extend(metrics::forecast_metrics(cluster, &forecast));
            }
            Some(forecast)
        } else {
            None
        };

        let t = Instant::now();
        let decision = match &forecast {
            Some(forecast) => planner::plan_ahead(snapshot, config, forecast),
            None => planner::plan_for_failure(snapshot, config, demand, subnet_hints),
        };
        report.forecast = forecast;
        report.timings_ms.insert("plan".into(), elapsed_ms(t));
        report.set_decision(&decision);
        tracing::info!(decision = decision.name(), reason = %report.reason, "decided");

        if let (Some(confirmed), Decision::Plan(plan), false) = (options.expected_plan, &decision, dry_run)
            && plan.fingerprint() != confirmed
        {
            return Err(Error::PlanChanged { cluster: cluster.to_string() });
        }
        match (&decision, dry_run) {
            (Decision::Plan(plan), false) if plan.ipam_allocation().is_some() => {
                self.apply_ipam(ctx, cluster, snapshot, plan, report).await?;
            }
            (Decision::Plan(plan), false) => {
                let (changes, timings, verified) = apply_and_verify(ctx, snapshot, plan).await;
                // Changes are recorded before any error is raised, so the report never loses them.
                report.changes = changes;
                report.timings_ms.extend(timings.into_iter().map(|(phase, ms)| (phase.to_string(), ms)));
                let verification = verified?;
                report.outcome = Outcome::Applied;
                report.verification = Some(verification);
            }
            (Decision::Plan(plan), true) => {
                self.prove(ctx, cluster, plan, Occasion::DryRunPlan, report).await?;
            }
            // Nothing needs doing: prove what a forced expansion would need.
            // A person testing the install asks for exactly that; the
            // schedule does it once a day.
            (Decision::NoOp { .. }, true) if manual => {
                self.prove_forced_expansion(ctx, cluster, snapshot, Occasion::ManualDryRun, report).await?;
            }
            (Decision::NoOp { .. }, _) if outcome.memory.is_some_and(|m| m.preflight_due) => {
                self.prove_forced_expansion(ctx, cluster, snapshot, Occasion::Daily, report).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// A plan that allocates from the IPAM pool ([`Plan::ipam_allocation`]):
    /// the block is known only once associated, so the run allocates it
    /// ([`apply::allocate_from_ipam`]), reads the cluster again and plans
    /// once more, then applies that second plan. The report holds both
    /// plans' changes and the second plan; a confirmed fingerprint
    /// ([`RunOptions::expected_plan`]) was the first plan's.
    async fn apply_ipam(
        &self,
        ctx: &Context,
        cluster: &str,
        before: &crate::model::NetworkSnapshot,
        plan: &Plan,
        report: &mut ClusterReport,
    ) -> Result<()> {
        let t = Instant::now();
        let (changes, allocated) = apply::allocate_from_ipam(ctx, before, plan).await;
        report.changes = changes;
        report.timings_ms.insert("allocate".into(), elapsed_ms(t));
        let cidr = match allocated? {
            apply::IpamAllocation::Usable(cidr) => cidr,
            apply::IpamAllocation::Refused(refusal) => {
                tracing::warn!(reason = %refusal.message, "the IPAM block was refused");
                report.set_decision(&Decision::Refused(refusal));
                return Ok(());
            }
        };

        let t = Instant::now();
        let reading = snapshot::read(ctx, cluster, inventory::Depth::WithCapacity).await?;
        if let Some(error) = reading.cluster_api_error {
            return Err(error);
        }
        let decision = planner::plan(&reading.snapshot, &ctx.config, self.demand);
        report.timings_ms.insert("replan".into(), elapsed_ms(t));
        let first = format!(
            "{cidr} was allocated from the IPAM pool by this run's first plan (fingerprint {:08x})",
            plan.fingerprint()
        );
        match decision {
            // Planned once more, never more: a block that is not found as
            // managed must not make the run allocate another.
            Decision::Plan(second) if second.ipam_allocation().is_some() => Err(Error::Inventory {
                cluster: cluster.to_string(),
                reason: format!(
                    "{first}, but the read that followed does not show it as a live block inside the pool's provisioned CIDRs; nothing more was allocated"
                ),
            }),
            Decision::Plan(mut second) => {
                second.notes.insert(0, first);
                report.set_decision(&Decision::Plan(second.clone()));
                tracing::info!(steps = second.steps.len(), "planned in the IPAM block");
                let (changes, timings, verified) = apply_and_verify(ctx, &reading.snapshot, &second).await;
                report.changes.extend(changes);
                report.timings_ms.extend(timings.into_iter().map(|(phase, ms)| (phase.to_string(), ms)));
                let verification = verified?;
                report.outcome = Outcome::Applied;
                report.verification = Some(verification);
                Ok(())
            }
            Decision::NoOp { reason } => {
                report.outcome = Outcome::Applied;
                report.reason = format!("{first}; then nothing more was needed: {reason}");
                Ok(())
            }
            Decision::Refused(mut refusal) => {
                refusal.message = format!("{first}; then: {}", refusal.message);
                report.set_decision(&Decision::Refused(refusal));
                Ok(())
            }
        }
    }

    /// The preflight of the expansion headroom would make if forced, when
    /// nothing needs doing (a guardrail that refuses even a forced one, such
    /// as MAX_MANAGED_CIDRS, leaves nothing to prove).
    async fn prove_forced_expansion(
        &self,
        ctx: &Context,
        cluster: &str,
        snapshot: &crate::model::NetworkSnapshot,
        occasion: Occasion,
        report: &mut ClusterReport,
    ) -> Result<()> {
        match planner::plan(snapshot, &ctx.config, Demand::Force) {
            Decision::Plan(probe) => self.prove(ctx, cluster, &probe, occasion, report).await,
            _ => Ok(()),
        }
    }

    /// The preflight ([`apply::prove`]), recorded in the report; a denied
    /// permission fails the run.
    async fn prove(
        &self,
        ctx: &Context,
        cluster: &str,
        plan: &Plan,
        occasion: Occasion,
        report: &mut ClusterReport,
    ) -> Result<()> {
        let t = Instant::now();
        let preflight = apply::prove(ctx, cluster, plan, occasion).await?;
        report.timings_ms.insert("preflight".into(), elapsed_ms(t));
        tracing::info!(
            checks = preflight.checks.len(),
            denied = preflight.denied().count(),
            occasion = ?occasion,
            "preflight"
        );
        let failure = preflight.failure();
        report.preflight = Some(preflight);
        match failure {
            Some(reason) => Err(Error::PermissionDenied(reason)),
            None => Ok(()),
        }
    }
}
