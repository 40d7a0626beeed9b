//! `on-prefix-failure`: a thin Lambda handler over the shared crate.

use headroom::lambda::{self, Function};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    // Config and clients once per process; no network I/O before the first event.
    let ctx = match headroom::Context::from_env().await {
        Ok(ctx) => ctx,
        Err(error) => {
            tracing::error!(error = %error, "cannot start: fix the setting and redeploy");
            return Err(error.into());
        }
    };
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        lambda::invoke(ctx, Function::OnPrefixFailure, event.payload).await.map_err(|failure| Diagnostic {
            error_type: "Headroom.RetryableFailure".into(),
            error_message: failure.to_string(),
        })
    }))
    .await
}
