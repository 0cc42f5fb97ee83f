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

impl Note {
    /// The note as the pipeline writes it: played at a steady `tempo_bpm` on the first
    /// channel with the piano's program, so its quarter notes are its seconds at that tempo.
    pub fn at_steady_tempo(sound: TimedNote, tempo_bpm: f64) -> Note {
        let quarters_per_second = tempo_bpm / 60.0;
        Note {
            pitch: sound.pitch,
            velocity: sound.velocity,
            channel: 0,
            program: 0,
            onset_seconds: sound.onset_seconds,
            duration_seconds: sound.duration_seconds,
            onset_quarters: sound.onset_seconds * quarters_per_second,
            duration_quarters: sound.duration_seconds * quarters_per_second,
        }
    }

    /// A note of a score written in quarter notes, played at a steady `tempo_bpm` on the
    /// first channel with the piano's program; the quarter notes are kept exactly.
    pub fn of_score(pitch: u8, velocity: u8, onset_quarters: f64, duration_quarters: f64, tempo_bpm: f64) -> Note {
        let seconds_per_quarter = 60.0 / tempo_bpm;
        Note {
            pitch,
            velocity,
            channel: 0,
            program: 0,
            onset_seconds: onset_quarters * seconds_per_quarter,
            duration_seconds: duration_quarters * seconds_per_quarter,
            onset_quarters,
            duration_quarters,
        }
    }
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
