//! The documented manual event: `{"clusterName": "demo", "dryRun": true}`.

use serde::Deserialize;
use serde_json::Value;

use super::{Trigger, TriggerKind};
use crate::error::{Error, Result};

/// Unknown fields are refused so a typo (`dryrun`) never turns a dry run
/// into a real one.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ManualEvent {
    #[serde(default)]
    cluster_name: Option<String>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    reason: Option<String>,
}

pub(super) fn parse(event: &Value) -> Result<Trigger> {
    let manual: ManualEvent = serde_json::from_value(event.clone()).map_err(|e| {
        Error::invalid_event(format!(
            "not a manual event ({e}); expected {{\"clusterName\": string, \"dryRun\": bool, \"force\": bool, \"reason\": string}}"
        ))
    })?;
    if manual.cluster_name.is_none() && manual.dry_run.is_none() && !manual.force && manual.reason.is_none() {
        return Err(Error::invalid_event(
            "empty manual event; pass at least {\"clusterName\": …} or {\"dryRun\": true}",
        ));
    }
    if let Some(name) = &manual.cluster_name {
        crate::config::validate_cluster_name(name)
            .map_err(|why| Error::invalid_event(format!("clusterName {name:?}: {why}")))?;
    }
    let mode = match manual.dry_run {
        Some(true) => "dry run",
        Some(false) => "apply",
        None => "run",
    };
    let mut trigger = Trigger::new(
        TriggerKind::Manual,
        format!(
            "manual {mode}{}{}",
            if manual.force { " (forced)" } else { "" },
            manual.reason.map(|r| format!(": {r}")).unwrap_or_default()
        ),
    );
    trigger.cluster = manual.cluster_name;
    trigger.dry_run = manual.dry_run;
    trigger.force = manual.force;
    Ok(trigger)
}
