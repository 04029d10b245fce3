//! Machine calibration: what the numbers of a run were measured on.
//!
//! Latencies mean little without the machine, and durable-write latencies
//! mean nothing without the disk: a run stores the CPU model, core count,
//! memory and kernel (read from `/proc`), the filesystem of the data
//! directory (the longest mount point of `/proc/self/mounts` that contains
//! it) and the measured `fdatasync` latency of that directory: 200 rounds
//! of a 4 KiB write followed by `fdatasync` (`File::sync_data`) in a
//! temporary file there. Every durable write of every engine pays at least
//! that, so it is the floor to compare `sync` results with.
//!
//! Fields that cannot be read (another OS, a restricted `/proc`) are
//! recorded as "unknown" instead of failing the run.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};
use crate::runner::new_histogram;

/// Rounds of write + fdatasync in the calibration.
pub const FSYNC_ROUNDS: usize = 200;
const FSYNC_WRITE: usize = 4096;

/// The machine and the data directory's disk, as measured before a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub data_dir: PathBuf,
    pub filesystem: Filesystem,
    pub fdatasync: FsyncLatency,
}

/// The mount that holds the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub options: String,
}

/// Latency of a 4 KiB write plus `fdatasync`, in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsyncLatency {
    pub rounds: usize,
    pub write_bytes: usize,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Machine {
    /// Reads the machine and measures `data_dir` (created if missing).
    pub fn calibrate(data_dir: &Path) -> Result<Machine> {
        fs::create_dir_all(data_dir)
            .context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let data_dir = data_dir
            .canonicalize()
            .unwrap_or_else(|_| data_dir.to_path_buf());
        Ok(Machine {
            cpu_model: cpu_model(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: memory_bytes(),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            filesystem: filesystem_of(&data_dir),
            fdatasync: measure_fdatasync(&data_dir)?,
            data_dir,
        })
    }

    /// One line for plot subtitles and tables.
    pub fn summary(&self) -> String {
        format!(
            "{} cores {}, {:.0} GiB RAM, Linux {}; data on {} ({}); 4 KiB write+fdatasync p50 {}, p99 {}",
            self.cores,
            self.cpu_model,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.kernel,
            self.filesystem.fs_type,
            self.filesystem.device,
            format_nanos(self.fdatasync.p50_ns),
            format_nanos(self.fdatasync.p99_ns)
        )
    }
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn memory_bytes() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// The entry of `/proc/self/mounts` with the longest mount point that
/// contains `path`.
pub fn filesystem_of(path: &Path) -> Filesystem {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best: Option<Filesystem> = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 {
            continue;
        }
        let mount_point = unescape_mount(fields[1]);
        if !path.starts_with(&mount_point) {
            continue;
        }
        // Later entries win ties: they are mounted over the earlier ones.
        if best
            .as_ref()
            .is_none_or(|b| mount_point.len() >= b.mount_point.len())
        {
            best = Some(Filesystem {
                mount_point,
                device: fields[0].to_string(),
                fs_type: fields[2].to_string(),
                options: fields[3].to_string(),
            });
        }
    }
    best.unwrap_or_else(|| Filesystem {
        mount_point: "unknown".into(),
        device: "unknown".into(),
        fs_type: "unknown".into(),
        options: String::new(),
    })
}

/// `/proc/self/mounts` escapes spaces and tabs as octal (`\040`).
fn unescape_mount(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn measure_fdatasync(dir: &Path) -> Result<FsyncLatency> {
    let file = tempfile::NamedTempFile::new_in(dir)
        .context(|| format!("cannot create a calibration file in {}", dir.display()))?;
    let mut handle = file.as_file();
    let block = vec![0xA5u8; FSYNC_WRITE];
    let mut histogram = new_histogram();
    for _ in 0..FSYNC_ROUNDS {
        let start = Instant::now();
        handle
            .write_all(&block)
            .and_then(|_| handle.sync_data())
            .context(|| format!("calibration write + fdatasync in {} failed", dir.display()))?;
        histogram.saturating_record(start.elapsed().as_nanos() as u64);
    }
    Ok(FsyncLatency {
        rounds: FSYNC_ROUNDS,
        write_bytes: FSYNC_WRITE,
        p50_ns: histogram.value_at_quantile(0.5),
        p99_ns: histogram.value_at_quantile(0.99),
        max_ns: histogram.max(),
    })
}

/// This process's storage I/O counters from `/proc/self/io`: bytes it
/// (every thread, the engines' background threads included) caused to be
/// read from and written to the storage layer. Reads served from the page
/// cache are not counted; writes are counted when pages are dirtied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessIo {
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// [`ProcessIo`] now; `None` where `/proc/self/io` cannot be read.
pub fn process_io() -> Option<ProcessIo> {
    let io = fs::read_to_string("/proc/self/io").ok()?;
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(ProcessIo {
        read_bytes: field("read_bytes:")?,
        write_bytes: field("write_bytes:")?,
    })
}

/// Whether `fs_type` keeps files in memory, where `fsync` costs nothing.
pub fn is_memory_filesystem(fs_type: &str) -> bool {
    matches!(fs_type, "tmpfs" | "ramfs")
}

/// 1234 ns -> "1.23 µs": latencies as people read them.
pub fn format_nanos(nanos: u64) -> String {
    let n = nanos as f64;
    if n < 1e3 {
        format!("{nanos} ns")
    } else if n < 1e6 {
        format!("{:.3} µs", n / 1e3)
    } else if n < 1e9 {
        format!("{:.3} ms", n / 1e6)
    } else {
        format!("{:.3} s", n / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_reads_the_machine_and_measures_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let machine = Machine::calibrate(dir.path()).unwrap();
        assert!(machine.cores >= 1);
        assert_eq!(machine.fdatasync.rounds, FSYNC_ROUNDS);
        assert!(machine.fdatasync.p50_ns <= machine.fdatasync.p99_ns);
        assert!(machine.fdatasync.p99_ns <= machine.fdatasync.max_ns);
        assert_ne!(machine.filesystem.fs_type, "");
        assert!(machine.summary().contains("fdatasync"));
    }

    #[test]
    fn the_longest_mount_point_wins() {
        // "/" contains everything; any more specific mount must be preferred.
        let fs = filesystem_of(Path::new("/proc/self"));
        assert_eq!(fs.mount_point, "/proc");
        assert_eq!(fs.fs_type, "proc");
    }

    #[test]
    fn nanos_are_formatted_with_units() {
        assert_eq!(format_nanos(999), "999 ns");
        assert_eq!(format_nanos(1500), "1.500 µs");
        assert_eq!(format_nanos(2_000_000), "2.000 ms");
    }
}
