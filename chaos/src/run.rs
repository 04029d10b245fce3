//! One chaos run: a cluster, clients, a nemesis, healing, and the checks.
//!
//! 1. Three `metcd` nodes start on one engine ([`crate::nodes`]), behind
//!    the peer-link proxies, and elect a leader.
//! 2. The clients ([`crate::workload`]) run for the run's duration while a
//!    monitor polls every node's `/-/status` (leader changes) and the
//!    nemesis ([`crate::nemesis`]) injects faults of the run's kind in
//!    cycles: inject, hold, heal, quiet.
//! 3. Everything is healed; the clients stop.
//! 4. **Every acknowledged write is present**: each key is read once more
//!    with a linearizable GET, and those reads join the history, so a lost
//!    acknowledged write is a linearizability violation like any other.
//! 5. **The history is linearizable** ([`crate::linearizability`]).
//! 6. **The replicas converge**: every node reaches the same
//!    `applied_index`, with `commit_index` equal to it, and the same hash
//!    of the workload's keys read with serializable GETs from that node's
//!    own engine; the applied index is read again after the hash, so the
//!    hash is of that index. (The hash covers the workload's keys only;
//!    metcd has no range read to hash the whole store.)
//! 7. **Watches kept their guarantees** ([`crate::watch_check`]): a watcher
//!    per node, resuming after every break, received every revision once,
//!    in order, whole, with the right prev_kv and every acknowledged put,
//!    while the history was compacted under them twice a second; and
//!    after the run every node refuses a watch from below the final
//!    compaction with its revision ([`crate::compactor`]).
//!
//! A run's outcome is data ([`RunOutcome`]), not a panic: a violation, a
//! divergence or a harness error is recorded with the seed that reproduces
//! the run's choices (the nemesis's victims and timings, the clients'
//! operations; not the scheduling of the machine).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::compactor;
use crate::history::{Input, Operation, Outcome, Output, decode_value};
use crate::http;
use crate::linearizability::{self, Budget, Verdict};
use crate::nemesis::{self, FaultKind};
use crate::nodes::{self, NodeOptions, Nodes, Status, statuses};
use crate::watch_check::{self, Until};
use crate::workload::{self, Shared, WorkloadOptions, path_of};

/// What one run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub engine: String,
    pub fault: FaultKind,
    pub seed: u64,
    /// How long the clients run (faults are injected during it).
    pub duration: Duration,
    pub clients: u32,
    /// Which client API the clients speak.
    pub api: workload::Api,
    pub keys: usize,
    pub binary: std::path::PathBuf,
    /// Keep the nodes' logs and data of a failed run.
    pub keep_failed: bool,
    /// A deliberate bug for the nodes (`metcd --lab-break`), for the book's
    /// "break it" labs.
    pub lab_break: Option<String>,
}

impl RunConfig {
    /// The short form's settings.
    pub fn short(engine: &str, fault: FaultKind, seed: u64) -> anyhow::Result<RunConfig> {
        Ok(RunConfig {
            engine: engine.to_string(),
            fault,
            seed,
            duration: Duration::from_secs(5),
            clients: 4,
            api: workload::Api::Both,
            keys: 3,
            binary: nodes::locate_metcd()?,
            keep_failed: true,
            lab_break: None,
        })
    }
}

/// The `metcd` flags of every run: fast elections, a request timeout below
/// the client's, and frequent snapshots with a short log so that a node
/// that was down or cut off catches up by snapshot install, not only by
/// log entries.
pub fn metcd_flags() -> Vec<String> {
    [
        "--tick-ms",
        "50",
        "--election-ticks",
        "10",
        "--request-timeout-ms",
        "1000",
        "--snapshot-every",
        "200",
        "--keep-entries",
        "50",
        "--cache-mb",
        "8",
    ]
    .map(String::from)
    .to_vec()
}

/// The client's request deadline: above metcd's request timeout, so the
/// server's own 503 usually arrives first.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(1_500);
/// How long a leader may take to emerge at the start or after healing.
const LEADER_WAIT: Duration = Duration::from_secs(30);
/// How long the replicas may take to converge after healing.
const CONVERGE_WAIT: Duration = Duration::from_secs(30);

/// Everything a run found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutcome {
    pub engine: String,
    pub fault: FaultKind,
    pub seed: u64,
    pub elapsed_ms: u64,
    pub operations: usize,
    /// Writes answered 204.
    pub acknowledged: usize,
    /// Writes whose outcome is unknown.
    pub unknown: usize,
    /// Operations that certainly had no effect (including failed reads).
    pub failed: usize,
    /// Reads answered with a value or "not found".
    pub reads: usize,
    pub verdict: Verdict,
    /// Explanations of the violations, one per key.
    pub violations: Vec<String>,
    /// Keys whose check gave up.
    pub gave_up: Vec<String>,
    pub converged: bool,
    /// Why the replicas were judged divergent, if they were.
    pub divergence: Option<String>,
    /// Longest stretch of the client phase with no acknowledged write.
    pub longest_unavailability_ms: u64,
    pub leader_changes: u64,
    /// What the nemesis did, in order.
    pub faults: Vec<String>,
    /// Raft messages the proxies dropped.
    pub messages_dropped: u64,
    /// A harness failure (no leader, a node that would not start).
    pub error: Option<String>,
    /// Where the logs of a failed run were kept.
    pub kept: Option<String>,
    /// Events the per-node watchers received, in total.
    #[serde(default)]
    pub watch_events: usize,
    /// Times a watcher's stream broke and it resumed.
    #[serde(default)]
    pub watch_resumes: u64,
    /// Broken watch guarantees, one line each.
    #[serde(default)]
    pub watch_violations: Vec<String>,
    /// Revisions compacted (acknowledged) during the client phase.
    #[serde(default)]
    pub compactions: Vec<i64>,
}

impl RunOutcome {
    /// A violation, a divergence or a harness error.
    pub fn failed(&self) -> bool {
        self.verdict == Verdict::NotLinearizable
            || !self.converged
            || self.error.is_some()
            || !self.watch_violations.is_empty()
    }

    /// One line for the console.
    pub fn line(&self) -> String {
        let status = if self.verdict == Verdict::NotLinearizable {
            "VIOLATION"
        } else if !self.watch_violations.is_empty() {
            "WATCH VIOLATION"
        } else if self.error.is_some() {
            "ERROR"
        } else if !self.converged {
            "DIVERGED"
        } else if self.verdict == Verdict::Unknown {
            "unknown (checker gave up)"
        } else {
            "ok"
        };
        format!(
            "{:<8} {:<16} seed {:<20} {:>5} ops {:>4} acked {:>3} unknown  leader changes {:>2}  unavailable {:>5} ms  watch {:>5} events {:>2} resumes  {:>2} compactions  {:>5.1} s  {status}",
            self.engine,
            self.fault.name(),
            self.seed,
            self.operations,
            self.acknowledged,
            self.unknown,
            self.leader_changes,
            self.longest_unavailability_ms,
            self.watch_events,
            self.watch_resumes,
            self.compactions.len(),
            self.elapsed_ms as f64 / 1000.0,
        )
    }

    /// Everything needed to understand a failure.
    pub fn details(&self) -> String {
        let mut out = format!(
            "run: engine {} fault {} seed {}\nreproduce: cargo run --release -p chaos --bin chaos -- {} --fault {} --seed {} --runs 1\nfaults: {:?}\n",
            self.engine, self.fault, self.seed, self.engine, self.fault, self.seed, self.faults
        );
        for v in &self.violations {
            out.push_str(v);
        }
        for v in &self.watch_violations {
            out.push_str(&format!("{v}\n"));
        }
        if let Some(d) = &self.divergence {
            out.push_str(&format!("divergence: {d}\n"));
        }
        if let Some(e) = &self.error {
            out.push_str(&format!("error: {e}\n"));
        }
        if let Some(k) = &self.kept {
            out.push_str(&format!("logs and data kept in {k}\n"));
        }
        out
    }
}

/// Runs one chaos run. Only a failure to even start is an `Err`.
pub async fn run(config: &RunConfig) -> anyhow::Result<RunOutcome> {
    static CLEANED: std::sync::Once = std::sync::Once::new();
    CLEANED.call_once(nodes::remove_leftovers);
    let began = Instant::now();
    let options = NodeOptions {
        binary: config.binary.clone(),
        engine: config.engine.clone(),
        flags: metcd_flags()
            .into_iter()
            .chain(
                config
                    .lab_break
                    .iter()
                    .flat_map(|b| ["--lab-break".to_string(), b.clone()]),
            )
            .collect(),
    };
    let mut nodes = Nodes::start(3, options, config.seed).await?;
    let mut outcome = RunOutcome {
        engine: config.engine.clone(),
        fault: config.fault,
        seed: config.seed,
        elapsed_ms: 0,
        operations: 0,
        acknowledged: 0,
        unknown: 0,
        failed: 0,
        reads: 0,
        verdict: Verdict::Unknown,
        violations: Vec::new(),
        gave_up: Vec::new(),
        converged: false,
        divergence: None,
        longest_unavailability_ms: 0,
        leader_changes: 0,
        faults: Vec::new(),
        messages_dropped: 0,
        error: None,
        kept: None,
        watch_events: 0,
        watch_resumes: 0,
        watch_violations: Vec::new(),
        compactions: Vec::new(),
    };
    if let Err(err) = exercise(config, &mut nodes, &mut outcome).await {
        outcome.error = Some(format!("{err:#}"));
    }
    outcome.messages_dropped = nodes.faults.counts().1;
    if outcome.failed() && config.keep_failed {
        outcome.kept = Some(nodes.keep().display().to_string());
    }
    if outcome.error.is_some() || !outcome.converged {
        for node in &nodes.nodes {
            let tail = nodes.log_tail(node.id, 15);
            if let Some(error) = &mut outcome.error {
                error.push_str(&format!(
                    "\n--- node {} log (last lines) ---\n{tail}",
                    node.id
                ));
            }
        }
    }
    drop(nodes);
    outcome.elapsed_ms = began.elapsed().as_millis() as u64;
    Ok(outcome)
}

async fn exercise(
    config: &RunConfig,
    nodes: &mut Nodes,
    outcome: &mut RunOutcome,
) -> anyhow::Result<()> {
    let clients = nodes.clients();
    wait_for_leader(nodes, "at start").await?;
    let prefix = format!("chaos-{}", config.seed);
    let keys: Vec<String> = (0..config.keys).map(|k| format!("{prefix}-k{k}")).collect();
    let seen = statuses(&clients, Duration::from_millis(500)).await;
    let hint = nodes::leader_of(&seen)
        .and_then(|l| nodes.nodes.iter().position(|n| n.id == l))
        .unwrap_or(0);
    let shared = Shared {
        nodes: Arc::new(clients.clone()),
        grpc_nodes: Arc::new(nodes.grpc_clients()),
        leader_hint: Arc::new(AtomicUsize::new(hint)),
        start: Instant::now(),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let workload_options = Arc::new(WorkloadOptions {
        clients: config.clients,
        api: config.api,
        keys: keys.clone(),
        timeout: CLIENT_TIMEOUT,
    });
    // One watcher per node, from revision 1, through every fault.
    let until = Arc::new(Until::default());
    let seen: Vec<Arc<AtomicI64>> = (0..nodes.grpc_clients().len())
        .map(|_| Arc::new(AtomicI64::new(0)))
        .collect();
    let watchers: Vec<_> = nodes
        .grpc_clients()
        .into_iter()
        .zip(&seen)
        .map(|(node, seen)| tokio::spawn(watch_check::watch(node, until.clone(), seen.clone())))
        .collect();
    // Compaction under faults, never past what every watcher has seen.
    let compactor = tokio::spawn(compactor::compact(
        nodes.grpc_clients(),
        seen,
        shared.stop.clone(),
        config.seed,
    ));
    let client_tasks: Vec<_> = (0..config.clients)
        .map(|id| {
            tokio::spawn(workload::client(
                id,
                config.seed,
                workload_options.clone(),
                shared.clone(),
            ))
        })
        .collect();
    let monitor = tokio::spawn(monitor(clients.clone(), shared.stop.clone()));

    let nemesis_result = nemesis_phase(config, nodes, &shared, outcome).await;
    let healed = nodes.heal();
    shared.stop.store(true, Ordering::Relaxed);
    let mut history: Vec<Operation> = Vec::new();
    for task in client_tasks {
        history.extend(task.await?);
    }
    let workload_end = shared.now();
    let terms = monitor.await?;
    outcome.leader_changes = terms.saturating_sub(1);
    outcome.compactions = compactor.await?;
    nemesis_result?;
    healed?;
    outcome.longest_unavailability_ms = longest_gap(&history, workload_end) / 1_000_000;

    wait_for_leader(nodes, "after healing").await?;
    // Every acknowledged write must be visible: a final linearizable read
    // of each key joins the history.
    for key in &keys {
        history.push(final_read(&shared, key).await?);
    }
    tally(&history, outcome);
    check_watches(&nodes.grpc_clients(), &history, watchers, &until, outcome).await?;
    let report = linearizability::check(&history, Budget::default());
    outcome.verdict = report.verdict();
    outcome.violations = report.violations().iter().map(|e| e.to_string()).collect();
    outcome.gave_up = report.gave_up().iter().map(|k| k.to_string()).collect();
    converge(nodes, &keys, outcome).await;
    Ok(())
}

async fn nemesis_phase(
    config: &RunConfig,
    nodes: &mut Nodes,
    shared: &Shared,
    outcome: &mut RunOutcome,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let end = shared.start + config.duration;
    tokio::time::sleep(Duration::from_millis(rng.random_range(300..700))).await;
    while Instant::now() + Duration::from_millis(500) < end {
        let injected = nemesis::inject(config.fault, nodes, &mut rng).await?;
        let at = shared.now() / 1_000_000;
        outcome
            .faults
            .push(format!("{at} ms: {}", injected.description));
        let hold = Duration::from_millis(rng.random_range(800..2_000));
        tokio::time::sleep_until((Instant::now() + hold).min(end)).await;
        nodes.heal()?;
        let at = shared.now() / 1_000_000;
        outcome.faults.push(format!("{at} ms: heal"));
        if let Some((id, status)) = nodes.exited() {
            anyhow::bail!(
                "node {id} exited by itself ({status}); its log:\n{}",
                nodes.log_tail(id, 30)
            );
        }
        let quiet = Duration::from_millis(rng.random_range(300..1_000));
        tokio::time::sleep_until((Instant::now() + quiet).min(end)).await;
    }
    tokio::time::sleep_until(end).await;
    Ok(())
}

/// Polls every node's status until `stop`; returns how many distinct
/// (term, leader) pairs were seen.
async fn monitor(clients: Vec<SocketAddr>, stop: Arc<AtomicBool>) -> u64 {
    let mut seen = std::collections::HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        for status in statuses(&clients, Duration::from_millis(300))
            .await
            .into_iter()
            .flatten()
        {
            if status.leader != 0 {
                seen.insert((status.term, status.leader));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen.len() as u64
}

async fn wait_for_leader(nodes: &mut Nodes, when: &str) -> anyhow::Result<u64> {
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        if let Some((id, status)) = nodes.exited() {
            anyhow::bail!(
                "node {id} exited ({status}) {when}; its log:\n{}",
                nodes.log_tail(id, 30)
            );
        }
        let seen = statuses(&nodes.clients(), Duration::from_millis(500)).await;
        let leaders: Vec<u64> = seen.iter().flatten().map(|s| s.leader).collect();
        if leaders.len() == seen.len()
            && leaders[0] != 0
            && leaders.iter().all(|l| *l == leaders[0])
        {
            return Ok(leaders[0]);
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "no leader agreed by every node {when} within {} s (leaders seen: {leaders:?})",
                LEADER_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A linearizable read of `key`, tried on each node in turn until one
/// answers (reads have no effect, so retrying them is safe).
async fn final_read(shared: &Shared, key: &str) -> anyhow::Result<Operation> {
    let deadline = Instant::now() + LEADER_WAIT;
    let mut attempt = 0usize;
    let mut last = String::new();
    while Instant::now() < deadline {
        let node = shared.nodes[attempt % shared.nodes.len()];
        attempt += 1;
        let call = shared.now();
        match http::request(node, "GET", &path_of(key), b"", CLIENT_TIMEOUT).await {
            Ok(answer) if answer.status == 200 || answer.status == 404 => {
                let output = if answer.status == 200 {
                    Output::Read(Some(decode_value(&answer.body)))
                } else {
                    Output::Read(None)
                };
                return Ok(Operation::completed(
                    u32::MAX,
                    key,
                    Input::Get,
                    call,
                    shared.now(),
                    output,
                ));
            }
            Ok(answer) => last = format!("{}: {}", answer.status, answer.message()),
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the final read of {key} never succeeded (last: {last})")
}

/// How long the watchers may take, after healing, to reach the final
/// revision.
const WATCH_WAIT: Duration = Duration::from_secs(30);

/// Lets the watchers reach the store's final revision, then checks what
/// they received against the acknowledged writes.
async fn check_watches(
    grpc: &[SocketAddr],
    history: &[Operation],
    watchers: Vec<tokio::task::JoinHandle<watch_check::WatchLog>>,
    until: &Until,
    outcome: &mut RunOutcome,
) -> anyhow::Result<()> {
    let target = watch_check::current_revision(grpc).await;
    until
        .target
        .store(target.unwrap_or(i64::MAX), Ordering::Release);
    let deadline = Instant::now() + WATCH_WAIT;
    let mut logs = Vec::new();
    for watcher in watchers {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut watcher = watcher;
        let log = match tokio::time::timeout(left, &mut watcher).await {
            Ok(log) => log?,
            Err(_) => {
                until.give_up.store(true, Ordering::Release);
                watcher.await?
            }
        };
        logs.push(log);
    }
    let Some(target) = target else {
        outcome
            .watch_violations
            .push("the final revision could not be read for the watch check".into());
        return Ok(());
    };
    let acknowledged: Vec<(String, Vec<u8>)> = history
        .iter()
        .filter_map(|op| match (&op.input, &op.outcome) {
            (Input::Put(value), Outcome::Completed { .. }) => Some((
                op.key.clone(),
                crate::history::encode_value(*value).into_bytes(),
            )),
            _ => None,
        })
        .collect();
    outcome.watch_events = logs.iter().map(|l| l.events.len()).sum();
    outcome.watch_resumes = logs.iter().map(|l| l.resumes).sum();
    outcome.watch_violations = watch_check::check(&logs, &acknowledged, target);
    // The watchers are done: the final compaction may now go to the top.
    outcome
        .watch_violations
        .extend(compactor::probe(grpc, target).await);
    Ok(())
}

fn tally(history: &[Operation], outcome: &mut RunOutcome) {
    outcome.operations = history.len();
    for op in history {
        match (&op.outcome, op.is_write()) {
            (Outcome::Completed { .. }, true) => outcome.acknowledged += 1,
            (Outcome::Completed { .. }, false) => outcome.reads += 1,
            (Outcome::Unknown { .. }, true) => outcome.unknown += 1,
            _ => outcome.failed += 1,
        }
    }
}

/// The longest stretch of [0, end] (ns) without an acknowledged write.
fn longest_gap(history: &[Operation], end: u64) -> u64 {
    let mut acks: Vec<u64> = history
        .iter()
        .filter(|op| op.is_write())
        .filter_map(|op| match op.outcome {
            Outcome::Completed { at, .. } => Some(at),
            _ => None,
        })
        .collect();
    acks.sort_unstable();
    let mut last = 0;
    let mut longest = 0;
    for at in acks.into_iter().chain(std::iter::once(end)) {
        longest = longest.max(at.saturating_sub(last));
        last = at;
    }
    longest
}

/// FNV-1a over the keys and what a node holds for each.
fn hash_state(values: &[(String, Option<Vec<u8>>)]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (key, value) in values {
        feed(key.as_bytes());
        match value {
            Some(v) => {
                feed(b"=");
                feed(v);
            }
            None => feed(b"-"),
        }
        feed(b"\n");
    }
    hash
}

/// A node's keys read from its own engine, or `None` if it did not answer.
async fn serializable_state(node: SocketAddr, keys: &[String]) -> Option<u64> {
    let mut values = Vec::new();
    for key in keys {
        let path = format!("{}?consistency=serializable", path_of(key));
        let answer = http::request(node, "GET", &path, b"", Duration::from_secs(1))
            .await
            .ok()?;
        match answer.status {
            200 => values.push((key.clone(), Some(answer.body))),
            404 => values.push((key.clone(), None)),
            _ => return None,
        }
    }
    Some(hash_state(&values))
}

/// Waits until every node has applied the same index with the same state.
async fn converge(nodes: &Nodes, keys: &[String], outcome: &mut RunOutcome) {
    let clients = nodes.clients();
    let deadline = Instant::now() + CONVERGE_WAIT;
    let mut last = String::from("no status answered");
    while Instant::now() < deadline {
        let before = statuses(&clients, Duration::from_millis(500)).await;
        let mut views = Vec::new();
        for (client, status) in clients.iter().zip(&before) {
            let state = match status {
                Some(_) => serializable_state(*client, keys).await,
                None => None,
            };
            views.push((status.clone(), state));
        }
        let after = statuses(&clients, Duration::from_millis(500)).await;
        last = describe(&views);
        let index = |s: &Option<Status>| s.as_ref().map(|s| (s.applied_index, s.commit_index));
        let settled = before.iter().zip(&after).all(|(b, a)| {
            index(b).is_some() && index(b) == index(a) && index(b).is_some_and(|(ap, co)| ap == co)
        });
        let same_index = after.iter().all(|s| {
            s.as_ref().map(|s| s.applied_index) == after[0].as_ref().map(|s| s.applied_index)
        });
        let same_state = views.iter().all(|(_, h)| h.is_some() && *h == views[0].1);
        if settled && same_index {
            if same_state {
                outcome.converged = true;
                return;
            }
            outcome.divergence = Some(format!("same applied index, different states: {last}"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    outcome.divergence = Some(format!(
        "the nodes did not reach one applied index within {} s: {last}",
        CONVERGE_WAIT.as_secs()
    ));
}

fn describe(views: &[(Option<Status>, Option<u64>)]) -> String {
    views
        .iter()
        .map(|(status, hash)| match status {
            Some(s) => format!(
                "node {} applied {} commit {} hash {}",
                s.id,
                s.applied_index,
                s.commit_index,
                hash.map_or("?".to_string(), |h| format!("{h:016x}"))
            ),
            None => "a node did not answer".to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_counts_the_edges() {
        let ack = |at| Operation::completed(0, "k", Input::Put(1), 0, at, Output::Ok);
        let read = |at| Operation::completed(0, "k", Input::Get, 0, at, Output::Read(None));
        let history = [ack(10), ack(50), read(200), ack(60)];
        assert_eq!(longest_gap(&history, 100), 40);
        assert_eq!(longest_gap(&history, 300), 240);
        assert_eq!(longest_gap(&[], 7), 7);
    }

    #[test]
    fn the_state_hash_sees_values_and_absence() {
        let a = hash_state(&[("k".into(), Some(b"1".to_vec()))]);
        let b = hash_state(&[("k".into(), Some(b"2".to_vec()))]);
        let c = hash_state(&[("k".into(), None)]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, hash_state(&[("k".into(), Some(b"1".to_vec()))]));
    }
}
