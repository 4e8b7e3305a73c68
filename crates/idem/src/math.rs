//! `idem math`: what a duplicate rate means at scale (see
//! docs/duplicate-math.md).

use anyhow::Context;
use clap::Args;
use idem_math::{parse_cost, parse_trials, Inputs, Rate, Volume};
use std::io::Write;

/// Flags of `idem math`. Give `--volume` with `--rate`, `--volume` with
/// `--ambiguous-rate` and `--retry-duplicates`, or `--clean-trials`.
#[derive(Args)]
pub(crate) struct MathArgs {
    /// Requests per period: 10M/day, 120/s, 5000000/month, 1.5k/hour (K, M,
    /// B suffixes; s, min, hour, day, week, month = 30 days, year = 365 days).
    #[arg(long, value_name = "VOLUME")]
    volume: Option<Volume>,
    /// The duplicate rate: 0.001% or 1e-5.
    #[arg(long, value_name = "RATE")]
    rate: Option<Rate>,
    /// How often a request's outcome is ambiguous to the client (timeout,
    /// reset, lost response), e.g. 0.1%.
    #[arg(long, value_name = "RATE")]
    ambiguous_rate: Option<Rate>,
    /// How often a retry of an ambiguous request executes it twice, e.g. 1%.
    #[arg(long, value_name = "RATE")]
    retry_duplicates: Option<Rate>,
    /// Trials run without a single duplicate: prints what they prove.
    #[arg(long, value_name = "N", value_parser = parse_trials)]
    clean_trials: Option<u64>,
    /// Money lost per duplicate, e.g. 25.00.
    #[arg(long, value_name = "AMOUNT", value_parser = parse_cost)]
    cost: Option<f64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: MathArgs) -> anyhow::Result<()> {
    let inputs = Inputs {
        volume: args.volume,
        rate: args.rate,
        ambiguous_rate: args.ambiguous_rate,
        retry_duplicates: args.retry_duplicates,
        clean_trials: args.clean_trials,
        cost: args.cost,
    };
    let report = inputs.question()?.answer();
    let text = if args.json {
        report.to_json_pretty()
    } else {
        report.to_string()
    };
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        // `idem math … | head` closes the pipe early: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("cannot write to stdout"),
    }
}
