//! Reaching the cluster's Kubernetes API and changing NodeClasses.

pub mod access;
pub mod nodeclass;
pub mod token;

pub use access::{ClusterAccess, ClusterEndpoint};
pub use token::{EksToken, generate_token};
