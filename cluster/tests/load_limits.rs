//! Issue 9, items 6 and 9, with real processes: linearizable reads share
//! ReadIndex rounds, and a client that sends half a header is cut off.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Cluster, Paused, followers, put_retrying};

/// With the followers stopped no ReadIndex round can complete, so every
/// read waits; 100 concurrent reads must cost a handful of rounds (the
/// first, then one re-issue per 500 ms), not one round each (nor one per
/// read per tick). When the followers resume, every read is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_cost_a_bounded_number_of_read_index_rounds() {
    let cluster = Cluster::start(3, "memory", &["--election-ticks", "60"]).await;
    let leader = cluster.wait_leader().await;
    put_retrying(&cluster.client(), "k", "v").await;
    let before = cluster.status(leader).await.unwrap().read_index_rounds;

    let paused = Paused::pause(&cluster, followers(&cluster, leader));
    let started = Instant::now();
    let reads: Vec<_> = (0..100)
        .map(|_| {
            let client = cluster.client_of(leader).with_retry(Duration::ZERO);
            tokio::spawn(async move { client.get(b"k").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rounds = cluster.status(leader).await.unwrap().read_index_rounds - before;
    let elapsed = started.elapsed();
    paused.resume();
    // One round for the first batch, at most one more per 500 ms since,
    // and slack for reads that arrived after the first round left.
    let bound = 3 + elapsed.as_millis() as u64 / 500;
    assert!(
        rounds <= bound,
        "100 reads cost {rounds} read-index rounds in {elapsed:?} (bound {bound})"
    );
    for read in reads {
        let value = read.await.unwrap().expect("read after the resume");
        assert_eq!(value.as_deref(), Some(&b"v"[..]));
    }
}

/// A connection that sends half a request header is closed once the
/// header read timeout passes (slowloris), with no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_sending_half_a_header_is_closed() {
    let cluster = Cluster::start(1, "memory", &["--header-read-timeout-ms", "500"]).await;
    let address = cluster.node(1).client.clone();
    let started = Instant::now();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .unwrap();
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    assert!(
        outcome.is_ok(),
        "the connection was still open after {elapsed:?}: {outcome:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "closed only after {elapsed:?}"
    );
}
