//! The tally: how many executions one key caused, from whatever the
//! oracles saw (a count, distinct ids, distinct bodies), and the verdict
//! it supports.

use super::context::Ctx;
use crate::http::Response;
use crate::outcome::{Evidence, OracleReading, Verdict};
use bytes::Bytes;
use std::collections::BTreeSet;

/// How many executions one key caused, from whatever the oracles saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Executions the scenario expects.
    pub expected: u64,
    /// Effects counted by `--count-url` / `--check-cmd`.
    pub counted: Option<u64>,
    /// Distinct id-field values among the 2xx answers read.
    pub ids: BTreeSet<String>,
    /// 2xx answers without the id field.
    pub ids_missing: usize,
    /// Distinct 2xx bodies read.
    pub bodies: Vec<Bytes>,
    /// Attempts whose answer nobody read (hung up, connection failed).
    pub unseen: usize,
}

impl Tally {
    /// A tally expecting one execution.
    pub(super) fn one() -> Self {
        Tally {
            expected: 1,
            ..Tally::default()
        }
    }

    /// Adds an answer (seen by the client or by the fault point).
    pub(super) fn add(&mut self, ctx: &Ctx<'_>, response: &Response) {
        if !response.is_success() {
            return;
        }
        match ctx.id_of(response) {
            Some(id) => {
                self.ids.insert(id);
            }
            None if ctx.endpoint.id_field.is_some() => self.ids_missing += 1,
            None => {}
        }
        if !self.bodies.iter().any(|b| ctx.same_body(b, &response.body)) {
            self.bodies.push(response.body.clone());
        }
    }

    /// The verdict on "one key, `expected` executions", with a sentence and
    /// the oracles' readings.
    pub(super) fn judge(&self, ctx: &Ctx<'_>, evidence: &mut Evidence) -> (Verdict, String) {
        let e = ctx.endpoint;
        if let Some(counted) = self.counted {
            evidence.oracle.push(OracleReading {
                oracle: ctx.oracles.counting_name().to_owned(),
                saw: format!("the count moved by {counted}"),
                effects: Some(counted),
            });
        }
        if e.id_field.is_some() {
            evidence.oracle.push(OracleReading {
                oracle: "id-field".to_owned(),
                saw: format!(
                    "{} distinct value(s) at {} in the 2xx answers: {}",
                    self.ids.len(),
                    e.id_field
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    self.ids.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                effects: Some(self.ids.len() as u64),
            });
        }
        if self.ids.len() as u64 > self.expected {
            return (
                Verdict::Fail,
                format!(
                    "executed {} for one key: the answers carry {} different ids",
                    times(self.ids.len() as u64),
                    self.ids.len()
                ),
            );
        }
        if let Some(counted) = self.counted {
            return match counted.cmp(&self.expected) {
                std::cmp::Ordering::Greater => (
                    Verdict::Fail,
                    format!("executed {} for one key (the count moved by {counted})", times(counted)),
                ),
                std::cmp::Ordering::Equal => (
                    Verdict::Pass,
                    format!("executed exactly {}, as the count shows", times(self.expected)),
                ),
                std::cmp::Ordering::Less => (
                    Verdict::Indeterminate,
                    format!(
                        "the count moved by {counted}, expected {}: is the count reading this operation's effects?",
                        self.expected
                    ),
                ),
            };
        }
        if e.id_field.is_some() {
            if self.ids_missing > 0 {
                evidence.notes.push(format!(
                    "{} 2xx answer(s) had no value at the id field",
                    self.ids_missing
                ));
            }
            if self.unseen > 0 {
                return (
                    Verdict::Indeterminate,
                    format!(
                        "{} attempt(s) got no answer anyone read, so their executions are invisible to --id-field",
                        self.unseen
                    ),
                );
            }
            if self.ids_missing > 0 || self.ids.is_empty() {
                return (
                    Verdict::Indeterminate,
                    "the id field was missing from the answers; nothing to compare".to_owned(),
                );
            }
            return (
                Verdict::Pass,
                format!("every answer carries the same id ({})", first(&self.ids)),
            );
        }
        evidence.oracle.push(OracleReading {
            oracle: "body".to_owned(),
            saw: format!("{} distinct 2xx body(ies)", self.bodies.len()),
            effects: None,
        });
        if self.bodies.len() as u64 > self.expected {
            return (
                Verdict::Fail,
                format!(
                    "{} different successful answers for one key: it executed again, or its replay is not the stored response",
                    self.bodies.len()
                ),
            );
        }
        (
            Verdict::Indeterminate,
            "the answers agree, but without --id-field, --count-url or --check-cmd a second execution with the same answer cannot be ruled out".to_owned(),
        )
    }
}

/// What to add when only a count of side effects can see an execution.
pub(crate) const NEEDS_A_COUNT: &str = "--count-url URL or --check-cmd CMD: an attempt's answer was never read, so only a count of side effects sees whether it executed";
/// What to add when no oracle counted anything.
pub(crate) const NEEDS_AN_ORACLE: &str = "--count-url URL or --check-cmd CMD (a count of side effects), or --id-field PATH (a value new per execution, e.g. --id-field id): identical answers cannot rule out a second execution";

impl Tally {
    /// For an indeterminate [`Tally::judge`]: the oracle that would turn
    /// it into a verdict, with its flag.
    pub(super) fn oracle_hint(&self, ctx: &Ctx<'_>) -> Option<String> {
        let e = ctx.endpoint;
        if self.ids.len() as u64 > self.expected {
            return None;
        }
        if let Some(counted) = self.counted {
            return (counted < self.expected).then(|| {
                "--count-url URL (with --count-field PATH) or --check-cmd CMD that counts this operation's effects: the count moved less than the executions the answers show".to_owned()
            });
        }
        if e.counts_effects() {
            return Some(
                "a count nothing else changes: the count could not be used here (see the notes), so --count-url or --check-cmd did not decide".to_owned(),
            );
        }
        if let Some(path) = &e.id_field {
            if self.unseen > 0 {
                return Some(NEEDS_A_COUNT.to_owned());
            }
            if self.ids_missing > 0 || self.ids.is_empty() {
                return Some(format!(
                    "--id-field PATH naming a value new per execution (the answers have none at {path}), or --count-url URL or --check-cmd CMD"
                ));
            }
            return None;
        }
        if self.bodies.len() as u64 > self.expected {
            return None;
        }
        Some(
            if self.unseen > 0 {
                NEEDS_A_COUNT
            } else {
                NEEDS_AN_ORACLE
            }
            .to_owned(),
        )
    }
}

/// `once`, `twice`, `3 times`.
pub(crate) fn times(n: u64) -> String {
    match n {
        1 => "once".to_owned(),
        2 => "twice".to_owned(),
        n => format!("{n} times"),
    }
}

fn first(ids: &BTreeSet<String>) -> &str {
    ids.iter().next().map(String::as_str).unwrap_or("")
}
