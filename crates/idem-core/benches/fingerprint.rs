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

/// A JSON body of about `size` bytes shaped like a real payload: an object
/// whose `orders` array holds order-like objects (keys out of order, nested
/// objects, strings, integers and decimals), so canonicalising it sorts many
/// small objects and copies one large array.
fn sized_body(size: usize) -> Vec<u8> {
    let mut body = br#"{"request_id":"req_0001","orders":["#.to_vec();
    let mut i = 0u32;
    while body.len() + 64 < size {
        if i > 0 {
            body.push(b',');
        }
        let order = format!(
            r#"{{"customer":"cus_{i:08}","items":[{{"sku":"A-{i}","qty":{q},"price":12.5}},{{"sku":"B-7","qty":1,"price":99.99}}],"shipping":{{"name":"Ada Lovelace","city":"London","postal_code":"SW1Y 4JH"}},"metadata":{{"order_id":"{i}","channel":"web"}}}}"#,
            q = i % 7 + 1
        );
        body.extend_from_slice(order.as_bytes());
        i += 1;
    }
    body.extend_from_slice(br#"],"count":"#);
    body.extend_from_slice(i.to_string().as_bytes());
    body.push(b'}');
    body
}

/// `canonical_json` alone on 1 KiB, 64 KiB and 1 MiB bodies (throughput in
/// bytes of input per second).
#[divan::bench(args = [1 << 10, 64 << 10, 1 << 20])]
fn canonical_json_sized(bencher: divan::Bencher<'_, '_>, size: usize) {
    let body = sized_body(size);
    assert!(canonical_json(&body).is_some());
    bencher
        .counter(divan::counter::BytesCount::new(body.len()))
        .bench(|| canonical_json(divan::black_box(&body)));
}

#[divan::bench]
fn parse_key() -> IdempotencyKey {
    IdempotencyKey::parse(divan::black_box(
        b"\"8e03978e-40d5-43e8-bc93-6894a57f9324\"",
    ))
    .unwrap()
}
