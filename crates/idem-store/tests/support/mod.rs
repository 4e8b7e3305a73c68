//! Helpers shared by the tests of the engines that need a server
//! (PostgreSQL, Redis): skipping (or failing, in CI) when the server is not
//! there, a store wrapper that cleans its namespace up, and a TCP proxy that
//! can cut the connection to the server without touching the server.
#![allow(dead_code)] // each test binary uses its own part

use idem_core::{Record, RecordId, Timestamp};
use idem_store::{Claim, ClaimOutcome, Completion, Store, StoreError, SweepReport, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Reports that `server` is not reachable. Under `CI=true` that is a
/// failure (CI starts the servers, so the tests must run there);
/// elsewhere the test is skipped with a note on how to start the server.
pub fn unavailable(server: &str, why: &str, start: &str) {
    let message = format!(
        "{server} is not reachable ({why}).\nStart it with:\n    {start}\n\
         (or point the tests elsewhere; see the top of this test file)"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true, so this test must not skip: {message}");
    }
    // Once per test binary, and straight to the terminal: the test harness
    // captures `eprintln!` of passing tests, and a skip must be seen.
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIPPING the {server} tests (they pass without checking anything): {message}\n"
        );
    });
}

/// An error with its causes (drivers keep the cause out of Display).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Polls `check` every 10 ms until it holds, failing after `within`.
pub async fn poll_until<F: std::future::Future<Output = bool>>(
    what: &str,
    within: std::time::Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A name no other test (in this or a concurrent run) uses.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a cleanup that needs async I/O from a `Drop`: on its own thread
/// with its own runtime, waiting for it (bounded by what it does).
pub fn block_on_thread<F>(make: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    let worker = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cleanup runtime");
        rt.block_on(make());
    });
    let _ = worker.join();
}

/// A store that runs `cleanup` after it is dropped (and closed).
pub struct Cleaned<S: Store> {
    store: Option<S>,
    cleanup: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<S: Store> Cleaned<S> {
    pub fn new(store: S, cleanup: impl FnOnce() + Send + Sync + 'static) -> Self {
        Cleaned {
            store: Some(store),
            cleanup: Some(Box::new(cleanup)),
        }
    }

    fn inner(&self) -> &S {
        self.store.as_ref().expect("present until dropped")
    }
}

impl<S: Store> Drop for Cleaned<S> {
    fn drop(&mut self) {
        drop(self.store.take());
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }
}

#[async_trait::async_trait]
impl<S: Store> Store for Cleaned<S> {
    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        self.inner().claim(claim).await
    }
    async fn renew(
        &self,
        id: &RecordId,
        token: u64,
        lease_until: Timestamp,
    ) -> Result<Write, StoreError> {
        self.inner().renew(id, token, lease_until).await
    }
    async fn complete(
        &self,
        id: &RecordId,
        token: u64,
        c: Completion,
    ) -> Result<Write, StoreError> {
        self.inner().complete(id, token, c).await
    }
    async fn mark_unknown(
        &self,
        id: &RecordId,
        token: u64,
        now: Timestamp,
    ) -> Result<Write, StoreError> {
        self.inner().mark_unknown(id, token, now).await
    }
    async fn release(&self, id: &RecordId, token: u64) -> Result<Write, StoreError> {
        self.inner().release(id, token).await
    }
    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.inner().get(id).await
    }
    async fn sweep(&self, now: Timestamp, limit: usize) -> Result<SweepReport, StoreError> {
        self.inner().sweep(now, limit).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner().ping().await
    }
    async fn changed(&self, id: &RecordId, timeout: std::time::Duration) {
        self.inner().changed(id, timeout).await
    }
    fn engine(&self) -> &'static str {
        self.inner().engine()
    }
}

/// Whether the proxy forwards or stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Stall,
}

/// A TCP proxy in front of a server, standing in for the network: `cut`
/// makes the server unreachable without stopping it (open connections go
/// silent, new ones are accepted and never answered: the worst case for a
/// client, no error, no reset), `restore` brings it back (the silent
/// connections are closed, as after a server restart).
pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, _) = watch::channel(Mode::Forward);
        let rx = mode.subscribe();
        let accept = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(relay(client, upstream, rx.clone()));
                while connections.try_join_next().is_some() {}
            }
        });
        Proxy { addr, mode, accept }
    }

    /// The server becomes unreachable (silently).
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// The server is reachable again.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Forward);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every
        // relay and closes their sockets.
        self.accept.abort();
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    if *mode.borrow_and_update() == Mode::Forward {
        let Ok(mut server) = TcpStream::connect(upstream).await else {
            return;
        };
        let stalled = tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
            _ = mode.wait_for(|m| *m == Mode::Stall) => true,
        };
        if !stalled {
            return;
        }
        drop(server);
    }
    // Silent until restored, then closed.
    let _ = mode.wait_for(|m| *m == Mode::Forward).await;
    let _ = client.shutdown().await;
}
