//! An API consumer that charges through `idem_client`: every charge is one
//! logical operation with one `Idempotency-Key`, retried through lost
//! responses until it is answered, and an `outcome-unknown` is reconciled
//! instead of guessed.
//!
//! Against an API behind `idem gateway`, with `idem chaos` losing a third of
//! the responses on the way back:
//!
//! ```text
//! cargo run -p idem-bench --bin bench-upstream -- --listen 127.0.0.1:3000 &
//! cargo run -p idem -- gateway --listen 127.0.0.1:8080 --upstream http://127.0.0.1:3000 --store memory &
//! cargo run -p idem -- chaos --listen 127.0.0.1:8081 --upstream http://127.0.0.1:8080 --drop-response 0.3 &
//! cargo run -p example-client -- http://127.0.0.1:8081/charges 10
//! ```
//!
//! Each line shows the charge, the key, the attempts it took and whether the
//! answer was a replay; the `id`s bench-upstream hands out never skip, since
//! every charge executed once.

use idem_client::{Error, IdempotencyKey, IdempotentRetry, ResponseExt, RetryPolicy};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080/charges".to_owned());
    let charges: u32 = match args.next() {
        Some(n) => n.parse()?,
        None => 5,
    };

    let policy = RetryPolicy::default()
        .max_attempts(6)
        .deadline(Duration::from_secs(20))
        .attempt_timeout(Duration::from_secs(5));
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(IdempotentRetry::new(policy))
        .build();

    for i in 1..=charges {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(format!(r#"{{"amount":{},"currency":"eur"}}"#, 100 * i));
        // An order number makes a natural key: it survives a restart of this
        // program, so a charge retried tomorrow is still the same charge.
        // Without one, the middleware generates a UUID per operation.
        if i % 2 == 0 {
            request =
                request.with_extension(IdempotencyKey::parse(format!("order-{i}").as_bytes())?);
        }
        match request.send().await.map_err(Error::from) {
            Ok(response) => {
                let op = response
                    .operation()
                    .cloned()
                    .expect("set by IdempotentRetry");
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                println!(
                    "charge {i}: {status} {body} (key {}, {} attempt(s){})",
                    op.key.as_deref().unwrap_or("-"),
                    op.attempts,
                    if op.replayed { ", replayed" } else { "" }
                );
            }
            Err(Error::OutcomeUnknown { key, detail, .. }) => {
                // The charge may or may not have happened, and the server will
                // not execute this key again: look it up before anything else.
                println!(
                    "charge {i}: outcome unknown for key {}: reconcile ({})",
                    key.as_deref().unwrap_or("-"),
                    detail.as_deref().unwrap_or("no detail")
                );
            }
            Err(e) => {
                // No answer in time. With a key, trying again later with the
                // same key is safe.
                println!("charge {i}: {e} (key {})", e.key().unwrap_or("-"));
            }
        }
    }
    Ok(())
}
