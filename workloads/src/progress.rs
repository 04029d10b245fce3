//! Progress bars for the load and run phases (ops/s and ETA), drawn on
//! stderr only when it is a terminal, so logs and CI output stay clean.
//!
//! Workers only bump an atomic counter now and then; the thread that started
//! them polls it ([`Phase::follow`]) ten times a second until they finish.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What a phase's bar counts to.
#[derive(Debug, Clone, Copy)]
pub enum PhaseLength {
    /// A number of operations.
    Operations(u64),
    /// A length of time (warm-up included).
    Time(Duration),
}

/// The bar of one phase.
pub struct Phase {
    bar: ProgressBar,
    length: PhaseLength,
    started: Instant,
}

impl Phase {
    pub fn start(label: &str, length: PhaseLength) -> Phase {
        let total = match length {
            PhaseLength::Operations(n) => n,
            PhaseLength::Time(d) => d.as_millis() as u64,
        };
        let draw = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total), draw);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:<28} [{bar:30}] {percent:>3}% {msg} ETA {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        Phase {
            bar,
            length,
            started: Instant::now(),
        }
    }

    /// Updates the bar from `done` until every handle has finished.
    pub fn follow<T>(&self, handles: &[ScopedJoinHandle<'_, T>], done: &AtomicU64) {
        let mut last = (Instant::now(), 0u64);
        while handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(100));
            let now = Instant::now();
            let count = done.load(Ordering::Relaxed);
            let rate = (count - last.1.min(count)) as f64
                / now.duration_since(last.0).as_secs_f64().max(1e-3);
            last = (now, count);
            let position = match self.length {
                PhaseLength::Operations(_) => count,
                PhaseLength::Time(_) => now.duration_since(self.started).as_millis() as u64,
            };
            self.bar.set_position(position);
            self.bar
                .set_message(format!("{count} ops, {rate:.0} ops/s"));
        }
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
