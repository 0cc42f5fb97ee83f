//! `dataset.bin`: every piece as a sequence of token ids, with the dictionary.

use crate::{Artifact, ArtifactKind};
use serde::{Deserialize, Serialize};

/// How notes were turned into tokens, with every parameter needed to turn them back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Encoding {
    /// The original design: a lone note becomes its name (`E4`), notes starting together
    /// become a chord of pitch classes in normal order (`4.7.11`); rhythm is not kept.
    Seed {
        /// Notes whose onsets lie within this many quarter notes form one chord.
        chord_window_quarters: f64,
    },
    /// Key presses, releases, time shifts and velocities (see `encode::performance`); the
    /// dictionary is fixed by these parameters.
    Performance { step_ms: u32, max_shift_steps: u32, velocity_bins: u32 },
}

impl Encoding {
    /// Short name as written in `pipeline.toml`.
    pub fn name(&self) -> &'static str {
        match self {
            Encoding::Seed { .. } => "seed",
            Encoding::Performance { .. } => "performance",
        }
    }
}

/// The dictionary: token id `i` stands for `tokens[i]`.
///
/// Invariant: the strings are unique and sorted, so the same set of tokens always gets
/// the same ids whatever order the pieces were read in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vocabulary {
    pub tokens: Vec<String>,
}

impl Vocabulary {
    /// Builds the dictionary of a set of token strings.
    pub fn from_tokens<I: IntoIterator<Item = String>>(tokens: I) -> Self {
        let mut tokens: Vec<String> = tokens.into_iter().collect();
        tokens.sort();
        tokens.dedup();
        Vocabulary { tokens }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of a token string, if it is in the dictionary.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.tokens.binary_search_by(|t| t.as_str().cmp(token)).ok().map(|i| i as u32)
    }

    /// The token string of an id. Panics on an id outside the dictionary (a caller bug).
    pub fn token(&self, id: u32) -> &str {
        &self.tokens[id as usize]
    }
}

/// Which side of the split a piece is on. The split is by piece, never inside one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Split {
    Train,
    Validation,
}

/// One source file, encoded, as it is or transposed and stretched (augmented).
/// Invariant: every id is `< vocabulary.len()`; only training pieces are augmented.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncodedPiece {
    /// The file's path as recorded in `notes.bin`.
    pub source: String,
    pub split: Split,
    /// `None` for the piece as extracted.
    pub augmentation: Option<Augmentation>,
    pub tokens: Vec<u32>,
}

/// How an augmented copy differs from its source piece.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Semitones every pitch moved.
    pub transpose: i8,
    /// Factor every time was multiplied by (1.05 = 5 % slower).
    pub stretch: f64,
}

/// Payload of `dataset.bin`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetArtifact {
    pub encoding: Encoding,
    pub vocabulary: Vocabulary,
    /// Length of the training windows; the model sees `seq_len` tokens and predicts each next one.
    pub seq_len: usize,
    /// Distance between the starts of consecutive training windows.
    pub stride: usize,
    pub pieces: Vec<EncodedPiece>,
}

impl Artifact for DatasetArtifact {
    const KIND: ArtifactKind = ArtifactKind::Dataset;
    // 3: the header carries the payload's digest.
    const FORMAT_VERSION: u32 = 3;

    fn check(&self) -> Result<(), String> {
        let size = self.vocabulary.len();
        match self.pieces.iter().flat_map(|p| &p.tokens).find(|&&id| id as usize >= size) {
            Some(id) => Err(format!("token id {id} is outside its dictionary of {size}")),
            None => Ok(()),
        }
    }
}

impl DatasetArtifact {
    /// The training windows of one side of the split, as `(piece index, start)`.
    ///
    /// A window covers tokens `start..start + seq_len + 1`: `seq_len` inputs, each paired
    /// with the token after it as target. Windows start every `stride` tokens, plus one
    /// flush with the piece's end so no piece loses its last tokens; pieces shorter than
    /// `seq_len + 1` tokens give none.
    pub fn windows(&self, split: Split) -> Vec<(usize, usize)> {
        let span = self.seq_len + 1;
        let mut windows = Vec::new();
        for (index, piece) in self.pieces.iter().enumerate() {
            if piece.split != split || piece.tokens.len() < span {
                continue;
            }
            let last = piece.tokens.len() - span;
            windows.extend((0..=last).step_by(self.stride.max(1)).map(|start| (index, start)));
            if !last.is_multiple_of(self.stride.max(1)) {
                windows.push((index, last));
            }
        }
        windows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_each_piece_to_its_end() {
        let piece =
            |len: usize, split| EncodedPiece { source: String::new(), split, augmentation: None, tokens: vec![0; len] };
        let dataset = DatasetArtifact {
            encoding: Encoding::Seed { chord_window_quarters: 0.0 },
            vocabulary: Vocabulary::default(),
            seq_len: 4,
            stride: 3,
            pieces: vec![piece(11, Split::Train), piece(4, Split::Train), piece(5, Split::Validation)],
        };
        assert_eq!(dataset.windows(Split::Train), vec![(0, 0), (0, 3), (0, 6)]);
        assert_eq!(dataset.windows(Split::Validation), vec![(2, 0)]);
        let mut shorter = dataset.clone();
        shorter.pieces[0].tokens.truncate(10);
        assert_eq!(shorter.windows(Split::Train), vec![(0, 0), (0, 3), (0, 5)]);
    }
}
