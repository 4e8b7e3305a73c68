//! Answers: computed once, then serialised to JSON or rendered as text.

use crate::format;
use crate::formula;
use crate::input::Question;
use crate::parse::{Volume, DAYS_PER_YEAR};
use serde::Serialize;
use std::fmt::{self, Write as _};

/// The answer to a [`Question`]. As JSON, `mode` says which question
/// (`rate`, `parts` or `clean_trials`) and the fields of the variant follow.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Report {
    /// `--volume` with `--rate`.
    Rate(RateReport),
    /// `--volume` with `--ambiguous-rate` and `--retry-duplicates`.
    Parts(RateReport),
    /// `--clean-trials`, with or without `--volume`.
    CleanTrials(CleanTrialsReport),
}

/// What a duplicate rate means at a volume.
#[derive(Debug, Clone, Serialize)]
pub struct RateReport {
    /// The volume, in a form `--volume` reads back (e.g. `10000000/day`).
    pub volume: String,
    /// Requests per day.
    pub volume_per_day: f64,
    /// Requests per second.
    pub volume_per_second: f64,
    /// How often a request's outcome is ambiguous (parts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ambiguous_rate: Option<f64>,
    /// How often the retry of an ambiguous request duplicates (parts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_duplicates: Option<f64>,
    /// The duplicate rate (for parts, their product).
    pub rate: f64,
    /// What that means per day and per year.
    #[serde(flatten)]
    pub outlook: Outlook,
}

/// Expected duplicates and their probability and cost at one rate and
/// volume.
#[derive(Debug, Clone, Serialize)]
pub struct Outlook {
    /// E = requests per day × rate.
    pub expected_duplicates_per_day: f64,
    /// 365 × E.
    pub expected_duplicates_per_year: f64,
    /// 1 - e^(-E).
    pub p_at_least_one_per_day: f64,
    /// e^(-E): the chance of a day without a duplicate.
    pub p_none_per_day: f64,
    /// 1 - e^(-365·E).
    pub p_at_least_one_per_year: f64,
    /// 1 / (requests per second × rate); `null` at rate 0.
    pub mean_seconds_between_duplicates: Option<f64>,
    /// `--cost`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_duplicate: Option<f64>,
    /// E × cost, when a cost is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_day: Option<f64>,
    /// 365 × E × cost, when a cost is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_year: Option<f64>,
}

/// What N trials without a duplicate prove.
#[derive(Debug, Clone, Serialize)]
pub struct CleanTrialsReport {
    /// N: trials run, none of which duplicated.
    pub clean_trials: u64,
    /// The confidence of the bound: 0.95.
    pub confidence: f64,
    /// The exact 95% upper bound on the rate: 1 - 0.05^(1/N).
    pub upper_bound_95: f64,
    /// The rule of three: 3/N (capped at 1).
    pub rule_of_three: f64,
    /// The volume, when `--volume` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Requests per day, when `--volume` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_per_day: Option<f64>,
    /// The outlook at the bound: the worst the evidence still allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worst_case: Option<Outlook>,
}

/// Rounds to 15 significant digits: drops the last-bit noise of binary
/// arithmetic on decimal inputs (10,000,000 × 0.00001 is
/// 100.00000000000001 in doubles) so that reports show 100.
fn tidy(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    format!("{x:.14e}").parse().unwrap_or(x)
}

impl Outlook {
    /// The outlook of `rate` at `volume`, with the cost if given.
    pub fn new(volume: Volume, rate: f64, cost: Option<f64>) -> Outlook {
        let per_day = tidy(formula::expected(volume.per_day(), rate));
        let per_year = tidy(per_day * DAYS_PER_YEAR);
        Outlook {
            expected_duplicates_per_day: per_day,
            expected_duplicates_per_year: per_year,
            p_at_least_one_per_day: formula::p_at_least_one(per_day),
            p_none_per_day: formula::p_none(per_day),
            p_at_least_one_per_year: formula::p_at_least_one(per_year),
            mean_seconds_between_duplicates: formula::mean_seconds_between(
                volume.per_second(),
                rate,
            )
            .map(tidy),
            cost_per_duplicate: cost,
            cost_per_day: cost.map(|c| tidy(per_day * c)),
            cost_per_year: cost.map(|c| tidy(per_year * c)),
        }
    }
}

impl Question {
    /// Computes the answer.
    pub fn answer(&self) -> Report {
        match *self {
            Question::Rate { volume, rate, cost } => Report::Rate(RateReport {
                volume: volume.to_string(),
                volume_per_day: tidy(volume.per_day()),
                volume_per_second: tidy(volume.per_second()),
                ambiguous_rate: None,
                retry_duplicates: None,
                rate: rate.fraction(),
                outlook: Outlook::new(volume, rate.fraction(), cost),
            }),
            Question::Parts {
                volume,
                ambiguous_rate,
                retry_duplicates,
                cost,
            } => {
                let rate = formula::rate_from_parts(
                    ambiguous_rate.fraction(),
                    retry_duplicates.fraction(),
                );
                Report::Parts(RateReport {
                    volume: volume.to_string(),
                    volume_per_day: tidy(volume.per_day()),
                    volume_per_second: tidy(volume.per_second()),
                    ambiguous_rate: Some(ambiguous_rate.fraction()),
                    retry_duplicates: Some(retry_duplicates.fraction()),
                    rate,
                    outlook: Outlook::new(volume, rate, cost),
                })
            }
            Question::CleanTrials {
                trials,
                volume,
                cost,
            } => {
                let bound = formula::upper_bound_95(trials);
                Report::CleanTrials(CleanTrialsReport {
                    clean_trials: trials,
                    confidence: formula::CONFIDENCE,
                    upper_bound_95: bound,
                    rule_of_three: formula::rule_of_three(trials),
                    volume: volume.map(|v| v.to_string()),
                    volume_per_day: volume.map(|v| tidy(v.per_day())),
                    worst_case: volume.map(|v| Outlook::new(v, bound, cost)),
                })
            }
        }
    }
}

impl Report {
    /// The report as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a report is plain data")
    }

    /// The report as pretty-printed JSON text, without a final newline.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report is plain data")
    }
}

/// Width of the label column of the text report.
const LABEL: usize = 28;

fn line(out: &mut String, label: &str, value: impl fmt::Display) {
    let _ = writeln!(out, "{label:<LABEL$} {value}");
}

fn volume_line(out: &mut String, per_day: f64, per_second: f64) {
    line(
        out,
        "volume",
        format_args!(
            "{} per day ({} per second)",
            format::count(per_day),
            format::count(per_second)
        ),
    );
}

fn rate_text(rate: f64) -> String {
    if rate < 0.5 {
        format!("{} ({})", format::percent(rate), format::one_in(rate))
    } else {
        format::percent(rate)
    }
}

fn outlook_lines(out: &mut String, o: &Outlook) {
    line(
        out,
        "expected duplicates",
        format_args!(
            "{} per day, {} per year",
            format::count(o.expected_duplicates_per_day),
            format::count(o.expected_duplicates_per_year)
        ),
    );
    if let Some(seconds) = o.mean_seconds_between_duplicates {
        line(
            out,
            "one duplicate every",
            format_args!("{} on average", format::duration(seconds)),
        );
    }
    line(
        out,
        "P(at least one in a day)",
        format::probability(
            o.p_at_least_one_per_day,
            o.p_none_per_day,
            o.expected_duplicates_per_day,
        ),
    );
    line(
        out,
        "P(at least one in a year)",
        format::probability(
            o.p_at_least_one_per_year,
            formula::p_none(o.expected_duplicates_per_year),
            o.expected_duplicates_per_year,
        ),
    );
    if let (Some(each), Some(day), Some(year)) =
        (o.cost_per_duplicate, o.cost_per_day, o.cost_per_year)
    {
        line(
            out,
            "cost",
            format_args!(
                "{} per day, {} per year ({} per duplicate)",
                format::money(day),
                format::money(year),
                format::money(each)
            ),
        );
    }
}

impl fmt::Display for Report {
    /// The text report of `idem math`, one fact per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        match self {
            Report::Rate(r) | Report::Parts(r) => {
                volume_line(&mut out, r.volume_per_day, r.volume_per_second);
                if let (Some(a), Some(d)) = (r.ambiguous_rate, r.retry_duplicates) {
                    line(&mut out, "ambiguous outcomes", rate_text(a));
                    line(&mut out, "retries that duplicate", rate_text(d));
                    line(
                        &mut out,
                        "duplicate rate",
                        format_args!(
                            "{} = {} × {}",
                            rate_text(r.rate),
                            format::percent(a),
                            format::percent(d)
                        ),
                    );
                } else {
                    line(&mut out, "duplicate rate", rate_text(r.rate));
                }
                outlook_lines(&mut out, &r.outlook);
            }
            Report::CleanTrials(c) => {
                line(
                    &mut out,
                    "clean trials",
                    format_args!("{} with no duplicate", format::count(c.clean_trials as f64)),
                );
                line(
                    &mut out,
                    "95% upper bound on the rate",
                    format_args!(
                        "{} = 1 - 0.05^(1/{})",
                        rate_text(c.upper_bound_95),
                        c.clean_trials
                    ),
                );
                line(&mut out, "rule of three (3/N)", rate_text(c.rule_of_three));
                if let (Some(per_day), Some(o)) = (c.volume_per_day, &c.worst_case) {
                    let _ = writeln!(
                        out,
                        "\nat {} requests per day, the worst case the evidence still allows (95%):",
                        format::count(per_day)
                    );
                    outlook_lines(&mut out, o);
                }
            }
        }
        f.write_str(out.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use crate::Inputs;

    #[test]
    fn text_of_a_rate() {
        let report = Inputs {
            volume: Some("10M/day".parse().unwrap()),
            rate: Some("0.001%".parse().unwrap()),
            cost: Some(25.0),
            ..Inputs::default()
        }
        .question()
        .unwrap()
        .answer();
        let text = report.to_string();
        assert!(
            text.contains("10,000,000 per day (116 per second)"),
            "{text}"
        );
        assert!(text.contains("0.001% (1 in 100,000)"), "{text}");
        assert!(text.contains("100 per day, 36,500 per year"), "{text}");
        assert!(text.contains("14.4 minutes"), "{text}");
        assert!(
            text.contains("2,500.00 per day, 912,500.00 per year"),
            "{text}"
        );
    }
}
