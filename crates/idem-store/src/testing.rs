//! The conformance suite every engine passes.
//!
//! An engine's test file invokes [`conformance_tests!`](crate::conformance_tests)
//! with an expression that yields a fresh, empty `Arc<dyn Store>`; the macro
//! expands to one `#[tokio::test]` per behaviour below. Times are given
//! explicitly, so lease and retention expiry are exact, not slept for: that
//! needs an engine that decides on the callers' clock (memory, SQLite, and
//! PostgreSQL or Redis with [`StoreClock::Caller`](crate::StoreClock)).
//! `conformance_tests!(store_clock: …)` runs the behaviours that do not move
//! time, plus the checks that skewed callers agree, against an engine on
//! its own clock ([`StoreClock::Server`](crate::StoreClock)).

use crate::{Claim, ClaimOutcome, Completion, ListCursor, ListQuery, Store, Unsettled, Write};
use bytes::Bytes;
use idem_core::decision::ExistingOutcome;
use idem_core::operator::{Operated, OperatorAction, OperatorRefusal};
use idem_core::*;
use std::sync::Arc;
use std::time::Duration;

/// Expands to the conformance tests for the engine `$make` builds.
///
/// ```ignore
/// idem_store::conformance_tests!(async { std::sync::Arc::new(idem_store::MemoryStore::new()) as std::sync::Arc<dyn idem_store::Store> });
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            absent_key_is_claimed_then_reported_in_progress,
            claim_race_has_exactly_one_winner,
            completed_response_round_trips_exactly,
            stale_owner_completion_is_fenced,
            stale_owner_release_and_renew_are_fenced,
            release_frees_the_key_with_a_larger_token,
            lease_expiry_reads_as_outcome_unknown,
            renewal_keeps_the_claim_alive,
            unknown_is_reclaimed_only_when_upstream_dedupes,
            different_fingerprint_is_a_mismatch_in_every_state,
            expiry_is_enforced_on_read,
            sweep_is_bounded_and_spares_live_records,
            scopes_are_isolated,
            large_response_without_body_is_not_replayable,
            live_claim_outlives_retention_and_is_never_swept,
            owner_lost_after_a_long_execution_leaves_unknown_not_a_free_key,
            the_callers_clock_decides,
            operator_settles_a_claim_whose_lease_ran_out,
        );
        $crate::conformance_tests!(@clock_free $make);
    };
    (store_clock: $make:expr) => {
        $crate::conformance_tests!(@each $make;
            absent_key_is_claimed_then_reported_in_progress,
            claim_race_has_exactly_one_winner,
            completed_response_round_trips_exactly,
            stale_owner_release_and_renew_are_fenced,
            release_frees_the_key_with_a_larger_token,
            renewal_keeps_the_claim_alive,
            unknown_is_reclaimed_only_when_upstream_dedupes,
            different_fingerprint_is_a_mismatch_in_every_state,
            scopes_are_isolated,
            large_response_without_body_is_not_replayable,
            a_caller_behind_does_not_make_live_claims_unknown,
            a_caller_ahead_does_not_lengthen_its_lease,
            renewal_from_a_skewed_caller_counts_from_store_time,
            completion_from_a_skewed_caller_keeps_its_retention,
            a_sweep_far_ahead_deletes_nothing_live_or_replayable,
            an_operator_action_reports_the_state_at_the_store_clock,
        );
        $crate::conformance_tests!(@clock_free $make);
    };
    // The behaviours that hold on either clock: they never move time.
    (@clock_free $make:expr) => {
        $crate::conformance_tests!(@each $make;
            the_same_attempt_is_claimed_again_with_the_same_token,
            the_same_attempt_after_its_lease_ran_out_is_still_the_owner,
            the_same_attempt_after_completion_gets_the_replay,
            racing_attempts_have_one_winner_whose_retry_wins_again,
            any_clock_reading_is_an_answer_or_an_error_never_a_panic,
            operator_release_frees_an_unknown_key_only,
            operator_resolve_is_replayed_exactly,
            operator_stale_token_is_refused_and_changes_nothing,
            operator_purge_erases_the_response,
            operator_on_an_absent_key_is_not_found,
            list_pages_through_unsettled_records_in_claim_order,
            operator_race_has_exactly_one_winner,
            the_lease_holder_is_stored_with_each_claim,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store: std::sync::Arc<dyn $crate::Store> = $make.await;
                $crate::testing::$name(store).await;
            }
        )*
    };
}

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn retention() -> Retention {
    Retention {
        retention: Duration::from_secs(100),
        tombstone_retention: Duration::from_secs(1000),
        lease: Duration::from_secs(10),
    }
}

fn id(scope: &str, key: &str) -> RecordId {
    RecordId {
        scope: Scope::from_stored(scope),
        key: IdempotencyKey::parse(key.as_bytes()).expect("test keys are valid"),
    }
}

fn fp(body: &str) -> Fingerprint {
    Fingerprint::compute(&FingerprintInput {
        method: "POST",
        path: "/charges",
        query: None,
        content_type: Some(b"application/json"),
        extra_headers: &[],
        body: body.as_bytes(),
    })
}

fn claim_at(rid: &RecordId, body: &str, now: Timestamp) -> Claim {
    Claim::new(rid.clone(), fp(body), now, &retention(), false)
}

fn response(status: u16, body: Option<&'static [u8]>) -> StoredResponse {
    StoredResponse {
        status,
        headers: vec![
            (
                "content-type".into(),
                Bytes::from_static(b"application/json"),
            ),
            ("x-binary".into(), Bytes::from_static(b"\x00\xff\r")),
            ("x-multi".into(), Bytes::from_static(b"1")),
            ("x-multi".into(), Bytes::from_static(b"2")),
        ],
        body: body.map(Bytes::from_static),
    }
}

async fn must_claim(store: &dyn Store, claim: Claim) -> u64 {
    match store.claim(claim).await.expect("claim") {
        ClaimOutcome::Claimed { token } => token,
        ClaimOutcome::Existing { outcome, .. } => panic!("expected a claim, got {outcome:?}"),
    }
}

async fn existing(store: &dyn Store, claim: Claim) -> (ExistingOutcome, Record) {
    match store.claim(claim).await.expect("claim") {
        ClaimOutcome::Existing { outcome, record } => (outcome, *record),
        ClaimOutcome::Claimed { token } => panic!("expected an existing record, got claim {token}"),
    }
}

async fn complete(
    store: &dyn Store,
    rid: &RecordId,
    token: u64,
    resp: StoredResponse,
    now: Timestamp,
) -> Write {
    store
        .complete(rid, token, Completion::new(resp, now, &retention()))
        .await
        .expect("complete")
}

/// An absent key is claimed; the same key again is in progress.
pub async fn absent_key_is_claimed_then_reported_in_progress(store: Arc<dyn Store>) {
    let k = id("s", "k1");
    must_claim(&*store, claim_at(&k, "a", T0)).await;
    let (outcome, record) =
        existing(&*store, claim_at(&k, "a", T0.plus(Duration::from_secs(1)))).await;
    assert!(
        matches!(outcome, ExistingOutcome::InProgress { .. }),
        "{outcome:?}"
    );
    assert_eq!(record.state, RecordState::InFlight);
    assert_eq!(
        store.get(&k).await.unwrap().map(|r| r.state),
        Some(RecordState::InFlight)
    );
    assert!(store.get(&id("s", "other")).await.unwrap().is_none());
}

/// Many concurrent claims of one key: exactly one wins.
pub async fn claim_race_has_exactly_one_winner(store: Arc<dyn Store>) {
    for round in 0..5 {
        let k = id("s", &format!("race-{round}"));
        let barrier = Arc::new(tokio::sync::Barrier::new(64));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (store, k, barrier) = (store.clone(), k.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    matches!(
                        store.claim(claim_at(&k, "a", T0)).await.unwrap(),
                        ClaimOutcome::Claimed { .. }
                    )
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap());
        }
        assert_eq!(winners, 1, "round {round}: exactly one claim may win");
    }
}

/// Status, headers (order, duplicates, arbitrary bytes) and body come back
/// exactly.
pub async fn completed_response_round_trips_exactly(store: Arc<dyn Store>) {
    let k = id("s", "k1");
    let token = must_claim(&*store, claim_at(&k, "a", T0)).await;
    let resp = response(500, Some(b"{\"partial\":true}\x00\x01"));
    assert_eq!(
        complete(&*store, &k, token, resp.clone(), T0).await,
        Write::Written
    );
    let (outcome, record) =
        existing(&*store, claim_at(&k, "a", T0.plus(Duration::from_secs(5)))).await;
    assert_eq!(outcome, ExistingOutcome::Replay);
    assert_eq!(record.response, Some(resp));
    assert_eq!(record.state, RecordState::Completed);
    // Completing twice is refused: the claim is over.
    assert_eq!(
        complete(&*store, &k, token, response(200, Some(b"x")), T0).await,
        Write::Fenced
    );
    // An empty body is a body.
    let e = id("s", "empty");
    let token = must_claim(&*store, claim_at(&e, "a", T0)).await;
    let _ = complete(&*store, &e, token, response(204, Some(b"")), T0).await;
    let (outcome, record) = existing(&*store, claim_at(&e, "a", T0)).await;
    assert_eq!(outcome, ExistingOutcome::Replay);
    assert_eq!(record.response.unwrap().body.as_deref(), Some(&b""[..]));
}

/// A stale owner (lease ran out, key reclaimed) cannot overwrite the new
/// owner's outcome.
pub async fn stale_owner_completion_is_fenced(store: Arc<dyn Store>) {
    let k = id("s", "k1");
    let old = must_claim(&*store, claim_at(&k, "a", T0)).await;
    let later = T0.plus(Duration::from_secs(11));
    let mut reclaim = claim_at(&k, "a", later);
    reclaim.reclaim_unknown = true;
    let new = must_claim(&*store, reclaim).await;
    assert!(new > old, "tokens must grow: {old} then {new}");
    assert_eq!(
        complete(&*store, &k, old, response(201, Some(b"old")), later).await,
        Write::Fenced
    );
    assert_eq!(
        complete(&*store, &k, new, response(201, Some(b"new")), later).await,
        Write::Written
    );
    assert_eq!(
        complete(&*store, &k, old, response(201, Some(b"old")), later).await,
        Write::Fenced
    );
    let record = store.get(&k).await.unwrap().unwrap();
    assert_eq!(record.response.unwrap().body.as_deref(), Some(&b"new"[..]));
}

/// Release, renewal and mark-unknown by a stale token are refused too.
pub async fn stale_owner_release_and_renew_are_fenced(store: Arc<dyn Store>) {
    let k = id("s", "k1");
    let token = must_claim(&*store, claim_at(&k, "a", T0)).await;
    assert_eq!(store.release(&k, token + 1).await.unwrap(), Write::Fenced);
    assert_eq!(
        store
            .renew(&k, token + 1, T0, T0.plus(Duration::from_secs(60)))
            .await
            .unwrap(),
        Write::Fenced
    );
    assert_eq!(
        store.mark_unknown(&k, token + 1, T0).await.unwrap(),
        Write::Fenced
    );
    assert_eq!(
        store.get(&k).await.unwrap().unwrap().state,
        RecordState::InFlight
    );
    assert_eq!(
        store.mark_unknown(&k, token, T0).await.unwrap(),
        Write::Written
    );
    assert_eq!(
        store.release(&k, token).await.unwrap(),
        Write::Fenced,
        "a finished claim cannot be released"
    );
    let (outcome, _) = existing(&*store, claim_at(&k, "a", T0)).await;
    assert_eq!(outcome, ExistingOutcome::Unknown);
    assert_eq!(
        store.release(&id("s", "never"), 1).await.unwrap(),
        Write::Fenced
    );
}

/// A released key executes afresh, under a larger token.
pub async fn release_frees_the_key_with_a_larger_token(store: Arc<dyn Store>) {
    let k = id("s", "k1");
    let first = must_claim(&*store, claim_at(&k, "a", T0)).await;
    assert_eq!(store.release(&k, first).await.unwrap(), Write::Written);
    // Even another body may claim it: nothing was executed.
    let second = must_claim(&*store, claim_at(&k, "b", T0)).await;
    assert!(second > first);
    assert_eq!(
        complete(&*store, &k, first, response(200, Some(b"x")), T0).await,
        Write::Fenced
    );
}

/// An owner that stops renewing leaves `outcome-unknown`, never a free key.
pub async fn lease_expiry_reads_as_outcome_unknown(store: Arc<dyn Store>) {
    let k = id("s", "k1");
    let token = must_claim(&*store, claim_at(&k, "a", T0)).await;
    let (outcome, _) = existing(
        &*store,
        claim_at(&k, "a", T0.plus(Duration::from_millis(9_999))),
    )
    .await;
    assert!(matches!(outcome, ExistingOutcome::InProgress { .. }));
    let (outcome, _) = existing(&*store, claim_at(&k, "a", T0.plus(Duration::from_secs(10)))).await;
    assert_eq!(outcome, ExistingOutcome::Unknown);
    // The owner that comes back late still holds the only valid token: its
    // real outcome is better than "unknown".
    assert_eq!(
        complete(
            &*store,
            &k,
            token,
            response(201, Some(b"late")),
            T0.plus(Duration::from_secs(12))
        )
        .await,
        Write::Written
    );
}

/// Renewal moves the lease forward.
pub async fn renewal_keeps_the_claim_alive(store: Arc<dyn Store>) {
    let k = id("s", "k1");
    let token = must_claim(&*store, claim_at(&k, "a", T0)).await;
    for step in 1..=5u64 {
        let now = T0.plus(Duration::from_secs(8 * step));
        assert_eq!(
            store
                .renew(&k, token, now, now.plus(Duration::from_secs(10)))
                .await
                .unwrap(),
            Write::Written
        );
        let (outcome, _) =
            existing(&*store, claim_at(&k, "a", now.plus(Duration::from_secs(5)))).await;
        assert!(
            matches!(outcome, ExistingOutcome::InProgress { .. }),
            "step {step}: {outcome:?}"
        );
    }
}

/// `upstream_dedupes` lets an unknown key be forwarded again; otherwise
/// never.
pub async fn unknown_is_reclaimed_only_when_upstream_dedupes(store: Arc<dyn Store>) {
    let k = id("s", "k1");
    let token = must_claim(&*store, claim_at(&k, "a", T0)).await;
    assert_eq!(
        store.mark_unknown(&k, token, T0).await.unwrap(),
        Write::Written
    );
    let (outcome, _) = existing(&*store, claim_at(&k, "a", T0)).await;
    assert_eq!(outcome, ExistingOutcome::Unknown);
    let mut again = claim_at(&k, "a", T0);
    again.reclaim_unknown = true;
    assert!(must_claim(&*store, again).await > token);
    // ...but not with another body.
    let k2 = id("s", "k2");
    let t2 = must_claim(&*store, claim_at(&k2, "a", T0)).await;
    let _ = store.mark_unknown(&k2, t2, T0).await.unwrap();
    let mut other = claim_at(&k2, "b", T0);
    other.reclaim_unknown = true;
    assert_eq!(existing(&*store, other).await.0, ExistingOutcome::Mismatch);
}

/// Another fingerprint under the same key is refused while the record
/// lives.
pub async fn different_fingerprint_is_a_mismatch_in_every_state(store: Arc<dyn Store>) {
    let k = id("s", "k1");
    let token = must_claim(&*store, claim_at(&k, "a", T0)).await;
    assert_eq!(
        existing(&*store, claim_at(&k, "b", T0)).await.0,
        ExistingOutcome::Mismatch
    );
    let _ = complete(&*store, &k, token, response(200, Some(b"x")), T0).await;
    assert_eq!(
        existing(&*store, claim_at(&k, "b", T0)).await.0,
        ExistingOutcome::Mismatch
    );
}

/// Past retention a record is a tombstone even before any sweep; past the
/// tombstone the key is free.
pub async fn expiry_is_enforced_on_read(store: Arc<dyn Store>) {
    let k = id("s", "k1");
    let token = must_claim(&*store, claim_at(&k, "a", T0)).await;
    let _ = complete(&*store, &k, token, response(201, Some(b"x")), T0).await;
    let just_before = T0.plus(Duration::from_millis(99_999));
    assert_eq!(
        existing(&*store, claim_at(&k, "a", just_before)).await.0,
        ExistingOutcome::Replay
    );
    let retained = T0.plus(Duration::from_secs(100));
    assert_eq!(
        existing(&*store, claim_at(&k, "a", retained)).await.0,
        ExistingOutcome::Expired
    );
    let gone = T0.plus(Duration::from_secs(1100));
    assert!(must_claim(&*store, claim_at(&k, "a", gone)).await > token);
}

/// A sweep touches at most `limit` records and never a live one.
pub async fn sweep_is_bounded_and_spares_live_records(store: Arc<dyn Store>) {
    for i in 0..30 {
        let k = id("s", &format!("old-{i}"));
        let token = must_claim(&*store, claim_at(&k, "a", T0)).await;
        let _ = complete(&*store, &k, token, response(201, Some(b"x")), T0).await;
    }
    let fresh_at = T0.plus(Duration::from_secs(1050));
    for i in 0..5 {
        let k = id("s", &format!("new-{i}"));
        let token = must_claim(&*store, claim_at(&k, "a", fresh_at)).await;
        let _ = complete(&*store, &k, token, response(201, Some(b"x")), fresh_at).await;
    }
    let now = T0.plus(Duration::from_secs(1100));
    let mut deleted = 0;
    for _ in 0..10 {
        let report = store.sweep(now, 7).await.unwrap();
        assert!(report.deleted + report.tombstoned <= 7, "{report:?}");
        deleted += report.deleted;
        if report.deleted + report.tombstoned == 0 {
            break;
        }
    }
    assert_eq!(deleted, 30);
    for i in 0..30 {
        assert!(store
            .get(&id("s", &format!("old-{i}")))
            .await
            .unwrap()
            .is_none());
    }
    for i in 0..5 {
        let (outcome, _) =
            existing(&*store, claim_at(&id("s", &format!("new-{i}")), "a", now)).await;
        assert_eq!(outcome, ExistingOutcome::Replay);
    }
    // Past retention but inside the tombstone: the sweep drops the body and
    // keeps the tombstone.
    let tomb_time = fresh_at.plus(Duration::from_secs(200));
    let report = store.sweep(tomb_time, 100).await.unwrap();
    assert_eq!(report.tombstoned, 5);
    let (outcome, record) = existing(&*store, claim_at(&id("s", "new-0"), "a", tomb_time)).await;
    assert_eq!(outcome, ExistingOutcome::Expired);
    assert_eq!(
        record.response.map(|r| (r.status, r.body)),
        Some((201, None))
    );
}

/// The same key in two scopes is two records.
pub async fn scopes_are_isolated(store: Arc<dyn Store>) {
    let a = id("tenant-a", "k1");
    let b = id("tenant-b", "k1");
    let ta = must_claim(&*store, claim_at(&a, "a", T0)).await;
    let tb = must_claim(&*store, claim_at(&b, "a", T0)).await;
    let _ = complete(&*store, &a, ta, response(201, Some(b"for a")), T0).await;
    assert!(matches!(
        existing(&*store, claim_at(&b, "a", T0)).await.0,
        ExistingOutcome::InProgress { .. }
    ));
    let _ = complete(&*store, &b, tb, response(201, Some(b"for b")), T0).await;
    let (_, ra) = existing(&*store, claim_at(&a, "a", T0)).await;
    let (_, rb) = existing(&*store, claim_at(&b, "a", T0)).await;
    assert_eq!(ra.response.unwrap().body.as_deref(), Some(&b"for a"[..]));
    assert_eq!(rb.response.unwrap().body.as_deref(), Some(&b"for b"[..]));
}

/// A response stored without its body is reported as not replayable, with
/// its status.
pub async fn large_response_without_body_is_not_replayable(store: Arc<dyn Store>) {
    let k = id("s", "big");
    let token = must_claim(&*store, claim_at(&k, "a", T0)).await;
    let _ = complete(&*store, &k, token, response(200, None), T0).await;
    assert_eq!(
        existing(&*store, claim_at(&k, "a", T0)).await.0,
        ExistingOutcome::NotReplayable { status: 200 }
    );
}

/// A claim whose owner keeps renewing stays in flight past retention and
/// tombstone retention, and no sweep removes it: a slow execution can never
/// be claimed twice.
pub async fn live_claim_outlives_retention_and_is_never_swept(store: Arc<dyn Store>) {
    let k = id("s", "slow");
    let token = must_claim(&*store, claim_at(&k, "a", T0)).await;
    let far = T0.plus(Duration::from_secs(5000));
    assert_eq!(
        store
            .renew(&k, token, far, far.plus(Duration::from_secs(10)))
            .await
            .unwrap(),
        Write::Written
    );
    let report = store.sweep(far, 100).await.unwrap();
    assert_eq!(
        report,
        crate::SweepReport::default(),
        "a live claim is not swept"
    );
    let (outcome, _) = existing(&*store, claim_at(&k, "a", far)).await;
    assert!(
        matches!(outcome, ExistingOutcome::InProgress { .. }),
        "{outcome:?}"
    );
    // Its completion starts retention afresh.
    assert_eq!(
        complete(&*store, &k, token, response(201, Some(b"done")), far).await,
        Write::Written
    );
    let (outcome, _) = existing(
        &*store,
        claim_at(&k, "a", far.plus(Duration::from_secs(50))),
    )
    .await;
    assert_eq!(outcome, ExistingOutcome::Replay);
}

/// Retention counts from the owner's last renewal: an owner that renewed
/// well past the claim's original horizons and then died leaves a record
/// that reads outcome-unknown, never a free key that a retry would execute
/// a second time.
pub async fn owner_lost_after_a_long_execution_leaves_unknown_not_a_free_key(
    store: Arc<dyn Store>,
) {
    let k = id("s", "long");
    let token = must_claim(&*store, claim_at(&k, "a", T0)).await;
    // The claim's own horizons: T0+100 s retention, T0+1100 s tombstone.
    let last_renewal = T0.plus(Duration::from_secs(2000));
    let lease_end = last_renewal.plus(Duration::from_secs(10));
    assert_eq!(
        store
            .renew(&k, token, last_renewal, lease_end)
            .await
            .unwrap(),
        Write::Written
    );
    // The owner dies: its lease lapses.
    let after = lease_end.plus(Duration::from_secs(1));
    assert_eq!(
        store.sweep(after, 100).await.unwrap().deleted,
        0,
        "nothing to delete yet"
    );
    let (outcome, _) = existing(&*store, claim_at(&k, "a", after)).await;
    assert_eq!(
        outcome,
        ExistingOutcome::Unknown,
        "a lost owner's key is unknown, not free"
    );
    // A renewal that does not move the lease forward changes nothing.
    let mut again = claim_at(&k, "a", after);
    again.reclaim_unknown = false;
    assert_eq!(existing(&*store, again).await.0, ExistingOutcome::Unknown);
}

/// A claim sent again under its own attempt (its reply was lost after the
/// store committed it) is told it owns the key, with the same token, and
/// the record stays that one claim; a retry with fresh times under the same
/// attempt too. Another attempt finds it in progress; attempt 0 never
/// matches.
pub async fn the_same_attempt_is_claimed_again_with_the_same_token(store: Arc<dyn Store>) {
    let k = id("s", "retried");
    let first = claim_at(&k, "a", T0);
    let token = must_claim(&*store, first.clone()).await;
    let stored = store.get(&k).await.unwrap().expect("claimed");
    assert_eq!(stored.attempt, first.attempt);
    assert_eq!(must_claim(&*store, first.clone()).await, token);
    let retry = claim_at(&k, "a", T0.plus(Duration::from_millis(1))).with_attempt(first.attempt);
    assert_eq!(must_claim(&*store, retry).await, token);
    let again = store.get(&k).await.unwrap().expect("still there");
    assert_eq!(
        (again.state, again.token, again.attempt, again.claimed_at),
        (
            RecordState::InFlight,
            token,
            first.attempt,
            stored.claimed_at
        ),
        "one claim, in flight"
    );
    assert!(again.lease_until >= stored.lease_until, "never moved back");
    let (outcome, record) = existing(&*store, claim_at(&k, "a", T0)).await;
    assert!(
        matches!(outcome, ExistingOutcome::InProgress { .. }),
        "{outcome:?}"
    );
    assert_eq!(record.token, token);
    // The same attempt with another body is another request: a mismatch.
    let (outcome, _) = existing(&*store, claim_at(&k, "b", T0).with_attempt(first.attempt)).await;
    assert_eq!(outcome, ExistingOutcome::Mismatch);
    // Attempt 0 (unknown) never matches, not even itself.
    let z = id("s", "zero");
    let zero = claim_at(&z, "a", T0).with_attempt(0);
    must_claim(&*store, zero.clone()).await;
    assert_eq!(store.get(&z).await.unwrap().map(|r| r.attempt), Some(0));
    let (outcome, _) = existing(&*store, zero).await;
    assert!(
        matches!(outcome, ExistingOutcome::InProgress { .. }),
        "{outcome:?}"
    );
}

/// A claim whose lease ran out before its retry arrived (a long store
/// outage) is still its owner's: the retry gets it with the same token
/// (never outcome-unknown), and a retry with a fresh lease makes it live
/// again. Released, the key is claimed afresh with a larger token.
///
/// Zero-length leases make "ran out" immediate on any clock.
pub async fn the_same_attempt_after_its_lease_ran_out_is_still_the_owner(store: Arc<dyn Store>) {
    let k = id("s", "stranded");
    let mut first = claim_at(&k, "a", T0);
    first.lease_until = first.now;
    let token = must_claim(&*store, first.clone()).await;
    let (outcome, _) = existing(&*store, claim_at(&k, "a", T0)).await;
    assert_eq!(
        outcome,
        ExistingOutcome::Unknown,
        "another attempt: unknown"
    );
    assert_eq!(must_claim(&*store, first.clone()).await, token);
    // The retry with a real lease revives the claim for everyone.
    let retry = claim_at(&k, "a", T0).with_attempt(first.attempt);
    assert_eq!(must_claim(&*store, retry).await, token);
    let (outcome, _) = existing(&*store, claim_at(&k, "a", T0)).await;
    assert!(
        matches!(outcome, ExistingOutcome::InProgress { .. }),
        "{outcome:?}"
    );
    assert_eq!(store.release(&k, token).await.unwrap(), Write::Written);
    let next = must_claim(&*store, claim_at(&k, "a", T0)).await;
    assert!(next > token, "{token} then {next}");
    // The old attempt now meets another claim: in progress, not its own.
    let (outcome, record) = existing(&*store, first).await;
    assert!(
        matches!(outcome, ExistingOutcome::InProgress { .. }),
        "{outcome:?}"
    );
    assert_eq!(record.token, next);
}

/// The same attempt once the claim completed is answered from the record
/// like any request: the replay.
pub async fn the_same_attempt_after_completion_gets_the_replay(store: Arc<dyn Store>) {
    let k = id("s", "done");
    let first = claim_at(&k, "a", T0);
    let token = must_claim(&*store, first.clone()).await;
    let resp = response(201, Some(b"done"));
    assert_eq!(
        complete(&*store, &k, token, resp.clone(), T0).await,
        Write::Written
    );
    let (outcome, record) = existing(&*store, first.clone()).await;
    assert_eq!(outcome, ExistingOutcome::Replay);
    assert_eq!(record.response, Some(resp));
    assert_eq!(record.attempt, first.attempt);
    // Marked unknown, it is unknown to its own attempt too.
    let u = id("s", "unknown");
    let first = claim_at(&u, "a", T0);
    let token = must_claim(&*store, first.clone()).await;
    assert_eq!(
        store.mark_unknown(&u, token, T0).await.unwrap(),
        Write::Written
    );
    assert_eq!(existing(&*store, first).await.0, ExistingOutcome::Unknown);
}

/// 32 claims of one key with distinct attempts: exactly one wins; the
/// winner's attempt sent again wins again, with the same token.
pub async fn racing_attempts_have_one_winner_whose_retry_wins_again(store: Arc<dyn Store>) {
    let k = id("s", "raced-attempts");
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let tasks: Vec<_> = (0..32u64)
        .map(|i| {
            let (store, k, barrier) = (store.clone(), k.clone(), barrier.clone());
            tokio::spawn(async move {
                let claim = claim_at(&k, "a", T0).with_attempt(1000 + i);
                barrier.wait().await;
                (claim.clone(), store.claim(claim).await.unwrap())
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (claim, ClaimOutcome::Claimed { token }) => winners.push((claim, token)),
            (_, ClaimOutcome::Existing { outcome, .. }) => assert!(
                matches!(outcome, ExistingOutcome::InProgress { .. }),
                "{outcome:?}"
            ),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one attempt wins");
    let (claim, token) = winners.pop().expect("one winner");
    assert_eq!(
        store.get(&k).await.unwrap().map(|r| r.attempt),
        Some(claim.attempt)
    );
    assert_eq!(must_claim(&*store, claim).await, token);
}

/// Memory, SQLite (and the networked engines with `StoreClock::Caller`):
/// the caller's reading is the clock. A claim read by a caller a minute
/// later is past its 10 s lease, a renewal's lease is taken as given, and
/// a sweep an hour on deletes what is past its tombstone then, whatever
/// the time really is.
pub async fn the_callers_clock_decides(store: Arc<dyn Store>) {
    let k = id("s", "caller-clock");
    let token = must_claim(&*store, claim_at(&k, "a", T0)).await;
    let minute = T0.plus(Duration::from_secs(60));
    let (outcome, _) = existing(&*store, claim_at(&k, "a", minute)).await;
    assert_eq!(outcome, ExistingOutcome::Unknown);
    let lease = minute.plus(Duration::from_secs(10));
    assert_eq!(
        store.renew(&k, token, T0, lease).await.unwrap(),
        Write::Written
    );
    assert_eq!(
        store.get(&k).await.unwrap().map(|r| r.lease_until),
        Some(lease)
    );
    let r = id("s", "caller-clock-done");
    let token = must_claim(&*store, claim_at(&r, "a", T0)).await;
    let _ = complete(&*store, &r, token, response(201, Some(b"x")), T0).await;
    let hour = T0.plus(Duration::from_secs(3600));
    let report = store.sweep(hour, 100).await.unwrap();
    assert_eq!(report.deleted, 2, "{report:?}");
    assert!(store.get(&r).await.unwrap().is_none());
}

/// Store clock: the right time, from this machine's clock (the store's
/// server runs beside the tests, so its clock is this one).
fn real_now() -> Timestamp {
    Timestamp::now()
}

/// Slack for the time between reading this machine's clock and the store
/// reading its own.
const SLACK: Duration = Duration::from_secs(5);

/// Store clock: a claim made by a caller whose clock is an hour behind,
/// with a 10 s lease, is in progress to a caller with the right clock
/// (on the callers' clocks its lease would have ended an hour ago).
pub async fn a_caller_behind_does_not_make_live_claims_unknown(store: Arc<dyn Store>) {
    let k = id("s", "behind");
    let behind = Timestamp(real_now().as_millis() - 3_600_000);
    let token = must_claim(&*store, claim_at(&k, "a", behind)).await;
    let (outcome, record) = existing(&*store, claim_at(&k, "a", real_now())).await;
    assert!(
        matches!(outcome, ExistingOutcome::InProgress { .. }),
        "{outcome:?}"
    );
    assert!(record.lease_until > real_now(), "{record:?}");
    assert_eq!(record.token, token);
    // And its retention is the store's time plus the 100 s it meant.
    assert!(record.expires_at > real_now().plus(Duration::from_secs(90)));
}

/// Store clock: a caller whose clock is an hour ahead gets a 10 s lease
/// from the store's time, not one that lasts an hour longer; a caller with
/// the right clock sees it run out after 10 s.
pub async fn a_caller_ahead_does_not_lengthen_its_lease(store: Arc<dyn Store>) {
    let k = id("s", "ahead");
    let ahead = real_now().plus(Duration::from_secs(3600));
    must_claim(&*store, claim_at(&k, "a", ahead)).await;
    let record = store.get(&k).await.unwrap().expect("claimed");
    let limit = real_now().plus(Duration::from_secs(10)).plus(SLACK);
    assert!(
        record.lease_until <= limit,
        "lease {:?} past {limit:?}",
        record.lease_until
    );
    assert!(record.tombstone_until <= real_now().plus(Duration::from_secs(1100)).plus(SLACK));
    let (outcome, _) = existing(&*store, claim_at(&k, "a", ahead)).await;
    assert!(
        matches!(outcome, ExistingOutcome::InProgress { .. }),
        "{outcome:?}"
    );
}

/// Store clock: a renewal from a caller an hour behind extends the lease
/// from the store's time by the 30 s it asked for.
pub async fn renewal_from_a_skewed_caller_counts_from_store_time(store: Arc<dyn Store>) {
    let k = id("s", "renewed-behind");
    let token = must_claim(&*store, claim_at(&k, "a", real_now())).await;
    let behind = Timestamp(real_now().as_millis() - 3_600_000);
    let asked = Duration::from_secs(30);
    let before = real_now();
    assert_eq!(
        store
            .renew(&k, token, behind, behind.plus(asked))
            .await
            .unwrap(),
        Write::Written
    );
    let lease = store.get(&k).await.unwrap().expect("claimed").lease_until;
    assert!(
        lease >= before.plus(asked) && lease <= real_now().plus(asked).plus(SLACK),
        "lease {lease:?}, renewed at {before:?} for {asked:?}"
    );
    // An hour ahead, asking for 10 s: no hour-long lease either.
    let ahead = real_now().plus(Duration::from_secs(3600));
    assert_eq!(
        store
            .renew(&k, token, ahead, ahead.plus(Duration::from_secs(10)))
            .await
            .unwrap(),
        Write::Written
    );
    let lease = store.get(&k).await.unwrap().expect("claimed").lease_until;
    assert!(lease <= real_now().plus(asked).plus(SLACK), "{lease:?}");
}

/// Store clock: a completion by a caller an hour behind is replayed for
/// its retention from the store's time (on its own clock it would be past
/// retention for every caller with the right clock).
pub async fn completion_from_a_skewed_caller_keeps_its_retention(store: Arc<dyn Store>) {
    let k = id("s", "completed-behind");
    let behind = Timestamp(real_now().as_millis() - 3_600_000);
    let token = must_claim(&*store, claim_at(&k, "a", behind)).await;
    assert_eq!(
        complete(&*store, &k, token, response(201, Some(b"x")), behind).await,
        Write::Written
    );
    let (outcome, record) = existing(&*store, claim_at(&k, "a", real_now())).await;
    assert_eq!(outcome, ExistingOutcome::Replay);
    assert!(record.expires_at > real_now().plus(Duration::from_secs(90)));
}

/// Store clock: a sweep whose caller's clock is 30 days ahead (past every
/// retention and tombstone) deletes nothing live or replayable.
pub async fn a_sweep_far_ahead_deletes_nothing_live_or_replayable(store: Arc<dyn Store>) {
    let live = id("s", "sweep-live");
    let done = id("s", "sweep-done");
    must_claim(&*store, claim_at(&live, "a", real_now())).await;
    let token = must_claim(&*store, claim_at(&done, "a", real_now())).await;
    let _ = complete(&*store, &done, token, response(201, Some(b"x")), real_now()).await;
    let month = real_now().plus(Duration::from_secs(30 * 24 * 3600));
    assert_eq!(
        store.sweep(month, 1000).await.unwrap(),
        crate::SweepReport::default()
    );
    let (outcome, _) = existing(&*store, claim_at(&live, "a", real_now())).await;
    assert!(
        matches!(outcome, ExistingOutcome::InProgress { .. }),
        "{outcome:?}"
    );
    let (outcome, record) = existing(&*store, claim_at(&done, "a", real_now())).await;
    assert_eq!(outcome, ExistingOutcome::Replay);
    assert!(record.response.and_then(|r| r.body).is_some());
}

/// Store clock: an operator whose clock is an hour behind purges a
/// completed record, keeping its tombstone. The action is decided at the
/// store's time, and so is the state it reports: a tombstone (read at the
/// operator's clock the record would still look completed, which is what
/// the admin API showed).
pub async fn an_operator_action_reports_the_state_at_the_store_clock(store: Arc<dyn Store>) {
    let k = id("s", "purged-behind");
    let token = completed_at(&*store, &k, response(201, Some(b"x")), real_now()).await;
    let behind = Timestamp(real_now().as_millis() - 3_600_000);
    let purged = operate(&*store, &k, token, purge(true), behind)
        .await
        .expect("a completed record is purged");
    assert_eq!(purged.state, EffectiveState::Tombstone);
    let (outcome, _) = existing(&*store, claim_at(&k, "a", real_now())).await;
    assert_eq!(outcome, ExistingOutcome::Expired);
}

/// Clock readings at the ends of the range (a broken clock, a test's
/// arithmetic) give an answer or an error on every operation: never a
/// panic, never an overflow.
pub async fn any_clock_reading_is_an_answer_or_an_error_never_a_panic(store: Arc<dyn Store>) {
    let huge = Retention {
        retention: Duration::MAX,
        tombstone_retention: Duration::MAX,
        lease: Duration::MAX,
    };
    for (i, now) in [i64::MIN, -1, 0, 1 << 53, i64::MAX].into_iter().enumerate() {
        let now = Timestamp(now);
        let k = id("s", &format!("clock-{i}"));
        for retention in [retention(), huge] {
            let claim = Claim::new(k.clone(), fp("a"), now, &retention, false);
            if let Ok(ClaimOutcome::Claimed { token }) = store.claim(claim.clone()).await {
                let _ = store.claim(claim).await;
                let _ = store.renew(&k, token, now, Timestamp(i64::MAX)).await;
                let _ = store.renew(&k, token, Timestamp(i64::MIN), now).await;
                let c = Completion::new(response(201, Some(b"x")), now, &retention);
                let _ = store.complete(&k, token, c).await;
            }
            let _ = store.get(&k).await;
        }
        let _ = store.sweep(now, 10).await;
    }
    // The store still works.
    let k = id("s", "after-the-clocks");
    must_claim(&*store, claim_at(&k, "a", T0)).await;
}

fn resolve(resp: StoredResponse) -> OperatorAction {
    OperatorAction::Resolve {
        response: resp,
        retention: retention().retention,
        tombstone_retention: retention().tombstone_retention,
    }
}

fn purge(keep_tombstone: bool) -> OperatorAction {
    OperatorAction::Purge { keep_tombstone }
}

async fn operate(
    store: &dyn Store,
    rid: &RecordId,
    token: u64,
    action: OperatorAction,
    now: Timestamp,
) -> Result<Operated, OperatorRefusal> {
    store
        .operate(rid, token, action, now)
        .await
        .expect("operate")
}

/// A claim its owner marked `outcome-unknown`, at `now`: what an operator
/// is asked to settle.
async fn unknown_at(store: &dyn Store, rid: &RecordId, now: Timestamp) -> u64 {
    let token = must_claim(store, claim_at(rid, "a", now)).await;
    assert_eq!(
        store.mark_unknown(rid, token, now).await.expect("mark"),
        Write::Written
    );
    token
}

/// A claim completed with `resp` at `now`.
async fn completed_at(
    store: &dyn Store,
    rid: &RecordId,
    resp: StoredResponse,
    now: Timestamp,
) -> u64 {
    let token = must_claim(store, claim_at(rid, "a", now)).await;
    assert_eq!(complete(store, rid, token, resp, now).await, Write::Written);
    token
}

fn is_wrong_state(refusal: &Result<Operated, OperatorRefusal>) -> bool {
    matches!(refusal, Err(OperatorRefusal::WrongState { .. }))
}

/// Operator: releasing a key marked `outcome-unknown` frees it (the next
/// request executes, under a larger token); a live claim or a completed
/// record is refused and left exactly as it was.
pub async fn operator_release_frees_an_unknown_key_only(store: Arc<dyn Store>) {
    let now = real_now();
    let k = id("s", "op-unknown");
    let token = unknown_at(&*store, &k, now).await;
    let released = operate(&*store, &k, token, OperatorAction::Release, now)
        .await
        .expect("an unknown outcome is released");
    assert_eq!(released.state, EffectiveState::Absent);
    assert!(released.record.token > token);
    let next = must_claim(&*store, claim_at(&k, "a", now)).await;
    assert!(
        next > released.record.token,
        "{token}, {} then {next}",
        released.record.token
    );
    for (k, token) in [
        (
            id("s", "op-live"),
            must_claim(&*store, claim_at(&id("s", "op-live"), "a", now)).await,
        ),
        (
            id("s", "op-done"),
            completed_at(&*store, &id("s", "op-done"), response(201, Some(b"x")), now).await,
        ),
    ] {
        let before = store.get(&k).await.unwrap();
        let refused = operate(&*store, &k, token, OperatorAction::Release, now).await;
        assert!(is_wrong_state(&refused), "{k:?}: {refused:?}");
        assert_eq!(store.get(&k).await.unwrap(), before, "{k:?} unchanged");
    }
    let (outcome, _) = existing(&*store, claim_at(&id("s", "op-done"), "a", now)).await;
    assert_eq!(outcome, ExistingOutcome::Replay);
}

/// Operator: a resolved outcome is what the next request with the same
/// fingerprint replays, exactly; the owner's old token writes nothing.
pub async fn operator_resolve_is_replayed_exactly(store: Arc<dyn Store>) {
    let now = real_now();
    let k = id("s", "op-resolve");
    let token = unknown_at(&*store, &k, now).await;
    let resp = response(201, Some(b"{\"resolved\":true}"));
    let written = operate(&*store, &k, token, resolve(resp.clone()), now)
        .await
        .expect("an unknown outcome is resolved");
    assert_eq!(written.record.response.as_ref(), Some(&resp));
    assert_eq!(written.record.state, RecordState::Completed);
    assert_eq!(written.state, EffectiveState::Completed);
    let (outcome, record) = existing(&*store, claim_at(&k, "a", now)).await;
    assert_eq!(outcome, ExistingOutcome::Replay);
    assert_eq!(record.response, Some(resp.clone()));
    assert_eq!(
        complete(&*store, &k, token, response(500, Some(b"late")), now).await,
        Write::Fenced
    );
    let (outcome, _) = existing(&*store, claim_at(&k, "b", now)).await;
    assert_eq!(outcome, ExistingOutcome::Mismatch);
    // Resolving a live claim is refused.
    let live = id("s", "op-resolve-live");
    let token = must_claim(&*store, claim_at(&live, "a", now)).await;
    let refused = operate(&*store, &live, token, resolve(resp), now).await;
    assert!(is_wrong_state(&refused), "{refused:?}");
}

/// Operator: a token that is not the record's (stale, or made up) is
/// refused with the current one and changes nothing; so is a second action
/// taken on the reading a first one already used.
pub async fn operator_stale_token_is_refused_and_changes_nothing(store: Arc<dyn Store>) {
    let now = real_now();
    let k = id("s", "op-stale");
    let token = unknown_at(&*store, &k, now).await;
    let before = store.get(&k).await.unwrap();
    for wrong in [token.wrapping_sub(1), token.wrapping_add(1), 0, u64::MAX] {
        for action in [
            OperatorAction::Release,
            resolve(response(201, Some(b"x"))),
            purge(true),
            purge(false),
        ] {
            assert_eq!(
                operate(&*store, &k, wrong, action, now).await,
                Err(OperatorRefusal::Changed { current: token })
            );
        }
    }
    assert_eq!(store.get(&k).await.unwrap(), before, "nothing changed");
    let resolved = operate(&*store, &k, token, resolve(response(201, Some(b"x"))), now)
        .await
        .expect("resolved");
    for action in [
        OperatorAction::Release,
        resolve(response(500, None)),
        purge(false),
    ] {
        assert_eq!(
            operate(&*store, &k, token, action, now).await,
            Err(OperatorRefusal::Changed {
                current: resolved.record.token
            }),
            "the same reading twice"
        );
    }
    assert_eq!(store.get(&k).await.unwrap(), Some(resolved.record));
    // Released, a second release on the same reading finds nothing.
    let r = id("s", "op-stale-released");
    let token = unknown_at(&*store, &r, now).await;
    operate(&*store, &r, token, OperatorAction::Release, now)
        .await
        .expect("released");
    assert!(operate(&*store, &r, token, OperatorAction::Release, now)
        .await
        .is_err());
}

/// Operator: purging with a tombstone erases the response, and the key
/// stays spent (`key-expired`, `key-reused` for another request); without
/// one the key is free. A live claim is never purged.
pub async fn operator_purge_erases_the_response(store: Arc<dyn Store>) {
    let now = real_now();
    let k = id("s", "op-purge-kept");
    let token = completed_at(&*store, &k, response(201, Some(b"secret")), now).await;
    let purged = operate(&*store, &k, token, purge(true), now)
        .await
        .expect("a completed record is purged");
    assert_eq!(purged.state, EffectiveState::Tombstone);
    let stored = store.get(&k).await.unwrap().expect("the tombstone is kept");
    if let Some(resp) = &stored.response {
        assert!(resp.body.is_none() && resp.headers.is_empty(), "{resp:?}");
    }
    let (outcome, record) = existing(&*store, claim_at(&k, "a", now)).await;
    assert_eq!(outcome, ExistingOutcome::Expired);
    assert!(record
        .response
        .is_none_or(|r| r.body.is_none() && r.headers.is_empty()));
    let (outcome, _) = existing(&*store, claim_at(&k, "b", now)).await;
    assert_eq!(outcome, ExistingOutcome::Mismatch);

    let g = id("s", "op-purge-gone");
    let token = completed_at(&*store, &g, response(201, Some(b"secret")), now).await;
    let purged = operate(&*store, &g, token, purge(false), now)
        .await
        .expect("purged");
    assert_eq!(purged.state, EffectiveState::Absent);
    let next = must_claim(&*store, claim_at(&g, "b", now)).await;
    assert!(next > token);

    let u = id("s", "op-purge-unknown");
    let token = unknown_at(&*store, &u, now).await;
    operate(&*store, &u, token, purge(true), now)
        .await
        .expect("an unknown outcome is purged");
    assert_eq!(
        existing(&*store, claim_at(&u, "a", now)).await.0,
        ExistingOutcome::Expired
    );

    let live = id("s", "op-purge-live");
    let token = must_claim(&*store, claim_at(&live, "a", now)).await;
    let before = store.get(&live).await.unwrap();
    for keep in [true, false] {
        let refused = operate(&*store, &live, token, purge(keep), now).await;
        assert!(is_wrong_state(&refused), "{refused:?}");
    }
    assert_eq!(store.get(&live).await.unwrap(), before);
}

/// Operator: no record, nothing to act on.
pub async fn operator_on_an_absent_key_is_not_found(store: Arc<dyn Store>) {
    let k = id("s", "op-never");
    for action in [
        OperatorAction::Release,
        resolve(response(201, Some(b"x"))),
        purge(true),
        purge(false),
    ] {
        assert_eq!(
            operate(&*store, &k, 1, action, real_now()).await,
            Err(OperatorRefusal::NotFound)
        );
    }
    assert!(
        store.get(&k).await.unwrap().is_none(),
        "nothing was written"
    );
}

/// Listing: the records in the state asked for, in (claim time, scope,
/// key) order, page after page with no duplicate and no gap; completed and
/// released records are not listed.
pub async fn list_pages_through_unsettled_records_in_claim_order(store: Arc<dyn Store>) {
    let base = real_now();
    let mut unknown = Vec::new();
    let mut live = Vec::new();
    for i in 0..11u64 {
        // Pairs share a claim time (on the callers' clock): the identity
        // breaks the tie. Scopes interleave so scope ordering matters.
        let at = base.plus(Duration::from_millis(i / 2));
        let k = id(["b", "a"][(i % 2) as usize], &format!("list-{i:02}"));
        if i < 7 {
            unknown_at(&*store, &k, at).await;
            unknown.push(k);
        } else {
            must_claim(&*store, claim_at(&k, "a", at)).await;
            live.push(k);
        }
    }
    completed_at(
        &*store,
        &id("a", "list-done"),
        response(201, Some(b"x")),
        base,
    )
    .await;
    let gone = id("a", "list-released");
    let token = must_claim(&*store, claim_at(&gone, "a", base)).await;
    assert_eq!(store.release(&gone, token).await.unwrap(), Write::Written);

    for (state, expected) in [
        (Unsettled::OutcomeUnknown, &unknown),
        (Unsettled::InFlight, &live),
    ] {
        let mut seen: Vec<Record> = Vec::new();
        let mut after = None;
        for _ in 0..10 {
            let page = store
                .list(ListQuery {
                    state,
                    after: after.clone(),
                    limit: 3,
                    now: real_now(),
                })
                .await
                .expect("list");
            assert!(page.len() <= 3, "{state:?}: a page of {}", page.len());
            let Some(last) = page.last() else { break };
            after = Some(ListCursor::after(last));
            seen.extend(page);
        }
        let keys: Vec<_> = seen.iter().map(|r| (r.claimed_at, r.id.clone())).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(keys, sorted, "{state:?}: oldest first, no duplicates");
        let mut ids: Vec<_> = seen.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(ids, want, "{state:?}: every record, nothing else");
        assert!(seen.iter().all(|r| state.holds(r, real_now())));
    }
    let all = store
        .list(ListQuery {
            state: Unsettled::OutcomeUnknown,
            after: None,
            limit: 100,
            now: real_now(),
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 7, "one page holds them all");
    let none = store
        .list(ListQuery {
            state: Unsettled::OutcomeUnknown,
            after: Some(ListCursor::after(&all[6])),
            limit: 100,
            now: real_now(),
        })
        .await
        .expect("list");
    assert!(none.is_empty(), "nothing after the last: {none:?}");
}

/// Operator: many operators acting on one reading at once: exactly one is
/// applied, every other is told the record changed.
pub async fn operator_race_has_exactly_one_winner(store: Arc<dyn Store>) {
    for (round, action) in [resolve(response(201, Some(b"x"))), OperatorAction::Release]
        .into_iter()
        .enumerate()
    {
        let k = id("s", &format!("op-race-{round}"));
        let token = unknown_at(&*store, &k, real_now()).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (store, k, barrier, action) =
                    (store.clone(), k.clone(), barrier.clone(), action.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.operate(&k, token, action, real_now()).await.unwrap()
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(record) => winners.push(record),
                Err(refusal) => losers.push(refusal),
            }
        }
        assert_eq!(winners.len(), 1, "{}: exactly one applies", action.name());
        let current = winners[0].record.token;
        for refusal in losers {
            // Every loser is told the record changed, and to what token.
            assert_eq!(
                refusal,
                OperatorRefusal::Changed { current },
                "{}",
                action.name()
            );
        }
    }
}

/// Operator, callers' clock: a claim whose lease ran out is listed as
/// `outcome-unknown` (no longer in flight) and may be released or resolved;
/// its owner coming back late is fenced and the resolution stands.
pub async fn operator_settles_a_claim_whose_lease_ran_out(store: Arc<dyn Store>) {
    let during = T0.plus(Duration::from_secs(5));
    let after = T0.plus(Duration::from_secs(11));
    let listed = |state, now| {
        let store = store.clone();
        async move {
            store
                .list(ListQuery {
                    state,
                    after: None,
                    limit: 10,
                    now,
                })
                .await
                .expect("list")
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    let k = id("s", "op-lease-released");
    let r = id("s", "op-lease-resolved");
    let released_token = must_claim(&*store, claim_at(&k, "a", T0)).await;
    let token = must_claim(&*store, claim_at(&r, "a", T0)).await;
    assert_eq!(
        listed(Unsettled::InFlight, during).await,
        vec![k.clone(), r.clone()]
    );
    assert!(listed(Unsettled::OutcomeUnknown, during).await.is_empty());
    let refused = operate(&*store, &k, released_token, OperatorAction::Release, during).await;
    assert!(is_wrong_state(&refused), "live: {refused:?}");
    assert_eq!(
        listed(Unsettled::OutcomeUnknown, after).await,
        vec![k.clone(), r.clone()]
    );
    assert!(listed(Unsettled::InFlight, after).await.is_empty());

    operate(&*store, &k, released_token, OperatorAction::Release, after)
        .await
        .expect("a lapsed lease is released");
    let next = must_claim(&*store, claim_at(&k, "a", after)).await;
    assert!(next > released_token);

    let resp = response(202, Some(b"resolved"));
    operate(&*store, &r, token, resolve(resp.clone()), after)
        .await
        .expect("a lapsed lease is resolved");
    let late = T0.plus(Duration::from_secs(12));
    assert_eq!(
        complete(&*store, &r, token, response(500, Some(b"late")), late).await,
        Write::Fenced
    );
    assert_eq!(
        store
            .renew(&r, token, late, late.plus(Duration::from_secs(10)))
            .await
            .unwrap(),
        Write::Fenced
    );
    let (outcome, record) = existing(&*store, claim_at(&r, "a", late)).await;
    assert_eq!(outcome, ExistingOutcome::Replay);
    assert_eq!(record.response, Some(resp));
    // Replayed for its retention from the decision, then key-expired.
    let (outcome, _) = existing(
        &*store,
        claim_at(&r, "a", after.plus(Duration::from_secs(99))),
    )
    .await;
    assert_eq!(outcome, ExistingOutcome::Replay);
    let (outcome, _) = existing(
        &*store,
        claim_at(&r, "a", after.plus(Duration::from_secs(100))),
    )
    .await;
    assert_eq!(outcome, ExistingOutcome::Expired);
    assert!(listed(Unsettled::OutcomeUnknown, late).await.is_empty());
}

/// The lease holder: the name a claim gives is stored with the record it
/// wins, read back by `get`, a duplicate's answer and the listing; a
/// duplicate never replaces it, the owner's completion keeps it, and the
/// next claim after a release stores its own. A claim without a name
/// stores none.
pub async fn the_lease_holder_is_stored_with_each_claim(store: Arc<dyn Store>) {
    let now = real_now();
    let named =
        |rid: &RecordId, holder: &str| claim_at(rid, "a", now).with_holder(Some(Arc::from(holder)));
    let holder = |r: &Record| r.holder.as_deref().map(str::to_owned);
    let k = id("s", "held");
    let claim = named(&k, "gw-a:4242");
    let token = must_claim(&*store, claim.clone()).await;
    let stored = store.get(&k).await.expect("get").expect("claimed");
    assert_eq!(holder(&stored).as_deref(), Some("gw-a:4242"));
    // The owner's own retry (its reply was lost) is still its claim.
    assert_eq!(must_claim(&*store, claim).await, token);
    let (_, seen) = existing(&*store, named(&k, "gw-b:1")).await;
    assert_eq!(
        holder(&seen).as_deref(),
        Some("gw-a:4242"),
        "a duplicate learns who holds the lease, and does not take it"
    );
    let listed = store
        .list(ListQuery {
            state: Unsettled::InFlight,
            after: None,
            limit: 100,
            now: real_now(),
        })
        .await
        .expect("list");
    let row = listed.iter().find(|r| r.id == k).expect("listed in flight");
    assert_eq!(holder(row).as_deref(), Some("gw-a:4242"));
    assert_eq!(store.release(&k, token).await.unwrap(), Write::Written);
    let token = must_claim(&*store, named(&k, "gw-ü-b:7")).await;
    assert_eq!(
        complete(&*store, &k, token, response(201, Some(b"ok")), now).await,
        Write::Written
    );
    let done = store.get(&k).await.expect("get").expect("completed");
    assert_eq!(
        holder(&done).as_deref(),
        Some("gw-ü-b:7"),
        "the instance that executed it, kept with the outcome"
    );
    let anonymous = id("s", "anonymous");
    must_claim(&*store, claim_at(&anonymous, "a", now)).await;
    let stored = store.get(&anonymous).await.expect("get").expect("claimed");
    assert_eq!(stored.holder, None);
}
