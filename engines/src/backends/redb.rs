//! `redb`: a copy-on-write B+tree with ACID transactions, our stand-in for
//! the boltdb (bbolt) backend of etcd.
//!
//! Every write is one redb write transaction on one table, `kv`. redb never
//! overwrites a live page: a commit writes new pages for the changed path
//! from leaf to root, then flips to a new root in the database header. That
//! gives readers a consistent snapshot without locks and makes a batch
//! atomic for free; the price is that a one-key update rewrites a whole
//! root-to-leaf path (write amplification) and writers are serialised.
//!
//! Durability: a write with `sync: true` commits with
//! `Durability::Immediate`. redb 4 then uses its default *one-phase commit
//! with checksums*: it writes the transaction's pages and the header's spare
//! commit slot (the new root, with a checksum over it), makes that slot the
//! primary one, and calls `File::sync_data` (`fdatasync` on Linux) once, so
//! the commit is on stable storage when the call returns. It is not a
//! two-phase commit (which syncs the pages before writing the header and
//! then syncs again); redb offers that as
//! `WriteTransaction::set_two_phase_commit`, and we leave it off. After a
//! crash, recovery checks the primary slot's checksum and, if the last
//! commit was torn, falls back to the previous one; it never opens half a
//! transaction. With `sync: false` the commit uses `Durability::None`: its
//! pages are written to the file (no sync) and it is visible to readers at
//! once, durable only after a later immediate commit, which is what
//! [`Engine::sync`] performs (an empty transaction committed with
//! `Durability::Immediate`). redb has no background threads, so
//! [`Engine::settle`] is that sync.

use redb::{Database, Durability, ReadableDatabase, TableDefinition, TableError};

use crate::EngineOptions;
use crate::data_dir::DataDir;
use crate::engine::{
    BatchOp, Engine, EngineStatus, KeyRange, Pair, WriteBatch, WriteOptions, check_batch,
    check_key, count_by_scan,
};
use crate::error::{EngineError, Result};
use crate::kind::EngineKind;

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const FILE: &str = "data.redb";

pub struct RedbEngine {
    db: Database,
    dir: DataDir,
}

fn err(e: impl std::fmt::Display) -> EngineError {
    EngineError::backend(EngineKind::Redb, e)
}

impl RedbEngine {
    pub fn open(dir: DataDir, options: &EngineOptions) -> Result<Self> {
        let path = dir.join(FILE);
        let db = Database::builder()
            .set_cache_size(options.cache_bytes as usize)
            .create(&path)
            .map_err(|e| err(format!("opening {}: {e}", path.display())))?;
        // Create the table up front so that readers never meet a database
        // without it.
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(TABLE).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(RedbEngine { db, dir })
    }

    /// Runs `body` in one write transaction committed with the durability
    /// that `options` asks for.
    fn write(
        &self,
        options: WriteOptions,
        body: impl FnOnce(&mut redb::Table<&[u8], &[u8]>) -> Result<()>,
    ) -> Result<()> {
        let mut tx = self.db.begin_write().map_err(err)?;
        tx.set_durability(if options.sync {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(err)?;
        {
            let mut table = tx.open_table(TABLE).map_err(err)?;
            body(&mut table)?;
        }
        tx.commit().map_err(err)
    }
}

impl Engine for RedbEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Redb
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(TABLE).map_err(err)?;
        Ok(table.get(key).map_err(err)?.map(|v| v.value().to_vec()))
    }

    fn get_with(&self, key: &[u8], visit: &mut dyn FnMut(Option<&[u8]>)) -> Result<()> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(TABLE).map_err(err)?;
        let guard = table.get(key).map_err(err)?;
        visit(guard.as_ref().map(|v| v.value()));
        Ok(())
    }

    fn put(&self, key: &[u8], value: &[u8], options: WriteOptions) -> Result<()> {
        check_key(key)?;
        self.write(options, |t| t.insert(key, value).map(|_| ()).map_err(err))
    }

    fn delete(&self, key: &[u8], options: WriteOptions) -> Result<()> {
        check_key(key)?;
        self.write(options, |t| t.remove(key).map(|_| ()).map_err(err))
    }

    fn write_batch(&self, batch: WriteBatch, options: WriteOptions) -> Result<()> {
        check_batch(&batch)?;
        self.write(options, |t| {
            for op in batch.ops() {
                match op {
                    BatchOp::Put { key, value } => {
                        t.insert(key.as_slice(), value.as_slice()).map_err(err)?;
                    }
                    BatchOp::Delete { key } => {
                        t.remove(key.as_slice()).map_err(err)?;
                    }
                }
            }
            Ok(())
        })
    }

    fn scan(&self, range: &KeyRange, limit: usize) -> Result<Vec<Pair>> {
        if range.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let tx = self.db.begin_read().map_err(err)?;
        let table = match tx.open_table(TABLE) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let bounds = (
            super::bound_slice(&range.start),
            super::bound_slice(&range.end),
        );
        let mut out = Vec::new();
        for item in table.range::<&[u8]>(bounds).map_err(err)? {
            let (k, v) = item.map_err(err)?;
            out.push((k.value().to_vec(), v.value().to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn sync(&self) -> Result<()> {
        let mut tx = self.db.begin_write().map_err(err)?;
        tx.set_durability(Durability::Immediate).map_err(err)?;
        tx.commit().map_err(err)
    }

    fn status(&self) -> Result<EngineStatus> {
        let (keys, logical_bytes) = count_by_scan(self)?;
        // Free pages inside the file: space a compaction would give back.
        let tx = self.db.begin_write().map_err(err)?;
        let stats = tx.stats().map_err(err)?;
        let fragmented = stats.fragmented_bytes();
        tx.abort().map_err(err)?;
        Ok(EngineStatus {
            kind: EngineKind::Redb,
            keys,
            logical_bytes,
            disk_bytes: self.dir.disk_usage()?,
            reclaimable_bytes: Some(fragmented),
        })
    }
}
