//! `idem gateway`: idem's contract in front of any HTTP API.
//!
//! The gateway is the [`IdempotencyLayer`](idem_tower::IdempotencyLayer)
//! wrapped around [`Proxy`], a pooled keep-alive reverse proxy (HTTP/1.1 or
//! HTTP/2, plain or TLS). The
//! rules live in the layer; this crate only forwards bytes, serves the
//! admin endpoints, sweeps expired records and shuts down gracefully.

pub mod admin;
pub mod config;
pub mod listen_tls;
pub mod proxy;
pub mod server;
pub mod upstream_tls;

pub use proxy::Proxy;
pub use server::{start, GatewayError, GatewayOptions, RunningGateway};
