//! Encodings behind one face: notes → token strings → notes, and augmentation.

use crate::encoding::{Augmentation, Encoding, Vocabulary};
use crate::fidelity::Tolerance;
use crate::names;
use crate::note::TimedNote;
use crate::note::{Note, PIANO_KEYS};
use crate::performance::{Event, Performance};

/// The augmentations of a piece: every (shift, factor) pair but the identity, except the
/// shifts that would push one of its notes off the 88 piano keys.
pub fn augmentations(notes: &[Note], transpose: &[i8], stretch: &[f64]) -> Vec<Augmentation> {
    let lowest = notes.iter().map(|n| i16::from(n.pitch)).min().unwrap_or(60);
    let highest = notes.iter().map(|n| i16::from(n.pitch)).max().unwrap_or(60);
    let fits = |shift: i8| {
        lowest + i16::from(shift) >= i16::from(*PIANO_KEYS.start())
            && highest + i16::from(shift) <= i16::from(*PIANO_KEYS.end())
    };
    let mut result = Vec::new();
    for &shift in transpose.iter().filter(|s| fits(**s)) {
        for &factor in stretch {
            if shift != 0 || factor != 1.0 {
                result.push(Augmentation { transpose: shift, stretch: factor });
            }
        }
    }
    result
}

/// A piece transposed and stretched. Expects an augmentation from [`augmentations`].
pub fn augment(notes: &[Note], augmentation: Augmentation) -> Vec<Note> {
    notes
        .iter()
        .map(|n| Note {
            pitch: (i16::from(n.pitch) + i16::from(augmentation.transpose)) as u8,
            onset_seconds: n.onset_seconds * augmentation.stretch,
            duration_seconds: n.duration_seconds * augmentation.stretch,
            ..n.clone()
        })
        .collect()
}

/// An encoding, ready to turn notes into tokens and tokens back into notes.
pub enum Codec {
    Names { chord_window_quarters: f64 },
    Performance(Performance),
}

/// How `names` tokens become timed notes: each element lasts one step, at one loudness.
#[derive(Clone, Copy, Debug)]
pub struct NamesTiming {
    pub step_seconds: f64,
    pub velocity: u8,
}

impl Codec {
    pub fn new(encoding: &Encoding) -> Codec {
        match *encoding {
            Encoding::Names { chord_window_quarters } => Codec::Names { chord_window_quarters },
            Encoding::Performance { step_ms, max_shift_steps, velocity_bins } => Codec::Performance(Performance {
                step_seconds: f64::from(step_ms) / 1000.0,
                max_shift_steps: max_shift_steps.max(1),
                velocity_bins: velocity_bins.max(1),
            }),
        }
    }

    /// A piece's notes as token strings.
    pub fn encode(&self, notes: &[Note]) -> Vec<String> {
        match self {
            Codec::Names { chord_window_quarters } => names::encode_piece(notes, *chord_window_quarters),
            Codec::Performance(codec) => codec.encode(notes).into_iter().map(Event::token).collect(),
        }
    }

    /// The dictionary, when the encoding fixes it (`performance`); `None` when it comes
    /// from the data (`names`).
    pub fn fixed_vocabulary(&self) -> Option<Vocabulary> {
        match self {
            Codec::Names { .. } => None,
            Codec::Performance(codec) => Some(codec.vocabulary()),
        }
    }

    /// Token strings back to notes in seconds. Text that is no token of this encoding is
    /// skipped; notes never last longer than `max_note_seconds`.
    pub fn decode<S: AsRef<str>>(&self, tokens: &[S], names: NamesTiming, max_note_seconds: f64) -> Vec<TimedNote> {
        match self {
            Codec::Names { .. } => {
                let mut notes = Vec::new();
                for (i, token) in tokens.iter().enumerate() {
                    for pitch in names::decode_token(token.as_ref()).unwrap_or_default() {
                        notes.push(TimedNote {
                            pitch,
                            velocity: names.velocity,
                            onset_seconds: i as f64 * names.step_seconds,
                            duration_seconds: names.step_seconds.min(max_note_seconds),
                        });
                    }
                }
                notes
            }
            Codec::Performance(codec) => {
                let events: Vec<Event> = tokens.iter().filter_map(|t| Event::parse(t.as_ref())).collect();
                codec.decode(&events, max_note_seconds)
            }
        }
    }

    /// The tolerances of the fidelity check: one time step for onsets, one step or 50 ms
    /// for ends, one velocity bin (the `names` encoding is held to 10 ms and 32 bins).
    pub fn tolerance(&self) -> Tolerance {
        let (step, bins) = match self {
            Codec::Names { .. } => (0.01, 32),
            Codec::Performance(codec) => (codec.step_seconds, codec.velocity_bins),
        };
        Tolerance { onset_seconds: step, offset_seconds: step.max(0.05), velocity: (128 / bins).max(1) as u8 }
    }
}
