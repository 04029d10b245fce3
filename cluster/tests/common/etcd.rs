//! Real etcd as the reference peer: clusters of Debian's `etcd-server`
//! (etcd 3.4) on loopback, and Debian's `etcdctl` run one command at a time.
//!
//! metcd's etcd API is checked against the real thing, so the tests that
//! define it talk to a [`Target`]: a set of client endpoints plus what the
//! comparison has to know about them (member ids, cluster id, the addresses
//! that appear in outputs). An [`EtcdCluster`] gives one; a metcd cluster
//! gives another through [`Target::new`] or [`Target::from_member_list`],
//! which take nothing but endpoints (and ids). [`Running`] keeps whatever
//! processes stand behind a target alive for as long as a test uses it.
//!
//! Invariants: every etcd member binds 127.0.0.1 only, on ports from
//! [`free_port`], with its data in a temporary directory; members are killed
//! when the [`EtcdCluster`] is dropped, so a failing test leaves nothing
//! running. Every wait is a bounded loop, and every `etcdctl` run has a
//! timeout after which it is killed and reported as timed out.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Cluster, free_port};

/// What `etcdctl` gets when a test does not say otherwise: long enough for a
/// loaded 2-core machine, short enough that a hang fails the test quickly.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(15);

/// One member of a target cluster, as outputs name it.
#[derive(Clone, Debug)]
pub struct Member {
    /// The member id (etcd's hash of its peer URLs; metcd's configured id).
    pub id: u64,
    /// Client endpoint, `127.0.0.1:PORT`, as `--endpoints` takes it.
    pub client: String,
    /// Peer address, `127.0.0.1:PORT` (outputs show it inside a URL).
    pub peer: String,
}

/// An endpoint set the differential and client tests run against.
#[derive(Clone, Debug)]
pub struct Target {
    /// `etcd` or `metcd`: which intended differences apply.
    pub kind: &'static str,
    pub cluster_id: u64,
    /// In a fixed order (the order the cluster was started in), so that
    /// `members[i]` of two targets play the same part in a script.
    pub members: Vec<Member>,
}

impl Target {
    /// A target from what the caller knows: its members in start order.
    pub fn new(kind: &'static str, cluster_id: u64, members: Vec<Member>) -> Target {
        Target {
            kind,
            cluster_id,
            members,
        }
    }

    /// A target from client endpoints alone: asks the cluster itself
    /// (`etcdctl member list -w json`) for its id and its members' ids and
    /// peer addresses, matching members to endpoints by client URL.
    pub fn from_member_list(kind: &'static str, endpoints: &[String]) -> Target {
        let out = etcdctl(
            endpoints,
            &["member", "list", "-w", "json"],
            None,
            CTL_TIMEOUT,
        );
        assert!(out.success(), "member list on {endpoints:?}: {out}");
        let list: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("member list -w json is not JSON ({e}): {out}"));
        let cluster_id = list["header"]["cluster_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no header.cluster_id in {out}"));
        let members = endpoints
            .iter()
            .map(|endpoint| {
                let url = format!("http://{endpoint}");
                let member = list["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|m| {
                        m["clientURLs"]
                            .as_array()
                            .is_some_and(|urls| urls.iter().any(|u| u == url.as_str()))
                    })
                    .unwrap_or_else(|| panic!("no member serves {url}: {out}"));
                let peer = member["peerURLs"][0]
                    .as_str()
                    .and_then(|u| u.strip_prefix("http://"))
                    .unwrap_or_else(|| panic!("no peer URL for {url}: {out}"));
                Member {
                    id: member["ID"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("no ID for {url}: {out}")),
                    client: endpoint.clone(),
                    peer: peer.to_string(),
                }
            })
            .collect();
        Target::new(kind, cluster_id, members)
    }

    /// Every member's client endpoint, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    /// Member `index`'s client endpoint alone.
    pub fn endpoint(&self, index: usize) -> Vec<String> {
        vec![self.members[index].client.clone()]
    }
}

/// The processes behind a [`Target`]; dropping it stops them.
pub enum Keep {
    Etcd(EtcdCluster),
    Metcd(Cluster),
}

/// A target and the processes that serve it.
pub struct Running {
    pub target: Target,
    pub keep: Keep,
}

impl Running {
    /// A fresh real etcd cluster of `members` members.
    pub fn etcd(members: usize) -> Running {
        Running::etcd_with(members, &[])
    }

    /// A fresh metcd cluster of `members` members on `engine`, its targets
    /// the members' gRPC addresses. Started on a thread of its own, so that
    /// async tests can call it too.
    pub fn metcd(members: usize, engine: &str) -> Running {
        let engine = engine.to_string();
        let cluster = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(Cluster::start(members as u64, &engine, &[]))
        })
        .join()
        .expect("starting the metcd cluster");
        let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.grpc.clone()).collect();
        Running {
            target: Target::from_member_list("metcd", &endpoints),
            keep: Keep::Metcd(cluster),
        }
    }

    /// [`Running::etcd`] with `extra` flags for every member.
    pub fn etcd_with(members: usize, extra: &[&str]) -> Running {
        let cluster = EtcdCluster::start_with(members, extra);
        Running {
            target: cluster.target(),
            keep: Keep::Etcd(cluster),
        }
    }
}

/// A real etcd cluster on loopback.
pub struct EtcdCluster {
    pub tmp: tempfile::TempDir,
    pub members: Vec<EtcdMember>,
    target: Target,
}

pub struct EtcdMember {
    /// `m1`, `m2`, ...: the same in every cluster, so outputs that show
    /// names compare equal.
    pub name: String,
    pub client: String,
    pub peer: String,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl EtcdCluster {
    /// Starts `n` members as a new cluster and waits (bounded) until every
    /// member reports healthy.
    pub fn start(n: usize) -> EtcdCluster {
        EtcdCluster::start_with(n, &[])
    }

    /// [`EtcdCluster::start`] with `extra` flags for every member (such as
    /// `--max-txn-ops=200`, to see a test notice a different server).
    pub fn start_with(n: usize, extra: &[&str]) -> EtcdCluster {
        assert!(n >= 1, "an etcd cluster needs a member");
        let binary = on_path("etcd");
        let tmp = tempfile::tempdir().unwrap();
        let mut members: Vec<EtcdMember> = (1..=n)
            .map(|i| EtcdMember {
                name: format!("m{i}"),
                client: format!("127.0.0.1:{}", free_port()),
                peer: format!("127.0.0.1:{}", free_port()),
                dir: tmp.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect();
        // A token per cluster, so two clusters never accept each other's
        // peers even if a port were reused.
        let token = format!("metcd-test-{}", tmp.path().display());
        for member in &mut members {
            let log = std::fs::File::create(member.dir.with_extension("log")).unwrap();
            let child = Command::new(&binary)
                .arg("--name")
                .arg(&member.name)
                .arg("--data-dir")
                .arg(&member.dir)
                .arg("--listen-client-urls")
                .arg(format!("http://{}", member.client))
                .arg("--advertise-client-urls")
                .arg(format!("http://{}", member.client))
                .arg("--listen-peer-urls")
                .arg(format!("http://{}", member.peer))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://{}", member.peer))
                .arg("--initial-cluster")
                .arg(initial.join(","))
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--initial-cluster-token")
                .arg(&token)
                // Elections in well under a second on loopback.
                .arg("--heartbeat-interval")
                .arg("50")
                .arg("--election-timeout")
                .arg("500")
                .arg("--logger")
                .arg("zap")
                .arg("--log-outputs")
                .arg("stderr")
                .args(extra)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            member.child = Some(child);
        }
        let endpoints: Vec<String> = members.iter().map(|m| m.client.clone()).collect();
        let mut cluster = EtcdCluster {
            tmp,
            members,
            target: Target::new("etcd", 0, Vec::new()),
        };
        cluster.wait_healthy(&endpoints);
        cluster.target = Target::from_member_list("etcd", &endpoints);
        cluster
    }

    /// Polls `etcdctl endpoint health` on every member, every 100 ms for at
    /// most 20 s; fails with the members' logs if they never get there or
    /// one of them exits.
    fn wait_healthy(&mut self, endpoints: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for member in &mut self.members {
                if let Some(status) = member.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                    panic!(
                        "etcd member {} exited ({status}) while starting:\n{}",
                        member.name,
                        member.log()
                    );
                }
            }
            let out = etcdctl(
                endpoints,
                &["endpoint", "health"],
                None,
                Duration::from_secs(5),
            );
            if out.success() {
                return;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| format!("--- {} ---\n{}", m.name, m.log()))
                    .collect();
                panic!(
                    "etcd cluster not healthy after 20 s: {out}\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The cluster as a [`Target`].
    pub fn target(&self) -> Target {
        self.target.clone()
    }
}

impl EtcdMember {
    /// The member's log (etcd's stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `name` on PATH, or a failure that says how to install it.
pub fn on_path(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH; the etcd tests run Debian's etcd 3.4: \
                 run `just setup` (it installs etcd-server and etcd-client)"
            )
        })
}

/// What one `etcdctl` run produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtlOutput {
    /// The exit code; `None` if it was killed (timed out or by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl CtlOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for CtlOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}{}\nstdout:\n{}stderr:\n{}",
            self.code,
            if self.timed_out { " (timed out)" } else { "" },
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `etcdctl --endpoints=<endpoints> <args>` with the v3 API, `stdin`
/// on its standard input (closed after it, as `txn` needs), and kills it
/// after `timeout`.
pub fn etcdctl(
    endpoints: &[String],
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
) -> CtlOutput {
    let binary = on_path("etcdctl");
    let mut child = Command::new(&binary)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg("--dial-timeout=3s")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A few hundred bytes fit in the pipe; etcdctl may also exit before
        // reading them all (bad input), which is its answer, not ours.
        let _ = pipe.write_all(text.as_bytes());
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let (code, timed_out) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status.code(), false);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    CtlOutput {
        code,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        timed_out,
    }
}

/// Reads a child's pipe to the end on its own thread, so neither pipe can
/// fill up and stall the child while the other is being waited on.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The size of a file, 0 if it does not exist.
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
