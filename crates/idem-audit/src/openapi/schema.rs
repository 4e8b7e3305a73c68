//! A value from a JSON schema (OpenAPI 3.0's dialect or 3.1's JSON Schema
//! 2020-12): the schema's own example when it has one, else the smallest
//! plausible value its type and constraints allow.

use super::pointer;
use serde_json::{Map, Value};

/// How deep `$ref`s and nesting may go before the schema is called
/// recursive.
const MAX_DEPTH: usize = 32;

/// A value for `schema`. An error says where in the schema (a suffix
/// such as `.properties.amount: …`) and why.
pub(super) fn generate(schema: &Value, raw: &Value) -> Result<Value, String> {
    value(schema, raw, 0)
}

/// The schema's own example, const, default or single enum value, if any
/// (what a path parameter can be filled with: a generated id would name
/// nothing on the server).
pub(super) fn example_of(schema: &Value, raw: &Value) -> Result<Option<Value>, String> {
    let schema = deref(schema, raw, 0)?;
    Ok(given(schema))
}

/// Follows `$ref`s.
fn deref<'a>(mut schema: &'a Value, raw: &'a Value, depth: usize) -> Result<&'a Value, String> {
    let mut hops = depth;
    while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        hops += 1;
        if hops > MAX_DEPTH {
            return Err(format!(": $ref `{reference}` is recursive"));
        }
        schema = pointer(raw, reference).map_err(|m| format!(": {m}"))?;
    }
    Ok(schema)
}

/// A value the schema itself gives.
fn given(schema: &Value) -> Option<Value> {
    if let Some(v) = schema.get("example") {
        return Some(v.clone());
    }
    if let Some(Value::Array(examples)) = schema.get("examples") {
        if let Some(v) = examples.first() {
            return Some(v.clone());
        }
    }
    if let Some(v) = schema.get("const") {
        return Some(v.clone());
    }
    if let Some(v) = schema.get("default") {
        return Some(v.clone());
    }
    match schema.get("enum") {
        Some(Value::Array(values)) => values.iter().find(|v| !v.is_null()).cloned(),
        _ => None,
    }
}

fn value(schema: &Value, raw: &Value, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(": nested too deeply (a recursive schema?)".to_owned());
    }
    let schema = deref(schema, raw, depth)?;
    match schema {
        Value::Bool(true) => return Ok(Value::Object(Map::new())),
        Value::Bool(false) => return Err(": `false` admits no value".to_owned()),
        Value::Object(_) => {}
        other => return Err(format!(": `{other}` is not a schema")),
    }
    if let Some(v) = given(schema) {
        return Ok(v);
    }
    if let Some(Value::Array(parts)) = schema.get("allOf") {
        let mut merged = Map::new();
        let mut last = None;
        for (i, part) in parts.iter().enumerate() {
            match value(part, raw, depth + 1).map_err(|m| format!(".allOf[{i}]{m}"))? {
                Value::Object(members) => merged.extend(members),
                other => last = Some(other),
            }
        }
        // Own properties beside allOf join the merge.
        let own = object(schema, raw, depth)?;
        if let Value::Object(members) = own {
            merged.extend(members);
        }
        return Ok(match last {
            Some(v) if merged.is_empty() => v,
            _ => Value::Object(merged),
        });
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(choices)) = schema.get(key) {
            if let Some(first) = choices.iter().find(|c| !is_null_type(c)) {
                return value(first, raw, depth + 1).map_err(|m| format!(".{key}[0]{m}"));
            }
        }
    }
    match type_of(schema).as_deref() {
        Some("object") => object(schema, raw, depth),
        Some("array") => {
            let items = schema.get("items").cloned().unwrap_or(Value::Bool(true));
            let item = value(&items, raw, depth + 1).map_err(|m| format!(".items{m}"))?;
            let count = schema
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .clamp(1, 16);
            Ok(Value::Array(vec![item; count as usize]))
        }
        Some("string") => Ok(Value::String(string(schema))),
        Some("integer") => Ok(Value::from(number(schema, true) as i64)),
        Some("number") => Ok(serde_json::Number::from_f64(number(schema, false))
            .map(Value::Number)
            .unwrap_or(Value::from(1))),
        Some("boolean") => Ok(Value::Bool(true)),
        Some("null") => Ok(Value::Null),
        Some(other) => Err(format!(": type `{other}` is not a JSON type")),
        None if schema.get("properties").is_some() => object(schema, raw, depth),
        None => Ok(Value::Object(Map::new())),
    }
}

/// `type`, or the first non-null one of a 3.1 type list.
fn type_of(schema: &Value) -> Option<String> {
    match schema.get("type")? {
        Value::String(t) => Some(t.clone()),
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .or(Some("null"))
            .map(str::to_owned),
        _ => None,
    }
}

fn is_null_type(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

/// An object with the required properties (every property, when the
/// schema lists none as required), read-only ones left out.
fn object(schema: &Value, raw: &Value, depth: usize) -> Result<Value, String> {
    let mut out = Map::new();
    let Some(Value::Object(properties)) = schema.get("properties") else {
        return Ok(Value::Object(out));
    };
    let required: Option<Vec<&str>> = match schema.get("required") {
        Some(Value::Array(names)) => Some(names.iter().filter_map(Value::as_str).collect()),
        _ => None,
    };
    for (name, property) in properties {
        if let Some(required) = &required {
            if !required.contains(&name.as_str()) {
                continue;
            }
        }
        let resolved = deref(property, raw, depth).map_err(|m| format!(".properties.{name}{m}"))?;
        if resolved.get("readOnly") == Some(&Value::Bool(true)) {
            continue;
        }
        let v = value(property, raw, depth + 1).map_err(|m| format!(".properties.{name}{m}"))?;
        out.insert(name.clone(), v);
    }
    Ok(Value::Object(out))
}

fn string(schema: &Value) -> String {
    let by_format = match schema.get("format").and_then(Value::as_str) {
        Some("date-time") => Some("2024-01-01T00:00:00Z"),
        Some("date") => Some("2024-01-01"),
        Some("time") => Some("00:00:00Z"),
        Some("email") => Some("audit@example.com"),
        Some("uuid") => Some("00000000-0000-4000-8000-000000000000"),
        Some("uri" | "url") => Some("https://example.com/"),
        Some("hostname") => Some("example.com"),
        Some("ipv4") => Some("192.0.2.1"),
        Some("ipv6") => Some("2001:db8::1"),
        _ => None,
    };
    if let Some(s) = by_format {
        return s.to_owned();
    }
    let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    let max = schema
        .get("maxLength")
        .and_then(Value::as_u64)
        .map(|m| m as usize);
    let mut s = "string".to_owned();
    while s.len() < min {
        s.push('x');
    }
    if let Some(max) = max {
        s.truncate(max.max(min));
    }
    s
}

/// The least value at or above `minimum` (1 without one), kept under
/// `maximum`, on a `multipleOf` when there is one.
fn number(schema: &Value, integer: bool) -> f64 {
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    // 3.0 spells an exclusive bound as a boolean beside minimum; 3.1 as a number.
    let exclusive_flag = |key: &str| schema.get(key) == Some(&Value::Bool(true));
    let step = if integer { 1.0 } else { 0.5 };
    let mut n = match (bound("minimum"), bound("exclusiveMinimum")) {
        (_, Some(x)) => x + step,
        (Some(m), None) if exclusive_flag("exclusiveMinimum") => m + step,
        (Some(m), None) => m,
        (None, None) => 1.0,
    };
    if let Some(m) = bound("multipleOf").filter(|m| *m > 0.0) {
        n = (n / m).ceil() * m;
    }
    let max = match (bound("maximum"), bound("exclusiveMaximum")) {
        (_, Some(x)) => Some(x - step),
        (Some(m), None) if exclusive_flag("exclusiveMaximum") => Some(m - step),
        (m, None) => m,
    };
    if let Some(max) = max {
        n = n.min(max);
    }
    if integer {
        n.ceil()
    } else {
        n
    }
}
