//! From the file's values to [`Settings`]: bounds, cross-field rules,
//! defaults. Errors carry the field path of what they are about.

use super::{de, ConfigError, FileConfig, RouteConfig, ScopeConfig, ScopeKind, Settings};
use idem_core::headers::ReplayHeaderFilter;
use idem_core::{InFlightMode, Policy, ReleaseStatuses, ScopeSource};
use idem_tower::Route;
use std::time::Duration;

/// The longest a duplicate may wait for the first request's outcome.
const MAX_WAIT: Duration = Duration::from_secs(10 * 60);
/// The shortest lease: renewals run at a third of it.
const MIN_LEASE: Duration = Duration::from_secs(1);

type Result<T> = std::result::Result<T, ConfigError>;

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
    usize::try_from(bytes).map_err(|_| {
        invalid(
            field,
            format!("{bytes} bytes is more than this platform can hold"),
        )
    })
}

pub(super) fn settings(file: FileConfig) -> Result<Settings> {
    let mut s = Settings::default();
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
    s.listen = file.listen;
    s.admin = file.admin;
    if let Some(store) = file.store {
        s.store = store;
    }
    if let Some(d) = file.shutdown_grace {
        s.shutdown_grace = d;
    }
    if let Some(d) = file.sweep_interval {
        s.sweep_interval = positive("sweep_interval", d)?;
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
        c.retention.retention = positive("retention", d)?;
    }
    if let Some(d) = file.tombstone_retention {
        c.retention.tombstone_retention = d;
    }
    if let Some(d) = file.lease {
        if d < MIN_LEASE {
            return Err(invalid(
                "lease",
                format!("must be at least {} (got {})", human(MIN_LEASE), human(d)),
            ));
        }
        c.retention.lease = d;
    }
    if let Some(d) = file.upstream_timeout {
        c.upstream_timeout = positive("upstream_timeout", d)?;
    }
    if let Some(n) = file.max_request_body {
        c.max_request_body = body_limit("max_request_body", n)?;
    }
    if let Some(n) = file.max_response_body {
        c.max_response_body = body_limit("max_response_body", n)?;
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
        for (i, &status) in statuses.iter().enumerate() {
            de::status(i64::from(status))
                .map_err(|m| invalid(format!("release_statuses[{i}]"), m))?;
        }
        c.release_statuses = ReleaseStatuses::new(statuses);
    }
    if let Some(headers) = file.fingerprint_headers {
        let mut unique = Vec::with_capacity(headers.len());
        for h in headers {
            if !unique.contains(&h) {
                unique.push(h);
            }
        }
        c.fingerprint_headers = unique;
    }
    if let Some(b) = file.fail_open {
        c.fail_open = b;
    }
    if let Some(d) = file.retry_after {
        c.retry_after = positive("retry_after", d)?;
    }
    if let Some(scope) = file.scope {
        c.scope = scope_source(scope)?;
    }
    if let Some(routes) = file.routes {
        c.routes = self::routes(routes)?;
    }
    Ok(s)
}

fn scope_source(scope: ScopeConfig) -> Result<ScopeSource> {
    let header = scope.header.map(|h| h.as_str().to_owned());
    match (scope.source.unwrap_or_default(), header) {
        (ScopeKind::HeaderHash, None) => Ok(ScopeSource::default()),
        (ScopeKind::HeaderHash, Some(header)) => Ok(ScopeSource::HeaderHash { header }),
        (ScopeKind::TrustedHeader, Some(header)) => Ok(ScopeSource::TrustedHeader { header }),
        (ScopeKind::TrustedHeader, None) => Err(invalid(
            "scope.header",
            r#"required when scope.source = "trusted-header" (e.g. header = "X-Tenant-Id")"#,
        )),
        (ScopeKind::Global, Some(_)) => Err(invalid(
            "scope.header",
            r#"not allowed when scope.source = "none" (one global scope reads no header)"#,
        )),
        (ScopeKind::Global, None) => Ok(ScopeSource::Global),
    }
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
    route.policy = Policy {
        require_key: entry.require_key.unwrap_or(defaults.require_key),
        in_flight,
        upstream_dedupes: entry.upstream_dedupes.unwrap_or(defaults.upstream_dedupes),
    };
    Ok(route)
}
