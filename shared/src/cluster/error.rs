//! What can go wrong reaching a cluster or changing its Auto Mode objects,
//! each variant with what the operator can do about it and whether a later
//! attempt can succeed.

/// An error of the cluster code ([`crate::cluster`]). It becomes
/// [`crate::Error::Cluster`] at the crate's boundary.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No region: the cluster cannot be found nor its token signed.
    #[error(
        "invalid setting AWS_REGION=\"\": no AWS region is configured; it is needed to find cluster {cluster:?} and to sign its token"
    )]
    NoRegion { cluster: String },

    /// `eks:DescribeCluster` failed.
    #[error("AWS DescribeCluster failed: {message}")]
    Describe { message: String, retryable: bool },

    /// `eks:DescribeCluster` says the cluster does not exist.
    #[error("AWS DescribeCluster failed: {message}")]
    NoSuchCluster { message: String },

    /// No credentials to sign the cluster's bearer token.
    #[error("AWS {operation} failed: {message}")]
    Credentials { operation: &'static str, message: String, retryable: bool },

    /// The cluster exists but has no endpoint or CA yet (it is being created).
    #[error(
        "Kubernetes connect failed: cluster {cluster:?} has no {missing} yet (status {status}); headroom can act once it is ACTIVE"
    )]
    NotActive { cluster: String, missing: &'static str, status: String },

    /// The endpoint, the CA or the kubeconfig cannot be used.
    #[error("Kubernetes connect failed: {message}")]
    Connect { message: String },

    /// The API server answered with an error status.
    #[error("Kubernetes {operation} failed: {code} {reason}: {message}{}", api_hint(*.code, .message))]
    Api { operation: &'static str, code: u16, reason: String, message: String },

    /// No answer from the API server: connection, TLS, timeout, or an
    /// answer that could not be read.
    #[error("Kubernetes {operation} failed: {message}")]
    Transport { operation: &'static str, message: String, retryable: bool },

    /// headroom will not make this change: the `default` NodeClass, a
    /// selector list that is full, a change the API server rejects as invalid.
    #[error("Kubernetes {operation} failed: {message}")]
    Refused { operation: &'static str, message: String },

    /// The object kept changing, or disappeared, while headroom changed it.
    #[error("Kubernetes {operation} failed: {message}")]
    Contended { operation: &'static str, message: String },
}

/// What an operator can do about an API status, appended to its message.
fn api_hint(code: u16, message: &str) -> &'static str {
    match code {
        401 => "; the token was refused: check the function's EKS access entry",
        403 if message.contains("ValidatingAdmissionPolicy") => {
            "; headroom's admission policy refuses it: the NodeClass and NodePool names and the node role must be \
             those scripts/rbac.sh rendered the policy for; render it again for this stack (--stack) and apply it"
        }
        403 => "; RBAC forbids it: apply infra/rbac.yaml and map the access entry to its group",
        404 if message.contains("could not find the requested resource") => {
            "; the NodeClass CRD is missing: is this an EKS Auto Mode cluster?"
        }
        _ => "",
    }
}

impl ClusterError {
    /// Whether a later attempt can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            // 410: a list's continue token expired; the next run lists afresh.
            ClusterError::Api { code, .. } => matches!(code, 409 | 410 | 429) || *code >= 500,
            ClusterError::Describe { retryable, .. }
            | ClusterError::Credentials { retryable, .. }
            | ClusterError::Transport { retryable, .. } => *retryable,
            ClusterError::Contended { .. } => true,
            ClusterError::NoRegion { .. }
            | ClusterError::NoSuchCluster { .. }
            | ClusterError::NotActive { .. }
            | ClusterError::Connect { .. }
            | ClusterError::Refused { .. } => false,
        }
    }

    /// The API server refused the bearer token: a fresh token may pass.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ClusterError::Api { code: 401, .. })
    }

    /// The report's error kind: AWS calls made for the cluster count as
    /// `Aws`, a missing region as `Config`, the rest as `Kube`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClusterError::NoRegion { .. } => "Config",
            ClusterError::Describe { .. } | ClusterError::NoSuchCluster { .. } | ClusterError::Credentials { .. } => {
                "Aws"
            }
            _ => "Kube",
        }
    }

    /// Classifies a kube-rs error of `operation`.
    pub fn from_kube(operation: &'static str, err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => {
                ClusterError::Api { operation, code: status.code, reason: status.reason, message: status.message }
            }
            // Connection, TLS and timeout failures can pass; a request that
            // cannot be built or an answer that cannot be decoded will not.
            other => ClusterError::Transport {
                operation,
                retryable: !matches!(other, kube::Error::SerdeError(_) | kube::Error::BuildRequest(_)),
                message: other.to_string(),
            },
        }
    }
}

pub type ClusterResult<T> = Result<T, ClusterError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> ClusterError {
        ClusterError::Api { operation: "patch NodeClass", code, reason: "Reason".into(), message: message.into() }
    }

    #[test]
    fn api_statuses_are_classified_and_explained() {
        for (code, retryable) in [(401, false), (403, false), (404, false), (409, true), (410, true), (422, false)] {
            assert_eq!(api(code, "m").is_retryable(), retryable, "{code}");
        }
        assert!(api(429, "m").is_retryable() && api(503, "m").is_retryable());
        assert!(api(401, "m").is_unauthorized() && !api(403, "m").is_unauthorized());
        assert!(api(403, "m").to_string().ends_with("apply infra/rbac.yaml and map the access entry to its group"));
        // A ValidatingAdmissionPolicy denial is a 403 too, but RBAC is not the cause.
        let denied = api(
            403,
            "nodeclasses.eks.amazonaws.com \"extra\" is forbidden: ValidatingAdmissionPolicy 'headroom' with binding \
             'headroom' denied request: headroom may create or change only the NodeClass headroom",
        );
        assert!(!denied.is_retryable());
        assert!(denied.to_string().contains("headroom's admission policy refuses it"), "{denied}");
        assert!(!denied.to_string().contains("RBAC forbids it"), "{denied}");
        let crd = api(404, "the server could not find the requested resource");
        assert!(crd.to_string().contains("is this an EKS Auto Mode cluster?"), "{crd}");
        assert_eq!(api(422, "m").to_string(), "Kubernetes patch NodeClass failed: 422 Reason: m");
    }

    #[test]
    fn kinds_follow_the_service_called() {
        assert_eq!(ClusterError::Describe { message: "x".into(), retryable: true }.kind(), "Aws");
        assert_eq!(ClusterError::NoRegion { cluster: "c".into() }.kind(), "Config");
        assert_eq!(api(500, "m").kind(), "Kube");
    }
}
