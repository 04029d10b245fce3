//! The `metcd` processes of one run, and what is done to them.
//!
//! [`Nodes::start`] launches three real `metcd` processes on loopback,
//! each with a client port (clients talk to it directly), a private peer
//! port, and a [`Proxy`] in front of the peer port whose address is the one
//! the cluster is told about, so every Raft message crosses a proxy.
//!
//! The process-level faults live here: SIGKILL (and a restart with the same
//! arguments and data directory), SIGSTOP and SIGCONT.
//!
//! # Nothing is left behind
//!
//! Every run's files live under `$TMPDIR/metcd-chaos/<harness pid>-<n>/`,
//! next to a `pids` file listing every process started. Dropping [`Nodes`]
//! (also while unwinding from a panic) kills the processes and removes the
//! directory, unless [`Nodes::keep`] was called to keep the logs of a
//! failed run. A harness killed outright cannot clean up, so
//! [`remove_leftovers`] runs at the next start: for every directory whose
//! harness process is gone, it SIGKILLs each listed process whose command
//! line still names that directory (a recycled pid is never touched) and
//! removes the directory.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::http;
use crate::proxy::{LinkFaults, Proxy};

/// One node's view, from `GET /-/status` (only the fields used here).
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    pub id: u64,
    pub leader: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
}

/// How the nodes are started.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub binary: PathBuf,
    pub engine: String,
    /// Extra `metcd` flags (tick, timeouts, snapshot policy).
    pub flags: Vec<String>,
}

pub struct Node {
    pub id: u64,
    pub client: SocketAddr,
    /// etcd's gRPC API (`--listen-grpc`).
    pub grpc: SocketAddr,
    peer: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Node {
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
    pub fn paused(&self) -> bool {
        self.paused
    }
}

pub struct Nodes {
    pub nodes: Vec<Node>,
    pub faults: Arc<LinkFaults>,
    options: NodeOptions,
    initial_cluster: String,
    initial_clients: String,
    initial_grpc: String,
    dir: PathBuf,
    keep: bool,
    _proxies: Vec<Proxy>,
}

/// The root of every harness's files.
pub fn root() -> PathBuf {
    std::env::temp_dir().join("metcd-chaos")
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only checks the pid.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// Kills the processes and removes the files of harnesses that are gone.
pub fn remove_leftovers() {
    remove_where(|owner| !alive(owner), "a dead harness");
}

/// Kills the processes and removes the files of this harness (for Ctrl-C,
/// where no destructor runs).
pub fn remove_own() {
    let me = std::process::id() as i32;
    remove_where(|owner| owner == me, "this harness");
}

fn remove_where(matches: impl Fn(i32) -> bool, whose: &str) {
    let Ok(entries) = fs::read_dir(root()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let owner = entry
            .file_name()
            .to_string_lossy()
            .split('-')
            .next()
            .and_then(|p| p.parse::<i32>().ok());
        let Some(owner) = owner else { continue };
        if !matches(owner) {
            continue;
        }
        let pids = fs::read_to_string(dir.join("pids")).unwrap_or_default();
        let marker = dir.to_string_lossy().into_owned();
        for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&marker) {
                // SAFETY: plain kill(2) of a process we started, identified
                // by its command line naming our directory.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                eprintln!("chaos: killed metcd process {pid} left by {whose}");
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// Where the `metcd` binary is: `$METCD_BIN`, else next to this executable
/// or one directory up (Cargo puts test executables in `deps/`), else under
/// `$CARGO_TARGET_DIR/release`.
pub fn locate_metcd() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("METCD_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!("METCD_BIN={} is not a file", path.display());
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).take(2).map(|d| d.join("metcd")));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target).join("release").join("metcd"));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no metcd binary at {}; build it with `cargo build --release -p cluster` or set METCD_BIN",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        })
}

/// Loopback ports that are free now, for the nodes' listeners.
///
/// They come from 20000-32767, below Linux's ephemeral range (32768-60999
/// by default): a port the kernel picks for `bind(0)` is also the kind it
/// gives outgoing connections as their source port, and with one HTTP
/// connection per operation a probed port was taken by some connection
/// between the probe and the node's own bind (a short-form run failed with
/// "Address already in use"). A process-wide counter, started at an offset
/// from the process id, keeps concurrent runs of this process (and, mostly,
/// of others) apart; every candidate is checked by binding it, and the probe
/// listeners are held until all are chosen.
fn free_ports(count: usize) -> anyhow::Result<Vec<SocketAddr>> {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_768;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let offset = (std::process::id() % 64) * 199;
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..SPAN {
        if listeners.len() == count {
            break;
        }
        let step = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let port = FIRST + (offset + step) % SPAN;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            listeners.push(listener);
        }
    }
    anyhow::ensure!(
        listeners.len() == count,
        "found only {} free ports on 127.0.0.1 in {FIRST}-{}",
        listeners.len(),
        FIRST + SPAN - 1
    );
    listeners
        .iter()
        .map(|l| l.local_addr().context("reading a probe port"))
        .collect()
}

impl Nodes {
    /// Starts `count` nodes and their proxies; does not wait for a leader.
    pub async fn start(count: u64, options: NodeOptions, seed: u64) -> anyhow::Result<Nodes> {
        static RUN: AtomicU64 = AtomicU64::new(0);
        let dir = root().join(format!(
            "{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let faults = LinkFaults::new(seed);
        let ports = free_ports(3 * count as usize)?;
        let mut nodes = Vec::new();
        let mut proxies = Vec::new();
        for id in 1..=count {
            let client = ports[3 * (id as usize - 1)];
            let peer = ports[3 * (id as usize - 1) + 1];
            let grpc = ports[3 * (id as usize - 1) + 2];
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding a proxy port on 127.0.0.1")?;
            proxies.push(Proxy::start(listener, peer, faults.clone()));
            nodes.push(Node {
                id,
                client,
                grpc,
                peer,
                dir: dir.join(format!("n{id}")),
                child: None,
                paused: false,
            });
        }
        let list = |address: &dyn Fn(usize) -> SocketAddr| {
            (0..count as usize)
                .map(|i| format!("{}={}", i + 1, address(i)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let initial_cluster = list(&|i| proxies[i].listen);
        let initial_clients = list(&|i| nodes[i].client);
        let initial_grpc = list(&|i| nodes[i].grpc);
        let mut all = Nodes {
            nodes,
            faults,
            options,
            initial_cluster,
            initial_clients,
            initial_grpc,
            dir,
            keep: false,
            _proxies: proxies,
        };
        for id in 1..=count {
            all.spawn(id)?;
        }
        Ok(all)
    }

    fn index(&self, id: u64) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_default()
    }

    /// Starts (or restarts) node `id`.
    pub fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let index = self.index(id);
        let node = &self.nodes[index];
        fs::create_dir_all(&node.dir)?;
        let log_path = node.dir.with_extension("log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new(&self.options.binary)
            .arg("--id")
            .arg(id.to_string())
            .arg("--engine")
            .arg(&self.options.engine)
            .arg("--data-dir")
            .arg(&node.dir)
            .arg("--listen-client")
            .arg(node.client.to_string())
            .arg("--listen-peer")
            .arg(node.peer.to_string())
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-clients")
            .arg(&self.initial_clients)
            .arg("--listen-grpc")
            .arg(node.grpc.to_string())
            .arg("--initial-cluster-grpc")
            .arg(&self.initial_grpc)
            .args(&self.options.flags)
            .env("RUST_LOG", "info,raft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.options.binary.display()))?;
        let mut pids = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("pids"))?;
        writeln!(pids, "{}", child.id())?;
        let node = &mut self.nodes[index];
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    fn signal(&self, id: u64, signal: i32) {
        if let Some(child) = &self.nodes[self.index(id)].child {
            // SAFETY: kill(2) on the pid of a child we started and have not
            // reaped, so the pid cannot have been recycled.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, id: u64) {
        let index = self.index(id);
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[index].paused = false;
    }

    pub fn pause(&mut self, id: u64) {
        self.signal(id, libc::SIGSTOP);
        let index = self.index(id);
        self.nodes[index].paused = self.nodes[index].child.is_some();
    }

    pub fn resume(&mut self, id: u64) {
        self.signal(id, libc::SIGCONT);
        let index = self.index(id);
        self.nodes[index].paused = false;
    }

    /// A node that exited by itself (a crash), with its exit status.
    pub fn exited(&mut self) -> Option<(u64, String)> {
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child
                && let Ok(Some(status)) = child.try_wait()
            {
                node.child = None;
                return Some((node.id, status.to_string()));
            }
        }
        None
    }

    /// Restarts killed nodes, resumes paused ones, clears the link faults.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        self.faults.heal();
        let ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            let node = &self.nodes[self.index(id)];
            if node.paused {
                self.resume(id);
            } else if node.child.is_none() {
                self.spawn(id)?;
            }
        }
        Ok(())
    }

    /// Keeps the directory (logs, data) after the run.
    pub fn keep(&mut self) -> &Path {
        self.keep = true;
        &self.dir
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let path = self.nodes[self.index(id)].dir.with_extension("log");
        let text = fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn clients(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.client).collect()
    }

    /// The nodes' etcd gRPC addresses, in the order of [`Nodes::clients`].
    pub fn grpc_clients(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.grpc).collect()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if !self.keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `GET /-/status` of one node, within `timeout`.
pub async fn status(client: SocketAddr, timeout: Duration) -> Option<Status> {
    let answer = http::request(client, "GET", "/-/status", b"", timeout)
        .await
        .ok()?;
    if answer.status != 200 {
        return None;
    }
    serde_json::from_slice(&answer.body).ok()
}

/// The statuses of every node that answers, concurrently.
pub async fn statuses(clients: &[SocketAddr], timeout: Duration) -> Vec<Option<Status>> {
    let probes = clients.iter().map(|c| status(*c, timeout));
    let mut out = Vec::new();
    for probe in probes {
        out.push(probe);
    }
    join_all(out).await
}

/// Awaits every future, concurrently, in order.
pub async fn join_all<T: Send + 'static>(
    futures: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(value) => out.push(value),
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
    out
}

/// The leader as seen by the nodes that answer: the one a node with the
/// highest term names, if it is a node of this cluster.
pub fn leader_of(statuses: &[Option<Status>]) -> Option<u64> {
    statuses
        .iter()
        .flatten()
        .filter(|s| s.leader != 0)
        .max_by_key(|s| s.term)
        .map(|s| s.leader)
}
