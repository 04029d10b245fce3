//! A consistent export of a live engine: the state at one applied index,
//! written while the Raft thread keeps applying.
//!
//! A snapshot must be exactly the state machine at its index. Exporting on
//! the Raft thread gets that for free (nothing writes meanwhile) but stops
//! heartbeats for as long as the export runs. Exporting from another thread
//! needs a view of the engine frozen at the start, and not every engine has
//! one: sled's scans are not atomic, bitcask has no snapshots, and a scan in
//! pages is never atomic across pages anyway. So the view is built here,
//! the same way for all six engines, as a copy-on-write overlay:
//!
//! * [`ExportOverlay::begin`] is called on the Raft thread between two
//!   engine batches; from then on, the one writer (the state machine)
//!   calls [`ExportOverlay::record`] **before** each batch, which stores the
//!   current engine value (or its absence) of every key the batch changes
//!   that the overlay does not hold yet. The overlay therefore holds, for
//!   every key changed since `begin`, its value at `begin`.
//! * The exporter ([`export`]) scans the engine in pages, in key order. For
//!   each page, under the overlay's lock, it emits: for a returned key in
//!   the overlay, the overlay's value (nothing if the key did not exist at
//!   `begin`); for a returned key not in the overlay, the scanned value
//!   (unchanged since `begin`); and every overlay key inside the page's key
//!   range that existed at `begin` but that the scan did not return
//!   (deleted since). The page's range runs from the previous page's last
//!   key (exclusive) to its own last key (inclusive), or to the end of the
//!   key space for the last page.
//!
//! Why this is exact: a key's original is recorded before the batch that
//! changes it is written, so whatever a scan saw of such a key (its old
//! value or a newer one, even from a scan that is not atomic), the overlay
//! already holds the original by the time the exporter looks it up after
//! the scan. A key not in the overlay has not changed since `begin`, so the
//! scan saw its value at `begin`. Memory is one page plus the keys changed
//! while the export runs. The property test below checks the result equals
//! a copy taken at `begin`, with random batches applied concurrently.
//!
//! Data enters as an engine and an overlay; it leaves as an export stream
//! (`engines::export`) written to any `Write` (a snapshot file).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use engines::export::ExportWriter;
use engines::{Engine, EngineError, KeyRange, WriteBatch};

/// Pairs read per scan.
const PAGE: usize = 1024;

/// Why an export did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("storage engine: {0}")]
    Engine(#[from] EngineError),
    #[error("the export was cancelled")]
    Cancelled,
}

#[derive(Default)]
struct OverlayState {
    active: bool,
    /// Key -> its value when the export began (`None`: it did not exist).
    originals: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// The copy-on-write overlay shared by the writer and the exporter.
#[derive(Default)]
pub struct ExportOverlay {
    state: Mutex<OverlayState>,
}

impl ExportOverlay {
    fn lock(&self) -> MutexGuard<'_, OverlayState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Freezes the view: call between two batches, on the writer's thread.
    pub fn begin(&self) {
        let mut state = self.lock();
        state.active = true;
        state.originals.clear();
    }

    /// Ends the export and frees the recorded originals.
    pub fn end(&self) {
        let mut state = self.lock();
        state.active = false;
        state.originals = BTreeMap::new();
    }

    pub fn is_active(&self) -> bool {
        self.lock().active
    }

    /// How many keys' originals are held (memory the export costs).
    pub fn recorded(&self) -> usize {
        self.lock().originals.len()
    }

    // ANCHOR: overlay_record
    /// Records the current value of every key `batch` changes that is not
    /// recorded yet. Must be called before `batch` is written.
    pub fn record(&self, engine: &dyn Engine, batch: &WriteBatch) -> Result<(), EngineError> {
        let mut state = self.lock();
        if !state.active {
            return Ok(());
        }
        for op in batch.ops() {
            if !state.originals.contains_key(op.key()) {
                let original = engine.get(op.key())?;
                state.originals.insert(op.key().to_vec(), original);
            }
        }
        Ok(())
    }
    // ANCHOR_END: overlay_record
}

/// Test-only hook: a pause after each exported page, so integration tests
/// can make an export slow without a store of gigabytes. Read once from
/// `METCD_TEST_ONLY_EXPORT_PAGE_DELAY_MS`; never set it in production.
pub fn test_only_page_delay() -> Option<Duration> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("METCD_TEST_ONLY_EXPORT_PAGE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    })
}

// ANCHOR: consistent_export
/// Writes the engine as it was at `overlay.begin()` to `out`, leaving out
/// the keys in `skip`. Returns the number of pairs. Checks `cancel` between
/// pages.
pub fn export(
    engine: &dyn Engine,
    overlay: &ExportOverlay,
    out: &mut dyn std::io::Write,
    skip: &[&[u8]],
    cancel: &AtomicBool,
) -> Result<u64, ExportError> {
    let mut writer = ExportWriter::new(out, engine.kind())?;
    let mut range = KeyRange::all();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(ExportError::Cancelled);
        }
        let page = engine.scan(&range, PAGE)?;
        let last_page = page.len() < PAGE;
        let upper = match page.last() {
            Some((last, _)) if !last_page => Bound::Included(last.clone()),
            _ => Bound::Unbounded,
        };
        let merged = merge_page(page, overlay, (range.start.clone(), upper.clone()));
        for (key, value) in &merged {
            if !skip.contains(&key.as_slice()) {
                writer.write_pair(key, value)?;
            }
        }
        if last_page {
            break;
        }
        if let Bound::Included(last) = upper {
            range.start = Bound::Excluded(last);
        }
        if let Some(delay) = test_only_page_delay() {
            std::thread::sleep(delay);
        }
    }
    Ok(writer.finish()?)
}

/// One page as of `begin`: scanned pairs corrected by the overlay, plus the
/// keys deleted since, in key order.
fn merge_page(
    page: Vec<(Vec<u8>, Vec<u8>)>,
    overlay: &ExportOverlay,
    bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let state = overlay.lock();
    let mut merged = Vec::with_capacity(page.len());
    let mut deleted = state
        .originals
        .range::<Vec<u8>, _>(bounds)
        .filter_map(|(key, original)| Some((key, original.as_ref()?)))
        .peekable();
    for (key, value) in page {
        // Keys deleted since `begin` that sort before this one.
        while let Some((gone, original)) = deleted.peek() {
            if gone.as_slice() >= key.as_slice() {
                break;
            }
            merged.push(((*gone).clone(), (*original).clone()));
            deleted.next();
        }
        if deleted
            .peek()
            .is_some_and(|(k, _)| k.as_slice() == key.as_slice())
        {
            deleted.next();
        }
        match state.originals.get(&key) {
            Some(Some(original)) => merged.push((key, original.clone())),
            Some(None) => {} // created since `begin`
            None => merged.push((key, value)),
        }
    }
    for (gone, original) in deleted {
        merged.push((gone.clone(), original.clone()));
    }
    merged
}
// ANCHOR_END: consistent_export

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use engines::export::ExportReader;
    use engines::{EngineKind, WriteOptions};
    use proptest::prelude::*;

    use super::*;

    fn open(kind: EngineKind, dir: &Path) -> Arc<dyn Engine> {
        engines::open_shared(kind, dir, &Default::default()).unwrap()
    }

    fn everything(engine: &dyn Engine) -> Vec<(Vec<u8>, Vec<u8>)> {
        engine.scan(&KeyRange::all(), usize::MAX).unwrap()
    }

    fn key(k: u16) -> Vec<u8> {
        format!("k/{k:05}").into_bytes()
    }

    /// Random batches of puts and deletes over a key space a few pages wide.
    fn batches() -> impl Strategy<Value = Vec<Vec<(u16, Option<u8>)>>> {
        prop::collection::vec(
            prop::collection::vec((0u16..3000, prop::option::of(any::<u8>())), 1..40),
            1..60,
        )
    }

    fn batch_of(ops: &[(u16, Option<u8>)]) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (k, v) in ops {
            match v {
                Some(v) => batch.put(key(*k), vec![*v; (*k % 50) as usize]),
                None => batch.delete(key(*k)),
            };
        }
        batch
    }

    /// Fills `engine`, starts an export, applies `batches` from another
    /// thread while it runs, and checks the export equals the state at the
    /// start.
    fn check(kind: EngineKind, seed_keys: u16, batches: Vec<Vec<(u16, Option<u8>)>>) {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(kind, dir.path());
        let mut seed = WriteBatch::new();
        for k in (0..3000).step_by(3).take(seed_keys as usize) {
            seed.put(key(k), vec![b's'; (k % 40) as usize]);
        }
        seed.put(b"m/installing".to_vec(), b"skipped".to_vec());
        engine.write_batch(seed, WriteOptions::BUFFERED).unwrap();
        let mut expected = everything(engine.as_ref());
        expected.retain(|(k, _)| k.as_slice() != b"m/installing");

        let overlay = Arc::new(ExportOverlay::default());
        overlay.begin();
        let writer = {
            let engine = Arc::clone(&engine);
            let overlay = Arc::clone(&overlay);
            std::thread::spawn(move || {
                for ops in &batches {
                    let batch = batch_of(ops);
                    overlay.record(engine.as_ref(), &batch).unwrap();
                    engine.write_batch(batch, WriteOptions::BUFFERED).unwrap();
                    std::thread::yield_now();
                }
            })
        };
        let mut out = Vec::new();
        let cancel = AtomicBool::new(false);
        export(
            engine.as_ref(),
            &overlay,
            &mut out,
            &[b"m/installing"],
            &cancel,
        )
        .unwrap();
        writer.join().unwrap();
        overlay.end();
        let got = ExportReader::new(&mut out.as_slice())
            .unwrap()
            .read_all()
            .unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(
            got == expected,
            "{kind}: the export is not the state at its start"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn export_is_the_state_at_begin_on_memory(seed in 0u16..1000, batches in batches()) {
            check(EngineKind::Memory, seed, batches);
        }

        #[test]
        fn export_is_the_state_at_begin_on_sled(seed in 0u16..1000, batches in batches()) {
            check(EngineKind::Sled, seed, batches);
        }
    }

    #[test]
    fn deleted_keys_between_pages_are_emitted_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(EngineKind::Redb, dir.path());
        let mut seed = WriteBatch::new();
        for k in 0..2500 {
            seed.put(key(k), b"v".to_vec());
        }
        engine.write_batch(seed, WriteOptions::BUFFERED).unwrap();
        let expected = everything(engine.as_ref());
        let overlay = ExportOverlay::default();
        overlay.begin();
        // Delete a run that spans the first page boundary, add new keys.
        let mut batch = WriteBatch::new();
        for k in 1000..1100 {
            batch.delete(key(k));
        }
        batch.put(b"k/00999x".to_vec(), b"new".to_vec());
        overlay.record(engine.as_ref(), &batch).unwrap();
        engine.write_batch(batch, WriteOptions::BUFFERED).unwrap();
        let mut out = Vec::new();
        export(
            engine.as_ref(),
            &overlay,
            &mut out,
            &[],
            &AtomicBool::new(false),
        )
        .unwrap();
        let got = ExportReader::new(&mut out.as_slice())
            .unwrap()
            .read_all()
            .unwrap();
        assert!(got == expected);
    }

    #[test]
    fn cancel_stops_the_export() {
        let engine = open(EngineKind::Memory, Path::new("/nonexistent"));
        let overlay = ExportOverlay::default();
        let cancel = AtomicBool::new(true);
        let result = export(engine.as_ref(), &overlay, &mut Vec::new(), &[], &cancel);
        assert!(matches!(result, Err(ExportError::Cancelled)));
    }
}
