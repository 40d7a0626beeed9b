//! Which rules would refuse traffic to pods in a new block. Pure.
//!
//! A security-group rule or network ACL entry that admits the VPC's own
//! CIDRs (a database's group that allows `192.168.0.0/16`, say) does not
//! admit a new `100.64.0.0/16` block: pods placed there are refused. This is
//! a warning, never a refusal: the rule's owner decides. The plan, the
//! report and the notification list every such rule, dry runs included.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::cidr::overlaps;
use crate::model::{AllowRule, NetworkSnapshot};

/// One rule that admits the VPC's existing CIDRs but not a new block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReachabilityWarning {
    #[serde(flatten)]
    pub rule: AllowRule,
    /// The new blocks it leaves out.
    pub excludes: Vec<Ipv4Net>,
}

/// The rules of `snapshot` that cover some existing VPC CIDR but not every
/// one of `new_blocks`, in a stable order.
pub fn warnings(snapshot: &NetworkSnapshot, new_blocks: &[Ipv4Net]) -> Vec<ReachabilityWarning> {
    if new_blocks.is_empty() {
        return Vec::new();
    }
    let existing: Vec<Ipv4Net> = snapshot
        .vpc
        .cidr_associations
        .iter()
        .filter(|a| a.state.is_live())
        .map(|a| a.cidr)
        .filter(|c| !new_blocks.iter().any(|b| overlaps(*b, *c)))
        .collect();
    let mut found: Vec<ReachabilityWarning> = snapshot
        .allow_rules
        .iter()
        .filter(|rule| existing.iter().any(|c| overlaps(rule.cidr, *c)))
        .filter_map(|rule| {
            let excludes: Vec<Ipv4Net> = new_blocks.iter().copied().filter(|b| !rule.cidr.contains(b)).collect();
            (!excludes.is_empty()).then(|| ReachabilityWarning { rule: rule.clone(), excludes })
        })
        .collect();
    found.sort_by(|a, b| a.rule.cmp(&b.rule));
    found.dedup();
    found
}

impl std::fmt::Display for ReachabilityWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let blocks: Vec<String> = self.excludes.iter().map(ToString::to_string).collect();
        let way = match self.rule.direction {
            crate::model::Direction::Ingress => "from",
            crate::model::Direction::Egress => "to",
        };
        write!(
            f,
            "{} allows {} {way} {} but not {way} {}: pods there would be refused",
            self.rule.holder,
            self.rule.rule,
            self.rule.cidr,
            blocks.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CidrAssociation, CidrState, Direction};

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn rule(holder: &str, cidr: &str, direction: Direction) -> AllowRule {
        AllowRule { holder: holder.into(), rule: "tcp 5432".into(), direction, cidr: net(cidr) }
    }

    fn snapshot(rules: Vec<AllowRule>) -> NetworkSnapshot {
        let mut s = crate::fixtures::lab();
        s.vpc.cidr_associations.push(CidrAssociation {
            association_id: "a".into(),
            cidr: net("100.64.0.0/16"),
            state: CidrState::Associated,
            status_message: None,
        });
        s.allow_rules = rules;
        s
    }

    #[test]
    fn a_rule_for_the_vpc_cidr_only_is_reported_and_wider_rules_are_not() {
        let s = snapshot(vec![
            rule("sg-db (database)", "192.168.0.0/16", Direction::Ingress),
            rule("sg-web", "0.0.0.0/0", Direction::Ingress),
            rule("sg-peer", "172.20.0.0/16", Direction::Ingress),
            rule("acl-1", "192.168.96.0/19", Direction::Egress),
            rule("sg-wide", "64.0.0.0/2", Direction::Ingress),
        ]);
        let found = warnings(&s, &[net("100.64.0.0/16")]);
        let holders: Vec<&str> = found.iter().map(|w| w.rule.holder.as_str()).collect();
        // 0.0.0.0/0 and 64.0.0.0/2 admit the new block; 172.20/16 is not the VPC's.
        assert_eq!(holders, ["acl-1", "sg-db (database)"]);
        assert_eq!(found[1].excludes, [net("100.64.0.0/16")]);
        assert!(
            found[1]
                .to_string()
                .contains("sg-db (database) allows tcp 5432 from 192.168.0.0/16 but not from 100.64.0.0/16")
        );
        assert!(warnings(&s, &[]).is_empty());
    }
}
