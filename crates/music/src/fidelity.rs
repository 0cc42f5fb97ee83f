//! How much of the music survives an encoding: every piece is decoded back to notes and
//! compared with what `extract` produced.
//!
//! A decoded note matches a reference note when it has the same pitch, its onset is within
//! one time step, its end within one time step or 50 ms (whichever is larger), and its
//! velocity within one velocity bin. Each note matches at most once (greedily, in onset
//! order). Precision is the share of decoded notes that match, recall the share of
//! reference notes, F1 their harmonic mean.

use crate::note::Note;
use crate::note::TimedNote;
use std::collections::BTreeMap;

/// The matching tolerances.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub onset_seconds: f64,
    /// An end matches within `offset_seconds` or `offset_ratio` of the reference note's
    /// duration, whichever is larger.
    pub offset_seconds: f64,
    pub offset_ratio: f64,
    pub velocity: u8,
}

/// The comparison of one piece (or of all, summed).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Fidelity {
    pub reference_notes: usize,
    pub decoded_notes: usize,
    pub matched: usize,
    /// Reference notes with no match, by the first test they failed: no decoded note of
    /// that pitch was left, or the nearest one's onset, end or velocity was off.
    pub unmatched_pitch: usize,
    pub unmatched_onset: usize,
    pub unmatched_offset: usize,
    pub unmatched_velocity: usize,
}

impl Fidelity {
    pub fn precision(&self) -> f64 {
        self.matched as f64 / self.decoded_notes.max(1) as f64
    }

    pub fn recall(&self) -> f64 {
        self.matched as f64 / self.reference_notes.max(1) as f64
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
    }

    pub fn add(&mut self, other: &Fidelity) {
        self.reference_notes += other.reference_notes;
        self.decoded_notes += other.decoded_notes;
        self.matched += other.matched;
        self.unmatched_pitch += other.unmatched_pitch;
        self.unmatched_onset += other.unmatched_onset;
        self.unmatched_offset += other.unmatched_offset;
        self.unmatched_velocity += other.unmatched_velocity;
    }
}

/// [`compare`] in quarter notes rather than seconds: the score's time, for an encoding that
/// keeps it (the tolerance's "seconds" are then quarter notes).
pub fn compare_in_quarters(reference: &[Note], decoded: &[Note], tolerance: Tolerance) -> Fidelity {
    let in_quarters =
        |n: &Note| Note { onset_seconds: n.onset_quarters, duration_seconds: n.duration_quarters, ..n.clone() };
    let reference: Vec<Note> = reference.iter().map(in_quarters).collect();
    let decoded: Vec<TimedNote> = decoded.iter().map(|n| TimedNote::from(&in_quarters(n))).collect();
    compare(&reference, &decoded, tolerance)
}

/// Compares decoded notes with the reference notes of one piece.
pub fn compare(reference: &[Note], decoded: &[TimedNote], tolerance: Tolerance) -> Fidelity {
    let mut by_pitch: BTreeMap<u8, Vec<(&TimedNote, bool)>> = BTreeMap::new();
    for note in decoded {
        by_pitch.entry(note.pitch).or_default().push((note, false));
    }
    let mut result = Fidelity { reference_notes: reference.len(), decoded_notes: decoded.len(), ..Fidelity::default() };
    let mut sorted: Vec<&Note> = reference.iter().collect();
    sorted.sort_by(|a, b| a.onset_seconds.total_cmp(&b.onset_seconds));
    for note in sorted {
        let Some(candidates) = by_pitch.get_mut(&note.pitch) else {
            result.unmatched_pitch += 1;
            continue;
        };
        let end = note.onset_seconds + note.duration_seconds;
        let end_tolerance = tolerance.offset_seconds.max(tolerance.offset_ratio * note.duration_seconds);
        let mut failure = 0; // 1 pitch, 2 onset, 3 offset, 4 velocity: the furthest test reached
        let mut found = None;
        for (index, (candidate, used)) in candidates.iter().enumerate() {
            if *used {
                continue;
            }
            if (candidate.onset_seconds - note.onset_seconds).abs() > tolerance.onset_seconds + 1e-9 {
                failure = failure.max(2);
                continue;
            }
            let candidate_end = candidate.onset_seconds + candidate.duration_seconds;
            if (candidate_end - end).abs() > end_tolerance + 1e-9 {
                failure = failure.max(3);
                continue;
            }
            if candidate.velocity.abs_diff(note.velocity) > tolerance.velocity {
                failure = failure.max(4);
                continue;
            }
            found = Some(index);
            break;
        }
        match (found, failure) {
            (Some(index), _) => {
                candidates[index].1 = true;
                result.matched += 1;
            }
            (None, 4) => result.unmatched_velocity += 1,
            (None, 3) => result.unmatched_offset += 1,
            (None, 2) => result.unmatched_onset += 1,
            (None, _) => result.unmatched_pitch += 1,
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(pitch: u8, onset: f64, duration: f64, velocity: u8) -> Note {
        Note {
            pitch,
            velocity,
            channel: 0,
            program: 0,
            onset_seconds: onset,
            duration_seconds: duration,
            onset_quarters: 0.0,
            duration_quarters: 0.0,
        }
    }

    fn decoded(pitch: u8, onset: f64, duration: f64, velocity: u8) -> TimedNote {
        TimedNote { pitch, velocity, onset_seconds: onset, duration_seconds: duration }
    }

    #[test]
    fn counts_matches_and_says_why_the_rest_failed() {
        let tolerance = Tolerance { onset_seconds: 0.01, offset_seconds: 0.05, offset_ratio: 0.0, velocity: 4 };
        let truth = [
            reference(60, 0.0, 0.5, 80),
            reference(62, 1.0, 0.5, 80),
            reference(64, 2.0, 0.5, 80),
            reference(65, 3.0, 0.5, 80),
            reference(67, 4.0, 0.5, 80),
        ];
        let guess = [
            decoded(60, 0.005, 0.5, 83), // match
            decoded(62, 1.05, 0.5, 80),  // onset too late
            decoded(64, 2.0, 0.7, 80),   // ends too late
            decoded(65, 3.0, 0.5, 100),  // too loud
            decoded(71, 4.0, 0.5, 80),   // wrong pitch
            decoded(72, 5.0, 0.5, 80),   // extra
        ];
        let f = compare(&truth, &guess, tolerance);
        assert_eq!(
            (f.matched, f.unmatched_onset, f.unmatched_offset, f.unmatched_velocity, f.unmatched_pitch),
            (1, 1, 1, 1, 1)
        );
        assert!((f.precision() - 1.0 / 6.0).abs() < 1e-12 && (f.recall() - 0.2).abs() < 1e-12);
        let perfect = compare(
            &truth,
            &truth
                .iter()
                .map(|n| decoded(n.pitch, n.onset_seconds, n.duration_seconds, n.velocity))
                .collect::<Vec<_>>(),
            tolerance,
        );
        assert_eq!(perfect.f1(), 1.0);
    }
}
