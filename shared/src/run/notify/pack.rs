//! One publish within SNS's size limit. Pure.
//!
//! With `MessageStructure=json` the message is one JSON object holding a
//! body per protocol, each a JSON string: the summary twice (`default`,
//! `email`), the chat card once (`https`), the report twice (`sqs`,
//! `lambda`). SNS's limit, 262,144 bytes with the message attributes,
//! applies to that whole object, escapes included. What people read is cut
//! last: first the report loses its bulky sections, then everything but the
//! decision; then the card's description is shortened; the summary is cut
//! only when even the smallest report and card leave it no room.

use serde_json::{Value, json};

/// SNS's limit for one message: 256 KiB, message attributes included.
pub const MAX_PUBLISH_BYTES: usize = 262_144;

/// The protocols that get a body of their own. `default` is what any other
/// protocol gets (SNS requires it).
pub const PROTOCOLS: [&str; 5] = ["default", "email", "https", "sqs", "lambda"];

/// The report sections left out first: the largest and the least needed to
/// act on a message. The function's answer always has them.
const BULKY: [&str; 6] = ["plan", "capacity", "capacityBasis", "preflight", "timingsMs", "capacityAlarms"];

const WHY_CUT: &str = "the full report does not fit in one SNS message (262,144 bytes); the function's answer \
                       and its `report` log line hold it";
const CUT_DESCRIPTION: &str =
    "\n… (cut to fit one SNS message: the e-mail summary and the function's answer have it all)";
const CUT_SUMMARY: &str = "\n… (cut to fit one SNS message: the function's answer has the full report)";

/// Bytes left for the message once the subject and the attributes (name,
/// data type `String` and value) are counted.
pub fn budget(subject: &str, attributes: &[(&str, String)]) -> usize {
    let attributes: usize = attributes.iter().map(|(name, value)| name.len() + "String".len() + value.len()).sum();
    MAX_PUBLISH_BYTES.saturating_sub(subject.len() + attributes)
}

/// The `MessageStructure=json` message of the three bodies.
fn envelope(summary: &str, card: &str, report: &str) -> String {
    json!({"default": summary, "email": summary, "https": card, "sqs": report, "lambda": report}).to_string()
}

/// What was cut to fit, for tests and the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cuts {
    /// The report: 0 whole, 1 without its bulky sections, 2 the decision only.
    pub report: u8,
    pub card: bool,
    pub summary: bool,
}

/// Packs the bodies into one message of at most `budget` bytes.
pub fn pack(summary: &str, card: &Value, report: &Value, budget: usize) -> (String, Cuts) {
    let card_text = card.to_string();
    let full_report = report.to_string();
    let full_bytes = full_report.len();
    let mut cuts = Cuts::default();
    let reports = [full_report, reduced(report, full_bytes).to_string(), decision_only(report, full_bytes).to_string()];
    for (level, report_text) in reports.iter().enumerate() {
        let message = envelope(summary, &card_text, report_text);
        if message.len() <= budget {
            cuts.report = level as u8;
            return (message, cuts);
        }
    }
    cuts.report = 2;
    cuts.card = true;
    let smallest_report = &reports[2];
    // The card's description, as long as the summary leaves room for.
    let with_description = |description: &str| {
        let mut card = card.clone();
        card["content"]["description"] = json!(description);
        card.to_string()
    };
    let description = card["content"]["description"].as_str().unwrap_or_default();
    let fits = |d: &str| envelope(summary, &with_description(d), smallest_report).len() <= budget;
    if let Some(cut) = cut_to_fit(description, CUT_DESCRIPTION, fits) {
        return (envelope(summary, &with_description(&cut), smallest_report), cuts);
    }
    // Not even that: the card's required keys and title, and as much of the summary as fits.
    cuts.summary = true;
    let bare_card = json!({
        "version": card["version"],
        "source": card["source"],
        "content": {
            "textType": card["content"]["textType"],
            "title": card["content"]["title"],
            "description": CUT_DESCRIPTION.trim_start(),
        },
    })
    .to_string();
    let fits = |s: &str| envelope(s, &bare_card, smallest_report).len() <= budget;
    let summary = cut_to_fit(summary, CUT_SUMMARY, fits).unwrap_or_default();
    (envelope(&summary, &bare_card, smallest_report), cuts)
}

fn truncation(full_bytes: usize, omitted: Value) -> Value {
    json!({"fullBytes": full_bytes, "omitted": omitted, "why": WHY_CUT})
}

/// The report without its bulky sections, saying so.
fn reduced(report: &Value, full_bytes: usize) -> Value {
    let mut reduced = report.clone();
    if let Some(clusters) = reduced.get_mut("clusters").and_then(Value::as_array_mut) {
        for cluster in clusters.iter_mut().filter_map(Value::as_object_mut) {
            for key in BULKY {
                cluster.remove(key);
            }
        }
    }
    if let Some(object) = reduced.as_object_mut() {
        object.insert("truncated".into(), truncation(full_bytes, json!(BULKY)));
    }
    reduced
}

/// The decision alone: outcome, dry run, each cluster's name and outcome.
fn decision_only(report: &Value, full_bytes: usize) -> Value {
    let clusters: Vec<Value> = report["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({"cluster": c["cluster"], "outcome": c["outcome"], "refusal": c["refusal"]}))
        .collect();
    json!({
        "truncated": truncation(full_bytes, json!("everything but the decision")),
        "outcome": report["outcome"],
        "dryRun": report["dryRun"],
        "clusters": clusters,
    })
}

/// The longest beginning of `text`, ended at a line or word break when one
/// is near, followed by `note`, for which `fits` holds; `text` itself when
/// it fits whole; `None` when not even the note fits.
fn cut_to_fit(text: &str, note: &str, fits: impl Fn(&str) -> bool) -> Option<String> {
    if fits(text) {
        return Some(text.to_string());
    }
    let cut = |end: usize| format!("{}{note}", text[..end].trim_end());
    if !fits(&cut(0)) {
        return None;
    }
    // Every char boundary; `fits` is monotonic in the length kept.
    let ends: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    let (mut fitting, mut too_long) = (0, ends.len());
    while too_long - fitting > 1 {
        let middle = (fitting + too_long) / 2;
        if fits(&cut(ends[middle])) {
            fitting = middle;
        } else {
            too_long = middle;
        }
    }
    let end = ends[fitting];
    let end = match text[..end].rfind(['\n', ' ']) {
        Some(space) if end - space < 200 => space,
        _ => end,
    };
    Some(cut(end))
}

/// One protocol's body of a packed message.
pub fn body(message: &str, protocol: &str) -> Option<String> {
    let bodies: Value = serde_json::from_str(message).ok()?;
    bodies.get(protocol)?.as_str().map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn card(description: &str) -> Value {
        json!({
            "version": "1.0",
            "source": "custom",
            "content": {"textType": "client-markdown", "title": "t", "description": description, "nextSteps": ["n"], "keywords": ["k"]},
            "metadata": {"threadId": "x"},
        })
    }

    fn report(reason: &str, notes: usize) -> Value {
        json!({
            "outcome": "applied",
            "dryRun": false,
            "reason": reason,
            "clusters": [{
                "cluster": "c",
                "outcome": "applied",
                "reason": reason,
                "plan": {"notes": vec!["a \"quoted\" note\n"; notes]},
                "capacity": {},
            }],
        })
    }

    fn check(message: &str, budget: usize) -> [Value; 3] {
        assert!(message.len() <= budget, "{} > {budget}", message.len());
        let bodies: Value = serde_json::from_str(message).expect("the message is JSON");
        assert_eq!(bodies.as_object().unwrap().len(), PROTOCOLS.len());
        assert_eq!(bodies["default"], bodies["email"]);
        assert_eq!(bodies["sqs"], bodies["lambda"]);
        let parse = |p: &str| serde_json::from_str::<Value>(bodies[p].as_str().unwrap()).expect("a JSON body");
        [bodies["default"].clone(), parse("https"), parse("sqs")]
    }

    #[test]
    fn a_small_message_is_whole() {
        let (message, cuts) = pack("summary", &card("d"), &report("r", 3), MAX_PUBLISH_BYTES);
        assert_eq!(cuts, Cuts::default());
        let [summary, card_body, report_body] = check(&message, MAX_PUBLISH_BYTES);
        assert_eq!(summary, "summary");
        assert_eq!(card_body, card("d"));
        assert_eq!(report_body, report("r", 3));
    }

    #[test]
    fn the_report_is_cut_first_and_says_so() {
        let (message, cuts) = pack("summary", &card("d"), &report("r", 20_000), MAX_PUBLISH_BYTES);
        assert_eq!(cuts, Cuts { report: 1, card: false, summary: false });
        let [summary, card_body, report_body] = check(&message, MAX_PUBLISH_BYTES);
        assert_eq!((summary, card_body), (json!("summary"), card("d")));
        assert!(report_body["clusters"][0].get("plan").is_none());
        assert_eq!(report_body["clusters"][0]["reason"], "r");
        assert!(report_body["truncated"]["fullBytes"].as_u64().unwrap() > MAX_PUBLISH_BYTES as u64 / 2);

        let huge_reason = "why ".repeat(40_000);
        let (message, cuts) = pack("summary", &card("d"), &report(&huge_reason, 1), MAX_PUBLISH_BYTES);
        assert_eq!(cuts.report, 2);
        let [_, _, report_body] = check(&message, MAX_PUBLISH_BYTES);
        assert_eq!(report_body["clusters"][0]["outcome"], "applied");
        assert_eq!(report_body["truncated"]["omitted"], "everything but the decision");
    }

    #[test]
    fn the_summary_is_cut_last() {
        let description = "line\n".repeat(60_000);
        let (message, cuts) = pack("summary", &card(&description), &report("r", 1), MAX_PUBLISH_BYTES);
        assert_eq!(cuts, Cuts { report: 2, card: true, summary: false });
        let [summary, card_body, _] = check(&message, MAX_PUBLISH_BYTES);
        assert_eq!(summary, "summary");
        let kept = card_body["content"]["description"].as_str().unwrap();
        assert!(kept.starts_with("line\nline\n") && kept.ends_with(CUT_DESCRIPTION), "{}", &kept[kept.len() - 100..]);
        assert!(message.len() > MAX_PUBLISH_BYTES - 300, "the description fills what is left: {}", message.len());

        let summary = "word ".repeat(30_000);
        let (message, cuts) = pack(&summary, &card("d"), &report("r", 1), MAX_PUBLISH_BYTES);
        assert!(cuts.summary);
        let [kept, card_body, _] = check(&message, MAX_PUBLISH_BYTES);
        let kept = kept.as_str().unwrap();
        assert!(kept.starts_with("word word ") && kept.ends_with(CUT_SUMMARY));
        assert_eq!(card_body["content"]["title"], "t");
        assert!(card_body.get("metadata").is_none());
    }

    #[test]
    fn the_budget_counts_the_subject_and_attributes() {
        let attributes = [("decision", "applied".to_string()), ("cluster", "demo".to_string())];
        assert_eq!(budget("subject", &attributes), MAX_PUBLISH_BYTES - 7 - (8 + 6 + 7) - (7 + 6 + 4));
    }

    fn text() -> impl Strategy<Value = String> {
        // Quotes, backslashes, control characters and multi-byte characters
        // all grow when escaped.
        let piece = prop::sample::select(vec!["a", "word ", "\"", "\\", "\n", "\u{1}", "é", "→", "😀"]);
        (prop::collection::vec(piece, 0..64), 0usize..9000).prop_map(|(pieces, repeat)| {
            let unit: String = pieces.concat();
            unit.repeat(repeat.min(300_000 / unit.len().max(1)))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn every_message_fits_with_valid_bodies_and_the_summary_whole_when_it_can_be(
            summary in text(), description in text(), reason in text(), notes in 0usize..6000, spent in 0usize..2000,
        ) {
            let budget = MAX_PUBLISH_BYTES - spent;
            let (card_value, report_value) = (card(&description), report(&reason, notes));
            let (message, cuts) = pack(&summary, &card_value, &report_value, budget);
            let [kept, card_body, report_body] = check(&message, budget);
            prop_assert_eq!(&card_body["version"], "1.0");
            prop_assert_eq!(&card_body["content"]["title"], "t");
            prop_assert!(report_body["outcome"] == "applied");
            let bare = json!({"version": "1.0", "source": "custom", "content": {"textType": "client-markdown", "title": "t", "description": CUT_DESCRIPTION.trim_start()}}).to_string();
            let smallest = decision_only(&report_value, 0).to_string();
            // Room for a few digits of fullBytes.
            let summary_fits = envelope(&summary, &bare, &smallest).len() + 12 <= budget;
            if summary_fits {
                prop_assert!(!cuts.summary);
                prop_assert_eq!(kept.as_str().unwrap(), summary.as_str());
            }
            if cuts.summary {
                prop_assert!(kept.as_str().unwrap().ends_with(CUT_SUMMARY));
            }
            if cuts.report == 0 {
                prop_assert_eq!(report_body, report_value);
            }
        }
    }
}
