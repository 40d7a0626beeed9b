//! Every sample in `samplecli-events/` parses to the documented decision;
//! every malformed one is a clear, non-retryable error; nothing panics.

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn sample(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samplecli-events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parsed(name: &str) -> Trigger {
    parse(&sample(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn sample_names(dir: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samplecli-events").join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .map(|n| if dir.is_empty() { n } else { format!("{dir}/{n}") })
        .collect();
    names.sort();
    names
}

#[test]
fn direct_alarm_in_alarm_evaluates_and_names_the_cluster() {
    let t = parsed("alarm-direct-alarm.json");
    assert_eq!(t.action, TriggerAction::Evaluate);
    assert_eq!(t.cluster.as_deref(), Some("demo-cluster"));
    assert!(matches!(
        &t.kind,
        TriggerKind::Alarm { delivery: AlarmDelivery::Direct, state, metric: Some(m), .. } if state == "ALARM" && m == "MinAzFreePrefixes"
    ));
}

#[test]
fn ok_and_insufficient_data_are_no_ops() {
    for name in ["alarm-direct-ok.json", "alarm-direct-insufficient-data.json"] {
        let t = parsed(name);
        assert!(
            matches!(&t.action, TriggerAction::Ignore(why) if why.contains("only ALARM acts")),
            "{name}: {:?}",
            t.action
        );
    }
}

#[test]
fn eventbridge_alarm_carries_cluster_and_az() {
    let t = parsed("alarm-eventbridge.json");
    assert_eq!(t.action, TriggerAction::Evaluate);
    assert!(matches!(t.kind, TriggerKind::Alarm { delivery: AlarmDelivery::EventBridge, .. }));
    assert_eq!(t.cluster.as_deref(), Some("demo-cluster"));
    assert_eq!(t.availability_zone.as_deref(), Some("us-west-2b"));
}

#[test]
fn sns_alarm_is_unwrapped() {
    let t = parsed("alarm-sns.json");
    assert_eq!(t.action, TriggerAction::Evaluate);
    assert!(matches!(t.kind, TriggerKind::Alarm { delivery: AlarmDelivery::Sns, .. }));
    assert_eq!(t.cluster.as_deref(), Some("demo-cluster"));
    assert_eq!(t.availability_zone.as_deref(), Some("us-west-2a"));
    assert!(t.event_id.is_some());
}

#[test]
fn capacity_failures_evaluate_with_their_eni_or_subnet() {
    let t = parsed("cloudtrail-insufficient-cidr-blocks.json");
    assert_eq!(t.action, TriggerAction::Evaluate);
    assert_eq!(t.network_interface_id.as_deref(), Some("eni-0a1b2c3d4e5f60718"));
    assert!(matches!(&t.kind, TriggerKind::AllocationFailure(f) if f.error_code == "Client.InsufficientCidrBlocks"));
    assert!(t.event_id.is_some(), "the CloudTrail eventID identifies a redelivery");

    let t = parsed("cloudtrail-insufficient-free-addresses.json");
    assert_eq!(t.action, TriggerAction::Evaluate);
    assert_eq!(t.subnet_ids, vec!["subnet-0b1c2d3e4f5a60718"]);

    for name in ["cloudtrail-invalid-parameter-capacity.json", "cloudtrail-ipv6-insufficient.json"] {
        assert_eq!(parsed(name).action, TriggerAction::Evaluate, "{name}");
    }
}

#[test]
fn the_nau_limit_is_do_not_expand() {
    let t = parsed("cloudtrail-nau-limit-exceeded.json");
    assert!(
        matches!(&t.action, TriggerAction::DoNotExpand(why) if why.contains("Network Address Usage")),
        "{:?}",
        t.action
    );
}

#[test]
fn unrelated_cloudtrail_events_never_evaluate() {
    for name in sample_names("negative") {
        match parse(&sample(&name)) {
            Ok(t) => assert!(matches!(t.action, TriggerAction::Ignore(_)), "{name}: {:?}", t.action),
            Err(e) => assert!(!e.is_retryable(), "{name}"),
        }
    }
}

#[test]
fn schedule_and_manual_events() {
    let t = parsed("scheduled.json");
    assert_eq!(t.kind, TriggerKind::Schedule);
    assert_eq!(t.action, TriggerAction::Evaluate);

    let t = parsed("manual-dry-run.json");
    assert_eq!(
        (t.kind.clone(), t.dry_run, t.cluster.as_deref()),
        (TriggerKind::Manual, Some(true), None),
        "no cluster named: the one CLUSTER_NAME configures"
    );
    let t = parsed("manual-apply.json");
    assert_eq!(t.dry_run, Some(false));
    let t = parse(&json!({"clusterName": "x", "force": true, "reason": "pre-scale"})).unwrap();
    assert!(t.force && t.summary.contains("pre-scale"));
}

#[test]
fn every_top_level_sample_parses() {
    for name in sample_names("") {
        parse(&sample(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn malformed_samples_are_clear_non_retryable_errors() {
    let names = sample_names("malformed");
    assert!(names.len() >= 6);
    for name in names {
        let err = parse(&sample(&name)).expect_err(&name);
        assert!(matches!(err, Error::InvalidEvent(_)), "{name}: {err:?}");
        assert!(!err.is_retryable(), "{name}");
        assert!(err.to_string().len() > 20, "{name}: message too terse: {err}");
    }
}

#[test]
fn manual_typos_are_refused() {
    let err = parse(&json!({"clusterName": "demo", "dryrun": false})).unwrap_err();
    assert!(err.to_string().contains("dryrun"), "{err}");
    let err = parse(&json!({"clusterName": "not a name"})).unwrap_err();
    assert!(err.to_string().contains("clusterName"), "{err}");
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z.: -]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("aws.cloudwatch"),
            Just("aws.ec2"),
            Just("aws.events"),
            Just("ALARM"),
            Just("Client.InsufficientCidrBlocks")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("source".to_string()),
                    Just("detail-type".to_string()),
                    Just("detail".to_string()),
                    Just("alarmData".to_string()),
                    Just("Records".to_string()),
                    Just("clusterName".to_string()),
                    Just("state".to_string()),
                    Just("value".to_string()),
                    Just("errorCode".to_string()),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces one node (chosen by `pick`) of a real event with `replacement`.
fn mutate(value: &mut Value, pick: &mut usize, replacement: &Value) -> bool {
    if *pick == 0 {
        *value = replacement.clone();
        return true;
    }
    *pick -= 1;
    match value {
        Value::Object(map) => map.values_mut().any(|v| mutate(v, pick, replacement)),
        Value::Array(items) => items.iter_mut().any(|v| mutate(v, pick, replacement)),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_json_never_panics(value in arb_json()) {
        match parse(&value) {
            Ok(t) => prop_assert!(!t.summary.is_empty()),
            Err(e) => {
                let expected = matches!(e, Error::InvalidEvent(_));
                prop_assert!(expected, "unexpected error kind: {}", e);
                prop_assert!(!e.is_retryable());
            }
        }
    }

    #[test]
    fn mutated_real_events_never_panic(which in 0usize..14, pick in 0usize..120, replacement in arb_json()) {
        let names = sample_names("");
        let mut event = sample(&names[which % names.len()]);
        let mut pick = pick;
        mutate(&mut event, &mut pick, &replacement);
        if let Err(e) = parse(&event) {
            prop_assert!(!e.is_retryable());
        }
    }
}
