//! A local AWS Lambda Runtime API, and the function binaries run against it.
//!
//! [`RuntimeApi`] is an HTTP server on 127.0.0.1 that speaks the protocol a
//! `provided.al2023` function talks to (API version `2018-06-01`, as in
//! `lambda_runtime` 1.5):
//!
//! - `GET /2018-06-01/runtime/invocation/next` long-polls until an event is
//!   queued by [`RuntimeApi::invoke`], then answers `200` with the payload and
//!   the headers `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms`
//!   (lambda_runtime panics without these two), `Lambda-Runtime-Invoked-Function-Arn`,
//!   `Lambda-Runtime-Trace-Id` and `Lambda-Runtime-Invocation-Id` (echoed back
//!   by lambda_runtime ≥ 1.5 on the answer, and checked here).
//! - `POST /2018-06-01/runtime/invocation/{id}/response`: the function's
//!   result, any JSON; answered `202`.
//! - `POST /2018-06-01/runtime/invocation/{id}/error` and
//!   `POST /2018-06-01/runtime/init/error`: a `Diagnostic`,
//!   `{"errorType": "...", "errorMessage": "..."}`, with the
//!   `Lambda-Runtime-Function-Error-Type` header; answered `202`.
//!
//! Anything else is answered `404`/`400` the way Lambda does and recorded as
//! a protocol violation ([`RuntimeApi::violations`]).
//!
//! [`FunctionCommand`] / [`FunctionProcess`] start one of headroom's function
//! binaries with the environment Lambda gives it (plus the testbed's AWS and
//! Kubernetes settings), keep its output in files, and kill it when dropped.
//! [`function_binary`] finds (and, once per test process, builds) the binaries.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot, watch};

use crate::TestbedError;
use crate::harness::Harness;
use crate::lab;
use crate::net::{ServerTask, bind_loopback};

/// Header names of the Runtime API (HTTP header names are case-insensitive;
/// Lambda sends them capitalised like this).
pub mod headers {
    pub const REQUEST_ID: &str = "Lambda-Runtime-Aws-Request-Id";
    pub const DEADLINE_MS: &str = "Lambda-Runtime-Deadline-Ms";
    pub const INVOKED_FUNCTION_ARN: &str = "Lambda-Runtime-Invoked-Function-Arn";
    pub const TRACE_ID: &str = "Lambda-Runtime-Trace-Id";
    pub const INVOCATION_ID: &str = "Lambda-Runtime-Invocation-Id";
    pub const FUNCTION_ERROR_TYPE: &str = "Lambda-Runtime-Function-Error-Type";
}

/// The function name [`RuntimeApi::start`] puts in the invoked function ARN.
pub const DEFAULT_FUNCTION_NAME: &str = "headroom-test";
/// Account in the ARNs; the one moto uses.
pub const ACCOUNT_ID: &str = "123456789012";

/// How an invocation ended, as the Runtime API saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// `POST …/invocation/{id}/response`: the handler's JSON answer (a JSON
    /// string holding the raw body if it was not JSON).
    Response(Value),
    /// `POST …/invocation/{id}/error`: the handler failed; Lambda would retry
    /// an asynchronous invocation.
    Error { error_type: String, error_message: String },
    /// No answer within the timeout. `fetched`: whether the function took
    /// the event from `GET …/next` at all.
    TimedOut { fetched: bool },
}

impl Invocation {
    /// The JSON answer, if the function answered normally.
    pub fn response(&self) -> Option<&Value> {
        match self {
            Invocation::Response(value) => Some(value),
            _ => None,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Invocation::Error { .. })
    }
}

/// A `Diagnostic` posted to `/init/error` (or an unparseable body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitError {
    pub error_type: String,
    pub error_message: String,
    /// `Lambda-Runtime-Function-Error-Type`.
    pub header_error_type: Option<String>,
}

/// One request to the Runtime API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// `User-Agent` (lambda_runtime sends `aws-lambda-rust/<version>`).
    pub user_agent: Option<String>,
}

/// An event waiting for `GET …/next`.
struct Queued {
    request_id: String,
    invocation_id: String,
    deadline_ms: u64,
    trace_id: String,
    payload: Bytes,
}

/// An invocation that has been queued and not yet answered.
struct Pending {
    invocation_id: String,
    fetched: bool,
    answer: Option<oneshot::Sender<Invocation>>,
}

#[derive(Default)]
struct State_ {
    queue: VecDeque<Queued>,
    pending: HashMap<String, Pending>,
    init_errors: Vec<InitError>,
    requests: Vec<RuntimeRequest>,
    violations: Vec<String>,
    polls: usize,
}

struct Shared {
    function_arn: String,
    ids: AtomicU64,
    state: Mutex<State_>,
    /// Woken when an event is queued.
    queued: Notify,
    /// Time of the first `GET …/next`.
    first_poll: watch::Sender<Option<Instant>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, method: &str, path: &str, status: StatusCode, headers: &HeaderMap) {
        let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        self.lock().requests.push(RuntimeRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            status: status.as_u16(),
            user_agent,
        });
    }

    fn violation(&self, message: String) {
        tracing::warn!(%message, "Lambda Runtime API protocol violation");
        self.lock().violations.push(message);
    }

    /// A fresh id shaped like a UUID v4, unique within the process.
    fn new_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let a = headroom::rng::mix(nanos ^ n.rotate_left(32) ^ u64::from(std::process::id()));
        let b = headroom::rng::mix(a ^ n);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            8 | (b >> 62),
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }
}

/// The local Lambda Runtime API. Dropping it stops the server and closes
/// its connections (a function blocked in `GET …/next` then exits).
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    first_poll: watch::Receiver<Option<Instant>>,
    _server: ServerTask,
}

impl RuntimeApi {
    /// Starts a server on 127.0.0.1 for [`DEFAULT_FUNCTION_NAME`].
    pub async fn start() -> Result<Self, TestbedError> {
        Self::start_for(DEFAULT_FUNCTION_NAME).await
    }

    /// Starts a server whose invocations name `function_name` in their ARN.
    pub async fn start_for(function_name: &str) -> Result<Self, TestbedError> {
        let (listener, addr) = bind_loopback("Lambda Runtime API").await?;
        let (first_poll_tx, first_poll) = watch::channel(None);
        let shared = Arc::new(Shared {
            function_arn: format!("arn:aws:lambda:{}:{ACCOUNT_ID}:function:{function_name}", lab::REGION),
            ids: AtomicU64::new(1),
            state: Mutex::new(State_::default()),
            queued: Notify::new(),
            first_poll: first_poll_tx,
        });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(invocation_response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(invocation_error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .fallback(unknown)
            .with_state(Arc::clone(&shared));
        let server = ServerTask::spawn(listener, "lambda-runtime-api", move |stream, peer| {
            let service = TowerToHyperService::new(router.clone());
            async move {
                let connection =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, %error, "runtime API connection ended with an error");
                }
            }
        });
        tracing::debug!(%addr, "Lambda Runtime API listening");
        Ok(Self { addr, shared, first_poll, _server: server })
    }

    /// `127.0.0.1:PORT`: the value of `AWS_LAMBDA_RUNTIME_API` (no scheme).
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The ARN sent as `Lambda-Runtime-Invoked-Function-Arn`.
    pub fn function_arn(&self) -> &str {
        &self.shared.function_arn
    }

    /// Queues `payload` for the next `GET …/next` and waits up to `timeout`
    /// for the function's answer. The deadline sent to the function is now +
    /// `timeout`. On a timeout the event is withdrawn if it was not fetched,
    /// and a late answer is refused like Lambda refuses one.
    pub async fn invoke(&self, payload: Value, timeout: Duration) -> Invocation {
        let request_id = self.shared.new_id();
        let invocation_id = self.shared.new_id();
        let (answer_tx, answer_rx) = oneshot::channel();
        let deadline_ms = SystemTime::now()
            .checked_add(timeout)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(u64::MAX);
        let epoch_secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let trace_id = format!(
            "Root=1-{epoch_secs:08x}-{};Parent={};Sampled=0",
            request_id.replace('-', "")[..24].to_owned(),
            &invocation_id.replace('-', "")[..16]
        );
        {
            let mut state = self.shared.lock();
            state.pending.insert(
                request_id.clone(),
                Pending { invocation_id: invocation_id.clone(), fetched: false, answer: Some(answer_tx) },
            );
            state.queue.push_back(Queued {
                request_id: request_id.clone(),
                invocation_id,
                deadline_ms,
                trace_id,
                payload: Bytes::from(serde_json::to_vec(&payload).expect("a Value serialises")),
            });
        }
        self.shared.queued.notify_waiters();

        let answer = tokio::time::timeout(timeout, answer_rx).await;
        let mut state = self.shared.lock();
        let pending = state.pending.remove(&request_id);
        state.queue.retain(|q| q.request_id != request_id);
        match answer {
            Ok(Ok(invocation)) => invocation,
            // Timed out, or the server (and its sender) went away.
            _ => Invocation::TimedOut { fetched: pending.is_some_and(|p| p.fetched) },
        }
    }

    /// Waits for the first `GET …/next` (the end of the function's init);
    /// returns when it arrived, or `None` after `timeout`.
    pub async fn wait_first_poll(&self, timeout: Duration) -> Option<Instant> {
        let mut rx = self.first_poll.clone();
        match tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await {
            Ok(Ok(at)) => *at,
            _ => None,
        }
    }

    /// When the first `GET …/next` arrived, if it has.
    pub fn first_poll(&self) -> Option<Instant> {
        *self.first_poll.borrow()
    }

    /// Number of `GET …/next` requests so far.
    pub fn polls(&self) -> usize {
        self.shared.lock().polls
    }

    /// Everything posted to `/init/error`.
    pub fn init_errors(&self) -> Vec<InitError> {
        self.shared.lock().init_errors.clone()
    }

    /// Every request so far, in arrival order (long polls when they answered).
    pub fn requests(&self) -> Vec<RuntimeRequest> {
        self.shared.lock().requests.clone()
    }

    /// Requests Lambda would have refused: unknown paths, answers for unknown
    /// or already answered invocations, a wrong `Lambda-Runtime-Invocation-Id`.
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }
}

fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// A request Lambda refuses: status and `{errorType, errorMessage}` body.
struct Refusal {
    status: StatusCode,
    error_type: &'static str,
    message: &'static str,
}

impl Refusal {
    const INVALID_REQUEST_ID: Refusal =
        Refusal { status: StatusCode::BAD_REQUEST, error_type: "InvalidRequestID", message: "Invalid request ID" };
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refuse(self.status, self.error_type, self.message)
    }
}

/// Lambda's error body for requests it refuses.
fn refuse(status: StatusCode, error_type: &str, message: &str) -> Response {
    (status, axum::Json(json!({ "errorType": error_type, "errorMessage": message }))).into_response()
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({ "status": "OK" }))).into_response()
}

async fn next_invocation(State(shared): State<Arc<Shared>>, request_headers: HeaderMap) -> Response {
    {
        shared.lock().polls += 1;
        shared.first_poll.send_if_modified(|first| {
            if first.is_none() {
                *first = Some(Instant::now());
                true
            } else {
                false
            }
        });
    }
    let queued = loop {
        // Registered before looking at the queue, so an event queued in
        // between still wakes this poll.
        let notified = shared.queued.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut state = shared.lock();
            if let Some(queued) = state.queue.pop_front() {
                if let Some(pending) = state.pending.get_mut(&queued.request_id) {
                    pending.fetched = true;
                }
                break queued;
            }
        }
        notified.await;
    };
    shared.record("GET", "/2018-06-01/runtime/invocation/next", StatusCode::OK, &request_headers);
    let mut response = (StatusCode::OK, queued.payload).into_response();
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    out.insert(headers::REQUEST_ID, header_value(&queued.request_id));
    out.insert(headers::DEADLINE_MS, header_value(&queued.deadline_ms.to_string()));
    out.insert(headers::INVOKED_FUNCTION_ARN, header_value(&shared.function_arn));
    out.insert(headers::TRACE_ID, header_value(&queued.trace_id));
    out.insert(headers::INVOCATION_ID, header_value(&queued.invocation_id));
    response
}

/// Takes the answer channel of invocation `id`, checking that the function
/// may answer it now; `Err` says why not.
fn take_pending(
    shared: &Shared,
    id: &str,
    request_headers: &HeaderMap,
    what: &str,
) -> Result<oneshot::Sender<Invocation>, Refusal> {
    let mut state = shared.lock();
    let Some(pending) = state.pending.get_mut(id) else {
        drop(state);
        shared.violation(format!("{what} for unknown or expired request id {id}"));
        return Err(Refusal::INVALID_REQUEST_ID);
    };
    if !pending.fetched {
        drop(state);
        shared.violation(format!("{what} for request id {id}, which was never handed out"));
        return Err(Refusal::INVALID_REQUEST_ID);
    }
    let echoed = request_headers.get(headers::INVOCATION_ID).and_then(|v| v.to_str().ok());
    if echoed.is_some_and(|echoed| echoed != pending.invocation_id) {
        let expected = pending.invocation_id.clone();
        drop(state);
        shared.violation(format!("{what} for {id} echoed invocation id {echoed:?}, expected {expected}"));
        return Err(Refusal {
            status: StatusCode::BAD_REQUEST,
            error_type: "InvalidInvocationID",
            message: "Invalid invocation ID",
        });
    }
    match pending.answer.take() {
        Some(answer) => Ok(answer),
        None => {
            drop(state);
            shared.violation(format!("{what} for request id {id}, which was already answered"));
            Err(Refusal {
                status: StatusCode::FORBIDDEN,
                error_type: "InvalidStateTransition",
                message: "State transition from RuntimeResponseSent to InvocationResponse failed",
            })
        }
    }
}

async fn invocation_response(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    request_headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/2018-06-01/runtime/invocation/{id}/response");
    let response = match take_pending(&shared, &id, &request_headers, "response") {
        Ok(answer) => {
            let value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            let _ = answer.send(Invocation::Response(value));
            accepted()
        }
        Err(refusal) => refusal.into_response(),
    };
    shared.record("POST", &path, response.status(), &request_headers);
    response
}

/// A `Diagnostic` body, falling back to the error-type header and the raw body.
fn diagnostic(request_headers: &HeaderMap, body: &[u8]) -> (String, String, Option<String>) {
    let header_type =
        request_headers.get(headers::FUNCTION_ERROR_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name)).and_then(Value::as_str).map(str::to_owned);
    let error_type = field("errorType").or_else(|| header_type.clone()).unwrap_or_default();
    let error_message = field("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    (error_type, error_message, header_type)
}

async fn invocation_error(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    request_headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/2018-06-01/runtime/invocation/{id}/error");
    let response = match take_pending(&shared, &id, &request_headers, "error") {
        Ok(answer) => {
            let (error_type, error_message, _) = diagnostic(&request_headers, &body);
            let _ = answer.send(Invocation::Error { error_type, error_message });
            accepted()
        }
        Err(refusal) => refusal.into_response(),
    };
    shared.record("POST", &path, response.status(), &request_headers);
    response
}

async fn init_error(State(shared): State<Arc<Shared>>, request_headers: HeaderMap, body: Bytes) -> Response {
    let (error_type, error_message, header_error_type) = diagnostic(&request_headers, &body);
    shared.lock().init_errors.push(InitError { error_type, error_message, header_error_type });
    let response = accepted();
    shared.record("POST", "/2018-06-01/runtime/init/error", response.status(), &request_headers);
    response
}

async fn unknown(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, request_headers: HeaderMap) -> Response {
    shared.violation(format!("{method} {uri}: not a Runtime API endpoint"));
    let response = refuse(StatusCode::NOT_FOUND, "NotFound", "Not Found");
    shared.record(method.as_str(), uri.path(), response.status(), &request_headers);
    response
}

// ---------------------------------------------------------------------------
// Function binaries
// ---------------------------------------------------------------------------

/// headroom's deployed functions (package and binary names).
pub const FUNCTIONS: [&str; 3] = ["on-alarm", "on-prefix-failure", "capacity-check"];

/// When set, the function binaries are taken from this directory as they
/// are, and nothing is built (e.g. CI that ran `cargo build` already).
pub const BIN_DIR_ENV: &str = "HEADROOM_FUNCTION_BIN_DIR";

/// The Cargo profile directory this process runs from (`target/debug` for
/// `target/debug/deps/lambda_functions-…` or `target/debug/bench_cold_start`).
pub fn profile_dir() -> Result<PathBuf, TestbedError> {
    let exe = std::env::current_exe().map_err(|e| TestbedError::io("locating the running executable", e))?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| TestbedError::Invalid(format!("{} has no parent directory", exe.display())))?
        .to_path_buf();
    if matches!(dir.file_name().and_then(|n| n.to_str()), Some("deps" | "examples")) {
        dir.pop();
    }
    Ok(dir)
}

/// `cargo build` arguments that put binaries into `profile_dir`: the target
/// dir, and the profile and target triple the directory stands for.
fn cargo_target_args(profile_dir: &Path) -> Result<Vec<String>, TestbedError> {
    let invalid = || TestbedError::Invalid(format!("{} is not a Cargo profile directory", profile_dir.display()));
    let profile = profile_dir.file_name().and_then(|n| n.to_str()).ok_or_else(invalid)?;
    let parent = profile_dir.parent().ok_or_else(invalid)?;
    // Cargo marks the target dir root with CACHEDIR.TAG; one level further
    // up means a `--target <triple>` build (target/<triple>/<profile>).
    let (target_dir, triple) =
        if parent.join("CACHEDIR.TAG").exists() || !parent.parent().is_some_and(|p| p.join("CACHEDIR.TAG").exists()) {
            (parent.to_path_buf(), None)
        } else {
            let triple = parent.file_name().and_then(|n| n.to_str()).ok_or_else(invalid)?;
            (parent.parent().ok_or_else(invalid)?.to_path_buf(), Some(triple.to_owned()))
        };
    let mut args = vec!["--target-dir".to_owned(), target_dir.display().to_string()];
    match profile {
        "debug" => {}
        "release" => args.push("--release".into()),
        other => args.extend(["--profile".to_owned(), other.to_owned()]),
    }
    if let Some(triple) = triple {
        args.extend(["--target".to_owned(), triple]);
    }
    Ok(args)
}

/// Builds the three function binaries into this process's profile directory,
/// once per process; later calls return the first result.
///
/// Needed because `cargo test` builds a package's binaries only for that
/// package's own integration tests (`CARGO_BIN_EXE_<name>`); the functions
/// are other packages, so `cargo test --workspace` compiles only their unit
/// test harnesses, and `target/<profile>/on-alarm` would be missing or stale.
/// Cargo releases its build lock before it runs tests, so this nested build
/// does not deadlock; when nothing changed it takes about a second.
pub fn ensure_functions_built() -> Result<(), TestbedError> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let profile_dir = profile_dir().map_err(|e| e.to_string())?;
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
            let manifest = crate::moto::workspace_root().join("Cargo.toml");
            let mut command = Command::new(&cargo);
            command.arg("build").arg("--manifest-path").arg(&manifest).arg("--quiet");
            command.args(cargo_target_args(&profile_dir).map_err(|e| e.to_string())?);
            for function in FUNCTIONS {
                command.args(["-p", function, "--bin", function]);
            }
            // The tests reach the fake API server through KUBECONFIG.
            command.args(["--features", "headroom/kubeconfig"]);
            let started = Instant::now();
            let output = command
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running {} build: {e}", Path::new(&cargo).display()))?;
            tracing::info!(elapsed = ?started.elapsed(), "function binaries built");
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "`cargo build` of the function binaries failed ({}):\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                ))
            }
        })
        .clone()
        .map_err(TestbedError::Invalid)
}

/// The path of function binary `name` (one of [`FUNCTIONS`]): from
/// `$HEADROOM_FUNCTION_BIN_DIR` if set, else built into this process's
/// profile directory by [`ensure_functions_built`].
pub fn function_binary(name: &str) -> Result<PathBuf, TestbedError> {
    let path = match std::env::var_os(BIN_DIR_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join(name),
        None => {
            if !FUNCTIONS.contains(&name) {
                return Err(TestbedError::Invalid(format!("{name} is not one of headroom's functions {FUNCTIONS:?}")));
            }
            ensure_functions_built()?;
            profile_dir()?.join(name)
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(TestbedError::Invalid(format!("function binary {} does not exist", path.display())))
    }
}

/// A function binary and its environment, ready to start.
#[derive(Debug, Clone)]
pub struct FunctionCommand {
    binary: PathBuf,
    env: BTreeMap<String, String>,
}

impl FunctionCommand {
    /// `binary` with the variables Lambda sets for a `provided.al2023`
    /// function: `AWS_LAMBDA_RUNTIME_API` (this server), function name,
    /// memory, version, log group/stream, `AWS_LAMBDA_LOG_FORMAT=JSON`.
    /// Nothing else from this process's environment is passed on.
    pub fn new(binary: impl Into<PathBuf>, function_name: &str, api: &RuntimeApi) -> Self {
        let env = [
            ("AWS_LAMBDA_RUNTIME_API", api.addr()),
            ("AWS_LAMBDA_FUNCTION_NAME", function_name.to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{function_name}")),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/28/[$LATEST]00000000000000000000000000000000".to_owned()),
            ("LAMBDA_TASK_ROOT", "/var/task".to_owned()),
            ("TZ", ":UTC".to_owned()),
            ("LANG", "en_US.UTF-8".to_owned()),
        ];
        Self { binary: binary.into(), env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect() }
    }

    /// One of headroom's functions (see [`function_binary`]).
    pub fn function(name: &str, api: &RuntimeApi) -> Result<Self, TestbedError> {
        Ok(Self::new(function_binary(name)?, name, api))
    }

    /// Points the function at the harness: its AWS variables (through the
    /// fault proxy; the secret key replaced by one unique to this command, so
    /// a leak into the logs can be told from other text), `KUBECONFIG`,
    /// `CLUSTER_NAME=demo-cluster`, `NODECLASS_READY_TIMEOUT_SECONDS=5`,
    /// `RUST_LOG=info`.
    pub fn harness(mut self, harness: &Harness) -> Self {
        self.env.extend(harness.aws.env_vars(lab::REGION));
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let secret = format!(
            "hrSecret{:016x}{:016x}",
            headroom::rng::mix(nanos),
            headroom::rng::mix(nanos ^ u64::from(std::process::id()))
        );
        self.env.insert("AWS_SECRET_ACCESS_KEY".into(), secret);
        self.env.insert("KUBECONFIG".into(), harness.kubeconfig_path().display().to_string());
        self.env.insert("CLUSTER_NAME".into(), lab::CLUSTER.into());
        self.env.insert("NODECLASS_READY_TIMEOUT_SECONDS".into(), "5".into());
        self.env.insert("RUST_LOG".into(), "info".into());
        self
    }

    /// Sets (or overrides) one variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Removes one variable.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.remove(key);
        self
    }

    /// The environment the process will get.
    pub fn envs(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// Starts the process; stdout and stderr go to files in a temporary
    /// directory that lives as long as the returned value.
    pub fn spawn(self) -> Result<FunctionProcess, TestbedError> {
        let dir = tempfile::Builder::new()
            .prefix("headroom-function-")
            .tempdir()
            .map_err(|e| TestbedError::io("creating a log directory", e))?;
        let stdout_path = dir.path().join("stdout.log");
        let stderr_path = dir.path().join("stderr.log");
        let create = |path: &Path| {
            std::fs::File::create(path).map_err(|e| TestbedError::io(format!("creating {}", path.display()), e))
        };
        let (stdout, stderr) = (create(&stdout_path)?, create(&stderr_path)?);
        let spawned_at = Instant::now();
        let child = Command::new(&self.binary)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| TestbedError::io(format!("starting {}", self.binary.display()), e))?;
        Ok(FunctionProcess {
            binary: self.binary,
            env: self.env,
            child,
            spawned_at,
            stdout_path,
            stderr_path,
            _dir: dir,
        })
    }
}

/// A running function binary. Dropping it kills the process and reaps it.
pub struct FunctionProcess {
    binary: PathBuf,
    env: BTreeMap<String, String>,
    child: Child,
    spawned_at: Instant,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl FunctionProcess {
    /// `function` (one of [`FUNCTIONS`]) against `api` and `harness`
    /// ([`FunctionCommand::harness`]).
    pub fn start(function: &str, api: &RuntimeApi, harness: &Harness) -> Result<Self, TestbedError> {
        FunctionCommand::function(function, api)?.harness(harness).spawn()
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When the process was started.
    pub fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// A variable of the process's environment.
    pub fn env(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }

    /// Everything the process wrote to stdout so far (its JSON logs).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// stdout then stderr, for failure messages.
    pub fn output(&self) -> String {
        format!("--- stdout ---\n{}--- stderr ---\n{}", self.stdout(), self.stderr())
    }

    /// The exit status if the process has ended.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the function's first `GET …/next`, i.e. the end of its init.
    /// Fails early if the process exits first, with its output.
    pub async fn wait_ready(&mut self, api: &RuntimeApi, timeout: Duration) -> Result<Instant, TestbedError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = api.wait_first_poll(Duration::from_millis(10)).await {
                return Ok(at);
            }
            if let Some(status) = self.try_status() {
                return Err(TestbedError::Invalid(format!(
                    "{} exited ({status}) before asking for an event; init errors posted: {:?}\n{}",
                    self.binary.display(),
                    api.init_errors(),
                    self.output()
                )));
            }
            if Instant::now() >= deadline {
                return Err(TestbedError::Invalid(format!(
                    "{} did not ask for an event within {timeout:?}\n{}",
                    self.binary.display(),
                    self.output()
                )));
            }
        }
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the process (SIGKILL) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_uuids_and_differ() {
        let shared = Shared {
            function_arn: String::new(),
            ids: AtomicU64::new(1),
            state: Mutex::new(State_::default()),
            queued: Notify::new(),
            first_poll: watch::channel(None).0,
        };
        let (a, b) = (shared.new_id(), shared.new_id());
        assert_ne!(a, b);
        for id in [a, b] {
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
            assert!(parts[2].starts_with('4'), "{id}");
            assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{id}");
        }
    }

    #[test]
    fn target_args_follow_the_profile_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir_all(target.join("debug")).unwrap();
        std::fs::create_dir_all(target.join("x86_64-unknown-linux-musl/release")).unwrap();
        std::fs::write(target.join("CACHEDIR.TAG"), "").unwrap();
        let t = target.display().to_string();
        assert_eq!(cargo_target_args(&target.join("debug")).unwrap(), ["--target-dir", t.as_str()]);
        assert_eq!(
            cargo_target_args(&target.join("x86_64-unknown-linux-musl/release")).unwrap(),
            ["--target-dir", t.as_str(), "--release", "--target", "x86_64-unknown-linux-musl"]
        );
        assert_eq!(
            cargo_target_args(&target.join("bench")).unwrap(),
            ["--target-dir", t.as_str(), "--profile", "bench"]
        );
    }

    #[tokio::test]
    async fn an_event_is_handed_out_once_and_answered() {
        let api = RuntimeApi::start_for("unit").await.unwrap();
        let client = crate::net::plain_client();
        let base = format!("http://{}", api.addr());
        let invoke = api.invoke(json!({"hello": 1}), Duration::from_secs(5));
        let poll = async {
            let response =
                client.get(format!("{base}/2018-06-01/runtime/invocation/next").parse().unwrap()).await.unwrap();
            assert_eq!(response.status(), 200);
            let id = response.headers()[headers::REQUEST_ID].to_str().unwrap().to_owned();
            let invocation_id = response.headers()[headers::INVOCATION_ID].to_str().unwrap().to_owned();
            assert!(response.headers()[headers::DEADLINE_MS].to_str().unwrap().parse::<u64>().is_ok());
            assert!(response.headers()[headers::INVOKED_FUNCTION_ARN].to_str().unwrap().ends_with(":function:unit"));
            assert!(response.headers()[headers::TRACE_ID].to_str().unwrap().starts_with("Root=1-"));
            let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
            assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!({"hello": 1}));
            let post = |path: String, invocation_id: &str| {
                let request = http::Request::post(format!("{base}{path}"))
                    .header(headers::INVOCATION_ID, invocation_id)
                    .body(http_body_util::Full::new(Bytes::from_static(b"{\"ok\":true}")))
                    .unwrap();
                client.request(request)
            };
            let first = post(format!("/2018-06-01/runtime/invocation/{id}/response"), &invocation_id).await.unwrap();
            assert_eq!(first.status(), 202);
            // A second answer for the same invocation is refused (403 while
            // the invocation is still tracked, 400 once `invoke` returned).
            let second = post(format!("/2018-06-01/runtime/invocation/{id}/error"), &invocation_id).await.unwrap();
            assert!(matches!(second.status().as_u16(), 400 | 403), "{}", second.status());
        };
        let (invocation, ()) = tokio::join!(invoke, poll);
        assert_eq!(invocation, Invocation::Response(json!({"ok": true})));
        assert!(api.first_poll().is_some());
        assert_eq!(api.polls(), 1);
        assert_eq!(api.violations().len(), 1, "{:?}", api.violations());
    }

    #[tokio::test]
    async fn an_unfetched_event_times_out_and_is_withdrawn() {
        let api = RuntimeApi::start().await.unwrap();
        let invocation = api.invoke(json!({}), Duration::from_millis(50)).await;
        assert_eq!(invocation, Invocation::TimedOut { fetched: false });
        assert!(api.shared.lock().queue.is_empty());
        assert!(api.wait_first_poll(Duration::from_millis(20)).await.is_none());
    }
}
