//! `idem chaos`: an HTTP-aware fault proxy.
//!
//! Toxiproxy and friends cut TCP connections; the failures that break
//! idempotency are per HTTP request: a response lost after the server acted,
//! a request delivered twice. This proxy forwards to one upstream and, for
//! each request whose method is selected (POST and PATCH by default),
//! injects at most one fault:
//!
//! | fault | what the upstream sees | what the client sees |
//! |---|---|---|
//! | [`Fault::Duplicate`] | the request twice (same headers, same body) | the first answer |
//! | [`Fault::DropResponse`] | the request, answered in full | a connection reset, no answer |
//! | [`Fault::DropRequest`] | nothing | its whole request sent, then a reset |
//! | [`Fault::Delay`] | the request, late | the answer, late |
//! | [`Fault::Reset`] | nothing | a reset as soon as the request head arrives |
//!
//! Decisions come from a seeded RNG, one draw per selected request in
//! arrival order, so the same seed gives the same sequence of decisions.
//! docs/chaos.md shows it in front of `idem gateway`.

mod fault;
mod io;
mod log;
mod proxy;
mod server;

pub use fault::{
    parse_delay, parse_methods, parse_probability, Decider, Delay, Fault, Faults, Methods,
    ParseError,
};
pub use proxy::parse_upstream;
pub use server::{start, ChaosError, ChaosOptions, RunningChaos, Summary};
