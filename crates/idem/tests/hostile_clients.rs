//! Clients that stall or flood, against a real `idem gateway` process: the
//! gateway drops what hogs it and keeps answering everybody else.

mod support;

use idem_testkit::Upstream;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::Idem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn gateway(upstream: &Upstream, config: &str) -> (Idem, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, config).unwrap();
    let store = format!("sqlite:{}", dir.path().join("idem.db").display());
    (Idem::gateway(upstream.addr, &store, &file), dir)
}

/// Waits (up to `within`) until the server closes `stream`; returns what it
/// sent before closing.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().map(|()| got)
}

async fn keyed_post(addr: SocketAddr, key: &str) -> (u16, String) {
    let request = format!(
        "POST /charges HTTP/1.1\r\nhost: t\r\nconnection: close\r\nauthorization: Bearer a\r\nidempotency-key: {key}\r\ncontent-length: 2\r\n\r\n{{}}"
    );
    let run = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        String::from_utf8_lossy(&raw).into_owned()
    };
    let text = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("an answer within 30 s");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_dropped_within_the_header_timeout() {
    // As found: headers left unfinished for 40 s kept the connection, and
    // the request was then served.
    let api = Upstream::start().await;
    let (gw, _dir) = gateway(&api, "header_read_timeout = \"1s\"\n");
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"POST /charges HTTP/1.1\r\nhost: t\r\nidempotency-key: slow\r\n")
        .await
        .unwrap();
    // One more header byte every 200 ms: never a complete head.
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if stream.write_all(b"x").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), trickle).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(6),
        "the connection was kept for {elapsed:?}"
    );
    assert!(closed_within(&mut stream, Duration::from_secs(5))
        .await
        .is_some());
    assert_eq!(api.total(), 0, "the unfinished request was never forwarded");
    // Everybody else is still served.
    assert_eq!(keyed_post(gw.addr, "after-slowloris").await.0, 201);
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_cannot_exhaust_descriptors_or_starve_a_payment() {
    // As found: 20,200 idle connections ran the gateway out of file
    // descriptors and new clients were refused.
    let api = Upstream::start().await;
    let (gw, _dir) = gateway(
        &api,
        "max_connections = 300\nheader_read_timeout = \"2s\"\n",
    );
    let mut idle = Vec::new();
    for _ in 0..600 {
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(gw.addr)).await {
            Ok(Ok(s)) => idle.push(s),
            _ => break, // the listen backlog is full: that is the bound
        }
    }
    assert!(idle.len() > 300, "opened {} idle connections", idle.len());
    let descriptors = open_descriptors(gw.child.id());
    assert!(
        descriptors <= 300 + 64,
        "the gateway holds {descriptors} descriptors with max_connections = 300"
    );
    // A keyed payment waits its turn and executes once; its retry replays.
    let (status, text) = keyed_post(gw.addr, "during-flood").await;
    assert_eq!(status, 201, "{text}");
    let (status, text) = keyed_post(gw.addr, "during-flood").await;
    assert_eq!(status, 201, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("idempotent-replayed: true"),
        "{text}"
    );
    assert_eq!(api.count_key("during-flood"), 1);
    drop(idle);
}
