//! `model.bin`: a trained model, complete enough for `compose` to use on its own.

use crate::{Artifact, ArtifactKind, Encoding, InputDigest, Vocabulary};
use serde::{Deserialize, Serialize};

/// The shape of the network: embedding → `layers` stacked LSTMs → fully connected layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    pub vocab_size: usize,
    pub embedding: usize,
    pub hidden: usize,
    pub layers: usize,
    /// Dropout applied to each LSTM layer's output while training.
    pub dropout: f32,
    pub seq_len: usize,
}

/// A tensor by name, stored row-major (a weight matrix as `[outputs, inputs]`). Invariant: `data.len()` = product of `shape`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Adam's running moments, one tensor per weight, in the same order as the weights.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AdamState {
    /// Number of updates taken (Adam's bias correction needs it).
    pub step: u64,
    pub first_moment: Vec<NamedTensor>,
    pub second_moment: Vec<NamedTensor>,
}

/// One line of the training history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Mean cross-entropy (nats per target) over the epoch's training batches.
    pub train_loss: f32,
    /// `None` when the data set has no validation pieces.
    pub validation_loss: Option<f32>,
    pub validation_accuracy: Option<f32>,
}

/// How long one epoch took. Kept out of [`EpochRecord`], and so out of `model.bin`: the
/// same data, settings and seed must give the same model file byte for byte, and wall-clock
/// time never repeats. The stage report and the checkpoint hold these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochTiming {
    pub epoch: usize,
    pub seconds: f64,
    pub targets_per_second: f64,
}

/// Payload of `model.bin`.
///
/// A model shipped for others to start from (`models/piano.bin`) is the same artifact with
/// an empty `optimizer`: fine-tuning starts a fresh optimizer anyway, and the moments would
/// triple the file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelArtifact {
    pub hyperparameters: Hyperparameters,
    pub encoding: Encoding,
    pub vocabulary: Vocabulary,
    pub weights: Vec<NamedTensor>,
    pub optimizer: AdamState,
    /// The model whose weights training started from (`train.init`), or `None` when the
    /// weights were initialised at random. The history covers only this model's own training.
    pub initialised_from: Option<InputDigest>,
    /// The epoch after which `weights` were taken: the one with the lowest validation loss,
    /// or the last when there is no validation set (0 before any epoch).
    pub weights_epoch: usize,
    pub history: Vec<EpochRecord>,
    /// The temperature fitted on the validation pieces after training and folded into the
    /// output layer (`train.calibrate`), so `weights` already divide their logits by it;
    /// `None` when the model was not calibrated (no validation pieces, or turned off).
    pub calibration: Option<Calibration>,
}

/// How a model's logits were calibrated: divided by the one temperature that gives the
/// lowest cross-entropy on the validation pieces (see `lstm::calibration`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The temperature the best epoch's logits were divided by (above 1: the network was
    /// surer than it was right).
    pub temperature: f64,
    /// Validation loss (nats per target) of the best epoch's weights as trained…
    pub validation_loss_before: f64,
    /// …and of the stored, calibrated weights.
    pub validation_loss_after: f64,
}

impl ModelArtifact {
    /// The same model without Adam's moments: what a shipped base model holds.
    pub fn weights_only(mut self) -> Self {
        self.optimizer = AdamState::default();
        self
    }
}

impl Artifact for ModelArtifact {
    const KIND: ArtifactKind = ArtifactKind::Model;
    // 2: LSTM and output weights stored output-major ([4H, in], [V, H]), as PyTorch and candle-nn store them.
    // 3: records the model training started from (`initialised_from`).
    // 4: the header carries the payload's digest.
    // 5: the history holds no timings (see `EpochTiming`), so a rerun writes the same bytes.
    // 6: records the temperature folded into the output layer (`calibration`).
    const FORMAT_VERSION: u32 = 6;

    fn check(&self) -> Result<(), String> {
        check_weights(&self.weights)
    }
}

/// Every tensor's length matches its shape, and every value is finite: a model with a NaN
/// weight composes garbage silently, so it is refused when read.
fn check_weights(weights: &[NamedTensor]) -> Result<(), String> {
    for tensor in weights {
        let expected = tensor.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if expected != Some(tensor.data.len()) {
            return Err(format!(
                "weight {} holds {} numbers for shape {:?}",
                tensor.name,
                tensor.data.len(),
                tensor.shape
            ));
        }
        if let Some(bad) = tensor.data.iter().find(|v| !v.is_finite()) {
            return Err(format!("weight {} holds {bad}", tensor.name));
        }
    }
    Ok(())
}

/// The weights of the best epoch so far, by validation loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestWeights {
    pub epoch: usize,
    pub validation_loss: f32,
    pub weights: Vec<NamedTensor>,
}

/// `model.bin.checkpoint`: a training run stopped part-way, with everything needed to
/// continue it exactly as if it had never stopped. Its header names the `dataset.bin` it
/// trains on, and `settings` the settings that shape the model, so a checkpoint for other
/// data or another model is not resumed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointArtifact {
    /// Weights, optimizer state and the history of the epochs completed so far.
    pub model: ModelArtifact,
    /// The epoch in progress (1-based) and how many of its batches are already applied.
    pub epoch: usize,
    pub batches_done: usize,
    /// The running totals of the epoch in progress.
    pub epoch_loss_sum: f64,
    pub epoch_targets: usize,
    pub epoch_seconds: f64,
    /// Position of the dropout random stream (see `seeded_rng::SeededRng::position`).
    pub dropout_rng_position: u128,
    /// Seconds of training behind these weights, over every run that led to them (what a
    /// time budget counts).
    pub trained_seconds: f64,
    /// The weights after the epoch with the lowest validation loss so far, which the
    /// finished model will hold; `None` before the first validated epoch.
    pub best: Option<BestWeights>,
    /// `(key, value)` of every setting that changes the weights training produces; a run
    /// resumes the checkpoint only when its own settings give the same list. Settings that
    /// only say how long to train (epochs, the time budget) or how (threads) are not in it.
    pub settings: Vec<(String, String)>,
    /// How long each completed epoch took, for the report of the run that finishes.
    pub timings: Vec<EpochTiming>,
    /// With `train.carry_state`, the state each training window starts from, one slot per
    /// window of the data set's training windows in their order (layout of
    /// `lstm::LaneStates`); empty otherwise.
    pub carried_state: Vec<f32>,
    /// With `train.ema_decay`, the moving average of the weights so far (the weights
    /// validated and kept), in the order of `model.weights`; empty otherwise.
    pub averaged_weights: Vec<NamedTensor>,
    /// Every step's training loss so far, at its position in epochs (epoch − 1 + share of
    /// its batches done), over every run that led here: the finished run's training curve
    /// draws them all, not only its own.
    pub step_losses: Vec<(f64, f32)>,
}

impl Artifact for CheckpointArtifact {
    const KIND: ArtifactKind = ArtifactKind::Checkpoint;
    // 2: holds a version-2 model.
    // 3: holds a version-3 model, the training time so far and the settings it resumes under.
    // 4: the header carries the payload's digest.
    // 5: holds a version-5 model and the epochs' timings.
    // 6: holds the lanes' carried state.
    // 7: the carried state is per training window, not per lane.
    // 8: holds a version-6 model.
    // 9: holds the moving average of the weights.
    // 10: holds the steps' losses for the training curve.
    const FORMAT_VERSION: u32 = 10;

    fn check(&self) -> Result<(), String> {
        check_weights(&self.model.weights)?;
        check_weights(&self.averaged_weights)?;
        self.best.as_ref().map_or(Ok(()), |best| check_weights(&best.weights))
    }
}
