//! `idem math` against values computed by hand (and, for the awkward
//! digits, with 40-digit decimal arithmetic), plus parse round trips.

use idem_math::{formula, parse_trials, Inputs, Period, Rate, Report, Volume};
use proptest::prelude::*;

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs()
}

fn answer(inputs: Inputs) -> Report {
    inputs.question().unwrap().answer()
}

fn volume(s: &str) -> Option<Volume> {
    Some(s.parse().unwrap())
}

fn rate(s: &str) -> Option<Rate> {
    Some(s.parse().unwrap())
}

#[test]
fn ten_million_a_day_at_a_thousandth_of_a_percent() {
    let report = answer(Inputs {
        volume: volume("10M/day"),
        rate: rate("0.001%"),
        cost: Some(25.0),
        ..Inputs::default()
    });
    let json = report.to_json();
    let f = |k: &str| json[k].as_f64().unwrap_or_else(|| panic!("{k} in {json}"));
    assert_eq!(json["mode"], "rate");
    // 10,000,000 × 0.00001 = 100 a day; × 365 = 36,500 a year. Exactly:
    // reports drop the last-bit noise of binary arithmetic.
    assert_eq!(f("expected_duplicates_per_day"), 100.0);
    assert_eq!(f("expected_duplicates_per_year"), 36_500.0);
    // 1 - e^-100 is 1 to double precision; e^-100 = 3.72e-44.
    assert_eq!(f("p_at_least_one_per_day"), 1.0);
    assert!(close(f("p_none_per_day"), 3.720_075_976_020_836e-44, 1e-12));
    // 25.00 × 100 = 2,500 a day; × 365 = 912,500 a year.
    assert_eq!(f("cost_per_day"), 2_500.0);
    assert_eq!(f("cost_per_year"), 912_500.0);
    // 86,400 s / 100 = one every 864 s.
    assert_eq!(f("mean_seconds_between_duplicates"), 864.0);
    assert_eq!(json["volume"], "10000000/day");
}

#[test]
fn other_volume_forms() {
    // 120/s = 10,368,000 a day; at 1e-5: 103.68 a day.
    let json = answer(Inputs {
        volume: volume("120/s"),
        rate: rate("1e-5"),
        ..Inputs::default()
    })
    .to_json();
    assert!(close(
        json["expected_duplicates_per_day"].as_f64().unwrap(),
        103.68,
        1e-14
    ));
    assert!(json.get("cost_per_day").is_none(), "no cost without --cost");

    // 5,000,000/month = 166,666.7 a day; at 1e-6: E = 1/6 a day,
    // P = 1 - e^(-1/6) = 0.15351827510938593.
    let json = answer(Inputs {
        volume: volume("5000000/month"),
        rate: rate("0.0001%"),
        ..Inputs::default()
    })
    .to_json();
    assert!(close(
        json["expected_duplicates_per_day"].as_f64().unwrap(),
        1.0 / 6.0,
        1e-14
    ));
    assert!(close(
        json["p_at_least_one_per_day"].as_f64().unwrap(),
        0.153_518_275_109_386,
        1e-13
    ));
    // A year: E = 365/6 = 60.8.
    assert!(close(
        json["expected_duplicates_per_year"].as_f64().unwrap(),
        365.0 / 6.0,
        1e-14
    ));
}

#[test]
fn the_rate_from_its_parts() {
    // 0.1% ambiguous × 1% of their retries duplicate = 0.001%, as above.
    let report = answer(Inputs {
        volume: volume("10M/day"),
        ambiguous_rate: rate("0.1%"),
        retry_duplicates: rate("0.01"),
        ..Inputs::default()
    });
    let json = report.to_json();
    assert_eq!(json["mode"], "parts");
    assert!(close(json["rate"].as_f64().unwrap(), 1e-5, 1e-14));
    assert!(close(json["ambiguous_rate"].as_f64().unwrap(), 1e-3, 1e-15));
    assert!(close(
        json["retry_duplicates"].as_f64().unwrap(),
        1e-2,
        1e-15
    ));
    assert!(close(
        json["expected_duplicates_per_day"].as_f64().unwrap(),
        100.0,
        1e-14
    ));
    let text = report.to_string();
    assert!(text.contains("0.001% (1 in 100,000) = 0.1% × 1%"), "{text}");
}

#[test]
fn what_clean_trials_prove() {
    let json = answer(Inputs {
        clean_trials: Some(3000),
        ..Inputs::default()
    })
    .to_json();
    assert_eq!(json["mode"], "clean_trials");
    // 1 - 0.05^(1/3000) = 0.000998079011996587 (40-digit arithmetic).
    assert!(close(
        json["upper_bound_95"].as_f64().unwrap(),
        0.000_998_079_011_996_587,
        1e-13
    ));
    assert!(close(json["rule_of_three"].as_f64().unwrap(), 0.001, 1e-15));
    assert!(json.get("worst_case").is_none());

    // At 10M/day the bound still allows 9,980.79 duplicates a day.
    let json = answer(Inputs {
        clean_trials: Some(3000),
        volume: volume("10M/day"),
        cost: Some(2.0),
        ..Inputs::default()
    })
    .to_json();
    let worst = &json["worst_case"];
    assert!(close(
        worst["expected_duplicates_per_day"].as_f64().unwrap(),
        9_980.790_119_965_87,
        1e-12
    ));
    assert!(close(
        worst["cost_per_day"].as_f64().unwrap(),
        19_961.580_239_931_74,
        1e-12
    ));
}

#[test]
fn the_bound_sits_just_under_the_rule_of_three() {
    for n in [1u64, 2, 3, 10, 100, 3000, 1_000_000, 1 << 40] {
        let exact = formula::upper_bound_95(n);
        assert!(exact <= formula::rule_of_three(n), "N = {n}");
        if n >= 100 {
            // -ln(0.05) = 2.9957: the rule of three is ~0.14% high.
            assert!(
                close(exact * n as f64, 2.995_732_273_553_991, 0.02),
                "N = {n}"
            );
        }
    }
}

fn period() -> impl Strategy<Value = Period> {
    proptest::sample::select(Period::ALL.to_vec())
}

proptest! {
    #[test]
    fn volumes_round_trip(count in 0.0f64..1e12, period in period()) {
        let v = Volume::new(count, period).unwrap();
        let back: Volume = v.to_string().parse().unwrap();
        prop_assert_eq!(back, v);
    }

    #[test]
    fn suffixes_scale_exactly(n in 0u64..1_000_000, period in period()) {
        for (suffix, scale) in [("k", 1e3), ("M", 1e6), ("B", 1e9)] {
            let v: Volume = format!("{n}{suffix}/{period}").parse().unwrap();
            prop_assert_eq!(v.count(), n as f64 * scale);
            prop_assert_eq!(v.period(), period);
        }
        if n > 0 {
            prop_assert_eq!(parse_trials(&format!("{n}k")), Ok(n * 1000));
        }
    }

    #[test]
    fn rates_round_trip(fraction in 0.0f64..=1.0) {
        let r = Rate::new(fraction).unwrap();
        let back: Rate = r.to_string().parse().unwrap();
        prop_assert_eq!(back, r);
        let percent: Rate = format!("{}%", fraction * 100.0).parse().unwrap();
        prop_assert!((percent.fraction() - fraction).abs() <= 1e-15 * fraction.max(1e-300));
    }

    #[test]
    fn parsers_never_panic(s in "\\PC{0,12}") {
        let _ = s.parse::<Volume>();
        let _ = s.parse::<Rate>();
        let _ = parse_trials(&s);
        let _ = idem_math::parse_cost(&s);
    }

    #[test]
    fn probabilities_are_probabilities(e in 0.0f64..1e6) {
        let p = formula::p_at_least_one(e);
        prop_assert!((0.0..=1.0).contains(&p));
        prop_assert!(close(p + formula::p_none(e), 1.0, 1e-15));
    }
}
