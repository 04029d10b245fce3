//! The runner: a load phase, a settle, then a measured run phase and a
//! second settle, against any [`Target`].
//!
//! # Load phase
//!
//! Records `0..record_count` are split into one contiguous range per thread
//! and written in buffered batches of [`LOAD_BATCH`] records, followed by one
//! `sync()` of the target. Only its duration is reported.
//!
//! # Settling
//!
//! After the load, the target is brought to a quiet state
//! ([`Target::settle`]: an LSM engine flushes its memtables and waits for
//! the compactions they trigger), waiting at most `settle_secs`. The time it
//! took, whether the engine got quiet, and the bytes this process wrote
//! meanwhile are recorded apart from the run, so an engine's loading backlog
//! is not charged to the measured run. After the run phase the target
//! settles again before its space is measured, and the bytes written by that
//! second settle (the compaction debt the run left) are recorded too.
//!
//! # Run phase
//!
//! Each worker thread owns its client, its RNGs (seeded from `seed + thread
//! index`, so a fixed seed repeats the same requests; operation types draw
//! from a stream of their own, so every engine gets the same sequence of
//! operation types even when timing changes how often a key is redrawn),
//! its key chooser and
//! its histograms; nothing is shared on the hot path except the
//! [`AcknowledgedCounter`] of inserts (one atomic load per operation, a
//! claim and an acknowledgement per insert) and a progress counter touched
//! every [`PROGRESS_EVERY`] operations. Keys are formatted into a reused
//! buffer and values are windows at random offsets of a per-thread random
//! buffer (incompressible, see [`ValuePool`]), so an operation allocates
//! nothing in the harness.
//!
//! * Closed loop (no `rate`): a thread issues its next request when the
//!   previous one returns. Latency is the call's duration.
//! * Open loop (`rate`): each thread has a schedule of intended start times
//!   `threads / rate` apart and latency is measured from the *intended*
//!   start, not the actual one, so a stall is charged to every request it
//!   delayed (the correction for coordinated omission). A thread that is
//!   early sleeps until the intended start (no spinning, which on a small
//!   machine would take CPU from the engine's background threads); the
//!   lateness of each actual start, the harness's own lag, goes into a
//!   histogram of its own so it can be told apart from the engine's latency.
//!
//! A count-bound phase (the default) executes exactly `warmup_operations +
//! operation_count` operations, split evenly over threads; the first
//! `warmup_operations` are executed but not recorded. The phase stops early
//! only at `time_cap_secs`, and is then marked capped. A duration-bound
//! phase runs for `warmup_secs + duration_secs`, recording what starts after
//! the warm-up. Each recorded latency goes into the HdrHistogram of its
//! operation type (nanoseconds, 3 significant digits) and into the
//! histogram of its second, from which the time series is built.
//!
//! Durability follows [`crate::spec::Durability`]. An operation that fails
//! stops every thread and the run returns the error: a benchmark that lost
//! operations is not a result.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::distribution::{AcknowledgedCounter, KeyChooser, KeyFormat};
use crate::error::{Result, WorkloadError};
use crate::machine::{ProcessIo, process_io};
use crate::progress::{Phase, PhaseLength};
use crate::results::{ReplicationSummary, process_cpu_seconds};
use crate::spec::{DurabilityMode, Mix, WorkloadSpec};
use crate::target::{Target, TargetStatus};

/// Records per load batch.
pub const LOAD_BATCH: usize = 1000;
/// Operations between updates of the shared progress counter.
const PROGRESS_EVERY: u64 = 1024;
/// HdrHistogram precision: 3 significant digits.
pub const SIGNIFICANT_DIGITS: u8 = 3;
/// Open loop: the timer slack asked of the kernel for sleeping workers
/// (Linux's default, 50 µs, would be part of every start's lag).
const TIMER_SLACK_NS: u64 = 1_000;

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

    /// Whether the operation does a point read (a get).
    fn gets(self) -> bool {
        matches!(self, OpKind::Read | OpKind::ReadModifyWrite)
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

/// One settling wait ([`Target::settle`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SettleSummary {
    pub seconds: f64,
    /// The longest the wait was allowed to take (`settle_secs`).
    pub budget_secs: f64,
    /// Whether the target reported itself quiet within the budget.
    pub quiet: bool,
    /// `write_bytes` of `/proc/self/io` during the wait (`null` for remote
    /// targets or without `/proc`).
    pub device_write_bytes: Option<u64>,
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
    pub settle_after_load: SettleSummary,
    pub settle_after_run: SettleSummary,
    pub by_operation: BTreeMap<OpKind, Histogram<u64>>,
    /// Open loop: actual start minus intended start of each recorded
    /// operation. `None` in a closed loop.
    pub start_lag: Option<Histogram<u64>>,
    pub timeline: Vec<Second>,
    /// Recorded operations (after warm-up).
    pub operations: u64,
    /// Operations executed, warm-up included.
    pub executed: u64,
    /// Seconds from the end of the warm-up to the last recorded operation.
    pub seconds: f64,
    /// Whether a count-bound phase stopped at its time cap.
    pub capped: bool,
    pub read_misses: u64,
    pub syncs: u64,
    /// Key plus value bytes of every write of the run phase (warm-up too,
    /// as the device counter cannot separate them).
    pub logical_write_bytes: u64,
    /// `write_bytes` of `/proc/self/io` over the run phase and final sync.
    pub device_write_bytes: Option<u64>,
    /// `read_bytes` of `/proc/self/io` over the run phase: bytes this
    /// process read from the block device (page-cache hits are free).
    pub device_read_bytes: Option<u64>,
    /// Point reads (read and read-modify-write), warm-up included.
    pub gets: u64,
    pub status: TargetStatus,
    /// Writes of the run phase, warm-up included.
    pub writes: u64,
    /// A replicated target's WAL fsyncs over the run phase.
    pub replication: Option<ReplicationSummary>,
}

/// Runs the load phase, a settle, the run phase and a settle of `spec`
/// against `target`.
pub fn run(spec: &WorkloadSpec, target: &dyn Target, label: &str) -> Result<Measurement> {
    run_with(spec, target, label, &mut || Ok(()))
}

/// [`run`], calling `after_load` after the load phase and its settle,
/// before the run phase (a memory-limited run tightens its limit there,
/// once the engine has flushed its memtables).
pub fn run_with(
    spec: &WorkloadSpec,
    target: &dyn Target,
    label: &str,
    after_load: &mut dyn FnMut() -> Result<()>,
) -> Result<Measurement> {
    target.check(spec)?;
    let load = load(spec, target, label)?;
    let settle_after_load = settle(spec, target)?;
    after_load()?;
    let io = || target.is_local().then(process_io).flatten();
    let before = io();
    let counters = target.counters_before_run()?;
    let own_cpu = || process_cpu_seconds(std::process::id());
    let client_cpu_before = own_cpu();
    let mut measurement = run_phase(spec, target, label, load)?;
    let client_cpu = own_cpu()
        .zip(client_cpu_before)
        .map(|(a, b)| (a - b).max(0.0));
    target.sync()?;
    let after = io();
    let delta = |f: fn(&ProcessIo) -> u64| {
        before
            .as_ref()
            .zip(after.as_ref())
            .map(|(b, a)| f(a).saturating_sub(f(b)))
    };
    measurement.device_write_bytes = delta(|io| io.write_bytes);
    measurement.device_read_bytes = delta(|io| io.read_bytes);
    measurement.replication = target
        .replication_since(counters, measurement.writes)?
        .map(|r| ReplicationSummary {
            client_cpu_seconds: client_cpu,
            ..r
        });
    measurement.settle_after_load = settle_after_load;
    measurement.settle_after_run = settle(spec, target)?;
    measurement.status = target.status()?;
    Ok(measurement)
}

/// [`Target::settle`], timed, with the bytes written meanwhile.
fn settle(spec: &WorkloadSpec, target: &dyn Target) -> Result<SettleSummary> {
    let io = || target.is_local().then(process_io).flatten();
    let before = io();
    let started = Instant::now();
    let quiet = target.settle(Duration::from_secs_f64(spec.settle_secs))?;
    let seconds = started.elapsed().as_secs_f64();
    let after = io();
    Ok(SettleSummary {
        seconds,
        budget_secs: spec.settle_secs,
        quiet,
        device_write_bytes: before
            .zip(after)
            .map(|(b, a)| a.write_bytes.saturating_sub(b.write_bytes)),
    })
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
struct Schedule<'a> {
    /// Duration-bound: when recording starts (end of the warm-up).
    /// Count-bound: `None`; the first worker to finish its warm-up
    /// operations sets `measure_start`.
    timed_measure_from: Option<Instant>,
    measure_start: &'a OnceLock<Instant>,
    /// When the phase ends: the duration's end, or the time cap.
    deadline: Option<Instant>,
    /// Whether reaching `deadline` means the phase was capped.
    deadline_is_cap: bool,
    /// Open loop: time between one thread's intended starts.
    interval: Option<Duration>,
    /// Open loop: this thread's first intended start.
    first_start: Instant,
}

/// How many operations one worker executes in a count-bound phase.
#[derive(Clone, Copy)]
struct Quota {
    warmup: u64,
    measured: u64,
}

/// What one worker measured.
struct WorkerOutcome {
    by_operation: [Histogram<u64>; 6],
    start_lag: Histogram<u64>,
    seconds: Vec<Second>,
    operations: u64,
    executed: u64,
    last_end: Option<Instant>,
    read_misses: u64,
    syncs: u64,
    logical_write_bytes: u64,
    /// Writes, warm-up included.
    writes: u64,
    gets: u64,
}

/// The share of `total` that thread `t` of `threads` takes.
fn share(total: u64, t: u64, threads: u64) -> u64 {
    total * (t + 1) / threads - total * t / threads
}

fn run_phase(
    spec: &WorkloadSpec,
    target: &dyn Target,
    label: &str,
    load: LoadSummary,
) -> Result<Measurement> {
    let threads = spec.threads as u64;
    let counter = AcknowledgedCounter::new(spec.record_count);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let capped = AtomicBool::new(false);
    let measure_start = OnceLock::new();
    let warmup = Duration::from_secs_f64(spec.warmup_secs);
    let length = match (spec.duration_secs, spec.operation_count) {
        (Some(d), _) => PhaseLength::Time(warmup + Duration::from_secs_f64(d)),
        (None, Some(ops)) => PhaseLength::Operations(ops + spec.warmup_operations),
        (None, None) => PhaseLength::Operations(0),
    };
    let mut clients = Vec::new();
    for t in 0..spec.threads {
        clients.push(target.connect(t)?);
    }
    let phase = Phase::start(&format!("{label} run"), length);
    let started = Instant::now();
    let timed_measure_from = spec.duration_secs.map(|_| started + warmup);
    let (deadline, deadline_is_cap) = match (spec.duration_secs, spec.time_cap_secs) {
        (Some(d), _) => (Some(started + warmup + Duration::from_secs_f64(d)), false),
        (None, Some(cap)) => (Some(started + Duration::from_secs_f64(cap)), true),
        (None, None) => (None, false),
    };
    let interval = spec
        .rate
        .map(|rate| Duration::from_secs_f64(spec.threads as f64 / rate));
    let outcomes: Result<Vec<WorkerOutcome>> = thread::scope(|scope| {
        let mut handles = Vec::new();
        for (t, client) in clients.into_iter().enumerate() {
            let t = t as u64;
            let quota = spec.operation_count.map(|ops| Quota {
                warmup: share(spec.warmup_operations, t, threads),
                measured: share(ops, t, threads),
            });
            let schedule = Schedule {
                timed_measure_from,
                measure_start: &measure_start,
                deadline,
                deadline_is_cap,
                interval,
                // Threads start their schedules staggered across one interval.
                first_start: started
                    + interval.map_or(Duration::ZERO, |i| i * t as u32 / threads as u32),
            };
            let shared = Shared {
                counter: &counter,
                done: &done,
                stop: &stop,
                capped: &capped,
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
    let measure_from = timed_measure_from
        .or_else(|| measure_start.get().copied())
        .unwrap_or(started);
    let mut measurement = merge(outcomes, measure_from, load, spec.rate.is_some());
    measurement.capped = capped.load(Ordering::Relaxed);
    Ok(measurement)
}

fn merge(
    outcomes: Vec<WorkerOutcome>,
    measure_from: Instant,
    load: LoadSummary,
    open_loop: bool,
) -> Measurement {
    let mut by_operation: BTreeMap<OpKind, Histogram<u64>> = BTreeMap::new();
    let mut start_lag = new_histogram();
    let mut timeline: Vec<Second> = Vec::new();
    let (mut operations, mut executed, mut read_misses, mut syncs) = (0, 0, 0, 0);
    let (mut logical_write_bytes, mut writes, mut gets) = (0, 0, 0);
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
        let _ = start_lag.add(&outcome.start_lag);
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
        executed += outcome.executed;
        read_misses += outcome.read_misses;
        syncs += outcome.syncs;
        logical_write_bytes += outcome.logical_write_bytes;
        writes += outcome.writes;
        gets += outcome.gets;
        if let Some(end) = outcome.last_end {
            last_end = last_end.max(end);
        }
    }
    Measurement {
        load,
        settle_after_load: SettleSummary::default(),
        settle_after_run: SettleSummary::default(),
        by_operation,
        start_lag: open_loop.then_some(start_lag),
        timeline,
        operations,
        executed,
        seconds: last_end
            .saturating_duration_since(measure_from)
            .as_secs_f64(),
        capped: false,
        read_misses,
        syncs,
        logical_write_bytes,
        device_write_bytes: None,
        device_read_bytes: None,
        gets,
        status: TargetStatus {
            keys: 0,
            logical_bytes: 0,
            disk: None,
        },
        writes,
        replication: None,
    }
}

/// The few things workers share.
#[derive(Clone, Copy)]
struct Shared<'a> {
    /// Inserted records: claimed and acknowledged.
    counter: &'a AcknowledgedCounter,
    /// Operations done, for the progress bar.
    done: &'a AtomicU64,
    /// Set when a worker fails, so the others stop.
    stop: &'a AtomicBool,
    /// Set when a worker stopped at the time cap.
    capped: &'a AtomicBool,
}

/// One client thread of the run phase.
struct Worker<'a> {
    spec: &'a WorkloadSpec,
    client: Box<dyn crate::target::Client>,
    /// Keys, values and scan lengths.
    rng: SmallRng,
    /// Operation types only. A key draw may be repeated (while its record
    /// is not yet acknowledged), and how often depends on timing; with its
    /// own stream, the sequence of operation types, hence the number of
    /// inserts, is the same on every engine.
    op_rng: SmallRng,
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
            op_rng: SmallRng::seed_from_u64(spec.seed.wrapping_add(thread) ^ 0x9E37_79B9_7F4A_7C15),
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
        schedule: Schedule<'_>,
        quota: Option<Quota>,
        shared: Shared<'_>,
    ) -> Result<WorkerOutcome> {
        let durability = self.spec.durability();
        let batch_window = Duration::from_millis(durability.batch_ms);
        let sync_each_write = durability.mode == DurabilityMode::Sync;
        let batched = durability.mode == DurabilityMode::Batched;
        let value_size = self.spec.value_size;
        if schedule.interval.is_some() {
            set_timer_slack();
        }
        let mut by_operation: [Histogram<u64>; 6] = std::array::from_fn(|_| new_histogram());
        let mut start_lag = new_histogram();
        let mut seconds: Vec<Second> = Vec::new();
        let (mut operations, mut executed, mut unreported) = (0u64, 0u64, 0u64);
        let (mut read_misses, mut syncs, mut gets) = (0u64, 0u64, 0u64);
        let (mut logical_write_bytes, mut writes, mut unsynced) = (0u64, 0u64, 0u64);
        let mut measure_from = schedule.timed_measure_from;
        let mut oldest_unsynced = schedule.first_start;
        let mut next_start = schedule.first_start;
        let mut last_end = None;
        loop {
            if quota.is_some_and(|q| executed >= q.warmup + q.measured)
                || shared.stop.load(Ordering::Relaxed)
            {
                break;
            }
            // Count-bound: the first `warmup` operations are not recorded.
            let warming_up = quota.is_some_and(|q| executed < q.warmup);
            if quota.is_some() && !warming_up && measure_from.is_none() {
                measure_from = Some(*schedule.measure_start.get_or_init(Instant::now));
            }
            let op = self.picker.pick(&mut self.op_rng);
            let number = if op == OpKind::Insert {
                shared.counter.claim()
            } else {
                self.chooser
                    .next(&mut self.rng, shared.counter.acknowledged())
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
            let (start, lag) = match schedule.interval {
                Some(interval) => {
                    let intended = next_start;
                    next_start += interval;
                    sleep_until(intended);
                    (intended, Instant::now().saturating_duration_since(intended))
                }
                None => (Instant::now(), Duration::ZERO),
            };
            if schedule.deadline.is_some_and(|d| start >= d) {
                if schedule.deadline_is_cap {
                    shared.capped.store(true, Ordering::Relaxed);
                }
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
                OpKind::Insert => {
                    client.insert(&self.key, value, durable)?;
                    // Only now may readers choose this record.
                    shared.counter.acknowledge(number);
                }
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
            gets += u64::from(op.gets());
            let end = Instant::now();
            executed += 1;
            unreported += 1;
            if unreported == PROGRESS_EVERY {
                shared.done.fetch_add(unreported, Ordering::Relaxed);
                unreported = 0;
            }
            let recorded_from = match quota {
                // Count-bound: every operation after the warm-up ones.
                Some(_) if warming_up => None,
                Some(_) => measure_from,
                // Duration-bound: every operation that started after it.
                None => measure_from.filter(|from| start >= *from),
            };
            let Some(from) = recorded_from else {
                continue;
            };
            let nanos = end.saturating_duration_since(start).as_nanos() as u64;
            by_operation[op as usize].saturating_record(nanos);
            if schedule.interval.is_some() {
                start_lag.saturating_record(lag.as_nanos() as u64);
            }
            // Bucketed by start, so a duration-bound phase has exactly
            // `duration` buckets and no sliver of a last one.
            let second = start.saturating_duration_since(from).as_secs() as usize;
            while seconds.len() <= second {
                seconds.push(Second {
                    operations: 0,
                    latency: new_histogram(),
                });
            }
            seconds[second].operations += 1;
            seconds[second].latency.saturating_record(nanos);
            operations += 1;
            last_end = Some(end);
        }
        if unsynced > 0 {
            // Untimed: the run's last writes are made durable like the rest.
            self.client.sync()?;
            syncs += 1;
        }
        shared.done.fetch_add(unreported, Ordering::Relaxed);
        Ok(WorkerOutcome {
            by_operation,
            start_lag,
            seconds,
            operations,
            executed,
            last_end,
            read_misses,
            syncs,
            logical_write_bytes,
            writes,
            gets,
        })
    }
    // ANCHOR_END: hot_loop
}

/// Sleeps until `when` (at once if it has passed). No spinning: the lag
/// this leaves is measured, not hidden.
fn sleep_until(when: Instant) {
    let now = Instant::now();
    if when > now {
        thread::sleep(when - now);
    }
}

/// Asks Linux to wake this thread's sleeps within [`TIMER_SLACK_NS`]
/// instead of its default 50 µs; harmless where it is refused.
fn set_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and changes
    // only the calling thread's timer slack; no memory is passed.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS as libc::c_ulong) };
}

#[cfg(test)]
mod tests {
    use engines::{EngineKind, EngineOptions};

    use super::*;
    use crate::spec::resolve_one;
    use crate::target::{EngineTarget, NoopTarget};

    fn small(name: &str) -> WorkloadSpec {
        let mut spec = resolve_one(name).unwrap();
        spec.record_count = 1000;
        spec.operation_count = Some(20_000);
        spec.warmup_operations = 0;
        spec.duration_secs = None;
        spec.warmup_secs = 0.0;
        spec.time_cap_secs = None;
        spec
    }

    #[test]
    fn count_bound_run_measures_exactly_the_operations_asked_for() {
        let mut spec = small("ycsb-a");
        spec.warmup_operations = 5_000;
        let m = run(&spec, &NoopTarget, "test").unwrap();
        assert_eq!(m.operations, 20_000);
        assert_eq!(m.executed, 25_000);
        assert!(!m.capped);
        let recorded: u64 = m.by_operation.values().map(|h| h.len()).sum();
        assert_eq!(recorded, 20_000);
        let per_second: u64 = m.timeline.iter().map(|s| s.operations).sum();
        assert_eq!(per_second, 20_000);
        assert!(
            m.by_operation.contains_key(&OpKind::Read)
                && m.by_operation.contains_key(&OpKind::Update)
        );
        assert!(m.start_lag.is_none(), "closed loop has no start lag");
    }

    #[test]
    fn every_engine_ends_with_the_same_records() {
        // A fixed operation count and seed: the same inserts on every
        // engine, whatever their speed.
        let mut spec = small("write-heavy");
        spec.operation_count = Some(4_000);
        spec.warmup_operations = 1_000;
        let mut keys = Vec::new();
        for kind in [EngineKind::Memory, EngineKind::Redb, EngineKind::Bitcask] {
            let dir = tempfile::tempdir().unwrap();
            let target =
                EngineTarget::open(kind, &dir.path().join("db"), &EngineOptions::default())
                    .unwrap();
            let m = run(&spec, &target, "test").unwrap();
            assert!(m.settle_after_load.quiet && m.settle_after_run.quiet);
            assert_eq!(
                m.read_misses, 0,
                "{kind:?} read a record it had not written"
            );
            keys.push(m.status.keys);
        }
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
        // About 20% of the 5,000 operations inserted a record.
        assert!(keys[0] > 1000 + 800 && keys[0] < 1000 + 1200, "{keys:?}");
    }

    /// A target whose inserts take a while before the record exists, so
    /// that a reader who picks a record whose insert is still in flight
    /// misses it.
    #[derive(Default)]
    struct SlowInserts {
        keys: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<Vec<u8>>>>,
    }

    struct SlowInsertsClient {
        keys: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<Vec<u8>>>>,
    }

    impl Target for SlowInserts {
        fn name(&self) -> String {
            "slow-inserts".into()
        }
        fn description(&self) -> String {
            "test target".into()
        }
        fn connect(&self, _thread: usize) -> Result<Box<dyn crate::target::Client>> {
            Ok(Box::new(SlowInsertsClient {
                keys: self.keys.clone(),
            }))
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
        fn sync_primitive(&self) -> String {
            "none".into()
        }
        fn status(&self) -> Result<TargetStatus> {
            Ok(TargetStatus {
                keys: self.keys.lock().unwrap().len() as u64,
                logical_bytes: 0,
                disk: None,
            })
        }
        fn is_local(&self) -> bool {
            true
        }
    }

    impl crate::target::Client for SlowInsertsClient {
        fn read(&mut self, key: &[u8]) -> Result<bool> {
            Ok(self.keys.lock().unwrap().contains(key))
        }
        fn update(&mut self, _key: &[u8], _value: &[u8], _durable: bool) -> Result<()> {
            Ok(())
        }
        fn insert(&mut self, key: &[u8], _value: &[u8], _durable: bool) -> Result<()> {
            thread::sleep(Duration::from_micros(200));
            self.keys.lock().unwrap().insert(key.to_vec());
            Ok(())
        }
        fn scan(&mut self, _start: &[u8], count: usize) -> Result<usize> {
            Ok(count)
        }
        fn delete(&mut self, _key: &[u8], _durable: bool) -> Result<()> {
            Ok(())
        }
        fn insert_batch(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
            let mut keys = self.keys.lock().unwrap();
            keys.extend(records.iter().map(|(k, _)| k.clone()));
            Ok(())
        }
        fn sync(&mut self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn reads_never_choose_a_record_whose_insert_is_in_flight() {
        // ycsb-d reads the newest records while another thread inserts
        // slowly: a read of a claimed but unwritten record would miss.
        let mut spec = small("ycsb-d");
        spec.threads = 2;
        spec.operation_count = Some(4_000);
        spec.mix.read = 0.5;
        spec.mix.insert = 0.5;
        let m = run(&spec, &SlowInserts::default(), "test").unwrap();
        assert_eq!(m.read_misses, 0);
    }

    #[test]
    fn the_time_cap_stops_a_run_and_marks_it_capped() {
        let mut spec = small("ycsb-c");
        spec.operation_count = Some(100_000);
        // 1,000 ops/s for 100,000 operations would take 100 s.
        spec.rate = Some(1_000.0);
        spec.time_cap_secs = Some(0.3);
        let m = run(&spec, &NoopTarget, "test").unwrap();
        assert!(m.capped);
        assert!(m.executed < 1_000, "executed {}", m.executed);
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
        assert_eq!(m.gets, m.by_operation[&OpKind::Read].len());
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
    fn open_loop_keeps_the_rate_and_records_its_start_lag() {
        let mut spec = small("ycsb-c");
        spec.operation_count = Some(2000);
        spec.rate = Some(10_000.0);
        spec.threads = 2;
        let m = run(&spec, &NoopTarget, "test").unwrap();
        assert_eq!(m.operations, 2000);
        // 2000 operations at 10k/s take about 0.2 s; the schedule, not the
        // target, decides the pace, so they cannot finish much sooner.
        assert!(m.seconds >= 0.19, "finished in {} s", m.seconds);
        let lag = m.start_lag.expect("open loop records its start lag");
        assert_eq!(lag.len(), 2000);
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
