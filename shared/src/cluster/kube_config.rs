//! Client configurations for a cluster's API server: from EKS (endpoint,
//! pinned CA, bearer token) or from kubeconfig files, with headroom's
//! timeouts. Building one does no I/O beyond reading kubeconfig files.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
#[cfg(feature = "kubeconfig")]
use kube::config::{KubeConfigOptions, Kubeconfig};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use super::error::{ClusterError, ClusterResult};
use super::token::EksToken;

/// Timeout to open a connection to the API server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout for the API server's response and for sending a request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Decodes `certificateAuthority.data` (base64 of a PEM bundle).
pub fn decode_certificate_authority(cluster: &str, data: &str) -> ClusterResult<Vec<u8>> {
    let compact: String = data.split_ascii_whitespace().collect();
    STANDARD.decode(compact).map_err(|e| ClusterError::Connect {
        message: format!("the certificate authority data of cluster {cluster:?} is not valid base64 PEM: {e}"),
    })
}

/// The DER certificates of a PEM bundle (other PEM sections are skipped).
pub fn ca_certificates(cluster: &str, pem: &[u8]) -> ClusterResult<Vec<Vec<u8>>> {
    let invalid = |reason: String| ClusterError::Connect {
        message: format!("the certificate authority data of cluster {cluster:?} is not valid base64 PEM: {reason}"),
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|cert| cert.map(|der| der.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid("it holds no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The client configuration for an EKS endpoint: TLS pinned to the cluster
/// CA, the token as bearer, [`CONNECT_TIMEOUT`] and [`READ_TIMEOUT`].
pub fn kube_config_for_eks(
    cluster: &str,
    endpoint: &str,
    ca_pem: &[u8],
    token: &EksToken,
) -> ClusterResult<kube::Config> {
    let cluster_url: http::Uri = endpoint.parse().map_err(|e| ClusterError::Connect {
        message: format!("cluster {cluster:?} has an invalid API endpoint {endpoint:?}: {e}"),
    })?;
    if cluster_url.scheme().is_none() || cluster_url.host().is_none() {
        return Err(ClusterError::Connect {
            message: format!("cluster {cluster:?} has an API endpoint without scheme or host: {endpoint:?}"),
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
/// kubectl), in the context [`context_for`] picks.
#[cfg(feature = "kubeconfig")]
pub async fn kube_config_from_kubeconfig(
    paths: &[PathBuf],
    cluster: &str,
    wanted: Option<&str>,
) -> ClusterResult<kube::Config> {
    let shown = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    let invalid = |e: kube::config::KubeconfigError| ClusterError::Connect {
        message: format!("cannot use the kubeconfig {shown} (KUBECONFIG): {e}"),
    };
    let mut merged: Option<Kubeconfig> = None;
    for path in paths {
        let next = Kubeconfig::read_from(path).map_err(invalid)?;
        merged = Some(match merged {
            None => next,
            Some(merged) => merged.merge(next).map_err(invalid)?,
        });
    }
    let kubeconfig = merged.ok_or_else(|| ClusterError::Connect { message: "KUBECONFIG names no file".into() })?;
    let names: Vec<&str> = kubeconfig.contexts.iter().map(|c| c.name.as_str()).collect();
    let context = context_for(&names, cluster, wanted);
    if let Some(wanted) = wanted
        && context.is_none()
    {
        return Err(ClusterError::Connect {
            message: format!("the kubeconfig {shown} has no context {wanted:?}; it has {}", names.join(", ")),
        });
    }
    let options = KubeConfigOptions { context, ..KubeConfigOptions::default() };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(invalid)?;
    set_timeouts(&mut config);
    Ok(config)
}

/// Without the `kubeconfig` feature (the Lambda functions as deployed:
/// reading kubeconfig YAML adds about 150 KiB to each zip, for a file that
/// never exists in Lambda), `KUBECONFIG` is refused with the fix.
#[cfg(not(feature = "kubeconfig"))]
pub async fn kube_config_from_kubeconfig(
    paths: &[PathBuf],
    cluster: &str,
    _wanted: Option<&str>,
) -> ClusterResult<kube::Config> {
    let shown = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
    Err(ClusterError::Connect {
        message: format!(
            "KUBECONFIG is set ({shown}) but this build reaches cluster {cluster:?} through EKS only; unset \
             KUBECONFIG, or build with the `kubeconfig` feature (`--features headroom/kubeconfig`)"
        ),
    })
}

/// The kubeconfig context for `cluster`: the one asked for; else one named
/// like the cluster, by its name, the ARN `aws eks update-kubeconfig` writes
/// (`arn:aws:eks:<region>:<account>:cluster/<name>`) or eksctl's
/// `<user>@<name>.<region>.eksctl.io`; else `None`, the current context.
pub fn context_for(names: &[&str], cluster: &str, wanted: Option<&str>) -> Option<String> {
    if let Some(wanted) = wanted {
        return names.contains(&wanted).then(|| wanted.to_owned());
    }
    let arn_suffix = format!(":cluster/{cluster}");
    let eksctl_infix = format!("@{cluster}.");
    let by = |matches: &dyn Fn(&str) -> bool| names.iter().find(|n| matches(n)).map(|n| (*n).to_owned());
    by(&|n| n == cluster)
        .or_else(|| by(&|n| n.starts_with("arn:") && n.ends_with(&arn_suffix)))
        .or_else(|| by(&|n| n.contains(&eksctl_infix) && n.ends_with(".eksctl.io")))
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
pub(super) fn build_client(cluster: &str, config: kube::Config) -> ClusterResult<kube::Client> {
    let url = config.cluster_url.to_string();
    kube::Client::try_from(config).map_err(|e| ClusterError::Connect {
        message: format!(
            "cannot set up a client for cluster {cluster:?} at {url}: {e} \
             (check the cluster's certificate authority data)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::test_support::*;
    use crate::cluster::token::TOKEN_PREFIX;

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
        assert!(matches!(err, ClusterError::Connect { .. }) && !err.is_retryable());
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

    #[cfg(feature = "kubeconfig")]
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
        let config = kube_config_from_kubeconfig(&paths, "my-cluster", None).await.unwrap();
        assert_eq!(config.cluster_url.port_u16(), Some(2));
        let config = kube_config_from_kubeconfig(&paths, "unknown", None).await.unwrap();
        assert_eq!(config.cluster_url.port_u16(), Some(1));
        assert_eq!(config.read_timeout, Some(READ_TIMEOUT));

        let err = kube_config_from_kubeconfig(&[dir.path().join("missing")], "c", None).await.unwrap_err();
        assert!(matches!(err, ClusterError::Connect { .. }) && !err.is_retryable());
        assert!(err.to_string().contains("KUBECONFIG"), "{err}");

        let config = kube_config_from_kubeconfig(&paths, "unknown", Some("my-cluster")).await.unwrap();
        assert_eq!(config.cluster_url.port_u16(), Some(2), "the context asked for wins");
        let err = kube_config_from_kubeconfig(&paths, "unknown", Some("nope")).await.unwrap_err();
        assert!(err.to_string().contains("no context \"nope\""), "{err}");
    }

    #[test]
    fn the_context_is_the_one_asked_for_else_one_named_like_the_cluster() {
        let names =
            ["kind-dev", "arn:aws:eks:eu-west-1:123456789012:cluster/prod", "me@staging.eu-west-1.eksctl.io", "demo"];
        assert_eq!(context_for(&names, "demo", None).as_deref(), Some("demo"));
        assert_eq!(
            context_for(&names, "prod", None).as_deref(),
            Some("arn:aws:eks:eu-west-1:123456789012:cluster/prod")
        );
        assert_eq!(context_for(&names, "staging", None).as_deref(), Some("me@staging.eu-west-1.eksctl.io"));
        assert_eq!(context_for(&names, "other", None), None, "the current context");
        assert_eq!(context_for(&names, "prod", Some("kind-dev")).as_deref(), Some("kind-dev"));
        assert_eq!(context_for(&names, "prod", Some("absent")), None);
        // `cluster/pro` must not pick `cluster/prod`.
        assert_eq!(context_for(&names, "pro", None), None);
    }
}
