//! [`ClusterAccess`]: the one owner of a cluster's description and of its
//! Kubernetes clients, kept per process.
//!
//! Two ways in, chosen once when [`ClusterAccess`] is created:
//!
//! - `KUBECONFIG` is set (tests, local runs): the client comes from that
//!   kubeconfig and is kept for the life of the process.
//! - Otherwise (Lambda): the description's endpoint and CA locate the API
//!   server, the bearer token is signed locally ([`super::token`]), and the
//!   client is kept until its token comes near expiry, then rebuilt with a
//!   fresh token.
//!
//! Either way, `eks:DescribeCluster` is called once per run at most, and a
//! warm process reuses the answer for [`DESCRIPTION_TTL`]: the inventory
//! (VPC, subnets, node role) and the client (endpoint, CA) share it.
//!
//! A client is handed out only while its token has at least
//! [`MIN_REMAINING`] left, so take one right before a burst of Kubernetes
//! calls ([`ClusterAccess::with_api`]) rather than keeping one across a
//! long wait.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_types::error::display::DisplayErrorContext;
use tokio::sync::Mutex;

use super::auto_mode_api::AutoModeApi;
use super::describe::{ClusterDescription, describe_cluster};
use super::error::{ClusterError, ClusterResult};
use super::kube_config::{
    build_client, ca_certificates, decode_certificate_authority, kube_config_for_eks, kube_config_from_kubeconfig,
};
use super::token::{EksToken, generate_token};

/// A cached client is handed out only while its token stays valid at least
/// this long (beyond the one-minute margin already in
/// [`EksToken::expires_at`]). With 14-minute tokens a client is reused for
/// 9 minutes, then rebuilt; rebuilding signs locally and makes no AWS call.
pub const MIN_REMAINING: Duration = Duration::from_secs(5 * 60);

/// How long a warm process reuses a cluster's description. What headroom
/// takes from it (VPC, endpoint, CA, subnets, node role) changes only when
/// someone reconfigures the cluster; a run that fails forgets it at once
/// ([`ClusterAccess::invalidate`]).
pub const DESCRIPTION_TTL: Duration = Duration::from_secs(10 * 60);

struct CachedClient {
    client: kube::Client,
    /// `None`: never rebuilt (kubeconfig; kube refreshes exec/file
    /// credentials itself).
    expires_at: Option<SystemTime>,
}

struct CachedDescription {
    described_at: Instant,
    description: Arc<ClusterDescription>,
}

/// What is kept about one cluster. Each cluster has its own lock, held
/// across a DescribeCluster on purpose: concurrent callers for one cluster
/// wait for one call, and other clusters are not held up.
#[derive(Default)]
struct Cache {
    description: Option<CachedDescription>,
    client: Option<CachedClient>,
}

/// Hands out cluster descriptions and [`kube::Client`]s per cluster. Create
/// one per process and share it; creating it does no I/O.
pub struct ClusterAccess {
    eks: aws_sdk_eks::Client,
    credentials: Option<SharedCredentialsProvider>,
    region: Option<Region>,
    /// `Some`: `KUBECONFIG` was set when this was created.
    kubeconfig: Option<Vec<PathBuf>>,
    /// The kubeconfig context to use (the CLI's `--context`); `None`: the
    /// one named like the cluster, else the current one.
    kube_context: Option<String>,
    caches: std::sync::Mutex<HashMap<String, Arc<Mutex<Cache>>>>,
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
            kube_context: None,
            caches: std::sync::Mutex::default(),
        }
    }

    /// Uses this kubeconfig context rather than the one named like the cluster.
    pub fn with_kube_context(mut self, context: Option<String>) -> Self {
        self.kube_context = context;
        self
    }

    /// Whether clusters are reached through `KUBECONFIG` rather than EKS.
    pub fn uses_kubeconfig(&self) -> bool {
        self.kubeconfig.is_some()
    }

    /// What EKS says about `cluster`: described at most once per
    /// [`DESCRIPTION_TTL`], and once for all concurrent callers.
    pub async fn describe(&self, cluster: &str) -> ClusterResult<Arc<ClusterDescription>> {
        let cache = self.cache_of(cluster);
        let mut cache = cache.lock().await;
        self.describe_cached(&mut cache, cluster, Instant::now()).await
    }

    /// Every cluster name in the account and Region (`eks:ListClusters`, all pages).
    pub async fn list_cluster_names(&self) -> ClusterResult<Vec<String>> {
        let mut names = Vec::new();
        let mut pages = self.eks.list_clusters().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| ClusterError::Describe {
                message: format!(
                    "cannot list the clusters to find those that opt in: {} (the role needs eks:ListClusters)",
                    crate::aws::errors::message(&err)
                ),
                retryable: crate::aws::errors::is_retryable(&err),
            })?;
            names.extend(page.clusters().iter().cloned());
        }
        Ok(names)
    }

    /// The lock and cache of one cluster, made on first use.
    fn cache_of(&self, cluster: &str) -> Arc<Mutex<Cache>> {
        let mut caches = self.caches.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(caches.entry(cluster.to_owned()).or_default())
    }

    /// A client for `cluster`, authenticated and valid for at least
    /// [`MIN_REMAINING`].
    ///
    /// Cheap when cached (a clone). Otherwise: with `KUBECONFIG`, the
    /// kubeconfig is read; with EKS, the description gives the endpoint and
    /// CA and a token is signed. No request goes to the API server here.
    pub async fn client_for(&self, cluster: &str) -> ClusterResult<kube::Client> {
        self.client_at(cluster, SystemTime::now(), Instant::now()).await
    }

    /// Runs `call` against the cluster's NodeClasses and NodePools. A 401
    /// (the token was refused: it expired, or the access entry was just
    /// replaced) forgets the client and description and tries once more
    /// with a fresh token; a 401 was not acted on, so writes may repeat.
    pub async fn with_api<T, F, Fut>(&self, cluster: &str, call: F) -> ClusterResult<T>
    where
        F: Fn(AutoModeApi) -> Fut,
        Fut: Future<Output = ClusterResult<T>>,
    {
        match call(AutoModeApi::new(self.client_for(cluster).await?)).await {
            Err(error) if error.is_unauthorized() => {
                tracing::warn!(cluster, %error, "the API server refused the token; retrying once with a fresh one");
                self.invalidate(cluster).await;
                call(AutoModeApi::new(self.client_for(cluster).await?)).await
            }
            other => other,
        }
    }

    /// Records the VPC found through the cluster's subnets when the
    /// description did not name it (some emulators leave it out), so the
    /// rest of the run and warm runs need not look for it again.
    pub async fn learn_vpc(&self, cluster: &str, vpc_id: &str) {
        let cache = self.cache_of(cluster);
        let mut cache = cache.lock().await;
        if let Some(cached) = cache.description.as_mut()
            && cached.description.vpc_id.is_none()
        {
            Arc::make_mut(&mut cached.description).vpc_id = Some(vpc_id.to_owned());
        }
    }

    /// Forgets the description and the client of `cluster`: the next call
    /// describes it again and signs a new token. For a refused token, and
    /// after a failed run, whose cause may be a reconfigured cluster.
    pub async fn invalidate(&self, cluster: &str) {
        let cache = self.cache_of(cluster);
        let mut cache = cache.lock().await;
        cache.client = None;
        cache.description = None;
    }

    async fn describe_cached(
        &self,
        cache: &mut Cache,
        cluster: &str,
        now: Instant,
    ) -> ClusterResult<Arc<ClusterDescription>> {
        if let Some(cached) = &cache.description
            && now.saturating_duration_since(cached.described_at) < DESCRIPTION_TTL
        {
            return Ok(cached.description.clone());
        }
        let region = self.region(cluster)?;
        let description = Arc::new(describe_cluster(&self.eks, cluster, region.as_ref()).await?);
        cache.description = Some(CachedDescription { described_at: now, description: description.clone() });
        Ok(description)
    }

    async fn client_at(&self, cluster: &str, now: SystemTime, monotonic: Instant) -> ClusterResult<kube::Client> {
        // Held across the awaits below on purpose: concurrent callers wait for
        // one DescribeCluster instead of each making their own.
        let cache = self.cache_of(cluster);
        let mut cache = cache.lock().await;
        if let Some(cached) = &cache.client
            && !needs_rebuild(cached.expires_at, now)
        {
            return Ok(cached.client.clone());
        }

        let (config, expires_at) = match &self.kubeconfig {
            Some(paths) => (kube_config_from_kubeconfig(paths, cluster, self.kube_context.as_deref()).await?, None),
            None => {
                let description = self.describe_cached(&mut cache, cluster, monotonic).await?;
                let (endpoint, ca_pem) = endpoint_and_ca(&description)?;
                let token = self.token(cluster, now).await?;
                let expires_at = token.expires_at;
                (kube_config_for_eks(cluster, endpoint, &ca_pem, &token)?, Some(expires_at))
            }
        };
        let cluster_url = config.cluster_url.to_string();
        let client = build_client(cluster, config)?;
        tracing::debug!(cluster, %cluster_url, ?expires_at, "built a Kubernetes client");
        cache.client = Some(CachedClient { client: client.clone(), expires_at });
        Ok(client)
    }

    async fn token(&self, cluster: &str, now: SystemTime) -> ClusterResult<EksToken> {
        let region = self.region(cluster)?;
        let provider = self.credentials.as_ref().ok_or_else(|| ClusterError::Credentials {
            operation: "ProvideCredentials",
            message: "the AWS SDK configuration has no credentials provider".into(),
            retryable: false,
        })?;
        let credentials = provider.provide_credentials().await.map_err(|err| credentials_error(&err))?;
        generate_token(cluster, region.as_ref(), &credentials, now)
    }

    fn region(&self, cluster: &str) -> ClusterResult<&Region> {
        self.region.as_ref().ok_or_else(|| ClusterError::NoRegion { cluster: cluster.to_owned() })
    }
}

/// The API server's URL and the decoded CA (PEM) of a described cluster.
fn endpoint_and_ca(description: &ClusterDescription) -> ClusterResult<(&str, Vec<u8>)> {
    let cluster = &description.name;
    let not_active =
        |missing| ClusterError::NotActive { cluster: cluster.clone(), missing, status: description.status.clone() };
    let endpoint = description.endpoint.as_deref().ok_or_else(|| not_active("API endpoint"))?;
    let ca_data =
        description.certificate_authority.as_deref().ok_or_else(|| not_active("certificate authority data"))?;
    let ca_pem = decode_certificate_authority(cluster, ca_data)?;
    // Fail here with the CA's own message rather than at the TLS setup.
    ca_certificates(cluster, &ca_pem)?;
    Ok((endpoint, ca_pem))
}

/// Whether a cached client must be rebuilt at `now`. `expires_at` is the
/// token's ([`EksToken::expires_at`]); `None` never expires.
pub fn needs_rebuild(expires_at: Option<SystemTime>, now: SystemTime) -> bool {
    match expires_at {
        None => false,
        Some(expires_at) => now + MIN_REMAINING >= expires_at,
    }
}

fn credentials_error(err: &CredentialsError) -> ClusterError {
    let retryable = matches!(err, CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_));
    ClusterError::Credentials {
        operation: "ProvideCredentials",
        message: format!("no AWS credentials to sign the cluster token: {}", DisplayErrorContext(err)),
        retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use crate::cluster::test_support::*;
    use crate::cluster::token::TOKEN_PREFIX;

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

    #[cfg(feature = "kubeconfig")]
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

        let client = access.client_at("demo", t0(), Instant::now()).await.unwrap();
        client.apiserver_version().await.unwrap();
        // Reused while the token has MIN_REMAINING left...
        let again = access.client_at("demo", t0() + Duration::from_secs(8 * 60), Instant::now()).await.unwrap();
        again.apiserver_version().await.unwrap();
        // ...then rebuilt with a new token, without describing again.
        let rebuilt = access.client_at("demo", t0() + Duration::from_secs(10 * 60), Instant::now()).await.unwrap();
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
        assert!(matches!(err, ClusterError::NotActive { .. }) && !err.is_retryable(), "{err}");
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
                ClusterError::Describe { retryable: r, .. } => assert_eq!(*r, retryable, "{code}: {err}"),
                // Discovery skips a cluster deleted between listing and describing.
                ClusterError::NoSuchCluster { .. } => assert_eq!(code, "ResourceNotFoundException"),
                other => panic!("{code}: unexpected {other:?}"),
            }
            assert_eq!(err.is_retryable(), retryable, "{code}: {err}");
            assert!(err.to_string().contains(text), "{code}: {err}");
        }

        // Nothing listens on port 9 (discard): a dispatch failure, retryable.
        let access = ClusterAccess::with_kubeconfig(&sdk_config("http://127.0.0.1:9"), None);
        let err = access.client_for("demo").await.err().expect("an error");
        assert!(err.is_retryable(), "{err}");
    }

    #[test]
    fn debug_output_holds_no_secrets() {
        let mut description = ClusterDescription::new("demo");
        description.certificate_authority = Some(STANDARD.encode(TEST_CA_PEM));
        assert!(!format!("{description:?}").contains(&STANDARD.encode(TEST_CA_PEM)[..20]));
        let access = ClusterAccess::with_kubeconfig(&sdk_config("http://127.0.0.1:9"), None);
        let debug = format!("{access:?}");
        assert!(!debug.contains("wJalrXUtnFEMI"), "{debug}");
    }

    #[tokio::test]
    async fn a_description_is_reused_until_its_ttl_then_asked_again() {
        let (base, seen) = fake_eks("ACTIVE");
        let access = ClusterAccess::with_kubeconfig(&sdk_config(&base), None);
        let start = Instant::now();
        let cache = access.cache_of("demo");
        let mut cache = cache.lock().await;
        let first = access.describe_cached(&mut cache, "demo", start).await.unwrap();
        assert_eq!(first.endpoint.as_deref(), Some(base.as_str()));
        let warm = access.describe_cached(&mut cache, "demo", start + DESCRIPTION_TTL / 2).await.unwrap();
        assert!(Arc::ptr_eq(&first, &warm), "reused within the TTL");
        let stale = access.describe_cached(&mut cache, "demo", start + DESCRIPTION_TTL).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &stale), "described again once the TTL is over");
        drop(cache);
        let described = seen.lock().unwrap().iter().filter(|s| s.path == "/clusters/demo").count();
        assert_eq!(described, 2);

        // A client built after describing reuses the description.
        access.client_for("demo").await.unwrap().apiserver_version().await.unwrap();
        access.invalidate("demo").await;
        access.describe("demo").await.unwrap();
        let described = seen.lock().unwrap().iter().filter(|s| s.path == "/clusters/demo").count();
        assert_eq!(described, 3, "invalidate forgets the description");
    }

    #[tokio::test]
    async fn a_refused_token_is_replaced_once() {
        // The API server refuses the first request (as after an access entry
        // was replaced), then accepts.
        let (base, seen) = serve(|base| {
            let refused = std::sync::atomic::AtomicBool::new(false);
            Box::new(move |req: &Seen| {
                if req.path.starts_with("/clusters/") {
                    let body = serde_json::json!({"cluster": {
                        "name": "demo", "status": "ACTIVE", "endpoint": base,
                        "certificateAuthority": {"data": STANDARD.encode(TEST_CA_PEM)},
                    }});
                    return (200, vec![], body.to_string());
                }
                if !refused.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    let status = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;
                    return (401, vec![], status.to_owned());
                }
                (200, vec![], r#"{"apiVersion":"eks.amazonaws.com/v1","kind":"NodeClass","metadata":{"name":"headroom","resourceVersion":"7"},"spec":{}}"#.to_owned())
            })
        });
        let access = ClusterAccess::with_kubeconfig(&sdk_config(&base), None);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let read = access
            .with_api("demo", |api| {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async move { api.get_nodeclass("headroom").await }
            })
            .await;
        let nodeclass = read.unwrap().expect("the NodeClass");
        assert_eq!(nodeclass["metadata"]["resourceVersion"], "7");
        assert_eq!(calls.into_inner(), 2, "one retry after the 401");
        let seen = seen.lock().unwrap().clone();
        let described = seen.iter().filter(|s| s.path.starts_with("/clusters/")).count();
        assert_eq!(described, 2, "the description is refreshed with the token");
    }
}
