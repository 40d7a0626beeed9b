//! The one `eks:DescribeCluster` of a run: what EKS says about a cluster,
//! for the network inventory (VPC, subnets, security groups, node role) and
//! for reaching its API server (endpoint, CA). [`super::ClusterAccess`]
//! owns the call and keeps the answer for a while, so a warm invocation
//! does not ask again.

use std::collections::BTreeMap;
use std::fmt;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::error::{ClusterError, ClusterResult};
use crate::aws::errors;

/// What DescribeCluster tells about a cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub name: String,
    /// `CREATING`, `ACTIVE`, …
    pub status: String,
    /// Absent in some emulators; derived from the subnets then.
    pub vpc_id: Option<String>,
    /// `resourcesVpcConfig.subnetIds`: where the control plane puts its ENIs.
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub cluster_security_group_id: Option<String>,
    /// `computeConfig.nodeRoleArn`: the Auto Mode node role.
    pub node_role_arn: Option<String>,
    /// The API server's URL; absent until the cluster is ready.
    pub endpoint: Option<String>,
    /// `certificateAuthority.data`: base64 of the CA's PEM bundle.
    pub certificate_authority: Option<String>,
    /// The cluster's tags: the opt-in tag and per-cluster overrides.
    pub tags: BTreeMap<String, String>,
    /// `computeConfig.enabled`: EKS Auto Mode. `None`: not said (emulators).
    pub auto_mode: Option<bool>,
}

impl fmt::Debug for ClusterDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterDescription")
            .field("name", &self.name)
            .field("status", &self.status)
            .field("vpc_id", &self.vpc_id)
            .field("subnet_ids", &self.subnet_ids)
            .field("endpoint", &self.endpoint)
            .field("tags", &self.tags)
            .field(
                "certificate_authority",
                &self.certificate_authority.as_ref().map(|d| format!("<{} bytes>", d.len())),
            )
            .finish_non_exhaustive()
    }
}

impl ClusterDescription {
    /// A description that names only the cluster and its VPC's subnets (tests, tools).
    pub fn new(name: impl Into<String>) -> Self {
        ClusterDescription {
            name: name.into(),
            status: "ACTIVE".into(),
            vpc_id: None,
            subnet_ids: Vec::new(),
            security_group_ids: Vec::new(),
            cluster_security_group_id: None,
            node_role_arn: None,
            endpoint: None,
            certificate_authority: None,
            tags: BTreeMap::new(),
            auto_mode: None,
        }
    }
}

/// Calls DescribeCluster. The SDK's own retries apply (throttling, 5xx).
pub async fn describe_cluster(
    eks: &aws_sdk_eks::Client,
    cluster: &str,
    region: &str,
) -> ClusterResult<ClusterDescription> {
    let output =
        eks.describe_cluster().name(cluster).send().await.map_err(|err| describe_error(cluster, region, &err))?;
    let Some(info) = output.cluster() else {
        return Err(ClusterError::Describe {
            message: format!("the response for cluster {cluster:?} has no cluster"),
            retryable: true,
        });
    };
    let non_empty = |value: Option<&str>| value.filter(|v| !v.is_empty()).map(String::from);
    let vpc = info.resources_vpc_config();
    let description = ClusterDescription {
        name: cluster.to_string(),
        status: info.status().map_or("unknown", |s| s.as_str()).to_string(),
        vpc_id: non_empty(vpc.and_then(|v| v.vpc_id())),
        subnet_ids: vpc.map(|v| v.subnet_ids().to_vec()).unwrap_or_default(),
        security_group_ids: vpc.map(|v| v.security_group_ids().to_vec()).unwrap_or_default(),
        cluster_security_group_id: non_empty(vpc.and_then(|v| v.cluster_security_group_id())),
        node_role_arn: non_empty(info.compute_config().and_then(|c| c.node_role_arn())),
        endpoint: non_empty(info.endpoint()),
        certificate_authority: non_empty(info.certificate_authority().and_then(|ca| ca.data())),
        tags: info.tags().map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default(),
        auto_mode: info.compute_config().and_then(|c| c.enabled()),
    };
    tracing::debug!(cluster, status = %description.status, vpc = ?description.vpc_id, "described the cluster");
    Ok(description)
}

fn describe_error<E>(cluster: &str, region: &str, err: &SdkError<E, HttpResponse>) -> ClusterError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = errors::message(err);
    let status = match err {
        SdkError::ServiceError(ctx) => Some(ctx.raw().status().as_u16()),
        _ => None,
    };
    let code = err.code();
    if code == Some("ResourceNotFoundException") {
        return ClusterError::NoSuchCluster {
            message: format!(
                "cluster {cluster:?} does not exist in {region}; check the cluster name and AWS_REGION ({detail})"
            ),
        };
    }
    let message = if status == Some(403) || code.is_some_and(|c| c.contains("AccessDenied")) {
        format!(
            "not allowed to describe cluster {cluster:?}: the function's role needs eks:DescribeCluster on it ({detail})"
        )
    } else {
        format!("cannot describe cluster {cluster:?} in {region}: {detail}")
    };
    ClusterError::Describe { message, retryable: errors::is_retryable(err) }
}

#[cfg(test)]
mod tests {
    use super::*;

    use aws_sdk_eks::operation::describe_cluster::DescribeClusterError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

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
}
