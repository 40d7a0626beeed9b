//! Fault injection: writes refused or applied with a lost answer, a
//! concurrent writer that lands right after a read, a forced list page size
//! and latency; the misbehaviours of a real cluster that headroom must
//! survive, and the distance to a remote one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use super::FakeKubeHandle;
use super::NODECLASSES;
use super::controller::schedule_status;
use super::errors::ApiError;
use super::state::{ResourceType, Shared, Store, generation_of, metadata_mut, spec_of};

pub(super) type GetHook = Box<dyn FnOnce(&mut Value) + Send>;

/// What happens to one upcoming write (see [`FakeKubeHandle::fail_next_writes`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum WriteFault {
    /// Handled normally.
    Pass,
    /// Answered with this status; nothing changes.
    Refuse(StatusCode),
    /// Applied, then answered with this status instead of the result.
    LoseAnswer(StatusCode),
}

impl FakeKubeHandle {
    /// Simulates a concurrent writer: the next GET of this object (or LIST
    /// that returns it) is answered with the current object, then `mutate`
    /// is applied to the stored object
    /// and its resourceVersion bumped (generation too if the spec changed), so
    /// the client's following write carries a stale resourceVersion or fails
    /// a JSON Patch `test`. Hooks queue up; each GET consumes one.
    /// `mutate` runs under the server's lock: it must not call this handle.
    pub fn on_next_get(&self, plural: &str, name: &str, mutate: impl FnOnce(&mut Value) + Send + 'static) {
        self.shared
            .lock()
            .get_hooks
            .entry((plural.to_owned(), name.to_owned()))
            .or_default()
            .push_back(Box::new(mutate));
    }

    /// Makes the API server fail the next `n` resource writes (POST, PUT,
    /// PATCH, DELETE of a NodeClass or NodePool, subresources included, any
    /// object, dry runs too; counted after any write faults already queued) with `status`
    /// (e.g. 500) and a `Status` body, without applying them: the server was
    /// unavailable. Note kube-rs retries 429, 503 and 504 by itself, so a
    /// write that must fail for the client should use another status.
    pub fn fail_next_writes(&self, n: usize, status: u16) {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut store = self.shared.lock();
        store.write_faults.extend(std::iter::repeat_n(WriteFault::Refuse(code), n));
    }

    /// Lets `nth - 1` resource writes through, then answers the `nth` (from
    /// now, 1-based) with `status`. With `applied`, the server makes the
    /// change first and only the answer is an error: the client cannot know
    /// its write landed. Replaces write faults queued earlier.
    pub fn fail_nth_write(&self, nth: usize, status: u16, applied: bool) {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut store = self.shared.lock();
        store.write_faults.clear();
        store.write_faults.extend(std::iter::repeat_n(WriteFault::Pass, nth.max(1) - 1));
        store.write_faults.push_back(if applied { WriteFault::LoseAnswer(code) } else { WriteFault::Refuse(code) });
    }

    /// Drops write faults that have not fired yet.
    pub fn clear_write_faults(&self) {
        self.shared.lock().write_faults.clear();
    }

    /// Makes every request wait `latency` before it is handled (`None`: no
    /// wait), as if the API server were remote: for benchmarks that count
    /// sequential round trips. A watch waits once, before its stream
    /// starts; its events are not delayed. Kept across
    /// [`reset`](Self::reset).
    pub fn set_latency(&self, latency: Option<Duration>) {
        self.shared.lock().latency = latency.filter(|l| !l.is_zero());
    }

    /// Lists answer at most `n` items a page (`None`: as many as `limit`
    /// asks), so a client that ignores `continue` misses the rest.
    pub fn set_max_list_page(&self, n: Option<usize>) {
        self.shared.lock().max_list_page = n.map(|n| n.max(1));
    }
}

/// An injected write failure, shaped like the API server's own 5xx answers.
pub(super) fn injected_failure(code: StatusCode) -> ApiError {
    let reason = match code.as_u16() {
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        429 => "TooManyRequests",
        _ => "",
    };
    ApiError::new(code, reason, "the fake API server failed this write on purpose (fail_next_writes)", None)
}

/// A read of `current` was just served: runs its concurrent-writer hook, if
/// one is queued, and stores the result without validation, bumping
/// generation on a spec change as any write does.
pub(super) fn fire_get_hook(
    shared: &Arc<Shared>,
    store: &mut Store,
    rt: &'static ResourceType,
    name: &str,
    current: &Value,
) {
    let Some(hook) = store.get_hooks.get_mut(&(rt.plural.to_owned(), name.to_owned())).and_then(VecDeque::pop_front)
    else {
        return;
    };
    let mut changed = current.clone();
    hook(&mut changed);
    let spec_changed = spec_of(&changed) != spec_of(current);
    let generation = generation_of(current) + i64::from(spec_changed);
    let meta = metadata_mut(&mut changed);
    meta.insert("name".into(), json!(name));
    meta.insert("generation".into(), json!(generation));
    let changed = store.commit(rt, name, changed);
    if spec_changed && rt.plural == NODECLASSES {
        schedule_status(shared, store, name.to_owned(), generation, changed);
    }
}
