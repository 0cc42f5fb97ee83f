//! Matrix products that read bfloat16 copies of their operands and accumulate in float32,
//! for `train.precision = "bf16"` and `compose.precision = "bf16"`.
//!
//! bfloat16 is float32 with the low 16 bits of the mantissa dropped (8 bits of precision,
//! the same range). AVX-512 BF16's `vdpbf16ps` multiplies two pairs of bfloat16 values per
//! float32 lane and adds both products into a float32 accumulator: twice the products per
//! instruction of a float32 multiply-add, from half the bytes. The products themselves are
//! exact in float32 (8 × 8 bits); what is lost is each operand's rounding to 8 bits (a
//! relative error of at most 2⁻⁸, so at most 2⁻⁷ per product and, with errors of random
//! sign, about 2⁻⁸·√K of the terms' size for a sum of K), and master weights, Adam's moments, the cell state and the
//! gate math stay float32.
//!
//! Layout, as in [`crate::StepWeights`]: the left operand in panels of `PANEL` (12)
//! rows, the right operand's rows in pairs, so that one 32-bit lane holds the pair
//! `(k, k+1)` of one row (left) or one column (right):
//!
//! ```text
//! left panel  [K/2][PANEL] pairs   (w[r][k], w[r][k+1])
//! right       [K/2][N] pairs       (x[k][n], x[k+1][n])
//! dst[r][n] += Σ over pairs  w[r][k]·x[k][n] + w[r][k+1]·x[k+1][n]
//! ```
//!
//! An odd K gets a zero pair partner. Each output is summed over k in order by one thread,
//! so the result depends neither on the thread count nor on the other columns.
//!
//! Operands are rounded by the processor's own conversions (`round_pairs`,
//! `round_pairs_across` and `round_adjacent_across` of `bfloat.rs`: 16 or 32 values an
//! instruction), which round as [`round`] does but take float32 subnormals as zero — as
//! `vdpbf16ps` takes bfloat16 subnormals anyway. A fresh product stores its sums; only
//! `multiply_add` reads its destination. On the AMD EPYC measured, rounding in scalar code
//! and zeroing each output before adding into it had cost a tenth of a bfloat16 training
//! step.

use crate::mat::{Mat, PANEL};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Columns of the right operand kept in the L2 cache while a band of panels passes over them.
const COLUMN_BLOCK: usize = 256;

/// Lanes (pairs) of a right operand below which one thread rounds and lays it out.
const SMALL_PACK: usize = 4 * 1024;

pub use crate::bfloat::{available, round, widen};
use crate::bfloat::{pair, round_adjacent_across, round_pairs, round_pairs_across};

/// A matrix rounded to bfloat16, laid out for the products this processor runs: AMX
/// tiles ([`crate::amx::TileRows`]) where it has them, else panels for `vdpbf16ps`.
pub struct PackedRows {
    rows: usize,
    depth: usize,
    layout: Layout,
}

enum Layout {
    /// Panels of `PANEL` (12) rows with k in pairs. Invariant: `⌈rows / PANEL⌉ · pairs ·
    /// PANEL` pairs, rows past `rows` zero.
    Panels(Vec<u32>),
    Tiles(crate::amx::TileRows),
}

impl PackedRows {
    /// Packs `a` (any strides; a dense matrix and the transpose of one are read in order).
    pub fn new(a: Mat) -> Self {
        Self::with_layout(a, crate::amx::available())
    }

    /// [`PackedRows::new`] for AMX tiles or not (`tiles` only where [`crate::amx::available`]).
    /// Panics without AMX tiles where [`available`] is false: the panels are rounded by
    /// AVX-512 BF16's own instructions.
    pub(crate) fn with_layout(a: Mat, tiles: bool) -> Self {
        let (rows, depth) = (a.rows, a.cols);
        if tiles {
            return PackedRows { rows, depth, layout: Layout::Tiles(crate::amx::TileRows::new(a)) };
        }
        assert!(available(), "bfloat16 products need AVX-512 BF16, which this processor lacks");
        let pairs = depth.div_ceil(2);
        let len = rows.div_ceil(PANEL) * pairs * PANEL;
        let mut data = Vec::with_capacity(len);
        // The transpose of a dense matrix is rounded TOGETHER panels a task, each pair of its
        // columns read once along all of their rows: a panel at a time read 48 bytes of each
        // column, a page apart (left panels of the input projection's xᵀ, `[3200, 256]`:
        // 0.12 ms, against 0.08 eight at a time on the AMD EPYC measured; `[3200, 512]`:
        // 0.24 against 0.13).
        const TOGETHER: usize = 8;
        let panels = if a.row(0).is_none() && a.column(0).is_some() { TOGETHER } else { 1 };
        // Each task writes all its lanes, its rows past `rows` as zeros (only the last
        // panel has such rows): the buffer is never zeroed first.
        data.spare_capacity_mut()[..len].par_chunks_mut((panels * pairs * PANEL).max(1)).enumerate().for_each(
            |(task, values)| {
                let (first, count) = (task * panels * PANEL, (rows - task * panels * PANEL).min(panels * PANEL));
                if a.row(0).is_some() {
                    // Rows in place: each row's pairs are adjacent values, rounded and
                    // spread PANEL lanes apart (the rows past `count` as zeros).
                    let rows: Vec<&[f32]> = (first..first + count).map(|r| a.row(r).expect("rows in place")).collect();
                    round_adjacent_across(&rows, PANEL, PANEL, values);
                } else if a.column(0).is_some() {
                    // The transpose of a dense matrix: a pair is two adjacent columns of these
                    // panels' rows.
                    let runs: Vec<&[f32]> =
                        (0..depth).map(|k| &a.column(k).expect("columns are contiguous")[first..][..count]).collect();
                    round_pairs_across(&runs, PANEL, values);
                } else {
                    for (p, lanes) in values.chunks_exact_mut(PANEL).enumerate() {
                        for (r, lane) in lanes.iter_mut().enumerate() {
                            let at = |k: usize| if r < count && k < depth { a.at(first + r, k) } else { 0.0 };
                            lane.write(pair(at(2 * p), at(2 * p + 1)));
                        }
                    }
                }
            },
        );
        // SAFETY: the tasks cover all `len` lanes and each task's loops write every one.
        unsafe { data.set_len(len) };
        PackedRows { rows, depth, layout: Layout::Panels(data) }
    }

    /// M, the rows of the packed matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// K, the columns of the packed matrix (the depth of its products).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// `dst += self · x` for dense row-major `dst` `[rows, x.cols]`, with the rows split into
    /// one band per thread; `x` (any strides) is rounded and laid out here. Panics where
    /// [`available`] is false (the kernels' instructions would not exist).
    pub fn multiply_add(&self, dst: &mut [f32], x: Mat, threads: usize) {
        assert!(dst.len() >= self.rows * x.cols, "bf16 product out of bounds");
        // SAFETY: `dst` is initialised, as `accumulate` needs.
        unsafe { self.product_into(crate::mat::as_uninit(dst), x, threads, true) }
    }

    /// `self · x` as a new dense row-major matrix `[rows, x.cols]`.
    pub fn product(&self, x: Mat, threads: usize) -> Vec<f32> {
        let len = self.rows * x.cols;
        let mut out = Vec::with_capacity(len);
        // SAFETY: without `accumulate` the product reads none of the output and writes
        // every value, so all `len` are initialised when the length is set.
        unsafe {
            self.product_into(&mut out.spare_capacity_mut()[..len], x, threads, false);
            out.set_len(len);
        }
        out
    }

    /// `dst = self · x`, or `dst += self · x` where `accumulate`, for `dst` `[rows, x.cols]`.
    ///
    /// # Safety
    /// Where `accumulate`, the first `rows · x.cols` values of `dst` are initialised.
    unsafe fn product_into(&self, dst: &mut [MaybeUninit<f32>], x: Mat, threads: usize, accumulate: bool) {
        assert_eq!(x.rows, self.depth, "inner dimensions differ");
        let data = match &self.layout {
            // SAFETY: the caller's promise, passed on.
            Layout::Tiles(tiles) => return unsafe { tiles.product_into(dst, x, threads, accumulate) },
            Layout::Panels(data) => data,
        };
        assert!(available(), "bfloat16 products need AVX-512 BF16, which this processor lacks");
        let (pairs, columns) = (self.depth.div_ceil(2), x.cols);
        if self.rows == 0 || columns == 0 {
            return;
        }
        let x = pack_columns(x);
        crate::mat::in_row_bands(dst, (self.rows, columns), PANEL, threads, |first, dst_band| {
            let rows = dst_band.len() / columns;
            let panels = &data[first * pairs..][..rows.div_ceil(PANEL) * pairs * PANEL];
            // SAFETY: the processor has AVX-512F and AVX-512 BF16 (asserted above); the
            // sizes were checked above; initialised where `accumulate` (the caller's promise).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                kernels::band_product(dst_band, panels, &x, (rows, pairs, columns), accumulate)
            };
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("bf16 products run on x86-64 only: {}", panels.len());
        });
    }
}

/// `b` (any strides; a dense matrix and the transpose of one are read in order) rounded
/// to bfloat16 with its rows in pairs: `[⌈K/2⌉, N]`, as the `vdpbf16ps` kernels read it.
fn pack_columns(b: Mat) -> Vec<u32> {
    let (depth, columns) = (b.rows, b.cols);
    let len = depth.div_ceil(2) * columns;
    // Every lane is written below, so the buffer is never zeroed first.
    let mut out = Vec::with_capacity(len);
    let lanes_out = &mut out.spare_capacity_mut()[..len];
    if b.column(0).is_some() && b.row(0).is_none() {
        // The transpose of a dense matrix: a column's pairs are adjacent values. Each task
        // writes 16 whole pair rows, rounding 32 values of 16 columns at a time.
        let sources: Vec<&[f32]> = (0..columns).map(|n| b.column(n).expect("columns are contiguous")).collect();
        lanes_out.par_chunks_mut(16 * columns.max(1)).enumerate().for_each(|(block, lanes)| {
            let values = 32 * block..(32 * block + 32).min(depth);
            for (group, first) in sources.chunks(16).zip((0..).step_by(16)) {
                let mut windows = [&[][..]; 16];
                for (window, column) in windows.iter_mut().zip(group) {
                    *window = &column[values.clone()];
                }
                round_adjacent_across(&windows[..group.len()], group.len(), columns, &mut lanes[first..]);
            }
        });
    } else {
        // A small operand (the state of one or a few generated streams) is rounded on the
        // calling thread: split across the pool, each piece cost more to hand over than to
        // round (one stream at H = 512: 14,200-14,900 -> 15,800-16,000 tokens/s on the AMD
        // EPYC measured; 16 streams, 8,192 lanes, are still split).
        let min_pair_rows = SMALL_PACK.div_ceil(columns.max(1));
        lanes_out.par_chunks_mut(columns.max(1)).with_min_len(min_pair_rows).enumerate().for_each(|(p, lanes)| {
            let k = 2 * p;
            match (b.row(k), b.row(k + 1)) {
                (Some(low), high) => round_pairs(low, high.filter(|_| k + 1 < depth), lanes),
                _ => {
                    for (n, lane) in lanes.iter_mut().enumerate() {
                        let high = if k + 1 < depth { b.at(k + 1, n) } else { 0.0 };
                        lane.write(pair(b.at(k, n), high));
                    }
                }
            }
        });
    }
    // SAFETY: the bands (or the pair rows) cover all `len` lanes and write every one.
    unsafe { out.set_len(len) };
    out
}

/// `a · b` as a new dense row-major matrix, both operands read as bfloat16.
pub fn product(a: Mat, b: Mat, threads: usize) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    PackedRows::new(a).product(b, threads)
}

/// The `vdpbf16ps` kernels.
#[cfg(target_arch = "x86_64")]
mod kernels {
    use super::{COLUMN_BLOCK, PANEL};
    use crate::avx512::{column_runs, first_lanes, write_block, write_partial_sums};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// `dst = panels · x`, or `dst += panels · x` where `accumulate`, for one band: `rows`
    /// rows (⌈rows / PANEL⌉ panels of `pairs × PANEL`), `x` `[pairs, columns]`. Columns go
    /// in blocks of [`COLUMN_BLOCK`] (kept in L2 while every panel of the band passes), each
    /// in runs of 32 or 16 (one register each).
    ///
    /// # Safety
    /// The processor must have AVX-512F and AVX-512 BF16; the slices hold these sizes;
    /// `dst` is initialised where `accumulate`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn band_product(
        dst: &mut [MaybeUninit<f32>],
        panels: &[u32],
        x: &[u32],
        (rows, pairs, columns): (usize, usize, usize),
        accumulate: bool,
    ) {
        for block in (0..columns).step_by(COLUMN_BLOCK) {
            let end = (block + COLUMN_BLOCK).min(columns);
            for panel in 0..rows.div_ceil(PANEL) {
                let count = (rows - panel * PANEL).min(PANEL);
                let weights = &panels[panel * pairs * PANEL..][..pairs * PANEL];
                let first_row = panel * PANEL;
                if columns == 1 {
                    // SAFETY: the caller's sizes and initialisation.
                    unsafe { panel_column(&mut dst[first_row..][..count], weights, &x[..pairs], accumulate) };
                    continue;
                }
                for (column, masks, wide) in column_runs(block, end) {
                    let place = (first_row, count, column, masks);
                    let sizes = (pairs, columns, accumulate);
                    // SAFETY (both): the caller's sizes and initialisation; the masks cover
                    // only existing columns.
                    match wide {
                        true => unsafe { panel_block::<2>(dst, weights, x, place, sizes) },
                        false => unsafe { panel_block::<1>(dst, weights, x, place, sizes) },
                    }
                }
            }
        }
    }

    /// One panel times `C` registers of columns: PANEL × C float32 accumulators held across
    /// all pairs; per pair one load of x per register and one broadcast pair per row.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn panel_block<const C: usize>(
        dst: &mut [MaybeUninit<f32>],
        weights: &[u32],
        x: &[u32],
        (first_row, rows, column, masks): (usize, usize, usize, [__mmask16; 2]),
        (pairs, columns, accumulate): (usize, usize, bool),
    ) {
        let (w, xp) = (weights.as_ptr(), x.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); C]; PANEL];
        // SAFETY: `weights` holds pairs × PANEL lanes; x's pair row p has `columns` lanes,
        // of which the masks select only existing ones; dst rows first_row..+rows exist.
        // `__m512i` and `__m512bh` are both 64 bytes of plain lanes.
        unsafe {
            for p in 0..pairs {
                let mut xv: [__m512bh; C] = [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); C];
                for (c, v) in xv.iter_mut().enumerate() {
                    let lanes = _mm512_maskz_loadu_epi32(masks[c], xp.add(p * columns + column + 16 * c) as *const i32);
                    *v = std::mem::transmute::<__m512i, __m512bh>(lanes);
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let weight =
                        std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*w.add(p * PANEL + r) as i32));
                    for (a, &v) in row.iter_mut().zip(&xv) {
                        *a = _mm512_dpbf16_ps(*a, weight, v);
                    }
                }
            }
            write_block(dst, &acc, (first_row, rows, column, masks), (columns, accumulate));
        }
    }

    /// One panel times a single column (one generated stream): each pair's PANEL weight
    /// pairs are adjacent, so a pair is one masked load, a broadcast of x's pair and one
    /// `vdpbf16ps` into the rows' lanes; four interleaved accumulators hide its latency.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn panel_column(dst: &mut [MaybeUninit<f32>], weights: &[u32], x: &[u32], accumulate: bool) {
        let lanes = first_lanes(PANEL);
        let (w, pairs) = (weights.as_ptr(), x.len());
        let mut acc = [_mm512_setzero_ps(); 4];
        // SAFETY: `weights` holds pairs × PANEL lanes and each load reads PANEL of them.
        unsafe {
            let step = |acc: __m512, p: usize| {
                let column = _mm512_maskz_loadu_epi32(lanes, w.add(p * PANEL) as *const i32);
                let pair = _mm512_set1_epi32(*x.get_unchecked(p) as i32);
                _mm512_dpbf16_ps(
                    acc,
                    std::mem::transmute::<__m512i, __m512bh>(column),
                    std::mem::transmute::<__m512i, __m512bh>(pair),
                )
            };
            let mut p = 0;
            while p + 4 <= pairs {
                acc[0] = step(acc[0], p);
                acc[1] = step(acc[1], p + 1);
                acc[2] = step(acc[2], p + 2);
                acc[3] = step(acc[3], p + 3);
                p += 4;
            }
            for (j, p) in (p..pairs).enumerate() {
                acc[j] = step(acc[j], p);
            }
        }
        // SAFETY: initialised where `accumulate` (the caller's promise).
        unsafe { write_partial_sums(dst, acc, accumulate) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seeded_rng::SeededRng;

    /// Each output against the float32 product of the bfloat16-rounded operands (which
    /// `vdpbf16ps` computes up to float32 summation order) and against the exact product
    /// within bfloat16's stated error.
    #[test]
    fn products_match_the_rounded_operands_product() {
        if !available() {
            eprintln!("skipped: products_match_the_rounded_operands_product: this CPU has no AVX-512 BF16");
            return;
        }
        let mut rng = SeededRng::new(5, "bf16 test");
        // The last shape spans two depth blocks and several column blocks of the tile kernel.
        for (m, k, n) in [
            (1, 1, 1),
            (13, 7, 1),
            (25, 33, 17),
            (12, 64, 32),
            (40, 129, 300),
            (7, 2, 45),
            (64, 70, 33),
            (70, 1100, 290),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.unit_f32() * 2.0 - 1.0).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.unit_f32() * 2.0 - 1.0).collect();
            let (a_t, b_t) = (crate::f32::transpose(&a, m, k), crate::f32::transpose(&b, k, n));
            let views = [
                ("dense", Mat::dense(&a, m, k), Mat::dense(&b, k, n)),
                ("left transposed", Mat::dense(&a_t, k, m).t(), Mat::dense(&b, k, n)),
                ("right transposed", Mat::dense(&a, m, k), Mat::dense(&b_t, n, k).t()),
            ];
            for (threads, tiles) in [(1, false), (3, false), (1, true), (3, true)] {
                if tiles && !crate::amx::available() {
                    eprintln!("products_match_the_rounded_operands_product: no AMX here, its tiles untested");
                    continue;
                }
                for (name, a_view, b_view) in views {
                    let packed = PackedRows::with_layout(a_view, tiles);
                    let mut got = vec![0.0; m * n];
                    packed.multiply_add(&mut got, b_view, threads);
                    // A fresh product (which never reads its output) equals one added to zeros,
                    // and adding to ones adds one.
                    let fresh = packed.product(b_view, threads);
                    assert!(fresh.iter().zip(&got).all(|(f, g)| f.to_bits() == g.to_bits()), "{name} fresh");
                    let mut onto_ones = vec![1.0; m * n];
                    packed.multiply_add(&mut onto_ones, b_view, threads);
                    let shifted =
                        onto_ones.iter().zip(&got).all(|(o, g)| (o - 1.0 - g).abs() <= 1e-5 * (1.0 + g.abs()));
                    assert!(shifted, "{name} onto ones");
                    for r in 0..m {
                        for c in 0..n {
                            let terms = (0..k).map(|i| (a[r * k + i], b[i * n + c]));
                            let rounded: f64 =
                                terms.clone().map(|(x, y)| f64::from(widen(round(x)) * widen(round(y)))).sum();
                            let exact: f64 = terms.clone().map(|(x, y)| f64::from(x) * f64::from(y)).sum();
                            let size: f64 = terms.map(|(x, y)| f64::from((x * y).abs())).sum();
                            let value = f64::from(got[r * n + c]);
                            let place = format!("{name}, tiles {tiles} ({m},{k},{n}) [{r},{c}]");
                            assert!((value - rounded).abs() <= 1e-5 * size.max(1.0), "{place}");
                            // Each operand is off by at most 2⁻⁸ of itself, so each product by 2⁻⁷ + 2⁻¹⁶.
                            let bound = (2.0f64.powi(-7) + 2.0f64.powi(-16)) * size + 1e-5 * size.max(1.0);
                            assert!((value - exact).abs() <= bound, "{place} vs exact");
                        }
                    }
                }
            }
        }
    }
}
