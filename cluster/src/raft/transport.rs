//! Peer transport: raft messages between nodes over TCP on loopback.
//!
//! A connection opens with the 8-byte preamble [`PREAMBLE`], so that
//! anything else that connects to the peer port (an HTTP client given the
//! wrong address) is turned away at once instead of being read as a frame.
//! Each message then travels as one frame, `length u32 LE | protobuf Message`.
//! Outbound, every peer has its own task and its own bounded queue: the Raft
//! thread only ever does a non-blocking `try_send`, and when a peer is down
//! or slow its queue fills and further messages to it are dropped. Raft is
//! built for lossy networks (it retransmits appends and heartbeats), so a
//! dead peer costs nothing but the dropped messages and never stalls the
//! Ready loop or the other peers. The task reconnects with exponential
//! back-off (50 ms doubling to 1 s), looking the peer's address up in the
//! shared member table each time, so a member whose address was learned
//! from a membership change is reached without a restart.
//!
//! Snapshot messages do not go through the queue: each starts a
//! `super::snapshot_stream` on its own connection, which streams the
//! snapshot file and reports the outcome to raft (`report_snapshot`), so a
//! snapshot of any size neither blocks the appends behind it nor has to
//! fit in a frame.
//!
//! Inbound, one task per accepted connection reads the preamble: a peer
//! connection's frames are decoded and each message handed to the Raft
//! thread; a snapshot stream's preamble hands the connection to
//! `snapshot_stream::receive`.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::handle::Request;
use super::snapshot_stream;
use crate::state_machine::Members;

/// Messages queued per peer before further ones are dropped.
const PEER_QUEUE: usize = 1024;
/// Frames above this are refused. Appends are capped by raft's
/// `max_size_per_msg` (plus one entry); snapshots never travel as frames.
const MAX_FRAME: u32 = 64 << 20;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// First bytes of every peer connection: protocol name and version.
pub const PREAMBLE: &[u8; 8] = b"METCDRP1";
/// How long an inbound connection may take to send its preamble.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The sending side, owned by the Raft thread.
pub struct Transport {
    runtime: tokio::runtime::Handle,
    members: Members,
    node: Sender<Request>,
    peers: HashMap<u64, mpsc::Sender<Message>>,
    dropped: u64,
    /// Where the snapshot files that snapshot messages refer to live.
    snapshots: std::path::PathBuf,
}

impl Transport {
    pub fn new(
        runtime: tokio::runtime::Handle,
        members: Members,
        node: Sender<Request>,
        snapshots: std::path::PathBuf,
    ) -> Self {
        Transport {
            runtime,
            members,
            node,
            peers: HashMap::new(),
            dropped: 0,
            snapshots,
        }
    }

    /// Queues `message` for its peer without ever blocking; a snapshot
    /// message starts a snapshot stream instead.
    pub fn send(&mut self, message: Message) {
        let to = message.to;
        if message.get_msg_type() == MessageType::MsgSnapshot {
            self.runtime.spawn(snapshot_stream::send(
                to,
                self.members.clone(),
                message,
                self.snapshots.clone(),
                self.node.clone(),
            ));
            return;
        }
        let queue = self.peers.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            self.runtime
                .spawn(peer_task(to, self.members.clone(), rx, self.node.clone()));
            tx
        });
        if let Err(err) = queue.try_send(message) {
            let message = match err {
                mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
            };
            self.dropped += 1;
            if message.get_msg_type() == MessageType::MsgSnapshot {
                let _ = self.node.send(Request::SnapshotReport { to, ok: false });
            }
            if self.dropped.is_power_of_two() {
                tracing::debug!(
                    peer = to,
                    dropped = self.dropped,
                    "peer queue full; dropping raft messages"
                );
            }
        }
    }

    /// Forgets a removed peer; its task ends when the queue closes.
    pub fn remove(&mut self, id: u64) {
        self.peers.remove(&id);
    }
}

fn encode(message: &Message) -> Option<Vec<u8>> {
    let body = message.write_to_bytes().ok()?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    Some(frame)
}

async fn peer_task(
    to: u64,
    members: Members,
    mut queue: mpsc::Receiver<Message>,
    node: Sender<Request>,
) {
    let mut backoff = MIN_BACKOFF;
    let report_failure = |message: &Message| {
        if message.get_msg_type() == MessageType::MsgSnapshot {
            let _ = node.send(Request::SnapshotReport { to, ok: false });
        }
    };
    loop {
        let address = members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&to)
            .map(|m| m.peer.clone());
        let stream = match address {
            Some(address) => TcpStream::connect(&address).await.ok(),
            None => None,
        };
        let Some(stream) = stream else {
            // Down or unknown: drop what is queued (raft will resend what
            // still matters) and try again later.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            loop {
                match queue.try_recv() {
                    Ok(message) => report_failure(&message),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            continue;
        };
        backoff = MIN_BACKOFF;
        let _ = stream.set_nodelay(true);
        let mut writer = BufWriter::new(stream);
        if writer.write_all(PREAMBLE).await.is_err() {
            continue;
        }
        loop {
            let Some(message) = queue.recv().await else {
                return;
            };
            let Some(frame) = encode(&message) else {
                continue;
            };
            let mut result = writer.write_all(&frame).await;
            if result.is_ok() && queue.is_empty() {
                result = writer.flush().await;
            }
            if result.is_err() {
                report_failure(&message);
                break;
            }
            if message.get_msg_type() == MessageType::MsgSnapshot {
                let _ = writer.flush().await;
                let _ = node.send(Request::SnapshotReport { to, ok: true });
            }
        }
    }
}

/// Accepts peer connections and feeds their messages to the Raft thread;
/// snapshot streams store their file in `incoming` first.
pub async fn serve(listener: TcpListener, node: Sender<Request>, incoming: std::path::PathBuf) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(MIN_BACKOFF).await;
            continue;
        };
        let node = node.clone();
        let incoming = incoming.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut stream = tokio::io::BufReader::new(stream);
            let mut preamble = [0u8; 8];
            match tokio::time::timeout(PREAMBLE_TIMEOUT, stream.read_exact(&mut preamble)).await {
                Ok(Ok(_)) if &preamble == PREAMBLE => {}
                Ok(Ok(_)) if &preamble == snapshot_stream::PREAMBLE => {
                    snapshot_stream::receive(stream, incoming, node).await;
                    return;
                }
                _ => {
                    tracing::warn!(
                        "a connection to the peer port did not start with the metcd peer preamble \
                         (is a client using the peer address?); closing it"
                    );
                    return;
                }
            }
            loop {
                let Ok(length) = stream.read_u32_le().await else {
                    return;
                };
                if length > MAX_FRAME {
                    tracing::warn!(
                        length,
                        "peer sent an oversized frame; closing the connection"
                    );
                    return;
                }
                // Read what arrives rather than allocating `length` up front.
                let mut body = Vec::new();
                match (&mut stream)
                    .take(u64::from(length))
                    .read_to_end(&mut body)
                    .await
                {
                    Ok(n) if n == length as usize => {}
                    _ => return,
                }
                match Message::parse_from_bytes(&body) {
                    Ok(message) if message.get_msg_type() == MessageType::MsgSnapshot => {
                        // Its data would have to come from a snapshot stream.
                        tracing::warn!("peer sent a snapshot as a frame; ignored");
                    }
                    Ok(message) => {
                        if node.send(Request::Raft(message)).is_err() {
                            return;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(%err, "peer sent a frame that is not a raft message; closing the connection");
                        return;
                    }
                }
            }
        });
    }
}
