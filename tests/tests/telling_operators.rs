//! What the cluster's owners learn, against moto (SNS to SQS fan-out,
//! CloudWatch) and the fake API server: one message per change, refusal or
//! failure, with a body each kind of subscriber can read (the SQS queue gets
//! the report; the chat channel's and the mailbox's bodies are read from the
//! publish the fault proxy let through, since moto delivers to neither), the
//! `Remediations` metric, the preflight of dry runs, and the rules that would
//! refuse pods in a new block.

use headroom::run::report::Outcome;
use headroom::{Report, RunOptions};
use headroom_testbed::Fault;
use headroom_testbed::Published;
use headroom_testbed::fake_kube::NODECLASSES;
use headroom_testbed::harness::{Harness, Notifications, Received};
use headroom_testbed::lab::{self, Exhaustion};
use serde_json::{Value, json};

const ROLE: &str = "arn:aws:iam::123456789012:role/headroom-FunctionRole-TEST";

async fn run_with(harness: &Harness, overrides: &[(&str, &str)], event: Value, options: RunOptions) -> Report {
    let ctx = harness.context(harness.config(overrides)).await;
    let trigger = headroom::trigger::parse(&event).expect("valid event");
    headroom::handle(&ctx, trigger, options).await.expect("handled")
}

fn sample(name: &str) -> Value {
    let path = headroom_testbed::moto::workspace_root().join("samplecli-events").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn describe(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}

async fn setup(exhaustion: Exhaustion) -> (Harness, Notifications) {
    let harness = Harness::start(exhaustion).await.unwrap();
    let notifications = harness.notifications().await.unwrap();
    (harness, notifications)
}

fn told(notifications: &[Received]) -> Vec<String> {
    notifications.iter().map(|n| n.subject.clone()).collect()
}

/// The last message published, as each protocol's subscribers get it:
/// (default, email, https, sqs, lambda), after checking SNS's rules.
fn last_published(harness: &Harness) -> (Published, [String; 5]) {
    let published = harness.aws.proxy().published();
    let last = published.last().expect("a publish").clone();
    assert_eq!(last.message_structure.as_deref(), Some("json"), "{last:?}");
    assert!(last.counted_bytes() <= headroom::run::notify::MAX_PUBLISH_BYTES);
    let body = |p: &str| last.body(p).unwrap_or_else(|| panic!("no {p} body in {last:?}"));
    let bodies = headroom::run::notify::PROTOCOLS.map(body);
    (last, bodies)
}

/// The chat card: Amazon Q Developer's custom-notification keys and no others.
fn chat_card(https: &str) -> Value {
    let card: Value = serde_json::from_str(https).expect("the https body is JSON");
    let keys = |v: &Value| v.as_object().expect("an object").keys().cloned().collect::<Vec<_>>();
    assert!(
        keys(&card).iter().all(|k| ["version", "source", "id", "content", "metadata"].contains(&k.as_str())),
        "{card:#}"
    );
    assert!(
        keys(&card["content"])
            .iter()
            .all(|k| ["textType", "title", "description", "nextSteps", "keywords"].contains(&k.as_str())),
        "{card:#}"
    );
    assert_eq!((&card["version"], &card["source"]), (&json!("1.0"), &json!("custom")));
    card
}

/// The mail: plain text, the same for `email` and `default`, lines a mail
/// client shows whole.
fn mail(bodies: &[String; 5]) -> &str {
    let [default, email, ..] = bodies;
    assert_eq!(default, email);
    assert!(!email.trim_start().starts_with('{'), "not plain text: {email}");
    assert!(email.lines().all(|l| l.chars().count() <= 78), "{email}");
    email
}

fn sizes(what: &str, published: &Published, bodies: &[String; 5]) {
    let [default, email, https, sqs, lambda] = bodies.each_ref().map(String::len);
    eprintln!(
        "{what}: default {default} B, email {email} B, https {https} B, sqs {sqs} B, lambda {lambda} B; \
         message {} B, with attributes {} B",
        published.message.len(),
        published.counted_bytes()
    );
}

/// Reads `Remediations` back from moto's CloudWatch for one decision.
async fn remediations(harness: &Harness, decision: &str) -> f64 {
    // moto answers CloudWatch's RPCv2-CBOR 404: read it through a proxy of
    // our own, which translates, without counting in the harness's proxy.
    let translator = headroom_testbed::FaultProxy::start(harness.aws.moto_endpoint()).await.unwrap();
    let config = headroom_testbed::sdk_config(translator.endpoint(), lab::REGION).await;
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&config);
    let metric = aws_sdk_cloudwatch::types::Metric::builder()
        .namespace("Headroom")
        .metric_name("Remediations")
        .dimensions(aws_sdk_cloudwatch::types::Dimension::builder().name("ClusterName").value(lab::CLUSTER).build())
        .dimensions(aws_sdk_cloudwatch::types::Dimension::builder().name("Decision").value(decision).build())
        .build();
    let now = std::time::SystemTime::now();
    let out = cloudwatch
        .get_metric_data()
        .metric_data_queries(
            aws_sdk_cloudwatch::types::MetricDataQuery::builder()
                .id("m")
                .metric_stat(
                    aws_sdk_cloudwatch::types::MetricStat::builder().metric(metric).period(3600).stat("Sum").build(),
                )
                .build(),
        )
        .start_time((now - std::time::Duration::from_secs(3600)).into())
        .end_time((now + std::time::Duration::from_secs(600)).into())
        .send()
        .await
        .unwrap();
    out.metric_data_results().iter().flat_map(|r| r.values().to_vec()).sum()
}

#[tokio::test]
async fn an_applied_remediation_is_told_once_with_the_new_cidr_and_counted() {
    let (harness, queue) = setup(Exhaustion::Fragmented).await;
    let topic = queue.topic_arn.clone();
    let report =
        run_with(&harness, &[("NOTIFY_TOPIC_ARN", &topic)], json!({"dryRun": false}), RunOptions::default()).await;
    assert_eq!(report.outcome, Outcome::Applied, "{}", describe(&report));

    let received = queue.drain().await.unwrap();
    assert_eq!(received.len(), 1, "exactly one message: {:?}", told(&received));
    let message = &received[0];
    assert_eq!(message.subject, "headroom applied on demo-cluster: 100.64.0.0/16, 3 subnets");
    assert!(message.subject.len() < 100 && message.subject.chars().all(|c| (' '..='~').contains(&c)));
    assert_eq!(message.attributes.get("decision").map(String::as_str), Some("applied"));
    assert_eq!(message.attributes.get("cluster").map(String::as_str), Some(lab::CLUSTER));
    // The queue gets the report, as the function answered it.
    let reported: Report = serde_json::from_value(message.message.clone()).expect("the sqs body is a report");
    assert_eq!(reported.clusters.len(), 1);
    assert_eq!(reported.clusters[0].outcome, Outcome::Applied);
    assert_eq!(reported.clusters[0].changes, report.clusters[0].changes);
    assert!(reported.clusters[0].plan.is_some());

    let (published, bodies) = last_published(&harness);
    assert_eq!(harness.aws.proxy().published().len(), 1, "one publish per decision");
    sizes("applied", &published, &bodies);
    assert_eq!(published.subject.as_deref(), Some(message.subject.as_str()));
    assert_eq!(bodies[3], bodies[4], "sqs and lambda get the same report");
    assert_eq!(serde_json::from_str::<Value>(&bodies[3]).unwrap(), message.message);
    // The chat channel: Amazon Q Developer's custom notification, nothing else.
    let card = chat_card(&bodies[2]);
    assert_eq!(card["content"]["title"], message.subject.as_str());
    let description = card["content"]["description"].as_str().unwrap();
    for wanted in [
        "*Decision:* applied",
        "*CIDR:* 100.64.0.0/16",
        "in us-west-2a",
        "*NodeClass:* create headroom",
        "*NodePool:* create headroom",
        "*Verified:* yes",
    ] {
        assert!(description.contains(wanted), "{wanted:?} missing from:\n{description}");
    }
    assert_eq!(card["metadata"]["additionalContext"]["cidr"], "100.64.0.0/16");
    // The mailbox: what was decided, where, what changed, the next step.
    let text = mail(&bodies);
    for wanted in [
        "headroom applied on demo-cluster: 100.64.0.0/16, 3 subnets",
        "Decision: applied",
        "Cluster: demo-cluster (VPC vpc-",
        "Why: below the thresholds in",
        "CIDR: 100.64.0.0/16",
        "NodePool: create headroom",
        "Next steps:",
    ] {
        assert!(text.contains(wanted), "{wanted:?} missing from:\n{text}");
    }
    assert_eq!(report.published.notifications.len(), 1);
    assert!(report.published.notifications[0].message_id.is_some());

    // The outcome metric, in the emulator's CloudWatch.
    assert_eq!(remediations(&harness, "applied").await, 1.0);

    // The next run has nothing to do: counted, not told.
    let again =
        run_with(&harness, &[("NOTIFY_TOPIC_ARN", &topic)], json!({"dryRun": false}), RunOptions::default()).await;
    assert_eq!(again.outcome, Outcome::NoOp);
    assert!(queue.drain().await.unwrap().is_empty(), "never a message for a no-op");
    assert_eq!(remediations(&harness, "no-op").await, 1.0);
}

#[tokio::test]
async fn an_ok_alarm_tells_nothing_and_a_refusal_tells_refused() {
    let (harness, queue) = setup(Exhaustion::Fragmented).await;
    let topic = queue.topic_arn.clone();
    let ok = run_with(&harness, &[("NOTIFY_TOPIC_ARN", &topic)], sample("alarm-direct-ok.json"), RunOptions::default())
        .await;
    assert_eq!(ok.outcome, Outcome::NoOp);
    assert!(queue.drain().await.unwrap().is_empty());

    lab::fill_vpc_cidr_quota(&harness.direct_ec2, &harness.lab.vpc_id).await.unwrap();
    let refused =
        run_with(&harness, &[("NOTIFY_TOPIC_ARN", &topic)], json!({"dryRun": false}), RunOptions::default()).await;
    assert_eq!(refused.outcome, Outcome::Refused, "{}", describe(&refused));
    let received = queue.drain().await.unwrap();
    assert_eq!(told(&received), ["headroom refused on demo-cluster: cidr-quota"]);
    assert_eq!(received[0].attributes["decision"], "refused");
    assert_eq!(received[0].message["clusters"][0]["refusal"], "cidr-quota");
    let (published, bodies) = last_published(&harness);
    sizes("refused", &published, &bodies);
    let next_steps = chat_card(&bodies[2])["content"]["nextSteps"].to_string();
    assert!(next_steps.contains("docs/operations.md#cidr-quota"), "{next_steps}");
    let text = mail(&bodies);
    for wanted in ["Decision: refused", "Refused: cidr-quota", "Why: ", "docs/operations.md#cidr-quota"] {
        assert!(text.contains(wanted), "{wanted:?} missing from:\n{text}");
    }
    assert_eq!(remediations(&harness, "refused").await, 1.0);
}

#[tokio::test]
async fn a_broken_install_is_loud() {
    let (harness, queue) = setup(Exhaustion::Fragmented).await;
    let topic = queue.topic_arn.clone();
    // An event for a cluster this deployment does not manage: failed, not rejected.
    let report = run_with(
        &harness,
        &[("NOTIFY_TOPIC_ARN", &topic)],
        json!({"clusterName": "other", "dryRun": true}),
        RunOptions::default(),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Failed, "{}", describe(&report));
    assert!(report.reason.contains("CLUSTER_NAME"), "{}", report.reason);
    // RBAC forbids the NodeClass write: failed, with the fix.
    harness.kube.fail_next_writes(1, 403);
    let forbidden =
        run_with(&harness, &[("NOTIFY_TOPIC_ARN", &topic)], json!({"dryRun": false}), RunOptions::default()).await;
    assert_eq!(forbidden.outcome, Outcome::Failed, "{}", describe(&forbidden));
    assert!(forbidden.reason.contains("RBAC"), "{}", forbidden.reason);
    // The stack's VpcId is not the cluster's: failed before any change.
    harness.aws.proxy().reset_counters();
    let wrong = run_with(
        &harness,
        &[("NOTIFY_TOPIC_ARN", &topic), ("VPC_ID", "vpc-0123456789abcdef0")],
        json!({"dryRun": false}),
        RunOptions::default(),
    )
    .await;
    assert_eq!(wrong.outcome, Outcome::Failed);
    assert!(wrong.reason.contains("leave VPC_ID empty"), "{}", wrong.reason);
    assert!(harness.aws.proxy().mutating_calls().is_empty());

    let subjects = told(&queue.drain().await.unwrap());
    assert_eq!(subjects.len(), 3, "{subjects:?}");
    let (published, bodies) = last_published(&harness);
    sizes("failed", &published, &bodies);
    let text = mail(&bodies);
    assert!(text.contains("Decision: failed") && text.contains("Error: "), "{text}");
    assert!(chat_card(&bodies[2])["content"]["nextSteps"].to_string().contains("docs/operations.md#"));
    assert!(subjects.iter().all(|s| s.starts_with("headroom failed on ")), "{subjects:?}");
    assert_eq!(remediations(&harness, "failed").await, 3.0);
}

#[tokio::test]
async fn a_scheduled_dry_run_tells_a_plan_once_and_proves_its_permissions() {
    let (harness, queue) = setup(Exhaustion::Fragmented).await;
    let topic = queue.topic_arn.clone();
    let settings = [("NOTIFY_TOPIC_ARN", topic.as_str()), ("DRY_RUN", "true"), ("FUNCTION_ROLE_ARN", ROLE)];
    let scheduled = RunOptions { publish_metrics: true, ..RunOptions::default() };
    let first = run_with(&harness, &settings, sample("scheduled.json"), scheduled).await;
    assert_eq!(first.outcome, Outcome::Planned, "{}", describe(&first));
    let preflight = first.clusters[0].preflight.as_ref().expect("a dry run that plans proves its permissions");
    let checked: Vec<String> = preflight.checks.iter().map(|c| format!("{} {:?}", c.action, c.verdict)).collect();
    for wanted in [
        "ec2:AssociateVpcCidrBlock Allowed",
        "ec2:CreateSubnet Allowed",
        "ec2:AssociateRouteTable Allowed",
        "create nodeclasses Allowed",
        "create nodepools Allowed",
    ] {
        assert!(checked.iter().any(|c| c == wanted), "{wanted} not in {checked:?}");
    }
    assert_eq!(
        told(&queue.drain().await.unwrap()),
        ["headroom planned on demo-cluster: 100.64.0.0/16, 3 subnets, dry run"]
    );
    // Nothing changed: the dry-run calls never reached moto.
    assert!(harness.aws.proxy().mutating_calls().is_empty(), "{:?}", harness.aws.proxy().mutating_calls());
    assert!(harness.kube.list_objects(NODECLASSES).len() == 1, "only `default`");

    // The same plan five minutes later: not told again.
    let second = run_with(&harness, &settings, sample("scheduled.json"), scheduled).await;
    assert_eq!(second.outcome, Outcome::Planned);
    assert!(queue.drain().await.unwrap().is_empty(), "the plan has not changed");

    // A different plan (the pool moved by a route) is told.
    harness
        .direct_ec2
        .create_route()
        .route_table_id(&harness.lab.private_route_tables[0])
        .destination_cidr_block("100.64.0.0/16")
        .gateway_id(
            harness
                .direct_ec2
                .create_internet_gateway()
                .send()
                .await
                .unwrap()
                .internet_gateway()
                .unwrap()
                .internet_gateway_id()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let third = run_with(&harness, &settings, sample("scheduled.json"), scheduled).await;
    assert_eq!(
        told(&queue.drain().await.unwrap()),
        ["headroom planned on demo-cluster: 100.65.0.0/16, 3 subnets, dry run"],
        "{}",
        describe(&third)
    );
}

#[tokio::test]
async fn a_denied_permission_fails_the_dry_run_before_it_is_needed() {
    let (harness, queue) = setup(Exhaustion::Fragmented).await;
    let topic = queue.topic_arn.clone();
    // The role may not create subnets (a wrong VpcId in the IAM policy, say), nor associate the CIDR.
    harness.aws.proxy().fail_nth("CreateSubnet", 1, Fault::Reject { status: 403, code: "UnauthorizedOperation" });
    harness.aws.proxy().deny_in_simulation("ec2:AssociateVpcCidrBlock");
    let report = run_with(
        &harness,
        &[("NOTIFY_TOPIC_ARN", &topic), ("FUNCTION_ROLE_ARN", ROLE)],
        json!({"dryRun": true}),
        RunOptions::default(),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Failed, "{}", describe(&report));
    let preflight = report.clusters[0].preflight.as_ref().unwrap();
    let denied: Vec<&str> = preflight.denied().map(|c| c.action.as_str()).collect();
    assert_eq!(denied, ["ec2:AssociateVpcCidrBlock", "ec2:CreateSubnet"], "{:#?}", preflight.checks);
    assert!(
        report.reason.contains("ec2:CreateSubnet") && report.reason.contains("UnauthorizedOperation"),
        "{}",
        report.reason
    );
    assert!(harness.aws.proxy().mutating_calls().is_empty());
    assert_eq!(told(&queue.drain().await.unwrap()), ["headroom failed on demo-cluster: PermissionDenied"]);

    // RBAC that forbids creating NodeClasses is found the same way.
    harness.kube.fail_next_writes(1, 403);
    let rbac = run_with(&harness, &[("FUNCTION_ROLE_ARN", ROLE)], json!({"dryRun": true}), RunOptions::default()).await;
    let denied: Vec<&str> = rbac.clusters[0].preflight.as_ref().unwrap().denied().map(|c| c.action.as_str()).collect();
    // (The simulated IAM denial is still in force.)
    assert_eq!(denied, ["ec2:AssociateVpcCidrBlock", "create nodeclasses"], "{}", describe(&rbac));
}

#[tokio::test]
async fn the_daily_preflight_runs_when_nothing_needs_doing_and_once_a_day() {
    let harness = Harness::start(Exhaustion::None).await.unwrap();
    let settings = [("FUNCTION_ROLE_ARN", ROLE)];
    let scheduled = RunOptions { publish_metrics: true, ..RunOptions::default() };
    let first = run_with(&harness, &settings, sample("scheduled.json"), scheduled).await;
    assert_eq!(first.outcome, Outcome::NoOp, "{}", describe(&first));
    let preflight = first.clusters[0].preflight.as_ref().expect("the daily preflight ran");
    assert_eq!(serde_json::to_value(preflight.occasion).unwrap(), "daily");
    assert!(preflight.checks.iter().any(|c| c.action == "ec2:CreateSubnet"), "{:#?}", preflight.checks);
    assert!(harness.aws.proxy().mutating_calls().is_empty());
    let again = run_with(&harness, &settings, sample("scheduled.json"), scheduled).await;
    assert!(again.clusters[0].preflight.is_none(), "proven less than a day ago: {}", describe(&again));
}

#[tokio::test]
async fn rules_that_admit_only_the_vpcs_cidr_are_warned_about() {
    let (harness, queue) = setup(Exhaustion::Fragmented).await;
    let topic = queue.topic_arn.clone();
    let ec2 = &harness.direct_ec2;
    let group = ec2
        .create_security_group()
        .vpc_id(&harness.lab.vpc_id)
        .group_name("orders-db")
        .description("the orders database")
        .send()
        .await
        .unwrap();
    let group_id = group.group_id().unwrap();
    ec2.authorize_security_group_ingress()
        .group_id(group_id)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(5432)
                .to_port(5432)
                .ip_ranges(aws_sdk_ec2::types::IpRange::builder().cidr_ip("192.168.0.0/16").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let report = run_with(
        &harness,
        &[("NOTIFY_TOPIC_ARN", &topic)],
        json!({"dryRun": true, "reason": "check"}),
        RunOptions::default(),
    )
    .await;
    let plan = report.clusters[0].plan.as_ref().expect("a plan");
    let warned: Vec<String> = plan.reachability.iter().map(ToString::to_string).collect();
    let wanted = format!("{group_id} (orders-db) allows tcp 5432 from 192.168.0.0/16 but not from 100.64.0.0/16");
    assert!(warned.iter().any(|w| w.starts_with(&wanted)), "{warned:#?}");
    // A warning, not a refusal: the plan stands, and it is in the plan's text.
    assert_eq!(report.outcome, Outcome::Planned);
    assert!(plan.to_string().contains("warning: "));
    // A manual dry run is answered, not told; an alarm's would carry the warning.
    assert!(queue.drain().await.unwrap().is_empty());
    let alarm = run_with(
        &harness,
        &[("NOTIFY_TOPIC_ARN", &topic), ("DRY_RUN", "true")],
        sample("alarm-direct-alarm.json"),
        RunOptions::default(),
    )
    .await;
    assert_eq!(alarm.outcome, Outcome::Planned, "{}", describe(&alarm));
    let received = queue.drain().await.unwrap();
    assert_eq!(received.len(), 1);
    let (_, bodies) = last_published(&harness);
    assert!(chat_card(&bodies[2])["content"]["description"].as_str().unwrap().contains("orders-db"));
    assert!(mail(&bodies).contains("orders-db"));
}
