//! The `names` encoding (once called `seed`): the original design's note and chord names.
//!
//! Notes are grouped by onset. A group with one pitch becomes that pitch's name (`E4`,
//! `F#3`; MIDI 60 is `C4`); a group with several becomes a chord: its pitch classes in
//! normal order joined by `.` (`4.7.11` for E minor), as the original design's music21
//! code does. Rhythm, durations and loudness are not represented: decoding places one
//! element every fixed step.

use crate::note::Note;

pub use crate::note::{parse_pitch_name, pitch_name};

/// The normal order of a set of pitch classes (0–11): the rotation of the sorted set with
/// the smallest span; ties go to the rotation most packed towards its first note (Rahn),
/// then to the lowest first pitch class. Deterministic for any input.
pub fn normal_order(pitch_classes: &[u8]) -> Vec<u8> {
    let mut set: Vec<u8> = pitch_classes.iter().map(|p| p % 12).collect();
    set.sort_unstable();
    set.dedup();
    let n = set.len();
    if n <= 1 {
        return set;
    }
    let rotation = |start: usize| -> Vec<u8> { (0..n).map(|i| set[(start + i) % n]).collect() };
    // Intervals from the first note to the last, then to the one before, and so on.
    let packing = |r: &[u8]| -> Vec<u8> { (1..n).rev().map(|i| (r[i] + 12 - r[0]) % 12).collect() };
    (0..n).map(rotation).min_by_key(|r| (packing(r), r[0])).expect("n >= 2 rotations")
}

/// Encodes a piece's notes as `names` tokens, one per onset group.
///
/// Notes are grouped when their onsets lie within `chord_window` quarter notes of the
/// group's first onset. Expects `notes` sorted by onset (as `notes.bin` stores them).
pub fn encode_piece(notes: &[Note], chord_window: f64) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut start = 0;
    while start < notes.len() {
        let onset = notes[start].onset_quarters;
        let end = start + notes[start..].iter().take_while(|n| n.onset_quarters - onset <= chord_window).count();
        let mut pitches: Vec<u8> = notes[start..end].iter().map(|n| n.pitch).collect();
        pitches.sort_unstable();
        pitches.dedup();
        tokens.push(match pitches.as_slice() {
            [single] => pitch_name(*single),
            _ => normal_order(&pitches).iter().map(|p| p.to_string()).collect::<Vec<_>>().join("."),
        });
        start = end;
    }
    tokens
}

/// The pitches a token stands for: a note name gives its pitch; a chord gives its pitch
/// classes voiced upwards from the octave above middle C's octave start (first pitch class
/// in 60..72, each next one above the previous). `None` for text that is no `names` token.
pub fn decode_token(token: &str) -> Option<Vec<u8>> {
    if let Some(pitch) = parse_pitch_name(token) {
        return Some(vec![pitch]);
    }
    let classes: Vec<u8> = token.split('.').map(|p| p.parse::<u8>().ok().filter(|p| *p < 12)).collect::<Option<_>>()?;
    let mut pitches: Vec<u8> = Vec::with_capacity(classes.len());
    for class in classes {
        let mut pitch = 60 + class;
        while let Some(&below) = pitches.last()
            && pitch <= below
        {
            pitch += 12;
        }
        pitches.push(pitch);
    }
    Some(pitches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(pitch: u8, onset_quarters: f64) -> Note {
        Note {
            pitch,
            velocity: 64,
            channel: 0,
            program: 0,
            onset_seconds: onset_quarters / 2.0,
            duration_seconds: 0.25,
            onset_quarters,
            duration_quarters: 0.5,
        }
    }

    #[test]
    fn normal_order_matches_textbook_cases() {
        assert_eq!(normal_order(&[4, 7, 11]), vec![4, 7, 11]); // E minor
        assert_eq!(normal_order(&[0, 4, 7]), vec![0, 4, 7]); // C major
        assert_eq!(normal_order(&[7, 0, 4]), vec![0, 4, 7]);
        assert_eq!(normal_order(&[2, 5, 7, 11]), vec![11, 2, 5, 7]); // G7 = B D F G
        assert_eq!(normal_order(&[0, 6]), vec![0, 6]);
        assert_eq!(normal_order(&[0, 12, 24]), vec![0]);
    }

    #[test]
    fn groups_simultaneous_notes_into_chords() {
        let notes = [note(64, 0.0), note(67, 0.0), note(71, 0.01), note(72, 1.0), note(48, 2.0), note(60, 2.0)];
        assert_eq!(encode_piece(&notes, 0.0625), vec!["4.7.11", "C5", "0"]);
        assert_eq!(encode_piece(&notes, 0.0), vec!["4.7", "B4", "C5", "0"]);
    }

    #[test]
    fn decoding_inverts_encoding_up_to_octave() {
        assert_eq!(decode_token("E4"), Some(vec![64]));
        assert_eq!(decode_token("4.7.11"), Some(vec![64, 67, 71]));
        assert_eq!(decode_token("11.2.5"), Some(vec![71, 74, 77]));
        assert_eq!(decode_token("13.2"), None);
        assert_eq!(decode_token("nonsense"), None);
    }
}
