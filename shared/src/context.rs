//! What every invocation of a function process shares, built once.

use crate::aws::AwsClients;
use crate::cluster::ClusterAccess;
use crate::config::Config;
use crate::error::Result;

/// Everything an invocation needs, built once per process. Building it opens
/// no connection and resolves no credentials.
pub struct Context {
    pub config: Config,
    pub aws: AwsClients,
    pub clusters: ClusterAccess,
}

impl Context {
    pub async fn from_env() -> Result<Self> {
        let config = Config::from_env()?;
        let aws = AwsClients::from_env().await;
        let clusters = ClusterAccess::new(&aws.sdk_config);
        Ok(Context { config, aws, clusters })
    }

    pub fn new(config: Config, aws: AwsClients, clusters: ClusterAccess) -> Self {
        Context { config, aws, clusters }
    }
}
