//! Matrix products on the CPU, in float32 and bfloat16: the floor the LSTM stands on.
//!
//! Reads and writes nothing but memory: views of `f32` slices in, `f32` results out.
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
//! [`bf16`] holds the same products reading bfloat16 copies of their operands.
//!
//! Key design decision: every output is summed over the inner dimension in one fixed order
//! by one thread, so a result depends neither on the thread count nor on the other columns
//! computed with it — the LSTM's bit-for-bit reproducibility across thread counts rests on it.

pub mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod bf16;
mod bfloat;
mod f32;
mod mat;
mod precision;
mod step;

pub use f32::{matmul, product, row_sums, sums_by_slot, transpose, transpose_rows};
pub use mat::Mat;
pub use precision::Precision;
pub use step::StepWeights;
