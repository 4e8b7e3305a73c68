//! The layer's cost per request, and its allocations, with the memory
//! store and an inner service that answers at once: what idem adds to a
//! request, without a network or a disk.
//!
//! Run with `cargo bench -p idem-tower --bench request`. Divan's
//! allocation profiler counts every allocation the iteration makes
//! (building the request and reading the response included; the inner
//! service's own few are in too).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use idem_tower::IdempotencyLayer;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use tower::{Layer as _, Service as _, ServiceExt as _};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    divan::main();
}

const BODY: &[u8] = br#"{"amount":100,"currency":"eur"}"#;

type Inner = tower::util::BoxCloneSyncService<
    Request<idem_tower::RequestBody<Full<Bytes>>>,
    Response<Full<Bytes>>,
    Infallible,
>;

/// The layer around an inner service that answers `201` with a small JSON
/// body, over a fresh memory store.
fn service() -> idem_tower::Idempotency<Inner> {
    let inner: Inner = tower::util::BoxCloneSyncService::new(tower::service_fn(
        |_req: Request<idem_tower::RequestBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(StatusCode::CREATED)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(br#"{"id":1,"ok":true}"#)))
                    .expect("a valid response"),
            )
        },
    ));
    IdempotencyLayer::builder(idem_store::MemoryStore::new())
        .build()
        .layer(inner)
}

fn request(key: &str) -> Request<Full<Bytes>> {
    Request::post("/charges")
        .header("idempotency-key", key)
        .header("authorization", "Bearer sk_test_bench")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY)))
        .expect("a valid request")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A new key each time: claim, execute, store the response, answer.
#[divan::bench]
fn unique_key(bencher: divan::Bencher<'_, '_>) {
    let rt = runtime();
    let mut svc = service();
    let next = AtomicU64::new(0);
    bencher
        .with_inputs(|| format!("k-{}", next.fetch_add(1, Ordering::Relaxed)))
        .bench_local_values(|key| {
            rt.block_on(async {
                let svc = svc.ready().await.expect("ready");
                let response = svc.call(request(&key)).await.expect("answered");
                assert_eq!(response.status(), StatusCode::CREATED);
                response.into_body().collect().await.expect("a body")
            })
        });
}

/// The same key again: answered from the store.
#[divan::bench]
fn replay(bencher: divan::Bencher<'_, '_>) {
    let rt = runtime();
    let mut svc = service();
    rt.block_on(async {
        let svc = svc.ready().await.expect("ready");
        svc.call(request("replayed")).await.expect("answered");
    });
    bencher.bench_local(|| {
        rt.block_on(async {
            let svc = svc.ready().await.expect("ready");
            let response = svc.call(request("replayed")).await.expect("answered");
            assert_eq!(response.status(), StatusCode::CREATED);
            response.into_body().collect().await.expect("a body")
        })
    });
}

/// No key: passed through to the inner service (the floor: what the
/// request, the response and the inner service cost by themselves).
#[divan::bench]
fn without_a_key(bencher: divan::Bencher<'_, '_>) {
    let rt = runtime();
    let mut svc = service();
    bencher.bench_local(|| {
        rt.block_on(async {
            let svc = svc.ready().await.expect("ready");
            let mut req = request("unused");
            req.headers_mut().remove("idempotency-key");
            let response = svc.call(req).await.expect("answered");
            response.into_body().collect().await.expect("a body")
        })
    });
}
