//! Form: phrases that come back.
//!
//! An LSTM sampled one token at a time wanders: in 60 seconds of its music almost no 4-note
//! pattern recurs, where real pieces repeat half of theirs (motifs, sequences, repeated
//! bars). So the composer plans the form the network cannot: the music is cut into phrases
//! of `compose.phrase_seconds` (or, for a `beats` model, of `compose.phrase_bars` whole
//! bars, each starting on a downbeat), and when a phrase ends, with probability `compose.repeat`
//! the next one restates an earlier drawn phrase of the same piece, chosen at random among
//! all but the one just heard. Real music brings a phrase back after another (A B A), hardly
//! ever straight after itself: in the first 32 bars of the corpus's pieces 1.5 % of four-bar
//! phrases are alike the one before and 8 % the one before that, and one piece in 210 plays
//! one three times in a row. Choosing among every earlier phrase, the composer put a phrase
//! straight after itself 14 % of the time and played one three or more times in a row in
//! 14 % of its pieces (docs/music.md, A phrase never straight after itself).
//!
//! A restatement is fed through the network token by token like the primer window, so the
//! state that continues afterwards has heard it, and the grammar still rules every token:
//!
//! - a press or release it refuses (a key that is not down, too many keys down) is left out;
//! - a time shift it refuses (a key that must be released first, too many shifts in a row)
//!   waits while the network draws the token the grammar needs.
//!
//! Only the piece's own material comes back, never the training data's, so memorisation
//! is not raised (in measurement it fell: the runs copied from training pieces got shorter).

use seeded_rng::SeededRng;
use std::collections::VecDeque;
use std::ops::Range;

/// How long a phrase is.
#[derive(Clone, Copy, Debug)]
pub enum Length {
    /// Seconds of music (a phrase ends with the time shift that reaches it).
    Seconds(f64),
    /// Whole bars: a phrase starts with a bar token and ends before the bar token that
    /// begins its successor.
    Bars(usize),
}

/// How a piece is cut into phrases and how often one comes back.
#[derive(Clone, Copy, Debug)]
pub struct Form {
    pub length: Length,
    /// Probability, at each phrase's end, that the next phrase restates an earlier one
    /// (0 = never: every token is drawn from the network).
    pub repeat: f64,
}

/// The phrases of one piece being generated, and the restatement under way.
pub struct Phrases {
    form: Form,
    /// Token ranges (in the generated tokens) of the drawn phrases that have ended.
    finished: Vec<Range<usize>>,
    /// Where the current phrase starts (`None` in bars before the first bar token), and
    /// the music time (seconds, or bars begun) at which it may end.
    current_start: Option<usize>,
    current_end: f64,
    /// Tokens of the restatement still to come.
    restating: VecDeque<u32>,
    /// Which of `finished` the current phrase restates (`None`: it is being drawn).
    current_restates: Option<usize>,
    /// Which of `finished` the phrase before the current one was, or restated.
    just_heard: Option<usize>,
}

impl Phrases {
    pub fn new(form: Form) -> Self {
        let (current_start, current_end) = match form.length {
            Length::Seconds(seconds) => (Some(0), seconds),
            Length::Bars(_) => (None, 0.0),
        };
        Phrases {
            form,
            finished: Vec::new(),
            current_start,
            current_end,
            restating: VecDeque::new(),
            current_restates: None,
            just_heard: None,
        }
    }

    /// The next token of the restatement under way that `allows` accepts, or `None` when the
    /// network should draw this token: no restatement, or its next token is a time shift
    /// (`keeps_time`) that must wait. Refused presses, releases and velocities are dropped.
    pub fn next_restated(&mut self, allows: impl Fn(u32) -> bool, keeps_time: impl Fn(u32) -> bool) -> Option<u32> {
        while let Some(&id) = self.restating.front() {
            if allows(id) {
                return self.restating.pop_front();
            }
            if keeps_time(id) {
                return None;
            }
            self.restating.pop_front();
        }
        None
    }

    /// Called after each token joins `generated`, with where the music stands: ends the
    /// phrase once its time is up (and no restatement is under way), and decides whether
    /// the next one restates an earlier phrase. `closing` gives the tokens that end what a
    /// phrase leaves open (keys it presses and releases only after it ends), appended to its
    /// restatement so that none stays down.
    pub fn after_token(
        &mut self,
        generated: &[u32],
        at: Position,
        closing: impl Fn(&[u32]) -> Vec<u32>,
        rng: &mut SeededRng,
    ) {
        if !self.restating.is_empty() {
            return;
        }
        // Where the phrase that ends now ends, and where the next one starts.
        let (end, next_start, next_end) = match self.form.length {
            Length::Seconds(seconds) => {
                if at.seconds < self.current_end {
                    return;
                }
                (generated.len(), generated.len(), at.seconds + seconds)
            }
            Length::Bars(bars) => {
                if !at.starts_bar {
                    return;
                }
                let next_end = (at.bars + bars) as f64;
                if self.current_start.is_none() || (at.bars as f64) < self.current_end {
                    // The first downbeat begins the first phrase; bars before it are no phrase.
                    if self.current_start.is_none() {
                        (self.current_start, self.current_end) = (Some(generated.len() - 1), next_end);
                    }
                    return;
                }
                (generated.len() - 1, generated.len() - 1, next_end)
            }
        };
        let start = self.current_start.unwrap_or(0);
        // Only drawn phrases are restated: a restatement restated again would let whichever
        // phrase came back first crowd out the rest.
        let just_heard = match self.current_restates.take() {
            Some(restated) => Some(restated),
            None if end > start => {
                self.finished.push(start..end);
                Some(self.finished.len() - 1)
            }
            None => None,
        };
        self.just_heard = just_heard;
        self.current_start = Some(next_start);
        self.current_end = next_end;
        let candidates: Vec<usize> = (0..self.finished.len()).filter(|&i| Some(i) != just_heard).collect();
        // No draw at all when repetition is off, so such pieces keep their random stream.
        if self.form.repeat > 0.0 && !candidates.is_empty() && rng.unit_f64() < self.form.repeat {
            let chosen = candidates[rng.below(candidates.len())];
            self.restate(chosen, generated, closing);
        }
    }

    /// Makes the phrase just begun restate `finished[chosen]`.
    fn restate(&mut self, chosen: usize, generated: &[u32], closing: impl Fn(&[u32]) -> Vec<u32>) {
        // A phrase in bars begins with its bar token, and a bar token has just begun this one.
        let skip = usize::from(matches!(self.form.length, Length::Bars(_)));
        let phrase = &generated[self.finished[chosen].clone()];
        self.restating.clear();
        self.restating.extend(&phrase[skip.min(phrase.len())..]);
        self.current_restates = Some(chosen);
        self.restating.extend(closing(phrase));
    }

    /// Bars of the current phrase still to come, the one just begun included (`None` for
    /// phrases in seconds, or before the first downbeat).
    pub fn bars_left(&self, at: Position) -> Option<usize> {
        match self.form.length {
            Length::Bars(_) if self.current_start.is_some() => {
                Some((self.current_end as usize).saturating_sub(at.bars))
            }
            _ => None,
        }
    }

    /// Leaves off the restatement under way: the piece's close takes over.
    pub fn stop_restating(&mut self) {
        self.restating.clear();
    }

    /// Makes the phrase just begun (its bar token the last of `generated`) restate the
    /// piece's first drawn phrase, as a recapitulation before the close, unless that is the
    /// phrase just heard or none has ended yet. `closing` as in [`Phrases::after_token`].
    pub fn restate_first(&mut self, generated: &[u32], closing: impl Fn(&[u32]) -> Vec<u32>) {
        if !self.finished.is_empty() && self.just_heard != Some(0) {
            self.restate(0, generated, closing);
        }
    }
}

/// Where the music stands after a token.
#[derive(Clone, Copy, Debug, Default)]
pub struct Position {
    /// Seconds of music so far.
    pub seconds: f64,
    /// Bars begun so far, and whether this token began one.
    pub bars: usize,
    pub starts_bar: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every token but this one is a press; this one is a one-second time shift.
    const SHIFT: u32 = 1_000_000;

    fn generate(form: Form, allows: impl Fn(u32) -> bool, length: usize) -> Vec<u32> {
        let mut phrases = Phrases::new(form);
        let mut rng = SeededRng::new(5, "form test");
        let (mut generated, mut elapsed, mut fresh) = (Vec::new(), 0.0, 0u32);
        while generated.len() < length {
            let id = phrases.next_restated(&allows, |id| id == SHIFT).unwrap_or_else(|| {
                // A stand-in network: a new press, then a shift, in turn.
                fresh += 1;
                if fresh % 2 == 0 { SHIFT } else { fresh }
            });
            generated.push(id);
            elapsed += if id == SHIFT { 1.0 } else { 0.0 };
            let at = Position { seconds: elapsed, ..Position::default() };
            phrases.after_token(&generated, at, |_| Vec::new(), &mut rng);
        }
        generated
    }

    #[test]
    fn without_repeat_every_token_is_drawn() {
        let drawn = generate(Form { length: Length::Seconds(2.0), repeat: 0.0 }, |_| true, 40);
        let presses: Vec<u32> = drawn.iter().copied().filter(|&id| id != SHIFT).collect();
        assert_eq!(presses[..5], [1, 3, 5, 7, 9]);
    }

    #[test]
    fn with_repeat_always_two_phrases_take_turns_and_none_follows_itself() {
        let generated = generate(Form { length: Length::Seconds(2.0), repeat: 1.0 }, |_| true, 60);
        // The first phrase is drawn (press, shift, press, shift); the second is drawn too,
        // since the only earlier phrase is the one just heard; then each restates the other.
        let phrases: Vec<&[u32]> = generated.chunks(4).collect();
        assert_eq!(phrases[0], [1, SHIFT, 3, SHIFT]);
        assert_eq!(phrases[1], [5, SHIFT, 7, SHIFT]);
        assert!(phrases.len() > 10);
        for (i, phrase) in phrases.iter().enumerate() {
            assert_eq!(phrase[..], phrases[i % 2][..phrase.len()], "phrase {i} of {phrases:?}");
        }
    }

    #[test]
    fn a_restatement_is_never_of_the_phrase_just_heard() {
        // Phrases of one second: a press then a shift. At repeat 0.5 over many phrases,
        // restatements come from several earlier phrases, never the one that just ended
        // (drawn, or itself restated).
        let generated = generate(Form { length: Length::Seconds(1.0), repeat: 0.5 }, |_| true, 2000);
        let phrases: Vec<&[u32]> = generated.chunks(2).collect();
        let mut restated = 0;
        for pair in phrases.windows(2) {
            assert_ne!(pair[0], pair[1], "a phrase straight after itself in {phrases:?}");
            restated += usize::from(phrases[..phrases.len() - 1].iter().filter(|p| *p == &pair[1]).count() > 1);
        }
        assert!(restated > 200, "restatements happen: {restated}");
    }

    #[test]
    fn the_last_phrase_brings_back_the_first_unless_it_was_just_heard() {
        let mut phrases = Phrases::new(Form { length: Length::Seconds(1.0), repeat: 0.0 });
        let mut rng = SeededRng::new(1, "t");
        let second = |s: f64| Position { seconds: s, ..Position::default() };
        phrases.restate_first(&[], |_| Vec::new());
        assert_eq!(phrases.next_restated(|_| true, |_| false), None, "no phrase has ended");
        // Phrases [3, SHIFT] and [4, SHIFT] end; the next brings back the first, not the second.
        phrases.after_token(&[3, SHIFT], second(1.0), |_| Vec::new(), &mut rng);
        phrases.after_token(&[3, SHIFT, 4, SHIFT], second(2.0), |_| Vec::new(), &mut rng);
        phrases.restate_first(&[3, SHIFT, 4, SHIFT], |_| vec![9]);
        let restated: Vec<u32> = std::iter::from_fn(|| phrases.next_restated(|_| true, |_| false)).collect();
        assert_eq!(restated, [3, SHIFT, 9]);
        // After it ends, the first was just heard: the phrase after it is drawn.
        phrases.after_token(&[3, SHIFT, 4, SHIFT, 3, SHIFT], second(3.0), |_| Vec::new(), &mut rng);
        phrases.restate_first(&[3, SHIFT, 4, SHIFT, 3, SHIFT], |_| Vec::new());
        assert_eq!(phrases.next_restated(|_| true, |_| false), None);
    }

    #[test]
    fn refused_presses_are_dropped_and_refused_shifts_wait() {
        let mut phrases = Phrases::new(Form { length: Length::Seconds(1.0), repeat: 1.0 });
        let mut rng = SeededRng::new(1, "t");
        // Two phrases end; the second is followed by the first, restated.
        phrases.after_token(&[3, 4, SHIFT], Position { seconds: 1.0, ..Position::default() }, |_| vec![7], &mut rng);
        assert_eq!(phrases.next_restated(|_| true, |id| id == SHIFT), None, "the only phrase was just heard");
        let at = Position { seconds: 2.0, ..Position::default() };
        phrases.after_token(&[3, 4, SHIFT, 8, SHIFT], at, |_| vec![7], &mut rng);
        // The press of 3 is refused and dropped; 4 comes; the shift waits while refused.
        assert_eq!(phrases.next_restated(|id| id != 3, |id| id == SHIFT), Some(4));
        assert_eq!(phrases.next_restated(|id| id != SHIFT, |id| id == SHIFT), None);
        assert_eq!(phrases.next_restated(|_| true, |id| id == SHIFT), Some(SHIFT));
        assert_eq!(phrases.next_restated(|_| true, |id| id == SHIFT), Some(7), "the closing release");
        assert_eq!(phrases.next_restated(|_| true, |id| id == SHIFT), None);
    }

    #[test]
    fn phrases_in_bars_start_on_a_downbeat_and_come_back_whole() {
        // Token 0 begins a bar; the others are notes. Two tokens of anacrusis, then bars of
        // three tokens; phrases of two bars, always restated.
        const BAR: u32 = 0;
        let mut phrases = Phrases::new(Form { length: Length::Bars(2), repeat: 1.0 });
        let mut rng = SeededRng::new(3, "bars test");
        let (mut generated, mut bars, mut fresh) = (Vec::new(), 0usize, 10u32);
        let mut network = |position: usize| -> u32 {
            fresh += 1;
            if position >= 2 && (position - 2).is_multiple_of(3) { BAR } else { fresh }
        };
        while generated.len() < 40 {
            let id = phrases.next_restated(|_| true, |_| false).unwrap_or_else(|| network(generated.len()));
            generated.push(id);
            bars += usize::from(id == BAR);
            phrases.after_token(
                &generated,
                Position { bars, starts_bar: id == BAR, ..Position::default() },
                |_| Vec::new(),
                &mut rng,
            );
        }
        // The first phrase is bars 1–2 (tokens 2..8), the second bars 3–4 (drawn, as the
        // first was just heard); every later phrase of two bars restates the one before last.
        let first_two = [&generated[2..8], &generated[8..14]];
        assert_eq!(first_two[0][0], BAR);
        assert_eq!(first_two[0][3], BAR);
        assert_ne!(first_two[0], first_two[1]);
        for (i, phrase) in generated[2..].chunks(6).filter(|p| p.len() == 6).enumerate() {
            assert_eq!(phrase, first_two[i % 2], "phrase {i} of {generated:?}");
        }
    }
}
