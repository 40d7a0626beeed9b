//! AWS clients, built once per process.
//!
//! Loading the SDK config resolves no credentials and opens no connection:
//! the first network I/O happens inside the first invocation. Endpoints come
//! from the standard `AWS_ENDPOINT_URL` (tests and the demo point it at moto).

use std::time::Duration;

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_async::rt::sleep::default_async_sleep;
use aws_smithy_async::time::SharedTimeSource;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector};
use aws_smithy_runtime_api::client::runtime_components::{RuntimeComponents, RuntimeComponentsBuilder};
use aws_smithy_types::config_bag::ConfigBag;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// Retries for throttling, 5xx and dropped connections, with exponential
/// backoff and jitter (the SDK's standard mode). Eight attempts make a call
/// that is throttled 30% of the time fail about once in 15,000.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(8)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(5))
}

/// Bounds on one attempt and one call, so a hung connection costs a retry,
/// not the function's whole timeout.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(20))
        .operation_timeout(Duration::from_secs(90))
        .build()
}

/// Where Linux distributions keep their whole CA bundle in one PEM file,
/// Amazon Linux 2023 (the `provided.al2023` runtime) first.
const CA_BUNDLES: [&str; 4] = [
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The SDK's default HTTPS client (rustls on aws-lc, proxy from the
/// environment), trusting the system CA bundle read from one file, and
/// parsing it once rather than once per SDK client.
///
/// The default trusts rustls-native-certs' roots: the bundle *and* every
/// file of the certificate directory (~290 files on Debian; on Amazon Linux
/// 2023 the directory holds the bundle twice more), and it builds a TLS
/// connector, parsing them all, for every client made. That was most of a
/// cold start (docs/BENCHMARKS.md). The bundle alone holds the same roots;
/// OpenSSL and curl use it the same way. `SSL_CERT_FILE` names another
/// bundle. `None` keeps the SDK's default: with `SSL_CERT_DIR` set, with no
/// bundle found, or with one the SDK could not parse (it would panic).
pub fn https_client_trusting_one_bundle() -> Option<SharedHttpClient> {
    https_client_trusting(system_ca_bundle()?)
}

/// The SDK's default HTTPS client, trusting only the certificates of `bundle`
/// (PEM), checked as [`every_certificate_parses`] requires.
pub fn https_client_trusting(bundle: Vec<u8>) -> Option<SharedHttpClient> {
    if !every_certificate_parses(&bundle) {
        tracing::warn!("a certificate of the CA bundle does not parse: the SDK's default trust store is kept");
        return None;
    }
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_native_roots(false).with_pem_certificate(bundle))
        .build()
        .ok()?;
    let client = Builder::new().build_with_connector_fn(move |settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.tls_context(context.clone()).build()
    });
    Some(SharedHttpClient::new(BundleCheckedUpFront { inner: client }))
}

fn system_ca_bundle() -> Option<Vec<u8>> {
    if std::env::var_os("SSL_CERT_DIR").is_some() {
        tracing::debug!("SSL_CERT_DIR is set: the SDK's default trust store is kept");
        return None;
    }
    let candidates: Vec<std::path::PathBuf> = match std::env::var_os("SSL_CERT_FILE") {
        Some(path) => vec![path.into()],
        None => CA_BUNDLES.iter().map(Into::into).collect(),
    };
    let found = candidates.iter().find_map(|path| Some((path, std::fs::read(path).ok()?)));
    match found {
        Some((path, pem)) => {
            tracing::debug!(bundle = %path.display(), "AWS calls trust this CA bundle");
            Some(pem)
        }
        None => {
            tracing::debug!(tried = ?candidates, "no CA bundle readable: the SDK's default trust store is kept");
            None
        }
    }
}

/// What the SDK checks, with `expect`, when it builds its trust store.
pub fn every_certificate_parses(pem: &[u8]) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(pem) {
        let Ok(der) = certificate else { return false };
        if roots.add(der).is_err() {
            return false;
        }
    }
    !roots.is_empty()
}

/// The SDK's HTTPS client without its start-up validation. For that client,
/// validating means building a TLS connector, parsing every root, and
/// dropping it, once for each SDK client made, only so that certificates load
/// early. [`https_client_trusting`] has read and checked the bundle by then,
/// so each validation would only repeat the parse; the connector that serves
/// requests is built on the first call, as with the default client.
#[derive(Debug)]
struct BundleCheckedUpFront {
    inner: SharedHttpClient,
}

impl HttpClient for BundleCheckedUpFront {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        self.inner.http_connector(settings, components)
    }

    fn validate_base_client_config(&self, _: &RuntimeComponentsBuilder, _: &ConfigBag) -> Result<(), BoxError> {
        Ok(())
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Clone, Debug)]
pub struct AwsClients {
    pub ec2: aws_sdk_ec2::Client,
    pub eks: aws_sdk_eks::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub sns: aws_sdk_sns::Client,
    pub iam: aws_sdk_iam::Client,
    pub sdk_config: SdkConfig,
}

impl AwsClients {
    /// For a Lambda function: region, credentials and endpoint straight from
    /// the environment the runtime sets (`AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; `AWS_ENDPOINT_URL` in
    /// tests), without `aws_config`'s loader. The loader's default chain
    /// (profile files, SSO, web identity through STS, ECS and IMDS) has
    /// nothing to find inside Lambda, and leaving it unlinked keeps about
    /// a tenth off the deployment zip (docs/BENCHMARKS.md, "Size").
    /// <https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime>
    pub fn for_lambda() -> Self {
        let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        let mut builder = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(SharedCredentialsProvider::new(EnvironmentVariableCredentialsProvider::new()))
            .retry_config(retry_config())
            .timeout_config(timeout_config())
            .time_source(SharedTimeSource::default());
        if let Some(sleep) = default_async_sleep() {
            builder = builder.sleep_impl(sleep);
        }
        if let Some(region) = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")) {
            builder = builder.region(aws_config::Region::new(region));
        }
        if let Some(endpoint) = env("AWS_ENDPOINT_URL") {
            builder = builder.endpoint_url(endpoint);
        }
        if let Some(client) = https_client_trusting_one_bundle() {
            builder = builder.http_client(client);
        }
        Self::new(builder.build())
    }

    /// The default credential chain, with a named profile and a region when
    /// given (the CLI's `--profile` and `--region`); nothing is resolved
    /// until the first call.
    pub async fn load(profile: Option<&str>, region: Option<&str>) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry_config())
            .timeout_config(timeout_config());
        if let Some(profile) = profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region.to_owned()));
        }
        if let Some(client) = https_client_trusting_one_bundle() {
            loader = loader.http_client(client);
        }
        Self::new(loader.load().await)
    }

    pub fn new(sdk_config: SdkConfig) -> Self {
        AwsClients {
            ec2: aws_sdk_ec2::Client::new(&sdk_config),
            eks: aws_sdk_eks::Client::new(&sdk_config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&sdk_config),
            sns: aws_sdk_sns::Client::new(&sdk_config),
            iam: aws_sdk_iam::Client::new(&sdk_config),
            sdk_config,
        }
    }

    pub fn region(&self) -> String {
        self.sdk_config.region().map(ToString::to_string).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_config::Region;
    use aws_credential_types::Credentials;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    /// A TLS server on loopback, certified by `issuer` for 127.0.0.1, that
    /// answers every request like EKS DescribeCluster.
    async fn eks_over_tls(issuer: &CertifiedIssuer<'static, KeyPair>) -> u16 {
        let key = KeyPair::generate().unwrap();
        let certificate =
            CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, issuer).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![certificate.der().clone()],
                    rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else { return };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = r#"{"cluster":{"name":"over-tls","status":"ACTIVE"}}"#;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        port
    }

    fn eks_client(http: SharedHttpClient, port: u16) -> aws_sdk_eks::Client {
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-west-2"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            )))
            .endpoint_url(format!("https://127.0.0.1:{port}"))
            .retry_config(RetryConfig::disabled())
            .http_client(http)
            .build();
        aws_sdk_eks::Client::new(&config)
    }

    #[tokio::test]
    async fn the_bundle_client_trusts_the_bundle_and_nothing_else() {
        let trusted = ca("trusted test CA");
        let port = eks_over_tls(&trusted).await;

        let client = https_client_trusting(trusted.pem().into_bytes()).expect("a valid bundle");
        let out = eks_client(client, port)
            .describe_cluster()
            .name("over-tls")
            .send()
            .await
            .expect("TLS with the bundle's CA");
        assert_eq!(out.cluster().and_then(|c| c.name()), Some("over-tls"));

        let stranger = https_client_trusting(ca("another CA").pem().into_bytes()).expect("a valid bundle");
        let error = eks_client(stranger, port).describe_cluster().name("over-tls").send().await.unwrap_err();
        assert!(
            matches!(error, aws_sdk_eks::error::SdkError::DispatchFailure(_)),
            "expected a TLS failure, got {error:?}"
        );
    }

    #[test]
    fn a_bundle_the_sdk_could_not_parse_keeps_the_default() {
        let one = ca("one").pem();
        let two = ca("two").pem();
        assert!(every_certificate_parses(format!("{one}{two}").as_bytes()));
        assert!(!every_certificate_parses(b""), "no certificate at all");
        assert!(
            !every_certificate_parses(KeyPair::generate().unwrap().serialize_pem().as_bytes()),
            "a key, not a certificate"
        );
        let broken = "-----BEGIN CERTIFICATE-----\nTUlJQm9vcHM=\n-----END CERTIFICATE-----\n";
        assert!(!every_certificate_parses(format!("{one}{broken}").as_bytes()), "one unparsable certificate");
        assert!(https_client_trusting(format!("{one}{broken}").into_bytes()).is_none());
    }

    #[derive(Debug, Default)]
    struct CountingClient(Arc<AtomicUsize>);

    impl HttpClient for CountingClient {
        fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
            unreachable!("no request is sent")
        }

        fn validate_base_client_config(&self, _: &RuntimeComponentsBuilder, _: &ConfigBag) -> Result<(), BoxError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn making_clients_does_not_rebuild_the_connector_each_time() {
        let config = |http: SharedHttpClient| {
            SdkConfig::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-west-2"))
                .http_client(http)
                .build()
        };
        let plain = Arc::new(AtomicUsize::new(0));
        let _clients = AwsClients::new(config(SharedHttpClient::new(CountingClient(Arc::clone(&plain)))));
        assert_eq!(plain.load(Ordering::SeqCst), 5, "the SDK validates once per client");

        let wrapped = Arc::new(AtomicUsize::new(0));
        let inner = SharedHttpClient::new(CountingClient(Arc::clone(&wrapped)));
        let _clients = AwsClients::new(config(SharedHttpClient::new(BundleCheckedUpFront { inner })));
        assert_eq!(wrapped.load(Ordering::SeqCst), 0);
    }
}
