//! The model's layers on the CPU, each as a forward and a backward function side by side,
//! over plain `f32` slices.
//!
//! Activations are feature-major, `[features, N]` with N = T·B columns ordered time-major
//! (column t·B + b is time step t of sequence b), because then everything the LSTM does is
//! a handful of large matrix products plus one small one per time step. The one exception
//! is what the recurrence reads, P: position-major ([`Projections`]), so that a time step
//! reads whole rows.
//!
//! ```text
//! affine      y = W·x + b         forward: one product for all T·B columns
//!                                  backward: dx = Wᵀ·dy, dW = dy·xᵀ, db = Σ_columns dy
//! recurrence  gates_t = P_t + W_hh·h_{t−1};  c_t, h_t from the gates (cells::cell_forward)
//!                                  backward through time, t = T−1 … 0:
//!                                    dh_t = dy_t + W_hhᵀ·dgates_{t+1}
//!                                    dgates_t, dc_{t−1} from dh_t, dc_t (cells::cell_backward)
//!                                  then dW_hh = Σ_t dgates_t·h_{t−1}ᵀ as one product, dP = dgates
//! cross-entropy  loss = mean_n [log Σ_v e^{z_vn} − z_{target(n),n}]
//!                                  backward: dz = (softmax(z) − onehot(target)) / N
//! ```
//!
//! An LSTM layer is `recurrence(affine(x, W_ih, b), W_hh)`; the output layer is one more
//! `affine`. Weights are `[outputs, inputs]` row-major, as PyTorch and candle-nn store them.

use crate::cells::{cell_backward, cell_forward, exp_shifted, threads};
use products::{Mat, Precision, StepWeights, row_sums, sums_by_slot, transpose_rows};
use rayon::prelude::*;

/// `y[M, N] = W[M, K] · x[K, N] + b[M]`.
pub fn affine_forward(
    w: &[f32],
    b: &[f32],
    x: &[f32],
    (m, k, n): (usize, usize, usize),
    precision: Precision,
) -> Vec<f32> {
    let mut y = precision.product(Mat::dense(w, m, k), Mat::dense(x, k, n), threads());
    for (row, bias) in y.chunks_exact_mut(n.max(1)).zip(b) {
        row.iter_mut().for_each(|v| *v += bias);
    }
    y
}

/// The gradients of [`affine_forward`] from `dy` `[M, N]`: `(dx, dW, db)`.
pub fn affine_backward(
    w: &[f32],
    x: &[f32],
    dy: &[f32],
    (m, k, n): (usize, usize, usize),
    precision: Precision,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dy_mat = Mat::dense(dy, m, n);
    let dx = precision.product(Mat::dense(w, m, k).t(), dy_mat, threads());
    let dw = precision.product(dy_mat, Mat::dense(x, k, n).t(), threads());
    let db = row_sums(dy, n);
    (dx, dw, db)
}

/// The embedding and the first layer's input projection together: `P = W[M, K] · x` where
/// column n of x is row `tokens[n]` of the embedding table `E[V, K]`.
///
/// A batch holds at most N distinct tokens, and usually far fewer (a vocabulary of 400
/// against 3,200 positions), so the projection is computed once per distinct token, `Qᵀ =
/// E_used · Wᵀ` (a row per token), and the recurrence reads position n's row of P as its
/// token's row of Qᵀ ([`EmbeddedProjection::projections`]): the same numbers as `W · x` for
/// a fraction of the product, and neither x nor P is ever built. The backward pass sums
/// each column of dP into its token's column first (`D`), then works on those few columns:
/// dW = D·E_used, dE_used = Dᵀ·W.
pub struct EmbeddedProjection {
    /// The distinct token ids of the batch, in order of first appearance.
    used: Vec<u32>,
    /// Per position, its token's index in `used`.
    slot: Vec<u32>,
    /// `E_used`, `[U, K]`: the embedding rows of `used`.
    rows: Vec<f32>,
}

impl EmbeddedProjection {
    /// Ids must be below the table's row count (checked by the caller, who knows V).
    pub fn new(table: &[f32], tokens: &[u32], width: usize, vocab: usize) -> Self {
        let mut index_of = vec![u32::MAX; vocab];
        let mut used = Vec::new();
        let slot = tokens
            .iter()
            .map(|&id| {
                let index = &mut index_of[id as usize];
                if *index == u32::MAX {
                    *index = used.len() as u32;
                    used.push(id);
                }
                *index
            })
            .collect();
        let rows = used.iter().flat_map(|&id| &table[id as usize * width..][..width]).copied().collect();
        EmbeddedProjection { used, slot, rows }
    }

    /// `Qᵀ = E_used · Wᵀ`, `[U, M]`, for `W` `[M, K]`: each distinct token's projection as a
    /// row, which [`EmbeddedProjection::projections`] hands to the recurrence as P.
    pub fn forward(&self, w: &[f32], (m, k): (usize, usize), precision: Precision) -> Vec<f32> {
        precision.product(Mat::dense(&self.rows, self.used.len(), k), Mat::dense(w, m, k).t(), threads())
    }

    /// P as the recurrence reads it: position n's row is its token's row of `token_rows`
    /// (what [`EmbeddedProjection::forward`] returned).
    pub fn projections<'a>(&'a self, token_rows: &'a [f32]) -> Projections<'a> {
        Projections { rows: token_rows, slots: Some(&self.slot) }
    }

    /// The gradients from `dP` `[M, N]`: `(dE [V, K], dW [M, K], db [M])`, where db is the
    /// row sums of dP, for a bias added to P.
    pub fn backward(
        &self,
        w: &[f32],
        d_p: &[f32],
        (m, k, vocab): (usize, usize, usize),
        precision: Precision,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let used = self.used.len();
        let d_used = sums_by_slot(d_p, m, &self.slot, used);
        let db = row_sums(&d_used, used);
        let d_used_mat = Mat::dense(&d_used, m, used);
        let dw = precision.product(d_used_mat, Mat::dense(&self.rows, used, k), threads());
        let d_rows = precision.product(d_used_mat.t(), Mat::dense(w, m, k), threads());
        let mut d_table = vec![0.0f32; vocab * k];
        for (&id, d_row) in self.used.iter().zip(d_rows.chunks_exact(k.max(1))) {
            d_table[id as usize * k..][..k].copy_from_slice(d_row);
        }
        (d_table, dw, db)
    }
}

/// The input projections P (x·W_ih for every position, gate order i f g o) as a recurrence
/// reads them: position-major, position n's 4H values one contiguous row — row n of `rows`,
/// or row `slots[n]` where given (the embedding's layer, one row per distinct token).
///
/// Position-major, unlike the other activations, because the recurrence reads P one time
/// step of a few sequences at a time: as rows, that is a few whole rows, transposed in
/// registers into the gate math's layout; feature-major it was 4H runs of a few values,
/// each in its own memory page.
#[derive(Clone, Copy, Debug)]
pub struct Projections<'a> {
    /// `[R, 4H]` row-major: R = N without `slots`, else any count above every slot.
    pub rows: &'a [f32],
    /// Per position (N of them), the row of `rows` it reads.
    pub slots: Option<&'a [u32]>,
}

impl<'a> Projections<'a> {
    /// Position n's `width` values.
    fn row(&self, n: usize, width: usize) -> &'a [f32] {
        let row = self.slots.map_or(n, |slots| slots[n] as usize);
        &self.rows[row * width..][..width]
    }

    /// Appends positions `first .. first + size` (one time step of a group of sequences) to
    /// `gates` as the dense `[width, size]` block the gate math reads, plus `bias[r]` on row
    /// r if given.
    fn gather(&self, width: usize, (first, size): (usize, usize), bias: Option<&[f32]>, gates: &mut Vec<f32>) {
        let rows: Vec<&[f32]> = (first..first + size).map(|n| self.row(n, width)).collect();
        transpose_rows(&rows, width, bias, gates);
    }
}

/// Sizes of one recurrence: H, T, B and N = T·B.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub hidden: usize,
    pub steps: usize,
    pub batch: usize,
}

impl Dims {
    fn columns(&self) -> usize {
        self.steps * self.batch
    }

    /// Appends step `step` of sequences `first..first + size` of the `[rows, N]` matrix
    /// `wide` (dh) to `out` as a dense `[rows, size]` block. Called as the backward pass
    /// reaches each step, which also writes each step's gate gradients straight into dP
    /// ([`WideOutput`]), so no pass over all steps copies them between layouts and no
    /// second `[4H, N]` buffer is held.
    fn gather_step(&self, rows: usize, (first, size): (usize, usize), step: usize, wide: &[f32], out: &mut Vec<f32>) {
        let start = step * self.batch + first;
        for row in wide.chunks_exact(self.columns().max(1)).take(rows) {
            out.extend_from_slice(&row[start..][..size]);
        }
    }

    /// The batch split into one group of consecutive sequences per thread.
    fn groups(&self) -> Vec<(usize, usize)> {
        let count = threads().clamp(1, self.batch.max(1));
        (0..count).map(|g| (g * self.batch / count, (g + 1) * self.batch / count - g * self.batch / count)).collect()
    }
}

/// A `[rows, N]` matrix that the groups fill at once, each writing only its own
/// sequences' columns, step by step.
struct WideOutput {
    data: *mut f32,
    rows: usize,
    dims: Dims,
}

// SAFETY: the groups write disjoint columns (see `write_step`); the data lives until all
// writers are done (`recurrence_forward` and `_backward` join them before reading it).
unsafe impl Sync for WideOutput {}

impl WideOutput {
    /// Room for `rows × N` values in `buffer`, written through [`WideOutput::write_step`].
    fn new(buffer: &mut Vec<f32>, rows: usize, dims: Dims) -> Self {
        buffer.reserve_exact(rows * dims.columns());
        WideOutput { data: buffer.as_mut_ptr(), rows, dims }
    }

    /// Writes the dense `[rows, size]` `block` as step `step` of sequences `first ..`.
    ///
    /// # Safety
    /// No other thread writes the same (step, sequences) at the same time; each group
    /// writes only its own sequences.
    unsafe fn write_step(&self, (first, size): (usize, usize), step: usize, block: &[f32]) {
        assert!(block.len() == self.rows * size && first + size <= self.dims.batch && step < self.dims.steps);
        let start = step * self.dims.batch + first;
        for (r, values) in block.chunks_exact(size.max(1)).enumerate() {
            // SAFETY: row r's columns start..start + size lie inside the rows × N values
            // reserved; the caller keeps writers apart.
            unsafe {
                std::ptr::copy_nonoverlapping(values.as_ptr(), self.data.add(r * self.dims.columns() + start), size)
            };
        }
    }
}

/// What [`recurrence_forward`] keeps for [`recurrence_backward`]: per group of sequences,
/// the gate activations (T blocks of `[4H, b]`) and cell states (T blocks of `[H, b]`),
/// and the state the sequences started from, if not zero.
pub struct RecurrenceSaved {
    groups: Vec<Group>,
    /// h_{−1} feature-major `[H, B]`, when the recurrence started from a carried state.
    initial_h: Option<Vec<f32>>,
}

/// One thread's share of the batch: sequences `first .. first + size`, and its buffers.
struct Group {
    first: usize,
    size: usize,
    gates: Vec<f32>,
    cells: Vec<f32>,
    /// c_{−1} as a `[H, b]` block, when the recurrence started from a carried state.
    initial_cells: Option<Vec<f32>>,
}

/// The state of one LSTM layer for every sequence of a batch: h and c, each `[B, H]` (row b
/// is sequence b). What one window hands to the next of the same piece when training carries
/// the state (truncated backpropagation through time).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamState {
    pub h: Vec<f32>,
    pub c: Vec<f32>,
}

impl StreamState {
    /// The all-zero state of `batch` sequences, where every recurrence starts by default.
    pub fn zeros(batch: usize, hidden: usize) -> Self {
        StreamState { h: vec![0.0; batch * hidden], c: vec![0.0; batch * hidden] }
    }
}

/// Sequences `first .. first + size` of a `[B, H]` state as a feature-major `[H, size]`
/// block, the layout of one step of a group.
fn state_columns(state: &[f32], hidden: usize, (first, size): (usize, usize)) -> Vec<f32> {
    let mut block = vec![0.0; hidden * size];
    for (j, row) in state.chunks_exact(hidden).skip(first).take(size).enumerate() {
        for (u, &value) in row.iter().enumerate() {
            block[u * size + j] = value;
        }
    }
    block
}

/// Writes a feature-major `[H, size]` block back into rows `first ..` of a `[B, H]` state.
fn write_state_columns(block: &[f32], hidden: usize, (first, size): (usize, usize), state: &mut [f32]) {
    for (j, row) in state.chunks_exact_mut(hidden).skip(first).take(size).enumerate() {
        for (u, value) in row.iter_mut().enumerate() {
            *value = block[u * size + j];
        }
    }
}

/// The LSTM recurrence: input projections P ([`Projections`], position-major) and
/// `W_hh[4H, H]` in; hidden states `h[H, N]` out, with the state after
/// the last step. It starts from `initial` (h_{−1}, c_{−1}) where given, else from zero; no
/// gradient flows back into `initial` (the truncation of backpropagation through time).
///
/// The sequences are independent, so the batch is split into one group per thread and each
/// thread runs its group through all T steps alone: no thread waits for another between
/// steps. Inside a group every step's numbers are one dense block (`[4H, b]` gates, `[H, b]`
/// states), so the per-step products read compact memory, not columns strewn across `[·, N]`.
///
/// `bias`, if given, is added to P on the way in (one pass fewer over P than adding it
/// beforehand); its gradient is then the row sums of dP, as for a bias inside P.
pub fn recurrence_forward(
    p: Projections,
    bias: Option<&[f32]>,
    w_hh: &[f32],
    dims: Dims,
    precision: Precision,
    initial: Option<&StreamState>,
) -> (Vec<f32>, RecurrenceSaved, StreamState) {
    let Dims { hidden, steps, batch } = dims;
    let positions = p.slots.map_or(p.rows.len() / (4 * hidden).max(1), <[u32]>::len);
    assert_eq!(positions, dims.columns(), "P holds {positions} positions for {steps} steps of {batch}");
    let w_hh = StepWeights::new(Mat::dense(w_hh, 4 * hidden, hidden), precision, batch);
    let mut h = Vec::new();
    let h_out = WideOutput::new(&mut h, hidden, dims);
    let groups: Vec<(Group, Vec<f32>)> = dims
        .groups()
        .into_par_iter()
        .map(|(first, size)| {
            let (gate_block, state_block) = (4 * hidden * size, hidden * size);
            let initial_h = initial.map(|state| state_columns(&state.h, hidden, (first, size)));
            let initial_cells = initial.map(|state| state_columns(&state.c, hidden, (first, size)));
            let mut gates = Vec::with_capacity(steps * gate_block);
            let mut cells = Vec::with_capacity(steps * state_block);
            // h_{t−1} and h_t: the step's product reads one, its cell math writes the other.
            let mut h_before = initial_h.clone().unwrap_or_else(|| vec![0.0; state_block]);
            let mut h_now = vec![0.0; state_block];
            for step in 0..steps {
                p.gather(4 * hidden, (step * batch + first, size), bias, &mut gates);
                // The cell starts from c_{t−1}: the carried or zero state at the first step.
                match (step, &initial_cells) {
                    (0, Some(c0)) => cells.extend_from_slice(c0),
                    (0, None) => cells.resize(state_block, 0.0),
                    _ => cells.extend_from_within((step - 1) * state_block..step * state_block),
                }
                let gates_t = &mut gates[step * gate_block..][..gate_block];
                // gates_t += W_hh · h_{t−1} (nothing to add for a zero h_{−1}).
                if step > 0 || initial_h.is_some() {
                    w_hh.multiply_add(gates_t, &h_before, size);
                }
                cell_forward(gates_t, &mut cells[step * state_block..], &mut h_now);
                // SAFETY: this group writes only its own sequences' columns.
                unsafe { h_out.write_step((first, size), step, &h_now) };
                std::mem::swap(&mut h_before, &mut h_now);
            }
            (Group { first, size, gates, cells, initial_cells }, h_before)
        })
        .collect();
    // SAFETY: the groups partition the batch and each wrote its columns of every step, so
    // all hidden × N values are initialised.
    unsafe { h.set_len(hidden * dims.columns()) };
    let mut last = StreamState::zeros(batch, hidden);
    for (group, h_last) in &groups {
        let (range, state_block) = ((group.first, group.size), hidden * group.size);
        if steps > 0 {
            write_state_columns(h_last, hidden, range, &mut last.h);
            write_state_columns(&group.cells[(steps - 1) * state_block..], hidden, range, &mut last.c);
        }
    }
    let initial_h = initial.map(|state| state_columns(&state.h, hidden, (0, batch)));
    let saved = RecurrenceSaved { groups: groups.into_iter().map(|(group, _)| group).collect(), initial_h };
    (h, saved, last)
}

/// The gradients of [`recurrence_forward`] from `dh` = ∂loss/∂h `[H, N]`, given its output
/// `h`: `(dP [4H, N], dW_hh [4H, H])`. A carried initial state contributes to dW_hh through
/// the first step, and receives no gradient itself.
pub fn recurrence_backward(
    saved: &RecurrenceSaved,
    w_hh: &[f32],
    h: &[f32],
    dh: &[f32],
    dims: Dims,
    precision: Precision,
) -> (Vec<f32>, Vec<f32>) {
    let Dims { hidden, steps, batch } = dims;
    let columns = dims.columns();
    let w_hh_t = StepWeights::new(Mat::dense(w_hh, 4 * hidden, hidden).t(), precision, batch);
    let mut d_p = Vec::new();
    let d_p_out = WideOutput::new(&mut d_p, 4 * hidden, dims);
    saved.groups.par_iter().for_each(|group| {
        let (gate_block, state_block) = (4 * hidden * group.size, hidden * group.size);
        let range = (group.first, group.size);
        // dgates_{t+1} and dgates_t: the step's product reads one, its cell math writes the other.
        let (mut d_later, mut d_now) = (Vec::with_capacity(gate_block), Vec::with_capacity(gate_block));
        let (mut dh_t, mut dc) = (Vec::with_capacity(state_block), vec![0.0f32; state_block]);
        for step in (0..steps).rev() {
            // dh_t = (gradient from above at step t) + W_hhᵀ · dgates_{t+1}.
            dh_t.clear();
            dims.gather_step(hidden, range, step, dh, &mut dh_t);
            if step + 1 < steps {
                w_hh_t.multiply_add(&mut dh_t, &d_later, group.size);
            }
            let cells_t = &group.cells[step * state_block..][..state_block];
            let previous = match step {
                0 => group.initial_cells.as_deref(),
                _ => Some(&group.cells[(step - 1) * state_block..][..state_block]),
            };
            let gates_t = &group.gates[step * gate_block..][..gate_block];
            d_now.clear();
            cell_backward(gates_t, cells_t, previous, &dh_t, &mut dc, &mut d_now.spare_capacity_mut()[..gate_block]);
            // SAFETY: cell_backward wrote all `gate_block` values.
            unsafe { d_now.set_len(gate_block) };
            // SAFETY: this group writes only its own sequences' columns.
            unsafe { d_p_out.write_step(range, step, &d_now) };
            std::mem::swap(&mut d_later, &mut d_now);
        }
    });
    // SAFETY: the groups partition the batch and each wrote its columns of every step.
    unsafe { d_p.set_len(4 * hidden * columns) };
    // dW_hh = Σ_{t≥1} dgates_t · h_{t−1}ᵀ: columns B.. of dP against columns ..N−B of h.
    let d_later = Mat::block(&d_p, batch, 4 * hidden, columns - batch, columns);
    let h_earlier = Mat::block(h, 0, hidden, columns - batch, columns).t();
    let mut dw_hh = precision.product(d_later, h_earlier, threads());
    if let Some(h0) = &saved.initial_h {
        // … + dgates_0 · h_{−1}ᵀ when the first step read a carried state.
        let first = precision.product(
            Mat::block(&d_p, 0, 4 * hidden, batch, columns),
            Mat::dense(h0, hidden, batch).t(),
            threads(),
        );
        dw_hh.iter_mut().zip(first).for_each(|(sum, value)| *sum += value);
    }
    (d_p, dw_hh)
}

/// Mean cross-entropy of logits `z[V, N]` (column n scores position n) against `targets`
/// (N ids below V): `(loss, softmax(z))`, the softmax taken down each column and kept for
/// [`cross_entropy_backward`].
pub fn cross_entropy_forward(z: &[f32], targets: &[u32], vocab: usize) -> (f32, Vec<f32>) {
    let columns = targets.len();
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
    let total: f64 = (0..columns).map(|n| f64::from(sum[n].ln() + max[n] - z[targets[n] as usize * columns + n])).sum();
    ((total / columns.max(1) as f64) as f32, probabilities)
}

/// The gradient of [`cross_entropy_forward`] times `scale` (∂final/∂loss), computed in
/// place of the probabilities it kept: `(softmax − onehot) · scale / N`.
pub fn cross_entropy_backward(mut probabilities: Vec<f32>, targets: &[u32], scale: f32) -> Vec<f32> {
    let columns = targets.len();
    for (n, &target) in targets.iter().enumerate() {
        probabilities[target as usize * columns + n] -= 1.0;
    }
    let scale = scale / columns.max(1) as f32;
    probabilities.iter_mut().for_each(|g| *g *= scale);
    probabilities
}
