//! The estimator and the decision, unit and property tests.

use super::*;
use proptest::prelude::*;

const T0: i64 = 1_700_000_000;

/// `n` points at 5-minute spacing from `T0`, value `start + step * i`.
fn linear(n: usize, start: f64, step_per_point: f64) -> Vec<Point> {
    (0..n).map(|i| Point::new(T0 + i as i64 * POINT_PERIOD_SECONDS, start + step_per_point * i as f64)).collect()
}

fn falling_az(ip_step: f64, prefix_step: f64, now_ips: u64, now_prefixes: u64) -> AzForecast {
    let ips = linear(72, 1000.0, ip_step);
    let prefixes = linear(72, 100.0, prefix_step);
    forecast_az("eu-west-1a", &ips, &prefixes, now_ips, now_prefixes, 200, 4)
}

#[test]
fn linear_falling_series_recovers_its_slope_exactly() {
    // -5 per 5 minutes = -60 per hour.
    assert_eq!(theil_sen_slope_per_hour(&linear(72, 10_000.0, -5.0)), Some(-60.0));
    assert_eq!(theil_sen_slope_per_hour(&linear(13, 0.0, 1.0)), Some(12.0));
}

#[test]
fn slope_needs_two_distinct_timestamps() {
    assert_eq!(theil_sen_slope_per_hour(&[]), None);
    assert_eq!(theil_sen_slope_per_hour(&[Point::new(T0, 1.0)]), None);
    assert_eq!(theil_sen_slope_per_hour(&[Point::new(T0, 1.0), Point::new(T0, 5.0)]), None);
    assert_eq!(theil_sen_slope_per_hour(&[Point::new(T0, 1.0), Point::new(T0 + 3600, 5.0)]), Some(4.0));
}

#[test]
fn even_count_takes_the_mean_of_the_two_middle_slopes() {
    // Three points give slopes (per hour) 1, 3 and 2 -> median 2; four points give six slopes.
    let three = [Point::new(0, 0.0), Point::new(3600, 1.0), Point::new(7200, 4.0)];
    assert_eq!(theil_sen_slope_per_hour(&three), Some(2.0));
    // Pairs: 0-1: 1, 0-2: 2, 0-3: 3, 1-2: 3, 1-3: 4, 2-3: 5 -> middle 3 and 3.
    let four = [Point::new(0, 0.0), Point::new(3600, 1.0), Point::new(7200, 4.0), Point::new(10800, 9.0)];
    assert_eq!(theil_sen_slope_per_hour(&four), Some(3.0));
    let odd = [Point::new(0, 0.0), Point::new(3600, 4.0), Point::new(7200, 4.0)];
    // Slopes 4, 2, 0 -> 2.
    assert_eq!(theil_sen_slope_per_hour(&odd), Some(2.0));
    let even = [Point::new(0, 0.0), Point::new(3600, 2.0), Point::new(7200, 8.0), Point::new(10800, 8.0)];
    // Slopes: 2, 4, 8/3, 6, 3, 0 -> sorted 0, 2, 8/3, 3, 4, 6 -> (8/3 + 3) / 2.
    let got = theil_sen_slope_per_hour(&even).unwrap();
    assert!((got - (8.0 / 3.0 + 3.0) / 2.0).abs() < 1e-12, "{got}");
}

#[test]
fn flat_series_is_not_falling() {
    let f = forecast_series(&linear(72, 500.0, 0.0), 500, 200);
    assert_eq!(f.rate_per_hour, Some(0.0));
    assert_eq!(f.hours_to_threshold, None);
    assert_eq!(f.no_forecast, Some(NoForecast::NotFalling { rate_per_hour: 0.0 }));
    assert_eq!(f.no_forecast.unwrap().explain(), "no forecast: flat");
}

#[test]
fn rising_series_is_not_falling() {
    let f = forecast_series(&linear(72, 500.0, 2.5), 700, 200);
    assert_eq!(f.rate_per_hour, Some(30.0));
    assert_eq!(f.hours_to_threshold, None);
    assert_eq!(f.no_forecast, Some(NoForecast::NotFalling { rate_per_hour: 30.0 }));
    assert_eq!(f.no_forecast.unwrap().explain(), "no forecast: rising 30.0/h");
}

#[test]
fn tiny_slope_counts_as_flat() {
    // 1e-12 per 5 min is far below the epsilon of 1e-9 per hour.
    let f = forecast_series(&linear(72, 500.0, -1e-12), 500, 200);
    assert!(matches!(f.no_forecast, Some(NoForecast::NotFalling { .. })), "{f:?}");
    assert_eq!(f.hours_to_threshold, None);
}

#[test]
fn eleven_points_are_too_few() {
    let f = forecast_series(&linear(11, 1000.0, -5.0), 900, 200);
    assert_eq!(f.no_forecast, Some(NoForecast::TooFewPoints { points: 11, span_minutes: 50 }));
    assert_eq!(f.hours_to_threshold, None);
    assert_eq!(f.rate_per_hour, None);
    assert_eq!(f.points, 11);
}

#[test]
fn twelve_points_over_55_minutes_give_a_forecast() {
    let f = forecast_series(&linear(12, 1000.0, -5.0), 900, 200);
    assert_eq!(f.no_forecast, None);
    assert_eq!(f.rate_per_hour, Some(-60.0));
    // (900 - 200) / 60 h.
    assert_eq!(f.hours_to_threshold, Some(700.0 / 60.0));
}

#[test]
fn twelve_points_over_less_than_55_minutes_are_too_few() {
    let pts: Vec<Point> = (0..12).map(|i| Point::new(T0 + i * 299, 1000.0 - i as f64)).collect();
    let f = forecast_series(&pts, 900, 200);
    // 11 * 299 s = 3289 s = 54 min 49 s.
    assert_eq!(f.no_forecast, Some(NoForecast::TooFewPoints { points: 12, span_minutes: 54 }));
}

#[test]
fn many_points_over_a_short_span_are_too_few() {
    let pts: Vec<Point> = (0..30).map(|i| Point::new(T0 + i * 60, 1000.0 - i as f64)).collect();
    let f = forecast_series(&pts, 900, 200);
    assert_eq!(f.no_forecast, Some(NoForecast::TooFewPoints { points: 30, span_minutes: 29 }));
}

#[test]
fn hours_arithmetic_by_hand() {
    // -2.5 per 5 min = -30 per hour; (500 - 200) / 30 = 10 h.
    let f = forecast_series(&linear(72, 9999.0, -2.5), 500, 200);
    assert_eq!(f.rate_per_hour, Some(-30.0));
    assert_eq!(f.hours_to_threshold, Some(10.0));
    assert_eq!(f.no_forecast, None);
    assert_eq!(f.now, 500);
    assert_eq!(f.threshold, 200);
    assert_eq!(f.points, 72);
}

#[test]
fn now_value_comes_from_the_caller_not_the_history() {
    // History ends at 1000 - 5 * 71 = 645, but the live value 260 is what counts: 60 / 60 = 1 h.
    let f = forecast_series(&linear(72, 1000.0, -5.0), 260, 200);
    assert_eq!(f.hours_to_threshold, Some(1.0));
}

#[test]
fn crossed_reports_zero_hours() {
    for now in [0, 150, 199] {
        let f = forecast_series(&linear(72, 1000.0, -5.0), now, 200);
        assert_eq!(f.hours_to_threshold, Some(0.0));
        assert_eq!(f.no_forecast, Some(NoForecast::Crossed { now, threshold: 200 }));
        assert_eq!(f.rate_per_hour, Some(-60.0));
    }
    // Crossed even without any history.
    let f = forecast_series(&[], 3, 4);
    assert_eq!(f.hours_to_threshold, Some(0.0));
    assert_eq!(f.rate_per_hour, None);
    assert_eq!(f.no_forecast.unwrap().explain(), "already at 3, below the threshold of 4");
}

#[test]
fn at_the_threshold_and_falling_is_due_now_and_a_zero_threshold_has_no_forecast() {
    let at = forecast_series(&linear(72, 1000.0, -5.0), 200, 200);
    assert_eq!((at.no_forecast, at.hours_to_threshold), (None, Some(0.0)));
    let zero = forecast_series(&linear(72, 1000.0, -5.0), 0, 0);
    assert_eq!((zero.no_forecast, zero.hours_to_threshold), (Some(NoForecast::NoThreshold), None));
}

#[test]
fn one_above_the_threshold_is_not_crossed() {
    let f = forecast_series(&linear(72, 1000.0, -5.0), 201, 200);
    assert_eq!(f.no_forecast, None);
    assert_eq!(f.hours_to_threshold, Some(1.0 / 60.0));
}

#[test]
fn duplicate_timestamps_merge_to_their_median() {
    let mut pts = linear(12, 1000.0, -5.0);
    // Three values at one timestamp: median 995 = the true value; the outliers must not count as points.
    pts.push(Point::new(T0 + 300, 5000.0));
    pts.push(Point::new(T0 + 300, -7.0));
    let f = forecast_series(&pts, 900, 200);
    assert_eq!(f.points, 12);
    assert_eq!(f.rate_per_hour, Some(-60.0));
    // Two values at one timestamp: their mean.
    let two = [Point::new(0, 0.0), Point::new(3600, 2.0), Point::new(3600, 4.0)];
    assert_eq!(theil_sen_slope_per_hour(&two), Some(3.0));
    // Eleven distinct timestamps plus a duplicate are still too few.
    let mut short = linear(11, 1000.0, -5.0);
    short.push(short[3]);
    let f = forecast_series(&short, 900, 200);
    assert_eq!(f.no_forecast, Some(NoForecast::TooFewPoints { points: 11, span_minutes: 50 }));
}

#[test]
fn non_finite_values_are_ignored() {
    let clean = linear(20, 1000.0, -5.0);
    let mut dirty = clean.clone();
    dirty.insert(3, Point::new(T0 + 100, f64::NAN));
    dirty.push(Point::new(T0 + 900, f64::INFINITY));
    dirty.push(Point::new(T0 + 30_000, f64::NEG_INFINITY));
    let f = forecast_series(&dirty, 900, 200);
    assert_eq!(f, forecast_series(&clean, 900, 200));
    assert_eq!(f.points, 20);
    // NaN values push a history below the minimum.
    let mut twelve = linear(12, 1000.0, -5.0);
    twelve[5].value = f64::NAN;
    assert!(matches!(
        forecast_series(&twelve, 900, 200).no_forecast,
        Some(NoForecast::TooFewPoints { points: 11, .. })
    ));
}

#[test]
fn unsorted_input_gives_the_same_result_as_sorted() {
    let mut pts = linear(30, 1000.0, -5.0);
    pts[7].value += 40.0;
    pts.push(Point::new(T0 + 600, 7.0));
    let sorted = forecast_series(&pts, 700, 200);
    let mut shuffled = pts.clone();
    shuffled.reverse();
    shuffled.swap(0, 17);
    shuffled.swap(3, 29);
    assert_ne!(shuffled, pts);
    assert_eq!(forecast_series(&shuffled, 700, 200), sorted);
    assert_eq!(sorted.rate_per_hour, Some(-60.0));
}

#[test]
fn one_spike_does_not_move_the_trend() {
    let mut pts = linear(72, 1000.0, -5.0);
    pts[40].value = 1e9;
    assert_eq!(theil_sen_slope_per_hour(&pts), Some(-60.0));
}

#[test]
fn extreme_timestamps_do_not_overflow() {
    let pts = [Point::new(i64::MIN, 0.0), Point::new(i64::MAX, 1.0)];
    let got = theil_sen_slope_per_hour(&pts).unwrap();
    assert!(got > 0.0 && got.is_finite());
    let f = forecast_series(&pts, 10, 1);
    assert_eq!(f.no_forecast, Some(NoForecast::TooFewPoints { points: 2, span_minutes: i64::MAX / 60 }));
}

#[test]
fn overflowing_values_give_no_trend() {
    // Opposite signs differ by more than f64::MAX; same signs by at least f64::MAX / 12, which
    // overflows once scaled to per hour. So every pairwise slope overflows.
    let pts: Vec<Point> = (0..12)
        .map(|i| {
            let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
            Point::new(T0 + i * 300, sign * f64::MAX * (1.0 - i as f64 / 24.0))
        })
        .collect();
    let f = forecast_series(&pts, 10, 1);
    assert_eq!(f.no_forecast, Some(NoForecast::NoTrend));
    assert_eq!(f.rate_per_hour, None);
    assert_eq!(f.hours_to_threshold, None);
}

#[test]
fn the_smaller_of_two_forecasts_is_chosen_with_its_measure() {
    // IPs: -60/h, (800 - 200) / 60 = 10 h. Prefixes: -12/h, (46 - 4) / 12 = 3.5 h.
    let az = falling_az(-5.0, -1.0, 800, 46);
    assert_eq!(az.free_ips.hours_to_threshold, Some(10.0));
    assert_eq!(az.free_prefixes.hours_to_threshold, Some(3.5));
    assert_eq!(az.hours_to_exhaustion(), Some(3.5));
    let (measure, series) = az.earliest().unwrap();
    assert_eq!(measure, Measure::FreePrefixes);
    assert_eq!(series, &az.free_prefixes);
    // And the other way round: IPs (260 - 200) / 60 = 1 h first.
    let az = falling_az(-5.0, -1.0, 260, 46);
    assert_eq!(az.hours_to_exhaustion(), Some(1.0));
    assert_eq!(az.earliest().unwrap().0, Measure::FreeIps);
}

#[test]
fn only_existing_forecasts_count() {
    // IPs rising: only prefixes have hours.
    let az = falling_az(5.0, -1.0, 800, 46);
    assert_eq!(az.hours_to_exhaustion(), Some(3.5));
    assert_eq!(az.earliest().unwrap().0, Measure::FreePrefixes);
    // Prefixes flat: only IPs.
    let az = falling_az(-5.0, 0.0, 800, 46);
    assert_eq!(az.hours_to_exhaustion(), Some(10.0));
    assert_eq!(az.earliest().unwrap().0, Measure::FreeIps);
    // Neither.
    let az = falling_az(0.0, 1.0, 800, 46);
    assert_eq!(az.hours_to_exhaustion(), None);
    assert_eq!(az.earliest(), None);
    assert_eq!(due_within(&az, 24), None);
}

#[test]
fn tie_goes_to_free_ips() {
    // Both 10 h: IPs (800 - 200) / 60, prefixes (124 - 4) / 12.
    let az = falling_az(-5.0, -1.0, 800, 124);
    assert_eq!(az.earliest().unwrap().0, Measure::FreeIps);
}

#[test]
fn due_within_boundaries() {
    // Prefixes flat, IPs at exactly 10 h: an integral boundary to test against.
    let az = falling_az(-5.0, 0.0, 800, 46);
    assert_eq!(az.hours_to_exhaustion(), Some(10.0));
    let t = due_within(&az, 10).expect("equal to the ahead hours is due");
    assert_eq!(
        t,
        ForecastTrigger {
            availability_zone: "eu-west-1a".into(),
            measure: Measure::FreeIps,
            rate_per_hour: Some(-60.0),
            hours_left: 10.0,
            now: 800,
            threshold: 200,
        }
    );
    assert!(due_within(&az, 11).is_some());
    assert!(due_within(&az, u64::MAX).is_some());
    assert_eq!(due_within(&az, 9), None);
    assert_eq!(due_within(&az, 0), None, "0 turns forecasting off");
    // Even a crossed series (0 h) does not trigger with 0.
    let crossed = falling_az(-5.0, 0.0, 100, 46);
    assert_eq!(crossed.hours_to_exhaustion(), Some(0.0));
    assert_eq!(due_within(&crossed, 0), None);
    assert!(due_within(&crossed, 1).is_some());
}

#[test]
fn trigger_reason_reads_well() {
    let az = falling_az(-5.0, -1.0, 800, 46);
    let t = due_within(&az, 24).unwrap();
    assert_eq!(t.reason(), "forecast: eu-west-1a free /28 prefixes fall 12.0/h, 3.5 h to the threshold of 4 (now 46)");
    // Under an hour: minutes. (230 - 200) / 60 = 0.5 h.
    let az = falling_az(-5.0, 0.0, 230, 46);
    assert_eq!(
        due_within(&az, 24).unwrap().reason(),
        "forecast: eu-west-1a free IPs fall 60.0/h, 30 min to the threshold of 200 (now 230)"
    );
    // Slow fall: two significant digits. -0.001 per 5 min = -0.012/h.
    let az = falling_az(-0.001, 0.0, 201, 46);
    let t = due_within(&az, 100).unwrap();
    assert!(t.reason().contains("fall 0.012/h, 83.3 h"), "{}", t.reason());
    let crossed = falling_az(-5.0, 0.0, 150, 46);
    assert_eq!(
        due_within(&crossed, 24).unwrap().reason(),
        "forecast: eu-west-1a free IPs already at 150, below the threshold of 200"
    );
}

#[test]
fn formatting_helpers() {
    assert_eq!(fmt_hours(0.001), "under a minute");
    assert_eq!(fmt_hours(0.25), "15 min");
    assert_eq!(fmt_hours(0.999), "1.0 h");
    assert_eq!(fmt_hours(26.04), "26.0 h");
    assert_eq!(fmt_rate(-12.04), "12.0");
    assert_eq!(fmt_rate(-0.05), "0.050");
    assert_eq!(fmt_rate(0.0), "0.0");
    assert_eq!(fmt_rate(-1e-300), "0.000000000");
    assert_eq!(fmt_rate(f64::NAN), "NaN");
}

#[test]
fn explanations() {
    assert_eq!(
        NoForecast::TooFewPoints { points: 7, span_minutes: 35 }.explain(),
        "no forecast: 7 points over 35 min, needs 12 over an hour"
    );
    assert_eq!(NoForecast::NoTrend.explain(), "no forecast: values too extreme to fit a trend");
    assert_eq!(Measure::FreeIps.to_string(), "free IPs");
    assert_eq!(Measure::FreePrefixes.to_string(), "free /28 prefixes");
}

#[test]
fn serialization_shape() {
    let v = |x: &dyn erased::Ser| x.json();
    assert_eq!(
        v(&NoForecast::TooFewPoints { points: 7, span_minutes: 35 }),
        r#"{"reason":"too-few-points","points":7,"spanMinutes":35}"#
    );
    assert_eq!(v(&NoForecast::NotFalling { rate_per_hour: 1.5 }), r#"{"reason":"not-falling","ratePerHour":1.5}"#);
    assert_eq!(v(&NoForecast::Crossed { now: 3, threshold: 4 }), r#"{"reason":"crossed","now":3,"threshold":4}"#);
    assert_eq!(v(&NoForecast::NoTrend), r#"{"reason":"no-trend"}"#);
    assert_eq!(v(&Measure::FreePrefixes), r#""free-prefixes""#);
    let az = falling_az(-5.0, 1.0, 800, 46);
    let json: serde_json::Value = serde_json::from_str(&v(&az)).unwrap();
    assert_eq!(json["availabilityZone"], "eu-west-1a");
    assert_eq!(json["freeIps"]["ratePerHour"], -60.0);
    assert_eq!(json["freeIps"]["hoursToThreshold"], 10.0);
    assert_eq!(json["freeIps"]["noForecast"], serde_json::Value::Null);
    assert_eq!(json["freePrefixes"]["noForecast"]["reason"], "not-falling");
    assert_eq!(json["freePrefixes"]["points"], 72);
    let t = due_within(&az, 24).unwrap();
    assert_eq!(
        v(&t),
        r#"{"availabilityZone":"eu-west-1a","measure":"free-ips","ratePerHour":-60.0,"hoursLeft":10.0,"now":800,"threshold":200}"#
    );
}

/// Lets one helper serialize values of different types.
mod erased {
    pub trait Ser {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap()
        }
    }
}

// ---- property tests ----

/// An integer-valued linear series: every pairwise slope is the same correctly rounded quotient,
/// so the Theil–Sen slope is exact and any change to it is a real change.
fn int_linear() -> impl Strategy<Value = (Vec<Point>, i64)> {
    (12usize..=72, -1_000_000i64..1_000_000, -1000i64..=1000, 0i64..2_000_000_000).prop_map(|(n, start, step, t0)| {
        let pts = (0..n)
            .map(|i| Point::new(t0 + i as i64 * POINT_PERIOD_SECONDS, (start + step * i as i64) as f64))
            .collect();
        (pts, step)
    })
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![-1e12..1e12f64, any::<f64>().prop_filter("finite", |v| v.is_finite())]
}

fn decision(pts: &[Point], now: u64, threshold: u64, ahead: u64) -> Option<ForecastTrigger> {
    due_within(&forecast_az("az", pts, &[], now, 0, threshold, 0), ahead)
}

proptest! {
    #[test]
    fn exact_linear_series_recovers_its_slope(
        n in 12usize..=72,
        slope in -10_000.0..10_000.0f64,
        intercept in -1e6..1e6f64,
        t0 in 0i64..2_000_000_000,
    ) {
        let pts: Vec<Point> = (0..n)
            .map(|i| {
                let dt = i as i64 * POINT_PERIOD_SECONDS;
                Point::new(t0 + dt, intercept + slope * dt as f64 / 3600.0)
            })
            .collect();
        let got = theil_sen_slope_per_hour(&pts).unwrap();
        // 1e-6 relative; the absolute 1e-6 covers slopes near zero, where rounding of values near
        // 1e6 dominates.
        prop_assert!((got - slope).abs() <= 1e-6 * slope.abs() + 1e-6, "got {got}, want {slope}");
    }

    #[test]
    fn integer_linear_series_slope_is_exact((pts, step) in int_linear()) {
        prop_assert_eq!(theil_sen_slope_per_hour(&pts), Some(step as f64 * 12.0));
    }

    #[test]
    fn one_spike_changes_neither_slope_nor_decision(
        (pts, _step) in int_linear(),
        index in any::<prop::sample::Index>(),
        spike in finite_f64(),
        mode in 0u8..3,
        now in 0u64..3_000_000,
        threshold in 0u64..1_000_000,
        ahead in 0u64..2000,
    ) {
        let i = index.index(pts.len());
        let mut spiked = pts.clone();
        match mode {
            // A bad reading replaces a good one.
            0 => spiked[i].value = spike,
            // An extra reading between two good ones (or after the last).
            1 => spiked.push(Point::new(pts[i].at + POINT_PERIOD_SECONDS / 2, spike)),
            // A second reading at the same timestamp: merged to the midpoint, still one outlier.
            _ => spiked.push(Point::new(pts[i].at, spike)),
        }
        prop_assert_eq!(theil_sen_slope_per_hour(&spiked), theil_sen_slope_per_hour(&pts));
        let before = forecast_series(&pts, now, threshold);
        let after = forecast_series(&spiked, now, threshold);
        prop_assert_eq!(after.rate_per_hour, before.rate_per_hour);
        prop_assert_eq!(after.hours_to_threshold, before.hours_to_threshold);
        prop_assert_eq!(decision(&spiked, now, threshold, ahead), decision(&pts, now, threshold, ahead));
    }

    #[test]
    fn a_gap_changes_neither_slope_nor_decision(
        (pts, _step) in int_linear().prop_filter("room for a gap", |(p, _)| p.len() >= 18),
        start in any::<prop::sample::Index>(),
        len in any::<prop::sample::Index>(),
        now in 0u64..3_000_000,
        threshold in 0u64..1_000_000,
        ahead in 0u64..2000,
    ) {
        let n = pts.len();
        let gap = 1 + len.index(n / 3);
        let from = start.index(n - gap + 1);
        let mut gapped = pts.clone();
        gapped.drain(from..from + gap);
        // n >= 18 and gap <= n / 3 keep >= 12 points at 5-min spacing, i.e. >= 55 min.
        prop_assert!(gapped.len() >= MIN_POINTS);
        prop_assert!(gapped[gapped.len() - 1].at - gapped[0].at >= MIN_SPAN_SECONDS);
        prop_assert_eq!(theil_sen_slope_per_hour(&gapped), theil_sen_slope_per_hour(&pts));
        let before = forecast_series(&pts, now, threshold);
        let after = forecast_series(&gapped, now, threshold);
        prop_assert_eq!(after.hours_to_threshold, before.hours_to_threshold);
        prop_assert_eq!(decision(&gapped, now, threshold, ahead), decision(&pts, now, threshold, ahead));
    }

    #[test]
    fn flat_or_rising_series_never_have_hours(
        start in -1e9..1e9f64,
        steps in prop::collection::vec(
            (1i64..=900, prop_oneof![Just(0.0), 0.0..1000.0f64]), 0..100),
        now in 1u64..u64::MAX,
        threshold in 0u64..u64::MAX,
    ) {
        prop_assume!(now > threshold);
        let mut pts = vec![Point::new(T0, start)];
        for (dt, dv) in steps {
            let last = pts[pts.len() - 1];
            pts.push(Point::new(last.at + dt, last.value + dv));
        }
        let f = forecast_series(&pts, now, threshold);
        prop_assert_eq!(f.hours_to_threshold, None);
        prop_assert!(f.rate_per_hour.is_none_or(|r| r >= 0.0));
        prop_assert!(f.no_forecast.is_some());
    }

    #[test]
    fn bounded_noise_gives_a_bounded_slope_error(
        n in 12usize..=72,
        slope in -1000.0..1000.0f64,
        k in 0.0..100.0f64,
        noise in prop::collection::vec(-1.0..=1.0f64, 72),
    ) {
        let pts: Vec<Point> = (0..n)
            .map(|i| {
                let dt = i as i64 * POINT_PERIOD_SECONDS;
                Point::new(T0 + dt, 5000.0 + slope * dt as f64 / 3600.0 + k * noise[i])
            })
            .collect();
        // A pair d steps apart has a slope within 2k / (d * 5 min) of the truth. If more than half
        // the pairs (plus one, for the even-count mean) are at least d apart, the median is too.
        let total = n * (n - 1) / 2;
        let mut d = n - 1;
        while d > 1 && (d..n).map(|g| n - g).sum::<usize>() < total / 2 + 1 {
            d -= 1;
        }
        let bound = 2.0 * k * 3600.0 / (d as f64 * POINT_PERIOD_SECONDS as f64);
        let got = theil_sen_slope_per_hour(&pts).unwrap();
        prop_assert!(
            (got - slope).abs() <= bound + 1e-6 * (1.0 + slope.abs()),
            "got {got}, want {slope} within {bound} (d = {d})"
        );
    }

    #[test]
    fn arbitrary_inputs_never_panic(
        ips in prop::collection::vec(
            (prop_oneof![any::<i64>(), T0..T0 + 30_000, Just(i64::MIN), Just(i64::MAX)],
             prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(-f64::MAX), -1e6..1e6f64]),
            0..100),
        prefixes in prop::collection::vec((T0..T0 + 30_000, -1e6..1e6f64), 0..100),
        now_ips in any::<u64>(),
        now_prefixes in any::<u64>(),
        min_ips in any::<u64>(),
        min_prefixes in any::<u64>(),
        ahead in any::<u64>(),
    ) {
        let ips: Vec<Point> = ips.into_iter().map(|(at, v)| Point::new(at, v)).collect();
        let prefixes: Vec<Point> = prefixes.into_iter().map(|(at, v)| Point::new(at, v)).collect();
        let az = forecast_az("az", &ips, &prefixes, now_ips, now_prefixes, min_ips, min_prefixes);
        for (series, input) in [(&az.free_ips, ips.len()), (&az.free_prefixes, prefixes.len())] {
            prop_assert!(series.points <= input);
            prop_assert!(series.rate_per_hour.is_none_or(f64::is_finite));
            prop_assert!(series.hours_to_threshold.is_none_or(|h| h.is_finite() && h >= 0.0));
            let crossed = matches!(series.no_forecast, Some(NoForecast::Crossed { .. }));
            prop_assert_eq!(
                series.hours_to_threshold.is_some(),
                series.no_forecast.is_none() || crossed
            );
            prop_assert_eq!(crossed, series.now < series.threshold);
            prop_assert_eq!(series.threshold == 0, series.no_forecast == Some(NoForecast::NoThreshold));
            if let Some(reason) = &series.no_forecast {
                prop_assert!(!reason.explain().is_empty());
            }
        }
        let _ = theil_sen_slope_per_hour(&ips);
        let json = serde_json::to_string(&az).unwrap();
        prop_assert!(json.contains("\"availabilityZone\":\"az\""));
        match due_within(&az, ahead) {
            Some(t) => {
                prop_assert!(ahead > 0 && t.hours_left <= ahead as f64);
                prop_assert_eq!(Some(t.hours_left), az.hours_to_exhaustion());
                prop_assert!(!t.reason().is_empty());
            }
            None => prop_assert!(ahead == 0 || az.hours_to_exhaustion().is_none_or(|h| h > ahead as f64)),
        }
    }
}

#[test]
fn fixed_point_formatting_matches_what_people_read() {
    for (x, decimals, text) in [
        (100.0, 1, "100.0"),
        (5.11, 1, "5.1"),
        (0.05, 1, "0.1"),
        (0.012_34, 3, "0.012"),
        (-2.25, 1, "-2.3"),
        (-0.01, 1, "0.0"),
        (59.4, 0, "59"),
        (f64::INFINITY, 1, "inf"),
        (f64::NAN, 1, "NaN"),
    ] {
        assert_eq!(fixed(x, decimals), text, "{x} with {decimals}");
    }
}
