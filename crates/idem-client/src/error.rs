//! What can go wrong with a logical operation, said plainly.

use std::fmt;

/// Why the middleware stopped retrying without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// The policy's maximum number of attempts was reached.
    MaxAttempts,
    /// The policy's total deadline passed (during an attempt, or before the
    /// next one could start).
    Deadline,
    /// The request may not be repeated: an unsafe method (POST, PATCH, ...)
    /// without a key, or a body that is a stream and cannot be cloned.
    NotRetryable,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GaveUp::MaxAttempts => "the maximum number of attempts was reached",
            GaveUp::Deadline => "the deadline passed",
            GaveUp::NotRetryable => "the request cannot be retried",
        })
    }
}

/// A logical operation that did not end with a response the caller can use
/// as it is.
///
/// The middleware returns it inside
/// [`reqwest_middleware::Error::Middleware`]; [`Error::from`] takes it back
/// out (and wraps any other error as [`Error::Other`]), [`Error::of`]
/// borrows it.
///
/// ```no_run
/// # async fn charge(client: reqwest_middleware::ClientWithMiddleware) {
/// use idem_client::Error;
///
/// match client.post("http://127.0.0.1:8080/charges").body("{}").send().await {
///     Ok(response) => println!("{}", response.status()),
///     Err(e) => match Error::from(e) {
///         Error::OutcomeUnknown { key, .. } => {
///             // Nobody knows whether the charge happened: look it up by key
///             // before doing anything else.
///             println!("reconcile {key:?}");
///         }
///         e if e.is_deadline() => println!("gave up in time: {e}"),
///         e => println!("failed: {e}"),
///     },
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server says the outcome of an earlier attempt with this key
    /// cannot be known (409 `outcome-unknown`), or the last attempt got the
    /// gateway's 504 `upstream-timeout`, after which the key is
    /// outcome-unknown. The operation may or may not have taken effect:
    /// reconcile (look it up by key) before doing anything else; retrying
    /// with the same key will keep getting this answer.
    #[error("the outcome of the operation with idempotency key {} is unknown after {attempts} attempt(s); reconcile before acting on it again{}", key.as_deref().unwrap_or("(none)"), detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    OutcomeUnknown {
        /// The operation's key.
        key: Option<String>,
        /// Attempts made.
        attempts: u32,
        /// The problem's `detail`, if the server sent one.
        detail: Option<String>,
    },
    /// No attempt got a response and retrying stopped. The request may or
    /// may not have reached the server: with a key, it is safe to try again
    /// later with the same key ([`Error::key`]).
    #[error("no response after {attempts} attempt(s): {reason}")]
    NoResponse {
        /// The operation's key, if it had one.
        key: Option<String>,
        /// Attempts made.
        attempts: u32,
        /// Why retrying stopped.
        reason: GaveUp,
        /// The last attempt's error; `None` when the last attempt was cut
        /// short by the attempt timeout or the deadline.
        #[source]
        last: Option<reqwest_middleware::Error>,
    },
    /// An error no retry can fix, passed on untouched: a request that could
    /// not be built, a redirect loop, another middleware's error, or any
    /// error that did not pass through the retrying middleware.
    #[error(transparent)]
    Other(reqwest_middleware::Error),
}

impl Error {
    /// Borrows the middleware's error out of a `reqwest_middleware` error,
    /// if that is what it is.
    ///
    /// ```
    /// let e = reqwest_middleware::Error::middleware(std::fmt::Error);
    /// assert!(idem_client::Error::of(&e).is_none());
    /// ```
    pub fn of(error: &reqwest_middleware::Error) -> Option<&Error> {
        match error {
            reqwest_middleware::Error::Middleware(inner) => inner.downcast_ref::<Error>(),
            reqwest_middleware::Error::Reqwest(_) => None,
        }
    }

    /// Whether the outcome is unknown and must be reconciled.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::OutcomeUnknown { .. })
    }

    /// Whether retrying stopped because the total deadline passed.
    pub fn is_deadline(&self) -> bool {
        matches!(
            self,
            Error::NoResponse {
                reason: GaveUp::Deadline,
                ..
            }
        )
    }

    /// Whether retrying stopped because the attempts ran out.
    pub fn is_exhausted(&self) -> bool {
        matches!(
            self,
            Error::NoResponse {
                reason: GaveUp::MaxAttempts,
                ..
            }
        )
    }

    /// Whether the last attempt failed to connect.
    pub fn is_connect(&self) -> bool {
        match self {
            Error::NoResponse { last: Some(e), .. } | Error::Other(e) => e.is_connect(),
            _ => false,
        }
    }

    /// Whether the last attempt timed out (the client's own timeout, the
    /// attempt timeout or the deadline).
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::NoResponse { last: None, .. } => true,
            Error::NoResponse { last: Some(e), .. } | Error::Other(e) => e.is_timeout(),
            Error::OutcomeUnknown { .. } => false,
        }
    }

    /// The operation's idempotency key, to reconcile or retry with later.
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::OutcomeUnknown { key, .. } | Error::NoResponse { key, .. } => key.as_deref(),
            Error::Other(_) => None,
        }
    }

    /// Attempts made (0 when the middleware never ran).
    pub fn attempts(&self) -> u32 {
        match self {
            Error::OutcomeUnknown { attempts, .. } | Error::NoResponse { attempts, .. } => {
                *attempts
            }
            Error::Other(_) => 0,
        }
    }
}

impl From<reqwest_middleware::Error> for Error {
    fn from(error: reqwest_middleware::Error) -> Self {
        match error {
            reqwest_middleware::Error::Middleware(inner) => match inner.downcast::<Error>() {
                Ok(ours) => ours,
                Err(inner) => Error::Other(reqwest_middleware::Error::Middleware(inner)),
            },
            other @ reqwest_middleware::Error::Reqwest(_) => Error::Other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_middleware_error() {
        let ours = Error::OutcomeUnknown {
            key: Some("k1".into()),
            attempts: 2,
            detail: Some("the upstream did not answer".into()),
        };
        let wrapped = reqwest_middleware::Error::middleware(ours);
        assert!(Error::of(&wrapped).unwrap().is_outcome_unknown());
        let back = Error::from(wrapped);
        assert_eq!(back.key(), Some("k1"));
        assert_eq!(back.attempts(), 2);
        assert!(back.to_string().contains("k1"), "{back}");
        assert!(back.to_string().contains("reconcile"), "{back}");

        let deadline = Error::NoResponse {
            key: None,
            attempts: 3,
            reason: GaveUp::Deadline,
            last: None,
        };
        assert!(deadline.is_deadline() && deadline.is_timeout() && !deadline.is_exhausted());
        assert_eq!(
            deadline.to_string(),
            "no response after 3 attempt(s): the deadline passed"
        );

        let other = Error::from(reqwest_middleware::Error::middleware(std::fmt::Error));
        assert!(matches!(other, Error::Other(_)));
        assert_eq!(other.attempts(), 0);
    }
}
