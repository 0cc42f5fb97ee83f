//! The gate math of one LSTM time step on the CPU, with a fast sigmoid and tanh; the
//! matrix products around it are the `products` crate's.
//!
//! The gate math is plain Rust over contiguous rows, written so the compiler vectorises it;
//! on x86-64 it is compiled three times, for AVX-512, AVX2 and the baseline, and the widest
//! copy the processor runs is picked at run time. It uses no fused multiply-add, so
//! all copies round identically.

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The thread count for matrix products: `runtime.threads`, via [`crate::set_cpu_threads`].
pub(crate) fn threads() -> usize {
    candle_core::utils::get_num_threads()
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
}
