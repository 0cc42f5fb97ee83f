//! The fused CPU LSTM: two Candle custom ops whose backward passes are written by hand.
//!
//! Activations here are feature-major, `[features, N]` with N = T·B columns ordered
//! time-major (column t·B + b is time step t of sequence b), because then everything the
//! LSTM does is a handful of large matrix products plus one small one per time step:
//!
//! ```text
//! Affine      y = W·x + b         forward: one product for all T·B columns
//!                                  backward: dx = Wᵀ·dy, dW = dy·xᵀ, db = Σ_columns dy
//! Recurrence  gates_t = P_t + W_hh·h_{t−1};  c_t, h_t from the gates (kernels::cell_forward)
//!                                  backward through time, t = T−1 … 0:
//!                                    dh_t    = dy_t + W_hhᵀ·dgates_{t+1}
//!                                    dgates_t, dc_{t−1} from dh_t, dc_t (kernels::cell_backward)
//!                                  then dW_hh = Σ_t dgates_t·h_{t−1}ᵀ as one product, dP = dgates
//! ```
//!
//! An LSTM layer is `Recurrence(Affine(x, W_ih, b), W_hh)`; the output layer is one more
//! `Affine`. Candle's autograd chains the ops' backward passes; inside each, nothing is
//! allocated per time step and the per-step products read their operands in place.
//! The recurrence keeps its gate activations and cell states from the forward pass for its
//! backward pass (inside the op, freed when the graph is), so nothing is recomputed.

use crate::kernels::{Mat, cell_backward, cell_forward, exp_shifted, matmul, threads};
use rayon::prelude::*;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor, bail};
use std::sync::Mutex;

/// The f32 contents of a contiguous CPU storage.
fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { bail!("fused LSTM: {what} must be f32") };
    let Some((start, end)) = layout.contiguous_offsets() else { bail!("fused LSTM: {what} must be contiguous") };
    Ok(&data[start..end])
}

/// Runs `f` on the f32 contents of a CPU tensor, copying only if it is not contiguous.
fn with_data<R>(tensor: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let tensor = tensor.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(contiguous(cpu, layout, what)?),
        _ => bail!("fused LSTM: {what} is not on the CPU"),
    }
}

/// `y[M, N] = W[M, K] · x[K, N] + b[M]` (b broadcast along each row). Apply as
/// `x.apply_op3(w, b, Affine)`.
pub struct Affine;

impl CustomOp3 for Affine {
    fn name(&self) -> &'static str {
        "fused-affine"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let ((k, n), (m, k_w)) = (x_layout.shape().dims2()?, w_layout.shape().dims2()?);
        if k != k_w || b_layout.shape().elem_count() != m {
            bail!("fused affine: x {:?}, W {:?}, b {:?}", x_layout.dims(), w_layout.dims(), b_layout.dims());
        }
        let (x, w, b) = (contiguous(x, x_layout, "x")?, contiguous(w, w_layout, "W")?, contiguous(b, b_layout, "b")?);
        let mut y = vec![0.0f32; m * n];
        for (row, bias) in y.chunks_exact_mut(n.max(1)).zip(b) {
            row.fill(*bias);
        }
        matmul(&mut y, 0, n, Mat::dense(w, m, k), Mat::dense(x, k, n), true, threads());
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let ((k, n), (m, _)) = (x.dims2()?, w.dims2()?);
        let mut dx = vec![0.0f32; k * n];
        let mut dw = vec![0.0f32; m * k];
        with_data(x, "x", |x| {
            with_data(w, "W", |w| {
                with_data(dy, "dy", |dy| {
                    let dy_mat = Mat::dense(dy, m, n);
                    matmul(&mut dx, 0, n, Mat::dense(w, m, k).t(), dy_mat, false, threads());
                    matmul(&mut dw, 0, k, dy_mat, Mat::dense(x, k, n).t(), false, threads());
                    Ok(())
                })
            })
        })?;
        let db: Vec<f32> = with_data(dy, "dy", |dy| Ok(dy.chunks_exact(n.max(1)).map(|row| row.iter().sum()).collect()))?;
        Ok((
            Some(Tensor::from_vec(dx, (k, n), &Device::Cpu)?),
            Some(Tensor::from_vec(dw, (m, k), &Device::Cpu)?),
            Some(Tensor::from_vec(db, m, &Device::Cpu)?),
        ))
    }
}

/// The LSTM recurrence over a whole sequence: input projections `P[4H, T·B]` (x·W_ih + b
/// for every step, gate order i f g o) and `W_hh[4H, H]` in, hidden states `h[H, T·B]` out,
/// starting from zero state. Apply as `p.apply_op2(w_hh, Recurrence::new(batch))`.
///
/// The sequences are independent, so the batch is split into one group per thread and each
/// thread runs its group through all T steps alone: no thread waits for another between
/// steps. Inside a group every step's numbers are one dense block (`[4H, b]` gates, `[H, b]`
/// states), so the per-step products read compact memory instead of columns strewn across
/// the `[·, T·B]` matrices.
pub struct Recurrence {
    batch: usize,
    /// Per group, from the forward pass: gate activations (T blocks of `[4H, b]`) and cell
    /// states (T blocks of `[H, b]`).
    saved: Mutex<Vec<Group>>,
}

/// One thread's share of the batch: sequences `first .. first + size`, and its buffers.
struct Group {
    first: usize,
    size: usize,
    gates: Vec<f32>,
    cells: Vec<f32>,
}

/// Sizes of one recurrence: H, T, B and N = T·B.
#[derive(Clone, Copy)]
struct Dims {
    hidden: usize,
    steps: usize,
    batch: usize,
    columns: usize,
}

impl Dims {
    /// Copies the `rows × group.size` block of time step `step` between the `[rows, N]`
    /// matrix `wide` and the group's step-major buffer `compact` (T blocks of `[rows, size]`).
    fn gather(&self, rows: usize, group: (usize, usize), step: usize, wide: &[f32], compact: &mut [f32]) {
        let (first, size) = group;
        let block = &mut compact[step * rows * size..][..rows * size];
        for (r, row) in block.chunks_exact_mut(size).enumerate() {
            row.copy_from_slice(&wide[r * self.columns + step * self.batch + first..][..size]);
        }
    }

    /// The inverse of [`Dims::gather`].
    fn scatter(&self, rows: usize, group: (usize, usize), step: usize, compact: &[f32], wide: &mut [f32]) {
        let (first, size) = group;
        let block = &compact[step * rows * size..][..rows * size];
        for (r, row) in block.chunks_exact(size).enumerate() {
            wide[r * self.columns + step * self.batch + first..][..size].copy_from_slice(row);
        }
    }
}

impl Recurrence {
    /// `batch` is B, the number of sequences; the column count must be a multiple of it.
    pub fn new(batch: usize) -> Self {
        Recurrence { batch, saved: Mutex::new(Vec::new()) }
    }

    fn dims(&self, p: &[usize], w_hh: &[usize]) -> Result<Dims> {
        let (hidden, columns) = match (p, w_hh) {
            (&[four_h, columns], &[four_h_w, hidden]) if four_h == 4 * hidden && four_h_w == four_h => (hidden, columns),
            _ => bail!("fused recurrence: P {p:?} and W_hh {w_hh:?} do not fit"),
        };
        if self.batch == 0 || columns % self.batch != 0 {
            bail!("fused recurrence: {columns} columns are not a multiple of the batch {}", self.batch);
        }
        Ok(Dims { hidden, steps: columns / self.batch, batch: self.batch, columns })
    }

    /// The batch split into one group of consecutive sequences per thread.
    fn groups(&self) -> Vec<(usize, usize)> {
        let count = threads().clamp(1, self.batch);
        (0..count).map(|g| (g * self.batch / count, (g + 1) * self.batch / count - g * self.batch / count)).collect()
    }
}

impl CustomOp2 for Recurrence {
    fn name(&self) -> &'static str {
        "fused-lstm-recurrence"
    }

    fn cpu_fwd(&self, p: &CpuStorage, p_layout: &Layout, w: &CpuStorage, w_layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = self.dims(p_layout.dims(), w_layout.dims())?;
        let Dims { hidden, steps, columns, .. } = dims;
        let (p, w_hh) = (contiguous(p, p_layout, "P")?, contiguous(w, w_layout, "W_hh")?);
        let w_hh = Mat::dense(w_hh, 4 * hidden, hidden);
        let groups: Vec<Group> = self
            .groups()
            .into_par_iter()
            .map(|(first, size)| {
                let (gate_block, state_block) = (4 * hidden * size, hidden * size);
                let mut gates = vec![0.0f32; steps * gate_block];
                let mut cells = vec![0.0f32; steps * state_block];
                let mut h = vec![0.0f32; steps * state_block];
                for step in 0..steps {
                    dims.gather(4 * hidden, (first, size), step, p, &mut gates);
                    let gates_t = &mut gates[step * gate_block..][..gate_block];
                    let (h_before, h_now) = h.split_at_mut(step * state_block);
                    let (c_before, c_now) = cells.split_at_mut(step * state_block);
                    let (h_t, c_t) = (&mut h_now[..state_block], &mut c_now[..state_block]);
                    if step > 0 {
                        // gates_t += W_hh · h_{t−1}; the cell starts from c_{t−1}.
                        let h_previous = Mat::dense(&h_before[(step - 1) * state_block..], hidden, size);
                        matmul(gates_t, 0, size, w_hh, h_previous, true, 1);
                        c_t.copy_from_slice(&c_before[(step - 1) * state_block..]);
                    }
                    cell_forward(size, gates_t, c_t, h_t);
                }
                // The group's hidden states travel back in `cells`' place until scattered below.
                Group { first, size, gates, cells: [cells, h].concat() }
            })
            .collect();
        let mut h = vec![0.0f32; hidden * columns];
        let mut saved = Vec::with_capacity(groups.len());
        for mut group in groups {
            let h_group = group.cells.split_off(steps * hidden * group.size);
            for step in 0..steps {
                dims.scatter(hidden, (group.first, group.size), step, &h_group, &mut h);
            }
            saved.push(group);
        }
        *self.saved.lock().expect("no panics while the lock is held") = saved;
        Ok((CpuStorage::F32(h), Shape::from((hidden, columns))))
    }

    fn bwd(&self, p: &Tensor, w_hh: &Tensor, h: &Tensor, dh_out: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dims = self.dims(p.dims(), w_hh.dims())?;
        let Dims { hidden, steps, batch, columns } = dims;
        let groups = std::mem::take(&mut *self.saved.lock().expect("no panics while the lock is held"));
        if groups.is_empty() {
            bail!("fused recurrence: backward ran twice or before forward");
        }
        // W_hhᵀ laid out densely once, so every per-step product reads it row by row.
        let w_hh_t: Vec<f32> = with_data(w_hh, "W_hh", |w| {
            Ok((0..hidden).flat_map(|u| (0..4 * hidden).map(move |j| w[j * hidden + u])).collect())
        })?;
        let w_hh_t = Mat::dense(&w_hh_t, hidden, 4 * hidden);
        let d_groups: Vec<Vec<f32>> = with_data(dh_out, "dh", |dh_out| {
            Ok(groups
                .par_iter()
                .map(|group| {
                    let (gate_block, state_block) = (4 * hidden * group.size, hidden * group.size);
                    let mut d_gates = vec![0.0f32; steps * gate_block];
                    let mut dh = vec![0.0f32; steps * state_block];
                    let mut dc = vec![0.0f32; state_block];
                    for step in (0..steps).rev() {
                        // dh_t = (gradient from above at step t) + W_hhᵀ · dgates_{t+1}.
                        dims.gather(hidden, (group.first, group.size), step, dh_out, &mut dh);
                        let dh_t = &mut dh[step * state_block..][..state_block];
                        let (d_now, d_later) = d_gates.split_at_mut((step + 1) * gate_block);
                        if step + 1 < steps {
                            let d_next = Mat::dense(&d_later[..gate_block], 4 * hidden, group.size);
                            matmul(dh_t, 0, group.size, w_hh_t, d_next, true, 1);
                        }
                        let cells_t = &group.cells[step * state_block..][..state_block];
                        let previous = (step > 0).then(|| &group.cells[(step - 1) * state_block..][..state_block]);
                        let gates_t = &group.gates[step * gate_block..][..gate_block];
                        cell_backward(gates_t, cells_t, previous, dh_t, &mut dc, &mut d_now[step * gate_block..]);
                    }
                    d_gates
                })
                .collect())
        })?;
        let mut d_p = vec![0.0f32; 4 * hidden * columns];
        for (group, d_gates) in groups.iter().zip(&d_groups) {
            for step in 0..steps {
                dims.scatter(4 * hidden, (group.first, group.size), step, d_gates, &mut d_p);
            }
        }
        // dW_hh = Σ_{t≥1} dgates_t · h_{t−1}ᵀ: columns B.. of dP against columns ..N−B of h.
        let mut dw_hh = vec![0.0f32; 4 * hidden * hidden];
        with_data(h, "h", |h| {
            let d_later = Mat::block(&d_p, batch, 4 * hidden, columns - batch, columns);
            let h_earlier = Mat::block(h, 0, hidden, columns - batch, columns).t();
            matmul(&mut dw_hh, 0, hidden, d_later, h_earlier, false, threads());
            Ok(())
        })?;
        Ok((
            Some(Tensor::from_vec(d_p, (4 * hidden, columns), &Device::Cpu)?),
            Some(Tensor::from_vec(dw_hh, (4 * hidden, hidden), &Device::Cpu)?),
        ))
    }
}

/// Mean cross-entropy of feature-major logits `[V, N]` (column n scores position n) against
/// target ids `[N]` (u32), as a scalar. Apply as `logits.apply_op2(targets, CrossEntropy::new())`.
///
/// Forward and backward in one pass each over the logits, with no transpose:
///
/// ```text
/// loss      = (1/N) Σ_n [ log Σ_v e^{z_vn} − z_{target(n), n} ]
/// ∂loss/∂z  = (softmax(z) − onehot(target)) / N          (softmax down each column)
/// ```
pub struct CrossEntropy {
    /// softmax(z), `[V, N]`, kept from the forward pass for the backward pass.
    probabilities: Mutex<Vec<f32>>,
}

impl CrossEntropy {
    pub fn new() -> Self {
        CrossEntropy { probabilities: Mutex::new(Vec::new()) }
    }
}

impl Default for CrossEntropy {
    fn default() -> Self {
        Self::new()
    }
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(&self, z: &CpuStorage, z_layout: &Layout, t: &CpuStorage, t_layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (vocab, columns) = z_layout.shape().dims2()?;
        let z = contiguous(z, z_layout, "logits")?;
        let (CpuStorage::U32(targets), Some((start, end))) = (t, t_layout.contiguous_offsets()) else {
            bail!("fused cross-entropy: targets must be contiguous u32");
        };
        let targets = &targets[start..end];
        if targets.len() != columns || targets.iter().any(|&t| t as usize >= vocab) {
            bail!("fused cross-entropy: {} targets for {columns} positions of {vocab} classes", targets.len());
        }
        // Column maxima and sums, accumulated a whole row at a time so the loops vectorise.
        let mut max = vec![f32::NEG_INFINITY; columns];
        for row in z.chunks_exact(columns) {
            for (m, &v) in max.iter_mut().zip(row) {
                *m = m.max(v);
            }
        }
        let mut probabilities = vec![0.0f32; vocab * columns];
        let mut sum = vec![0.0f32; columns];
        for (row, out) in z.chunks_exact(columns).zip(probabilities.chunks_exact_mut(columns)) {
            exp_shifted(row, &max, out);
            for (s, &e) in sum.iter_mut().zip(out.iter()) {
                *s += e;
            }
        }
        for row in probabilities.chunks_exact_mut(columns) {
            for (p, &s) in row.iter_mut().zip(&sum) {
                *p /= s;
            }
        }
        let total: f64 = (0..columns)
            .map(|n| f64::from(sum[n].ln() + max[n] - z[targets[n] as usize * columns + n]))
            .sum();
        *self.probabilities.lock().expect("no panics while the lock is held") = probabilities;
        Ok((CpuStorage::F32(vec![(total / columns as f64) as f32]), Shape::from(())))
    }

    fn bwd(&self, z: &Tensor, targets: &Tensor, _loss: &Tensor, d_loss: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (vocab, columns) = z.dims2()?;
        let mut gradient = std::mem::take(&mut *self.probabilities.lock().expect("no panics while the lock is held"));
        if gradient.len() != vocab * columns {
            bail!("fused cross-entropy: backward ran twice or before forward");
        }
        for (n, &target) in targets.to_vec1::<u32>()?.iter().enumerate() {
            gradient[target as usize * columns + n] -= 1.0;
        }
        let scale = d_loss.to_scalar::<f32>()? / columns as f32;
        gradient.iter_mut().for_each(|g| *g *= scale);
        Ok((Some(Tensor::from_vec(gradient, (vocab, columns), &Device::Cpu)?), None))
    }
}
