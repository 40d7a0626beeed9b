//! A fault-injecting HTTP proxy between the AWS SDK and moto.
//!
//! moto answers every call at once and never fails the way AWS does
//! (aws-facts.md §6). Clients pointed at [`FaultProxy::endpoint`] go through
//! this proxy, which identifies each call's service and action, counts it,
//! and can add latency, throttle, answer 500, drop the connection before or
//! after moto acts, and make a new VPC CIDR association look slow or failed.
//!
//! Faults are configured at run time through the cloneable
//! [`FaultProxyHandle`] (which [`FaultProxy`] derefs to); all methods are
//! thread-safe and take effect for the next request.
//!
//! It can also enforce AWS rules moto lacks: with
//! [`FaultProxyHandle::enforce_vpc_cidr_rules`], `AssociateVpcCidrBlock`
//! refuses a CIDR that overlaps one the VPC already has (`InvalidVpc.Range`)
//! and a sixth block (`CidrLimitExceeded`); with
//! [`FaultProxyHandle::enforce_route_table_rules`], `AssociateRouteTable`
//! refuses a subnet that already has an explicit association
//! (`Resource.AlreadyAssociated`). Checked calls are serialised, as AWS does.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::TestbedError;
use crate::net::{PlainClient, ServerTask, bind_loopback, plain_client};

/// What the proxy does to a call instead of (or on top of) forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Answer with the service's throttling error, without forwarding:
    /// EC2 `503 RequestLimitExceeded`, awsQuery (CloudWatch) `400 Throttling`,
    /// restJson (EKS) `429 ThrottlingException`.
    Throttle,
    /// Answer `500` with the service's internal-error shape, without forwarding.
    ServerError,
    /// Close the connection without a response; moto never sees the call.
    DropBeforeForward,
    /// Forward the call and let moto act, then close the connection without a
    /// response: the client cannot know that its call took effect.
    DropAfterForward,
    /// Stands in for the caller having died: answer `400
    /// TestbedClientCrashed` without forwarding. No SDK or headroom retry
    /// classifies it as transient, so code under test stops at once instead
    /// of backing off against an endpoint nobody is calling any more. Every
    /// call after [`FaultProxyHandle::crash_at_nth_mutating`] fires gets it.
    Crashed,
}

/// Which calls a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every call.
    Any,
    /// Calls whose action is exactly this name (e.g. `CreateSubnet`).
    Action(String),
    /// Calls signed for this service (`ec2`, `eks`, `monitoring`).
    Service(String),
    /// Calls for which [`is_mutating`] holds.
    Mutating,
}

impl Selector {
    fn matches(&self, service: &str, action: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Action(name) => name == action,
            Self::Service(name) => name == service,
            Self::Mutating => is_mutating(action),
        }
    }
}

impl From<&str> for Selector {
    /// `"*"` selects every call, anything else is an action name.
    fn from(value: &str) -> Self {
        if value == "*" { Self::Any } else { Self::Action(value.to_owned()) }
    }
}

impl From<String> for Selector {
    fn from(value: String) -> Self {
        Self::from(value.as_str())
    }
}

/// One call as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// Arrival order, 1-based, never reset.
    pub seq: u64,
    /// Service from the SigV4 credential scope (`ec2`, `eks`, `monitoring`),
    /// or `unknown`.
    pub service: String,
    /// Action name (`DescribeVpcs`), or `METHOD /path` when unknown.
    pub action: String,
    /// HTTP status the client received; `None` while in flight or when the
    /// connection was dropped.
    pub status: Option<u16>,
    /// The fault injected into this call, if any.
    pub injected: Option<Fault>,
    /// Whether moto received the call.
    pub forwarded: bool,
}

/// When a call arrived at the proxy and when it was answered, relative to
/// the first call of the log (see [`FaultProxyHandle::timeline`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTiming {
    pub seq: u64,
    pub action: String,
    pub arrived: Duration,
    /// `None` while in flight.
    pub finished: Option<Duration>,
}

/// IPv4 CIDR blocks per VPC, primary included: the AWS default quota, and
/// the limit moto enforces.
pub const VPC_CIDR_QUOTA: usize = 5;

const MUTATING_PREFIXES: &[&str] = &[
    "Accept",
    "Allocate",
    "Assign",
    "Associate",
    "Attach",
    "Authorize",
    "Cancel",
    "Copy",
    "Create",
    "Delete",
    "Deregister",
    "Detach",
    "Disable",
    "Disassociate",
    "Enable",
    "Import",
    "Modify",
    "Move",
    "Put",
    "Reboot",
    "Register",
    "Reject",
    "Release",
    "Replace",
    "Reset",
    "Revoke",
    "Run",
    "Set",
    "Start",
    "Stop",
    "Tag",
    "Terminate",
    "Unassign",
    "Untag",
    "Update",
];

/// Whether an action changes state in AWS, judged by its verb (the EC2 and
/// EKS naming convention), e.g. `CreateSubnet`, `AssociateVpcCidrBlock`,
/// `ModifySubnetAttribute`, `PutMetricData`. For unidentified calls
/// (`METHOD /path`) any method other than GET/HEAD/OPTIONS counts.
pub fn is_mutating(action: &str) -> bool {
    if let Some((method, rest)) = action.split_once(' ')
        && rest.starts_with('/')
    {
        return !matches!(method, "GET" | "HEAD" | "OPTIONS");
    }
    MUTATING_PREFIXES.iter().any(|prefix| {
        action.strip_prefix(prefix).is_some_and(|rest| rest.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
    })
}

/// SplitMix64: tiny, seeded, reproducible; no dependency for a coin flip.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug)]
struct EveryRule {
    n: u64,
    offset: u64,
    seen: u64,
}

#[derive(Debug)]
struct FractionRule {
    fraction: f64,
    rng: SplitMix64,
}

#[derive(Debug)]
struct NthRule {
    selector: Selector,
    n: usize,
    seen: usize,
    fault: Fault,
    fired: bool,
}

#[derive(Debug, Default)]
struct AssociationSim {
    /// `Some(n)`: each new IPv4 CIDR association shows `associating` in the
    /// next n DescribeVpcs responses that contain it.
    polls: Option<usize>,
    /// After those polls, show `failed` instead of the real state.
    fail: bool,
    /// association id → DescribeVpcs polls left showing `associating`.
    tracked: HashMap<String, usize>,
}

/// How the added latency combines with moto's own time to answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LatencyModel {
    /// The latency elapses before the call reaches moto, so a call takes the
    /// latency plus moto's time, and moto, which serves calls one at a time,
    /// adds its time for every call of a concurrent batch.
    #[default]
    Added,
    /// Every call is answered the latency after it arrived, moto's own time
    /// included, as AWS serves calls side by side; a call moto answers later
    /// than that is answered when moto answers.
    CallDuration,
}

#[derive(Debug, Default)]
struct Inner {
    next_seq: u64,
    latency: Duration,
    latency_model: LatencyModel,
    throttle_scope: Option<Selector>,
    throttle_every: Option<EveryRule>,
    throttle_fraction: Option<FractionRule>,
    nth_rules: Vec<NthRule>,
    /// `crash_at_nth_mutating`: the rule, and whether it has fired.
    crash: Option<NthRule>,
    crashed: bool,
    association: AssociationSim,
    /// These two survive `reset_faults`: they are rules of AWS, not faults.
    enforce_vpc_cidr_rules: bool,
    enforce_route_table_rules: bool,
    log: Vec<CallRecord>,
    /// Arrival and completion time of each call in `log`, same order.
    times: Vec<(u64, Instant, Option<Instant>)>,
}

impl Inner {
    /// Picks at most one fault for a call; one-shot rules win over throttling.
    fn decide(&mut self, service: &str, action: &str) -> Option<Fault> {
        if self.crashed {
            return Some(Fault::Crashed);
        }
        if let Some(crash) = &mut self.crash
            && crash.selector.matches(service, action)
        {
            crash.seen += 1;
            if crash.seen >= crash.n {
                crash.fired = true;
                self.crashed = true;
                return Some(crash.fault);
            }
        }
        let mut chosen = None;
        for rule in &mut self.nth_rules {
            if rule.fired || !rule.selector.matches(service, action) {
                continue;
            }
            rule.seen += 1;
            // A rule that came due while another fired this call fires on
            // its next matching call instead of being lost.
            if rule.seen >= rule.n && chosen.is_none() {
                rule.fired = true;
                chosen = Some(rule.fault);
            }
        }
        let in_scope = self.throttle_scope.as_ref().is_none_or(|scope| scope.matches(service, action));
        if in_scope {
            if let Some(every) = &mut self.throttle_every {
                every.seen += 1;
                if chosen.is_none() && every.seen > every.offset && (every.seen - every.offset) % every.n == 0 {
                    chosen = Some(Fault::Throttle);
                }
            }
            if let Some(fraction) = &mut self.throttle_fraction {
                // Draw for every in-scope call so the sequence only depends
                // on the seed and the call order.
                let draw = fraction.rng.next_f64();
                if chosen.is_none() && draw < fraction.fraction {
                    chosen = Some(Fault::Throttle);
                }
            }
        }
        chosen
    }

    /// Moves a call's answer time to now (the answer was held back).
    fn finish_time(&mut self, seq: u64) {
        if let Some(time) = self.times.iter_mut().rev().find(|t| t.0 == seq && t.2.is_some()) {
            time.2 = Some(Instant::now());
        }
    }

    fn finish(&mut self, seq: u64, status: Option<u16>, forwarded: bool) {
        if let Some(record) = self.log.iter_mut().rev().find(|r| r.seq == seq) {
            record.status = status;
            record.forwarded = forwarded;
        }
        if let Some(time) = self.times.iter_mut().rev().find(|t| t.0 == seq) {
            time.2 = Some(Instant::now());
        }
    }
}

struct Shared {
    upstream: String,
    upstream_authority: HeaderValue,
    client: PlainClient,
    inner: Mutex<Inner>,
    /// One lock per VPC (CIDR rules) or subnet (route table rules), held from
    /// the rule check of an enforced call until moto answered it, so two calls
    /// on one resource never check the same old state, while calls on
    /// different resources go on side by side, as in AWS.
    rule_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Shared {
    fn lock_rule_locks(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.rule_locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind; keep going.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Cloneable, thread-safe control of a [`FaultProxy`].
#[derive(Clone)]
pub struct FaultProxyHandle {
    shared: Arc<Shared>,
}

impl FaultProxyHandle {
    /// Delay added to every call before it is forwarded or faulted.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// How the latency of [`set_latency`](Self::set_latency) combines with
    /// moto's own time ([`LatencyModel::Added`] unless set).
    pub fn set_latency_model(&self, model: LatencyModel) {
        self.shared.lock().latency_model = model;
    }

    /// Throttles every n-th call (n-th, 2n-th, …), counted from now.
    /// `n == 0` turns it off.
    pub fn throttle_every(&self, n: u64) {
        self.throttle_every_from(n, 0);
    }

    /// Lets `offset` calls through, then throttles every n-th call after them
    /// (call `offset + n`, `offset + 2n`, …), counted from now.
    pub fn throttle_every_from(&self, n: u64, offset: u64) {
        self.shared.lock().throttle_every = (n > 0).then_some(EveryRule { n, offset, seen: 0 });
    }

    /// Throttles each call with probability `fraction`, drawn from a PRNG
    /// seeded with `seed`: the same seed and call order throttle the same calls.
    pub fn throttle_fraction(&self, fraction: f64, seed: u64) {
        let fraction = fraction.clamp(0.0, 1.0);
        self.shared.lock().throttle_fraction =
            (fraction > 0.0).then_some(FractionRule { fraction, rng: SplitMix64(seed) });
    }

    /// Restricts `throttle_every` / `throttle_fraction` to matching calls
    /// (only those are counted); `None` means every call.
    pub fn throttle_scope(&self, scope: Option<Selector>) {
        self.shared.lock().throttle_scope = scope;
    }

    /// Stops `throttle_every` and `throttle_fraction`.
    pub fn stop_throttling(&self) {
        let mut inner = self.shared.lock();
        inner.throttle_every = None;
        inner.throttle_fraction = None;
    }

    /// Injects `fault` into the n-th call (1-based, counted from now) that
    /// matches `selector` (an action name, `"*"`, or a [`Selector`]); once.
    pub fn fail_nth(&self, selector: impl Into<Selector>, n: usize, fault: Fault) {
        self.shared.lock().nth_rules.push(NthRule {
            selector: selector.into(),
            n: n.max(1),
            seen: 0,
            fault,
            fired: false,
        });
    }

    /// Injects `fault` into the k-th mutating call (1-based, counted from
    /// now, any service); once.
    pub fn fail_nth_mutating(&self, k: usize, fault: Fault) {
        self.fail_nth(Selector::Mutating, k, fault);
    }

    /// Simulates the caller crashing at its k-th mutating call (1-based,
    /// counted from now): that call gets `fault` (`ServerError`: AWS never
    /// acted; `DropAfterForward`: AWS acted, the answer was lost), and every
    /// later call, of any action, gets [`Fault::Crashed`] and never reaches
    /// moto, until [`reset_faults`](Self::reset_faults). So AWS ends up
    /// exactly as a process that died at that call would leave it, and the
    /// run stops there instead of retrying or reconciling its way on.
    pub fn crash_at_nth_mutating(&self, k: usize, fault: Fault) {
        let mut inner = self.shared.lock();
        inner.crashed = false;
        inner.crash = Some(NthRule { selector: Selector::Mutating, n: k.max(1), seen: 0, fault, fired: false });
    }

    /// Whether a [`crash_at_nth_mutating`](Self::crash_at_nth_mutating) rule has fired.
    pub fn has_crashed(&self) -> bool {
        self.shared.lock().crashed
    }

    /// Enforces, for `AssociateVpcCidrBlock` with an IPv4 `CidrBlock`, two
    /// rules real AWS applies and moto (5.2.5) does not fully apply:
    ///
    /// - a CIDR that overlaps (or equals) one the VPC has in any state but
    ///   `disassociated` is refused with `400 InvalidVpc.Range` ("The CIDR
    ///   '…' conflicts with another subnet"); moto accepts it and lists the
    ///   block twice;
    /// - a block beyond [`VPC_CIDR_QUOTA`] (primary included) is refused
    ///   with `400 CidrLimitExceeded`, in moto's (and AWS's) words.
    ///
    /// The check reads the VPC from moto (DescribeVpcs) and forwards the call
    /// under one lock, so concurrent associations are serialised as AWS
    /// serialises them: of two identical concurrent calls exactly one wins.
    /// Only calls that would be forwarded are checked (an injected fault
    /// wins). Not cleared by [`reset_faults`](Self::reset_faults).
    pub fn enforce_vpc_cidr_rules(&self, enabled: bool) {
        self.shared.lock().enforce_vpc_cidr_rules = enabled;
    }

    /// Enforces, for `AssociateRouteTable` with a `SubnetId`, that a subnet
    /// has at most one explicit route table association: a second one, to
    /// the same table or another, is refused with `400
    /// Resource.AlreadyAssociated`, as AWS refuses it (changing a subnet's
    /// table takes `ReplaceRouteTableAssociation`). moto (5.2.5) instead
    /// answers 200 with the existing association's id, whichever table it
    /// is with. Checked and forwarded under the same lock as the VPC CIDR
    /// rules. Not cleared by [`reset_faults`](Self::reset_faults).
    pub fn enforce_route_table_rules(&self, enabled: bool) {
        self.shared.lock().enforce_route_table_rules = enabled;
    }

    /// Each IPv4 CIDR associated from now on shows `associating` in its
    /// AssociateVpcCidrBlock response and in the next `polls` DescribeVpcs
    /// responses that contain it; after that the real state shows
    /// (moto's is `associated` at once).
    pub fn associating_polls(&self, polls: usize) {
        self.shared.lock().association.polls = Some(polls);
    }

    /// After the `associating` polls, show `failed` instead of the real state,
    /// for as long as the association exists in moto. Implies
    /// `associating_polls(0)` if that was not set.
    pub fn association_fails(&self) {
        let mut inner = self.shared.lock();
        inner.association.fail = true;
        inner.association.polls.get_or_insert(0);
    }

    /// Removes every fault: latency, throttling, one-shot rules, association
    /// simulation (including associations still being simulated).
    pub fn reset_faults(&self) {
        let mut inner = self.shared.lock();
        inner.latency = Duration::ZERO;
        inner.latency_model = LatencyModel::Added;
        inner.throttle_scope = None;
        inner.throttle_every = None;
        inner.throttle_fraction = None;
        inner.nth_rules.clear();
        inner.crash = None;
        inner.crashed = false;
        inner.association = AssociationSim::default();
    }

    /// Forgets the calls seen so far (the log, the counts and the timeline).
    pub fn reset_counters(&self) {
        let mut inner = self.shared.lock();
        inner.log.clear();
        inner.times.clear();
    }

    /// When each call of the log arrived and when its answer left (or its
    /// connection was dropped), relative to the first call of the log.
    pub fn timeline(&self) -> Vec<CallTiming> {
        let inner = self.shared.lock();
        let Some(origin) = inner.times.first().map(|t| t.1) else {
            return Vec::new();
        };
        inner
            .log
            .iter()
            .zip(&inner.times)
            .map(|(record, (_, arrived, finished))| CallTiming {
                seq: record.seq,
                action: record.action.clone(),
                arrived: arrived.duration_since(origin),
                finished: finished.map(|f| f.duration_since(origin)),
            })
            .collect()
    }

    /// Number of calls per action, faulted ones and retries included.
    pub fn calls(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for record in &self.shared.lock().log {
            *counts.entry(record.action.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Number of calls of one action, faulted ones and retries included.
    pub fn call_count(&self, action: &str) -> usize {
        self.shared.lock().log.iter().filter(|r| r.action == action).count()
    }

    /// Number of calls of one action that reached moto.
    pub fn forwarded_count(&self, action: &str) -> usize {
        self.shared.lock().log.iter().filter(|r| r.action == action && r.forwarded).count()
    }

    /// Every call in arrival order.
    pub fn call_log(&self) -> Vec<CallRecord> {
        self.shared.lock().log.clone()
    }

    /// The mutating calls in arrival order.
    pub fn mutating_calls(&self) -> Vec<CallRecord> {
        self.shared.lock().log.iter().filter(|r| is_mutating(&r.action)).cloned().collect()
    }

    /// The moto endpoint calls are forwarded to.
    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }
}

/// The proxy server. Dropping it stops the server and closes its connections.
pub struct FaultProxy {
    handle: FaultProxyHandle,
    endpoint: String,
    _server: ServerTask,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 forwarding to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Result<Self, TestbedError> {
        let upstream_uri: Uri =
            upstream.parse().map_err(|e| TestbedError::Invalid(format!("upstream {upstream:?}: {e}")))?;
        if upstream_uri.scheme_str() != Some("http") {
            return Err(TestbedError::Invalid(format!("upstream {upstream:?} must be a plain http:// URL")));
        }
        let authority = upstream_uri
            .authority()
            .ok_or_else(|| TestbedError::Invalid(format!("upstream {upstream:?} has no host")))?;
        let upstream_authority = HeaderValue::from_str(authority.as_str())
            .map_err(|e| TestbedError::Invalid(format!("upstream {upstream:?}: {e}")))?;

        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            upstream_authority,
            client: plain_client(),
            inner: Mutex::new(Inner::default()),
            rule_locks: Mutex::new(HashMap::new()),
        });
        let (listener, addr) = bind_loopback("fault proxy").await?;
        let endpoint = format!("http://{addr}");
        let conn_shared = Arc::clone(&shared);
        let server = ServerTask::spawn(listener, "fault-proxy", move |stream, peer| {
            serve_connection(Arc::clone(&conn_shared), stream, peer)
        });
        tracing::debug!(%endpoint, upstream, "fault proxy listening");
        Ok(Self { handle: FaultProxyHandle { shared }, endpoint, _server: server })
    }

    /// `http://127.0.0.1:PORT`: point AWS SDK clients here.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A handle that outlives borrows of the proxy (e.g. moved into a task).
    pub fn handle(&self) -> FaultProxyHandle {
        self.handle.clone()
    }
}

impl Deref for FaultProxy {
    type Target = FaultProxyHandle;

    fn deref(&self) -> &FaultProxyHandle {
        &self.handle
    }
}

/// Runs one client connection. A handler that wants the connection dropped
/// notifies `kill` and never completes; we then drop the hyper connection,
/// which closes the socket without a response, so the client sees EOF.
async fn serve_connection(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let kill = Arc::new(Notify::new());
    let service_kill = Arc::clone(&kill);
    let service = service_fn(move |request| handle(Arc::clone(&shared), Arc::clone(&service_kill), request));
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "proxy connection ended with an error");
            }
        }
        () = kill.notified() => {
            tracing::debug!(%peer, "proxy dropped the connection on purpose");
        }
    }
}

/// How a service encodes errors, which decides the shape of injected ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Ec2Query,
    AwsQuery,
    RestJson,
}

struct CallId {
    service: String,
    action: String,
    protocol: Protocol,
}

async fn handle(
    shared: Arc<Shared>,
    kill: Arc<Notify>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            tracing::debug!(%error, "proxy could not read a request body");
            return Ok(plain_response(StatusCode::BAD_REQUEST, "unreadable request body"));
        }
    };
    let id = identify(&parts.method, &parts.uri, &parts.headers, &body);

    let (seq, fault, latency, model) = {
        let mut inner = shared.lock();
        inner.next_seq += 1;
        let seq = inner.next_seq;
        let fault = inner.decide(&id.service, &id.action);
        inner.log.push(CallRecord {
            seq,
            service: id.service.clone(),
            action: id.action.clone(),
            status: None,
            injected: fault,
            forwarded: false,
        });
        inner.times.push((seq, Instant::now(), None));
        (seq, fault, inner.latency, inner.latency_model)
    };
    let arrived = Instant::now();
    // Under `CallDuration` the latency is served at the end instead.
    let latency_before = if model == LatencyModel::Added { latency } else { Duration::ZERO };
    let respond = async {
        tracing::debug!(seq, service = %id.service, action = %id.action, ?fault, "proxy call");

        // AWS's rules moto lacks, for calls that reach moto: checked while the
        // latency elapses (AWS validates within its own answer time) and held
        // until moto has acted, under the lock of the resource they change.
        let rule =
            matches!(fault, None | Some(Fault::DropAfterForward)).then(|| enforced_rule(&shared, &id, &body)).flatten();
        let _rule_guard = match rule {
            Some((rule, key)) => {
                let lock = Arc::clone(shared.lock_rule_locks().entry(key).or_default());
                let guard = lock.lock_owned().await;
                let check = async {
                    match rule {
                        Rule::VpcCidr => check_vpc_cidr_rules(&shared, &parts.headers, &body).await,
                        Rule::RouteTable => check_route_table_rules(&shared, &parts.headers, &body).await,
                    }
                };
                let (violation, ()) = futures::join!(check, sleep_unless_zero(latency_before));
                if let Some((code, message)) = violation {
                    tracing::debug!(seq, action = %id.action, code, %message, "refused by an AWS rule the proxy enforces");
                    let response = ec2_error_response(
                        StatusCode::BAD_REQUEST,
                        code,
                        &message,
                        &format!("00000000-0000-4000-8000-{seq:012x}"),
                    );
                    shared.lock().finish(seq, Some(400), false);
                    return Ok(response);
                }
                Some(guard)
            }
            None => {
                sleep_unless_zero(latency_before).await;
                None
            }
        };

        match fault {
            Some(Fault::Crashed) => {
                let response = crashed_response(id.protocol, seq);
                shared.lock().finish(seq, Some(response.status().as_u16()), false);
                return Ok(response);
            }
            Some(Fault::Throttle) | Some(Fault::ServerError) => {
                let response = fault_response(id.protocol, fault == Some(Fault::Throttle), seq);
                shared.lock().finish(seq, Some(response.status().as_u16()), false);
                return Ok(response);
            }
            Some(Fault::DropBeforeForward) => {
                shared.lock().finish(seq, None, false);
                return drop_connection(&kill).await;
            }
            Some(Fault::DropAfterForward) | None => {}
        }

        let upstream_response = match forward(&shared, parts, body).await {
            Ok(response) => response,
            Err(message) => {
                tracing::warn!(seq, action = %id.action, %message, "proxy could not reach moto");
                shared.lock().finish(seq, Some(502), false);
                return Ok(plain_response(StatusCode::BAD_GATEWAY, &message));
            }
        };
        let (mut response_parts, response_body) = upstream_response;
        let response_body = simulate_association(&shared, &id.action, response_parts.status, response_body);

        if fault == Some(Fault::DropAfterForward) {
            shared.lock().finish(seq, None, true);
            return drop_connection(&kill).await;
        }
        strip_hop_headers(&mut response_parts.headers);
        response_parts.headers.remove(header::CONTENT_LENGTH);
        shared.lock().finish(seq, Some(response_parts.status.as_u16()), true);
        Ok(Response::from_parts(response_parts, Full::new(response_body)))
    };
    let response = respond.await;
    if model == LatencyModel::CallDuration {
        tokio::time::sleep_until((arrived + latency).into()).await;
        shared.lock().finish_time(seq);
    }
    response
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    VpcCidr,
    RouteTable,
}

/// The rule an EC2 call is checked against, if enforced, and the resource
/// whose lock it takes.
fn enforced_rule(shared: &Shared, id: &CallId, body: &[u8]) -> Option<(Rule, String)> {
    if id.protocol != Protocol::Ec2Query {
        return None;
    }
    let form = std::str::from_utf8(body).ok()?;
    let inner = shared.lock();
    match id.action.as_str() {
        "AssociateVpcCidrBlock" if inner.enforce_vpc_cidr_rules => {
            Some((Rule::VpcCidr, format!("vpc:{}", form_value(form, "VpcId")?)))
        }
        "AssociateRouteTable" if inner.enforce_route_table_rules => {
            // Gateway associations (no SubnetId) pass unchecked.
            Some((Rule::RouteTable, format!("subnet:{}", form_value(form, "SubnetId")?)))
        }
        _ => None,
    }
}

async fn sleep_unless_zero(latency: Duration) {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

async fn drop_connection(kill: &Notify) -> Result<Response<Full<Bytes>>, Infallible> {
    // notify_one stores a permit, so the connection task sees it even if it
    // is not waiting yet; this future is dropped with the connection.
    kill.notify_one();
    std::future::pending().await
}

async fn forward(
    shared: &Shared,
    mut parts: http::request::Parts,
    body: Bytes,
) -> Result<(http::response::Parts, Bytes), String> {
    let path_and_query = parts.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    let uri: Uri = format!("{}{}", shared.upstream, path_and_query)
        .parse()
        .map_err(|e| format!("building the upstream URI: {e}"))?;
    parts.uri = uri;
    strip_hop_headers(&mut parts.headers);
    // The body is buffered: drop framing headers, hyper sets Content-Length.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::EXPECT);
    // The signature covers the original Host; moto does not verify it.
    parts.headers.insert(header::HOST, shared.upstream_authority.clone());
    let request = Request::from_parts(parts, Full::new(body));
    let response =
        shared.client.request(request).await.map_err(|e| format!("forwarding to {}: {e}", shared.upstream))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| format!("reading moto's response: {e}"))?.to_bytes();
    Ok((parts, body))
}

fn strip_hop_headers(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn plain_response(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// The error responses real AWS sends, in the shape each SDK protocol parses:
/// EC2's `<Response><Errors><Error>`, awsQuery's `<ErrorResponse><Error>`,
/// restJson's `x-amzn-ErrorType` header. The codes are in the SDK's list of
/// throttling errors, so standard retries back off and retry them.
fn fault_response(protocol: Protocol, throttle: bool, seq: u64) -> Response<Full<Bytes>> {
    let request_id = format!("00000000-0000-4000-8000-{seq:012x}");
    let (status, content_type, body, error_type) = match (protocol, throttle) {
        (Protocol::Ec2Query, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/xml;charset=UTF-8",
            ec2_error("RequestLimitExceeded", "Request limit exceeded.", &request_id),
            None,
        ),
        (Protocol::Ec2Query, false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/xml;charset=UTF-8",
            ec2_error("InternalError", "An internal error has occurred.", &request_id),
            None,
        ),
        (Protocol::AwsQuery, true) => (
            StatusCode::BAD_REQUEST,
            "text/xml",
            query_error("Sender", "Throttling", "Rate exceeded", &request_id),
            None,
        ),
        (Protocol::AwsQuery, false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/xml",
            query_error("Receiver", "InternalFailure", "Internal failure.", &request_id),
            None,
        ),
        (Protocol::RestJson, true) => (
            StatusCode::TOO_MANY_REQUESTS,
            "application/json",
            r#"{"message":"Rate exceeded"}"#.to_owned(),
            Some("ThrottlingException"),
        ),
        (Protocol::RestJson, false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            r#"{"message":"An internal error has occurred."}"#.to_owned(),
            Some("ServerException"),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    if let Some(error_type) = error_type {
        headers.insert("x-amzn-errortype", HeaderValue::from_static(error_type));
    }
    response
}

fn ec2_error(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
    )
}

fn ec2_error_response(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(ec2_error(code, &xml_escape(message), request_id))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml;charset=UTF-8"));
    response
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// [`Fault::Crashed`]: a client error in each protocol's shape, with a code
/// no SDK retry classifier knows.
fn crashed_response(protocol: Protocol, seq: u64) -> Response<Full<Bytes>> {
    const CODE: &str = "TestbedClientCrashed";
    const MESSAGE: &str = "the testbed simulates that the caller crashed before this call";
    let request_id = format!("00000000-0000-4000-8000-{seq:012x}");
    match protocol {
        Protocol::Ec2Query => ec2_error_response(StatusCode::BAD_REQUEST, CODE, MESSAGE, &request_id),
        Protocol::AwsQuery => {
            let mut response = Response::new(Full::new(Bytes::from(query_error("Sender", CODE, MESSAGE, &request_id))));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
            response
        }
        Protocol::RestJson => {
            let body = format!(r#"{{"message":"{MESSAGE}"}}"#);
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert("x-amzn-errortype", HeaderValue::from_static(CODE));
            response
        }
    }
}

/// The VPC's IPv4 CIDR associations, `(cidr, state)`, from a DescribeVpcs
/// answer (EC2 query XML) for one VPC. `None` if the answer lists no VPC.
fn parse_cidr_associations(xml: &str) -> Option<Vec<(String, String)>> {
    let set_open = "<cidrBlockAssociationSet>";
    let set_close = "</cidrBlockAssociationSet>";
    if !xml.contains("<vpcId>") {
        return None;
    }
    let Some(start) = xml.find(set_open).map(|i| i + set_open.len()) else {
        return Some(Vec::new());
    };
    let end = start + xml[start..].find(set_close)?;
    let set = &xml[start..end];
    Some(
        set.split("<item>")
            .skip(1)
            .filter_map(|item| {
                let cidr = element_text(item, "cidrBlock")?;
                let state = element_text(item, "state").unwrap_or_default();
                Some((cidr, state))
            })
            .collect(),
    )
}

fn parse_ipv4_net(text: &str) -> Option<(u32, u8)> {
    let (addr, len) = text.trim().split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(addr) & mask, len))
}

fn nets_overlap(a: (u32, u8), b: (u32, u8)) -> bool {
    let shorter = a.1.min(b.1);
    let mask = if shorter == 0 { 0 } else { u32::MAX << (32 - shorter) };
    a.0 & mask == b.0 & mask
}

/// AWS's answer to associating `requested` with `vpc_id`, given the VPC's
/// current IPv4 associations: `None` when AWS would accept it (as far as
/// overlap and quota go), else the error code and message.
fn vpc_cidr_rule_violation(
    vpc_id: &str,
    requested: &str,
    current: &[(String, String)],
    quota: usize,
) -> Option<(&'static str, String)> {
    let held: Vec<&(String, String)> = current.iter().filter(|(_, state)| state != "disassociated").collect();
    if let Some(wanted) = parse_ipv4_net(requested) {
        let conflict = held.iter().any(|(cidr, _)| parse_ipv4_net(cidr).is_some_and(|have| nets_overlap(have, wanted)));
        if conflict {
            return Some(("InvalidVpc.Range", format!("The CIDR '{requested}' conflicts with another subnet")));
        }
    }
    if held.len() >= quota {
        return Some((
            "CidrLimitExceeded",
            format!("This network '{vpc_id}' has met its maximum number of allowed CIDRs: {quota}"),
        ));
    }
    None
}

/// An EC2 query (form-encoded) straight to moto, signed like the call being
/// checked: moto takes the region (and account) from the credential scope
/// and does not check the signature. The body of a 2xx answer, else `None`.
async fn upstream_ec2_query(shared: &Shared, headers: &HeaderMap, form: String) -> Option<String> {
    let mut request = Request::post(format!("{}/", shared.upstream))
        .header(header::HOST, shared.upstream_authority.clone())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded; charset=utf-8")
        .body(Full::new(Bytes::from(form)))
        .ok()?;
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        request.headers_mut().insert(header::AUTHORIZATION, authorization.clone());
    }
    let response = match shared.client.request(request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(%error, "AWS rules: a read on moto failed; not checking");
            return None;
        }
    };
    if !response.status().is_success() {
        return None;
    }
    let body = response.into_body().collect().await.ok()?.to_bytes();
    String::from_utf8(body.to_vec()).ok()
}

/// Reads the VPC from moto and applies [`vpc_cidr_rule_violation`]. Calls
/// it can't judge (IPv6, IPAM pools, unknown VPC, moto unreachable) pass, so
/// moto gives its own answer.
async fn check_vpc_cidr_rules(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Option<(&'static str, String)> {
    let form = std::str::from_utf8(body).ok()?;
    let vpc_id = form_value(form, "VpcId")?;
    let requested = form_value(form, "CidrBlock")?;
    let describe = format!("Action=DescribeVpcs&Version=2016-11-15&VpcId.1={}", percent_encode(&vpc_id));
    let xml = upstream_ec2_query(shared, headers, describe).await?;
    let current = parse_cidr_associations(&xml)?;
    vpc_cidr_rule_violation(&vpc_id, &requested, &current, VPC_CIDR_QUOTA)
}

/// Whether a DescribeRouteTables answer shows an explicit association of `subnet_id`.
fn has_subnet_association(xml: &str, subnet_id: &str) -> bool {
    xml.contains(&format!("<subnetId>{subnet_id}</subnetId>"))
}

/// Reads the subnet's route table associations from moto; refuses a second
/// explicit association. Gateway associations (no `SubnetId`) pass.
async fn check_route_table_rules(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Option<(&'static str, String)> {
    let form = std::str::from_utf8(body).ok()?;
    let subnet_id = form_value(form, "SubnetId")?;
    let route_table_id = form_value(form, "RouteTableId").unwrap_or_default();
    let describe = format!(
        "Action=DescribeRouteTables&Version=2016-11-15&Filter.1.Name=association.subnet-id&Filter.1.Value.1={}",
        percent_encode(&subnet_id)
    );
    let xml = upstream_ec2_query(shared, headers, describe).await?;
    has_subnet_association(&xml, &subnet_id).then(|| {
        (
            "Resource.AlreadyAssociated",
            format!(
                "the specified association for route table {route_table_id} conflicts with an existing association"
            ),
        )
    })
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn query_error(kind: &str, code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\"><Error>\
         <Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>\
         <RequestId>{request_id}</RequestId></ErrorResponse>"
    )
}

/// Service from the SigV4 credential scope, action from the query protocol's
/// `Action=` or from the EKS REST route.
fn identify(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> CallId {
    let service = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(credential_scope_service)
        .map(str::to_owned);

    let gzipped =
        headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("gzip"));
    let query_action = uri
        .query()
        .and_then(|query| form_value(query, "Action"))
        .or_else(|| std::str::from_utf8(body).ok().and_then(|text| form_value(text, "Action")))
        .or_else(|| {
            // The SDK gzips large PutMetricData bodies (request compression),
            // so `Action=` is unreadable; in CloudWatch's model only
            // PutMetricData carries the compression trait.
            (gzipped && service.as_deref() == Some("monitoring")).then(|| "PutMetricData".to_owned())
        });
    if let Some(action) = query_action {
        let service = service.unwrap_or_else(|| {
            // Unsigned calls: guess from the API version.
            let version = uri
                .query()
                .and_then(|q| form_value(q, "Version"))
                .or_else(|| std::str::from_utf8(body).ok().and_then(|t| form_value(t, "Version")));
            match version.as_deref() {
                Some("2016-11-15") => "ec2".to_owned(),
                Some("2010-08-01") => "monitoring".to_owned(),
                _ => "unknown".to_owned(),
            }
        });
        let protocol = if service == "ec2" { Protocol::Ec2Query } else { Protocol::AwsQuery };
        return CallId { service, action, protocol };
    }

    let path = uri.path();
    let eks = service.as_deref() == Some("eks") || path.starts_with("/clusters");
    let action = eks
        .then(|| eks_action(method, path))
        .flatten()
        .or_else(|| {
            headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .and_then(|target| target.rsplit('.').next())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{method} {path}"));
    CallId {
        service: service.unwrap_or_else(|| if eks { "eks".into() } else { "unknown".into() }),
        action,
        protocol: Protocol::RestJson,
    }
}

/// `AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/ec2/aws4_request, …` → `ec2`.
fn credential_scope_service(authorization: &str) -> Option<&str> {
    let credential = authorization.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    let mut parts = scope.split('/');
    // AKID / date / region / service / aws4_request
    parts.nth(3)
}

/// The value of `key` in an `a=b&c=d` string (percent-decoded).
fn form_value(form: &str, key: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Maps the EKS REST routes headroom and its tests use to action names.
fn eks_action(method: &Method, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let name = match (method.as_str(), segments.as_slice()) {
        ("GET", ["clusters"]) => "ListClusters",
        ("POST", ["clusters"]) => "CreateCluster",
        ("GET", ["clusters", _]) => "DescribeCluster",
        ("DELETE", ["clusters", _]) => "DeleteCluster",
        ("POST", ["clusters", _, "update-config"]) => "UpdateClusterConfig",
        ("GET", ["clusters", _, "updates"]) => "ListUpdates",
        ("GET", ["clusters", _, "updates", _]) => "DescribeUpdate",
        ("GET", ["clusters", _, "node-groups"]) => "ListNodegroups",
        ("POST", ["clusters", _, "node-groups"]) => "CreateNodegroup",
        ("GET", ["clusters", _, "node-groups", _]) => "DescribeNodegroup",
        ("DELETE", ["clusters", _, "node-groups", _]) => "DeleteNodegroup",
        ("GET", ["clusters", _, "access-entries"]) => "ListAccessEntries",
        ("POST", ["clusters", _, "access-entries"]) => "CreateAccessEntry",
        ("GET", ["clusters", _, "access-entries", _]) => "DescribeAccessEntry",
        ("DELETE", ["clusters", _, "access-entries", _]) => "DeleteAccessEntry",
        ("GET", ["clusters", _, "addons"]) => "ListAddons",
        ("GET", ["clusters", _, "addons", _]) => "DescribeAddon",
        ("GET", ["tags", ..]) => "ListTagsForResource",
        ("POST", ["tags", ..]) => "TagResource",
        ("DELETE", ["tags", ..]) => "UntagResource",
        _ => return None,
    };
    Some(name.to_owned())
}

/// Makes moto's instant CIDR association look asynchronous (or failed).
fn simulate_association(shared: &Shared, action: &str, status: StatusCode, body: Bytes) -> Bytes {
    if !status.is_success() || !matches!(action, "AssociateVpcCidrBlock" | "DescribeVpcs") {
        return body;
    }
    let mut inner = shared.lock();
    let sim = &mut inner.association;
    let Some(polls) = sim.polls else {
        return body;
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return body;
    };
    let mut text = text.to_owned();
    if action == "AssociateVpcCidrBlock" {
        // IPv4 only: an IPv6 association answers in <ipv6CidrBlockAssociation>.
        if !text.contains("<cidrBlockAssociation>") {
            return body;
        }
        let Some(id) = element_text(&text, "associationId") else {
            return body;
        };
        let initial = if polls == 0 && sim.fail { "failed" } else { "associating" };
        if let Some(rewritten) = rewrite_association_state(&text, &id, initial) {
            text = rewritten;
        }
        tracing::debug!(association = %id, polls, fail = sim.fail, "simulating slow CIDR association");
        sim.tracked.insert(id, polls);
        return Bytes::from(text);
    }
    let fail = sim.fail;
    let mut done = Vec::new();
    for (id, remaining) in sim.tracked.iter_mut() {
        if !text.contains(id.as_str()) {
            continue;
        }
        let state = if *remaining > 0 {
            *remaining -= 1;
            "associating"
        } else if fail {
            "failed"
        } else {
            done.push(id.clone());
            continue;
        };
        if let Some(rewritten) = rewrite_association_state(&text, id, state) {
            text = rewritten;
        }
    }
    for id in done {
        sim.tracked.remove(&id);
    }
    Bytes::from(text)
}

fn element_text(xml: &str, element: &str) -> Option<String> {
    let open = format!("<{element}>");
    let close = format!("</{element}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml[start..end].to_owned())
}

/// Sets `<state>` inside the element that holds `<associationId>{id}`
/// (an `<item>` of `cidrBlockAssociationSet`, or `<cidrBlockAssociation>`).
fn rewrite_association_state(xml: &str, id: &str, state: &str) -> Option<String> {
    let marker = format!("<associationId>{id}</associationId>");
    let at = xml.find(&marker)?;
    let start = ["<item>", "<cidrBlockAssociation>"].iter().filter_map(|open| xml[..at].rfind(open)).max()?;
    let end = at + ["</item>", "</cidrBlockAssociation>"].iter().filter_map(|close| xml[at..].find(close)).min()?;
    let region = &xml[start..end];
    let state_open = region.find("<state>")? + "<state>".len();
    let state_close = state_open + region[state_open..].find("</state>")?;
    let mut out = String::with_capacity(xml.len() + 8);
    out.push_str(&xml[..start + state_open]);
    out.push_str(state);
    out.push_str(&xml[start + state_close..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutating_actions() {
        for action in [
            "CreateSubnet",
            "AssociateVpcCidrBlock",
            "AssociateRouteTable",
            "ModifySubnetAttribute",
            "CreateTags",
            "DeleteSubnet",
            "ReplaceRouteTableAssociation",
            "PutMetricData",
            "RunInstances",
            "UpdateClusterConfig",
            "POST /whatever",
        ] {
            assert!(is_mutating(action), "{action} should be mutating");
        }
        for action in [
            "DescribeVpcs",
            "DescribeSubnets",
            "GetMetricData",
            "ListClusters",
            "DescribeCluster",
            "Create",
            "Putative",
            "GET /clusters/x",
        ] {
            assert!(!is_mutating(action), "{action} should not be mutating");
        }
    }

    #[test]
    fn credential_scope() {
        let auth = "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/ec2/aws4_request, \
                    SignedHeaders=host;x-amz-date, Signature=abc";
        assert_eq!(credential_scope_service(auth), Some("ec2"));
        assert_eq!(credential_scope_service("Bearer x"), None);
    }

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(form_value("Action=DescribeVpcs&Version=2016-11-15", "Action").as_deref(), Some("DescribeVpcs"));
        assert_eq!(form_value("CidrBlock=100.64.0.0%2F16&Action=X", "CidrBlock").as_deref(), Some("100.64.0.0/16"));
        assert_eq!(form_value("a=%", "a").as_deref(), Some("%"));
        assert_eq!(form_value("a=%2", "a").as_deref(), Some("%2"));
        assert_eq!(form_value("Version=1", "Action"), None);
    }

    #[test]
    fn eks_routes() {
        assert_eq!(eks_action(&Method::GET, "/clusters/lab").as_deref(), Some("DescribeCluster"));
        assert_eq!(eks_action(&Method::GET, "/clusters").as_deref(), Some("ListClusters"));
        assert_eq!(eks_action(&Method::PATCH, "/clusters/lab"), None);
    }

    #[test]
    fn association_state_is_rewritten_only_for_the_given_id() {
        let xml = "<vpcSet><item><vpcId>vpc-1</vpcId><cidrBlockAssociationSet>\
            <item><associationId>a-1</associationId><cidrBlock>10.0.0.0/16</cidrBlock>\
            <cidrBlockState><state>associated</state></cidrBlockState></item>\
            <item><associationId>a-2</associationId><cidrBlock>100.64.0.0/16</cidrBlock>\
            <cidrBlockState><state>associated</state></cidrBlockState></item>\
            </cidrBlockAssociationSet><state>available</state></item></vpcSet>";
        let out = rewrite_association_state(xml, "a-2", "associating").expect("rewritten");
        assert!(out.contains(
            "<associationId>a-1</associationId><cidrBlock>10.0.0.0/16</cidrBlock>\
             <cidrBlockState><state>associated</state>"
        ));
        assert!(out.contains(
            "<associationId>a-2</associationId><cidrBlock>100.64.0.0/16</cidrBlock>\
             <cidrBlockState><state>associating</state>"
        ));
        assert!(out.contains("<state>available</state>"));
        assert_eq!(rewrite_association_state(xml, "a-3", "failed"), None);
    }

    #[test]
    fn seeded_fraction_is_reproducible() {
        let draws = |seed| {
            let mut rng = SplitMix64(seed);
            (0..64).map(|_| rng.next_f64() < 0.3).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let hits = draws(7).iter().filter(|hit| **hit).count();
        assert!((5..=35).contains(&hits), "{hits} of 64 at p=0.3");
    }

    #[test]
    fn throttle_every_counts_from_offset() {
        let mut inner = Inner { throttle_every: Some(EveryRule { n: 2, offset: 1, seen: 0 }), ..Inner::default() };
        let throttled: Vec<bool> = (0..7).map(|_| inner.decide("ec2", "DescribeVpcs").is_some()).collect();
        assert_eq!(throttled, [false, false, true, false, true, false, true]);
    }

    #[test]
    fn nth_rules_fire_once_and_do_not_get_lost() {
        let mut inner = Inner::default();
        inner.nth_rules.push(NthRule {
            selector: Selector::Mutating,
            n: 1,
            seen: 0,
            fault: Fault::ServerError,
            fired: false,
        });
        inner.nth_rules.push(NthRule {
            selector: "CreateSubnet".into(),
            n: 1,
            seen: 0,
            fault: Fault::DropAfterForward,
            fired: false,
        });
        assert_eq!(inner.decide("ec2", "DescribeVpcs"), None);
        assert_eq!(inner.decide("ec2", "CreateSubnet"), Some(Fault::ServerError));
        assert_eq!(inner.decide("ec2", "CreateSubnet"), Some(Fault::DropAfterForward));
        assert_eq!(inner.decide("ec2", "CreateSubnet"), None);
    }

    const DESCRIBE_VPCS: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
        <DescribeVpcsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
        <requestId>r-1</requestId><vpcSet><item><vpcId>vpc-1</vpcId><state>available</state>\
        <cidrBlock>192.168.0.0/16</cidrBlock><cidrBlockAssociationSet>\
        <item><associationId>a-1</associationId><cidrBlock>192.168.0.0/16</cidrBlock>\
        <cidrBlockState><state>associated</state></cidrBlockState></item>\
        <item><associationId>a-2</associationId><cidrBlock>100.64.0.0/16</cidrBlock>\
        <cidrBlockState><state>associating</state></cidrBlockState></item>\
        <item><associationId>a-3</associationId><cidrBlock>100.65.0.0/16</cidrBlock>\
        <cidrBlockState><state>disassociated</state></cidrBlockState></item>\
        </cidrBlockAssociationSet><ipv6CidrBlockAssociationSet><item>\
        <ipv6CidrBlock>2600:1f14::/56</ipv6CidrBlock><ipv6CidrBlockState><state>associated</state>\
        </ipv6CidrBlockState></item></ipv6CidrBlockAssociationSet></item></vpcSet></DescribeVpcsResponse>";

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(c, s)| (c.to_string(), s.to_string())).collect()
    }

    #[test]
    fn cidr_associations_are_parsed_from_describe_vpcs() {
        assert_eq!(
            parse_cidr_associations(DESCRIBE_VPCS),
            Some(pairs(&[
                ("192.168.0.0/16", "associated"),
                ("100.64.0.0/16", "associating"),
                ("100.65.0.0/16", "disassociated"),
            ]))
        );
        let empty = "<DescribeVpcsResponse><vpcSet/></DescribeVpcsResponse>";
        assert_eq!(parse_cidr_associations(empty), None, "no VPC: not judged");
    }

    #[test]
    fn overlapping_or_identical_cidrs_are_refused_in_any_state_but_disassociated() {
        let current = parse_cidr_associations(DESCRIBE_VPCS).unwrap();
        let refused = |cidr: &str| vpc_cidr_rule_violation("vpc-1", cidr, &current, VPC_CIDR_QUOTA);
        for cidr in ["100.64.0.0/16", "100.64.128.0/17", "100.64.0.0/15", "192.168.7.0/24", "192.0.0.0/8"] {
            let (code, message) = refused(cidr).unwrap_or_else(|| panic!("{cidr} overlaps"));
            assert_eq!(code, "InvalidVpc.Range");
            assert_eq!(message, format!("The CIDR '{cidr}' conflicts with another subnet"));
        }
        // Disassociated space is free again; neighbours never overlapped.
        for cidr in ["100.65.0.0/16", "100.66.0.0/16", "100.63.255.240/28", "192.169.0.0/16"] {
            assert_eq!(refused(cidr), None, "{cidr}");
        }
    }

    #[test]
    fn the_sixth_block_exceeds_the_quota_and_disassociated_ones_do_not_count() {
        let mut current = pairs(&[
            ("192.168.0.0/16", "associated"),
            ("100.64.0.0/16", "associated"),
            ("100.65.0.0/16", "associated"),
            ("100.66.0.0/16", "failed"),
            ("100.67.0.0/16", "disassociated"),
        ]);
        assert_eq!(vpc_cidr_rule_violation("vpc-9", "100.68.0.0/16", &current, 5), None);
        current.push(("100.69.0.0/16".into(), "associating".into()));
        assert_eq!(
            vpc_cidr_rule_violation("vpc-9", "100.68.0.0/16", &current, 5),
            Some((
                "CidrLimitExceeded",
                "This network 'vpc-9' has met its maximum number of allowed CIDRs: 5".to_string()
            ))
        );
        // An overlap is named as such even at the quota.
        assert_eq!(vpc_cidr_rule_violation("vpc-9", "100.64.0.0/16", &current, 5).unwrap().0, "InvalidVpc.Range");
    }

    #[test]
    fn cidr_arithmetic() {
        assert_eq!(parse_ipv4_net("10.1.2.3/16"), Some((u32::from(std::net::Ipv4Addr::new(10, 1, 0, 0)), 16)));
        assert_eq!(parse_ipv4_net("0.0.0.0/0"), Some((0, 0)));
        assert_eq!(parse_ipv4_net("10.0.0.0/33"), None);
        assert_eq!(parse_ipv4_net("2600::/56"), None);
        let n = |s| parse_ipv4_net(s).unwrap();
        assert!(nets_overlap(n("10.0.0.0/8"), n("10.200.0.0/16")));
        assert!(nets_overlap(n("0.0.0.0/0"), n("10.200.0.0/16")));
        assert!(!nets_overlap(n("10.0.0.0/16"), n("10.1.0.0/16")));
        assert_eq!(percent_encode("vpc-0a/b c"), "vpc-0a%2Fb%20c");
    }

    #[test]
    fn a_crash_fires_at_the_kth_mutating_call_and_stops_everything_after() {
        let mut inner = Inner {
            crash: Some(NthRule {
                selector: Selector::Mutating,
                n: 2,
                seen: 0,
                fault: Fault::DropAfterForward,
                fired: false,
            }),
            ..Inner::default()
        };
        assert_eq!(inner.decide("ec2", "DescribeVpcs"), None);
        assert_eq!(inner.decide("ec2", "CreateSubnet"), None);
        assert_eq!(inner.decide("ec2", "DescribeVpcs"), None);
        assert_eq!(inner.decide("ec2", "CreateSubnet"), Some(Fault::DropAfterForward));
        assert_eq!(inner.decide("ec2", "DescribeVpcs"), Some(Fault::Crashed));
        assert_eq!(inner.decide("eks", "DescribeCluster"), Some(Fault::Crashed));
        assert_eq!(inner.decide("ec2", "AssociateRouteTable"), Some(Fault::Crashed));
    }

    #[test]
    fn subnet_associations_are_found_by_exact_id() {
        let xml = "<routeTableSet><item><routeTableId>rtb-1</routeTableId><associationSet><item>\
            <routeTableAssociationId>rtbassoc-1</routeTableAssociationId><routeTableId>rtb-1</routeTableId>\
            <subnetId>subnet-12</subnetId><main>false</main></item></associationSet></item></routeTableSet>";
        assert!(has_subnet_association(xml, "subnet-12"));
        assert!(!has_subnet_association(xml, "subnet-1"));
        assert!(!has_subnet_association("<routeTableSet/>", "subnet-12"));
    }
}
