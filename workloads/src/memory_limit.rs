//! A memory limit for one benchmarked engine: a memory cgroup that the
//! engine's process joins before it opens anything.
//!
//! A data set "larger than memory" means nothing if the page cache can hold
//! it: Linux caches file pages in any free memory, so on a machine with
//! 24 GiB every data set this workbench loads in minutes would be served
//! from RAM. A memory cgroup charges both a process's own memory and the
//! page-cache pages its reads and writes bring in, and reclaims the cache
//! when the sum reaches the limit. So an engine that runs inside a cgroup
//! limited to `L` bytes can keep at most `L` (minus its heap) of its files
//! cached, whatever the machine has.
//!
//! The suite creates one cgroup per (workload, engine) as a child of the
//! cgroup it runs in, starts a child `workbench run-job` process, which
//! writes its own pid into the cgroup before it opens the engine (so even
//! the load phase's pages are charged to it), waits for it, reads the
//! cgroup's peak usage and OOM kills, and removes the cgroup.
//!
//! The load phase runs under [`LOAD_LIMIT_FACTOR`] times the limit: it is
//! not measured, and a B+tree loaded under the final limit re-reads most of
//! its pages from the device for every batch (redb loading 1.2 million
//! records under 256 MiB, then under 1 GiB, took over ten minutes on a
//! loaded 2-core machine, most of the workload's time). The child lowers
//! the limit to its final value after the load and its settle (memtables
//! flushed, so the engine's heap is at its smallest), before the run phase;
//! the kernel then evicts cached pages until the cgroup fits, and the
//! measured run and the last settle happen under the final limit. Both
//! limits are recorded.
//!
//! Both cgroup hierarchies are supported:
//!
//! * **cgroup v2** (`memory.max`): the process's own cgroup (the `0::` line
//!   of `/proc/self/cgroup`) must have the memory controller in its
//!   `cgroup.subtree_control`, or be the root, where we enable it;
//! * **cgroup v1** (`memory.limit_in_bytes`, and `memory.memsw.limit_in_bytes`
//!   so swap cannot stand in for the limit): the `memory` controller's
//!   hierarchy, found from `/proc/self/cgroup` and `/proc/self/mounts`.
//!
//! Without either (no cgroup filesystem, not writable, no memory
//! controller), [`MemoryCgroup::create`] fails with an error that says what
//! was tried and why it failed; the suite then refuses the memory-limited
//! workload rather than run it with a cache that holds the whole data set.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Result, WorkloadError};

/// The limit a target ran under, as recorded in its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryLimitInfo {
    /// The limit during the settles and the measured run, page cache
    /// included.
    pub limit_bytes: u64,
    /// The looser limit of the (unmeasured) load phase.
    #[serde(default)]
    pub load_limit_bytes: Option<u64>,
    /// How it was enforced: `cgroup v2 memory.max` or `cgroup v1
    /// memory.limit_in_bytes`.
    pub mechanism: String,
    /// The cgroup's highest usage (heap and page cache) over the run, where
    /// the kernel reports it.
    #[serde(default)]
    pub peak_bytes: Option<u64>,
}

/// The load phase's limit, as a multiple of the final one.
pub const LOAD_LIMIT_FACTOR: u64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    V1,
    V2,
}

/// Where a cgroup's limit is written, for the child that tightens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitFiles {
    pub dir: PathBuf,
    pub version: Version,
}

impl LimitFiles {
    /// Sets the cgroup's memory limit (and its memory + swap limit, so swap
    /// cannot stand in for memory) to `bytes`. Lowering it makes the kernel
    /// evict cached pages until the cgroup fits, or fail if it cannot.
    pub fn set(&self, bytes: u64) -> Result<()> {
        // Lowering fails (EBUSY) while reclaim cannot keep up, e.g. with
        // dirty pages still being written back: retry for a few seconds.
        let mut last = Ok(());
        for _ in 0..40 {
            last = self.set_once(bytes);
            if last.is_ok() {
                return last;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        last
    }

    fn set_once(&self, bytes: u64) -> Result<()> {
        let value = bytes.to_string();
        let result = match self.version {
            Version::V2 => write(&self.dir.join("memory.max"), &value).and_then(|()| {
                let swap = self.dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")
                } else {
                    Ok(())
                }
            }),
            // memory + swap may never be below memory: set memory first
            // when lowering (the only change made after creation).
            Version::V1 => write(&self.dir.join("memory.limit_in_bytes"), &value).and_then(|()| {
                let memsw = self.dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &value)
                } else {
                    Ok(())
                }
            }),
        };
        result.map_err(|reason| {
            WorkloadError::MemoryLimit(format!(
                "cannot set the limit to {} MiB: {reason}; {}",
                bytes >> 20,
                self.usage()
            ))
        })
    }

    /// What the cgroup holds now, split into the processes' own memory
    /// (anonymous: heap, which only the process can give back) and file
    /// pages (the page cache, which the kernel can evict), for the message
    /// of a limit that could not be set.
    fn usage(&self) -> String {
        let stat = self.dir.join("memory.stat");
        let (anon, file) = match self.version {
            Version::V2 => (keyed(&stat, "anon"), keyed(&stat, "file")),
            Version::V1 => (keyed(&stat, "rss"), keyed(&stat, "cache")),
        };
        match (anon, file) {
            (Some(anon), Some(file)) => format!(
                "the engine's process holds {} MiB of its own memory (heap) and {} MiB of page \
                 cache: its own memory alone does not fit under the limit",
                anon >> 20,
                file >> 20
            ),
            _ => "the engine's own memory may exceed it".to_string(),
        }
    }
}

/// Gives the C allocator's free memory back to the kernel. glibc keeps the
/// memory freed by a process in its arenas (the memtables an engine filled
/// while loading and then flushed, say), and a cgroup counts it as the
/// process's own until it is returned; without this, lowering the limit
/// after the load can fail although the engine no longer uses that memory.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas
    // to the kernel; it takes no pointers and is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A memory cgroup created for one child process; removed on drop.
#[derive(Debug)]
pub struct MemoryCgroup {
    dir: PathBuf,
    version: Version,
    limit_bytes: u64,
}

fn unavailable(tried: &[String]) -> WorkloadError {
    WorkloadError::MemoryLimit(format!(
        "no memory cgroup could be created ({}); a memory-limited workload needs a writable \
         cgroup v2 hierarchy with the memory controller delegated, or cgroup v1's memory \
         controller (usually: run as root). Run the other workloads, or give this spec no \
         memory_limit_mib (its data set then fits in the page cache and measures that instead)",
        tried.join("; ")
    ))
}

/// `(hierarchy id, controllers, path)` lines of `/proc/self/cgroup`.
fn own_cgroups() -> Vec<(String, String, String)> {
    fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            Some((
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                parts.next()?.to_string(),
            ))
        })
        .collect()
}

/// Mount points of `/proc/self/mounts` with their type and options.
fn mounts() -> Vec<(String, String, String)> {
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 4).then(|| {
                (
                    fields[1].to_string(),
                    fields[2].to_string(),
                    fields[3].to_string(),
                )
            })
        })
        .collect()
}

fn write(path: &Path, value: &str) -> std::result::Result<(), String> {
    fs::write(path, value).map_err(|e| format!("writing '{value}' to {}: {e}", path.display()))
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file such as `memory.events`.
fn keyed(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Removes `metcd-bench-*` cgroups under `parent` that a killed run left
/// behind. Only empty cgroups can be removed, so one in use is untouched.
fn remove_leftovers(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("metcd-bench-")
        {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

impl MemoryCgroup {
    /// Creates a cgroup limited to `limit_bytes`, a child of this
    /// process's own memory cgroup. It starts at `LOAD_LIMIT_FACTOR` times
    /// that, for the load; [`LimitFiles::set`] tightens it.
    pub fn create(limit_bytes: u64) -> Result<MemoryCgroup> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "metcd-bench-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let cgroups = own_cgroups();
        let mounts = mounts();
        let mut tried = Vec::new();

        // cgroup v2.
        let v2_mount = mounts.iter().find(|(_, kind, _)| kind == "cgroup2");
        let v2_path = cgroups
            .iter()
            .find(|(id, controllers, _)| id == "0" && controllers.is_empty());
        match (v2_mount, v2_path) {
            (Some((mount, _, _)), Some((_, _, path))) => {
                let parent = Path::new(mount).join(path.trim_start_matches('/'));
                match Self::create_v2(&parent, &name, limit_bytes, path == "/") {
                    Ok(cgroup) => return Ok(cgroup),
                    Err(reason) => {
                        tried.push(format!("cgroup v2 at {}: {reason}", parent.display()))
                    }
                }
            }
            _ => tried.push("cgroup v2: not mounted".to_string()),
        }

        // cgroup v1's memory controller.
        let v1_mount = mounts.iter().find(|(_, kind, options)| {
            kind == "cgroup" && options.split(',').any(|o| o == "memory")
        });
        let v1_path = cgroups
            .iter()
            .find(|(_, controllers, _)| controllers.split(',').any(|c| c == "memory"));
        match (v1_mount, v1_path) {
            (Some((mount, _, _)), Some((_, _, path))) => {
                let parent = Path::new(mount).join(path.trim_start_matches('/'));
                match Self::create_v1(&parent, &name, limit_bytes) {
                    Ok(cgroup) => return Ok(cgroup),
                    Err(reason) => {
                        tried.push(format!("cgroup v1 at {}: {reason}", parent.display()))
                    }
                }
            }
            _ => tried.push("cgroup v1 memory controller: not mounted".to_string()),
        }
        Err(unavailable(&tried))
    }

    fn create_v2(
        parent: &Path,
        name: &str,
        limit_bytes: u64,
        is_root: bool,
    ) -> std::result::Result<MemoryCgroup, String> {
        let delegated = |file: &str| {
            fs::read_to_string(parent.join(file))
                .map(|s| s.split_whitespace().any(|c| c == "memory"))
                .unwrap_or(false)
        };
        if !delegated("cgroup.controllers") {
            return Err("the memory controller is not available here".into());
        }
        if !delegated("cgroup.subtree_control") {
            if !is_root {
                return Err(
                    "the memory controller is not enabled for child cgroups, and a cgroup that \
                     holds processes (this one) cannot enable it"
                        .into(),
                );
            }
            write(&parent.join("cgroup.subtree_control"), "+memory")?;
        }
        remove_leftovers(parent);
        let dir = parent.join(name);
        fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let cgroup = MemoryCgroup {
            dir,
            version: Version::V2,
            limit_bytes,
        };
        cgroup
            .limit_files()
            .set(limit_bytes * LOAD_LIMIT_FACTOR)
            .map_err(|e| e.to_string())?;
        Ok(cgroup)
    }

    fn create_v1(
        parent: &Path,
        name: &str,
        limit_bytes: u64,
    ) -> std::result::Result<MemoryCgroup, String> {
        remove_leftovers(parent);
        let dir = parent.join(name);
        fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let cgroup = MemoryCgroup {
            dir,
            version: Version::V1,
            limit_bytes,
        };
        let load_limit = limit_bytes * LOAD_LIMIT_FACTOR;
        cgroup
            .limit_files()
            .set(load_limit)
            .map_err(|e| e.to_string())?;
        if read_u64(&cgroup.dir.join("memory.limit_in_bytes")).is_none_or(|l| l > load_limit) {
            return Err("the kernel did not accept the limit".into());
        }
        Ok(cgroup)
    }

    /// The file a process writes its pid into to join the cgroup.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Where the limit is written.
    pub fn limit_files(&self) -> LimitFiles {
        LimitFiles {
            dir: self.dir.clone(),
            version: self.version,
        }
    }

    /// What the result documents record, peak usage so far included.
    pub fn info(&self) -> MemoryLimitInfo {
        let (mechanism, peak) = match self.version {
            Version::V2 => ("cgroup v2 memory.max", "memory.peak"),
            Version::V1 => (
                "cgroup v1 memory.limit_in_bytes",
                "memory.max_usage_in_bytes",
            ),
        };
        MemoryLimitInfo {
            limit_bytes: self.limit_bytes,
            load_limit_bytes: Some(self.limit_bytes * LOAD_LIMIT_FACTOR),
            mechanism: mechanism.to_string(),
            peak_bytes: read_u64(&self.dir.join(peak)),
        }
    }

    /// How many processes the kernel's OOM killer killed in this cgroup,
    /// where the kernel reports it.
    pub fn oom_kills(&self) -> Option<u64> {
        match self.version {
            Version::V2 => keyed(&self.dir.join("memory.events"), "oom_kill"),
            Version::V1 => keyed(&self.dir.join("memory.oom_control"), "oom_kill"),
        }
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // A cgroup can be removed once its processes have exited; the
        // kernel may take a moment to notice the last one is gone.
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!(
            "warning: could not remove the memory cgroup {}",
            self.dir.display()
        );
    }
}

/// Moves this process (every thread) into the cgroup whose `cgroup.procs`
/// is `procs_file`, and checks that it arrived.
pub fn join(procs_file: &Path) -> Result<()> {
    let pid = std::process::id().to_string();
    fs::write(procs_file, &pid).map_err(|e| {
        WorkloadError::MemoryLimit(format!(
            "cannot join the memory cgroup ({}): {e}",
            procs_file.display()
        ))
    })?;
    let members = fs::read_to_string(procs_file).unwrap_or_default();
    if !members.lines().any(|l| l.trim() == pid) {
        return Err(WorkloadError::MemoryLimit(format!(
            "wrote pid {pid} to {} but the process is not listed there",
            procs_file.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_are_read_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.events");
        fs::write(&file, "low 0\nhigh 3\noom 1\noom_kill 2\n").unwrap();
        assert_eq!(keyed(&file, "oom_kill"), Some(2));
        assert_eq!(keyed(&file, "oom"), Some(1));
        assert_eq!(keyed(&file, "max"), None);
    }

    #[test]
    fn a_cgroup_is_created_with_its_limit_or_refused_with_reasons() {
        match MemoryCgroup::create(64 << 20) {
            Ok(cgroup) => {
                let info = cgroup.info();
                assert_eq!(info.limit_bytes, 64 << 20);
                assert_eq!(info.load_limit_bytes, Some(LOAD_LIMIT_FACTOR * (64 << 20)));
                cgroup.limit_files().set(64 << 20).unwrap();
                assert!(info.mechanism.contains("cgroup"));
                assert!(cgroup.procs_file().exists());
                let dir = cgroup.dir.clone();
                drop(cgroup);
                assert!(!dir.exists(), "{} was not removed", dir.display());
            }
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains("cgroup v2") && message.contains("cgroup v1"),
                    "{message}"
                );
            }
        }
    }
}
