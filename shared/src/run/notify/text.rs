//! The words of a message: what was decided, on which cluster, what changed
//! or was refused and why, and what to do next. One list of lines, rendered
//! twice: as the chat card's markdown and as plain text for mail. Pure.

use crate::plan::{Applied, Step, StepKind};
use crate::run::report::{ClusterReport, Outcome};
use crate::trigger::Trigger;

use super::{planned_change, refusal_word};

/// Plain-text lines stay within what a mail client shows without wrapping.
pub const TEXT_WIDTH: usize = 78;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Line {
    /// `*Label:* value` in the card, `Label: value` in the text.
    Field(&'static str, String),
    /// One resource of the change.
    Item(String),
    /// A rule that would refuse pods in the new block.
    Warning(String),
}

/// What the message says, in reading order.
pub(super) fn lines(trigger: &Trigger, dry_run: bool, cluster: &ClusterReport) -> Vec<Line> {
    let decision = match (cluster.outcome, dry_run) {
        (Outcome::Planned, true) => "planned (dry run: nothing changed)".to_string(),
        (outcome, true) => format!("{} (dry run)", outcome.word()),
        (outcome, false) => outcome.word().to_string(),
    };
    let vpc = cluster.vpc_id.as_ref().map(|v| format!(" (VPC {v})")).unwrap_or_default();
    let mut lines = vec![
        Line::Field("Decision", decision),
        Line::Field("Cluster", format!("{}{vpc}", cluster.cluster)),
        Line::Field("Why", cluster.reason.clone()),
    ];
    if let Some(code) = cluster.refusal {
        lines.push(Line::Field("Refused", refusal_word(code)));
    }
    if let Some(error) = &cluster.error {
        let retry = if error.retryable { ", retryable: Lambda retries it" } else { "" };
        lines.push(Line::Field("Error", format!("{}{retry}", error.kind)));
    }
    lines.push(Line::Field("Trigger", trigger.summary.clone()));
    if let Some(plan) = &cluster.plan {
        let (cidr, subnets) = planned_change(plan);
        if let Some(cidr) = cidr {
            lines.push(Line::Field("CIDR", cidr));
        }
        let created: Vec<&Applied> = cluster.changes.iter().filter(|c| c.step == StepKind::CreateSubnet).collect();
        for (i, (az, block)) in subnets.iter().enumerate() {
            let id = created.get(i).map_or(String::new(), |c| format!(" {}", c.resource));
            lines.push(Line::Item(format!("subnet{id} {block} in {az}")));
        }
        for step in &plan.steps {
            match step {
                Step::CreateNodeClass { name, .. } => lines.push(Line::Field("NodeClass", format!("create {name}"))),
                Step::PatchNodeClass { name, intent, .. } => {
                    lines.push(Line::Field("NodeClass", format!("extend {name} ({} mode)", intent.mode)))
                }
                Step::CreateNodePool { name, .. } => lines.push(Line::Field("NodePool", format!("create {name}"))),
                _ => {}
            }
        }
        for warning in &plan.warnings {
            lines.push(Line::Warning(warning.clone()));
        }
        for warning in &plan.reachability {
            lines.push(Line::Warning(warning.to_string()));
        }
    }
    if let Some(v) = &cluster.verification {
        lines.push(Line::Field("Verified", if v.ok { "yes" } else { "no" }.to_string()));
    }
    if let Some(preflight) = &cluster.preflight {
        let denied: Vec<String> = preflight.denied().map(|c| c.to_string()).collect();
        if !denied.is_empty() {
            lines.push(Line::Field("Denied permissions", denied.join("; ")));
        }
    }
    lines
}

/// The chat card's description (`client-markdown`).
pub(super) fn markdown(lines: &[Line]) -> String {
    lines
        .iter()
        .map(|line| match line {
            Line::Field(label, value) => format!("*{label}:* {value}"),
            Line::Item(text) => format!("• {text}"),
            Line::Warning(text) => format!("⚠ {text}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The plain-text summary for mail and `default`: the subject, the lines,
/// the next steps, and where the full report is.
pub(super) fn plain(subject: &str, lines: &[Line], next_steps: &[String]) -> String {
    let mut out = Vec::new();
    out.extend(wrap(subject, "", ""));
    out.push(String::new());
    for line in lines {
        match line {
            Line::Field(label, value) => out.extend(wrap(&format!("{label}: {value}"), "", "    ")),
            Line::Item(text) => out.extend(wrap(text, "  - ", "    ")),
            Line::Warning(text) => out.extend(wrap(text, "  ! ", "    ")),
        }
    }
    if !next_steps.is_empty() {
        out.push(String::new());
        out.push("Next steps:".into());
        for step in next_steps {
            out.extend(wrap(step, "  - ", "    "));
        }
    }
    out.push(String::new());
    out.extend(wrap(
        "The full JSON report goes to the topic's SQS and Lambda subscribers; \
         `headroom explain` renders it for a person.",
        "",
        "",
    ));
    out.join("\n")
}

/// `text` as lines of at most [`TEXT_WIDTH`] characters, broken at spaces
/// (a longer word stays whole), the first line after `first`, the others
/// after `rest`. Line breaks in `text` are kept.
fn wrap(text: &str, first: &str, rest: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = first.to_string();
    let mut empty = true;
    for paragraph in text.split('\n') {
        for word in paragraph.split_whitespace() {
            let fits = current.chars().count() + usize::from(!empty) + word.chars().count() <= TEXT_WIDTH;
            if !empty && !fits {
                lines.push(std::mem::replace(&mut current, rest.to_string()));
                empty = true;
            }
            if !empty {
                current.push(' ');
            }
            current.push_str(word);
            empty = false;
        }
        lines.push(std::mem::replace(&mut current, rest.to_string()));
        empty = true;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_lines_fit_a_mail_client_and_keep_every_word() {
        let text = "the quick brown fox jumps over the lazy dog ".repeat(9);
        let lines = wrap(&text, "  - ", "    ");
        assert!(lines.len() > 3);
        assert!(lines.iter().all(|l| l.chars().count() <= TEXT_WIDTH), "{lines:#?}");
        assert!(lines[0].starts_with("  - the") && lines[1].starts_with("    "));
        let words: Vec<&str> = lines.iter().flat_map(|l| l.split_whitespace()).filter(|w| *w != "-").collect();
        assert_eq!(words, text.split_whitespace().collect::<Vec<_>>());
        // A word longer than a line is kept whole, on its own line.
        let long = "x".repeat(100);
        assert_eq!(wrap(&format!("a {long} b"), "", ""), vec!["a".to_string(), long, "b".into()]);
    }

    #[test]
    fn markdown_and_text_say_the_same_thing() {
        let lines = vec![
            Line::Field("Decision", "refused".into()),
            Line::Item("subnet 100.64.0.0/18 in us-west-2a".into()),
            Line::Warning("sg-1 allows tcp 5432".into()),
        ];
        assert_eq!(
            markdown(&lines),
            "*Decision:* refused\n• subnet 100.64.0.0/18 in us-west-2a\n⚠ sg-1 allows tcp 5432"
        );
        let text = plain("headroom refused on c: cidr-quota", &lines, &["See docs/operations.md#cidr-quota.".into()]);
        assert!(text.starts_with("headroom refused on c: cidr-quota\n\nDecision: refused\n"), "{text}");
        assert!(text.contains("\n  - subnet 100.64.0.0/18 in us-west-2a\n  ! sg-1 allows tcp 5432\n"), "{text}");
        assert!(text.contains("Next steps:\n  - See docs/operations.md#cidr-quota."), "{text}");
        assert!(!text.contains('*'), "{text}");
    }
}
