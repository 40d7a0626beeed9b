//! Everything that talks to AWS: clients built once per process, the
//! inventory reader, the plan executor, the capacity metrics and the
//! per-cluster capacity alarms.
//!
//! What may not live here: decisions. A function here turns a core type into
//! calls and answers into core types; which block, which subnets, whether
//! to act are the core's (`headroom_core`).

pub mod alarms;
pub mod clients;
pub mod errors;
pub mod executor;
pub mod history;
pub mod inventory;
pub mod metrics;
pub mod notifier;
pub mod preflight;
pub mod retry;

pub use clients::AwsClients;
