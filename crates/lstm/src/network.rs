//! One training step of the whole model on the CPU: the forward pass, the loss, and the
//! backward pass, written out layer by layer (as llm.c's `train_gpt2.c` does), over the
//! layer functions of [`crate::layers`]. Activations are feature-major `[features, T·B]`.
//!
//! ```text
//! forward                                   backward (in reverse)
//! x₀ = embedding rows of the tokens         dE[token] = Σ its positions' dx₀
//! P_l = W_ih_l·x_l (+ b_l, added as read)     dx_l, dW_ih_l, db_l  from dP_l
//!   (for l = 0 via EmbeddedProjection: once per distinct token, x₀ never built)
//! h_l = recurrence(P_l, W_hh_l)              dP_l, dW_hh_l        from dh_l
//! x_{l+1} = h_l ⊙ dropout mask_l             dh_l = dx_{l+1} ⊙ mask_l
//! z = W_head·x_L + b_head                    dx_L, dW_head, db_head from dz
//! loss = cross-entropy(z, targets)           dz = (softmax(z) − onehot) / N
//! ```

use crate::fused::contiguous;
use crate::kernels::{Mat, threads};
use crate::layers::{self, Dims};
use crate::{LstmModel, Result, head_slots, layer_slots};
use candle_core::{Storage, bail};

/// The mean loss over every position and each weight's gradient, flattened, in the order of
/// [`LstmModel::vars`]. `tokens` and `targets` are time-major (position t·B + b is step t of
/// sequence b); `masks` holds per layer an optional dropout mask `[T·B, H]` (position-major).
pub(crate) fn loss_and_gradients(
    model: &LstmModel,
    tokens: &[u32],
    targets: &[u32],
    batch: usize,
    masks: &[Option<Vec<f32>>],
) -> Result<(f32, Vec<Vec<f32>>)> {
    let hp = &model.hyperparameters;
    let (vocab, embedding, hidden, columns) = (hp.vocab_size, hp.embedding, hp.hidden, tokens.len());
    check_ids(tokens, vocab, columns)?;
    check_ids(targets, vocab, columns)?;
    let dims = Dims { hidden, steps: columns / batch.max(1), batch };
    let precision = model.precision();
    // The weights, read in place.
    let guards: Vec<_> = model.vars().iter().map(|v| v.as_tensor().storage_and_layout()).collect();
    let weights: Vec<&[f32]> = guards
        .iter()
        .map(|(storage, layout)| match &**storage {
            Storage::Cpu(cpu) => contiguous(cpu, layout, "weight"),
            _ => bail!("the CPU training step needs the weights on the CPU"),
        })
        .collect::<Result<_>>()?;
    let embedding_table = weights[0];
    let [head_w, head_b] = head_slots(weights.len()).map(|i| weights[i]);
    let layer = |l: usize| layer_slots(l).map(|i| weights[i]);

    // Forward.
    let embedded = layers::EmbeddedProjection::new(embedding_table, tokens, embedding, vocab);
    let mut outputs: Vec<LayerOutput> = Vec::with_capacity(hp.layers);
    for (l, mask) in masks.iter().enumerate() {
        let [w_ih, w_hh, bias] = layer(l);
        // P = W_ih·x; the recurrence adds b as it reads P.
        let p = match l {
            0 => embedded.forward(w_ih, (4 * hidden, embedding), precision),
            _ => precision.product(
                Mat::dense(w_ih, 4 * hidden, hidden),
                Mat::dense(layer_input(&outputs, l), hidden, columns),
                threads(),
            ),
        };
        let (h, saved) = layers::recurrence_forward(&p, Some(bias), w_hh, dims, precision);
        let dropped = mask.as_ref().map(|mask| apply_mask(&h, mask, hidden, columns));
        outputs.push(LayerOutput { h, saved, dropped });
    }
    let top = layer_input(&outputs, hp.layers);
    let z = layers::affine_forward(head_w, head_b, top, (vocab, hidden, columns), precision);
    let (loss, probabilities) = layers::cross_entropy_forward(&z, targets, vocab);
    drop(z);

    // Backward.
    let mut grads: Vec<Vec<f32>> = vec![Vec::new(); weights.len()];
    let dz = layers::cross_entropy_backward(probabilities, targets, 1.0);
    let (mut dx, dw_head, db_head) = layers::affine_backward(head_w, top, &dz, (vocab, hidden, columns), precision);
    drop(dz);
    let [w_slot, b_slot] = head_slots(weights.len());
    (grads[w_slot], grads[b_slot]) = (dw_head, db_head);
    for l in (0..hp.layers).rev() {
        let [w_ih, w_hh, _] = layer(l);
        let LayerOutput { h, saved, .. } = &outputs[l];
        let dh = match &masks[l] {
            Some(mask) => apply_mask(&dx, mask, hidden, columns),
            None => dx,
        };
        let (d_p, dw_hh) = layers::recurrence_backward(saved, w_hh, h, &dh, dims, precision);
        let [ih_slot, hh_slot, bias_slot] = layer_slots(l);
        grads[hh_slot] = dw_hh;
        if l == 0 {
            (grads[0], grads[ih_slot], grads[bias_slot]) =
                embedded.backward(w_ih, &d_p, (4 * hidden, embedding, vocab), precision);
            break;
        }
        let (d_input, dw_ih, db) =
            layers::affine_backward(w_ih, layer_input(&outputs, l), &d_p, (4 * hidden, hidden, columns), precision);
        (grads[ih_slot], grads[bias_slot]) = (dw_ih, db);
        dx = d_input;
    }
    Ok((loss, grads))
}

/// What one LSTM layer's forward pass leaves for the backward pass.
struct LayerOutput {
    /// h_l, `[H, N]`.
    h: Vec<f32>,
    saved: layers::RecurrenceSaved,
    /// x_{l+1} = h_l ⊙ mask, when dropout makes it differ from h_l.
    dropped: Option<Vec<f32>>,
}

/// The input of layer `l` ≥ 1: the (dropped-out) output of the layer below; `l` = the layer
/// count gives the output layer's input. (Layer 0's input is the embedding, which
/// [`layers::EmbeddedProjection`] reads in place.)
fn layer_input(outputs: &[LayerOutput], l: usize) -> &[f32] {
    let below = &outputs[l - 1];
    below.dropped.as_deref().unwrap_or(&below.h)
}

/// Checks token ids against the vocabulary; the layers index with them unchecked.
fn check_ids(ids: &[u32], vocab: usize, columns: usize) -> Result<()> {
    if ids.len() != columns || ids.iter().any(|&t| t as usize >= vocab) {
        bail!("{} token ids for {columns} positions, or one outside the vocabulary of {vocab}", ids.len());
    }
    Ok(())
}

/// `x ⊙ mask` for feature-major `x` `[H, N]` and a position-major mask `[N, H]`.
fn apply_mask(x: &[f32], mask: &[f32], hidden: usize, columns: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    for (u, row) in out.chunks_exact_mut(columns).enumerate() {
        for (n, value) in row.iter_mut().enumerate() {
            *value *= mask[n * hidden + u];
        }
    }
    out
}
