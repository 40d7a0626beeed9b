//! Looking ahead: the capacity history of a cluster's AZs
//! ([`history::read_history`], one GetMetricData), then the core's forecast
//! over it (`headroom_core::forecast`). The scheduled check decides with it;
//! `headroom status` shows it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::aws::history;
use crate::capacity::AzCapacity;
use crate::forecast::{ClusterForecast, forecast_cluster};
use crate::run::context::Context;

/// Reads the history of the AZs in `capacity` and forecasts each against
/// the cluster's thresholds. An unreadable history forecasts nothing (the
/// thresholds still decide) and says why (`history_unreadable`).
pub async fn forecast(ctx: &Context, cluster: &str, capacity: &BTreeMap<String, AzCapacity>) -> ClusterForecast {
    let config = &ctx.config;
    let azs: Vec<String> = capacity.keys().cloned().collect();
    let window = Duration::from_secs(config.forecast_window_hours * 3600);
    let read = history::read_history(&ctx.aws.cloudwatch, &config.metric_namespace, cluster, &azs, window).await;
    let (history, unreadable) = match read {
        Ok(history) => (history, None),
        Err(error) => {
            tracing::warn!(error = %error, "could not read the capacity history; forecasting nothing this run");
            (BTreeMap::new(), Some(error.to_string()))
        }
    };
    let mut forecast = forecast_cluster(
        capacity,
        &history,
        config.thresholds,
        config.forecast_window_hours,
        config.expand_ahead_hours,
    );
    forecast.history_unreadable = unreadable;
    if let Some(due) = &forecast.due {
        tracing::info!(reason = %due.reason(), "forecast due");
    }
    forecast
}
