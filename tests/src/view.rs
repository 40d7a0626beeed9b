//! A network snapshot as a person reads it at a glance.

use std::fmt::Write as _;

use headroom::Config;
use headroom::model::NetworkSnapshot;
use headroom::node_subnets::{CapacityBasis, node_subnets};
use headroom::nodeclass;

pub fn render(snapshot: &NetworkSnapshot, config: &Config) -> String {
    let mut out = String::new();
    let vpc = &snapshot.vpc;
    let _ = writeln!(out, "VPC {} ({})", vpc.id, snapshot.region);
    let cidrs: Vec<String> = vpc
        .cidr_associations
        .iter()
        .map(|a| {
            let primary = if a.cidr == vpc.primary_cidr { ", primary" } else { "" };
            format!("{} ({}{primary})", a.cidr, a.state.as_str())
        })
        .collect();
    let _ = writeln!(out, "  CIDRs: {}", cidrs.join(", "));

    let _ = writeln!(
        out,
        "  {:<26} {:<11} {:<17} {:>9} {:>10}  route table",
        "subnet", "AZ", "CIDR", "free IPs", "free /28s"
    );
    let used = node_subnets(snapshot, config);
    for s in &used.subnets {
        let managed =
            if s.tags.get(&config.managed_tag_key) == Some(&snapshot.cluster.name) { " [headroom]" } else { "" };
        let table = match (snapshot.explicit_route_table_of(&s.id), snapshot.main_route_table()) {
            (Some(t), _) => describe_table(t),
            (None, Some(main)) => format!("{} (main, implicit)", main.id),
            (None, None) => "-".into(),
        };
        let _ = writeln!(
            out,
            "  {:<26} {:<11} {:<17} {:>9} {:>10}  {table}{managed}",
            s.id,
            s.availability_zone,
            s.cidr.to_string(),
            s.capacity.free_ips,
            s.capacity.free_prefixes
        );
    }
    match &used.basis {
        CapacityBasis::NodeClasses { nodeclasses, notes } => {
            let _ = writeln!(out, "  per AZ (subnets of the NodeClasses NodePools use: {}):", nodeclasses.join(", "));
            for note in notes {
                let _ = writeln!(out, "    note: {note}");
            }
        }
        CapacityBasis::ClusterSubnets { reason } => {
            let _ = writeln!(out, "  per AZ ({reason}):");
        }
    }
    for (az, c) in used.capacity_by_az() {
        let _ = writeln!(
            out,
            "    {az}: {} free IPs, {} free /28 prefixes, {:.1}% used",
            c.free_ips,
            c.free_prefixes,
            c.utilisation_percent()
        );
    }
    let Some(objects) = snapshot.cluster_api.objects() else {
        return out;
    };
    match objects.nodeclass(&config.nodeclass_name) {
        None => {
            let _ = writeln!(out, "  NodeClass {}: absent", config.nodeclass_name);
        }
        Some(nc) => {
            let spec = nc.get("spec").cloned().unwrap_or_default();
            let _ = writeln!(out, "  NodeClass {}:", config.nodeclass_name);
            for field in [
                "role",
                "subnetSelectorTerms",
                "podSubnetSelectorTerms",
                "securityGroupSelectorTerms",
                "podSecurityGroupSelectorTerms",
            ] {
                if let Some(v) = spec.get(field) {
                    let _ = writeln!(out, "    {field}: {v}");
                }
            }
            if let Some(status) = nodeclass::status_subnets(nc) {
                let _ = writeln!(out, "    status.subnets: {}", status.join(", "));
            }
        }
    }
    let _ = writeln!(out, "  NodePools:");
    for pool in &objects.nodepools {
        let name = pool.pointer("/metadata/name").and_then(|n| n.as_str()).unwrap_or("?");
        let class = nodeclass::nodeclass_ref(pool).unwrap_or("?");
        let weight = pool.pointer("/spec/weight").map_or(String::new(), |w| format!(", weight {w}"));
        let _ = writeln!(out, "    {name} → NodeClass {class}{weight}");
    }
    out
}

fn describe_table(t: &headroom::model::RouteTable) -> String {
    let via = if t.routes_through_nat() {
        "NAT"
    } else if t.routes_through_internet_gateway() {
        "IGW"
    } else {
        "local only"
    };
    format!("{} ({via})", t.id)
}
