//! What the proxy remembers: the call log with its timings, and the faults,
//! emulations and rules in force, behind one lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::header::HeaderValue;

use super::association::AssociationSim;
use super::eks;
use super::faults::{Fault, FaultRules, changes_state};
use crate::net::PlainClient;

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
    /// headroom telling what it did ([`CallRecord::is_reporting`]).
    pub reporting: bool,
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
pub(super) struct Inner {
    pub(super) next_seq: u64,
    pub(super) latency: Duration,
    pub(super) latency_model: LatencyModel,
    pub(super) faults: FaultRules,
    pub(super) association: AssociationSim,
    /// AWS behaviour the proxy adds; not cleared by `reset_faults`.
    pub(super) eks: eks::EksState,
    /// IPAM pools the proxy emulates; not cleared by `reset_faults`.
    pub(super) ipam: super::ipam::IpamSim,
    /// `Some(n)`: EC2 lists come in pages of n items.
    pub(super) page_size: Option<usize>,
    /// IAM actions `SimulatePrincipalPolicy` answers `implicitDeny` for.
    pub(super) simulation_denials: std::collections::BTreeSet<String>,
    /// These two survive `reset_faults`: they are rules of AWS, not faults.
    pub(super) enforce_vpc_cidr_rules: bool,
    pub(super) enforce_route_table_rules: bool,
    /// Calls held until this many of the action have arrived (action →
    /// (wanted, arrived)): concurrent runs meet there (see
    /// `FaultProxyHandle::hold_until_arrived`).
    pub(super) holds: HashMap<String, (usize, usize)>,
    pub(super) log: Vec<CallRecord>,
    /// Every SNS `Publish` moto accepted, in order.
    pub(super) published: Vec<super::sns::Published>,
    /// Arrival and completion time of each call in `log`, same order.
    pub(super) times: Vec<(u64, Instant, Option<Instant>)>,
}

impl Inner {
    pub(super) fn finish_time(&mut self, seq: u64) {
        if let Some(time) = self.times.iter_mut().rev().find(|t| t.0 == seq && t.2.is_some()) {
            time.2 = Some(Instant::now());
        }
    }

    pub(super) fn finish(&mut self, seq: u64, status: Option<u16>, forwarded: bool) {
        if let Some(record) = self.log.iter_mut().rev().find(|r| r.seq == seq) {
            record.status = status;
            record.forwarded = forwarded;
        }
        if let Some(time) = self.times.iter_mut().rev().find(|t| t.0 == seq) {
            time.2 = Some(Instant::now());
        }
    }
}

pub(super) struct Shared {
    pub(super) upstream: String,
    pub(super) upstream_authority: HeaderValue,
    pub(super) client: PlainClient,
    pub(super) inner: Mutex<Inner>,
    /// One lock per VPC (CIDR rules) or subnet (route table rules), held from
    /// the rule check of an enforced call until moto answered it, so two calls
    /// on one resource never check the same old state, while calls on
    /// different resources go on side by side, as in AWS.
    pub(super) rule_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Woken at every arrival of a held action.
    pub(super) arrivals: tokio::sync::Notify,
}

impl Shared {
    pub(super) fn lock_rule_locks(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.rule_locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind; keep going.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
