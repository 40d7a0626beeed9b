//! Expanding ahead of a forecast, against moto and the fake API server:
//! the scheduled check reads each AZ's seeded `FreeIpAddresses` and
//! `FreePrefixes` history (one GetMetricData), and a falling series expands
//! before any threshold is crossed, while flat, rising, short or missing
//! history changes nothing. The lab is `PrefixReserved`: 1,023 free IPs and
//! 32 free /28s per AZ, above both default thresholds (512 and 16).

use std::time::Duration;

use headroom::run::report::Outcome;
use headroom::{Report, RunOptions};
use headroom_testbed::harness::Harness;
use headroom_testbed::history::{self, SeededSeries, linear};
use headroom_testbed::lab::{self, Exhaustion};
use serde_json::Value;

fn scheduled_event() -> Value {
    let path = headroom_testbed::moto::workspace_root().join("samplecli-events/scheduled.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn scheduled(harness: &Harness, overrides: &[(&str, &str)]) -> Report {
    let ctx = harness.context(harness.config(overrides)).await;
    let trigger = headroom::trigger::parse(&scheduled_event()).expect("valid event");
    headroom::handle(&ctx, trigger, RunOptions { publish_metrics: true, ..RunOptions::default() })
        .await
        .expect("handled")
}

fn describe(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}

/// Seeds, for every lab AZ, `points` 5-minute points of free IPs ending five
/// minutes ago (`ips_per_hour` for us-west-2b, flat at 1,023 elsewhere) and
/// flat free /28s at 32.
async fn seed(harness: &Harness, ips_per_hour: f64, points: usize) {
    let config = harness.aws.sdk_config(lab::REGION).await;
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&config);
    let mut series = Vec::new();
    for az in lab::AZS {
        let rate = if az == "us-west-2b" { ips_per_hour } else { 0.0 };
        // Ends where the lab is now (1,023), so the seeded trend meets the live count.
        let start = 1023.0 - rate * (points as f64) / 12.0;
        for (metric, values) in
            [("FreeIpAddresses", linear(start, rate, points)), ("FreePrefixes", linear(32.0, 0.0, points))]
        {
            series.push(SeededSeries {
                cluster: lab::CLUSTER,
                availability_zone: az,
                metric,
                values,
                end_ago: Duration::from_secs(300),
            });
        }
    }
    history::seed(&cloudwatch, "Headroom", &series).await.expect("history seeded");
    harness.aws.proxy().reset_counters();
}

fn get_metric_data_calls(harness: &Harness) -> usize {
    harness.aws.proxy().calls().get("GetMetricData").copied().unwrap_or(0)
}

/// The AZ dimension of every `name` metric in moto (read through a
/// translating proxy of our own, so the harness's counts stay as they are).
async fn published_azs(harness: &Harness, name: &str) -> Vec<String> {
    let translator = headroom_testbed::FaultProxy::start(harness.aws.moto_endpoint()).await.unwrap();
    let config = headroom_testbed::sdk_config(translator.endpoint(), lab::REGION).await;
    let out = aws_sdk_cloudwatch::Client::new(&config)
        .list_metrics()
        .namespace("Headroom")
        .metric_name(name)
        .send()
        .await
        .expect("ListMetrics");
    let mut azs: Vec<String> = out
        .metrics()
        .iter()
        .map(|m| {
            let az = m.dimensions().iter().find(|d| d.name() == Some("AvailabilityZone"));
            az.and_then(|d| d.value()).unwrap_or("(cluster)").to_string()
        })
        .collect();
    azs.sort();
    azs
}

#[tokio::test]
async fn a_falling_series_expands_ahead_of_the_thresholds() {
    let harness = Harness::start(Exhaustion::PrefixReserved).await.unwrap();
    // us-west-2b loses 100 free IPs an hour: (1,023 - 512) / 100 = 5.1 h to MIN_FREE_IPS_PER_AZ.
    seed(&harness, -100.0, 73).await;
    let report = scheduled(&harness, &[]).await;
    let cluster = &report.clusters[0];
    assert_eq!(report.outcome, Outcome::Applied, "{}", describe(&report));
    assert_eq!(
        cluster.reason,
        "forecast: us-west-2b free IPs fall 100.0/h, 5.1 h to the threshold of 512 (now 1023)",
        "{}",
        describe(&report)
    );
    let plan = cluster.plan.as_ref().expect("a plan");
    let due = plan.forecast.as_ref().expect("the plan carries its forecast");
    assert_eq!(due.availability_zone, "us-west-2b");
    assert!(plan.starved_azs.is_empty(), "no threshold was crossed");
    assert_eq!(harness.managed_subnets().await.len(), 3, "one subnet per AZ, as for a crossed threshold");

    // The report's forecast section: every AZ, both measures, the window.
    let forecast = cluster.forecast.as_ref().expect("a forecast section");
    assert_eq!((forecast.window_hours, forecast.expand_ahead_hours), (6, 24));
    assert_eq!(forecast.azs.len(), 3);
    for az in &forecast.azs {
        let (ips, prefixes) = (&az.free_ips, &az.free_prefixes);
        assert_eq!((ips.now, ips.threshold, prefixes.now, prefixes.threshold), (1023, 512, 32, 16), "{az:?}");
        assert_eq!(prefixes.hours_to_threshold, None, "flat /28s have no forecast: {az:?}");
        if az.availability_zone == "us-west-2b" {
            assert!((ips.rate_per_hour.unwrap() + 100.0).abs() < 1e-6, "{az:?}");
            assert!((ips.hours_to_threshold.unwrap() - 5.11).abs() < 1e-9, "{az:?}");
        } else {
            assert_eq!(ips.hours_to_threshold, None, "{az:?}");
            assert!(ips.no_forecast.as_ref().unwrap().explain().contains("flat"), "{az:?}");
        }
    }
    // One GetMetricData for the whole cluster's history (the plan's memory
    // read is the other: a scheduled run recalls what it told).
    assert_eq!(get_metric_data_calls(&harness), 2, "{:?}", harness.aws.proxy().calls());
    // HoursToExhaustion only where a forecast exists, and the cluster's minimum.
    assert_eq!(published_azs(&harness, "HoursToExhaustion").await, ["us-west-2b"]);
    assert_eq!(published_azs(&harness, "MinAzHoursToExhaustion").await, ["(cluster)"]);

    // Expanded: the next check finds room and does nothing, whatever the trend says.
    let again = scheduled(&harness, &[]).await;
    assert_eq!(again.outcome, Outcome::NoOp, "{}", describe(&again));
    assert_eq!(harness.managed_subnets().await.len(), 3);
}

#[tokio::test]
async fn flat_rising_short_or_missing_history_changes_nothing() {
    let mut harness = Harness::start(Exhaustion::PrefixReserved).await.unwrap();
    for (what, rate, points) in
        [("missing", 0.0, 0), ("flat", 0.0, 73), ("rising", 50.0, 73), ("half an hour", -500.0, 6)]
    {
        if points > 0 {
            seed(&harness, rate, points).await;
        }
        let report = scheduled(&harness, &[]).await;
        assert_eq!(report.outcome, Outcome::NoOp, "{what}: {}", describe(&report));
        let forecast = report.clusters[0].forecast.as_ref().expect("a forecast section");
        assert_eq!(forecast.due, None, "{what}");
        let b = forecast.azs.iter().find(|az| az.availability_zone == "us-west-2b").unwrap();
        let why = b.free_ips.no_forecast.as_ref().map(|n| n.explain()).unwrap_or_default();
        let expected = match what {
            "missing" => "no forecast: 0 points",
            "flat" => "no forecast: flat",
            "rising" => "no forecast: rising 50.0/h",
            _ => "no forecast: 6 points over 25 min, needs 12 over an hour",
        };
        assert!(why.starts_with(expected), "{what}: {why}");
        assert!(harness.managed_subnets().await.is_empty(), "{what}");
        harness.reseed(Exhaustion::PrefixReserved).await.unwrap();
    }

    // EXPAND_AHEAD_HOURS=0: no forecast, and no history read at all.
    seed(&harness, -100.0, 73).await;
    let off = scheduled(&harness, &[("EXPAND_AHEAD_HOURS", "0")]).await;
    assert_eq!(off.outcome, Outcome::NoOp, "{}", describe(&off));
    assert!(off.clusters[0].forecast.is_none());
    assert_eq!(get_metric_data_calls(&harness), 1, "only the memory read: {:?}", harness.aws.proxy().calls());
}

#[tokio::test]
async fn a_scheduled_dry_run_plans_ahead_and_tells_it_once() {
    let harness = Harness::start(Exhaustion::PrefixReserved).await.unwrap();
    let queue = harness.notifications().await.unwrap();
    let settings = [("NOTIFY_TOPIC_ARN", queue.topic_arn.as_str()), ("DRY_RUN", "true")];
    seed(&harness, -100.0, 73).await;
    let first = scheduled(&harness, &settings).await;
    assert_eq!(first.outcome, Outcome::Planned, "{}", describe(&first));
    assert!(first.clusters[0].reason.starts_with("forecast: us-west-2b free IPs fall 100.0/h"), "{}", describe(&first));
    assert!(harness.managed_subnets().await.is_empty(), "a dry run changes nothing");
    let told = queue.drain().await.unwrap();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].subject, "headroom planned on demo-cluster: 100.64.0.0/16, 3 subnets, dry run");
    let message = &told[0].message;
    assert!(
        message.to_string().contains("forecast: us-west-2b free IPs fall 100.0/h"),
        "the message carries the forecast: {message:#}"
    );

    // Five minutes later the forecast still holds, with a few minutes less
    // left: the same plan, not told again.
    let second = scheduled(&harness, &settings).await;
    assert_eq!(second.outcome, Outcome::Planned);
    assert!(queue.drain().await.unwrap().is_empty(), "told once");
}
