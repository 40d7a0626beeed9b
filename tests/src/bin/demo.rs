//! The lab's scenario remediated end to end on the embedded default: moto
//! behind the fault proxy as AWS, the fake API server as Kubernetes.
//!
//!     cargo run -p headroom-testbed --bin demo [-- --mode pods] [--dry-run] [--serve]
//!
//! It runs a dry run first (the plan and its preflight), then the
//! remediation, and prints the message the operators' topic received.
//! `--serve` keeps both running after the demo and writes `.local/demo.env`
//! for `cargo lambda watch` / `cargo lambda invoke`.

use std::time::Duration;

use headroom::aws::inventory::Depth;
use headroom::{RunOptions, snapshot};
use headroom_testbed::harness::Harness;
use headroom_testbed::lab::{self, Exhaustion};
use headroom_testbed::view;

struct Args {
    mode: String,
    dry_run: bool,
    serve: bool,
    latency_ms: u64,
}

fn args() -> Result<Args, String> {
    let mut args = Args { mode: "nodes".into(), dry_run: false, serve: false, latency_ms: 0 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--mode" => args.mode = it.next().ok_or("--mode takes nodes or pods")?,
            "--dry-run" => args.dry_run = true,
            "--serve" => args.serve = true,
            "--latency-ms" => {
                args.latency_ms = it.next().and_then(|v| v.parse().ok()).ok_or("--latency-ms takes a number")?
            }
            "-h" | "--help" => {
                return Err("usage: demo [--mode nodes|pods] [--dry-run] [--latency-ms N] [--serve]".into());
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    Ok(args)
}

/// What a role ARN looks like in the lab's account: the preflight asks the
/// (emulated) IAM policy simulator about it.
const DEMO_ROLE: &str = "arn:aws:iam::123456789012:role/headroom-demo-FunctionRole";

fn print_outcome(report: &headroom::Report, calls: usize) {
    println!("=== DECISION: {} — {} ===", report.outcome.word(), report.reason);
    for cluster in &report.clusters {
        if let Some(plan) = &cluster.plan {
            print!("{plan}");
        }
        if let Some(preflight) = &cluster.preflight {
            println!("  preflight ({} checks, nothing changed):", preflight.checks.len());
            for check in &preflight.checks {
                println!("    {check}");
            }
        }
        for change in &cluster.changes {
            let how = if change.already_present { "already there" } else { "done" };
            println!("  ✓ {} {} ({how}): {}", change.step, change.resource, change.detail);
        }
        if let Some(v) = &cluster.verification {
            println!(
                "  verified: {}{}",
                v.ok,
                if v.status_pending_subnets.is_empty() {
                    String::new()
                } else {
                    format!(" (status pending for {:?})", v.status_pending_subnets)
                }
            );
        }
        println!("  timings (ms): {:?}; AWS calls: {calls}", cluster.timings_ms);
    }
}

fn print_notification(subject: &str, message: &serde_json::Value) {
    println!("  Subject: {subject}");
    for line in message["content"]["description"].as_str().unwrap_or_default().lines() {
        println!("  | {line}");
    }
    for step in message["content"]["nextSteps"].as_array().into_iter().flatten() {
        println!("  next: {}", step.as_str().unwrap_or_default());
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    println!("Starting moto (AWS) and a local Kubernetes API, seeding the lab's scenario…");
    let harness = Harness::start(Exhaustion::Fragmented).await?;
    let operators = harness.notifications().await?;
    let dry_run = if args.dry_run { "true" } else { "false" };
    let settings = [
        ("SUBNET_MODE", args.mode.as_str()),
        ("DRY_RUN", dry_run),
        ("NOTIFY_TOPIC_ARN", operators.topic_arn.as_str()),
        ("FUNCTION_ROLE_ARN", DEMO_ROLE),
    ];
    let config = harness.config(&settings);
    let ctx = harness.context(config.clone()).await;

    let before = snapshot::read(&ctx, lab::CLUSTER, Depth::WithCapacity).await?.snapshot;
    println!("\n=== BEFORE ===\n{}", view::render(&before, &config));

    // First as an operator would on a new install: a dry run, which plans
    // and proves the plan's permissions without changing anything.
    let dry = serde_json::json!({ "dryRun": true, "reason": "demo: what would you do?" });
    let report = headroom::handle(&ctx, headroom::trigger::parse(&dry)?, RunOptions::default()).await?;
    println!("=== DRY RUN ===");
    print_outcome(&report, harness.aws.proxy().working_calls().len());
    if let Some(cluster) = report.clusters.first() {
        let preview = headroom::announce::preview(&report, cluster);
        println!("  (a manual dry run is answered, not told; an alarm's would send this message:)");
        print_notification(&preview.subject, &headroom::notify::parse(&preview));
    }

    if !args.dry_run {
        harness.aws.proxy().reset_counters();
        harness.aws.proxy().set_latency(Duration::from_millis(args.latency_ms));
        let event = serde_json::json!({ "dryRun": false, "reason": "demo" });
        let report =
            headroom::handle(&ctx, headroom::trigger::parse(&event)?, RunOptions { publish_metrics: true }).await?;
        harness.aws.proxy().set_latency(Duration::ZERO);
        println!("\n=== APPLY ===");
        print_outcome(&report, harness.aws.proxy().working_calls().len());
        println!("\n=== WHAT THE OPERATORS RECEIVED (SNS → SQS) ===");
        for received in operators.drain().await? {
            print_notification(&received.subject, &received.message);
            println!("  attributes: {:?}", received.attributes);
        }
    }

    let after = snapshot::read(&ctx, lab::CLUSTER, Depth::WithCapacity).await?.snapshot;
    println!("\n=== AFTER ===\n{}", view::render(&after, &config));

    if args.serve {
        let dir = headroom_testbed::moto::workspace_root().join(".local");
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = dir.join("kubeconfig");
        harness.kube.write_kubeconfig(&kubeconfig)?;
        let mut env: Vec<String> =
            harness.aws.env_vars(lab::REGION).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("KUBECONFIG={}", kubeconfig.display()));
        env.push(format!("CLUSTER_NAME={}", lab::CLUSTER));
        env.push(format!("SUBNET_MODE={}", args.mode));
        std::fs::write(dir.join("demo.env"), env.join("\n") + "\n")?;
        println!("Serving: environment in {}. Ctrl-C to stop.", dir.join("demo.env").display());
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}
