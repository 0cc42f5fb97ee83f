//! How a piece ends, read from its notes and bars alone, so composed pieces and real ones
//! are measured alike: whether the last sonority is the tonic chord over the tonic, whether
//! it is struck on a downbeat, how many notes strike it, how long it is held and how much
//! slower than the piece it goes.
//!
//! The key is Krumhansl and Schmuckler's ([`music::key::Key::of`]) over the whole piece's
//! notes, each weighed by its length up to a whole note: the reading the composer's close
//! makes of its own piece (`compose` crate, `ending.rs`), so a close that keeps to its key
//! scores as one. `quality` reads both sides as heard, pedal applied, which lengthens what
//! is held and can move the key reading; the key finding also misreads some real pieces,
//! so their tonic share is a floor.

use crate::quality::Spread;
use artifacts::Note;
use music::key::Key;
use serde::Serialize;

/// Quarter notes within which a note's onset counts as the last onset (a chord's notes are
/// not all written at one tick in every file).
const SAME_ONSET_QUARTERS: f64 = 0.02;
/// Quarter notes within which the last onset counts as on a bar line.
const ON_THE_BAR_LINE: f64 = 0.05;

/// The end of one piece.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Ending {
    /// Every note sounding at the last onset is in the key's tonic triad (in a minor key,
    /// with its major third too: the Picardy third) and the lowest is the tonic.
    pub tonic_chord: bool,
    /// The last onset lies on a bar line.
    pub on_a_downbeat: bool,
    /// Notes struck at the last onset.
    pub notes_struck: usize,
    /// Quarter notes from the last onset to the end of the last note sounding.
    pub held_quarters: f64,
    /// Seconds a quarter note lasts in the notes struck at the last onset, over the median
    /// of that over all the piece's notes: above 1, the piece slows at its end.
    pub slowing: f64,
}

/// The end of the piece of `notes` with bars starting at `bar_starts` (quarter notes);
/// `None` for a piece without notes.
pub fn ending_of(notes: &[Note], bar_starts: &[f64]) -> Option<Ending> {
    let last = notes.iter().map(|n| n.onset_quarters).reduce(f64::max)?;
    let struck: Vec<&Note> = notes.iter().filter(|n| n.onset_quarters >= last - SAME_ONSET_QUARTERS).collect();
    let sounding: Vec<&Note> = notes
        .iter()
        .filter(|n| n.onset_quarters >= last - SAME_ONSET_QUARTERS || n.onset_quarters + n.duration_quarters > last)
        .collect();
    let mut weights = [0.0; 12];
    for note in notes {
        weights[usize::from(note.pitch % 12)] += note.duration_quarters.min(4.0);
    }
    let key = Key::of(&weights);
    let in_tonic_chord = |pitch: u8| key.triad_holds(pitch) || (key.minor && (pitch + 12 - key.tonic) % 12 == 4);
    let lowest = sounding.iter().map(|n| n.pitch).min()?;
    let seconds_per_quarter = |n: &Note| n.duration_seconds / n.duration_quarters.max(1e-9);
    let mut piece_pace: Vec<f64> = notes.iter().map(seconds_per_quarter).collect();
    piece_pace.sort_by(f64::total_cmp);
    let end_pace = struck.iter().map(|n| seconds_per_quarter(n)).sum::<f64>() / struck.len() as f64;
    Some(Ending {
        tonic_chord: lowest % 12 == key.tonic && sounding.iter().all(|n| in_tonic_chord(n.pitch)),
        on_a_downbeat: bar_starts.iter().any(|start| (start - last).abs() < ON_THE_BAR_LINE),
        notes_struck: struck.len(),
        held_quarters: sounding.iter().map(|n| n.onset_quarters + n.duration_quarters).fold(last, f64::max) - last,
        slowing: end_pace / piece_pace[piece_pace.len() / 2].max(1e-9),
    })
}

/// How a set of pieces ends: shares over the pieces, medians of the sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Endings {
    pub pieces: usize,
    pub tonic_chord: f64,
    pub on_a_downbeat: f64,
    pub notes_struck: f64,
    pub held_quarters: f64,
    pub slowing: f64,
}

impl Endings {
    /// The endings of a set; all zero for none.
    pub fn of(endings: &[Ending]) -> Endings {
        let share = |holds: fn(&Ending) -> bool| {
            endings.iter().filter(|e| holds(e)).count() as f64 / endings.len().max(1) as f64
        };
        let median = |value: fn(&Ending) -> f64| Spread::of(endings.iter().map(value).collect()).median;
        Endings {
            pieces: endings.len(),
            tonic_chord: share(|e| e.tonic_chord),
            on_a_downbeat: share(|e| e.on_a_downbeat),
            notes_struck: median(|e| e.notes_struck as f64),
            held_quarters: median(|e| e.held_quarters),
            slowing: median(|e| e.slowing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A note at `onset` quarter notes, `quarters` long, at `seconds_per_quarter`.
    fn note(pitch: u8, onset: f64, quarters: f64, seconds_per_quarter: f64) -> Note {
        Note {
            pitch,
            velocity: 64,
            channel: 0,
            program: 0,
            onset_seconds: onset * 0.5,
            duration_seconds: quarters * seconds_per_quarter,
            onset_quarters: onset,
            duration_quarters: quarters,
        }
    }

    /// Two bars of C major's scale in quarter notes, at 120 BPM.
    fn c_major_bars() -> Vec<Note> {
        [60, 62, 64, 65, 67, 69, 71, 72].iter().enumerate().map(|(i, &p)| note(p, i as f64, 1.0, 0.5)).collect()
    }

    #[test]
    fn a_tonic_chord_on_the_downbeat_slowed_is_read_as_such() {
        let mut notes = c_major_bars();
        // C3 E4 G4 C5 on bar 3's downbeat, a whole bar, at ♩ = 80.
        notes.extend([48, 64, 67, 72].map(|p| note(p, 8.0, 4.0, 0.75)));
        let ending = ending_of(&notes, &[0.0, 4.0, 8.0]).unwrap();
        assert_eq!(
            ending,
            Ending { tonic_chord: true, on_a_downbeat: true, notes_struck: 4, held_quarters: 4.0, slowing: 1.5 }
        );
        // In A minor (its scale's notes, A weighed most), A C E and A C♯ E both close it.
        let mut minor: Vec<Note> =
            [57, 59, 60, 62, 64, 65, 67, 69].iter().enumerate().map(|(i, &p)| note(p, i as f64, 1.0, 0.5)).collect();
        minor.extend([45, 57, 45, 57].iter().enumerate().map(|(i, &p)| note(p, 8.0 + i as f64, 1.0, 0.5)));
        for third in [60, 61] {
            let mut piece = minor.clone();
            piece.extend([45, third, 64].map(|p| note(p, 12.0, 4.0, 0.5)));
            assert!(ending_of(&piece, &[0.0, 4.0, 8.0, 12.0]).unwrap().tonic_chord, "third {third}");
        }
    }

    #[test]
    fn a_piece_cut_mid_bar_on_another_chord_is_not() {
        let mut notes = c_major_bars();
        // G3 with B4 held from before, a sixteenth after beat two of bar 3.
        notes.push(note(71, 8.0, 3.0, 0.5));
        notes.push(note(55, 9.25, 0.25, 0.5));
        let ending = ending_of(&notes, &[0.0, 4.0, 8.0]).unwrap();
        assert!(!ending.tonic_chord && !ending.on_a_downbeat);
        assert_eq!((ending.notes_struck, ending.held_quarters, ending.slowing), (1, 1.75, 1.0));
        // A C major chord whose lowest note is its fifth is not over the tonic.
        let mut six_four = c_major_bars();
        six_four.extend([55, 60, 64].map(|p| note(p, 8.0, 4.0, 0.5)));
        assert!(!ending_of(&six_four, &[0.0, 4.0, 8.0]).unwrap().tonic_chord);
        assert_eq!(ending_of(&[], &[0.0]), None);
        let set = Endings::of(&[ending, ending_of(&six_four, &[0.0, 4.0, 8.0]).unwrap()]);
        assert_eq!((set.pieces, set.on_a_downbeat, set.notes_struck, set.held_quarters), (2, 0.5, 2.0, 2.875));
    }
}
