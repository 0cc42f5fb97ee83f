//! Stage 3, `train`: `dataset.bin` in, `model.bin` out.
//!
//! Trains the [`lstm::LstmModel`] to predict the next token at every position of every
//! training window, with cross-entropy loss and [`lstm::adam::Adam`], for a configured number of
//! epochs, measuring the validation loss and accuracy after each. One training step:
//!
//! ```text
//! logits = model(inputs)                       forward, one row of V scores per position
//! loss   = mean cross-entropy(logits, targets) over all B·T positions
//! grads  = ∂loss/∂weights                      backward (hand-written on the CPU, see lstm::fused)
//! grads  = clip to global norm                 guards against exploding gradients
//! adam.update(weights, grads)
//! average += (1 − d)·(weights − average)       with train.ema_decay = d: validation reads,
//!                                               and the model keeps, the average (average.rs)
//! ```
//!
//! Key design decision: the loss is taken at every position of a window, not only its last.
//! The forward pass computes all T outputs anyway, so this gives T times more training
//! signal for the same compute; the model still learns exactly "predict the next element".
//! The order of windows and the dropout masks come from the seed, so a run is reproducible.
//!
//! After the last epoch the best epoch's logits are divided by the one temperature that
//! fits the validation pieces best ([`calibrate`], `train.calibrate`): a network stopped at
//! its best validation loss is surer than it is right, and sampled as it stands it writes
//! thinner, busier music than it learned from.

pub mod average;
pub mod checkpoint;

use artifacts::{
    BestWeights, Calibration, CheckpointArtifact, DatasetArtifact, EpochRecord, EpochTiming, Hyperparameters,
    InputDigest, ModelArtifact, Split,
};
use average::WeightAverage;
use candle_core::{D, Device};
pub use checkpoint::{checkpoint_path, interrupt_on_signals};
use config::{PipelineConfig, Section};
use lstm::adam::{self, Adam};
use lstm::{LaneStates, LaneWindow, LstmModel, Precision, StreamState};
use seeded_rng::SeededRng;
use stage_cli::Progress;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Debug)]
pub enum TrainError {
    Artifact(artifacts::ArtifactError),
    Candle(candle_core::Error),
    /// The loss became NaN or infinite: the weights are no longer usable.
    Diverged {
        epoch: usize,
    },
    /// Stopped by a signal after saving this checkpoint.
    Interrupted {
        checkpoint: PathBuf,
    },
    /// `train.init` names a model this run cannot start from.
    IncompatibleInit {
        path: PathBuf,
        detail: String,
    },
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Artifact(e) => e.fmt(f),
            TrainError::Candle(e) => write!(f, "tensor computation failed: {e}"),
            TrainError::Diverged { epoch } => write!(
                f,
                "training diverged in epoch {epoch} (the loss is not finite); lower train.learning_rate \
                 or set train.grad_clip (the last checkpoint, if any, is kept)"
            ),
            TrainError::Interrupted { checkpoint } => write!(
                f,
                "interrupted: progress saved to {}; run train (or make) again to resume",
                checkpoint.display()
            ),
            TrainError::IncompatibleInit { path, detail } => write!(
                f,
                "train.init = {}: cannot start from this model: {detail}; set train.init = \"\" to train \
                 from scratch",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TrainError {}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Candle(e)
    }
}

/// Runs the stage: reads `input` (dataset.bin) and, with `train.init`, the model to start
/// from; trains; writes `output` (model.bin), without Adam's moments when `weights_only`.
///
/// Progress is saved to `<output>.checkpoint` as configured, when `interrupt` is set (by
/// Ctrl-C or SIGTERM, see [`interrupt_on_signals`]) and when the time budget
/// (`train.max_minutes`) runs out; a later run with the same data and the same settings
/// that shape the weights resumes from it, and ends with exactly the weights of an
/// uninterrupted run. A run that completes its epochs removes the checkpoint.
pub fn run(
    config: &PipelineConfig,
    input: &Path,
    output: &Path,
    weights_only: bool,
    interrupt: &AtomicBool,
) -> Result<ModelArtifact, TrainError> {
    artifacts::refuse_input_as_output(output, &[input, &config.train.init]).map_err(TrainError::Artifact)?;
    let (dataset, dataset_digest) = artifacts::read_input::<DatasetArtifact>(input).map_err(TrainError::Artifact)?;
    let init = read_init(&config.train.init, &dataset, config)?;
    let device = {
        use lstm::Backend;
        lstm::select_device(config.runtime.device.pick(Backend::Auto, Backend::Cpu, Backend::Cuda, Backend::Metal))?
    };
    let checkpoint_path = checkpoint_path(output);
    let config_digest = config.section_digest(Section::Train);
    let (config, precision) = &settle_precision(config, &dataset, &device, &checkpoint_path)?;
    let mut identity = config.training_identity();
    identity.extend(init.as_ref().map(|(_, from)| ("train.init digest".to_owned(), artifacts::hex(&from.digest))));
    let resume = checkpoint::load_resumable(&checkpoint_path, &identity, &dataset_digest.digest);
    let start = match (resume, init) {
        (Some(checkpoint), _) => Start::Resume(Box::new(checkpoint)),
        (None, Some((model, from))) => Start::Init(Box::new(model), from),
        (None, None) => Start::Random,
    };
    let producer = concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION"));
    let mut inputs = vec![dataset_digest];
    inputs.extend(start.initialised_from().cloned());
    let mut save = |checkpoint: &CheckpointArtifact| {
        let checkpoint = CheckpointArtifact { settings: identity.clone(), ..checkpoint.clone() };
        artifacts::write(&checkpoint_path, &checkpoint, producer, config_digest, inputs.clone())
            .map(drop)
            .map_err(TrainError::Artifact)
    };
    let curve_path = output.with_file_name("training_curve.svg");
    let mut draw_curve = |history: &[EpochRecord], steps: &[(f64, f32)]| {
        let svg = pictures::training_curve(history, steps);
        artifacts::write_if_changed(&curve_path, svg.as_bytes()).map(drop).map_err(TrainError::Artifact)
    };
    let started = Instant::now();
    let hooks = Hooks { save: &mut save, interrupt, epoch_done: &mut draw_curve };
    let Trained { model, ending, timings } = train(config, &dataset, &device, start, hooks).map_err(|e| match e {
        TrainError::Interrupted { .. } => TrainError::Interrupted { checkpoint: checkpoint_path.clone() },
        other => other,
    })?;

    let seconds = started.elapsed().as_secs_f64();
    let report = TrainReport::new(&model, (&timings, seconds), &device, &config.train, ending, precision.clone());
    let without_moments;
    let stored = if weights_only {
        without_moments = model.clone().weights_only();
        &without_moments
    } else {
        &model
    };
    let outcome = artifacts::write_with_report(output, &report, || {
        artifacts::write(output, stored, producer, config_digest, inputs)
    })
    .map_err(TrainError::Artifact)?;
    match ending {
        Ending::Completed | Ending::Patience => {
            artifacts::remove_if_present(&checkpoint_path).map_err(TrainError::Artifact)?
        }
        Ending::TimeBudget => tracing::info!(
            "train: stopped at the time budget of {} minutes; raise train.max_minutes (or 0 = no limit) and \
             run again to continue from {}",
            config.train.max_minutes,
            checkpoint_path.display()
        ),
    }
    if let Some(best) = model.history.iter().find(|e| Some(e.epoch) == report.best_epoch) {
        tracing::info!(
            "train: best validation loss {:.3} in epoch {} of {}; {:.0} s in all; curve in {}",
            best.validation_loss.unwrap_or(f32::NAN),
            best.epoch,
            model.history.len(),
            report.seconds,
            curve_path.display()
        );
    }
    stage_cli::log_outcome(output, outcome);
    Ok(model)
}

/// The config with `train.precision` settled to `"f32"` or `"bf16"`, and what the report
/// says of it. `"auto"` takes the choice a checkpoint of this run recorded, so a resumed run
/// computes as the run it continues; otherwise it times training steps (forward and
/// backward, no update) on the first training windows in each precision, on a model of
/// this run's shape, and takes the faster.
fn settle_precision(
    config: &PipelineConfig,
    dataset: &DatasetArtifact,
    device: &Device,
    checkpoint_path: &Path,
) -> Result<(PipelineConfig, PrecisionReport), TrainError> {
    let mut settled = config.clone();
    let asked = config
        .train
        .precision
        .named(Precision::F32, Precision::Bf16)
        .or_else(|| checkpoint::recorded_precision(checkpoint_path));
    let mut model = LstmModel::new(hyperparameters(&config.train, dataset), config.seed, device)?;
    // Only a choice still open times the first batch. Without a training window there is
    // nothing to time, and nothing to train either.
    let first_batch = match asked {
        Some(_) => None,
        None => lstm::window_batches(&dataset.windows(Split::Train), config.train.batch_size).into_iter().next(),
    };
    let asked = asked.or(first_batch.is_none().then_some(Precision::F32));
    let (inputs, expected) = lstm::batch(dataset, &first_batch.unwrap_or_default(), device)?;
    let mut dropout_rng = SeededRng::new(config.seed, "precision trial");
    let key = match (config.train.precision, asked) {
        (config::Precision::Auto, Some(_)) => "train.precision = \"auto\" as chosen when the checkpointed run began",
        _ => "train.precision",
    };
    let (summary, trial) = lstm::apply_precision_setting(&mut model, asked, key, "targets", |model| {
        let dropout = Some((&mut dropout_rng, config.train.dropout));
        model.carried_loss_and_gradients(&inputs, &expected, dropout, None)?;
        Ok(expected.elem_count())
    })?;
    settled.train.precision = model.precision().pick(config::Precision::F32, config::Precision::Bf16);
    Ok((settled, PrecisionReport { summary, trial }))
}

/// The network shape `[train]` asks for, on this data set's dictionary and windows.
fn hyperparameters(settings: &config::TrainConfig, dataset: &DatasetArtifact) -> Hyperparameters {
    Hyperparameters {
        vocab_size: dataset.vocabulary.len(),
        embedding: settings.embedding,
        hidden: settings.hidden,
        layers: settings.layers,
        dropout: settings.dropout,
        seq_len: dataset.seq_len,
    }
}

/// The model named by `train.init` and its digest, checked against the data set and the
/// network shape in `[train]`; `None` when `path` is empty (train from scratch).
fn read_init(
    path: &Path,
    dataset: &DatasetArtifact,
    config: &PipelineConfig,
) -> Result<Option<(ModelArtifact, InputDigest)>, TrainError> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let (model, from) = artifacts::read_input::<ModelArtifact>(path).map_err(TrainError::Artifact)?;
    let incompatible = |detail: String| TrainError::IncompatibleInit { path: path.to_path_buf(), detail };
    if model.encoding != dataset.encoding {
        return Err(incompatible(format!(
            "it was trained on the encoding {:?}, the data set is encoded as {:?}",
            model.encoding, dataset.encoding
        )));
    }
    if model.vocabulary != dataset.vocabulary {
        return Err(incompatible(format!(
            "its dictionary ({} tokens) differs from the data set's ({} tokens)",
            model.vocabulary.len(),
            dataset.vocabulary.len()
        )));
    }
    let shape = &model.hyperparameters;
    let train = &config.train;
    for (key, theirs, ours) in [
        ("train.embedding", shape.embedding, train.embedding),
        ("train.hidden", shape.hidden, train.hidden),
        ("train.layers", shape.layers, train.layers),
    ] {
        if theirs != ours {
            return Err(incompatible(format!("it has {key} = {theirs}, this config says {ours}")));
        }
    }
    tracing::info!(
        "train: starting from the weights of {} ({} epochs of training)",
        path.display(),
        model.history.len()
    );
    Ok(Some((model, from)))
}

/// What a run starts from.
pub enum Start {
    /// Random weights drawn from the seed.
    Random,
    /// The weights of another model (`train.init`), with a fresh optimizer.
    Init(Box<ModelArtifact>, InputDigest),
    /// A checkpoint of this very run, continued exactly.
    Resume(Box<CheckpointArtifact>),
}

impl Start {
    /// The model whose weights this run's weights descend from, if any.
    fn initialised_from(&self) -> Option<&InputDigest> {
        match self {
            Start::Random => None,
            Start::Init(_, from) => Some(from),
            Start::Resume(checkpoint) => checkpoint.model.initialised_from.as_ref(),
        }
    }
}

/// Why a run stopped without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Every epoch ran.
    Completed,
    /// `train.patience` epochs in a row brought no lower validation loss.
    Patience,
    /// `train.max_minutes` ran out; the checkpoint holds the place to continue from.
    TimeBudget,
}

impl Ending {
    /// Why training stopped, in words, for the report.
    pub fn describe(self, settings: &config::TrainConfig) -> String {
        match self {
            Ending::Completed => format!("all {} epochs (train.epochs) ran", settings.epochs),
            Ending::Patience => {
                format!("{} epochs in a row brought no lower validation loss (train.patience)", settings.patience)
            }
            Ending::TimeBudget => format!(
                "the budget of {} minutes (train.max_minutes) ran out; running train again continues",
                settings.max_minutes
            ),
        }
    }
}

/// What one run did: written as `model.report.json`.
#[derive(Debug, serde::Serialize)]
pub struct TrainReport {
    pub parameters: usize,
    pub device: String,
    pub threads: usize,
    /// Wall-clock seconds of this run (a resumed run counts from its restart).
    pub seconds: f64,
    /// The model the weights started from (`train.init`), if any.
    pub initialised_from: Option<String>,
    /// `train.credit`: who made the training data, and its license.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub credit: String,
    /// The epoch with the lowest validation loss, if there is a validation set.
    pub best_epoch: Option<usize>,
    /// Why training stopped (see [`Ending::describe`]).
    pub stopped: String,
    pub history: Vec<EpochReport>,
    /// The products the training step computed in, and why.
    pub precision: PrecisionReport,
    /// The temperature folded into the output layer after training (`train.calibrate`).
    pub calibration: Option<Calibration>,
}

/// How `train.precision` was settled: one line, and with `"auto"` the rates measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PrecisionReport {
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial: Option<lstm::PrecisionTrial>,
}

/// One epoch in the report: what it learned ([`EpochRecord`]) and how long it took.
#[derive(Debug, serde::Serialize)]
pub struct EpochReport {
    #[serde(flatten)]
    pub record: EpochRecord,
    pub seconds: Option<f64>,
    pub targets_per_second: Option<f64>,
}

impl TrainReport {
    fn new(
        model: &ModelArtifact,
        (timings, seconds): (&[EpochTiming], f64),
        device: &Device,
        settings: &config::TrainConfig,
        ending: Ending,
        precision: PrecisionReport,
    ) -> Self {
        let best_epoch = model
            .history
            .iter()
            .filter_map(|e| e.validation_loss.map(|v| (e.epoch, v)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(epoch, _)| epoch);
        TrainReport {
            parameters: model.weights.iter().map(|w| w.data.len()).sum(),
            device: format!("{device:?}"),
            threads: candle_core::utils::get_num_threads(),
            seconds,
            initialised_from: model
                .initialised_from
                .as_ref()
                .map(|from| format!("{} (BLAKE3 {})", from.name, artifacts::hex(&from.digest))),
            credit: settings.credit.clone(),
            best_epoch,
            stopped: ending.describe(settings),
            history: model
                .history
                .iter()
                .map(|record| {
                    let timing = timings.iter().find(|t| t.epoch == record.epoch);
                    EpochReport {
                        record: record.clone(),
                        seconds: timing.map(|t| t.seconds),
                        targets_per_second: timing.map(|t| t.targets_per_second),
                    }
                })
                .collect(),
            precision,
            calibration: model.calibration,
        }
    }
}

/// How a training run reports and saves its progress and learns that it should stop.
pub struct Hooks<'a> {
    /// Stores a checkpoint (atomically); called every `train.checkpoint_steps` steps,
    /// every `train.checkpoint_seconds`, when `interrupt` is set and when the time budget
    /// runs out.
    pub save: &'a mut dyn FnMut(&CheckpointArtifact) -> Result<(), TrainError>,
    /// Set from outside (a signal handler) to stop after the current step.
    pub interrupt: &'a AtomicBool,
    /// Called after every epoch with the history so far and this run's per-step losses as
    /// `(epoch position, loss)`, e.g. to redraw the training curve.
    pub epoch_done: &'a mut EpochDone<'a>,
}

/// The callback of [`Hooks::epoch_done`].
pub type EpochDone<'a> = dyn FnMut(&[EpochRecord], &[(f64, f32)]) -> Result<(), TrainError> + 'a;

/// What a run of [`train`] produced.
pub struct Trained {
    pub model: ModelArtifact,
    pub ending: Ending,
    /// How long each epoch took (those of earlier runs too, when resumed).
    pub timings: Vec<EpochTiming>,
}

/// Trains the model on `dataset` as `config.train` says, from `start`, and returns the
/// artifact, why training ended and how long each epoch took.
///
/// The model returned holds the weights of the epoch with the lowest validation loss (the
/// last epoch's without a validation set); with `train.patience`, training stops once that
/// many epochs in a row brought no lower loss. With a time budget (`train.max_minutes`),
/// the step that crosses it is the last: a checkpoint is saved there, the epoch so far is
/// validated and recorded, and the run ends with [`Ending::TimeBudget`].
pub fn train(
    config: &PipelineConfig,
    dataset: &DatasetArtifact,
    device: &Device,
    start: Start,
    mut hooks: Hooks,
) -> Result<Trained, TrainError> {
    let mut run = Run::begin(config, dataset, device, &start)?;
    for epoch in run.first_epoch()..=config.train.epochs {
        let out_of_time = run.train_epoch(epoch, &mut hooks)?;
        run.end_epoch(epoch, &mut hooks)?;
        if let Some(ending) = run.reason_to_stop(epoch, out_of_time) {
            return run.finish(ending);
        }
    }
    run.finish(Ending::Completed)
}

/// One training run in progress: the network and optimizer, the random streams, and what
/// the run has recorded so far. A resumed run starts with the checkpoint's values.
struct Run<'a> {
    config: &'a PipelineConfig,
    dataset: &'a DatasetArtifact,
    device: &'a Device,
    hyperparameters: Hyperparameters,
    initialised_from: Option<InputDigest>,
    resume: Option<&'a CheckpointArtifact>,
    model: LstmModel,
    optimizer: Adam,
    order_rng: SeededRng,
    dropout_rng: SeededRng,
    /// What each epoch shuffles: the training windows.
    train_windows: Vec<(usize, usize)>,
    /// The validation pieces in lanes, each read start to end, the same every epoch.
    validation: Vec<Vec<LaneWindow>>,
    /// With `train.carry_state`, the state each training window starts from.
    carried: Option<CarriedStates>,
    /// With `train.ema_decay`, the moving average of the weights: what is validated and kept.
    average: Option<WeightAverage>,
    history: Vec<EpochRecord>,
    timings: Vec<EpochTiming>,
    /// The weights after the epoch with the lowest validation loss so far.
    best: Option<BestWeights>,
    /// This run's steps; and each step's loss at its position in epochs, those of the runs
    /// it resumes included (for the curve).
    steps: usize,
    step_losses: Vec<(f64, f32)>,
    /// When, and after how many steps, the last checkpoint was saved.
    last_save: (Instant, usize),
    /// Training time before this run (from the checkpoint), and when this run started.
    trained_before: f64,
    started: Instant,
    /// The running totals of the epoch in progress: loss sum, targets, seconds before this run.
    epoch_totals: (f64, usize, f64),
    epoch_started: Instant,
}

impl<'a> Run<'a> {
    fn begin(
        config: &'a PipelineConfig,
        dataset: &'a DatasetArtifact,
        device: &'a Device,
        start: &'a Start,
    ) -> Result<Self, TrainError> {
        let settings = &config.train;
        let hyperparameters = hyperparameters(settings, dataset);
        let mut dropout_rng = SeededRng::new(config.seed, "dropout");
        let (model, optimizer, history) = starting_point(start, &hyperparameters, config, &mut dropout_rng, device)?;
        let resume = match start {
            Start::Resume(checkpoint) => Some(checkpoint.as_ref()),
            _ => None,
        };
        let average = (settings.ema_decay > 0.0)
            .then(|| WeightAverage::new(&model, settings.ema_decay, resume.map_or(&[], |c| &c.averaged_weights)))
            .transpose()?;
        let mut run = Run {
            config,
            dataset,
            device,
            initialised_from: start.initialised_from().cloned(),
            resume,
            model,
            optimizer,
            order_rng: SeededRng::new(config.seed, "order"),
            dropout_rng,
            train_windows: dataset.windows(Split::Train),
            validation: lstm::whole_pieces(dataset, Split::Validation, settings.batch_size),
            carried: settings.carry_state.then(|| {
                let stored = resume.map(|c| c.carried_state.clone()).unwrap_or_default();
                CarriedStates::new(dataset, settings, stored)
            }),
            average,
            history,
            timings: resume.map_or_else(Vec::new, |c| c.timings.clone()),
            best: resume.and_then(|c| c.best.clone()),
            steps: 0,
            step_losses: resume.map_or_else(Vec::new, |c| c.step_losses.clone()),
            last_save: (Instant::now(), 0),
            trained_before: resume.map_or(0.0, |c| c.trained_seconds),
            started: Instant::now(),
            epoch_totals: (0.0, 0, 0.0),
            epoch_started: Instant::now(),
            hyperparameters,
        };
        // The order of each epoch is a shuffle of the previous one: replay those before the
        // epoch we resume in, so it sees the order it would have seen.
        for _ in 1..run.first_epoch() {
            run.shuffle();
        }
        run.log_start();
        Ok(run)
    }

    fn first_epoch(&self) -> usize {
        self.resume.map_or(1, |c| c.epoch)
    }

    fn trained_seconds(&self) -> f64 {
        self.trained_before + self.started.elapsed().as_secs_f64()
    }

    fn log_start(&self) {
        let (hp, settings) = (&self.hyperparameters, &self.config.train);
        let parameters: usize = self.model.vars().iter().map(|v| v.elem_count()).sum();
        tracing::info!(
            "train: {parameters} parameters (vocabulary {}, embedding {}, {}×LSTM {}), {} training windows{}, \
             batch {}, {} epochs on {:?} with {} threads, {} products",
            hp.vocab_size,
            hp.embedding,
            hp.layers,
            hp.hidden,
            self.train_windows.len(),
            if settings.carry_state {
                ", each starting from the state the window before it last ended in (train.carry_state)"
            } else {
                ""
            },
            settings.batch_size,
            settings.epochs,
            self.device,
            candle_core::utils::get_num_threads(),
            self.model.precision().pick("float32", "bfloat16")
        );
    }

    /// The model as it stands, with everything a checkpoint needs besides the running totals.
    fn snapshot(&self) -> Result<ModelArtifact, TrainError> {
        Ok(ModelArtifact {
            hyperparameters: self.hyperparameters.clone(),
            encoding: self.dataset.encoding.clone(),
            vocabulary: self.dataset.vocabulary.clone(),
            weights: self.model.to_named()?,
            optimizer: self.optimizer.state(self.model.names()),
            initialised_from: self.initialised_from.clone(),
            weights_epoch: self.history.last().map_or(0, |e| e.epoch),
            history: self.history.clone(),
            calibration: None,
        })
    }

    /// The next epoch's order: a shuffle of the last one's.
    fn shuffle(&mut self) {
        self.order_rng.shuffle(&mut self.train_windows);
    }

    /// The batches of the next epoch: the shuffled windows.
    fn epoch_batches(&mut self) -> Vec<Vec<LaneWindow>> {
        self.shuffle();
        lstm::window_batches(&self.train_windows, self.config.train.batch_size)
    }

    /// Runs the steps of `epoch` (those not already in a resumed checkpoint), saving a
    /// checkpoint when one is due, on an interrupt, and when the time budget runs out.
    /// Returns whether the budget ran out.
    fn train_epoch(&mut self, epoch: usize, hooks: &mut Hooks) -> Result<bool, TrainError> {
        let settings = &self.config.train;
        self.epoch_started = Instant::now();
        let batches = self.epoch_batches();
        let resumed = self.resume.filter(|c| c.epoch == epoch);
        let skip = resumed.map_or(0, |c| c.batches_done);
        self.epoch_totals = resumed.map_or((0.0, 0, 0.0), |c| (c.epoch_loss_sum, c.epoch_targets, c.epoch_seconds));
        let budget_seconds = settings.max_minutes * 60.0;
        let mut progress = Progress::new("train", "batches", (batches.len() - skip.min(batches.len())) as u64);
        let plateaus = plateaus(&self.history);
        for (index, windows) in batches.iter().enumerate().skip(skip) {
            let rate = learning_rate(settings, (self.optimizer.steps_taken() + 1, batches.len()), plateaus);
            self.optimizer.set_learning_rate(rate);
            let (loss_value, count) = step(
                &self.model,
                &mut self.optimizer,
                (self.dataset, windows, self.carried.as_mut()),
                &mut self.dropout_rng,
                settings,
                self.device,
            )?
            .ok_or(TrainError::Diverged { epoch })?;
            if let Some(average) = &mut self.average {
                average.update(&self.model, self.optimizer.steps_taken())?;
            }
            self.epoch_totals.0 += loss_value * count as f64;
            self.epoch_totals.1 += count;
            self.steps += 1;
            let position = (epoch - 1) as f64 + (index + 1) as f64 / batches.len() as f64;
            self.step_losses.push((position, loss_value as f32));
            let (loss_sum, targets, _) = self.epoch_totals;
            progress.advance(1, || {
                let rate = (targets - resumed.map_or(0, |c| c.epoch_targets)) as f64
                    / self.epoch_started.elapsed().as_secs_f64().max(1e-9);
                format!(", loss {:.3}, {rate:.0} targets/s", loss_sum / targets as f64)
            });

            let interrupted = hooks.interrupt.load(Ordering::Relaxed);
            let out_of_time = budget_seconds > 0.0 && self.trained_seconds() >= budget_seconds;
            let due = (settings.checkpoint_steps > 0 && self.steps - self.last_save.1 >= settings.checkpoint_steps)
                || (settings.checkpoint_seconds > 0.0
                    && self.last_save.0.elapsed().as_secs_f64() >= settings.checkpoint_seconds);
            if interrupted || due || out_of_time {
                (hooks.save)(&self.checkpoint(epoch, index + 1)?)?;
                self.last_save = (Instant::now(), self.steps);
            }
            if interrupted {
                return Err(TrainError::Interrupted { checkpoint: PathBuf::new() });
            }
            if out_of_time {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Everything needed to continue `epoch` after its first `batches_done` batches.
    fn checkpoint(&self, epoch: usize, batches_done: usize) -> Result<CheckpointArtifact, TrainError> {
        let (epoch_loss_sum, epoch_targets, seconds_before) = self.epoch_totals;
        Ok(CheckpointArtifact {
            model: self.snapshot()?,
            epoch,
            batches_done,
            epoch_loss_sum,
            epoch_targets,
            epoch_seconds: seconds_before + self.epoch_started.elapsed().as_secs_f64(),
            dropout_rng_position: self.dropout_rng.position(),
            trained_seconds: self.trained_seconds(),
            best: self.best.clone(),
            settings: Vec::new(),
            timings: self.timings.clone(),
            carried_state: self.carried.as_ref().map_or_else(Vec::new, |carried| carried.states.values().to_vec()),
            averaged_weights: self.average.as_ref().map_or(Ok(Vec::new()), |a| a.to_named(&self.model))?,
            step_losses: self.step_losses.clone(),
        })
    }

    /// Validates, records the epoch and its timing, keeps the weights if they are the best
    /// so far, and tells the hooks.
    fn end_epoch(&mut self, epoch: usize, hooks: &mut Hooks) -> Result<(), TrainError> {
        let (loss_sum, targets, seconds_before) = self.epoch_totals;
        let seconds = seconds_before + self.epoch_started.elapsed().as_secs_f64();
        let validation = match &self.average {
            Some(average) => {
                let stepped = evaluate(&self.model, self.dataset, &self.validation, self.device)?;
                let averaged = average
                    .read_with(&self.model, |model| evaluate(model, self.dataset, &self.validation, self.device))?;
                if let (Some((stepped, _)), Some((averaged, _))) = (stepped, averaged) {
                    tracing::info!(
                        "epoch {epoch:>3}: validation loss {averaged:.4} of the averaged weights (train.ema_decay), \
                         {stepped:.4} of the weights as stepped"
                    );
                }
                averaged
            }
            None => evaluate(&self.model, self.dataset, &self.validation, self.device)?,
        };
        let record = EpochRecord {
            epoch,
            train_loss: (loss_sum / targets.max(1) as f64) as f32,
            validation_loss: validation.map(|v| v.0),
            validation_accuracy: validation.map(|v| v.1),
        };
        let timing = EpochTiming { epoch, seconds, targets_per_second: targets as f64 / seconds.max(1e-9) };
        log_epoch(&record, &timing, self.config.train.epochs, self.trained_seconds());
        self.timings.push(timing);
        if let Some(loss) = record.validation_loss
            && self.best.as_ref().is_none_or(|b| loss < b.validation_loss)
        {
            self.best = Some(BestWeights { epoch, validation_loss: loss, weights: self.kept_weights()? });
        }
        self.history.push(record);
        (hooks.epoch_done)(&self.history, &self.step_losses)
    }

    /// The weights a model of this run holds: the moving average with `train.ema_decay`,
    /// else the weights as stepped.
    fn kept_weights(&self) -> candle_core::Result<Vec<artifacts::NamedTensor>> {
        match &self.average {
            Some(average) => average.to_named(&self.model),
            None => self.model.to_named(),
        }
    }

    /// Why training should stop after `epoch`, if it should: the time budget ran out, or
    /// `train.patience` epochs brought no lower validation loss.
    fn reason_to_stop(&self, epoch: usize, out_of_time: bool) -> Option<Ending> {
        let settings = &self.config.train;
        if out_of_time {
            tracing::info!(
                "train: {:.1} minutes of training reached train.max_minutes = {} in epoch {epoch}",
                self.trained_seconds() / 60.0,
                settings.max_minutes
            );
            return Some(Ending::TimeBudget);
        }
        let b = self.best.as_ref().filter(|b| settings.patience > 0 && epoch - b.epoch >= settings.patience)?;
        tracing::info!(
            "train: no lower validation loss for {} epochs (train.patience): stopping; the best was {:.3} in epoch {}",
            settings.patience,
            b.validation_loss,
            b.epoch
        );
        Some(Ending::Patience)
    }

    /// The finished model: the best epoch's weights where there is one, calibrated
    /// (`train.calibrate`) on the validation pieces.
    fn finish(self, ending: Ending) -> Result<Trained, TrainError> {
        let model = self.snapshot()?;
        let mut model = match &self.best {
            Some(best) => ModelArtifact { weights: best.weights.clone(), weights_epoch: best.epoch, ..model },
            None => ModelArtifact { weights: self.kept_weights()?, ..model },
        };
        if self.config.train.calibrate {
            calibrate(&mut model, self.dataset, &self.validation, self.device)?;
        }
        Ok(Trained { model, ending, timings: self.timings })
    }
}

/// Fits the temperature that gives `model` the lowest cross-entropy on the validation
/// pieces (`validation`, read as every epoch reads them) and folds it into the output layer,
/// recording it in `model.calibration`; without validation pieces the model is left as it is.
pub fn calibrate(
    model: &mut ModelArtifact,
    dataset: &DatasetArtifact,
    validation: &[Vec<LaneWindow>],
    device: &Device,
) -> Result<(), TrainError> {
    let network = LstmModel::from_named(model.hyperparameters.clone(), &model.weights, device)?;
    let Some(fit) = lstm::calibration::fit_temperature(&network, dataset, validation, device)? else {
        return Ok(());
    };
    network.divide_logits_by(fit.temperature)?;
    model.weights = network.to_named()?;
    model.calibration = Some(Calibration {
        temperature: fit.temperature,
        validation_loss_before: fit.loss_at_one,
        validation_loss_after: fit.loss_fitted,
    });
    tracing::info!(
        "train: calibrated: logits divided by a temperature of {:.3} (train.calibrate), validation loss {:.4} -> {:.4}",
        fit.temperature,
        fit.loss_at_one,
        fit.loss_fitted
    );
    Ok(())
}

/// The network, its optimizer and the history so far at the start of a run, and the dropout
/// stream where the run leaves off.
fn starting_point(
    start: &Start,
    hyperparameters: &Hyperparameters,
    config: &PipelineConfig,
    dropout_rng: &mut SeededRng,
    device: &Device,
) -> Result<(LstmModel, Adam, Vec<EpochRecord>), TrainError> {
    let rate = config.train.learning_rate;
    let (mut model, optimizer, history) = match start {
        Start::Random => {
            let model = LstmModel::new(hyperparameters.clone(), config.seed, device)?;
            let optimizer = Adam::new(model.vars(), rate);
            (model, optimizer, Vec::new())
        }
        Start::Init(init, _) => {
            let model = LstmModel::from_named(hyperparameters.clone(), &init.weights, device)?;
            let optimizer = Adam::new(model.vars(), rate);
            (model, optimizer, Vec::new())
        }
        Start::Resume(checkpoint) => {
            let model = LstmModel::from_named(hyperparameters.clone(), &checkpoint.model.weights, device)?;
            let optimizer = Adam::from_state(&checkpoint.model.optimizer, rate);
            dropout_rng.set_position(checkpoint.dropout_rng_position);
            (model, optimizer, checkpoint.model.history.clone())
        }
    };
    // run() has settled "auto" (and a bf16 that cannot run here) to what this model can use.
    model.set_precision(config.train.precision.named(Precision::F32, Precision::Bf16).unwrap_or(Precision::F32))?;
    Ok((model, optimizer, history))
}

/// The learning rate of optimizer step `step` (counted from 1 since the weights were
/// initialised) with `steps_per_epoch` batches an epoch, after `plateaus` epochs that
/// brought no lower validation loss:
///
/// ```text
/// warm-up = min(1, step / (train.warmup_epochs · steps_per_epoch))     (1 without warm-up)
/// rate    = train.learning_rate · warm-up · train.plateau_decay^plateaus
/// ```
///
/// Both factors follow from what a checkpoint holds (Adam's step count, the epoch history),
/// so a resumed run takes the same steps as one that never stopped.
fn learning_rate(settings: &config::TrainConfig, (step, steps_per_epoch): (u64, usize), plateaus: usize) -> f64 {
    let warmup_steps = settings.warmup_epochs * steps_per_epoch as f64;
    let warmup = if warmup_steps > 0.0 { (step as f64 / warmup_steps).min(1.0) } else { 1.0 };
    settings.learning_rate * warmup * settings.plateau_decay.powi(plateaus as i32)
}

/// How many epochs of `history` brought no lower validation loss than every epoch before them.
fn plateaus(history: &[EpochRecord]) -> usize {
    let mut best = f32::INFINITY;
    let mut count = 0;
    for loss in history.iter().filter_map(|e| e.validation_loss) {
        if loss < best {
            best = loss;
        } else {
            count += 1;
        }
    }
    count
}

/// One training step on a batch of windows:
///
/// ```text
/// state       = where the window before each one in its piece ended, the last time it was
///               read (train.carry_state), else zero
/// W_hh       ← W_hh ⊙ M for this step only (train.weight_drop; M as in WeightDrop)
/// loss, grads = forward and backward from that state (cross-entropy at every position,
///               with dropout; no gradient flows into the state)
/// W_hh       ← W_hh as it was;  grad W_hh ← grad W_hh ⊙ M
/// clip grads to train.grad_clip;  adam.update(weights, grads)
/// ```
///
/// Returns the mean loss and the number of targets, or `None` when the loss is not finite,
/// before the weights or the lanes' states are touched (so the last checkpoint stays good).
fn step(
    model: &LstmModel,
    optimizer: &mut Adam,
    (dataset, windows, carried): (&DatasetArtifact, &[LaneWindow], Option<&mut CarriedStates>),
    dropout_rng: &mut SeededRng,
    settings: &config::TrainConfig,
    device: &Device,
) -> Result<Option<(f64, usize)>, TrainError> {
    let (inputs, expected) = lstm::batch(dataset, windows, device)?;
    let mut state = carried.as_ref().map(|carried| carried.start_of(windows));
    let weight_drop = WeightDrop::apply(model, settings.weight_drop, dropout_rng)?;
    let dropout = Some((dropout_rng, settings.dropout));
    let result = model.carried_loss_and_gradients(&inputs, &expected, dropout, state.as_deref_mut());
    let (loss, mut grads) = weight_drop.restore(model, result)?;
    let loss = f64::from(loss);
    if !loss.is_finite() {
        return Ok(None);
    }
    if let (Some(carried), Some(ended)) = (carried, &state) {
        carried.keep(windows, ended);
    }
    adam::clip_global_norm(&mut grads, settings.grad_clip);
    optimizer.update(model.vars(), &grads)?;
    Ok(Some((loss, expected.elem_count())))
}

/// With `train.carry_state`, the state each training window starts from: the state the
/// window before it in its piece ended in, the last time that one was read (zero until
/// then). The windows stay shuffled, so a batch mixes pieces as it does without
/// carrying; the state a window starts from was computed with weights up to an epoch old.
///
/// Why not read each piece start to end in lanes (truncated backpropagation through time,
/// as validation reads)? Then a lane's consecutive batches hold the next windows of the
/// same pieces, and Adam, whose steps are about the learning rate whatever the gradient's
/// size, follows those pieces for dozens of steps in a row: one epoch read that way, at
/// the default learning rate, took the base model's validation loss from 1.69 to 2.04,
/// and to 2.13 with every window still starting from zero (docs/training.md, Long context).
///
/// Invariant: `states` holds one slot per training window, in the order of
/// [`DatasetArtifact::windows`], `slot` maps a window's `(piece, start)` to it; the slot
/// of a window that starts a piece, or whose predecessor was never read, stays zero.
struct CarriedStates {
    states: LaneStates,
    slot: std::collections::HashMap<(usize, usize), usize>,
    seq_len: usize,
}

impl CarriedStates {
    /// Every window at zero, or the states `stored` in a checkpoint where they fit.
    fn new(dataset: &DatasetArtifact, settings: &config::TrainConfig, stored: Vec<f32>) -> Self {
        let windows = dataset.windows(Split::Train);
        let (layers, hidden) = (settings.layers, settings.hidden);
        let states = LaneStates::from_values(windows.len(), layers, hidden, stored)
            .unwrap_or_else(|| LaneStates::new(windows.len(), layers, hidden));
        let slot = windows.into_iter().enumerate().map(|(index, window)| (window, index)).collect();
        CarriedStates { states, slot, seq_len: dataset.seq_len }
    }

    /// The state a batch of training windows starts from, per layer `[B, H]`.
    fn start_of(&self, windows: &[LaneWindow]) -> Vec<StreamState> {
        let slots: Vec<LaneWindow> = windows
            .iter()
            .map(|w| LaneWindow { lane: self.slot[&(w.piece, w.start)], continues: true, ..*w })
            .collect();
        self.states.start_of(&slots)
    }

    /// Keeps the state each window `ended` in for the window that follows it in its piece
    /// (a window `seq_len` tokens on; none after a piece's last).
    fn keep(&mut self, windows: &[LaneWindow], ended: &[StreamState]) {
        let next: Vec<Option<usize>> =
            windows.iter().map(|w| self.slot.get(&(w.piece, w.start + self.seq_len)).copied()).collect();
        self.states.keep_rows(&next, ended);
    }
}

/// DropConnect on the recurrent weights (AWD-LSTM's weight drop, `train.weight_drop` = p):
/// one step's forward and backward pass see `W_hh ⊙ M`, where each entry of `M` is 0 with
/// probability p and 1/(1 − p) otherwise. By the chain rule through that product,
/// `∂L/∂W_hh = ∂L/∂(W_hh ⊙ M) ⊙ M`. The mask is applied to the weights themselves, not
/// inside the layers, so every layer path (the CPU's hand-written pass, Candle's autograd
/// on a GPU) trains with it unchanged.
struct WeightDrop {
    /// Per masked layer: its index in [`LstmModel::vars`], its weights before the mask, and
    /// the mask.
    masked: Vec<(usize, candle_core::Tensor, Vec<f32>)>,
}

impl WeightDrop {
    /// Masks every layer's W_hh (nothing when `p` is 0), drawing the masks from `rng`.
    fn apply(model: &LstmModel, p: f64, rng: &mut SeededRng) -> candle_core::Result<WeightDrop> {
        let mut masked = Vec::new();
        if p <= 0.0 {
            return Ok(WeightDrop { masked });
        }
        for index in model.recurrent_weight_indices() {
            let var = &model.vars()[index];
            let mask = lstm::inverted_dropout_mask(rng, p as f32, var.elem_count());
            let original = var.as_tensor().copy()?;
            let mask_tensor = candle_core::Tensor::from_slice(&mask, var.shape(), var.device())?;
            var.set(&original.mul(&mask_tensor)?)?;
            masked.push((index, original, mask));
        }
        Ok(WeightDrop { masked })
    }

    /// Puts the weights back (first, so that a failed pass leaves none masked), then masks
    /// the gradients of the pass's `result` as the chain rule says.
    fn restore(
        self,
        model: &LstmModel,
        result: candle_core::Result<(f32, Vec<Vec<f32>>)>,
    ) -> candle_core::Result<(f32, Vec<Vec<f32>>)> {
        for (index, original, _) in &self.masked {
            model.vars()[*index].set(original)?;
        }
        let (loss, mut grads) = result?;
        for (index, _, mask) in &self.masked {
            grads[*index].iter_mut().zip(mask).for_each(|(g, m)| *g *= m);
        }
        Ok((loss, grads))
    }
}

fn log_epoch(record: &EpochRecord, timing: &EpochTiming, epochs: usize, elapsed: f64) {
    let validation = match (record.validation_loss, record.validation_accuracy) {
        (Some(loss), Some(accuracy)) => {
            format!("validation loss {loss:.3} (perplexity {:.1}), accuracy {:.1} %", loss.exp(), accuracy * 100.0)
        }
        _ => "no validation set".to_string(),
    };
    tracing::info!(
        "epoch {:>3}/{epochs}: train loss {:.3}, {validation}, {:.0} targets/s, {elapsed:.1} s elapsed",
        record.epoch,
        record.train_loss,
        timing.targets_per_second
    );
}

/// Mean cross-entropy (nats per target) and top-1 accuracy over `batches` (see
/// [`lstm::whole_pieces`]), without dropout, each lane's state carried into its next
/// window; `None` when there are no windows.
pub fn evaluate(
    model: &LstmModel,
    dataset: &DatasetArtifact,
    batches: &[Vec<LaneWindow>],
    device: &Device,
) -> candle_core::Result<Option<(f32, f32)>> {
    if batches.is_empty() {
        return Ok(None);
    }
    let (mut loss_sum, mut correct, mut targets) = (0.0f64, 0.0f64, 0usize);
    lstm::read_in_order(model, dataset, batches, device, |logits, expected| {
        let count = expected.elem_count();
        let loss = candle_nn::loss::cross_entropy(&logits, &expected)?.to_scalar::<f32>()?;
        let hits = logits.argmax(D::Minus1)?.eq(&expected)?.to_dtype(candle_core::DType::F32)?.sum_all()?;
        loss_sum += f64::from(loss) * count as f64;
        correct += f64::from(hits.to_scalar::<f32>()?);
        targets += count;
        Ok(())
    })?;
    Ok(Some(((loss_sum / targets as f64) as f32, (correct / targets as f64) as f32)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifacts::{EncodedPiece, Encoding, Vocabulary};
    use candle_core::Var;

    #[test]
    fn the_learning_rate_warms_up_then_decays_on_each_plateau() {
        // Half an epoch of 8 steps: 4 steps of warm-up.
        let settings =
            config::TrainConfig { learning_rate: 0.01, warmup_epochs: 0.5, plateau_decay: 0.5, ..Default::default() };
        let rates: Vec<f64> = (1..=6).map(|step| learning_rate(&settings, (step, 8), 0)).collect();
        assert_eq!(rates, [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01]);
        assert_eq!(learning_rate(&settings, (9, 8), 2), 0.0025);
        let defaults = config::TrainConfig { learning_rate: 0.01, ..Default::default() };
        assert_eq!(learning_rate(&defaults, (1, 8), 3), 0.01, "no warm-up and no decay by default");

        let epoch = |validation: Option<f32>| EpochRecord {
            epoch: 0,
            train_loss: 1.0,
            validation_loss: validation,
            validation_accuracy: None,
        };
        // 3.0 is new, 3.1 and 3.0 are no lower than the best, 2.5 is lower, 2.6 is not.
        let history: Vec<EpochRecord> =
            [3.0, 3.1, 3.0, 2.5, 2.6].into_iter().map(Some).chain([None]).map(epoch).collect();
        assert_eq!(plateaus(&history), 3);
        assert_eq!(plateaus(&[]), 0);
    }

    #[test]
    fn adam_takes_learning_rate_sized_steps_and_converges() {
        // Minimise (w − 3)²: the gradient is 2(w − 3).
        let w = Var::new(&[0.0f32], &Device::Cpu).unwrap();
        let mut adam = Adam::new(std::slice::from_ref(&w), 0.1);
        let value = |w: &Var| w.as_tensor().to_vec1::<f32>().unwrap()[0];
        for step in 0..500 {
            let grad = 2.0 * (value(&w) - 3.0);
            adam.update(std::slice::from_ref(&w), &[vec![grad]]).unwrap();
            if step == 0 {
                // Bias correction makes the first step exactly lr · sign(g).
                assert!((value(&w) - 0.1).abs() < 1e-6, "first step moved to {}", value(&w));
            }
        }
        assert!((value(&w) - 3.0).abs() < 0.05, "ended at {}", value(&w));
        assert_eq!(adam.state(&["w".into()]).step, 500);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut grads = vec![vec![3.0f32], vec![4.0f32]];
        let norm = adam::clip_global_norm(&mut grads, 1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        let clipped: f32 = grads.iter().flatten().map(|g| g.powi(2)).sum::<f32>().sqrt();
        assert!((clipped - 1.0).abs() < 1e-4, "norm after clipping {clipped}");
    }

    /// A pattern the model can learn: 0 1 2 3 4 5 0 1 2 … in every piece.
    fn learnable() -> (PipelineConfig, DatasetArtifact) {
        let piece = |split| EncodedPiece {
            source: String::new(),
            split,
            augmentation: None,
            tokens: (0..120).map(|i| i % 6).collect(),
        };
        let dataset = DatasetArtifact {
            encoding: Encoding::Names { chord_window_quarters: 0.0 },
            vocabulary: Vocabulary::from_tokens((0..6).map(|i| format!("C{i}"))),
            seq_len: 8,
            stride: 2,
            pieces: vec![piece(Split::Train), piece(Split::Validation)],
        };
        let mut config = PipelineConfig::default();
        config.train.epochs = 8;
        config.train.hidden = 16;
        config.train.embedding = 8;
        config.train.batch_size = 8;
        config.train.learning_rate = 0.01;
        (config, dataset)
    }

    #[test]
    fn a_carried_window_starts_where_the_window_before_it_in_its_piece_ended() {
        let (mut config, dataset) = learnable();
        config.train.carry_state = true;
        let model = LstmModel::new(hyperparameters(&config.train, &dataset), 1, &Device::Cpu).unwrap();
        let mut carried = CarriedStates::new(&dataset, &config.train, Vec::new());
        let window = |start| [LaneWindow { lane: 0, piece: 0, start, continues: false }];
        let is_zero = |states: &[StreamState]| states.iter().all(|s| s.h.iter().chain(&s.c).all(|&v| v == 0.0));
        assert!(is_zero(&carried.start_of(&window(8))), "nothing read yet: every window starts from zero");

        let (inputs, _) = lstm::batch(&dataset, &window(0), &Device::Cpu).unwrap();
        let mut ended = carried.start_of(&window(0));
        model.carried_logits(&inputs, &mut ended).unwrap();
        carried.keep(&window(0), &ended);
        assert!(!is_zero(&ended));
        // seq_len is 8: the window 8 tokens on continues this one; the one 2 on (stride 2)
        // overlaps it and does not, nor does the piece's first.
        assert_eq!(carried.start_of(&window(8)), ended);
        assert!(is_zero(&carried.start_of(&window(2))) && is_zero(&carried.start_of(&window(0))));
    }

    #[test]
    fn a_non_finite_loss_stops_training_before_anything_is_saved() {
        let (config, dataset) = learnable();
        // Resume from a checkpoint whose weights hold a NaN: the very first loss is NaN.
        let hp = Hyperparameters { vocab_size: 6, embedding: 8, hidden: 16, layers: 2, dropout: 0.3, seq_len: 8 };
        let mut weights = LstmModel::new(hp.clone(), 1, &Device::Cpu).unwrap().to_named().unwrap();
        weights.last_mut().unwrap().data[0] = f32::NAN;
        let adam = Adam::new(LstmModel::from_named(hp.clone(), &weights, &Device::Cpu).unwrap().vars(), 0.01);
        let names: Vec<String> = weights.iter().map(|w| w.name.clone()).collect();
        let poisoned = CheckpointArtifact {
            model: ModelArtifact {
                hyperparameters: hp,
                encoding: dataset.encoding.clone(),
                vocabulary: dataset.vocabulary.clone(),
                weights,
                optimizer: adam.state(&names),
                initialised_from: None,
                weights_epoch: 0,
                history: Vec::new(),
                calibration: None,
            },
            epoch: 1,
            batches_done: 0,
            epoch_loss_sum: 0.0,
            epoch_targets: 0,
            epoch_seconds: 0.0,
            dropout_rng_position: 0,
            trained_seconds: 0.0,
            best: None,
            settings: Vec::new(),
            timings: Vec::new(),
            carried_state: Vec::new(),
            averaged_weights: Vec::new(),
            step_losses: Vec::new(),
        };
        let stop = AtomicBool::new(false);
        let mut saves = 0;
        let mut save = |_: &CheckpointArtifact| {
            saves += 1;
            Ok(())
        };
        let mut config = config;
        config.train.checkpoint_steps = 1;
        let hooks = Hooks { save: &mut save, interrupt: &stop, epoch_done: &mut |_, _| Ok(()) };
        let result = train(&config, &dataset, &Device::Cpu, Start::Resume(Box::new(poisoned)), hooks);
        assert!(matches!(result, Err(TrainError::Diverged { epoch: 1 })), "{:?}", result.err());
        assert_eq!(saves, 0, "no checkpoint may be written from a diverged step");
    }

    #[test]
    fn the_best_epoch_s_weights_are_kept_and_patience_stops_training() {
        // The validation piece runs the training cycle backwards: the better the model
        // learns the training pieces, the worse it predicts it, after the first epochs.
        let (mut config, mut dataset) = learnable();
        dataset.pieces[1].tokens.reverse();
        (config.train.epochs, config.train.patience) = (30, 2);
        config.train.calibrate = false; // so the stored weights are the best epoch's as they were
        let stop = AtomicBool::new(false);
        let mut saved = None;
        let mut save = |c: &CheckpointArtifact| {
            saved = Some(c.clone());
            Ok(())
        };
        config.train.checkpoint_steps = 1;
        let hooks = Hooks { save: &mut save, interrupt: &stop, epoch_done: &mut |_, _| Ok(()) };
        let Trained { model, ending, .. } = train(&config, &dataset, &Device::Cpu, Start::Random, hooks).unwrap();
        assert_eq!(ending, Ending::Patience);
        let losses: Vec<f32> = model.history.iter().map(|e| e.validation_loss.unwrap()).collect();
        let best = losses.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 + 1;
        assert!(model.history.len() < 30, "stopped early: {losses:?}");
        assert_eq!(model.history.len(), best + 2, "two epochs without improvement: {losses:?}");
        assert_eq!(model.weights_epoch, best);
        let checkpoint = saved.unwrap();
        assert_eq!(checkpoint.best.as_ref().map(|b| b.epoch), Some(best));
        assert_eq!(model.weights, checkpoint.best.unwrap().weights, "the model holds the best epoch's weights");
        assert_ne!(model.weights, checkpoint.model.weights, "not the last step's");
    }

    #[test]
    fn with_a_moving_average_the_averaged_weights_are_validated_and_kept() {
        let (mut config, dataset) = learnable();
        (config.train.epochs, config.train.ema_decay, config.train.checkpoint_steps) = (3, 0.9, 1);
        config.train.calibrate = false; // so the stored weights are the kept ones as they were
        let stop = AtomicBool::new(false);
        let mut last = None;
        let mut save = |c: &CheckpointArtifact| {
            last = Some(c.clone());
            Ok(())
        };
        let hooks = Hooks { save: &mut save, interrupt: &stop, epoch_done: &mut |_, _| Ok(()) };
        let model = train(&config, &dataset, &Device::Cpu, Start::Random, hooks).unwrap().model;
        assert_eq!(model.weights_epoch, 3, "the learnable cycle is learned better every epoch: {:?}", model.history);
        let last = last.unwrap();
        assert_eq!(model.weights, last.averaged_weights, "the model holds the average after the last step");
        assert_ne!(model.weights, last.model.weights, "not the weights as stepped");
        let network = LstmModel::from_named(model.hyperparameters.clone(), &model.weights, &Device::Cpu).unwrap();
        let batches = lstm::whole_pieces(&dataset, Split::Validation, config.train.batch_size);
        let (loss, _) = evaluate(&network, &dataset, &batches, &Device::Cpu).unwrap().unwrap();
        assert_eq!(Some(loss), model.history[2].validation_loss, "the validation loss is the average's");
    }

    #[test]
    fn the_stored_weights_are_the_best_epoch_s_calibrated_on_the_validation_pieces() {
        let (mut config, dataset) = learnable();
        config.train.epochs = 3;
        let run = |config: &PipelineConfig| {
            let stop = AtomicBool::new(false);
            let hooks = Hooks { save: &mut |_| Ok(()), interrupt: &stop, epoch_done: &mut |_, _| Ok(()) };
            train(config, &dataset, &Device::Cpu, Start::Random, hooks).unwrap().model
        };
        let validation_loss = |model: &ModelArtifact| {
            let network = LstmModel::from_named(model.hyperparameters.clone(), &model.weights, &Device::Cpu).unwrap();
            let batches = lstm::whole_pieces(&dataset, Split::Validation, 8);
            f64::from(evaluate(&network, &dataset, &batches, &Device::Cpu).unwrap().unwrap().0)
        };
        let model = run(&config);
        let calibration = model.calibration.expect("calibrated by default");
        let best = model.history.iter().find(|e| e.epoch == model.weights_epoch).unwrap();
        assert!((calibration.validation_loss_before - f64::from(best.validation_loss.unwrap())).abs() < 1e-4);
        assert!(calibration.validation_loss_after < calibration.validation_loss_before, "{calibration:?}");
        assert!((validation_loss(&model) - calibration.validation_loss_after).abs() < 1e-4, "{calibration:?}");
        assert!((calibration.temperature - 1.0).abs() > 1e-3, "{calibration:?}");

        config.train.calibrate = false;
        let uncalibrated = run(&config);
        assert_eq!(uncalibrated.calibration, None);
        assert!((validation_loss(&uncalibrated) - calibration.validation_loss_before).abs() < 1e-4);
        let differing: Vec<&str> = (model.weights.iter().zip(&uncalibrated.weights))
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.name.as_str())
            .collect();
        assert_eq!(differing.len(), 2, "only the output layer's weight and bias change: {differing:?}");
    }

    #[test]
    fn loss_falls_on_a_learnable_sequence() {
        let (config, dataset) = learnable();
        let stop = AtomicBool::new(false);
        let hooks = Hooks { save: &mut |_| Ok(()), interrupt: &stop, epoch_done: &mut |_, _| Ok(()) };
        let Trained { model, ending, .. } = train(&config, &dataset, &Device::Cpu, Start::Random, hooks).unwrap();
        assert_eq!(ending, Ending::Completed);
        let first = &model.history[0];
        let last = model.history.last().unwrap();
        assert!(last.train_loss < first.train_loss * 0.5, "{} → {}", first.train_loss, last.train_loss);
        assert!(last.validation_accuracy.unwrap() > 0.9, "accuracy {:?}", last.validation_accuracy);
    }
}

#[cfg(test)]
mod paths {
    use super::*;
    use candle_core::Tensor;
    use lstm::LayerPath;

    /// A small network and `sequences` windows of 16 tokens with their next tokens.
    fn small_network_and_batch(dropout: f32, sequences: usize) -> (Hyperparameters, Tensor, Tensor) {
        let hp = Hyperparameters { vocab_size: 30, embedding: 12, hidden: 24, layers: 2, dropout, seq_len: 16 };
        let ids: Vec<u32> = (0..sequences * 17).map(|i| ((i * 7 + i / 5) % 30) as u32).collect();
        let all = Tensor::from_vec(ids, (sequences, 17), &Device::Cpu).unwrap();
        (hp, all.narrow(1, 0, 16).unwrap(), all.narrow(1, 1, 16).unwrap())
    }

    #[test]
    fn weight_drop_trains_on_masked_recurrent_weights_and_puts_them_back() {
        let (hp, inputs, targets) = small_network_and_batch(0.0, 4);
        let model = LstmModel::new(hp.clone(), 5, &Device::Cpu).unwrap();
        let before: Vec<Vec<f32>> = model.vars().iter().map(|v| v.flatten_all().unwrap().to_vec1().unwrap()).collect();

        let mut rng = SeededRng::new(5, "dropout");
        let dropped = WeightDrop::apply(&model, 0.4, &mut rng).unwrap();
        let result = model.loss_and_gradients(&inputs, &targets, None);
        let (loss, grads) = dropped.restore(&model, result).unwrap();

        // The same step by hand: a second model whose W_hh are the masked weights.
        let mut rng = SeededRng::new(5, "dropout");
        let by_hand = LstmModel::new(hp, 5, &Device::Cpu).unwrap();
        let mut masks = Vec::new();
        for index in model.recurrent_weight_indices() {
            let mask: Vec<f32> =
                before[index].iter().map(|_| if rng.unit_f32() < 0.4 { 0.0 } else { 1.0 / 0.6 }).collect();
            let zeros = mask.iter().filter(|&&m| m == 0.0).count() as f64 / mask.len() as f64;
            assert!((zeros - 0.4).abs() < 0.03, "layer weight {index}: {zeros} of the weights dropped");
            let masked: Vec<f32> = before[index].iter().zip(&mask).map(|(w, m)| w * m).collect();
            let var = &by_hand.vars()[index];
            var.set(&Tensor::from_vec(masked, var.shape(), &Device::Cpu).unwrap()).unwrap();
            masks.push((index, mask));
        }
        let (expected_loss, mut expected) = by_hand.loss_and_gradients(&inputs, &targets, None).unwrap();
        for (index, mask) in &masks {
            expected[*index].iter_mut().zip(mask).for_each(|(g, m)| *g *= m);
        }
        assert_eq!(loss, expected_loss, "the loss of the masked weights");
        assert_eq!(grads, expected, "∂L/∂W_hh = ∂L/∂(W_hh ⊙ M) ⊙ M; the other gradients as they are");
        let after: Vec<Vec<f32>> = model.vars().iter().map(|v| v.flatten_all().unwrap().to_vec1().unwrap()).collect();
        assert_eq!(after, before, "the weights are put back");
    }

    /// A few training steps from the same seed: the CPU's hand-written path and the Candle-ops
    /// path (what GPUs run, differentiated by Candle's autograd) give the same loss curve.
    #[test]
    fn the_fused_and_candle_ops_paths_train_alike() {
        let (hp, inputs, targets) = small_network_and_batch(0.2, 8);
        let curve = |path: LayerPath| -> Vec<f32> {
            let model = LstmModel::new(hp.clone(), 5, &Device::Cpu).unwrap();
            let mut adam = Adam::new(model.vars(), 0.01);
            let mut rng = SeededRng::new(5, "dropout");
            (0..6)
                .map(|_| {
                    let (loss, grads) = match path {
                        LayerPath::Fused => model.loss_and_gradients(&inputs, &targets, Some((&mut rng, 0.2))).unwrap(),
                        LayerPath::CandleOps => {
                            let logits = model.logits_on(&inputs, Some((&mut rng, 0.2)), path).unwrap();
                            let loss =
                                candle_nn::loss::cross_entropy(&logits, &lstm::time_major(&targets).unwrap()).unwrap();
                            let store = loss.backward().unwrap();
                            let grads = model
                                .vars()
                                .iter()
                                .map(|v| store.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
                                .collect();
                            (loss.to_scalar::<f32>().unwrap(), grads)
                        }
                    };
                    adam.update(model.vars(), &grads).unwrap();
                    loss
                })
                .collect()
        };
        let (fused, ops) = (curve(LayerPath::Fused), curve(LayerPath::CandleOps));
        assert!(fused.last() < fused.first(), "the loss falls: {fused:?}");
        for (step, (a, b)) in fused.iter().zip(&ops).enumerate() {
            assert!((a - b).abs() < 5e-4, "step {step}: {a} vs {b} ({fused:?} vs {ops:?})");
        }
    }
}
