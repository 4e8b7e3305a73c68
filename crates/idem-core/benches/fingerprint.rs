//! The per-request cost of the contract's pure work: key parsing and the
//! fingerprint (canonical JSON + SHA-256). `cargo bench -p idem-core`.

use idem_core::fingerprint::{canonical_json, Fingerprint, FingerprintInput};
use idem_core::IdempotencyKey;

fn main() {
    divan::main();
}

const SMALL: &[u8] = br#"{"amount":100,"currency":"eur"}"#;
const ORDER: &[u8] = br#"{"customer":"cus_9s6XKzkNRiz8i3","items":[{"sku":"A-1","qty":2,"price":12.5},{"sku":"B-7","qty":1,"price":99.99}],"shipping":{"name":"Ada Lovelace","line1":"12 St James's Square","city":"London","postal_code":"SW1Y 4JH"},"metadata":{"order_id":"6735","channel":"web"}}"#;

fn body(name: &str) -> &'static [u8] {
    if name == "small" {
        SMALL
    } else {
        ORDER
    }
}

#[divan::bench(args = ["small", "order"])]
fn fingerprint_json(name: &str) -> Fingerprint {
    let body = body(name);
    Fingerprint::compute(divan::black_box(&FingerprintInput {
        method: "POST",
        path: "/v1/charges",
        query: Some("expand=customer&limit=3"),
        content_type: Some(b"application/json"),
        extra_headers: &[],
        body,
    }))
}

#[divan::bench(args = ["small", "order"])]
fn fingerprint_bytes(name: &str) -> Fingerprint {
    let body = body(name);
    Fingerprint::compute(divan::black_box(&FingerprintInput {
        method: "POST",
        path: "/v1/charges",
        query: None,
        content_type: Some(b"application/octet-stream"),
        extra_headers: &[],
        body,
    }))
}

#[divan::bench(args = ["small", "order"])]
fn canonicalise(name: &str) -> Option<Vec<u8>> {
    canonical_json(divan::black_box(body(name)))
}

#[divan::bench]
fn parse_key() -> IdempotencyKey {
    IdempotencyKey::parse(divan::black_box(
        b"\"8e03978e-40d5-43e8-bc93-6894a57f9324\"",
    ))
    .unwrap()
}
