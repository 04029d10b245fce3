//! End to end: the `workbench` binary on the memory engine, a tiny run that
//! must produce the whole run directory; and bad input that must fail early
//! with messages that say what is accepted.

use std::path::Path;
use std::process::Command;

use workloads::results::{ResultDocument, SCHEMA_VERSION};
use workloads::spec::WorkloadSpec;

fn workbench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_workbench"))
}

fn specs_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/specs"))
}

#[test]
fn tiny_memory_run_writes_json_tables_and_four_plots() {
    let out = tempfile::tempdir().unwrap();
    let run_dir = out.path().join("run");
    let data = tempfile::tempdir().unwrap();
    let status = workbench()
        .args(["run", "read-heavy,ycsb-e", "--engines", "memory"])
        .args([
            "--records",
            "2000",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--threads",
            "2",
            // The temporary directory may be on tmpfs; this test checks
            // the output, not durability.
            "--allow-tmpfs",
        ])
        .arg("--out")
        .arg(&run_dir)
        .arg("--data-dir")
        .arg(data.path())
        .status()
        .unwrap();
    assert!(status.success());

    assert!(run_dir.join("machine.json").is_file());
    let index = std::fs::read_to_string(run_dir.join("index.md")).unwrap();
    assert!(
        index.contains("read-heavy/latency.svg") && index.contains("fdatasync"),
        "{index}"
    );
    for workload in ["read-heavy", "ycsb-e"] {
        let dir = run_dir.join(workload);
        let doc = ResultDocument::read(&dir.join("memory.json")).unwrap();
        assert_eq!(doc.schema_version, SCHEMA_VERSION);
        assert_eq!(doc.workload, workload);
        assert_eq!(doc.target.name, "memory");
        assert!(doc.run.operations > 0 && doc.run.throughput_ops_per_sec > 0.0);
        assert!(!doc.timeline.is_empty());
        assert_eq!(doc.spec.record_count, 2000);
        assert!(doc.durability.description.contains("batched"));
        assert!(doc.durability.sync_primitive.contains("none"));
        assert!(doc.settle.after_load.quiet && doc.settle.after_run.quiet);
        assert!(doc.storage.keys >= 2000, "records at the end");
        assert!(!doc.run.capped);
        assert!(doc.memory.data_set_to_memory.is_some_and(|r| r > 0.0));
        let mut summaries = vec![&doc.overall];
        summaries.extend(doc.operations.values());
        for s in summaries {
            let p = s.percentiles();
            for pair in p.windows(2) {
                assert!(pair[0].1 <= pair[1].1, "percentiles not monotonic: {p:?}");
            }
            assert!(s.min_ns <= s.p50_ns && s.mean_ns <= s.max_ns as f64);
            assert_eq!(s.decode().unwrap().len(), s.count);
        }
        let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
        assert!(
            summary.contains("| memory |")
                && summary.contains("records at end")
                && summary.contains("settle after load")
                && summary.contains("disk allocated")
                && summary.contains("Sync primitive")
                && summary.contains("Data set vs memory"),
            "{summary}"
        );
        for plot in workloads::plots::PLOT_FILES {
            let svg = std::fs::read_to_string(dir.join(plot)).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{plot} is not an SVG"
            );
            assert!(svg.contains("memory"), "{plot} has no legend entry");
            assert_well_formed(&svg, plot);
        }
    }

    // `plot` redraws from the JSON alone.
    std::fs::remove_file(run_dir.join("ycsb-e/latency.svg")).unwrap();
    let status = workbench().arg("plot").arg(&run_dir).status().unwrap();
    assert!(status.success());
    assert!(run_dir.join("ycsb-e/latency.svg").is_file());
    // The engine's temporary directories are gone.
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}

/// Every opened tag is closed in order: enough to catch truncated or
/// garbled output without an XML parser.
fn assert_well_formed(svg: &str, name: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        let end = rest[start..]
            .find('>')
            .map(|e| start + e)
            .unwrap_or_else(|| panic!("{name}: unclosed tag"));
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        if let Some(closing) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(closing.trim()),
                "{name}: mismatched </{closing}>"
            );
        } else {
            stack.push(tag.split_whitespace().next().unwrap_or("").to_string());
        }
    }
    assert!(stack.is_empty(), "{name}: unclosed {stack:?}");
}

#[test]
fn unwritable_results_directory_fails_before_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let data = tempfile::tempdir().unwrap();
    let output = workbench()
        .args([
            "run",
            "ycsb-c",
            "--engines",
            "memory",
            "--records",
            "10",
            "--operations",
            "10",
        ])
        .arg("--out")
        .arg(file.join("run"))
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not writable"), "{stderr}");
    // Failed before calibration or any run: nothing was created.
    assert!(!stderr.contains("machine:"), "{stderr}");
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}

#[test]
fn unknown_workload_and_engine_name_the_valid_ones() {
    let output = workbench()
        .args(["run", "ycsb-q", "--engines", "memory"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ycsb-q") && stderr.contains("read-heavy") && stderr.contains("ycsb-f"),
        "{stderr}"
    );

    let output = workbench()
        .args(["run", "ycsb-a", "--engines", "lmdb"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("lmdb") && stderr.contains("rocksdb") && stderr.contains("bitcask"),
        "{stderr}"
    );
}

#[test]
fn every_toml_spec_in_the_specs_directory_parses() {
    let mut count = 0;
    for entry in std::fs::read_dir(specs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let spec = WorkloadSpec::from_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                Some(spec.name.as_str()),
                path.file_stem().and_then(|s| s.to_str())
            );
            count += 1;
        }
    }
    assert_eq!(count, workloads::spec::built_in_names().len());
}

#[test]
fn the_sample_ycsb_property_file_runs_unchanged() {
    let spec = WorkloadSpec::from_file(&specs_dir().join("ycsb/workloada")).unwrap();
    assert_eq!(spec.name, "workloada");
    assert_eq!(spec.record_count, 10_000);
    assert_eq!(spec.operation_count, Some(100_000));
    assert_eq!((spec.mix.read, spec.mix.update), (0.5, 0.5));
    assert_eq!(
        spec.distribution,
        workloads::spec::DistributionKind::Zipfian
    );
    assert_eq!(spec.value_size, 1000);
    assert!(
        spec.description
            .contains("ignored: readallfields, workload"),
        "{}",
        spec.description
    );

    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let status = workbench()
        .arg("run")
        .arg(specs_dir().join("ycsb/workloada"))
        .args([
            "--engines",
            "memory",
            "--records",
            "500",
            "--operations",
            "2000",
            "--allow-tmpfs",
        ])
        .arg("--out")
        .arg(out.path())
        .arg("--data-dir")
        .arg(data.path())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(out.path().join("workloada/memory.json").is_file());
}

#[test]
fn ycsb_properties_map_and_reject_what_they_cannot_run() {
    let text = "recordcount=500\noperationcount=100\nreadproportion=0.95\nupdateproportion=0\n\
                scanproportion=0\ninsertproportion=0.05\nrequestdistribution=latest\nfieldcount=4\nfieldlength=25\n";
    let spec = WorkloadSpec::from_ycsb_properties(text, "wd", "wd").unwrap();
    assert_eq!(spec.value_size, 100);
    assert_eq!(spec.distribution, workloads::spec::DistributionKind::Latest);
    assert_eq!(spec.mix.insert, 0.05);

    let spec = WorkloadSpec::from_ycsb_properties(
        "requestdistribution=hotspot\nhotspotdatafraction=0.1\nhotspotopnfraction=0.9\nmaxexecutiontime=30\n",
        "wh",
        "wh",
    )
    .unwrap();
    assert_eq!(
        spec.distribution,
        workloads::spec::DistributionKind::Hotspot
    );
    assert_eq!(
        (spec.hotspot_data_fraction, spec.hotspot_op_fraction),
        (0.1, 0.9)
    );
    assert_eq!(spec.time_cap_secs, Some(30.0));

    let err =
        WorkloadSpec::from_ycsb_properties("requestdistribution=exponential\n", "myworkload", "w")
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("myworkload")
            && err.contains("requestdistribution")
            && err.contains("uniform, zipfian, latest, hotspot"),
        "{err}"
    );
    let err = WorkloadSpec::from_ycsb_properties("recordcount=lots\n", "f", "w")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("recordcount") && err.contains("integer"),
        "{err}"
    );
}

#[test]
fn malformed_toml_spec_names_file_field_and_accepted_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    std::fs::write(
        &path,
        "distribution = \"zipf\"\nrecord_count = 10\noperation_count = 10\nvalue_size = 10\n[mix]\nread = 1.0\n",
    )
    .unwrap();
    let err = WorkloadSpec::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("mine.toml"), "{err}");
    assert!(err.contains("distribution"), "{err}");
    assert!(err.contains("uniform") && err.contains("latest"), "{err}");

    std::fs::write(
        &path,
        "distribution = \"uniform\"\nrecord_count = 10\noperation_count = 10\nvalue_size = 10\nthreds = 4\n[mix]\nread = 1.0\n",
    )
    .unwrap();
    let err = WorkloadSpec::from_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("mine.toml") && err.contains("threds") && err.contains("threads"),
        "{err}"
    );

    std::fs::write(
        &path,
        "distribution = \"uniform\"\nrecord_count = 10\noperation_count = 10\nvalue_size = 10\nkey_size = 8\n[mix]\nread = 1.0\n",
    )
    .unwrap();
    let err = WorkloadSpec::from_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("mine.toml") && err.contains("key_size") && err.contains("24"),
        "{err}"
    );

    // Through the binary, too.
    let output = workbench()
        .arg("run")
        .arg(&path)
        .args(["--engines", "memory"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("key_size"));
}

#[test]
fn a_count_bound_run_warms_up_by_operations_not_seconds() {
    let output = workbench()
        .args(["run", "ycsb-c", "--engines", "memory", "--warmup", "2"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warmup_secs") && stderr.contains("--warmup-ops"),
        "{stderr}"
    );
}

#[test]
fn a_memory_limited_run_isolates_the_engine_or_says_why_it_cannot() {
    // A small memory-limited spec: 20,000 records of 1 KB (about 20 MiB)
    // under a 24 MiB limit.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("tiny-large.toml");
    std::fs::write(
        &spec,
        "distribution = \"uniform\"\nrecord_count = 20000\noperation_count = 2000\nvalue_size = 1000\n\
         memory_limit_mib = 24\nthreads = 1\ndurability = \"none\"\n[mix]\nread = 1.0\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let data = tempfile::tempdir().unwrap();
    let output = workbench()
        .arg("run")
        .arg(&spec)
        .args(["--engines", "memory,bitcask"])
        .arg("--out")
        .arg(&out)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        // The memory engine was skipped; bitcask ran inside the cgroup.
        assert!(stderr.contains("skipped"), "{stderr}");
        assert!(!out.join("tiny-large/memory.json").exists());
        let doc = ResultDocument::read(&out.join("tiny-large/bitcask.json")).unwrap();
        let limit = doc.memory.limit.expect("the limit is recorded");
        assert_eq!(limit.limit_bytes, 24 << 20);
        assert!(limit.mechanism.contains("cgroup"));
        assert!(doc.io.device_read_bytes_per_get.is_some());
        assert!(out.join("tiny-large/device-reads.svg").is_file());
        let summary = std::fs::read_to_string(out.join("tiny-large/summary.md")).unwrap();
        assert!(summary.contains("device read per get"), "{summary}");
    } else {
        // No cgroup here: a clear refusal, not a run that silently caches.
        assert!(
            stderr.contains("memory limit") && stderr.contains("cgroup"),
            "{stderr}"
        );
    }
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}
