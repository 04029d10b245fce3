//! The one error type of the storage layer.
//!
//! Every message says what went wrong, where (the path or engine), and, for
//! bad input, what is accepted. Backend libraries' errors are wrapped with the
//! engine's name so that a user comparing engines can tell which one failed.

use std::path::PathBuf;

use crate::kind::EngineKind;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown engine '{given}'; valid engines are: {valid}")]
    UnknownKind { given: String, valid: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "directory {dir} holds a {found} engine, but {requested} was requested; \
         open it with --engine {found} or use another directory"
    )]
    KindMismatch {
        dir: PathBuf,
        found: String,
        requested: EngineKind,
    },

    #[error(
        "directory {dir} is locked by another process (lock file {lock}); stop that process or use another directory"
    )]
    Locked { dir: PathBuf, lock: PathBuf },

    #[error("corrupt data in {file} at byte offset {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },

    #[error("{engine}: {message}")]
    Backend { engine: EngineKind, message: String },

    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl EngineError {
    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        EngineError::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a backend library's error with the engine's name.
    pub fn backend(engine: EngineKind, error: impl std::fmt::Display) -> Self {
        EngineError::Backend {
            engine,
            message: error.to_string(),
        }
    }
}

/// `result.context("opening x")?` for I/O results.
pub trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| EngineError::io(context(), e))
    }
}
