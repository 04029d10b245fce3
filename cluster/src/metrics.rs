//! Process metrics, written out in Prometheus' text exposition format.
//!
//! Each metric is a `static` of this module: a [`Counter`], a [`Gauge`], a
//! fixed-bucket [`Histogram`] or a per-label [`Family`] of counters, all
//! plain atomics, so that recording is one line at the place where the
//! thing happens (`metrics::WAL_FSYNC.observe(elapsed)`) and costs an
//! atomic add, with no registry, lock or allocation on the hot path (a
//! family takes a read lock to find its label's counter). [`render`] writes
//! them all, together with the gauges read at scrape time from the node
//! (leader, role, engine), for `GET /metrics` (`api::metrics`).
//!
//! Names follow etcd's where the meaning is the same, so etcd dashboards
//! and alerts work unchanged; what is metcd's own is prefixed `metcd_`.
//! Histograms use etcd's disk buckets: 0.001 s doubling, 14 buckets (up to
//! 8.192 s), then `+Inf`.
//!
//! The statics are per process: a metcd process runs one node. (A test that
//! starts several nodes in one process would see their sums.)
//!
//! The exposition format (version 0.0.4): for every metric a `# HELP` and a
//! `# TYPE` line, then one `name{labels} value` line per series; a
//! histogram has cumulative `_bucket{le="..."}` series ending with
//! `le="+Inf"`, then `_sum` and `_count`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonically increasing count.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// A value that goes up and down.
pub struct Gauge(AtomicI64);

impl Gauge {
    pub const fn new() -> Self {
        Gauge(AtomicI64::new(0))
    }

    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Self::new()
    }
}

/// Buckets of a [`Histogram`] (etcd's disk buckets).
pub const BUCKETS: usize = 14;
const FIRST_BUCKET_SECONDS: f64 = 0.001;

/// Upper bound of bucket `i`, in seconds.
fn bucket_bound(i: usize) -> f64 {
    FIRST_BUCKET_SECONDS * f64::from(1u32 << i)
}

/// A distribution of durations over [`BUCKETS`] fixed buckets.
pub struct Histogram {
    /// Observations that fell in each bucket (not cumulative); the last
    /// slot is above the largest bound.
    counts: [AtomicU64; BUCKETS + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Self {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = (0..BUCKETS)
            .find(|i| seconds <= bucket_bound(*i))
            .unwrap_or(BUCKETS);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Observes the time until the returned guard is dropped.
    pub fn start_timer(&self) -> Timer<'_> {
        Timer {
            histogram: self,
            started: Instant::now(),
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Records its lifetime in a histogram when dropped.
pub struct Timer<'a> {
    histogram: &'a Histogram,
    started: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed());
    }
}

/// Counters keyed by one label's value (a peer id, a reason).
pub struct Family<K: Ord + Copy>(RwLock<BTreeMap<K, AtomicU64>>);

impl<K: Ord + Copy + std::fmt::Display> Family<K> {
    pub const fn new() -> Self {
        Family(RwLock::new(BTreeMap::new()))
    }

    pub fn add(&self, key: K, n: u64) {
        {
            let map = self.0.read().unwrap_or_else(|p| p.into_inner());
            if let Some(counter) = map.get(&key) {
                counter.fetch_add(n, Ordering::Relaxed);
                return;
            }
        }
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert_with(|| AtomicU64::new(0))
            .fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, key: K) -> u64 {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn values(&self) -> Vec<(String, u64)> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
            .collect()
    }
}

impl<K: Ord + Copy + std::fmt::Display> Default for Family<K> {
    fn default() -> Self {
        Self::new()
    }
}

// ---- The metrics. ----

/// Leader changes seen by this node (a new, known leader).
pub static LEADER_CHANGES: Counter = Counter::new();
/// The last leader seen, to count changes.
static LAST_LEADER: AtomicU64 = AtomicU64::new(0);
/// Raft's commit index on this node.
pub static COMMITTED_INDEX: Gauge = Gauge::new();
/// The state machine's applied index.
pub static APPLIED_INDEX: Gauge = Gauge::new();
/// Client writes proposed and not yet answered.
pub static PROPOSALS_PENDING: Gauge = Gauge::new();
/// Client writes that were proposed (or sent to be) and not applied.
pub static PROPOSALS_FAILED: Counter = Counter::new();
/// WAL `fdatasync` latency.
pub static WAL_FSYNC: Histogram = Histogram::new();
/// Latency of writing one Ready's applied entries to the engine.
pub static BACKEND_COMMIT: Histogram = Histogram::new();
/// Taking a snapshot: engine export, snapshot file, engine sync.
pub static SNAPSHOT_SAVE: Histogram = Histogram::new();
/// Size of the newest snapshot taken, in bytes.
pub static SNAPSHOT_BYTES: Gauge = Gauge::new();
/// ReadIndex requests handed to raft (each serves a batch of reads).
pub static READ_INDEX_BATCHES: Counter = Counter::new();
/// Bytes written to each peer, by peer id.
pub static PEER_SENT_BYTES: Family<u64> = Family::new();
/// Bytes received from each peer, by peer id.
pub static PEER_RECEIVED_BYTES: Family<u64> = Family::new();
/// Raft messages dropped because a peer's queue was full.
pub static PEER_MESSAGES_DROPPED: Counter = Counter::new();
/// Peer connections this node refused, by reason.
pub static HANDSHAKES_REFUSED: Family<&'static str> = Family::new();

/// Called by the Ready loop after every iteration: counts leader changes
/// and keeps the raft indexes.
pub fn observe_raft(leader: u64, committed: u64, applied: u64) {
    if leader != 0 && LAST_LEADER.swap(leader, Ordering::Relaxed) != leader {
        LEADER_CHANGES.inc();
    }
    COMMITTED_INDEX.set(i64::try_from(committed).unwrap_or(i64::MAX));
    APPLIED_INDEX.set(i64::try_from(applied).unwrap_or(i64::MAX));
}

/// Records a snapshot taken by this node.
pub fn snapshot_taken(bytes: usize, elapsed: Duration) {
    SNAPSHOT_BYTES.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    SNAPSHOT_SAVE.observe(elapsed);
}

/// A client write in flight: pending while it lives; failed unless
/// [`Proposal::finish`] sees it applied (or redirected to the leader,
/// which is not a proposal of this node).
pub struct Proposal {
    settled: bool,
}

impl Proposal {
    pub fn start() -> Proposal {
        PROPOSALS_PENDING.add(1);
        Proposal { settled: false }
    }

    /// Passes the reply through, noting whether the write was applied.
    pub fn finish(mut self, reply: crate::raft::WriteReply) -> crate::raft::WriteReply {
        self.settled = matches!(
            reply,
            Ok(_) | Err(crate::raft::WriteError::NotLeader { .. })
        );
        reply
    }
}

impl Drop for Proposal {
    fn drop(&mut self) {
        PROPOSALS_PENDING.add(-1);
        if !self.settled {
            PROPOSALS_FAILED.inc();
        }
    }
}

/// What is read from the node at scrape time.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub member: u64,
    pub cluster: String,
    pub engine: String,
    pub has_leader: bool,
    pub is_leader: bool,
    /// Bytes of the engine's files (`None` for the memory engine).
    pub db_bytes: Option<u64>,
    /// The store's current and compacted revisions.
    pub revision: i64,
    pub compact_revision: i64,
    /// Watchers caught up with the store, watchers catching up from
    /// history (etcd's "slow" watchers), and open watch streams.
    pub synced_watchers: usize,
    pub unsynced_watchers: usize,
    pub watch_streams: usize,
}

/// The whole exposition.
pub fn render(node: &NodeFacts) -> String {
    let mut out = Exposition::default();
    out.gauge(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        &[],
        i64::from(node.has_leader),
    );
    out.gauge(
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        &[],
        i64::from(node.is_leader),
    );
    out.counter(
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen.",
        &[],
        LEADER_CHANGES.get(),
    );
    // etcd exposes these two as gauges holding the raft indexes.
    out.gauge(
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.",
        &[],
        COMMITTED_INDEX.get(),
    );
    out.gauge(
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.",
        &[],
        APPLIED_INDEX.get(),
    );
    out.gauge(
        "etcd_server_proposals_pending",
        "The current number of pending proposals to commit.",
        &[],
        PROPOSALS_PENDING.get(),
    );
    out.counter(
        "etcd_server_proposals_failed_total",
        "The total number of failed proposals seen.",
        &[],
        PROPOSALS_FAILED.get(),
    );
    out.histogram(
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
        &WAL_FSYNC,
    );
    out.histogram(
        "etcd_disk_backend_commit_duration_seconds",
        "The latency distributions of commit called by backend.",
        &BACKEND_COMMIT,
    );
    out.family(
        "etcd_network_peer_sent_bytes_total",
        "The total number of bytes sent to peers.",
        "To",
        &PEER_SENT_BYTES,
    );
    out.family(
        "etcd_network_peer_received_bytes_total",
        "The total number of bytes received from peers.",
        "From",
        &PEER_RECEIVED_BYTES,
    );
    if let Some(bytes) = node.db_bytes {
        out.gauge(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            &[],
            i64::try_from(bytes).unwrap_or(i64::MAX),
        );
    }
    out.gauge(
        "etcd_debugging_mvcc_current_revision",
        "The current revision of store.",
        &[],
        node.revision,
    );
    out.gauge(
        "etcd_debugging_mvcc_compact_revision",
        "The revision of the last compaction in store.",
        &[],
        node.compact_revision,
    );
    out.gauge(
        "etcd_debugging_mvcc_watcher_total",
        "Total number of watchers.",
        &[],
        (node.synced_watchers + node.unsynced_watchers) as i64,
    );
    out.gauge(
        "etcd_debugging_mvcc_slow_watcher_total",
        "Total number of unsynced slow watchers.",
        &[],
        node.unsynced_watchers as i64,
    );
    out.gauge(
        "etcd_debugging_mvcc_watch_stream_total",
        "Total number of watch streams.",
        &[],
        node.watch_streams as i64,
    );
    let member = node.member.to_string();
    out.gauge(
        "metcd_server_info",
        "Which member of which cluster this node is, and its storage engine; always 1.",
        &[
            ("cluster_id", node.cluster.as_str()),
            ("member_id", member.as_str()),
            ("engine", node.engine.as_str()),
        ],
        1,
    );
    out.gauge(
        "metcd_applied_index",
        "The raft index the state machine has applied.",
        &[],
        APPLIED_INDEX.get(),
    );
    out.counter(
        "metcd_wal_fsyncs_total",
        "WAL fdatasync calls (one per group commit).",
        &[],
        WAL_FSYNC.count(),
    );
    out.gauge(
        "metcd_snapshot_size_bytes",
        "Size of the newest snapshot this node took.",
        &[],
        SNAPSHOT_BYTES.get(),
    );
    out.histogram(
        "metcd_snapshot_duration_seconds",
        "Time to take a snapshot: engine export, snapshot file, engine sync.",
        &SNAPSHOT_SAVE,
    );
    out.counter(
        "metcd_read_index_batches_total",
        "ReadIndex requests handed to raft; each serves a batch of linearizable reads.",
        &[],
        READ_INDEX_BATCHES.get(),
    );
    out.counter(
        "metcd_network_peer_messages_dropped_total",
        "Raft messages dropped because a peer's send queue was full.",
        &[],
        PEER_MESSAGES_DROPPED.get(),
    );
    out.family(
        "metcd_network_peer_handshakes_refused_total",
        "Peer connections this node refused, by reason.",
        "reason",
        &HANDSHAKES_REFUSED,
    );
    out.text
}

/// The text being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: i64) {
        self.header(name, help, "gauge");
        self.sample(name, labels, value);
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.header(name, help, "counter");
        self.sample(name, labels, value);
    }

    fn family<K: Ord + Copy + std::fmt::Display>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        family: &Family<K>,
    ) {
        self.header(name, help, "counter");
        for (key, value) in family.values() {
            self.sample(name, &[(label, key.as_str())], value);
        }
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.header(name, help, "histogram");
        // Read each bucket once, so the cumulative series and the count
        // agree even while observations arrive.
        let counts: Vec<u64> = histogram
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, count) in counts.iter().take(BUCKETS).enumerate() {
            cumulative += count;
            let bound = bucket_bound(i).to_string();
            self.sample(&bucket, &[("le", bound.as_str())], cumulative);
        }
        cumulative += counts[BUCKETS];
        self.sample(&bucket, &[("le", "+Inf")], cumulative);
        let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], cumulative);
    }
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The value of `series` (a metric name with its labels exactly as
/// exposed, e.g. `etcd_disk_wal_fsync_duration_seconds_count`) in a
/// Prometheus text exposition, as read back from etcd's or metcd's
/// `/metrics` by the tests and the workbench.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(s, _)| *s == series))
        .and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_written_cumulatively_with_etcd_buckets() {
        let histogram = Histogram::new();
        histogram.observe(Duration::from_micros(500)); // first bucket
        histogram.observe(Duration::from_millis(1)); // on the bound: first bucket
        histogram.observe(Duration::from_millis(3)); // le 0.004
        histogram.observe(Duration::from_secs(20)); // above every bound
        let mut out = Exposition::default();
        out.histogram("x_seconds", "An example.", &histogram);
        let expected = "\
# HELP x_seconds An example.
# TYPE x_seconds histogram
x_seconds_bucket{le=\"0.001\"} 2
x_seconds_bucket{le=\"0.002\"} 2
x_seconds_bucket{le=\"0.004\"} 3
x_seconds_bucket{le=\"0.008\"} 3
x_seconds_bucket{le=\"0.016\"} 3
x_seconds_bucket{le=\"0.032\"} 3
x_seconds_bucket{le=\"0.064\"} 3
x_seconds_bucket{le=\"0.128\"} 3
x_seconds_bucket{le=\"0.256\"} 3
x_seconds_bucket{le=\"0.512\"} 3
x_seconds_bucket{le=\"1.024\"} 3
x_seconds_bucket{le=\"2.048\"} 3
x_seconds_bucket{le=\"4.096\"} 3
x_seconds_bucket{le=\"8.192\"} 3
x_seconds_bucket{le=\"+Inf\"} 4
x_seconds_sum 20.0045
x_seconds_count 4
";
        assert_eq!(out.text, expected);
    }

    #[test]
    fn labels_are_escaped_and_families_sorted() {
        let family: Family<u64> = Family::new();
        family.add(3, 10);
        family.add(2, 5);
        family.add(3, 1);
        let mut out = Exposition::default();
        out.family("sent_total", "Bytes\\sent.", "To", &family);
        out.gauge("info", "Info.", &[("engine", "a\"b\\c\nd")], 1);
        assert_eq!(
            out.text,
            "# HELP sent_total Bytes\\\\sent.\n# TYPE sent_total counter\n\
             sent_total{To=\"2\"} 5\nsent_total{To=\"3\"} 11\n\
             # HELP info Info.\n# TYPE info gauge\ninfo{engine=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    /// Every line of the whole exposition is a comment or `name{...} value`
    /// with a number, and every metric has one TYPE line.
    #[test]
    fn the_whole_exposition_is_well_formed() {
        let text = render(&NodeFacts {
            member: 1,
            cluster: "00000000000000ab".into(),
            engine: "redb".into(),
            has_leader: true,
            is_leader: false,
            db_bytes: Some(4096),
            revision: 7,
            compact_revision: 3,
            synced_watchers: 2,
            unsynced_watchers: 1,
            watch_streams: 2,
        });
        let mut types = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(types.insert(name.to_string()), "two TYPE lines for {name}");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{line}"
            );
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| types.contains(*b)))
                .unwrap_or(name);
            assert!(types.contains(base), "{line} has no TYPE line before it");
        }
        for name in [
            "etcd_server_has_leader",
            "etcd_server_is_leader",
            "etcd_server_leader_changes_seen_total",
            "etcd_server_proposals_committed_total",
            "etcd_server_proposals_applied_total",
            "etcd_server_proposals_pending",
            "etcd_server_proposals_failed_total",
            "etcd_disk_wal_fsync_duration_seconds",
            "etcd_disk_backend_commit_duration_seconds",
            "etcd_network_peer_sent_bytes_total",
            "etcd_network_peer_received_bytes_total",
        ] {
            assert!(types.contains(name), "{name} missing");
        }
        assert!(text.contains("etcd_server_has_leader 1\n"));
        assert!(text.contains("etcd_mvcc_db_total_size_in_bytes 4096\n"));
        assert!(text.contains("etcd_debugging_mvcc_watcher_total 3\n"));
        assert!(text.contains("etcd_debugging_mvcc_slow_watcher_total 1\n"));
        assert!(text.contains(
            "metcd_server_info{cluster_id=\"00000000000000ab\",member_id=\"1\",engine=\"redb\"} 1\n"
        ));
    }

    #[test]
    fn proposals_count_pending_and_failures() {
        let failed = PROPOSALS_FAILED.get();
        let applied = Proposal::start();
        let lost = Proposal::start();
        assert!(PROPOSALS_PENDING.get() >= 2);
        let _ = applied.finish(Ok(crate::state_machine::Applied {
            revision: 1,
            response: None,
        }));
        drop(lost);
        assert!(PROPOSALS_FAILED.get() > failed);
    }
}
