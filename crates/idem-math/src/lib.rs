//! What a duplicate rate means at scale.
//!
//! The library behind `idem math`: parse volumes (`10M/day`), rates
//! (`0.001%`) and counts, turn them into expected duplicates per day and per
//! year, the probability of at least one duplicate in a day, their cost, and
//! what a run of N trials without a duplicate proves. Rendering is separate
//! from computing: [`Report`] serialises to JSON and renders as text.
//! docs/duplicate-math.md explains every formula with a worked example.
//!
//! ```
//! use idem_math::{Inputs, Rate, Volume};
//! let inputs = Inputs {
//!     volume: Some("10M/day".parse::<Volume>().unwrap()),
//!     rate: Some("0.001%".parse::<Rate>().unwrap()),
//!     ..Inputs::default()
//! };
//! let report = inputs.question().unwrap().answer();
//! let json = report.to_json();
//! assert_eq!(json["expected_duplicates_per_day"].as_f64().unwrap().round(), 100.0);
//! ```

pub mod format;
pub mod formula;
mod input;
mod parse;
mod report;

pub use input::{Inputs, Question, UsageError};
pub use parse::{
    parse_cost, parse_trials, CostError, Period, Rate, RateError, TrialsError, Volume, VolumeError,
};
pub use report::{CleanTrialsReport, Outlook, RateReport, Report};
