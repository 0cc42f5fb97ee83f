//! `model.bin`: a trained model, complete enough for `compose` to use on its own.

use crate::{Artifact, ArtifactKind, Encoding, Vocabulary};
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

/// A tensor by name, stored row-major. Invariant: `data.len()` = product of `shape`.
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
    pub seconds: f64,
    pub targets_per_second: f64,
}

/// Payload of `model.bin`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelArtifact {
    pub hyperparameters: Hyperparameters,
    pub encoding: Encoding,
    pub vocabulary: Vocabulary,
    pub weights: Vec<NamedTensor>,
    pub optimizer: AdamState,
    pub history: Vec<EpochRecord>,
}

impl Artifact for ModelArtifact {
    const KIND: ArtifactKind = ArtifactKind::Model;
    const FORMAT_VERSION: u32 = 1;
}
