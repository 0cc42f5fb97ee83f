//! Token-by-token generation for one or many streams at once, carrying each layer's state.
//!
//! Generation is matrix-vector work: every new token streams all the weights through the
//! processor once. On the CPU the weights are laid out for that once, when the generator is
//! built: the first layer's input projection becomes a lookup table (embedding row ·
//! W_ihᵀ + bias for every token, so the first layer costs one product, not two), every
//! other weight matrix in [`StepWeights`] panels that each thread streams its band of, and
//! the state of all S streams is feature-major `[H, S]`, the layout the training kernels
//! use, so S streams cost barely more than one as long as the weights dominate.
//! On other devices the generator steps the model's Candle ops.

use crate::cells::{cell_forward_banded, threads};
use crate::{LayerState, LstmModel, Result};
use candle_core::{Device, Tensor};
use products::{Mat, StepWeights};

/// Runs `work` on one of the threads the CPU kernels use, and returns its result.
///
/// A generation loop should run this way: each token takes a few small parallel products,
/// and one started from outside the thread pool waits 20–50 µs for a pool thread to wake
/// (measured here), a tenth of a token's time; from inside the pool it starts in about a
/// microsecond, and when the other threads are slow to join, the caller does their share.
pub fn on_kernel_threads<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}

/// Feeds one token per stream and returns the next-token logits of every stream.
/// Run it inside [`on_kernel_threads`] for speed.
pub struct Generator<'m> {
    streams: usize,
    engine: Engine<'m>,
    /// `[S, V]`, stream-major: row s is stream s's logits.
    logits: Vec<f32>,
}

enum Engine<'m> {
    Cpu(Box<CpuEngine>),
    Candle { model: &'m LstmModel, state: Vec<LayerState>, device: Device },
}

/// The CPU engine's weights and buffers. All matrices row-major, weights `[outputs, inputs]`.
struct CpuEngine {
    hidden: usize,
    vocab: usize,
    /// `[V, 4H]`: row v is embedding(v) · W_ih₀ᵀ + b₀.
    first_input: Vec<f32>,
    /// Per layer, the weights that multiply its `inputs`: W_hh₀ (`[4H, H]`) for layer 0,
    /// `[W_ih | W_hh]` (`[4H, 2H]`) above it, so each layer is one product per step.
    weights: Vec<StepWeights>,
    /// Per layer, `[4H]`: b above layer 0 (layer 0's bias is in `first_input`).
    biases: Vec<Vec<f32>>,
    head_weight: StepWeights,
    head_bias: Vec<f32>,
    /// Per layer, what its weights multiply, `[K, S]`: h_{t−1} for layer 0, and
    /// `[x; h_{t−1}]` (x = the layer below's h_t) above it. h_t is written in place.
    inputs: Vec<Vec<f32>>,
    /// Per layer, c, `[H, S]`.
    cells: Vec<Vec<f32>>,
    /// `[4H, S]` and `[V, S]` scratch.
    gates: Vec<f32>,
    logits_t: Vec<f32>,
}

impl<'m> Generator<'m> {
    /// A generator for `streams` parallel sequences, all starting from the zero state.
    pub fn new(model: &'m LstmModel, streams: usize) -> Result<Self> {
        let device = model.vars()[0].device().clone();
        let vocab = model.hyperparameters.vocab_size;
        let engine = if device.is_cpu() {
            Engine::Cpu(Box::new(CpuEngine::new(model, streams)?))
        } else {
            Engine::Candle { model, state: model.zero_state(streams, &device)?, device }
        };
        Ok(Generator { streams, engine, logits: vec![0.0; streams * vocab] })
    }

    /// Feeds `tokens[s]` to stream s and returns the logits `[S, V]` (stream-major) for each
    /// stream's next token. Token ids must be below the vocabulary size.
    pub fn step(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        if tokens.len() != self.streams {
            candle_core::bail!("{} tokens for {} streams", tokens.len(), self.streams);
        }
        match &mut self.engine {
            Engine::Cpu(engine) => engine.step(tokens, &mut self.logits)?,
            Engine::Candle { model, state, device } => {
                let logits = model.step(&Tensor::new(tokens, device)?, state)?;
                self.logits = logits.flatten_all()?.to_vec1()?;
            }
        }
        Ok(&self.logits)
    }
}

impl CpuEngine {
    fn new(model: &LstmModel, streams: usize) -> Result<Self> {
        let hp = &model.hyperparameters;
        let (hidden, vocab) = (hp.hidden, hp.vocab_size);
        let data = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (mut weights, mut biases) = (Vec::new(), Vec::new());
        for layer in 0..hp.layers {
            let (w_ih, w_hh, bias) = model.layer(layer);
            let joined = if layer == 0 { w_hh.clone() } else { Tensor::cat(&[w_ih, w_hh], 1)? };
            let (rows, inputs) = joined.dims2()?;
            weights.push(StepWeights::new(Mat::dense(&data(&joined)?, rows, inputs), model.precision(), streams));
            biases.push(data(bias)?);
        }
        // The first layer's input projection for every token: [V, E] · W_ih₀ᵀ [E, 4H] + b₀.
        let (w_ih0, _, bias0) = model.layer(0);
        let first_input = data(&model.embedding().matmul(&w_ih0.t()?)?.broadcast_add(bias0)?)?;
        let (head_w, head_b) = model.head();
        Ok(CpuEngine {
            hidden,
            vocab,
            first_input,
            weights,
            biases,
            head_weight: StepWeights::new(Mat::dense(&data(head_w)?, vocab, hidden), model.precision(), streams),
            head_bias: data(head_b)?,
            inputs: (0..hp.layers).map(|l| vec![0.0; if l == 0 { 1 } else { 2 } * hidden * streams]).collect(),
            cells: vec![vec![0.0; hidden * streams]; hp.layers],
            gates: vec![0.0; 4 * hidden * streams],
            logits_t: vec![0.0; vocab * streams],
        })
    }

    fn step(&mut self, tokens: &[u32], logits: &mut [f32]) -> Result<()> {
        let (h, s, threads) = (self.hidden, tokens.len(), threads());
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.vocab) {
            candle_core::bail!("token id {bad} is outside the vocabulary of {}", self.vocab);
        }
        for layer in 0..self.weights.len() {
            // gates = (layer 0: the token's table row; above: b) + weights · inputs
            if layer == 0 {
                // A stream at a time, so each table row is read in order.
                for (stream, &token) in tokens.iter().enumerate() {
                    let row = &self.first_input[token as usize * 4 * h..][..4 * h];
                    for (value, &projected) in self.gates[stream..].iter_mut().step_by(s).zip(row) {
                        *value = projected;
                    }
                }
            } else {
                fill_rows(&mut self.gates, &self.biases[layer]);
                // This layer's input is the h_t the layer below just wrote.
                let (below, this) = self.inputs.split_at_mut(layer);
                this[0][..h * s].copy_from_slice(&below[layer - 1][below[layer - 1].len() - h * s..]);
            }
            let inputs = &mut self.inputs[layer];
            let k = inputs.len() / s;
            // h_{t−1} is read by the product before the gate math overwrites it with h_t.
            self.weights[layer].multiply_add_banded(&mut self.gates, inputs, s, threads);
            let h_state = &mut inputs[(k - h) * s..];
            cell_forward_banded(&mut self.gates, &mut self.cells[layer], h_state, threads);
        }
        // logitsᵀ [V, S] = W_head · h_top + b, then transposed to stream-major.
        fill_rows(&mut self.logits_t, &self.head_bias);
        let top = self.inputs.last().expect("at least one layer");
        let top = &top[top.len() - h * s..];
        self.head_weight.multiply_add_banded(&mut self.logits_t, top, s, threads);
        for (v, row) in self.logits_t.chunks_exact(s).enumerate() {
            for (stream, &value) in row.iter().enumerate() {
                logits[stream * self.vocab + v] = value;
            }
        }
        Ok(())
    }
}

/// Sets every value of row r of the row-major `matrix` (one row per value) to `values[r]`.
fn fill_rows(matrix: &mut [f32], values: &[f32]) {
    let columns = matrix.len() / values.len().max(1);
    for (row, &value) in matrix.chunks_exact_mut(columns.max(1)).zip(values) {
        row.fill(value);
    }
}
