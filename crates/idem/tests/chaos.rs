//! The real `idem chaos` binary in front of a counting upstream: it prints
//! where it listens and its seed, doubles effects with `--duplicate 1`,
//! logs each fault as a JSON line, prints a summary and exits 0 on
//! SIGINT/SIGTERM, and rejects bad flags with exit code 2.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use idem_testkit::counting_upstream;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use support::Idem;

/// `idem chaos ARGS…`, once it listens.
fn spawn_chaos(args: &[&str]) -> Idem {
    Idem::start(["chaos"].iter().chain(args), "warn")
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
        &["--listen", "127.0.0.1:0", "--upstream", "ftp://example.com"],
        &["--upstream", "is not http:// or https://"],
    );
    fails_with(&["--upstream", "http://127.0.0.1:1"], &["--listen"]);
}
