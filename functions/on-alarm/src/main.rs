//! `on-alarm`: a thin Lambda handler over the shared crate.

use headroom::lambda::{self, Function};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    // Config and clients once per process; no network I/O before the first event.
    let ctx = headroom::Context::from_env().await?;
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        lambda::invoke(ctx, Function::OnAlarm, event.payload).await
    }))
    .await
}
