//! The EKS Auto Mode controller stand-in: after a NodeClass spec change, a
//! pluggable [`StatusResolver`] computes the new `status`, after an optional
//! delay, and the result is written through the status path.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use super::FakeKubeHandle;
use super::state::{RESOURCES, Shared, Store, generation_of};

/// Computes a NodeClass's new `status` from the NodeClass (whole object), or
/// `None` to leave it unchanged; stands in for the EKS Auto Mode controller.
pub type StatusResolver = Arc<dyn Fn(Value) -> BoxFuture<'static, Option<Value>> + Send + Sync>;

impl FakeKubeHandle {
    /// Delay between a NodeClass spec write and the status resolver's run.
    pub fn set_status_delay(&self, delay: Duration) {
        self.shared.lock().status_delay = delay;
    }

    /// Installs (or removes) the controller that computes NodeClass status.
    pub fn set_status_resolver(&self, resolver: Option<StatusResolver>) {
        self.shared.lock().resolver = resolver;
    }
}

/// Runs the status resolver for a NodeClass generation in a task. The result
/// is stored only if the generation is still current, so a slow resolution
/// of an old spec never overwrites a newer one.
pub(super) fn schedule_status(shared: &Arc<Shared>, store: &mut Store, name: String, generation: i64, object: Value) {
    let Some(resolver) = store.resolver.clone() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(%name, "no tokio runtime: NodeClass status not resolved");
        return;
    };
    let delay = store.status_delay;
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let task = runtime.spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let Some(status) = resolver(object).await else {
            return;
        };
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let mut store = shared.lock();
        let rt = &RESOURCES[0];
        let Some(current) = store.object(rt, &name) else {
            return;
        };
        if generation_of(current) != generation {
            tracing::debug!(%name, generation, "stale NodeClass status resolution dropped");
            return;
        }
        let mut updated = current.clone();
        updated["status"] = status;
        store.commit(rt, &name, updated);
    });
    store.resolver_tasks.retain(|task| !task.is_finished());
    store.resolver_tasks.push(task.abort_handle());
}
