//! Cold init of Lambda function binaries: spawn → first
//! `GET /2018-06-01/runtime/invocation/next` on a local Runtime API, the
//! moment a `provided.al2023` function is ready for its first event.
//!
//!     bench_cold_start [--runs 10] [--warmup 1] [--json FILE] [--env KEY=VALUE]... NAME=BINARY...
//!
//! Runs are interleaved (one of each binary per round) so drift on a busy
//! machine hits every binary alike; the first `--warmup` rounds are dropped.
//! The first binary is the baseline the others are compared with. Prints a
//! Markdown table: median / min / max init, ratio of medians to the baseline,
//! peak RSS at the first poll, binary size and the size of a deployment zip
//! (the binary stored as `bootstrap`, deflated, as `cargo lambda` packs it).
//!
//! The environment is what Lambda gives a function (`AWS_LAMBDA_*`, static
//! credentials, Region) plus `CLUSTER_NAME`; the AWS endpoint is a closed
//! local port, and no event is ever sent, so nothing leaves the machine.
//! `scripts/bench-cold-start.sh` builds the release binaries and runs this.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use headroom_testbed::runtime_api::{FunctionCommand, RuntimeApi};

struct Args {
    runs: usize,
    warmup: usize,
    json: Option<PathBuf>,
    /// Extra environment for every process (e.g. `SSL_CERT_FILE`).
    env: Vec<(String, String)>,
    binaries: Vec<(String, PathBuf)>,
}

fn args() -> Result<Args, String> {
    let usage = "usage: bench_cold_start [--runs N] [--warmup N] [--json FILE] [--env KEY=VALUE]... NAME=BINARY...";
    let mut args = Args { runs: 10, warmup: 1, json: None, env: Vec::new(), binaries: Vec::new() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |what: &str| {
            it.next().and_then(|v| v.parse::<usize>().ok()).ok_or(format!("{what} takes a number; {usage}"))
        };
        match arg.as_str() {
            "--runs" => args.runs = number("--runs")?.max(1),
            "--warmup" => args.warmup = number("--warmup")?,
            "--json" => args.json = Some(it.next().ok_or(format!("--json takes a file; {usage}"))?.into()),
            "--env" => {
                let pair = it.next().ok_or(format!("--env takes KEY=VALUE; {usage}"))?;
                let (key, value) = pair.split_once('=').ok_or(format!("--env {pair}: expected KEY=VALUE"))?;
                args.env.push((key.to_owned(), value.to_owned()));
            }
            "-h" | "--help" => return Err(usage.into()),
            spec => {
                let (name, path) = spec.split_once('=').ok_or(format!("{spec}: expected NAME=BINARY; {usage}"))?;
                let path = PathBuf::from(path);
                if !path.is_file() {
                    return Err(format!("{}: no such binary", path.display()));
                }
                args.binaries.push((name.to_owned(), path));
            }
        }
    }
    if args.binaries.is_empty() {
        return Err(usage.into());
    }
    Ok(args)
}

/// Peak resident set (VmHWM) of a running process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One cold start: milliseconds to the first poll, and peak RSS then.
async fn cold_start(name: &str, binary: &Path, extra_env: &[(String, String)]) -> Result<(f64, Option<u64>), String> {
    let api = RuntimeApi::start_for(name).await.map_err(|e| e.to_string())?;
    let command = FunctionCommand::new(binary, name, &api)
        .env("AWS_REGION", "us-west-2")
        .env("AWS_DEFAULT_REGION", "us-west-2")
        .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
        .env("AWS_SESSION_TOKEN", "bench")
        // Never used (no event is sent); a closed port in case it were.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("CLUSTER_NAME", "demo-cluster")
        .env("RUST_LOG", "info");
    let command = extra_env.iter().fold(command, |c, (k, v)| c.env(k, v));
    let mut process = command.spawn().map_err(|e| e.to_string())?;
    let ready = process.wait_ready(&api, Duration::from_secs(30)).await.map_err(|e| e.to_string())?;
    let rss = peak_rss_kib(process.pid());
    let ms = ready.duration_since(process.spawned_at()).as_secs_f64() * 1000.0;
    process.kill();
    Ok((ms, rss))
}

/// Size of a zip holding `binary` as `bootstrap` (mode 0755, deflated):
/// Python's zipfile, or the `zip` tool.
fn zipped_size(binary: &Path) -> Result<u64, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let zip = dir.path().join("bootstrap.zip");
    let script = "import sys, zipfile\n\
        info = zipfile.ZipInfo('bootstrap', date_time=(2026, 1, 1, 0, 0, 0))\n\
        info.external_attr = 0o100755 << 16\n\
        info.compress_type = zipfile.ZIP_DEFLATED\n\
        with zipfile.ZipFile(sys.argv[2], 'w') as z, open(sys.argv[1], 'rb') as f:\n    z.writestr(info, f.read())\n";
    let python = std::process::Command::new("python3").arg("-c").arg(script).arg(binary).arg(&zip).status();
    if !matches!(python, Ok(s) if s.success()) {
        let staged = dir.path().join("bootstrap");
        std::fs::copy(binary, &staged).map_err(|e| e.to_string())?;
        let status = std::process::Command::new("zip")
            .arg("-q")
            .arg("-j")
            .arg(&zip)
            .arg(&staged)
            .status()
            .map_err(|e| format!("neither python3 nor zip could pack {}: {e}", binary.display()))?;
        if !status.success() {
            return Err(format!("zip failed for {}", binary.display()));
        }
    }
    std::fs::metadata(&zip).map(|m| m.len()).map_err(|e| e.to_string())
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); args.binaries.len()];
    let mut rss: Vec<u64> = vec![0; args.binaries.len()];
    for round in 0..args.warmup + args.runs {
        for (i, (name, binary)) in args.binaries.iter().enumerate() {
            let (ms, peak) = cold_start(name, binary, &args.env).await?;
            if round >= args.warmup {
                samples[i].push(ms);
                rss[i] = rss[i].max(peak.unwrap_or(0));
            }
        }
        eprint!(".");
        let _ = std::io::stderr().flush();
    }
    eprintln!();

    let mut rows = Vec::new();
    let mut baseline = None;
    for (i, (name, binary)) in args.binaries.iter().enumerate() {
        let mut s = samples[i].clone();
        s.sort_by(f64::total_cmp);
        let med = median(&s);
        let base = *baseline.get_or_insert(med);
        let size = std::fs::metadata(binary)?.len();
        let zip = zipped_size(binary)?;
        rows.push(serde_json::json!({
            "name": name,
            "binary": binary.display().to_string(),
            "runs": s.len(),
            "median_ms": med,
            "min_ms": s[0],
            "max_ms": s[s.len() - 1],
            "ratio_to_baseline": med / base,
            "peak_rss_kib": rss[i],
            "binary_bytes": size,
            "zip_bytes": zip,
            "samples_ms": s,
        }));
    }

    println!(
        "| Binary | Median cold init (ms) | Min–max (ms) | × {} | Peak RSS at first poll (MiB) | Binary (KiB) | Zip (KiB) |",
        args.binaries[0].0
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| `{}` | {:.2} | {:.2}–{:.2} | {:.2} | {:.1} | {} | {} |",
            row["name"].as_str().unwrap_or_default(),
            row["median_ms"].as_f64().unwrap_or_default(),
            row["min_ms"].as_f64().unwrap_or_default(),
            row["max_ms"].as_f64().unwrap_or_default(),
            row["ratio_to_baseline"].as_f64().unwrap_or_default(),
            row["peak_rss_kib"].as_u64().unwrap_or_default() as f64 / 1024.0,
            row["binary_bytes"].as_u64().unwrap_or_default().div_ceil(1024),
            row["zip_bytes"].as_u64().unwrap_or_default().div_ceil(1024),
        );
    }
    if let Some(path) = &args.json {
        let report = serde_json::json!({ "runs": args.runs, "warmup": args.warmup, "results": rows });
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(())
}
