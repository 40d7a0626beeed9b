//! The one error type of the shared crate.
//!
//! Every variant knows whether retrying can succeed ([`Error::is_retryable`]):
//! the Lambda handlers fail the invocation (so Lambda retries it) only for
//! retryable errors, and answer non-retryable ones with a report instead.

use std::time::Duration;

use headroom_core::SettingsError;

use crate::cluster::ClusterError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting, or a cluster tag that overrides one, is invalid
    /// ([`headroom_core::SettingsError`]). Nothing was changed.
    #[error(transparent)]
    Settings(#[from] SettingsError),

    /// The invocation payload is not an event headroom understands.
    #[error("invalid event: {0}")]
    InvalidEvent(String),

    /// The trigger names no cluster and none is configured.
    #[error(
        "no cluster to act on: the event names none and CLUSTER_NAME is empty; set CLUSTER_NAME or pass \"clusterName\""
    )]
    NoCluster,

    /// The trigger names a cluster that this deployment does not manage.
    #[error("cluster {cluster:?} is not managed by this deployment: {how}")]
    UnmanagedCluster {
        cluster: String,
        /// What makes a cluster managed here, phrased as the fix.
        how: String,
    },

    /// The cluster's VPC lacks the opt-in tag the deployment's IAM policy
    /// requires before any change.
    #[error(
        "cluster {cluster:?} is in {vpc_id}, which lacks the tag {tag}: this deployment's IAM policy allows changes only in VPCs with it (VPC_OPT_IN_TAG); tag the VPC to let headroom act there"
    )]
    VpcNotOptedIn { cluster: String, vpc_id: String, tag: String },

    /// The cluster's network is not in a shape headroom can read.
    #[error("cannot read the network of cluster {cluster:?}: {reason}")]
    Inventory { cluster: String, reason: String },

    /// An AWS call failed.
    #[error("AWS {operation} failed: {message}")]
    Aws {
        operation: &'static str,
        message: String,
        /// Throttling, 5xx, timeouts and dropped connections: the next attempt can succeed.
        retryable: bool,
    },

    /// The cluster could not be described or reached, or its API server
    /// refused a read or a change ([`ClusterError`]).
    #[error(transparent)]
    Cluster(#[from] ClusterError),

    /// A CIDR association did not reach `associated` in time. The next run
    /// picks it up where this one stopped.
    #[error("CIDR {cidr} is still {state} on {vpc_id} after {waited:?}; the next run continues from here")]
    AssociationTimeout { vpc_id: String, cidr: String, state: String, waited: Duration },

    /// AWS refused the association after accepting the request.
    #[error(
        "CIDR {cidr} association on {vpc_id} ended in state {state}: {message}; check the VPC CIDR restrictions and quotas"
    )]
    AssociationFailed { vpc_id: String, cidr: String, state: String, message: String },

    /// After applying, the re-read state does not match the plan.
    #[error("verification failed after applying the plan: {0}")]
    Verification(String),

    /// The cluster is not in the VPC the deployment's IAM policy covers.
    #[error(
        "cluster {cluster:?} is in {actual}, but this deployment is limited to {configured} (VPC_ID); set VPC_ID={actual} if its IAM policy covers that VPC, or leave VPC_ID empty"
    )]
    WrongVpc { cluster: String, configured: String, actual: String },

    /// The plan differs from the one a person confirmed (the CLI's `apply`):
    /// the network or the cluster changed in between. Nothing was changed.
    #[error(
        "the plan for cluster {cluster:?} changed since it was confirmed (another run or a person changed the network); nothing was changed: review the new plan and confirm again"
    )]
    PlanChanged { cluster: String },

    /// The preflight found a permission the remediation needs and lacks.
    #[error("{0}")]
    PermissionDenied(String),
}

impl Error {
    /// Whether retrying the same invocation can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Aws { retryable, .. } => *retryable,
            Error::Cluster(error) => error.is_retryable(),
            Error::Settings(error) => error.is_retryable(),
            Error::AssociationTimeout { .. } | Error::Verification(_) => true,
            Error::WrongVpc { .. }
            | Error::VpcNotOptedIn { .. }
            | Error::PermissionDenied(_)
            | Error::PlanChanged { .. }
            | Error::InvalidEvent(_)
            | Error::NoCluster
            | Error::UnmanagedCluster { .. }
            | Error::Inventory { .. }
            | Error::AssociationFailed { .. } => false,
        }
    }

    /// A stable, machine-readable name for reports and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Settings(error) => error.kind(),
            Error::InvalidEvent(_) => "InvalidEvent",
            Error::NoCluster => "NoCluster",
            Error::UnmanagedCluster { .. } => "UnmanagedCluster",
            Error::Inventory { .. } => "Inventory",
            Error::Aws { .. } => "Aws",
            Error::Cluster(error) => error.kind(),
            Error::AssociationTimeout { .. } => "AssociationTimeout",
            Error::AssociationFailed { .. } => "AssociationFailed",
            Error::Verification(_) => "Verification",
            Error::WrongVpc { .. } => "WrongVpc",
            Error::VpcNotOptedIn { .. } => "VpcNotOptedIn",
            Error::PermissionDenied(_) => "PermissionDenied",
            Error::PlanChanged { .. } => "PlanChanged",
        }
    }

    pub(crate) fn invalid_event(message: impl Into<String>) -> Self {
        Error::InvalidEvent(message.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
