//! Sequential AWS round trips of the lab's remediation.
//!
//!     cargo run -p headroom-testbed --bin bench_round_trips [-- --runs 5] [--latency-ms 50] [--timeline]
//!
//! Each run starts a fresh harness (moto behind the fault proxy, the fake
//! Kubernetes API server, the lab seeded with fragmented private subnets),
//! gives every AWS call `--latency-ms` of added latency at the proxy, and
//! times `headroom::handle` for the manual apply event. With a latency far
//! above moto's own service time, wall time ÷ latency is the number of AWS
//! round trips the invocation waits for one after another.
//!
//! Measures:
//! - **wall, latency added**: the whole `handle` call, with the latency
//!   elapsing before each call reaches moto (`LatencyModel::Added`): a call
//!   takes the latency plus moto's own time, and moto, which serves calls
//!   one at a time, adds ~3-6 ms per call of a concurrent batch;
//! - **wall, latency as call duration**: the same, with each call answered
//!   the latency after it arrived, moto's own time inside it
//!   (`LatencyModel::CallDuration`), as AWS serves concurrent calls side by
//!   side: wall ÷ latency is then the round trips waited for one after
//!   another, plus only what moto's serial service time spills over;
//! - the wall time also holds the
//!   Kubernetes calls (fake API server on loopback, no added latency) and
//!   the wait for the NodeClass status (the status resolver reads moto
//!   directly, outside the proxy, so without latency);
//! - **AWS-busy**: the time during which at least one AWS call was in flight
//!   at the proxy (the union of the calls' intervals);
//! - **latency slope**: as many runs again with twice the latency,
//!   interleaved with the others; (median wall at 2× − median wall at 1×) ÷
//!   latency is the number of round trips waited for one after another,
//!   without moto's own service time, the SDK's or the proxy's in it (a
//!   run without added latency would not do as the reference: the NodeClass
//!   status wait then sometimes sleeps 200 ms, which with latency it never does);
//! - **critical chain**: the longest sequence of calls of the median run
//!   in which each call arrived after the previous one was answered;
//! - **dependency levels**: the calls of the median run grouped so that a
//!   level starts when a call arrives after every call of the level before
//!   was answered (calls that overlap in time share a level).
//!
//! Prints a Markdown summary: medians, calls by action, and the call
//! timeline of the median run with its dependency levels.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use headroom::RunOptions;
use headroom::report::Outcome;
use headroom_testbed::harness::Harness;
use headroom_testbed::lab::{self, Exhaustion};
use headroom_testbed::{CallTiming, LatencyModel};

struct Args {
    runs: usize,
    latency: Duration,
    timeline: bool,
}

fn args() -> Result<Args, String> {
    let usage = "usage: bench_round_trips [--runs N] [--latency-ms MS] [--timeline]";
    let mut args = Args { runs: 5, latency: Duration::from_millis(50), timeline: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number =
            |what: &str| it.next().and_then(|v| v.parse::<u64>().ok()).ok_or(format!("{what} takes a number; {usage}"));
        match arg.as_str() {
            "--runs" => args.runs = number("--runs")?.max(1) as usize,
            "--latency-ms" => args.latency = Duration::from_millis(number("--latency-ms")?.max(1)),
            "--timeline" => args.timeline = true,
            "-h" | "--help" => return Err(usage.into()),
            other => return Err(format!("unknown argument {other}; {usage}")),
        }
    }
    Ok(args)
}

struct Run {
    wall: Duration,
    aws_busy: Duration,
    calls: BTreeMap<String, usize>,
    timeline: Vec<CallTiming>,
    timings_ms: BTreeMap<&'static str, u64>,
}

/// Length of the union of the calls' [arrived, finished] intervals.
fn busy(timeline: &[CallTiming]) -> Duration {
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
fn levels(timeline: &[CallTiming]) -> Vec<Vec<&CallTiming>> {
    let mut levels: Vec<Vec<&CallTiming>> = Vec::new();
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
fn critical_chain(timeline: &[CallTiming]) -> Vec<&CallTiming> {
    let calls: Vec<&CallTiming> = timeline.iter().filter(|c| c.finished.is_some()).collect();
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

async fn one_run(latency: Duration, model: LatencyModel) -> Result<Run, Box<dyn std::error::Error>> {
    let harness = Harness::start(Exhaustion::Fragmented).await?;
    let ctx = harness.context(harness.config(&[])).await;
    let event = serde_json::json!({ "clusterName": lab::CLUSTER, "dryRun": false });
    let trigger = headroom::trigger::parse(&event)?;
    let proxy = harness.aws.proxy();
    proxy.reset_counters();
    proxy.set_latency(latency);
    proxy.set_latency_model(model);
    let started = Instant::now();
    let report = headroom::handle(&ctx, trigger, RunOptions::default()).await?;
    let wall = started.elapsed();
    proxy.set_latency(Duration::ZERO);
    if report.outcome != Outcome::Applied {
        return Err(format!("expected an applied remediation, got {:?}: {}", report.outcome, report.reason).into());
    }
    let timeline = proxy.timeline();
    Ok(Run {
        wall,
        aws_busy: busy(&timeline),
        calls: proxy.calls(),
        timeline,
        timings_ms: report.clusters[0].timings_ms.clone(),
    })
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2 }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let mut runs = Vec::new();
    let mut doubled = Vec::new();
    let mut served = Vec::new();
    // Interleaved, so drift on a shared machine hits all alike.
    for i in 1..=args.runs {
        let inside = one_run(args.latency, LatencyModel::CallDuration).await?;
        eprintln!("run {i} answered {} after arrival: wall {}", ms(args.latency), ms(inside.wall));
        served.push(inside.wall);
        let slow = one_run(args.latency * 2, LatencyModel::Added).await?;
        eprintln!("run {i} with {}: wall {}", ms(args.latency * 2), ms(slow.wall));
        doubled.push(slow.wall);
        let run = one_run(args.latency, LatencyModel::Added).await?;
        eprintln!(
            "run {i} with {}: wall {}, AWS-busy {}, {} AWS calls, timings {:?}",
            ms(args.latency),
            ms(run.wall),
            ms(run.aws_busy),
            run.calls.values().sum::<usize>(),
            run.timings_ms
        );
        runs.push(run);
    }
    let latency = args.latency.as_secs_f64();
    let wall = median(runs.iter().map(|r| r.wall).collect());
    let busy = median(runs.iter().map(|r| r.aws_busy).collect());
    let slow = median(doubled);
    let served = median(served);
    // The run whose wall time is the median, for the call listing.
    let mut by_wall: Vec<&Run> = runs.iter().collect();
    by_wall.sort_by_key(|r| r.wall);
    let typical = by_wall[by_wall.len() / 2];
    let levels = levels(&typical.timeline);
    let chain = critical_chain(&typical.timeline);

    println!("### Round trips: the lab's remediation with {} per AWS call\n", ms(args.latency));
    println!("| measure | median of {} runs | ÷ latency |", runs.len());
    println!("|---|---|---|");
    println!(
        "| `handle` wall time, latency added before moto answers | {} | {:.1} |",
        ms(wall),
        wall.as_secs_f64() / latency
    );
    println!("| AWS-busy time (≥ 1 AWS call in flight) | {} | {:.1} |", ms(busy), busy.as_secs_f64() / latency);
    println!("| `handle` wall time with {} per call | {} | |", ms(args.latency * 2), ms(slow));
    println!(
        "| latency slope: wall at {} − wall at {} | {} | {:.1} |",
        ms(args.latency * 2),
        ms(args.latency),
        ms(slow.saturating_sub(wall)),
        slow.saturating_sub(wall).as_secs_f64() / latency
    );
    println!(
        "| `handle` wall time, each call answered {} after it arrives, moto's time inside | {} | {:.1} |",
        ms(args.latency),
        ms(served),
        served.as_secs_f64() / latency
    );
    println!("| critical chain of AWS calls (median run) | | {} |", chain.len());
    println!("| dependency levels of AWS calls (median run) | | {} |", levels.len());
    println!();
    println!("AWS calls of the median run, by action ({} in all):\n", typical.calls.values().sum::<usize>());
    println!("| action | calls |");
    println!("|---|---|");
    for (action, count) in &typical.calls {
        println!("| {action} | {count} |");
    }
    println!();
    println!("Dependency levels of the median run (arrival offsets):\n");
    println!("| level | starts | calls |");
    println!("|---|---|---|");
    for (i, level) in levels.iter().enumerate() {
        let mut actions: BTreeMap<&str, usize> = BTreeMap::new();
        for call in level {
            *actions.entry(call.action.as_str()).or_default() += 1;
        }
        let listed: Vec<String> =
            actions.iter().map(|(a, n)| if *n > 1 { format!("{a} ×{n}") } else { (*a).to_owned() }).collect();
        println!("| {} | {} | {} |", i + 1, ms(level[0].arrived), listed.join(", "));
    }
    println!();
    let names: Vec<&str> = chain.iter().map(|c| c.action.as_str()).collect();
    println!("Critical chain of the median run: {}\n", names.join(" → "));
    println!("Per-phase timings of the median run (report `timingsMs`): {:?}", typical.timings_ms);
    if args.timeline {
        println!("\nTimeline of the median run:\n");
        for call in &typical.timeline {
            println!(
                "{:>6} → {:>6}  {}",
                ms(call.arrived),
                call.finished.map(ms).unwrap_or_else(|| "-".into()),
                call.action
            );
        }
    }
    Ok(())
}
