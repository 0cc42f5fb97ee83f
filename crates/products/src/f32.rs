//! Float32 products: large ones through the `gemm` crate, read in place at any strides;
//! the transposes and sums the LSTM needs beside them (a matrix transposed whole; a
//! list of rows, one time step's input projections, transposed into a block; a matrix's
//! rows summed whole, or by slot, each column into its token's sum).

use crate::mat::Mat;
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;

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

/// `out[r][s] = Σ matrix[r][n]` over the columns n with `slots[n] == s`, for the dense
/// row-major `rows × slots.len()` `matrix`: `[rows, buckets]`, every slot below `buckets`.
/// Each sum adds its values in column order, starting from zero, so the result depends
/// neither on the thread count nor on the path. With AVX-512, 16 rows × 16 columns are
/// transposed in registers and each column's 16 values added into its slot's block at once.
pub fn sums_by_slot(matrix: &[f32], rows: usize, slots: &[u32], buckets: usize) -> Vec<f32> {
    const BAND: usize = 16;
    let columns = slots.len();
    assert!(matrix.len() >= rows * columns && slots.iter().all(|&s| (s as usize) < buckets), "sums_by_slot bounds");
    let (matrix, mut out) = (&matrix[..rows * columns], vec![0.0f32; rows * buckets]);
    // Each task sums BAND rows of `matrix` into BAND rows of `out`.
    out.par_chunks_mut(BAND * buckets.max(1)).zip(matrix.par_chunks(BAND * columns.max(1))).for_each(|(sums, band)| {
        #[cfg(target_arch = "x86_64")]
        if band.len() == BAND * columns && std::is_x86_feature_detected!("avx512f") {
            let mut by_slot = vec![0.0f32; buckets * BAND];
            // SAFETY: AVX-512F is present; `band` holds BAND rows of `columns`, `by_slot`
            // `buckets` blocks of BAND, and every slot is below `buckets` (checked above).
            unsafe { crate::avx512::sums_by_slot(band, slots, &mut by_slot) };
            // A slot's block holds its BAND rows' sums: transposed, they are `sums`' columns.
            let blocks: Vec<&[f32]> = by_slot.chunks_exact(BAND).collect();
            transpose_rows_into(&blocks, BAND, None, crate::mat::as_uninit(sums));
            return;
        }
        for (row, row_sums) in band.chunks_exact(columns.max(1)).zip(sums.chunks_exact_mut(buckets.max(1))) {
            for (&value, &slot) in row.iter().zip(slots) {
                row_sums[slot as usize] += value;
            }
        }
    });
    out
}

/// The transpose of the dense row-major `rows × cols` matrix `src`, as a new dense matrix:
/// `transpose_rows_into` on bands of 32 columns across the pool.
pub fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const BAND: usize = 32;
    assert!(src.len() >= rows * cols, "transpose out of bounds");
    let mut out = Vec::with_capacity(rows * cols);
    // Each task writes BAND rows of the result (BAND columns of `src`).
    out.spare_capacity_mut()[..rows * cols].par_chunks_mut(BAND * rows.max(1)).enumerate().for_each(|(band, dst)| {
        let (first, width) = (band * BAND, dst.len() / rows.max(1));
        let band_rows: Vec<&[f32]> = src.chunks_exact(cols.max(1)).take(rows).map(|row| &row[first..]).collect();
        transpose_rows_into(&band_rows, width, None, dst);
    });
    // SAFETY: the bands cover every row of the result, and each writes all of its band.
    unsafe { out.set_len(rows * cols) };
    out
}

/// Appends to `out` the transpose of `rows.len()` rows of `width` values each, as a
/// `[width, rows.len()]` row-major block: `out[r · rows.len() + j] = rows[j][r] + add[r]`
/// (plus nothing without `add`). The rows may lie anywhere: one time step's input
/// projections, each position's row where its token's projection is, come in as a list.
/// With AVX-512 whole 16 × 16 blocks are transposed in registers; the same values either way.
pub fn transpose_rows(rows: &[&[f32]], width: usize, add: Option<&[f32]>, out: &mut Vec<f32>) {
    let (start, len) = (out.len(), width * rows.len());
    out.reserve(len);
    transpose_rows_into(rows, width, add, &mut out.spare_capacity_mut()[..len]);
    // SAFETY: `transpose_rows_into` wrote all `len` values.
    unsafe { out.set_len(start + len) };
}

/// [`transpose_rows`] into the first `width · rows.len()` values of `dst`, every one written.
fn transpose_rows_into(rows: &[&[f32]], width: usize, add: Option<&[f32]>, dst: &mut [MaybeUninit<f32>]) {
    let count = rows.len();
    assert!(rows.iter().all(|row| row.len() >= width) && add.is_none_or(|add| add.len() >= width), "rows too short");
    let dst = &mut dst[..width * count];
    let mut done = (0, 0); // whole blocks cover rows ..done.0 and values ..done.1
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        done = (count / 16 * 16, width / 16 * 16);
        for j in (0..done.0).step_by(16) {
            for r in (0..done.1).step_by(16) {
                let block: [*const f32; 16] = std::array::from_fn(|i| rows[j + i][r..].as_ptr());
                // SAFETY: AVX-512F is present; each row holds `width` ≥ r + 16 values, as
                // does `add`; `dst` holds `width` rows of `count` ≥ j + 16 values.
                unsafe {
                    crate::avx512::transpose_block(
                        block,
                        add.map(|add| add[r..].as_ptr()),
                        dst.as_mut_ptr().add(r * count + j) as *mut f32,
                        count,
                    )
                };
            }
        }
    }
    let plus = |value: f32, r: usize| add.map_or(value, |add| value + add[r]);
    for (j, row) in rows.iter().enumerate() {
        // What the blocks left: the rows past the last whole block, and every row's values past it.
        let from = if j < done.0 { done.1 } else { 0 };
        for (r, &value) in row.iter().enumerate().take(width).skip(from) {
            dst[r * count + j].write(plus(value, r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn sums_by_slot_match_a_plain_loop() {
        // Whole bands of 16 rows and a shorter last one; columns past the last block of 16.
        for (rows, columns, buckets) in [(1, 1, 1), (16, 16, 3), (40, 70, 9), (32, 3200, 400), (7, 5, 2)] {
            let matrix: Vec<f32> = (0..rows * columns).map(|v| ((v * 37 % 101) as f32 - 50.0) * 0.125).collect();
            let slots: Vec<u32> = (0..columns).map(|n| ((n * 13 + n / 7) % buckets) as u32).collect();
            // A longer slice than the rows: only the first `rows` count.
            let mut longer = matrix.clone();
            longer.extend(std::iter::repeat_n(1.0, 16 * columns));
            let got = sums_by_slot(&longer, rows, &slots, buckets);
            let mut expected = vec![0.0f32; rows * buckets];
            for r in 0..rows {
                for (n, &slot) in slots.iter().enumerate() {
                    expected[r * buckets + slot as usize] += matrix[r * columns + n];
                }
            }
            // The same additions in the same order: the same bits.
            assert!(got.iter().zip(&expected).all(|(g, e)| g.to_bits() == e.to_bits()), "{rows}×{columns}");
        }
    }

    #[test]
    fn transposed_rows_match_a_plain_loop() {
        // Whole 16 × 16 blocks, parts of blocks and rows past them, with and without `add`.
        for (count, width) in [(1, 1), (16, 16), (32, 2048), (17, 33), (15, 40), (48, 7)] {
            let table: Vec<f32> = (0..(count + 3) * width).map(|v| v as f32 * 0.5 - 7.0).collect();
            // Rows in scrambled order from a bigger table, as a token's projection is read.
            let rows: Vec<&[f32]> =
                (0..count).map(|j| &table[((j * 7 + 2) % (count + 3)) * width..][..width]).collect();
            let add: Vec<f32> = (0..width).map(|r| r as f32 * 0.25).collect();
            for add in [None, Some(&add[..])] {
                let mut out = vec![-1.0];
                transpose_rows(&rows, width, add, &mut out);
                assert_eq!(out.len(), 1 + width * count);
                for r in 0..width {
                    for j in 0..count {
                        let expected = rows[j][r] + add.map_or(0.0, |add| add[r]);
                        assert_eq!(out[1 + r * count + j], expected, "{count}×{width}, value {r} of row {j}");
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
