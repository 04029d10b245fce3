//! Peer transport: raft messages between nodes over TCP.
//!
//! # The handshake
//!
//! A connection opens with a 32-byte hello: the magic [`PREAMBLE`]
//! (protocol name and version), then the sender's cluster id, the sender's
//! member id and the member id it means to reach (`u64` LE each). The
//! receiver answers with one verdict byte and a reason (`u16` LE length,
//! UTF-8), and accepts only a hello of its own cluster ([`ClusterId`]),
//! meant for its own member id, from a member that was not removed. A
//! refused sender logs the receiver's reason as it is ("peer 3 refused the
//! connection: this is cluster ..."), so a mixed-up address or a node of
//! another cluster shows up plainly on both sides; a node told it was
//! removed stops (see [`Transport::told_removed`]). Anything else that
//! connects to the peer port (an HTTP client given the wrong address) is
//! closed without an answer instead of being read as frames.
//!
//! After the handshake each message travels as one frame,
//! `length u32 LE | protobuf Message`, and every inbound message is checked
//! again: `to` must be this node and `from` the member the hello named,
//! otherwise the connection is closed. A member removed while a connection
//! from it is open is cut off at its next message.
//!
//! # Sending
//!
//! Every peer has its own task and its own bounded queue: the Raft thread
//! only ever does a non-blocking `try_send`, and when a peer is down or
//! slow its queue fills and further messages to it are dropped. Raft is
//! built for lossy networks (it retransmits appends and heartbeats), so a
//! dead peer costs nothing but the dropped messages and never stalls the
//! Ready loop or the other peers. The task reconnects with exponential
//! back-off (50 ms doubling to 1 s; straight to 1 s after a refusal),
//! looking the peer's address up in the shared member table each time, so
//! a member whose address was learned from a membership change is reached
//! without a restart.
//!
//! Snapshot messages do not go through the queue: each starts a
//! `super::snapshot_stream` on its own connection, which streams the
//! snapshot file and reports the outcome to raft (`report_snapshot`), so a
//! snapshot of any size neither blocks the appends behind it nor has to
//! fit in a frame.
//!
//! Inbound, one task per accepted connection decodes frames and hands each
//! message to the Raft thread. Bytes are counted per peer for `/metrics`.
//! A connection that opens with the snapshot stream's preamble instead is
//! handed to `snapshot_stream::receive` (the leader streams a snapshot file
//! over a connection of its own).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::handle::Request;
use super::identity::{ClusterId, Identity};
use super::snapshot_stream;
use crate::state_machine::{Members, Removed};

/// Messages queued per peer before further ones are dropped.
const PEER_QUEUE: usize = 1024;
/// Frames above this are refused. Appends are capped by raft's
/// `max_size_per_msg` (plus one entry); snapshots never travel as frames.
const MAX_FRAME: u32 = 64 << 20;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// First bytes of every peer connection: protocol name and version.
pub const PREAMBLE: &[u8; 8] = b"METCDRP2";
/// The hello: preamble, cluster id, from, to.
const HELLO_LEN: usize = 32;
/// How long either side may take to send its part of the handshake.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Longest reason accepted in a refusal.
const MAX_REASON: usize = 1024;

/// The first bytes of a connection: who sends, to whom, in which cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub cluster: ClusterId,
    pub from: u64,
    pub to: u64,
}

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[..8].copy_from_slice(PREAMBLE);
        out[8..16].copy_from_slice(&self.cluster.0.to_le_bytes());
        out[16..24].copy_from_slice(&self.from.to_le_bytes());
        out[24..32].copy_from_slice(&self.to.to_le_bytes());
        out
    }

    /// `None` if the bytes do not start with [`PREAMBLE`].
    pub fn decode(bytes: &[u8; HELLO_LEN]) -> Option<Hello> {
        if &bytes[..8] != PREAMBLE {
            return None;
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(w)
        };
        Some(Hello {
            cluster: ClusterId(word(8)),
            from: word(16),
            to: word(24),
        })
    }
}

/// The receiver's answer to a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Verdict {
    Accepted = 0,
    OtherCluster = 1,
    OtherMember = 2,
    Removed = 3,
    Malformed = 4,
}

impl Verdict {
    fn from_byte(byte: u8) -> Verdict {
        match byte {
            0 => Verdict::Accepted,
            1 => Verdict::OtherCluster,
            2 => Verdict::OtherMember,
            3 => Verdict::Removed,
            _ => Verdict::Malformed,
        }
    }

    /// The `reason` label of `metcd_network_peer_handshakes_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::OtherCluster => "other_cluster",
            Verdict::OtherMember => "other_member",
            Verdict::Removed => "removed",
            Verdict::Malformed => "malformed",
        }
    }
}

/// Decides on a hello: the rules of the module essay, with the reason the
/// sender will log.
pub fn judge(me: Identity, removed: &BTreeSet<u64>, hello: &Hello) -> (Verdict, String) {
    if hello.cluster != me.cluster {
        return (
            Verdict::OtherCluster,
            format!(
                "this is member {} of cluster {}, and member {} of cluster {} may not talk to it; \
                 the two clusters' peer addresses are mixed up (check --initial-cluster, the \
                 member list, and that each cluster has its own --initial-cluster-token)",
                me.member, me.cluster, hello.from, hello.cluster
            ),
        );
    }
    if hello.to != me.member {
        return (
            Verdict::OtherMember,
            format!(
                "this address is member {} of cluster {}, not member {}; the peer address of \
                 member {} is wrong in the sender's member list",
                me.member, me.cluster, hello.to, hello.to
            ),
        );
    }
    if hello.from == 0 || hello.from == me.member {
        return (
            Verdict::OtherMember,
            format!(
                "member id {} cannot connect to member {} of cluster {}: two nodes share an id",
                hello.from, me.member, me.cluster
            ),
        );
    }
    if removed.contains(&hello.from) {
        return (
            Verdict::Removed,
            format!(
                "member {} was removed from cluster {}",
                hello.from, me.cluster
            ),
        );
    }
    (Verdict::Accepted, String::new())
}

/// The sending side, owned by the Raft thread.
pub struct Transport {
    runtime: tokio::runtime::Handle,
    members: Members,
    node: Sender<Request>,
    me: Identity,
    told_removed: Arc<AtomicBool>,
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
        me: Identity,
        snapshots: std::path::PathBuf,
    ) -> Self {
        Transport {
            runtime,
            members,
            node,
            me,
            told_removed: Arc::new(AtomicBool::new(false)),
            peers: HashMap::new(),
            dropped: 0,
            snapshots,
        }
    }

    /// Whether a peer answered this node's handshake with "removed": the
    /// node was removed from the cluster while it was down, and must stop.
    pub fn told_removed(&self) -> bool {
        self.told_removed.load(Ordering::Relaxed)
    }

    /// Starts the task (and so the handshake) of every known peer now.
    pub fn connect_all(&mut self) {
        let ids: Vec<u64> = self
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .filter(|id| *id != self.me.member)
            .collect();
        for id in ids {
            self.queue(id);
        }
    }

    fn queue(&mut self, to: u64) -> &mpsc::Sender<Message> {
        self.peers.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let link = Link {
                to,
                me: self.me,
                members: self.members.clone(),
                node: self.node.clone(),
                told_removed: Arc::clone(&self.told_removed),
            };
            self.runtime.spawn(link.run(rx));
            tx
        })
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
        if let Err(err) = self.queue(to).try_send(message) {
            let message = match err {
                mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
            };
            self.dropped += 1;
            crate::metrics::PEER_MESSAGES_DROPPED.inc();
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

/// Writes a verdict and its reason.
async fn answer<W: AsyncWrite + Unpin>(
    writer: &mut W,
    verdict: Verdict,
    reason: &str,
) -> std::io::Result<()> {
    let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON)];
    let mut out = Vec::with_capacity(3 + reason.len());
    out.push(verdict as u8);
    out.extend_from_slice(&(reason.len() as u16).to_le_bytes());
    out.extend_from_slice(reason);
    writer.write_all(&out).await?;
    writer.flush().await
}

/// Reads a verdict and its reason.
async fn read_answer<R: AsyncRead + Unpin>(reader: &mut R) -> std::io::Result<(Verdict, String)> {
    let verdict = Verdict::from_byte(reader.read_u8().await?);
    let length = usize::from(reader.read_u16_le().await?).min(MAX_REASON);
    let mut reason = vec![0u8; length];
    reader.read_exact(&mut reason).await?;
    Ok((verdict, String::from_utf8_lossy(&reason).into_owned()))
}

/// One peer's outbound connection.
struct Link {
    to: u64,
    me: Identity,
    members: Members,
    node: Sender<Request>,
    told_removed: Arc<AtomicBool>,
}

/// How an attempt to open a connection ended.
enum Opened {
    Ready(TcpStream),
    /// Unreachable, or the handshake broke off.
    Failed,
    Refused(Verdict, String),
}

impl Link {
    fn report_failure(&self, message: &Message) {
        if message.get_msg_type() == MessageType::MsgSnapshot {
            let _ = self.node.send(Request::SnapshotReport {
                to: self.to,
                ok: false,
            });
        }
    }

    async fn open(&self) -> Opened {
        let address = self
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.to)
            .map(|m| m.peer.clone());
        let Some(address) = address else {
            return Opened::Failed;
        };
        let Ok(mut stream) = TcpStream::connect(&address).await else {
            return Opened::Failed;
        };
        let _ = stream.set_nodelay(true);
        let hello = Hello {
            cluster: self.me.cluster,
            from: self.me.member,
            to: self.to,
        };
        let handshake = async {
            stream.write_all(&hello.encode()).await?;
            read_answer(&mut stream).await
        };
        let outcome = tokio::time::timeout(PREAMBLE_TIMEOUT, handshake).await;
        match outcome {
            Ok(Ok((Verdict::Accepted, _))) => Opened::Ready(stream),
            Ok(Ok((verdict, reason))) => Opened::Refused(verdict, reason),
            _ => Opened::Failed,
        }
    }

    async fn run(self, mut queue: mpsc::Receiver<Message>) {
        let mut backoff = MIN_BACKOFF;
        let mut last_refusal: Option<String> = None;
        loop {
            let stream = match self.open().await {
                Opened::Ready(stream) => Some(stream),
                Opened::Failed => None,
                Opened::Refused(verdict, reason) => {
                    if verdict == Verdict::Removed {
                        if !self.told_removed.swap(true, Ordering::Relaxed) {
                            tracing::error!(
                                peer = self.to,
                                cluster = %self.me.cluster,
                                "peer {} refused the connection: {reason}; this node stops",
                                self.to
                            );
                        }
                    } else if last_refusal.as_deref() != Some(reason.as_str()) {
                        tracing::warn!(
                            peer = self.to,
                            "peer {} refused the connection: {reason}",
                            self.to
                        );
                        last_refusal = Some(reason);
                    }
                    backoff = MAX_BACKOFF;
                    None
                }
            };
            let Some(stream) = stream else {
                // Down, unknown or refusing: drop what is queued (raft will
                // resend what still matters) and try again later.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                loop {
                    match queue.try_recv() {
                        Ok(message) => self.report_failure(&message),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                continue;
            };
            if last_refusal.take().is_some() {
                tracing::info!(peer = self.to, "peer accepted the connection again");
            }
            backoff = MIN_BACKOFF;
            let mut writer = BufWriter::new(stream);
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
                    self.report_failure(&message);
                    break;
                }
                crate::metrics::PEER_SENT_BYTES.add(self.to, frame.len() as u64);
                if message.get_msg_type() == MessageType::MsgSnapshot {
                    let _ = writer.flush().await;
                    let _ = self.node.send(Request::SnapshotReport {
                        to: self.to,
                        ok: true,
                    });
                }
            }
        }
    }
}

/// Refusals seen per (sender, verdict), so a sender retrying every second
/// is logged at 1, 2, 4, 8... attempts rather than every time.
type RefusalCounts = Arc<Mutex<HashMap<(u64, u8), u64>>>;

/// Accepts peer connections and feeds their messages to the Raft thread.
pub async fn serve(
    listener: TcpListener,
    node: Sender<Request>,
    me: Identity,
    removed: Removed,
    incoming: std::path::PathBuf,
) {
    let refusals = RefusalCounts::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(MIN_BACKOFF).await;
            continue;
        };
        tokio::spawn(inbound(
            stream,
            node.clone(),
            me,
            removed.clone(),
            refusals.clone(),
            incoming.clone(),
        ));
    }
}

/// One accepted connection: the handshake, then frames until it closes.
async fn inbound(
    stream: TcpStream,
    node: Sender<Request>,
    me: Identity,
    removed: Removed,
    refusals: RefusalCounts,
    incoming: std::path::PathBuf,
) {
    let _ = stream.set_nodelay(true);
    let mut stream = tokio::io::BufReader::new(stream);
    let mut bytes = [0u8; HELLO_LEN];
    let first = tokio::time::timeout(PREAMBLE_TIMEOUT, stream.read_exact(&mut bytes[..8])).await;
    if matches!(first, Ok(Ok(_))) && &bytes[..8] == snapshot_stream::PREAMBLE {
        snapshot_stream::receive(stream, incoming, node).await;
        return;
    }
    let hello = match first {
        Ok(Ok(_)) => {
            match tokio::time::timeout(PREAMBLE_TIMEOUT, stream.read_exact(&mut bytes[8..])).await {
                Ok(Ok(_)) => Hello::decode(&bytes),
                _ => None,
            }
        }
        _ => None,
    };
    let Some(hello) = hello else {
        crate::metrics::HANDSHAKES_REFUSED.add(Verdict::Malformed.label(), 1);
        tracing::warn!(
            "a connection to the peer port did not start with the metcd peer hello \
             (is a client using the peer address, or a metcd of another version?); closing it"
        );
        // No answer: whatever connected does not speak this protocol.
        return;
    };
    let (verdict, reason) = {
        let removed = removed.read().unwrap_or_else(|p| p.into_inner());
        judge(me, &removed, &hello)
    };
    let answered =
        tokio::time::timeout(PREAMBLE_TIMEOUT, answer(stream.get_mut(), verdict, &reason)).await;
    if verdict != Verdict::Accepted {
        crate::metrics::HANDSHAKES_REFUSED.add(verdict.label(), 1);
        let seen = {
            let mut counts = refusals.lock().unwrap_or_else(|p| p.into_inner());
            let count = counts.entry((hello.from, verdict as u8)).or_default();
            *count += 1;
            *count
        };
        if seen.is_power_of_two() {
            tracing::warn!(
                from = hello.from,
                cluster = %hello.cluster,
                refused = seen,
                "refused a peer connection: {reason}"
            );
        }
        return;
    }
    if !matches!(answered, Ok(Ok(()))) {
        return;
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
        crate::metrics::PEER_RECEIVED_BYTES.add(hello.from, 4 + u64::from(length));
        let message = match Message::parse_from_bytes(&body) {
            Ok(message) => message,
            Err(err) => {
                tracing::warn!(%err, "peer sent a frame that is not a raft message; closing the connection");
                return;
            }
        };
        if message.to != me.member || message.from != hello.from {
            tracing::warn!(
                peer = hello.from,
                from = message.from,
                to = message.to,
                "a peer connection of member {} to member {} carried a message from {} to {}; \
                 closing it",
                hello.from,
                me.member,
                message.from,
                message.to
            );
            return;
        }
        if removed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&hello.from)
        {
            tracing::info!(
                peer = hello.from,
                "closing the connection of a member that was removed"
            );
            return;
        }
        if message.get_msg_type() == MessageType::MsgSnapshot {
            // Its data can only come from a snapshot stream.
            tracing::warn!(
                peer = hello.from,
                "peer sent a snapshot as a frame; ignored"
            );
            continue;
        }
        if node.send(Request::Raft(message)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::Member;
    use std::collections::BTreeMap;
    use std::sync::RwLock;

    fn me() -> Identity {
        Identity {
            cluster: ClusterId(7),
            member: 1,
        }
    }

    #[test]
    fn hello_round_trips_and_needs_the_preamble() {
        let hello = Hello {
            cluster: ClusterId(0xfeed),
            from: 2,
            to: 3,
        };
        assert_eq!(Hello::decode(&hello.encode()), Some(hello));
        let mut old = hello.encode();
        old[..8].copy_from_slice(b"METCDRP1");
        assert_eq!(Hello::decode(&old), None);
    }

    #[test]
    fn judge_refuses_other_clusters_other_members_and_removed_ones() {
        let none = BTreeSet::new();
        let hello = |cluster, from, to| Hello {
            cluster: ClusterId(cluster),
            from,
            to,
        };
        assert_eq!(judge(me(), &none, &hello(7, 2, 1)).0, Verdict::Accepted);
        let (verdict, reason) = judge(me(), &none, &hello(8, 2, 1));
        assert_eq!(verdict, Verdict::OtherCluster);
        assert!(reason.contains("0000000000000007") && reason.contains("0000000000000008"));
        assert_eq!(judge(me(), &none, &hello(7, 2, 5)).0, Verdict::OtherMember);
        assert_eq!(judge(me(), &none, &hello(7, 1, 1)).0, Verdict::OtherMember);
        assert_eq!(judge(me(), &none, &hello(7, 0, 1)).0, Verdict::OtherMember);
        let removed: BTreeSet<u64> = [2].into();
        let (verdict, reason) = judge(me(), &removed, &hello(7, 2, 1));
        assert_eq!(verdict, Verdict::Removed);
        assert!(reason.contains("removed"), "{reason}");
    }

    /// A listener serving node 1 of cluster 7, and the channel its
    /// accepted messages arrive on.
    async fn serving(removed: &[u64]) -> (String, std::sync::mpsc::Receiver<Request>, Removed) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        let removed: Removed = Arc::new(RwLock::new(removed.iter().copied().collect()));
        tokio::spawn(serve(
            listener,
            tx,
            me(),
            removed.clone(),
            std::env::temp_dir(),
        ));
        (address, rx, removed)
    }

    fn message(from: u64, to: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.from = from;
        m.to = to;
        m
    }

    async fn connect(address: &str, hello: Hello) -> (TcpStream, Verdict, String) {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(&hello.encode()).await.unwrap();
        let (verdict, reason) = read_answer(&mut stream).await.unwrap();
        (stream, verdict, reason)
    }

    async fn received(rx: &std::sync::mpsc::Receiver<Request>) -> Vec<(u64, u64)> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rx.try_iter()
            .filter_map(|r| match r {
                Request::Raft(m) => Some((m.from, m.to)),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn the_receiver_checks_the_hello_and_every_message() {
        let (address, rx, _) = serving(&[4]).await;
        // Another cluster: refused with a reason, nothing delivered.
        let hello = |cluster, from, to| Hello {
            cluster: ClusterId(cluster),
            from,
            to,
        };
        let (mut stream, verdict, reason) = connect(&address, hello(9, 2, 1)).await;
        assert_eq!(verdict, Verdict::OtherCluster, "{reason}");
        let _ = stream.write_all(&encode(&message(2, 1)).unwrap()).await;
        // Meant for another member, and from a removed one.
        let (_, verdict, _) = connect(&address, hello(7, 2, 3)).await;
        assert_eq!(verdict, Verdict::OtherMember);
        let (_, verdict, _) = connect(&address, hello(7, 4, 1)).await;
        assert_eq!(verdict, Verdict::Removed);
        assert_eq!(received(&rx).await, vec![]);

        // Accepted: a message to this node from the hello's sender passes,
        // one to another node closes the connection, and nothing after it
        // is delivered.
        let (mut stream, verdict, _) = connect(&address, hello(7, 2, 1)).await;
        assert_eq!(verdict, Verdict::Accepted);
        for m in [message(2, 1), message(2, 3), message(2, 1)] {
            let _ = stream.write_all(&encode(&m).unwrap()).await;
        }
        assert_eq!(received(&rx).await, vec![(2, 1)]);
        let (mut stream, _, _) = connect(&address, hello(7, 2, 1)).await;
        for m in [message(5, 1), message(2, 1)] {
            let _ = stream.write_all(&encode(&m).unwrap()).await;
        }
        assert_eq!(received(&rx).await, vec![]);
    }

    #[tokio::test]
    async fn a_sender_told_removed_says_so() {
        let (address, _rx, _) = serving(&[2]).await;
        let members: Members = Arc::new(RwLock::new(BTreeMap::from([(
            1,
            Member {
                id: 1,
                peer: address,
                client: String::new(),
                grpc: None,
                learner: false,
            },
        )])));
        let (tx, _node_rx) = std::sync::mpsc::channel();
        let mut transport = Transport::new(
            tokio::runtime::Handle::current(),
            members,
            tx,
            Identity {
                cluster: ClusterId(7),
                member: 2,
            },
            std::env::temp_dir(),
        );
        transport.connect_all();
        for _ in 0..50 {
            if transport.told_removed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the transport was not told that its node was removed");
    }
}
