//! One training step of the whole model on the CPU: the forward pass, the loss, and the
//! backward pass, written out layer by layer (as llm.c's `train_gpt2.c` does), over the
//! layer functions of [`crate::layers`]. Activations are feature-major `[features, T·B]`.
//!
//! ```text
//! forward                                   backward (in reverse)
//! x₀ = embedding rows of the tokens         dE[token] += dx₀ (per position)
//! P_l = W_ih_l·x_l (+ b_l, added as read)     dx_l, dW_ih_l, db_l  from dP_l
//! h_l = recurrence(P_l, W_hh_l)              dP_l, dW_hh_l        from dh_l
//! x_{l+1} = h_l ⊙ dropout mask_l             dh_l = dx_{l+1} ⊙ mask_l
//! z = W_head·x_L + b_head                    dx_L, dW_head, db_head from dz
//! loss = cross-entropy(z, targets)           dz = (softmax(z) − onehot) / N
//! ```

use crate::fused::{check_targets, contiguous};
use crate::kernels::{self, Mat, threads};
use crate::layers::{self, Dims};
use crate::{LstmModel, Result};
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
    check_targets(tokens, vocab, columns)?;
    check_targets(targets, vocab, columns)?;
    let dims = Dims { hidden, steps: columns / batch.max(1), batch };
    // The weights, read in place.
    let guards: Vec<_> = model.vars().iter().map(|v| v.as_tensor().storage_and_layout()).collect();
    let weights: Vec<&[f32]> = guards
        .iter()
        .map(|(storage, layout)| match &**storage {
            Storage::Cpu(cpu) => contiguous(cpu, layout, "weight"),
            _ => bail!("the CPU training step needs the weights on the CPU"),
        })
        .collect::<Result<_>>()?;
    let (embedding_table, head_w, head_b) = (weights[0], weights[weights.len() - 2], weights[weights.len() - 1]);
    let layer = |l: usize| (weights[1 + 3 * l], weights[2 + 3 * l], weights[3 + 3 * l]);
    let input_size = |l: usize| if l == 0 { embedding } else { hidden };

    // Forward.
    let mut x0 = vec![0.0f32; embedding * columns];
    for (n, &id) in tokens.iter().enumerate() {
        for (e, &value) in embedding_table[id as usize * embedding..][..embedding].iter().enumerate() {
            x0[e * columns + n] = value;
        }
    }
    // Per layer: its output h_l, the recurrence's saved state, and x_{l+1} when dropout
    // made it differ from h_l.
    let mut outputs: Vec<(Vec<f32>, layers::RecurrenceSaved, Option<Vec<f32>>)> = Vec::with_capacity(hp.layers);
    for (l, mask) in masks.iter().enumerate() {
        let (w_ih, w_hh, bias) = layer(l);
        let x = outputs.last().map_or(&x0, |(h, _, dropped)| dropped.as_ref().unwrap_or(h));
        // P = W_ih·x; the recurrence adds b as it reads P.
        let p = kernels::product(
            Mat::dense(w_ih, 4 * hidden, input_size(l)),
            Mat::dense(x, input_size(l), columns),
            threads(),
        );
        let (h, saved) = layers::recurrence_forward(&p, Some(bias), w_hh, dims);
        let dropped = mask.as_ref().map(|mask| apply_mask(&h, mask, hidden, columns));
        outputs.push((h, saved, dropped));
    }
    let layer_input = |l: usize| -> &[f32] {
        if l == 0 {
            &x0
        } else {
            let (h, _, dropped) = &outputs[l - 1];
            dropped.as_ref().unwrap_or(h)
        }
    };
    let top = layer_input(hp.layers);
    let z = layers::affine_forward(head_w, head_b, top, (vocab, hidden, columns));
    let (loss, probabilities) = layers::cross_entropy_forward(&z, targets, vocab);
    drop(z);

    // Backward.
    let mut grads: Vec<Vec<f32>> = vec![Vec::new(); weights.len()];
    let dz = layers::cross_entropy_backward(probabilities, targets, 1.0);
    let (mut dx, dw_head, db_head) = layers::affine_backward(head_w, top, &dz, (vocab, hidden, columns));
    drop(dz);
    (grads[weights.len() - 2], grads[weights.len() - 1]) = (dw_head, db_head);
    for l in (0..hp.layers).rev() {
        let (w_ih, w_hh, _) = layer(l);
        let (h, saved, _) = &outputs[l];
        let dh = match &masks[l] {
            Some(mask) => apply_mask(&dx, mask, hidden, columns),
            None => dx,
        };
        let (d_p, dw_hh) = layers::recurrence_backward(saved, w_hh, h, &dh, dims);
        let (d_input, dw_ih, db) =
            layers::affine_backward(w_ih, layer_input(l), &d_p, (4 * hidden, input_size(l), columns));
        (grads[1 + 3 * l], grads[2 + 3 * l], grads[3 + 3 * l]) = (dw_ih, dw_hh, db);
        dx = d_input;
    }
    let mut d_embedding = vec![0.0f32; vocab * embedding];
    for (n, &id) in tokens.iter().enumerate() {
        for (e, d) in d_embedding[id as usize * embedding..][..embedding].iter_mut().enumerate() {
            *d += dx[e * columns + n];
        }
    }
    grads[0] = d_embedding;
    Ok((loss, grads))
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
