//! Carrying the state from one window to the next (truncated backpropagation through time):
//! a sequence read in windows gives the logits of reading it whole, on both paths, and the
//! CPU training step's gradients with a carried start match Candle's autograd.

use artifacts::Hyperparameters;
use candle_core::{Device, Tensor};
use lstm::{LayerPath, LstmModel, StreamState};
use seeded_rng::SeededRng;

mod common;
use common::assert_matches_autograd;

fn hyperparameters() -> Hyperparameters {
    Hyperparameters { vocab_size: 11, embedding: 5, hidden: 6, layers: 2, dropout: 0.2, seq_len: 4 }
}

fn zero_state(batch: usize) -> Vec<StreamState> {
    (0..2).map(|_| StreamState::zeros(batch, 6)).collect()
}

fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn windows_with_the_state_carried_read_like_the_whole_sequence() {
    let model = LstmModel::new(hyperparameters(), 3, &Device::Cpu).unwrap();
    let (batch, steps) = (3, 12);
    let ids: Vec<u32> = (0..batch * steps).map(|i| ((i * 7 + i / 4) % 11) as u32).collect();
    let whole = Tensor::from_vec(ids, (batch, steps), &Device::Cpu).unwrap();
    let expected = model.forward(&whole, None).unwrap();
    for path in [LayerPath::Fused, LayerPath::CandleOps] {
        let mut state = zero_state(batch);
        for start in (0..steps).step_by(4) {
            let window = whole.narrow(1, start, 4).unwrap();
            let logits = model.carried_logits_on(&window, None, &mut state, path).unwrap();
            let got = logits.reshape((4, batch, 11)).unwrap().transpose(0, 1).unwrap();
            let difference = max_difference(&got, &expected.narrow(1, start, 4).unwrap());
            assert!(difference < 1e-5, "{path:?}, window at {start}: differs by {difference:e}");
        }
        assert!(state.iter().all(|s| s.h.iter().any(|&v| v != 0.0)), "{path:?}: the state moved on");
    }
}

#[test]
fn the_carried_training_step_matches_autograd_and_hands_on_its_state() {
    let model = LstmModel::new(hyperparameters(), 8, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..2 * 5).map(|i| (i * 5 % 11) as u32).collect();
    let all = Tensor::from_vec(ids, (2, 5), &Device::Cpu).unwrap();
    let (inputs, targets) = (all.narrow(1, 0, 4).unwrap(), all.narrow(1, 1, 4).unwrap());
    // A start that is not zero, as the end of an earlier window leaves it.
    let mut rng = SeededRng::new(2, "state");
    let start: Vec<StreamState> = (0..2)
        .map(|_| StreamState {
            h: (0..12).map(|_| rng.unit_f32() - 0.5).collect(),
            c: (0..12).map(|_| 2.0 * rng.unit_f32() - 1.0).collect(),
        })
        .collect();

    let mut state = start.clone();
    let mut rng = SeededRng::new(4, "dropout");
    let (loss, grads) =
        model.carried_loss_and_gradients(&inputs, &targets, Some((&mut rng, 0.2)), Some(&mut state)).unwrap();

    // The reference: the same start fed to the Candle-ops path (what GPUs run) as constants,
    // so autograd stops there as the truncation does.
    let mut reference_state = start.clone();
    let mut rng = SeededRng::new(4, "dropout");
    let logits =
        model.carried_logits_on(&inputs, Some((&mut rng, 0.2)), &mut reference_state, LayerPath::CandleOps).unwrap();
    assert_matches_autograd(&model, (loss, &grads), &logits, &targets);
    for (layer, (got, want)) in state.iter().zip(&reference_state).enumerate() {
        for (a, b) in got.h.iter().chain(&got.c).zip(want.h.iter().chain(&want.c)) {
            assert!((a - b).abs() < 1e-5, "layer {layer}'s state after the window: {a} vs {b}");
        }
    }
    assert_ne!(state, start, "the state after the window is handed back");
}

/// Mean cross-entropy over `batches` read in order, the state carried.
fn mean_loss(model: &LstmModel, dataset: &artifacts::DatasetArtifact, batches: &[Vec<lstm::LaneWindow>]) -> f32 {
    let (mut sum, mut count) = (0.0f32, 0usize);
    lstm::read_in_order(model, dataset, batches, &Device::Cpu, |logits, targets| {
        let n = targets.elem_count();
        sum += candle_nn::loss::cross_entropy(&logits, &targets)?.to_scalar::<f32>()? * n as f32;
        count += n;
        Ok(())
    })
    .unwrap();
    sum / count as f32
}

#[test]
fn whole_pieces_measure_the_same_in_any_number_of_lanes_and_unlike_fresh_windows() {
    let piece = |len: usize, shift: usize| artifacts::EncodedPiece {
        source: String::new(),
        split: artifacts::Split::Validation,
        augmentation: None,
        tokens: (0..len).map(|i| ((i * 3 + shift + i / 7) % 11) as u32).collect(),
    };
    let dataset = artifacts::DatasetArtifact {
        encoding: artifacts::Encoding::Names { chord_window_quarters: 0.0 },
        vocabulary: artifacts::Vocabulary::from_tokens((0..11).map(|i| format!("C{i}"))),
        seq_len: 4,
        stride: 4,
        pieces: vec![piece(41, 0), piece(17, 5), piece(29, 2)],
    };
    let model = LstmModel::new(hyperparameters(), 6, &Device::Cpu).unwrap();
    let one = mean_loss(&model, &dataset, &lstm::whole_pieces(&dataset, artifacts::Split::Validation, 1));
    let three = mean_loss(&model, &dataset, &lstm::whole_pieces(&dataset, artifacts::Split::Validation, 3));
    assert!((one - three).abs() < 1e-5, "one lane {one}, three lanes {three}");
    let fresh = lstm::window_batches(&dataset.windows(artifacts::Split::Validation), 3);
    let windows = mean_loss(&model, &dataset, &fresh);
    assert!((one - windows).abs() > 1e-4, "carried {one} vs windows from zero {windows}: the state must carry");
}

/// Measuring reads in float32 whatever the training precision, so a model's validation loss
/// does not move with `train.precision` and equals what `evaluate` computes afresh.
#[test]
fn measuring_reads_in_float32_whatever_the_training_precision() {
    if !products::bf16::available() {
        eprintln!(
            "skipped: measuring_reads_in_float32_whatever_the_training_precision: this processor has no AVX-512 BF16"
        );
        return;
    }
    let f32_model = LstmModel::new(hyperparameters(), 9, &Device::Cpu).unwrap();
    let mut bf16_model = LstmModel::new(hyperparameters(), 9, &Device::Cpu).unwrap();
    bf16_model.set_precision(lstm::Precision::Bf16).unwrap();
    let ids: Vec<u32> = (0..3 * 4).map(|i| (i * 5 % 11) as u32).collect();
    let tokens = Tensor::from_vec(ids, (3, 4), &Device::Cpu).unwrap();
    let read = |model: &LstmModel| {
        let mut state = zero_state(3);
        model.carried_logits(&tokens, &mut state).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(read(&bf16_model), read(&f32_model));
}
