//! The install gate: no client read sees a half-installed snapshot.
//!
//! Installing a snapshot from the leader replaces the whole engine: it is
//! cleared and rewritten batch by batch, which no engine can do in one
//! atomic step. Client reads (`GET`, serializable or after a read index)
//! go straight to the engine from the HTTP tasks, so without a gate a read
//! in the middle could find a key missing that exists both before and after
//! the install.
//!
//! The gate is a readers-writer lock between the two: every read through
//! [`GatedEngine`] (the engine the node handle hands to the API) holds it
//! shared for the duration of one engine call; the install holds it
//! exclusively from before the first write until after the last. A waiting
//! install stops new reads from entering, so it is not starved. A read that
//! arrives during an install waits until it ends, but not longer than
//! [`InstallGate::read_wait`] (the API's request timeout): then it fails with
//! an error saying a snapshot is being installed, rather than hanging.
//!
//! Only the Raft thread writes to the engine, and it installs, so writes do
//! not pass through the gate; the background snapshot export reads the
//! engine directly and is cancelled before an install starts.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use engines::{
    Engine, EngineError, EngineKind, EngineStatus, KeyRange, Pair, WriteBatch, WriteOptions,
};

#[derive(Default)]
struct GateState {
    readers: usize,
    installing: bool,
}

/// Shared by the state machine (installs) and [`GatedEngine`] (reads).
pub struct InstallGate {
    state: Mutex<GateState>,
    changed: Condvar,
    read_wait: Duration,
}

impl InstallGate {
    pub fn new(read_wait: Duration) -> Self {
        InstallGate {
            state: Mutex::default(),
            changed: Condvar::new(),
            read_wait,
        }
    }

    /// How long a read waits for an install to finish.
    pub fn read_wait(&self) -> Duration {
        self.read_wait
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters as a reader, waiting (bounded) for an install to end.
    pub fn read(&self) -> Result<ReadGuard<'_>, EngineError> {
        let deadline = Instant::now() + self.read_wait;
        let mut state = self.lock();
        while state.installing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(EngineError::io(
                    "reading the engine",
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "a snapshot from the leader is being installed and took longer \
                             than {:?}; retry the read",
                            self.read_wait
                        ),
                    ),
                ));
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        state.readers += 1;
        Ok(ReadGuard { gate: self })
    }

    // ANCHOR: install_gate
    /// Closes the gate to new reads and waits for the reads in progress
    /// (single engine calls) to leave. Reads enter again when the guard
    /// drops.
    pub fn install(&self) -> InstallGuard<'_> {
        let mut state = self.lock();
        state.installing = true;
        while state.readers > 0 {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        InstallGuard { gate: self }
    }
    // ANCHOR_END: install_gate
}

/// A read in progress.
pub struct ReadGuard<'a> {
    gate: &'a InstallGate,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.readers -= 1;
        if state.readers == 0 {
            self.gate.changed.notify_all();
        }
    }
}

/// An install in progress.
pub struct InstallGuard<'a> {
    gate: &'a InstallGate,
}

impl Drop for InstallGuard<'_> {
    fn drop(&mut self) {
        self.gate.lock().installing = false;
        self.gate.changed.notify_all();
    }
}

/// The engine as client reads see it: every read passes the gate.
pub struct GatedEngine {
    inner: Arc<dyn Engine>,
    gate: Arc<InstallGate>,
}

impl GatedEngine {
    pub fn new(inner: Arc<dyn Engine>, gate: Arc<InstallGate>) -> Self {
        GatedEngine { inner, gate }
    }
}

impl Engine for GatedEngine {
    fn kind(&self) -> EngineKind {
        self.inner.kind()
    }

    fn get(&self, key: &[u8]) -> engines::Result<Option<Vec<u8>>> {
        let _read = self.gate.read()?;
        self.inner.get(key)
    }

    fn get_with(&self, key: &[u8], visit: &mut dyn FnMut(Option<&[u8]>)) -> engines::Result<()> {
        let _read = self.gate.read()?;
        self.inner.get_with(key, visit)
    }

    fn scan(&self, range: &KeyRange, limit: usize) -> engines::Result<Vec<Pair>> {
        let _read = self.gate.read()?;
        self.inner.scan(range, limit)
    }

    fn status(&self) -> engines::Result<EngineStatus> {
        let _read = self.gate.read()?;
        self.inner.status()
    }

    // Writes and syncs come only from the Raft thread, which does not use
    // this view; they are passed through so the type is a full engine.
    fn put(&self, key: &[u8], value: &[u8], options: WriteOptions) -> engines::Result<()> {
        self.inner.put(key, value, options)
    }

    fn delete(&self, key: &[u8], options: WriteOptions) -> engines::Result<()> {
        self.inner.delete(key, options)
    }

    fn write_batch(&self, batch: WriteBatch, options: WriteOptions) -> engines::Result<()> {
        self.inner.write_batch(batch, options)
    }

    fn sync(&self) -> engines::Result<()> {
        self.inner.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wait_for_an_install_and_give_up_after_the_bound() {
        let gate = Arc::new(InstallGate::new(Duration::from_millis(200)));
        let install = gate.install();
        let started = Instant::now();
        assert!(gate.read().is_err());
        assert!(started.elapsed() >= Duration::from_millis(200));
        let waiter = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || gate.read().map(|_| ()).is_ok())
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(install);
        assert!(
            waiter.join().unwrap(),
            "a read waiting for the install gets in after it"
        );
    }

    #[test]
    fn an_install_waits_for_reads_in_progress() {
        let gate = Arc::new(InstallGate::new(Duration::from_secs(5)));
        let read = gate.read().unwrap();
        let installer = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || {
                let started = Instant::now();
                let _install = gate.install();
                started.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        drop(read);
        assert!(installer.join().unwrap() >= Duration::from_millis(90));
    }
}
