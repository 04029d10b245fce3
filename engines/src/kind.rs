//! `EngineKind`: the names by which users choose an engine at run time.
//!
//! The kind is parsed from the command line and from workload specs, printed
//! in results, and recorded in every durable engine's directory (see
//! [`crate::open`]) so that a directory written by one engine is never opened
//! by another.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// One of the six storage engines, or the engine lab's (`Student`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Memory,
    Redb,
    Sled,
    Rocksdb,
    Fjall,
    Bitcask,
    /// The engine a reader writes in the book's engine lab
    /// (`engines/src/student.rs`, graded by `just lab engine`). Not in
    /// [`EngineKind::ALL`]: "all" means the six engines of the project; name
    /// it to use it (`--engines student`, `metcd --engine student`).
    Student,
}

impl EngineKind {
    /// Every kind, in the order the docs and results list them.
    pub const ALL: [EngineKind; 6] = [
        EngineKind::Memory,
        EngineKind::Redb,
        EngineKind::Sled,
        EngineKind::Rocksdb,
        EngineKind::Fjall,
        EngineKind::Bitcask,
    ];

    /// The name users type.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Memory => "memory",
            EngineKind::Redb => "redb",
            EngineKind::Sled => "sled",
            EngineKind::Rocksdb => "rocksdb",
            EngineKind::Fjall => "fjall",
            EngineKind::Bitcask => "bitcask",
            EngineKind::Student => "student",
        }
    }

    /// Whether the engine keeps data across a restart of the process.
    pub fn is_durable(self) -> bool {
        self != EngineKind::Memory
    }

    /// The design family, for tables and plots.
    pub fn design(self) -> &'static str {
        match self {
            EngineKind::Memory => "in-memory ordered map",
            EngineKind::Redb => "B+tree, copy-on-write",
            EngineKind::Sled => "Bw-tree-like B+tree with a log",
            EngineKind::Rocksdb => "LSM tree (C++)",
            EngineKind::Fjall => "LSM tree (Rust)",
            EngineKind::Bitcask => "log-structured hash (ours)",
            EngineKind::Student => "yours (the engine lab)",
        }
    }

    /// The valid names joined for error messages: "memory, redb, ...".
    pub fn valid_names() -> String {
        EngineKind::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Parses a comma-separated list such as `redb,bitcask`; `all` means
    /// every kind.
    pub fn parse_list(list: &str) -> Result<Vec<EngineKind>, EngineError> {
        if list.trim() == "all" {
            return Ok(EngineKind::ALL.to_vec());
        }
        let mut kinds = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let kind: EngineKind = name.parse()?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() {
            return Err(EngineError::UnknownKind {
                given: list.to_string(),
                valid: EngineKind::valid_names(),
            });
        }
        Ok(kinds)
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EngineKind {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        EngineKind::ALL
            .into_iter()
            .chain([EngineKind::Student])
            .find(|k| k.name() == wanted)
            .ok_or_else(|| EngineError::UnknownKind {
                given: s.to_string(),
                valid: EngineKind::valid_names(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for kind in EngineKind::ALL.into_iter().chain([EngineKind::Student]) {
            assert_eq!(kind.name().parse::<EngineKind>().unwrap(), kind);
        }
    }

    #[test]
    fn unknown_name_lists_valid_ones() {
        let err = "lmdb".parse::<EngineKind>().unwrap_err().to_string();
        assert!(err.contains("lmdb"), "{err}");
        for kind in EngineKind::ALL {
            assert!(err.contains(kind.name()), "{err}");
        }
    }

    #[test]
    fn lists_parse_and_deduplicate() {
        assert_eq!(
            EngineKind::parse_list("redb, bitcask,redb").unwrap(),
            vec![EngineKind::Redb, EngineKind::Bitcask]
        );
        assert_eq!(EngineKind::parse_list("all").unwrap().len(), 6);
        assert!(EngineKind::parse_list("").is_err());
        assert!(EngineKind::parse_list("redb,nope").is_err());
    }
}
