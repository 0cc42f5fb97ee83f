//! The CPU arithmetic under the fused LSTM: strided matrix products and the gate math of
//! one time step, with a fast sigmoid and tanh.
//!
//! Large matrix products go to the `gemm` crate directly, not through Candle's matmul:
//! `gemm` takes any row and column strides, so a transposed weight or one time step's
//! columns of a `[features, T·B]` activation matrix are read in place, never copied.
//!
//! The small products repeated with the same weights — W_hh at every time step, every
//! weight at every generated token — go through [`StepWeights`] instead: the weights laid
//! out once in panels, multiplied by hand-written AVX-512 kernels (`gemm` otherwise, on
//! processors without AVX-512). `gemm` packs its operands again on every call, and its
//! kernels are shaped for wide products; on 16 or 32 columns these run 1.1–1.6× faster.
//!
//! The gate math is plain Rust over contiguous rows, written so the compiler vectorises it;
//! on x86-64 it is compiled three times, for AVX-512, AVX2 and the baseline, and the widest
//! copy the processor runs is picked at run time. It uses no fused multiply-add, so
//! all copies round identically.

use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The thread count for matrix products: `runtime.threads`, via [`crate::set_cpu_threads`].
pub(crate) fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// How the matrix products read their operands. Either way they accumulate in float32, and
/// everything else (weights kept for training, optimizer state, cell state, gate math)
/// stays float32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Float32 operands.
    #[default]
    F32,
    /// bfloat16 copies of both operands ([`crate::bf16`]): twice the products per
    /// instruction and half the bytes, with 8 bits of precision per operand. Only where
    /// [`crate::bf16::available`].
    Bf16,
}

impl Precision {
    /// The value among the two given that stands for this precision (a name, a setting).
    pub fn pick<T>(self, f32: T, bf16: T) -> T {
        match self {
            Precision::F32 => f32,
            Precision::Bf16 => bf16,
        }
    }

    /// `a · b` as a new dense row-major matrix, in this precision.
    pub fn product(self, a: Mat, b: Mat, threads: usize) -> Vec<f32> {
        match self {
            Precision::F32 => product(a, b, threads),
            Precision::Bf16 => crate::bf16::product(a, b, threads),
        }
    }
}

/// A read-only view of a matrix inside a slice: element `(r, c)` is
/// `data[offset + r * row_stride + c * col_stride]`. Invariant: every element is in `data`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    offset: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// The `rows × cols` block at `offset` of a row-major matrix whose rows are `row_stride` apart.
    pub fn block(data: &'a [f32], offset: usize, rows: usize, cols: usize, row_stride: usize) -> Self {
        let view = Mat { data, offset, rows, cols, row_stride, col_stride: 1 };
        assert!(view.fits(data.len()), "matrix view out of bounds");
        view
    }

    /// A dense row-major `rows × cols` matrix.
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::block(data, 0, rows, cols, cols)
    }

    /// The transpose, as a view of the same memory.
    pub fn t(self) -> Self {
        Mat { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// Row `r` as a slice, where the row's values are adjacent (`None` otherwise or past the last row).
    pub(crate) fn row(&self, r: usize) -> Option<&'a [f32]> {
        (self.col_stride == 1 && r < self.rows).then(|| &self.data[self.offset + r * self.row_stride..][..self.cols])
    }

    /// Column `c` as a slice, where the column's values are adjacent (`None` otherwise or past the last column).
    pub(crate) fn column(&self, c: usize) -> Option<&'a [f32]> {
        (self.row_stride == 1 && c < self.cols).then(|| &self.data[self.offset + c * self.col_stride..][..self.rows])
    }

    /// Element `(r, c)`; panics outside the view's data.
    #[inline(always)]
    pub fn at(&self, r: usize, c: usize) -> f32 {
        self.data[self.offset + r * self.row_stride + c * self.col_stride]
    }

    fn fits(&self, len: usize) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < len
    }
}

/// `dst = a · b` (or `dst += a · b` when `accumulate`), where `dst` is the `a.rows × b.cols`
/// block at `offset` of a row-major matrix with rows `row_stride` apart.
///
/// `threads > 1` splits the product over rayon's pool; the pool's workers sleep when idle,
/// so a busy machine is not made busier by threads spinning between small products.
pub fn matmul(dst: &mut [f32], offset: usize, row_stride: usize, a: Mat, b: Mat, accumulate: bool, threads: usize) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let view = Mat { data: dst, offset, rows: a.rows, cols: b.cols, row_stride, col_stride: 1 };
    assert!(view.fits(dst.len()), "destination out of bounds");
    if a.rows == 0 || b.cols == 0 {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            for r in 0..a.rows {
                dst[offset + r * row_stride..][..b.cols].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the three views were checked to lie inside their slices, and `dst` is borrowed
    // mutably, so it cannot overlap `a` or `b`.
    unsafe { gemm_into(dst.as_mut_ptr().add(offset), row_stride, a, b, accumulate, threads) }
}

/// `a · b` as a new dense row-major `a.rows × b.cols` matrix. The product writes every
/// element itself, so the buffer is not zero-filled first.
pub fn product(a: Mat, b: Mat, threads: usize) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let len = a.rows * b.cols;
    if a.cols == 0 || len == 0 {
        return vec![0.0; len];
    }
    let mut out = Vec::with_capacity(len);
    // SAFETY: `out` has room for `len` values; `gemm` not reading its destination writes all
    // `len` of them (dst := a·b), so they are initialised before the length is set.
    unsafe {
        gemm_into(out.as_mut_ptr(), b.cols, a, b, false, threads);
        out.set_len(len);
    }
    out
}

/// `dst = a · b` (or `dst += a · b`) into the `a.rows × b.cols` row-major block at `dst`.
///
/// # Safety
/// `dst` must be valid for writes (and, with `accumulate`, reads) of that block with rows
/// `row_stride` apart, and must not overlap `a` or `b`; `a.cols` must be at least 1.
unsafe fn gemm_into(dst: *mut f32, row_stride: usize, a: Mat, b: Mat, accumulate: bool, threads: usize) {
    let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: the caller's contract for `dst`; `a` and `b` are views checked to lie inside their slices.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst,
            1,
            row_stride as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr().add(b.offset),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The sum of each row of a dense row-major matrix with `columns` columns (a bias gradient).
///
/// Summed in 16 interleaved partial sums, added at the end: a plain left-to-right float sum
/// is one long chain of dependent additions that the compiler may not reorder, and ran ~10×
/// slower. The order is fixed, so the result is the same on every run and thread count.
pub fn row_sums(matrix: &[f32], columns: usize) -> Vec<f32> {
    const LANES: usize = 16;
    matrix
        .par_chunks_exact(columns.max(1))
        .map(|row| {
            let mut partial = [0.0f32; LANES];
            let chunks = row.chunks_exact(LANES);
            let rest: f32 = chunks.remainder().iter().sum();
            for chunk in chunks {
                for (p, &v) in partial.iter_mut().zip(chunk) {
                    *p += v;
                }
            }
            partial.iter().sum::<f32>() + rest
        })
        .collect()
}

/// The transpose of the dense row-major `rows × cols` matrix `src`, as a new dense matrix.
/// Copied in 32 × 32 tiles, so each cache line of `src` is read once, not once per column.
pub fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    assert!(src.len() >= rows * cols, "transpose out of bounds");
    let mut out = Vec::with_capacity(rows * cols);
    // Each task writes TILE rows of the result (TILE columns of `src`).
    out.spare_capacity_mut()[..rows * cols].par_chunks_mut(TILE * rows.max(1)).enumerate().for_each(|(block, band)| {
        let first_col = block * TILE;
        let width = band.len() / rows.max(1);
        for row_start in (0..rows).step_by(TILE) {
            for r in row_start..(row_start + TILE).min(rows) {
                for c in 0..width {
                    band[c * rows + r].write(src[r * cols + first_col + c]);
                }
            }
        }
    });
    // SAFETY: the bands cover every row of the result, and each band's loops write all of it.
    unsafe { out.set_len(rows * cols) };
    out
}

/// A weight matrix laid out once for many products with a few columns: a recurrence's
/// W_hh, multiplied by one thread's sequences at every time step, and generation's weights,
/// multiplied by the streams' states at every token. Such products do little work per
/// weight, so how the weights are read decides their speed; `gemm` would repack them on
/// every call.
///
/// With AVX-512 the rows are cut into panels of `PANEL` rows stored k-major (`panel[k][r]`):
/// the kernels read the weights as one sequential stream and keep a panel's outputs in
/// registers across all of K. Elsewhere the matrix is kept dense row-major for `gemm`.
/// Every output is summed over k in order, by one thread, so a column's result depends
/// neither on the other columns computed with it nor on the thread count.
pub struct StepWeights {
    rows: usize,
    depth: usize,
    layout: StepLayout,
}

enum StepLayout {
    /// `⌈M / PANEL⌉` panels of `K × PANEL` values, rows past M zero.
    Panels(Vec<f32>),
    Dense(Vec<f32>),
    /// bfloat16 panels; each product rounds x to bfloat16 first.
    Bf16(crate::bf16::PackedRows),
}

/// Rows per panel: 12 rows × 2 registers of 16 columns is 24 accumulators, which leaves
/// room for the two input registers and the broadcast weight among AVX-512's 32.
pub(crate) const PANEL: usize = 12;

impl StepWeights {
    /// Lays out `weights`: a dense matrix (W_hh) or the transpose of one (W_hhᵀ, read in
    /// place), for products in `precision`.
    pub fn new(weights: Mat, precision: Precision) -> Self {
        if precision == Precision::Bf16 {
            let packed = crate::bf16::PackedRows::new(weights);
            return StepWeights { rows: packed.rows(), depth: packed.depth(), layout: StepLayout::Bf16(packed) };
        }
        #[cfg(target_arch = "x86_64")]
        let panels = std::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let panels = false;
        Self::with_layout(weights, panels)
    }

    /// [`StepWeights::new`] with the layout chosen by the caller: panels (only where the
    /// processor has AVX-512F) or dense. Tests use it to reach the dense path too.
    fn with_layout(weights: Mat, panels: bool) -> Self {
        let (rows, depth) = (weights.rows, weights.cols);
        let transposed = weights.col_stride != 1;
        assert!(
            if transposed {
                weights.row_stride == 1 && weights.col_stride == rows
            } else {
                weights.row_stride == depth
            },
            "step weights must be a dense matrix or the transpose of one"
        );
        let data = &weights.data[weights.offset..][..rows * depth];
        if panels {
            let len = rows.div_ceil(PANEL) * depth * PANEL;
            let mut panels = Vec::with_capacity(len);
            panels.spare_capacity_mut()[..len].par_chunks_mut((depth * PANEL).max(1)).enumerate().for_each(
                |(panel, values)| {
                    let (first, count) = (panel * PANEL, (rows - panel * PANEL).min(PANEL));
                    for (k, column) in values.chunks_exact_mut(PANEL).enumerate() {
                        for (r, value) in column.iter_mut().enumerate() {
                            value.write(match r < count {
                                true if transposed => data[k * rows + first + r],
                                true => data[(first + r) * depth + k],
                                false => 0.0,
                            });
                        }
                    }
                },
            );
            // SAFETY: the panels cover all `len` values, and each panel's loops write every one.
            unsafe { panels.set_len(len) };
            return StepWeights { rows, depth, layout: StepLayout::Panels(panels) };
        }
        let dense = if transposed { transpose(data, depth, rows) } else { data.to_vec() };
        StepWeights { rows, depth, layout: StepLayout::Dense(dense) }
    }

    /// `dst += W · x` for dense row-major `x` `[K, columns]` and `dst` `[M, columns]`, on the
    /// calling thread.
    pub fn multiply_add(&self, dst: &mut [f32], x: &[f32], columns: usize) {
        self.multiply_add_rows(dst, x, columns, 0..self.rows);
    }

    /// [`StepWeights::multiply_add`] with the rows split into one band per thread, each
    /// band whole panels: for generation, where the weights are the whole work and each
    /// thread then streams only its share of them.
    pub fn multiply_add_banded(&self, dst: &mut [f32], x: &[f32], columns: usize, threads: usize) {
        if let StepLayout::Bf16(packed) = &self.layout {
            let x = crate::bf16::pack_columns(Mat::dense(x, self.depth, columns));
            return packed.multiply_add(dst, &x, columns, threads);
        }
        let band = self.rows.div_ceil(threads.max(1)).next_multiple_of(PANEL).max(PANEL);
        dst[..self.rows * columns].par_chunks_mut(band * columns.max(1)).enumerate().for_each(|(index, dst_band)| {
            let first = index * band;
            self.multiply_add_rows(dst_band, x, columns, first..(first + band).min(self.rows));
        });
    }

    /// `dst += W[rows] · x`, where `dst` holds just those rows and `rows` starts at a panel.
    fn multiply_add_rows(&self, dst: &mut [f32], x: &[f32], columns: usize, rows: std::ops::Range<usize>) {
        let (count, k) = (rows.len(), self.depth);
        assert!(dst.len() >= count * columns && x.len() >= k * columns, "step product out of bounds");
        assert!(rows.start.is_multiple_of(PANEL) && rows.end <= self.rows, "rows must start at a panel");
        if count == 0 || columns == 0 {
            return;
        }
        match &self.layout {
            #[cfg(target_arch = "x86_64")]
            StepLayout::Panels(panels) => {
                let panels = &panels[rows.start * k..][..count.div_ceil(PANEL) * PANEL * k];
                // SAFETY: panels are only built where the processor has AVX-512F; the
                // slices hold the sizes the kernels read and write (checked above).
                unsafe { avx512::panel_product(dst, panels, x, (count, k, columns)) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            StepLayout::Panels(_) => unreachable!("panels are built on x86-64 only"),
            StepLayout::Dense(dense) => {
                let a = Mat::block(dense, rows.start * k, count, k, k);
                matmul(dst, 0, columns, a, Mat::dense(x, k, columns), true, 1)
            }
            StepLayout::Bf16(packed) => {
                assert_eq!(rows, 0..self.rows, "bfloat16 step weights are multiplied whole");
                packed.multiply_add(dst, &crate::bf16::pack_columns(Mat::dense(x, k, columns)), columns, 1)
            }
        }
    }
}

/// The products of [`StepWeights`] written for AVX-512 by hand, and the pieces that
/// [`crate::bf16`]'s kernels share with them.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::PANEL;
    use std::arch::x86_64::*;

    /// `dst += W · x` for the m rows of `panels`: one column through [`panel_column`];
    /// more in blocks of 32 columns (two registers) and, for the last, 16.
    ///
    /// # Safety
    /// The processor must have AVX-512F; `panels` holds ⌈m / PANEL⌉ panels of `k × PANEL`
    /// values, `x` at least `k·columns` values, `dst` at least `m·columns`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn panel_product(
        dst: &mut [f32],
        panels: &[f32],
        x: &[f32],
        (m, k, columns): (usize, usize, usize),
    ) {
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

    /// `dst[first_row + r][column ..] += acc[r]` for the first `rows` rows, C registers of
    /// columns each, only where the masks say a column exists.
    ///
    /// # Safety
    /// The processor must have AVX-512F; `dst` holds those rows (`columns` apart) and columns.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) unsafe fn add_block<const C: usize>(
        dst: &mut [f32],
        acc: &[[__m512; C]; PANEL],
        (first_row, rows, column, masks): (usize, usize, usize, [__mmask16; 2]),
        columns: usize,
    ) {
        let d = dst.as_mut_ptr();
        for (r, row) in acc.iter().enumerate().take(rows) {
            for (c, a) in row.iter().enumerate() {
                // SAFETY: the caller's sizes; the masks select only existing columns.
                unsafe {
                    let out = d.add((first_row + r) * columns + column + 16 * c);
                    _mm512_mask_storeu_ps(out, masks[c], _mm512_add_ps(_mm512_maskz_loadu_ps(masks[c], out), *a));
                }
            }
        }
    }

    /// Adds the lanes of four partial sums into `dst`, one lane per row (a panel times one column).
    #[target_feature(enable = "avx512f")]
    pub(crate) fn add_partial_sums(dst: &mut [f32], acc: [__m512; 4]) {
        let mut sums = [0.0f32; 16];
        // SAFETY: `sums` holds 16 values.
        unsafe {
            _mm512_storeu_ps(
                sums.as_mut_ptr(),
                _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])),
            )
        };
        for (out, sum) in dst.iter_mut().zip(sums) {
            *out += sum;
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
            add_block(dst, &acc, (first_row, rows, column, masks), columns);
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
        add_partial_sums(dst, acc);
    }

    /// The mask of the first `n` lanes of a register (all 16 when n ≥ 16).
    pub(crate) fn first_lanes(n: usize) -> __mmask16 {
        ((1u32 << n.min(16)) - 1) as __mmask16
    }
}

/// e^x with a relative error below 2e-7 for x in [−87, 88] (clamped outside): x = n·ln 2 + r
/// with |r| ≤ ln 2 / 2, e^r from Cephes' degree-6 polynomial, 2^n built in the exponent bits.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Adding 1.5·2²³ rounds x/ln 2 to the nearest integer n without a branch, and leaves n
    // in the low bits of the sum, from where it goes straight into 2^n's exponent field
    // below (a float-to-int cast would not vectorise: Rust's casts saturate).
    let shifted = x * std::f32::consts::LOG2_E + 12_582_912.0;
    let n = shifted - 12_582_912.0;
    // ln 2 split in two so n·ln 2 is subtracted without losing r's low bits (Cody–Waite).
    let r = (x - n * 0.693_359_4) + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    e_r * f32::from_bits(shifted.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23)
}

#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// tanh: near zero a polynomial (Cephes), since 1 − 2/(e^{2x}+1) would lose the low bits there.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let z = x * x;
    let small =
        ((((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 0.133_314_42) * z - 0.333_332_8) * z * x
            + x;
    let large = (1.0 - 2.0 / (exp(2.0 * x.abs()) + 1.0)).copysign(x);
    if x.abs() < 0.625 { small } else { large }
}

/// Defines `pub fn $name(…) { … }` compiled three times on x86-64, for AVX-512, for AVX2
/// and for the baseline, and calling the widest copy the processor runs. The body is plain
/// Rust over slices; the compiler vectorises each copy for its instruction set.
macro_rules! vectorised {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the processor has AVX-512F, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the processor has AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

vectorised! {
    /// `out[k] = e^(row[k] − shift[k])`, vectorised like the gate math.
    pub fn exp_shifted(row: &[f32], shift: &[f32], out: &mut [f32]) {
        for ((o, &v), &s) in out.iter_mut().zip(row).zip(shift) {
            *o = exp(v - s);
        }
    }
}

/// The forward gate math of one time step for B sequences, in place. Every buffer is
/// row-major with B columns (one per sequence). On entry `gates` (`[4H, B]`) holds the
/// pre-activations `[i f g o]` and `cells` (`[H, B]`) holds c_{t−1}; on return `gates` holds
/// σ(i), σ(f), tanh(g), σ(o), `cells` holds c_t and `hidden` (`[H, B]`) holds h_t.
pub fn cell_forward(gates: &mut [f32], cells: &mut [f32], hidden: &mut [f32]) {
    cell_math(gate_blocks(gates, cells, hidden), cells, hidden);
}

/// `gates` (`[4H, B]`) cut into its i, f, g, o blocks, after checking the buffers of
/// [`cell_forward`] against each other.
fn gate_blocks<'g>(gates: &'g mut [f32], cells: &[f32], hidden: &[f32]) -> [&'g mut [f32]; 4] {
    let block = cells.len();
    assert!(gates.len() == 4 * block && hidden.len() == block, "cell buffers of unequal sizes");
    let (input, rest) = gates.split_at_mut(block);
    let (forget, rest) = rest.split_at_mut(block);
    let (candidate, output) = rest.split_at_mut(block);
    [input, forget, candidate, output]
}

/// [`cell_forward`] with the units split into one band per thread, for generation, where
/// nothing else runs in parallel with the gate math. Below a few thousand cells (one
/// stream) a single band: splitting would cost more than it saves.
pub fn cell_forward_banded(gates: &mut [f32], cells: &mut [f32], hidden: &mut [f32], threads: usize) {
    const WORTH_SPLITTING: usize = 4096;
    let block = cells.len();
    let bands = if block < WORTH_SPLITTING { 1 } else { threads.max(1) };
    let band = block.div_ceil(bands).max(1);
    let [input, forget, candidate, output] = gate_blocks(gates, cells, hidden);
    (
        input.par_chunks_mut(band),
        forget.par_chunks_mut(band),
        candidate.par_chunks_mut(band),
        output.par_chunks_mut(band),
        cells.par_chunks_mut(band),
        hidden.par_chunks_mut(band),
    )
        .into_par_iter()
        .for_each(|(i, f, g, o, c, h)| cell_math([i, f, g, o], c, h));
}

vectorised! {
    /// The element-wise LSTM cell over equal-length slices: the gates' pre-activations in,
    /// their activations out, c_{t−1} → c_t in `cells`, h_t into `hidden`.
    pub fn cell_math(gates: [&mut [f32]; 4], cells: &mut [f32], hidden: &mut [f32]) {
        let [input, forget, candidate, output] = gates;
        let block = cells.len();
        // Every slice cut to exactly `block`, so the loop runs without bounds checks and vectorises.
        let (input, forget, candidate, output) =
            (&mut input[..block], &mut forget[..block], &mut candidate[..block], &mut output[..block]);
        let hidden = &mut hidden[..block];
        for k in 0..block {
            let (i, f, g, o) = (sigmoid(input[k]), sigmoid(forget[k]), tanh(candidate[k]), sigmoid(output[k]));
            (input[k], forget[k], candidate[k], output[k]) = (i, f, g, o);
            cells[k] = f * cells[k] + i * g;
            hidden[k] = o * tanh(cells[k]);
        }
    }
}

vectorised! {
    /// The backward gate math of one time step, buffers laid out as in [`cell_forward`].
    /// Reads the activations `gates` and cell states `cells` (c_t) and `previous_cells`
    /// (c_{t−1}, `None` at the first step) that the forward pass left, `dh` = ∂loss/∂h_t
    /// (everything that reaches h_t) and `dc` = ∂loss/∂c_t through c_{t+1}. Writes
    /// ∂loss/∂(pre-activation gates) into `d_gates` (every value, so it may start
    /// uninitialised) and replaces `dc` with ∂loss/∂c_{t−1}:
    ///
    /// ```text
    /// dc  += dh ⊙ o ⊙ (1 − tanh²c_t)          d_o = dh ⊙ tanh c_t ⊙ o(1−o)
    /// d_i  = dc ⊙ g ⊙ i(1−i)                   d_f = dc ⊙ c_{t−1} ⊙ f(1−f)
    /// d_g  = dc ⊙ i ⊙ (1−g²)                   dc  ← dc ⊙ f
    /// ```
    pub fn cell_backward(
        gates: &[f32],
        cells: &[f32],
        previous_cells: Option<&[f32]>,
        dh: &[f32],
        dc: &mut [f32],
        d_gates: &mut [MaybeUninit<f32>],
    ) {
        let block = cells.len();
        let zeros;
        let previous = match previous_cells {
            Some(previous) => previous,
            None => {
                zeros = vec![0.0f32; block];
                &zeros
            }
        };
        // Every slice cut to exactly `block`, so the loop runs without bounds checks and vectorises.
        let (i, f, g, o) =
            (&gates[..block], &gates[block..2 * block], &gates[2 * block..3 * block], &gates[3 * block..4 * block]);
        let (previous, dh, dc) = (&previous[..block], &dh[..block], &mut dc[..block]);
        let (d_i, rest) = d_gates[..4 * block].split_at_mut(block);
        let (d_f, rest) = rest.split_at_mut(block);
        let (d_g, d_o) = rest.split_at_mut(block);
        for k in 0..block {
            let tanh_c = tanh(cells[k]);
            let dck = dc[k] + dh[k] * o[k] * (1.0 - tanh_c * tanh_c);
            d_o[k].write(dh[k] * tanh_c * o[k] * (1.0 - o[k]));
            d_i[k].write(dck * g[k] * i[k] * (1.0 - i[k]));
            d_f[k].write(dck * previous[k] * f[k] * (1.0 - f[k]));
            d_g[k].write(dck * i[k] * (1.0 - g[k] * g[k]));
            dc[k] = dck * f[k];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_functions_match_the_standard_library() {
        let mut worst = (0.0f32, 0.0f32, 0.0f32);
        for step in -40_000..=40_000 {
            let x = step as f32 * 5e-4; // −20 … 20
            let e = (exp(x) - x.exp()).abs() / x.exp();
            let s = (sigmoid(x) - 1.0 / (1.0 + (-x).exp())).abs();
            let t = (tanh(x) - x.tanh()).abs() / x.tanh().abs().max(1e-30);
            worst = (worst.0.max(e), worst.1.max(s), if x == 0.0 { worst.2 } else { worst.2.max(t) });
        }
        assert!(worst.0 < 5e-7 && worst.1 < 2e-7 && worst.2 < 5e-7, "relative errors {worst:?}");
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!((sigmoid(-200.0) < 1e-30, sigmoid(200.0)), (true, 1.0));
        assert_eq!((tanh(-50.0), tanh(50.0)), (-1.0, 1.0));
    }

    #[test]
    fn transposes_and_row_sums_match_plain_loops() {
        for (rows, cols) in [(1, 1), (3, 70), (37, 45), (64, 32)] {
            let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let t = transpose(&src, rows, cols);
            assert!((0..rows * cols).all(|i| t[(i % cols) * rows + i / cols] == src[i]), "{rows}×{cols}");
            let sums = row_sums(&src, cols);
            for (r, &sum) in sums.iter().enumerate() {
                let expected: f32 = src[r * cols..][..cols].iter().sum();
                assert!((sum - expected).abs() <= 1e-6 * expected.abs(), "row {r} of {rows}×{cols}");
            }
        }
    }

    #[test]
    fn step_products_match_a_plain_loop() {
        // Shapes around the kernels' block sizes: rows in panels of 12, columns in registers
        // of 16 and blocks of 32, one column alone; weights dense and transposed; thread
        // counts that cut the rows into uneven bands.
        for (m, k, s) in [(1, 1, 1), (13, 17, 1), (25, 33, 2), (24, 16, 16), (37, 40, 17), (12, 15, 33), (30, 9, 32)] {
            let weights: Vec<f32> = (0..m * k).map(|v| (v as f32 * 0.37).sin()).collect();
            let transposed = transpose(&weights, m, k);
            let inputs: Vec<f32> = (0..k * s).map(|v| (v as f32 * 0.11).cos()).collect();
            for (name, step_weights) in [
                ("dense", StepWeights::new(Mat::dense(&weights, m, k), Precision::F32)),
                ("transposed", StepWeights::new(Mat::dense(&transposed, k, m).t(), Precision::F32)),
                ("dense, gemm", StepWeights::with_layout(Mat::dense(&weights, m, k), false)),
                ("transposed, gemm", StepWeights::with_layout(Mat::dense(&transposed, k, m).t(), false)),
            ] {
                for threads in [0, 1, 3] {
                    let mut dst: Vec<f32> = (0..m * s).map(|v| v as f32).collect();
                    match threads {
                        0 => step_weights.multiply_add(&mut dst, &inputs, s),
                        _ => step_weights.multiply_add_banded(&mut dst, &inputs, s, threads),
                    }
                    for r in 0..m {
                        for c in 0..s {
                            let dot: f32 = (0..k).map(|i| weights[r * k + i] * inputs[i * s + c]).sum();
                            let expected = (r * s + c) as f32 + dot;
                            let got = dst[r * s + c];
                            assert!((got - expected).abs() < 1e-4, "{name} ({m},{k},{s}) row {r} column {c}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn strided_products_match_a_plain_loop() {
        // a: 3×4 read transposed from a 4×3 buffer; b: a 4×2 block of a 4×5 buffer.
        let a_data: Vec<f32> = (0..12).map(|v| v as f32 * 0.5 - 2.0).collect();
        let b_data: Vec<f32> = (0..20).map(|v| (v as f32).sin()).collect();
        let a = Mat::dense(&a_data, 4, 3).t();
        let b = Mat::block(&b_data, 1, 4, 2, 5);
        let mut dst = vec![1.0f32; 3 * 7];
        matmul(&mut dst, 2, 7, a, b, true, 1);
        for r in 0..3 {
            for c in 0..2 {
                let expected: f32 = 1.0 + (0..4).map(|k| a_data[k * 3 + r] * b_data[1 + k * 5 + c]).sum::<f32>();
                assert!((dst[2 + r * 7 + c] - expected).abs() < 1e-5);
            }
        }
        assert_eq!(dst[0], 1.0, "outside the block nothing changes");
    }
}
