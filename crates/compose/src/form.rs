//! Form: phrases that come back.
//!
//! An LSTM sampled one token at a time wanders: in 60 seconds of its music almost no 4-note
//! pattern recurs, where real pieces repeat half of theirs (motifs, sequences, repeated
//! bars). So the composer plans the form the network cannot: the music is cut into phrases
//! of `compose.phrase_seconds`, and when a phrase ends, with probability `compose.repeat`
//! the next one restates an earlier drawn phrase of the same piece, chosen at random. A
//! restatement is fed through the network token by token like the primer window, so the state that
//! continues afterwards has heard it, and the grammar still rules every token:
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

/// How a piece is cut into phrases and how often one comes back.
#[derive(Clone, Copy, Debug)]
pub struct Form {
    /// Seconds of music in a phrase (a phrase ends with the time shift that reaches it).
    pub phrase_seconds: f64,
    /// Probability, at each phrase's end, that the next phrase restates an earlier one
    /// (0 = never: every token is drawn from the network).
    pub repeat: f64,
}

/// The phrases of one piece being generated, and the restatement under way.
pub struct Phrases {
    form: Form,
    /// Token ranges (in the generated tokens) of the drawn phrases that have ended.
    finished: Vec<Range<usize>>,
    /// Where the current phrase starts, and the music time at which it may end.
    current_start: usize,
    current_end: f64,
    /// Tokens of the restatement still to come.
    restating: VecDeque<u32>,
    current_is_restatement: bool,
}

impl Phrases {
    pub fn new(form: Form) -> Self {
        Phrases {
            form,
            finished: Vec::new(),
            current_start: 0,
            current_end: form.phrase_seconds,
            restating: VecDeque::new(),
            current_is_restatement: false,
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

    /// Called after each token joins `generated`, with the music time it reached: ends the
    /// phrase once its time is up (and no restatement is under way), and decides whether
    /// the next one restates an earlier phrase. `closing` gives the tokens that end what a
    /// phrase leaves open (keys it presses and releases only after it ends), appended to its
    /// restatement so that none stays down.
    pub fn after_token(
        &mut self,
        generated: &[u32],
        elapsed: f64,
        closing: impl Fn(&[u32]) -> Vec<u32>,
        rng: &mut SeededRng,
    ) {
        if !self.restating.is_empty() || elapsed < self.current_end {
            return;
        }
        // Only drawn phrases are restated: a restatement restated again would let whichever
        // phrase came back first crowd out the rest.
        if !self.current_is_restatement {
            self.finished.push(self.current_start..generated.len());
        }
        self.current_is_restatement = false;
        self.current_start = generated.len();
        self.current_end = elapsed + self.form.phrase_seconds;
        // No draw at all when repetition is off, so such pieces keep their random stream.
        if self.form.repeat > 0.0 && rng.unit_f64() < self.form.repeat {
            let earlier = self.finished[rng.below(self.finished.len())].clone();
            let phrase = &generated[earlier];
            self.restating.extend(phrase);
            self.current_is_restatement = true;
            self.restating.extend(closing(phrase));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens 0..=9 are presses, 100 is a one-second time shift.
    const SHIFT: u32 = 100;

    fn generate(form: Form, allows: impl Fn(u32) -> bool, length: usize) -> Vec<u32> {
        let mut phrases = Phrases::new(form);
        let mut rng = SeededRng::new(5, "form test");
        let (mut generated, mut elapsed, mut fresh) = (Vec::new(), 0.0, 0u32);
        while generated.len() < length {
            let id = phrases.next_restated(&allows, |id| id == SHIFT).unwrap_or_else(|| {
                // A stand-in network: a new press, then a shift, in turn.
                fresh += 1;
                if fresh % 2 == 0 { SHIFT } else { fresh % 10 }
            });
            generated.push(id);
            elapsed += if id == SHIFT { 1.0 } else { 0.0 };
            phrases.after_token(&generated, elapsed, |_| Vec::new(), &mut rng);
        }
        generated
    }

    #[test]
    fn without_repeat_every_token_is_drawn() {
        let drawn = generate(Form { phrase_seconds: 2.0, repeat: 0.0 }, |_| true, 40);
        let presses: Vec<u32> = drawn.iter().copied().filter(|&id| id != SHIFT).collect();
        assert_eq!(presses[..5], [1, 3, 5, 7, 9]);
    }

    #[test]
    fn with_repeat_always_the_first_phrase_comes_back_whole() {
        let generated = generate(Form { phrase_seconds: 2.0, repeat: 1.0 }, |_| true, 60);
        // The first phrase is drawn (press, shift, press, shift); every later one restates it.
        let phrases: Vec<&[u32]> = generated.chunks(4).collect();
        assert_eq!(phrases[0], [1, SHIFT, 3, SHIFT]);
        assert!(phrases.len() > 10 && phrases.iter().all(|phrase| phrase[..] == phrases[0][..phrase.len()]));
    }

    #[test]
    fn refused_presses_are_dropped_and_refused_shifts_wait() {
        let mut phrases = Phrases::new(Form { phrase_seconds: 1.0, repeat: 1.0 });
        let mut rng = SeededRng::new(1, "t");
        phrases.after_token(&[3, 4, SHIFT], 1.0, |_| vec![7], &mut rng);
        // The press of 3 is refused and dropped; 4 comes; the shift waits while refused.
        assert_eq!(phrases.next_restated(|id| id != 3, |id| id == SHIFT), Some(4));
        assert_eq!(phrases.next_restated(|id| id != SHIFT, |id| id == SHIFT), None);
        assert_eq!(phrases.next_restated(|_| true, |id| id == SHIFT), Some(SHIFT));
        assert_eq!(phrases.next_restated(|_| true, |id| id == SHIFT), Some(7), "the closing release");
        assert_eq!(phrases.next_restated(|_| true, |id| id == SHIFT), None);
    }
}
