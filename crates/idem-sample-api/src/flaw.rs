//! The bug classes the sample API can ship with.

use std::fmt;
use std::str::FromStr;

/// Which idempotency bug the API ships with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// Correct: the handler wrapped in [`idem_tower::IdempotencyLayer`] with
    /// an in-memory store (scope = SHA-256 of `Authorization`, the default;
    /// keys optional).
    None,
    /// The `Idempotency-Key` header is ignored entirely.
    NoIdempotency,
    /// Looks up a stored response; if absent executes, then stores. No
    /// in-flight lock: sequential replays work, concurrent ones race.
    CheckThenAct,
    /// Correct locking and storing, but records keyed by the key alone, not
    /// (tenant, key): another tenant reusing a key gets the first tenant's
    /// stored response.
    UnscopedKeys,
    /// Correct locking, storing and scoping, but the body is not
    /// fingerprinted: a changed payload with a used key silently gets the
    /// first response replayed.
    PayloadIgnored,
    /// Locks the key in flight, but stores the response only if the client
    /// is still connected when the work finishes; if the client left, the
    /// lock is released without storing (so the retry executes again).
    StoreIfDelivered,
}

impl Flaw {
    /// Every flaw, the correct API first.
    pub const ALL: [Flaw; 6] = [
        Flaw::None,
        Flaw::NoIdempotency,
        Flaw::CheckThenAct,
        Flaw::UnscopedKeys,
        Flaw::PayloadIgnored,
        Flaw::StoreIfDelivered,
    ];

    /// The kebab-case name, as parsed by [`FromStr`] and shown by
    /// [`Display`](fmt::Display).
    pub fn as_str(self) -> &'static str {
        match self {
            Flaw::None => "none",
            Flaw::NoIdempotency => "no-idempotency",
            Flaw::CheckThenAct => "check-then-act",
            Flaw::UnscopedKeys => "unscoped-keys",
            Flaw::PayloadIgnored => "payload-ignored",
            Flaw::StoreIfDelivered => "store-if-delivered",
        }
    }

    /// One sentence saying what the API does with a key in this mode.
    pub fn describe(self) -> &'static str {
        match self {
            Flaw::None => {
                "Correct: idem's Tower layer locks, scopes, fingerprints and stores every keyed request."
            }
            Flaw::NoIdempotency => {
                "Ignores the Idempotency-Key header: every retry charges again."
            }
            Flaw::CheckThenAct => {
                "Replays stored responses but takes no lock, so concurrent duplicates both execute."
            }
            Flaw::UnscopedKeys => {
                "Stores responses by key alone, so another tenant reusing a key gets the first tenant's response."
            }
            Flaw::PayloadIgnored => {
                "Does not fingerprint the body, so a changed payload under a used key silently gets the old response."
            }
            Flaw::StoreIfDelivered => {
                "Stores a response only if the client is still connected, so a retry after a timeout charges again."
            }
        }
    }
}

impl fmt::Display for Flaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`Flaw::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown flaw {input:?}; expected one of: {}", valid_names())]
pub struct UnknownFlaw {
    /// What was given.
    pub input: String,
}

fn valid_names() -> String {
    Flaw::ALL.map(Flaw::as_str).join(", ")
}

impl FromStr for Flaw {
    type Err = UnknownFlaw;

    /// Parses a name from [`Flaw::as_str`]; case and `_` for `-` are
    /// forgiven.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Flaw::ALL
            .into_iter()
            .find(|f| f.as_str() == wanted)
            .ok_or_else(|| UnknownFlaw {
                input: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for flaw in Flaw::ALL {
            assert_eq!(flaw.as_str().parse::<Flaw>(), Ok(flaw));
            assert_eq!(flaw.to_string(), flaw.as_str());
            assert!(flaw.describe().ends_with('.'));
        }
        assert_eq!("Check_Then_Act".parse::<Flaw>(), Ok(Flaw::CheckThenAct));
    }

    #[test]
    fn an_unknown_name_lists_the_valid_ones() {
        let err = "racy".parse::<Flaw>().unwrap_err();
        let message = err.to_string();
        assert!(message.contains("\"racy\""), "{message}");
        for flaw in Flaw::ALL {
            assert!(message.contains(flaw.as_str()), "{message}");
        }
    }
}
