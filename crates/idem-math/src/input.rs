//! Which question the flags ask, and the precise complaint when they ask
//! none or several.

use crate::parse::{Rate, Volume};

/// The parsed flags of `idem math`, any of which may be absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs {
    /// `--volume`: requests per period.
    pub volume: Option<Volume>,
    /// `--rate`: the duplicate rate.
    pub rate: Option<Rate>,
    /// `--ambiguous-rate`: how often a request's outcome is ambiguous.
    pub ambiguous_rate: Option<Rate>,
    /// `--retry-duplicates`: how often retrying an ambiguous request
    /// duplicates it.
    pub retry_duplicates: Option<Rate>,
    /// `--clean-trials`: trials run without a single duplicate.
    pub clean_trials: Option<u64>,
    /// `--cost`: money lost per duplicate.
    pub cost: Option<f64>,
}

/// One of the three questions `idem math` answers.
#[derive(Debug, Clone, Copy)]
pub enum Question {
    /// What does this duplicate rate mean at this volume?
    Rate {
        /// Requests per period.
        volume: Volume,
        /// The duplicate rate.
        rate: Rate,
        /// Money per duplicate.
        cost: Option<f64>,
    },
    /// The same, with the rate given as its two parts.
    Parts {
        /// Requests per period.
        volume: Volume,
        /// How often a request's outcome is ambiguous to the client.
        ambiguous_rate: Rate,
        /// How often the retry of an ambiguous request duplicates it.
        retry_duplicates: Rate,
        /// Money per duplicate.
        cost: Option<f64>,
    },
    /// What do N trials without a duplicate prove (at this volume)?
    CleanTrials {
        /// Trials run without a duplicate.
        trials: u64,
        /// Requests per period, for the worst case per day.
        volume: Option<Volume>,
        /// Money per duplicate.
        cost: Option<f64>,
    },
}

/// Flags that ask no question, or contradictory ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// No question at all.
    #[error("nothing to compute: give --volume with --rate, --volume with --ambiguous-rate and --retry-duplicates, or --clean-trials N")]
    Nothing,
    /// `--rate` together with its parts.
    #[error("--rate cannot be combined with --{0}: give the rate directly or as its two parts (--ambiguous-rate and --retry-duplicates), not both")]
    RateAndParts(&'static str),
    /// `--clean-trials` together with a stated rate.
    #[error("--clean-trials cannot be combined with --{0}: --clean-trials computes the rate a run without duplicates still allows, so no rate is given")]
    TrialsAndRate(&'static str),
    /// One part of the rate without the other.
    #[error("--{given} needs --{missing}: the duplicate rate is their product")]
    HalfOfParts {
        /// The part given.
        given: &'static str,
        /// The part missing.
        missing: &'static str,
    },
    /// A rate without a volume.
    #[error("{0} needs --volume, e.g. --volume 10M/day")]
    NoVolume(&'static str),
    /// A volume without a rate.
    #[error(
        "--volume needs --rate (or --ambiguous-rate and --retry-duplicates, or --clean-trials)"
    )]
    NoRate,
    /// A cost with nothing to count.
    #[error("--cost needs --volume: the cost is per duplicate, and how many duplicates there are depends on the volume")]
    CostWithoutVolume,
}

impl Inputs {
    /// The question these flags ask, or why they ask none.
    pub fn question(&self) -> Result<Question, UsageError> {
        let Inputs {
            volume,
            rate,
            ambiguous_rate,
            retry_duplicates,
            clean_trials,
            cost,
        } = *self;
        if let Some(trials) = clean_trials {
            if rate.is_some() {
                return Err(UsageError::TrialsAndRate("rate"));
            }
            if ambiguous_rate.is_some() {
                return Err(UsageError::TrialsAndRate("ambiguous-rate"));
            }
            if retry_duplicates.is_some() {
                return Err(UsageError::TrialsAndRate("retry-duplicates"));
            }
            if cost.is_some() && volume.is_none() {
                return Err(UsageError::CostWithoutVolume);
            }
            return Ok(Question::CleanTrials {
                trials,
                volume,
                cost,
            });
        }
        if let Some(rate) = rate {
            if ambiguous_rate.is_some() {
                return Err(UsageError::RateAndParts("ambiguous-rate"));
            }
            if retry_duplicates.is_some() {
                return Err(UsageError::RateAndParts("retry-duplicates"));
            }
            let volume = volume.ok_or(UsageError::NoVolume("--rate"))?;
            return Ok(Question::Rate { volume, rate, cost });
        }
        match (ambiguous_rate, retry_duplicates) {
            (Some(ambiguous_rate), Some(retry_duplicates)) => {
                let volume = volume.ok_or(UsageError::NoVolume(
                    "--ambiguous-rate with --retry-duplicates",
                ))?;
                Ok(Question::Parts {
                    volume,
                    ambiguous_rate,
                    retry_duplicates,
                    cost,
                })
            }
            (Some(_), None) => Err(UsageError::HalfOfParts {
                given: "ambiguous-rate",
                missing: "retry-duplicates",
            }),
            (None, Some(_)) => Err(UsageError::HalfOfParts {
                given: "retry-duplicates",
                missing: "ambiguous-rate",
            }),
            (None, None) if volume.is_some() => Err(UsageError::NoRate),
            (None, None) if cost.is_some() => Err(UsageError::CostWithoutVolume),
            (None, None) => Err(UsageError::Nothing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs::default()
    }

    #[test]
    fn questions_and_complaints() {
        let v = Some("10M/day".parse().unwrap());
        let r = Some("0.001%".parse().unwrap());
        assert_eq!(inputs().question().unwrap_err(), UsageError::Nothing);
        let only_volume = Inputs {
            volume: v,
            ..inputs()
        };
        assert_eq!(only_volume.question().unwrap_err(), UsageError::NoRate);
        let only_rate = Inputs {
            rate: r,
            ..inputs()
        };
        assert_eq!(
            only_rate.question().unwrap_err().to_string(),
            "--rate needs --volume, e.g. --volume 10M/day"
        );
        let both = Inputs {
            volume: v,
            rate: r,
            ambiguous_rate: r,
            ..inputs()
        };
        assert_eq!(
            both.question().unwrap_err(),
            UsageError::RateAndParts("ambiguous-rate")
        );
        let half = Inputs {
            volume: v,
            retry_duplicates: r,
            ..inputs()
        };
        assert_eq!(
            half.question().unwrap_err().to_string(),
            "--retry-duplicates needs --ambiguous-rate: the duplicate rate is their product"
        );
        let trials_and_rate = Inputs {
            clean_trials: Some(10),
            rate: r,
            ..inputs()
        };
        assert_eq!(
            trials_and_rate.question().unwrap_err(),
            UsageError::TrialsAndRate("rate")
        );
        let trials_cost = Inputs {
            clean_trials: Some(10),
            cost: Some(1.0),
            ..inputs()
        };
        assert_eq!(
            trials_cost.question().unwrap_err(),
            UsageError::CostWithoutVolume
        );
        assert!(matches!(
            Inputs {
                clean_trials: Some(10),
                ..inputs()
            }
            .question(),
            Ok(Question::CleanTrials { volume: None, .. })
        ));
        assert!(matches!(
            Inputs {
                volume: v,
                ambiguous_rate: r,
                retry_duplicates: r,
                ..inputs()
            }
            .question(),
            Ok(Question::Parts { .. })
        ));
    }
}
