//! Tenant isolation, route bypass, header smuggling and data at rest,
//! attacked end to end: a real `idem gateway` process in front of a
//! counting upstream on 127.0.0.1 that authenticates its own way (a
//! session cookie, an API-key header, a bearer JWT signed here).
//!
//! Each test first states the attack as it was found, then what the
//! gateway does about it.

mod support;

use idem_core::scope::{Resolved, ScopeRule, ScopeSecret};
use idem_core::{IdempotencyKey, RecordId, Timestamp};
use idem_store::Store;
use idem_testkit::{reply, Seen, Upstream};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::Idem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CARD: &str = "4242424242424242";
const JWT_SECRET: &str = "a test HS256 secret that is long enough to use";

/// Who the upstream thinks is calling, by its own rules: a `session`
/// cookie, an `X-Api-Key`, or the `sub` of a bearer JWT.
fn tenant_of(seen: &Seen) -> Option<String> {
    let header = |name: &str| seen.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(cookies) = header("cookie") {
        for pair in cookies.split(';') {
            if let Some(v) = pair.trim().strip_prefix("session=") {
                return Some(format!("session:{v}"));
            }
        }
    }
    if let Some(key) = header("x-api-key") {
        return Some(format!("key:{key}"));
    }
    let token = header("authorization")?.split_whitespace().nth(1)?;
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .ok()?;
    Some(format!("sub:{}", data.claims["sub"].as_str()?))
}

/// An API that charges the caller it authenticates: 401 without a caller,
/// else 201 with the caller's name, a card number and a session token.
async fn payments_api() -> Upstream {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    Upstream::answering(|seen: Seen, _gate| async move {
        let Some(tenant) = tenant_of(&seen) else {
            return Some(reply(401, r#"{"error":"unauthorized"}"#));
        };
        let mut response = reply(
            201,
            json!({"tenant": tenant, "charge": seen.number, "card": CARD, "path": seen.path})
                .to_string(),
        );
        response.headers_mut().insert(
            "x-session-token",
            format!("secret-{}", seen.number).parse().unwrap(),
        );
        Some(response)
    })
    .await
}

/// A gateway process on a SQLite file of its own with `config` (TOML).
struct Gateway {
    idem: Idem,
    dir: tempfile::TempDir,
}

impl Gateway {
    fn start(upstream: &Upstream, config: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, config).unwrap();
        let store = format!("sqlite:{}", dir.path().join("idem.db").display());
        let idem = Idem::gateway_with_env(upstream.addr, &store, &file, env);
        Gateway { idem, dir }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("idem.db")
    }

    async fn send(&self, request: &str) -> Answer {
        exchange(self.idem.addr, request.as_bytes()).await
    }
}

/// One response, read whole from a raw HTTP/1.1 exchange.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
    fn is_replay(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
    fn assert_problem(&self, status: u16, slug: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let kind = self.json()["type"].as_str().unwrap_or("").to_owned();
        assert!(kind.ends_with(&format!("/{slug}")), "{slug}: {self:?}");
    }
}

/// Sends raw request bytes (which must say `connection: close`) and reads
/// the answer, with a deadline.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let run = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(std::time::Duration::from_secs(20), run)
        .await
        .expect("an answer within 20 s");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// A POST with `headers` (each `Name: value`) and a JSON body.
fn post(path: &str, headers: &[&str], body: &str) -> String {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nhost: api.test\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

const BODY: &str = r#"{"amount":2500,"currency":"eur"}"#;

/// The same keyed payment under a bearer `token`.
fn bearer_post(token: &str) -> String {
    post(
        "/charges",
        &[
            &format!("authorization: Bearer {token}"),
            "idempotency-key: K",
        ],
        BODY,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_sessions_never_see_each_others_keys() {
    let api = payments_api().await;

    // As found: an API that authenticates by cookie, behind the default
    // scope (a hash of Authorization). Bob used to get Alice's stored
    // response; now a keyed request without the scope credential is
    // refused and nothing reaches the API.
    let default = Gateway::start(&api, "", &[]);
    let alice = default
        .send(&post(
            "/charges",
            &["cookie: session=alice", "idempotency-key: K"],
            BODY,
        ))
        .await;
    alice.assert_problem(401, "credential-required");
    assert_eq!(alice.header("idempotency-key"), Some("K"));
    assert_eq!(api.count("/charges"), 0, "nothing was forwarded");

    // The operator names the cookie: one scope per session.
    let gw = Gateway::start(
        &api,
        "[scope]\nsource = \"cookie-hash\"\ncookie = \"session\"\n",
        &[],
    );
    let as_ = |cookie: &str, body: &str| post("/charges", &[cookie, "idempotency-key: K"], body);
    let alice = gw.send(&as_("cookie: session=alice", BODY)).await;
    assert_eq!(alice.status, 201, "{alice:?}");
    assert_eq!(alice.json()["tenant"], "session:alice");

    let bob = gw.send(&as_("cookie: session=bob", BODY)).await;
    assert_eq!(bob.status, 201, "{bob:?}");
    assert!(!bob.is_replay(), "bob must never get alice's response");
    assert_eq!(bob.json()["tenant"], "session:bob");

    // Key squatting: a different body under Alice's key tells Bob nothing.
    let carol = gw
        .send(&as_("cookie: session=carol", r#"{"amount":1}"#))
        .await;
    assert_eq!(
        carol.status, 201,
        "no 422 that reveals alice's key: {carol:?}"
    );
    assert_eq!(carol.json()["tenant"], "session:carol");
    assert_eq!(api.count("/charges"), 3);

    // Alice's retry, with another cookie beside hers, is hers.
    let retry = gw
        .send(&as_("cookie: theme=dark; session=alice", BODY))
        .await;
    assert!(retry.is_replay(), "{retry:?}");
    assert_eq!(retry.body, alice.body);
    assert_eq!(api.count("/charges"), 3);

    // No session: refused, not a shared anonymous scope.
    let anonymous = gw
        .send(&post(
            "/charges",
            &["cookie: theme=dark", "idempotency-key: K"],
            BODY,
        ))
        .await;
    anonymous.assert_problem(401, "credential-required");
    // A session cookie sent twice with two values is refused, not guessed.
    let doubled = gw
        .send(&as_("cookie: session=alice; session=bob", BODY))
        .await;
    doubled.assert_problem(401, "invalid-credential");
    assert_eq!(api.count("/charges"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_in_either_header_are_separate_tenants() {
    let api = payments_api().await;
    let gw = Gateway::start(
        &api,
        "[scope]\nheader = [\"Authorization\", \"X-Api-Key\"]\n",
        &[],
    );
    let alice = gw
        .send(&post(
            "/charges",
            &["x-api-key: key_alice", "idempotency-key: K"],
            BODY,
        ))
        .await;
    let bob = gw
        .send(&post(
            "/charges",
            &["x-api-key: key_bob", "idempotency-key: K"],
            BODY,
        ))
        .await;
    assert_eq!((alice.status, bob.status), (201, 201));
    assert!(!bob.is_replay());
    assert_eq!(bob.json()["tenant"], "key:key_bob");
    let again = gw
        .send(&post(
            "/charges",
            &["x-api-key: key_alice", "idempotency-key: K"],
            BODY,
        ))
        .await;
    assert!(again.is_replay());
    assert_eq!(again.json()["tenant"], "key:key_alice");
    assert_eq!(api.count("/charges"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_is_one_scope_whatever_the_scheme_case_or_spacing() {
    // As found: `Bearer tok_1`, `bearer tok_1` and `Bearer  tok_1` were
    // three scopes, so one logical retry executed three times.
    let api = Upstream::start().await;
    let gw = Gateway::start(&api, "", &[]);
    let mut answers = Vec::new();
    for auth in [
        "authorization: Bearer tok_1",
        "authorization: bearer tok_1",
        "authorization: Bearer  tok_1",
        "authorization: BEARER\ttok_1",
    ] {
        answers.push(
            gw.send(&post("/charges", &[auth, "idempotency-key: K"], BODY))
                .await,
        );
    }
    assert_eq!(api.count("/charges"), 1, "{answers:?}");
    assert!(answers[1..].iter().all(Answer::is_replay), "{answers:?}");
    // The token itself is still case-sensitive: another token, another tenant.
    let other = gw
        .send(&post(
            "/charges",
            &["authorization: Bearer TOK_1", "idempotency-key: K"],
            BODY,
        ))
        .await;
    assert!(!other.is_replay());
    assert_eq!(api.count("/charges"), 2);
}

fn hs256(claims: serde_json::Value) -> String {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

fn now_secs() -> i64 {
    Timestamp::now().as_millis() / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_jwt_keeps_its_tenant_and_a_bad_one_is_refused() {
    let api = payments_api().await;
    let gw = Gateway::start(
        &api,
        "[scope]\nsource = \"jwt\"\n[scope.jwt]\nclaim = \"sub\"\nhs256_secret_env = \"IDEM_TEST_JWT_SECRET\"\nissuer = \"https://auth.test\"\n",
        &[("IDEM_TEST_JWT_SECRET", JWT_SECRET)],
    );
    let gw = &gw;
    let token = |sub: &str, iat: i64| {
        hs256(json!({"sub": sub, "iss": "https://auth.test", "iat": iat, "exp": iat + 600}))
    };
    let send = |token: String| async move { gw.send(&bearer_post(&token)).await };
    let first = send(token("alice", now_secs())).await;
    assert_eq!(first.status, 201, "{first:?}");
    // The OAuth client refreshed its token between attempts.
    let refreshed = send(token("alice", now_secs() + 1)).await;
    assert!(refreshed.is_replay(), "{refreshed:?}");
    assert_eq!(refreshed.body, first.body);
    let bob = send(token("bob", now_secs())).await;
    assert!(!bob.is_replay());
    assert_eq!(api.count("/charges"), 2, "alice charged once, bob once");

    let expired = send(hs256(
        json!({"sub": "alice", "iss": "https://auth.test", "exp": now_secs() - 3600}),
    ))
    .await;
    expired.assert_problem(401, "invalid-credential");
    let wrong_issuer = send(hs256(
        json!({"sub": "alice", "iss": "https://evil.test", "exp": now_secs() + 600}),
    ))
    .await;
    wrong_issuer.assert_problem(401, "invalid-credential");
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "alice", "iss": "https://auth.test", "exp": now_secs() + 600}),
        &EncodingKey::from_secret(b"somebody else's secret, just as long as ours"),
    )
    .unwrap();
    send(forged).await.assert_problem(401, "invalid-credential");
    let anonymous = gw
        .send(&post("/charges", &["idempotency-key: K"], BODY))
        .await;
    anonymous.assert_problem(401, "credential-required");
    assert_eq!(api.count("/charges"), 2, "nothing refused was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_verify_against_a_jwks_file_of_es256_keys() {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let pair = rcgen::KeyPair::generate().unwrap();
    let signing = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&signing, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let api = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::to_string(&jsonwebtoken::jwk::JwkSet { keys: vec![jwk] }).unwrap(),
    )
    .unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[scope]\nsource = \"jwt\"\n[scope.jwt]\nclaim = \"org.id\"\nkeys = \"jwks.json\"\naudience = \"payments\"\n",
    )
    .unwrap();
    let store = format!("sqlite:{}", dir.path().join("idem.db").display());
    let gw = Idem::gateway(api.addr, &store, &config);
    let addr = gw.addr;
    let sign = |org: &str, user: &str| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(
            &header,
            &json!({"sub": user, "org": {"id": org}, "aud": "payments", "exp": now_secs() + 600}),
            &signing,
        )
        .unwrap()
    };
    let send = |token: String| async move { exchange(addr, bearer_post(&token).as_bytes()).await };
    assert_eq!(send(sign("acme", "ann")).await.status, 201);
    // Another user of the same organisation is the same tenant.
    assert!(send(sign("acme", "bert")).await.is_replay());
    assert!(!send(sign("globex", "ann")).await.is_replay());
    assert_eq!(api.count("/charges"), 2);
    // An HS256 token (the classic algorithm confusion) is refused.
    send(hs256(
        json!({"org": {"id": "acme"}, "aud": "payments", "exp": now_secs() + 600}),
    ))
    .await
    .assert_problem(401, "invalid-credential");
    assert_eq!(api.count("/charges"), 2);
}

fn check_config(text: &str, files: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["gateway", "--check-config"])
        .arg(&path)
        .env_remove("IDEM_TEST_UNSET_SECRET")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A file beside the configuration: name and content.
type File<'a> = (&'a str, &'a str);

#[test]
fn check_config_refuses_a_scope_that_cannot_work_naming_the_field() {
    let cases: [(&str, &[File<'_>], &str); 6] = [
        ("[scope]\nsource = \"cookie-hash\"\n", &[], "scope.cookie: required"),
        (
            "[scope]\nsource = \"jwt\"\n[scope.jwt]\nkeys = \"jwks.json\"\n",
            &[("jwks.json", "{not json")],
            "scope.jwt.keys",
        ),
        (
            "[scope]\nsource = \"jwt\"\n[scope.jwt]\nkeys = \"jwks.json\"\n",
            &[("jwks.json", r#"{"keys":[{"kty":"oct","alg":"HS256","k":"c2VjcmV0"}]}"#)],
            "scope.jwt.keys: key 0",
        ),
        (
            "[scope]\nsource = \"jwt\"\n[scope.jwt]\nhs256_secret_env = \"IDEM_TEST_UNSET_SECRET\"\n",
            &[],
            "scope.jwt.hs256_secret_env: environment variable IDEM_TEST_UNSET_SECRET is not set",
        ),
        (
            "[scope]\nsecret_env = \"IDEM_TEST_UNSET_SECRET\"\n",
            &[],
            "scope.secret_env",
        ),
        ("[scope]\nanonymous = \"maybe\"\n", &[], "scope.anonymous"),
    ];
    for (text, files, expected) in cases {
        let (ok, stderr) = check_config(text, files);
        assert!(!ok, "{text} passed --check-config");
        assert!(
            stderr.contains(expected),
            "{text}: expected {expected:?} in {stderr}"
        );
    }
    let (ok, stderr) = check_config("[[routes]]\npath_prefix = \"/v1//charges\"\n", &[]);
    assert!(!ok && stderr.contains("routes[0].path_prefix"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_cannot_slip_past_a_route_that_requires_a_key() {
    let api = Upstream::start().await;
    let gw = Gateway::start(
        &api,
        "[[routes]]\npath_prefix = \"/v1/charges\"\nrequire_key = true\n\n[[routes]]\npath_prefix = \"/\"\n",
        &[],
    );
    let auth = "authorization: Bearer t";
    // As found: each of these reached the upstream without a key.
    for path in [
        "/v1//charges",
        "/v1/./charges",
        "/v1/%63harges",
        "/v1/x/../charges",
        "/v1/%2e/charges",
    ] {
        let answer = gw.send(&post(path, &[auth], BODY)).await;
        answer.assert_problem(400, "missing-key");
    }
    for path in ["/v1/charges;x", "/v1/charges%2F1", "/v1%2Fcharges"] {
        let answer = gw
            .send(&post(path, &[auth, "idempotency-key: P"], BODY))
            .await;
        answer.assert_problem(400, "ambiguous-path");
    }
    assert_eq!(
        api.total(),
        0,
        "nothing reached the upstream: {:?}",
        api.seen()
    );

    // A keyed request is forwarded on the path it was matched on, and its
    // retry on the plain path is the same request.
    let first = gw
        .send(&post(
            "/v1//./charges?x=1",
            &[auth, "idempotency-key: N"],
            BODY,
        ))
        .await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(api.last_seen("/v1/charges?x=1").path, "/v1/charges?x=1");
    let retry = gw
        .send(&post(
            "/v1/charges?x=1",
            &[auth, "idempotency-key: N"],
            BODY,
        ))
        .await;
    assert!(retry.is_replay(), "{retry:?}");
    assert_eq!(api.total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_strip_the_key_or_the_credential() {
    let api = Upstream::start().await;
    let gw = Gateway::start(&api, "", &[]);
    let answer = gw
        .send(&post(
            "/charges",
            &[
                "authorization: Bearer alice",
                "idempotency-key: C1",
                "x-hop: gone",
                "connection: keep-alive, Idempotency-Key, Authorization, Content-Type, x-hop",
            ],
            BODY,
        ))
        .await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let seen = api.last_seen("/charges");
    assert_eq!(seen.headers["idempotency-key"], "C1", "{:?}", seen.headers);
    assert_eq!(seen.headers["authorization"], "Bearer alice");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert!(
        seen.headers.get("x-hop").is_none(),
        "other named headers still go"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_the_gateways_own_unless_trusted() {
    let api = Upstream::start().await;
    let spoofed = [
        "authorization: Bearer a",
        "x-forwarded-for: 10.9.9.9",
        "x-forwarded-host: evil.example",
        "x-forwarded-proto: https",
        "forwarded: for=10.9.9.9;host=evil.example",
        "x-real-ip: 10.9.9.9",
    ];
    let gw = Gateway::start(&api, "", &[]);
    gw.send(&post("/charges", &spoofed, BODY)).await;
    let h = api.last_seen("/charges").headers;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-host"], "api.test");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(
        h.get("forwarded").is_none() && h.get("x-real-ip").is_none(),
        "{h:?}"
    );

    let trusting = Gateway::start(&api, "trust_forwarded = true\n", &[]);
    trusting.send(&post("/charges", &spoofed, BODY)).await;
    let h = api.last_seen("/charges").headers;
    assert_eq!(h["x-forwarded-for"], "10.9.9.9, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "10.9.9.9");
    assert_eq!(
        h["x-forwarded-host"], "api.test",
        "the host is always the gateway's reading"
    );
}

/// Sends one HTTP/2 (prior knowledge) POST and returns its status, or the
/// error when the server does not speak h2c.
async fn h2c_post(addr: SocketAddr, headers: &[(&str, &str)]) -> Result<u16, hyper::Error> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(connection);
    let mut request = http::Request::post(format!("http://h2.test:{}/charges", addr.port()));
    for (n, v) in headers {
        request = request.header(*n, *v);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            BODY.as_bytes(),
        )))
        .unwrap();
    Ok(sender.send_request(request).await?.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_http2_only_when_asked_and_its_authority_is_the_forwarded_host() {
    let api = Upstream::start().await;
    let gw = Gateway::start(&api, "", &[]);
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        h2c_post(gw.idem.addr, &[("authorization", "Bearer a")]),
    )
    .await
    .expect("an answer or an error in time");
    assert!(refused.is_err(), "h2c is off by default: {refused:?}");
    assert_eq!(api.total(), 0);

    let h2 = Gateway::start(&api, "h2c = true\n", &[]);
    let status = h2c_post(
        h2.idem.addr,
        &[
            ("authorization", "Bearer a"),
            ("x-forwarded-host", "evil.example"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    let h = api.last_seen("/charges").headers;
    assert_eq!(
        h["x-forwarded-host"],
        format!("h2.test:{}", h2.idem.addr.port()).as_str()
    );
}

fn file_bytes(path: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(bytes) = std::fs::read(format!("{}{suffix}", path.display())) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

const KEY_A: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
const KEY_B: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="; // 32 bytes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_are_private_and_sealed_when_a_key_is_configured() {
    let api = payments_api().await;
    let request = |key: &str| {
        post(
            "/charges",
            &["x-api-key: k_live_1", &format!("idempotency-key: {key}")],
            BODY,
        )
    };
    let scope = "[scope]\nheader = \"X-Api-Key\"\n";

    // Without encryption the files are private, but hold the plaintext:
    // the control that shows the next check can fail.
    let plain = Gateway::start(&api, scope, &[]);
    assert_eq!(plain.send(&request("E1")).await.status, 201);
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", plain.db().display()));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert!(contains(&file_bytes(&plain.db()), CARD));

    let sealed_config = format!("{scope}\n[storage]\nencryption_key_env = \"IDEM_TEST_KEY\"\n");
    let sealed = Gateway::start(&api, &sealed_config, &[("IDEM_TEST_KEY", KEY_A)]);
    let first = sealed.send(&request("E2")).await;
    assert_eq!(first.status, 201);
    let replay = sealed.send(&request("E2")).await;
    assert!(replay.is_replay());
    assert_eq!(replay.body, first.body);
    assert_eq!(
        replay.header("x-session-token"),
        first.header("x-session-token")
    );
    let bytes = file_bytes(&sealed.db());
    assert!(
        !contains(&bytes, CARD),
        "the card number is stored in clear"
    );
    assert!(
        !contains(&bytes, "secret-"),
        "the session token is stored in clear"
    );
    assert!(!contains(&bytes, "session:"), "the body is stored in clear");

    // A gateway restarted after a rotation (new key B, old key A kept for
    // reading) still replays; without key A the record is outcome-unknown,
    // never replayed as garbage and never executed again.
    let executed = api.count("/charges");
    let db = sealed.db();
    let dir = sealed.dir;
    drop(sealed.idem);
    let store = format!("sqlite:{}", db.display());
    let restart = |env: &[(&str, &str)], config: &str| {
        let file = dir.path().join("restart.toml");
        std::fs::write(&file, config).unwrap();
        Idem::gateway_with_env(api.addr, &store, &file, env)
    };
    let rotated = restart(
        &[("IDEM_TEST_KEY", KEY_B), ("IDEM_TEST_OLD_KEYS", KEY_A)],
        &format!("{sealed_config}decryption_keys_env = \"IDEM_TEST_OLD_KEYS\"\n"),
    );
    let again = exchange(rotated.addr, request("E2").as_bytes()).await;
    assert!(again.is_replay(), "{again:?}");
    assert_eq!(again.body, first.body);
    drop(rotated);
    let lost_key = restart(&[("IDEM_TEST_KEY", KEY_B)], &sealed_config);
    exchange(lost_key.addr, request("E2").as_bytes())
        .await
        .assert_problem(409, "outcome-unknown");
    drop(lost_key);
    let no_encryption = restart(&[], scope);
    exchange(no_encryption.addr, request("E2").as_bytes())
        .await
        .assert_problem(409, "outcome-unknown");
    assert_eq!(api.count("/charges"), executed, "nothing ran twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_scope_secret_the_stored_scope_cannot_be_recomputed_from_a_guess() {
    let api = Upstream::start().await;
    let secret = "a scope secret of at least sixteen bytes";
    let gw = Gateway::start(
        &api,
        "[scope]\nsecret_env = \"IDEM_TEST_SCOPE_SECRET\"\n",
        &[("IDEM_TEST_SCOPE_SECRET", secret)],
    );
    let first = gw
        .send(&post(
            "/charges",
            &[
                "authorization: Bearer sk_live_guessable",
                "idempotency-key: S",
            ],
            BODY,
        ))
        .await;
    assert_eq!(first.status, 201);
    let store = idem_store::SqliteStore::open(&gw.db(), Default::default()).unwrap();
    let id = |rule: &ScopeRule| {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", "Bearer sk_live_guessable".parse().unwrap());
        let Ok(Resolved::Scope(scope)) = rule.resolve(&headers, Timestamp::now()) else {
            panic!("no scope")
        };
        RecordId {
            scope,
            key: IdempotencyKey::parse(b"S").unwrap(),
        }
    };
    // Somebody with a copy of the store who guesses the API key: the bare
    // hash of it finds nothing.
    assert!(store
        .get(&id(&ScopeRule::default()))
        .await
        .unwrap()
        .is_none());
    let keyed = ScopeRule {
        secret: ScopeSecret::new(secret.as_bytes()),
        ..ScopeRule::default()
    };
    let record = store
        .get(&id(&keyed))
        .await
        .unwrap()
        .expect("stored under the HMAC");
    assert!(record.id.scope.as_str().starts_with("m:"));
}
