//! Stage 4, `compose`: `model.bin` (and `dataset.bin` for the start) in, MIDI files out.
//!
//! Starts from a random window of `seq_len` tokens of a training piece of the data set, the
//! opening of a MIDI file (`--primer`), or the model alone (one velocity token, for a
//! shipped model with no data set), runs it through the model, then predicts one token at
//! a time, each fed back as the next input, until `compose.seconds` of music (a `beats`
//! piece: until its close) or `compose.tokens` tokens. The tokens are decoded back to
//! notes by the model's encoding: `beats` tokens are a score, bars of one metre
//! (`compose.meter`, or the model's choice), positions on a grid, the tempo and notes with
//! durations (drawn under [`music::beats::grammar`]); `performance` tokens carry their own
//! timing, durations and velocities (drawn under [`music::grammar`]) and are written in 4/4
//! at `compose.tempo_bpm`; `names` elements follow each other one fixed step
//! (`compose.step_quarters`) apart, chords voiced upwards from middle C's octave, as the
//! original design does. The composer plans the form the network cannot: phrases of
//! `compose.phrase_bars` bars (`beats`) or `compose.phrase_seconds` that restate earlier ones
//! (see [`form`]), a `beats` piece's close, on its key's tonic chord at the end of the
//! phrase nearest `compose.seconds`, slowing (see [`ending`]), and, with `compose.in_key`,
//! keeps the piece in a key (see [`key`]). A model trained on pieces moved into C
//! (`encode.in_c`) composes in C; each piece is then
//! moved into the key asked for (`compose.key`), a primer file's, or one drawn by the seed,
//! and a primer file is moved into C before the model reads it. Each piece is written as a
//! standard MIDI file for piano (program 0) with its time signatures, tempo map and key
//! signature, and its copyright field saying where it comes from, with its piano roll and report
//! beside it.
//!
//! Key design decision: the LSTM state is *carried* from step to step ([`lstm::Generator`]),
//! so each new token costs one step of the network, not a rerun over the whole window, and
//! the model's memory reaches back past the primer window. All `compose.outputs` pieces are
//! generated together as one batch. The network, the dictionary and
//! the decoding rules all come from `model.bin`, so a model keeps composing correctly after
//! `dataset.bin` is rebuilt from other data; the data set only supplies the primer window, and a
//! data set with a different dictionary is refused.

pub mod audio;
pub mod ending;
pub mod form;
pub mod key;

use artifacts::{DatasetArtifact, Encoding, ModelArtifact};
use config::{ComposeConfig, Ending, PipelineConfig, Sampling, Section};
use lstm::{LstmModel, Precision};
use music::beats::{self, Beats};
use music::key::{self as scales, Scale};
use music::midi_out as midi_file;
use music::performance::Event;
use music::{Score, grammar};
use seeded_rng::SeededRng;
use stage_cli::Progress;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum ComposeError {
    Artifact(artifacts::ArtifactError),
    Candle(candle_core::Error),
    /// `dataset.bin` was encoded with another dictionary than the model was trained on.
    VocabularyMismatch {
        dataset: String,
        model: String,
    },
    /// No piece in the data set is long enough to give a primer window.
    NoPrimerWindow {
        seq_len: usize,
    },
    /// The primer file cannot start a piece.
    Primer {
        path: String,
        reason: String,
    },
    /// No data set and no primer, and the model's encoding has no built-in start.
    NoOpening,
    /// `compose.meter` asks for a metre this model cannot write.
    Meter {
        meter: String,
        reason: String,
    },
}

impl fmt::Display for ComposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComposeError::Artifact(e) => e.fmt(f),
            ComposeError::Candle(e) => write!(f, "tensor computation failed: {e}"),
            ComposeError::VocabularyMismatch { dataset, model } => write!(
                f,
                "{dataset} has a different dictionary from the one {model} was trained on; \
                 rerun `train` on this data set (or pass the matching --dataset)"
            ),
            ComposeError::NoPrimerWindow { seq_len } => {
                write!(f, "no training piece in the data set has the {seq_len} tokens a primer window needs")
            }
            ComposeError::Primer { path, reason } => write!(f, "primer {path}: {reason}"),
            ComposeError::NoOpening => write!(
                f,
                "this model's encoding has no built-in start: pass --dataset (the data set it was trained \
                 on) or --primer file.mid"
            ),
            ComposeError::Meter { meter, reason } => write!(f, "compose.meter = {meter:?}: {reason}"),
        }
    }
}

impl std::error::Error for ComposeError {}

impl From<candle_core::Error> for ComposeError {
    fn from(e: candle_core::Error) -> Self {
        ComposeError::Candle(e)
    }
}

/// What [`compose`] made: the generated token strings and the score they decode to.
pub struct Composition {
    pub tokens: Vec<String>,
    pub score: Score,
}

/// Where a piece starts from.
pub enum Start<'a> {
    /// A random window of a training piece of the data set.
    Dataset(&'a Path),
    /// The opening of a MIDI file.
    Primer(&'a Path),
    /// Nothing but the model: the state of a piece's beginning and one token (a velocity
    /// for `performance`, the first bar for `beats`), so a shipped model (`models/*.bin`)
    /// composes with no data set at all.
    Opening,
}

/// Runs the stage: reads `model_path` (and the data set or primer named by `start`) and
/// writes `compose.outputs` MIDI files: `output`, then `<stem>_2.mid`, … Each gets a piano
/// roll (`.svg`) and a report (`.mid.report.json`) beside it.
pub fn run(
    config: &PipelineConfig,
    model_path: &Path,
    start: Start,
    output: &Path,
) -> Result<Vec<PathBuf>, ComposeError> {
    let start_file = match start {
        Start::Dataset(path) | Start::Primer(path) => Some(path),
        Start::Opening => None,
    };
    let inputs: Vec<&Path> = [Some(model_path), start_file].into_iter().flatten().collect();
    for number in 1..=config.compose.outputs {
        artifacts::refuse_input_as_output(&numbered(output, number), &inputs).map_err(ComposeError::Artifact)?;
    }
    let (model_header, model) = artifacts::read::<ModelArtifact>(model_path).map_err(ComposeError::Artifact)?;
    let meter = meter_bar(&model, &config.compose)?;
    let dataset = match start {
        Start::Dataset(path) => {
            let (_, dataset) = artifacts::read::<DatasetArtifact>(path).map_err(ComposeError::Artifact)?;
            if dataset.vocabulary != model.vocabulary || dataset.encoding != model.encoding {
                return Err(ComposeError::VocabularyMismatch {
                    dataset: path.display().to_string(),
                    model: model_path.display().to_string(),
                });
            }
            Some(dataset)
        }
        Start::Primer(_) | Start::Opening => None,
    };
    let (fixed_start, primer_shift) = match start {
        Start::Primer(path) => {
            let (tokens, shift) = primer_tokens(path, &model, config.compose.primer_seconds, &config.extract)?;
            (Some(tokens), Some(shift))
        }
        Start::Opening => (Some(opening_tokens(&model, meter).ok_or(ComposeError::NoOpening)?), None),
        Start::Dataset(_) => (None, None),
    };
    let mut config = config.clone();
    if let Some(longest) = dataset.as_ref().and_then(|d| longest_training_note(d, &model)) {
        // No generated key is held longer than any key of the music the model learned from.
        config.compose.max_note_seconds = config.compose.max_note_seconds.min(longest);
    }
    let config = &config;
    let device = {
        use lstm::Backend;
        lstm::select_device(config.runtime.device.pick(Backend::Auto, Backend::Cpu, Backend::Cuda, Backend::Metal))?
    };
    let mut network = LstmModel::from_named(model.hyperparameters.clone(), &model.weights, &device)?;
    let precision = set_precision(&mut network, config.compose.precision, config.compose.outputs)?;
    // Each output draws from its own random stream, so adding outputs never changes the earlier ones' seeds.
    let mut streams = Vec::with_capacity(config.compose.outputs);
    for number in 1..=config.compose.outputs {
        let mut rng = SeededRng::new(config.seed, &format!("compose {number}"));
        let primer = match (&fixed_start, &dataset) {
            (Some(tokens), _) => tokens.as_slice(),
            (None, Some(dataset)) => pick_primer_window(dataset, model.hyperparameters.seq_len, &mut rng)?,
            (None, None) => unreachable!("a start without a data set has its tokens"),
        };
        streams.push((primer, rng));
    }
    let provenance = format!(
        "pianola {}: model {} (payload {}), seed {}, compose settings {}, {} products",
        env!("CARGO_PKG_VERSION"),
        model_path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        &artifacts::hex(&model_header.payload_digest)[..16],
        config.seed,
        &artifacts::hex(&config.section_digest(Section::Compose))[..16],
        network.precision().pick("f32", "bf16"),
    );
    let mut written = Vec::with_capacity(streams.len());
    for (number, mut composition) in compose(config, &model, &network, streams)?.into_iter().enumerate() {
        move_into_key(&mut composition.score, config, primer_shift, number + 1);
        let path = numbered(output, number + 1);
        write_outputs(&path, &composition, &provenance, &precision)?;
        written.push(path);
    }
    Ok(written)
}

/// Moves output `number`'s notes into its key: by the primer file's move into C, undone,
/// so the piece goes on where its primer was; else, by −5 to +6 semitones, so their
/// best-fitting scale is `compose.key`'s, or one of the twelve drawn for each output from
/// the seed (a model trained `encode.in_c` composes in C, and every piece in C would be a
/// narrower music than the pieces it learned from).
fn move_into_key(score: &mut Score, config: &PipelineConfig, primer_shift: Option<i8>, number: usize) {
    let shift = match (config.compose.key_scale(), primer_shift) {
        (None, Some(into_c)) => -into_c,
        (asked, _) => {
            let scale = asked.unwrap_or_else(|| {
                let mut rng = SeededRng::new(config.seed, &format!("compose key {number}"));
                Scale::of_major(rng.below(12) as u8)
            });
            scales::shift_into(&score.notes, scale)
        }
    };
    scales::transpose(&mut score.notes, shift);
}

/// `generated_music.mid` for the first output, `generated_music_2.mid` for the second, …
pub fn numbered(output: &Path, number: usize) -> PathBuf {
    if number == 1 {
        return output.to_path_buf();
    }
    let stem = output.file_stem().map_or_else(|| "generated_music".into(), |s| s.to_string_lossy().into_owned());
    let extension = output.extension().map_or_else(|| "mid".into(), |e| e.to_string_lossy().into_owned());
    output.with_file_name(format!("{stem}_{number}.{extension}"))
}

/// Generation steps a round of the `compose.precision = "auto"` trial takes: enough that
/// building the generator is a small part of a round.
const PRECISION_TRIAL_STEPS: usize = 64;

/// Sets `compose.precision` on `network`; `"auto"` times rounds of generation at this run's
/// number of `streams` in each precision. Returns what the report says of it.
fn set_precision(network: &mut LstmModel, setting: config::Precision, streams: usize) -> Result<String, ComposeError> {
    let asked = setting.named(Precision::F32, Precision::Bf16);
    let (line, _) = lstm::on_kernel_threads(|| {
        lstm::apply_precision_setting(network, asked, "compose.precision", "tokens", |network| {
            let mut generator = lstm::Generator::new(network, streams)?;
            let tokens = vec![0; streams];
            for _ in 0..PRECISION_TRIAL_STEPS {
                generator.step(&tokens)?;
            }
            Ok(PRECISION_TRIAL_STEPS * streams)
        })
    })?;
    Ok(line)
}

/// The most notes of a primer's opening that start a piece: a few minutes of dense piano.
pub const MAX_PRIMER_NOTES: usize = 5_000;

/// The first `seconds` of a MIDI file (at most [`MAX_PRIMER_NOTES`] notes) as the model's
/// token ids, moved into C major's scale, and the semitones it was moved by. Tokens the
/// model's dictionary lacks (`names` chords it never saw) are left out.
fn primer_tokens(
    path: &Path,
    model: &ModelArtifact,
    seconds: f64,
    limits: &config::ExtractConfig,
) -> Result<(Vec<u32>, i8), ComposeError> {
    let bad = |reason: String| ComposeError::Primer { path: path.display().to_string(), reason };
    // Read as extract reads a file: under its size cap, regular files only (a FIFO would block).
    let bytes = artifacts::read_capped(path, limits.max_file_bytes).map_err(|e| bad(e.to_string()))?;
    // A model that writes the pedal reads a primer's pedal as it learned it: as events.
    let writes_pedal = beats::holds_pedal(&model.vocabulary);
    let mut options = limits.read_options();
    if writes_pedal {
        options.sustain = music::Sustain::Events;
    }
    let (music::Score { notes, metre, pedal }, _) = music::midi_in::read_midi(&bytes, &options).map_err(bad)?;
    let mut opening: Vec<artifacts::Note> = notes.into_iter().filter(|n| n.onset_seconds < seconds).collect();
    if opening.len() > MAX_PRIMER_NOTES {
        // A dense file's opening (a million notes in two seconds) would take the model
        // minutes to read and says no more than its first notes.
        opening.sort_by(|a, b| a.onset_seconds.total_cmp(&b.onset_seconds));
        tracing::warn!(
            "compose: primer {}: {} notes in its first {seconds} s; the first {MAX_PRIMER_NOTES} start the piece",
            path.display(),
            opening.len()
        );
        opening.truncate(MAX_PRIMER_NOTES);
    }
    // Into C, where a model trained `encode.in_c` learned to play (one trained in every
    // key plays there too); the piece is moved back to the primer's key when written.
    let counts = scales::pitch_class_counts(opening.iter().map(|n| n.pitch));
    let scale = Scale::best_fit(&counts);
    let shift = scale.shift_to(Scale::of_major(0));
    scales::transpose(&mut opening, shift);
    let ids: Vec<u32> = music::Codec::new(&model.encoding)
        .with_pedal(writes_pedal)
        .encode(&opening, &metre, &pedal)
        .iter()
        .filter_map(|token| model.vocabulary.id(token))
        .collect();
    if ids.is_empty() {
        return Err(bad(format!("no notes the model knows in its first {seconds} s")));
    }
    tracing::info!(
        "compose: primer {}: {} tokens from its first {seconds} s, in {}",
        path.display(),
        ids.len(),
        scale.key_name(scale.sounds_minor(&counts))
    );
    Ok((ids, shift))
}

/// The longest a key is down in the training pieces of a `performance` data set, in seconds.
fn longest_training_note(dataset: &DatasetArtifact, model: &ModelArtifact) -> Option<f64> {
    let music::Codec::Performance(codec) = music::Codec::new(&model.encoding) else {
        return None;
    };
    // Each dictionary entry parsed once, not once per token of the data set.
    let events: Vec<Option<Event>> = dataset.vocabulary.tokens.iter().map(|t| Event::parse(t)).collect();
    dataset
        .pieces
        .iter()
        .filter(|piece| piece.split == artifacts::Split::Train)
        .flat_map(|piece| {
            let piece_events: Vec<Event> = piece.tokens.iter().filter_map(|&id| events[id as usize]).collect();
            codec.decode(&piece_events, f64::INFINITY)
        })
        .map(|note| note.duration_seconds)
        .reduce(f64::max)
}

/// The bar token `compose.meter` asks for, checked against the model: `None` when no metre
/// is asked for; an error when the model's encoding has no bars (`names`, `performance`)
/// or no bar of that metre.
fn meter_bar(model: &ModelArtifact, settings: &ComposeConfig) -> Result<Option<(u8, u8)>, ComposeError> {
    let Some((numerator, denominator)) = settings.meter_parts() else { return Ok(None) };
    let refuse = |reason: String| ComposeError::Meter { meter: settings.meter.clone(), reason };
    if !matches!(model.encoding, Encoding::Beats { .. }) {
        return Err(refuse(format!(
            "a {} model writes no bars; compose with a `beats` model (models/piano-beats.bin) or leave \
             compose.meter empty",
            model.encoding.name()
        )));
    }
    let bar = beats::Token::Bar { numerator, denominator }.text();
    if model.vocabulary.id(&bar).is_none() {
        let known: Vec<String> = beats::metres().iter().map(|(n, d)| format!("{n}/{d}")).collect();
        return Err(refuse(format!("the model has no bar of that metre; it writes {}", known.join(", "))));
    }
    Ok(Some((numerator, denominator)))
}

/// The built-in start of [`Start::Opening`]: for `performance`, one velocity token of a
/// moderate loudness (`mf`, velocity 64), which is how encoded pieces begin; for `beats`,
/// the first bar, of `meter` or else of 4/4 (the MIDI default). `None` for the `names`
/// encoding, whose pieces have no such neutral first token.
fn opening_tokens(model: &ModelArtifact, meter: Option<(u8, u8)>) -> Option<Vec<u32>> {
    let token = match music::Codec::new(&model.encoding) {
        music::Codec::Performance(codec) => Event::Velocity(codec.bin(64)).token(),
        music::Codec::Beats(_) => {
            let (numerator, denominator) = meter.unwrap_or((4, 4));
            beats::Token::Bar { numerator, denominator }.text()
        }
        music::Codec::Names { .. } => return None,
    };
    model.vocabulary.id(&token).map(|id| vec![id])
}

/// Writes a composition's MIDI file, piano roll and report, and logs its summary.
fn write_outputs(
    output: &Path,
    composition: &Composition,
    provenance: &str,
    precision: &str,
) -> Result<(), ComposeError> {
    let score = &composition.score;
    let bytes = midi_file::to_bytes(score, Some(provenance));
    let report = ComposeReport { precision: precision.to_owned(), ..ComposeReport::new(output, composition) };
    tracing::info!(
        "compose: {} tokens ({} distinct), {} notes from {} to {}, {:.0} s in {} at {}, \
         {:.1} notes/s, up to {} at once, {:.0} % of onsets on the sixteenth/triplet grid, \
         {:.0} % of notes in {}'s scale, {} pedal presses",
        report.elements,
        report.distinct_elements,
        report.notes,
        report.lowest_pitch,
        report.highest_pitch,
        report.seconds,
        report.meter,
        report.tempo,
        report.notes_per_second,
        report.max_polyphony,
        100.0 * report.onsets_on_grid,
        100.0 * report.in_key,
        report.key,
        report.pedal_presses
    );
    let roll: Vec<music::TimedNote> = score.notes.iter().map(music::TimedNote::from).collect();
    let bar_lines: Vec<f64> = score.bars().iter().map(|bar| score.metre.seconds_at(bar.start_quarters)).collect();
    let title = format!("{} — {} at {}", output.display(), report.meter, report.tempo);
    let svg = pictures::piano_roll(&roll, &score.pedal_seconds(), &bar_lines, &title);
    artifacts::write_if_changed(&output.with_extension("svg"), svg.as_bytes()).map_err(ComposeError::Artifact)?;
    let outcome = artifacts::write_with_report(output, &report, || artifacts::write_if_changed(output, &bytes))
        .map_err(ComposeError::Artifact)?;
    stage_cli::log_outcome(output, outcome);
    Ok(())
}

/// What one output holds: logged, and written as `<output>.report.json` (see [`artifacts::report_path`]).
#[derive(Debug, serde::Serialize)]
pub struct ComposeReport {
    pub file: String,
    pub elements: usize,
    pub distinct_elements: usize,
    pub notes: usize,
    pub seconds: f64,
    pub lowest_pitch: String,
    pub highest_pitch: String,
    pub notes_per_second: f64,
    /// The most notes sounding at the same moment.
    pub max_polyphony: usize,
    /// The time signatures written, e.g. `"3/4"` or `"4/4, then 2/4 from bar 9"`.
    pub meter: String,
    /// The tempo written: one figure, or the range of a tempo map, in quarter notes a minute.
    pub tempo: String,
    /// Share of onsets within 1/48 of a quarter note of a sixteenth or an eighth-note
    /// triplet of the written file (see [`music::on_grid`]).
    pub onsets_on_grid: f64,
    /// The key whose signature the file carries: its notes' best-fitting diatonic scale,
    /// major or minor (see [`music::key`])…
    pub key: String,
    /// …and the share of the notes in that scale.
    pub in_key: f64,
    /// Presses of the sustain pedal written (controller 64); 0 from a model without the pedal.
    pub pedal_presses: usize,
    /// The products the network computed in and why (`compose.precision`; with `"auto"`,
    /// the rates measured).
    pub precision: String,
}

impl ComposeReport {
    fn new(output: &Path, composition: &Composition) -> Self {
        let (notes, metre) = (&composition.score.notes, &composition.score.metre);
        let seconds = composition.score.seconds();
        let meter = metre
            .signatures
            .iter()
            .map(|s| {
                let bar = metre.locate(s.at_quarters).bar;
                if bar == 0 {
                    format!("{}/{}", s.numerator, s.denominator)
                } else {
                    format!("{}/{} from bar {}", s.numerator, s.denominator, bar + 1)
                }
            })
            .collect::<Vec<_>>()
            .join(", then ");
        let (slowest, fastest) =
            metre.tempos.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), t| (lo.min(t.bpm), hi.max(t.bpm)));
        let tempo = if fastest - slowest < 0.5 {
            format!("{fastest:.0} BPM")
        } else {
            format!("{slowest:.0}–{fastest:.0} BPM")
        };
        // Sweep over note starts (+1) and ends (−1) at the ticks the file holds them (ends
        // first at one tick), so the count is the file's, not that of times a rounding apart.
        let ticks = music::midi_out::ticks;
        let mut changes: Vec<(u64, i32)> = notes
            .iter()
            .map(|n| (ticks(n.onset_quarters), ticks(n.onset_quarters + n.duration_quarters)))
            .filter(|(start, end)| end > start)
            .flat_map(|(start, end)| [(start, 1), (end, -1)])
            .collect();
        changes.sort_unstable_by_key(|&(tick, change)| (tick, change));
        let (mut sounding, mut max_polyphony) = (0i32, 0i32);
        for (_, change) in changes {
            sounding += change;
            max_polyphony = max_polyphony.max(sounding);
        }
        let distinct: std::collections::BTreeSet<&String> = composition.tokens.iter().collect();
        let pitch_classes = music::key::pitch_class_counts(notes.iter().map(|n| n.pitch));
        let scale = music::key::Scale::best_fit(&pitch_classes);
        ComposeReport {
            file: output.display().to_string(),
            elements: composition.tokens.len(),
            distinct_elements: distinct.len(),
            notes: notes.len(),
            seconds,
            lowest_pitch: artifacts::pitch_name(notes.iter().map(|n| n.pitch).min().unwrap_or(0)),
            highest_pitch: artifacts::pitch_name(notes.iter().map(|n| n.pitch).max().unwrap_or(0)),
            notes_per_second: notes.len() as f64 / seconds.max(1e-9),
            max_polyphony: max_polyphony as usize,
            meter,
            tempo,
            onsets_on_grid: music::on_grid_share(notes.iter().map(|n| n.onset_quarters)),
            key: scale.key_name(scale.sounds_minor(&pitch_classes)),
            in_key: scale.held(&pitch_classes) as f64 / notes.len().max(1) as f64,
            pedal_presses: composition.score.pedal.len(),
            precision: String::new(),
        }
    }
}

/// Generates one piece per `(primer window, random stream)` and decodes them.
///
/// All pieces are generated together, one token of each per network step: a step costs
/// about as much for sixteen streams as for one, since reading the weights dominates.
/// Each piece ends after `compose.seconds` of music when that is set, else after
/// `compose.tokens` tokens (always at most that many). With the `performance` encoding the
/// draws are grammar-constrained (see [`music::grammar`]). Every primer window must have the same length.
pub fn compose(
    config: &PipelineConfig,
    model: &ModelArtifact,
    network: &LstmModel,
    streams: Vec<(&[u32], SeededRng)>,
) -> Result<Vec<Composition>, ComposeError> {
    lstm::on_kernel_threads(|| compose_on_this_thread(config, model, network, streams))
}

fn compose_on_this_thread(
    config: &PipelineConfig,
    model: &ModelArtifact,
    network: &LstmModel,
    streams: Vec<(&[u32], SeededRng)>,
) -> Result<Vec<Composition>, ComposeError> {
    let settings = &config.compose;
    // Seconds of music each token id adds: time shifts (performance) or one step per element
    // (names); `beats` keeps its clock in its grammar. Worked out once per dictionary entry,
    // not parsed again at every step.
    let token_seconds: Vec<f64> = model
        .vocabulary
        .tokens
        .iter()
        .map(|token| match model.encoding {
            Encoding::Performance { step_ms, .. } => match Event::parse(token) {
                Some(Event::Shift(n)) => f64::from(n) * f64::from(step_ms) / 1000.0,
                _ => 0.0,
            },
            Encoding::Names { .. } => settings.step_quarters * 60.0 / settings.steady_tempo_bpm(),
            Encoding::Beats { .. } => 0.0,
        })
        .collect();
    let is_shift: Vec<bool> = token_seconds
        .iter()
        .map(|&seconds| matches!(model.encoding, Encoding::Performance { .. }) && seconds > 0.0)
        .collect();
    // The tokens sampled at a temperature of their own: the rhythm of `performance` (time
    // shifts), the durations of `beats`.
    let retempered = match model.encoding {
        Encoding::Performance { .. } => Retempered { group: is_shift.clone(), temperature: settings.shift_temperature },
        Encoding::Beats { .. } => Retempered {
            group: model
                .vocabulary
                .tokens
                .iter()
                .map(|t| matches!(beats::Token::parse(t), Some(beats::Token::Duration(_))))
                .collect(),
            temperature: settings.duration_temperature,
        },
        Encoding::Names { .. } => Retempered { group: Vec::new(), temperature: settings.temperature },
    };
    let length = match model.encoding {
        Encoding::Beats { .. } => form::Length::Bars(settings.phrase_bars),
        _ => form::Length::Seconds(settings.phrase_seconds),
    };
    let form = form::Form { length, repeat: settings.repeat };
    let primer_length = streams.first().map_or(0, |(primer, _)| primer.len());
    if primer_length == 0 || streams.iter().any(|(primer, _)| primer.len() != primer_length) {
        return Err(ComposeError::NoPrimerWindow { seq_len: primer_length.max(1) });
    }
    let meter = meter_bar(model, settings)?;
    let mut pieces: Vec<Piece> = streams
        .into_iter()
        .map(|(primer, rng)| Piece {
            primer,
            rng,
            rules: Rules::of(model, settings, meter),
            key: key::KeyGuard::new(settings.in_key),
            close: ending::Close::new(
                &model.encoding,
                settings.ending == Ending::Cadence,
                settings.seconds,
                settings.phrase_bars,
            ),
            // `tokens` is an upper bound, and with `seconds` set far from the usual length.
            generated: Vec::with_capacity(settings.tokens.min(1 << 16)),
            at: form::Position::default(),
            phrases: form::Phrases::new(form),
        })
        .collect();
    let vocab = model.vocabulary.len();
    let mut generator = lstm::Generator::new(network, pieces.len())?;

    // Warm the state up on the primer windows; the logits after their last tokens predict the first new ones.
    // A long primer (a dense file's opening) shows its progress as generation does.
    let mut next: Vec<u32> = vec![0; pieces.len()];
    let mut warming = Progress::new("compose: primer", "tokens", primer_length as u64);
    for position in 0..primer_length {
        for (piece, token) in pieces.iter_mut().zip(next.iter_mut()) {
            *token = piece.primer[position];
            piece.join(*token);
        }
        if position + 1 < primer_length {
            generator.step(&next)?;
        }
        warming.advance(1, String::new);
    }
    let done = |piece: &Piece| {
        let time_is_up = settings.seconds > 0.0 && piece.at.seconds >= settings.seconds;
        piece.generated.len() >= settings.tokens || piece.close.ended() || (time_is_up && !piece.close.planned())
    };
    let mut progress = Progress::new("compose", "tokens", (settings.tokens * pieces.len()) as u64);
    while !pieces.iter().all(done) {
        let logits = generator.step(&next)?;
        let mut drawn = 0;
        for ((piece, scores), token) in pieces.iter_mut().zip(logits.chunks_exact(vocab)).zip(next.iter_mut()) {
            if done(piece) {
                continue; // finished pieces ride along; their outputs are ignored
            }
            let restated = piece.phrases.next_restated(|id| piece.rules.allows(id), |id| is_shift[id as usize]);
            *token = match restated {
                Some(id) => id,
                None => draw(scores, &retempered, (&piece.rules, &piece.close, &piece.key), settings, &mut piece.rng),
            };
            if piece.close.ends_with(piece.rules.beats(), *token) {
                piece.close.end();
                drawn += 1;
                continue;
            }
            *token = piece.rules.shorten(*token);
            piece.join(*token);
            piece.generated.push(*token);
            piece.at = piece.rules.advance(piece.at, *token, token_seconds[*token as usize]);
            let rules = &piece.rules;
            piece.phrases.after_token(
                &piece.generated,
                piece.at,
                |phrase| rules.closing_releases(phrase),
                &mut piece.rng,
            );
            if let (Some(bar), Some(bars_left)) = (rules.bar(), piece.phrases.bars_left(piece.at))
                && piece.at.starts_bar
            {
                match piece.close.at_bar_line(bar, piece.at.seconds, bars_left) {
                    ending::Begins::LastPhrase => {
                        piece.phrases.restate_first(&piece.generated, |phrase| rules.closing_releases(phrase))
                    }
                    ending::Begins::Approach => piece.phrases.stop_restating(),
                    ending::Begins::Nothing => {}
                }
            }
            drawn += 1;
        }
        progress.advance(drawn, String::new);
    }

    Ok(pieces
        .iter()
        .map(|piece| {
            let mut generated = piece.generated.as_slice();
            // A `beats` piece ends with the bar token that reached its length: no bar follows.
            if generated.last().is_some_and(|&id| piece.rules.is_bar(id)) && piece.at.seconds >= settings.seconds {
                generated = &generated[..generated.len() - 1];
            }
            let tokens: Vec<String> = generated.iter().map(|&id| model.vocabulary.token(id).to_owned()).collect();
            let mut score = decode_after(&model.encoding, &model.vocabulary, piece.primer, &tokens, settings);
            if piece.close.ended() && settings.tempo_bpm == 0.0 {
                slow_to_the_end(&mut score);
            }
            Composition { tokens, score }
        })
        .collect())
}

/// One piece being generated.
struct Piece<'a> {
    primer: &'a [u32],
    rng: SeededRng,
    rules: Rules,
    key: key::KeyGuard,
    close: ending::Close,
    generated: Vec<u32>,
    /// Where the music stands: seconds (for `beats`, at the last bar line) and bars.
    at: form::Position,
    phrases: form::Phrases,
}

impl Piece<'_> {
    /// Token `id` joins the piece (primer or generated): the guards read it as the piece
    /// stood before it, then the grammar records it.
    fn join(&mut self, id: u32) {
        self.key.observe(self.rules.strikes(id));
        self.close.observe(self.rules.beats(), id);
        self.rules.observe(id);
    }
}

/// The rules a piece's tokens are drawn under: each encoding's grammar (`names` has none).
enum Rules {
    Free,
    Performance(grammar::Grammar),
    Beats(beats::grammar::Grammar),
}

impl Rules {
    fn of(model: &ModelArtifact, settings: &ComposeConfig, meter: Option<(u8, u8)>) -> Rules {
        match model.encoding {
            Encoding::Names { .. } => Rules::Free,
            Encoding::Performance { step_ms, .. } => {
                let limits = grammar::Limits {
                    step_seconds: f64::from(step_ms) / 1000.0,
                    max_shift_run: settings.max_shift_run,
                    max_held: settings.max_held,
                    max_note_seconds: settings.max_note_seconds,
                };
                Rules::Performance(grammar::Grammar::new(&model.vocabulary.tokens, limits))
            }
            Encoding::Beats { velocity_bins, tempo_bins } => {
                let limits = beats::grammar::Limits {
                    max_held: settings.max_held,
                    max_note_seconds: settings.max_note_seconds,
                    metre: meter,
                    max_tempo_drift: settings.max_tempo_drift,
                    notation_grid: settings.notation_grid,
                };
                let codec = Beats { velocity_bins, tempo_bins, pedal: beats::holds_pedal(&model.vocabulary) };
                Rules::Beats(beats::grammar::Grammar::new(&model.vocabulary.tokens, codec, limits))
            }
        }
    }

    fn allows(&self, id: u32) -> bool {
        match self {
            Rules::Free => true,
            Rules::Performance(grammar) => grammar.allows(id),
            Rules::Beats(grammar) => grammar.allows(id),
        }
    }

    fn observe(&mut self, id: u32) {
        match self {
            Rules::Free => {}
            Rules::Performance(grammar) => grammar.observe(id),
            Rules::Beats(grammar) => grammar.observe(id),
        }
    }

    fn mask(&self, scores: &mut [f32]) {
        match self {
            Rules::Free => {}
            Rules::Performance(grammar) => grammar.mask(scores),
            Rules::Beats(grammar) => grammar.mask(scores),
        }
    }

    /// A time shift that would hold a key too long, shortened (`performance`); else `id`.
    fn shorten(&self, id: u32) -> u32 {
        match self {
            Rules::Performance(grammar) => grammar.shorten(id),
            _ => id,
        }
    }

    /// The releases a restated passage needs so no key stays down (`performance`).
    fn closing_releases(&self, phrase: &[u32]) -> Vec<u32> {
        match self {
            Rules::Performance(grammar) => grammar.closing_releases(phrase),
            _ => Vec::new(),
        }
    }

    /// The key token `id` would strike if it came next, if any (`names`: none is known).
    fn strikes(&self, id: u32) -> Option<u8> {
        match self {
            Rules::Free => None,
            Rules::Performance(grammar) => grammar.strikes(id),
            Rules::Beats(grammar) => grammar.strikes(id),
        }
    }

    /// The `beats` grammar, which the close reads the piece through.
    fn beats(&self) -> Option<&beats::grammar::Grammar> {
        match self {
            Rules::Beats(grammar) => Some(grammar),
            _ => None,
        }
    }

    /// The current bar's grid steps and seconds at the tempo in force (`beats`).
    fn bar(&self) -> Option<(u32, f64)> {
        match self {
            Rules::Beats(grammar) => Some(grammar.bar()),
            _ => None,
        }
    }

    fn is_bar(&self, id: u32) -> bool {
        matches!(self, Rules::Beats(grammar) if grammar.is_bar(id))
    }

    /// Where the music stands after token `id` (observed already), which adds `seconds`
    /// (`names`, `performance`); a `beats` piece's clock moves at bar lines, so a piece
    /// ends on one.
    fn advance(&self, at: form::Position, id: u32, seconds: f64) -> form::Position {
        match self {
            Rules::Beats(grammar) => {
                let starts_bar = grammar.is_bar(id);
                form::Position {
                    seconds: if starts_bar { grammar.seconds() } else { at.seconds },
                    bars: at.bars + usize::from(starts_bar),
                    starts_bar,
                }
            }
            _ => form::Position { seconds: at.seconds + seconds, ..at },
        }
    }
}

/// The ritardando of a piece that closed ([`ending::RITARDANDO`]): its second last bar, and
/// its last from the final chord on, each at one tempo, a share of the piece's median.
fn slow_to_the_end(score: &mut Score) {
    let Some(last) = score.notes.iter().map(|n| n.onset_quarters).reduce(f64::max) else { return };
    let bar_quarters = score.metre.locate(last).signature.bar_quarters();
    let median = score.metre.median_bpm(last);
    for (from, share) in [last - bar_quarters, last].into_iter().zip(ending::RITARDANDO) {
        score.steady_from(from.max(0.0), median * share);
    }
}

/// A group of tokens sampled at a temperature of their own.
struct Retempered {
    /// `group[id]`: whether token `id` is in the group.
    group: Vec<bool>,
    temperature: f64,
}

/// The network's choice of the next token from its `scores`: the grammar's, the close's and
/// the key guard's refusals masked, the retempered group at its own temperature, then the
/// configured sampling.
fn draw(
    scores: &[f32],
    retempered: &Retempered,
    (rules, close, key): (&Rules, &ending::Close, &key::KeyGuard),
    settings: &ComposeConfig,
    rng: &mut SeededRng,
) -> u32 {
    let mut scores = scores.to_vec();
    rules.mask(&mut scores);
    close.mask(rules.beats(), &mut scores);
    key.mask(&mut scores, settings.temperature, |id| rules.strikes(id));
    if retempered.temperature != settings.temperature && !retempered.group.is_empty() {
        retemper_group(&mut scores, &retempered.group, settings.temperature, retempered.temperature);
    }
    match settings.sampling {
        Sampling::Argmax => argmax(&scores),
        Sampling::Sample => sample(&scores, settings.temperature, settings.top_k, settings.top_p, rng),
    }
}

/// Rewrites the scores of one group of tokens (`in_group`) so that sampling all scores at
/// `temperature` draws from the group as often as before, but picks within it as if at
/// `group_temperature`. With l the group's scores and LSE the log-sum-exp over the group:
/// l' = T·(l/τ − LSE(l/τ) + LSE(l/T)), so Σ exp(l'/T) = exp(LSE(l/T)) and exp(l'/T) ∝ exp(l/τ).
/// (Scaling raw scores would not do: their offset is arbitrary, so it would also move
/// probability between the group and the rest.)
pub fn retemper_group(scores: &mut [f32], in_group: &[bool], temperature: f64, group_temperature: f64) {
    let group: Vec<usize> = (0..scores.len()).filter(|&i| in_group[i] && scores[i] > f32::NEG_INFINITY).collect();
    let log_sum_exp = |scale: f64| {
        let scaled: Vec<f64> = group.iter().map(|&i| f64::from(scores[i]) / scale).collect();
        let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max + scaled.iter().map(|s| (s - max).exp()).sum::<f64>().ln()
    };
    if group.is_empty() {
        return;
    }
    let offset = log_sum_exp(temperature) - log_sum_exp(group_temperature);
    for &i in &group {
        scores[i] = (temperature * (f64::from(scores[i]) / group_temperature + offset)) as f32;
    }
}

fn argmax(scores: &[f32]) -> u32 {
    scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32)
}

/// A random window of `seq_len` tokens from any training piece long enough to hold one.
/// Validation pieces are never used: they are what the music is measured against.
fn pick_primer_window<'a>(
    dataset: &'a DatasetArtifact,
    seq_len: usize,
    rng: &mut SeededRng,
) -> Result<&'a [u32], ComposeError> {
    let candidates: Vec<&[u32]> = dataset
        .pieces
        .iter()
        .filter(|p| p.split == artifacts::Split::Train)
        .map(|p| p.tokens.as_slice())
        .filter(|t| t.len() >= seq_len)
        .collect();
    if candidates.is_empty() {
        return Err(ComposeError::NoPrimerWindow { seq_len });
    }
    let tokens = candidates[rng.below(candidates.len())];
    let start = rng.below(tokens.len() - seq_len + 1);
    Ok(&tokens[start..start + seq_len])
}

/// Draws an index from softmax(scores / temperature), restricted to the `top_k` best
/// (0 = no limit) and to the smallest set of best tokens whose probability reaches `top_p`
/// (1 = no limit). Computed in f64 after subtracting the maximum, so no temperature can
/// overflow the exponentials; a −∞ score (a masked token) is never drawn.
pub fn sample(scores: &[f32], temperature: f64, top_k: usize, top_p: f64, rng: &mut SeededRng) -> u32 {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut weights: Vec<(usize, f64)> = scores
        .iter()
        .enumerate()
        .map(|(i, &s)| (i, ((f64::from(s) - f64::from(max)) / temperature).exp()))
        .filter(|(_, w)| *w > 0.0)
        .collect();
    if weights.is_empty() {
        return argmax(scores);
    }
    if top_k > 0 || top_p < 1.0 {
        weights.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if top_k > 0 {
            weights.truncate(top_k);
        }
        let total: f64 = weights.iter().map(|w| w.1).sum();
        let mut kept = 0.0;
        let cut = weights.iter().position(|w| {
            kept += w.1;
            kept >= top_p * total
        });
        if let Some(last) = cut {
            weights.truncate(last + 1);
        }
    }
    let total: f64 = weights.iter().map(|w| w.1).sum();
    let mut threshold = rng.unit_f64() * total;
    for &(index, weight) in &weights {
        threshold -= weight;
        if threshold < 0.0 {
            return index as u32;
        }
    }
    // Rounding can leave a sliver past the last weight: the last candidate takes it.
    weights.last().map_or(0, |w| w.0 as u32)
}

/// Decodes generated tokens to a score. `names` elements follow each other every
/// `step_quarters` at one velocity, as in the original design, and `performance` tokens
/// carry their own timing and velocities: both are written in 4/4 at `compose.tempo_bpm`
/// (120 when 0). `beats` tokens carry their bars and tempo, which `compose.tempo_bpm`
/// overrides when set. Decoding is defensive: text that is no token is skipped, a release
/// of a key that is not down is ignored, and a note still sounding after
/// `compose.max_note_seconds` is ended there.
pub fn decode(encoding: &Encoding, tokens: &[String], settings: &ComposeConfig) -> Score {
    let tempo_bpm = settings.steady_tempo_bpm();
    let playback = music::Playback {
        step_seconds: settings.step_quarters * 60.0 / tempo_bpm,
        velocity: settings.velocity,
        tempo_bpm,
    };
    let score = music::Codec::new(encoding).decode(tokens, playback, settings.max_note_seconds);
    match encoding {
        Encoding::Beats { .. } if settings.tempo_bpm > 0.0 => score.at_tempo(settings.tempo_bpm),
        _ => score,
    }
}

/// [`decode`] of tokens generated after `primer`. A `beats` primer usually ends inside a bar,
/// and its tokens say where that bar began and at what tempo: the primer's last bar (with
/// the tempo in force there) is decoded with the generated tokens so that they land in
/// their bar, and its own notes are then left out.
fn decode_after(
    encoding: &Encoding,
    vocabulary: &artifacts::Vocabulary,
    primer: &[u32],
    generated: &[String],
    settings: &ComposeConfig,
) -> Score {
    if !matches!(encoding, Encoding::Beats { .. }) {
        return decode(encoding, generated, settings);
    }
    let parse = |id: &u32| beats::Token::parse(vocabulary.token(*id));
    let Some(bar) = primer.iter().rposition(|id| matches!(parse(id), Some(beats::Token::Bar { .. }))) else {
        return decode(encoding, generated, settings);
    };
    let tempo = primer[..bar].iter().rev().find(|id| matches!(parse(id), Some(beats::Token::Tempo(_))));
    let mut lead: Vec<String> = vec![vocabulary.token(primer[bar]).to_owned()];
    lead.extend(tempo.map(|&id| vocabulary.token(id).to_owned()));
    lead.extend(primer[bar + 1..].iter().map(|&id| vocabulary.token(id).to_owned()));
    let primed: std::collections::BTreeSet<(u8, u64)> = decode(encoding, &lead, settings)
        .notes
        .iter()
        .map(|n| (n.pitch, (n.onset_quarters * 48.0).round() as u64))
        .collect();
    lead.extend(generated.iter().cloned());
    let mut score = decode(encoding, &lead, settings);
    score.notes.retain(|n| !primed.contains(&(n.pitch, (n.onset_quarters * 48.0).round() as u64)));
    score
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_the_distribution_and_temperature() {
        let mut rng = SeededRng::new(1, "t");
        let scores = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let draws: Vec<u32> = (0..20_000).map(|_| sample(&scores, 1.0, 0, 1.0, &mut rng)).collect();
        let ones = draws.iter().filter(|&&d| d == 1).count() as f64 / draws.len() as f64;
        assert!((ones - 0.75).abs() < 0.02, "P(1) = {ones}");
        assert!(draws.iter().all(|&d| d != 2), "a -inf score is never drawn");
        let cold: Vec<u32> = (0..1000).map(|_| sample(&scores, 0.01, 0, 1.0, &mut rng)).collect();
        assert!(cold.iter().all(|&d| d == 1), "a low temperature approaches argmax");
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let mut rng = SeededRng::new(2, "t");
        // Probabilities 0.5, 0.3, 0.15, 0.05.
        let scores: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let drawn = |k, p, rng: &mut SeededRng| -> std::collections::BTreeSet<u32> {
            (0..5000).map(|_| sample(&scores, 1.0, k, p, rng)).collect()
        };
        assert_eq!(drawn(2, 1.0, &mut rng), [0, 1].into());
        assert_eq!(drawn(0, 0.8, &mut rng), [0, 1].into());
        assert_eq!(drawn(0, 0.81, &mut rng), [0, 1, 2].into());
        assert_eq!(drawn(1, 1.0, &mut rng), [0].into());
        assert_eq!(drawn(0, 1.0, &mut rng), [0, 1, 2, 3].into());
    }

    #[test]
    fn a_group_retempered_keeps_its_share_and_sharpens_within() {
        let scores = [2.0f32, 0.0, 1.0, 3.0, f32::NEG_INFINITY];
        let in_group = [false, false, true, true, true];
        let probabilities = |s: &[f32], t: f64| -> Vec<f64> {
            let w: Vec<f64> = s.iter().map(|&x| (f64::from(x) / t).exp()).collect();
            let total: f64 = w.iter().sum();
            w.iter().map(|x| x / total).collect()
        };
        let before = probabilities(&scores, 0.8);
        let mut retempered = scores;
        retemper_group(&mut retempered, &in_group, 0.8, 0.5);
        let after = probabilities(&retempered, 0.8);
        assert!((before[2] + before[3] - after[2] - after[3]).abs() < 1e-6, "the group's share moved");
        assert!((before[0] - after[0]).abs() < 1e-6 && after[4] == 0.0);
        // Within the group, at temperature 0.5: odds exp((3 - 1) / 0.5) = e^4.
        assert!((after[3] / after[2] - 4f64.exp()).abs() < 1e-3 * 4f64.exp());
    }

    #[test]
    fn outputs_are_numbered_after_the_first() {
        let first = Path::new("artifacts/generated_music.mid");
        assert_eq!(numbered(first, 1), first);
        assert_eq!(numbered(first, 3), Path::new("artifacts/generated_music_3.mid"));
    }

    #[test]
    fn names_decoding_places_elements_on_a_fixed_grid() {
        let tokens: Vec<String> = ["C4", "4.7.11", "G4"].iter().map(|s| s.to_string()).collect();
        let settings = ComposeConfig { velocity: 70, tempo_bpm: 100.0, ..ComposeConfig::default() };
        let notes = decode(&Encoding::Names { chord_window_quarters: 0.0 }, &tokens, &settings).notes;
        let summary: Vec<(u8, f64)> = notes.iter().map(|n| (n.pitch, n.onset_quarters)).collect();
        assert_eq!(summary, vec![(60, 0.0), (64, 0.5), (67, 0.5), (71, 0.5), (67, 1.0)]);
        assert!(notes.iter().all(|n| (n.duration_quarters - 0.5).abs() < 1e-12 && n.velocity == 70));
    }

    #[test]
    fn performance_decoding_keeps_timing_and_velocity_in_beats() {
        let tokens: Vec<String> =
            ["vel:20", "on:60", "shift:50", "off:60", "off:61", "on:64"].iter().map(|s| s.to_string()).collect();
        let encoding = Encoding::Performance { step_ms: 10, max_shift_steps: 100, velocity_bins: 32 };
        let settings = ComposeConfig { tempo_bpm: 120.0, ..ComposeConfig::default() };
        let notes = decode(&encoding, &tokens, &settings).notes;
        // 0.5 s at 120 BPM is one quarter; the hanging E4 keeps one 10 ms step.
        assert_eq!(notes.len(), 2);
        assert_eq!((notes[0].pitch, notes[0].velocity), (60, 78));
        assert!((notes[0].duration_quarters - 1.0).abs() < 1e-9 && (notes[1].onset_quarters - 1.0).abs() < 1e-9);
    }
}
