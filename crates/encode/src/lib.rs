//! Stage 2, `encode`: `notes.bin` in, `dataset.bin` out.
//!
//! Turns every extracted piece into a sequence of token ids with the chosen encoding
//! (`beats`, `performance` or `names`, all behind [`music::Codec`]), builds the dictionary
//! (token ↔ id), splits the pieces into a training and a validation side, and measures what
//! survives the encoding by decoding every piece again ([`music::fidelity`]), and which
//! pieces keep to a score's grid at all ([`measure_grid`]: music played without a click
//! belongs in `performance`). The training windows themselves are cut later, by
//! [`artifacts::DatasetArtifact::windows`], so `dataset.bin` stays one sequence per piece.
//!
//! Key design decision: the split is by *piece*, never inside a piece, and is drawn from
//! the seed. Windows cut from the same piece overlap heavily; a split by window would put
//! near-copies of validation windows into training and make the validation loss a lie.
//!
//! Second: every piece is moved into C major's scale first ([`into_c`], `encode.in_c`).
//! An LSTM trained on pieces in all twelve keys did not learn to hold a key: to keep one it
//! must carry the pitch classes of notes heard bars ago, and trained on windows of 100
//! tokens it did not (its notes fell in a key no more often than at random; docs/music.md,
//! "One key"). In one key, staying in it needs no memory at all.
//!

use artifacts::{Augmentation, DatasetArtifact, EncodedPiece, Encoding, NotesArtifact, Split, Vocabulary};
use config::{EncodingName, PipelineConfig, Section};
use music::fidelity::{self, Fidelity};
use music::{Codec, Playback, augment, augment_metre, augmentations};
use rayon::prelude::*;
use seeded_rng::SeededRng;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug)]
pub enum EncodeError {
    Artifact(artifacts::ArtifactError),
    /// Not one training window can be cut: `seq_len + 1` tokens are needed in one piece.
    TooLittleData {
        longest_train_piece: usize,
        train_tokens: usize,
        seq_len: usize,
    },
    /// `encode.validation_pieces` names a piece that notes.bin does not hold.
    UnknownValidationPiece {
        path: String,
        extracted: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Artifact(e) => e.fmt(f),
            EncodeError::TooLittleData { longest_train_piece, train_tokens, seq_len } => write!(
                f,
                "too little data: a training window needs encode.seq_len + 1 = {} tokens in one piece, \
                 but the longest training piece has {longest_train_piece} ({train_tokens} training tokens in all); \
                 add MIDI files or lower encode.seq_len",
                seq_len + 1
            ),
            EncodeError::UnknownValidationPiece { path, extracted } => write!(
                f,
                "encode.validation_pieces names \"{path}\", which is not among the {extracted} pieces of notes.bin \
                 (not under extract.input, or skipped by extract: see its summary); name pieces by their path \
                 relative to extract.input"
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Runs the stage: reads `input` (notes.bin), writes `output` (dataset.bin).
pub fn run(config: &PipelineConfig, input: &Path, output: &Path) -> Result<DatasetArtifact, EncodeError> {
    artifacts::refuse_input_as_output(output, &[input]).map_err(EncodeError::Artifact)?;
    let (notes, input_digest) = artifacts::read_input::<NotesArtifact>(input).map_err(EncodeError::Artifact)?;
    let notes = if config.encode.in_c { into_c(notes) } else { notes };
    let dataset = encode(config, &notes)?;

    let report = EncodeReport::new(&dataset, measure_fidelity(&dataset, &notes), measure_grid(&notes));
    tracing::info!(
        "encode: {} pieces ({} train, {} validation), {} tokens, vocabulary of {}, \
         {} training and {} validation windows of {}; most frequent: {}",
        report.train_pieces + report.validation_pieces,
        report.train_pieces,
        report.validation_pieces,
        report.train_tokens + report.validation_tokens,
        report.vocabulary_size,
        report.train_windows,
        report.validation_windows,
        dataset.seq_len,
        report.most_frequent.iter().take(5).map(|(t, n)| format!("{t} ×{n}")).collect::<Vec<_>>().join(", ")
    );
    let total = &report.fidelity.total;
    tracing::info!(
        "encode: fidelity after decoding: precision {:.4}, recall {:.4}, F1 {:.4} ({} of {} notes; unmatched: \
         {} pitch, {} onset, {} end, {} velocity)",
        total.precision,
        total.recall,
        total.f1,
        total.counts.matched,
        total.counts.reference_notes,
        total.counts.unmatched_pitch,
        total.counts.unmatched_onset,
        total.counts.unmatched_offset,
        total.counts.unmatched_velocity
    );
    if let Some(quarters) = &report.fidelity.in_quarters {
        tracing::info!(
            "encode: fidelity in quarter notes (the score's time): precision {:.4}, recall {:.4}, F1 {:.4}",
            quarters.precision,
            quarters.recall,
            quarters.f1
        );
    }
    let grid = &report.grid;
    tracing::info!(
        "encode: {:.1} % of the onsets on a sixteenth or triplet of their beats (piano-midi.de's scores: 95 %; \
         music played without a click: about 25 %, as by chance)",
        grid.onsets_on_grid * 100.0
    );
    if config.encode.encoding == EncodingName::Beats && !grid.unmetered.is_empty() {
        let named: Vec<String> =
            grid.unmetered.iter().take(3).map(|(path, share)| format!("{path} ({:.0} %)", share * 100.0)).collect();
        let more = grid.unmetered.len().saturating_sub(named.len());
        tracing::warn!(
            "encode: pieces that look played without a click, at most {:.0} % of their onsets on the grid as by \
             chance: {} of {}, {}{}; `beats` moves their notes onto a grid they never kept: for such music set \
             encode.encoding = \"performance\" (and train.init = \"models/piano.bin\")",
            UNMETERED_AT_MOST * 100.0,
            grid.unmetered.len(),
            notes.files.len(),
            named.join(", "),
            if more > 0 { format!(" and {more} more (dataset.report.json)") } else { String::new() }
        );
    }
    if report.validation_windows == 0 {
        tracing::warn!("no validation window: training will report no validation loss");
    }
    let producer = concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION"));
    let digest = config.section_digest(Section::Encode);
    let outcome = artifacts::write_with_report(output, &report, || {
        artifacts::write(output, &dataset, producer, digest, vec![input_digest])
    })
    .map_err(EncodeError::Artifact)?;
    stage_cli::log_outcome(output, outcome);
    Ok(dataset)
}

/// What one run made: logged as a summary and written as `dataset.report.json`.
#[derive(Debug, serde::Serialize)]
pub struct EncodeReport {
    pub encoding: String,
    pub vocabulary_size: usize,
    pub seq_len: usize,
    pub stride: usize,
    pub train_pieces: usize,
    pub validation_pieces: usize,
    pub train_tokens: usize,
    pub validation_tokens: usize,
    pub train_windows: usize,
    pub validation_windows: usize,
    /// The ten most and least frequent tokens with their counts.
    pub most_frequent: Vec<(String, usize)>,
    pub least_frequent: Vec<(String, usize)>,
    /// What survives the encoding: every piece decoded and compared with its notes.
    pub fidelity: FidelityReport,
    /// How much of the music keeps to a score's grid, whatever the encoding.
    pub grid: GridReport,
}

impl EncodeReport {
    fn new(dataset: &DatasetArtifact, fidelity: FidelityReport, grid: GridReport) -> Self {
        let side = |split| dataset.pieces.iter().filter(move |p| p.split == split);
        let mut counts = vec![0usize; dataset.vocabulary.len()];
        for id in dataset.pieces.iter().flat_map(|p| &p.tokens) {
            counts[*id as usize] += 1;
        }
        let mut ranked: Vec<(String, usize)> = dataset.vocabulary.tokens.iter().cloned().zip(counts).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        EncodeReport {
            encoding: dataset.encoding.name().to_string(),
            vocabulary_size: dataset.vocabulary.len(),
            seq_len: dataset.seq_len,
            stride: dataset.stride,
            train_pieces: side(Split::Train).count(),
            validation_pieces: side(Split::Validation).count(),
            train_tokens: side(Split::Train).map(|p| p.tokens.len()).sum(),
            validation_tokens: side(Split::Validation).map(|p| p.tokens.len()).sum(),
            train_windows: dataset.windows(Split::Train).len(),
            validation_windows: dataset.windows(Split::Validation).len(),
            most_frequent: ranked.iter().take(10).cloned().collect(),
            least_frequent: ranked.iter().rev().take(10).cloned().collect(),
            fidelity,
            grid,
        }
    }
}

/// Every piece moved into C major's scale: by the shift, −5 to +6 semitones, that takes its
/// best-fitting diatonic scale ([`music::key::Scale::best_fit`]) to the white keys; a note
/// the move would take off the keyboard moves by an octave less. The piece's own key is
/// not kept: what a model learns from these pieces is written in whatever key `compose`
/// is asked for.
pub fn into_c(mut notes: NotesArtifact) -> NotesArtifact {
    use music::key::{Scale, shift_into, transpose};
    let mut moved = 0;
    for file in &mut notes.files {
        let shift = shift_into(&file.notes, Scale::of_major(0));
        moved += usize::from(shift != 0);
        transpose(&mut file.notes, shift);
    }
    tracing::info!("encode: {moved} of {} pieces moved into C major's scale (encode.in_c)", notes.files.len());
    notes
}

/// Encodes every piece, builds the dictionary and draws the split. With `encode.in_c`,
/// expects the pieces [`into_c`] moved, and adds no transposed copies.
pub fn encode(config: &PipelineConfig, notes: &NotesArtifact) -> Result<DatasetArtifact, EncodeError> {
    let settings = &config.encode;
    let encoding = match settings.encoding {
        EncodingName::Names => Encoding::Names { chord_window_quarters: settings.chord_window },
        EncodingName::Performance => Encoding::Performance {
            step_ms: settings.step_ms,
            max_shift_steps: settings.max_shift_ms / settings.step_ms,
            velocity_bins: settings.velocity_bins,
        },
        EncodingName::Beats => {
            Encoding::Beats { velocity_bins: settings.velocity_bins.max(2), tempo_bins: settings.tempo_bins }
        }
    };
    // The pedal is a token of its own where extract kept it as events (`beats` alone writes it).
    let codec = Codec::new(&encoding).with_pedal(config.extract.sustain == music::Sustain::Events);
    let splits = match settings.validation_pieces.as_slice() {
        [] => draw_split(notes.files.len(), settings.validation_fraction, config.seed),
        named => named_split(notes, named)?,
    };
    // (source index, split, augmentation): the pieces as extracted, then the augmented
    // copies of the training pieces. Each is encoded on its own, so all run in parallel;
    // the order, and so the data set, stays the same.
    let mut jobs: Vec<(usize, Split, Option<Augmentation>)> =
        (0..notes.files.len()).map(|i| (i, splits[i], None)).collect();
    let transpose = if settings.in_c { &[0][..] } else { &settings.transpose };
    for (index, file) in notes.files.iter().enumerate().filter(|(i, _)| splits[*i] == Split::Train) {
        for augmentation in augmentations(&file.notes, transpose, &settings.stretch) {
            jobs.push((index, Split::Train, Some(augmentation)));
        }
    }
    let progress = Mutex::new(stage_cli::Progress::new("encode", "pieces", jobs.len() as u64));
    let texts: Vec<Vec<String>> = jobs
        .par_iter()
        .map(|&(index, _, augmentation)| {
            let file = &notes.files[index];
            let texts = match augmentation {
                None => codec.encode(&file.notes, &file.metre, &file.pedal),
                Some(augmentation) => codec.encode(
                    &augment(&file.notes, augmentation),
                    &augment_metre(&file.metre, augmentation),
                    &file.pedal,
                ),
            };
            if let Ok(mut progress) = progress.lock() {
                progress.advance(1, String::new);
            }
            texts
        })
        .collect();
    let vocabulary =
        codec.fixed_vocabulary().unwrap_or_else(|| Vocabulary::from_tokens(texts.iter().flatten().cloned()));
    let ids: HashMap<&str, u32> = vocabulary.tokens.iter().enumerate().map(|(id, t)| (t.as_str(), id as u32)).collect();
    let pieces: Vec<EncodedPiece> = jobs
        .into_iter()
        .zip(&texts)
        .map(|((index, split, augmentation), texts)| EncodedPiece {
            source: notes.files[index].path.clone(),
            split,
            augmentation,
            tokens: texts.iter().map(|t| ids[t.as_str()]).collect(),
        })
        .collect();
    let dataset = DatasetArtifact { encoding, vocabulary, seq_len: settings.seq_len, stride: settings.stride, pieces };
    if dataset.windows(Split::Train).is_empty() {
        let train = dataset.pieces.iter().filter(|p| p.split == Split::Train);
        return Err(EncodeError::TooLittleData {
            longest_train_piece: train.clone().map(|p| p.tokens.len()).max().unwrap_or(0),
            train_tokens: train.map(|p| p.tokens.len()).sum(),
            seq_len: settings.seq_len,
        });
    }
    Ok(dataset)
}

/// How `names` tokens, which carry no timing, are played back for the fidelity check: the
/// original design's half beat at 120 BPM.
const NAMES_PLAYBACK: Playback = Playback { step_seconds: 0.25, velocity: 80, tempo_bpm: 120.0 };

/// Decodes every piece of `dataset` and compares it with the notes `extract` found: in
/// seconds, and for an encoding that keeps the score's time (`beats`) in quarter notes too.
pub fn measure_fidelity(dataset: &DatasetArtifact, notes: &NotesArtifact) -> FidelityReport {
    let codec = Codec::new(&dataset.encoding);
    let tolerance = codec.tolerance();
    let quarters_tolerance = codec.quarters_tolerance();
    let (mut total, mut total_quarters) = (Fidelity::default(), Fidelity::default());
    let mut pieces = Vec::with_capacity(dataset.pieces.len());
    let originals = dataset.pieces.iter().filter(|p| p.augmentation.is_none());
    for (piece, file) in originals.zip(&notes.files) {
        let tokens: Vec<&str> = piece.tokens.iter().map(|&id| dataset.vocabulary.token(id)).collect();
        let decoded = codec.decode(&tokens, NAMES_PLAYBACK, f64::INFINITY);
        let sounds: Vec<music::TimedNote> = decoded.notes.iter().map(music::TimedNote::from).collect();
        let fidelity = fidelity::compare(&file.notes, &sounds, tolerance);
        total.add(&fidelity);
        let in_quarters = quarters_tolerance.map(|tolerance| {
            let fidelity = fidelity::compare_in_quarters(&file.notes, &decoded.notes, tolerance);
            total_quarters.add(&fidelity);
            fidelity.f1()
        });
        pieces.push(PieceFidelity { in_quarters, ..PieceFidelity::new(&piece.source, fidelity) });
    }
    FidelityReport {
        total: PieceFidelity::new("all pieces", total),
        in_quarters: quarters_tolerance.map(|_| PieceFidelity::new("all pieces, in quarter notes", total_quarters)),
        pieces,
    }
}

/// The fidelity of the encoding, in `dataset.report.json`.
#[derive(Debug, serde::Serialize)]
pub struct FidelityReport {
    /// In seconds: what a listener hears.
    pub total: PieceFidelity,
    /// In quarter notes (`beats` only): what a score shows.
    pub in_quarters: Option<PieceFidelity>,
    pub pieces: Vec<PieceFidelity>,
}

/// One piece's (or all pieces') fidelity with its scores.
#[derive(Debug, serde::Serialize)]
pub struct PieceFidelity {
    pub source: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// F1 in quarter notes, where the encoding keeps them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_quarters: Option<f64>,
    #[serde(flatten)]
    pub counts: Fidelity,
}

impl PieceFidelity {
    fn new(source: &str, counts: Fidelity) -> Self {
        PieceFidelity {
            source: source.to_string(),
            precision: counts.precision(),
            recall: counts.recall(),
            f1: counts.f1(),
            in_quarters: None,
            counts,
        }
    }
}

/// A piece with at most this share of its onsets on the grid ([`music::on_grid`]: within
/// 1/48 of a quarter note of a sixteenth or an eighth-note triplet of the file's own beats),
/// after the best constant shift ([`music::on_grid_share_shifted`]), is taken to be played
/// without a click. Onsets that ignore the beats land on the grid by chance about a quarter
/// of the time (its windows cover a quarter of every beat; the ten MAESTRO performances of
/// `../shared/data/oddities`: 27–29 %), scored music far more often (the 295 pieces of
/// piano-midi.de: 67 % at the least, 95 % of all their onsets).
pub const UNMETERED_AT_MOST: f64 = 0.4;

/// How much of the extracted music keeps to a score's grid, in `dataset.report.json`.
#[derive(Debug, serde::Serialize)]
pub struct GridReport {
    /// The share of all the notes' onsets on the grid, each piece after its best shift.
    pub onsets_on_grid: f64,
    /// The pieces with at most [`UNMETERED_AT_MOST`] of their onsets on the grid, with that
    /// share, lowest first.
    pub unmetered: Vec<(String, f64)>,
}

/// Measures how much of `notes` keeps to a score's grid, piece by piece, in the quarter
/// notes of each file's own tempo map (so the figure does not depend on the encoding).
pub fn measure_grid(notes: &NotesArtifact) -> GridReport {
    let shares: Vec<f64> = notes
        .files
        .par_iter()
        .map(|file| music::on_grid_share_shifted(file.notes.iter().map(|note| note.onset_quarters)))
        .collect();
    let all_notes = notes.files.iter().map(|file| file.notes.len()).sum::<usize>();
    let on_grid: f64 = notes.files.iter().zip(&shares).map(|(file, share)| share * file.notes.len() as f64).sum();
    let mut unmetered: Vec<(String, f64)> = notes
        .files
        .iter()
        .zip(shares)
        .filter(|(_, share)| *share <= UNMETERED_AT_MOST)
        .map(|(file, share)| (file.path.clone(), share))
        .collect();
    unmetered.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    GridReport { onsets_on_grid: on_grid / all_notes.max(1) as f64, unmetered }
}

/// Which pieces go to validation: `round(n × fraction)` of them, chosen by the seed, but
/// at least one when the fraction is positive and there are two or more pieces, and never
/// all of them.
pub fn draw_split(pieces: usize, validation_fraction: f64, seed: u64) -> Vec<Split> {
    let mut wanted = (pieces as f64 * validation_fraction).round() as usize;
    if validation_fraction > 0.0 && pieces >= 2 {
        wanted = wanted.max(1);
    }
    wanted = wanted.min(pieces.saturating_sub(1));
    let mut order: Vec<usize> = (0..pieces).collect();
    SeededRng::new(seed, "split").shuffle(&mut order);
    let mut splits = vec![Split::Train; pieces];
    for &index in &order[..wanted] {
        splits[index] = Split::Validation;
    }
    splits
}

/// The split `encode.validation_pieces` fixes: the pieces it names go to validation, the
/// rest to training. Every name must be a piece of `notes`, so a typo is an error rather
/// than a different split.
pub fn named_split(notes: &NotesArtifact, validation: &[String]) -> Result<Vec<Split>, EncodeError> {
    if let Some(path) = validation.iter().find(|path| !notes.files.iter().any(|file| &file.path == *path)) {
        return Err(EncodeError::UnknownValidationPiece { path: path.clone(), extracted: notes.files.len() });
    }
    Ok(notes
        .files
        .iter()
        .map(|file| if validation.contains(&file.path) { Split::Validation } else { Split::Train })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use artifacts::{ExtractedFile, Note};

    fn piece(path: &str, pitches: &[u8]) -> ExtractedFile {
        let notes = pitches
            .iter()
            .enumerate()
            .map(|(i, &pitch)| Note {
                pitch,
                velocity: 80,
                channel: 0,
                program: 0,
                onset_seconds: i as f64 * 0.5,
                duration_seconds: 0.5,
                onset_quarters: i as f64,
                duration_quarters: 1.0,
            })
            .collect();
        ExtractedFile {
            path: path.into(),
            content_digest: [0; 32],
            notes,
            metre: music::Metre::default(),
            pedal: Vec::new(),
        }
    }

    fn config(seq_len: usize) -> PipelineConfig {
        let mut config = PipelineConfig::default();
        config.encode.seq_len = seq_len;
        config.encode.validation_fraction = 0.0;
        config.encode.encoding = EncodingName::Names;
        config.encode.transpose = vec![0];
        config
    }

    #[test]
    fn split_is_by_piece_seeded_and_never_empty_on_the_training_side() {
        let a = draw_split(10, 0.2, 1);
        assert_eq!(a.iter().filter(|s| **s == Split::Validation).count(), 2);
        assert_eq!(a, draw_split(10, 0.2, 1));
        assert!((2..40).any(|seed| draw_split(10, 0.2, seed) != a));
        assert_eq!(draw_split(2, 0.01, 1).iter().filter(|s| **s == Split::Validation).count(), 1);
        assert_eq!(draw_split(1, 0.5, 1), vec![Split::Train]);
        assert!(draw_split(5, 0.0, 1).iter().all(|s| *s == Split::Train));
    }

    #[test]
    fn named_validation_pieces_fix_the_split_and_a_name_not_extracted_is_an_error() {
        let files: Vec<ExtractedFile> = ["a/one.mid", "b.mid", "c.mid"].map(|p| piece(p, &[60, 62, 64, 65])).into();
        let notes = NotesArtifact { files, rejected: vec![] };
        let mut config = config(2);
        config.encode.validation_fraction = 0.9;
        config.encode.validation_pieces = vec!["a/one.mid".into(), "c.mid".into()];
        let dataset = encode(&config, &notes).unwrap();
        let held_out: Vec<&str> =
            dataset.pieces.iter().filter(|p| p.split == Split::Validation).map(|p| p.source.as_str()).collect();
        assert_eq!(held_out, ["a/one.mid", "c.mid"]);
        config.encode.validation_pieces.push("one.mid".into());
        let message = encode(&config, &notes).unwrap_err().to_string();
        assert!(message.contains("encode.validation_pieces names \"one.mid\""), "{message}");
    }

    #[test]
    fn ids_index_the_vocabulary() {
        let notes =
            NotesArtifact { files: vec![piece("a", &[60, 62, 64, 60, 62]), piece("b", &[67, 60])], rejected: vec![] };
        let dataset = encode(&config(2), &notes).unwrap();
        assert_eq!(dataset.vocabulary.tokens, vec!["C4", "D4", "E4", "G4"]);
        let a = dataset.pieces.iter().find(|p| p.source == "a").unwrap();
        let texts: Vec<&str> = a.tokens.iter().map(|&id| dataset.vocabulary.token(id)).collect();
        assert_eq!(texts, vec!["C4", "D4", "E4", "C4", "D4"]);
    }

    #[test]
    fn augmentation_stays_on_the_keyboard_and_off_the_validation_side() {
        let files: Vec<ExtractedFile> =
            (0..6).map(|i| piece(&format!("p{i}"), &[22 + i as u8, 60, 103 + i as u8, 64])).collect();
        let notes = NotesArtifact { files, rejected: vec![] };
        let mut config = config(2);
        config.encode.validation_fraction = 0.34;
        config.encode.encoding = EncodingName::Performance;
        config.encode.in_c = false;
        config.encode.transpose = vec![-3, 0, 3];
        config.encode.stretch = vec![0.95, 1.0, 1.05];
        let dataset = encode(&config, &notes).unwrap();
        let codec = Codec::new(&dataset.encoding);
        for piece in &dataset.pieces {
            if let Some(augmentation) = piece.augmentation {
                assert_eq!(piece.split, Split::Train, "{} was augmented on the validation side", piece.source);
                assert_ne!((augmentation.transpose, augmentation.stretch), (0, 1.0));
            }
            let tokens: Vec<&str> = piece.tokens.iter().map(|&id| dataset.vocabulary.token(id)).collect();
            let decoded = codec.decode(&tokens, NAMES_PLAYBACK, 60.0).notes;
            assert!(decoded.iter().all(|n| (21..=108).contains(&n.pitch)), "{} left the keyboard", piece.source);
        }
        // p0 spans 22–103: −3 would leave the keyboard, so it gets +3 (three stretches) and
        // 0 (the two other stretches); p5 (27–108) likewise gets −3 and 0.
        for source in ["p0", "p5"] {
            if dataset.pieces.iter().any(|p| p.source == source && p.split == Split::Train) {
                let copies = dataset.pieces.iter().filter(|p| p.source == source && p.augmentation.is_some());
                assert_eq!(copies.count(), 5, "{source}");
            }
        }
        let validation = dataset.pieces.iter().filter(|p| p.split == Split::Validation).count();
        assert_eq!(validation, 2);
    }

    /// Every piece lands in C major's scale by the smallest move, its notes off the keyboard
    /// brought back by an octave; and with `in_c` no transposed copies are added, which
    /// would be moved back to the same notes.
    #[test]
    fn in_c_moves_every_piece_into_one_key_and_adds_no_transposed_copies() {
        let e_flat_major = piece("e-flat.mid", &[63, 65, 67, 68, 70, 72, 74, 75, 106]);
        let a_minor = piece("a-minor.mid", &[57, 59, 60, 62, 64, 65, 68, 69]);
        let f_sharp_major = piece("f-sharp.mid", &[66, 68, 70, 71, 73, 75, 77, 78, 22, 106]);
        let moved = into_c(NotesArtifact { files: vec![e_flat_major, a_minor, f_sharp_major], rejected: vec![] });
        let pitches = |i: usize| moved.files[i].notes.iter().map(|n| n.pitch).collect::<Vec<u8>>();
        assert_eq!(pitches(0), [60, 62, 64, 65, 67, 69, 71, 72, 103], "E♭ major down a minor third");
        assert_eq!(pitches(1), [57, 59, 60, 62, 64, 65, 68, 69], "A minor stays");
        // F♯ major: up a tritone; 106 + 6 would pass the top key (108), so 106 goes down 6.
        assert_eq!(pitches(2), [72, 74, 76, 77, 79, 81, 83, 84, 28, 100], "F♯ major up a tritone");
        let mut config = config(2);
        config.encode.encoding = EncodingName::Performance;
        config.encode.transpose = vec![-3, 0, 3];
        let dataset = encode(&config, &moved).unwrap();
        assert!(dataset.pieces.iter().all(|p| p.augmentation.is_none()), "no transposed copies");
        assert_eq!(dataset.pieces.len(), 3);
    }

    #[test]
    fn the_performance_dictionary_does_not_depend_on_the_data() {
        let mut config = config(2);
        config.encode.encoding = EncodingName::Performance;
        let a =
            encode(&config, &NotesArtifact { files: vec![piece("a", &[60, 62, 64, 65])], rejected: vec![] }).unwrap();
        let b =
            encode(&config, &NotesArtifact { files: vec![piece("b", &[30, 90, 45, 70])], rejected: vec![] }).unwrap();
        assert_eq!(a.vocabulary, b.vocabulary);
        assert_eq!(a.vocabulary.len(), 388);
    }

    #[test]
    fn the_pedal_kept_as_events_is_a_token_of_the_beats_dictionary() {
        let mut pedalled = piece("a", &[60, 62, 64, 65, 67, 69, 71, 72]);
        pedalled.pedal = vec![music::PedalPress { onset_quarters: 0.0, duration_quarters: 2.0 }];
        let notes = NotesArtifact { files: vec![pedalled], rejected: vec![] };
        let mut config = config(4);
        config.encode.encoding = EncodingName::Beats;
        let pedal_tokens = |config: &PipelineConfig| {
            let dataset = encode(config, &notes).unwrap();
            let id = dataset.vocabulary.id("pedal");
            (id.is_some(), dataset.pieces[0].tokens.iter().filter(|&&t| Some(t) == id).count())
        };
        assert_eq!(pedal_tokens(&config), (false, 0), "applied or ignored, the pedal is no token");
        config.extract.sustain = music::Sustain::Events;
        assert_eq!(pedal_tokens(&config), (true, 1));
    }

    #[test]
    fn pieces_whose_onsets_ignore_the_grid_are_named_as_unmetered() {
        let scored = piece("scored.mid", &[60; 40]);
        // Onsets 0.37 of a quarter apart drift across the beat, as playing without a click does.
        let mut played = piece("played.mid", &[60; 40]);
        for (i, note) in played.notes.iter_mut().enumerate() {
            note.onset_quarters = 0.1 + i as f64 * 0.37;
        }
        let played_share = music::on_grid_share_shifted(played.notes.iter().map(|n| n.onset_quarters));
        assert!(played_share > 0.0 && played_share <= UNMETERED_AT_MOST, "{played_share}");
        let grid = measure_grid(&NotesArtifact { files: vec![played, scored], rejected: vec![] });
        assert_eq!(grid.unmetered, vec![("played.mid".to_string(), played_share)]);
        assert!((grid.onsets_on_grid - (1.0 + played_share) / 2.0).abs() < 1e-12, "{}", grid.onsets_on_grid);
    }

    #[test]
    fn too_little_data_states_the_counts() {
        let notes = NotesArtifact { files: vec![piece("a", &[60, 62, 64])], rejected: vec![] };
        let message = encode(&config(50), &notes).unwrap_err().to_string();
        assert!(message.contains("51 tokens") && message.contains("has 3"), "{message}");
    }
}
