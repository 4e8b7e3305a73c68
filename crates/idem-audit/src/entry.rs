//! [`Audit`]: the auditor as a library, for a service's own `cargo test`
//! and for the `idem audit` command alike (the command builds its
//! [`AuditOptions`] from flags, a `--config` or an `--openapi` file and
//! runs them through [`Audit::from_options`]).

use crate::endpoint::{AuditOptions, Endpoint, InvalidEndpoint};
use crate::field::FieldPath;
use crate::outcome::{AuditReport, ScenarioId, Severity};
use crate::{AuditError, NoProgress, Progress};
use std::convert::Infallible;
use std::time::Duration;
use url::Url;

/// The host an in-process app's endpoints are written against until the
/// app has its real address (`.invalid` never resolves).
const IN_PROCESS_HOST: &str = "in-process.idem-audit.invalid";

/// What an [`Audit`] attacks: an API at a URL, or an app the audit serves
/// itself on 127.0.0.1 for the length of the run.
#[derive(Debug)]
pub enum Target {
    /// A running API; the URL is the operation's (`http://…/payments`), or
    /// a base that [`Audit::path`] extends.
    Url(Url),
    /// An in-process axum app (any tower service through
    /// [`Target::service`]), served on `127.0.0.1:0` during the run.
    App(axum::Router),
}

impl Target {
    /// An in-process axum app.
    pub fn app(router: axum::Router) -> Target {
        Target::App(router)
    }

    /// An in-process tower service that answers HTTP requests (every path
    /// goes to it).
    pub fn service<S>(service: S) -> Target
    where
        S: tower_service::Service<http::Request<axum::body::Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        Target::App(axum::Router::new().fallback_service(service))
    }

    /// A running API at `url`.
    pub fn url(url: Url) -> Target {
        Target::Url(url)
    }
}

impl From<axum::Router> for Target {
    fn from(router: axum::Router) -> Target {
        Target::App(router)
    }
}

impl From<Url> for Target {
    fn from(url: Url) -> Target {
        Target::Url(url)
    }
}

/// An audit to run: one endpoint built step by step, or the whole
/// [`AuditOptions`] of a run. [`Audit::run`] performs it and returns the
/// report; findings are in the report, never errors.
///
/// Audit an in-process axum app from a test (the app is served on
/// 127.0.0.1 for the run and stopped after it):
///
/// ```no_run
/// # async fn example(app: axum::Router) -> Result<(), idem_audit::AuditError> {
/// use idem_audit::{Audit, ScenarioId, Target};
/// let report = Audit::new(Target::app(app))
///     .path("/charges")
///     .body(r#"{"amount":100}"#)
///     .header("Authorization", "Bearer sk_test_a")
///     .count_path("/charges/count")
///     .scenarios([ScenarioId::SequentialReplay, ScenarioId::ConcurrentBurst])
///     .run()
///     .await?;
/// assert!(report.passed(), "{}", idem_audit::report::render(&report, Default::default(), Default::default()));
/// # Ok(()) }
/// ```
#[must_use = "an Audit does nothing until .run().await"]
pub struct Audit<'p> {
    app: Option<axum::Router>,
    options: AuditOptions,
    progress: &'p dyn Progress,
    /// A setting that could not be read (an id field path), reported by
    /// `run` before anything is sent.
    invalid: Option<(String, InvalidEndpoint)>,
}

impl std::fmt::Debug for Audit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("in_process", &self.app.is_some())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Audit<'static> {
    /// One endpoint on `target` with the defaults of [`Endpoint::new`]
    /// (POST, every default scenario, bursts of 20 in 5 rounds).
    pub fn new(target: impl Into<Target>) -> Audit<'static> {
        let (app, url) = match target.into() {
            Target::Url(url) => (None, url),
            Target::App(router) => (Some(router), in_process_base()),
        };
        Audit {
            app,
            options: AuditOptions::new(vec![Endpoint::new(url)]),
            progress: &NoProgress,
            invalid: None,
        }
    }

    /// A whole run as the command line describes it: every endpoint
    /// already built.
    pub fn from_options(options: AuditOptions) -> Audit<'static> {
        Audit {
            app: None,
            options,
            progress: &NoProgress,
            invalid: None,
        }
    }
}

impl<'p> Audit<'p> {
    /// Reports each scenario as it starts and finishes.
    pub fn progress<'q>(self, progress: &'q dyn Progress) -> Audit<'q> {
        Audit {
            app: self.app,
            options: self.options,
            progress,
            invalid: self.invalid,
        }
    }

    /// The operation's path, relative to the target (`/charges`).
    pub fn path(mut self, path: &str) -> Self {
        let endpoint = self.endpoint();
        if let Ok(url) = endpoint.url.join(path) {
            endpoint.url = url;
        }
        self
    }

    /// The request body (sent as JSON unless a header names a type).
    pub fn body(mut self, body: impl Into<bytes::Bytes>) -> Self {
        self.endpoint().body = body.into();
        self
    }

    /// A header on every request: the first tenant's credentials.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.endpoint()
            .headers
            .push((name.to_owned(), value.to_owned()));
        self
    }

    /// A second tenant's header (`cross-tenant` needs one).
    pub fn alt_header(mut self, name: &str, value: &str) -> Self {
        self.endpoint()
            .alt_headers
            .push((name.to_owned(), value.to_owned()));
        self
    }

    /// The count oracle at this path of the target, read with GET.
    pub fn count_path(mut self, path: &str) -> Self {
        let endpoint = self.endpoint();
        endpoint.count_url = endpoint.url.join(path).ok();
        self
    }

    /// The id oracle: a JSON path into 2xx answers (`id`, `data.charge.id`).
    pub fn id_field(mut self, path: &str) -> Self {
        match path.parse::<FieldPath>() {
            Ok(p) => self.endpoint().id_field = Some(p),
            Err(e) => {
                let label = self.endpoint().label();
                self.invalid = Some((label, InvalidEndpoint::new("id_field", e.to_string())));
            }
        }
        self
    }

    /// The scenarios to run (they run in their fixed order).
    pub fn scenarios(mut self, ids: impl IntoIterator<Item = ScenarioId>) -> Self {
        let mut ids: Vec<ScenarioId> = ids.into_iter().collect();
        ids.sort_by_key(|id| ScenarioId::ALL.iter().position(|a| a == id));
        ids.dedup();
        self.endpoint().scenarios = ids;
        self
    }

    /// Concurrent-burst rounds.
    pub fn rounds(mut self, rounds: u32) -> Self {
        self.endpoint().rounds = rounds;
        self
    }

    /// Same-key requests per burst round.
    pub fn burst(mut self, burst: u32) -> Self {
        self.endpoint().burst = burst;
        self
    }

    /// The least severity that fails the run (default medium).
    pub fn fail_on(mut self, severity: Severity) -> Self {
        self.options.fail_on = severity;
        self
    }

    /// Any other endpoint setting ([`Endpoint`]'s fields).
    pub fn configure(mut self, change: impl FnOnce(&mut Endpoint)) -> Self {
        change(self.endpoint());
        self
    }

    /// Any setting of the run ([`AuditOptions`]' fields).
    pub fn configure_run(mut self, change: impl FnOnce(&mut AuditOptions)) -> Self {
        change(&mut self.options);
        self
    }

    /// The endpoint the builder methods change: the last one.
    fn endpoint(&mut self) -> &mut Endpoint {
        if self.options.endpoints.is_empty() {
            self.options
                .endpoints
                .push(Endpoint::new(in_process_base()));
        }
        let last = self.options.endpoints.len() - 1;
        &mut self.options.endpoints[last]
    }

    /// Runs every endpoint's scenarios and returns the report. An
    /// in-process app is served on 127.0.0.1 for the run and stopped
    /// after it. Errors only when nothing could be audited (bad settings,
    /// an unreachable target, an unreadable oracle).
    pub async fn run(self) -> Result<AuditReport, AuditError> {
        if let Some((endpoint, problem)) = self.invalid {
            return Err(AuditError::Invalid { endpoint, problem });
        }
        let Some(app) = self.app else {
            return crate::audit(&self.options, self.progress).await;
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(AuditError::Serve)?;
        let addr = listener.local_addr().map_err(AuditError::Serve)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        let mut options = self.options;
        for endpoint in &mut options.endpoints {
            rebase(&mut endpoint.url, addr);
            for url in &mut endpoint.more_urls {
                rebase(url, addr);
            }
            if let Some(url) = &mut endpoint.count_url {
                rebase(url, addr);
            }
        }
        let report = crate::audit(&options, self.progress).await;
        let _ = stop.send(());
        // Every auditor connection is closed by now; a handler still
        // running (an abandoned request) gets a moment, then is dropped.
        let abort = server.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .is_err()
        {
            abort.abort();
        }
        report
    }
}

fn in_process_base() -> Url {
    Url::parse(&format!("http://{IN_PROCESS_HOST}/"))
        .unwrap_or_else(|_| unreachable!("a fixed URL parses"))
}

/// Points a URL written against the in-process placeholder at the served
/// app.
fn rebase(url: &mut Url, addr: std::net::SocketAddr) {
    if url.host_str() == Some(IN_PROCESS_HOST) {
        let _ = url.set_ip_host(addr.ip());
        let _ = url.set_port(Some(addr.port()));
    }
}
