//! `idem audit`: attack an API with duplicate delivery (see docs/audit.md).

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use idem_audit::config::{
    parse_body, parse_duration, parse_fail_on, parse_header, parse_method, parse_scenarios,
    parse_url,
};
use idem_audit::openapi::OpenApiSettings;
use idem_audit::report::{ReportFormat, Style};
use idem_audit::{
    AuditOptions, AuditReport, CountField, Endpoint, FieldPath, FileConfig, Progress, ScenarioId,
    ScenarioResult, Severity, TlsSettings, Verdict,
};
use idem_math::{Rate, Volume};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use url::Url;

/// Flags of `idem audit`.
#[derive(Args)]
pub(crate) struct AuditArgs {
    /// The operation to attack, e.g. http://127.0.0.1:8080/payments or
    /// https://staging.example.com/v1/charges. Use a test or staging
    /// environment: every scenario creates real effects. Repeat it with
    /// each instance's URL for the operation (several gateways or API
    /// servers behind a load balancer): requests then rotate across them,
    /// so a key's duplicates land on different instances.
    #[arg(long, value_name = "URL", value_parser = parse_url, required_unless_present_any = ["config", "openapi"])]
    url: Vec<Url>,
    /// Its method (default POST).
    #[arg(long, value_name = "METHOD", value_parser = parse_method)]
    method: Option<http::Method>,
    /// Its body, or @FILE to read it. Sent as application/json unless
    /// --header sets Content-Type.
    #[arg(long, value_name = "JSON|@FILE", value_parser = parse_body)]
    body: Option<Bytes>,
    /// A header on every request, 'Name: value' (the first tenant's
    /// credentials); repeat for more.
    #[arg(long = "header", value_name = "'K: V'", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Replaces the same-named --header for a second tenant (another API
    /// key); cross-tenant needs it.
    #[arg(long = "alt-header", value_name = "'K: V'", value_parser = parse_header)]
    alt_headers: Vec<(String, String)>,
    /// The header that carries the key (default Idempotency-Key).
    #[arg(long, value_name = "NAME")]
    key_header: Option<String>,
    /// Oracle: a JSON path into 2xx answers whose value is new per
    /// execution (e.g. id, data.payment.id).
    #[arg(long, value_name = "PATH")]
    id_field: Option<FieldPath>,
    /// A JSON path left out when answers are compared (a per-response
    /// trace id or timestamp that even a faithful replay changes); repeat
    /// for more.
    #[arg(long = "ignore-field", value_name = "PATH")]
    ignore_fields: Vec<FieldPath>,
    /// Oracle: a URL whose JSON holds a count of side effects, read (GET,
    /// with the tenant's headers) before and after each scenario.
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    count_url: Option<Url>,
    /// Where the count is in that JSON (default: a bare number or {"count":N}).
    #[arg(long, value_name = "PATH", requires = "count_url")]
    count_field: Option<CountField>,
    /// Oracle: a shell command that prints a count of side effects (run
    /// with IDEM_AUDIT_TENANT=primary or alternate).
    #[arg(long, value_name = "CMD")]
    check_cmd: Option<String>,
    /// The body payload-mismatch sends with a used key (default: --body
    /// with one value changed).
    #[arg(long, value_name = "JSON|@FILE", value_parser = parse_body)]
    changed_body: Option<Bytes>,
    /// A body the API fails on; error-replay needs it.
    #[arg(long, value_name = "JSON|@FILE", value_parser = parse_body)]
    error_body: Option<Bytes>,
    /// Scenarios to run, comma-separated, or all (default: all but retention).
    #[arg(long, value_name = "ID,…", value_parser = parse_scenario_list)]
    scenarios: Option<ScenarioList>,
    /// Same-key requests per concurrent burst (default 20, at most 1000).
    #[arg(long, value_name = "N")]
    burst: Option<u32>,
    /// Concurrent-burst rounds (default 5); more tighten the bound.
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
    /// When abandoned-request hangs up (default 100ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    abandon_after: Option<Duration>,
    /// The API's retention window; the retention scenario waits it out.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    retention: Option<Duration>,
    /// Fail missing-key when a keyless request executes.
    #[arg(long)]
    require_key: bool,
    /// How long one answer may take (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// How long a retry loop keeps honouring 409 and Retry-After (default
    /// 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    retry_deadline: Option<Duration>,
    /// How long the count must stay unchanged before a reading counts as
    /// quiet, before each scenario and before its last reading (default
    /// 200ms, stretched to the slowest answer seen; 0s turns it off).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    settle: Option<Duration>,
    /// The longest one wait for a quiet count may take (default 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    settle_deadline: Option<Duration>,
    /// The least severity that fails the run: low, medium, high or
    /// critical (default medium). Failures below it are warnings: shown,
    /// exit code 0.
    #[arg(long, value_name = "SEVERITY", value_parser = parse_fail_on)]
    fail_on: Option<Severity>,
    /// Report format: text, json, junit, markdown or html.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    format: ReportFormat,
    /// Write the report to FILE (the terminal still gets the text report).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// What the result means at this volume, e.g. 10M/day.
    #[arg(long, value_name = "N/PERIOD")]
    volume: Option<Volume>,
    /// The share of requests assumed ambiguous to their client and retried,
    /// for --volume (default 0.1%).
    #[arg(long, value_name = "RATE")]
    ambiguous_rate: Option<Rate>,
    /// Several endpoints from a TOML file (docs/audit.md); endpoint flags
    /// cannot be combined with it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Every unsafe operation (POST, PATCH; PUT and DELETE with --methods)
    /// of an OpenAPI 3.0 or 3.1 document (JSON or YAML) becomes an
    /// endpoint of one run. The other endpoint flags (--header, oracles,
    /// --scenarios, ...) apply to every operation.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    openapi: Option<PathBuf>,
    /// Where the API of --openapi is (default: the document's first
    /// server URL).
    #[arg(long, value_name = "URL", value_parser = parse_url, requires = "openapi")]
    base_url: Option<Url>,
    /// Methods --openapi audits, comma-separated (default POST,PATCH; add
    /// PUT and DELETE here).
    #[arg(long, value_name = "METHOD,…", value_parser = parse_method_list, requires = "openapi")]
    methods: Option<MethodList>,
    /// A value for an --openapi parameter (path, query, header or
    /// cookie), NAME=VALUE; used before the document's examples. Repeat
    /// for more.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param, requires = "openapi")]
    params: Vec<(String, String)>,
    /// Keep credentials (Authorization, cookies, API keys) in reports and
    /// curl lines instead of redacting them.
    #[arg(long)]
    show_secrets: bool,
    /// A PEM file of CA certificates to trust for https:// targets,
    /// besides the usual public roots; repeat for more.
    #[arg(long, value_name = "FILE")]
    cacert: Vec<PathBuf>,
    /// Accept any certificate from https:// targets (a staging host with a
    /// self-signed certificate). The traffic is still encrypted.
    #[arg(long)]
    insecure: bool,
}

/// `--scenarios`, one value holding a list (clap would read a `Vec` as a
/// repeated flag).
#[derive(Clone)]
struct ScenarioList(Vec<ScenarioId>);

fn parse_scenario_list(s: &str) -> Result<ScenarioList, String> {
    parse_scenarios(s)
        .map(ScenarioList)
        .map_err(|e| e.to_string())
}

/// `--methods`, one value holding a list.
#[derive(Clone)]
struct MethodList(Vec<http::Method>);

fn parse_method_list(s: &str) -> Result<MethodList, String> {
    let methods = s
        .split(',')
        .filter(|m| !m.trim().is_empty())
        .map(|m| parse_method(m.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if methods.is_empty() {
        return Err("no method named; e.g. POST,PATCH,PUT".to_owned());
    }
    Ok(MethodList(methods))
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "`{s}` is not NAME=VALUE; write e.g. --param payment_id=pay_123"
        )),
    }
}

impl AuditArgs {
    /// The endpoint flags given, by name (they conflict with --config).
    fn endpoint_flags(&self) -> Vec<&'static str> {
        let given = [
            ("--url", !self.url.is_empty()),
            ("--method", self.method.is_some()),
            ("--body", self.body.is_some()),
            ("--header", !self.headers.is_empty()),
            ("--alt-header", !self.alt_headers.is_empty()),
            ("--key-header", self.key_header.is_some()),
            ("--id-field", self.id_field.is_some()),
            ("--ignore-field", !self.ignore_fields.is_empty()),
            ("--count-url", self.count_url.is_some()),
            ("--check-cmd", self.check_cmd.is_some()),
            ("--changed-body", self.changed_body.is_some()),
            ("--error-body", self.error_body.is_some()),
            ("--scenarios", self.scenarios.is_some()),
            ("--burst", self.burst.is_some()),
            ("--rounds", self.rounds.is_some()),
            ("--abandon-after", self.abandon_after.is_some()),
            ("--retention", self.retention.is_some()),
            ("--require-key", self.require_key),
            ("--timeout", self.timeout.is_some()),
            ("--retry-deadline", self.retry_deadline.is_some()),
            ("--settle", self.settle.is_some()),
            ("--settle-deadline", self.settle_deadline.is_some()),
        ];
        given
            .into_iter()
            .filter(|(_, g)| *g)
            .map(|(f, _)| f)
            .collect()
    }

    fn options(self) -> anyhow::Result<AuditOptions> {
        if let Some(path) = &self.config {
            let flags = self.endpoint_flags();
            if !flags.is_empty() {
                anyhow::bail!(
                    "{} cannot be combined with --config: set it on the [[endpoint]] in {}",
                    flags.join(", "),
                    path.display()
                );
            }
            let mut options = FileConfig::load(path)?;
            if let Some(v) = self.volume {
                options.volume = Some(v);
            }
            if let Some(r) = self.ambiguous_rate {
                options.ambiguous_rate = r;
            }
            if let Some(f) = self.fail_on {
                options.fail_on = f;
            }
            options.show_secrets = self.show_secrets;
            options.tls = self.tls();
            return Ok(options);
        }
        let tls = self.tls();
        let openapi = self.openapi.clone();
        if openapi.is_some() {
            let given = [
                ("--url", !self.url.is_empty()),
                ("--method", self.method.is_some()),
                ("--body", self.body.is_some()),
                ("--changed-body", self.changed_body.is_some()),
                ("--error-body", self.error_body.is_some()),
            ];
            let clash: Vec<&str> = given.iter().filter(|(_, g)| *g).map(|(f, _)| *f).collect();
            if !clash.is_empty() {
                anyhow::bail!(
                    "{} cannot be combined with --openapi: each operation's URL, method and body come from the document",
                    clash.join(", ")
                );
            }
        }
        let placeholder = || Url::parse("http://127.0.0.1/").expect("a fixed URL parses");
        let mut urls = self.url.into_iter();
        let url = match &openapi {
            Some(_) => placeholder(),
            None => urls
                .next()
                .context("--url is required (or --config with [[endpoint]]s, or --openapi)")?,
        };
        let mut e = Endpoint::new(url);
        e.more_urls = urls.collect();
        if let Some(m) = self.method {
            e.method = m;
        }
        e.body = self.body.unwrap_or_default();
        e.headers = self.headers;
        e.alt_headers = self.alt_headers;
        if let Some(h) = self.key_header {
            e.key_header = h;
        }
        e.id_field = self.id_field;
        e.ignore_fields = self.ignore_fields;
        e.count_url = self.count_url;
        e.count_field = self.count_field.unwrap_or_default();
        e.check_cmd = self.check_cmd;
        e.changed_body = self.changed_body;
        e.error_body = self.error_body;
        if let Some(ScenarioList(s)) = self.scenarios {
            e.scenarios = s;
        }
        if let Some(n) = self.burst {
            e.burst = n;
        }
        if let Some(n) = self.rounds {
            e.rounds = n;
        }
        if let Some(d) = self.abandon_after {
            e.abandon_after = d;
        }
        e.retention = self.retention;
        e.require_key = self.require_key;
        if let Some(d) = self.timeout {
            e.timeout = d;
        }
        if let Some(d) = self.retry_deadline {
            e.retry_deadline = d;
        }
        if let Some(d) = self.settle {
            e.settle = d;
        }
        if let Some(d) = self.settle_deadline {
            e.settle_deadline = d;
        }
        // Flags are named as the user typed them.
        e.validate().map_err(|m| anyhow::anyhow!(m.as_flag()))?;
        let endpoints = match &openapi {
            Some(path) => {
                let mut settings = OpenApiSettings::new();
                settings.base_url = self.base_url;
                if let Some(MethodList(m)) = self.methods {
                    settings.methods = m;
                }
                settings.params = self.params;
                idem_audit::openapi::load(path, &settings, &e)?
            }
            None => vec![e],
        };
        let mut options = AuditOptions::new(endpoints);
        options.volume = self.volume;
        if let Some(r) = self.ambiguous_rate {
            options.ambiguous_rate = r;
        }
        if let Some(f) = self.fail_on {
            options.fail_on = f;
        }
        options.show_secrets = self.show_secrets;
        options.tls = tls;
        Ok(options)
    }

    fn tls(&self) -> TlsSettings {
        if self.insecure {
            tracing::warn!("--insecure: certificates of https:// targets are not verified");
        }
        TlsSettings {
            ca_certs: self.cacert.clone(),
            insecure: self.insecure,
        }
    }
}

/// Draws a spinner on a terminal and prints each verdict as it lands.
pub(crate) struct Spinner {
    bar: ProgressBar,
}

impl Spinner {
    pub(crate) fn new(prefix: &str) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix}{msg} [{elapsed}]") {
            bar.set_style(style);
        }
        bar.set_prefix(prefix.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Spinner { bar }
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Spinner {
    fn started(&self, endpoint: &str, scenario: ScenarioId) {
        self.bar.set_message(format!("{scenario} on {endpoint}"));
    }

    fn finished(&self, result: &ScenarioResult) {
        if !self.bar.is_hidden() {
            let verdict = match result.verdict {
                Verdict::Fail => format!("fail [{}]", result.severity),
                other => other.to_string(),
            };
            self.bar.println(format!("  {verdict:<13} {}", result.id));
        }
    }
}

/// The exit code a report stands for.
pub(crate) fn exit_code(report: &AuditReport) -> ExitCode {
    ExitCode::from(report.exit_code())
}

pub(crate) fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let format = args.format;
    let output = args.output.clone();
    let options = args.options()?;
    // Create the output file before any request, so a bad path costs nothing.
    let mut file = match &output {
        Some(path) => Some(
            std::fs::File::create(path)
                .with_context(|| format!("--output {}: cannot create it", path.display()))?,
        ),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let spinner = Spinner::new("");
    let report = runtime.block_on(
        idem_audit::Audit::from_options(options)
            .progress(&spinner)
            .run(),
    );
    spinner.finish();
    let report = report?;
    let stdout_is_tty = std::io::stdout().is_terminal();
    let color = stdout_is_tty && std::env::var_os("NO_COLOR").is_none();
    let (to_file, to_stdout) = match &file {
        Some(_) => (Some(format), ReportFormat::Text),
        None => (None, format),
    };
    if let (Some(file), Some(format)) = (file.as_mut(), to_file) {
        let text = idem_audit::report::render(&report, format, Style { color: false });
        file.write_all(text.as_bytes())
            .and_then(|()| file.flush())
            .context("cannot write the report")?;
    }
    let style = Style {
        color: color && to_stdout == ReportFormat::Text,
    };
    let text = idem_audit::report::render(&report, to_stdout, style);
    let mut stdout = std::io::stdout();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        result => result.context("cannot write the report")?,
    }
    if report.verdict == Verdict::Indeterminate {
        tracing::debug!("only indeterminate results: exit 3");
    }
    Ok(exit_code(&report))
}
