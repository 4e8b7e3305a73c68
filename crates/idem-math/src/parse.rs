//! Parsing the command line's quantities: volumes, rates, trial counts and
//! money. Every error names the input and says what a valid one looks like;
//! the binary adds the flag.

use std::fmt;
use std::str::FromStr;

/// Seconds in a day.
pub(crate) const DAY: f64 = 86_400.0;
/// Days in a year, as `idem math` counts them.
pub(crate) const DAYS_PER_YEAR: f64 = 365.0;

/// The period a volume is counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// One second (`s`, `sec`, `second`).
    Second,
    /// One minute (`min`, `minute`).
    Minute,
    /// One hour (`h`, `hr`, `hour`).
    Hour,
    /// One day (`d`, `day`).
    Day,
    /// Seven days (`w`, `wk`, `week`).
    Week,
    /// Thirty days (`mo`, `month`).
    Month,
    /// 365 days (`y`, `yr`, `year`).
    Year,
}

impl Period {
    /// Every period, shortest first.
    pub const ALL: [Period; 7] = [
        Period::Second,
        Period::Minute,
        Period::Hour,
        Period::Day,
        Period::Week,
        Period::Month,
        Period::Year,
    ];

    /// The period's length in seconds (a month is 30 days, a year 365).
    pub fn seconds(self) -> f64 {
        match self {
            Period::Second => 1.0,
            Period::Minute => 60.0,
            Period::Hour => 3_600.0,
            Period::Day => DAY,
            Period::Week => 7.0 * DAY,
            Period::Month => 30.0 * DAY,
            Period::Year => DAYS_PER_YEAR * DAY,
        }
    }

    /// The canonical spelling, as accepted after the `/` of a volume.
    pub fn name(self) -> &'static str {
        match self {
            Period::Second => "s",
            Period::Minute => "min",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Year => "year",
        }
    }

    fn parse(s: &str) -> Option<Period> {
        let period = match s.to_ascii_lowercase().as_str() {
            "s" | "sec" | "secs" | "second" | "seconds" => Period::Second,
            "min" | "mins" | "minute" | "minutes" => Period::Minute,
            "h" | "hr" | "hrs" | "hour" | "hours" => Period::Hour,
            "d" | "day" | "days" => Period::Day,
            "w" | "wk" | "week" | "weeks" => Period::Week,
            "mo" | "mon" | "month" | "months" => Period::Month,
            "y" | "yr" | "yrs" | "year" | "years" => Period::Year,
            _ => return None,
        };
        Some(period)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A request volume: a count per period, e.g. `10M/day`, `120/s`,
/// `5000000/month`, `1.5k/hour`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Volume {
    count: f64,
    period: Period,
}

/// A volume that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    /// No `/PERIOD`.
    #[error("`{0}` has no period: write COUNT/PERIOD, e.g. 10M/day, 120/s or 5000000/month")]
    MissingPeriod(String),
    /// The part before the `/` is not a count.
    #[error(
        "`{0}` is not a count: write a number with an optional K, M or B suffix, e.g. 10M/day or 1.5k/hour"
    )]
    BadCount(String),
    /// The count is below zero.
    #[error("`{0}` is negative: a volume counts requests")]
    Negative(String),
    /// The period is not one of the known ones.
    #[error(
        "`{period}` in `{input}` is not a period: use s, min, hour, day, week, month (30 days) or year (365 days)"
    )]
    BadPeriod {
        /// The whole input.
        input: String,
        /// The part after the `/`.
        period: String,
    },
    /// The volume is too large to compute with.
    #[error("`{0}` is too large")]
    TooLarge(String),
}

impl Volume {
    /// `count` requests per `period`. `None` unless the count is finite and
    /// not negative.
    pub fn new(count: f64, period: Period) -> Option<Volume> {
        let volume = Volume { count, period };
        (count.is_finite() && count >= 0.0 && volume.per_year().is_finite()).then_some(volume)
    }

    /// The count as given.
    pub fn count(self) -> f64 {
        self.count
    }

    /// The period as given.
    pub fn period(self) -> Period {
        self.period
    }

    /// Requests per second.
    pub fn per_second(self) -> f64 {
        self.count / self.period.seconds()
    }

    /// Requests per day.
    pub fn per_day(self) -> f64 {
        if self.period == Period::Day {
            self.count
        } else {
            self.count * DAY / self.period.seconds()
        }
    }

    /// Requests per (365-day) year.
    pub fn per_year(self) -> f64 {
        self.per_day() * DAYS_PER_YEAR
    }
}

impl FromStr for Volume {
    type Err = VolumeError;

    fn from_str(input: &str) -> Result<Volume, VolumeError> {
        let s = input.trim();
        let Some((count, period)) = s.split_once('/') else {
            return Err(VolumeError::MissingPeriod(input.to_owned()));
        };
        let count_text = count.trim();
        let count =
            parse_scaled(count_text).ok_or_else(|| VolumeError::BadCount(input.to_owned()))?;
        if count < 0.0 {
            return Err(VolumeError::Negative(input.to_owned()));
        }
        let count = count.abs();
        let period_text = period.trim();
        let period = Period::parse(period_text).ok_or_else(|| VolumeError::BadPeriod {
            input: input.to_owned(),
            period: period_text.to_owned(),
        })?;
        Volume::new(count, period).ok_or_else(|| VolumeError::TooLarge(input.to_owned()))
    }
}

impl fmt::Display for Volume {
    /// A form [`Volume::from_str`] reads back exactly, e.g. `10000000/day`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.period)
    }
}

/// A probability or rate: a fraction between 0 and 1, written `0.001%` or
/// `1e-5`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Rate(f64);

/// A rate that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Not a number.
    #[error("`{0}` is not a rate: write a fraction such as 1e-5 or 0.00001, or a percentage such as 0.001%")]
    NotANumber(String),
    /// Below zero.
    #[error("`{0}` is negative: a rate is between 0 and 1 (0% and 100%)")]
    Negative(String),
    /// A percentage above 100%.
    #[error("`{0}` is above 100%: a rate is between 0% and 100%")]
    PercentAboveOne(String),
    /// A fraction above 1.
    #[error("`{0}` is above 1: a rate is a fraction between 0 and 1 (for a percentage, add %)")]
    AboveOne(String),
}

impl Rate {
    /// The rate 0.
    pub const ZERO: Rate = Rate(0.0);

    /// A rate from a fraction; `None` outside 0..=1 (or NaN).
    pub fn new(fraction: f64) -> Option<Rate> {
        (0.0..=1.0).contains(&fraction).then_some(Rate(fraction))
    }

    /// The rate as a fraction between 0 and 1.
    pub fn fraction(self) -> f64 {
        self.0
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(input: &str) -> Result<Rate, RateError> {
        let s = input.trim();
        let (number, percent) = match s.strip_suffix('%') {
            Some(number) => (number.trim_end(), true),
            None => (s, false),
        };
        // A percentage is the number with its exponent lowered by two, so
        // `0.001%` is the double nearest 1e-5, not 0.001 / 100.
        let value = parse_decimal(number, if percent { -2 } else { 0 })
            .ok_or_else(|| RateError::NotANumber(input.to_owned()))?;
        if value < 0.0 {
            return Err(RateError::Negative(input.to_owned()));
        }
        if value > 1.0 {
            return Err(if percent {
                RateError::PercentAboveOne(input.to_owned())
            } else {
                RateError::AboveOne(input.to_owned())
            });
        }
        Ok(Rate(value.abs()))
    }
}

impl fmt::Display for Rate {
    /// A form [`Rate::from_str`] reads back exactly, e.g. `0.00001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A trial count that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrialsError {
    /// Not a whole number.
    #[error("`{0}` is not a number of trials: write a whole number with an optional K, M or B suffix, e.g. 3000 or 10k")]
    NotACount(String),
    /// Zero trials.
    #[error("`{0}`: zero trials prove nothing; give at least 1")]
    Zero(String),
}

/// Parses a number of trials: a whole number with an optional K, M or B
/// suffix (`3000`, `10k`, `1.5M`).
pub fn parse_trials(input: &str) -> Result<u64, TrialsError> {
    let s = input.trim();
    let not_a_count = || TrialsError::NotACount(input.to_owned());
    if s.starts_with('-') {
        return Err(not_a_count());
    }
    let value = parse_scaled(s).ok_or_else(not_a_count)?;
    // 2^53: every whole number below is exact in an f64.
    if value.fract() != 0.0 || value > 9_007_199_254_740_992.0 {
        return Err(not_a_count());
    }
    if value == 0.0 {
        return Err(TrialsError::Zero(input.to_owned()));
    }
    Ok(value as u64)
}

/// An amount of money that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    /// Not a number, or negative.
    #[error("`{0}` is not an amount of money: write a number of at least 0, e.g. 25.00 (no currency sign)")]
    NotAnAmount(String),
}

/// Parses the cost of one duplicate: a number of at least 0, e.g. `25.00`.
pub fn parse_cost(input: &str) -> Result<f64, CostError> {
    let s = input.trim();
    match parse_decimal(s, 0) {
        // `abs` turns -0 into 0.
        Some(v) if v >= 0.0 => Ok(v.abs()),
        _ => Err(CostError::NotAnAmount(input.to_owned())),
    }
}

/// A decimal with an optional K (10^3), M (10^6) or B (10^9) suffix.
fn parse_scaled(s: &str) -> Option<f64> {
    let (number, exponent) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 3),
        'm' | 'M' => (&s[..s.len() - 1], 6),
        'b' | 'B' => (&s[..s.len() - 1], 9),
        _ => (s, 0),
    };
    parse_decimal(number.trim_end(), exponent)
}

/// A finite decimal (`12`, `1.5`, `1e-5`, `10_000`) times 10^`shift`,
/// rounded once to the nearest double.
fn parse_decimal(s: &str, shift: i32) -> Option<f64> {
    let s: String = s.chars().filter(|&c| c != '_').collect();
    let valid = !s.is_empty()
        && s.chars().any(|c| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if !valid {
        return None;
    }
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (s.as_str(), 0),
    };
    if !mantissa.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    let exponent = exponent.checked_add(shift)?;
    let value: f64 = format!("{mantissa}e{exponent}").parse().ok()?;
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes() {
        let v: Volume = "10M/day".parse().unwrap();
        assert_eq!(v.per_day(), 10_000_000.0);
        let v: Volume = "120/s".parse().unwrap();
        assert_eq!(v.per_day(), 120.0 * 86_400.0);
        let v: Volume = "5000000/month".parse().unwrap();
        assert_eq!(v.per_day(), 5_000_000.0 / 30.0);
        let v: Volume = "1.5k/hour".parse().unwrap();
        assert_eq!(v.per_day(), 1_500.0 * 24.0);
        let v: Volume = " 2B / year ".parse().unwrap();
        assert_eq!(v.per_day(), 2e9 / 365.0);
        let v: Volume = "70/min".parse().unwrap();
        assert_eq!(v.per_second(), 70.0 / 60.0);
        let v: Volume = "1_000/week".parse().unwrap();
        assert_eq!(v.per_day(), 1000.0 / 7.0);
        let v: Volume = "0/day".parse().unwrap();
        assert_eq!(v.per_day(), 0.0);
    }

    #[test]
    fn bad_volumes() {
        use VolumeError::*;
        let err = |s: &str| s.parse::<Volume>().unwrap_err();
        assert!(matches!(err("10M"), MissingPeriod(_)));
        assert!(matches!(err("ten/day"), BadCount(_)));
        assert!(matches!(err("/day"), BadCount(_)));
        assert!(matches!(err("10X/day"), BadCount(_)));
        assert!(matches!(err("inf/day"), BadCount(_)));
        assert!(matches!(err("NaN/day"), BadCount(_)));
        assert!(matches!(err("-5/day"), Negative(_)));
        assert!(matches!(err("10/fortnight"), BadPeriod { .. }));
        assert!(matches!(err("10/m"), BadPeriod { .. }));
        assert!(matches!(err("10/day/s"), BadPeriod { .. }));
        assert!(matches!(err("1e300B/s"), TooLarge(_) | BadCount(_)));
        assert_eq!(
            err("10/fortnight").to_string(),
            "`fortnight` in `10/fortnight` is not a period: use s, min, hour, day, week, month (30 days) or year (365 days)"
        );
    }

    #[test]
    fn rates() {
        let r = |s: &str| s.parse::<Rate>().unwrap().fraction();
        assert_eq!(r("0.001%"), 1e-5);
        assert_eq!(r("1e-5"), 1e-5);
        assert_eq!(r("0.00001"), 1e-5);
        assert_eq!(r("1E-3 %"), 1e-5);
        assert_eq!(r("100%"), 1.0);
        assert_eq!(r("1"), 1.0);
        assert_eq!(r("0"), 0.0);
        assert_eq!(r("-0"), 0.0);
        assert_eq!(r("20%"), 0.2);
    }

    #[test]
    fn bad_rates() {
        use RateError::*;
        let err = |s: &str| s.parse::<Rate>().unwrap_err();
        assert!(matches!(err("abc"), NotANumber(_)));
        assert!(matches!(err("%"), NotANumber(_)));
        assert!(matches!(err(""), NotANumber(_)));
        assert!(matches!(err("nan"), NotANumber(_)));
        assert!(matches!(err("0.1%%"), NotANumber(_)));
        assert!(matches!(err("-1e-5"), Negative(_)));
        assert!(matches!(err("150%"), PercentAboveOne(_)));
        assert!(matches!(err("5"), AboveOne(_)));
    }

    #[test]
    fn trials_and_cost() {
        assert_eq!(parse_trials("3000"), Ok(3000));
        assert_eq!(parse_trials("10k"), Ok(10_000));
        assert_eq!(parse_trials("1.5M"), Ok(1_500_000));
        assert!(matches!(parse_trials("0"), Err(TrialsError::Zero(_))));
        assert!(matches!(
            parse_trials("2.5"),
            Err(TrialsError::NotACount(_))
        ));
        assert!(matches!(parse_trials("-3"), Err(TrialsError::NotACount(_))));
        assert_eq!(parse_cost("25.00"), Ok(25.0));
        assert_eq!(parse_cost("0"), Ok(0.0));
        assert!(parse_cost("$25").is_err());
        assert!(parse_cost("-1").is_err());
    }
}
