//! A [`kube::Client`] for a cluster, authenticated in process.
//!
//! Two ways in, chosen once when [`ClusterAccess`] is created:
//!
//! - `KUBECONFIG` is set (tests, local runs): the client comes from that
//!   kubeconfig and is kept for the life of the process.
//! - Otherwise (Lambda): `eks:DescribeCluster` gives the endpoint and CA, the
//!   bearer token is signed locally ([`super::token`]), and the client is kept
//!   until its token comes near expiry, then rebuilt with a fresh token. The
//!   endpoint and CA are asked for once per cluster and process.
//!
//! A client is handed out only while its token has at least
//! [`MIN_REMAINING`] left, so take a client with [`ClusterAccess::client_for`]
//! right before a burst of Kubernetes calls rather than keeping one across a
//! long wait.

use crate::aws::errors;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tokio::sync::Mutex;

use super::token::{EksToken, generate_token};
use crate::error::{Error, Result};

/// Timeout to open a connection to the API server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout for the API server's response and for sending a request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A cached client is handed out only while its token stays valid at least
/// this long (beyond the one-minute margin already in
/// [`EksToken::expires_at`]). With 14-minute tokens a client is reused for
/// 9 minutes, then rebuilt; rebuilding signs locally and makes no AWS call.
pub const MIN_REMAINING: Duration = Duration::from_secs(5 * 60);

/// `operation` of the errors about reaching the API server.
const CONNECT: &str = "connect";
/// `operation` of the errors of the DescribeCluster call.
const DESCRIBE_CLUSTER: &str = "DescribeCluster";

/// Where a cluster's API server is.
#[derive(Clone, PartialEq, Eq)]
pub enum ClusterEndpoint {
    /// The kubeconfig files named by `KUBECONFIG`, merged the way kubectl
    /// does. Context: the one named like the cluster if there is one, else
    /// the current context.
    Kubeconfig { paths: Vec<PathBuf> },
    /// From `eks:DescribeCluster`: `cluster.endpoint` and the decoded
    /// `cluster.certificateAuthority.data` (PEM).
    Eks { endpoint: String, ca_pem: Vec<u8> },
}

impl fmt::Debug for ClusterEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterEndpoint::Kubeconfig { paths } => f.debug_struct("Kubeconfig").field("paths", paths).finish(),
            ClusterEndpoint::Eks { endpoint, ca_pem } => f
                .debug_struct("Eks")
                .field("endpoint", endpoint)
                .field("ca_pem", &format_args!("<{} bytes>", ca_pem.len()))
                .finish(),
        }
    }
}

struct CachedClient {
    client: kube::Client,
    /// `None`: never rebuilt (kubeconfig; kube refreshes exec/file
    /// credentials itself).
    expires_at: Option<SystemTime>,
}

#[derive(Default)]
struct Cache {
    endpoints: HashMap<String, ClusterEndpoint>,
    clients: HashMap<String, CachedClient>,
}

/// Hands out [`kube::Client`]s per cluster. Create one per process and share
/// it; creating it does no I/O.
pub struct ClusterAccess {
    eks: aws_sdk_eks::Client,
    credentials: Option<SharedCredentialsProvider>,
    region: Option<Region>,
    /// `Some`: `KUBECONFIG` was set when this was created.
    kubeconfig: Option<Vec<PathBuf>>,
    cache: Mutex<Cache>,
}

impl fmt::Debug for ClusterAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterAccess")
            .field("region", &self.region)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl ClusterAccess {
    /// Reads `KUBECONFIG` now (once); an unset or empty value means EKS.
    pub fn new(sdk_config: &SdkConfig) -> Self {
        Self::with_kubeconfig(sdk_config, std::env::var_os("KUBECONFIG").as_deref())
    }

    /// Like [`ClusterAccess::new`] with the value of `KUBECONFIG` given
    /// (a path list like `PATH`); `None` or empty means EKS.
    pub fn with_kubeconfig(sdk_config: &SdkConfig, kubeconfig: Option<&OsStr>) -> Self {
        let kubeconfig = kubeconfig
            .map(|value| std::env::split_paths(value).filter(|p| !p.as_os_str().is_empty()).collect::<Vec<_>>())
            .filter(|paths| !paths.is_empty());
        Self {
            eks: aws_sdk_eks::Client::new(sdk_config),
            credentials: sdk_config.credentials_provider(),
            region: sdk_config.region().cloned(),
            kubeconfig,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Whether clusters are reached through `KUBECONFIG` rather than EKS.
    pub fn uses_kubeconfig(&self) -> bool {
        self.kubeconfig.is_some()
    }

    /// A client for `cluster`, authenticated and valid for at least
    /// [`MIN_REMAINING`].
    ///
    /// Cheap when cached (a clone). Otherwise: with `KUBECONFIG`, the
    /// kubeconfig is read; with EKS, `DescribeCluster` is called the first
    /// time and a token is signed. No request goes to the API server here.
    pub async fn client_for(&self, cluster: &str) -> Result<kube::Client> {
        self.client_at(cluster, SystemTime::now()).await
    }

    /// Forgets the client (and the endpoint and CA) of `cluster`: the next
    /// [`ClusterAccess::client_for`] starts over. For a 401 or a TLS error,
    /// which mean the cached token or CA is no longer right.
    pub async fn invalidate(&self, cluster: &str) {
        let mut cache = self.cache.lock().await;
        cache.clients.remove(cluster);
        cache.endpoints.remove(cluster);
    }

    /// Where `cluster`'s API server is (`DescribeCluster` once per process
    /// with EKS).
    pub async fn endpoint_for(&self, cluster: &str) -> Result<ClusterEndpoint> {
        let mut cache = self.cache.lock().await;
        self.endpoint_cached(&mut cache, cluster).await
    }

    async fn client_at(&self, cluster: &str, now: SystemTime) -> Result<kube::Client> {
        // Held across the awaits below on purpose: concurrent callers wait for
        // one DescribeCluster instead of each making their own.
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.clients.get(cluster)
            && !needs_rebuild(cached.expires_at, now)
        {
            return Ok(cached.client.clone());
        }

        let endpoint = self.endpoint_cached(&mut cache, cluster).await?;
        let (config, expires_at) = match &endpoint {
            ClusterEndpoint::Kubeconfig { paths } => (kube_config_from_kubeconfig(paths, cluster).await?, None),
            ClusterEndpoint::Eks { endpoint, ca_pem } => {
                let token = self.token(cluster, now).await?;
                let expires_at = token.expires_at;
                (kube_config_for_eks(cluster, endpoint, ca_pem, &token)?, Some(expires_at))
            }
        };
        let cluster_url = config.cluster_url.to_string();
        let client = build_client(cluster, config)?;
        tracing::debug!(cluster, %cluster_url, ?expires_at, "built a Kubernetes client");
        cache.clients.insert(cluster.to_owned(), CachedClient { client: client.clone(), expires_at });
        Ok(client)
    }

    async fn endpoint_cached(&self, cache: &mut Cache, cluster: &str) -> Result<ClusterEndpoint> {
        if let Some(endpoint) = cache.endpoints.get(cluster) {
            return Ok(endpoint.clone());
        }
        let endpoint = match &self.kubeconfig {
            Some(paths) => ClusterEndpoint::Kubeconfig { paths: paths.clone() },
            None => self.describe(cluster).await?,
        };
        cache.endpoints.insert(cluster.to_owned(), endpoint.clone());
        Ok(endpoint)
    }

    async fn describe(&self, cluster: &str) -> Result<ClusterEndpoint> {
        let region = self.region()?;
        let output = self
            .eks
            .describe_cluster()
            .name(cluster)
            .send()
            .await
            .map_err(|err| describe_cluster_error(cluster, region.as_ref(), &err))?;
        let Some(info) = output.cluster() else {
            return Err(Error::Aws {
                operation: DESCRIBE_CLUSTER,
                message: format!("the response for cluster {cluster:?} has no cluster"),
                retryable: true,
            });
        };
        let status = info.status().map_or("unknown", |s| s.as_str());
        let endpoint = info.endpoint().filter(|e| !e.is_empty()).ok_or_else(|| Error::Kube {
            operation: CONNECT,
            message: format!(
                "cluster {cluster:?} has no API endpoint yet (status {status}); \
                 headroom can act once it is ACTIVE"
            ),
            retryable: false,
        })?;
        let ca_data =
            info.certificate_authority().and_then(|ca| ca.data()).filter(|d| !d.is_empty()).ok_or_else(|| {
                Error::Kube {
                    operation: CONNECT,
                    message: format!("cluster {cluster:?} has no certificate authority data yet (status {status})"),
                    retryable: false,
                }
            })?;
        let ca_pem = decode_certificate_authority(cluster, ca_data)?;
        // Fail here, once, rather than at every client build.
        ca_certificates(cluster, &ca_pem)?;
        tracing::debug!(cluster, endpoint, status, "described the cluster");
        Ok(ClusterEndpoint::Eks { endpoint: endpoint.to_owned(), ca_pem })
    }

    async fn token(&self, cluster: &str, now: SystemTime) -> Result<EksToken> {
        let region = self.region()?;
        let provider = self.credentials.as_ref().ok_or_else(|| Error::Aws {
            operation: "ProvideCredentials",
            message: "the AWS SDK configuration has no credentials provider".into(),
            retryable: false,
        })?;
        let credentials = provider.provide_credentials().await.map_err(|err| credentials_error(&err))?;
        generate_token(cluster, region.as_ref(), &credentials, now)
    }

    fn region(&self) -> Result<&Region> {
        self.region.as_ref().ok_or_else(|| Error::Config {
            setting: "AWS_REGION",
            value: String::new(),
            reason: "no AWS region is configured; it is needed to find the cluster and to sign \
                     its token"
                .into(),
        })
    }
}

/// Whether a cached client must be rebuilt at `now`. `expires_at` is the
/// token's ([`EksToken::expires_at`]); `None` never expires.
pub fn needs_rebuild(expires_at: Option<SystemTime>, now: SystemTime) -> bool {
    match expires_at {
        None => false,
        Some(expires_at) => now + MIN_REMAINING >= expires_at,
    }
}

/// Decodes `certificateAuthority.data` (base64 of a PEM bundle).
pub fn decode_certificate_authority(cluster: &str, data: &str) -> Result<Vec<u8>> {
    let compact: String = data.split_ascii_whitespace().collect();
    STANDARD.decode(compact).map_err(|e| Error::Kube {
        operation: CONNECT,
        message: format!("the certificate authority data of cluster {cluster:?} is not valid base64 PEM: {e}"),
        retryable: false,
    })
}

/// The DER certificates of a PEM bundle (other PEM sections are skipped).
pub fn ca_certificates(cluster: &str, pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    let invalid = |reason: String| Error::Kube {
        operation: CONNECT,
        message: format!("the certificate authority data of cluster {cluster:?} is not valid base64 PEM: {reason}"),
        retryable: false,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|cert| cert.map(|der| der.as_ref().to_vec()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid("it holds no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The client configuration for an EKS endpoint: TLS pinned to the cluster
/// CA, the token as bearer, [`CONNECT_TIMEOUT`] and [`READ_TIMEOUT`].
pub fn kube_config_for_eks(cluster: &str, endpoint: &str, ca_pem: &[u8], token: &EksToken) -> Result<kube::Config> {
    let cluster_url: http::Uri = endpoint.parse().map_err(|e| Error::Kube {
        operation: CONNECT,
        message: format!("cluster {cluster:?} has an invalid API endpoint {endpoint:?}: {e}"),
        retryable: false,
    })?;
    if cluster_url.scheme().is_none() || cluster_url.host().is_none() {
        return Err(Error::Kube {
            operation: CONNECT,
            message: format!("cluster {cluster:?} has an API endpoint without scheme or host: {endpoint:?}"),
            retryable: false,
        });
    }
    let mut config = kube::Config::new(cluster_url);
    config.default_namespace = "default".into();
    config.root_cert = Some(ca_certificates(cluster, ca_pem)?);
    config.auth_info.token = Some(secrecy::SecretString::from(token.token.clone()));
    set_timeouts(&mut config);
    Ok(config)
}

/// The client configuration from kubeconfig files (merged in order, like
/// kubectl). Uses the context named `cluster` when there is one, else the
/// current context.
pub async fn kube_config_from_kubeconfig(paths: &[PathBuf], cluster: &str) -> Result<kube::Config> {
    let shown = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    let invalid = |e: kube::config::KubeconfigError| Error::Kube {
        operation: CONNECT,
        message: format!("cannot use the kubeconfig {shown} (KUBECONFIG): {e}"),
        retryable: false,
    };
    let mut merged: Option<Kubeconfig> = None;
    for path in paths {
        let next = Kubeconfig::read_from(path).map_err(invalid)?;
        merged = Some(match merged {
            None => next,
            Some(merged) => merged.merge(next).map_err(invalid)?,
        });
    }
    let kubeconfig = merged.ok_or_else(|| Error::Kube {
        operation: CONNECT,
        message: "KUBECONFIG names no file".into(),
        retryable: false,
    })?;
    let context = kubeconfig.contexts.iter().any(|c| c.name == cluster).then(|| cluster.to_owned());
    let options = KubeConfigOptions { context, ..KubeConfigOptions::default() };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(invalid)?;
    set_timeouts(&mut config);
    Ok(config)
}

fn set_timeouts(config: &mut kube::Config) {
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.write_timeout = Some(READ_TIMEOUT);
    // Count the read timeout from the request, not from when a pooled
    // connection went idle (kube's documentation advises it with read_timeout).
    config.reset_reader_on_write = true;
}

/// Builds the client (TLS setup only; no request). Needs a Tokio runtime.
fn build_client(cluster: &str, config: kube::Config) -> Result<kube::Client> {
    let url = config.cluster_url.to_string();
    kube::Client::try_from(config).map_err(|e| Error::Kube {
        operation: CONNECT,
        message: format!(
            "cannot set up a client for cluster {cluster:?} at {url}: {e} \
             (check the cluster's certificate authority data)"
        ),
        retryable: false,
    })
}

fn describe_cluster_error<E>(cluster: &str, region: &str, err: &SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = errors::message(err);
    let status = match err {
        SdkError::ServiceError(ctx) => Some(ctx.raw().status().as_u16()),
        _ => None,
    };
    let code = err.code();
    let message = if code == Some("ResourceNotFoundException") {
        format!(
            "cluster {cluster:?} does not exist in {region}; check the cluster name and AWS_REGION \
             ({detail})"
        )
    } else if status == Some(403) || code.is_some_and(|c| c.contains("AccessDenied")) {
        format!(
            "not allowed to describe cluster {cluster:?}: the function's role needs \
             eks:DescribeCluster on it ({detail})"
        )
    } else {
        format!("cannot describe cluster {cluster:?} in {region}: {detail}")
    };
    Error::Aws { operation: DESCRIBE_CLUSTER, message, retryable: errors::is_retryable(err) }
}

fn credentials_error(err: &CredentialsError) -> Error {
    let retryable = matches!(err, CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_));
    Error::Aws {
        operation: "ProvideCredentials",
        message: format!("no AWS credentials to sign the cluster token: {}", DisplayErrorContext(err)),
        retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex as StdMutex};

    use aws_config::BehaviorVersion;
    use aws_config::retry::RetryConfig;
    use aws_credential_types::Credentials;
    use aws_sdk_eks::operation::describe_cluster::DescribeClusterError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    use crate::cluster::token::TOKEN_PREFIX;

    /// A self-signed test CA (EC P-256, CN=headroom-test-ca, valid to 2126),
    /// made with `openssl req -x509 -newkey ec ...`; its key was discarded.
    const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBnjCCAUOgAwIBAgIUevlOx9KLE4SN6dIydSfaxcKcxm0wCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQaGVhZHJvb20tdGVzdC1jYTAgFw0yNjExMjgxNjI1MTlaGA8y
MTI2MTEwNDE2MjUxOVowGzEZMBcGA1UEAwwQaGVhZHJvb20tdGVzdC1jYTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABJaZcFVfIH2CyTb2x32I7NHtQbnX4ZzEA8XE
+b/+oGFlIvH5oEimW4UplUF85NPgM7e/wuHOZ3b0msZy97FRt2WjYzBhMB0GA1Ud
DgQWBBQzCoXUhVIaJXOc6ONS0URKdWouLjAfBgNVHSMEGDAWgBQzCoXUhVIaJXOc
6ONS0URKdWouLjAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwIBBjAKBggq
hkjOPQQDAgNJADBGAiEA24VNebWoW9IbWPiJd1ohn9ONbPh77mK/TR5ZW8H0C7AC
IQD1LOpDU4hfjbM6X79bYXJlW82XUAH7G6tCYbPZBngsXg==
-----END CERTIFICATE-----
";

    const VERSION_JSON: &str = r#"{"major":"1","minor":"33","gitVersion":"v1.33.0-eks-test","gitCommit":"0","gitTreeState":"clean","buildDate":"2025-01-01T00:00:00Z","goVersion":"go1.24","compiler":"gc","platform":"linux/amd64"}"#;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_705_322_096)
    }

    #[derive(Clone, Debug)]
    struct Seen {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    type Handler = Box<dyn Fn(&Seen) -> (u16, Vec<(String, String)>, String) + Send>;

    /// A one-thread HTTP/1.1 server on 127.0.0.1 that records requests and
    /// answers each with `handler`, one request per connection.
    fn serve(handler: impl FnOnce(String) -> Handler) -> (String, Arc<StdMutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handler = handler(base.clone());
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let path = parts.next().unwrap_or_default().to_owned();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((n, v)) = h.trim_end().split_once(':') {
                        headers.push((n.trim().to_owned(), v.trim().to_owned()));
                    }
                }
                let seen = Seen { method, path, headers };
                if let Some(len) = seen.header("content-length").and_then(|l| l.parse().ok()) {
                    let mut body = vec![0; len];
                    let _ = reader.read_exact(&mut body);
                }
                let (status, extra, body) = handler(&seen);
                log.lock().unwrap().push(seen);
                let mut response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (n, v) in extra {
                    response.push_str(&format!("{n}: {v}\r\n"));
                }
                response.push_str("\r\n");
                response.push_str(&body);
                let _ = stream.write_all(response.as_bytes());
            }
        });
        (base, seen)
    }

    /// Fake EKS + API server: DescribeCluster points back at itself.
    fn fake_eks(cluster_status: &'static str) -> (String, Arc<StdMutex<Vec<Seen>>>) {
        serve(move |base| {
            Box::new(move |req: &Seen| {
                if req.path.starts_with("/clusters/") {
                    let name = req.path.trim_start_matches("/clusters/");
                    let endpoint =
                        if cluster_status == "CREATING" { serde_json::Value::Null } else { base.clone().into() };
                    let body = serde_json::json!({"cluster": {
                        "name": name,
                        "status": cluster_status,
                        "endpoint": endpoint,
                        "certificateAuthority": {"data": STANDARD.encode(TEST_CA_PEM)},
                    }});
                    (200, vec![], body.to_string())
                } else if req.path == "/version" {
                    (200, vec![], VERSION_JSON.to_owned())
                } else {
                    (404, vec![], "{}".to_owned())
                }
            })
        })
    }

    fn sdk_config(endpoint_url: &str) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIAIOSFODNN7EXAMPLE",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                Some("session-token".into()),
                None,
                "test",
            )))
            .endpoint_url(endpoint_url)
            .retry_config(RetryConfig::disabled())
            .build()
    }

    fn write_kubeconfig(dir: &tempfile::TempDir, name: &str, server: &str, token: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server}
users:
- name: fake
  user:
    token: {token}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: kube-system
current-context: fake
"
            ),
        )
        .unwrap();
        path
    }

    #[test]
    fn rebuild_only_when_less_than_min_remaining_is_left() {
        let expires = t0() + Duration::from_secs(14 * 60);
        assert!(!needs_rebuild(None, t0() + Duration::from_secs(10 * 365 * 86_400)));
        assert!(!needs_rebuild(Some(expires), t0()));
        assert!(!needs_rebuild(Some(expires), expires - MIN_REMAINING - Duration::from_secs(1)));
        assert!(needs_rebuild(Some(expires), expires - MIN_REMAINING));
        assert!(needs_rebuild(Some(expires), expires));
        assert!(needs_rebuild(Some(expires), expires + Duration::from_secs(3600)));
    }

    #[test]
    fn the_ca_pem_decodes_to_der_certificates() {
        let pem = decode_certificate_authority("c", &STANDARD.encode(TEST_CA_PEM)).unwrap();
        assert_eq!(pem, TEST_CA_PEM.as_bytes());
        let certs = ca_certificates("c", &pem).unwrap();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].len(), 418);
        assert_eq!(certs[0][0], 0x30, "DER SEQUENCE");

        // Line-wrapped base64 is accepted; bundles give every certificate.
        let wrapped = STANDARD
            .encode(TEST_CA_PEM)
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(decode_certificate_authority("c", &wrapped).unwrap(), pem);
        let bundle = format!("{TEST_CA_PEM}{TEST_CA_PEM}");
        assert_eq!(ca_certificates("c", bundle.as_bytes()).unwrap().len(), 2);
    }

    #[test]
    fn bad_ca_data_is_reported_as_such() {
        // moto returns a random string as the CA.
        let err = decode_certificate_authority("demo", "not base64!").unwrap_err();
        assert!(matches!(err, Error::Kube { operation: "connect", retryable: false, .. }));
        assert!(err.to_string().contains("not valid base64 PEM"), "{err}");

        let err = ca_certificates("demo", b"random bytes").unwrap_err();
        assert!(err.to_string().contains("no CERTIFICATE block"), "{err}");
        let truncated = &TEST_CA_PEM[..TEST_CA_PEM.len() - 30];
        assert!(ca_certificates("demo", truncated.as_bytes()).is_err());
    }

    #[tokio::test]
    async fn an_eks_config_pins_the_ca_and_sends_the_token() {
        let token = EksToken { token: format!("{TOKEN_PREFIX}abc"), expires_at: t0() };
        let config = kube_config_for_eks(
            "demo",
            "https://ABCDEF.gr7.eu-west-1.eks.amazonaws.com",
            TEST_CA_PEM.as_bytes(),
            &token,
        )
        .unwrap();
        assert_eq!(config.cluster_url.host(), Some("ABCDEF.gr7.eu-west-1.eks.amazonaws.com"));
        assert_eq!(config.root_cert.as_ref().map(Vec::len), Some(1));
        assert_eq!(config.default_namespace, "default");
        assert_eq!(config.connect_timeout, Some(CONNECT_TIMEOUT));
        assert_eq!(config.read_timeout, Some(READ_TIMEOUT));
        assert!(!config.accept_invalid_certs);
        use secrecy::ExposeSecret as _;
        assert_eq!(config.auth_info.token.as_ref().map(|t| t.expose_secret().to_owned()), Some(token.token.clone()));
        // The real TLS setup (rustls root store from the DER) accepts it.
        build_client("demo", config).unwrap();

        let err = kube_config_for_eks("demo", "not a url", TEST_CA_PEM.as_bytes(), &token).unwrap_err();
        assert!(err.to_string().contains("invalid API endpoint"), "{err}");
    }

    #[tokio::test]
    async fn kubeconfig_clients_work_over_plain_http() {
        let (base, seen) = serve(|_| Box::new(|_: &Seen| (200, vec![], VERSION_JSON.to_owned())));
        let dir = tempfile::tempdir().unwrap();
        let path = write_kubeconfig(&dir, "config", &base, "fake-token");
        let access = ClusterAccess::with_kubeconfig(&sdk_config("http://127.0.0.1:9"), Some(path.as_os_str()));
        assert!(access.uses_kubeconfig());

        let client = access.client_for("any-cluster").await.unwrap();
        assert_eq!(client.default_namespace(), "kube-system");
        let version = client.apiserver_version().await.unwrap();
        assert_eq!(version.git_version, "v1.33.0-eks-test");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "GET");
        assert_eq!(seen[0].path, "/version");
        assert_eq!(seen[0].header("authorization"), Some("Bearer fake-token"));

        // Cached: the file is not read again.
        std::fs::remove_file(&path).unwrap();
        access.client_for("any-cluster").await.unwrap();
    }

    #[tokio::test]
    async fn kubeconfig_paths_merge_and_a_context_named_like_the_cluster_wins() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_kubeconfig(&dir, "a", "http://127.0.0.1:1", "t1");
        let second = dir.path().join("b");
        std::fs::write(
            &second,
            "apiVersion: v1
kind: Config
clusters:
- name: other
  cluster:
    server: http://127.0.0.1:2
users:
- name: other
  user:
    token: t2
contexts:
- name: my-cluster
  context:
    cluster: other
    user: other
",
        )
        .unwrap();
        let paths = vec![first, second];
        let config = kube_config_from_kubeconfig(&paths, "my-cluster").await.unwrap();
        assert_eq!(config.cluster_url.port_u16(), Some(2));
        let config = kube_config_from_kubeconfig(&paths, "unknown").await.unwrap();
        assert_eq!(config.cluster_url.port_u16(), Some(1));
        assert_eq!(config.read_timeout, Some(READ_TIMEOUT));

        let joined = std::env::join_paths(&paths).unwrap();
        let access = ClusterAccess::with_kubeconfig(&sdk_config("http://127.0.0.1:9"), Some(&joined));
        assert_eq!(access.endpoint_for("x").await.unwrap(), ClusterEndpoint::Kubeconfig { paths });

        let err = kube_config_from_kubeconfig(&[dir.path().join("missing")], "c").await.unwrap_err();
        assert!(matches!(err, Error::Kube { operation: "connect", retryable: false, .. }));
        assert!(err.to_string().contains("KUBECONFIG"), "{err}");
    }

    #[test]
    fn an_empty_kubeconfig_means_eks() {
        let config = sdk_config("http://127.0.0.1:9");
        assert!(!ClusterAccess::with_kubeconfig(&config, None).uses_kubeconfig());
        assert!(!ClusterAccess::with_kubeconfig(&config, Some(OsStr::new(""))).uses_kubeconfig());
    }

    #[tokio::test]
    async fn eks_clients_describe_once_and_rebuild_near_token_expiry() {
        let (base, seen) = fake_eks("ACTIVE");
        let access = ClusterAccess::with_kubeconfig(&sdk_config(&base), None);

        let client = access.client_at("demo", t0()).await.unwrap();
        client.apiserver_version().await.unwrap();
        // Reused while the token has MIN_REMAINING left...
        let again = access.client_at("demo", t0() + Duration::from_secs(8 * 60)).await.unwrap();
        again.apiserver_version().await.unwrap();
        // ...then rebuilt with a new token, without describing again.
        let rebuilt = access.client_at("demo", t0() + Duration::from_secs(10 * 60)).await.unwrap();
        rebuilt.apiserver_version().await.unwrap();

        let seen = seen.lock().unwrap().clone();
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["/clusters/demo", "/version", "/version", "/version"]);
        let tokens: Vec<&str> =
            seen[1..].iter().map(|s| s.header("authorization").unwrap().strip_prefix("Bearer ").unwrap()).collect();
        assert_eq!(tokens[0], tokens[1]);
        assert_ne!(tokens[1], tokens[2]);
        for token in tokens {
            let url = String::from_utf8(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(token.strip_prefix(TOKEN_PREFIX).unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert!(url.starts_with("https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity"), "{url}");
            assert!(url.contains("X-Amz-Security-Token=session-token"), "{url}");
        }
        // DescribeCluster itself was SigV4-signed for EKS.
        assert!(seen[0].header("authorization").unwrap().contains("/eu-west-1/eks/aws4_request"));
    }

    #[tokio::test]
    async fn a_cluster_without_endpoint_is_reported() {
        let (base, _) = fake_eks("CREATING");
        let access = ClusterAccess::with_kubeconfig(&sdk_config(&base), None);
        let err = access.client_for("demo").await.err().expect("an error");
        assert!(matches!(err, Error::Kube { operation: "connect", retryable: false, .. }), "{err}");
        assert!(err.to_string().contains("no API endpoint yet (status CREATING)"), "{err}");
    }

    fn failing_eks(status: u16, code: &'static str) -> String {
        serve(move |_| {
            Box::new(move |_: &Seen| {
                (status, vec![("x-amzn-errortype".into(), code.into())], format!(r#"{{"message":"fake {code}"}}"#))
            })
        })
        .0
    }

    #[tokio::test]
    async fn describe_cluster_errors_are_classified() {
        let cases = [
            (404, "ResourceNotFoundException", false, "does not exist in eu-west-1"),
            (403, "AccessDeniedException", false, "eks:DescribeCluster"),
            (429, "ThrottlingException", true, "ThrottlingException (HTTP 429)"),
            (500, "ServerException", true, "ServerException (HTTP 500)"),
            (400, "InvalidParameterException", false, "InvalidParameterException (HTTP 400)"),
        ];
        for (status, code, retryable, text) in cases {
            let base = failing_eks(status, code);
            let access = ClusterAccess::with_kubeconfig(&sdk_config(&base), None);
            let err = access.client_for("demo").await.err().expect("an error");
            match &err {
                Error::Aws { operation, retryable: r, .. } => {
                    assert_eq!(*operation, "DescribeCluster");
                    assert_eq!(*r, retryable, "{code}: {err}");
                }
                other => panic!("{code}: unexpected {other:?}"),
            }
            assert!(err.to_string().contains(text), "{code}: {err}");
        }

        // Nothing listens on port 9 (discard): a dispatch failure, retryable.
        let access = ClusterAccess::with_kubeconfig(&sdk_config("http://127.0.0.1:9"), None);
        let err = access.client_for("demo").await.err().expect("an error");
        assert!(err.is_retryable(), "{err}");
    }

    #[test]
    fn retryable_classification_of_sdk_errors() {
        let service = |status: u16, code: &str| {
            let err = DescribeClusterError::generic(ErrorMetadata::builder().code(code).build());
            let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
            SdkError::service_error(err, raw)
        };
        assert!(errors::is_retryable(&service(400, "ThrottlingException")));
        assert!(errors::is_retryable(&service(503, "RequestLimitExceeded")));
        assert!(errors::is_retryable(&service(500, "InternalError")));
        assert!(errors::is_retryable(&service(429, "TooManyRequests")));
        assert!(!errors::is_retryable(&service(400, "InvalidParameterException")));
        assert!(!errors::is_retryable(&service(404, "ResourceNotFoundException")));
        assert!(!errors::is_retryable(&service(403, "AccessDeniedException")));

        let construction: SdkError<DescribeClusterError, HttpResponse> = SdkError::construction_failure("bad input");
        assert!(!errors::is_retryable(&construction));
        let timeout: SdkError<DescribeClusterError, HttpResponse> = SdkError::timeout_error("slow");
        assert!(errors::is_retryable(&timeout));

        assert_eq!(
            errors::message(&service(404, "ResourceNotFoundException")),
            "ResourceNotFoundException (HTTP 404): no message"
        );
    }

    #[test]
    fn debug_output_holds_no_secrets() {
        let endpoint = ClusterEndpoint::Eks { endpoint: "https://x".into(), ca_pem: TEST_CA_PEM.as_bytes().to_vec() };
        assert!(!format!("{endpoint:?}").contains("BEGIN"));
        let access = ClusterAccess::with_kubeconfig(&sdk_config("http://127.0.0.1:9"), None);
        let debug = format!("{access:?}");
        assert!(!debug.contains("wJalrXUtnFEMI"), "{debug}");
    }
}
