//! The one note type, and the piano's keys.

use serde::{Deserialize, Serialize};

/// The 88 keys of a piano, A0 to C8: the pitches the pipeline keeps and plays.
pub const PIANO_KEYS: std::ops::RangeInclusive<u8> = 21..=108;

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

/// A note as it sounds, in seconds: what a decoder gives, a piano roll draws and the music
/// statistics count. [`Note`] is the same with what extract also keeps (channel, program,
/// the score's quarter notes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimedNote {
    pub pitch: u8,
    pub velocity: u8,
    pub onset_seconds: f64,
    pub duration_seconds: f64,
}

impl From<&Note> for TimedNote {
    fn from(note: &Note) -> Self {
        TimedNote {
            pitch: note.pitch,
            velocity: note.velocity,
            onset_seconds: note.onset_seconds,
            duration_seconds: note.duration_seconds,
        }
    }
}

const PITCH_CLASS_NAMES: [&str; 12] = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];

/// The name of a MIDI pitch: `C4` for 60 (middle C), `F#3` for 54, `C-1` for 0.
pub fn pitch_name(pitch: u8) -> String {
    let octave = i32::from(pitch / 12) - 1;
    format!("{}{}", PITCH_CLASS_NAMES[usize::from(pitch % 12)], octave)
}

/// The MIDI pitch of a name made by [`pitch_name`], or `None`.
pub fn parse_pitch_name(name: &str) -> Option<u8> {
    let split = name.find(|c: char| c == '-' || c.is_ascii_digit())?;
    let (letter, octave) = name.split_at(split);
    let class = PITCH_CLASS_NAMES.iter().position(|n| *n == letter)? as i32;
    let octave: i32 = octave.parse().ok()?;
    u8::try_from((octave + 1) * 12 + class).ok().filter(|p| *p <= 127)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pitch_names_round_trip() {
        assert_eq!(pitch_name(60), "C4");
        assert_eq!(pitch_name(54), "F#3");
        assert_eq!(pitch_name(0), "C-1");
        assert_eq!(pitch_name(127), "G9");
        for pitch in 0..=127 {
            assert_eq!(parse_pitch_name(&pitch_name(pitch)), Some(pitch));
        }
        assert_eq!(parse_pitch_name("H4"), None);
        assert_eq!(parse_pitch_name("4.7"), None);
    }
}
