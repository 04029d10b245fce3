//! `/metrics` with real processes: a 3-node cluster's metrics, and a real
//! Prometheus (Debian's `prometheus` package, installed by `just setup`)
//! scraping all three nodes and answering a query about them.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Cluster, eventually, free_port, put_retrying};

const FAST: &[&str] = &["--tick-ms", "50"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_etcd_named_metrics() {
    let cluster = Cluster::start(3, "redb", FAST).await;
    let client = cluster.client();
    for i in 0..5 {
        put_retrying(&client, &format!("k{i}"), "v").await;
    }
    let leader = cluster.wait_leader().await;
    let (status, text) = cluster.get_text(leader, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let value = |series: &str| {
        common::metric_value(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"))
    };
    assert_eq!(value("etcd_server_has_leader"), 1.0);
    assert_eq!(value("etcd_server_is_leader"), 1.0);
    assert!(value("etcd_server_leader_changes_seen_total") >= 1.0);
    assert!(value("etcd_server_proposals_committed_total") >= 5.0);
    assert!(value("etcd_server_proposals_applied_total") >= 5.0);
    assert!(value("metcd_applied_index") >= 5.0);
    assert_eq!(value("etcd_server_proposals_pending"), 0.0);
    assert!(value("etcd_disk_wal_fsync_duration_seconds_count") >= 1.0);
    assert_eq!(
        value("etcd_disk_wal_fsync_duration_seconds_count"),
        value("etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"}")
    );
    assert!(value("etcd_disk_backend_commit_duration_seconds_count") >= 1.0);
    assert!(value("metcd_wal_fsyncs_total") >= 1.0);
    for peer in (1..=3).filter(|id| *id != leader) {
        assert!(
            value(&format!(
                "etcd_network_peer_sent_bytes_total{{To=\"{peer}\"}}"
            )) > 0.0
        );
        assert!(
            value(&format!(
                "etcd_network_peer_received_bytes_total{{From=\"{peer}\"}}"
            )) > 0.0
        );
    }
    assert!(text.contains("metcd_server_info{cluster_id=\""), "{text}");
    assert!(text.contains("engine=\"redb\"} 1"), "{text}");
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    assert_eq!(
        cluster.metric(follower, "etcd_server_is_leader").await,
        Some(0.0)
    );
    assert_eq!(
        cluster.metric(follower, "etcd_server_has_leader").await,
        Some(1.0)
    );
}

/// `prometheus` on PATH, or a failure that says how to install it.
fn prometheus_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the `prometheus` binary is not on PATH; this test runs a real Prometheus: \
                 run `just setup` (it installs Debian's prometheus package)"
            )
        })
}

/// A Prometheus process, killed on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Percent-encodes a PromQL query for a URL.
fn encode_query(query: &str) -> String {
    query
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The single value of an instant query, if Prometheus has one.
async fn query(client: &cluster::Client, endpoint: &str, promql: &str) -> Option<f64> {
    let path = format!("/api/v1/query?query={}", encode_query(promql));
    let response = client
        .request_to(endpoint, hyper::Method::GET, &path, bytes::Bytes::new())
        .await
        .ok()?;
    let body: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
    let result = body["data"]["result"].as_array()?;
    let [sample] = result.as_slice() else {
        return None;
    };
    sample["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_all_three_nodes() {
    let binary = prometheus_binary();
    let cluster = Cluster::start(3, "memory", FAST).await;
    put_retrying(&cluster.client(), "k", "v").await;

    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("'{}'", n.client))
        .collect();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: metcd\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Prometheus(
        Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let client = cluster::Client::new(&[web.as_str()])
        .unwrap()
        .with_timeout(Duration::from_secs(1));
    let prometheus_log =
        || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    // Bounded: about 15 s for Prometheus to start and scrape twice.
    let answered = async {
        eventually(
            "Prometheus to scrape all three nodes as up",
            150,
            || async {
                let up = query(&client, &web, "count(up{job=\"metcd\"} == 1)").await?;
                (up == 3.0).then_some(())
            },
        )
        .await;
        eventually("sum(etcd_server_has_leader) == 3", 50, || async {
            let leaders = query(&client, &web, "sum(etcd_server_has_leader)").await?;
            (leaders == 3.0).then_some(())
        })
        .await;
    };
    if tokio::time::timeout(Duration::from_secs(25), answered)
        .await
        .is_err()
    {
        panic!(
            "Prometheus did not answer in time; its log:\n{}",
            prometheus_log()
        );
    }
    let leaders = query(&client, &web, "sum(etcd_server_is_leader)").await;
    assert_eq!(leaders, Some(1.0), "{}", prometheus_log());
}
