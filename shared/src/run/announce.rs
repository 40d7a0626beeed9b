//! The end of every invocation: what CloudWatch and the operators learn.
//!
//! - One PutMetricData with everything: the capacity points (the capacity
//!   check), one `Remediations` point per cluster with its decision, and the
//!   capacity check's memory (a preflight ran). A scheduled dry run's
//!   notified plan fingerprint follows its message in a second call, so a
//!   message that could not be sent is told again next time.
//! - One SNS message per cluster worth telling ([`notify::worth_telling`]),
//!   sent side by side with the metrics.
//!
//! Neither can change the remediation's outcome: a failure is logged, put in
//! the report (`published`) and counted (`NotificationFailures`).

use futures::future;

use crate::aws::{metrics, notifier};
use crate::run::context::Context;
use crate::run::notify::{self, Notification};
use crate::run::report::{ClusterOutcome, ClusterReport, Notified, Outcome, Report};
use crate::trigger::TriggerKind;

/// The cluster a report without clusters counts for: the deployment's own
/// when it has one (so that its alarm hears of an event it could not act
/// on, for another cluster say), else the one the event names.
fn cluster_of(ctx: &Context, cluster: Option<&str>) -> String {
    match ctx.config.clusters.as_slice() {
        [only] => only.clone(),
        _ => cluster.map(String::from).unwrap_or_else(|| "unknown".into()),
    }
}

/// A message to send, and the plan fingerprint to remember once it is sent.
struct Telling {
    cluster: String,
    notification: Notification,
    remember: Option<u32>,
}

fn tellings(ctx: &Context, report: &Report, outcomes: &[ClusterOutcome]) -> Vec<Telling> {
    if ctx.config.notify_topic_arn.is_none() {
        return Vec::new();
    }
    if outcomes.is_empty() {
        if !notify::worth_telling(&report.trigger, report.outcome, true) {
            return Vec::new();
        }
        let cluster = cluster_of(ctx, report.trigger.cluster.as_deref());
        return vec![Telling { notification: notify::for_report(report, &cluster), cluster, remember: None }];
    }
    let scheduled = report.trigger.kind == TriggerKind::Schedule;
    outcomes
        .iter()
        .filter_map(|outcome| {
            let cluster = &outcome.report;
            let fingerprint = cluster.plan.as_ref().map(|p| p.fingerprint());
            let plan_changed = match (outcome.memory, fingerprint) {
                (Some(memory), Some(fingerprint)) => memory.notified_plan != Some(fingerprint),
                _ => true,
            };
            notify::worth_telling(&report.trigger, cluster.outcome, plan_changed).then(|| Telling {
                cluster: cluster.cluster.clone(),
                notification: notify::for_cluster(report, cluster),
                remember: fingerprint.filter(|_| scheduled && cluster.outcome == Outcome::Planned),
            })
        })
        .collect()
}

/// Publishes the metrics and the notifications of a finished invocation.
pub async fn announce(ctx: &Context, report: &mut Report, outcomes: &[ClusterOutcome]) {
    let config = &ctx.config;
    let mut points = Vec::new();
    if outcomes.is_empty() {
        points
            .push(metrics::outcome_metric(&cluster_of(ctx, report.trigger.cluster.as_deref()), report.outcome.word()));
    }
    for outcome in outcomes {
        points.extend(outcome.capacity.iter().cloned());
        points.push(metrics::outcome_metric(&outcome.report.cluster, outcome.report.outcome.word()));
        if outcome.report.preflight.is_some() {
            points.push(metrics::preflight_metric(&outcome.report.cluster));
        }
    }
    let tellings = tellings(ctx, report, outcomes);

    let publishing = metrics::publish(&ctx.aws.cloudwatch, &config.metric_namespace, &points);
    let sending = future::join_all(tellings.iter().map(|telling| async move {
        let topic = config.notify_topic_arn.as_deref().expect("tellings exist only with a topic");
        notifier::publish(&ctx.aws.sns, topic, &telling.notification).await
    }));
    let (published, sent) = future::join(publishing, sending).await;

    match published {
        Ok(_) => report.published.metrics = points.len(),
        Err(error) => {
            tracing::error!(error = %error, points = points.len(), "PutMetricData failed; the outcome stands");
            report.published.metrics_error = Some(error.to_string());
        }
    }
    for (cluster, outcome) in report.clusters.iter_mut().zip(outcomes) {
        if report.published.metrics_error.is_none() && !outcome.capacity.is_empty() {
            cluster.metrics_published = Some(outcome.capacity.len());
        }
    }

    // Remember what was told, count what could not be.
    let mut follow_up = Vec::new();
    for (telling, result) in tellings.iter().zip(sent) {
        let (message_id, error) = match result {
            Ok(id) => {
                if let Some(fingerprint) = telling.remember {
                    follow_up.push(metrics::notified_plan_metric(&telling.cluster, fingerprint));
                }
                (Some(id), None)
            }
            Err(error) => {
                tracing::error!(error = %error, cluster = %telling.cluster, "the notification could not be published; the outcome stands");
                follow_up.push(metrics::notification_failure_metric(&telling.cluster));
                (None, Some(error.to_string()))
            }
        };
        report.published.notifications.push(Notified {
            cluster: telling.cluster.clone(),
            subject: telling.notification.subject.clone(),
            message_id,
            error,
        });
    }
    if !follow_up.is_empty() {
        match metrics::publish(&ctx.aws.cloudwatch, &config.metric_namespace, &follow_up).await {
            Ok(_) => report.published.metrics += follow_up.len(),
            Err(error) => tracing::error!(error = %error, "PutMetricData of the notification record failed"),
        }
    }
}

/// A rejected event: counted, never told.
pub async fn rejected(ctx: &Context, cluster: Option<&str>) {
    let point = metrics::outcome_metric(&cluster_of(ctx, cluster), Outcome::Rejected.word());
    if let Err(error) = metrics::publish(&ctx.aws.cloudwatch, &ctx.config.metric_namespace, &[point]).await {
        tracing::warn!(error = %error, "could not count the rejected event");
    }
}

/// The message a cluster report would send, for the demo and the CLI.
pub fn preview(report: &Report, cluster: &ClusterReport) -> Notification {
    notify::for_cluster(report, cluster)
}
