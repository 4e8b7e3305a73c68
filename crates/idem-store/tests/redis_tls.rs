//! TLS to Redis, against private redis-servers each test starts with
//! `--port 0 --tls-port P` (TLS only) and a certificate signed by a CA
//! made in the test: the whole conformance suite over `rediss://` with
//! `tls_ca`, a one-node TLS cluster through `rediss+cluster://`, wake-ups
//! over TLS, and the refusals: a wrong CA or host is refused with a
//! message naming what to check, and a TLS client meeting a plaintext
//! server (or the reverse) fails within its bounds.
//!
//! Without `redis-server` the tests skip; under `CI=true` they fail.
#![cfg(feature = "redis")]

mod support;

use idem_core::*;
use idem_store::{Completion, RedisOptions, RedisStore, Store, StoreClock, Write};
use idem_testkit::tls::TestCa as Ca;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::redis_server::{Listen, RedisServer};
use support::{chain, claim, id, must_claim, retention, unique_name, Cleaned, T0};

/// Short bounds, a fresh prefix, the callers' clock (the conformance
/// behaviours move time).
fn options() -> RedisOptions {
    RedisOptions {
        prefix: unique_name("idem-tls"),
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(3),
        ttl_grace: Duration::from_secs(60),
        clock: StoreClock::Caller,
    }
}

/// Longest a refused connection may take to be reported.
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

/// A TLS server and the CA files a client may trust: `ca` signed its
/// certificate, `other_ca` did not.
struct Setup {
    server: RedisServer,
    ca: PathBuf,
    other_ca: PathBuf,
    _files: tempfile::TempDir,
}

/// A TLS-only server presenting a certificate for `names` (a one-node
/// cluster if `cluster`); `None` when the test skips.
async fn tls_server(names: &[&str], cluster: bool) -> Option<Setup> {
    let files = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("idem test CA"), Ca::new("another CA"));
    let (ca, other_ca, cert) = (
        ca.write_cert(files.path(), "ca"),
        other.write_cert(files.path(), "other-ca"),
        ca.server_cert(names),
    );
    let listen = if cluster {
        Listen::TlsCluster {
            cert: &cert,
            ca: &ca,
        }
    } else {
        Listen::Tls {
            cert: &cert,
            ca: &ca,
        }
    };
    let server = RedisServer::start(listen).await?;
    Some(Setup {
        server,
        ca,
        other_ca,
        _files: files,
    })
}

impl Setup {
    /// `rediss://HOST:PORT/`, trusting `ca` (if any) with `tls_ca`.
    fn url(&self, host: &str, ca: Option<&PathBuf>) -> String {
        let url = format!("rediss://{host}:{}/", self.server.port);
        match ca {
            Some(ca) => format!("{url}?tls_ca={}", ca.display()),
            None => url,
        }
    }
}

/// Opening `url` must fail, quickly; its message.
async fn refused(url: &str) -> String {
    let started = Instant::now();
    let result = RedisStore::open(url, options()).await;
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

/// A store over TLS on a server of its own (stopped with the store).
async fn fresh() -> Option<Arc<dyn Store>> {
    let setup = tls_server(&["localhost", "127.0.0.1"], false).await?;
    let store = RedisStore::open(&setup.url("127.0.0.1", Some(&setup.ca)), options())
        .await
        .expect("open a store over TLS");
    Some(Arc::new(Cleaned::new(store, move || drop(setup))))
}

idem_store::conformance_tests!(match fresh().await {
    Some(store) => std::future::ready(store),
    None => return,
});

#[tokio::test]
async fn a_wrong_ca_is_refused_naming_tls_ca() {
    let Some(s) = tls_server(&["localhost", "127.0.0.1"], false).await else {
        return;
    };
    let message = refused(&s.url("127.0.0.1", Some(&s.other_ca))).await;
    let named = format!("not signed by the CA in tls_ca={}", s.other_ca.display());
    assert!(message.contains(&named), "{message}");
    assert!(message.contains("invalid peer certificate"), "{message}");
    // Without tls_ca the public roots do not know the test's CA.
    let message = refused(&s.url("127.0.0.1", None)).await;
    assert!(
        message.contains("not signed by a public root CA") && message.contains("tls_ca=FILE"),
        "{message}"
    );
    // The right CA is accepted.
    RedisStore::open(&s.url("127.0.0.1", Some(&s.ca)), options())
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
}

#[tokio::test]
async fn the_host_name_is_checked() {
    // The certificate names `localhost` only.
    let Some(s) = tls_server(&["localhost"], false).await else {
        return;
    };
    let message = refused(&s.url("127.0.0.1", Some(&s.ca))).await;
    assert!(
        message.contains("does not name the host in the URL"),
        "{message}"
    );
    RedisStore::open(&s.url("localhost", Some(&s.ca)), options())
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
}

#[tokio::test]
async fn tls_against_a_plaintext_server_and_the_reverse_fail_within_bounds() {
    let Some(s) = tls_server(&["localhost", "127.0.0.1"], false).await else {
        return;
    };
    let Some(plain) = RedisServer::start(Listen::Plain).await else {
        return;
    };
    let to_plain = format!(
        "rediss://127.0.0.1:{}/?tls_ca={}",
        plain.port,
        s.ca.display()
    );
    let message = refused(&to_plain).await;
    assert!(message.contains("rediss://: "), "{message}");
    // A plaintext client at a TLS port never gets an answer it can read.
    let message = refused(&format!("redis://127.0.0.1:{}/", s.server.port)).await;
    assert!(message.contains("redis store: open failed"), "{message}");
}

/// The subscriber connection (wake-ups across gateways) uses TLS too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_is_woken_across_stores_over_tls() {
    let Some(s) = tls_server(&["localhost", "127.0.0.1"], false).await else {
        return;
    };
    let url = s.url("127.0.0.1", Some(&s.ca));
    let options = options();
    let prefix = options.prefix.clone();
    let owner = RedisStore::open(&url, options.clone()).await.unwrap();
    let waiting = Arc::new(RedisStore::open(&url, options).await.unwrap());
    let k = id("waited");
    let token = must_claim(&owner, claim(&k, T0)).await;
    let waiter = tokio::spawn({
        let (waiting, k) = (waiting.clone(), k.clone());
        async move { waiting.changed(&k, Duration::from_secs(30)).await }
    });
    // A plain redis-rs client over TLS, to look at the mark.
    let client = redis::Client::build_with_tls(
        s.url("127.0.0.1", None),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&s.ca).unwrap()),
        },
    )
    .unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    support::poll_until("the waiter's mark", Duration::from_secs(15), || {
        let mut conn = conn.clone();
        let pattern = format!("{prefix}:*:r:*:waited");
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut conn)
                .await
                .unwrap();
            let Some(key) = keys.first() else {
                return false;
            };
            let mark: Option<String> = redis::cmd("HGET")
                .arg(key)
                .arg("w")
                .query_async(&mut conn)
                .await
                .unwrap();
            mark.is_some()
        }
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
    let _: () = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map(|_: String| ())
        .unwrap();
}

/// A one-node cluster over TLS (cluster bus included), reached through
/// the store spec `rediss+cluster://…?tls_ca=…` as the gateway parses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_contract_holds_on_a_tls_cluster() {
    let Some(s) = tls_server(&["localhost", "127.0.0.1"], true).await else {
        return;
    };
    let spec = format!(
        "rediss+cluster://127.0.0.1:{}/?tls_ca={}",
        s.server.port,
        s.ca.display()
    );
    let idem_store::StoreSpec::RedisCluster { nodes } = spec.parse().unwrap() else {
        panic!("{spec} is a cluster");
    };
    macro_rules! behaviours {
        ($($name:ident),* $(,)?) => {
            $(
                let store = RedisStore::open_cluster(&nodes, options())
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", stringify!($name)));
                idem_store::testing::$name(Arc::new(store)).await;
            )*
        };
    }
    behaviours!(
        absent_key_is_claimed_then_reported_in_progress,
        claim_race_has_exactly_one_winner,
        completed_response_round_trips_exactly,
        different_fingerprint_is_a_mismatch_in_every_state,
        stale_owner_completion_is_fenced,
        expiry_is_enforced_on_read,
        sweep_is_bounded_and_spares_live_records,
    );
    // The wrong CA is refused on a cluster too.
    let wrong = format!(
        "rediss+cluster://127.0.0.1:{}/?tls_ca={}",
        s.server.port,
        s.other_ca.display()
    );
    let idem_store::StoreSpec::RedisCluster { nodes } = wrong.parse().unwrap() else {
        panic!("{wrong} is a cluster");
    };
    let started = Instant::now();
    match RedisStore::open_cluster(&nodes, options()).await {
        Ok(_) => panic!("opened a cluster with the wrong CA"),
        Err(e) => {
            let message = chain(&e);
            assert!(message.contains("tls_ca="), "{message}");
        }
    }
    assert!(started.elapsed() < REFUSED_WITHIN * 2);
}
