//! What names an encoding, its dictionary, and how an augmented copy was made: the values
//! that `dataset.bin` and `model.bin` store so any reader can turn tokens back into notes.

use serde::{Deserialize, Serialize};

/// How notes were turned into tokens, with every parameter needed to turn them back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Encoding {
    /// The original design's tokens: a lone note becomes its name (`E4`), notes starting
    /// together become a chord of pitch classes in normal order (`4.7.11`); rhythm is not
    /// kept. Called `seed` before: `encode.encoding = "seed"` still means this.
    Names {
        /// Notes whose onsets lie within this many quarter notes form one chord.
        chord_window_quarters: f64,
    },
    /// Key presses, releases, time shifts and velocities (see [`crate::performance`]); the
    /// dictionary is fixed by these parameters.
    Performance { step_ms: u32, max_shift_steps: u32, velocity_bins: u32 },
    /// Bars, positions on a grid of 12 a quarter note, tempo, and notes with their
    /// durations (see [`crate::beats`]); the dictionary is fixed by these parameters.
    Beats { velocity_bins: u32, tempo_bins: u32 },
}

impl Encoding {
    /// Short name as written in `pipeline.toml`.
    pub fn name(&self) -> &'static str {
        match self {
            Encoding::Names { .. } => "names",
            Encoding::Performance { .. } => "performance",
            Encoding::Beats { .. } => "beats",
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

/// How an augmented copy differs from its source piece.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Semitones every pitch moved.
    pub transpose: i8,
    /// Factor every time was multiplied by (1.05 = 5 % slower).
    pub stretch: f64,
}
