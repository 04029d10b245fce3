//! A linearizability checker for histories of a key-value register store.
//!
//! A history is linearizable when every operation can be given one instant,
//! somewhere between its invocation and its completion, such that the
//! operations taken in the order of those instants are a legal sequential
//! run of the store: every get returns the value of the last put before it
//! (or "not found" if a delete, or nothing, came last). That is the promise
//! metcd makes for writes and default (linearizable) reads.
//!
//! # How the search goes
//!
//! The checker is the Wing–Gong search with Lowe's memoization, the
//! algorithm of Knossos and Porcupine. The invocations and completions of
//! one key's operations are laid out on a time line (a linked list of
//! events). The search repeatedly takes the first event: if it is an
//! invocation, it tries to linearize that operation now (apply it to the
//! model; a get must return what the model holds) and, on success, lifts
//! the operation's two events out of the list and starts again from the
//! head; if the first event is a completion, the operation it completes was
//! not linearized in time, so the search backtracks: it undoes the last
//! choice and tries the next invocation after it. The history is
//! linearizable when the list empties, and not when the search backtracks
//! past its first choice.
//!
//! Lowe's memoization makes that tractable: the outcome of the rest of the
//! search depends only on which operations are already linearized and on
//! the model's state, so every (linearized set, state) pair is explored at
//! most once; a cache of pairs seen cuts every branch that repeats one.
//!
//! # Per key
//!
//! Operations on different keys commute, and linearizability is a local
//! property (Herlihy and Wing): a history is linearizable exactly when its
//! restriction to each key is. So each key is checked alone, as Porcupine's
//! P-compositionality does, and the model of one key is just
//! `Option<value>`.
//!
//! # Unknown outcomes
//!
//! A write whose answer was lost may take effect at any instant after its
//! invocation, or never. It is given a completion at infinity: it may be
//! linearized anywhere after its invocation, and linearizing it after every
//! other operation is the same as "never", since nothing observes it then.
//! A read whose answer was lost observed nothing and is left out, as are
//! operations that certainly failed.
//!
//! # Bounded effort
//!
//! The search is exponential in the worst case (many concurrent writes with
//! unknown outcomes). Each key's search counts its steps and stops at
//! [`Budget::steps_per_key`], reporting [`KeyVerdict::GaveUp`] — "unknown",
//! never a hang and never a false verdict. Everything is deterministic: the
//! same history and budget give the same answer.
//!
//! # Explanations
//!
//! On a violation, the key's operations are shrunk (delta debugging: drop
//! chunks, then single operations, while what remains is still not
//! linearizable) to a small set that is not linearizable on its own, which
//! is printed: for the classic stale read that is the acknowledged put and
//! the later read that missed it.

use std::collections::{BTreeMap, HashSet};

use crate::history::{Input, Operation, Outcome, Output, Value};

/// How much search the checker may spend.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Search steps per key before giving up with "unknown".
    pub steps_per_key: u64,
    /// Search steps spent shrinking a violation to an explanation.
    pub shrink_steps: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            steps_per_key: 5_000_000,
            shrink_steps: 20_000_000,
        }
    }
}

/// The verdict for one key.
#[derive(Debug, Clone)]
pub enum KeyVerdict {
    Linearizable,
    /// Not linearizable; the explanation is a small non-linearizable subset.
    Violation(Explanation),
    /// The search gave up after this many steps: unknown.
    GaveUp {
        steps: u64,
    },
}

/// A key's operations that admit no linearization, shrunk.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub key: String,
    /// Operations of the key that took part in the check.
    pub checked: usize,
    /// A subset of them that is not linearizable on its own, by invocation.
    pub operations: Vec<Operation>,
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "key {:?}: not linearizable; these {} of its {} checked operations admit no linearization on their own:",
            self.key,
            self.operations.len(),
            self.checked
        )?;
        for op in &self.operations {
            writeln!(f, "  {op}")?;
        }
        Ok(())
    }
}

/// The overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    /// No violation found, but the search gave up on at least one key.
    Unknown,
}

/// The verdict of every key.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub keys: BTreeMap<String, KeyVerdict>,
}

impl CheckReport {
    pub fn verdict(&self) -> Verdict {
        let values = || self.keys.values();
        if values().any(|v| matches!(v, KeyVerdict::Violation(_))) {
            Verdict::NotLinearizable
        } else if values().any(|v| matches!(v, KeyVerdict::GaveUp { .. })) {
            Verdict::Unknown
        } else {
            Verdict::Linearizable
        }
    }

    pub fn violations(&self) -> Vec<&Explanation> {
        self.keys
            .values()
            .filter_map(|v| match v {
                KeyVerdict::Violation(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// Keys whose search gave up.
    pub fn gave_up(&self) -> Vec<&str> {
        self.keys
            .iter()
            .filter(|(_, v)| matches!(v, KeyVerdict::GaveUp { .. }))
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// Checks a whole history, key by key.
pub fn check(history: &[Operation], budget: Budget) -> CheckReport {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let keys = by_key
        .into_iter()
        .map(|(key, ops)| (key.to_string(), check_key(key, &ops, budget)))
        .collect();
    CheckReport { keys }
}

/// An operation as the search sees it.
#[derive(Debug, Clone, Copy)]
struct Event {
    call: u64,
    /// `u64::MAX` for an unknown outcome.
    ret: u64,
    input: Input,
    /// `None` for an unknown outcome.
    output: Option<Output>,
}

fn events_of(ops: &[&Operation]) -> Vec<(Event, usize)> {
    ops.iter()
        .enumerate()
        .filter_map(|(i, op)| {
            let event = match (&op.outcome, op.input) {
                (Outcome::Completed { at, output }, input) => Event {
                    call: op.call,
                    ret: (*at).max(op.call),
                    input,
                    output: Some(*output),
                },
                (Outcome::Unknown { .. }, Input::Get) | (Outcome::Failed { .. }, _) => return None,
                (Outcome::Unknown { .. }, input) => Event {
                    call: op.call,
                    ret: u64::MAX,
                    input,
                    output: None,
                },
            };
            Some((event, i))
        })
        .collect()
}

fn check_key(key: &str, ops: &[&Operation], budget: Budget) -> KeyVerdict {
    let events = events_of(ops);
    let plain: Vec<Event> = events.iter().map(|(e, _)| *e).collect();
    match search(&plain, budget.steps_per_key) {
        Search::Linearizable => KeyVerdict::Linearizable,
        Search::GaveUp(steps) => KeyVerdict::GaveUp { steps },
        Search::Violation => {
            let kept = shrink(&plain, budget);
            let mut operations: Vec<Operation> =
                kept.iter().map(|&i| ops[events[i].1].clone()).collect();
            operations.sort_by_key(|op| op.call);
            KeyVerdict::Violation(Explanation {
                key: key.to_string(),
                checked: plain.len(),
                operations,
            })
        }
    }
}

/// Delta debugging: indices of a subset of `events` that is still not
/// linearizable. Only removals that cannot by themselves break
/// linearizability are tried, so the subset's violation is one of the whole
/// history: a read alone, or a write together with every read that returned
/// what it wrote (a put and the reads of its value; a delete and the reads
/// of "not found"). Removing a put but keeping a read of its value would
/// make that read look like a read of a value never written. Groups are
/// dropped in chunks (halves, quarters, ..., one group) while what remains
/// still fails; shrinking stops when the budget is spent.
fn shrink(events: &[Event], budget: Budget) -> Vec<usize> {
    let observed = |e: &Event| match e.input {
        Input::Put(v) => Some(Some(v)),
        Input::Delete => Some(None),
        Input::Get => None,
    };
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if let Some(written) = observed(e) {
            let mut group = vec![i];
            group.extend(events.iter().enumerate().filter_map(|(j, r)| {
                (r.input == Input::Get && r.output == Some(Output::Read(written))).then_some(j)
            }));
            groups.push(group);
        }
    }
    groups.extend(
        (0..events.len())
            .filter(|&i| events[i].input == Input::Get)
            .map(|i| vec![i]),
    );
    let mut present = vec![true; events.len()];
    let mut alive: Vec<usize> = (0..groups.len()).collect();
    let mut spent = 0u64;
    let mut chunk = alive.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < alive.len() {
            if spent >= budget.shrink_steps {
                return kept(&present);
            }
            let end = (start + chunk).min(alive.len());
            let mut candidate = present.clone();
            for &g in &alive[start..end] {
                for &i in &groups[g] {
                    candidate[i] = false;
                }
            }
            let subset: Vec<Event> = kept(&candidate).iter().map(|&i| events[i]).collect();
            let limit = budget.steps_per_key.min(budget.shrink_steps - spent);
            let (result, steps) = search_counting(&subset, limit);
            spent += steps;
            if matches!(result, Search::Violation) {
                present = candidate;
                alive.drain(start..end);
            } else {
                start = end;
            }
        }
        if chunk == 1 {
            return kept(&present);
        }
        chunk = chunk.div_ceil(2);
    }
}

fn kept(present: &[bool]) -> Vec<usize> {
    (0..present.len()).filter(|&i| present[i]).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Search {
    Linearizable,
    Violation,
    GaveUp(u64),
}

/// The model: one register. Returns the state after `event`, or `None` if
/// the event's output is impossible in `state`.
fn step(state: Option<Value>, event: &Event) -> Option<Option<Value>> {
    match (event.input, event.output) {
        (Input::Put(v), None | Some(Output::Ok)) => Some(Some(v)),
        (Input::Delete, None | Some(Output::Ok)) => Some(None),
        (Input::Get, Some(Output::Read(seen))) => (seen == state).then_some(state),
        (Input::Get, None) => Some(state),
        (_, Some(_)) => None,
    }
}

fn search(events: &[Event], max_steps: u64) -> Search {
    search_counting(events, max_steps).0
}

const NONE: usize = usize::MAX;

/// The Wing–Gong–Lowe search over one key's events; also returns the steps
/// it took.
fn search_counting(events: &[Event], max_steps: u64) -> (Search, u64) {
    let n = events.len();
    if n == 0 {
        return (Search::Linearizable, 0);
    }
    // The time line: node 0 is the head; nodes 1..=2n are invocations and
    // completions, sorted by time, invocations first on ties (which can
    // only make operations more concurrent, never less).
    let mut timeline: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, e) in events.iter().enumerate() {
        timeline.push((e.call, 0, i));
        timeline.push((e.ret, 1, i));
    }
    timeline.sort_unstable();
    let nodes = 2 * n + 1;
    let mut next = vec![NONE; nodes];
    let mut prev = vec![NONE; nodes];
    let mut op_of = vec![0usize; nodes];
    let mut is_call = vec![false; nodes];
    let mut completion = vec![NONE; nodes];
    let mut return_node = vec![NONE; n];
    for (position, &(_, kind, op)) in timeline.iter().enumerate() {
        let node = position + 1;
        prev[node] = position;
        next[position] = node;
        op_of[node] = op;
        is_call[node] = kind == 0;
        if kind == 1 {
            return_node[op] = node;
        }
    }
    for node in 1..nodes {
        if is_call[node] {
            completion[node] = return_node[op_of[node]];
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        next[prev[node]] = next[node];
        if next[node] != NONE {
            prev[next[node]] = prev[node];
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        next[prev[node]] = node;
        if next[node] != NONE {
            prev[next[node]] = node;
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state: Option<Value> = None;
    let mut cache: HashSet<(Vec<u64>, Option<Value>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<Value>)> = Vec::new();
    let mut entry = next[0];
    let mut steps = 0u64;
    while next[0] != NONE {
        steps += 1;
        if steps > max_steps {
            return (Search::GaveUp(max_steps), steps);
        }
        if entry == NONE {
            // Cannot happen: the list always ends with a completion.
            return (Search::Violation, steps);
        }
        if is_call[entry] {
            let op = op_of[entry];
            if let Some(after) = step(state, &events[op]) {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), after)) {
                    stack.push((entry, state));
                    state = after;
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, completion[entry]);
                    entry = next[0];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = next[entry];
        } else {
            // The first completion in the list belongs to an operation not
            // yet linearized: undo the last choice and try the next one.
            let Some((call, before)) = stack.pop() else {
                return (Search::Violation, steps);
            };
            let op = op_of[call];
            state = before;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, completion[call]);
            relink(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
    (Search::Linearizable, steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{FOREIGN, value_of};
    use proptest::prelude::*;

    fn put(client: u32, v: Value, call: u64, ret: u64) -> Operation {
        Operation::completed(client, "k", Input::Put(v), call, ret, Output::Ok)
    }
    fn get(client: u32, seen: Option<Value>, call: u64, ret: u64) -> Operation {
        Operation::completed(client, "k", Input::Get, call, ret, Output::Read(seen))
    }
    fn del(client: u32, call: u64, ret: u64) -> Operation {
        Operation::completed(client, "k", Input::Delete, call, ret, Output::Ok)
    }
    fn verdict(history: &[Operation]) -> Verdict {
        check(history, Budget::default()).verdict()
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            get(0, None, 0, 1),
            put(0, 1, 2, 3),
            get(0, Some(1), 4, 5),
            del(0, 6, 7),
            get(0, None, 8, 9),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_overlapping_operations_are_fine() {
        // Two puts overlap; reads during and after may see either order as
        // long as they agree with one order.
        let h = [
            put(0, 1, 0, 10),
            put(1, 2, 1, 9),
            get(2, Some(1), 2, 3),
            get(2, Some(2), 4, 5),
            get(3, Some(2), 11, 12),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // A read concurrent with a put may see the old or the new value.
        let h = [put(0, 1, 0, 10), get(1, None, 1, 2), get(1, Some(1), 3, 4)];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn the_one_two_one_of_a_put_applied_twice_is_rejected() {
        // put(1) acknowledged, put(2) acknowledged after it, a reader sees
        // 1, then 2, then 1 again: the retried put(1) was applied twice.
        let h = [
            put(0, 1, 0, 10),
            put(1, 2, 11, 20),
            get(2, Some(1), 5, 6),
            get(2, Some(2), 21, 22),
            get(2, Some(1), 23, 24),
        ];
        let report = check(&h, Budget::default());
        assert_eq!(report.verdict(), Verdict::NotLinearizable);
        let explanation = &report.violations()[0];
        // put(1) then put(2) then the read of 1 is enough on its own.
        assert!(explanation.operations.len() <= 3, "{explanation}");
        assert!(
            explanation
                .operations
                .iter()
                .any(|op| op.input == Input::Get
                    && op.outcome
                        == Outcome::Completed {
                            at: 24,
                            output: Output::Read(Some(1))
                        }),
            "{explanation}"
        );
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_rejected() {
        let h = [put(0, 1, 0, 1), put(0, 2, 2, 3), get(1, Some(1), 4, 5)];
        let report = check(&h, Budget::default());
        assert_eq!(report.verdict(), Verdict::NotLinearizable);
        let text = report.violations()[0].to_string();
        assert!(text.contains("key \"k\""), "{text}");
        // Not found after an acknowledged put is stale too.
        let h = [put(0, 1, 0, 1), get(1, None, 2, 3)];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
        let explanation = &check(&h, Budget::default()).keys["k"];
        let KeyVerdict::Violation(e) = explanation else {
            panic!("expected a violation")
        };
        assert_eq!(e.operations.len(), 2);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_rejected() {
        let h = [put(0, 1, 0, 1), get(1, Some(FOREIGN), 2, 3)];
        let report = check(&h, Budget::default());
        assert_eq!(report.verdict(), Verdict::NotLinearizable);
        // The read alone is the explanation.
        assert_eq!(report.violations()[0].operations.len(), 1);
        let h = [get(1, Some(99), 2, 3)];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn a_write_with_an_unknown_outcome_may_apply_late_or_never() {
        // Applied later than any acknowledged op after its invocation.
        let h = [
            Operation::unknown(0, "k", Input::Put(1), 0),
            put(1, 2, 5, 6),
            get(2, Some(2), 7, 8),
            get(2, Some(1), 100, 101),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // Never applied.
        let h = [
            Operation::unknown(0, "k", Input::Put(1), 0),
            get(2, None, 100, 101),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // But not before it was invoked.
        let h = [
            get(2, Some(1), 0, 1),
            Operation::unknown(0, "k", Input::Put(1), 5),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
        // And not twice: 1, 2, 1 with put(1) unknown is still a violation.
        let h = [
            Operation::unknown(0, "k", Input::Put(1), 0),
            get(2, Some(1), 5, 6),
            put(1, 2, 7, 8),
            get(2, Some(2), 9, 10),
            get(2, Some(1), 11, 12),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn failed_operations_and_unknown_reads_are_left_out() {
        let failed = Operation {
            client: 0,
            key: "k".into(),
            input: Input::Put(5),
            call: 0,
            outcome: Outcome::Failed {
                at: 1,
                reason: "redirect".into(),
            },
        };
        let lost_read = Operation::unknown(1, "k", Input::Get, 0);
        let h = [failed, lost_read, get(2, None, 3, 4)];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn keys_are_checked_separately() {
        let mut other = put(0, 1, 0, 1);
        other.key = "other".into();
        let h = [other, get(1, None, 2, 3)];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        let report = check(&h, Budget::default());
        assert_eq!(report.keys.len(), 2);
    }

    #[test]
    fn the_search_gives_up_instead_of_hanging() {
        // Many concurrent unknown puts and reads that pin nothing down.
        let mut h: Vec<Operation> = (0..40)
            .map(|i| Operation::unknown(i, "k", Input::Put(u64::from(i) + 1), 0))
            .collect();
        h.push(get(99, Some(FOREIGN), 1_000, 1_001));
        let budget = Budget {
            steps_per_key: 10_000,
            shrink_steps: 10_000,
        };
        assert_eq!(check(&h, budget).verdict(), Verdict::Unknown);
    }

    /// A history generated by a sequential model: each operation is given
    /// a linearization point, and its invocation and completion are spread
    /// at random around it, so the history is linearizable by construction.
    fn generated(
        plan: &[(u8, u8, u8, u16, u16, bool)],
        clients: u32,
    ) -> (Vec<Operation>, Vec<usize>) {
        let keys = ["a", "b", "c"];
        let mut model: BTreeMap<&str, Option<Value>> = BTreeMap::new();
        let mut history = Vec::new();
        let mut reads = Vec::new();
        for (i, &(kind, key, client, before, after, lost)) in plan.iter().enumerate() {
            let key = keys[key as usize % keys.len()];
            let client = u32::from(client) % clients;
            // Spaced so that an invocation (up to 3 µs before its point) never
            // precedes time zero, and neighbours overlap.
            let point = 1_000 * (i as u64 + 4);
            let call = point - u64::from(before);
            let ret = point + u64::from(after);
            let current = model.entry(key).or_insert(None);
            let (input, output) = match kind % 10 {
                0..=3 => {
                    let v = value_of(client, i as u32);
                    *current = Some(v);
                    (Input::Put(v), Output::Ok)
                }
                4 => {
                    *current = None;
                    (Input::Delete, Output::Ok)
                }
                5 if lost => {
                    // A write that was never applied, its outcome unknown.
                    let v = value_of(client, i as u32 + 1_000_000);
                    history.push(Operation::unknown(client, key, Input::Put(v), call));
                    continue;
                }
                _ => (Input::Get, Output::Read(*current)),
            };
            let op = if lost && input != Input::Get {
                Operation::unknown(client, key, input, call)
            } else {
                Operation::completed(client, key, input, call, ret, output)
            };
            if input == Input::Get {
                reads.push(history.len());
            }
            history.push(op);
        }
        (history, reads)
    }

    fn plan() -> impl Strategy<Value = Vec<(u8, u8, u8, u16, u16, bool)>> {
        proptest::collection::vec(
            (
                any::<u8>(),
                0u8..3,
                0u8..6,
                0u16..3_000,
                0u16..3_000,
                proptest::bool::weighted(0.15),
            ),
            1..120,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn histories_of_a_sequential_model_are_accepted(plan in plan()) {
            let (history, _) = generated(&plan, 6);
            let report = check(&history, Budget::default());
            prop_assert_eq!(report.verdict(), Verdict::Linearizable, "{:?}", report.violations());
        }

        #[test]
        fn a_read_corrupted_to_a_value_never_written_is_rejected(plan in plan(), pick in any::<usize>()) {
            let (mut history, reads) = generated(&plan, 6);
            prop_assume!(!reads.is_empty());
            let victim = reads[pick % reads.len()];
            if let Outcome::Completed { output, .. } = &mut history[victim].outcome {
                *output = Output::Read(Some(FOREIGN - 1));
            }
            let report = check(&history, Budget::default());
            prop_assert_eq!(report.verdict(), Verdict::NotLinearizable);
            let violations = report.violations();
            prop_assert!(
                violations[0].operations.iter().any(|op| *op == history[victim]),
                "{}", violations[0]
            );
        }
    }
}
