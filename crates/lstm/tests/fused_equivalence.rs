//! The fused LSTM layer against references: candle-nn's LSTM on the same weights (outputs
//! and every gradient), central finite differences, and the model's own Candle-ops path.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::rnn::{LSTMConfig, RNN};
use lstm::fused::{Affine, Recurrence};
use lstm::{LayerPath, LstmModel};
use seeded_rng::SeededRng;

mod common;
use common::{assert_matches_autograd, relative_difference};

fn random(rng: &mut SeededRng, shape: &[usize], scale: f32) -> Tensor {
    let count: usize = shape.iter().product();
    let data: Vec<f32> = (0..count).map(|_| (rng.unit_f32() * 2.0 - 1.0) * scale).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// One fused layer: x `[B, T, In]` (batch-major, as candle-nn takes it) → h `[B, T, H]`.
fn fused_layer(x: &Tensor, w_ih: &Tensor, w_hh: &Tensor, bias: &Tensor) -> Tensor {
    let (batch, steps, input) = x.dims3().unwrap();
    let hidden = w_hh.dim(1).unwrap();
    let feature_major =
        x.transpose(0, 1).unwrap().reshape((steps * batch, input)).unwrap().t().unwrap().contiguous().unwrap();
    let projected = feature_major.apply_op3(w_ih, bias, Affine).unwrap();
    let h = projected.apply_op2(w_hh, Recurrence::new(batch)).unwrap();
    h.t().unwrap().reshape((steps, batch, hidden)).unwrap().transpose(0, 1).unwrap()
}

#[test]
fn fused_layer_matches_candle_nn_outputs_and_gradients() {
    for (batch, steps, input, hidden) in [(3, 7, 5, 4), (1, 1, 2, 3), (8, 20, 16, 32), (2, 50, 9, 17)] {
        let mut rng = SeededRng::new(7, "equivalence");
        let dev = Device::Cpu;
        let mut varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let reference = candle_nn::rnn::lstm(input, hidden, LSTMConfig::default(), vb.pp("lstm")).unwrap();
        // Same values for both: random weights and biases (candle-nn has two bias vectors;
        // the fused layer's one bias is their sum).
        let named = |suffix: &str| format!("lstm.{suffix}_l0");
        let values = [
            ("weight_ih", random(&mut rng, &[4 * hidden, input], 0.5)),
            ("weight_hh", random(&mut rng, &[4 * hidden, hidden], 0.5)),
            ("bias_ih", random(&mut rng, &[4 * hidden], 0.5)),
            ("bias_hh", random(&mut rng, &[4 * hidden], 0.5)),
        ];
        for (name, value) in &values {
            varmap.set_one(named(name), value).unwrap();
        }
        let x = Var::from_tensor(&random(&mut rng, &[batch, steps, input], 1.0)).unwrap();
        let upstream = random(&mut rng, &[batch, steps, hidden], 1.0);

        let states = reference.seq(x.as_tensor()).unwrap();
        let expected = reference.states_to_tensor(&states).unwrap();
        let expected_grads = (&expected * &upstream).unwrap().sum_all().unwrap().backward().unwrap();

        let w_ih = Var::from_tensor(&values[0].1).unwrap();
        let w_hh = Var::from_tensor(&values[1].1).unwrap();
        let bias = Var::from_tensor(&(&values[2].1 + &values[3].1).unwrap()).unwrap();
        let x_fused = Var::from_tensor(x.as_tensor()).unwrap();
        let got = fused_layer(x_fused.as_tensor(), w_ih.as_tensor(), w_hh.as_tensor(), bias.as_tensor());
        let got_grads = (&got * &upstream).unwrap().sum_all().unwrap().backward().unwrap();

        let case = format!("B={batch} T={steps} in={input} H={hidden}");
        assert!(relative_difference(&got, &expected) < 1e-4, "{case}: outputs differ");
        let vars = varmap.data().lock().unwrap();
        let pairs = [
            ("x", got_grads.get(&x_fused), expected_grads.get(&x)),
            ("W_ih", got_grads.get(&w_ih), expected_grads.get(&vars[&named("weight_ih")])),
            ("W_hh", got_grads.get(&w_hh), expected_grads.get(&vars[&named("weight_hh")])),
            ("bias", got_grads.get(&bias), expected_grads.get(&vars[&named("bias_ih")])),
        ];
        for (name, got, expected) in pairs {
            let difference = relative_difference(got.unwrap(), expected.unwrap());
            assert!(difference < 1e-4, "{case}: gradient of {name} differs by {difference:e}");
        }
    }
}

#[test]
fn fused_layer_gradients_match_finite_differences() {
    let (batch, steps, input, hidden) = (2, 4, 3, 2);
    let mut rng = SeededRng::new(3, "finite differences");
    let x = random(&mut rng, &[batch, steps, input], 1.0);
    let upstream = random(&mut rng, &[batch, steps, hidden], 1.0);
    let weights = [
        random(&mut rng, &[4 * hidden, input], 0.8),
        random(&mut rng, &[4 * hidden, hidden], 0.8),
        random(&mut rng, &[4 * hidden], 0.8),
    ];
    let loss = |w: &[Tensor]| -> f64 {
        let h = fused_layer(&x, &w[0], &w[1], &w[2]);
        f64::from((h * &upstream).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap())
    };
    let vars: Vec<Var> = weights.iter().map(|w| Var::from_tensor(w).unwrap()).collect();
    let h = fused_layer(&x, vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor());
    let grads = (h * &upstream).unwrap().sum_all().unwrap().backward().unwrap();
    let epsilon = 1e-2f32;
    for (which, var) in vars.iter().enumerate() {
        let analytic = grads.get(var).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let base = weights[which].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (element, &derivative) in analytic.iter().enumerate() {
            let nudged = |delta: f32| {
                let mut data = base.clone();
                data[element] += delta;
                let mut w = weights.to_vec();
                w[which] = Tensor::from_vec(data, weights[which].dims(), &Device::Cpu).unwrap();
                loss(&w)
            };
            let numeric = (nudged(epsilon) - nudged(-epsilon)) / (2.0 * f64::from(epsilon));
            let error = (numeric - f64::from(derivative)).abs();
            assert!(error < 5e-4 + 2e-3 * numeric.abs(), "weight {which}[{element}]: {derivative} vs {numeric}");
        }
    }
}

/// The whole model: the fused CPU path and the Candle-ops path (the one GPUs run) agree on
/// logits and on every weight's gradient, dropout included.
#[test]
fn fused_and_ops_paths_of_the_model_agree() {
    let hp =
        artifacts::Hyperparameters { vocab_size: 13, embedding: 6, hidden: 8, layers: 2, dropout: 0.3, seq_len: 9 };
    let model = LstmModel::new(hp, 5, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..4 * 9).map(|i| (i * 7 % 13) as u32).collect();
    let tokens = Tensor::from_vec(ids, (4, 9), &Device::Cpu).unwrap();
    let run = |path: LayerPath| {
        let mut rng = SeededRng::new(11, "dropout");
        let logits = model.logits_on(&tokens, Some((&mut rng, 0.3)), path).unwrap();
        let grads = logits.sqr().unwrap().mean_all().unwrap().backward().unwrap();
        let grads: Vec<Tensor> = model.vars().iter().map(|v| grads.get(v).unwrap().clone()).collect();
        (logits, grads)
    };
    let (fused_logits, fused_grads) = run(LayerPath::Fused);
    let (ops_logits, ops_grads) = run(LayerPath::CandleOps);
    assert!(relative_difference(&fused_logits, &ops_logits) < 1e-5);
    for ((name, fused), ops) in model.names().iter().zip(&fused_grads).zip(&ops_grads) {
        let difference = relative_difference(fused, ops);
        assert!(difference < 1e-4, "gradient of {name} differs by {difference:e}");
    }
}

#[test]
fn fused_cross_entropy_matches_candle_nn() {
    let (vocab, positions) = (37, 53);
    let mut rng = SeededRng::new(9, "cross entropy");
    let logits = Var::from_tensor(&(random(&mut rng, &[vocab, positions], 1.0) * 6.0).unwrap()).unwrap();
    let target_ids: Vec<u32> = (0..positions).map(|_| rng.below(vocab) as u32).collect();
    let targets = Tensor::from_slice(&target_ids, positions, &Device::Cpu).unwrap();
    let z = logits.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (loss, probabilities) = lstm::layers::cross_entropy_forward(&z, &target_ids, vocab);
    let reference = candle_nn::loss::cross_entropy(&logits.as_tensor().t().unwrap(), &targets).unwrap();
    let expected_loss = reference.to_scalar::<f32>().unwrap();
    assert!((loss - expected_loss).abs() < 1e-5 * expected_loss.abs(), "loss {loss} vs {expected_loss}");
    let gradient = lstm::layers::cross_entropy_backward(probabilities, &target_ids, 3.0);
    let got = Tensor::from_vec(gradient, (vocab, positions), &Device::Cpu).unwrap();
    let expected = (reference * 3.0).unwrap().backward().unwrap();
    let difference = relative_difference(&got, expected.get(&logits).unwrap());
    assert!(difference < 1e-5, "gradients differ by {difference:e}");
}

/// The CPU training step (hand-written, no autograd) against Candle's autograd on the
/// tensor-op path: the same loss and the same gradient for every weight, dropout included.
/// Tokens 11 and 12 never occur, so their embedding rows must get a zero gradient.
#[test]
fn the_cpu_training_step_matches_autograd() {
    let hp =
        artifacts::Hyperparameters { vocab_size: 13, embedding: 5, hidden: 7, layers: 2, dropout: 0.25, seq_len: 6 };
    let model = LstmModel::new(hp, 8, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..3 * 7).map(|i| (i * 5 % 11) as u32).collect();
    let all = Tensor::from_vec(ids, (3, 7), &Device::Cpu).unwrap();
    let (inputs, targets) = (all.narrow(1, 0, 6).unwrap(), all.narrow(1, 1, 6).unwrap());
    let mut rng = SeededRng::new(4, "dropout");
    let (loss, grads) = model.loss_and_gradients(&inputs, &targets, Some((&mut rng, 0.25))).unwrap();

    let mut rng = SeededRng::new(4, "dropout");
    let logits = model.logits_on(&inputs, Some((&mut rng, 0.25)), LayerPath::CandleOps).unwrap();
    assert_matches_autograd(&model, (loss, &grads), &logits, &targets);
    assert!(grads[0][11 * 5..].iter().all(|&g| g == 0.0), "unused tokens' embedding rows are untouched");
    let outside = Tensor::full(13u32, (3, 6), &Device::Cpu).unwrap();
    assert!(model.loss_and_gradients(&inputs, &outside, None).is_err(), "a target outside the vocabulary is refused");
}
