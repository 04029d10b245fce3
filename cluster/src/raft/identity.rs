//! Cluster identity: which cluster a node belongs to, and which member of
//! it the node is.
//!
//! Raft trusts every message it is given. Two clusters whose peer addresses
//! get mixed up (a node started with the wrong flags, a data directory
//! copied, a cluster rebuilt on the addresses of an old one) would otherwise
//! exchange votes and appends and corrupt each other's logs. So every
//! cluster has a **cluster id**, created once, when the cluster is
//! bootstrapped, and every peer connection says which cluster it is for
//! (see `transport`'s handshake).
//!
//! # Where the id comes from
//!
//! * Bootstrap (empty data directory, `--initial-cluster`): the id is a hash
//!   of the initial members' ids and peer addresses, sorted by id, and of
//!   the `--initial-cluster-token`, the way etcd derives its cluster id. All
//!   initial members compute the same id without talking to each other; two
//!   clusters get different ids when their members or their tokens differ
//!   (give each cluster its own token, as etcd recommends).
//! * Join (empty data directory, `--join`): the node asks the cluster it
//!   joins (`GET /-/cluster`, served by `api::identity`) and adopts its id.
//! * Restart: the id is read back from the data directory.
//!
//! # Where it is kept
//!
//! In the file `<data-dir>/cluster-id` (`cluster <16 hex digits>` and
//! `member <id>`), written before anything else at bootstrap or join and
//! replaced atomically (temporary file, fsync, rename, fsync of the
//! directory), so a crash leaves either no file or a whole one. The id is
//! also carried in the bootstrap conf change entries, so the state machine
//! holds it with the membership (`m/cluster`) and snapshots carry it; a
//! data directory whose engine names another cluster than its file is
//! refused at start.
//!
//! # The rules at start
//!
//! * An empty data directory with neither `--initial-cluster` nor `--join`
//!   is an error: a node never silently becomes a one-node cluster of its
//!   own (ask for one with `--initial-cluster <id>=<peer address>`).
//! * A data directory written by member N does not start as member M.
//! * A joining node whose data directory already belongs to another
//!   cluster than the one at `--join` does not start.
//!
//! A node that a peer reports as removed (`transport` answers a removed
//! member's handshake with "removed") stops with [`REMOVED_EXIT_STATUS`],
//! so a supervisor can tell "do not restart me" from a crash.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::handle::NodeError;
use crate::state_machine::Member;

/// File name of the identity inside the data directory.
pub const IDENTITY_FILE: &str = "cluster-id";

/// Exit status of a `metcd` that stopped because it was removed from its
/// cluster (by a membership change it applied, or told by a peer after a
/// restart). Distinct from 1 (an error), so a supervisor does not restart it.
pub const REMOVED_EXIT_STATUS: u8 = 3;

/// The id of a cluster, shown as 16 hex digits (as etcd shows its ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(pub u64);

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for ClusterId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s.len() > 16 {
            return Err(format!(
                "{s:?} is not a cluster id (expected up to 16 hex digits)"
            ));
        }
        u64::from_str_radix(s, 16)
            .map(ClusterId)
            .map_err(|_| format!("{s:?} is not a cluster id (expected hex digits)"))
    }
}

impl Serialize for ClusterId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ClusterId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl ClusterId {
    /// The id of a cluster bootstrapped with `members` and `token`: FNV-1a
    /// (64 bits) over a version tag, each member's id and peer address in id
    /// order, and the token. Stable across builds and platforms, unlike
    /// std's hasher; it only has to tell clusters apart, not resist attack.
    pub fn derive(members: &[Member], token: &str) -> ClusterId {
        let mut sorted: Vec<&Member> = members.iter().collect();
        sorted.sort_by_key(|m| m.id);
        let mut hash = Fnv::new();
        hash.write(b"metcd cluster id v1\0");
        for member in sorted {
            hash.write(&member.id.to_le_bytes());
            hash.write(member.peer.as_bytes());
            hash.write(b"\0");
        }
        hash.write(token.as_bytes());
        // 0 is never a cluster id, so "no id" can never match a real one.
        ClusterId(hash.0.max(1))
    }
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Who this node is: its cluster and its member id in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub cluster: ClusterId,
    pub member: u64,
}

/// The node was told (or decided) that it is no longer a member.
#[derive(Debug, thiserror::Error)]
#[error(
    "member {member} was removed from cluster {cluster}; it stops for good (exit status {status}). \
     To bring this machine back, wipe its data directory, add it again with `metcdctl member add` \
     (under a new id) and start it with --join",
    status = REMOVED_EXIT_STATUS
)]
pub struct RemovedFromCluster {
    pub member: u64,
    pub cluster: ClusterId,
}

fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_FILE)
}

/// Reads `<data-dir>/cluster-id`; `None` if there is none.
pub fn load(data_dir: &Path) -> Result<Option<Identity>, NodeError> {
    let path = identity_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(NodeError::Invalid(format!(
                "reading {}: {err}",
                path.display()
            )));
        }
    };
    parse(&text)
        .map(Some)
        .map_err(|reason| NodeError::Invalid(format!("{} is malformed: {reason}", path.display())))
}

fn parse(text: &str) -> Result<Identity, String> {
    let mut cluster = None;
    let mut member = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once(' ') {
            Some(("cluster", value)) => cluster = Some(value.parse::<ClusterId>()?),
            Some(("member", value)) => {
                member = Some(
                    value
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| format!("member {value:?} is not a node id"))?,
                )
            }
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    match (cluster, member) {
        (Some(cluster), Some(member)) => Ok(Identity { cluster, member }),
        _ => Err("expected the lines `cluster <hex id>` and `member <id>`".into()),
    }
}

/// Writes `<data-dir>/cluster-id` atomically and durably.
pub fn store(data_dir: &Path, identity: &Identity) -> Result<(), NodeError> {
    let io = |what: &str, err: std::io::Error| {
        NodeError::Invalid(format!("{what} in {}: {err}", data_dir.display()))
    };
    std::fs::create_dir_all(data_dir).map_err(|e| io("creating the data directory", e))?;
    let path = identity_path(data_dir);
    let temporary = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&temporary).map_err(|e| io("creating the cluster id file", e))?;
    write!(
        file,
        "cluster {}\nmember {}\n",
        identity.cluster, identity.member
    )
    .map_err(|e| io("writing the cluster id file", e))?;
    file.sync_all()
        .map_err(|e| io("syncing the cluster id file", e))?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(|e| io("renaming the cluster id file", e))?;
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io("syncing the data directory", e))?;
    Ok(())
}

/// What the start-up knows when it settles the identity.
pub struct Claims<'a> {
    pub data_dir: &'a Path,
    pub id: u64,
    /// The data directory holds no raft state yet.
    pub fresh: bool,
    /// Started with `--join`.
    pub join: bool,
    /// The initial members (`--initial-cluster`), empty if not given.
    pub members: &'a [Member],
    pub token: &'a str,
    /// The id the cluster at `--join` reported, if it could be asked.
    pub learned: Option<ClusterId>,
    /// The id the state machine holds (`m/cluster`), if any.
    pub in_state_machine: Option<ClusterId>,
}

/// Applies the start-up rules of the module essay and returns the node's
/// identity, stored in the data directory.
pub fn establish(claims: &Claims<'_>) -> Result<Identity, NodeError> {
    let stored = load(claims.data_dir)?;
    if let Some(stored) = stored
        && stored.member != claims.id
    {
        return Err(NodeError::Invalid(format!(
            "the data directory {} belongs to member {} of cluster {}, but this node was started \
             with --id {}; start it with --id {} or give it its own data directory",
            claims.data_dir.display(),
            stored.member,
            stored.cluster,
            claims.id,
            stored.member
        )));
    }
    let expected = if claims.join {
        claims.learned
    } else if claims.fresh {
        if claims.members.is_empty() {
            return Err(NodeError::Invalid(format!(
                "the data directory {} is empty and neither --initial-cluster nor --join was given. \
                 To join a running cluster, add this node first (metcdctl member add {} --peer \
                 <host:port> --client <host:port>) and start it with --join <client endpoint of a \
                 member>; to bootstrap a new cluster, list its members with --initial-cluster \
                 (a one-node cluster: --initial-cluster {}=<this node's peer address>)",
                claims.data_dir.display(),
                claims.id,
                claims.id
            )));
        }
        Some(ClusterId::derive(claims.members, claims.token))
    } else {
        // A restart: the flags may describe the initial cluster, whose
        // membership may have changed since; the data directory decides.
        None
    };
    let cluster = match (stored, expected) {
        (Some(stored), Some(expected)) if stored.cluster != expected => {
            let source = if claims.join {
                "the cluster at --join is"
            } else {
                "--initial-cluster and --initial-cluster-token give"
            };
            return Err(NodeError::Invalid(format!(
                "the data directory {} belongs to cluster {}, but {source} {expected}; \
                 this node will not mix two clusters (use an empty data directory to join another)",
                claims.data_dir.display(),
                stored.cluster
            )));
        }
        (Some(stored), _) => stored.cluster,
        (None, Some(expected)) => expected,
        (None, None) => match claims.in_state_machine {
            Some(id) => id,
            None if claims.join => {
                return Err(NodeError::Invalid(format!(
                    "could not learn the cluster id from --join, and the data directory {} has none",
                    claims.data_dir.display()
                )));
            }
            None => {
                return Err(NodeError::Invalid(format!(
                    "the data directory {} holds raft state but no cluster id (file {IDENTITY_FILE}); \
                     it was written by an older metcd: start the node with --join to learn the id, \
                     or recreate the data directory",
                    claims.data_dir.display()
                )));
            }
        },
    };
    if let Some(in_sm) = claims.in_state_machine
        && in_sm != cluster
    {
        return Err(NodeError::Invalid(format!(
            "the engine in {} holds the data of cluster {in_sm}, but the data directory belongs \
             to cluster {cluster}; the engine directory does not belong with this data directory",
            claims.data_dir.display()
        )));
    }
    let identity = Identity {
        cluster,
        member: claims.id,
    };
    if stored != Some(identity) {
        store(claims.data_dir, &identity)?;
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, peer: &str) -> Member {
        Member {
            id,
            peer: peer.into(),
            client: format!("client-of-{id}"),
            grpc: None,
            learner: false,
        }
    }

    #[test]
    fn derived_ids_depend_on_members_addresses_and_token_not_order() {
        let a = [member(1, "127.0.0.1:1"), member(2, "127.0.0.1:2")];
        let b = [member(2, "127.0.0.1:2"), member(1, "127.0.0.1:1")];
        let id = ClusterId::derive(&a, "t");
        assert_eq!(id, ClusterId::derive(&b, "t"));
        assert_ne!(id, ClusterId::derive(&a, "u"));
        assert_ne!(
            id,
            ClusterId::derive(&[member(1, "127.0.0.1:1"), member(2, "127.0.0.1:3")], "t")
        );
        assert_ne!(
            id,
            ClusterId::derive(&[member(1, "127.0.0.1:1"), member(3, "127.0.0.1:2")], "t")
        );
        // Client addresses are not part of the identity.
        let mut c = a.clone();
        c[0].client = "elsewhere".into();
        assert_eq!(id, ClusterId::derive(&c, "t"));
        assert_eq!(id.to_string().len(), 16);
        assert_eq!(id.to_string().parse::<ClusterId>(), Ok(id));
        assert!("xyz".parse::<ClusterId>().is_err());
        assert!("".parse::<ClusterId>().is_err());
    }

    #[test]
    fn the_file_round_trips_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let identity = Identity {
            cluster: ClusterId(0xabc),
            member: 7,
        };
        store(dir.path(), &identity).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(identity));
        assert!(!dir.path().join("cluster-id.tmp").exists());
        std::fs::write(dir.path().join(IDENTITY_FILE), "cluster zz\nmember 1\n").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("cluster-id") && err.contains("hex"), "{err}");
    }

    fn claims<'a>(dir: &'a Path, members: &'a [Member]) -> Claims<'a> {
        Claims {
            data_dir: dir,
            id: 1,
            fresh: true,
            join: false,
            members,
            token: "t",
            learned: None,
            in_state_machine: None,
        }
    }

    #[test]
    fn an_empty_directory_without_flags_does_not_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let err = establish(&claims(dir.path(), &[])).unwrap_err().to_string();
        assert!(
            err.contains("--join") && err.contains("--initial-cluster"),
            "{err}"
        );
        assert_eq!(load(dir.path()).unwrap(), None);
    }

    #[test]
    fn bootstrap_join_and_restart_rules() {
        let members = [member(1, "127.0.0.1:1")];
        let dir = tempfile::tempdir().unwrap();
        let first = establish(&claims(dir.path(), &members)).unwrap();
        assert_eq!(first.cluster, ClusterId::derive(&members, "t"));
        // A restart without flags keeps the stored id.
        let restart = Claims {
            fresh: false,
            ..claims(dir.path(), &[])
        };
        assert_eq!(establish(&restart).unwrap(), first);
        // Another --id on the same directory is refused.
        let other = Claims {
            id: 2,
            ..claims(dir.path(), &members)
        };
        assert!(
            establish(&other)
                .unwrap_err()
                .to_string()
                .contains("member 1")
        );
        // Joining another cluster with this directory is refused.
        let join = Claims {
            join: true,
            learned: Some(ClusterId(42)),
            ..claims(dir.path(), &[])
        };
        assert!(
            establish(&join)
                .unwrap_err()
                .to_string()
                .contains("belongs to cluster")
        );
        // The engine of another cluster is refused.
        let foreign_engine = Claims {
            in_state_machine: Some(ClusterId(42)),
            ..restart
        };
        assert!(establish(&foreign_engine).is_err());
        // A joiner adopts the id it learned.
        let fresh = tempfile::tempdir().unwrap();
        let joiner = Claims {
            join: true,
            learned: Some(ClusterId(42)),
            ..claims(fresh.path(), &[])
        };
        assert_eq!(establish(&joiner).unwrap().cluster, ClusterId(42));
        assert_eq!(load(fresh.path()).unwrap().unwrap().cluster, ClusterId(42));
    }
}
