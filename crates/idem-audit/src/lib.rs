//! `idem audit`: find duplicate-delivery bugs in any HTTP API, with
//! evidence.
//!
//! An audit attacks each [`Endpoint`] with the scenarios of
//! [`ScenarioId`]: sequential replays, concurrent bursts released within
//! microseconds, a response lost after the server acted, a client that
//! hangs up, a changed payload, another tenant, bad keys, error outcomes.
//! Each result carries its verdict (pass, fail, indeterminate, skipped), a
//! severity and the evidence behind it: what was sent, what came back,
//! what the oracle saw, and curl lines that reproduce it. Where no oracle
//! can rule a duplicate out, the verdict is `indeterminate`, never a silent
//! pass. docs/audit.md is the user's guide and the JSON report's schema.
//!
//! [`Audit`] is the entry point, for a service's own `cargo test` (it can
//! serve an in-process axum app on 127.0.0.1 for the run) and for the
//! `idem audit` command alike:
//!
//! ```no_run
//! # async fn example() -> Result<(), idem_audit::AuditError> {
//! use idem_audit::{Audit, Target};
//! let url = "http://127.0.0.1:8080/payments".parse().unwrap();
//! let report = Audit::new(Target::url(url))
//!     .body(r#"{"amount":1000,"currency":"eur"}"#)
//!     .header("Authorization", "Bearer sk_test_a")
//!     .id_field("id")
//!     .run()
//!     .await?;
//! println!("{}", idem_audit::report::render(&report, Default::default(), Default::default()));
//! std::process::exit(report.exit_code().into());
//! # }
//! ```
//!
//! `crates/idem-audit/tests/in_process.rs` audits an axum app with and
//! without the `idem-tower` layer.

mod bound;
pub mod config;
mod endpoint;
mod entry;
mod field;
mod http;
pub mod openapi;
mod oracle;
pub mod outcome;
pub mod report;
mod scenario;
mod tls;

pub use config::{ConfigError, FileConfig};
pub use endpoint::{AuditOptions, Endpoint, InvalidEndpoint};
pub use entry::{Audit, Target};
pub use field::{CountError, CountField, CountFieldError, FieldPath, FieldPathError};
pub use openapi::{OpenApiError, OpenApiSettings};
pub use oracle::OracleError;
pub use outcome::{
    Answer, AuditReport, Bound, EndpointSummary, Evidence, Exchange, OracleReading, ScenarioId,
    ScenarioResult, Seen, SentRequest, Severity, UnknownScenario, UnknownSeverity, Verdict,
    VolumeOutlook,
};
pub use tls::TlsSettings;

use oracle::Tenant;
use scenario::Ctx;
use std::time::Duration;
use tokio::time::Instant;

/// Why an audit could not run at all (the command exits 2).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The endpoint's settings do not fit together.
    #[error("{endpoint}: {problem}")]
    Invalid {
        /// The endpoint's name.
        endpoint: String,
        /// What is wrong, naming the setting.
        problem: InvalidEndpoint,
    },
    /// The target cannot be reached.
    #[error("{endpoint}: cannot reach the API: {reason}")]
    Unreachable {
        /// The endpoint's name.
        endpoint: String,
        /// The connection error.
        reason: String,
    },
    /// A counting oracle cannot be read before anything was sent.
    #[error("{endpoint}: {error}")]
    Oracle {
        /// The endpoint's name.
        endpoint: String,
        /// What failed (shown in the message, so not also a `source`).
        error: OracleError,
    },
    /// The TLS settings cannot be used (a `--cacert` file, say).
    #[error(transparent)]
    Tls(#[from] idem_tls::TlsFileError),
    /// An in-process app could not be served on 127.0.0.1.
    #[error("cannot serve the app on 127.0.0.1: {0}")]
    Serve(#[source] std::io::Error),
    /// No endpoint to audit.
    #[error("nothing to audit: give --url or a --config with at least one [[endpoint]]")]
    NoEndpoint,
}

/// Hears about a run as it goes (the CLI draws progress with it).
pub trait Progress: Send + Sync {
    /// A scenario is about to run.
    fn started(&self, endpoint: &str, scenario: ScenarioId) {
        let _ = (endpoint, scenario);
    }
    /// A scenario finished.
    fn finished(&self, result: &ScenarioResult) {
        let _ = result;
    }
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Runs every endpoint's scenarios, one after another, and returns the
/// report ([`Audit::from_options`] does the same; [`Audit::run`] calls
/// this). Errors only when nothing could be audited (bad settings, an
/// unreachable target, an unreadable oracle); findings are never errors.
pub async fn audit(
    options: &AuditOptions,
    progress: &dyn Progress,
) -> Result<AuditReport, AuditError> {
    if options.endpoints.is_empty() {
        return Err(AuditError::NoEndpoint);
    }
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let started = Instant::now();
    for endpoint in &options.endpoints {
        endpoint.validate().map_err(|problem| AuditError::Invalid {
            endpoint: endpoint.label(),
            problem,
        })?;
    }
    let tls = tls::Tls::new(&options.tls)?;
    let client_for = |endpoint: &Endpoint| http::Client {
        connect_timeout: Duration::from_secs(5).min(endpoint.timeout),
        response_timeout: endpoint.timeout,
        tls: tls.clone(),
    };
    // Every endpoint is checked before any of them gets a request with an
    // effect: a bad last endpoint must not cost the first one's effects.
    for endpoint in &options.endpoints {
        preflight(endpoint, client_for(endpoint)).await?;
    }
    let mut scenarios = Vec::new();
    let mut endpoints = Vec::new();
    for endpoint in &options.endpoints {
        let client = client_for(endpoint);
        let ctx = Ctx::new(endpoint, client, options.show_secrets);
        endpoints.push(EndpointSummary {
            name: endpoint.label(),
            method: endpoint.method.to_string(),
            url: endpoint.url.to_string(),
            more_urls: endpoint.more_urls.iter().map(ToString::to_string).collect(),
            oracles: endpoint.oracle_names(),
            key_declared: endpoint.key_declared,
            origin: endpoint.origin.clone(),
        });
        for &id in &endpoint.scenarios {
            progress.started(&endpoint.label(), id);
            tracing::debug!(endpoint = %endpoint.label(), scenario = %id, "scenario started");
            let result = scenario::run_scenario(id, &ctx).await;
            tracing::debug!(scenario = %id, verdict = %result.verdict, "scenario finished");
            progress.finished(&result);
            scenarios.push(result);
        }
    }
    let bound = bound::bound(&scenarios);
    let volume = options
        .volume
        .and_then(|v| bound::outlook(&bound, v, options.ambiguous_rate));
    Ok(AuditReport {
        verdict: AuditReport::overall(&scenarios, options.fail_on),
        fail_on: options.fail_on,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        endpoints,
        scenarios,
        bound,
        volume,
    })
}

/// Before any side effect: the API accepts connections (and completes a
/// TLS handshake, for https) and every counting oracle can be read, for
/// each tenant that will be used.
async fn preflight(endpoint: &Endpoint, client: http::Client) -> Result<(), AuditError> {
    for url in endpoint.urls() {
        client
            .connect(url)
            .await
            .map_err(|e| AuditError::Unreachable {
                endpoint: endpoint.label(),
                reason: e.to_string(),
            })?;
    }
    let oracles = oracle::Oracles::new(endpoint, client);
    let mut tenants = vec![Tenant::Primary];
    if !endpoint.alt_headers.is_empty() {
        tenants.push(Tenant::Alternate);
    }
    for tenant in tenants {
        oracles
            .count(tenant)
            .await
            .map_err(|error| AuditError::Oracle {
                endpoint: endpoint.label(),
                error,
            })?;
    }
    Ok(())
}
