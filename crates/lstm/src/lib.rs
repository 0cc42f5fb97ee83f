//! The network both `train` and `compose` use: embedding → stacked LSTM → linear layer.
//!
//! ```text
//! token ids [B,T] ─ embedding [V,E] ─▶ x ─ LSTM 1 ─▶ h ─ … ─ LSTM n ─▶ h ─ linear [V,H] + b ─▶ logits
//!                                  (dropout after each LSTM layer while training)
//! ```
//!
//! Each LSTM layer computes, for every time step t (σ is the logistic sigmoid, ⊙ is the
//! element-wise product, the gates are the four H-row blocks of the weight matrices):
//!
//! ```text
//! [i f g o] = W_ih·x_t + W_hh·h_{t-1} + b
//! c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)
//! h_t = σ(o) ⊙ tanh(c_t)
//! ```
//!
//! Weights are stored `[outputs, inputs]` (`W_ih` is `[4H, in]`), as PyTorch and candle-nn
//! store them, and are created from [`SeededRng`], never from Candle's unseeded generator,
//! so the same seed gives the same model on every machine.
//!
//! Key design decision: two implementations of the same equations, chosen by device.
//! On the CPU, where almost every user trains, the layers are written by hand with their
//! backward passes beside them ([`layers`], over [`cells`] and the `products` crate): a few large matrix products
//! per layer plus one small one per time step, the gate math fused into one vectorised pass,
//! the batch split across threads so no thread waits for another between time steps. A
//! training step ([`network`]) chains them without an autograd graph; [`fused`] wraps them
//! as Candle custom ops for code that wants Candle tensors. On CUDA and Metal the same
//! equations run as Candle tensor ops ([`LstmModel::logits_on`] with
//! [`LayerPath::CandleOps`]) and Candle's autograd derives the backward pass. Tests hold
//! the two paths, candle-nn's LSTM and finite differences to the same numbers.
//!
//! On the CPU every matrix product reads float32 by default, or bfloat16 copies of its
//! operands ([`bf16`], [`Precision`]: twice the products per instruction on processors with
//! AVX-512 BF16, float32 sums, weights and gate math), as [`LstmModel::set_precision`] says.
//!
//! What training and evaluation share beside the network lives here too: the optimizer
//! ([`adam`]), [`batch`], which turns a data set's windows into input and target ids, and
//! lanes ([`lane_batches`], [`LaneStates`], [`whole_pieces`], [`read_in_order`]), which
//! read pieces start to end a window at a time with the state carried from window to
//! window — how validation measures the model ([`LaneStates`] also holds the state of
//! every training window under `train.carry_state`).
//! [`calibration`] fits the temperature that makes the network's probabilities as sure as
//! it is right on those pieces, and [`LstmModel::divide_logits_by`] folds it into the model.
//! Generation ([`Generator`]) carries the state and steps many streams at once.

use artifacts::{DatasetArtifact, Hyperparameters, NamedTensor, Split};
use candle_core::{D, DType, Device, Tensor, Var};
use seeded_rng::SeededRng;

pub use candle_core;

pub mod adam;
mod auto;
pub mod calibration;
pub mod cells;
pub mod fused;
mod generator;
pub mod layers;
mod memory;
pub mod network;

pub use auto::{BF16_MARGIN, PrecisionTrial, apply_precision_setting, choose_precision};
pub use generator::{Generator, on_kernel_threads};
pub use layers::StreamState;
pub use memory::keep_freed_memory;
pub use products::Precision;

/// Candle's error type, re-exported so callers need not depend on candle-core for it.
pub type Result<T> = candle_core::Result<T>;

/// The model's weights, as autograd variables, in a fixed order that [`LstmModel::names`]
/// describes. Invariant: shapes agree with `hyperparameters`.
pub struct LstmModel {
    pub hyperparameters: Hyperparameters,
    weights: Vec<Var>,
    names: Vec<String>,
    /// How the CPU path's products read their operands; float32 unless set.
    precision: Precision,
}

/// Which implementation computes the LSTM layers. Both compute the same function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerPath {
    /// [`fused`]: hand-written forward and backward passes; CPU only, and much faster there.
    Fused,
    /// Candle tensor ops, one per equation, differentiated by Candle's autograd; any device.
    CandleOps,
}

impl LayerPath {
    /// The fused path on the CPU, Candle ops elsewhere.
    pub fn for_device(device: &Device) -> Self {
        if device.is_cpu() { LayerPath::Fused } else { LayerPath::CandleOps }
    }
}

/// Per layer, the hidden and cell state carried from one time step to the next.
#[derive(Clone)]
pub struct LayerState {
    pub h: Tensor,
    pub c: Tensor,
}

/// Where layer `layer`'s `(W_ih, W_hh, bias)` sit in the storage order of [`layout`].
fn layer_slots(layer: usize) -> [usize; 3] {
    [1 + 3 * layer, 2 + 3 * layer, 3 + 3 * layer]
}

/// Where the output layer's `(weight, bias)` sit among `count` weights in storage order.
fn head_slots(count: usize) -> [usize; 2] {
    [count - 2, count - 1]
}

/// Weight names and shapes for the given hyperparameters, in storage order.
fn layout(hp: &Hyperparameters) -> Vec<(String, Vec<usize>)> {
    let (v, e, h) = (hp.vocab_size, hp.embedding, hp.hidden);
    let mut layout = vec![("embedding".to_string(), vec![v, e])];
    for layer in 0..hp.layers {
        let input = if layer == 0 { e } else { h };
        layout.push((format!("lstm{layer}.w_ih"), vec![4 * h, input]));
        layout.push((format!("lstm{layer}.w_hh"), vec![4 * h, h]));
        layout.push((format!("lstm{layer}.bias"), vec![4 * h]));
    }
    layout.push(("head.weight".to_string(), vec![v, h]));
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
        Ok(LstmModel {
            hyperparameters,
            weights,
            names: expected.into_iter().map(|(n, _)| n).collect(),
            precision: Precision::F32,
        })
    }

    /// How the CPU training step and [`Generator`] multiply: [`Precision::Bf16`] only on
    /// the CPU where [`products::bf16::available`] (an error says what is missing otherwise, and the
    /// model stays as it was). Measuring ([`LstmModel::carried_logits`]) and the Candle-ops path
    /// (CUDA, Metal) compute in float32.
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        // Plain messages, not `bail!`: that one carries a backtrace where RUST_BACKTRACE is
        // set, and this answer is expected, logged and reported as one line.
        let unavailable = |why: &str| Err(candle_core::Error::Msg(why.to_owned()));
        if precision == Precision::Bf16 {
            if !self.weights[0].device().is_cpu() {
                return unavailable("bfloat16 products are written for the CPU; on a GPU Candle computes in float32");
            }
            if !products::bf16::available() {
                return unavailable("bfloat16 products need a processor with AVX-512 BF16, which this one lacks");
            }
        }
        self.precision = precision;
        Ok(())
    }

    /// See [`LstmModel::set_precision`].
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The weights in storage order, for the optimizer.
    pub fn vars(&self) -> &[Var] {
        &self.weights
    }

    /// Where each layer's recurrent weights W_hh `[4H, H]` sit in [`LstmModel::vars`], layer
    /// 0 first.
    pub fn recurrent_weight_indices(&self) -> Vec<usize> {
        (0..self.hyperparameters.layers).map(|layer| layer_slots(layer)[1]).collect()
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
        let [w_ih, w_hh, bias] = layer_slots(layer).map(|i| self.weights[i].as_tensor());
        (w_ih, w_hh, bias)
    }

    /// Divides every logit the model computes by `temperature`, by scaling the output
    /// layer's weight and bias (logits are linear in both): how a fitted temperature
    /// ([`calibration::fit_temperature`]) becomes part of the model, so everything that
    /// reads it, sampling at temperature 1 included, sees the calibrated probabilities.
    pub fn divide_logits_by(&self, temperature: f64) -> Result<()> {
        for slot in head_slots(self.weights.len()) {
            let scaled = (self.weights[slot].as_tensor() / temperature)?;
            self.weights[slot].set(&scaled)?;
        }
        Ok(())
    }

    /// `(weight, bias)` of the output layer.
    fn head(&self) -> (&Tensor, &Tensor) {
        let [weight, bias] = head_slots(self.weights.len()).map(|i| self.weights[i].as_tensor());
        (weight, bias)
    }

    /// Logits `[B, T, V]` for token ids `[B, T]` (u32), every layer starting from zero state.
    ///
    /// With `dropout = Some((rng, p))` each LSTM layer's output is dropped with
    /// probability `p` (inverted dropout: kept values are scaled by 1/(1−p)), as in training.
    pub fn forward(&self, tokens: &Tensor, dropout: Option<(&mut SeededRng, f32)>) -> Result<Tensor> {
        let (batch, steps) = tokens.dims2()?;
        self.logits(tokens, dropout)?
            .reshape((steps, batch, self.hyperparameters.vocab_size))?
            .transpose(0, 1)?
            .contiguous()
    }

    /// Logits `[T·B, V]` for token ids `[B, T]`, one row per position in time-major order
    /// (row t·B + b is time step t of sequence b); see [`time_major`] for the matching targets.
    ///
    /// On the CPU this runs the [`fused`] layer with its hand-written backward pass; on other
    /// devices the same equations as Candle tensor ops (Candle's autograd derives their
    /// backward pass). Both give the same numbers to rounding.
    pub fn logits(&self, tokens: &Tensor, dropout: Option<(&mut SeededRng, f32)>) -> Result<Tensor> {
        self.logits_on(tokens, dropout, LayerPath::for_device(tokens.device()))
    }

    /// [`LstmModel::logits`] on a chosen path; [`LayerPath::Fused`] needs the CPU.
    pub fn logits_on(
        &self,
        tokens: &Tensor,
        dropout: Option<(&mut SeededRng, f32)>,
        path: LayerPath,
    ) -> Result<Tensor> {
        match path {
            LayerPath::Fused => self.logits_fused(tokens, dropout)?.t()?.contiguous(),
            LayerPath::CandleOps => self.logits_ops(tokens, dropout, None),
        }
    }

    /// [`LstmModel::logits`] without dropout, every sequence starting from `state` (one
    /// [`StreamState`] per layer, `[B, H]` each), which is left holding the state after the
    /// last position: how a piece longer than one window is read window by window. In
    /// float32 whatever [`LstmModel::set_precision`] says, as every measurement of the model.
    pub fn carried_logits(&self, tokens: &Tensor, state: &mut [StreamState]) -> Result<Tensor> {
        self.carried_logits_on(tokens, None, state, LayerPath::for_device(tokens.device()))
    }

    /// [`LstmModel::carried_logits`] on a chosen path, with dropout as in
    /// [`LstmModel::forward`]; [`LayerPath::Fused`] needs the CPU.
    pub fn carried_logits_on(
        &self,
        tokens: &Tensor,
        dropout: Option<(&mut SeededRng, f32)>,
        state: &mut [StreamState],
        path: LayerPath,
    ) -> Result<Tensor> {
        if path == LayerPath::CandleOps {
            return self.logits_ops(tokens, dropout, Some(state));
        }
        let masks = self.dropout_values(tokens.elem_count(), dropout);
        let ids = time_major(tokens)?.to_vec1::<u32>()?;
        let (z, last) = network::logits(self, &ids, tokens.dim(0)?, &masks, Some(state))?;
        state.clone_from_slice(&last);
        Tensor::from_vec(z, (self.hyperparameters.vocab_size, ids.len()), tokens.device())?.t()?.contiguous()
    }

    /// The mean loss of predicting `targets` `[B, T]` from `tokens` `[B, T]` and every
    /// weight's gradient, flattened, in the order of [`LstmModel::vars`]: one training step's
    /// forward and backward pass, dropout as in [`LstmModel::forward`].
    ///
    /// On the CPU this is [`network`]'s hand-written pass over the fused layers; elsewhere
    /// Candle's autograd differentiates the tensor-op path.
    pub fn loss_and_gradients(
        &self,
        tokens: &Tensor,
        targets: &Tensor,
        dropout: Option<(&mut SeededRng, f32)>,
    ) -> Result<(f32, Vec<Vec<f32>>)> {
        self.carried_loss_and_gradients(tokens, targets, dropout, None)
    }

    /// [`LstmModel::loss_and_gradients`] with every sequence starting from `state` where
    /// given (one [`StreamState`] per layer), which is then left holding the state after the
    /// last position, for the next window of the same pieces: truncated backpropagation
    /// through time. No gradient flows into the state it started from.
    pub fn carried_loss_and_gradients(
        &self,
        tokens: &Tensor,
        targets: &Tensor,
        dropout: Option<(&mut SeededRng, f32)>,
        state: Option<&mut [StreamState]>,
    ) -> Result<(f32, Vec<Vec<f32>>)> {
        if LayerPath::for_device(tokens.device()) == LayerPath::Fused {
            let masks = self.dropout_values(tokens.elem_count(), dropout);
            let ids = time_major(tokens)?.to_vec1::<u32>()?;
            let targets = time_major(targets)?.to_vec1::<u32>()?;
            let initial = state.as_deref();
            let (loss, grads, last) =
                network::loss_and_gradients(self, &ids, &targets, tokens.dim(0)?, &masks, initial)?;
            if let Some(state) = state {
                state.clone_from_slice(&last);
            }
            return Ok((loss, grads));
        }
        let logits = self.logits_ops(tokens, dropout, state)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &time_major(targets)?)?;
        let grads = loss.backward()?;
        let grads = self
            .vars()
            .iter()
            .map(|var| match grads.get(var) {
                Some(g) => g.flatten_all()?.to_vec1::<f32>(),
                // A weight the loss does not reach has no entry: its gradient is zero.
                None => Ok(vec![0.0; var.elem_count()]),
            })
            .collect::<Result<_>>()?;
        Ok((loss.to_scalar::<f32>()?, grads))
    }

    /// Per layer, the dropout mask for `positions` positions `[positions, H]` (position-major),
    /// or `None` without dropout. Drawn in this order on every path, so all drop the same
    /// units: each kept value is scaled by 1/(1−p) (inverted dropout).
    fn dropout_values(&self, positions: usize, mut dropout: Option<(&mut SeededRng, f32)>) -> Vec<Option<Vec<f32>>> {
        let hp = &self.hyperparameters;
        (0..hp.layers)
            .map(|_| match dropout.as_mut() {
                Some((rng, p)) if *p > 0.0 => Some(inverted_dropout_mask(rng, *p, positions * hp.hidden)),
                _ => None,
            })
            .collect()
    }

    /// [`LstmModel::dropout_values`] as tensors `[T·B, H]` on the tokens' device.
    fn dropout_masks(&self, tokens: &Tensor, dropout: Option<(&mut SeededRng, f32)>) -> Result<Vec<Option<Tensor>>> {
        let shape = (tokens.elem_count(), self.hyperparameters.hidden);
        self.dropout_values(tokens.elem_count(), dropout)
            .into_iter()
            .map(|mask| mask.map(|m| Tensor::from_vec(m, shape, tokens.device())).transpose())
            .collect()
    }

    /// The CPU path: activations stay feature-major `[features, T·B]` from the embedding to
    /// the head, whose logits come out as `[V, T·B]`.
    fn logits_fused(&self, tokens: &Tensor, dropout: Option<(&mut SeededRng, f32)>) -> Result<Tensor> {
        let batch = tokens.dim(0)?;
        let masks = self.dropout_masks(tokens, dropout)?;
        let mut x = self.embedding().embedding(&time_major(tokens)?)?.t()?.contiguous()?;
        for (layer, mask) in masks.iter().enumerate() {
            let (w_ih, w_hh, bias) = self.layer(layer);
            let projected = x.apply_op3(w_ih, bias, fused::Affine)?;
            x = projected.apply_op2(w_hh, fused::Recurrence::new(batch))?;
            if let Some(mask) = mask {
                x = x.mul(&mask.t()?)?;
            }
        }
        let (head_w, head_b) = self.head();
        x.apply_op3(head_w, head_b, fused::Affine)
    }

    /// The portable path: Candle tensor ops, one tensor per time step. (Slicing one
    /// `[T·B, ·]` tensor per step instead would cost O(T²) in the backward pass: every
    /// slice's gradient is a zero-padded copy of the whole tensor.)
    /// Every layer starts from `carried` where given, which is left holding the state after
    /// the last step (as plain numbers, so no gradient reaches back into an earlier window).
    fn logits_ops(
        &self,
        tokens: &Tensor,
        dropout: Option<(&mut SeededRng, f32)>,
        mut carried: Option<&mut [StreamState]>,
    ) -> Result<Tensor> {
        let (batch, steps) = tokens.dims2()?;
        let masks = self.dropout_masks(tokens, dropout)?;
        let ids = time_major(tokens)?;
        let (device, shape) = (ids.device(), (batch, self.hyperparameters.hidden));
        let mut sequence: Vec<Tensor> =
            (0..steps).map(|t| self.embedding().embedding(&ids.narrow(0, t * batch, batch)?)).collect::<Result<_>>()?;
        for (layer, mask) in masks.iter().enumerate() {
            let (w_ih, w_hh, bias) = self.layer(layer);
            let mut state = match carried.as_deref() {
                Some(states) => LayerState {
                    h: Tensor::from_slice(&states[layer].h, shape, device)?,
                    c: Tensor::from_slice(&states[layer].c, shape, device)?,
                },
                None => self.zero_layer_state(batch, device)?,
            };
            for (t, x_t) in sequence.iter_mut().enumerate() {
                state = cell(&x_t.matmul(&w_ih.t()?)?.broadcast_add(bias)?, w_hh, &state)?;
                *x_t = match mask {
                    Some(mask) => state.h.mul(&mask.narrow(0, t * batch, batch)?)?,
                    None => state.h.clone(),
                };
            }
            if let Some(states) = carried.as_deref_mut() {
                states[layer] = StreamState {
                    h: state.h.flatten_all()?.to_vec1::<f32>()?,
                    c: state.c.flatten_all()?.to_vec1::<f32>()?,
                };
            }
        }
        let (head_w, head_b) = self.head();
        Tensor::cat(&sequence, 0)?.matmul(&head_w.t()?)?.broadcast_add(head_b)
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
            let projected = x.matmul(&w_ih.t()?)?.broadcast_add(bias)?;
            *layer_state = cell(&projected, w_hh, layer_state)?;
            x = layer_state.h.clone();
        }
        let (head_w, head_b) = self.head();
        x.matmul(&head_w.t()?)?.broadcast_add(head_b)
    }
}

/// Token ids `[B, T]` as one vector `[T·B]` in time-major order, the row order of
/// [`LstmModel::logits`]: apply it to the targets too.
pub fn time_major(tokens: &Tensor) -> Result<Tensor> {
    tokens.t()?.flatten_all()
}

/// `len` values drawn in order from `rng`: each 0 with probability `p` (0 ≤ p < 1), else
/// 1/(1 − p), so a masked sum keeps its expected value (inverted dropout). The one mask
/// every dropout in training draws: on the units between layers (`LstmModel`'s dropout) and on
/// the recurrent weights (`train.weight_drop`).
pub fn inverted_dropout_mask(rng: &mut SeededRng, p: f32, len: usize) -> Vec<f32> {
    use rayon::prelude::*;
    // Drawn in pieces across the pool, each from a copy of the stream moved ahead to the
    // piece's first draw: the values of one draw after another, whatever the thread count.
    // (Drawn one by one on the calling thread, the masks took about an eighth of a
    // base-model training step while the other core waited.)
    const PIECE: usize = 1 << 15;
    let keep = 1.0 / (1.0 - p);
    let mut mask = Vec::with_capacity(len);
    let start = &*rng;
    mask.spare_capacity_mut()[..len].par_chunks_mut(PIECE).enumerate().for_each(|(index, piece)| {
        let draws = start.ahead((index * PIECE) as u64).fill_unit_f32(piece);
        draws.iter_mut().for_each(|value| *value = if *value < p { 0.0 } else { keep });
    });
    // SAFETY: the pieces cover all `len` values, and `fill_unit_f32` wrote each of its own.
    unsafe { mask.set_len(len) };
    *rng = rng.ahead(len as u64);
    mask
}

/// One LSTM time step for a batch: `projected` is x_t·W_ih + b, `[B, 4H]`.
fn cell(projected: &Tensor, w_hh: &Tensor, previous: &LayerState) -> Result<LayerState> {
    let gates = (projected + previous.h.matmul(&w_hh.t()?)?)?;
    let gates = gates.chunk(4, D::Minus1)?;
    let input_gate = candle_nn::ops::sigmoid(&gates[0])?;
    let forget_gate = candle_nn::ops::sigmoid(&gates[1])?;
    let candidate = gates[2].tanh()?;
    let output_gate = candle_nn::ops::sigmoid(&gates[3])?;
    let c = ((forget_gate * &previous.c)? + (input_gate * candidate)?)?;
    let h = (output_gate * c.tanh()?)?;
    Ok(LayerState { h, c })
}

/// A draw from N(0, 1) by the Box–Muller transform.
fn standard_normal(rng: &mut SeededRng) -> f32 {
    let u1 = 1.0 - rng.unit_f64(); // (0, 1], so the log is finite
    let u2 = rng.unit_f64();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Copies tensors out to the host as [`NamedTensor`]s, each under the name at its position.
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

/// Where the network runs, as a user chooses it. The stages map their `runtime.device`
/// setting onto this, so the network knows nothing of the pipeline's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// CUDA, then Metal, when this build has the feature and the machine has the device, else the CPU.
    Auto,
    Cpu,
    Cuda,
    Metal,
}

/// The Candle device for a backend; an error when this build or machine lacks it.
///
/// `Auto` does not take a compiled-in feature for a usable device: Candle's
/// `cuda_is_available()` only says the feature was built, so a CUDA build on a machine
/// with no driver or no GPU would pick CUDA and fail at the first operation. It opens
/// each accelerator and runs one tiny operation on it; the first that answers is used,
/// and otherwise the CPU, with one logged line saying why. An accelerator asked for by
/// name is opened and checked the same way, and its failure is an error that says what
/// is missing: the feature in this build, the driver, a device, or memory.
pub fn select_device(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Cpu => Ok(Device::Cpu),
        Backend::Cuda => open_named("cuda", Device::new_cuda),
        Backend::Metal => open_named("metal", Device::new_metal),
        Backend::Auto => {
            type Open = fn(usize) -> Result<Device>;
            let candidates: [(&str, bool, Open); 2] = [
                ("CUDA", candle_core::utils::cuda_is_available(), Device::new_cuda),
                ("Metal", candle_core::utils::metal_is_available(), Device::new_metal),
            ];
            for (name, built, open) in candidates {
                if !built {
                    continue;
                }
                match open_checked(open) {
                    Ok(device) => {
                        tracing::info!("runtime.device = \"auto\": using {name} device 0");
                        return Ok(device);
                    }
                    Err(why) => tracing::warn!(
                        "runtime.device = \"auto\": {name} is built in but unusable here ({}); using the CPU",
                        first_line(&why)
                    ),
                }
            }
            Ok(Device::Cpu)
        }
    }
}

/// Device 0 of an accelerator, once it has computed something.
fn open_checked(open: fn(usize) -> Result<Device>) -> Result<Device> {
    open(0).and_then(|device| answers(&device).map(|()| device))
}

/// Device 0 of the accelerator `runtime.device = "<name>"` asks for, or why it cannot be used.
fn open_named(name: &str, open: fn(usize) -> Result<Device>) -> Result<Device> {
    open_checked(open).map_err(|why| candle_core::Error::Msg(explain(name, &why)))
}

fn first_line(error: &candle_core::Error) -> String {
    error.to_string().lines().next().unwrap_or("").to_owned()
}

/// Why `runtime.device = "<name>"` cannot be used, in a user's words, then Candle's.
fn explain(name: &str, why: &candle_core::Error) -> String {
    let detail = first_line(why);
    let cause = match why {
        candle_core::Error::NotCompiledWithCudaSupport | candle_core::Error::NotCompiledWithMetalSupport => {
            return format!(
                "runtime.device = \"{name}\": this build has no {name} support; build with \
                 make CARGO_FLAGS=\"--features train/{name},compose/{name}\" (README, Devices), \
                 or set runtime.device = \"auto\" or \"cpu\""
            );
        }
        _ if detail.contains("CUDA_ERROR_STUB_LIBRARY") || detail.contains("CUDA_ERROR_NO_DEVICE") => {
            "no NVIDIA driver with a device answers here"
        }
        _ if detail.contains("CUDA_ERROR_INSUFFICIENT_DRIVER") => "the NVIDIA driver is older than this build's CUDA",
        _ if detail.contains("OUT_OF_MEMORY") => "the device is out of memory",
        _ => "the device could not be opened",
    };
    format!("runtime.device = \"{name}\": {cause} ({detail}); set runtime.device = \"auto\" to fall back to the CPU")
}

/// Whether `device` computes: a two-element sum, read back.
fn answers(device: &Device) -> Result<()> {
    let sum = Tensor::new(&[1f32, 2.0], device)?.sum_all()?.to_scalar::<f32>()?;
    if sum == 3.0 { Ok(()) } else { candle_core::bail!("1 + 2 gave {sum}") }
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

/// Input and target token ids `[B, T]` for a batch of windows: the targets are the inputs
/// shifted by one token.
pub fn batch(
    dataset: &DatasetArtifact,
    windows: &[LaneWindow],
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let steps = dataset.seq_len;
    let mut inputs = Vec::with_capacity(windows.len() * steps);
    let mut targets = Vec::with_capacity(windows.len() * steps);
    for &LaneWindow { piece, start, .. } in windows {
        let tokens = &dataset.pieces[piece].tokens[start..start + steps + 1];
        inputs.extend_from_slice(&tokens[..steps]);
        targets.extend_from_slice(&tokens[1..]);
    }
    Ok((
        Tensor::from_vec(inputs, (windows.len(), steps), device)?,
        Tensor::from_vec(targets, (windows.len(), steps), device)?,
    ))
}

/// One window of a lane of [`lane_batches`]: tokens `start ..= start + seq_len` of piece
/// `piece` (inputs and the targets one token on), read by lane `lane`. `continues` says it
/// follows the lane's previous window in the same piece, so it starts from the state that
/// window ended in; otherwise it opens a piece and starts from zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneWindow {
    pub lane: usize,
    pub piece: usize,
    pub start: usize,
    pub continues: bool,
}

/// The pieces `pieces` (indices into the data set, in this order) cut into consecutive,
/// non-overlapping windows of `seq_len` and dealt to `lanes` lanes, for reading with the
/// state carried from window to window, as validation reads: batch k holds the k-th window
/// of every lane that has one, so each lane reads its pieces from start to end, one window
/// a batch. (Training does not read in lanes: consecutive batches of the same pieces pull
/// Adam along those pieces; `train.carry_state` stores each window's state instead.)
///
/// Each piece goes whole to one lane, the longest pieces first, each to the lane with the
/// fewest windows so far, so the lanes run out close together and the last batches are
/// barely smaller (dealt in the given order instead, one long piece dealt last left
/// batches of a few lanes for hundreds of steps). A lane then reads its pieces in the
/// given order. Windows start every `seq_len` tokens: a piece's last tokens that do not
/// fill a window (fewer than `seq_len`) are left out, as are pieces shorter than
/// `seq_len + 1` tokens.
pub fn lane_batches(dataset: &DatasetArtifact, pieces: &[usize], lanes: usize) -> Vec<Vec<LaneWindow>> {
    let steps = dataset.seq_len.max(1);
    let windows_of = |piece: usize| dataset.pieces[piece].tokens.len().saturating_sub(1) / steps;
    // (position in `pieces`, piece), longest first; the sort is stable, so equal lengths
    // keep the given order.
    let mut by_length: Vec<(usize, usize)> =
        pieces.iter().copied().enumerate().filter(|&(_, p)| windows_of(p) > 0).collect();
    by_length.sort_by_key(|&(_, piece)| std::cmp::Reverse(windows_of(piece)));
    let mut dealt: Vec<(usize, Vec<(usize, usize)>)> = vec![(0, Vec::new()); lanes.max(1)];
    for (position, piece) in by_length {
        let (load, lane) = dealt.iter_mut().min_by_key(|(load, _)| *load).expect("at least one lane");
        *load += windows_of(piece);
        lane.push((position, piece));
    }
    let queues: Vec<Vec<LaneWindow>> = dealt
        .into_iter()
        .enumerate()
        .map(|(lane, (_, mut assigned))| {
            assigned.sort_unstable();
            let window = |piece, k| LaneWindow { lane, piece, start: k * steps, continues: k > 0 };
            assigned.into_iter().flat_map(|(_, piece)| (0..windows_of(piece)).map(move |k| window(piece, k))).collect()
        })
        .collect();
    let longest = queues.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest).map(|k| queues.iter().filter_map(|queue| queue.get(k)).copied().collect()).collect()
}

/// Windows `(piece, start)` (as [`DatasetArtifact::windows`] gives them) in batches of
/// `batch_size`, in this order, each read from zero state.
pub fn window_batches(windows: &[(usize, usize)], batch_size: usize) -> Vec<Vec<LaneWindow>> {
    windows
        .chunks(batch_size.max(1))
        .map(|chunk| {
            let window = |(lane, &(piece, start))| LaneWindow { lane, piece, start, continues: false };
            chunk.iter().enumerate().map(window).collect()
        })
        .collect()
}

/// The batches in which the model is measured on one side of the split: each piece read
/// start to end in one of `lanes` lanes, the state carried from window to window, as
/// compose runs the model through a whole piece (windows that each start from zero would
/// measure a model that forgets every `seq_len` tokens). The figures do not depend on
/// `lanes`, only the batch sizes do.
pub fn whole_pieces(dataset: &DatasetArtifact, split: Split, lanes: usize) -> Vec<Vec<LaneWindow>> {
    lane_batches(dataset, &dataset.pieces_of(split), lanes)
}

/// Reads `batches` in order without dropout, each lane's state carried into its next
/// window, and hands `each` every batch's logits `[T·B, V]` with its target ids `[T·B]`,
/// both time-major.
pub fn read_in_order(
    model: &LstmModel,
    dataset: &DatasetArtifact,
    batches: &[Vec<LaneWindow>],
    device: &Device,
    mut each: impl FnMut(Tensor, Tensor) -> Result<()>,
) -> Result<()> {
    let hp = &model.hyperparameters;
    let lane_count = batches.iter().flatten().map(|w| w.lane + 1).max().unwrap_or(0);
    let mut lanes = LaneStates::new(lane_count, hp.layers, hp.hidden);
    for batch in batches {
        let (inputs, expected) = self::batch(dataset, batch, device)?;
        let mut state = lanes.start_of(batch);
        let logits = model.carried_logits(&inputs, &mut state)?;
        lanes.keep(batch, &state);
        each(logits, time_major(&expected)?)?;
    }
    Ok(())
}

/// The state every lane of [`lane_batches`] carries from one of its windows to the next.
/// Invariant: `values` holds, per lane, per layer, h then c, `hidden` values each.
#[derive(Clone, Debug, PartialEq)]
pub struct LaneStates {
    layers: usize,
    hidden: usize,
    values: Vec<f32>,
}

impl LaneStates {
    /// Every lane at zero, before its first window.
    pub fn new(lanes: usize, layers: usize, hidden: usize) -> Self {
        LaneStates { layers, hidden, values: vec![0.0; lanes * layers * 2 * hidden] }
    }

    /// The states as stored in a checkpoint, checked against the shape they must have.
    pub fn from_values(lanes: usize, layers: usize, hidden: usize, values: Vec<f32>) -> Option<Self> {
        (values.len() == lanes * layers * 2 * hidden).then_some(LaneStates { layers, hidden, values })
    }

    /// The values, for a checkpoint; [`LaneStates::from_values`] reads them back.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    fn slot(&self, lane: usize, layer: usize) -> usize {
        (lane * self.layers + layer) * 2 * self.hidden
    }

    /// The state a batch starts from, per layer `[B, H]`: a window that continues its lane
    /// starts where the lane's last window ended, one that opens a piece from zero.
    pub fn start_of(&self, batch: &[LaneWindow]) -> Vec<StreamState> {
        let hidden = self.hidden;
        (0..self.layers)
            .map(|layer| {
                let mut state = StreamState::zeros(batch.len(), hidden);
                for (row, window) in batch.iter().enumerate().filter(|(_, w)| w.continues) {
                    let at = self.slot(window.lane, layer);
                    state.h[row * hidden..][..hidden].copy_from_slice(&self.values[at..][..hidden]);
                    state.c[row * hidden..][..hidden].copy_from_slice(&self.values[at + hidden..][..hidden]);
                }
                state
            })
            .collect()
    }

    /// Keeps the state `batch` ended in (per layer `[B, H]`) for each lane's next window.
    pub fn keep(&mut self, batch: &[LaneWindow], ended: &[StreamState]) {
        let lanes: Vec<Option<usize>> = batch.iter().map(|window| Some(window.lane)).collect();
        self.keep_rows(&lanes, ended);
    }

    /// Keeps the state row r of a batch ended in (per layer `[B, H]`) in lane `lanes[r]`,
    /// where it names one; the other rows' states are dropped.
    pub fn keep_rows(&mut self, lanes: &[Option<usize>], ended: &[StreamState]) {
        let hidden = self.hidden;
        for (layer, state) in ended.iter().enumerate() {
            for (row, lane) in lanes.iter().enumerate() {
                let Some(lane) = *lane else { continue };
                let at = self.slot(lane, layer);
                self.values[at..][..hidden].copy_from_slice(&state.h[row * hidden..][..hidden]);
                self.values[at + hidden..][..hidden].copy_from_slice(&state.c[row * hidden..][..hidden]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_uses_only_a_device_that_computes() {
        assert!(answers(&Device::Cpu).is_ok());
        let device = select_device(Backend::Auto).unwrap();
        // Whatever was picked answers; on a CPU-only build that is the CPU.
        assert!(answers(&device).is_ok());
        if !candle_core::utils::cuda_is_available() && !candle_core::utils::metal_is_available() {
            assert!(device.is_cpu());
        }
    }

    #[test]
    fn an_accelerator_this_build_lacks_is_an_error_that_says_how_to_build_it() {
        if !candle_core::utils::cuda_is_available() {
            let why = select_device(Backend::Cuda).unwrap_err().to_string();
            assert!(why.contains("this build has no cuda support") && why.contains("train/cuda"), "{why}");
        }
        if !candle_core::utils::metal_is_available() {
            let why = select_device(Backend::Metal).unwrap_err().to_string();
            assert!(why.contains("this build has no metal support") && why.contains("compose/metal"), "{why}");
        }
    }

    #[test]
    fn a_dropout_mask_drawn_in_pieces_is_the_mask_drawn_one_by_one() {
        let (p, len) = (0.3f32, 3 * (1 << 15) + 17);
        let mut one_by_one = SeededRng::new(9, "dropout");
        one_by_one.next_u64(); // the stream part-way through a block, as after a weight-drop mask
        let mut pieced = one_by_one.ahead(0);
        let keep = 1.0 / (1.0 - p);
        let expected: Vec<f32> = (0..len).map(|_| if one_by_one.unit_f32() < p { 0.0 } else { keep }).collect();
        assert_eq!(inverted_dropout_mask(&mut pieced, p, len), expected);
        assert_eq!(pieced.next_u64(), one_by_one.next_u64(), "the stream goes on from the same place");
        let dropped = expected.iter().filter(|&&value| value == 0.0).count() as f64 / len as f64;
        assert!((dropped - 0.3).abs() < 0.01, "{dropped}");
    }

    fn tiny() -> Hyperparameters {
        Hyperparameters { vocab_size: 7, embedding: 3, hidden: 4, layers: 2, dropout: 0.0, seq_len: 5 }
    }

    fn dataset_of(lengths: &[usize], seq_len: usize) -> DatasetArtifact {
        let piece = |len: usize| artifacts::EncodedPiece {
            source: String::new(),
            split: Split::Train,
            augmentation: None,
            tokens: vec![0; len],
        };
        DatasetArtifact {
            encoding: artifacts::Encoding::Names { chord_window_quarters: 0.0 },
            vocabulary: artifacts::Vocabulary::default(),
            seq_len,
            stride: seq_len,
            pieces: lengths.iter().map(|&len| piece(len)).collect(),
        }
    }

    #[test]
    fn lanes_read_every_piece_start_to_end_and_run_out_together() {
        // Windows of 10: 0, 3, 9, 1 (too short), 5, 2 and 4 windows; tails left out.
        let dataset = dataset_of(&[5, 35, 95, 10, 55, 29, 41], 10);
        let batches = lane_batches(&dataset, &[6, 5, 4, 3, 2, 1, 0], 3);
        let mut by_lane: Vec<Vec<LaneWindow>> = vec![Vec::new(); 3];
        for batch in &batches {
            let mut lanes: Vec<usize> = batch.iter().map(|w| w.lane).collect();
            lanes.dedup();
            assert_eq!(lanes.len(), batch.len(), "one window per lane in a batch: {batch:?}");
            batch.iter().for_each(|w| by_lane[w.lane].push(*w));
        }
        let total: usize = by_lane.iter().map(Vec::len).sum();
        assert_eq!(total, 3 + 9 + 5 + 2 + 4);
        // The 9-window piece alone in one lane, 5 + 2 and 4 + 3 in the others.
        assert_eq!(batches.len(), 9, "the lanes end together: {:?}", by_lane.iter().map(Vec::len).collect::<Vec<_>>());
        for lane in &by_lane {
            for pair in lane.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                if b.piece == a.piece {
                    assert!(b.continues && b.start == a.start + 10, "consecutive windows: {a:?} then {b:?}");
                } else {
                    assert!(!b.continues && b.start == 0, "a new piece starts from zero: {b:?}");
                }
            }
            assert!(!lane[0].continues);
        }
        // Within a lane, the pieces come in the order given (6 before 5 before 4 …).
        for lane in &by_lane {
            let mut pieces: Vec<usize> = lane.iter().map(|w| w.piece).collect();
            pieces.dedup();
            assert!(pieces.windows(2).all(|p| p[0] > p[1]), "{pieces:?}");
        }
    }

    #[test]
    fn lane_states_carry_only_into_a_continuing_window() {
        let mut lanes = LaneStates::new(2, 1, 2);
        let opening = [LaneWindow { lane: 1, piece: 0, start: 0, continues: false }];
        assert_eq!(lanes.start_of(&opening), vec![StreamState::zeros(1, 2)]);
        lanes.keep(&opening, &[StreamState { h: vec![1.0, 2.0], c: vec![3.0, 4.0] }]);
        let next = [
            LaneWindow { lane: 0, piece: 1, start: 0, continues: false },
            LaneWindow { lane: 1, piece: 0, start: 10, continues: true },
        ];
        let state = lanes.start_of(&next);
        assert_eq!(state, vec![StreamState { h: vec![0.0, 0.0, 1.0, 2.0], c: vec![0.0, 0.0, 3.0, 4.0] }]);
        let restored = LaneStates::from_values(2, 1, 2, lanes.values().to_vec()).unwrap();
        assert_eq!(restored, lanes);
        assert!(LaneStates::from_values(3, 1, 2, lanes.values().to_vec()).is_none(), "the shape is checked");
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

    #[test]
    fn the_generator_matches_the_sequence_forward_for_every_stream() {
        let model = LstmModel::new(tiny(), 2, &Device::Cpu).unwrap();
        let ids: Vec<u32> = vec![1, 4, 2, 6, 0, 3, 3, 5, 1, 2, 0, 0, 6, 6, 5];
        let tokens = Tensor::from_vec(ids.clone(), (3, 5), &Device::Cpu).unwrap();
        let full = model.forward(&tokens, None).unwrap().to_vec3::<f32>().unwrap();
        let mut generator = Generator::new(&model, 3).unwrap();
        for t in 0..5 {
            let logits = generator.step(&[ids[t], ids[5 + t], ids[10 + t]]).unwrap().to_vec();
            for (stream, row) in logits.chunks_exact(7).enumerate() {
                for (got, expected) in row.iter().zip(&full[stream][t]) {
                    assert!((got - expected).abs() < 1e-5, "stream {stream} step {t}: {got} vs {expected}");
                }
            }
        }
        assert!(generator.step(&[7, 0, 0]).is_err(), "an id outside the vocabulary is refused");
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
            &Tensor::from_slice(&w_hh, (4 * h, h), &device).unwrap(),
            &state,
        )
        .unwrap();
        let gate = |k: usize| projected[k] + (0..h).map(|j| h0[j] * w_hh[k * h + j]).sum::<f32>();
        let got_h = out.h.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got_c = out.c.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for u in 0..h {
            let c = sigmoid(gate(h + u)) * c0[u] + sigmoid(gate(u)) * gate(2 * h + u).tanh();
            let hh = sigmoid(gate(3 * h + u)) * c.tanh();
            assert!((got_c[u] - c).abs() < 1e-6 && (got_h[u] - hh).abs() < 1e-6);
        }
    }
}
