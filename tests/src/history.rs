//! Seeding the capacity history the forecast reads: the AZ-level
//! `FreeIpAddresses` and `FreePrefixes` points the capacity check would
//! have published over the last hours, written to moto through the fault
//! proxy (the SDK's CloudWatch speaks only RPCv2-CBOR).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use headroom::trigger::{AZ_DIMENSION, CLUSTER_DIMENSION};

use crate::TestbedError;

/// One AZ's seeded series: a value per 5 minutes, oldest first, the last
/// one `end_ago` before now.
pub struct SeededSeries<'a> {
    pub cluster: &'a str,
    pub availability_zone: &'a str,
    /// `FreeIpAddresses` or `FreePrefixes`.
    pub metric: &'a str,
    pub values: Vec<f64>,
    pub end_ago: Duration,
}

/// `points` values every 5 minutes from `start`, changing by `per_hour`.
pub fn linear(start: f64, per_hour: f64, points: usize) -> Vec<f64> {
    (0..points).map(|i| start + per_hour * i as f64 / 12.0).collect()
}

/// Writes the series into `namespace`, 20 points per PutMetricData.
pub async fn seed(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    series: &[SeededSeries<'_>],
) -> Result<(), TestbedError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() as i64;
    let mut data = Vec::new();
    for s in series {
        let last = now - s.end_ago.as_secs() as i64;
        let count = s.values.len() as i64;
        for (i, value) in s.values.iter().enumerate() {
            let at = last - (count - 1 - i as i64) * 300;
            data.push(
                MetricDatum::builder()
                    .metric_name(s.metric)
                    .dimensions(Dimension::builder().name(CLUSTER_DIMENSION).value(s.cluster).build())
                    .dimensions(Dimension::builder().name(AZ_DIMENSION).value(s.availability_zone).build())
                    .value(*value)
                    .unit(StandardUnit::Count)
                    .timestamp(DateTime::from_secs(at))
                    .build(),
            );
        }
    }
    for chunk in data.chunks(20) {
        cloudwatch
            .put_metric_data()
            .namespace(namespace)
            .set_metric_data(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| TestbedError::Invalid(format!("seeding the capacity history: {e:?}")))?;
    }
    Ok(())
}
