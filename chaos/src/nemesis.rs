//! The nemeses: the faults a run injects, and what each can and cannot show.
//!
//! A run picks one [`FaultKind`]. During the run's fault phase the nemesis
//! alternates: inject a fault for a random while, heal everything, wait a
//! random quiet while, and again, choosing its victims with the run's
//! seeded random generator (the leader is found from `/-/status`). At the
//! end of the run every fault is healed: killed nodes restarted, paused
//! nodes resumed, links restored.
//!
//! | kind | what it does | what it cannot show |
//! |---|---|---|
//! | `kill` | SIGKILL a node (the leader half the time), restart it at heal with the same data | a torn write inside the OS (the page cache survives a process kill; only a machine crash loses it) |
//! | `pause` | SIGSTOP a node (the leader half the time), SIGCONT at heal | a real partition: a paused node's kernel still accepts connections and buffers requests, and the node itself does nothing, so it cannot act on a stale view while paused; it approximates a partition and a long GC pause |
//! | `isolate-follower` | drop every Raft message to and from one follower | client traffic is not cut (clients talk to nodes directly) |
//! | `isolate-leader` | the same for the leader: the majority elects a new one while the old one still answers clients | as above |
//! | `bridge` | cut one pair of nodes from each other; the third still talks to both (the minority/majority split that is not just one isolated node) | as above |
//! | `delay` | hold every Raft message 20–150 ms plus up to 50 ms of jitter, order kept | packet reordering; delay is per message, not per packet |
//! | `loss` | drop 10–40 % of Raft messages at random | TCP's own retransmission: real packet loss becomes delay, here a whole message vanishes |
//!
//! With three nodes every minority/majority split isolates one node, so
//! `isolate-follower` and `isolate-leader` are the splits; `bridge` is the
//! non-transitive one.
//!
//! A slow-disk fault is not implemented: the machines this was built on
//! mount cgroup v1 `blkio` only and the data lives on a virtio disk shared
//! with other jobs, so a throttle would slow other work too; that fault is
//! left for a machine with cgroup v2 `io.max`.

use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::nodes::{Nodes, leader_of, statuses};

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    Kill,
    Pause,
    IsolateFollower,
    IsolateLeader,
    Bridge,
    Delay,
    Loss,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::IsolateFollower,
        FaultKind::IsolateLeader,
        FaultKind::Bridge,
        FaultKind::Delay,
        FaultKind::Loss,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::IsolateFollower => "isolate-follower",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::Bridge => "bridge",
            FaultKind::Delay => "delay",
            FaultKind::Loss => "loss",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown fault {s:?}; expected one of: {}",
                    FaultKind::ALL.map(|k| k.name()).join(", ")
                )
            })
    }
}

/// What was injected, for the run's log.
pub struct Injected {
    pub description: String,
}

fn pick(rng: &mut StdRng, ids: &[u64]) -> u64 {
    ids[rng.random_range(0..ids.len())]
}

/// Injects one fault of `kind`.
pub async fn inject(
    kind: FaultKind,
    nodes: &mut Nodes,
    rng: &mut StdRng,
) -> anyhow::Result<Injected> {
    let ids: Vec<u64> = nodes.nodes.iter().map(|n| n.id).collect();
    let seen = statuses(&nodes.clients(), Duration::from_millis(300)).await;
    let leader = leader_of(&seen).filter(|l| ids.contains(l));
    let leader_or_any = |rng: &mut StdRng| match leader {
        Some(l) if rng.random_bool(0.5) => l,
        _ => pick(rng, &ids),
    };
    let description = match kind {
        FaultKind::Kill => {
            let victim = leader_or_any(rng);
            nodes.kill(victim);
            format!("kill node {victim}")
        }
        FaultKind::Pause => {
            let victim = leader_or_any(rng);
            nodes.pause(victim);
            format!("pause node {victim}")
        }
        FaultKind::IsolateFollower | FaultKind::IsolateLeader => {
            let victim = match (kind, leader) {
                (FaultKind::IsolateLeader, Some(l)) => l,
                (_, Some(l)) => {
                    let followers: Vec<u64> = ids.iter().copied().filter(|i| *i != l).collect();
                    pick(rng, &followers)
                }
                (_, None) => pick(rng, &ids),
            };
            let rest: Vec<u64> = ids.iter().copied().filter(|i| *i != victim).collect();
            nodes.faults.partition(&[victim], &rest);
            format!("isolate node {victim} (leader was {leader:?})")
        }
        FaultKind::Bridge => {
            let bridge = pick(rng, &ids);
            let ends: Vec<u64> = ids.iter().copied().filter(|i| *i != bridge).collect();
            nodes.faults.partition(&ends[..1], &ends[1..]);
            format!(
                "cut {:?} from {:?}; node {bridge} bridges",
                ends[0],
                &ends[1..]
            )
        }
        FaultKind::Delay => {
            let delay = Duration::from_millis(rng.random_range(20..=150));
            let jitter = Duration::from_millis(rng.random_range(0..=50));
            nodes.faults.set_delay(delay, jitter);
            format!("delay Raft messages {delay:?} + up to {jitter:?}")
        }
        FaultKind::Loss => {
            let loss = rng.random_range(0.1..0.4);
            nodes.faults.set_loss(loss);
            format!("drop {:.0} % of Raft messages", loss * 100.0)
        }
    };
    Ok(Injected { description })
}
