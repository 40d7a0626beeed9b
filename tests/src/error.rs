//! The one error type of the testbed.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while starting or driving the local AWS and
/// Kubernetes stand-ins. Messages say what to do about it, because the reader
/// is usually someone whose test just failed on a fresh machine.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// The moto server binary is not where we looked.
    #[error(
        "moto server not found at {path}: run `scripts/setup-moto.sh` from the repository root \
         (or point HEADROOM_MOTO_SERVER at a moto_server binary)"
    )]
    MotoNotInstalled { path: PathBuf },

    /// The moto process could not be started at all.
    #[error("could not start moto server {path}: {source}")]
    MotoSpawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The moto process exited before it answered.
    #[error("moto server exited during start-up ({status}); last log lines:\n{log_tail}")]
    MotoExited { status: String, log_tail: String },

    /// The moto process is running but did not answer in time.
    #[error(
        "moto server at {endpoint} did not answer GET /moto-api/ within {timeout:?}; \
         last log lines:\n{log_tail}"
    )]
    MotoStartTimeout { endpoint: String, timeout: Duration, log_tail: String },

    /// A request to a local server (moto, or the fake API server) failed.
    #[error("HTTP request {method} {url} failed: {message}")]
    Http { method: String, url: String, message: String },

    /// A local server answered with an unexpected status.
    #[error("{method} {url} answered HTTP {status}: {body}")]
    UnexpectedStatus { method: String, url: String, status: u16, body: String },

    /// Local I/O (binding a port, temp files, log files) failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The generated kubeconfig was rejected by kube-rs.
    #[error("kube client configuration failed: {0}")]
    Kube(String),

    /// A value given to the testbed is not usable.
    #[error("invalid testbed input: {0}")]
    Invalid(String),
}

impl TestbedError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}
