//! The real `idem chaos` binary in front of a counting upstream: it prints
//! where it listens and its seed, doubles effects with `--duplicate 1`,
//! logs each fault as a JSON line, prints a summary and exits 0 on
//! SIGINT/SIGTERM, and rejects bad flags with exit code 2.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Answers every request with 201 and counts them.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
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
                        let _ = req.into_body().collect().await;
                        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                        let mut response =
                            Response::new(Full::new(Bytes::from(format!("{{\"id\":{n}}}"))));
                        *response.status_mut() = StatusCode::CREATED;
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

struct Chaos {
    child: Child,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

fn spawn_chaos(args: &[&str]) -> Chaos {
    let mut child = Command::new(env!("CARGO_BIN_EXE_idem"))
        .arg("chaos")
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
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .unwrap();
    Chaos {
        child,
        stdout,
        addr,
    }
}

impl Chaos {
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (with a deadline) for the process to exit; returns its status
    /// and the rest of its stdout.
    fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("idem chaos did not exit after the signal");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (status, rest)
    }
}

async fn post(addr: SocketAddr, i: usize) -> Result<StatusCode, hyper::Error> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::post("/charges")
        .header("host", "chaos.test")
        .header("idempotency-key", format!("op-{i}"))
        .body(Full::new(Bytes::from_static(b"{\"amount\":100}")))
        .unwrap();
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_doubles_effects_and_sigint_prints_the_summary() {
    let (upstream, count) = counting_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("faults.jsonl");
    let upstream_url = format!("http://{upstream}");
    let mut chaos = spawn_chaos(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream_url,
        "--duplicate",
        "1",
        "--seed",
        "7",
        "--log",
        log.to_str().unwrap(),
    ]);
    let mut seed_line = String::new();
    chaos.stdout.read_line(&mut seed_line).unwrap();
    assert!(seed_line.starts_with("seed 7 "), "{seed_line:?}");

    for i in 0..10 {
        assert_eq!(post(chaos.addr, i).await.unwrap(), StatusCode::CREATED);
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        20,
        "every request executed twice"
    );

    chaos.signal("INT");
    let (status, summary) = chaos.wait();
    assert_eq!(status.code(), Some(0), "{summary}");
    assert!(summary.contains("seed 7"), "{summary}");
    assert!(summary.contains("10 requests"), "{summary}");
    let duplicate_line = summary
        .lines()
        .find(|l| l.trim_start().starts_with("duplicate"))
        .unwrap_or_else(|| panic!("no duplicate count in {summary}"));
    assert!(
        duplicate_line.trim_end().ends_with(" 10"),
        "{duplicate_line}"
    );

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    assert!(lines.iter().all(|l| l["fault"] == "duplicate"
        && l["upstream_status"] == 201
        && l["method"] == "POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_response_and_sigterm() {
    let (upstream, count) = counting_upstream().await;
    let upstream_url = format!("http://{upstream}");
    let chaos = spawn_chaos(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream_url,
        "--drop-response",
        "100%",
    ]);
    for i in 0..5 {
        assert!(
            post(chaos.addr, i).await.is_err(),
            "no answer reaches the client"
        );
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        5,
        "but every request executed"
    );
    chaos.signal("TERM");
    let (status, summary) = chaos.wait();
    assert_eq!(status.code(), Some(0), "{summary}");
    assert!(summary.contains("5 requests"), "{summary}");
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_idem"))
        .arg("chaos")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{args:?}: {needle:?} not in {stderr}"
        );
    }
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let base = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "http://127.0.0.1:1",
    ];
    let with = |extra: &[&'static str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        args
    };
    fails_with(&with(&["--duplicate", "1.5"]), &["--duplicate", "`1.5`"]);
    fails_with(
        &with(&["--duplicate", "0.6", "--drop-response", "0.6"]),
        &["--drop-response 0.6 + --duplicate 0.6 add up to 1.2"],
    );
    fails_with(&with(&["--delay", "0.5"]), &["--delay", "P:DURATION"]);
    fails_with(&with(&["--methods", "PO ST"]), &["--methods"]);
    fails_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "https://example.com",
        ],
        &["--upstream", "only http"],
    );
    fails_with(&["--upstream", "http://127.0.0.1:1"], &["--listen"]);
}
