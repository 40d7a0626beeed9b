//! Which faults the proxy injects, and into which calls.

use headroom::rng::SplitMix64;

/// What the proxy does to a call instead of (or on top of) forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Answer with the service's throttling error, without forwarding:
    /// EC2 `503 RequestLimitExceeded`, CloudWatch `400 Throttling` (awsQuery,
    /// or RPCv2-CBOR with the code in `x-amzn-query-error`), restJson (EKS)
    /// `429 ThrottlingException`.
    Throttle,
    /// Answer `500` with the service's internal-error shape, without forwarding.
    ServerError,
    /// Close the connection without a response; moto never sees the call.
    DropBeforeForward,
    /// Forward the call and let moto act, then close the connection without a
    /// response: the client cannot know that its call took effect.
    DropAfterForward,
    /// Stands in for the caller having died: answer `400
    /// TestbedClientCrashed` without forwarding. No SDK or headroom retry
    /// classifies it as transient, so code under test stops at once instead
    /// of backing off against an endpoint nobody is calling any more. Every
    /// call after [`FaultProxyHandle::crash_at_nth_mutating`] fires gets it.
    Crashed,
    /// Answer with this service error, in the protocol's shape, without
    /// forwarding: e.g. `Reject { status: 400, code: "InvalidSubnetID.NotFound" }`
    /// (EC2 has not caught up with a new subnet yet) or `Reject { status:
    /// 403, code: "UnauthorizedOperation" }` (the role lacks a permission).
    Reject { status: u16, code: &'static str },
}

/// Which calls a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every call.
    Any,
    /// Calls whose action is exactly this name (e.g. `CreateSubnet`).
    Action(String),
    /// Calls signed for this service (`ec2`, `eks`, `monitoring`).
    Service(String),
    /// Calls for which [`changes_state`] holds.
    Mutating,
}

impl Selector {
    fn matches(&self, service: &str, action: &str, dry_run: bool) -> bool {
        match self {
            Self::Any => true,
            Self::Action(name) => name == action,
            Self::Service(name) => name == service,
            Self::Mutating => changes_state(service, action, dry_run),
        }
    }
}

impl From<&str> for Selector {
    /// `"*"` selects every call, anything else is an action name.
    fn from(value: &str) -> Self {
        if value == "*" { Self::Any } else { Self::Action(value.to_owned()) }
    }
}

impl From<String> for Selector {
    fn from(value: String) -> Self {
        Self::from(value.as_str())
    }
}

pub(super) const MUTATING_PREFIXES: &[&str] = &[
    "Accept",
    "Allocate",
    "Assign",
    "Associate",
    "Attach",
    "Authorize",
    "Cancel",
    "Copy",
    "Create",
    "Delete",
    "Deregister",
    "Detach",
    "Disable",
    "Disassociate",
    "Enable",
    "Import",
    "Modify",
    "Move",
    "Put",
    "Reboot",
    "Register",
    "Reject",
    "Release",
    "Replace",
    "Reset",
    "Revoke",
    "Run",
    "Set",
    "Start",
    "Stop",
    "Tag",
    "Terminate",
    "Unassign",
    "Untag",
    "Update",
];

/// Whether a call changes what headroom manages: a mutating action (see
/// [`is_mutating`]) that is not a dry run, and not CloudWatch's or SNS's,
/// whose data points and messages are how headroom reports, not changes it
/// makes.
pub fn changes_state(service: &str, action: &str, dry_run: bool) -> bool {
    !dry_run && !matches!(service, "monitoring" | "sns") && is_mutating(action)
}

/// Whether an action changes state in AWS, judged by its verb (the EC2 and
/// EKS naming convention), e.g. `CreateSubnet`, `AssociateVpcCidrBlock`,
/// `ModifySubnetAttribute`, `PutMetricData`. For unidentified calls
/// (`METHOD /path`) any method other than GET/HEAD/OPTIONS counts.
pub fn is_mutating(action: &str) -> bool {
    if let Some((method, rest)) = action.split_once(' ')
        && rest.starts_with('/')
    {
        return !matches!(method, "GET" | "HEAD" | "OPTIONS");
    }
    MUTATING_PREFIXES.iter().any(|prefix| {
        action.strip_prefix(prefix).is_some_and(|rest| rest.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
    })
}

#[derive(Debug)]
pub(super) struct EveryRule {
    pub(super) n: u64,
    pub(super) offset: u64,
    pub(super) seen: u64,
}

#[derive(Debug)]
pub(super) struct FractionRule {
    pub(super) fraction: f64,
    pub(super) rng: SplitMix64,
}

#[derive(Debug)]
pub(super) struct NthRule {
    pub(super) selector: Selector,
    pub(super) n: usize,
    pub(super) seen: usize,
    pub(super) fault: Fault,
    pub(super) fired: bool,
}

/// The fault rules in force, and the crash state.
#[derive(Debug, Default)]
pub(super) struct FaultRules {
    pub(super) throttle_scope: Option<Selector>,
    pub(super) throttle_every: Option<EveryRule>,
    pub(super) throttle_fraction: Option<FractionRule>,
    pub(super) nth_rules: Vec<NthRule>,
    /// `crash_at_nth_mutating`: the rule, and whether it has fired.
    pub(super) crash: Option<NthRule>,
    pub(super) crashed: bool,
}

impl FaultRules {
    /// Picks at most one fault for a call; one-shot rules win over throttling.
    pub(super) fn decide(&mut self, service: &str, action: &str, dry_run: bool) -> Option<Fault> {
        if self.crashed {
            return Some(Fault::Crashed);
        }
        if let Some(crash) = &mut self.crash
            && crash.selector.matches(service, action, dry_run)
        {
            crash.seen += 1;
            if crash.seen >= crash.n {
                crash.fired = true;
                self.crashed = true;
                return Some(crash.fault);
            }
        }
        let mut chosen = None;
        for rule in &mut self.nth_rules {
            if rule.fired || !rule.selector.matches(service, action, dry_run) {
                continue;
            }
            rule.seen += 1;
            // A rule that came due while another fired this call fires on
            // its next matching call instead of being lost.
            if rule.seen >= rule.n && chosen.is_none() {
                rule.fired = true;
                chosen = Some(rule.fault);
            }
        }
        let in_scope = self.throttle_scope.as_ref().is_none_or(|scope| scope.matches(service, action, dry_run));
        if in_scope {
            if let Some(every) = &mut self.throttle_every {
                every.seen += 1;
                if chosen.is_none() && every.seen > every.offset && (every.seen - every.offset) % every.n == 0 {
                    chosen = Some(Fault::Throttle);
                }
            }
            if let Some(fraction) = &mut self.throttle_fraction {
                // Draw for every in-scope call so the sequence only depends
                // on the seed and the call order.
                let draw = fraction.rng.next_f64();
                if chosen.is_none() && draw < fraction.fraction {
                    chosen = Some(Fault::Throttle);
                }
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutating_actions() {
        for action in [
            "CreateSubnet",
            "AssociateVpcCidrBlock",
            "AssociateRouteTable",
            "ModifySubnetAttribute",
            "CreateTags",
            "DeleteSubnet",
            "ReplaceRouteTableAssociation",
            "PutMetricData",
            "RunInstances",
            "UpdateClusterConfig",
            "POST /whatever",
        ] {
            assert!(is_mutating(action), "{action} should be mutating");
        }
        for action in [
            "DescribeVpcs",
            "DescribeSubnets",
            "GetMetricData",
            "ListClusters",
            "DescribeCluster",
            "Create",
            "Putative",
            "GET /clusters/x",
        ] {
            assert!(!is_mutating(action), "{action} should not be mutating");
        }
    }

    #[test]
    fn seeded_fraction_is_reproducible() {
        let draws = |seed| {
            let mut rng = SplitMix64::seeded(seed);
            (0..64).map(|_| rng.next_f64() < 0.3).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let hits = draws(7).iter().filter(|hit| **hit).count();
        assert!((5..=35).contains(&hits), "{hits} of 64 at p=0.3");
    }

    #[test]
    fn throttle_every_counts_from_offset() {
        let mut inner =
            FaultRules { throttle_every: Some(EveryRule { n: 2, offset: 1, seen: 0 }), ..FaultRules::default() };
        let throttled: Vec<bool> = (0..7).map(|_| inner.decide("ec2", "DescribeVpcs", false).is_some()).collect();
        assert_eq!(throttled, [false, false, true, false, true, false, true]);
    }

    #[test]
    fn nth_rules_fire_once_and_do_not_get_lost() {
        let mut inner = FaultRules::default();
        inner.nth_rules.push(NthRule {
            selector: Selector::Mutating,
            n: 1,
            seen: 0,
            fault: Fault::ServerError,
            fired: false,
        });
        inner.nth_rules.push(NthRule {
            selector: "CreateSubnet".into(),
            n: 1,
            seen: 0,
            fault: Fault::DropAfterForward,
            fired: false,
        });
        assert_eq!(inner.decide("ec2", "DescribeVpcs", false), None);
        assert_eq!(inner.decide("ec2", "CreateSubnet", false), Some(Fault::ServerError));
        assert_eq!(inner.decide("ec2", "CreateSubnet", false), Some(Fault::DropAfterForward));
        assert_eq!(inner.decide("ec2", "CreateSubnet", false), None);
    }

    #[test]
    fn a_crash_fires_at_the_kth_mutating_call_and_stops_everything_after() {
        let mut inner = FaultRules {
            crash: Some(NthRule {
                selector: Selector::Mutating,
                n: 2,
                seen: 0,
                fault: Fault::DropAfterForward,
                fired: false,
            }),
            ..FaultRules::default()
        };
        assert_eq!(inner.decide("ec2", "DescribeVpcs", false), None);
        assert_eq!(inner.decide("ec2", "CreateSubnet", false), None);
        assert_eq!(inner.decide("ec2", "DescribeVpcs", false), None);
        assert_eq!(inner.decide("ec2", "CreateSubnet", false), Some(Fault::DropAfterForward));
        assert_eq!(inner.decide("ec2", "DescribeVpcs", false), Some(Fault::Crashed));
        assert_eq!(inner.decide("eks", "DescribeCluster", false), Some(Fault::Crashed));
        assert_eq!(inner.decide("ec2", "AssociateRouteTable", false), Some(Fault::Crashed));
    }
}
