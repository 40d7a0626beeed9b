//! Makes moto's instant CIDR association look asynchronous, or failed.

use std::collections::HashMap;

use bytes::Bytes;
use http::StatusCode;

use super::Shared;
use super::protocol::element_text;

#[derive(Debug, Default)]
pub(super) struct AssociationSim {
    /// `Some(n)`: each new IPv4 CIDR association shows `associating` in the
    /// next n DescribeVpcs responses that contain it.
    pub(super) polls: Option<usize>,
    /// After those polls, show `failed` instead of the real state.
    pub(super) fail: bool,
    /// association id → DescribeVpcs polls left showing `associating`.
    pub(super) tracked: HashMap<String, usize>,
}

/// Makes moto's instant CIDR association look asynchronous (or failed).
pub(super) fn simulate_association(shared: &Shared, action: &str, status: StatusCode, body: Bytes) -> Bytes {
    if !status.is_success() || !matches!(action, "AssociateVpcCidrBlock" | "DescribeVpcs") {
        return body;
    }
    let mut inner = shared.lock();
    let sim = &mut inner.association;
    let Some(polls) = sim.polls else {
        return body;
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return body;
    };
    let mut text = text.to_owned();
    if action == "AssociateVpcCidrBlock" {
        // IPv4 only: an IPv6 association answers in <ipv6CidrBlockAssociation>.
        if !text.contains("<cidrBlockAssociation>") {
            return body;
        }
        let Some(id) = element_text(&text, "associationId") else {
            return body;
        };
        let initial = if polls == 0 && sim.fail { "failed" } else { "associating" };
        if let Some(rewritten) = rewrite_association_state(&text, &id, initial) {
            text = rewritten;
        }
        tracing::debug!(association = %id, polls, fail = sim.fail, "simulating slow CIDR association");
        sim.tracked.insert(id, polls);
        return Bytes::from(text);
    }
    let fail = sim.fail;
    let mut done = Vec::new();
    for (id, remaining) in sim.tracked.iter_mut() {
        if !text.contains(id.as_str()) {
            continue;
        }
        let state = if *remaining > 0 {
            *remaining -= 1;
            "associating"
        } else if fail {
            "failed"
        } else {
            done.push(id.clone());
            continue;
        };
        if let Some(rewritten) = rewrite_association_state(&text, id, state) {
            text = rewritten;
        }
    }
    for id in done {
        sim.tracked.remove(&id);
    }
    Bytes::from(text)
}

/// Sets `<state>` inside the element that holds `<associationId>{id}`
/// (an `<item>` of `cidrBlockAssociationSet`, or `<cidrBlockAssociation>`).
pub(super) fn rewrite_association_state(xml: &str, id: &str, state: &str) -> Option<String> {
    let marker = format!("<associationId>{id}</associationId>");
    let at = xml.find(&marker)?;
    let start = ["<item>", "<cidrBlockAssociation>"].iter().filter_map(|open| xml[..at].rfind(open)).max()?;
    let end = at + ["</item>", "</cidrBlockAssociation>"].iter().filter_map(|close| xml[at..].find(close)).min()?;
    let region = &xml[start..end];
    let state_open = region.find("<state>")? + "<state>".len();
    let state_close = state_open + region[state_open..].find("</state>")?;
    let mut out = String::with_capacity(xml.len() + 8);
    out.push_str(&xml[..start + state_open]);
    out.push_str(state);
    out.push_str(&xml[start + state_close..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn association_state_is_rewritten_only_for_the_given_id() {
        let xml = "<vpcSet><item><vpcId>vpc-1</vpcId><cidrBlockAssociationSet>\
            <item><associationId>a-1</associationId><cidrBlock>10.0.0.0/16</cidrBlock>\
            <cidrBlockState><state>associated</state></cidrBlockState></item>\
            <item><associationId>a-2</associationId><cidrBlock>100.64.0.0/16</cidrBlock>\
            <cidrBlockState><state>associated</state></cidrBlockState></item>\
            </cidrBlockAssociationSet><state>available</state></item></vpcSet>";
        let out = rewrite_association_state(xml, "a-2", "associating").expect("rewritten");
        assert!(out.contains(
            "<associationId>a-1</associationId><cidrBlock>10.0.0.0/16</cidrBlock>\
             <cidrBlockState><state>associated</state>"
        ));
        assert!(out.contains(
            "<associationId>a-2</associationId><cidrBlock>100.64.0.0/16</cidrBlock>\
             <cidrBlockState><state>associating</state>"
        ));
        assert!(out.contains("<state>available</state>"));
        assert_eq!(rewrite_association_state(xml, "a-3", "failed"), None);
    }
}
