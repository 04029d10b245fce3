//! The replicated metcd cluster as a workload target.
//!
//! [`ClusterTarget`] drives a running cluster through
//! [`cluster::client::Client`] (which follows redirects to the leader and
//! tries the endpoints in turn). Each operation is one HTTP request, and its
//! latency is the round trip the runner measures:
//!
//! * reads are `GET`s, linearizable unless the spec says
//!   `read_consistency = "serializable"`;
//! * inserts and updates are `PUT`s and deletes `DELETE`s, acknowledged by
//!   metcd only once committed by a quorum, fsynced in the WAL and applied,
//!   so the harness's durability policy does not apply: `sync` does nothing
//!   and the result's durability says `raft-wal-fsync`;
//! * this target sends single-key requests only, so a spec with scans is
//!   refused before anything is loaded instead of faking scans with point
//!   reads (`crate::etcd_target` runs them through the gRPC API's ranges).
//!
//! The client is async and the runner's workers are threads: the target
//! owns one multi-threaded tokio runtime (its I/O driver serves every
//! connection) and each worker blocks on its own request futures.
//!
//! Around the run phase the target reads every member's `/-/status` (WAL
//! fsyncs and time in fdatasync), so the result carries fsyncs per
//! acknowledged write on the leader and cluster-wide, and the leader's mean
//! WAL fdatasync time.
//!
//! [`SpawnedCluster`] starts three `metcd` processes on free loopback ports
//! in a temporary directory, waits (bounded) for a leader, and kills them
//! when dropped, so `workbench run --spawn-cluster redb` needs nothing
//! running beforehand.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engines::EngineKind;
use tokio::runtime::Runtime;

use crate::error::{Result, WorkloadError};
use crate::results::{MemberFsyncs, ReplicationSummary, process_cpu_seconds};
use crate::space::disk_space;
use crate::spec::{ReadConsistency, WorkloadSpec};
use crate::target::{Client, Target, TargetStatus};

/// What the results say about durability on a cluster.
pub const CLUSTER_DURABILITY: &str = "raft-wal-fsync: a write is acknowledged once a quorum has \
     fdatasynced it in its WAL and the leader has applied it; the harness's durability policy does not apply";

/// How long a spawned cluster may take to elect a leader.
const LEADER_WAIT: Duration = Duration::from_secs(20);

fn cluster_error(message: impl Into<String>) -> WorkloadError {
    WorkloadError::Cluster(message.into())
}

/// A metcd cluster reached over HTTP.
pub struct ClusterTarget {
    name: String,
    runtime: Arc<Runtime>,
    client: cluster::Client,
    endpoints: Vec<String>,
    consistency: ReadConsistency,
    /// Set when the harness started the cluster: its processes and files.
    spawned: Option<SpawnedCluster>,
}

impl ClusterTarget {
    /// A target for the running cluster at `endpoints` (`host:port`),
    /// named `name` in the results. Fails unless a leader is known.
    pub fn connect_to(
        endpoints: &[String],
        name: &str,
        consistency: ReadConsistency,
    ) -> Result<ClusterTarget> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| cluster_error(format!("cannot start the async runtime: {e}")))?;
        let client = cluster::Client::new(endpoints)
            .map_err(|e| cluster_error(format!("endpoints {endpoints:?}: {e}")))?;
        let endpoints = client.endpoints();
        let target = ClusterTarget {
            name: name.to_string(),
            runtime: Arc::new(runtime),
            client,
            endpoints,
            consistency,
            spawned: None,
        };
        let leader = target
            .runtime
            .block_on(target.client.status())
            .map_err(|e| {
                cluster_error(format!(
                    "no endpoint of {:?} answered /-/status: {e}",
                    target.endpoints
                ))
            })?;
        if leader.leader == 0 {
            return Err(cluster_error(format!(
                "the cluster at {:?} has no leader",
                target.endpoints
            )));
        }
        Ok(target)
    }

    /// Starts a 3-node cluster of `engine` in a temporary directory under
    /// `parent` and targets it; the processes die with the target.
    pub fn spawn(
        metcd: &Path,
        engine: EngineKind,
        parent: &Path,
        consistency: ReadConsistency,
    ) -> Result<ClusterTarget> {
        let spawned = SpawnedCluster::start(metcd, engine, parent, 3)?;
        let mut target = ClusterTarget::connect_to(
            &spawned.endpoints,
            &format!("metcd-{}", engine.name()),
            consistency,
        )?;
        target.spawned = Some(spawned);
        Ok(target)
    }

    /// The process ids of a spawned cluster's members (empty otherwise).
    pub fn member_pids(&self) -> Vec<u32> {
        self.spawned.as_ref().map_or(Vec::new(), |s| s.pids())
    }

    fn counters(&self) -> Result<(u64, Vec<MemberFsyncs>)> {
        let mut leader = 0;
        let mut members: Vec<MemberFsyncs> = Vec::new();
        let pids = self.member_pids();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let status = self
                .runtime
                .block_on(self.client.status_of(endpoint))
                .map_err(|e| cluster_error(format!("/-/status of {endpoint}: {e}")))?;
            if status.leader == status.id {
                leader = status.id;
            }
            if !members.iter().any(|m| m.id == status.id) {
                members.push(MemberFsyncs {
                    id: status.id,
                    role: if status.leader == status.id {
                        "leader".to_string()
                    } else {
                        "follower".to_string()
                    },
                    endpoint: endpoint.clone(),
                    wal_fsyncs: status.wal_fsyncs,
                    wal_fsync_micros: status.wal_fsync_micros,
                    // A spawned cluster's pids are in endpoint order.
                    cpu_seconds: pids.get(i).copied().and_then(process_cpu_seconds),
                });
            }
        }
        Ok((leader, members))
    }
}

impl Target for ClusterTarget {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn description(&self) -> String {
        let origin = if self.spawned.is_some() {
            "started by the harness"
        } else {
            "running"
        };
        format!(
            "metcd cluster ({origin}) at {}; {} reads over HTTP",
            self.endpoints.join(", "),
            self.consistency.name()
        )
    }

    fn connect(&self, _thread: usize) -> Result<Box<dyn Client>> {
        Ok(Box::new(ClusterClient {
            runtime: Arc::clone(&self.runtime),
            client: self.client.clone(),
            consistency: self.consistency,
            target: self.name.clone(),
        }))
    }

    fn sync(&self) -> Result<()> {
        // Every acknowledged write is already in a quorum's fsynced WAL.
        Ok(())
    }

    fn status(&self) -> Result<TargetStatus> {
        // metcd's status has no key count or live-byte size: zeros mean
        // unknown, and the results then print no space amplification.
        Ok(TargetStatus {
            keys: 0,
            logical_bytes: 0,
            disk: self
                .spawned
                .as_ref()
                .map(|s| disk_space(&s.dir))
                .transpose()?,
        })
    }

    fn sync_primitive(&self) -> String {
        "fdatasync of each member's Raft WAL before a write is acknowledged".to_string()
    }

    fn is_local(&self) -> bool {
        false
    }

    fn check(&self, spec: &WorkloadSpec) -> Result<()> {
        if spec.mix.scan > 0.0 {
            return Err(cluster_error(format!(
                "workload '{}' has scans ({}% of operations), but this HTTP target sends only \
                 single-key requests; run it with --target etcd-v3 (metcd's gRPC API serves ranges) \
                 or choose a workload without scans",
                spec.name,
                spec.mix.scan * 100.0
            )));
        }
        Ok(())
    }

    fn durability_override(&self) -> Option<String> {
        Some(CLUSTER_DURABILITY.to_string())
    }

    fn counters_before_run(&self) -> Result<Vec<MemberFsyncs>> {
        Ok(self.counters()?.1)
    }

    fn replication_since(
        &self,
        before: Vec<MemberFsyncs>,
        acknowledged_writes: u64,
    ) -> Result<Option<ReplicationSummary>> {
        let (leader_id, after) = self.counters()?;
        Ok(Some(ReplicationSummary::between(
            leader_id,
            &before,
            after,
            acknowledged_writes,
        )))
    }
}

/// One worker's handle: a clone of the shared client (clones share
/// connections) and the runtime to block on.
struct ClusterClient {
    runtime: Arc<Runtime>,
    client: cluster::Client,
    consistency: ReadConsistency,
    target: String,
}

impl ClusterClient {
    fn failed(&self, operation: &str, error: cluster::client::ClientError) -> WorkloadError {
        WorkloadError::Target {
            target: self.target.clone(),
            operation: operation.to_string(),
            message: error.to_string(),
        }
    }

    fn put(&mut self, operation: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.runtime
            .block_on(self.client.put(key, value))
            .map_err(|e| self.failed(operation, e))
    }
}

impl Client for ClusterClient {
    fn read(&mut self, key: &[u8]) -> Result<bool> {
        let value = match self.consistency {
            ReadConsistency::Linearizable => self.runtime.block_on(self.client.get(key)),
            ReadConsistency::Serializable => {
                self.runtime.block_on(self.client.get_serializable(key))
            }
        };
        value
            .map(|v| v.is_some())
            .map_err(|e| self.failed("read", e))
    }

    fn update(&mut self, key: &[u8], value: &[u8], _durable: bool) -> Result<()> {
        self.put("update", key, value)
    }

    fn insert(&mut self, key: &[u8], value: &[u8], _durable: bool) -> Result<()> {
        self.put("insert", key, value)
    }

    fn scan(&mut self, _start: &[u8], _count: usize) -> Result<usize> {
        Err(WorkloadError::Target {
            target: self.target.clone(),
            operation: "scan".into(),
            message: "the HTTP target sends single-key requests only (scans: --target etcd-v3)"
                .into(),
        })
    }

    fn delete(&mut self, key: &[u8], _durable: bool) -> Result<()> {
        self.runtime
            .block_on(self.client.delete(key))
            .map_err(|e| self.failed("delete", e))
    }

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The `metcd` binary next to the running executable (or one directory up,
/// where Cargo puts binaries relative to test executables in `deps/`).
pub fn locate_metcd() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| cluster_error(format!("cannot find the running executable: {e}")))?;
    let name = format!("metcd{}", std::env::consts::EXE_SUFFIX);
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(&name))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            cluster_error(format!(
                "no metcd binary at {}; build it with cargo build --release -p cluster",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))
        })
}

/// `metcd` processes started by the harness, killed on drop, with their
/// data and logs in a temporary directory removed after them.
pub struct SpawnedCluster {
    children: Vec<Child>,
    endpoints: Vec<String>,
    /// Each member's etcd v3 gRPC address (`--listen-grpc`).
    grpc: Vec<String>,
    dir: PathBuf,
    engine: EngineKind,
    _temp: tempfile::TempDir,
}

impl SpawnedCluster {
    /// What ran, for reports: the version, the engine and the settings that
    /// matter for a comparison (metcd's defaults; the harness passes none).
    pub fn settings(&self) -> String {
        format!(
            "metcd {} on {}, {} nodes on 127.0.0.1, default settings (tick 100 ms, election 10 \
             ticks, snapshot every {} entries, WAL fdatasync before every acknowledgement; \
             followers hand writes to the leader inside Raft; mimalloc)",
            env!("CARGO_PKG_VERSION"),
            self.engine.name(),
            self.children.len(),
            cluster::raft::DEFAULT_SNAPSHOT_EVERY
        )
    }

    /// Starts `nodes` members of `engine` under a fresh directory in
    /// `parent` and waits (at most 20 s) until all agree on a leader.
    pub fn start(
        metcd: &Path,
        engine: EngineKind,
        parent: &Path,
        nodes: u64,
    ) -> Result<SpawnedCluster> {
        fs::create_dir_all(parent)
            .map_err(|e| cluster_error(format!("cannot create {}: {e}", parent.display())))?;
        let temp = tempfile::Builder::new()
            .prefix(&format!("metcd-cluster-{}-", engine.name()))
            .tempdir_in(parent)
            .map_err(|e| {
                cluster_error(format!(
                    "cannot create a directory in {}: {e}",
                    parent.display()
                ))
            })?;
        // Three ports per member: HTTP client, peer, gRPC.
        let ports = free_ports(3 * nodes as usize)?;
        let ids: Vec<u64> = (1..=nodes).collect();
        let list = |offset: usize| {
            ids.iter()
                .map(|id| format!("{id}=127.0.0.1:{}", ports[3 * (*id as usize - 1) + offset]))
                .collect::<Vec<_>>()
                .join(",")
        };
        let (clients, peers, grpcs) = (list(0), list(1), list(2));
        let mut cluster = SpawnedCluster {
            children: Vec::new(),
            endpoints: Vec::new(),
            grpc: Vec::new(),
            dir: temp.path().to_path_buf(),
            engine,
            _temp: temp,
        };
        for &id in &ids {
            let node_dir = cluster.dir.join(format!("n{id}"));
            let log_path = cluster.dir.join(format!("n{id}.log"));
            let log = fs::File::create(&log_path)
                .map_err(|e| cluster_error(format!("cannot create {}: {e}", log_path.display())))?;
            let log_err = log
                .try_clone()
                .map_err(|e| cluster_error(format!("cannot share {}: {e}", log_path.display())))?;
            let client = format!("127.0.0.1:{}", ports[3 * (id as usize - 1)]);
            let peer = format!("127.0.0.1:{}", ports[3 * (id as usize - 1) + 1]);
            let grpc = format!("127.0.0.1:{}", ports[3 * (id as usize - 1) + 2]);
            let child = Command::new(metcd)
                .arg("--id")
                .arg(id.to_string())
                .arg("--engine")
                .arg(engine.name())
                .arg("--data-dir")
                .arg(&node_dir)
                .arg("--listen-client")
                .arg(&client)
                .arg("--listen-peer")
                .arg(&peer)
                .arg("--initial-cluster")
                .arg(&peers)
                .arg("--initial-cluster-clients")
                .arg(&clients)
                .arg("--listen-grpc")
                .arg(&grpc)
                .arg("--initial-cluster-grpc")
                .arg(&grpcs)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(|e| cluster_error(format!("cannot start {}: {e}", metcd.display())))?;
            cluster.children.push(child);
            cluster.endpoints.push(client);
            cluster.grpc.push(grpc);
        }
        cluster.wait_for_leader()?;
        Ok(cluster)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The members' etcd v3 gRPC addresses, in member order.
    pub fn grpc_endpoints(&self) -> &[String] {
        &self.grpc
    }

    /// The directory holding the members' data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Polls every member's `/-/status` until all name the same leader.
    fn wait_for_leader(&mut self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| cluster_error(format!("cannot start the async runtime: {e}")))?;
        let probe = cluster::Client::new(&self.endpoints)
            .map_err(|e| cluster_error(e.to_string()))?
            .with_timeout(Duration::from_millis(500))
            .with_retry(Duration::ZERO);
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Ok(Some(exit)) = child.try_wait() {
                    let log = fs::read_to_string(self.dir.join(format!("n{}.log", i + 1)))
                        .unwrap_or_default();
                    return Err(cluster_error(format!(
                        "metcd node {} exited with {exit} before a leader was elected; its log:\n{log}",
                        i + 1
                    )));
                }
            }
            let leaders: Vec<u64> = runtime.block_on(async {
                let mut leaders = Vec::new();
                for endpoint in &self.endpoints {
                    if let Ok(status) = probe.status_of(endpoint).await {
                        leaders.push(status.leader);
                    }
                }
                leaders
            });
            if leaders.len() == self.endpoints.len()
                && leaders[0] != 0
                && leaders.iter().all(|l| *l == leaders[0])
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(cluster_error(format!(
                    "no leader agreed by all of {:?} within {} s (logs in {})",
                    self.endpoints,
                    LEADER_WAIT.as_secs(),
                    self.dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SpawnedCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// `count` distinct free loopback ports: all probe listeners are held until
/// every port is chosen, so none is handed out twice.
pub fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| cluster_error(format!("cannot find a free port on 127.0.0.1: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| cluster_error(format!("cannot read a probe port: {e}")))
}
