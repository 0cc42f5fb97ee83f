//! Products with the same weights many times over and a few columns each time: the
//! recurrence's W_hh at every time step, generation's weights at every token.

#[cfg(target_arch = "x86_64")]
use crate::avx512;
use crate::f32::{matmul, transpose};
use crate::mat::{Mat, PANEL};
use crate::precision::Precision;
use rayon::prelude::*;

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
/// The fewest columns for which bfloat16 step weights go on AMX tiles: a tile product
/// computes 16 columns whatever the count, so for one generated stream it does 16 times the
/// work, and the `vdpbf16ps` panels are faster (5,900 against 3,200 tokens/s at H = 512 on
/// the Xeon measured).
const MIN_TILE_COLUMNS: usize = 8;

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

impl StepWeights {
    /// Lays out `weights`: a dense matrix (W_hh) or the transpose of one (W_hhᵀ, read in
    /// place), for products in `precision` with about `columns` columns (the sequences a
    /// training step runs, the streams generation steps).
    pub fn new(weights: Mat, precision: Precision, columns: usize) -> Self {
        if precision == Precision::Bf16 {
            let tiles = crate::amx::available() && columns >= MIN_TILE_COLUMNS;
            let packed = crate::bf16::PackedRows::with_layout(weights, tiles);
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
            return packed.multiply_add(dst, Mat::dense(x, self.depth, columns), threads);
        }
        crate::mat::in_row_bands(dst, (self.rows, columns), PANEL, threads, |first, dst_band| {
            let rows = dst_band.len() / columns.max(1);
            self.multiply_add_rows(dst_band, x, columns, first..first + rows);
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
                packed.multiply_add(dst, Mat::dense(x, k, columns), 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                ("dense", StepWeights::new(Mat::dense(&weights, m, k), Precision::F32, s)),
                ("transposed", StepWeights::new(Mat::dense(&transposed, k, m).t(), Precision::F32, s)),
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
}
