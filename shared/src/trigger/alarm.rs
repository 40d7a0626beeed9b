//! CloudWatch alarms, in the three ways they arrive (docs/aws-rules.md, "Signals").

use std::collections::HashMap;

use aws_lambda_events::event::sns::SnsEvent;
use serde::Deserialize;
use serde_json::Value;

use super::{AlarmDelivery, Trigger, TriggerAction, TriggerKind};
use crate::error::{Error, Result};

/// Dimension names headroom's own metrics use (see `aws::metrics`).
pub const CLUSTER_DIMENSION: &str = "ClusterName";
pub const AZ_DIMENSION: &str = "AvailabilityZone";
pub const SUBNET_DIMENSION: &str = "SubnetId";

/// The part of the direct-action and EventBridge shapes we use. They share
/// `alarmName`/`state`/`configuration`; only the envelope differs.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlarmData {
    alarm_name: String,
    state: AlarmState,
    #[serde(default)]
    configuration: Option<AlarmConfiguration>,
}

#[derive(Deserialize)]
struct AlarmState {
    value: String,
    #[serde(default)]
    timestamp: Option<String>,
}

#[derive(Deserialize)]
struct AlarmConfiguration {
    #[serde(default)]
    metrics: Vec<MetricDefinition>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetricDefinition {
    #[serde(default)]
    metric_stat: Option<MetricStat>,
}

#[derive(Deserialize)]
struct MetricStat {
    metric: Metric,
}

#[derive(Deserialize)]
struct Metric {
    name: String,
    #[serde(default)]
    dimensions: HashMap<String, String>,
}

/// The classic alarm notification that SNS carries as a JSON string.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsAlarmMessage {
    alarm_name: String,
    new_state_value: String,
    #[serde(default)]
    trigger: Option<SnsAlarmTrigger>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsAlarmTrigger {
    #[serde(default)]
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<SnsDimension>,
}

#[derive(Deserialize)]
struct SnsDimension {
    name: String,
    value: String,
}

pub(super) fn parse_direct(event: &Value) -> Result<Trigger> {
    let data =
        event.get("alarmData").ok_or_else(|| Error::invalid_event("CloudWatch alarm event without `alarmData`"))?;
    let data: AlarmData = serde_json::from_value(data.clone())
        .map_err(|e| Error::invalid_event(format!("CloudWatch alarm `alarmData` is malformed: {e}")))?;
    // The ARN is the same for every firing; with the state's timestamp it
    // names one state change, so a redelivery is recognisable in the logs.
    let arn = event.get("alarmArn").and_then(Value::as_str);
    let id = arn.map(|arn| match &data.state.timestamp {
        Some(at) => format!("{arn}@{at}"),
        None => arn.to_string(),
    });
    Ok(from_alarm_data(AlarmDelivery::Direct, data, id))
}

pub(super) fn parse_eventbridge(event: &Value) -> Result<Trigger> {
    let detail = event
        .get("detail")
        .ok_or_else(|| Error::invalid_event("CloudWatch Alarm State Change event without `detail`"))?;
    let data: AlarmData = serde_json::from_value(detail.clone())
        .map_err(|e| Error::invalid_event(format!("CloudWatch Alarm State Change `detail` is malformed: {e}")))?;
    let id = event.get("id").and_then(Value::as_str).map(String::from);
    Ok(from_alarm_data(AlarmDelivery::EventBridge, data, id))
}

pub(super) fn parse_sns(event: &Value) -> Result<Trigger> {
    let sns: SnsEvent = serde_json::from_value(event.clone())
        .map_err(|e| Error::invalid_event(format!("event with `Records` is not an SNS event: {e}")))?;
    let record = match sns.records.as_slice() {
        [record] => record,
        [] => return Err(Error::invalid_event("SNS event with no records")),
        more => {
            return Err(Error::invalid_event(format!("SNS event with {} records; Lambda delivers one", more.len())));
        }
    };
    if record.event_source != "aws:sns" {
        return Err(Error::invalid_event(format!(
            "`Records` from {:?}; only SNS-delivered alarms are accepted",
            record.event_source
        )));
    }
    let message: SnsAlarmMessage = serde_json::from_str(&record.sns.message)
        .map_err(|e| Error::invalid_event(format!("SNS message is not a CloudWatch alarm notification: {e}")))?;
    let mut dimensions = HashMap::new();
    let mut metric = None;
    if let Some(trigger) = message.trigger {
        metric = trigger.metric_name;
        dimensions = trigger.dimensions.into_iter().map(|d| (d.name, d.value)).collect();
    }
    Ok(alarm_trigger(
        AlarmDelivery::Sns,
        message.alarm_name,
        message.new_state_value,
        metric,
        &dimensions,
        Some(record.sns.message_id.clone()),
    ))
}

fn from_alarm_data(delivery: AlarmDelivery, data: AlarmData, id: Option<String>) -> Trigger {
    let metric = data.configuration.into_iter().flat_map(|c| c.metrics).find_map(|m| m.metric_stat).map(|s| s.metric);
    let (name, dimensions) = match metric {
        Some(m) => (Some(m.name), m.dimensions),
        None => (None, HashMap::new()),
    };
    alarm_trigger(delivery, data.alarm_name, data.state.value, name, &dimensions, id)
}

fn alarm_trigger(
    delivery: AlarmDelivery,
    alarm_name: String,
    state: String,
    metric: Option<String>,
    dimensions: &HashMap<String, String>,
    event_id: Option<String>,
) -> Trigger {
    let action = match state.as_str() {
        "ALARM" => TriggerAction::Evaluate,
        "OK" | "INSUFFICIENT_DATA" => TriggerAction::Ignore(format!("alarm {alarm_name} is {state}; only ALARM acts")),
        other => TriggerAction::Ignore(format!("alarm {alarm_name} is in unknown state {other:?}; only ALARM acts")),
    };
    let mut trigger = Trigger::new(
        TriggerKind::Alarm { delivery, alarm_name: alarm_name.clone(), state: state.clone(), metric },
        format!("alarm {alarm_name} is {state}"),
    );
    trigger.action = action;
    trigger.cluster = dimensions.get(CLUSTER_DIMENSION).cloned();
    trigger.availability_zone = dimensions.get(AZ_DIMENSION).cloned();
    trigger.subnet_ids = dimensions.get(SUBNET_DIMENSION).cloned().into_iter().collect();
    trigger.event_id = event_id;
    trigger
}
