//! The runner: a load phase, then a measured run phase, against any
//! [`Target`].
//!
//! # Load phase
//!
//! Records `0..record_count` are split into one contiguous range per thread
//! and written in buffered batches of [`LOAD_BATCH`] records, followed by one
//! `sync()` of the target. Only its duration is reported.
//!
//! # Run phase
//!
//! Each worker thread owns its client, its RNG (seeded with `seed + thread
//! index`, so a fixed seed repeats the same requests), its key chooser and
//! its histograms; nothing is shared on the hot path except the insert
//! counter (one relaxed load per operation, one `fetch_add` per insert) and
//! a progress counter touched every [`PROGRESS_EVERY`] operations. Keys are
//! formatted into a reused buffer and values are windows at random offsets
//! of a per-thread random buffer (incompressible, see [`ValuePool`]), so an
//! operation allocates nothing in the harness.
//!
//! * Closed loop (no `rate`): a thread issues its next request when the
//!   previous one returns. Latency is the call's duration.
//! * Open loop (`rate`): each thread has a schedule of intended start times
//!   `rate / threads` apart and latency is measured from the *intended* start,
//!   not the actual one, so a stall is charged to every request it delayed
//!   (the correction for coordinated omission).
//!
//! Operations that start during the first `warmup_secs` run but are not
//! recorded. After the warm-up, each operation's latency goes into the
//! HdrHistogram of its type (nanoseconds, 3 significant digits) and into the
//! histogram of its second, from which the time series of throughput and
//! p99 is built. The phase ends after `operation_count` measured operations
//! (split evenly over threads) or `duration_secs` seconds.
//!
//! Durability follows [`crate::spec::Durability`]. An operation that fails
//! stops every thread and the run returns the error: a benchmark that lost
//! operations is not a result.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::distribution::{KeyChooser, KeyFormat};
use crate::error::{Result, WorkloadError};
use crate::machine::process_write_bytes;
use crate::progress::{Phase, PhaseLength};
use crate::results::ReplicationSummary;
use crate::spec::{DurabilityMode, Mix, WorkloadSpec};
use crate::target::{Target, TargetStatus};

/// Records per load batch.
pub const LOAD_BATCH: usize = 1000;
/// Operations between updates of the shared progress counter.
const PROGRESS_EVERY: u64 = 1024;
/// HdrHistogram precision: 3 significant digits.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// The operation types of a mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
    Delete,
}

impl OpKind {
    pub const ALL: [OpKind; 6] = [
        OpKind::Read,
        OpKind::Update,
        OpKind::Insert,
        OpKind::Scan,
        OpKind::ReadModifyWrite,
        OpKind::Delete,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Scan => "scan",
            OpKind::ReadModifyWrite => "read-modify-write",
            OpKind::Delete => "delete",
        }
    }

    fn writes(self) -> bool {
        !matches!(self, OpKind::Read | OpKind::Scan)
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Cumulative thresholds for picking an operation from one uniform draw.
#[derive(Debug, Clone, Copy)]
struct OpPicker {
    thresholds: [f64; 6],
}

impl OpPicker {
    fn new(mix: &Mix) -> OpPicker {
        let mut thresholds = [0.0; 6];
        let mut sum = 0.0;
        for (i, (_, p)) in mix.named().iter().enumerate() {
            sum += p;
            thresholds[i] = sum;
        }
        // Rounding must not leave a gap at the top.
        if let Some(last) = thresholds.iter_mut().rev().find(|t| **t > 0.0) {
            *last = f64::INFINITY;
        }
        OpPicker { thresholds }
    }

    #[inline]
    fn pick(&self, rng: &mut impl Rng) -> OpKind {
        let u: f64 = rng.random();
        for (i, t) in self.thresholds.iter().enumerate() {
            if u < *t {
                return OpKind::ALL[i];
            }
        }
        OpKind::Read
    }
}

/// Largest latency a histogram tracks: one hour, in nanoseconds. Larger
/// values are recorded as one hour (and would show as such in `max`).
pub const HIGHEST_TRACKABLE_NS: u64 = 3_600_000_000_000;

/// A new histogram with the harness's precision: 1 ns to one hour, fixed
/// size, so recording never allocates.
pub fn new_histogram() -> Histogram<u64> {
    // Constants, not input: the bounds and 3 significant digits are within
    // what HdrHistogram accepts.
    Histogram::new_with_bounds(1, HIGHEST_TRACKABLE_NS, SIGNIFICANT_DIGITS)
        .expect("1 ns to 1 hour at 3 significant digits is a valid histogram")
}

/// What the load phase did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSummary {
    pub records: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
}

/// One second of the run phase, over all threads.
#[derive(Debug, Clone)]
pub struct Second {
    pub operations: u64,
    pub latency: Histogram<u64>,
}

/// Everything the run phase measured.
#[derive(Debug)]
pub struct Measurement {
    pub load: LoadSummary,
    pub by_operation: BTreeMap<OpKind, Histogram<u64>>,
    pub timeline: Vec<Second>,
    /// Measured operations (after warm-up).
    pub operations: u64,
    /// Seconds from the end of the warm-up to the last measured operation.
    pub seconds: f64,
    pub read_misses: u64,
    pub syncs: u64,
    /// Key plus value bytes of every write of the run phase (warm-up too,
    /// as the device counter cannot separate them).
    pub logical_write_bytes: u64,
    /// `write_bytes` of `/proc/self/io` over the run phase and final sync.
    pub device_write_bytes: Option<u64>,
    pub status: TargetStatus,
    /// Writes of the run phase, warm-up included.
    pub writes: u64,
    /// A replicated target's WAL fsyncs over the run phase.
    pub replication: Option<ReplicationSummary>,
}

/// Runs the load phase and the run phase of `spec` against `target`.
pub fn run(spec: &WorkloadSpec, target: &dyn Target, label: &str) -> Result<Measurement> {
    target.check(spec)?;
    let load = load(spec, target, label)?;
    let before = target.is_local().then(process_write_bytes).flatten();
    let counters = target.counters_before_run()?;
    let mut measurement = run_phase(spec, target, label, load)?;
    target.sync()?;
    let after = target.is_local().then(process_write_bytes).flatten();
    measurement.device_write_bytes = before.zip(after).map(|(b, a)| a.saturating_sub(b));
    measurement.replication = target.replication_since(counters, measurement.writes)?;
    measurement.status = target.status()?;
    Ok(measurement)
}

fn load(spec: &WorkloadSpec, target: &dyn Target, label: &str) -> Result<LoadSummary> {
    let threads = spec.threads as u64;
    let records = spec.record_count;
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let format = KeyFormat {
        key_size: spec.key_size,
    };
    let started = Instant::now();
    let phase = Phase::start(&format!("{label} load"), PhaseLength::Operations(records));
    let result: Result<()> = thread::scope(|scope| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let (done, stop) = (&done, &stop);
            let mut client = target.connect(t as usize)?;
            let first = records * t / threads;
            let end = records * (t + 1) / threads;
            handles.push(scope.spawn(move || -> Result<()> {
                let mut rng =
                    SmallRng::seed_from_u64(spec.seed.wrapping_add(t).wrapping_add(1 << 32));
                let values = ValuePool::new(&mut rng, spec.value_size);
                let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(LOAD_BATCH);
                let mut number = first;
                while number < end && !stop.load(Ordering::Relaxed) {
                    batch.clear();
                    while number < end && batch.len() < LOAD_BATCH {
                        batch.push((format.key(number), values.pick(&mut rng).to_vec()));
                        number += 1;
                    }
                    if let Err(e) = client.insert_batch(&batch) {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    done.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                Ok(())
            }));
        }
        phase.follow(&handles, &done);
        join_all(handles)
    });
    result?;
    target.sync()?;
    phase.finish();
    let seconds = started.elapsed().as_secs_f64();
    Ok(LoadSummary {
        records,
        seconds,
        records_per_sec: records as f64 / seconds.max(1e-9),
    })
}

fn join_all(handles: Vec<thread::ScopedJoinHandle<'_, Result<()>>>) -> Result<()> {
    let mut first_error = None;
    for handle in handles {
        let outcome = handle.join().unwrap_or_else(|_| {
            Err(WorkloadError::Results {
                context: "worker thread".into(),
                message: "panicked".into(),
            })
        });
        if let Err(e) = outcome {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Values for writes without generating bytes per write: windows at random
/// offsets into a per-thread random buffer of [`ValuePool::SPREAD`] bytes
/// more than a value. Two values share bytes only when their offsets are
/// within a value's length of each other, so a block of neighbouring
/// records holds no repeats for an engine's compression to find (with a
/// buffer of two values' length, LZ4 would shrink rocksdb's and fjall's
/// blocks and flatter their space amplification).
struct ValuePool {
    bytes: Vec<u8>,
    value_size: usize,
}

impl ValuePool {
    const SPREAD: usize = 1 << 20;

    fn new(rng: &mut impl RngCore, value_size: usize) -> ValuePool {
        let mut bytes = vec![0u8; value_size + Self::SPREAD];
        rng.fill_bytes(&mut bytes);
        ValuePool { bytes, value_size }
    }

    #[inline]
    fn pick(&self, rng: &mut impl Rng) -> &[u8] {
        let offset = rng.random_range(0..=Self::SPREAD);
        &self.bytes[offset..offset + self.value_size]
    }
}

/// The clock of one run phase, shared by its workers.
#[derive(Clone, Copy)]
struct Schedule {
    /// When measuring starts (end of warm-up).
    measure_from: Instant,
    /// When a duration-bound phase ends.
    deadline: Option<Instant>,
    /// Open loop: time between one thread's intended starts.
    interval: Option<Duration>,
    /// Open loop: this thread's first intended start.
    first_start: Instant,
}

/// What one worker measured.
struct WorkerOutcome {
    by_operation: [Histogram<u64>; 6],
    seconds: Vec<Second>,
    operations: u64,
    last_end: Instant,
    read_misses: u64,
    syncs: u64,
    logical_write_bytes: u64,
    /// Writes, warm-up included.
    writes: u64,
}

fn run_phase(
    spec: &WorkloadSpec,
    target: &dyn Target,
    label: &str,
    load: LoadSummary,
) -> Result<Measurement> {
    let threads = spec.threads as u64;
    let inserted = AtomicU64::new(spec.record_count);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let warmup = Duration::from_secs_f64(spec.warmup_secs);
    let length = match (spec.duration_secs, spec.operation_count) {
        (Some(d), _) => PhaseLength::Time(warmup + Duration::from_secs_f64(d)),
        (None, Some(ops)) => PhaseLength::Operations(ops),
        (None, None) => PhaseLength::Operations(0),
    };
    let mut clients = Vec::new();
    for t in 0..spec.threads {
        clients.push(target.connect(t)?);
    }
    let phase = Phase::start(&format!("{label} run"), length);
    let started = Instant::now();
    let measure_from = started + warmup;
    let interval = spec
        .rate
        .map(|rate| Duration::from_secs_f64(spec.threads as f64 / rate));
    let outcomes: Result<Vec<WorkerOutcome>> = thread::scope(|scope| {
        let mut handles = Vec::new();
        for (t, client) in clients.into_iter().enumerate() {
            let t = t as u64;
            let quota = spec
                .operation_count
                .map(|ops| ops * (t + 1) / threads - ops * t / threads);
            let schedule = Schedule {
                measure_from,
                deadline: spec
                    .duration_secs
                    .map(|d| measure_from + Duration::from_secs_f64(d)),
                interval,
                // Threads start their schedules staggered across one interval.
                first_start: started
                    + interval.map_or(Duration::ZERO, |i| i * t as u32 / threads as u32),
            };
            let shared = Shared {
                inserted: &inserted,
                done: &done,
                stop: &stop,
            };
            handles.push(scope.spawn(move || {
                let outcome = Worker::new(spec, t, client).run(schedule, quota, shared);
                if outcome.is_err() {
                    shared.stop.store(true, Ordering::Relaxed);
                }
                outcome
            }));
        }
        phase.follow(&handles, &done);
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(WorkloadError::Results {
                        context: "worker thread".into(),
                        message: "panicked".into(),
                    })
                })
            })
            .collect()
    });
    let outcomes = outcomes?;
    phase.finish();
    Ok(merge(outcomes, measure_from, load))
}

fn merge(outcomes: Vec<WorkerOutcome>, measure_from: Instant, load: LoadSummary) -> Measurement {
    let mut by_operation: BTreeMap<OpKind, Histogram<u64>> = BTreeMap::new();
    let mut timeline: Vec<Second> = Vec::new();
    let mut operations = 0;
    let mut read_misses = 0;
    let mut syncs = 0;
    let mut logical_write_bytes = 0;
    let mut writes = 0;
    let mut last_end = measure_from;
    for outcome in outcomes {
        for (kind, histogram) in OpKind::ALL.into_iter().zip(outcome.by_operation) {
            if histogram.is_empty() {
                continue;
            }
            let merged = by_operation.entry(kind).or_insert_with(new_histogram);
            // Same bounds on both sides, so adding cannot run out of range.
            let _ = merged.add(&histogram);
        }
        for (i, second) in outcome.seconds.into_iter().enumerate() {
            if timeline.len() <= i {
                timeline.push(Second {
                    operations: 0,
                    latency: new_histogram(),
                });
            }
            timeline[i].operations += second.operations;
            let _ = timeline[i].latency.add(&second.latency);
        }
        operations += outcome.operations;
        read_misses += outcome.read_misses;
        syncs += outcome.syncs;
        logical_write_bytes += outcome.logical_write_bytes;
        writes += outcome.writes;
        last_end = last_end.max(outcome.last_end);
    }
    Measurement {
        load,
        by_operation,
        timeline,
        operations,
        seconds: last_end
            .saturating_duration_since(measure_from)
            .as_secs_f64(),
        read_misses,
        syncs,
        logical_write_bytes,
        device_write_bytes: None,
        status: TargetStatus {
            keys: 0,
            logical_bytes: 0,
            disk_bytes: None,
        },
        writes,
        replication: None,
    }
}

/// The few things workers share.
#[derive(Clone, Copy)]
struct Shared<'a> {
    /// Records inserted so far (the next insert's record number).
    inserted: &'a AtomicU64,
    /// Operations done, for the progress bar.
    done: &'a AtomicU64,
    /// Set when a worker fails, so the others stop.
    stop: &'a AtomicBool,
}

/// One client thread of the run phase.
struct Worker<'a> {
    spec: &'a WorkloadSpec,
    client: Box<dyn crate::target::Client>,
    rng: SmallRng,
    picker: OpPicker,
    chooser: KeyChooser,
    format: KeyFormat,
    key: Vec<u8>,
    values: ValuePool,
}

impl<'a> Worker<'a> {
    fn new(
        spec: &'a WorkloadSpec,
        thread: u64,
        client: Box<dyn crate::target::Client>,
    ) -> Worker<'a> {
        let mut rng = SmallRng::seed_from_u64(spec.seed.wrapping_add(thread));
        let values = ValuePool::new(&mut rng, spec.value_size);
        let format = KeyFormat {
            key_size: spec.key_size,
        };
        Worker {
            spec,
            client,
            picker: OpPicker::new(&spec.mix),
            chooser: KeyChooser::for_spec(spec),
            key: format.buffer(),
            format,
            values,
            rng,
        }
    }

    // ANCHOR: hot_loop
    fn run(
        mut self,
        schedule: Schedule,
        quota: Option<u64>,
        shared: Shared<'_>,
    ) -> Result<WorkerOutcome> {
        let durability = self.spec.durability();
        let batch_window = Duration::from_millis(durability.batch_ms);
        let sync_each_write = durability.mode == DurabilityMode::Sync;
        let batched = durability.mode == DurabilityMode::Batched;
        let value_size = self.spec.value_size;
        let mut by_operation: [Histogram<u64>; 6] = std::array::from_fn(|_| new_histogram());
        let mut seconds: Vec<Second> = Vec::new();
        let mut operations = 0u64;
        let mut unreported = 0u64;
        let mut read_misses = 0u64;
        let mut syncs = 0u64;
        let mut logical_write_bytes = 0u64;
        let mut writes = 0u64;
        let mut unsynced = 0u64;
        let mut oldest_unsynced = schedule.measure_from;
        let mut next_start = schedule.first_start;
        let mut last_end = schedule.measure_from;
        loop {
            if quota.is_some_and(|q| operations >= q) || shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let op = self.picker.pick(&mut self.rng);
            let number = if op == OpKind::Insert {
                shared.inserted.fetch_add(1, Ordering::Relaxed)
            } else {
                let existing = shared.inserted.load(Ordering::Relaxed);
                self.chooser.next(&mut self.rng, existing)
            };
            self.format.write(number, &mut self.key);
            let value = if op.writes() {
                self.values.pick(&mut self.rng)
            } else {
                &[]
            };
            let scan_length = if op == OpKind::Scan {
                self.rng.random_range(1..=self.spec.max_scan_length)
            } else {
                0
            };
            let start = match schedule.interval {
                Some(interval) => {
                    let intended = next_start;
                    next_start += interval;
                    wait_until(intended);
                    intended
                }
                None => Instant::now(),
            };
            if schedule.deadline.is_some_and(|d| start >= d) {
                break;
            }
            let durable = sync_each_write;
            let client = &mut self.client;
            match op {
                OpKind::Read => {
                    if !client.read(&self.key)? {
                        read_misses += 1;
                    }
                }
                OpKind::Update => client.update(&self.key, value, durable)?,
                OpKind::Insert => client.insert(&self.key, value, durable)?,
                OpKind::Scan => {
                    client.scan(&self.key, scan_length)?;
                }
                OpKind::ReadModifyWrite => client.read_modify_write(&self.key, value, durable)?,
                OpKind::Delete => client.delete(&self.key, durable)?,
            }
            if op.writes() {
                writes += 1;
                logical_write_bytes +=
                    (self.key.len() + if op == OpKind::Delete { 0 } else { value_size }) as u64;
                if batched {
                    if unsynced == 0 {
                        oldest_unsynced = start;
                    }
                    unsynced += 1;
                    if unsynced >= durability.batch_ops
                        || start.duration_since(oldest_unsynced) >= batch_window
                    {
                        client.sync()?;
                        syncs += 1;
                        unsynced = 0;
                    }
                }
            }
            let end = Instant::now();
            unreported += 1;
            if unreported == PROGRESS_EVERY {
                shared.done.fetch_add(unreported, Ordering::Relaxed);
                unreported = 0;
            }
            if start < schedule.measure_from {
                continue;
            }
            let nanos = end.saturating_duration_since(start).as_nanos() as u64;
            by_operation[op as usize].saturating_record(nanos);
            // Bucketed by start, so a duration-bound phase has exactly
            // `duration` buckets and no sliver of a last one.
            let second = start
                .saturating_duration_since(schedule.measure_from)
                .as_secs() as usize;
            while seconds.len() <= second {
                seconds.push(Second {
                    operations: 0,
                    latency: new_histogram(),
                });
            }
            seconds[second].operations += 1;
            seconds[second].latency.saturating_record(nanos);
            operations += 1;
            last_end = end;
        }
        if unsynced > 0 {
            // Untimed: the run's last writes are made durable like the rest.
            self.client.sync()?;
            syncs += 1;
        }
        shared.done.fetch_add(unreported, Ordering::Relaxed);
        Ok(WorkerOutcome {
            by_operation,
            seconds,
            operations,
            last_end,
            read_misses,
            syncs,
            logical_write_bytes,
            writes,
        })
    }
    // ANCHOR_END: hot_loop
}

/// Sleeps until shortly before `when`, then spins, so open-loop requests
/// start on time without the sleep's overshoot.
fn wait_until(when: Instant) {
    const SPIN: Duration = Duration::from_micros(100);
    let now = Instant::now();
    if when <= now {
        return;
    }
    let gap = when - now;
    if gap > SPIN {
        thread::sleep(gap - SPIN);
    }
    while Instant::now() < when {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::resolve_one;
    use crate::target::NoopTarget;

    fn small(name: &str) -> WorkloadSpec {
        let mut spec = resolve_one(name).unwrap();
        spec.record_count = 1000;
        spec.operation_count = Some(20_000);
        spec.duration_secs = None;
        spec.warmup_secs = 0.0;
        spec
    }

    #[test]
    fn count_bound_run_measures_exactly_the_operations_asked_for() {
        let spec = small("ycsb-a");
        let m = run(&spec, &NoopTarget, "test").unwrap();
        assert_eq!(m.operations, 20_000);
        let recorded: u64 = m.by_operation.values().map(|h| h.len()).sum();
        assert_eq!(recorded, 20_000);
        let per_second: u64 = m.timeline.iter().map(|s| s.operations).sum();
        assert_eq!(per_second, 20_000);
        assert!(
            m.by_operation.contains_key(&OpKind::Read)
                && m.by_operation.contains_key(&OpKind::Update)
        );
    }

    #[test]
    fn the_mix_is_followed() {
        let mut spec = small("write-heavy");
        spec.operation_count = Some(100_000);
        let m = run(&spec, &NoopTarget, "test").unwrap();
        let share = |k: OpKind| m.by_operation.get(&k).map_or(0, |h| h.len()) as f64 / 100_000.0;
        assert!((share(OpKind::Update) - 0.75).abs() < 0.01);
        assert!((share(OpKind::Insert) - 0.20).abs() < 0.01);
        assert!((share(OpKind::Read) - 0.05).abs() < 0.01);
    }

    #[test]
    fn batched_durability_syncs_every_batch_ops_writes() {
        let mut spec = small("ycsb-a");
        spec.threads = 1;
        spec.batch_ops = 10;
        spec.batch_ms = 60_000;
        let m = run(&spec, &NoopTarget, "test").unwrap();
        let writes = m.by_operation[&OpKind::Update].len();
        assert_eq!(m.syncs, writes.div_ceil(10));
    }

    #[test]
    fn open_loop_keeps_the_rate() {
        let mut spec = small("ycsb-c");
        spec.operation_count = Some(2000);
        spec.rate = Some(10_000.0);
        spec.threads = 2;
        let m = run(&spec, &NoopTarget, "test").unwrap();
        assert_eq!(m.operations, 2000);
        // 2000 operations at 10k/s take about 0.2 s; the schedule, not the
        // target, decides the pace, so they cannot finish much sooner.
        assert!(m.seconds >= 0.19, "finished in {} s", m.seconds);
    }

    #[test]
    fn picker_covers_only_the_mix() {
        let picker = OpPicker::new(&Mix {
            read: 0.5,
            scan: 0.5,
            ..Mix::default()
        });
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..10_000 {
            assert!(matches!(picker.pick(&mut rng), OpKind::Read | OpKind::Scan));
        }
    }
}
