//! The bfloat16 number format: float32 with the low 16 bits of the mantissa dropped (8 bits
//! of precision, float32's range), as the bfloat16 products read their operands: rounding
//! one value ([`round`], [`pair`]), and whole runs by AVX-512 BF16's own conversions
//! ([`round_pairs`], [`round_adjacent`]).

use std::mem::MaybeUninit;

/// Whether this processor multiplies bfloat16 (AVX-512 BF16); the bf16 precision needs it.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` rounded to the nearest bfloat16 (ties to even), as its 16 bits. NaN stays NaN.
/// Written as a select rather than an early return so that loops over it vectorise.
#[inline(always)]
pub fn round(x: f32) -> u16 {
    let bits = x.to_bits();
    let nearest = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
    let quiet_nan = (bits >> 16) | 0x40;
    (if x.is_nan() { quiet_nan } else { nearest }) as u16
}

/// The float32 value of a bfloat16.
#[inline(always)]
pub fn widen(half: u16) -> f32 {
    f32::from_bits(u32::from(half) << 16)
}

/// Two values rounded to bfloat16 in one 32-bit lane, `low` in the low half: a k pair as
/// both kinds of product read it.
#[inline(always)]
pub(crate) fn pair(low: f32, high: f32) -> u32 {
    u32::from(round(low)) | u32::from(round(high)) << 16
}

/// `out[i] = pair(low[i], high[i])` (high zero without `high`), for `out.len()` values, by
/// AVX-512 BF16's conversion: the same bits as [`pair`] but for float32 subnormals, which it
/// takes as zero (as `vdpbf16ps` takes a bfloat16 subnormal). Panics where [`available`] is
/// false.
pub(crate) fn round_pairs(low: &[f32], high: Option<&[f32]>, out: &mut [MaybeUninit<u32>]) {
    assert!(available() && low.len() >= out.len() && high.is_none_or(|h| h.len() >= out.len()));
    // SAFETY: the processor has AVX-512F and AVX-512 BF16; the lengths were checked above.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        convert::round_pairs(low, high, out)
    };
}

/// `out[i] = pair(values[2i], values[2i + 1])` (a missing last value zero), for all
/// `⌈values.len() / 2⌉` pairs, as [`round_pairs`] rounds.
pub(crate) fn round_adjacent(values: &[f32], out: &mut [MaybeUninit<u32>]) {
    assert!(available() && out.len() == values.len().div_ceil(2));
    // SAFETY: the processor has AVX-512F and AVX-512 BF16; the lengths were checked above.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        convert::round_adjacent(values, out)
    };
}

/// The conversions, by AVX-512 BF16's instructions.
#[cfg(target_arch = "x86_64")]
mod convert {
    use crate::avx512::first_lanes;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// See [`super::round_pairs`]: 16 pairs a time, each half converted by `vcvtneps2bf16`
    /// and the two halves interleaved as the low and high 16 bits of each lane.
    ///
    /// # Safety
    /// The processor must have AVX-512F and AVX-512 BF16; `low` and `high` hold at least
    /// `out.len()` values.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn round_pairs(low: &[f32], high: Option<&[f32]>, out: &mut [MaybeUninit<u32>]) {
        for start in (0..out.len()).step_by(16) {
            let lanes = first_lanes(out.len() - start);
            // SAFETY: the masks select the first `out.len()` values of each, which exist.
            unsafe {
                let rounded = |values: &[f32]| {
                    let half = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(lanes, values.as_ptr().add(start)));
                    _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(half))
                };
                let high = high.map_or(_mm512_setzero_si512(), |h| _mm512_slli_epi32::<16>(rounded(h)));
                let pairs = _mm512_or_si512(rounded(low), high);
                _mm512_mask_storeu_epi32(out.as_mut_ptr().add(start) as *mut i32, lanes, pairs);
            }
        }
    }

    /// See [`super::round_adjacent`]: 32 values (16 pairs) a time by `vcvtne2ps2bf16`, whose
    /// sixteen 32-bit lanes then hold the pairs in order.
    ///
    /// # Safety
    /// The processor must have AVX-512F and AVX-512 BF16; `out` holds `⌈values.len() / 2⌉`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn round_adjacent(values: &[f32], out: &mut [MaybeUninit<u32>]) {
        let len = values.len();
        for (index, start) in (0..len).step_by(32).enumerate() {
            let (first, second) = (first_lanes(len - start), first_lanes(len.saturating_sub(start + 16)));
            // SAFETY: the masks select only existing values, and the store only the pairs
            // that exist (⌈values left / 2⌉ of them).
            unsafe {
                let low = _mm512_maskz_loadu_ps(first, values.as_ptr().add(start));
                let high = _mm512_maskz_loadu_ps(second, values.as_ptr().add((start + 16).min(len)));
                let pairs = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(high, low));
                let stored = first_lanes((len - start).div_ceil(2));
                _mm512_mask_storeu_epi32(out.as_mut_ptr().add(16 * index) as *mut i32, stored, pairs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seeded_rng::SeededRng;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(widen(round(1.0)), 1.0);
        assert_eq!(widen(round(-2.5)), -2.5);
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: ties go to the even mantissa, 1.
        assert_eq!(widen(round(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(widen(round(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        assert!(widen(round(f32::NAN)).is_nan());
        assert_eq!(widen(round(f32::INFINITY)), f32::INFINITY);
    }

    /// The hardware's rounding against [`round`]: the same bits for normal numbers (ties
    /// included), infinities and NaN, zero for subnormals; both pair layouts, and lengths
    /// around the 16- and 32-value steps (odd ones end on a zero partner).
    #[test]
    fn hardware_rounding_matches_round_but_takes_subnormals_as_zero() {
        if !available() {
            eprintln!("skipped: hardware_rounding_matches_round_but_takes_subnormals_as_zero: no AVX-512 BF16");
            return;
        }
        let mut rng = SeededRng::new(6, "bf16 rounding test");
        let mut values: Vec<f32> = (0..997).map(|_| (rng.unit_f32() * 2.0 - 1.0) * 1e3).collect();
        // Exact ties (the low 16 bits 0x8000) on even and odd mantissas, and the specials.
        values.extend([1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
        values.extend([f32::from_bits(0x3F80_8000), f32::from_bits(0x3F81_8000), f32::MAX, f32::MIN_POSITIVE]);
        values.extend([f32::from_bits(1), f32::from_bits(0x007F_FFFF), -f32::from_bits(0x0040_0000)]);
        let expected = |x: f32| if x.is_subnormal() { round(0.0f32.copysign(x)) } else { round(x) };
        let same = |got: u16, want: u16| got == want || (widen(got).is_nan() && widen(want).is_nan());
        // A lane holds the pair (low, high), high zero where there is none.
        let check = |lane: u32, low: f32, high: Option<f32>, place: String| {
            let high_expected = high.map_or(0, expected);
            assert!(same(lane as u16, expected(low)) && same((lane >> 16) as u16, high_expected), "{place}");
        };
        for len in [0, 1, 15, 16, 17, 31, 32, 33, values.len()] {
            let (low, high) = (&values[..len], &values[values.len() - len..]);
            for with_high in [false, true] {
                let mut out = vec![0u32; len];
                round_pairs(low, with_high.then_some(high), crate::mat::as_uninit(&mut out));
                for (i, &lane) in out.iter().enumerate() {
                    check(lane, low[i], with_high.then(|| high[i]), format!("pairs of rows, {len} values, {i}"));
                }
            }
            let mut out = vec![0u32; len.div_ceil(2)];
            round_adjacent(low, crate::mat::as_uninit(&mut out));
            for (i, &lane) in out.iter().enumerate() {
                check(lane, low[2 * i], low.get(2 * i + 1).copied(), format!("adjacent pairs, {len} values, {i}"));
            }
        }
    }
}
