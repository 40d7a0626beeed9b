//! `headroom`, the command line: the shared crate's read, plan, apply and
//! report, driven from an operator's terminal with their own AWS profile
//! and kubeconfig. Nothing here decides or acts on its own:
//!
//! | module | does |
//! |---|---|
//! | [`args`] | the command line; one flag per setting of the functions |
//! | [`commands`] | status, plan, apply, explain over `headroom::{snapshot, handle}` |
//! | [`render`] | status and reports as text (pure) |
//! | [`progress`] | one line per plan step as it completes |
//! | [`style`] | colour on a terminal only, `NO_COLOR` respected |

pub mod args;
pub mod commands;
pub mod progress;
pub mod render;
pub mod style;

use std::process::ExitCode;

/// Exit status: done (no-op, planned, applied, a status shown).
pub const EXIT_OK: u8 = 0;
/// Refused or failed: headroom would not, or could not, do it.
pub const EXIT_REFUSED_OR_FAILED: u8 = 1;
/// Bad usage: an unknown flag, an invalid setting, an unreadable report.
pub const EXIT_USAGE: u8 = 2;

/// Parses `args` and runs the command.
pub async fn run(args: Vec<std::ffi::OsString>) -> ExitCode {
    let parsed = match args::Parsed::from_args(args) {
        Ok(parsed) => parsed,
        Err(error) => {
            // clap prints help and version to stdout with status 0, usage errors with 2.
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    ExitCode::from(commands::run(parsed).await)
}
