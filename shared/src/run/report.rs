//! The JSON report every invocation returns: trigger, decision and reason,
//! plan, what changed, verification, timings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::aws::metrics::{Memory, Metric};
use crate::capacity::AzCapacity;
use crate::error::Error;
use crate::forecast::ClusterForecast;
use crate::node_subnets::CapacityBasis;
use crate::plan::Applied;
use crate::plan::{Decision, Plan, RefusalCode};
use crate::preflight::Preflight;
use crate::trigger::Trigger;

/// The outcome of one cluster, in the words of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The event was not one headroom understands; nothing was read.
    Rejected,
    NoOp,
    Refused,
    /// A plan was made and not applied (dry run).
    Planned,
    Applied,
    Failed,
}

impl Outcome {
    /// The decision word of reports, metrics and notifications.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Rejected => "rejected",
            Outcome::NoOp => "no-op",
            Outcome::Refused => "refused",
            Outcome::Planned => "planned",
            Outcome::Applied => "applied",
            Outcome::Failed => "failed",
        }
    }

    pub const ALL: [Outcome; 6] =
        [Outcome::NoOp, Outcome::Planned, Outcome::Applied, Outcome::Refused, Outcome::Failed, Outcome::Rejected];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportedError {
    pub kind: String,
    pub message: String,
    pub retryable: bool,
}

impl From<&Error> for ReportedError {
    fn from(e: &Error) -> Self {
        ReportedError { kind: e.kind().to_string(), message: e.to_string(), retryable: e.is_retryable() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// The re-read state holds every planned change.
    pub ok: bool,
    pub problems: Vec<String>,
    /// New subnets the NodeClass `status.subnets` did not list within the
    /// wait (Auto Mode resolves selectors asynchronously).
    pub status_pending_subnets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    pub cluster: String,
    pub vpc_id: Option<String>,
    pub outcome: Outcome,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<RefusalCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    pub changes: Vec<Applied>,
    /// Per-AZ capacity when read (before any change), over the subnets the
    /// cluster's nodes and pods use.
    pub capacity: BTreeMap<String, AzCapacity>,
    /// Which subnets `capacity` counts, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_basis: Option<CapacityBasis>,
    /// The scheduled check's look ahead: per AZ, free IPs and /28s now,
    /// their rates per hour, hours to each threshold or why there is none,
    /// and the window read (EXPAND_AHEAD_HOURS, docs/design.md, "Expanding ahead").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ClusterForecast>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// The permissions checked without acting (dry runs, and once a day).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preflight: Option<Preflight>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_published: Option<usize>,
    /// What the capacity check did about the cluster's capacity alarms
    /// (CAPACITY_ALARM_PREFIX), or why it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_alarms: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ReportedError>,
    pub timings_ms: BTreeMap<String, u64>,
}

impl ClusterReport {
    pub fn new(cluster: &str) -> Self {
        ClusterReport {
            cluster: cluster.to_string(),
            vpc_id: None,
            outcome: Outcome::NoOp,
            reason: String::new(),
            refusal: None,
            plan: None,
            changes: Vec::new(),
            capacity: BTreeMap::new(),
            capacity_basis: None,
            forecast: None,
            verification: None,
            preflight: None,
            metrics_published: None,
            capacity_alarms: None,
            error: None,
            timings_ms: BTreeMap::new(),
        }
    }

    pub fn set_decision(&mut self, decision: &Decision) {
        match decision {
            Decision::NoOp { reason } => {
                self.outcome = Outcome::NoOp;
                self.reason = reason.clone();
            }
            Decision::Refused(refusal) => {
                self.outcome = Outcome::Refused;
                self.reason = refusal.message.clone();
                self.refusal = Some(refusal.code);
            }
            Decision::Plan(plan) => {
                self.outcome = Outcome::Planned;
                self.reason = if let Some(due) = &plan.forecast {
                    due.reason()
                } else if plan.starved_azs.is_empty() {
                    "completing managed resources an earlier run left unfinished, or a forced expansion".into()
                } else {
                    format!("below the thresholds in {}", plan.starved_azs.join(", "))
                };
                self.plan = Some(plan.clone());
            }
        }
    }

    pub fn fail(&mut self, error: &Error) {
        self.outcome = Outcome::Failed;
        self.reason = error.to_string();
        self.error = Some(error.into());
    }
}

/// What became of one notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notified {
    pub cluster: String,
    pub subject: String,
    /// The SNS message id, once published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Why the publish failed; the remediation's outcome stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What was published to CloudWatch at the end of the invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// Data points sent: capacity, outcome, plan fingerprint, preflight.
    pub metrics: usize,
    /// Why PutMetricData failed; the remediation's outcome stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_error: Option<String>,
    pub notifications: Vec<Notified>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub trigger: Trigger,
    pub dry_run: bool,
    /// Set when the event asked to act but `DRY_RUN=true` held: what was
    /// asked, and how to lift it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run_held: Option<String>,
    /// The most significant cluster outcome (failed > applied > planned > refused > no-op).
    pub outcome: Outcome,
    pub reason: String,
    pub clusters: Vec<ClusterReport>,
    /// An error before any cluster was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ReportedError>,
    pub published: Published,
    pub total_ms: u64,
}

impl Report {
    pub fn new(trigger: Trigger, dry_run: bool, clusters: Vec<ClusterReport>, total_ms: u64) -> Self {
        let top = clusters.iter().max_by_key(|c| c.outcome);
        let (outcome, reason) = match top {
            Some(c) if clusters.len() == 1 => (c.outcome, c.reason.clone()),
            Some(c) => (c.outcome, format!("{}: {}", c.cluster, c.reason)),
            None => (Outcome::NoOp, "no cluster to check".into()),
        };
        Report {
            trigger,
            dry_run,
            dry_run_held: None,
            outcome,
            reason,
            clusters,
            error: None,
            published: Published::default(),
            total_ms,
        }
    }

    /// A report decided from the trigger alone, before any I/O.
    pub fn without_clusters(trigger: Trigger, dry_run: bool, outcome: Outcome, reason: String) -> Self {
        Report { outcome, reason, ..Report::new(trigger, dry_run, Vec::new(), 0) }
    }

    /// A failure before any cluster was read (an unmanaged cluster, say).
    pub fn failed_without_clusters(trigger: Trigger, dry_run: bool, error: &Error) -> Self {
        let mut report = Report::without_clusters(trigger, dry_run, Outcome::Failed, error.to_string());
        report.error = Some(error.into());
        report
    }

    /// The first retryable failure, if any: the invocation should fail so Lambda retries it.
    pub fn retryable_failure(&self) -> Option<&ReportedError> {
        self.clusters.iter().filter_map(|c| c.error.as_ref()).find(|e| e.retryable)
    }
}
/// One cluster's outcome, with what the end of the invocation publishes.
#[derive(Debug, Clone)]
pub struct ClusterOutcome {
    pub report: ClusterReport,
    /// Capacity data points (the capacity check).
    pub capacity: Vec<Metric>,
    /// What the capacity check remembered at the start (scheduled runs).
    pub memory: Option<Memory>,
}
