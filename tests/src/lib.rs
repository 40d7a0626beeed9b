//! Local stand-ins for AWS and Kubernetes, for headroom's tests and demo.
//!
//! - [`MotoServer`]: a moto server child process (EC2, EKS, CloudWatch).
//! - [`FaultProxy`]: an HTTP proxy in front of moto that counts calls and
//!   injects the failures moto cannot produce (throttling, 5xx, dropped
//!   connections, slow CIDR association).
//! - [`LocalAws`]: both together; point SDK clients at [`LocalAws::endpoint`].
//! - [`FakeKube`]: an in-process Kubernetes API server for the EKS Auto Mode
//!   `NodeClass` and Karpenter `NodePool` custom resources.
//! - [`runtime_api::RuntimeApi`]: a local Lambda Runtime API, and
//!   [`runtime_api::FunctionProcess`] to run the function binaries against it.
//!
//! Everything listens on 127.0.0.1 only and stops when its owning value is
//! dropped. Run `scripts/setup-moto.sh` once to install moto.

pub mod admission;
mod error;
pub mod fake_kube;
pub mod fault_proxy;
pub mod harness;
pub mod history;
pub mod lab;
pub mod moto;
mod net;
pub mod runtime_api;

pub use error::TestbedError;
pub use fake_kube::{FakeKube, FakeKubeHandle, RecordedRequest, StatusResolver, ec2_status_resolver};
pub use fault_proxy::{
    CallRecord, CallTiming, Fault, FaultProxy, FaultProxyHandle, IpamPoolSpec, LatencyModel, Published, Selector,
    changes_state, is_mutating,
};
pub use moto::{MotoServer, sdk_config, sdk_config_with_retry, test_retry_config};

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;

/// The region tests use unless they say otherwise.
pub const DEFAULT_REGION: &str = "us-east-1";

/// moto behind a [`FaultProxy`]: what most integration tests want.
///
/// Dropping it stops both.
pub struct LocalAws {
    // Field order is drop order: stop taking calls before killing moto.
    proxy: FaultProxy,
    moto: MotoServer,
}

impl LocalAws {
    /// Starts a private moto server and a proxy in front of it.
    ///
    /// The proxy enforces AWS rules moto lacks, because without them moto
    /// answers "success" where AWS answers an error, and a test could not
    /// tell idempotent code from code that repeats its changes:
    /// - [`FaultProxyHandle::enforce_vpc_cidr_rules`]: moto accepts an
    ///   `AssociateVpcCidrBlock` that overlaps, or repeats, a CIDR the VPC
    ///   already has, which AWS refuses; two concurrent runs that pick the
    ///   same CIDR would both "succeed" and the VPC would list it twice.
    /// - [`FaultProxyHandle::enforce_route_table_rules`]: moto answers an
    ///   `AssociateRouteTable` for an already associated subnet with the
    ///   existing association, even one with another table; AWS refuses it.
    ///
    /// Seeding through [`direct_ec2`](Self::direct_ec2) bypasses both.
    pub async fn start() -> Result<Self, TestbedError> {
        let moto = MotoServer::start().await?;
        let proxy = FaultProxy::start(moto.endpoint()).await?;
        proxy.enforce_vpc_cidr_rules(true);
        proxy.enforce_route_table_rules(true);
        Ok(Self { proxy, moto })
    }

    /// The proxy's endpoint (`http://127.0.0.1:PORT`): use this for the code
    /// under test, e.g. as `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> &str {
        self.proxy.endpoint()
    }

    /// moto's own endpoint, bypassing faults and call counting: for seeding
    /// and for assertions on the resulting state.
    pub fn moto_endpoint(&self) -> &str {
        self.moto.endpoint()
    }

    /// The proxy, to inject faults and read call counts.
    pub fn proxy(&self) -> &FaultProxy {
        &self.proxy
    }

    /// The moto server.
    pub fn moto(&self) -> &MotoServer {
        &self.moto
    }

    /// SDK config through the proxy, with [`test_retry_config`].
    pub async fn sdk_config(&self, region: &str) -> SdkConfig {
        sdk_config(self.endpoint(), region).await
    }

    /// SDK config through the proxy with the given retry policy.
    pub async fn sdk_config_with_retry(&self, region: &str, retry: RetryConfig) -> SdkConfig {
        sdk_config_with_retry(self.endpoint(), region, retry).await
    }

    /// SDK config straight to moto (no faults, not counted).
    pub async fn direct_sdk_config(&self, region: &str) -> SdkConfig {
        sdk_config(self.moto_endpoint(), region).await
    }

    /// An EC2 client straight to moto, for seeding and checking state.
    pub async fn direct_ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.direct_sdk_config(region).await)
    }

    /// Wipes moto's state and the proxy's faults and counters.
    pub async fn reset(&self) -> Result<(), TestbedError> {
        self.proxy.reset_faults();
        self.proxy.reset_counters();
        self.proxy.reset_emulation();
        self.moto.reset().await
    }

    /// Environment for a child process (e.g. a function binary) that should
    /// talk to this stack through the proxy with the standard SDK settings.
    pub fn env_vars(&self, region: &str) -> Vec<(String, String)> {
        let (key, secret) = moto::TEST_CREDENTIALS;
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_REGION", region),
            ("AWS_DEFAULT_REGION", region),
            // Keep the SDK away from ~/.aws and IMDS.
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

/// Sets up `tracing` output for a test binary once; honours `RUST_LOG`
/// (default `warn`). Safe to call from every test.
pub fn init_test_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}
