//! Watch, as kube-rs's `Api::watch` uses it: `GET <collection>?watch=true`
//! answered with a chunked stream of JSON `WatchEvent`s, one a line.
//!
//! Every stored change (any write, the controller's status writes, seeding
//! and removal through the handle) goes into a bounded [`EventLog`] and out
//! on a broadcast channel. A watch from resourceVersion "0" (or none) starts
//! with synthetic ADDED events for the matching objects; a watch from N
//! replays the kept changes after N, or, when N is older than the oldest
//! kept change, sends one ERROR event (410 `Expired`, "too old resource
//! version") and ends, as the real API server does. Then live events follow
//! until `timeoutSeconds` passes (default 5 minutes) or the server stops; a
//! watcher that falls [`LIVE_BACKLOG`] changes behind gets a 410 ERROR too.
//! The store lock is held only while the watch is set up, never while it
//! streams.
//!
//! Selectors filter as the real watch cache does: an object that starts
//! matching is ADDED, one that stops matching is DELETED. Bookmarks are
//! never sent on their own (the real server sends them rarely and clients
//! must not rely on them); `allowWatchBookmarks` is accepted and ignored.
//! `sendInitialEvents=true` (kube's streaming lists) gets the initial ADDED
//! events and the `k8s.io/initial-events-end` bookmark.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::errors::ApiError;
use super::faults::fire_get_hook;
use super::protocol::{RequestCtx, fields_match, labels_match, query_param};
use super::state::{ResourceType, meta_str};

/// How many stored changes the server keeps for watches that resume from a
/// resourceVersion; an older resourceVersion is answered 410 `Expired`.
pub const WATCH_HISTORY: usize = 1000;

/// How long a watch lasts when the request sets no `timeoutSeconds` (a real
/// API server picks 30 to 60 minutes; kube-rs always sends 290 s).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(300);

/// Live changes a slow watcher may fall behind by before its watch is ended
/// with a 410, as a real API server ends a watcher that cannot keep up.
const LIVE_BACKLOG: usize = 1024;

/// What a stored change did to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One stored change, as watchers see it.
#[derive(Debug)]
pub(super) struct Change {
    pub(super) rv: u64,
    pub(super) plural: &'static str,
    pub(super) kind: ChangeKind,
    /// The object before the change; `None` for a creation.
    pub(super) before: Option<Value>,
    /// The object after the change; for a deletion, its last state carrying
    /// the deletion's resourceVersion.
    pub(super) object: Value,
}

/// The last [`WATCH_HISTORY`] changes, and the channel live watchers
/// listen on.
pub(super) struct EventLog {
    changes: VecDeque<Arc<Change>>,
    /// The resourceVersion up to which history is lost: a watch from an
    /// older one cannot be served.
    horizon: u64,
    live: broadcast::Sender<Arc<Change>>,
}

impl EventLog {
    /// An empty log whose history starts after resourceVersion `start`.
    pub(super) fn new(start: u64) -> Self {
        Self { changes: VecDeque::new(), horizon: start, live: broadcast::channel(LIVE_BACKLOG).0 }
    }

    /// Keeps `change` and hands it to live watchers. Called under the store
    /// lock, so watchers see changes in resourceVersion order.
    pub(super) fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        if self.changes.len() >= WATCH_HISTORY
            && let Some(dropped) = self.changes.pop_front()
        {
            self.horizon = dropped.rv;
        }
        self.changes.push_back(Arc::clone(&change));
        // No receiver: nobody is watching, which is fine.
        let _ = self.live.send(change);
    }
}

/// Whether a collection GET with this query asks for a watch.
pub(super) fn is_watch(query: Option<&str>) -> bool {
    query_param(query, "watch").is_some_and(|v| v == "true" || v == "1")
}

/// The name a field selector pins, as kube-rs's `metadata.name=NAME`.
pub(super) fn selected_name(field_selector: &str) -> Option<String> {
    field_selector.split(',').find_map(|req| {
        let req = req.trim();
        let name = req.strip_prefix("metadata.name==").or_else(|| req.strip_prefix("metadata.name="))?;
        Some(name.to_owned())
    })
}

/// Which objects a watch reports.
struct Filter {
    plural: &'static str,
    labels: Option<String>,
    fields: Option<String>,
}

impl Filter {
    fn matches(&self, object: &Value) -> bool {
        self.labels.as_deref().is_none_or(|s| labels_match(object, s))
            && self.fields.as_deref().is_none_or(|s| fields_match(object, s))
    }

    /// The event a change makes for this watch, if any, with the type the
    /// real watch cache gives it when an object enters or leaves the
    /// selector.
    fn event(&self, change: &Change) -> Option<Bytes> {
        if change.plural != self.plural {
            return None;
        }
        let was = change.before.as_ref().is_some_and(|before| self.matches(before));
        let is = change.kind != ChangeKind::Deleted && self.matches(&change.object);
        let kind = match (was, is) {
            (false, false) => return None,
            (false, true) => "ADDED",
            (true, true) => "MODIFIED",
            (true, false) => "DELETED",
        };
        Some(line(kind, &change.object))
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// Sets up a watch of `rt`'s collection: checks the parameters, collects
/// the initial or replayed events and subscribes to live ones under one
/// lock, so nothing is missed or repeated; the returned body streams them.
pub(super) fn start(ctx: &RequestCtx<'_>, rt: &'static ResourceType) -> Result<Body, ApiError> {
    let filter = Filter {
        plural: rt.plural,
        labels: ctx.query_param("labelSelector"),
        fields: ctx.query_param("fieldSelector"),
    };
    let timeout = match ctx.query_param("timeoutSeconds").filter(|t| !t.is_empty()) {
        Some(t) => match t.parse::<u64>() {
            Ok(0) => DEFAULT_WATCH_TIMEOUT,
            Ok(seconds) => Duration::from_secs(seconds),
            Err(_) => return Err(ApiError::bad_request(format!("invalid timeoutSeconds {t:?}"))),
        },
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let send_initial_events = ctx.query_param("sendInitialEvents").is_some_and(|v| v == "true");
    if send_initial_events && ctx.query_param("resourceVersionMatch").as_deref() != Some("NotOlderThan") {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            None,
        ));
    }
    let since = match ctx.query_param("resourceVersion").filter(|rv| !rv.is_empty() && rv != "0") {
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("resourceVersion: Invalid value: {rv:?}: must be a resource version"))
        })?),
        None => None,
    };

    let mut store = ctx.shared.lock();
    let live = store.events.live.subscribe();
    let mut pending = VecDeque::new();
    let mut after = store.resource_version;
    let mut expired = false;
    match since {
        Some(since) if !send_initial_events => {
            if since < store.events.horizon {
                let error = ApiError::new(
                    StatusCode::GONE,
                    "Expired",
                    format!("too old resource version: {since} ({})", store.events.horizon),
                    None,
                );
                pending.push_back(line("ERROR", &error.body));
                expired = true;
            } else {
                pending.extend(store.events.changes.iter().filter(|c| c.rv > since).filter_map(|c| filter.event(c)));
                // A resourceVersion from the future: only later changes count.
                after = after.max(since);
            }
        }
        _ => {
            // The current state, as synthetic ADDED events; reading each
            // object fires its concurrent-writer hook, whose change then
            // follows live.
            let matching: Vec<Value> = store
                .objects
                .get(rt.plural)
                .map(|objects| objects.values().filter(|o| filter.matches(o)).cloned().collect())
                .unwrap_or_default();
            pending.extend(matching.iter().map(|object| line("ADDED", object)));
            if send_initial_events {
                let end = json!({
                    "apiVersion": rt.api_version(),
                    "kind": rt.kind,
                    "metadata": {
                        "resourceVersion": after.to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                });
                pending.push_back(line("BOOKMARK", &end));
            }
            for object in &matching {
                fire_get_hook(ctx.shared, &mut store, rt, &meta_str(object, "name").unwrap_or_default(), object);
            }
        }
    }
    drop(store);

    let state =
        WatchState { pending, live, filter, after, done: expired, deadline: tokio::time::Instant::now() + timeout };
    Ok(Body::from_stream(futures::stream::unfold(state, next_line)))
}

struct WatchState {
    /// Lines to send before any live event.
    pending: VecDeque<Bytes>,
    live: broadcast::Receiver<Arc<Change>>,
    filter: Filter,
    /// Live changes at or below this resourceVersion were already sent.
    after: u64,
    /// No live events: the stream ends once `pending` is sent.
    done: bool,
    deadline: tokio::time::Instant,
}

async fn next_line(mut state: WatchState) -> Option<(Result<Bytes, Infallible>, WatchState)> {
    loop {
        if let Some(line) = state.pending.pop_front() {
            return Some((Ok(line), state));
        }
        if state.done {
            return None;
        }
        tokio::select! {
            () = tokio::time::sleep_until(state.deadline) => return None,
            received = state.live.recv() => match received {
                Ok(change) if change.rv > state.after => {
                    if let Some(line) = state.filter.event(&change) {
                        return Some((Ok(line), state));
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    let error = ApiError::new(
                        StatusCode::GONE,
                        "Expired",
                        format!("the watcher fell {missed} changes behind; watch again from a list"),
                        None,
                    );
                    state.pending.push_back(line("ERROR", &error.body));
                    state.done = true;
                }
                Err(RecvError::Closed) => return None,
            },
        }
    }
}
