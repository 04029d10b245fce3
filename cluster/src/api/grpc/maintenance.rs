//! etcd's Maintenance service: status, alarms, hashes, snapshot, leader
//! transfer and defragmentation.
//!
//! * `Status` reports etcd's fields from the Raft thread's status: the
//!   version ([`super::reported_version`]), the size of the member's data
//!   directory (blocks allocated, as `dbSize` and `dbSizeInUse`), the
//!   leader, the Raft term, commit and applied indexes, learner or not.
//! * `Alarm`: metcd raises no alarms (it has no space quota); listing them
//!   answers an empty list, raising or clearing one is refused.
//! * `Hash` hashes every key-value pair in the engine; `HashKV` hashes the
//!   MVCC history up to a revision (what the fault harness compares between
//!   replicas: equal at equal revisions on every member).
//! * `Snapshot` streams a snapshot file of the state machine in etcd's
//!   frame, which `etcdctl snapshot save` checks ([`crate::backup`]).
//! * `MoveLeader` starts a Raft leader transfer on the leader and waits,
//!   within the request timeout, until the target leads.
//! * `Defragment` syncs the engine and gives back the space deleted and
//!   overwritten data holds where the engine can while serving
//!   (`Engine::defragment`: a full compaction of rocksdb or fjall, a merge
//!   of Bitcask's files; memory, sled and redb have nothing to run, said in
//!   that method's documentation), then settles it. Compaction of the MVCC
//!   history (`Compact`) deletes old revisions; this is what returns their
//!   bytes to the file system.

use std::pin::Pin;
use std::time::{Duration, Instant};

use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbDefragmentRequest, PbDefragmentResponse, PbHashKvRequest,
    PbHashKvResponse, PbHashRequest, PbHashResponse, PbMaintenanceService, PbMoveLeaderRequest,
    PbMoveLeaderResponse, PbSnapshotRequest, PbSnapshotResponse, PbStatusRequest, PbStatusResponse,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{GrpcApi, Route, status};
use crate::api::raft_call::Effect;
use crate::backup;

/// Bytes per `SnapshotResponse` message (etcd sends 32 KiB).
const SNAPSHOT_CHUNK: usize = 32 * 1024;

pub struct MaintenanceService {
    api: GrpcApi,
}

impl MaintenanceService {
    pub fn new(api: GrpcApi) -> MaintenanceService {
        MaintenanceService { api }
    }

    fn header(&self) -> Option<etcd_client::proto::PbResponseHeader> {
        self.api.header(self.api.node.kv.revision())
    }
}

/// Bytes allocated on disk under `dir` (every file, recursively).
fn allocated_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => allocated_bytes(&entry.path()),
            Ok(meta) => meta.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<PbSnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        match request.into_inner().action {
            // GET
            0 => Ok(Response::new(PbAlarmResponse {
                header: self.header(),
                alarms: vec![],
            })),
            action => Err(Status::unimplemented(format!(
                "metcd raises no alarms (it has no space quota), so alarm action {action} \
                 (activate or deactivate) has nothing to act on; only listing (GET) is served"
            ))),
        }
    }

    async fn status(
        &self,
        _request: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        let status = self.api.node_status().await?;
        let dir = self.api.node.data_dir.clone();
        let size = tokio::task::spawn_blocking(move || allocated_bytes(&dir))
            .await
            .unwrap_or(0) as i64;
        Ok(Response::new(PbStatusResponse {
            header: self.api.header(status.revision as i64),
            version: super::reported_version(),
            db_size: size,
            leader: status.leader,
            raft_index: status.commit_index,
            raft_term: status.term,
            raft_applied_index: status.applied_index,
            errors: vec![],
            db_size_in_use: size,
            is_learner: status.role == "learner",
        }))
    }

    async fn defragment(
        &self,
        _request: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        let engine = std::sync::Arc::clone(&self.api.node.engine);
        tokio::task::spawn_blocking(move || {
            engine.sync()?;
            engine.defragment()?;
            engine.settle(Duration::from_secs(60)).map(|_| ())
        })
        .await
        .map_err(|e| Status::internal(format!("defragment task: {e}")))?
        .map_err(|e| Status::internal(format!("defragmenting the engine: {e}")))?;
        Ok(Response::new(PbDefragmentResponse {
            header: self.header(),
        }))
    }

    async fn hash(
        &self,
        _request: Request<PbHashRequest>,
    ) -> Result<Response<PbHashResponse>, Status> {
        let kv = self.api.node.kv.clone();
        let hash = tokio::task::spawn_blocking(move || kv.hash_all())
            .await
            .map_err(|e| Status::internal(format!("hash task: {e}")))?
            .map_err(status::mvcc)?;
        Ok(Response::new(PbHashResponse {
            header: self.header(),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        let revision = request.into_inner().revision;
        let kv = self.api.node.kv.clone();
        let (hash, at, compacted) = tokio::task::spawn_blocking(move || kv.hash_kv(revision))
            .await
            .map_err(|e| Status::internal(format!("hash task: {e}")))?
            .map_err(status::mvcc)?;
        Ok(Response::new(PbHashKvResponse {
            header: self.api.header(at),
            hash,
            compact_revision: compacted,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let (reply, answer) = oneshot::channel();
        let path = self
            .api
            .ask(
                crate::raft::Request::Snapshot { reply },
                answer,
                Effect::None,
            )
            .await?
            .map_err(Status::unavailable)?;
        // Opened now: the Raft thread may prune the file later, and an
        // open file stays readable.
        let file = std::fs::File::open(&path)
            .map_err(|e| Status::internal(format!("opening {}: {e}", path.display())))?;
        let header = self.header();
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || stream_backup(file, header, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn move_leader(
        &self,
        request: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        let pb = request.into_inner();
        let target = pb.target_id;
        if self.api.node.member(target).is_none_or(|m| m.learner) {
            return Err(Status::failed_precondition(status::BAD_LEADER_TRANSFEREE));
        }
        if let Route::Leader(leader) = self.api.route()? {
            return self
                .api
                .forward(
                    &leader,
                    "/etcdserverpb.Maintenance/MoveLeader",
                    pb,
                    |r: &mut PbMoveLeaderResponse| r.header.as_mut(),
                )
                .await;
        }
        let (reply, answer) = oneshot::channel();
        self.api
            .ask(
                crate::raft::Request::TransferLeader { to: target, reply },
                answer,
                Effect::None,
            )
            .await?
            .map_err(status::write)?;
        let deadline = Instant::now() + self.api.config.request_timeout;
        while self.api.node.view().leader != target {
            if Instant::now() >= deadline {
                return Err(status::with_detail(
                    tonic::Code::Unavailable,
                    "etcdserver: request timed out, leader transfer took too long",
                    &format!("member {target} did not take over leadership in time"),
                    crate::api::raft_call::Outcome::NotApplied,
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Response::new(PbMoveLeaderResponse {
            header: self.header(),
        }))
    }
}

/// Sends the backup of the snapshot file in chunks (on a blocking thread:
/// the file is read as it is sent, so memory stays bounded).
fn stream_backup(
    file: std::fs::File,
    header: Option<etcd_client::proto::PbResponseHeader>,
    tx: mpsc::Sender<Result<PbSnapshotResponse, Status>>,
) {
    struct Chunks {
        tx: mpsc::Sender<Result<PbSnapshotResponse, Status>>,
        header: Option<etcd_client::proto::PbResponseHeader>,
        buffer: Vec<u8>,
        remaining: u64,
    }
    impl Chunks {
        fn flush(&mut self) -> std::io::Result<()> {
            let blob = std::mem::take(&mut self.buffer);
            self.remaining = self.remaining.saturating_sub(blob.len() as u64);
            let message = PbSnapshotResponse {
                header: self.header.take(),
                remaining_bytes: self.remaining,
                blob,
            };
            self.tx
                .blocking_send(Ok(message))
                .map_err(|_| std::io::Error::other("the client went away"))
        }
    }
    impl std::io::Write for Chunks {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let room = SNAPSHOT_CHUNK - self.buffer.len();
            let n = room.min(bytes.len());
            self.buffer.extend_from_slice(&bytes[..n]);
            if self.buffer.len() == SNAPSHOT_CHUNK {
                self.flush()?;
            }
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let len = match file.metadata() {
        Ok(meta) => meta.len(),
        Err(err) => {
            let _ = tx.blocking_send(Err(Status::internal(format!("snapshot file: {err}"))));
            return;
        }
    };
    let total = 16 + len + backup::padding(16 + len) as u64 + backup::HASH_BYTES;
    let mut chunks = Chunks {
        tx: tx.clone(),
        header,
        buffer: Vec::with_capacity(SNAPSHOT_CHUNK),
        remaining: total,
    };
    let result = backup::write_open_file(file, len, &mut chunks).and_then(|_| {
        if chunks.buffer.is_empty() {
            Ok(())
        } else {
            Chunks::flush(&mut chunks).map_err(|e| backup::BackupError::Io {
                context: "sending the snapshot".into(),
                source: e,
            })
        }
    });
    if let Err(err) = result {
        let _ = tx.blocking_send(Err(Status::internal(format!(
            "streaming the snapshot: {err}"
        ))));
    }
}
