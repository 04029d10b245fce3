//! The HTTP API's watch: `curl -N 'http://HOST/<key>?watch=true&rev=N'`.
//!
//! ```text
//! GET /<key>?watch=true            changes of <key> from the next revision on
//!     &rev=N                       from revision N on (history first, then live; 0: from now)
//!     &prefix=true                 every key starting with <key> (GET /?watch=true&prefix=true: every key)
//!     &prev_kv=true                each change with the key's previous state
//! ```
//!
//! The answer is `200` with `Content-Type: application/x-ndjson` and a body
//! that never ends on its own: newline-delimited JSON, one object a line.
//! The first line says the watch exists and from which store revision:
//!
//! ```json
//! {"created":true,"revision":7}
//! ```
//!
//! then one line per change, in revision order (changes of one transaction
//! share `mod_revision`), with the key's fields as in a GET listing
//! ([`super::read_query`]: a key or value that is valid UTF-8 is a string
//! under `key`/`value`, any other under `key_base64`/`value_base64`; `lease`
//! appears when non-zero; a delete has no value):
//!
//! ```json
//! {"type":"PUT","key":"app/a","create_revision":8,"mod_revision":8,"version":1,"value":"x"}
//! {"type":"DELETE","key":"app/a","create_revision":0,"mod_revision":9,"version":0,"prev_kv":{...}}
//! ```
//!
//! The stream goes on until the client disconnects. If the watch cannot go
//! on, a last line says why and the body ends: a start revision (or the
//! point a slow reader fell behind to) that was compacted away gives
//! `{"error":"etcdserver: mvcc: required revision has been compacted","compact_revision":N}`.
//! A bad parameter is a `400` before any streaming, naming it and what is
//! accepted. The watch is served by the member asked (a follower included)
//! from its own store, with the guarantees of [`crate::watch`].

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::grpc::status::COMPACTED;
use super::http::error;
use super::read_query::{flag, non_negative, prefix_end, record};
use crate::raft::NodeHandle;
use crate::state_machine::KvReader;
use crate::watch::{CreateWatch, EventKind, Outgoing};

/// The parameters a watch accepts, for error messages.
pub const ACCEPTED: &str = "watch, rev, prefix, prev_kv";

/// A watch GET's parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchQuery {
    pub rev: i64,
    pub prefix: bool,
    pub prev_kv: bool,
}

/// Whether a GET asks for a watch (`watch` given and not `false`).
pub fn is_watch(query: Option<&str>) -> bool {
    query.unwrap_or("").split('&').any(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        name == "watch" && value != "false"
    })
}

impl WatchQuery {
    pub fn parse(query: Option<&str>) -> Result<WatchQuery, String> {
        let mut q = WatchQuery::default();
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
                "watch" => {
                    flag(name, value)?;
                }
                "rev" => q.rev = non_negative(name, value, "0 means from the next revision")?,
                "prefix" => q.prefix = flag(name, value)?,
                "prev_kv" => q.prev_kv = flag(name, value)?,
                other => {
                    return Err(format!(
                        "unknown query parameter {other:?}; a watch accepts {ACCEPTED}"
                    ));
                }
            }
        }
        Ok(q)
    }
}

/// Starts a watch of `key` and answers with its stream of lines.
pub fn watch(node: &NodeHandle, key: Vec<u8>, query: Option<&str>) -> Response {
    let query = match WatchQuery::parse(query) {
        Ok(query) => query,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let (key, range_end) = if query.prefix {
        if key.is_empty() {
            (Vec::new(), vec![0])
        } else {
            let end = prefix_end(&key);
            (key, end)
        }
    } else if key.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty key: watch /<key>?watch=true, or every key with /?watch=true&prefix=true",
        );
    } else {
        (key, Vec::new())
    };
    let (handle, mut receiver) = node.watch.open_stream();
    handle.create(CreateWatch {
        key,
        range_end,
        start_revision: query.rev,
        prev_kv: query.prev_kv,
        ..CreateWatch::default()
    });
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let kv = node.kv.clone();
    tokio::spawn(async move {
        // The handle keeps the stream's requests side; the receiver's drop
        // (when this task ends) removes the watcher.
        let _handle = handle;
        loop {
            let message = tokio::select! {
                message = receiver.recv() => message,
                _ = tx.closed() => None,
            };
            let Some(message) = message else {
                return;
            };
            let (lines, last) = lines(&kv, message);
            for line in lines {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            if last {
                return;
            }
        }
    });
    let mut response = (StatusCode::OK, Body::from_stream(ReceiverStream::new(rx))).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

fn line(value: Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}

/// The lines of one hub message, and whether the stream ends after them.
fn lines(kv: &KvReader, message: Outgoing) -> (Vec<Bytes>, bool) {
    match message {
        Outgoing::Created { revision, .. } => (
            vec![line(json!({"created": true, "revision": revision}))],
            false,
        ),
        Outgoing::Refused { reason, .. } => (vec![line(json!({ "error": reason }))], true),
        Outgoing::Canceled {
            compact_revision, ..
        } if compact_revision > 0 => (
            vec![line(
                json!({"error": COMPACTED, "compact_revision": compact_revision}),
            )],
            true,
        ),
        Outgoing::Canceled { .. } => (Vec::new(), true),
        Outgoing::Progress { .. } => (Vec::new(), false),
        Outgoing::Events {
            events, prev_kv, ..
        } => {
            let lines = events
                .iter()
                .map(|event| {
                    let put = event.kind == EventKind::Put;
                    let mut out = Map::new();
                    out.insert("type".into(), json!(if put { "PUT" } else { "DELETE" }));
                    if let Value::Object(fields) = record(&event.kv, put) {
                        out.extend(fields);
                    }
                    if prev_kv && let Some(previous) = event.previous(kv) {
                        out.insert("prev_kv".into(), record(&previous, true));
                    }
                    line(Value::Object(out))
                })
                .collect();
            (lines, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_parameters_are_parsed_and_checked() {
        assert!(is_watch(Some("watch=true&rev=3")));
        assert!(is_watch(Some("prefix&watch")));
        assert!(!is_watch(Some("watch=false")));
        assert!(!is_watch(Some("rev=3")));
        assert!(!is_watch(None));
        let q = WatchQuery::parse(Some("watch=true&rev=5&prefix=true&prev_kv")).unwrap();
        assert_eq!(
            q,
            WatchQuery {
                rev: 5,
                prefix: true,
                prev_kv: true
            }
        );
        let err = |q: &str| WatchQuery::parse(Some(q)).unwrap_err();
        assert!(err("watch&limit=3").contains("a watch accepts watch, rev, prefix, prev_kv"));
        assert!(err("watch&rev=-1").contains("rev must be an integer of 0 or more"));
        assert!(err("watch&prefix=maybe").contains("prefix=true or prefix=false"));
        assert!(err("watch&watch").contains("more than once"));
    }
}
