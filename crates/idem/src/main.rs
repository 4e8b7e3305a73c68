//! `idem`: one binary for idem's tools.

/// mimalloc: allocation is a large share of a proxy's per-request work
/// (see docs/benchmarks.md); the bench proxies use it too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod audit;
mod chaos;
mod demo;
mod gateway;
mod keys;
mod math;
mod migrate;
mod signal;
mod soak;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Correct idempotency for HTTP APIs.
#[derive(Parser)]
#[command(name = "idem", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attack an API with duplicate delivery (replays, concurrent bursts,
    /// lost responses, abandoned requests, changed payloads, other tenants)
    /// and report each violation with evidence. Exit 0 pass, 1 fail, 2
    /// usage or unreachable, 3 nothing failed but something could not be
    /// established.
    Audit(Box<audit::AuditArgs>),
    /// No setup: audit a built-in payments API without idempotency, then
    /// with idem gateway in front, and show the difference.
    Demo(demo::DemoArgs),
    /// Run a reverse proxy that enforces Stripe-style idempotency keys in
    /// front of an HTTP API.
    Gateway(gateway::GatewayArgs),
    /// Operate on keys through a gateway's admin listener: get, list,
    /// release (did not execute), resolve (did execute), purge. The admin
    /// token comes from $IDEM_ADMIN_TOKEN (or --token-env NAME).
    Keys(keys::KeysArgs),
    /// What a duplicate rate means at scale: expected duplicates per day and
    /// year, the chance of a duplicate-free day, the cost, and what N clean
    /// trials prove.
    Math(math::MathArgs),
    /// Run an HTTP fault proxy: duplicate requests, drop responses or
    /// requests, delay and reset, per request, from a seeded RNG.
    Chaos(chaos::ChaosArgs),
    /// Create or upgrade a store's schema ahead of a deploy, print what was
    /// applied, and exit.
    Migrate(migrate::MigrateArgs),
    /// Measure an API's duplicate rate: run N logical operations through
    /// the retrying client and count side effects before and after.
    Soak(soak::SoakArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo runs a gateway in-process; its info lines would interleave
    // with the story the demo prints.
    let default_level = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IDEM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Audit(args) => return finish(audit::run(*args)),
        Command::Demo(args) => return finish(demo::run(args)),
        Command::Gateway(args) => gateway::run(args),
        Command::Keys(args) => return finish(keys::run(args)),
        Command::Math(args) => math::run(args),
        Command::Chaos(args) => chaos::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Soak(args) => soak::run(args),
    };
    finish(result.map(|()| ExitCode::SUCCESS))
}

/// Errors print once, as `idem: …`, and exit 2 (usage, configuration, an
/// unreachable target); otherwise the command's own code.
fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("idem: {e:#}");
            ExitCode::from(2)
        }
    }
}
