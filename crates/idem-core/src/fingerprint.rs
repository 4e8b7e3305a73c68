//! The request fingerprint: a versioned SHA-256 over method, path, sorted
//! query, `Content-Type`, configured extra headers and the body, with JSON
//! bodies canonicalised (RFC 8785) so a client that re-serialises its
//! payload on retry is not told it changed it.

use crate::pointer::{FingerprintIgnore, Node};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};
use std::cmp::Ordering;
use std::fmt;

/// The version of the algorithm below; stored with every record so a
/// future change can tell old fingerprints from new ones.
pub const FINGERPRINT_VERSION: u16 = 1;

/// A request's fingerprint and the algorithm version that produced it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Algorithm version.
    pub version: u16,
    /// SHA-256 digest.
    pub digest: [u8; 32],
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}:{}", self.version, hex::encode(&self.digest[..8]))
    }
}

/// What goes into a fingerprint.
#[derive(Debug, Clone, Copy)]
pub struct FingerprintInput<'a> {
    /// The request method, e.g. `POST`.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The `Content-Type` header's value.
    pub content_type: Option<&'a [u8]>,
    /// Configured extra headers: (lower-case name, value if present).
    pub extra_headers: &'a [(&'a str, Option<&'a [u8]>)],
    /// The whole request body.
    pub body: &'a [u8],
}

impl Fingerprint {
    /// Computes the current-version fingerprint.
    ///
    /// ```
    /// use idem_core::fingerprint::{Fingerprint, FingerprintInput};
    /// let input = |body: &'static [u8]| FingerprintInput {
    ///     method: "POST", path: "/charges", query: None,
    ///     content_type: Some(b"application/json"), extra_headers: &[], body,
    /// };
    /// assert_eq!(
    ///     Fingerprint::compute(&input(br#"{"amount": 100, "currency": "eur"}"#)),
    ///     Fingerprint::compute(&input(br#"{"currency":"eur","amount":1.0e2}"#)),
    /// );
    /// ```
    pub fn compute(input: &FingerprintInput<'_>) -> Fingerprint {
        Self::compute_ignoring(input, &FingerprintIgnore::default())
    }

    /// Like [`Fingerprint::compute`], with the members `ignore` names left
    /// out of a JSON body's canonical form. A body that is not JSON (not
    /// declared as JSON, or not parsing) is hashed as bytes, whatever the
    /// ignore list says. With an empty list this is exactly
    /// [`Fingerprint::compute`], and a pointer that names nothing in a body
    /// does not change its fingerprint either, so adding one to a route
    /// does not make earlier records mismatch unless their bodies had the
    /// member.
    ///
    /// ```
    /// use idem_core::fingerprint::{Fingerprint, FingerprintInput};
    /// use idem_core::pointer::{FingerprintIgnore, JsonPointer};
    /// let ignore = FingerprintIgnore::new([JsonPointer::parse("/request_id").unwrap()]);
    /// let input = |body: &'static [u8]| FingerprintInput {
    ///     method: "POST", path: "/charges", query: None,
    ///     content_type: Some(b"application/json"), extra_headers: &[], body,
    /// };
    /// let fp = |body| Fingerprint::compute_ignoring(&input(body), &ignore);
    /// assert_eq!(fp(br#"{"amount":1,"request_id":"a"}"#), fp(br#"{"amount":1,"request_id":"b"}"#));
    /// assert_ne!(fp(br#"{"amount":1,"request_id":"a"}"#), fp(br#"{"amount":2,"request_id":"a"}"#));
    /// ```
    pub fn compute_ignoring(
        input: &FingerprintInput<'_>,
        ignore: &FingerprintIgnore,
    ) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(b"idem-fingerprint-v1");
        field(&mut h, input.method.as_bytes());
        field(&mut h, input.path.as_bytes());
        let mut params: Vec<&str> = input
            .query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .collect();
        params.sort_unstable();
        h.update((params.len() as u64).to_be_bytes());
        for p in params {
            field(&mut h, p.as_bytes());
        }
        optional(&mut h, input.content_type);
        h.update((input.extra_headers.len() as u64).to_be_bytes());
        for (name, value) in input.extra_headers {
            field(&mut h, name.as_bytes());
            optional(&mut h, *value);
        }
        match canonical_json_body_ignoring(input.content_type, input.body, ignore) {
            Some(canonical) => {
                h.update(b"J");
                field(&mut h, &canonical);
            }
            None => {
                h.update(b"B");
                field(&mut h, input.body);
            }
        }
        Fingerprint {
            version: FINGERPRINT_VERSION,
            digest: h.finalize().into(),
        }
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn optional(h: &mut Sha256, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            h.update([1]);
            field(h, v);
        }
        None => h.update([0]),
    }
}

/// True for `application/json` and any `+json` media type.
pub fn is_json_media_type(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    if essence.is_ascii() {
        // Every request with a body asks this: no allocation on the way.
        let essence = essence.trim_ascii();
        let prefix = b"application/";
        let suffix = b"+json";
        return essence.eq_ignore_ascii_case(b"application/json")
            || (essence.len() >= prefix.len()
                && essence[..prefix.len()].eq_ignore_ascii_case(prefix)
                && essence[essence.len() - suffix.len()..].eq_ignore_ascii_case(suffix));
    }
    // Bytes beyond ASCII: Unicode whitespace around the type is trimmed too,
    // as fingerprints of earlier versions did.
    let essence = String::from_utf8_lossy(essence).trim().to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The RFC 8785 form of a JSON body, or `None` if the body is not declared
/// as JSON or does not parse (then its bytes are hashed as they are).
pub fn canonical_json_body(content_type: Option<&[u8]>, body: &[u8]) -> Option<Vec<u8>> {
    canonical_json_body_ignoring(content_type, body, &FingerprintIgnore::default())
}

/// [`canonical_json_body`] with the members `ignore` names left out.
pub fn canonical_json_body_ignoring(
    content_type: Option<&[u8]>,
    body: &[u8],
    ignore: &FingerprintIgnore,
) -> Option<Vec<u8>> {
    if !content_type.is_some_and(is_json_media_type) {
        return None;
    }
    canonical_json_ignoring(body, ignore)
}

/// The RFC 8785 canonical form of a JSON document, or `None` if it does not
/// parse.
///
/// ```
/// use idem_core::fingerprint::canonical_json;
/// let c = canonical_json(br#"[56, {"d": true, "10": null, "1": [ ]}, 4.50, 1E30, 2e-3]"#).unwrap();
/// assert_eq!(c, br#"[56,{"1":[],"10":null,"d":true},4.5,1e+30,0.002]"#);
/// ```
///
/// It streams: serde_json's parser drives a visitor that writes the
/// canonical form straight into the one output buffer, with no tree in
/// between. An object's members are written in the order they arrive, each
/// member's start marked in a bitmap (one bit per output byte), and when the
/// object closes its members are sorted by key and its bytes permuted in
/// place. Extra memory beyond the output is the bitmap (an eighth of the
/// output), four bytes per member of the largest object, and a scratch copy
/// of one object's members other than its largest one: under three times
/// the body for any shape, and close to one for the usual payload whose
/// bulk is one member (tests/canonical_memory.rs measures it). The output
/// is longer than the body only where a number such as `1e20` is printed in
/// full. Documents nested deeper than serde_json's recursion limit (128) do
/// not parse, as before.
///
/// A duplicated key keeps its last value, as `serde_json::Value` did.
pub fn canonical_json(body: &[u8]) -> Option<Vec<u8>> {
    canonicalise(body, None)
}

/// The RFC 8785 canonical form of a JSON document with the members
/// `ignore` names removed (each pointer evaluated against the document as
/// given), or `None` if it does not parse. Streams like
/// [`canonical_json`]; an ignored value is parsed (so a body that is not
/// JSON still fails) but never written.
pub fn canonical_json_ignoring(body: &[u8], ignore: &FingerprintIgnore) -> Option<Vec<u8>> {
    canonicalise(body, ignore.root())
}

fn canonicalise(body: &[u8], ignore: Option<&Node>) -> Option<Vec<u8>> {
    let mut canon = Canonicaliser {
        node: ignore,
        out: Vec::with_capacity(body.len()),
        starts: Vec::new(),
        body_len: body.len(),
        members: Vec::new(),
        scratch: Vec::new(),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    DeserializeSeed::deserialize(&mut canon, &mut de).ok()?;
    de.end().ok()?;
    Some(canon.out)
}

/// The state of one [`canonical_json`] call.
struct Canonicaliser<'p> {
    /// Where the value being read sits among the ignored pointers: `None`
    /// when no pointer reaches it (always, without an ignore list).
    node: Option<&'p Node>,
    /// The canonical form so far.
    out: Vec<u8>,
    /// One bit per byte of `out`, set where an object member other than its
    /// object's first begins (at the key's opening quote). An object clears
    /// its range when it closes, so an open object's range holds only its
    /// own members' bits.
    starts: Vec<u64>,
    /// The body's length, to size `starts` once.
    body_len: usize,
    /// The closing object's member offsets (relative to its first member).
    members: Vec<u32>,
    /// The closing object's members other than its largest, in sorted order.
    scratch: Vec<u8>,
}

impl Canonicaliser<'_> {
    /// Makes room for `n` more bytes, `n` being no more than what is about
    /// to be written. The output starts as long as the body and only
    /// numbers printed in full (`1e20`) make it longer, so growing is rare;
    /// when it happens it goes by an eighth rather than doubling, which
    /// would double the peak.
    #[inline]
    fn reserve(&mut self, n: usize) {
        if self.out.capacity() - self.out.len() < n {
            self.out.reserve_exact(n.max(self.out.len() / 8));
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.out.extend_from_slice(bytes);
    }

    fn write_number(&mut self, f: f64) {
        if !f.is_finite() {
            // serde_json::Value held these as null (the parser never makes one).
            self.write(b"null");
        } else if f == 0.0 {
            self.write(b"0");
        } else {
            self.write(ryu_js::Buffer::new().format_finite(f).as_bytes());
        }
    }

    fn write_str(&mut self, s: &str) {
        // The escaped form is at least this long (and, escapes being no
        // longer than the body's, the body had room for it).
        self.reserve(s.len() + 2);
        write_string(s, &mut self.out);
    }

    /// Marks a member starting at `pos` of the output.
    fn mark(&mut self, pos: usize) {
        let word = pos / 64;
        if word >= self.starts.len() {
            if self.starts.capacity() == 0 {
                self.starts.reserve_exact(self.body_len / 64 + 1);
            }
            self.starts.resize(word + 1, 0);
        }
        if let Some(w) = self.starts.get_mut(word) {
            *w |= 1 << (pos % 64);
        }
    }

    /// Sorts the `count` members of the object whose first member starts at
    /// `region` and whose last ends at the end of the output; drops all but
    /// the last of members with equal keys.
    fn close_object(&mut self, region: usize, count: usize) -> Result<(), &'static str> {
        if count < 2 {
            // A first member is never marked: nothing to sort or clear.
            return Ok(());
        }
        let Canonicaliser {
            out,
            starts,
            members,
            scratch,
            ..
        } = self;
        let end = out.len();
        if u32::try_from(end - region).is_err() {
            return Err("object larger than 4 GiB");
        }
        reset(members, count);
        members.push(0);
        for_each_bit(starts, region + 1, end, |pos| {
            members.push((pos - region) as u32);
        });
        let reg = out.get(region..end).ok_or("bad region")?;
        let key = |m: u32| reg.get(m as usize + 1..).unwrap_or_default();

        let already_sorted = members
            .windows(2)
            .all(|w| compare_keys(key(w[0]), key(w[1])) == Ordering::Less);
        if !already_sorted {
            // Equal keys: the later member first, so `dedup_by` keeps it.
            members.sort_unstable_by(|&a, &b| compare_keys(key(a), key(b)).then(b.cmp(&a)));
            members.dedup_by(|a, b| compare_keys(key(*a), key(*b)) == Ordering::Equal);
            // A member ends before the comma ahead of the next one's start
            // (duplicates dropped above still have their bits set).
            let len = |m: u32| {
                let from = region + m as usize;
                next_bit(starts, from + 1, end).map_or(end, |next| next - 1) - from
            };
            let (largest, largest_len) =
                members
                    .iter()
                    .enumerate()
                    .fold((0, 0), |(bi, bl), (i, &m)| {
                        let l = len(m);
                        if l > bl {
                            (i, l)
                        } else {
                            (bi, bl)
                        }
                    });
            let total: usize = members.iter().map(|&m| len(m) + 1).sum::<usize>() - 1;
            // Everything but the largest member goes through `scratch`; the
            // largest moves within the output.
            reset(scratch, total - largest_len);
            for (i, &m) in members.iter().enumerate() {
                let from = m as usize;
                let bytes = reg.get(from..from + len(m)).ok_or("bad member")?;
                match i.cmp(&largest) {
                    Ordering::Less => {
                        scratch.extend_from_slice(bytes);
                        scratch.push(b',');
                    }
                    Ordering::Equal => {}
                    Ordering::Greater => {
                        scratch.push(b',');
                        scratch.extend_from_slice(bytes);
                    }
                }
            }
            let before = members
                .get(..largest)
                .map_or(0, |ms| ms.iter().map(|&m| len(m) + 1).sum());
            let largest_from = region + members.get(largest).map_or(0, |&m| m as usize);
            out.copy_within(largest_from..largest_from + largest_len, region + before);
            let (head, tail) = scratch.split_at_checked(before).ok_or("bad split")?;
            out.get_mut(region..region + before)
                .ok_or("bad head")?
                .copy_from_slice(head);
            let tail_at = region + before + largest_len;
            out.get_mut(tail_at..tail_at + tail.len())
                .ok_or("bad tail")?
                .copy_from_slice(tail);
            out.truncate(region + total);
        }
        clear_bits(starts, region, end);
        Ok(())
    }
}

/// Empties `v` and makes room for `n` items, freeing a too-small buffer
/// before allocating the new one.
fn reset<T>(v: &mut Vec<T>, n: usize) {
    v.clear();
    if v.capacity() < n {
        *v = Vec::new();
        v.reserve_exact(n);
    }
}

/// The bits set in `[from, to)`, in order.
fn for_each_bit(bits: &[u64], from: usize, to: usize, mut f: impl FnMut(usize)) {
    if from >= to {
        return;
    }
    let last = (to - 1) / 64;
    for (w, &word) in bits.iter().enumerate().take(last + 1).skip(from / 64) {
        let mut word = word & word_mask(w, from, to);
        while word != 0 {
            f(w * 64 + word.trailing_zeros() as usize);
            word &= word - 1;
        }
    }
}

/// The first bit set in `[from, to)`.
fn next_bit(bits: &[u64], from: usize, to: usize) -> Option<usize> {
    if from >= to {
        return None;
    }
    let last = (to - 1) / 64;
    bits.iter()
        .enumerate()
        .take(last + 1)
        .skip(from / 64)
        .find_map(|(w, &word)| {
            let word = word & word_mask(w, from, to);
            (word != 0).then(|| w * 64 + word.trailing_zeros() as usize)
        })
}

fn clear_bits(bits: &mut [u64], from: usize, to: usize) {
    if from >= to {
        return;
    }
    let last = (to - 1) / 64;
    for (w, word) in bits.iter_mut().enumerate().take(last + 1).skip(from / 64) {
        *word &= !word_mask(w, from, to);
    }
}

/// The bits of word `w` that lie in `[from, to)` (`from < to`).
#[inline]
fn word_mask(w: usize, from: usize, to: usize) -> u64 {
    let mut mask = u64::MAX;
    if w == from / 64 {
        mask &= u64::MAX << (from % 64);
    }
    if w == (to - 1) / 64 {
        mask &= u64::MAX >> (63 - (to - 1) % 64);
    }
    mask
}

/// Compares two keys as written in the output (from just after the opening
/// quote) by the UTF-16 code units of their unescaped text. The escapes
/// serde_json writes are `\"`, `\\`, `\b \f \n \r \t` and `\u00xx`, all of
/// one ASCII byte.
fn compare_keys(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    loop {
        let (x, next_i) = unescaped_byte(a, i);
        let (y, next_j) = unescaped_byte(b, j);
        match (x, y) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x != y => return utf16_order(x, y),
            _ => {}
        }
        (i, j) = (next_i, next_j);
    }
}

/// The byte of the unescaped key at escaped offset `i` and the offset of the
/// next one; `None` at the closing quote.
#[inline]
fn unescaped_byte(s: &[u8], i: usize) -> (Option<u8>, usize) {
    match s.get(i) {
        None | Some(b'"') => (None, i),
        Some(b'\\') => match s.get(i + 1) {
            Some(b'u') => {
                let hex = |k: usize| s.get(i + k).and_then(|&c| (c as char).to_digit(16));
                let byte = hex(4).zip(hex(5)).map(|(h, l)| (h * 16 + l) as u8);
                (byte, i + 6)
            }
            Some(&c) => {
                let byte = match c {
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    other => other,
                };
                (Some(byte), i + 2)
            }
            None => (None, i),
        },
        Some(&c) => (Some(c), i + 1),
    }
}

/// Orders the first differing bytes of two UTF-8 strings as their UTF-16
/// code units would order. Equal bytes before them mean both are at the
/// same place in a character, and UTF-8 byte order is code point order,
/// which is UTF-16 order except that U+E000..U+FFFF (lead bytes EE, EF)
/// sort after the surrogate pairs of U+10000 and up (lead bytes F0..F4).
#[inline]
fn utf16_order(x: u8, y: u8) -> Ordering {
    let high_bmp = |b: u8| (0xee..=0xef).contains(&b);
    if x >= 0xf0 && high_bmp(y) {
        Ordering::Less
    } else if y >= 0xf0 && high_bmp(x) {
        Ordering::Greater
    } else {
        x.cmp(&y)
    }
}

impl<'de> DeserializeSeed<'de> for &mut Canonicaliser<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, 'p> Visitor<'de> for &mut Canonicaliser<'p> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.write(b"null");
        Ok(())
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.write(if v { b"true" } else { b"false" });
        Ok(())
    }

    // RFC 8785 numbers are IEEE 754 doubles printed as ECMAScript does
    // (integers beyond 2^53 lose precision, as the RFC says).
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        if v <= MAX_EXACT {
            let mut buf = [0; 20];
            self.write(digits(v, &mut buf));
        } else {
            self.write_number(v as f64);
        }
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        if v.unsigned_abs() <= MAX_EXACT {
            if v < 0 {
                self.write(b"-");
            }
            let mut buf = [0; 20];
            self.write(digits(v.unsigned_abs(), &mut buf));
        } else {
            self.write_number(v as f64);
        }
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.write_number(v);
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.write_str(v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.write(b"[");
        let parent = self.node;
        let mut first = true;
        let mut index = 0usize;
        loop {
            let child = parent.and_then(|n| n.element(index));
            index += 1;
            if child.is_some_and(|c| c.ignored) {
                if seq.next_element::<de::IgnoredAny>()?.is_none() {
                    break;
                }
                continue;
            }
            self.node = child;
            let more = seq
                .next_element_seed(Element {
                    canon: &mut *self,
                    first,
                })?
                .is_some();
            self.node = parent;
            if !more {
                break;
            }
            first = false;
        }
        self.write(b"]");
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.write(b"{");
        let region = self.out.len();
        let parent = self.node;
        let mut count = 0;
        while let Some(member) = map.next_key_seed(Key {
            canon: &mut *self,
            first: count == 0,
        })? {
            match member {
                Member::Ignored => {
                    map.next_value::<de::IgnoredAny>()?;
                }
                Member::Written(child) => {
                    self.node = child;
                    map.next_value_seed(&mut *self)?;
                    self.node = parent;
                    count += 1;
                }
            }
        }
        self.close_object(region, count)
            .map_err(de::Error::custom)?;
        self.write(b"}");
        Ok(())
    }
}

/// Integers up to 2^53 are exact doubles, which ECMAScript prints as plain
/// digits.
const MAX_EXACT: u64 = 1 << 53;

/// The decimal digits of `v`, written at the end of `buf`.
fn digits(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        at -= 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.get(at..).unwrap_or_default()
}

/// An array element: a comma before all but the first.
struct Element<'a, 'p> {
    canon: &'a mut Canonicaliser<'p>,
    first: bool,
}

impl<'de> DeserializeSeed<'de> for Element<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if !self.first {
            self.canon.write(b",");
        }
        deserializer.deserialize_any(self.canon)
    }
}

/// An object member's key: written with its comma and colon, its start
/// marked unless it is the first member; or, if an ignored pointer names
/// it, not written at all.
struct Key<'a, 'p> {
    canon: &'a mut Canonicaliser<'p>,
    first: bool,
}

/// What became of an object member's key.
enum Member<'p> {
    /// Named by an ignored pointer: its value is skipped.
    Ignored,
    /// Written; its value sits at this node of the ignored pointers.
    Written(Option<&'p Node>),
}

impl<'de, 'p> DeserializeSeed<'de> for Key<'_, 'p> {
    type Value = Member<'p>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Member<'p>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, 'p> Visitor<'de> for Key<'_, 'p> {
    type Value = Member<'p>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Member<'p>, E> {
        let canon = self.canon;
        let child = canon.node.and_then(|n| n.member(v));
        if child.is_some_and(|c| c.ignored) {
            return Ok(Member::Ignored);
        }
        if !self.first {
            canon.write(b",");
            canon.mark(canon.out.len());
        }
        canon.write_str(v);
        canon.write(b":");
        Ok(Member::Written(child))
    }
}

// serde_json escapes exactly what RFC 8785 asks: `"`, `\\` and control
// characters (short forms or lower-case \u00xx).
fn write_string(s: &str, out: &mut Vec<u8>) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    fn fp(
        method: &str,
        path: &str,
        query: Option<&str>,
        ct: Option<&[u8]>,
        body: &[u8],
    ) -> Fingerprint {
        Fingerprint::compute(&FingerprintInput {
            method,
            path,
            query,
            content_type: ct,
            extra_headers: &[],
            body,
        })
    }

    /// The implementation before issue 10 (a `serde_json::Value` tree),
    /// kept to prove the streaming one writes the same bytes.
    fn reference_canonical_json(body: &[u8]) -> Option<Vec<u8>> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let mut out = Vec::with_capacity(body.len());
        write_canonical_reference(&value, &mut out);
        Some(out)
    }

    // Written here rather than taken from a JCS crate: the one we measured
    // re-parsed every object key to sort it, which cost more than the SHA-256
    // and the rest of the fingerprint together.
    fn write_canonical_reference(value: &serde_json::Value, out: &mut Vec<u8>) {
        use serde_json::Value;
        match value {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Number(n) => {
                // RFC 8785 numbers are IEEE 754 doubles printed as ECMAScript
                // does (integers beyond 2^53 lose precision, as the RFC says).
                let f = n.as_f64().unwrap_or(0.0);
                if f == 0.0 {
                    out.push(b'0');
                } else {
                    out.extend_from_slice(ryu_js::Buffer::new().format_finite(f).as_bytes());
                }
            }
            // serde_json escapes exactly what RFC 8785 asks: `"`, `\\` and
            // control characters (short forms or lower-case \u00xx).
            Value::String(s) => write_string_reference(s, out),
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_canonical_reference(item, out);
                }
                out.push(b']');
            }
            Value::Object(members) => {
                let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
                // Keys sort by their UTF-16 code units.
                sorted.sort_unstable_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
                out.push(b'{');
                for (i, (k, v)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_string_reference(k, out);
                    out.push(b':');
                    write_canonical_reference(v, out);
                }
                out.push(b'}');
            }
        }
    }

    fn write_string_reference(s: &str, out: &mut Vec<u8>) {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }

    const JSON: Option<&[u8]> = Some(b"application/json; charset=utf-8");

    #[test]
    fn method_path_query_and_content_type_all_count() {
        let base = fp("POST", "/a", Some("x=1"), JSON, b"{}");
        assert_ne!(base, fp("PATCH", "/a", Some("x=1"), JSON, b"{}"));
        assert_ne!(base, fp("POST", "/b", Some("x=1"), JSON, b"{}"));
        assert_ne!(base, fp("POST", "/a", Some("x=2"), JSON, b"{}"));
        assert_ne!(
            base,
            fp("POST", "/a", Some("x=1"), Some(b"text/plain"), b"{}")
        );
        assert_eq!(
            fp("POST", "/a", Some("b=2&a=1"), None, b""),
            fp("POST", "/a", Some("a=1&b=2"), None, b"")
        );
    }

    #[test]
    fn non_json_bodies_are_hashed_as_bytes() {
        assert_ne!(
            fp("POST", "/a", None, Some(b"text/plain"), b"{\"a\":1}"),
            fp("POST", "/a", None, Some(b"text/plain"), b"{ \"a\": 1 }")
        );
        // Malformed JSON falls back to bytes instead of failing.
        assert_ne!(
            fp("POST", "/a", None, JSON, b"{"),
            fp("POST", "/a", None, JSON, b"{ ")
        );
    }

    #[test]
    fn rfc_8785_examples_canonicalise_as_published() {
        let c = |s: &str| String::from_utf8(canonical_json(s.as_bytes()).unwrap()).unwrap();
        assert_eq!(c("333333333.33333329"), "333333333.3333333");
        assert_eq!(c("1E30"), "1e+30");
        assert_eq!(c("4.50"), "4.5");
        assert_eq!(c("2e-3"), "0.002");
        assert_eq!(c("0.000000000000000000000000001"), "1e-27");
        assert_eq!(c("-0"), "0");
        assert_eq!(
            c(r#""\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/""#),
            "\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\""
        );
        // UTF-16 order: U+1F600 (a surrogate pair, 0xD83D...) sorts before U+FB33.
        assert_eq!(
            c("{\"\u{fb33}\":1,\"\u{1f600}\":2}"),
            "{\"\u{1f600}\":2,\"\u{fb33}\":1}"
        );
    }

    #[test]
    fn numbers_are_normalised() {
        assert_eq!(
            fp("POST", "/a", None, JSON, br#"{"n":1.50}"#),
            fp("POST", "/a", None, JSON, br#"{"n":15e-1}"#)
        );
        assert_ne!(
            fp("POST", "/a", None, JSON, br#"{"n":1.5}"#),
            fp("POST", "/a", None, JSON, br#"{"n":1.6}"#)
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-z0-9 ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    /// Serialises with object members in reverse order and extra whitespace.
    fn reshuffled(v: &Value) -> String {
        match v {
            Value::Object(m) => {
                let parts: Vec<String> = m
                    .iter()
                    .rev()
                    .map(|(k, v)| {
                        format!(
                            "\n  {} :\t{}",
                            serde_json::to_string(k).unwrap(),
                            reshuffled(v)
                        )
                    })
                    .collect();
                format!("{{ {} }}", parts.join(" , "))
            }
            Value::Array(a) => format!(
                "[ {} ]",
                a.iter().map(reshuffled).collect::<Vec<_>>().join(" ,")
            ),
            other => other.to_string(),
        }
    }

    /// Changes one leaf somewhere in the value; `None` if it has no leaf.
    fn mutate(v: &Value) -> Option<Value> {
        match v {
            Value::Null => Some(Value::Bool(false)),
            Value::Bool(b) => Some(Value::Bool(!b)),
            Value::Number(n) => Some(Value::from(n.as_i64().unwrap_or(0).wrapping_add(1))),
            Value::String(s) => Some(Value::String(format!("{s}x"))),
            Value::Array(a) => {
                let mut a = a.clone();
                match a.iter().position(|x| mutate(x).is_some()) {
                    Some(i) => a[i] = mutate(&a[i])?,
                    None => a.push(Value::Null),
                }
                Some(Value::Array(a))
            }
            Value::Object(m) => {
                let mut m = m.clone();
                let key = m.keys().next().cloned();
                match key {
                    Some(k) => {
                        let new = mutate(&m[&k])?;
                        m.insert(k, new);
                    }
                    None => {
                        m.insert("new".into(), Value::Null);
                    }
                }
                Some(Value::Object(m))
            }
        }
    }

    /// How content types were classified before the allocation-free path:
    /// whatever the bytes, the answer must not move (it decides whether a
    /// body is canonicalised, so a change would change fingerprints).
    fn json_media_type_as_before(content_type: &[u8]) -> bool {
        let essence = content_type
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default();
        let essence = String::from_utf8_lossy(essence).trim().to_ascii_lowercase();
        essence == "application/json"
            || (essence.starts_with("application/") && essence.ends_with("+json"))
    }

    #[test]
    fn json_media_types_are_recognised() {
        for (content_type, json) in [
            (&b"application/json"[..], true),
            (b"Application/JSON; charset=utf-8", true),
            (b"  application/problem+json ", true),
            (b"application/+json", true),
            (b"\xc2\xa0application/json", true),
            (b"application/jsonx", false),
            (b"text/json", false),
            (b"application/", false),
            (b"+json", false),
            (b"", false),
        ] {
            assert_eq!(is_json_media_type(content_type), json, "{content_type:?}");
            assert_eq!(
                json_media_type_as_before(content_type),
                json,
                "{content_type:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn json_media_types_are_classified_as_before(
            content_type in proptest::collection::vec(
                proptest::sample::select(b"aAjJnNsSoOpPlLiIcCtT/+; \t\xc2\xa0\xff".to_vec()), 0..24),
            prefix in proptest::sample::select(vec![&b""[..], b"application/", b"APPLICATION/", b" \t"]),
            suffix in proptest::sample::select(vec![&b""[..], b"+json", b"json", b"+JSON ;x"]),
        ) {
            let value = [prefix, &content_type[..], suffix].concat();
            prop_assert_eq!(is_json_media_type(&value), json_media_type_as_before(&value));
        }

        #[test]
        fn reordering_keys_or_whitespace_never_changes_the_fingerprint(v in json_value()) {
            let compact = serde_json::to_string(&v).unwrap();
            let noisy = reshuffled(&v);
            prop_assert_eq!(
                fp("POST", "/x", None, JSON, compact.as_bytes()),
                fp("POST", "/x", None, JSON, noisy.as_bytes())
            );
        }

        #[test]
        fn changing_any_value_always_changes_the_fingerprint(v in json_value()) {
            if let Some(changed) = mutate(&v) {
                prop_assume!(changed != v);
                prop_assert_ne!(
                    fp("POST", "/x", None, JSON, serde_json::to_string(&v).unwrap().as_bytes()),
                    fp("POST", "/x", None, JSON, serde_json::to_string(&changed).unwrap().as_bytes())
                );
            }
        }

        #[test]
        fn fingerprinting_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = fp("POST", "/x", None, JSON, &body);
        }

        #[test]
        fn streaming_writes_the_bytes_the_value_tree_wrote(doc in json_text()) {
            let (doc, seed) = doc;
            let text = render(&doc, &mut Noise(seed));
            let new = canonical_json(text.as_bytes());
            prop_assert_eq!(&new, &reference_canonical_json(text.as_bytes()), "{}", text);
            if let Some(canonical) = new {
                // The canonical form is a fixed point.
                prop_assert_eq!(canonical_json(&canonical), Some(canonical));
            }
        }

        #[test]
        fn broken_documents_fail_alike(doc in json_text(), at in any::<prop::sample::Index>(), byte in any::<u8>(), how in 0..3u8) {
            let (doc, seed) = doc;
            let mut text = render(&doc, &mut Noise(seed)).into_bytes();
            let i = at.index(text.len() + 1);
            match how {
                0 => text.truncate(i),
                1 => text.insert(i, byte),
                _ => if i < text.len() { text[i] = byte },
            }
            prop_assert_eq!(canonical_json(&text), reference_canonical_json(&text));
        }

        #[test]
        fn arbitrary_bytes_canonicalise_alike(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(canonical_json(&body), reference_canonical_json(&body));
        }
    }

    /// Every pointer into `v` (escaped per RFC 6901), the root's excepted.
    fn pointers_into(v: &Value, prefix: &str, out: &mut Vec<String>) {
        let children: Vec<(String, &Value)> = match v {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
                .collect(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            _ => Vec::new(),
        };
        for (token, child) in children {
            let p = format!("{prefix}/{token}");
            out.push(p.clone());
            pointers_into(child, &p, out);
        }
    }

    /// `v` without what `pointer` names (the tree's way, for comparison).
    fn without(v: &Value, pointer: &str) -> Value {
        let mut v = v.clone();
        let tokens = crate::pointer::JsonPointer::parse(pointer)
            .unwrap()
            .tokens()
            .to_vec();
        let (last, parents) = tokens.split_last().unwrap();
        let mut at = &mut v;
        for t in parents {
            at = match at {
                Value::Object(m) => m.get_mut(t).unwrap(),
                Value::Array(a) => &mut a[t.parse::<usize>().unwrap()],
                _ => unreachable!(),
            };
        }
        match at {
            Value::Object(m) => {
                m.remove(last);
            }
            Value::Array(a) => {
                a.remove(last.parse::<usize>().unwrap());
            }
            _ => unreachable!(),
        }
        v
    }

    fn ignoring(pointers: &[&str]) -> FingerprintIgnore {
        FingerprintIgnore::new(
            pointers
                .iter()
                .map(|p| crate::pointer::JsonPointer::parse(p).unwrap()),
        )
    }

    fn fp_ignoring(ct: Option<&[u8]>, body: &[u8], ignore: &FingerprintIgnore) -> Fingerprint {
        Fingerprint::compute_ignoring(
            &FingerprintInput {
                method: "POST",
                path: "/x",
                query: None,
                content_type: ct,
                extra_headers: &[],
                body,
            },
            ignore,
        )
    }

    proptest! {
        #[test]
        fn an_ignored_member_is_left_out_of_the_canonical_form(v in json_value(), pick in any::<prop::sample::Index>(), seed in any::<u64>()) {
            let mut all = Vec::new();
            pointers_into(&v, "", &mut all);
            prop_assume!(!all.is_empty());
            let pointer = all[pick.index(all.len())].clone();
            let ignore = ignoring(&[&pointer]);
            let text = render(&Json::from_value(&v), &mut Noise(seed));
            let expected = canonical_json(serde_json::to_string(&without(&v, &pointer)).unwrap().as_bytes());
            prop_assert_eq!(canonical_json_ignoring(text.as_bytes(), &ignore), expected, "{} in {}", pointer, text);
        }

        #[test]
        fn only_the_ignored_member_may_change(v in json_value(), pick in any::<prop::sample::Index>()) {
            let mut all = Vec::new();
            pointers_into(&v, "", &mut all);
            // Object members only: leaving out an array element moves the
            // next one to its index, where the pointer then names it.
            all.retain(|p| {
                let parent = &p[..p.rfind('/').unwrap_or(0)];
                let parent = if parent.is_empty() { Some(&v) } else { v.pointer(parent) };
                parent.is_some_and(Value::is_object)
            });
            prop_assume!(!all.is_empty());
            let pointer = all[pick.index(all.len())].clone();
            let ignore = ignoring(&[&pointer]);
            let kept = without(&v, &pointer);
            let body = serde_json::to_string(&v).unwrap();
            // Without the member at all: the same request.
            prop_assert_eq!(
                fp_ignoring(JSON, body.as_bytes(), &ignore),
                fp_ignoring(JSON, serde_json::to_string(&kept).unwrap().as_bytes(), &ignore)
            );
            // A change anywhere else: another request.
            if let Some(changed) = mutate(&kept) {
                prop_assume!(changed != kept);
                prop_assert_ne!(
                    fp_ignoring(JSON, body.as_bytes(), &ignore),
                    fp_ignoring(JSON, serde_json::to_string(&changed).unwrap().as_bytes(), &ignore)
                );
            }
        }

        #[test]
        fn ignoring_nothing_is_the_plain_fingerprint(body in proptest::collection::vec(any::<u8>(), 0..128)) {
            prop_assert_eq!(fp_ignoring(JSON, &body, &FingerprintIgnore::default()), fp("POST", "/x", None, JSON, &body));
        }
    }

    #[test]
    fn ignored_pointers_follow_escapes_and_array_positions() {
        let ignore = ignoring(&["/a~1b", "/items/0/nonce", "/m~0n"]);
        let c = |b: &[u8]| canonical_json_ignoring(b, &ignore).unwrap();
        assert_eq!(
            c(br#"{"a\/b":1,"z":2,"m~n":3,"items":[{"nonce":"x","q":1},{"nonce":"y"}]}"#),
            br#"{"items":[{"q":1},{"nonce":"y"}],"z":2}"#
        );
        // An index past the end, or a member that is absent, names nothing.
        assert_eq!(c(br#"{"items":[]}"#), br#"{"items":[]}"#);
        assert_eq!(
            c(br#"{"items":{"0":{"nonce":1}}}"#),
            br#"{"items":{"0":{}}}"#
        );
        // A whole first element left out: no stray comma.
        let first = ignoring(&["/0"]);
        assert_eq!(
            canonical_json_ignoring(b"[1,2,3]", &first).unwrap(),
            b"[2,3]"
        );
        assert_eq!(canonical_json_ignoring(b"[1]", &first).unwrap(), b"[]");
        // Every member of an object left out.
        let both = ignoring(&["/a", "/b"]);
        assert_eq!(
            canonical_json_ignoring(br#"{"b":1,"a":2}"#, &both).unwrap(),
            b"{}"
        );
        // Duplicate names: both are left out.
        assert_eq!(
            canonical_json_ignoring(br#"{"a":1,"a":2,"c":3}"#, &both).unwrap(),
            br#"{"c":3}"#
        );
        // An ignored value must still be JSON.
        assert_eq!(canonical_json_ignoring(br#"{"a":tru}"#, &both), None);
    }

    #[test]
    fn a_body_that_is_not_json_is_hashed_as_bytes_whatever_the_ignore_list() {
        let ignore = ignoring(&["/request_id"]);
        let form: Option<&[u8]> = Some(b"application/x-www-form-urlencoded");
        let a = b"amount=100&request_id=a";
        let b = b"amount=100&request_id=b";
        assert_eq!(
            fp_ignoring(form, a, &ignore),
            fp("POST", "/x", None, form, a)
        );
        assert_ne!(fp_ignoring(form, a, &ignore), fp_ignoring(form, b, &ignore));
        // JSON that does not parse: bytes too.
        let broken = br#"{"request_id":"a","#;
        assert_eq!(
            fp_ignoring(JSON, broken, &ignore),
            fp("POST", "/x", None, JSON, broken)
        );
    }

    /// A JSON document as text may spell it: members in any order, keys
    /// repeated, numbers in any notation.
    #[derive(Debug, Clone)]
    enum Json {
        Null,
        Bool(bool),
        Num(String),
        Str(String),
        Arr(Vec<Json>),
        Obj(Vec<(String, Json)>),
    }

    impl Json {
        /// The document `v` is (rendered with noise by [`render`]).
        fn from_value(v: &Value) -> Json {
            match v {
                Value::Null => Json::Null,
                Value::Bool(b) => Json::Bool(*b),
                Value::Number(n) => Json::Num(n.to_string()),
                Value::String(s) => Json::Str(s.clone()),
                Value::Array(a) => Json::Arr(a.iter().map(Json::from_value).collect()),
                Value::Object(m) => Json::Obj(
                    m.iter()
                        .map(|(k, v)| (k.clone(), Json::from_value(v)))
                        .collect(),
                ),
            }
        }
    }

    /// Keys that sort differently in UTF-16 and UTF-8 (U+E000..U+FFFF after
    /// the surrogate pairs of U+10000 and up), that are prefixes of each
    /// other, that need escaping, and a few repeats to make duplicates.
    const KEYS: &[&str] = &[
        "",
        "a",
        "ab",
        "b",
        "B",
        "1",
        "10",
        "é",
        "€",
        "\u{d7ff}",
        "\u{e000}",
        "\u{fb33}",
        "\u{ffff}",
        "\u{10000}",
        "\u{1f600}",
        "\u{10ffff}",
        "\u{0}",
        "\u{1}",
        "\u{1f}",
        "\u{7f}",
        "\"",
        "\\",
        "\n",
        "a\"b",
        "a\\",
        "\u{e000}x",
        "\u{10000}x",
    ];

    fn number_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (0u64..=1 << 54).prop_map(|n| n.to_string()),
            any::<i32>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| f.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:E}")),
            "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?",
            prop::sample::select(vec![
                "0",
                "-0",
                "-0.0",
                "0e10",
                "0.0e-10",
                "1e21",
                "1e20",
                "999999999999999999999",
                "123456789012345678901",
                "9007199254740992",
                "9007199254740993",
                "-9007199254740992",
                "-9007199254740993",
                "18446744073709551615",
                "18446744073709551616",
                "-9223372036854775808",
                "-9223372036854775809",
                "5e-324",
                "2e-324",
                "2.2250738585072014e-308",
                "1.7976931348623157e308",
                "1.7976931348623159e308",
                "1e309",
                "-1e400",
                "1e-400",
                "333333333.33333329",
                "4.50",
                "1E30",
                "2e-3",
                "0.000001",
                "0.0000001",
                "1e-7",
            ])
            .prop_map(String::from),
        ]
    }

    fn string_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9 ]{0,8}",
            any::<String>(),
            "[\"\\\\/\u{0}-\u{1f}\u{7f}a\u{e9}\u{20ac}\u{e000}\u{ffff}\u{10000}\u{1f600}]{0,6}",
        ]
    }

    fn key_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(KEYS).prop_map(String::from),
            1 => string_text(),
        ]
    }

    /// A document and a seed for the whitespace and escapes of its text.
    fn json_text() -> impl Strategy<Value = (Json, u64)> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            number_text().prop_map(Json::Num),
            string_text().prop_map(Json::Str),
        ];
        let doc = leaf.prop_recursive(4, 48, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Json::Arr),
                proptest::collection::vec((key_text(), inner), 0..8).prop_map(Json::Obj),
            ]
        });
        (doc, any::<u64>())
    }

    /// A small deterministic generator for the text's incidental choices.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self, n: u64) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }

        fn space(&mut self) -> &'static str {
            ["", "", "", " ", "\n", "\t", "\r\n  "][self.next(7) as usize]
        }
    }

    fn render(doc: &Json, noise: &mut Noise) -> String {
        let mut out = String::new();
        out.push_str(noise.space());
        render_into(doc, noise, &mut out);
        out.push_str(noise.space());
        out
    }

    fn render_into(doc: &Json, noise: &mut Noise, out: &mut String) {
        match doc {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) => out.push_str(n),
            Json::Str(s) => render_string(s, noise, out),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(noise.space());
                        out.push(',');
                    }
                    out.push_str(noise.space());
                    render_into(item, noise, out);
                }
                out.push_str(noise.space());
                out.push(']');
            }
            Json::Obj(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(noise.space());
                        out.push(',');
                    }
                    out.push_str(noise.space());
                    render_string(k, noise, out);
                    out.push_str(noise.space());
                    out.push(':');
                    out.push_str(noise.space());
                    render_into(v, noise, out);
                }
                out.push_str(noise.space());
                out.push('}');
            }
        }
    }

    /// A string spelt with any escapes JSON allows for its characters.
    fn render_string(s: &str, noise: &mut Noise, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            let must_escape = c < ' ' || c == '"' || c == '\\';
            match noise.next(if must_escape { 2 } else { 4 }) {
                0 | 1 if must_escape => {
                    let short = match c {
                        '"' => Some("\\\""),
                        '\\' => Some("\\\\"),
                        '\u{8}' => Some("\\b"),
                        '\u{c}' => Some("\\f"),
                        '\n' => Some("\\n"),
                        '\r' => Some("\\r"),
                        '\t' => Some("\\t"),
                        _ => None,
                    };
                    match short {
                        Some(e) if noise.next(2) == 0 => out.push_str(e),
                        _ => push_u_escape(c, noise, out),
                    }
                }
                0 => push_u_escape(c, noise, out),
                1 if c == '/' => out.push_str("\\/"),
                _ => out.push(c),
            }
        }
        out.push('"');
    }

    fn push_u_escape(c: char, noise: &mut Noise, out: &mut String) {
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            if noise.next(2) == 0 {
                out.push_str(&format!("\\u{unit:04x}"));
            } else {
                out.push_str(&format!("\\u{unit:04X}"));
            }
        }
    }

    fn both(text: &str) -> Option<String> {
        let new = canonical_json(text.as_bytes());
        assert_eq!(new, reference_canonical_json(text.as_bytes()), "{text}");
        new.map(|c| String::from_utf8(c).unwrap())
    }

    #[test]
    fn duplicate_keys_keep_the_last_value() {
        assert_eq!(
            both(r#"{"a":1,"b":2,"a":{"y":1,"x":2},"c":3,"a":[3]}"#).as_deref(),
            Some(r#"{"a":[3],"b":2,"c":3}"#)
        );
        // The same key spelt with different escapes.
        assert_eq!(
            both(r#"{"\u0041":1,"A":2,"\u0041\"":3,"A\u0022":4}"#).as_deref(),
            Some(r#"{"A":2,"A\"":4}"#)
        );
        assert_eq!(both(r#"{"a":1,"a":2}"#).as_deref(), Some(r#"{"a":2}"#));
    }

    #[test]
    fn keys_sort_by_utf16_code_units_even_when_escaped() {
        assert_eq!(
            both("{\"\u{e000}\":1,\"\u{10000}\":2,\"\u{ffff}\":3,\"\u{d7ff}\":4}").as_deref(),
            Some("{\"\u{d7ff}\":4,\"\u{10000}\":2,\"\u{e000}\":1,\"\u{ffff}\":3}")
        );
        // Escaped control characters sort by what they stand for.
        assert_eq!(
            both(r#"{"\u0001":1,"\"":2,"\u0000":3,"\\":4,"\n":5,"":6}"#).as_deref(),
            Some(r#"{"":6,"\u0000":3,"\u0001":1,"\n":5,"\"":2,"\\":4}"#)
        );
    }

    #[test]
    fn a_large_member_moves_without_losing_bytes() {
        let big: Vec<String> = (0..2000)
            .map(|i| format!(r#"{{"v":{i},"k":"{i}"}}"#))
            .collect();
        let text = format!(
            r#"{{"z":1,"m":[{}],"b":{{"y":true,"x":null}},"a":"first"}}"#,
            big.join(",")
        );
        let c = both(&text).unwrap();
        assert!(c.starts_with(r#"{"a":"first","b":{"x":null,"y":true},"m":[{"k":"0","v":0},"#));
        assert!(c.ends_with(r#"{"k":"1999","v":1999}],"z":1}"#));
    }

    #[test]
    fn many_members_in_any_order_sort_as_the_tree_did() {
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let members: Vec<String> = (0..20_000)
            .map(|_| {
                let k = noise.next(30_000);
                let key = match noise.next(4) {
                    0 => format!("\u{e000}{k}"),
                    1 => format!("\u{10000}{k}"),
                    2 => format!("k\\n{k}"),
                    _ => format!("{k}"),
                };
                format!(r#""{key}":{{"b":{k},"a":[{k},"{k}"]}}"#)
            })
            .collect();
        let text = format!("{{{}}}", members.join(","));
        assert!(both(&text).is_some());
    }

    #[test]
    fn already_sorted_and_single_member_objects_are_left_as_written() {
        assert_eq!(
            both(r#"{"a":{"only":[1,{"x":1,"y":2}]},"b":2}"#).as_deref(),
            Some(r#"{"a":{"only":[1,{"x":1,"y":2}]},"b":2}"#)
        );
        assert_eq!(both("{}").as_deref(), Some("{}"));
        assert_eq!(both("[]").as_deref(), Some("[]"));
    }

    #[test]
    fn deep_nesting_is_refused_at_serde_jsons_limit_not_by_the_stack() {
        let nested = |depth: usize, open: &str, close: &str| {
            format!("{}1{}", open.repeat(depth), close.repeat(depth))
        };
        assert!(canonical_json(nested(100_000, "[", "]").as_bytes()).is_none());
        assert!(canonical_json(nested(100_000, r#"{"a":"#, "}").as_bytes()).is_none());
        assert_eq!(both(&nested(100, "[", "]")), Some(nested(100, "[", "]")));
        assert!(both(&nested(100, r#"{"b":0,"a":"#, "}")).is_some());
        // The limit itself is where it was.
        for depth in 120..=130 {
            both(&nested(depth, "[", "]"));
            both(&nested(depth, r#"{"b":0,"a":"#, "}"));
        }
        assert!(canonical_json(nested(127, "[", "]").as_bytes()).is_some());
        assert!(canonical_json(nested(128, "[", "]").as_bytes()).is_none());
    }

    #[test]
    fn invalid_input_is_refused_as_before() {
        for text in [
            &b"{"[..],
            b"",
            b"   ",
            b"[1,]",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"{1:2}",
            b"[1] [2]",
            b"{} x",
            b"\"\xff\"",
            b"{\"\xc3\":1}",
            b"\"\\ud800\"",
            b"\"\\u00\"",
            b"nul",
            b"01",
            b"1.",
            b"-",
            b"1e400",
            b"[1e400]",
            b"\"a\x01\"",
        ] {
            assert_eq!(
                canonical_json(text),
                None,
                "{}",
                String::from_utf8_lossy(text)
            );
            assert_eq!(reference_canonical_json(text), None);
        }
        assert_eq!(both(" [1] \n\t").as_deref(), Some("[1]"));
    }

    #[test]
    fn numbers_print_as_the_tree_printed_them() {
        for n in [
            "0",
            "-0",
            "1",
            "-1",
            "9007199254740992",
            "9007199254740993",
            "-9007199254740993",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "1e21",
            "1e20",
            "5e-324",
            "1.7976931348623157e308",
            "1e-400",
            "0.1",
            "100",
            "1E2",
            "1.0",
        ] {
            both(n);
            both(&format!("[{n}]"));
        }
        assert_eq!(both("1e20").as_deref(), Some("100000000000000000000"));
        assert_eq!(
            both("9007199254740993").as_deref(),
            Some("9007199254740992")
        );
        assert_eq!(both("-0.0").as_deref(), Some("0"));
    }

    /// serde_json gives `{"$serde_json::private::RawValue": "..."}` a meaning
    /// of its own when something in the build enables its `raw_value`
    /// feature (axum does); the tree then stood for the *parsed string*, so
    /// two different bodies could share a fingerprint. The streaming form
    /// has no such key: it is an ordinary member.
    #[test]
    fn serde_jsons_private_keys_are_ordinary_members() {
        assert_eq!(
            canonical_json(br#"{"$serde_json::private::RawValue":"[1, 2]"}"#).as_deref(),
            Some(&br#"{"$serde_json::private::RawValue":"[1, 2]"}"#[..])
        );
        assert_eq!(
            canonical_json(br#"{"$serde_json::private::Number":"1","a":2}"#).as_deref(),
            Some(&br#"{"$serde_json::private::Number":"1","a":2}"#[..])
        );
    }
}
