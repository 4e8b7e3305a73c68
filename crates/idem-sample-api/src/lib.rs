//! A small payments API that ships with one chosen idempotency bug, or none.
//!
//! `idem demo` audits it bare (duplicates found) and then behind idem's
//! gateway (clean); the auditor's tests start one server per [`Flaw`].
//!
//! The API, for every flaw:
//! - `POST /payments` with `Authorization` (the whole value is the tenant;
//!   without it 401) and a JSON body `{"amount": <integer > 0>, "currency":
//!   "usd"}` (invalid: 400, nothing executed). The payment takes
//!   [`SampleApiOptions::latency`], then answers 201
//!   `{"id":"pay_<n>","amount":..,"currency":..,"status":"succeeded"}`.
//!   Amounts above 1,000,000 are declined after the same latency: 402
//!   `{"error":"card_declined","decline_id":"dec_<n>"}`. Every execution
//!   gets a fresh `n`, so two executions are never mistaken for a replay.
//! - `GET /payments/count`: `{"count": N}`, the caller's payments, or all
//!   tenants' without `Authorization`.
//!
//! A payment runs to completion even if its client hangs up, as a real one
//! would; what the idempotency wrapper does about that depends on the flaw.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use idem_sample_api::{Flaw, SampleApiOptions};
//!
//! let api = idem_sample_api::start(SampleApiOptions::new(Flaw::CheckThenAct)).await?;
//! println!("a racy payments API at {}/payments", api.url());
//! // ... attack it ...
//! println!("{} payments, {} declines", api.payments(), api.declines());
//! api.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod app;
mod flaw;
mod server;

pub use flaw::{Flaw, UnknownFlaw};

use app::App;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How to run the sample API.
#[derive(Debug, Clone)]
pub struct SampleApiOptions {
    /// The bug it ships with.
    pub flaw: Flaw,
    /// How long a payment (or decline) takes; the window races happen in.
    /// Default 200 ms.
    pub latency: Duration,
    /// Where to listen. Default `127.0.0.1:0` (any free port).
    pub listen: SocketAddr,
}

impl SampleApiOptions {
    /// The defaults, with `flaw`.
    pub fn new(flaw: Flaw) -> Self {
        SampleApiOptions {
            flaw,
            latency: Duration::from_millis(200),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }
}

/// Binds the listener and starts serving on the current Tokio runtime.
pub async fn start(options: SampleApiOptions) -> std::io::Result<RunningSampleApi> {
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let addr = listener.local_addr()?;
    let app = Arc::new(App::new(options.flaw, options.latency));
    let front = server::Front::new(options.flaw, app.clone());
    let stop = CancellationToken::new();
    // Long enough for a payment in progress to answer, short enough not to
    // hold up a demo that is ending.
    let grace = options.latency + Duration::from_secs(1);
    let task = tokio::spawn(server::serve(listener, front, stop.clone(), grace));
    tracing::debug!(%addr, flaw = %options.flaw, "sample payments API listening");
    Ok(RunningSampleApi {
        addr,
        flaw: options.flaw,
        app,
        stop: stop.drop_guard(),
        task,
    })
}

/// A sample API that is serving. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct RunningSampleApi {
    addr: SocketAddr,
    flaw: Flaw,
    app: Arc<App>,
    stop: DropGuard,
    task: JoinHandle<()>,
}

impl RunningSampleApi {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The flaw it ships with.
    pub fn flaw(&self) -> Flaw {
        self.flaw
    }

    /// Payments created so far, all tenants: the side effect a duplicate
    /// repeats.
    pub fn payments(&self) -> u64 {
        self.app.payments()
    }

    /// Declined attempts executed so far.
    pub fn declines(&self) -> u64 {
        self.app.declines()
    }

    /// Stops accepting, lets exchanges in progress answer (up to the
    /// latency plus a second), closes every connection, and returns.
    /// Payments already started still complete in the background.
    pub async fn shutdown(self) {
        drop(self.stop);
        let _ = self.task.await;
    }
}
