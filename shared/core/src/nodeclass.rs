//! The NodeClass and NodePool rules (docs/aws-rules.md, "NodeClasses and
//! NodePools"), with no I/O: does a selector list select a subnet, which
//! NodeClass a NodePool launches from, what a new NodeClass and NodePool look
//! like, and the JSON Patch that extends an existing NodeClass without
//! touching anything the user set.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::config::{Config, SubnetMode};
use crate::model::AutoModeObjects;
pub use crate::model::{NODECLASS_GROUP, NODECLASS_KIND, nodeclass_ref};
use crate::plan::NodeClassIntent;

pub const NODECLASS_VERSION: &str = "v1";
pub const NODECLASS_PLURAL: &str = "nodeclasses";
pub const NODEPOOL_GROUP: &str = "karpenter.sh";
pub const NODEPOOL_VERSION: &str = "v1";
pub const NODEPOOL_KIND: &str = "NodePool";
pub const NODEPOOL_PLURAL: &str = "nodepools";
/// The built-in NodeClass EKS manages; never written.
pub const DEFAULT_NODECLASS: &str = "default";
/// Selector lists hold at most this many terms.
pub const MAX_TERMS: usize = 30;
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "headroom");

/// The selector term for headroom's subnets. Cluster-specific, because a tag
/// term matches across the whole account and region.
pub fn managed_term(tag_key: &str, cluster: &str) -> Value {
    json!({ "tags": { tag_key: cluster } })
}

/// A subnet the NodeClass must select: its id when it exists, and its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorTarget {
    pub id: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// Whether one selector term matches a subnet. Fields in a term are ANDed;
/// a tag value `"*"` matches any value.
pub fn term_selects(term: &Value, target: &SelectorTarget) -> bool {
    let Some(term) = term.as_object() else { return false };
    if term.is_empty() {
        return false;
    }
    term.iter().all(|(field, wanted)| match field.as_str() {
        "id" => target.id.as_deref().is_some_and(|id| Some(id) == wanted.as_str()),
        "tags" => wanted.as_object().is_some_and(|tags| {
            !tags.is_empty()
                && tags.iter().all(|(k, v)| {
                    target.tags.get(k).is_some_and(|have| v.as_str().is_some_and(|v| v == "*" || v == have))
                })
        }),
        // Unknown fields: assume they narrow the match, so never claim a match.
        _ => false,
    })
}

/// Whether a selector list (terms are ORed) matches a subnet.
pub fn terms_select(terms: Option<&Value>, target: &SelectorTarget) -> bool {
    terms.and_then(Value::as_array).is_some_and(|terms| terms.iter().any(|t| term_selects(t, target)))
}

/// The list a mode writes to.
pub fn subnet_terms_field(mode: SubnetMode) -> &'static str {
    match mode {
        SubnetMode::Nodes => "subnetSelectorTerms",
        SubnetMode::Pods => "podSubnetSelectorTerms",
    }
}

/// What extending an existing NodeClass takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Extension {
    /// It already selects every target.
    AlreadySelected,
    /// RFC 6902 operations, led by a `test` of what they change (the list
    /// appended to, or the whole spec when a member is added), so a
    /// concurrent change makes the patch fail (422) instead of being overwritten.
    Patch(Value),
    /// It cannot be extended without removing something the user set.
    Unextendable(String),
}

/// The patch that makes `current` select every target, or why none is needed
/// or possible. Only appends; never replaces a list the user wrote.
pub fn extension(current: &Value, intent: &NodeClassIntent, targets: &[SelectorTarget]) -> Extension {
    let spec = current.get("spec");
    let field = subnet_terms_field(intent.mode);
    let existing = spec.and_then(|s| s.get(field));
    let unselected = targets.iter().any(|t| !terms_select(existing, t));
    let pod_groups_missing =
        intent.mode == SubnetMode::Pods && spec.and_then(|s| s.get("podSecurityGroupSelectorTerms")).is_none();
    if !unselected && !pod_groups_missing {
        return Extension::AlreadySelected;
    }

    // The guard: appending to a list tests that list; adding a member that
    // is absent (RFC 6902 cannot test for absence) tests the whole spec. The
    // resourceVersion is not tested: the Auto Mode controller moves it with
    // every status write (docs/aws-rules.md, "Changing a NodeClass").
    let adds_member = pod_groups_missing || (unselected && existing.is_none());
    let mut ops = vec![if adds_member {
        json!({ "op": "test", "path": "/spec", "value": spec.cloned().unwrap_or(Value::Null) })
    } else {
        json!({ "op": "test", "path": format!("/spec/{field}"), "value": existing.cloned().unwrap_or(Value::Null) })
    }];
    if unselected {
        match existing.and_then(Value::as_array) {
            Some(terms) if terms.len() >= MAX_TERMS => {
                return Extension::Unextendable(format!(
                    "spec.{field} already holds {MAX_TERMS} terms, the most a NodeClass allows; add a term {} yourself in place of one you no longer need",
                    intent.term
                ));
            }
            Some(_) => ops.push(json!({ "op": "add", "path": format!("/spec/{field}/-"), "value": intent.term })),
            None => ops.push(json!({ "op": "add", "path": format!("/spec/{field}"), "value": [intent.term] })),
        }
    }
    if pod_groups_missing {
        // podSubnetSelectorTerms requires podSecurityGroupSelectorTerms; the
        // node groups are the ones that already let pods reach the control plane.
        let Some(groups) = spec.and_then(|s| s.get("securityGroupSelectorTerms")).filter(|g| g.is_array()) else {
            return Extension::Unextendable(
                "spec.securityGroupSelectorTerms is missing, so there is nothing to copy into podSecurityGroupSelectorTerms".into(),
            );
        };
        ops.push(json!({ "op": "add", "path": "/spec/podSecurityGroupSelectorTerms", "value": groups }));
    }
    Extension::Patch(Value::Array(ops))
}

/// Where a new NodeClass gets what it must copy.
#[derive(Debug, Clone, Default)]
pub struct NewNodeClassSources<'a> {
    pub default_nodeclass: Option<&'a Value>,
    pub configured_role: Option<&'a str>,
    pub configured_security_groups: &'a [String],
    pub cluster_security_group: Option<&'a str>,
    /// Node subnets for `pods` mode when `default` has no selector to copy.
    pub cluster_subnet_ids: &'a [String],
}

/// A new NodeClass that selects the managed subnets, or why one can't be built.
pub fn new_nodeclass(name: &str, intent: &NodeClassIntent, sources: &NewNodeClassSources<'_>) -> Result<Value, String> {
    let default_spec = sources.default_nodeclass.and_then(|d| d.get("spec"));
    let role = default_spec
        .and_then(|s| s.get("role"))
        .and_then(Value::as_str)
        .or(sources.configured_role)
        .ok_or("a new NodeClass needs an IAM role: the `default` NodeClass is absent and NODE_ROLE is empty")?;
    let groups = default_spec
        .and_then(|s| s.get("securityGroupSelectorTerms"))
        .filter(|g| g.as_array().is_some_and(|a| !a.is_empty()))
        .cloned()
        .or_else(|| {
            let ids: Vec<Value> = if sources.configured_security_groups.is_empty() {
                sources.cluster_security_group.into_iter().map(|id| json!({ "id": id })).collect()
            } else {
                sources.configured_security_groups.iter().map(|id| json!({ "id": id })).collect()
            };
            (!ids.is_empty()).then_some(Value::Array(ids))
        })
        .ok_or("a new NodeClass needs security groups: the `default` NodeClass is absent, SECURITY_GROUP_IDS is empty and the cluster has no cluster security group")?;

    let mut spec = serde_json::Map::new();
    spec.insert("role".into(), json!(role));
    match intent.mode {
        SubnetMode::Nodes => {
            spec.insert("subnetSelectorTerms".into(), json!([intent.term]));
        }
        SubnetMode::Pods => {
            let node_subnets = default_spec
                .and_then(|s| s.get("subnetSelectorTerms"))
                .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
                .cloned()
                .or_else(|| {
                    let ids: Vec<Value> = sources.cluster_subnet_ids.iter().map(|id| json!({ "id": id })).collect();
                    (!ids.is_empty()).then_some(Value::Array(ids))
                })
                .ok_or("pods mode keeps nodes in the cluster's subnets, but neither the `default` NodeClass nor the cluster names any")?;
            spec.insert("subnetSelectorTerms".into(), node_subnets);
            spec.insert("podSubnetSelectorTerms".into(), json!([intent.term]));
            spec.insert("podSecurityGroupSelectorTerms".into(), groups.clone());
        }
    }
    spec.insert("securityGroupSelectorTerms".into(), groups);
    Ok(json!({
        "apiVersion": format!("{NODECLASS_GROUP}/{NODECLASS_VERSION}"),
        "kind": NODECLASS_KIND,
        "metadata": { "name": name, "labels": { MANAGED_BY_LABEL.0: MANAGED_BY_LABEL.1 } },
        "spec": Value::Object(spec),
    }))
}

/// Weight of the NodePool headroom creates. Karpenter tries NodePools in
/// descending weight and the built-in ones set none (0), so new general
/// nodes come from this NodePool first, into the subnets that have room,
/// while the built-in NodePools stay as they are for whatever this one
/// cannot place.
pub const NODEPOOL_WEIGHT: u32 = 10;

/// A NodePool that launches from the NodeClass. Its requirements are those
/// of the built-in `general-purpose` NodePool (on-demand, c/m/r, generation
/// 5 and later, amd64, Linux), so every pod that NodePool can place, this
/// one can place too; it has no taint, unlike `system`. Nodes carry
/// `headroom.io/nodepool: <name>` so that they can be found.
pub fn new_nodepool(name: &str, nodeclass: &str) -> Value {
    json!({
        "apiVersion": format!("{NODEPOOL_GROUP}/{NODEPOOL_VERSION}"),
        "kind": NODEPOOL_KIND,
        "metadata": { "name": name, "labels": { MANAGED_BY_LABEL.0: MANAGED_BY_LABEL.1 } },
        "spec": {
            "weight": NODEPOOL_WEIGHT,
            "disruption": {
                "consolidationPolicy": "WhenEmptyOrUnderutilized",
                "consolidateAfter": "30s",
                "budgets": [{ "nodes": "10%" }]
            },
            "template": {
                "metadata": { "labels": { "headroom.io/nodepool": name } },
                "spec": {
                    "nodeClassRef": { "group": NODECLASS_GROUP, "kind": NODECLASS_KIND, "name": nodeclass },
                    "expireAfter": "336h",
                    "requirements": [
                        { "key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"] },
                        { "key": "eks.amazonaws.com/instance-category", "operator": "In", "values": ["c", "m", "r"] },
                        { "key": "eks.amazonaws.com/instance-generation", "operator": "Gt", "values": ["4"] },
                        { "key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"] },
                        { "key": "kubernetes.io/os", "operator": "In", "values": ["linux"] }
                    ]
                }
            }
        }
    })
}

/// `spec.role`: the IAM role of the nodes a NodeClass launches.
pub fn role_of(nodeclass: &Value) -> Option<&str> {
    nodeclass.pointer("/spec/role").and_then(Value::as_str).filter(|r| !r.is_empty())
}

/// The role name of a role name or role ARN (`arn:aws:iam::1:role/path/Name` → `Name`).
pub fn role_name(role: &str) -> &str {
    role.rsplit('/').next().unwrap_or(role)
}

/// Whether nodes launched with `role` need an EKS access entry of type EC2
/// to join: every role but the cluster's Auto Mode node role does.
pub fn needs_access_entry(role: &str, cluster_node_role_arn: Option<&str>) -> bool {
    cluster_node_role_arn.is_none_or(|arn| role_name(arn) != role_name(role))
}

/// The role the nodes of headroom's NodeClass launch with: the NodeClass's
/// own if it exists, else the one a new NodeClass would copy (the `default`
/// NodeClass's, else NODE_ROLE), as [`new_nodeclass`] picks it.
pub fn managed_node_role<'a>(objects: &'a AutoModeObjects, config: &'a Config) -> Option<&'a str> {
    match objects.nodeclass(&config.nodeclass_name) {
        Some(existing) => role_of(existing),
        None => objects.nodeclass(DEFAULT_NODECLASS).and_then(role_of).or(config.node_role.as_deref()),
    }
}

/// `status.subnets[].id`, or `None` while the status has no subnet list
/// (the controller has not resolved the selectors yet).
pub fn status_subnets(nodeclass: &Value) -> Option<Vec<&str>> {
    let listed = nodeclass.pointer("/status/subnets")?.as_array()?;
    Some(listed.iter().filter_map(|s| s.get("id").and_then(Value::as_str)).collect())
}

/// Subnet ids listed in `status.subnets` (what Auto Mode actually resolved).
pub fn status_subnet_ids(nodeclass: &Value) -> Vec<String> {
    nodeclass
        .pointer("/status/subnets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("id").and_then(Value::as_str).map(String::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: Option<&str>, tags: &[(&str, &str)]) -> SelectorTarget {
        SelectorTarget {
            id: id.map(String::from),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    fn intent(mode: SubnetMode) -> NodeClassIntent {
        NodeClassIntent {
            mode,
            term: managed_term("headroom.io/cluster", "demo"),
            managed_tags: [("headroom.io/cluster".to_string(), "demo".to_string())].into(),
        }
    }

    fn managed(id: &str) -> SelectorTarget {
        target(Some(id), &[("headroom.io/cluster", "demo"), ("Name", "x")])
    }

    fn nodeclass(spec: Value) -> Value {
        json!({ "metadata": { "name": "headroom", "resourceVersion": "7" }, "spec": spec })
    }

    #[test]
    fn terms_match_by_id_or_by_every_tag_with_wildcards() {
        let t = target(Some("subnet-1"), &[("a", "1"), ("b", "2")]);
        assert!(term_selects(&json!({"id": "subnet-1"}), &t));
        assert!(!term_selects(&json!({"id": "subnet-2"}), &t));
        assert!(term_selects(&json!({"tags": {"a": "1"}}), &t));
        assert!(term_selects(&json!({"tags": {"a": "*", "b": "2"}}), &t));
        assert!(!term_selects(&json!({"tags": {"a": "1", "c": "*"}}), &t));
        assert!(!term_selects(&json!({"tags": {}}), &t));
        assert!(!term_selects(&json!({}), &t));
        assert!(!term_selects(&json!({"id": "subnet-1", "tags": {"a": "2"}}), &t), "fields are ANDed");
        assert!(!term_selects(&json!({"id": "subnet-1"}), &target(None, &[])), "a planned subnet has no id yet");
        assert!(terms_select(Some(&json!([{"id": "x"}, {"tags": {"b": "2"}}])), &t), "terms are ORed");
    }

    #[test]
    fn nodes_mode_appends_the_managed_term_guarded_by_the_list_it_changes() {
        let current = nodeclass(json!({
            "role": "R",
            "subnetSelectorTerms": [{"id": "subnet-user"}],
            "securityGroupSelectorTerms": [{"id": "sg-1"}]
        }));
        let Extension::Patch(patch) = extension(&current, &intent(SubnetMode::Nodes), &[managed("subnet-new")]) else {
            panic!("expected a patch")
        };
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/spec/subnetSelectorTerms", "value": [{"id": "subnet-user"}]},
                {"op": "add", "path": "/spec/subnetSelectorTerms/-", "value": {"tags": {"headroom.io/cluster": "demo"}}}
            ])
        );
        // Applying it keeps the user's term.
        let mut patched = current.clone();
        json_patch_apply(&mut patched, &patch);
        assert_eq!(patched["spec"]["subnetSelectorTerms"][0], json!({"id": "subnet-user"}));
        assert_eq!(
            extension(&patched, &intent(SubnetMode::Nodes), &[managed("subnet-new")]),
            Extension::AlreadySelected
        );
    }

    #[test]
    fn the_guard_ignores_status_writes_and_catches_a_concurrent_list_change() {
        let current = nodeclass(json!({"role": "R", "subnetSelectorTerms": [{"id": "subnet-user"}]}));
        let Extension::Patch(patch) = extension(&current, &intent(SubnetMode::Nodes), &[managed("subnet-new")]) else {
            panic!("expected a patch")
        };
        let patch: json_patch_kube::Patch = serde_json::from_value(patch).unwrap();
        let apply = |doc: &Value| {
            let mut doc = doc.clone();
            json_patch_kube::patch(&mut doc, &patch).map(|()| doc)
        };
        // The controller rewrote the status: a new resourceVersion, same list.
        let mut status_moved = current.clone();
        status_moved["metadata"]["resourceVersion"] = json!("8");
        status_moved["status"] = json!({"subnets": [{"id": "subnet-user"}]});
        let patched = apply(&status_moved).expect("a status write does not get in the way");
        assert_eq!(patched["spec"]["subnetSelectorTerms"][1], intent(SubnetMode::Nodes).term);
        // Someone changed the list itself: the patch is refused, not merged over it.
        let mut list_moved = current.clone();
        list_moved["spec"]["subnetSelectorTerms"] = json!([{"id": "subnet-other"}]);
        assert!(apply(&list_moved).is_err());
    }

    #[test]
    fn a_nodeclass_that_already_selects_the_subnets_is_left_alone() {
        for terms in [
            json!([{"tags": {"headroom.io/cluster": "demo"}}]),
            json!([{"tags": {"headroom.io/cluster": "*"}}]),
            json!([{"id": "subnet-a"}, {"id": "subnet-b"}]),
        ] {
            let current = nodeclass(
                json!({"role": "R", "subnetSelectorTerms": terms, "securityGroupSelectorTerms": [{"id": "sg"}]}),
            );
            assert_eq!(
                extension(&current, &intent(SubnetMode::Nodes), &[managed("subnet-a"), managed("subnet-b")]),
                Extension::AlreadySelected
            );
        }
    }

    #[test]
    fn pods_mode_fills_pod_subnets_and_pod_security_groups_together() {
        let current = nodeclass(json!({
            "role": "R",
            "subnetSelectorTerms": [{"id": "subnet-node"}],
            "securityGroupSelectorTerms": [{"tags": {"kubernetes.io/cluster/demo": "owned"}}]
        }));
        let Extension::Patch(patch) = extension(&current, &intent(SubnetMode::Pods), &[managed("subnet-new")]) else {
            panic!("expected a patch")
        };
        let mut patched = current.clone();
        json_patch_apply(&mut patched, &patch);
        assert_eq!(patched["spec"]["podSubnetSelectorTerms"], json!([{"tags": {"headroom.io/cluster": "demo"}}]));
        assert_eq!(patched["spec"]["podSecurityGroupSelectorTerms"], patched["spec"]["securityGroupSelectorTerms"]);
        assert_eq!(patched["spec"]["subnetSelectorTerms"], json!([{"id": "subnet-node"}]), "node subnets untouched");
    }

    #[test]
    fn pods_mode_keeps_user_pod_security_groups() {
        let current = nodeclass(json!({
            "role": "R",
            "subnetSelectorTerms": [{"id": "subnet-node"}],
            "securityGroupSelectorTerms": [{"id": "sg-node"}],
            "podSubnetSelectorTerms": [{"id": "subnet-user-pods"}],
            "podSecurityGroupSelectorTerms": [{"id": "sg-pods"}]
        }));
        let Extension::Patch(patch) = extension(&current, &intent(SubnetMode::Pods), &[managed("subnet-new")]) else {
            panic!("expected a patch")
        };
        let mut patched = current.clone();
        json_patch_apply(&mut patched, &patch);
        assert_eq!(patched["spec"]["podSubnetSelectorTerms"].as_array().unwrap().len(), 2);
        assert_eq!(patched["spec"]["podSecurityGroupSelectorTerms"], json!([{"id": "sg-pods"}]));
    }

    #[test]
    fn a_full_selector_list_is_not_extended() {
        let terms: Vec<Value> = (0..30).map(|i| json!({"id": format!("subnet-{i}")})).collect();
        let current =
            nodeclass(json!({"role": "R", "subnetSelectorTerms": terms, "securityGroupSelectorTerms": [{"id": "sg"}]}));
        assert!(matches!(
            extension(&current, &intent(SubnetMode::Nodes), &[managed("subnet-new")]),
            Extension::Unextendable(why) if why.contains("30 terms")
        ));
    }

    #[test]
    fn a_new_nodeclass_copies_role_and_groups_from_default() {
        let default = json!({"spec": {
            "role": "AutoNodeRole",
            "subnetSelectorTerms": [{"id": "subnet-a"}, {"id": "subnet-b"}],
            "securityGroupSelectorTerms": [{"id": "sg-cluster"}]
        }});
        let sources = NewNodeClassSources { default_nodeclass: Some(&default), ..Default::default() };
        let nodes = new_nodeclass("headroom", &intent(SubnetMode::Nodes), &sources).unwrap();
        assert_eq!(nodes["spec"]["role"], "AutoNodeRole");
        assert_eq!(nodes["spec"]["securityGroupSelectorTerms"], json!([{"id": "sg-cluster"}]));
        assert_eq!(nodes["spec"]["subnetSelectorTerms"], json!([{"tags": {"headroom.io/cluster": "demo"}}]));
        assert!(nodes["spec"].get("podSubnetSelectorTerms").is_none());

        let pods = new_nodeclass("headroom", &intent(SubnetMode::Pods), &sources).unwrap();
        assert_eq!(pods["spec"]["subnetSelectorTerms"], json!([{"id": "subnet-a"}, {"id": "subnet-b"}]));
        assert_eq!(pods["spec"]["podSubnetSelectorTerms"], json!([{"tags": {"headroom.io/cluster": "demo"}}]));
        assert_eq!(pods["spec"]["podSecurityGroupSelectorTerms"], json!([{"id": "sg-cluster"}]));
    }

    #[test]
    fn a_new_nodeclass_falls_back_to_config_then_refuses() {
        let groups = vec!["sg-9".to_string()];
        let sources = NewNodeClassSources {
            configured_role: Some("MyRole"),
            configured_security_groups: &groups,
            ..Default::default()
        };
        let made = new_nodeclass("headroom", &intent(SubnetMode::Nodes), &sources).unwrap();
        assert_eq!(made["spec"]["role"], "MyRole");
        assert_eq!(made["spec"]["securityGroupSelectorTerms"], json!([{"id": "sg-9"}]));

        let why = new_nodeclass("headroom", &intent(SubnetMode::Nodes), &NewNodeClassSources::default()).unwrap_err();
        assert!(why.contains("NODE_ROLE"), "{why}");
    }

    #[test]
    fn status_subnets_are_read() {
        let nc = json!({"status": {"subnets": [{"id": "subnet-1", "zone": "a"}, {"id": "subnet-2"}]}});
        assert_eq!(status_subnet_ids(&nc), vec!["subnet-1", "subnet-2"]);
        assert!(status_subnet_ids(&json!({})).is_empty());
    }

    /// A minimal RFC 6902 applier for `test` and `add` (the only ops we emit).
    fn json_patch_apply(doc: &mut Value, patch: &Value) {
        for op in patch.as_array().unwrap() {
            let path = op["path"].as_str().unwrap();
            match op["op"].as_str().unwrap() {
                "test" => assert_eq!(doc.pointer(path), Some(&op["value"])),
                "add" => {
                    let (parent, last) = path.rsplit_once('/').unwrap();
                    let target = doc.pointer_mut(parent).unwrap();
                    match (target, last) {
                        (Value::Array(a), "-") => a.push(op["value"].clone()),
                        (Value::Object(o), key) => {
                            o.insert(key.to_string(), op["value"].clone());
                        }
                        _ => panic!("unsupported add"),
                    }
                }
                other => panic!("unexpected op {other}"),
            }
        }
    }
}
