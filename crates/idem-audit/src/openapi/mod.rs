//! `--openapi FILE`: every unsafe operation of an OpenAPI document becomes
//! an [`Endpoint`] of one run, the same list a `--config` file gives.
//!
//! The document is JSON or YAML, OpenAPI 3.0 (read with `openapiv3`) or
//! 3.1 (read with `oas3`); neither crate reads both, so the `openapi`
//! field picks one. For each POST and PATCH operation (PUT and DELETE when
//! [`OpenApiSettings::methods`] names them):
//!
//! - the URL is the base URL joined with the path, each path parameter
//!   filled from [`OpenApiSettings::params`] (`--param NAME=VALUE`), else
//!   from the parameter's `example`, `examples` or its schema's example or
//!   default. A path parameter without any of them is an error naming the
//!   operation and the parameter. Required query, header and cookie
//!   parameters are filled the same way.
//! - the body is the request body's `example`, else its first `examples`
//!   entry, else one generated from its schema (JSON only).
//! - an operation that declares the key header as a header parameter is
//!   expected to honour it (a required one also makes `missing-key` fail
//!   when a keyless request executes); one that does not is audited the
//!   same way and reported as *unprotected*.
//!
//! ```
//! use idem_audit::openapi::{endpoints, OpenApiSettings};
//! use idem_audit::Endpoint;
//! let doc = r#"
//! openapi: 3.1.0
//! info: {title: payments, version: "1"}
//! paths:
//!   /payments:
//!     post:
//!       operationId: createPayment
//!       parameters:
//!         - {name: Idempotency-Key, in: header, schema: {type: string}}
//!       requestBody:
//!         content:
//!           application/json:
//!             schema:
//!               type: object
//!               required: [amount]
//!               properties: {amount: {type: integer, minimum: 100}}
//! "#;
//! let mut settings = OpenApiSettings::new();
//! settings.base_url = Some("http://127.0.0.1:8080".parse().unwrap());
//! let template = Endpoint::new("http://127.0.0.1:8080/".parse().unwrap());
//! let list = endpoints(doc, &settings, &template).unwrap();
//! assert_eq!(list[0].url.as_str(), "http://127.0.0.1:8080/payments");
//! assert_eq!(&list[0].body[..], br#"{"amount":100}"#);
//! assert_eq!(list[0].key_declared, Some(true));
//! ```

mod schema;
mod v30;
mod v31;

use crate::endpoint::Endpoint;
use bytes::Bytes;
use http::Method;
use serde_json::Value;
use std::path::Path;
use url::Url;

/// What `--openapi` needs besides the document.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpenApiSettings {
    /// Where the API is (`--base-url`); default: the document's first
    /// `servers` URL, when it is absolute.
    pub base_url: Option<Url>,
    /// The methods audited (`--methods`); default POST and PATCH. Only
    /// unsafe methods are accepted: POST, PATCH, PUT, DELETE.
    pub methods: Vec<Method>,
    /// Parameter values by name (`--param NAME=VALUE`), used before any
    /// example in the document.
    pub params: Vec<(String, String)>,
}

impl Default for OpenApiSettings {
    fn default() -> Self {
        OpenApiSettings::new()
    }
}

impl OpenApiSettings {
    /// POST and PATCH, no parameters, the document's server as base URL.
    pub fn new() -> Self {
        OpenApiSettings {
            base_url: None,
            methods: vec![Method::POST, Method::PATCH],
            params: Vec::new(),
        }
    }
}

/// An OpenAPI document that cannot be audited: the message names the
/// file (when it was read from one) and the field or operation at fault,
/// e.g. `api.yaml: POST /payments/{id}/refunds: path parameter `id` has
/// no example; give --param id=VALUE`.
#[derive(Debug)]
pub struct OpenApiError {
    file: Option<String>,
    message: String,
}

impl OpenApiError {
    /// What is wrong, without the file name.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The file, if the document was read from one.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }
}

impl std::fmt::Display for OpenApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{file}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for OpenApiError {}

/// Reads the document at `path` and returns one endpoint per audited
/// operation, each a copy of `template` (headers, oracles, scenarios)
/// with its own name, method, URL, body and key declaration.
pub fn load(
    path: &Path,
    settings: &OpenApiSettings,
    template: &Endpoint,
) -> Result<Vec<Endpoint>, OpenApiError> {
    let file = Some(path.display().to_string());
    let text = std::fs::read_to_string(path).map_err(|e| OpenApiError {
        file: file.clone(),
        message: format!("cannot read it: {e}"),
    })?;
    endpoints(&text, settings, template).map_err(|e| OpenApiError { file, ..e })
}

/// [`load`] on the document's text (JSON or YAML).
pub fn endpoints(
    text: &str,
    settings: &OpenApiSettings,
    template: &Endpoint,
) -> Result<Vec<Endpoint>, OpenApiError> {
    endpoints_of(text, settings, template).map_err(|message| OpenApiError {
        file: None,
        message,
    })
}

fn endpoints_of(
    text: &str,
    settings: &OpenApiSettings,
    template: &Endpoint,
) -> Result<Vec<Endpoint>, String> {
    for method in &settings.methods {
        if !matches!(
            *method,
            Method::POST | Method::PATCH | Method::PUT | Method::DELETE
        ) {
            return Err(format!(
                "--methods: {method} is not an unsafe method; audit POST, PATCH, PUT or DELETE"
            ));
        }
    }
    let raw = parse_text(text)?;
    let version = match raw.get("openapi") {
        Some(Value::String(v)) => v.clone(),
        Some(other) => return Err(format!("openapi: `{other}` is not a version string")),
        None if raw.get("swagger").is_some() => {
            return Err(
                "swagger: Swagger 2.0 is not supported; convert the document to OpenAPI 3"
                    .to_owned(),
            )
        }
        None => {
            return Err("openapi: missing; this is not an OpenAPI 3.0 or 3.1 document".to_owned())
        }
    };
    let operations = if version.starts_with("3.0") {
        v30::operations(&raw)?
    } else if version.starts_with("3.1") {
        v31::operations(&raw)?
    } else {
        return Err(format!(
            "openapi: version `{version}` is not supported; OpenAPI 3.0 and 3.1 are"
        ));
    };
    let base = match &settings.base_url {
        Some(url) => url.clone(),
        None => server_url(&raw)?,
    };
    let selected: Vec<&Operation> = operations
        .iter()
        .filter(|op| settings.methods.contains(&op.method))
        .collect();
    if selected.is_empty() {
        let names: Vec<String> = settings.methods.iter().map(ToString::to_string).collect();
        return Err(format!(
            "paths: no {} operation to audit (--methods selects PUT and DELETE too)",
            names.join(" or ")
        ));
    }
    for (name, _) in &settings.params {
        if !selected
            .iter()
            .any(|op| op.params.iter().any(|p| &p.name == name))
        {
            return Err(format!(
                "--param {name}: no audited operation has a parameter named `{name}`"
            ));
        }
    }
    selected
        .into_iter()
        .map(|op| endpoint(op, &raw, &base, settings, template))
        .collect()
}

/// JSON when it looks like JSON, else YAML (a superset).
fn parse_text(text: &str) -> Result<Value, String> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))
    } else {
        serde_norway::from_str(text).map_err(|e| format!("not valid YAML: {e}"))
    }
}

/// The first `servers` URL, variables at their defaults; it must be
/// absolute.
fn server_url(raw: &Value) -> Result<Url, String> {
    let Some(server) = raw.pointer("/servers/0") else {
        return Err(
            "servers: the document names no server; give --base-url (e.g. http://127.0.0.1:8080)"
                .to_owned(),
        );
    };
    let mut url = server
        .get("url")
        .and_then(Value::as_str)
        .ok_or("servers[0].url: missing")?
        .to_owned();
    if let Some(Value::Object(vars)) = server.get("variables") {
        for (name, var) in vars {
            if let Some(default) = var.get("default").and_then(Value::as_str) {
                url = url.replace(&format!("{{{name}}}"), default);
            }
        }
    }
    crate::config::parse_url(&url)
        .map_err(|m| format!("servers[0].url: {m}; give --base-url with the API's absolute URL"))
}

/// One operation, whichever version described it.
#[derive(Debug)]
struct Operation {
    method: Method,
    path: String,
    operation_id: Option<String>,
    params: Vec<Param>,
    body: Option<RequestBody>,
}

impl Operation {
    /// `POST /payments/{id}/refunds`: the endpoint's name, and how errors
    /// name the operation.
    fn label(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn at(&self) -> String {
        match &self.operation_id {
            Some(id) => format!("{} (operationId {id})", self.label()),
            None => self.label(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Location {
    Path,
    Query,
    Header,
    Cookie,
}

impl Location {
    fn as_str(self) -> &'static str {
        match self {
            Location::Path => "path",
            Location::Query => "query",
            Location::Header => "header",
            Location::Cookie => "cookie",
        }
    }
}

#[derive(Debug)]
struct Param {
    name: String,
    location: Location,
    required: bool,
    /// The parameter's own `example`, or its first `examples` value.
    example: Option<Value>,
    /// Its schema, as JSON (references unresolved).
    schema: Option<Value>,
}

#[derive(Debug)]
struct RequestBody {
    /// Media types in document order: (type, example, schema).
    content: Vec<Media>,
}

#[derive(Debug)]
struct Media {
    media_type: String,
    /// The first example given, and where: `example`, `examples.card`.
    example: Option<(String, Value)>,
    schema: Option<Value>,
}

/// The endpoint for one operation.
fn endpoint(
    op: &Operation,
    raw: &Value,
    base: &Url,
    settings: &OpenApiSettings,
    template: &Endpoint,
) -> Result<Endpoint, String> {
    let at = op.at();
    let mut e = template.clone();
    e.name = Some(op.label());
    e.method = op.method.clone();
    let mut origin = vec![match &op.operation_id {
        Some(id) => format!("OpenAPI operation {id}"),
        None => "OpenAPI operation".to_owned(),
    }];

    let key = op.params.iter().find(|p| {
        p.location == Location::Header && p.name.eq_ignore_ascii_case(&template.key_header)
    });
    e.key_declared = Some(key.is_some());
    if key.is_some_and(|k| k.required) {
        e.require_key = true;
    }

    let value_of = |p: &Param| -> Result<Option<String>, String> {
        if let Some((_, v)) = settings.params.iter().find(|(n, _)| n == &p.name) {
            return Ok(Some(v.clone()));
        }
        let example = match &p.example {
            Some(v) => Some(v.clone()),
            None => match &p.schema {
                Some(s) => schema::example_of(s, raw)
                    .map_err(|m| format!("{at}: parameter `{}`: {m}", p.name))?,
                None => None,
            },
        };
        Ok(example.map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        }))
    };

    let mut url = base.clone();
    let mut segments: Vec<String> = Vec::new();
    for segment in op.path.split('/').filter(|s| !s.is_empty()) {
        let mut filled = segment.to_owned();
        while let Some(start) = filled.find('{') {
            let Some(len) = filled[start..].find('}') else {
                return Err(format!("{at}: the path has an unclosed `{{`"));
            };
            let name = filled[start + 1..start + len].to_owned();
            let param = op
                .params
                .iter()
                .find(|p| p.location == Location::Path && p.name == name);
            let value = match param {
                Some(p) => value_of(p)?,
                None => settings
                    .params
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone()),
            };
            let Some(value) = value else {
                return Err(format!(
                    "{at}: path parameter `{name}` has no example; give --param {name}=VALUE"
                ));
            };
            filled.replace_range(start..=start + len, &value);
        }
        segments.push(filled);
    }
    url.path_segments_mut()
        .map_err(|()| format!("--base-url `{base}` cannot take a path"))?
        .pop_if_empty()
        .extend(segments);

    let mut cookies = Vec::new();
    for p in op.params.iter().filter(|p| p.location != Location::Path) {
        if p.location == Location::Header && key.is_some_and(|k| std::ptr::eq(k, p)) {
            continue;
        }
        let given = settings.params.iter().any(|(n, _)| n == &p.name);
        if !p.required && !given {
            continue;
        }
        let Some(value) = value_of(p)? else {
            return Err(format!(
                "{at}: required {} parameter `{}` has no example; give --param {}=VALUE",
                p.location.as_str(),
                p.name,
                p.name
            ));
        };
        match p.location {
            Location::Query => {
                url.query_pairs_mut().append_pair(&p.name, &value);
            }
            Location::Header => {
                if !e
                    .headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case(&p.name))
                {
                    crate::config::parse_header(&format!("{}: {value}", p.name))
                        .map_err(|m| format!("{at}: header parameter `{}`: {m}", p.name))?;
                    e.headers.push((p.name.clone(), value));
                }
            }
            Location::Cookie => cookies.push(format!("{}={value}", p.name)),
            Location::Path => {}
        }
    }
    if !cookies.is_empty() {
        e.headers.push(("Cookie".to_owned(), cookies.join("; ")));
    }
    e.url = url;

    if let Some(body) = &op.body {
        let (bytes, content_type, how) =
            request_body(body, raw).map_err(|m| format!("{at}: {m}"))?;
        e.body = bytes;
        origin.push(how);
        let has_type = e
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
        if !has_type && content_type != "application/json" {
            e.headers.push(("Content-Type".to_owned(), content_type));
        }
    } else {
        e.body = Bytes::new();
        origin.push("no request body".to_owned());
    }
    e.origin = Some(origin.join("; "));
    e.validate().map_err(|m| format!("{at}: {}", m.as_flag()))?;
    Ok(e)
}

/// The body to send, its content type, and where it came from.
fn request_body(body: &RequestBody, raw: &Value) -> Result<(Bytes, String, String), String> {
    let is_json = |t: &str| {
        let t = t.split(';').next().unwrap_or(t).trim().to_ascii_lowercase();
        t == "application/json" || t.ends_with("+json")
    };
    let chosen = body
        .content
        .iter()
        .find(|m| is_json(&m.media_type))
        .or_else(|| body.content.iter().find(|m| m.example.is_some()));
    let Some(media) = chosen else {
        let types: Vec<&str> = body.content.iter().map(|m| m.media_type.as_str()).collect();
        return Err(format!(
            "requestBody: no JSON media type and no example for {} (only JSON bodies can be generated from a schema)",
            if types.is_empty() { "any content".to_owned() } else { types.join(", ") }
        ));
    };
    let at = format!("requestBody.content.{}", media.media_type);
    let json = is_json(&media.media_type);
    let (value, how) = match &media.example {
        Some((place, value)) => (value.clone(), format!("body from {at}.{place}")),
        None => {
            let Some(schema) = &media.schema else {
                return Err(format!(
                    "{at}: neither an example nor a schema to build a body from"
                ));
            };
            let value = schema::generate(schema, raw).map_err(|m| format!("{at}.schema{m}"))?;
            (value, format!("body generated from {at}.schema"))
        }
    };
    let bytes = match (&value, json) {
        (Value::String(s), false) => Bytes::from(s.clone().into_bytes()),
        (value, _) => Bytes::from(serde_json::to_vec(value).map_err(|e| format!("{at}: {e}"))?),
    };
    Ok((bytes, media.media_type.clone(), how))
}

/// The object a local `$ref` (`#/components/...`) points to.
fn pointer<'a>(raw: &'a Value, reference: &str) -> Result<&'a Value, String> {
    let Some(path) = reference.strip_prefix('#') else {
        return Err(format!(
            "$ref `{reference}`: only references inside the document (#/...) are supported"
        ));
    };
    raw.pointer(path)
        .ok_or_else(|| format!("$ref `{reference}`: nothing in the document at that path"))
}

/// A typed object behind a local `$ref`, the error naming where it was.
fn resolve<T: serde::de::DeserializeOwned>(
    raw: &Value,
    reference: &str,
    at: &str,
) -> Result<T, String> {
    let value = pointer(raw, reference).map_err(|m| format!("{at}: {m}"))?;
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        format!("{at}: $ref `{reference}`: {path}: {}", e.inner())
    })
}

/// A value read as `T`, the error naming the field path below `prefix`.
fn typed_at<T: serde::de::DeserializeOwned>(raw: &Value, prefix: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(raw.clone()).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        match (prefix.is_empty(), path == "." || path.is_empty()) {
            (true, true) => inner,
            (true, false) => format!("{path}: {inner}"),
            (false, true) => format!("{prefix}: {inner}"),
            (false, false) => format!("{prefix}.{path}: {inner}"),
        }
    })
}

/// A whole document read as `D`. Both crates read `paths` through a
/// flattened map, which hides where below it an error is; so on an error
/// each path item is read again on its own as `P`, and the first one that
/// fails names the field (`paths./x.post.parameters[0]: missing field
/// `in``).
fn typed<D, P>(raw: &Value) -> Result<D, String>
where
    D: serde::de::DeserializeOwned,
    P: serde::de::DeserializeOwned,
{
    typed_at::<D>(raw, "").map_err(|whole| {
        if let Some(Value::Object(paths)) = raw.get("paths") {
            for (path, item) in paths {
                if let Err(e) = typed_at::<P>(item, &format!("paths.{path}")) {
                    return e;
                }
            }
        }
        whole
    })
}

#[cfg(test)]
mod tests;
