//! A harness for integration tests: real `metcd` processes on loopback.
//!
//! Every node gets free ports and a directory in a temporary directory;
//! processes are killed when the [`Cluster`] is dropped, so a failing test
//! leaves nothing running. Waiting is always a bounded loop that gives up
//! with a message naming what it waited for.

#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use cluster::Client;
use cluster::raft::NodeStatus;

pub mod etcd;

/// A port no other node of this test process was given, from 20000-32767:
/// below Linux's ephemeral range (32768-60999 by default), so no outgoing
/// connection can take it as its source port between this probe and the
/// node's own bind (`bind(0)` hands out ports from that same range, and a
/// chaos run lost that race). The walk starts at an offset from the process
/// id, so concurrent test processes mostly stay apart; every port is checked
/// by binding it.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_768;
    static NEXT: std::sync::Mutex<u32> = std::sync::Mutex::new(0);
    let mut next = NEXT.lock().unwrap();
    let offset = (std::process::id() % 64) * 199 + 101;
    for _ in 0..SPAN {
        let port = (FIRST + (offset + *next) % SPAN) as u16;
        *next += 1;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {FIRST}-{}", FIRST + SPAN - 1);
}

pub struct Node {
    pub id: u64,
    pub client: String,
    pub peer: String,
    /// The etcd gRPC address (`--listen-grpc`).
    pub grpc: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub joined: bool,
}

pub struct Cluster {
    pub engine: String,
    pub nodes: Vec<Node>,
    pub extra: Vec<String>,
    pub tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes as a new cluster.
    pub async fn start(n: u64, engine: &str, extra: &[&str]) -> Cluster {
        Self::start_with_env(n, engine, extra, &[]).await
    }

    fn index(&self, id: u64) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap()
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[self.index(id)]
    }

    /// Starts (or restarts) the process of the node at `index`; its log
    /// (stdout and stderr) goes to its log file.
    pub fn spawn(&mut self, index: usize) {
        self.spawn_with_env(index, &[]);
    }

    pub fn restart(&mut self, id: u64) {
        let index = self.index(id);
        self.spawn(index);
    }

    /// Adds a node record (not started) that will join the cluster.
    pub fn add_joiner(&mut self, id: u64) -> (String, String) {
        let node = Node {
            id,
            client: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            grpc: format!("127.0.0.1:{}", free_port()),
            dir: self.tmp.path().join(format!("n{id}")),
            child: None,
            joined: true,
        };
        let addresses = (node.peer.clone(), node.client.clone());
        self.nodes.push(node);
        addresses
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self, id: u64) {
        let index = self.index(id);
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// A client over every running node.
    pub fn client(&self) -> Client {
        let endpoints: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.client.clone())
            .collect();
        Client::new(&endpoints)
            .unwrap()
            .with_timeout(Duration::from_secs(8))
    }

    /// A client of one node only.
    pub fn client_of(&self, id: u64) -> Client {
        Client::new(&[self.node(id).client.as_str()])
            .unwrap()
            .with_timeout(Duration::from_secs(8))
    }

    /// A client of one node for polling loops: one attempt, one second.
    pub fn probe_of(&self, id: u64) -> Client {
        Client::new(&[self.node(id).client.as_str()])
            .unwrap()
            .with_timeout(Duration::from_secs(1))
            .with_retry(Duration::ZERO)
    }

    /// Status of one node; `None` if it does not answer within a second.
    pub async fn status(&self, id: u64) -> Option<NodeStatus> {
        self.probe_of(id)
            .status_of(&self.node(id).client)
            .await
            .ok()
    }

    /// Waits until every running node agrees on one leader; returns it.
    pub async fn wait_leader(&self) -> u64 {
        let running = self.running();
        eventually("a leader known to every running node", 200, || async {
            let mut leader = None;
            for id in &running {
                let status = self.status(*id).await?;
                if status.leader == 0 || leader.is_some_and(|l| l != status.leader) {
                    return None;
                }
                leader = Some(status.leader);
            }
            leader.filter(|l| running.contains(l))
        })
        .await
    }

    /// Log of a node, for failure messages.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.node(id).dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, at most `attempts`
/// times; panics naming `what` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, attempts: usize, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..attempts {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting for {what} after {attempts} attempts");
}

/// Waits until node `id` serves `key` = `value` from its local engine.
pub async fn wait_value(cluster: &Cluster, id: u64, key: &str, value: &str) {
    let client = cluster.probe_of(id);
    eventually(&format!("node {id} to have {key}={value}"), 150, || async {
        let got = client.get_serializable(key.as_bytes()).await.ok()??;
        (got == value.as_bytes()).then_some(())
    })
    .await
}

/// Waits until node `id` reads `key` as absent with a serializable (local) read.
pub async fn wait_absent(cluster: &Cluster, id: u64, key: &str) {
    let client = cluster.probe_of(id);
    eventually(&format!("node {id} to have no {key}"), 150, || async {
        match client.get_serializable(key.as_bytes()).await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await
}

/// Puts `key` = `value`, retrying while the cluster elects a leader.
pub async fn put_retrying(client: &Client, key: &str, value: &str) {
    eventually(&format!("put {key}"), 30, || async {
        client.put(key.as_bytes(), value.as_bytes()).await.ok()
    })
    .await
}

/// Sends `signal` (e.g. "STOP", "CONT") to node `id`'s process.
pub fn signal(cluster: &Cluster, id: u64, signal: &str) {
    let child = cluster.node(id).child.as_ref().expect("node is running");
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} node {id}");
}

/// The running nodes other than `leader`.
pub fn followers(cluster: &Cluster, leader: u64) -> Vec<u64> {
    cluster
        .running()
        .into_iter()
        .filter(|id| *id != leader)
        .collect()
}

/// Resumes (SIGCONT) the given nodes when dropped, so that a failing test
/// leaves no stopped process behind (a stopped process ignores SIGKILL
/// until it is continued on some systems' process managers).
pub struct Paused<'a> {
    pub cluster: &'a Cluster,
    pub ids: Vec<u64>,
}

impl<'a> Paused<'a> {
    pub fn pause(cluster: &'a Cluster, ids: Vec<u64>) -> Paused<'a> {
        for id in &ids {
            signal(cluster, *id, "STOP");
        }
        Paused { cluster, ids }
    }

    pub fn resume(self) {}
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            signal(self.cluster, *id, "CONT");
        }
    }
}
impl Cluster {
    /// Starts (or restarts) the node at `index` with its usual flags but
    /// `flags` in place of `--initial-cluster`/`--join`: for tests of what
    /// a node does when started the wrong way. Its log lines (stdout) and
    /// errors (stderr) both go to its log file.
    pub fn spawn_with(&mut self, index: usize, flags: &[String]) {
        let mut command = self.command_for(index);
        command.args(flags);
        self.nodes[index].child = Some(command.spawn().unwrap());
    }

    /// Waits up to `attempts` × 100 ms for node `id`'s process to exit and
    /// returns its status (the node is then marked stopped); `None` if it
    /// is still running.
    pub async fn wait_exit(
        &mut self,
        id: u64,
        attempts: usize,
    ) -> Option<std::process::ExitStatus> {
        let index = self.index(id);
        for _ in 0..attempts {
            let status = self.nodes[index]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = status {
                self.nodes[index].child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// `GET path` on node `id`'s client address: status and body as text.
    pub async fn get_text(&self, id: u64, path: &str) -> Option<(u16, String)> {
        let response = self
            .probe_of(id)
            .request_to(
                &self.node(id).client,
                hyper::Method::GET,
                path,
                bytes::Bytes::new(),
            )
            .await
            .ok()?;
        Some((
            response.status.as_u16(),
            String::from_utf8_lossy(&response.body).into_owned(),
        ))
    }

    /// The value of `series` (`name` or `name{labels}` exactly as written)
    /// in node `id`'s `/metrics`; `None` if absent or the node is down.
    pub async fn metric(&self, id: u64, series: &str) -> Option<f64> {
        let (_, text) = self.get_text(id, "/metrics").await?;
        metric_value(&text, series)
    }
}

pub use cluster::metrics::metric_value;

impl Cluster {
    /// [`Cluster::start`], with `env` set in every node's process (for the
    /// test-only hooks, `METCD_TEST_ONLY_*`).
    pub async fn start_with_env(
        n: u64,
        engine: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        Self::start_prepared(n, engine, extra, env, |_, _| {}).await
    }

    /// [`Cluster::start_with_env`], calling `prepare(id, data_dir)` for
    /// every node before it starts (to restore a backup into it, say).
    pub async fn start_prepared(
        n: u64,
        engine: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        mut prepare: impl FnMut(u64, &std::path::Path),
    ) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let nodes = (1..=n)
            .map(|id| Node {
                id,
                client: format!("127.0.0.1:{}", free_port()),
                peer: format!("127.0.0.1:{}", free_port()),
                grpc: format!("127.0.0.1:{}", free_port()),
                dir: tmp.path().join(format!("n{id}")),
                child: None,
                joined: false,
            })
            .collect();
        let mut cluster = Cluster {
            engine: engine.to_string(),
            nodes,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tmp,
        };
        for i in 0..n as usize {
            prepare(cluster.nodes[i].id, &cluster.nodes[i].dir);
            cluster.spawn_with_env(i, env);
        }
        cluster.wait_leader().await;
        cluster
    }

    /// [`Cluster::spawn`], with `env` set in the node's process, and its
    /// standard output (where metcd's log goes) in the log file too.
    pub fn spawn_with_env(&mut self, index: usize, env: &[(&str, &str)]) {
        let initial_peers: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !n.joined)
            .map(|n| format!("{}={}", n.id, n.peer))
            .collect();
        let initial_clients: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !n.joined)
            .map(|n| format!("{}={}", n.id, n.client))
            .collect();
        let join_endpoints: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !n.joined && n.child.is_some())
            .map(|n| n.client.clone())
            .collect();
        let initial_grpc: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !n.joined)
            .map(|n| format!("{}={}", n.id, n.grpc))
            .collect();
        let mut command = self.command_for(index);
        command.envs(env.iter().copied());
        let node = &self.nodes[index];
        if node.joined {
            command.arg("--join").arg(join_endpoints.join(","));
        } else {
            command
                .arg("--initial-cluster")
                .arg(initial_peers.join(","))
                .arg("--initial-cluster-clients")
                .arg(initial_clients.join(","))
                .arg("--initial-cluster-grpc")
                .arg(initial_grpc.join(","));
        }
        let child = command.spawn().unwrap();
        self.nodes[index].child = Some(child);
    }

    /// The node's process with the flags every start shares (id, engine,
    /// data directory, addresses, the cluster's extra flags), its log
    /// lines (stdout) and errors (stderr) appended to its log file.
    fn command_for(&self, index: usize) -> Command {
        let node = &self.nodes[index];
        std::fs::create_dir_all(&node.dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.with_extension("log"))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_metcd"));
        command
            .arg("--id")
            .arg(node.id.to_string())
            .arg("--engine")
            .arg(&self.engine)
            .arg("--data-dir")
            .arg(&node.dir)
            .arg("--listen-client")
            .arg(&node.client)
            .arg("--listen-peer")
            .arg(&node.peer)
            .arg("--listen-grpc")
            .arg(&node.grpc)
            .args(&self.extra)
            .env("RUST_LOG", "info,raft=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        command
    }

    /// [`Cluster::restart`], with `env` set in the node's process.
    pub fn restart_with_env(&mut self, id: u64, env: &[(&str, &str)]) {
        let index = self.index(id);
        self.spawn_with_env(index, env);
    }
}

/// Puts `count` keys `<prefix><i>` = `v<i>` (i zero-padded to 5 digits)
/// with `writers` concurrent clients, retrying each while the cluster
/// elects a leader.
pub async fn put_many(client: &Client, prefix: &str, count: usize, writers: usize) {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = client.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in (w..count).step_by(writers) {
                put_retrying(&client, &format!("{prefix}{i:05}"), &format!("v{i}")).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}
