//! `idem gateway`: flags, config file, and the process's life cycle.

use anyhow::Context;
use clap::Args;
use idem_gateway::config;
use idem_gateway::GatewayOptions;
use idem_store::StoreSpec;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `idem gateway`. Each overrides the same setting in `--config`.
#[derive(Args)]
pub(crate) struct GatewayArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The API to protect, e.g. http://127.0.0.1:3000.
    #[arg(long, value_name = "URL", value_parser = config::parse_upstream)]
    upstream: Option<http::Uri>,
    /// Where records live: sqlite:PATH (default sqlite:idem.db), memory,
    /// postgres://USER@HOST/DB[?sslmode=verify-full&sslrootcert=FILE], redis://HOST:PORT/,
    /// redis+cluster://H1:P1,H2:P2 (rediss:// and rediss+cluster:// over TLS).
    #[arg(long, value_name = "STORE")]
    store: Option<StoreSpec>,
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve /health and /metrics on this address (off unless given).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// This gateway's name, stored with each claim as its lease holder
    /// (shown by `idem keys get`); default `instance` in --config, else
    /// hostname:pid.
    #[arg(long, value_name = "NAME", env = "IDEM_INSTANCE", value_parser = config::parse_instance)]
    instance: Option<String>,
    /// Validate FILE and exit without starting.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
}

pub(crate) fn run(args: GatewayArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.check_config {
        config::check(path)?;
        println!("{}: ok", path.display());
        return Ok(());
    }
    let mut settings = match &args.config {
        Some(path) => config::check(path)?,
        None => config::Settings::default(),
    };
    if let Some(name) = args.instance {
        settings.idempotency.instance = name.into();
    }
    let listen = args
        .listen
        .or(settings.listen)
        .context("--listen is required (or `listen` in --config), e.g. --listen 127.0.0.1:8080")?;
    let upstream = args
        .upstream
        .or_else(|| settings.upstream.clone())
        .context(
        "--upstream is required (or `upstream` in --config), e.g. --upstream http://127.0.0.1:3000",
    )?;
    let store_spec = args.store.unwrap_or_else(|| settings.store.clone());
    let admin = args.admin.or(settings.admin);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let store = idem_store::open(&store_spec).await?;
        let gateway = idem_gateway::start(GatewayOptions::from_settings(
            settings, listen, upstream, store, admin,
        ))
        .await?;
        // Scripts wait for this line.
        println!("listening on {}", gateway.addr());
        if let Some(admin) = gateway.admin_addr() {
            println!("admin on {admin}");
        }
        tracing::info!(store = %store_spec, "ready");
        // SIGHUP reloads the listener's TLS certificate and key.
        crate::signal::shutdown_requested(|| {
            match gateway.reload_tls() {
                Some(Ok(())) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                Some(Err(e)) => tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; the one in use stays"),
                None => tracing::info!("SIGHUP: no TLS configured; nothing to reload"),
            }
            true
        })
        .await;
        tracing::info!("signal received; shutting down gracefully");
        gateway.shutdown().await;
        anyhow::Ok(())
    })
}
