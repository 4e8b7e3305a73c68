//! From the file's values to [`Settings`]: bounds, cross-field rules,
//! defaults. Errors carry the field path of what they are about.

use super::{
    de, AnonymousKind, ConfigError, FileConfig, JwtConfig, RouteConfig, ScopeConfig, ScopeKind,
    Settings, StorageConfig,
};
use idem_core::headers::ReplayHeaderFilter;
use idem_core::scope::{JwtKeys, JwtVerifier, ScopeSecret};
use idem_core::{
    Anonymous, FingerprintIgnore, InFlightMode, Policy, ProblemFormat, ProblemProfile,
    ReleaseStatuses, ScopeRule, ScopeSource,
};
use idem_tower::Route;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The longest a duplicate may wait for the first request's outcome.
const MAX_WAIT: Duration = Duration::from_secs(10 * 60);
/// The shortest lease: renewals run at a third of it.
const MIN_LEASE: Duration = Duration::from_secs(1);

/// Upper bounds: past them a value is a typo (or an attack on the
/// arithmetic), not a policy, and `--check-config` says so.
const MAX_RETENTION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);
const MAX_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3600);
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(24 * 3600);
const MAX_BODY: u64 = 1 << 30;
const MAX_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_CONNECTIONS: usize = 1_000_000;
const MAX_BUFFERED: u64 = 64 << 30;
const MAX_BODY_TIMEOUT: Duration = Duration::from_secs(3600);

type Result<T> = std::result::Result<T, ConfigError>;

fn at_most(field: &str, d: Duration, max: Duration) -> Result<Duration> {
    if d > max {
        return Err(invalid(
            field,
            format!("must be at most {} (got {})", human(max), human(d)),
        ));
    }
    Ok(d)
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(field, message)
}

fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

fn positive(field: &str, d: Duration) -> Result<Duration> {
    if d.is_zero() {
        return Err(invalid(field, "must be greater than 0"));
    }
    Ok(d)
}

fn body_limit(field: &str, bytes: u64) -> Result<usize> {
    if bytes == 0 {
        return Err(invalid(field, "must be greater than 0"));
    }
    if bytes > MAX_BODY {
        return Err(invalid(
            field,
            format!("must be at most 1GiB (got {bytes} bytes): bodies are held in memory"),
        ));
    }
    usize::try_from(bytes).map_err(|_| {
        invalid(
            field,
            format!("{bytes} bytes is more than this platform can hold"),
        )
    })
}

pub(super) fn settings(file: FileConfig) -> Result<Settings> {
    let mut s = Settings {
        upstream_tls: upstream_tls(&file)?,
        listen_tls: listen_tls(&file)?,
        ..Settings::default()
    };
    if let Some(uri) = file.upstream {
        de::check_upstream(&uri, &uri.to_string()).map_err(|m| invalid("upstream", m))?;
        s.upstream = Some(uri);
    }
    if let (Some(listen), Some(admin)) = (file.listen, file.admin) {
        if listen == admin && admin.port() != 0 {
            return Err(invalid(
                "admin",
                format!(
                    "{admin} is also `listen`; the admin endpoints need an address of their own"
                ),
            ));
        }
    }
    s.trust_forwarded = file.trust_forwarded.unwrap_or(false);
    s.h2c = file.h2c.unwrap_or(false);
    if let Some(storage) = file.storage {
        s.encryption = encryption(storage)?;
    }
    if let Some(name) = file.admin_token_env {
        let bytes = env_bytes("admin_token_env", &name)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| invalid("admin_token_env", format!("{name} is not UTF-8 text")))?;
        s.admin_token =
            Some(crate::admin::AdminToken::new(&text).ok_or_else(|| {
                invalid("admin_token_env", format!("{name} holds only whitespace"))
            })?);
    }
    s.listen = file.listen;
    s.admin = file.admin;
    if let Some(store) = file.store {
        s.store = store;
    }
    if let Some(d) = file.shutdown_grace {
        s.shutdown_grace = at_most("shutdown_grace", d, MAX_SHUTDOWN_GRACE)?;
    }
    if let Some(d) = file.header_read_timeout {
        s.limits.header_read_timeout = at_most(
            "header_read_timeout",
            positive("header_read_timeout", d)?,
            MAX_HEADER_READ_TIMEOUT,
        )?;
    }
    if let Some(n) = file.max_connections {
        if n == 0 || n > MAX_CONNECTIONS {
            return Err(invalid(
                "max_connections",
                format!("must be between 1 and {MAX_CONNECTIONS} (got {n})"),
            ));
        }
        s.limits.max_connections = n;
    }
    if let Some(d) = file.sweep_interval {
        s.sweep_interval = at_most(
            "sweep_interval",
            positive("sweep_interval", d)?,
            MAX_SWEEP_INTERVAL,
        )?;
    }
    if let Some(n) = file.sweep_batch {
        if n == 0 {
            return Err(invalid("sweep_batch", "must be greater than 0"));
        }
        s.sweep_batch = n;
    }

    let c = &mut s.idempotency;
    if let Some(h) = file.key_header {
        c.key_header = h;
    }
    if let Some(d) = file.retention {
        c.retention.retention = retention("retention", d)?;
    }
    if let Some(d) = file.tombstone_retention {
        c.retention.tombstone_retention = at_most("tombstone_retention", d, MAX_RETENTION)?;
    }
    if let Some(d) = file.lease {
        if d < MIN_LEASE {
            return Err(invalid(
                "lease",
                format!("must be at least {} (got {})", human(MIN_LEASE), human(d)),
            ));
        }
        c.retention.lease = at_most("lease", d, MAX_LEASE)?;
    }
    if let Some(d) = file.upstream_timeout {
        c.upstream_timeout = at_most(
            "upstream_timeout",
            positive("upstream_timeout", d)?,
            MAX_UPSTREAM_TIMEOUT,
        )?;
    }
    if let Some(n) = file.max_request_body {
        c.max_request_body = body_limit("max_request_body", n)?;
    }
    if let Some(n) = file.max_response_body {
        c.max_response_body = body_limit("max_response_body", n)?;
    }
    if let Some(d) = file.request_body_timeout {
        c.request_body_timeout = at_most(
            "request_body_timeout",
            positive("request_body_timeout", d)?,
            MAX_BODY_TIMEOUT,
        )?;
    }
    if let Some(n) = file.max_buffered_bytes {
        if n > MAX_BUFFERED {
            return Err(invalid(
                "max_buffered_bytes",
                format!("must be at most 64GiB (got {n} bytes)"),
            ));
        }
        c.max_buffered_bytes = usize::try_from(n).map_err(|_| {
            invalid(
                "max_buffered_bytes",
                format!("{n} bytes is more than this platform can hold"),
            )
        })?;
    }
    // A JSON body is held about four times while it is read and
    // canonicalised: a budget smaller than that refuses every large one.
    let needed = c.max_request_body.saturating_mul(4);
    if c.max_buffered_bytes < needed {
        return Err(invalid(
            "max_buffered_bytes",
            format!(
                "must be at least 4 × max_request_body = {needed} bytes (got {}): a request body is held up to four times while it is read and its JSON canonicalised, so a smaller budget would refuse every large request",
                c.max_buffered_bytes
            ),
        ));
    }
    if let Some(extra) = file.replay_header_deny {
        let extra = extra
            .iter()
            .enumerate()
            .map(|(i, p)| {
                de::deny_pattern(p).map_err(|m| invalid(format!("replay_header_deny[{i}]"), m))
            })
            .collect::<Result<Vec<_>>>()?;
        c.replay_headers = ReplayHeaderFilter::with_extra(extra.iter().map(String::as_str));
    }
    if let Some(statuses) = file.release_statuses {
        c.release_statuses = release_statuses("release_statuses", statuses)?;
    }
    if let Some(headers) = file.fingerprint_headers {
        c.fingerprint_headers = unique_headers(headers);
    }
    if let Some(pointers) = file.fingerprint_ignore {
        c.fingerprint_ignore = FingerprintIgnore::new(pointers);
    }
    c.problems = problem_format(
        file.problem_profile.unwrap_or_default(),
        file.problem_type_base,
        file.docs_url,
    );
    s.policy_path = policy_path(file.publish_policy, file.policy_path)?;
    if let Some(b) = file.fail_open {
        c.fail_open = b;
    }
    if let Some(d) = file.retry_after {
        c.retry_after = at_most("retry_after", positive("retry_after", d)?, MAX_RETRY_AFTER)?;
    }
    if let Some(name) = file.instance {
        c.instance = name.into();
    }
    if let Some(scope) = file.scope {
        c.scope = scope_rule(scope, file.file.as_deref())?;
    }
    if let Some(routes) = file.routes {
        c.routes = self::routes(routes)?;
    }
    Ok(s)
}

fn retention(field: &str, d: Duration) -> Result<Duration> {
    at_most(field, positive(field, d)?, MAX_RETENTION)
}

fn release_statuses(field: &str, statuses: Vec<u16>) -> Result<ReleaseStatuses> {
    for (i, &status) in statuses.iter().enumerate() {
        de::status(i64::from(status)).map_err(|m| invalid(format!("{field}[{i}]"), m))?;
    }
    Ok(ReleaseStatuses::new(statuses))
}

fn unique_headers(headers: Vec<http::HeaderName>) -> Vec<http::HeaderName> {
    let mut unique = Vec::with_capacity(headers.len());
    for h in headers {
        if !unique.contains(&h) {
            unique.push(h);
        }
    }
    unique
}

fn problem_format(
    profile: super::ProblemProfileKind,
    type_base: Option<String>,
    docs_url: Option<String>,
) -> ProblemFormat {
    let profile = match profile {
        super::ProblemProfileKind::Rfc9457 => ProblemProfile::Rfc9457,
        super::ProblemProfileKind::Stripe => ProblemProfile::Stripe,
    };
    let mut format = ProblemFormat::default()
        .with_profile(profile)
        .with_docs_url(docs_url);
    if let Some(base) = type_base {
        format = format.with_type_base(base);
    }
    format
}

/// Where the policy document is served, or `None` when it is off.
fn policy_path(publish: Option<bool>, path: Option<String>) -> Result<Option<String>> {
    if publish == Some(false) {
        if path.is_some() {
            return Err(invalid(
                "policy_path",
                "set, but publish_policy = false turns the policy document off; remove one of them",
            ));
        }
        return Ok(None);
    }
    let Some(path) = path else {
        return Ok(Some(idem_core::policy::POLICY_PATH.to_owned()));
    };
    let normal = idem_core::path::NormalisedPath::new(&path);
    if !path.starts_with('/')
        || path.contains(['?', '#'])
        || !normal.is_unchanged()
        || normal.lenient().is_some()
    {
        return Err(invalid(
            "policy_path",
            format!(
                r#"{path:?} must be a path in normal form starting with "/", without query or fragment (e.g. "/.well-known/idempotency")"#
            ),
        ));
    }
    Ok(Some(path))
}

/// The bytes of environment variable `name`, for the field `field`.
fn env_bytes(field: &str, name: &str) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    match std::env::var_os(name) {
        Some(v) if !v.is_empty() => Ok(v.into_vec()),
        Some(_) => Err(invalid(
            field,
            format!("environment variable {name} is empty"),
        )),
        None => Err(invalid(
            field,
            format!("environment variable {name} is not set"),
        )),
    }
}

fn scope_rule(scope: ScopeConfig, config_file: Option<&Path>) -> Result<ScopeRule> {
    let kind = scope.source.unwrap_or_default();
    let not_for = |field: &str, what: &str| {
        invalid(
            format!("scope.{field}"),
            format!("not allowed when scope.source = {what:?}; remove it or change the source"),
        )
    };
    let source_name = match kind {
        ScopeKind::HeaderHash => "header-hash",
        ScopeKind::CookieHash => "cookie-hash",
        ScopeKind::Jwt => "jwt",
        ScopeKind::TrustedHeader => "trusted-header",
        ScopeKind::Global => "none",
    };
    let headers = scope.header.map(|hs| {
        let mut names: Vec<String> = Vec::with_capacity(hs.len());
        for h in hs {
            if !names.iter().any(|n| n == h.as_str()) {
                names.push(h.as_str().to_owned());
            }
        }
        names
    });
    if headers.as_ref().is_some_and(Vec::is_empty) {
        return Err(invalid("scope.header", "empty; name at least one header"));
    }
    if scope.cookie.is_some() && kind != ScopeKind::CookieHash {
        return Err(not_for("cookie", source_name));
    }
    if scope.jwt.is_some() && kind != ScopeKind::Jwt {
        return Err(not_for("jwt", source_name));
    }
    if headers.is_some()
        && matches!(
            kind,
            ScopeKind::CookieHash | ScopeKind::Jwt | ScopeKind::Global
        )
    {
        return Err(not_for("header", source_name));
    }
    let source = match kind {
        ScopeKind::HeaderHash => match headers {
            Some(headers) => ScopeSource::HeaderHash { headers },
            None => ScopeSource::default(),
        },
        ScopeKind::TrustedHeader => ScopeSource::TrustedHeader {
            headers: headers.ok_or_else(|| {
                invalid(
                    "scope.header",
                    r#"required when scope.source = "trusted-header" (e.g. header = "X-Tenant-Id")"#,
                )
            })?,
        },
        ScopeKind::CookieHash => {
            let cookie = scope.cookie.ok_or_else(|| {
                invalid(
                    "scope.cookie",
                    r#"required when scope.source = "cookie-hash" (e.g. cookie = "session")"#,
                )
            })?;
            if cookie.contains([';', '=', ',', ' ']) {
                return Err(invalid("scope.cookie", format!("{cookie:?} is not a cookie name")));
            }
            ScopeSource::CookieHash { cookie }
        }
        ScopeKind::Jwt => {
            let jwt = scope.jwt.ok_or_else(|| {
                invalid(
                    "scope.jwt",
                    r#"required when scope.source = "jwt": add a [scope.jwt] table with keys = "jwks.json" or hs256_secret_env = "NAME""#,
                )
            })?;
            ScopeSource::Jwt(Arc::new(jwt_verifier(jwt, config_file)?))
        }
        ScopeKind::Global => ScopeSource::Global,
    };
    let anonymous = match scope.anonymous.unwrap_or_default() {
        AnonymousKind::Reject => Anonymous::Reject,
        AnonymousKind::PassThrough => Anonymous::PassThrough,
        AnonymousKind::Shared => Anonymous::Shared,
    };
    let secret = match scope.secret_env {
        Some(name) => {
            let bytes = env_bytes("scope.secret_env", &name)?;
            Some(ScopeSecret::new(&bytes).ok_or_else(|| {
                invalid(
                    "scope.secret_env",
                    format!(
                        "the secret in {name} is {} bytes; use at least {} random bytes",
                        bytes.len(),
                        ScopeSecret::MIN_LEN
                    ),
                )
            })?)
        }
        None => None,
    };
    Ok(ScopeRule {
        source,
        anonymous,
        secret,
    })
}

fn jwt_verifier(jwt: JwtConfig, config_file: Option<&Path>) -> Result<JwtVerifier> {
    let keys = match (jwt.keys, jwt.hs256_secret_env) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "scope.jwt.keys",
                "give either keys (a JWKS file) or hs256_secret_env, not both",
            ))
        }
        (None, None) => {
            return Err(invalid(
                "scope.jwt.keys",
                r#"required: keys = "jwks.json" (a JWKS file) or hs256_secret_env = "NAME""#,
            ))
        }
        (Some(path), None) => {
            // Relative to the configuration file, as a reader of it expects.
            let path = match config_file.and_then(Path::parent) {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                invalid(
                    "scope.jwt.keys",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let set = JwtVerifier::parse_jwks(&text)
                .map_err(|e| invalid("scope.jwt.keys", format!("{}: {e}", path.display())))?;
            JwtKeys::Jwks(set)
        }
        (None, Some(name)) => JwtKeys::Hs256(env_bytes("scope.jwt.hs256_secret_env", &name)?),
    };
    let field = match keys {
        JwtKeys::Jwks(_) => "scope.jwt.keys",
        JwtKeys::Hs256(_) => "scope.jwt.hs256_secret_env",
    };
    let claim = jwt.claim.unwrap_or_else(|| "sub".to_owned());
    JwtVerifier::new(keys, &claim, jwt.issuer, jwt.audience).map_err(|e| {
        let field = match e {
            idem_core::scope::JwtError::ClaimPath(_) => "scope.jwt.claim",
            _ => field,
        };
        invalid(field, e.to_string())
    })
}

fn encryption(storage: StorageConfig) -> Result<Option<idem_store::KeyRing>> {
    let Some(name) = storage.encryption_key_env else {
        if storage.decryption_keys_env.is_some() {
            return Err(invalid(
                "storage.decryption_keys_env",
                "only used with storage.encryption_key_env (the key new records are sealed with)",
            ));
        }
        return Ok(None);
    };
    let text = |field: &str, name: &str| -> Result<String> {
        String::from_utf8(env_bytes(field, name)?)
            .map_err(|_| invalid(field, format!("{name} is not base64 text")))
    };
    let current = text("storage.encryption_key_env", &name)?;
    let older = match &storage.decryption_keys_env {
        Some(old) => text("storage.decryption_keys_env", old)?,
        None => String::new(),
    };
    let older: Vec<&str> = older
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    idem_store::KeyRing::from_base64(current.trim(), &older)
        .map_err(|e| {
            use idem_store::{KeyPosition::Older, KeyRingError as E};
            let field = match e {
                E::Empty { position: Older(_) }
                | E::NotBase64 {
                    position: Older(_), ..
                }
                | E::WrongLength {
                    position: Older(_), ..
                }
                | E::Duplicate {
                    position: Older(_), ..
                } => "storage.decryption_keys_env",
                _ => "storage.encryption_key_env",
            };
            invalid(field, e.to_string())
        })
        .map(Some)
}

fn routes(entries: Vec<RouteConfig>) -> Result<Vec<Route>> {
    if entries.is_empty() {
        return Err(invalid(
            "routes",
            r#"empty; give at least one [[routes]] entry, or leave routes out for the default (POST and PATCH under "/")"#,
        ));
    }
    let mut routes: Vec<Route> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let route = self::route(i, entry)?;
        for (j, earlier) in routes.iter().enumerate() {
            if earlier.path_prefix != route.path_prefix {
                continue;
            }
            if let Some(method) = route.methods.iter().find(|m| earlier.methods.contains(m)) {
                return Err(invalid(
                    format!("routes[{i}]"),
                    format!(
                        "path_prefix {:?} with method {method} is already covered by routes[{j}]; this entry would never match it",
                        route.path_prefix
                    ),
                ));
            }
        }
        routes.push(route);
    }
    Ok(routes)
}

fn route(i: usize, entry: RouteConfig) -> Result<Route> {
    let mut route = Route::new(entry.path_prefix);
    if !route.path_prefix.starts_with('/') {
        return Err(invalid(
            format!("routes[{i}].path_prefix"),
            format!(r#"{:?} must start with "/""#, route.path_prefix),
        ));
    }
    let normal = idem_core::path::NormalisedPath::new(&route.path_prefix);
    if !normal.is_unchanged() || normal.lenient().is_some() {
        return Err(invalid(
            format!("routes[{i}].path_prefix"),
            format!(
                "{:?} is not in normal form: requests are matched on normalised paths, so write it as {:?} (no `//`, `.` or `..` segments, escaped letters or digits, `;` or escaped `/`)",
                route.path_prefix,
                normal.lenient().unwrap_or(normal.as_str())
            ),
        ));
    }
    if route.path_prefix.contains(['?', '#']) {
        return Err(invalid(
            format!("routes[{i}].path_prefix"),
            format!(
                "{:?} must be a path, without query or fragment",
                route.path_prefix
            ),
        ));
    }
    if let Some(methods) = entry.methods {
        if methods.is_empty() {
            return Err(invalid(
                format!("routes[{i}].methods"),
                r#"empty; list at least one method, e.g. ["POST"]"#,
            ));
        }
        route.methods.clear();
        for (j, method) in methods.into_iter().enumerate() {
            de::check_method(&method)
                .map_err(|m| invalid(format!("routes[{i}].methods[{j}]"), m))?;
            if !route.methods.contains(&method) {
                route.methods.push(method);
            }
        }
    }
    let defaults = Policy::default();
    let in_flight = entry.in_flight.unwrap_or(defaults.in_flight);
    if let InFlightMode::Wait(bound) = in_flight {
        if bound.is_zero() || bound > MAX_WAIT {
            return Err(invalid(
                format!("routes[{i}].in_flight.wait"),
                format!(
                    "must be greater than 0 and at most {} (got {})",
                    human(MAX_WAIT),
                    human(bound)
                ),
            ));
        }
    }
    let field = |name: &str| format!("routes[{i}].{name}");
    route.policy = Policy {
        require_key: entry.require_key.unwrap_or(defaults.require_key),
        in_flight,
        upstream_dedupes: entry.upstream_dedupes.unwrap_or(defaults.upstream_dedupes),
        retention: entry
            .retention
            .map(|d| retention(&field("retention"), d))
            .transpose()?,
        tombstone_retention: entry
            .tombstone_retention
            .map(|d| at_most(&field("tombstone_retention"), d, MAX_RETENTION))
            .transpose()?,
        release_statuses: entry
            .release_statuses
            .map(|s| release_statuses(&field("release_statuses"), s))
            .transpose()?,
        fingerprint_headers: entry.fingerprint_headers.map(unique_headers),
        fingerprint_ignore: entry.fingerprint_ignore.map(FingerprintIgnore::new),
    };
    Ok(route)
}

/// `path` relative to the configuration file, as a reader of it expects.
fn near_config(file: &FileConfig, path: &Path) -> PathBuf {
    match file.file.as_deref().and_then(Path::parent) {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}

/// The listener's certificate and key, both or neither, loaded once here so
/// `--check-config` reports a bad one.
fn listen_tls(file: &FileConfig) -> Result<Option<crate::listen_tls::ListenTls>> {
    let files = match (&file.tls_cert, &file.tls_key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => crate::listen_tls::ListenTls {
            cert: near_config(file, cert),
            key: near_config(file, key),
        },
        (Some(_), None) => return Err(invalid("tls_key", "required with tls_cert")),
        (None, Some(_)) => return Err(invalid("tls_cert", "required with tls_key")),
    };
    files.load().map_err(|e| invalid(e.field, e.problem))?;
    Ok(Some(files))
}

/// The upstream's TLS files, relative to the configuration file, loaded
/// once here so `--check-config` reports a bad one.
fn upstream_tls(file: &FileConfig) -> Result<crate::upstream_tls::UpstreamTls> {
    let near_config = |path: &PathBuf| near_config(file, path);
    let tls = crate::upstream_tls::UpstreamTls {
        ca: file.upstream_ca.as_ref().map(near_config),
        client_cert: file.upstream_client_cert.as_ref().map(near_config),
        client_key: file.upstream_client_key.as_ref().map(near_config),
        http2: file.upstream_http2.unwrap_or_default(),
    };
    tls.client_config()
        .map_err(|e| invalid(e.field, e.problem))?;
    Ok(tls)
}
