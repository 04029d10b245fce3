//! Deliberate bugs for the book's "break it" labs, off unless asked for.
//!
//! A safety test proves little until it has failed. Each [`LabBreak`]
//! removes one rule the consensus layer depends on, so that a student (or a
//! maintainer) can run the fault harness against a node that breaks it and
//! see whether the harness notices: `metcd --lab-break stale-reads`, or
//! `just lab-break stale-reads`, which runs `just chaos` with it.
//!
//! Each break is a single `if` at the place the rule is kept, named after
//! the rule, so the lab can point at the line. A node started with one
//! logs a warning at start and on its status; nothing else changes.
//!
//! Which breaks the harness can catch is itself the lesson: serving reads
//! without a quorum check shows up as stale reads under partitions;
//! releasing reads before the read index is applied shows up when a
//! follower lags; leaving the WAL's records in the process's buffer shows up
//! as soon as a node is killed; but writing them to the kernel without the
//! fsync does not show up at all, because the harness kills processes and
//! the page cache survives a process kill (only a machine crash, or a file
//! system that drops unsynced writes, would see it).

use std::fmt;
use std::str::FromStr;

// ANCHOR: lab_break
/// One deliberately broken rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabBreak {
    /// Linearizable reads are answered from local state at once, without a
    /// ReadIndex round: a deposed leader that has not heard of its
    /// successor serves stale values.
    StaleReads,
    /// Reads are released as soon as their read index is known, before this
    /// node has applied up to it: a lagging follower serves old values.
    EarlyReads,
    /// The WAL's records reach the kernel but are never fsynced:
    /// acknowledged writes live only in the page cache until the kernel
    /// writes them back.
    SkipFsync,
    /// The WAL's records are neither fsynced nor even handed to the kernel
    /// before acknowledging: they sit in the process's write buffer.
    SkipFlush,
}
// ANCHOR_END: lab_break

impl LabBreak {
    pub const ALL: [LabBreak; 4] = [
        LabBreak::StaleReads,
        LabBreak::EarlyReads,
        LabBreak::SkipFsync,
        LabBreak::SkipFlush,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LabBreak::StaleReads => "stale-reads",
            LabBreak::EarlyReads => "early-reads",
            LabBreak::SkipFsync => "skip-fsync",
            LabBreak::SkipFlush => "skip-flush",
        }
    }

    /// The rule that is broken, in one line (for the start-up warning).
    pub fn rule(self) -> &'static str {
        match self {
            LabBreak::StaleReads => {
                "linearizable reads skip the ReadIndex quorum check and are served from local state"
            }
            LabBreak::EarlyReads => {
                "linearizable reads are released before this node has applied their read index"
            }
            LabBreak::SkipFsync => "the WAL is never fsynced before acknowledging",
            LabBreak::SkipFlush => {
                "the WAL's records stay in the process's buffer, unwritten and unsynced, when acknowledged"
            }
        }
    }
}

impl fmt::Display for LabBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LabBreak {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LabBreak::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = LabBreak::ALL.iter().map(|b| b.name()).collect();
                format!(
                    "unknown lab break {s:?}; the breaks are: {}",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_choices() {
        for b in LabBreak::ALL {
            assert_eq!(b.name().parse::<LabBreak>(), Ok(b));
        }
        let err = "no-raft".parse::<LabBreak>().unwrap_err();
        assert!(
            err.contains("stale-reads, early-reads, skip-fsync, skip-flush"),
            "{err}"
        );
    }
}
