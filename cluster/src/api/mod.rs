//! The client APIs of a node. Today: [`http`], the curl-able HTTP API that
//! `metcdctl`, the tests and the workload harness speak.

pub mod http;

pub use http::{ApiConfig, MAX_KEY_BYTES, MAX_VALUE_BYTES, error, router};
