//! # durable_io: the file operations our own durable code performs
//!
//! Bitcask (`crate::bitcask`) and the cluster's write-ahead log are the two
//! pieces of metcd that make data durable themselves, with `write(2)`,
//! `fdatasync(2)`, `rename(2)` and directory fsyncs. Whether they call those
//! in the right order cannot be tested by killing the process: after a
//! SIGKILL the kernel's page cache still holds every write, so code that
//! never fsyncs passes. This module puts every file operation they use
//! behind one small trait, [`DurableIo`], with two implementations:
//!
//! * [`RealIo`]: `std::fs`, exactly what the code did before the trait
//!   existed (no buffering, no extra syncs). It is the default everywhere.
//! * [`SimIo`]: an in-memory file system that records every operation and,
//!   at a simulated power loss, produces the disk a real crash could leave
//!   (see [`sim`] for the model). The power-loss property tests
//!   (`engines/tests/power_loss.rs` for bitcask, the WAL's own tests in the
//!   cluster crate) drive it.
//!
//! ## The operations
//!
//! Files are opened through [`DurableIo::open`] in one of the [`OpenMode`]s
//! and used through [`DurableFile`]: `append`, `write_at`, `read_exact_at`,
//! `len`, `set_len`, `fsync` and `fdatasync`. Names are managed through the
//! file system object: `create_dir_all`, `read` (a whole file), `rename`,
//! `remove`, `sync_dir` (fsync of a directory, what makes a created, renamed
//! or removed name durable), `list`, `exists` and `lock` (an advisory
//! exclusive lock that keeps a second opener out).
//!
//! ## Invariants
//!
//! * A write is durable only after `fsync`/`fdatasync` of its file returned;
//!   a name (creation, rename, removal) only after `sync_dir` of its
//!   directory returned. Nothing else promises durability, and [`SimIo`]
//!   forgets everything else at a crash.
//! * `append` writes all of its bytes at the end of the file or returns an
//!   error; `write_at` is for files not opened in [`OpenMode::Append`].
//! * Handles refer to the file, not the name: a handle opened before a
//!   rename or removal keeps working on the same file, as on Unix.

pub mod sim;

use std::any::Any;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

pub use sim::{SimIo, TornTail};

/// How [`DurableIo::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Appending (and reading); created empty if missing.
    Append,
    /// Reading and positional writing; the file must exist.
    Write,
    /// Reading and writing, created if missing and emptied if present.
    Truncate,
}

/// An open file. Every method takes `&self`, so one handle can be shared
/// by readers (positional reads need no seek position).
pub trait DurableFile: Send + Sync + fmt::Debug {
    /// Writes all of `bytes` at the end of the file.
    fn append(&self, bytes: &[u8]) -> io::Result<()>;
    /// Writes all of `bytes` at `offset`.
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Fills `buf` from `offset`; `UnexpectedEof` if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        self.len().map(|len| len == 0)
    }
    /// Cuts or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// `fsync(2)`: data and metadata on stable storage.
    fn fsync(&self) -> io::Result<()>;
    /// `fdatasync(2)`: data (and the size) on stable storage.
    fn fdatasync(&self) -> io::Result<()>;
}

/// A held lock; dropping it releases the lock.
pub type LockGuard = Box<dyn Any + Send + Sync>;

/// The file system as our durable code sees it. See the module docs.
pub trait DurableIo: Send + Sync + fmt::Debug {
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens `path` as `mode` says.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DurableFile>>;
    /// The whole content of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Renames `from` to `to` (same directory), replacing `to` atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the name `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// `fsync(2)` of a directory: its names are on stable storage.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The names in `dir` (files only, in no particular order).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` names a file.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Takes an exclusive advisory lock on the file `path` (created if
    /// missing); `None` when someone else holds it.
    fn lock(&self, path: &Path) -> io::Result<Option<LockGuard>>;
}

/// The real file system, through `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealIo;

impl RealIo {
    /// The shared handle the engines and the WAL use by default.
    pub fn shared() -> Arc<dyn DurableIo> {
        Arc::new(RealIo)
    }
}

#[derive(Debug)]
struct RealFile(File);

impl DurableFile for RealFile {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        // The file was opened with O_APPEND: every write lands at the end.
        (&self.0).write_all(bytes)
    }
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all_at(bytes, offset)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.metadata().map(|m| m.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn fsync(&self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn fdatasync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl DurableIo for RealIo {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DurableFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::Append => options.read(true).create(true).append(true),
            OpenMode::Write => options.read(true).write(true),
            OpenMode::Truncate => options.read(true).write(true).create(true).truncate(true),
        };
        Ok(Box::new(RealFile(options.open(path)?)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn lock(&self, path: &Path) -> io::Result<Option<LockGuard>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(file))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// An [`io::Write`] that appends to a [`DurableFile`], so a `BufWriter` can
/// batch small records into few appends (the WAL does).
#[derive(Debug)]
pub struct Appender(pub Box<dyn DurableFile>);

impl Write for Appender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.append(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_io_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let io = RealIo;
        let dir = tmp.path().join("d");
        io.create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let file = io.open(&path, OpenMode::Append).unwrap();
        file.append(b"hello ").unwrap();
        file.append(b"world").unwrap();
        file.fdatasync().unwrap();
        io.sync_dir(&dir).unwrap();
        let mut buf = [0u8; 5];
        file.read_exact_at(&mut buf, 6).unwrap();
        assert_eq!(&buf, b"world");
        assert_eq!(file.len().unwrap(), 11);
        file.set_len(5).unwrap();
        assert_eq!(io.read(&path).unwrap(), b"hello");
        io.rename(&path, &dir.join("g")).unwrap();
        assert_eq!(io.list(&dir).unwrap(), vec!["g".to_string()]);
        assert!(!io.exists(&path).unwrap());
        let guard = io.lock(&dir.join("LOCK")).unwrap();
        assert!(guard.is_some());
        assert!(io.lock(&dir.join("LOCK")).unwrap().is_none());
        drop(guard);
        assert!(io.lock(&dir.join("LOCK")).unwrap().is_some());
        io.remove(&dir.join("g")).unwrap();
        io.remove(&dir.join("LOCK")).unwrap();
        assert!(io.list(&dir).unwrap().is_empty());
    }
}
