//! The faults, their probabilities, and the seeded decisions.

use http::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// One fault injected into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Deliver the request to the upstream twice, answer the client with
    /// the first response.
    Duplicate,
    /// Let the upstream answer in full, then reset the client's connection
    /// without answering: the timed-out-but-processed case.
    DropResponse,
    /// Read the client's whole request, never forward it, reset the
    /// client's connection.
    DropRequest,
    /// Hold the request for a while before forwarding it.
    Delay,
    /// Reset the client's connection as soon as the request head arrives,
    /// before forwarding.
    Reset,
}

impl Fault {
    /// Every fault, in the order their probability ranges are laid out.
    pub const ALL: [Fault; 5] = [
        Fault::DropRequest,
        Fault::Reset,
        Fault::DropResponse,
        Fault::Duplicate,
        Fault::Delay,
    ];

    /// The fault's name, as in the log (`drop_response`).
    pub fn name(self) -> &'static str {
        match self {
            Fault::Duplicate => "duplicate",
            Fault::DropResponse => "drop_response",
            Fault::DropRequest => "drop_request",
            Fault::Delay => "delay",
            Fault::Reset => "reset",
        }
    }

    /// The command-line flag that sets its probability.
    pub fn flag(self) -> &'static str {
        match self {
            Fault::Duplicate => "--duplicate",
            Fault::DropResponse => "--drop-response",
            Fault::DropRequest => "--drop-request",
            Fault::Delay => "--delay",
            Fault::Reset => "--reset",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--delay P:DURATION`: hold a request with probability P for DURATION.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delay {
    /// The probability of holding a request.
    pub probability: f64,
    /// How long to hold it.
    pub duration: Duration,
}

/// The probability of each fault. At most one fault is injected per
/// request, so they add up to at most 1 (see [`Faults::validate`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// `--duplicate`.
    pub duplicate: f64,
    /// `--drop-response`.
    pub drop_response: f64,
    /// `--drop-request`.
    pub drop_request: f64,
    /// `--delay`.
    pub delay: Option<Delay>,
    /// `--reset`.
    pub reset: f64,
}

impl Faults {
    /// The probability of `fault`.
    pub fn probability(&self, fault: Fault) -> f64 {
        match fault {
            Fault::Duplicate => self.duplicate,
            Fault::DropResponse => self.drop_response,
            Fault::DropRequest => self.drop_request,
            Fault::Delay => self.delay.map_or(0.0, |d| d.probability),
            Fault::Reset => self.reset,
        }
    }

    /// The delay of [`Fault::Delay`] (zero when none is configured).
    pub fn delay_duration(&self) -> Duration {
        self.delay.map_or(Duration::ZERO, |d| d.duration)
    }

    /// Checks each probability is in 0..=1 and that they add up to at most
    /// 1, naming the flags when not.
    pub fn validate(&self) -> Result<(), ParseError> {
        for fault in Fault::ALL {
            let p = self.probability(fault);
            if !(0.0..=1.0).contains(&p) {
                return Err(ParseError(format!(
                    "{} {p}: a probability is between 0 and 1",
                    fault.flag()
                )));
            }
        }
        let given: Vec<Fault> = Fault::ALL
            .into_iter()
            .filter(|&f| self.probability(f) > 0.0)
            .collect();
        let sum: f64 = given.iter().map(|&f| self.probability(f)).sum();
        // A little slack for sums such as 0.1 + 0.2 + 0.7.
        if sum > 1.0 + 1e-9 {
            let terms: Vec<String> = given
                .iter()
                .map(|&f| format!("{} {}", f.flag(), self.probability(f)))
                .collect();
            return Err(ParseError(format!(
                "{} add up to {sum}: at most one fault is injected per request, so the probabilities must add up to at most 1",
                terms.join(" + ")
            )));
        }
        Ok(())
    }
}

/// Which request methods get faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    /// Every method (`--methods '*'`).
    All,
    /// Only these.
    Only(Vec<Method>),
}

impl Methods {
    /// POST and PATCH: the methods that are not idempotent by definition.
    pub fn default_unsafe() -> Methods {
        Methods::Only(vec![Method::POST, Method::PATCH])
    }

    /// Whether requests with `method` get faults.
    pub fn contains(&self, method: &Method) -> bool {
        match self {
            Methods::All => true,
            Methods::Only(list) => list.contains(method),
        }
    }
}

impl Default for Methods {
    fn default() -> Methods {
        Methods::default_unsafe()
    }
}

impl fmt::Display for Methods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Methods::All => f.write_str("*"),
            Methods::Only(list) => {
                let names: Vec<&str> = list.iter().map(Method::as_str).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

/// A command-line value that does not parse; the message says what a valid
/// one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// A probability: `0.3`, `30%` or `1e-2`, between 0 and 1.
pub fn parse_probability(input: &str) -> Result<f64, ParseError> {
    let s = input.trim();
    let bad = || {
        ParseError(format!(
            "`{input}` is not a probability: write a number between 0 and 1 (e.g. 0.3) or a percentage (e.g. 30%)"
        ))
    };
    let (number, scale) = match s.strip_suffix('%') {
        Some(n) => (n.trim_end(), 100.0),
        None => (s, 1.0),
    };
    let only_number_chars = !number.is_empty()
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if !only_number_chars {
        return Err(bad());
    }
    let value = number.parse::<f64>().map_err(|_| bad())? / scale;
    if !(0.0..=1.0).contains(&value) {
        return Err(ParseError(format!(
            "`{input}` is outside 0..=1: a probability is between 0 and 1 (0% and 100%)"
        )));
    }
    Ok(value.abs())
}

/// `P:DURATION`, e.g. `0.1:2s` or `30%:500ms`.
pub fn parse_delay(input: &str) -> Result<Delay, ParseError> {
    let Some((p, d)) = input.split_once(':') else {
        return Err(ParseError(format!(
            "`{input}` is not P:DURATION: write the probability and how long to hold, e.g. 0.1:2s"
        )));
    };
    let probability = parse_probability(p)?;
    let duration = humantime::parse_duration(d.trim()).map_err(|e| {
        ParseError(format!(
            "`{d}` in `{input}` is not a duration ({e}): write e.g. 500ms, 2s or 1m"
        ))
    })?;
    Ok(Delay {
        probability,
        duration,
    })
}

/// A comma-separated list of methods (`POST,PATCH`), or `*` for all.
pub fn parse_methods(input: &str) -> Result<Methods, ParseError> {
    if input.trim() == "*" {
        return Ok(Methods::All);
    }
    let mut list = Vec::new();
    for name in input.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(ParseError(format!(
                "`{input}` has an empty method: write e.g. POST,PATCH (or * for all)"
            )));
        }
        let method = Method::from_bytes(name.to_ascii_uppercase().as_bytes()).map_err(|_| {
            ParseError(format!(
                "`{name}` is not an HTTP method: write e.g. POST,PATCH (or * for all)"
            ))
        })?;
        if !list.contains(&method) {
            list.push(method);
        }
    }
    Ok(Methods::Only(list))
}

/// Draws one decision per request from a seeded RNG: the same seed and the
/// same probabilities give the same sequence of decisions.
#[derive(Debug, Clone)]
pub struct Decider {
    rng: StdRng,
    /// Each fault with the upper end of its range in 0..1.
    ranges: Vec<(Fault, f64)>,
}

impl Decider {
    /// A decider for `faults`, seeded with `seed`.
    pub fn new(faults: &Faults, seed: u64) -> Decider {
        let mut end = 0.0;
        let ranges = Fault::ALL
            .into_iter()
            .filter(|&f| faults.probability(f) > 0.0)
            .map(|f| {
                end += faults.probability(f);
                (f, end)
            })
            .collect();
        Decider {
            rng: StdRng::seed_from_u64(seed),
            ranges,
        }
    }

    /// The next decision: a fault, or `None` to pass the request through.
    /// One uniform draw u in [0, 1) per call; fault i is chosen when u
    /// falls in its range, so each fault has exactly its probability and
    /// a probability of 1 always fires.
    pub fn decide(&mut self) -> Option<Fault> {
        let u: f64 = self.rng.random();
        self.ranges
            .iter()
            .find(|&&(_, end)| u < end)
            .map(|&(fault, _)| fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities() {
        assert_eq!(parse_probability("0.3"), Ok(0.3));
        assert_eq!(parse_probability("30%"), Ok(0.3));
        assert_eq!(parse_probability("1"), Ok(1.0));
        assert_eq!(parse_probability("0"), Ok(0.0));
        assert_eq!(parse_probability("1e-2"), Ok(0.01));
        assert!(parse_probability("1.5").is_err());
        assert!(parse_probability("-0.1").is_err());
        assert!(parse_probability("nan").is_err());
        assert!(parse_probability("often").is_err());
        assert!(parse_probability("").is_err());
    }

    #[test]
    fn delays_and_methods() {
        assert_eq!(
            parse_delay("0.1:2s"),
            Ok(Delay {
                probability: 0.1,
                duration: Duration::from_secs(2)
            })
        );
        assert_eq!(
            parse_delay("50%:250ms").unwrap().duration,
            Duration::from_millis(250)
        );
        assert!(parse_delay("0.1").is_err());
        assert!(parse_delay("0.1:soon").is_err());
        assert!(parse_delay("2:1s").is_err());
        assert_eq!(
            parse_methods("post, PATCH"),
            Ok(Methods::Only(vec![Method::POST, Method::PATCH]))
        );
        assert_eq!(parse_methods("*"), Ok(Methods::All));
        assert!(parse_methods("POST,").is_err());
        assert!(parse_methods("PO ST").is_err());
        assert!(Methods::default().contains(&Method::PATCH));
        assert!(!Methods::default().contains(&Method::GET));
    }

    #[test]
    fn the_sum_is_at_most_one() {
        let ok = Faults {
            duplicate: 0.1,
            drop_response: 0.2,
            reset: 0.7,
            ..Faults::default()
        };
        assert!(ok.validate().is_ok());
        let too_much = Faults {
            duplicate: 0.6,
            drop_response: 0.6,
            ..Faults::default()
        };
        let err = too_much.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("--drop-response 0.6 + --duplicate 0.6 add up to 1.2"),
            "{err}"
        );
    }

    #[test]
    fn decisions() {
        let all = |f: Faults| {
            let mut d = Decider::new(&f, 1);
            (0..1000).map(|_| d.decide()).collect::<Vec<_>>()
        };
        assert!(all(Faults::default()).iter().all(Option::is_none));
        let dup = Faults {
            duplicate: 1.0,
            ..Faults::default()
        };
        assert!(all(dup).iter().all(|&d| d == Some(Fault::Duplicate)));
        let half = Faults {
            reset: 0.5,
            delay: Some(Delay {
                probability: 0.5,
                duration: Duration::ZERO,
            }),
            ..Faults::default()
        };
        let seq = all(half);
        assert!(seq.iter().all(|d| d.is_some()));
        let resets = seq.iter().filter(|&&d| d == Some(Fault::Reset)).count();
        // Binomial(1000, 0.5): sd 15.8; ±6 sd.
        assert!((405..=595).contains(&resets), "{resets}");
        // Same seed, same sequence; another seed, another one.
        assert_eq!(seq, all(half));
        let mut other = Decider::new(&half, 2);
        let other: Vec<_> = (0..1000).map(|_| other.decide()).collect();
        assert_ne!(seq, other);
    }
}
