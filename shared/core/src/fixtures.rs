//! The lab's network as a snapshot, and builders for variations of it: the
//! fixtures of the core's unit tests (test builds only).

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use crate::capacity::SubnetCapacity;
use crate::model::*;

pub(crate) fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

pub(crate) const AZS: [&str; 3] = ["us-west-2a", "us-west-2b", "us-west-2c"];
pub(crate) const EXHAUSTED: SubnetCapacity =
    SubnetCapacity { total_ips: 8192, free_ips: 300, free_prefixes: 0, prefix_reserved_free_ips: 0 };
pub(crate) const ROOMY: SubnetCapacity =
    SubnetCapacity { total_ips: 8192, free_ips: 8187, free_prefixes: 510, prefix_reserved_free_ips: 0 };
pub(crate) const NODE_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/AmazonEKSAutoNodeRole";

pub(crate) fn subnet(id: &str, az: &str, cidr: &str, capacity: SubnetCapacity) -> Subnet {
    Subnet {
        id: id.into(),
        availability_zone: az.into(),
        availability_zone_id: None,
        cidr: net(cidr),
        tags: BTreeMap::new(),
        capacity,
    }
}

pub(crate) fn managed_subnet(id: &str, az: &str, cidr: &str, capacity: SubnetCapacity) -> Subnet {
    let mut s = subnet(id, az, cidr, capacity);
    s.tags.insert("headroom.io/cluster".into(), "demo-cluster".into());
    s.tags.insert("Name".into(), format!("headroom-demo-cluster-{az}"));
    s
}

pub(crate) fn table(id: &str, main: bool, default_target: Option<&str>, subnets: &[&str]) -> RouteTable {
    let mut routes = vec![Route { destination: Some(net("192.168.0.0/16")), target: "local".into() }];
    if let Some(target) = default_target {
        routes.push(Route { destination: Some(net("0.0.0.0/0")), target: target.into() });
    }
    RouteTable { id: id.into(), is_main: main, routes, subnet_ids: subnets.iter().map(|s| s.to_string()).collect() }
}

pub(crate) fn default_nodeclass() -> Value {
    json!({
        "apiVersion": "eks.amazonaws.com/v1",
        "kind": "NodeClass",
        "metadata": {"name": "default", "resourceVersion": "1"},
        "spec": {
            "role": "AmazonEKSAutoNodeRole",
            "subnetSelectorTerms": [{"id": "subnet-priv-a"}, {"id": "subnet-priv-b"}, {"id": "subnet-priv-c"}],
            "securityGroupSelectorTerms": [{"id": "sg-cluster"}]
        },
        "status": {"subnets": [
            {"id": "subnet-priv-a", "zone": "us-west-2a"},
            {"id": "subnet-priv-b", "zone": "us-west-2b"},
            {"id": "subnet-priv-c", "zone": "us-west-2c"}
        ]}
    })
}

pub(crate) fn nodepool(name: &str, nodeclass: &str) -> Value {
    json!({
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"nodeClassRef": {"group": "eks.amazonaws.com", "kind": "NodeClass", "name": nodeclass}}}}
    })
}

pub(crate) fn objects(snapshot: &mut NetworkSnapshot) -> &mut AutoModeObjects {
    match &mut snapshot.cluster_api {
        ClusterApi::Read(objects) => objects,
        ClusterApi::Unreadable { .. } => panic!("the fixture's API is readable"),
    }
}

/// Puts a NodeClass in the cluster, replacing one of the same name.
pub(crate) fn put_nodeclass(snapshot: &mut NetworkSnapshot, object: Value) {
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    let classes = &mut objects(snapshot).nodeclasses;
    classes.retain(|c| c["metadata"]["name"] != name.as_str());
    classes.push(object);
}

/// headroom's NodeClass, with a NodePool that launches from it.
pub(crate) fn put_used_nodeclass(snapshot: &mut NetworkSnapshot, object: Value) {
    put_nodeclass(snapshot, object);
    objects(snapshot).nodepools.push(nodepool("platform", "headroom"));
}

/// The lab: VPC 192.168.0.0/16, three AZs, a public and a private subnet per
/// AZ, one NAT route table per AZ, private subnets out of /28 prefixes.
pub(crate) fn lab() -> NetworkSnapshot {
    let mut subnets = Vec::new();
    let mut tables = vec![table("rtb-main", true, None, &[])];
    let public_ids: Vec<String> = AZS.iter().map(|az| format!("subnet-pub-{}", &az[9..])).collect();
    for (i, az) in AZS.iter().enumerate() {
        let suffix = &az[9..];
        subnets.push(subnet(&format!("subnet-pub-{suffix}"), az, &format!("192.168.{}.0/19", i * 32), ROOMY));
        subnets.push(subnet(&format!("subnet-priv-{suffix}"), az, &format!("192.168.{}.0/19", 96 + i * 32), EXHAUSTED));
        tables.push(table(
            &format!("rtb-private-{suffix}"),
            false,
            Some(&format!("nat-{suffix}")),
            &[&format!("subnet-priv-{suffix}")],
        ));
    }
    let public_refs: Vec<&str> = public_ids.iter().map(String::as_str).collect();
    tables.push(table("rtb-public", false, Some("igw-1"), &public_refs));
    NetworkSnapshot {
        region: "us-west-2".into(),
        cluster: Cluster {
            name: "demo-cluster".into(),
            subnet_ids: subnets.iter().map(|s| s.id.clone()).collect(),
            security_group_ids: vec![],
            cluster_security_group_id: Some("sg-cluster".into()),
            node_role_arn: Some(NODE_ROLE_ARN.into()),
        },
        vpc: Vpc {
            id: "vpc-lab".into(),
            primary_cidr: net("192.168.0.0/16"),
            cidr_associations: vec![CidrAssociation {
                association_id: "vpc-cidr-assoc-primary".into(),
                cidr: net("192.168.0.0/16"),
                state: CidrState::Associated,
                status_message: None,
            }],
            tags: BTreeMap::new(),
        },
        subnets,
        route_tables: tables,
        peerings: vec![],
        allow_rules: vec![],
        cluster_api: ClusterApi::Read(AutoModeObjects {
            nodeclasses: vec![default_nodeclass()],
            nodepools: vec![nodepool("general-purpose", "default"), nodepool("system", "default")],
        }),
        node_role_access_entries: None,
        ipam_pool: None,
    }
}

/// The lab after a full remediation: 100.64.0.0/16 associated, a roomy
/// headroom subnet per AZ, each routed like the AZ's private subnet.
pub(crate) fn lab_with_routed_managed_subnets() -> NetworkSnapshot {
    let mut snapshot = lab();
    add_association(&mut snapshot, "100.64.0.0/16", CidrState::Associated);
    for (i, az) in AZS.iter().enumerate() {
        let id = format!("subnet-m-{i}");
        snapshot.subnets.push(managed_subnet(&id, az, &format!("100.64.{}.0/19", i * 32), ROOMY));
        snapshot.route_tables[1 + i].subnet_ids.push(id);
    }
    snapshot
}

/// headroom's NodeClass, selecting the managed subnets by the cluster's tag.
pub(crate) fn nodeclass_selecting_managed_subnets() -> Value {
    json!({
        "metadata": {"name": "headroom", "resourceVersion": "9"},
        "spec": {"role": "AmazonEKSAutoNodeRole", "subnetSelectorTerms": [{"tags": {"headroom.io/cluster": "demo-cluster"}}], "securityGroupSelectorTerms": [{"id": "sg"}]}
    })
}

pub(crate) fn add_association(snapshot: &mut NetworkSnapshot, cidr: &str, state: CidrState) {
    snapshot.vpc.cidr_associations.push(CidrAssociation {
        association_id: format!("vpc-cidr-assoc-{cidr}"),
        cidr: net(cidr),
        state,
        status_message: None,
    });
}
