//! `notes.bin`: what `extract` found in each MIDI file.

use crate::{Artifact, ArtifactKind, Digest, Metre, Note, PedalPress};
use serde::{Deserialize, Serialize};

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
    /// Its time signatures and tempo map, in the quarter notes the notes' `onset_quarters` count.
    pub metre: Metre,
    /// Its sustain pedal, where extract kept it as events (`extract.sustain = "events"`);
    /// else empty. Onset order, never overlapping.
    pub pedal: Vec<PedalPress>,
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
    // 2: the header carries the payload's digest. 3: each file's metre. 4: each file's pedal.
    const FORMAT_VERSION: u32 = 4;
}
