//! Settings, read once per process from the environment and validated.
//!
//! [`Config::from_lookup`] is pure (it takes a lookup function), so every rule
//! is unit-tested without touching the process environment; the handlers call
//! [`Config::from_env`] once at start-up.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
    /// capacity alarms ([`crate::aws::alarms`]); `None`: the template's.
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

/// One documented setting: name, default, meaning. The README table is
/// checked against this list by a test.
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

pub const DEFAULT_NODECLASS_NAME: &str = "headroom";
pub const DEFAULT_NODEPOOL_NAME: &str = "headroom";

pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "CLUSTER_NAME",
        default: "",
        meaning: "Comma-separated EKS cluster names this deployment manages. Empty: every event must name its cluster.",
    },
    Setting {
        name: "NODECLASS_NAME",
        default: DEFAULT_NODECLASS_NAME,
        meaning: "The custom NodeClass headroom creates or extends. `default` is refused: EKS manages it.",
    },
    Setting {
        name: "NODEPOOL_NAME",
        default: DEFAULT_NODEPOOL_NAME,
        meaning: "The NodePool headroom creates, referencing the NodeClass, when no NodePool references it. Never modified; `general-purpose` and `system` are refused.",
    },
    Setting {
        name: "CREATE_NODEPOOL",
        default: "true",
        meaning: "`false`: never create a NodePool. A NodePool that references NODECLASS_NAME must then exist, or headroom refuses to expand: a NodeClass no NodePool uses launches no node.",
    },
    Setting {
        name: "SUBNET_MODE",
        default: "nodes",
        meaning: "`nodes`: new subnets go to `subnetSelectorTerms`. `pods`: to `podSubnetSelectorTerms` with `podSecurityGroupSelectorTerms`.",
    },
    Setting {
        name: "CIDR_POOL",
        default: "100.64.0.0/10",
        meaning: "Comma-separated IPv4 ranges secondary VPC CIDRs are carved from.",
    },
    Setting { name: "VPC_CIDR_PREFIX", default: "16", meaning: "Prefix length of each secondary VPC CIDR (16-28)." },
    Setting {
        name: "SUBNET_PREFIX",
        default: "19",
        meaning: "Prefix length of each new subnet; longer than VPC_CIDR_PREFIX, at most 28. A new subnet must clear both thresholds on its own, or the setting is refused at start (a /27 or /28 never holds 16 free prefixes).",
    },
    Setting {
        name: "MIN_FREE_IPS_PER_AZ",
        default: "512",
        meaning: "An AZ with fewer free IPs than this across the subnets its nodes and pods use gets more space.",
    },
    Setting {
        name: "MIN_FREE_PREFIXES_PER_AZ",
        default: "16",
        meaning: "An AZ with fewer free aligned /28 blocks than this gets more space (fragmentation).",
    },
    Setting {
        name: "DRY_RUN",
        default: "false",
        meaning: "Plan and report, change nothing, whatever the event says: with `true`, a manual `{\"dryRun\": false}` is answered as a dry run (the report's `dryRunHeld` says so). With `false`, a manual event's `dryRun` decides per invocation.",
    },
    Setting { name: "METRIC_NAMESPACE", default: "Headroom", meaning: "CloudWatch namespace of the capacity metrics." },
    Setting {
        name: "MANAGED_TAG_KEY",
        default: "headroom.io/cluster",
        meaning: "Tag key marking the subnets headroom created; the value is the cluster name, so selectors never reach another cluster's subnets.",
    },
    Setting {
        name: "MAX_MANAGED_CIDRS",
        default: "2",
        meaning: "Most secondary CIDRs from CIDR_POOL headroom will have associated with one VPC.",
    },
    Setting {
        name: "VPC_CIDR_QUOTA",
        default: "5",
        meaning: "The account's IPv4 CIDR blocks per VPC quota, primary included (AWS default 5).",
    },
    Setting {
        name: "NODE_ROLE",
        default: "",
        meaning: "IAM role for a new NodeClass when the `default` NodeClass is absent.",
    },
    Setting {
        name: "SECURITY_GROUP_IDS",
        default: "",
        meaning: "Comma-separated security groups for a new NodeClass when the `default` NodeClass is absent. Empty: the cluster security group.",
    },
    Setting {
        name: "ASSOCIATION_TIMEOUT_SECONDS",
        default: "120",
        meaning: "How long to wait for a new VPC CIDR to become `associated`.",
    },
    Setting {
        name: "NODECLASS_READY_TIMEOUT_SECONDS",
        default: "60",
        meaning: "How long to wait for the NodeClass status to list the new subnets.",
    },
    Setting {
        name: "NOTIFY_TOPIC_ARN",
        default: "",
        meaning: "SNS topic that gets one message per change, refusal or failure (Amazon Q Developer custom-notification format). Empty: no messages.",
    },
    Setting {
        name: "VPC_ID",
        default: "",
        meaning: "The VPC the deployment's IAM policy covers. A cluster in another VPC fails at once with the fix, instead of with access denials. Empty: not checked.",
    },
    Setting {
        name: "FUNCTION_ROLE_ARN",
        default: "",
        meaning: "The functions' own IAM role, which the preflight asks IAM about (`iam:SimulatePrincipalPolicy`) for the writes EC2 cannot dry-run. Empty: those checks are reported as not verified.",
    },
    Setting {
        name: "PUBLISH_SUBNET_METRICS",
        default: "true",
        meaning: "`false`: publish per-AZ and per-cluster metrics only, not per subnet (fewer custom metrics in large accounts; docs/operations.md).",
    },
    Setting {
        name: "CLUSTER_OPT_IN_TAG",
        default: "",
        meaning: "`key=value`: every EKS Auto Mode cluster in the account and Region with this tag is managed too, besides CLUSTER_NAME (the template sets `headroom.io/enabled=true`). Cluster tags can override the thresholds, NodeClass and NodePool (docs/deploy.md). Empty: CLUSTER_NAME only.",
    },
    Setting {
        name: "VPC_OPT_IN_TAG",
        default: "",
        meaning: "`key=value` a VPC must carry before headroom changes it; the template's IAM policy allows changes only in VPCs with it, so a cluster in another VPC fails at once with the fix. Empty: not checked.",
    },
    Setting {
        name: "MAX_CONCURRENT_CLUSTERS",
        default: "4",
        meaning: "How many clusters one invocation reads and remediates at once (1-64). One cluster's failure never stops the others.",
    },
    Setting {
        name: "IPAM_POOL_ID",
        default: "",
        meaning: "An IPv4 VPC IPAM pool (`ipam-pool-…`): new VPC CIDRs are allocated from it (`Ipv4IpamPoolId`, `/VPC_CIDR_PREFIX`) instead of carved from CIDR_POOL. Empty: CIDR_POOL.",
    },
    Setting {
        name: "CAPACITY_ALARM_PREFIX",
        default: "",
        meaning: "Set: the capacity check keeps two capacity alarms for every cluster it manages, `<prefix>.<cluster>-min-az-free-ip-addresses` and `…-min-az-free-prefixes`, at that cluster's own thresholds (the template sets the stack name). No dot in the prefix: the first dot ends it, so IAM can grant `<prefix>.*` without matching a longer prefix's alarms. Empty: the template's alarms only.",
    },
    Setting {
        name: "CAPACITY_ALARMS_IN_TEMPLATE",
        default: "",
        meaning: "A cluster whose two capacity alarms the template declares (the first of `ClusterNames`): the capacity check keeps none for it. Empty: none.",
    },
    Setting {
        name: "CAPACITY_ALARM_ACTION_ARN",
        default: "",
        meaning: "What those alarms invoke in ALARM, besides NOTIFY_TOPIC_ARN: the on-alarm function's ARN.",
    },
    Setting {
        name: "CAPACITY_ALARM_PERIOD_SECONDS",
        default: "300",
        meaning: "Period of those alarms: 60, 300, 900 or 3600, no shorter than the capacity check's schedule.",
    },
    Setting {
        name: "CONSISTENCY_WAIT_SECONDS",
        default: "30",
        meaning: "How long an `Invalid…ID.NotFound` answer about a resource this run created or just read is retried: EC2 is eventually consistent.",
    },
];

fn default_of(name: &str) -> &'static str {
    SETTINGS.iter().find(|s| s.name == name).map(|s| s.default).unwrap_or("")
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
            validate_cluster_name(cluster).map_err(|reason| Error::Config {
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

    /// Settings from `pairs`, the others at their defaults: for unit tests.
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Result<Config> {
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

    /// One cluster's settings: these, with the overrides its tags hold
    /// ([`OVERRIDE_TAGS`]). A bad value is an error for that cluster only.
    pub fn for_cluster(&self, cluster: &str, tags: &BTreeMap<String, String>) -> Result<Config> {
        let mut config = self.clone();
        let bad = |tag: &'static str, value: &str, reason: String| Error::ClusterTag {
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
            && let Err(Error::Config { reason, .. }) = check_convergence(config.subnet_prefix, config.thresholds)
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

fn check_nodeclass_name(name: &str) -> std::result::Result<(), String> {
    validate_object_name(name)?;
    if name == "default" {
        return Err(
            "EKS manages the `default` NodeClass and resets changes to it; name a custom NodeClass such as `headroom`"
                .into(),
        );
    }
    Ok(())
}

fn check_nodepool_name(name: &str) -> std::result::Result<(), String> {
    validate_object_name(name)?;
    if name == "general-purpose" || name == "system" {
        return Err("built-in NodePools are managed by EKS; name a custom NodePool such as `headroom`".into());
    }
    Ok(())
}

/// Refuses settings under which expanding can never bring an AZ back above
/// its thresholds, so that every run would add another subnet: one new,
/// empty subnet must clear both thresholds. (Whether one VPC CIDR holds a
/// subnet for each of the cluster's AZs depends on the cluster; the planner
/// checks it before anything is associated.)
fn check_convergence(subnet_prefix: u8, thresholds: Thresholds) -> Result<()> {
    let subnet = Ipv4Net::new(std::net::Ipv4Addr::UNSPECIFIED, subnet_prefix).expect("prefix checked");
    let empty = crate::capacity::subnet_capacity(subnet, &crate::capacity::AddressUsage::default());
    if empty.free_ips < thresholds.min_free_ips_per_az || empty.free_prefixes < thresholds.min_free_prefixes_per_az {
        return Err(invalid(
            "SUBNET_PREFIX",
            &subnet_prefix.to_string(),
            format!(
                "a new /{subnet_prefix} subnet holds {} free IPs and {} free /28 prefixes, below MIN_FREE_IPS_PER_AZ ({}) \
                 or MIN_FREE_PREFIXES_PER_AZ ({}), so no expansion could ever clear them; use a shorter SUBNET_PREFIX \
                 (the default /19 holds 8,187 IPs and 510 prefixes) or lower the thresholds",
                empty.free_ips,
                empty.free_prefixes,
                thresholds.min_free_ips_per_az,
                thresholds.min_free_prefixes_per_az
            ),
        ));
    }
    Ok(())
}

fn invalid(setting: &'static str, value: &str, reason: impl Into<String>) -> Error {
    Error::Config { setting, value: value.to_string(), reason: reason.into() }
}

fn list(value: &str) -> Vec<String> {
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

/// EKS cluster names: 1-100 characters, alphanumerics, `-` and `_`, starting alphanumeric.
pub fn validate_cluster_name(name: &str) -> std::result::Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err("EKS cluster names are 1-100 letters, digits, `-` or `_`, starting with a letter or digit".into())
    }
}

/// Kubernetes object names (RFC 1123 subdomain).
fn validate_object_name(name: &str) -> std::result::Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if valid {
        Ok(())
    } else {
        Err("Kubernetes names are lowercase letters, digits, `-` and `.`, starting and ending alphanumeric".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        Config::from_pairs(pairs)
    }

    fn rejected_setting(pairs: &[(&str, &str)]) -> &'static str {
        match config(pairs) {
            Err(Error::Config { setting, .. }) => setting,
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
            assert!(matches!(err, Error::Config { setting: "SUBNET_PREFIX", .. }), "{err}");
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
        let c =
            config(&[("CLUSTER_OPT_IN_TAG", " headroom.io/enabled = true "), ("VPC_OPT_IN_TAG", "team=net")]).unwrap();
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
        assert_eq!(
            tagged.how_to_manage(),
            "tag the cluster headroom.io/enabled=true or add it to CLUSTER_NAME (\"a\")"
        );
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
                Err(error @ Error::ClusterTag { .. }) => {
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
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
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
}
