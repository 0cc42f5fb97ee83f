//! Metre: a piece's time signatures and tempo map, in the quarter notes of its score.
//!
//! A note keeps its onset in quarter notes ([`crate::Note::onset_quarters`]); the piece's
//! [`Metre`] says where its bars fall and how fast its beats go, so [`Metre::locate`] gives
//! any note its bar, its place in the bar and the tempo at its onset. Stored once per piece,
//! not per note: a piece of 10,000 notes has a handful of signatures.
//!
//! Invariant (made so by [`crate::midi_in`] and kept by every decoder): each time
//! signature starts a bar, so bars follow each other from 0 without gaps, each as long as
//! the signature in force at its start says.

use serde::{Deserialize, Serialize};

/// A time signature taking effect at a bar line.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeSignature {
    pub at_quarters: f64,
    /// Beats in a bar, at least 1.
    pub numerator: u8,
    /// The beat's note value: 1, 2, 4, 8 or 16.
    pub denominator: u8,
}

impl TimeSignature {
    /// A bar's length in quarter notes.
    pub fn bar_quarters(&self) -> f64 {
        f64::from(self.numerator) * 4.0 / f64::from(self.denominator)
    }

    /// `"3/4"` as (3, 4): a numerator of at least 1 over a power of two up to 64; `None`
    /// for anything else. Callers narrow the range to what they can write.
    pub fn parse(text: &str) -> Option<(u8, u8)> {
        let (numerator, denominator) = text.trim().split_once('/')?;
        let numerator: u8 = numerator.trim().parse().ok().filter(|n| *n > 0)?;
        let denominator: u8 = denominator.trim().parse().ok().filter(|d: &u8| d.is_power_of_two() && *d <= 64)?;
        Some((numerator, denominator))
    }

    /// A bar of `sixteenths` sixteenth notes (1 to 255) as a metre in lowest terms, down to
    /// quarters: 6 sixteenths are 3/8, 8 are 2/4, 5 stay 5/16. How a short bar (an upbeat,
    /// a bar cut by a new signature) is written.
    pub fn of_sixteenths(sixteenths: u32) -> Option<(u8, u8)> {
        let mut numerator = u8::try_from(sixteenths).ok().filter(|n| *n > 0)?;
        let mut denominator = 16u8;
        while numerator.is_multiple_of(2) && denominator > 4 {
            numerator /= 2;
            denominator /= 2;
        }
        Some((numerator, denominator))
    }
}

/// A tempo taking effect at a point of the score.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tempo {
    pub at_quarters: f64,
    /// Quarter notes per minute, positive.
    pub bpm: f64,
}

/// Where a point of the score falls.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Location {
    /// 0-based bar number.
    pub bar: usize,
    /// Quarter notes from the bar's downbeat.
    pub in_bar_quarters: f64,
    /// The time signature in force.
    pub signature: TimeSignature,
    /// The tempo in force.
    pub bpm: f64,
}

/// One bar of a piece.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bar {
    pub start_quarters: f64,
    pub signature: TimeSignature,
}

/// A piece's time signatures and tempo map. Invariant: both lists are sorted, non-empty
/// and start at 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metre {
    pub signatures: Vec<TimeSignature>,
    pub tempos: Vec<Tempo>,
}

impl Default for Metre {
    /// The MIDI default: 4/4 at 120 BPM.
    fn default() -> Self {
        Metre::steady(4, 4, 120.0)
    }
}

impl Metre {
    /// One time signature and one tempo for the whole piece.
    pub fn steady(numerator: u8, denominator: u8, bpm: f64) -> Metre {
        Metre {
            signatures: vec![TimeSignature { at_quarters: 0.0, numerator, denominator }],
            tempos: vec![Tempo { at_quarters: 0.0, bpm }],
        }
    }

    /// The bars that start before `end_quarters` (at least one).
    pub fn bars_until(&self, end_quarters: f64) -> Vec<Bar> {
        let mut bars = Vec::new();
        for (index, signature) in self.signatures.iter().enumerate() {
            let next = self.signatures.get(index + 1).map_or(f64::INFINITY, |s| s.at_quarters);
            let mut start = signature.at_quarters;
            // The last bar before `next` may be short only where a file was repaired badly;
            // a bar never starts at or past the next signature.
            while start < next - 1e-9 && (start < end_quarters - 1e-9 || bars.is_empty()) {
                bars.push(Bar { start_quarters: start, signature: *signature });
                start += signature.bar_quarters();
            }
        }
        bars
    }

    /// The median tempo of the music up to `end_quarters`, each tempo weighed by the quarter
    /// notes it lasts (the first tempo's for an empty span).
    pub fn median_bpm(&self, end_quarters: f64) -> f64 {
        let mut spans: Vec<(f64, f64)> = self
            .tempos
            .iter()
            .enumerate()
            .map(|(index, tempo)| {
                let next = self.tempos.get(index + 1).map_or(f64::INFINITY, |t| t.at_quarters);
                (tempo.bpm, next.min(end_quarters) - tempo.at_quarters)
            })
            .filter(|&(_, quarters)| quarters > 0.0)
            .collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        let half = spans.iter().map(|s| s.1).sum::<f64>() / 2.0;
        let mut so_far = 0.0;
        for (bpm, quarters) in &spans {
            so_far += quarters;
            if so_far >= half {
                return *bpm;
            }
        }
        self.tempos[0].bpm
    }

    /// The tempo in force at `quarters`.
    pub fn bpm_at(&self, quarters: f64) -> f64 {
        let index = self.tempos.partition_point(|t| t.at_quarters <= quarters + 1e-9).max(1) - 1;
        self.tempos[index].bpm
    }

    /// The bar, place in the bar, signature and tempo at `quarters` (at least 0).
    pub fn locate(&self, quarters: f64) -> Location {
        let index = self.signatures.partition_point(|s| s.at_quarters <= quarters + 1e-9).max(1) - 1;
        let mut bar = 0usize;
        for (i, signature) in self.signatures[..index].iter().enumerate() {
            let span = self.signatures[i + 1].at_quarters - signature.at_quarters;
            bar += (span / signature.bar_quarters() - 1e-9).ceil().max(0.0) as usize;
        }
        let signature = self.signatures[index];
        let offset = (quarters - signature.at_quarters).max(0.0);
        let bars_in = (offset / signature.bar_quarters() + 1e-9).floor();
        Location {
            bar: bar + bars_in as usize,
            in_bar_quarters: (offset - bars_in * signature.bar_quarters()).max(0.0),
            signature,
            bpm: self.bpm_at(quarters),
        }
    }

    /// Seconds from the start to `quarters`, through the tempo map.
    pub fn seconds_at(&self, quarters: f64) -> f64 {
        let mut seconds = 0.0;
        for (index, tempo) in self.tempos.iter().enumerate() {
            let end = self.tempos.get(index + 1).map_or(f64::INFINITY, |t| t.at_quarters).min(quarters);
            if end <= tempo.at_quarters {
                break;
            }
            seconds += (end - tempo.at_quarters) * 60.0 / tempo.bpm;
        }
        seconds
    }
}

/// Whether an onset at `quarters` sits on the grid scored music mostly uses: within 1/48 of
/// a quarter note of a sixteenth or of an eighth-note triplet.
pub fn on_grid(quarters: f64) -> bool {
    let near = |unit: f64| {
        let offset = (quarters / unit).fract() * unit;
        offset.min(unit - offset) <= 1.0 / 48.0 + 1e-9
    };
    near(0.25) || near(1.0 / 3.0)
}

/// The share of `onsets` (in quarter notes) [`on_grid`]; 0 for none.
pub fn on_grid_share(onsets: impl IntoIterator<Item = f64>) -> f64 {
    let (mut on, mut all) = (0usize, 0usize);
    for quarters in onsets {
        all += 1;
        on += usize::from(on_grid(quarters));
    }
    on as f64 / all.max(1) as f64
}

/// The share of `onsets` (in quarter notes) [`on_grid`] once all of them are moved by the
/// one constant shift that puts the most there: a file whose notes all start a little off
/// its beats (as some exports do: every onset 1/30 of a quarter late) keeps its rhythm, and
/// counts as on the grid. Shifts are tried every 1/96 of a quarter note, onsets placed to
/// 1/1920 of one, both well inside the grid's tolerance of 1/48. 0 for none.
pub fn on_grid_share_shifted(onsets: impl IntoIterator<Item = f64>) -> f64 {
    // The grid repeats every quarter note, so only an onset's place within its quarter
    // matters: counted by place, each shift is tried on at most PLACES places, not on
    // every note.
    const PLACES: usize = 1920;
    const SHIFTS: usize = 96;
    let mut counts = vec![0usize; PLACES];
    let mut all = 0usize;
    for quarters in onsets {
        counts[((quarters.rem_euclid(1.0) * PLACES as f64) as usize).min(PLACES - 1)] += 1;
        all += 1;
    }
    let places: Vec<(f64, usize)> = counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(place, n)| (place as f64 / PLACES as f64, *n))
        .collect();
    let on_grid_after = |shift: f64| -> usize {
        places.iter().filter(|(place, _)| on_grid((place - shift).rem_euclid(1.0))).map(|(_, n)| n).sum()
    };
    let best = (0..SHIFTS).map(|s| on_grid_after(s as f64 / SHIFTS as f64)).max().unwrap_or(0);
    best as f64 / all.max(1) as f64
}

/// The sustain pedal held down from `onset_quarters` for `duration_quarters`, in the
/// quarter notes of the piece's score. Invariant: the duration is above 0.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PedalPress {
    pub onset_quarters: f64,
    pub duration_quarters: f64,
}

impl PedalPress {
    /// Where the pedal lifts.
    pub fn end_quarters(&self) -> f64 {
        self.onset_quarters + self.duration_quarters
    }
}

/// `notes` (onset order) as the pedal holds them: a key released while the pedal is down
/// rings on until the pedal lifts or the same key is struck again, as
/// `extract.sustain = "apply"` reads a file (here for every channel at once: the pedal is
/// one). What an encoding with no pedal token of its own is given, so it hears the pedal
/// in the durations. Seconds follow `metre`'s tempo map over the added quarter notes.
pub fn pedal_applied(notes: &[crate::Note], pedal: &[PedalPress], metre: &Metre) -> Vec<crate::Note> {
    let mut notes = notes.to_vec();
    // Where each note's key is struck next.
    let mut next_strike = vec![f64::INFINITY; notes.len()];
    let mut last_struck = [None; 128];
    for (index, note) in notes.iter().enumerate() {
        if let Some(earlier) = last_struck[usize::from(note.pitch.min(127))].replace(index) {
            next_strike[earlier] = note.onset_quarters;
        }
    }
    for (note, next) in notes.iter_mut().zip(next_strike) {
        let released = note.onset_quarters + note.duration_quarters;
        let down = pedal.partition_point(|press| press.onset_quarters <= released);
        let Some(press) = down.checked_sub(1).map(|index| pedal[index]) else { continue };
        let rings_until = press.end_quarters().min(next);
        if rings_until > released {
            note.duration_seconds += metre.seconds_at(rings_until) - metre.seconds_at(released);
            note.duration_quarters = rings_until - note.onset_quarters;
        }
    }
    notes
}

/// Notes with the metre they are written in: what a decoder gives and the MIDI writer
/// writes. Invariant: each note's seconds are its quarter notes through `metre`'s tempo map.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Score {
    pub notes: Vec<crate::Note>,
    pub metre: Metre,
    /// The sustain pedal as its own events (`extract.sustain = "events"`), in onset order
    /// and never overlapping; empty where it was applied to the notes' durations, ignored,
    /// or never pressed.
    pub pedal: Vec<PedalPress>,
}

impl Score {
    /// The same notes at one steady tempo: quarter notes kept, seconds worked out again.
    pub fn at_tempo(mut self, bpm: f64) -> Score {
        let seconds_per_quarter = 60.0 / bpm;
        for note in &mut self.notes {
            note.onset_seconds = note.onset_quarters * seconds_per_quarter;
            note.duration_seconds = note.duration_quarters * seconds_per_quarter;
        }
        self.metre.tempos = vec![Tempo { at_quarters: 0.0, bpm }];
        self
    }

    /// The music from `quarters` on at one tempo, `bpm` (a ritardando's bar): the tempo
    /// map's changes from there on give way to it, and every note's seconds are worked out
    /// again. Quarter notes, and so the score, stay as they are.
    pub fn steady_from(&mut self, quarters: f64, bpm: f64) {
        let tempos = &mut self.metre.tempos;
        tempos.retain(|t| t.at_quarters < quarters - 1e-9);
        tempos.push(Tempo { at_quarters: quarters.max(0.0), bpm });
        for note in &mut self.notes {
            let end = self.metre.seconds_at(note.onset_quarters + note.duration_quarters);
            note.onset_seconds = self.metre.seconds_at(note.onset_quarters);
            note.duration_seconds = end - note.onset_seconds;
        }
    }

    /// Where the music ends, in seconds (0 for no notes).
    pub fn seconds(&self) -> f64 {
        self.notes.iter().map(|n| n.onset_seconds + n.duration_seconds).fold(0.0, f64::max)
    }

    /// The bars the music spans: those that start before its last note ends (at least one).
    pub fn bars(&self) -> Vec<Bar> {
        self.metre.bars_until(self.notes.iter().map(|n| n.onset_quarters + n.duration_quarters).fold(0.0, f64::max))
    }

    /// The pedal's presses as `(down, up)` in seconds, through the tempo map.
    pub fn pedal_seconds(&self) -> Vec<(f64, f64)> {
        let seconds = |quarters| self.metre.seconds_at(quarters);
        self.pedal.iter().map(|press| (seconds(press.onset_quarters), seconds(press.end_quarters()))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature(at_quarters: f64, numerator: u8, denominator: u8) -> TimeSignature {
        TimeSignature { at_quarters, numerator, denominator }
    }

    #[test]
    fn bars_and_locations_follow_the_signatures() {
        let metre = Metre {
            signatures: vec![signature(0.0, 3, 4), signature(6.0, 6, 8), signature(12.0, 2, 4)],
            tempos: vec![Tempo { at_quarters: 0.0, bpm: 60.0 }, Tempo { at_quarters: 3.0, bpm: 120.0 }],
        };
        let starts: Vec<f64> = metre.bars_until(15.0).iter().map(|b| b.start_quarters).collect();
        assert_eq!(starts, vec![0.0, 3.0, 6.0, 9.0, 12.0, 14.0]);
        let at = metre.locate(10.5);
        assert_eq!((at.bar, at.in_bar_quarters, at.signature.numerator, at.bpm), (3, 1.5, 6, 120.0));
        assert_eq!(metre.locate(14.0).bar, 5);
        // Three quarters at 60 BPM, then three at 120.
        assert!((metre.seconds_at(6.0) - 4.5).abs() < 1e-12);
        assert_eq!(Metre::default().bars_until(0.0).len(), 1);
    }

    #[test]
    fn a_steady_close_replaces_the_tempo_map_after_it_and_keeps_the_score() {
        let note = |onset_quarters: f64, duration_quarters: f64| {
            let sound = crate::TimedNote { pitch: 60, velocity: 80, onset_seconds: 0.0, duration_seconds: 0.0 };
            crate::Note { onset_quarters, duration_quarters, ..crate::Note::at_steady_tempo(sound, 120.0) }
        };
        let tempo = |at_quarters: f64, bpm: f64| Tempo { at_quarters, bpm };
        let mut score = Score {
            notes: vec![note(0.0, 1.0), note(3.0, 2.0), note(5.0, 4.0)],
            metre: Metre {
                signatures: vec![signature(0.0, 4, 4)],
                tempos: vec![tempo(0.0, 120.0), tempo(4.5, 90.0), tempo(6.0, 240.0)],
            },
            pedal: Vec::new(),
        };
        // 4.5 quarters at 120, 1.5 at 90, then 240: 120 lasts longest.
        assert_eq!(score.metre.median_bpm(9.0), 120.0);
        assert_eq!(score.metre.median_bpm(20.0), 240.0);
        assert_eq!(score.metre.median_bpm(0.0), 120.0);
        score.steady_from(4.0, 60.0);
        let tempos: Vec<(f64, f64)> = score.metre.tempos.iter().map(|t| (t.at_quarters, t.bpm)).collect();
        assert_eq!(tempos, [(0.0, 120.0), (4.0, 60.0)]);
        let seconds: Vec<(f64, f64)> = score.notes.iter().map(|n| (n.onset_seconds, n.duration_seconds)).collect();
        // Before quarter 4 at 120 (half a second each), after it at 60.
        assert_eq!(seconds, [(0.0, 0.5), (1.5, 1.5), (3.0, 4.0)]);
        assert_eq!(score.notes[2].duration_quarters, 4.0);
    }

    #[test]
    fn metres_read_and_short_bars_reduce() {
        assert_eq!(TimeSignature::parse(" 6/8 "), Some((6, 8)));
        for bad in ["", "3", "0/4", "3/5", "3/128", "a/4", "256/4"] {
            assert_eq!(TimeSignature::parse(bad), None, "{bad}");
        }
        assert_eq!(TimeSignature::of_sixteenths(6), Some((3, 8)));
        assert_eq!(TimeSignature::of_sixteenths(8), Some((2, 4)));
        assert_eq!(TimeSignature::of_sixteenths(5), Some((5, 16)));
        assert_eq!(TimeSignature::of_sixteenths(0), None);
        assert_eq!(TimeSignature::of_sixteenths(256), None);
    }

    #[test]
    fn the_grid_holds_sixteenths_and_triplets_and_nothing_between() {
        for on in [0.0, 0.25, 1.0 / 3.0, 0.5, 2.0 / 3.0, 7.75, 10.0 + 1.0 / 48.0] {
            assert!(on_grid(on), "{on}");
        }
        for off in [0.125, 0.1, 0.875, 5.0 + 1.0 / 24.0] {
            assert!(!on_grid(off), "{off}");
        }
        assert_eq!(on_grid_share([0.0, 0.125, 0.25, 0.3]), 0.5);
    }

    #[test]
    fn a_constant_shift_keeps_a_rhythm_on_the_grid_and_no_shift_puts_a_drifting_one_there() {
        let rhythm = [0.0, 0.25, 0.5, 1.0, 4.0 / 3.0, 5.0 / 3.0, 2.0, 2.75, 3.0, 3.5];
        for late in [0.0, 1.0 / 30.0, 0.1, 0.9437, -0.2] {
            let moved = rhythm.map(|q| q + late);
            assert_eq!(on_grid_share_shifted(moved), 1.0, "{late}");
        }
        assert!(on_grid_share(rhythm.map(|q| q + 0.1)) < 0.5);
        // Onsets 0.37 of a quarter apart drift through every place in the beat.
        let drifting: Vec<f64> = (0..400).map(|i| i as f64 * 0.37).collect();
        let share = on_grid_share_shifted(drifting);
        assert!((0.2..0.35).contains(&share), "{share}");
        assert_eq!(on_grid_share_shifted([]), 0.0);
    }
}
