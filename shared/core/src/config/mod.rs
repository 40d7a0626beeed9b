//! Settings: what they are ([`Config`]), the documented table
//! ([`settings`]), reading and validating them ([`parse`], [`validate`]),
//! and the cluster tags that override some of them ([`cluster_tags`]).
//!
//! Read once per process from the environment. [`Config::from_lookup`] is
//! pure (it takes a lookup function), so every rule is unit-tested without
//! touching the process environment; the handlers call [`Config::from_env`]
//! once at start-up. Nothing here reads anything else.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::Result;

pub mod cluster_tags;
pub mod parse;
pub mod settings;
pub mod validate;

pub use cluster_tags::{
    OVERRIDE_TAGS, TAG_MIN_FREE_IPS_PER_AZ, TAG_MIN_FREE_PREFIXES_PER_AZ, TAG_NODECLASS, TAG_NODEPOOL,
};
pub use settings::{DEFAULT_NODECLASS_NAME, DEFAULT_NODEPOOL_NAME, SETTINGS, Setting};
pub use validate::validate_cluster_name;

/// Where the new subnets go in the NodeClass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubnetMode {
    /// `subnetSelectorTerms`: nodes and their pods use the new subnets.
    Nodes,
    /// `podSubnetSelectorTerms` + `podSecurityGroupSelectorTerms`: only pods do.
    Pods,
}

impl FromStr for SubnetMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nodes" => Ok(SubnetMode::Nodes),
            "pods" => Ok(SubnetMode::Pods),
            _ => Err("must be `nodes` or `pods`".into()),
        }
    }
}

impl fmt::Display for SubnetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubnetMode::Nodes => "nodes",
            SubnetMode::Pods => "pods",
        })
    }
}

/// Free capacity below which an AZ needs more address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    pub min_free_ips_per_az: u64,
    pub min_free_prefixes_per_az: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Clusters this deployment manages. Empty: the event must name one.
    pub clusters: Vec<String>,
    pub nodeclass_name: String,
    /// The NodePool created for the NodeClass when no NodePool references it
    /// (and `create_nodepool`); never modified.
    pub nodepool_name: String,
    /// Whether headroom may create `nodepool_name`. Without it, a NodePool
    /// that references the NodeClass must exist, or headroom refuses to act.
    pub create_nodepool: bool,
    pub subnet_mode: SubnetMode,
    pub cidr_pool: Vec<Ipv4Net>,
    pub vpc_cidr_prefix: u8,
    pub subnet_prefix: u8,
    pub thresholds: Thresholds,
    /// Expand when an AZ is forecast to cross a threshold within this many
    /// hours; 0 turns forecasting off ([`crate::forecast`]).
    pub expand_ahead_hours: u64,
    /// The history the forecast reads, in hours.
    pub forecast_window_hours: u64,
    pub dry_run: bool,
    pub metric_namespace: String,
    /// Subnets headroom creates carry `<managed_tag_key>=<cluster name>`.
    pub managed_tag_key: String,
    pub max_managed_cidrs: u32,
    /// IPv4 CIDR blocks per VPC, primary included (AWS default 5, up to 50).
    pub vpc_cidr_quota: u32,
    /// Fallbacks for a new NodeClass when the `default` NodeClass is absent.
    pub node_role: Option<String>,
    pub security_group_ids: Vec<String>,
    pub association_timeout: Duration,
    pub nodeclass_ready_timeout: Duration,
    /// How long an `Invalid…ID.NotFound` answer about a resource this run
    /// created or just read is retried (EC2 is eventually consistent).
    pub consistency_wait: Duration,
    /// The SNS topic told about every change and refusal; `None`: nobody.
    pub notify_topic_arn: Option<String>,
    /// The VPC the stack's IAM policy allows changes in; a cluster in another
    /// VPC is a failed run with the fix, not a string of access denials.
    pub vpc_id: Option<String>,
    /// The functions' own role, for `iam:SimulatePrincipalPolicy` in the
    /// preflight; `None`: those checks are reported as not verified.
    pub function_role_arn: Option<String>,
    /// Publish per-subnet metrics too (per AZ and per cluster always).
    pub publish_subnet_metrics: bool,
    /// Clusters carrying this tag are managed too, besides `clusters`.
    pub cluster_opt_in_tag: Option<Tag>,
    /// A VPC must carry this tag before headroom changes it (the stack's IAM
    /// policy allows changes only there); `None`: not checked.
    pub vpc_opt_in_tag: Option<Tag>,
    /// How many clusters one invocation reads and remediates at once.
    pub max_concurrent_clusters: usize,
    /// The IPv4 IPAM pool VPC CIDRs are allocated from; `None`: from `cidr_pool`.
    pub ipam_pool_id: Option<String>,
    /// With a prefix, the capacity check keeps each managed cluster's two
    /// capacity alarms (the shell's `aws::alarms`); `None`: the template's.
    pub capacity_alarm_prefix: Option<String>,
    /// The cluster whose capacity alarms the template declares; the capacity
    /// check keeps none for it.
    pub capacity_alarms_in_template: Option<String>,
    /// What a capacity alarm invokes (the on-alarm function).
    pub capacity_alarm_action_arn: Option<String>,
    pub capacity_alarm_period_seconds: i32,
}

/// A `key=value` tag setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl Tag {
    /// Whether `tags` holds this tag (keys exact, values exact).
    pub fn is_on<'a>(&self, mut tags: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
        tags.any(|(key, value)| key == self.key && value == self.value)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::from_lookup(|_| None).expect("the built-in defaults are valid")
    }
}

impl Config {
    pub fn from_env() -> Result<Self> {
        Config::from_lookup(|key| std::env::var(key).ok())
    }

    /// Settings from `pairs`, the others at their defaults (unit tests here
    /// and in the shell).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Config> {
        Config::from_lookup(|key| pairs.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| v.to_string()))
    }

    /// What makes a cluster managed by this deployment, phrased as the fix
    /// for one that is not.
    pub fn how_to_manage(&self) -> String {
        let listed = format!("add it to CLUSTER_NAME ({:?})", self.clusters.join(","));
        match &self.cluster_opt_in_tag {
            Some(tag) => format!("tag the cluster {tag} or {listed}"),
            None => listed,
        }
    }
}

#[cfg(test)]
mod tests;
