//! The clients: concurrent put, get and delete on a few keys, recorded.
//!
//! Each client is a task that, until told to stop, picks a key and an
//! operation at random (seeded per client), sends it as one HTTP request
//! with [`crate::http`], and records an [`Operation`] with its invocation
//! and completion times and what the answer proves:
//!
//! | answer | put / delete | get |
//! |---|---|---|
//! | 204 | completed, ok | — |
//! | 200 / 404 "key not found" | — | completed, the value / not found |
//! | 307 (a follower names the leader) | failed: not proposed | — |
//! | 503 "no leader is known" | failed: refused before proposing | failed |
//! | any other 503 (timeout, leadership changed) | **unknown** | failed |
//! | connection refused | failed: not sent | failed |
//! | sent, then no answer | **unknown** | unknown |
//!
//! Writes go to the node the client believes leads (a 307's `Location`
//! teaches it); reads go to a random node, so followers serve
//! linearizable reads through ReadIndex.
//!
//! With [`Api::Both`] (the default) the odd-numbered clients speak etcd's
//! v3 gRPC API instead ([`crate::grpc`]): Put, DeleteRange and Range on a
//! random node, so followers forward writes to the leader under the same
//! faults. A gRPC error carrying metcd's `metcd-outcome: not-applied`, or
//! one of etcd's request refusals, is a failure; any other error after the
//! call was sent leaves a write unknown. Values are unique per write. After
//! an unknown outcome the client pauses a little, so a long outage does not
//! fill the history with unknown writes, which cost the checker most.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::grpc::{self, GrpcError, StatusMeaning};
use crate::history::{Input, Operation, Outcome, Output, decode_value, encode_value, value_of};
use crate::http::{self, HttpError};

/// Which client API the workload speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    /// metcd's HTTP API only.
    Http,
    /// etcd's v3 gRPC API only.
    Grpc,
    /// Even-numbered clients on HTTP, odd-numbered ones on gRPC.
    Both,
}

impl Api {
    fn grpc_for(self, client: u32) -> bool {
        match self {
            Api::Http => false,
            Api::Grpc => true,
            Api::Both => client % 2 == 1,
        }
    }
}

/// How the clients behave.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    pub clients: u32,
    pub api: Api,
    pub keys: Vec<String>,
    /// Deadline of one request; past it the outcome is unknown.
    pub timeout: Duration,
}

/// The path of a key (`/kv/` keeps any key out of the API's `/-/` space).
pub fn path_of(key: &str) -> String {
    format!("/kv/{key}")
}

/// Shared by the clients: where writes go, when time started, when to stop.
#[derive(Clone)]
pub struct Shared {
    pub nodes: Arc<Vec<SocketAddr>>,
    /// The nodes' gRPC addresses, in the same order.
    pub grpc_nodes: Arc<Vec<SocketAddr>>,
    pub leader_hint: Arc<AtomicUsize>,
    pub start: Instant,
    pub stop: Arc<AtomicBool>,
}

impl Shared {
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn learn_leader(&self, location: Option<&str>) {
        let Some(location) = location else { return };
        let authority = location
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        if let Some(i) = self.nodes.iter().position(|n| n.to_string() == authority) {
            self.leader_hint.store(i, Ordering::Relaxed);
        }
    }

    fn next_leader_guess(&self) {
        let n = self.nodes.len().max(1);
        let _ = self
            .leader_hint
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| Some((i + 1) % n));
    }
}

fn refused_before_proposing(message: &str) -> bool {
    message.starts_with("no leader is known") || message.contains("has no known client address")
}

/// One client's loop; returns its history.
pub async fn client(
    id: u32,
    seed: u64,
    options: Arc<WorkloadOptions>,
    shared: Shared,
) -> Vec<Operation> {
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(id) << 40));
    let mut history = Vec::new();
    let mut counter = 0u32;
    while !shared.stop.load(Ordering::Relaxed) {
        let key = options.keys[rng.random_range(0..options.keys.len())].clone();
        let roll = rng.random_range(0..100);
        let input = if roll < 45 {
            counter += 1;
            Input::Put(value_of(id, counter))
        } else if roll < 55 {
            Input::Delete
        } else {
            Input::Get
        };
        let (call, outcome) = if options.api.grpc_for(id) {
            let node = rng.random_range(0..shared.grpc_nodes.len());
            let target = shared.grpc_nodes[node];
            let call = shared.now();
            let answer = match input {
                Input::Put(v) => grpc::put(target, &key, &encode_value(v), options.timeout)
                    .await
                    .map(|()| None),
                Input::Delete => grpc::delete(target, &key, options.timeout)
                    .await
                    .map(|()| None),
                Input::Get => grpc::get(target, &key, options.timeout).await,
            };
            let at = shared.now();
            (call, classify_grpc(input, answer, at))
        } else {
            let target = if input == Input::Get {
                shared.nodes[rng.random_range(0..shared.nodes.len())]
            } else {
                shared.nodes[shared.leader_hint.load(Ordering::Relaxed) % shared.nodes.len()]
            };
            let (method, body) = match input {
                Input::Put(v) => ("PUT", encode_value(v).into_bytes()),
                Input::Get => ("GET", Vec::new()),
                Input::Delete => ("DELETE", Vec::new()),
            };
            let call = shared.now();
            let answer =
                http::request(target, method, &path_of(&key), &body, options.timeout).await;
            let at = shared.now();
            (call, classify(&shared, input, answer, at))
        };
        let pause = match &outcome {
            Outcome::Completed { .. } => rng.random_range(0..3),
            Outcome::Failed { .. } => rng.random_range(10..40),
            Outcome::Unknown { .. } => rng.random_range(50..150),
        };
        history.push(Operation {
            client: id,
            key,
            input,
            call,
            outcome,
        });
        if pause > 0 {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
    history
}

fn classify(
    shared: &Shared,
    input: Input,
    answer: Result<http::Answer, HttpError>,
    at: u64,
) -> Outcome {
    let failed = |reason: String| Outcome::Failed { at, reason };
    let unknown = |reason: String| Outcome::Unknown { reason };
    let answer = match answer {
        Ok(answer) => answer,
        Err(HttpError::NotSent(reason)) => {
            shared.next_leader_guess();
            return failed(reason);
        }
        Err(HttpError::Lost(reason)) => {
            shared.next_leader_guess();
            return unknown(reason);
        }
    };
    let message = || format!("{}: {}", answer.status, answer.message());
    match (input, answer.status) {
        (Input::Get, 200) => Outcome::Completed {
            at,
            output: Output::Read(Some(decode_value(&answer.body))),
        },
        (Input::Get, 404) if answer.message().starts_with("key not found") => Outcome::Completed {
            at,
            output: Output::Read(None),
        },
        (Input::Get, _) => failed(message()),
        (_, 204) => Outcome::Completed {
            at,
            output: Output::Ok,
        },
        (_, 307 | 308) => {
            shared.learn_leader(answer.location.as_deref());
            failed(message())
        }
        (_, 503) if refused_before_proposing(&answer.message()) => {
            shared.next_leader_guess();
            failed(message())
        }
        (_, 503) => {
            shared.next_leader_guess();
            unknown(message())
        }
        // 4xx: refused before proposing (bad request, conflict...). A 5xx
        // other than 503 gives no promise either way.
        (_, status) if (400..500).contains(&status) => failed(message()),
        _ => unknown(message()),
    }
}

/// What a gRPC call's result proves (see the module table).
fn classify_grpc(input: Input, answer: Result<Option<Vec<u8>>, GrpcError>, at: u64) -> Outcome {
    match (input, answer) {
        (Input::Get, Ok(value)) => Outcome::Completed {
            at,
            output: Output::Read(value.map(|v| decode_value(&v))),
        },
        (_, Ok(_)) => Outcome::Completed {
            at,
            output: Output::Ok,
        },
        (_, Err(err @ GrpcError::NotSent(_))) => Outcome::Failed {
            at,
            reason: err.to_string(),
        },
        (_, Err(err @ GrpcError::Lost(_))) => Outcome::Unknown {
            reason: err.to_string(),
        },
        (Input::Get, Err(err)) => Outcome::Failed {
            at,
            reason: err.to_string(),
        },
        (_, Err(GrpcError::Status(status))) => match grpc::meaning(&status) {
            StatusMeaning::NotApplied => Outcome::Failed {
                at,
                reason: format!("{}: {}", status.code(), status.message()),
            },
            StatusMeaning::Unknown => Outcome::Unknown {
                reason: format!("{}: {}", status.code(), status.message()),
            },
        },
    }
}
