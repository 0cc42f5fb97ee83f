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

use music::key::{PitchClassCounts, Scale};

/// Notes heard before the guard acts: a scale fitted to fewer says little.
const FIRST_NOTES_FREE: usize = 8;

/// The key guard of one piece: what it has played so far. Which key a token strikes is
/// the grammar's to say (`Rules::strikes`): a `beats` step above the note before it
/// depends on where the piece stands.
pub struct KeyGuard {
    /// `compose.in_key`: the least share of notes in their best-fitting scale; 0 = no guard.
    least: f64,
    counts: PitchClassCounts,
    notes: usize,
}

impl KeyGuard {
    pub fn new(least: f64) -> KeyGuard {
        KeyGuard { least, counts: [0; 12], notes: 0 }
    }

    /// Counts a token that joined the piece (primer and generated alike), striking `pitch` if any.
    pub fn observe(&mut self, pitch: Option<u8>) {
        if let Some(pitch) = pitch {
            self.counts[usize::from(pitch % 12)] += 1;
            self.notes += 1;
        }
    }

    /// When one more note outside the best-fitting scale would bring the piece's share in
    /// it below the least: masks (sets to −∞) the tokens that would play such a note and
    /// gives their probability, at sampling `temperature`, to the tokens playing notes in
    /// the scale, so the network still decides whether a note is played and the guard only
    /// which. Leaves `scores` alone where no note in the scale is allowed.
    /// `strikes(id)`: the key token `id` would strike next, if any.
    pub fn mask(&self, scores: &mut [f32], temperature: f64, strikes: impl Fn(u32) -> Option<u8>) {
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
            .filter_map(|id| strikes(id as u32).map(|pitch| (id, scale.holds(pitch))))
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

    /// A dictionary of `pitch:21` … `pitch:108` (ids 0–87), `up:1` … `up:12` (88–99) and a
    /// token that plays nothing (100), and the key each would strike after `last`.
    const NOTHING: u32 = 100;
    fn pitch(p: u8) -> u32 {
        u32::from(p) - 21
    }
    fn strikes(last: u8) -> impl Fn(u32) -> Option<u8> {
        move |id| match id {
            0..88 => Some(id as u8 + 21),
            88..100 => Some(last + (id - 87) as u8),
            _ => None,
        }
    }

    #[test]
    fn notes_out_of_key_are_drawn_only_while_the_share_stays_at_the_least() {
        let mut guard = KeyGuard::new(0.8);
        // Ten notes of C major: C D E F G A B C, C3 and the E above it.
        for p in [60, 62, 64, 65, 67, 69, 71, 72, 48, 52] {
            guard.observe(Some(p));
        }
        guard.observe(None);
        assert_eq!((share(&guard), guard.notes), (1.0, 10));
        // 10 of 11 would stay at least 0.8: nothing is masked.
        let mut scores = vec![0.0f32; 101];
        guard.mask(&mut scores, 1.0, strikes(52));
        assert!(scores.iter().all(|s| s.is_finite()));
        // Two out-of-key notes later (10 of 12), a third would make 10 of 13 < 0.8.
        guard.observe(Some(61));
        guard.observe(Some(66));
        let probabilities = |scores: &[f32]| {
            let total: f64 = scores.iter().map(|&s| f64::from(s).exp()).sum();
            scores.iter().map(|&s| f64::from(s).exp() / total).collect::<Vec<f64>>()
        };
        let before = probabilities(&scores);
        guard.mask(&mut scores, 1.0, strikes(66));
        assert_eq!(scores[pitch(61) as usize], f32::NEG_INFINITY);
        // Whether a note is played stays the network's choice: the one other token keeps its
        // probability, and the notes in the scale keep their proportions.
        let after = probabilities(&scores);
        let (nothing, c, d) = (NOTHING as usize, pitch(60) as usize, pitch(62) as usize);
        assert!((after[nothing] - before[nothing]).abs() < 1e-6, "{} -> {}", before[nothing], after[nothing]);
        assert!(after[c] > before[c] && (after[c] / after[d] - 1.0).abs() < 1e-6);
        assert!(scores[d].is_finite());
        // F♯ was the last note: a step of 1 above it (G) is in key, of 2 (G♯) is not.
        assert!(scores[88].is_finite());
        assert_eq!(scores[89], f32::NEG_INFINITY);
    }

    #[test]
    fn no_guard_at_zero_before_the_first_notes_or_where_it_would_leave_nothing() {
        let mut guard = KeyGuard::new(0.0);
        (60..72).for_each(|p| guard.observe(Some(p)));
        let mut scores = vec![0.0f32; 101];
        guard.mask(&mut scores, 1.0, strikes(71));
        assert!(scores.iter().all(|s| s.is_finite()));
        let mut guard = KeyGuard::new(1.0);
        (60..72).take(FIRST_NOTES_FREE - 1).for_each(|p| guard.observe(Some(p)));
        guard.mask(&mut scores, 1.0, strikes(66));
        assert!(scores.iter().all(|s| s.is_finite()), "too few notes to fit a scale to");
        (60..72).skip(FIRST_NOTES_FREE - 1).for_each(|p| guard.observe(Some(p)));
        // 7 of 12 in C major (the best fit with no sharps or flats), below the least: only
        // C major's notes may follow, unless nothing else is allowed.
        guard.mask(&mut scores, 1.0, strikes(71));
        assert_eq!(scores[pitch(61) as usize], f32::NEG_INFINITY);
        assert!(scores[pitch(60) as usize].is_finite());
        let c_sharp = pitch(61) as usize;
        let mut only_out: Vec<f32> = (0..101).map(|id| if id == c_sharp { 0.0 } else { f32::NEG_INFINITY }).collect();
        guard.mask(&mut only_out, 1.0, strikes(71));
        assert_eq!(only_out[c_sharp], 0.0);
    }
}
