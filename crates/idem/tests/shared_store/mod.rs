//! What the tests of gateways sharing a networked store (PostgreSQL, Redis)
//! have in common: reaching the servers (skipping with a how-to, or failing
//! under `CI=true`), a fresh namespace per test that is removed afterwards,
//! the counting upstream, the gateways' configuration, HTTP helpers, and a
//! TCP proxy that can cut a store off without touching its server. The
//! `idem gateway` processes themselves: `support::Idem::gateway`.
//!
//! The servers: `IDEM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and `IDEM_TEST_REDIS_URL`
//! (default `redis://127.0.0.1:6379/`), as for the store tests.
#![allow(dead_code)] // each test binary uses its own part

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[allow(unused_imports)]
pub(crate) use idem_testkit::{
    block_on_thread, chain, poll_until, unavailable, unique_name, Proxy, Upstream, PG_START,
    REDIS_START,
};

// ------------------------------------------------------------ PostgreSQL

#[allow(unused_imports)] // each test binary uses its own part
pub(crate) use idem_testkit::{postgres_url as pg_url, redis_addr, redis_url};

/// Whether PostgreSQL answers; if not, skips (or fails under CI).
pub(crate) async fn pg_up() -> bool {
    let url = pg_url();
    let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
    match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Ok(Ok((client, connection))) => {
            drop(client);
            let _ = connection.await;
            true
        }
        Ok(Err(e)) => {
            unavailable("PostgreSQL", &chain(&e), PG_START);
            false
        }
        Err(_) => {
            unavailable("PostgreSQL", "no answer within 3 s", PG_START);
            false
        }
    }
}

/// A fresh schema, dropped (with everything in it) when the guard is.
pub(crate) struct PgSchema(pub String);

impl PgSchema {
    pub(crate) fn new() -> Self {
        PgSchema(unique_name("idem_gw_test"))
    }

    /// The `--store` URL of the test server in this schema.
    pub(crate) fn store_url(&self) -> String {
        with_param(&pg_url(), "schema", &self.0)
    }

    /// The `--store` URL of this schema through `proxy`.
    pub(crate) fn store_url_via(&self, proxy: &Proxy) -> String {
        let config: tokio_postgres::Config = pg_url().parse().unwrap();
        let user = config.get_user().unwrap_or("postgres");
        let db = config.get_dbname().unwrap_or("test");
        format!("postgres://{user}@{}/{db}?schema={}", proxy.addr, self.0)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let schema = self.0.clone();
        block_on_thread(move || async move {
            let Ok((client, connection)) =
                tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await
            else {
                return;
            };
            let conn = tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!(
                    "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                ))
                .await;
            drop(client);
            let _ = conn.await;
        });
    }
}

#[allow(unused_imports)] // each test binary uses its own part
pub(crate) use idem_testkit::postgres_addr as pg_server_addr;

// ------------------------------------------------------------ Redis

pub(crate) use idem_testkit::redis_ping;

/// Whether the shared Redis answers; if not, skips (or fails under CI).
pub(crate) async fn redis_up() -> bool {
    match redis_ping(&redis_url(), Duration::from_secs(3)).await {
        Ok(()) => true,
        Err(why) => {
            unavailable("Redis", &why, REDIS_START);
            false
        }
    }
}

/// A fresh key prefix on the Redis at `url`, whose keys are deleted when
/// the guard is dropped.
pub(crate) struct RedisPrefix {
    pub name: String,
    pub url: String,
}

impl RedisPrefix {
    pub(crate) fn new(url: &str) -> Self {
        RedisPrefix {
            name: unique_name("idem_gw_test"),
            url: url.to_owned(),
        }
    }

    /// The `--store` URL of this prefix.
    pub(crate) fn store_url(&self) -> String {
        with_param(&self.url, "prefix", &self.name)
    }

    /// The `--store` URL of this prefix through `proxy`.
    pub(crate) fn store_url_via(&self, proxy: &Proxy) -> String {
        format!("redis://{}/?prefix={}", proxy.addr, self.name)
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        idem_testkit::delete_redis_prefix(vec![self.url.clone()], self.name.clone());
    }
}

/// `url` with `name=value` added to its query.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{name}={value}")
}

// ------------------------------------------------------------ gateways

/// A configuration file for the gateways of a test: one global scope,
/// `/wait/…` waits up to 5 s for a key in flight, everything else (POST,
/// PATCH) rejects it with 409.
pub(crate) fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        r#"shutdown_grace = "1s"

[scope]
source = "none"

[[routes]]
path_prefix = "/wait"
in_flight = { wait = "5s" }

[[routes]]
path_prefix = "/"
"#,
    )
    .unwrap();
    path
}

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// What a gateway answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    pub replayed: bool,
    pub body: Bytes,
}

impl Answer {
    /// The problem type's last segment (`store-unavailable`, ...), if the
    /// answer is a problem.
    pub(crate) fn problem(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.body);
        let start = text.find("https://idem.dev/problems/")? + "https://idem.dev/problems/".len();
        let rest = &text[start..];
        Some(rest[..rest.find('"').unwrap_or(rest.len())].to_owned())
    }
}

/// POSTs the same small JSON body to `path` with `key`; `None` when the
/// connection failed.
pub(crate) async fn post(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    key: &str,
) -> Option<Answer> {
    let req = Request::post(format!("http://{addr}{path}"))
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"amount\":100}")))
        .unwrap();
    send(client, req).await
}

/// An unkeyed GET.
pub(crate) async fn get(client: &HttpClient, addr: SocketAddr, path: &str) -> Option<Answer> {
    let req = Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(client, req).await
}

async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Option<Answer> {
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("the gateway answers within 30 s")
        .ok()?;
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some(Answer {
        status,
        replayed,
        body,
    })
}
