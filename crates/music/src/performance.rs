//! The `performance` encoding: music as the stream of events a pianist's hands make, as in
//! Magenta's Performance RNN (Oore et al., "This time with feeling", 2018).
//!
//! Four kinds of token, and nothing else:
//!
//! | token | meaning |
//! |---|---|
//! | `on:P` | key P (0–127) goes down |
//! | `off:P` | key P comes up |
//! | `shift:N` | time moves on by N steps (1 ≤ N ≤ the maximum shift; longer gaps chain shifts) |
//! | `vel:B` | the following key presses have velocity bin B (1 ≤ B ≤ bins); sent when the bin changes |
//!
//! With the defaults (10 ms steps up to 1 s, 32 velocity bins) that is 128 + 128 + 100 + 32 =
//! 388 tokens, fixed by the parameters and not by the data: a model trained on one corpus
//! composes from any other, or from none.

use crate::encoding::Vocabulary;
use crate::note::{Note, TimedNote};
use std::collections::BTreeMap;

/// The parameters of the encoding. Invariant: all three are at least 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Performance {
    pub step_seconds: f64,
    pub max_shift_steps: u32,
    pub velocity_bins: u32,
}

/// One token, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    On(u8),
    Off(u8),
    Shift(u32),
    Velocity(u32),
}

impl Event {
    pub fn parse(token: &str) -> Option<Event> {
        let (kind, value) = token.split_once(':')?;
        let value: u32 = value.parse().ok()?;
        let pitch = || u8::try_from(value).ok().filter(|p| *p < 128);
        match kind {
            "on" => pitch().map(Event::On),
            "off" => pitch().map(Event::Off),
            "shift" => Some(Event::Shift(value)),
            "vel" => Some(Event::Velocity(value)),
            _ => None,
        }
    }

    pub fn token(self) -> String {
        match self {
            Event::On(p) => format!("on:{p}"),
            Event::Off(p) => format!("off:{p}"),
            Event::Shift(n) => format!("shift:{n}"),
            Event::Velocity(b) => format!("vel:{b}"),
        }
    }
}

/// The bin (1-based, of `bins` equal ranges of 0–127) of a MIDI velocity.
pub fn velocity_bin(velocity: u8, bins: u32) -> u32 {
    (u32::from(velocity.min(127)) * bins / 128 + 1).min(bins)
}

/// The velocity a bin of [`velocity_bin`] decodes to: the middle of its range.
pub fn bin_velocity(bin: u32, bins: u32) -> u8 {
    let width = 128.0 / f64::from(bins);
    ((f64::from(bin.clamp(1, bins)) - 0.5) * width).round().clamp(1.0, 127.0) as u8
}

impl Performance {
    /// Every token of the encoding: the dictionary, whatever the data.
    pub fn vocabulary(&self) -> Vocabulary {
        let events = (0..128u8)
            .flat_map(|p| [Event::On(p), Event::Off(p)])
            .chain((1..=self.max_shift_steps).map(Event::Shift))
            .chain((1..=self.velocity_bins).map(Event::Velocity));
        Vocabulary::from_tokens(events.map(Event::token))
    }

    /// The velocity bin (1-based) of a MIDI velocity.
    pub fn bin(&self, velocity: u8) -> u32 {
        velocity_bin(velocity, self.velocity_bins)
    }

    /// The velocity a bin decodes to: the middle of its range.
    pub fn bin_velocity(&self, bin: u32) -> u8 {
        bin_velocity(bin, self.velocity_bins)
    }

    /// Encodes a piece's notes (any order) as event tokens.
    ///
    /// Times are rounded to the step. A note keeps at least one step. When a key is struck
    /// again while it still sounds (two channels doubling a pitch), the sounding note ends
    /// there, and its own later release is dropped: a key cannot be down twice.
    pub fn encode(&self, notes: &[Note]) -> Vec<Event> {
        let step = |seconds: f64| (seconds / self.step_seconds).round().max(0.0) as u64;
        // (time step, 0 = release before 1 = press, pitch, note index)
        let mut changes: Vec<(u64, u8, u8, usize)> = Vec::with_capacity(notes.len() * 2);
        for (index, note) in notes.iter().enumerate() {
            let on = step(note.onset_seconds);
            let off = step(note.onset_seconds + note.duration_seconds).max(on + 1);
            changes.push((on, 1, note.pitch, index));
            changes.push((off, 0, note.pitch, index));
        }
        changes.sort_unstable();

        let mut events = Vec::with_capacity(changes.len() * 2);
        let mut now = 0u64;
        let mut bin = None;
        let mut sounding: BTreeMap<u8, usize> = BTreeMap::new();
        for (time, press, pitch, index) in changes {
            let mut gap = time - now;
            while gap > 0 {
                let shift = gap.min(u64::from(self.max_shift_steps));
                events.push(Event::Shift(shift as u32));
                gap -= shift;
            }
            now = time;
            if press == 1 {
                if sounding.insert(pitch, index).is_some() {
                    events.push(Event::Off(pitch));
                }
                let wanted = self.bin(notes[index].velocity);
                if bin != Some(wanted) {
                    events.push(Event::Velocity(wanted));
                    bin = Some(wanted);
                }
                events.push(Event::On(pitch));
            } else if sounding.get(&pitch) == Some(&index) {
                sounding.remove(&pitch);
                events.push(Event::Off(pitch));
            }
        }
        events
    }

    /// Decodes events to notes, defensively: a release of a key that is not down is
    /// ignored, a press of a key already down ends the earlier note, and notes still down at
    /// the end (or longer than `max_note_seconds`) end there.
    pub fn decode(&self, events: &[Event], max_note_seconds: f64) -> Vec<TimedNote> {
        let mut notes = Vec::new();
        let mut now = 0.0f64;
        let mut velocity = self.bin_velocity(self.velocity_bins / 2);
        let mut down: BTreeMap<u8, (f64, u8)> = BTreeMap::new();
        let close = |pitch: u8, (onset, velocity): (f64, u8), end: f64, notes: &mut Vec<TimedNote>| {
            let duration = (end - onset).min(max_note_seconds);
            if duration > 0.0 {
                notes.push(TimedNote { pitch, velocity, onset_seconds: onset, duration_seconds: duration });
            }
        };
        for &event in events {
            match event {
                Event::Shift(n) => now += f64::from(n) * self.step_seconds,
                Event::Velocity(bin) => velocity = self.bin_velocity(bin),
                Event::On(pitch) => {
                    if let Some(earlier) = down.insert(pitch, (now, velocity)) {
                        close(pitch, earlier, now, &mut notes);
                    }
                }
                Event::Off(pitch) => {
                    if let Some(started) = down.remove(&pitch) {
                        close(pitch, started, now, &mut notes);
                    }
                }
            }
        }
        for (pitch, started) in down {
            close(pitch, started, now.max(started.0 + self.step_seconds), &mut notes);
        }
        notes.sort_by(|a, b| a.onset_seconds.total_cmp(&b.onset_seconds).then(a.pitch.cmp(&b.pitch)));
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODEC: Performance = Performance { step_seconds: 0.01, max_shift_steps: 100, velocity_bins: 32 };

    fn note(pitch: u8, velocity: u8, onset_seconds: f64, duration_seconds: f64) -> Note {
        Note {
            pitch,
            velocity,
            channel: 0,
            program: 0,
            onset_seconds,
            duration_seconds,
            onset_quarters: onset_seconds * 2.0,
            duration_quarters: duration_seconds * 2.0,
        }
    }

    #[test]
    fn the_vocabulary_has_388_tokens_whatever_the_data() {
        let vocabulary = CODEC.vocabulary();
        assert_eq!(vocabulary.len(), 388);
        assert!(vocabulary.id("on:60").is_some() && vocabulary.id("shift:100").is_some());
        assert!(vocabulary.id("shift:101").is_none() && vocabulary.id("vel:33").is_none());
        for token in &vocabulary.tokens {
            assert_eq!(Event::parse(token).map(Event::token).as_deref(), Some(token.as_str()));
        }
    }

    #[test]
    fn chords_long_gaps_and_velocities_round_trip() {
        let notes = vec![
            note(60, 100, 0.0, 0.5),
            note(64, 100, 0.0, 0.5),
            note(67, 30, 0.004, 0.996), // rounds onto the same step as the chord
            note(72, 127, 3.456, 0.01), // after a 2.5 s gap: chained shifts
            note(21, 1, 3.5, 12.0),
        ];
        let events = CODEC.encode(&notes);
        assert!(events.contains(&Event::Shift(100)), "a long gap chains full shifts: {events:?}");
        let decoded = CODEC.decode(&events, 60.0);
        assert_eq!(decoded.len(), notes.len());
        for (original, back) in notes.iter().zip(&decoded) {
            assert_eq!(original.pitch, back.pitch);
            assert!((original.onset_seconds - back.onset_seconds).abs() <= 0.005 + 1e-9, "{original:?} {back:?}");
            let end = |o: f64, d: f64| o + d;
            assert!(
                (end(original.onset_seconds, original.duration_seconds)
                    - end(back.onset_seconds, back.duration_seconds))
                .abs()
                    <= 0.01 + 1e-9
            );
            assert!(original.velocity.abs_diff(back.velocity) <= 4, "{original:?} {back:?}");
        }
    }

    #[test]
    fn overlapping_strikes_of_one_key_and_extreme_velocities() {
        // Two channels strike C4; the second strike ends the first note.
        let notes = vec![note(60, 1, 0.0, 1.0), note(60, 127, 0.5, 1.0)];
        let decoded = CODEC.decode(&CODEC.encode(&notes), 60.0);
        let summary: Vec<(f64, f64)> =
            decoded.iter().map(|n| (n.onset_seconds, (n.duration_seconds * 100.0).round() / 100.0)).collect();
        assert_eq!(summary, vec![(0.0, 0.5), (0.5, 1.0)]);
        assert_eq!((decoded[0].velocity, decoded[1].velocity), (2, 126));
    }

    #[test]
    fn decoding_is_defensive() {
        let events = [Event::Off(60), Event::On(62), Event::Shift(5), Event::On(62), Event::Shift(300), Event::On(64)];
        let decoded = CODEC.decode(&events, 1.0);
        let summary: Vec<(u8, f64)> =
            decoded.iter().map(|n| (n.pitch, (n.duration_seconds * 100.0).round() / 100.0)).collect();
        // The orphan release is ignored, the re-strike ends the first D, the held notes end
        // at the end, cut to the maximum length, and the last one keeps one step.
        assert_eq!(summary, vec![(62, 0.05), (62, 1.0), (64, 0.01)]);
    }
}
