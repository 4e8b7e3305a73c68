//! The accept loop and the drain, on real sockets with a real hyper server.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(10);

async fn bound() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test]
async fn accept_hands_over_connections_with_nodelay_and_ends_when_stopped() {
    let listener = bound().await;
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let _client = TcpStream::connect(addr).await.unwrap();
    let (stream, peer) = tokio::time::timeout(DEADLINE, idem_serve::accept(&listener, &stop))
        .await
        .expect("a waiting client is accepted")
        .expect("not stopped");
    assert!(stream.nodelay().unwrap(), "TCP_NODELAY is set");
    assert!(peer.ip().is_loopback());

    let waiting = tokio::spawn({
        let stop = stop.clone();
        async move { idem_serve::accept(&listener, &stop).await.is_none() }
    });
    stop.cancel();
    let ended = tokio::time::timeout(DEADLINE, waiting).await;
    assert!(
        ended.expect("accept returns once stopped").unwrap(),
        "a stopped accept returns None"
    );
}

/// A server whose handler tells `started` it runs, then answers once
/// `release` is notified.
async fn held_server(
    listener: TcpListener,
    stop: CancellationToken,
    started: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    while let Some((stream, _)) = idem_serve::accept(&listener, &stop).await {
        let (started, release) = (started.clone(), release.clone());
        let service = service_fn(move |_request| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                let _ = started.send(());
                release.notified().await;
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"paid"))))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(connection);
    }
    graceful
}

async fn send_request(addr: std::net::SocketAddr) -> TcpStream {
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"POST /charges HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    client
}

#[tokio::test]
async fn drain_lets_the_exchange_in_progress_answer_then_closes_the_connection() {
    let listener = bound().await;
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let server = tokio::spawn(held_server(
        listener,
        stop.clone(),
        started_tx,
        release.clone(),
    ));

    let mut client = send_request(addr).await;
    tokio::time::timeout(DEADLINE, started.recv())
        .await
        .expect("the handler runs");
    stop.cancel();
    let graceful = server.await.unwrap();
    let drained = tokio::spawn(idem_serve::drain(graceful, DEADLINE));
    release.notify_one();

    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, client.read_to_end(&mut answer))
        .await
        .expect("the answer comes and the connection closes")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("paid"), "{answer}");
    assert!(
        drained.await.unwrap(),
        "every connection closed within the grace"
    );
}

#[tokio::test]
async fn drain_gives_up_on_an_exchange_that_outlasts_the_grace() {
    let listener = bound().await;
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let never = Arc::new(Notify::new());
    let server = tokio::spawn(held_server(listener, stop.clone(), started_tx, never));

    let _client = send_request(addr).await;
    tokio::time::timeout(DEADLINE, started.recv())
        .await
        .expect("the handler runs");
    stop.cancel();
    let graceful = server.await.unwrap();
    let closed = tokio::time::timeout(
        DEADLINE,
        idem_serve::drain(graceful, Duration::from_millis(200)),
    )
    .await
    .expect("drain returns after its grace, not never");
    assert!(!closed, "a handler that never answers outlasts the grace");
}
