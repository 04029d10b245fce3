//! A real etcd cluster started by the harness: `n` members of Debian's
//! `etcd-server` (installed by `just setup`) on free loopback ports, in a
//! temporary directory, killed when dropped.
//!
//! etcd runs with its defaults (heartbeat 100 ms, election 1000 ms,
//! snapshot count 100,000, its bbolt backend and WAL) and only the flags a
//! local cluster needs: names, data directories, client and peer URLs on
//! 127.0.0.1, the initial cluster. [`SpawnedEtcd::settings`] prints them,
//! so a comparison states what etcd ran with.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster_target::free_ports;
use crate::error::{Result, WorkloadError};
use crate::etcd_target::Member;

/// Where Debian's `etcd-server` puts the binary.
pub const ETCD_BINARY: &str = "/usr/bin/etcd";

/// How long a spawned etcd may take to elect a leader.
const LEADER_WAIT: Duration = Duration::from_secs(30);

fn etcd_error(message: impl Into<String>) -> WorkloadError {
    WorkloadError::Cluster(message.into())
}

pub struct SpawnedEtcd {
    children: Vec<Child>,
    members: Vec<Member>,
    dir: PathBuf,
    version: String,
    _temp: tempfile::TempDir,
}

impl SpawnedEtcd {
    /// Starts `n` etcd members under a fresh directory in `parent` and
    /// waits until every member reports the same leader.
    pub fn start(parent: &Path, n: usize) -> Result<SpawnedEtcd> {
        let binary = Path::new(ETCD_BINARY);
        if !binary.is_file() {
            return Err(etcd_error(format!(
                "{ETCD_BINARY} is missing: `just setup` installs Debian's etcd-server"
            )));
        }
        let version = Command::new(binary)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("etcd Version: ").map(str::to_string))
            })
            .unwrap_or_else(|| "unknown".to_string());
        fs::create_dir_all(parent)
            .map_err(|e| etcd_error(format!("cannot create {}: {e}", parent.display())))?;
        let temp = tempfile::Builder::new()
            .prefix("etcd-cluster-")
            .tempdir_in(parent)
            .map_err(|e| {
                etcd_error(format!(
                    "cannot create a directory in {}: {e}",
                    parent.display()
                ))
            })?;
        let ports = free_ports(2 * n)?;
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial = (0..n)
            .map(|i| format!("e{}={}", i + 1, peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut spawned = SpawnedEtcd {
            children: Vec::new(),
            members: Vec::new(),
            dir: temp.path().to_path_buf(),
            version,
            _temp: temp,
        };
        for i in 0..n {
            let client = format!("127.0.0.1:{}", ports[2 * i]);
            let client_url = format!("http://{client}");
            let log_path = spawned.dir.join(format!("e{}.log", i + 1));
            let log = fs::File::create(&log_path)
                .map_err(|e| etcd_error(format!("cannot create {}: {e}", log_path.display())))?;
            let log_err = log
                .try_clone()
                .map_err(|e| etcd_error(format!("cannot share {}: {e}", log_path.display())))?;
            let child = Command::new(binary)
                .arg("--name")
                .arg(format!("e{}", i + 1))
                .arg("--data-dir")
                .arg(spawned.dir.join(format!("e{}", i + 1)))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url(i)])
                .args(["--initial-advertise-peer-urls", &peer_url(i)])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(|e| etcd_error(format!("cannot start {ETCD_BINARY}: {e}")))?;
            spawned.children.push(child);
            // etcd serves gRPC and /metrics on its client port.
            spawned.members.push(Member {
                grpc: client.clone(),
                metrics: client,
            });
        }
        spawned.wait_for_leader()?;
        Ok(spawned)
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What etcd ran with, for the results.
    pub fn settings(&self) -> String {
        format!(
            "etcd {} ({ETCD_BINARY}), {} members on 127.0.0.1, default settings (heartbeat 100 ms, \
             election 1000 ms, snapshot-count 100000, quota 2 GiB); only names, data directories, URLs \
             and the initial cluster given",
            self.version,
            self.members.len()
        )
    }

    /// Polls every member's `/metrics` until each has a leader and exactly
    /// one member says it leads.
    fn wait_for_leader(&mut self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| etcd_error(format!("cannot start the async runtime: {e}")))?;
        let metrics: Vec<String> = self.members.iter().map(|m| m.metrics.clone()).collect();
        let probe = cluster::Client::new(&metrics)
            .map_err(|e| etcd_error(e.to_string()))?
            .with_timeout(Duration::from_millis(500))
            .with_retry(Duration::ZERO);
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Ok(Some(exit)) = child.try_wait() {
                    let log = fs::read_to_string(self.dir.join(format!("e{}.log", i + 1)))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    return Err(etcd_error(format!(
                        "etcd member e{} exited ({exit}): {}",
                        i + 1,
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    )));
                }
            }
            let mut has_leader = 0;
            let mut leaders = 0;
            for m in &metrics {
                if let Ok(text) = runtime.block_on(probe.metrics_of(m)) {
                    let value = |s: &str| cluster::metrics::metric_value(&text, s);
                    if value("etcd_server_has_leader") == Some(1.0) {
                        has_leader += 1;
                    }
                    if value("etcd_server_is_leader") == Some(1.0) {
                        leaders += 1;
                    }
                }
            }
            if has_leader == metrics.len() && leaders == 1 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(etcd_error(format!(
                    "etcd elected no leader within {} s (logs in {})",
                    LEADER_WAIT.as_secs(),
                    self.dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SpawnedEtcd {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}
