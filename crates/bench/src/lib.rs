//! `make bench`: how fast each stage runs on this machine, printed as a table and written
//! to `artifacts/bench.json`.
//!
//! Reads a folder of MIDI files (by default `../shared/data/piano`) and nothing else; the
//! training and generation figures use random tokens at the "seed config" (vocabulary 400,
//! embedding 128, 2 LSTM layers, batch 64, sequence 50, loss at every position), so they
//! depend only on the shapes, not on any data set.
//!
//! Key design decision: every figure is the median of several timed repetitions after an
//! untimed warm-up, and training is compared in the same process against candle-nn's LSTM
//! on the same shapes, optimizer and thread count, so the ratios hold for this machine
//! whatever its speed. The roofline is what the matrix products alone would cost at the
//! measured large-matmul rate: 6 floating-point operations per matmul weight per target
//! (2 forward, 4 backward), which no LSTM trainer doing all of that work can beat. This
//! project's first layer does less (its input projection once per distinct token, about
//! 7 % of that count at the seed config), so its share of the roofline flatters it by that much.

use artifacts::{Hyperparameters, NotesArtifact};
use candle_core::{DType, Device, Tensor};
use candle_nn::rnn::{LSTMConfig, RNN};
use candle_nn::{Module, VarBuilder, VarMap};
use lstm::adam::Adam;
use lstm::{Generator, LstmModel};
use rayon::prelude::*;
use seeded_rng::SeededRng;
use std::path::Path;
use std::time::Instant;

/// Everything `make bench` measures; written as `bench.json`.
#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    pub threads: usize,
    pub extract: Option<ExtractFigures>,
    pub encode: Option<EncodeFigures>,
    /// Large matrix product `[3200, 512] × [512, 2048]` through Candle, GFLOP/s, at the start.
    pub matmul_gflops: f64,
    pub training: Vec<TrainingFigures>,
    pub generation: Vec<GenerationFigures>,
}

#[derive(Debug, serde::Serialize)]
pub struct ExtractFigures {
    pub files: usize,
    pub notes: usize,
    pub notes_per_second: f64,
    pub files_per_second: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct EncodeFigures {
    pub tokens: usize,
    pub tokens_per_second: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct TrainingFigures {
    pub hidden: usize,
    /// `fused` (this project's CPU path) or `candle-nn` (candle_nn::rnn::LSTM).
    pub trainer: String,
    pub seconds_per_step: f64,
    pub targets_per_second: f64,
    /// The large-matmul rate around this row, GFLOP/s: the higher of the medians measured
    /// just before and just after it (this machine's speed drifts by ±15 % over minutes,
    /// so each row gets its own, and a slow moment cannot make the ratio look better).
    pub matmul_gflops: f64,
    /// Targets per second if only the matrix products ran, at that rate.
    pub roofline_targets_per_second: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct GenerationFigures {
    pub hidden: usize,
    pub streams: usize,
    pub tokens_per_second: f64,
}

/// The median of `repeats` timings of `work`, after `warmup` untimed runs.
pub fn median_seconds(warmup: usize, repeats: usize, mut work: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        work();
    }
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Parses every MIDI file under `folder` from memory, in parallel as the extract stage
/// does; `None` if the folder has no MIDI files.
pub fn extract(folder: &Path, limits: &config::ExtractConfig) -> Option<(ExtractFigures, NotesArtifact)> {
    let paths = music::files::find_midi_files(folder).ok()?;
    let files: Vec<(String, Vec<u8>)> =
        paths.iter().filter_map(|p| std::fs::read(p).ok().map(|bytes| (p.display().to_string(), bytes))).collect();
    if files.is_empty() {
        return None;
    }
    let options = limits.read_options();
    let parse = || -> Vec<Option<Vec<artifacts::Note>>> {
        files.par_iter().map(|(_, bytes)| music::midi_in::notes_of_midi(bytes, &options).ok()).collect()
    };
    let parsed = parse();
    let notes: usize = parsed.iter().flatten().map(Vec::len).sum();
    let seconds = median_seconds(1, 5, || {
        std::hint::black_box(parse());
    });
    let artifact = NotesArtifact {
        files: files
            .iter()
            .zip(parsed)
            .filter_map(|((path, bytes), notes)| {
                Some(artifacts::ExtractedFile {
                    path: path.clone(),
                    content_digest: artifacts::digest(bytes),
                    notes: notes?,
                })
            })
            .collect(),
        rejected: Vec::new(),
    };
    let figures = ExtractFigures {
        files: files.len(),
        notes,
        notes_per_second: notes as f64 / seconds,
        files_per_second: files.len() as f64 / seconds,
    };
    Some((figures, artifact))
}

/// Encodes the extracted notes with `config`'s encoding (augmentation included).
pub fn encode(config: &config::PipelineConfig, notes: &NotesArtifact) -> Option<EncodeFigures> {
    let dataset = encode::encode(config, notes).ok()?;
    let tokens = dataset.pieces.iter().map(|p| p.tokens.len()).sum();
    let seconds = median_seconds(1, 3, || {
        std::hint::black_box(encode::encode(config, notes).ok());
    });
    Some(EncodeFigures { tokens, tokens_per_second: tokens as f64 / seconds })
}

/// GFLOP/s of Candle's matmul on a large product, the rate the roofline assumes.
pub fn matmul_rate() -> candle_core::Result<f64> {
    let (m, k, n) = (3200, 512, 2048);
    let mut rng = SeededRng::new(1, "bench");
    let a = random(&mut rng, &[m, k])?;
    let b = random(&mut rng, &[k, n])?;
    let seconds = median_seconds(3, 41, || {
        std::hint::black_box(a.matmul(&b).expect("shapes fit"));
    });
    Ok(2.0 * (m * k * n) as f64 / seconds / 1e9)
}

fn random(rng: &mut SeededRng, shape: &[usize]) -> candle_core::Result<Tensor> {
    let count: usize = shape.iter().product();
    Tensor::from_vec((0..count).map(|_| rng.unit_f32() * 2.0 - 1.0).collect::<Vec<f32>>(), shape, &Device::Cpu)
}

/// The seed config's shapes at a given hidden size.
pub fn seed_config(hidden: usize) -> Hyperparameters {
    Hyperparameters { vocab_size: 400, embedding: 128, hidden, layers: 2, dropout: 0.0, seq_len: 50 }
}

/// Weights that take part in matrix products: every W_ih, W_hh and the output layer.
pub fn matmul_weights(hp: &Hyperparameters) -> usize {
    let lstm: usize =
        (0..hp.layers).map(|l| 4 * hp.hidden * (if l == 0 { hp.embedding } else { hp.hidden } + hp.hidden)).sum();
    lstm + hp.hidden * hp.vocab_size
}

/// A batch of random token ids: inputs `[B, T]` and the targets (inputs shifted by one).
fn token_batch(hp: &Hyperparameters, batch: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let mut rng = SeededRng::new(2, "bench tokens");
    let ids: Vec<u32> = (0..batch * (hp.seq_len + 1)).map(|_| rng.below(hp.vocab_size) as u32).collect();
    let all = Tensor::from_vec(ids, (batch, hp.seq_len + 1), &Device::Cpu)?;
    Ok((all.narrow(1, 0, hp.seq_len)?.contiguous()?, all.narrow(1, 1, hp.seq_len)?.contiguous()?))
}

/// Times `work` like [`median_seconds`], stopping at its first error.
fn median_seconds_of(
    warmup: usize,
    repeats: usize,
    mut work: impl FnMut() -> candle_core::Result<()>,
) -> candle_core::Result<f64> {
    let mut failure = None;
    let seconds = median_seconds(warmup, repeats, || {
        if failure.is_none() {
            failure = work().err();
        }
    });
    failure.map_or(Ok(seconds), Err)
}

/// Seconds per training step (forward, loss, backward, Adam) of this project's model.
pub fn train_fused(hp: &Hyperparameters, batch: usize, repeats: usize) -> candle_core::Result<f64> {
    let model = LstmModel::new(hp.clone(), 1, &Device::Cpu)?;
    let mut adam = Adam::new(model.vars(), 1e-3);
    let (inputs, targets) = token_batch(hp, batch)?;
    median_seconds_of(1, repeats, || {
        let (_, grads) = model.loss_and_gradients(&inputs, &targets, None)?;
        adam.update(model.vars(), &grads)
    })
}

/// Seconds per training step of the same network built from candle-nn's layers
/// (`Embedding`, two `candle_nn::rnn::LSTM` run with `seq`, `Linear`).
pub fn train_candle_nn(hp: &Hyperparameters, batch: usize, repeats: usize) -> candle_core::Result<f64> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let embedding = candle_nn::embedding(hp.vocab_size, hp.embedding, vb.pp("embedding"))?;
    let layers: Vec<candle_nn::rnn::LSTM> = (0..hp.layers)
        .map(|l| {
            let input = if l == 0 { hp.embedding } else { hp.hidden };
            candle_nn::rnn::lstm(input, hp.hidden, LSTMConfig::default(), vb.pp(format!("lstm{l}")))
        })
        .collect::<candle_core::Result<_>>()?;
    let head = candle_nn::linear(hp.hidden, hp.vocab_size, vb.pp("head"))?;
    let vars = varmap.all_vars();
    let mut adam = Adam::new(&vars, 1e-3);
    let (inputs, targets) = token_batch(hp, batch)?;
    median_seconds_of(1, repeats, || {
        let mut x = embedding.forward(&inputs)?;
        for layer in &layers {
            x = layer.states_to_tensor(&layer.seq(&x)?)?;
        }
        let logits = head.forward(&x)?;
        let loss = candle_nn::loss::cross_entropy(&logits.flatten_to(1)?, &targets.flatten_all()?)?;
        let grads = loss.backward()?;
        let grads: Vec<Vec<f32>> = vars
            .iter()
            .map(|v| grads.get(v).expect("every weight is used").flatten_all()?.to_vec1())
            .collect::<candle_core::Result<_>>()?;
        adam.update(&vars, &grads)
    })
}

/// Tokens per second generating `streams` sequences at once (greedy, so sampling costs
/// nothing beyond the network).
pub fn generate(hp: &Hyperparameters, streams: usize, tokens: usize) -> candle_core::Result<f64> {
    let model = LstmModel::new(hp.clone(), 1, &Device::Cpu)?;
    let mut generator = Generator::new(&model, streams)?;
    let mut next: Vec<u32> = (0..streams as u32).collect();
    // As compose runs it: the loop on a kernel thread.
    let seconds = lstm::on_kernel_threads(|| {
        median_seconds_of(1, 5, || {
            for _ in 0..tokens {
                let logits = generator.step(&next)?;
                for (stream, row) in logits.chunks_exact(hp.vocab_size).enumerate() {
                    next[stream] = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |m| m.0 as u32);
                }
            }
            Ok(())
        })
    })?;
    Ok((tokens * streams) as f64 / seconds)
}

/// The report as a plain-text table.
pub fn table(report: &BenchReport) -> String {
    let mut out = format!("pianola bench ({} threads)\n\n", report.threads);
    if let Some(e) = &report.extract {
        out += &format!(
            "extract   {:>12.0} notes/s {:>8.0} files/s   ({} files, {} notes)\n",
            e.notes_per_second, e.files_per_second, e.files, e.notes
        );
    }
    if let Some(e) = &report.encode {
        out += &format!("encode    {:>12.0} tokens/s   ({} tokens)\n", e.tokens_per_second, e.tokens);
    }
    out += &format!("matmul    {:>12.1} GFLOP/s  ([3200,512]×[512,2048] through Candle)\n\n", report.matmul_gflops);
    out += "training (vocabulary 400, embedding 128, 2 layers, batch 64, sequence 50)\n";
    out += "  H    trainer     ms/step   targets/s   matmul GFLOP/s   roofline   of roofline\n";
    for t in &report.training {
        out += &format!(
            "  {:<4} {:<10} {:>8.1} {:>11.0} {:>16.0} {:>10.0} {:>12.0} %\n",
            t.hidden,
            t.trainer,
            t.seconds_per_step * 1e3,
            t.targets_per_second,
            t.matmul_gflops,
            t.roofline_targets_per_second,
            100.0 * t.targets_per_second / t.roofline_targets_per_second
        );
    }
    for hidden in [256, 512] {
        let rate = |name: &str| {
            report.training.iter().find(|t| t.hidden == hidden && t.trainer == name).map(|t| t.targets_per_second)
        };
        if let (Some(fused), Some(reference)) = (rate("fused"), rate("candle-nn")) {
            out += &format!("  H={hidden}: fused is {:.1}× candle-nn\n", fused / reference);
        }
    }
    out += "\ngeneration (H = 512)\n";
    for g in &report.generation {
        out += &format!("  {:>2} stream(s) {:>10.0} tokens/s\n", g.streams, g.tokens_per_second);
    }
    out
}
