//! The network both `train` and `compose` use: embedding → stacked LSTM → linear layer.
//!
//! ```text
//! token ids [B,T] ─ embedding [V,E] ─▶ [B,T,E] ─ LSTM 1 ─▶ [B,T,H] ─ … ─ LSTM n ─▶ [B,T,H]
//!                                        (dropout between layers while training)
//!                                          ─ linear [H,V] + bias ─▶ logits [B,T,V]
//! ```
//!
//! Each LSTM layer computes, for every time step t (σ is the logistic sigmoid, ⊙ is the
//! element-wise product, the gates are the four H-wide column blocks of one matmul):
//!
//! ```text
//! [i f g o] = x_t·W_ih + h_{t-1}·W_hh + b
//! c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)
//! h_t = σ(o) ⊙ tanh(c_t)
//! ```
//!
//! Key design decision: the cell is written out in Candle tensor ops, right here, instead of
//! calling a framework layer, so the forward math is in plain sight and Candle's autograd
//! derives the backward pass from exactly this code. Weights are stored input-major (`W_ih` is `[in, 4H]`) so every matmul reads its right-hand side
//! without a transpose. Weights are created from [`SeededRng`], never from Candle's
//! unseeded generator, so the same seed gives the same model on every machine.

use artifacts::{Hyperparameters, NamedTensor};
use candle_core::{D, DType, Device, Tensor, Var};
use seeded_rng::SeededRng;

pub use candle_core;

/// Candle's error type, re-exported so callers need not depend on candle-core for it.
pub type Result<T> = candle_core::Result<T>;

/// The model's weights, as autograd variables, in a fixed order that [`LstmModel::names`]
/// describes. Invariant: shapes agree with `hyperparameters`.
pub struct LstmModel {
    pub hyperparameters: Hyperparameters,
    weights: Vec<Var>,
    names: Vec<String>,
}

/// Per layer, the hidden and cell state carried from one time step to the next.
#[derive(Clone)]
pub struct LayerState {
    pub h: Tensor,
    pub c: Tensor,
}

/// Weight names and shapes for the given hyperparameters, in storage order.
fn layout(hp: &Hyperparameters) -> Vec<(String, Vec<usize>)> {
    let (v, e, h) = (hp.vocab_size, hp.embedding, hp.hidden);
    let mut layout = vec![("embedding".to_string(), vec![v, e])];
    for layer in 0..hp.layers {
        let input = if layer == 0 { e } else { h };
        layout.push((format!("lstm{layer}.w_ih"), vec![input, 4 * h]));
        layout.push((format!("lstm{layer}.w_hh"), vec![h, 4 * h]));
        layout.push((format!("lstm{layer}.bias"), vec![4 * h]));
    }
    layout.push(("head.weight".to_string(), vec![h, v]));
    layout.push(("head.bias".to_string(), vec![v]));
    layout
}

impl LstmModel {
    /// A freshly initialised model, as PyTorch initialises these layers: embedding rows
    /// from N(0, 1), every other weight from U(−1/√H, 1/√H). The LSTM's forget-gate bias
    /// starts at 1 so early training does not wipe the cell state (Jozefowicz et al. 2015).
    pub fn new(hyperparameters: Hyperparameters, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = SeededRng::new(seed, "init");
        let bound = 1.0 / (hyperparameters.hidden as f32).sqrt();
        let h = hyperparameters.hidden;
        let mut named = Vec::new();
        for (name, shape) in layout(&hyperparameters) {
            let count: usize = shape.iter().product();
            let data: Vec<f32> = if name == "embedding" {
                (0..count).map(|_| standard_normal(&mut rng)).collect()
            } else if name.ends_with(".bias") && name.starts_with("lstm") {
                (0..count).map(|i| if (h..2 * h).contains(&i) { 1.0 } else { 0.0 }).collect()
            } else {
                (0..count).map(|_| (rng.unit_f32() * 2.0 - 1.0) * bound).collect()
            };
            named.push(NamedTensor { name, shape, data });
        }
        Self::from_named(hyperparameters, &named, device)
    }

    /// Rebuilds a model from stored weights; checks every name and shape.
    pub fn from_named(hyperparameters: Hyperparameters, stored: &[NamedTensor], device: &Device) -> Result<Self> {
        let expected = layout(&hyperparameters);
        if stored.len() != expected.len() {
            candle_core::bail!("model has {} weight tensors, expected {}", stored.len(), expected.len());
        }
        let mut weights = Vec::with_capacity(stored.len());
        for (tensor, (name, shape)) in stored.iter().zip(&expected) {
            if &tensor.name != name || &tensor.shape != shape || tensor.data.len() != shape.iter().product::<usize>() {
                candle_core::bail!(
                    "weight {} {:?} does not match the expected {name} {shape:?}",
                    tensor.name,
                    tensor.shape
                );
            }
            weights.push(Var::from_tensor(&Tensor::from_slice(&tensor.data, shape.as_slice(), device)?)?);
        }
        Ok(LstmModel { hyperparameters, weights, names: expected.into_iter().map(|(n, _)| n).collect() })
    }

    /// The weights in storage order, for the optimizer.
    pub fn vars(&self) -> &[Var] {
        &self.weights
    }

    /// The weight names, in the same order as [`LstmModel::vars`].
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Copies the weights out for storage in `model.bin`.
    pub fn to_named(&self) -> Result<Vec<NamedTensor>> {
        named_tensors(&self.names, self.weights.iter().map(|v| v.as_tensor()))
    }

    fn embedding(&self) -> &Tensor {
        self.weights[0].as_tensor()
    }

    /// `(W_ih, W_hh, bias)` of one layer.
    fn layer(&self, layer: usize) -> (&Tensor, &Tensor, &Tensor) {
        let base = 1 + 3 * layer;
        (self.weights[base].as_tensor(), self.weights[base + 1].as_tensor(), self.weights[base + 2].as_tensor())
    }

    fn head(&self) -> (&Tensor, &Tensor) {
        let n = self.weights.len();
        (self.weights[n - 2].as_tensor(), self.weights[n - 1].as_tensor())
    }

    /// Logits `[B, T, V]` for token ids `[B, T]` (u32), every layer starting from zero state.
    ///
    /// With `dropout = Some((rng, p))` each LSTM layer's output is dropped with
    /// probability `p` (inverted dropout: kept values are scaled by 1/(1−p)), as in training.
    pub fn forward(&self, tokens: &Tensor, mut dropout: Option<(&mut SeededRng, f32)>) -> Result<Tensor> {
        let (batch, steps) = tokens.dims2()?;
        let hp = &self.hyperparameters;
        // Each time step stays its own tensor from the embedding to the head. Slicing one
        // [B, T, ·] tensor per step instead would cost O(T²): the backward pass of every
        // slice allocates a zero-padded gradient the size of the whole tensor.
        let mut sequence: Vec<Tensor> = (0..steps)
            .map(|t| self.embedding().embedding(&tokens.narrow(1, t, 1)?.squeeze(1)?))
            .collect::<Result<_>>()?;
        for layer in 0..hp.layers {
            let (w_ih, w_hh, bias) = self.layer(layer);
            let mut state = self.zero_layer_state(batch, tokens.device())?;
            for x_t in sequence.iter_mut() {
                state = cell(&x_t.matmul(w_ih)?.broadcast_add(bias)?, w_hh, &state)?;
                *x_t = state.h.clone();
                if let Some((rng, p)) = dropout.as_mut()
                    && *p > 0.0
                {
                    *x_t = x_t.mul(&dropout_mask(x_t.dims(), *p, rng, x_t.device())?)?;
                }
            }
        }
        // One matmul for the output layer over all B·T positions.
        let (head_w, head_b) = self.head();
        Tensor::stack(&sequence, 1)?
            .reshape((batch * steps, hp.hidden))?
            .matmul(head_w)?
            .broadcast_add(head_b)?
            .reshape((batch, steps, hp.vocab_size))
    }

    fn zero_layer_state(&self, batch: usize, device: &Device) -> Result<LayerState> {
        let zeros = Tensor::zeros((batch, self.hyperparameters.hidden), DType::F32, device)?;
        Ok(LayerState { h: zeros.clone(), c: zeros })
    }

    /// The all-zero state of every layer for `batch` parallel streams.
    pub fn zero_state(&self, batch: usize, device: &Device) -> Result<Vec<LayerState>> {
        (0..self.hyperparameters.layers).map(|_| self.zero_layer_state(batch, device)).collect()
    }

    /// One generation step: feeds token ids `[B]` (u32) through every layer, updating
    /// `state` in place, and returns the logits `[B, V]` for the next token.
    pub fn step(&self, tokens: &Tensor, state: &mut [LayerState]) -> Result<Tensor> {
        let mut x = self.embedding().embedding(tokens)?;
        for (layer, layer_state) in state.iter_mut().enumerate() {
            let (w_ih, w_hh, bias) = self.layer(layer);
            let projected = x.matmul(w_ih)?.broadcast_add(bias)?;
            *layer_state = cell(&projected, w_hh, layer_state)?;
            x = layer_state.h.clone();
        }
        let (head_w, head_b) = self.head();
        x.matmul(head_w)?.broadcast_add(head_b)
    }
}

/// One LSTM time step for a batch: `projected` is x_t·W_ih + b, `[B, 4H]`.
fn cell(projected: &Tensor, w_hh: &Tensor, previous: &LayerState) -> Result<LayerState> {
    let gates = (projected + previous.h.matmul(w_hh)?)?;
    let gates = gates.chunk(4, D::Minus1)?;
    let input_gate = candle_nn::ops::sigmoid(&gates[0])?;
    let forget_gate = candle_nn::ops::sigmoid(&gates[1])?;
    let candidate = gates[2].tanh()?;
    let output_gate = candle_nn::ops::sigmoid(&gates[3])?;
    let c = ((forget_gate * &previous.c)? + (input_gate * candidate)?)?;
    let h = (output_gate * c.tanh()?)?;
    Ok(LayerState { h, c })
}

/// An inverted-dropout mask: each entry 0 with probability `p`, else 1/(1−p).
fn dropout_mask(dims: &[usize], p: f32, rng: &mut SeededRng, device: &Device) -> Result<Tensor> {
    let count: usize = dims.iter().product();
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..count).map(|_| if rng.unit_f32() < p { 0.0 } else { keep }).collect();
    Tensor::from_vec(mask, dims, device)
}

/// A draw from N(0, 1) by the Box–Muller transform.
fn standard_normal(rng: &mut SeededRng) -> f32 {
    let u1 = 1.0 - rng.unit_f64(); // (0, 1], so the log is finite
    let u2 = rng.unit_f64();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Copies tensors out to the host as [`NamedTensor`]s.
pub fn named_tensors<'a>(names: &[String], tensors: impl Iterator<Item = &'a Tensor>) -> Result<Vec<NamedTensor>> {
    names
        .iter()
        .zip(tensors)
        .map(|(name, tensor)| {
            Ok(NamedTensor {
                name: name.clone(),
                shape: tensor.dims().to_vec(),
                data: tensor.flatten_all()?.to_vec1::<f32>()?,
            })
        })
        .collect()
}

/// The Candle device for a config choice. `Auto` takes CUDA, then Metal, when this build
/// has the feature and the machine has the device, else the CPU.
pub fn select_device(choice: config::Device) -> Result<Device> {
    match choice {
        config::Device::Cpu => Ok(Device::Cpu),
        config::Device::Cuda => Device::new_cuda(0),
        config::Device::Metal => Device::new_metal(0),
        config::Device::Auto => {
            if candle_core::utils::cuda_is_available() {
                Device::new_cuda(0)
            } else if candle_core::utils::metal_is_available() {
                Device::new_metal(0)
            } else {
                Ok(Device::Cpu)
            }
        }
    }
}

/// Sets the number of CPU threads Candle's matrix kernels use; 0 means one per core.
///
/// Must be called at the start of `main`, before any other thread exists: Candle reads the
/// count from `RAYON_NUM_THREADS` on every matmul, and rayon's global pool is sized once.
pub fn set_cpu_threads(threads: usize) {
    let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
    // SAFETY: called from `main` before any thread is spawned, so nothing reads the
    // environment concurrently.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    // Fails only if the pool already exists, and then it already has a size; keep it.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Hyperparameters {
        Hyperparameters { vocab_size: 7, embedding: 3, hidden: 4, layers: 2, dropout: 0.0, seq_len: 5 }
    }

    #[test]
    fn same_seed_same_weights_and_round_trip() {
        let a = LstmModel::new(tiny(), 3, &Device::Cpu).unwrap().to_named().unwrap();
        let b = LstmModel::new(tiny(), 3, &Device::Cpu).unwrap().to_named().unwrap();
        let c = LstmModel::new(tiny(), 4, &Device::Cpu).unwrap().to_named().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let back = LstmModel::from_named(tiny(), &a, &Device::Cpu).unwrap().to_named().unwrap();
        assert_eq!(a, back);
        let mut wrong = a.clone();
        wrong[1].shape = vec![4, 12];
        assert!(LstmModel::from_named(tiny(), &wrong, &Device::Cpu).is_err());
    }

    #[test]
    fn stepping_matches_the_sequence_forward() {
        let model = LstmModel::new(tiny(), 1, &Device::Cpu).unwrap();
        let ids: Vec<u32> = vec![1, 4, 2, 6, 0, 3, 3, 5, 1, 2];
        let tokens = Tensor::from_vec(ids.clone(), (2, 5), &Device::Cpu).unwrap();
        let full = model.forward(&tokens, None).unwrap();
        assert_eq!(full.dims(), &[2, 5, 7]);
        let mut state = model.zero_state(2, &Device::Cpu).unwrap();
        for t in 0..5 {
            let column = Tensor::from_vec(vec![ids[t], ids[5 + t]], 2, &Device::Cpu).unwrap();
            let stepped = model.step(&column, &mut state).unwrap();
            let expected = full.narrow(1, t, 1).unwrap().squeeze(1).unwrap();
            let diff = (stepped - expected).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "step {t} differs by {diff}");
        }
    }

    /// The hand-written cell against a scalar evaluation of the LSTM equations.
    #[test]
    fn cell_matches_the_equations() {
        let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
        let h = 2;
        let projected = [0.1f32, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8];
        let w_hh: Vec<f32> = (0..h * 4 * h).map(|i| (i as f32 - 7.0) * 0.05).collect();
        let (h0, c0) = ([0.2f32, -0.1], [0.5f32, 0.3]);
        let device = Device::Cpu;
        let state = LayerState {
            h: Tensor::from_slice(&h0, (1, h), &device).unwrap(),
            c: Tensor::from_slice(&c0, (1, h), &device).unwrap(),
        };
        let out = cell(
            &Tensor::from_slice(&projected, (1, 4 * h), &device).unwrap(),
            &Tensor::from_slice(&w_hh, (h, 4 * h), &device).unwrap(),
            &state,
        )
        .unwrap();
        let gate = |k: usize| projected[k] + (0..h).map(|j| h0[j] * w_hh[j * 4 * h + k]).sum::<f32>();
        let got_h = out.h.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got_c = out.c.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for u in 0..h {
            let c = sigmoid(gate(h + u)) * c0[u] + sigmoid(gate(u)) * gate(2 * h + u).tanh();
            let hh = sigmoid(gate(3 * h + u)) * c.tanh();
            assert!((got_c[u] - c).abs() < 1e-6 && (got_h[u] - hh).abs() < 1e-6);
        }
    }
}
