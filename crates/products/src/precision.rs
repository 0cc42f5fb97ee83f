//! The choice between the float32 and the bfloat16 products.

use crate::mat::Mat;
use crate::{bf16, f32};

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
            Precision::F32 => f32::product(a, b, threads),
            Precision::Bf16 => bf16::product(a, b, threads),
        }
    }
}
