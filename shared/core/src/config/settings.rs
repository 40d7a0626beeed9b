//! The settings table: every setting's name, default and meaning, in the
//! order the README documents them (a test keeps the README in step).

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
        name: "EXPAND_AHEAD_HOURS",
        default: "24",
        meaning: "The capacity check also expands when an AZ's free IPs or free /28s are forecast to fall below their threshold within this many hours (0-168), judged on the trend of the last FORECAST_WINDOW_HOURS of its own metrics (docs/design.md, \"Expanding ahead\"). 0: only a crossed threshold expands.",
    },
    Setting {
        name: "FORECAST_WINDOW_HOURS",
        default: "6",
        meaning: "How many hours of each AZ's `FreeIpAddresses` and `FreePrefixes` the forecast reads (1-72). It needs at least an hour of 5-minute points; with less it forecasts nothing.",
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
        default: "10",
        meaning: "How many clusters one invocation reads and remediates at once (1-64). One cluster's failure never stops the others. 10 runs 20 clusters in about 2.7x the time of one; more gains little and spends EC2's Describe request rate faster (docs/BENCHMARKS.md, \"20 clusters\").",
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

pub(super) fn default_of(name: &str) -> &'static str {
    SETTINGS.iter().find(|s| s.name == name).map(|s| s.default).unwrap_or("")
}
