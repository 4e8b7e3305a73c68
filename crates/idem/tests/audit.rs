//! `idem audit` and `idem demo` as scripts and CI jobs drive them: the real
//! binary against real sample APIs on 127.0.0.1, asserting exit codes,
//! report formats and error messages.

use idem_sample_api::{Flaw, RunningSampleApi, SampleApiOptions};
use std::process::{Command, Output};
use std::time::Duration;

async fn api(flaw: Flaw) -> RunningSampleApi {
    let mut options = SampleApiOptions::new(flaw);
    options.latency = Duration::from_millis(100);
    idem_sample_api::start(options)
        .await
        .expect("sample API starts")
}

/// The flags of a quick, fully observed audit of the sample API.
fn flags(api: &RunningSampleApi) -> Vec<String> {
    let base = api.url();
    [
        "audit",
        "--url",
        &format!("{base}/payments"),
        "--body",
        r#"{"amount":2500,"currency":"eur"}"#,
        "--header",
        "Authorization: Bearer sk_a",
        "--alt-header",
        "Authorization: Bearer sk_b",
        "--id-field",
        "id",
        "--count-url",
        &format!("{base}/payments/count"),
        "--burst",
        "6",
        "--rounds",
        "2",
        "--abandon-after",
        "30ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs the binary off the async runtime (the APIs live on it).
async fn idem(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_idem"))
            .args(&args)
            .env("NO_COLOR", "1")
            .output()
            .expect("idem runs")
    })
    .await
    .expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_api_exits_0_and_writes_the_json_report_to_the_output_file() {
    let api = api(Flaw::None).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let mut args = flags(&api);
    args.extend(["--format", "json", "--output"].map(String::from));
    args.push(path.display().to_string());
    args.extend(["--volume", "10M/day"].map(String::from));
    let out = idem(args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The terminal still gets the readable report.
    assert!(
        text(&out.stdout).contains("verdict PASS"),
        "{}",
        text(&out.stdout)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("the file is JSON");
    assert_eq!(report["verdict"], "pass");
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 10, "every default scenario");
    for s in scenarios {
        for field in [
            "id", "verdict", "severity", "evidence", "summary", "endpoint",
        ] {
            assert!(!s[field].is_null(), "{field} missing in {s}");
        }
    }
    assert!(report["bound"]["upper_bound_95"].as_f64().unwrap() > 0.0);
    assert!(report["volume"]["statement"]
        .as_str()
        .unwrap()
        .contains("10,000,000"));
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_exit_1_with_a_junit_report_that_fails_the_ci_job() {
    let api = api(Flaw::NoIdempotency).await;
    let mut args = flags(&api);
    args.extend(["--format", "junit"].map(String::from));
    let out = idem(args).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let xml = text(&out.stdout);
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert!(xml.contains(r#"name="concurrent-burst""#), "{xml}");
    assert!(xml.contains("<failure"), "{xml}");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_indeterminate_results_exit_3() {
    let api = api(Flaw::None).await;
    let base = api.url();
    let args = [
        "audit",
        "--url",
        &format!("{base}/payments"),
        "--body",
        r#"{"amount":2500}"#,
        "--header",
        "Authorization: Bearer sk_a",
        "--scenarios",
        "sequential-replay",
        "--format",
        "markdown",
    ]
    .map(String::from)
    .to_vec();
    let out = idem(args).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("INDETERMINATE"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_and_an_unreachable_api_exit_2_naming_the_problem() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);
    let dead_url = format!("http://{dead}/x");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--url", &dead_url], "cannot reach"),
        (vec!["--url", "ftp://api.example/x"], "not http or https"),
        (
            vec!["--url", "http://127.0.0.1:1/x", "--abandon-after", "10x"],
            "--abandon-after",
        ),
        (
            vec!["--url", "http://127.0.0.1:1/x", "--burst", "1"],
            "--burst: must be at least 2",
        ),
        (
            vec!["--url", "http://127.0.0.1:1/x", "--scenarios", "replays"],
            "unknown scenario `replays`",
        ),
        (
            vec!["--url", "http://127.0.0.1:1/x", "--header", "nocolon"],
            "'Name: value'",
        ),
        (
            vec![
                "--url",
                "http://127.0.0.1:1/x",
                "--header",
                "Idempotency-Key: k",
            ],
            "--header",
        ),
        (
            vec![
                "--url",
                "http://127.0.0.1:1/x",
                "--scenarios",
                "cross-tenant",
            ],
            "cross-tenant needs --alt-header",
        ),
        (
            vec!["--url", "http://127.0.0.1:1/x", "--format", "xml"],
            "unknown report format",
        ),
        (
            vec!["--url", "http://127.0.0.1:1/x", "--config", "a.toml"],
            "cannot be combined with --config",
        ),
        (vec![], "--url"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["audit".to_owned()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = idem(args.clone()).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: expected `{expected}` in: {}",
            text(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_file_audits_several_endpoints_in_one_run() {
    let clean = api(Flaw::None).await;
    let leaky = api(Flaw::UnscopedKeys).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("audit.toml");
    let endpoint = |name: &str, base: &str| {
        format!(
            r#"
[[endpoint]]
name = "{name}"
url = "{base}/payments"
body = '{{"amount": 100}}'
id_field = "id"
count_url = "{base}/payments/count"
scenarios = ["sequential-replay", "cross-tenant"]
"#
        )
    };
    std::fs::write(
        &config,
        format!(
            "headers = [\"Authorization: Bearer sk_a\"]\nalt_headers = [\"Authorization: Bearer sk_b\"]\n{}{}",
            endpoint("clean", &clean.url()),
            endpoint("leaky", &leaky.url())
        ),
    )
    .unwrap();
    let args = vec![
        "audit".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
        "--format".to_owned(),
        "json".to_owned(),
    ];
    let out = idem(args).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdicts: Vec<(String, String, String)> = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["endpoint"].as_str().unwrap().to_owned(),
                s["id"].as_str().unwrap().to_owned(),
                s["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("clean", "sequential-replay", "pass"),
        ("clean", "cross-tenant", "pass"),
        ("leaky", "sequential-replay", "pass"),
        ("leaky", "cross-tenant", "fail"),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(verdicts, expected);

    // A mistake in the file names the file and the field.
    std::fs::write(
        &config,
        "[[endpoint]]\nurl = \"http://127.0.0.1:1/x\"\nrounds = \"five\"\n",
    )
    .unwrap();
    let out = idem(vec![
        "audit".into(),
        "--config".into(),
        config.display().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("audit.toml") && stderr.contains("endpoint[0].rounds"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_finds_duplicates_without_idem_and_none_with_the_gateway() {
    let out = idem(
        ["demo", "--format", "json", "--rounds", "3"]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let story: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(story["story_holds"], true);
    assert_eq!(story["without_idem"]["verdict"], "fail");
    assert_eq!(story["with_idem"]["verdict"], "pass");
    let failed: Vec<&str> = story["without_idem"]["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verdict"] == "fail")
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    // abandoned-request is left to bug_classes.rs, whose timing margins
    // are wider than the demo's.
    for id in ["sequential-replay", "concurrent-burst", "lost-response"] {
        assert!(
            failed.contains(&id),
            "{id} not caught without idem: {failed:?}"
        );
    }
}

/// A gateway in front of `api` whose responses are kept for `retention`.
async fn gateway(api: &RunningSampleApi, retention: Duration) -> idem_gateway::RunningGateway {
    let mut settings = idem_gateway::config::Settings::default();
    settings.idempotency.retention.retention = retention;
    gateway_with(api, settings).await
}

async fn gateway_with(
    api: &RunningSampleApi,
    settings: idem_gateway::config::Settings,
) -> idem_gateway::RunningGateway {
    idem_gateway::start(idem_gateway::GatewayOptions::from_settings(
        settings,
        "127.0.0.1:0".parse().unwrap(),
        api.url().parse().unwrap(),
        std::sync::Arc::new(idem_store::MemoryStore::new()),
        None,
    ))
    .await
    .expect("gateway starts")
}

fn retention_audit(url: &str, count_url: &str) -> Vec<String> {
    [
        "audit",
        "--url",
        url,
        "--body",
        r#"{"amount":100}"#,
        "--header",
        "Authorization: Bearer sk_a",
        "--count-url",
        count_url,
        "--scenarios",
        "retention",
        "--retention",
        "1s",
        "--format",
        "json",
    ]
    .map(String::from)
    .to_vec()
}

fn scenario<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("{id} missing: {report}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_the_retention_window_is_told_plainly_or_caught_executing_again() {
    let api = api(Flaw::NoIdempotency).await;
    let count_url = format!("{}/payments/count", api.url());
    // Behind the gateway the late retry meets the tombstone: 422 key-expired.
    let gw = gateway(&api, Duration::from_millis(500)).await;
    let out = idem(retention_audit(
        &format!("http://{}/payments", gw.addr()),
        &count_url,
    ))
    .await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = scenario(&report, "retention");
    assert_eq!(s["verdict"], "pass", "{s}");
    assert!(
        s["summary"].as_str().unwrap().contains("key-expired"),
        "{s}"
    );
    assert_eq!(out.status.code(), Some(0));
    // The bare API executes the late retry a second time.
    let out = idem(retention_audit(
        &format!("{}/payments", api.url()),
        &count_url,
    ))
    .await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(scenario(&report, "retention")["verdict"], "fail");
    assert_eq!(out.status.code(), Some(1));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_check_cmd_counts_effects_per_tenant() {
    let api = api(Flaw::CheckThenAct).await;
    let base = api.url();
    // The command reads the count the way a team would query its database;
    // IDEM_AUDIT_TENANT says whose.
    let cmd = format!(
        r#"if [ "$IDEM_AUDIT_TENANT" = alternate ]; then t=sk_b; else t=sk_a; fi; curl -sf -H "Authorization: Bearer $t" {base}/payments/count | tr -dc 0-9; echo"#
    );
    let args = [
        "audit",
        "--url",
        &format!("{base}/payments"),
        "--body",
        r#"{"amount":100}"#,
        "--header",
        "Authorization: Bearer sk_a",
        "--alt-header",
        "Authorization: Bearer sk_b",
        "--check-cmd",
        &cmd,
        "--scenarios",
        "sequential-replay,concurrent-burst,cross-tenant",
        "--burst",
        "5",
        "--rounds",
        "2",
        "--format",
        "json",
    ]
    .map(String::from)
    .to_vec();
    let out = idem(args).await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(report["endpoints"][0]["oracles"][0], "check-cmd");
    assert_eq!(scenario(&report, "sequential-replay")["verdict"], "pass");
    assert_eq!(scenario(&report, "concurrent-burst")["verdict"], "fail");
    assert_eq!(scenario(&report, "cross-tenant")["verdict"], "pass");
    assert_eq!(out.status.code(), Some(1));

    // A command that prints no count is refused before anything is sent.
    let out = idem(
        [
            "audit",
            "--url",
            &format!("{base}/payments"),
            "--check-cmd",
            "echo nothing here",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--check-cmd"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_travel_in_the_header_the_api_reads() {
    let api = api(Flaw::NoIdempotency).await;
    let mut settings = idem_gateway::config::Settings::default();
    settings.idempotency.key_header = http::HeaderName::from_static("x-request-key");
    let gw = gateway_with(&api, settings).await;
    let base = format!("http://{}", gw.addr());
    let audit = |key_header: Option<&str>| {
        let mut args = [
            "audit",
            "--url",
            &format!("{base}/payments"),
            "--body",
            r#"{"amount":100}"#,
            "--header",
            "Authorization: Bearer sk_a",
            "--id-field",
            "id",
            "--scenarios",
            "sequential-replay",
            "--format",
            "json",
        ]
        .map(String::from)
        .to_vec();
        if let Some(name) = key_header {
            args.extend(["--key-header".to_owned(), name.to_owned()]);
        }
        idem(args)
    };
    // The gateway reads X-Request-Key: with it, replays are replays.
    let out = audit(Some("X-Request-Key")).await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = scenario(&report, "sequential-replay");
    assert_eq!(s["verdict"], "pass", "{s}");
    assert_eq!(
        s["evidence"]["exchanges"][0]["request"]["key"]
            .as_str()
            .map(|k| k.starts_with("idem-audit-")),
        Some(true)
    );
    // Sent as Idempotency-Key, the key is invisible to it: every retry executes.
    let out = audit(None).await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(scenario(&report, "sequential-replay")["verdict"], "fail");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warning_is_reported_but_fails_the_run_only_at_or_above_fail_on() {
    let api = api(Flaw::None).await;
    let base = api.url();
    // The keyless request executes and --require-key says keys are
    // required: a low finding, which cannot duplicate anything by itself.
    let args = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "audit",
            "--url",
            &format!("{base}/payments"),
            "--body",
            r#"{"amount":100}"#,
            "--header",
            "Authorization: Bearer sk_a",
            "--count-url",
            &format!("{base}/payments/count"),
            "--scenarios",
            "sequential-replay,missing-key",
            "--require-key",
            "--settle",
            "50ms",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let out = idem(args(&[])).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let line = stdout
        .lines()
        .find(|l| l.contains("missing-key"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.trim_start().starts_with("WARN") && line.contains("[low]"),
        "{line}"
    );
    assert!(
        stdout.contains("1 warning (below --fail-on medium)"),
        "{stdout}"
    );

    let out = idem(args(&["--format", "json"])).await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&report["verdict"], &report["fail_on"]),
        (&"pass".into(), &"medium".into())
    );
    let s = scenario(&report, "missing-key");
    assert_eq!(
        (&s["verdict"], &s["severity"]),
        (&"fail".into(), &"low".into())
    );

    let out = idem(args(&["--fail-on", "low"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("FAIL  missing-key"),
        "{}",
        text(&out.stdout)
    );

    for (extra, expected) in [
        (&["--fail-on", "info"][..], "--fail-on"),
        (
            &["--settle-deadline", "10ms"][..],
            "--settle-deadline: must be at least --settle",
        ),
    ] {
        let out = idem(args(extra)).await;
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(
            text(&out.stderr).contains(expected),
            "{extra:?}: {}",
            text(&out.stderr)
        );
    }
}
