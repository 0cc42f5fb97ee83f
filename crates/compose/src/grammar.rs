//! Grammar-constrained sampling for the `performance` encoding: before each draw, the
//! tokens that would make the sequence ill-formed get zero probability.
//!
//! - `on:P` only for the 88 keys of a piano (A0–C8), since the dictionary covers all 128
//!   MIDI pitches;
//! - `off:P` only for a key that is down;
//! - no more than `max_shift_run` time shifts in a row (no runaway silence);
//! - no `on:P` while `max_held` keys are already down;
//! - no `vel:B` right after another `vel:B` (the first would mean nothing).
//!
//! So every generated sequence decodes to notes without orphan releases or endless gaps;
//! the decoder stays defensive all the same.

use encode::performance::Event;
use std::collections::BTreeSet;

/// The running state of a sequence, and the rules.
pub struct Grammar {
    /// The event of every token id (`None` for text that is no event).
    events: Vec<Option<Event>>,
    down: BTreeSet<u8>,
    shift_run: usize,
    last_was_velocity: bool,
    max_shift_run: usize,
    max_held: usize,
}

impl Grammar {
    /// Rules for a dictionary (`tokens[id]`) with the given limits (each at least 1).
    pub fn new<S: AsRef<str>>(tokens: &[S], max_shift_run: usize, max_held: usize) -> Self {
        Grammar {
            events: tokens.iter().map(|t| Event::parse(t.as_ref())).collect(),
            down: BTreeSet::new(),
            shift_run: 0,
            last_was_velocity: false,
            max_shift_run: max_shift_run.max(1),
            max_held: max_held.max(1),
        }
    }

    /// Records that token `id` was emitted (or fed in as part of the seed).
    pub fn observe(&mut self, id: u32) {
        let Some(event) = self.events.get(id as usize).copied().flatten() else { return };
        self.last_was_velocity = matches!(event, Event::Velocity(_));
        match event {
            Event::On(p) => {
                self.down.insert(p);
                self.shift_run = 0;
            }
            Event::Off(p) => {
                self.down.remove(&p);
                self.shift_run = 0;
            }
            Event::Shift(_) => self.shift_run += 1,
            Event::Velocity(_) => {}
        }
    }

    /// Whether token `id` may come next.
    pub fn allows(&self, id: u32) -> bool {
        match self.events.get(id as usize).copied().flatten() {
            None => false,
            Some(Event::Off(p)) => self.down.contains(&p),
            Some(Event::Shift(_)) => self.shift_run < self.max_shift_run,
            Some(Event::On(p)) => (21..=108).contains(&p) && self.down.len() < self.max_held,
            Some(Event::Velocity(_)) => !self.last_was_velocity,
        }
    }

    /// Sets the scores of every token that may not come next to −∞.
    pub fn mask(&self, scores: &mut [f32]) {
        for (id, score) in scores.iter_mut().enumerate() {
            if !self.allows(id as u32) {
                *score = f32::NEG_INFINITY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use encode::performance::Performance;
    use seeded_rng::SeededRng;

    /// Property: under random scores, the constrained sampler never produces an ill-formed
    /// sequence, and the sequence decodes to exactly the notes its presses start.
    #[test]
    fn random_scores_never_break_the_grammar() {
        let codec = Performance { step_seconds: 0.01, max_shift_steps: 100, velocity_bins: 32 };
        let vocabulary = codec.vocabulary();
        let mut rng = SeededRng::new(11, "grammar test");
        for run in 0..40 {
            let mut grammar = Grammar::new(&vocabulary.tokens, 4, 6);
            let mut events = Vec::new();
            let (mut shift_run, mut down) = (0usize, BTreeSet::new());
            for _ in 0..500 {
                // Skewed random scores: some runs favour releases or shifts heavily.
                let mut scores: Vec<f32> =
                    (0..vocabulary.len()).map(|_| rng.unit_f32() * 8.0 * (run % 4) as f32).collect();
                grammar.mask(&mut scores);
                let id = crate::sample(&scores, 1.0, 0, 1.0, &mut rng);
                assert!(grammar.allows(id), "sampled a masked token");
                grammar.observe(id);
                let event = Event::parse(vocabulary.token(id)).unwrap();
                match event {
                    Event::Off(p) => assert!(down.remove(&p), "released key {p}, which was not down"),
                    Event::On(p) => {
                        assert!((21..=108).contains(&p), "pressed key {p}, which no piano has");
                        down.insert(p);
                    }
                    _ => {}
                }
                shift_run = if matches!(event, Event::Shift(_)) {
                    shift_run + 1
                } else if matches!(event, Event::Velocity(_)) {
                    shift_run
                } else {
                    0
                };
                assert!(shift_run <= 4 && down.len() <= 6);
                events.push(event);
            }
            let presses = events.iter().filter(|e| matches!(e, Event::On(_))).count();
            let decoded = codec.decode(&events, 10.0);
            assert!(decoded.len() <= presses && decoded.iter().all(|n| n.duration_seconds > 0.0));
        }
    }
}
