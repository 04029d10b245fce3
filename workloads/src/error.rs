//! The one error type of the harness library.
//!
//! Every message names what was wrong, where (file, field, engine) and, for
//! bad input, what is accepted: a user who mistypes a workload name or a
//! spec field should be able to fix it from the message alone.

use std::path::PathBuf;

pub type Result<T, E = WorkloadError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{file}: field `{field}`: {message}")]
    Spec {
        file: String,
        field: String,
        message: String,
    },

    #[error("{file}: {message}")]
    SpecSyntax { file: String, message: String },

    #[error(
        "unknown workload '{given}'; valid workloads are: {valid}, or a path to a .toml spec or a YCSB property file"
    )]
    UnknownWorkload { given: String, valid: String },

    #[error("results directory {dir} is not writable: {reason}")]
    ResultsNotWritable { dir: PathBuf, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{target}: {operation} failed: {message}")]
    Target {
        target: String,
        operation: String,
        message: String,
    },

    #[error(transparent)]
    Engine(#[from] engines::EngineError),

    #[error("{context}: {message}")]
    Results { context: String, message: String },

    /// Starting, finding or reaching a metcd cluster.
    #[error("metcd cluster: {0}")]
    Cluster(String),
    /// Creating or joining the memory cgroup of a memory-limited run.
    #[error("memory limit: {0}")]
    MemoryLimit(String),
    /// A run the suite refuses before it starts (e.g. a durable mode on
    /// tmpfs).
    #[error("{0}")]
    Refused(String),
    #[error("plotting {plot}: {message}")]
    Plot { plot: String, message: String },
}

impl WorkloadError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        WorkloadError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn spec(file: &str, field: &str, message: impl Into<String>) -> Self {
        WorkloadError::Spec {
            file: file.to_string(),
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// `result.context(|| "reading x".into())?` for I/O results.
pub trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| WorkloadError::io(context(), e))
    }
}
