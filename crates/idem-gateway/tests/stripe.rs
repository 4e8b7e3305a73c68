//! `problem_profile = "stripe"` against the official stripe-python SDK
//! (from PyPI): a real gateway on 127.0.0.1 in front of a real upstream,
//! the SDK pointed at the gateway (`stripe.api_base`), run as a `python3`
//! subprocess. A key reused with other parameters must make the SDK raise
//! its own `stripe.IdempotencyError`.
//!
//! Needs `python3` with the `stripe` package (`pip install stripe`;
//! `.ci/run` installs it when missing). Without it the test fails and says so.

mod support;

use support::{Gateway, Req, TestStore};

/// The SDK's side: a charge with a key, then the same key with another
/// amount. Prints what happened and exits 0 only for `IdempotencyError`.
const SDK_SCRIPT: &str = r#"
import sys
import stripe

stripe.api_key = "sk_test_idem_fake"
stripe.api_base = sys.argv[1]
stripe.max_network_retries = 2

first = stripe.Charge.create(amount=100, currency="eur", idempotency_key="order-42")
print("first", first["execution"])
again = stripe.Charge.create(amount=100, currency="eur", idempotency_key="order-42")
print("replayed", again["execution"], again.last_response.headers.get("idempotent-replayed"))
try:
    stripe.Charge.create(amount=999, currency="eur", idempotency_key="order-42")
except stripe.IdempotencyError as e:
    print("IdempotencyError", e.http_status, e.headers.get("stripe-should-retry"), e.user_message or e._message)
    sys.exit(0)
except stripe.StripeError as e:
    print("wrong error", type(e).__name__, e.http_status, e)
    sys.exit(3)
print("no error for a reused key")
sys.exit(2)
"#;

fn python_has_stripe() -> Result<(), String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import stripe; print(stripe.VERSION)"])
        .output()
        .map_err(|e| format!("python3 cannot be run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn stripe_gateway() -> (idem_testkit::Upstream, Gateway) {
    let settings = idem_gateway::config::parse(
        "problem_profile = \"stripe\"\n[[routes]]\npath_prefix = \"/v1/charges\"\n",
    )
    .and_then(|f| f.into_settings())
    .expect("the test configuration is valid");
    let upstream = idem_testkit::Upstream::start().await;
    let gateway = Gateway::start_customised(
        upstream.uri(),
        settings.idempotency,
        TestStore::new(support::Engine::Sqlite),
        |_| {},
    )
    .await;
    (upstream, gateway)
}

#[tokio::test(flavor = "multi_thread")]
async fn stripe_python_raises_idempotency_error_for_a_key_reused_with_other_parameters() {
    if let Err(why) = python_has_stripe() {
        panic!(
            "this test runs the official stripe-python SDK, and `python3 -c 'import stripe'` failed:\n{why}\n\
             install it with `pip install stripe` (.ci/run does so when it is missing)"
        );
    }
    let (upstream, gateway) = stripe_gateway().await;
    let base = format!("http://{}", gateway.addr);
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", SDK_SCRIPT, &base])
            .output()
    });
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the SDK script finishes")
        .expect("the SDK script's thread")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status.code()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"first 1"), "{stdout}");
    assert_eq!(lines.get(1), Some(&"replayed 1 true"), "{stdout}");
    let raised = lines.get(2).copied().unwrap_or_default();
    assert!(
        raised.starts_with("IdempotencyError 400 false "),
        "{stdout}"
    );
    // The SDK did not retry the refusal, and the upstream charged once.
    assert_eq!(upstream.count("/v1/charges"), 1);
    assert_eq!(upstream.total(), 1);
}

#[tokio::test]
async fn the_stripe_profile_answers_in_stripes_shape_and_says_which_409s_to_retry() {
    let (upstream, gateway) = stripe_gateway().await;
    let charge = |key: &str, body: &str| {
        Req::post("/v1/charges")
            .key(key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
    };
    assert_eq!(gateway.send(charge("k1", "amount=100")).await.status, 201);
    let reused = gateway.send(charge("k1", "amount=999")).await;
    assert_eq!(reused.status, 400);
    assert_eq!(reused.header("content-type"), Some("application/json"));
    assert_eq!(reused.header("stripe-should-retry"), Some("false"));
    assert_eq!(reused.header("idempotency-key"), Some("k1"));
    let body = reused.json();
    assert_eq!(body["error"]["type"], "idempotency_error");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(
        body["error"]["doc_url"],
        "https://idem.dev/problems/key-reused"
    );

    // In flight: Stripe's 409 idempotency_error, which SDKs retry.
    let slow = tokio::spawn({
        let client = gateway.client.clone();
        async move {
            client
                .send(
                    Req::post("/v1/charges")
                        .key("slow-1")
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body("amount=1"),
                )
                .await
        }
    });
    support::wait_until(
        support::DEADLINE,
        "the slow charge reaches the upstream",
        || async { upstream.count_key("slow-1") == 1 },
    )
    .await;
    let busy = gateway.send(charge("slow-1", "amount=1")).await;
    assert_eq!(busy.status, 409);
    assert_eq!(busy.header("stripe-should-retry"), Some("true"));
    assert_eq!(busy.header("retry-after"), Some("1"));
    let body = busy.json();
    assert_eq!(body["error"]["type"], "idempotency_error");
    assert_eq!(body["error"]["code"], "idempotency_key_in_use");
    upstream.release();
    assert_eq!(slow.await.unwrap().status, 201);

    // A keyed request without a credential: Stripe's 401.
    let anonymous = gateway.send(charge("k2", "amount=1").anonymous()).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["error"]["type"], "invalid_request_error");
}
