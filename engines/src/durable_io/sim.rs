//! A simulated file system that loses power.
//!
//! [`SimIo`] keeps every file in memory and remembers, per file, the content
//! as of its last `fsync`/`fdatasync` and every write since; per directory,
//! the names as of its last `sync_dir` and every name operation since. A
//! test runs the code under test against it, optionally cuts the power at
//! the n-th mutating operation ([`SimIo::power_off_after`]: that operation
//! and every later one fail, as if the process died there), and then asks
//! for the disk a machine would find at reboot ([`SimIo::crash`]).
//!
//! ## The crash model
//!
//! At a crash, independently and at random (from a seed, so a failure
//! reproduces):
//!
//! * each directory keeps its synced names plus **any prefix** of the name
//!   operations since (a journaling file system such as ext4 or XFS commits
//!   metadata in order);
//! * each file still named keeps its synced content plus **any prefix** of
//!   the writes and `set_len`s since;
//! * optionally the last page (4 KiB) of a file is **torn**: from a sector
//!   (512-byte) boundary inside that page, but never inside the synced
//!   content, to the end of the file the bytes are replaced by zeros
//!   ([`TornTail::Zeros`]: the sectors never reached the platter, which is
//!   what ext4, XFS and btrfs show for unwritten blocks) or by random bytes
//!   ([`TornTail::Garbage`]: stale blocks exposed, as ext4's
//!   `data=writeback` mode may).
//!
//! What was synced always survives; nothing else is promised. Directories
//! themselves (`create_dir_all`) are durable at once: both users create
//! their directory once, at open, before anything else.
//!
//! Locks are not simulated: [`DurableIo::lock`] always succeeds. Tests open
//! one instance at a time.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{DurableFile, DurableIo, LockGuard, OpenMode};

const PAGE: u64 = 4096;
const SECTOR: u64 = 512;

/// What a crash may do to the last page of a file's unsynced tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TornTail {
    /// Never torn: each file is its synced content plus a prefix of its
    /// later writes.
    None,
    /// Possibly zero-filled from a sector boundary in the last page.
    Zeros,
    /// Possibly zero-filled or filled with random bytes from a sector
    /// boundary in the last page.
    Garbage,
}

/// The simulated file system; clones share the same state.
#[derive(Clone, Default)]
pub struct SimIo {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock_state();
        f.debug_struct("SimIo")
            .field("files", &state.inodes.len())
            .field("mutations", &state.mutations)
            .field("powered_off", &state.powered_off)
            .finish()
    }
}

#[derive(Default, Clone)]
struct State {
    inodes: Vec<Inode>,
    dirs: BTreeMap<PathBuf, Dir>,
    /// Mutating operations performed so far.
    mutations: u64,
    /// The mutation number at which the power fails.
    power_fails_at: Option<u64>,
    powered_off: bool,
}

#[derive(Default, Clone)]
struct Inode {
    synced: Vec<u8>,
    current: Vec<u8>,
    since_sync: Vec<FileOp>,
}

#[derive(Clone)]
enum FileOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Default, Clone)]
struct Dir {
    synced: BTreeMap<String, usize>,
    current: BTreeMap<String, usize>,
    since_sync: Vec<NameOp>,
}

#[derive(Clone)]
enum NameOp {
    Link(String, usize),
    Unlink(String),
    Rename(String, String),
}

fn apply_file_op(data: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { offset, bytes } => {
            let start = *offset as usize;
            let end = start + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[start..end].copy_from_slice(bytes);
        }
        FileOp::SetLen(len) => data.resize(*len as usize, 0),
    }
}

fn apply_name_op(names: &mut BTreeMap<String, usize>, op: &NameOp) {
    match op {
        NameOp::Link(name, inode) => {
            names.insert(name.clone(), *inode);
        }
        NameOp::Unlink(name) => {
            names.remove(name);
        }
        NameOp::Rename(from, to) => {
            if let Some(inode) = names.remove(from) {
                names.insert(to.clone(), inode);
            }
        }
    }
}

/// splitmix64: a small deterministic generator, so the library needs no
/// random-number crate and a seed reproduces a crash exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..=max`.
    fn upto(&mut self, max: u64) -> u64 {
        self.next() % (max + 1)
    }
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => Ok((dir.to_path_buf(), name.to_string_lossy().into_owned())),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no directory and file name", path.display()),
        )),
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} does not exist (simulated)", path.display()),
    )
}

impl State {
    /// Counts a mutating operation; fails it (and every later one) once the
    /// power is off.
    fn mutate(&mut self) -> io::Result<()> {
        if !self.powered_off && self.power_fails_at == Some(self.mutations) {
            self.powered_off = true;
        }
        if self.powered_off {
            return Err(io::Error::other("simulated power loss"));
        }
        self.mutations += 1;
        Ok(())
    }

    fn dir(&self, dir: &Path) -> io::Result<&Dir> {
        self.dirs.get(dir).ok_or_else(|| not_found(dir))
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(dir).ok_or_else(|| not_found(dir))
    }

    fn lookup(&self, path: &Path) -> io::Result<usize> {
        let (dir, name) = split(path)?;
        self.dir(&dir)?
            .current
            .get(&name)
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn name_op(&mut self, dir: &Path, op: NameOp) -> io::Result<()> {
        let dir = self.dir_mut(dir)?;
        apply_name_op(&mut dir.current, &op);
        dir.since_sync.push(op);
        Ok(())
    }

    fn file_op(&mut self, inode: usize, op: FileOp) {
        let inode = &mut self.inodes[inode];
        apply_file_op(&mut inode.current, &op);
        inode.since_sync.push(op);
    }
}

impl SimIo {
    /// An empty file system with the power on.
    pub fn new() -> SimIo {
        SimIo::default()
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock left a usable state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of mutating operations so far (writes, `set_len`, syncs,
    /// creations, renames, removals).
    pub fn mutations(&self) -> u64 {
        self.lock_state().mutations
    }

    /// Cuts the power when `n` more mutating operations have run: the next
    /// one and all later ones fail with an I/O error and change nothing.
    pub fn power_off_after(&self, n: u64) {
        let mut state = self.lock_state();
        state.power_fails_at = Some(state.mutations + n);
    }

    /// Whether the power has been cut.
    pub fn powered_off(&self) -> bool {
        self.lock_state().powered_off
    }

    /// The disk after a crash at this moment: a new file system (with the
    /// power on) holding what was synced and, at random from `seed`, a
    /// prefix of the rest, torn as `torn` allows. See the module docs.
    pub fn crash(&self, seed: u64, torn: TornTail) -> SimIo {
        let state = self.lock_state();
        let mut rng = Rng(seed);
        let mut inodes: Vec<Inode> = Vec::new();
        let mut renumbered: BTreeMap<usize, usize> = BTreeMap::new();
        let mut dirs = BTreeMap::new();
        for (path, dir) in &state.dirs {
            let mut names = dir.synced.clone();
            let keep = rng.upto(dir.since_sync.len() as u64) as usize;
            for op in &dir.since_sync[..keep] {
                apply_name_op(&mut names, op);
            }
            for inode in names.values_mut() {
                let old = *inode;
                *inode = *renumbered.entry(old).or_insert_with(|| {
                    inodes.push(crash_file(&state.inodes[old], &mut rng, torn));
                    inodes.len() - 1
                });
            }
            dirs.insert(
                path.clone(),
                Dir {
                    synced: names.clone(),
                    current: names,
                    since_sync: Vec::new(),
                },
            );
        }
        SimIo {
            state: Arc::new(Mutex::new(State {
                inodes,
                dirs,
                ..State::default()
            })),
        }
    }

    /// The current content of every file, by path (for test diagnostics).
    pub fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let state = self.lock_state();
        let mut out = BTreeMap::new();
        for (dir, d) in &state.dirs {
            for (name, inode) in &d.current {
                out.insert(dir.join(name), state.inodes[*inode].current.clone());
            }
        }
        out
    }
}

/// One file's content after a crash.
fn crash_file(inode: &Inode, rng: &mut Rng, torn: TornTail) -> Inode {
    let mut data = inode.synced.clone();
    let keep = rng.upto(inode.since_sync.len() as u64) as usize;
    for op in &inode.since_sync[..keep] {
        apply_file_op(&mut data, op);
    }
    let len = data.len() as u64;
    let protected = inode.synced.len() as u64;
    if torn != TornTail::None && len > protected && rng.upto(1) == 1 {
        let page_start = (len - 1) / PAGE * PAGE;
        let first = page_start.max(protected.div_ceil(SECTOR) * SECTOR);
        if first < len {
            let sectors = (len - first).div_ceil(SECTOR);
            let from = (first + rng.upto(sectors - 1) * SECTOR) as usize;
            let garbage = torn == TornTail::Garbage && rng.upto(1) == 1;
            for byte in &mut data[from..] {
                *byte = if garbage { rng.next() as u8 } else { 0 };
            }
        }
    }
    Inode {
        synced: data.clone(),
        current: data,
        since_sync: Vec::new(),
    }
}

/// An open simulated file.
struct SimFile {
    fs: SimIo,
    inode: usize,
    path: PathBuf,
    writable: bool,
    append: bool,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimFile({})", self.path.display())
    }
}

impl SimFile {
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} was opened read-only", self.path.display()),
            ))
        }
    }
}

impl DurableFile for SimFile {
    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        let mut state = self.fs.lock_state();
        state.mutate()?;
        let offset = state.inodes[self.inode].current.len() as u64;
        state.file_op(
            self.inode,
            FileOp::Write {
                offset,
                bytes: bytes.to_vec(),
            },
        );
        Ok(())
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        if self.append {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write_at on a file opened for appending",
            ));
        }
        let mut state = self.fs.lock_state();
        state.mutate()?;
        state.file_op(
            self.inode,
            FileOp::Write {
                offset,
                bytes: bytes.to_vec(),
            },
        );
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let state = self.fs.lock_state();
        let data = &state.inodes[self.inode].current;
        let start = offset as usize;
        match data.get(start..start + buf.len()) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of a simulated file",
            )),
        }
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.fs.lock_state().inodes[self.inode].current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let mut state = self.fs.lock_state();
        state.mutate()?;
        state.file_op(self.inode, FileOp::SetLen(len));
        Ok(())
    }

    fn fsync(&self) -> io::Result<()> {
        let mut state = self.fs.lock_state();
        state.mutate()?;
        let inode = &mut state.inodes[self.inode];
        inode.synced = inode.current.clone();
        inode.since_sync.clear();
        Ok(())
    }

    fn fdatasync(&self) -> io::Result<()> {
        // Only data and size are modelled, so both syncs do the same.
        self.fsync()
    }
}

impl DurableIo for SimIo {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        for ancestor in dir.ancestors() {
            state.dirs.entry(ancestor.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DurableFile>> {
        let mut state = self.lock_state();
        let inode = match (state.lookup(path), mode) {
            (Ok(inode), OpenMode::Truncate) => {
                state.mutate()?;
                state.file_op(inode, FileOp::SetLen(0));
                inode
            }
            (Ok(inode), _) => inode,
            (Err(_), OpenMode::Append | OpenMode::Truncate) => {
                let (dir, name) = split(path)?;
                state.dir(&dir)?;
                state.mutate()?;
                state.inodes.push(Inode::default());
                let inode = state.inodes.len() - 1;
                state.name_op(&dir, NameOp::Link(name, inode))?;
                inode
            }
            (Err(e), _) => return Err(e),
        };
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode,
            path: path.to_path_buf(),
            writable: mode != OpenMode::Read,
            append: mode == OpenMode::Append,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.lock_state();
        let inode = state.lookup(path)?;
        Ok(state.inodes[inode].current.clone())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if from_dir != to_dir {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the simulation renames within one directory only",
            ));
        }
        let mut state = self.lock_state();
        state.lookup(from)?;
        state.mutate()?;
        state.name_op(&from_dir, NameOp::Rename(from_name, to_name))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let (dir, name) = split(path)?;
        let mut state = self.lock_state();
        state.lookup(path)?;
        state.mutate()?;
        state.name_op(&dir, NameOp::Unlink(name))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock_state();
        state.dir(dir)?;
        state.mutate()?;
        let dir = state.dir_mut(dir)?;
        dir.synced = dir.current.clone();
        dir.since_sync.clear();
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(self
            .lock_state()
            .dir(dir)?
            .current
            .keys()
            .cloned()
            .collect())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.lock_state().lookup(path).is_ok())
    }

    fn lock(&self, _path: &Path) -> io::Result<Option<LockGuard>> {
        Ok(Some(Box::new(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SimIo, PathBuf) {
        let io = SimIo::new();
        let dir = PathBuf::from("/sim/d");
        io.create_dir_all(&dir).unwrap();
        (io, dir)
    }

    #[test]
    fn synced_data_and_names_survive_every_crash() {
        let (io, dir) = setup();
        let f = io.open(&dir.join("a"), OpenMode::Append).unwrap();
        f.append(&[1u8; 5000]).unwrap();
        f.fdatasync().unwrap();
        io.sync_dir(&dir).unwrap();
        f.append(&[2u8; 3000]).unwrap();
        for seed in 0..200 {
            let after = io.crash(seed, TornTail::Garbage);
            let data = after.read(&dir.join("a")).unwrap();
            assert!(data.len() >= 5000 && data.len() <= 8000, "seed {seed}");
            assert_eq!(&data[..5000], &[1u8; 5000][..], "seed {seed}");
        }
    }

    #[test]
    fn unsynced_names_and_writes_may_vanish_but_only_as_prefixes() {
        let (io, dir) = setup();
        let f = io.open(&dir.join("a"), OpenMode::Append).unwrap();
        f.append(b"one").unwrap();
        f.append(b"two").unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let after = io.crash(seed, TornTail::None);
            seen.insert(after.read(&dir.join("a")).ok());
        }
        let expected: std::collections::BTreeSet<_> = [
            None,
            Some(b"".to_vec()),
            Some(b"one".to_vec()),
            Some(b"onetwo".to_vec()),
        ]
        .into_iter()
        .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_torn_tail_starts_on_a_sector_in_the_last_page_after_the_synced_part() {
        let (io, dir) = setup();
        let f = io.open(&dir.join("a"), OpenMode::Append).unwrap();
        io.sync_dir(&dir).unwrap();
        f.append(&[7u8; 4100]).unwrap();
        f.fdatasync().unwrap();
        f.append(&[9u8; 3000]).unwrap();
        let mut torn = 0;
        for seed in 0..300 {
            let data = io
                .crash(seed, TornTail::Zeros)
                .read(&dir.join("a"))
                .unwrap();
            assert_eq!(&data[..4100], &[7u8; 4100][..]);
            if let Some(zero) = data[4100..].iter().position(|b| *b == 0) {
                let from = 4100 + zero;
                assert_eq!(from % 512, 0, "seed {seed}");
                assert!(from >= 4608, "seed {seed}: inside the synced sector");
                assert!(data[from..].iter().all(|b| *b == 0));
                torn += 1;
            }
        }
        assert!(torn > 0, "no crash tore the tail");
    }

    #[test]
    fn the_power_fails_at_the_chosen_operation() {
        let (io, dir) = setup();
        let f = io.open(&dir.join("a"), OpenMode::Append).unwrap();
        io.power_off_after(2);
        f.append(b"x").unwrap();
        f.fdatasync().unwrap();
        assert!(f.append(b"y").is_err());
        assert!(io.sync_dir(&dir).is_err());
        assert!(io.powered_off());
        assert_eq!(io.read(&dir.join("a")).unwrap(), b"x");
    }

    #[test]
    fn handles_survive_renames_and_removals() {
        let (io, dir) = setup();
        let f = io.open(&dir.join("tmp"), OpenMode::Truncate).unwrap();
        f.write_at(0, b"new").unwrap();
        f.fsync().unwrap();
        io.rename(&dir.join("tmp"), &dir.join("final")).unwrap();
        io.sync_dir(&dir).unwrap();
        io.remove(&dir.join("final")).unwrap();
        f.write_at(3, b"!").unwrap();
        assert_eq!(f.len().unwrap(), 4);
        assert!(!io.exists(&dir.join("final")).unwrap());
        let mut names = std::collections::BTreeSet::new();
        for seed in 0..50 {
            names.insert(io.crash(seed, TornTail::None).list(&dir).unwrap());
        }
        assert!(names.contains(&vec!["final".to_string()]));
        assert!(names.contains(&Vec::<String>::new()));
    }
}
