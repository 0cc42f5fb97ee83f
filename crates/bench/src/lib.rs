//! `make bench`: how fast each stage runs on this machine, printed as a table and written
//! to `artifacts/bench.json`.
//!
//! Reads a folder of MIDI files (by default `../shared/data/piano`) and nothing else. Extract
//! and encode are timed twice over: the stage binaries as a user runs them (files on disk →
//! `notes.bin` → `dataset.bin`, with the page cache warm and, for extract, cold) and MIDI
//! parsing alone on bytes already in memory. The training and generation figures use random
//! tokens at the "seed config" (vocabulary 400, embedding 128, 2 LSTM layers, batch 64,
//! sequence 50, loss at every position), so they depend only on the shapes, not on any data.
//!
//! Key design decision: every figure is [`SAMPLES`] or more timed repetitions after an
//! untimed warm-up, reported as min / median / max, and training is compared in the same
//! process against candle-nn's LSTM on the same shapes, optimizer and thread count, so the
//! ratios hold for this machine whatever its speed. The stages are timed by running their
//! binaries, not by calling their libraries: a tool stands on the floor crates, never on a
//! stage's library, and a user waits for the whole binary. The roofline is what the matrix
//! products alone would cost at the measured large-matmul rate: 6 floating-point operations
//! per matmul weight per target (2 forward, 4 backward), which no LSTM trainer doing all of
//! that work can beat. This project's first layer does less (its input projection once per
//! distinct token, about 7 % of that count at the seed config), so its share of the
//! roofline flatters it by that much.

use artifacts::{DatasetArtifact, Hyperparameters, NotesArtifact};
use candle_core::{DType, Device, Tensor};
use candle_nn::rnn::{LSTMConfig, RNN};
use candle_nn::{Module, VarBuilder, VarMap};
use lstm::adam::Adam;
use lstm::{Generator, LstmModel};
use rayon::prelude::*;
use seeded_rng::SeededRng;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The fewest timed samples behind any figure (after an untimed warm-up).
pub const SAMPLES: usize = 10;

/// Everything `make bench` measures; written as `bench.json`.
#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    /// The processor, as [`processor`] names it: speed figures mean little without it.
    pub cpu: String,
    pub threads: usize,
    /// The shapes training and generation are timed at, for peers measuring the same.
    pub shapes: Shapes,
    pub extract: Option<ExtractFigures>,
    pub encode: Option<EncodeFigures>,
    /// Large matrix product `[3200, 512] × [512, 2048]` through Candle, GFLOP/s, at the start.
    pub matmul_gflops: f64,
    /// The same product read as bfloat16 (`products::bf16`), GFLOP/s; absent without AVX-512 BF16.
    pub matmul_bf16_gflops: Option<f64>,
    pub training: Vec<TrainingFigures>,
    /// Training at the shapes of the base model that `make` fine-tunes from; absent where
    /// that model could not be read.
    pub base_model: Option<BaseModelFigures>,
    pub generation: Vec<GenerationFigures>,
}

/// Training steps at a real model's own shapes: its vocabulary, embedding, units and
/// windows, and the dropout it trains with, which the bench's seed config leaves out
/// (and which the peers' rows do not measure, so there is no ratio here). Train's weight
/// drop is not in these steps.
#[derive(Debug, serde::Serialize)]
pub struct BaseModelFigures {
    /// The model file the shapes were read from.
    pub model: String,
    pub hyperparameters: Hyperparameters,
    pub batch: usize,
    /// `f32`, then `bf16` where the processor has it.
    pub steps: Vec<PrecisionSteps>,
}

/// Training steps in one precision: targets/s.
#[derive(Debug, serde::Serialize)]
pub struct PrecisionSteps {
    /// `f32` or `bf16`: how the products read their operands.
    pub precision: String,
    pub step: Timing,
}

/// The network and batch shapes of the training and generation figures.
#[derive(Debug, serde::Serialize)]
pub struct Shapes {
    pub vocab_size: usize,
    pub embedding: usize,
    pub layers: usize,
    pub batch: usize,
    pub seq_len: usize,
    pub generated_tokens: usize,
}

/// The spread of one figure over its samples. Invariant: `min ≤ median ≤ max`.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

/// Timed repetitions of one piece of work that handles `units` things (notes, tokens,
/// targets) each time: its seconds and its rate, each as min / median / max.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Timing {
    pub samples: usize,
    pub seconds: Spread,
    pub per_second: Spread,
}

impl Timing {
    fn of(units: usize, mut seconds: Vec<f64>) -> Self {
        seconds.sort_by(f64::total_cmp);
        let spread = Spread { min: seconds[0], median: seconds[seconds.len() / 2], max: seconds[seconds.len() - 1] };
        let rate = |s: f64| units as f64 / s;
        Timing {
            samples: seconds.len(),
            seconds: spread,
            per_second: Spread { min: rate(spread.max), median: rate(spread.median), max: rate(spread.min) },
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct ExtractFigures {
    pub files: usize,
    pub notes: usize,
    /// `music::midi_in` on every file's bytes already in memory, in parallel: notes/s.
    pub parse_in_memory: Timing,
    /// The `extract` binary, folder on disk → `notes.bin`, files in the page cache: notes/s.
    pub stage_warm: Option<Timing>,
    /// The same with the MIDI files evicted from the page cache before every sample.
    pub stage_cold: Option<Timing>,
    /// Why a stage figure is missing (no binary beside this one, no eviction on this OS).
    pub missing: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct EncodeFigures {
    pub tokens: usize,
    /// The `encode` binary, `notes.bin` → `dataset.bin` at the default settings: tokens/s.
    pub stage: Timing,
}

#[derive(Debug, serde::Serialize)]
pub struct TrainingFigures {
    pub hidden: usize,
    /// `fused` (this project's CPU path, float32), `fused bf16` (its products in bfloat16)
    /// or `candle-nn` (candle_nn::rnn::LSTM).
    pub trainer: String,
    /// Training steps: targets/s.
    pub step: Timing,
    /// The large-matmul rate around this row, GFLOP/s: the higher of the medians measured
    /// just before and just after it (a shared machine's speed drifts over minutes, so each
    /// row gets its own, and a slow moment cannot make the ratio look better).
    pub matmul_gflops: f64,
    /// Targets per second if only the matrix products ran, at that rate.
    pub roofline_targets_per_second: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct GenerationFigures {
    pub hidden: usize,
    pub streams: usize,
    /// `f32` or `bf16`: how the products read the weights.
    pub precision: String,
    /// Generated tokens/s, all streams together.
    pub run: Timing,
    /// Bytes of weights one step reads (every stream shares them): layer 0's W_hh, the
    /// joined W_ih and W_hh of the layers above and the output layer, in `precision`
    /// (layer 0's input projection is a table lookup of one row).
    pub weight_bytes_per_step: usize,
    /// GB/s at which all threads together read a buffer of that size, read just before
    /// (so from whichever cache holds it), each thread its own part, as generation does.
    pub read_gb_per_second: f64,
    /// The rate if reading the weights were all a step cost: `read_gb_per_second` /
    /// `weight_bytes_per_step` × `streams`.
    pub ceiling_tokens_per_second: f64,
}

/// `samples` timings of `work`, after `warmup` untimed runs.
pub fn time(warmup: usize, samples: usize, mut work: impl FnMut()) -> Vec<f64> {
    for _ in 0..warmup {
        work();
    }
    (0..samples.max(1))
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed().as_secs_f64()
        })
        .collect()
}

/// Times `work` like [`time`], stopping at its first error.
fn time_fallible<E>(warmup: usize, samples: usize, mut work: impl FnMut() -> Result<(), E>) -> Result<Vec<f64>, E> {
    let mut failure = None;
    let seconds = time(warmup, samples, || {
        if failure.is_none() {
            failure = work().err();
        }
    });
    failure.map_or(Ok(seconds), Err)
}

/// Parses every MIDI file under `folder` from memory, in parallel as the extract stage
/// does; `None` if the folder has no MIDI files. Returns the files read and the figures
/// (the stage figures still empty).
pub fn parse_in_memory(folder: &Path, limits: &config::ExtractConfig) -> Option<(Vec<PathBuf>, ExtractFigures)> {
    let paths = music::files::find_midi_files(folder).ok()?;
    let files: Vec<Vec<u8>> =
        paths.iter().filter_map(|p| artifacts::read_capped(p, limits.max_file_bytes).ok()).collect();
    if files.is_empty() {
        return None;
    }
    let options = limits.read_options();
    let parse = || -> usize {
        files.par_iter().filter_map(|bytes| music::midi_in::notes_of_midi(bytes, &options).ok()).map(|n| n.len()).sum()
    };
    let notes = parse();
    let seconds = time(1, SAMPLES, || {
        std::hint::black_box(parse());
    });
    let figures = ExtractFigures {
        files: files.len(),
        notes,
        parse_in_memory: Timing::of(notes, seconds),
        stage_warm: None,
        stage_cold: None,
        missing: Vec::new(),
    };
    Some((paths, figures))
}

/// Runs the `extract` and `encode` binaries that sit beside this one as a user runs them,
/// at the default settings (an empty config file), in a scratch folder under `work`.
pub struct Stages {
    binaries: PathBuf,
    work: PathBuf,
}

impl Stages {
    /// An error saying why when a stage binary is not beside this one (build them:
    /// `cargo build --release --bins`, which `make bench` does).
    pub fn beside_this_binary(work: PathBuf) -> Result<Self, String> {
        let me = std::env::current_exe().map_err(|e| format!("cannot locate the bench binary: {e}"))?;
        let binaries = me.parent().map(Path::to_path_buf).unwrap_or_default();
        for stage in ["extract", "encode"] {
            if !binaries.join(stage).is_file() {
                return Err(format!("no {stage} binary in {} (cargo build --release --bins)", binaries.display()));
            }
        }
        std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        artifacts::write_if_changed(&work.join("defaults.toml"), b"# every setting at its default\n")
            .map_err(|e| e.to_string())?;
        Ok(Stages { binaries, work })
    }

    fn notes_path(&self) -> PathBuf {
        self.work.join("notes.bin")
    }

    fn run(&self, stage: &str, input: &Path, output: &Path) -> Result<(), String> {
        // A byte-identical output is left untouched by the stages; removing it first makes
        // every sample write its artifact, as a first run does.
        let _ = std::fs::remove_file(output);
        let result = Command::new(self.binaries.join(stage))
            .arg("--config")
            .arg(self.work.join("defaults.toml"))
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(output)
            .env("RUST_LOG", "warn")
            .output()
            .map_err(|e| format!("{stage}: {e}"))?;
        if !result.status.success() {
            return Err(format!("{stage} failed: {}", String::from_utf8_lossy(&result.stderr).trim()));
        }
        Ok(())
    }

    /// The extract binary on `folder`, warm then cold; fills `figures`' stage fields.
    pub fn extract(&self, folder: &Path, files: &[PathBuf], figures: &mut ExtractFigures) -> Result<(), String> {
        let output = self.notes_path();
        let seconds = time_fallible(1, SAMPLES, || self.run("extract", folder, &output))?;
        let (notes, _) = artifacts::read_input::<NotesArtifact>(&output).map_err(|e| e.to_string())?;
        let notes = notes.files.iter().map(|f| f.notes.len()).sum();
        figures.stage_warm = Some(Timing::of(notes, seconds));
        match page_cache::can_evict() {
            Ok(()) => {
                let mut cold = Vec::with_capacity(SAMPLES);
                for _ in 0..SAMPLES {
                    page_cache::evict(files).map_err(|e| format!("evicting the corpus from the page cache: {e}"))?;
                    cold.extend(time_fallible(0, 1, || self.run("extract", folder, &output))?);
                }
                figures.stage_cold = Some(Timing::of(notes, cold));
            }
            Err(why) => figures.missing.push(format!("extract, cold: {why}")),
        }
        Ok(())
    }

    /// The encode binary on the `notes.bin` that [`Stages::extract`] wrote.
    pub fn encode(&self) -> Result<EncodeFigures, String> {
        let output = self.work.join("dataset.bin");
        let seconds = time_fallible(1, SAMPLES, || self.run("encode", &self.notes_path(), &output))?;
        let (dataset, _) = artifacts::read_input::<DatasetArtifact>(&output).map_err(|e| e.to_string())?;
        let tokens = dataset.pieces.iter().map(|p| p.tokens.len()).sum();
        Ok(EncodeFigures { tokens, stage: Timing::of(tokens, seconds) })
    }
}

impl Drop for Stages {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Dropping files from the page cache, so a "cold" sample reads them from the disk.
mod page_cache {
    use std::path::PathBuf;

    /// `Err` with the reason where this build cannot evict files.
    pub fn can_evict() -> Result<(), String> {
        if cfg!(target_os = "linux") { Ok(()) } else { Err("no posix_fadvise on this OS".into()) }
    }

    /// Asks the kernel to drop each file's cached pages (`POSIX_FADV_DONTNEED`): clean
    /// pages of a file go, with no root rights and nothing else on the machine disturbed.
    #[cfg(target_os = "linux")]
    pub fn evict(files: &[PathBuf]) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        for path in files {
            let file = std::fs::File::open(path)?;
            // SAFETY: the descriptor is open for the whole call; the call only advises the kernel.
            let code = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            if code != 0 {
                return Err(std::io::Error::from_raw_os_error(code));
            }
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    pub fn evict(_: &[PathBuf]) -> std::io::Result<()> {
        Err(std::io::Error::other("no posix_fadvise on this OS"))
    }
}

/// GFLOP/s of Candle's matmul on a large product, the rate the roofline assumes.
pub fn matmul_rate() -> candle_core::Result<f64> {
    let (m, k, n) = MATMUL_SHAPE;
    let mut rng = SeededRng::new(1, "bench");
    let a = random(&mut rng, &[m, k])?;
    let b = random(&mut rng, &[k, n])?;
    let seconds = time(3, 41, || {
        std::hint::black_box(a.matmul(&b).expect("shapes fit"));
    });
    Ok(Timing::of(2 * m * k * n, seconds).per_second.median / 1e9)
}

/// The same product with both operands read as bfloat16 (`products::bf16`), GFLOP/s; `None`
/// where the processor lacks AVX-512 BF16.
pub fn matmul_rate_bf16() -> Option<f64> {
    let (m, k, n) = MATMUL_SHAPE;
    let mut rng = SeededRng::new(1, "bench");
    let a: Vec<f32> = (0..m * k).map(|_| rng.unit_f32() * 2.0 - 1.0).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.unit_f32() * 2.0 - 1.0).collect();
    let threads = candle_core::utils::get_num_threads();
    let product = || products::bf16::product(products::Mat::dense(&a, m, k), products::Mat::dense(&b, k, n), threads);
    products::bf16::available().then(|| {
        let seconds = time(3, 41, || {
            std::hint::black_box(product());
        });
        Timing::of(2 * m * k * n, seconds).per_second.median / 1e9
    })
}

/// `[m, k] × [k, n]` of the matmul rates: one layer's input projection at H = 512 and a
/// batch of 64 × 50 positions.
const MATMUL_SHAPE: (usize, usize, usize) = (3200, 512, 2048);

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

/// This project's model at some shapes with its optimizer and one batch of random tokens:
/// what a timed training step runs.
pub struct FusedTrainer {
    hp: Hyperparameters,
    model: LstmModel,
    adam: Adam,
    inputs: Tensor,
    targets: Tensor,
    dropout_rng: SeededRng,
}

impl FusedTrainer {
    /// A fresh model of `hp` (its dropout applied in every step), products in `precision`.
    pub fn new(hp: &Hyperparameters, batch: usize, precision: lstm::Precision) -> candle_core::Result<Self> {
        let mut model = LstmModel::new(hp.clone(), 1, &Device::Cpu)?;
        model.set_precision(precision)?;
        let adam = Adam::new(model.vars(), 1e-3);
        let (inputs, targets) = token_batch(hp, batch)?;
        Ok(FusedTrainer {
            hp: hp.clone(),
            model,
            adam,
            inputs,
            targets,
            dropout_rng: SeededRng::new(2, "bench dropout"),
        })
    }

    /// One training step: forward, loss, backward, Adam.
    pub fn step(&mut self) -> candle_core::Result<()> {
        let dropout = (self.hp.dropout > 0.0).then_some((&mut self.dropout_rng, self.hp.dropout));
        let (_, grads) = self.model.loss_and_gradients(&self.inputs, &self.targets, dropout)?;
        self.adam.update(self.model.vars(), &grads)
    }

    /// Targets one step trains on.
    pub fn targets(&self) -> usize {
        self.inputs.elem_count()
    }
}

/// Training steps (forward, loss, backward, Adam) of this project's model, its products in
/// `precision`: targets/s.
pub fn train_fused(
    hp: &Hyperparameters,
    batch: usize,
    samples: usize,
    precision: lstm::Precision,
) -> candle_core::Result<Timing> {
    let mut trainer = FusedTrainer::new(hp, batch, precision)?;
    let seconds = time_fallible(1, samples, || trainer.step())?;
    Ok(Timing::of(trainer.targets(), seconds))
}

/// Training steps of the seed config on request, one at a time, so a peer's benchmark can
/// take its own steps between ours and both sides meet the same moments of a machine whose
/// speed drifts (`make bench-peers`). Each line of `requests` is `HIDDEN PRECISION`
/// (`512 f32`, `256 bf16`); the first request for a pair builds its model and runs an
/// untimed warm-up step. Each is answered with one line: the step's seconds, or `error: …`
/// for a request that cannot be served. Ends at the end of `requests`.
pub fn serve_training_steps(
    requests: impl std::io::BufRead,
    mut answers: impl std::io::Write,
    batch: usize,
) -> std::io::Result<()> {
    let mut trainers: Vec<((usize, lstm::Precision), FusedTrainer)> = Vec::new();
    for request in requests.lines() {
        let answer = match step_on_request(&request?, &mut trainers, batch) {
            Ok(seconds) => seconds.to_string(),
            Err(reason) => format!("error: {reason}"),
        };
        writeln!(answers, "{answer}")?;
        answers.flush()?;
    }
    Ok(())
}

/// One [`serve_training_steps`] request: the seconds of one step of its trainer, built and
/// warmed up (one untimed step) into `trainers` on its first request.
fn step_on_request(
    request: &str,
    trainers: &mut Vec<((usize, lstm::Precision), FusedTrainer)>,
    batch: usize,
) -> Result<f64, String> {
    let key = parse_step_request(request)?;
    let index = match trainers.iter().position(|(k, _)| *k == key) {
        Some(index) => index,
        None => {
            let mut trainer = FusedTrainer::new(&seed_config(key.0), batch, key.1).map_err(|e| e.to_string())?;
            trainer.step().map_err(|e| e.to_string())?;
            trainers.push((key, trainer));
            trainers.len() - 1
        }
    };
    let started = Instant::now();
    trainers[index].1.step().map_err(|e| e.to_string())?;
    Ok(started.elapsed().as_secs_f64())
}

/// `HIDDEN PRECISION` of a [`serve_training_steps`] request.
fn parse_step_request(request: &str) -> Result<(usize, lstm::Precision), String> {
    let mut words = request.split_whitespace();
    let hidden = words.next().and_then(|w| w.parse::<usize>().ok()).filter(|&h| (1..=4096).contains(&h));
    let precision = match words.next() {
        Some("f32") => Some(lstm::Precision::F32),
        Some("bf16") => Some(lstm::Precision::Bf16),
        _ => None,
    };
    match (hidden, precision, words.next()) {
        (Some(hidden), Some(precision), None) => Ok((hidden, precision)),
        _ => Err(format!("expected `HIDDEN f32|bf16`, got `{request}`")),
    }
}

/// Training steps of the same network built from candle-nn's layers (`Embedding`, two
/// `candle_nn::rnn::LSTM` run with `seq`, `Linear`): targets/s.
pub fn train_candle_nn(hp: &Hyperparameters, batch: usize, samples: usize) -> candle_core::Result<Timing> {
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
    let seconds = time_fallible(1, samples, || {
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
    })?;
    Ok(Timing::of(batch * hp.seq_len, seconds))
}

/// Generating `tokens` tokens in each of `streams` sequences at once (greedy, so sampling
/// costs nothing beyond the network), products in `precision`: tokens/s, all streams together.
pub fn generate(
    hp: &Hyperparameters,
    streams: usize,
    tokens: usize,
    precision: lstm::Precision,
) -> candle_core::Result<Timing> {
    let mut model = LstmModel::new(hp.clone(), 1, &Device::Cpu)?;
    model.set_precision(precision)?;
    let mut generator = Generator::new(&model, streams)?;
    let mut next: Vec<u32> = (0..streams as u32).collect();
    // As compose runs it: the loop on a kernel thread.
    let seconds = lstm::on_kernel_threads(|| {
        time_fallible(1, SAMPLES, || -> candle_core::Result<()> {
            for _ in 0..tokens {
                let logits = generator.step(&next)?;
                for (stream, row) in logits.chunks_exact(hp.vocab_size).enumerate() {
                    next[stream] = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |m| m.0 as u32);
                }
            }
            Ok(())
        })
    })?;
    Ok(Timing::of(tokens * streams, seconds))
}

/// See [`GenerationFigures::weight_bytes_per_step`].
pub fn generation_weight_bytes(hp: &Hyperparameters, precision: lstm::Precision) -> usize {
    let weights = 4 * hp.hidden * hp.hidden + (1..hp.layers).map(|_| 8 * hp.hidden * hp.hidden).sum::<usize>();
    (weights + hp.hidden * hp.vocab_size) * precision.pick(4, 2)
}

/// See [`GenerationFigures::read_gb_per_second`]: the median of 41 samples, each reading
/// the buffer 16 times.
pub fn read_bandwidth(bytes: usize) -> f64 {
    const READS: usize = 16;
    let threads = candle_core::utils::get_num_threads().max(1);
    let buffer = vec![1.0f32; bytes.div_ceil(4)];
    let part = buffer.len().div_ceil(threads).max(16);
    let Ok(pool) = rayon::ThreadPoolBuilder::new().num_threads(threads).build() else { return 0.0 };
    // Sixteen running sums, so the compiler keeps them in vector registers and the loads,
    // not the additions, set the pace.
    let sum = |xs: &[f32]| {
        let mut lanes = [0.0f32; 16];
        for chunk in xs.chunks_exact(16) {
            for (lane, x) in lanes.iter_mut().zip(chunk) {
                *lane += x;
            }
        }
        lanes.iter().sum::<f32>()
    };
    let seconds = time(3, 41, || {
        pool.install(|| {
            for _ in 0..READS {
                std::hint::black_box(buffer.par_chunks(part).map(sum).sum::<f32>());
            }
        })
    });
    Timing::of(READS * bytes, seconds).per_second.median / 1e9
}

/// The processor's model name, family and model numbers, and which of the instruction
/// sets the products choose between it has (AVX2, AVX-512, AVX-512 BF16 and FP16, AMX),
/// from `/proc/cpuinfo`; the kind of machine decides which precision is faster.
pub fn processor() -> String {
    // A few KB a core; 16 MB covers any machine.
    let Ok(bytes) = artifacts::read_capped(Path::new("/proc/cpuinfo"), 16 << 20) else {
        return "unknown (no /proc/cpuinfo)".into();
    };
    let info = String::from_utf8_lossy(&bytes);
    let field = |name: &str| {
        info.lines()
            .find(|line| line.split(':').next().is_some_and(|key| key.trim() == name))
            .and_then(|line| line.split_once(':'))
            .map_or(String::new(), |(_, value)| value.trim().to_owned())
    };
    let flags = field("flags");
    let has: Vec<&str> = ["avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"]
        .into_iter()
        .filter(|flag| flags.split_whitespace().any(|f| f == *flag))
        .collect();
    format!(
        "{} (family {}, model {}); {}",
        field("model name"),
        field("cpu family"),
        field("model"),
        if has.is_empty() { "none of avx2, avx512f, avx512_bf16, avx512_fp16, amx".into() } else { has.join(" ") }
    )
}

/// `min  median  max` of a rate, each right-aligned in `width`.
fn spread(rate: &Spread, width: usize) -> String {
    format!("{:>width$.0} {:>width$.0} {:>width$.0}", rate.min, rate.median, rate.max)
}

/// The report as a plain-text table: each figure's rate as min / median / max of its samples.
pub fn table(report: &BenchReport) -> String {
    let mut out = format!("pianola bench ({} threads; every rate: min, median, max of its samples)\n", report.threads);
    out += &format!("processor: {}\n\n", report.cpu);
    if let Some(e) = &report.extract {
        out += &format!("extract ({} files, {} notes), notes/s\n", e.files, e.notes);
        out += &format!("  parse in memory       {}\n", spread(&e.parse_in_memory.per_second, 11));
        for (name, figure) in [("stage, warm cache   ", &e.stage_warm), ("stage, cold cache   ", &e.stage_cold)] {
            if let Some(timing) = figure {
                out += &format!("  {name}  {}\n", spread(&timing.per_second, 11));
            }
        }
        for why in &e.missing {
            out += &format!("  not measured: {why}\n");
        }
    }
    if let Some(e) = &report.encode {
        out += &format!("encode ({} tokens), tokens/s\n", e.tokens);
        out += &format!("  stage                 {}\n", spread(&e.stage.per_second, 11));
    }
    let s = &report.shapes;
    if !report.training.is_empty() {
        out += &format!("\nmatmul {:.1} GFLOP/s ([3200,512]×[512,2048] through Candle)", report.matmul_gflops);
        if let Some(rate) = report.matmul_bf16_gflops {
            out += &format!(", {rate:.1} GFLOP/s in bfloat16");
        }
        out += "\n\n";
        out += &format!(
            "training (vocabulary {}, embedding {}, {} layers, batch {}, sequence {}), targets/s\n",
            s.vocab_size, s.embedding, s.layers, s.batch, s.seq_len
        );
        out += "  H    trainer             min    median       max   matmul GFLOP/s   roofline   of roofline\n";
    }
    for t in &report.training {
        out += &format!(
            "  {:<4} {:<10} {} {:>16.0} {:>10.0} {:>12.0} %\n",
            t.hidden,
            t.trainer,
            spread(&t.step.per_second, 9),
            t.matmul_gflops,
            t.roofline_targets_per_second,
            100.0 * t.step.per_second.median / t.roofline_targets_per_second
        );
    }
    for hidden in [256, 512] {
        let rate = |name: &str| {
            report.training.iter().find(|t| t.hidden == hidden && t.trainer == name).map(|t| t.step.per_second.median)
        };
        if let (Some(fused), Some(reference)) = (rate("fused"), rate("candle-nn")) {
            out += &format!("  H={hidden}: fused is {:.1}× candle-nn (medians)\n", fused / reference);
        }
        if let (Some(fused), Some(bf16)) = (rate("fused"), rate("fused bf16")) {
            out += &format!("  H={hidden}: fused bf16 is {:.2}× fused float32 (medians)\n", bf16 / fused);
        }
    }
    if let Some(base) = &report.base_model {
        let hp = &base.hyperparameters;
        out += &format!(
            "\ntraining at the shapes of {} (vocabulary {}, embedding {}, H={}, {} layers, batch {}, \
             sequence {}, dropout {}), targets/s\n",
            base.model, hp.vocab_size, hp.embedding, hp.hidden, hp.layers, base.batch, hp.seq_len, hp.dropout
        );
        for PrecisionSteps { precision, step } in &base.steps {
            out += &format!("  {precision:<15} {}\n", spread(&step.per_second, 9));
        }
    }
    if !report.generation.is_empty() {
        out += &format!("\ngeneration ({} tokens per stream), tokens/s\n", s.generated_tokens);
        out += "                                 min    median       max   weights/step   read GB/s    ceiling   of ceiling\n";
    }
    for g in &report.generation {
        out += &format!(
            "  H={} {:>2} stream(s) {:<4}  {} {:>11.1} MB {:>11.0} {:>10.0} {:>10.0} %\n",
            g.hidden,
            g.streams,
            g.precision,
            spread(&g.run.per_second, 9),
            g.weight_bytes_per_step as f64 / 1e6,
            g.read_gb_per_second,
            g.ceiling_tokens_per_second,
            100.0 * g.run.per_second.median / g.ceiling_tokens_per_second
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_served_one_line_each_and_a_bad_request_is_answered_not_fatal() {
        let requests = "8 f32\n8 f32\n8\n8 f16\n16 f32\n";
        let mut answers = Vec::new();
        serve_training_steps(requests.as_bytes(), &mut answers, 4).unwrap();
        let answers = String::from_utf8(answers).unwrap();
        let lines: Vec<&str> = answers.lines().collect();
        assert_eq!(lines.len(), 5, "{answers}");
        for &i in &[0, 1, 4] {
            assert!(lines[i].parse::<f64>().is_ok_and(|s| s > 0.0), "{answers}");
        }
        assert!(lines[2].starts_with("error: expected `HIDDEN f32|bf16`") && lines[3].starts_with("error:"));
    }
}
