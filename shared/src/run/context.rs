//! What every invocation of a function process shares, built once.

use std::sync::Arc;

use crate::aws::AwsClients;
use crate::cluster::ClusterAccess;
use crate::config::Config;
use crate::error::Result;

/// Everything an invocation needs, built once per process. Building it opens
/// no connection and resolves no credentials.
pub struct Context {
    pub config: Config,
    pub aws: AwsClients,
    /// Shared by every cluster's view ([`Context::with_config`]): one cache of
    /// descriptions and Kubernetes clients per process.
    pub clusters: Arc<ClusterAccess>,
}

impl Context {
    pub async fn from_env() -> Result<Self> {
        let config = Config::from_env()?;
        let aws = AwsClients::for_lambda();
        let clusters = ClusterAccess::new(&aws.sdk_config);
        Ok(Context::new(config, aws, clusters))
    }

    pub fn new(config: Config, aws: AwsClients, clusters: ClusterAccess) -> Self {
        Context { config, aws, clusters: Arc::new(clusters) }
    }

    /// The same clients and caches under other settings: one cluster's
    /// settings once its tags have overridden the deployment's.
    pub fn with_config(&self, config: Config) -> Self {
        Context { config, aws: self.aws.clone(), clusters: Arc::clone(&self.clusters) }
    }
}
