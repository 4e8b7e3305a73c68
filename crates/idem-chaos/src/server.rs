//! Listening, serving, and the summary at the end.

use crate::fault::{Faults, Methods, ParseError};
use crate::io::{AbortHandle, ClientStream};
use crate::log::FaultLog;
use crate::proxy::Chaos;
use http::Uri;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long [`RunningChaos::shutdown`] lets requests in flight finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything `idem chaos` is told on its command line.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Where to listen, e.g. 127.0.0.1:8081 (port 0 picks one).
    pub listen: SocketAddr,
    /// The upstream, `http[s]://host:port[/base]` (see
    /// [`parse_upstream`](crate::parse_upstream)).
    pub upstream: Uri,
    /// PEM file of the CA certificates an `https://` upstream is verified
    /// against, instead of Mozilla's roots.
    pub upstream_ca: Option<PathBuf>,
    /// The probability of each fault.
    pub faults: Faults,
    /// Which methods get faults; the others pass through untouched.
    pub methods: Methods,
    /// The RNG's seed; `None` draws one from the OS (see
    /// [`RunningChaos::seed`]).
    pub seed: Option<u64>,
    /// Where to write one JSON line per injected fault.
    pub log: Option<PathBuf>,
}

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A bad option, e.g. probabilities adding up to more than 1.
    #[error(transparent)]
    Invalid(#[from] ParseError),
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The `--upstream-ca` file cannot be used.
    #[error(transparent)]
    Tls(#[from] idem_tls::TlsFileError),
    /// The log file cannot be created.
    #[error("cannot create the fault log {}: {source}", path.display())]
    Log {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What the proxy did, counted since it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The RNG's seed: `--seed` with this value repeats the decisions.
    pub seed: u64,
    /// The methods that get faults.
    pub methods: String,
    /// Every request received.
    pub requests: u64,
    /// Requests whose method gets faults.
    pub selected: u64,
    /// Selected requests that drew no fault.
    pub passed: u64,
    /// Requests delivered twice.
    pub duplicate: u64,
    /// Requests executed whose answer was dropped.
    pub drop_response: u64,
    /// Requests never forwarded.
    pub drop_request: u64,
    /// Requests held before forwarding.
    pub delay: u64,
    /// Requests cut before forwarding.
    pub reset: u64,
    /// Upstream requests that failed (connection refused, reset, ...).
    pub upstream_errors: u64,
}

impl Summary {
    /// Injected faults in all.
    pub fn faults(&self) -> u64 {
        self.duplicate + self.drop_response + self.drop_request + self.delay + self.reset
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "idem chaos summary (seed {}): {} requests, {} of them selected for faults ({}), {} faults injected",
            self.seed,
            self.requests,
            self.selected,
            self.methods,
            self.faults()
        )?;
        for (name, n) in [
            ("passed", self.passed),
            ("duplicate", self.duplicate),
            ("drop_response", self.drop_response),
            ("drop_request", self.drop_request),
            ("delay", self.delay),
            ("reset", self.reset),
            ("upstream_errors", self.upstream_errors),
        ] {
            writeln!(f, "  {name:<16} {n}")?;
        }
        Ok(())
    }
}

/// A proxy that is running; [`RunningChaos::shutdown`] stops it.
#[derive(Debug)]
pub struct RunningChaos {
    addr: SocketAddr,
    seed: u64,
    methods: String,
    chaos: Arc<Chaos>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningChaos {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The seed in use (given, or drawn from the OS).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The counts so far.
    pub fn summary(&self) -> Summary {
        let c = self.chaos.counts();
        Summary {
            seed: self.seed,
            methods: self.methods.clone(),
            requests: c.requests,
            selected: c.selected,
            passed: c.passed,
            duplicate: c.duplicate,
            drop_response: c.drop_response,
            drop_request: c.drop_request,
            delay: c.delay,
            reset: c.reset,
            upstream_errors: self.chaos.upstream_errors(),
        }
    }

    /// Stops accepting, lets requests in flight finish (for a few seconds
    /// at most) and returns the final counts.
    pub async fn shutdown(mut self) -> Summary {
        self.stop.cancel();
        let _ = (&mut self.task).await;
        self.summary()
    }
}

/// Validates the options, binds, and starts serving in the background.
pub async fn start(options: ChaosOptions) -> Result<RunningChaos, ChaosError> {
    options.faults.validate()?;
    let upstream = crate::parse_upstream(&options.upstream.to_string())?;
    let log = match &options.log {
        Some(path) => Some(FaultLog::create(path).map_err(|source| ChaosError::Log {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let roots = idem_tls::roots(
        options
            .upstream_ca
            .as_deref()
            .map(|ca| ("--upstream-ca", ca)),
    )?;
    let tls = idem_tls::client_config(roots, None)?;
    let seed = options.seed.unwrap_or_else(rand::random);
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| ChaosError::Listen {
                addr: options.listen,
                source,
            })?;
    let addr = listener.local_addr().map_err(|source| ChaosError::Listen {
        addr: options.listen,
        source,
    })?;
    let chaos = Arc::new(Chaos::new(
        &upstream,
        &options.faults,
        options.methods.clone(),
        seed,
        log,
        tls,
    ));
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, chaos.clone(), stop.clone()));
    tracing::info!(%addr, %upstream, seed, "idem chaos listening");
    Ok(RunningChaos {
        addr,
        seed,
        methods: options.methods.to_string(),
        chaos,
        stop,
        task,
    })
}

async fn serve(listener: TcpListener, chaos: Arc<Chaos>, stop: CancellationToken) {
    let graceful = GracefulShutdown::new();
    while let Some((stream, _)) = idem_serve::accept(&listener, &stop).await {
        let abort = AbortHandle::default();
        let io = TokioIo::new(ClientStream::new(stream, abort.clone()));
        let chaos = chaos.clone();
        let service = hyper::service::service_fn(move |request| {
            let chaos = chaos.clone();
            let abort = abort.clone();
            async move { chaos.handle(request, abort).await }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(io, service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "client connection ended");
            }
        });
    }
    drop(listener);
    if !idem_serve::drain(graceful, SHUTDOWN_GRACE).await {
        tracing::warn!("requests still in flight after the grace period; leaving them");
    }
}
