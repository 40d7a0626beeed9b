//! `on-alarm`: a thin Lambda handler; the shared crate parses the event and acts.

use headroom::lambda::{Function, serve};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    serve(Function::OnAlarm).await
}
