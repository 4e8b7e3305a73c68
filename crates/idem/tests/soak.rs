//! The real `idem soak` binary, through the real `idem chaos` (and `idem
//! gateway`) processes, in front of a counting upstream with a count
//! endpoint: duplicates without the gateway, none with it and the bound,
//! the JSON report's fields, and bad input with exit code 2.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const OPERATIONS: u64 = 200;

/// Counts every POST as a side effect (201 `{"id":N}`); `GET /count`
/// answers `{"count":N}`.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let counter = counter.clone();
                    async move {
                        let post = req.method() == Method::POST;
                        let _ = req.into_body().collect().await;
                        let (status, body) = if post {
                            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                            (StatusCode::CREATED, format!("{{\"id\":{n}}}"))
                        } else {
                            let n = counter.load(Ordering::SeqCst);
                            (StatusCode::OK, format!("{{\"count\":{n}}}"))
                        };
                        let mut response = Response::new(Full::new(Bytes::from(body)));
                        *response.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, count)
}

/// A child `idem` process that is killed when the test ends.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `idem ARGS…` and waits for its `listening on ADDR` line.
fn spawn(args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(args)
        .env("IDEM_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the idem binary starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from idem {args:?}: {line:?}"))
        .parse()
        .unwrap();
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while stdout.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    Server { child, addr }
}

fn chaos_to(upstream: SocketAddr) -> Server {
    spawn(&[
        "chaos",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &format!("http://{upstream}"),
        "--drop-response",
        "0.2",
        "--seed",
        "42",
    ])
}

/// Runs `idem soak ARGS…` to completion, off the async runtime.
async fn soak(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_idem"))
            .arg("soak")
            .args(&args)
            .env("IDEM_LOG", "warn")
            .output()
            .expect("the idem binary runs")
    })
    .await
    .unwrap()
}

fn soak_args(target: SocketAddr, upstream: SocketAddr) -> Vec<String> {
    [
        "--url".to_owned(),
        format!("http://{target}/charges"),
        "--body".to_owned(),
        r#"{"amount":100,"currency":"eur"}"#.to_owned(),
        "--header".to_owned(),
        "Authorization: Bearer sk_test_soak".to_owned(),
        "--requests".to_owned(),
        OPERATIONS.to_string(),
        "--concurrency".to_owned(),
        "8".to_owned(),
        "--max-attempts".to_owned(),
        "10".to_owned(),
        "--count-url".to_owned(),
        format!("http://{upstream}/count"),
    ]
    .into()
}

fn json(output: &Output, report: &str) -> serde_json::Value {
    assert!(
        output.status.success(),
        "idem soak failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(report).unwrap_or_else(|e| panic!("not JSON ({e}): {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_gateway_soak_finds_duplicates() {
    let (upstream, count) = counting_upstream().await;
    let chaos = chaos_to(upstream);
    let mut args = soak_args(chaos.addr, upstream);
    args.extend(["--format".to_owned(), "json".to_owned()]);
    let output = soak(args).await;
    let report = json(&output, &String::from_utf8_lossy(&output.stdout));

    assert_eq!(report["logical_operations"], OPERATIONS);
    assert_eq!(report["effects"], count.load(Ordering::SeqCst));
    let duplicates = report["duplicates"].as_u64().unwrap();
    assert!(duplicates > 0, "{report}");
    assert_eq!(
        report["effects"].as_u64().unwrap(),
        OPERATIONS + duplicates,
        "{report}"
    );
    assert_eq!(
        report["duplicate_rate"].as_f64().unwrap(),
        duplicates as f64 / OPERATIONS as f64
    );
    let bound = report["upper_bound_95"].as_f64().unwrap();
    assert!(bound > report["duplicate_rate"].as_f64().unwrap() && bound < 1.0);
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["outcome_unknown"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_gateway_soak_finds_none_and_reports_the_bound() {
    let (upstream, count) = counting_upstream().await;
    let gateway = spawn(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &format!("http://{upstream}"),
        "--store",
        "memory",
    ]);
    let chaos = chaos_to(gateway.addr);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.json");
    let mut args = soak_args(chaos.addr, upstream);
    args.extend([
        "--format".to_owned(),
        "json".to_owned(),
        "--output".to_owned(),
        file.to_str().unwrap().to_owned(),
    ]);
    let output = soak(args).await;
    assert!(output.stdout.is_empty(), "the report went to the file");
    let report = json(&output, &std::fs::read_to_string(&file).unwrap());

    assert_eq!(report["logical_operations"], OPERATIONS);
    assert_eq!(report["effects"], OPERATIONS, "{report}");
    assert_eq!(count.load(Ordering::SeqCst), OPERATIONS);
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["duplicate_rate"], 0.0);
    let bound = report["upper_bound_95"].as_f64().unwrap();
    let expected = 1.0 - 0.05f64.powf(1.0 / OPERATIONS as f64);
    assert!((bound - expected).abs() < 1e-12, "{bound} vs {expected}");
    assert_eq!(bound, idem_math::formula::upper_bound_95(OPERATIONS));
    assert_eq!(report["outcome_unknown"], 0, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(
        report["replayed"].as_u64().unwrap() > 0,
        "lost responses came back as replays: {report}"
    );

    // The text report says the same to a person.
    let before = count.load(Ordering::SeqCst);
    let mut args = soak_args(chaos.addr, upstream);
    args[7] = "20".to_owned(); // --requests
    let output = soak(args).await;
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("duplicates        0"), "{text}");
    assert!(text.contains("1 - 0.05^(1/20)"), "{text}");
    assert_eq!(count.load(Ordering::SeqCst), before + 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_flag_and_exits_2() {
    let (upstream, count) = counting_upstream().await;
    let base = soak_args(upstream, upstream);
    let cases: [(&str, &str, &str); 6] = [
        ("--requests", "0", "--requests"),
        ("--url", "https://api.example/charges", "--url"),
        ("--body", "{not json", "--body"),
        ("--header", "Idempotency-Key: fixed", "--header"),
        ("--concurrency", "many", "--concurrency"),
        ("--count-url", "localhost:3000/count", "--count-url"),
    ];
    for (flag, value, named) in cases {
        let mut args = base.clone();
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = value.to_owned();
        let output = soak(args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(named), "{flag} {value}: {stderr}");
    }
    // A count field that is not in the body: the run stops before sending.
    let mut args = base.clone();
    args.extend(["--count-field".to_owned(), "stats.charges".to_owned()]);
    let output = soak(args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--count-field stats.charges"), "{stderr}");
    assert_eq!(count.load(Ordering::SeqCst), 0, "nothing was sent");
}
