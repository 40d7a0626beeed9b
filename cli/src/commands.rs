//! The four commands. Each reads or acts through the shared crate exactly
//! as the functions do: `status` through [`snapshot::read`] and
//! [`ClusterStatus`], `plan` and `apply` through [`headroom::handle`] with
//! a manual event, `explain` by rendering a report.

use std::ffi::OsString;
use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use headroom::aws::AwsClients;
use headroom::aws::inventory::Depth;
use headroom::cluster::ClusterAccess;
use headroom::planner;
use headroom::run::report::Outcome;
use headroom::run::{forecast, snapshot};
use headroom::status::ClusterStatus;
use headroom::{Context, Report, RunOptions};
use serde_json::{Value, json};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::args::{ApplyArgs, Command, ExplainArgs, Global, Output, Parsed, PlanArgs};
use crate::progress::Progress;
use crate::render;
use crate::style::Style;
use crate::{EXIT_OK, EXIT_REFUSED_OR_FAILED, EXIT_USAGE};

/// Runs the parsed command; returns the exit status.
pub async fn run(parsed: Parsed) -> u8 {
    let global = &parsed.cli.global;
    init_logging(global);
    let style = Style::for_stdout(global.color);
    let cluster = match &parsed.cli.command {
        Command::Status(args) => Some(args.cluster.as_str()),
        Command::Plan(args) => Some(args.cluster.cluster.as_str()),
        Command::Apply(args) => Some(args.plan.cluster.cluster.as_str()),
        Command::Explain(_) => None,
    };
    if let Command::Explain(args) = &parsed.cli.command {
        return explain(args, global.output, style);
    }
    let config = match parsed.config(cluster) {
        Ok(config) => config,
        Err(error) => return usage_error(&error.to_string()),
    };
    let ctx = context(global, config, !matches!(parsed.cli.command, Command::Status(_))).await;
    match &parsed.cli.command {
        Command::Status(args) => status(&ctx, &args.cluster, global.output, style).await,
        Command::Plan(args) => plan(&ctx, args, global.output, style).await,
        Command::Apply(args) => apply(&ctx, args, global.output, style).await,
        Command::Explain(_) => unreachable!("handled above"),
    }
}

fn usage_error(message: &str) -> u8 {
    eprintln!("error: {message}");
    EXIT_USAGE
}

fn failure(message: &str) -> u8 {
    eprintln!("error: {message}");
    EXIT_REFUSED_OR_FAILED
}

/// Logs on stderr only when asked (`-v`, `RUST_LOG`): a person reads the
/// rendered result. The progress layer always sees the plan's steps.
fn init_logging(global: &Global) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::filter_fn;
    let wanted = match global.verbose {
        0 => std::env::var("RUST_LOG").unwrap_or_else(|_| "off".into()),
        1 => "info".into(),
        _ => "debug,aws_smithy_runtime=info,hyper_util=info".into(),
    };
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(EnvFilter::try_new(&wanted).unwrap_or_else(|_| EnvFilter::new("off")));
    let stderr_style =
        Style::choose(global.color, std::io::stderr().is_terminal(), std::env::var("NO_COLOR").ok().as_deref());
    let sink: crate::progress::Sink = Arc::new(Mutex::new(std::io::stderr()));
    let progress = Progress::new(stderr_style, sink)
        .with_filter(filter_fn(|meta| meta.target().starts_with("headroom") && *meta.level() <= tracing::Level::INFO));
    let _ = tracing_subscriber::registry().with(logs).with(progress).try_init();
}

/// The kubeconfig to use: `--kubeconfig`, else `KUBECONFIG`, else
/// `~/.kube/config` if it exists; `None` (EKS token) with `--eks-token` or
/// when there is none.
fn kubeconfig(global: &Global) -> Option<OsString> {
    if global.eks_token {
        return None;
    }
    if let Some(paths) = &global.kubeconfig {
        return Some(paths.into());
    }
    if let Some(paths) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
        return Some(paths);
    }
    let home = std::env::var_os("HOME")?;
    let default = PathBuf::from(home).join(".kube").join("config");
    default.is_file().then(|| default.into_os_string())
}

/// The role ARN of an identity as IAM's policy simulator takes it: a role
/// session's role (`assumed-role/<role>/<session>` → `role/<role>`; a role
/// path is not in the session ARN, so such a role is reported as not
/// verified), an IAM user as is; `None` for anything else (federated users, root).
pub fn principal_to_simulate(caller_arn: &str) -> Option<String> {
    let mut parts = caller_arn.splitn(6, ':');
    let (arn, partition, service, _region, account, resource) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if arn != "arn" {
        return None;
    }
    match (service, resource.split('/').collect::<Vec<_>>().as_slice()) {
        ("sts", ["assumed-role", role, _session]) => Some(format!("arn:{partition}:iam::{account}:role/{role}")),
        ("iam", ["user", ..]) => Some(caller_arn.to_owned()),
        _ => None,
    }
}

/// Without `--function-role-arn`, a plan's preflight asks IAM about the
/// person running it: what `apply` from this terminal would be allowed.
async fn with_caller_as_principal(mut config: headroom::Config, aws: &AwsClients) -> headroom::Config {
    if config.function_role_arn.is_some() {
        return config;
    }
    match aws_sdk_sts::Client::new(&aws.sdk_config).get_caller_identity().send().await {
        Ok(identity) => config.function_role_arn = identity.arn().and_then(principal_to_simulate),
        Err(error) => {
            tracing::warn!(error = %error, "GetCallerIdentity failed; the IAM-simulated checks will say not verified");
        }
    }
    config
}

async fn context(global: &Global, config: headroom::Config, simulate_caller: bool) -> Context {
    let aws = AwsClients::load(global.profile.as_deref(), global.region.as_deref()).await;
    let config = if simulate_caller { with_caller_as_principal(config, &aws).await } else { config };
    let clusters = ClusterAccess::with_kubeconfig(&aws.sdk_config, kubeconfig(global).as_deref())
        .with_kube_context(global.context.clone());
    Context::new(config, aws, clusters)
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("error: encoding the output: {error}"),
    }
}

async fn status(ctx: &Context, cluster: &str, output: Output, style: Style) -> u8 {
    let reading = match snapshot::read(ctx, cluster, Depth::WithCapacity).await {
        Ok(reading) => reading,
        Err(error) => return failure(&error.to_string()),
    };
    if let Some(error) = &reading.cluster_api_error {
        eprintln!("warning: {error}");
    }
    let mut status = ClusterStatus::from_snapshot(&reading.snapshot, &ctx.config);
    // Each AZ's trend, as the scheduled check forecasts it; without the
    // history the counts still show and the warning says why.
    let forecast =
        forecast::forecast(ctx, &status.cluster, &planner::az_capacity(&reading.snapshot, &ctx.config)).await;
    if let Some(error) = &forecast.history_unreadable {
        eprintln!("warning: no trend: {error}");
    }
    status.forecast = Some(forecast);
    match output {
        Output::Json => print_json(&status),
        Output::Human => print!("{}", render::status(&status, style)),
    }
    EXIT_OK
}

/// The manual event the functions document, as the CLI sends it.
fn manual_event(args: &PlanArgs, dry_run: bool) -> Value {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    json!({
        "clusterName": args.cluster.cluster,
        "dryRun": dry_run,
        "force": args.force,
        "reason": format!("headroom CLI, run by {user}"),
    })
}

async fn run_event(ctx: &Context, event: &Value, options: RunOptions) -> Result<Report, u8> {
    let trigger = headroom::trigger::parse(event).map_err(|e| usage_error(&e.to_string()))?;
    headroom::handle(ctx, trigger, options).await.map_err(|e| failure(&e.to_string()))
}

/// 1 when any cluster, or the run itself, was refused or failed.
pub fn exit_code(report: &Report) -> u8 {
    report.clusters.iter().map(|c| c.outcome).chain([report.outcome]).map(render::exit_code).max().unwrap_or(EXIT_OK)
}

fn show(report: &Report, output: Output, style: Style) {
    match output {
        Output::Json => print_json(report),
        Output::Human => print!("{}", render::report(report, style)),
    }
}

async fn plan(ctx: &Context, args: &PlanArgs, output: Output, style: Style) -> u8 {
    let quiet = RunOptions { quiet: true, ..RunOptions::default() };
    match run_event(ctx, &manual_event(args, true), quiet).await {
        Ok(report) => {
            show(&report, output, style);
            exit_code(&report)
        }
        Err(code) => code,
    }
}

async fn apply(ctx: &Context, args: &ApplyArgs, output: Output, style: Style) -> u8 {
    let quiet = RunOptions { quiet: true, ..RunOptions::default() };
    let planned = match run_event(ctx, &manual_event(&args.plan, true), quiet).await {
        Ok(report) => report,
        Err(code) => return code,
    };
    let fingerprint = planned.clusters.first().and_then(|c| c.plan.as_ref()).map(|p| p.fingerprint());
    let Some(fingerprint) = fingerprint.filter(|_| planned.outcome == Outcome::Planned) else {
        // Nothing to apply: a no-op, a refusal or a failure, shown as is.
        show(&planned, output, style);
        return exit_code(&planned);
    };
    if output == Output::Human {
        print!("{}", render::report(&planned, style));
    }
    if !args.yes {
        match confirm(&args.plan.cluster.cluster) {
            Ok(true) => {}
            Ok(false) => {
                eprintln!("Nothing was changed.");
                return EXIT_OK;
            }
            Err(message) => return usage_error(&message),
        }
    }
    if output == Output::Human {
        eprintln!("Applying:");
    }
    let options = RunOptions { quiet: !args.announce, expected_plan: Some(fingerprint), ..RunOptions::default() };
    match run_event(ctx, &manual_event(&args.plan, false), options).await {
        Ok(report) => {
            match output {
                Output::Json => print_json(&report),
                // The plan was shown before the confirmation: show what became of it.
                Output::Human => print!("{}", render::report(&without_plans(&report), style)),
            }
            exit_code(&report)
        }
        Err(code) => code,
    }
}

fn without_plans(report: &Report) -> Report {
    let mut shown = report.clone();
    for cluster in &mut shown.clusters {
        cluster.plan = None;
    }
    shown
}

/// Asks on stderr, reads stdin. Without a terminal there is no one to ask.
fn confirm(cluster: &str) -> Result<bool, String> {
    if !std::io::stdin().is_terminal() {
        return Err("stdin is not a terminal, so the plan cannot be confirmed; review it and pass --yes".into());
    }
    eprint!("Apply this plan to cluster {cluster}? Only `yes` continues: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| format!("reading the answer: {e}"))?;
    Ok(answer.trim() == "yes")
}

fn explain(args: &ExplainArgs, output: Output, style: Style) -> u8 {
    let (text, source) = match args.report.as_deref().filter(|p| p.as_os_str() != "-") {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => (text, path.display().to_string()),
            Err(error) => return usage_error(&format!("cannot read {}: {error}", path.display())),
        },
        None => {
            let mut text = String::new();
            if let Err(error) = std::io::stdin().read_to_string(&mut text) {
                return usage_error(&format!("cannot read stdin: {error}"));
            }
            (text, "stdin".to_string())
        }
    };
    let value: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(error) => return usage_error(&format!("{source} is not JSON: {error}")),
    };
    if value.get("trigger").is_none() && value["outcome"] == "rejected" {
        match output {
            Output::Json => print_json(&value),
            Output::Human => print!("{}", render::rejected(&value, style)),
        }
        return EXIT_REFUSED_OR_FAILED;
    }
    match serde_json::from_value::<Report>(value) {
        Ok(report) => {
            show(&report, output, style);
            exit_code(&report)
        }
        Err(error) => usage_error(&format!(
            "{source} is not a headroom report ({error}); pass the JSON a function answered, or `--output json` of plan or apply"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::principal_to_simulate;

    #[test]
    fn the_preflight_simulates_the_callers_role_or_user() {
        assert_eq!(
            principal_to_simulate("arn:aws:sts::123456789012:assumed-role/PlatformAdmin/alice@example.com").as_deref(),
            Some("arn:aws:iam::123456789012:role/PlatformAdmin")
        );
        assert_eq!(
            principal_to_simulate("arn:aws-cn:sts::123456789012:assumed-role/Ops/s").as_deref(),
            Some("arn:aws-cn:iam::123456789012:role/Ops")
        );
        assert_eq!(
            principal_to_simulate("arn:aws:iam::123456789012:user/ops/bob").as_deref(),
            Some("arn:aws:iam::123456789012:user/ops/bob")
        );
        assert_eq!(principal_to_simulate("arn:aws:sts::123456789012:federated-user/bob"), None);
        assert_eq!(principal_to_simulate("arn:aws:iam::123456789012:root"), None);
        assert_eq!(principal_to_simulate("not an arn"), None);
    }
}
