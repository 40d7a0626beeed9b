//! The lab's scenario (../shared/reference/seed-eks-auto-mode-advanced-networking-lab.txt),
//! seeded into moto and the fake Kubernetes API: VPC 192.168.0.0/16 in three
//! AZs, a public and a private subnet per AZ, an internet gateway, one NAT
//! gateway and private route table per AZ, an EKS cluster on those subnets,
//! and the built-in `default` NodeClass.
//!
//! The cluster is an Auto Mode one: DescribeCluster reports its node role
//! (`computeConfig`, kept by the fault proxy, since moto drops it), and the
//! built-in `general-purpose` and `system` NodePools launch from `default`.
//!
//! moto has no prefix delegation, so exhaustion is modelled with subnet CIDR
//! reservations, read by type as EC2 uses them (docs/aws-rules.md): an
//! `explicit` reservation is withheld from every automatic use, a `prefix`
//! one from single IPs only, and /28 prefixes go inside it. `explicit`
//! reservations fill most of each private subnet and leave the rest
//! fragmented (an explicit /29 in each /28): free IPs, but not one free
//! aligned /28.

use aws_sdk_ec2::types::{Filter, SubnetCidrReservationType};
use ipnet::Ipv4Net;
use serde_json::json;

use crate::{FakeKubeHandle, FaultProxyHandle, TestbedError};

pub const CLUSTER: &str = "demo-cluster";
pub const REGION: &str = "us-west-2";
pub const AZS: [&str; 3] = ["us-west-2a", "us-west-2b", "us-west-2c"];
pub const NODE_ROLE: &str = "AmazonEKSAutoNodeRole";
pub const NODE_ROLE_ARN: &str = "arn:aws:iam::123456789012:role/AmazonEKSAutoNodeRole";
/// The Auto Mode NodePools EKS creates, both launching from `default`.
pub const BUILT_IN_NODEPOOLS: [&str; 2] = ["general-purpose", "system"];

#[derive(Debug, Clone)]
pub struct Lab {
    pub vpc_id: String,
    pub public_subnets: Vec<String>,
    pub private_subnets: Vec<String>,
    /// One per AZ, in AZ order; each routes 0.0.0.0/0 through that AZ's NAT gateway.
    pub private_route_tables: Vec<String>,
    pub public_route_table: String,
    pub cluster_security_group: String,
}

/// How full the private subnets are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhaustion {
    /// `explicit` reservations everywhere but 8-address holes, one per /28
    /// of the last /23: 255 free IPs and no /28 prefix per subnet.
    Fragmented,
    /// The only prefix capacity sits in an empty `prefix` reservation: a
    /// /23 of it (32 free /28 prefixes), next to a fragmented /21 (1,023
    /// free IPs, no prefix), the rest `explicit`. Above both default
    /// thresholds: nothing needs doing.
    PrefixReserved,
    /// Nothing reserved: plenty of room.
    None,
}

fn sdk<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> TestbedError + '_ {
    move |e| TestbedError::Invalid(format!("seeding the lab: {what}: {e}"))
}

async fn tag(ec2: &aws_sdk_ec2::Client, id: &str, name: &str) -> Result<(), TestbedError> {
    ec2.create_tags()
        .resources(id)
        .tags(aws_sdk_ec2::types::Tag::builder().key("Name").value(name).build())
        .send()
        .await
        .map_err(sdk("CreateTags"))?;
    Ok(())
}

async fn subnet(
    ec2: &aws_sdk_ec2::Client,
    vpc: &str,
    az: &str,
    cidr: &str,
    name: &str,
    role_tag: &str,
) -> Result<String, TestbedError> {
    let out = ec2
        .create_subnet()
        .vpc_id(vpc)
        .availability_zone(az)
        .cidr_block(cidr)
        .send()
        .await
        .map_err(sdk("CreateSubnet"))?;
    let id = out.subnet().and_then(|s| s.subnet_id()).unwrap_or_default().to_string();
    ec2.create_tags()
        .resources(&id)
        .tags(aws_sdk_ec2::types::Tag::builder().key("Name").value(name).build())
        .tags(aws_sdk_ec2::types::Tag::builder().key(role_tag).value("1").build())
        .tags(
            aws_sdk_ec2::types::Tag::builder().key(format!("kubernetes.io/cluster/{CLUSTER}")).value("shared").build(),
        )
        .send()
        .await
        .map_err(sdk("CreateTags"))?;
    Ok(id)
}

async fn route_table(ec2: &aws_sdk_ec2::Client, vpc: &str, name: &str) -> Result<String, TestbedError> {
    let out = ec2.create_route_table().vpc_id(vpc).send().await.map_err(sdk("CreateRouteTable"))?;
    let id = out.route_table().and_then(|t| t.route_table_id()).unwrap_or_default().to_string();
    tag(ec2, &id, name).await?;
    Ok(id)
}

async fn reserve(
    ec2: &aws_sdk_ec2::Client,
    subnet_id: &str,
    net: Ipv4Net,
    kind: SubnetCidrReservationType,
) -> Result<(), TestbedError> {
    ec2.create_subnet_cidr_reservation()
        .subnet_id(subnet_id)
        .cidr(net.to_string())
        .reservation_type(kind)
        .description("lab: taken by other workloads")
        .send()
        .await
        .map_err(sdk("CreateSubnetCidrReservation"))?;
    Ok(())
}

/// Reserves (`explicit`) all of `net` but the upper half of each /28 in it:
/// free single IPs, no free aligned /28.
async fn fragment_block(ec2: &aws_sdk_ec2::Client, subnet_id: &str, net: Ipv4Net) -> Result<(), TestbedError> {
    let holes = net.subnets(29).expect("valid prefix").step_by(2);
    futures::future::try_join_all(holes.map(|hole| reserve(ec2, subnet_id, hole, SubnetCidrReservationType::Explicit)))
        .await?;
    Ok(())
}

/// Halves `cidr` down to `/stop`, reserving (`explicit`) each lower half;
/// returns the last upper half, left free.
async fn reserve_down_to(
    ec2: &aws_sdk_ec2::Client,
    subnet_id: &str,
    cidr: Ipv4Net,
    stop: u8,
) -> Result<Ipv4Net, TestbedError> {
    let mut rest = cidr;
    while rest.prefix_len() < stop {
        let mut halves = rest.subnets(rest.prefix_len() + 1).expect("valid prefix");
        let (low, high) = (halves.next().expect("two halves"), halves.next().expect("two halves"));
        reserve(ec2, subnet_id, low, SubnetCidrReservationType::Explicit).await?;
        rest = high;
    }
    Ok(rest)
}

/// Fills a private subnet as `exhaustion` says.
async fn exhaust(
    ec2: &aws_sdk_ec2::Client,
    subnet_id: &str,
    cidr: Ipv4Net,
    exhaustion: Exhaustion,
) -> Result<(), TestbedError> {
    match exhaustion {
        Exhaustion::None => Ok(()),
        // The first 15/16 whole, then the last /23 fragmented.
        Exhaustion::Fragmented => {
            let rest = reserve_down_to(ec2, subnet_id, cidr, 23).await?;
            fragment_block(ec2, subnet_id, rest).await
        }
        // The first 3/4 whole but one /23, kept for prefixes; the last /21 fragmented.
        Exhaustion::PrefixReserved => {
            let mut quarters = cidr.subnets(cidr.prefix_len() + 2).expect("valid prefix");
            let (q0, q1, q2, q3) = (quarters.next(), quarters.next(), quarters.next(), quarters.next());
            let (q0, q1, q2, q3) = (q0.expect("four"), q1.expect("four"), q2.expect("four"), q3.expect("four"));
            reserve(ec2, subnet_id, q0, SubnetCidrReservationType::Explicit).await?;
            reserve(ec2, subnet_id, q1, SubnetCidrReservationType::Explicit).await?;
            let kept = reserve_down_to(ec2, subnet_id, q2, q2.prefix_len() + 2).await?;
            reserve(ec2, subnet_id, kept, SubnetCidrReservationType::Prefix).await?;
            fragment_block(ec2, subnet_id, q3).await
        }
    }
}

/// What EKS DescribeCluster says about the cluster's VPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterVpc {
    /// `resourcesVpcConfig.vpcId`, as AWS answers. moto keeps whatever
    /// `resourcesVpcConfig` it was sent, so the seed sends the VPC id too.
    Reported,
    /// No VPC id, as moto answers when given only what AWS accepts: headroom
    /// must find the VPC through the cluster's subnets.
    Omitted,
}

/// Seeds the scenario, with DescribeCluster reporting the VPC as AWS does.
/// `ec2`/`eks` should talk to moto directly (not through a fault proxy) so
/// seeding is neither counted nor faulted.
pub async fn seed(
    ec2: &aws_sdk_ec2::Client,
    eks: &aws_sdk_eks::Client,
    kube: &FakeKubeHandle,
    exhaustion: Exhaustion,
) -> Result<Lab, TestbedError> {
    seed_with(ec2, eks, kube, exhaustion, ClusterVpc::Reported).await
}

/// [`seed`], choosing what DescribeCluster says about the VPC.
pub async fn seed_with(
    ec2: &aws_sdk_ec2::Client,
    eks: &aws_sdk_eks::Client,
    kube: &FakeKubeHandle,
    exhaustion: Exhaustion,
    cluster_vpc: ClusterVpc,
) -> Result<Lab, TestbedError> {
    let vpc = ec2.create_vpc().cidr_block("192.168.0.0/16").send().await.map_err(sdk("CreateVpc"))?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).unwrap_or_default().to_string();
    tag(ec2, &vpc_id, "eksctl-demo-cluster/VPC").await?;

    let igw = ec2.create_internet_gateway().send().await.map_err(sdk("CreateInternetGateway"))?;
    let igw_id = igw.internet_gateway().and_then(|g| g.internet_gateway_id()).unwrap_or_default().to_string();
    ec2.attach_internet_gateway()
        .internet_gateway_id(&igw_id)
        .vpc_id(&vpc_id)
        .send()
        .await
        .map_err(sdk("AttachInternetGateway"))?;

    let public_route_table = route_table(ec2, &vpc_id, "demo-cluster/PublicRouteTable").await?;
    ec2.create_route()
        .route_table_id(&public_route_table)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw_id)
        .send()
        .await
        .map_err(sdk("CreateRoute"))?;

    let mut lab = Lab {
        vpc_id: vpc_id.clone(),
        public_subnets: Vec::new(),
        private_subnets: Vec::new(),
        private_route_tables: Vec::new(),
        public_route_table: public_route_table.clone(),
        cluster_security_group: String::new(),
    };
    for (i, az) in AZS.iter().enumerate() {
        let suffix = az.chars().last().unwrap_or('x').to_ascii_uppercase();
        let public = subnet(
            ec2,
            &vpc_id,
            az,
            &format!("192.168.{}.0/19", i * 32),
            &format!("demo-cluster/SubnetPublic{suffix}"),
            "kubernetes.io/role/elb",
        )
        .await?;
        ec2.associate_route_table()
            .route_table_id(&public_route_table)
            .subnet_id(&public)
            .send()
            .await
            .map_err(sdk("AssociateRouteTable"))?;

        let eip = ec2
            .allocate_address()
            .domain(aws_sdk_ec2::types::DomainType::Vpc)
            .send()
            .await
            .map_err(sdk("AllocateAddress"))?;
        let nat = ec2
            .create_nat_gateway()
            .subnet_id(&public)
            .allocation_id(eip.allocation_id().unwrap_or_default())
            .send()
            .await
            .map_err(sdk("CreateNatGateway"))?;
        let nat_id = nat.nat_gateway().and_then(|n| n.nat_gateway_id()).unwrap_or_default().to_string();

        let private_cidr: Ipv4Net = format!("192.168.{}.0/19", 96 + i * 32).parse().expect("static CIDR");
        let private = subnet(
            ec2,
            &vpc_id,
            az,
            &private_cidr.to_string(),
            &format!("demo-cluster/SubnetPrivate{suffix}"),
            "kubernetes.io/role/internal-elb",
        )
        .await?;
        let table = route_table(ec2, &vpc_id, &format!("demo-cluster/PrivateRouteTable{suffix}")).await?;
        ec2.create_route()
            .route_table_id(&table)
            .destination_cidr_block("0.0.0.0/0")
            .nat_gateway_id(&nat_id)
            .send()
            .await
            .map_err(sdk("CreateRoute"))?;
        ec2.associate_route_table()
            .route_table_id(&table)
            .subnet_id(&private)
            .send()
            .await
            .map_err(sdk("AssociateRouteTable"))?;
        exhaust(ec2, &private, private_cidr, exhaustion).await?;
        lab.public_subnets.push(public);
        lab.private_subnets.push(private);
        lab.private_route_tables.push(table);
    }

    let sg = ec2
        .create_security_group()
        .vpc_id(&vpc_id)
        .group_name("eks-cluster-sg-demo-cluster")
        .description("EKS created security group applied to ENI that is attached to EKS Control Plane master nodes, as well as any managed workloads.")
        .send()
        .await
        .map_err(sdk("CreateSecurityGroup"))?;
    lab.cluster_security_group = sg.group_id().unwrap_or_default().to_string();

    let all_subnets: Vec<String> = lab.private_subnets.iter().chain(&lab.public_subnets).cloned().collect();
    let reported_vpc = vpc_id.clone();
    eks.create_cluster()
        .name(CLUSTER)
        .role_arn("arn:aws:iam::123456789012:role/demo-cluster-ClusterRole")
        .resources_vpc_config(
            aws_sdk_eks::types::VpcConfigRequest::builder()
                .set_subnet_ids(Some(all_subnets))
                .security_group_ids(&lab.cluster_security_group)
                .build(),
        )
        .customize()
        .mutate_request(move |request| {
            if cluster_vpc == ClusterVpc::Reported {
                report_vpc_id(request, &reported_vpc);
            }
        })
        .send()
        .await
        .map_err(sdk("CreateCluster"))?;

    seed_built_in_objects(kube, &lab.private_subnets, json!([{"id": lab.cluster_security_group}]))?;
    Ok(lab)
}

/// What EKS Auto Mode creates in a new cluster's API: the `default`
/// NodeClass on `subnets` with `security_groups` (selector terms), and the
/// built-in NodePools.
fn seed_built_in_objects(
    kube: &FakeKubeHandle,
    subnets: &[String],
    security_groups: serde_json::Value,
) -> Result<(), TestbedError> {
    kube.put_object(
        crate::fake_kube::NODECLASSES,
        json!({
            "apiVersion": "eks.amazonaws.com/v1",
            "kind": "NodeClass",
            "metadata": {"name": "default", "labels": {"app.kubernetes.io/managed-by": "eks"}},
            "spec": {
                "role": NODE_ROLE,
                "subnetSelectorTerms": subnets.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
                "securityGroupSelectorTerms": security_groups,
                "networkPolicy": "DefaultAllow",
                "snatPolicy": "Random"
            }
        }),
    )?;
    for name in BUILT_IN_NODEPOOLS {
        kube.put_object(crate::fake_kube::NODEPOOLS, built_in_nodepool(name))?;
    }
    Ok(())
}

/// A built-in Auto Mode NodePool as EKS creates it: `general-purpose` for
/// workloads, `system` (tainted `CriticalAddonsOnly`) for add-ons.
fn built_in_nodepool(name: &str) -> serde_json::Value {
    let mut pool = json!({
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "eks"}},
        "spec": {
            "disruption": {"budgets": [{"nodes": "10%"}], "consolidateAfter": "30s", "consolidationPolicy": "WhenEmptyOrUnderutilized"},
            "template": {"spec": {
                "expireAfter": "336h",
                "nodeClassRef": {"group": "eks.amazonaws.com", "kind": "NodeClass", "name": "default"},
                "requirements": [
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                    {"key": "eks.amazonaws.com/instance-category", "operator": "In", "values": ["c", "m", "r"]},
                    {"key": "eks.amazonaws.com/instance-generation", "operator": "Gt", "values": ["4"]},
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}
                ]
            }}
        }
    });
    if name == "system" {
        pool["spec"]["template"]["spec"]["taints"] =
            json!([{"key": "CriticalAddonsOnly", "value": "true", "effect": "NoSchedule"}]);
        pool["spec"]["template"]["spec"]["requirements"][3]["values"] = json!(["amd64", "arm64"]);
    }
    pool
}

/// What EKS knows of the lab's cluster that moto does not keep: it is an
/// Auto Mode cluster with its node role. Set on the proxy, which adds it
/// to DescribeCluster.
pub fn seed_auto_mode(proxy: &FaultProxyHandle) {
    set_auto_mode(proxy, CLUSTER);
}

fn set_auto_mode(proxy: &FaultProxyHandle, cluster: &str) {
    proxy.set_compute_config(
        cluster,
        json!({"enabled": true, "nodePools": BUILT_IN_NODEPOOLS, "nodeRoleArn": NODE_ROLE_ARN}),
    );
}

/// Adds `resourcesVpcConfig.vpcId` to a CreateCluster request: AWS fills it
/// in itself, moto stores what it is given.
fn report_vpc_id(request: &mut aws_smithy_runtime_api::http::Request, vpc_id: &str) {
    let Some(mut body) = request.body().bytes().and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
    else {
        return;
    };
    body["resourcesVpcConfig"]["vpcId"] = json!(vpc_id);
    let bytes = serde_json::to_vec(&body).expect("JSON serialises");
    request.headers_mut().insert("content-length", bytes.len().to_string());
    *request.body_mut() = aws_smithy_types::body::SdkBody::from(bytes);
}

/// Associates four more /16s with the lab's VPC, straight into moto: with
/// the primary, the default quota of five IPv4 CIDRs per VPC. Public ranges
/// are allowed next to a 192.168.0.0/16 primary (docs/aws-rules.md, "Secondary VPC CIDRs").
pub async fn fill_vpc_cidr_quota(ec2: &aws_sdk_ec2::Client, vpc_id: &str) -> Result<(), TestbedError> {
    for cidr in ["192.169.0.0/16", "192.170.0.0/16", "192.171.0.0/16", "192.172.0.0/16"] {
        ec2.associate_vpc_cidr_block()
            .vpc_id(vpc_id)
            .cidr_block(cidr)
            .send()
            .await
            .map_err(sdk("AssociateVpcCidrBlock"))?;
    }
    Ok(())
}

/// A new VPC `peer_cidr` peered with `vpc_id` (the connection left as moto
/// makes it), and a route to `destination` through the peering in
/// `route_table`, straight into moto. Returns the peering connection's id.
pub async fn route_through_new_peer(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    route_table: &str,
    peer_cidr: &str,
    destination: &str,
) -> Result<String, TestbedError> {
    let peer = ec2.create_vpc().cidr_block(peer_cidr).send().await.map_err(sdk("CreateVpc"))?;
    let peer_id = peer.vpc().and_then(|v| v.vpc_id()).unwrap_or_default();
    let pcx = ec2
        .create_vpc_peering_connection()
        .vpc_id(vpc_id)
        .peer_vpc_id(peer_id)
        .send()
        .await
        .map_err(sdk("CreateVpcPeeringConnection"))?;
    let pcx_id =
        pcx.vpc_peering_connection().and_then(|p| p.vpc_peering_connection_id()).unwrap_or_default().to_owned();
    ec2.create_route()
        .route_table_id(route_table)
        .destination_cidr_block(destination)
        .vpc_peering_connection_id(&pcx_id)
        .send()
        .await
        .map_err(sdk("CreateRoute"))?;
    Ok(pcx_id)
}

/// The VPC's subnets that carry `key=value`, through `ec2` (use a direct client).
pub async fn subnets_tagged(
    ec2: &aws_sdk_ec2::Client,
    vpc_id: &str,
    key: &str,
    value: &str,
) -> Result<Vec<aws_sdk_ec2::types::Subnet>, TestbedError> {
    let out = ec2
        .describe_subnets()
        .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
        .filters(Filter::builder().name(format!("tag:{key}")).values(value).build())
        .send()
        .await
        .map_err(sdk("DescribeSubnets"))?;
    Ok(out.subnets().to_vec())
}

/// A second VPC (10.0.0.0/16) with roomy /20 subnets in each AZ, and a
/// cluster for each of `clusters` (name, tags) on them: for one deployment
/// that manages several clusters. Only EKS knows the clusters; give one an
/// API server with [`seed_cluster_api`].
pub struct SecondVpc {
    pub vpc_id: String,
    pub subnets: Vec<String>,
}

pub async fn seed_second_vpc(
    ec2: &aws_sdk_ec2::Client,
    eks: &aws_sdk_eks::Client,
    vpc_tags: &[(&str, &str)],
    clusters: &[(&str, &[(&str, &str)])],
) -> Result<SecondVpc, TestbedError> {
    let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.map_err(sdk("CreateVpc"))?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).unwrap_or_default().to_string();
    tag_with(ec2, &vpc_id, vpc_tags).await?;
    let mut subnets = Vec::new();
    for (i, az) in AZS.iter().enumerate() {
        let out = ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .availability_zone(*az)
            .cidr_block(format!("10.0.{}.0/20", i * 16))
            .send()
            .await
            .map_err(sdk("CreateSubnet"))?;
        subnets.push(out.subnet().and_then(|s| s.subnet_id()).unwrap_or_default().to_string());
    }
    for (name, tags) in clusters {
        let reported_vpc = vpc_id.clone();
        let mut create = eks
            .create_cluster()
            .name(*name)
            .role_arn("arn:aws:iam::123456789012:role/ClusterRole")
            .resources_vpc_config(
                aws_sdk_eks::types::VpcConfigRequest::builder().set_subnet_ids(Some(subnets.clone())).build(),
            );
        for (key, value) in *tags {
            create = create.tags(*key, *value);
        }
        create
            .customize()
            .mutate_request(move |request| report_vpc_id(request, &reported_vpc))
            .send()
            .await
            .map_err(sdk("CreateCluster"))?;
    }
    Ok(SecondVpc { vpc_id, subnets })
}

/// Tags `id` (a VPC, say) with `tags`.
pub async fn tag_with(ec2: &aws_sdk_ec2::Client, id: &str, tags: &[(&str, &str)]) -> Result<(), TestbedError> {
    if tags.is_empty() {
        return Ok(());
    }
    let mut request = ec2.create_tags().resources(id);
    for (key, value) in tags {
        request = request.tags(aws_sdk_ec2::types::Tag::builder().key(*key).value(*value).build());
    }
    request.send().await.map_err(sdk("CreateTags"))?;
    Ok(())
}

/// What EKS Auto Mode sets up in a new cluster's API: the `default`
/// NodeClass on `subnets` and the built-in NodePools; and, on the proxy,
/// the cluster's Auto Mode compute config.
pub fn seed_cluster_api(
    kube: &FakeKubeHandle,
    proxy: &FaultProxyHandle,
    cluster: &str,
    subnets: &[String],
) -> Result<(), TestbedError> {
    let mut security_group_tags = serde_json::Map::new();
    security_group_tags.insert(format!("kubernetes.io/cluster/{cluster}"), json!("owned"));
    seed_built_in_objects(kube, subnets, json!([{ "tags": security_group_tags }]))?;
    set_auto_mode(proxy, cluster);
    Ok(())
}
