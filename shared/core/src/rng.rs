//! The one pseudo-random source: SplitMix64 (Steele, Lea and Flood, 2014).
//! Tiny, seedable and reproducible; headroom needs coin flips and jitter, not
//! cryptography, so no random-number crate. Used by the retry jitter, the
//! testbed's fault proxy and the benchmarks' synthetic networks.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a well-mixed 64-bit value from any input.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seeded sequence: the same seed gives the same values on every machine.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn seeded(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// In [0, n); the modulo bias is negligible for the small `n` used here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A process-wide sequence for values that must differ between calls and
/// processes (retry jitter): seeded from the clock and the process id on
/// first use, advanced atomically so concurrent tasks never share a value.
pub fn next_in_process() -> u64 {
    static STATE: OnceLock<AtomicU64> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        AtomicU64::new(mix(nanos ^ u64::from(std::process::id()).rotate_left(32)))
    });
    mix(state.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed).wrapping_add(GOLDEN_GAMMA))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let (mut a, mut b) = (SplitMix64::seeded(42), SplitMix64::seeded(42));
        let first: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
        // Reference values of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        let mut zero = SplitMix64::seeded(0);
        assert_eq!(zero.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(zero.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn floats_stay_in_the_unit_interval_and_spread() {
        let mut rng = SplitMix64::seeded(7);
        let values: Vec<f64> = (0..10_000).map(|_| rng.next_f64()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let below_half = values.iter().filter(|v| **v < 0.5).count();
        assert!((4_500..5_500).contains(&below_half), "{below_half}");
    }

    #[test]
    fn process_values_differ_between_calls() {
        let values: std::collections::BTreeSet<u64> = (0..100).map(|_| next_in_process()).collect();
        assert_eq!(values.len(), 100);
    }
}
