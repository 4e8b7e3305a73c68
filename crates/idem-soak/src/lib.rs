//! `idem soak`: measure an API's duplicate rate.
//!
//! A soak runs N logical operations against an API the way a real SDK
//! would (through [`idem_client`], one idempotency key per operation, kept
//! across retries), typically through `idem chaos` losing responses, and
//! counts the API's side effects with a count endpoint before and after:
//!
//! - `effects` = count after − count before;
//! - `duplicates` = max(0, effects − logical operations);
//! - `upper_bound_95`: the one-sided 95% upper bound on the duplicate rate
//!   given what was seen; with zero duplicates in N operations,
//!   1 − 0.05^(1/N) (idem-math's
//!   [`upper_bound_95`](idem_math::formula::upper_bound_95)).
//!
//! Through 20% lost responses, an API without idempotency shows many
//! duplicates; the same API behind `idem gateway` shows none, and the bound
//! says how small the rate must be. docs/soak.md walks through both.
//!
//! ```no_run
//! # async fn f() -> Result<(), idem_soak::SoakError> {
//! use idem_soak::{parse_body, parse_url, run, SoakOptions};
//! let mut options = SoakOptions::new(
//!     parse_url("http://127.0.0.1:8081/charges")?,
//!     parse_url("http://127.0.0.1:3000/count")?,
//!     300,
//! );
//! options.body = Some(parse_body(r#"{"amount":100}"#)?);
//! options.concurrency = 8;
//! let report = run(&options, &|_| {}).await?;
//! println!("{}", report.to_json_pretty());
//! # Ok(()) }
//! ```

mod input;
mod report;
mod run;

pub use idem_core::count::{CountError, CountField, CountFieldError};
/// The one-sided 95% upper bound on the duplicate rate after `duplicates`
/// in `operations` (Clopper–Pearson), as [`SoakReport::upper_bound_95`]
/// reports it: idem-math's formula, re-exported.
///
/// ```
/// use idem_soak::upper_bound_95;
/// assert_eq!(upper_bound_95(0, 300), idem_math::formula::upper_bound_95(300));
/// assert!((upper_bound_95(1, 10) - 0.3942).abs() < 1e-4);
/// ```
pub use idem_math::formula::clopper_pearson_95 as upper_bound_95;
pub use input::{parse_body, parse_count, parse_header, parse_method, parse_url, InputError};
pub use report::SoakReport;
pub use reqwest::Url;
pub use run::{read_count, run, Progress, SoakError, SoakOptions};
