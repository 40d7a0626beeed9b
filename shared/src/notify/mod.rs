//! What the people who own the cluster are told, and when. Pure.
//!
//! One SNS message per cluster whose decision is `applied`, `refused` or
//! `failed`, or `planned` when an alarm or CloudTrail asked; a scheduled
//! dry run only when its plan differs from the plan of the run before
//! (docs/design.md, "Telling operators"). Never for `no-op` or a rejected
//! event. The message follows the custom-notification format Amazon Q
//! Developer in chat applications renders in Slack and Teams, with the full
//! report beside it for programs.

use serde_json::{Value, json};

use crate::plan::{Applied, Plan, RefusalCode, Step, StepKind};
use crate::report::{ClusterReport, Outcome, Report};
use crate::trigger::{Trigger, TriggerKind};

/// SNS accepts subjects shorter than 100 printable ASCII characters.
pub const MAX_SUBJECT: usize = 99;
/// SNS accepts messages up to 256 KiB, message attributes included.
pub const MAX_MESSAGE_BYTES: usize = 240 * 1024;

/// Where the runbook of every refusal and failure is.
pub const RUNBOOK: &str = "docs/operations.md";

#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub subject: String,
    /// The JSON message.
    pub message: String,
    /// `decision` and `cluster`, for subscription filter policies.
    pub attributes: Vec<(&'static str, String)>,
}

/// Whether a cluster's outcome is worth a message. `plan_changed` answers,
/// for a scheduled dry run, whether this plan differs from the last one.
pub fn worth_telling(trigger: &Trigger, outcome: Outcome, plan_changed: bool) -> bool {
    match outcome {
        Outcome::Applied | Outcome::Refused | Outcome::Failed => true,
        Outcome::Planned => match trigger.kind {
            TriggerKind::Alarm { .. } | TriggerKind::AllocationFailure(_) => true,
            TriggerKind::Schedule => plan_changed,
            // The person who asked reads the answer.
            TriggerKind::Manual => false,
        },
        Outcome::NoOp | Outcome::Rejected => false,
    }
}

/// Printable ASCII, one line, at most [`MAX_SUBJECT`] characters.
pub fn subject_line(text: &str) -> String {
    let mut clean: String = text
        .chars()
        .map(|c| match c {
            ' '..='~' => c,
            '→' => '>',
            '…' => '.',
            _ => ' ',
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if clean.len() > MAX_SUBJECT {
        clean.truncate(MAX_SUBJECT - 3);
        clean = clean.trim_end().to_string() + "...";
    }
    clean
}

fn decision_word(outcome: Outcome) -> &'static str {
    outcome.word()
}

/// The new CIDR, if the plan associates one, and the subnets it creates: (AZ, CIDR).
fn planned_change(plan: &Plan) -> (Option<String>, Vec<(String, String)>) {
    let cidr = plan.steps.iter().find_map(|s| match s {
        Step::AssociateVpcCidr { cidr, .. } | Step::AwaitVpcCidr { cidr, .. } => Some(cidr.to_string()),
        Step::AllocateVpcCidrFromIpamPool { pool_id, netmask_length, .. } => {
            Some(format!("a /{netmask_length} from IPAM pool {pool_id}"))
        }
        _ => None,
    });
    let subnets = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::CreateSubnet { availability_zone, cidr, .. } => Some((availability_zone.clone(), cidr.to_string())),
            _ => None,
        })
        .collect();
    (cidr, subnets)
}

fn refusal_word(code: RefusalCode) -> String {
    serde_json::to_value(code).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// A short summary after the decision: the change, the refusal or the error.
fn headline(cluster: &ClusterReport, dry_run: bool) -> String {
    let change = cluster.plan.as_ref().map(planned_change);
    let mut parts = Vec::new();
    match cluster.outcome {
        Outcome::Applied | Outcome::Planned => {
            if let Some((cidr, subnets)) = change {
                if let Some(cidr) = cidr {
                    parts.push(cidr);
                }
                if !subnets.is_empty() {
                    parts.push(format!("{} subnet{}", subnets.len(), if subnets.len() == 1 { "" } else { "s" }));
                }
            }
            if parts.is_empty() {
                parts.push("NodeClass and routes completed".into());
            }
            if dry_run && cluster.outcome == Outcome::Planned {
                parts.push("dry run".into());
            }
        }
        Outcome::Refused => parts.push(cluster.refusal.map(refusal_word).unwrap_or_else(|| cluster.reason.clone())),
        Outcome::Failed => parts.push(cluster.error.as_ref().map_or(cluster.reason.clone(), |e| e.kind.to_string())),
        Outcome::NoOp | Outcome::Rejected => {}
    }
    parts.join(", ")
}

/// `UnmanagedCluster` → `unmanaged-cluster`: the runbook's anchors.
fn kebab(kind: &str) -> String {
    let mut out = String::with_capacity(kind.len() + 4);
    for (i, c) in kind.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// What to do next, by refusal code or error: the runbook section first.
fn next_steps(cluster: &ClusterReport) -> Vec<String> {
    let anchor = match (cluster.refusal, &cluster.error) {
        (Some(code), _) => Some(refusal_word(code)),
        (None, Some(error)) => Some(kebab(&error.kind)),
        _ => None,
    };
    let mut steps = Vec::new();
    if let Some(anchor) = anchor {
        steps.push(format!("See {RUNBOOK}#{anchor} for what this means and what to do."));
    }
    if let Some(v) = &cluster.verification
        && !v.status_pending_subnets.is_empty()
    {
        steps.push(format!(
            "Auto Mode had not listed {} in the NodeClass status yet; check `kubectl get nodeclass -o yaml`.",
            v.status_pending_subnets.join(", ")
        ));
    }
    if let Some(plan) = &cluster.plan
        && !plan.reachability.is_empty()
    {
        steps.push(
            "Review the security-group and network ACL rules listed: they would refuse pods in the new block.".into(),
        );
    }
    steps
}

fn description(trigger: &Trigger, dry_run: bool, cluster: &ClusterReport) -> String {
    let mut lines = vec![
        format!("*Decision:* {}{}", decision_word(cluster.outcome), if dry_run { " (dry run)" } else { "" }),
        format!(
            "*Cluster:* {}{}",
            cluster.cluster,
            cluster.vpc_id.as_ref().map(|v| format!(" (VPC {v})")).unwrap_or_default()
        ),
        format!("*Why:* {}", cluster.reason),
        format!("*Trigger:* {}", trigger.summary),
    ];
    if let Some(plan) = &cluster.plan {
        let (cidr, subnets) = planned_change(plan);
        if let Some(cidr) = cidr {
            lines.push(format!("*CIDR:* {cidr}"));
        }
        let created: Vec<&Applied> = cluster.changes.iter().filter(|c| c.step == StepKind::CreateSubnet).collect();
        for (i, (az, block)) in subnets.iter().enumerate() {
            let id = created.get(i).map_or(String::new(), |c| format!(" {}", c.resource));
            lines.push(format!("• subnet{id} {block} in {az}"));
        }
        for step in &plan.steps {
            match step {
                Step::CreateNodeClass { name, .. } => lines.push(format!("*NodeClass:* create {name}")),
                Step::PatchNodeClass { name, intent, .. } => {
                    lines.push(format!("*NodeClass:* extend {name} ({} mode)", intent.mode))
                }
                Step::CreateNodePool { name, .. } => lines.push(format!("*NodePool:* create {name}")),
                _ => {}
            }
        }
        for warning in &plan.reachability {
            lines.push(format!("⚠ {warning}"));
        }
    }
    if let Some(v) = &cluster.verification {
        lines.push(format!("*Verified:* {}", if v.ok { "yes" } else { "no" }));
    }
    if let Some(preflight) = &cluster.preflight {
        let denied: Vec<String> = preflight.denied().map(|c| c.to_string()).collect();
        if !denied.is_empty() {
            lines.push(format!("*Denied permissions:* {}", denied.join("; ")));
        }
    }
    lines.join("\n")
}

/// The message for one cluster of a report.
pub fn for_cluster(report: &Report, cluster: &ClusterReport) -> Notification {
    let word = decision_word(cluster.outcome);
    let summary =
        subject_line(&format!("headroom {word} on {}: {}", cluster.cluster, headline(cluster, report.dry_run)));
    let mut related: Vec<String> = cluster.vpc_id.iter().cloned().collect();
    related.extend(cluster.changes.iter().map(|c| c.resource.clone()));
    let mut context = serde_json::Map::new();
    context.insert("cluster".into(), json!(cluster.cluster));
    context.insert("decision".into(), json!(word));
    if let Some(code) = cluster.refusal {
        context.insert("refusal".into(), json!(refusal_word(code)));
    }
    if let Some((Some(cidr), _)) = cluster.plan.as_ref().map(planned_change) {
        context.insert("cidr".into(), json!(cidr));
    }
    let mut message = json!({
        "version": "1.0",
        "source": "custom",
        "id": report.trigger.event_id.clone().unwrap_or_else(|| format!("headroom-{}-{word}", cluster.cluster)),
        "content": {
            "textType": "client-markdown",
            "title": summary,
            "description": description(&report.trigger, report.dry_run, cluster),
            "nextSteps": next_steps(cluster),
            "keywords": ["headroom", cluster.cluster, word],
        },
        "metadata": {
            "threadId": format!("headroom-{}", cluster.cluster),
            "summary": summary,
            "eventType": format!("headroom.{word}"),
            "relatedResources": related,
            "additionalContext": context,
            "enableCustomActions": false,
        },
        "report": {
            "trigger": report.trigger,
            "dryRun": report.dry_run,
            "cluster": cluster,
        },
    });
    let mut text = message.to_string();
    if text.len() > MAX_MESSAGE_BYTES {
        // Keep what people read; say where the rest is.
        message["report"] = json!({
            "truncated": format!("the full report ({} bytes) exceeds what SNS carries; it is in the function's log", text.len()),
        });
        text = message.to_string();
    }
    Notification {
        subject: summary,
        message: text,
        attributes: vec![("decision", word.to_string()), ("cluster", cluster.cluster.clone())],
    }
}

/// A report decided from the trigger alone (an NAU failure, say): one
/// message for the cluster the event names, if it is worth telling.
pub fn for_report(report: &Report, cluster_name: &str) -> Notification {
    let cluster =
        ClusterReport { outcome: report.outcome, reason: report.reason.clone(), ..ClusterReport::new(cluster_name) };
    for_cluster(report, &cluster)
}

/// The JSON message's `content` and `report`, for tests and the demo.
pub fn parse(notification: &Notification) -> Value {
    serde_json::from_str(&notification.message).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_short_printable_ascii() {
        let long = format!("headroom applied on {}: 100.64.0.0/16 → 3 subnets…\n", "x".repeat(120));
        let subject = subject_line(&long);
        assert!(subject.len() <= MAX_SUBJECT, "{}", subject.len());
        assert!(subject.chars().all(|c| (' '..='~').contains(&c)), "{subject}");
        assert!(subject.ends_with("..."));
        assert_eq!(subject_line("a →  b\tc"), "a > b c");
    }

    #[test]
    fn every_refusal_and_failure_has_a_runbook_section() {
        let runbook =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"))
                .unwrap();
        let codes = [
            RefusalCode::NauLimit,
            RefusalCode::CidrQuota,
            RefusalCode::MaxManagedCidrs,
            RefusalCode::PoolExhausted,
            RefusalCode::RestrictedRange,
            RefusalCode::NoRouteTable,
            RefusalCode::NoNodeRole,
            RefusalCode::NodeClassUnextendable,
            RefusalCode::NoNodeSubnets,
            RefusalCode::NoNodePool,
            RefusalCode::NodeRoleNotAuthorized,
            RefusalCode::CannotConverge,
            RefusalCode::ClusterApiUnreadable,
            RefusalCode::IpamPoolUnusable,
            RefusalCode::IpamBlockConflicts,
        ];
        for code in codes {
            let word = refusal_word(code);
            assert!(runbook.contains(&format!("### `{word}`")), "docs/operations.md lacks a section for {word}");
        }
        for kind in [
            "Aws",
            "Kube",
            "PermissionDenied",
            "WrongVpc",
            "VpcNotOptedIn",
            "ClusterTag",
            "UnmanagedCluster",
            "NoCluster",
            "AssociationTimeout",
            "AssociationFailed",
            "Verification",
            "Inventory",
            "Config",
        ] {
            let anchor = kebab(kind);
            assert!(runbook.contains(&format!("`{anchor}`")), "docs/operations.md lacks {anchor}");
        }
    }
}
