//! The fault proxy between real sockets on 127.0.0.1: a test client, the
//! proxy started through the library, and an upstream that records every
//! request it executes. No fixed sleeps: conditions are awaited with
//! deadlines.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use idem_chaos::{ChaosOptions, Delay, Fault, Faults, Methods, RunningChaos};
use idem_testkit::{reply, Gate, Reply, Seen, Upstream};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Answers POST with `201 {"n":N}` (N counts executions) and anything
/// else with `200 hello`; the upstream records every request.
async fn respond(seen: Seen, _: Gate) -> Reply {
    if seen.method == Method::POST {
        Some(reply(201, format!("{{\"n\":{}}}", seen.number_with_method)))
    } else {
        let mut response = reply(200, "hello");
        response
            .headers_mut()
            .insert("x-upstream", "yes".parse().unwrap());
        Some(response)
    }
}

async fn chaos(
    upstream: SocketAddr,
    faults: Faults,
    seed: u64,
    log: Option<&Path>,
) -> RunningChaos {
    chaos_with(upstream, faults, Methods::default(), seed, log).await
}

async fn chaos_with(
    upstream: SocketAddr,
    faults: Faults,
    methods: Methods,
    seed: u64,
    log: Option<&Path>,
) -> RunningChaos {
    idem_chaos::start(ChaosOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: format!("http://{upstream}").parse().unwrap(),
        upstream_ca: None,
        faults,
        methods,
        seed: Some(seed),
        log: log.map(Path::to_path_buf),
    })
    .await
    .unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// One request on a fresh connection (so no pooled-connection retry can
/// hide what the proxy did).
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> Result<Answer, hyper::Error> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "chaos.test")
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap();
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await?.to_bytes(),
    })
}

async fn post(addr: SocketAddr, i: usize) -> Result<Answer, hyper::Error> {
    send(
        addr,
        Method::POST,
        "/charges",
        Some(&format!("key-{i}")),
        &format!("{{\"amount\":{i}}}"),
    )
    .await
}

fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn duplicate_delivers_twice_and_answers_with_the_first() {
    let upstream = Upstream::answering(respond).await;
    let up = upstream.addr;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("faults.jsonl");
    let faults = Faults {
        duplicate: 1.0,
        ..Faults::default()
    };
    let chaos = chaos(up, faults, 1, Some(&log)).await;
    for i in 0..20 {
        let answer = post(chaos.addr(), i).await.unwrap();
        assert_eq!(answer.status, StatusCode::CREATED);
        // Requests go one at a time: request i executes as 2i+1 and 2i+2,
        // and the client gets the first.
        assert_eq!(answer.body, format!("{{\"n\":{}}}", 2 * i + 1));
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 40, "duplicate 1.0 doubles the effects");
    for pair in seen.chunks(2) {
        assert_eq!(pair[0].body, pair[1].body);
        assert_eq!(pair[0].path, pair[1].path);
        assert_eq!(pair[0].headers, pair[1].headers, "same headers both times");
        assert!(pair[0].headers.contains_key("idempotency-key"));
    }
    let summary = chaos.shutdown().await;
    assert_eq!(
        (summary.selected, summary.duplicate, summary.passed),
        (20, 20, 0)
    );
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 20);
    for line in &lines {
        assert_eq!(line["fault"], "duplicate");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["path"], "/charges");
        assert_eq!(line["upstream_status"], 201);
        assert_eq!(line["duplicate_status"], 201);
        assert!(line["idempotency_key"]
            .as_str()
            .unwrap()
            .starts_with("key-"));
        assert!(line["request_id"].as_u64().unwrap() >= 1);
    }
}

#[tokio::test]
async fn drop_response_executes_but_no_client_gets_an_answer() {
    let upstream = Upstream::answering(respond).await;
    let up = upstream.addr;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("faults.jsonl");
    let faults = Faults {
        drop_response: 1.0,
        ..Faults::default()
    };
    let chaos = chaos(up, faults, 2, Some(&log)).await;
    for i in 0..20 {
        match post(chaos.addr(), i).await {
            Ok(answer) => panic!("request {i} got an answer: {}", answer.status),
            Err(e) => assert!(is_connection_error(&e), "a connection error, not {e:?}"),
        }
    }
    // The proxy read each full answer before cutting the client, so every
    // request has executed by the time its client saw the error.
    assert_eq!(upstream.count_method(Method::POST), 20);
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 20);
    assert!(lines
        .iter()
        .all(|l| l["fault"] == "drop_response" && l["upstream_status"] == 201));
    assert_eq!(chaos.shutdown().await.drop_response, 20);
}

/// A reset or a close before the answer: what a client sees when a
/// connection dies under its request.
fn is_connection_error(e: &hyper::Error) -> bool {
    use std::error::Error as _;
    let io_reset = e
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset);
    io_reset || e.is_incomplete_message()
}

/// Writes a raw request and reads until the proxy ends the connection.
async fn raw_exchange(addr: SocketAddr) -> (Vec<u8>, std::io::Result<()>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = b"POST /raw HTTP/1.1\r\nHost: chaos.test\r\nContent-Length: 2\r\n\r\n{}";
    if let Err(e) = stream.write_all(request).await {
        return (Vec::new(), Err(e));
    }
    let mut got = Vec::new();
    let result = stream.read_to_end(&mut got).await.map(|_| ());
    (got, result)
}

#[tokio::test]
async fn the_client_sees_a_connection_reset() {
    for (fault, executed) in [
        (Fault::DropResponse, 1),
        (Fault::Reset, 0),
        (Fault::DropRequest, 0),
    ] {
        let upstream = Upstream::answering(respond).await;
        let up = upstream.addr;
        let faults = match fault {
            Fault::DropResponse => Faults {
                drop_response: 1.0,
                ..Faults::default()
            },
            Fault::Reset => Faults {
                reset: 1.0,
                ..Faults::default()
            },
            _ => Faults {
                drop_request: 1.0,
                ..Faults::default()
            },
        };
        let chaos = chaos(up, faults, 3, None).await;
        let (got, result) = raw_exchange(chaos.addr()).await;
        assert!(got.is_empty(), "{fault}: no byte of an answer, got {got:?}");
        let error = result.expect_err("a reset, not a clean end of stream");
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset,
            "{fault}: {error}"
        );
        assert_eq!(upstream.count_method(Method::POST), executed, "{fault}");
        chaos.shutdown().await;
    }
}

#[tokio::test]
async fn drop_request_never_reaches_the_upstream() {
    let upstream = Upstream::answering(respond).await;
    let up = upstream.addr;
    let faults = Faults {
        drop_request: 1.0,
        ..Faults::default()
    };
    let chaos = chaos(up, faults, 4, None).await;
    for i in 0..20 {
        let e = post(chaos.addr(), i).await.err().expect("no answer");
        assert!(is_connection_error(&e), "{e:?}");
    }
    // A GET sent after them passes; the POSTs never arrived before it.
    let answer = send(chaos.addr(), Method::GET, "/health", None, "")
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(upstream.count_method(Method::GET), 1);
    assert_eq!(upstream.count_method(Method::POST), 0);
    let summary = chaos.shutdown().await;
    assert_eq!(
        (summary.requests, summary.selected, summary.drop_request),
        (21, 20, 20)
    );
}

#[tokio::test]
async fn other_methods_pass_through_untouched() {
    let upstream = Upstream::answering(respond).await;
    let up = upstream.addr;
    let faults = Faults {
        duplicate: 1.0,
        ..Faults::default()
    };
    let chaos = chaos(up, faults, 5, None).await;
    let answer = send(chaos.addr(), Method::GET, "/items?page=2", Some("g1"), "")
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "hello");
    assert_eq!(answer.headers["x-upstream"], "yes");
    let put = send(chaos.addr(), Method::PUT, "/items/1", None, "{\"a\":1}")
        .await
        .unwrap();
    assert_eq!(put.status, StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "once each: {seen:?}");
    assert_eq!(seen[0].path, "/items?page=2");
    assert_eq!(seen[0].headers["idempotency-key"], "g1");
    assert_eq!(seen[1].body, "{\"a\":1}");
    let summary = chaos.shutdown().await;
    assert_eq!(
        (summary.requests, summary.selected, summary.faults()),
        (2, 0, 0)
    );

    // With --methods GET, GET is the one that gets faults.
    let upstream = Upstream::answering(respond).await;
    let up = upstream.addr;
    let chaos = chaos_with(
        up,
        Faults {
            drop_request: 1.0,
            ..Faults::default()
        },
        idem_chaos::parse_methods("GET").unwrap(),
        6,
        None,
    )
    .await;
    assert!(send(chaos.addr(), Method::GET, "/", None, "")
        .await
        .is_err());
    assert_eq!(
        post(chaos.addr(), 0).await.unwrap().status,
        StatusCode::CREATED
    );
    assert_eq!(upstream.count_method(Method::GET), 0);
    assert_eq!(upstream.count_method(Method::POST), 1);
    chaos.shutdown().await;
}

#[tokio::test]
async fn a_probability_lands_in_its_binomial_range() {
    const N: usize = 400;
    const P: f64 = 0.3;
    let upstream = Upstream::answering(respond).await;
    let up = upstream.addr;
    let faults = Faults {
        duplicate: P,
        ..Faults::default()
    };
    // Any seed will do: the range is six standard deviations wide.
    let chaos = Arc::new(chaos(up, faults, rand_seed(), None).await);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let chaos = chaos.clone();
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= N {
                        break;
                    }
                    let answer = post(chaos.addr(), i).await.unwrap();
                    assert_eq!(answer.status, StatusCode::CREATED);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let effects = upstream.count_method(Method::POST);
    let duplicates = effects - N;
    let mean = N as f64 * P;
    let sd = (N as f64 * P * (1.0 - P)).sqrt();
    let (low, high) = (
        (-6.0f64).mul_add(sd, mean).floor(),
        6.0f64.mul_add(sd, mean).ceil(),
    );
    assert!(
        (low..=high).contains(&(duplicates as f64)),
        "{duplicates} duplicates of {N} at p = {P}: outside [{low}, {high}] (seed {})",
        chaos.seed()
    );
    let summary = chaos.summary();
    assert_eq!(summary.duplicate as usize, duplicates);
    assert_eq!(summary.selected as usize, N);
    assert_eq!(summary.passed as usize, N - duplicates);
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn a_seed_repeats_the_sequence_of_decisions() {
    let faults = Faults {
        duplicate: 0.2,
        drop_response: 0.2,
        drop_request: 0.15,
        reset: 0.15,
        delay: Some(Delay {
            probability: 0.1,
            duration: Duration::from_millis(1),
        }),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for (run, seed) in [42, 42, 43].into_iter().enumerate() {
        let upstream = Upstream::answering(respond).await;
        let up = upstream.addr;
        let log = dir.path().join(format!("run-{run}.jsonl"));
        let chaos = chaos(up, faults, seed, Some(&log)).await;
        for i in 0..60 {
            let _ = post(chaos.addr(), i).await;
        }
        let summary = chaos.shutdown().await;
        let mut decisions: Vec<(u64, String)> = log_lines(&log)
            .iter()
            .map(|l| {
                (
                    l["request_id"].as_u64().unwrap(),
                    l["fault"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        decisions.sort();
        assert_eq!(decisions.len() as u64, summary.faults());
        runs.push((
            decisions,
            summary.passed,
            upstream.count_method(Method::POST),
        ));
    }
    assert!(!runs[0].0.is_empty());
    assert_eq!(
        runs[0], runs[1],
        "the same seed, the same decisions and effects"
    );
    assert_ne!(runs[0].0, runs[2].0, "another seed, other decisions");
}

#[tokio::test]
async fn delay_holds_the_request() {
    let upstream = Upstream::answering(respond).await;
    let up = upstream.addr;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("faults.jsonl");
    let hold = Duration::from_millis(300);
    let faults = Faults {
        delay: Some(Delay {
            probability: 1.0,
            duration: hold,
        }),
        ..Faults::default()
    };
    let chaos = chaos(up, faults, 7, Some(&log)).await;
    let started = Instant::now();
    let answer = post(chaos.addr(), 0).await.unwrap();
    assert!(started.elapsed() >= hold, "{:?}", started.elapsed());
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(upstream.count_method(Method::POST), 1);
    let lines = log_lines(&log);
    assert_eq!(lines[0]["fault"], "delay");
    assert_eq!(lines[0]["delay_ms"], 300);
    assert_eq!(lines[0]["upstream_status"], 201);
    chaos.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let chaos = chaos(closed, Faults::default(), 8, None).await;
    let answer = send(chaos.addr(), Method::GET, "/", None, "")
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let summary = chaos.shutdown().await;
    assert_eq!(summary.upstream_errors, 1);
}

#[tokio::test]
async fn probabilities_above_one_in_all_are_refused() {
    let err = idem_chaos::start(ChaosOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: "http://127.0.0.1:1".parse().unwrap(),
        upstream_ca: None,
        faults: Faults {
            duplicate: 0.7,
            reset: 0.7,
            ..Faults::default()
        },
        methods: Methods::default(),
        seed: None,
        log: None,
    })
    .await
    .expect_err("refused");
    assert!(
        err.to_string().contains("--reset 0.7 + --duplicate 0.7"),
        "{err}"
    );
}

/// In front of an `https://` upstream (issue 12): requests and their
/// faults go through TLS, verified against `upstream_ca`; an upstream whose
/// certificate the CA did not sign answers 502 and executes nothing.
#[tokio::test]
async fn an_https_upstream_gets_its_faults_through_tls() {
    use idem_testkit::tls::{TestCa, TlsFront, TlsFrontOptions};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("upstream CA");
    let upstream = Upstream::answering(respond).await;
    let front = TlsFront::start(
        upstream.addr,
        TlsFrontOptions::new(ca.server_cert(&["localhost"])),
    )
    .await;
    let start = |ca_file| {
        idem_chaos::start(ChaosOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: format!("https://localhost:{}", front.addr.port())
                .parse()
                .unwrap(),
            upstream_ca: Some(ca_file),
            faults: Faults {
                duplicate: 1.0,
                ..Faults::default()
            },
            methods: Methods::default(),
            seed: Some(1),
            log: None,
        })
    };
    let chaos = start(ca.write_cert(dir.path(), "ca")).await.unwrap();
    let answer = post(chaos.addr(), 1).await.unwrap();
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(upstream.count_key("key-1"), 2, "delivered twice, over TLS");

    let stranger = TestCa::new("another CA");
    let refusing = start(stranger.write_cert(dir.path(), "other"))
        .await
        .unwrap();
    let answer = post(refusing.addr(), 2).await.unwrap();
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(upstream.count_key("key-2"), 0);

    let missing = start(dir.path().join("missing.pem")).await.err().unwrap();
    assert!(missing.to_string().contains("--upstream-ca"), "{missing}");
}
