//! An emulated VPC IPAM pool. moto (5.2.5) has no IPAM: `CreateIpam` is not
//! implemented, and AssociateVpcCidrBlock with `Ipv4IpamPoolId` answers an
//! association without a CIDR. The proxy therefore keeps the pools itself,
//! configured through [`FaultProxyHandle::put_ipam_pool`]:
//!
//! - `DescribeIpamPools` (with `AllocationResourceTags`), `GetIpamPoolCidrs`
//!   and `GetIpamPoolAllocations` are answered here, from the pools
//!   configured and what they have allocated;
//! - `AssociateVpcCidrBlock` with `Ipv4IpamPoolId` and `Ipv4NetmaskLength`
//!   becomes a literal `CidrBlock` request to moto for the pool's next free
//!   block (a block [`FaultProxyHandle::prefer_ipam_block`] names first, then
//!   the lowest), and the allocation is remembered under the association id
//!   moto answers;
//! - `DisassociateVpcCidrBlock` of such an association frees its block.
//!
//! Like IPAM, the emulation knows nothing of route tables or peerings: it
//! hands out a block that collides with a route if that block is next.
//!
//! [`FaultProxyHandle::put_ipam_pool`]: super::FaultProxyHandle::put_ipam_pool
//! [`FaultProxyHandle::prefer_ipam_block`]: super::FaultProxyHandle::prefer_ipam_block

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use ipnet::Ipv4Net;

use super::identify::form_value;
use super::protocol::{ec2_error_response, element_text, xml_escape};

/// An IPAM pool as the proxy serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamPoolSpec {
    pub id: String,
    /// `None`: no locale (no VPC can allocate from it).
    pub locale: Option<String>,
    pub state: String,
    pub address_family: String,
    pub allocation_min_netmask_length: Option<u8>,
    pub allocation_max_netmask_length: Option<u8>,
    /// Provisioned CIDRs.
    pub cidrs: Vec<Ipv4Net>,
    /// The account that owns the pool: organisations share pools from a
    /// delegated IPAM account through AWS RAM.
    pub owner_account: String,
    /// `AllocationResourceTags`: described, not enforced (headroom refuses
    /// before the call when the VPC lacks them).
    pub allocation_resource_tags: Vec<(String, String)>,
}

impl IpamPoolSpec {
    /// A usable IPv4 pool of `locale` over `cidrs`, allocating /16 to /28.
    pub fn new(id: &str, locale: &str, cidrs: &[&str]) -> Self {
        IpamPoolSpec {
            id: id.to_owned(),
            locale: Some(locale.to_owned()),
            state: "create-complete".into(),
            address_family: "ipv4".into(),
            allocation_min_netmask_length: Some(16),
            allocation_max_netmask_length: Some(28),
            cidrs: cidrs.iter().map(|c| c.parse().expect("a CIDR")).collect(),
            owner_account: "123456789012".into(),
            allocation_resource_tags: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct EmulatedPool {
    spec: IpamPoolSpec,
    /// Blocks handed out before the lowest free one, in this order.
    preferred: Vec<Ipv4Net>,
    /// Allocation owner (a VPC CIDR association id, or a label for a block
    /// reserved by the test) → block.
    allocations: BTreeMap<String, Ipv4Net>,
    /// Allocation owner → the resource IPAM names (the VPC), when known.
    resources: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub(super) struct IpamSim {
    pools: BTreeMap<String, EmulatedPool>,
}

/// An allocation made for a request on its way to moto: recorded once moto
/// has associated the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PendingAllocation {
    pool_id: String,
    block: Ipv4Net,
    vpc_id: Option<String>,
}

/// What becomes of an `AssociateVpcCidrBlock` from a pool.
pub(super) enum Allocation {
    /// Send moto this form (a literal `CidrBlock`), then record `pending`.
    Literal { form: String, pending: PendingAllocation },
    /// EC2's error, answered without moto.
    Refused(Box<Response<Full<Bytes>>>),
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn request_id(seq: u64) -> String {
    format!("00000000-0000-4000-8000-{seq:012x}")
}

fn not_found(pool_id: &str, seq: u64) -> Response<Full<Bytes>> {
    ec2_error_response(
        StatusCode::BAD_REQUEST,
        "InvalidIpamPoolId.NotFound",
        &format!("The pool ID '{pool_id}' does not exist"),
        &request_id(seq),
    )
}

fn xml_response(body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

impl IpamSim {
    pub(super) fn put(&mut self, spec: IpamPoolSpec) {
        let id = spec.id.clone();
        let pool =
            EmulatedPool { spec, preferred: Vec::new(), allocations: BTreeMap::new(), resources: BTreeMap::new() };
        self.pools.insert(id, pool);
    }

    pub(super) fn prefer(&mut self, pool_id: &str, block: Ipv4Net) {
        if let Some(pool) = self.pools.get_mut(pool_id) {
            pool.preferred.push(block);
        }
    }

    pub(super) fn reserve(&mut self, pool_id: &str, owner: &str, block: Ipv4Net) {
        if let Some(pool) = self.pools.get_mut(pool_id) {
            pool.allocations.insert(owner.to_owned(), block);
            pool.resources.insert(owner.to_owned(), owner.to_owned());
        }
    }

    pub(super) fn allocations(&self, pool_id: &str) -> Vec<(String, Ipv4Net)> {
        self.pools.get(pool_id).map(|p| p.allocations.clone().into_iter().collect()).unwrap_or_default()
    }

    /// `DescribeIpamPools` and `GetIpamPoolCidrs`, answered from the pools.
    pub(super) fn serve(&self, action: &str, form: &str, seq: u64) -> Option<Response<Full<Bytes>>> {
        match action {
            "DescribeIpamPools" => {
                let wanted: Vec<String> = (1..).map_while(|i| form_value(form, &format!("IpamPoolId.{i}"))).collect();
                if let Some(missing) = wanted.iter().find(|id| !self.pools.contains_key(*id)) {
                    return Some(not_found(missing, seq));
                }
                let items: String = self
                    .pools
                    .values()
                    .filter(|p| wanted.is_empty() || wanted.contains(&p.spec.id))
                    .map(|p| pool_item(&p.spec))
                    .collect();
                Some(xml_response(format!(
                    "<DescribeIpamPoolsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                     <requestId>{}</requestId><ipamPoolSet>{items}</ipamPoolSet></DescribeIpamPoolsResponse>",
                    request_id(seq)
                )))
            }
            "GetIpamPoolCidrs" => {
                let id = form_value(form, "IpamPoolId").unwrap_or_default();
                let Some(pool) = self.pools.get(&id) else { return Some(not_found(&id, seq)) };
                let items: String = pool
                    .spec
                    .cidrs
                    .iter()
                    .enumerate()
                    .map(|(i, cidr)| {
                        format!(
                            "<item><cidr>{cidr}</cidr><state>provisioned</state>\
                             <ipamPoolCidrId>ipam-pool-cidr-{i:032x}</ipamPoolCidrId>\
                             <netmaskLength>{}</netmaskLength></item>",
                            cidr.prefix_len()
                        )
                    })
                    .collect();
                Some(xml_response(format!(
                    "<GetIpamPoolCidrsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                     <requestId>{}</requestId><ipamPoolCidrSet>{items}</ipamPoolCidrSet></GetIpamPoolCidrsResponse>",
                    request_id(seq)
                )))
            }
            "GetIpamPoolAllocations" => {
                let id = form_value(form, "IpamPoolId").unwrap_or_default();
                let Some(pool) = self.pools.get(&id) else { return Some(not_found(&id, seq)) };
                let items: String = pool
                    .allocations
                    .iter()
                    .enumerate()
                    .map(|(i, (owner, block))| {
                        let resource = pool.resources.get(owner).map(|r| xml_escape(r)).unwrap_or_default();
                        format!(
                            "<item><cidr>{block}</cidr><ipamPoolAllocationId>ipam-pool-alloc-{i:032x}</ipamPoolAllocationId>\
                             <resourceId>{resource}</resourceId><resourceType>vpc</resourceType>\
                             <resourceRegion>us-west-2</resourceRegion><resourceOwner>123456789012</resourceOwner></item>"
                        )
                    })
                    .collect();
                Some(xml_response(format!(
                    "<GetIpamPoolAllocationsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                     <requestId>{}</requestId><ipamPoolAllocationSet>{items}</ipamPoolAllocationSet>\
                     </GetIpamPoolAllocationsResponse>",
                    request_id(seq)
                )))
            }
            _ => None,
        }
    }

    /// An `AssociateVpcCidrBlock` from a pool: the form to send moto instead
    /// (a literal `CidrBlock`) and the allocation to record once it
    /// succeeds, or EC2's error. `None`: not an IPAM request.
    pub(super) fn allocate(&self, action: &str, form: &str, seq: u64) -> Option<Allocation> {
        if action != "AssociateVpcCidrBlock" {
            return None;
        }
        let pool_id = form_value(form, "Ipv4IpamPoolId")?;
        let Some(pool) = self.pools.get(&pool_id) else {
            return Some(Allocation::Refused(Box::new(not_found(&pool_id, seq))));
        };
        let invalid = |message: &str| {
            Allocation::Refused(Box::new(ec2_error_response(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValue",
                message,
                &request_id(seq),
            )))
        };
        let Some(netmask) = form_value(form, "Ipv4NetmaskLength").and_then(|n| n.parse::<u8>().ok()) else {
            return Some(invalid("Ipv4NetmaskLength is required with Ipv4IpamPoolId (the pool has no default)"));
        };
        let spec = &pool.spec;
        if spec.allocation_min_netmask_length.is_some_and(|min| netmask < min)
            || spec.allocation_max_netmask_length.is_some_and(|max| netmask > max)
        {
            return Some(invalid(&format!("The netmask length /{netmask} is outside the pool's allocation rules")));
        }
        let taken = |block: Ipv4Net| pool.allocations.values().any(|a| overlaps(*a, block));
        let inside = |block: Ipv4Net| spec.cidrs.iter().any(|c| c.contains(&block));
        let lowest = spec
            .cidrs
            .iter()
            .filter(|c| c.prefix_len() <= netmask)
            .flat_map(|c| c.subnets(netmask).into_iter().flatten());
        let next = pool
            .preferred
            .iter()
            .copied()
            .filter(|b| b.prefix_len() == netmask && inside(*b))
            .chain(lowest)
            .find(|b| !taken(*b));
        let Some(block) = next else {
            // What EC2 answers for a pool with no free block of the size is
            // not documented, and could not be verified: this is the code and
            // message EC2 is reported to give when the size does not fit the
            // pool ("The allocation size is too big for the pool",
            // hashicorp/terraform-provider-aws#39046). headroom must fail
            // clearly whatever the words; the test checks that, not them.
            return Some(invalid("The allocation size is too big for the pool."));
        };
        let literal: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                form_urlencoded::parse(form.as_bytes())
                    .filter(|(k, _)| k != "Ipv4IpamPoolId" && k != "Ipv4NetmaskLength")
                    .chain(std::iter::once(("CidrBlock".into(), block.to_string().into()))),
            )
            .finish();
        let vpc_id = form_value(form, "VpcId");
        Some(Allocation::Literal { form: literal, pending: PendingAllocation { pool_id, block, vpc_id } })
    }

    /// Records an allocation moto has associated (its answer names the association).
    pub(super) fn record(&mut self, pending: PendingAllocation, answer: &str) {
        let owner = element_text(answer, "associationId").unwrap_or_else(|| format!("unknown-{}", pending.block));
        if let Some(pool) = self.pools.get_mut(&pending.pool_id) {
            if let Some(vpc_id) = pending.vpc_id {
                pool.resources.insert(owner.clone(), vpc_id);
            }
            pool.allocations.insert(owner, pending.block);
        }
    }

    /// Frees the block of a disassociated association, if it came from a pool.
    pub(super) fn release(&mut self, form: &str) {
        let Some(association) = form_value(form, "AssociationId") else { return };
        for pool in self.pools.values_mut() {
            pool.allocations.remove(&association);
            pool.resources.remove(&association);
        }
    }
}

fn pool_item(spec: &IpamPoolSpec) -> String {
    let optional =
        |name: &str, value: Option<String>| value.map(|v| format!("<{name}>{v}</{name}>")).unwrap_or_default();
    format!(
        "<item><ownerId>{owner}</ownerId><ipamPoolId>{id}</ipamPoolId>\
         <ipamPoolArn>arn:aws:ec2::{owner}:ipam-pool/{id}</ipamPoolArn>\
         <ipamScopeType>private</ipamScopeType><ipamRegion>us-west-2</ipamRegion>{locale}\
         <poolDepth>1</poolDepth><state>{state}</state><autoImport>false</autoImport>\
         <addressFamily>{family}</addressFamily>{min}{max}{tags}</item>",
        id = xml_escape(&spec.id),
        owner = xml_escape(&spec.owner_account),
        locale = optional("locale", spec.locale.as_deref().map(xml_escape)),
        state = xml_escape(&spec.state),
        family = xml_escape(&spec.address_family),
        min = optional("allocationMinNetmaskLength", spec.allocation_min_netmask_length.map(|n| n.to_string())),
        max = optional("allocationMaxNetmaskLength", spec.allocation_max_netmask_length.map(|n| n.to_string())),
        tags = optional(
            "allocationResourceTagSet",
            (!spec.allocation_resource_tags.is_empty()).then(|| {
                spec.allocation_resource_tags
                    .iter()
                    .map(|(k, v)| format!("<item><key>{}</key><value>{}</value></item>", xml_escape(k), xml_escape(v)))
                    .collect::<String>()
            })
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> IpamSim {
        let mut sim = IpamSim::default();
        sim.put(IpamPoolSpec::new("ipam-pool-1", "us-west-2", &["100.64.0.0/15"]));
        sim
    }

    fn literal(allocation: Option<Allocation>) -> (String, PendingAllocation) {
        match allocation {
            Some(Allocation::Literal { form, pending }) => (form, pending),
            _ => panic!("expected a literal request"),
        }
    }

    fn refused(allocation: Option<Allocation>) -> StatusCode {
        match allocation {
            Some(Allocation::Refused(response)) => response.status(),
            _ => panic!("expected a refusal"),
        }
    }

    fn form(netmask: u8) -> String {
        format!(
            "Action=AssociateVpcCidrBlock&Version=2016-11-15&VpcId=vpc-1&Ipv4IpamPoolId=ipam-pool-1&Ipv4NetmaskLength={netmask}"
        )
    }

    #[test]
    fn blocks_are_handed_out_preferred_first_then_lowest_and_freed_on_disassociation() {
        let mut sim = sim();
        sim.prefer("ipam-pool-1", "100.65.0.0/16".parse().unwrap());
        let (literal, pending) = literal(sim.allocate("AssociateVpcCidrBlock", &form(16), 1));
        assert_eq!(form_value(&literal, "CidrBlock").as_deref(), Some("100.65.0.0/16"));
        assert_eq!(form_value(&literal, "Ipv4IpamPoolId"), None);
        assert_eq!(form_value(&literal, "VpcId").as_deref(), Some("vpc-1"));
        sim.record(pending, "<associationId>vpc-cidr-assoc-1</associationId>");
        let (literal, pending) = self::literal(sim.allocate("AssociateVpcCidrBlock", &form(16), 2));
        assert_eq!(form_value(&literal, "CidrBlock").as_deref(), Some("100.64.0.0/16"));
        sim.record(pending, "<associationId>vpc-cidr-assoc-2</associationId>");
        assert_eq!(refused(sim.allocate("AssociateVpcCidrBlock", &form(16), 3)), StatusCode::BAD_REQUEST);
        sim.release("Action=DisassociateVpcCidrBlock&AssociationId=vpc-cidr-assoc-1");
        assert_eq!(sim.allocations("ipam-pool-1").len(), 1);
        let (literal, _) = self::literal(sim.allocate("AssociateVpcCidrBlock", &form(16), 4));
        assert_eq!(form_value(&literal, "CidrBlock").as_deref(), Some("100.65.0.0/16"));
        // A literal request is not the emulation's business.
        assert!(
            sim.allocate("AssociateVpcCidrBlock", "Action=AssociateVpcCidrBlock&CidrBlock=1.0.0.0%2F16", 5).is_none()
        );
        // Netmasks outside the pool's rules are refused.
        assert_eq!(refused(sim.allocate("AssociateVpcCidrBlock", &form(29), 6)), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn pools_and_their_cidrs_are_described_in_ec2s_words() {
        let sim = sim();
        async fn text(r: Response<Full<Bytes>>) -> String {
            let bytes = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
            String::from_utf8(bytes.to_vec()).unwrap()
        }
        let pools = text(sim.serve("DescribeIpamPools", "IpamPoolId.1=ipam-pool-1", 1).unwrap()).await;
        assert!(pools.contains("<ipamPoolId>ipam-pool-1</ipamPoolId>"), "{pools}");
        assert!(pools.contains("<locale>us-west-2</locale>") && pools.contains("<state>create-complete</state>"));
        let cidrs = text(sim.serve("GetIpamPoolCidrs", "IpamPoolId=ipam-pool-1", 2).unwrap()).await;
        assert!(cidrs.contains("<cidr>100.64.0.0/15</cidr><state>provisioned</state>"), "{cidrs}");
        let missing = sim.serve("GetIpamPoolCidrs", "IpamPoolId=ipam-pool-9", 3).unwrap();
        assert_eq!(missing.status(), StatusCode::BAD_REQUEST);

        let mut sim = sim;
        let mut tagged = IpamPoolSpec::new("ipam-pool-1", "us-west-2", &["100.64.0.0/15"]);
        tagged.allocation_resource_tags = vec![("env".into(), "prod".into())];
        sim.put(tagged);
        let pools = text(sim.serve("DescribeIpamPools", "IpamPoolId.1=ipam-pool-1", 4).unwrap()).await;
        assert!(
            pools.contains(
                "<allocationResourceTagSet><item><key>env</key><value>prod</value></item></allocationResourceTagSet>"
            ),
            "{pools}"
        );
        let (_, pending) = literal(sim.allocate("AssociateVpcCidrBlock", &form(16), 5));
        sim.record(pending, "<associationId>vpc-cidr-assoc-1</associationId>");
        sim.reserve("ipam-pool-1", "vpc-elsewhere", "100.65.0.0/16".parse().unwrap());
        let allocations = text(sim.serve("GetIpamPoolAllocations", "IpamPoolId=ipam-pool-1", 6).unwrap()).await;
        assert!(allocations.contains("<cidr>100.64.0.0/16</cidr>"), "{allocations}");
        assert!(allocations.contains("<resourceId>vpc-1</resourceId>"), "the VPC, not the association: {allocations}");
        assert!(
            allocations.contains("<cidr>100.65.0.0/16</cidr>")
                && allocations.contains("<resourceId>vpc-elsewhere</resourceId>")
        );
    }
}
