//! The report of many runs: totals, a table per engine and fault, failures.
//!
//! [`Report::from_runs`] sums the [`RunOutcome`]s; [`Report::write`] puts
//! `report.json` (the totals and every run, the one results schema of the
//! chaos harness) and `report.md` (the same for people) in a directory.
//! Nothing here is measured performance: "longest unavailability" is the
//! longest stretch of a run's client phase without an acknowledged write,
//! which depends on the faults injected and on how loaded the machine was.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::linearizability::Verdict;
use crate::run::RunOutcome;

/// Totals over some runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Totals {
    pub runs: usize,
    pub operations: usize,
    pub acknowledged: usize,
    pub unknown: usize,
    /// Runs whose history is not linearizable.
    pub violations: usize,
    /// Runs whose replicas did not converge.
    pub divergent: usize,
    /// Runs the checker gave up on (no violation found).
    pub gave_up: usize,
    /// Runs that failed for another reason (no leader, a node crashed).
    pub errors: usize,
    pub longest_unavailability_ms: u64,
    pub leader_changes: u64,
    /// Runs whose watchers saw a watch guarantee broken.
    #[serde(default)]
    pub watch_violations: usize,
    /// Events the runs' watchers received.
    #[serde(default)]
    pub watch_events: usize,
    /// Compactions acknowledged during the runs' client phases.
    #[serde(default)]
    pub compactions: usize,
}

impl Totals {
    fn add(&mut self, run: &RunOutcome) {
        self.runs += 1;
        self.operations += run.operations;
        self.acknowledged += run.acknowledged;
        self.unknown += run.unknown;
        self.violations += usize::from(run.verdict == Verdict::NotLinearizable);
        self.divergent += usize::from(run.error.is_none() && !run.converged);
        self.gave_up += usize::from(run.verdict == Verdict::Unknown && run.error.is_none());
        self.errors += usize::from(run.error.is_some());
        self.longest_unavailability_ms = self
            .longest_unavailability_ms
            .max(run.longest_unavailability_ms);
        self.leader_changes += run.leader_changes;
        self.watch_violations += usize::from(!run.watch_violations.is_empty());
        self.watch_events += run.watch_events;
        self.compactions += run.compactions.len();
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub metcd: String,
    pub started: String,
    pub totals: Totals,
    /// Keyed by "engine/fault".
    pub by_combination: BTreeMap<String, Totals>,
    pub runs: Vec<RunOutcome>,
}

impl Report {
    pub fn from_runs(metcd: &str, started: &str, runs: Vec<RunOutcome>) -> Report {
        let mut totals = Totals::default();
        let mut by_combination: BTreeMap<String, Totals> = BTreeMap::new();
        for run in &runs {
            totals.add(run);
            by_combination
                .entry(format!("{}/{}", run.engine, run.fault))
                .or_default()
                .add(run);
        }
        Report {
            metcd: metcd.to_string(),
            started: started.to_string(),
            totals,
            by_combination,
            runs,
        }
    }

    pub fn markdown(&self) -> String {
        let t = &self.totals;
        let mut md = String::new();
        let _ = writeln!(md, "# Chaos report\n");
        let _ = writeln!(md, "Started {} with `{}`.\n", self.started, self.metcd);
        let _ = writeln!(
            md,
            "| runs | operations | acknowledged writes | unknown writes | violations | divergent | checker gave up | errors | longest unavailability | leader changes |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} ms | {} |\n",
            t.runs,
            t.operations,
            t.acknowledged,
            t.unknown,
            t.violations,
            t.divergent,
            t.gave_up,
            t.errors,
            t.longest_unavailability_ms,
            t.leader_changes
        );
        let _ = writeln!(
            md,
            "Watch (a watcher per node, resuming after every break, the history compacted under it {} times; then every node probed for the compaction error): {} events received, {} runs with a broken watch guarantee.\n",
            t.compactions, t.watch_events, t.watch_violations
        );
        let _ = writeln!(md, "## By engine and fault\n");
        let _ = writeln!(
            md,
            "| engine/fault | runs | operations | acknowledged | unknown | violations | divergent | gave up | errors | longest unavailability | leader changes |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
        for (name, c) in &self.by_combination {
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} ms | {} |",
                c.runs,
                c.operations,
                c.acknowledged,
                c.unknown,
                c.violations,
                c.divergent,
                c.gave_up,
                c.errors,
                c.longest_unavailability_ms,
                c.leader_changes
            );
        }
        let failed: Vec<&RunOutcome> = self.runs.iter().filter(|r| r.failed()).collect();
        if !failed.is_empty() {
            let _ = writeln!(md, "\n## Failed runs\n");
            for run in failed {
                let _ = writeln!(md, "```text\n{}```\n", run.details());
            }
        }
        md
    }

    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join("report.json"), json)
            .with_context(|| format!("writing {}", dir.join("report.json").display()))?;
        std::fs::write(dir.join("report.md"), self.markdown())
            .with_context(|| format!("writing {}", dir.join("report.md").display()))?;
        Ok(())
    }
}
