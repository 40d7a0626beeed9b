//! `headroom`: see and add IPv4 headroom of an EKS Auto Mode cluster from a terminal.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    headroom_cli::run(std::env::args_os().collect()).await
}
