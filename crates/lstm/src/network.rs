//! One training step of the whole model on the CPU: the forward pass, the loss, and the
//! backward pass, written out layer by layer (as llm.c's `train_gpt2.c` does), over the
//! layer functions of [`crate::layers`]. Activations are feature-major `[features, T·B]`,
//! but for P, which the recurrence reads position-major (`layers::Projections`).
//!
//! ```text
//! forward                                   backward (in reverse)
//! x₀ = embedding rows of the tokens         dE[token] = Σ its positions' dx₀
//! P_l = W_ih_l·x_l (+ b_l, added as read)     dx_l, dW_ih_l, db_l  from dP_l
//!   (position-major, the recurrence reading a step as rows; for l = 0 via
//!   EmbeddedProjection: once per distinct token, neither x₀ nor P₀ built)
//! h_l = recurrence(P_l, W_hh_l, state_l)     dP_l, dW_hh_l        from dh_l
//!   (state_l: h, c carried from the last window, or zero; no gradient flows into it)
//! x_{l+1} = h_l ⊙ dropout mask_l             dh_l = dx_{l+1} ⊙ mask_l
//! z = W_head·x_L + b_head                    dx_L, dW_head, db_head from dz
//! loss = cross-entropy(z, targets)           dz = (softmax(z) − onehot) / N
//! ```

use crate::cells::threads;
use crate::fused::contiguous;
use crate::layers::{self, Dims, StreamState};
use crate::{LstmModel, Result, head_slots, layer_slots};
use candle_core::{Storage, bail};
use products::{Mat, Precision};
use rayon::prelude::*;

/// The mean loss over every position and each weight's gradient, flattened, in the order of
/// [`LstmModel::vars`], and each layer's state after the last step. `tokens` and `targets`
/// are time-major (position t·B + b is step t of sequence b); `masks` holds per layer an
/// optional dropout mask `[T·B, H]` (position-major); `initial` holds per layer the state the
/// sequences start from (zero without it), which receives no gradient.
pub(crate) fn loss_and_gradients(
    model: &LstmModel,
    tokens: &[u32],
    targets: &[u32],
    batch: usize,
    masks: &[Option<Vec<f32>>],
    initial: Option<&[StreamState]>,
) -> Result<(f32, Vec<Vec<f32>>, Vec<StreamState>)> {
    let hp = &model.hyperparameters;
    let (vocab, embedding, hidden, columns) = (hp.vocab_size, hp.embedding, hp.hidden, tokens.len());
    check_ids(targets, vocab, columns)?;
    let precision = model.precision();
    with_weights(model, |weights| {
        let masks = feature_major(masks, hidden, columns);
        let Forward { embedded, outputs, z, last } =
            forward(model, weights, tokens, batch, &masks, initial, precision)?;
        let [head_w, _] = head_slots(weights.len()).map(|i| weights[i]);
        let layer = |l: usize| layer_slots(l).map(|i| weights[i]);
        let dims = Dims { hidden, steps: columns / batch.max(1), batch };
        let top = layer_input(&outputs, hp.layers);
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
                Some(mask) => masked(&dx, mask),
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
        Ok((loss, grads, last))
    })
}

/// The logits `[V, N]` of every position and each layer's state after the last step; the
/// arguments as for [`loss_and_gradients`]. Always in float32, whatever the training
/// precision: these are what the model is measured by, and a measurement must not move
/// with the precision the weights were trained in.
pub(crate) fn logits(
    model: &LstmModel,
    tokens: &[u32],
    batch: usize,
    masks: &[Option<Vec<f32>>],
    initial: Option<&[StreamState]>,
) -> Result<(Vec<f32>, Vec<StreamState>)> {
    with_weights(model, |weights| {
        let masks = feature_major(masks, model.hyperparameters.hidden, tokens.len());
        let Forward { z, last, .. } = forward(model, weights, tokens, batch, &masks, initial, Precision::F32)?;
        Ok((z, last))
    })
}

/// Runs `f` on the model's weights read in place, in the order of [`LstmModel::vars`].
fn with_weights<R>(model: &LstmModel, f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
    let guards: Vec<_> = model.vars().iter().map(|v| v.as_tensor().storage_and_layout()).collect();
    let weights: Vec<&[f32]> = guards
        .iter()
        .map(|(storage, layout)| match &**storage {
            Storage::Cpu(cpu) => contiguous(cpu, layout, "weight"),
            _ => bail!("the CPU training step needs the weights on the CPU"),
        })
        .collect::<Result<_>>()?;
    f(&weights)
}

/// What the forward pass hands to the loss and the backward pass.
struct Forward {
    embedded: layers::EmbeddedProjection,
    outputs: Vec<LayerOutput>,
    /// The logits, `[V, N]`.
    z: Vec<f32>,
    /// Each layer's state after the last step.
    last: Vec<StreamState>,
}

/// The forward pass: embedding, the LSTM layers (each from its `initial` state, or zero),
/// dropout after each as `masks` (feature-major, [`feature_major`]) says, and the output
/// layer, the products in `precision`.
fn forward(
    model: &LstmModel,
    weights: &[&[f32]],
    tokens: &[u32],
    batch: usize,
    masks: &[Option<Vec<f32>>],
    initial: Option<&[StreamState]>,
    precision: Precision,
) -> Result<Forward> {
    let hp = &model.hyperparameters;
    let (vocab, embedding, hidden, columns) = (hp.vocab_size, hp.embedding, hp.hidden, tokens.len());
    check_ids(tokens, vocab, columns)?;
    if columns % batch.max(1) != 0 {
        bail!("{columns} positions are not a whole number of steps of a batch of {batch}");
    }
    let dims = Dims { hidden, steps: columns / batch.max(1), batch };
    if let Some(states) = initial
        && (states.len() != hp.layers
            || states.iter().any(|s| s.h.len() != batch * hidden || s.c.len() != batch * hidden))
    {
        bail!("the carried state does not fit {} layers of {batch} sequences × {hidden} units", hp.layers);
    }
    let embedding_table = weights[0];
    let [head_w, head_b] = head_slots(weights.len()).map(|i| weights[i]);
    let layer = |l: usize| layer_slots(l).map(|i| weights[i]);

    let embedded = layers::EmbeddedProjection::new(embedding_table, tokens, embedding, vocab);
    let mut outputs: Vec<LayerOutput> = Vec::with_capacity(hp.layers);
    let mut last = Vec::with_capacity(hp.layers);
    for (l, mask) in masks.iter().enumerate() {
        let [w_ih, w_hh, bias] = layer(l);
        // P = W_ih·x, position-major (Pᵀ = xᵀ·W_ihᵀ); the recurrence adds b as it reads P.
        let rows = match l {
            0 => embedded.forward(w_ih, (4 * hidden, embedding), precision),
            _ => precision.product(
                Mat::dense(layer_input(&outputs, l), hidden, columns).t(),
                Mat::dense(w_ih, 4 * hidden, hidden).t(),
                threads(),
            ),
        };
        let p = match l {
            0 => embedded.projections(&rows),
            _ => layers::Projections { rows: &rows, slots: None },
        };
        let start = initial.map(|states| &states[l]);
        let (h, saved, state) = layers::recurrence_forward(p, Some(bias), w_hh, dims, precision, start);
        let dropped = mask.as_ref().map(|mask| masked(&h, mask));
        outputs.push(LayerOutput { h, saved, dropped });
        last.push(state);
    }
    let top = layer_input(&outputs, hp.layers);
    let z = layers::affine_forward(head_w, head_b, top, (vocab, hidden, columns), precision);
    Ok(Forward { embedded, outputs, z, last })
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

/// Each layer's dropout mask, given position-major `[N, H]`, turned feature-major `[H, N]`,
/// the activations' layout: each of its two uses (on h forward, on dx backward) is then one
/// multiply per value in memory order, across the pool, where applying it across the two
/// layouts on one thread took about a tenth of a base-model training step.
fn feature_major(masks: &[Option<Vec<f32>>], hidden: usize, columns: usize) -> Vec<Option<Vec<f32>>> {
    masks.iter().map(|mask| mask.as_ref().map(|mask| products::transpose(mask, columns, hidden))).collect()
}

/// `x ⊙ mask`, both of one layout, across the pool.
fn masked(x: &[f32], mask: &[f32]) -> Vec<f32> {
    const PIECE: usize = 1 << 14;
    assert_eq!(x.len(), mask.len(), "a mask for every value");
    let mut out = Vec::with_capacity(x.len());
    out.spare_capacity_mut().par_chunks_mut(PIECE).zip(x.par_chunks(PIECE).zip(mask.par_chunks(PIECE))).for_each(
        |(out, (x, mask))| {
            for ((out, x), scale) in out.iter_mut().zip(x).zip(mask) {
                out.write(x * scale);
            }
        },
    );
    // SAFETY: the pieces cover all `x.len()` values, and each wrote all of its own.
    unsafe { out.set_len(x.len()) };
    out
}

#[cfg(test)]
mod tests {
    use super::{feature_major, masked};

    #[test]
    fn a_mask_scales_each_feature_of_each_position_by_its_own_value() {
        // 20 features (one block of 16 and a part block) at 1,000 positions: more values
        // than one piece of `masked`.
        let (hidden, columns) = (20, 1000);
        let x: Vec<f32> = (0..hidden * columns).map(|i| i as f32 + 1.0).collect();
        let mask: Vec<f32> = (0..columns * hidden).map(|i| (i % 3) as f32 * 0.5).collect();
        let by_feature = feature_major(&[Some(mask.clone()), None], hidden, columns);
        assert!(by_feature[1].is_none(), "no mask where the layer has none");
        let got = masked(&x, by_feature[0].as_ref().unwrap());
        for u in 0..hidden {
            for n in 0..columns {
                assert_eq!(
                    got[u * columns + n],
                    x[u * columns + n] * mask[n * hidden + u],
                    "feature {u}, position {n}"
                );
            }
        }
    }
}
