//! The crate's one seeded pseudo-random generator: SplitMix64 (Steele, Lea & Flood, 2014).
//!
//! The synthetic world draws only with integer arithmetic and IEEE-exact float operations
//! (`+ − × ÷`, `sqrt`), so a seed gives the same scenes on every platform and with every
//! version of every dependency. Seeded initialisation ([`crate::model::init`]) also uses
//! [`SplitMix64::unit_f64`] and [`SplitMix64::normal_f64`] (Box–Muller, which calls `ln` and
//! `cos`).

/// The SplitMix64 finaliser: a bijective 64-bit mix.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes a seed and a sequence of indices into one well-mixed 64-bit value, such that
/// `hash(S, [i, ...])` streams for different `S` or `i` are independent.
pub fn hash(seed: u64, parts: &[u64]) -> u64 {
    let mut h = mix64(seed ^ 0x5851_f42d_4c95_7f2d);
    for &p in parts {
        h = mix64(h.wrapping_add(GAMMA) ^ mix64(p.wrapping_add(0x1405_7b7e_f767_814f)));
    }
    h
}

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for stream `parts` of `seed` (see [`hash`]).
    pub fn stream(seed: u64, parts: &[u64]) -> Self {
        Self::new(hash(seed, parts))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)` with 24 bits of precision.
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller on two [`SplitMix64::unit_f64`] draws).
    pub fn normal_f64(&mut self) -> f64 {
        let u1 = self.unit_f64().max(1e-300);
        let u2 = self.unit_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Uniform integer in `[0, n)`; 0 when `n == 0`.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift reduction (bias < 2^-32 for the small n used here).
        ((self.next_u64() >> 32).wrapping_mul(n as u64) >> 32) as usize
    }

    /// Uniform integer in `[lo, hi]` (inclusive).
    pub fn range_incl(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f32) -> bool {
        self.f32() < p
    }

    /// Approximately standard normal (Irwin–Hall sum of four uniforms, rescaled): no
    /// transcendental functions, so identical on every platform.
    pub fn normalish(&mut self) -> f32 {
        let s = self.f32() + self.f32() + self.f32() + self.f32();
        // The sum of 4 U(0,1) has mean 2 and variance 4/12.
        (s - 2.0) * 1.732_050_8
    }

    /// A uniformly chosen element; `None` for an empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(self.below(items.len()))
        }
    }

    /// An index drawn with probability proportional to `weights` (`None` if all are ≤ 0).
    pub fn weighted(&mut self, weights: &[f32]) -> Option<usize> {
        let total: f32 = weights.iter().map(|w| w.max(0.0)).sum();
        if total <= 0.0 {
            return None;
        }
        let mut r = self.f32() * total;
        let mut last = None;
        for (i, &w) in weights.iter().enumerate() {
            if w <= 0.0 {
                continue;
            }
            last = Some(i);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        last
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_published_sequence() {
        // First outputs of SplitMix64 seeded with 1234567 (the reference C implementation).
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(r.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn uniform_helpers_stay_in_range() {
        let mut r = SplitMix64::new(7);
        let mut hist = [0usize; 5];
        for _ in 0..10_000 {
            let f = r.f32();
            assert!((0.0..1.0).contains(&f));
            hist[r.below(5)] += 1;
            let k = r.range_incl(2, 4);
            assert!((2..=4).contains(&k));
        }
        assert!(hist.iter().all(|&c| (1800..2200).contains(&c)), "{hist:?}");
    }
}
