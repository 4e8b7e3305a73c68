//! The gateway's TOML configuration file: what it may say ([`FileConfig`]),
//! and what the gateway runs with once it has been checked ([`Settings`]).
//!
//! Loading is two steps. [`load`] reads and parses the file: TOML syntax,
//! unknown fields and values of the wrong shape (a duration that is not one,
//! a status that is not a number) fail here, with the line and column.
//! [`FileConfig::into_settings`] then checks what only makes sense across
//! fields or against the contract (bounds, the scope's header, duplicate
//! routes) and builds the runtime types. [`check`] does both. Every error
//! names the field it is about, e.g. `routes[2].in_flight.wait`.
//!
//! Options and defaults are described in `docs/configuration.md`; the
//! defaults are the contract's, i.e. [`IdempotencyConfig::default`].
//!
//! ```
//! use idem_gateway::config;
//! use std::time::Duration;
//!
//! let file: config::FileConfig = r#"
//!     upstream = "http://127.0.0.1:3000"
//!     lease = "10s"
//!
//!     [[routes]]
//!     path_prefix = "/v1/charges"
//!     require_key = true
//!     in_flight = { wait = "5s" }
//! "#.parse()?;
//! let settings = file.into_settings()?;
//! assert_eq!(settings.idempotency.retention.lease, Duration::from_secs(10));
//! assert!(settings.idempotency.routes[0].policy.require_key);
//!
//! let err = "lease = \"10x\"".parse::<config::FileConfig>().unwrap_err();
//! assert_eq!(err.field(), Some("lease"));
//! # Ok::<(), config::ConfigError>(())
//! ```

mod de;
mod error;
mod validate;

pub use error::ConfigError;

use crate::server::GatewayOptions;
use http::{HeaderName, Method, Uri};
use idem_core::InFlightMode;
use idem_store::StoreSpec;
use idem_tower::IdempotencyConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The store used when neither the file nor `--store` names one.
pub const DEFAULT_STORE: &str = "sqlite:idem.db";

/// The configuration file as written: every option is optional, and an
/// absent one takes its default in [`FileConfig::into_settings`].
///
/// Values are already parsed (durations, sizes, addresses, header names),
/// but not yet checked against each other or the contract's bounds.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file this was loaded from; named in error messages.
    #[serde(skip)]
    pub file: Option<PathBuf>,
    /// `listen`: address clients connect to.
    #[serde(default, deserialize_with = "de::opt")]
    pub listen: Option<SocketAddr>,
    /// `upstream`: the API behind the gateway,
    /// `http[s]://host[:port][/base]`.
    #[serde(default, deserialize_with = "de::opt")]
    pub upstream: Option<Uri>,
    /// `store`: `sqlite:PATH` or `memory`.
    #[serde(default, deserialize_with = "de::opt")]
    pub store: Option<StoreSpec>,
    /// `admin`: address for `/health` and `/metrics`; off unless given.
    #[serde(default, deserialize_with = "de::opt")]
    pub admin: Option<SocketAddr>,
    /// `admin_token_env`: a variable holding the admin listener's bearer
    /// token.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub admin_token_env: Option<String>,
    /// `key_header`: the request header carrying the key.
    #[serde(default, deserialize_with = "de::opt")]
    pub key_header: Option<HeaderName>,
    /// `retention`: how long a completed response is replayed.
    #[serde(default, deserialize_with = "de::opt")]
    pub retention: Option<Duration>,
    /// `tombstone_retention`: how long a tombstone outlives the response.
    #[serde(default, deserialize_with = "de::opt")]
    pub tombstone_retention: Option<Duration>,
    /// `lease`: the lease of a claim, renewed while the upstream works.
    #[serde(default, deserialize_with = "de::opt")]
    pub lease: Option<Duration>,
    /// `upstream_timeout`: how long the upstream may take before the
    /// outcome is declared unknown.
    #[serde(default, deserialize_with = "de::opt")]
    pub upstream_timeout: Option<Duration>,
    /// `max_request_body`: largest request body, in bytes; larger is 413.
    #[serde(default, deserialize_with = "de::opt_size")]
    pub max_request_body: Option<u64>,
    /// `max_response_body`: largest response body stored for replay, in bytes.
    #[serde(default, deserialize_with = "de::opt_size")]
    pub max_response_body: Option<u64>,
    /// `max_buffered_bytes`: one budget for the request and response bytes
    /// held in memory across all requests; past it, 503 `overloaded`.
    #[serde(default, deserialize_with = "de::opt_size")]
    pub max_buffered_bytes: Option<u64>,
    /// `request_body_timeout`: how long a keyed request's body may take to
    /// arrive, in all; past it, 408 `body-timeout`.
    #[serde(default, deserialize_with = "de::opt")]
    pub request_body_timeout: Option<Duration>,
    /// `replay_header_deny`: response headers not stored for replay, added
    /// to the default deny-list; a trailing `*` denies a prefix. Lower case.
    #[serde(default, deserialize_with = "de::opt_deny")]
    pub replay_header_deny: Option<Vec<String>>,
    /// `release_statuses`: statuses that release the claim; replaces the
    /// default list.
    #[serde(default, deserialize_with = "de::opt_statuses")]
    pub release_statuses: Option<Vec<u16>>,
    /// `fingerprint_headers`: extra request headers in the fingerprint.
    #[serde(default, deserialize_with = "de::opt_vec")]
    pub fingerprint_headers: Option<Vec<HeaderName>>,
    /// `fingerprint_ignore`: JSON pointers left out of the fingerprint of
    /// JSON bodies, on routes that set none.
    #[serde(default, deserialize_with = "de::opt_vec")]
    pub fingerprint_ignore: Option<Vec<idem_core::JsonPointer>>,
    /// `publish_policy`: serve the policy document; default true.
    #[serde(default)]
    pub publish_policy: Option<bool>,
    /// `policy_path`: where the policy document is served; default
    /// `/.well-known/idempotency`.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub policy_path: Option<String>,
    /// `docs_url`: sent as `Link: <docs_url>; rel="describedby"` on every
    /// problem response.
    #[serde(default, deserialize_with = "de::opt_url")]
    pub docs_url: Option<String>,
    /// `problem_type_base`: what every problem `type` URI starts with.
    #[serde(default, deserialize_with = "de::opt_url")]
    pub problem_type_base: Option<String>,
    /// `problem_profile`: `"rfc9457"` (default) or `"stripe"`.
    #[serde(default)]
    pub problem_profile: Option<ProblemProfileKind>,
    /// `fail_open`: forward unprotected when the store fails, instead of 503.
    #[serde(default)]
    pub fail_open: Option<bool>,
    /// `retry_after`: the `Retry-After` of a 409 `request-in-progress`.
    #[serde(default, deserialize_with = "de::opt")]
    pub retry_after: Option<Duration>,
    /// `instance`: this gateway's name, stored with its claims as their
    /// lease holder; default `hostname:pid`.
    #[serde(default, deserialize_with = "de::opt_instance")]
    pub instance: Option<String>,
    /// `shutdown_grace`: how long graceful shutdown waits for executions.
    #[serde(default, deserialize_with = "de::opt")]
    pub shutdown_grace: Option<Duration>,
    /// `header_read_timeout`: how long a client may take to send a
    /// request's headers (and how long an idle keep-alive connection stays).
    #[serde(default, deserialize_with = "de::opt")]
    pub header_read_timeout: Option<Duration>,
    /// `max_connections`: client connections served at once; past it, new
    /// ones wait in the listen backlog.
    #[serde(default, deserialize_with = "de::opt")]
    pub max_connections: Option<usize>,
    /// `sweep_interval`: how often expired records are swept.
    #[serde(default, deserialize_with = "de::opt")]
    pub sweep_interval: Option<Duration>,
    /// `sweep_batch`: most records one sweep batch touches.
    #[serde(default, deserialize_with = "de::opt")]
    pub sweep_batch: Option<usize>,
    /// `trust_forwarded`: keep (and append to) inbound `Forwarded`,
    /// `X-Forwarded-*` and `X-Real-IP`; default false: they are dropped,
    /// because a client can write anything there.
    #[serde(default)]
    pub trust_forwarded: Option<bool>,
    /// `h2c`: accept cleartext HTTP/2 (prior knowledge); default false.
    #[serde(default)]
    pub h2c: Option<bool>,
    /// `upstream_ca`: PEM file of the CA certificates an `https://`
    /// upstream is verified against, instead of the public roots.
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// `upstream_client_cert`: PEM file of a client certificate for mTLS.
    #[serde(default)]
    pub upstream_client_cert: Option<PathBuf>,
    /// `upstream_client_key`: PEM file of its private key.
    #[serde(default)]
    pub upstream_client_key: Option<PathBuf>,
    /// `upstream_http2`: `"auto"` (ALPN decides), `"never"` or `"always"`.
    #[serde(default)]
    pub upstream_http2: Option<crate::upstream_tls::UpstreamHttp2>,
    /// `tls_cert`: PEM certificate chain; with `tls_key`, the listener
    /// speaks TLS.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// `tls_key`: PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// `[scope]`: where a request's tenant scope comes from.
    #[serde(default)]
    pub scope: Option<ScopeConfig>,
    /// `[storage]`: encryption of stored responses.
    #[serde(default)]
    pub storage: Option<StorageConfig>,
    /// `[[routes]]`: covered routes, first match wins.
    #[serde(default)]
    pub routes: Option<Vec<RouteConfig>>,
}

/// The `[scope]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeConfig {
    /// `scope.source`; default `header-hash`.
    #[serde(default)]
    pub source: Option<ScopeKind>,
    /// `scope.header`: the header (or list of headers) the scope is read
    /// from, for `header-hash` (default `Authorization`) and
    /// `trusted-header` (required).
    #[serde(default, deserialize_with = "de::opt_one_or_many")]
    pub header: Option<Vec<HeaderName>>,
    /// `scope.cookie`: the cookie `cookie-hash` reads.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub cookie: Option<String>,
    /// `scope.anonymous`: what a keyed request without a credential gets.
    #[serde(default)]
    pub anonymous: Option<AnonymousKind>,
    /// `scope.secret_env`: a variable holding a secret; stored scopes are
    /// then HMAC-SHA256 under it.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub secret_env: Option<String>,
    /// `[scope.jwt]`: for `source = "jwt"`.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
}

/// `scope.source`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScopeKind {
    /// `"header-hash"`: a hash of one or more headers (default `Authorization`).
    #[default]
    HeaderHash,
    /// `"cookie-hash"`: a hash of one named cookie.
    CookieHash,
    /// `"jwt"`: a claim of a verified bearer JWT.
    Jwt,
    /// `"trusted-header"`: headers set by a trusted proxy, used as they are.
    TrustedHeader,
    /// `"none"`: one global scope, for single-tenant APIs only.
    #[serde(rename = "none")]
    Global,
}

/// `problem_profile`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProblemProfileKind {
    /// `"rfc9457"`: RFC 9457 problem details (default).
    #[default]
    Rfc9457,
    /// `"stripe"`: Stripe's error objects and statuses.
    Stripe,
}

/// `scope.anonymous`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnonymousKind {
    /// `"reject"`: 401 `credential-required` (default).
    #[default]
    Reject,
    /// `"pass-through"`: forwarded unprotected, counted.
    PassThrough,
    /// `"shared"`: one scope for every anonymous caller (single-tenant APIs).
    Shared,
}

/// The `[scope.jwt]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `claim`: the claim naming the tenant, a dot path; default `sub`.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub claim: Option<String>,
    /// `keys`: a JWKS file (relative to the configuration file).
    #[serde(default)]
    pub keys: Option<PathBuf>,
    /// `hs256_secret_env`: a variable whose value (raw bytes) is the HS256 secret.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub hs256_secret_env: Option<String>,
    /// `issuer`: the required `iss`, when given.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub issuer: Option<String>,
    /// `audience`: a required member of `aud`, when given.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub audience: Option<String>,
}

/// The `[storage]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `encryption_key_env`: a variable holding the 32-byte key (base64)
    /// that stored responses are sealed with.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub encryption_key_env: Option<String>,
    /// `decryption_keys_env`: a variable holding older keys (base64,
    /// comma-separated) that still open records during a rotation.
    #[serde(default, deserialize_with = "de::opt_text")]
    pub decryption_keys_env: Option<String>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `methods`; default POST and PATCH.
    #[serde(default, deserialize_with = "de::opt_vec")]
    pub methods: Option<Vec<Method>>,
    /// `path_prefix`, matched on segment boundaries; required.
    pub path_prefix: String,
    /// `require_key`; default false.
    #[serde(default)]
    pub require_key: Option<bool>,
    /// `in_flight`: `"reject"` (default) or `{ wait = "5s" }`.
    #[serde(default, deserialize_with = "de::opt_in_flight")]
    pub in_flight: Option<InFlightMode>,
    /// `upstream_dedupes`; default false.
    #[serde(default)]
    pub upstream_dedupes: Option<bool>,
    /// `retention` on this route; default the top-level value.
    #[serde(default, deserialize_with = "de::opt")]
    pub retention: Option<Duration>,
    /// `tombstone_retention` on this route; default the top-level value.
    #[serde(default, deserialize_with = "de::opt")]
    pub tombstone_retention: Option<Duration>,
    /// `release_statuses` on this route (replaces the top-level list).
    #[serde(default, deserialize_with = "de::opt_statuses")]
    pub release_statuses: Option<Vec<u16>>,
    /// `fingerprint_headers` on this route (replaces the top-level list).
    #[serde(default, deserialize_with = "de::opt_vec")]
    pub fingerprint_headers: Option<Vec<HeaderName>>,
    /// `fingerprint_ignore` on this route (replaces the top-level list).
    #[serde(default, deserialize_with = "de::opt_vec")]
    pub fingerprint_ignore: Option<Vec<idem_core::JsonPointer>>,
}

impl RouteConfig {
    /// A route entry for `path_prefix` with every other option left out.
    pub fn new(path_prefix: impl Into<String>) -> Self {
        RouteConfig {
            methods: None,
            path_prefix: path_prefix.into(),
            require_key: None,
            in_flight: None,
            upstream_dedupes: None,
            retention: None,
            tombstone_retention: None,
            release_statuses: None,
            fingerprint_headers: None,
            fingerprint_ignore: None,
        }
    }
}

/// What the gateway runs with: the file's values checked, defaults filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where clients connect, if the file says; `--listen` overrides it.
    pub listen: Option<SocketAddr>,
    /// The API behind the gateway (an `http://` URI with a host), if the
    /// file says; `--upstream` overrides it.
    pub upstream: Option<Uri>,
    /// The record store. Default [`DEFAULT_STORE`].
    pub store: StoreSpec,
    /// Where `/health` and `/metrics` are served; off unless given.
    pub admin: Option<SocketAddr>,
    /// How long graceful shutdown waits for executions. Default 30 s.
    pub shutdown_grace: Duration,
    /// Timeouts and limits of client connections.
    pub limits: crate::server::ConnectionLimits,
    /// The admin listener's bearer token. Default none.
    pub admin_token: Option<crate::admin::AdminToken>,
    /// How often expired records are swept. Default 60 s.
    pub sweep_interval: Duration,
    /// Most records one sweep batch touches. Default 1000.
    pub sweep_batch: usize,
    /// Keep inbound forwarding headers (append to them). Default false.
    pub trust_forwarded: bool,
    /// Accept cleartext HTTP/2. Default false.
    pub h2c: bool,
    /// TLS and HTTP version to the upstream. Default: public roots, no
    /// client certificate, ALPN decides.
    pub upstream_tls: crate::upstream_tls::UpstreamTls,
    /// TLS termination on the listener. Default off.
    pub listen_tls: Option<crate::listen_tls::ListenTls>,
    /// Seal stored responses with these keys. Default none.
    pub encryption: Option<idem_store::KeyRing>,
    /// Where the policy document is served on the main listener; `None`
    /// with `publish_policy = false`. Default `/.well-known/idempotency`.
    pub policy_path: Option<String>,
    /// The contract's settings, for the layer.
    pub idempotency: IdempotencyConfig,
}

impl Default for Settings {
    /// The settings of an empty file.
    fn default() -> Self {
        Settings {
            listen: None,
            upstream: None,
            store: StoreSpec::from_str(DEFAULT_STORE).expect("the default store parses"),
            admin: None,
            shutdown_grace: Duration::from_secs(30),
            limits: crate::server::ConnectionLimits::default(),
            admin_token: None,
            sweep_interval: Duration::from_secs(60),
            sweep_batch: 1000,
            trust_forwarded: false,
            h2c: false,
            upstream_tls: crate::upstream_tls::UpstreamTls::default(),
            listen_tls: None,
            encryption: None,
            policy_path: Some(idem_core::policy::POLICY_PATH.to_owned()),
            idempotency: IdempotencyConfig::default(),
        }
    }
}

impl FileConfig {
    /// Checks the file's values against each other and the contract's
    /// bounds, and builds the runtime settings, defaults filled in.
    ///
    /// Errors name the field (`routes[1].in_flight.wait: ...`) and, when
    /// [`FileConfig::file`] is set, the file.
    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let file = self.file.clone();
        validate::settings(self).map_err(|e| match file {
            Some(path) => e.in_file(&path),
            None => e,
        })
    }
}

impl FromStr for FileConfig {
    type Err = ConfigError;

    /// Parses TOML text; see [`parse`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

/// Parses a configuration from TOML text (no file involved).
///
/// Fails on TOML syntax, unknown fields and malformed values; errors carry
/// the line and column. Checks across fields happen in
/// [`FileConfig::into_settings`].
pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let deserializer =
        toml::de::Deserializer::parse(text).map_err(|e| ConfigError::syntax(text, &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| ConfigError::from_serde(text, e))
}

/// Reads and parses the configuration file at `path`; errors name the file.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    let mut config = parse(&text).map_err(|e| e.in_file(path))?;
    config.file = Some(path.to_owned());
    Ok(config)
}

/// Loads and fully checks the file at `path`: what
/// `idem gateway --check-config FILE` runs.
pub fn check(path: &Path) -> Result<Settings, ConfigError> {
    load(path)?.into_settings()
}

/// Parses and checks an upstream URI the way the `upstream` option is
/// checked: `http://` or `https://` with a host, an optional base path, no
/// query, no credentials.
///
/// Fits clap's `value_parser` for `--upstream`.
///
/// ```
/// use idem_gateway::config::parse_upstream;
/// assert!(parse_upstream("http://127.0.0.1:3000").is_ok());
/// assert!(parse_upstream("https://api.example.com").is_ok());
/// assert!(parse_upstream("ftp://api.example.com").is_err());
/// ```
pub fn parse_upstream(s: &str) -> Result<Uri, ConfigError> {
    de::upstream(s).map_err(|message| ConfigError::invalid("upstream", message))
}

/// Checks an instance name the way the `instance` option is checked: 1
/// to 128 bytes of printable text, no whitespace at either end.
///
/// Fits clap's `value_parser` for `--instance`.
///
/// ```
/// use idem_gateway::config::parse_instance;
/// assert_eq!(parse_instance("gw-1").unwrap(), "gw-1");
/// assert!(parse_instance("").is_err());
/// assert!(parse_instance("gw\n1").is_err());
/// ```
pub fn parse_instance(s: &str) -> Result<String, ConfigError> {
    de::instance(s).map_err(|message| ConfigError::invalid("instance", message))
}

// Settings become the options a gateway starts with here, so the server
// knows nothing of the configuration file.
impl GatewayOptions {
    /// Options with every default of an empty configuration file, no
    /// admin listener.
    pub fn new(
        listen: SocketAddr,
        upstream: Uri,
        store: std::sync::Arc<dyn idem_store::Store>,
    ) -> Self {
        Self::from_settings(Settings::default(), listen, upstream, store, None)
    }

    /// Options from checked [`Settings`], with the
    /// addresses, upstream and store the caller resolved.
    pub fn from_settings(
        settings: Settings,
        listen: SocketAddr,
        upstream: Uri,
        store: std::sync::Arc<dyn idem_store::Store>,
        admin: Option<SocketAddr>,
    ) -> Self {
        GatewayOptions {
            listen,
            upstream,
            store,
            admin,
            idempotency: settings.idempotency,
            shutdown_grace: settings.shutdown_grace,
            sweep_interval: settings.sweep_interval,
            sweep_batch: settings.sweep_batch,
            trust_forwarded: settings.trust_forwarded,
            h2c: settings.h2c,
            upstream_tls: settings.upstream_tls,
            listen_tls: settings.listen_tls,
            encryption: settings.encryption,
            limits: settings.limits,
            admin_token: settings.admin_token,
            policy_path: settings.policy_path,
        }
    }
}
