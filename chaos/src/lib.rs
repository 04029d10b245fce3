//! # chaos: metcd under faults, checked for linearizability
//!
//! This crate starts real three-node `metcd` clusters, runs clients against
//! them while a nemesis kills, pauses and cuts off nodes, heals everything,
//! and then checks what the clients saw. It answers two questions a
//! replicated store must answer "yes" to, whatever the faults:
//!
//! * **Was every history linearizable?** Each client operation is recorded
//!   with its invocation time, its completion time and its result; an
//!   operation whose answer was lost is recorded as unknown, never guessed.
//!   The [`linearizability`] checker (Wing–Gong search with Lowe's
//!   memoization, per key) decides whether one order of the operations
//!   explains every result. A final read of every key after healing joins
//!   the history, so a lost acknowledged write is a violation too.
//! * **Did the replicas converge?** After healing, every node must reach
//!   the same applied index with the same state.
//!
//! ## The modules, in the order data flows
//!
//! | module | job |
//! |---|---|
//! | [`nodes`] | the `metcd` processes of a run; SIGKILL, SIGSTOP, SIGCONT; cleanup |
//! | [`proxy`] | a proxy on every Raft peer link: partitions, delay, loss, per message |
//! | [`nemesis`] | the fault kinds and their injection |
//! | [`http`] | a single-attempt HTTP client that knows whether a request left |
//! | [`workload`] | the clients: concurrent put/get/delete, recorded |
//! | [`history`] | the recorded operations and their outcomes |
//! | [`linearizability`] | the checker |
//! | [`run`] | one run from start to verdict |
//! | [`watch_check`] | a watcher per node through the faults, and etcd's watch guarantees |
//! | [`report`] | totals over runs, as JSON and Markdown |
//!
//! The `chaos` binary runs randomized runs (`just chaos`); the integration
//! test `tests/short.rs` is the short form in `just test`.
//!
//! ## What it does not do
//!
//! Only loopback addresses are used; the network faults are made by the
//! user-space [`proxy`], not by the kernel (see that module for why and
//! for what that cannot show). There is no slow-disk fault. A run is
//! reproducible in its choices (seeded), not in its timing.

pub mod compactor;
pub mod grpc;
pub mod history;
pub mod http;
pub mod linearizability;
pub mod nemesis;
pub mod nodes;
pub mod proxy;
pub mod report;
pub mod run;
pub mod watch_check;
pub mod workload;
