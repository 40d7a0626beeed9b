//! A network snapshot as a person reads it at a glance.

use std::fmt::Write as _;

use headroom::Config;
use headroom::model::NetworkSnapshot;
use headroom::planner;

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
    let mut subnets = planner::capacity_subnets(snapshot, config);
    subnets.sort_by(|a, b| (&a.availability_zone, a.cidr).cmp(&(&b.availability_zone, b.cidr)));
    for s in subnets {
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
    let _ = writeln!(out, "  per AZ (cluster node subnets + headroom's):");
    for (az, c) in planner::az_capacity(snapshot, config) {
        let _ = writeln!(
            out,
            "    {az}: {} free IPs, {} free /28 prefixes, {:.1}% used",
            c.free_ips,
            c.free_prefixes,
            c.utilisation_percent()
        );
    }
    match &snapshot.nodeclasses.managed {
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
            let status: Vec<String> = headroom::nodeclass::status_subnet_ids(nc);
            if !status.is_empty() {
                let _ = writeln!(out, "    status.subnets: {}", status.join(", "));
            }
        }
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
