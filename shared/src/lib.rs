//! headroom keeps an EKS Auto Mode cluster from running out of IPv4 addresses.
//!
//! Functional core, imperative shell. The core is its own crate
//! (`headroom_core`, `shared/core`), which the compiler keeps free of I/O;
//! its modules are re-exported here so users name one crate. This crate is
//! the shell:
//!
//! | stage | module | does I/O |
//! |---|---|---|
//! | parse the event | [`trigger`] | no |
//! | which clusters, with whose settings | [`run::selection`], [`config::Config::for_cluster`] | yes (EKS) |
//! | read the network | [`run::snapshot`] over [`aws::inventory`], [`cluster`] | yes |
//! | decide | the core: [`planner`] → [`plan`] | no |
//! | act | [`run::apply`] over [`aws::executor`], [`cluster`] | yes |
//! | verify | [`run::apply`] re-reads; the core's [`verify`] judges | yes |
//! | report and tell | [`run::report`], [`run::announce`], [`run::notify`] | yes |
//! | the Lambda glue | [`lambda`] | no |
//!
//! docs/design.md has the layer diagram and a "where is X" table.

pub mod aws;
pub mod cluster;
pub mod error;
pub mod lambda;
pub mod run;
pub mod trigger;

pub use headroom_core::{
    Config, capacity, cidr, config, forecast, ipam, model, node_subnets, nodeclass, plan, planner, preflight,
    reachability, rng, status, verify,
};

pub use error::{Error, Result};
pub use run::remediate::{Context, RunOptions, handle};
pub use run::report::Report;
