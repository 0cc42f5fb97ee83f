//! The bfloat16 number format: float32 with the low 16 bits of the mantissa dropped (8 bits
//! of precision, float32's range), as the bfloat16 products read their operands: rounding
//! one value ([`round`], [`pair`]), and whole runs by AVX-512 BF16's own conversions
//! ([`round_pairs`], [`round_adjacent_across`]).

use std::mem::MaybeUninit;

#[cfg(target_arch = "x86_64")]
pub(crate) use convert::pair_lanes;

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

/// `runs` (all of one length L) taken in pairs, `(runs[2p], runs[2p + 1])` (the last alone
/// with zero partners where the count is odd), each pair rounded lane by lane as
/// [`round_pairs`] rounds, its values `q·lanes ..` (`lanes` ≤ 16 of them, zeros past L)
/// written to `out[(q · pairs + p) · lanes ..][.. lanes]` for each panel q that `out`
/// holds: the left panels of the transpose of a dense matrix, each run a column's values
/// in the panels' rows. Each pair of runs is read once, in order, for all the panels.
/// Panics where [`available`] is false.
pub(crate) fn round_pairs_across(runs: &[&[f32]], lanes: usize, out: &mut [MaybeUninit<u32>]) {
    let (len, pairs) = (runs.first().map_or(0, |r| r.len()), runs.len().div_ceil(2));
    let panels = out.len() / (pairs * lanes).max(1);
    assert!(available() && (1..=16).contains(&lanes) && runs.iter().all(|r| r.len() == len));
    assert!(out.len() == panels * pairs * lanes && len <= panels * lanes, "whole panels, holding every value");
    // SAFETY: the processor has AVX-512F and AVX-512 BF16; the sizes were checked above.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        convert::round_pairs_across(runs, lanes, panels, out)
    };
}

/// Each of `sources` (at most 16, all of one length L) rounded as adjacent pairs,
/// `pair(source[2p], source[2p + 1])` (a missing last value zero) as [`round_pairs`]
/// rounds, source j's pair p written to `out[p · stride + j]` for p < ⌈L / 2⌉, and lanes
/// `sources.len() .. lanes` of each such run written as zero. That is a left panel's
/// layout (a source per row, `stride` = lanes = PANEL) and a transposed right operand's
/// (a source per column, `stride` = the columns); one source with `stride` 1 is one run of
/// pairs. Panics where [`available`] is false.
pub(crate) fn round_adjacent_across(sources: &[&[f32]], lanes: usize, stride: usize, out: &mut [MaybeUninit<u32>]) {
    let len = sources.first().map_or(0, |s| s.len());
    let pairs = len.div_ceil(2);
    assert!(available() && sources.len() <= lanes && lanes <= 16 && sources.iter().all(|s| s.len() == len));
    assert!(pairs == 0 || (lanes <= stride && (pairs - 1) * stride + lanes <= out.len()), "output too short");
    // SAFETY: the processor has AVX-512F and AVX-512 BF16; the sizes were checked above.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        convert::round_adjacent_across(sources, len, lanes, stride, out)
    };
}

/// The conversions, by AVX-512 BF16's instructions.
#[cfg(target_arch = "x86_64")]
mod convert {
    use crate::avx512::first_lanes;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Sixteen lanes `pair(low[i], high[i])`: each register rounded by `vcvtneps2bf16`, the
    /// halves placed as the low and high 16 bits of each lane.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    pub(crate) fn pair_lanes(low: __m512, high: __m512) -> __m512i {
        let widened = |values: __m512| {
            // SAFETY: `__m256bh` and `__m256i` are both 32 bytes of plain lanes.
            _mm512_cvtepu16_epi32(unsafe { std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(values)) })
        };
        _mm512_or_si512(widened(low), _mm512_slli_epi32::<16>(widened(high)))
    }

    /// See [`super::round_pairs`]: 16 pairs a time by [`pair_lanes`].
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
                let load = |values: &[f32]| _mm512_maskz_loadu_ps(lanes, values.as_ptr().add(start));
                let pairs = pair_lanes(load(low), high.map_or(_mm512_setzero_ps(), load));
                _mm512_mask_storeu_epi32(out.as_mut_ptr().add(start) as *mut i32, lanes, pairs);
            }
        }
    }

    /// See [`super::round_pairs_across`]: for each pair of runs, one register of up to 16
    /// lanes a panel.
    ///
    /// # Safety
    /// The processor must have AVX-512F and AVX-512 BF16; every run holds the same count of
    /// values, at most `panels · lanes`, `lanes` ≤ 16; `out` holds `panels · ⌈runs / 2⌉ ·
    /// lanes` values.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn round_pairs_across(
        runs: &[&[f32]],
        lanes: usize,
        panels: usize,
        out: &mut [MaybeUninit<u32>],
    ) {
        let (len, pairs) = (runs.first().map_or(0, |r| r.len()), runs.len().div_ceil(2));
        let store = first_lanes(lanes);
        for (p, pair) in runs.chunks(2).enumerate() {
            for q in 0..panels {
                let (start, load) = ((q * lanes).min(len), first_lanes(len.saturating_sub(q * lanes).min(lanes)));
                // SAFETY: the load mask selects values of the runs from `start`, the store
                // mask panel q's `lanes` values of pair p in `out`.
                unsafe {
                    let rounded = |run: &[f32]| _mm512_maskz_loadu_ps(load, run.as_ptr().add(start));
                    let high = pair.get(1).map_or(_mm512_setzero_ps(), |run| rounded(run));
                    let at = out.as_mut_ptr().add((q * pairs + p) * lanes) as *mut i32;
                    _mm512_mask_storeu_epi32(at, store, pair_lanes(rounded(pair[0]), high));
                }
            }
        }
    }

    /// See [`super::round_adjacent_across`]: 32 values of each source a time, rounded into
    /// one register per source by `vcvtne2ps2bf16` (whose sixteen 32-bit lanes then hold the
    /// pairs in order), transposed, and each pair's lanes stored.
    ///
    /// # Safety
    /// The processor must have AVX-512F and AVX-512 BF16; every source holds `len` values;
    /// `out` holds `(⌈len / 2⌉ − 1) · stride + lanes` values, `lanes` ≤ 16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn round_adjacent_across(
        sources: &[&[f32]],
        len: usize,
        lanes: usize,
        stride: usize,
        out: &mut [MaybeUninit<u32>],
    ) {
        let store = first_lanes(lanes);
        for (index, start) in (0..len).step_by(32).enumerate() {
            let (first, second) = (first_lanes(len - start), first_lanes(len.saturating_sub(start + 16)));
            let mut rounded = [_mm512_setzero_ps(); 16];
            for (register, source) in rounded.iter_mut().zip(sources) {
                // SAFETY: the masks select only existing values.
                unsafe {
                    let low = _mm512_maskz_loadu_ps(first, source.as_ptr().add(start));
                    let high = _mm512_maskz_loadu_ps(second, source.as_ptr().add((start + 16).min(len)));
                    *register = std::mem::transmute::<__m512bh, __m512>(_mm512_cvtne2ps_pbh(high, low));
                }
            }
            let by_pair = crate::avx512::transpose16(rounded);
            for (p, values) in by_pair.iter().take((len - start).div_ceil(2)).enumerate() {
                // SAFETY: pair 16·index + p exists, so its `lanes` values lie inside `out`.
                unsafe {
                    let at = out.as_mut_ptr().add((16 * index + p) * stride) as *mut i32;
                    _mm512_mask_storeu_epi32(at, store, _mm512_castps_si512(*values));
                }
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
    /// included), infinities and NaN, zero for subnormals; all three pair layouts, and lengths
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
            // Runs in pairs, rounded lane by lane into panels of `lanes` (the left panels of
            // a transposed matrix): an odd run count ends on zeros, values past the runs too.
            let count = len.min(40);
            for (run_count, lanes) in [(1, 16), (2, 12), (7, 16), (24, 5)] {
                let runs: Vec<&[f32]> = (0..run_count).map(|r| &values[r * 29..][..count]).collect();
                let (pairs, panels) = (run_count.div_ceil(2), count.div_ceil(lanes).max(1));
                let mut out = vec![0xDEAD_BEEFu32; panels * pairs * lanes];
                round_pairs_across(&runs, lanes, crate::mat::as_uninit(&mut out));
                for (i, &lane) in out.iter().enumerate() {
                    let (q, p, j) = (i / (pairs * lanes), i / lanes % pairs, i % lanes);
                    let place =
                        format!("{run_count} runs of {count} into panels of {lanes}: panel {q}, pair {p}, lane {j}");
                    match q * lanes + j {
                        v if v < count => check(lane, runs[2 * p][v], runs.get(2 * p + 1).map(|high| high[v]), place),
                        _ => assert_eq!(lane, 0, "{place}"),
                    }
                }
            }
            // Adjacent pairs of 1, 5 and 16 sources (each a different window of `values`),
            // transposed into runs of `lanes` with gaps between them that stay untouched.
            for (count, lanes, stride) in [(1, 1, 1), (1, 3, 4), (5, 12, 12), (5, 7, 9), (16, 16, 19)] {
                let starts: Vec<usize> = (0..count).map(|j| j * 37 % (values.len() - len + 1)).collect();
                let sources: Vec<&[f32]> = starts.iter().map(|&s| &values[s..s + len]).collect();
                let pairs = len.div_ceil(2);
                let mut out = vec![0xDEAD_BEEFu32; pairs * stride];
                round_adjacent_across(&sources, lanes, stride, crate::mat::as_uninit(&mut out));
                for (i, &lane) in out.iter().enumerate() {
                    let (p, j) = (i / stride, i % stride);
                    let place =
                        format!("{count} sources of {len} in runs of {lanes} every {stride}: pair {p}, lane {j}");
                    match sources.get(j) {
                        Some(source) if j < lanes => check(lane, source[2 * p], source.get(2 * p + 1).copied(), place),
                        _ if j < lanes => assert_eq!(lane, 0, "{place}"),
                        _ => assert_eq!(lane, 0xDEAD_BEEF, "{place}"),
                    }
                }
            }
        }
    }
}
