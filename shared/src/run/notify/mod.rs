//! What the people who own the cluster are told, and when. Pure.
//!
//! One SNS message per cluster whose decision is `applied`, `refused` or
//! `failed`, or `planned` when an alarm or CloudTrail asked; a scheduled
//! dry run only when its plan differs from the plan of the run before
//! (docs/design.md, "Telling operators"). Never for `no-op` or a rejected
//! event. The message is published with `MessageStructure=json`, so each
//! subscriber gets a body it can read: `https` (Amazon Q Developer in chat
//! applications) its custom-notification JSON and nothing else, `email` and
//! `default` a plain-text summary (`text.rs`), `sqs` and `lambda` the full
//! JSON report, all within SNS's size limit (`pack.rs`).

use serde_json::json;

use crate::plan::{Plan, RefusalCode, Step};
use crate::run::report::{ClusterReport, Outcome, Report};
use crate::trigger::{Trigger, TriggerKind};

mod pack;
mod text;

pub use pack::{Cuts, MAX_PUBLISH_BYTES, PROTOCOLS};

/// SNS accepts subjects shorter than 100 printable ASCII characters.
pub const MAX_SUBJECT: usize = 99;

/// Where the runbook of every refusal and failure is.
pub const RUNBOOK: &str = "docs/operations.md";

#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// What mail shows as the subject (SNS `Subject`).
    pub subject: String,
    /// The `MessageStructure=json` message: one body per protocol of
    /// [`PROTOCOLS`].
    pub message: String,
    /// `decision` and `cluster`, for subscription filter policies.
    pub attributes: Vec<(&'static str, String)>,
    /// What had to be cut to fit one publish.
    pub cuts: Cuts,
}

impl Notification {
    /// The body one protocol's subscribers get.
    pub fn body(&self, protocol: &str) -> Option<String> {
        pack::body(&self.message, protocol)
    }
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

/// What to do next: by refusal code or error, the runbook section first;
/// otherwise what the change means for the cluster.
fn next_steps(cluster: &ClusterReport, dry_run: bool) -> Vec<String> {
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
        && !plan.warnings.is_empty()
    {
        steps.push(
            "The new block lies inside a wider route destination (the warning names it): traffic from this VPC to \
             the block now stays in the VPC; keep the block out of what that route reaches elsewhere."
                .into(),
        );
    }
    if let Some(plan) = &cluster.plan
        && !plan.reachability.is_empty()
    {
        steps.push(
            "Review the security-group and network ACL rules listed: they would refuse pods in the new block.".into(),
        );
    }
    let name = &cluster.cluster;
    match cluster.outcome {
        Outcome::Applied => steps.push(format!(
            "Nothing else to do: new nodes and pods use the new subnets as they need room; \
             `headroom status {name}` shows the headroom per AZ."
        )),
        Outcome::Planned if dry_run => steps.push(format!(
            "Nothing changed (dry run). `headroom apply {name}` makes this change, \
             or the functions do once DRY_RUN is false."
        )),
        _ => {}
    }
    steps
}

/// What the message tells: per protocol, as SNS delivers it.
pub fn for_cluster(report: &Report, cluster: &ClusterReport) -> Notification {
    let word = cluster.outcome.word();
    let subject =
        subject_line(&format!("headroom {word} on {}: {}", cluster.cluster, headline(cluster, report.dry_run)));
    let lines = text::lines(&report.trigger, report.dry_run, cluster);
    let steps = next_steps(cluster, report.dry_run);
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
    // Amazon Q Developer's custom notification, its keys and no other.
    let card = json!({
        "version": "1.0",
        "source": "custom",
        "id": report.trigger.event_id.clone().unwrap_or_else(|| format!("headroom-{}-{word}", cluster.cluster)),
        "content": {
            "textType": "client-markdown",
            "title": subject,
            "description": text::markdown(&lines),
            "nextSteps": steps,
            "keywords": ["headroom", cluster.cluster, word],
        },
        "metadata": {
            "threadId": format!("headroom-{}", cluster.cluster),
            "summary": subject,
            "eventType": format!("headroom.{word}"),
            "relatedResources": related,
            "additionalContext": context,
            "enableCustomActions": false,
        },
    });
    let summary = text::plain(&subject, &lines, &steps);
    let report = serde_json::to_value(told_report(report, cluster))
        .unwrap_or_else(|e| json!({"outcome": word, "error": format!("encoding the report: {e}")}));
    let attributes = vec![("decision", word.to_string()), ("cluster", cluster.cluster.clone())];
    let (message, cuts) = pack::pack(&summary, &card, &report, pack::budget(&subject, &attributes));
    Notification { subject, message, attributes, cuts }
}

/// The report a subscriber program gets: the invocation's, with only the
/// cluster told about (a report without clusters as it is), so that
/// `headroom explain` reads it like a function's answer.
fn told_report(report: &Report, cluster: &ClusterReport) -> Report {
    let mut told = report.clone();
    if !told.clusters.is_empty() {
        told.clusters = vec![cluster.clone()];
        told.outcome = cluster.outcome;
        told.reason = cluster.reason.clone();
    }
    told
}

/// A report decided from the trigger alone (an NAU failure, say): one
/// message for the cluster the event names, if it is worth telling.
pub fn for_report(report: &Report, cluster_name: &str) -> Notification {
    let cluster =
        ClusterReport { outcome: report.outcome, reason: report.reason.clone(), ..ClusterReport::new(cluster_name) };
    for_cluster(report, &cluster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AllowRule, Direction};
    use crate::plan::Applied;
    use crate::plan::StepKind;
    use crate::reachability::ReachabilityWarning;
    use crate::run::report::Verification;

    fn applied(notes: usize, warnings: usize) -> (Report, ClusterReport) {
        let trigger = crate::trigger::parse(&json!({"dryRun": false})).expect("the manual event");
        let mut steps = vec![Step::AssociateVpcCidr { vpc_id: "vpc-1".into(), cidr: "100.64.0.0/16".parse().unwrap() }];
        let mut changes = Vec::new();
        for (i, az) in ["us-west-2a", "us-west-2b", "us-west-2c"].iter().enumerate() {
            steps.push(Step::CreateSubnet {
                vpc_id: "vpc-1".into(),
                availability_zone: az.to_string(),
                cidr: format!("100.64.{}.0/18", i * 64).parse().unwrap(),
                tags: Default::default(),
            });
            changes.push(Applied {
                step: StepKind::CreateSubnet,
                resource: format!("subnet-{i}"),
                detail: String::new(),
                already_present: false,
            });
        }
        steps.push(Step::CreateNodePool { name: "headroom".into(), object: json!({}) });
        let rule = |i: usize| ReachabilityWarning {
            rule: AllowRule {
                holder: format!("sg-{i:08x} (orders-db)"),
                rule: "tcp 5432".into(),
                direction: Direction::Ingress,
                cidr: "192.168.0.0/16".parse().unwrap(),
            },
            excludes: vec!["100.64.0.0/16".parse().unwrap()],
        };
        let plan = Plan {
            cluster: "c".into(),
            vpc_id: "vpc-1".into(),
            starved_azs: vec!["us-west-2a".into()],
            steps,
            notes: vec!["a note the report keeps and the message need not".into(); notes],
            warnings: Vec::new(),
            reachability: (0..warnings).map(rule).collect(),
            forecast: None,
        };
        let mut cluster = ClusterReport::new("c");
        cluster.vpc_id = Some("vpc-1".into());
        cluster.outcome = Outcome::Applied;
        cluster.reason = "below the thresholds in us-west-2a".into();
        cluster.plan = Some(plan);
        cluster.changes = changes;
        cluster.verification = Some(Verification { ok: true, problems: vec![], status_pending_subnets: vec![] });
        let report = Report::new(trigger, false, vec![cluster.clone()], 1234);
        (report, cluster)
    }

    #[test]
    fn a_shadowed_route_reaches_the_chat_card_and_the_mail() {
        let (report, mut cluster) = applied(0, 0);
        let shadow = "100.64.0.0/16 lies inside 100.64.0.0/10 through tgw-0hub";
        cluster.plan.as_mut().unwrap().warnings.push(shadow.into());
        let told = for_cluster(&report, &cluster);
        let card: serde_json::Value = serde_json::from_str(&told.body("https").unwrap()).unwrap();
        let description = card["content"]["description"].as_str().unwrap();
        assert!(description.contains("tgw-0hub"), "{description}");
        let summary = told.body("email").unwrap();
        let words = summary.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words.contains("tgw-0hub"), "{summary}");
        assert!(words.contains("inside a wider route destination"), "{summary}");
    }

    #[test]
    fn each_subscriber_reads_its_own_body() {
        let (report, cluster) = applied(2, 1);
        let told = for_cluster(&report, &cluster);
        assert_eq!(told.subject, "headroom applied on c: 100.64.0.0/16, 3 subnets");
        assert_eq!(told.cuts, Cuts::default());
        let bodies: serde_json::Value = serde_json::from_str(&told.message).unwrap();
        let mut protocols: Vec<&String> = bodies.as_object().unwrap().keys().collect();
        protocols.sort();
        assert_eq!(protocols, ["default", "email", "https", "lambda", "sqs"]);

        // https: Amazon Q Developer's custom notification and nothing else.
        let card: serde_json::Value = serde_json::from_str(&told.body("https").unwrap()).unwrap();
        let keys = |v: &serde_json::Value| {
            let mut keys = v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            keys.sort();
            keys
        };
        assert_eq!(keys(&card), ["content", "id", "metadata", "source", "version"]);
        assert_eq!(keys(&card["content"]), ["description", "keywords", "nextSteps", "textType", "title"]);
        assert_eq!((&card["version"], &card["source"]), (&json!("1.0"), &json!("custom")));
        assert_eq!(card["content"]["title"], told.subject);
        let description = card["content"]["description"].as_str().unwrap();
        assert!(description.contains("*Decision:* applied\n*Cluster:* c (VPC vpc-1)"), "{description}");
        assert!(description.contains("• subnet subnet-0 100.64.0.0/18 in us-west-2a"), "{description}");
        assert!(description.contains("⚠ sg-00000000 (orders-db)"), "{description}");

        // email and default: the same plain text, readable in a mail client.
        let summary = told.body("default").unwrap();
        assert_eq!(told.body("email").unwrap(), summary);
        assert!(summary.lines().all(|l| l.chars().count() <= text::TEXT_WIDTH), "{summary}");
        assert!(!summary.contains('*') && !summary.trim_start().starts_with('{'), "{summary}");
        for wanted in [
            "headroom applied on c: 100.64.0.0/16, 3 subnets\n",
            "Decision: applied",
            "Cluster: c (VPC vpc-1)",
            "Why: below the thresholds in us-west-2a",
            "CIDR: 100.64.0.0/16",
            "  - subnet subnet-2 100.64.128.0/18 in us-west-2c",
            "NodePool: create headroom",
            "Verified: yes",
            "Next steps:\n  - Review the security-group",
            "`headroom status c`",
        ] {
            assert!(summary.contains(wanted), "{wanted:?} missing from:\n{summary}");
        }

        // sqs and lambda: the full report, as a function answers it.
        let sqs = told.body("sqs").unwrap();
        assert_eq!(told.body("lambda").unwrap(), sqs);
        let parsed: Report = serde_json::from_str(&sqs).expect("the report headroom explain reads");
        assert_eq!(parsed, report);
    }

    #[test]
    fn a_huge_plan_cuts_the_report_never_the_summary() {
        let (report, cluster) = applied(20_000, 3);
        let whole = for_cluster(&report, &applied(0, 3).0.clusters[0]).body("default").unwrap();
        let told = for_cluster(&report, &cluster);
        assert!(told.message.len() <= MAX_PUBLISH_BYTES);
        assert_eq!(told.cuts, Cuts { report: 1, card: false, summary: false });
        assert_eq!(told.body("default").unwrap(), whole);
        let sqs: serde_json::Value = serde_json::from_str(&told.body("sqs").unwrap()).unwrap();
        assert!(sqs["truncated"]["why"].as_str().unwrap().contains("the function's answer"), "{sqs}");
        assert_eq!(sqs["clusters"][0]["outcome"], "applied");
        assert_eq!(sqs["clusters"][0]["changes"].as_array().unwrap().len(), 3);

        // So many warnings that the text itself is too long: cut, and still one message.
        let (report, cluster) = applied(0, 5_000);
        let told = for_cluster(&report, &cluster);
        assert!(told.message.len() <= pack::budget(&told.subject, &told.attributes), "{}", told.message.len());
        assert!(told.cuts.card && told.body("default").unwrap().starts_with(&told.subject));
    }

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
            RefusalCode::IpamAllocationTagsMissing,
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
