//! headroom's CloudWatch metrics.
//!
//! - Capacity, per subnet, per AZ and per cluster. There is no native
//!   per-subnet free-IP metric and nothing at all shows prefix fragmentation
//!   (docs/aws-rules.md, "Signals"), so the capacity check publishes both.
//!   Dimensions name the cluster and the AZ, so an alarm can say where. The
//!   `MinAz*` metrics are the ones the template's alarms watch: one alarm per
//!   cluster covers every AZ.
//! - The forecast: `HoursToExhaustion` per AZ where the trend of the
//!   capacity above gives one, and `MinAzHoursToExhaustion` per cluster.
//! - `Remediations`, one per cluster and invocation, with the decision as a
//!   dimension: what the template's "refused or failed" alarm counts.
//! - The capacity check's memory, kept without a database:
//!   `NotifiedPlanFingerprint` (the plan a scheduled dry run last told about)
//!   and `Preflights` (when the permissions were last proven), read back with
//!   one GetMetricData at the start of a scheduled run.

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use serde::Serialize;

use super::errors::aws_error;
use crate::config::Config;
use crate::error::Result;
use crate::forecast::ClusterForecast;
use crate::model::NetworkSnapshot;
use crate::node_subnets::node_subnets;
use crate::trigger::{AZ_DIMENSION, CLUSTER_DIMENSION, SUBNET_DIMENSION};

pub const FREE_IPS: &str = "FreeIpAddresses";
pub const FREE_PREFIXES: &str = "FreePrefixes";
pub const UTILISATION: &str = "IpUtilization";
pub const MIN_AZ_FREE_IPS: &str = "MinAzFreeIpAddresses";
pub const MIN_AZ_FREE_PREFIXES: &str = "MinAzFreePrefixes";
pub const REMEDIATIONS: &str = "Remediations";
pub const NOTIFIED_PLAN: &str = "NotifiedPlanFingerprint";
pub const PREFLIGHTS: &str = "Preflights";
pub const NOTIFICATION_FAILURES: &str = "NotificationFailures";
pub const DECISION_DIMENSION: &str = "Decision";
pub const HOURS_TO_EXHAUSTION: &str = "HoursToExhaustion";
pub const MIN_AZ_HOURS_TO_EXHAUSTION: &str = "MinAzHoursToExhaustion";

/// How long a preflight stays fresh: the scheduled check proves the
/// permissions again once this long has passed.
pub const PREFLIGHT_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// PutMetricData takes at most 1,000 data points per request.
const BATCH: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    pub name: &'static str,
    pub dimensions: Vec<(&'static str, String)>,
    pub value: f64,
    pub unit: Unit,
}

/// The CloudWatch units headroom publishes in. CloudWatch has no hours, so
/// `HoursToExhaustion` says it in its name and is published without a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    Count,
    Percent,
    None,
}

/// Every data point for one cluster's snapshot. Pure.
pub fn capacity_metrics(snapshot: &NetworkSnapshot, config: &Config) -> Vec<Metric> {
    let cluster = &snapshot.cluster.name;
    let mut metrics = Vec::new();
    let mut point = |name, dimensions: Vec<(&'static str, String)>, value: f64, percent: bool| {
        let unit = if percent { Unit::Percent } else { Unit::Count };
        metrics.push(Metric { name, dimensions, value, unit });
    };
    let used = node_subnets(snapshot, config);
    let mut subnets = if config.publish_subnet_metrics { used.subnets.clone() } else { Vec::new() };
    subnets.sort_by(|a, b| a.id.cmp(&b.id));
    for subnet in subnets {
        let dims = vec![
            (CLUSTER_DIMENSION, cluster.clone()),
            (AZ_DIMENSION, subnet.availability_zone.clone()),
            (SUBNET_DIMENSION, subnet.id.clone()),
        ];
        point(FREE_IPS, dims.clone(), subnet.capacity.free_ips as f64, false);
        point(FREE_PREFIXES, dims.clone(), subnet.capacity.free_prefixes as f64, false);
        point(UTILISATION, dims, subnet.capacity.utilisation_percent(), true);
    }
    let by_az = used.capacity_by_az();
    for (az, capacity) in &by_az {
        let dims = vec![(CLUSTER_DIMENSION, cluster.clone()), (AZ_DIMENSION, az.clone())];
        point(FREE_IPS, dims.clone(), capacity.free_ips as f64, false);
        point(FREE_PREFIXES, dims.clone(), capacity.free_prefixes as f64, false);
        point(UTILISATION, dims, capacity.utilisation_percent(), true);
    }
    if let (Some(ips), Some(prefixes)) =
        (by_az.values().map(|c| c.free_ips).min(), by_az.values().map(|c| c.free_prefixes).min())
    {
        point(MIN_AZ_FREE_IPS, vec![(CLUSTER_DIMENSION, cluster.clone())], ips as f64, false);
        point(MIN_AZ_FREE_PREFIXES, vec![(CLUSTER_DIMENSION, cluster.clone())], prefixes as f64, false);
    }
    metrics
}

/// `HoursToExhaustion` per AZ (the smaller of its two forecasts), only
/// where one exists, and the cluster's minimum over its AZs,
/// `MinAzHoursToExhaustion`, for the dashboard. Pure.
pub fn forecast_metrics(cluster: &str, forecast: &ClusterForecast) -> Vec<Metric> {
    let mut metrics: Vec<Metric> = forecast
        .azs
        .iter()
        .filter_map(|az| {
            Some(Metric {
                name: HOURS_TO_EXHAUSTION,
                dimensions: vec![
                    (CLUSTER_DIMENSION, cluster.to_string()),
                    (AZ_DIMENSION, az.availability_zone.clone()),
                ],
                value: az.hours_to_exhaustion()?,
                unit: Unit::None,
            })
        })
        .collect();
    if let Some(hours) = forecast.min_hours_to_exhaustion() {
        metrics.push(Metric {
            name: MIN_AZ_HOURS_TO_EXHAUSTION,
            dimensions: vec![(CLUSTER_DIMENSION, cluster.to_string())],
            value: hours,
            unit: Unit::None,
        });
    }
    metrics
}

/// One `Remediations` data point: this cluster's decision.
pub fn outcome_metric(cluster: &str, decision: &str) -> Metric {
    Metric {
        name: REMEDIATIONS,
        dimensions: vec![(CLUSTER_DIMENSION, cluster.to_string()), (DECISION_DIMENSION, decision.to_string())],
        value: 1.0,
        unit: Unit::Count,
    }
}

/// The fingerprint of the plan a scheduled dry run just told about.
pub fn notified_plan_metric(cluster: &str, fingerprint: u32) -> Metric {
    Metric {
        name: NOTIFIED_PLAN,
        dimensions: vec![(CLUSTER_DIMENSION, cluster.to_string())],
        value: f64::from(fingerprint),
        unit: Unit::Count,
    }
}

/// A preflight ran for this cluster.
pub fn preflight_metric(cluster: &str) -> Metric {
    Metric {
        name: PREFLIGHTS,
        dimensions: vec![(CLUSTER_DIMENSION, cluster.to_string())],
        value: 1.0,
        unit: Unit::Count,
    }
}

/// A notification could not be published.
pub fn notification_failure_metric(cluster: &str) -> Metric {
    Metric {
        name: NOTIFICATION_FAILURES,
        dimensions: vec![(CLUSTER_DIMENSION, cluster.to_string())],
        value: 1.0,
        unit: Unit::Count,
    }
}

/// What the capacity check remembers between runs (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    /// The plan a scheduled dry run last told about, in the last day.
    pub notified_plan: Option<u32>,
    /// No preflight in the last [`PREFLIGHT_EVERY`].
    pub preflight_due: bool,
}

/// Reads the memory of one cluster: one GetMetricData, two queries.
pub async fn recall(cloudwatch: &aws_sdk_cloudwatch::Client, namespace: &str, cluster: &str) -> Result<Memory> {
    use aws_sdk_cloudwatch::types::{Metric as CwMetric, MetricDataQuery, MetricStat, ScanBy};
    let metric = |name: &str| {
        CwMetric::builder()
            .namespace(namespace)
            .metric_name(name)
            .dimensions(Dimension::builder().name(CLUSTER_DIMENSION).value(cluster).build())
            .build()
    };
    let query = |id: &str, name: &str, period: i32, stat: &str| {
        MetricDataQuery::builder()
            .id(id)
            .metric_stat(MetricStat::builder().metric(metric(name)).period(period).stat(stat).build())
            .return_data(true)
            .build()
    };
    let now = std::time::SystemTime::now();
    let window = PREFLIGHT_EVERY.as_secs() as i32;
    let out = cloudwatch
        .get_metric_data()
        .metric_data_queries(query("plan", NOTIFIED_PLAN, 60, "Maximum"))
        .metric_data_queries(query("preflights", PREFLIGHTS, window, "Sum"))
        .start_time(aws_smithy_types::DateTime::from(now - PREFLIGHT_EVERY))
        .end_time(aws_smithy_types::DateTime::from(now + std::time::Duration::from_secs(60)))
        .scan_by(ScanBy::TimestampDescending)
        .send()
        .await
        .map_err(|e| aws_error("GetMetricData", e))?;
    let values = |id: &str| -> Vec<f64> {
        out.metric_data_results().iter().filter(|r| r.id() == Some(id)).flat_map(|r| r.values().to_vec()).collect()
    };
    let notified_plan = values("plan").first().map(|v| *v as u32);
    let preflights: f64 = values("preflights").iter().sum();
    Ok(Memory { notified_plan, preflight_due: preflights < 1.0 })
}

/// Publishes in as few PutMetricData calls as the API allows, concurrently.
/// Returns the number of calls made.
pub async fn publish(cloudwatch: &aws_sdk_cloudwatch::Client, namespace: &str, metrics: &[Metric]) -> Result<usize> {
    let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now());
    let requests = metrics.chunks(BATCH).map(|chunk| {
        let data: Vec<MetricDatum> = chunk
            .iter()
            .map(|m| {
                MetricDatum::builder()
                    .metric_name(m.name)
                    .set_dimensions(Some(
                        m.dimensions.iter().map(|(k, v)| Dimension::builder().name(*k).value(v).build()).collect(),
                    ))
                    .value(m.value)
                    .unit(match m.unit {
                        Unit::Count => StandardUnit::Count,
                        Unit::Percent => StandardUnit::Percent,
                        Unit::None => StandardUnit::None,
                    })
                    .timestamp(now)
                    .build()
            })
            .collect();
        cloudwatch.put_metric_data().namespace(namespace).set_metric_data(Some(data)).send()
    });
    let results = futures::future::join_all(requests).await;
    let calls = results.len();
    for result in results {
        result.map_err(|e| aws_error("PutMetricData", e))?;
    }
    Ok(calls)
}
