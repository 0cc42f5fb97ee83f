//! The music figures `evaluate` reports for each generated piece and for the validation
//! pieces, by the split's definitions in [`crate::quality`]: the seven histograms, and per
//! piece repetition, pulse, notes per second and onsets on the grid. There is one
//! definition of each measure in the project, so `make evaluate` and `make quality` agree
//! about the same piece; this module only pools them and adds the KL divergence beside
//! the overlap (after Yang & Lerch, "On the evaluation of generative models in music",
//! 2020).

use crate::quality::{self, HISTOGRAM_NAMES, Histograms};
use artifacts::Note;
use serde::Serialize;

/// The figures of one piece or of several pooled. Invariant: the histograms are
/// [`Histograms::of`] the same pieces, and the per-piece figures are means over them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MusicStats {
    pub notes: usize,
    pub seconds: f64,
    pub notes_per_second: f64,
    pub lowest_pitch: u8,
    pub highest_pitch: u8,
    pub mean_pitch: f64,
    /// Share of the pitch sequence's 4-grams that recur in their piece (mean over pieces).
    pub repetition: f64,
    /// Share of the commonest inter-onset interval (mean over pieces).
    pub pulse: f64,
    /// Share of onsets on the sixteenth / eighth-triplet grid (mean over pieces).
    pub onsets_on_grid: f64,
    pub histograms: Histograms,
}

impl MusicStats {
    /// Figures of pieces pooled together; each piece is a list of notes in any order.
    pub fn of(pieces: &[Vec<Note>]) -> MusicStats {
        let figures: Vec<quality::PieceFigures> =
            pieces.iter().map(|p| quality::piece_figures("", (p, &[], &[]), &[])).collect();
        let mean = |figure: fn(&quality::PieceFigures) -> f64| {
            figures.iter().map(figure).sum::<f64>() / figures.len().max(1) as f64
        };
        let all = || pieces.iter().flatten();
        let notes = all().count();
        let seconds: f64 = figures.iter().map(|f| f.seconds).sum();
        MusicStats {
            notes,
            seconds,
            notes_per_second: notes as f64 / seconds.max(1e-9),
            lowest_pitch: all().map(|n| n.pitch).min().unwrap_or(0),
            highest_pitch: all().map(|n| n.pitch).max().unwrap_or(0),
            mean_pitch: all().map(|n| f64::from(n.pitch)).sum::<f64>() / notes.max(1) as f64,
            repetition: mean(|f| f.repetition),
            pulse: mean(|f| f.pulse),
            onsets_on_grid: mean(|f| f.onsets_on_grid),
            histograms: Histograms::of(pieces),
        }
    }
}

/// KL(p ‖ q) in nats, with both smoothed by 1e-6 so an empty bin of `q` stays finite.
pub fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    const EPS: f64 = 1e-6;
    let (sp, sq) = (1.0 + EPS * p.len() as f64, 1.0 + EPS * q.len() as f64);
    p.iter()
        .zip(q)
        .map(|(a, b)| {
            let (a, b) = ((a + EPS) / sp, (b + EPS) / sq);
            a * (a / b).ln()
        })
        .sum()
}

/// One histogram of a generated set against the reference's: their overlap (as
/// [`Histograms::overlaps`]) and the KL divergence of the generated from the reference.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub statistic: &'static str,
    pub overlap: f64,
    pub kl_divergence: f64,
}

/// The seven histograms of `generated` against `reference`, in [`HISTOGRAM_NAMES`] order.
pub fn compare(generated: &MusicStats, reference: &MusicStats) -> Vec<Comparison> {
    let overlaps = generated.histograms.overlaps(&reference.histograms);
    let pairs = generated.histograms.all().into_iter().zip(reference.histograms.all());
    HISTOGRAM_NAMES
        .iter()
        .zip(overlaps)
        .zip(pairs)
        .map(|((&statistic, overlap), (p, q))| Comparison { statistic, overlap, kl_divergence: kl_divergence(p, q) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(pitch: u8, onset: f64, duration: f64, velocity: u8) -> Note {
        Note::of_score(pitch, velocity, onset * 2.0, duration * 2.0, 120.0)
    }

    #[test]
    fn identical_distributions_diverge_not_at_all() {
        let p = [0.2, 0.3, 0.5];
        assert!(kl_divergence(&p, &p).abs() < 1e-9);
        assert!(kl_divergence(&[1.0, 0.0], &[0.0, 1.0]) > 10.0);
    }

    #[test]
    fn a_known_piece_measures_as_quality_measures_it() {
        // C major triad held 1 s, then E alone 0.5 s later; velocities 64 and 100.
        let piece =
            vec![note(60, 0.0, 1.0, 64), note(64, 0.0, 1.0, 64), note(67, 0.0, 1.0, 64), note(64, 1.5, 0.5, 100)];
        let s = MusicStats::of(std::slice::from_ref(&piece));
        assert_eq!((s.notes, s.lowest_pitch, s.highest_pitch), (4, 60, 67));
        assert!((s.seconds - 2.0).abs() < 1e-12 && (s.notes_per_second - 2.0).abs() < 1e-12);
        assert_eq!(s.histograms, Histograms::of(std::slice::from_ref(&piece)), "quality's own histograms");
        assert!((s.histograms.pitch_class[4] - 0.5).abs() < 1e-12, "E is half the notes");
        assert_eq!(s.pulse, quality::piece_figures("", (&piece, &[], &[]), &[]).pulse);
        let comparison = compare(&s, &s);
        assert_eq!(comparison.len(), 7);
        assert!(comparison.iter().all(|c| (c.overlap - 1.0).abs() < 1e-12 && c.kl_divergence.abs() < 1e-9));
    }
}
