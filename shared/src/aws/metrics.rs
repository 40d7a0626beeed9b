//! Capacity metrics for CloudWatch: per subnet, per AZ and per cluster.
//!
//! There is no native per-subnet free-IP metric and nothing at all shows
//! prefix fragmentation (docs/aws-rules.md, "Signals"), so the capacity check publishes
//! both. Dimensions name the cluster and the AZ, so an alarm can say where.
//! The `MinAz*` metrics are the ones the template's alarms watch: one alarm
//! per cluster covers every AZ.

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use serde::Serialize;

use super::errors::aws_error;
use crate::config::Config;
use crate::error::Result;
use crate::model::NetworkSnapshot;
use crate::node_subnets::node_subnets;
use crate::trigger::{AZ_DIMENSION, CLUSTER_DIMENSION, SUBNET_DIMENSION};

pub const FREE_IPS: &str = "FreeIpAddresses";
pub const FREE_PREFIXES: &str = "FreePrefixes";
pub const UTILISATION: &str = "IpUtilization";
pub const MIN_AZ_FREE_IPS: &str = "MinAzFreeIpAddresses";
pub const MIN_AZ_FREE_PREFIXES: &str = "MinAzFreePrefixes";

/// PutMetricData takes at most 1,000 data points per request.
const BATCH: usize = 1000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    pub name: &'static str,
    pub dimensions: Vec<(&'static str, String)>,
    pub value: f64,
    pub percent: bool,
}

/// Every data point for one cluster's snapshot. Pure.
pub fn capacity_metrics(snapshot: &NetworkSnapshot, config: &Config) -> Vec<Metric> {
    let cluster = &snapshot.cluster.name;
    let mut metrics = Vec::new();
    let mut point = |name, dimensions: Vec<(&'static str, String)>, value: f64, percent| {
        metrics.push(Metric { name, dimensions, value, percent });
    };
    let used = node_subnets(snapshot, config);
    let mut subnets = used.subnets.clone();
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
    let by_az = crate::capacity::by_az(used.subnets.iter().copied());
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
                    .unit(if m.percent { StandardUnit::Percent } else { StandardUnit::Count })
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
