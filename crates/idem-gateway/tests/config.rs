//! The configuration file: real files in a temporary directory, read the way
//! `idem gateway --config FILE` and `--check-config FILE` read them.

use http::{HeaderName, Method, Uri};
use idem_core::headers::ReplayHeaderFilter;
use idem_gateway::config::{self, ConfigError, FileConfig, Settings};
use idem_store::StoreSpec;
use idem_tower::{
    IdempotencyConfig, InFlightMode, Policy, ReleaseStatuses, Retention, Route, ScopeRule,
    ScopeSource,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const FULL_EXAMPLE: &str = r#"
listen = "127.0.0.1:8080"          # optional (may come from --listen)
upstream = "http://127.0.0.1:3000"  # optional (may come from --upstream)
store = "sqlite:idem.db"            # optional, default sqlite:idem.db
admin = "127.0.0.1:9090"            # optional, off unless given
key_header = "Idempotency-Key"
retention = "24h"
tombstone_retention = "7d"
lease = "30s"
upstream_timeout = "60s"
max_request_body = "10MiB"          # integer bytes or string with B/KiB/MiB/GiB (also KB/MB = 1000-based)
max_response_body = "10MiB"
max_buffered_bytes = "256MiB"       # all request and response bytes held in memory; past it, 503 overloaded
request_body_timeout = "30s"        # a keyed request's whole body must arrive within this
replay_header_deny = ["x-request-id", "x-trace-*"]   # added to the default deny-list; `*` suffix = prefix
release_statuses = [408, 425, 429, 502, 503, 504]    # replaces the default list; each 100..=599
fingerprint_headers = ["x-api-version"]
fingerprint_ignore = []             # JSON pointers (RFC 6901) left out of a JSON body's fingerprint
fail_open = false
retry_after = "1s"
instance = "gw-1"                   # this gateway's name, stored with its claims (default hostname:pid)
shutdown_grace = "30s"              # how long graceful shutdown waits for executions
sweep_interval = "60s"              # how often expired records are swept
sweep_batch = 1000

header_read_timeout = "10s"         # a client's headers (and an idle keep-alive) may take this long
max_connections = 10000             # past it, new clients wait in the listen backlog
trust_forwarded = false             # drop inbound Forwarded / X-Forwarded-* / X-Real-IP
h2c = false                         # cleartext HTTP/2 only when asked
upstream_http2 = "auto"             # HTTP/2 to the upstream when its TLS offers it; or "never", "always"
# upstream_ca = "upstream-ca.pem"          # https upstream: trust this CA (PEM) instead of the public roots
# upstream_client_cert = "gateway.crt"     # and present this client certificate (mTLS)...
# upstream_client_key = "gateway.key"      # ...with this key; paths relative to this file
# tls_cert = "server.crt"                  # serve HTTPS (ALPN h2 and http/1.1) with this certificate chain...
# tls_key = "server.key"                   # ...and key; SIGHUP reloads both without dropping connections

publish_policy = true               # the policy document for API consumers, on the main listener...
policy_path = "/.well-known/idempotency"   # ...at this path (never forwarded, no key needed)
problem_profile = "rfc9457"         # or "stripe": Stripe's error shape and statuses
problem_type_base = "https://idem.dev/problems/"   # problem `type` URIs are this + the slug
# docs_url = "https://api.example.com/docs/idempotency"   # Link: <docs_url>; rel="describedby" on problems

[scope]
source = "header-hash"   # or "cookie-hash", "jwt", "trusted-header", "none"
header = "Authorization" # or a list; required for trusted-header; default Authorization for header-hash
anonymous = "reject"     # or "pass-through" or "shared"

[[routes]]
methods = ["POST", "PATCH"]     # default; GET/HEAD/OPTIONS/TRACE are refused (they always pass through)
path_prefix = "/v1/charges"     # must start with '/'
require_key = true              # default false
in_flight = "reject"            # or { wait = "5s" }  (the bound must be > 0 and <= 10 min)
upstream_dedupes = false
# retention = "24h"             # these five fall back to the top-level values when left out
# tombstone_retention = "7d"
# release_statuses = [408, 425, 429, 502, 503, 504]
# fingerprint_headers = ["x-api-version"]
# fingerprint_ignore = ["/metadata/request_id"]
"#;

/// A config file in its own temporary directory.
struct File {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn write(text: &str) -> File {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    File { _dir: dir, path }
}

fn check(text: &str) -> Result<Settings, ConfigError> {
    config::check(&write(text).path)
}

/// Checks `text` as a file, expects it refused, and returns the error after
/// asserting that it names `field` (in `field()` and in the message) and the
/// file, and that the message contains `says`.
fn refused(text: &str, field: &str, says: &str) -> ConfigError {
    let file = write(text);
    let err = match config::check(&file.path) {
        Ok(settings) => panic!("accepted: {settings:?}"),
        Err(e) => e,
    };
    let message = err.to_string();
    assert_eq!(err.field(), Some(field), "{message}");
    assert_eq!(err.file(), Some(file.path.as_path()));
    assert!(
        message.starts_with(&format!("{}: ", file.path.display())),
        "{message}"
    );
    if err.is_unknown_field() {
        // Named as `unknown field "KEY" in PARENT` (or "at top level").
        let (parent, key) = field.rsplit_once('.').unwrap_or(("", field));
        assert!(
            message.contains(&format!("unknown field \"{key}\"")),
            "{message}"
        );
        assert!(
            message.contains(&format!("in {parent};")) || parent.is_empty(),
            "{message}"
        );
    } else {
        assert!(message.contains(&format!("{field}: ")), "{message}");
    }
    assert!(
        message.contains(says),
        "{message}\n  should contain: {says}"
    );
    err
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn full_example_parses_to_the_values_it_states() {
    let s = check(FULL_EXAMPLE).unwrap();
    assert_eq!(s.listen, Some(addr("127.0.0.1:8080")));
    assert_eq!(s.upstream, Some(Uri::from_static("http://127.0.0.1:3000")));
    assert_eq!(
        s.store,
        StoreSpec::Sqlite {
            path: "idem.db".into(),
            synchronous: idem_store::SqliteSynchronous::Full,
        }
    );
    assert_eq!(s.admin, Some(addr("127.0.0.1:9090")));
    assert_eq!(s.shutdown_grace, secs(30));
    assert_eq!(s.sweep_interval, secs(60));
    assert_eq!(s.sweep_batch, 1000);

    let c = &s.idempotency;
    assert_eq!(c.key_header, HeaderName::from_static("idempotency-key"));
    assert_eq!(
        c.retention,
        Retention {
            retention: secs(24 * 3600),
            tombstone_retention: secs(7 * 24 * 3600),
            lease: secs(30),
        }
    );
    assert_eq!(c.upstream_timeout, secs(60));
    assert_eq!(c.max_request_body, 10 * 1024 * 1024);
    assert_eq!(c.max_response_body, 10 * 1024 * 1024);
    assert_eq!(c.max_buffered_bytes, 256 * 1024 * 1024);
    assert_eq!(c.request_body_timeout, secs(30));
    assert_eq!(
        c.replay_headers,
        ReplayHeaderFilter::with_extra(["x-request-id", "x-trace-*"])
    );
    assert!(!c.replay_headers.keeps("x-request-id"));
    assert!(!c.replay_headers.keeps("x-trace-parent"));
    assert!(c.replay_headers.keeps("content-type"));
    assert_eq!(
        c.release_statuses.as_slice(),
        [408, 425, 429, 502, 503, 504]
    );
    assert_eq!(
        c.fingerprint_headers,
        [HeaderName::from_static("x-api-version")]
    );
    assert!(!c.fail_open);
    assert_eq!(c.retry_after, secs(1));
    assert_eq!(&*c.instance, "gw-1");
    assert_eq!(c.scope, ScopeRule::default());
    assert_eq!(
        c.routes,
        [Route::new("/v1/charges").with_policy(Policy {
            require_key: true,
            in_flight: InFlightMode::Reject,
            upstream_dedupes: false,
            ..Policy::default()
        })]
    );
}

/// Field by field, since `IdempotencyConfig` is not `PartialEq`.
fn assert_same_idempotency(a: &IdempotencyConfig, b: &IdempotencyConfig) {
    assert_eq!(a.key_header, b.key_header);
    assert_eq!(a.routes, b.routes);
    assert_eq!(a.scope, b.scope);
    assert_eq!(a.retention, b.retention);
    assert_eq!(a.upstream_timeout, b.upstream_timeout);
    assert_eq!(a.max_request_body, b.max_request_body);
    assert_eq!(a.max_response_body, b.max_response_body);
    assert_eq!(a.replay_headers, b.replay_headers);
    assert_eq!(a.release_statuses, b.release_statuses);
    assert_eq!(a.fingerprint_headers, b.fingerprint_headers);
    assert_eq!(a.fingerprint_ignore, b.fingerprint_ignore);
    assert_eq!(a.problems, b.problems);
    assert_eq!(a.fail_open, b.fail_open);
    assert_eq!(a.retry_after, b.retry_after);
    assert_eq!(a.instance, b.instance);
}

#[test]
fn empty_file_gives_the_contracts_defaults() {
    let s = check("# nothing configured\n").unwrap();
    assert_eq!(s.listen, None);
    assert_eq!(s.upstream, None);
    assert_eq!(s.admin, None);
    assert_eq!(
        s.store,
        StoreSpec::Sqlite {
            path: "idem.db".into(),
            synchronous: idem_store::SqliteSynchronous::Full,
        }
    );
    assert_eq!(s.store.to_string(), config::DEFAULT_STORE);
    assert_eq!(s.shutdown_grace, secs(30));
    assert_eq!(s.sweep_interval, secs(60));
    assert_eq!(s.sweep_batch, 1000);
    assert_same_idempotency(&s.idempotency, &IdempotencyConfig::default());

    // The contract's numbers, stated once here so a drift is noticed.
    let c = &s.idempotency;
    assert_eq!(c.key_header.as_str(), "idempotency-key");
    assert_eq!(c.retention, Retention::default());
    assert_eq!(c.retention.retention, secs(24 * 3600));
    assert_eq!(c.retention.tombstone_retention, secs(7 * 24 * 3600));
    assert_eq!(c.retention.lease, secs(30));
    assert_eq!(c.upstream_timeout, secs(60));
    assert_eq!(c.max_request_body, 10 << 20);
    assert_eq!(c.max_response_body, 10 << 20);
    assert_eq!(
        c.release_statuses,
        ReleaseStatuses::new([408, 425, 429, 502, 503, 504])
    );
    assert_eq!(c.scope, ScopeRule::default());
    assert_eq!(c.routes, [Route::new("/")]);
    assert_eq!(c.routes[0].methods, [Method::POST, Method::PATCH]);
    assert!(!c.routes[0].policy.require_key);
    assert!(!c.fail_open);
    assert_eq!(c.retry_after, secs(1));
}

#[test]
fn settings_default_is_an_empty_file() {
    let from_file = FileConfig::default().into_settings().unwrap();
    let default = Settings::default();
    assert_eq!(from_file.store, default.store);
    assert_eq!(from_file.shutdown_grace, default.shutdown_grace);
    assert_eq!(from_file.sweep_interval, default.sweep_interval);
    assert_eq!(from_file.sweep_batch, default.sweep_batch);
    assert_same_idempotency(&from_file.idempotency, &default.idempotency);
}

#[test]
fn load_remembers_the_file_and_parse_does_not() {
    let file = write("lease = \"10s\"\n");
    let loaded = config::load(&file.path).unwrap();
    assert_eq!(loaded.file.as_deref(), Some(file.path.as_path()));
    assert_eq!(loaded.lease, Some(secs(10)));
    let parsed: FileConfig = "lease = \"10s\"\n".parse().unwrap();
    assert_eq!(parsed.file, None);
    assert_eq!(
        FileConfig {
            file: None,
            ..loaded
        },
        parsed
    );
}

#[test]
fn sizes_take_bytes_binary_and_decimal_units() {
    let s = check("max_request_body = 4096\nmax_response_body = \"512 KiB\"\n").unwrap();
    assert_eq!(s.idempotency.max_request_body, 4096);
    assert_eq!(s.idempotency.max_response_body, 512 * 1024);
    for (written, bytes) in [
        ("\"100B\"", 100),
        ("\"10KB\"", 10_000),
        ("\"10MB\"", 10_000_000),
        ("\"1GB\"", 1_000_000_000),
        ("\"10MiB\"", 10 << 20),
        ("\"1GiB\"", 1 << 30),
        ("\"2048\"", 2048),
        ("\"1.5KiB\"", 1536),
    ] {
        // A budget large enough for four of the largest body here.
        let s = check(&format!(
            "max_request_body = {written}\nmax_buffered_bytes = \"8GiB\""
        ))
        .unwrap();
        assert_eq!(s.idempotency.max_request_body, bytes, "{written}");
    }
}

#[test]
fn routes_map_onto_the_layers_routes_in_order() {
    let s = check(
        r#"
        [[routes]]
        path_prefix = "/v1/charges"
        methods = ["post", "PUT", "DELETE"]
        in_flight = { wait = "5s" }
        upstream_dedupes = true

        [[routes]]
        path_prefix = "/"
        "#,
    )
    .unwrap();
    let routes = &s.idempotency.routes;
    assert_eq!(routes.len(), 2);
    assert_eq!(
        routes[0].methods,
        [Method::POST, Method::PUT, Method::DELETE]
    );
    assert_eq!(routes[0].policy.in_flight, InFlightMode::Wait(secs(5)));
    assert!(routes[0].policy.upstream_dedupes);
    assert!(!routes[0].policy.require_key);
    assert_eq!(routes[1], Route::new("/"));
    assert_eq!(
        s.idempotency
            .route_for(&Method::POST, "/v1/charges/ch_1")
            .unwrap()
            .path_prefix,
        "/v1/charges"
    );
}

#[test]
fn scope_sources_map_onto_the_layers() {
    let trusted =
        check("[scope]\nsource = \"trusted-header\"\nheader = \"X-Tenant-Id\"\n").unwrap();
    assert_eq!(
        trusted.idempotency.scope,
        ScopeRule::new(ScopeSource::TrustedHeader {
            headers: vec!["x-tenant-id".into()]
        })
    );
    let global = check("[scope]\nsource = \"none\"\n").unwrap();
    assert_eq!(global.idempotency.scope.source, ScopeSource::Global);
    let hashed = check("[scope]\nheader = \"X-Api-Key\"\n").unwrap();
    assert_eq!(
        hashed.idempotency.scope,
        ScopeRule::new(ScopeSource::HeaderHash {
            headers: vec!["x-api-key".into()]
        })
    );
}

#[test]
fn header_names_are_lower_cased() {
    let s = check("key_header = \"X-Idempotency-Key\"\nfingerprint_headers = [\"X-Api-Version\", \"x-api-version\"]\n").unwrap();
    assert_eq!(s.idempotency.key_header.as_str(), "x-idempotency-key");
    assert_eq!(
        s.idempotency.fingerprint_headers,
        [HeaderName::from_static("x-api-version")]
    );
}

#[test]
fn memory_store_and_base_path_upstream_are_accepted() {
    let s = check("store = \"memory\"\nupstream = \"http://api.internal:3000/base\"\n").unwrap();
    assert_eq!(s.store, StoreSpec::Memory);
    assert_eq!(s.upstream.unwrap().path(), "/base");
}

// Every refusal names its field.

#[test]
fn unknown_field_is_named_with_a_suggestion_and_the_known_fields() {
    let err = refused(
        "lease = \"30s\"\nretension = \"24h\"\n",
        "retension",
        r#"unknown field "retension" at top level; did you mean "retention"? expected one of "listen", "upstream""#,
    );
    assert!(err.is_unknown_field());
    assert_eq!(err.line_column(), Some((2, 1)));
    assert!(err.to_string().contains("line 2, column 1"));
}

#[test]
fn unknown_field_in_a_route_names_the_route() {
    refused(
        "[[routes]]\npath_prefix = \"/\"\n\n[[routes]]\npath_prefix = \"/v1\"\nrequire_keys = true\n",
        "routes[1].require_keys",
        r#"unknown field "require_keys" in routes[1]; did you mean "require_key"?"#,
    );
    refused(
        "[scope]\nsorce = \"none\"\n",
        "scope.sorce",
        r#"unknown field "sorce" in scope"#,
    );
}

#[test]
fn bad_duration_names_its_path_down_to_the_wait_bound() {
    let err = refused(
        "[[routes]]\npath_prefix = \"/a\"\n[[routes]]\npath_prefix = \"/b\"\n[[routes]]\npath_prefix = \"/c\"\nin_flight = { wait = \"5x\" }\n",
        "routes[2].in_flight.wait",
        r#"routes[2].in_flight.wait: "5x" is not a duration (expected e.g. "5s", "250ms")"#,
    );
    assert_eq!(err.line_column().map(|(line, _)| line), Some(7));
    refused(
        "lease = \"thirty seconds\"",
        "lease",
        r#""thirty seconds" is not a duration"#,
    );
}

#[test]
fn duration_written_as_a_number_is_a_type_error() {
    refused(
        "upstream_timeout = 60",
        "upstream_timeout",
        r#"expected a duration such as "30s""#,
    );
}

#[test]
fn bad_size_is_refused() {
    refused(
        "max_request_body = \"10 megs\"",
        "max_request_body",
        r#"max_request_body: "10 megs" is not a size (expected e.g. "10MiB", "512KiB" or a number of bytes)"#,
    );
    refused(
        "max_response_body = -1",
        "max_response_body",
        "-1 is not a size",
    );
    refused(
        "max_response_body = 0",
        "max_response_body",
        "must be greater than 0",
    );
}

#[test]
fn bad_status_names_its_index() {
    refused(
        "release_statuses = [503, 700]",
        "release_statuses[1]",
        "release_statuses[1]: 700 is not an HTTP status (100-599)",
    );
    refused(
        "release_statuses = [70000]",
        "release_statuses[0]",
        "70000 is not an HTTP status (100-599)",
    );
    refused(
        "release_statuses = [\"503\"]",
        "release_statuses[0]",
        "expected an HTTP status code",
    );
}

#[test]
fn get_in_methods_is_refused_because_it_always_passes_through() {
    refused(
        "[[routes]]\npath_prefix = \"/\"\nmethods = [\"POST\", \"GET\"]\n",
        "routes[0].methods[1]",
        "GET cannot be covered: GET, HEAD, OPTIONS and TRACE always pass through",
    );
    refused(
        "[[routes]]\npath_prefix = \"/\"\nmethods = []\n",
        "routes[0].methods",
        "empty",
    );
}

#[test]
fn trusted_header_without_a_header_is_refused() {
    refused(
        "[scope]\nsource = \"trusted-header\"\n",
        "scope.header",
        r#"scope.header: required when scope.source = "trusted-header""#,
    );
}

#[test]
fn scope_none_with_a_header_is_refused() {
    refused(
        "[scope]\nsource = \"none\"\nheader = \"Authorization\"\n",
        "scope.header",
        r#"not allowed when scope.source = "none""#,
    );
    refused(
        "[scope]\nsource = \"tenant\"\n",
        "scope.source",
        r#"unknown value "tenant""#,
    );
}

#[test]
fn upstream_must_be_http_or_https_with_a_host() {
    let s = check("upstream = \"https://api.example.com/v1\"").unwrap();
    assert_eq!(s.upstream.unwrap().scheme_str(), Some("https"));
    refused(
        "upstream = \"ftp://files.example.com\"",
        "upstream",
        r#"scheme "ftp" is not supported"#,
    );
    refused("upstream = \"127.0.0.1:3000\"", "upstream", "has no scheme");
    refused(
        "upstream = \"http://127.0.0.1:3000/?x=1\"",
        "upstream",
        "a query string is not supported",
    );
    assert!(config::parse_upstream("https://api.example.com").is_ok());
}

#[test]
fn wait_bound_must_be_positive_and_at_most_ten_minutes() {
    refused(
        "[[routes]]\npath_prefix = \"/\"\nin_flight = { wait = \"11m\" }\n",
        "routes[0].in_flight.wait",
        "routes[0].in_flight.wait: must be greater than 0 and at most 10m (got 11m)",
    );
    refused(
        "[[routes]]\npath_prefix = \"/\"\nin_flight = { wait = \"0s\" }\n",
        "routes[0].in_flight.wait",
        "must be greater than 0",
    );
    check("[[routes]]\npath_prefix = \"/\"\nin_flight = { wait = \"10m\" }\n").unwrap();
}

#[test]
fn in_flight_wait_without_a_bound_is_explained() {
    refused(
        "[[routes]]\npath_prefix = \"/\"\nin_flight = \"wait\"\n",
        "routes[0].in_flight",
        r#"write in_flight = { wait = "5s" }"#,
    );
    refused(
        "[[routes]]\npath_prefix = \"/\"\nin_flight = {}\n",
        "routes[0].in_flight.wait",
        "required",
    );
    refused(
        "[[routes]]\npath_prefix = \"/\"\nin_flight = { wait = \"1s\", timeout = \"2s\" }\n",
        "routes[0].in_flight.timeout",
        r#"unknown field "timeout" in routes[0].in_flight; expected "wait""#,
    );
}

#[test]
fn toml_syntax_error_gives_line_and_column() {
    let file = write("listen = \"127.0.0.1:8080\"\n\nlease = 30s\n");
    let err = config::check(&file.path).unwrap_err();
    assert!(err.is_syntax());
    assert_eq!(err.field(), None);
    assert_eq!(err.line_column().map(|(line, _)| line), Some(3));
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("{}: line 3, column ", file.path.display())),
        "{message}"
    );
    assert!(message.contains("TOML syntax error"), "{message}");
}

#[test]
fn duplicate_route_is_refused_and_first_match_shadowing_is_not() {
    refused(
        "[[routes]]\npath_prefix = \"/v1\"\nmethods = [\"POST\"]\n[[routes]]\npath_prefix = \"/v1\"\nmethods = [\"PATCH\", \"POST\"]\n",
        "routes[1]",
        r#"path_prefix "/v1" with method POST is already covered by routes[0]"#,
    );
    // Same prefix, other methods: fine. A broader route first: fine too
    // (first match wins; ordering is the operator's call).
    check("[[routes]]\npath_prefix = \"/v1\"\nmethods = [\"POST\"]\n[[routes]]\npath_prefix = \"/v1\"\nmethods = [\"PATCH\"]\n")
        .unwrap();
    check("[[routes]]\npath_prefix = \"/\"\n[[routes]]\npath_prefix = \"/v1\"\n").unwrap();
}

#[test]
fn route_needs_a_path_prefix_starting_with_a_slash() {
    refused(
        "[[routes]]\nrequire_key = true\n",
        "routes[0].path_prefix",
        "required",
    );
    refused(
        "[[routes]]\npath_prefix = \"v1/charges\"\n",
        "routes[0].path_prefix",
        r#"must start with "/""#,
    );
    refused("routes = []", "routes", "empty");
}

#[test]
fn lease_must_be_at_least_a_second() {
    refused(
        "lease = \"500ms\"",
        "lease",
        "lease: must be at least 1s (got 500ms)",
    );
    refused("retention = \"0s\"", "retention", "must be greater than 0");
    check("tombstone_retention = \"0s\"\nlease = \"1s\"\n").unwrap();
}

#[test]
fn other_malformed_values_name_their_field() {
    refused(
        "listen = \"localhost:8080\"",
        "listen",
        "is not a socket address",
    );
    refused("admin = \"127.0.0.1\"", "admin", "is not a socket address");
    refused("store = \"mysql://db\"", "store", "unknown store");
    refused(
        "key_header = \"Idempotency Key\"",
        "key_header",
        "is not a valid header name",
    );
    refused(
        "replay_header_deny = [\"x-*-id\"]",
        "replay_header_deny[0]",
        "only allowed at the end",
    );
    refused(
        "replay_header_deny = [\"*\"]",
        "replay_header_deny[0]",
        "would deny every header",
    );
    refused("sweep_batch = 0", "sweep_batch", "must be greater than 0");
    refused("fail_open = \"yes\"", "fail_open", "expected a boolean");
    refused(
        "listen = \"127.0.0.1:8080\"\nadmin = \"127.0.0.1:8080\"\n",
        "admin",
        "also `listen`",
    );
}

#[test]
fn unreadable_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let err = config::check(&path).unwrap_err();
    assert!(err.is_io());
    assert_eq!(err.file(), Some(path.as_path()));
    assert!(err
        .to_string()
        .starts_with(&format!("{}: cannot read", path.display())));
}

#[test]
fn errors_found_after_parsing_still_name_the_file() {
    let file = write("lease = \"1ms\"");
    let err = config::load(&file.path)
        .unwrap()
        .into_settings()
        .unwrap_err();
    assert_eq!(err.file(), Some(Path::new(&file.path)));
    assert_eq!(err.line_column(), None);
}

#[test]
fn full_example_in_the_docs_is_the_one_tested_here() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
    )
    .unwrap();
    let start = docs
        .find("```toml\n")
        .expect("a toml block in docs/configuration.md")
        + "```toml\n".len();
    let example = &docs[start..start + docs[start..].find("```").unwrap()];
    assert_eq!(example.trim(), FULL_EXAMPLE.trim());
    check(example).unwrap();
}

#[test]
fn durations_and_sizes_past_their_bounds_are_refused_naming_the_field() {
    // As found: this passed --check-config, then panicked every keyed
    // request (an Instant overflow) and left its key claimed.
    refused(
        "upstream_timeout = \"500000000000y\"\n",
        "upstream_timeout",
        "must be at most 1day",
    );
    for (text, field) in [
        ("retention = \"11years\"\n", "retention"),
        (
            "tombstone_retention = \"100years\"\n",
            "tombstone_retention",
        ),
        ("lease = \"2days\"\n", "lease"),
        ("retry_after = \"2days\"\n", "retry_after"),
        ("shutdown_grace = \"2h\"\n", "shutdown_grace"),
        ("sweep_interval = \"2days\"\n", "sweep_interval"),
        ("max_request_body = \"2GiB\"\n", "max_request_body"),
        ("max_response_body = \"2GiB\"\n", "max_response_body"),
        ("max_buffered_bytes = \"65GiB\"\n", "max_buffered_bytes"),
        ("request_body_timeout = \"2h\"\n", "request_body_timeout"),
    ] {
        refused(text, field, "must be at most");
    }
}

#[test]
fn instance_names_are_checked() {
    refused("instance = \"\"\n", "instance", "must not be empty");
    refused("instance = \"gw\\n1\"\n", "instance", "control character");
    refused("instance = \" gw-1\"\n", "instance", "whitespace");
    refused(
        &format!("instance = \"{}\"\n", "g".repeat(129)),
        "instance",
        "at most 128",
    );
    refused("instance = 7\n", "instance", "instance name");
    let unnamed = check("").unwrap().idempotency.instance;
    assert!(
        unnamed.ends_with(&format!(":{}", std::process::id())),
        "{unnamed}: hostname:pid by default"
    );
}

#[test]
fn a_buffer_budget_too_small_for_one_large_request_is_refused() {
    refused(
        "max_request_body = \"10MiB\"\nmax_buffered_bytes = \"20MiB\"\n",
        "max_buffered_bytes",
        "must be at least 4 × max_request_body",
    );
    let s = check("max_request_body = \"1MiB\"\nmax_buffered_bytes = \"4MiB\"\n").unwrap();
    assert_eq!(s.idempotency.max_buffered_bytes, 4 * 1024 * 1024);
}

#[test]
fn upstream_tls_files_are_read_relative_to_the_file_and_named_when_bad() {
    let file = write("upstream = \"https://localhost:8443\"\nupstream_ca = \"ca.pem\"\nupstream_http2 = \"never\"\n");
    let dir = file.path.parent().unwrap();
    let ca = idem_testkit::tls::TestCa::new("test CA");
    std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
    let s = config::check(&file.path).unwrap();
    assert_eq!(
        s.upstream_tls.ca.as_deref(),
        Some(dir.join("ca.pem").as_path())
    );
    assert_eq!(
        s.upstream_tls.http2,
        idem_gateway::upstream_tls::UpstreamHttp2::Never
    );
    refused(
        "upstream_ca = \"missing.pem\"\n",
        "upstream_ca",
        "missing.pem",
    );
    refused(
        "upstream_client_cert = \"gateway.crt\"\n",
        "upstream_client_key",
        "required with upstream_client_cert",
    );
    refused(
        "upstream_http2 = \"sometimes\"\n",
        "upstream_http2",
        "sometimes",
    );
}

#[test]
fn the_listener_certificate_needs_its_key_and_both_must_load() {
    refused(
        "tls_cert = \"server.crt\"\n",
        "tls_key",
        "required with tls_cert",
    );
    refused(
        "tls_key = \"server.key\"\n",
        "tls_cert",
        "required with tls_key",
    );
    let file = write("tls_cert = \"server.crt\"\ntls_key = \"server.key\"\n");
    let dir = file.path.parent().unwrap();
    let ca = idem_testkit::tls::TestCa::new("test CA");
    let (cert, _) = ca.server_cert(&["localhost"]).write(dir, "server");
    // A key that is not the certificate's.
    std::fs::write(dir.join("server.key"), ca.server_cert(&["other"]).key).unwrap();
    let err = config::check(&file.path).unwrap_err();
    assert_eq!(err.field(), Some("tls_key"), "{err}");
    assert!(
        err.to_string().contains("does not go with tls_cert"),
        "{err}"
    );
    ca.server_cert(&["localhost"]).write(dir, "server");
    let s = config::check(&file.path).unwrap();
    assert_eq!(s.listen_tls.unwrap().cert, cert);
}

#[test]
fn per_route_policy_falls_back_to_the_top_level_values() {
    let s = check(
        r#"
retention = "2h"
release_statuses = [503]
fingerprint_headers = ["x-api-version"]
fingerprint_ignore = ["/nonce"]

[[routes]]
path_prefix = "/v1/quotes"
retention = "60s"
tombstone_retention = "0s"
release_statuses = [429, 503, 429]
fingerprint_headers = ["X-Tenant-Region"]
fingerprint_ignore = ["/metadata/request_id", "/items/0/client_ts"]

[[routes]]
path_prefix = "/"
"#,
    )
    .unwrap();
    let c = &s.idempotency;
    let quotes = c.effective(&c.routes[0]);
    assert_eq!(quotes.retention.retention, secs(60));
    assert_eq!(quotes.retention.tombstone_retention, secs(0));
    assert_eq!(quotes.retention.lease, c.retention.lease);
    assert_eq!(quotes.release_statuses.as_slice(), [429, 503]);
    assert_eq!(
        quotes.fingerprint_headers,
        [HeaderName::from_static("x-tenant-region")]
    );
    let ignored: Vec<&str> = quotes
        .fingerprint_ignore
        .pointers()
        .iter()
        .map(|p| p.as_str())
        .collect();
    assert_eq!(ignored, ["/metadata/request_id", "/items/0/client_ts"]);
    let rest = c.effective(&c.routes[1]);
    assert_eq!(rest.retention.retention, secs(2 * 3600));
    assert_eq!(rest.retention.tombstone_retention, secs(7 * 24 * 3600));
    assert_eq!(rest.release_statuses.as_slice(), [503]);
    assert_eq!(
        rest.fingerprint_headers,
        [HeaderName::from_static("x-api-version")]
    );
    assert_eq!(rest.fingerprint_ignore.pointers()[0].as_str(), "/nonce");
    // The proxy must keep every header some route fingerprints.
    assert_eq!(c.all_fingerprint_headers().len(), 2);
}

#[test]
fn a_bad_json_pointer_is_refused_naming_its_route_and_index() {
    let err = refused(
        "[[routes]]\npath_prefix = \"/a\"\n[[routes]]\npath_prefix = \"/b\"\nfingerprint_ignore = [\"metadata/request_id\"]\n",
        "routes[1].fingerprint_ignore[0]",
        r#"routes[1].fingerprint_ignore[0]: "metadata/request_id" is not a JSON pointer: it must start with "/""#,
    );
    assert_eq!(err.line_column().map(|(line, _)| line), Some(5));
    refused(
        "fingerprint_ignore = [\"/ok\", \"/bad~2\"]",
        "fingerprint_ignore[1]",
        r#""~" must be followed by 0 or 1"#,
    );
    refused(
        "fingerprint_ignore = [\"\"]",
        "fingerprint_ignore[0]",
        "names the whole body",
    );
    refused(
        "fingerprint_ignore = [\"#/a\"]",
        "fingerprint_ignore[0]",
        "must start with",
    );
    refused(
        "fingerprint_ignore = \"/a\"",
        "fingerprint_ignore",
        "an array of JSON pointer",
    );
}

#[test]
fn per_route_windows_and_statuses_are_checked_like_the_top_level_ones() {
    refused(
        "[[routes]]\npath_prefix = \"/\"\nretention = \"0s\"\n",
        "routes[0].retention",
        "must be greater than 0",
    );
    refused(
        "[[routes]]\npath_prefix = \"/\"\ntombstone_retention = \"100years\"\n",
        "routes[0].tombstone_retention",
        "must be at most",
    );
    refused(
        "[[routes]]\npath_prefix = \"/\"\nrelease_statuses = [503, 700]\n",
        "routes[0].release_statuses[1]",
        "700 is not an HTTP status (100-599)",
    );
    refused(
        "[[routes]]\npath_prefix = \"/\"\nfingerprint_headers = [\"bad header\"]\n",
        "routes[0].fingerprint_headers[0]",
        "is not a valid header name",
    );
}

#[test]
fn publishing_options_are_checked() {
    let s = check("").unwrap();
    assert_eq!(s.policy_path.as_deref(), Some("/.well-known/idempotency"));
    assert_eq!(s.idempotency.problems, idem_core::ProblemFormat::default());
    let s = check("publish_policy = false").unwrap();
    assert_eq!(s.policy_path, None);
    let s = check(
        "policy_path = \"/idempotency.json\"\nproblem_profile = \"stripe\"\nproblem_type_base = \"https://api.example.com/errors/\"\ndocs_url = \"https://api.example.com/docs\"\n",
    )
    .unwrap();
    assert_eq!(s.policy_path.as_deref(), Some("/idempotency.json"));
    assert_eq!(
        s.idempotency.problems.profile,
        idem_core::ProblemProfile::Stripe
    );
    assert_eq!(
        s.idempotency.problems.type_base,
        "https://api.example.com/errors/"
    );
    assert_eq!(
        s.idempotency.problems.docs_url.as_deref(),
        Some("https://api.example.com/docs")
    );
    refused(
        "publish_policy = false\npolicy_path = \"/p\"\n",
        "policy_path",
        "publish_policy = false",
    );
    refused(
        "policy_path = \"p\"",
        "policy_path",
        "must be a path in normal form",
    );
    refused(
        "policy_path = \"/a//b\"",
        "policy_path",
        "must be a path in normal form",
    );
    refused(
        "docs_url = \"/docs\"",
        "docs_url",
        "is not an absolute http:// or https:// URL",
    );
    refused(
        "problem_type_base = \"ftp://x/\"",
        "problem_type_base",
        "is not an absolute http:// or https:// URL",
    );
    refused(
        "problem_profile = \"ietf\"",
        "problem_profile",
        r#"unknown value "ietf"; expected one of "rfc9457", "stripe""#,
    );
}
