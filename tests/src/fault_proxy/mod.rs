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
//!
//! By concern: this file serves connections and runs each call through
//! identify → fault → rule → emulate → forward; `state.rs` holds the call
//! log and what is in force, `control.rs` the handle that configures and
//! reads it; `identify.rs` and `protocol.rs` know each AWS protocol's
//! requests and error shapes (`cloudwatch_cbor.rs` translates RPCv2-CBOR);
//! `faults.rs` decides which call gets which fault; `aws_rules.rs`,
//! `association.rs`, `paging.rs`, `eks.rs`, `emulated.rs` and `sns.rs` add
//! the AWS behaviour moto lacks.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
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
use crate::net::{ServerTask, bind_loopback, plain_client};
use association::simulate_association;
use aws_rules::{Rule, check_route_table_rules, check_vpc_cidr_rules, enforced_rule};
use identify::identify;
use protocol::Protocol;
use protocol::{answer_response, crashed_response, ec2_error_response, error_response, fault_response, plain_response};

mod association;
mod aws_rules;
mod cloudwatch_cbor;
mod control;
mod eks;
mod emulated;
mod faults;
mod identify;
mod ipam;
mod paging;
mod protocol;
mod sns;
mod state;

pub use aws_rules::VPC_CIDR_QUOTA;
pub use control::FaultProxyHandle;
pub use faults::{Fault, Selector, changes_state, is_mutating};
pub use ipam::IpamPoolSpec;
pub use sns::Published;
pub use state::{CallRecord, CallTiming, LatencyModel};
use state::{Inner, Shared};

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
            arrivals: Notify::new(),
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
    if !dry_run_call(&id, &body) {
        hold_until_gathered(&shared, &id.action).await;
    }
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
        // moto, moto has no IAM policy simulation, and it names its caller
        // in a shape AWS never uses.
        if let Ok(form) = std::str::from_utf8(&body) {
            let answer = if id.protocol == Protocol::Ec2Query && emulated::is_dry_run(form) {
                Some(emulated::dry_run_response(seq))
            } else if id.action == "SimulatePrincipalPolicy" {
                let denied = shared.lock().simulation_denials.clone();
                Some(emulated::simulate_principal_policy(form, &denied, seq))
            } else if id.action == "GetCallerIdentity" {
                Some(emulated::get_caller_identity(seq))
            } else if id.service == "sns" && id.action == "Publish" {
                sns::violation(&sns::parse_publish(form))
                    .map(|message| error_response(id.protocol, 400, "InvalidParameter", &message, seq))
            } else if id.protocol == Protocol::Ec2Query {
                shared.lock().ipam.serve(&id.action, form, seq)
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
        // An allocation from an emulated IPAM pool goes to moto as the
        // literal block the pool chose.
        let allocation = match std::str::from_utf8(&body) {
            Ok(form) if id.protocol == Protocol::Ec2Query => shared.lock().ipam.allocate(&id.action, form, seq),
            _ => None,
        };
        let (body, allocation) = match allocation {
            None => (body, None),
            Some(ipam::Allocation::Literal { form, pending }) => (Bytes::from(form), Some(pending)),
            Some(ipam::Allocation::Refused(refused)) => {
                shared.lock().finish(seq, Some(refused.status().as_u16()), false);
                return Ok(*refused);
            }
        };
        let released = (id.action == "DisassociateVpcCidrBlock").then(|| String::from_utf8_lossy(&body).into_owned());
        let published = (id.service == "sns" && id.action == "Publish")
            .then(|| sns::parse_publish(&String::from_utf8_lossy(&body)));
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
        if response_parts.status.is_success() {
            let mut inner = shared.lock();
            if let Some(pending) = allocation {
                inner.ipam.record(pending, &String::from_utf8_lossy(&response_body));
            }
            if let Some(form) = &released {
                inner.ipam.release(form);
            }
            if let Some(published) = published {
                inner.published.push(published);
            }
        }
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

fn dry_run_call(id: &identify::CallId, body: &[u8]) -> bool {
    id.protocol == Protocol::Ec2Query && std::str::from_utf8(body).is_ok_and(emulated::is_dry_run)
}

/// Holds a call of an action [`FaultProxyHandle::hold_until_arrived`] names
/// until the number asked for have arrived, so that concurrent runs reach
/// moto together. A minute at most: a run that never comes releases the rest.
async fn hold_until_gathered(shared: &Shared, action: &str) {
    let gathered = |shared: &Shared| shared.lock().holds.get(action).is_none_or(|(wanted, arrived)| arrived >= wanted);
    {
        let mut inner = shared.lock();
        let Some((_, arrived)) = inner.holds.get_mut(action) else { return };
        *arrived += 1;
    }
    shared.arrivals.notify_waiters();
    let wait = async {
        loop {
            let notified = shared.arrivals.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if gathered(shared) {
                return;
            }
            notified.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), wait).await.is_err() {
        tracing::warn!(action, "held call released: the others never came");
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
