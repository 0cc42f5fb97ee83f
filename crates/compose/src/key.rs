//! Keeping a piece in a key while it is sampled.
//!
//! A network trained on pieces in every key does not hold one by itself: the `beats` base
//! model trained so put 58 % of its probability for an onset's lowest note on the piece's
//! scale, no more than the scale's seven of twelve keys, and composing alone wrote 63 % of
//! its notes in their best-fitting scale, below every set of real excerpts (docs/music.md,
//! "A key"). The `beats` base model is now trained in one key (`encode.in_c`) and keeps it
//! itself (81 %); for a model trained in every key the composer can keep one, as its
//! grammar keeps bars: with `compose.in_key` above 0, the share of the piece's notes
//! (primer included) in their best-fitting scale never falls below it. While an out-of-key
//! note would keep it there, the network's choice is left alone; when it would not, only
//! notes in that scale may be drawn, with the probability the network gave to playing a
//! note at all (masking the others and leaving the rest as it was thinned the chords: 10.4
//! notes a second fell to 7.6 in one seed). A model that holds a key by itself is rarely
//! touched.

use artifacts::{Encoding, Vocabulary};
use music::beats::Token;
use music::key::{PitchClassCounts, Scale};
use music::performance::Event;

/// Notes heard before the guard acts: a scale fitted to fewer says little.
const FIRST_NOTES_FREE: usize = 8;

/// What a token plays.
#[derive(Clone, Copy)]
enum Plays {
    Nothing,
    /// This key.
    Pitch(u8),
    /// The key this many semitones above the note before it at the same onset (`beats`).
    Above(u8),
}

/// The key guard of one piece: what it has played so far, and which tokens play what.
pub struct KeyGuard {
    /// `compose.in_key`: the least share of notes in their best-fitting scale; 0 = no guard.
    least: f64,
    /// Per token id.
    plays: Vec<Plays>,
    counts: PitchClassCounts,
    notes: usize,
    /// The last note played, for `beats`' steps above it.
    last: Option<u8>,
}

impl KeyGuard {
    /// A guard for a model's dictionary; `names` tokens play no single key and are never held back.
    pub fn new(encoding: &Encoding, vocabulary: &Vocabulary, least: f64) -> KeyGuard {
        let plays = vocabulary
            .tokens
            .iter()
            .map(|token| match encoding {
                Encoding::Beats { .. } => match Token::parse(token) {
                    Some(Token::Pitch(pitch)) => Plays::Pitch(pitch),
                    Some(Token::Above(steps)) => Plays::Above(steps),
                    _ => Plays::Nothing,
                },
                Encoding::Performance { .. } => match Event::parse(token) {
                    Some(Event::On(pitch)) => Plays::Pitch(pitch),
                    _ => Plays::Nothing,
                },
                Encoding::Names { .. } => Plays::Nothing,
            })
            .collect();
        KeyGuard { least, plays, counts: [0; 12], notes: 0, last: None }
    }

    /// The key token `id` plays after what was played so far, if any.
    fn pitch_of(&self, id: u32) -> Option<u8> {
        match self.plays[id as usize] {
            Plays::Nothing => None,
            Plays::Pitch(pitch) => Some(pitch),
            Plays::Above(steps) => self.last.map(|below| below.saturating_add(steps)),
        }
    }

    /// Counts the note token `id` plays (primer and generated tokens alike).
    pub fn observe(&mut self, id: u32) {
        if let Some(pitch) = self.pitch_of(id) {
            self.counts[usize::from(pitch % 12)] += 1;
            self.notes += 1;
            self.last = Some(pitch);
        }
    }

    /// When one more note outside the best-fitting scale would bring the piece's share in
    /// it below the least: masks (sets to −∞) the tokens that would play such a note and
    /// gives their probability, at sampling `temperature`, to the tokens playing notes in
    /// the scale, so the network still decides whether a note is played and the guard only
    /// which. Leaves `scores` alone where no note in the scale is allowed.
    pub fn mask(&self, scores: &mut [f32], temperature: f64) {
        if self.least <= 0.0 || self.notes < FIRST_NOTES_FREE {
            return;
        }
        let scale = Scale::best_fit(&self.counts);
        if scale.held(&self.counts) as f64 / (self.notes + 1) as f64 >= self.least {
            return;
        }
        // (token, in the scale) for every note token still allowed.
        let notes: Vec<(usize, bool)> = (0..scores.len())
            .filter(|&id| scores[id] > f32::NEG_INFINITY)
            .filter_map(|id| self.pitch_of(id as u32).map(|pitch| (id, scale.holds(pitch))))
            .collect();
        let top = notes.iter().map(|&(id, _)| f64::from(scores[id])).fold(f64::NEG_INFINITY, f64::max);
        let weight = |id: usize| ((f64::from(scores[id]) - top) / temperature).exp();
        let all: f64 = notes.iter().map(|&(id, _)| weight(id)).sum();
        let held: f64 = notes.iter().filter(|(_, in_scale)| *in_scale).map(|&(id, _)| weight(id)).sum();
        if held <= 0.0 {
            return;
        }
        let raise = (temperature * (all / held).ln()) as f32;
        for (id, in_scale) in notes {
            scores[id] = if in_scale { scores[id] + raise } else { f32::NEG_INFINITY };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The share of the guard's notes so far in their best-fitting scale.
    fn share(guard: &KeyGuard) -> f64 {
        Scale::best_fit(&guard.counts).held(&guard.counts) as f64 / guard.notes.max(1) as f64
    }

    fn beats_guard(least: f64) -> (KeyGuard, Vocabulary) {
        let tokens: Vec<String> = (21..=108)
            .map(|p| format!("pitch:{p}"))
            .chain((1..=12).map(|k| format!("up:{k}")))
            .chain(["pos:0".to_string()])
            .collect();
        let vocabulary = Vocabulary::from_tokens(tokens);
        (KeyGuard::new(&Encoding::Beats { velocity_bins: 32, tempo_bins: 64 }, &vocabulary, least), vocabulary)
    }

    #[test]
    fn notes_out_of_key_are_drawn_only_while_the_share_stays_at_the_least() {
        let (mut guard, vocabulary) = beats_guard(0.8);
        let id = |token: &str| vocabulary.tokens.iter().position(|t| t == token).unwrap() as u32;
        // Ten notes of C major: C D E F G A B C, then E a third above C, G a third above that.
        for token in ["pitch:60", "pitch:62", "pitch:64", "pitch:65", "pitch:67", "pitch:69", "pitch:71", "pitch:72"] {
            guard.observe(id(token));
        }
        guard.observe(id("pitch:48"));
        guard.observe(id("up:4"));
        assert_eq!(share(&guard), 1.0);
        // 10 of 11 would stay at least 0.8: nothing is masked.
        let mut scores = vec![0.0f32; vocabulary.tokens.len()];
        guard.mask(&mut scores, 1.0);
        assert!(scores.iter().all(|s| s.is_finite()));
        // Two out-of-key notes later (10 of 12), a third would make 10 of 13 < 0.8.
        guard.observe(id("pitch:61"));
        guard.observe(id("pitch:66"));
        let probabilities = |scores: &[f32]| {
            let total: f64 = scores.iter().map(|&s| f64::from(s).exp()).sum();
            scores.iter().map(|&s| f64::from(s).exp() / total).collect::<Vec<f64>>()
        };
        let before = probabilities(&scores);
        guard.mask(&mut scores, 1.0);
        assert_eq!(scores[id("pitch:61") as usize], f32::NEG_INFINITY);
        // Whether a note is played stays the network's choice: the one other token keeps its
        // probability, and the notes in the scale keep their proportions.
        let after = probabilities(&scores);
        let (position, c, d) = (id("pos:0") as usize, id("pitch:60") as usize, id("pitch:62") as usize);
        assert!((after[position] - before[position]).abs() < 1e-6, "{} -> {}", before[position], after[position]);
        assert!(after[c] > before[c] && (after[c] / after[d] - 1.0).abs() < 1e-6);
        assert!(scores[id("pitch:62") as usize].is_finite());
        // F♯ was the last note: a step of 1 above it (G) is in key, of 2 (G♯) is not.
        assert!(scores[id("up:1") as usize].is_finite());
        assert_eq!(scores[id("up:2") as usize], f32::NEG_INFINITY);
    }

    #[test]
    fn no_guard_at_zero_before_the_first_notes_or_where_it_would_leave_nothing() {
        let (mut guard, vocabulary) = beats_guard(0.0);
        let id = |token: String| vocabulary.tokens.iter().position(|t| *t == token).unwrap() as u32;
        let chromatic: Vec<u32> = (60..72).map(|p| id(format!("pitch:{p}"))).collect();
        chromatic.iter().for_each(|&id| guard.observe(id));
        let mut scores = vec![0.0f32; vocabulary.tokens.len()];
        guard.mask(&mut scores, 1.0);
        assert!(scores.iter().all(|s| s.is_finite()));
        let (mut guard, _) = beats_guard(1.0);
        chromatic.iter().take(FIRST_NOTES_FREE - 1).for_each(|&id| guard.observe(id));
        guard.mask(&mut scores, 1.0);
        assert!(scores.iter().all(|s| s.is_finite()), "too few notes to fit a scale to");
        chromatic.iter().skip(FIRST_NOTES_FREE - 1).for_each(|&id| guard.observe(id));
        // 7 of 12 in C major (the best fit with no sharps or flats), below the least: only
        // C major's notes may follow, unless nothing else is allowed.
        let mut scores = vec![0.0f32; vocabulary.tokens.len()];
        guard.mask(&mut scores, 1.0);
        assert_eq!(scores[chromatic[1] as usize], f32::NEG_INFINITY);
        assert!(scores[chromatic[0] as usize].is_finite());
        let c_sharp = chromatic[1] as usize;
        let mut only_out: Vec<f32> =
            (0..vocabulary.tokens.len()).map(|id| if id == c_sharp { 0.0 } else { f32::NEG_INFINITY }).collect();
        guard.mask(&mut only_out, 1.0);
        assert_eq!(only_out[c_sharp], 0.0);
    }
}
