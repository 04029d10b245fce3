//! What a run shows, in sentences computed from its result documents.
//!
//! The book's reference-run chapter cannot say "bitcask was fastest" in
//! prose: a reader who re-runs on another machine may find otherwise, and
//! prose written from one run drifts from the next. So the findings are
//! generated, like the tables, from the JSON documents alone, and written
//! next to each workload's summary as `findings.md`; the chapter includes
//! that file. Each sentence names the engines and the numbers it compares,
//! so the reader can check it against the table above it.
//!
//! Only comparisons that hold for any run are made: who led and by what
//! factor, the spread between the fastest and the slowest durable engine,
//! the widest and narrowest tails (p99.9 over p50), and, among engines with
//! files on disk, the lowest and highest space and write amplification. A
//! capped run ended early with a different end state and is left out of
//! every comparison, and said so.

use std::fmt::Write as _;

use crate::results::ResultDocument;

fn us(nanos: f64) -> String {
    let v = nanos / 1000.0;
    if v < 10.0 {
        format!("{v:.2} µs")
    } else if v < 100.0 {
        format!("{v:.1} µs")
    } else if v < 10_000.0 {
        format!("{v:.0} µs")
    } else {
        format!("{:.1} ms", v / 1000.0)
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b <= 0.0 {
        return "an unbounded factor".into();
    }
    let r = a / b;
    if r < 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.0}×")
    }
}

/// A document and the value compared.
type Valued<'a> = (&'a ResultDocument, f64);

/// The document with the smallest and the largest `value`, among those
/// that have one.
fn extremes<'a>(
    documents: &[&'a ResultDocument],
    value: impl Fn(&ResultDocument) -> Option<f64>,
) -> Option<(Valued<'a>, Valued<'a>)> {
    let mut with: Vec<(&ResultDocument, f64)> = documents
        .iter()
        .filter_map(|d| value(d).map(|v| (*d, v)))
        .filter(|(_, v)| v.is_finite())
        .collect();
    with.sort_by(|a, b| a.1.total_cmp(&b.1));
    Some((*with.first()?, *with.last()?))
}

/// `findings.md` for one workload's documents.
pub fn findings(workload: &str, documents: &[ResultDocument]) -> String {
    let mut out = format!(
        "What this run of `{workload}` shows, generated from its JSON documents (re-run it and this \
         list describes your run):\n\n"
    );
    let capped: Vec<&str> = documents
        .iter()
        .filter(|d| d.run.capped)
        .map(|d| d.target.name.as_str())
        .collect();
    let complete: Vec<&ResultDocument> = documents.iter().filter(|d| !d.run.capped).collect();
    if complete.len() < 2 {
        out.push_str("- Fewer than two runs completed, so there is nothing to compare.\n");
        return out;
    }
    let on_disk: Vec<&ResultDocument> = complete
        .iter()
        .copied()
        .filter(|d| d.storage.allocated_bytes.is_some())
        .collect();

    if let Some(((slow, slow_v), (fast, fast_v))) =
        extremes(&complete, |d| Some(d.run.throughput_ops_per_sec))
    {
        let _ = writeln!(
            out,
            "- **Throughput**: {} led with {fast_v:.0} ops/s, {} the rate of the slowest, {} ({slow_v:.0} ops/s).",
            fast.target.name,
            ratio(fast_v, slow_v),
            slow.target.name
        );
    }
    if on_disk.len() >= 2
        && on_disk.len() < complete.len()
        && let Some(((slow, slow_v), (fast, fast_v))) =
            extremes(&on_disk, |d| Some(d.run.throughput_ops_per_sec))
    {
        let _ = writeln!(
            out,
            "- **Among the engines with files on disk**, {} led with {fast_v:.0} ops/s and {} trailed with \
             {slow_v:.0} ops/s ({} apart).",
            fast.target.name,
            slow.target.name,
            ratio(fast_v, slow_v)
        );
    }
    if let Some(((low, low_v), (high, high_v))) =
        extremes(&complete, |d| Some(d.overall.p50_ns as f64))
    {
        let _ = writeln!(
            out,
            "- **Median latency** ranged from {} ({}) to {} ({}).",
            us(low_v),
            low.target.name,
            us(high_v),
            high.target.name
        );
    }
    let tail = |d: &ResultDocument| {
        (d.overall.p50_ns > 0).then(|| d.overall.p999_ns as f64 / d.overall.p50_ns as f64)
    };
    if let Some(((narrow, narrow_v), (wide, wide_v))) = extremes(&complete, tail) {
        let _ = writeln!(
            out,
            "- **Tails**: {}'s p99.9 was {:.0}× its median ({} against {}), the widest spread; {}'s was \
             {:.0}× ({} against {}), the narrowest.",
            wide.target.name,
            wide_v,
            us(wide.overall.p999_ns as f64),
            us(wide.overall.p50_ns as f64),
            narrow.target.name,
            narrow_v,
            us(narrow.overall.p999_ns as f64),
            us(narrow.overall.p50_ns as f64)
        );
    }
    if let Some(((low, low_v), (high, high_v))) =
        extremes(&on_disk, |d| d.storage.space_amplification)
        && low.target.name != high.target.name
    {
        let _ = writeln!(
            out,
            "- **Space amplification** (blocks allocated over live bytes, after settling): lowest {} \
             ({low_v:.2}), highest {} ({high_v:.2}).",
            low.target.name, high.target.name
        );
    }
    if let Some(((low, low_v), (high, high_v))) =
        extremes(&on_disk, |d| d.io.write_amplification_with_settle)
        && low.target.name != high.target.name
    {
        let _ = writeln!(
            out,
            "- **Write amplification** (bytes dirtied in the page cache per byte written, run plus the \
             settling it caused): lowest {} ({low_v:.2}), highest {} ({high_v:.2}).",
            low.target.name, high.target.name
        );
    }
    if !capped.is_empty() {
        let _ = writeln!(
            out,
            "- **Capped** (stopped at the time cap, so left out of every comparison above): {}.",
            capped.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::results::read_run;

    /// The committed reference run is the fixture: its findings must name
    /// the leader its table shows, and a capped run must leave the
    /// comparisons and be listed as capped.
    #[test]
    fn findings_name_the_leader_and_set_capped_runs_apart() {
        let run = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/reference");
        let workloads = read_run(&run).expect("the committed reference run");
        let documents = workloads.get("read-heavy").expect("read-heavy results");
        let by_throughput = |docs: &[ResultDocument]| {
            let mut names: Vec<(f64, String)> = docs
                .iter()
                .filter(|d| !d.run.capped)
                .map(|d| (d.run.throughput_ops_per_sec, d.target.name.clone()))
                .collect();
            names.sort_by(|a, b| b.0.total_cmp(&a.0));
            names
        };
        let leader = by_throughput(documents)[0].1.clone();
        let text = findings("read-heavy", documents);
        assert!(
            text.contains(&format!("- **Throughput**: {leader} led")),
            "{text}"
        );
        assert!(!text.contains("Capped"), "{text}");

        let mut capped = documents.clone();
        for d in &mut capped {
            if d.target.name == leader {
                d.run.capped = true;
            }
        }
        let text = findings("read-heavy", &capped);
        let next = by_throughput(&capped)[0].1.clone();
        assert!(
            text.contains(&format!("- **Throughput**: {next} led")),
            "{text}"
        );
        assert!(
            text.contains(&format!("left out of every comparison above): {leader}.")),
            "{text}"
        );
    }
}
