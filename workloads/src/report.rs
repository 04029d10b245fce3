//! Markdown reports of a run directory: `<workload>/summary.md` and the run's
//! `index.md`, rebuilt, with the plots, from the JSON documents alone.
//!
//! In every table the best value of each column is in bold: the highest
//! throughput, the lowest latencies and the lowest amplifications. The
//! amplification columns compare only targets with files on disk (the
//! memory engine's zero would otherwise always win).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::machine::{Machine, format_nanos};
use crate::plots::{PLOT_FILES, draw_workload};
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
            settings_block(&documents[0]),
            summary_table(documents)
        );
        let path = dir.join("summary.md");
        fs::write(&path, summary).context(|| format!("cannot write {}", path.display()))?;
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

fn settings_block(doc: &ResultDocument) -> String {
    format!(
        "{}\n\n* Settings: {}\n* Durability: {}\n* Machine: {}\n",
        doc.spec.description,
        doc.spec.settings_line_with(&doc.durability.description),
        doc.durability.description,
        doc.machine.summary()
    )
}

/// Which way a column is better.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
    /// Lower, among targets with files on disk only.
    LowerOnDisk,
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
        Column {
            title: "disk (MiB)",
            better: Better::LowerOnDisk,
            value: |d| d.storage.disk_bytes.map(|b| b as f64 / (1u64 << 20) as f64),
            show: |v| format!("{v:.1}"),
        },
        Column {
            title: "space amp.",
            better: Better::LowerOnDisk,
            value: |d| d.storage.space_amplification,
            show: |v| format!("{v:.2}"),
        },
        Column {
            title: "write amp.",
            better: Better::LowerOnDisk,
            value: |d| d.io.write_amplification,
            show: |v| format!("{v:.2}"),
        },
    ]
}

/// The Markdown table of one workload, best value per column in bold.
pub fn summary_table(documents: &[ResultDocument]) -> String {
    let columns = columns();
    let mut out = String::from("| engine |");
    for c in &columns {
        let _ = write!(out, " {} |", c.title);
    }
    out.push_str(" syncs |\n|---|");
    for _ in &columns {
        out.push_str("---:|");
    }
    out.push_str("---:|\n");
    let best: Vec<Option<f64>> = columns
        .iter()
        .map(|c| {
            let candidates = documents
                .iter()
                .filter(|d| c.better != Better::LowerOnDisk || d.storage.disk_bytes.is_some())
                .filter_map(|d| (c.value)(d));
            match c.better {
                Better::Higher => candidates.reduce(f64::max),
                Better::Lower | Better::LowerOnDisk => candidates.reduce(f64::min),
            }
        })
        .collect();
    for doc in documents {
        let _ = write!(out, "| {} |", doc.target.name);
        for (c, best) in columns.iter().zip(&best) {
            let eligible = c.better != Better::LowerOnDisk || doc.storage.disk_bytes.is_some();
            match (c.value)(doc) {
                Some(v) if eligible && best.is_some_and(|b| (c.show)(b) == (c.show)(v)) => {
                    let _ = write!(out, " **{}** |", (c.show)(v));
                }
                Some(v) => {
                    let _ = write!(out, " {} |", (c.show)(v));
                }
                None => out.push_str(" n/a |"),
            }
        }
        let _ = writeln!(out, " {} |", doc.run.syncs);
    }
    out.push_str(
        "\nLatencies are over all operation types, measured after the warm-up. \
         Space amp. = bytes on disk / live key+value bytes after the run; \
         write amp. = bytes this process wrote to the device during the run phase \
         (engine background threads included) / key+value bytes written by the run phase.\n",
    );
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
        let _ = write!(out, "| {} |", doc.target.name);
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
        out.push_str(&settings_block(&documents[0]));
        out.push('\n');
        out.push_str(&summary_table(documents));
        out.push('\n');
        for plot in PLOT_FILES {
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
