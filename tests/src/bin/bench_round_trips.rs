//! Sequential round trips of the lab's remediation, AWS and Kubernetes.
//!
//!     cargo run -p headroom-testbed --bin bench_round_trips [-- --runs 5] [--latency-ms 50] [--status-delay-ms 0] [--timeline]
//!
//! Each run starts a fresh harness (moto behind the fault proxy, the fake
//! Kubernetes API server, the lab seeded with fragmented private subnets),
//! gives every AWS call and every Kubernetes request `--latency-ms` of added
//! latency, and times `headroom::handle` for the manual apply event. With a
//! latency far above the emulators' own service time, time ÷ latency is the
//! number of round trips the invocation waits for one after another.
//!
//! Two processes are measured:
//! - **cold**: a new process, whose first invocation is this remediation
//!   (DescribeCluster, a new Kubernetes client);
//! - **warm**: a process that served one invocation before (a dry run), so
//!   the cluster's description and client are reused.
//!
//! What is measured, up to the end of the verification (the last write
//! plus one level of re-reads), apart from what follows it:
//! - **wall, latency as call duration**: each AWS call answered the latency
//!   after it arrived, moto's own time inside it (`LatencyModel::CallDuration`),
//!   as AWS serves concurrent calls side by side; Kubernetes requests wait
//!   the latency before the fake answers them. Time ÷ latency is the round
//!   trips waited for one after another;
//! - **wall, latency added**: the same with the AWS latency elapsing before
//!   moto, which serves calls one at a time, starts on a call
//!   (`LatencyModel::Added`): a concurrent batch adds moto's queueing;
//! - **latency slope**: as many cold runs again with twice the latency,
//!   interleaved; (time at 2× − time at 1×) ÷ latency counts the round trips
//!   without any emulator's service time in it;
//! - **critical chain**: the longest sequence of calls (AWS and Kubernetes)
//!   of the median run in which each was sent after the previous one was
//!   answered; **dependency levels** group the calls that overlap in time.
//!
//! Reported apart: the wait for the Auto Mode controller to list the new
//! subnets in the NodeClass status (a watch; the fake controller reads moto
//! directly, outside the proxy; `--status-delay-ms` makes it write the status
//! that long after the NodeClass changed), and the end-of-invocation reporting
//! (PutMetricData, SNS Publish), both after the verification.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use headroom::RunOptions;
use headroom::run::report::Outcome;
use headroom_testbed::LatencyModel;
use headroom_testbed::harness::Harness;
use headroom_testbed::lab::{self, Exhaustion};

struct Args {
    runs: usize,
    latency: Duration,
    status_delay: Duration,
    timeline: bool,
}

fn args() -> Result<Args, String> {
    let usage = "usage: bench_round_trips [--runs N] [--latency-ms MS] [--status-delay-ms MS] [--timeline]";
    let mut args = Args { runs: 5, latency: Duration::from_millis(50), status_delay: Duration::ZERO, timeline: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number =
            |what: &str| it.next().and_then(|v| v.parse::<u64>().ok()).ok_or(format!("{what} takes a number; {usage}"));
        match arg.as_str() {
            "--runs" => args.runs = number("--runs")?.max(1) as usize,
            "--latency-ms" => args.latency = Duration::from_millis(number("--latency-ms")?.max(1)),
            "--status-delay-ms" => args.status_delay = Duration::from_millis(number("--status-delay-ms")?),
            "--timeline" => args.timeline = true,
            "-h" | "--help" => return Err(usage.into()),
            other => return Err(format!("unknown argument {other}; {usage}")),
        }
    }
    Ok(args)
}

/// One AWS call or Kubernetes request, relative to the start of `handle`.
#[derive(Debug, Clone)]
struct Call {
    action: String,
    kubernetes: bool,
    arrived: Duration,
    finished: Option<Duration>,
}

struct Run {
    /// The whole `handle` call.
    wall: Duration,
    /// From the start of `handle` to the end of the verification.
    verified: Duration,
    /// The wait for the NodeClass status (report timing `nodeclass_status`).
    status_wait: Duration,
    /// Calls up to the end of the verification, reporting left out.
    timeline: Vec<Call>,
    timings_ms: BTreeMap<String, u64>,
}

/// Length of the union of the calls' [arrived, finished] intervals.
fn busy(timeline: &[Call]) -> Duration {
    let mut spans: Vec<(Duration, Duration)> = timeline.iter().filter_map(|c| Some((c.arrived, c.finished?))).collect();
    spans.sort();
    let mut total = Duration::ZERO;
    let mut current: Option<(Duration, Duration)> = None;
    for (start, end) in spans {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = current {
        total += e - s;
    }
    total
}

/// Groups calls into dependency levels: a call starts a new level when it
/// arrives after every call of the current level has been answered.
fn levels(timeline: &[Call]) -> Vec<Vec<&Call>> {
    let mut levels: Vec<Vec<&Call>> = Vec::new();
    let mut level_end = Duration::ZERO;
    for call in timeline {
        let finished = call.finished.unwrap_or(call.arrived);
        match levels.last_mut() {
            Some(level) if call.arrived < level_end => {
                level.push(call);
                level_end = level_end.max(finished);
            }
            _ => {
                levels.push(vec![call]);
                level_end = finished;
            }
        }
    }
    levels
}

/// The longest sequence of calls in which each arrived after the previous
/// one was answered: the round trips waited for one after another.
fn critical_chain(timeline: &[Call]) -> Vec<&Call> {
    let calls: Vec<&Call> = timeline.iter().filter(|c| c.finished.is_some()).collect();
    // best[i]: (length, predecessor) of the longest chain ending in calls[i].
    let mut best: Vec<(usize, Option<usize>)> = Vec::with_capacity(calls.len());
    for (i, call) in calls.iter().enumerate() {
        let from = (0..i).filter(|&j| calls[j].finished.is_some_and(|f| f <= call.arrived)).max_by_key(|&j| best[j].0);
        best.push(match from {
            Some(j) => (best[j].0 + 1, Some(j)),
            None => (1, None),
        });
    }
    let mut at = (0..calls.len()).max_by_key(|&i| best[i].0);
    let mut chain = Vec::new();
    while let Some(i) = at {
        chain.push(calls[i]);
        at = best[i].1;
    }
    chain.reverse();
    chain
}

type BoxError = Box<dyn std::error::Error>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Process {
    Cold,
    Warm,
}

async fn one_run(args: &Args, latency: Duration, model: LatencyModel, process: Process) -> Result<Run, BoxError> {
    let harness = Harness::start(Exhaustion::Fragmented).await?;
    harness.kube.set_status_delay(args.status_delay);
    let ctx = harness.context(harness.config(&[])).await;
    if process == Process::Warm {
        let dry_run = serde_json::json!({ "clusterName": lab::CLUSTER, "dryRun": true });
        headroom::handle(&ctx, headroom::trigger::parse(&dry_run)?, RunOptions::default()).await?;
    }
    let event = serde_json::json!({ "clusterName": lab::CLUSTER, "dryRun": false });
    let trigger = headroom::trigger::parse(&event)?;
    let proxy = harness.aws.proxy();
    proxy.reset_counters();
    harness.kube.clear_requests();
    proxy.set_latency(latency);
    proxy.set_latency_model(model);
    harness.kube.set_latency(Some(latency));
    let started = Instant::now();
    let report = headroom::handle(&ctx, trigger, RunOptions::default()).await?;
    let wall = started.elapsed();
    proxy.set_latency(Duration::ZERO);
    harness.kube.set_latency(None);
    if report.outcome != Outcome::Applied {
        return Err(format!("expected an applied remediation, got {:?}: {}", report.outcome, report.reason).into());
    }
    let timings_ms = report.clusters[0].timings_ms.clone();
    let phase = |name: &str| Duration::from_millis(timings_ms.get(name).copied().unwrap_or(0));
    let verified = phase("read") + phase("plan") + phase("apply") + phase("verify");
    let aws = proxy.timeline_since(started).into_iter().filter(|c| !c.reporting).map(|c| Call {
        action: c.action,
        kubernetes: false,
        arrived: c.arrived,
        finished: c.finished,
    });
    let kubernetes = harness.kube.requests().into_iter().map(|r| Call {
        action: format!(
            "k8s {} {}{}",
            if r.watch { "WATCH" } else { r.method.as_str() },
            r.plural.as_deref().unwrap_or(r.path.as_str()),
            r.name.as_deref().map(|n| format!("/{n}")).unwrap_or_default()
        ),
        kubernetes: true,
        arrived: r.arrived.saturating_duration_since(started),
        finished: Some(r.answered.saturating_duration_since(started)),
    });
    let mut timeline: Vec<Call> = aws.chain(kubernetes).filter(|c| c.arrived < verified).collect();
    timeline.sort_by_key(|c| c.arrived);
    Ok(Run { wall, verified, status_wait: phase("nodeclass_status"), timeline, timings_ms })
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2 }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// The run whose time through verification is the median.
fn typical(runs: &[Run]) -> &Run {
    let mut sorted: Vec<&Run> = runs.iter().collect();
    sorted.sort_by_key(|r| r.verified);
    sorted[sorted.len() / 2]
}

fn chain_counts(run: &Run) -> (usize, usize) {
    let chain = critical_chain(&run.timeline);
    let kubernetes = chain.iter().filter(|c| c.kubernetes).count();
    (chain.len() - kubernetes, kubernetes)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let (mut cold, mut cold_served, mut cold_doubled, mut warm, mut warm_served) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so drift on a shared machine hits all alike.
    for i in 1..=args.runs {
        let run = one_run(&args, args.latency, LatencyModel::CallDuration, Process::Cold).await?;
        eprintln!("run {i} cold, as call duration: through verification {}", ms(run.verified));
        cold_served.push(run);
        let run = one_run(&args, args.latency * 2, LatencyModel::Added, Process::Cold).await?;
        eprintln!("run {i} cold, {} added: through verification {}", ms(args.latency * 2), ms(run.verified));
        cold_doubled.push(run);
        let run = one_run(&args, args.latency, LatencyModel::Added, Process::Cold).await?;
        eprintln!("run {i} cold, added: through verification {}, timings {:?}", ms(run.verified), run.timings_ms);
        cold.push(run);
        let run = one_run(&args, args.latency, LatencyModel::CallDuration, Process::Warm).await?;
        eprintln!("run {i} warm, as call duration: through verification {}", ms(run.verified));
        warm_served.push(run);
        let run = one_run(&args, args.latency, LatencyModel::Added, Process::Warm).await?;
        eprintln!("run {i} warm, added: through verification {}, timings {:?}", ms(run.verified), run.timings_ms);
        warm.push(run);
    }
    let latency = args.latency.as_secs_f64();
    let through = |runs: &[Run]| median(runs.iter().map(|r| r.verified).collect());
    let per = |d: Duration| format!("{} ({:.1})", ms(d), d.as_secs_f64() / latency);
    let (cold_typical, warm_typical) = (typical(&cold_served), typical(&warm_served));
    let (cold_aws, cold_kube) = chain_counts(cold_typical);
    let (warm_aws, warm_kube) = chain_counts(warm_typical);
    let slope = through(&cold_doubled).saturating_sub(through(&cold));

    println!("### Round trips: the lab's remediation, {} per AWS call and per Kubernetes request\n", ms(args.latency));
    println!(
        "Medians of {} runs each; in brackets, ÷ latency. The fake controller writes the NodeClass status {} after it changed.\n",
        args.runs,
        ms(args.status_delay)
    );
    println!("| measure | cold | warm |");
    println!("|---|---|---|");
    println!(
        "| through the last write and one level of verification, latency as call duration | {} | {} |",
        per(through(&cold_served)),
        per(through(&warm_served))
    );
    println!("| the same, latency added before moto answers | {} | {} |", per(through(&cold)), per(through(&warm)));
    println!(
        "| latency slope through verification: {} − {} added | {} | |",
        ms(args.latency * 2),
        ms(args.latency),
        per(slope)
    );
    println!(
        "| critical chain through verification (median run): AWS + Kubernetes | {cold_aws} + {cold_kube} = {} | {warm_aws} + {warm_kube} = {} |",
        cold_aws + cold_kube,
        warm_aws + warm_kube
    );
    println!(
        "| dependency levels through verification (median run) | {} | {} |",
        levels(&cold_typical.timeline).len(),
        levels(&warm_typical.timeline).len()
    );
    println!(
        "| AWS-busy through verification (≥ 1 AWS call in flight), added | {} | {} |",
        per(median(cold.iter().map(|r| busy(&r.timeline)).collect())),
        per(median(warm.iter().map(|r| busy(&r.timeline)).collect()))
    );
    println!(
        "| then: the wait for the NodeClass status (watched) | {} | {} |",
        ms(median(cold_served.iter().map(|r| r.status_wait).collect())),
        ms(median(warm_served.iter().map(|r| r.status_wait).collect()))
    );
    println!(
        "| whole `handle` (status wait and reporting included), as call duration | {} | {} |",
        ms(median(cold_served.iter().map(|r| r.wall).collect())),
        ms(median(warm_served.iter().map(|r| r.wall).collect()))
    );
    for (name, run) in [("cold", cold_typical), ("warm", warm_typical)] {
        println!("\nCalls through verification of the median {name} run, by action ({} in all):\n", run.timeline.len());
        let mut by_action: BTreeMap<&str, usize> = BTreeMap::new();
        for call in &run.timeline {
            *by_action.entry(call.action.as_str()).or_default() += 1;
        }
        println!("| action | calls |");
        println!("|---|---|");
        for (action, count) in &by_action {
            println!("| {action} | {count} |");
        }
        println!("\nDependency levels of the median {name} run (arrival offsets):\n");
        println!("| level | starts | calls |");
        println!("|---|---|---|");
        for (i, level) in levels(&run.timeline).iter().enumerate() {
            let mut actions: BTreeMap<&str, usize> = BTreeMap::new();
            for call in level {
                *actions.entry(call.action.as_str()).or_default() += 1;
            }
            let listed: Vec<String> =
                actions.iter().map(|(a, n)| if *n > 1 { format!("{a} ×{n}") } else { (*a).to_owned() }).collect();
            println!("| {} | {} | {} |", i + 1, ms(level[0].arrived), listed.join(", "));
        }
        let names: Vec<&str> = critical_chain(&run.timeline).iter().map(|c| c.action.as_str()).collect();
        println!("\nCritical chain of the median {name} run: {}", names.join(" → "));
        println!("\nPer-phase timings of the median {name} run (report `timingsMs`): {:?}", run.timings_ms);
        if args.timeline {
            println!("\nTimeline of the median {name} run:\n");
            for call in &run.timeline {
                println!(
                    "{:>6} → {:>6}  {}",
                    ms(call.arrived),
                    call.finished.map(ms).unwrap_or_else(|| "-".into()),
                    call.action
                );
            }
        }
    }
    Ok(())
}
