//! `dataset.bin`: every piece as a sequence of token ids, with the dictionary.

use crate::{Artifact, ArtifactKind, Augmentation, Encoding, Vocabulary};
use serde::{Deserialize, Serialize};

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
    /// The indices of the pieces on one side of the split, in data set order.
    pub fn pieces_of(&self, split: Split) -> Vec<usize> {
        (0..self.pieces.len()).filter(|&i| self.pieces[i].split == split).collect()
    }

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
            encoding: Encoding::Names { chord_window_quarters: 0.0 },
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
