//! An axum app whose `POST /charges` is idempotent through `IdempotencyLayer`,
//! added to that route alone with axum's `route_layer`.
//!
//! ```text
//! cargo run -p example-axum-app            # listens on 127.0.0.1:3001
//! curl -i -X POST localhost:3001/charges -H 'Authorization: Bearer sk_test_a' -H 'Idempotency-Key: k1' -d '{"amount":100}' -H 'Content-Type: application/json'
//! curl -i -X POST localhost:3001/charges -H 'Authorization: Bearer sk_test_a' -H 'Idempotency-Key: k1' -d '{"amount":100}' -H 'Content-Type: application/json'
//! # the second answer carries `idempotent-replayed: true` and the same charge id
//! ```

use axum::{routing::post, Json, Router};
use idem_tower::IdempotencyLayer;
use std::sync::atomic::{AtomicU64, Ordering};

static CHARGES: AtomicU64 = AtomicU64::new(0);

async fn create_charge(
    Json(body): Json<serde_json::Value>,
) -> (axum::http::StatusCode, Json<serde_json::Value>) {
    // The side effect the layer protects: it runs once per key.
    let id = CHARGES.fetch_add(1, Ordering::SeqCst) + 1;
    (
        axum::http::StatusCode::CREATED,
        Json(serde_json::json!({ "charge": id, "amount": body["amount"] })),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = idem_store::SqliteStore::open("example-axum.db".as_ref(), Default::default())?;
    let idempotency = IdempotencyLayer::builder(store).require_key().build();
    let app = Router::new().route("/charges", post(create_charge).route_layer(idempotency));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
