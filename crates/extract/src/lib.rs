//! Stage 1, `extract`: a folder of MIDI files in, `notes.bin` out.
//!
//! The folder is searched recursively for MIDI files ([`music::files`]). Each file is read
//! under `extract.max_file_bytes` and turned into [`Note`]s by [`music::midi_in`] (the
//! rules for messy input are fixed and documented on [`music::midi_in::notes_of_midi`], so
//! the same bytes always give the same notes). A file that cannot be used is not an error:
//! it is recorded as a [`RejectedFile`] with a one-line reason, logged, and counted in the
//! summary.
//!
//! Key design decision: files are independent, so they are read in parallel with rayon;
//! the output is sorted by path and does not depend on the thread count.

use artifacts::{ExtractedFile, InputDigest, NotesArtifact, RejectedFile};
use config::{ExtractConfig, PipelineConfig, Section};
use music::files::FindError;
use music::midi_in::MidiFacts;
use rayon::prelude::*;
use stage_cli::Progress;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why the stage as a whole failed (a single bad file never fails it).
#[derive(Debug)]
pub enum ExtractError {
    NoInputFolder(PathBuf),
    NoMidiFiles(PathBuf),
    NothingReadable { folder: PathBuf, rejected: usize },
    Io(PathBuf, std::io::Error),
    Artifact(artifacts::ArtifactError),
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtractError::NoInputFolder(p) => {
                write!(f, "input folder {} does not exist or is not a folder", p.display())
            }
            ExtractError::NoMidiFiles(p) => write!(f, "no .mid or .midi files found in {}", p.display()),
            ExtractError::NothingReadable { folder, rejected } => write!(
                f,
                "none of the {rejected} MIDI files in {} could be used (see the reasons above)",
                folder.display()
            ),
            ExtractError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            ExtractError::Artifact(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ExtractError {}

impl From<FindError> for ExtractError {
    fn from(e: FindError) -> Self {
        match e {
            FindError::NoFolder(p) => ExtractError::NoInputFolder(p),
            FindError::NoMidiFiles(p) => ExtractError::NoMidiFiles(p),
            FindError::Io(p, e) => ExtractError::Io(p, e),
        }
    }
}

/// Runs the stage: finds the MIDI files under `input`, extracts them, writes `output`.
pub fn run(config: &PipelineConfig, input: &Path, output: &Path) -> Result<ExtractReport, ExtractError> {
    let paths = music::files::find_midi_files(input)?;
    tracing::info!("extract: {} MIDI files under {}", paths.len(), input.display());
    let progress = Mutex::new(Progress::new("extract", "files", paths.len() as u64));
    let results: Vec<Result<(ExtractedFile, MidiFacts), RejectedFile>> = paths
        .par_iter()
        .map(|path| {
            let relative = relative_name(input, path);
            let result = extract_file(path, &config.extract)
                .map(|(content_digest, music::Score { notes, metre, pedal }, facts)| {
                    (ExtractedFile { path: relative.clone(), content_digest, notes, metre, pedal }, facts)
                })
                .map_err(|reason| RejectedFile { path: relative, reason });
            if let Ok(mut p) = progress.lock() {
                p.advance(1, String::new);
            }
            result
        })
        .collect();

    let mut artifact = NotesArtifact { files: Vec::new(), rejected: Vec::new() };
    let mut totals = Totals::default();
    for result in results {
        match result {
            Ok((file, facts)) => {
                artifact.files.push(file);
                totals.add(&facts);
            }
            Err(rejected) => {
                tracing::warn!("skipped {}: {}", rejected.path, rejected.reason);
                artifact.rejected.push(rejected);
            }
        }
    }
    if artifact.files.is_empty() {
        return Err(ExtractError::NothingReadable { folder: input.to_path_buf(), rejected: artifact.rejected.len() });
    }

    // One digest for the whole corpus: the header stays a few hundred bytes however many
    // files there are (every file's own name and digest is in the payload).
    let files: Vec<(&str, &artifacts::Digest)> =
        artifact.files.iter().map(|f| (f.path.as_str(), &f.content_digest)).collect();
    let inputs =
        vec![InputDigest { name: format!("{} MIDI files", files.len()), digest: artifacts::digest_of(&files) }];
    let producer = concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION"));
    let report = ExtractReport::new(input, &artifact, totals);
    tracing::info!(
        "extract: read {} files, skipped {}{}; {} notes, {:.1} minutes of music, pitches {}–{}, \
         {:.1} notes/s, {} files with pedal, {} tempo changes, {} time signatures ({} repaired); \
         dropped {} notes off the keyboard and {} of zero length, shortened {} to \
         extract.max_note_seconds and {} rests to extract.max_rest_seconds",
        report.files_read,
        report.files_skipped,
        grouped_reasons(&artifact.rejected),
        report.notes,
        report.seconds_of_music / 60.0,
        report.lowest_pitch,
        report.highest_pitch,
        report.notes_per_second,
        report.files_with_pedal,
        report.tempo_changes,
        report.time_signatures,
        report.signatures_repaired,
        report.dropped_off_keyboard,
        report.dropped_zero_length,
        report.shortened,
        report.rests_shortened
    );
    let digest = config.section_digest(Section::Extract);
    let outcome =
        artifacts::write_with_report(output, &report, || artifacts::write(output, &artifact, producer, digest, inputs))
            .map_err(ExtractError::Artifact)?;
    stage_cli::log_outcome(output, outcome);
    Ok(report)
}

/// What one run did: logged as a summary and written as `notes.report.json`.
#[derive(Debug, serde::Serialize)]
pub struct ExtractReport {
    /// The folder searched, as given.
    pub input: String,
    pub files_read: usize,
    pub files_skipped: usize,
    /// Skipped files grouped by reason: reason → file names.
    pub skipped: BTreeMap<String, Vec<String>>,
    pub notes: usize,
    /// Summed over files, each from time 0 to its last note's end.
    pub seconds_of_music: f64,
    pub lowest_pitch: String,
    pub highest_pitch: String,
    pub notes_per_second: f64,
    pub files_with_pedal: usize,
    pub tempo_changes: usize,
    pub time_signatures: usize,
    /// Time signatures dropped (0/0, 1/2^255) or moved to start a bar (see
    /// `music::midi_in::read_midi`).
    pub signatures_repaired: usize,
    /// Pieces whose time signatures: the metres written in the files, counted once per
    /// piece by the signature at its start ("4/4" also for files with none).
    pub opening_metres: BTreeMap<String, usize>,
    /// Notes dropped by the hygiene rules of [`music::midi_in::notes_of_midi`], and notes shortened.
    pub dropped_off_keyboard: usize,
    pub dropped_zero_length: usize,
    pub shortened: usize,
    pub rests_shortened: usize,
}

/// [`MidiFacts`] summed over the files read.
#[derive(Debug, Default)]
struct Totals {
    files_with_pedal: usize,
    tempo_changes: usize,
    time_signatures: usize,
    signatures_repaired: usize,
    off_keyboard: usize,
    zero_length: usize,
    shortened: usize,
    rests_shortened: usize,
}

impl Totals {
    fn add(&mut self, facts: &MidiFacts) {
        self.files_with_pedal += usize::from(facts.pedal_presses > 0);
        self.tempo_changes += facts.tempo_changes;
        self.time_signatures += facts.time_signatures;
        self.signatures_repaired += facts.signatures_repaired;
        self.off_keyboard += facts.off_keyboard;
        self.zero_length += facts.zero_length;
        self.shortened += facts.shortened;
        self.rests_shortened += facts.rests_shortened;
    }
}

impl ExtractReport {
    fn new(input: &Path, artifact: &NotesArtifact, totals: Totals) -> Self {
        let all_notes = || artifact.files.iter().flat_map(|f| &f.notes);
        let seconds: f64 = artifact
            .files
            .iter()
            .map(|f| f.notes.iter().map(|n| n.onset_seconds + n.duration_seconds).fold(0.0, f64::max))
            .sum();
        let notes = all_notes().count();
        let mut opening_metres: BTreeMap<String, usize> = BTreeMap::new();
        for file in &artifact.files {
            let opening = file.metre.signatures[0];
            *opening_metres.entry(format!("{}/{}", opening.numerator, opening.denominator)).or_default() += 1;
        }
        let mut skipped: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &artifact.rejected {
            skipped.entry(r.reason.clone()).or_default().push(r.path.clone());
        }
        ExtractReport {
            input: input.display().to_string(),
            files_read: artifact.files.len(),
            files_skipped: artifact.rejected.len(),
            skipped,
            notes,
            seconds_of_music: seconds,
            lowest_pitch: artifacts::pitch_name(all_notes().map(|n| n.pitch).min().unwrap_or(0)),
            highest_pitch: artifacts::pitch_name(all_notes().map(|n| n.pitch).max().unwrap_or(0)),
            notes_per_second: notes as f64 / seconds.max(1e-9),
            files_with_pedal: totals.files_with_pedal,
            tempo_changes: totals.tempo_changes,
            time_signatures: totals.time_signatures,
            signatures_repaired: totals.signatures_repaired,
            opening_metres,
            dropped_off_keyboard: totals.off_keyboard,
            dropped_zero_length: totals.zero_length,
            shortened: totals.shortened,
            rests_shortened: totals.rests_shortened,
        }
    }
}

/// `": 3 not a MIDI file, 1 truncated"`-style tally of rejection reasons, or "".
fn grouped_reasons(rejected: &[RejectedFile]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rejected {
        // Group by the reason's first clause so "truncated track 3" and "truncated track 1" merge.
        let head = r.reason.split([':', '(']).next().unwrap_or(&r.reason).trim();
        *counts.entry(head).or_default() += 1;
    }
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
    format!(" ({})", parts.join(", "))
}

/// The MIDI files under `folder` as `make` compares them from run to run: one line each,
/// the content's digest and the path, sorted by path. The content, not the modification
/// time: a file copied again or touched but not changed leaves the listing, and so the
/// pipeline, as it was, and `make -n` can say so before anything runs. A file extract
/// would not read (larger than `max_file_bytes`, not a regular file) is listed by its
/// size and modification time instead, without reading it.
pub fn input_listing(folder: &Path, max_file_bytes: u64) -> Result<String, ExtractError> {
    let mut listing = String::new();
    for path in music::files::find_midi_files(folder)? {
        let state = match artifacts::read_capped(&path, max_file_bytes) {
            Ok(bytes) => artifacts::hex(&artifacts::digest(&bytes)),
            Err(_) => {
                let metadata = std::fs::symlink_metadata(&path).ok();
                let modified = metadata
                    .as_ref()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                format!("unread:{}:{modified}", metadata.map_or(0, |m| m.len()))
            }
        };
        listing.push_str(&format!("{state} {}\n", relative_name(folder, &path)));
    }
    Ok(listing)
}

/// `path` relative to `root`, `/`-separated, as recorded in the artifact. Bytes of a name
/// that are not UTF-8 are written as `\xNN`, so two such names never record as one.
fn relative_name(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative.components().map(|c| escaped_name(c.as_os_str())).collect::<Vec<_>>().join("/")
}

#[cfg(unix)]
fn escaped_name(name: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut text = String::new();
    for chunk in name.as_bytes().utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
}

#[cfg(not(unix))]
fn escaped_name(name: &std::ffi::OsStr) -> String {
    name.to_string_lossy().into_owned()
}

/// Reads and extracts one file: its content digest, its notes, metre and pedal, or a
/// one-line reason.
pub fn extract_file(
    path: &Path,
    limits: &ExtractConfig,
) -> Result<(artifacts::Digest, music::Score, MidiFacts), String> {
    let size = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?.len();
    if size > limits.max_file_bytes {
        return Err(format!("too large: {size} bytes, limit extract.max_file_bytes = {}", limits.max_file_bytes));
    }
    // Capped again while reading: a file under /proc reports no size and may never end.
    let bytes = artifacts::read_capped(path, limits.max_file_bytes).map_err(|e| format!("cannot read: {e}"))?;
    let (score, facts) = music::midi_in::read_midi(&bytes, &limits.read_options())?;
    Ok((artifacts::digest(&bytes), score, facts))
}
