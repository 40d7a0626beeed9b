//! One invocation, in the order its data flows: which clusters
//! ([`selection`]), their world ([`snapshot`]), the look ahead
//! ([`forecast`]), the plan (the core's `planner`), applying or proving it
//! ([`apply`]), the report ([`report`]),
//! and telling CloudWatch and people ([`announce`], [`notify`]).
//! [`remediate`] ties them together; [`context`] is what a process builds
//! once.
//!
//! Decisions do not live here: they are the core's (`headroom_core`). What
//! is here does I/O through `aws/` and `cluster/`, and decides nothing those
//! do not.

pub mod announce;
pub mod apply;
pub mod context;
pub mod forecast;
pub mod notify;
pub mod remediate;
pub mod report;
pub mod selection;
pub mod snapshot;
