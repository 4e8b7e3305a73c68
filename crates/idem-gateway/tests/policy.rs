//! The policy as API consumers see it (issue 13): the document at
//! `/.well-known/idempotency`, per-route policy, the operator's problem
//! `type` base and `Link`, and terminal 409s told apart from retryable
//! ones. A real gateway on 127.0.0.1 in front of a real counting upstream,
//! configured from TOML text the way `idem gateway --config` reads it.

mod support;

use http::Method;
use support::{setup_from_toml, Req};

const CONFIG: &str = r#"
retention = "2h"
fingerprint_ignore = ["/nonce"]

[[routes]]
path_prefix = "/charges"
methods = ["POST"]
require_key = true
retention = "60s"
tombstone_retention = "0s"
in_flight = { wait = "5s" }
release_statuses = [503]
fingerprint_headers = ["X-Api-Version"]
fingerprint_ignore = ["/metadata/request_id"]

[[routes]]
path_prefix = "/"
"#;

#[tokio::test]
async fn the_policy_is_published_without_a_key_and_never_forwarded() {
    let (up, gw) = setup_from_toml(CONFIG).await;
    let r = gw
        .send(Req::get("/.well-known/idempotency").anonymous())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["key"]["header"], "idempotency-key");
    assert_eq!(doc["key"]["max_length"], 255);
    let charges = &doc["routes"][0];
    assert_eq!(charges["path_prefix"], "/charges");
    assert_eq!(charges["methods"], serde_json::json!(["POST"]));
    assert_eq!(charges["key_required"], true);
    assert_eq!(charges["retention_seconds"], 60);
    assert_eq!(charges["tombstone_retention_seconds"], 0);
    assert_eq!(charges["in_flight"]["mode"], "wait");
    assert_eq!(charges["in_flight"]["wait_seconds"], 5);
    assert_eq!(charges["release_statuses"], serde_json::json!([503]));
    assert_eq!(
        charges["fingerprint"]["headers"],
        serde_json::json!(["x-api-version"])
    );
    assert_eq!(
        charges["fingerprint"]["ignore"],
        serde_json::json!(["/metadata/request_id"])
    );
    // The default route falls back to the top-level values.
    let rest = &doc["routes"][1];
    assert_eq!(rest["methods"], serde_json::json!(["POST", "PATCH"]));
    assert_eq!(rest["key_required"], false);
    assert_eq!(rest["retention_seconds"], 7200);
    assert_eq!(rest["tombstone_retention_seconds"], 7 * 24 * 3600);
    assert_eq!(rest["in_flight"]["mode"], "reject");
    assert_eq!(rest["in_flight"]["retry_after_seconds"], 1);
    assert_eq!(rest["fingerprint"]["ignore"], serde_json::json!(["/nonce"]));
    assert_eq!(doc["problem_profile"], "rfc9457");
    assert_eq!(doc["docs_url"], serde_json::Value::Null);
    let problems = doc["problems"].as_array().unwrap();
    assert_eq!(problems.len(), idem_core::ProblemType::ALL.len());
    let conflict = |slug: &str| {
        problems
            .iter()
            .find(|p| p["slug"] == slug)
            .unwrap_or_else(|| panic!("{slug} in {problems:?}"))
            .clone()
    };
    assert_eq!(conflict("request-in-progress")["retryable"], true);
    assert_eq!(conflict("outcome-unknown")["retryable"], false);
    assert_eq!(conflict("outcome-unknown")["status"], 409);
    assert_eq!(
        conflict("key-reused")["type"],
        "https://idem.dev/problems/key-reused"
    );

    // HEAD, a disguised path, and a POST with a key: answered here too.
    let head = gw
        .send(Req::new(Method::HEAD, "/.well-known/idempotency").anonymous())
        .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let disguised = gw.send(Req::get("/.well-known//idempotency")).await;
    assert_eq!(disguised.json(), doc);
    let post = gw
        .send(Req::post("/.well-known/idempotency").key("k1").json("{}"))
        .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(up.total(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn publish_policy_false_leaves_the_path_to_the_upstream() {
    let (up, gw) = setup_from_toml("publish_policy = false").await;
    let r = gw.send(Req::get("/.well-known/idempotency")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    assert_eq!(up.count("/.well-known/idempotency"), 1);
}

#[tokio::test]
async fn the_policy_can_live_at_another_path() {
    let (up, gw) = setup_from_toml("policy_path = \"/api/idempotency.json\"").await;
    let r = gw.send(Req::get("/api/idempotency.json").anonymous()).await;
    assert_eq!(r.json()["version"], 1);
    let r = gw.send(Req::get("/.well-known/idempotency")).await;
    assert_eq!(r.text(), "ok");
    assert_eq!(up.total(), 1);
}

#[tokio::test]
async fn problems_use_the_operators_type_base_and_link_to_its_docs() {
    let (_up, gw) = setup_from_toml(
        r#"
problem_type_base = "https://api.example.com/errors/"
docs_url = "https://api.example.com/docs/idempotency"

[[routes]]
path_prefix = "/charges"
require_key = true
"#,
    )
    .await;
    let link = r#"<https://api.example.com/docs/idempotency>; rel="describedby""#;
    let missing = gw.send(Req::post("/charges")).await;
    let p = missing.assert_problem(400, "missing-key");
    assert_eq!(p["type"], "https://api.example.com/errors/missing-key");
    assert_eq!(missing.header("link"), Some(link));

    let first = gw
        .send(Req::post("/charges").key("k1").json(r#"{"a":1}"#))
        .await;
    assert_eq!(first.status, 201);
    assert_eq!(first.header("link"), None, "upstream answers are untouched");
    let reused = gw
        .send(Req::post("/charges").key("k1").json(r#"{"a":2}"#))
        .await;
    let p = reused.assert_problem(422, "key-reused");
    assert_eq!(p["type"], "https://api.example.com/errors/key-reused");
    assert_eq!(p["retryable"], false);
    assert_eq!(reused.header("link"), Some(link));
    let doc = gw.send(Req::get("/.well-known/idempotency")).await.json();
    assert_eq!(doc["docs_url"], "https://api.example.com/docs/idempotency");
    assert_eq!(doc["problem_type_base"], "https://api.example.com/errors/");
}

#[tokio::test]
async fn terminal_conflicts_say_so_and_carry_no_retry_after() {
    let (up, gw) = setup_from_toml(
        "upstream_timeout = \"300ms\"\nmax_response_body = 1024\nretry_after = \"2s\"\n",
    )
    .await;
    // In progress: retryable, with Retry-After.
    let slow = tokio::spawn({
        let client = gw.client.clone();
        async move { client.send(Req::post("/slow").key("slow-1")).await }
    });
    up.wait_for_count("/slow", 1).await;
    let busy = gw.send(Req::post("/slow").key("slow-1")).await;
    let p = busy.assert_problem(409, "request-in-progress");
    assert_eq!(p["retryable"], true);
    assert_eq!(busy.header("retry-after"), Some("2"));
    up.release();
    assert_eq!(slow.await.unwrap().status, 201);

    // Outcome unknown: terminal, no Retry-After.
    let timed_out = gw.send(Req::post("/hang").key("hang-1")).await;
    let p = timed_out.assert_problem(504, "upstream-timeout");
    assert_eq!(p["retryable"], true);
    let unknown = gw.send(Req::post("/hang").key("hang-1")).await;
    let p = unknown.assert_problem(409, "outcome-unknown");
    assert_eq!(p["retryable"], false);
    assert_eq!(unknown.header("retry-after"), None);

    // Not replayable: terminal, no Retry-After.
    let big = gw.send(Req::post("/big/5000").key("big-1")).await;
    assert_eq!(big.status, 201);
    let again = gw.send(Req::post("/big/5000").key("big-1")).await;
    let p = again.assert_problem(409, "response-not-replayable");
    assert_eq!(p["retryable"], false);
    assert_eq!(p["original_status"], 201);
    assert_eq!(again.header("retry-after"), None);
    assert_eq!((up.count("/hang"), up.count("/big/5000")), (1, 1));
}

#[tokio::test]
async fn fingerprint_ignore_replays_a_body_that_differs_only_in_the_ignored_field() {
    let (up, gw) = setup_from_toml(CONFIG).await;
    let send = |body: &str| {
        gw.send(
            Req::post("/charges")
                .key("order-42")
                .header("x-api-version", "2")
                .json(body),
        )
    };
    let first = send(r#"{"amount":100,"metadata":{"order":"42","request_id":"attempt-1"}}"#).await;
    assert_eq!(first.status, 201, "{}", first.text());
    // Another request id, other key order and spacing: the same request.
    let retry =
        send(r#"{ "metadata": {"request_id": "attempt-2", "order": "42"}, "amount": 100 }"#).await;
    assert!(retry.is_replay(), "{} {}", retry.status, retry.text());
    assert_eq!(retry.body, first.body);
    // Without the field at all: still the same request.
    let bare = send(r#"{"amount":100,"metadata":{"order":"42"}}"#).await;
    assert!(bare.is_replay());
    // Any other change is a different request.
    let changed =
        send(r#"{"amount":999,"metadata":{"order":"42","request_id":"attempt-3"}}"#).await;
    changed.assert_problem(422, "key-reused");
    let other_order =
        send(r#"{"amount":100,"metadata":{"order":"43","request_id":"attempt-1"}}"#).await;
    other_order.assert_problem(422, "key-reused");
    // The route's fingerprint header still counts.
    let other_version = gw
        .send(
            Req::post("/charges")
                .key("order-42")
                .header("x-api-version", "3")
                .json(r#"{"amount":100,"metadata":{"order":"42","request_id":"attempt-1"}}"#),
        )
        .await;
    other_version.assert_problem(422, "key-reused");
    // The top-level list is not this route's: `/nonce` counts here.
    let nonce = send(r#"{"amount":100,"metadata":{"order":"42"},"nonce":1}"#).await;
    nonce.assert_problem(422, "key-reused");
    assert_eq!(up.count("/charges"), 1);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_fingerprinted_as_bytes_despite_the_ignore_list() {
    let (up, gw) = setup_from_toml(CONFIG).await;
    let form = |body: &'static str| {
        Req::post("/charges")
            .key("form-1")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    assert_eq!(gw.send(form("amount=100&request_id=a")).await.status, 201);
    assert!(gw.send(form("amount=100&request_id=a")).await.is_replay());
    gw.send(form("amount=100&request_id=b"))
        .await
        .assert_problem(422, "key-reused");
    assert_eq!(up.count("/charges"), 1);
}

/// The schema in docs/contract.md, section 9 (its second JSON block).
fn documented_schema() -> serde_json::Value {
    let contract = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/contract.md"),
    )
    .unwrap();
    let section = &contract[contract.find("## 9. The published policy").unwrap()..];
    let schema = section.split("```json\n").nth(2).unwrap();
    serde_json::from_str(&schema[..schema.find("```").unwrap()]).unwrap()
}

/// Asserts `value` has every member `schema` requires, and nothing it
/// does not describe.
#[track_caller]
fn conforms(value: &serde_json::Value, schema: &serde_json::Value, at: &str) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{at} is an object"));
    for required in schema["required"].as_array().unwrap() {
        assert!(
            object.contains_key(required.as_str().unwrap()),
            "{at} lacks {required}"
        );
    }
    for member in object.keys() {
        assert!(
            schema["properties"].get(member).is_some(),
            "{at}.{member} is not in the schema"
        );
    }
}

#[tokio::test]
async fn the_published_document_matches_the_schema_in_the_contract() {
    for profile in ["rfc9457", "stripe"] {
        let (_up, gw) =
            setup_from_toml(&format!("problem_profile = \"{profile}\"\n{CONFIG}")).await;
        let doc = gw.send(Req::get("/.well-known/idempotency")).await.json();
        let schema = documented_schema();
        conforms(&doc, &schema, "document");
        conforms(&doc["key"], &schema["properties"]["key"], "key");
        let route_schema = &schema["properties"]["routes"]["items"];
        for route in doc["routes"].as_array().unwrap() {
            conforms(route, route_schema, "route");
            conforms(
                &route["fingerprint"],
                &route_schema["properties"]["fingerprint"],
                "fingerprint",
            );
        }
        for problem in doc["problems"].as_array().unwrap() {
            conforms(
                problem,
                &schema["properties"]["problems"]["items"],
                "problem",
            );
            assert_eq!(
                problem.get("stripe").is_some(),
                profile == "stripe",
                "{problem}"
            );
        }
    }
}
