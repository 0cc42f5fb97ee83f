//! The close: a `beats` piece ends as a piece, not where its time runs out.
//!
//! Cut at the bar line that reached `compose.seconds`, the composer's pieces stopped
//! mid-phrase: of 144 (eighteen seeds) none had its last onset on a downbeat, 12 % ended on
//! the key's tonic chord over the tonic, and that last onset was one note a sixteenth or so
//! long at the median, at the piece's tempo. The 266 training pieces of piano-midi.de end
//! on the tonic chord over the tonic in 71 % (by a key profile, which misreads some keys), on
//! a downbeat in 60 %, with four notes struck and held a quarter note at the median, the
//! bar before 1.16 and the last onset 1.29 times as slow as the piece's median tempo
//! (docs/music.md, An ending).
//!
//! The network cannot learn that: it reads windows of 100 tokens, never a piece's end. So,
//! as the form does for phrases, the composer plans it (`compose.ending = "cadence"`):
//!
//! - **where**: in the last bar of the phrase whose end is nearest the asked length, so a
//!   piece is whole phrases and lasts within about half a phrase of `compose.seconds`;
//! - **the last phrase** brings back the piece's first (unless it was just heard) until the
//!   close takes over: a recapitulation. Without it, the restatement a close cut short
//!   took the 4-note repetition figure from 0.436 to 0.391 over eighteen seeds; with it, 0.437;
//! - **the bar before**: the network's, but its notes and pedal end by its bar line, so the
//!   last chord sounds alone;
//! - **the last bar**: one chord, struck on its downbeat and held to the bar's end, over the
//!   tonic of the key the piece's notes sound in (read from them, so a model trained in
//!   every key closes in the key it wrote in), of that key's tonic triad. The network still
//!   chooses within those bounds: the register and voicing, how many notes (at least
//!   [`LEAST_FINAL_NOTES`]), their loudness, the pedal;
//! - **how fast**: the bar before at the piece's median tempo, the last chord slower,
//!   [`RITARDANDO`] (applied to the decoded score).
//!
//! The bounds are masks on the network's scores after the grammar's, as the key guard's
//! are; a final bar the grammar leaves no chord in (every key already held) ends empty, and
//! `compose.tokens` still cuts a piece that reaches it first.

use artifacts::Encoding;
use music::PIANO_KEYS;
use music::beats::grammar::Grammar;
use music::beats::{POSITIONS_PER_QUARTER, Token};
use music::key::Key;

/// Notes the final chord holds at least, as a triad does.
pub const LEAST_FINAL_NOTES: usize = 3;

/// The tempo of the last two bars as a share of the piece's median tempo, each bar at one
/// tempo: the second last at the median (a tempo that wandered is steadied there), the last
/// chord 1.29 times as long as a bar at it, the training pieces' median slowing at their
/// last onset. The training pieces also slow the bar before it (1.16 times at the median);
/// slowed so, the composed pieces' pulse figure fell from 0.429 to 0.405 over eighteen seeds
/// (docs/music.md, An ending), so that bar keeps the piece's pace.
pub const RITARDANDO: [f64; 2] = [1.0, 1.0 / 1.29];

/// Where a piece stands with its close.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    /// No close is planned: the piece is cut where its time or tokens run out.
    Off,
    /// The music goes on; each bar line asks whether the close begins.
    Open,
    /// The last phrase, until its second last bar: it brings back the piece's first.
    LastPhrase,
    /// The second last bar, of this many grid steps: its notes and pedal end by its end,
    /// so the final chord sounds alone.
    Approach { steps: u32 },
    /// In the final bar.
    Final(FinalBar),
    /// The final chord is complete and the piece has ended.
    Ended,
}

/// The final bar and its chord so far.
#[derive(Clone, Copy, Debug, PartialEq)]
struct FinalBar {
    /// The key the piece's notes sound in, whose tonic triad the chord is.
    key: Key,
    /// The bar's length in grid steps: the chord's notes last that long.
    steps: u32,
    /// Whether the downbeat's `pos:0` has come, and the chord's notes struck.
    on_downbeat: bool,
    struck: usize,
}

impl FinalBar {
    /// Whether the chord's next note may be `pitch` and still leave room on the keyboard for
    /// the notes it lacks: each triad tone has another at most a fourth (5 semitones) above.
    fn leaves_room(&self, pitch: u8) -> bool {
        let lacking_after = LEAST_FINAL_NOTES.saturating_sub(self.struck + 1) as u8;
        pitch.saturating_add(5 * lacking_after) <= *PIANO_KEYS.end()
    }
}

/// What of the close a bar line begins ([`Close::at_bar_line`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begins {
    Nothing,
    /// The piece's last phrase: the form brings back its first phrase here.
    LastPhrase,
    /// The second last bar (or the last): the close writes what follows, no restatement.
    Approach,
}

/// The close of one piece being composed, and the one thing it reads of the piece on the
/// way that the grammar does not keep. Where the piece stands in its bar, which key a
/// token strikes, and what a token is, it asks the piece's `beats` grammar: every method
/// that reads the piece takes it (`None` for the other encodings, which never close).
pub struct Close {
    stage: Stage,
    /// `compose.seconds`, and the phrase's length in bars.
    seconds: f64,
    phrase_bars: usize,
    /// Quarter notes sounded so far on each pitch class, each note counted up to a whole
    /// note: what the key is read from.
    weights: [f64; 12],
}

impl Close {
    /// The close of a piece of `seconds` (0: of `compose.tokens`, never closed) in phrases of
    /// `phrase_bars`; planned only for a `beats` model with `planned` set.
    pub fn new(encoding: &Encoding, planned: bool, seconds: f64, phrase_bars: usize) -> Close {
        let beats = matches!(encoding, Encoding::Beats { .. });
        let stage = if planned && beats && seconds > 0.0 { Stage::Open } else { Stage::Off };
        Close { stage, seconds, phrase_bars: phrase_bars.max(1), weights: [0.0; 12] }
    }

    /// Whether the piece's end is planned here, rather than cut at `compose.seconds`.
    pub fn planned(&self) -> bool {
        self.stage != Stage::Off
    }

    pub fn ended(&self) -> bool {
        self.stage == Stage::Ended
    }

    /// At a bar line that began a bar of `bar_steps` grid steps, `bar_seconds` long at the
    /// tempo in force, `seconds_before` into the piece, with `bars_left` bars of its phrase
    /// to come (this one included): what of the close begins here. The phrase whose end is
    /// nearer the asked length than the next phrase's would be is the last; its last two
    /// bars are the close's.
    pub fn at_bar_line(
        &mut self,
        (bar_steps, bar_seconds): (u32, f64),
        seconds_before: f64,
        bars_left: usize,
    ) -> Begins {
        let half_a_phrase = bar_seconds * self.phrase_bars as f64 / 2.0;
        let last_phrase = seconds_before + bars_left as f64 * bar_seconds >= self.seconds - half_a_phrase;
        match self.stage {
            Stage::Open if last_phrase && bars_left > 2 && bars_left == self.phrase_bars => {
                self.stage = Stage::LastPhrase;
                Begins::LastPhrase
            }
            Stage::Open | Stage::LastPhrase if (last_phrase || self.stage == Stage::LastPhrase) && bars_left == 2 => {
                self.stage = Stage::Approach { steps: bar_steps };
                Begins::Approach
            }
            Stage::Open if last_phrase && bars_left == 1 => {
                self.begin_final_bar(bar_steps);
                Begins::Approach
            }
            Stage::Approach { .. } => {
                self.begin_final_bar(bar_steps);
                Begins::Nothing
            }
            _ => Begins::Nothing,
        }
    }

    fn begin_final_bar(&mut self, steps: u32) {
        let key = Key::of(&self.weights);
        self.stage = Stage::Final(FinalBar { key, steps, on_downbeat: false, struck: 0 });
    }

    /// Whether token `id`, drawn in the final bar, ends the piece instead of joining it:
    /// a bar line or a later position, once the chord has come (or none can).
    pub fn ends_with(&self, grammar: Option<&Grammar>, id: u32) -> bool {
        let (Stage::Final(bar), Some(grammar)) = (self.stage, grammar) else { return false };
        match grammar.token(id) {
            Some(Token::Bar { .. }) => true,
            Some(Token::Position(k)) => k > 0 || bar.on_downbeat,
            _ => false,
        }
    }

    /// Records that the piece ended (with a token [`Close::ends_with`] accepted).
    pub fn end(&mut self) {
        self.stage = Stage::Ended;
    }

    /// Records token `id`, which joins the piece (primer tokens too), before `grammar`
    /// records it.
    pub fn observe(&mut self, grammar: Option<&Grammar>, id: u32) {
        let Some(grammar) = grammar.filter(|_| self.planned()) else { return };
        if let Some((pitch, steps)) = grammar.completes_note(id) {
            let quarters = f64::from(steps.min(4 * POSITIONS_PER_QUARTER)) / f64::from(POSITIONS_PER_QUARTER);
            self.weights[usize::from(pitch % 12)] += quarters;
        }
        if let Stage::Final(bar) = &mut self.stage {
            match grammar.token(id) {
                Some(Token::Position(0)) => bar.on_downbeat = true,
                Some(Token::Pitch(_) | Token::Above(_)) => bar.struck += 1,
                _ => {}
            }
        }
    }

    /// Masks (sets to −∞) what the close does not allow among what the grammar left
    /// (`scores` already masked by it). In the second last bar: a note or pedal that would
    /// sound past its end. In the final bar: anything but the downbeat, a lowest note off
    /// the tonic, a note above it off the tonic triad (or either too high for the notes
    /// the chord still lacks), a duration other than the longest allowed up to the bar's
    /// end, and the end before the chord is complete; where that would leave nothing, the
    /// piece may only end. Where a rule would leave nothing at all, the scores are left
    /// as they are.
    pub fn mask(&self, grammar: Option<&Grammar>, scores: &mut [f32]) {
        let Some(grammar) = grammar else { return };
        let allowed = |id: usize| scores[id] > f32::NEG_INFINITY;
        let duration = |id: usize| match grammar.token(id as u32) {
            Some(Token::Duration(steps)) => Some(steps),
            _ => None,
        };
        match self.stage {
            Stage::Approach { steps: bar_steps } => {
                let fits = |id: usize| duration(id).is_none_or(|steps| grammar.position() + steps <= bar_steps);
                keep_only(scores, &[&fits]);
            }
            Stage::Final(bar) => {
                // The chord's notes and its pedal last as long as the grammar allows, up to the bar's end.
                let held =
                    (0..scores.len()).filter(|&id| allowed(id)).filter_map(duration).filter(|&d| d <= bar.steps).max();
                let complete = bar.struck >= LEAST_FINAL_NOTES;
                let ends = |id: usize| self.ends_with(Some(grammar), id as u32);
                let chord = |id: usize| match grammar.token(id as u32) {
                    Some(Token::Position(0)) => !bar.on_downbeat,
                    Some(Token::Bar { .. } | Token::Position(_)) => complete && ends(id),
                    Some(Token::Pitch(pitch)) => {
                        bar.on_downbeat && pitch % 12 == bar.key.tonic && bar.leaves_room(pitch)
                    }
                    Some(Token::Above(_)) => grammar
                        .strikes(id as u32)
                        .is_some_and(|pitch| bar.key.triad_holds(pitch) && bar.leaves_room(pitch)),
                    Some(Token::Duration(steps)) => Some(steps) == held,
                    Some(Token::Tempo(_) | Token::Velocity(_) | Token::Pedal) => true,
                    None => false,
                };
                keep_only(scores, &[&chord, &ends]);
            }
            Stage::Off | Stage::Open | Stage::LastPhrase | Stage::Ended => {}
        }
    }
}

/// Masks every score but those the first of `rules` keeps that keeps one still allowed;
/// leaves `scores` alone where none does.
fn keep_only(scores: &mut [f32], rules: &[&dyn Fn(usize) -> bool]) {
    let keeps_one =
        |rule: &&dyn Fn(usize) -> bool| scores.iter().enumerate().any(|(id, &s)| s > f32::NEG_INFINITY && rule(id));
    if let Some(rule) = rules.iter().find(|rule| keeps_one(rule)) {
        music::grammar::mask_refused(scores, |id| rule(id as usize));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use music::beats::Beats;
    use music::beats::grammar::{Grammar, Limits};
    use seeded_rng::SeededRng;

    /// Property: whatever a network scores, in every metre the second last bar's notes end
    /// by its end, and the final bar holds one chord on its downbeat, over the tonic of the
    /// key the notes before sound in, of its tonic triad, of at least three notes held to
    /// the bar's end; then the piece ends.
    #[test]
    fn the_close_ends_on_the_tonic_chord_alone_on_the_last_downbeat() {
        let codec = Beats { velocity_bins: 32, tempo_bins: 64, pedal: true };
        let vocabulary = codec.vocabulary();
        let mut rng = SeededRng::new(3, "ending test");
        let metres = [((4, 4), false), ((3, 4), true), ((6, 8), false), ((2, 4), true)];
        for (run, (metre, minor)) in metres.into_iter().cycle().take(24).enumerate() {
            let limits =
                Limits { max_held: 12, max_note_seconds: 10.0, metre: None, max_tempo_drift: 3, notation_grid: true };
            let mut grammar = Grammar::new(&vocabulary.tokens, codec, limits);
            let beats = Encoding::Beats { velocity_bins: 32, tempo_bins: 64 };
            let mut close = Close::new(&beats, true, 60.0, 4);
            let mut written: Vec<Token> = Vec::new();
            let write = |id: u32, grammar: &mut Grammar, close: &mut Close, written: &mut Vec<Token>| {
                close.observe(Some(grammar), id);
                grammar.observe(id);
                written.push(Token::parse(vocabulary.token(id)).unwrap());
            };
            // A bar of A minor's tonic chord and a few of its notes, or of C major's.
            let bar = format!("bar:{}/{}", metre.0, metre.1);
            let tonic_chord = if minor {
                "pitch:45 dur:12 up:15 dur:12 up:4 dur:12"
            } else {
                "pitch:48 dur:12 up:16 dur:12 up:3 dur:12"
            };
            let run_up = if minor {
                "pos:12 pitch:59 dur:6 pos:18 pitch:57 dur:6"
            } else {
                "pos:12 pitch:62 dur:6 pos:18 pitch:60 dur:6"
            };
            let opening = format!("{bar} tempo:30 pos:0 {tonic_chord} {run_up} {bar}");
            for token in opening.split(' ') {
                write(vocabulary.id(token).unwrap(), &mut grammar, &mut close, &mut written);
            }
            assert_eq!(close.at_bar_line(grammar.bar(), 8.0, 4), Begins::Nothing, "a phrase ending far from 60 s");
            assert_eq!(close.at_bar_line(grammar.bar(), 8.0, 2), Begins::Nothing, "a phrase ending far from 60 s");
            assert_eq!(close.at_bar_line(grammar.bar(), 50.0, 3), Begins::Nothing, "no phrase's start");
            assert_eq!(close.at_bar_line(grammar.bar(), 50.0, 4), Begins::LastPhrase);
            assert_eq!(close.at_bar_line(grammar.bar(), 50.0, 3), Begins::Nothing);
            assert_eq!(close.at_bar_line(grammar.bar(), 56.0, 2), Begins::Approach);
            let mut final_bar_line = None;
            loop {
                let mut scores: Vec<f32> = (0..vocabulary.len()).map(|_| rng.unit_f32() * 8.0).collect();
                grammar.mask(&mut scores);
                close.mask(Some(&grammar), &mut scores);
                let allowed: Vec<u32> = (0..scores.len() as u32).filter(|&i| scores[i as usize].is_finite()).collect();
                let next = allowed[rng.below(allowed.len())];
                if close.ends_with(Some(&grammar), next) {
                    close.end();
                    break;
                }
                write(next, &mut grammar, &mut close, &mut written);
                if grammar.is_bar(next) {
                    assert!(final_bar_line.is_none(), "run {run}: a bar after the final one");
                    assert_eq!(close.at_bar_line(grammar.bar(), 58.0, 1), Begins::Nothing);
                    final_bar_line = Some(written.len());
                }
                assert!(written.len() < 400, "run {run}: no end in {written:?}");
            }
            assert!(close.ended() && final_bar_line.is_some());
            let score = codec.decode(&written, 60.0);
            let bar_quarters = f64::from(metre.0) * 4.0 / f64::from(metre.1);
            let (before, last): (Vec<_>, Vec<_>) =
                score.notes.iter().partition(|n| n.onset_quarters < 2.0 * bar_quarters - 1e-9);
            let end_of = |n: &&music::Note| n.onset_quarters + n.duration_quarters;
            assert!(before.iter().all(|n| end_of(n) <= 2.0 * bar_quarters + 1e-9), "run {run}: {written:?}");
            assert!(last.len() >= LEAST_FINAL_NOTES, "run {run}: {written:?}");
            // The key of the notes before, each weighed by its length up to a whole note.
            let mut weights = [0.0; 12];
            before.iter().for_each(|n| weights[usize::from(n.pitch % 12)] += n.duration_quarters.min(4.0));
            let key = Key::of(&weights);
            assert_eq!(last.iter().map(|n| n.pitch).min().unwrap() % 12, key.tonic, "run {run}: {written:?}");
            for note in &last {
                assert!(key.triad_holds(note.pitch), "run {run}: {written:?}");
                let place = (note.onset_quarters, note.duration_quarters);
                assert_eq!(place, (2.0 * bar_quarters, bar_quarters), "run {run}: {written:?}");
            }
        }
    }

    #[test]
    fn no_close_for_other_encodings_a_cut_or_a_length_in_tokens() {
        let beats = Encoding::Beats { velocity_bins: 32, tempo_bins: 64 };
        assert!(Close::new(&beats, true, 60.0, 4).planned());
        assert!(!Close::new(&beats, false, 60.0, 4).planned());
        assert!(!Close::new(&beats, true, 0.0, 4).planned());
        let performance = Encoding::Performance { step_ms: 10, max_shift_steps: 100, velocity_bins: 32 };
        assert!(!Close::new(&performance, true, 60.0, 4).planned());
    }
}
