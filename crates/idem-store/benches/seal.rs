//! The cost of encryption at rest ([`idem_store::SealedStore`]) per
//! response: sealing (on every completion) and opening (on every read of a
//! completed record) a response with 8 headers and a body of 100 B, 10 KiB
//! or 1 MiB, next to a plain clone of the same response (what a store
//! wrapper that does nothing would cost) and a deep copy of it (one pass over
//! the bytes):
//! `cargo bench -p idem-store --bench seal`.

use bytes::Bytes;
use divan::counter::BytesCount;
use divan::{black_box, Bencher};
use idem_core::{IdempotencyKey, RecordId, Scope, StoredResponse};
use idem_store::KeyRing;

fn main() {
    divan::main();
}

const SIZES: [usize; 3] = [100, 10 * 1024, 1024 * 1024];

fn id() -> RecordId {
    RecordId {
        scope: Scope::from_stored(
            "h:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ),
        key: IdempotencyKey::parse(b"8e0f5a52-7c1b-4d0e-9a51-3f0c2d9b6e11").unwrap(),
    }
}

/// A typical API response: 8 headers, a body of `size` bytes.
fn response(size: usize) -> StoredResponse {
    let headers = [
        ("content-type", "application/json"),
        ("content-length", "1048576"),
        ("date", "Tue, 14 Apr 2026 10:00:00 GMT"),
        ("x-request-id", "req_8f3a2b9c4d5e6f70"),
        ("cache-control", "no-store"),
        (
            "set-cookie",
            "session=secret-token; Path=/; HttpOnly; Secure",
        ),
        ("location", "/v1/charges/ch_3Nk8fL2eZvKYlo2C"),
        ("strict-transport-security", "max-age=63072000"),
    ];
    StoredResponse {
        status: 201,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), Bytes::from_static(v.as_bytes())))
            .collect(),
        body: Some(Bytes::from(
            (0..size)
                .map(|i| b"0123456789abcdef"[i % 16])
                .collect::<Vec<u8>>(),
        )),
    }
}

/// Baseline: cloning the response (what passing it on costs).
#[divan::bench(args = SIZES)]
fn clone(bencher: Bencher<'_, '_>, size: usize) {
    let resp = response(size);
    bencher
        .counter(BytesCount::new(size))
        .bench(|| black_box(&resp).clone());
}

/// Second baseline: copying every byte of the response once.
#[divan::bench(args = SIZES)]
fn deep_copy(bencher: Bencher<'_, '_>, size: usize) {
    let resp = response(size);
    bencher.counter(BytesCount::new(size)).bench(|| {
        let r = black_box(&resp);
        StoredResponse {
            status: r.status,
            headers: r
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), Bytes::copy_from_slice(v)))
                .collect(),
            body: r.body.as_deref().map(Bytes::copy_from_slice),
        }
    });
}

#[divan::bench(args = SIZES)]
fn seal(bencher: Bencher<'_, '_>, size: usize) {
    let (ring, id, resp) = (KeyRing::new([7; 32]), id(), response(size));
    bencher
        .counter(BytesCount::new(size))
        .bench(|| ring.seal(black_box(&id), black_box(&resp)).unwrap());
}

#[divan::bench(args = SIZES)]
fn open(bencher: Bencher<'_, '_>, size: usize) {
    let (ring, id) = (KeyRing::new([7; 32]), id());
    let sealed = ring.seal(&id, &response(size)).unwrap();
    bencher
        .counter(BytesCount::new(size))
        .bench(|| ring.open(black_box(&id), black_box(&sealed)).unwrap());
}
