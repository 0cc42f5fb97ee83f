//! What the integration tests of the LSTM share.

use candle_core::{Device, Tensor};
use lstm::LstmModel;

/// max |a − b| / max |b|: the difference relative to the reference's scale.
pub fn relative_difference(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    diff / scale.max(1e-12)
}

/// Asserts that a CPU training step's `loss` and `grads` (in the order of the model's
/// weights) are Candle's autograd through `logits` (`[T·B, V]`, time-major) against
/// `targets` (`[B, T]`): the loss within 1e-5 and every gradient within 1e-4, relative.
pub fn assert_matches_autograd(
    model: &LstmModel,
    (loss, grads): (f32, &[Vec<f32>]),
    logits: &Tensor,
    targets: &Tensor,
) {
    let reference = candle_nn::loss::cross_entropy(logits, &lstm::time_major(targets).unwrap()).unwrap();
    let expected = reference.backward().unwrap();
    let reference = reference.to_scalar::<f32>().unwrap();
    assert!((loss - reference).abs() < 1e-5 * reference, "loss {loss} vs {reference}");
    for ((name, var), got) in model.names().iter().zip(model.vars()).zip(grads) {
        let got = Tensor::from_slice(got, var.dims(), &Device::Cpu).unwrap();
        let difference = relative_difference(&got, expected.get(var).unwrap());
        assert!(difference < 1e-4, "gradient of {name} differs by {difference:e}");
    }
}
