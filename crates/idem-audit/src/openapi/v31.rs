//! OpenAPI 3.1 documents, read with `oas3`.

use super::{resolve, typed, Location, Media, Operation, Param, RequestBody};
use http::Method;
use oas3::spec::{
    Example, MediaTypeExamples, ObjectOrReference, Parameter, ParameterIn, RequestBody as Body,
};
use oas3::Spec;
use serde_json::Value;

/// Every operation of the document, paths in alphabetical order (as
/// `oas3` keeps them).
pub(super) fn operations(raw: &Value) -> Result<Vec<Operation>, String> {
    let doc: Spec = typed::<Spec, oas3::spec::PathItem>(raw)?;
    let mut out = Vec::new();
    for (path, item) in doc.paths.iter().flatten() {
        if let Some(reference) = &item.reference {
            return Err(format!(
                "paths.{path}: $ref `{reference}` on a path item is not supported; inline it"
            ));
        }
        for (method, op) in [
            (Method::POST, &item.post),
            (Method::PATCH, &item.patch),
            (Method::PUT, &item.put),
            (Method::DELETE, &item.delete),
        ] {
            let Some(op) = op else { continue };
            let at = format!("paths.{path}.{}", method.as_str().to_ascii_lowercase());
            let mut params: Vec<Param> = Vec::new();
            for (i, p) in item.parameters.iter().chain(&op.parameters).enumerate() {
                let p = param(raw, p, &format!("{at}.parameters[{i}]"))?;
                params.retain(|q| !(q.name == p.name && q.location == p.location));
                params.push(p);
            }
            let body = match &op.request_body {
                None => None,
                Some(ObjectOrReference::Object(b)) => Some(body(raw, b, &at)?),
                Some(ObjectOrReference::Ref { ref_path, .. }) => {
                    let b: Body = resolve(raw, ref_path, &format!("{at}.requestBody"))?;
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

fn param(raw: &Value, p: &ObjectOrReference<Parameter>, at: &str) -> Result<Param, String> {
    let p: Parameter = match p {
        ObjectOrReference::Object(p) => p.clone(),
        ObjectOrReference::Ref { ref_path, .. } => resolve(raw, ref_path, at)?,
    };
    let location = match p.location {
        ParameterIn::Path => Location::Path,
        ParameterIn::Query => Location::Query,
        ParameterIn::Header => Location::Header,
        ParameterIn::Cookie => Location::Cookie,
    };
    let example = match p.example {
        Some(v) => Some(v),
        None => first_example(raw, &p.examples, at)?.map(|(_, v)| v),
    };
    let schema = match (&p.schema, &p.content) {
        (Some(s), _) => Some(to_json(s)?),
        (None, Some(content)) => match content.values().next() {
            Some(m) => m.schema.as_ref().map(to_json).transpose()?,
            None => None,
        },
        (None, None) => None,
    };
    Ok(Param {
        name: p.name,
        location,
        required: p.required.unwrap_or(location == Location::Path),
        example,
        schema,
    })
}

fn body(raw: &Value, b: &Body, at: &str) -> Result<RequestBody, String> {
    let mut content = Vec::new();
    for (media_type, m) in &b.content {
        let place = format!("{at}.requestBody.content.{media_type}");
        let example = match &m.examples {
            Some(MediaTypeExamples::Example { example }) => {
                Some(("example".to_owned(), example.clone()))
            }
            Some(MediaTypeExamples::Examples { examples }) => first_example(raw, examples, &place)?
                .map(|(name, v)| (format!("examples.{name}"), v)),
            None => None,
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
    examples: impl IntoIterator<Item = (&'a String, &'a ObjectOrReference<Example>)>,
    at: &str,
) -> Result<Option<(String, Value)>, String> {
    for (name, example) in examples {
        let example: Example = match example {
            ObjectOrReference::Object(e) => e.clone(),
            ObjectOrReference::Ref { ref_path, .. } => {
                resolve(raw, ref_path, &format!("{at}.examples.{name}"))?
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
