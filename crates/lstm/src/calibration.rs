//! Temperature calibration: the one number by which a trained network's logits are divided
//! so that its probabilities are as sure as it is right, on pieces it was not trained on.
//!
//! A network trained with dropout and stopped at its best validation epoch is overconfident:
//! the base `beats` model's predicted distributions carry 1.5–1.6 nats of entropy where it
//! pays 1.75–1.9 nats on the pieces it reads, and sampled at temperature 1 it writes music
//! less varied than the music it learned from. Dividing every logit by one temperature T
//! (Guo et al. 2017, "On calibration of modern neural networks") fixes that without
//! touching the ranking of tokens; T is fitted on the validation pieces by the loss itself.
//!
//! The fit works in β = 1/T, where the mean cross-entropy over targets y with logits z
//!
//! ```text
//! L(β)   = mean[ log Σ_i exp(β·z_i) − β·z_y ]
//! L'(β)  = mean[ E_p[z] − z_y ]          p = softmax(β·z)
//! L''(β) = mean[ Var_p(z) ] ≥ 0
//! ```
//!
//! is convex, so Newton's step β ← β − L'/L'' from β = 1 reaches the minimum in a few
//! passes over the validation pieces, each pass one read of them (no logits are kept, so a
//! validation set of any size fits in memory).

use crate::{LaneWindow, LstmModel, Result, read_in_order};
use artifacts::DatasetArtifact;
use candle_core::Device;

/// Passes over the validation pieces at most; Newton's steps on this convex function are
/// below 1e-4 after three or four.
const MAX_PASSES: usize = 8;

/// The range β is kept in, so one odd validation set cannot scale the logits absurdly.
const BETA_RANGE: (f64, f64) = (0.25, 4.0);

/// What fitting the temperature found. Invariant: `loss_fitted <= loss_at_one` up to
/// rounding, since β = 1 is where the search starts and each step lowers a convex loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TemperatureFit {
    /// The temperature T = 1/β that divides the logits.
    pub temperature: f64,
    /// Mean cross-entropy (nats per target) of the logits as they are.
    pub loss_at_one: f64,
    /// Mean cross-entropy of the logits divided by `temperature`.
    pub loss_fitted: f64,
}

/// Running sums of L(β), L'(β) and L''(β) over targets.
#[derive(Clone, Copy, Debug, Default)]
struct Moments {
    loss: f64,
    slope: f64,
    curvature: f64,
    targets: usize,
}

impl Moments {
    /// Adds one target: the logits `row` and the id that came.
    fn add(&mut self, row: &[f32], target: usize, beta: f64) {
        let peak = f64::from(row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        // Moments of z under p = softmax(β·z), shifted by the peak for stability.
        let (mut sum, mut first, mut second) = (0.0f64, 0.0f64, 0.0f64);
        for &z in row {
            let z = f64::from(z) - peak;
            let weight = (beta * z).exp();
            sum += weight;
            first += weight * z;
            second += weight * z * z;
        }
        let mean = first / sum;
        let z_target = f64::from(row[target]) - peak;
        self.loss += sum.ln() - beta * z_target;
        self.slope += mean - z_target;
        self.curvature += second / sum - mean * mean;
        self.targets += 1;
    }

    /// `(L, L', L'')`, each the mean over the targets added.
    fn means(&self) -> (f64, f64, f64) {
        let n = self.targets.max(1) as f64;
        (self.loss / n, self.slope / n, self.curvature / n)
    }
}

/// Newton's method on the convex L(β) from β = 1, `moments(β)` giving `(L, L', L'')`.
fn newton(mut moments: impl FnMut(f64) -> Result<(f64, f64, f64)>) -> Result<TemperatureFit> {
    let mut beta = 1.0f64;
    let (mut loss, mut slope, mut curvature) = moments(beta)?;
    let loss_at_one = loss;
    for _ in 1..MAX_PASSES {
        if curvature <= 0.0 {
            break; // every target's logits are flat: no temperature changes anything
        }
        let next = (beta - slope / curvature).clamp(BETA_RANGE.0, BETA_RANGE.1);
        let converged = (next - beta).abs() < 1e-4;
        let (next_loss, next_slope, next_curvature) = moments(next)?;
        if next_loss > loss {
            break; // rounding at the minimum: keep the better β
        }
        (beta, loss, slope, curvature) = (next, next_loss, next_slope, next_curvature);
        if converged {
            break;
        }
    }
    Ok(TemperatureFit { temperature: 1.0 / beta, loss_at_one, loss_fitted: loss })
}

/// The temperature that minimises the cross-entropy of `model` over `batches` (see
/// [`crate::whole_pieces`]: the validation pieces read start to end, the state carried);
/// `None` when there are no batches. Each of Newton's steps reads `batches` once.
pub fn fit_temperature(
    model: &LstmModel,
    dataset: &DatasetArtifact,
    batches: &[Vec<LaneWindow>],
    device: &Device,
) -> Result<Option<TemperatureFit>> {
    if batches.is_empty() {
        return Ok(None);
    }
    let fit = newton(|beta| {
        let started = std::time::Instant::now();
        let mut moments = Moments::default();
        read_in_order(model, dataset, batches, device, |logits, expected| {
            let rows = logits.to_vec2::<f32>()?;
            for (row, &target) in rows.iter().zip(&expected.to_vec1::<u32>()?) {
                moments.add(row, target as usize, beta);
            }
            Ok(())
        })?;
        let (loss, slope, curvature) = moments.means();
        tracing::info!(
            "calibration: temperature {:.3}: validation loss {loss:.4} ({} targets read in {:.1} s)",
            1.0 / beta,
            moments.targets,
            started.elapsed().as_secs_f64()
        );
        Ok((loss, slope, curvature))
    })?;
    Ok(Some(fit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use seeded_rng::SeededRng;

    /// Targets drawn from softmax(z / T) for random logits z: the fit recovers T, and the
    /// same logits made twice as sure are fitted twice as hot to the same loss.
    #[test]
    fn the_fit_recovers_the_temperature_the_targets_were_drawn_at() {
        let mut rng = SeededRng::new(7, "calibration test");
        let drawn_at = 1.6;
        let rows: Vec<(Vec<f32>, usize)> = (0..20_000)
            .map(|_| {
                let row: Vec<f32> = (0..12).map(|_| rng.unit_f32() * 6.0 - 3.0).collect();
                let weights: Vec<f64> = row.iter().map(|&z| (f64::from(z) / drawn_at).exp()).collect();
                let mut pick = f64::from(rng.unit_f32()) * weights.iter().sum::<f64>();
                let target = weights.iter().position(|&w| {
                    pick -= w;
                    pick <= 0.0
                });
                (row, target.unwrap_or(11))
            })
            .collect();
        let fit_of = |scale: f32| {
            newton(|beta| {
                let mut moments = Moments::default();
                for (row, target) in &rows {
                    let scaled: Vec<f32> = row.iter().map(|&z| z * scale).collect();
                    moments.add(&scaled, *target, beta);
                }
                Ok(moments.means())
            })
            .unwrap()
        };
        let fit = fit_of(1.0);
        assert!((fit.temperature - drawn_at).abs() < 0.05, "{fit:?}");
        assert!(fit.loss_fitted < fit.loss_at_one, "{fit:?}");
        let surer = fit_of(2.0);
        assert!((surer.temperature - 2.0 * fit.temperature).abs() < 1e-3, "{surer:?} against {fit:?}");
        assert!((surer.loss_fitted - fit.loss_fitted).abs() < 1e-6, "{surer:?} against {fit:?}");
    }
}
