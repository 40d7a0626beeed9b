//! The human output, pinned: reports and statuses that the CLI wrote
//! (`--output json`) against the lab, rendered again. A change to the
//! rendering shows up as a snapshot diff to review (`cargo insta review`,
//! or `INSTA_UPDATE=always` and `git diff`).

use headroom::Report;
use headroom::status::ClusterStatus;
use headroom_cli::render;
use headroom_cli::style::Style;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn report(name: &str) -> Report {
    serde_json::from_str(&fixture(name)).expect("a report the CLI wrote parses back")
}

fn status(name: &str) -> ClusterStatus {
    serde_json::from_str(&fixture(name)).expect("a status the CLI wrote parses back")
}

#[test]
fn status_of_the_fragmented_lab() {
    insta::assert_snapshot!(render::status(&status("lab-status-before.json"), Style::PLAIN));
}

#[test]
fn status_after_the_remediation() {
    insta::assert_snapshot!(render::status(&status("lab-status-after.json"), Style::PLAIN));
}

#[test]
fn the_plan_of_a_dry_run() {
    insta::assert_snapshot!(render::report(&report("lab-plan.json"), Style::PLAIN));
}

#[test]
fn an_applied_report() {
    insta::assert_snapshot!(render::report(&report("lab-apply.json"), Style::PLAIN));
}

#[test]
fn colour_marks_what_needs_attention() {
    let coloured = render::status(&status("lab-status-before.json"), Style { color: true });
    insta::assert_snapshot!(coloured.replace('\x1b', "<ESC>"));
}

#[test]
fn reports_survive_a_round_trip_through_json() {
    for name in ["lab-plan.json", "lab-apply.json"] {
        let parsed = report(name);
        let again: Report = serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
        assert_eq!(again, parsed, "{name}");
        let original: serde_json::Value = serde_json::from_str(&fixture(name)).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), original, "{name}: nothing lost or renamed");
    }
}

#[test]
fn a_rejected_answer_renders_who_rejected_it_and_why() {
    let answer = serde_json::json!({
        "function": "on-alarm",
        "outcome": "rejected",
        "reason": "invalid event: on-alarm does not handle schedule events",
    });
    assert_eq!(
        render::rejected(&answer, Style::PLAIN),
        "rejected by on-alarm — invalid event: on-alarm does not handle schedule events\n"
    );
}

/// `headroom status` with the history read: one AZ falling, one flat, one
/// with under an hour of points.
#[test]
fn status_with_each_azs_trend() {
    use std::collections::BTreeMap;

    use headroom::capacity::AzCapacity;
    use headroom::forecast::{AzHistory, Point, forecast_cluster};

    let mut status = status("lab-status-after.json");
    let series = |points: i64, per_hour: f64| -> Vec<Point> {
        (0..points)
            .map(|i| Point::new(1_800_000_000 + i * 300, 8442.0 + per_hour * (i - points + 1) as f64 / 12.0))
            .collect()
    };
    let flat = |points| series(points, 0.0);
    let history = BTreeMap::from([
        ("us-west-2a".to_string(), AzHistory { free_ips: series(72, -900.0), free_prefixes: flat(72) }),
        ("us-west-2b".to_string(), AzHistory { free_ips: flat(72), free_prefixes: flat(72) }),
        ("us-west-2c".to_string(), AzHistory { free_ips: series(6, -900.0), free_prefixes: flat(6) }),
    ]);
    let capacity = status
        .azs
        .iter()
        .map(|az| {
            let now = AzCapacity { free_ips: az.free_ips, free_prefixes: az.free_prefixes, ..AzCapacity::default() };
            (az.availability_zone.clone(), now)
        })
        .collect();
    status.forecast = Some(forecast_cluster(&capacity, &history, status.thresholds, 6, 24));
    let rendered = render::status(&status, Style::PLAIN);
    // (8,442 - 512) / 900 = 8.8 h.
    assert!(rendered.contains("-900.0/h IPs") && rendered.contains("8.8 h"), "{rendered}");
    insta::assert_snapshot!(rendered);
}
