//! The real `idem soak` binary, through the real `idem chaos` (and `idem
//! gateway`) processes, in front of a counting upstream with a count
//! endpoint: duplicates without the gateway, none with it and the bound,
//! the JSON report's fields, and bad input with exit code 2.

mod support;

use idem_testkit::counting_upstream;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use support::Idem;

const OPERATIONS: u64 = 200;

fn chaos_to(upstream: SocketAddr) -> Idem {
    Idem::start(
        [
            "chaos",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &format!("http://{upstream}"),
            "--drop-response",
            "0.2",
            "--seed",
            "42",
        ],
        "warn",
    )
}

/// Runs `idem soak ARGS…` to completion, off the async runtime.
async fn soak(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_idem"))
            .arg("soak")
            .args(&args)
            .env("IDEM_LOG", "warn")
            .output()
            .expect("the idem binary runs")
    })
    .await
    .unwrap()
}

fn soak_args(target: SocketAddr, upstream: SocketAddr) -> Vec<String> {
    [
        "--url".to_owned(),
        format!("http://{target}/charges"),
        "--body".to_owned(),
        r#"{"amount":100,"currency":"eur"}"#.to_owned(),
        "--header".to_owned(),
        "Authorization: Bearer sk_test_soak".to_owned(),
        "--requests".to_owned(),
        OPERATIONS.to_string(),
        "--concurrency".to_owned(),
        "8".to_owned(),
        "--max-attempts".to_owned(),
        "10".to_owned(),
        "--count-url".to_owned(),
        format!("http://{upstream}/count"),
    ]
    .into()
}

fn json(output: &Output, report: &str) -> serde_json::Value {
    assert!(
        output.status.success(),
        "idem soak failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(report).unwrap_or_else(|e| panic!("not JSON ({e}): {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_gateway_soak_finds_duplicates() {
    let (upstream, count) = counting_upstream().await;
    let chaos = chaos_to(upstream);
    let mut args = soak_args(chaos.addr, upstream);
    args.extend(["--format".to_owned(), "json".to_owned()]);
    let output = soak(args).await;
    let report = json(&output, &String::from_utf8_lossy(&output.stdout));

    assert_eq!(report["logical_operations"], OPERATIONS);
    assert_eq!(report["effects"], count.load(Ordering::SeqCst));
    let duplicates = report["duplicates"].as_u64().unwrap();
    assert!(duplicates > 0, "{report}");
    assert_eq!(
        report["effects"].as_u64().unwrap(),
        OPERATIONS + duplicates,
        "{report}"
    );
    assert_eq!(
        report["duplicate_rate"].as_f64().unwrap(),
        duplicates as f64 / OPERATIONS as f64
    );
    let bound = report["upper_bound_95"].as_f64().unwrap();
    assert!(bound > report["duplicate_rate"].as_f64().unwrap() && bound < 1.0);
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["outcome_unknown"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_gateway_soak_finds_none_and_reports_the_bound() {
    let (upstream, count) = counting_upstream().await;
    let gateway = Idem::start(
        [
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &format!("http://{upstream}"),
            "--store",
            "memory",
        ],
        "warn",
    );
    let chaos = chaos_to(gateway.addr);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.json");
    let mut args = soak_args(chaos.addr, upstream);
    args.extend([
        "--format".to_owned(),
        "json".to_owned(),
        "--output".to_owned(),
        file.to_str().unwrap().to_owned(),
    ]);
    let output = soak(args).await;
    assert!(output.stdout.is_empty(), "the report went to the file");
    let report = json(&output, &std::fs::read_to_string(&file).unwrap());

    assert_eq!(report["logical_operations"], OPERATIONS);
    assert_eq!(report["effects"], OPERATIONS, "{report}");
    assert_eq!(count.load(Ordering::SeqCst), OPERATIONS);
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["duplicate_rate"], 0.0);
    let bound = report["upper_bound_95"].as_f64().unwrap();
    let expected = 1.0 - 0.05f64.powf(1.0 / OPERATIONS as f64);
    assert!((bound - expected).abs() < 1e-12, "{bound} vs {expected}");
    assert_eq!(bound, idem_math::formula::upper_bound_95(OPERATIONS));
    assert_eq!(report["outcome_unknown"], 0, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(
        report["replayed"].as_u64().unwrap() > 0,
        "lost responses came back as replays: {report}"
    );

    // The text report says the same to a person.
    let before = count.load(Ordering::SeqCst);
    let mut args = soak_args(chaos.addr, upstream);
    args[7] = "20".to_owned(); // --requests
    let output = soak(args).await;
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("duplicates        0"), "{text}");
    assert!(text.contains("1 - 0.05^(1/20)"), "{text}");
    assert_eq!(count.load(Ordering::SeqCst), before + 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_flag_and_exits_2() {
    let (upstream, count) = counting_upstream().await;
    let base = soak_args(upstream, upstream);
    let cases: [(&str, &str, &str); 6] = [
        ("--requests", "0", "--requests"),
        ("--url", "https://api.example/charges", "--url"),
        ("--body", "{not json", "--body"),
        ("--header", "Idempotency-Key: fixed", "--header"),
        ("--concurrency", "many", "--concurrency"),
        ("--count-url", "localhost:3000/count", "--count-url"),
    ];
    for (flag, value, named) in cases {
        let mut args = base.clone();
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = value.to_owned();
        let output = soak(args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(named), "{flag} {value}: {stderr}");
    }
    // A count field that is not in the body: the run stops before sending.
    let mut args = base.clone();
    args.extend(["--count-field".to_owned(), "stats.charges".to_owned()]);
    let output = soak(args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--count-field stats.charges"), "{stderr}");
    assert_eq!(count.load(Ordering::SeqCst), 0, "nothing was sent");
}
