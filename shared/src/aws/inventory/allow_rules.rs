//! Security group and network ACL rules, read for the reachability check.

use futures::future;
use ipnet::Ipv4Net;

use super::{NETWORK_ACL_PAGE, SECURITY_GROUP_PAGE, filter};
use crate::aws::errors::aws_error;
use crate::error::Result;
use crate::model::{AllowRule, Direction};

/// `tcp 5432`, `udp 1000-2000`, `all traffic`, from an IP protocol and port range.
pub(super) fn describe_traffic(protocol: Option<&str>, from: Option<i32>, to: Option<i32>) -> String {
    let protocol = match protocol.unwrap_or("-1") {
        "-1" | "all" => return "all traffic".into(),
        "6" => "tcp",
        "17" => "udp",
        "1" => "icmp",
        other => other,
    };
    match (from, to) {
        (Some(f), Some(t)) if f == t && f >= 0 => format!("{protocol} {f}"),
        (Some(f), Some(t)) if f >= 0 && t >= 0 => format!("{protocol} {f}-{t}"),
        _ => protocol.to_string(),
    }
}

/// The VPC's security-group ingress rules and network ACL allow entries that
/// name an IPv4 CIDR (docs/design.md, "Reachability").
pub(super) async fn read_allow_rules(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<Vec<AllowRule>> {
    let groups = ec2
        .describe_security_groups()
        .filters(filter("vpc-id", vpc_id))
        .into_paginator()
        .page_size(SECURITY_GROUP_PAGE)
        .items()
        .send()
        .try_collect();
    let acls = ec2
        .describe_network_acls()
        .filters(filter("vpc-id", vpc_id))
        .into_paginator()
        .page_size(NETWORK_ACL_PAGE)
        .items()
        .send()
        .try_collect();
    let (groups, acls) = future::join(groups, acls).await;
    let groups: Vec<aws_sdk_ec2::types::SecurityGroup> = groups.map_err(|e| aws_error("DescribeSecurityGroups", e))?;
    let acls: Vec<aws_sdk_ec2::types::NetworkAcl> = acls.map_err(|e| aws_error("DescribeNetworkAcls", e))?;
    let mut rules = Vec::new();
    for group in &groups {
        let holder = format!("{} ({})", group.group_id().unwrap_or_default(), group.group_name().unwrap_or_default());
        for permission in group.ip_permissions() {
            let traffic = describe_traffic(permission.ip_protocol(), permission.from_port(), permission.to_port());
            for range in permission.ip_ranges() {
                let Some(cidr) = range.cidr_ip().and_then(|c| c.parse::<Ipv4Net>().ok()) else { continue };
                rules.push(AllowRule {
                    holder: holder.clone(),
                    rule: traffic.clone(),
                    direction: Direction::Ingress,
                    cidr: cidr.trunc(),
                });
            }
        }
    }
    for acl in &acls {
        let holder = acl.network_acl_id().unwrap_or_default().to_string();
        for entry in acl.entries() {
            let allows = entry.rule_action().is_some_and(|a| a.as_str() == "allow");
            let Some(cidr) = entry.cidr_block().and_then(|c| c.parse::<Ipv4Net>().ok()) else { continue };
            if !allows {
                continue;
            }
            let ports = entry.port_range();
            let traffic = describe_traffic(entry.protocol(), ports.and_then(|p| p.from()), ports.and_then(|p| p.to()));
            rules.push(AllowRule {
                holder: holder.clone(),
                rule: format!("rule {} {traffic}", entry.rule_number().unwrap_or_default()),
                direction: if entry.egress() == Some(true) { Direction::Egress } else { Direction::Ingress },
                cidr: cidr.trunc(),
            });
        }
    }
    Ok(rules)
}
