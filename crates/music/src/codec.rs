//! Encodings behind one face: notes → token strings → notes, and augmentation.

use crate::beats::{self, Beats};
use crate::encoding::{Augmentation, Encoding, Vocabulary};
use crate::fidelity::Tolerance;
use crate::metre::{Metre, PedalPress, Score};
use crate::names;
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

/// A piece's metre, stretched: its tempos divided by `factor` (1.05 = 5 % slower).
pub fn augment_metre(metre: &Metre, augmentation: Augmentation) -> Metre {
    let mut metre = metre.clone();
    for tempo in &mut metre.tempos {
        tempo.bpm /= augmentation.stretch;
    }
    metre
}

/// An encoding, ready to turn notes into tokens and tokens back into notes.
pub enum Codec {
    Names { chord_window_quarters: f64 },
    Performance(Performance),
    Beats(Beats),
}

/// How tokens that carry no metre of their own are played: `names` elements last one
/// step each at one loudness; `names` and `performance` music is written in 4/4 at
/// `tempo_bpm` (the `beats` encoding carries its own bars and tempo).
#[derive(Clone, Copy, Debug)]
pub struct Playback {
    pub step_seconds: f64,
    pub velocity: u8,
    pub tempo_bpm: f64,
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
            Encoding::Beats { velocity_bins, tempo_bins } => {
                Codec::Beats(Beats { velocity_bins: velocity_bins.max(2), tempo_bins: tempo_bins.max(2), pedal: false })
            }
        }
    }

    /// The same codec keeping the sustain pedal as tokens of its own, where the encoding
    /// can (`beats`; see [`Beats::pedal`]); the others are returned as they are.
    pub fn with_pedal(self, pedal: bool) -> Codec {
        match self {
            Codec::Beats(codec) => Codec::Beats(Beats { pedal, ..codec }),
            other => other,
        }
    }

    /// A piece's notes as token strings (`metre` is read by `beats` alone). Its pedal
    /// presses become tokens where the codec keeps them ([`Codec::with_pedal`]); elsewhere
    /// they are applied to the notes' durations first ([`crate::metre::pedal_applied`]).
    pub fn encode(&self, notes: &[Note], metre: &Metre, pedal: &[PedalPress]) -> Vec<String> {
        let held;
        let notes = match self {
            Codec::Beats(codec) if codec.pedal => notes,
            _ if pedal.is_empty() => notes,
            _ => {
                held = crate::metre::pedal_applied(notes, pedal, metre);
                &held
            }
        };
        match self {
            Codec::Names { chord_window_quarters } => names::encode_piece(notes, *chord_window_quarters),
            Codec::Performance(codec) => codec.encode(notes).into_iter().map(Event::token).collect(),
            Codec::Beats(codec) => codec.encode(notes, metre, pedal).into_iter().map(beats::Token::text).collect(),
        }
    }

    /// The dictionary, when the encoding fixes it (`performance`); `None` when it comes
    /// from the data (`names`).
    pub fn fixed_vocabulary(&self) -> Option<Vocabulary> {
        match self {
            Codec::Names { .. } => None,
            Codec::Performance(codec) => Some(codec.vocabulary()),
            Codec::Beats(codec) => Some(codec.vocabulary()),
        }
    }

    /// Token strings back to a score. Text that is no token of this encoding is skipped;
    /// notes never last longer than `max_note_seconds`.
    pub fn decode<S: AsRef<str>>(&self, tokens: &[S], playback: Playback, max_note_seconds: f64) -> Score {
        let steady = |sounds: Vec<crate::TimedNote>| Score {
            notes: sounds.into_iter().map(|sound| Note::at_steady_tempo(sound, playback.tempo_bpm)).collect(),
            metre: Metre::steady(4, 4, playback.tempo_bpm),
            pedal: Vec::new(),
        };
        match self {
            Codec::Names { .. } => {
                let mut notes = Vec::new();
                for (i, token) in tokens.iter().enumerate() {
                    for pitch in names::decode_token(token.as_ref()).unwrap_or_default() {
                        notes.push(crate::TimedNote {
                            pitch,
                            velocity: playback.velocity,
                            onset_seconds: i as f64 * playback.step_seconds,
                            duration_seconds: playback.step_seconds.min(max_note_seconds),
                        });
                    }
                }
                steady(notes)
            }
            Codec::Performance(codec) => {
                let events: Vec<Event> = tokens.iter().filter_map(|t| Event::parse(t.as_ref())).collect();
                steady(codec.decode(&events, max_note_seconds))
            }
            Codec::Beats(codec) => {
                let tokens: Vec<beats::Token> = tokens.iter().filter_map(|t| beats::Token::parse(t.as_ref())).collect();
                codec.decode(&tokens, max_note_seconds)
            }
        }
    }

    /// The tolerances of the fidelity check in seconds: one time step for onsets, one step
    /// or 50 ms for ends, one velocity bin (the `names` encoding is held to 10 ms and 32
    /// bins). `beats`, whose clock follows the seconds only to within
    /// [`beats::TEMPO_TOLERANCE_SECONDS`] and whose durations are a score's: 50 ms for
    /// onsets, 50 ms or a fifth of the note for ends (the usual transcription measure).
    pub fn tolerance(&self) -> Tolerance {
        let (step, bins, offset_ratio) = match self {
            Codec::Names { .. } => (0.01, 32, 0.0),
            Codec::Performance(codec) => (codec.step_seconds, codec.velocity_bins, 0.0),
            Codec::Beats(codec) => (0.05, codec.velocity_bins, 0.2),
        };
        Tolerance {
            onset_seconds: step,
            offset_seconds: step.max(0.05),
            offset_ratio,
            velocity: (128 / bins).max(1) as u8,
        }
    }

    /// The tolerances in quarter notes, for an encoding that keeps them (`beats`): half a
    /// grid step for onsets (what rounding to the grid moves), a grid step or a fifth of
    /// the note for ends, velocity as in seconds.
    pub fn quarters_tolerance(&self) -> Option<Tolerance> {
        let Codec::Beats(_) = self else { return None };
        let step = 1.0 / f64::from(beats::POSITIONS_PER_QUARTER);
        Some(Tolerance { onset_seconds: step / 2.0, offset_seconds: step, ..self.tolerance() })
    }
}
