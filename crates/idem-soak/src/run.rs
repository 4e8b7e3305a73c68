//! Running the operations and reading the count around them.

use crate::input::InputError;
use crate::report::SoakReport;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method};
use idem_client::{ResponseExt, RetryPolicy};
use idem_core::causes::Causes;
use idem_core::count::{CountError, CountField};
use reqwest::Url;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// How long one read of the count may take.
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything `idem soak` is told.
///
/// ```
/// use idem_soak::{parse_url, SoakOptions};
/// let options = SoakOptions::new(
///     parse_url("http://127.0.0.1:8081/charges").unwrap(),
///     parse_url("http://127.0.0.1:3000/count").unwrap(),
///     300,
/// );
/// assert_eq!(options.method, http::Method::POST);
/// assert!(options.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Where each operation goes.
    pub url: Url,
    /// Its method (default POST).
    pub method: Method,
    /// Its body, the same for every operation (sent as
    /// `application/json` unless `headers` names another type).
    pub body: Option<Bytes>,
    /// Extra request headers (never `Idempotency-Key`).
    pub headers: HeaderMap,
    /// Logical operations to run.
    pub requests: u64,
    /// Operations in flight at once.
    pub concurrency: u64,
    /// Where the side-effect count is read (GET), before and after.
    pub count_url: Url,
    /// Where the count is in that JSON.
    pub count_field: CountField,
    /// How the client retries each operation.
    pub policy: RetryPolicy,
}

impl SoakOptions {
    /// POST with no body, concurrency 4, the count as a bare number or
    /// `{"count":N}`, the client's default policy.
    pub fn new(url: Url, count_url: Url, requests: u64) -> Self {
        SoakOptions {
            url,
            method: Method::POST,
            body: None,
            headers: HeaderMap::new(),
            requests,
            concurrency: 4,
            count_url,
            count_field: CountField::Default,
            policy: RetryPolicy::default(),
        }
    }

    /// Checks what the parsers cannot see on their own.
    pub fn validate(&self) -> Result<(), InputError> {
        if self.requests == 0 {
            return Err(InputError::Usage(
                "--requests must be at least 1: a soak of no operations measures nothing"
                    .to_owned(),
            ));
        }
        if self.concurrency == 0 {
            return Err(InputError::Usage(
                "--concurrency must be at least 1".to_owned(),
            ));
        }
        if self
            .headers
            .contains_key(idem_core::headers::IDEMPOTENCY_KEY)
        {
            return Err(InputError::KeyHeader("--header".to_owned()));
        }
        for (flag, url) in [("--url", &self.url), ("--count-url", &self.count_url)] {
            if url.scheme() != "http" {
                return Err(InputError::Usage(format!(
                    "{flag}: {}",
                    InputError::Scheme(url.to_string())
                )));
            }
        }
        Ok(())
    }
}

/// Why a soak could not run or could not be counted.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// The options do not fit together.
    #[error(transparent)]
    Invalid(#[from] InputError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The count endpoint could not be read.
    #[error("--count-url {url}: {what}")]
    Count {
        /// The count URL.
        url: String,
        /// What went wrong.
        what: String,
    },
    /// The count endpoint's body has no count where expected.
    #[error("--count-url {url}: {source}")]
    CountField {
        /// The count URL.
        url: String,
        /// What is wrong with the body.
        #[source]
        source: CountError,
    },
}

/// Where a soak is, for a progress display.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Operations finished.
    pub done: u64,
    /// Operations in all.
    pub total: u64,
    /// Finished with a 2xx.
    pub succeeded: u64,
    /// Finished with `outcome-unknown`.
    pub outcome_unknown: u64,
    /// Finished otherwise.
    pub failed: u64,
}

/// How one operation ended.
enum Ended {
    Succeeded { replayed: bool },
    OutcomeUnknown,
    Failed(String),
}

/// Reads the count once.
pub async fn read_count(
    client: &reqwest::Client,
    url: &Url,
    field: &CountField,
) -> Result<u64, SoakError> {
    let fail = |what: String| SoakError::Count {
        url: url.to_string(),
        what,
    };
    let response = client
        .get(url.clone())
        .timeout(COUNT_TIMEOUT)
        .send()
        .await
        .map_err(|e| fail(format!("cannot read the count: {}", Causes(&e))))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(format!(
            "answered {status}, expected 200 with the count"
        )));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| fail(format!("the body broke off: {}", Causes(&e))))?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        fail(format!(
            "the body is not JSON ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        ))
    })?;
    field
        .extract(&value)
        .map_err(|source| SoakError::CountField {
            url: url.to_string(),
            source,
        })
}

/// One logical operation through the retrying client.
async fn operation(
    client: &reqwest_middleware::ClientWithMiddleware,
    options: &SoakOptions,
) -> (Ended, u32) {
    let mut request = client
        .request(options.method.clone(), options.url.clone())
        .headers(options.headers.clone());
    if let Some(body) = &options.body {
        if !options.headers.contains_key(CONTENT_TYPE) {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        request = request.body(body.clone());
    }
    match request.send().await.map_err(idem_client::Error::from) {
        Ok(response) => {
            let (attempts, replayed) = response
                .operation()
                .map_or((1, false), |op| (op.attempts, op.replayed));
            let status = response.status();
            match response.bytes().await {
                Ok(_) if status.is_success() => (Ended::Succeeded { replayed }, attempts),
                Ok(_) => (
                    Ended::Failed(format!("status {}", status.as_u16())),
                    attempts,
                ),
                Err(_) => (
                    Ended::Failed("the response body broke off".to_owned()),
                    attempts,
                ),
            }
        }
        Err(e) if e.is_outcome_unknown() => (Ended::OutcomeUnknown, e.attempts()),
        Err(idem_client::Error::NoResponse {
            reason, attempts, ..
        }) => (Ended::Failed(format!("no response ({reason})")), attempts),
        Err(e) => {
            tracing::debug!(error = %Causes(&e), "operation failed");
            (
                Ended::Failed("request error".to_owned()),
                e.attempts().max(1),
            )
        }
    }
}

/// Runs the soak: reads the count, runs `options.requests` logical
/// operations (`options.concurrency` at a time) through the retrying
/// client, reads the count again, and reports. `progress` is called after
/// every operation.
///
/// ```no_run
/// # async fn f() -> Result<(), idem_soak::SoakError> {
/// use idem_soak::{parse_url, run, SoakOptions};
/// let options = SoakOptions::new(
///     parse_url("http://127.0.0.1:8081/charges")?,
///     parse_url("http://127.0.0.1:3000/count")?,
///     300,
/// );
/// let report = run(&options, &|p| eprint!("\r{}/{}", p.done, p.total)).await?;
/// println!("{report}");
/// # Ok(()) }
/// ```
pub async fn run(
    options: &SoakOptions,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<SoakReport, SoakError> {
    options.validate()?;
    let count_client = reqwest::Client::builder()
        .build()
        .map_err(SoakError::Client)?;
    let inner = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency as usize)
        .build()
        .map_err(SoakError::Client)?;
    let client = idem_client::client(inner, options.policy.clone());

    let count_before = read_count(&count_client, &options.count_url, &options.count_field).await?;
    let started = Instant::now();
    let mut state = Progress {
        total: options.requests,
        ..Progress::default()
    };
    let mut replayed = 0;
    let mut attempts = 0u64;
    let mut failures = BTreeMap::new();
    let mut ended = futures_util::stream::iter(0..options.requests)
        .map(|_| operation(&client, options))
        .buffer_unordered(usize::try_from(options.concurrency).unwrap_or(usize::MAX));
    while let Some((end, tries)) = ended.next().await {
        state.done += 1;
        attempts += u64::from(tries);
        match end {
            Ended::Succeeded { replayed: r } => {
                state.succeeded += 1;
                replayed += u64::from(r);
            }
            Ended::OutcomeUnknown => state.outcome_unknown += 1,
            Ended::Failed(reason) => {
                state.failed += 1;
                *failures.entry(reason).or_insert(0u64) += 1;
            }
        }
        progress(&state);
    }
    let elapsed = started.elapsed();
    let count_after = read_count(&count_client, &options.count_url, &options.count_field).await?;

    if count_after < count_before {
        tracing::warn!(
            count_before,
            count_after,
            "the count went down during the soak; counting 0 effects"
        );
    }
    let n = options.requests;
    let effects = count_after.saturating_sub(count_before);
    let duplicates = effects.saturating_sub(n);
    Ok(SoakReport {
        method: options.method.to_string(),
        url: options.url.to_string(),
        logical_operations: n,
        effects,
        duplicates,
        duplicate_rate: duplicates as f64 / n as f64,
        upper_bound_95: idem_math::formula::clopper_pearson_95(duplicates, n),
        succeeded: state.succeeded,
        replayed,
        outcome_unknown: state.outcome_unknown,
        failed: state.failed,
        failures,
        attempts,
        count_before,
        count_after,
        concurrency: options.concurrency,
        elapsed_seconds: elapsed.as_secs_f64(),
    })
}
