//! `idem chaos`: an HTTP-aware fault proxy (see docs/chaos.md).

use anyhow::Context;
use clap::Args;
use idem_chaos::{
    parse_delay, parse_methods, parse_probability, parse_upstream, ChaosOptions, Delay, Faults,
    Methods,
};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `idem chaos`. Each selected request gets at most one fault, so
/// the probabilities add up to at most 1.
#[derive(Args)]
pub(crate) struct ChaosArgs {
    /// Address to listen on, e.g. 127.0.0.1:8081 (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Where to forward, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL", value_parser = parse_upstream)]
    upstream: http::Uri,
    /// Verify an https:// upstream against the CA certificates in FILE
    /// (PEM) instead of the public roots.
    #[arg(long, value_name = "FILE")]
    upstream_ca: Option<PathBuf>,
    /// Probability of delivering a request twice (same headers and body);
    /// the client gets the first answer.
    #[arg(long, value_name = "P", value_parser = parse_probability, default_value = "0")]
    duplicate: f64,
    /// Probability of letting the upstream answer in full, then resetting
    /// the client without the answer (timed out but processed).
    #[arg(long, value_name = "P", value_parser = parse_probability, default_value = "0")]
    drop_response: f64,
    /// Probability of reading the request and never forwarding it; the
    /// client is reset.
    #[arg(long, value_name = "P", value_parser = parse_probability, default_value = "0")]
    drop_request: f64,
    /// Probability and duration of holding a request before forwarding it,
    /// e.g. 0.1:2s.
    #[arg(long, value_name = "P:DURATION", value_parser = parse_delay)]
    delay: Option<Delay>,
    /// Probability of resetting the client as soon as the request head
    /// arrives, before forwarding.
    #[arg(long, value_name = "P", value_parser = parse_probability, default_value = "0")]
    reset: f64,
    /// Methods that get faults (the others pass through untouched); `*`
    /// for all.
    #[arg(long, value_name = "LIST", value_parser = parse_methods, default_value = "POST,PATCH")]
    methods: Methods,
    /// Seed of the decisions: the same seed repeats the same sequence
    /// (default: drawn at random and printed).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Write one JSON line per injected fault to FILE (truncated first).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
}

pub(crate) fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let options = ChaosOptions {
        listen: args.listen,
        upstream: args.upstream,
        upstream_ca: args.upstream_ca,
        faults: Faults {
            duplicate: args.duplicate,
            drop_response: args.drop_response,
            drop_request: args.drop_request,
            delay: args.delay,
            reset: args.reset,
        },
        methods: args.methods,
        seed: args.seed,
        log: args.log,
    };
    // Bad combinations are bad input: report them before anything starts.
    options.faults.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let chaos = idem_chaos::start(options).await?;
        // Scripts wait for this line.
        println!("listening on {}", chaos.addr());
        println!("seed {} (repeat this run with --seed {0})", chaos.seed());
        // A hang-up (the terminal closed) ends the run as SIGTERM does, so
        // the summary is still printed.
        crate::signal::shutdown_requested(|| false).await;
        tracing::info!("signal received; shutting down");
        let summary = chaos.shutdown().await;
        print!("{summary}");
        anyhow::Ok(())
    })
}
