//! Self-tests of the fault-injecting proxy, driven by the AWS SDK for Rust
//! against a real moto server.

use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use headroom_testbed::{DEFAULT_REGION, Fault, LocalAws, Selector, init_test_tracing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start() -> LocalAws {
    init_test_tracing();
    LocalAws::start().await.expect("local AWS starts (run scripts/setup-moto.sh)")
}

async fn ec2(aws: &LocalAws, retry: RetryConfig) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&aws.sdk_config_with_retry(DEFAULT_REGION, retry).await)
}

fn code<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> Option<String> {
    error.as_service_error().and_then(|e| e.code()).map(str::to_owned)
}

async fn default_vpc(direct: &aws_sdk_ec2::Client) -> String {
    direct.describe_vpcs().send().await.unwrap().vpcs()[0].vpc_id().unwrap().to_owned()
}

async fn subnets_with_cidr(direct: &aws_sdk_ec2::Client, cidr: &str) -> usize {
    direct
        .describe_subnets()
        .filters(Filter::builder().name("cidr-block").values(cidr).build())
        .send()
        .await
        .unwrap()
        .subnets()
        .len()
}

#[tokio::test]
async fn forwards_and_counts_by_action_and_service() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    let direct = aws.direct_ec2(DEFAULT_REGION).await;
    let vpc = default_vpc(&direct).await;

    let vpcs = client.describe_vpcs().send().await.expect("DescribeVpcs via proxy");
    assert_eq!(vpcs.vpcs().len(), 1);
    // A request with a body full of parameters arrives intact.
    let created = client
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("172.31.200.0/24")
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Subnet)
                .tags(Tag::builder().key("headroom/managed").value("a value with spaces & symbols=/+").build())
                .build(),
        )
        .send()
        .await
        .expect("CreateSubnet via proxy");
    let subnet_id = created.subnet().unwrap().subnet_id().unwrap();
    let seen = direct.describe_subnets().subnet_ids(subnet_id).send().await.unwrap();
    let tag = &seen.subnets()[0].tags()[0];
    assert_eq!(tag.key(), Some("headroom/managed"));
    assert_eq!(tag.value(), Some("a value with spaces & symbols=/+"));
    client.describe_vpcs().send().await.unwrap();

    let calls = aws.proxy().calls();
    assert_eq!(calls.get("DescribeVpcs"), Some(&2));
    assert_eq!(calls.get("CreateSubnet"), Some(&1));
    assert_eq!(calls.len(), 2, "direct calls are not counted: {calls:?}");
    let log = aws.proxy().call_log();
    assert!(log.iter().all(|r| r.service == "ec2" && r.status == Some(200) && r.forwarded));
    let mutating: Vec<_> = aws.proxy().mutating_calls().into_iter().map(|r| r.action).collect();
    assert_eq!(mutating, ["CreateSubnet"]);

    aws.proxy().reset_counters();
    assert!(aws.proxy().calls().is_empty());
}

#[tokio::test]
async fn throttling_fails_without_retries_and_is_retried_with_standard_retries() {
    let aws = start().await;
    aws.proxy().throttle_every(1);

    let no_retry = ec2(&aws, RetryConfig::disabled()).await;
    let error = no_retry.describe_vpcs().send().await.expect_err("throttled");
    assert_eq!(code(&error).as_deref(), Some("RequestLimitExceeded"));
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(503));
    assert_eq!(aws.proxy().call_count("DescribeVpcs"), 1);

    // Standard retries classify it as throttling and try 3 times in all.
    aws.proxy().reset_counters();
    let retrying = ec2(&aws, headroom_testbed::test_retry_config()).await;
    let error = retrying.describe_vpcs().send().await.expect_err("throttled on every attempt");
    assert_eq!(code(&error).as_deref(), Some("RequestLimitExceeded"));
    assert_eq!(aws.proxy().call_count("DescribeVpcs"), 3);
    assert_eq!(aws.proxy().forwarded_count("DescribeVpcs"), 0);

    // Every other call throttled: each operation succeeds on its retry.
    aws.proxy().reset_counters();
    aws.proxy().throttle_every(2);
    for _ in 0..5 {
        retrying.describe_vpcs().send().await.expect("retried past throttling");
    }
    let log = aws.proxy().call_log();
    assert_eq!(log.len(), 9, "1 + 4 × (throttled + retry)");
    assert_eq!(log.iter().filter(|r| r.injected == Some(Fault::Throttle)).count(), 4);

    // Without retries the same pattern surfaces on the second call.
    aws.proxy().throttle_every(2);
    no_retry.describe_vpcs().send().await.expect("first call passes");
    assert!(no_retry.describe_vpcs().send().await.is_err(), "second call is throttled");
}

#[tokio::test]
async fn throttle_every_from_offset_and_scope() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    aws.proxy().throttle_scope(Some(Selector::Action("DescribeSubnets".into())));
    aws.proxy().throttle_every_from(2, 1);
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(client.describe_subnets().send().await.is_ok());
        client.describe_vpcs().send().await.expect("out of scope: never throttled");
    }
    assert_eq!(outcomes, [true, true, false, true, false]);
}

#[tokio::test]
async fn seeded_fractional_throttling_is_reproducible() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    let mut runs = Vec::new();
    for seed in [42, 42, 43] {
        aws.proxy().throttle_fraction(0.5, seed);
        let mut outcome = Vec::new();
        for _ in 0..24 {
            outcome.push(client.describe_vpcs().send().await.is_ok());
        }
        runs.push(outcome);
    }
    assert_eq!(runs[0], runs[1], "same seed, same throttled calls");
    assert_ne!(runs[0], runs[2], "another seed, another pattern");
    let throttled = runs[0].iter().filter(|ok| !**ok).count();
    assert!((4..=20).contains(&throttled), "{throttled}/24 throttled at p=0.5");
}

#[tokio::test]
async fn cloudwatch_and_eks_throttling_use_their_protocols_error_shapes() {
    let aws = start().await;
    aws.proxy().throttle_every(1);
    let config = aws.sdk_config_with_retry(DEFAULT_REGION, RetryConfig::disabled()).await;

    let cloudwatch = aws_sdk_cloudwatch::Client::new(&config);
    let error = cloudwatch.list_metrics().send().await.expect_err("throttled");
    assert_eq!(error.as_service_error().and_then(|e| e.code()), Some("Throttling"));
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(400));

    let eks = aws_sdk_eks::Client::new(&config);
    let error = eks.list_clusters().send().await.expect_err("throttled");
    assert_eq!(error.as_service_error().and_then(|e| e.code()), Some("ThrottlingException"));
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(429));

    let log = aws.proxy().call_log();
    let seen: Vec<_> = log.iter().map(|r| (r.service.as_str(), r.action.as_str())).collect();
    assert_eq!(seen, [("monitoring", "ListMetrics"), ("eks", "ListClusters")]);

    // And both retry to success under standard retries.
    aws.proxy().throttle_every(2);
    let config = aws.sdk_config(DEFAULT_REGION).await;
    aws_sdk_cloudwatch::Client::new(&config).list_metrics().send().await.expect("ok");
    aws_sdk_cloudwatch::Client::new(&config).list_metrics().send().await.expect("retried");
    aws_sdk_eks::Client::new(&config).list_clusters().send().await.expect("retried");
}

#[tokio::test]
async fn server_error_on_the_nth_mutating_call() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    let direct = aws.direct_ec2(DEFAULT_REGION).await;
    let vpc = default_vpc(&direct).await;
    aws.proxy().fail_nth_mutating(2, Fault::ServerError);

    client.describe_vpcs().send().await.unwrap();
    client.create_subnet().vpc_id(&vpc).cidr_block("172.31.201.0/24").send().await.expect("1st mutating");
    client.describe_subnets().send().await.unwrap();
    let error = client
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("172.31.202.0/24")
        .send()
        .await
        .expect_err("2nd mutating call fails");
    assert_eq!(code(&error).as_deref(), Some("InternalError"));
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(500));
    assert_eq!(subnets_with_cidr(&direct, "172.31.202.0/24").await, 0, "never forwarded");
    client.create_subnet().vpc_id(&vpc).cidr_block("172.31.203.0/24").send().await.expect("fires once");
}

#[tokio::test]
async fn drop_before_forward_never_reaches_moto() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    let direct = aws.direct_ec2(DEFAULT_REGION).await;
    let vpc = default_vpc(&direct).await;
    aws.proxy().fail_nth("CreateSubnet", 1, Fault::DropBeforeForward);

    let error =
        client.create_subnet().vpc_id(&vpc).cidr_block("172.31.210.0/24").send().await.expect_err("connection dropped");
    assert!(matches!(error, SdkError::DispatchFailure(_)), "{error:?}");
    assert_eq!(subnets_with_cidr(&direct, "172.31.210.0/24").await, 0);
    let record = &aws.proxy().call_log()[0];
    assert_eq!((record.status, record.forwarded), (None, false));

    // The SDK's standard retries treat it as transient and try again.
    aws.proxy().fail_nth("CreateSubnet", 1, Fault::DropBeforeForward);
    let retrying = ec2(&aws, headroom_testbed::test_retry_config()).await;
    retrying
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("172.31.211.0/24")
        .send()
        .await
        .expect("retried after the dropped attempt");
    assert_eq!(subnets_with_cidr(&direct, "172.31.211.0/24").await, 1);
}

#[tokio::test]
async fn drop_after_forward_fails_the_call_but_the_subnet_exists() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    let direct = aws.direct_ec2(DEFAULT_REGION).await;
    let vpc = default_vpc(&direct).await;
    aws.proxy().fail_nth("CreateSubnet", 1, Fault::DropAfterForward);

    let started = Instant::now();
    let error =
        client.create_subnet().vpc_id(&vpc).cidr_block("172.31.220.0/24").send().await.expect_err("response dropped");
    assert!(started.elapsed() < Duration::from_secs(10), "EOF, not a timeout");
    assert!(matches!(error, SdkError::DispatchFailure(_)), "{error:?}");
    assert_eq!(
        subnets_with_cidr(&direct, "172.31.220.0/24").await,
        1,
        "moto created the subnet although the client saw a failure"
    );
    let record = &aws.proxy().call_log()[0];
    assert_eq!(record.injected, Some(Fault::DropAfterForward));
    assert_eq!((record.status, record.forwarded), (None, true));

    // The proxy keeps serving new connections afterwards.
    client.describe_vpcs().send().await.expect("proxy still up");
}

#[tokio::test]
async fn drop_after_forward_with_sdk_retries_surfaces_the_duplicate() {
    // The SDK retries the lost response; moto already created the subnet, so
    // the retry is refused as a conflict. Code under test must reconcile.
    let aws = start().await;
    let client = ec2(&aws, headroom_testbed::test_retry_config()).await;
    let direct = aws.direct_ec2(DEFAULT_REGION).await;
    let vpc = default_vpc(&direct).await;
    aws.proxy().fail_nth("CreateSubnet", 1, Fault::DropAfterForward);

    let error =
        client.create_subnet().vpc_id(&vpc).cidr_block("172.31.230.0/24").send().await.expect_err("retry conflicts");
    assert_eq!(code(&error).as_deref(), Some("InvalidSubnet.Conflict"));
    assert_eq!(aws.proxy().call_count("CreateSubnet"), 2);
    assert_eq!(subnets_with_cidr(&direct, "172.31.230.0/24").await, 1);
}

#[tokio::test]
async fn associating_polls_then_associated() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    let vpc = default_vpc(&aws.direct_ec2(DEFAULT_REGION).await).await;
    aws.proxy().associating_polls(3);

    let associated = client
        .associate_vpc_cidr_block()
        .vpc_id(&vpc)
        .cidr_block("100.64.0.0/16")
        .send()
        .await
        .expect("AssociateVpcCidrBlock");
    let association = associated.cidr_block_association().unwrap();
    let association_id = association.association_id().unwrap().to_owned();
    assert_eq!(state_str(association.cidr_block_state()), "associating");

    let mut states = Vec::new();
    for _ in 0..5 {
        let vpcs = client.describe_vpcs().vpc_ids(&vpc).send().await.unwrap();
        let sets = vpcs.vpcs()[0].cidr_block_association_set();
        let ours = sets.iter().find(|a| a.association_id() == Some(association_id.as_str())).unwrap();
        let primary = sets.iter().find(|a| a.cidr_block() == Some("172.31.0.0/16")).unwrap();
        assert_eq!(state_str(primary.cidr_block_state()), "associated", "others untouched");
        states.push(state_str(ours.cidr_block_state()));
    }
    assert_eq!(states, ["associating", "associating", "associating", "associated", "associated"]);
}

#[tokio::test]
async fn association_can_fail() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    let vpc = default_vpc(&aws.direct_ec2(DEFAULT_REGION).await).await;
    aws.proxy().associating_polls(1);
    aws.proxy().association_fails();

    client.associate_vpc_cidr_block().vpc_id(&vpc).cidr_block("100.65.0.0/16").send().await.unwrap();
    let mut states = Vec::new();
    for _ in 0..3 {
        let vpcs = client.describe_vpcs().vpc_ids(&vpc).send().await.unwrap();
        let ours = vpcs.vpcs()[0]
            .cidr_block_association_set()
            .iter()
            .find(|a| a.cidr_block() == Some("100.65.0.0/16"))
            .unwrap()
            .clone();
        states.push(state_str(ours.cidr_block_state()));
    }
    assert_eq!(states, ["associating", "failed", "failed"]);
}

fn state_str(state: Option<&aws_sdk_ec2::types::VpcCidrBlockState>) -> String {
    state.and_then(|s| s.state()).map(|s| s.as_str().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn latency_is_added_to_every_call() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    client.describe_vpcs().send().await.unwrap(); // warm the connection
    aws.proxy().set_latency(Duration::from_millis(300));
    let started = Instant::now();
    client.describe_vpcs().send().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    aws.proxy().reset_faults();
    let started = Instant::now();
    client.describe_vpcs().send().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn chunked_request_bodies_are_forwarded() {
    let aws = start().await;
    let addr = aws.endpoint().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = "Action=DescribeVpcs&Version=2016-11-15";
    let (first, second) = body.split_at(10);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
         Transfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
        first.len(),
        second.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("<DescribeVpcsResponse"), "{response}");
    assert_eq!(aws.proxy().call_count("DescribeVpcs"), 1);
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_port() {
    let aws = start().await;
    let addr = aws.endpoint().trim_start_matches("http://").to_owned();
    let client = ec2(&aws, RetryConfig::disabled()).await;
    client.describe_vpcs().send().await.unwrap();
    drop(aws);
    tokio::task::yield_now().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(&addr).await.is_ok() {
        assert!(Instant::now() < deadline, "proxy still listening after drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(client.describe_vpcs().send().await.is_err(), "pooled connections are gone too");
}

// --- The VPC CIDR rules (on by default in LocalAws) -------------------------

async fn associate(
    client: &aws_sdk_ec2::Client,
    vpc: &str,
    cidr: &str,
) -> Result<String, (Option<String>, Option<String>, Option<u16>)> {
    match client.associate_vpc_cidr_block().vpc_id(vpc).cidr_block(cidr).send().await {
        Ok(out) => Ok(out.cidr_block_association().and_then(|a| a.association_id()).unwrap_or_default().to_owned()),
        Err(error) => Err((
            code(&error),
            error.as_service_error().and_then(|e| e.message()).map(str::to_owned),
            error.raw_response().map(|r| r.status().as_u16()),
        )),
    }
}

async fn live_ipv4_cidrs(direct: &aws_sdk_ec2::Client, vpc: &str) -> Vec<String> {
    let vpcs = direct.describe_vpcs().vpc_ids(vpc).send().await.unwrap();
    let mut cidrs: Vec<String> = vpcs.vpcs()[0]
        .cidr_block_association_set()
        .iter()
        .filter(|a| state_str(a.cidr_block_state()) != "disassociated")
        .filter_map(|a| a.cidr_block().map(str::to_owned))
        .collect();
    cidrs.sort();
    cidrs
}

#[tokio::test]
async fn vpc_cidr_rules_refuse_overlaps_like_aws() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    let direct = aws.direct_ec2(DEFAULT_REGION).await;
    let vpc = default_vpc(&direct).await;

    let first = associate(&client, &vpc, "100.64.0.0/16").await.expect("a new range is accepted");
    for overlapping in ["100.64.0.0/16", "100.64.128.0/17", "100.64.0.0/15", "172.31.16.0/20"] {
        let (code, message, status) = associate(&client, &vpc, overlapping).await.expect_err(overlapping);
        assert_eq!(code.as_deref(), Some("InvalidVpc.Range"), "{overlapping}");
        assert_eq!(
            message.as_deref(),
            Some(format!("The CIDR '{overlapping}' conflicts with another subnet").as_str())
        );
        assert_eq!(status, Some(400));
    }
    assert_eq!(
        live_ipv4_cidrs(&direct, &vpc).await,
        ["100.64.0.0/16", "172.31.0.0/16"],
        "nothing refused reached moto"
    );
    let refused = aws.proxy().call_log().into_iter().filter(|r| r.status == Some(400)).count();
    assert_eq!(refused, 4);
    assert!(
        aws.proxy().call_log().iter().all(|r| r.action == "AssociateVpcCidrBlock"),
        "the rule's own DescribeVpcs goes straight to moto, uncounted"
    );

    // A disassociated block is free again.
    client.disassociate_vpc_cidr_block().association_id(&first).send().await.expect("disassociate");
    associate(&client, &vpc, "100.64.0.0/16").await.expect("re-associating a disassociated range is allowed");

    // Off: moto's own behaviour, which lists the same block twice.
    aws.proxy().enforce_vpc_cidr_rules(false);
    associate(&client, &vpc, "100.64.0.0/16").await.expect("moto accepts the duplicate");
    let duplicates = live_ipv4_cidrs(&direct, &vpc).await.into_iter().filter(|c| c == "100.64.0.0/16").count();
    assert_eq!(duplicates, 2, "why the rule exists");
}

#[tokio::test]
async fn vpc_cidr_rules_enforce_the_quota_of_five() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    let direct = aws.direct_ec2(DEFAULT_REGION).await;
    let vpc = default_vpc(&direct).await;
    for cidr in ["100.64.0.0/16", "100.65.0.0/16", "100.66.0.0/16", "100.67.0.0/16"] {
        associate(&client, &vpc, cidr).await.expect(cidr);
    }
    let (code, message, status) = associate(&client, &vpc, "100.68.0.0/16").await.expect_err("sixth block");
    assert_eq!(code.as_deref(), Some("CidrLimitExceeded"));
    assert_eq!(message, Some(format!("This network '{vpc}' has met its maximum number of allowed CIDRs: 5")));
    assert_eq!(status, Some(400));
    assert_eq!(aws.proxy().forwarded_count("AssociateVpcCidrBlock"), 4, "refused by the proxy, before moto");
    // moto agrees once the proxy steps aside.
    aws.proxy().enforce_vpc_cidr_rules(false);
    let (code, _, _) = associate(&client, &vpc, "100.68.0.0/16").await.expect_err("moto's own limit");
    assert_eq!(code.as_deref(), Some("CidrLimitExceeded"));
}

#[tokio::test]
async fn concurrent_identical_associations_are_serialised_and_one_wins() {
    let aws = start().await;
    let direct = aws.direct_ec2(DEFAULT_REGION).await;
    let vpc = default_vpc(&direct).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        // A client each, so the calls travel on separate connections.
        let client = ec2(&aws, RetryConfig::disabled()).await;
        let vpc = vpc.clone();
        tasks.push(tokio::spawn(async move { associate(&client, &vpc, "100.64.0.0/16").await }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err((code, _, _)) => assert_eq!(code.as_deref(), Some("InvalidVpc.Range")),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(live_ipv4_cidrs(&direct, &vpc).await, ["100.64.0.0/16", "172.31.0.0/16"]);
}

#[tokio::test]
async fn faults_win_over_the_vpc_cidr_rules() {
    // A dropped-after-forward association acted in moto; the retry is then
    // refused as AWS would refuse it, which is what code under test must handle.
    let aws = start().await;
    let client = ec2(&aws, headroom_testbed::test_retry_config()).await;
    let vpc = default_vpc(&aws.direct_ec2(DEFAULT_REGION).await).await;
    aws.proxy().fail_nth("AssociateVpcCidrBlock", 1, Fault::DropAfterForward);
    let (code, _, _) = associate(&client, &vpc, "100.64.0.0/16")
        .await
        .expect_err("the SDK's retry meets the association its first attempt made");
    assert_eq!(code.as_deref(), Some("InvalidVpc.Range"));
    assert_eq!(aws.proxy().forwarded_count("AssociateVpcCidrBlock"), 1);
}

#[tokio::test]
async fn a_crash_stops_every_call_after_the_kth_mutating_one() {
    let aws = start().await;
    let client = ec2(&aws, headroom_testbed::test_retry_config()).await;
    let direct = aws.direct_ec2(DEFAULT_REGION).await;
    let vpc = default_vpc(&direct).await;
    aws.proxy().crash_at_nth_mutating(2, Fault::DropAfterForward);

    client.create_subnet().vpc_id(&vpc).cidr_block("172.31.240.0/24").send().await.expect("1st mutating call passes");
    assert!(!aws.proxy().has_crashed());
    let error =
        client.create_subnet().vpc_id(&vpc).cidr_block("172.31.241.0/24").send().await.expect_err("the answer is lost");
    // The SDK retried the dropped call once; the caller is "dead", so the
    // retry never reaches moto and is refused with a code nobody retries.
    assert_eq!(code(&error).as_deref(), Some("TestbedClientCrashed"));
    assert!(aws.proxy().has_crashed());
    assert_eq!(subnets_with_cidr(&direct, "172.31.241.0/24").await, 1, "the crashing call acted");
    let error = client.describe_vpcs().send().await.expect_err("reads stop too");
    assert_eq!(code(&error).as_deref(), Some("TestbedClientCrashed"));
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(400));
    let eks = aws_sdk_eks::Client::new(&aws.sdk_config(DEFAULT_REGION).await);
    assert!(eks.list_clusters().send().await.is_err(), "every service");
    let crashed: Vec<_> = aws.proxy().call_log().into_iter().filter(|r| r.injected == Some(Fault::Crashed)).collect();
    assert_eq!(crashed.len(), 3);
    assert!(crashed.iter().all(|r| !r.forwarded && r.status == Some(400)));

    aws.proxy().reset_faults();
    client.describe_vpcs().send().await.expect("reset_faults revives the caller");
}

#[tokio::test]
async fn the_timeline_orders_calls_and_shows_latency() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    aws.proxy().set_latency(Duration::from_millis(100));
    client.describe_vpcs().send().await.unwrap();
    client.describe_subnets().send().await.unwrap();
    let timeline = aws.proxy().timeline();
    assert_eq!(timeline.len(), 2);
    assert_eq!(timeline[0].arrived, Duration::ZERO);
    assert_eq!(timeline[1].action, "DescribeSubnets");
    let first_done = timeline[0].finished.expect("answered");
    assert!(first_done >= Duration::from_millis(100));
    assert!(timeline[1].arrived >= first_done);
    aws.proxy().reset_counters();
    assert!(aws.proxy().timeline().is_empty());
}

#[tokio::test]
async fn as_call_duration_the_latency_holds_back_each_answer_and_moto_still_answers() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    let latency = Duration::from_millis(150);
    aws.proxy().set_latency(latency);
    aws.proxy().set_latency_model(headroom_testbed::LatencyModel::CallDuration);
    let (vpcs, subnets) = futures::join!(client.describe_vpcs().send(), client.describe_subnets().send());
    assert!(!vpcs.unwrap().vpcs().is_empty(), "moto's default VPC");
    assert!(!subnets.unwrap().subnets().is_empty());
    let timeline = aws.proxy().timeline();
    assert_eq!(timeline.len(), 2);
    for call in &timeline {
        let finished = call.finished.expect("answered");
        assert!(finished - call.arrived >= latency, "{call:?} answered before its latency elapsed");
    }
}

#[tokio::test]
async fn route_table_rules_refuse_a_second_association_like_aws() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    let direct = aws.direct_ec2(DEFAULT_REGION).await;
    let vpc = default_vpc(&direct).await;
    let subnet = client
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("172.31.250.0/24")
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_owned();
    let table = |client: aws_sdk_ec2::Client| {
        let vpc = vpc.clone();
        async move {
            client
                .create_route_table()
                .vpc_id(vpc)
                .send()
                .await
                .unwrap()
                .route_table()
                .unwrap()
                .route_table_id()
                .unwrap()
                .to_owned()
        }
    };
    let (first, second) = (table(direct.clone()).await, table(direct.clone()).await);
    let associate = |table: String| {
        let client = client.clone();
        let subnet = subnet.clone();
        async move { client.associate_route_table().route_table_id(table).subnet_id(subnet).send().await }
    };
    let association = associate(first.clone()).await.expect("first association");
    for again in [first.clone(), second.clone()] {
        let error = associate(again.clone()).await.expect_err("already associated");
        assert_eq!(code(&error).as_deref(), Some("Resource.AlreadyAssociated"));
        assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(400));
        let message = error.as_service_error().and_then(|e| e.message()).unwrap_or_default().to_owned();
        assert!(message.contains(&again), "{message}");
    }
    assert_eq!(aws.proxy().forwarded_count("AssociateRouteTable"), 1);

    // Off: moto answers the other table's request with the first association.
    aws.proxy().enforce_route_table_rules(false);
    let moto_answer = associate(second).await.expect("moto says yes");
    assert_eq!(moto_answer.association_id(), association.association_id());
}

#[tokio::test]
async fn compressed_put_metric_data_is_identified() {
    // The SDK gzips PutMetricData bodies above 10 KiB; the proxy still names
    // the call (and testbed_cloudwatch.rs reads such a call back).
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
    let aws = start().await;
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&aws.sdk_config(DEFAULT_REGION).await);
    let data: Vec<MetricDatum> = (0..200)
        .map(|i| {
            MetricDatum::builder()
                .metric_name(format!("FreePrefixes{i:03}"))
                .dimensions(Dimension::builder().name("SubnetId").value(format!("subnet-{i:017x}")).build())
                .value(f64::from(i))
                .build()
        })
        .collect();
    cloudwatch.put_metric_data().namespace("Headroom").set_metric_data(Some(data)).send().await.expect("PutMetricData");
    let log = aws.proxy().call_log();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].service.as_str(), log[0].action.as_str()), ("monitoring", "PutMetricData"));
}

#[tokio::test]
async fn an_injected_error_code_reaches_the_sdk_in_each_protocol() {
    let aws = start().await;
    let client = ec2(&aws, RetryConfig::disabled()).await;
    aws.proxy().fail_nth("DescribeVpcs", 1, Fault::Reject { status: 400, code: "InvalidVpcID.NotFound" });
    let err = client.describe_vpcs().send().await.expect_err("rejected");
    assert_eq!(code(&err).as_deref(), Some("InvalidVpcID.NotFound"));
    assert!(client.describe_vpcs().send().await.is_ok(), "once only");
    assert_eq!(aws.proxy().forwarded_count("DescribeVpcs"), 1);

    aws.proxy().fail_nth("CreateSubnet", 1, Fault::Reject { status: 403, code: "UnauthorizedOperation" });
    let vpc = default_vpc(&aws.direct_ec2(DEFAULT_REGION).await).await;
    let err = client.create_subnet().vpc_id(&vpc).cidr_block("172.31.201.0/24").send().await.expect_err("denied");
    assert_eq!(code(&err).as_deref(), Some("UnauthorizedOperation"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));

    let eks = aws_sdk_eks::Client::new(&aws.sdk_config(DEFAULT_REGION).await);
    aws.proxy().fail_nth("ListClusters", 1, Fault::Reject { status: 403, code: "AccessDeniedException" });
    let err = eks.list_clusters().send().await.expect_err("denied");
    assert_eq!(code(&err).as_deref(), Some("AccessDeniedException"));
}

#[tokio::test]
async fn ec2_lists_come_in_pages_that_the_paginator_follows() {
    let aws = start().await;
    let direct = aws.direct_ec2(DEFAULT_REGION).await;
    let vpc = direct.create_vpc().cidr_block("10.40.0.0/16").send().await.unwrap();
    let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    for i in 0..12 {
        direct.create_subnet().vpc_id(&vpc_id).cidr_block(format!("10.40.{i}.0/24")).send().await.unwrap();
    }
    let client = ec2(&aws, RetryConfig::disabled()).await;
    aws.proxy().set_page_size(Some(5));
    let by_vpc = || Filter::builder().name("vpc-id").values(&vpc_id).build();
    // One call sees the first page only, with a token for the rest ...
    let first = client.describe_subnets().filters(by_vpc()).max_results(1000).send().await.unwrap();
    assert_eq!(first.subnets().len(), 5);
    assert!(first.next_token().is_some());
    // ... and the paginator reads them all.
    aws.proxy().reset_counters();
    let all: Vec<_> = client
        .describe_subnets()
        .filters(by_vpc())
        .into_paginator()
        .page_size(1000)
        .items()
        .send()
        .try_collect()
        .await
        .unwrap();
    let cidrs: std::collections::BTreeSet<String> = all.iter().map(|s| s.cidr_block().unwrap().to_owned()).collect();
    assert_eq!(cidrs.len(), 12);
    assert_eq!(aws.proxy().call_count("DescribeSubnets"), 3);
    aws.proxy().set_page_size(None);
    let whole = client.describe_subnets().filters(by_vpc()).send().await.unwrap();
    assert_eq!(whole.subnets().len(), 12);
}

#[tokio::test]
async fn eks_compute_config_and_access_entries_are_emulated() {
    let aws = start().await;
    let direct = aws_sdk_eks::Client::new(&aws.direct_sdk_config(DEFAULT_REGION).await);
    let subnet = aws.direct_ec2(DEFAULT_REGION).await.describe_subnets().send().await.unwrap().subnets()[0]
        .subnet_id()
        .unwrap()
        .to_owned();
    direct
        .create_cluster()
        .name("emulated")
        .role_arn("arn:aws:iam::123456789012:role/ClusterRole")
        .resources_vpc_config(aws_sdk_eks::types::VpcConfigRequest::builder().subnet_ids(subnet).build())
        .send()
        .await
        .unwrap();
    let eks = aws_sdk_eks::Client::new(&aws.sdk_config(DEFAULT_REGION).await);
    let described = eks.describe_cluster().name("emulated").send().await.unwrap();
    assert!(described.cluster().unwrap().compute_config().is_none(), "moto alone reports no Auto Mode");

    aws.proxy().set_compute_config(
        "emulated",
        serde_json::json!({"enabled": true, "nodeRoleArn": "arn:aws:iam::123456789012:role/AutoNode"}),
    );
    let described = eks.describe_cluster().name("emulated").send().await.unwrap();
    let compute = described.cluster().unwrap().compute_config().expect("computeConfig");
    assert_eq!(compute.node_role_arn(), Some("arn:aws:iam::123456789012:role/AutoNode"));
    assert_eq!(described.cluster().unwrap().name(), Some("emulated"), "moto's answer is kept");

    for i in 0..3 {
        aws.proxy().put_access_entry("emulated", &format!("arn:aws:iam::123456789012:role/R{i}"), "STANDARD");
    }
    eks.create_access_entry()
        .cluster_name("emulated")
        .principal_arn("arn:aws:iam::123456789012:role/NodeRole")
        .r#type("EC2")
        .send()
        .await
        .unwrap();
    let listed: Vec<String> = eks
        .list_access_entries()
        .cluster_name("emulated")
        .into_paginator()
        .page_size(2)
        .items()
        .send()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(aws.proxy().call_count("ListAccessEntries"), 2, "two pages of two");
    let entry = eks
        .describe_access_entry()
        .cluster_name("emulated")
        .principal_arn("arn:aws:iam::123456789012:role/NodeRole")
        .send()
        .await
        .unwrap();
    assert_eq!(entry.access_entry().unwrap().r#type(), Some("EC2"));
    let missing =
        eks.describe_access_entry().cluster_name("emulated").principal_arn("arn:aws:iam::1:role/None").send().await;
    assert_eq!(code(&missing.expect_err("absent")).as_deref(), Some("ResourceNotFoundException"));

    aws.reset().await.unwrap();
    assert_eq!(
        eks.list_access_entries().cluster_name("emulated").send().await.map(|o| o.access_entries().len()).unwrap_or(0),
        0,
        "a reset forgets them"
    );
}
