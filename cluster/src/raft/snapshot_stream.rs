//! The snapshot stream: a snapshot file sent to a follower over its own
//! connection, in chunks, with bounded memory on both sides.
//!
//! raft decides *when* a follower needs a snapshot and produces a
//! `MsgSnapshot`; in metcd that message carries only the metadata (index,
//! term, `ConfState`): `super::storage::RaftStorage` hands raft snapshots
//! without data. The transport does not put it in the peer connection's
//! queue; it starts [`send`] instead, which opens a new connection to the
//! peer's listener and streams the snapshot file:
//!
//! ```text
//! sender -> receiver:
//!   b"METCDSS1"
//!   message length u64 LE | raft Message (protobuf, MsgSnapshot) | crc32 u32 LE
//!   chunk*:  length u64 LE | bytes | crc32 u32 LE     (length <= MAX_CHUNK)
//!   end:     length 0 u64 LE
//! receiver -> sender:
//!   one byte: 1 = stored, verified and handed to raft; 0 = refused
//! ```
//!
//! The bytes are the snapshot file itself (`super::snapshot_file`), read a
//! chunk at a time. The receiver ([`receive`], started by the peer
//! listener when it sees this preamble) writes the chunks to a temporary
//! file in the snapshot directory's `incoming/`, fsyncs it, verifies the
//! file's own CRC and that its metadata is the message's, renames it to
//! its final name, and only then hands the message to the Raft thread.
//! When raft accepts the snapshot, the Raft thread moves the file into the
//! snapshot directory and installs the state machine from it. Nothing on
//! either side holds more than one chunk; lengths are u64, so a snapshot
//! has no size limit but the disk.
//!
//! The sender reports the outcome to raft (`report_snapshot`): finished
//! when the receiver acknowledged, failed otherwise (refused, connection
//! lost, a timeout), so raft retries later with whatever snapshot is
//! newest then. Every read and write has a timeout, so a dead peer ends a
//! stream instead of holding it open.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;

use super::handle::Request;
use super::snapshot_file::{SnapshotInfo, file_name};
use crate::state_machine::Members;

/// First bytes of a snapshot stream connection.
pub const PREAMBLE: &[u8; 8] = b"METCDSS1";
/// Bytes per chunk sent.
const CHUNK: usize = 1 << 20;
/// The largest chunk a receiver accepts.
const MAX_CHUNK: u64 = 8 << 20;
/// The largest snapshot message (metadata only) a receiver accepts.
const MAX_MESSAGE: u64 = 16 << 20;
/// How long one read or write may stall before the stream is abandoned.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the sender waits for the receiver to verify and store the file.
const ACK_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out while {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    Invalid(String),
}

async fn timed<T>(
    what: &'static str,
    limit: Duration,
    future: impl Future<Output = std::io::Result<T>>,
) -> Result<T, StreamError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StreamError::Timeout(what)),
    }
}

// ANCHOR: snapshot_send
/// Streams the snapshot file that `message` (a `MsgSnapshot`) refers to
/// from `dir` to peer `to`, and reports the outcome to the Raft thread.
pub async fn send(
    to: u64,
    members: Members,
    message: Message,
    dir: PathBuf,
    node: Sender<Request>,
) {
    let meta = message.get_snapshot().get_metadata();
    let (index, term) = (meta.index, meta.term);
    let ok = match send_file(to, &members, &message, &dir).await {
        Ok(()) => {
            tracing::info!(peer = to, index, "snapshot streamed to the peer");
            true
        }
        Err(err) => {
            tracing::warn!(peer = to, index, term, %err, "sending a snapshot failed; raft will retry");
            false
        }
    };
    let _ = node.send(Request::SnapshotReport { to, ok });
}

async fn send_file(
    to: u64,
    members: &Members,
    message: &Message,
    dir: &Path,
) -> Result<(), StreamError> {
    let meta = message.get_snapshot().get_metadata();
    // Opened first: a newer snapshot may remove the file meanwhile, and
    // the open handle keeps it readable.
    let path = dir.join(file_name(meta.index, meta.term));
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| StreamError::Invalid(format!("opening {}: {e}", path.display())))?;
    let address = members
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&to)
        .map(|m| m.peer.clone())
        .ok_or_else(|| StreamError::Invalid(format!("no address known for peer {to}")))?;
    let stream = timed("connecting", IO_TIMEOUT, TcpStream::connect(&address)).await?;
    let _ = stream.set_nodelay(true);
    let mut stream = BufWriter::with_capacity(CHUNK + 64, stream);
    let body = message
        .write_to_bytes()
        .map_err(|e| StreamError::Invalid(format!("encoding the message: {e}")))?;
    let mut head = PREAMBLE.to_vec();
    head.extend_from_slice(&(body.len() as u64).to_le_bytes());
    head.extend_from_slice(&body);
    head.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    timed("sending the header", IO_TIMEOUT, stream.write_all(&head)).await?;
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = timed(
            "reading the snapshot file",
            IO_TIMEOUT,
            read_full(&mut file, &mut chunk),
        )
        .await?;
        timed(
            "sending a chunk",
            IO_TIMEOUT,
            stream.write_all(&(n as u64).to_le_bytes()),
        )
        .await?;
        if n == 0 {
            break;
        }
        timed("sending a chunk", IO_TIMEOUT, stream.write_all(&chunk[..n])).await?;
        let crc = crc32fast::hash(&chunk[..n]).to_le_bytes();
        timed("sending a chunk", IO_TIMEOUT, stream.write_all(&crc)).await?;
    }
    timed("sending the end", IO_TIMEOUT, stream.flush()).await?;
    let mut ack = [0u8; 1];
    timed(
        "waiting for the peer to store the snapshot",
        ACK_TIMEOUT,
        stream.get_mut().read_exact(&mut ack),
    )
    .await?;
    match ack[0] {
        1 => Ok(()),
        _ => Err(StreamError::Invalid("the peer refused the snapshot".into())),
    }
}
// ANCHOR_END: snapshot_send

/// Fills `buffer` as far as the input allows; 0 only at its end.
async fn read_full(
    input: &mut (impl AsyncRead + Unpin),
    buffer: &mut [u8],
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let n = input.read(&mut buffer[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

// ANCHOR: snapshot_receive
/// Serves one snapshot stream whose preamble was already read: stores the
/// file in `incoming`, verified, then hands the message to the Raft thread.
pub async fn receive(mut stream: BufReader<TcpStream>, incoming: PathBuf, node: Sender<Request>) {
    static TEMPORARIES: AtomicU64 = AtomicU64::new(0);
    let temporary = incoming.join(format!(
        "receiving-{}-{}.tmp",
        std::process::id(),
        TEMPORARIES.fetch_add(1, Ordering::Relaxed)
    ));
    let outcome = receive_file(&mut stream, &temporary, &incoming).await;
    if outcome.is_err() {
        let _ = tokio::fs::remove_file(&temporary).await;
    }
    let ack = match outcome {
        Ok(message) => {
            tracing::info!(
                from = message.from,
                index = message.get_snapshot().get_metadata().index,
                "snapshot received"
            );
            u8::from(node.send(Request::Raft(message)).is_ok())
        }
        Err(err) => {
            tracing::warn!(%err, "receiving a snapshot failed");
            0
        }
    };
    let _ = timed(
        "acknowledging",
        IO_TIMEOUT,
        stream.get_mut().write_all(&[ack]),
    )
    .await;
}

async fn receive_file(
    stream: &mut BufReader<TcpStream>,
    temporary: &Path,
    incoming: &Path,
) -> Result<Message, StreamError> {
    let length = timed("reading the header", IO_TIMEOUT, stream.read_u64_le()).await?;
    if length > MAX_MESSAGE {
        return Err(StreamError::Invalid(format!(
            "snapshot message of {length} bytes; at most {MAX_MESSAGE} are accepted"
        )));
    }
    let mut body = vec![0u8; length as usize];
    timed(
        "reading the header",
        IO_TIMEOUT,
        stream.read_exact(&mut body),
    )
    .await?;
    let crc = timed("reading the header", IO_TIMEOUT, stream.read_u32_le()).await?;
    if crc32fast::hash(&body) != crc {
        return Err(StreamError::Invalid(
            "the header's checksum does not match".into(),
        ));
    }
    let message = Message::parse_from_bytes(&body)
        .map_err(|e| StreamError::Invalid(format!("the header is not a raft message: {e}")))?;
    if message.get_msg_type() != MessageType::MsgSnapshot {
        return Err(StreamError::Invalid(format!(
            "a snapshot stream carries {:?}, not MsgSnapshot",
            message.get_msg_type()
        )));
    }
    let mut file = BufWriter::with_capacity(CHUNK, tokio::fs::File::create(temporary).await?);
    let mut chunk = Vec::new();
    loop {
        let length = timed("reading a chunk", IO_TIMEOUT, stream.read_u64_le()).await?;
        if length == 0 {
            break;
        }
        if length > MAX_CHUNK {
            return Err(StreamError::Invalid(format!(
                "chunk of {length} bytes; at most {MAX_CHUNK} are accepted"
            )));
        }
        chunk.resize(length as usize, 0);
        timed("reading a chunk", IO_TIMEOUT, stream.read_exact(&mut chunk)).await?;
        let crc = timed("reading a chunk", IO_TIMEOUT, stream.read_u32_le()).await?;
        if crc32fast::hash(&chunk) != crc {
            return Err(StreamError::Invalid(
                "a chunk's checksum does not match".into(),
            ));
        }
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    file.get_mut().sync_all().await?;
    drop(file);
    // The file's own CRC and metadata, checked in a blocking pass.
    let check = temporary.to_path_buf();
    let info = tokio::task::spawn_blocking(move || SnapshotInfo::open(&check))
        .await
        .map_err(|e| StreamError::Invalid(format!("verifying the file: {e}")))?
        .map_err(|e| StreamError::Invalid(e.to_string()))?;
    let expected = message.get_snapshot().get_metadata();
    if &info.metadata != expected {
        return Err(StreamError::Invalid(format!(
            "the file holds the snapshot at index {} term {}, the message announces index {} term {}",
            info.metadata.index, info.metadata.term, expected.index, expected.term
        )));
    }
    let path = incoming.join(file_name(expected.index, expected.term));
    tokio::fs::rename(temporary, &path).await?;
    tokio::fs::File::open(incoming).await?.sync_all().await?;
    Ok(message)
}
// ANCHOR_END: snapshot_receive

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, RwLock};

    use raft::prelude::SnapshotMetadata;

    use super::*;
    use crate::raft::snapshot_file::SnapshotDir;
    use crate::state_machine::Member;

    struct Streamed {
        data: Vec<u8>,
        received: PathBuf,
        leader: Vec<Request>,
        follower: Vec<Request>,
        _tmp: tempfile::TempDir,
    }

    /// A leader's snapshot directory with one snapshot of `bytes` data
    /// bytes, streamed to a receiver on loopback.
    async fn stream_one(bytes: usize) -> Streamed {
        let tmp = tempfile::tempdir().unwrap();
        let leader = SnapshotDir::open(&tmp.path().join("leader")).unwrap();
        let follower = SnapshotDir::open(&tmp.path().join("follower")).unwrap();
        let mut meta = SnapshotMetadata::default();
        meta.set_index(42);
        meta.set_term(3);
        let data: Vec<u8> = (0..bytes).map(|i| (i * 31 % 256) as u8).collect();
        let mut writer = leader.create(&meta).unwrap();
        writer.write_all(&data).unwrap();
        leader.publish(writer.finish().unwrap()).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (follower_tx, follower_rx) = std::sync::mpsc::channel();
        let incoming = follower.incoming();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            let mut preamble = [0u8; 8];
            stream.read_exact(&mut preamble).await.unwrap();
            assert_eq!(&preamble, PREAMBLE);
            receive(stream, incoming, follower_tx).await;
        });
        let members: Members = Arc::new(RwLock::new(
            [(
                2,
                Member {
                    id: 2,
                    peer: address,
                    client: String::new(),
                    grpc: None,
                    learner: false,
                },
            )]
            .into_iter()
            .collect(),
        ));
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.set_to(2);
        message.set_from(1);
        message.mut_snapshot().set_metadata(meta);
        let (leader_tx, leader_rx) = std::sync::mpsc::channel();
        send(2, members, message, leader.path().to_path_buf(), leader_tx).await;
        let received = follower.incoming().join(file_name(42, 3));
        Streamed {
            data,
            received,
            leader: leader_rx.try_iter().collect(),
            follower: follower_rx.try_iter().collect(),
            _tmp: tmp,
        }
    }

    #[tokio::test]
    async fn a_snapshot_larger_than_a_chunk_arrives_whole() {
        let Streamed {
            data,
            received,
            leader,
            follower,
            _tmp,
        } = stream_one(3 * CHUNK + 12345).await;
        let info = SnapshotInfo::open(&received).unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut info.data().unwrap(), &mut got).unwrap();
        assert!(got == data);
        assert!(matches!(
            leader.as_slice(),
            [Request::SnapshotReport { to: 2, ok: true }]
        ));
        assert!(
            matches!(follower.as_slice(), [Request::Raft(m)] if m.get_msg_type() == MessageType::MsgSnapshot)
        );
    }

    #[tokio::test]
    async fn a_missing_file_is_reported_as_failed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgSnapshot);
        message.mut_snapshot().mut_metadata().index = 7;
        let (tx, rx) = std::sync::mpsc::channel();
        send(2, Members::default(), message, tmp.path().to_path_buf(), tx).await;
        assert!(matches!(
            rx.try_iter().collect::<Vec<_>>().as_slice(),
            [Request::SnapshotReport { to: 2, ok: false }]
        ));
    }
}
