//! EC2 allocation failures, as CloudTrail delivers them through EventBridge
//! (docs/aws-rules.md, "Signals").

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Trigger, TriggerAction, TriggerKind};
use crate::error::{Error, Result};

/// The API calls whose failures mean the CNI could not get addresses.
pub const ALLOCATION_EVENTS: &[&str] = &["AssignPrivateIpAddresses", "AssignIpv6Addresses", "CreateNetworkInterface"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationFailure {
    pub event_name: String,
    pub error_code: String,
    pub error_message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Detail {
    event_name: String,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    request_parameters: Option<Value>,
    #[serde(default, rename = "eventID")]
    event_id: Option<String>,
}

pub(super) fn parse(event: &Value) -> Result<Trigger> {
    let detail = event.get("detail").ok_or_else(|| Error::invalid_event("CloudTrail event without `detail`"))?;
    let detail: Detail = serde_json::from_value(detail.clone())
        .map_err(|e| Error::invalid_event(format!("CloudTrail `detail` is malformed: {e}")))?;

    if !ALLOCATION_EVENTS.contains(&detail.event_name.as_str()) {
        return Err(Error::invalid_event(format!(
            "CloudTrail event {} is not an address allocation ({})",
            detail.event_name,
            ALLOCATION_EVENTS.join(", ")
        )));
    }
    let error_code = detail.error_code.clone().ok_or_else(|| {
        Error::invalid_event(format!("CloudTrail {} event has no `errorCode`: the call succeeded", detail.event_name))
    })?;

    let code = error_code.strip_prefix("Client.").unwrap_or(&error_code);
    let message = detail.error_message.clone().unwrap_or_default();
    let action = match code {
        "InsufficientCidrBlocks" | "InsufficientFreeAddressesInSubnet" => TriggerAction::Evaluate,
        // The generic code: only its message tells a full subnet from a typo.
        "InvalidParameterValue" if mentions_capacity(&message) => TriggerAction::Evaluate,
        "InvalidParameterValue" => TriggerAction::Ignore(format!(
            "{} failed with InvalidParameterValue that is not about capacity: {message}",
            detail.event_name
        )),
        "NetworkAddressUsageLimitExceeded" => TriggerAction::DoNotExpand(
            "the VPC hit its Network Address Usage quota; another CIDR adds NAU units instead of removing them. \
             Request a higher NAU quota or remove unused ENIs"
                .into(),
        ),
        other => TriggerAction::Ignore(format!(
            "{} failed with {other}, which more address space does not fix",
            detail.event_name
        )),
    };

    let params = detail.request_parameters.as_ref();
    let param = |key: &str| params.and_then(|p| p.get(key)).and_then(Value::as_str).map(String::from);

    let mut trigger = Trigger::new(
        TriggerKind::AllocationFailure(AllocationFailure {
            event_name: detail.event_name.clone(),
            error_code: error_code.clone(),
            error_message: detail.error_message.clone(),
        }),
        format!("{} failed with {error_code}", detail.event_name),
    );
    trigger.action = action;
    trigger.network_interface_id = param("networkInterfaceId");
    trigger.subnet_ids = param("subnetId").into_iter().collect();
    trigger.event_id = detail.event_id.or_else(|| event.get("id").and_then(Value::as_str).map(String::from));
    Ok(trigger)
}

fn mentions_capacity(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("sufficient free") || m.contains("insufficient") || m.contains("no free")
}
