//! The document → endpoints mapping, on small documents of each version.

use super::*;

fn template() -> Endpoint {
    Endpoint::new("http://placeholder.invalid/".parse().unwrap())
        .with_header("Authorization", "Bearer sk_test_a")
}

fn settings() -> OpenApiSettings {
    let mut s = OpenApiSettings::new();
    s.base_url = Some("http://127.0.0.1:8080/v1".parse().unwrap());
    s
}

const V30_YAML: &str = r##"
openapi: 3.0.3
info: {title: payments, version: "1"}
servers: [{url: "http://{host}:9000", variables: {host: {default: "127.0.0.9"}}}]
components:
  parameters:
    Key: {name: Idempotency-Key, in: header, required: true, schema: {type: string}}
  schemas:
    Money:
      type: object
      required: [amount, currency]
      properties:
        amount: {type: integer, minimum: 1, exclusiveMinimum: true}
        currency: {type: string, enum: [eur, usd]}
        note: {type: string}
paths:
  /payments:
    post:
      operationId: createPayment
      parameters: [{$ref: "#/components/parameters/Key"}]
      requestBody:
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Money"}
      responses:
        201: {description: created}
    get:
      responses: {200: {description: list}}
  /payments/{payment}/refunds:
    parameters:
      - {name: payment, in: path, required: true, schema: {type: string}, example: pay_1}
    post:
      operationId: refund
      requestBody:
        content:
          application/json:
            examples:
              full: {value: {amount: 5}}
      responses: {201: {description: ok}}
  /payments/{payment}:
    put:
      parameters:
        - {name: payment, in: path, required: true, schema: {type: string}}
      responses: {200: {description: ok}}
"##;

#[test]
fn a_3_0_yaml_document_gives_one_endpoint_per_unsafe_operation() {
    let list = endpoints(V30_YAML, &settings(), &template()).unwrap();
    let names: Vec<String> = list.iter().map(Endpoint::label).collect();
    assert_eq!(
        names,
        ["POST /payments", "POST /payments/{payment}/refunds"],
        "GET is safe and PUT needs --methods"
    );
    let pay = &list[0];
    assert_eq!(pay.url.as_str(), "http://127.0.0.1:8080/v1/payments");
    // exclusiveMinimum 1 (3.0's boolean form) gives 2; the enum gives its first value;
    // `note` is not required.
    assert_eq!(&pay.body[..], br#"{"amount":2,"currency":"eur"}"#);
    assert_eq!(pay.key_declared, Some(true));
    assert!(
        pay.require_key,
        "a required key header makes missing-key strict"
    );
    assert_eq!(
        pay.headers,
        [("Authorization".to_owned(), "Bearer sk_test_a".to_owned())]
    );
    assert!(
        pay.origin.as_deref().unwrap().contains("generated from"),
        "{:?}",
        pay.origin
    );
    let refund = &list[1];
    assert_eq!(
        refund.url.as_str(),
        "http://127.0.0.1:8080/v1/payments/pay_1/refunds"
    );
    assert_eq!(&refund.body[..], br#"{"amount":5}"#);
    assert_eq!(
        refund.key_declared,
        Some(false),
        "no key header: unprotected"
    );
    assert!(refund.origin.as_deref().unwrap().contains("examples.full"));
}

#[test]
fn methods_add_put_and_a_path_parameter_without_example_is_named() {
    let mut s = settings();
    s.methods.push(Method::PUT);
    let err = endpoints(V30_YAML, &s, &template()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "PUT /payments/{payment}: path parameter `payment` has no example; give --param payment=VALUE"
    );
    s.params.push(("payment".to_owned(), "pay 7/x".to_owned()));
    let list = endpoints(V30_YAML, &s, &template()).unwrap();
    let put = list.iter().find(|e| e.method == Method::PUT).unwrap();
    // --param wins over the example, and is encoded as one path segment.
    assert_eq!(
        put.url.as_str(),
        "http://127.0.0.1:8080/v1/payments/pay%207%2Fx"
    );
    let refund = list
        .iter()
        .find(|e| e.label().ends_with("refunds"))
        .unwrap();
    assert!(refund
        .url
        .as_str()
        .contains("/payments/pay%207%2Fx/refunds"));
}

#[test]
fn the_server_url_is_the_default_base() {
    let mut s = settings();
    s.base_url = None;
    let list = endpoints(V30_YAML, &s, &template()).unwrap();
    assert_eq!(list[0].url.as_str(), "http://127.0.0.9:9000/payments");
}

const V31_JSON: &str = r##"{
  "openapi": "3.1.0",
  "info": {"title": "t", "version": "1"},
  "paths": {
    "/orders": {
      "patch": {
        "operationId": "updateOrder",
        "parameters": [
          {"name": "idempotency-key", "in": "header", "schema": {"type": "string"}},
          {"name": "tenant", "in": "query", "required": true, "schema": {"type": "string", "examples": ["t1"]}}
        ],
        "requestBody": {"content": {"application/merge-patch+json": {"schema": {
          "type": "object",
          "properties": {
            "status": {"type": ["string", "null"], "const": "paid"},
            "items": {"type": "array", "minItems": 2, "items": {"type": "number", "exclusiveMinimum": 0}},
            "id": {"type": "string", "readOnly": true}
          }
        }}}}
      }
    }
  }
}"##;

#[test]
fn a_3_1_json_document_with_a_query_parameter_and_a_json_variant() {
    let list = endpoints(V31_JSON, &settings(), &template()).unwrap();
    assert_eq!(list.len(), 1);
    let e = &list[0];
    assert_eq!(e.method, Method::PATCH);
    assert_eq!(e.url.as_str(), "http://127.0.0.1:8080/v1/orders?tenant=t1");
    assert_eq!(
        e.key_declared,
        Some(true),
        "header names compare case-insensitively"
    );
    assert!(!e.require_key);
    let body: Value = serde_json::from_slice(&e.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "paid", "items": [0.5, 0.5]})
    );
    assert!(e.headers.contains(&(
        "Content-Type".to_owned(),
        "application/merge-patch+json".to_owned()
    )));
}

#[test]
fn broken_documents_name_the_field() {
    let err = |text: &str| {
        endpoints(text, &settings(), &template())
            .unwrap_err()
            .to_string()
    };
    assert!(
        err("openapi: 3.0.0\ninfo: [").starts_with("not valid YAML"),
        "{}",
        err("openapi: 3.0.0\ninfo: [")
    );
    assert!(err("{\"openapi\": ").starts_with("not valid JSON"));
    assert_eq!(
        err("swagger: '2.0'\n"),
        "swagger: Swagger 2.0 is not supported; convert the document to OpenAPI 3"
    );
    assert!(err("info: {}\n").starts_with("openapi: missing"));
    assert!(err("openapi: 4.0.0\n").contains("version `4.0.0` is not supported"));
    // A 3.0 document whose operation has a parameter without `in`.
    let bad = "openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths:\n  /x:\n    post:\n      parameters: [{name: a}]\n      responses: {}\n";
    let message = err(bad);
    assert!(message.starts_with("paths./x.post.parameters"), "{message}");
    let dangling = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /x:\n    post:\n      requestBody: {$ref: '#/components/requestBodies/Nope'}\n";
    let message = err(dangling);
    assert!(
        message.contains("paths./x.post.requestBody")
            && message.contains("#/components/requestBodies/Nope"),
        "{message}"
    );
    let no_ops = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /x:\n    get: {}\n";
    assert!(
        err(no_ops).starts_with("paths: no POST or PATCH operation"),
        "{}",
        err(no_ops)
    );
    let form = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /x:\n    post:\n      requestBody: {content: {multipart/form-data: {schema: {type: object}}}}\n";
    let message = err(form);
    assert!(
        message.starts_with("POST /x: requestBody: no JSON media type"),
        "{message}"
    );
    let mut s = settings();
    s.params.push(("nope".to_owned(), "1".to_owned()));
    assert!(endpoints(V31_JSON, &s, &template())
        .unwrap_err()
        .to_string()
        .starts_with("--param nope: no audited operation"));
    s.params.clear();
    s.methods = vec![Method::GET];
    assert!(endpoints(V31_JSON, &s, &template())
        .unwrap_err()
        .to_string()
        .starts_with("--methods: GET"));
}

#[test]
fn a_relative_server_needs_a_base_url() {
    let doc = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\nservers: [{url: /api}]\npaths:\n  /x:\n    post: {}\n";
    let mut s = settings();
    s.base_url = None;
    let err = endpoints(doc, &s, &template()).unwrap_err().to_string();
    assert!(
        err.starts_with("servers[0].url:") && err.contains("--base-url"),
        "{err}"
    );
}
