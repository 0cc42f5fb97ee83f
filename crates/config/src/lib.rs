//! `pipeline.toml`: the settings of every stage, in one strictly checked struct.
//!
//! Every stage binary loads the whole file with [`PipelineConfig::load`], applies its
//! command-line overrides (`--set section.key=value`), and reads its own section. Each
//! section also yields a [`PipelineConfig::section_digest`] that goes into the header of
//! the artifact the stage writes, so an artifact records exactly which settings made it.
//!
//! Key design decision: parsing is strict. Unknown or misspelt keys are errors that name
//! the key (`#[serde(deny_unknown_fields)]`), and every value is range-checked in
//! [`PipelineConfig::validate`] with a message naming `section.key`. A typo in a config
//! that silently falls back to a default would waste an hour of training.
//! Every key has a default, so an empty file is a valid config.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// The whole `pipeline.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// The one seed every random choice derives from (split, init, order, sampling).
    pub seed: u64,
    pub runtime: RuntimeConfig,
    pub extract: ExtractConfig,
    pub encode: EncodeConfig,
    pub train: TrainConfig,
    pub compose: ComposeConfig,
    pub evaluate: EvaluateConfig,
}

/// How `evaluate` measures memorisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluateConfig {
    /// Length of the note patterns looked up in the training set.
    pub ngram: usize,
    /// A generated piece with a larger share of its patterns found in the training set is
    /// flagged as a copy.
    pub copy_threshold: f64,
}

impl Default for EvaluateConfig {
    fn default() -> Self {
        EvaluateConfig { ngram: 8, copy_threshold: 0.5 }
    }
}

/// Where and how the neural-network stages (`train`, `compose`) compute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    pub device: Device,
    /// Worker threads for matrix work; 0 means one per core.
    pub threads: usize,
}

/// The compute device for Candle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA or Metal when this build has the feature and the machine has the device, else CPU.
    Auto,
    Cpu,
    Cuda,
    Metal,
}

impl Device {
    /// The value among the four given, in the order of this enum's variants, that stands for
    /// this choice: how a stage hands the setting to a crate with its own device type (`lstm`
    /// knows nothing of the pipeline's settings) without a mapping written in every stage.
    pub fn pick<T>(self, auto: T, cpu: T, cuda: T, metal: T) -> T {
        match self {
            Device::Auto => auto,
            Device::Cpu => cpu,
            Device::Cuda => cuda,
            Device::Metal => metal,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractConfig {
    /// Folder searched recursively for `.mid` / `.midi` files (any letter case).
    pub input: PathBuf,
    /// Files larger than this are skipped unread.
    pub max_file_bytes: u64,
    /// Files with more tracks, events (of all kinds) or notes than these are skipped: caps
    /// that bound the memory one hostile file can take.
    pub max_tracks: usize,
    pub max_events: usize,
    pub max_notes: usize,
    /// Whether the sustain pedal lengthens notes, is ignored, or is kept as events of its
    /// own (for the `beats` encoding's `pedal` token).
    pub sustain: Sustain,
    /// Notes longer than this many seconds are cut to it (a stuck key, a missing note-off).
    pub max_note_seconds: f64,
    /// Silences longer than this many seconds (before the first note, or between the end
    /// of every sounding note and the next onset) are shortened to it: with the note cap
    /// and `max_notes`, this bounds the length of a piece, and so its tokens.
    pub max_rest_seconds: f64,
}

/// What the sustain pedal does to notes (`extract.sustain`).
pub use music::Sustain;

impl ExtractConfig {
    /// The reader's options: the caps and rules of `[extract]` that apply to a file's bytes.
    pub fn read_options(&self) -> music::ReadOptions {
        music::ReadOptions {
            max_tracks: self.max_tracks,
            max_events: self.max_events,
            max_notes: self.max_notes,
            sustain: self.sustain,
            max_note_seconds: self.max_note_seconds,
            max_rest_seconds: self.max_rest_seconds,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncodeConfig {
    /// Token scheme: `"names"` (the original design's note and chord names; `"seed"` is
    /// accepted for it) or
    /// `"performance"` (key presses, releases, time shifts and velocities) or `"beats"`
    /// (bars, positions, tempo, and notes with durations: a score).
    pub encoding: EncodingName,
    /// Notes starting within this many quarter notes of each other form one chord.
    pub chord_window: f64,
    /// Tokens the model sees per training window.
    pub seq_len: usize,
    /// Tokens between the starts of consecutive training windows.
    pub stride: usize,
    /// Share of pieces held out for validation (by piece, seeded).
    pub validation_fraction: f64,
    /// The pieces held out for validation, named as extract names them (paths relative to
    /// `extract.input`, `/` between folders): when not empty, exactly these, and
    /// `validation_fraction` is not used. A fixed split (such as `../shared/splits`) keeps
    /// validation figures comparable from run to run and from one data set to the next.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validation_pieces: Vec<String>,
    /// `performance`: the time step in milliseconds…
    pub step_ms: u32,
    /// …the longest single time shift (longer gaps chain shifts)…
    pub max_shift_ms: u32,
    /// …and the number of velocity bins (`beats` too).
    pub velocity_bins: u32,
    /// `beats`: tempo bins, geometric from 10 to 320 quarter notes a minute.
    pub tempo_bins: u32,
    /// Every piece (training and validation) is moved, by −5 to +6 semitones, into C major's
    /// scale (A minor's: its best-fitting diatonic scale becomes the white keys), so the
    /// network learns one key instead of twelve; `compose` moves what it writes into the key
    /// asked for (`compose.key`). `transpose` is then not used: a transposed copy would be
    /// moved back.
    pub in_c: bool,
    /// Training pieces are also added transposed by each of these semitone shifts (0 = as
    /// they are; a shift that pushes a note off the 88 keys is skipped for that piece)…
    pub transpose: Vec<i8>,
    /// …and with their times multiplied by each of these factors. Validation pieces are
    /// never augmented.
    pub stretch: Vec<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingName {
    /// The original design's note and chord names; `"seed"`, its old name, is accepted too.
    #[serde(alias = "seed")]
    Names,
    Performance,
    Beats,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub embedding: usize,
    pub hidden: usize,
    pub layers: usize,
    pub dropout: f32,
    pub learning_rate: f64,
    /// Gradients are rescaled so their global L2 norm is at most this; 0 turns it off.
    pub grad_clip: f64,
    /// Save a resumable checkpoint every this many steps (0 = not by steps)…
    pub checkpoint_steps: usize,
    /// …and every this many seconds (0 = not by time). Ctrl-C always saves one.
    pub checkpoint_seconds: f64,
    /// Stop when this many epochs in a row brought no lower validation loss (0 = never).
    pub patience: usize,
    /// Stop after the step that crosses this many minutes of training, counted over every
    /// run of the same checkpoint (0 = no limit; `epochs` still bounds the run).
    pub max_minutes: f64,
    /// A `model.bin` to start from instead of random weights (fine-tuning): the same
    /// encoding, dictionary and network shape as this run, else an error naming both. Empty
    /// = train from scratch.
    pub init: PathBuf,
    /// Who made the training data and under which license, written into the training
    /// report (a model derived from a corpus carries its credit).
    pub credit: String,
    /// `"auto"`, `"f32"` or `"bf16"`: how the training step's matrix products read their
    /// operands (see [`Precision`]).
    #[serde(skip_serializing_if = "Precision::is_auto")]
    pub precision: Precision,
    /// The learning rate rises linearly to `learning_rate` over this many epochs' worth of
    /// steps (0 = none), so fine-tuning's first steps, where Adam moves every weight by the
    /// full rate whatever its gradient, do not shake a trained model. In epochs, not steps,
    /// so it means the same on nine pieces and on thousands.
    #[serde(skip_serializing_if = "is_zero")]
    pub warmup_epochs: f64,
    /// After each epoch that brings no lower validation loss than the best before it, the
    /// learning rate is multiplied by this (1 = never changes).
    #[serde(skip_serializing_if = "is_one")]
    pub plateau_decay: f64,
    /// DropConnect on the recurrent weights (AWD-LSTM's weight drop): each training step
    /// drops this share of every layer's W_hh, the rest scaled by 1/(1 − p), so the
    /// recurrence cannot lean on single connections (0 = off). Dropout on the units
    /// (`dropout`) leaves the step-to-step path untouched; this regularises it.
    #[serde(skip_serializing_if = "is_zero")]
    pub weight_drop: f64,
    /// Validate and keep an exponential moving average of the weights instead of the
    /// weights as the last step left them: after every step `average += (1 − d)·(weights −
    /// average)`, with d this decay (0 = off), so the stored model is the mean of roughly
    /// the last 1/(1 − d) steps' weights, which Adam's noisy steps scatter around the
    /// valley the average sits nearer the floor of.
    #[serde(skip_serializing_if = "is_zero")]
    pub ema_decay: f64,
    /// Start each training window from the LSTM state the window before it in its piece
    /// ended in, the last time that one was read (zero until then), as composing carries
    /// the state through the whole piece, instead of from zero; the windows stay shuffled
    /// and no gradient flows into the state (truncated backpropagation through time). Costs
    /// `layers × 2 × hidden` floats of memory (and checkpoint) per training window.
    /// (Validation always reads whole pieces with the state carried.)
    #[serde(skip_serializing_if = "is_false")]
    pub carry_state: bool,
    /// After training, fit the one temperature that gives the lowest cross-entropy on the
    /// validation pieces and fold it into the output layer (temperature scaling), so the
    /// model's probabilities are as sure as it is right and `compose.temperature = 1`
    /// samples them. No effect without validation pieces.
    #[serde(skip_serializing_if = "is_true")]
    pub calibrate: bool,
}

// The defaults of keys added after artifacts existed are left out of the settings' digests,
// so a config that does not set them keeps its digest and its artifacts stay fresh.
fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

fn is_one(value: &f64) -> bool {
    *value == 1.0
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_true(value: &bool) -> bool {
    *value
}

/// The `[train]` keys that only say how long to train, how often to save or what the report
/// says, not what the weights become: a checkpoint made under other values of these is
/// resumed all the same.
pub const TRAIN_BUDGET_KEYS: [&str; 6] =
    ["epochs", "max_minutes", "patience", "checkpoint_steps", "checkpoint_seconds", "credit"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComposeConfig {
    /// Tokens to generate after the primer window.
    pub tokens: usize,
    pub sampling: Sampling,
    /// Divides the logits before sampling: below 1 is safer, above 1 is wilder.
    pub temperature: f64,
    /// Tempo written to the MIDI file, in quarter notes a minute: 0 = the tempo the model
    /// composed (`beats`), 120 for `names` and `performance`; any other value overrides it.
    pub tempo_bpm: f64,
    /// `beats`: the metre of every bar, e.g. `"3/4"`; empty = the model's choice (that of
    /// the primer, or 4/4 when composing from the model alone).
    pub meter: String,
    /// `beats`: the form's phrases are this many bars, each starting on a downbeat
    /// (replaces `phrase_seconds`).
    pub phrase_bars: usize,
    /// Each generated element advances time by this many quarter notes (the original
    /// design's fixed half-beat step).
    pub step_quarters: f64,
    pub velocity: u8,
    /// A General MIDI SoundFont (.sf2) for `compose --wav` and `make listen`; empty means
    /// the first one installed in the usual places.
    pub soundfont: String,
    /// Sample only from the `top_k` most likely tokens (0 = all)…
    pub top_k: usize,
    /// …and from the smallest set whose probabilities add up to `top_p` (1 = all).
    pub top_p: f64,
    /// Pieces to write: `generated_music.mid`, then `generated_music_2.mid`, …
    pub outputs: usize,
    /// Length in seconds of music (0 = use `tokens`); `tokens` stays the upper bound.
    pub seconds: f64,
    /// With `--primer file.mid`: how many seconds of the file start the piece.
    pub primer_seconds: f64,
    /// `performance`: at most this many time shifts in a row…
    pub max_shift_run: usize,
    /// …and at most this many keys down at once…
    pub max_held: usize,
    /// …each for at most this many seconds (also the longest note of the `names` encoding).
    pub max_note_seconds: f64,
    /// `performance`: the temperature of time-shift tokens (the rhythm), apart from
    /// `temperature`'s (the notes); lower keeps the pulse steadier.
    pub shift_temperature: f64,
    /// `beats`: the temperature of duration tokens, apart from `temperature`'s; lower
    /// holds fewer notes across a beat (fewer ties in the score).
    pub duration_temperature: f64,
    /// `beats`: tempo bins (about 5.6 % each) the tempo may move above or below the piece's
    /// first tempo.
    pub max_tempo_drift: u32,
    /// `beats`: onsets and note ends only on sixteenths and eighth-note triplets (false: on
    /// every step of the encoding's grid of 12 a quarter note).
    pub notation_grid: bool,
    /// Form: the music is cut into phrases of this many seconds…
    pub phrase_seconds: f64,
    /// …and after each, with this probability, the next phrase restates an earlier one of
    /// the same piece, never the one just heard (0 = never), so motifs come back.
    pub repeat: f64,
    /// `beats` and `performance`: the least share of a piece's notes in their best-fitting
    /// diatonic scale, kept while sampling (0 = the network's choice alone).
    pub in_key: f64,
    /// `beats`, with `seconds` set: how a piece ends (see [`Ending`]).
    pub ending: Ending,
    /// The key each piece is written in, e.g. `"D minor"` or `"E♭ major"`: what the model
    /// composes is moved (by −5 to +6 semitones) so its best-fitting scale is this key's.
    /// Empty: a primer file's key, else one of the twelve drawn for each piece by the seed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// `"auto"`, `"f32"` or `"bf16"`: how generation's matrix products read the weights
    /// (see [`Precision`]).
    #[serde(skip_serializing_if = "Precision::is_auto")]
    pub precision: Precision,
}

/// The range of the sampling temperatures: below it the logits divided by it overflow (a
/// denormal such as 1e-320 makes them infinite), above it every token is as likely.
pub const MIN_TEMPERATURE: f64 = 0.01;
pub const MAX_TEMPERATURE: f64 = 100.0;

/// How the network's matrix products read their operands (`train.precision`,
/// `compose.precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Whichever of the two is faster on this machine at this model's shapes, timed at the
    /// start of the stage (see `lstm::choose_precision`); the choice and its figures are
    /// logged and written to the stage's report.
    #[default]
    Auto,
    /// Float32 throughout.
    F32,
    /// bfloat16 copies of weights and activations in the products, float32 sums, weights,
    /// optimizer state and gate math: faster on some processors with AVX-512 BF16 (elsewhere
    /// the stage says so and computes in float32).
    Bf16,
}

impl Precision {
    /// The value among the two given that a named precision stands for; `None` for auto,
    /// which is settled by timing (see [`Device::pick`] for the same pattern).
    pub fn named<T>(self, f32: T, bf16: T) -> Option<T> {
        match self {
            Precision::Auto => None,
            Precision::F32 => Some(f32),
            Precision::Bf16 => Some(bf16),
        }
    }

    /// Auto, the default: left out of the settings' digests, so configs that do not name
    /// the key keep their digests and artifacts.
    pub fn is_auto(&self) -> bool {
        *self == Precision::Auto
    }
}

/// How a `beats` piece ends (`compose.ending`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ending {
    /// At the end of the phrase nearest `compose.seconds`, which brings back the first: a
    /// last bar holding the key's tonic chord on its downbeat, over the tonic, to the bar's
    /// end, slowed (unless `compose.tempo_bpm` fixes the tempo).
    #[default]
    Cadence,
    /// At the bar line that reaches `compose.seconds`, wherever the music is.
    Cut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// Draw from the softmax of logits / temperature.
    Sample,
    /// Always take the most likely token (deterministic, prone to loops).
    Argmax,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            seed: 42,
            runtime: RuntimeConfig::default(),
            extract: ExtractConfig::default(),
            encode: EncodeConfig::default(),
            train: TrainConfig::default(),
            compose: ComposeConfig::default(),
            evaluate: EvaluateConfig::default(),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { device: Device::Auto, threads: 0 }
    }
}

impl Default for ExtractConfig {
    fn default() -> Self {
        let read = music::ReadOptions::default();
        ExtractConfig {
            input: PathBuf::from("data"),
            max_file_bytes: 16 << 20,
            max_tracks: read.max_tracks,
            max_events: read.max_events,
            max_notes: read.max_notes,
            sustain: read.sustain,
            max_note_seconds: read.max_note_seconds,
            max_rest_seconds: read.max_rest_seconds,
        }
    }
}

impl Default for EncodeConfig {
    fn default() -> Self {
        EncodeConfig {
            encoding: EncodingName::Performance,
            chord_window: 0.0625,
            seq_len: 100,
            stride: 100,
            validation_fraction: 0.15,
            validation_pieces: Vec::new(),
            step_ms: 10,
            max_shift_ms: 1000,
            velocity_bins: 32,
            tempo_bins: 64,
            in_c: true,
            transpose: vec![-3, -2, -1, 0, 1, 2, 3],
            stretch: vec![1.0],
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 32,
            embedding: 64,
            hidden: 256,
            layers: 2,
            dropout: 0.3,
            learning_rate: 0.002,
            grad_clip: 1.0,
            checkpoint_steps: 500,
            checkpoint_seconds: 300.0,
            patience: 0,
            max_minutes: 0.0,
            init: PathBuf::new(),
            credit: String::new(),
            precision: Precision::Auto,
            warmup_epochs: 0.0,
            plateau_decay: 1.0,
            weight_drop: 0.0,
            ema_decay: 0.0,
            carry_state: false,
            calibrate: true,
        }
    }
}

impl Default for ComposeConfig {
    fn default() -> Self {
        ComposeConfig {
            tokens: 5000,
            sampling: Sampling::Sample,
            temperature: 1.0,
            tempo_bpm: 0.0,
            meter: String::new(),
            phrase_bars: 4,
            step_quarters: 0.5,
            velocity: 80,
            soundfont: String::new(),
            top_k: 0,
            top_p: 1.0,
            outputs: 1,
            seconds: 60.0,
            primer_seconds: 10.0,
            max_shift_run: 8,
            max_held: 12,
            max_note_seconds: 10.0,
            shift_temperature: 1.0,
            duration_temperature: 1.0,
            max_tempo_drift: 3,
            notation_grid: true,
            phrase_seconds: 4.0,
            repeat: 0.35,
            in_key: 0.0,
            ending: Ending::Cadence,
            key: String::new(),
            precision: Precision::Auto,
        }
    }
}

/// A config that could not be used, with the file and key it concerns.
#[derive(Debug)]
pub enum ConfigError {
    Read { path: PathBuf, source: std::io::Error },
    Parse { path: PathBuf, message: String },
    BadOverride { text: String, message: String },
    Invalid { key: &'static str, message: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(f, "cannot read config {}: {source}", path.display()),
            ConfigError::Parse { path, message } => {
                write!(f, "config {}: {}", path.display(), message.trim_end())
            }
            ConfigError::BadOverride { text, message } => {
                write!(f, "override `{text}`: {}", message.trim_end())
            }
            ConfigError::Invalid { key, message } => write!(f, "config key `{key}`: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The largest config file read: far more than every key with a comment needs.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The stage sections, for [`PipelineConfig::section_digest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Extract,
    Encode,
    Train,
    Compose,
    Evaluate,
}

impl PipelineConfig {
    /// Reads `path`, applies `overrides` (each `section.key=value`, value in TOML syntax or
    /// a bare string), and validates the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let read_error = |source| ConfigError::Read { path: path.to_path_buf(), source };
        let bytes = artifacts::read_capped(path, MAX_CONFIG_BYTES).map_err(read_error)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")))?;
        Self::from_toml(&text, path, overrides)
    }

    /// As [`PipelineConfig::load`], from text that was read from `path`.
    pub fn from_toml(text: &str, path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse { path: path.to_path_buf(), message };
        // Parse into the struct first so errors point at the line in the file...
        let mut config: PipelineConfig = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        if !overrides.is_empty() {
            // ...then redo it from a table with the overrides applied.
            let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| parse_error(e.to_string()))?;
            for text in overrides {
                apply_override(&mut table, text)?;
            }
            config = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| ConfigError::BadOverride {
                text: overrides.join(" "),
                message: e.to_string(),
            })?;
        }
        config.resolve_paths_against(path.parent().unwrap_or(Path::new("")), overrides);
        config.validate()?;
        Ok(config)
    }

    /// Makes the config's relative paths (its own values and the defaults) relative to the
    /// folder `base` the config file is in, as Cargo reads a manifest's paths: a config
    /// means the same files from whichever folder a stage is run. A path given by an
    /// override (`--set`) is typed at a prompt, so it stays relative to the current folder;
    /// so does one starting with `~`, which only a shell expands.
    fn resolve_paths_against(&mut self, base: &Path, overrides: &[String]) {
        if base.as_os_str().is_empty() || base == Path::new(".") {
            return;
        }
        let overridden = |key: &str| {
            overrides.iter().any(|o| o.split_once('=').is_some_and(|(k, _)| k.split_whitespace().eq([key])))
        };
        let resolve = |key: &str, path: &Path| -> Option<PathBuf> {
            let relative = !path.as_os_str().is_empty() && path.is_relative() && !path.starts_with("~");
            (relative && !overridden(key)).then(|| base.join(path))
        };
        if let Some(path) = resolve("extract.input", &self.extract.input) {
            self.extract.input = path;
        }
        if let Some(path) = resolve("train.init", &self.train.init) {
            self.train.init = path;
        }
        if let Some(path) = resolve("compose.soundfont", Path::new(&self.compose.soundfont)) {
            self.compose.soundfont = path.to_string_lossy().into_owned();
        }
    }

    /// Checks every value's range; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.extract.validate()?;
        self.encode.validate()?;
        self.validate_sizes()?;
        self.train.validate()?;
        self.compose.validate()?;
        self.evaluate.validate()
    }

    /// Sizes that allocate memory or threads, some spanning sections: each within a range
    /// that a machine can hold, so no value wraps the shape arithmetic or asks for terabytes.
    fn validate_sizes(&self) -> Result<(), ConfigError> {
        let (e, t, c) = (&self.encode, &self.train, &self.compose);
        for (key, value, most) in [
            ("train.epochs", t.epochs, 1_000_000),
            ("train.batch_size", t.batch_size, 65_536),
            ("train.embedding", t.embedding, 8192),
            ("train.hidden", t.hidden, 8192),
            ("train.layers", t.layers, 32),
            ("encode.seq_len", e.seq_len, 1 << 20),
            ("compose.tokens", c.tokens, 100_000_000),
        ] {
            if !(1..=most).contains(&value) {
                return invalid(key, format!("must be in 1..={most}, got {value}"));
            }
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        if self.runtime.threads > 4 * cores {
            return invalid(
                "runtime.threads",
                format!("must be 0 (one per core) or at most 4 × the {cores} cores here, got {}", self.runtime.threads),
            );
        }
        // One training step holds about batch × seq_len × hidden × layers × 12 floats.
        let step_floats = [e.seq_len, t.hidden, t.layers, 12].iter().try_fold(t.batch_size, |n, &m| n.checked_mul(m));
        if step_floats.is_none_or(|floats| floats > 1 << 36) {
            return invalid(
                "train.batch_size",
                format!(
                    "train.batch_size × encode.seq_len × train.hidden × train.layers = {} × {} × {} × {} needs more \
                     than 256 GiB a training step; lower one of them",
                    t.batch_size, e.seq_len, t.hidden, t.layers
                ),
            );
        }
        Ok(())
    }

    /// Hash of one stage's settings together with what else changes its output: the
    /// global seed for the stages that draw random numbers, the runtime for the network.
    /// Recorded in the header of the artifact that stage writes, and printed by the stage's
    /// `--print-config-digest` for `make`, so that `pipeline.toml` is parsed in one place.
    pub fn section_digest(&self, section: Section) -> artifacts::Digest {
        match section {
            Section::Extract => artifacts::digest_of(&self.extract),
            Section::Encode => artifacts::digest_of(&(self.seed, &self.encode)),
            Section::Train => artifacts::digest_of(&(self.seed, &self.runtime, &self.train)),
            Section::Compose => artifacts::digest_of(&(self.seed, &self.runtime, &self.compose)),
            Section::Evaluate => artifacts::digest_of(&(self.seed, &self.runtime, &self.evaluate)),
        }
    }

    /// `(key, value)` of every setting that changes the weights `train` produces from a given
    /// data set: the seed, the device, and `[train]` less [`TRAIN_BUDGET_KEYS`]. The thread
    /// count is left out because it never changes a number. A checkpoint records this list,
    /// and a run resumes it only when its own list is the same, naming what differs otherwise.
    pub fn training_identity(&self) -> Vec<(String, String)> {
        let mut identity = vec![
            ("seed".to_owned(), self.seed.to_string()),
            ("runtime.device".to_owned(), format!("{:?}", self.runtime.device).to_lowercase()),
        ];
        let table = toml::Table::try_from(&self.train).expect("the train section serialises to a TOML table");
        for (key, value) in table {
            if !TRAIN_BUDGET_KEYS.contains(&key.as_str()) {
                identity.push((format!("train.{key}"), value.to_string()));
            }
        }
        identity
    }
}

/// A config error for `key`, as every check below reports one.
fn invalid(key: &'static str, message: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid { key, message })
}

impl ExtractConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("extract.max_file_bytes", self.max_file_bytes as usize),
            ("extract.max_tracks", self.max_tracks),
            ("extract.max_events", self.max_events),
            ("extract.max_notes", self.max_notes),
        ] {
            if value == 0 {
                return invalid(key, "must be positive".into());
            }
        }
        if !(self.max_note_seconds.is_normal() && self.max_note_seconds > 0.0) {
            return invalid("extract.max_note_seconds", format!("must be positive, got {}", self.max_note_seconds));
        }
        if !(self.max_rest_seconds.is_normal() && self.max_rest_seconds > 0.0 && self.max_rest_seconds <= 3600.0) {
            return invalid("extract.max_rest_seconds", format!("must be in (0, 3600], got {}", self.max_rest_seconds));
        }
        Ok(())
    }
}

impl EncodeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.chord_window >= 0.0 && self.chord_window < 4.0) {
            return invalid(
                "encode.chord_window",
                format!("must be in [0, 4) quarter notes, got {}", self.chord_window),
            );
        }
        if !(1..=1000).contains(&self.step_ms) {
            return invalid("encode.step_ms", format!("must be in 1..=1000, got {}", self.step_ms));
        }
        if self.max_shift_ms < self.step_ms || self.max_shift_ms > 60_000 {
            return invalid(
                "encode.max_shift_ms",
                format!("must be between encode.step_ms and 60000, got {}", self.max_shift_ms),
            );
        }
        if !(1..=128).contains(&self.velocity_bins) {
            return invalid("encode.velocity_bins", format!("must be in 1..=128, got {}", self.velocity_bins));
        }
        if !(2..=256).contains(&self.tempo_bins) {
            return invalid("encode.tempo_bins", format!("must be in 2..=256, got {}", self.tempo_bins));
        }
        if self.transpose.is_empty() || self.transpose.iter().any(|t| t.abs() > 24) {
            return invalid(
                "encode.transpose",
                format!("must list shifts within ±24 semitones, got {:?}", self.transpose),
            );
        }
        if self.stretch.is_empty() || self.stretch.iter().any(|f| !(0.5..=2.0).contains(f)) {
            return invalid("encode.stretch", format!("must list factors within 0.5..=2.0, got {:?}", self.stretch));
        }
        if self.seq_len < 2 {
            return invalid("encode.seq_len", format!("must be at least 2, got {}", self.seq_len));
        }
        if self.stride == 0 {
            return invalid("encode.stride", "must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return invalid(
                "encode.validation_fraction",
                format!("must be in [0, 1), got {}", self.validation_fraction),
            );
        }
        Ok(())
    }
}

impl TrainConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..1.0).contains(&self.dropout) {
            return invalid("train.dropout", format!("must be in [0, 1), got {}", self.dropout));
        }
        if !(self.learning_rate.is_normal() && self.learning_rate > 0.0 && self.learning_rate < 1.0) {
            return invalid("train.learning_rate", format!("must be in (0, 1), got {}", self.learning_rate));
        }
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return invalid("train.grad_clip", format!("must be 0 (off) or positive, got {}", self.grad_clip));
        }
        if !(self.checkpoint_seconds >= 0.0 && self.checkpoint_seconds.is_finite()) {
            return invalid(
                "train.checkpoint_seconds",
                format!("must be 0 (off) or positive, got {}", self.checkpoint_seconds),
            );
        }
        if !(self.max_minutes >= 0.0 && self.max_minutes.is_finite()) {
            return invalid("train.max_minutes", format!("must be 0 (no limit) or positive, got {}", self.max_minutes));
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs.is_finite()) {
            return invalid("train.warmup_epochs", format!("must be 0 (none) or positive, got {}", self.warmup_epochs));
        }
        if !(self.plateau_decay > 0.0 && self.plateau_decay <= 1.0) {
            return invalid("train.plateau_decay", format!("must be in (0, 1] (1 = off), got {}", self.plateau_decay));
        }
        if !(0.0..1.0).contains(&self.weight_drop) {
            return invalid("train.weight_drop", format!("must be in [0, 1) (0 = off), got {}", self.weight_drop));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return invalid("train.ema_decay", format!("must be in [0, 1) (0 = off), got {}", self.ema_decay));
        }
        Ok(())
    }
}

impl ComposeConfig {
    /// `meter` as (numerator, denominator): a numerator of 1–255 over a power of two up to
    /// 64; `None` when empty or malformed.
    pub fn meter_parts(&self) -> Option<(u8, u8)> {
        music::TimeSignature::parse(&self.meter)
    }

    /// `key` as the scale of its key signature; `None` when empty or malformed.
    pub fn key_scale(&self) -> Option<music::key::Scale> {
        music::key::Scale::from_key_name(&self.key)
    }

    /// The tempo a piece without its own is written at: `tempo_bpm`, or 120 when it is 0.
    pub fn steady_tempo_bpm(&self) -> f64 {
        if self.tempo_bpm > 0.0 { self.tempo_bpm } else { 120.0 }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // Logits are divided by a temperature: a tiny one overflows them to infinity.
        for (key, value) in [
            ("compose.temperature", self.temperature),
            ("compose.shift_temperature", self.shift_temperature),
            ("compose.duration_temperature", self.duration_temperature),
        ] {
            if !(MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&value) {
                return invalid(key, format!("must be in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], got {value}"));
            }
        }
        if !(self.tempo_bpm == 0.0 || (self.tempo_bpm >= 1.0 && self.tempo_bpm <= 1000.0)) {
            return invalid(
                "compose.tempo_bpm",
                format!("must be 0 (the composed tempo) or in [1, 1000], got {}", self.tempo_bpm),
            );
        }
        if !self.key.is_empty() && self.key_scale().is_none() {
            return invalid(
                "compose.key",
                format!("must be empty or a key such as \"D minor\" or \"Eb major\", got {:?}", self.key),
            );
        }
        if !self.meter.is_empty() && self.meter_parts().is_none() {
            return invalid(
                "compose.meter",
                format!("must be empty or a time signature such as \"3/4\" or \"6/8\", got {:?}", self.meter),
            );
        }
        if !(1..=64).contains(&self.phrase_bars) {
            return invalid("compose.phrase_bars", format!("must be in 1..=64, got {}", self.phrase_bars));
        }
        if !(self.step_quarters.is_normal() && self.step_quarters > 0.0 && self.step_quarters <= 16.0) {
            return invalid("compose.step_quarters", format!("must be in (0, 16], got {}", self.step_quarters));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return invalid("compose.top_p", format!("must be in (0, 1], got {}", self.top_p));
        }
        if !(1..=1000).contains(&self.outputs) {
            return invalid("compose.outputs", format!("must be in 1..=1000, got {}", self.outputs));
        }
        if !(self.seconds >= 0.0 && self.seconds.is_finite()) {
            return invalid(
                "compose.seconds",
                format!("must be 0 (use compose.tokens) or positive, got {}", self.seconds),
            );
        }
        if !(self.primer_seconds.is_normal() && self.primer_seconds > 0.0) {
            return invalid("compose.primer_seconds", format!("must be positive, got {}", self.primer_seconds));
        }
        if self.max_shift_run == 0 {
            return invalid("compose.max_shift_run", "must be at least 1".into());
        }
        if self.max_held == 0 {
            return invalid("compose.max_held", "must be at least 1".into());
        }
        if !(self.max_note_seconds.is_normal() && self.max_note_seconds > 0.0 && self.max_note_seconds <= 60.0) {
            return invalid("compose.max_note_seconds", format!("must be in (0, 60], got {}", self.max_note_seconds));
        }
        if !(0.0..=1.0).contains(&self.in_key) {
            return invalid("compose.in_key", format!("must be in [0, 1], got {}", self.in_key));
        }
        if self.max_tempo_drift > 255 {
            return invalid("compose.max_tempo_drift", format!("must be in 0..=255, got {}", self.max_tempo_drift));
        }
        if !(self.phrase_seconds.is_normal() && self.phrase_seconds > 0.0 && self.phrase_seconds <= 3600.0) {
            return invalid("compose.phrase_seconds", format!("must be in (0, 3600], got {}", self.phrase_seconds));
        }
        if !(0.0..=1.0).contains(&self.repeat) {
            return invalid("compose.repeat", format!("must be in [0, 1], got {}", self.repeat));
        }
        if !(1..=127).contains(&self.velocity) {
            return invalid("compose.velocity", format!("must be in 1..=127, got {}", self.velocity));
        }
        Ok(())
    }
}

impl EvaluateConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.ngram < 2 {
            return invalid("evaluate.ngram", format!("must be at least 2, got {}", self.ngram));
        }
        if !(0.0..=1.0).contains(&self.copy_threshold) {
            return invalid("evaluate.copy_threshold", format!("must be in [0, 1], got {}", self.copy_threshold));
        }
        Ok(())
    }
}

/// Sets `section.key` (or a top-level `key`) in `table` from `section.key=value`.
fn apply_override(table: &mut toml::Table, text: &str) -> Result<(), ConfigError> {
    let bad = |message: &str| ConfigError::BadOverride { text: text.to_owned(), message: message.to_owned() };
    let (path, raw_value) = text.split_once('=').ok_or_else(|| bad("expected section.key=value"))?;
    let keys: Vec<&str> = path.trim().split('.').collect();
    if keys.iter().any(|k| k.is_empty()) || keys.len() > 2 {
        return Err(bad("expected section.key=value"));
    }
    // A value is TOML (`5`, `0.8`, `true`, `"x"`); anything TOML rejects is a plain string,
    // so `--set extract.input=~/midi` works without quoting.
    let value = format!("v = {}", raw_value.trim())
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw_value.trim().to_owned()));
    let (table, key) = match keys.as_slice() {
        [key] => (table, *key),
        [section, key] => {
            let entry = table.entry(section.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
            let toml::Value::Table(inner) = entry else {
                return Err(bad(&format!("`{section}` is not a section")));
            };
            (inner, *key)
        }
        _ => unreachable!("checked above: one or two keys"),
    };
    table.insert(key.to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, overrides: &[&str]) -> Result<PipelineConfig, ConfigError> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        PipelineConfig::from_toml(text, Path::new("pipeline.toml"), &overrides)
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(parse("", &[]).unwrap(), PipelineConfig::default());
    }

    #[test]
    fn the_shipped_pipeline_toml_parses() {
        let text = include_str!("../../../pipeline.toml");
        parse(text, &[]).unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[train]\nepoch = 3\n", &[]).unwrap_err().to_string();
        assert!(err.contains("epoch") && err.contains("pipeline.toml"), "{err}");
        let err = parse("[trian]\n", &[]).unwrap_err().to_string();
        assert!(err.contains("trian"), "{err}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = parse("[encode]\nseq_len = 1\n", &[]).unwrap_err().to_string();
        assert!(err.contains("encode.seq_len"), "{err}");
        let err = parse("[compose]\ntemperature = -1.0\n", &[]).unwrap_err().to_string();
        assert!(err.contains("compose.temperature"), "{err}");
        // Denormal and non-finite numbers are refused by name, not run into infinities.
        for (text, key) in [
            ("[compose]\nshift_temperature = 1e-320\n", "compose.shift_temperature"),
            ("[compose]\nduration_temperature = inf\n", "compose.duration_temperature"),
            ("[compose]\nprimer_seconds = 1e-320\n", "compose.primer_seconds"),
            ("[compose]\nmax_note_seconds = nan\n", "compose.max_note_seconds"),
            ("[extract]\nmax_note_seconds = 1e-320\n", "extract.max_note_seconds"),
            ("[train]\nlearning_rate = 1e-320\n", "train.learning_rate"),
            ("[train]\nweight_drop = 1.0\n", "train.weight_drop"),
            ("[train]\nema_decay = -0.5\n", "train.ema_decay"),
            ("[compose]\nkey = \"H major\"\n", "compose.key"),
        ] {
            let err = parse(text, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = parse("[train]\nhidden = \"big\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("hidden"), "{err}");
    }

    #[test]
    fn every_size_that_allocates_is_bounded_by_a_message_naming_its_key() {
        for (text, key) in [
            ("[runtime]\nthreads = 100000\n", "runtime.threads"),
            ("[compose]\ntokens = 10000000000\n", "compose.tokens"),
            ("[train]\nhidden = 4611686018427387904\n", "train.hidden"),
            ("[train]\nbatch_size = 65536\nhidden = 8192\nlayers = 32\n", "train.batch_size"),
            ("[compose]\nmax_held = 0\n", "compose.max_held"),
            ("[extract]\nmax_rest_seconds = 0.0\n", "extract.max_rest_seconds"),
            ("[train]\nmax_minutes = -1.0\n", "train.max_minutes"),
        ] {
            let err = parse(text, &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
        }
    }

    #[test]
    fn the_training_identity_leaves_out_what_only_sets_the_budget() {
        let a = PipelineConfig::default();
        let mut b = a.clone();
        (b.train.epochs, b.train.max_minutes, b.train.checkpoint_steps, b.runtime.threads) = (99, 5.0, 1, 1);
        assert_eq!(a.training_identity(), b.training_identity());
        b.train.hidden = 8;
        assert!(b.training_identity().contains(&("train.hidden".into(), "8".into())));
        assert_ne!(a.training_identity(), b.training_identity());
    }

    #[test]
    fn overrides_apply_and_are_checked() {
        let config =
            parse("[train]\nepochs = 3\n", &["train.epochs=7", "compose.temperature=0.5", "extract.input=~/midi"])
                .unwrap();
        assert_eq!(config.train.epochs, 7);
        assert_eq!(config.compose.temperature, 0.5);
        assert_eq!(config.extract.input, PathBuf::from("~/midi"));
        let err = parse("", &["train.epochz=7"]).unwrap_err().to_string();
        assert!(err.contains("epochz"), "{err}");
        assert!(parse("", &["novalue"]).is_err());
        let err = parse("", &["train.epochs=0"]).unwrap_err().to_string();
        assert!(err.contains("train.epochs"), "{err}");
    }

    #[test]
    fn the_names_encoding_answers_to_its_old_name_too() {
        let parse = |text: &str| PipelineConfig::from_toml(text, Path::new("t.toml"), &[]).unwrap();
        let old = parse("[encode]\nencoding = \"seed\"");
        assert_eq!(old.encode.encoding, EncodingName::Names);
        assert_eq!(old, parse("[encode]\nencoding = \"names\""));
    }

    #[test]
    fn section_digests_change_only_with_their_section() {
        let a = PipelineConfig::default();
        let mut b = a.clone();
        b.compose.temperature = 0.7;
        assert_eq!(a.section_digest(Section::Train), b.section_digest(Section::Train));
        assert_ne!(a.section_digest(Section::Compose), b.section_digest(Section::Compose));
        b.seed += 1;
        assert_ne!(a.section_digest(Section::Encode), b.section_digest(Section::Encode));
        assert_eq!(a.section_digest(Section::Extract), b.section_digest(Section::Extract));
    }

    #[test]
    fn relative_paths_are_read_from_the_config_folder_and_overrides_from_here() {
        let text =
            "[extract]\ninput = \"midi\"\n[train]\ninit = \"models/base.bin\"\n[compose]\nsoundfont = \"/usr/x.sf2\"\n";
        let folder = Path::new("projects/mine");
        let config = PipelineConfig::from_toml(text, &folder.join("pipeline.toml"), &[]).unwrap();
        assert_eq!(config.extract.input, folder.join("midi"));
        assert_eq!(config.train.init, folder.join("models/base.bin"));
        assert_eq!(config.compose.soundfont, "/usr/x.sf2", "an absolute path stays");
        let overrides = ["train.init=other.bin".to_owned(), "extract.input=~/midi".to_owned()];
        let config = PipelineConfig::from_toml(text, &folder.join("pipeline.toml"), &overrides).unwrap();
        assert_eq!(config.train.init, PathBuf::from("other.bin"), "typed at the prompt: from here");
        assert_eq!(config.extract.input, PathBuf::from("~/midi"));
        // The default folder and an empty init (train from scratch) too.
        let config = PipelineConfig::from_toml("", &folder.join("pipeline.toml"), &[]).unwrap();
        assert_eq!((config.extract.input, config.train.init), (folder.join("data"), PathBuf::new()));
        let here = PipelineConfig::from_toml(text, Path::new("pipeline.toml"), &[]).unwrap();
        assert_eq!(here.train.init, PathBuf::from("models/base.bin"));
    }
}
