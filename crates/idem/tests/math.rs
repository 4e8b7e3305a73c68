//! The real `idem math` binary: JSON on stdout, and bad input rejected with
//! exit code 2 and a message that names the flag.

use std::process::{Command, Output};

fn idem_math(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idem"))
        .arg("math")
        .args(args)
        .output()
        .expect("run idem")
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs()
}

#[test]
fn json_for_a_volume_and_a_rate() {
    let out = idem_math(&[
        "--volume", "10M/day", "--rate", "0.001%", "--cost", "25.00", "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let f = |k: &str| json[k].as_f64().unwrap_or_else(|| panic!("{k} in {json}"));
    assert!(close(f("expected_duplicates_per_day"), 100.0, 1e-14));
    assert!(close(f("expected_duplicates_per_year"), 36_500.0, 1e-14));
    assert_eq!(f("p_at_least_one_per_day"), 1.0);
    assert!(close(f("cost_per_day"), 2_500.0, 1e-14));
}

#[test]
fn json_for_clean_trials() {
    let out = idem_math(&["--clean-trials", "3000", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(close(
        json["upper_bound_95"].as_f64().unwrap(),
        0.000_998_079_011_996_587,
        1e-13
    ));
    assert!(close(json["rule_of_three"].as_f64().unwrap(), 0.001, 1e-15));
}

#[test]
fn text_by_default() {
    let out = idem_math(&["--volume", "10M/day", "--rate", "1e-5"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("100 per day, 36,500 per year"), "{text}");
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let out = idem_math(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{args:?}: {needle:?} not in {stderr}"
        );
    }
    assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
}

#[test]
fn bad_input_exits_2_naming_the_flag() {
    fails_with(
        &["--volume", "10M", "--rate", "1%"],
        &["--volume", "`10M` has no period"],
    );
    fails_with(
        &["--volume", "10M/day", "--rate", "150%"],
        &["--rate", "above 100%"],
    );
    fails_with(&["--clean-trials", "0"], &["--clean-trials", "zero trials"]);
    fails_with(&["--volume", "10M/day"], &["--volume needs --rate"]);
    fails_with(
        &[
            "--volume",
            "1/s",
            "--rate",
            "1%",
            "--retry-duplicates",
            "1%",
        ],
        &["--rate cannot be combined with --retry-duplicates"],
    );
    fails_with(
        &["--clean-trials", "100", "--ambiguous-rate", "1%"],
        &["--clean-trials cannot be combined with --ambiguous-rate"],
    );
    fails_with(&[], &["nothing to compute"]);
}
