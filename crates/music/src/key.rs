//! Which key a passage keeps to: the diatonic scale that holds the most of its notes.
//!
//! A diatonic scale is the seven pitch classes of a major key, which its relative minor
//! shares (C major and A minor: the white keys). Counting the notes each of the twelve
//! holds is the simplest reading of a key that a score can show: the scale that holds the
//! most is the key signature under which the fewest notes need an accidental. Major or
//! minor is read apart, by which of the two tonics the notes' pitch classes correlate with
//! better on Krumhansl and Kessler's key profiles.

use crate::note::{Note, PIANO_KEYS};

/// Steps of a major scale above its tonic, in semitones.
const MAJOR_STEPS: [u8; 7] = [0, 2, 4, 5, 7, 9, 11];
/// Krumhansl and Kessler's probe-tone ratings of the twelve pitch classes above the tonic.
const MAJOR_PROFILE: [f64; 12] = [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88];
const MINOR_PROFILE: [f64; 12] = [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17];

/// How many notes of each pitch class (C = 0 … B = 11).
pub type PitchClassCounts = [usize; 12];

/// The pitch-class counts of `pitches` (MIDI keys).
pub fn pitch_class_counts(pitches: impl IntoIterator<Item = u8>) -> PitchClassCounts {
    let mut counts = [0; 12];
    for pitch in pitches {
        counts[usize::from(pitch % 12)] += 1;
    }
    counts
}

/// A diatonic scale, named by the tonic of its major key (0 = C major / A minor).
/// Invariant: `major_tonic < 12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    major_tonic: u8,
}

impl Scale {
    /// The scale of the major key on `tonic` (a pitch class, taken modulo 12).
    pub fn of_major(tonic: u8) -> Scale {
        Scale { major_tonic: tonic % 12 }
    }

    /// Whether `pitch` (a MIDI key) belongs to the scale.
    pub fn holds(self, pitch: u8) -> bool {
        MAJOR_STEPS.contains(&((pitch % 12 + 12 - self.major_tonic) % 12))
    }

    /// How many of `counts` the scale holds.
    pub fn held(self, counts: &PitchClassCounts) -> usize {
        MAJOR_STEPS.iter().map(|step| counts[usize::from((self.major_tonic + step) % 12)]).sum()
    }

    /// The scale holding the most of `counts`; between equals, the one with the fewest
    /// sharps or flats. C major for no notes.
    pub fn best_fit(counts: &PitchClassCounts) -> Scale {
        (0..12u8)
            .map(Scale::of_major)
            .max_by_key(|scale| (scale.held(counts), std::cmp::Reverse(scale.sharps().unsigned_abs())))
            .expect("twelve scales")
    }

    /// Its key signature: sharps (positive) or flats (negative), −5 (D♭) to 6 (F♯).
    pub fn sharps(self) -> i8 {
        // Each fifth up adds a sharp: the tonic 7·s semitones above C has s sharps.
        let fifths = (i16::from(self.major_tonic) * 7) % 12;
        (if fifths > 6 { fifths - 12 } else { fifths }) as i8
    }

    /// The name of its major key, or of its relative minor: "E♭ major", "C minor".
    pub fn key_name(self, minor: bool) -> String {
        // By key signature, from five flats (index 0) to six sharps.
        const MAJOR: [&str; 12] = ["D♭", "A♭", "E♭", "B♭", "F", "C", "G", "D", "A", "E", "B", "F♯"];
        const MINOR: [&str; 12] = ["B♭", "F", "C", "G", "D", "A", "E", "B", "F♯", "C♯", "G♯", "D♯"];
        let index = (self.sharps() + 5) as usize;
        if minor { format!("{} minor", MINOR[index]) } else { format!("{} major", MAJOR[index]) }
    }

    /// The scale of a key named as a musician writes it: a tonic letter, an optional sharp
    /// or flat (`#`, `♯`, `b`, `♭`), then `major` or `minor` in any case ("E♭ major",
    /// "f# minor", "Bb Major"). A minor key's scale is its relative major's. `None` for
    /// anything else.
    pub fn from_key_name(name: &str) -> Option<Scale> {
        let (tonic, mode) = name.trim().split_once(char::is_whitespace)?;
        let mut letters = tonic.chars();
        let natural: u8 = match letters.next()?.to_ascii_uppercase() {
            'C' => 0,
            'D' => 2,
            'E' => 4,
            'F' => 5,
            'G' => 7,
            'A' => 9,
            'B' => 11,
            _ => return None,
        };
        let pitch_class = match letters.as_str() {
            "" => natural,
            "#" | "♯" => natural + 1,
            "b" | "♭" => natural + 11,
            _ => return None,
        } % 12;
        match mode.trim().to_ascii_lowercase().as_str() {
            "major" => Some(Scale::of_major(pitch_class)),
            // The relative major is three semitones above the minor tonic.
            "minor" => Some(Scale::of_major(pitch_class + 3)),
            _ => None,
        }
    }

    /// The shift, −5 to +6 semitones, that moves music in this scale into `target`'s: the
    /// smallest move either way (a tritone goes up).
    pub fn shift_to(self, target: Scale) -> i8 {
        let up = (target.major_tonic + 12 - self.major_tonic) % 12;
        if up > 6 { up as i8 - 12 } else { up as i8 }
    }

    /// Whether notes of these pitch-class counts sound in the scale's minor key (its sixth
    /// degree as tonic) rather than its major one, by the key profiles' correlation.
    pub fn sounds_minor(self, counts: &PitchClassCounts) -> bool {
        let weights = counts.map(|n| n as f64);
        profile_fit(&weights, &MINOR_PROFILE, (self.major_tonic + 9) % 12)
            > profile_fit(&weights, &MAJOR_PROFILE, self.major_tonic)
    }
}

/// A key: its tonic (a pitch class, below 12) and whether it is minor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub tonic: u8,
    pub minor: bool,
}

impl Key {
    /// The key, of the 24, whose profile the pitch classes' `weights` (their notes' lengths,
    /// say) correlate with best: Krumhansl and Schmuckler's key finding. Unlike
    /// [`Scale::best_fit`], it tells keys of one scale apart (C major, A minor, G major's
    /// tonic chord in a C major passage). C major for no notes.
    pub fn of(weights: &[f64; 12]) -> Key {
        (0..12u8)
            .flat_map(|tonic| [Key { tonic, minor: false }, Key { tonic, minor: true }])
            .map(|key| (key, profile_fit(weights, if key.minor { &MINOR_PROFILE } else { &MAJOR_PROFILE }, key.tonic)))
            .fold((Key { tonic: 0, minor: false }, 0.0), |best, fit| if fit.1 > best.1 { fit } else { best })
            .0
    }

    /// Whether `pitch` (a MIDI key) is in the key's tonic triad.
    pub fn triad_holds(self, pitch: u8) -> bool {
        let third = if self.minor { 3 } else { 4 };
        [0, third, 7].contains(&((pitch % 12 + 12 - self.tonic) % 12))
    }
}

/// The correlation of pitch-class `weights` with a key profile moved onto `tonic`.
fn profile_fit(weights: &[f64; 12], profile: &[f64; 12], tonic: u8) -> f64 {
    let rotated: Vec<f64> = (0..12).map(|pc| profile[(pc + 12 - usize::from(tonic)) % 12]).collect();
    pearson(weights, &rotated)
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ma, mb) = (mean(a), mean(b));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += (x - ma) * (y - mb);
        aa += (x - ma) * (x - ma);
        bb += (y - mb) * (y - mb);
    }
    if aa == 0.0 || bb == 0.0 { 0.0 } else { ab / (aa * bb).sqrt() }
}

/// `pitch` moved by `shift` semitones, then by whole octaves back onto the 88 keys if the
/// move took it off them.
pub fn transpose_on_keyboard(pitch: u8, shift: i8) -> u8 {
    let (lowest, highest) = (i16::from(*PIANO_KEYS.start()), i16::from(*PIANO_KEYS.end()));
    let mut moved = i16::from(pitch) + i16::from(shift);
    while moved < lowest {
        moved += 12;
    }
    while moved > highest {
        moved -= 12;
    }
    moved as u8
}

/// The shift, −5 to +6 semitones, that moves `notes` so their best-fitting scale is
/// `target`'s.
pub fn shift_into(notes: &[Note], target: Scale) -> i8 {
    Scale::best_fit(&pitch_class_counts(notes.iter().map(|n| n.pitch))).shift_to(target)
}

/// Moves every note by `shift` semitones ([`transpose_on_keyboard`]).
pub fn transpose(notes: &mut [Note], shift: i8) {
    for note in notes {
        note.pitch = transpose_on_keyboard(note.pitch, shift);
    }
}

/// The share of `pitches` in their best-fitting scale ([`Scale::best_fit`]): music in a key
/// keeps most of its notes in it (the first minutes of the 29 validation pieces of
/// `../shared/splits`: 0.91 at the median, 0.70 at the least); pitch classes drawn at random
/// give 7/12 and, fitted after the fact, a little more. 0 for no notes.
pub fn in_key_share(pitches: impl IntoIterator<Item = u8>) -> f64 {
    let counts = pitch_class_counts(pitches);
    let all: usize = counts.iter().sum();
    Scale::best_fit(&counts).held(&counts) as f64 / all.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_signatures_follow_the_circle_of_fifths() {
        let sharps: Vec<i8> =
            [0, 7, 2, 9, 4, 11, 6, 5, 10, 3, 8, 1].iter().map(|&t| Scale::of_major(t).sharps()).collect();
        assert_eq!(sharps, [0, 1, 2, 3, 4, 5, 6, -1, -2, -3, -4, -5]);
        assert!(Scale::of_major(3).holds(63) && Scale::of_major(3).holds(70) && !Scale::of_major(3).holds(64));
    }

    #[test]
    fn the_best_fit_holds_the_most_notes_and_reads_major_or_minor() {
        // E♭ major's scale, its tonic triad weighted, and one F♯.
        let e_flat = [63, 65, 67, 68, 70, 72, 74, 63, 67, 70, 63, 66];
        let counts = pitch_class_counts(e_flat);
        assert_eq!(Scale::best_fit(&counts), Scale::of_major(3));
        assert!(!Scale::of_major(3).sounds_minor(&counts));
        assert!((in_key_share(e_flat) - 11.0 / 12.0).abs() < 1e-12);
        // A minor, its tonic triad weighted, with the raised seventh (G♯).
        let a_minor = [57, 59, 60, 62, 64, 65, 68, 57, 60, 64, 57, 64, 69];
        let counts = pitch_class_counts(a_minor);
        assert_eq!(Scale::best_fit(&counts), Scale::of_major(0));
        assert!(Scale::of_major(0).sounds_minor(&counts));
        assert_eq!(
            (Scale::of_major(3).key_name(false), Scale::of_major(3).key_name(true)),
            ("E♭ major".into(), "C minor".into())
        );
        assert_eq!(Scale::of_major(6).key_name(true), "D♯ minor");
        // Twelve pitch classes once each: every scale holds seven; C major has no sharps or flats.
        assert_eq!(Scale::best_fit(&pitch_class_counts(60..72)), Scale::of_major(0));
        assert!((in_key_share(60..72) - 7.0 / 12.0).abs() < 1e-12);
        assert_eq!(in_key_share([]), 0.0);
    }

    #[test]
    fn key_finding_tells_apart_the_keys_of_one_scale() {
        let weights = |notes: &[(u8, f64)]| {
            let mut w = [0.0; 12];
            notes.iter().for_each(|&(pitch, length)| w[usize::from(pitch % 12)] += length);
            w
        };
        // The same white keys, weighted to C's triad, to A's, and to G's with an F♯.
        let c_major = weights(&[(60, 4.0), (64, 2.0), (67, 2.0), (62, 1.0), (65, 1.0), (69, 1.0), (71, 1.0)]);
        assert_eq!(Key::of(&c_major), Key { tonic: 0, minor: false });
        let a_minor = weights(&[(57, 4.0), (60, 2.0), (64, 2.0), (62, 1.0), (65, 1.0), (68, 1.0), (71, 1.0)]);
        assert_eq!(Key::of(&a_minor), Key { tonic: 9, minor: true });
        let g_major = weights(&[(67, 4.0), (71, 2.0), (62, 2.0), (66, 1.0), (60, 1.0), (64, 1.0), (69, 1.0)]);
        assert_eq!(Key::of(&g_major), Key { tonic: 7, minor: false });
        assert_eq!(Key::of(&[0.0; 12]), Key { tonic: 0, minor: false });
        let a = Key { tonic: 9, minor: true };
        assert!(a.triad_holds(57) && a.triad_holds(72) && a.triad_holds(76) && !a.triad_holds(73));
        assert!(Key { tonic: 9, minor: false }.triad_holds(73));
    }

    #[test]
    fn key_names_read_back_and_a_move_between_scales_is_the_shortest() {
        // Names read back, in either spelling of an accidental.
        for tonic in 0..12 {
            for minor in [false, true] {
                let name = Scale::of_major(tonic).key_name(minor);
                assert_eq!(Scale::from_key_name(&name), Some(Scale::of_major(tonic)), "{name}");
            }
        }
        assert_eq!(Scale::from_key_name("bb Major"), Some(Scale::of_major(10)));
        // Into C: E♭ comes down 3, A up 3, F♯ (a tritone) up 6; the move is exact.
        let c = Scale::of_major(0);
        let shifts: Vec<i8> = [3, 9, 6, 0, 5].iter().map(|&t| Scale::of_major(t).shift_to(c)).collect();
        assert_eq!(shifts, [-3, 3, 6, 0, -5]);
        for from in (0..12).map(Scale::of_major) {
            for to in (0..12).map(Scale::of_major) {
                let shift = from.shift_to(to);
                let moved = (60..72).filter(|&p| from.holds(p)).map(|p| transpose_on_keyboard(p, shift));
                assert!((-5..=6).contains(&shift));
                assert_eq!(Scale::best_fit(&pitch_class_counts(moved)), to, "{from:?} → {to:?} by {shift}");
            }
        }
        assert_eq!(
            (transpose_on_keyboard(107, 3), transpose_on_keyboard(22, -3), transpose_on_keyboard(60, 6)),
            (98, 31, 66)
        );
        assert_eq!(Scale::from_key_name("f# minor"), Some(Scale::of_major(9)));
        for wrong in ["", "H major", "C", "C dorian", "C## major", "Cb"] {
            assert_eq!(Scale::from_key_name(wrong), None, "{wrong}");
        }
    }
}
