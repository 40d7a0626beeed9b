//! Self-tests of the moto server wrapper.

use std::time::{Duration, Instant};

use headroom_testbed::{DEFAULT_REGION, MotoServer, init_test_tracing, sdk_config};

#[tokio::test]
async fn moto_answers_describe_vpcs_and_resets() {
    init_test_tracing();
    let moto = MotoServer::start().await.expect("moto starts (run scripts/setup-moto.sh)");
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config(moto.endpoint(), DEFAULT_REGION).await);

    let vpcs = ec2.describe_vpcs().send().await.expect("DescribeVpcs");
    let cidrs: Vec<_> = vpcs.vpcs().iter().filter_map(|v| v.cidr_block()).collect();
    assert_eq!(cidrs, ["172.31.0.0/16"], "a fresh region has only the default VPC");

    ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.expect("CreateVpc");
    assert_eq!(ec2.describe_vpcs().send().await.unwrap().vpcs().len(), 2);

    moto.reset().await.expect("reset");
    let after = ec2.describe_vpcs().send().await.unwrap();
    assert_eq!(after.vpcs().len(), 1, "reset wipes the VPC we created");
}

#[tokio::test]
async fn two_servers_are_independent() {
    let (a, b) = tokio::join!(MotoServer::start(), MotoServer::start());
    let (a, b) = (a.expect("first moto"), b.expect("second moto"));
    assert_ne!(a.endpoint(), b.endpoint());
    let ec2_a = aws_sdk_ec2::Client::new(&sdk_config(a.endpoint(), DEFAULT_REGION).await);
    let ec2_b = aws_sdk_ec2::Client::new(&sdk_config(b.endpoint(), DEFAULT_REGION).await);
    ec2_a.create_vpc().cidr_block("10.1.0.0/16").send().await.unwrap();
    assert_eq!(ec2_a.describe_vpcs().send().await.unwrap().vpcs().len(), 2);
    assert_eq!(ec2_b.describe_vpcs().send().await.unwrap().vpcs().len(), 1);
}

#[tokio::test]
async fn dropping_the_server_kills_moto() {
    let moto = MotoServer::start().await.expect("moto starts");
    let pid = moto.pid().expect("running child has a pid");
    let addr = moto.endpoint().trim_start_matches("http://").to_owned();
    drop(moto);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let refused = tokio::net::TcpStream::connect(&addr).await.is_err();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        // Gone, or a zombie waiting to be reaped: either way not running.
        let dead = state
            .as_deref()
            .is_none_or(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')));
        if refused && dead {
            break;
        }
        assert!(Instant::now() < deadline, "moto (pid {pid}) still alive after drop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn missing_binary_error_says_how_to_install() {
    let error = MotoServer::start_with_binary("/nonexistent/moto_server").await.expect_err("no such binary");
    assert!(matches!(error, headroom_testbed::TestbedError::MotoNotInstalled { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("scripts/setup-moto.sh"), "{message}");
    assert!(message.contains("HEADROOM_MOTO_SERVER"), "{message}");
}
