//! A scheduled check of many opted-in clusters against one, with latency.
//!
//!     cargo run -p headroom-testbed --bin bench_clusters [-- --runs 3] [--clusters 20]
//!         [--latency-ms 200,50] [--concurrency 4,8,10,20]
//!
//! One account: `--clusters` EKS Auto Mode clusters tagged
//! `headroom.io/enabled=true` in one VPC (roomy subnets, so every decision is
//! a no-op after the full read), each with its own fake Kubernetes API
//! server; forecasting on (`EXPAND_AHEAD_HOURS=24`, so one GetMetricData of
//! history per cluster). The baseline is the same account with one such
//! cluster. Every AWS call and every Kubernetes request gets the latency.
//! `--model call-duration` (the default) answers each AWS call the latency
//! after it arrived, moto's own time inside it, as AWS serves concurrent
//! calls side by side; `--model added` makes the latency elapse before moto,
//! which serves calls one at a time, so its service time adds up over a
//! fleet's few hundred calls.
//!
//! For each latency and `MAX_CONCURRENT_CLUSTERS`, as many runs as asked,
//! each in a fresh account. A first process runs the scheduled check once,
//! unmeasured, so the daily preflight is done and remembered, as it is for
//! 287 of a day's 288 checks. Then a new process (a new `Context`) is timed:
//! **cold** is its first scheduled check (ListClusters, DescribeCluster and a
//! Kubernetes client per cluster), **warm** its second (descriptions and
//! clients reused). The figure is the wall time of `headroom::handle`,
//! reporting included; medians are printed with the ratio to one cluster.

use std::time::{Duration, Instant};

use headroom::aws::AwsClients;
use headroom::cluster::ClusterAccess;
use headroom::run::report::Outcome;
use headroom::{Context, RunOptions};
use headroom_testbed::harness::Harness;
use headroom_testbed::lab::{self, Exhaustion};
use headroom_testbed::{FakeKube, LatencyModel, ec2_status_resolver};

const OPT_IN: (&str, &str) = ("headroom.io/enabled", "true");

type BoxError = Box<dyn std::error::Error>;

struct Args {
    runs: usize,
    clusters: usize,
    latencies: Vec<Duration>,
    concurrency: Vec<usize>,
    model: LatencyModel,
}

fn parse_args() -> Result<Args, String> {
    let usage = "usage: bench_clusters [--runs N] [--clusters N] [--latency-ms A,B] [--concurrency A,B,...] [--model call-duration|added]";
    let mut args = Args {
        runs: 3,
        clusters: 20,
        latencies: vec![Duration::from_millis(200), Duration::from_millis(50)],
        concurrency: vec![4, 8, 10, 20],
        model: LatencyModel::CallDuration,
    };
    let mut it = std::env::args().skip(1);
    let list = |value: Option<String>, flag: &str| -> Result<Vec<u64>, String> {
        let value = value.ok_or(format!("{flag} needs a value; {usage}"))?;
        value.split(',').map(|v| v.trim().parse().map_err(|_| format!("{flag}: {v:?} is not a number"))).collect()
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--runs" => args.runs = list(it.next(), "--runs")?[0].max(1) as usize,
            "--clusters" => args.clusters = list(it.next(), "--clusters")?[0].clamp(1, 64) as usize,
            "--latency-ms" => {
                args.latencies = list(it.next(), "--latency-ms")?.into_iter().map(Duration::from_millis).collect()
            }
            "--concurrency" => {
                args.concurrency =
                    list(it.next(), "--concurrency")?.into_iter().map(|c| c.clamp(1, 64) as usize).collect()
            }
            "--model" => {
                args.model = match it.next().as_deref() {
                    Some("call-duration") => LatencyModel::CallDuration,
                    Some("added") => LatencyModel::Added,
                    _ => return Err(usage.into()),
                }
            }
            _ => return Err(usage.into()),
        }
    }
    Ok(args)
}

/// An account with `count` opted-in clusters, each with its own API server.
struct Account {
    harness: Harness,
    apis: Vec<FakeKube>,
    kubeconfigs: tempfile::TempDir,
    names: Vec<String>,
}

async fn account(count: usize) -> Result<Account, BoxError> {
    let harness = Harness::start(Exhaustion::None).await?;
    let direct = harness.aws.direct_sdk_config(lab::REGION).await;
    let eks = aws_sdk_eks::Client::new(&direct);
    let names: Vec<String> = (1..=count).map(|i| format!("team-{i:02}")).collect();
    let tags: &[(&str, &str)] = &[OPT_IN];
    let clusters: Vec<(&str, &[(&str, &str)])> = names.iter().map(|n| (n.as_str(), tags)).collect();
    let vpc = lab::seed_second_vpc(&harness.direct_ec2, &eks, &[OPT_IN], &clusters).await?;
    let kubeconfigs = tempfile::tempdir()?;
    let mut apis = Vec::new();
    for name in &names {
        let api = FakeKube::start().await?;
        api.set_status_resolver(Some(ec2_status_resolver(harness.direct_ec2.clone())));
        lab::seed_cluster_api(&api.handle(), &harness.aws.proxy().handle(), name, &vpc.subnets)?;
        std::fs::write(kubeconfigs.path().join(name), api.kubeconfig().replace("headroom-fake", name))?;
        apis.push(api);
    }
    Ok(Account { harness, apis, kubeconfigs, names })
}

impl Account {
    /// A new process: its own clients, descriptions and Kubernetes clients.
    async fn process(&self, concurrency: usize) -> Result<Context, BoxError> {
        let concurrency = concurrency.to_string();
        let config = self.harness.config(&[
            ("CLUSTER_NAME", ""),
            ("CLUSTER_OPT_IN_TAG", "headroom.io/enabled=true"),
            ("VPC_OPT_IN_TAG", "headroom.io/enabled=true"),
            ("MAX_CONCURRENT_CLUSTERS", concurrency.as_str()),
            ("EXPAND_AHEAD_HOURS", "24"),
        ]);
        let sdk = self.harness.aws.sdk_config_with_retry(lab::REGION, headroom::aws::clients::retry_config()).await;
        let paths = std::env::join_paths(self.names.iter().map(|n| self.kubeconfigs.path().join(n)))?;
        let clusters = ClusterAccess::with_kubeconfig(&sdk, Some(paths.as_os_str()));
        Ok(Context::new(config, AwsClients::new(sdk), clusters))
    }

    fn set_latency(&self, latency: Duration, model: LatencyModel) {
        let proxy = self.harness.aws.proxy();
        proxy.set_latency(latency);
        proxy.set_latency_model(model);
        for api in &self.apis {
            api.set_latency(Some(latency));
        }
    }

    async fn scheduled(&self, ctx: &Context) -> Result<Duration, BoxError> {
        let event = serde_json::from_str(include_str!("../../../samplecli-events/scheduled.json"))?;
        let trigger = headroom::trigger::parse(&event)?;
        let started = Instant::now();
        let report =
            headroom::handle(ctx, trigger, RunOptions { publish_metrics: true, ..RunOptions::default() }).await?;
        let wall = started.elapsed();
        let done = report.clusters.iter().filter(|c| c.outcome == Outcome::NoOp && c.forecast.is_some()).count();
        if done != self.names.len() {
            return Err(
                format!("expected {} forecast no-ops, got {}: {}", self.names.len(), done, report.reason).into()
            );
        }
        Ok(wall)
    }
}

/// (cold, warm, AWS calls of the cold check) of one run.
async fn one_run(
    clusters: usize,
    concurrency: usize,
    latency: Duration,
    model: LatencyModel,
) -> Result<(Duration, Duration, usize), BoxError> {
    let account = account(clusters).await?;
    account.scheduled(&account.process(concurrency).await?).await?;
    account.set_latency(latency, model);
    let ctx = account.process(concurrency).await?;
    account.harness.aws.proxy().reset_counters();
    let cold = account.scheduled(&ctx).await?;
    let calls = account.harness.aws.proxy().calls().values().sum();
    let warm = account.scheduled(&ctx).await?;
    account.set_latency(Duration::ZERO, model);
    Ok((cold, warm, calls))
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2 }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    for &latency in &args.latencies {
        let model = if args.model == LatencyModel::Added { "added before moto" } else { "as call duration" };
        println!(
            "\n### {} clusters, {} ms per AWS call ({model}) and Kubernetes request\n",
            args.clusters,
            latency.as_millis()
        );
        println!("Medians of {} runs. Ratio: to one cluster, same process kind.\n", args.runs);
        println!("| clusters | MAX_CONCURRENT_CLUSTERS | cold | × one | warm | × one | AWS calls (cold) |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        let mut baseline = None;
        let mut configurations = vec![(1, 1)];
        configurations.extend(args.concurrency.iter().map(|&c| (args.clusters, c)));
        for (clusters, concurrency) in configurations {
            let (mut colds, mut warms, mut calls) = (Vec::new(), Vec::new(), 0);
            for run in 0..args.runs {
                let (cold, warm, n) = one_run(clusters, concurrency, latency, args.model).await?;
                eprintln!(
                    "{clusters} clusters, concurrency {concurrency}, run {run}: cold {}, warm {}",
                    secs(cold),
                    secs(warm)
                );
                colds.push(cold);
                warms.push(warm);
                calls = n;
            }
            let (cold, warm) = (median(colds), median(warms));
            let (one_cold, one_warm) = *baseline.get_or_insert((cold, warm));
            let ratio = |a: Duration, b: Duration| format!("{:.2}", a.as_secs_f64() / b.as_secs_f64());
            println!(
                "| {clusters} | {concurrency} | {} | {} | {} | {} | {calls} |",
                secs(cold),
                ratio(cold, one_cold),
                secs(warm),
                ratio(warm, one_warm),
            );
        }
    }
    Ok(())
}
