//! Every event the functions accept, normalised into one [`Trigger`].
//!
//! Parsing is pure and total: any JSON gives either a `Trigger` or a
//! non-retryable [`Error::InvalidEvent`] naming what was wrong, never a
//! panic (a property test feeds it arbitrary and mutated events).
//!
//! No I/O here: whether a named cluster is managed, and everything after,
//! is `run/`'s.

mod alarm;
mod cloudtrail;
mod manual;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use alarm::{AZ_DIMENSION, CLUSTER_DIMENSION, SUBNET_DIMENSION};
pub use cloudtrail::AllocationFailure;

use crate::error::{Error, Result};

/// How an alarm reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlarmDelivery {
    /// The alarm's Lambda action invoked the function directly.
    Direct,
    /// An EventBridge "CloudWatch Alarm State Change" rule.
    EventBridge,
    /// An SNS topic in the alarm's actions.
    Sns,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum TriggerKind {
    Alarm {
        delivery: AlarmDelivery,
        alarm_name: String,
        /// `ALARM`, `OK` or `INSUFFICIENT_DATA`.
        state: String,
        metric: Option<String>,
    },
    AllocationFailure(AllocationFailure),
    Schedule,
    Manual,
}

/// What the trigger alone says about acting, before anything is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "reason", rename_all = "kebab-case")]
pub enum TriggerAction {
    /// Read the network and decide from the actual capacity.
    Evaluate,
    /// Nothing to do (an alarm returning to OK, say).
    Ignore(String),
    /// A failure that more address space cannot fix: report, never expand.
    DoNotExpand(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    pub kind: TriggerKind,
    /// The cluster the event names, if any (alarm dimension, manual event).
    pub cluster: Option<String>,
    pub action: TriggerAction,
    /// AZ named by the event (alarm dimension), for the report.
    pub availability_zone: Option<String>,
    /// Subnets named by the event.
    pub subnet_ids: Vec<String>,
    /// The ENI of a failed allocation: its subnet is looked up.
    pub network_interface_id: Option<String>,
    /// Per-invocation override of DRY_RUN.
    pub dry_run: Option<bool>,
    /// Expand even when every AZ is above the thresholds (manual only).
    pub force: bool,
    /// The event's own id, to recognise a redelivery in logs.
    pub event_id: Option<String>,
    /// One line for people: what happened.
    pub summary: String,
}

impl Trigger {
    fn new(kind: TriggerKind, summary: String) -> Self {
        Trigger {
            kind,
            cluster: None,
            action: TriggerAction::Evaluate,
            availability_zone: None,
            subnet_ids: Vec::new(),
            network_interface_id: None,
            dry_run: None,
            force: false,
            event_id: None,
            summary,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            TriggerKind::Alarm { .. } => "alarm",
            TriggerKind::AllocationFailure(_) => "allocation-failure",
            TriggerKind::Schedule => "schedule",
            TriggerKind::Manual => "manual",
        }
    }
}

/// Parses any accepted event.
pub fn parse(event: &Value) -> Result<Trigger> {
    let object = event
        .as_object()
        .ok_or_else(|| Error::invalid_event(format!("expected a JSON object, got {}", json_type(event))))?;

    if object.contains_key("Records") {
        return alarm::parse_sns(event);
    }
    let source = object.get("source").and_then(Value::as_str);
    let detail_type = object.get("detail-type").and_then(Value::as_str);
    match (source, detail_type) {
        (Some("aws.cloudwatch"), Some("CloudWatch Alarm State Change")) => alarm::parse_eventbridge(event),
        (Some("aws.cloudwatch"), None) if object.contains_key("alarmData") => alarm::parse_direct(event),
        (Some("aws.ec2"), Some("AWS API Call via CloudTrail")) => cloudtrail::parse(event),
        (Some("aws.events"), Some("Scheduled Event")) => Ok(parse_schedule(object)),
        (None, None) => manual::parse(event),
        (source, detail_type) => Err(Error::invalid_event(format!(
            "unsupported event (source {}, detail-type {}); headroom accepts CloudWatch alarms (direct, EventBridge or SNS), \
             EC2 allocation failures from CloudTrail via EventBridge, scheduled events, and the manual event {{\"clusterName\": …, \"dryRun\": …}}",
            source.map_or("absent".to_string(), |s| format!("{s:?}")),
            detail_type.map_or("absent".to_string(), |s| format!("{s:?}")),
        ))),
    }
}

fn parse_schedule(object: &serde_json::Map<String, Value>) -> Trigger {
    let rule = object
        .get("resources")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .and_then(Value::as_str)
        .unwrap_or("a schedule");
    let mut trigger = Trigger::new(TriggerKind::Schedule, format!("scheduled capacity check from {rule}"));
    trigger.event_id = object.get("id").and_then(Value::as_str).map(String::from);
    trigger
}

pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
