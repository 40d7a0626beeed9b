//! Everything about the cluster itself, as opposed to its network:
//!
//! - [`describe`]: the one `eks:DescribeCluster` (VPC, subnets, node role,
//!   endpoint, CA);
//! - [`access`]: [`ClusterAccess`], which owns that description and the
//!   Kubernetes clients, per process;
//! - [`kube_config`] and [`token`]: how a client reaches and authenticates
//!   to the API server;
//! - [`auto_mode_api`]: reads and writes of NodeClasses and NodePools
//!   (the pure decisions about them are in [`crate::nodeclass`]);
//! - [`error`]: the errors of all of the above ([`ClusterError`]).

pub mod access;
pub mod auto_mode_api;
pub mod describe;
pub mod error;
pub mod kube_config;
#[cfg(test)]
mod test_support;
pub mod token;

pub use access::ClusterAccess;
pub use auto_mode_api::AutoModeApi;
pub use describe::ClusterDescription;
pub use error::{ClusterError, ClusterResult};
pub use token::{EksToken, generate_token};
