//! The pipeline's one source of randomness.
//!
//! Every random choice — the train/validation split, weight initialisation, the order of
//! training windows, dropout masks, the composer's primer window and sampling — draws from a
//! [`SeededRng`] made from the single `seed` in `pipeline.toml` plus a purpose label.
//!
//! Key design decision: each purpose gets its *own* stream ([`SeededRng::new`] mixes the
//! label into the seed) instead of sharing one generator. Changing how many numbers one
//! step draws (say, a bigger model draws more initial weights) then cannot shift the
//! shuffling or the split, so a run differs from another only where its config differs.
//! The generator is ChaCha8, whose output is specified and identical on every platform.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

/// A reproducible random stream. Same seed and label, same numbers, on every machine.
pub struct SeededRng {
    inner: ChaCha8Rng,
}

impl SeededRng {
    /// The stream for `purpose` (a short label such as `"split"`) under the global `seed`.
    pub fn new(seed: u64, purpose: &str) -> Self {
        // FNV-1a folds the label into the seed; ChaCha's own seeding then spreads it.
        let mut mixed = seed ^ 0xcbf2_9ce4_8422_2325;
        for byte in purpose.bytes() {
            mixed = (mixed ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        SeededRng { inner: ChaCha8Rng::seed_from_u64(mixed) }
    }

    /// How far the stream has advanced, for checkpoints: a stream made with the same seed
    /// and purpose and moved to this position continues with exactly the same numbers.
    pub fn position(&self) -> u128 {
        self.inner.get_word_pos()
    }

    /// Moves the stream to a position from [`SeededRng::position`].
    pub fn set_position(&mut self, position: u128) {
        self.inner.set_word_pos(position);
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Uniform in [0, 1), with 24 bits of precision.
    pub fn unit_f32(&mut self) -> f32 {
        (self.inner.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }

    /// Uniform in [0, 1), with 53 bits of precision.
    pub fn unit_f64(&mut self) -> f64 {
        (self.inner.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n`. Panics if `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0) has no value to return");
        // Lemire's multiply-shift: unbiased enough for n far below 2^64, and branch-free.
        ((u128::from(self.inner.next_u64()) * n as u128) >> 64) as usize
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
    fn same_seed_and_purpose_repeat_and_purposes_differ() {
        let draw = |seed, purpose| {
            let mut rng = SeededRng::new(seed, purpose);
            (0..8).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7, "split"), draw(7, "split"));
        assert_ne!(draw(7, "split"), draw(7, "init"));
        assert_ne!(draw(7, "split"), draw(8, "split"));
    }

    #[test]
    fn a_saved_position_resumes_the_stream() {
        let mut rng = SeededRng::new(5, "dropout");
        for _ in 0..37 {
            rng.unit_f32();
        }
        let position = rng.position();
        let expected: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        let mut resumed = SeededRng::new(5, "dropout");
        resumed.set_position(position);
        assert_eq!((0..5).map(|_| resumed.next_u64()).collect::<Vec<_>>(), expected);
    }

    #[test]
    fn ranges_hold() {
        let mut rng = SeededRng::new(1, "t");
        for _ in 0..10_000 {
            let x = rng.unit_f32();
            assert!((0.0..1.0).contains(&x));
            assert!(rng.below(3) < 3);
        }
        let mut items: Vec<u32> = (0..100).collect();
        rng.shuffle(&mut items);
        let mut sorted = items.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(items, sorted);
    }
}
