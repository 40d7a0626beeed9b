//! An EKS Auto Mode controller stand-in: resolves a NodeClass's selector
//! terms against EC2 (moto) and writes the status the real controller would.

use std::sync::Arc;

use aws_sdk_ec2::types::{SecurityGroup, Subnet, Tag};
use serde_json::{Value, json};

use super::StatusResolver;

/// A [`StatusResolver`] that emulates EKS Auto Mode with `DescribeSubnets`
/// and `DescribeSecurityGroups`:
///
/// - `status.subnets`: `[{id, zone, zoneID}]` of the subnets matched by
///   `spec.subnetSelectorTerms`, most free IPs first (as Karpenter orders them);
/// - `status.securityGroups`: `[{id, name}]` matched by
///   `spec.securityGroupSelectorTerms`;
/// - `status.podSubnets` / `status.podSecurityGroups`: the same for the pod
///   terms. These two fields are this emulator's, not documented EKS fields;
///   they let tests see what the pod selectors matched;
/// - `status.conditions`: `SubnetsReady`, `SecurityGroupsReady`, `Ready`.
///   Ready is False when a selector matches nothing, or when a pod subnet is
///   in an AZ without a node subnet (docs/aws-rules.md, "NodeClasses and NodePools").
///
/// Terms are ORed; within a term, an `id` matches by id, `tags` needs every
/// key present with the given value (`"*"`: any value), `name` matches the
/// group name. Like the real controller, tag terms match across the whole
/// account and region, not just one VPC.
///
/// Give it a client that talks to moto directly, so that its calls are not
/// counted or faulted by the proxy. When EC2 fails, the status is left
/// unchanged.
pub fn ec2_status_resolver(ec2: aws_sdk_ec2::Client) -> StatusResolver {
    Arc::new(move |nodeclass: Value| {
        let ec2 = ec2.clone();
        Box::pin(async move { resolve(&ec2, &nodeclass).await })
    })
}

async fn resolve(ec2: &aws_sdk_ec2::Client, nodeclass: &Value) -> Option<Value> {
    let spec = nodeclass.get("spec")?;
    let generation = nodeclass.get("metadata").and_then(|m| m.get("generation")).and_then(Value::as_i64).unwrap_or(1);

    let subnets = match ec2.describe_subnets().into_paginator().items().send().try_collect().await {
        Ok(subnets) => subnets,
        Err(error) => {
            tracing::warn!(error = %aws_sdk_ec2::error::DisplayErrorContext(&error), "status resolver: DescribeSubnets failed");
            return None;
        }
    };
    let groups = match ec2.describe_security_groups().into_paginator().items().send().try_collect().await {
        Ok(groups) => groups,
        Err(error) => {
            tracing::warn!(error = %aws_sdk_ec2::error::DisplayErrorContext(&error), "status resolver: DescribeSecurityGroups failed");
            return None;
        }
    };

    let node_subnets = select_subnets(&subnets, spec.get("subnetSelectorTerms"));
    let node_groups = select_groups(&groups, spec.get("securityGroupSelectorTerms"));
    let pod_terms = spec.get("podSubnetSelectorTerms").filter(|v| !v.is_null());
    let pod_subnets = pod_terms.map(|terms| select_subnets(&subnets, Some(terms)));
    let pod_groups = spec
        .get("podSecurityGroupSelectorTerms")
        .filter(|v| !v.is_null())
        .map(|terms| select_groups(&groups, Some(terms)));

    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let condition = |kind: &str, ok: bool, reason_fail: &str, message: String| {
        json!({
            "type": kind,
            "status": if ok { "True" } else { "False" },
            "reason": if ok { kind } else { reason_fail },
            "message": if ok { String::new() } else { message },
            "lastTransitionTime": now,
            "observedGeneration": generation,
        })
    };

    let subnets_ok = !node_subnets.is_empty() && pod_subnets.as_ref().is_none_or(|p| !p.is_empty());
    let groups_ok = !node_groups.is_empty() && pod_groups.as_ref().is_none_or(|p| !p.is_empty());
    let node_zones: Vec<&str> = node_subnets.iter().filter_map(|s| s["zone"].as_str()).collect();
    let stray_pod_zones: Vec<String> = pod_subnets
        .iter()
        .flatten()
        .filter_map(|s| s["zone"].as_str())
        .filter(|zone| !node_zones.contains(zone))
        .map(str::to_owned)
        .collect();
    let zones_ok = stray_pod_zones.is_empty();

    let mut conditions = vec![
        condition("SubnetsReady", subnets_ok, "SubnetsNotFound", "no subnets matched the subnet selector terms".into()),
        condition(
            "SecurityGroupsReady",
            groups_ok,
            "SecurityGroupsNotFound",
            "no security groups matched the security group selector terms".into(),
        ),
    ];
    let ready_message = if !zones_ok {
        format!("pod subnets in zones without a node subnet: {}", stray_pod_zones.join(", "))
    } else {
        "one or more conditions are not ready".into()
    };
    conditions.push(condition(
        "Ready",
        subnets_ok && groups_ok && zones_ok,
        if zones_ok { "NotReady" } else { "PodSubnetZoneMismatch" },
        ready_message,
    ));

    let mut status = json!({
        "subnets": node_subnets,
        "securityGroups": node_groups,
        "conditions": conditions,
    });
    if let Some(pod_subnets) = pod_subnets {
        status["podSubnets"] = json!(pod_subnets);
    }
    if let Some(pod_groups) = pod_groups {
        status["podSecurityGroups"] = json!(pod_groups);
    }
    Some(status)
}

fn terms(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn tags_match(term_tags: &Value, tags: &[Tag]) -> bool {
    let Some(wanted) = term_tags.as_object() else {
        return false;
    };
    !wanted.is_empty()
        && wanted.iter().all(|(key, value)| {
            let value = value.as_str().unwrap_or_default();
            tags.iter().any(|tag| tag.key() == Some(key.as_str()) && (value == "*" || tag.value() == Some(value)))
        })
}

fn select_subnets(subnets: &[Subnet], selector: Option<&Value>) -> Vec<Value> {
    let terms = terms(selector);
    let mut matched: Vec<&Subnet> = subnets
        .iter()
        .filter(|subnet| {
            terms.iter().any(|term| {
                if let Some(id) = term.get("id").and_then(Value::as_str) {
                    subnet.subnet_id() == Some(id)
                } else if let Some(tags) = term.get("tags") {
                    tags_match(tags, subnet.tags())
                } else {
                    false
                }
            })
        })
        .collect();
    matched.sort_by(|a, b| {
        b.available_ip_address_count()
            .cmp(&a.available_ip_address_count())
            .then_with(|| a.subnet_id().cmp(&b.subnet_id()))
    });
    matched
        .into_iter()
        .map(|subnet| {
            json!({
                "id": subnet.subnet_id().unwrap_or_default(),
                "zone": subnet.availability_zone().unwrap_or_default(),
                "zoneID": subnet.availability_zone_id().unwrap_or_default(),
            })
        })
        .collect()
}

fn select_groups(groups: &[SecurityGroup], selector: Option<&Value>) -> Vec<Value> {
    let terms = terms(selector);
    let mut out: Vec<Value> = Vec::new();
    for group in groups {
        let matched = terms.iter().any(|term| {
            if let Some(id) = term.get("id").and_then(Value::as_str) {
                group.group_id() == Some(id)
            } else if let Some(name) = term.get("name").and_then(Value::as_str) {
                group.group_name() == Some(name)
            } else if let Some(tags) = term.get("tags") {
                tags_match(tags, group.tags())
            } else {
                false
            }
        });
        if matched {
            out.push(json!({
                "id": group.group_id().unwrap_or_default(),
                "name": group.group_name().unwrap_or_default(),
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(id: &str, zone: &str, free: i32, tags: &[(&str, &str)]) -> Subnet {
        let mut builder = Subnet::builder()
            .subnet_id(id)
            .availability_zone(zone)
            .availability_zone_id(format!("use1-{zone}"))
            .available_ip_address_count(free);
        for (k, v) in tags {
            builder = builder.tags(Tag::builder().key(*k).value(*v).build());
        }
        builder.build()
    }

    #[test]
    fn subnet_terms_or_and_wildcard() {
        let subnets = [
            subnet("subnet-a", "us-east-1a", 10, &[("role", "nodes"), ("cluster", "lab")]),
            subnet("subnet-b", "us-east-1b", 50, &[("role", "nodes")]),
            subnet("subnet-c", "us-east-1c", 5, &[("role", "pods"), ("cluster", "other")]),
            subnet("subnet-d", "us-east-1a", 5, &[]),
        ];
        let terms = json!([{"tags": {"role": "nodes", "cluster": "*"}}, {"id": "subnet-d"}]);
        let ids: Vec<Value> = select_subnets(&subnets, Some(&terms)).into_iter().map(|s| s["id"].clone()).collect();
        assert_eq!(ids, [json!("subnet-a"), json!("subnet-d")]);

        let terms = json!([{"tags": {"role": "*"}}]);
        let ids: Vec<Value> = select_subnets(&subnets, Some(&terms)).into_iter().map(|s| s["id"].clone()).collect();
        // Most free IPs first.
        assert_eq!(ids, [json!("subnet-b"), json!("subnet-a"), json!("subnet-c")]);
    }
}
