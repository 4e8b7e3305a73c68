//! The memory engine against the conformance suite.

idem_store::conformance_tests!(async {
    std::sync::Arc::new(idem_store::MemoryStore::new()) as std::sync::Arc<dyn idem_store::Store>
});

/// Many tasks racing for new keys against a small budget: exactly the
/// budget is admitted, every other claim is refused as full (never lost,
/// never admitted twice), and a sweep gives the room back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claims_admit_exactly_the_record_budget() {
    use idem_core::*;
    use idem_store::{Claim, ClaimOutcome, MemoryStore, Store};
    use std::sync::Arc;
    let store = Arc::new(MemoryStore::with_max_records(10));
    let retention = Retention::default();
    let claim = move |i: usize, now: Timestamp| {
        Claim::new(
            RecordId {
                scope: Scope::global(),
                key: IdempotencyKey::parse(format!("k{i}").as_bytes()).unwrap(),
            },
            Fingerprint::compute(&FingerprintInput {
                method: "POST",
                path: "/",
                query: None,
                content_type: None,
                extra_headers: &[],
                body: b"",
            }),
            now,
            &retention,
            false,
        )
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.claim(claim(i, Timestamp(1_000))).await
            })
        })
        .collect();
    let (mut admitted, mut full) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(ClaimOutcome::Claimed { .. }) => admitted += 1,
            Err(e) if e.is_full() => full += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((admitted, full), (10, 54));
    // Once their leases, retention and tombstones have passed, the sweeper
    // deletes them and new keys fit again.
    let later = Timestamp(1_000).plus(std::time::Duration::from_secs(9 * 24 * 3600));
    store.sweep(later, 1000).await.unwrap();
    assert!(matches!(
        store.claim(claim(100, later)).await,
        Ok(ClaimOutcome::Claimed { .. })
    ));
}
