//! The directory a durable engine lives in: its kind marker and its lock.
//!
//! Each durable engine gets a directory of its own. [`DataDir::prepare`]
//! creates it, refuses a directory that holds another engine kind or
//! unrelated files, records the kind in `ENGINE`, and takes an exclusive
//! advisory lock on `LOCK` (`flock(2)` through `File::try_lock`). The lock is
//! released when the `DataDir` is dropped, which happens when the engine
//! holding it is dropped, or by the kernel when the process dies, so a
//! crashed process never leaves a stale lock behind.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, IoContext, Result};
use crate::kind::EngineKind;

const MARKER: &str = "ENGINE";
const LOCK: &str = "LOCK";

/// An engine directory, locked for this process.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates or checks `dir` for an engine of `kind` and locks it.
    pub fn prepare(dir: &Path, kind: EngineKind) -> Result<DataDir> {
        fs::create_dir_all(dir)
            .context(|| format!("cannot create data directory {}", dir.display()))?;
        if !dir.is_dir() {
            return Err(EngineError::InvalidArgument(format!(
                "{} is not a directory; give a directory for the engine's files",
                dir.display()
            )));
        }
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .context(|| {
                format!(
                    "cannot open lock file {} (is the directory writable?)",
                    lock_path.display()
                )
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(EngineError::Locked {
                    dir: dir.to_path_buf(),
                    lock: lock_path,
                });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(EngineError::io(
                    format!("cannot lock {}", lock_path.display()),
                    e,
                ));
            }
        }

        let marker = dir.join(MARKER);
        match fs::read_to_string(&marker) {
            Ok(found) => {
                let found = found.trim();
                if found != kind.name() {
                    return Err(EngineError::KindMismatch {
                        dir: dir.to_path_buf(),
                        found: found.to_string(),
                        requested: kind,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let strangers: Vec<String> = fs::read_dir(dir)
                    .context(|| format!("cannot list {}", dir.display()))?
                    .filter_map(|entry| entry.ok())
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| name != LOCK)
                    .collect();
                if !strangers.is_empty() {
                    return Err(EngineError::InvalidArgument(format!(
                        "directory {} is not empty ({} entries, such as '{}') and holds no metcd \
                         ENGINE marker; use an empty directory or one written by metcd",
                        dir.display(),
                        strangers.len(),
                        strangers[0]
                    )));
                }
                write_durably(&marker, format!("{}\n", kind.name()).as_bytes())?;
                sync_dir(dir)?;
            }
            Err(e) => {
                return Err(EngineError::io(
                    format!("cannot read {}", marker.display()),
                    e,
                ));
            }
        }
        Ok(DataDir {
            path: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory, for the engine's own files.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Bytes of every file under the directory.
    pub fn disk_usage(&self) -> Result<u64> {
        disk_usage(&self.path)
    }
}

/// Bytes of every regular file under `path`, recursively (0 if missing).
pub fn disk_usage(path: &Path) -> Result<u64> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(EngineError::io(
                format!("cannot stat {}", path.display()),
                e,
            ));
        }
    };
    if meta.is_file() {
        return Ok(meta.len());
    }
    if !meta.is_dir() {
        return Ok(0);
    }
    let mut total = 0;
    let entries = fs::read_dir(path).context(|| format!("cannot list {}", path.display()))?;
    for entry in entries {
        // A file an engine deletes while we walk (a finished compaction) is
        // simply not counted.
        let Ok(entry) = entry else { continue };
        total += disk_usage(&entry.path()).unwrap_or(0);
    }
    Ok(total)
}

/// Writes `bytes` to `path` through a temporary file, fsyncs it and renames
/// it into place, so a crash leaves either the old file or the new one.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).context(|| format!("cannot rename to {}", path.display()))
}

/// Fsyncs a directory so that file creations and renames in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .context(|| format!("cannot fsync directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_in_same_process_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DataDir::prepare(tmp.path(), EngineKind::Redb).unwrap();
        let err = DataDir::prepare(tmp.path(), EngineKind::Redb).unwrap_err();
        assert!(matches!(err, EngineError::Locked { .. }), "{err}");
        drop(first);
        DataDir::prepare(tmp.path(), EngineKind::Redb).unwrap();
    }

    #[test]
    fn other_kind_is_refused_naming_both() {
        let tmp = tempfile::tempdir().unwrap();
        drop(DataDir::prepare(tmp.path(), EngineKind::Sled).unwrap());
        let err = DataDir::prepare(tmp.path(), EngineKind::Fjall)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sled") && err.contains("fjall"), "{err}");
    }

    #[test]
    fn foreign_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("notes.txt"), b"mine").unwrap();
        let err = DataDir::prepare(tmp.path(), EngineKind::Bitcask)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not empty"), "{err}");
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(DataDir::prepare(&file, EngineKind::Redb).is_err());
    }
}
