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
