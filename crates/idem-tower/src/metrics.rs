//! Metric names and labels, defined once. The layer only emits; whoever
//! embeds it installs a recorder (the gateway installs Prometheus).

use metrics::{Key, Label, Level, Metadata};
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

/// `Outcome`, with the `outcome` label of each variant: the labels are
/// statics, so counting a request allocates nothing (the `counter!` macro
/// builds its labels anew on each call when their values are not literals).
macro_rules! outcomes {
    ($($variant:ident => $label:literal,)*) => {
        /// How a keyed (or unprotected) request ended.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Outcome {
            $($variant,)*
        }

        /// Indexed by `Outcome as usize`.
        static OUTCOME_LABELS: &[[Label; 1]] = &[
            $([Label::from_static_parts("outcome", $label)],)*
        ];
    };
}

outcomes! {
    Executed => "executed",
    Released => "released",
    Replayed => "replayed",
    Conflict => "conflict",
    Mismatch => "mismatch",
    Expired => "expired",
    Unknown => "unknown",
    NotReplayable => "not_replayable",
    Rejected => "rejected",
    StoreError => "store_error",
    FailOpen => "fail_open",
    Anonymous => "anonymous",
    Overloaded => "overloaded",
}

/// What the layer's metrics are registered with (what `counter!` would
/// pass from this module).
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

pub(crate) fn count(outcome: Outcome) {
    let key = Key::from_static_parts(REQUESTS, &OUTCOME_LABELS[outcome as usize]);
    metrics::with_recorder(|recorder| recorder.register_counter(&key, &METADATA)).increment(1);
}

/// `StoreOp`, with the `op` label of each variant, listed once in
/// declaration order, so a variant's discriminant is its label's index.
macro_rules! store_ops {
    ($($variant:ident => $label:literal,)*) => {
        /// A store operation the layer times.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum StoreOp {
            $($variant,)*
        }

        /// Indexed by `StoreOp as usize`.
        const STORE_OP_LABELS: &[&str] = &[$($label,)*];
    };
}

store_ops! {
    Claim => "claim",
    Complete => "complete",
    Renew => "renew",
    Release => "release",
    MarkUnknown => "mark_unknown",
}

/// The keys of [`STORE_SECONDS`] for one store, made once when the layer
/// is built (the `engine` label is the store's, known only then). Timing
/// an operation then builds no key (a `histogram!` with a run-time label
/// allocates its label list on every call); the recorder is still looked
/// up on each call, so one installed after the layer is built is used.
#[derive(Debug)]
pub(crate) struct StoreOpKeys {
    /// Indexed by `StoreOp as usize`.
    keys: Box<[Key]>,
}

impl StoreOpKeys {
    pub(crate) fn new(engine: &'static str) -> Self {
        let key = |op: &'static str| {
            Key::from_parts(
                STORE_SECONDS,
                vec![
                    Label::from_static_parts("op", op),
                    Label::from_static_parts("engine", engine),
                ],
            )
        };
        StoreOpKeys {
            keys: STORE_OP_LABELS.iter().copied().map(key).collect(),
        }
    }

    /// Records how long `op`, started at `started`, took.
    pub(crate) fn record(&self, op: StoreOp, started: Instant) {
        let key = &self.keys[op as usize];
        metrics::with_recorder(|recorder| recorder.register_histogram(key, &METADATA))
            .record(started.elapsed().as_secs_f64());
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{Counter, Gauge, Histogram, KeyName, Recorder, SharedString, Unit};
    use std::sync::Mutex;

    /// Remembers the key of every counter and histogram registered with it.
    #[derive(Default)]
    struct Registered(Mutex<Vec<String>>);

    impl Recorder for Registered {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            self.remember(key);
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            self.remember(key);
            Histogram::noop()
        }
    }

    impl Registered {
        /// Keeps `key` as `name{label=value,…}`.
        fn remember(&self, key: &Key) {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let shown = format!("{}{{{}}}", key.name(), labels.join(","));
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(shown);
        }
    }

    /// The store latency histogram keeps the labels dashboards select on,
    /// and keys made before a recorder exists are recorded by it.
    #[test]
    fn each_store_operation_is_timed_under_its_op_and_engine() {
        let keys = StoreOpKeys::new("sqlite");
        let recorder = Registered::default();
        metrics::with_local_recorder(&recorder, || {
            let started = Instant::now();
            for op in [
                StoreOp::Claim,
                StoreOp::Complete,
                StoreOp::Renew,
                StoreOp::Release,
                StoreOp::MarkUnknown,
            ] {
                keys.record(op, started);
            }
        });
        let registered = recorder.0.into_inner().unwrap_or_else(|e| e.into_inner());
        assert_eq!(
            registered,
            [
                "idem_store_operation_seconds{op=claim,engine=sqlite}",
                "idem_store_operation_seconds{op=complete,engine=sqlite}",
                "idem_store_operation_seconds{op=renew,engine=sqlite}",
                "idem_store_operation_seconds{op=release,engine=sqlite}",
                "idem_store_operation_seconds{op=mark_unknown,engine=sqlite}",
            ]
        );
    }

    /// Dashboards and alerts select on these label values.
    #[test]
    fn each_outcome_is_counted_under_its_own_label() {
        let recorder = Registered::default();
        metrics::with_local_recorder(&recorder, || {
            count(Outcome::Executed);
            count(Outcome::NotReplayable);
            count(Outcome::StoreError);
            count(Outcome::Overloaded);
        });
        let registered = recorder.0.into_inner().unwrap_or_else(|e| e.into_inner());
        assert_eq!(
            registered,
            [
                "idem_requests_total{outcome=executed}",
                "idem_requests_total{outcome=not_replayable}",
                "idem_requests_total{outcome=store_error}",
                "idem_requests_total{outcome=overloaded}",
            ]
        );
    }
}
