//! The `beats` encoding: music as a score, in bars and beats (after MidiTok's REMI, Huang &
//! Yang 2020, here for an LSTM and with a grammar, [`grammar`]).
//!
//! | token | meaning |
//! |---|---|
//! | `bar:N/D` | a new bar begins, of metre N/D (its length fixes where the next one begins) |
//! | `pos:K` | the following notes start K grid steps after the bar's downbeat |
//! | `tempo:T` | from here on, tempo bin T (geometric, 10–320 quarter notes a minute) |
//! | `vel:B` | the following notes have velocity bin B (sent when the bin changes) |
//! | `pitch:P` | a note of pitch P (one of the 88 keys) starts… |
//! | `up:K` | …or, for a position's later notes, a note K semitones above the one below… |
//! | `dur:D` | …and lasts D grid steps |
//! | `pedal` | the sustain pedal goes down here and stays down for the `dur:D` after it (only in a dictionary [`Beats::pedal`] holds) |
//!
//! A bar reads `bar:3/4 [tempo:T] pos:0 [tempo:T] [vel:B] pitch:P dur:D [vel:B] up:K dur:D …
//! pos:12 …`; with the pedal, a position's tokens after its tempo may start `pedal dur:D`.
//!
//! Key design decisions:
//! - **The grid is 12 steps a quarter note** ([`POSITIONS_PER_QUARTER`]): it holds
//!   sixteenths (3 steps) and eighth-note triplets (4 steps), where most onsets of scored
//!   piano music sit, and every bar of a metre with a denominator up to 16 is a whole
//!   number of steps. What falls between (32nds, ornaments) moves by at most half a step.
//! - **Tempo tokens keep the seconds, not only the beats.** A scored file's tempo map
//!   changes every few beats; tempo bins ~5 % apart would let the seconds drift further at
//!   every bar. So the encoder works like error diffusion: it follows the decoder's clock
//!   and sends a tempo token only where the next onset would otherwise land more than
//!   [`TEMPO_TOLERANCE_SECONDS`] from where it is.
//! - **The tempo it sends is the music's, measured over two beats** ([`TEMPO_HORIZON`]):
//!   of the bins that bring the next onset back within [`TEMPO_LANDING_SECONDS`], the one
//!   nearest the tempo that reaches the onset two quarter notes on. Aimed at the next onset alone, a
//!   30 ms error over a sixteenth is a 25 % tempo change: the first version of this
//!   encoding jumped 6 bins or more at most of its tempo tokens and went back to the bin
//!   before at 30 % of them, and a model trained on it wrote that jitter, whose uneven
//!   beats in seconds cost it its pulse.
//! - **A chord is its lowest key and the steps above it.** Only a position's first note
//!   names its key; each later one, from the bottom up, says how far above the note
//!   below it lies. An octave or a third is then one token whatever the key, as it is to
//!   a pianist's hand; with every note named by its key (the first version of this
//!   encoding), a model trained on the corpus stacked its chords almost at random
//!   (octaves 4 % of the steps inside chords where the corpus has 15 %).
//! - **The dictionary is fixed by the parameters**, like `performance`'s: a model trained
//!   on one corpus composes from any other, or from none.
//! - **The pedal, where kept, is a press and how long it stays down**, written like a
//!   note (`pedal dur:D`) at the chord it catches: a press up to a sixteenth after a
//!   chord's onset (a pianist changes the pedal just after the chord) moves onto it, and a
//!   lift up to a sixteenth before the next press moves onto that, so a change of pedal is
//!   one position, not three.

pub mod grammar;

use crate::encoding::Vocabulary;
use crate::metre::{Metre, PedalPress, Score, Tempo, TimeSignature};
use crate::note::{Note, PIANO_KEYS};
use crate::performance::{bin_velocity, velocity_bin};

/// Grid steps in a quarter note.
pub const POSITIONS_PER_QUARTER: u32 = 12;
/// The longest bar a `bar:N/D` token holds: 8 quarter notes. A longer signature's bars are
/// written as several bars of this encoding (see [`written_bars`]); the onsets stay put.
pub const MAX_BAR_POSITIONS: u32 = 8 * POSITIONS_PER_QUARTER;
/// The widest step an `up:K` token takes: from the lowest key of the piano to the highest.
pub const MAX_ABOVE: u8 = *PIANO_KEYS.end() - *PIANO_KEYS.start();
/// The slowest and fastest tempo bins, in quarter notes a minute.
pub const MIN_BPM: f64 = 10.0;
pub const MAX_BPM: f64 = 320.0;
/// How far the decoder's clock may drift from the piece's seconds before a tempo token
/// corrects it.
pub const TEMPO_TOLERANCE_SECONDS: f64 = 0.03;
/// How near the next onset the tempo a token sends must land it, where a bin can: more than
/// [`TEMPO_TOLERANCE_SECONDS`], so the tempo need not chase every uneven onset, and under
/// the 50 ms a note's onset may move in the fidelity check.
pub const TEMPO_LANDING_SECONDS: f64 = 0.045;
/// The span, in grid steps, over which the encoder measures the tempo it sends: two
/// quarter notes.
pub const TEMPO_HORIZON: i64 = 2 * POSITIONS_PER_QUARTER as i64;
/// The tempo a decoder assumes before the first tempo token.
const OPENING_BPM: f64 = 120.0;

/// The parameters of the encoding. Invariant: both bin counts are at least 2.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Beats {
    pub velocity_bins: u32,
    pub tempo_bins: u32,
    /// Whether the dictionary holds the `pedal` token and the encoder writes the pedal
    /// presses it is given (`extract.sustain = "events"`). A decoder reads `pedal` tokens
    /// either way: a model's own dictionary says whether it writes them.
    pub pedal: bool,
}

/// One token, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    Bar {
        numerator: u8,
        denominator: u8,
    },
    Position(u32),
    Tempo(u32),
    Velocity(u32),
    Pitch(u8),
    /// Semitones above the note below it at this position.
    Above(u8),
    Duration(u32),
    /// The sustain pedal goes down; the duration after it says for how long.
    Pedal,
}

impl Token {
    pub fn parse(text: &str) -> Option<Token> {
        if text == "pedal" {
            return Some(Token::Pedal);
        }
        let (kind, value) = text.split_once(':')?;
        if kind == "bar" {
            let (numerator, denominator) = value.split_once('/')?;
            return Some(Token::Bar { numerator: numerator.parse().ok()?, denominator: denominator.parse().ok()? });
        }
        let value: u32 = value.parse().ok()?;
        match kind {
            "pos" => Some(Token::Position(value)),
            "tempo" => Some(Token::Tempo(value)),
            "vel" => Some(Token::Velocity(value)),
            "pitch" => u8::try_from(value).ok().filter(|p| *p < 128).map(Token::Pitch),
            "up" => u8::try_from(value).ok().filter(|k| (1..=MAX_ABOVE).contains(k)).map(Token::Above),
            "dur" => Some(Token::Duration(value)),
            _ => None,
        }
    }

    pub fn text(self) -> String {
        match self {
            Token::Bar { numerator, denominator } => format!("bar:{numerator}/{denominator}"),
            Token::Position(k) => format!("pos:{k}"),
            Token::Tempo(t) => format!("tempo:{t}"),
            Token::Velocity(b) => format!("vel:{b}"),
            Token::Pitch(p) => format!("pitch:{p}"),
            Token::Above(k) => format!("up:{k}"),
            Token::Duration(d) => format!("dur:{d}"),
            Token::Pedal => "pedal".to_string(),
        }
    }
}

/// Whether a dictionary holds the `pedal` token: a model trained on it writes the pedal
/// itself (a `beats` model trained with `extract.sustain = "events"`).
pub fn holds_pedal(vocabulary: &Vocabulary) -> bool {
    vocabulary.id(&Token::Pedal.text()).is_some()
}

/// The key `k` semitones above `below`, where the piano has one: what an `up:K` token
/// strikes, for the decoder and the grammar alike.
fn key_above(below: u8, k: u8) -> Option<u8> {
    below.checked_add(k).filter(|key| PIANO_KEYS.contains(key))
}

/// Grid steps in a bar of metre `numerator/denominator`.
pub fn bar_positions(numerator: u8, denominator: u8) -> u32 {
    u32::from(numerator) * 4 * POSITIONS_PER_QUARTER / u32::from(denominator.max(1))
}

/// Whether a `bar:N/D` token exists for this metre: a denominator of 2, 4, 8 or 16, a
/// numerator of 1 to 16, and a bar of at most 8 quarter notes.
pub fn is_metre(numerator: u8, denominator: u8) -> bool {
    matches!(denominator, 2 | 4 | 8 | 16)
        && (1..=16).contains(&numerator)
        && bar_positions(numerator, denominator) <= MAX_BAR_POSITIONS
}

/// Every metre a bar token can carry.
pub fn metres() -> Vec<(u8, u8)> {
    [2u8, 4, 8, 16].into_iter().flat_map(|d| (1..=16u8).map(move |n| (n, d))).filter(|&(n, d)| is_metre(n, d)).collect()
}

/// The durations a `dur:D` token can carry, in grid steps, ascending: every step up to a
/// half note, then sixteenths up to a whole note, eighths up to two, quarters up to four
/// whole notes. A table, not a list built per call: every note of every piece looks here.
pub const DURATIONS: [u32; 48] = durations_table();

const fn durations_table() -> [u32; 48] {
    let (mut table, mut filled, mut steps) = ([0u32; 48], 0, 1u32);
    while steps <= 192 {
        if steps <= 24 || (steps <= 48 && steps % 3 == 0) || (steps <= 96 && steps % 6 == 0) || steps % 12 == 0 {
            table[filled] = steps;
            filled += 1;
        }
        steps += 1;
    }
    table
}

/// The duration token nearest to `steps` grid steps (ties go to the shorter).
fn nearest_duration(steps: u32) -> u32 {
    DURATIONS.into_iter().min_by_key(|&d| (d.abs_diff(steps), d)).expect("durations are not empty")
}

/// A piece's bars as this encoding writes them: `(first grid step, steps, numerator,
/// denominator)`, covering every step up to `end`. A bar whose metre has no token is
/// written as bars of 8/4 and then the rest in the coarsest of quarters, eighths or
/// sixteenths that fits, so every onset keeps its place.
pub fn written_bars(metre: &Metre, end: i64) -> Vec<(i64, i64, u8, u8)> {
    let mut written = Vec::new();
    for bar in metre.bars_until(end as f64 / f64::from(POSITIONS_PER_QUARTER) + 1e-9) {
        let start = grid(bar.start_quarters);
        let TimeSignature { numerator, denominator, .. } = bar.signature;
        if is_metre(numerator, denominator) {
            written.push((start, i64::from(bar_positions(numerator, denominator)), numerator, denominator));
            continue;
        }
        let (mut at, mut left) = (start, i64::from(bar_positions(numerator, denominator)));
        while left > 0 {
            let (steps, n, d) = if left >= i64::from(MAX_BAR_POSITIONS) {
                (i64::from(MAX_BAR_POSITIONS), 8, 4)
            } else if left % 12 == 0 {
                (left, (left / 12) as u8, 4)
            } else if left % 6 == 0 && left / 6 <= 16 {
                (left, (left / 6) as u8, 8)
            } else {
                let sixteenths = (left / 3).clamp(1, 16);
                (sixteenths * 3, sixteenths as u8, 16)
            };
            written.push((at, steps, n, d));
            at += steps;
            left -= steps;
        }
    }
    // No bar after the music: a split bar's tail may start past the end.
    written.retain(|&(start, ..)| start < end.max(1));
    written
}

/// How far, in grid steps, a pedal press moves back onto the chord it catches, and a lift
/// forward onto the next press: a sixteenth.
const PEDAL_SNAP: i64 = 3;

/// Pedal presses (onset order) as `(grid step, duration token)`: a press up to
/// [`PEDAL_SNAP`] after a chord's onset moves onto it, and a lift up to [`PEDAL_SNAP`]
/// before the next press moves onto that, so a change of pedal reads as one position. A
/// press lasts at least one step and at most the longest duration token. The steps never
/// go back: a press moves back only onto the latest chord at or before it, which no earlier
/// press passes (two on one chord: the later holds).
fn pedal_steps(pedal: &[PedalPress], onsets: &[Onset]) -> Vec<(i64, u32)> {
    let snapped = |quarters: f64| {
        let at = grid(quarters);
        let chord = onsets.partition_point(|onset| onset.0 <= at);
        match chord.checked_sub(1).map(|i| onsets[i].0) {
            Some(onset) if at - onset <= PEDAL_SNAP => onset,
            _ => at,
        }
    };
    let downs: Vec<i64> = pedal.iter().map(|press| snapped(press.onset_quarters)).collect();
    let mut presses: Vec<(i64, u32)> = Vec::with_capacity(pedal.len());
    for (index, press) in pedal.iter().enumerate() {
        let down = downs[index];
        let mut up = grid(press.end_quarters());
        if let Some(&next) = downs.get(index + 1)
            && (up - next).abs() <= PEDAL_SNAP
        {
            up = next;
        }
        let steps = (up - down).max(1) as u32;
        // Two presses snapped onto one chord: the later one holds.
        if presses.last().is_some_and(|&(at, _)| at == down) {
            presses.pop();
        }
        presses.push((down, nearest_duration(steps)));
    }
    presses
}

/// Quarter notes to the nearest grid step.
fn grid(quarters: f64) -> i64 {
    (quarters * f64::from(POSITIONS_PER_QUARTER)).round().max(0.0) as i64
}

/// The decoder's clock: the tempo changes so far, as `(grid step, seconds there, bpm)`.
/// The encoder runs the same clock, to know where the decoder will put each onset.
struct Clock {
    changes: Vec<(i64, f64, f64)>,
}

impl Clock {
    fn new() -> Clock {
        Clock { changes: vec![(0, 0.0, OPENING_BPM)] }
    }

    fn bpm(&self) -> f64 {
        self.changes.last().expect("starts non-empty").2
    }

    /// Seconds at grid step `at`, by the changes up to it.
    fn seconds_at(&self, at: i64) -> f64 {
        let index = self.changes.partition_point(|c| c.0 <= at).max(1) - 1;
        let (step, seconds, bpm) = self.changes[index];
        seconds + (at - step) as f64 / f64::from(POSITIONS_PER_QUARTER) * 60.0 / bpm
    }

    /// A new tempo from grid step `at` on (not before the last change).
    fn change(&mut self, at: i64, bpm: f64) {
        let at = at.max(self.changes.last().expect("non-empty").0);
        let seconds = self.seconds_at(at);
        match self.changes.last_mut() {
            Some(last) if last.0 == at => *last = (at, seconds, bpm),
            _ => self.changes.push((at, seconds, bpm)),
        }
    }
}

/// Notes that start on one grid step: `(step, seconds of the earliest, notes)`.
type Onset<'a> = (i64, f64, Vec<&'a Note>);

impl Beats {
    /// Every token of the encoding: the dictionary, whatever the data.
    pub fn vocabulary(&self) -> Vocabulary {
        let tokens = metres()
            .into_iter()
            .map(|(numerator, denominator)| Token::Bar { numerator, denominator })
            .chain((0..MAX_BAR_POSITIONS).map(Token::Position))
            .chain((1..=self.tempo_bins).map(Token::Tempo))
            .chain((1..=self.velocity_bins).map(Token::Velocity))
            .chain(PIANO_KEYS.map(Token::Pitch))
            .chain((1..=MAX_ABOVE).map(Token::Above))
            .chain(DURATIONS.into_iter().map(Token::Duration))
            .chain(self.pedal.then_some(Token::Pedal));
        Vocabulary::from_tokens(tokens.map(Token::text))
    }

    /// The tempo bin (1-based) nearest to `bpm` on the geometric scale.
    pub fn tempo_bin(&self, bpm: f64) -> u32 {
        let ratio = (MAX_BPM / MIN_BPM).ln() / f64::from(self.tempo_bins - 1);
        let bin = ((bpm.clamp(MIN_BPM, MAX_BPM) / MIN_BPM).ln() / ratio).round() as u32 + 1;
        bin.clamp(1, self.tempo_bins)
    }

    /// The tempo of a bin, in quarter notes a minute.
    pub fn bin_tempo(&self, bin: u32) -> f64 {
        let ratio = (MAX_BPM / MIN_BPM).ln() / f64::from(self.tempo_bins - 1);
        MIN_BPM * (f64::from(bin.clamp(1, self.tempo_bins) - 1) * ratio).exp()
    }

    /// The tempo bin to send at grid step `from`, where `ahead` are the onsets still to
    /// come (at least one), or `None` when the tempo in force (`current`) lands the next of
    /// them within [`TEMPO_TOLERANCE_SECONDS`] of its seconds (or the bin chosen is the one
    /// in force). The bin chosen lands the next onset within [`TEMPO_LANDING_SECONDS`] if
    /// any bin does, and of those is the nearest to the tempo over [`TEMPO_HORIZON`].
    fn retempo(&self, clock: &Clock, from: i64, ahead: &[Onset], current: Option<u32>) -> Option<u32> {
        let here = clock.seconds_at(from);
        let quarters_to = |to: i64| (to - from) as f64 / f64::from(POSITIONS_PER_QUARTER);
        let (next, next_seconds) = (ahead[0].0, ahead[0].1);
        // How far from its seconds the next onset lands at a bin's tempo.
        let miss = |bin: u32| (here + quarters_to(next) * 60.0 / self.bin_tempo(bin) - next_seconds).abs();
        if current.is_some_and(|bin| miss(bin) <= TEMPO_TOLERANCE_SECONDS) {
            return None;
        }
        let bin_reaching = |to: i64, to_seconds: f64| {
            self.tempo_bin(if to_seconds - here > 1e-6 {
                quarters_to(to) * 60.0 / (to_seconds - here)
            } else {
                MAX_BPM
            })
        };
        let far = ahead.iter().find(|onset| onset.0 - from >= TEMPO_HORIZON).unwrap_or(&ahead[ahead.len() - 1]);
        let (near, mut bin) = (bin_reaching(next, next_seconds), bin_reaching(far.0, far.1));
        while bin != near && miss(bin) > TEMPO_LANDING_SECONDS {
            bin = if near > bin { bin + 1 } else { bin - 1 };
        }
        Some(bin).filter(|&bin| Some(bin) != current)
    }

    /// Encodes a piece's notes (any order) in its metre, with its pedal presses where
    /// [`Beats::pedal`] (onset order, as [`Score::pedal`] holds them).
    ///
    /// Onsets and durations are rounded to the grid (a note keeps at least one step, and
    /// takes the nearest duration token); two notes of one pitch on one step (two channels
    /// doubling it) are one, the longer. Pedal presses after the last onset are left out.
    pub fn encode(&self, notes: &[Note], metre: &Metre, pedal: &[PedalPress]) -> Vec<Token> {
        let mut order: Vec<&Note> = notes.iter().collect();
        order.sort_by(|a, b| {
            (grid(a.onset_quarters), a.pitch)
                .cmp(&(grid(b.onset_quarters), b.pitch))
                .then(b.duration_quarters.total_cmp(&a.duration_quarters))
        });
        order.dedup_by(|later, earlier| {
            (grid(later.onset_quarters), later.pitch) == (grid(earlier.onset_quarters), earlier.pitch)
        });
        let onsets: Vec<Onset> = order
            .chunk_by(|a, b| grid(a.onset_quarters) == grid(b.onset_quarters))
            .map(|chord| {
                let seconds = chord.iter().map(|n| n.onset_seconds).fold(f64::INFINITY, f64::min);
                (grid(chord[0].onset_quarters), seconds, chord.to_vec())
            })
            .collect();
        let Some(last) = onsets.last().map(|onset| onset.0) else { return Vec::new() };
        let mut presses = if self.pedal { pedal_steps(pedal, &onsets) } else { Vec::new() };
        presses.retain(|&(at, _)| at <= last);
        let mut next_press = 0;

        let mut tokens = Vec::new();
        let mut clock = Clock::new();
        let (mut tempo, mut velocity) = (None, None);
        let mut next = 0;
        for (index, (start, steps, numerator, denominator)) in written_bars(metre, last + 1).into_iter().enumerate() {
            tokens.push(Token::Bar { numerator, denominator });
            if index == 0 {
                // The opening tempo: the one that brings the clock to the first onset after 0.
                let bin = match onsets.iter().position(|o| o.0 > 0) {
                    Some(first) => self.retempo(&clock, 0, &onsets[first..], None),
                    None => Some(self.tempo_bin(OPENING_BPM)),
                };
                if let Some(bin) = bin {
                    tokens.push(Token::Tempo(bin));
                    clock.change(0, self.bin_tempo(bin));
                    tempo = Some(bin);
                }
            }
            loop {
                let chord_at = onsets.get(next).map(|o| o.0).filter(|&at| at < start + steps);
                let press_at = presses.get(next_press).map(|p| p.0).filter(|&at| at < start + steps);
                let Some(at) = chord_at.into_iter().chain(press_at).min() else { break };
                tokens.push(Token::Position((at - start) as u32));
                if chord_at == Some(at)
                    && next + 1 < onsets.len()
                    && let Some(bin) = self.retempo(&clock, at, &onsets[next + 1..], tempo)
                {
                    tokens.push(Token::Tempo(bin));
                    clock.change(at, self.bin_tempo(bin));
                    tempo = Some(bin);
                }
                if press_at == Some(at) {
                    tokens.extend([Token::Pedal, Token::Duration(presses[next_press].1)]);
                    next_press += 1;
                }
                if chord_at != Some(at) {
                    continue;
                }
                let chord = &onsets[next].2;
                let mut below = None;
                for note in chord {
                    let bin = velocity_bin(note.velocity, self.velocity_bins);
                    if velocity != Some(bin) {
                        tokens.push(Token::Velocity(bin));
                        velocity = Some(bin);
                    }
                    tokens.push(match below {
                        None => Token::Pitch(note.pitch),
                        Some(low) => Token::Above(note.pitch - low),
                    });
                    below = Some(note.pitch);
                    let steps = grid(note.duration_quarters).max(1) as u32;
                    tokens.push(Token::Duration(nearest_duration(steps)));
                }
                next += 1;
            }
        }
        tokens
    }

    /// Decodes tokens to a score, defensively: a position outside its bar, a duration with
    /// no pitch before it, a step up from no note or off the keyboard and text that is no
    /// token are skipped; before the first bar token
    /// the music is in 4/4; a key struck again while it sounds ends the earlier note there;
    /// notes are cut to `max_note_seconds`.
    pub fn decode(&self, tokens: &[Token], max_note_seconds: f64) -> Score {
        let mut clock = Clock::new();
        let mut signatures: Vec<TimeSignature> = Vec::new();
        let (mut bar_start, mut bar_steps, mut started) = (0i64, i64::from(bar_positions(4, 4)), false);
        let mut at = 0i64;
        let mut velocity = bin_velocity(self.velocity_bins / 2, self.velocity_bins);
        let mut pitch = None;
        // The last key struck at this position, which an `up:K` counts from.
        let mut below: Option<u8> = None;
        // (pitch, velocity, onset step, steps)
        let mut struck: Vec<(u8, u8, i64, i64)> = Vec::new();
        // Whether a `pedal` token waits for its duration; the presses as (onset step, steps).
        let mut pedal_pending = false;
        let mut pedal: Vec<(i64, i64)> = Vec::new();
        let begin = |signatures: &mut Vec<TimeSignature>, start: i64, numerator: u8, denominator: u8| {
            let same = signatures.last().is_some_and(|s| (s.numerator, s.denominator) == (numerator, denominator));
            if !same {
                let at_quarters = start as f64 / f64::from(POSITIONS_PER_QUARTER);
                signatures.push(TimeSignature { at_quarters, numerator, denominator });
            }
        };
        for &token in tokens {
            match token {
                Token::Bar { numerator, denominator } if is_metre(numerator, denominator) => {
                    if started {
                        bar_start += bar_steps;
                    }
                    started = true;
                    bar_steps = i64::from(bar_positions(numerator, denominator));
                    at = bar_start;
                    begin(&mut signatures, bar_start, numerator, denominator);
                    (pitch, below, pedal_pending) = (None, None, false);
                }
                Token::Bar { .. } => {}
                Token::Position(k) => {
                    if !started {
                        started = true;
                        begin(&mut signatures, 0, 4, 4);
                    }
                    if i64::from(k) < bar_steps {
                        at = bar_start + i64::from(k);
                    }
                    (pitch, below, pedal_pending) = (None, None, false);
                }
                Token::Tempo(bin) => clock.change(at, self.bin_tempo(bin)),
                Token::Velocity(bin) => velocity = bin_velocity(bin, self.velocity_bins),
                Token::Pitch(p) => (pitch, below) = (Some(p), Some(p)),
                Token::Above(k) => {
                    pitch = below.and_then(|low| key_above(low, k));
                    below = pitch;
                }
                Token::Duration(steps) => {
                    if std::mem::take(&mut pedal_pending) {
                        pedal.push((at, i64::from(steps.max(1))));
                    } else if let Some(p) = pitch.take() {
                        struck.push((p, velocity, at, i64::from(steps.max(1))));
                    }
                }
                Token::Pedal => (pitch, pedal_pending) = (None, true),
            }
        }
        if signatures.is_empty() {
            signatures.push(TimeSignature { at_quarters: 0.0, numerator: 4, denominator: 4 });
        }
        // A key cannot be down twice: a re-strike ends the sounding note.
        struck.sort_by_key(|&(pitch, _, onset, _)| (pitch, onset));
        for index in 1..struck.len() {
            let (next_pitch, next_onset) = (struck[index].0, struck[index].2);
            let earlier = &mut struck[index - 1];
            if earlier.0 == next_pitch && earlier.2 + earlier.3 > next_onset {
                earlier.3 = next_onset - earlier.2;
            }
        }
        let per_quarter = f64::from(POSITIONS_PER_QUARTER);
        let mut notes: Vec<Note> = struck
            .into_iter()
            .filter(|&(_, _, _, steps)| steps > 0)
            .map(|(pitch, velocity, onset, steps)| {
                let onset_seconds = clock.seconds_at(onset);
                let mut duration_seconds = clock.seconds_at(onset + steps) - onset_seconds;
                let mut duration_quarters = steps as f64 / per_quarter;
                if duration_seconds > max_note_seconds {
                    duration_quarters *= max_note_seconds / duration_seconds;
                    duration_seconds = max_note_seconds;
                }
                Note {
                    pitch,
                    velocity,
                    channel: 0,
                    program: 0,
                    onset_seconds,
                    duration_seconds,
                    onset_quarters: onset as f64 / per_quarter,
                    duration_quarters,
                }
            })
            .collect();
        notes.sort_by(|a, b| a.onset_quarters.total_cmp(&b.onset_quarters).then(a.pitch.cmp(&b.pitch)));
        let tempos =
            clock.changes.iter().map(|&(step, _, bpm)| Tempo { at_quarters: step as f64 / per_quarter, bpm }).collect();
        // One pedal: a press still down where the next goes down is lifted there.
        pedal.sort_unstable();
        let pedal = (0..pedal.len())
            .map(|i| {
                let (onset, steps) = pedal[i];
                let lift = pedal.get(i + 1).map_or(onset + steps, |next| next.0.min(onset + steps));
                (onset, lift - onset)
            })
            .filter(|&(_, steps)| steps > 0)
            .map(|(onset, steps)| PedalPress {
                onset_quarters: onset as f64 / per_quarter,
                duration_quarters: steps as f64 / per_quarter,
            })
            .collect();
        Score { notes, metre: Metre { signatures, tempos }, pedal }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODEC: Beats = Beats { velocity_bins: 32, tempo_bins: 64, pedal: false };

    fn note(pitch: u8, onset_quarters: f64, duration_quarters: f64, bpm: f64) -> Note {
        Note::of_score(pitch, 80, onset_quarters, duration_quarters, bpm)
    }

    #[test]
    fn the_dictionary_is_fixed_and_every_token_reads_back() {
        let vocabulary = CODEC.vocabulary();
        let expected = metres().len() + 96 + 64 + 32 + 88 + 87 + DURATIONS.len();
        let spelled_out: Vec<u32> =
            (1..=24).chain((27..=48).step_by(3)).chain((54..=96).step_by(6)).chain((108..=192).step_by(12)).collect();
        assert_eq!(DURATIONS.to_vec(), spelled_out, "every step to 24, then by 3 to 48, by 6 to 96, by 12 to 192");
        assert_eq!(vocabulary.len(), expected);
        assert!(vocabulary.id("bar:3/4").is_some() && vocabulary.id("bar:6/8").is_some());
        assert!(vocabulary.id("bar:9/4").is_none() && vocabulary.id("pitch:20").is_none());
        assert!(
            vocabulary.id("up:87").is_some() && vocabulary.id("up:0").is_none() && vocabulary.id("up:88").is_none()
        );
        for token in &vocabulary.tokens {
            assert_eq!(Token::parse(token).map(Token::text).as_deref(), Some(token.as_str()));
        }
        for bin in 1..=64 {
            assert_eq!(CODEC.tempo_bin(CODEC.bin_tempo(bin)), bin);
        }
    }

    #[test]
    fn a_waltz_round_trips_in_beats_and_seconds() {
        let metre = Metre::steady(3, 4, 90.0);
        let notes = vec![
            note(48, 0.0, 3.0, 90.0),
            note(64, 0.0, 1.0, 90.0),
            note(67, 1.0, 1.0 / 3.0, 90.0), // triplets
            note(69, 4.0 / 3.0, 1.0 / 3.0, 90.0),
            note(71, 5.0 / 3.0, 1.0 / 3.0, 90.0),
            note(72, 3.25, 0.25, 90.0), // a sixteenth in the second bar
            note(50, 6.0, 12.0, 90.0),  // a long note in the third bar
        ];
        let tokens = CODEC.encode(&notes, &metre, &[]);
        let texts: Vec<String> = tokens.iter().map(|t| t.text()).collect();
        let opening = format!("tempo:{}", CODEC.tempo_bin(90.0));
        assert_eq!(&texts[..4], ["bar:3/4", &opening, "pos:0", "vel:21"], "{texts:?}");
        assert_eq!(tokens.iter().filter(|t| matches!(t, Token::Bar { .. })).count(), 3);
        let score = CODEC.decode(&tokens, 60.0);
        assert_eq!(score.metre.signatures, metre.signatures);
        assert_eq!(score.notes.len(), notes.len());
        for (original, back) in notes.iter().zip(&score.notes) {
            assert_eq!(original.pitch, back.pitch);
            assert!((original.onset_quarters - back.onset_quarters).abs() < 1e-9, "{original:?} {back:?}");
            assert!((original.duration_quarters - back.duration_quarters).abs() < 1e-9, "{original:?} {back:?}");
            // 90 BPM lies between two bins: the clock is corrected as it drifts.
            assert!((original.onset_seconds - back.onset_seconds).abs() <= 0.05, "{original:?} {back:?}");
        }
    }

    #[test]
    fn the_pedal_is_a_press_and_its_length_caught_at_the_chords() {
        let with_pedal = Beats { pedal: true, ..CODEC };
        assert_eq!(with_pedal.vocabulary().len(), CODEC.vocabulary().len() + 1);
        assert!(with_pedal.vocabulary().id("pedal").is_some() && CODEC.vocabulary().id("pedal").is_none());
        let notes = [note(48, 0.0, 1.0, 120.0), note(52, 2.0, 1.0, 120.0), note(55, 4.0, 1.0, 120.0)];
        let press = |onset_quarters, duration_quarters| PedalPress { onset_quarters, duration_quarters };
        // Changed just after each chord (a 32nd late), lifted a 32nd before the next press;
        // a third press with no chord near it; one after the last note.
        let pedal = [press(0.125, 1.75), press(2.125, 1.0), press(3.0, 0.5), press(5.0, 1.0)];
        let tokens = with_pedal.encode(&notes, &Metre::default(), &pedal);
        let texts: Vec<String> = tokens.iter().map(|t| t.text()).collect();
        let pedals: Vec<&[String]> = texts.windows(2).filter(|w| w[0] == "pedal").collect();
        // Onto the chords at 0 and 2, the first held to the second (24 steps); the second
        // lifted where the third goes down, at 3 quarters (its own position, 36).
        assert_eq!(pedals, [&["pedal", "dur:24"][..], &["pedal", "dur:12"], &["pedal", "dur:6"]], "{texts:?}");
        assert!(texts.windows(3).any(|w| w == ["pos:36", "pedal", "dur:6"]), "{texts:?}");
        let score = with_pedal.decode(&tokens, 60.0);
        assert_eq!(score.pedal, [press(0.0, 2.0), press(2.0, 1.0), press(3.0, 0.5)]);
        assert_eq!(score.notes.len(), 3, "the pedal's durations are no notes");
        // Without the pedal in the dictionary, the presses are not written.
        assert_eq!(CODEC.encode(&notes, &Metre::default(), &pedal), CODEC.encode(&notes, &Metre::default(), &[]));
        // Presses written overlapping decode as one pedal: lifted where the next goes down.
        let overlapping = [Token::Position(0), Token::Pedal, Token::Duration(48), Token::Position(12), Token::Pedal];
        let overlapping: Vec<Token> = overlapping.into_iter().chain([Token::Duration(6), Token::Pedal]).collect();
        assert_eq!(with_pedal.decode(&overlapping, 60.0).pedal, [press(0.0, 1.0), press(1.0, 0.5)]);
    }

    #[test]
    fn a_chord_is_its_lowest_key_and_the_steps_above() {
        let notes = [note(48, 0.0, 2.0, 120.0), note(60, 0.0, 2.0, 120.0), note(64, 0.0, 1.0, 120.0)];
        let tokens = CODEC.encode(&notes, &Metre::default(), &[]);
        let notes_written: Vec<String> =
            tokens.iter().filter(|t| matches!(t, Token::Pitch(_) | Token::Above(_))).map(|t| t.text()).collect();
        assert_eq!(notes_written, ["pitch:48", "up:12", "up:4"]);
        let back: Vec<u8> = CODEC.decode(&tokens, 60.0).notes.iter().map(|n| n.pitch).collect();
        assert_eq!(back, [48, 60, 64]);
        // A step with no note below it at its position, or off the keyboard, is no note.
        let stray = [Token::Position(0), Token::Above(4), Token::Duration(3), Token::Pitch(100), Token::Above(9)];
        let stray: Vec<Token> = stray.into_iter().chain([Token::Duration(3)]).collect();
        assert!(CODEC.decode(&stray, 60.0).notes.is_empty());
    }

    #[test]
    fn tempo_tokens_keep_the_seconds_of_a_drifting_tempo() {
        // A ritardando: every quarter note 2 % slower than the one before, over 64 quarters.
        let mut notes = Vec::new();
        let mut seconds = 0.0;
        for quarter in 0..64 {
            let bpm = 120.0 * 0.98f64.powi(quarter);
            notes
                .push(Note { onset_seconds: seconds, ..note(60 + (quarter % 12) as u8, f64::from(quarter), 1.0, bpm) });
            seconds += 60.0 / bpm;
        }
        let score = CODEC.decode(&CODEC.encode(&notes, &Metre::default(), &[]), 60.0);
        for (original, back) in notes.iter().zip(&score.notes) {
            // Within the drift allowed, plus what one bin's error adds over one quarter note.
            let bound = TEMPO_TOLERANCE_SECONDS + 0.03 * 60.0 / 120.0 * 0.98f64.powi(-64);
            assert!((original.onset_seconds - back.onset_seconds).abs() <= bound, "{original:?} {back:?}");
        }
    }

    #[test]
    fn a_steady_tempo_played_unevenly_keeps_a_steady_tempo_token() {
        // Sixteenths at 100 quarter notes a minute, each onset up to 12 ms early or late,
        // as a hand plays them: the tempo sent stays within a bin of 100 and changes rarely.
        let mut jitter = 12345u32;
        let notes: Vec<Note> = (0..256)
            .map(|sixteenth| {
                jitter = jitter.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let off = (f64::from(jitter >> 16) / 65536.0 - 0.5) * 0.024;
                let quarters = f64::from(sixteenth) / 4.0;
                let onset_seconds = (quarters * 0.6 + off).max(0.0);
                Note { onset_seconds, ..note(60 + (sixteenth % 12) as u8, quarters, 0.25, 100.0) }
            })
            .collect();
        let tokens = CODEC.encode(&notes, &Metre::default(), &[]);
        let bins: Vec<i64> = tokens
            .iter()
            .filter_map(|t| if let Token::Tempo(bin) = t { Some(i64::from(*bin)) } else { None })
            .collect();
        let steady = i64::from(CODEC.tempo_bin(100.0));
        assert!(bins.iter().all(|bin| (bin - steady).abs() <= 1), "{bins:?} around {steady}");
        assert!(bins.len() <= 256 / 8, "{} tempo tokens for 256 notes", bins.len());
        let score = CODEC.decode(&tokens, 60.0);
        for (original, back) in notes.iter().zip(&score.notes) {
            assert!((original.onset_seconds - back.onset_seconds).abs() <= 0.05, "{original:?} {back:?}");
        }
    }

    #[test]
    fn a_long_bar_is_written_as_bars_that_keep_the_onsets() {
        let metre = Metre::steady(9, 4, 120.0);
        let notes = vec![note(60, 0.0, 1.0, 120.0), note(62, 8.5, 1.0, 120.0), note(64, 9.0, 1.0, 120.0)];
        let tokens = CODEC.encode(&notes, &metre, &[]);
        let bars: Vec<String> = tokens.iter().filter(|t| matches!(t, Token::Bar { .. })).map(|t| t.text()).collect();
        assert_eq!(bars, ["bar:8/4", "bar:1/4", "bar:8/4"]);
        let score = CODEC.decode(&tokens, 60.0);
        let onsets: Vec<f64> = score.notes.iter().map(|n| n.onset_quarters).collect();
        assert_eq!(onsets, vec![0.0, 8.5, 9.0]);
    }

    #[test]
    fn decoding_is_defensive() {
        let tokens = [
            Token::Duration(3), // no pitch: skipped
            Token::Position(6), // before any bar: 4/4
            Token::Pitch(60),
            Token::Duration(24), // two quarters…
            Token::Position(12),
            Token::Pitch(60), // …cut by the re-strike after one
            Token::Duration(3),
            Token::Bar { numerator: 9, denominator: 4 }, // no such token: skipped
            Token::Bar { numerator: 2, denominator: 4 },
            Token::Position(40), // outside a 2/4 bar: stays at the downbeat
            Token::Pitch(62),
            Token::Duration(192), // 16 quarters at 120 BPM = 8 s, cut to 2 s
        ];
        let score = CODEC.decode(&tokens, 2.0);
        let summary: Vec<(u8, f64, f64)> =
            score.notes.iter().map(|n| (n.pitch, n.onset_quarters, n.duration_quarters)).collect();
        assert_eq!(summary, vec![(60, 0.5, 0.5), (60, 1.0, 0.25), (62, 4.0, 4.0)]);
        assert_eq!(score.metre.signatures.len(), 2);
    }
}
