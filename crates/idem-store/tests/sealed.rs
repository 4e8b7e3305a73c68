//! `SealedStore` (encryption at rest of stored responses) over every
//! engine: the shared conformance suite through the wrapper on memory, a
//! SQLite file, PostgreSQL and Redis, then what the wrapper itself must
//! show on each of them (rotation, tampering, records that are not
//! replayable, records from before encryption), that a SQLite file holds no
//! plaintext, and that key configuration errors say what is wrong.
//!
//! PostgreSQL and Redis are the servers the other engine suites use
//! (`IDEM_TEST_POSTGRES_URL`, `IDEM_TEST_REDIS_URL`); without them those
//! tests skip (and say how to start them), with `CI=true` they fail.
#![cfg(feature = "sqlite")]

mod support;

use bytes::Bytes;
use idem_core::decision::ExistingOutcome;
use idem_core::operator::OperatorAction;
use idem_core::*;
use idem_store::{
    is_sealed, Claim, Completion, KeyPosition, KeyRing, KeyRingError, MemoryStore, SealedStore,
    SqliteOptions, SqliteStore, Store, Write, SEALED_HEADER,
};
use std::sync::Arc;
use support::{existing, must_claim, retention, Cleaned, T0};

const KEY_A: [u8; 32] = bytes_from(0);
const KEY_B: [u8; 32] = bytes_from(32);
const KEY_A_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B_B64: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const KEY_C_B64: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";

/// 32 consecutive bytes from `start`.
const fn bytes_from(start: u8) -> [u8; 32] {
    let mut key = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        key[i] = start + i as u8;
        i += 1;
    }
    key
}

const CARD: &str = "4242424242424242";
const COOKIE: &str = "session=secret-token";

// ---------------------------------------------------------------- engines

/// A SQLite store on a fresh file, its directory removed after it closes.
fn sqlite() -> Arc<dyn Store> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        SqliteStore::open(&dir.path().join("idem.db"), SqliteOptions::default()).expect("open");
    Arc::new(Cleaned::new(store, move || drop(dir)))
}

#[cfg(feature = "postgres")]
mod pg {
    use super::support;
    use idem_store::{PostgresOptions, PostgresStore, Store};
    use idem_testkit::postgres_url as url;
    use std::sync::Arc;
    use support::postgres::{drop_schema, server_up};

    /// A PostgreSQL store in a fresh schema (dropped afterwards), or `None`
    /// when there is no server.
    pub(crate) async fn fresh() -> Option<Arc<dyn Store>> {
        if !server_up().await {
            return None;
        }
        let schema = support::unique_name("idem_sealed");
        // The suite moves time by passing readings: the callers' clock.
        let options = PostgresOptions {
            pool_size: 8,
            schema: Some(schema.clone()),
            clock: idem_store::StoreClock::Caller,
            ..Default::default()
        };
        let store = PostgresStore::open(&url(), options)
            .await
            .expect("open a store in a fresh schema");
        Some(Arc::new(support::Cleaned::new(store, move || {
            drop_schema(schema)
        })))
    }
}

#[cfg(feature = "redis")]
mod rd {
    use super::support;
    use idem_store::{RedisOptions, RedisStore, Store};
    use idem_testkit::redis_url as url;
    use std::sync::Arc;
    use support::redis::{delete_prefix, server_up};

    /// A Redis store under a fresh prefix (deleted afterwards), or `None`
    /// when there is no server.
    pub(crate) async fn fresh() -> Option<Arc<dyn Store>> {
        if !server_up().await {
            return None;
        }
        let prefix = support::unique_name("idem-sealed");
        // The suite moves time by passing readings: the callers' clock.
        let options = RedisOptions {
            prefix: prefix.clone(),
            clock: idem_store::StoreClock::Caller,
            ..Default::default()
        };
        let store = RedisStore::open(&url(), options)
            .await
            .expect("open a store");
        Some(Arc::new(support::Cleaned::new(store, move || {
            delete_prefix(vec![url()], prefix)
        })))
    }
}

/// `inner` behind the wrapper, sealing under key A.
fn sealed(inner: Arc<dyn Store>) -> Arc<dyn Store> {
    Arc::new(SealedStore::new(inner, KeyRing::new(KEY_A)))
}

// ------------------------------------------------ the conformance suite

mod conformance_memory {
    idem_store::conformance_tests!(async {
        super::sealed(std::sync::Arc::new(idem_store::MemoryStore::new()))
    });
}

mod conformance_sqlite {
    idem_store::conformance_tests!(async { super::sealed(super::sqlite()) });
}

#[cfg(feature = "postgres")]
mod conformance_postgres {
    idem_store::conformance_tests!(match super::pg::fresh().await {
        Some(store) => std::future::ready(super::sealed(store)),
        None => return,
    });
}

#[cfg(feature = "redis")]
mod conformance_redis {
    idem_store::conformance_tests!(match super::rd::fresh().await {
        Some(store) => std::future::ready(super::sealed(store)),
        None => return,
    });
}

// --------------------------------------------- the wrapper's own checks

fn id(key: &str) -> RecordId {
    RecordId {
        scope: Scope::from_stored("tenant-a"),
        key: IdempotencyKey::parse(key.as_bytes()).expect("valid key"),
    }
}

fn claim(rid: &RecordId) -> Claim {
    let fp = Fingerprint::compute(&FingerprintInput {
        method: "POST",
        path: "/charges",
        query: None,
        content_type: Some(b"application/json"),
        extra_headers: &[],
        body: b"{}",
    });
    Claim::new(rid.clone(), fp, T0, &retention(), false)
}

/// A response with secrets in a header and the body.
fn secret_response() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            (
                "content-type".into(),
                Bytes::from_static(b"application/json"),
            ),
            ("set-cookie".into(), Bytes::from(COOKIE)),
            ("x-binary".into(), Bytes::from_static(b"\x00\xff\r\n")),
            ("x-multi".into(), Bytes::from_static(b"1")),
            ("x-multi".into(), Bytes::from_static(b"2")),
            ("x-empty".into(), Bytes::new()),
        ],
        body: Some(Bytes::from(format!(
            "{{\"id\":\"ch_1\",\"card\":\"{CARD}\",\"raw\":\"\u{0}\"}}"
        ))),
    }
}

/// Claims `rid` and completes it with `response`, through `store`.
async fn store_response(store: &dyn Store, rid: &RecordId, response: StoredResponse) {
    let token = must_claim(store, claim(rid)).await;
    let c = Completion::new(response, T0, &retention());
    assert_eq!(
        store.complete(rid, token, c).await.expect("complete"),
        Write::Written
    );
}

/// What the engine holds for `rid` (bypassing the wrapper).
async fn raw(inner: &dyn Store, rid: &RecordId) -> StoredResponse {
    inner
        .get(rid)
        .await
        .expect("get")
        .expect("record")
        .response
        .expect("response")
}

/// A record that must read as outcome-unknown through `store`: claim
/// answers Unknown (also with `upstream_dedupes`, so it is never executed
/// again) and get says OutcomeUnknown without a response.
async fn assert_unknown(store: &dyn Store, rid: &RecordId, what: &str) {
    let (outcome, record) = existing(store, claim(rid)).await;
    assert_eq!(outcome, ExistingOutcome::Unknown, "{what}");
    assert_eq!(record.state, RecordState::OutcomeUnknown, "{what}");
    assert_eq!(record.response, None, "{what}");
    let mut again = claim(rid);
    again.reclaim_unknown = true;
    let (outcome, _) = existing(store, again).await;
    assert_eq!(
        outcome,
        ExistingOutcome::Unknown,
        "{what}: never re-executed"
    );
    let record = store.get(rid).await.unwrap().expect("record");
    assert_eq!(record.state, RecordState::OutcomeUnknown, "{what}");
    assert_eq!(record.response, None, "{what}");
}

/// Round trip through the wrapper; the engine holds ciphertext only.
async fn round_trip_is_exact_and_the_engine_sees_ciphertext(inner: Arc<dyn Store>) {
    let store = SealedStore::new(inner.clone(), KeyRing::new(KEY_A));
    let rid = id("round-trip");
    store_response(&store, &rid, secret_response()).await;

    let (outcome, record) = existing(&store, claim(&rid)).await;
    assert_eq!(outcome, ExistingOutcome::Replay);
    assert_eq!(record.state, RecordState::Completed);
    assert_eq!(record.response, Some(secret_response()));
    let got = store.get(&rid).await.unwrap().unwrap();
    assert_eq!(got.response, Some(secret_response()));

    let stored = raw(&*inner, &rid).await;
    assert!(is_sealed(&stored));
    assert_eq!(stored.status, 201, "the status stays in clear");
    assert_eq!(stored.headers.len(), 1);
    assert_eq!(stored.headers[0].0, SEALED_HEADER);
    let value = std::str::from_utf8(&stored.headers[0].1).unwrap();
    assert!(
        value.starts_with(&format!("v1.{}.", store.keys().current_key_id())),
        "{value}"
    );
    let body = stored.body.unwrap();
    assert_eq!(body.len(), 24 + secret_response().body.unwrap().len() + 16);
    assert!(!contains(&body, CARD.as_bytes()));
    assert!(!contains(value.as_bytes(), COOKIE.as_bytes()));
}

/// An operator's resolution is sealed like a completion: the engine holds
/// ciphertext only, the operator gets the plaintext back, and retries
/// replay it exactly.
async fn resolved_responses_are_sealed_and_replay_in_plaintext(inner: Arc<dyn Store>) {
    let store = SealedStore::new(inner.clone(), KeyRing::new(KEY_A));
    let rid = id("resolved");
    let token = must_claim(&store, claim(&rid)).await;
    assert_eq!(
        store.mark_unknown(&rid, token, T0).await.expect("mark"),
        Write::Written
    );
    let resolve = OperatorAction::Resolve {
        response: secret_response(),
        retention: retention().retention,
        tombstone_retention: retention().tombstone_retention,
    };
    let written = store
        .operate(&rid, token, resolve, T0)
        .await
        .expect("operate")
        .expect("an unknown outcome is resolved");
    assert_eq!(written.record.response, Some(secret_response()));

    let stored = raw(&*inner, &rid).await;
    assert!(is_sealed(&stored), "{stored:?}");
    assert_eq!(stored.headers.len(), 1);
    let body = stored.body.expect("a sealed body");
    assert!(!contains(&body, CARD.as_bytes()));
    assert!(!contains(&stored.headers[0].1, COOKIE.as_bytes()));

    let (outcome, record) = existing(&store, claim(&rid)).await;
    assert_eq!(outcome, ExistingOutcome::Replay);
    assert_eq!(record.response, Some(secret_response()));
    // A purge through the wrapper leaves nothing to open: key-expired.
    let purged = store
        .operate(
            &rid,
            written.record.token,
            OperatorAction::Purge {
                keep_tombstone: true,
            },
            T0,
        )
        .await
        .expect("operate")
        .expect("purged");
    assert_eq!(purged.record.response, None);
    assert_eq!(
        existing(&store, claim(&rid)).await.0,
        ExistingOutcome::Expired
    );
}

/// Sealed under A: a ring (current B, older A) replays it and seals new
/// records under B; a ring of B alone answers outcome-unknown.
async fn rotation_opens_with_older_keys_only(inner: Arc<dyn Store>) {
    let under_a = SealedStore::new(inner.clone(), KeyRing::new(KEY_A));
    let rid = id("rotation");
    store_response(&under_a, &rid, secret_response()).await;

    let rotating = SealedStore::new(
        inner.clone(),
        KeyRing::from_base64(KEY_B_B64, &[KEY_A_B64]).unwrap(),
    );
    let (outcome, record) = existing(&rotating, claim(&rid)).await;
    assert_eq!(outcome, ExistingOutcome::Replay);
    assert_eq!(record.response, Some(secret_response()));

    // New completions are sealed under B, which the ring of A cannot open.
    let newer = id("rotation-new");
    store_response(&rotating, &newer, secret_response()).await;
    let value = raw(&*inner, &newer).await.headers[0].1.clone();
    let b_id = rotating.keys().current_key_id().to_owned();
    assert_ne!(b_id, under_a.keys().current_key_id());
    assert!(value.starts_with(format!("v1.{b_id}.").as_bytes()));
    assert_unknown(&under_a, &newer, "sealed under B, opened with A").await;

    let only_b = SealedStore::new(inner.clone(), KeyRing::new(KEY_B));
    assert_unknown(&only_b, &rid, "sealed under A, opened with B alone").await;
    // The record itself is untouched: the rotating ring still replays it.
    assert_eq!(
        existing(&rotating, claim(&rid)).await.0,
        ExistingOutcome::Replay
    );
}

/// Altered, truncated, moved or spliced ciphertexts read as
/// outcome-unknown, never as a replay.
async fn tampered_ciphertexts_read_as_unknown(inner: Arc<dyn Store>) {
    let keys = KeyRing::new(KEY_A);
    let store = SealedStore::new(inner.clone(), keys.clone());
    let original = secret_response();
    let rid = |case: &str| id(&format!("tamper-{case}"));

    type Tamper = fn(&RecordId, &KeyRing, StoredResponse) -> StoredResponse;
    let cases: Vec<(&str, Tamper)> = vec![
        ("body-ciphertext", |_, _, mut s| {
            s.body = Some(flip(s.body.as_ref().unwrap(), 30));
            s
        }),
        ("body-nonce", |_, _, mut s| {
            s.body = Some(flip(s.body.as_ref().unwrap(), 0));
            s
        }),
        ("body-tag", |_, _, mut s| {
            let body = s.body.as_ref().unwrap();
            s.body = Some(flip(body, body.len() - 1));
            s
        }),
        ("body-truncated", |_, _, mut s| {
            s.body = Some(s.body.as_ref().unwrap().slice(..20));
            s
        }),
        ("body-dropped-to-empty", |_, _, mut s| {
            s.body = Some(Bytes::new());
            s
        }),
        ("header-character", |_, _, mut s| {
            let value = &s.headers[0].1;
            let at = value.len() / 2;
            let mut v = value.to_vec();
            v[at] = if v[at] == b'A' { b'B' } else { b'A' };
            s.headers[0].1 = Bytes::from(v);
            s
        }),
        ("header-key-id", |_, _, mut s| {
            let mut v = s.headers[0].1.to_vec();
            v[3] = if v[3] == b'0' { b'1' } else { b'0' };
            s.headers[0].1 = Bytes::from(v);
            s
        }),
        ("header-garbage", |_, _, mut s| {
            s.headers[0].1 = Bytes::from_static(b"v1.nothex!.%%%");
            s
        }),
        ("header-extra", |_, _, mut s| {
            s.headers.push(("x-added".into(), Bytes::from_static(b"1")));
            s
        }),
        ("status-changed", |_, _, mut s| {
            s.status = 200;
            s
        }),
        ("moved-from-another-record", |_, keys, _| {
            keys.seal(&id("some-other-record"), &secret_response())
                .unwrap()
        }),
        ("moved-from-another-scope", |rid, keys, _| {
            let other = RecordId {
                scope: Scope::from_stored("tenant-b"),
                key: rid.key.clone(),
            };
            keys.seal(&other, &secret_response()).unwrap()
        }),
        ("body-spliced-from-another-seal", |rid, keys, mut s| {
            s.body = keys.seal(rid, &secret_response()).unwrap().body;
            s
        }),
    ];
    for (case, tamper) in cases {
        let r = rid(case);
        let sealed = keys.seal(&r, &original).unwrap();
        assert_eq!(keys.open(&r, &sealed).as_ref(), Ok(&original));
        let tampered = tamper(&r, &keys, sealed);
        store_response(&*inner, &r, tampered).await;
        assert_unknown(&store, &r, case).await;
    }
    // A ciphertext moved to the other field: the body's ciphertext put in
    // the header, and the headers' ciphertext put in the body.
    let r = rid("fields-swapped");
    let sealed = keys.seal(&r, &original).unwrap();
    let value = std::str::from_utf8(&sealed.headers[0].1)
        .unwrap()
        .to_owned();
    let (prefix, encoded) = value.split_at("v1.00000000.".len());
    let headers_ciphertext = decode_b64url(encoded);
    let body_ciphertext = sealed.body.clone().unwrap();
    let swapped = StoredResponse {
        status: sealed.status,
        headers: vec![(
            SEALED_HEADER.into(),
            Bytes::from(format!("{prefix}{}", encode_b64url(&body_ciphertext))),
        )],
        body: Some(Bytes::from(headers_ciphertext)),
    };
    store_response(&*inner, &r, swapped).await;
    assert_unknown(&store, &r, "fields swapped").await;
}

/// A record stored without its body stays "not replayable", with its
/// status, through the wrapper; the engine still sees `None`.
async fn not_replayable_stays_not_replayable(inner: Arc<dyn Store>) {
    let store = SealedStore::new(inner.clone(), KeyRing::new(KEY_A));
    let rid = id("too-large");
    let mut response = secret_response();
    response.status = 200;
    response.body = None;
    store_response(&store, &rid, response.clone()).await;
    let (outcome, record) = existing(&store, claim(&rid)).await;
    assert_eq!(outcome, ExistingOutcome::NotReplayable { status: 200 });
    assert_eq!(record.response, Some(response));
    let stored = raw(&*inner, &rid).await;
    assert!(is_sealed(&stored));
    assert_eq!(stored.body, None);

    // And one whose headers do not open is unknown, not "not replayable".
    let other = SealedStore::new(inner.clone(), KeyRing::new(KEY_B));
    assert_unknown(&other, &rid, "not replayable, unknown key").await;
}

/// Records written before encryption was turned on are returned as they
/// were stored, unless the wrapper requires sealed records.
async fn records_from_before_encryption_are_returned_as_stored(inner: Arc<dyn Store>) {
    let rid = id("legacy");
    store_response(&*inner, &rid, secret_response()).await;
    let store = SealedStore::new(inner.clone(), KeyRing::new(KEY_A));
    let (outcome, record) = existing(&store, claim(&rid)).await;
    assert_eq!(outcome, ExistingOutcome::Replay);
    assert_eq!(record.response, Some(secret_response()));

    let strict = SealedStore::new(inner.clone(), KeyRing::new(KEY_A)).require_sealed(true);
    assert_unknown(&strict, &rid, "unsealed record, sealed required").await;
    // Sealed records still replay under the strict wrapper.
    let fresh = id("strict-fresh");
    store_response(&strict, &fresh, secret_response()).await;
    assert_eq!(
        existing(&strict, claim(&fresh)).await.0,
        ExistingOutcome::Replay
    );
}

/// Large bodies (sealed and opened off the worker thread) round-trip, and
/// tampering with them is caught too.
async fn large_bodies_round_trip_and_tampering_is_caught(inner: Arc<dyn Store>) {
    let keys = KeyRing::new(KEY_A);
    let store = SealedStore::new(inner.clone(), keys.clone());
    for size in [64 * 1024 - 1, 64 * 1024, 1024 * 1024] {
        let rid = id(&format!("large-{size}"));
        let mut response = secret_response();
        response.body = Some(Bytes::from(
            (0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
        ));
        store_response(&store, &rid, response.clone()).await;
        let (outcome, record) = existing(&store, claim(&rid)).await;
        assert_eq!(outcome, ExistingOutcome::Replay, "{size}");
        assert_eq!(record.response, Some(response.clone()), "{size}");
        assert_eq!(
            store.get(&rid).await.unwrap().unwrap().response,
            Some(response.clone())
        );

        let forged = id(&format!("large-forged-{size}"));
        let mut sealed = keys.seal(&forged, &response).unwrap();
        sealed.body = Some(flip(sealed.body.as_ref().unwrap(), size / 2));
        store_response(&*inner, &forged, sealed).await;
        assert_unknown(&store, &forged, "a large body altered").await;
    }
}

/// Expands to one test per wrapper check above, on the engine `$make`
/// builds (an expression yielding `Option<Arc<dyn Store>>`; `None` skips).
macro_rules! wrapper_checks {
    ($make:expr) => {
        wrapper_checks!(@each $make;
            round_trip_is_exact_and_the_engine_sees_ciphertext,
            rotation_opens_with_older_keys_only,
            tampered_ciphertexts_read_as_unknown,
            not_replayable_stays_not_replayable,
            records_from_before_encryption_are_returned_as_stored,
            large_bodies_round_trip_and_tampering_is_caught,
            resolved_responses_are_sealed_and_replay_in_plaintext,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(inner): Option<std::sync::Arc<dyn idem_store::Store>> = $make else {
                    return;
                };
                super::$name(inner).await;
            }
        )*
    };
}

mod on_memory {
    wrapper_checks!(Some(std::sync::Arc::new(idem_store::MemoryStore::new())));
}

mod on_sqlite {
    wrapper_checks!(Some(super::sqlite()));
}

#[cfg(feature = "postgres")]
mod on_postgres {
    wrapper_checks!(super::pg::fresh().await);
}

#[cfg(feature = "redis")]
mod on_redis {
    wrapper_checks!(super::rd::fresh().await);
}

// ------------------------------------------------- SQLite files on disk

/// Completes the secret response in a fresh SQLite file (through the
/// wrapper or not) and returns which secrets the database files hold, read
/// while the store is open and again after it closed.
async fn secrets_on_disk(seal: bool) -> Vec<&'static str> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let engine: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let store: Arc<dyn Store> = if seal { sealed(engine) } else { engine };
    let rid = id("on-disk");
    store_response(&*store, &rid, secret_response()).await;
    assert_eq!(
        existing(&*store, claim(&rid)).await.1.response,
        Some(secret_response())
    );
    let mut found = Vec::new();
    let scan = |found: &mut Vec<&'static str>| {
        let mut files = 0;
        for name in ["idem.db", "idem.db-wal", "idem.db-shm"] {
            let Ok(bytes) = std::fs::read(dir.path().join(name)) else {
                continue;
            };
            files += 1;
            for secret in [CARD, COOKIE] {
                if contains(&bytes, secret.as_bytes()) && !found.contains(&secret) {
                    found.push(secret);
                }
            }
        }
        assert!(files >= 1, "no database file to read");
    };
    scan(&mut found);
    drop(store); // closes the file (a checkpoint moves the WAL into it)
    scan(&mut found);
    found.sort();
    found
}

#[tokio::test]
async fn sqlite_files_hold_no_plaintext_when_sealed() {
    assert_eq!(
        secrets_on_disk(false).await,
        vec![CARD, COOKIE], // sorted: digits before letters
        "without the wrapper the secrets are on disk (so this test can fail)"
    );
    assert_eq!(secrets_on_disk(true).await, Vec::<&str>::new());
}

#[tokio::test]
async fn a_byte_flipped_in_the_sqlite_file_reads_as_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let engine: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let store = SealedStore::new(engine, KeyRing::new(KEY_A));
    let rid = id("flipped");
    store_response(&store, &rid, secret_response()).await;
    assert_eq!(
        existing(&store, claim(&rid)).await.0,
        ExistingOutcome::Replay
    );

    let raw = rusqlite::Connection::open(&path).unwrap();
    let body: Vec<u8> = raw
        .query_row(
            "SELECT body FROM idem_records WHERE key = ?1",
            ["flipped"],
            |r| r.get(0),
        )
        .unwrap();
    let flipped = flip(&Bytes::from(body), 40);
    let changed = raw
        .execute(
            "UPDATE idem_records SET body = ?1 WHERE key = ?2",
            rusqlite::params![flipped.to_vec(), "flipped"],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(raw);
    assert_unknown(&store, &rid, "a byte flipped on disk").await;
}

// --------------------------------------------------------- key rings

#[test]
fn key_ring_errors_name_the_key_and_the_problem() {
    let err = |current: &str, older: &[&str]| {
        KeyRing::from_base64(current, older).expect_err("a bad ring")
    };

    let e = err("not base64!", &[]);
    assert!(
        matches!(
            e,
            KeyRingError::NotBase64 {
                position: KeyPosition::Current,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().starts_with("the current key is not base64"),
        "{e}"
    );
    assert!(e.to_string().contains("character 4 (' ')"), "{e}");

    let e = err(KEY_A_B64, &[KEY_B_B64, "AAAAAAAAAAAAAAAAAAAAAA=="]);
    assert_eq!(
        e,
        KeyRingError::WrongLength {
            position: KeyPosition::Older(1),
            len: 16
        }
    );
    assert!(
        e.to_string().contains("older key #2") && e.to_string().contains("16 bytes"),
        "{e}"
    );

    let urlsafe = KEY_A_B64.replace('A', "-");
    let e = err(&urlsafe, &[]);
    assert!(e.to_string().contains("URL-safe"), "{e}");

    let e = err("   ", &[]);
    assert_eq!(
        e,
        KeyRingError::Empty {
            position: KeyPosition::Current
        }
    );
    assert!(e.to_string().contains("the current key is empty"), "{e}");

    let e = err(KEY_A_B64, &["AAEC"]);
    assert!(
        e.to_string().contains("older key #1") && e.to_string().contains("3 bytes"),
        "{e}"
    );

    let e = err(KEY_A_B64, &[KEY_B_B64, KEY_A_B64]);
    assert!(
        matches!(
            e,
            KeyRingError::Duplicate {
                position: KeyPosition::Older(1),
                first: KeyPosition::Current,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("given twice"), "{e}");

    // Padding optional, surrounding whitespace (a file's newline) ignored.
    let unpadded = KEY_A_B64.trim_end_matches('=');
    let ring = KeyRing::from_base64(&format!("{unpadded}\n"), &[]).unwrap();
    assert_eq!(ring.current_key_id(), KeyRing::new(KEY_A).current_key_id());
    assert!(KeyRing::with_older(KEY_A, &[KEY_A]).is_err());
}

#[test]
fn key_ring_debug_shows_key_ids_only() {
    let ring = KeyRing::from_base64(KEY_C_B64, &[KEY_A_B64, KEY_B_B64]).unwrap();
    let debug = format!("{ring:?}");
    for secret in [KEY_A_B64, KEY_B_B64, KEY_C_B64] {
        assert!(!debug.contains(secret.trim_end_matches('=')), "{debug}");
    }
    assert!(!debug.contains(&hex::encode(bytes_from(64))), "{debug}");
    assert!(debug.contains(ring.current_key_id()), "{debug}");
    for older in ring.older_key_ids() {
        assert!(debug.contains(older), "{debug}");
    }
    let store = SealedStore::new(Arc::new(MemoryStore::new()), ring);
    let debug = format!("{store:?}");
    assert!(
        debug.contains("memory") && !debug.contains(KEY_C_B64),
        "{debug}"
    );
}

/// A failure to open is logged with the key and key id, never with the
/// plaintext.
#[test]
fn failures_are_logged_without_plaintext() {
    let logs = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let writer = {
        let logs = logs.clone();
        move || LogWriter(logs.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let inner: Arc<dyn Store> = Arc::new(MemoryStore::new());
            let under_a = SealedStore::new(inner.clone(), KeyRing::new(KEY_A));
            let rid = id("logged");
            store_response(&under_a, &rid, secret_response()).await;
            let under_b = SealedStore::new(inner, KeyRing::new(KEY_B));
            assert_unknown(&under_b, &rid, "unknown key").await;
        })
    });
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let a_id = KeyRing::new(KEY_A).current_key_id().to_owned();
    assert!(logs.contains("ERROR"), "{logs}");
    assert!(logs.contains("key=logged"), "{logs}");
    assert!(
        logs.contains(&format!("key_id=\"{a_id}\"")) || logs.contains(&format!("key_id={a_id}")),
        "{logs}"
    );
    assert!(logs.contains("not hold"), "{logs}");
    assert!(!logs.contains(CARD) && !logs.contains(COOKIE), "{logs}");
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ------------------------------------------------------------- helpers

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn flip(bytes: &Bytes, at: usize) -> Bytes {
    let mut v = bytes.to_vec();
    v[at] ^= 0x01;
    Bytes::from(v)
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (the tests' own, independent of the crate's).
fn encode_b64url(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(B64URL[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn decode_b64url(text: &str) -> Vec<u8> {
    let values: Vec<u32> = text
        .bytes()
        .map(|c| B64URL.iter().position(|&a| a == c).expect("base64url") as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in values.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &v)| n | v << (18 - 6 * i));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[test]
fn the_tests_base64url_is_right() {
    for len in 0..10 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
        assert_eq!(decode_b64url(&encode_b64url(&bytes)), bytes);
    }
    assert_eq!(encode_b64url(b"\xfb\xff"), "-_8");
}

#[tokio::test]
async fn large_bodies_on_a_current_thread_runtime() {
    large_bodies_round_trip_and_tampering_is_caught(Arc::new(MemoryStore::new())).await;
}
