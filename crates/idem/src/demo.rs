//! `idem demo`: the whole story with no setup. A built-in payments API
//! without idempotency is audited (duplicates found), then idem gateway
//! with its embedded SQLite store is put in front of it and the same audit
//! runs again (clean). Exit 0 when the story holds.

use crate::audit::Spinner;
use anyhow::Context;
use clap::{Args, ValueEnum};
use idem_audit::{AuditOptions, AuditReport, Endpoint, FieldPath, ScenarioId, Verdict};
use idem_math::format::{count, percent};
use idem_math::{Rate, Volume};
use idem_sample_api::{Flaw, SampleApiOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// How the demo prints its result.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The two audits side by side.
    Text,
    /// `{"story_holds", "without_idem", "with_idem"}`, each an audit report.
    Json,
}

/// Flags of `idem demo`.
#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Which idempotency bug the built-in API ships with: no-idempotency,
    /// check-then-act, unscoped-keys, payload-ignored, store-if-delivered,
    /// or none (correct).
    #[arg(long, value_name = "FLAW", default_value = "no-idempotency", value_parser = parse_flaw)]
    flaw: Flaw,
    /// Concurrent-burst rounds per audit.
    #[arg(long, value_name = "N", default_value_t = 20)]
    rounds: u32,
    /// The volume the difference is stated at.
    #[arg(long, value_name = "N/PERIOD", default_value = "10M/day")]
    volume: Volume,
    /// The share of requests assumed ambiguous to their client and retried.
    #[arg(long, value_name = "RATE", default_value = "0.1%")]
    ambiguous_rate: Rate,
    /// Where the gateway's SQLite file goes (default: a temporary directory,
    /// removed at exit).
    #[arg(long, value_name = "DIR")]
    store_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Only serve the built-in API (with --flaw) on --listen until Ctrl-C,
    /// to try `idem audit` on it by hand.
    #[arg(long)]
    serve: bool,
    /// Where --serve listens.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:3000",
        requires = "serve"
    )]
    listen: SocketAddr,
}

fn parse_flaw(s: &str) -> Result<Flaw, String> {
    s.parse::<Flaw>().map_err(|e| e.to_string())
}

/// The credentials of the demo's two tenants.
const TENANT_A: &str = "Bearer sk_demo_tenant_a";
const TENANT_B: &str = "Bearer sk_demo_tenant_b";

/// The audit both runs share; only the base URL differs.
fn endpoint(base: &str, rounds: u32) -> anyhow::Result<Endpoint> {
    let url = format!("{base}/payments").parse().context("demo URL")?;
    let mut e = Endpoint::new(url)
        .with_body(r#"{"amount":2500,"currency":"eur","description":"order 1042"}"#)
        .with_header("Authorization", TENANT_A)
        .with_alt_header("Authorization", TENANT_B);
    e.id_field = Some("id".parse::<FieldPath>().context("id field")?);
    e.count_url = Some(
        format!("{base}/payments/count")
            .parse()
            .context("count URL")?,
    );
    // Above the API's limit: the card is declined (an executed failure).
    e.error_body = Some(r#"{"amount":5000000,"currency":"eur"}"#.into());
    e.rounds = rounds;
    Ok(e)
}

pub(crate) fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if args.serve {
        return runtime.block_on(serve(args.flaw, args.listen));
    }
    runtime.block_on(demo(args))
}

async fn serve(flaw: Flaw, listen: SocketAddr) -> anyhow::Result<ExitCode> {
    let mut options = SampleApiOptions::new(flaw);
    options.listen = listen;
    let api = idem_sample_api::start(options)
        .await
        .with_context(|| format!("--listen {listen}: cannot listen"))?;
    println!(
        "built-in payments API ({}) on {}",
        flaw.describe(),
        api.url()
    );
    println!("try: idem audit --url {0}/payments --body '{{\"amount\":2500,\"currency\":\"eur\"}}' --header 'Authorization: {TENANT_A}' --alt-header 'Authorization: {TENANT_B}' --id-field id --count-url {0}/payments/count", api.url());
    tokio::signal::ctrl_c().await.ok();
    api.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let text = args.format == Format::Text;
    let api = idem_sample_api::start(SampleApiOptions::new(args.flaw))
        .await
        .context("cannot start the built-in payments API")?;
    let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let dir = args
        .store_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir).with_context(|| format!("--store-dir {}", dir.display()))?;
    let db = dir.join("idem-demo.db");
    let spec: idem_store::StoreSpec = format!("sqlite:{}", db.display())
        .parse()
        .context("store spec")?;
    let store = idem_store::open(&spec).await?;
    let settings = idem_gateway::config::Settings::default();
    let gateway = idem_gateway::start(idem_gateway::GatewayOptions::from_settings(
        settings,
        "127.0.0.1:0".parse().context("listen address")?,
        api.url().parse().context("upstream URL")?,
        store,
        None,
    ))
    .await?;
    let gateway_url = format!("http://{}", gateway.addr());
    if text {
        println!("idem demo: one payments API, audited twice\n");
        println!(
            "  API       {}  (built in: {})",
            api.url(),
            args.flaw.describe()
        );
        println!(
            "  gateway   {gateway_url}  (idem gateway → the API, SQLite store {})\n",
            db.display()
        );
    }

    let audit = |base: String, label: &'static str| {
        let rounds = args.rounds;
        let (volume, ambiguous) = (args.volume, args.ambiguous_rate);
        async move {
            let mut options = AuditOptions::new(vec![endpoint(&base, rounds)?]);
            options.volume = Some(volume);
            options.ambiguous_rate = ambiguous;
            let spinner = Spinner::new(&format!("{label}: "));
            let report = idem_audit::audit(&options, &spinner).await;
            spinner.finish();
            anyhow::Ok(report?)
        }
    };
    let without = audit(api.url(), "auditing the API directly").await?;
    let with = audit(gateway_url.clone(), "auditing through idem gateway").await?;
    gateway.shutdown().await;
    api.shutdown().await;

    // The story: the bare API's bug is found (a correct API has none to
    // find), and nothing is found through the gateway.
    let holds = (without.count(Verdict::Fail) > 0 || args.flaw == Flaw::None)
        && with.count(Verdict::Fail) == 0
        && with.count(Verdict::Indeterminate) == 0;
    let mut out = std::io::stdout();
    if text {
        out.write_all(side_by_side(&without, &with, &args).as_bytes())?;
    } else {
        let json = serde_json::json!({
            "story_holds": holds,
            "without_idem": without,
            "with_idem": with,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    }
    out.flush()?;
    if !holds && text && args.flaw == Flaw::UnscopedKeys {
        eprintln!(
            "idem demo: the gateway cannot fix this flaw: it forwards Idempotency-Key unchanged (contract section 6), and the API itself answers one tenant's request with another tenant's stored response. The API's own key store must be scoped per tenant."
        );
    } else if !holds && text {
        eprintln!(
            "idem demo: the story did not hold: {} failure(s) without idem, {} failure(s) and {} indeterminate with idem",
            without.count(Verdict::Fail),
            with.count(Verdict::Fail),
            with.count(Verdict::Indeterminate)
        );
    }
    Ok(if holds {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn side_by_side(without: &AuditReport, with: &AuditReport, args: &DemoArgs) -> String {
    let mut s = String::new();
    let cell = |r: &AuditReport, id: ScenarioId| -> (String, String) {
        match r.scenarios.iter().find(|x| x.id == id) {
            Some(x) => (x.verdict.as_str().to_uppercase(), x.summary.clone()),
            None => ("-".to_owned(), String::new()),
        }
    };
    s.push_str(&format!(
        "{:<19} {:<14} {:<14}  what the API without idem did\n",
        "scenario", "without idem", "with idem"
    ));
    for id in ScenarioId::ALL {
        let (a, why) = cell(without, id);
        let (b, _) = cell(with, id);
        if a == "-" && b == "-" {
            continue;
        }
        s.push_str(&format!(
            "{:<19} {a:<14} {b:<14}  {}\n",
            id.as_str(),
            shorten(&why, 90)
        ));
    }
    s.push('\n');
    s.push_str(&format!(
        "without idem: {} fail, {} pass   with idem: {} fail, {} pass\n\n",
        without.count(Verdict::Fail),
        without.count(Verdict::Pass),
        with.count(Verdict::Fail),
        with.count(Verdict::Pass)
    ));
    s.push_str(&format!(
        "What it means at {} requests a day, if {} of them are ambiguous to their client (a timeout, a reset) and retried:\n",
        count(args.volume.per_day()),
        percent(args.ambiguous_rate.fraction())
    ));
    for (label, r) in [("without idem", without), ("with idem", with)] {
        let b = &r.bound;
        let per_day = r
            .volume
            .as_ref()
            .map(|v| v.duplicates_per_day)
            .unwrap_or(0.0);
        let line = if b.failed_trials > 0 {
            format!(
                "{} of {} raced trials duplicated: about {} duplicate payments a day",
                b.failed_trials,
                b.trials,
                count(per_day)
            )
        } else {
            format!(
                "0 of {} raced trials duplicated: at most {} a day at 95% confidence (the bound is about 3/N; --rounds tightens it)",
                b.trials,
                count(per_day)
            )
        };
        s.push_str(&format!("  {label:<13} {line}\n"));
    }
    s.push('\n');
    s.push_str("Audit your own API the same way (a test environment: every scenario makes real effects):\n  idem audit --url http://YOUR-API/payments --body '{\"amount\":2500,\"currency\":\"eur\"}' --header 'Authorization: …' --alt-header 'Authorization: …' --id-field id\n  (idem demo --format json prints both full reports with their evidence; docs/audit.md explains each scenario)\n");
    s
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let cut: String = s.chars().take(max - 1).collect();
    format!("{cut}…")
}
