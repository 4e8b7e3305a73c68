//! Record hashes to records and back, key names, and the shard of a record.

use crate::engine::codec::{self, key_from_stored, StableHash};
use ::redis::Value;
use bytes::Bytes;
use idem_core::{Fingerprint, Record, RecordId, RecordState, Scope, StoredResponse, Timestamp};
use std::fmt;
use std::sync::Arc;

/// Shards of the key space. Each shard is one hash tag, so one Redis
/// Cluster slot: the records of a shard and its due index live together,
/// which lets one script update both. 256 tags spread over the slots of
/// any cluster of practical size.
pub(super) const SHARDS: usize = 256;

/// A hash this build cannot turn back into a record.
#[derive(Debug)]
pub(super) struct Corrupt(pub(super) String);

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "damaged record in Redis: {}", self.0)
    }
}

impl std::error::Error for Corrupt {}

/// The shard of a record: the stable hash of the length-prefixed scope
/// and the key. Stable forever (it names keys), independent of the process.
pub(super) fn shard(id: &RecordId) -> usize {
    let h = StableHash::new()
        .part(id.scope.as_str().as_bytes())
        .tail(id.key.as_str().as_bytes())
        .finish();
    (h % SHARDS as u64) as usize
}

/// `<prefix>:{<shard>}:r:<scope length>:<scope>:<key>`. The length makes
/// the (scope, key) split unambiguous whatever either contains; the hash
/// tag is the first `{…}` since the prefix has no braces.
pub(super) fn record_key(prefix: &str, id: &RecordId) -> String {
    let scope = id.scope.as_str();
    format!(
        "{prefix}:{{{:03x}}}:r:{}:{scope}:{}",
        shard(id),
        scope.len(),
        id.key.as_str()
    )
}

/// The identity a record key ([`record_key`]) names. Keys are stored
/// unquoted, and a key may itself start with `"`, so it is re-quoted as a
/// structured-field string before going through the one parser (as the
/// SQL engines do).
pub(super) fn id_from_record_key(prefix: &str, key: &[u8]) -> Result<RecordId, Corrupt> {
    let damaged = || Corrupt(format!("record key {:?}", String::from_utf8_lossy(key)));
    let key = std::str::from_utf8(key).map_err(|_| damaged())?;
    // `<prefix>:{NNN}:r:` is the prefix, 3 hex digits in braces, `:r:`.
    let rest = key
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix(":{"))
        .filter(|r| r.len() > 7 && r.is_char_boundary(3) && r.is_char_boundary(7))
        .and_then(|r| r[3..].strip_prefix("}:r:"))
        .ok_or_else(damaged)?;
    let (len, rest) = rest.split_once(':').ok_or_else(damaged)?;
    let len: usize = len.parse().map_err(|_| damaged())?;
    if rest.len() <= len || !rest.is_char_boundary(len) {
        return Err(damaged());
    }
    let (scope, rest) = rest.split_at(len);
    let stored = rest.strip_prefix(':').ok_or_else(damaged)?;
    let parsed = key_from_stored(stored).map_err(Corrupt)?;
    Ok(RecordId {
        scope: Scope::from_stored(scope),
        key: parsed,
    })
}

/// `<prefix>:{<shard>}:due`: the shard's due index.
pub(super) fn due_key(prefix: &str, shard: usize) -> String {
    format!("{prefix}:{{{shard:03x}}}:due")
}

/// The channel announcements of finished claims go to:
/// `<prefix>:chg` on one server, `<prefix>:{<shard>}:chg` (the shard
/// channel of the shard's slot) on a cluster.
pub(super) fn channel(prefix: &str, shard: Option<usize>) -> String {
    match shard {
        None => format!("{prefix}:chg"),
        Some(shard) => format!("{prefix}:{{{shard:03x}}}:chg"),
    }
}

/// The shared header encoding ([`crate::engine::codec::encode_headers`],
/// the SQLite engine's format). An empty list is the empty string, which
/// the scripts store as no field at all.
pub(super) fn encode_headers(headers: &[(String, Bytes)]) -> Result<Vec<u8>, Corrupt> {
    codec::encode_headers(headers).map_err(Corrupt)
}

fn decode_headers(encoded: Option<Vec<u8>>) -> Result<Vec<(String, Bytes)>, Corrupt> {
    encoded.map_or(Ok(Vec::new()), |e| {
        codec::decode_headers(e).map_err(Corrupt)
    })
}

/// The fields of a record hash, as HGETALL returns them.
#[derive(Default)]
struct Fields {
    st: Option<Vec<u8>>,
    tok: Option<Vec<u8>>,
    fpv: Option<Vec<u8>>,
    fpd: Option<Vec<u8>>,
    lease: Option<Vec<u8>>,
    exp: Option<Vec<u8>>,
    tomb: Option<Vec<u8>>,
    at: Option<Vec<u8>>,
    hr: Option<Vec<u8>>,
    status: Option<Vec<u8>>,
    hdr: Option<Vec<u8>>,
    body: Option<Vec<u8>>,
    att: Option<Vec<u8>>,
    hold: Option<Vec<u8>>,
}

fn bytes_of(v: Value) -> Result<Vec<u8>, Corrupt> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        other => Err(Corrupt(format!("unexpected field value {other:?}"))),
    }
}

/// A record from an HGETALL reply (a flat array of field, value under
/// RESP2, a map under RESP3); `None` for an absent key (no fields).
pub(super) fn record_from_hash(id: RecordId, reply: Value) -> Result<Option<Record>, Corrupt> {
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(Corrupt("an odd number of hash fields".into()));
            }
            let mut it = items.into_iter();
            std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
        }
        Value::Map(pairs) => pairs,
        Value::Nil => Vec::new(),
        other => return Err(Corrupt(format!("unexpected hash reply {other:?}"))),
    };
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut f = Fields::default();
    for (name, value) in pairs {
        let name = bytes_of(name)?;
        let value = Some(bytes_of(value)?);
        match &name[..] {
            b"st" => f.st = value,
            b"tok" => f.tok = value,
            b"fpv" => f.fpv = value,
            b"fpd" => f.fpd = value,
            b"lease" => f.lease = value,
            b"exp" => f.exp = value,
            b"tomb" => f.tomb = value,
            b"at" => f.at = value,
            b"hr" => f.hr = value,
            b"status" => f.status = value,
            b"hdr" => f.hdr = value,
            b"body" => f.body = value,
            b"att" => f.att = value,
            b"hold" => f.hold = value,
            _ => {} // fields of a later build are ignored
        }
    }
    record_from_fields(id, f).map(Some)
}

fn number<T: std::str::FromStr>(name: &str, v: Option<Vec<u8>>) -> Result<T, Corrupt> {
    let v = v.ok_or_else(|| Corrupt(format!("field `{name}` is missing")))?;
    std::str::from_utf8(&v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Corrupt(format!(
                "field `{name}` is {:?}",
                String::from_utf8_lossy(&v)
            ))
        })
}

fn record_from_fields(id: RecordId, f: Fields) -> Result<Record, Corrupt> {
    let code: i64 = number("st", f.st)?;
    let state = RecordState::from_code(code)
        .ok_or_else(|| Corrupt(format!("unknown state code {code}")))?;
    let digest = f
        .fpd
        .ok_or_else(|| Corrupt("field `fpd` is missing".into()))?;
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|d: Vec<u8>| Corrupt(format!("fingerprint digest of {} bytes", d.len())))?;
    let response = if number::<u8>("hr", f.hr)? == 1 {
        Some(StoredResponse {
            status: number("status", f.status)?,
            headers: decode_headers(f.hdr)?,
            body: f.body.map(Bytes::from),
        })
    } else {
        None
    };
    Ok(Record {
        id,
        fingerprint: Fingerprint {
            version: number("fpv", f.fpv)?,
            digest,
        },
        state,
        token: number("tok", f.tok)?,
        lease_until: Timestamp(number("lease", f.lease)?),
        expires_at: Timestamp(number("exp", f.exp)?),
        tombstone_until: Timestamp(number("tomb", f.tomb)?),
        claimed_at: Timestamp(number("at", f.at)?),
        response,
        // Records written before attempts were stored have none: 0.
        attempt: match f.att {
            Some(v) => number("att", Some(v))?,
            None => 0,
        },
        // Only shown to operators: a name that is not UTF-8 is shown
        // approximately rather than make the record unreadable.
        holder: f
            .hold
            .filter(|h| !h.is_empty())
            .map(|h| Arc::from(String::from_utf8_lossy(&h))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use idem_core::{IdempotencyKey, Scope};

    fn id(scope: &str, key: &str) -> RecordId {
        RecordId {
            scope: Scope::from_stored(scope),
            key: IdempotencyKey::parse(key.as_bytes()).unwrap(),
        }
    }

    #[test]
    fn keys_never_collide_and_carry_one_hash_tag() {
        let a = record_key("idem", &id("a:b", "c"));
        let b = record_key("idem", &id("a", "b:c"));
        assert_ne!(a, b);
        for k in [&a, &b] {
            let open = k.find('{').unwrap();
            let close = k[open..].find('}').unwrap() + open;
            let tag = &k[open + 1..close];
            assert_eq!(tag.len(), 3, "{k}");
        }
        let rid = id("s", "{weird}key}");
        let k = record_key("idem", &rid);
        assert!(k.starts_with(&format!("idem:{{{:03x}}}:r:1:s:", shard(&rid))));
        assert_eq!(
            &due_key("idem", shard(&rid))[..9],
            &k[..9],
            "record and due index share the tag"
        );
    }

    #[test]
    fn shards_are_stable_and_spread() {
        // Key names depend on it: it must never change.
        assert_eq!(shard(&id("global", "k1")), shard(&id("global", "k1")));
        assert_eq!(shard(&id("global", "k1")), 0xe8);
        let mut seen = [0usize; SHARDS];
        for i in 0..10_000 {
            seen[shard(&id("s", &format!("key-{i}")))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 10), "{seen:?}");
    }

    #[test]
    fn headers_round_trip_and_damage_is_an_error() {
        let h = vec![
            ("x-a".to_owned(), Bytes::from_static(b"\x00\xff\r\n")),
            (String::new(), Bytes::new()),
            ("x-a".to_owned(), Bytes::from_static(b"2")),
        ];
        let enc = encode_headers(&h).unwrap();
        assert_eq!(decode_headers(Some(enc.clone())).unwrap(), h);
        assert!(encode_headers(&[]).unwrap().is_empty());
        // Every prefix of a one-header encoding is damaged (a longer list
        // could be cut at a header boundary into a valid shorter one).
        let one = encode_headers(&[("name".into(), Bytes::from_static(b"value"))]).unwrap();
        for cut in 1..one.len() {
            assert!(decode_headers(Some(one[..cut].to_vec())).is_err(), "{cut}");
        }
        assert!(decode_headers(Some(vec![9, 0])).is_err());
    }

    #[test]
    fn a_hash_with_a_missing_field_is_damaged_not_misread() {
        let reply = Value::Array(vec![
            Value::BulkString(b"st".to_vec()),
            Value::BulkString(b"1".to_vec()),
        ]);
        let err = record_from_hash(id("s", "k"), reply).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(record_from_hash(id("s", "k"), Value::Array(vec![]))
            .unwrap()
            .is_none());
    }
}
