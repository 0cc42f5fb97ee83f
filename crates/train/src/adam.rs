//! Adam (Kingma & Ba, 2015), written out so every line of the update is visible.

use artifacts::AdamState;
use candle_core::{Result, Tensor, Var};

/// Adam's hyperparameters and its two running moments per weight.
pub struct Adam {
    learning_rate: f64,
    beta1: f64,
    beta2: f64,
    epsilon: f64,
    step: u64,
    /// Running mean of the gradients (m), one per weight.
    first_moment: Vec<Tensor>,
    /// Running mean of the squared gradients (v), one per weight.
    second_moment: Vec<Tensor>,
}

impl Adam {
    /// A fresh optimizer for `vars`, with the usual β₁ = 0.9, β₂ = 0.999, ε = 1e-8.
    pub fn new(vars: &[Var], learning_rate: f64) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(Adam {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            step: 0,
            first_moment: vars.iter().map(zeros).collect::<Result<_>>()?,
            second_moment: vars.iter().map(zeros).collect::<Result<_>>()?,
        })
    }

    /// An optimizer continuing from stored moments (a checkpoint's), in the weights' order.
    pub fn from_state(state: &AdamState, learning_rate: f64, device: &candle_core::Device) -> Result<Self> {
        let load = |tensors: &[artifacts::NamedTensor]| -> Result<Vec<Tensor>> {
            tensors.iter().map(|t| Tensor::from_slice(&t.data, t.shape.as_slice(), device)).collect()
        };
        Ok(Adam {
            learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            step: state.step,
            first_moment: load(&state.first_moment)?,
            second_moment: load(&state.second_moment)?,
        })
    }

    /// One update of every weight from its gradient (same order as `vars`):
    ///
    /// ```text
    /// m ← β₁·m + (1−β₁)·g          v ← β₂·v + (1−β₂)·g²
    /// w ← w − lr · m̂ / (√v̂ + ε)    where m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)
    /// ```
    pub fn update(&mut self, vars: &[Var], grads: &[Tensor]) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let m_correction = 1.0 - self.beta1.powi(t);
        let v_correction = 1.0 - self.beta2.powi(t);
        for (i, (var, g)) in vars.iter().zip(grads).enumerate() {
            // Candle's gradients still carry the autograd graph they were computed through,
            // which holds the whole batch's activations. Detached, the moments keep only
            // their values; otherwise every step would keep every earlier batch alive.
            let g = g.detach();
            let m = ((&self.first_moment[i] * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
            let v = ((&self.second_moment[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let m_hat = (&m / m_correction)?;
            let v_hat = (&v / v_correction)?;
            let delta = (m_hat / (v_hat.sqrt()? + self.epsilon)?)?;
            var.set(&(var.as_tensor() - (delta * self.learning_rate)?)?)?;
            self.first_moment[i] = m;
            self.second_moment[i] = v;
        }
        Ok(())
    }

    /// The moments, for storage in `model.bin`.
    pub fn state(&self, names: &[String]) -> Result<AdamState> {
        Ok(AdamState {
            step: self.step,
            first_moment: lstm::named_tensors(names, self.first_moment.iter())?,
            second_moment: lstm::named_tensors(names, self.second_moment.iter())?,
        })
    }
}

/// Scales `grads` so their global L2 norm is at most `max_norm` (0 = no clipping).
/// Returns the norm before clipping, which is worth logging when training diverges.
pub fn clip_global_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut squared = 0.0f64;
    for g in grads.iter() {
        squared += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    let norm = squared.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}
