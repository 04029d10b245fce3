//! Markdown reports of a run directory: `<workload>/summary.md`,
//! `<workload>/findings.md` ([`crate::findings`]) and the run's
//! `index.md`, rebuilt, with the plots, from the JSON documents alone.
//!
//! Every summary says what the numbers depend on before it shows them: the
//! settings, the durability policy with each target's sync primitive (the
//! engines do not all mean the same thing by "durable"), the data set
//! against the memory it could be cached in, the machine, and which runs, if
//! any, were capped by their time limit (their end state differs from the
//! others'; a capped target is marked in every table and plot).
//!
//! Then three tables: latency and throughput; the state after the run
//! settled (records, space allocated and apparent, amplifications, the
//! settling waits, device bytes read per get); and, for open-loop runs, the
//! harness's start lag. In every table the best value of each column is in
//! bold: the highest throughput, the lowest latencies and the lowest
//! amplifications. The amplification columns compare only targets with
//! files on disk (the memory engine's zero would otherwise always win).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::machine::{Machine, format_nanos};
use crate::plots::{draw_workload, plots_for};
use crate::results::{ResultDocument, read_run};

/// Name of the calibration file in a run directory.
pub const MACHINE_FILE: &str = "machine.json";

/// Writes every `summary.md`, every plot and `index.md` of `run_dir` from
/// the result documents found there.
pub fn write_reports(run_dir: &Path) -> Result<()> {
    let workloads = read_run(run_dir)?;
    for (workload, documents) in &workloads {
        let dir = run_dir.join(workload);
        let summary = format!(
            "# {workload}\n\n{}\n{}",
            settings_block(documents),
            summary_table(documents)
        );
        let path = dir.join("summary.md");
        fs::write(&path, summary).context(|| format!("cannot write {}", path.display()))?;
        let path = dir.join("findings.md");
        fs::write(&path, crate::findings::findings(workload, documents))
            .context(|| format!("cannot write {}", path.display()))?;
        draw_workload(&dir, documents)?;
    }
    let machine = fs::read_to_string(run_dir.join(MACHINE_FILE))
        .ok()
        .and_then(|text| serde_json::from_str::<Machine>(&text).ok())
        .or_else(|| workloads.values().next().map(|d| d[0].machine.clone()));
    let index = index_markdown(run_dir, &workloads, machine.as_ref());
    let path = run_dir.join("index.md");
    fs::write(&path, index).context(|| format!("cannot write {}", path.display()))
}

/// The name of a target in tables and legends: marked when capped.
pub fn display_name(doc: &ResultDocument) -> String {
    if doc.run.capped {
        format!("{} (capped)", doc.target.name)
    } else {
        doc.target.name.clone()
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn settle_mib(settle: &crate::runner::SettleSummary) -> Option<f64> {
    settle.device_write_bytes.map(mib)
}

fn settings_block(documents: &[ResultDocument]) -> String {
    let doc = &documents[0];
    let primitives: Vec<String> = documents
        .iter()
        .map(|d| format!("{}: {}", d.target.name, d.durability.sync_primitive))
        .collect();
    let mut out = format!(
        "{}\n\n* Settings: {}\n* Durability: {}. Sync primitive per target: {}.\n",
        doc.spec.description,
        doc.spec.settings_line_with(&doc.durability.description),
        doc.durability.description,
        primitives.join("; ")
    );
    let largest = documents.iter().map(|d| d.memory.data_set_bytes).max();
    let smallest = documents.iter().map(|d| d.memory.data_set_bytes).min();
    if let (Some(low), Some(high)) = (smallest, largest) {
        let size = if low == high {
            format!("{:.0} MiB", mib(high))
        } else {
            format!("{:.0} to {:.0} MiB", mib(low), mib(high))
        };
        match documents.iter().find_map(|d| d.memory.limit.as_ref()) {
            Some(limit) => {
                let _ = writeln!(
                    out,
                    "* Data set vs memory: {size} after the run (allocated on disk), against a limit of {:.0} MiB on \
                     each engine's memory and page cache ({}): {:.1}× to {:.1}× the memory it may cache in. \
                     The machine has {:.1} GiB.",
                    mib(limit.limit_bytes),
                    limit.mechanism,
                    low as f64 / limit.limit_bytes as f64,
                    high as f64 / limit.limit_bytes as f64,
                    doc.memory.machine_bytes as f64 / (1u64 << 30) as f64
                );
            }
            None => {
                let ram = doc.memory.machine_bytes.max(1) as f64;
                let _ = writeln!(
                    out,
                    "* Data set vs memory: {size} after the run (allocated on disk, or live bytes in memory), against \
                     {:.1} GiB of RAM ({:.1}% to {:.1}%), no memory limit: the page cache can hold all of it, so reads \
                     do not reach the device.",
                    ram / (1u64 << 30) as f64,
                    100.0 * low as f64 / ram,
                    100.0 * high as f64 / ram
                );
            }
        }
    }
    for d in documents.iter().filter(|d| d.run.capped) {
        let _ = writeln!(
            out,
            "* **{} was capped**: it reached the {} s time cap after {} of {} operations, so it ends with \
             different records than the others; compare its numbers with care.",
            d.target.name,
            d.spec.time_cap_secs.unwrap_or(0.0),
            d.run.executed_operations,
            d.spec.operation_count.unwrap_or(0) + d.spec.warmup_operations
        );
    }
    let _ = writeln!(out, "* Machine: {}", doc.machine.summary());
    out
}

/// Which way a column is better.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
    /// Lower, among targets with files on disk only.
    LowerOnDisk,
    /// Neither: shown, never bold.
    None,
}

struct Column {
    title: &'static str,
    better: Better,
    value: fn(&ResultDocument) -> Option<f64>,
    show: fn(f64) -> String,
}

fn micros(nanos: u64) -> Option<f64> {
    Some(nanos as f64 / 1000.0)
}

fn columns() -> Vec<Column> {
    // Three significant digits down to 0.01 µs, the histograms' precision.
    let us = |v: f64| {
        if v < 10.0 {
            format!("{v:.2}")
        } else if v < 100.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.0}")
        }
    };
    vec![
        Column {
            title: "throughput (ops/s)",
            better: Better::Higher,
            value: |d| Some(d.run.throughput_ops_per_sec),
            show: |v| format!("{v:.0}"),
        },
        Column {
            title: "p50 (µs)",
            better: Better::Lower,
            value: |d| micros(d.overall.p50_ns),
            show: us,
        },
        Column {
            title: "p90 (µs)",
            better: Better::Lower,
            value: |d| micros(d.overall.p90_ns),
            show: us,
        },
        Column {
            title: "p99 (µs)",
            better: Better::Lower,
            value: |d| micros(d.overall.p99_ns),
            show: us,
        },
        Column {
            title: "p99.9 (µs)",
            better: Better::Lower,
            value: |d| micros(d.overall.p999_ns),
            show: us,
        },
        Column {
            title: "p99.99 (µs)",
            better: Better::Lower,
            value: |d| micros(d.overall.p9999_ns),
            show: us,
        },
        Column {
            title: "max (µs)",
            better: Better::Lower,
            value: |d| micros(d.overall.max_ns),
            show: us,
        },
        Column {
            title: "mean (µs)",
            better: Better::Lower,
            value: |d| Some(d.overall.mean_ns / 1000.0),
            show: us,
        },
    ]
}

/// The state after the run settled, and what settling and reading cost.
fn state_columns() -> Vec<Column> {
    let ratio = |v: f64| format!("{v:.2}");
    let seconds = |v: f64| format!("{v:.1}");
    let mebibytes = |v: f64| format!("{v:.1}");
    vec![
        Column {
            title: "records at end",
            better: Better::None,
            value: |d| Some(d.storage.keys as f64),
            show: |v| format!("{v:.0}"),
        },
        Column {
            title: "disk allocated (MiB)",
            better: Better::LowerOnDisk,
            value: |d| d.storage.allocated_bytes.map(mib),
            show: mebibytes,
        },
        Column {
            title: "disk apparent (MiB)",
            better: Better::None,
            value: |d| d.storage.apparent_bytes.map(mib),
            show: mebibytes,
        },
        Column {
            title: "data / memory (%)",
            better: Better::None,
            value: |d| d.memory.data_set_to_memory.map(|r| r * 100.0),
            show: |v| {
                if v < 10.0 {
                    format!("{v:.2}")
                } else {
                    format!("{v:.0}")
                }
            },
        },
        Column {
            title: "space amp.",
            better: Better::LowerOnDisk,
            value: |d| d.storage.space_amplification,
            show: ratio,
        },
        Column {
            title: "write amp. (run)",
            better: Better::LowerOnDisk,
            value: |d| d.io.write_amplification,
            show: ratio,
        },
        Column {
            title: "write amp. (+ settle)",
            better: Better::LowerOnDisk,
            value: |d| d.io.write_amplification_with_settle,
            show: ratio,
        },
        Column {
            title: "settle after load (s)",
            better: Better::None,
            value: |d| Some(d.settle.after_load.seconds),
            show: seconds,
        },
        Column {
            title: "written settling after load (MiB)",
            better: Better::None,
            value: |d| settle_mib(&d.settle.after_load),
            show: mebibytes,
        },
        Column {
            title: "settle after run (s)",
            better: Better::None,
            value: |d| Some(d.settle.after_run.seconds),
            show: seconds,
        },
        Column {
            title: "device read per get (B)",
            better: Better::None,
            value: |d| d.io.device_read_bytes_per_get,
            show: |v| format!("{v:.0}"),
        },
    ]
}

/// A last column shown as is: its title and its text per document.
type ExtraColumn = (&'static str, fn(&ResultDocument) -> String);

/// One Markdown table of `columns`, best value per column in bold.
fn table(documents: &[ResultDocument], columns: &[Column], extra: Option<ExtraColumn>) -> String {
    let mut out = String::from("| engine |");
    for c in columns {
        let _ = write!(out, " {} |", c.title);
    }
    if let Some((title, _)) = extra {
        let _ = write!(out, " {title} |");
    }
    out.push_str("\n|---|");
    for _ in columns {
        out.push_str("---:|");
    }
    if extra.is_some() {
        out.push_str("---:|");
    }
    out.push('\n');
    let eligible = |c: &Column, d: &ResultDocument| {
        c.better != Better::LowerOnDisk || d.storage.allocated_bytes.is_some()
    };
    let best: Vec<Option<f64>> = columns
        .iter()
        .map(|c| {
            let candidates = documents
                .iter()
                .filter(|d| eligible(c, d))
                .filter_map(|d| (c.value)(d));
            match c.better {
                Better::Higher => candidates.reduce(f64::max),
                Better::Lower | Better::LowerOnDisk => candidates.reduce(f64::min),
                Better::None => None,
            }
        })
        .collect();
    for doc in documents {
        let _ = write!(out, "| {} |", display_name(doc));
        for (c, best) in columns.iter().zip(&best) {
            match (c.value)(doc) {
                Some(v)
                    if eligible(c, doc)
                        && documents.len() > 1
                        && best.is_some_and(|b| (c.show)(b) == (c.show)(v)) =>
                {
                    let _ = write!(out, " **{}** |", (c.show)(v));
                }
                Some(v) => {
                    let _ = write!(out, " {} |", (c.show)(v));
                }
                None => out.push_str(" n/a |"),
            }
        }
        if let Some((_, value)) = extra {
            let _ = write!(out, " {} |", value(doc));
        }
        out.push('\n');
    }
    out
}

/// Start lag of open-loop runs: how late the harness started requests.
fn start_lag_table(documents: &[ResultDocument]) -> String {
    let lagged: Vec<_> = documents
        .iter()
        .filter_map(|d| d.start_lag.as_ref().map(|l| (d, l)))
        .collect();
    if lagged.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nStart lag (open loop): how long after its intended start each request actually began. \
         It is part of every latency above (measured from the intended start); a lag near the latency \
         means the harness, not the engine, was late.\n\n\
         | engine | p50 | p90 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for (doc, lag) in lagged {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            display_name(doc),
            format_nanos(lag.p50_ns),
            format_nanos(lag.p90_ns),
            format_nanos(lag.p99_ns),
            format_nanos(lag.p999_ns),
            format_nanos(lag.max_ns)
        );
    }
    out
}

/// The Markdown tables of one workload, best value per column in bold.
pub fn summary_table(documents: &[ResultDocument]) -> String {
    fn syncs(doc: &ResultDocument) -> String {
        doc.run.syncs.to_string()
    }
    let mut out = table(documents, &columns(), Some(("syncs", syncs)));
    out.push_str(
        "\nLatencies are over all operation types, measured after the warm-up.\n\n\
         State after the run, once settled:\n\n",
    );
    out.push_str(&table(documents, &state_columns(), None));
    out.push_str(
        "\nSpace amp. = blocks allocated on disk / live key+value bytes; the apparent size (file lengths) is \
         beside it. Write amp. (run) = bytes this process caused to be written during the run phase, as Linux's \
         /proc/self/io write_bytes counts them (pages dirtied in the page cache, engine background threads \
         included; not the bytes the device received) / key+value bytes the run wrote; (+ settle) adds what the settle after \
         the run wrote (compaction debt the run left). Settling (flush, wait for compactions) is not part of \
         the run. Device read per get = bytes read from the device during the run phase / point reads.\n",
    );
    out.push_str(&start_lag_table(documents));
    out.push_str(&per_operation_table(documents));
    out.push_str(&replication_table(documents));
    out
}

/// WAL fsyncs per acknowledged write of replicated targets, next to the
/// machine's calibrated fdatasync; empty when no document has them.
fn replication_table(documents: &[ResultDocument]) -> String {
    let replicated: Vec<_> = documents
        .iter()
        .filter_map(|d| d.replication.as_ref().map(|r| (d, r)))
        .collect();
    if replicated.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "
Replication (run phase, warm-up included):\n\n\
         | target | acknowledged writes | WAL fsyncs per write (leader) | WAL fsyncs per write (cluster) \
         | leader mean WAL fdatasync | calibrated fdatasync p50 |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let ratio = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    for (doc, r) in replicated {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            doc.target.name,
            r.acknowledged_writes,
            ratio(r.leader_fsyncs_per_write),
            ratio(r.cluster_fsyncs_per_write),
            r.leader_mean_wal_fdatasync_ns
                .map_or("n/a".to_string(), |ns| format_nanos(ns as u64)),
            format_nanos(doc.machine.fdatasync.p50_ns),
        );
    }
    out
}

/// p50 and p99 per operation type, per engine.
fn per_operation_table(documents: &[ResultDocument]) -> String {
    let mut kinds: Vec<&String> = documents.iter().flat_map(|d| d.operations.keys()).collect();
    kinds.sort();
    kinds.dedup();
    if kinds.len() < 2 {
        return String::new();
    }
    let mut out = String::from("\nBy operation (p50 / p99):\n\n| engine |");
    for k in &kinds {
        let _ = write!(out, " {k} |");
    }
    out.push_str("\n|---|");
    for _ in &kinds {
        out.push_str("---:|");
    }
    out.push('\n');
    for doc in documents {
        let _ = write!(out, "| {} |", display_name(doc));
        for k in &kinds {
            match doc.operations.get(*k) {
                Some(s) => {
                    let _ = write!(
                        out,
                        " {} / {} |",
                        format_nanos(s.p50_ns),
                        format_nanos(s.p99_ns)
                    );
                }
                None => out.push_str(" n/a |"),
            }
        }
        out.push('\n');
    }
    out
}

fn index_markdown(
    run_dir: &Path,
    workloads: &std::collections::BTreeMap<String, Vec<ResultDocument>>,
    machine: Option<&Machine>,
) -> String {
    let run = run_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("run");
    let mut out = format!("# Benchmark run `{run}`\n\n");
    if let Some(first) = workloads.values().next().and_then(|d| d.first()) {
        let _ = writeln!(
            out,
            "Started {} (UTC), harness {}.\n",
            first.started_at, first.harness.version
        );
    }
    if let Some(m) = machine {
        out.push_str("## Machine\n\n| | |\n|---|---|\n");
        let _ = writeln!(out, "| CPU | {} ({} cores) |", m.cpu_model, m.cores);
        let _ = writeln!(
            out,
            "| memory | {:.1} GiB |",
            m.memory_bytes as f64 / (1u64 << 30) as f64
        );
        let _ = writeln!(out, "| kernel | Linux {} |", m.kernel);
        let _ = writeln!(
            out,
            "| data directory | {} on {} ({}, mounted at {}) |",
            m.data_dir.display(),
            m.filesystem.fs_type,
            m.filesystem.device,
            m.filesystem.mount_point
        );
        let _ = writeln!(
            out,
            "| 4 KiB write + fdatasync | p50 {}, p99 {}, max {} ({} rounds) |\n",
            format_nanos(m.fdatasync.p50_ns),
            format_nanos(m.fdatasync.p99_ns),
            format_nanos(m.fdatasync.max_ns),
            m.fdatasync.rounds
        );
        let _ = writeln!(out, "Calibration: [{MACHINE_FILE}]({MACHINE_FILE}).\n");
    }
    for (workload, documents) in workloads {
        let _ = writeln!(out, "## {workload}\n");
        out.push_str(&settings_block(documents));
        out.push('\n');
        out.push_str(&summary_table(documents));
        out.push('\n');
        for plot in plots_for(documents) {
            let title = plot.trim_end_matches(".svg");
            let _ = writeln!(out, "![{workload} {title}]({workload}/{plot})\n");
        }
        let links: Vec<String> = documents
            .iter()
            .map(|d| format!("[{0}]({1}/{0}.json)", d.target.name, workload))
            .collect();
        let _ = writeln!(out, "Result documents: {}.\n", links.join(", "));
    }
    out
}
