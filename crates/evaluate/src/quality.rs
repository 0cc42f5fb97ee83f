//! How close generated music is to real pieces it never saw, by fixed definitions that make
//! figures comparable from run to run and with other systems (the ones of
//! `../shared/splits/README.md`).
//!
//! Seven histograms, pooled over a set's notes, compared by their overlap Σ min(p, q):
//! pitch class (12), pitch (128), melodic interval between consecutive notes of the pitch
//! sequence (−24..+24, wider leaps counted at the ends), inter-onset interval between onset
//! groups and duration (seconds, bins from 0, .02, .05, .1, .2, .35, .5, .75, 1, 1.5, 2 and 4),
//! velocity (16 bins of 8), and polyphony (notes sounding at each onset group, 1..9, 10+).
//! An onset group is the notes starting within 20 ms of its first onset; the pitch sequence
//! is the notes by onset, a group's pitches ascending. Beside them, per piece: repetition
//! (the share of the pitch sequence's 4-grams whose value occurs more than once in the piece),
//! pulse (the share of the most common inter-onset interval, to 10 ms), notes per second,
//! the share of onsets on the sixteenth / eighth-triplet grid of the file's own quarter
//! notes ([`music::on_grid`]), how much of the piece keeps to one key ([`music::key::in_key_share`]),
//! the longest held note, how often a four-bar phrase is played straight after itself
//! ([`phrase_echo`]: real music brings a phrase back after another, hardly ever at once, so
//! a loop shows here), and the longest run of notes copied
//! from the training pieces in any transposition (compared as interval sequences; for the
//! reference pieces' excerpts too, the scale a generated piece's copies are read on). And how
//! a set uses the sustain pedal ([`PedalUse`]): a piece of the corpus pedals throughout or
//! never, so the share of pieces that pedal, and within those, presses a minute and the
//! share of the time the pedal is down.
//!
//! Beside the generated set, the same figures of real music at the same sample size
//! ([`RealExcerpts`]): sets of as many random excerpts of the training pieces, as long as
//! the generated pieces. A few minutes of music are a small sample of seven histograms, so
//! even real pieces of the corpus land well below 1; that spread, not 1, is the scale on
//! which a generated set's figures are read.
//!
//! And how the pieces end ([`crate::ending`]), the generated ones against the reference
//! pieces' own ends (whole pieces, not excerpts).
//!
//! Key design decision: every set is read by extract's own reader with the sustain pedal
//! applied, generated files included, so both sides of a comparison see durations alike.

use crate::ending::{Ending, Endings, ending_of};
use crate::memorisation::longest_copied_run;
use artifacts::Note;
use seeded_rng::SeededRng;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// Lower bin edges in seconds of inter-onset intervals and durations (the last bin is open).
pub const TIME_EDGES: [f64; 12] = [0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0];
/// Notes whose onsets lie within this of a group's first onset belong to the group.
pub const ONSET_GROUP_SECONDS: f64 = 0.020;
/// Length of the pitch patterns whose recurrence is the repetition share.
pub const REPETITION_NGRAM: usize = 4;
/// Widest melodic interval with a bin of its own, in semitones.
const MAX_INTERVAL: i32 = 24;
/// Bars in a phrase for [`phrase_echo`] (the composer's `compose.phrase_bars`).
pub const PHRASE_BARS: usize = 4;
/// Share of two phrases' notes (their union) that both hold, at or above which they are alike.
const ALIKE_PHRASES: f64 = 0.8;

/// One piece as measured: its notes as heard (pedal applied), its pedal's presses and
/// where its bars start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Piece {
    pub name: String,
    pub notes: Vec<Note>,
    /// `(down, up)` in seconds, onset order.
    pub pedal: Vec<(f64, f64)>,
    /// The start of every bar of the whole piece in quarter notes, ascending (an excerpt
    /// keeps its piece's bars, as its notes keep their quarter notes).
    pub bar_starts: Vec<f64>,
}

/// The seven histograms of one set of pieces, each normalised to sum to 1 (or all zero).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Histograms {
    pub pitch_class: Vec<f64>,
    pub pitch: Vec<f64>,
    pub interval: Vec<f64>,
    pub inter_onset: Vec<f64>,
    pub duration: Vec<f64>,
    pub velocity: Vec<f64>,
    pub polyphony: Vec<f64>,
}

/// The histograms' names, in the order of [`Histograms::all`].
pub const HISTOGRAM_NAMES: [&str; 7] =
    ["pitch class", "pitch", "interval", "inter-onset", "duration", "velocity", "polyphony"];

impl Histograms {
    /// The histograms of `pieces` pooled together.
    pub fn of(pieces: &[Vec<Note>]) -> Histograms {
        let mut h = Histograms {
            pitch_class: vec![0.0; 12],
            pitch: vec![0.0; 128],
            interval: vec![0.0; (2 * MAX_INTERVAL + 1) as usize],
            inter_onset: vec![0.0; TIME_EDGES.len()],
            duration: vec![0.0; TIME_EDGES.len()],
            velocity: vec![0.0; 16],
            polyphony: vec![0.0; 10],
        };
        for piece in pieces {
            let groups = onset_groups(piece);
            for note in piece {
                h.pitch_class[usize::from(note.pitch % 12)] += 1.0;
                h.pitch[usize::from(note.pitch.min(127))] += 1.0;
                h.duration[time_bin(note.duration_seconds)] += 1.0;
                h.velocity[usize::from(note.velocity.min(127) / 8)] += 1.0;
            }
            for pair in pitch_sequence(&groups).windows(2) {
                let step = (i32::from(pair[1]) - i32::from(pair[0])).clamp(-MAX_INTERVAL, MAX_INTERVAL);
                h.interval[(step + MAX_INTERVAL) as usize] += 1.0;
            }
            for pair in groups.windows(2) {
                h.inter_onset[time_bin(pair[1].onset - pair[0].onset)] += 1.0;
            }
            for group in &groups {
                let sounding = piece
                    .iter()
                    .filter(|n| n.onset_seconds <= group.onset + ONSET_GROUP_SECONDS && end(n) > group.onset)
                    .count();
                h.polyphony[sounding.clamp(1, 10) - 1] += 1.0;
            }
        }
        for histogram in h.all_mut() {
            let total: f64 = histogram.iter().sum();
            if total > 0.0 {
                histogram.iter_mut().for_each(|c| *c /= total);
            }
        }
        h
    }

    /// The seven histograms, in the order of [`HISTOGRAM_NAMES`].
    pub fn all(&self) -> [&Vec<f64>; 7] {
        [
            &self.pitch_class,
            &self.pitch,
            &self.interval,
            &self.inter_onset,
            &self.duration,
            &self.velocity,
            &self.polyphony,
        ]
    }

    fn all_mut(&mut self) -> [&mut Vec<f64>; 7] {
        [
            &mut self.pitch_class,
            &mut self.pitch,
            &mut self.interval,
            &mut self.inter_onset,
            &mut self.duration,
            &mut self.velocity,
            &mut self.polyphony,
        ]
    }

    /// Σ min(p, q) of each pair of histograms: 1 for identical distributions, 0 for disjoint.
    pub fn overlaps(&self, other: &Histograms) -> [f64; 7] {
        let (mine, theirs) = (self.all(), other.all());
        std::array::from_fn(|i| mine[i].iter().zip(theirs[i]).map(|(p, q)| p.min(*q)).sum())
    }
}

/// When a note stops sounding, in seconds.
fn end(note: &Note) -> f64 {
    note.onset_seconds + note.duration_seconds
}

fn time_bin(seconds: f64) -> usize {
    TIME_EDGES.iter().rposition(|&edge| seconds >= edge).unwrap_or(0)
}

/// Notes starting together: the first onset and the pitches, ascending.
#[derive(Clone, Debug, PartialEq)]
pub struct OnsetGroup {
    pub onset: f64,
    pub pitches: Vec<u8>,
}

/// A piece's onset groups in time order (notes in any order).
pub fn onset_groups(piece: &[Note]) -> Vec<OnsetGroup> {
    let mut notes: Vec<&Note> = piece.iter().collect();
    notes.sort_by(|a, b| a.onset_seconds.total_cmp(&b.onset_seconds).then(a.pitch.cmp(&b.pitch)));
    let mut groups: Vec<OnsetGroup> = Vec::new();
    for note in notes {
        match groups.last_mut() {
            Some(group) if note.onset_seconds - group.onset <= ONSET_GROUP_SECONDS => group.pitches.push(note.pitch),
            _ => groups.push(OnsetGroup { onset: note.onset_seconds, pitches: vec![note.pitch] }),
        }
    }
    for group in &mut groups {
        group.pitches.sort_unstable();
    }
    groups
}

/// The notes by onset, each group's pitches ascending.
pub fn pitch_sequence(groups: &[OnsetGroup]) -> Vec<u8> {
    groups.iter().flat_map(|g| g.pitches.iter().copied()).collect()
}

/// The share of a pitch sequence's `n`-grams whose value occurs more than once in it.
pub fn repetition_share(pitches: &[u8], n: usize) -> f64 {
    let grams: Vec<&[u8]> = pitches.windows(n).collect();
    if grams.is_empty() {
        return 0.0;
    }
    let mut counts: HashMap<&[u8], usize> = HashMap::new();
    for gram in &grams {
        *counts.entry(gram).or_default() += 1;
    }
    grams.iter().filter(|g| counts[*g] > 1).count() as f64 / grams.len() as f64
}

/// The share of the most common inter-onset interval (to 10 ms) among a piece's intervals.
pub fn pulse_share(groups: &[OnsetGroup]) -> f64 {
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for pair in groups.windows(2) {
        *counts.entry(((pair[1].onset - pair[0].onset) * 100.0).round() as i64).or_default() += 1;
    }
    let total: usize = counts.values().sum();
    counts.values().max().map_or(0.0, |&most| most as f64 / total as f64)
}

/// The share of a piece's four-bar phrases ([`PHRASE_BARS`]) alike the phrase just before
/// them, over the pairs of consecutive phrases that both hold notes (0 without such a pair).
/// A phrase is the set of its notes as (pitch, onset from the phrase's first downbeat in
/// 12ths of a quarter note); two are alike when they share [`ALIKE_PHRASES`] of their
/// union. Where phrases begin is not known (a piece may open with an upbeat or a phrase of
/// three bars), so the piece is cut at each of the four bar phases and read at the one with
/// the most alike pairs: the figure is an upper bound, for real and generated music alike.
pub fn phrase_echo(notes: &[Note], bar_starts: &[f64]) -> f64 {
    (0..PHRASE_BARS)
        .map(|phase| {
            let starts: Vec<f64> = bar_starts.iter().skip(phase).step_by(PHRASE_BARS).copied().collect();
            let mut phrases: Vec<HashSet<(u8, i64)>> = vec![HashSet::new(); starts.len()];
            for note in notes {
                let index = starts.partition_point(|&start| start <= note.onset_quarters + 1e-9);
                if index > 0 {
                    let offset = ((note.onset_quarters - starts[index - 1]) * 12.0).round() as i64;
                    phrases[index - 1].insert((note.pitch, offset));
                }
            }
            let pairs: Vec<bool> = phrases
                .windows(2)
                .filter(|pair| !pair[0].is_empty() && !pair[1].is_empty())
                .map(|pair| {
                    let shared = pair[0].intersection(&pair[1]).count();
                    shared as f64 / (pair[0].len() + pair[1].len() - shared) as f64 >= ALIKE_PHRASES
                })
                .collect();
            pairs.iter().filter(|&&alike| alike).count() as f64 / pairs.len().max(1) as f64
        })
        .fold(0.0, f64::max)
}

/// Steps between consecutive pitches: the same for every transposition of a passage.
fn intervals(pitches: &[u8]) -> Vec<i16> {
    pitches.windows(2).map(|w| i16::from(w[1]) - i16::from(w[0])).collect()
}

/// What one generated piece is like.
#[derive(Clone, Debug, Serialize)]
pub struct PieceFigures {
    pub name: String,
    pub notes: usize,
    pub seconds: f64,
    pub notes_per_second: f64,
    pub repetition: f64,
    /// Share of four-bar phrases alike the one just before ([`phrase_echo`]).
    pub phrase_echo: f64,
    pub pulse: f64,
    /// Share of onsets within 1/48 of a quarter note of a sixteenth or an eighth triplet.
    pub onsets_on_grid: f64,
    /// Share of notes in the piece's best-fitting diatonic scale ([`music::key::in_key_share`]).
    pub in_key: f64,
    pub longest_note_seconds: f64,
    /// The longest run of notes found in one training piece, in any transposition (0 without
    /// training pieces).
    pub longest_copy_notes: usize,
    pub longest_copy_from: String,
    /// Presses of the sustain pedal a minute (0: the piece does not pedal).
    pub pedal_presses_per_minute: f64,
    /// Share of the piece's seconds with the pedal down.
    pub pedal_down_share: f64,
    /// How the piece ends: read for whole generated pieces ([`compare`]); `None` for an
    /// excerpt, whose last note is not its piece's end, and for a piece without notes.
    pub ending: Option<Ending>,
}

/// How a set of pieces uses the sustain pedal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PedalUse {
    /// Share of the pieces with at least one press.
    pub pieces_with_pedal: f64,
    /// Presses a minute, mean over the pieces with a press (0 where none has one).
    pub presses_per_minute: f64,
    /// Share of the time the pedal is down, mean over the pieces with a press.
    pub down_share: f64,
}

impl PedalUse {
    /// How `pieces` use the pedal; all zero for no pieces.
    pub fn of(pieces: &[PieceFigures]) -> PedalUse {
        let pedalled: Vec<&PieceFigures> = pieces.iter().filter(|p| p.pedal_presses_per_minute > 0.0).collect();
        PedalUse {
            pieces_with_pedal: pedalled.len() as f64 / pieces.len().max(1) as f64,
            presses_per_minute: mean(pedalled.iter().map(|p| p.pedal_presses_per_minute)),
            down_share: mean(pedalled.iter().map(|p| p.pedal_down_share)),
        }
    }
}

/// Seconds from 0 to the end of a piece's last note.
fn length_seconds(piece: &[Note]) -> f64 {
    piece.iter().map(end).fold(0.0, f64::max)
}

/// The figures of one piece, its pedal's presses as `(down, up)` seconds and its bars'
/// starts in quarter notes; `training` holds the interval sequences of the training pieces.
pub fn piece_figures(
    name: &str,
    (piece, pedal, bar_starts): (&[Note], &[(f64, f64)], &[f64]),
    training: &[(String, Vec<i16>)],
) -> PieceFigures {
    let groups = onset_groups(piece);
    let pitches = pitch_sequence(&groups);
    let seconds = length_seconds(piece);
    let down: f64 = pedal.iter().map(|&(down, up)| up.min(seconds) - down.min(seconds)).sum();
    let copy = if training.is_empty() { None } else { Some(longest_copied_run(&intervals(&pitches), training)) };
    PieceFigures {
        name: name.to_owned(),
        notes: piece.len(),
        seconds,
        notes_per_second: piece.len() as f64 / seconds.max(1e-9),
        repetition: repetition_share(&pitches, REPETITION_NGRAM),
        phrase_echo: phrase_echo(piece, bar_starts),
        pulse: pulse_share(&groups),
        onsets_on_grid: music::on_grid_share(piece.iter().map(|n| n.onset_quarters)),
        in_key: music::key::in_key_share(piece.iter().map(|n| n.pitch)),
        longest_note_seconds: piece.iter().map(|n| n.duration_seconds).fold(0.0, f64::max),
        // A run of k equal intervals is k + 1 notes.
        longest_copy_notes: copy.as_ref().map_or(0, |c| if c.length > 0 { c.length + 1 } else { 0 }),
        longest_copy_from: copy.map(|c| c.source).unwrap_or_default(),
        pedal_presses_per_minute: pedal.len() as f64 * 60.0 / seconds.max(1e-9),
        pedal_down_share: down / seconds.max(1e-9),
        ending: None,
    }
}

/// The interval sequences of training pieces, for [`piece_figures`].
pub fn training_intervals(pieces: &[Piece]) -> Vec<(String, Vec<i16>)> {
    pieces.iter().map(|p| (p.name.clone(), intervals(&pitch_sequence(&onset_groups(&p.notes))))).collect()
}

/// The whole comparison of a generated set with a reference set.
#[derive(Clone, Debug, Serialize)]
pub struct QualityReport {
    pub generated_pieces: usize,
    pub reference_pieces: usize,
    pub training_pieces: usize,
    /// The seven overlaps, by [`HISTOGRAM_NAMES`].
    pub overlaps: Vec<(String, f64)>,
    pub mean_overlap: f64,
    pub lowest_overlap: f64,
    /// The histograms the overlaps compare, generated and reference: which way a low
    /// overlap is off.
    pub histograms: Histograms,
    pub reference_histograms: Histograms,
    /// Means over the generated pieces.
    pub repetition: f64,
    pub phrase_echo: f64,
    pub pulse: f64,
    pub notes_per_second: f64,
    pub onsets_on_grid: f64,
    pub in_key: f64,
    pub longest_copy_notes: usize,
    pub longest_note_seconds: f64,
    pub pedal: PedalUse,
    /// How the generated pieces end, and the reference pieces (whole).
    pub endings: Endings,
    pub reference_endings: Endings,
    /// The same figures of the reference pieces' first `excerpt_seconds`, for comparison.
    pub reference_pedal: PedalUse,
    pub reference_repetition: f64,
    pub reference_phrase_echo: f64,
    pub reference_pulse: f64,
    pub reference_notes_per_second: f64,
    pub reference_onsets_on_grid: f64,
    pub reference_in_key: f64,
    /// The longest run each reference excerpt shares with a training piece: music the model
    /// never saw copies this much by chance and by style (0s without training pieces).
    pub reference_longest_copy_notes: Spread,
    pub excerpt_seconds: f64,
    /// The longest note in the training pieces (0 without them).
    pub training_longest_note_seconds: f64,
    /// The same figures of sets of real excerpts (`None` without training pieces or draws).
    pub real_excerpts: Option<RealExcerpts>,
    pub pieces: Vec<PieceFigures>,
}

/// The lowest, the median and the highest of a figure over several draws.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; all zero when there are none.
    pub fn of(mut values: Vec<f64>) -> Spread {
        if values.is_empty() {
            return Spread { min: 0.0, median: 0.0, max: 0.0 };
        }
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        let median = if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 };
        Spread { min: values[0], median, max: values[values.len() - 1] }
    }
}

/// What real music scores at the generated set's sample size: `draws` sets of
/// `pieces_per_draw` excerpts of `seconds` each, cut at random (seeded) from random training
/// pieces at least that long, each set compared with the reference as the generated set is.
#[derive(Clone, Debug, Serialize)]
pub struct RealExcerpts {
    pub draws: usize,
    pub pieces_per_draw: usize,
    pub seconds: f64,
    pub overlaps: Vec<(String, Spread)>,
    pub mean_overlap: Spread,
    pub lowest_overlap: Spread,
    /// Means over each set's excerpts.
    pub repetition: Spread,
    pub phrase_echo: Spread,
    pub pulse: Spread,
    pub notes_per_second: Spread,
    pub onsets_on_grid: Spread,
    pub in_key: Spread,
    /// The share of each set's excerpts that pedal.
    pub pieces_with_pedal: Spread,
    /// Presses a minute and the share of the time down, of the sets with an excerpt that
    /// pedals (each set's mean over those excerpts).
    pub pedal_presses_per_minute: Spread,
    pub pedal_down_share: Spread,
    /// Each set's mean overlap, in the order drawn: where among real music a generated
    /// set's figure falls, not only whether it clears the median.
    pub mean_overlap_of_each: Vec<f64>,
    /// How many real sets meet each of [`TARGET_NAMES`] (and, last, all of them), each set
    /// held against the other sets as a generated set is held against all: what real
    /// music itself scores on the targets, so a target no real set can hold is seen as such.
    pub real_sets_meeting: Vec<(String, usize)>,
}

/// The targets a generated set is held to on the real-excerpt scale, in the order of
/// [`RealExcerpts::real_sets_meeting`].
pub const TARGET_NAMES: [&str; 5] = [
    "mean overlap at or above the median",
    "every overlap at or above the lowest",
    "pulse at or above the median",
    "repetition inside the range",
    "notes per second inside the range",
];

impl RealExcerpts {
    /// How many of the real sets have a lower mean overlap than `mean_overlap`.
    pub fn sets_below(&self, mean_overlap: f64) -> usize {
        self.mean_overlap_of_each.iter().filter(|&&real| real < mean_overlap).count()
    }
}

/// Notes and pedal presses of `piece` starting in `start .. start + seconds`, moved to
/// start at 0 and cut to end by the excerpt's end, as a generated piece of that length ends.
fn excerpt(piece: &Piece, start: f64, seconds: f64) -> Piece {
    let end = start + seconds;
    Piece {
        name: piece.name.clone(),
        notes: piece
            .notes
            .iter()
            .filter(|n| n.onset_seconds >= start && n.onset_seconds < end)
            .map(|n| Note {
                onset_seconds: n.onset_seconds - start,
                duration_seconds: n.duration_seconds.min(end - n.onset_seconds),
                ..n.clone()
            })
            .collect(),
        pedal: presses_within(&piece.pedal, start, seconds),
        bar_starts: piece.bar_starts.clone(),
    }
}

/// The presses going down in `start .. start + seconds`, moved to start at 0 and lifted by
/// the end.
fn presses_within(pedal: &[(f64, f64)], start: f64, seconds: f64) -> Vec<(f64, f64)> {
    let end = start + seconds;
    pedal.iter().filter(|p| p.0 >= start && p.0 < end).map(|&(down, up)| (down - start, up.min(end) - start)).collect()
}

/// [`RealExcerpts`] of `training`, or `None` when no training piece lasts `seconds`.
pub fn real_excerpts(
    training: &[Piece],
    reference: &Histograms,
    (draws, pieces_per_draw, seconds): (usize, usize, f64),
    rng: &mut SeededRng,
) -> Option<RealExcerpts> {
    let long_enough: Vec<(&Piece, f64)> = training
        .iter()
        .map(|piece| (piece, length_seconds(&piece.notes)))
        .filter(|&(_, length)| length >= seconds)
        .collect();
    if long_enough.is_empty() || draws == 0 || pieces_per_draw == 0 {
        return None;
    }
    /// One drawn set: each excerpt's figures and the set's seven overlaps.
    struct Drawn {
        pieces: Vec<PieceFigures>,
        overlaps: [f64; 7],
    }
    let sets: Vec<Drawn> = (0..draws)
        .map(|_| {
            let set: Vec<Piece> = (0..pieces_per_draw)
                .map(|_| {
                    let (piece, length) = long_enough[rng.below(long_enough.len())];
                    excerpt(piece, rng.unit_f64() * (length - seconds), seconds)
                })
                .collect();
            let pieces = set.iter().map(|p| piece_figures("", (&p.notes, &p.pedal, &p.bar_starts), &[])).collect();
            let notes: Vec<Vec<Note>> = set.into_iter().map(|p| p.notes).collect();
            Drawn { pieces, overlaps: Histograms::of(&notes).overlaps(reference) }
        })
        .collect();
    let mean_overlap_of = |set: &Drawn| mean(set.overlaps.into_iter());
    let mean_of = |pick: fn(&PieceFigures) -> f64| move |set: &Drawn| mean(set.pieces.iter().map(pick));
    let (repetition_of, pulse_of, density_of) =
        (mean_of(|p| p.repetition), mean_of(|p| p.pulse), mean_of(|p| p.notes_per_second));
    // Leave one out: set i against the spreads of the others.
    let mut meeting = [0usize; TARGET_NAMES.len() + 1];
    for (i, set) in sets.iter().enumerate() {
        let others = |figure: &dyn Fn(&Drawn) -> f64| {
            Spread::of(sets.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, s)| figure(s)).collect())
        };
        let inside = |value: f64, range: Spread| value >= range.min && value <= range.max;
        let met = [
            mean_overlap_of(set) >= others(&mean_overlap_of).median,
            (0..set.overlaps.len()).all(|h| set.overlaps[h] >= others(&|s| s.overlaps[h]).min),
            pulse_of(set) >= others(&pulse_of).median,
            inside(repetition_of(set), others(&repetition_of)),
            inside(density_of(set), others(&density_of)),
        ];
        for (count, _) in meeting.iter_mut().zip(&met).filter(|(_, m)| **m) {
            *count += 1;
        }
        meeting[TARGET_NAMES.len()] += usize::from(met.iter().all(|&m| m));
    }
    let spread = |figure: &dyn Fn(&Drawn) -> f64| Spread::of(sets.iter().map(figure).collect());
    let pedal_use: Vec<PedalUse> = sets.iter().map(|set| PedalUse::of(&set.pieces)).collect();
    let pedalled_sets = |figure: fn(&PedalUse) -> f64| {
        Spread::of(pedal_use.iter().filter(|u| u.pieces_with_pedal > 0.0).map(figure).collect())
    };
    Some(RealExcerpts {
        draws,
        pieces_per_draw,
        seconds,
        overlaps: HISTOGRAM_NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| (name.to_string(), spread(&|set| set.overlaps[i])))
            .collect(),
        mean_overlap: spread(&mean_overlap_of),
        lowest_overlap: spread(&|set| set.overlaps.into_iter().fold(1.0, f64::min)),
        repetition: spread(&repetition_of),
        phrase_echo: spread(&mean_of(|p| p.phrase_echo)),
        pulse: spread(&pulse_of),
        notes_per_second: spread(&density_of),
        onsets_on_grid: spread(&mean_of(|p| p.onsets_on_grid)),
        in_key: spread(&mean_of(|p| p.in_key)),
        pieces_with_pedal: Spread::of(pedal_use.iter().map(|u| u.pieces_with_pedal).collect()),
        pedal_presses_per_minute: pedalled_sets(|u| u.presses_per_minute),
        pedal_down_share: pedalled_sets(|u| u.down_share),
        mean_overlap_of_each: sets.iter().map(mean_overlap_of).collect(),
        real_sets_meeting: TARGET_NAMES
            .iter()
            .map(|name| name.to_string())
            .chain(["all of these".to_string()])
            .zip(meeting)
            .collect(),
    })
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, count) = values.fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    if count == 0 { 0.0 } else { sum / count as f64 }
}

/// Compares `generated` with `reference`, with memorisation against `training` (may be empty).
/// The reference's repetition and pulse are measured on excerpts of `excerpt_seconds`, the
/// length the generated pieces are usually asked for; `real_draws` sets of real excerpts
/// of that length, drawn from `training` with `rng`, are measured as the generated set is.
pub fn compare(
    generated: &[Piece],
    reference: &[Piece],
    training: &[Piece],
    excerpt_seconds: f64,
    (real_draws, rng): (usize, &mut SeededRng),
) -> QualityReport {
    let notes_of = |set: &[Piece]| set.iter().map(|p| p.notes.clone()).collect::<Vec<_>>();
    let reference_histograms = Histograms::of(&notes_of(reference));
    let histograms = Histograms::of(&notes_of(generated));
    let overlaps = histograms.overlaps(&reference_histograms);
    let training_sequences = training_intervals(training);
    let pieces: Vec<PieceFigures> = generated
        .iter()
        .map(|p| PieceFigures {
            ending: ending_of(&p.notes, &p.bar_starts),
            ..piece_figures(&p.name, (&p.notes, &p.pedal, &p.bar_starts), &training_sequences)
        })
        .collect();
    let excerpts: Vec<PieceFigures> = reference
        .iter()
        .map(|piece| {
            // An opening's notes keep their whole length (its figures have always been read
            // so); only its presses are cut at the excerpt's end.
            let notes: Vec<Note> = piece.notes.iter().filter(|n| n.onset_seconds < excerpt_seconds).cloned().collect();
            let pedal = presses_within(&piece.pedal, 0.0, excerpt_seconds);
            piece_figures(&piece.name, (&notes, &pedal, &piece.bar_starts), &training_sequences)
        })
        .collect();
    QualityReport {
        generated_pieces: generated.len(),
        reference_pieces: reference.len(),
        training_pieces: training.len(),
        overlaps: HISTOGRAM_NAMES.iter().zip(overlaps).map(|(n, o)| (n.to_string(), o)).collect(),
        mean_overlap: mean(overlaps.into_iter()),
        lowest_overlap: overlaps.into_iter().fold(1.0, f64::min),
        repetition: mean(pieces.iter().map(|p| p.repetition)),
        phrase_echo: mean(pieces.iter().map(|p| p.phrase_echo)),
        pulse: mean(pieces.iter().map(|p| p.pulse)),
        notes_per_second: mean(pieces.iter().map(|p| p.notes_per_second)),
        onsets_on_grid: mean(pieces.iter().map(|p| p.onsets_on_grid)),
        in_key: mean(pieces.iter().map(|p| p.in_key)),
        longest_copy_notes: pieces.iter().map(|p| p.longest_copy_notes).max().unwrap_or(0),
        longest_note_seconds: pieces.iter().map(|p| p.longest_note_seconds).fold(0.0, f64::max),
        pedal: PedalUse::of(&pieces),
        endings: Endings::of(&pieces.iter().filter_map(|p| p.ending).collect::<Vec<_>>()),
        reference_endings: Endings::of(
            &reference.iter().filter_map(|p| ending_of(&p.notes, &p.bar_starts)).collect::<Vec<_>>(),
        ),
        reference_pedal: PedalUse::of(&excerpts),
        reference_repetition: mean(excerpts.iter().map(|p| p.repetition)),
        reference_phrase_echo: mean(excerpts.iter().map(|p| p.phrase_echo)),
        reference_pulse: mean(excerpts.iter().map(|p| p.pulse)),
        reference_notes_per_second: mean(excerpts.iter().map(|p| p.notes_per_second)),
        reference_onsets_on_grid: mean(excerpts.iter().map(|p| p.onsets_on_grid)),
        reference_in_key: mean(excerpts.iter().map(|p| p.in_key)),
        reference_longest_copy_notes: Spread::of(excerpts.iter().map(|p| p.longest_copy_notes as f64).collect()),
        excerpt_seconds,
        training_longest_note_seconds: training
            .iter()
            .flat_map(|p| p.notes.iter().map(|n| n.duration_seconds))
            .fold(0.0, f64::max),
        real_excerpts: real_excerpts(
            training,
            &reference_histograms,
            (real_draws, generated.len(), excerpt_seconds),
            rng,
        ),
        histograms,
        reference_histograms,
        pieces,
    }
}

/// The report as a Markdown table and lines, for `quality.md`.
pub fn markdown(report: &QualityReport) -> String {
    let mut md = String::from("# Music quality\n\n");
    md.push_str(&format!(
        "{} generated pieces against {} reference pieces (overlap of pooled histograms, 1 = identical); \
         memorisation against {} training pieces.\n\n",
        report.generated_pieces, report.reference_pieces, report.training_pieces
    ));
    let names: Vec<&str> = report.overlaps.iter().map(|(n, _)| n.as_str()).collect();
    md.push_str(&format!("| {} | mean |\n|{}---|\n", names.join(" | "), "---|".repeat(names.len())));
    let values: Vec<String> = report.overlaps.iter().map(|(_, o)| format!("{o:.2}")).collect();
    md.push_str(&format!("| {} | **{:.2}** |\n\n", values.join(" | "), report.mean_overlap));
    md.push_str("| | generated (mean of pieces) | reference (first excerpt_seconds of each) |\n|---|---|---|\n");
    md.push_str(&format!(
        "| repetition (4-note patterns that recur) | {:.2} | {:.2} |\n",
        report.repetition, report.reference_repetition
    ));
    md.push_str(&format!(
        "| four-bar phrases alike the one just before | {:.2} | {:.2} |\n",
        report.phrase_echo, report.reference_phrase_echo
    ));
    md.push_str(&format!(
        "| pulse (share of the commonest inter-onset interval) | {:.2} | {:.2} |\n",
        report.pulse, report.reference_pulse
    ));
    md.push_str(&format!(
        "| notes per second | {:.1} | {:.1} |\n",
        report.notes_per_second, report.reference_notes_per_second
    ));
    md.push_str(&format!(
        "| onsets on the sixteenth / eighth-triplet grid | {:.2} | {:.2} |\n",
        report.onsets_on_grid, report.reference_onsets_on_grid
    ));
    md.push_str(&format!(
        "| notes in the piece's best-fitting diatonic scale | {:.2} | {:.2} |\n",
        report.in_key, report.reference_in_key
    ));
    let (pedal, reference_pedal) = (&report.pedal, &report.reference_pedal);
    md.push_str(&format!(
        "| pieces that press the sustain pedal | {:.2} | {:.2} |\n\
         | pedal presses a minute (pieces that pedal) | {:.0} | {:.0} |\n\
         | share of the time the pedal is down (pieces that pedal) | {:.2} | {:.2} |\n",
        pedal.pieces_with_pedal,
        reference_pedal.pieces_with_pedal,
        pedal.presses_per_minute,
        reference_pedal.presses_per_minute,
        pedal.down_share,
        reference_pedal.down_share
    ));
    let copies = &report.reference_longest_copy_notes;
    md.push_str(&format!(
        "\nLongest run of notes copied from a training piece (any transposition): {} (the reference \
         excerpts, never trained on: {:.0} / {:.0} / {:.0}, lowest / median / highest). Longest note: {:.1} s \
         (training pieces: {:.1} s).\n",
        report.longest_copy_notes,
        copies.min,
        copies.median,
        copies.max,
        report.longest_note_seconds,
        report.training_longest_note_seconds
    ));
    let (ends, real_ends) = (&report.endings, &report.reference_endings);
    md.push_str(&format!(
        "\n## Endings\n\nThe last onset of each whole piece (the reference pieces' own ends, not excerpts); the key \
         by Krumhansl–Schmuckler profiles over the piece's note lengths, which misreads some real pieces.\n\n\
         | | generated ({} pieces) | reference ({} pieces) |\n|---|---|---|\n\
         | the tonic chord over the tonic | {:.2} | {:.2} |\n\
         | on a downbeat | {:.2} | {:.2} |\n\
         | notes struck (median) | {:.0} | {:.0} |\n\
         | held, quarter notes (median) | {:.2} | {:.2} |\n\
         | seconds a quarter lasts there, over the piece's median (median) | {:.2} | {:.2} |\n",
        ends.pieces,
        real_ends.pieces,
        ends.tonic_chord,
        real_ends.tonic_chord,
        ends.on_a_downbeat,
        real_ends.on_a_downbeat,
        ends.notes_struck,
        real_ends.notes_struck,
        ends.held_quarters,
        real_ends.held_quarters,
        ends.slowing,
        real_ends.slowing
    ));
    if let Some(real) = &report.real_excerpts {
        md.push_str(&format!(
            "\n## Real music at this sample size\n\n{} sets of {} random {:.0}-second excerpts of the training \
             pieces, each set compared with the reference as the generated set is (lowest / median / highest \
             of the sets). A generated set inside this range is as close to the reference as real music of \
             the corpus is at this size.\n\n",
            real.draws, real.pieces_per_draw, real.seconds
        ));
        let show = |s: &Spread| format!("{:.2} / {:.2} / {:.2}", s.min, s.median, s.max);
        md.push_str("| figure | generated | real excerpts |\n|---|---|---|\n");
        for ((name, generated), (_, real)) in report.overlaps.iter().zip(&real.overlaps) {
            md.push_str(&format!("| {name} | {generated:.2} | {} |\n", show(real)));
        }
        md.push_str(&format!(
            "| **mean overlap** | {:.2}, above {} of the {} real sets | {} |\n",
            report.mean_overlap,
            real.sets_below(report.mean_overlap),
            real.draws,
            show(&real.mean_overlap)
        ));
        for (name, generated, real) in [
            ("lowest overlap", report.lowest_overlap, &real.lowest_overlap),
            ("repetition", report.repetition, &real.repetition),
            ("phrases alike the one just before", report.phrase_echo, &real.phrase_echo),
            ("pulse", report.pulse, &real.pulse),
            ("onsets on the grid", report.onsets_on_grid, &real.onsets_on_grid),
            ("notes in key", report.in_key, &real.in_key),
            ("pieces that pedal", report.pedal.pieces_with_pedal, &real.pieces_with_pedal),
            ("pedal down (pieces that pedal)", report.pedal.down_share, &real.pedal_down_share),
        ] {
            md.push_str(&format!("| {name} | {generated:.2} | {} |\n", show(real)));
        }
        let presses = &real.pedal_presses_per_minute;
        md.push_str(&format!(
            "| pedal presses a minute (pieces that pedal) | {:.0} | {:.0} / {:.0} / {:.0} |\n",
            report.pedal.presses_per_minute, presses.min, presses.median, presses.max
        ));
        let nps = &real.notes_per_second;
        md.push_str(&format!(
            "| notes per second | {:.1} | {:.1} / {:.1} / {:.1} |\n",
            report.notes_per_second, nps.min, nps.median, nps.max
        ));
        md.push_str(&format!(
            "\nThe same targets met by real music: each real set against the other {} (leave one out).\n\n\
             | target | real sets that meet it |\n|---|---|\n",
            real.draws.saturating_sub(1)
        ));
        for (target, count) in &real.real_sets_meeting {
            md.push_str(&format!("| {target} | {count} of {} |\n", real.draws));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(pitch: u8, onset: f64, duration: f64) -> Note {
        Note {
            pitch,
            velocity: 64,
            channel: 0,
            program: 0,
            onset_seconds: onset,
            duration_seconds: duration,
            onset_quarters: onset * 2.0,
            duration_quarters: duration * 2.0,
        }
    }

    #[test]
    fn real_excerpts_are_cut_from_long_enough_pieces_and_drawn_from_the_seed() {
        let notes = vec![note(60, 1.0, 0.5), note(62, 9.5, 2.0), note(64, 11.0, 1.0)];
        let pedal = vec![(0.5, 2.0), (2.0, 5.0), (9.0, 12.0), (11.0, 12.0)];
        let cut = excerpt(&Piece { name: "p".into(), notes, pedal, bar_starts: Vec::new() }, 1.0, 10.0);
        assert_eq!(cut.notes.len(), 2, "onsets in [1, 11) only");
        assert_eq!((cut.notes[0].onset_seconds, cut.notes[1].onset_seconds), (0.0, 8.5));
        assert_eq!(cut.notes[1].duration_seconds, 1.5, "a note ringing past the end is cut there");
        assert_eq!(cut.pedal, [(1.0, 4.0), (8.0, 10.0)], "presses going down in [1, 11), lifted by its end");

        // A 100-second scale piece, pedalled a beat at a time, and one too short to cut from.
        let long: Vec<Note> = (0..400).map(|i| note(48 + (i % 24) as u8, i as f64 * 0.25, 0.2)).collect();
        let pedal: Vec<(f64, f64)> = (0..100).map(|i| (f64::from(i), f64::from(i) + 0.5)).collect();
        let short = Piece { name: "short".into(), notes: vec![note(60, 0.0, 1.0)], ..Piece::default() };
        let training = vec![Piece { name: "long".into(), notes: long.clone(), pedal, bar_starts: Vec::new() }, short];
        let reference = Histograms::of(&[long]);
        let draw = |seed| real_excerpts(&training, &reference, (5, 3, 20.0), &mut SeededRng::new(seed, "t")).unwrap();
        let (a, b) = (draw(1), draw(1));
        assert_eq!((a.draws, a.pieces_per_draw), (5, 3));
        assert_eq!(a.mean_overlap, b.mean_overlap, "the same seed draws the same excerpts");
        assert!((a.notes_per_second.median - 4.0).abs() < 0.3, "{:?}", a.notes_per_second);
        assert!(a.mean_overlap.min <= a.mean_overlap.median && a.mean_overlap.median <= a.mean_overlap.max);
        assert!(a.mean_overlap.max <= 1.0 && a.mean_overlap.min > 0.5, "{:?}", a.mean_overlap);
        assert_eq!(a.mean_overlap_of_each.len(), 5);
        assert_eq!(Spread::of(a.mean_overlap_of_each.clone()), a.mean_overlap, "the spread is of these");
        assert_eq!((a.sets_below(a.mean_overlap.min), a.sets_below(a.mean_overlap.max + 1e-9)), (0, 5));
        assert_eq!(a.sets_below(a.mean_overlap.median), 2, "the median of five is above two");
        // Leave one out: of five sets, those above the other four's median are the top two,
        // and the third when it clears the mean of the second and the fourth.
        let meeting: Vec<usize> = a.real_sets_meeting.iter().map(|(_, count)| *count).collect();
        assert_eq!(meeting.len(), TARGET_NAMES.len() + 1);
        assert!((2..=3).contains(&meeting[0]), "{meeting:?}");
        assert!(meeting[1] < 5, "the set with the lowest pitch-class overlap is below the others': {meeting:?}");
        assert_eq!(meeting[3], 5, "every excerpt of a scale repeats all its patterns: a tie is inside the range");
        assert!(meeting[4] < 5, "the densest excerpt is denser than the other four: {:?}", a.notes_per_second);
        assert!(meeting[5] <= *meeting[..5].iter().min().unwrap(), "all of them: {meeting:?}");
        // Every excerpt pedals, once a second, the pedal down half the time.
        assert_eq!(a.pieces_with_pedal, Spread { min: 1.0, median: 1.0, max: 1.0 });
        assert!((a.pedal_presses_per_minute.median - 60.0).abs() < 2.0, "{:?}", a.pedal_presses_per_minute);
        assert!((a.pedal_down_share.median - 0.5).abs() < 0.02, "{:?}", a.pedal_down_share);
        assert!(real_excerpts(&training, &reference, (5, 3, 200.0), &mut SeededRng::new(1, "t")).is_none());
        assert_eq!(Spread::of(vec![3.0, 1.0, 2.0, 10.0]), Spread { min: 1.0, median: 2.5, max: 10.0 });
    }

    #[test]
    fn groups_sequence_repetition_and_pulse_follow_the_definitions() {
        // C-E-G, C-E-G, a chord of C and G struck 10 ms apart.
        let piece = vec![
            note(60, 0.0, 0.5),
            note(64, 0.5, 0.5),
            note(67, 1.0, 0.5),
            note(60, 1.5, 0.5),
            note(64, 2.0, 0.5),
            note(67, 2.5, 0.5),
            note(67, 3.01, 1.0),
            note(60, 3.0, 1.0),
        ];
        let groups = onset_groups(&piece);
        assert_eq!(groups.len(), 7);
        assert_eq!(pitch_sequence(&groups), vec![60, 64, 67, 60, 64, 67, 60, 67]);
        // 4-grams: 60 64 67 60 | 64 67 60 64 | 67 60 64 67 | 60 64 67 60 | 64 67 60 67: one repeats twice.
        assert!((repetition_share(&pitch_sequence(&groups), 4) - 2.0 / 5.0).abs() < 1e-12);
        assert!((pulse_share(&groups) - 1.0).abs() < 1e-12, "every interval is 0.5 s");
        let h = Histograms::of(std::slice::from_ref(&piece));
        assert!((h.polyphony[1] - 1.0 / 7.0).abs() < 1e-12, "the last group sounds two notes");
        assert!((h.inter_onset[TIME_EDGES.iter().position(|&e| e == 0.5).unwrap()] - 1.0).abs() < 1e-12);
        assert!((h.overlaps(&h).iter().sum::<f64>() - 7.0).abs() < 1e-9);
    }

    #[test]
    fn a_transposed_copy_counts_as_copied() {
        let notes = (0..20).map(|i| note(60 + (i * 5 % 12) as u8, i as f64, 0.5)).collect();
        let training = vec![Piece { name: "t".into(), notes, ..Piece::default() }];
        let copy: Vec<Note> = (3..12).map(|i| note(62 + (i * 5 % 12) as u8, i as f64, 0.5)).collect();
        let figures = piece_figures("g", (&copy, &[], &[]), &training_intervals(&training));
        assert_eq!(figures.longest_copy_notes, 9);
    }

    #[test]
    fn pedal_use_counts_the_pieces_that_pedal_and_measures_only_those() {
        // 30 s of notes; three presses, down 9 s in all (the last lifted after the end).
        let notes: Vec<Note> = (0..60).map(|i| note(60, f64::from(i) * 0.5, 0.5)).collect();
        let pedalled = piece_figures("a", (&notes, &[(0.0, 2.0), (10.0, 14.0), (27.0, 33.0)], &[]), &[]);
        assert_eq!(pedalled.pedal_presses_per_minute, 6.0);
        assert!((pedalled.pedal_down_share - 9.0 / 30.0).abs() < 1e-12, "{}", pedalled.pedal_down_share);
        let dry = piece_figures("b", (&notes, &[], &[]), &[]);
        assert_eq!((dry.pedal_presses_per_minute, dry.pedal_down_share), (0.0, 0.0));
        let set = PedalUse::of(&[pedalled.clone(), dry.clone(), dry]);
        assert!((set.pieces_with_pedal - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            (set.presses_per_minute, set.down_share),
            (pedalled.pedal_presses_per_minute, pedalled.pedal_down_share)
        );
        assert_eq!(PedalUse::of(&[]), PedalUse::default());
    }

    /// A phrase of four 4/4 bars starting at `start` quarters: one note a beat, its keys
    /// from `keys` in turn.
    fn phrase(start: f64, keys: &[u8]) -> Vec<Note> {
        (0..16).map(|beat| note(keys[beat % keys.len()], (start + beat as f64) / 2.0, 0.5)).collect()
    }

    #[test]
    fn phrase_echo_counts_phrases_alike_the_one_just_before_at_the_best_bar_phase() {
        // A one-bar upbeat, then phrases A A A B A of four bars each: at the phase that
        // starts them on bar 2, two of the four pairs are alike (A after A twice).
        let bars: Vec<f64> = (0..21).map(|bar| f64::from(bar) * 4.0).collect();
        let (a, b) = ([60, 64, 67, 72], [62, 65, 69, 74]);
        let mut notes = vec![note(55, 0.0, 0.5)];
        for (i, keys) in [&a, &a, &a, &b, &a].into_iter().enumerate() {
            notes.extend(phrase(4.0 + 16.0 * i as f64, keys));
        }
        assert_eq!(phrase_echo(&notes, &bars), 0.5);
        // Every phrase new: none alike; a piece of one phrase or without bars has no pair.
        let fresh: Vec<Note> = (0..4).flat_map(|i| phrase(16.0 * f64::from(i), &[60 + i as u8 * 2, 71])).collect();
        assert_eq!(phrase_echo(&fresh, &bars), 0.0);
        assert_eq!(phrase_echo(&phrase(0.0, &a), &bars), 0.0);
        assert_eq!(phrase_echo(&notes, &[]), 0.0);
        // Alike is 80 % of the union shared: one note of sixteen changed still is, four are not.
        let mut near = phrase(16.0, &a);
        near[3].pitch = 50;
        let mut far = phrase(16.0, &a);
        for n in far.iter_mut().take(4) {
            n.pitch = 50;
        }
        let echo_of = |second: Vec<Note>| phrase_echo(&[phrase(0.0, &a), second].concat(), &bars);
        assert_eq!((echo_of(near), echo_of(far)), (1.0, 0.0));
    }
}
