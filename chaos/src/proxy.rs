//! A fault-injecting proxy on the Raft peer links.
//!
//! The network faults were meant to be made with network namespaces, veth
//! pairs and `tc netem`. On the machines this was built on, namespaces and
//! veth work but the kernel has no `sch_netem` (and no `modprobe`, and no
//! iptables), so delay and loss cannot be made in the kernel. This proxy
//! makes them in user space instead, and partitions too, one message at a
//! time, which is also what a Raft implementation sees of a real network.
//!
//! # How it sits
//!
//! Every node listens for peers on a private loopback port; the cluster is
//! told (in `--initial-cluster`) that node *j* is at its proxy's port. The
//! proxy of *j* accepts connections from the other nodes, connects to *j*'s
//! real port, copies the transport's preamble, and then reads the stream as
//! the transport writes it: frames of `length u32 LE | protobuf Message`.
//! Each frame is decoded to read its `from` and `to`, so a rule about the
//! directed link *from → to* is applied to it:
//!
//! * **blocked** — the frame is dropped (a partition; both directions of a
//!   link are blocked for a symmetric one). The TCP connection stays up, as
//!   a blackholed route would look.
//! * **loss** — the frame is dropped with a probability.
//! * **delay** — the frame is held for a base delay plus jitter, and frames
//!   of one connection keep their order (they ride one TCP stream).
//!
//! Frames the proxy cannot decode are forwarded untouched. Only the peer
//! links go through proxies; clients talk to the nodes directly, so a
//! partitioned node still answers clients (it just cannot reach a quorum),
//! which is the interesting case for stale reads.
//!
//! # What it cannot show
//!
//! Dropping a whole frame is coarser than dropping a packet: TCP would
//! retransmit a lost packet, so real loss shows up as delay and head-of-line
//! blocking, while here a message vanishes (which Raft must tolerate anyway:
//! its transport drops messages when a queue is full). Nothing here
//! reorders messages within a connection, duplicates them, or cuts a
//! connection in the middle of a frame.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protobuf::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The transport's preamble length (`METCDRP2`).
const PREAMBLE_LEN: usize = 8;
/// The transport's hello: preamble, cluster id, sender id, receiver id.
const HELLO_LEN: usize = 32;
/// The first bytes of a snapshot stream (`cluster::raft::snapshot_stream`).
const SNAPSHOT_PREAMBLE: &[u8] = b"METCDSS1";
/// Frames above this are not decoded, only forwarded.
const MAX_DECODED: u32 = 64 << 20;

/// The faults applied to the peer links, shared by every proxy.
#[derive(Debug)]
pub struct LinkFaults {
    inner: Mutex<FaultState>,
}

#[derive(Debug)]
struct FaultState {
    blocked: HashSet<(u64, u64)>,
    loss: f64,
    delay: Duration,
    jitter: Duration,
    rng: StdRng,
    dropped: u64,
    forwarded: u64,
}

/// What to do with one frame.
enum Verdict {
    Drop,
    Forward(Duration),
}

impl LinkFaults {
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(LinkFaults {
            inner: Mutex::new(FaultState {
                blocked: HashSet::new(),
                loss: 0.0,
                delay: Duration::ZERO,
                jitter: Duration::ZERO,
                rng: StdRng::seed_from_u64(seed),
                dropped: 0,
                forwarded: 0,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FaultState> {
        // A poisoned lock only means a proxy task panicked mid-update; the
        // state is plain data and still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts the links between the two groups, in both directions.
    pub fn partition(&self, left: &[u64], right: &[u64]) {
        let mut state = self.state();
        for &a in left {
            for &b in right {
                state.blocked.insert((a, b));
                state.blocked.insert((b, a));
            }
        }
    }

    pub fn set_loss(&self, probability: f64) {
        self.state().loss = probability.clamp(0.0, 1.0);
    }

    pub fn set_delay(&self, delay: Duration, jitter: Duration) {
        let mut state = self.state();
        state.delay = delay;
        state.jitter = jitter;
    }

    /// Removes every fault.
    pub fn heal(&self) {
        let mut state = self.state();
        state.blocked.clear();
        state.loss = 0.0;
        state.delay = Duration::ZERO;
        state.jitter = Duration::ZERO;
    }

    /// (frames forwarded, frames dropped) so far.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.state();
        (state.forwarded, state.dropped)
    }

    fn judge(&self, from: u64, to: u64) -> Verdict {
        let mut state = self.state();
        let lost = state.loss > 0.0 && {
            let loss = state.loss;
            state.rng.random_bool(loss)
        };
        if state.blocked.contains(&(from, to)) || lost {
            state.dropped += 1;
            return Verdict::Drop;
        }
        state.forwarded += 1;
        let jitter = if state.jitter.is_zero() {
            Duration::ZERO
        } else {
            let micros = state.jitter.as_micros() as u64;
            Duration::from_micros(state.rng.random_range(0..=micros))
        };
        Verdict::Forward(state.delay + jitter)
    }
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    pub listen: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listens on `listen` and forwards to `target`, applying `faults`.
    pub fn start(listener: TcpListener, target: SocketAddr, faults: Arc<LinkFaults>) -> Proxy {
        let listen = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                connections.spawn(relay(inbound, target, faults.clone()));
                // Reap finished connections so the set does not grow.
                while connections.try_join_next().is_some() {}
            }
        });
        Proxy { listen, task }
    }
}

/// One proxied connection: frames from `inbound` to `target`, judged one by
/// one; anything `target` sends back is copied back unchanged.
async fn relay(inbound: TcpStream, target: SocketAddr, faults: Arc<LinkFaults>) {
    let Ok(Ok(outbound)) =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(target)).await
    else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
    });
    // Frames are released by a writer task at their due time, in order.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if out_write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    // A peer connection opens with the transport's 32-byte hello (preamble,
    // cluster id, sender, receiver); the receiver's answer flows back through
    // `back`. A snapshot stream opens with its own preamble and has its own
    // framing: it is copied through as it is (so the network faults do not
    // reach snapshot streams).
    let mut hello = [0u8; HELLO_LEN];
    let opened = in_read.read_exact(&mut hello[..PREAMBLE_LEN]).await.is_ok();
    if opened && &hello[..PREAMBLE_LEN] == SNAPSHOT_PREAMBLE {
        if tx
            .send((Instant::now(), hello[..PREAMBLE_LEN].to_vec()))
            .is_ok()
        {
            let mut buffer = vec![0u8; 64 * 1024];
            while let Ok(n) = in_read.read(&mut buffer).await {
                if n == 0 || tx.send((Instant::now(), buffer[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    } else if opened
        && in_read.read_exact(&mut hello[PREAMBLE_LEN..]).await.is_ok()
        && tx.send((Instant::now(), hello.to_vec())).is_ok()
    {
        let mut last_due = Instant::now();
        while let Ok(length) = in_read.read_u32_le().await {
            let mut frame = vec![0u8; 4 + length as usize];
            frame[..4].copy_from_slice(&length.to_le_bytes());
            if in_read.read_exact(&mut frame[4..]).await.is_err() {
                break;
            }
            let verdict = if length <= MAX_DECODED {
                match raft::prelude::Message::parse_from_bytes(&frame[4..]) {
                    Ok(message) => faults.judge(message.from, message.to),
                    Err(_) => Verdict::Forward(Duration::ZERO),
                }
            } else {
                Verdict::Forward(Duration::ZERO)
            };
            if let Verdict::Forward(delay) = verdict {
                let due = (Instant::now() + delay).max(last_due);
                last_due = due;
                if tx.send((due, frame)).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
    back.abort();
}
