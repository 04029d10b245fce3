//! Request distributions, the insert counter and the YCSB key format, as
//! YCSB's `CoreWorkload` computes them.
//!
//! Each client thread owns a [`KeyChooser`] and a seeded RNG, so choosing a
//! key costs no synchronisation and a run with a fixed seed repeats the same
//! requests. Records are numbered `0..n`; the number becomes a key with
//! [`KeyFormat`]: `user` followed by the FNV-1a hash of the number in
//! decimal, zero-padded to the key size, as YCSB's `insertorder=hashed`
//! builds keys.
//!
//! ## The generators, as YCSB has them
//!
//! * **zipfian** (`requestdistribution=zipfian`) is YCSB's
//!   `ScrambledZipfianGenerator`: a rank is drawn from a zipfian over a fixed
//!   [`YCSB_ITEM_COUNT`] (10^10) ranks, whose ζ is the constant YCSB ships
//!   ([`YCSB_ZETAN`], for θ = 0.99; other θ get ζ computed in closed form,
//!   see [`zeta_static`]), then hashed with FNV-64 and reduced modulo the
//!   item count. The item count is `record_count + 2 × expected inserts + 1`
//!   (YCSB's `insertstart + insertcount + expectednewkeys`, an inclusive
//!   maximum), with the expected inserts taken from the operation count, as
//!   YCSB takes them from `operationcount`. Because 10^10 ranks fold onto
//!   the records, every record can be drawn and the hottest one gets about
//!   `1/ζ` = 3.8% of requests.
//! * **latest** is YCSB's `SkewedLatestGenerator`: the newest acknowledged
//!   record minus a zipfian rank over the acknowledged records, ζ extended
//!   incrementally as they grow.
//! * **uniform** is YCSB's `UniformLongGenerator` over the loaded records
//!   (`0..record_count`): records inserted during the run are not read.
//! * **hotspot** is YCSB's `HotspotIntegerGenerator` over the loaded records:
//!   a fraction `hotspot_op_fraction` of requests go uniformly to the first
//!   `hotspot_data_fraction` of the records, the rest uniformly to the others
//!   (the keys are hashed, so the hot set is scattered over the key space).
//!
//! Every chooser draws again while its record is not yet acknowledged, as
//! YCSB's `nextKeynum` does (bounded here, see [`KeyChooser::REDRAWS`]).
//!
//! ## Inserts: the acknowledged counter
//!
//! An insert claims the next record number from an [`AcknowledgedCounter`]
//! and acknowledges it when the write has returned; readers choose only
//! among records below the highest *contiguous* acknowledged one (YCSB's
//! `AcknowledgedCounterGenerator`). So a read never asks for a record whose
//! insert another thread has claimed but not finished.
//!
//! ## Where we differ from YCSB
//!
//! * A duration-bound run has no operation count to size the zipfian's item
//!   count from; when the acknowledged records outgrow it, the item count
//!   doubles (which reshuffles which records are hot, once per doubling).
//!   Count-bound runs, the default, never need it.
//! * `latest` can return record 0 (YCSB's never does, an off-by-one in its
//!   `SkewedLatestGenerator`).
//! * Unscrambled zipfian (`scrambled = false`) is YCSB's plain
//!   `ZipfianGenerator` over the item count; YCSB's core workload offers it
//!   only through its own API.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;

use crate::spec::{DistributionKind, WorkloadSpec};

/// The ranks YCSB's scrambled zipfian draws from before hashing
/// (`ScrambledZipfianGenerator.ITEM_COUNT` in YCSB 0.17 and earlier).
pub const YCSB_ITEM_COUNT: u64 = 10_000_000_000;
/// ζ(10^10, 0.99), the constant YCSB ships (`ScrambledZipfianGenerator.ZETAN`).
pub const YCSB_ZETAN: f64 = 26.469_028_201_783_02;
/// The θ for which YCSB's ζ constant was computed.
pub const YCSB_THETA: f64 = 0.99;

/// YCSB's 64-bit FNV-1a over the 8 little-endian bytes of `value`, made
/// non-negative as Java's `Math.abs` does.
pub fn fnv_hash64(mut value: u64) -> u64 {
    const OFFSET_BASIS: u64 = 0xCBF2_9CE4_8422_2325;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET_BASIS;
    for _ in 0..8 {
        hash ^= value & 0xff;
        hash = hash.wrapping_mul(PRIME);
        value >>= 8;
    }
    (hash as i64).unsigned_abs()
}

/// Writes keys `user<zero-padded hash>` into a caller-owned buffer, so the
/// hot loop formats a key without allocating.
#[derive(Debug, Clone, Copy)]
pub struct KeyFormat {
    pub key_size: usize,
}

impl KeyFormat {
    const PREFIX: &'static [u8] = b"user";

    /// A buffer the right size for [`KeyFormat::write`].
    pub fn buffer(&self) -> Vec<u8> {
        vec![b'0'; self.key_size]
    }

    /// Fills `buf` (of length `key_size`, at least 24) with the key of
    /// record `number`.
    pub fn write(&self, number: u64, buf: &mut [u8]) {
        buf[..Self::PREFIX.len()].copy_from_slice(Self::PREFIX);
        let mut hash = fnv_hash64(number);
        let mut at = buf.len();
        while at > Self::PREFIX.len() {
            at -= 1;
            buf[at] = b'0' + (hash % 10) as u8;
            hash /= 10;
        }
    }

    /// The key of record `number`, allocated (for tests and the load phase).
    pub fn key(&self, number: u64) -> Vec<u8> {
        let mut buf = self.buffer();
        self.write(number, &mut buf);
        buf
    }
}

/// ζ(n, θ) extended from `from` items (whose sum is `partial`) to `to`
/// items, term by term, as YCSB's `zetastatic` sums it.
fn zeta(from: u64, to: u64, theta: f64, partial: f64) -> f64 {
    let mut sum = partial;
    for i in from..to {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
    }
    sum
}

/// ζ(n, θ) = Σ_{k=1..n} k^-θ for any n: summed term by term up to 10^6,
/// and beyond that with the Euler–Maclaurin formula (integral, end-point
/// and first derivative terms; the next term is below 10^-20 there). YCSB
/// sums all 10^10 terms, which takes minutes; this takes milliseconds and
/// agrees with YCSB's shipped constant (see the tests).
pub fn zeta_static(n: u64, theta: f64) -> f64 {
    const EXACT: u64 = 1_000_000;
    if n <= EXACT {
        return zeta(0, n, theta, 0.0);
    }
    let head = zeta(0, EXACT - 1, theta, 0.0);
    let (m, n) = (EXACT as f64, n as f64);
    let f = |x: f64| x.powf(-theta);
    let df = |x: f64| -theta * x.powf(-theta - 1.0);
    let integral = (n.powf(1.0 - theta) - m.powf(1.0 - theta)) / (1.0 - theta);
    head + integral + (f(m) + f(n)) / 2.0 + (df(n) - df(m)) / 12.0
}

// ANCHOR: zipfian
/// YCSB's `ZipfianGenerator` (Gray et al., "Quickly generating
/// billion-record synthetic databases", SIGMOD 1994) over ranks
/// `0..items`: rank 0 with probability exactly `1/ζ`, rank 1 with
/// `2^-θ/ζ`, and the rest from Gray's closed-form approximation.
#[derive(Debug, Clone)]
pub struct Zipfian {
    /// The item count the generator was built for; YCSB's `eta` keeps it
    /// even after the count grows, and so do we.
    items: u64,
    /// The item count ζ is currently summed over.
    count_for_zeta: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    zeta_2: f64,
    eta: f64,
    half_pow_theta: f64,
}

impl Zipfian {
    /// Over `items` ranks, ζ summed term by term.
    pub fn new(items: u64, theta: f64) -> Zipfian {
        let items = items.max(1);
        Zipfian::with_zeta(items, theta, zeta_static(items, theta))
    }

    /// Over `items` ranks with a precomputed ζ(items, θ).
    pub fn with_zeta(items: u64, theta: f64, zeta_n: f64) -> Zipfian {
        let items = items.max(1);
        let zeta_2 = zeta(0, 2, theta, 0.0);
        Zipfian {
            items,
            count_for_zeta: items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            zeta_2,
            eta: (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n),
            half_pow_theta: 0.5f64.powf(theta),
        }
    }

    /// The item count ζ is summed over now.
    pub fn item_count(&self) -> u64 {
        self.count_for_zeta
    }

    pub fn zeta(&self) -> f64 {
        self.zeta_n
    }

    /// Extends ζ to `items` ranks (never shrinks), incrementally, and
    /// recomputes `eta` as YCSB's `nextLong(itemcount)` does.
    pub fn grow_to(&mut self, items: u64) {
        if items <= self.count_for_zeta {
            return;
        }
        self.zeta_n = zeta(self.count_for_zeta, items, self.theta, self.zeta_n);
        self.count_for_zeta = items;
        self.eta = (1.0 - (2.0 / self.items as f64).powf(1.0 - self.theta))
            / (1.0 - self.zeta_2 / self.zeta_n);
    }

    /// The rank for the uniform draw `u` in `[0, 1)`, rank 0 the most
    /// likely.
    pub fn rank_for(&self, u: f64) -> u64 {
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta {
            return 1.min(self.count_for_zeta - 1);
        }
        let rank =
            (self.count_for_zeta as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.count_for_zeta - 1)
    }

    /// A rank in `0..items`.
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        self.rank_for(rng.random())
    }
}

/// YCSB's `ScrambledZipfianGenerator`: a rank from a zipfian over
/// [`YCSB_ITEM_COUNT`] + 1 ranks (YCSB passes `0..=ITEM_COUNT`), hashed
/// with FNV-64 and reduced modulo `item_count`.
#[derive(Debug, Clone)]
pub struct ScrambledZipfian {
    ranks: Zipfian,
    item_count: u64,
}

impl ScrambledZipfian {
    pub fn new(item_count: u64, theta: f64) -> ScrambledZipfian {
        let ranks = YCSB_ITEM_COUNT + 1;
        // YCSB compares the constant with `==`; so do we.
        #[allow(clippy::float_cmp)]
        let zeta = if theta == YCSB_THETA {
            YCSB_ZETAN
        } else {
            zeta_static(ranks, theta)
        };
        ScrambledZipfian {
            ranks: Zipfian::with_zeta(ranks, theta, zeta),
            item_count: item_count.max(1),
        }
    }

    pub fn item_count(&self) -> u64 {
        self.item_count
    }

    /// The record a rank lands on.
    pub fn record_of_rank(&self, rank: u64) -> u64 {
        fnv_hash64(rank) % self.item_count
    }

    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        self.record_of_rank(self.ranks.next(rng))
    }

    /// The probability of the rank-0 record before hashing: `1/ζ`.
    pub fn top_rank_probability(&self) -> f64 {
        1.0 / self.ranks.zeta()
    }
}
// ANCHOR_END: zipfian

/// The insert counter shared by a run's threads: YCSB's
/// `AcknowledgedCounterGenerator`. An insert [`claim`](Self::claim)s a
/// record number, writes it, then [`acknowledge`](Self::acknowledge)s it;
/// [`acknowledged`](Self::acknowledged) is the length of the prefix of
/// records that are all written, which is what readers choose from.
#[derive(Debug)]
pub struct AcknowledgedCounter {
    next: AtomicU64,
    acknowledged: AtomicU64,
    /// Acknowledged numbers above the contiguous prefix (at most one per
    /// thread with an insert in flight).
    ahead: Mutex<BTreeSet<u64>>,
}

impl AcknowledgedCounter {
    /// A counter after `start` loaded records (all acknowledged).
    pub fn new(start: u64) -> AcknowledgedCounter {
        AcknowledgedCounter {
            next: AtomicU64::new(start),
            acknowledged: AtomicU64::new(start),
            ahead: Mutex::new(BTreeSet::new()),
        }
    }

    /// The record number of the next insert.
    pub fn claim(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks `number` written; extends the contiguous prefix if it can.
    pub fn acknowledge(&self, number: u64) {
        // A poisoned lock only means another worker panicked, which fails
        // the run anyway; the set itself is always consistent.
        let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        let mut prefix = self.acknowledged.load(Ordering::Relaxed);
        if number != prefix {
            ahead.insert(number);
            return;
        }
        prefix += 1;
        while ahead.remove(&prefix) {
            prefix += 1;
        }
        self.acknowledged.store(prefix, Ordering::Release);
    }

    /// Records `0..acknowledged()` are all written.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Acquire)
    }

    /// Record numbers handed out so far (written or in flight).
    pub fn claimed(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }
}

/// Picks record numbers for one client thread.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    /// Uniform over the loaded records.
    Uniform { records: u64 },
    /// Hot set: the first `hot` records get `op_fraction` of requests.
    Hotspot {
        records: u64,
        hot: u64,
        op_fraction: f64,
    },
    /// YCSB's scrambled zipfian over a fixed item count.
    Scrambled { generator: ScrambledZipfian },
    /// A plain zipfian over the item count (record 0 the hottest).
    Zipfian { zipfian: Zipfian },
    /// A zipfian over recency, grown as records are acknowledged.
    Latest { zipfian: Zipfian },
}

impl KeyChooser {
    /// How many draws beyond the acknowledged records are retried before
    /// the last one is folded into range. YCSB retries forever; with the
    /// item count a small multiple of the loaded records (one plus twice the
    /// expected inserts per loaded record), 1,000 misses in a row do not
    /// happen outside contrived specs (a handful of records and millions of
    /// expected inserts).
    pub const REDRAWS: usize = 1000;

    /// YCSB's `insertstart + insertcount + expectednewkeys` + 1: the
    /// scrambled zipfian's item count for `spec`.
    pub fn zipfian_item_count(spec: &WorkloadSpec) -> u64 {
        let operations = spec
            .operation_count
            .map_or(0, |ops| ops + spec.warmup_operations);
        // YCSB truncates `opcount * insertproportion * 2.0` to an int.
        let expected_new = (operations as f64 * spec.mix.insert * 2.0) as u64;
        spec.record_count + expected_new + 1
    }

    pub fn for_spec(spec: &WorkloadSpec) -> KeyChooser {
        let records = spec.record_count.max(1);
        match spec.distribution {
            DistributionKind::Uniform => KeyChooser::Uniform { records },
            DistributionKind::Hotspot => KeyChooser::Hotspot {
                records,
                // YCSB: `(int) (interval * hotsetFraction)`.
                hot: (records as f64 * spec.hotspot_data_fraction) as u64,
                op_fraction: spec.hotspot_op_fraction,
            },
            DistributionKind::Zipfian if spec.scrambled => KeyChooser::Scrambled {
                generator: ScrambledZipfian::new(
                    Self::zipfian_item_count(spec),
                    spec.zipfian_theta,
                ),
            },
            DistributionKind::Zipfian => KeyChooser::Zipfian {
                zipfian: Zipfian::new(Self::zipfian_item_count(spec), spec.zipfian_theta),
            },
            DistributionKind::Latest => KeyChooser::Latest {
                zipfian: Zipfian::new(records, spec.zipfian_theta),
            },
        }
    }

    /// One draw, possibly beyond the acknowledged records.
    fn draw(&mut self, rng: &mut impl Rng, acknowledged: u64) -> u64 {
        match self {
            KeyChooser::Uniform { records } => rng.random_range(0..*records),
            KeyChooser::Hotspot {
                records,
                hot,
                op_fraction,
            } => {
                let cold = *records - *hot;
                let to_hot = rng.random::<f64>() < *op_fraction;
                if (to_hot && *hot > 0) || cold == 0 {
                    rng.random_range(0..(*hot).max(1))
                } else {
                    *hot + rng.random_range(0..cold)
                }
            }
            KeyChooser::Scrambled { generator } => {
                if acknowledged > generator.item_count {
                    // Only duration-bound runs outgrow the item count.
                    let grown = (generator.item_count * 2).max(acknowledged);
                    generator.item_count = grown;
                }
                generator.next(rng)
            }
            KeyChooser::Zipfian { zipfian } => {
                zipfian.grow_to(acknowledged);
                zipfian.next(rng)
            }
            KeyChooser::Latest { zipfian } => {
                zipfian.grow_to(acknowledged);
                acknowledged - 1 - zipfian.next(rng).min(acknowledged - 1)
            }
        }
    }

    /// A record number below `acknowledged` (the records known written, at
    /// least 1).
    pub fn next(&mut self, rng: &mut impl Rng, acknowledged: u64) -> u64 {
        let acknowledged = acknowledged.max(1);
        let mut number = 0;
        for _ in 0..Self::REDRAWS {
            number = self.draw(rng, acknowledged);
            if number < acknowledged {
                return number;
            }
        }
        number % acknowledged
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::spec::{built_in_specs, resolve_one};

    /// The record counts of our built-in engine specs, each once.
    fn spec_record_counts() -> Vec<u64> {
        let mut counts: Vec<u64> = built_in_specs()
            .unwrap()
            .into_iter()
            .filter(|s| s.distribution == DistributionKind::Zipfian)
            .map(|s| s.record_count)
            .collect();
        counts.sort_unstable();
        counts.dedup();
        counts
    }

    fn draw_counts(chooser: &mut KeyChooser, acknowledged: u64, draws: usize) -> HashMap<u64, u64> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = HashMap::new();
        for _ in 0..draws {
            *counts
                .entry(chooser.next(&mut rng, acknowledged))
                .or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn zeta_in_closed_form_matches_the_constant_ycsb_ships() {
        // YCSB's ZETAN is zetastatic(10^10, 0.99), a sum of 10^10 terms in
        // doubles (ScrambledZipfianGenerator.java). Our Euler–Maclaurin sum
        // must agree to within the rounding such a long sum accumulates.
        let ours = zeta_static(YCSB_ITEM_COUNT, YCSB_THETA);
        assert!(
            ((ours - YCSB_ZETAN) / YCSB_ZETAN).abs() < 1e-6,
            "ζ(10^10, 0.99): ours {ours}, YCSB {YCSB_ZETAN}"
        );
        // And the closed form agrees with term-by-term sums where both run.
        for n in [2_000_000u64, 3_000_000] {
            let summed = zeta(0, n, 0.9, 0.0);
            assert!((zeta_static(n, 0.9) - summed).abs() < 1e-9 * summed);
        }
    }

    #[test]
    fn hottest_records_get_ycsbs_share_for_our_specs_record_counts() {
        // YCSB's figures, from its generator's definition (Gray's method is
        // exact for the two top ranks): the top rank is drawn with
        // probability 1/ZETAN = 3.78%, the second with 2^-0.99/ZETAN = 1.90%,
        // and with 10^10 ranks folded onto at most millions of records, the
        // rest adds about 1/records to any record.
        let top = 1.0 / YCSB_ZETAN;
        let second = 0.5f64.powf(YCSB_THETA) / YCSB_ZETAN;
        const DRAWS: usize = 1_000_000;
        for records in spec_record_counts() {
            let mut chooser = KeyChooser::Scrambled {
                generator: ScrambledZipfian::new(records, YCSB_THETA),
            };
            let counts = draw_counts(&mut chooser, records, DRAWS);
            let mut shares: Vec<f64> = counts.values().map(|c| *c as f64 / DRAWS as f64).collect();
            shares.sort_by(|a, b| b.total_cmp(a));
            // Five standard errors of a 1M-draw share, and the background.
            let slack = |p: f64| 5.0 * (p * (1.0 - p) / DRAWS as f64).sqrt() + 2.0 / records as f64;
            assert!(
                (shares[0] - top).abs() < slack(top),
                "{records} records: hottest share {:.4}, YCSB's {top:.4}",
                shares[0]
            );
            assert!(
                (shares[1] - second).abs() < slack(second),
                "{records} records: second share {:.4}, YCSB's {second:.4}",
                shares[1]
            );
        }
    }

    #[test]
    fn every_record_of_our_specs_is_reachable() {
        // YCSB's figure: 100% of the records, because the 10^10 ranks fold
        // onto them. Shown here by enumeration: every record is the image of
        // some rank among the first 20 × records (the zipfian's sampler can
        // return each of those ranks: its smallest step there is far above
        // a double's resolution).
        for records in spec_record_counts() {
            let generator = ScrambledZipfian::new(records, YCSB_THETA);
            let mut reached = vec![false; records as usize];
            let mut missing = records;
            let mut rank = 0;
            while missing > 0 && rank < 20 * records {
                let r = generator.record_of_rank(rank) as usize;
                if !reached[r] {
                    reached[r] = true;
                    missing -= 1;
                }
                rank += 1;
            }
            assert_eq!(missing, 0, "{records} records: {missing} unreachable");
        }
        // And by sampling: about half the requests fall in the long tail of
        // ranks, spread evenly, so 20 draws per record see nearly all of
        // them (the old generator, a zipfian over the records themselves,
        // reached only 60-72%).
        let records = 100_000;
        let mut chooser = KeyChooser::Scrambled {
            generator: ScrambledZipfian::new(records, YCSB_THETA),
        };
        let seen = draw_counts(&mut chooser, records, 20 * records as usize).len();
        assert!(
            seen as f64 > 0.99 * records as f64,
            "saw {seen} of {records} records"
        );
    }

    #[test]
    fn item_count_is_ycsbs_records_plus_twice_the_expected_inserts() {
        let mut spec = resolve_one("write-heavy").unwrap();
        spec.record_count = 1000;
        spec.operation_count = Some(10_000);
        spec.warmup_operations = 0;
        // 10,000 ops × 20% inserts × 2 + 1000 records + 1 (inclusive max).
        assert_eq!(KeyChooser::zipfian_item_count(&spec), 1000 + 4000 + 1);
    }

    #[test]
    fn zipfian_draws_never_reach_unacknowledged_records() {
        let mut spec = resolve_one("write-heavy").unwrap();
        spec.record_count = 100;
        let mut chooser = KeyChooser::for_spec(&spec);
        let mut rng = SmallRng::seed_from_u64(1);
        for acknowledged in [1, 2, 50, 100, 150] {
            for _ in 0..10_000 {
                assert!(chooser.next(&mut rng, acknowledged) < acknowledged);
            }
        }
    }

    #[test]
    fn plain_zipfian_gives_the_top_ranks_their_exact_share() {
        let items = 1000;
        let zipfian = Zipfian::new(items, 0.99);
        let mut chooser = KeyChooser::Zipfian {
            zipfian: zipfian.clone(),
        };
        let counts = draw_counts(&mut chooser, items, 400_000);
        for rank in 0..2u64 {
            let expected = (1.0 / ((rank + 1) as f64).powf(0.99)) / zipfian.zeta();
            let got = counts[&rank] as f64 / 400_000.0;
            assert!(
                (got - expected).abs() < 0.05 * expected,
                "rank {rank}: {got}, {expected}"
            );
        }
    }

    #[test]
    fn latest_favours_the_newest_acknowledged_records() {
        let mut spec = resolve_one("ycsb-d").unwrap();
        spec.record_count = 1000;
        let mut chooser = KeyChooser::for_spec(&spec);
        let acknowledged = 2000;
        let counts = draw_counts(&mut chooser, acknowledged, 400_000);
        let share = |range: std::ops::Range<u64>| {
            range
                .map(|r| counts.get(&r).copied().unwrap_or(0))
                .sum::<u64>() as f64
                / 400_000.0
        };
        // The newest record is rank 0 of a zipfian over 2000 items; YCSB
        // keeps eta from the 1000 it started with, so only rank 0 is exact.
        let expected = 1.0 / zeta_static(acknowledged, 0.99);
        let newest = share(acknowledged - 1..acknowledged);
        assert!(
            (newest - expected).abs() < 0.1 * expected,
            "{newest} {expected}"
        );
        assert!(share(1800..2000) > 0.6);
        assert!(share(0..1000) < 0.15);
        assert!(counts.keys().all(|r| *r < acknowledged));
    }

    #[test]
    fn uniform_and_hotspot_cover_the_loaded_records_as_ycsb_does() {
        let records = 1000;
        // Uniform over the loaded records only, however many were inserted.
        let counts = draw_counts(&mut KeyChooser::Uniform { records }, 5000, 400_000);
        assert!(counts.keys().all(|r| *r < records));
        let expected = 400.0;
        assert!(
            counts
                .values()
                .all(|c| (*c as f64 - expected).abs() < 0.25 * expected)
        );
        // YCSB's default hotspot: 80% of requests to the first 20%.
        let mut hotspot = KeyChooser::Hotspot {
            records,
            hot: 200,
            op_fraction: 0.8,
        };
        let counts = draw_counts(&mut hotspot, records, 400_000);
        let hot: u64 = (0..200).map(|r| counts.get(&r).copied().unwrap_or(0)).sum();
        let hot_share = hot as f64 / 400_000.0;
        assert!((hot_share - 0.8).abs() < 0.01, "hot share {hot_share}");
        assert!(counts.keys().all(|r| *r < records));
    }

    #[test]
    fn acknowledged_counter_exposes_only_the_contiguous_prefix() {
        let counter = AcknowledgedCounter::new(10);
        let (a, b, c) = (counter.claim(), counter.claim(), counter.claim());
        assert_eq!((a, b, c), (10, 11, 12));
        counter.acknowledge(12);
        counter.acknowledge(11);
        // 10 is still in flight: readers see only 0..10.
        assert_eq!(counter.acknowledged(), 10);
        counter.acknowledge(10);
        assert_eq!(counter.acknowledged(), 13);
        assert_eq!(counter.claimed(), 13);
    }

    #[test]
    fn acknowledged_counter_is_exact_under_concurrent_inserts() {
        let counter = AcknowledgedCounter::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        let n = counter.claim();
                        // Never more than the claims so far.
                        assert!(counter.acknowledged() <= counter.claimed());
                        counter.acknowledge(n);
                    }
                });
            }
        });
        assert_eq!(counter.acknowledged(), 40_000);
    }

    #[test]
    fn keys_have_the_ycsb_shape_and_size() {
        let format = KeyFormat { key_size: 24 };
        let key = format.key(0);
        assert_eq!(key.len(), 24);
        assert!(key.starts_with(b"user"));
        assert!(key[4..].iter().all(u8::is_ascii_digit));
        assert_ne!(format.key(1), format.key(2));
        assert_eq!(KeyFormat { key_size: 30 }.key(5).len(), 30);
        assert!(format.key(1) > format.key(2) || format.key(2) > format.key(3));
    }

    #[test]
    fn fnv_matches_ycsb() {
        // YCSB's Utils.fnvhash64, written out as Java computes it (signed
        // arithmetic, Math.abs at the end).
        for v in [0u64, 1, 12345, u64::MAX / 3] {
            assert_eq!(fnv_hash64(v), fnv_reference(v));
        }
    }

    fn fnv_reference(v: u64) -> u64 {
        let mut h: i64 = 0xCBF29CE484222325u64 as i64;
        let mut val = v as i64;
        for _ in 0..8 {
            let octet = val & 0xff;
            val >>= 8;
            h ^= octet;
            h = h.wrapping_mul(1099511628211);
        }
        h.unsigned_abs()
    }
}
