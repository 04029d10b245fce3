//! Watch guarantees under faults: one watcher per node, checked after the run.
//!
//! While the clients run and the nemesis kills, pauses and cuts off nodes,
//! one etcd v3 watcher per node ([`watch`]) watches every key from revision
//! 1 with `prev_kv`, each on its own node only. When its stream breaks
//! (the node was killed, the connection reset) it connects again and
//! resumes from the revision after the last one it received, as a client
//! of etcd's watch is told to. After healing, the run reads the store's
//! revision (a linearizable read) and each watcher goes on until it has
//! received that revision (or a deadline passes). [`check`] then holds
//! every watcher's record to etcd's watch guarantees (the robustness
//! suite's names):
//!
//! * **ordered**: revisions never go back;
//! * **unique**: no change is delivered twice (across resumptions too);
//! * **atomic**: the changes of one revision arrive in one response;
//! * **reliable**: every revision from 2 (a fresh store's first) up to the
//!   final one is delivered, and every acknowledged put of the workload is
//!   among the events (its value is unique);
//! * **prev_kv**: each event's previous value is the key's value after the
//!   events before it;
//! * **the same on every node**: every watcher saw the same changes;
//! * **compaction**: the run compacts only below every watcher's last
//!   received revision ([`crate::compactor`]), so a `canceled` response to a
//!   resumption is itself a violation. Each watcher publishes that revision
//!   (`seen`) for the compactor.
//!
//! A violation is a line naming the node, the guarantee and the revision.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};

/// Violations reported per guarantee and node, at most.
const SHOWN: usize = 3;

/// One change as a watcher received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub revision: i64,
    pub put: bool,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub prev: Option<Vec<u8>>,
    /// The response it came in (numbered per watcher, across resumptions).
    pub response: u64,
}

/// What one watcher received.
#[derive(Debug, Clone, Default)]
pub struct WatchLog {
    pub node: String,
    pub events: Vec<Watched>,
    pub responses: u64,
    /// Times the stream broke and the watcher resumed.
    pub resumes: u64,
    /// Compaction cancellations and other refusals received.
    pub canceled: Vec<String>,
}

/// When watchers stop: once they received `target` (0: not known yet), or
/// when told to give up.
#[derive(Debug, Default)]
pub struct Until {
    pub target: AtomicI64,
    pub give_up: AtomicBool,
}

impl Until {
    fn done(&self, last: i64) -> bool {
        let target = self.target.load(Ordering::Acquire);
        self.give_up.load(Ordering::Acquire) || (target > 0 && last >= target)
    }
}

/// Watches every key on `node` from revision 1, resuming after each
/// break, until `until` says stop; publishes the last revision it received
/// in `seen`.
pub async fn watch(node: SocketAddr, until: Arc<Until>, seen: Arc<AtomicI64>) -> WatchLog {
    let mut log = WatchLog {
        node: node.to_string(),
        ..WatchLog::default()
    };
    let mut last = 0i64;
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_millis(500));
    while !until.done(last) {
        let connect = Client::connect([format!("http://{node}")], Some(options.clone()));
        let Ok(Ok(mut client)) = tokio::time::timeout(Duration::from_secs(1), connect).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let request = WatchOptions::new()
            .with_range(vec![0u8])
            .with_start_revision(last + 1)
            .with_prev_key();
        let opened = client.watch(vec![0u8], Some(request));
        let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(1), opened).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while !until.done(last) {
            let response =
                match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
                    Err(_) => continue,
                    Ok(Ok(Some(response))) => response,
                    Ok(_) => break,
                };
            if response.canceled() {
                log.canceled.push(format!(
                    "canceled while resuming from revision {} (compact_revision {}, reason {:?})",
                    last + 1,
                    response.compact_revision(),
                    response.cancel_reason()
                ));
                break;
            }
            if response.events().is_empty() {
                continue;
            }
            log.responses += 1;
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                last = last.max(kv.mod_revision());
                log.events.push(Watched {
                    revision: kv.mod_revision(),
                    put: event.event_type() == EventType::Put,
                    key: kv.key().to_vec(),
                    value: kv.value().to_vec(),
                    prev: event.prev_kv().map(|p| p.value().to_vec()),
                    response: log.responses,
                });
            }
            // Only whole responses count: a revision is complete when its
            // response is (the events of one revision come in one).
            seen.store(last, Ordering::Release);
        }
        if !until.done(last) {
            log.resumes += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    log
}

/// The store's revision after a linearizable read, from the first node
/// that answers.
pub async fn current_revision(nodes: &[SocketAddr]) -> Option<i64> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(3));
    for _ in 0..20 {
        for node in nodes {
            let Ok(mut client) =
                Client::connect([format!("http://{node}")], Some(options.clone())).await
            else {
                continue;
            };
            let read = client
                .get(vec![0u8], Some(GetOptions::new().with_count_only()))
                .await;
            if let Ok(response) = read
                && let Some(header) = response.header()
            {
                return Some(header.revision());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// Every violation of the guarantees above in `logs`, given the final
/// revision and the workload's acknowledged puts (key, value bytes).
pub fn check(logs: &[WatchLog], acknowledged: &[(String, Vec<u8>)], target: i64) -> Vec<String> {
    let mut out = Vec::new();
    for log in logs {
        let node = &log.node;
        for canceled in &log.canceled {
            out.push(format!("watch on {node}: {canceled}"));
        }
        let mut problems: HashMap<&str, Vec<String>> = HashMap::new();
        let mut note = |what: &'static str, text: String| {
            let list = problems.entry(what).or_default();
            if list.len() < SHOWN {
                list.push(text);
            }
        };
        let mut seen: HashSet<(i64, Vec<u8>)> = HashSet::new();
        let mut state: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut previous: Option<&Watched> = None;
        for event in &log.events {
            if let Some(before) = previous {
                if event.revision < before.revision {
                    note(
                        "ordered",
                        format!("revision {} after {}", event.revision, before.revision),
                    );
                } else if event.revision == before.revision && event.response != before.response {
                    note(
                        "atomic",
                        format!("revision {} split over two responses", event.revision),
                    );
                }
            }
            if !seen.insert((event.revision, event.key.clone())) {
                note(
                    "unique",
                    format!(
                        "revision {} key {} delivered twice",
                        event.revision,
                        show(&event.key)
                    ),
                );
            }
            let expected = state.get(&event.key);
            if event.prev.as_ref() != expected {
                note(
                    "prev_kv",
                    format!(
                        "revision {} key {}: prev_kv {:?}, expected {:?}",
                        event.revision,
                        show(&event.key),
                        event.prev.as_deref().map(show),
                        expected.map(|v| show(v))
                    ),
                );
            }
            if event.put {
                state.insert(event.key.clone(), event.value.clone());
            } else {
                state.remove(&event.key);
            }
            previous = Some(event);
        }
        let revisions: BTreeSet<i64> = log.events.iter().map(|e| e.revision).collect();
        let missing: Vec<i64> = (2..=target)
            .filter(|r| !revisions.contains(r))
            .take(10)
            .collect();
        if !missing.is_empty() {
            note(
                "reliable",
                format!("revisions missing (first 10 up to {target}): {missing:?}"),
            );
        }
        let puts: HashSet<(&[u8], &[u8])> = log
            .events
            .iter()
            .filter(|e| e.put)
            .map(|e| (e.key.as_slice(), e.value.as_slice()))
            .collect();
        for (key, value) in acknowledged {
            if !puts.contains(&(key.as_bytes(), value.as_slice())) {
                note(
                    "reliable",
                    format!("acknowledged put {key} = {} never delivered", show(value)),
                );
            }
        }
        let mut names: Vec<&&str> = problems.keys().collect();
        names.sort();
        for name in names {
            for text in &problems[*name] {
                out.push(format!("watch on {node}: {name}: {text}"));
            }
        }
    }
    // Every node applies the same log: every watcher must have seen the
    // same changes.
    let changes = |log: &WatchLog| -> Vec<(i64, bool, Vec<u8>, Vec<u8>)> {
        let mut list: Vec<_> = log
            .events
            .iter()
            .map(|e| (e.revision, e.put, e.key.clone(), e.value.clone()))
            .collect();
        list.sort();
        list.dedup();
        list
    };
    if let Some((first, rest)) = logs.split_first() {
        let reference = changes(first);
        for log in rest {
            let other = changes(log);
            if other != reference {
                let at = reference
                    .iter()
                    .zip(&other)
                    .find(|(a, b)| a != b)
                    .map_or(reference.len().min(other.len()) as i64, |(a, _)| a.0);
                out.push(format!(
                    "watch on {} and {}: different changes ({} and {}), first difference near revision {at}",
                    first.node,
                    log.node,
                    reference.len(),
                    other.len()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(revision: i64, key: &str, value: &str, prev: Option<&str>, response: u64) -> Watched {
        Watched {
            revision,
            put: true,
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            prev: prev.map(|p| p.as_bytes().to_vec()),
            response,
        }
    }

    fn log(events: Vec<Watched>) -> WatchLog {
        WatchLog {
            node: "n".into(),
            events,
            ..WatchLog::default()
        }
    }

    #[test]
    fn a_whole_history_passes_and_each_break_is_named() {
        let good = vec![
            event(2, "a", "1", None, 1),
            event(3, "a", "2", Some("1"), 2),
            event(3, "b", "x", None, 2),
            event(4, "b", "y", Some("x"), 3),
        ];
        let acked = vec![("a".to_string(), b"2".to_vec())];
        assert!(check(&[log(good.clone()), log(good.clone())], &acked, 4).is_empty());

        let has = |events: Vec<Watched>, what: &str| {
            let found = check(&[log(events)], &acked, 4);
            assert!(found.iter().any(|v| v.contains(what)), "{what}: {found:?}");
        };
        let mut gap = good.clone();
        gap.remove(3);
        has(gap, "reliable: revisions missing");
        let mut split = good.clone();
        split[2].response = 9;
        has(split, "atomic");
        let mut twice = good.clone();
        twice.push(good[3].clone());
        has(twice, "unique");
        let mut back = good.clone();
        back.swap(0, 3);
        has(back, "ordered");
        let mut prev = good.clone();
        prev[1].prev = None;
        has(prev, "prev_kv");
        let mut lost = good.clone();
        lost[1].value = b"other".to_vec();
        lost[2].prev = None;
        has(lost, "acknowledged put a = 2 never delivered");
        let mut other = good.clone();
        other[3].value = b"z".to_vec();
        let found = check(&[log(good), log(other)], &acked, 4);
        assert!(
            found.iter().any(|v| v.contains("different changes")),
            "{found:?}"
        );
    }
}
