//! OpenAPI 3.0 documents, read with `openapiv3`.

use super::{resolve, typed, Location, Media, Operation, Param, RequestBody};
use http::Method;
use openapiv3::{OpenAPI, Parameter, ParameterSchemaOrContent, ReferenceOr, RequestBody as Body};
use serde_json::Value;

/// Every operation of the document, in document order.
pub(super) fn operations(raw: &Value) -> Result<Vec<Operation>, String> {
    let doc: OpenAPI = typed::<OpenAPI, openapiv3::PathItem>(raw)?;
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        let item = match item {
            ReferenceOr::Item(item) => item.clone(),
            ReferenceOr::Reference { reference } => {
                resolve(raw, reference, &format!("paths.{path}"))?
            }
        };
        let shared = item.parameters.clone();
        for (method, op) in [
            (Method::POST, &item.post),
            (Method::PATCH, &item.patch),
            (Method::PUT, &item.put),
            (Method::DELETE, &item.delete),
        ] {
            let Some(op) = op else { continue };
            let at = format!("paths.{path}.{}", method.as_str().to_ascii_lowercase());
            let mut params: Vec<Param> = Vec::new();
            for (i, p) in shared.iter().chain(&op.parameters).enumerate() {
                let p = param(raw, p, &format!("{at}.parameters[{i}]"))?;
                // An operation's parameter overrides the path's of the same name and place.
                params.retain(|q| !(q.name == p.name && q.location == p.location));
                params.push(p);
            }
            let body = match &op.request_body {
                None => None,
                Some(ReferenceOr::Item(b)) => Some(body(raw, b, &at)?),
                Some(ReferenceOr::Reference { reference }) => {
                    let b: Body = resolve(raw, reference, &format!("{at}.requestBody"))?;
                    Some(body(raw, &b, &at)?)
                }
            };
            out.push(Operation {
                method,
                path: path.clone(),
                operation_id: op.operation_id.clone(),
                params,
                body,
            });
        }
    }
    Ok(out)
}

fn param(raw: &Value, p: &ReferenceOr<Parameter>, at: &str) -> Result<Param, String> {
    let p: Parameter = match p {
        ReferenceOr::Item(p) => p.clone(),
        ReferenceOr::Reference { reference } => resolve(raw, reference, at)?,
    };
    let location = match &p {
        Parameter::Query { .. } => Location::Query,
        Parameter::Header { .. } => Location::Header,
        Parameter::Path { .. } => Location::Path,
        Parameter::Cookie { .. } => Location::Cookie,
    };
    let data = p.parameter_data();
    let example = match data.example {
        Some(v) => Some(v),
        None => first_example(raw, &data.examples, at)?.map(|(_, v)| v),
    };
    let schema = match &data.format {
        ParameterSchemaOrContent::Schema(s) => Some(to_json(s)?),
        ParameterSchemaOrContent::Content(content) => match content.values().next() {
            Some(m) => m.schema.as_ref().map(to_json).transpose()?,
            None => None,
        },
    };
    Ok(Param {
        name: data.name,
        location,
        required: data.required,
        example,
        schema,
    })
}

fn body(raw: &Value, b: &Body, at: &str) -> Result<RequestBody, String> {
    let mut content = Vec::new();
    for (media_type, m) in &b.content {
        let place = format!("{at}.requestBody.content.{media_type}");
        let example = match &m.example {
            Some(v) => Some(("example".to_owned(), v.clone())),
            None => first_example(raw, &m.examples, &place)?
                .map(|(name, v)| (format!("examples.{name}"), v)),
        };
        content.push(Media {
            media_type: media_type.clone(),
            example,
            schema: m.schema.as_ref().map(to_json).transpose()?,
        });
    }
    Ok(RequestBody { content })
}

/// The first `examples` entry that has a value.
fn first_example<'a>(
    raw: &Value,
    examples: impl IntoIterator<Item = (&'a String, &'a ReferenceOr<openapiv3::Example>)>,
    at: &str,
) -> Result<Option<(String, Value)>, String> {
    for (name, example) in examples {
        let example: openapiv3::Example = match example {
            ReferenceOr::Item(e) => e.clone(),
            ReferenceOr::Reference { reference } => {
                resolve(raw, reference, &format!("{at}.examples.{name}"))?
            }
        };
        if let Some(value) = example.value {
            return Ok(Some((name.clone(), value)));
        }
    }
    Ok(None)
}

fn to_json<T: serde::Serialize>(schema: &T) -> Result<Value, String> {
    serde_json::to_value(schema).map_err(|e| format!("a schema cannot be read: {e}"))
}
