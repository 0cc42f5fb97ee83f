//! bfloat16 products against float32: a training step's gradients on a small network, and
//! the next-token distributions of the trained base model (`models/piano.bin`) while it
//! composes. On a processor without AVX-512 BF16 each test prints one line and skips.

use artifacts::ModelArtifact;
use candle_core::{Device, Tensor};
use lstm::{Generator, LstmModel, Precision};
use seeded_rng::SeededRng;

fn bf16_or_skip(test: &str) -> bool {
    let available = products::bf16::available();
    if !available {
        eprintln!("skipped: {test}: this processor has no AVX-512 BF16");
    }
    available
}

fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    let difference: f64 = got.iter().zip(want).map(|(g, w)| f64::from(g - w).powi(2)).sum();
    let size: f64 = want.iter().map(|w| f64::from(*w).powi(2)).sum();
    (difference / size.max(1e-30)).sqrt()
}

/// Every weight's gradient in bf16 lies within 2 % (relative L2) of float32's, and the loss
/// within 0.2 %: bfloat16 keeps 8 bits per operand (2⁻⁸ relative), and the sums stay float32.
#[test]
fn bf16_gradients_stay_within_two_percent_of_float32() {
    if !bf16_or_skip("bf16_gradients_stay_within_two_percent_of_float32") {
        return;
    }
    let hp =
        artifacts::Hyperparameters { vocab_size: 60, embedding: 24, hidden: 40, layers: 2, dropout: 0.0, seq_len: 30 };
    let mut model = LstmModel::new(hp, 11, &Device::Cpu).unwrap();
    let mut rng = SeededRng::new(3, "bf16 tokens");
    let ids: Vec<u32> = (0..9 * 31).map(|_| rng.below(60) as u32).collect();
    let all = Tensor::from_vec(ids, (9, 31), &Device::Cpu).unwrap();
    let (inputs, targets) = (all.narrow(1, 0, 30).unwrap(), all.narrow(1, 1, 30).unwrap());
    let (loss32, grads32) = model.loss_and_gradients(&inputs, &targets, None).unwrap();
    model.set_precision(Precision::Bf16).unwrap();
    let (loss16, grads16) = model.loss_and_gradients(&inputs, &targets, None).unwrap();
    assert!(((loss16 - loss32) / loss32).abs() < 2e-3, "loss {loss16} against {loss32}");
    for (name, (g16, g32)) in model.names().iter().zip(grads16.iter().zip(&grads32)) {
        let error = relative_error(g16, g32);
        assert!(error < 0.02, "gradient of {name}: relative error {error:.4}");
    }
}

/// Composing with either trained base model, the next-token distribution with bfloat16
/// weights stays within a KL divergence of 1e-3 nats per token (on average) of float32's,
/// for one stream and for eight (a `make quality` set).
#[test]
fn bf16_generation_keeps_the_base_models_distributions() {
    if !bf16_or_skip("bf16_generation_keeps_the_base_models_distributions") {
        return;
    }
    for model in ["piano.bin", "piano-beats.bin"] {
        let path = format!("{}/../../models/{model}", env!("CARGO_MANIFEST_DIR"));
        let (artifact, _) = artifacts::read_input::<ModelArtifact>(std::path::Path::new(&path)).unwrap();
        let float32 = LstmModel::from_named(artifact.hyperparameters.clone(), &artifact.weights, &Device::Cpu).unwrap();
        let mut bfloat16 =
            LstmModel::from_named(artifact.hyperparameters.clone(), &artifact.weights, &Device::Cpu).unwrap();
        bfloat16.set_precision(Precision::Bf16).unwrap();
        let vocab = artifact.hyperparameters.vocab_size;
        for streams in [1, 8] {
            let (mut exact, mut rounded) =
                (Generator::new(&float32, streams).unwrap(), Generator::new(&bfloat16, streams).unwrap());
            let mut rng = SeededRng::new(7, "bf16 generation");
            let mut tokens: Vec<u32> = (0..streams).map(|_| rng.below(vocab) as u32).collect();
            let (mut kl_sum, mut count) = (0.0f64, 0usize);
            for _ in 0..300 {
                let p = exact.step(&tokens).unwrap().to_vec();
                let q = rounded.step(&tokens).unwrap().to_vec();
                for (stream, (p, q)) in p.chunks_exact(vocab).zip(q.chunks_exact(vocab)).enumerate() {
                    let (p, q) = (softmax(p), softmax(q));
                    kl_sum += p.iter().zip(&q).filter(|(p, _)| **p > 0.0).map(|(p, q)| p * (p / q).ln()).sum::<f64>();
                    count += 1;
                    // Both continue from the float32 model's own draw, so they see the same music.
                    let mut threshold = rng.unit_f64();
                    tokens[stream] = p
                        .iter()
                        .position(|&pi| {
                            threshold -= pi;
                            threshold < 0.0
                        })
                        .unwrap_or(vocab - 1) as u32;
                }
            }
            let mean = kl_sum / count as f64;
            assert!(mean < 1e-3, "{model}, {streams} stream(s): mean KL {mean:.2e} nats per token");
            eprintln!(
                "{model}, {streams} stream(s): mean KL(float32 ‖ bf16) {mean:.2e} nats per token over {count} tokens"
            );
        }
    }
}

fn softmax(logits: &[f32]) -> Vec<f64> {
    let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - top).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}
