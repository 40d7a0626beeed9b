//! Per-cluster overrides: cluster tags that replace a setting for that
//! cluster alone. A bad tag is an error for that cluster only.

use std::collections::BTreeMap;

use super::Config;
use super::validate::{check_convergence, check_nodeclass_name, check_nodepool_name};
use crate::error::{Result, SettingsError};

pub const TAG_MIN_FREE_IPS_PER_AZ: &str = "headroom.io/min-free-ips-per-az";
pub const TAG_MIN_FREE_PREFIXES_PER_AZ: &str = "headroom.io/min-free-prefixes-per-az";
pub const TAG_NODECLASS: &str = "headroom.io/nodeclass";
pub const TAG_NODEPOOL: &str = "headroom.io/nodepool";

/// Cluster tags that override a setting for that cluster, with the setting.
pub const OVERRIDE_TAGS: &[(&str, &str)] = &[
    (TAG_MIN_FREE_IPS_PER_AZ, "MIN_FREE_IPS_PER_AZ"),
    (TAG_MIN_FREE_PREFIXES_PER_AZ, "MIN_FREE_PREFIXES_PER_AZ"),
    (TAG_NODECLASS, "NODECLASS_NAME"),
    (TAG_NODEPOOL, "NODEPOOL_NAME"),
];

impl Config {
    /// One cluster's settings: these, with the overrides its tags hold
    /// ([`OVERRIDE_TAGS`]). A bad value is an error for that cluster only.
    pub fn for_cluster(&self, cluster: &str, tags: &BTreeMap<String, String>) -> Result<Config> {
        let mut config = self.clone();
        let bad = |tag: &'static str, value: &str, reason: String| SettingsError::ClusterTag {
            cluster: cluster.to_string(),
            tag,
            value: value.to_string(),
            reason,
        };
        let number = |tag: &'static str, value: &str| {
            value.trim().parse::<u64>().map_err(|_| bad(tag, value, "must be a non-negative whole number".into()))
        };
        for &(tag, _) in OVERRIDE_TAGS {
            let Some(value) = tags.get(tag) else { continue };
            match tag {
                TAG_MIN_FREE_IPS_PER_AZ => config.thresholds.min_free_ips_per_az = number(tag, value)?,
                TAG_MIN_FREE_PREFIXES_PER_AZ => config.thresholds.min_free_prefixes_per_az = number(tag, value)?,
                TAG_NODECLASS => {
                    check_nodeclass_name(value).map_err(|reason| bad(tag, value, reason))?;
                    config.nodeclass_name = value.clone();
                }
                TAG_NODEPOOL => {
                    check_nodepool_name(value).map_err(|reason| bad(tag, value, reason))?;
                    config.nodepool_name = value.clone();
                }
                _ => unreachable!("every override tag is handled"),
            }
        }
        if config.thresholds != self.thresholds
            && let Err(SettingsError::Config { reason, .. }) =
                check_convergence(config.subnet_prefix, config.thresholds)
        {
            let tag = if config.thresholds.min_free_ips_per_az != self.thresholds.min_free_ips_per_az {
                TAG_MIN_FREE_IPS_PER_AZ
            } else {
                TAG_MIN_FREE_PREFIXES_PER_AZ
            };
            return Err(bad(tag, tags.get(tag).map_or("", String::as_str), reason));
        }
        Ok(config)
    }
}
