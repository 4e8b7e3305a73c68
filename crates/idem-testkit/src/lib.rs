//! Helpers the test suites of several idem crates share, kept once here.
//!
//! - [`unavailable`]: a local server (PostgreSQL, Redis) is not reachable:
//!   a failure under `CI=true` (CI starts the servers), elsewhere a skip
//!   with the command that starts it.
//! - [`poll_until`]: wait on a condition with a deadline, never a bare sleep.
//! - [`unique_name`], [`block_on_thread`]: per-test namespaces and their
//!   cleanup from `Drop`.
//! - [`Proxy`]: a TCP proxy that cuts a server off without stopping it.
//! - [`Upstream`]: a counting upstream, a real HTTP server that records
//!   every request (counts per path, idempotency key, method) and answers
//!   it as the test says; [`counting_upstream`] when a count of side
//!   effects is all a test needs.
//! - [`browser`]: a real headless Chromium driven over WebDriver
//!   (chromedriver + fantoccini), for tests that assert on rendered pages.

pub mod browser;
pub mod tls;
mod upstream;

pub use upstream::{counting_upstream, reply, Body, Gate, Reply, Seen, Upstream};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How to start the local PostgreSQL (as `.ci/run` does).
pub const PG_START: &str =
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";
/// How to start the local Redis (as `.ci/run` does).
pub const REDIS_START: &str = "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
     --save \"\" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log";

/// The PostgreSQL server the tests use: `IDEM_TEST_POSTGRES_URL`, by
/// default the local one `.ci/run` starts.
pub fn postgres_url() -> String {
    std::env::var("IDEM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The socket address of [`postgres_url`]'s server (a TCP cut [`Proxy`]
/// needs it); a Unix-socket URL means the local server on 127.0.0.1.
pub fn postgres_addr() -> SocketAddr {
    let config: tokio_postgres::Config = postgres_url()
        .parse()
        .expect("IDEM_TEST_POSTGRES_URL is a PostgreSQL URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    use std::net::ToSocketAddrs;
    (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .expect("the test PostgreSQL host resolves")
}

/// The Redis server the tests use: `IDEM_TEST_REDIS_URL`, by default the
/// local one `.ci/run` starts.
pub fn redis_url() -> String {
    std::env::var("IDEM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// The socket address of [`redis_url`]'s server (a [`Proxy`] needs it).
pub fn redis_addr() -> SocketAddr {
    let url = redis_url();
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', '?']).next())
        .map(|a| a.rsplit('@').next().unwrap_or(a))
        .unwrap_or("127.0.0.1:6379");
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:6379")
    };
    use std::net::ToSocketAddrs;
    authority
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .expect("the test Redis host resolves")
}

/// Reports that `server` is not reachable. Under `CI=true` that is a
/// failure (CI starts the servers, so the tests must run there);
/// elsewhere the test is skipped with a note on how to start the server.
pub fn unavailable(server: &str, why: &str, start: &str) {
    let message = format!(
        "{server} is not reachable ({why}).\nStart it with:\n    {start}\n\
         (or point the tests elsewhere: IDEM_TEST_POSTGRES_URL, IDEM_TEST_REDIS_URL)"
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

/// An error followed by its causes, `: `-separated, as anyhow's `{:#}`
/// prints it: what a test asserts about why something failed, or a skip
/// message shows (errors such as `StoreError` and tokio-postgres's keep the
/// cause out of their Display).
pub fn chain(e: &dyn std::error::Error) -> String {
    idem_core::causes::Causes(e).to_string()
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

/// Whether the Redis server at `url` answers PING within `within`.
pub async fn redis_ping(url: &str, within: Duration) -> Result<(), String> {
    let ping = async {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(within, ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {within:?}")),
    }
}

/// Deletes every key under `prefix` on each of `urls` (one Redis server,
/// or the nodes of a cluster): a test's cleanup, after its store closed.
/// Blocks (on a thread of its own, so it can run in `Drop`).
pub fn delete_redis_prefix(urls: Vec<String>, prefix: String) {
    block_on_thread(move || async move {
        for url in urls {
            let Ok(client) = redis::Client::open(url) else {
                continue;
            };
            let connect = client.get_multiplexed_async_connection();
            let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(3), connect).await
            else {
                continue;
            };
            let mut cursor = 0u64;
            loop {
                let Ok((next, keys)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{prefix}:*"))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                else {
                    break;
                };
                // One key per command: on a cluster node keys of several
                // slots cannot go in one DEL.
                for key in keys {
                    let _: Result<i64, _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
    });
}

/// Whether the proxy forwards or stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Stall,
    /// Requests reach the server; its replies are lost.
    DropReplies,
}

/// A TCP proxy in front of a server, standing in for the network: `cut`
/// makes the server unreachable without stopping it (open connections go
/// silent, new ones are accepted and never answered: the worst case for a
/// client, no error, no reset), `restore` brings it back (the silent
/// connections are closed, as after a server restart).
pub struct Proxy {
    /// Where clients connect instead of the server.
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("mode", &*self.mode.borrow())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy on a free 127.0.0.1 port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, _) = watch::channel(Mode::Forward);
        let rx = mode.subscribe();
        let accept = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            // Until the test drops the proxy (which aborts this task).
            let forever = tokio_util::sync::CancellationToken::new();
            while let Some((client, _)) = idem_serve::accept(&listener, &forever).await {
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

    /// Requests still reach the server and run there, but its replies are
    /// lost (a reply path that fails, a middlebox that eats packets one
    /// way): the client sees a timeout for operations that took effect.
    /// New connections are accepted and treated the same way.
    pub fn drop_replies(&self) {
        self.mode.send_replace(Mode::DropReplies);
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
    let start = *mode.borrow_and_update();
    if start != Mode::Stall {
        let Ok(mut server) = TcpStream::connect(upstream).await else {
            return;
        };
        if start == Mode::Forward {
            let interrupted = tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => None,
                m = mode.wait_for(|m| *m != Mode::Forward) => m.ok().map(|m| *m),
            };
            match interrupted {
                None => return,
                Some(Mode::DropReplies) => drop_replies(&mut client, &mut server, &mut mode).await,
                Some(_) => {}
            }
        } else {
            drop_replies(&mut client, &mut server, &mut mode).await;
        }
        drop(server);
    }
    // Silent until restored, then closed.
    let _ = mode.wait_for(|m| *m == Mode::Forward).await;
    let _ = client.shutdown().await;
}

/// Forwards the client's bytes and discards the server's, until the mode
/// changes.
async fn drop_replies(
    client: &mut TcpStream,
    server: &mut TcpStream,
    mode: &mut watch::Receiver<Mode>,
) {
    let (mut client_read, _client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let forward = tokio::io::copy(&mut client_read, &mut server_write);
    let mut sink = tokio::io::sink();
    let discard = tokio::io::copy(&mut server_read, &mut sink);
    tokio::select! {
        _ = async { tokio::join!(forward, discard) } => {}
        _ = mode.wait_for(|m| *m != Mode::DropReplies) => {}
    }
}
