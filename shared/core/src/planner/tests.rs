//! One test per planner rule, then property tests over random networks.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::capacity::SubnetCapacity;
use crate::config::SubnetMode;
use crate::fixtures::*;
use crate::model::*;
use crate::plan::StepKind;
use crate::{cidr, ipam};

fn config() -> Config {
    Config { clusters: vec!["demo-cluster".into()], ..Config::default() }
}

fn expect_plan(decision: Decision) -> Plan {
    match decision {
        Decision::Plan(plan) => plan,
        other => panic!("expected a plan, got {other:#?}"),
    }
}

fn expect_refusal(decision: Decision, code: RefusalCode) -> Refusal {
    match decision {
        Decision::Refused(refusal) if refusal.code == code => refusal,
        other => panic!("expected refusal {code:?}, got {other:#?}"),
    }
}

fn associated_cidr(plan: &Plan) -> Option<Ipv4Net> {
    plan.steps.iter().find_map(|s| match s {
        Step::AssociateVpcCidr { cidr, .. } => Some(*cidr),
        _ => None,
    })
}

fn created_subnets(plan: &Plan) -> Vec<(String, Ipv4Net)> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::CreateSubnet { availability_zone, cidr, .. } => Some((availability_zone.clone(), *cidr)),
            _ => None,
        })
        .collect()
}

fn route_associations(plan: &Plan) -> Vec<(String, SubnetRef, bool)> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::AssociateRouteTable { route_table_id, subnet, main_table_fallback } => {
                Some((route_table_id.clone(), subnet.clone(), *main_table_fallback))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_lab_scenario_gets_the_labs_remediation() {
    let plan = expect_plan(plan(&lab(), &config(), Demand::BelowThreshold));
    assert_eq!(plan.starved_azs, AZS.to_vec());
    assert_eq!(associated_cidr(&plan), Some(net("100.64.0.0/16")));
    assert_eq!(
        created_subnets(&plan),
        vec![
            ("us-west-2a".to_string(), net("100.64.0.0/19")),
            ("us-west-2b".to_string(), net("100.64.32.0/19")),
            ("us-west-2c".to_string(), net("100.64.64.0/19")),
        ]
    );
    assert_eq!(
        route_associations(&plan),
        vec![
            ("rtb-private-a".to_string(), SubnetRef::Planned(net("100.64.0.0/19")), false),
            ("rtb-private-b".to_string(), SubnetRef::Planned(net("100.64.32.0/19")), false),
            ("rtb-private-c".to_string(), SubnetRef::Planned(net("100.64.64.0/19")), false),
        ]
    );
    let kinds: Vec<StepKind> = plan.steps.iter().map(Step::kind).collect();
    assert_eq!(kinds.first(), Some(&StepKind::AssociateVpcCidr), "the CIDR comes before its subnets");
    assert_eq!(
        kinds[kinds.len() - 2..],
        [StepKind::CreateNodeclass, StepKind::CreateNodepool],
        "then the NodeClass and a NodePool"
    );
    let Some(Step::CreateNodeClass { name, object, .. }) =
        plan.steps.iter().find(|s| s.kind() == StepKind::CreateNodeclass)
    else {
        unreachable!()
    };
    assert_eq!(name, "headroom");
    let Some(Step::CreateNodePool { name: pool, object: pool_object }) = plan.steps.last() else { unreachable!() };
    assert_eq!(pool, "headroom");
    assert_eq!(pool_object["spec"]["template"]["spec"]["nodeClassRef"]["name"], "headroom");
    assert_eq!(object["spec"]["subnetSelectorTerms"], json!([{"tags": {"headroom.io/cluster": "demo-cluster"}}]));
    assert_eq!(object["spec"]["role"], "AmazonEKSAutoNodeRole");
    for step in &plan.steps {
        if let Step::CreateSubnet { tags, .. } = step {
            assert_eq!(tags.get("headroom.io/cluster").map(String::as_str), Some("demo-cluster"));
        }
    }
}

#[test]
fn the_lab_scenario_extends_an_existing_nodeclass() {
    let mut snapshot = lab();
    put_used_nodeclass(
        &mut snapshot,
        json!({
            "metadata": {"name": "headroom", "resourceVersion": "42"},
            "spec": {"role": "AmazonEKSAutoNodeRole", "subnetSelectorTerms": [{"id": "subnet-priv-a"}], "securityGroupSelectorTerms": [{"id": "sg-cluster"}]}
        }),
    );
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    let Some(Step::PatchNodeClass { patch, .. }) = plan.steps.last() else { panic!("expected a patch last") };
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::CreateNodePool { .. })), "a NodePool uses it already");
    assert_eq!(
        patch[0],
        json!({"op": "test", "path": "/spec/subnetSelectorTerms", "value": [{"id": "subnet-priv-a"}]})
    );
    assert_eq!(patch[1]["path"], "/spec/subnetSelectorTerms/-");
}

#[test]
fn a_10_slash_16_primary_still_gets_100_64() {
    let mut snapshot = lab();
    snapshot.vpc.primary_cidr = net("10.0.0.0/16");
    snapshot.vpc.cidr_associations[0].cidr = net("10.0.0.0/16");
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert_eq!(associated_cidr(&plan), Some(net("100.64.0.0/16")));
}

#[test]
fn a_route_to_100_64_moves_the_choice_to_100_65() {
    let mut snapshot = lab();
    snapshot.route_tables[1].routes.push(Route { destination: Some(net("100.64.0.0/16")), target: "tgw-0123".into() });
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert_eq!(associated_cidr(&plan), Some(net("100.65.0.0/16")));
    assert_eq!(created_subnets(&plan)[0].1, net("100.65.0.0/19"));
}

#[test]
fn five_cidrs_are_refused_at_the_default_quota() {
    let mut snapshot = lab();
    for cidr in ["192.169.0.0/16", "192.170.0.0/16", "192.171.0.0/16", "192.172.0.0/16"] {
        add_association(&mut snapshot, cidr, CidrState::Associated);
    }
    let refusal = expect_refusal(plan(&snapshot, &config(), Demand::BelowThreshold), RefusalCode::CidrQuota);
    assert!(refusal.message.contains("quota of 5"), "{}", refusal.message);

    let raised = Config { vpc_cidr_quota: 6, ..config() };
    assert_eq!(
        associated_cidr(&expect_plan(plan(&snapshot, &raised, Demand::BelowThreshold))),
        Some(net("100.64.0.0/16"))
    );
}

#[test]
fn associating_cidrs_count_against_the_quota_but_failed_ones_do_not() {
    let mut snapshot = lab();
    for cidr in ["192.169.0.0/16", "192.170.0.0/16", "192.171.0.0/16"] {
        add_association(&mut snapshot, cidr, CidrState::Associated);
    }
    add_association(&mut snapshot, "192.172.0.0/16", CidrState::Failed);
    assert!(matches!(plan(&snapshot, &config(), Demand::BelowThreshold), Decision::Plan(_)));
    add_association(&mut snapshot, "192.173.0.0/16", CidrState::Associating);
    expect_refusal(plan(&snapshot, &config(), Demand::BelowThreshold), RefusalCode::CidrQuota);
}

/// A pool CIDR whose every /19 is taken by a full managed subnet.
fn fill_managed_cidr(snapshot: &mut NetworkSnapshot, cidr: &str) {
    add_association(snapshot, cidr, CidrState::Associated);
    for (i, block) in net(cidr).subnets(19).unwrap().enumerate() {
        let az = AZS[i % 3];
        snapshot.subnets.push(managed_subnet(&format!("subnet-{block}"), az, &block.to_string(), EXHAUSTED));
        snapshot.route_tables[1 + i % 3].subnet_ids.push(format!("subnet-{block}"));
    }
}

#[test]
fn max_managed_cidrs_is_a_refusal() {
    let mut snapshot = lab();
    fill_managed_cidr(&mut snapshot, "100.64.0.0/16");
    fill_managed_cidr(&mut snapshot, "100.65.0.0/16");
    put_used_nodeclass(
        &mut snapshot,
        json!({
            "metadata": {"name": "headroom", "resourceVersion": "1"},
            "spec": {"role": "AmazonEKSAutoNodeRole", "subnetSelectorTerms": [{"tags": {"headroom.io/cluster": "demo-cluster"}}], "securityGroupSelectorTerms": [{"id": "sg"}]}
        }),
    );
    let refusal = expect_refusal(plan(&snapshot, &config(), Demand::BelowThreshold), RefusalCode::MaxManagedCidrs);
    assert!(refusal.message.contains("MAX_MANAGED_CIDRS"));
    let more = Config { max_managed_cidrs: 3, ..config() };
    assert_eq!(
        associated_cidr(&expect_plan(plan(&snapshot, &more, Demand::BelowThreshold))),
        Some(net("100.66.0.0/16"))
    );
}

#[test]
fn free_space_in_a_managed_cidr_is_used_before_a_new_one() {
    // A crashed run associated 100.64.0.0/16 and created one subnet.
    let mut snapshot = lab();
    add_association(&mut snapshot, "100.64.0.0/16", CidrState::Associated);
    snapshot.subnets.push(managed_subnet("subnet-m-a", "us-west-2a", "100.64.0.0/19", ROOMY));
    snapshot.route_tables[1].subnet_ids.push("subnet-m-a".into());
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert_eq!(associated_cidr(&plan), None, "no second CIDR: {plan}");
    assert_eq!(
        created_subnets(&plan),
        vec![("us-west-2b".to_string(), net("100.64.32.0/19")), ("us-west-2c".to_string(), net("100.64.64.0/19"))]
    );
}

#[test]
fn an_associating_cidr_is_awaited_then_used() {
    let mut snapshot = lab();
    add_association(&mut snapshot, "100.64.0.0/16", CidrState::Associating);
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert_eq!(plan.steps[0], Step::AwaitVpcCidr { vpc_id: "vpc-lab".into(), cidr: net("100.64.0.0/16") });
    assert_eq!(associated_cidr(&plan), None);
    assert_eq!(created_subnets(&plan).len(), 3);
}

#[test]
fn cidrs_outside_the_pool_are_not_reused() {
    let mut snapshot = lab();
    add_association(&mut snapshot, "192.169.0.0/16", CidrState::Associated);
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert_eq!(associated_cidr(&plan), Some(net("100.64.0.0/16")));
}

#[test]
fn azs_with_a_roomy_managed_subnet_are_skipped() {
    let mut snapshot = lab();
    add_association(&mut snapshot, "100.64.0.0/16", CidrState::Associated);
    snapshot.subnets.push(managed_subnet("subnet-m-b", "us-west-2b", "100.64.0.0/19", ROOMY));
    snapshot.route_tables[2].subnet_ids.push("subnet-m-b".into());
    put_used_nodeclass(
        &mut snapshot,
        json!({
            "metadata": {"name": "headroom", "resourceVersion": "4"},
            "spec": {"role": "AmazonEKSAutoNodeRole", "subnetSelectorTerms": [{"tags": {"headroom.io/cluster": "demo-cluster"}}], "securityGroupSelectorTerms": [{"id": "sg"}]},
            "status": {"subnets": [{"id": "subnet-m-b", "zone": "us-west-2b"}]}
        }),
    );
    // b has space now, but a and c are still starved.
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert_eq!(plan.starved_azs, vec!["us-west-2a", "us-west-2c"]);
    let azs: Vec<String> = created_subnets(&plan).into_iter().map(|(az, _)| az).collect();
    assert_eq!(azs, vec!["us-west-2a", "us-west-2c"]);
}

#[test]
fn a_full_managed_subnet_gets_a_sibling() {
    let mut snapshot = lab();
    add_association(&mut snapshot, "100.64.0.0/16", CidrState::Associated);
    snapshot.subnets.push(managed_subnet("subnet-m-a", "us-west-2a", "100.64.0.0/19", EXHAUSTED));
    snapshot.route_tables[1].subnet_ids.push("subnet-m-a".into());
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert!(created_subnets(&plan).contains(&("us-west-2a".to_string(), net("100.64.32.0/19"))));
}

#[test]
fn enough_capacity_is_a_no_op() {
    let mut snapshot = lab();
    for s in &mut snapshot.subnets {
        s.capacity = ROOMY;
    }
    match plan(&snapshot, &config(), Demand::BelowThreshold) {
        Decision::NoOp { reason } => assert!(reason.contains("512 free IPs"), "{reason}"),
        other => panic!("expected a no-op, got {other:?}"),
    }
}

#[test]
fn force_expands_even_above_the_thresholds() {
    let mut snapshot = lab();
    for s in &mut snapshot.subnets {
        s.capacity = ROOMY;
    }
    let plan = expect_plan(plan(&snapshot, &config(), Demand::Force));
    assert!(plan.starved_azs.is_empty());
    assert_eq!(created_subnets(&plan).len(), 3);
}

#[test]
fn a_low_prefix_count_alone_starves_an_az() {
    let mut snapshot = lab();
    for s in &mut snapshot.subnets {
        s.capacity = ROOMY;
    }
    snapshot.subnets[3].capacity =
        SubnetCapacity { total_ips: 8192, free_ips: 5000, free_prefixes: 3, prefix_reserved_free_ips: 0 }; // priv-b
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert_eq!(plan.starved_azs, vec!["us-west-2b"]);
}

#[test]
fn an_az_without_a_private_subnet_falls_back_to_the_main_table_explicitly() {
    // Nodes on public subnets only: no private table to copy anywhere.
    let mut snapshot = lab();
    let default = &mut objects(&mut snapshot).nodeclasses[0];
    default["status"]["subnets"] = json!([{"id": "subnet-pub-a"}, {"id": "subnet-pub-b"}, {"id": "subnet-pub-c"}]);
    for s in &mut snapshot.subnets {
        s.capacity = EXHAUSTED;
    }
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    let routes = route_associations(&plan);
    assert_eq!(routes.len(), 3);
    assert!(routes.iter().all(|(table, _, fallback)| table == "rtb-main" && *fallback), "{routes:?}");
    assert!(plan.notes.iter().any(|n| n.contains("us-west-2c") && n.contains("main table")), "{:?}", plan.notes);
}

#[test]
fn a_private_subnet_on_the_main_table_routes_through_it() {
    let mut snapshot = lab();
    snapshot.route_tables.retain(|t| t.id != "rtb-private-c");
    snapshot.route_tables[0].routes.push(Route { destination: Some(net("0.0.0.0/0")), target: "nat-main".into() });
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert_eq!(
        route_associations(&plan)[2],
        ("rtb-main".to_string(), SubnetRef::Planned(net("100.64.64.0/19")), false)
    );
}

#[test]
fn a_managed_subnet_left_unrouted_by_a_crash_is_routed() {
    let mut snapshot = lab();
    add_association(&mut snapshot, "100.64.0.0/16", CidrState::Associated);
    for (i, az) in AZS.iter().enumerate() {
        snapshot.subnets.push(managed_subnet(&format!("subnet-m-{i}"), az, &format!("100.64.{}.0/19", i * 32), ROOMY));
    }
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert!(created_subnets(&plan).is_empty());
    assert_eq!(
        route_associations(&plan),
        (0..3)
            .map(|i| (format!("rtb-private-{}", &AZS[i][9..]), SubnetRef::Existing(format!("subnet-m-{i}")), false))
            .collect::<Vec<_>>()
    );
}

#[test]
fn pods_mode_fills_both_pod_selectors() {
    let pods = Config { subnet_mode: SubnetMode::Pods, ..config() };
    let created = expect_plan(plan(&lab(), &pods, Demand::BelowThreshold));
    let Some(Step::CreateNodeClass { object, .. }) =
        created.steps.iter().find(|s| s.kind() == StepKind::CreateNodeclass)
    else {
        panic!()
    };
    assert_eq!(object["spec"]["podSubnetSelectorTerms"], json!([{"tags": {"headroom.io/cluster": "demo-cluster"}}]));
    assert_eq!(object["spec"]["podSecurityGroupSelectorTerms"], json!([{"id": "sg-cluster"}]));
    assert_eq!(object["spec"]["subnetSelectorTerms"], default_nodeclass()["spec"]["subnetSelectorTerms"]);

    let mut snapshot = lab();
    put_used_nodeclass(
        &mut snapshot,
        json!({
            "metadata": {"name": "headroom", "resourceVersion": "3"},
            "spec": {"role": "AmazonEKSAutoNodeRole", "subnetSelectorTerms": [{"id": "subnet-priv-a"}, {"id": "subnet-priv-b"}, {"id": "subnet-priv-c"}],
                     "securityGroupSelectorTerms": [{"id": "sg-node"}]}
        }),
    );
    let patched = expect_plan(plan(&snapshot, &pods, Demand::BelowThreshold));
    let Some(Step::PatchNodeClass { patch, .. }) = patched.steps.last() else { panic!() };
    let paths: Vec<&str> = patch.as_array().unwrap().iter().map(|op| op["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        vec!["/spec", "/spec/podSubnetSelectorTerms", "/spec/podSecurityGroupSelectorTerms"],
        "adding members that are absent tests the whole spec"
    );
}

#[test]
fn pods_mode_refuses_pod_subnets_in_an_az_without_node_subnets() {
    let pods = Config { subnet_mode: SubnetMode::Pods, ..config() };
    let mut snapshot = lab();
    put_used_nodeclass(
        &mut snapshot,
        json!({
            "metadata": {"name": "headroom", "resourceVersion": "3"},
            "spec": {"role": "AmazonEKSAutoNodeRole", "subnetSelectorTerms": [{"id": "subnet-priv-a"}], "securityGroupSelectorTerms": [{"id": "sg"}]}
        }),
    );
    let refusal = expect_refusal(plan(&snapshot, &pods, Demand::BelowThreshold), RefusalCode::NodeClassUnextendable);
    assert!(refusal.message.contains("us-west-2b, us-west-2c"), "{}", refusal.message);
}

#[test]
fn a_nodeclass_that_selects_the_managed_subnets_is_not_patched() {
    let mut snapshot = lab_with_routed_managed_subnets();
    put_used_nodeclass(&mut snapshot, nodeclass_selecting_managed_subnets());
    match plan(&snapshot, &config(), Demand::BelowThreshold) {
        Decision::NoOp { reason } => assert!(reason.contains("selected"), "{reason}"),
        other => panic!("expected a no-op, got {other:#?}"),
    }
}

#[test]
fn the_default_nodeclass_is_never_planned() {
    // Config refuses the name; the planner refuses it on its own too.
    let mut c = config();
    c.nodeclass_name = "default".into();
    let refusal = expect_refusal(plan(&lab(), &c, Demand::BelowThreshold), RefusalCode::NodeClassUnextendable);
    assert!(refusal.message.contains("default"));
}

#[test]
fn without_role_or_default_a_new_nodeclass_is_refused() {
    let mut snapshot = lab();
    objects(&mut snapshot).nodeclasses[0]["spec"] = json!({});
    objects(&mut snapshot).nodeclasses[0]["spec"].as_object_mut().unwrap().clear();
    expect_refusal(plan(&snapshot, &config(), Demand::BelowThreshold), RefusalCode::NoNodeRole);
    let with_role = Config { node_role: Some("MyRole".into()), ..config() };
    // MyRole is not the cluster's node role: its nodes join through an EC2 access entry.
    snapshot.node_role_access_entries =
        Some(vec![AccessEntry { principal_arn: "arn:aws:iam::123456789012:role/MyRole".into(), kind: "EC2".into() }]);
    let plan = expect_plan(plan(&snapshot, &with_role, Demand::BelowThreshold));
    let Some(Step::CreateNodeClass { object, .. }) = plan.steps.iter().find(|s| s.kind() == StepKind::CreateNodeclass)
    else {
        panic!()
    };
    assert_eq!(object["spec"]["securityGroupSelectorTerms"], json!([{"id": "sg-cluster"}]));
}

#[test]
fn a_nodepool_is_created_only_when_none_uses_the_nodeclass() {
    let c = Config { nodepool_name: "extra-ips".into(), ..config() };
    let plan_ = expect_plan(plan(&lab(), &c, Demand::BelowThreshold));
    let Some(Step::CreateNodePool { name, object }) = plan_.steps.last() else { panic!() };
    assert_eq!(name, "extra-ips");
    assert_eq!(object["spec"]["template"]["spec"]["nodeClassRef"]["name"], "headroom");
    assert_eq!(object["spec"]["weight"], json!(10), "tried before the built-in NodePools");

    // A NodePool of the user's already launches from the NodeClass: nothing to create.
    let mut snapshot = lab();
    objects(&mut snapshot).nodepools.push(nodepool("mine", "headroom"));
    let plan_ = expect_plan(plan(&snapshot, &c, Demand::BelowThreshold));
    assert!(!plan_.steps.iter().any(|s| matches!(s, Step::CreateNodePool { .. })), "{plan_}");
}

#[test]
fn without_a_nodepool_for_the_nodeclass_nothing_is_planned() {
    // Not allowed to create one: refused, with what to set.
    let c = Config { create_nodepool: false, ..config() };
    let refusal = expect_refusal(plan(&lab(), &c, Demand::BelowThreshold), RefusalCode::NoNodePool);
    assert!(refusal.message.contains("NodeClass headroom"), "{}", refusal.message);
    assert!(refusal.message.contains("CREATE_NODEPOOL"), "{}", refusal.message);

    // Allowed, but the name is taken by a NodePool of another NodeClass, which headroom never changes.
    let mut snapshot = lab();
    objects(&mut snapshot).nodepools.push(nodepool("headroom", "someone-elses"));
    let refusal = expect_refusal(plan(&snapshot, &config(), Demand::BelowThreshold), RefusalCode::NoNodePool);
    assert!(
        refusal.message.contains("someone-elses") && refusal.message.contains("NODEPOOL_NAME"),
        "{}",
        refusal.message
    );

    // Even with nothing left to create, starved AZs whose new subnets no NodePool uses are reported.
    let mut snapshot = lab_with_routed_managed_subnets();
    put_nodeclass(&mut snapshot, nodeclass_selecting_managed_subnets());
    expect_refusal(plan(&snapshot, &c, Demand::BelowThreshold), RefusalCode::NoNodePool);
}

#[test]
fn capacity_is_what_nodepool_nodeclasses_select_not_the_cluster_subnets() {
    let mut snapshot = lab();
    // The control plane sits in the public subnets only; nodes still run in the private ones.
    snapshot.cluster.subnet_ids.retain(|id| id.starts_with("subnet-pub"));
    let used = node_subnets(&snapshot, &config());
    assert_eq!(used.ids(), ["subnet-priv-a", "subnet-priv-b", "subnet-priv-c"]);
    assert!(
        matches!(&used.basis, node_subnets::CapacityBasis::NodeClasses { nodeclasses, .. } if nodeclasses == &["default"])
    );
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert_eq!(plan.starved_azs, AZS.to_vec(), "the private subnets are exhausted");

    // A roomy NodeClass that no NodePool references does not count.
    put_nodeclass(
        &mut snapshot,
        json!({
            "metadata": {"name": "unused"},
            "spec": {"subnetSelectorTerms": [{"id": "subnet-pub-a"}]},
            "status": {"subnets": [{"id": "subnet-pub-a"}]}
        }),
    );
    assert_eq!(node_subnets(&snapshot, &config()).ids().len(), 3);
    // Once a NodePool references it, it does.
    objects(&mut snapshot).nodepools.push(nodepool("edge", "unused"));
    assert_eq!(
        node_subnets(&snapshot, &config()).ids(),
        ["subnet-pub-a", "subnet-priv-a", "subnet-priv-b", "subnet-priv-c"]
    );
    assert_eq!(az_capacity(&snapshot, &config())["us-west-2a"].free_ips, 8187 + 300);
}

#[test]
fn pod_subnets_count_and_an_unresolved_status_falls_back_to_the_selectors() {
    let mut snapshot = lab();
    let default = &mut objects(&mut snapshot).nodeclasses[0];
    default["spec"]["podSubnetSelectorTerms"] = json!([{"id": "subnet-pub-b"}]);
    default.as_object_mut().unwrap().remove("status");
    let used = node_subnets(&snapshot, &config());
    // By AZ, then CIDR: subnet-pub-b is 192.168.32.0/19, subnet-priv-b 192.168.128.0/19.
    assert_eq!(used.ids(), ["subnet-priv-a", "subnet-pub-b", "subnet-priv-b", "subnet-priv-c"]);
    let node_subnets::CapacityBasis::NodeClasses { notes, .. } = &used.basis else { panic!() };
    assert!(notes.iter().any(|n| n.contains("no status.subnets")), "{notes:?}");
}

#[test]
fn an_unreadable_cluster_api_counts_the_cluster_subnets_and_plans_nothing() {
    let mut snapshot = lab();
    snapshot.cluster_api = ClusterApi::Unreadable { reason: "403 Forbidden".into() };
    let used = node_subnets(&snapshot, &config());
    assert_eq!(used.ids(), ["subnet-priv-a", "subnet-priv-b", "subnet-priv-c"], "private cluster subnets");
    assert!(matches!(&used.basis, node_subnets::CapacityBasis::ClusterSubnets { reason } if reason.contains("403")));
    expect_refusal(plan(&snapshot, &config(), Demand::BelowThreshold), RefusalCode::ClusterApiUnreadable);
}

#[test]
fn a_peered_vpc_moves_the_choice_even_without_a_route() {
    let mut snapshot = lab();
    snapshot.peerings.push(Peering {
        connection_id: "pcx-1".into(),
        peer_vpc_id: "vpc-peer".into(),
        peer_cidrs: vec![net("100.64.0.0/16")],
    });
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert_eq!(associated_cidr(&plan), Some(net("100.65.0.0/16")));
}

#[test]
fn a_vpc_cidr_too_small_for_every_az_is_refused_before_anything_is_associated() {
    // One /17 CIDR holds two /18 subnets; the lab has three AZs.
    let c = Config { vpc_cidr_prefix: 17, subnet_prefix: 18, ..config() };
    let refusal = expect_refusal(plan(&lab(), &c, Demand::BelowThreshold), RefusalCode::CannotConverge);
    assert!(refusal.message.contains("VPC_CIDR_PREFIX") && refusal.message.contains("3 AZs"), "{}", refusal.message);
    let fits = Config { vpc_cidr_prefix: 16, subnet_prefix: 18, ..config() };
    expect_plan(plan(&lab(), &fits, Demand::BelowThreshold));
}

#[test]
fn a_custom_node_role_needs_an_ec2_access_entry() {
    let mut snapshot = lab();
    put_used_nodeclass(
        &mut snapshot,
        json!({
            "metadata": {"name": "headroom", "resourceVersion": "5"},
            "spec": {"role": "CustomNodeRole", "subnetSelectorTerms": [{"id": "subnet-priv-a"}], "securityGroupSelectorTerms": [{"id": "sg"}]}
        }),
    );
    let refusal =
        expect_refusal(plan(&snapshot, &config(), Demand::BelowThreshold), RefusalCode::NodeRoleNotAuthorized);
    assert!(
        refusal.message.contains("CustomNodeRole") && refusal.message.contains("--type EC2"),
        "{}",
        refusal.message
    );

    let entry = |kind: &str| AccessEntry {
        principal_arn: "arn:aws:iam::123456789012:role/CustomNodeRole".into(),
        kind: kind.into(),
    };
    snapshot.node_role_access_entries = Some(vec![entry("STANDARD")]);
    expect_refusal(plan(&snapshot, &config(), Demand::BelowThreshold), RefusalCode::NodeRoleNotAuthorized);
    snapshot.node_role_access_entries = Some(vec![entry("EC2")]);
    expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));

    // The cluster's own node role needs none, by name or ARN.
    let mut snapshot = lab();
    put_used_nodeclass(
        &mut snapshot,
        json!({
            "metadata": {"name": "headroom", "resourceVersion": "5"},
            "spec": {"role": NODE_ROLE_ARN, "subnetSelectorTerms": [{"id": "subnet-priv-a"}], "securityGroupSelectorTerms": [{"id": "sg"}]}
        }),
    );
    expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
}

#[test]
fn a_restricted_pool_is_refused_with_the_reason() {
    let c = Config { cidr_pool: vec![net("10.0.0.0/14")], ..config() };
    let refusal = expect_refusal(plan(&lab(), &c, Demand::BelowThreshold), RefusalCode::RestrictedRange);
    assert!(refusal.message.contains("192.168.0.0/16"), "{}", refusal.message);
}

#[test]
fn an_exhausted_pool_is_refused() {
    let mut snapshot = lab();
    let c = Config { cidr_pool: vec![net("100.64.0.0/15")], max_managed_cidrs: 5, vpc_cidr_quota: 10, ..config() };
    snapshot.route_tables[1].routes.push(Route { destination: Some(net("100.64.0.0/16")), target: "pcx-1".into() });
    add_association(&mut snapshot, "100.65.0.0/16", CidrState::Disassociating);
    let refusal = expect_refusal(plan(&snapshot, &c, Demand::BelowThreshold), RefusalCode::PoolExhausted);
    assert!(
        refusal.message.contains("1 overlap") && refusal.message.contains("1 are equal to or hold a route destination"),
        "{}",
        refusal.message
    );
}

#[test]
fn a_hub_route_over_the_whole_pool_no_longer_stops_the_expansion_and_the_plan_warns() {
    // Hub and spoke: 100.64.0.0/10 goes to a transit gateway from every table.
    let mut snapshot = lab();
    for table in &mut snapshot.route_tables {
        table.routes.push(Route { destination: Some(net("100.64.0.0/10")), target: "tgw-0hub".into() });
    }
    let planned = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert_eq!(associated_cidr(&planned), Some(net("100.64.0.0/16")), "{planned}");
    let warning = planned.warnings.first().expect("a warning");
    assert!(warning.contains("100.64.0.0/16 lies inside the route to 100.64.0.0/10 through tgw-0hub"), "{warning}");
    assert_eq!(planned.warnings.len(), 1, "{planned}");
    // A route equal to a /16 still rules that /16 out.
    snapshot.route_tables[1].routes.push(Route { destination: Some(net("100.64.0.0/16")), target: "pcx-1".into() });
    let planned = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert_eq!(associated_cidr(&planned), Some(net("100.65.0.0/16")), "{planned}");
}

#[test]
fn a_block_no_route_covers_is_preferred_without_a_warning() {
    let mut snapshot = lab();
    snapshot.route_tables[1].routes.push(Route { destination: Some(net("100.64.0.0/12")), target: "tgw-0hub".into() });
    let planned = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert_eq!(associated_cidr(&planned), Some(net("100.80.0.0/16")), "{planned}");
    assert!(planned.warnings.is_empty(), "{planned}");
}

#[test]
fn no_node_subnet_in_the_vpc_is_refused() {
    let mut snapshot = lab();
    objects(&mut snapshot).nodeclasses[0]["status"]["subnets"] = json!([{"id": "subnet-elsewhere"}]);
    let refusal = expect_refusal(plan(&snapshot, &config(), Demand::BelowThreshold), RefusalCode::NoNodeSubnets);
    assert!(refusal.message.contains("(default)"), "{}", refusal.message);
    objects(&mut snapshot).nodepools.clear();
    let refusal = expect_refusal(plan(&snapshot, &config(), Demand::BelowThreshold), RefusalCode::NoNodeSubnets);
    assert!(refusal.message.contains("no NodePool"), "{}", refusal.message);
}

#[test]
fn partial_space_is_used_and_the_shortfall_noted() {
    let mut snapshot = lab();
    // 100.64.0.0/18 holds two /19s; the quota forbids another CIDR.
    add_association(&mut snapshot, "100.64.0.0/18", CidrState::Associated);
    for cidr in ["192.169.0.0/16", "192.170.0.0/16", "192.171.0.0/16"] {
        add_association(&mut snapshot, cidr, CidrState::Associated);
    }
    let plan = expect_plan(plan(&snapshot, &config(), Demand::BelowThreshold));
    assert_eq!(created_subnets(&plan).len(), 2);
    assert!(plan.notes.iter().any(|n| n.contains("us-west-2c") && n.contains("quota")), "{:?}", plan.notes);
}

#[test]
fn input_order_does_not_change_the_plan() {
    let original = plan(&lab(), &config(), Demand::BelowThreshold);
    let mut shuffled = lab();
    shuffled.subnets.reverse();
    shuffled.route_tables.reverse();
    shuffled.cluster.subnet_ids.reverse();
    assert_eq!(plan(&shuffled, &config(), Demand::BelowThreshold), original);
}

#[test]
fn a_failure_outside_the_node_subnets_is_someone_elses() {
    let snapshot = lab();
    let config = config();
    let elsewhere = plan_for_failure(&snapshot, &config, Demand::BelowThreshold, &["subnet-pub-a".into()]);
    let Decision::NoOp { reason } = &elsewhere else { panic!("expected a no-op, got {elsewhere:#?}") };
    assert!(reason.contains("subnet-pub-a") && reason.contains("no node or pod of cluster demo-cluster"), "{reason}");
    // A node subnet among them, or none named: the usual decision.
    let ours = ["subnet-pub-a".to_string(), "subnet-priv-b".to_string()];
    let usual = plan(&snapshot, &config, Demand::BelowThreshold);
    assert_eq!(plan_for_failure(&snapshot, &config, Demand::BelowThreshold, &ours), usual);
    assert_eq!(plan_for_failure(&snapshot, &config, Demand::BelowThreshold, &[]), usual);
    assert!(usual.plan().is_some());
}

// ---- properties over random networks ----

fn arb_primary() -> impl Strategy<Value = Ipv4Net> {
    prop_oneof![
        Just(net("192.168.0.0/16")),
        Just(net("10.0.0.0/16")),
        Just(net("10.20.0.0/16")),
        Just(net("172.31.0.0/16")),
        Just(net("100.64.0.0/16")),
        Just(net("100.100.0.0/16")),
        Just(net("52.10.0.0/16")),
        Just(net("198.19.0.0/16")),
    ]
}

fn arb_capacity() -> impl Strategy<Value = SubnetCapacity> {
    (0u64..9000, 0u64..600).prop_map(|(free_ips, free_prefixes)| SubnetCapacity {
        total_ips: 8192,
        free_ips,
        free_prefixes,
        prefix_reserved_free_ips: 0,
    })
}

fn arb_state() -> impl Strategy<Value = CidrState> {
    prop_oneof![
        Just(CidrState::Associating),
        Just(CidrState::Associated),
        Just(CidrState::Disassociating),
        Just(CidrState::Disassociated),
        Just(CidrState::Failed),
    ]
}

prop_compose! {
    fn arb_network()(
        primary in arb_primary(),
        // Secondary CIDRs anywhere in the pool, of varied sizes.
        secondaries in prop::collection::vec((0u32..64, 14u8..=20, arb_state()), 0..5),
        // Routes into the pool through peers and gateways.
        routes in prop::collection::vec((0u32..4096, 9u8..=24), 0..4),
        // Some managed subnets inside live secondaries.
        managed in prop::collection::vec((0usize..5, 0u32..32, 0usize..3, arb_capacity()), 0..6),
        node_capacity in prop::collection::vec(arb_capacity(), 3),
        azs in 1usize..=3,
        subnet_prefix in 17u8..=24,
        vpc_prefix in 16u8..=17,
    ) -> (NetworkSnapshot, Config) {
        let mut snapshot = lab();
        snapshot.vpc.primary_cidr = primary;
        snapshot.vpc.cidr_associations[0].cidr = primary;
        // Rebase the lab's subnets into the primary.
        let mut blocks = primary.subnets(19).unwrap();
        for (i, s) in snapshot.subnets.iter_mut().enumerate() {
            s.cidr = blocks.next().unwrap();
            if i % 2 == 1 { s.capacity = node_capacity[i / 2]; }
        }
        let in_azs = |id: &str| AZS[..azs].iter().any(|az| id.ends_with(&az[9..]));
        snapshot.cluster.subnet_ids.retain(|id| in_azs(id));
        let default = &mut objects(&mut snapshot).nodeclasses[0];
        let kept: Vec<Value> = default["status"]["subnets"].as_array().unwrap().iter()
            .filter(|s| in_azs(s["id"].as_str().unwrap())).cloned().collect();
        default["status"]["subnets"] = Value::Array(kept);
        let pool_base = u32::from(net("100.64.0.0/10").network());
        for (i, (offset, len, state)) in secondaries.iter().enumerate() {
            let cidr = Ipv4Net::new((pool_base + offset * 65536).into(), *len).unwrap().trunc();
            snapshot.vpc.cidr_associations.push(CidrAssociation { association_id: format!("a{i}"), cidr, state: *state, status_message: None });
        }
        for (offset, len) in routes {
            let destination = Ipv4Net::new((pool_base + offset * 1024).into(), len).unwrap().trunc();
            snapshot.route_tables[1].routes.push(Route { destination: Some(destination), target: "tgw-1".into() });
        }
        let live: Vec<Ipv4Net> = snapshot.vpc.cidr_associations.iter().skip(1).filter(|a| a.state.is_live()).map(|a| a.cidr).collect();
        for (i, (which, slot, az, capacity)) in managed.into_iter().enumerate() {
            let Some(parent) = live.get(which % live.len().max(1)) else { continue };
            let Some(block) = parent.subnets(subnet_prefix.max(parent.prefix_len())).ok().and_then(|mut b| b.nth(slot as usize)) else { continue };
            if snapshot.subnets.iter().any(|s| cidr::overlaps(s.cidr, block)) { continue; }
            snapshot.subnets.push(managed_subnet(&format!("subnet-m{i}"), AZS[az], &block.to_string(), capacity));
        }
        let config = Config {
            subnet_prefix,
            vpc_cidr_prefix: vpc_prefix,
            max_managed_cidrs: 4,
            vpc_cidr_quota: 6,
            ..config()
        };
        (snapshot, config)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plans_never_collide_and_stay_inside_the_rules((snapshot, config) in arb_network(), force in any::<bool>()) {
        let demand = if force { Demand::Force } else { Demand::BelowThreshold };
        let decision = plan(&snapshot, &config, demand);
        // Deterministic, whatever the order of the inputs.
        prop_assert_eq!(&decision, &plan(&snapshot, &config, demand));
        let mut reordered = snapshot.clone();
        reordered.subnets.reverse();
        reordered.route_tables.reverse();
        reordered.vpc.cidr_associations.reverse();
        prop_assert_eq!(&decision, &plan(&reordered, &config, demand));

        let Decision::Plan(plan) = decision else { return Ok(()) };
        let new_cidr = associated_cidr(&plan);
        if let Some(cidr) = new_cidr {
            prop_assert!(config.cidr_pool.iter().any(|p| p.contains(&cidr)), "{cidr} outside the pool");
            prop_assert_eq!(cidr.prefix_len(), config.vpc_cidr_prefix);
            prop_assert!(cidr::restriction(snapshot.vpc.primary_cidr, cidr).is_ok(), "{cidr} restricted");
            for a in snapshot.vpc.cidr_associations.iter().filter(|a| a.state != CidrState::Disassociated) {
                prop_assert!(!cidr::overlaps(a.cidr, cidr), "{cidr} overlaps {}", a.cidr);
            }
            // AWS's route rule: never equal to or larger than a destination;
            // inside a wider one only with a warning that names it.
            for r in snapshot.route_tables.iter().flat_map(|t| &t.routes).filter(|r| !r.is_local()) {
                if let Some(d) = r.destination.filter(|d| d.prefix_len() > 0) {
                    prop_assert!(!cidr.contains(&d), "{cidr} is equal to or larger than route {d}");
                    if d.contains(&cidr) {
                        let named = format!("the route to {d} through {}", r.target);
                        prop_assert!(plan.warnings.iter().any(|n| n.contains(&named)), "{named} not warned: {plan}");
                    }
                }
            }
        }
        let parents: Vec<Ipv4Net> = snapshot.vpc.cidr_associations.iter()
            .filter(|a| a.state.is_live() && config.cidr_pool.iter().any(|p| p.contains(&a.cidr)))
            .map(|a| a.cidr).chain(new_cidr).collect();
        let created = created_subnets(&plan);
        for (i, (az, block)) in created.iter().enumerate() {
            prop_assert_eq!(block.prefix_len(), config.subnet_prefix);
            prop_assert_eq!(*block, block.trunc(), "unaligned");
            prop_assert!(parents.iter().any(|p| p.contains(block)), "{block} outside every managed CIDR");
            prop_assert!(snapshot.subnets.iter().all(|s| !cidr::overlaps(s.cidr, *block)), "{block} overlaps a subnet");
            prop_assert!(created[..i].iter().all(|(_, other)| !cidr::overlaps(*other, *block)));
            prop_assert!(node_subnets(&snapshot, &config).azs().contains(az), "{az} holds no node subnet");
        }
        let mut azs: Vec<&String> = created.iter().map(|(az, _)| az).collect();
        azs.dedup();
        prop_assert_eq!(azs.len(), created.len(), "one subnet per AZ");
        for step in &plan.steps {
            match step {
                Step::CreateNodeClass { name, .. } | Step::PatchNodeClass { name, .. } => prop_assert_ne!(name.as_str(), "default"),
                _ => {}
            }
        }
    }
}

// IPAM pools (IPAM_POOL_ID): the pool's provisioned CIDRs take CIDR_POOL's place.

const POOL_ID: &str = "ipam-pool-0123456789abcdef0";
const POOL_ARN: &str = "arn:aws:ec2::111122223333:ipam-pool/ipam-pool-0123456789abcdef0";

fn ipam_config() -> Config {
    Config { ipam_pool_id: Some(POOL_ID.into()), ..config() }
}

fn ipam_pool(cidrs: &[&str]) -> IpamPool {
    IpamPool {
        id: POOL_ID.into(),
        arn: Some(POOL_ARN.into()),
        state: "create-complete".into(),
        address_family: "ipv4".into(),
        locale: Some("us-west-2".into()),
        allocation_min_netmask_length: Some(16),
        allocation_max_netmask_length: Some(28),
        provisioned_cidrs: cidrs.iter().map(|c| net(c)).collect(),
        allocation_resource_tags: BTreeMap::new(),
        allocations: None,
    }
}

fn lab_with_pool(cidrs: &[&str]) -> NetworkSnapshot {
    let mut snapshot = lab();
    snapshot.ipam_pool = Some(ipam_pool(cidrs));
    snapshot
}

fn allocation() -> Step {
    Step::AllocateVpcCidrFromIpamPool {
        vpc_id: "vpc-lab".into(),
        pool_id: POOL_ID.into(),
        netmask_length: 16,
        pool_arn: Some(POOL_ARN.into()),
    }
}

#[test]
fn with_an_ipam_pool_the_plan_is_the_allocation_alone() {
    let planned = expect_plan(plan(&lab_with_pool(&["100.64.0.0/14"]), &ipam_config(), Demand::BelowThreshold));
    assert_eq!(planned.steps, [allocation()], "{planned}");
    assert_eq!(planned.ipam_allocation(), Some(("vpc-lab", POOL_ID, 16)));
    assert!(planned.notes.iter().any(|n| n.contains("IPAM chooses the block at apply time")), "{planned}");
    assert!(planned.to_string().contains("IPAM chooses the block at apply time"), "{planned}");
    assert!(planned.reachability.is_empty(), "the block is unknown: nothing to warn about yet");
    // The literal path is untouched by the pool's presence in the snapshot.
    let literal = expect_plan(plan(&lab_with_pool(&["100.64.0.0/14"]), &config(), Demand::BelowThreshold));
    assert_eq!(associated_cidr(&literal), Some(net("100.64.0.0/16")));
    assert_ne!(planned.fingerprint(), literal.fingerprint());
}

#[test]
fn an_ipam_plan_still_refuses_what_the_rest_of_the_plan_would_refuse() {
    // No NodePool may be created and none uses the NodeClass: nothing is allocated.
    let no_pool = Config { create_nodepool: false, ..ipam_config() };
    expect_refusal(plan(&lab_with_pool(&["100.64.0.0/14"]), &no_pool, Demand::BelowThreshold), RefusalCode::NoNodePool);
    // Above the thresholds: no allocation either.
    let mut roomy = lab_with_pool(&["100.64.0.0/14"]);
    for s in &mut roomy.subnets {
        s.capacity = ROOMY;
    }
    assert!(matches!(plan(&roomy, &ipam_config(), Demand::BelowThreshold), Decision::NoOp { .. }));
}

#[test]
fn a_pool_whose_every_block_is_restricted_is_refused_in_ipam_words() {
    let snapshot = lab_with_pool(&["10.0.0.0/14", "172.16.0.0/15"]);
    let refusal = expect_refusal(plan(&snapshot, &ipam_config(), Demand::BelowThreshold), RefusalCode::RestrictedRange);
    assert!(refusal.message.contains(&format!("IPAM pool {POOL_ID}")), "{}", refusal.message);
    assert!(refusal.message.contains("192.168.0.0/16"), "{}", refusal.message);
    assert!(!refusal.message.contains("CIDR_POOL ("), "{}", refusal.message);
}

#[test]
fn a_pool_whose_every_block_collides_is_exhausted() {
    let mut snapshot = lab_with_pool(&["100.64.0.0/16"]);
    snapshot.route_tables[1].routes.push(Route { destination: Some(net("100.64.0.0/16")), target: "pcx-1".into() });
    let refusal = expect_refusal(plan(&snapshot, &ipam_config(), Demand::BelowThreshold), RefusalCode::PoolExhausted);
    assert!(refusal.message.contains("provision more CIDRs to the IPAM pool"), "{}", refusal.message);
    // A pool CIDR smaller than VPC_CIDR_PREFIX holds no block at all.
    let small = lab_with_pool(&["100.64.0.0/20"]);
    expect_refusal(plan(&small, &ipam_config(), Demand::BelowThreshold), RefusalCode::PoolExhausted);
}

#[test]
fn an_unusable_pool_is_refused_before_anything() {
    for (edit, words) in [
        ((|p: &mut IpamPool| p.locale = Some("eu-west-1".into())) as fn(&mut IpamPool), "locale eu-west-1"),
        (|p: &mut IpamPool| p.address_family = "ipv6".into(), "ipv6 pool"),
        (|p: &mut IpamPool| p.state = "delete-in-progress".into(), "delete-in-progress"),
        (|p: &mut IpamPool| p.allocation_min_netmask_length = Some(18), "VPC_CIDR_PREFIX"),
    ] {
        let mut snapshot = lab_with_pool(&["100.64.0.0/14"]);
        edit(snapshot.ipam_pool.as_mut().unwrap());
        let refusal =
            expect_refusal(plan(&snapshot, &ipam_config(), Demand::BelowThreshold), RefusalCode::IpamPoolUnusable);
        assert!(refusal.message.contains(words), "{words}: {}", refusal.message);
    }
    // Configured but not read: refused, never planned from CIDR_POOL instead.
    expect_refusal(plan(&lab(), &ipam_config(), Demand::BelowThreshold), RefusalCode::IpamPoolUnusable);
}

#[test]
fn a_live_block_inside_the_pool_is_managed_and_never_allocated_twice() {
    // A crashed run's allocation: associated, no subnets yet.
    let mut snapshot = lab_with_pool(&["100.64.0.0/14"]);
    add_association(&mut snapshot, "100.66.0.0/16", CidrState::Associated);
    let planned = expect_plan(plan(&snapshot, &ipam_config(), Demand::BelowThreshold));
    assert_eq!(planned.ipam_allocation(), None, "{planned}");
    assert_eq!(
        created_subnets(&planned).iter().map(|(_, c)| *c).collect::<Vec<_>>(),
        [net("100.66.0.0/19"), net("100.66.32.0/19"), net("100.66.64.0/19")]
    );
    // Still associating: awaited, not allocated again.
    let mut snapshot = lab_with_pool(&["100.64.0.0/14"]);
    add_association(&mut snapshot, "100.66.0.0/16", CidrState::Associating);
    let planned = expect_plan(plan(&snapshot, &ipam_config(), Demand::BelowThreshold));
    assert_eq!(planned.steps[0], Step::AwaitVpcCidr { vpc_id: "vpc-lab".into(), cidr: net("100.66.0.0/16") });
    assert_eq!(planned.ipam_allocation(), None);
    // A block outside the pool's CIDRs is not managed, even inside CIDR_POOL.
    let mut snapshot = lab_with_pool(&["100.68.0.0/14"]);
    add_association(&mut snapshot, "100.64.0.0/16", CidrState::Associated);
    assert_eq!(expect_plan(plan(&snapshot, &ipam_config(), Demand::BelowThreshold)).steps, [allocation()]);
}

#[test]
fn a_managed_ipam_block_that_collides_and_holds_no_subnet_is_given_back() {
    // A run stopped between the association and its check left it.
    let mut snapshot = lab_with_pool(&["100.64.0.0/14"]);
    add_association(&mut snapshot, "100.64.0.0/16", CidrState::Associated);
    snapshot.route_tables[2].routes.push(Route { destination: Some(net("100.64.0.0/16")), target: "tgw-1".into() });
    let planned = expect_plan(plan(&snapshot, &ipam_config(), Demand::BelowThreshold));
    let Step::GiveBackVpcCidr { association_id, cidr, why, .. } = &planned.steps[0] else {
        panic!("the block is given back first: {planned}")
    };
    assert_eq!((association_id.as_str(), *cidr), ("vpc-cidr-assoc-100.64.0.0/16", net("100.64.0.0/16")));
    assert!(why.contains("tgw-1"), "{why}");
    assert_eq!(planned.steps[1..], [allocation()], "{planned}");
    // Given back, it no longer counts against MAX_MANAGED_CIDRS.
    let one = Config { max_managed_cidrs: 1, ..ipam_config() };
    assert_eq!(expect_plan(plan(&snapshot, &one, Demand::BelowThreshold)).steps.len(), 2);
}

#[test]
fn a_managed_ipam_block_that_collides_and_holds_subnets_is_left_with_a_note_and_still_counted() {
    let mut snapshot = lab_with_pool(&["100.64.0.0/14"]);
    add_association(&mut snapshot, "100.64.0.0/16", CidrState::Associated);
    snapshot.subnets.push(subnet("subnet-someone", "us-west-2a", "100.64.200.0/24", ROOMY));
    snapshot.route_tables[2].routes.push(Route { destination: Some(net("100.64.0.0/16")), target: "tgw-1".into() });
    let planned = expect_plan(plan(&snapshot, &ipam_config(), Demand::BelowThreshold));
    assert_eq!(planned.steps, [allocation()], "{planned}");
    assert!(
        planned.notes.iter().any(|n| n.contains("100.64.0.0/16") && n.contains("is not used") && n.contains("tgw-1")),
        "{planned}"
    );
    // It still counts against MAX_MANAGED_CIDRS, and the refusal says why it was not used.
    let one = Config { max_managed_cidrs: 1, ..ipam_config() };
    let refusal = expect_refusal(plan(&snapshot, &one, Demand::BelowThreshold), RefusalCode::MaxManagedCidrs);
    assert!(refusal.message.contains("the IPAM pool"), "{}", refusal.message);
    assert!(refusal.message.contains("is not used"), "{}", refusal.message);
}

#[test]
fn an_ipam_block_inside_a_hub_route_is_planned_with_the_warning() {
    let mut snapshot = lab_with_pool(&["100.64.0.0/14"]);
    snapshot.route_tables[1].routes.push(Route { destination: Some(net("100.64.0.0/10")), target: "tgw-0hub".into() });
    let planned = expect_plan(plan(&snapshot, &ipam_config(), Demand::BelowThreshold));
    assert_eq!(planned.steps, [allocation()], "not exhausted: {planned}");
    // Once associated, the second plan places the subnets there and says what it shadows.
    add_association(&mut snapshot, "100.64.0.0/16", CidrState::Associated);
    let second = expect_plan(plan(&snapshot, &ipam_config(), Demand::BelowThreshold));
    assert_eq!(created_subnets(&second)[0].1, net("100.64.0.0/19"));
    assert!(second.warnings.iter().any(|n| n.contains("100.64.0.0/10 through tgw-0hub")), "{second}");
}

#[test]
fn a_vpc_without_the_pools_allocation_resource_tags_is_refused_naming_them() {
    let mut snapshot = lab_with_pool(&["100.64.0.0/14"]);
    snapshot.vpc.tags.insert("team".into(), "platform".into());
    let pool = snapshot.ipam_pool.as_mut().unwrap();
    pool.allocation_resource_tags = [("team".into(), "platform".into()), ("env".into(), "prod".into())].into();
    let refusal =
        expect_refusal(plan(&snapshot, &ipam_config(), Demand::BelowThreshold), RefusalCode::IpamAllocationTagsMissing);
    assert!(refusal.message.contains("env=prod") && !refusal.message.contains("team=platform"), "{}", refusal.message);
    snapshot.vpc.tags.insert("env".into(), "prod".into());
    assert_eq!(expect_plan(plan(&snapshot, &ipam_config(), Demand::BelowThreshold)).steps, [allocation()]);
}

#[test]
fn with_the_pools_allocations_the_dry_run_names_the_lowest_free_block_or_refuses() {
    let allocation_of = |cidr: &str, vpc: &str| IpamAllocation { cidr: net(cidr), resource_id: Some(vpc.into()) };
    let mut snapshot = lab_with_pool(&["100.64.0.0/15"]);
    snapshot.ipam_pool.as_mut().unwrap().allocations = Some(vec![allocation_of("100.64.0.0/16", "vpc-other")]);
    let planned = expect_plan(plan(&snapshot, &ipam_config(), Demand::BelowThreshold));
    assert_eq!(planned.steps, [allocation()]);
    assert!(
        planned
            .notes
            .iter()
            .any(|n| n
                .contains(&format!("IPAM chooses the /16; the lowest free block of pool {POOL_ID} is 100.65.0.0/16"))),
        "{planned}"
    );
    // Unread allocations: said plainly.
    let unread = expect_plan(plan(&lab_with_pool(&["100.64.0.0/15"]), &ipam_config(), Demand::BelowThreshold));
    assert!(unread.notes.iter().any(|n| n.contains("were not read, so which block is unknown")), "{unread}");
    // Every block allocated: refused in the dry run, before any call.
    snapshot.ipam_pool.as_mut().unwrap().allocations.as_mut().unwrap().push(allocation_of("100.65.0.0/16", "vpc-x"));
    let refusal = expect_refusal(plan(&snapshot, &ipam_config(), Demand::BelowThreshold), RefusalCode::PoolExhausted);
    assert!(refusal.message.contains("2 are allocated by the pool to other resources"), "{}", refusal.message);
    // The lowest free block collides: named, with what headroom would do.
    let mut snapshot = lab_with_pool(&["100.64.0.0/15"]);
    snapshot.ipam_pool.as_mut().unwrap().allocations = Some(Vec::new());
    snapshot.route_tables[1].routes.push(Route { destination: Some(net("100.64.0.0/16")), target: "pcx-1".into() });
    let planned = expect_plan(plan(&snapshot, &ipam_config(), Demand::BelowThreshold));
    let note = planned.notes.iter().find(|n| n.contains("lowest free block")).expect("the prediction");
    assert!(
        note.contains("is 100.64.0.0/16 (GetIpamPoolAllocations), which collides") && note.contains("gives it back"),
        "{note}"
    );
    assert!(note.contains("the lowest block clear of every rule is 100.65.0.0/16"), "{note}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With a pool whose CIDRs are CIDR_POOL's, IPAM plans as the literal
    /// path does, except that a new block becomes the allocation alone.
    #[test]
    fn an_ipam_pool_over_the_same_cidrs_plans_like_the_literal_path((snapshot, config) in arb_network(), force in any::<bool>()) {
        let demand = if force { Demand::Force } else { Demand::BelowThreshold };
        let mut with_pool = snapshot.clone();
        let mut pool = ipam_pool(&[]);
        pool.provisioned_cidrs = config.cidr_pool.clone();
        with_pool.ipam_pool = Some(pool.clone());
        let ipam = Config { ipam_pool_id: Some(POOL_ID.into()), ..config.clone() };
        // A managed block that collides is used by the literal path only.
        let colliding = snapshot.vpc.cidr_associations.iter()
            .any(|a| a.state.is_live() && pool.holds(&a.cidr)
                && ipam::collision(a.cidr, &snapshot.route_tables, &snapshot.peerings).is_some());
        prop_assume!(!colliding);
        let literal = plan(&snapshot, &config, demand);
        let allocated = plan(&with_pool, &ipam, demand);
        match (&literal, &allocated) {
            (Decision::Plan(l), Decision::Plan(a)) if associated_cidr(l).is_some() => {
                prop_assert_eq!(&a.steps, &vec![Step::AllocateVpcCidrFromIpamPool {
                    vpc_id: snapshot.vpc.id.clone(), pool_id: POOL_ID.into(), netmask_length: config.vpc_cidr_prefix,
                    pool_arn: Some(POOL_ARN.into()),
                }]);
            }
            (Decision::Refused(l), Decision::Refused(a)) => prop_assert_eq!(l.code, a.code),
            (l, a) => prop_assert_eq!(l, a),
        }
    }
}

// Expanding ahead of a forecast (plan_ahead).

use crate::config::Thresholds;
use crate::forecast::{AzHistory, ClusterForecast, Measure, Point, forecast_cluster};

/// The lab with thresholds it meets: 300 free IPs per AZ against 100, no
/// /28 threshold. Nothing is crossed, so only a forecast can expand.
fn config_above_thresholds() -> Config {
    let mut config = config();
    config.thresholds = Thresholds { min_free_ips_per_az: 100, min_free_prefixes_per_az: 0 };
    config
}

/// Six hours of 5-minute points ending at `now`, from `start` changing by `per_hour`.
fn series(start: f64, per_hour: f64) -> Vec<Point> {
    let now = 1_800_000_000;
    (0..=72).map(|i| Point::new(now - (72 - i) * 300, start + per_hour * i as f64 / 12.0)).collect()
}

fn forecast_for(snapshot: &NetworkSnapshot, config: &Config, ips_per_hour: &[(&str, f64)]) -> ClusterForecast {
    let capacity = az_capacity(snapshot, config);
    let history = ips_per_hour
        .iter()
        .map(|(az, rate)| {
            let now = capacity[*az].free_ips as f64;
            (az.to_string(), AzHistory { free_ips: series(now - rate * 6.0, *rate), free_prefixes: series(0.0, 0.0) })
        })
        .collect();
    forecast_cluster(&capacity, &history, config.thresholds, 6, config.expand_ahead_hours)
}

#[test]
fn a_falling_az_expands_ahead_with_the_forecast_as_its_reason() {
    let (snapshot, config) = (lab(), config_above_thresholds());
    assert!(matches!(plan(&snapshot, &config, Demand::BelowThreshold), Decision::NoOp { .. }));
    // 300 free IPs falling 20/h: 10 h to the threshold of 100, within 24.
    let forecast = forecast_for(&snapshot, &config, &[("us-west-2b", -20.0)]);
    let due = forecast.due.clone().expect("due within 24 h");
    assert_eq!((due.availability_zone.as_str(), due.measure), ("us-west-2b", Measure::FreeIps));
    assert!((due.hours_left - 10.0).abs() < 1e-9, "{due:?}");

    let ahead = expect_plan(plan_ahead(&snapshot, &config, &forecast));
    assert_eq!(ahead.forecast.as_deref(), Some(&due));
    assert!(ahead.starved_azs.is_empty(), "nothing is below a threshold yet");
    // The same remediation a crossed threshold gets: one block, a subnet per AZ.
    let crossed = expect_plan(plan(&lab(), &self::config(), Demand::BelowThreshold));
    assert_eq!(associated_cidr(&ahead), associated_cidr(&crossed));
    assert_eq!(created_subnets(&ahead), created_subnets(&crossed));
    assert_eq!(ahead.fingerprint(), crossed.fingerprint(), "the forecast is not part of the fingerprint");
    assert!(due.reason().contains("us-west-2b") && due.reason().contains("10.0 h"), "{}", due.reason());
}

#[test]
fn flat_rising_distant_or_absent_forecasts_change_nothing() {
    let (snapshot, config) = (lab(), config_above_thresholds());
    let unchanged = plan(&snapshot, &config, Demand::BelowThreshold);
    for rates in [
        vec![],                                                              // no history at all
        vec![("us-west-2a", 0.0), ("us-west-2b", 0.0), ("us-west-2c", 0.0)], // flat
        vec![("us-west-2a", 15.0)],                                          // rising
        vec![("us-west-2a", -5.0)],                                          // 40 h away, beyond 24
    ] {
        let forecast = forecast_for(&snapshot, &config, &rates);
        assert_eq!(forecast.due, None, "{rates:?}");
        assert_eq!(plan_ahead(&snapshot, &config, &forecast), unchanged, "{rates:?}");
    }
    // EXPAND_AHEAD_HOURS=0 turns it off, however steep the fall.
    let off = Config { expand_ahead_hours: 0, ..config.clone() };
    let forecast = forecast_for(&snapshot, &off, &[("us-west-2a", -100.0)]);
    assert_eq!(forecast.due, None);
    assert_eq!(plan_ahead(&snapshot, &off, &forecast), unchanged);
}

#[test]
fn a_crossed_threshold_decides_and_the_forecast_adds_nothing() {
    let (snapshot, defaults) = (lab(), config());
    let forecast = forecast_for(&snapshot, &defaults, &[("us-west-2a", -20.0)]);
    // The lab has no free /28 and MIN_FREE_PREFIXES_PER_AZ is 16: crossed everywhere.
    assert_eq!(forecast.due, None, "a crossed threshold is not the forecast's to report");
    let decided = expect_plan(plan_ahead(&snapshot, &defaults, &forecast));
    assert_eq!(decided.forecast, None);
    assert_eq!(decided.starved_azs, AZS.to_vec());
}

#[test]
fn a_forecast_uses_room_in_a_managed_block_before_a_new_one_and_keeps_the_guardrails() {
    let config = config_above_thresholds();
    // Every AZ has a managed subnet with headroom: the forecast asks for nothing.
    let mut roomy = lab_with_routed_managed_subnets();
    put_used_nodeclass(&mut roomy, nodeclass_selecting_managed_subnets());
    let forecast = forecast_for(&roomy, &config, &[("us-west-2a", -1000.0)]);
    if forecast.due.is_some() {
        match plan_ahead(&roomy, &config, &forecast) {
            Decision::NoOp { reason } => assert!(reason.starts_with("forecast: "), "{reason}"),
            Decision::Plan(plan) => {
                assert!(
                    !plan.steps.iter().any(|s| s.kind() == StepKind::AssociateVpcCidr),
                    "no second CIDR while the managed block has room: {plan:#?}"
                );
            }
            other => panic!("{other:#?}"),
        }
    }

    // MAX_MANAGED_CIDRS=0 holds for a forecast as for a crossed threshold.
    let capped = Config { max_managed_cidrs: 0, ..config.clone() };
    let forecast = forecast_for(&lab(), &capped, &[("us-west-2c", -50.0)]);
    assert!(forecast.due.is_some());
    expect_refusal(plan_ahead(&lab(), &capped, &forecast), RefusalCode::MaxManagedCidrs);
}
