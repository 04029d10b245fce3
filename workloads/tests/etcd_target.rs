//! The etcd v3 target against a real etcd: `workbench run --target etcd-v3`
//! drives a single-member etcd 3.4 (Debian's `etcd-server`, installed by
//! `just setup`, started here on loopback) through reads, updates, inserts
//! and scans (YCSB A and E), writes the usual result documents, and reads
//! etcd's WAL fsyncs from its `/metrics`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use workloads::results::ResultDocument;

struct Etcd {
    child: Child,
    client: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn start_etcd() -> Etcd {
    let etcd = PathBuf::from("/usr/bin/etcd");
    assert!(
        etcd.is_file(),
        "/usr/bin/etcd is missing: `just setup` installs Debian's etcd-server"
    );
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(etcd)
        .args(["--name", "e1", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("e1={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let etcd = Etcd {
        child,
        client: format!("127.0.0.1:{client}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&etcd.client).is_err() {
        assert!(Instant::now() < deadline, "etcd did not listen in 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    etcd
}

#[test]
fn workbench_drives_a_real_etcd_through_the_v3_api() {
    let etcd = start_etcd();
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_workbench"))
        .args([
            "run",
            "ycsb-a,ycsb-e",
            "--target",
            "etcd-v3",
            "--name",
            "etcd",
        ])
        .args(["--endpoints", &etcd.client])
        .args([
            "--records",
            "300",
            "--operations",
            "400",
            "--warmup-ops",
            "0",
            "--threads",
            "2",
        ])
        .arg("--allow-tmpfs")
        .arg("--out")
        .arg(out.path())
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "workbench failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for workload in ["ycsb-a", "ycsb-e"] {
        let path = out.path().join(workload).join("etcd.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: ResultDocument = serde_json::from_str(&text).unwrap();
        assert_eq!(doc.target.name, "etcd");
        assert!(
            doc.target.description.contains("v3 gRPC API"),
            "{}",
            doc.target.description
        );
        assert_eq!(doc.run.operations, 400, "{workload}");
        let replication = doc.replication.expect("WAL fsyncs read from /metrics");
        assert!(
            replication.acknowledged_writes > 0,
            "{workload}: {replication:?}"
        );
        assert!(
            replication.cluster_wal_fsyncs > 0,
            "{workload}: {replication:?}"
        );
        assert_eq!(replication.leader_id, 1, "the single member leads");
    }
}

/// `workbench watch` against etcd: every watcher gets every event (the run
/// fails otherwise), and the report and the table are written.
#[test]
fn workbench_watch_measures_a_real_etcd() {
    let etcd = start_etcd();
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_workbench"))
        .args(["watch", "--name", "etcd", "--endpoints", &etcd.client])
        .args(["--watchers", "1,150", "--events", "50", "--writers", "4"])
        .args(["--rate", "100", "--seconds", "1", "--leases", "2"])
        .arg("--out")
        .arg(out.path())
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "workbench watch failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(out.path().join("etcd.json")).unwrap();
    let report: workloads::watch_bench::WatchBenchReport = serde_json::from_str(&text).unwrap();
    assert_eq!(report.fan_out.len(), 2);
    assert_eq!(
        report.fan_out[1].streams, 2,
        "150 watchers need two streams of at most 100"
    );
    assert!(report.fan_out.iter().all(|f| f.events_per_sec > 0.0));
    assert_eq!(report.latency.events, 100);
    assert!(report.keepalive.keepalives > 0);
    let table = std::fs::read_to_string(out.path().join("watch.md")).unwrap();
    assert!(table.contains("| etcd | 150 |"), "{table}");
}

/// `workbench vs-etcd` end to end on a tiny scale: a fresh etcd and a fresh
/// metcd (memory engine), one round, two cases; every document, the median
/// copies and the side-by-side table are written, and no server is left.
#[test]
fn vs_etcd_runs_both_systems_one_after_the_other() {
    let metcd = std::path::Path::new(env!("CARGO_BIN_EXE_workbench")).with_file_name("metcd");
    assert!(
        metcd.is_file(),
        "{} is missing: build it with `cargo build --release -p cluster`",
        metcd.display()
    );
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_workbench"))
        .args(["vs-etcd", "--engines", "memory", "--rounds", "1"])
        .args(["--seconds", "0.5", "--warmup", "0", "--keys", "200"])
        .args(["--cases", "put-1,range-l-1"])
        .arg("--out")
        .arg(out.path())
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "workbench vs-etcd failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for case in ["put-1", "range-l-1"] {
        for system in ["etcd", "metcd-memory"] {
            let doc = out.path().join(case).join(format!("{system}.json"));
            assert!(doc.is_file(), "{} missing", doc.display());
            assert!(
                out.path()
                    .join(case)
                    .join("rounds")
                    .join(format!("{system}-r1.json"))
                    .is_file()
            );
        }
    }
    let table = std::fs::read_to_string(out.path().join("vs-etcd.md")).unwrap();
    assert!(table.contains("| put-1 | metcd-memory |"), "{table}");
    let put: ResultDocument = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("put-1").join("etcd.json")).unwrap(),
    )
    .unwrap();
    let replication = put.replication.expect("fsyncs and CPU of etcd's members");
    assert!(
        replication.cpu_seconds.is_some_and(|c| c > 0.0),
        "{replication:?}"
    );
    let leftover: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&*data.path().to_string_lossy()))
        .collect();
    assert!(leftover.is_empty(), "servers left running: {leftover:?}");
}
