//! Reading every setting from a lookup and checking each one as it is
//! read, so the first bad one is named with the reason and the fix.

use std::str::FromStr;
use std::time::Duration;

use ipnet::Ipv4Net;

use super::settings::default_of;
use super::validate::{check_convergence, check_nodeclass_name, check_nodepool_name, invalid, validate_cluster_name};
use super::{Config, Tag, Thresholds};
use crate::error::{Result, SettingsError};

impl Config {
    /// Reads and validates every setting. Unset or blank values take the default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &'static str| -> (&'static str, String) {
            let value = lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default_of(name).to_string());
            (name, value)
        };

        let clusters = list(&get("CLUSTER_NAME").1);
        for cluster in &clusters {
            validate_cluster_name(cluster).map_err(|reason| SettingsError::Config {
                setting: "CLUSTER_NAME",
                value: cluster.clone(),
                reason,
            })?;
        }

        let (setting, nodeclass_name) = get("NODECLASS_NAME");
        check_nodeclass_name(&nodeclass_name).map_err(|reason| invalid(setting, &nodeclass_name, reason))?;

        let (setting, nodepool_name) = get("NODEPOOL_NAME");
        check_nodepool_name(&nodepool_name).map_err(|reason| invalid(setting, &nodepool_name, reason))?;
        let (setting, create) = get("CREATE_NODEPOOL");
        let create_nodepool = parse_bool(&create).ok_or_else(|| invalid(setting, &create, "must be true or false"))?;

        let (setting, mode) = get("SUBNET_MODE");
        let subnet_mode = mode.parse().map_err(|reason| invalid(setting, &mode, reason))?;

        let (setting, pool) = get("CIDR_POOL");
        let mut cidr_pool = Vec::new();
        for entry in list(&pool) {
            let net: Ipv4Net = entry
                .parse()
                .map_err(|_| invalid(setting, &pool, format!("{entry:?} is not an IPv4 CIDR such as 100.64.0.0/10")))?;
            if net.network() != net.addr() {
                return Err(invalid(
                    setting,
                    &pool,
                    format!("{entry} has host bits set; did you mean {}?", net.trunc()),
                ));
            }
            cidr_pool.push(net);
        }
        if cidr_pool.is_empty() {
            return Err(invalid(setting, &pool, "must list at least one CIDR"));
        }

        let vpc_cidr_prefix: u8 = parse_number(get("VPC_CIDR_PREFIX"))?;
        if !(16..=28).contains(&vpc_cidr_prefix) {
            return Err(invalid(
                "VPC_CIDR_PREFIX",
                &vpc_cidr_prefix.to_string(),
                "AWS accepts VPC CIDR blocks from /16 to /28",
            ));
        }
        let subnet_prefix: u8 = parse_number(get("SUBNET_PREFIX"))?;
        if subnet_prefix <= vpc_cidr_prefix || subnet_prefix > 28 {
            return Err(invalid(
                "SUBNET_PREFIX",
                &subnet_prefix.to_string(),
                format!("must be longer than VPC_CIDR_PREFIX (/{vpc_cidr_prefix}) and at most /28"),
            ));
        }
        if cidr_pool.iter().all(|net| net.prefix_len() > vpc_cidr_prefix) {
            return Err(invalid(
                "CIDR_POOL",
                &pool,
                format!("no entry can hold a /{vpc_cidr_prefix} block; widen the pool or raise VPC_CIDR_PREFIX"),
            ));
        }

        let thresholds = Thresholds {
            min_free_ips_per_az: parse_number(get("MIN_FREE_IPS_PER_AZ"))?,
            min_free_prefixes_per_az: parse_number(get("MIN_FREE_PREFIXES_PER_AZ"))?,
        };

        check_convergence(subnet_prefix, thresholds)?;

        let expand_ahead_hours: u64 = parse_number(get("EXPAND_AHEAD_HOURS"))?;
        if expand_ahead_hours > 168 {
            return Err(invalid(
                "EXPAND_AHEAD_HOURS",
                &expand_ahead_hours.to_string(),
                "must be 0 (off) to 168: a trend of a few hours says little about next week",
            ));
        }
        let forecast_window_hours: u64 = parse_number(get("FORECAST_WINDOW_HOURS"))?;
        if !(1..=72).contains(&forecast_window_hours) {
            return Err(invalid(
                "FORECAST_WINDOW_HOURS",
                &forecast_window_hours.to_string(),
                "must be 1 to 72: the forecast needs at least an hour of 5-minute points",
            ));
        }

        let (setting, dry) = get("DRY_RUN");
        let dry_run = parse_bool(&dry).ok_or_else(|| invalid(setting, &dry, "must be true or false"))?;

        let (setting, metric_namespace) = get("METRIC_NAMESPACE");
        if metric_namespace.len() > 255 || metric_namespace.starts_with("AWS/") || metric_namespace.starts_with(':') {
            return Err(invalid(
                setting,
                &metric_namespace,
                "CloudWatch namespaces are at most 255 characters and may not start with `AWS/`",
            ));
        }

        let (setting, managed_tag_key) = get("MANAGED_TAG_KEY");
        if managed_tag_key.len() > 128 || managed_tag_key.to_ascii_lowercase().starts_with("aws:") {
            return Err(invalid(
                setting,
                &managed_tag_key,
                "tag keys are at most 128 characters and may not start with `aws:`",
            ));
        }

        let max_managed_cidrs: u32 = parse_number(get("MAX_MANAGED_CIDRS"))?;
        let vpc_cidr_quota: u32 = parse_number(get("VPC_CIDR_QUOTA"))?;
        if !(1..=50).contains(&vpc_cidr_quota) {
            return Err(invalid(
                "VPC_CIDR_QUOTA",
                &vpc_cidr_quota.to_string(),
                "AWS allows 1 to 50 IPv4 CIDR blocks per VPC",
            ));
        }

        let (_, role) = get("NODE_ROLE");
        let node_role = (!role.is_empty()).then_some(role);
        let (setting, sgs) = get("SECURITY_GROUP_IDS");
        let security_group_ids = list(&sgs);
        if let Some(bad) = security_group_ids.iter().find(|id| !id.starts_with("sg-")) {
            return Err(invalid(setting, &sgs, format!("{bad:?} is not a security group id (sg-…)")));
        }

        let association_timeout = Duration::from_secs(parse_number(get("ASSOCIATION_TIMEOUT_SECONDS"))?);
        let nodeclass_ready_timeout = Duration::from_secs(parse_number(get("NODECLASS_READY_TIMEOUT_SECONDS"))?);
        let consistency_wait = Duration::from_secs(parse_number(get("CONSISTENCY_WAIT_SECONDS"))?);

        let (setting, topic) = get("NOTIFY_TOPIC_ARN");
        let is_topic_arn = topic.starts_with("arn:") && topic.split(':').nth(2) == Some("sns");
        if !topic.is_empty() && !is_topic_arn {
            return Err(invalid(setting, &topic, "must be an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)"));
        }
        let notify_topic_arn = (!topic.is_empty()).then_some(topic);
        let (setting, vpc) = get("VPC_ID");
        if !vpc.is_empty() && !vpc.starts_with("vpc-") {
            return Err(invalid(setting, &vpc, "must be a VPC id (vpc-…)"));
        }
        let vpc_id = (!vpc.is_empty()).then_some(vpc);
        let (setting, role) = get("FUNCTION_ROLE_ARN");
        let is_role_arn = role.starts_with("arn:") && role.contains(":role/");
        if !role.is_empty() && !is_role_arn {
            return Err(invalid(setting, &role, "must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)"));
        }
        let function_role_arn = (!role.is_empty()).then_some(role);
        let (setting, subnet_metrics) = get("PUBLISH_SUBNET_METRICS");
        let publish_subnet_metrics =
            parse_bool(&subnet_metrics).ok_or_else(|| invalid(setting, &subnet_metrics, "must be true or false"))?;

        let cluster_opt_in_tag = parse_tag(get("CLUSTER_OPT_IN_TAG"))?;
        let vpc_opt_in_tag = parse_tag(get("VPC_OPT_IN_TAG"))?;
        let max_concurrent_clusters: usize = parse_number(get("MAX_CONCURRENT_CLUSTERS"))?;
        if !(1..=64).contains(&max_concurrent_clusters) {
            return Err(invalid(
                "MAX_CONCURRENT_CLUSTERS",
                &max_concurrent_clusters.to_string(),
                "must be 1 to 64: each cluster in flight holds connections and counts against EC2's request rate",
            ));
        }
        let (setting, pool_id) = get("IPAM_POOL_ID");
        if !pool_id.is_empty() && !pool_id.starts_with("ipam-pool-") {
            return Err(invalid(setting, &pool_id, "must be an IPAM pool id (ipam-pool-…)"));
        }
        let ipam_pool_id = (!pool_id.is_empty()).then_some(pool_id);

        let (setting, prefix) = get("CAPACITY_ALARM_PREFIX");
        if prefix.len() > 100 || prefix.chars().any(|c| c.is_control()) {
            return Err(invalid(
                setting,
                &prefix,
                "alarm names are at most 255 printable characters; keep the prefix under 100",
            ));
        }
        if prefix.contains('.') {
            return Err(invalid(
                setting,
                &prefix,
                "must hold no dot: the dot after it ends the prefix, so that IAM can grant `<prefix>.*` alone",
            ));
        }
        let capacity_alarm_prefix = (!prefix.is_empty()).then_some(prefix);
        let (_, in_template) = get("CAPACITY_ALARMS_IN_TEMPLATE");
        let capacity_alarms_in_template = (!in_template.is_empty()).then_some(in_template);
        let (setting, action) = get("CAPACITY_ALARM_ACTION_ARN");
        if !action.is_empty() && !action.starts_with("arn:") {
            return Err(invalid(setting, &action, "must be an ARN (the on-alarm function's)"));
        }
        let capacity_alarm_action_arn = (!action.is_empty()).then_some(action);
        let (setting, period) = get("CAPACITY_ALARM_PERIOD_SECONDS");
        let capacity_alarm_period_seconds: i32 = match period.parse() {
            Ok(p @ (60 | 300 | 900 | 3600)) => p,
            _ => return Err(invalid(setting, &period, "must be 60, 300, 900 or 3600")),
        };

        Ok(Config {
            clusters,
            nodeclass_name,
            nodepool_name,
            create_nodepool,
            subnet_mode,
            cidr_pool,
            vpc_cidr_prefix,
            subnet_prefix,
            thresholds,
            expand_ahead_hours,
            forecast_window_hours,
            dry_run,
            metric_namespace,
            managed_tag_key,
            max_managed_cidrs,
            vpc_cidr_quota,
            node_role,
            security_group_ids,
            association_timeout,
            nodeclass_ready_timeout,
            consistency_wait,
            notify_topic_arn,
            vpc_id,
            function_role_arn,
            publish_subnet_metrics,
            cluster_opt_in_tag,
            vpc_opt_in_tag,
            max_concurrent_clusters,
            ipam_pool_id,
            capacity_alarm_prefix,
            capacity_alarms_in_template,
            capacity_alarm_action_arn,
            capacity_alarm_period_seconds,
        })
    }
}

pub(super) fn list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// `key=value` (blank: none). Keys follow AWS's tag rules: at most 128
/// characters, not starting with `aws:`.
fn parse_tag((setting, value): (&'static str, String)) -> Result<Option<Tag>> {
    if value.is_empty() {
        return Ok(None);
    }
    let Some((key, tag_value)) = value.split_once('=') else {
        return Err(invalid(setting, &value, "must be `key=value`, e.g. headroom.io/enabled=true"));
    };
    let (key, tag_value) = (key.trim(), tag_value.trim());
    if key.is_empty() || key.len() > 128 || key.to_ascii_lowercase().starts_with("aws:") || tag_value.len() > 256 {
        return Err(invalid(
            setting,
            &value,
            "the key must be 1-128 characters not starting with `aws:`, the value at most 256 characters",
        ));
    }
    Ok(Some(Tag { key: key.to_string(), value: tag_value.to_string() }))
}

fn parse_number<T: FromStr>((setting, value): (&'static str, String)) -> Result<T> {
    value.parse().map_err(|_| invalid(setting, &value, "must be a non-negative whole number"))
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}
