//! `idem soak`: measure an API's duplicate rate (see docs/soak.md).

use anyhow::Context;
use clap::{Args, ValueEnum};
use http::{HeaderName, HeaderValue, Method};
use idem_client::RetryPolicy;
use idem_soak::{
    parse_body, parse_count, parse_header, parse_method, parse_url, CountField, SoakOptions, Url,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

/// How the report is printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Aligned lines for a person.
    Text,
    /// One JSON object.
    Json,
}

/// Flags of `idem soak`.
#[derive(Args)]
pub(crate) struct SoakArgs {
    /// Where each logical operation goes, e.g. http://127.0.0.1:8081/charges
    /// (typically `idem chaos` in front of the API).
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    url: Url,
    /// The method of every operation.
    #[arg(long, value_name = "METHOD", value_parser = parse_method, default_value = "POST")]
    method: Method,
    /// The body of every operation: a JSON document, or @FILE to read one.
    /// Sent as application/json unless --header sets Content-Type.
    #[arg(long, value_name = "JSON|@FILE", value_parser = parse_body)]
    body: Option<bytes::Bytes>,
    /// A request header, 'Name: value'; repeat for more. Never
    /// Idempotency-Key: each operation gets its own.
    #[arg(long = "header", value_name = "'K: V'", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Logical operations to run.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    requests: u64,
    /// Operations in flight at once.
    #[arg(long, value_name = "C", value_parser = parse_count, default_value = "4")]
    concurrency: u64,
    /// Where the side-effect count is read (GET), before and after the run.
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    count_url: Url,
    /// Dot path to the count in that JSON, e.g. stats.charges (default: the
    /// body is a bare number or {"count":N}).
    #[arg(long, value_name = "PATH")]
    count_field: Option<CountField>,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Attempts per operation, the first included.
    #[arg(long, value_name = "N", value_parser = parse_count, default_value = "5")]
    max_attempts: u64,
    /// Total time one operation may take, retries included (e.g. 30s, 2m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    deadline: Duration,
}

pub(crate) fn run(args: SoakArgs) -> anyhow::Result<()> {
    let mut options = SoakOptions::new(args.url, args.count_url, args.requests);
    options.method = args.method;
    options.body = args.body;
    options.headers = args.headers.into_iter().collect();
    options.concurrency = args.concurrency;
    options.count_field = args.count_field.unwrap_or_default();
    options.policy = RetryPolicy::default()
        .max_attempts(u32::try_from(args.max_attempts).unwrap_or(u32::MAX))
        .deadline(args.deadline);
    // Bad input is reported before anything is sent.
    options.validate()?;
    let mut output: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("--output {}: cannot create it", path.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };

    let quiet =
        !std::io::stderr().is_terminal() || (args.format == Format::Json && args.output.is_some());
    let bar = ProgressBar::with_draw_target(
        Some(options.requests),
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} operations {msg} [{elapsed}, eta {eta}]",
        )
        .context("progress bar template")?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(idem_soak::run(&options, &|p| {
        bar.set_position(p.done);
        if p.outcome_unknown + p.failed > 0 {
            bar.set_message(format!(
                "({} outcome unknown, {} failed)",
                p.outcome_unknown, p.failed
            ));
        }
    }));
    bar.finish_and_clear();
    let report = report?;
    let text = match args.format {
        Format::Json => format!("{}\n", report.to_json_pretty()),
        Format::Text => report.to_string(),
    };
    match output
        .write_all(text.as_bytes())
        .and_then(|()| output.flush())
    {
        // `idem soak … | head` closes the pipe early: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("cannot write the report"),
    }
}
