//! The settings' rules, one by one.

use std::collections::BTreeMap;

use super::*;
use crate::error::SettingsError;

fn config(pairs: &[(&str, &str)]) -> Result<Config> {
    Config::from_pairs(pairs)
}

fn rejected_setting(pairs: &[(&str, &str)]) -> &'static str {
    match config(pairs) {
        Err(SettingsError::Config { setting, .. }) => setting,
        other => panic!("expected a config error for {pairs:?}, got {other:?}"),
    }
}

#[test]
fn every_setting_has_a_working_default() {
    let c = config(&[]).unwrap();
    assert!(c.clusters.is_empty());
    assert_eq!(c.nodeclass_name, "headroom");
    assert_ne!(c.nodeclass_name, "default");
    assert_eq!(c.nodepool_name, "headroom");
    assert!(c.create_nodepool, "out of the box, a NodePool uses the new subnets");
    assert_eq!(c.subnet_mode, SubnetMode::Nodes);
    assert_eq!(c.cidr_pool, vec!["100.64.0.0/10".parse::<Ipv4Net>().unwrap()]);
    assert_eq!((c.vpc_cidr_prefix, c.subnet_prefix), (16, 19));
    assert_eq!(c.thresholds.min_free_ips_per_az, 512);
    assert_eq!(c.thresholds.min_free_prefixes_per_az, 16);
    assert!(!c.dry_run);
    assert_eq!(c.metric_namespace, "Headroom");
    assert_eq!(c.managed_tag_key, "headroom.io/cluster");
    assert_eq!((c.max_managed_cidrs, c.vpc_cidr_quota), (2, 5));
    assert_eq!(c.association_timeout, Duration::from_secs(120));
    assert_eq!(c.consistency_wait, Duration::from_secs(30));
}

#[test]
fn reads_every_setting() {
    let c = config(&[
        ("CLUSTER_NAME", "a, b"),
        ("NODECLASS_NAME", "extra-ips"),
        ("NODEPOOL_NAME", "extra-ips"),
        ("SUBNET_MODE", "PODS"),
        ("CIDR_POOL", "100.64.0.0/12, 100.80.0.0/12"),
        ("VPC_CIDR_PREFIX", "18"),
        ("SUBNET_PREFIX", "21"),
        ("MIN_FREE_IPS_PER_AZ", "100"),
        ("MIN_FREE_PREFIXES_PER_AZ", "4"),
        ("DRY_RUN", "true"),
        ("METRIC_NAMESPACE", "Platform/Headroom"),
        ("MANAGED_TAG_KEY", "example.com/headroom"),
        ("MAX_MANAGED_CIDRS", "3"),
        ("VPC_CIDR_QUOTA", "10"),
        ("NODE_ROLE", "NodeRole"),
        ("SECURITY_GROUP_IDS", "sg-1,sg-2"),
        ("ASSOCIATION_TIMEOUT_SECONDS", "5"),
        ("NODECLASS_READY_TIMEOUT_SECONDS", "0"),
        ("CREATE_NODEPOOL", "false"),
        ("CONSISTENCY_WAIT_SECONDS", "5"),
    ])
    .unwrap();
    assert_eq!(c.clusters, vec!["a", "b"]);
    assert_eq!(c.nodepool_name, "extra-ips");
    assert!(!c.create_nodepool);
    assert_eq!(c.consistency_wait, Duration::from_secs(5));
    assert_eq!(c.subnet_mode, SubnetMode::Pods);
    assert_eq!(c.cidr_pool.len(), 2);
    assert_eq!((c.vpc_cidr_prefix, c.subnet_prefix), (18, 21));
    assert!(c.dry_run);
    assert_eq!(c.max_managed_cidrs, 3);
    assert_eq!(c.vpc_cidr_quota, 10);
    assert_eq!(c.node_role.as_deref(), Some("NodeRole"));
    assert_eq!(c.security_group_ids, vec!["sg-1", "sg-2"]);
    assert_eq!(c.nodeclass_ready_timeout, Duration::ZERO);
}

#[test]
fn refuses_the_default_nodeclass() {
    let err = config(&[("NODECLASS_NAME", "default")]).unwrap_err();
    assert!(err.to_string().contains("EKS manages the `default` NodeClass"), "{err}");
    assert!(!err.is_retryable());
}

#[test]
fn rejects_invalid_values_naming_the_setting() {
    assert_eq!(rejected_setting(&[("SUBNET_MODE", "both")]), "SUBNET_MODE");
    assert_eq!(rejected_setting(&[("CIDR_POOL", "100.64.0.0/33")]), "CIDR_POOL");
    assert_eq!(rejected_setting(&[("CIDR_POOL", "100.64.0.1/16")]), "CIDR_POOL");
    assert_eq!(rejected_setting(&[("CIDR_POOL", "100.64.0.0/20")]), "CIDR_POOL");
    assert_eq!(rejected_setting(&[("VPC_CIDR_PREFIX", "15")]), "VPC_CIDR_PREFIX");
    assert_eq!(rejected_setting(&[("VPC_CIDR_PREFIX", "sixteen")]), "VPC_CIDR_PREFIX");
    assert_eq!(rejected_setting(&[("SUBNET_PREFIX", "16")]), "SUBNET_PREFIX");
    assert_eq!(rejected_setting(&[("SUBNET_PREFIX", "29")]), "SUBNET_PREFIX");
    assert_eq!(rejected_setting(&[("CREATE_NODEPOOL", "maybe")]), "CREATE_NODEPOOL");
    assert_eq!(rejected_setting(&[("MIN_FREE_IPS_PER_AZ", "-1")]), "MIN_FREE_IPS_PER_AZ");
    assert_eq!(rejected_setting(&[("DRY_RUN", "maybe")]), "DRY_RUN");
    assert_eq!(rejected_setting(&[("METRIC_NAMESPACE", "AWS/EC2")]), "METRIC_NAMESPACE");
    assert_eq!(rejected_setting(&[("MANAGED_TAG_KEY", "aws:cluster")]), "MANAGED_TAG_KEY");
    assert_eq!(rejected_setting(&[("VPC_CIDR_QUOTA", "51")]), "VPC_CIDR_QUOTA");
    assert_eq!(rejected_setting(&[("CLUSTER_NAME", "bad name")]), "CLUSTER_NAME");
    assert_eq!(rejected_setting(&[("NODECLASS_NAME", "Upper")]), "NODECLASS_NAME");
    assert_eq!(rejected_setting(&[("NODEPOOL_NAME", "system")]), "NODEPOOL_NAME");
    assert_eq!(rejected_setting(&[("SECURITY_GROUP_IDS", "default")]), "SECURITY_GROUP_IDS");
}

#[test]
fn settings_that_can_never_converge_are_refused_at_start() {
    // A /27 or /28 subnet can never hold 16 free prefixes: every run would add another.
    for prefix in ["27", "28"] {
        let err = config(&[("SUBNET_PREFIX", prefix)]).unwrap_err();
        assert!(matches!(err, SettingsError::Config { setting: "SUBNET_PREFIX", .. }), "{err}");
        assert!(err.to_string().contains("MIN_FREE_PREFIXES_PER_AZ"), "{err}");
        assert!(!err.is_retryable());
    }
    // A /24 holds 14 prefixes: fine once the thresholds ask no more than it holds.
    assert_eq!(rejected_setting(&[("SUBNET_PREFIX", "24")]), "SUBNET_PREFIX");
    config(&[("SUBNET_PREFIX", "24"), ("MIN_FREE_IPS_PER_AZ", "200"), ("MIN_FREE_PREFIXES_PER_AZ", "8")]).unwrap();
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn opt_in_tags_are_key_value_pairs() {
    let c = config(&[("CLUSTER_OPT_IN_TAG", " headroom.io/enabled = true "), ("VPC_OPT_IN_TAG", "team=net")]).unwrap();
    let tag = c.cluster_opt_in_tag.clone().unwrap();
    assert_eq!((tag.key.as_str(), tag.value.as_str()), ("headroom.io/enabled", "true"));
    assert!(tag.is_on([("x", "y"), ("headroom.io/enabled", "true")].into_iter()));
    assert!(!tag.is_on([("headroom.io/enabled", "True")].into_iter()), "values are case-sensitive, as in IAM");
    assert_eq!(c.vpc_opt_in_tag.unwrap().to_string(), "team=net");
    assert!(config(&[]).unwrap().cluster_opt_in_tag.is_none());
    for bad in ["headroom.io/enabled", "=true", "aws:foo=bar"] {
        assert_eq!(rejected_setting(&[("CLUSTER_OPT_IN_TAG", bad)]), "CLUSTER_OPT_IN_TAG", "{bad}");
    }
    assert_eq!(rejected_setting(&[("MAX_CONCURRENT_CLUSTERS", "0")]), "MAX_CONCURRENT_CLUSTERS");
    assert_eq!(rejected_setting(&[("IPAM_POOL_ID", "pool-1")]), "IPAM_POOL_ID");
}

#[test]
fn the_fix_for_an_unmanaged_cluster_names_both_ways_in() {
    let listed = config(&[("CLUSTER_NAME", "a,b")]).unwrap();
    assert_eq!(listed.how_to_manage(), "add it to CLUSTER_NAME (\"a,b\")");
    let tagged = config(&[("CLUSTER_NAME", "a"), ("CLUSTER_OPT_IN_TAG", "headroom.io/enabled=true")]).unwrap();
    assert_eq!(tagged.how_to_manage(), "tag the cluster headroom.io/enabled=true or add it to CLUSTER_NAME (\"a\")");
}

#[test]
fn cluster_tags_override_thresholds_and_names() {
    let base = config(&[]).unwrap();
    let same = base.for_cluster("c", &tags(&[("team", "x"), ("headroom.io/enabled", "true")])).unwrap();
    assert_eq!(same, base, "tags that are not overrides change nothing");

    let over = base
        .for_cluster(
            "c",
            &tags(&[
                (TAG_MIN_FREE_IPS_PER_AZ, "2000"),
                (TAG_MIN_FREE_PREFIXES_PER_AZ, "64"),
                (TAG_NODECLASS, "wide"),
                (TAG_NODEPOOL, "wide-pool"),
            ]),
        )
        .unwrap();
    assert_eq!(over.thresholds, Thresholds { min_free_ips_per_az: 2000, min_free_prefixes_per_az: 64 });
    assert_eq!((over.nodeclass_name.as_str(), over.nodepool_name.as_str()), ("wide", "wide-pool"));
    assert_eq!(over.cidr_pool, base.cidr_pool, "only the documented settings are overridden");
}

#[test]
fn a_bad_override_names_the_cluster_and_the_tag() {
    let base = config(&[]).unwrap();
    for (tag, value) in [
        (TAG_MIN_FREE_IPS_PER_AZ, "lots"),
        (TAG_NODECLASS, "default"),
        (TAG_NODEPOOL, "system"),
        (TAG_NODECLASS, "Not_A_Name"),
        // A /19 holds 510 free prefixes: asking for more can never converge.
        (TAG_MIN_FREE_PREFIXES_PER_AZ, "600"),
    ] {
        match base.for_cluster("c1", &tags(&[(tag, value)])) {
            Err(error @ SettingsError::ClusterTag { .. }) => {
                let message = error.to_string();
                assert!(message.contains("\"c1\"") && message.contains(tag), "{message}");
                assert!(!error.is_retryable());
            }
            other => panic!("{tag}={value}: expected a ClusterTag error, got {other:?}"),
        }
    }
}

/// The README documents, and the SAM template passes, every setting.
#[test]
fn every_setting_is_documented_and_deployed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let template = std::fs::read_to_string(root.join("infra/template.yaml")).unwrap();
    for setting in SETTINGS {
        assert!(readme.contains(&format!("| `{}` |", setting.name)), "README.md lacks {}", setting.name);
        assert!(
            template.contains(&format!("        {}: ", setting.name)),
            "infra/template.yaml lacks {}",
            setting.name
        );
    }
}

#[test]
fn blank_values_take_the_default() {
    let c = config(&[("SUBNET_PREFIX", "  "), ("CIDR_POOL", "")]).unwrap();
    assert_eq!(c.subnet_prefix, 19);
    assert_eq!(c.cidr_pool.len(), 1);
}

#[test]
fn forecast_settings_are_checked_at_start() {
    let defaults = config(&[]).unwrap();
    assert_eq!((defaults.expand_ahead_hours, defaults.forecast_window_hours), (24, 6));
    let off = config(&[("EXPAND_AHEAD_HOURS", "0")]).unwrap();
    assert_eq!(off.expand_ahead_hours, 0, "0 turns forecasting off and is valid");
    for (setting, value) in [
        ("EXPAND_AHEAD_HOURS", "169"),
        ("EXPAND_AHEAD_HOURS", "-1"),
        ("EXPAND_AHEAD_HOURS", "1.5"),
        ("FORECAST_WINDOW_HOURS", "0"),
        ("FORECAST_WINDOW_HOURS", "73"),
        ("FORECAST_WINDOW_HOURS", "six"),
    ] {
        assert_eq!(rejected_setting(&[(setting, value)]), setting, "{setting}={value}");
    }
}
