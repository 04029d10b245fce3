//! `workbench watch`: how fast a server of etcd's v3 API delivers watch
//! events and serves lease keep-alives. Runs against any such server (a real
//! etcd or metcd's gRPC port) through the `etcd-client` crate, so both are
//! measured by the same client.
//!
//! Three measurements, each after the previous one has finished:
//!
//! 1. **Fan-out**: `W` watchers (W from `watchers`, e.g. 1, 100, 1000)
//!    watch one prefix, spread over streams of at most
//!    [`WATCHES_PER_STREAM`] watches each, as Kubernetes multiplexes its
//!    watches on a few streams; `writers` concurrent clients then put
//!    `events` keys under the prefix. Events per second delivered = W ×
//!    events ÷ the time from the first put to the last event received by
//!    the last watcher. Every watcher must receive every event, in
//!    revision order, exactly once: a missing, duplicated or reordered
//!    event fails the run rather than inflating the rate.
//! 2. **Put-to-event latency**: one writer puts at a steady `rate` for
//!    `seconds`, each value carrying the time it was sent (a monotonic
//!    clock shared with the watcher, same process); one watcher records,
//!    per event, the time from the put's start to the event's arrival, in
//!    an HdrHistogram (p50, p99, p99.9, max).
//! 3. **Lease keep-alives**: `leases` leases, one keep-alive stream each,
//!    every stream sending a keep-alive as soon as the previous one is
//!    answered, for `seconds`; keep-alives answered per second.
//!
//! Results: `<out>/<name>.json` per run, and `<out>/watch.md`, a table of
//! every run in the directory (so an etcd run and a metcd run made one
//! after the other sit side by side). The machine is in each document.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, EventType, WatchOptions};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, WorkloadError};
use crate::machine::Machine;
use crate::results::SCHEMA_VERSION;
use crate::suite::ensure_writable;

/// Watches multiplexed on one watch stream in the fan-out measurement.
pub const WATCHES_PER_STREAM: usize = 100;

/// What to measure, and on what.
#[derive(Debug, Clone)]
pub struct WatchBenchConfig {
    pub out_dir: PathBuf,
    /// Where the machine calibration measures fdatasync.
    pub data_dir: PathBuf,
    /// The results' name (etcd, metcd-redb, ...).
    pub name: String,
    /// What the system is and how it runs (version, members, settings).
    pub system: String,
    /// gRPC endpoints of the members.
    pub endpoints: Vec<String>,
    /// Watcher counts of the fan-out measurement.
    pub watchers: Vec<usize>,
    /// Puts per fan-out measurement.
    pub events: usize,
    /// Concurrent writers in the fan-out measurement.
    pub writers: usize,
    /// Puts per second in the latency measurement.
    pub rate: f64,
    /// Seconds of the latency and keep-alive measurements.
    pub seconds: f64,
    /// Leases kept alive concurrently.
    pub leases: usize,
    /// Value size of every put, at least 8 (the send time).
    pub value_size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanOutRow {
    pub watchers: usize,
    pub events: usize,
    pub streams: usize,
    pub seconds: f64,
    /// Events delivered per second, all watchers together.
    pub events_per_sec: f64,
    /// Puts acknowledged per second while the watchers received them.
    pub puts_per_sec: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyRow {
    pub rate: f64,
    pub events: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeepAliveRow {
    pub leases: usize,
    pub seconds: f64,
    pub keepalives: u64,
    pub keepalives_per_sec: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchBenchReport {
    pub schema_version: u32,
    pub name: String,
    pub system: String,
    pub endpoints: Vec<String>,
    pub machine: Machine,
    pub settings: String,
    pub fan_out: Vec<FanOutRow>,
    pub latency: LatencyRow,
    pub keepalive: KeepAliveRow,
}

fn failed(config: &WatchBenchConfig, operation: &str, message: impl ToString) -> WorkloadError {
    WorkloadError::Target {
        target: config.name.clone(),
        operation: operation.to_string(),
        message: message.to_string(),
    }
}

async fn connect(config: &WatchBenchConfig) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(30));
    Client::connect(config.endpoints.clone(), Some(options))
        .await
        .map_err(|e| failed(config, "connect", e))
}

/// A fresh prefix per measurement, so no event of one is seen by another.
fn prefix(kind: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("/workbench/watch/{kind}/{nanos}/")
}

/// Receives on one stream until each of its watches has seen `events`
/// events; checks order and uniqueness per watch.
async fn drain(
    config: WatchBenchConfig,
    mut stream: etcd_client::WatchStream,
    watches: usize,
    events: usize,
    last_event: Arc<AtomicU64>,
    epoch: Instant,
) -> Result<()> {
    let mut seen: BTreeMap<i64, (usize, i64)> = BTreeMap::new();
    let mut complete = 0;
    while complete < watches {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .map_err(|_| failed(&config, "watch", "no event for 60 s"))?
            .map_err(|e| failed(&config, "watch", e))?
            .ok_or_else(|| failed(&config, "watch", "the watch stream ended"))?;
        if message.canceled() {
            return Err(failed(
                &config,
                "watch",
                format!("watch canceled: {}", message.cancel_reason()),
            ));
        }
        let entry = seen.entry(message.watch_id()).or_insert((0, 0));
        for event in message.events() {
            let revision = event.kv().map_or(0, |kv| kv.mod_revision());
            if event.event_type() != EventType::Put || revision <= entry.1 {
                return Err(failed(
                    &config,
                    "watch",
                    format!(
                        "watch {} got an event out of order or twice (revision {revision} after {})",
                        message.watch_id(),
                        entry.1
                    ),
                ));
            }
            entry.1 = revision;
            entry.0 += 1;
            if entry.0 == events {
                complete += 1;
            }
        }
        last_event.fetch_max(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    Ok(())
}

async fn fan_out(config: &WatchBenchConfig, watchers: usize) -> Result<FanOutRow> {
    let key_prefix = prefix("fanout");
    let streams = watchers.div_ceil(WATCHES_PER_STREAM).max(1);
    // One connection per ten streams, so no HTTP/2 connection carries more
    // than about a thousand watches.
    let mut connections = Vec::new();
    for _ in 0..streams.div_ceil(10) {
        connections.push(connect(config).await?);
    }
    let epoch = Instant::now();
    let last_event = Arc::new(AtomicU64::new(0));
    let mut drains = Vec::new();
    let mut left = watchers;
    for s in 0..streams {
        let here = left.min(WATCHES_PER_STREAM);
        left -= here;
        let mut client = connections[s / 10].clone();
        let options = WatchOptions::new().with_prefix();
        let mut stream = client
            .watch(key_prefix.clone(), Some(options.clone()))
            .await
            .map_err(|e| failed(config, "watch", e))?;
        for _ in 1..here {
            stream
                .watch(key_prefix.clone(), Some(options.clone()))
                .await
                .map_err(|e| failed(config, "watch", e))?;
        }
        drains.push(tokio::spawn(drain(
            config.clone(),
            stream,
            here,
            config.events,
            Arc::clone(&last_event),
            epoch,
        )));
    }
    // Let every create be answered before the first put.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let value = vec![b'v'; config.value_size];
    let started = epoch.elapsed();
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..config.writers.max(1) {
        let mut client = connections[w % connections.len()].clone();
        let (next, value, key_prefix) = (Arc::clone(&next), value.clone(), key_prefix.clone());
        let (total, cfg) = (config.events as u64, config.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), WorkloadError>(());
                }
                client
                    .put(format!("{key_prefix}{i:08}"), value.clone(), None)
                    .await
                    .map_err(|e| failed(&cfg, "put", e))?;
            }
        }));
    }
    for writer in writers {
        writer.await.map_err(|e| failed(config, "put", e))??;
    }
    let puts_done = epoch.elapsed();
    for drain in drains {
        drain.await.map_err(|e| failed(config, "watch", e))??;
    }
    let finished = Duration::from_nanos(last_event.load(Ordering::Relaxed));
    let seconds = finished.saturating_sub(started).as_secs_f64().max(1e-9);
    Ok(FanOutRow {
        watchers,
        events: config.events,
        streams,
        seconds,
        events_per_sec: (watchers * config.events) as f64 / seconds,
        puts_per_sec: config.events as f64
            / puts_done.saturating_sub(started).as_secs_f64().max(1e-9),
    })
}

async fn latency(config: &WatchBenchConfig) -> Result<LatencyRow> {
    let key_prefix = prefix("latency");
    let mut client = connect(config).await?;
    let epoch = Instant::now();
    let mut stream = client
        .watch(key_prefix.clone(), Some(WatchOptions::new().with_prefix()))
        .await
        .map_err(|e| failed(config, "watch", e))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total = (config.rate * config.seconds).max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / config.rate.max(1e-3));
    let mut writer = client.clone();
    let (cfg, wp) = (config.clone(), key_prefix.clone());
    let value_size = config.value_size.max(8);
    let puts = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for i in 0..total {
            ticker.tick().await;
            let mut value = vec![b'v'; value_size];
            value[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
            writer
                .put(format!("{wp}{i:08}"), value, None)
                .await
                .map_err(|e| failed(&cfg, "put", e))?;
        }
        Ok::<(), WorkloadError>(())
    });
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| failed(config, "histogram", e))?;
    let mut received = 0;
    while received < total {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .map_err(|_| failed(config, "watch", "no event for 60 s"))?
            .map_err(|e| failed(config, "watch", e))?
            .ok_or_else(|| failed(config, "watch", "the watch stream ended"))?;
        let now = epoch.elapsed().as_nanos() as u64;
        for event in message.events() {
            let Some(sent) = event.kv().and_then(|kv| kv.value().get(..8)) else {
                continue;
            };
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(sent);
            let sent = u64::from_be_bytes(bytes);
            histogram.saturating_record(now.saturating_sub(sent).max(1));
            received += 1;
        }
    }
    puts.await.map_err(|e| failed(config, "put", e))??;
    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(LatencyRow {
        rate: config.rate,
        events: received,
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: histogram.max() as f64 / 1000.0,
    })
}

async fn keepalives(config: &WatchBenchConfig) -> Result<KeepAliveRow> {
    let mut client = connect(config).await?;
    let mut leases = Vec::new();
    for _ in 0..config.leases.max(1) {
        leases.push(
            client
                .lease_grant(60, None)
                .await
                .map_err(|e| failed(config, "lease grant", e))?
                .id(),
        );
    }
    let count = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs_f64(config.seconds);
    let mut tasks = Vec::new();
    for &lease in &leases {
        let (mut client, count, cfg) = (client.clone(), Arc::clone(&count), config.clone());
        tasks.push(tokio::spawn(async move {
            let (mut keeper, mut stream) = client
                .lease_keep_alive(lease)
                .await
                .map_err(|e| failed(&cfg, "keep-alive", e))?;
            while Instant::now() < stop {
                keeper
                    .keep_alive()
                    .await
                    .map_err(|e| failed(&cfg, "keep-alive", e))?;
                match stream.message().await {
                    Ok(Some(answer)) if answer.ttl() > 0 => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(_)) => return Err(failed(&cfg, "keep-alive", "the lease expired")),
                    Ok(None) => return Err(failed(&cfg, "keep-alive", "the stream ended")),
                    Err(e) => return Err(failed(&cfg, "keep-alive", e)),
                }
            }
            Ok::<(), WorkloadError>(())
        }));
    }
    let started = Instant::now();
    for task in tasks {
        task.await.map_err(|e| failed(config, "keep-alive", e))??;
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    for lease in leases {
        let _ = client.lease_revoke(lease).await;
    }
    let keepalives = count.load(Ordering::Relaxed);
    Ok(KeepAliveRow {
        leases: config.leases.max(1),
        seconds,
        keepalives,
        keepalives_per_sec: keepalives as f64 / seconds,
    })
}

/// Runs the three measurements, writes `<name>.json` and rewrites
/// `watch.md` from every document in the output directory.
pub fn run(config: &WatchBenchConfig) -> Result<WatchBenchReport> {
    ensure_writable(&config.out_dir)?;
    let machine = Machine::calibrate(&config.data_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| failed(config, "start tokio", e))?;
    let (fan_out_rows, latency_row, keepalive_row) = runtime.block_on(async {
        let mut rows = Vec::new();
        for &w in &config.watchers {
            eprintln!(
                "watch: {}: {w} watchers, {} events",
                config.name, config.events
            );
            rows.push(fan_out(config, w).await?);
        }
        eprintln!(
            "watch: {}: put-to-event latency at {}/s",
            config.name, config.rate
        );
        let latency_row = latency(config).await?;
        eprintln!(
            "watch: {}: keep-alives on {} leases",
            config.name, config.leases
        );
        let keepalive_row = keepalives(config).await?;
        Ok::<_, WorkloadError>((rows, latency_row, keepalive_row))
    })?;
    let report = WatchBenchReport {
        schema_version: SCHEMA_VERSION,
        name: config.name.clone(),
        system: config.system.clone(),
        endpoints: config.endpoints.clone(),
        machine,
        settings: format!(
            "etcd-client over gRPC; fan-out: {} puts of {} B values by {} concurrent writers, watches on one prefix, \
             at most {WATCHES_PER_STREAM} per stream; latency: one writer at {} puts/s for {} s, one watcher; \
             keep-alives: {} leases, one stream each, back to back for {} s",
            config.events,
            config.value_size,
            config.writers,
            config.rate,
            config.seconds,
            config.leases,
            config.seconds
        ),
        fan_out: fan_out_rows,
        latency: latency_row,
        keepalive: keepalive_row,
    };
    let json = serde_json::to_string_pretty(&report).map_err(|e| WorkloadError::Results {
        context: "serializing the watch report".into(),
        message: e.to_string(),
    })?;
    let path = config.out_dir.join(format!("{}.json", config.name));
    fs::write(&path, json + "\n").context(|| format!("cannot write {}", path.display()))?;
    write_table(&config.out_dir)?;
    Ok(report)
}

/// `watch.md`: every report in `dir`, side by side.
pub fn write_table(dir: &Path) -> Result<()> {
    let mut reports: Vec<WatchBenchReport> = Vec::new();
    for entry in fs::read_dir(dir).context(|| format!("cannot read {}", dir.display()))? {
        let path = entry
            .context(|| format!("cannot read {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "json") {
            let text =
                fs::read_to_string(&path).context(|| format!("cannot read {}", path.display()))?;
            let report = serde_json::from_str(&text).map_err(|e| WorkloadError::Results {
                context: format!("reading {}", path.display()),
                message: e.to_string(),
            })?;
            reports.push(report);
        }
    }
    reports.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    let _ = writeln!(out, "# Watch events and lease keep-alives\n");
    for r in &reports {
        let _ = writeln!(
            out,
            "- **{}**: {}. Machine: {}. Settings: {}",
            r.name,
            r.system,
            r.machine.summary(),
            r.settings
        );
    }
    let _ = writeln!(out, "\n## Events delivered per second (fan-out)\n");
    let _ = writeln!(
        out,
        "| system | watchers | events/s delivered | puts/s meanwhile |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for r in &reports {
        for f in &r.fan_out {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} |",
                r.name, f.watchers, f.events_per_sec, f.puts_per_sec
            );
        }
    }
    let _ = writeln!(out, "\n## Put-to-event latency (one watcher)\n");
    let _ = writeln!(
        out,
        "| system | puts/s | events | p50 µs | p99 µs | p99.9 µs | max µs |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for r in &reports {
        let l = &r.latency;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.name, l.rate, l.events, l.p50_us, l.p99_us, l.p999_us, l.max_us
        );
    }
    let _ = writeln!(out, "\n## Lease keep-alives\n");
    let _ = writeln!(out, "| system | leases | keep-alives/s |");
    let _ = writeln!(out, "|---|---:|---:|");
    for r in &reports {
        let k = &r.keepalive;
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} |",
            r.name, k.leases, k.keepalives_per_sec
        );
    }
    let path = dir.join("watch.md");
    fs::write(&path, out).context(|| format!("cannot write {}", path.display()))
}
