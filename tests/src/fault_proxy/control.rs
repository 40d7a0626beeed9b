//! [`FaultProxyHandle`]: configuring the proxy's faults, latency, rules and
//! emulations at run time, and reading what it saw.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::association::AssociationSim;
use super::eks;
use super::faults::{EveryRule, FractionRule, NthRule};
use super::state::{CallRecord, CallTiming, LatencyModel, Shared};
use super::{Fault, IpamPoolSpec, Selector};
use headroom::rng::SplitMix64;

/// Cloneable, thread-safe control of a [`FaultProxy`].
#[derive(Clone)]
pub struct FaultProxyHandle {
    pub(super) shared: Arc<Shared>,
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

    /// Holds every call of `action` (not dry runs) until `count` of them
    /// have arrived, then lets them all through: concurrent runs that each
    /// read, then call, reach moto only once every one of them has read.
    pub fn hold_until_arrived(&self, action: &str, count: usize) {
        self.shared.lock().holds.insert(action.to_owned(), (count, 0));
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
        inner.holds.clear();
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

    /// Serves an IPAM pool (moto has none; see `ipam.rs`), replacing one of
    /// the same id and forgetting its allocations.
    pub fn put_ipam_pool(&self, spec: IpamPoolSpec) {
        self.shared.lock().ipam.put(spec);
    }

    /// The pool hands out `cidr` before its lowest free block (if free and
    /// of the requested size): to make IPAM choose a block that collides
    /// with a route, as a real IPAM, which knows no routes, may.
    pub fn prefer_ipam_block(&self, pool_id: &str, cidr: &str) {
        self.shared.lock().ipam.prefer(pool_id, cidr.parse().expect("a CIDR"));
    }

    /// Marks `cidr` of the pool allocated to `owner` (another VPC, say).
    pub fn reserve_ipam_block(&self, pool_id: &str, owner: &str, cidr: &str) {
        self.shared.lock().ipam.reserve(pool_id, owner, cidr.parse().expect("a CIDR"));
    }

    /// The pool's allocations: `(owner, block)`, owners being VPC CIDR
    /// association ids or the labels given to [`Self::reserve_ipam_block`].
    pub fn ipam_allocations(&self, pool_id: &str) -> Vec<(String, String)> {
        self.shared
            .lock()
            .ipam
            .allocations(pool_id)
            .into_iter()
            .map(|(owner, block)| (owner, block.to_string()))
            .collect()
    }

    /// Every SNS `Publish` moto accepted since the last reset, in order:
    /// what each protocol's subscribers get, e-mail and HTTPS included.
    pub fn published(&self) -> Vec<super::Published> {
        self.shared.lock().published.clone()
    }

    /// Forgets the EKS state the proxy keeps (for a moto reset), the IPAM
    /// pools, the page size, the simulated denials and what was published.
    pub fn reset_emulation(&self) {
        let mut inner = self.shared.lock();
        inner.published.clear();
        inner.eks = eks::EksState::default();
        inner.ipam = Default::default();
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
        let origin = self.shared.lock().times.first().map(|t| t.1);
        origin.map(|origin| self.timeline_since(origin)).unwrap_or_default()
    }

    /// [`FaultProxyHandle::timeline`] relative to `origin` (calls before it at 0).
    pub fn timeline_since(&self, origin: Instant) -> Vec<CallTiming> {
        let inner = self.shared.lock();
        inner
            .log
            .iter()
            .zip(&inner.times)
            .map(|(record, (_, arrived, finished))| CallTiming {
                seq: record.seq,
                action: record.action.clone(),
                reporting: record.is_reporting(),
                arrived: arrived.saturating_duration_since(origin),
                finished: finished.map(|f| f.saturating_duration_since(origin)),
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
