//! The lab's scenario remediated end to end on the embedded default: moto
//! behind the fault proxy as AWS, the fake API server as Kubernetes.
//!
//!     cargo run -p headroom-testbed --bin demo [-- --mode pods] [--dry-run] [--serve]
//!
//! It drives the `headroom` CLI as an operator would: `status` (before),
//! `plan` (the functions' dry run: the plan and its preflight), `apply
//! --yes --announce`, the message the operators' topic received, and
//! `status` (after).
//! `--serve` keeps both running after the demo and writes `.local/demo.env`
//! for `cargo lambda watch` / `cargo lambda invoke`.

use std::time::Duration;

use headroom_testbed::harness::Harness;
use headroom_testbed::lab::{self, Exhaustion};

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

/// One publish as its subscribers get it: the mail, and the size of each
/// protocol's body.
fn print_notification(published: &headroom_testbed::Published) {
    println!("  Subject: {}", published.subject.as_deref().unwrap_or_default());
    for line in published.body("email").unwrap_or_default().lines() {
        println!("  | {line}");
    }
    let sizes: Vec<String> = headroom::run::notify::PROTOCOLS
        .iter()
        .map(|p| format!("{p} {} B", published.body(p).map_or(0, |b| b.len())))
        .collect();
    println!("  bodies: {}; the whole message {} B", sizes.join(", "), published.message.len());
}

fn cli_path() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("HEADROOM_CLI") {
        return path.into();
    }
    let me = std::env::current_exe().expect("the demo's own path");
    me.with_file_name("headroom")
}

/// Runs `headroom args…` as an operator would, against the lab; its output
/// goes straight to the terminal.
async fn headroom(
    harness: &Harness,
    settings: &[(&str, &str)],
    args: &[&str],
) -> Result<i32, Box<dyn std::error::Error>> {
    println!("\n$ headroom {}", args.join(" "));
    let mut command = tokio::process::Command::new(cli_path());
    command.args(args).env("KUBECONFIG", harness.kubeconfig_path()).env_remove("AWS_PROFILE");
    for (key, value) in harness.aws.env_vars(lab::REGION) {
        command.env(key, value);
    }
    for (key, value) in settings {
        command.env(key, value);
    }
    let status = command
        .status()
        .await
        .map_err(|e| format!("running {}: {e} (scripts/demo.sh builds it)", cli_path().display()))?;
    Ok(status.code().unwrap_or(-1))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    println!("Starting moto (AWS) and a local Kubernetes API, seeding the lab's scenario…");
    let harness = Harness::start(Exhaustion::Fragmented).await?;
    let operators = harness.notifications().await?;
    let latency = args.latency_ms.to_string();
    // The functions' settings, as the CLI reads them from the environment.
    let settings = [
        ("SUBNET_MODE", args.mode.as_str()),
        ("NOTIFY_TOPIC_ARN", operators.topic_arn.as_str()),
        ("FUNCTION_ROLE_ARN", DEMO_ROLE),
        ("NODECLASS_READY_TIMEOUT_SECONDS", "10"),
    ];

    println!("\n=== BEFORE: the lab's node subnets are fragmented, no /28 prefix is left ===");
    headroom(&harness, &settings, &["status", lab::CLUSTER]).await?;

    // First as an operator would on a new install: a plan, which is the
    // functions' dry run (the plan, and its permissions proven).
    println!("\n=== WHAT WOULD HEADROOM DO? (a dry run: nothing changes) ===");
    headroom(&harness, &settings, &["plan", lab::CLUSTER]).await?;

    if !args.dry_run {
        harness.aws.proxy().set_latency(Duration::from_millis(args.latency_ms));
        println!("\n=== APPLY (AWS answers after {latency} ms per call) ===");
        let code = headroom(&harness, &settings, &["apply", lab::CLUSTER, "--yes", "--announce"]).await?;
        harness.aws.proxy().set_latency(Duration::ZERO);
        println!("(exit status {code}; {} AWS calls changed something)", harness.aws.proxy().mutating_calls().len());
        println!("\n=== WHAT THE OPERATORS RECEIVED (one SNS publish, a body per protocol: the e-mail) ===");
        for published in harness.aws.proxy().published() {
            print_notification(&published);
        }
        for received in operators.drain().await? {
            let decision = &received.message["outcome"];
            println!("  the SQS queue got the report ({decision}), attributes {:?}", received.attributes);
        }
        println!("\n=== AFTER ===");
        headroom(&harness, &settings, &["status", lab::CLUSTER]).await?;
    }

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
