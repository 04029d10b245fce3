//! The query parameters of a GET on the HTTP API, and the JSON listing a
//! range answers with.
//!
//! ```text
//! GET /<key>                          the raw value (404 if absent)
//! GET /<key>?rev=N                    the raw value as of revision N
//! GET /<prefix>?prefix                every key starting with <prefix>, as a listing
//! GET /?prefix                        every key
//! GET /<key>?from_key                 every key >= <key>, as a listing
//!     &limit=N                        at most N keys (0: no limit); "more" says if there were more
//!     &keys_only                      the listing without values
//!     &count_only                     only the count, no keys
//!     &consistency=serializable       read this member's store at once (default: linearizable)
//! ```
//!
//! A GET answers the raw value when it names one key, with at most `rev`
//! and `consistency`; any of `prefix`, `from_key`, `limit`, `keys_only` or
//! `count_only` turns the answer into a listing:
//!
//! ```json
//! {"revision": 9, "count": 2, "more": false,
//!  "kvs": [{"key": "app/a", "create_revision": 2, "mod_revision": 5, "version": 2, "value": "x"},
//!          {"key": "app/b", "create_revision": 3, "mod_revision": 3, "version": 1, "value_base64": "/wA="}]}
//! ```
//!
//! `revision` is the store's revision (as in `X-Metcd-Revision`), `count`
//! the number of keys in the range before `limit`. A key or value that is
//! valid UTF-8 is written as a JSON string under `key`/`value`; one that is
//! not is written in standard base64 under `key_base64`/`value_base64`
//! instead, so no byte is lost or replaced. `lease` appears when non-zero.
//!
//! A flag (`prefix`, `from_key`, `keys_only`, `count_only`) is given bare
//! or as `=true`/`=false`. An unknown parameter, a repeated one, or a value
//! that is not accepted is a 400 that names it and what is accepted.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::mvcc::KeyValue;
use crate::mvcc::txn::{RangeRequest, RangeResponse};

/// The parameters a GET accepts, for error messages.
pub const ACCEPTED: &str = "consistency, prefix, from_key, limit, rev, keys_only, count_only";

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// After a read index round through the leader (the default).
    #[default]
    Linearizable,
    /// From this member's store at once; possibly stale.
    Serializable,
}

/// A GET's parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadQuery {
    pub consistency: Consistency,
    pub prefix: bool,
    pub from_key: bool,
    pub limit: Option<i64>,
    pub rev: i64,
    pub keys_only: bool,
    pub count_only: bool,
}

pub(super) fn flag(name: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("") | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!(
            "query parameter {name}={other:?} is not accepted: give ?{name} alone, or {name}=true or {name}=false"
        )),
    }
}

pub(super) fn non_negative(name: &str, value: Option<&str>, meaning: &str) -> Result<i64, String> {
    value
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            format!(
                "query parameter {name}={:?} is not accepted: {name} must be an integer of 0 or more ({meaning})",
                value.unwrap_or("")
            )
        })
}

impl ReadQuery {
    /// Parses a GET's query string; the error says which parameter was
    /// wrong and what is accepted.
    pub fn parse(query: Option<&str>) -> Result<ReadQuery, String> {
        let mut q = ReadQuery::default();
        let mut seen: Vec<&str> = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (pair, None),
            };
            if seen.contains(&name) {
                return Err(format!("query parameter {name} is given more than once"));
            }
            seen.push(name);
            match name {
                "consistency" => {
                    q.consistency = match value {
                        Some("linearizable") => Consistency::Linearizable,
                        Some("serializable") => Consistency::Serializable,
                        other => {
                            return Err(format!(
                                "consistency {:?} is not known; use linearizable (default) or serializable",
                                other.unwrap_or("")
                            ));
                        }
                    }
                }
                "prefix" => q.prefix = flag(name, value)?,
                "from_key" => q.from_key = flag(name, value)?,
                "keys_only" => q.keys_only = flag(name, value)?,
                "count_only" => q.count_only = flag(name, value)?,
                "limit" => q.limit = Some(non_negative(name, value, "0 means no limit")?),
                "rev" => q.rev = non_negative(name, value, "0 means the current revision")?,
                other => {
                    return Err(format!(
                        "unknown query parameter {other:?}; a GET accepts {ACCEPTED}"
                    ));
                }
            }
        }
        if q.prefix && q.from_key {
            return Err("prefix and from_key cannot be given together: choose one".into());
        }
        Ok(q)
    }

    /// Whether the answer is a listing rather than one raw value.
    pub fn is_listing(&self) -> bool {
        self.prefix || self.from_key || self.limit.is_some() || self.keys_only || self.count_only
    }

    /// Whether the (path) key may be empty: a range from the first key.
    pub fn is_range(&self) -> bool {
        self.prefix || self.from_key
    }

    /// The store's range request for `key`.
    pub fn range(&self, key: Vec<u8>) -> RangeRequest {
        // etcd's convention: "\0" as the key or the end means "from the
        // first key" or "to the last".
        let (key, range_end) = if self.prefix {
            if key.is_empty() {
                (vec![0], vec![0])
            } else {
                let end = prefix_end(&key);
                (key, end)
            }
        } else if self.from_key {
            (if key.is_empty() { vec![0] } else { key }, vec![0])
        } else {
            (key, Vec::new())
        };
        RangeRequest {
            key,
            range_end,
            limit: self.limit.unwrap_or(0),
            revision: self.rev,
            keys_only: self.keys_only,
            count_only: self.count_only,
            ..RangeRequest::default()
        }
    }
}

/// The first key after every key starting with `prefix`: the prefix with
/// its last byte below 0xff incremented (trailing 0xff bytes dropped);
/// "\0" (no end) if every byte is 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Text if it is UTF-8, else base64 under `<name>_base64`.
fn put_bytes(out: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            out.insert(name.into(), Value::String(text.into()));
        }
        Err(_) => {
            out.insert(
                format!("{name}_base64"),
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            );
        }
    }
}

/// One key's JSON object (as in a listing, and in the HTTP watch's lines).
pub fn record(kv: &KeyValue, with_value: bool) -> Value {
    let mut out = Map::new();
    put_bytes(&mut out, "key", &kv.key);
    out.insert("create_revision".into(), json!(kv.create_revision));
    out.insert("mod_revision".into(), json!(kv.mod_revision));
    out.insert("version".into(), json!(kv.version));
    if with_value {
        put_bytes(&mut out, "value", &kv.value);
    }
    if kv.lease != 0 {
        out.insert("lease".into(), json!(kv.lease));
    }
    Value::Object(out)
}

/// The JSON listing of a range's answer.
pub fn listing(answer: &RangeResponse, keys_only: bool) -> Value {
    json!({
        "revision": answer.revision,
        "count": answer.count,
        "more": answer.more,
        "kvs": answer.kvs.iter().map(|kv| record(kv, !keys_only)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_parsed_and_checked() {
        let q = ReadQuery::parse(Some("prefix&limit=2&rev=5&keys_only=true")).unwrap();
        assert!(q.prefix && q.keys_only && !q.count_only);
        assert_eq!((q.limit, q.rev), (Some(2), 5));
        assert!(q.is_listing());
        let plain = ReadQuery::parse(Some("rev=3&consistency=serializable")).unwrap();
        assert!(!plain.is_listing());
        assert_eq!(plain.consistency, Consistency::Serializable);
        let err = |q: &str| ReadQuery::parse(Some(q)).unwrap_err();
        assert!(err("pre=1").contains("unknown query parameter \"pre\""));
        assert!(err("limit=-1").contains("limit must be an integer of 0 or more"));
        assert!(err("rev=x").contains("rev must be an integer"));
        assert!(err("prefix=yes").contains("prefix=true or prefix=false"));
        assert!(err("prefix&from_key").contains("cannot be given together"));
        assert!(err("rev=1&rev=2").contains("more than once"));
        assert!(err("consistency=strong").contains("serializable"));
    }

    #[test]
    fn a_prefix_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        let q = ReadQuery::parse(Some("prefix")).unwrap();
        let all = q.range(Vec::new());
        assert_eq!((all.key, all.range_end), (vec![0], vec![0]));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_listed_in_base64() {
        let answer = RangeResponse {
            kvs: vec![KeyValue {
                key: b"k".to_vec(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                value: vec![0xff, 0x00],
                lease: 0,
            }],
            more: false,
            count: 1,
            revision: 2,
        };
        let kv = &listing(&answer, false)["kvs"][0];
        assert_eq!(kv["key"], "k");
        assert_eq!(kv["value_base64"], "/wA=");
        assert!(kv.get("value").is_none());
    }
}
