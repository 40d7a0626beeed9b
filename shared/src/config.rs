//! Settings, read once per process from the environment and validated.
//!
//! [`Config::from_lookup`] is pure (it takes a lookup function), so every rule
//! is unit-tested without touching the process environment; the handlers call
//! [`Config::from_env`] once at start-up.

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
        meaning: "Plan and report, change nothing. A manual event's `dryRun` overrides it per invocation.",
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
        validate_object_name(&nodeclass_name).map_err(|reason| invalid(setting, &nodeclass_name, reason))?;
        if nodeclass_name == "default" {
            return Err(invalid(
                setting,
                &nodeclass_name,
                "EKS manages the `default` NodeClass and resets changes to it; name a custom NodeClass such as `headroom`",
            ));
        }

        let (setting, nodepool_name) = get("NODEPOOL_NAME");
        validate_object_name(&nodepool_name).map_err(|reason| invalid(setting, &nodepool_name, reason))?;
        if nodepool_name == "general-purpose" || nodepool_name == "system" {
            return Err(invalid(
                setting,
                &nodepool_name,
                "built-in NodePools are managed by EKS; name a custom NodePool such as `headroom`",
            ));
        }
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
        })
    }

    /// The cluster to act on: the one the event names (which must be
    /// configured when a list is configured), else the only configured one.
    pub fn resolve_cluster(&self, named: Option<&str>) -> Result<String> {
        match (named, self.clusters.as_slice()) {
            (Some(name), []) => Ok(name.to_string()),
            (Some(name), configured) if configured.iter().any(|c| c == name) => Ok(name.to_string()),
            (Some(name), configured) => {
                Err(Error::UnmanagedCluster { cluster: name.to_string(), configured: configured.join(",") })
            }
            (None, [only]) => Ok(only.clone()),
            (None, []) => Err(Error::NoCluster),
            (None, configured) => Err(Error::InvalidEvent(format!(
                "the event names no cluster and several are configured ({}); pass \"clusterName\"",
                configured.join(",")
            ))),
        }
    }
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
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| env.get(k).cloned())
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

    #[test]
    fn resolves_the_cluster_to_act_on() {
        let none = config(&[]).unwrap();
        assert_eq!(none.resolve_cluster(Some("x")).unwrap(), "x");
        assert!(matches!(none.resolve_cluster(None), Err(Error::NoCluster)));

        let one = config(&[("CLUSTER_NAME", "demo")]).unwrap();
        assert_eq!(one.resolve_cluster(None).unwrap(), "demo");
        assert!(matches!(one.resolve_cluster(Some("other")), Err(Error::UnmanagedCluster { .. })));

        let two = config(&[("CLUSTER_NAME", "a,b")]).unwrap();
        assert_eq!(two.resolve_cluster(Some("b")).unwrap(), "b");
        assert!(matches!(two.resolve_cluster(None), Err(Error::InvalidEvent(_))));
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
