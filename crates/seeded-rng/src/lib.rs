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
use std::mem::MaybeUninit;

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
        unit_f32_from(self.inner.next_u32())
    }

    /// Writes the next `out.len()` values of [`SeededRng::unit_f32`] into `out`, the same
    /// values in the same order, drawn a buffer of words at a time rather than a word per
    /// call, and returns them. `out` need not be initialised: a large buffer is written once.
    pub fn fill_unit_f32<'a>(&mut self, out: &'a mut [MaybeUninit<f32>]) -> &'a mut [f32] {
        const WORDS: usize = 256;
        let mut bytes = [0u8; 4 * WORDS];
        for run in out.chunks_mut(WORDS) {
            // Whole words, little-endian: the generator hands out the same words, in the same
            // order, as it would to `next_u32`.
            let bytes = &mut bytes[..4 * run.len()];
            self.inner.fill_bytes(bytes);
            for (value, word) in run.iter_mut().zip(bytes.chunks_exact(4)) {
                value.write(unit_f32_from(u32::from_le_bytes([word[0], word[1], word[2], word[3]])));
            }
        }
        // SAFETY: every value of `out` was written above; `MaybeUninit<f32>` has `f32`'s layout.
        unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) }
    }

    /// This stream as it will be after `words` more 32-bit words ([`SeededRng::unit_f32`]
    /// takes one, each other draw two): one long run of draws can then be drawn in pieces,
    /// each from its own copy, on any number of threads, with the values of one draw after
    /// another.
    pub fn ahead(&self, words: u64) -> SeededRng {
        let mut inner = self.inner.clone();
        inner.set_word_pos(self.inner.get_word_pos() + u128::from(words));
        SeededRng { inner }
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

/// A 32-bit word as a uniform value in [0, 1): its top 24 bits, which a float32 holds exactly.
fn unit_f32_from(word: u32) -> f32 {
    (word >> 8) as f32 / (1u32 << 24) as f32
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
    fn bulk_and_pieced_draws_are_the_draws_one_by_one() {
        let mut one_by_one = SeededRng::new(3, "dropout");
        one_by_one.next_u64(); // start off a block's first word
        let mut bulk = one_by_one.ahead(0);
        let expected: Vec<f32> = (0..1000).map(|_| one_by_one.unit_f32()).collect();

        let mut buffer = [MaybeUninit::uninit(); 1000];
        let (first, rest) = buffer.split_at_mut(517);
        let mut drawn = bulk.fill_unit_f32(first).to_vec();
        drawn.extend_from_slice(bulk.fill_unit_f32(rest));
        assert_eq!(drawn, expected);
        assert_eq!(
            bulk.next_u64(),
            one_by_one.ahead(0).next_u64(),
            "the bulk draw leaves the stream where one by one does"
        );

        let start = SeededRng::new(3, "dropout").ahead(2);
        for at in [0, 1, 15, 16, 63, 64, 65, 700] {
            assert_eq!(start.ahead(at).unit_f32(), expected[at as usize], "a piece starting at draw {at}");
        }
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
