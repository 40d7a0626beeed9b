//! A moto server child process: the local AWS emulator (EC2, EKS, CloudWatch).
//!
//! Each test may own its own server so tests run in parallel without sharing
//! state; start-up takes a few hundred milliseconds.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use bytes::Bytes;

use crate::TestbedError;
use crate::net::{PlainClient, plain_client, simple_request};

/// Environment variable naming the moto_server binary, overriding the default
/// `<workspace root>/.venv/bin/moto_server`.
pub const MOTO_SERVER_ENV: &str = "HEADROOM_MOTO_SERVER";

/// Access key and secret used for every test client: moto accepts any.
pub const TEST_CREDENTIALS: (&str, &str) = ("testing", "testing");

const START_TIMEOUT: Duration = Duration::from_secs(20);
const PORT_ATTEMPTS: usize = 5;
const LOG_TAIL_LINES: usize = 30;

/// The repository root (the Cargo workspace), where `.venv` lives.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| manifest_dir.to_path_buf())
}

/// Where the moto server binary is expected: `$HEADROOM_MOTO_SERVER`, else
/// `<workspace root>/.venv/bin/moto_server`. The file may not exist.
pub fn moto_binary_path() -> PathBuf {
    match std::env::var_os(MOTO_SERVER_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => workspace_root().join(".venv").join("bin").join("moto_server"),
    }
}

/// A running `moto_server`, killed when this value is dropped.
pub struct MotoServer {
    endpoint: String,
    child: tokio::process::Child,
    log_path: PathBuf,
    client: PlainClient,
    // Holds the log file; removed on drop.
    _log_dir: tempfile::TempDir,
}

enum StartFailure {
    /// Another process took the port between our probe and moto's bind.
    PortInUse,
    Fatal(TestbedError),
}

impl MotoServer {
    /// Starts moto on a free loopback port and waits until it answers.
    pub async fn start() -> Result<Self, TestbedError> {
        Self::start_with_binary(moto_binary_path()).await
    }

    /// Starts the given `moto_server` binary instead of the default one.
    pub async fn start_with_binary(binary: impl Into<PathBuf>) -> Result<Self, TestbedError> {
        let binary = binary.into();
        if !binary.is_file() {
            return Err(TestbedError::MotoNotInstalled { path: binary });
        }
        for attempt in 1..=PORT_ATTEMPTS {
            match Self::start_once(&binary).await {
                Ok(server) => return Ok(server),
                Err(StartFailure::PortInUse) => {
                    tracing::debug!(attempt, "moto port was taken; retrying on another port");
                }
                Err(StartFailure::Fatal(error)) => return Err(error),
            }
        }
        Err(TestbedError::Invalid(format!("moto could not bind a free loopback port in {PORT_ATTEMPTS} attempts")))
    }

    async fn start_once(binary: &Path) -> Result<Self, StartFailure> {
        let port = free_port().await.map_err(StartFailure::Fatal)?;
        let log_dir = tempfile::Builder::new()
            .prefix("headroom-moto-")
            .tempdir()
            .map_err(|e| StartFailure::Fatal(TestbedError::io("creating moto's log directory", e)))?;
        let log_path = log_dir.path().join("moto.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| StartFailure::Fatal(TestbedError::io("creating moto's log file", e)))?;
        let log_err =
            log.try_clone().map_err(|e| StartFailure::Fatal(TestbedError::io("duplicating moto's log file", e)))?;

        let child = tokio::process::Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| StartFailure::Fatal(TestbedError::MotoSpawn { path: binary.to_path_buf(), source }))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        tracing::debug!(%endpoint, pid = ?child.id(), log = %log_path.display(), "moto starting");

        let mut server = Self { endpoint, child, log_path, client: plain_client(), _log_dir: log_dir };
        server.wait_ready(port).await?;
        Ok(server)
    }

    /// Ready means: our child is alive, it logged that it bound *our* port
    /// (so we are not talking to another test's moto that grabbed the port
    /// first), and `GET /moto-api/` answers 200.
    async fn wait_ready(&mut self, port: u16) -> Result<(), StartFailure> {
        let started = Instant::now();
        let bound_line = format!("Running on http://127.0.0.1:{port}");
        let probe_url = format!("{}/moto-api/", self.endpoint);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self.read_log();
                if log.contains("Address already in use") {
                    return Err(StartFailure::PortInUse);
                }
                return Err(StartFailure::Fatal(TestbedError::MotoExited {
                    status: status.to_string(),
                    log_tail: tail(&log, LOG_TAIL_LINES),
                }));
            }
            if self.read_log().contains(&bound_line) {
                let probe =
                    simple_request(&self.client, http::Method::GET, &probe_url, Bytes::new(), Duration::from_secs(2))
                        .await;
                if let Ok((status, _)) = probe
                    && status.is_success()
                {
                    tracing::debug!(endpoint = %self.endpoint, elapsed = ?started.elapsed(), "moto ready");
                    return Ok(());
                }
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(StartFailure::Fatal(TestbedError::MotoStartTimeout {
                    endpoint: self.endpoint.clone(),
                    timeout: START_TIMEOUT,
                    log_tail: self.log_tail(LOG_TAIL_LINES),
                }));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Wipes all of moto's state (every service, every region), as between tests.
    pub async fn reset(&self) -> Result<(), TestbedError> {
        let url = format!("{}/moto-api/reset", self.endpoint);
        let (status, body) =
            simple_request(&self.client, http::Method::POST, &url, Bytes::new(), Duration::from_secs(10)).await?;
        if !status.is_success() {
            return Err(TestbedError::UnexpectedStatus {
                method: "POST".into(),
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(())
    }

    /// The file moto's stdout and stderr go to (deleted on drop).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of moto's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.read_log(), lines)
    }

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    fn read_log(&self) -> String {
        std::fs::read(&self.log_path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // kill_on_drop would do this too; being explicit documents intent and
        // works even if the Child is ever moved out.
        if let Err(error) = self.child.start_kill() {
            tracing::debug!(%error, "moto already gone");
        }
        // Reap it when we can, so a test binary does not accumulate zombies.
        let _ = self.child.try_wait();
    }
}

impl std::fmt::Debug for MotoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotoServer").field("endpoint", &self.endpoint).field("pid", &self.child.id()).finish()
    }
}

async fn free_port() -> Result<u16, TestbedError> {
    let (listener, addr) = crate::net::bind_loopback("moto port probe").await?;
    drop(listener);
    Ok(addr.port())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An `SdkConfig` for a local endpoint: static `testing` credentials, the
/// given region, and standard retries with millisecond back-off so that retry
/// paths are exercised without slowing tests down.
///
/// Built directly rather than through `aws_config::defaults`, so nothing from
/// the environment or `~/.aws` (e.g. `AWS_ENDPOINT_URL_EC2`, which would beat
/// an `endpoint_url` set here) can redirect a test client.
pub async fn sdk_config(endpoint: &str, region: &str) -> SdkConfig {
    sdk_config_with_retry(endpoint, region, test_retry_config()).await
}

/// Like [`sdk_config`] with a caller-chosen retry policy, e.g.
/// `RetryConfig::disabled()` to see the first error.
pub async fn sdk_config_with_retry(endpoint: &str, region: &str, retry: RetryConfig) -> SdkConfig {
    let (key, secret) = TEST_CREDENTIALS;
    let credentials = Credentials::new(key, secret, None, None, "headroom-testbed");
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .endpoint_url(endpoint)
        .region(Region::new(region.to_owned()))
        .retry_config(retry)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                // Bounds a hung attempt (e.g. a stuck moto call) without
                // cutting into injected latency of a few seconds.
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        )
        .build()
}

/// Standard mode, 3 attempts, 10–200 ms back-off.
pub fn test_retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(10))
        .with_max_backoff(Duration::from_millis(200))
}
