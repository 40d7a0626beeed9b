//! Splits EC2 list answers into pages, as AWS does and moto mostly does not.
//!
//! moto ignores `MaxResults` for DescribeSubnets and several other calls and
//! answers everything at once, so a client that reads only the first page
//! looks correct against it. With a page size set, the proxy forwards each
//! paged call without `NextToken` and `MaxResults`, so moto answers the whole
//! list, and returns the slice the client's `NextToken` asks for, with a
//! `nextToken` while items remain. Whatever `MaxResults` the client sent, the
//! proxy's page size wins (AWS may also return fewer items than asked).

use super::identify::form_value;

/// The EC2 actions the proxy pages, and the element holding their items.
const PAGED: &[(&str, &str)] = &[
    ("DescribeSubnets", "subnetSet"),
    ("DescribeRouteTables", "routeTableSet"),
    ("DescribeNetworkInterfaces", "networkInterfaceSet"),
    ("DescribeVpcs", "vpcSet"),
    ("DescribeVpcPeeringConnections", "vpcPeeringConnectionSet"),
    ("GetSubnetCidrReservations", "subnetIpv4CidrReservationSet"),
];

const TOKEN_PREFIX: &str = "testbed-page-";

/// The item set of a paged action.
pub(super) fn item_set(action: &str) -> Option<&'static str> {
    PAGED.iter().find(|(a, _)| *a == action).map(|(_, set)| *set)
}

/// The page a request asks for (0 without a token), and the request
/// without `NextToken` and `MaxResults`, for moto to answer in full.
pub(super) fn strip_paging(form: &str) -> (usize, String) {
    let page = form_value(form, "NextToken")
        .and_then(|token| token.strip_prefix(TOKEN_PREFIX).and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let kept: Vec<&str> = form
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            key != "NextToken" && key != "MaxResults"
        })
        .collect();
    (page, kept.join("&"))
}

/// The direct `<item>` children of `content`, each with its tags.
fn items(content: &str) -> Vec<&str> {
    let bytes = content.as_bytes();
    let (mut items, mut depth, mut start, mut i) = (Vec::new(), 0usize, 0usize, 0usize);
    while i < bytes.len() {
        if bytes[i..].starts_with(b"<item>") {
            if depth == 0 {
                start = i;
            }
            depth += 1;
            i += "<item>".len();
        } else if bytes[i..].starts_with(b"</item>") {
            depth = depth.saturating_sub(1);
            i += "</item>".len();
            if depth == 0 {
                items.push(&content[start..i]);
            }
        } else {
            i += 1;
        }
    }
    items
}

/// Page `page` of `set` in a full answer, with a `nextToken` when more
/// items follow. Answers without the set are returned as they are.
pub(super) fn page_of(xml: &str, set: &str, page: usize, page_size: usize) -> String {
    let open = format!("<{set}>");
    let close = format!("</{set}>");
    let (Some(start), Some(end)) = (xml.find(&open), xml.rfind(&close)) else {
        return xml.to_owned();
    };
    let content_start = start + open.len();
    if end < content_start {
        return xml.to_owned();
    }
    let all = items(&xml[content_start..end]);
    let from = (page * page_size).min(all.len());
    let to = (from + page_size).min(all.len());
    let mut out = String::with_capacity(xml.len());
    out.push_str(&xml[..content_start]);
    for item in &all[from..to] {
        out.push_str(item);
    }
    out.push_str(&close);
    let rest = &xml[end + close.len()..];
    // Drop any nextToken moto wrote; ours replaces it.
    let rest = match (rest.find("<nextToken>"), rest.find("</nextToken>")) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &rest[..a], &rest[b + "</nextToken>".len()..]),
        _ => rest.to_owned(),
    };
    if to < all.len() {
        // Before the root element closes.
        let root_close = rest.rfind("</").unwrap_or(rest.len());
        out.push_str(&rest[..root_close]);
        out.push_str(&format!("<nextToken>{TOKEN_PREFIX}{}</nextToken>", page + 1));
        out.push_str(&rest[root_close..]);
    } else {
        out.push_str(&rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "<DescribeSubnetsResponse><requestId>r</requestId><subnetSet>\
        <item><subnetId>a</subnetId><tagSet><item><key>k</key></item></tagSet></item>\
        <item><subnetId>b</subnetId></item>\
        <item><subnetId>c</subnetId></item>\
        </subnetSet></DescribeSubnetsResponse>";

    #[test]
    fn pages_follow_the_token_and_keep_nested_items_whole() {
        let first = page_of(ANSWER, "subnetSet", 0, 2);
        assert!(first.contains("<subnetId>a</subnetId><tagSet><item><key>k</key></item></tagSet>"), "{first}");
        assert!(first.contains("<subnetId>b</subnetId>") && !first.contains("<subnetId>c</subnetId>"), "{first}");
        assert!(first.ends_with("<nextToken>testbed-page-1</nextToken></DescribeSubnetsResponse>"), "{first}");
        let second = page_of(ANSWER, "subnetSet", 1, 2);
        assert!(second.contains("<subnetId>c</subnetId>") && !second.contains("<subnetId>a</subnetId>"));
        assert!(!second.contains("nextToken"), "{second}");
        assert_eq!(page_of("<X><subnetSet/></X>", "subnetSet", 0, 2), "<X><subnetSet/></X>");
    }

    #[test]
    fn the_request_loses_its_paging_parameters() {
        let (page, form) =
            strip_paging("Action=DescribeSubnets&MaxResults=1000&NextToken=testbed-page-3&Filter.1.Name=vpc-id");
        assert_eq!(page, 3);
        assert_eq!(form, "Action=DescribeSubnets&Filter.1.Name=vpc-id");
        assert_eq!(strip_paging("Action=DescribeVpcs").0, 0);
    }
}
