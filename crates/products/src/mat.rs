//! The matrix view every product reads: a strided window into an `f32` slice, the panel
//! height the hand-written kernels lay weights out in, and the split of a product's output
//! rows into one band per thread.

use rayon::prelude::*;

/// Rows per panel: 12 rows × 2 registers of 16 columns is 24 accumulators, which leaves
/// room for the two input registers and the broadcast weight among AVX-512's 32.
pub(crate) const PANEL: usize = 12;

/// A read-only view of a matrix inside a slice: element `(r, c)` is
/// `data[offset + r * row_stride + c * col_stride]`. Invariant: every element is in `data`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) offset: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
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

    pub(crate) fn fits(&self, len: usize) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < len
    }
}

/// Runs `work(first_row, band)` over `dst` (`rows × columns`, row-major; `f32`, or
/// `MaybeUninit<f32>` for an output not yet written) cut into one band of rows per thread,
/// each band whole `block`s of rows (the last may be shorter): in parallel where there is
/// more than one band. Each output row lies in one band, so the result does not depend on
/// `threads`.
pub(crate) fn in_row_bands<T: Send>(
    dst: &mut [T],
    (rows, columns): (usize, usize),
    block: usize,
    threads: usize,
    work: impl Fn(usize, &mut [T]) + Sync,
) {
    let band = rows.div_ceil(threads.max(1)).next_multiple_of(block).max(block);
    let dst = &mut dst[..rows * columns];
    if threads > 1 && rows > band {
        dst.par_chunks_mut(band * columns.max(1)).enumerate().for_each(|(index, part)| work(index * band, part));
    } else {
        work(0, dst);
    }
}

/// `dst` seen as possibly uninitialised memory, for the kernels that write a product both
/// into fresh memory and onto what a buffer holds.
pub(crate) fn as_uninit<T: Copy>(dst: &mut [T]) -> &mut [std::mem::MaybeUninit<T>] {
    // SAFETY: the same memory and layout; through the result only `T` values are
    // written, so `dst` stays initialised.
    unsafe { &mut *(dst as *mut [T] as *mut [std::mem::MaybeUninit<T>]) }
}
