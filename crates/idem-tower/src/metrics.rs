//! Metric names and labels, defined once. The layer only emits; whoever
//! embeds it installs a recorder (the gateway installs Prometheus).

use std::time::Instant;

/// Counter of keyed requests by `outcome`.
pub(crate) const REQUESTS: &str = "idem_requests_total";
/// Histogram of store operation latency in seconds, by `op` and `engine`.
pub(crate) const STORE_SECONDS: &str = "idem_store_operation_seconds";
/// Gauge of keys this process is executing right now.
pub(crate) const IN_FLIGHT: &str = "idem_keys_in_flight";
/// Gauge of claims the store did not confirm that are still being settled.
pub(crate) const UNSETTLED: &str = "idem_unsettled_claims";
/// Gauge of request and response bytes held in memory (`max_buffered_bytes`).
pub(crate) const BUFFERED: &str = "idem_buffered_bytes";

/// How a keyed (or unprotected) request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Executed,
    Released,
    Replayed,
    Conflict,
    Mismatch,
    Expired,
    Unknown,
    NotReplayable,
    Rejected,
    StoreError,
    FailOpen,
    Anonymous,
    Overloaded,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Executed => "executed",
            Outcome::Released => "released",
            Outcome::Replayed => "replayed",
            Outcome::Conflict => "conflict",
            Outcome::Mismatch => "mismatch",
            Outcome::Expired => "expired",
            Outcome::Unknown => "unknown",
            Outcome::NotReplayable => "not_replayable",
            Outcome::Rejected => "rejected",
            Outcome::StoreError => "store_error",
            Outcome::FailOpen => "fail_open",
            Outcome::Anonymous => "anonymous",
            Outcome::Overloaded => "overloaded",
        }
    }
}

pub(crate) fn count(outcome: Outcome) {
    metrics::counter!(REQUESTS, "outcome" => outcome.label()).increment(1);
}

pub(crate) fn store_op(engine: &'static str, op: &'static str, started: Instant) {
    metrics::histogram!(STORE_SECONDS, "op" => op, "engine" => engine)
        .record(started.elapsed().as_secs_f64());
}

pub(crate) struct InFlightGuard;

impl InFlightGuard {
    pub(crate) fn enter() -> Self {
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        InFlightGuard
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}
