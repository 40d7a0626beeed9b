//! Forecast when an Availability Zone runs out of free IPv4 addresses or free /28 prefixes.
//!
//! The scheduled capacity check reads, per Availability Zone, a few hours of two CloudWatch metrics at
//! 5-minute resolution (free IPs and free /28 prefixes), fits a robust trend to each and asks how many
//! hours are left until the value falls to its threshold. If that is within the expand-ahead window the
//! caller expands before the threshold is actually crossed.
//!
//! The trend is the Theil–Sen estimator (the median of all pairwise slopes), chosen because a single
//! spike or a single gap in the metric cannot swing it, unlike a least-squares fit.
//!
//! Everything here is pure and total: no I/O, and no panics on any input (NaN/inf values, empty or
//! unsorted histories, duplicate timestamps, extreme timestamps).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::capacity::AzCapacity;
use crate::config::Thresholds;

/// Fewest usable points a history needs before it is trusted for a forecast: an hour's worth at 5 min.
pub const MIN_POINTS: usize = 12;

/// Shortest first-to-last span a history needs (55 min: 12 points at 5-minute spacing span 55 min).
pub const MIN_SPAN_SECONDS: i64 = 55 * 60;

/// The CloudWatch period the histories are read at (5 minutes).
pub const POINT_PERIOD_SECONDS: i64 = 300;

/// A slope whose magnitude is below this (per hour) counts as flat: no forecast from float noise.
pub const FLAT_EPSILON_PER_HOUR: f64 = 1e-9;

const SECONDS_PER_HOUR: f64 = 3600.0;

/// One metric sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// When the sample was taken, in Unix seconds.
    pub at: i64,
    /// The sampled value (non-finite values are ignored by every function here).
    pub value: f64,
}

impl Point {
    /// A sample of `value` at Unix second `at`.
    pub fn new(at: i64, value: f64) -> Self {
        Self { at, value }
    }
}

/// Which of the two per-AZ measures a forecast is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Measure {
    /// Free IPv4 addresses in the AZ (serialized as `"free-ips"`).
    FreeIps,
    /// Free /28 prefixes in the AZ (serialized as `"free-prefixes"`).
    FreePrefixes,
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Measure::FreeIps => "free IPs",
            Measure::FreePrefixes => "free /28 prefixes",
        })
    }
}

/// Why a series has no forecast (or, for [`NoForecast::Crossed`], why none is needed).
///
/// Serialized internally tagged, e.g. `{"reason":"too-few-points","points":7,"spanMinutes":35}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum NoForecast {
    /// The history is too short: fewer than [`MIN_POINTS`] usable points or a span under
    /// [`MIN_SPAN_SECONDS`]. `points` counts usable distinct timestamps; `span_minutes` is rounded down.
    TooFewPoints {
        /// Usable points (finite values, distinct timestamps).
        points: usize,
        /// First-to-last span of the usable points, in whole minutes.
        span_minutes: i64,
    },
    /// The trend is flat or rising, so the threshold is never reached at this rate.
    NotFalling {
        /// The fitted rate (per hour); its magnitude is below [`FLAT_EPSILON_PER_HOUR`] when flat.
        rate_per_hour: f64,
    },
    /// The value is already below the threshold (the planner's rule for a
    /// starved AZ); `hours_to_threshold` is then `Some(0.0)`.
    Crossed {
        /// The current value.
        now: u64,
        /// The threshold.
        threshold: u64,
    },
    /// The threshold is 0: a count cannot fall below it, so there is
    /// nothing to forecast.
    NoThreshold,
    /// Enough points, but every pairwise slope overflowed (values near `f64::MAX`), so no trend exists.
    NoTrend,
}

impl NoForecast {
    /// A short phrase for people, e.g. "no forecast: 7 points over 35 min, needs 12 over an hour".
    pub fn explain(&self) -> String {
        match self {
            NoForecast::TooFewPoints { points, span_minutes } => {
                format!("no forecast: {points} points over {span_minutes} min, needs {MIN_POINTS} over an hour")
            }
            NoForecast::NotFalling { rate_per_hour } if rate_per_hour.abs() < FLAT_EPSILON_PER_HOUR => {
                "no forecast: flat".to_string()
            }
            NoForecast::NotFalling { rate_per_hour } => {
                format!("no forecast: rising {}/h", fmt_rate(*rate_per_hour))
            }
            NoForecast::Crossed { now, threshold } => {
                format!("already at {now}, below the threshold of {threshold}")
            }
            NoForecast::NoThreshold => "no forecast: the threshold is 0".to_string(),
            NoForecast::NoTrend => "no forecast: values too extreme to fit a trend".to_string(),
        }
    }
}

/// The forecast for one measure in one AZ.
///
/// Invariants: `hours_to_threshold` is `Some` exactly when `no_forecast` is `None` (a falling series:
/// finite hours > 0) or `Some(NoForecast::Crossed { .. })` (hours = 0). `rate_per_hour` is `Some` whenever
/// the history qualifies (enough points and span) and yields a finite trend, also when crossed or not
/// falling, so the report can always show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesForecast {
    /// The current value, measured live (not taken from the history).
    pub now: u64,
    /// The threshold the value must not fall to.
    pub threshold: u64,
    /// The Theil–Sen trend of the history, per hour (negative = falling).
    pub rate_per_hour: Option<f64>,
    /// Hours until `now` falls to `threshold` at `rate_per_hour`; 0 when already crossed.
    pub hours_to_threshold: Option<f64>,
    /// Why there is no forecast (or why none is needed: crossed).
    pub no_forecast: Option<NoForecast>,
    /// Usable points in the history (finite values, distinct timestamps).
    pub points: usize,
}

/// Both forecasts for one Availability Zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AzForecast {
    /// The Availability Zone name, e.g. `eu-west-1a`.
    pub availability_zone: String,
    /// Forecast of free IPv4 addresses against MIN_FREE_IPS_PER_AZ.
    pub free_ips: SeriesForecast,
    /// Forecast of free /28 prefixes against MIN_FREE_PREFIXES_PER_AZ.
    pub free_prefixes: SeriesForecast,
}

impl AzForecast {
    /// The smaller of the two series' hours to their thresholds (only those that exist).
    pub fn hours_to_exhaustion(&self) -> Option<f64> {
        self.earliest().and_then(|(_, s)| s.hours_to_threshold)
    }

    /// The measure that reaches its threshold first, with its forecast; on a tie, free IPs.
    pub fn earliest(&self) -> Option<(Measure, &SeriesForecast)> {
        let ips = self.free_ips.hours_to_threshold.map(|h| (Measure::FreeIps, &self.free_ips, h));
        let prefixes = self.free_prefixes.hours_to_threshold.map(|h| (Measure::FreePrefixes, &self.free_prefixes, h));
        let pick = match (ips, prefixes) {
            (Some(a), Some(b)) => Some(if b.2 < a.2 { b } else { a }),
            (a, b) => a.or(b),
        };
        pick.map(|(m, s, _)| (m, s))
    }
}

/// A forecast that says an AZ must be expanded ahead of time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForecastTrigger {
    /// The Availability Zone name.
    pub availability_zone: String,
    /// The measure that runs out first.
    pub measure: Measure,
    /// Its trend per hour (negative); `None` only if already crossed with too short a history.
    pub rate_per_hour: Option<f64>,
    /// Hours left until the threshold (0 when already crossed).
    pub hours_left: f64,
    /// The current value of the measure.
    pub now: u64,
    /// The measure's threshold.
    pub threshold: u64,
}

impl ForecastTrigger {
    /// A sentence for people, e.g.
    /// "forecast: eu-west-1a free /28 prefixes fall 12.0/h, 3.5 h to the threshold of 4 (now 46)".
    pub fn reason(&self) -> String {
        let az = &self.availability_zone;
        let measure = self.measure;
        if self.now < self.threshold {
            return format!(
                "forecast: {az} {measure} already at {}, below the threshold of {}",
                self.now, self.threshold
            );
        }
        let fall = match self.rate_per_hour {
            Some(r) => format!(" fall {}/h,", fmt_rate(r)),
            None => " fall,".to_string(),
        };
        format!(
            "forecast: {az} {measure}{fall} {} to the threshold of {} (now {})",
            fmt_hours(self.hours_left),
            self.threshold,
            self.now
        )
    }
}

/// Theil–Sen slope of `points`, per hour: the median of all pairwise slopes `(v_j - v_i) / (t_j - t_i)`
/// with `t_j > t_i` (mean of the two middle slopes for an even count).
///
/// Non-finite values are ignored; points sharing a timestamp are merged into one whose value is their
/// median (order-independent, so unsorted input gives the same result as sorted). Pairwise slopes that
/// overflow are skipped. `None` with fewer than two usable distinct timestamps (or if every slope
/// overflowed). No minimum-history check here; [`forecast_series`] applies that.
pub fn theil_sen_slope_per_hour(points: &[Point]) -> Option<f64> {
    slope_per_hour(&usable(points))
}

/// Forecast one series: when does `now_value` fall to `threshold` at the history's trend?
///
/// `history` may be unsorted and contain NaN/inf values or duplicate timestamps (see
/// [`theil_sen_slope_per_hour`]). The trend only counts with at least [`MIN_POINTS`] usable points over
/// at least [`MIN_SPAN_SECONDS`]. Hours = `(now_value - threshold) / -rate_per_hour` for a strictly
/// falling trend (rate below `-FLAT_EPSILON_PER_HOUR`); `now_value < threshold` is reported as
/// [`NoForecast::Crossed`] with hours = 0 regardless of the history, and a threshold of 0 as
/// [`NoForecast::NoThreshold`].
pub fn forecast_series(history: &[Point], now_value: u64, threshold: u64) -> SeriesForecast {
    let points = usable(history);
    let span = match (points.first(), points.last()) {
        (Some(first), Some(last)) => last.at.saturating_sub(first.at),
        _ => 0,
    };
    let enough = points.len() >= MIN_POINTS && span >= MIN_SPAN_SECONDS;
    // A trend from a too-short history is not reported at all: it would invite reading too much into it.
    let rate = if enough { slope_per_hour(&points) } else { None };

    let (hours, no_forecast) = if threshold == 0 {
        (None, Some(NoForecast::NoThreshold))
    } else if now_value < threshold {
        (Some(0.0), Some(NoForecast::Crossed { now: now_value, threshold }))
    } else if !enough {
        (None, Some(NoForecast::TooFewPoints { points: points.len(), span_minutes: span / 60 }))
    } else {
        match rate {
            None => (None, Some(NoForecast::NoTrend)),
            Some(r) if r > -FLAT_EPSILON_PER_HOUR => (None, Some(NoForecast::NotFalling { rate_per_hour: r })),
            // now > threshold so the u64 difference cannot underflow; |r| >= epsilon keeps it finite.
            Some(r) => (Some((now_value - threshold) as f64 / -r), None),
        }
    };

    SeriesForecast {
        now: now_value,
        threshold,
        rate_per_hour: rate,
        hours_to_threshold: hours,
        no_forecast,
        points: points.len(),
    }
}

/// Forecast both measures of one Availability Zone against their thresholds.
pub fn forecast_az(
    az: &str,
    ip_history: &[Point],
    prefix_history: &[Point],
    now_ips: u64,
    now_prefixes: u64,
    min_free_ips: u64,
    min_free_prefixes: u64,
) -> AzForecast {
    AzForecast {
        availability_zone: az.to_string(),
        free_ips: forecast_series(ip_history, now_ips, min_free_ips),
        free_prefixes: forecast_series(prefix_history, now_prefixes, min_free_prefixes),
    }
}

/// `Some` when the AZ reaches a threshold within `expand_ahead_hours` (inclusive), naming the measure
/// that runs out first. `expand_ahead_hours == 0` turns forecasting off (always `None`). An already
/// crossed series has 0 hours left and so triggers too; the caller's threshold logic covers that anyway.
pub fn due_within(forecast: &AzForecast, expand_ahead_hours: u64) -> Option<ForecastTrigger> {
    if expand_ahead_hours == 0 {
        return None;
    }
    let (measure, series) = forecast.earliest()?;
    let hours_left = series.hours_to_threshold?;
    (hours_left <= expand_ahead_hours as f64).then(|| ForecastTrigger {
        availability_zone: forecast.availability_zone.clone(),
        measure,
        rate_per_hour: series.rate_per_hour,
        hours_left,
        now: series.now,
        threshold: series.threshold,
    })
}

/// One AZ's history, as read from CloudWatch: its `FreeIpAddresses` and
/// `FreePrefixes` over the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AzHistory {
    /// `FreeIpAddresses` points.
    pub free_ips: Vec<Point>,
    /// `FreePrefixes` points.
    pub free_prefixes: Vec<Point>,
}

/// One cluster's forecast: every AZ's two series, the window read and,
/// when one is due within the expand-ahead window, the earliest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterForecast {
    /// Hours of history read (FORECAST_WINDOW_HOURS).
    pub window_hours: u64,
    /// The expand-ahead window (EXPAND_AHEAD_HOURS).
    pub expand_ahead_hours: u64,
    /// Per AZ, in AZ order.
    pub azs: Vec<AzForecast>,
    /// The AZ that reaches a threshold first, when that is within the
    /// expand-ahead window and the threshold is not crossed yet (a crossed
    /// one is the thresholds' business, not the forecast's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<ForecastTrigger>,
    /// Why the history could not be read, when it could not: then every AZ
    /// has no points, so no forecast, and only the thresholds decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_unreadable: Option<String>,
}

impl ClusterForecast {
    /// The smallest hours to exhaustion over the AZs: the cluster's
    /// `MinAzHoursToExhaustion`. `None` when no AZ has a forecast.
    pub fn min_hours_to_exhaustion(&self) -> Option<f64> {
        self.azs.iter().filter_map(AzForecast::hours_to_exhaustion).min_by(f64::total_cmp)
    }
}

/// Forecasts every AZ of `capacity` (free IPs and /28s now, measured live)
/// from its `history` (an AZ without one has no points, so no forecast),
/// against `thresholds`.
pub fn forecast_cluster(
    capacity: &BTreeMap<String, AzCapacity>,
    history: &BTreeMap<String, AzHistory>,
    thresholds: Thresholds,
    window_hours: u64,
    expand_ahead_hours: u64,
) -> ClusterForecast {
    let empty = AzHistory::default();
    let azs: Vec<AzForecast> = capacity
        .iter()
        .map(|(az, now)| {
            let past = history.get(az).unwrap_or(&empty);
            forecast_az(
                az,
                &past.free_ips,
                &past.free_prefixes,
                now.free_ips,
                now.free_prefixes,
                thresholds.min_free_ips_per_az,
                thresholds.min_free_prefixes_per_az,
            )
        })
        .collect();
    let due = azs
        .iter()
        .filter_map(|az| due_within(az, expand_ahead_hours))
        .filter(|trigger| trigger.now >= trigger.threshold)
        .min_by(|a, b| a.hours_left.total_cmp(&b.hours_left));
    ClusterForecast { window_hours, expand_ahead_hours, azs, due, history_unreadable: None }
}

/// Finite-valued points sorted by time, one per timestamp (the median of that timestamp's values).
fn usable(points: &[Point]) -> Vec<Point> {
    let mut finite: Vec<Point> = points.iter().filter(|p| p.value.is_finite()).copied().collect();
    // Sorting by value within a timestamp makes the per-timestamp median a simple index.
    finite.sort_unstable_by(|a, b| a.at.cmp(&b.at).then(a.value.total_cmp(&b.value)));
    let mut out = Vec::with_capacity(finite.len());
    for group in finite.chunk_by(|a, b| a.at == b.at) {
        let m = group.len() / 2;
        let value =
            if group.len() % 2 == 1 { group[m].value } else { f64::midpoint(group[m - 1].value, group[m].value) };
        out.push(Point { at: group[m].at, value });
    }
    out
}

/// Theil–Sen slope per hour of sorted points with distinct timestamps.
fn slope_per_hour(points: &[Point]) -> Option<f64> {
    let n = points.len();
    let mut slopes = Vec::with_capacity(n * n.saturating_sub(1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            // i128 so that extreme timestamps cannot overflow; dt >= 1 since timestamps are distinct.
            let dt = (i128::from(b.at) - i128::from(a.at)) as f64;
            // Scaling before dividing keeps integer-valued linear series exact: every pair gives the
            // same correctly rounded quotient, so the median equals the true slope bit for bit.
            let slope = (b.value - a.value) * SECONDS_PER_HOUR / dt;
            if slope.is_finite() {
                slopes.push(slope);
            }
        }
    }
    median(&mut slopes).filter(|s| s.is_finite())
}

/// Median by selection (O(n) per call); the mean of the two middle values for an even count.
fn median(values: &mut [f64]) -> Option<f64> {
    let len = values.len();
    if len == 0 {
        return None;
    }
    let (lower, upper_middle, _) = values.select_nth_unstable_by(len / 2, f64::total_cmp);
    let upper_middle = *upper_middle;
    if len % 2 == 1 {
        return Some(upper_middle);
    }
    // After selection the lower middle is the largest element of the lower part.
    let lower_middle = lower.iter().copied().max_by(f64::total_cmp)?;
    Some(f64::midpoint(lower_middle, upper_middle))
}

/// A rate's magnitude for people: one decimal, or two significant digits below 0.1.
pub fn fmt_rate(rate: f64) -> String {
    let magnitude = rate.abs();
    if magnitude >= 0.1 || magnitude == 0.0 || !magnitude.is_finite() {
        return fixed(magnitude, 1);
    }
    let decimals = ((-magnitude.log10()).ceil() as u32 + 1).min(9);
    fixed(magnitude, decimals)
}

/// Hours for people: minutes under an hour, else hours with one decimal.
pub fn fmt_hours(hours: f64) -> String {
    let minutes = hours * 60.0;
    if minutes < 1.0 {
        "under a minute".to_string()
    } else if minutes < 59.5 {
        format!("{} min", fixed(minutes, 0))
    } else {
        format!("{} h", fixed(hours, 1))
    }
}

/// `x` with `decimals` digits after the point, rounded half away from zero,
/// by integer arithmetic: Rust's float formatting (`{:.1}`) would add some
/// 17 KB to every function, whose zip has little room under 4 MB.
fn fixed(x: f64, decimals: u32) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let scale = 10u64.pow(decimals);
    let scaled = (x.abs() * scale as f64).round();
    if scaled >= u64::MAX as f64 {
        return "a very large number".into();
    }
    let scaled = scaled as u64;
    let sign = if x < 0.0 && scaled != 0 { "-" } else { "" };
    if decimals == 0 {
        return format!("{sign}{scaled}");
    }
    format!("{sign}{}.{:0width$}", scaled / scale, scaled % scale, width = decimals as usize)
}

#[cfg(test)]
mod tests;
