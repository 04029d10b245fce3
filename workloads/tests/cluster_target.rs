//! The metcd cluster as a workload target, end to end: `workbench run
//! --target cluster --spawn-cluster memory` starts three real `metcd`
//! processes on 127.0.0.1, runs a count-bound spec through them, writes the
//! usual result document, and leaves no process behind.
//!
//! The `metcd` binary must sit next to `workbench`. `cargo test --workspace`
//! builds every binary of the workspace; `cargo test -p workloads` alone does
//! not, so these tests fail with a message saying how to build it rather
//! than skip silently.

use std::path::{Path, PathBuf};
use std::process::Command;

use workloads::results::ResultDocument;

fn workbench() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_workbench"))
}

fn require_metcd() {
    let metcd = workbench().with_file_name(format!("metcd{}", std::env::consts::EXE_SUFFIX));
    assert!(
        metcd.is_file(),
        "{} is missing: build it with `cargo build --release -p cluster` \
         (or run `cargo test --release --workspace`, which builds every binary)",
        metcd.display()
    );
}

/// Processes whose command line mentions `dir` (the spawned nodes' data
/// directories live under it).
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("metcd") && cmdline.contains(&needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

fn run_workbench(args: &[&str], out: &Path, data: &Path) -> std::process::Output {
    Command::new(workbench())
        .arg("run")
        .args(args)
        // The temporary directory may be on tmpfs; these tests check the
        // cluster target, not durability.
        .arg("--allow-tmpfs")
        .arg("--out")
        .arg(out)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

#[test]
fn spawned_cluster_runs_a_put_workload_and_stops() {
    require_metcd();
    let temp = tempfile::tempdir().unwrap();
    let (out, data) = (temp.path().join("out"), temp.path().join("data"));
    let output = run_workbench(
        &[
            "cluster-put-1",
            "--target",
            "cluster",
            "--spawn-cluster",
            "memory",
            "--operations",
            "200",
            "--warmup",
            "0",
            "--records",
            "50",
            "--threads",
            "4",
        ],
        &out,
        &data,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "workbench failed:\n{stderr}");

    let document = ResultDocument::read(&out.join("cluster-put-1/metcd-memory.json")).unwrap();
    assert_eq!(document.target.name, "metcd-memory");
    assert_eq!(document.run.operations, 200);
    assert!(
        document
            .durability
            .description
            .starts_with("raft-wal-fsync")
    );
    let replication = document.replication.expect("replication counters");
    assert_eq!(replication.acknowledged_writes, 200);
    assert_eq!(replication.members.len(), 3);
    assert!(replication.leader_id > 0);
    assert!(replication.leader_fsyncs_per_write.unwrap() > 0.0);
    assert!(
        replication.cluster_fsyncs_per_write.unwrap()
            >= replication.leader_fsyncs_per_write.unwrap()
    );
    let percentiles = document.overall.percentiles();
    for pair in percentiles.windows(2) {
        assert!(pair[0].1 <= pair[1].1, "not monotonic: {percentiles:?}");
    }
    assert!(out.join("cluster-put-1/summary.md").is_file());
    assert!(
        processes_using(&data).is_empty(),
        "{:?}",
        processes_using(&data)
    );
}

#[test]
fn scans_are_refused_and_the_cluster_still_stops() {
    require_metcd();
    let temp = tempfile::tempdir().unwrap();
    let (out, data) = (temp.path().join("out"), temp.path().join("data"));
    let output = run_workbench(
        &[
            "ycsb-e",
            "--target",
            "cluster",
            "--spawn-cluster",
            "memory",
            "--operations",
            "10",
            "--records",
            "10",
        ],
        &out,
        &data,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("single-key requests"), "{stderr}");
    assert!(
        processes_using(&data).is_empty(),
        "{:?}",
        processes_using(&data)
    );
}

#[test]
fn cluster_target_needs_endpoints_or_spawn() {
    let temp = tempfile::tempdir().unwrap();
    let output = run_workbench(
        &["cluster-put-1", "--target", "cluster"],
        &temp.path().join("out"),
        &temp.path().join("data"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--spawn-cluster"), "{stderr}");
}
