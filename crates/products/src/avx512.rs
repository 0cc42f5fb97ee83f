//! The products of [`StepWeights`] written for AVX-512 by hand, and the pieces that
//! [`crate::bf16`]'s kernels share with them.
#[cfg(target_arch = "x86_64")]
use crate::mat::PANEL;
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// `dst += W · x` for the m rows of `panels`: one column through [`panel_column`];
/// more in blocks of 32 columns (two registers) and, for the last, 16.
///
/// # Safety
/// The processor must have AVX-512F; `panels` holds ⌈m / PANEL⌉ panels of `k × PANEL`
/// values, `x` at least `k·columns` values, `dst` at least `m·columns`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn panel_product(dst: &mut [f32], panels: &[f32], x: &[f32], (m, k, columns): (usize, usize, usize)) {
    for panel in 0..m.div_ceil(PANEL) {
        let rows = (m - panel * PANEL).min(PANEL);
        let weights = &panels[panel * k * PANEL..][..k * PANEL];
        let first_row = panel * PANEL;
        if columns == 1 {
            // SAFETY: the caller's sizes.
            unsafe { panel_column(&mut dst[first_row..][..rows], weights, &x[..k]) };
            continue;
        }
        for (column, masks, wide) in column_runs(0, columns) {
            let place = (first_row, rows, column, masks);
            // SAFETY (both): the caller's sizes; the masks cover only existing columns.
            match wide {
                true => unsafe { panel_block::<2>(dst, weights, x, place, (k, columns)) },
                false => unsafe { panel_block::<1>(dst, weights, x, place, (k, columns)) },
            }
        }
    }
}

/// The runs in which a panel meets columns `start..end`: 32 columns (two registers) at
/// a time while more than 16 are left, then one register; each run's column, the masks
/// of its existing columns, and whether it takes two registers.
pub(crate) fn column_runs(start: usize, end: usize) -> impl Iterator<Item = (usize, [__mmask16; 2], bool)> {
    let mut column = start;
    std::iter::from_fn(move || {
        let left = end.checked_sub(column).filter(|&left| left > 0)?;
        let run = (column, [first_lanes(left), first_lanes(left.saturating_sub(16))], left > 16);
        column += if left > 16 { 32 } else { 16 };
        Some(run)
    })
}

/// `dst[first_row + r][column ..] (+)= acc[r]` for the first `rows` rows, C registers of
/// columns each, only where the masks say a column exists: added to what `dst` holds when
/// `accumulate`, else stored (a fresh product never reads, nor zeroes, its output).
///
/// # Safety
/// The processor must have AVX-512F; `dst` holds those rows (`columns` apart) and columns,
/// initialised where `accumulate`.
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn write_block<const C: usize>(
    dst: &mut [MaybeUninit<f32>],
    acc: &[[__m512; C]; PANEL],
    (first_row, rows, column, masks): (usize, usize, usize, [__mmask16; 2]),
    (columns, accumulate): (usize, bool),
) {
    let d = dst.as_mut_ptr() as *mut f32;
    for (r, row) in acc.iter().enumerate().take(rows) {
        for (c, &a) in row.iter().enumerate() {
            // SAFETY: the caller's sizes and initialisation; the masks select only existing columns.
            unsafe {
                let out = d.add((first_row + r) * columns + column + 16 * c);
                let value = if accumulate { _mm512_add_ps(_mm512_maskz_loadu_ps(masks[c], out), a) } else { a };
                _mm512_mask_storeu_ps(out, masks[c], value);
            }
        }
    }
}

/// `dst[r] (+)= Σ lanes r of four partial sums`, one lane per row (a panel times one
/// column): added when `accumulate`, else stored, as in [`write_block`].
///
/// # Safety
/// The processor must have AVX-512F; `dst` is initialised where `accumulate`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn write_partial_sums(dst: &mut [MaybeUninit<f32>], acc: [__m512; 4], accumulate: bool) {
    let mut sums = [0.0f32; 16];
    // SAFETY: `sums` holds 16 values.
    unsafe {
        _mm512_storeu_ps(sums.as_mut_ptr(), _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])))
    };
    for (out, sum) in dst.iter_mut().zip(sums) {
        // SAFETY: initialised where `accumulate` (the caller's promise).
        out.write(if accumulate { sum + unsafe { out.assume_init() } } else { sum });
    }
}

/// One panel times `C` registers of columns from `column`: PANEL × C accumulators held
/// across all of k; per k one load of x per register and one broadcast per row.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn panel_block<const C: usize>(
    dst: &mut [f32],
    weights: &[f32],
    x: &[f32],
    (first_row, rows, column, masks): (usize, usize, usize, [__mmask16; 2]),
    (k, columns): (usize, usize),
) {
    let (w, xp) = (weights.as_ptr(), x.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); C]; PANEL];
    // SAFETY: `weights` holds k × PANEL values; x's row i has `columns` values, of which
    // the masks select only existing ones; dst rows first_row..first_row+rows exist.
    unsafe {
        for i in 0..k {
            let mut xv = [_mm512_setzero_ps(); C];
            for (c, v) in xv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(masks[c], xp.add(i * columns + column + 16 * c));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let weight = _mm512_set1_ps(*w.add(i * PANEL + r));
                for (a, &v) in row.iter_mut().zip(&xv) {
                    *a = _mm512_fmadd_ps(weight, v, *a);
                }
            }
        }
        write_block(crate::mat::as_uninit(dst), &acc, (first_row, rows, column, masks), (columns, true));
    }
}

/// One panel times a single column: the panel's PANEL weights for each k are adjacent, so
/// each k is one (masked) load, a broadcast of x[k] and one multiply-add into the rows'
/// lanes. Four interleaved accumulators (k mod 4) hide the multiply-add latency.
#[target_feature(enable = "avx512f")]
unsafe fn panel_column(dst: &mut [f32], weights: &[f32], x: &[f32]) {
    let lanes = first_lanes(PANEL);
    let (w, k) = (weights.as_ptr(), x.len());
    let mut acc = [_mm512_setzero_ps(); 4];
    // SAFETY: `weights` holds k × PANEL values and the loads read PANEL of them per k.
    unsafe {
        let mut i = 0;
        while i + 4 <= k {
            // Unrolled by hand: indexing `acc` by a computed `i % 4` kept it in memory.
            for (j, a) in acc.iter_mut().enumerate() {
                let column = _mm512_maskz_loadu_ps(lanes, w.add((i + j) * PANEL));
                *a = _mm512_fmadd_ps(column, _mm512_set1_ps(*x.get_unchecked(i + j)), *a);
            }
            i += 4;
        }
        for (j, i) in (i..k).enumerate() {
            let column = _mm512_maskz_loadu_ps(lanes, w.add(i * PANEL));
            acc[j] = _mm512_fmadd_ps(column, _mm512_set1_ps(x[i]), acc[j]);
        }
    }
    // SAFETY: `dst` is initialised.
    unsafe { write_partial_sums(crate::mat::as_uninit(dst), acc, true) };
}

/// The mask of the first `n` lanes of a register (all 16 when n ≥ 16).
pub(crate) fn first_lanes(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// One 16 × 16 block of [`crate::f32::transpose_rows`] in registers: `out[r][j] =
/// rows[j][r] (+ add[r])` for r, j < 16, `out`'s rows `out_stride` apart.
///
/// # Safety
/// The processor must have AVX-512F; each `rows[j]` and `add` are valid for reading 16
/// values, `out` for writing 16 rows of 16.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose_block(
    rows: [*const f32; 16],
    add: Option<*const f32>,
    out: *mut f32,
    out_stride: usize,
) {
    // SAFETY: the caller's promises about `rows`, `add` and `out`.
    unsafe {
        let columns = transpose16(std::array::from_fn(|j| _mm512_loadu_ps(rows[j])));
        for (column, values) in columns.into_iter().enumerate() {
            let values = match add {
                Some(add) => _mm512_add_ps(values, _mm512_set1_ps(*add.add(column))),
                None => values,
            };
            _mm512_storeu_ps(out.add(column * out_stride), values);
        }
    }
}

/// [`crate::f32::sums_by_slot`] of one band of 16 rows: `by_slot[16·s + r] += band[r][n]`
/// for every column n with `slots[n] == s`, in column order.
///
/// # Safety
/// The processor must have AVX-512F; `band` holds 16 rows of `slots.len()` values, and
/// `by_slot` 16 values for every slot.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn sums_by_slot(band: &[f32], slots: &[u32], by_slot: &mut [f32]) {
    let columns = slots.len();
    let whole = columns / 16 * 16;
    for first in (0..whole).step_by(16) {
        // SAFETY: each row holds columns first .. first + 16 ≤ `columns`.
        let block =
            transpose16(std::array::from_fn(|r| unsafe { _mm512_loadu_ps(band.as_ptr().add(r * columns + first)) }));
        for (values, &slot) in block.iter().zip(&slots[first..]) {
            // SAFETY: the caller's promise that `by_slot` holds 16 values for every slot.
            unsafe {
                let sums = by_slot.as_mut_ptr().add(16 * slot as usize);
                _mm512_storeu_ps(sums, _mm512_add_ps(_mm512_loadu_ps(sums), *values));
            }
        }
    }
    for (n, &slot) in slots.iter().enumerate().skip(whole) {
        for r in 0..16 {
            by_slot[16 * slot as usize + r] += band[r * columns + n];
        }
    }
}

/// The transpose of 16 registers of 16 lanes: lane j of result i is lane i of `r[j]`.
/// Moves bits only (no arithmetic), so it transposes any 32-bit values cast to `__m512`.
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // Within each 128-bit lane L, after the two unpacks, quad[g][i] holds the values
    // of column 4L + i in rows 4g .. 4g + 4.
    let pairs: [__m512; 16] = std::array::from_fn(|k| {
        let (a, b) = (r[2 * (k / 2)], r[2 * (k / 2) + 1]);
        if k % 2 == 0 { _mm512_unpacklo_ps(a, b) } else { _mm512_unpackhi_ps(a, b) }
    });
    let quad: [[__m512; 4]; 4] = std::array::from_fn(|g| {
        let [t0, t1, t2, t3] = [pairs[4 * g], pairs[4 * g + 1], pairs[4 * g + 2], pairs[4 * g + 3]];
        let (t0, t1, t2, t3) = (_mm512_castps_pd(t0), _mm512_castps_pd(t1), _mm512_castps_pd(t2), _mm512_castps_pd(t3));
        [
            _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2)),
            _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3)),
        ]
    });
    // Gather lane L of the four row groups into column 4L + i: lanes (0, 2) and (1, 3)
    // of two groups, then of the two results.
    let mut columns = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        let [q0, q1, q2, q3] = std::array::from_fn(|g| quad[g][i]);
        let low01 = _mm512_shuffle_f32x4::<0x88>(q0, q1);
        let high01 = _mm512_shuffle_f32x4::<0xDD>(q0, q1);
        let low23 = _mm512_shuffle_f32x4::<0x88>(q2, q3);
        let high23 = _mm512_shuffle_f32x4::<0xDD>(q2, q3);
        columns[i] = _mm512_shuffle_f32x4::<0x88>(low01, low23);
        columns[4 + i] = _mm512_shuffle_f32x4::<0x88>(high01, high23);
        columns[8 + i] = _mm512_shuffle_f32x4::<0xDD>(low01, low23);
        columns[12 + i] = _mm512_shuffle_f32x4::<0xDD>(high01, high23);
    }
    columns
}
