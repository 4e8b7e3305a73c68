//! The real `idem` binary, killed with SIGKILL mid-load and restarted on
//! the same SQLite file: nothing acknowledged is lost, nothing runs twice,
//! and a key that was in flight at the kill becomes outcome-unknown.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// An upstream that counts executions per idempotency key. Keys starting
/// with `slow-` are held until the test opens the gate.
#[derive(Clone)]
struct Upstream {
    executions: Arc<Mutex<HashMap<String, usize>>>,
    gate: Arc<Semaphore>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            executions: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }
}

impl Upstream {
    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let this = this.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let this = this.clone();
                        async move { Ok::<_, std::convert::Infallible>(this.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let key = req
            .headers()
            .get("idempotency-key")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let _ = req.into_body().collect().await;
        let n = {
            let mut map = self.executions.lock().unwrap();
            let n = map.entry(key.clone()).or_default();
            *n += 1;
            *n
        };
        if key.starts_with("slow-") {
            self.gate.acquire().await.unwrap().forget();
        }
        let mut response = Response::new(Full::new(Bytes::from(format!(
            "{{\"key\":\"{key}\",\"execution\":{n}}}"
        ))));
        *response.status_mut() = hyper::StatusCode::CREATED;
        response
    }

    fn count(&self, key: &str) -> usize {
        self.executions
            .lock()
            .unwrap()
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

struct Gateway {
    child: Child,
    addr: SocketAddr,
}

fn spawn_gateway(upstream: SocketAddr, db: &Path, config: &Path) -> Gateway {
    let mut child = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["gateway", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(format!("http://{upstream}"))
        .arg("--store")
        .arg(format!("sqlite:{}", db.display()))
        .arg("--config")
        .arg(config)
        .env("IDEM_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the idem binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .unwrap();
    Gateway { child, addr }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn post(
    client: &HttpClient,
    addr: SocketAddr,
    key: &str,
) -> Option<(u16, bool, Bytes, String)> {
    let req = Request::post(format!("http://{addr}/charges"))
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
    let config = dir.path().join("idem.toml");
    // A short lease so the key in flight at the kill turns outcome-unknown
    // quickly after the restart.
    std::fs::write(&config, "lease = \"1s\"\nupstream_timeout = \"60s\"\n").unwrap();
    let upstream = Upstream::default();
    let upstream_addr = upstream.start().await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let mut gateway = spawn_gateway(upstream_addr, &db, &config);
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
        async move { slow.iter().all(|k| upstream.count(k) == 1) }
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

    let mut restarted = spawn_gateway(upstream_addr, &db, &config);
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
        assert_eq!(upstream.count(key), 1, "{key} executed once");
    }
    // Keys sent but not acknowledged (cut by the kill) are either executed
    // now for the first time or reported unknown: never executed twice.
    for (w, sent) in sent_per_worker.iter().enumerate() {
        for i in 0..=*sent {
            let key = format!("w{w}-{i}");
            if !acknowledged.contains_key(&key) {
                let _ = post(&client, addr, &key).await;
                assert!(
                    upstream.count(&key) <= 1,
                    "{key} executed {} times",
                    upstream.count(&key)
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
        assert_eq!(upstream.count(key), 1, "{key} was never re-executed");
    }
    upstream.gate.add_permits(slow.len());
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_the_request_in_flight_finish_and_store_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("idem.db");
    let config = dir.path().join("idem.toml");
    std::fs::write(&config, "shutdown_grace = \"30s\"\n").unwrap();
    let upstream = Upstream::default();
    let upstream_addr = upstream.start().await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut gateway = spawn_gateway(upstream_addr, &db, &config);
    let addr = gateway.addr;

    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { post(&client, addr, "slow-term").await }
    });
    wait_until("the request to reach the upstream", || {
        let upstream = upstream.clone();
        async move { upstream.count("slow-term") == 1 }
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
    let mut restarted = spawn_gateway(upstream_addr, &db, &config);
    let (status, replayed, replay_body, _) =
        post(&client, restarted.addr, "slow-term").await.unwrap();
    assert_eq!((status, replayed, &replay_body), (201, true, &body));
    assert_eq!(upstream.count("slow-term"), 1);
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}
