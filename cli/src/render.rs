//! What a person reads: a cluster's status, and a report (a plan, an
//! apply, or a function's answer). Pure: data in, text out, so the same
//! report renders the same live and from a file, and snapshot tests pin it.

use std::fmt::Write as _;

use headroom::Report;
use headroom::forecast::{AzForecast, Measure, NoForecast, fmt_hours, fmt_rate};
use headroom::node_subnets::CapacityBasis;
use headroom::plan::{Plan, Step};
use headroom::preflight::Verdict;
use headroom::run::report::{ClusterReport, Outcome};
use headroom::status::{ClusterStatus, SubnetStatus};
use serde_json::Value;

use crate::style::Style;

/// A table with columns padded to their widest cell; numeric columns are
/// right-aligned. Painting happens after padding so colour codes never
/// count as width.
struct Table {
    header: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<(String, Paint)>>,
}

#[derive(Clone, Copy)]
enum Paint {
    None,
    Good,
    Warn,
    Bad,
    Dim,
}

impl Paint {
    fn apply(self, style: Style, text: &str) -> String {
        match self {
            Paint::None => text.to_owned(),
            Paint::Good => style.good(text),
            Paint::Warn => style.warn(text),
            Paint::Bad => style.bad(text),
            Paint::Dim => style.dim(text),
        }
    }
}

impl Table {
    fn new(columns: &[(&'static str, bool)]) -> Self {
        Table {
            header: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<(String, Paint)>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String, style: Style, indent: &str) {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| self.rows.iter().map(|r| r[i].0.chars().count()).chain([self.header[i].len()]).max().unwrap_or(0))
            .collect();
        let line = |cells: Vec<(String, Paint)>| {
            let last = cells.len() - 1;
            let padded: Vec<String> = cells
                .into_iter()
                .enumerate()
                .map(|(i, (text, paint))| {
                    let pad = " ".repeat(widths[i] - text.chars().count());
                    let painted = paint.apply(style, &text);
                    match (self.right[i], i == last) {
                        (true, _) => format!("{pad}{painted}"),
                        (false, true) => painted,
                        (false, false) => format!("{painted}{pad}"),
                    }
                })
                .collect();
            format!("{indent}{}", padded.join("  ").trim_end())
        };
        let header = self.header.iter().map(|h| (h.to_string(), Paint::None)).collect();
        let _ = writeln!(out, "{}", style.bold(&line(header)));
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(row.clone()));
        }
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn users(subnet: &SubnetStatus) -> String {
    let u = &subnet.users;
    let mut parts = Vec::new();
    if !u.nodes_of.is_empty() {
        parts.push(format!("nodes of {}", u.nodes_of.iter().cloned().collect::<Vec<_>>().join(", ")));
    }
    if !u.pods_of.is_empty() {
        parts.push(format!("pods of {}", u.pods_of.iter().cloned().collect::<Vec<_>>().join(", ")));
    }
    if parts.is_empty() {
        return "-".into();
    }
    let pools = u.nodepools.iter().cloned().collect::<Vec<_>>().join(", ");
    format!("{} (NodePool {pools})", parts.join("; "))
}

/// `headroom status`: per AZ, then per subnet.
pub fn status(status: &ClusterStatus, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} {} · VPC {} ({})", style.bold("Cluster"), status.cluster, status.vpc_id, status.region);
    let cidrs: Vec<String> = status
        .vpc_cidrs
        .iter()
        .map(|c| format!("{} ({}{})", c.cidr, c.state, if c.primary { ", primary" } else { "" }))
        .collect();
    let _ = writeln!(out, "CIDRs: {}", cidrs.join(", "));
    let t = status.thresholds;
    let _ = writeln!(
        out,
        "Thresholds per AZ: {} free IPs, {} free /28 prefixes · NodeClass {} ({} mode)",
        thousands(t.min_free_ips_per_az),
        t.min_free_prefixes_per_az,
        status.nodeclass,
        status.subnet_mode
    );
    let _ = writeln!(out);

    let forecast = status.forecast.as_ref();
    let mut columns = vec![("AZ", false), ("SUBNETS", true), ("FREE IPS", true), ("FREE /28S", true), ("USED", true)];
    if forecast.is_some() {
        columns.extend([("TREND", false), ("EXHAUSTED IN", false)]);
    }
    columns.push(("", false));
    let mut azs = Table::new(&columns);
    for az in &status.azs {
        let verdict = match (az.ips_below_threshold, az.prefixes_below_threshold) {
            (true, true) => ("below both thresholds".to_string(), Paint::Bad),
            (true, false) => ("below the IP threshold".to_string(), Paint::Bad),
            (false, true) => ("below the /28 threshold (fragmented)".to_string(), Paint::Bad),
            (false, false) => ("ok".to_string(), Paint::Good),
        };
        let count_paint = |below: bool| if below { Paint::Bad } else { Paint::None };
        let mut row = vec![
            (az.availability_zone.clone(), Paint::None),
            (az.subnets.to_string(), Paint::None),
            (thousands(az.free_ips), count_paint(az.ips_below_threshold)),
            (thousands(az.free_prefixes), count_paint(az.prefixes_below_threshold)),
            (
                format!("{:.1}%", az.utilisation_percent),
                if az.utilisation_percent >= 80.0 { Paint::Warn } else { Paint::None },
            ),
        ];
        if let Some(forecast) = forecast {
            let this = forecast.azs.iter().find(|f| f.availability_zone == az.availability_zone);
            let (trend, left) = this.map(trend).unwrap_or_else(|| ("no data".into(), "-".into()));
            let soon =
                this.and_then(AzForecast::hours_to_exhaustion).is_some_and(|h| h <= forecast.expand_ahead_hours as f64);
            row.push((trend, Paint::None));
            row.push((left, if soon { Paint::Bad } else { Paint::None }));
        }
        row.push(verdict);
        azs.row(row);
    }
    azs.render(&mut out, style, "");
    let _ = writeln!(out);

    let mut subnets = Table::new(&[
        ("SUBNET", false),
        ("AZ", false),
        ("CIDR", false),
        ("FREE IPS", true),
        ("FREE /28S", true),
        ("USED BY", false),
    ]);
    for s in &status.subnets {
        let name = match (&s.name, s.managed) {
            (_, true) => format!("{} [headroom]", s.id),
            (Some(name), false) => format!("{} ({name})", s.id),
            (None, false) => s.id.clone(),
        };
        subnets.row(vec![
            (name, if s.managed { Paint::Good } else { Paint::None }),
            (s.availability_zone.clone(), Paint::None),
            (s.cidr.to_string(), Paint::None),
            (thousands(s.free_ips), Paint::None),
            (thousands(s.free_prefixes), Paint::None),
            (users(s), Paint::Dim),
        ]);
    }
    subnets.render(&mut out, style, "");
    let _ = writeln!(out);

    match &status.basis {
        CapacityBasis::NodeClasses { nodeclasses, notes } => {
            let names = if nodeclasses.is_empty() { "none".into() } else { nodeclasses.join(", ") };
            let _ = writeln!(out, "Counted: the subnets of the NodeClasses that NodePools use ({names}).");
            for note in notes {
                let _ = writeln!(out, "{} {note}", style.warn("note:"));
            }
        }
        CapacityBasis::ClusterSubnets { reason } => {
            let _ = writeln!(out, "{} {reason}", style.warn("Counted:"));
        }
    }
    let starved: Vec<&str> = status.starved_azs().map(|az| az.availability_zone.as_str()).collect();
    if starved.is_empty() {
        let _ = writeln!(out, "{}", style.good("Every AZ is above its thresholds."));
    } else {
        let _ = writeln!(
            out,
            "{} below a threshold: {}. `headroom plan {}` shows what headroom would do.",
            style.bad(&format!("{} AZ{}", starved.len(), if starved.len() == 1 { "" } else { "s" })),
            starved.join(", "),
            status.cluster
        );
    }
    out
}

/// An AZ's trend and time to exhaustion, for the status table: the
/// measure that runs out first, or why there is no forecast.
fn trend(forecast: &AzForecast) -> (String, String) {
    let short = |measure: Measure| match measure {
        Measure::FreeIps => "IPs",
        Measure::FreePrefixes => "/28s",
    };
    if let Some((measure, series)) = forecast.earliest() {
        let hours = series.hours_to_threshold.unwrap_or_default();
        return match (&series.no_forecast, series.rate_per_hour) {
            (Some(NoForecast::Crossed { .. }), _) => ("-".into(), format!("now ({})", short(measure))),
            (_, Some(rate)) => (format!("-{}/h {}", fmt_rate(rate), short(measure)), fmt_hours(hours)),
            (_, None) => ("-".into(), fmt_hours(hours)),
        };
    }
    let why = match &forecast.free_ips.no_forecast {
        Some(NoForecast::NotFalling { rate_per_hour }) if *rate_per_hour > 0.0 => "rising",
        Some(NoForecast::NotFalling { .. }) => "flat",
        Some(NoForecast::TooFewPoints { .. }) => "under an hour of data",
        _ => "-",
    };
    (why.into(), "-".into())
}

fn outcome_word(outcome: Outcome, style: Style) -> String {
    let word = outcome.word();
    match outcome {
        Outcome::Applied | Outcome::NoOp => style.good(word),
        Outcome::Planned => style.warn(word),
        Outcome::Refused | Outcome::Failed | Outcome::Rejected => style.bad(word),
    }
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// An object's fields as `a.b.c: value` lines: nested objects are opened
/// until their values are all plain (`nodeClassRef: {group, kind, name}`
/// stays one line); lists stay whole.
fn leaves<'a>(path: &str, value: &'a Value) -> Vec<(String, &'a Value)> {
    match value.as_object() {
        Some(fields) if fields.values().any(Value::is_object) => {
            fields.iter().flat_map(|(field, inner)| leaves(&format!("{path}.{field}"), inner)).collect()
        }
        _ => vec![(path.to_owned(), value)],
    }
}

/// The NodeClass or NodePool change of a step, as a diff a person reviews.
fn object_change(step: &Step, out: &mut String, style: Style) {
    let pad = "       ";
    match step {
        Step::PatchNodeClass { patch, .. } => {
            for op in patch.as_array().into_iter().flatten() {
                let path = op["path"].as_str().unwrap_or_default();
                let value = op.get("value").map(compact).unwrap_or_default();
                let line = match op["op"].as_str().unwrap_or_default() {
                    "test" => style.dim(&format!("? {path} is still {value} (guard)")),
                    "add" => style.good(&format!("+ {path} {value}")),
                    "replace" => style.warn(&format!("~ {path} {value}")),
                    "remove" => style.bad(&format!("- {path}")),
                    other => format!("{other} {path} {value}"),
                };
                let _ = writeln!(out, "{pad}{line}");
            }
        }
        Step::CreateNodeClass { object, .. } | Step::CreateNodePool { object, .. } => {
            let fields = object.get("spec").and_then(Value::as_object).into_iter().flatten();
            for (field, inner) in fields {
                for (path, value) in leaves(&format!("spec.{field}"), inner) {
                    let _ = writeln!(out, "{pad}{}", style.good(&format!("+ {path}: {}", compact(value))));
                }
            }
        }
        _ => {}
    }
}

fn plan(plan: &Plan, out: &mut String, style: Style) {
    let _ = writeln!(out, "  {} (VPC {}):", style.bold("Plan"), plan.vpc_id);
    for (i, step) in plan.steps.iter().enumerate() {
        let _ = writeln!(out, "    {}. {step}", i + 1);
        object_change(step, out, style);
    }
    for note in &plan.notes {
        let _ = writeln!(out, "  {} {note}", style.dim("note:"));
    }
    for warning in
        plan.warnings.iter().map(ToString::to_string).chain(plan.reachability.iter().map(ToString::to_string))
    {
        let _ = writeln!(out, "  {} {warning}", style.warn("warning:"));
    }
}

fn cluster(report: &ClusterReport, out: &mut String, style: Style) {
    let _ =
        writeln!(out, "{}: {} — {}", style.bold(&report.cluster), outcome_word(report.outcome, style), report.reason);
    if !report.capacity.is_empty() {
        let before: Vec<String> = report
            .capacity
            .iter()
            .map(|(az, c)| format!("{az} {} IPs, {} /28s", thousands(c.free_ips), thousands(c.free_prefixes)))
            .collect();
        let _ = writeln!(out, "  free when read: {}", before.join("; "));
    }
    if let Some(p) = &report.plan {
        plan(p, out, style);
    }
    if let Some(preflight) = &report.preflight {
        let _ = writeln!(out, "  {} ({} checks, nothing changed):", style.bold("Preflight"), preflight.checks.len());
        for check in &preflight.checks {
            let mark = match check.verdict {
                Verdict::Allowed => style.good("✓"),
                Verdict::Denied => style.bad("✗"),
                Verdict::Unverified => style.warn("?"),
            };
            let _ = writeln!(out, "    {mark} {check}");
        }
    }
    if !report.changes.is_empty() {
        let _ = writeln!(out, "  {}:", style.bold("Changes"));
        for change in &report.changes {
            let (mark, how) =
                if change.already_present { (style.dim("="), "already there") } else { (style.good("✓"), "done") };
            let _ = writeln!(out, "    {mark} {} {} ({how}): {}", change.step, change.resource, change.detail);
        }
    }
    if let Some(v) = &report.verification {
        let verdict = if v.ok { style.good("verified") } else { style.bad("NOT verified") };
        let _ = writeln!(out, "  {verdict}: the re-read network holds every change");
        for problem in &v.problems {
            let _ = writeln!(out, "    {} {problem}", style.bad("problem:"));
        }
        if !v.status_pending_subnets.is_empty() {
            let _ = writeln!(
                out,
                "    {} Auto Mode has not listed {} in the NodeClass status yet; it usually does within a minute",
                style.warn("pending:"),
                v.status_pending_subnets.join(", ")
            );
        }
    }
    if let Some(error) = &report.error {
        let retry = if error.retryable { "retryable" } else { "not retryable" };
        let _ = writeln!(out, "  {} {} ({retry}): {}", style.bad("error:"), error.kind, error.message);
    }
}

/// A report: what was decided, the plan, what changed and was verified.
pub fn report(report: &Report, style: Style) -> String {
    let mut out = String::new();
    let mode = if report.dry_run { "dry run" } else { "live" };
    let _ = writeln!(out, "{} {} ({mode})", style.dim("trigger:"), report.trigger.summary);
    if let Some(held) = &report.dry_run_held {
        let _ = writeln!(out, "{} {held}", style.warn("dry run held:"));
    }
    if report.clusters.is_empty() {
        let _ = writeln!(out, "{} — {}", outcome_word(report.outcome, style), report.reason);
        if let Some(error) = &report.error {
            let _ = writeln!(out, "  {} {}: {}", style.bad("error:"), error.kind, error.message);
        }
    }
    for c in &report.clusters {
        cluster(c, &mut out, style);
    }
    let published = &report.published;
    for told in &published.notifications {
        match &told.error {
            None => {
                let _ = writeln!(out, "{} {}", style.dim("told the operators:"), told.subject);
            }
            Some(error) => {
                let _ = writeln!(out, "{} {} ({error})", style.bad("could not tell the operators:"), told.subject);
            }
        }
    }
    if let Some(error) = &published.metrics_error {
        let _ = writeln!(out, "{} {error}", style.bad("metrics not published:"));
    }
    out
}

/// A function's answer that carries no report: a rejected event.
pub fn rejected(answer: &Value, style: Style) -> String {
    let function = answer["function"].as_str().unwrap_or("a function");
    let reason = answer["reason"].as_str().unwrap_or("no reason given");
    format!("{} by {function} — {reason}\n", style.bad("rejected"))
}

/// Exit status for a report: 1 when any cluster was refused or failed.
pub fn exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Refused | Outcome::Failed | Outcome::Rejected => 1,
        Outcome::NoOp | Outcome::Planned | Outcome::Applied => 0,
    }
}
