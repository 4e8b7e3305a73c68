//! Operators in control of stuck keys, end to end: three real `idem
//! gateway` processes share one PostgreSQL schema (or Redis key prefix, or
//! SQLite file); a key whose upstream timed out reads `outcome-unknown`
//! everywhere; an operator releases, resolves or purges it through one
//! gateway's admin listener (the HTTP API and the `idem keys` CLI), and a
//! retry through another gateway sees the decision. Mutations are fenced by
//! the token the operator read, and need the admin token.
//!
//! Needs the shared servers (see `shared_store/mod.rs`) for the PostgreSQL
//! and Redis cases: without them those skip, and fail under `CI=true`.

mod shared_store;
mod support;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use idem_testkit::Upstream;
use serde_json::Value;
use shared_store::*;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::Idem;

const ADMIN_TOKEN: &str = "s3cret-admin-token";

/// A gateway and its admin listener.
struct Gateway {
    idem: Idem,
    admin: SocketAddr,
}

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        r#"shutdown_grace = "1s"
admin = "127.0.0.1:0"
admin_token_env = "IDEM_TEST_ADMIN_TOKEN"
upstream_timeout = "300ms"

[scope]
source = "none"

[[routes]]
path_prefix = "/"
"#,
    )
    .unwrap();
    path
}

/// A gateway named `instance` (`IDEM_INSTANCE`), or by its default name.
fn start(upstream: SocketAddr, store: &str, config: &Path, instance: Option<&str>) -> Gateway {
    let mut env = vec![("IDEM_TEST_ADMIN_TOKEN", ADMIN_TOKEN)];
    env.extend(instance.map(|name| ("IDEM_INSTANCE", name)));
    let mut idem = Idem::gateway_with_env(upstream, store, config, &env);
    let mut line = String::new();
    idem.stdout.read_line(&mut line).unwrap();
    let admin = line
        .trim()
        .strip_prefix("admin on ")
        .unwrap_or_else(|| panic!("second line names the admin address: {line:?}"))
        .parse()
        .unwrap();
    Gateway { idem, admin }
}

fn three(upstream: SocketAddr, store: &str, config: &Path) -> Vec<Gateway> {
    std::thread::scope(|s| {
        let starting: Vec<_> = NAMES
            .iter()
            .map(|&name| s.spawn(move || start(upstream, store, config, Some(name))))
            .collect();
        starting.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

/// The names of the three gateways of [`three`].
const NAMES: [&str; 3] = ["gw-a", "gw-b", "gw-c"];

/// One admin API call: status and JSON body.
async fn admin(
    client: &HttpClient,
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path_and_query}"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("the admin listener answers within 30 s")
        .expect("the admin listener answers");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Makes `key` outcome-unknown: its request reaches the upstream, which
/// holds it past the gateway's upstream timeout.
async fn strand(client: &HttpClient, gw: &Gateway, key: &str) {
    let first = post(client, gw.idem.addr, "/charges", key).await.unwrap();
    assert_eq!(first.status, 504, "the upstream timed out: {first:?}");
}

/// The record of `key`, read through `gw`'s admin listener.
async fn record(client: &HttpClient, gw: &Gateway, key: &str) -> Value {
    let (status, listing) = admin(
        client,
        gw.admin,
        "GET",
        "/v1/keys?state=outcome-unknown&limit=500",
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{listing}");
    let listed = listing["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == key)
        .unwrap_or_else(|| panic!("{key} is listed as outcome-unknown: {listing}"))
        .clone();
    let scope = listed["scope"].as_str().unwrap();
    let (status, shown) = admin(
        client,
        gw.admin,
        "GET",
        &format!("/v1/keys/{key}?scope={scope}"),
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["state"], "outcome-unknown");
    assert_eq!(shown["token"], listed["token"]);
    shown
}

fn query(record: &Value, token: u64) -> String {
    format!("scope={}&token={token}", record["scope"].as_str().unwrap())
}

/// The whole story on one store, across three gateways.
async fn operators_decide_stuck_keys(store: &str) {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let gws = three(upstream.addr, store, &config);
    let client = http_client();
    let nonce = std::process::id();

    // ---- release: the request did not execute.
    let key = format!("slow-release-{nonce}");
    strand(&client, &gws[0], &key).await;
    let retry = post(&client, gws[1].idem.addr, "/charges", &key)
        .await
        .unwrap();
    assert_eq!(retry.problem().as_deref(), Some("outcome-unknown"));
    let rec = record(&client, &gws[2], &key).await;
    let token = rec["token"].as_u64().unwrap();
    assert_eq!(
        rec["holder"], NAMES[0],
        "the lease holder is the gateway that claimed it, read through another: {rec}"
    );

    // No token, a wrong token: 401 and nothing changes.
    let release = format!("/v1/keys/{key}/release?{}", query(&rec, token));
    for sent in [None, Some("wrong")] {
        let (status, body) = admin(&client, gws[0].admin, "POST", &release, sent, "").await;
        assert_eq!(status, 401, "{body}");
    }
    // A stale (or made-up) token: 409 record-changed, nothing changes.
    let stale = format!("/v1/keys/{key}/release?{}", query(&rec, token - 1));
    let (status, body) = admin(&client, gws[0].admin, "POST", &stale, Some(ADMIN_TOKEN), "").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["type"].as_str().unwrap().ends_with("/record-changed"),
        "{body}"
    );
    assert_eq!(record(&client, &gws[1], &key).await["token"], token);

    let (status, body) = admin(
        &client,
        gws[0].admin,
        "POST",
        &release,
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The same decision again, on the same reading: refused.
    let (status, _) = admin(
        &client,
        gws[2].admin,
        "POST",
        &release,
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 409);
    upstream.gate.release(); // from now on nothing is held
    let executed = post(&client, gws[1].idem.addr, "/charges", &key)
        .await
        .unwrap();
    assert_eq!(executed.status, 201, "the retry executes after the release");
    assert!(!executed.replayed);
    let replay = post(&client, gws[2].idem.addr, "/charges", &key)
        .await
        .unwrap();
    assert!(replay.replayed && replay.body == executed.body);
    assert_eq!(
        upstream.count_key(&key),
        2,
        "the stranded attempt and the one retry"
    );

    // ---- resolve: the request did execute; retries replay the outcome.
    let key = format!("slow-resolve-{nonce}");
    let gated = Upstream::start().await; // holds slow- keys again
    drop(gws);
    let gws = three(gated.addr, store, &config);
    strand(&client, &gws[1], &key).await;
    let rec = record(&client, &gws[0], &key).await;
    let token = rec["token"].as_u64().unwrap();
    let (status, body) = admin(
        &client,
        gws[0].admin,
        "POST",
        &format!("/v1/keys/{key}/resolve?{}", query(&rec, token)),
        Some(ADMIN_TOKEN),
        r#"{"status": 201, "headers": {"content-type": "application/json", "set-cookie": "x=1"}, "body": "{\"id\":\"ch_42\"}"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "completed");
    for gw in &gws {
        let replay = post(&client, gw.idem.addr, "/charges", &key).await.unwrap();
        assert_eq!(replay.status, 201);
        assert!(replay.replayed);
        assert_eq!(&replay.body[..], br#"{"id":"ch_42"}"#);
    }
    assert_eq!(gated.count_key(&key), 1, "never executed again");

    // ---- purge: the response goes, the tombstone stays (key-expired)...
    let (_, shown) = admin(
        &client,
        gws[2].admin,
        "GET",
        &format!("/v1/keys/{key}?{}&body=true", query(&rec, 0)),
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(shown["response"]["body"], r#"{"id":"ch_42"}"#);
    assert!(
        shown["response"]["headers"].get("set-cookie").is_none(),
        "deny-listed headers are not stored"
    );
    let token = shown["token"].as_u64().unwrap();
    let (status, body) = admin(
        &client,
        gws[2].admin,
        "DELETE",
        &format!("/v1/keys/{key}?{}", query(&shown, token)),
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "tombstone");
    assert!(
        body.get("response").is_none(),
        "nothing of the response is left: {body}"
    );
    let expired = post(&client, gws[0].idem.addr, "/charges", &key)
        .await
        .unwrap();
    assert_eq!(expired.problem().as_deref(), Some("key-expired"));
    // ...and without the tombstone the key is free.
    let token = body["token"].as_u64().unwrap();
    let (status, body) = admin(
        &client,
        gws[1].admin,
        "DELETE",
        &format!("/v1/keys/{key}?{}&tombstone=false", query(&shown, token)),
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    gated.gate.release();
    let again = post(&client, gws[0].idem.addr, "/charges", &key)
        .await
        .unwrap();
    assert_eq!(again.status, 201);
    assert_eq!(gated.count_key(&key), 2);

    // Every decision was counted.
    let metrics = get(&client, gws[0].admin, "/metrics").await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines()
            .any(|l| l.starts_with("idem_admin_actions_total")
                && l.contains("action=\"resolve\"")
                && l.contains("result=\"applied\"")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_decide_stuck_keys_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("idem.db").display());
    operators_decide_stuck_keys(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_decide_stuck_keys_on_postgres() {
    if !pg_up().await {
        return;
    }
    let schema = PgSchema::new();
    operators_decide_stuck_keys(&schema.store_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_decide_stuck_keys_on_redis() {
    if !redis_up().await {
        return;
    }
    let prefix = RedisPrefix::new(&redis_url());
    operators_decide_stuck_keys(&prefix.store_url()).await;
}

/// `idem keys`: list, get and release from the command line, with the
/// token from the environment; a wrong token is a clear error (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_keys_cli_lists_shows_and_releases() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("idem.db").display());
    let gw = start(upstream.addr, &store, &config(dir.path()), None);
    let client = http_client();
    strand(&client, &gw, "slow-cli").await;
    let admin_url = format!("http://{}", gw.admin);
    let keys = |args: &[&str], token: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_idem"))
            .arg("keys")
            .args(args)
            .args(["--admin", &admin_url])
            .env("IDEM_ADMIN_TOKEN", token)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = keys(&["list"], ADMIN_TOKEN);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("slow-cli") && stdout.contains("outcome-unknown"),
        "{stdout}"
    );
    let (code, stdout, _) = keys(&["list", "--json"], ADMIN_TOKEN);
    assert_eq!(code, Some(0));
    let listing: Value = serde_json::from_str(&stdout).unwrap();
    let rec = &listing["keys"][0];
    let scope = rec["scope"].as_str().unwrap().to_owned();
    let token = rec["token"].as_u64().unwrap().to_string();

    let (code, _, stderr) = keys(&["list"], "wrong");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("refused the token"), "{stderr}");
    let stale = (token.parse::<u64>().unwrap() + 1).to_string();
    let (code, _, stderr) = keys(
        &["release", "slow-cli", "--scope", &scope, "--token", &stale],
        ADMIN_TOKEN,
    );
    assert_eq!(code, Some(1), "a changed record is a refusal: {stderr}");
    assert!(stderr.contains("changed"), "{stderr}");

    let (code, stdout, stderr) = keys(
        &["release", "slow-cli", "--scope", &scope, "--token", &token],
        ADMIN_TOKEN,
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("absent") || stdout.contains("done"),
        "{stdout}"
    );
    upstream.gate.release();
    let executed = post(&client, gw.idem.addr, "/charges", "slow-cli")
        .await
        .unwrap();
    assert_eq!(executed.status, 201);
    let (code, stdout, _) = keys(&["get", "slow-cli", "--scope", &scope], ADMIN_TOKEN);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("completed"), "{stdout}");
    // Unnamed, a gateway's claims carry hostname:pid.
    let holder = stdout
        .lines()
        .find_map(|l| l.strip_prefix("holder"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("a holder line: {stdout}"));
    assert!(
        holder.ends_with(&format!(":{}", gw.idem.child.id())),
        "{holder:?} is hostname:pid of the gateway"
    );
}

/// The web console in a real headless Chromium: the operator enters the
/// admin token, sees the stranded key, releases it with its button, sees
/// it leave the list, and the next retry executes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_shows_a_stuck_key_and_releases_it() {
    use idem_testkit::browser::{Browser, Locator};
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("idem.db").display());
    let gw = start(
        upstream.addr,
        &store,
        &config(dir.path()),
        Some("console-gw"),
    );
    let client = http_client();
    strand(&client, &gw, "slow-console").await;

    let browser = Browser::start().await;
    let c = browser.client();
    c.goto(&format!("http://{}/", gw.admin)).await.unwrap();
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    c.find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let row = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#unknown tr[data-key='slow-console']"))
        .await
        .expect("the stranded key is listed");
    assert_eq!(
        row.find(Locator::Css("td.holder"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "console-gw",
        "the console shows who held the lease"
    );
    row.find(Locator::Css("button.release"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = c
            .find_all(Locator::Css("#unknown tr[data-key='slow-console']"))
            .await
            .unwrap();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the released key leaves the list"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = c
        .find(Locator::Css("#status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(status, "released slow-console");
    browser.close().await;

    upstream.gate.release();
    let executed = post(&client, gw.idem.addr, "/charges", "slow-console")
        .await
        .unwrap();
    assert_eq!(executed.status, 201);
    let replay = post(&client, gw.idem.addr, "/charges", "slow-console")
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(
        upstream.count_key("slow-console"),
        2,
        "the stranded attempt and one execution"
    );
}
