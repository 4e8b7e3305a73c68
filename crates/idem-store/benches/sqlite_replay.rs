//! What replays of a large stored response cost everybody else on a SQLite
//! store: the latency of one claim of a fresh key (one write transaction,
//! one fsync) alone, and beside 1 or 8 tasks that replay a 9 MiB record
//! without pause: `cargo bench -p idem-store --bench sqlite_replay`.
//!
//! The writer thread only decides a replay; the body is read by the reader
//! pool. If it read the body itself, every claim would queue behind the
//! replays' copies. What replays still cost a claim is what any thread
//! that copies 9 MiB buffers costs it (CPU, memory bandwidth, page
//! faults): `claim_beside_copy_loops_of_9_mib` measures that floor, with
//! threads that only copy and no store.

use bytes::Bytes;
use divan::Bencher;
use idem_core::decision::ExistingOutcome;
use idem_core::*;
use idem_store::{Claim, ClaimOutcome, Completion, SqliteOptions, SqliteStore, Store, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

fn main() {
    divan::main();
}

const BODY: usize = 9 * 1024 * 1024;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn claim(key: &str) -> Claim {
    let id = RecordId {
        scope: Scope::from_stored("bench"),
        key: IdempotencyKey::parse(key.as_bytes()).unwrap(),
    };
    let fingerprint = Fingerprint::compute(&FingerprintInput {
        method: "POST",
        path: "/v1/exports",
        query: None,
        content_type: None,
        extra_headers: &[],
        body: b"{}",
    });
    Claim::new(
        id,
        fingerprint,
        Timestamp::now(),
        &Retention::default(),
        false,
    )
}

fn fresh_claim() -> Claim {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    claim(&format!("fresh-{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// A store holding one completed record with a 9 MiB body, and its key.
fn store_with_large_record(rt: &tokio::runtime::Runtime) -> (Arc<SqliteStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("bench.db"), SqliteOptions::default()).unwrap(),
    );
    rt.block_on(async {
        let c = claim("large");
        let ClaimOutcome::Claimed { token } = store.claim(c.clone()).await.unwrap() else {
            panic!("a fresh key is claimed");
        };
        let response = StoredResponse {
            status: 200,
            headers: vec![("content-type".into(), Bytes::from_static(b"text/csv"))],
            body: Some(Bytes::from(vec![b'x'; BODY])),
        };
        let completion = Completion::new(response, c.now, &Retention::default());
        let written = store.complete(&c.id, token, completion).await.unwrap();
        assert_eq!(written, Write::Written);
    });
    (store, dir)
}

fn measure_claims(bencher: Bencher<'_, '_>, rt: &tokio::runtime::Runtime, store: &SqliteStore) {
    bencher.with_inputs(fresh_claim).bench_local_values(|c| {
        rt.block_on(async {
            let outcome = store.claim(c).await.unwrap();
            assert!(matches!(outcome, ClaimOutcome::Claimed { .. }));
        })
    });
}

#[divan::bench(max_time = 5)]
fn claim_alone(bencher: Bencher<'_, '_>) {
    let rt = runtime();
    let (store, _dir) = store_with_large_record(&rt);
    measure_claims(bencher, &rt, &store);
}

#[divan::bench(args = [1, 8], max_time = 5)]
fn claim_beside_replays_of_9_mib(bencher: Bencher<'_, '_>, tasks: usize) {
    let rt = runtime();
    let (store, _dir) = store_with_large_record(&rt);
    let stop = Arc::new(AtomicBool::new(false));
    let replays = Arc::new(AtomicU64::new(0));
    let replayers: Vec<_> = (0..tasks)
        .map(|_| {
            let (store, stop, replays) = (store.clone(), stop.clone(), replays.clone());
            rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match store.claim(claim("large")).await.unwrap() {
                        ClaimOutcome::Existing {
                            outcome: ExistingOutcome::Replay,
                            record,
                        } => {
                            let body = record.response.and_then(|r| r.body);
                            assert_eq!(body.map(|b| b.len()), Some(BODY));
                        }
                        _ => panic!("the large record replays"),
                    }
                    replays.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Measure only once the replays are under way.
    while replays.load(Ordering::Relaxed) < tasks as u64 {
        std::thread::yield_now();
    }
    measure_claims(bencher, &rt, &store);
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for r in replayers {
            r.await.unwrap();
        }
    });
}

/// The floor for the replays above: threads copying 9 MiB buffers, no
/// store involved.
#[divan::bench(args = [1, 8], max_time = 5)]
fn claim_beside_copy_loops_of_9_mib(bencher: Bencher<'_, '_>, threads: usize) {
    let rt = runtime();
    let (store, _dir) = store_with_large_record(&rt);
    let stop = Arc::new(AtomicBool::new(false));
    let copiers: Vec<_> = (0..threads)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let source = vec![b'x'; BODY];
                while !stop.load(Ordering::Relaxed) {
                    drop(divan::black_box(Bytes::copy_from_slice(&source)));
                }
            })
        })
        .collect();
    measure_claims(bencher, &rt, &store);
    stop.store(true, Ordering::Relaxed);
    for copier in copiers {
        copier.join().unwrap();
    }
}
