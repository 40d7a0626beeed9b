//! Per-cluster capacity alarms, kept by the capacity check.
//!
//! A stack for one cluster declares its two capacity alarms in the template.
//! A stack for clusters that opt in by tag cannot name them, so with
//! `CAPACITY_ALARM_PREFIX` set the scheduled check keeps the same two alarms
//! for every cluster it manages (but `CAPACITY_ALARMS_IN_TEMPLATE`, whose
//! alarms the template declares): on `MinAzFreeIpAddresses` and
//! `MinAzFreePrefixes` of that cluster, at that cluster's own thresholds
//! (its tags may override them), invoking `CAPACITY_ALARM_ACTION_ARN` (the
//! on-alarm function) and telling the topic. PutMetricAlarm replaces an
//! alarm of the same name, so keeping them is idempotent; it is called only
//! when an alarm is missing or differs. Alarms are only ever created or
//! updated under the prefix, never deleted.
//!
//! The names are `<prefix>.<cluster>-min-az-free-…`. The prefix holds no
//! dot and neither does an EKS cluster name, so the first dot ends the
//! prefix: an IAM pattern `<prefix>.*` matches this prefix's alarms only,
//! never those of a longer prefix (stack `a-b` against stack `a`), which a
//! hyphen could not tell apart.

use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, MetricAlarm, Statistic};

use super::errors::aws_error;
use super::metrics::{MIN_AZ_FREE_IPS, MIN_AZ_FREE_PREFIXES};
use crate::config::Config;
use crate::error::Result;
use crate::trigger::CLUSTER_DIMENSION;

/// One capacity alarm as headroom wants it. Pure data, compared with what
/// CloudWatch holds.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityAlarm {
    pub name: String,
    pub description: String,
    pub namespace: String,
    pub metric: &'static str,
    pub cluster: String,
    pub threshold: f64,
    pub period_seconds: i32,
    pub alarm_actions: Vec<String>,
    /// OK and INSUFFICIENT_DATA: the topic only. No data means the capacity
    /// check stopped publishing, which people must hear about.
    pub other_actions: Vec<String>,
}

/// The two capacity alarms of `cluster` under `config` (the cluster's own
/// settings); none without `CAPACITY_ALARM_PREFIX`, and none for the
/// cluster whose alarms the template declares.
pub fn capacity_alarms(cluster: &str, config: &Config) -> Vec<CapacityAlarm> {
    let Some(prefix) = &config.capacity_alarm_prefix else { return Vec::new() };
    if config.capacity_alarms_in_template.as_deref() == Some(cluster) {
        return Vec::new();
    }
    let topic: Vec<String> = config.notify_topic_arn.iter().cloned().collect();
    let alarm_actions: Vec<String> = config.capacity_alarm_action_arn.iter().cloned().chain(topic.clone()).collect();
    let thresholds = config.thresholds;
    [
        (
            MIN_AZ_FREE_IPS,
            "min-az-free-ip-addresses",
            thresholds.min_free_ips_per_az,
            "free IPv4 addresses",
            "MIN_FREE_IPS_PER_AZ",
        ),
        (
            MIN_AZ_FREE_PREFIXES,
            "min-az-free-prefixes",
            thresholds.min_free_prefixes_per_az,
            "free aligned /28 prefixes",
            "MIN_FREE_PREFIXES_PER_AZ",
        ),
    ]
    .into_iter()
    .map(|(metric, suffix, threshold, what, setting)| CapacityAlarm {
        name: format!("{prefix}.{cluster}-{suffix}"),
        description: format!(
            "headroom: the AZ with the fewest {what} in cluster {cluster} is below {setting} ({threshold}). \
             Kept by headroom's capacity check."
        ),
        namespace: config.metric_namespace.clone(),
        metric,
        cluster: cluster.to_string(),
        threshold: threshold as f64,
        period_seconds: config.capacity_alarm_period_seconds,
        alarm_actions: alarm_actions.clone(),
        other_actions: topic.clone(),
    })
    .collect()
}

/// Whether CloudWatch's alarm is the one wanted.
pub fn matches(wanted: &CapacityAlarm, actual: &MetricAlarm) -> bool {
    let dimensions = actual.dimensions();
    actual.alarm_name() == Some(wanted.name.as_str())
        && actual.alarm_description() == Some(wanted.description.as_str())
        && actual.namespace() == Some(wanted.namespace.as_str())
        && actual.metric_name() == Some(wanted.metric)
        && dimensions.len() == 1
        && dimensions[0].name() == Some(CLUSTER_DIMENSION)
        && dimensions[0].value() == Some(wanted.cluster.as_str())
        && actual.threshold() == Some(wanted.threshold)
        && actual.period() == Some(wanted.period_seconds)
        && actual.statistic() == Some(&Statistic::Minimum)
        && actual.comparison_operator() == Some(&ComparisonOperator::LessThanThreshold)
        && actual.treat_missing_data() == Some("missing")
        && actual.alarm_actions() == wanted.alarm_actions.as_slice()
        && actual.ok_actions() == wanted.other_actions.as_slice()
        && actual.insufficient_data_actions() == wanted.other_actions.as_slice()
}

/// Creates or updates the cluster's capacity alarms where they differ from
/// [`capacity_alarms`]; says what it did.
pub async fn keep(cloudwatch: &aws_sdk_cloudwatch::Client, cluster: &str, config: &Config) -> Result<String> {
    let wanted = capacity_alarms(cluster, config);
    if config.capacity_alarm_prefix.is_none() {
        return Ok("not kept (CAPACITY_ALARM_PREFIX is empty)".into());
    }
    if wanted.is_empty() {
        return Ok("declared by the template (CAPACITY_ALARMS_IN_TEMPLATE)".into());
    }
    let existing = cloudwatch
        .describe_alarms()
        .set_alarm_names(Some(wanted.iter().map(|a| a.name.clone()).collect()))
        .send()
        .await
        .map_err(|e| aws_error("DescribeAlarms", e))?;
    let mut changed = Vec::new();
    for alarm in &wanted {
        if existing.metric_alarms().iter().any(|actual| matches(alarm, actual)) {
            continue;
        }
        cloudwatch
            .put_metric_alarm()
            .alarm_name(&alarm.name)
            .alarm_description(&alarm.description)
            .namespace(&alarm.namespace)
            .metric_name(alarm.metric)
            .dimensions(Dimension::builder().name(CLUSTER_DIMENSION).value(&alarm.cluster).build())
            .statistic(Statistic::Minimum)
            .period(alarm.period_seconds)
            .evaluation_periods(1)
            .datapoints_to_alarm(1)
            .threshold(alarm.threshold)
            .comparison_operator(ComparisonOperator::LessThanThreshold)
            .treat_missing_data("missing")
            .set_alarm_actions(Some(alarm.alarm_actions.clone()))
            .set_ok_actions(Some(alarm.other_actions.clone()))
            .set_insufficient_data_actions(Some(alarm.other_actions.clone()))
            .send()
            .await
            .map_err(|e| aws_error("PutMetricAlarm", e))?;
        changed.push(alarm.name.as_str());
    }
    Ok(if changed.is_empty() {
        format!("{} up to date", wanted.len())
    } else {
        format!("created or updated {}", changed.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::from_pairs(pairs).unwrap()
    }

    #[test]
    fn no_prefix_no_alarms() {
        assert!(capacity_alarms("c", &config(&[])).is_empty());
    }

    #[test]
    fn each_cluster_gets_two_alarms_at_its_own_thresholds() {
        let base = config(&[
            ("CAPACITY_ALARM_PREFIX", "headroom-org"),
            ("CAPACITY_ALARM_ACTION_ARN", "arn:aws:lambda:us-west-2:123456789012:function:on-alarm"),
            ("NOTIFY_TOPIC_ARN", "arn:aws:sns:us-west-2:123456789012:headroom"),
        ]);
        let tags = [(crate::config::TAG_MIN_FREE_IPS_PER_AZ.to_string(), "2000".to_string())].into();
        let own = base.for_cluster("team-a", &tags).unwrap();
        let alarms = capacity_alarms("team-a", &own);
        let names: Vec<&str> = alarms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["headroom-org.team-a-min-az-free-ip-addresses", "headroom-org.team-a-min-az-free-prefixes"]);
        assert_eq!(alarms[0].threshold, 2000.0, "the cluster's tag, not the stack's 512");
        assert_eq!(alarms[1].threshold, 16.0);
        assert_eq!(alarms[0].alarm_actions.len(), 2, "the function, then the topic");
        assert_eq!(alarms[0].other_actions, ["arn:aws:sns:us-west-2:123456789012:headroom"]);
    }

    /// The IAM resource pattern a stack grants (`<stack>.*-min-az-free-…`)
    /// must match its own alarms and never those of a stack whose name
    /// starts with this one's: with a hyphen after the prefix, `a-*` also
    /// matched stack `a-b`'s alarms.
    #[test]
    fn one_prefix_never_matches_a_longer_prefixs_alarms() {
        // IAM's ARN matching: `*` is any run of characters, the rest literal.
        fn glob(pattern: &str, name: &str) -> bool {
            match pattern.split_once('*') {
                None => pattern == name,
                Some((head, tail)) => {
                    name.strip_prefix(head).is_some_and(|rest| (0..=rest.len()).any(|skip| glob(tail, &rest[skip..])))
                }
            }
        }
        let names = |prefix: &str, cluster: &str| -> Vec<String> {
            capacity_alarms(cluster, &config(&[("CAPACITY_ALARM_PREFIX", prefix)]))
                .into_iter()
                .map(|a| a.name)
                .collect()
        };
        for suffix in ["min-az-free-ip-addresses", "min-az-free-prefixes"] {
            let granted_to_a = format!("a.*-{suffix}");
            assert!(names("a", "c").iter().any(|n| glob(&granted_to_a, n)), "a's own alarm");
            for other in [names("a-b", "c"), names("a-b", "a"), names("ab", "c")] {
                assert!(!other.iter().any(|n| glob(&granted_to_a, n)), "{other:?} matched {granted_to_a}");
            }
        }
        let rejected = Config::from_pairs(&[("CAPACITY_ALARM_PREFIX", "a.b")]).unwrap_err().to_string();
        assert!(rejected.contains("CAPACITY_ALARM_PREFIX"), "{rejected}");
    }

    #[test]
    fn the_cluster_whose_alarms_the_template_declares_gets_none_from_the_check() {
        let c = config(&[("CAPACITY_ALARM_PREFIX", "stack"), ("CAPACITY_ALARMS_IN_TEMPLATE", "first")]);
        assert!(capacity_alarms("first", &c).is_empty(), "the template's two alarms are the first cluster's");
        assert_eq!(capacity_alarms("second", &c).len(), 2);
    }

    #[test]
    fn an_alarm_that_differs_in_anything_kept_is_put_again() {
        let c = config(&[("CAPACITY_ALARM_PREFIX", "h")]);
        let wanted = capacity_alarms("c", &c).remove(0);
        let as_put = |threshold: f64| {
            MetricAlarm::builder()
                .alarm_name(&wanted.name)
                .alarm_description(&wanted.description)
                .namespace(&wanted.namespace)
                .metric_name(wanted.metric)
                .dimensions(Dimension::builder().name(CLUSTER_DIMENSION).value("c").build())
                .threshold(threshold)
                .period(wanted.period_seconds)
                .statistic(Statistic::Minimum)
                .comparison_operator(ComparisonOperator::LessThanThreshold)
                .treat_missing_data("missing")
                .build()
        };
        assert!(matches(&wanted, &as_put(wanted.threshold)));
        assert!(!matches(&wanted, &as_put(wanted.threshold + 1.0)), "a changed threshold tag is applied");
    }
}
