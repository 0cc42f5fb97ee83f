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

use crate::kernels::{Mat, StepLayout, cell_backward, cell_forward, matmul, threads};
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
pub struct Recurrence {
    batch: usize,
    /// Gate activations `[4H, N]` and cell states `[H, N]` of the forward pass.
    saved: Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

impl Recurrence {
    /// `batch` is B, the number of sequences; the column count must be a multiple of it.
    pub fn new(batch: usize) -> Self {
        Recurrence { batch, saved: Mutex::new(None) }
    }

    fn shape(&self, p: &[usize], w_hh: &[usize]) -> Result<(usize, usize, usize)> {
        let (hidden, columns) = match (p, w_hh) {
            (&[four_h, columns], &[four_h_w, hidden]) if four_h == 4 * hidden && four_h_w == four_h => (hidden, columns),
            _ => bail!("fused recurrence: P {p:?} and W_hh {w_hh:?} do not fit"),
        };
        if self.batch == 0 || columns % self.batch != 0 {
            bail!("fused recurrence: {columns} columns are not a multiple of the batch {}", self.batch);
        }
        Ok((hidden, columns / self.batch, columns))
    }
}

impl CustomOp2 for Recurrence {
    fn name(&self) -> &'static str {
        "fused-lstm-recurrence"
    }

    fn cpu_fwd(&self, p: &CpuStorage, p_layout: &Layout, w: &CpuStorage, w_layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (hidden, steps, columns) = self.shape(p_layout.dims(), w_layout.dims())?;
        let batch = self.batch;
        let (p, w_hh) = (contiguous(p, p_layout, "P")?, contiguous(w, w_layout, "W_hh")?);
        let w_hh = Mat::dense(w_hh, 4 * hidden, hidden);
        let mut gates = p.to_vec();
        let mut cells = vec![0.0f32; hidden * columns];
        let mut h = vec![0.0f32; hidden * columns];
        for step in 0..steps {
            if step > 0 {
                // gates_t += W_hh · h_{t−1}: both read in place from their [·, N] buffers.
                let h_previous = Mat::block(&h, (step - 1) * batch, hidden, batch, columns);
                matmul(&mut gates, step * batch, columns, w_hh, h_previous, true, threads());
            }
            cell_forward(&StepLayout { hidden, batch, columns, step }, &mut gates, &mut cells, &mut h);
        }
        *self.saved.lock().expect("no panics while the lock is held") = Some((gates, cells));
        Ok((CpuStorage::F32(h), Shape::from((hidden, columns))))
    }

    fn bwd(&self, p: &Tensor, w_hh: &Tensor, h: &Tensor, dh_out: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (hidden, steps, columns) = self.shape(p.dims(), w_hh.dims())?;
        let batch = self.batch;
        let Some((gates, cells)) = self.saved.lock().expect("no panics while the lock is held").take() else {
            bail!("fused recurrence: backward ran twice or before forward");
        };
        let mut d_gates = vec![0.0f32; 4 * hidden * columns];
        let mut dh = vec![0.0f32; hidden * batch];
        let mut dc = vec![0.0f32; hidden * batch];
        let mut dw_hh = vec![0.0f32; 4 * hidden * hidden];
        with_data(w_hh, "W_hh", |w_hh| {
            with_data(dh_out, "dh", |dh_out| {
                for step in (0..steps).rev() {
                    // dh_t = (gradient from above at step t) + W_hhᵀ · dgates_{t+1}.
                    for (u, row) in dh.chunks_exact_mut(batch).enumerate() {
                        row.copy_from_slice(&dh_out[u * columns + step * batch..][..batch]);
                    }
                    if step + 1 < steps {
                        let d_next = Mat::block(&d_gates, (step + 1) * batch, 4 * hidden, batch, columns);
                        matmul(&mut dh, 0, batch, Mat::dense(w_hh, 4 * hidden, hidden).t(), d_next, true, threads());
                    }
                    let at = StepLayout { hidden, batch, columns, step };
                    cell_backward(&at, &gates, &cells, &dh, &mut dc, &mut d_gates);
                }
                Ok(())
            })
        })?;
        // dW_hh = Σ_{t≥1} dgates_t · h_{t−1}ᵀ: columns B.. of dgates against columns ..N−B of h.
        with_data(h, "h", |h| {
            let d_later = Mat::block(&d_gates, batch, 4 * hidden, columns - batch, columns);
            let h_earlier = Mat::block(h, 0, hidden, columns - batch, columns).t();
            matmul(&mut dw_hh, 0, hidden, d_later, h_earlier, false, threads());
            Ok(())
        })?;
        Ok((
            Some(Tensor::from_vec(d_gates, (4 * hidden, columns), &Device::Cpu)?),
            Some(Tensor::from_vec(dw_hh, (4 * hidden, hidden), &Device::Cpu)?),
        ))
    }
}
