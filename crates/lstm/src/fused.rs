//! The CPU layers of [`crate::layers`] as Candle custom ops (the affine map and the
//! recurrence), so a model built from Candle tensors ([`crate::LstmModel::logits`], the tests
//! against candle-nn and against Candle's autograd) runs them with Candle's autograd calling
//! their hand-written backward passes.
//!
//! Training and measuring on the CPU do not go through these: [`crate::network`] chains the
//! same layer functions itself, which spares Candle's per-gradient bookkeeping (a zero
//! tensor and an addition for every gradient it collects) and carries the state between
//! windows.

use crate::layers::{self, Dims, RecurrenceSaved};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Storage, Tensor, bail};
use products::Precision;
use std::sync::Mutex;

/// The f32 contents of a contiguous CPU storage.
pub(crate) fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { bail!("fused LSTM: {what} must be f32") };
    let Some((start, end)) = layout.contiguous_offsets() else { bail!("fused LSTM: {what} must be contiguous") };
    Ok(&data[start..end])
}

/// Runs `f` on the f32 contents of a CPU tensor, copying only if it is not contiguous.
pub(crate) fn with_data<R>(tensor: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let tensor = tensor.contiguous()?;
    let (storage, layout) = tensor.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(contiguous(cpu, layout, what)?),
        _ => bail!("fused LSTM: {what} is not on the CPU"),
    }
}

fn on_cpu(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Option<Tensor>> {
    Tensor::from_vec(data, shape, &Device::Cpu).map(Some)
}

/// [`layers::affine_forward`]: `y[M, N] = W[M, K] · x[K, N] + b[M]`. Apply as
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
        Ok((CpuStorage::F32(layers::affine_forward(w, b, x, (m, k, n), Precision::F32)), Shape::from((m, n))))
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
        let (dx, dw, db) = with_data(x, "x", |x| {
            with_data(w, "W", |w| {
                with_data(dy, "dy", |dy| Ok(layers::affine_backward(w, x, dy, (m, k, n), Precision::F32)))
            })
        })?;
        Ok((on_cpu(dx, (k, n))?, on_cpu(dw, (m, k))?, on_cpu(db, m)?))
    }
}

/// [`layers::recurrence_forward`]: `P[4H, T·B]` and `W_hh[4H, H]` in, `h[H, T·B]` out.
/// Apply as `p.apply_op2(w_hh, Recurrence::new(batch))`.
pub struct Recurrence {
    batch: usize,
    /// What the forward pass keeps for the backward pass (freed with the graph).
    saved: Mutex<Option<RecurrenceSaved>>,
}

impl Recurrence {
    /// `batch` is B, the number of sequences; the column count must be a multiple of it.
    pub fn new(batch: usize) -> Self {
        Recurrence { batch, saved: Mutex::new(None) }
    }

    fn dims(&self, p: &[usize], w_hh: &[usize]) -> Result<Dims> {
        let (hidden, columns) = match (p, w_hh) {
            (&[four_h, columns], &[four_h_w, hidden]) if four_h == 4 * hidden && four_h_w == four_h => {
                (hidden, columns)
            }
            _ => bail!("fused recurrence: P {p:?} and W_hh {w_hh:?} do not fit"),
        };
        if self.batch == 0 || columns % self.batch != 0 {
            bail!("fused recurrence: {columns} columns are not a multiple of the batch {}", self.batch);
        }
        Ok(Dims { hidden, steps: columns / self.batch, batch: self.batch })
    }
}

impl CustomOp2 for Recurrence {
    fn name(&self) -> &'static str {
        "fused-lstm-recurrence"
    }

    fn cpu_fwd(
        &self,
        p: &CpuStorage,
        p_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = self.dims(p_layout.dims(), w_layout.dims())?;
        let (p, w_hh) = (contiguous(p, p_layout, "P")?, contiguous(w, w_layout, "W_hh")?);
        // The recurrence reads P position-major; this op takes it as the affine map makes it.
        let rows = products::transpose(p, 4 * dims.hidden, dims.steps * dims.batch);
        let p = layers::Projections { rows: &rows, slots: None };
        let (h, saved, _) = layers::recurrence_forward(p, None, w_hh, dims, Precision::F32, None);
        *self.saved.lock().expect("no panics while the lock is held") = Some(saved);
        Ok((CpuStorage::F32(h), Shape::from((dims.hidden, dims.steps * dims.batch))))
    }

    fn bwd(&self, p: &Tensor, w_hh: &Tensor, h: &Tensor, dh: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dims = self.dims(p.dims(), w_hh.dims())?;
        let Some(saved) = self.saved.lock().expect("no panics while the lock is held").take() else {
            bail!("fused recurrence: backward ran twice or before forward");
        };
        let (d_p, dw_hh) = with_data(w_hh, "W_hh", |w_hh| {
            with_data(h, "h", |h| {
                with_data(dh, "dh", |dh| Ok(layers::recurrence_backward(&saved, w_hh, h, dh, dims, Precision::F32)))
            })
        })?;
        Ok((on_cpu(d_p, p.dims())?, on_cpu(dw_hh, w_hh.dims())?))
    }
}
