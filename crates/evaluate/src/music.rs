//! Music statistics of a set of notes, and how close two such sets are.
//!
//! Each statistic is a normalised histogram; two are compared by their overlap (the area
//! the two share, 0–1; 1 for identical distributions) and by the KL divergence of the
//! generated distribution from the reference one, in the spirit of Yang & Lerch, "On the
//! evaluation of generative models in music" (2020).

use ::music::TimedNote;
use serde::Serialize;

/// Upper bin edges in seconds for inter-onset intervals and durations (the last bin is open).
pub const TIME_EDGES: [f64; 10] = [0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0];

/// The statistics of one piece or of several pooled.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MusicStats {
    pub notes: usize,
    pub seconds: f64,
    pub notes_per_second: f64,
    pub lowest_pitch: u8,
    pub highest_pitch: u8,
    pub mean_pitch: f64,
    /// Share of 4-note pitch patterns that occur more than once in the piece (0 = none repeat).
    pub repetition: f64,
    pub pitch_classes: Vec<f64>,
    /// Notes sounding at each onset: 1, 2, …, 8, 9 or more.
    pub polyphony: Vec<f64>,
    pub inter_onset: Vec<f64>,
    pub durations: Vec<f64>,
    /// Velocity in 8 bins of 16.
    pub velocities: Vec<f64>,
}

fn normalised(counts: Vec<f64>) -> Vec<f64> {
    let total: f64 = counts.iter().sum();
    if total == 0.0 { counts } else { counts.into_iter().map(|c| c / total).collect() }
}

fn time_bin(seconds: f64) -> usize {
    TIME_EDGES.iter().position(|&edge| seconds < edge).unwrap_or(TIME_EDGES.len())
}

impl MusicStats {
    /// Statistics of pieces pooled together; each piece is a list of notes in any order.
    pub fn of(pieces: &[Vec<TimedNote>]) -> MusicStats {
        let mut pitch_classes = vec![0.0; 12];
        let mut polyphony = vec![0.0; 9];
        let mut inter_onset = vec![0.0; TIME_EDGES.len() + 1];
        let mut durations = vec![0.0; TIME_EDGES.len() + 1];
        let mut velocities = vec![0.0; 8];
        let (mut notes, mut seconds, mut pitch_sum) = (0usize, 0.0, 0.0);
        let (mut lowest, mut highest) = (u8::MAX, 0u8);
        let (mut repeated, mut patterns) = (0usize, 0usize);
        for piece in pieces {
            let mut sorted = piece.clone();
            sorted.sort_by(|a, b| a.onset_seconds.total_cmp(&b.onset_seconds).then(a.pitch.cmp(&b.pitch)));
            for n in &sorted {
                pitch_classes[usize::from(n.pitch % 12)] += 1.0;
                durations[time_bin(n.duration_seconds)] += 1.0;
                velocities[usize::from(n.velocity.min(127) / 16)] += 1.0;
                pitch_sum += f64::from(n.pitch);
                lowest = lowest.min(n.pitch);
                highest = highest.max(n.pitch);
            }
            notes += sorted.len();
            seconds += sorted.iter().map(|n| n.onset_seconds + n.duration_seconds).fold(0.0, f64::max);
            let mut onsets: Vec<f64> = sorted.iter().map(|n| n.onset_seconds).collect();
            onsets.dedup_by(|a, b| (*a - *b).abs() < 1e-3);
            for pair in onsets.windows(2) {
                inter_onset[time_bin(pair[1] - pair[0])] += 1.0;
            }
            for &onset in &onsets {
                let sounding = sorted
                    .iter()
                    .filter(|n| n.onset_seconds <= onset + 1e-3 && n.onset_seconds + n.duration_seconds > onset)
                    .count();
                polyphony[sounding.clamp(1, 9) - 1] += 1.0;
            }
            let pitches: Vec<u8> = sorted.iter().map(|n| n.pitch).collect();
            let grams: Vec<&[u8]> = pitches.windows(4).collect();
            let mut counts = std::collections::HashMap::new();
            for gram in &grams {
                *counts.entry(*gram).or_insert(0usize) += 1;
            }
            repeated += grams.iter().filter(|g| counts[*g] > 1).count();
            patterns += grams.len();
        }
        MusicStats {
            notes,
            seconds,
            notes_per_second: notes as f64 / seconds.max(1e-9),
            lowest_pitch: if notes == 0 { 0 } else { lowest },
            highest_pitch: highest,
            mean_pitch: pitch_sum / notes.max(1) as f64,
            repetition: repeated as f64 / patterns.max(1) as f64,
            pitch_classes: normalised(pitch_classes),
            polyphony: normalised(polyphony),
            inter_onset: normalised(inter_onset),
            durations: normalised(durations),
            velocities: normalised(velocities),
        }
    }
}

/// Area shared by two normalised histograms: 1 when identical, 0 when disjoint.
pub fn overlap(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).map(|(a, b)| a.min(*b)).sum()
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

/// Overlap and KL for every histogram of `generated` against `reference`.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub statistic: &'static str,
    pub overlap: f64,
    pub kl_divergence: f64,
}

pub fn compare(generated: &MusicStats, reference: &MusicStats) -> Vec<Comparison> {
    let pairs: [(&'static str, &[f64], &[f64]); 5] = [
        ("pitch classes", &generated.pitch_classes, &reference.pitch_classes),
        ("polyphony", &generated.polyphony, &reference.polyphony),
        ("inter-onset intervals", &generated.inter_onset, &reference.inter_onset),
        ("durations", &generated.durations, &reference.durations),
        ("velocities", &generated.velocities, &reference.velocities),
    ];
    pairs
        .into_iter()
        .map(|(statistic, p, q)| Comparison { statistic, overlap: overlap(p, q), kl_divergence: kl_divergence(p, q) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(pitch: u8, onset: f64, duration: f64, velocity: u8) -> TimedNote {
        TimedNote { pitch, velocity, onset_seconds: onset, duration_seconds: duration }
    }

    #[test]
    fn identical_distributions_overlap_fully_and_diverge_not_at_all() {
        let p = [0.2, 0.3, 0.5];
        assert!((overlap(&p, &p) - 1.0).abs() < 1e-12);
        assert!(kl_divergence(&p, &p).abs() < 1e-9);
        assert_eq!(overlap(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert!(kl_divergence(&[1.0, 0.0], &[0.0, 1.0]) > 10.0);
    }

    #[test]
    fn statistics_of_a_known_piece() {
        // C major triad held 1 s, then E alone 0.5 s later; velocities 64 and 100.
        let piece =
            vec![note(60, 0.0, 1.0, 64), note(64, 0.0, 1.0, 64), note(67, 0.0, 1.0, 64), note(64, 1.5, 0.5, 100)];
        let s = MusicStats::of(&[piece]);
        assert_eq!((s.notes, s.lowest_pitch, s.highest_pitch), (4, 60, 67));
        assert!((s.seconds - 2.0).abs() < 1e-12 && (s.notes_per_second - 2.0).abs() < 1e-12);
        assert!((s.pitch_classes[4] - 0.5).abs() < 1e-12, "E is half the notes");
        assert!((s.polyphony[2] - 0.5).abs() < 1e-12 && (s.polyphony[0] - 0.5).abs() < 1e-12);
        assert_eq!(s.inter_onset[time_bin(1.5)], 1.0);
        assert_eq!((s.velocities[4], s.velocities[6]), (0.75, 0.25));
        assert_eq!(s.repetition, 0.0);
    }
}
