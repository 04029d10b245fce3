//! etcd's Watch service: one bidirectional stream per call.
//!
//! The client sends create, cancel and progress requests on its half; this
//! member answers on the other with `WatchResponse`s: `created` (or
//! `created` + `canceled` with a reason when the request is refused),
//! events, `canceled` (by request, or with `compact_revision` when the
//! watcher's revisions were compacted away), and progress notifications.
//! Every response has the usual header (cluster, member, revision, term);
//! an event response's revision is one the watcher has been sent every
//! event up to.
//!
//! Two tasks serve a call. The request task hands each request to the
//! member's [`crate::watch::WatchHub`]; the response task takes the hub's
//! messages for this stream, adds `prev_kv` (a store read at the event's
//! revision - 1), splits a response into fragments when the watcher asked
//! for them and the response exceeds etcd's request limit (and otherwise,
//! above 3 MiB, into whole responses between revisions, which clients with a
//! 4 MiB message limit can read: [`SPLIT_ABOVE`]), and sends
//! progress notifications every `--watch-progress-notify-interval-ms` to
//! watchers that asked for them and received nothing meanwhile. When the
//! client stops reading, the response task waits on the gRPC send; the
//! hub's bound on this stream then sets its watchers aside, and they catch
//! up from history once the client reads again. A client that only closes
//! its request half keeps its watchers (as with etcd); the stream ends
//! when the client goes away.
//!
//! The request types' `oneof` is not exported by `etcd-client`, so each
//! request is re-read through the small wire types below, which follow
//! etcd's `rpc.proto` field numbers.

use std::collections::HashMap;

use etcd_client::proto::{PbEvent, PbWatchRequest, PbWatchResponse, PbWatchService};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::GrpcApi;
use crate::api::MAX_VALUE_BYTES;
use crate::etcd_wire::kv_out;
use crate::watch::{CreateWatch, EventKind, Outgoing, StreamHandle, StreamReceiver};

/// Responses converted and waiting for gRPC to send them.
const SEND_BUFFER: usize = 16;

pub struct WatchService {
    api: GrpcApi,
}

impl WatchService {
    pub fn new(api: GrpcApi) -> WatchService {
        WatchService { api }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireRequest {
    #[prost(oneof = "WireUnion", tags = "1, 2, 3")]
    union: Option<WireUnion>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum WireUnion {
    #[prost(message, tag = "1")]
    Create(WireCreate),
    #[prost(message, tag = "2")]
    Cancel(WireCancel),
    #[prost(message, tag = "3")]
    Progress(WireProgress),
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireCreate {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    start_revision: i64,
    #[prost(bool, tag = "4")]
    progress_notify: bool,
    /// etcd's FilterType: 0 NOPUT, 1 NODELETE.
    #[prost(int32, repeated, tag = "5")]
    filters: Vec<i32>,
    #[prost(bool, tag = "6")]
    prev_kv: bool,
    #[prost(int64, tag = "7")]
    watch_id: i64,
    #[prost(bool, tag = "8")]
    fragment: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireCancel {
    #[prost(int64, tag = "1")]
    watch_id: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireProgress {}

/// etcd's filter values.
const FILTER_NOPUT: i32 = 0;
const FILTER_NODELETE: i32 = 1;

/// What a client asked on its half of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClientRequest {
    Create(CreateWatch),
    Cancel(i64),
    Progress,
}

/// A request as the hub takes it; `None` for one without a known kind
/// (etcd ignores those and keeps the stream).
fn decode(pb: &PbWatchRequest) -> Option<ClientRequest> {
    let wire = WireRequest::decode(pb.encode_to_vec().as_slice()).ok()?;
    Some(match wire.union? {
        WireUnion::Create(c) => ClientRequest::Create(CreateWatch {
            key: c.key,
            range_end: c.range_end,
            start_revision: c.start_revision,
            watch_id: c.watch_id,
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&FILTER_NOPUT),
            no_delete: c.filters.contains(&FILTER_NODELETE),
            progress_notify: c.progress_notify,
            fragment: c.fragment,
        }),
        WireUnion::Cancel(c) => ClientRequest::Cancel(c.watch_id),
        WireUnion::Progress(_) => ClientRequest::Progress,
    })
}

#[tonic::async_trait]
impl PbWatchService for WatchService {
    type WatchStream = ReceiverStream<Result<PbWatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<PbWatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut requests = request.into_inner();
        let (handle, receiver) = self.api.node.watch.open_stream();
        let (tx, rx) = mpsc::channel(SEND_BUFFER);
        let requests_handle = handle.clone();
        tokio::spawn(async move {
            while let Ok(Some(pb)) = requests.message().await {
                match decode(&pb) {
                    Some(ClientRequest::Create(create)) => requests_handle.create(create),
                    Some(ClientRequest::Cancel(watch_id)) => requests_handle.cancel(watch_id),
                    Some(ClientRequest::Progress) => requests_handle.request_progress(),
                    None => {}
                }
            }
        });
        tokio::spawn(respond(self.api.clone(), handle, receiver, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The response task of one call (see the module documentation).
async fn respond(
    api: GrpcApi,
    handle: StreamHandle,
    mut receiver: StreamReceiver,
    tx: mpsc::Sender<Result<PbWatchResponse, Status>>,
) {
    let interval = api.config.watch_progress_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    // Watchers that asked for progress notifications: true while nothing
    // was sent to them since the last tick.
    let mut idle: HashMap<i64, bool> = HashMap::new();
    loop {
        let message = tokio::select! {
            message = receiver.recv() => match message {
                Some(message) => message,
                None => return,
            },
            _ = ticker.tick() => {
                let due: Vec<i64> = idle.iter().filter(|(_, idle)| **idle).map(|(id, _)| *id).collect();
                handle.notify_progress(&due);
                idle.values_mut().for_each(|idle| *idle = true);
                continue;
            }
            _ = tx.closed() => return,
        };
        match &message {
            Outgoing::Created {
                watch_id,
                progress_notify: true,
                ..
            } => {
                idle.insert(*watch_id, true);
            }
            Outgoing::Events { watch_id, .. } => {
                if let Some(idle) = idle.get_mut(watch_id) {
                    *idle = false;
                }
            }
            Outgoing::Canceled { watch_id, .. } => {
                idle.remove(watch_id);
            }
            _ => {}
        }
        for response in responses(&api, message) {
            if tx.send(Ok(response)).await.is_err() {
                return;
            }
        }
    }
}

/// The `WatchResponse`s of one hub message.
fn responses(api: &GrpcApi, message: Outgoing) -> Vec<PbWatchResponse> {
    match message {
        Outgoing::Created {
            watch_id, revision, ..
        } => vec![PbWatchResponse {
            header: api.header(revision),
            watch_id,
            created: true,
            ..PbWatchResponse::default()
        }],
        Outgoing::Refused { revision, reason } => vec![PbWatchResponse {
            header: api.header(revision),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..PbWatchResponse::default()
        }],
        Outgoing::Canceled {
            watch_id,
            revision,
            compact_revision,
        } => vec![PbWatchResponse {
            header: api.header(revision),
            watch_id,
            canceled: true,
            compact_revision,
            ..PbWatchResponse::default()
        }],
        Outgoing::Progress { watch_id, revision } => vec![PbWatchResponse {
            header: api.header(revision),
            watch_id,
            ..PbWatchResponse::default()
        }],
        Outgoing::Events {
            watch_id,
            revision,
            events,
            prev_kv,
            fragment,
        } => {
            let kv = &api.node.kv;
            let events = events
                .iter()
                .map(|event| PbEvent {
                    r#type: match event.kind {
                        EventKind::Put => 0,
                        EventKind::Delete => 1,
                    },
                    kv: Some(kv_out(event.kv.clone())),
                    prev_kv: if prev_kv {
                        event.previous(kv).map(kv_out)
                    } else {
                        None
                    },
                })
                .collect();
            let response = PbWatchResponse {
                header: api.header(revision),
                watch_id,
                events,
                ..PbWatchResponse::default()
            };
            if fragment {
                fragments(response, MAX_VALUE_BYTES)
            } else {
                split_at_revisions(response, SPLIT_ABOVE)
            }
        }
    }
}

/// Encoded size above which an event response the watcher did not ask to
/// fragment is sent as several whole responses, split between revisions.
/// gRPC clients built on tonic (the `etcd-client` crate), grpc-java and
/// others refuse a message over 4 MiB unless told otherwise, and a catch-up
/// of up to 1,000 revisions (after a snapshot, or a slow watcher) can be far
/// larger; etcd's Go client accepts up to 2 GiB, so etcd never needed this.
const SPLIT_ABOVE: usize = 3 << 20;

/// Splits an event response of `limit` encoded bytes or more into several
/// responses, each under the limit where revisions allow (a revision's
/// events stay together), in order. Every part but the last reports the
/// last revision it carries as its header revision: the watcher has then
/// been sent every event up to it, as a catch-up message of 1,000
/// revisions does.
fn split_at_revisions(response: PbWatchResponse, limit: usize) -> Vec<PbWatchResponse> {
    if response.events.len() < 2 || response.encoded_len() < limit {
        return vec![response];
    }
    let revision_of = |e: &PbEvent| e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
    let mut template = response.clone();
    template.events.clear();
    let overhead = template.encoded_len();
    let mut out: Vec<PbWatchResponse> = Vec::new();
    let mut current = template.clone();
    let mut bytes = overhead;
    let mut events = response.events.into_iter().peekable();
    while let Some(first) = events.next() {
        // One revision's events, kept together.
        let revision = revision_of(&first);
        let mut group = vec![first];
        while let Some(next) = events.next_if(|e| revision_of(e) == revision) {
            group.push(next);
        }
        // Each event costs its encoding and a field header of a few bytes.
        let size: usize = group.iter().map(|e| e.encoded_len() + 8).sum();
        if !current.events.is_empty() && bytes + size >= limit {
            let last = current.events.last().map_or(0, revision_of);
            if let Some(header) = current.header.as_mut() {
                header.revision = last;
            }
            out.push(std::mem::replace(&mut current, template.clone()));
            bytes = overhead;
        }
        bytes += size;
        current.events.extend(group);
    }
    out.push(current);
    out
}

/// etcd's fragmentation: a response of at least `limit` bytes with more
/// than one event is sent as several, each under the limit where events
/// allow (an event is never split), all but the last marked `fragment`.
fn fragments(response: PbWatchResponse, limit: usize) -> Vec<PbWatchResponse> {
    if response.events.len() < 2 || response.encoded_len() < limit {
        return vec![response];
    }
    let mut template = response.clone();
    template.events.clear();
    template.fragment = true;
    let mut out = Vec::new();
    let mut current = template.clone();
    for event in response.events {
        current.events.push(event);
        if current.events.len() > 1 && current.encoded_len() >= limit {
            let overflow = current.events.pop();
            out.push(std::mem::replace(&mut current, template.clone()));
            current.events.extend(overflow);
        }
    }
    current.fragment = false;
    out.push(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::PbKeyValue;

    fn event(size: usize) -> PbEvent {
        PbEvent {
            r#type: 0,
            kv: Some(PbKeyValue {
                key: b"k".to_vec(),
                value: vec![b'v'; size],
                ..PbKeyValue::default()
            }),
            prev_kv: None,
        }
    }

    /// A large response is split between revisions, in order, each part
    /// under the limit, every part but the last reporting its own last
    /// revision; a small one is left alone.
    #[test]
    fn a_large_response_is_split_between_revisions() {
        let at = |revision: i64, size: usize| {
            let mut e = event(size);
            if let Some(kv) = e.kv.as_mut() {
                kv.mod_revision = revision;
            }
            e
        };
        let response = PbWatchResponse {
            header: Some(etcd_client::proto::PbResponseHeader {
                revision: 9,
                ..Default::default()
            }),
            watch_id: 4,
            events: vec![at(2, 400), at(2, 400), at(3, 400), at(5, 400), at(6, 400)],
            ..PbWatchResponse::default()
        };
        let parts = split_at_revisions(response.clone(), 1000);
        let revisions: Vec<Vec<i64>> = parts
            .iter()
            .map(|p| {
                p.events
                    .iter()
                    .map(|e| e.kv.as_ref().unwrap().mod_revision)
                    .collect()
            })
            .collect();
        assert_eq!(revisions, vec![vec![2, 2], vec![3, 5], vec![6]]);
        let headers: Vec<i64> = parts
            .iter()
            .map(|p| p.header.as_ref().unwrap().revision)
            .collect();
        assert_eq!(headers, vec![2, 5, 9]);
        assert!(
            parts
                .iter()
                .all(|p| p.encoded_len() < 1000 && p.watch_id == 4 && !p.fragment)
        );
        assert_eq!(
            split_at_revisions(response.clone(), 1 << 20),
            vec![response]
        );
    }

    #[test]
    fn large_responses_are_fragmented_without_splitting_events() {
        let response = PbWatchResponse {
            watch_id: 3,
            events: (0..5).map(|_| event(400)).collect(),
            ..PbWatchResponse::default()
        };
        let parts = fragments(response.clone(), 1000);
        assert!(parts.len() > 1);
        let flags: Vec<bool> = parts.iter().map(|p| p.fragment).collect();
        assert!(flags[..flags.len() - 1].iter().all(|f| *f));
        assert!(!flags[flags.len() - 1]);
        let joined: Vec<PbEvent> = parts.iter().flat_map(|p| p.events.clone()).collect();
        assert_eq!(joined, response.events);
        assert!(parts.iter().all(|p| p.watch_id == 3));
        // Small, or a single event: as is.
        assert_eq!(fragments(response.clone(), 1 << 20), vec![response]);
        let one = PbWatchResponse {
            events: vec![event(5000)],
            ..PbWatchResponse::default()
        };
        assert_eq!(fragments(one.clone(), 1000), vec![one]);
    }

    #[test]
    fn requests_are_read_with_etcds_field_numbers() {
        // Through etcd-client's own message type: a field whose number
        // differed from etcd's would be dropped or misread on the way.
        let wire = WireRequest {
            union: Some(WireUnion::Create(WireCreate {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                start_revision: 7,
                progress_notify: true,
                filters: vec![FILTER_NODELETE],
                prev_kv: true,
                watch_id: 9,
                fragment: true,
            })),
        };
        let pb = PbWatchRequest::decode(wire.encode_to_vec().as_slice()).unwrap();
        assert_eq!(pb.encode_to_vec(), wire.encode_to_vec());
        assert_eq!(
            decode(&pb),
            Some(ClientRequest::Create(CreateWatch {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                start_revision: 7,
                watch_id: 9,
                prev_kv: true,
                no_put: false,
                no_delete: true,
                progress_notify: true,
                fragment: true,
            }))
        );
        let cancel = WireRequest {
            union: Some(WireUnion::Cancel(WireCancel { watch_id: 4 })),
        };
        let pb = PbWatchRequest::decode(cancel.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decode(&pb), Some(ClientRequest::Cancel(4)));
        let progress = WireRequest {
            union: Some(WireUnion::Progress(WireProgress {})),
        };
        let pb = PbWatchRequest::decode(progress.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decode(&pb), Some(ClientRequest::Progress));
        assert_eq!(decode(&PbWatchRequest::default()), None);
    }
}
