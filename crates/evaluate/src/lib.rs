//! Stage 5, `evaluate`: how good are the model and its music?
//!
//! Reads `dataset.bin`, `model.bin`, `notes.bin` and any number of generated MIDI files;
//! writes `evaluation.json`, a readable `evaluation.md`, and two pictures comparing the
//! generated music with the held-out pieces (`evaluation_pitch_classes.svg`,
//! `evaluation_inter_onset.svg`). Three kinds of figures:
//!
//! - the model, on the validation pieces only (never augmented): cross-entropy in nats per
//!   token, perplexity, top-1 and top-5 accuracy, the same loss per note and per second of
//!   music (so encodings that spend different numbers of tokens on a note compare fairly),
//!   and the loss by token type; and whether it knows the key ([`KeySense`]);
//! - the music ([`music`]): the generated pieces against the validation pieces by the
//!   split's definitions that `quality` uses ([`quality`]: seven histograms as overlap and
//!   KL divergence; repetition, pulse, density, onsets on the grid), so the two never
//!   disagree about one piece;
//! - memorisation ([`memorisation`]): the longest run of tokens and of notes copied from
//!   the training set, from which piece and where, and the share of copied n-grams.
//!
//! Key design decision: the model figures are computed over exactly what `train` validates
//! on — every validation piece read start to end, the state carried from window to window,
//! as compose runs the model — so the loss here equals the validation loss `model.bin`
//! records (after its calibration, `train.calibrate`; a test checks it), and the per-note
//! and per-second figures scale that one number by the validation pieces' tokens per note
//! and per second.

pub mod ending;
pub mod memorisation;
pub mod music;
pub mod quality;

use artifacts::{DatasetArtifact, ModelArtifact, NotesArtifact, Split};
use candle_core::{D, Device};
use config::PipelineConfig;
use lstm::LstmModel;
use music::MusicStats;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Everything `evaluate` measured; `evaluation.json`.
#[derive(Debug, Serialize)]
pub struct Evaluation {
    pub encoding: String,
    pub model: Option<ModelFigures>,
    pub validation_music: MusicStats,
    pub generated: Vec<GeneratedFigures>,
    /// All generated pieces pooled, against the validation pieces.
    pub generated_total: Option<MusicComparison>,
}

/// The model's figures on the validation pieces.
#[derive(Debug, Serialize)]
pub struct ModelFigures {
    pub targets: usize,
    pub nats_per_token: f64,
    pub perplexity: f64,
    pub top1_accuracy: f64,
    pub top5_accuracy: f64,
    pub nats_per_note: f64,
    pub nats_per_second: f64,
    /// Token type → (targets, nats per token).
    pub by_token_type: BTreeMap<String, (usize, f64)>,
    /// `None` where no token names a key by itself.
    pub key_sense: Option<KeySense>,
}

/// Whether the model knows a piece's key: at every target that names a key by itself
/// (`beats`' lowest key of an onset, `performance`'s press, a `names` note), the share of
/// the probability it gives such tokens that falls on keys of the piece's scale (the
/// best-fitting scale of those tokens in the piece, [`::music::key::Scale::best_fit`]),
/// beside how often the true key is in it. A model blind to the key puts the scale's share
/// of the twelve pitch classes there, 7/12.
#[derive(Debug, Serialize)]
pub struct KeySense {
    pub targets: usize,
    /// Mean over those targets of the probability on the scale's keys, of that on all keys.
    pub model_in_scale: f64,
    /// The share of those targets whose true key is in the scale.
    pub true_in_scale: f64,
}

#[derive(Debug, Serialize)]
pub struct MusicComparison {
    pub stats: MusicStats,
    pub against_validation: Vec<music::Comparison>,
}

#[derive(Debug, Serialize)]
pub struct GeneratedFigures {
    pub file: String,
    /// BLAKE3 of the MIDI file's bytes, so a reader can tell whether these figures still
    /// describe the file of that name.
    pub blake3: String,
    pub music: MusicComparison,
    pub longest_copied_tokens: memorisation::CopiedRun,
    pub longest_copied_notes: memorisation::CopiedRun,
    /// Share of the piece's n-note pitch patterns (n = `evaluate.ngram`) found in the training set.
    pub copied_ngram_share: f64,
    /// True when `copied_ngram_share` exceeds `evaluate.copy_threshold`.
    pub flagged_as_copy: bool,
}

/// Why the stage failed.
#[derive(Debug)]
pub enum EvaluateError {
    Artifact(artifacts::ArtifactError),
    Candle(candle_core::Error),
    /// A generated piece that could not be read: the path and the reason, in one line.
    Midi(String),
    Mismatch(String),
}

impl std::fmt::Display for EvaluateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvaluateError::Artifact(e) => e.fmt(f),
            EvaluateError::Candle(e) => write!(f, "tensor computation failed: {e}"),
            EvaluateError::Midi(reason) => f.write_str(reason),
            EvaluateError::Mismatch(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for EvaluateError {}

impl From<candle_core::Error> for EvaluateError {
    fn from(e: candle_core::Error) -> Self {
        EvaluateError::Candle(e)
    }
}

/// The inputs of one evaluation.
pub struct Inputs<'a> {
    pub dataset: &'a Path,
    pub model: &'a Path,
    pub notes: &'a Path,
    pub generated: &'a [PathBuf],
}

/// Runs the stage and writes `output` (`evaluation.json`) and its companions beside it.
pub fn run(config: &PipelineConfig, inputs: Inputs, output: &Path) -> Result<Evaluation, EvaluateError> {
    let read_error = EvaluateError::Artifact;
    let mut read = vec![inputs.dataset, inputs.model, inputs.notes];
    read.extend(inputs.generated.iter().map(PathBuf::as_path));
    // Nothing it reads is overwritten by anything it writes: the JSON, the Markdown, the pictures.
    let pictures = PICTURES.map(|(name, _)| picture_path(output, name));
    for written in [output.to_path_buf(), output.with_extension("md")].iter().chain(&pictures) {
        artifacts::refuse_input_as_output(written, &read).map_err(read_error)?;
    }
    let (dataset_header, dataset, dataset_digest) =
        artifacts::read_with_digest::<DatasetArtifact>(inputs.dataset).map_err(read_error)?;
    let (model_header, model) = artifacts::read::<ModelArtifact>(inputs.model).map_err(read_error)?;
    let (notes, notes_digest) = artifacts::read_input::<NotesArtifact>(inputs.notes).map_err(read_error)?;
    // Each artifact records the digest of the one it was made from: the three must be one chain.
    for (made, header, (from, from_digest), stage) in [
        (inputs.dataset, &dataset_header, (inputs.notes, notes_digest), "encode"),
        (inputs.model, &model_header, (inputs.dataset, dataset_digest), "train"),
    ] {
        if !header.inputs.iter().any(|input| input.digest == from_digest.digest) {
            return Err(EvaluateError::Mismatch(format!(
                "{} was not made from {}; pass the files of one run, or rerun `{stage}`",
                made.display(),
                from.display()
            )));
        }
    }
    if dataset.vocabulary != model.vocabulary || dataset.encoding != model.encoding {
        return Err(EvaluateError::Mismatch(format!(
            "{} and {} use different dictionaries; rerun `train` on this data set",
            inputs.dataset.display(),
            inputs.model.display()
        )));
    }
    let device = {
        use lstm::Backend;
        lstm::select_device(config.runtime.device.pick(Backend::Auto, Backend::Cpu, Backend::Cuda, Backend::Metal))?
    };
    let evaluation = evaluate(config, &dataset, &model, &notes, inputs.generated, &device)?;

    let json = serde_json::to_string_pretty(&evaluation).expect("plain data serializes") + "\n";
    artifacts::write_if_changed(output, json.as_bytes()).map_err(read_error)?;
    let pictures = write_pictures(&evaluation, output).map_err(read_error)?;
    let markdown = markdown(&evaluation, &pictures);
    artifacts::write_if_changed(&output.with_extension("md"), markdown.as_bytes()).map_err(read_error)?;
    if let Some(m) = &evaluation.model {
        tracing::info!(
            "evaluate: validation {:.3} nats/token (perplexity {:.1}), top-1 {:.1} %, top-5 {:.1} %, \
             {:.2} nats/note, {:.2} nats/s",
            m.nats_per_token,
            m.perplexity,
            m.top1_accuracy * 100.0,
            m.top5_accuracy * 100.0,
            m.nats_per_note,
            m.nats_per_second
        );
    }
    for g in &evaluation.generated {
        tracing::info!(
            "evaluate: {}: pitch-class overlap {:.2}, longest copy {} tokens / {} notes ({}), {:.0} % of {}-note patterns copied{}",
            g.file,
            g.music.against_validation[0].overlap,
            g.longest_copied_tokens.length,
            g.longest_copied_notes.length,
            g.longest_copied_notes.source,
            g.copied_ngram_share * 100.0,
            config.evaluate.ngram,
            if g.flagged_as_copy { " — FLAGGED as a copy" } else { "" }
        );
    }
    tracing::info!("wrote {} and {}", output.display(), output.with_extension("md").display());
    Ok(evaluation)
}

/// A MIDI file as `evaluate` and `quality` measure it: the music as heard, and as written.
pub struct HeardPiece {
    /// The notes, with the sustain pedal applied to their durations unless
    /// `extract.sustain = "ignore"`.
    pub notes: Vec<artifacts::Note>,
    /// The file as a score: its notes as played, its metre, the pedal's presses apart (as
    /// a `beats` model with the pedal reads a file).
    pub written: ::music::Score,
    /// The pedal's presses as `(down, up)` seconds, onset order (empty where
    /// `extract.sustain = "ignore"`).
    pub pedal: Vec<(f64, f64)>,
    pub digest: artifacts::Digest,
}

/// Reads a MIDI file as extract does (its size cap, regular files only, the sustain pedal
/// as configured, but applied where extract keeps it as events: these figures are of the
/// music as heard, and the presses are kept beside the notes): how `evaluate` and
/// `quality` read every piece they measure.
pub fn read_midi_file(path: &Path, limits: &config::ExtractConfig) -> Result<HeardPiece, String> {
    let sustain = match limits.sustain {
        ::music::Sustain::Events => ::music::Sustain::Apply,
        configured => configured,
    };
    let bytes = read_bytes(path, limits)?;
    // The reader applies the pedal key by key on each channel; the notes heard stay as it
    // reads them, and the same bytes are parsed again as written, the presses apart.
    let heard = parse_score(&bytes, path, limits, sustain)?;
    let written = parse_score(&bytes, path, limits, ::music::Sustain::Events)?;
    let pedal = match sustain {
        ::music::Sustain::Ignore => Vec::new(),
        _ => written.pedal_seconds(),
    };
    Ok(HeardPiece { notes: heard.notes, written, pedal, digest: artifacts::digest(&bytes) })
}

/// A file's bytes, under extract's size cap.
fn read_bytes(path: &Path, limits: &config::ExtractConfig) -> Result<Vec<u8>, String> {
    artifacts::read_capped(path, limits.max_file_bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// `bytes`, the file at `path`, as a score under extract's caps with the pedal as `sustain` says.
fn parse_score(
    bytes: &[u8],
    path: &Path,
    limits: &config::ExtractConfig,
    sustain: ::music::Sustain,
) -> Result<::music::Score, String> {
    let options = ::music::ReadOptions { sustain, ..limits.read_options() };
    let (score, _) = ::music::midi_in::read_midi(bytes, &options).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(score)
}

/// Computes every figure; see the crate documentation.
pub fn evaluate(
    config: &PipelineConfig,
    dataset: &DatasetArtifact,
    model: &ModelArtifact,
    notes: &NotesArtifact,
    generated: &[PathBuf],
    device: &Device,
) -> Result<Evaluation, EvaluateError> {
    let by_path: BTreeMap<&str, &artifacts::ExtractedFile> = notes.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let originals = |split| dataset.pieces.iter().filter(move |p| p.split == split && p.augmentation.is_none());
    let validation_notes: Vec<Vec<artifacts::Note>> =
        originals(Split::Validation).filter_map(|p| by_path.get(p.source.as_str())).map(|f| f.notes.clone()).collect();
    let validation_music = MusicStats::of(&validation_notes);
    let validation_tokens: usize = originals(Split::Validation).map(|p| p.tokens.len()).sum();

    let model_figures = model_figures(dataset, model, device)?.map(|mut figures| {
        figures.nats_per_note =
            figures.nats_per_token * validation_tokens as f64 / validation_music.notes.max(1) as f64;
        figures.nats_per_second =
            figures.nats_per_token * validation_tokens as f64 / validation_music.seconds.max(1e-9);
        figures
    });

    // The training set, as the model saw it (tokens, augmented copies included) and as notes.
    let training_tokens: Vec<(String, Vec<u32>)> = dataset
        .pieces
        .iter()
        .filter(|p| p.split == Split::Train)
        .map(|p| (p.source.clone(), p.tokens.clone()))
        .collect();
    let training_pitches: Vec<(String, Vec<u8>)> = originals(Split::Train)
        .filter_map(|p| by_path.get(p.source.as_str()))
        .map(|f| (f.path.clone(), f.notes.iter().map(|n| n.pitch).collect()))
        .collect();
    // A model whose dictionary has the pedal read it as events: its copies are compared so.
    let writes_pedal = ::music::beats::holds_pedal(&dataset.vocabulary);
    let codec = ::music::Codec::new(&dataset.encoding).with_pedal(writes_pedal);

    let mut figures = Vec::with_capacity(generated.len());
    let mut all_generated = Vec::with_capacity(generated.len());
    for path in generated {
        let HeardPiece { notes: piece, written, digest, .. } =
            read_midi_file(path, &config.extract).map_err(EvaluateError::Midi)?;
        let texts = if writes_pedal {
            codec.encode(&written.notes, &written.metre, &written.pedal)
        } else {
            codec.encode(&piece, &written.metre, &[])
        };
        let tokens: Vec<u32> = texts.iter().filter_map(|t| dataset.vocabulary.id(t)).collect();
        let pitches: Vec<u8> = piece.iter().map(|n| n.pitch).collect();
        let share = memorisation::copied_ngram_share(&pitches, &training_pitches, config.evaluate.ngram);
        let stats = MusicStats::of(std::slice::from_ref(&piece));
        figures.push(GeneratedFigures {
            file: path.display().to_string(),
            blake3: artifacts::hex(&digest),
            music: MusicComparison { against_validation: music::compare(&stats, &validation_music), stats },
            longest_copied_tokens: memorisation::longest_copied_run(&tokens, &training_tokens),
            longest_copied_notes: memorisation::longest_copied_run(&pitches, &training_pitches),
            copied_ngram_share: share,
            flagged_as_copy: share > config.evaluate.copy_threshold,
        });
        all_generated.push(piece);
    }
    let generated_total = (!all_generated.is_empty()).then(|| {
        let stats = MusicStats::of(&all_generated);
        MusicComparison { against_validation: music::compare(&stats, &validation_music), stats }
    });
    Ok(Evaluation {
        encoding: dataset.encoding.name().to_string(),
        model: model_figures,
        validation_music,
        generated: figures,
        generated_total,
    })
}

/// The key a token names by itself, if it does.
fn named_key(token: &str) -> Option<u8> {
    match token.split_once(':') {
        Some(("pitch" | "on", value)) => value.parse().ok(),
        Some(_) => None,
        None => artifacts::parse_pitch_name(token),
    }
}

/// Of the probability `log_probabilities` gives the tokens that name a key (`keys[id]`),
/// the share on keys `scale` holds; `None` where it gives them none.
fn share_in_scale(log_probabilities: &[f32], keys: &[Option<u8>], scale: ::music::key::Scale) -> Option<f64> {
    let (mut all, mut held) = (0.0f64, 0.0f64);
    for (&log_p, key) in log_probabilities.iter().zip(keys) {
        if let Some(key) = key {
            let p = f64::from(log_p).exp();
            all += p;
            held += if scale.holds(*key) { p } else { 0.0 };
        }
    }
    (all > 0.0).then(|| held / all)
}

/// The type of a token, for the loss by type: performance `on`/`off`/`shift`/`vel`, beats
/// `bar`/`pos`/`tempo`/`vel`/`pitch`/`up`/`dur`/`pedal`, names `note`/`chord`.
fn token_type(token: &str) -> &'static str {
    if token == "pedal" {
        return "pedal";
    }
    match token.split_once(':').map(|(kind, _)| kind) {
        Some("on") => "press",
        Some("off") => "release",
        Some("shift") => "time shift",
        Some("vel") => "velocity",
        Some("bar") => "bar",
        Some("pos") => "position",
        Some("tempo") => "tempo",
        Some("pitch") => "lowest key",
        Some("up") => "step up",
        Some("dur") => "duration",
        _ if artifacts::parse_pitch_name(token).is_some() => "note",
        _ => "chord",
    }
}

/// Loss, accuracy and loss by type over the validation pieces (`None` without any), each
/// read start to end with the state carried, as train validates and compose generates.
fn model_figures(
    dataset: &DatasetArtifact,
    model: &ModelArtifact,
    device: &Device,
) -> Result<Option<ModelFigures>, EvaluateError> {
    let batches = lstm::whole_pieces(dataset, Split::Validation, 32);
    if batches.is_empty() {
        return Ok(None);
    }
    let network = LstmModel::from_named(model.hyperparameters.clone(), &model.weights, device)?;
    let (mut nats, mut top1, mut top5, mut targets) = (0.0f64, 0usize, 0usize, 0usize);
    let mut by_type: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    let keys: Vec<Option<u8>> = dataset.vocabulary.tokens.iter().map(|t| named_key(t)).collect();
    // Each piece's scale, fitted once: the batches read every piece a window at a time.
    let scale_of_piece: Vec<::music::key::Scale> = dataset
        .pieces
        .iter()
        .map(|piece| {
            let named = piece.tokens.iter().filter_map(|&id| keys[id as usize]);
            ::music::key::Scale::best_fit(&::music::key::pitch_class_counts(named))
        })
        .collect();
    let (mut key_targets, mut model_in_scale, mut true_in_scale) = (0usize, 0.0f64, 0usize);
    let mut batch_windows = batches.iter();
    lstm::read_in_order(&network, dataset, &batches, device, |logits, expected| {
        let rows = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
        let expected = expected.to_vec1::<u32>()?;
        // Rows are time-major: row t·B + b is window b's position t.
        let windows = batch_windows.next().expect("one batch of windows per call");
        for (index, (row, &target)) in rows.iter().zip(&expected).enumerate() {
            if let Some(key) = keys[target as usize] {
                let scale = scale_of_piece[windows[index % windows.len()].piece];
                if let Some(share) = share_in_scale(row, &keys, scale) {
                    key_targets += 1;
                    model_in_scale += share;
                    true_in_scale += usize::from(scale.holds(key));
                }
            }
            let score = row[target as usize];
            let better = row.iter().filter(|&&s| s > score).count();
            nats -= f64::from(score);
            top1 += usize::from(better == 0);
            top5 += usize::from(better < 5);
            targets += 1;
            let entry = by_type.entry(token_type(dataset.vocabulary.token(target)).to_string()).or_default();
            entry.0 += 1;
            entry.1 -= f64::from(score);
        }
        Ok(())
    })?;
    for entry in by_type.values_mut() {
        entry.1 /= entry.0 as f64;
    }
    let nats_per_token = nats / targets as f64;
    Ok(Some(ModelFigures {
        targets,
        nats_per_token,
        perplexity: nats_per_token.exp(),
        top1_accuracy: top1 as f64 / targets as f64,
        top5_accuracy: top5 as f64 / targets as f64,
        nats_per_note: 0.0,
        nats_per_second: 0.0,
        by_token_type: by_type,
        key_sense: (key_targets > 0).then(|| KeySense {
            targets: key_targets,
            model_in_scale: model_in_scale / key_targets as f64,
            true_in_scale: true_in_scale as f64 / key_targets as f64,
        }),
    }))
}

/// The two comparison pictures: `<output stem>_<name>.svg` and their titles.
const PICTURES: [(&str, &str); 2] =
    [("pitch_classes", "Pitch classes"), ("inter_onset", "Inter-onset intervals (seconds)")];

/// Where the picture `name` goes beside `output`: `<output stem>_<name>.svg`.
fn picture_path(output: &Path, name: &str) -> PathBuf {
    let stem = output.file_stem().map_or_else(|| "evaluation".into(), |s| s.to_string_lossy().into_owned());
    output.with_file_name(format!("{stem}_{name}.svg"))
}

/// The two comparison pictures, as (file name, path) for the Markdown.
fn write_pictures(evaluation: &Evaluation, output: &Path) -> Result<Vec<(String, PathBuf)>, artifacts::ArtifactError> {
    let Some(total) = &evaluation.generated_total else { return Ok(Vec::new()) };
    const CLASSES: [&str; 12] = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];
    let edges = quality::TIME_EDGES;
    let time_labels: Vec<String> = edges
        .iter()
        .enumerate()
        .map(|(i, low)| edges.get(i + 1).map_or_else(|| format!("≥{low}"), |high| format!("{low}–{high}")))
        .collect();
    let class_labels: Vec<String> = CLASSES.iter().map(|c| c.to_string()).collect();
    let (g, v) = (&total.stats.histograms, &evaluation.validation_music.histograms);
    let [(classes, classes_title), (onsets, onsets_title)] = PICTURES;
    let pictures = [
        (classes, classes_title, class_labels, &g.pitch_class, &v.pitch_class),
        (onsets, onsets_title, time_labels, &g.inter_onset, &v.inter_onset),
    ];
    let mut written = Vec::new();
    for (name, title, labels, generated, validation) in pictures {
        let svg = pictures::histogram_pair(title, &labels, ("generated", generated), ("validation pieces", validation));
        let path = picture_path(output, name);
        artifacts::write_if_changed(&path, svg.as_bytes())?;
        written.push((title.to_string(), path));
    }
    Ok(written)
}

/// `text` (a file name) as literal Markdown: every ASCII punctuation character that Markdown
/// or a table reads escaped with a backslash, and `<` `>` `&` as entities, so a name never
/// becomes a link, a tag, emphasis or a new table cell.
pub fn markdown_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// `evaluation.md`: the figures as tables, with the pictures.
fn markdown(e: &Evaluation, pictures: &[(String, PathBuf)]) -> String {
    let mut md = format!("# Evaluation\n\nEncoding: `{}`.\n\n## The model, on the validation pieces\n\n", e.encoding);
    match &e.model {
        None => md.push_str("No validation piece long enough for a window: no model figures.\n"),
        Some(m) => {
            let _ = writeln!(md, "| figure | value |\n|---|---|");
            let _ = writeln!(md, "| targets | {} |", m.targets);
            let _ = writeln!(md, "| cross-entropy | {:.3} nats per token |", m.nats_per_token);
            let _ = writeln!(md, "| perplexity | {:.1} |", m.perplexity);
            let _ = writeln!(
                md,
                "| top-1 / top-5 accuracy | {:.1} % / {:.1} % |",
                m.top1_accuracy * 100.0,
                m.top5_accuracy * 100.0
            );
            let _ = writeln!(md, "| per note | {:.2} nats |", m.nats_per_note);
            let _ = writeln!(md, "| per second of music | {:.2} nats |", m.nats_per_second);
            for (kind, (count, loss)) in &m.by_token_type {
                let _ = writeln!(md, "| {kind} tokens ({count}) | {loss:.3} nats per token |");
            }
            if let Some(k) = &m.key_sense {
                let _ = writeln!(
                    md,
                    "| where a key comes next ({}): probability on the piece's scale, and how often the true key is in it | {:.3} and {:.3} (blind to the key: 7/12 = 0.583) |",
                    k.targets, k.model_in_scale, k.true_in_scale
                );
            }
        }
    }
    md.push_str("\n## The music, against the validation pieces\n\n");
    md.push_str("By the definitions `make quality` uses (`crates/evaluate/src/quality.rs`). Overlap: area shared by the two normalised histograms (1 = identical). KL: divergence of the generated from the validation distribution, in nats (0 = identical).\n\n");
    let mut rows = vec![("all generated pieces".to_string(), e.generated_total.as_ref())];
    rows.extend(e.generated.iter().map(|g| (g.file.clone(), Some(&g.music))));
    for (name, comparison) in rows {
        let Some(c) = comparison else { continue };
        let _ = writeln!(md, "### {}\n\n| statistic | overlap | KL |\n|---|---|---|", markdown_text(&name));
        for row in &c.against_validation {
            let _ = writeln!(md, "| {} | {:.3} | {:.3} |", row.statistic, row.overlap, row.kl_divergence);
        }
        let s = &c.stats;
        let v = &e.validation_music;
        let _ = writeln!(
            md,
            "\n{} notes, {:.1} notes/s (validation {:.1}), pitches {}–{} (validation {}–{}), mean pitch {:.1} (validation {:.1}), repetition {:.2} (validation {:.2}), pulse {:.2} (validation {:.2}), onsets on the grid {:.2} (validation {:.2}).\n",
            s.notes,
            s.notes_per_second,
            v.notes_per_second,
            s.lowest_pitch,
            s.highest_pitch,
            v.lowest_pitch,
            v.highest_pitch,
            s.mean_pitch,
            v.mean_pitch,
            s.repetition,
            v.repetition,
            s.pulse,
            v.pulse,
            s.onsets_on_grid,
            v.onsets_on_grid
        );
    }
    for (title, path) in pictures {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let _ = writeln!(md, "![{title}](<{}>)\n", name.replace(['<', '>'], ""));
    }
    md.push_str("## Memorisation\n\n| piece | longest copied run (tokens) | longest copied run (notes) | from | copied patterns | flag |\n|---|---|---|---|---|---|\n");
    for g in &e.generated {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} at note {} | {:.0} % | {} |",
            markdown_text(&g.file),
            g.longest_copied_tokens.length,
            g.longest_copied_notes.length,
            markdown_text(&g.longest_copied_notes.source),
            g.longest_copied_notes.position,
            g.copied_ngram_share * 100.0,
            if g.flagged_as_copy { "copy" } else { "" }
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sense_counts_the_probability_on_keys_of_the_scale() {
        let tokens = ["pitch:60", "pitch:61", "up:4", "dur:6", "on:62", "C#4", "4.7.11"];
        let keys: Vec<Option<u8>> = tokens.iter().map(|t| named_key(t)).collect();
        assert_eq!(keys, [Some(60), Some(61), None, None, Some(62), Some(61), None]);
        // C (0.4), C♯ (0.1 + 0.1), D (0.2); the step and the duration (0.2) name no key.
        let log_p: Vec<f32> = [0.4f32, 0.1, 0.1, 0.1, 0.2, 0.1, 0.0].iter().map(|p| p.ln()).collect();
        let share = share_in_scale(&log_p, &keys, ::music::key::Scale::of_major(0)).unwrap();
        assert!((share - 0.6 / 0.8).abs() < 1e-6, "{share}");
        let nothing = vec![f32::NEG_INFINITY; tokens.len()];
        assert_eq!(share_in_scale(&nothing, &keys, ::music::key::Scale::of_major(0)), None);
    }

    #[test]
    fn a_file_is_measured_as_heard_with_its_pedal_presses_beside_it() {
        // At 120 BPM: a note released after half a beat under a pedal held two beats.
        let notes =
            vec![::music::Note::of_score(60, 80, 0.0, 0.5, 120.0), ::music::Note::of_score(64, 80, 3.0, 1.0, 120.0)];
        let pedal = vec![::music::PedalPress { onset_quarters: 0.0, duration_quarters: 2.0 }];
        let score = ::music::Score { notes, metre: ::music::Metre::steady(4, 4, 120.0), pedal };
        let path = std::env::temp_dir().join(format!("pianola-heard-{}.mid", std::process::id()));
        std::fs::write(&path, ::music::midi_out::to_bytes(&score, None)).unwrap();
        for sustain in [::music::Sustain::Events, ::music::Sustain::Apply] {
            let heard = read_midi_file(&path, &config::ExtractConfig { sustain, ..Default::default() }).unwrap();
            assert_eq!(heard.pedal, [(0.0, 1.0)], "{sustain:?}");
            assert_eq!(heard.notes[0].duration_seconds, 1.0, "rings until the pedal lifts ({sustain:?})");
            assert_eq!(heard.written.notes[0].duration_seconds, 0.25, "as written, the note as played");
            assert_eq!(heard.written.pedal.len(), 1, "as written, the press apart");
        }
        let ignored = config::ExtractConfig { sustain: ::music::Sustain::Ignore, ..Default::default() };
        let heard = read_midi_file(&path, &ignored).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(heard.pedal.is_empty());
        assert_eq!(heard.notes[0].duration_seconds, 0.25);
    }

    #[test]
    fn a_file_name_is_literal_markdown() {
        assert_eq!(markdown_text("music_2.mid"), "music\\_2\\.mid");
        let hostile = "[x](javascript:alert(1)) | <script>*.mid";
        let escaped = markdown_text(hostile);
        assert!(!escaped.contains("<script>") && !escaped.contains("](") && !escaped.contains(" | "), "{escaped}");
        assert_eq!(markdown_text("two\nlines"), "two lines");
    }
}
