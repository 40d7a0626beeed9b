//! AWS rules moto does not enforce, checked against moto's own state.

use bytes::Bytes;
use http::Request;
use http::header::{self, HeaderMap};
use http_body_util::{BodyExt, Full};

use super::Shared;
use super::identify::{CallId, form_value, percent_encode};
use super::protocol::{Protocol, element_text};

/// IPv4 CIDR blocks per VPC, primary included: the AWS default quota, and
/// the limit moto enforces.
pub const VPC_CIDR_QUOTA: usize = 5;

#[derive(Debug, Clone, Copy)]
pub(super) enum Rule {
    VpcCidr,
    RouteTable,
}

/// The rule an EC2 call is checked against, if enforced, and the resource
/// whose lock it takes.
pub(super) fn enforced_rule(shared: &Shared, id: &CallId, body: &[u8]) -> Option<(Rule, String)> {
    if id.protocol != Protocol::Ec2Query {
        return None;
    }
    let form = std::str::from_utf8(body).ok()?;
    let inner = shared.lock();
    match id.action.as_str() {
        "AssociateVpcCidrBlock" if inner.enforce_vpc_cidr_rules => {
            Some((Rule::VpcCidr, format!("vpc:{}", form_value(form, "VpcId")?)))
        }
        "AssociateRouteTable" if inner.enforce_route_table_rules => {
            // Gateway associations (no SubnetId) pass unchecked.
            Some((Rule::RouteTable, format!("subnet:{}", form_value(form, "SubnetId")?)))
        }
        _ => None,
    }
}

/// The VPC's IPv4 CIDR associations, `(cidr, state)`, from a DescribeVpcs
/// answer (EC2 query XML) for one VPC. `None` if the answer lists no VPC.
pub(super) fn parse_cidr_associations(xml: &str) -> Option<Vec<(String, String)>> {
    let set_open = "<cidrBlockAssociationSet>";
    let set_close = "</cidrBlockAssociationSet>";
    if !xml.contains("<vpcId>") {
        return None;
    }
    let Some(start) = xml.find(set_open).map(|i| i + set_open.len()) else {
        return Some(Vec::new());
    };
    let end = start + xml[start..].find(set_close)?;
    let set = &xml[start..end];
    Some(
        set.split("<item>")
            .skip(1)
            .filter_map(|item| {
                let cidr = element_text(item, "cidrBlock")?;
                let state = element_text(item, "state").unwrap_or_default();
                Some((cidr, state))
            })
            .collect(),
    )
}

pub(super) fn parse_ipv4_net(text: &str) -> Option<(u32, u8)> {
    let (addr, len) = text.trim().split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(addr) & mask, len))
}

pub(super) fn nets_overlap(a: (u32, u8), b: (u32, u8)) -> bool {
    let shorter = a.1.min(b.1);
    let mask = if shorter == 0 { 0 } else { u32::MAX << (32 - shorter) };
    a.0 & mask == b.0 & mask
}

/// AWS's answer to associating `requested` with `vpc_id`, given the VPC's
/// current IPv4 associations: `None` when AWS would accept it (as far as
/// overlap and quota go), else the error code and message.
pub(super) fn vpc_cidr_rule_violation(
    vpc_id: &str,
    requested: &str,
    current: &[(String, String)],
    quota: usize,
) -> Option<(&'static str, String)> {
    let held: Vec<&(String, String)> = current.iter().filter(|(_, state)| state != "disassociated").collect();
    if let Some(wanted) = parse_ipv4_net(requested) {
        let conflict = held.iter().any(|(cidr, _)| parse_ipv4_net(cidr).is_some_and(|have| nets_overlap(have, wanted)));
        if conflict {
            return Some(("InvalidVpc.Range", format!("The CIDR '{requested}' conflicts with another subnet")));
        }
    }
    if held.len() >= quota {
        return Some((
            "CidrLimitExceeded",
            format!("This network '{vpc_id}' has met its maximum number of allowed CIDRs: {quota}"),
        ));
    }
    None
}

/// The non-local IPv4 route destinations of a DescribeRouteTables answer,
/// with the route table of each.
pub(super) fn parse_route_destinations(xml: &str) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for table in xml.split("<routeTableId>").skip(1) {
        let table_id = table.split('<').next().unwrap_or_default().to_string();
        let Some(start) = table.find("<routeSet>") else { continue };
        let end = table[start..].find("</routeSet>").map_or(table.len(), |e| start + e);
        for route in table[start..end].split("<item>").skip(1) {
            let Some(destination) = element_text(route, "destinationCidrBlock") else { continue };
            if element_text(route, "gatewayId").as_deref() == Some("local") {
                continue;
            }
            routes.push((destination, table_id.clone()));
        }
    }
    routes
}

/// AWS's route rule: a new block may not be equal to or larger than a
/// non-local route destination of the VPC's route tables; a block inside a
/// wider destination is accepted. The code and words of AWS's refusal are
/// not documented: these are the overlap's, as an emulation.
pub(super) fn route_rule_violation(requested: &str, routes: &[(String, String)]) -> Option<(&'static str, String)> {
    let wanted = parse_ipv4_net(requested)?;
    routes.iter().find_map(|(destination, table)| {
        let route = parse_ipv4_net(destination).filter(|d| d.1 > 0)?;
        (route.1 >= wanted.1 && nets_overlap(route, wanted)).then(|| {
            (
                "InvalidVpc.Range",
                format!(
                    "The CIDR '{requested}' is the same as or larger than the destination {destination} of a route in {table}"
                ),
            )
        })
    })
}

/// An EC2 query (form-encoded) straight to moto, signed like the call being
/// checked: moto takes the region (and account) from the credential scope
/// and does not check the signature. The body of a 2xx answer, else `None`.
pub(super) async fn upstream_ec2_query(shared: &Shared, headers: &HeaderMap, form: String) -> Option<String> {
    let mut request = Request::post(format!("{}/", shared.upstream))
        .header(header::HOST, shared.upstream_authority.clone())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded; charset=utf-8")
        .body(Full::new(Bytes::from(form)))
        .ok()?;
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        request.headers_mut().insert(header::AUTHORIZATION, authorization.clone());
    }
    let response = match shared.client.request(request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(%error, "AWS rules: a read on moto failed; not checking");
            return None;
        }
    };
    if !response.status().is_success() {
        return None;
    }
    let body = response.into_body().collect().await.ok()?.to_bytes();
    String::from_utf8(body.to_vec()).ok()
}

/// Reads the VPC from moto and applies [`vpc_cidr_rule_violation`]. Calls
/// it can't judge (IPv6, IPAM pools, unknown VPC, moto unreachable) pass, so
/// moto gives its own answer.
pub(super) async fn check_vpc_cidr_rules(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<(&'static str, String)> {
    let form = std::str::from_utf8(body).ok()?;
    let vpc_id = form_value(form, "VpcId")?;
    let requested = form_value(form, "CidrBlock")?;
    let describe = format!("Action=DescribeVpcs&Version=2016-11-15&VpcId.1={}", percent_encode(&vpc_id));
    let xml = upstream_ec2_query(shared, headers, describe).await?;
    let current = parse_cidr_associations(&xml)?;
    if let Some(violation) = vpc_cidr_rule_violation(&vpc_id, &requested, &current, VPC_CIDR_QUOTA) {
        return Some(violation);
    }
    let tables = format!(
        "Action=DescribeRouteTables&Version=2016-11-15&Filter.1.Name=vpc-id&Filter.1.Value.1={}",
        percent_encode(&vpc_id)
    );
    let xml = upstream_ec2_query(shared, headers, tables).await?;
    route_rule_violation(&requested, &parse_route_destinations(&xml))
}

/// Whether a DescribeRouteTables answer shows an explicit association of `subnet_id`.
pub(super) fn has_subnet_association(xml: &str, subnet_id: &str) -> bool {
    xml.contains(&format!("<subnetId>{subnet_id}</subnetId>"))
}

/// Reads the subnet's route table associations from moto; refuses a second
/// explicit association. Gateway associations (no `SubnetId`) pass.
pub(super) async fn check_route_table_rules(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<(&'static str, String)> {
    let form = std::str::from_utf8(body).ok()?;
    let subnet_id = form_value(form, "SubnetId")?;
    let route_table_id = form_value(form, "RouteTableId").unwrap_or_default();
    let describe = format!(
        "Action=DescribeRouteTables&Version=2016-11-15&Filter.1.Name=association.subnet-id&Filter.1.Value.1={}",
        percent_encode(&subnet_id)
    );
    let xml = upstream_ec2_query(shared, headers, describe).await?;
    has_subnet_association(&xml, &subnet_id).then(|| {
        (
            "Resource.AlreadyAssociated",
            format!(
                "the specified association for route table {route_table_id} conflicts with an existing association"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIBE_VPCS: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
        <DescribeVpcsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
        <requestId>r-1</requestId><vpcSet><item><vpcId>vpc-1</vpcId><state>available</state>\
        <cidrBlock>192.168.0.0/16</cidrBlock><cidrBlockAssociationSet>\
        <item><associationId>a-1</associationId><cidrBlock>192.168.0.0/16</cidrBlock>\
        <cidrBlockState><state>associated</state></cidrBlockState></item>\
        <item><associationId>a-2</associationId><cidrBlock>100.64.0.0/16</cidrBlock>\
        <cidrBlockState><state>associating</state></cidrBlockState></item>\
        <item><associationId>a-3</associationId><cidrBlock>100.65.0.0/16</cidrBlock>\
        <cidrBlockState><state>disassociated</state></cidrBlockState></item>\
        </cidrBlockAssociationSet><ipv6CidrBlockAssociationSet><item>\
        <ipv6CidrBlock>2600:1f14::/56</ipv6CidrBlock><ipv6CidrBlockState><state>associated</state>\
        </ipv6CidrBlockState></item></ipv6CidrBlockAssociationSet></item></vpcSet></DescribeVpcsResponse>";

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(c, s)| (c.to_string(), s.to_string())).collect()
    }

    #[test]
    fn cidr_associations_are_parsed_from_describe_vpcs() {
        assert_eq!(
            parse_cidr_associations(DESCRIBE_VPCS),
            Some(pairs(&[
                ("192.168.0.0/16", "associated"),
                ("100.64.0.0/16", "associating"),
                ("100.65.0.0/16", "disassociated"),
            ]))
        );
        let empty = "<DescribeVpcsResponse><vpcSet/></DescribeVpcsResponse>";
        assert_eq!(parse_cidr_associations(empty), None, "no VPC: not judged");
    }

    #[test]
    fn overlapping_or_identical_cidrs_are_refused_in_any_state_but_disassociated() {
        let current = parse_cidr_associations(DESCRIBE_VPCS).unwrap();
        let refused = |cidr: &str| vpc_cidr_rule_violation("vpc-1", cidr, &current, VPC_CIDR_QUOTA);
        for cidr in ["100.64.0.0/16", "100.64.128.0/17", "100.64.0.0/15", "192.168.7.0/24", "192.0.0.0/8"] {
            let (code, message) = refused(cidr).unwrap_or_else(|| panic!("{cidr} overlaps"));
            assert_eq!(code, "InvalidVpc.Range");
            assert_eq!(message, format!("The CIDR '{cidr}' conflicts with another subnet"));
        }
        // Disassociated space is free again; neighbours never overlapped.
        for cidr in ["100.65.0.0/16", "100.66.0.0/16", "100.63.255.240/28", "192.169.0.0/16"] {
            assert_eq!(refused(cidr), None, "{cidr}");
        }
    }

    #[test]
    fn the_sixth_block_exceeds_the_quota_and_disassociated_ones_do_not_count() {
        let mut current = pairs(&[
            ("192.168.0.0/16", "associated"),
            ("100.64.0.0/16", "associated"),
            ("100.65.0.0/16", "associated"),
            ("100.66.0.0/16", "failed"),
            ("100.67.0.0/16", "disassociated"),
        ]);
        assert_eq!(vpc_cidr_rule_violation("vpc-9", "100.68.0.0/16", &current, 5), None);
        current.push(("100.69.0.0/16".into(), "associating".into()));
        assert_eq!(
            vpc_cidr_rule_violation("vpc-9", "100.68.0.0/16", &current, 5),
            Some((
                "CidrLimitExceeded",
                "This network 'vpc-9' has met its maximum number of allowed CIDRs: 5".to_string()
            ))
        );
        // An overlap is named as such even at the quota.
        assert_eq!(vpc_cidr_rule_violation("vpc-9", "100.64.0.0/16", &current, 5).unwrap().0, "InvalidVpc.Range");
    }

    #[test]
    fn a_block_equal_to_or_larger_than_a_route_destination_is_refused_and_one_inside_is_not() {
        let xml = "<DescribeRouteTablesResponse><routeTableSet><item><routeTableId>rtb-1</routeTableId>\
            <vpcId>vpc-1</vpcId><routeSet>\
            <item><destinationCidrBlock>192.168.0.0/16</destinationCidrBlock><gatewayId>local</gatewayId></item>\
            <item><destinationCidrBlock>100.64.0.0/10</destinationCidrBlock><transitGatewayId>tgw-1</transitGatewayId></item>\
            <item><destinationCidrBlock>0.0.0.0/0</destinationCidrBlock><natGatewayId>nat-1</natGatewayId></item>\
            </routeSet><associationSet><item><routeTableAssociationId>a-1</routeTableAssociationId>\
            <main>true</main></item></associationSet></item>\
            <item><routeTableId>rtb-2</routeTableId><routeSet>\
            <item><destinationCidrBlock>100.66.0.0/16</destinationCidrBlock><vpcPeeringConnectionId>pcx-1</vpcPeeringConnectionId></item>\
            </routeSet></item></routeTableSet></DescribeRouteTablesResponse>";
        let routes = parse_route_destinations(xml);
        assert_eq!(
            routes,
            pairs(&[("100.64.0.0/10", "rtb-1"), ("0.0.0.0/0", "rtb-1"), ("100.66.0.0/16", "rtb-2")]),
            "local routes are no destination"
        );
        // Inside the wider 100.64.0.0/10: accepted, the local route wins.
        for inside in ["100.64.0.0/16", "100.65.0.0/16", "100.127.255.240/28"] {
            assert_eq!(route_rule_violation(inside, &routes), None, "{inside}");
        }
        // Equal to, or larger than, a destination: refused, naming the route.
        let (code, message) = route_rule_violation("100.66.0.0/16", &routes).expect("equal");
        assert_eq!(code, "InvalidVpc.Range");
        assert!(message.contains("100.66.0.0/16 of a route in rtb-2"), "{message}");
        assert!(route_rule_violation("100.66.0.0/15", &routes).is_some(), "larger");
        assert!(route_rule_violation("100.0.0.0/8", &routes).is_some(), "larger than 100.64.0.0/10");
        // The default route and unrelated space refuse nothing.
        assert_eq!(route_rule_violation("172.16.0.0/16", &routes), None);
    }

    #[test]
    fn cidr_arithmetic() {
        assert_eq!(parse_ipv4_net("10.1.2.3/16"), Some((u32::from(std::net::Ipv4Addr::new(10, 1, 0, 0)), 16)));
        assert_eq!(parse_ipv4_net("0.0.0.0/0"), Some((0, 0)));
        assert_eq!(parse_ipv4_net("10.0.0.0/33"), None);
        assert_eq!(parse_ipv4_net("2600::/56"), None);
        let n = |s| parse_ipv4_net(s).unwrap();
        assert!(nets_overlap(n("10.0.0.0/8"), n("10.200.0.0/16")));
        assert!(nets_overlap(n("0.0.0.0/0"), n("10.200.0.0/16")));
        assert!(!nets_overlap(n("10.0.0.0/16"), n("10.1.0.0/16")));
        assert_eq!(percent_encode("vpc-0a/b c"), "vpc-0a%2Fb%20c");
    }

    #[test]
    fn subnet_associations_are_found_by_exact_id() {
        let xml = "<routeTableSet><item><routeTableId>rtb-1</routeTableId><associationSet><item>\
            <routeTableAssociationId>rtbassoc-1</routeTableAssociationId><routeTableId>rtb-1</routeTableId>\
            <subnetId>subnet-12</subnetId><main>false</main></item></associationSet></item></routeTableSet>";
        assert!(has_subnet_association(xml, "subnet-12"));
        assert!(!has_subnet_association(xml, "subnet-1"));
        assert!(!has_subnet_association("<routeTableSet/>", "subnet-12"));
    }
}
