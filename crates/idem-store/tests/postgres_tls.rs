//! TLS to PostgreSQL, against private servers each test starts (initdb
//! into a temporary folder, `ssl = on` with a certificate signed by a CA
//! made in the test, or `ssl = off`), with `pg_hba.conf` rules that admit
//! TCP clients only over TLS (`hostssl`), only without (`hostnossl`), or
//! either: the contract holds over TLS, each `sslmode` checks what libpq's
//! does, a wrong CA or host is refused with a message naming the parameter,
//! and `require` and stronger never fall back to plaintext.
//!
//! Without the server binaries (`/usr/lib/postgresql/*/bin`) the tests skip;
//! under `CI=true` they fail instead.
#![cfg(feature = "postgres")]

mod support;

use idem_core::*;
use idem_store::{Completion, PostgresOptions, PostgresStore, Store, StoreClock, Write};
use idem_testkit::tls::TestCa as Ca;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::pg_server::PgServer;
use support::{chain, claim, id, must_claim, retention, unique_name, T0};

/// Admits TCP clients only over TLS: a connection that works is encrypted.
const TLS_ONLY: &[&str] = &["hostssl all all 127.0.0.1/32 trust"];
/// Admits TCP clients only without TLS.
const PLAIN_ONLY: &[&str] = &["hostnossl all all 127.0.0.1/32 trust"];
/// Admits TCP clients either way.
const EITHER: &[&str] = &["host all all 127.0.0.1/32 trust"];

/// Short bounds, so refusals show they are quick; a fresh schema each
/// time; the callers' clock (the conformance behaviours move time).
fn options() -> PostgresOptions {
    PostgresOptions {
        pool_size: 8,
        connect_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(3),
        migration_timeout: Duration::from_secs(20),
        schema: Some(unique_name("idem_tls")),
        clock: StoreClock::Caller,
        group_commit: true,
    }
}

/// Longest a refused connection may take to be reported: well inside one
/// operation's bound plus a connect timeout.
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

/// A server and the CA files a client may trust: `ca` signed its
/// certificate, `other_ca` did not.
struct Setup {
    pg: PgServer,
    ca: PathBuf,
    other_ca: PathBuf,
    _files: tempfile::TempDir,
}

/// A server with `ssl = on`, presenting a certificate for `names`, with
/// the TCP rules `hba`; `None` when the test skips.
async fn tls_server(names: &[&str], hba: &[&str]) -> Option<Setup> {
    let files = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("idem test CA"), Ca::new("another CA"));
    let pg = PgServer::start(Some(&ca.server_cert(names)), hba).await?;
    Some(Setup {
        pg,
        ca: ca.write_cert(files.path(), "ca"),
        other_ca: other.write_cert(files.path(), "other-ca"),
        _files: files,
    })
}

impl Setup {
    /// This server's URL by 127.0.0.1 with `sslmode=MODE` and
    /// `sslrootcert` = `root` (if any).
    fn url(&self, mode: &str, root: Option<&PathBuf>) -> String {
        let mut params = format!("sslmode={mode}");
        if let Some(root) = root {
            params.push_str(&format!("&sslrootcert={}", root.display()));
        }
        self.pg.url("127.0.0.1", &params)
    }
}

/// Opening `url` must fail, quickly; its message.
async fn refused(url: &str) -> String {
    let started = Instant::now();
    let result = PostgresStore::open(url, options()).await;
    let elapsed = started.elapsed();
    let message = match result {
        Ok(_) => panic!("{url}: opened, but must be refused"),
        Err(e) => chain(&e),
    };
    assert!(
        elapsed < REFUSED_WITHIN,
        "{url}: refused only after {elapsed:?}: {message}"
    );
    message
}

/// The store's connections to `pg` (application_name `idem`), as
/// (encrypted, plaintext).
async fn connections(pg: &PgServer) -> (i64, i64) {
    let client = pg.local_client().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'idem'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Runs conformance behaviours, each on a fresh store (its own schema)
/// opened with `url`.
macro_rules! behaviours {
    ($url:expr; $($name:ident),* $(,)?) => {
        $(
            let store = PostgresStore::open($url, options())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", stringify!($name)));
            idem_store::testing::$name(Arc::new(store)).await;
        )*
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_contract_holds_over_tls_with_verify_full() {
    let Some(s) = tls_server(&["localhost", "127.0.0.1"], TLS_ONLY).await else {
        return;
    };
    let url = s.url("verify-full", Some(&s.ca));
    behaviours!(&url;
        absent_key_is_claimed_then_reported_in_progress,
        claim_race_has_exactly_one_winner,
        completed_response_round_trips_exactly,
        different_fingerprint_is_a_mismatch_in_every_state,
        stale_owner_completion_is_fenced,
        release_frees_the_key_with_a_larger_token,
        lease_expiry_reads_as_outcome_unknown,
        expiry_is_enforced_on_read,
        sweep_is_bounded_and_spares_live_records,
        the_same_attempt_is_claimed_again_with_the_same_token,
        racing_attempts_have_one_winner_whose_retry_wins_again,
    );
    // The store spec the gateway parses takes the same URL.
    let spec: idem_store::StoreSpec = url.parse().unwrap();
    let store = idem_store::open(&spec).await.unwrap();
    store.ping().await.unwrap();
    let (encrypted, plain) = connections(&s.pg).await;
    assert!(encrypted > 0 && plain == 0, "({encrypted}, {plain})");
}

/// The LISTEN connection (wake-ups across gateways) uses TLS too: a
/// waiter on one store is woken by the other store's completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_is_woken_across_stores_over_tls() {
    let Some(s) = tls_server(&["localhost", "127.0.0.1"], TLS_ONLY).await else {
        return;
    };
    let url = s.url("verify-full", Some(&s.ca));
    let options = options();
    let schema = options.schema.clone().unwrap();
    let owner = PostgresStore::open(&url, options.clone()).await.unwrap();
    let waiting = Arc::new(PostgresStore::open(&url, options).await.unwrap());
    let k = id("waited");
    let token = must_claim(&owner, claim(&k, T0)).await;
    let waiter = tokio::spawn({
        let (waiting, k) = (waiting.clone(), k.clone());
        async move { waiting.changed(&k, Duration::from_secs(30)).await }
    });
    let client = s.pg.local_client().await.unwrap();
    let query = format!("SELECT waiters FROM \"{schema}\".idem_records WHERE key = 'waited'");
    support::poll_until("the waiter's mark", Duration::from_secs(15), || async {
        client
            .query_one(query.as_str(), &[])
            .await
            .is_ok_and(|row| row.get::<_, bool>(0))
    })
    .await;
    assert!(!waiter.is_finished(), "woken before the owner wrote");
    let written = Instant::now();
    let completion = Completion::new(
        StoredResponse {
            status: 200,
            headers: vec![],
            body: Some(bytes::Bytes::from_static(b"w")),
        },
        T0,
        &retention(),
    );
    assert_eq!(
        owner.complete(&k, token, completion).await.unwrap(),
        Write::Written
    );
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter was not woken")
        .unwrap();
    assert!(written.elapsed() < Duration::from_secs(5));
    let (encrypted, plain) = connections(&s.pg).await;
    assert!(encrypted > 0 && plain == 0, "({encrypted}, {plain})");
}

#[tokio::test]
async fn a_wrong_ca_is_refused_naming_sslrootcert() {
    let Some(s) = tls_server(&["localhost", "127.0.0.1"], TLS_ONLY).await else {
        return;
    };
    // With sslrootcert, require checks the chain as verify-ca does (libpq).
    for mode in ["verify-full", "verify-ca", "require"] {
        let message = refused(&s.url(mode, Some(&s.other_ca))).await;
        let named = format!(
            "not signed by the CA in sslrootcert={}",
            s.other_ca.display()
        );
        assert!(
            message.contains(&named) && message.contains(&format!("sslmode={mode}")),
            "{mode}: {message}"
        );
        assert!(message.contains("invalid peer certificate"), "{message}");
    }
    // Without sslrootcert, the public roots do not know the test's CA.
    let message = refused(&s.url("verify-full", None)).await;
    assert!(
        message.contains("not signed by a public root CA") && message.contains("sslrootcert=FILE"),
        "{message}"
    );
    // The right CA is accepted.
    PostgresStore::open(&s.url("verify-full", Some(&s.ca)), options())
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    // The certificate names `localhost` only; the URL says 127.0.0.1.
    let Some(s) = tls_server(&["localhost"], TLS_ONLY).await else {
        return;
    };
    let message = refused(&s.url("verify-full", Some(&s.ca))).await;
    assert!(
        message.contains("does not name the host in the URL")
            && message.contains("sslmode=verify-full"),
        "{message}"
    );
    let by_ip = PostgresStore::open(&s.url("verify-ca", Some(&s.ca)), options())
        .await
        .unwrap();
    by_ip.ping().await.unwrap();
    let by_name = s.pg.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", s.ca.display()),
    );
    let by_name = PostgresStore::open(&by_name, options()).await.unwrap();
    by_name.ping().await.unwrap();
}

#[tokio::test]
async fn require_and_stronger_never_fall_back_to_a_server_without_tls() {
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new("idem test CA").write_cert(files.path(), "ca");
    let Some(pg) = PgServer::start(None, EITHER).await else {
        return;
    };
    for mode in ["require", "verify-ca", "verify-full"] {
        let url = pg.url(
            "127.0.0.1",
            &format!("sslmode={mode}&sslrootcert={}", ca.display()),
        );
        let message = refused(&url).await;
        assert!(
            message.contains("the server does not accept TLS")
                && message.contains(&format!("sslmode={mode} never falls back to plaintext")),
            "{mode}: {message}"
        );
    }
    assert_eq!(connections(&pg).await, (0, 0), "nothing connected");
    // prefer (the default) and disable speak plaintext to it.
    for params in ["", "sslmode=prefer", "sslmode=disable"] {
        let store = PostgresStore::open(&pg.url("127.0.0.1", params), options())
            .await
            .unwrap_or_else(|e| panic!("{params:?}: {e}"));
        store.ping().await.unwrap();
        let (encrypted, plain) = connections(&pg).await;
        assert!(
            encrypted == 0 && plain > 0,
            "{params:?}: ({encrypted}, {plain})"
        );
    }
}

#[tokio::test]
async fn require_never_falls_back_when_the_server_refuses_tls_connections() {
    // TLS is on, but pg_hba.conf admits TCP clients only without it.
    let Some(s) = tls_server(&["localhost", "127.0.0.1"], PLAIN_ONLY).await else {
        return;
    };
    for (mode, root) in [("require", None), ("verify-full", Some(&s.ca))] {
        let message = refused(&s.url(mode, root)).await;
        assert!(
            message.contains("pg_hba.conf")
                && message.contains(&format!("sslmode={mode} never falls back to plaintext")),
            "{mode}: {message}"
        );
    }
    // prefer tries TLS, is refused, and connects again without (libpq).
    let store = PostgresStore::open(&s.pg.url("127.0.0.1", ""), options())
        .await
        .unwrap();
    store.ping().await.unwrap();
    let (encrypted, plain) = connections(&s.pg).await;
    assert!(encrypted == 0 && plain > 0, "({encrypted}, {plain})");
}

#[tokio::test]
async fn require_and_prefer_encrypt_without_checking_the_chain() {
    let Some(s) = tls_server(&["localhost", "127.0.0.1"], TLS_ONLY).await else {
        return;
    };
    // No sslrootcert: the test's CA is unknown, yet both connect, over TLS
    // (the server admits nothing else).
    let mut open = Vec::new();
    for params in ["sslmode=require", "sslmode=prefer", ""] {
        let store = PostgresStore::open(&s.pg.url("127.0.0.1", params), options())
            .await
            .unwrap_or_else(|e| panic!("{params:?}: {e}"));
        store.ping().await.unwrap();
        open.push(store);
    }
    let (encrypted, plain) = connections(&s.pg).await;
    assert!(encrypted > 0 && plain == 0, "({encrypted}, {plain})");
    // disable is refused by this server: the store says what it said.
    let message = refused(&s.pg.url("127.0.0.1", "sslmode=disable")).await;
    assert!(message.contains("no encryption"), "{message}");
}

#[tokio::test]
async fn migrate_takes_the_same_tls_url() {
    let Some(s) = tls_server(&["localhost", "127.0.0.1"], TLS_ONLY).await else {
        return;
    };
    let url = format!("{}&schema=migrated", s.url("verify-full", Some(&s.ca)));
    let options = || PostgresOptions {
        schema: None,
        ..options()
    };
    let first = PostgresStore::migrate(&url, options()).await.unwrap();
    assert_eq!(first.applied.len(), 5, "{first:?}");
    assert_eq!(first.version, 5);
    let again = PostgresStore::migrate(&url, options()).await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    let wrong = format!(
        "{}&schema=migrated",
        s.url("verify-full", Some(&s.other_ca))
    );
    match PostgresStore::migrate(&wrong, options()).await {
        Ok(report) => panic!("migrated with the wrong CA: {report:?}"),
        Err(e) => assert!(chain(&e).contains("sslrootcert="), "{e:?}"),
    }
}

/// A server that accepts the TCP connection and never answers the TLS
/// request: the open fails within its bounds, it does not hang.
#[tokio::test]
async fn a_server_that_never_answers_the_tls_request_is_an_error_not_a_hang() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require");
    let message = refused(&url).await;
    assert!(message.contains("cannot get a connection"), "{message}");
    held.abort();
}
