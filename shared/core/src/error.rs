//! The one error type of the core: a setting, or a cluster tag that
//! overrides one, that headroom cannot use. Everything else the core does
//! is a decision (a plan, a refusal, a forecast), not an error. Neither is
//! retryable: the same settings fail the same way until a person fixes them.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A setting in the environment is invalid. Nothing was changed.
    #[error("invalid setting {setting}={value:?}: {reason}")]
    Config { setting: &'static str, value: String, reason: String },

    /// A cluster tag that overrides a setting holds a value headroom cannot
    /// use. That cluster is left alone; the others are not affected.
    #[error(
        "cluster {cluster:?}: tag {tag}={value:?} is invalid: {reason}; fix or remove the tag (docs/deploy.md, per-cluster settings)"
    )]
    ClusterTag { cluster: String, tag: &'static str, value: String, reason: String },
}

impl SettingsError {
    /// Never: the same settings fail the same way until a person fixes them.
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// A stable, machine-readable name for reports and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SettingsError::Config { .. } => "Config",
            SettingsError::ClusterTag { .. } => "ClusterTag",
        }
    }
}

pub type Result<T, E = SettingsError> = std::result::Result<T, E>;
