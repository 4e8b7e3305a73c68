//! How single values are read from the file: durations, sizes, statuses,
//! addresses, header names, methods. Each failure message says what the
//! value is not and what would do; the field path is added by the caller.

use http::{HeaderName, Method, Uri};
use idem_core::InFlightMode;
use idem_store::StoreSpec;
use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

/// Why a value was refused.
pub(super) enum Bad {
    /// Right type, wrong value: the message says why.
    Value(String),
    /// A TOML type this value never takes (serde words it).
    Type,
}

impl From<String> for Bad {
    fn from(message: String) -> Self {
        Bad::Value(message)
    }
}

/// A value read from a TOML string or integer.
pub(super) trait Scalar: Sized {
    /// Completes "expected ..." in type errors.
    const EXPECTING: &'static str;

    fn from_str(_s: &str) -> Result<Self, Bad> {
        Err(Bad::Type)
    }

    fn from_int(_i: i64) -> Result<Self, Bad> {
        Err(Bad::Type)
    }
}

struct Val<T>(T);

impl<'de, T: Scalar> Deserialize<'de> for Val<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor(PhantomData)).map(Val)
    }
}

struct ScalarVisitor<T>(PhantomData<T>);

impl<'de, T: Scalar> Visitor<'de> for ScalarVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        T::from_str(s).map_err(|bad| match bad {
            Bad::Value(message) => E::custom(message),
            Bad::Type => E::invalid_type(Unexpected::Str(s), &self),
        })
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<T, E> {
        T::from_int(i).map_err(|bad| match bad {
            Bad::Value(message) => E::custom(message),
            Bad::Type => E::invalid_type(Unexpected::Signed(i), &self),
        })
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<T, E> {
        match i64::try_from(u) {
            Ok(i) => self.visit_i64(i),
            Err(_) => Err(E::invalid_value(Unexpected::Unsigned(u), &self)),
        }
    }
}

/// An optional scalar field.
pub(super) fn opt<'de, D: Deserializer<'de>, T: Scalar>(d: D) -> Result<Option<T>, D::Error> {
    Val::<T>::deserialize(d).map(|v| Some(v.0))
}

/// An optional list of scalars (element errors carry their index).
pub(super) fn opt_vec<'de, D: Deserializer<'de>, T: Scalar>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    d.deserialize_seq(ListVisitor(PhantomData)).map(Some)
}

/// An optional scalar or list of scalars: `header = "A"` or `header = ["A", "B"]`.
pub(super) fn opt_one_or_many<'de, D: Deserializer<'de>, T: Scalar>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    d.deserialize_any(OneOrManyVisitor(PhantomData)).map(Some)
}

struct OneOrManyVisitor<T>(PhantomData<T>);

impl<'de, T: Scalar> Visitor<'de> for OneOrManyVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} or an array of them", T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<T>, E> {
        ScalarVisitor::<T>(PhantomData)
            .visit_str(s)
            .map(|v| vec![v])
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
        ListVisitor::<T>(PhantomData).visit_seq(seq)
    }
}

struct ListVisitor<T>(PhantomData<T>);

impl<'de, T: Scalar> Visitor<'de> for ListVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an array of {}",
            T::EXPECTING
                .trim_start_matches("a ")
                .trim_start_matches("an ")
        )
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Val(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }
}

pub(super) fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    opt::<D, Size>(d).map(|s| s.map(|s| s.0))
}

pub(super) fn opt_statuses<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u16>>, D::Error> {
    opt_vec::<D, Status>(d).map(|v| v.map(|v| v.into_iter().map(|s| s.0).collect()))
}

pub(super) fn opt_deny<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    opt_vec::<D, DenyPattern>(d).map(|v| v.map(|v| v.into_iter().map(|s| s.0).collect()))
}

impl Scalar for Duration {
    const EXPECTING: &'static str = r#"a duration such as "30s" or "250ms""#;

    fn from_str(s: &str) -> Result<Self, Bad> {
        Ok(duration(s)?)
    }
}

/// A duration as the file writes it: `"30s"`, `"250ms"`, `"24h"`, `"7d"`.
pub(super) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!(r#"{s:?} is not a duration (expected e.g. "5s", "250ms")"#))
}

/// A size in bytes.
struct Size(u64);

const SIZE_HINT: &str = r#"(expected e.g. "10MiB", "512KiB" or a number of bytes)"#;

impl Scalar for Size {
    const EXPECTING: &'static str = r#"a size such as "10MiB" or a number of bytes"#;

    fn from_str(s: &str) -> Result<Self, Bad> {
        Ok(Size(size(s)?))
    }

    fn from_int(i: i64) -> Result<Self, Bad> {
        u64::try_from(i)
            .map(Size)
            .map_err(|_| Bad::Value(format!("{i} is not a size {SIZE_HINT}")))
    }
}

/// `"10MiB"`, `"512 KiB"`, `"1GB"`, `"4096"`: binary units (KiB, MiB, GiB)
/// are powers of 1024, decimal ones (KB, MB, GB) powers of 1000, as
/// `bytesize` reads them.
pub(super) fn size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size {SIZE_HINT}");
    let t = s.trim();
    // bytesize also takes fractions ("1.5MiB") but would read a sign or
    // an exponent as part of the number; a size starts with a digit.
    if !t.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(bad());
    }
    match t.parse::<bytesize::ByteSize>() {
        // bytesize saturates instead of failing on overflow.
        Ok(size) if size.as_u64() == u64::MAX => Err(format!("{s:?} is too large")),
        Ok(size) => Ok(size.as_u64()),
        Err(_) => Err(bad()),
    }
}

struct Status(u16);

impl Scalar for Status {
    const EXPECTING: &'static str = "an HTTP status code such as 503";

    fn from_int(i: i64) -> Result<Self, Bad> {
        Ok(Status(status(i)?))
    }
}

/// An HTTP status: 100 to 599.
pub(super) fn status(i: i64) -> Result<u16, String> {
    match u16::try_from(i) {
        Ok(s @ 100..=599) => Ok(s),
        _ => Err(format!("{i} is not an HTTP status (100-599)")),
    }
}

impl Scalar for SocketAddr {
    const EXPECTING: &'static str = r#"an address such as "127.0.0.1:8080""#;

    fn from_str(s: &str) -> Result<Self, Bad> {
        s.trim().parse().map_err(|_| {
            Bad::Value(format!(
                r#"{s:?} is not a socket address (expected IP:PORT, e.g. "127.0.0.1:8080" or "[::1]:8080"; host names are not resolved)"#
            ))
        })
    }
}

impl Scalar for Uri {
    const EXPECTING: &'static str = r#"a URL such as "http://127.0.0.1:3000""#;

    fn from_str(s: &str) -> Result<Self, Bad> {
        Ok(upstream(s)?)
    }
}

/// Parses and checks an upstream URI.
pub(super) fn upstream(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .trim()
        .parse()
        .map_err(|_| format!(r#"{s:?} is not a URL (expected e.g. "http://127.0.0.1:3000")"#))?;
    check_upstream(&uri, s)?;
    Ok(uri)
}

/// What the proxy can forward to: `http[s]://host[:port][/base]`. `shown` is
/// the URI as written, for messages.
pub(super) fn check_upstream(uri: &Uri, shown: &str) -> Result<(), String> {
    const EXAMPLE: &str = r#"(expected e.g. "http://127.0.0.1:3000")"#;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "{shown:?}: scheme {other:?} is not supported {EXAMPLE}"
            ))
        }
        None => return Err(format!("{shown:?} has no scheme {EXAMPLE}")),
    }
    match uri.authority() {
        Some(a) if !a.host().is_empty() => {
            if a.as_str().contains('@') {
                return Err(format!(
                    "{shown:?}: credentials in the URL are not supported"
                ));
            }
        }
        _ => return Err(format!("{shown:?} has no host {EXAMPLE}")),
    }
    if uri.query().is_some() {
        return Err(format!(
            "{shown:?}: a query string is not supported (a base path is)"
        ));
    }
    Ok(())
}

impl Scalar for StoreSpec {
    const EXPECTING: &'static str = r#"a store such as "sqlite:idem.db" or "memory""#;

    fn from_str(s: &str) -> Result<Self, Bad> {
        s.trim()
            .parse()
            .map_err(|e: idem_store::StoreSpecError| Bad::Value(e.to_string()))
    }
}

impl Scalar for HeaderName {
    const EXPECTING: &'static str = r#"a header name such as "Idempotency-Key""#;

    fn from_str(s: &str) -> Result<Self, Bad> {
        Ok(header_name(s)?)
    }
}

/// A header name, lower-cased.
pub(super) fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("{s:?} is not a valid header name"))
}

/// A replay deny-list entry: a header name, or a prefix ending in `*`.
struct DenyPattern(String);

impl Scalar for DenyPattern {
    const EXPECTING: &'static str =
        r#"a header name such as "x-request-id" or a prefix such as "x-trace-*""#;

    fn from_str(s: &str) -> Result<Self, Bad> {
        Ok(DenyPattern(deny_pattern(s)?))
    }
}

/// Checks a deny-list entry and lower-cases it.
pub(super) fn deny_pattern(s: &str) -> Result<String, String> {
    let name = s.strip_suffix('*').unwrap_or(s);
    if name.is_empty() {
        return Err(format!(
            r#"{s:?} would deny every header; name headers or prefixes (e.g. "x-trace-*")"#
        ));
    }
    if name.contains('*') {
        return Err(format!(
            r#"{s:?}: `*` is only allowed at the end, as a prefix (e.g. "x-trace-*")"#
        ));
    }
    header_name(name).map_err(|_| format!("{s:?} is not a valid header name or prefix"))?;
    Ok(s.to_ascii_lowercase())
}

/// A non-empty string, trimmed (cookie names, claims, variable names).
pub(super) struct Text(pub(super) String);

impl Scalar for Text {
    const EXPECTING: &'static str = "a non-empty string";

    fn from_str(s: &str) -> Result<Self, Bad> {
        let t = s.trim();
        if t.is_empty() {
            return Err(Bad::Value("must not be empty".into()));
        }
        Ok(Text(t.to_owned()))
    }
}

/// Longest instance name, in bytes: it is stored with every claim.
pub(super) const MAX_INSTANCE_NAME: usize = 128;

/// An instance name (`instance`, `--instance`): 1 to
/// [`MAX_INSTANCE_NAME`] bytes of printable text, no spaces at either end.
pub(super) fn instance(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_INSTANCE_NAME {
        return Err(format!("is {} bytes; at most {MAX_INSTANCE_NAME}", s.len()));
    }
    if s.trim() != s {
        return Err(format!("{s:?} starts or ends with whitespace"));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!("{s:?} holds the control character {c:?}"));
    }
    Ok(s.to_owned())
}

struct InstanceName(String);

impl Scalar for InstanceName {
    const EXPECTING: &'static str = r#"an instance name such as "gw-1""#;

    fn from_str(s: &str) -> Result<Self, Bad> {
        instance(s).map(InstanceName).map_err(Bad::Value)
    }
}

pub(super) fn opt_instance<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    opt::<D, InstanceName>(d).map(|t| t.map(|t| t.0))
}

pub(super) fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    opt::<D, Text>(d).map(|t| t.map(|t| t.0))
}

impl Scalar for usize {
    const EXPECTING: &'static str = "a positive integer such as 1000";

    fn from_int(i: i64) -> Result<Self, Bad> {
        usize::try_from(i).map_err(|_| {
            Bad::Value(format!(
                "{i} is not a count (expected a positive integer such as 1000)"
            ))
        })
    }
}

impl Scalar for Method {
    const EXPECTING: &'static str = r#"a method such as "POST""#;

    fn from_str(s: &str) -> Result<Self, Bad> {
        let method = Method::from_bytes(s.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| Bad::Value(format!("{s:?} is not an HTTP method")))?;
        check_method(&method)?;
        Ok(method)
    }
}

/// Methods that are never covered: they always pass through.
pub(super) const PASS_THROUGH: [Method; 4] =
    [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE];

/// Refuses the methods that always pass through.
pub(super) fn check_method(method: &Method) -> Result<(), String> {
    if PASS_THROUGH.contains(method) {
        return Err(format!(
            "{method} cannot be covered: GET, HEAD, OPTIONS and TRACE always pass through"
        ));
    }
    Ok(())
}

/// `in_flight = "reject"` or `in_flight = { wait = "5s" }`.
pub(super) fn opt_in_flight<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<InFlightMode>, D::Error> {
    d.deserialize_any(InFlightVisitor).map(Some)
}

struct InFlightVisitor;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitTable {
    #[serde(deserialize_with = "wait_bound")]
    wait: Duration,
}

fn wait_bound<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    Val::<Duration>::deserialize(d).map(|v| v.0)
}

const IN_FLIGHT_HINT: &str = r#"expected "reject" or { wait = "5s" }"#;

impl<'de> Visitor<'de> for InFlightVisitor {
    type Value = InFlightMode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#""reject" or { wait = "5s" }"#)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<InFlightMode, E> {
        match s {
            "reject" => Ok(InFlightMode::Reject),
            "wait" => Err(E::custom(
                r#""wait" needs a bound: write in_flight = { wait = "5s" }"#,
            )),
            _ => Err(E::custom(format!(
                "{s:?} is not an in-flight mode ({IN_FLIGHT_HINT})"
            ))),
        }
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<InFlightMode, A::Error> {
        WaitTable::deserialize(de::value::MapAccessDeserializer::new(map))
            .map(|t| InFlightMode::Wait(t.wait))
    }
}

impl Scalar for idem_core::JsonPointer {
    const EXPECTING: &'static str = r#"a JSON pointer such as "/metadata/request_id""#;

    fn from_str(s: &str) -> Result<Self, Bad> {
        idem_core::JsonPointer::parse(s).map_err(|e| Bad::Value(e.to_string()))
    }
}

/// An absolute `http://` or `https://` URL (problem `type` bases, docs).
pub(super) struct AbsoluteUrl(pub(super) String);

impl Scalar for AbsoluteUrl {
    const EXPECTING: &'static str =
        r#"an absolute URL such as "https://api.example.com/docs/idempotency""#;

    fn from_str(s: &str) -> Result<Self, Bad> {
        Ok(AbsoluteUrl(absolute_url(s)?))
    }
}

/// Checks an absolute `http(s)://host/...` URL, fit for a `Link` header
/// and a problem `type`.
pub(super) fn absolute_url(s: &str) -> Result<String, String> {
    let uri: Uri = s.parse().map_err(|_| {
        format!("{s:?} is not a URL (expected e.g. \"https://api.example.com/docs\")")
    })?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(authority)) if !authority.as_str().contains('@') => {
            Ok(s.to_owned())
        }
        _ => Err(format!(
            "{s:?} is not an absolute http:// or https:// URL with a host (and no credentials)"
        )),
    }
}

pub(super) fn opt_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    opt::<D, AbsoluteUrl>(d).map(|u| u.map(|u| u.0))
}
