//! The history the forecast reads: each AZ's `FreeIpAddresses` and
//! `FreePrefixes` (dimensions `ClusterName`, `AvailabilityZone`), which the
//! capacity check itself publishes on every run.
//!
//! One GetMetricData per cluster, with every AZ's two queries in it (500
//! queries and 100,800 points fit one request; 72 h of 5-minute points for
//! six AZs is 10,368), followed to its last page. The capacity check's
//! memory (`metrics::memory_queries`) rides along in the same request, so a
//! scheduled run with forecasting on makes one GetMetricData, not two.
//! Deciding what the points mean is the core's (`headroom_core::forecast`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};

use super::errors::aws_error;
use super::metrics::{FREE_IPS, FREE_PREFIXES, Memory, PREFLIGHT_EVERY, memory_from, memory_queries};
use crate::error::Result;
use crate::forecast::{AzHistory, POINT_PERIOD_SECONDS, Point};
use crate::trigger::{AZ_DIMENSION, CLUSTER_DIMENSION};

/// What one read brings back.
pub struct Read {
    /// Per AZ of the request; an AZ with no data has empty series (the core
    /// then forecasts nothing).
    pub history: BTreeMap<String, AzHistory>,
    /// The capacity check's memory, when asked for.
    pub memory: Option<Memory>,
}

/// Reads `window` of history for each of `azs` of `cluster`, ending now,
/// and with `remember`, the capacity check's memory in the same request.
pub async fn read(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    cluster: &str,
    azs: &[String],
    window: Duration,
    remember: bool,
) -> Result<Read> {
    let query = |id: String, name: &str, az: &str| {
        let metric = Metric::builder()
            .namespace(namespace)
            .metric_name(name)
            .dimensions(Dimension::builder().name(CLUSTER_DIMENSION).value(cluster).build())
            .dimensions(Dimension::builder().name(AZ_DIMENSION).value(az).build())
            .build();
        // Minimum: two runs in one period (a schedule and a manual run) give
        // the lower count, the one that matters for running out.
        let stat = MetricStat::builder().metric(metric).period(POINT_PERIOD_SECONDS as i32).stat("Minimum").build();
        MetricDataQuery::builder().id(id).metric_stat(stat).return_data(true).build()
    };
    let mut queries: Vec<MetricDataQuery> = azs
        .iter()
        .enumerate()
        .flat_map(|(i, az)| [query(format!("ips{i}"), FREE_IPS, az), query(format!("prefixes{i}"), FREE_PREFIXES, az)])
        .collect();
    if remember {
        queries.extend(memory_queries(namespace, cluster));
    }
    let mut history: BTreeMap<String, AzHistory> = azs.iter().map(|az| (az.clone(), AzHistory::default())).collect();
    if queries.is_empty() {
        return Ok(Read { history, memory: None });
    }
    let now = SystemTime::now();
    // One time range for every query: the memory's day when it rides along
    // (read newest first), the history's points then cut to `window`.
    let reach = if remember { window.max(PREFLIGHT_EVERY) } else { window };
    let since = (now - window).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let mut results = Vec::new();
    let mut next_token = None;
    loop {
        let out = cloudwatch
            .get_metric_data()
            .set_metric_data_queries(Some(queries.clone()))
            .start_time(aws_smithy_types::DateTime::from(now - reach))
            .end_time(aws_smithy_types::DateTime::from(now + Duration::from_secs(60)))
            .scan_by(ScanBy::TimestampDescending)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| aws_error("GetMetricData", e))?;
        results.extend(out.metric_data_results().iter().cloned());
        next_token = out.next_token().map(str::to_owned);
        if next_token.is_none() {
            break;
        }
    }
    for result in &results {
        let Some((measure, index)) = result.id().and_then(split_id) else { continue };
        let Some(az) = azs.get(index) else { continue };
        let series = history.entry(az.clone()).or_default();
        let points = result
            .timestamps()
            .iter()
            .zip(result.values())
            .filter(|(at, _)| at.secs() >= since)
            .map(|(at, value)| Point::new(at.secs(), *value));
        match measure {
            Measure::Ips => series.free_ips.extend(points),
            Measure::Prefixes => series.free_prefixes.extend(points),
        }
    }
    let memory = remember.then(|| memory_from(&results));
    Ok(Read { history, memory })
}

enum Measure {
    Ips,
    Prefixes,
}

/// `ips3` → (free IPs, AZ 3).
fn split_id(id: &str) -> Option<(Measure, usize)> {
    if let Some(index) = id.strip_prefix("ips") {
        return Some((Measure::Ips, index.parse().ok()?));
    }
    Some((Measure::Prefixes, id.strip_prefix("prefixes")?.parse().ok()?))
}
