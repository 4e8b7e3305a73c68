//! A small keyed request next to large JSON bodies, against a real
//! `idem gateway` process. As found (issue 10, finding 4): one 10 MiB JSON
//! body took a second of CPU on a runtime worker while it was
//! canonicalised, and an unrelated small POST went from 0.04 s to 0.81 s.
//! Large bodies are now fingerprinted off the async workers.
//!
//! A test binary of its own, so no other test of this crate shares the
//! machine while it compares latencies.

mod support;

use idem_testkit::Upstream;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Idem;

/// A JSON document of about `bytes` bytes, with nesting and escapes so
/// canonicalisation has work to do.
fn large_json(bytes: usize) -> Vec<u8> {
    let mut out = b"{\"items\":[".to_vec();
    let mut i = 0u64;
    while out.len() < bytes {
        if i > 0 {
            out.push(b',');
        }
        write!(
            out,
            "{{\"z\":{i},\"a\":\"line\\n{i}\",\"m\":{{\"y\":[1,2.50,3e2],\"b\":true}}}}"
        )
        .unwrap();
        i += 1;
    }
    out.extend_from_slice(b"]}");
    out
}

/// POSTs `body` with `key` and reads the whole answer; its status.
fn post(addr: SocketAddr, key: &str, content_type: &str, body: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST /charges HTTP/1.1\r\nhost: t\r\nconnection: close\r\nauthorization: Bearer a\r\nidempotency-key: {key}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The median latency of small keyed POSTs with fresh keys: at least `n`,
/// and more until `enough` holds.
fn small_request_median(
    addr: SocketAddr,
    label: &str,
    n: usize,
    enough: impl Fn() -> bool,
) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut took = Vec::new();
    while took.len() < n || !enough() {
        assert!(Instant::now() < deadline, "{label}: not enough in 120 s");
        let started = Instant::now();
        let key = format!("small-{label}-{}", took.len());
        let status = post(addr, &key, "application/json", b"{\"amount\":1}");
        assert_eq!(status, 201);
        took.push(started.elapsed());
    }
    took.sort();
    eprintln!(
        "{label}: p50 {:?} p90 {:?} max {:?} of {}",
        took[took.len() / 2],
        took[took.len() * 9 / 10],
        took[took.len() - 1],
        took.len()
    );
    took[took.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_json_body_does_not_slow_a_small_request_by_more_than_twice() {
    let api = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, "").unwrap();
    let store = format!("sqlite:{}", dir.path().join("idem.db").display());
    let gw = Idem::gateway(api.addr, &store, &config);
    let addr = gw.addr;

    let measured = tokio::task::spawn_blocking(move || {
        // Warm up connections, the store and the page cache.
        small_request_median(addr, "warm", 5, || true);
        let alone = small_request_median(addr, "alone", 31, || true);

        let body = Arc::new(large_json(9 << 20));
        let stop = Arc::new(AtomicBool::new(false));
        let large_done = Arc::new(AtomicUsize::new(0));
        // Four at once, as found: more than the gateway's two workers.
        let senders: Vec<_> = (0..4)
            .map(|s| {
                let (body, stop, large_done) = (body.clone(), stop.clone(), large_done.clone());
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("large-{s}-{i}");
                        let status = post(addr, &key, "application/json", &body);
                        assert_eq!(status, 201, "a large JSON body");
                        large_done.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                })
            })
            .collect();
        // The first large body is on its way before measuring.
        let deadline = Instant::now() + Duration::from_secs(60);
        while large_done.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "no large body was answered");
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = large_done.load(Ordering::Relaxed);
        // Measured across at least three large bodies.
        let beside = small_request_median(addr, "beside", 31, || {
            large_done.load(Ordering::Relaxed) - before >= 8
        });
        let during = large_done.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        for sender in senders {
            sender.join().unwrap();
        }
        (alone, beside, during)
    })
    .await
    .unwrap();
    let (alone, beside, during) = measured;
    assert!(
        during >= 8,
        "no large body was processed while the small requests were measured"
    );
    // Twice the latency alone, plus a little for the machine's own noise
    // (the old behaviour was twenty times slower).
    let bound = alone * 2 + Duration::from_millis(20);
    assert!(
        beside <= bound,
        "a small request took {beside:?} (median) beside {during} large JSON bodies, {alone:?} alone"
    );
    eprintln!("small request median: {alone:?} alone, {beside:?} beside large JSON bodies ({during} processed meanwhile)");
}
