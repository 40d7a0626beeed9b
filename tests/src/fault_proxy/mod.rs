//! A fault-injecting HTTP proxy between the AWS SDK and moto.
//!
//! moto answers every call at once and never fails the way AWS does
//! (docs/design.md, "What the local emulator gets wrong"). Clients pointed at [`FaultProxy::endpoint`] go through
//! this proxy, which identifies each call's service and action, counts it,
//! and can add latency, throttle, answer 500, drop the connection before or
//! after moto acts, and make a new VPC CIDR association look slow or failed.
//!
//! moto speaks CloudWatch's awsQuery only, while aws-sdk-cloudwatch speaks
//! Smithy RPCv2-CBOR: the proxy translates CloudWatch's CBOR calls to
//! awsQuery for moto and moto's XML answers and errors back to CBOR
//! (`cloudwatch_cbor.rs`), names them by operation like any other call, and
//! answers the faults it injects into them in RPCv2-CBOR's shape, with the
//! awsQuery code in `x-amzn-query-error` as CloudWatch does.
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
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::TestbedError;
use crate::net::{PlainClient, ServerTask, bind_loopback, plain_client};
use association::AssociationSim;
use association::simulate_association;
use aws_rules::{Rule, check_route_table_rules, check_vpc_cidr_rules, enforced_rule};
use faults::{EveryRule, FaultRules, FractionRule, NthRule};
use headroom::rng::SplitMix64;
use identify::identify;
use protocol::Protocol;
use protocol::{answer_response, crashed_response, ec2_error_response, error_response, fault_response, plain_response};

mod association;
mod aws_rules;
mod cloudwatch_cbor;
mod eks;
mod emulated;
mod faults;
mod identify;
mod paging;
mod protocol;

pub use aws_rules::VPC_CIDR_QUOTA;
pub use faults::{Fault, Selector, changes_state, is_mutating};

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
    /// An EC2 call with `DryRun=true`: it asks, it changes nothing.
    pub dry_run: bool,
}

impl CallRecord {
    /// Whether the call changes what headroom manages ([`changes_state`]).
    pub fn changes_state(&self) -> bool {
        changes_state(&self.service, &self.action, self.dry_run)
    }

    /// Whether the call is headroom telling what it did: a CloudWatch
    /// `PutMetricData` or an SNS `Publish`, which every invocation makes.
    pub fn is_reporting(&self) -> bool {
        matches!((self.service.as_str(), self.action.as_str()), ("monitoring", "PutMetricData") | ("sns", "Publish"))
    }
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
    faults: FaultRules,
    association: AssociationSim,
    /// AWS behaviour the proxy adds; not cleared by `reset_faults`.
    eks: eks::EksState,
    /// `Some(n)`: EC2 lists come in pages of n items.
    page_size: Option<usize>,
    /// IAM actions `SimulatePrincipalPolicy` answers `implicitDeny` for.
    simulation_denials: std::collections::BTreeSet<String>,
    /// These two survive `reset_faults`: they are rules of AWS, not faults.
    enforce_vpc_cidr_rules: bool,
    enforce_route_table_rules: bool,
    log: Vec<CallRecord>,
    /// Arrival and completion time of each call in `log`, same order.
    times: Vec<(u64, Instant, Option<Instant>)>,
}

impl Inner {
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
        self.shared.lock().faults.throttle_every = (n > 0).then_some(EveryRule { n, offset, seen: 0 });
    }

    /// Throttles each call with probability `fraction`, drawn from a PRNG
    /// seeded with `seed`: the same seed and call order throttle the same calls.
    pub fn throttle_fraction(&self, fraction: f64, seed: u64) {
        let fraction = fraction.clamp(0.0, 1.0);
        self.shared.lock().faults.throttle_fraction =
            (fraction > 0.0).then_some(FractionRule { fraction, rng: SplitMix64::seeded(seed) });
    }

    /// Restricts `throttle_every` / `throttle_fraction` to matching calls
    /// (only those are counted); `None` means every call.
    pub fn throttle_scope(&self, scope: Option<Selector>) {
        self.shared.lock().faults.throttle_scope = scope;
    }

    /// Stops `throttle_every` and `throttle_fraction`.
    pub fn stop_throttling(&self) {
        let mut inner = self.shared.lock();
        inner.faults.throttle_every = None;
        inner.faults.throttle_fraction = None;
    }

    /// Injects `fault` into the n-th call (1-based, counted from now) that
    /// matches `selector` (an action name, `"*"`, or a [`Selector`]); once.
    pub fn fail_nth(&self, selector: impl Into<Selector>, n: usize, fault: Fault) {
        self.shared.lock().faults.nth_rules.push(NthRule {
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
        inner.faults.crashed = false;
        inner.faults.crash = Some(NthRule { selector: Selector::Mutating, n: k.max(1), seen: 0, fault, fired: false });
    }

    /// Whether a [`crash_at_nth_mutating`](Self::crash_at_nth_mutating) rule has fired.
    pub fn has_crashed(&self) -> bool {
        self.shared.lock().faults.crashed
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
        inner.faults.throttle_scope = None;
        inner.faults.throttle_every = None;
        inner.faults.throttle_fraction = None;
        inner.faults.nth_rules.clear();
        inner.faults.crash = None;
        inner.faults.crashed = false;
        inner.association = AssociationSim::default();
    }

    /// EC2 list calls (DescribeSubnets, DescribeRouteTables,
    /// DescribeNetworkInterfaces, DescribeVpcs, DescribeVpcPeeringConnections,
    /// GetSubnetCidrReservations) answer in pages of `size` items with a
    /// `nextToken`, whatever `MaxResults` asked; `None` answers in one page.
    pub fn set_page_size(&self, size: Option<usize>) {
        self.shared.lock().page_size = size.map(|n| n.max(1));
    }

    /// DescribeCluster of `cluster` reports this `computeConfig`, as EKS
    /// does for an Auto Mode cluster (moto reports none).
    pub fn set_compute_config(&self, cluster: &str, compute_config: serde_json::Value) {
        self.shared.lock().eks.compute_config.insert(cluster.to_owned(), compute_config);
    }

    /// Adds an EKS access entry (`EC2`, `STANDARD`, …) to `cluster`; the
    /// proxy serves access entries, which moto does not have.
    pub fn put_access_entry(&self, cluster: &str, principal_arn: &str, kind: &str) {
        let entry = eks::AccessEntry { principal_arn: principal_arn.to_owned(), kind: kind.to_owned() };
        self.shared
            .lock()
            .eks
            .access_entries
            .entry(cluster.to_owned())
            .or_default()
            .insert(principal_arn.to_owned(), entry);
    }

    /// `iam:SimulatePrincipalPolicy` answers `implicitDeny` for `action`
    /// (e.g. `ec2:AssociateVpcCidrBlock`); every other action is `allowed`.
    pub fn deny_in_simulation(&self, action: &str) {
        self.shared.lock().simulation_denials.insert(action.to_owned());
    }

    /// Forgets the EKS state the proxy keeps (for a moto reset), the page
    /// size and the simulated denials.
    pub fn reset_emulation(&self) {
        let mut inner = self.shared.lock();
        inner.eks = eks::EksState::default();
        inner.page_size = None;
        inner.simulation_denials.clear();
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

    /// The calls that read or change something, not the reporting
    /// ([`CallRecord::is_reporting`]) every invocation does at its end.
    pub fn working_calls(&self) -> Vec<CallRecord> {
        self.shared.lock().log.iter().filter(|r| !r.is_reporting()).cloned().collect()
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

    /// The calls that change what headroom manages, in arrival order: not
    /// reads, dry runs, metrics or notifications ([`changes_state`]).
    pub fn mutating_calls(&self) -> Vec<CallRecord> {
        self.shared.lock().log.iter().filter(|r| r.changes_state()).cloned().collect()
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
        let dry_run = id.protocol == Protocol::Ec2Query && std::str::from_utf8(&body).is_ok_and(emulated::is_dry_run);
        let fault = inner.faults.decide(&id.service, &id.action, dry_run);
        inner.log.push(CallRecord {
            seq,
            service: id.service.clone(),
            action: id.action.clone(),
            status: None,
            injected: fault,
            forwarded: false,
            dry_run,
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
            Some(Fault::Reject { status, code }) => {
                let message = format!("{code} injected by the testbed's fault proxy");
                let response = error_response(id.protocol, status, code, &message, seq);
                shared.lock().finish(seq, Some(status), false);
                return Ok(response);
            }
            Some(Fault::DropBeforeForward) => {
                shared.lock().finish(seq, None, false);
                return drop_connection(&kill).await;
            }
            Some(Fault::DropAfterForward) | None => {}
        }

        // Answers AWS gives that moto would get wrong: a dry run acts in
        // moto, and moto has no IAM policy simulation.
        if let Ok(form) = std::str::from_utf8(&body) {
            let answer = if id.protocol == Protocol::Ec2Query && emulated::is_dry_run(form) {
                Some(emulated::dry_run_response(seq))
            } else if id.action == "SimulatePrincipalPolicy" {
                let denied = shared.lock().simulation_denials.clone();
                Some(emulated::simulate_principal_policy(form, &denied, seq))
            } else {
                None
            };
            if let Some(response) = answer {
                shared.lock().finish(seq, Some(response.status().as_u16()), false);
                return Ok(response);
            }
        }
        // EKS calls moto does not know are answered here.
        if id.protocol == Protocol::RestJson {
            let served = eks::serve(&mut shared.lock().eks, &id.action, &parts.method, &parts.uri, &body, seq);
            if let Some(response) = served {
                shared.lock().finish(seq, Some(response.status().as_u16()), false);
                return Ok(response);
            }
        }
        let paged = (id.protocol == Protocol::Ec2Query)
            .then(|| shared.lock().page_size)
            .flatten()
            .and_then(|size| paging::item_set(&id.action).map(|set| (set, size)));
        let (body, page) = match (paged, std::str::from_utf8(&body)) {
            (Some(_), Ok(form)) => {
                let (page, form) = paging::strip_paging(form);
                (Bytes::from(form), page)
            }
            _ => (body, 0),
        };
        let uri = parts.uri.clone();
        // moto speaks CloudWatch's awsQuery only: RPCv2-CBOR calls go to it
        // translated, and their answers come back in CBOR.
        let (parts, body) = if id.protocol == Protocol::RpcV2Cbor {
            match cloudwatch_cbor::to_query_request(parts, &body) {
                Ok(translated) => translated,
                Err(message) => {
                    tracing::warn!(seq, action = %id.action, %message, "proxy could not translate an RPCv2-CBOR call");
                    let request_id = format!("00000000-0000-4000-8000-{seq:012x}");
                    let status = StatusCode::BAD_REQUEST;
                    let answer =
                        cloudwatch_cbor::error_answer(status, "SerializationException", None, &message, &request_id);
                    shared.lock().finish(seq, Some(400), false);
                    return Ok(answer_response(answer));
                }
            }
        } else {
            (parts, body)
        };

        let upstream_response = match forward(&shared, parts, body).await {
            Ok(response) => response,
            Err(message) => {
                tracing::warn!(seq, action = %id.action, %message, "proxy could not reach moto");
                shared.lock().finish(seq, Some(502), false);
                return Ok(plain_response(StatusCode::BAD_GATEWAY, &message));
            }
        };
        let (mut response_parts, response_body) = upstream_response;
        let mut response_body = simulate_association(&shared, &id.action, response_parts.status, response_body);
        if id.protocol == Protocol::RpcV2Cbor {
            let (status, headers, body) = cloudwatch_cbor::to_cbor_answer(
                &id.action,
                response_parts.status,
                &response_parts.headers,
                &response_body,
            );
            response_parts.status = status;
            response_parts.headers = headers;
            response_body = body;
        }
        if response_parts.status.is_success() {
            if let (Some((set, size)), Ok(xml)) = (paged, std::str::from_utf8(&response_body)) {
                response_body = Bytes::from(paging::page_of(xml, set, page, size));
            }
            if id.action == "DescribeCluster" {
                response_body = eks::decorate_describe_cluster(&shared.lock().eks, &uri, response_body);
            }
        }

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
