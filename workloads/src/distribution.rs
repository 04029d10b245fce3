//! Request distributions and the YCSB key format.
//!
//! Each client thread owns a [`KeyChooser`] and a seeded RNG, so choosing a
//! key costs no synchronisation and a run with a fixed seed is repeatable.
//! Records are numbered `0..n`; the number becomes a key with [`KeyFormat`]:
//! `user` followed by the FNV-1a hash of the number in decimal, zero-padded
//! to the key size, exactly as YCSB's `insertorder=hashed` builds keys. The
//! hash scatters consecutive record numbers over the key space, so inserts
//! land everywhere in the tree, as they do in YCSB.
//!
//! The generators follow YCSB's `ZipfianGenerator` (Gray et al., "Quickly
//! generating billion-record synthetic databases", SIGMOD 1994):
//!
//! * zipfian: rank k (0-based) is drawn with probability `1/(k+1)^θ / ζ(n)`;
//!   ζ(n) is summed once per item count and extended incrementally when the
//!   count grows;
//! * scrambled zipfian: a zipfian rank, hashed with FNV-1a and reduced
//!   modulo the item count, so the popular records are spread out instead
//!   of being records 0, 1, 2, ... (YCSB draws from a 10^10-item zipfian
//!   with a precomputed ζ before hashing; we draw from a zipfian over the
//!   item count itself, which costs one O(n) sum at start);
//! * latest: `newest - zipfian`, so the most recently inserted record is the
//!   most popular;
//! * uniform: every existing record equally likely.

use rand::Rng;

use crate::spec::{DistributionKind, WorkloadSpec};

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

/// ζ(n, θ) extended from `from` items (whose sum is `partial`) to `to` items.
fn zeta(from: u64, to: u64, theta: f64, partial: f64) -> f64 {
    let mut sum = partial;
    for i in from..to {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
    }
    sum
}

/// YCSB's zipfian generator over ranks `0..items`.
#[derive(Debug, Clone)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    zeta_2: f64,
    eta: f64,
    half_pow_theta: f64,
}

impl Zipfian {
    pub fn new(items: u64, theta: f64) -> Zipfian {
        let items = items.max(1);
        let zeta_2 = zeta(0, 2, theta, 0.0);
        let mut z = Zipfian {
            items: 0,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n: 0.0,
            zeta_2,
            eta: 0.0,
            half_pow_theta: 0.5f64.powf(theta),
        };
        z.grow_to(items);
        z
    }

    pub fn items(&self) -> u64 {
        self.items
    }

    /// The probability of rank `k`: `1/(k+1)^θ / ζ(n)`.
    pub fn probability(&self, rank: u64) -> f64 {
        1.0 / ((rank + 1) as f64).powf(self.theta) / self.zeta_n
    }

    /// Extends the item count (never shrinks it); ζ is extended, not
    /// recomputed.
    pub fn grow_to(&mut self, items: u64) {
        if items <= self.items {
            return;
        }
        self.zeta_n = zeta(self.items, items, self.theta, self.zeta_n);
        self.items = items;
        self.eta =
            (1.0 - (2.0 / items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta_2 / self.zeta_n);
    }

    /// A rank in `0..items`, rank 0 the most likely.
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta {
            return 1.min(self.items - 1);
        }
        let rank = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items - 1)
    }
}

/// Picks record numbers for one client thread.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    Uniform,
    /// A zipfian over a fixed item space (`record_count` plus the expected
    /// inserts); draws past the records that exist yet are drawn again.
    Zipfian {
        zipfian: Zipfian,
        scrambled: bool,
    },
    /// A zipfian over recency, grown as records are inserted.
    Latest {
        zipfian: Zipfian,
    },
}

impl KeyChooser {
    /// How many times a draw beyond the existing records is retried before
    /// it is folded into range; with the item space at most twice the
    /// records, 16 misses in a row have probability below 2^-16.
    const REDRAWS: usize = 16;

    pub fn for_spec(spec: &WorkloadSpec) -> KeyChooser {
        match spec.distribution {
            DistributionKind::Uniform => KeyChooser::Uniform,
            DistributionKind::Zipfian => {
                // YCSB sizes the space for the inserts it expects (twice the
                // expected number), so new records can become popular too.
                let expected_ops = spec.operation_count.unwrap_or(spec.record_count) as f64;
                let expected_inserts = (expected_ops * spec.mix.insert * 2.0) as u64;
                KeyChooser::Zipfian {
                    zipfian: Zipfian::new(spec.record_count + expected_inserts, spec.zipfian_theta),
                    scrambled: spec.scrambled,
                }
            }
            DistributionKind::Latest => KeyChooser::Latest {
                zipfian: Zipfian::new(spec.record_count, spec.zipfian_theta),
            },
        }
    }

    /// A record number below `existing` (the number of records inserted so
    /// far, at least 1).
    pub fn next(&mut self, rng: &mut impl Rng, existing: u64) -> u64 {
        let existing = existing.max(1);
        match self {
            KeyChooser::Uniform => rng.random_range(0..existing),
            KeyChooser::Zipfian { zipfian, scrambled } => {
                let mut number = 0;
                for _ in 0..Self::REDRAWS {
                    number = zipfian.next(rng);
                    if *scrambled {
                        number = fnv_hash64(number) % zipfian.items();
                    }
                    if number < existing {
                        return number;
                    }
                }
                number % existing
            }
            KeyChooser::Latest { zipfian } => {
                zipfian.grow_to(existing);
                existing - 1 - zipfian.next(rng).min(existing - 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::spec::resolve_one;

    const DRAWS: usize = 400_000;

    fn counts(chooser: &mut KeyChooser, existing: u64, seed: u64) -> Vec<u64> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut counts = vec![0u64; existing as usize];
        for _ in 0..DRAWS {
            counts[chooser.next(&mut rng, existing) as usize] += 1;
        }
        counts
    }

    fn share(count: u64) -> f64 {
        count as f64 / DRAWS as f64
    }

    #[test]
    fn zipfian_gives_the_most_popular_items_their_expected_share() {
        let items = 1000;
        let zipfian = Zipfian::new(items, 0.99);
        let mut chooser = KeyChooser::Zipfian {
            zipfian: zipfian.clone(),
            scrambled: false,
        };
        let counts = counts(&mut chooser, items, 7);
        // Gray's method is exact for ranks 0 and 1 and a continuous
        // approximation beyond, so only those two are held to the formula.
        for rank in 0..2 {
            let expected = zipfian.probability(rank);
            let got = share(counts[rank as usize]);
            assert!(
                (got - expected).abs() < 0.05 * expected,
                "rank {rank}: share {got:.4}, expected {expected:.4}"
            );
        }
        // The top 1% of items take far more than 1% of requests.
        let top: u64 = counts[..10].iter().sum();
        let expected: f64 = (0..10).map(|r| zipfian.probability(r)).sum();
        assert!(
            (share(top) - expected).abs() < 0.1 * expected,
            "top 10 share {}, expected {expected}",
            share(top)
        );
        assert!(share(top) > 0.3);
    }

    #[test]
    fn scrambled_zipfian_keeps_the_skew_but_spreads_the_popular_items() {
        let items = 1000;
        let mut chooser = KeyChooser::Zipfian {
            zipfian: Zipfian::new(items, 0.99),
            scrambled: true,
        };
        let counts = counts(&mut chooser, items, 11);
        let mut ranked: Vec<(u64, usize)> =
            counts.iter().enumerate().map(|(i, c)| (*c, i)).collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let hottest: Vec<usize> = ranked[..10].iter().map(|(_, i)| *i).collect();
        // Still skewed: the hottest record gets about 1/ζ(n) of requests.
        assert!(
            share(ranked[0].0) > 0.1,
            "hottest share {}",
            share(ranked[0].0)
        );
        // But the hot records are not the first ones: they span the range.
        let (low, high) = (hottest.iter().min().unwrap(), hottest.iter().max().unwrap());
        assert!(
            high - low > items as usize / 2,
            "hot records {hottest:?} are clustered"
        );
        assert!(
            hottest.iter().filter(|i| **i < 10).count() <= 2,
            "{hottest:?}"
        );
    }

    #[test]
    fn latest_favours_the_newest_records() {
        let mut spec = resolve_one("ycsb-d").unwrap();
        spec.record_count = 1000;
        let mut chooser = KeyChooser::for_spec(&spec);
        let existing = 2000; // 1000 inserted since the load
        let counts = counts(&mut chooser, existing, 3);
        let newest = share(counts[existing as usize - 1]);
        let expected = Zipfian::new(existing, 0.99).probability(0);
        assert!(
            (newest - expected).abs() < 0.1 * expected,
            "newest {newest}, expected {expected}"
        );
        let newest_tenth: u64 = counts[(existing as usize * 9 / 10)..].iter().sum();
        assert!(
            share(newest_tenth) > 0.6,
            "newest 10% got {}",
            share(newest_tenth)
        );
        let oldest_half: u64 = counts[..existing as usize / 2].iter().sum();
        assert!(
            share(oldest_half) < 0.15,
            "oldest half got {}",
            share(oldest_half)
        );
    }

    #[test]
    fn uniform_covers_the_range_evenly() {
        let existing = 1000;
        let counts = counts(&mut KeyChooser::Uniform, existing, 5);
        let expected = DRAWS as f64 / existing as f64;
        for (i, c) in counts.iter().enumerate() {
            assert!(
                (*c as f64 - expected).abs() < 0.25 * expected,
                "record {i} drawn {c} times, expected about {expected}"
            );
        }
    }

    #[test]
    fn zipfian_never_returns_records_that_do_not_exist() {
        let mut spec = resolve_one("write-heavy").unwrap();
        spec.record_count = 100;
        let mut chooser = KeyChooser::for_spec(&spec);
        let mut rng = SmallRng::seed_from_u64(1);
        for existing in [1, 2, 50, 100, 150] {
            for _ in 0..10_000 {
                assert!(chooser.next(&mut rng, existing) < existing);
            }
        }
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
        // Consecutive records are scattered, not adjacent.
        assert!(format.key(1) > format.key(2) || format.key(2) > format.key(3));
    }

    #[test]
    fn fnv_matches_ycsb() {
        // YCSB's Utils.fnvhash64(0) and (1), computed by hand from the
        // algorithm: offset basis, xor each of the 8 bytes, multiply.
        assert_eq!(fnv_hash64(0), fnv_reference(0));
        assert_eq!(fnv_hash64(12345), fnv_reference(12345));
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
