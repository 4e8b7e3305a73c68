//! The real `idem` binary, killed with SIGKILL mid-load and restarted on
//! the same SQLite file: nothing acknowledged is lost, nothing runs twice,
//! and a key that was in flight at the kill becomes outcome-unknown.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use idem_testkit::Upstream;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Idem;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn post(
    client: &HttpClient,
    addr: SocketAddr,
    key: &str,
) -> Option<(u16, bool, Bytes, String)> {
    let req = Request::post(format!("http://{addr}/charges"))
        .header("authorization", "Bearer crash-test")
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"amount\":100}")))
        .unwrap();
    let response = client.request(req).await.ok()?;
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let ctype = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, replayed, body, ctype))
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_completed_key_and_runs_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("idem.db");
    let store = format!("sqlite:{}", db.display());
    let config = dir.path().join("idem.toml");
    // A short lease so the key in flight at the kill turns outcome-unknown
    // quickly after the restart.
    std::fs::write(&config, "lease = \"1s\"\nupstream_timeout = \"60s\"\n").unwrap();
    let upstream = Upstream::start().await;
    let upstream_addr = upstream.addr;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let mut gateway = Idem::gateway(upstream_addr, &store, &config);
    let addr = gateway.addr;

    // Keys in flight at the kill: they reached the upstream, which holds them.
    let slow: Vec<String> = (0..3).map(|i| format!("slow-{i}")).collect();
    for key in &slow {
        let (client, key) = (client.clone(), key.clone());
        tokio::spawn(async move { post(&client, addr, &key).await });
    }
    wait_until("the slow keys to reach the upstream", || {
        let upstream = upstream.clone();
        let slow = slow.clone();
        async move { slow.iter().all(|k| upstream.count_key(k) == 1) }
    })
    .await;

    // Load: 8 workers send unique keys until the kill.
    let acknowledged: Arc<Mutex<HashMap<String, Bytes>>> = Arc::default();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (client, acknowledged) = (client.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("w{w}-{i}");
                    match post(&client, addr, &key).await {
                        Some((201, false, body, _)) => {
                            acknowledged.lock().unwrap().insert(key, body);
                        }
                        Some(other) => panic!("unexpected answer for {key}: {other:?}"),
                        None => return i, // the gateway died
                    }
                }
                unreachable!()
            })
        })
        .collect();
    wait_until("some load to complete", || {
        let acknowledged = acknowledged.clone();
        async move { acknowledged.lock().unwrap().len() >= 200 }
    })
    .await;
    gateway.child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
    gateway.child.wait().unwrap();
    let mut sent_per_worker = Vec::new();
    for w in workers {
        sent_per_worker.push(w.await.unwrap());
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let mut restarted = Idem::gateway(upstream_addr, &store, &config);
    let addr = restarted.addr;

    // Every acknowledged key replays its stored response; none ran twice.
    for (key, body) in &acknowledged {
        let (status, replayed, replay_body, _) = post(&client, addr, key).await.expect("answer");
        assert_eq!(
            (status, replayed),
            (201, true),
            "{key} must replay after the restart"
        );
        assert_eq!(&replay_body, body, "{key} replays the stored body");
        assert_eq!(upstream.count_key(key), 1, "{key} executed once");
    }
    // Keys sent but not acknowledged (cut by the kill) are either executed
    // now for the first time or reported unknown: never executed twice.
    for (w, sent) in sent_per_worker.iter().enumerate() {
        for i in 0..=*sent {
            let key = format!("w{w}-{i}");
            if !acknowledged.contains_key(&key) {
                let _ = post(&client, addr, &key).await;
                assert!(
                    upstream.count_key(&key) <= 1,
                    "{key} executed {} times",
                    upstream.count_key(&key)
                );
            }
        }
    }
    // The keys in flight at the kill become outcome-unknown once their lease
    // runs out, and are never executed again.
    for key in &slow {
        wait_until("the lease of the killed owner to run out", || {
            let client = client.clone();
            let key = key.clone();
            async move {
                let (status, _, body, ctype) = post(&client, addr, &key).await.expect("answer");
                assert_eq!(status, 409, "{key}: {body:?}");
                assert_eq!(ctype, "application/problem+json");
                String::from_utf8_lossy(&body).contains("/outcome-unknown")
            }
        })
        .await;
        assert_eq!(upstream.count_key(key), 1, "{key} was never re-executed");
    }
    upstream.gate.add_permits(slow.len());
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_the_request_in_flight_finish_and_store_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("idem.db");
    let store = format!("sqlite:{}", db.display());
    let config = dir.path().join("idem.toml");
    std::fs::write(&config, "shutdown_grace = \"30s\"\n").unwrap();
    let upstream = Upstream::start().await;
    let upstream_addr = upstream.addr;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut gateway = Idem::gateway(upstream_addr, &store, &config);
    let addr = gateway.addr;

    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { post(&client, addr, "slow-term").await }
    });
    wait_until("the request to reach the upstream", || {
        let upstream = upstream.clone();
        async move { upstream.count_key("slow-term") == 1 }
    })
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &gateway.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // New connections are refused once shutdown has begun...
    wait_until("the listener to close", || {
        let client = client.clone();
        async move { post(&client, addr, "after-term").await.is_none() }
    })
    .await;
    assert!(
        gateway.child.try_wait().unwrap().is_none(),
        "the gateway waits for the request in flight"
    );
    // ...but the request in flight completes and gets its answer.
    upstream.gate.add_permits(1);
    let (status, replayed, body, _) = in_flight.await.unwrap().expect("an answer");
    assert_eq!((status, replayed), (201, false));
    let exit = gateway.child.wait().unwrap();
    assert!(exit.success(), "graceful exit, got {exit:?}");

    // Its outcome was stored before the exit: a retry after restart replays.
    let mut restarted = Idem::gateway(upstream_addr, &store, &config);
    let (status, replayed, replay_body, _) =
        post(&client, restarted.addr, "slow-term").await.unwrap();
    assert_eq!((status, replayed, &replay_body), (201, true, &body));
    assert_eq!(upstream.count_key("slow-term"), 1);
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}
