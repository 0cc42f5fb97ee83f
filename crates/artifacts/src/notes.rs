//! `notes.bin`: what `extract` found in each MIDI file.

use crate::{Artifact, ArtifactKind, Digest};
use serde::{Deserialize, Serialize};

/// One sounding note, with the file's tempo map already applied.
///
/// Invariants: `pitch` and `velocity` are in 0..=127 and `velocity` > 0; durations are
/// positive; `channel` is 0-based (the drum channel, 9, never appears).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub pitch: u8,
    pub velocity: u8,
    pub channel: u8,
    /// General MIDI program (0 = acoustic grand piano) active on the channel at the onset.
    pub program: u8,
    pub onset_seconds: f64,
    pub duration_seconds: f64,
    /// Onset in quarter notes (MIDI ticks / ticks per quarter): the score's metrical time.
    pub onset_quarters: f64,
    pub duration_quarters: f64,
}

/// A MIDI file that was read.
///
/// Invariant: `notes` are sorted by (onset, pitch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExtractedFile {
    /// Path relative to the input folder, with `/` separators on every platform.
    pub path: String,
    /// BLAKE3 of the file's bytes.
    pub content_digest: Digest,
    pub notes: Vec<Note>,
}

/// A file that was skipped, and the one-line reason why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedFile {
    pub path: String,
    pub reason: String,
}

/// Payload of `notes.bin`. Invariant: both lists are sorted by path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotesArtifact {
    pub files: Vec<ExtractedFile>,
    pub rejected: Vec<RejectedFile>,
}

impl Artifact for NotesArtifact {
    const KIND: ArtifactKind = ArtifactKind::Notes;
    const FORMAT_VERSION: u32 = 1;
}
