//! The moving average of the weights (`train.ema_decay`): what validation reads and what
//! the finished model keeps, while training steps on from the weights as Adam left them.
//!
//! Why: with a constant learning rate Adam's steps keep the weights rattling around the
//! bottom of the valley they have found, each step as large as the rate whatever the
//! gradient, and the weights of any one step sit on a wall of it. Their average over the
//! last few hundred steps sits nearer the floor (Polyak averaging; AWD-LSTM's averaged
//! SGD, Merity et al. 2017), at the cost of one more copy of the weights and one
//! multiply-add per weight a step.

use artifacts::NamedTensor;
use candle_core::{Result, Tensor};
use lstm::LstmModel;

/// Invariant: `weights` has one tensor per [`LstmModel::vars`] entry, of the same shape.
pub struct WeightAverage {
    decay: f64,
    weights: Vec<Tensor>,
}

impl WeightAverage {
    /// An average that starts at the model's weights, or at `stored` (a checkpoint's) when
    /// it holds one tensor of the right shape per weight.
    pub fn new(model: &LstmModel, decay: f64, stored: &[NamedTensor]) -> Result<Self> {
        let fits =
            stored.len() == model.vars().len() && stored.iter().zip(model.vars()).all(|(s, v)| s.shape == v.dims());
        let weights = if fits {
            let device = model.vars()[0].device();
            stored.iter().map(|s| Tensor::from_slice(&s.data, s.shape.as_slice(), device)).collect::<Result<_>>()?
        } else {
            weights_now(model)?
        };
        Ok(WeightAverage { decay, weights })
    }

    /// Moves the average toward the model's weights after the run's `step`-th step (1-based,
    /// counted over resumed runs): `average += (1 − d)·(weights − average)`. The decay is
    /// `min(decay, (1 + step)/(10 + step))`, so the first steps, whose weights training
    /// is about to leave, weigh as one step among a few rather than among 1/(1 − decay).
    pub fn update(&mut self, model: &LstmModel, step: u64) -> Result<()> {
        let step = step as f64;
        let decay = self.decay.min((1.0 + step) / (10.0 + step));
        for (average, var) in self.weights.iter_mut().zip(model.vars()) {
            // Detached: an op on a variable records its inputs for backpropagation, and
            // each step's average would keep every earlier one alive.
            *average = (average.affine(decay, 0.0)? + var.as_tensor().affine(1.0 - decay, 0.0)?)?.detach();
        }
        Ok(())
    }

    /// The average, named as the model's weights, for a checkpoint or the finished model.
    pub fn to_named(&self, model: &LstmModel) -> Result<Vec<NamedTensor>> {
        lstm::named_tensors(model.names(), self.weights.iter())
    }

    /// `read(model)` with the model's weights replaced by the average for the call; the
    /// weights as stepped are put back afterwards, whether `read` succeeded or not.
    pub fn read_with<T>(&self, model: &LstmModel, read: impl FnOnce(&LstmModel) -> Result<T>) -> Result<T> {
        let stepped = weights_now(model)?;
        for (var, average) in model.vars().iter().zip(&self.weights) {
            var.set(average)?;
        }
        let result = read(model);
        for (var, weights) in model.vars().iter().zip(&stepped) {
            var.set(weights)?;
        }
        result
    }
}

/// A copy of the model's weights as they are now, detached from the variables (so that
/// neither later steps nor backpropagation reach it).
fn weights_now(model: &LstmModel) -> Result<Vec<Tensor>> {
    model.vars().iter().map(|v| Ok(v.as_tensor().copy()?.detach())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifacts::Hyperparameters;
    use candle_core::Device;

    fn model() -> LstmModel {
        let hp = Hyperparameters { vocab_size: 5, embedding: 3, hidden: 4, layers: 2, dropout: 0.0, seq_len: 4 };
        LstmModel::new(hp, 3, &Device::Cpu).unwrap()
    }

    /// Every weight of `model` moved by `by`.
    fn shift(model: &LstmModel, by: f64) {
        for var in model.vars() {
            var.set(&(var.as_tensor() + by).unwrap()).unwrap();
        }
    }

    fn named(model: &LstmModel) -> Vec<NamedTensor> {
        model.to_named().unwrap()
    }

    #[test]
    fn the_average_moves_by_one_minus_the_warmed_up_decay_and_reads_without_changing_the_weights() {
        let model = model();
        let start = named(&model);
        let mut average = WeightAverage::new(&model, 0.99, &[]).unwrap();
        assert_eq!(average.to_named(&model).unwrap(), start, "it starts at the weights");
        shift(&model, 1.0);
        average.update(&model, 1).unwrap();
        // Step 1 decays by min(0.99, 2/11): the average moves 9/11 of the way.
        let moved = average.to_named(&model).unwrap();
        for (after, before) in moved.iter().flat_map(|t| &t.data).zip(start.iter().flat_map(|t| &t.data)) {
            assert!((after - before - 9.0 / 11.0).abs() < 1e-5, "{after} from {before}");
        }
        // Far on, the decay is the configured one: a hundredth of the way to weights now
        // 2 − 9/11 above the average.
        shift(&model, 1.0);
        average.update(&model, 1_000_000).unwrap();
        let later = average.to_named(&model).unwrap();
        for (after, before) in later.iter().flat_map(|t| &t.data).zip(moved.iter().flat_map(|t| &t.data)) {
            assert!((after - before - 0.01 * (2.0 - 9.0 / 11.0)).abs() < 1e-4, "{after} from {before}");
        }
        // Reading with the average sees it, and leaves the weights as stepped.
        let stepped = named(&model);
        let seen = average.read_with(&model, |m| m.to_named()).unwrap();
        assert_eq!(seen, later);
        assert_eq!(named(&model), stepped);
        // A checkpoint's average resumes as it was; one of another shape is not taken.
        assert_eq!(WeightAverage::new(&model, 0.99, &later).unwrap().to_named(&model).unwrap(), later);
        let other = WeightAverage::new(&model, 0.99, &later[..2]).unwrap();
        assert_eq!(other.to_named(&model).unwrap(), stepped);
    }
}
