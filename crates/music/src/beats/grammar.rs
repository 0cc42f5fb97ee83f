//! Grammar-constrained sampling for the `beats` encoding: before each draw, the tokens that
//! would make the score ill-formed get zero probability.
//!
//! - a bar is `bar:N/D`, then a tempo (required after the piece's first bar, optional
//!   after the others), then positions that only move forward
//!   inside the bar (`pos:K` with K past the last one and short of the bar's length);
//! - at a position: optionally one tempo, then notes, the first `[vel:B] pitch:P dur:D`,
//!   each later one `[vel:B] up:K dur:D` (a chord from the bottom up, as the encoder
//!   writes it, so no key twice) and on the keyboard; before the notes, where the
//!   dictionary has it, one `pedal dur:D` (any duration: the pedal is no note, and a
//!   position may hold the pedal alone);
//! - no note while `max_held` notes sound, no duration
//!   that would hold a key longer than `max_note_seconds` at the tempo in force (the
//!   shortest always may);
//! - with `notation_grid`, onsets and note ends on sixteenths and eighth-note triplets only,
//!   and a beat's onsets and ends on one of the two, a note ending on its start's (a
//!   notation program writes a beat that mixes them as a tuplet of 9);
//! - every bar in the piece's metre: the one `Limits::metre` asks for, or else the first
//!   bar's; at most [`MAX_EMPTY_BARS`] bars in a row without a note;
//! - the tempo within `max_tempo_drift` bins of the piece's first tempo: a model samples a
//!   tempo token every few beats, and unbounded, their small steps add up to a random walk
//!   (measured: ×2.5 within a minute, where a minute of the corpus varies by ×1.42 at the
//!   median).
//!
//! So every generated sequence decodes to a score whose bars all have the piece's metre.

use super::{Beats, Clock, POSITIONS_PER_QUARTER, Token, bar_positions, is_metre, key_above};
use crate::note::PIANO_KEYS;

/// Bars in a row with no note that the grammar lets the model write.
pub const MAX_EMPTY_BARS: usize = 2;

/// Grid steps in a beat (a quarter note).
const BEAT: i64 = POSITIONS_PER_QUARTER as i64;

/// Whether grid step `step` divides its beat in triplets (`Some(true)`: 4 or 8 twelfths
/// in) or sixteenths (`Some(false)`: 3, 6 or 9); `None` on the beat or between.
fn subdivision_of(step: i64) -> Option<bool> {
    match step.rem_euclid(BEAT) {
        4 | 8 => Some(true),
        3 | 6 | 9 => Some(false),
        _ => None,
    }
}

/// The limits a [`Grammar`] enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Notes sounding at once (at least 1).
    pub max_held: usize,
    /// Seconds a key may stay down.
    pub max_note_seconds: f64,
    /// The metre every bar must have; `None`: the first bar's.
    pub metre: Option<(u8, u8)>,
    /// Tempo bins the tempo may move above or below the piece's first tempo: rubato, not a
    /// random walk away from the piece's tempo.
    pub max_tempo_drift: u32,
    /// Onsets and note ends only on the sixteenth / eighth-triplet grid ([`crate::on_grid`]),
    /// not on the encoding's finer steps between (32nds and sextuplets, which a notation
    /// program writes as tuplets of 9 or 6).
    pub notation_grid: bool,
}

/// What the last token was, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    Nothing,
    Bar,
    BarTempo,
    Position,
    PositionTempo,
    Velocity,
    Pitch,
    Duration,
    Pedal,
    PedalDuration,
}

/// The running state of a sequence, and the rules.
pub struct Grammar {
    tokens: Vec<Option<Token>>,
    codec: Beats,
    limits: Limits,
    metre: Option<(u8, u8)>,
    after: After,
    /// The bar: its first grid step and length, and the position reached in it.
    bar_start: i64,
    bar_steps: i64,
    started: bool,
    position: Option<i64>,
    notes_in_bar: usize,
    empty_bars: usize,
    /// The highest pitch struck at the current position: a chord is written from the
    /// bottom up, as the encoder writes it.
    highest_here: Option<u8>,
    /// The beat (quarter note, counted in grid steps / 12) whose onsets chose a
    /// subdivision, and whether it is triplets (`true`) or sixteenths.
    subdivision: Option<(i64, bool)>,
    /// Grid steps where the sounding notes end.
    sounding: Vec<i64>,
    /// The decoder's clock, so the grammar knows the tempo and the seconds reached.
    clock: Clock,
    /// The first tempo bin of the piece (generated or primed).
    opening_tempo: Option<u32>,
}

impl Grammar {
    /// Rules for a dictionary (`tokens[id]`) of the `beats` encoding `codec`.
    pub fn new<S: AsRef<str>>(tokens: &[S], codec: Beats, limits: Limits) -> Self {
        Grammar {
            tokens: tokens.iter().map(|t| Token::parse(t.as_ref())).collect(),
            codec,
            limits: Limits { max_held: limits.max_held.max(1), ..limits },
            metre: limits.metre,
            after: After::Nothing,
            bar_start: 0,
            bar_steps: i64::from(super::MAX_BAR_POSITIONS),
            started: false,
            position: None,
            notes_in_bar: 0,
            empty_bars: 0,
            highest_here: None,
            subdivision: None,
            sounding: Vec::new(),
            clock: Clock::new(),
            opening_tempo: None,
        }
    }

    fn step(&self) -> i64 {
        self.bar_start + self.position.unwrap_or(0)
    }

    /// Seconds of music up to the current position.
    pub fn seconds(&self) -> f64 {
        self.clock.seconds_at(self.step())
    }

    /// The current bar: its length in grid steps, and in seconds at the tempo in force.
    pub fn bar(&self) -> (u32, f64) {
        let steps = self.bar_steps as u32;
        (steps, f64::from(steps) / f64::from(POSITIONS_PER_QUARTER) * 60.0 / self.clock.bpm())
    }

    /// Whether token `id` starts a bar.
    pub fn is_bar(&self, id: u32) -> bool {
        matches!(self.token(id), Some(Token::Bar { .. }))
    }

    /// The token `id` names in the dictionary (parsed once, here); `None` for text that is no token.
    pub fn token(&self, id: u32) -> Option<Token> {
        self.tokens.get(id as usize).copied().flatten()
    }

    /// The current position in the bar, in grid steps (0 before the bar's first position).
    pub fn position(&self) -> u32 {
        self.position.unwrap_or(0) as u32
    }

    /// The key token `id` would strike if it came next: a `pitch:P`'s P, an `up:K`'s key K
    /// above the last note struck at this position (`None` where the piano has no such
    /// key), as the decoder reads them; `None` for any other token.
    pub fn strikes(&self, id: u32) -> Option<u8> {
        match self.token(id)? {
            Token::Pitch(pitch) => Some(pitch),
            Token::Above(steps) => key_above(self.highest_here?, steps),
            _ => None,
        }
    }

    /// The note a `dur:D` token `id` would complete if it came next: the key the position's
    /// last note struck and D grid steps; `None` for the pedal's duration and other tokens.
    pub fn completes_note(&self, id: u32) -> Option<(u8, u32)> {
        match (self.after, self.token(id)?) {
            (After::Pitch, Token::Duration(steps)) => Some((self.highest_here?, steps)),
            _ => None,
        }
    }

    /// Records that token `id` was emitted (or fed in as part of a primer).
    pub fn observe(&mut self, id: u32) {
        let Some(token) = self.token(id) else { return };
        match token {
            Token::Bar { numerator, denominator } => {
                if self.started {
                    self.empty_bars = if self.notes_in_bar == 0 { self.empty_bars + 1 } else { 0 };
                    self.bar_start += self.bar_steps;
                }
                self.started = true;
                self.bar_steps = i64::from(bar_positions(numerator, denominator));
                self.metre.get_or_insert((numerator, denominator));
                self.position = None;
                self.notes_in_bar = 0;
                self.highest_here = None;
                self.after = After::Bar;
            }
            Token::Position(k) => {
                // A primer may start inside a bar the grammar never saw begin.
                self.started = true;
                self.position = Some(i64::from(k));
                self.highest_here = None;
                self.divide_beat_at(self.step());
                self.after = After::Position;
            }
            Token::Tempo(bin) => {
                self.opening_tempo.get_or_insert(bin);
                self.clock.change(self.step(), self.codec.bin_tempo(bin));
                self.after = if self.after == After::Bar { After::BarTempo } else { After::PositionTempo };
            }
            Token::Velocity(_) => self.after = After::Velocity,
            Token::Pitch(p) => {
                self.highest_here = Some(p);
                self.after = After::Pitch;
            }
            Token::Above(k) => {
                self.highest_here = self.highest_here.map(|below| below.saturating_add(k));
                self.after = After::Pitch;
            }
            Token::Duration(_) if self.after == After::Pedal => self.after = After::PedalDuration,
            Token::Pedal => self.after = After::Pedal,
            Token::Duration(steps) => {
                let now = self.step();
                self.sounding.retain(|&end| end > now);
                self.sounding.push(now + i64::from(steps));
                if (now + i64::from(steps)).div_euclid(BEAT) == now.div_euclid(BEAT) {
                    self.divide_beat_at(now + i64::from(steps));
                }
                self.notes_in_bar += 1;
                self.after = After::Duration;
            }
        }
    }

    /// Whether token `id` may come next.
    pub fn allows(&self, id: u32) -> bool {
        let Some(token) = self.token(id) else { return false };
        let at_a_position =
            matches!(self.after, After::Position | After::PositionTempo | After::Duration | After::PedalDuration);
        match (self.after, token) {
            (After::Pedal, token) => matches!(token, Token::Duration(_)),
            (After::Pitch, Token::Duration(steps)) => {
                let seconds = f64::from(steps) / f64::from(POSITIONS_PER_QUARTER) * 60.0 / self.clock.bpm();
                // The shortest notes (up to a sixteenth) always may: some duration must.
                let end = self.step() + i64::from(steps);
                (seconds <= self.limits.max_note_seconds || steps <= 4)
                    && self.notated(end)
                    && self.end_keeps_subdivision(end)
            }
            (After::Pitch, _) => false,
            (After::Velocity, Token::Pitch(p)) => self.may_strike(p),
            (After::Velocity, Token::Above(k)) => self.may_strike_above(k),
            (After::Velocity, _) => false,
            // A piece states its tempo right after its first bar line, as every encoded piece
            // does; before it, the decoder could only guess one.
            (After::Bar, token) if self.opening_tempo.is_none() => {
                matches!(token, Token::Tempo(bin) if (1..=self.codec.tempo_bins).contains(&bin))
            }
            (_, Token::Bar { numerator, denominator }) => {
                let too_many_empty = self.started && self.notes_in_bar == 0 && self.empty_bars >= MAX_EMPTY_BARS;
                is_metre(numerator, denominator)
                    && self.metre.is_none_or(|m| m == (numerator, denominator))
                    && (!too_many_empty || !self.may_strike_any())
            }
            (After::Nothing, _) => false,
            (_, Token::Position(k)) => {
                // A position with no note is let past only when no note may start here.
                let moves_on =
                    matches!(self.after, After::Bar | After::BarTempo | After::Duration | After::PedalDuration)
                        || !self.may_strike_any();
                moves_on
                    && i64::from(k) < self.bar_steps
                    && self.position.is_none_or(|p| i64::from(k) > p)
                    && self.notated(self.bar_start + i64::from(k))
                    && self.onset_keeps_subdivision(self.bar_start + i64::from(k))
            }
            (_, Token::Tempo(bin)) => {
                let drift = self.opening_tempo.map_or(0, |opening| bin.abs_diff(opening));
                matches!(self.after, After::Bar | After::Position)
                    && (1..=self.codec.tempo_bins).contains(&bin)
                    && drift <= self.limits.max_tempo_drift
            }
            // A velocity only where some note may follow it.
            (_, Token::Velocity(_)) => {
                at_a_position && self.may_strike_any() && self.highest_here.is_none_or(|h| key_above(h, 1).is_some())
            }
            (_, Token::Pitch(p)) => at_a_position && self.may_strike(p),
            (_, Token::Above(k)) => at_a_position && self.may_strike_above(k),
            (_, Token::Duration(_)) => false,
            (_, Token::Pedal) => matches!(self.after, After::Position | After::PositionTempo),
        }
    }

    /// Whether grid step `step` may hold an onset or a note's end: anywhere, or with
    /// `notation_grid` only on a sixteenth or an eighth-note triplet.
    fn notated(&self, step: i64) -> bool {
        !self.limits.notation_grid || crate::on_grid(step as f64 / f64::from(POSITIONS_PER_QUARTER))
    }

    /// Records the subdivision an onset or a note's end at grid step `step` gives its beat.
    fn divide_beat_at(&mut self, step: i64) {
        if let Some(triplet) = subdivision_of(step) {
            self.subdivision = Some((step.div_euclid(BEAT), triplet));
        }
    }

    /// The subdivision recorded for the beat of grid step `step`, if any.
    fn recorded(&self, step: i64) -> Option<bool> {
        self.subdivision.filter(|&(beat, _)| beat == step.div_euclid(BEAT)).map(|(_, triplet)| triplet)
    }

    /// Whether an onset at grid step `step` keeps its beat divided one way: with
    /// `notation_grid`, a beat's onsets and ends are on sixteenths or on triplets, not both.
    fn onset_keeps_subdivision(&self, step: i64) -> bool {
        !self.limits.notation_grid
            || subdivision_of(step).is_none_or(|kind| self.recorded(step).is_none_or(|beat| beat == kind))
    }

    /// Whether a note starting now may end at grid step `end`: with `notation_grid`, a
    /// note that starts on a triplet ends on the triplet grid, one that starts on a
    /// sixteenth on the sixteenth grid (one on the beat, as its beat is divided).
    fn end_keeps_subdivision(&self, end: i64) -> bool {
        let now = self.step();
        let start = subdivision_of(now).or_else(|| self.recorded(now));
        !self.limits.notation_grid
            || subdivision_of(end).is_none_or(|kind| {
                start.is_none_or(|s| s == kind) && self.recorded(end).is_none_or(|beat| beat == kind)
            })
    }

    /// Whether the first note of the current position may be of pitch `p`.
    fn may_strike(&self, p: u8) -> bool {
        PIANO_KEYS.contains(&p) && self.highest_here.is_none() && self.may_strike_any()
    }

    /// Whether a note `k` semitones above the last one of the current position may start.
    fn may_strike_above(&self, k: u8) -> bool {
        self.highest_here.and_then(|below| key_above(below, k)).is_some() && self.may_strike_any()
    }

    /// Whether fewer than `max_held` notes sound at the current position.
    fn may_strike_any(&self) -> bool {
        let now = self.step();
        self.sounding.iter().filter(|&&end| end > now).count() < self.limits.max_held
    }

    /// Sets the scores of every token that may not come next to −∞.
    pub fn mask(&self, scores: &mut [f32]) {
        crate::grammar::mask_refused(scores, |id| self.allows(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seeded_rng::SeededRng;

    /// What the composer's guards read through the grammar: the key a token strikes, the
    /// note a duration completes (not the pedal's), the position in the bar.
    #[test]
    fn the_grammar_tells_which_key_a_token_strikes_and_which_note_a_duration_ends() {
        let codec = Beats { velocity_bins: 32, tempo_bins: 64, pedal: true };
        let vocabulary = codec.vocabulary();
        let limits =
            Limits { max_held: 6, max_note_seconds: 4.0, metre: None, max_tempo_drift: 3, notation_grid: true };
        let mut grammar = Grammar::new(&vocabulary.tokens, codec, limits);
        let id = |token: &str| vocabulary.id(token).unwrap();
        for token in ["bar:4/4", "tempo:30", "pos:6", "pedal"] {
            grammar.observe(id(token));
        }
        assert_eq!(grammar.position(), 6);
        assert_eq!(grammar.completes_note(id("dur:12")), None, "the pedal's duration");
        for token in ["dur:12", "pitch:100"] {
            grammar.observe(id(token));
        }
        assert_eq!(grammar.completes_note(id("dur:12")), Some((100, 12)));
        assert_eq!(grammar.completes_note(id("pos:12")), None);
        grammar.observe(id("dur:12"));
        assert_eq!(grammar.strikes(id("up:8")), Some(108));
        assert_eq!(grammar.strikes(id("up:9")), None, "above the piano's top key");
        assert_eq!((grammar.strikes(id("pitch:60")), grammar.strikes(id("pos:12"))), (Some(60), None));
        grammar.observe(id("pos:12"));
        assert_eq!((grammar.position(), grammar.strikes(id("up:1"))), (12, None), "no note yet at this position");
    }

    /// Property: under random scores, the constrained sampler writes only well-formed bars
    /// of one metre, which decode to notes that stay inside their bars' grid.
    #[test]
    fn random_scores_never_break_the_grammar() {
        let mut rng = SeededRng::new(5, "beats grammar test");
        for run in 0..30 {
            let codec = Beats { velocity_bins: 32, tempo_bins: 64, pedal: run % 4 < 2 };
            let vocabulary = codec.vocabulary();
            let metre = if run % 2 == 0 { Some((3, 4)) } else { None };
            let notation_grid = run % 3 == 0;
            let limits = Limits { max_held: 6, max_note_seconds: 4.0, metre, max_tempo_drift: 3, notation_grid };
            let mut grammar = Grammar::new(&vocabulary.tokens, codec, limits);
            let mut tokens = Vec::new();
            for _ in 0..600 {
                let mut scores: Vec<f32> = (0..vocabulary.len()).map(|_| rng.unit_f32() * 6.0).collect();
                grammar.mask(&mut scores);
                let allowed: Vec<u32> =
                    (0..scores.len() as u32).filter(|&i| scores[i as usize] > f32::NEG_INFINITY).collect();
                assert!(!allowed.is_empty(), "nothing may come next after {:?}", tokens.last());
                // Drawn uniformly, one pedal token among hundreds would hardly ever come.
                let pedal = vocabulary.id("pedal").filter(|id| allowed.contains(id) && rng.below(2) == 0);
                let id = pedal.unwrap_or_else(|| allowed[rng.below(allowed.len())]);
                grammar.observe(id);
                tokens.push(Token::parse(vocabulary.token(id)).unwrap());
            }
            let tempos: Vec<u32> =
                tokens.iter().filter_map(|t| if let Token::Tempo(bin) = t { Some(*bin) } else { None }).collect();
            assert!(tempos.iter().all(|bin| bin.abs_diff(tempos[0]) <= 3), "the tempo drifted: {tempos:?}");
            let bars: Vec<Token> = tokens.iter().copied().filter(|t| matches!(t, Token::Bar { .. })).collect();
            assert!(bars.windows(2).all(|w| w[0] == w[1]), "the metre changed: {bars:?}");
            if let Some((numerator, denominator)) = metre {
                assert_eq!(bars[0], Token::Bar { numerator, denominator });
            }
            let score = codec.decode(&tokens, 60.0);
            assert_eq!(score.metre.signatures.len(), 1);
            // Every note the grammar let through is a note: no step up from nothing or off
            // the keyboard; every pedal has its duration and comes before a position's notes.
            let after_pedal = |w: &[Token]| w[0] == Token::Pedal;
            assert!(tokens.windows(2).filter(|w| after_pedal(w)).all(|w| matches!(w[1], Token::Duration(_))));
            assert!(
                tokens.windows(2).all(|w| w[1] != Token::Pedal || matches!(w[0], Token::Position(_) | Token::Tempo(_)))
            );
            let pedals = tokens.iter().filter(|t| **t == Token::Pedal).count();
            assert_eq!(pedals > 0, codec.pedal, "{pedals} presses");
            let written = tokens.iter().filter(|t| matches!(t, Token::Duration(_))).count() - pedals;
            assert_eq!(score.notes.len(), written, "{tokens:?}");
            if notation_grid {
                let ends = score.notes.iter().map(|n| n.onset_quarters + n.duration_quarters);
                let onsets = score.notes.iter().map(|n| n.onset_quarters);
                assert_eq!(crate::on_grid_share(onsets.chain(ends)), 1.0, "{tokens:?}");
            }
            // Positions only move forward within a bar, so onsets never go back in time.
            let mut last = (0usize, -1i64);
            let mut bar = 0usize;
            for token in &tokens {
                match token {
                    Token::Bar { .. } => bar += 1,
                    Token::Position(k) => {
                        let now = (bar, i64::from(*k));
                        assert!(now > last, "position went back: {last:?} → {now:?}");
                        last = now;
                    }
                    _ => {}
                }
            }
        }
    }
}
