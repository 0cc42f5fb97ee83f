//! `precision = "auto"`: the products that are faster on this machine, measured rather than
//! guessed from the processor's flags. The same 2-core bench gives opposite answers on two
//! kinds of machine (bfloat16 trains at 2× float32's speed on an AMD Zen 4, at half of it on
//! an Intel Xeon with the same AVX-512 BF16 flag), so only a timing at the model's own
//! shapes can tell.

use crate::{LstmModel, Precision};
use candle_core::Result;
use std::time::Instant;

/// bfloat16 is chosen only when it is at least this much faster than float32. Timings on a
/// shared machine wander by a few per cent; a choice that flipped between two runs would
/// change the numbers that one seed gives, so a near tie goes to float32, the exact one.
pub const BF16_MARGIN: f64 = 1.10;

/// Each precision runs its work once to warm up (first touches of memory, the bfloat16
/// copies of the weights, the thread pool), then until this many seconds have passed.
const TRIAL_SECONDS: f64 = 0.25;

/// What a trial of the precisions measured, and what it chose.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PrecisionTrial {
    /// `"f32"` or `"bf16"`: the products the run uses.
    pub chosen: &'static str,
    /// What the rates count, e.g. `"targets"` or `"tokens"`.
    pub unit: &'static str,
    /// The rates measured; both `None` where the model cannot use bfloat16 products here
    /// (`bf16_unavailable` says why), so float32 is chosen without a race.
    pub f32_per_second: Option<f64>,
    pub bf16_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bf16_unavailable: Option<String>,
}

impl PrecisionTrial {
    /// The choice and the figures behind it, for the log and the page.
    pub fn summary(&self) -> String {
        let name = if self.chosen == "bf16" { "bfloat16" } else { "float32" };
        match (self.f32_per_second, self.bf16_per_second, &self.bf16_unavailable) {
            (Some(f32), Some(bf16), _) => format!(
                "{name}: {bf16:.0} {unit}/s in bfloat16 against {f32:.0} in float32 (bfloat16 is chosen when \
                 {:.0} % faster)",
                (BF16_MARGIN - 1.0) * 100.0,
                unit = self.unit
            ),
            (_, _, Some(why)) => format!("{name}: {why}"),
            _ => name.to_owned(),
        }
    }
}

/// Times `work` in float32 and in bfloat16 products, and leaves `model` set to the faster
/// (bfloat16 only when faster by [`BF16_MARGIN`]); where the model cannot use bfloat16
/// here, leaves it in float32 without timing anything. `work` does one round of what the
/// run will do, at the run's shapes, and returns how many `unit`s it did; it must leave the
/// weights as they were, so the trial changes nothing but the precision.
pub fn choose_precision(
    model: &mut LstmModel,
    unit: &'static str,
    mut work: impl FnMut(&LstmModel) -> Result<usize>,
) -> Result<PrecisionTrial> {
    if let Err(why) = model.set_precision(Precision::Bf16) {
        model.set_precision(Precision::F32)?;
        let unavailable = Some(why.to_string());
        return Ok(PrecisionTrial {
            chosen: "f32",
            unit,
            f32_per_second: None,
            bf16_per_second: None,
            bf16_unavailable: unavailable,
        });
    }
    let mut rate = |model: &mut LstmModel, precision: Precision| -> Result<f64> {
        model.set_precision(precision)?;
        work(model)?;
        let (started, mut done) = (Instant::now(), 0usize);
        while done == 0 || started.elapsed().as_secs_f64() < TRIAL_SECONDS {
            done += work(model)?;
        }
        Ok(done as f64 / started.elapsed().as_secs_f64())
    };
    let f32 = rate(model, Precision::F32)?;
    let bf16 = rate(model, Precision::Bf16)?;
    let chosen = if bf16 >= f32 * BF16_MARGIN { Precision::Bf16 } else { Precision::F32 };
    model.set_precision(chosen)?;
    Ok(PrecisionTrial {
        chosen: chosen.pick("f32", "bf16"),
        unit,
        f32_per_second: Some(f32),
        bf16_per_second: Some(bf16),
        bf16_unavailable: None,
    })
}

/// Sets the products a stage's setting asks for: `Some` precision by name (`"f32"`,
/// `"bf16"`; bfloat16 where it cannot run here falls back to float32 with a warning), `None`
/// for `"auto"` ([`choose_precision`] with `unit` and `work`). Returns one line saying what
/// was set and why, naming the setting `key`, for the log and the stage's report, and the
/// trial behind an automatic choice.
pub fn apply_precision_setting(
    model: &mut LstmModel,
    asked: Option<Precision>,
    key: &str,
    unit: &'static str,
    work: impl FnMut(&LstmModel) -> Result<usize>,
) -> Result<(String, Option<PrecisionTrial>)> {
    match asked {
        Some(precision) => {
            let name = precision.pick("float32", "bfloat16");
            if let Err(why) = model.set_precision(precision) {
                tracing::warn!("{key} = \"bf16\": {why}; computing in float32");
                model.set_precision(Precision::F32)?;
                return Ok((format!("float32 ({key} = \"bf16\", but {why})"), None));
            }
            Ok((format!("{name} ({key})"), None))
        }
        None => {
            let trial = choose_precision(model, unit, work)?;
            let line = format!("{} ({key} = \"auto\")", trial.summary());
            let stage = key.split('.').next().unwrap_or(key);
            tracing::info!("{stage}: products in {line}");
            Ok((line, Some(trial)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifacts::Hyperparameters;
    use candle_core::{Device, Tensor};

    #[test]
    fn the_trial_follows_its_rates_and_leaves_the_weights_as_they_were() {
        let hyperparameters =
            Hyperparameters { vocab_size: 11, embedding: 8, hidden: 32, layers: 2, dropout: 0.0, seq_len: 6 };
        let mut model = LstmModel::new(hyperparameters, 3, &Device::Cpu).unwrap();
        let before = model.to_named().unwrap();
        let tokens = Tensor::new(&[[1u32, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]], &Device::Cpu).unwrap();
        let targets = Tensor::new(&[[2u32, 3, 4, 5, 6, 7], [5, 4, 3, 2, 1, 0]], &Device::Cpu).unwrap();
        let trial = choose_precision(&mut model, "targets", |model| {
            model.loss_and_gradients(&tokens, &targets, None)?;
            Ok(12)
        })
        .unwrap();
        assert_eq!(model.precision().pick("f32", "bf16"), trial.chosen);
        match (trial.f32_per_second, trial.bf16_per_second) {
            (Some(f32), Some(bf16)) => assert_eq!(trial.chosen == "bf16", bf16 >= f32 * BF16_MARGIN, "{trial:?}"),
            // Why, in one line: no backtrace in the log or the report, even under RUST_BACKTRACE.
            _ => assert!(
                trial.chosen == "f32" && trial.bf16_unavailable.as_ref().is_some_and(|why| !why.contains('\n')),
                "{trial:?}"
            ),
        }
        assert!(model.to_named().unwrap() == before, "the trial changed the weights");
    }

    #[test]
    fn a_precision_asked_for_by_name_is_set_without_a_trial() {
        let hyperparameters =
            Hyperparameters { vocab_size: 5, embedding: 2, hidden: 4, layers: 1, dropout: 0.0, seq_len: 3 };
        let mut model = LstmModel::new(hyperparameters, 1, &Device::Cpu).unwrap();
        let (line, trial) =
            apply_precision_setting(&mut model, Some(Precision::F32), "compose.precision", "tokens", |_| {
                panic!("a named precision is not timed")
            })
            .unwrap();
        assert_eq!((line.as_str(), trial), ("float32 (compose.precision)", None));
        assert_eq!(model.precision(), Precision::F32);
    }
}
