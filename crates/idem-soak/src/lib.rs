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

pub use input::{
    parse_body, parse_count, parse_header, parse_method, parse_url, CountField, FieldError,
    InputError,
};
pub use report::{upper_bound_95, SoakReport};
pub use reqwest::Url;
pub use run::{read_count, run, Progress, SoakError, SoakOptions};
