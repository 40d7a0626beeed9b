//! headroom keeps an EKS Auto Mode cluster from running out of IPv4 addresses.
//!
//! Functional core, imperative shell:
//!
//! | stage | module | does I/O |
//! |---|---|---|
//! | parse the event | [`trigger`] | no |
//! | which clusters, with whose settings | [`selection`], [`config::Config::for_cluster`] | yes (EKS) |
//! | read settings | [`config`] | once, at start-up |
//! | read the network | [`snapshot`] over [`aws::inventory`], [`cluster`] | yes |
//! | which subnets nodes use | [`node_subnets`] | no |
//! | count free space | [`capacity`] | no |
//! | headroom per AZ and subnet, for people | [`status`] | no |
//! | choose a CIDR | [`cidr`]; an IPAM pool's: [`ipam`] | no |
//! | decide | [`planner`] → [`plan`] | no |
//! | NodeClass rules | [`nodeclass`] | no |
//! | act | [`aws::executor`], [`cluster`] | yes |
//! | tie it together, verify, report | [`remediate`], [`report`] | yes |

pub mod announce;
pub mod apply;
pub mod aws;
pub mod capacity;
pub mod cidr;
pub mod cluster;
pub mod config;
pub mod context;
pub mod error;
pub mod ipam;
pub mod lambda;
pub mod model;
pub mod node_subnets;
pub mod nodeclass;
pub mod notify;
pub mod plan;
pub mod planner;
pub mod preflight;
pub mod reachability;
pub mod remediate;
pub mod report;
pub mod rng;
pub mod selection;
pub mod snapshot;
pub mod status;
pub mod trigger;
pub mod verify;

pub use config::Config;
pub use error::{Error, Result};
pub use remediate::{Context, RunOptions, handle};
pub use report::Report;
