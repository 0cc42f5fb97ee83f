//! Adam (Kingma & Ba, 2015), written out so every line of the update is visible.
//!
//! The update runs on the host over plain `f32` slices: one pass per weight, no temporary
//! tensors. On the CPU it works in the weights' own storage (Candle's in-place op), the
//! fastest way; on a GPU it costs one copy of the weights and gradients each way per step,
//! small next to the step itself at this model's size.

use artifacts::{AdamState, NamedTensor};
use candle_core::{Result, Tensor, Var};
use rayon::prelude::*;

/// Adam's hyperparameters and its two running moments per weight.
pub struct Adam {
    learning_rate: f64,
    beta1: f64,
    beta2: f64,
    epsilon: f64,
    step: u64,
    /// Running mean of the gradients (m), one per weight, flattened.
    first_moment: Vec<Vec<f32>>,
    /// Running mean of the squared gradients (v), one per weight, flattened.
    second_moment: Vec<Vec<f32>>,
    /// Each weight's shape, for storing the moments.
    shapes: Vec<Vec<usize>>,
}

impl Adam {
    /// A fresh optimizer for `vars`, with the usual β₁ = 0.9, β₂ = 0.999, ε = 1e-8.
    pub fn new(vars: &[Var], learning_rate: f64) -> Self {
        let zeros = || vars.iter().map(|v| vec![0.0f32; v.elem_count()]).collect();
        let shapes = vars.iter().map(|v| v.dims().to_vec()).collect();
        Self::with_moments(learning_rate, 0, [zeros(), zeros()], shapes)
    }

    /// An optimizer continuing from stored moments (a checkpoint's), in the weights' order.
    pub fn from_state(state: &AdamState, learning_rate: f64) -> Self {
        let data = |tensors: &[NamedTensor]| tensors.iter().map(|t| t.data.clone()).collect();
        let shapes = state.first_moment.iter().map(|t| t.shape.clone()).collect();
        Self::with_moments(learning_rate, state.step, [data(&state.first_moment), data(&state.second_moment)], shapes)
    }

    fn with_moments(
        learning_rate: f64,
        step: u64,
        [first, second]: [Vec<Vec<f32>>; 2],
        shapes: Vec<Vec<usize>>,
    ) -> Self {
        Adam {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            step,
            first_moment: first,
            second_moment: second,
            shapes,
        }
    }

    /// Sets the step size of the updates from now on (a schedule's rate for the next step).
    pub fn set_learning_rate(&mut self, learning_rate: f64) {
        self.learning_rate = learning_rate;
    }

    /// Updates made so far (`t` after the last one), counted across checkpoints.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update of every weight from its gradient (same order as `vars`), as PyTorch
    /// computes it:
    ///
    /// ```text
    /// m ← β₁·m + (1−β₁)·g          v ← β₂·v + (1−β₂)·g²
    /// w ← w − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)
    /// ```
    ///
    /// (the bias corrections m̂ = m/(1−β₁ᵗ) and v̂ = v/(1−β₂ᵗ) folded into two constants, so
    /// each weight costs one square root and one division). Weights are updated in parallel
    /// chunks; each value's arithmetic is the same whatever the chunking.
    pub fn update(&mut self, vars: &[Var], grads: &[Vec<f32>]) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let rule = Rule {
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            step_size: (self.learning_rate / (1.0 - self.beta1.powi(t))) as f32,
            v_scale: (1.0 / (1.0 - self.beta2.powi(t)).sqrt()) as f32,
            epsilon: self.epsilon as f32,
        };
        for (i, (var, g)) in vars.iter().zip(grads).enumerate() {
            if var.elem_count() != g.len() || g.len() != self.first_moment[i].len() {
                candle_core::bail!("Adam: weight {i} has {} values, its gradient {}", var.elem_count(), g.len());
            }
            let (m, v) = (&mut self.first_moment[i], &mut self.second_moment[i]);
            if var.device().is_cpu() {
                // In the weight's own storage: no copy of the weights out and back in (two
                // passes over 14 MB a step at H = 512).
                let update =
                    InPlace { rule, moments: std::cell::RefCell::new((m.as_mut_slice(), v.as_mut_slice())), g };
                var.as_tensor().inplace_op1(&update)?;
            } else {
                let mut w = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                rule.apply(&mut w, m, v, g);
                var.set(&Tensor::from_vec(w, var.shape(), var.device())?)?;
            }
        }
        Ok(())
    }

    /// The moments, for storage in `model.bin`.
    pub fn state(&self, names: &[String]) -> AdamState {
        let named = |moments: &[Vec<f32>]| {
            names
                .iter()
                .zip(moments)
                .zip(&self.shapes)
                .map(|((name, data), shape)| NamedTensor {
                    name: name.clone(),
                    shape: shape.clone(),
                    data: data.clone(),
                })
                .collect()
        };
        AdamState {
            step: self.step,
            first_moment: named(&self.first_moment),
            second_moment: named(&self.second_moment),
        }
    }
}

/// One step's constants of the update (the bias corrections folded in).
#[derive(Clone, Copy)]
struct Rule {
    beta1: f32,
    beta2: f32,
    step_size: f32,
    v_scale: f32,
    epsilon: f32,
}

impl Rule {
    /// The update of weights `w` with moments `m`, `v` and gradient `g`, in parallel
    /// chunks; each value's arithmetic is the same whatever the chunking.
    fn apply(self, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        const CHUNK: usize = 1 << 14;
        let Rule { beta1, beta2, step_size, v_scale, epsilon } = self;
        (w.par_chunks_mut(CHUNK), m.par_chunks_mut(CHUNK), v.par_chunks_mut(CHUNK), g.par_chunks(CHUNK))
            .into_par_iter()
            .for_each(|(w, m, v, g)| {
                for k in 0..w.len().min(m.len()).min(v.len()).min(g.len()) {
                    m[k] = beta1 * m[k] + (1.0 - beta1) * g[k];
                    v[k] = beta2 * v[k] + (1.0 - beta2) * g[k] * g[k];
                    w[k] -= step_size * m[k] / (v[k].sqrt() * v_scale + epsilon);
                }
            });
    }
}

/// The update of one weight tensor in its own CPU storage (Candle's in-place op: the
/// storage is handed over mutably, no autograd involved).
struct InPlace<'a> {
    rule: Rule,
    moments: std::cell::RefCell<(&'a mut [f32], &'a mut [f32])>,
    g: &'a [f32],
}

impl candle_core::InplaceOp1 for InPlace<'_> {
    fn name(&self) -> &'static str {
        "adam-update"
    }

    fn cpu_fwd(&self, storage: &mut candle_core::CpuStorage, layout: &candle_core::Layout) -> Result<()> {
        let candle_core::CpuStorage::F32(data) = storage else { candle_core::bail!("Adam: weights must be f32") };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("Adam: weights must be contiguous")
        };
        let (m, v) = &mut *self.moments.borrow_mut();
        self.rule.apply(&mut data[start..end], m, v, self.g);
        Ok(())
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm` (0 = no clipping).
/// Returns the norm before clipping, which is worth logging when training diverges.
pub fn clip_global_norm(grads: &mut [Vec<f32>], max_norm: f64) -> f64 {
    // Eight interleaved partial sums, so the additions vectorise (one chain ran ~8× slower).
    let mut partial = [0.0f64; 8];
    for grad in grads.iter() {
        let chunks = grad.chunks_exact(8);
        partial[0] += chunks.remainder().iter().map(|&g| f64::from(g) * f64::from(g)).sum::<f64>();
        for chunk in chunks {
            for (p, &g) in partial.iter_mut().zip(chunk) {
                *p += f64::from(g) * f64::from(g);
            }
        }
    }
    let squared: f64 = partial.iter().sum();
    let norm = squared.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = (max_norm / (norm + 1e-6)) as f32;
        grads.iter_mut().flatten().for_each(|g| *g *= scale);
    }
    norm
}
