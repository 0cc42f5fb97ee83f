//! Grammar-constrained sampling for the `performance` encoding: before each draw, the
//! tokens that would make the sequence ill-formed get zero probability.
//!
//! - `on:P` only for the 88 keys of a piano (A0–C8), since the dictionary covers all 128
//!   MIDI pitches;
//! - `off:P` only for a key that is down;
//! - no more than `max_shift_run` time shifts in a row (no runaway silence);
//! - no `on:P` while `max_held` keys are already down;
//! - no `vel:B` right after another `vel:B` (the first would mean nothing);
//! - a key that one more step would keep down longer than `max_note_seconds` is released
//!   next: while one is, its `off:P` is all that may come (a model that forgets a key would
//!   otherwise hold it to the end of the piece). A drawn time shift that would carry a key
//!   past the limit is shortened to end there ([`Grammar::shorten`]); masking such shifts
//!   instead would push their probability onto presses, and the music would thicken.
//!
//! So every generated sequence decodes to notes without orphan releases or endless gaps;
//! the decoder stays defensive all the same.

use crate::note::PIANO_KEYS;
use crate::performance::Event;
use std::collections::BTreeMap;

/// The limits a [`Grammar`] enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Seconds one time-shift step stands for.
    pub step_seconds: f64,
    /// Time shifts in a row (at least 1).
    pub max_shift_run: usize,
    /// Keys down at once (at least 1).
    pub max_held: usize,
    /// Seconds a key may stay down.
    pub max_note_seconds: f64,
}

/// The running state of a sequence, and the rules.
pub struct Grammar {
    /// The event of every token id (`None` for text that is no event).
    events: Vec<Option<Event>>,
    /// The token id of each time shift, by its number of steps.
    shift_ids: BTreeMap<u32, u32>,
    /// The keys down, with the time each was pressed.
    down: BTreeMap<u8, f64>,
    now: f64,
    shift_run: usize,
    last_was_velocity: bool,
    limits: Limits,
}

impl Grammar {
    /// Rules for a dictionary (`tokens[id]`) with the given limits.
    pub fn new<S: AsRef<str>>(tokens: &[S], limits: Limits) -> Self {
        let events: Vec<Option<Event>> = tokens.iter().map(|t| Event::parse(t.as_ref())).collect();
        let shift_ids = (0u32..)
            .zip(&events)
            .filter_map(|(id, event)| match event {
                Some(Event::Shift(steps)) => Some((*steps, id)),
                _ => None,
            })
            .collect();
        Grammar {
            events,
            shift_ids,
            down: BTreeMap::new(),
            now: 0.0,
            shift_run: 0,
            last_was_velocity: false,
            limits: Limits {
                max_shift_run: limits.max_shift_run.max(1),
                max_held: limits.max_held.max(1),
                // A key must be able to sound for one step.
                max_note_seconds: limits.max_note_seconds.max(limits.step_seconds),
                ..limits
            },
        }
    }

    /// The key token `id` presses (`on:P`), if any.
    pub fn strikes(&self, id: u32) -> Option<u8> {
        match self.events.get(id as usize).copied().flatten()? {
            Event::On(pitch) => Some(pitch),
            _ => None,
        }
    }

    /// `id` itself, or for a time shift that would keep a key down longer than a key may be,
    /// the shift that ends exactly when the longest-held key reaches the limit.
    pub fn shorten(&self, id: u32) -> u32 {
        let Some(Event::Shift(steps)) = self.events.get(id as usize).copied().flatten() else { return id };
        let Some(earliest) = self.down.values().copied().reduce(f64::min) else { return id };
        let left = self.limits.max_note_seconds - (self.now - earliest);
        let allowed = ((left + 1e-9) / self.limits.step_seconds).floor().max(1.0) as u32;
        if steps <= allowed {
            return id;
        }
        self.shift_ids.get(&allowed).copied().unwrap_or(id)
    }

    /// Whether key `pitch` must be released before time moves on: one more step would keep
    /// it down longer than a key may be.
    fn overdue(&self, pitch: u8) -> bool {
        self.down
            .get(&pitch)
            .is_some_and(|pressed| self.now + self.limits.step_seconds - pressed > self.limits.max_note_seconds + 1e-9)
    }

    /// Records that token `id` was emitted (or fed in as part of the primer window).
    pub fn observe(&mut self, id: u32) {
        let Some(event) = self.events.get(id as usize).copied().flatten() else { return };
        self.last_was_velocity = matches!(event, Event::Velocity(_));
        match event {
            Event::On(p) => {
                self.down.insert(p, self.now);
                self.shift_run = 0;
            }
            Event::Off(p) => {
                self.down.remove(&p);
                self.shift_run = 0;
            }
            Event::Shift(n) => {
                self.shift_run += 1;
                self.now += f64::from(n) * self.limits.step_seconds;
            }
            Event::Velocity(_) => {}
        }
    }

    /// Whether token `id` may come next.
    pub fn allows(&self, id: u32) -> bool {
        let event = self.events.get(id as usize).copied().flatten();
        if self.down.keys().any(|&p| self.overdue(p)) {
            return matches!(event, Some(Event::Off(p)) if self.overdue(p));
        }
        match event {
            None => false,
            Some(Event::Off(p)) => self.down.contains_key(&p),
            Some(Event::Shift(_)) => self.shift_run < self.limits.max_shift_run,
            Some(Event::On(p)) => PIANO_KEYS.contains(&p) && self.down.len() < self.limits.max_held,
            Some(Event::Velocity(_)) => !self.last_was_velocity,
        }
    }

    /// The releases that close a passage of tokens: one `off:P` for every key whose last
    /// event in `tokens` presses it, so that passage restated leaves no key down.
    pub fn closing_releases(&self, tokens: &[u32]) -> Vec<u32> {
        let mut left_down = BTreeMap::new();
        for &id in tokens {
            match self.events.get(id as usize).copied().flatten() {
                Some(Event::On(p)) => left_down.insert(p, ()),
                Some(Event::Off(p)) => left_down.remove(&p),
                _ => None,
            };
        }
        let off_id = |pitch: u8| self.events.iter().position(|e| *e == Some(Event::Off(pitch))).map(|id| id as u32);
        left_down.into_keys().filter_map(off_id).collect()
    }

    /// Sets the scores of every token that may not come next to −∞.
    pub fn mask(&self, scores: &mut [f32]) {
        mask_refused(scores, |id| self.allows(id));
    }
}

/// Sets the score of every token id that `allows` refuses to −∞, so sampling never draws it.
pub fn mask_refused(scores: &mut [f32], allows: impl Fn(u32) -> bool) {
    for (id, score) in scores.iter_mut().enumerate() {
        if !allows(id as u32) {
            *score = f32::NEG_INFINITY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::performance::Performance;
    use seeded_rng::SeededRng;
    use std::collections::BTreeSet;

    #[test]
    fn closing_releases_end_the_keys_a_passage_leaves_down() {
        let codec = Performance { step_seconds: 0.01, max_shift_steps: 100, velocity_bins: 32 };
        let vocabulary = codec.vocabulary();
        let limits = Limits { step_seconds: 0.01, max_shift_run: 4, max_held: 6, max_note_seconds: 2.0 };
        let grammar = Grammar::new(&vocabulary.tokens, limits);
        let ids = |tokens: &[&str]| -> Vec<u32> { tokens.iter().map(|t| vocabulary.id(t).unwrap()).collect() };
        let passage = ids(&["on:60", "on:64", "shift:10", "off:60", "off:55", "on:67", "shift:5", "off:67", "on:67"]);
        assert_eq!(grammar.closing_releases(&passage), ids(&["off:64", "off:67"]));
    }

    /// A token drawn with probability ∝ exp(score); −∞ (masked) never.
    fn draw(scores: &[f32], rng: &mut SeededRng) -> u32 {
        let weights: Vec<f64> = scores.iter().map(|&s| f64::from(s).exp()).collect();
        let mut left = rng.unit_f64() * weights.iter().sum::<f64>();
        let last = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
        weights
            .iter()
            .position(|&w| {
                left -= w;
                w > 0.0 && left < 0.0
            })
            .unwrap_or(last) as u32
    }

    /// Property: under random scores, the constrained sampler never produces an ill-formed
    /// sequence, and the sequence decodes to exactly the notes its presses start.
    #[test]
    fn random_scores_never_break_the_grammar() {
        let codec = Performance { step_seconds: 0.01, max_shift_steps: 100, velocity_bins: 32 };
        let vocabulary = codec.vocabulary();
        let mut rng = SeededRng::new(11, "grammar test");
        for run in 0..40 {
            let limits = Limits { step_seconds: 0.01, max_shift_run: 4, max_held: 6, max_note_seconds: 2.0 };
            let mut grammar = Grammar::new(&vocabulary.tokens, limits);
            let mut events = Vec::new();
            let (mut shift_run, mut down) = (0usize, BTreeSet::new());
            let longest_allowed = 2.0;
            for _ in 0..500 {
                // Skewed random scores: some runs favour releases or shifts heavily.
                let mut scores: Vec<f32> =
                    (0..vocabulary.len()).map(|_| rng.unit_f32() * 8.0 * (run % 4) as f32).collect();
                grammar.mask(&mut scores);
                let id = grammar.shorten(draw(&scores, &mut rng));
                assert!(grammar.allows(id), "sampled a masked token");
                grammar.observe(id);
                let event = Event::parse(vocabulary.token(id)).unwrap();
                match event {
                    Event::Off(p) => assert!(down.remove(&p), "released key {p}, which was not down"),
                    Event::On(p) => {
                        assert!(PIANO_KEYS.contains(&p), "pressed key {p}, which no piano has");
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
            let longest = decoded.iter().map(|n| n.duration_seconds).fold(0.0, f64::max);
            assert!(longest <= longest_allowed + 1e-9, "a key was held {longest} s");
        }
    }
}
