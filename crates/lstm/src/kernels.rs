//! The CPU arithmetic under the fused LSTM: strided matrix products and the gate math of
//! one time step, with a fast sigmoid and tanh.
//!
//! Matrix products go to the `gemm` crate directly, not through Candle's matmul: `gemm`
//! takes any row and column strides, so a transposed weight or one time step's columns of
//! a `[features, T·B]` activation matrix are read in place, never copied.
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

/// A read-only view of a matrix inside a slice: element `(r, c)` is
/// `data[offset + r * row_stride + c * col_stride]`. Invariant: every element is in `data`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
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

/// `dst += weights · inputs` for the skinny products of generation: `weights` dense
/// row-major `[M, K]`, `inputs` dense `[K, S]` with S (the streams) small, `dst` dense `[M, S]`.
///
/// The rows are split into one band per thread, so each thread streams only its band of the
/// weights: these products read every weight once per token and do little with it, so they
/// are bound by memory traffic, and the threads share it. Each row's sums are computed by one
/// thread in a fixed order, so the result does not depend on the thread count.
pub fn skinny_product(
    dst: &mut [f32],
    weights: &[f32],
    inputs: &[f32],
    (m, k, s): (usize, usize, usize),
    threads: usize,
) {
    assert!(weights.len() >= m * k && inputs.len() >= k * s && dst.len() >= m * s, "skinny product out of bounds");
    if m == 0 || s == 0 {
        return;
    }
    let band = m.div_ceil(threads.max(1)).max(1);
    dst[..m * s].par_chunks_mut(band * s).enumerate().for_each(|(index, dst_band)| {
        let rows = dst_band.len() / s;
        let weights_band = &weights[index * band * k..][..rows * k];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor has AVX-512F, checked just above; the slices were cut
            // to the sizes the kernels read and write.
            unsafe { avx512::skinny_product(dst_band, weights_band, &inputs[..k * s], (rows, k, s)) };
            return;
        }
        let a = Mat::dense(weights_band, rows, k);
        matmul(dst_band, 0, s, a, Mat::dense(inputs, k, s), true, 1);
    });
}

/// Generation's skinny products written for AVX-512 by hand, since `gemm` packs the whole
/// weight matrix again for every token and its kernels are shaped for wide products.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Rows per block in the many-stream kernel, one accumulator each. 16 would fit in
    /// AVX-512's 32 registers too, but measured ~15 % slower: 16 weight rows read at once
    /// are more streams than the prefetchers follow well.
    const ROWS: usize = 8;

    /// `dst += weights · inputs`, shapes as in [`super::skinny_product`].
    ///
    /// # Safety
    /// The processor must have AVX-512F; `dst` holds `m·s` values, `weights` `m·k`, `inputs` `k·s`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn skinny_product(
        dst: &mut [f32],
        weights: &[f32],
        inputs: &[f32],
        (m, k, s): (usize, usize, usize),
    ) {
        debug_assert!(dst.len() == m * s && weights.len() == m * k && inputs.len() == k * s);
        // SAFETY (both calls): the caller's contract.
        if s == 1 {
            unsafe { dot_rows(dst, weights, inputs, m, k) }
        } else {
            unsafe { broadcast_rows(dst, weights, inputs, (m, k, s)) }
        }
    }

    /// One stream: each output is the dot product of a weight row with the input, four rows
    /// at a time so the input is loaded once for four rows. Lane j sums the products with
    /// index ≡ j (mod 16), then the lanes are added: a fixed order per row.
    #[target_feature(enable = "avx512f")]
    unsafe fn dot_rows(dst: &mut [f32], weights: &[f32], input: &[f32], m: usize, k: usize) {
        let mut row = 0;
        while row < m {
            // SAFETY (both): rows row..row+R exist in `weights` and `dst`.
            if m - row >= 4 {
                unsafe { dot_block::<4>(dst, weights, input, row, k) };
                row += 4;
            } else {
                unsafe { dot_block::<1>(dst, weights, input, row, k) };
                row += 1;
            }
        }
    }

    /// [`dot_rows`] for rows `row..row + R`, R a constant so the accumulators stay in registers.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn dot_block<const R: usize>(dst: &mut [f32], weights: &[f32], input: &[f32], row: usize, k: usize) {
        let (w, x) = (weights.as_ptr(), input.as_ptr());
        let tail = tail_mask(k);
        let full = k - k % 16;
        let mut acc = [_mm512_setzero_ps(); R];
        // SAFETY: the caller guarantees the R rows; offsets stay below k in each row, and the
        // tail loads are masked to the k % 16 values that exist.
        unsafe {
            let mut i = 0;
            while i < full {
                let xv = _mm512_loadu_ps(x.add(i));
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_loadu_ps(w.add((row + r) * k + i)), xv, *a);
                }
                i += 16;
            }
            if tail != 0 {
                let xv = _mm512_maskz_loadu_ps(tail, x.add(full));
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w.add((row + r) * k + full)), xv, *a);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            dst[row + r] += _mm512_reduce_add_ps(*a);
        }
    }

    /// Up to 16 streams per register: output row r of streams c..c+16 is Σ_k w[r,k]·inputs[k, c..],
    /// the weight broadcast to all lanes, for [`ROWS`] rows at a time so each inputs row is
    /// loaded once per block. Every stream's sum runs over k in order, whatever S is.
    #[target_feature(enable = "avx512f")]
    unsafe fn broadcast_rows(dst: &mut [f32], weights: &[f32], inputs: &[f32], (m, k, s): (usize, usize, usize)) {
        for column in (0..s).step_by(16) {
            let mask = if s - column >= 16 { 0xFFFF } else { tail_mask(s - column) };
            let mut row = 0;
            while row < m {
                // SAFETY (both): rows row..row+R and the columns under `mask` exist.
                if m - row >= ROWS {
                    unsafe { broadcast_block::<ROWS>(dst, weights, inputs, (row, column, mask), (k, s)) };
                    row += ROWS;
                } else {
                    unsafe { broadcast_block::<1>(dst, weights, inputs, (row, column, mask), (k, s)) };
                    row += 1;
                }
            }
        }
    }

    /// [`broadcast_rows`] for rows `row..row + R` and the streams under `mask` from `column`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn broadcast_block<const R: usize>(
        dst: &mut [f32],
        weights: &[f32],
        inputs: &[f32],
        (row, column, mask): (usize, usize, __mmask16),
        (k, s): (usize, usize),
    ) {
        let (w, x, d) = (weights.as_ptr(), inputs.as_ptr(), dst.as_mut_ptr());
        let mut acc = [_mm512_setzero_ps(); R];
        // SAFETY: the caller guarantees the rows and columns; masked loads and stores touch
        // only the columns under `mask`.
        unsafe {
            for i in 0..k {
                let xv = _mm512_maskz_loadu_ps(mask, x.add(i * s + column));
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(*w.add((row + r) * k + i)), xv, *a);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let out = d.add((row + r) * s + column);
                _mm512_mask_storeu_ps(out, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), *a));
            }
        }
    }

    /// The mask of the first `n % 16` lanes (0 when n is a multiple of 16).
    fn tail_mask(n: usize) -> __mmask16 {
        ((1u32 << (n % 16)) - 1) as __mmask16
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

vectorised! {
    /// The forward gate math of one time step for B sequences, in place. Every buffer is
    /// row-major with B columns (one per sequence). On entry `gates` (`[4H, B]`) holds the
    /// pre-activations `[i f g o]` and `cells` (`[H, B]`) holds c_{t−1}; on return `gates` holds
    /// σ(i), σ(f), tanh(g), σ(o), `cells` holds c_t and `hidden` (`[H, B]`) holds h_t.
    pub fn cell_forward(batch: usize, gates: &mut [f32], cells: &mut [f32], hidden: &mut [f32]) {
        let block = cells.len();
        assert!(gates.len() == 4 * block && hidden.len() == block && block.is_multiple_of(batch.max(1)));
        let (input, rest) = gates.split_at_mut(block);
        let (forget, rest) = rest.split_at_mut(block);
        let (candidate, output) = rest.split_at_mut(block);
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
    fn skinny_products_match_a_plain_loop() {
        // Shapes around the kernels' block sizes: rows in blocks of 4 and 8, k in lanes of 16,
        // streams in registers of 16; and thread counts that cut bands at odd rows.
        for (m, k, s) in [(1, 1, 1), (5, 17, 1), (9, 33, 2), (19, 16, 16), (21, 40, 17), (37, 15, 33)] {
            let weights: Vec<f32> = (0..m * k).map(|v| (v as f32 * 0.37).sin()).collect();
            let inputs: Vec<f32> = (0..k * s).map(|v| (v as f32 * 0.11).cos()).collect();
            for threads in [1, 3] {
                let mut dst: Vec<f32> = (0..m * s).map(|v| v as f32).collect();
                skinny_product(&mut dst, &weights, &inputs, (m, k, s), threads);
                for r in 0..m {
                    for c in 0..s {
                        let dot: f32 = (0..k).map(|i| weights[r * k + i] * inputs[i * s + c]).sum();
                        let expected = (r * s + c) as f32 + dot;
                        assert!((dst[r * s + c] - expected).abs() < 1e-4, "({m},{k},{s}) row {r} stream {c}");
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
