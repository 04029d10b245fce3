//! Any server of etcd's v3 gRPC API as a workload target: a real etcd, or
//! metcd's gRPC listener, driven the same way by the same client.
//!
//! [`EtcdTarget`] speaks the v3 API through the `etcd-client` crate, so the
//! two systems see identical requests: a read is a `Range` of one key
//! (linearizable unless the spec says serializable), an insert or update a
//! `Put`, a delete a `DeleteRange`, a scan a `Range` from the start key with
//! `limit` = the scan's length. Each operation is one RPC and its latency is
//! the round trip the runner measures.
//!
//! Connections: etcd's benchmark tool shares `--conns` gRPC connections
//! among its clients; here `connections` clients (each one HTTP/2
//! connection, which multiplexes concurrent requests) are opened and worker
//! `i` uses connection `i % connections`. One connection per worker thread
//! is the default, as the harness's engine targets give each thread its
//! own handle.
//!
//! Durability: both systems acknowledge a write once a quorum has
//! fdatasynced it in its WAL, so the harness's durability policy does not
//! apply (`sync` does nothing). WAL fsyncs come from each member's
//! `/metrics` (`etcd_disk_wal_fsync_duration_seconds_count` and `_sum`, a
//! histogram both etcd and metcd export), read before and after the run
//! phase, so the results carry fsyncs per acknowledged write per system;
//! the leader is the member whose `etcd_server_is_leader` is 1.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{ConnectOptions, DeleteOptions, GetOptions, Txn, TxnOp};
use tokio::runtime::Runtime;

use crate::cluster_target::CLUSTER_DURABILITY;
use crate::error::{Result, WorkloadError};
use crate::results::{MemberFsyncs, ReplicationSummary, process_cpu_seconds};
use crate::spec::{ReadConsistency, WorkloadSpec};
use crate::target::{Client, Target, TargetStatus};

/// Operations per transaction etcd accepts by default (`--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;

/// How long one request may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One member: where its gRPC API and its `/metrics` are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `host:port` of the v3 gRPC API.
    pub grpc: String,
    /// `host:port` serving `/metrics` over HTTP (etcd: its client port;
    /// metcd: its HTTP client port).
    pub metrics: String,
}

/// A cluster reached through the etcd v3 API.
pub struct EtcdTarget {
    name: String,
    /// What it is (`etcd 3.4.23`, `metcd on redb`), for the description.
    system: String,
    runtime: Arc<Runtime>,
    clients: Vec<etcd_client::Client>,
    members: Vec<Member>,
    consistency: ReadConsistency,
    http: cluster::Client,
    /// The members' process ids, in member order, when the harness started
    /// them: their CPU time is then part of the results.
    pids: Vec<u32>,
    /// Writes as one-put transactions (etcd's benchmark `txn-put`).
    txn_writes: bool,
}

fn target_error(name: &str, operation: &str, message: impl ToString) -> WorkloadError {
    WorkloadError::Target {
        target: name.to_string(),
        operation: operation.to_string(),
        message: message.to_string(),
    }
}

impl EtcdTarget {
    /// Connects `connections` clients to `members` (each client knows every
    /// member and balances over them, as etcd's clients do).
    pub fn connect(
        name: &str,
        system: &str,
        members: Vec<Member>,
        connections: usize,
        consistency: ReadConsistency,
    ) -> Result<EtcdTarget> {
        if members.is_empty() {
            return Err(target_error(name, "connect", "no members given"));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| target_error(name, "connect", format!("cannot start tokio: {e}")))?;
        let endpoints: Vec<String> = members.iter().map(|m| m.grpc.clone()).collect();
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(REQUEST_TIMEOUT);
        let clients = (0..connections.max(1))
            .map(|_| {
                runtime
                    .block_on(etcd_client::Client::connect(
                        endpoints.clone(),
                        Some(options.clone()),
                    ))
                    .map_err(|e| target_error(name, "connect", format!("{endpoints:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let metrics: Vec<String> = members.iter().map(|m| m.metrics.clone()).collect();
        let http = cluster::Client::new(&metrics)
            .map_err(|e| target_error(name, "connect", e))?
            .with_timeout(Duration::from_secs(5))
            .with_retry(Duration::ZERO);
        Ok(EtcdTarget {
            name: name.to_string(),
            system: system.to_string(),
            runtime: Arc::new(runtime),
            clients,
            members,
            consistency,
            http,
            pids: Vec::new(),
            txn_writes: false,
        })
    }

    /// The members' pids (in member order), for CPU time per run.
    pub fn with_pids(mut self, pids: Vec<u32>) -> EtcdTarget {
        self.pids = pids;
        self
    }

    /// Sends every update and insert as a transaction holding one put.
    pub fn with_txn_writes(mut self, txn_writes: bool) -> EtcdTarget {
        self.txn_writes = txn_writes;
        self
    }

    /// Every member's WAL fsync count and time, and which member leads.
    fn counters(&self) -> Result<(u64, Vec<MemberFsyncs>)> {
        let mut leader = 0;
        let mut out = Vec::new();
        for (i, member) in self.members.iter().enumerate() {
            let text = self
                .runtime
                .block_on(self.http.metrics_of(&member.metrics))
                .map_err(|e| {
                    target_error(&self.name, "metrics", format!("{}: {e}", member.metrics))
                })?;
            let value = |series: &str| cluster::metrics::metric_value(&text, series);
            let id = i as u64 + 1;
            let is_leader = value("etcd_server_is_leader") == Some(1.0);
            if is_leader {
                leader = id;
            }
            let fsyncs = value("etcd_disk_wal_fsync_duration_seconds_count").ok_or_else(|| {
                target_error(
                    &self.name,
                    "metrics",
                    format!(
                        "{} exports no etcd_disk_wal_fsync_duration_seconds",
                        member.metrics
                    ),
                )
            })?;
            let seconds = value("etcd_disk_wal_fsync_duration_seconds_sum").unwrap_or(0.0);
            out.push(MemberFsyncs {
                id,
                role: if is_leader { "leader" } else { "follower" }.to_string(),
                endpoint: member.grpc.clone(),
                wal_fsyncs: fsyncs as u64,
                wal_fsync_micros: (seconds * 1e6) as u64,
                cpu_seconds: self.pids.get(i).copied().and_then(process_cpu_seconds),
            });
        }
        Ok((leader, out))
    }
}

impl Target for EtcdTarget {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn description(&self) -> String {
        format!(
            "{} at {} through etcd's v3 gRPC API (the etcd-client crate, {} connection{}); {} reads{}",
            self.system,
            self.members
                .iter()
                .map(|m| m.grpc.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.clients.len(),
            if self.clients.len() == 1 { "" } else { "s" },
            self.consistency.name(),
            if self.txn_writes {
                "; writes as one-put transactions"
            } else {
                ""
            }
        )
    }

    fn connect(&self, thread: usize) -> Result<Box<dyn Client>> {
        Ok(Box::new(EtcdClient {
            runtime: Arc::clone(&self.runtime),
            client: self.clients[thread % self.clients.len()].clone(),
            serializable: matches!(self.consistency, ReadConsistency::Serializable),
            txn_writes: self.txn_writes,
            target: self.name.clone(),
        }))
    }

    fn sync(&self) -> Result<()> {
        // Every acknowledged write is already in a quorum's fsynced WAL.
        Ok(())
    }

    fn sync_primitive(&self) -> String {
        "fdatasync of each member's Raft WAL before a write is acknowledged".to_string()
    }

    fn status(&self) -> Result<TargetStatus> {
        // Key counts and files are the servers' own; zeros mean unknown.
        Ok(TargetStatus {
            keys: 0,
            logical_bytes: 0,
            disk: None,
        })
    }

    fn is_local(&self) -> bool {
        false
    }

    fn check(&self, _spec: &WorkloadSpec) -> Result<()> {
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
        let (leader, after) = self.counters()?;
        Ok(Some(ReplicationSummary::between(
            leader,
            &before,
            after,
            acknowledged_writes,
        )))
    }
}

/// One worker's handle: a clone of one of the target's clients (clones
/// share the connection) and the runtime to block on.
struct EtcdClient {
    runtime: Arc<Runtime>,
    client: etcd_client::Client,
    serializable: bool,
    txn_writes: bool,
    target: String,
}

impl EtcdClient {
    fn failed(&self, operation: &str, e: etcd_client::Error) -> WorkloadError {
        target_error(&self.target, operation, e)
    }

    fn put(&mut self, operation: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let done = if self.txn_writes {
            let txn = Txn::new().and_then([TxnOp::put(key, value, None)]);
            self.runtime.block_on(self.client.txn(txn)).map(|_| ())
        } else {
            self.runtime
                .block_on(self.client.put(key, value, None))
                .map(|_| ())
        };
        done.map_err(|e| self.failed(operation, e))
    }
}

impl Client for EtcdClient {
    fn read(&mut self, key: &[u8]) -> Result<bool> {
        let options = self
            .serializable
            .then(|| GetOptions::new().with_serializable());
        let response = self
            .runtime
            .block_on(self.client.get(key, options))
            .map_err(|e| self.failed("read", e))?;
        Ok(!response.kvs().is_empty())
    }

    fn update(&mut self, key: &[u8], value: &[u8], _durable: bool) -> Result<()> {
        self.put("update", key, value)
    }

    fn insert(&mut self, key: &[u8], value: &[u8], _durable: bool) -> Result<()> {
        self.put("insert", key, value)
    }

    fn scan(&mut self, start: &[u8], count: usize) -> Result<usize> {
        let mut options = GetOptions::new()
            .with_from_key()
            .with_limit(count.min(i64::MAX as usize) as i64);
        if self.serializable {
            options = options.with_serializable();
        }
        let response = self
            .runtime
            .block_on(self.client.get(start, Some(options)))
            .map_err(|e| self.failed("scan", e))?;
        Ok(response.kvs().len())
    }

    /// The load phase's batches as transactions of at most
    /// [`MAX_TXN_OPS`] puts each (etcd's default `--max-txn-ops`), so
    /// loading costs one Raft round per batch instead of one per record, on
    /// etcd and metcd alike.
    fn insert_batch(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        for chunk in records.chunks(MAX_TXN_OPS) {
            let txn = Txn::new().and_then(
                chunk
                    .iter()
                    .map(|(k, v)| TxnOp::put(k.clone(), v.clone(), None))
                    .collect::<Vec<_>>(),
            );
            self.runtime
                .block_on(self.client.txn(txn))
                .map_err(|e| self.failed("load", e))?;
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8], _durable: bool) -> Result<()> {
        self.runtime
            .block_on(self.client.delete(key, None::<DeleteOptions>))
            .map(|_| ())
            .map_err(|e| self.failed("delete", e))
    }

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
}
