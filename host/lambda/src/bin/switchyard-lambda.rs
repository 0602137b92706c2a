//! The router function for AWS Lambda (`provided.al2023`): see
//! `switchyard_lambda::RouterFunction` for what it does and its environment
//! variables. Package it as `bootstrap` (README: "Running in Lambda").

use std::sync::Arc;
use std::time::Instant;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use switchyard_lambda::{RouterEnv, RouterFunction, init_logging};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = Instant::now();
    init_logging();
    let env = RouterEnv::from_env().map_err(|e| format!("switchyard-lambda: {e}"))?;
    let router = Arc::new(RouterFunction::init(env).await?);
    // Init done: Lambda's INIT phase ends when the runtime asks for the
    // first event. Both times are measured from process start.
    eprintln!(
        "{}",
        json!({"event": "ready", "init_ms": started.elapsed().as_secs_f64() * 1e3,
               "functions": router.watcher().policies().functions()})
    );
    let first = Arc::new(std::sync::Once::new());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let router = router.clone();
        let first = first.clone();
        async move {
            let response = router.handle(&event.payload).await;
            first.call_once(|| {
                eprintln!(
                    "{}",
                    json!({"event": "first-response",
                           "since_start_ms": started.elapsed().as_secs_f64() * 1e3})
                )
            });
            Ok::<Value, Error>(response)
        }
    }))
    .await
}
