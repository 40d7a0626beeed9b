//! The history the forecast reads: each AZ's `FreeIpAddresses` and
//! `FreePrefixes` (dimensions `ClusterName`, `AvailabilityZone`), which the
//! capacity check itself publishes on every run.
//!
//! One GetMetricData per cluster, with every AZ's two queries in it (500
//! queries and 100,800 points fit one request; 72 h of 5-minute points for
//! six AZs is 10,368), followed to its last page. Deciding what the points
//! mean is the core's (`headroom_core::forecast`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};

use super::errors::aws_error;
use super::metrics::{FREE_IPS, FREE_PREFIXES};
use crate::error::Result;
use crate::forecast::{AzHistory, POINT_PERIOD_SECONDS, Point};
use crate::trigger::{AZ_DIMENSION, CLUSTER_DIMENSION};

/// Reads `window` of history for each of `azs` of `cluster`, ending now.
/// An AZ with no data gets empty series (the core then forecasts nothing).
pub async fn read_history(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    cluster: &str,
    azs: &[String],
    window: Duration,
) -> Result<BTreeMap<String, AzHistory>> {
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
    let queries: Vec<MetricDataQuery> = azs
        .iter()
        .enumerate()
        .flat_map(|(i, az)| [query(format!("ips{i}"), FREE_IPS, az), query(format!("prefixes{i}"), FREE_PREFIXES, az)])
        .collect();
    let mut history: BTreeMap<String, AzHistory> = azs.iter().map(|az| (az.clone(), AzHistory::default())).collect();
    if queries.is_empty() {
        return Ok(history);
    }
    let now = SystemTime::now();
    let mut next_token = None;
    loop {
        let out = cloudwatch
            .get_metric_data()
            .set_metric_data_queries(Some(queries.clone()))
            .start_time(aws_smithy_types::DateTime::from(now - window))
            .end_time(aws_smithy_types::DateTime::from(now))
            .scan_by(ScanBy::TimestampAscending)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| aws_error("GetMetricData", e))?;
        for result in out.metric_data_results() {
            let Some((measure, index)) = result.id().and_then(split_id) else { continue };
            let Some(az) = azs.get(index) else { continue };
            let series = history.entry(az.clone()).or_default();
            let points =
                result.timestamps().iter().zip(result.values()).map(|(at, value)| Point::new(at.secs(), *value));
            match measure {
                Measure::Ips => series.free_ips.extend(points),
                Measure::Prefixes => series.free_prefixes.extend(points),
            }
        }
        next_token = out.next_token().map(str::to_owned);
        if next_token.is_none() {
            return Ok(history);
        }
    }
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
