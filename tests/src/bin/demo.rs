//! The lab's scenario remediated end to end on the embedded default: moto
//! behind the fault proxy as AWS, the fake API server as Kubernetes.
//!
//!     cargo run -p headroom-testbed --bin demo [-- --mode pods] [--dry-run] [--serve]
//!
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    println!("Starting moto (AWS) and a local Kubernetes API, seeding the lab's scenario…");
    let harness = Harness::start(Exhaustion::Fragmented).await?;
    let dry_run = if args.dry_run { "true" } else { "false" };
    let config = harness.config(&[("SUBNET_MODE", args.mode.as_str()), ("DRY_RUN", dry_run)]);
    let ctx = harness.context(config.clone()).await;

    let before = snapshot::read(&ctx, lab::CLUSTER, None, Depth::WithCapacity).await?.snapshot;
    println!("\n=== BEFORE ===\n{}", view::render(&before, &config));

    harness.aws.proxy().reset_counters();
    harness.aws.proxy().set_latency(Duration::from_millis(args.latency_ms));
    let event = serde_json::json!({ "clusterName": lab::CLUSTER, "dryRun": args.dry_run, "reason": "demo" });
    let trigger = headroom::trigger::parse(&event)?;
    let report = headroom::handle(&ctx, trigger, RunOptions { publish_metrics: true }).await?;
    harness.aws.proxy().set_latency(Duration::ZERO);
    let calls: usize = harness.aws.proxy().calls().values().sum();

    println!("=== DECISION: {:?} — {} ===", report.outcome, report.reason);
    for cluster in &report.clusters {
        if let Some(plan) = &cluster.plan {
            print!("{plan}");
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

    let after = snapshot::read(&ctx, lab::CLUSTER, None, Depth::WithCapacity).await?.snapshot;
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
