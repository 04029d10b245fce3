//! # workloads: the benchmark harness of metcd
//!
//! `workbench` answers one question fairly: how do the six storage engines
//! compare on a given workload, on this machine, with this durability? It
//! runs YCSB-style workloads against any [`target::Target`], measures every
//! operation with HdrHistogram, and writes results a reader can trust and
//! redraw.
//!
//! ## How data flows
//!
//! ```text
//! spec (TOML / YCSB properties) ──► runner ──► Measurement ──► ResultDocument (JSON)
//!        + command-line overrides      ▲                               │
//!                                      │                    summary.md, index.md, SVG plots
//!                           Target (engine, no-op, metcd cluster)
//! ```
//!
//! * [`spec`]: what to run; validated before anything starts.
//! * [`distribution`]: uniform, (scrambled) zipfian and latest key choice,
//!   and the YCSB key format.
//! * [`target`]: what the workload runs against.
//! * [`cluster_target`]: the replicated metcd cluster as a target (a
//!   running one, or three `metcd` processes the harness starts).
//! * [`etcd_target`]: any server of etcd's v3 gRPC API (a real etcd, or
//!   metcd's gRPC listener) through the `etcd-client` crate, so both are
//!   measured by the same client.
//! * [`etcd_process`]: a real 3-member etcd (Debian's etcd-server) the
//!   harness starts with its default settings, for comparisons.
//! * [`vs_etcd`]: metcd beside a real etcd, alternating fresh clusters over
//!   rounds, the same client and cases (`workbench vs-etcd`).
//! * [`watch_bench`]: watch fan-out, put-to-event latency and lease
//!   keep-alives on any etcd v3 server (`workbench watch`).
//! * [`runner`]: load phase, then the measured run phase (closed or open
//!   loop, warm-up excluded, durability policy applied).
//! * [`machine`]: calibration of CPU, memory, kernel, filesystem and
//!   fdatasync latency.
//! * [`results`]: the one versioned JSON schema (documented in
//!   `results/README.md`).
//! * [`report`] and [`plots`]: Markdown tables and SVG plots, rebuilt from
//!   the JSON alone.
//! * [`suite`]: workloads × engines into one run directory.
//! * [`overhead`]: the harness's own ceiling and the `Engine` trait's cost.
//!
//! ## Invariants
//!
//! * Every result document carries the complete spec, durability policy and
//!   machine calibration: no number leaves without its settings.
//! * A fixed seed repeats the same request sequence per thread (thread `i`
//!   is seeded with `seed + i`); with more than one thread, the interleaving
//!   is still up to the scheduler.
//! * Nothing is hard-coded: every figure in a result comes from the run
//!   that wrote it.

pub mod cluster_target;
pub mod distribution;
pub mod error;
pub mod etcd_process;
pub mod etcd_target;
pub mod findings;
pub mod machine;
pub mod memory_limit;
pub mod mvcc_cost;
pub mod overhead;
pub mod plots;
pub mod progress;
pub mod report;
pub mod results;
pub mod runner;
pub mod space;
pub mod spec;
pub mod suite;
pub mod target;
pub mod vs_etcd;
pub mod watch_bench;

pub use error::{Result, WorkloadError};
