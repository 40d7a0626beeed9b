//! The lab's scenario (../shared/reference/seed-eks-auto-mode-advanced-networking-lab.txt),
//! seeded into moto and the fake Kubernetes API: VPC 192.168.0.0/16 in three
//! AZs, a public and a private subnet per AZ, an internet gateway, one NAT
//! gateway and private route table per AZ, an EKS cluster on those subnets,
//! and the built-in `default` NodeClass.
//!
//! moto has no prefix delegation, so exhaustion is modelled the way
//! aws-facts.md §6 suggests: prefix-type subnet CIDR reservations fill most
//! of each private subnet and leave the rest fragmented, with free IPs but
//! not one free aligned /28.

use aws_sdk_ec2::types::{Filter, SubnetCidrReservationType};
use ipnet::Ipv4Net;
use serde_json::json;

use crate::{FakeKubeHandle, TestbedError};

pub const CLUSTER: &str = "demo-cluster";
pub const REGION: &str = "us-west-2";
pub const AZS: [&str; 3] = ["us-west-2a", "us-west-2b", "us-west-2c"];
pub const NODE_ROLE: &str = "AmazonEKSAutoNodeRole";

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
    /// Free addresses left only as scattered 8-address holes: no /28 prefix.
    Fragmented,
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

/// Reserves (type prefix) everything in `subnet` but 8-address holes, one per /28 of its last /23.
async fn fragment(ec2: &aws_sdk_ec2::Client, subnet_id: &str, cidr: Ipv4Net) -> Result<(), TestbedError> {
    let reserve = |net: Ipv4Net| {
        ec2.create_subnet_cidr_reservation()
            .subnet_id(subnet_id)
            .cidr(net.to_string())
            .reservation_type(SubnetCidrReservationType::Prefix)
            .description("lab: taken by other workloads")
            .send()
    };
    // The first 15/16 of the subnet: whole.
    let mut rest = cidr;
    while rest.prefix_len() < 23 {
        let mut halves = rest.subnets(rest.prefix_len() + 1).expect("valid prefix");
        let (low, high) = (halves.next().expect("two halves"), halves.next().expect("two halves"));
        reserve(low).await.map_err(sdk("CreateSubnetCidrReservation"))?;
        rest = high;
    }
    // The last /23: the first half of every /28, so no /28 is whole.
    let holes = rest.subnets(29).expect("valid prefix").step_by(2);
    futures::future::try_join_all(holes.map(reserve)).await.map_err(sdk("CreateSubnetCidrReservation"))?;
    Ok(())
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
        if exhaustion == Exhaustion::Fragmented {
            fragment(ec2, &private, private_cidr).await?;
        }
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

    kube.put_object(
        crate::fake_kube::NODECLASSES,
        json!({
            "apiVersion": "eks.amazonaws.com/v1",
            "kind": "NodeClass",
            "metadata": {"name": "default", "labels": {"app.kubernetes.io/managed-by": "eks"}},
            "spec": {
                "role": NODE_ROLE,
                "subnetSelectorTerms": lab.private_subnets.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
                "securityGroupSelectorTerms": [{"id": lab.cluster_security_group}],
                "networkPolicy": "DefaultAllow",
                "snatPolicy": "Random"
            }
        }),
    )?;
    Ok(lab)
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
/// are allowed next to a 192.168.0.0/16 primary (aws-facts.md §1).
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
