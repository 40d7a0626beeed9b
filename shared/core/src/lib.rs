//! headroom's core: every decision, and no I/O.
//!
//! This crate reads nothing and calls nothing: no AWS SDK, no Kubernetes
//! client, no async runtime (scripts/test.sh checks its dependency tree).
//! The shell (`headroom`, one directory up) reads the world into a
//! [`model::NetworkSnapshot`], asks [`planner::plan`] what to do, applies
//! the [`plan::Plan`] and checks it with [`verify`].
//!
//! | decision | module |
//! |---|---|
//! | settings, their validation, per-cluster tag overrides | [`config`] |
//! | what the network looks like (data only) | [`model`] |
//! | free addresses and /28 prefixes, reservations | [`capacity`] |
//! | which subnets nodes really use | [`node_subnets`] |
//! | headroom per AZ and subnet, for people | [`status`] |
//! | which CIDR block; AWS's restriction table | [`cidr`] |
//! | an IPAM pool's rules | [`ipam`] |
//! | NodeClass and NodePool rules | [`nodeclass`] |
//! | whether the new block can reach and be reached | [`reachability`] |
//! | what to do: the plan, its steps and refusals | [`planner`] → [`plan`] |
//! | which permissions a plan needs proved | [`preflight`] |
//! | when an AZ runs out at its current trend; whether to expand ahead | [`forecast`] |
//! | whether the applied plan holds | [`verify`] |
//! | seeded jitter (not a decision; pure, so here) | [`rng`] |
//!
//! Modules import only downwards: `model` and `capacity` at the bottom,
//! `planner` at the top (scripts/check_module_cycles.py).

pub mod capacity;
pub mod cidr;
pub mod config;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod forecast;
pub mod ipam;
pub mod model;
pub mod node_subnets;
pub mod nodeclass;
pub mod plan;
pub mod planner;
pub mod preflight;
pub mod reachability;
pub mod rng;
pub mod status;
pub mod verify;

pub use config::Config;
pub use error::SettingsError;
