//! Writing a score as a standard MIDI file that any player opens, and that a notation
//! program reads in its bars: time signatures, the tempo map and the notes at the ticks of
//! their quarter notes.

use crate::metre::Score;
use midly::num::{u4, u7, u15, u24, u28};
use midly::{Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind};

/// Ticks per quarter note in the files we write: divisible by 2, 3, 4, 5, 8 and 16, so
/// every common note value lands on a whole tick.
pub const TICKS_PER_QUARTER: u16 = 480;

/// What happens at a tick, in the order a file must hold them at one tick: the metre
/// first, then releases, then presses (so a key released and struck again sounds twice,
/// and a pedal lifted and pressed again at a chord clears the harmony before it).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    TimeSignature { numerator: u8, power: u8 },
    Tempo { micros_per_quarter: u32 },
    PedalUp,
    Release { pitch: u8 },
    PedalDown,
    Press { pitch: u8, velocity: u8 },
}

/// The value of the sustain pedal's controller (64) when it is down and when it is up.
const PEDAL_DOWN: u8 = 127;
const PEDAL_UP: u8 = 0;

/// The tick a time in quarter notes is written at (the nearest, never before 0).
pub fn ticks(quarters: f64) -> u64 {
    (quarters * f64::from(TICKS_PER_QUARTER)).round().max(0.0) as u64
}

/// A format-0 MIDI file: one track on channel 1, program 0 (acoustic grand piano), the
/// score's time signatures and tempo map, the key signature of the notes' best-fitting
/// scale ([`crate::key::Scale::best_fit`]), each note placed by its quarter notes (its
/// seconds, channel and program are not read; a tempo that restates the one in force is
/// left out). `text`, when given, is written as the copyright meta event at the start:
/// players ignore it, and MuseScore 3 prints it at the foot of each page (a text event
/// becomes staff text over the first bar, which is stretched to the whole line to hold
/// it). Notes of zero length after rounding to ticks are skipped; pitch and velocity are
/// clamped into MIDI's range. The score's pedal presses are written as the
/// sustain controller (64) going to 127 and back to 0; a press that overlaps the next is
/// lifted where the next goes down.
pub fn to_bytes(score: &Score, text: Option<&str>) -> Vec<u8> {
    let channel = u4::new(0);
    let mut changes: Vec<(u64, Change)> = Vec::with_capacity(score.notes.len() * 2 + 8);
    for signature in &score.metre.signatures {
        let power = signature.denominator.max(1).ilog2() as u8;
        changes.push((ticks(signature.at_quarters), Change::TimeSignature { numerator: signature.numerator, power }));
    }
    let mut in_force = None;
    for tempo in &score.metre.tempos {
        let micros_per_quarter = (60_000_000.0 / tempo.bpm).round().clamp(1.0, f64::from(0xFF_FFFF)) as u32;
        // A tempo event that restates the tempo in force changes nothing a player hears,
        // and MuseScore would print it as one more tempo mark.
        if in_force.replace(micros_per_quarter) != Some(micros_per_quarter) {
            changes.push((ticks(tempo.at_quarters), Change::Tempo { micros_per_quarter }));
        }
    }
    for note in &score.notes {
        let (start, end) = (ticks(note.onset_quarters), ticks(note.onset_quarters + note.duration_quarters));
        if end > start {
            let pitch = note.pitch.min(127);
            changes.push((start, Change::Press { pitch, velocity: note.velocity.clamp(1, 127) }));
            changes.push((end, Change::Release { pitch }));
        }
    }
    for (index, press) in score.pedal.iter().enumerate() {
        let next = score.pedal.get(index + 1).map_or(u64::MAX, |next| ticks(next.onset_quarters));
        let (down, up) = (ticks(press.onset_quarters), ticks(press.end_quarters()).min(next));
        if up > down {
            changes.push((down, Change::PedalDown));
            changes.push((up, Change::PedalUp));
        }
    }
    changes.sort_unstable();

    let meta = |message| TrackEventKind::Meta(message);
    let at_start = |kind| TrackEvent { delta: u28::new(0), kind };
    let mut track: Vec<TrackEvent<'_>> = vec![at_start(meta(MetaMessage::TrackName(b"Piano")))];
    if let Some(text) = text {
        track.push(at_start(meta(MetaMessage::Copyright(text.as_bytes()))));
    }
    if !score.notes.is_empty() {
        // The key signature under which the fewest notes need an accidental; without one a
        // notation program guesses its own.
        let counts = crate::key::pitch_class_counts(score.notes.iter().map(|n| n.pitch));
        let scale = crate::key::Scale::best_fit(&counts);
        track.push(at_start(meta(MetaMessage::KeySignature(scale.sharps(), scale.sounds_minor(&counts)))));
    }
    track.push(at_start(TrackEventKind::Midi { channel, message: MidiMessage::ProgramChange { program: u7::new(0) } }));
    let mut now = 0u64;
    for (tick, change) in changes {
        let kind = match change {
            Change::TimeSignature { numerator, power } => meta(MetaMessage::TimeSignature(numerator, power, 24, 8)),
            Change::Tempo { micros_per_quarter } => meta(MetaMessage::Tempo(u24::new(micros_per_quarter))),
            Change::Release { pitch } => {
                TrackEventKind::Midi { channel, message: MidiMessage::NoteOff { key: u7::new(pitch), vel: u7::new(0) } }
            }
            Change::Press { pitch, velocity } => TrackEventKind::Midi {
                channel,
                message: MidiMessage::NoteOn { key: u7::new(pitch), vel: u7::new(velocity) },
            },
            Change::PedalDown | Change::PedalUp => {
                let value = if change == Change::PedalDown { PEDAL_DOWN } else { PEDAL_UP };
                let message =
                    MidiMessage::Controller { controller: crate::midi_in::SUSTAIN_PEDAL, value: u7::new(value) };
                TrackEventKind::Midi { channel, message }
            }
        };
        // Deltas are 28 bits: 155 hours at 480 ticks per quarter and 120 BPM. Our stages
        // never make such a gap, so clamping is a guard, not a rule.
        let delta = (tick - now).min(0x0FFF_FFFF) as u32;
        track.push(TrackEvent { delta: u28::new(delta), kind });
        now = tick;
    }
    track.push(at_start(meta(MetaMessage::EndOfTrack)));

    let smf = Smf {
        header: Header::new(Format::SingleTrack, Timing::Metrical(u15::new(TICKS_PER_QUARTER))),
        tracks: vec![track],
    };
    let mut bytes = Vec::new();
    smf.write_std(&mut bytes).expect("writing MIDI into a Vec cannot fail");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Note;
    use crate::metre::{Metre, PedalPress};

    #[test]
    fn the_key_signature_is_the_notes_best_fitting_scale() {
        // E major's scale and its tonic triad: four sharps, major; A minor's: none, minor.
        for (pitches, signature) in [
            (vec![64, 66, 68, 69, 71, 73, 75, 64, 68, 71, 76], (4, false)),
            (vec![57, 59, 60, 62, 64, 65, 67, 57, 60, 64, 69, 57], (0, true)),
        ] {
            let notes = pitches.iter().enumerate().map(|(i, &p)| Note::of_score(p, 80, i as f64, 1.0, 120.0)).collect();
            let smf_bytes = to_bytes(&Score { notes, metre: Metre::steady(4, 4, 120.0), pedal: Vec::new() }, None);
            let smf = Smf::parse(&smf_bytes).unwrap();
            let keys: Vec<(i8, bool)> = smf.tracks[0]
                .iter()
                .filter_map(|e| match e.kind {
                    TrackEventKind::Meta(MetaMessage::KeySignature(sharps, minor)) => Some((sharps, minor)),
                    _ => None,
                })
                .collect();
            assert_eq!(keys, [signature]);
        }
    }

    #[test]
    fn written_file_reads_back_with_midly() {
        let notes = vec![
            Note::of_score(60, 90, 0.0, 0.5, 100.0),
            Note::of_score(60, 80, 0.5, 0.5, 100.0),
            Note::of_score(64, 70, 0.5, 1.0, 100.0),
        ];
        let bytes =
            to_bytes(&Score { notes, metre: Metre::steady(3, 4, 100.0), pedal: Vec::new() }, Some("made by a test"));
        let smf = Smf::parse(&bytes).unwrap();
        assert_eq!(smf.header.timing, Timing::Metrical(u15::new(480)));
        let mut tick = 0;
        let mut seen = Vec::new();
        for event in &smf.tracks[0] {
            tick += event.delta.as_int();
            match event.kind {
                TrackEventKind::Meta(MetaMessage::Tempo(t)) => assert_eq!(t.as_int(), 600_000),
                TrackEventKind::Meta(MetaMessage::TimeSignature(n, d, _, _)) => assert_eq!((tick, n, d), (0, 3, 2)),
                TrackEventKind::Meta(MetaMessage::Copyright(text)) => assert_eq!(text, b"made by a test"),
                TrackEventKind::Midi { message: MidiMessage::NoteOn { key, vel }, .. } => {
                    seen.push((tick, key.as_int(), vel.as_int()))
                }
                _ => {}
            }
        }
        // The repeated C4 is released before it is struck again at tick 240.
        assert_eq!(seen, vec![(0, 60, 90), (240, 60, 80), (240, 64, 70)]);
        // Read back by our own reader, the metre is the one written.
        let (Score { metre, .. }, _) = crate::midi_in::read_midi(&bytes, &Default::default()).unwrap();
        assert_eq!(metre.signatures, Metre::steady(3, 4, 100.0).signatures);
        assert!(metre.tempos.len() == 1 && (metre.tempos[0].bpm - 100.0).abs() < 1e-9);
    }

    #[test]
    fn the_pedal_is_written_as_controller_64_and_reads_back() {
        let notes = vec![
            Note::of_score(48, 80, 0.0, 0.5, 120.0),
            Note::of_score(48, 80, 1.0, 0.25, 120.0),
            Note::of_score(52, 80, 2.0, 0.5, 120.0),
        ];
        let press = |onset_quarters, duration_quarters| PedalPress { onset_quarters, duration_quarters };
        // The first press overlaps the second: it is lifted where the second goes down.
        let pedal = vec![press(0.0, 3.0), press(2.0, 1.5)];
        let bytes = to_bytes(&Score { notes, metre: Metre::steady(4, 4, 120.0), pedal }, None);
        let smf = Smf::parse(&bytes).unwrap();
        let mut tick = 0;
        let mut seen = Vec::new();
        for event in &smf.tracks[0] {
            tick += event.delta.as_int();
            match event.kind {
                TrackEventKind::Midi { message: MidiMessage::Controller { controller, value }, .. } => {
                    seen.push((tick, controller.as_int(), value.as_int()))
                }
                TrackEventKind::Midi { message: MidiMessage::NoteOn { key, .. }, .. } => {
                    seen.push((tick, key.as_int(), 1))
                }
                _ => {}
            }
        }
        // At tick 960 the pedal is lifted, pressed again, then the chord is struck.
        let expected =
            [(0, 64, 127), (0, 48, 1), (480, 48, 1), (960, 64, 0), (960, 64, 127), (960, 52, 1), (1680, 64, 0)];
        assert_eq!(seen, expected);
        let events = crate::ReadOptions { sustain: crate::Sustain::Events, ..Default::default() };
        let (written, _) = crate::midi_in::read_midi(&bytes, &events).unwrap();
        assert_eq!(written.pedal, [press(0.0, 2.0), press(2.0, 1.5)]);
        // Applied, the pedal holds each note until it lifts or its key is struck again; the
        // same, from the presses kept as events.
        let (applied, _) = crate::midi_in::read_midi(&bytes, &Default::default()).unwrap();
        let lengths =
            |notes: &[Note]| notes.iter().map(|n| (n.duration_quarters, n.duration_seconds)).collect::<Vec<_>>();
        assert_eq!(lengths(&applied.notes), [(1.0, 0.5), (1.0, 0.5), (1.5, 0.75)]);
        let from_events = crate::metre::pedal_applied(&written.notes, &written.pedal, &written.metre);
        assert_eq!(lengths(&from_events), lengths(&applied.notes));
    }

    #[test]
    fn a_tempo_that_restates_the_one_in_force_is_not_written() {
        let mut metre = Metre::steady(4, 4, 120.0);
        for (at_quarters, bpm) in [(4.0, 120.0), (8.0, 90.0), (12.0, 90.0), (16.0, 120.0)] {
            metre.tempos.push(crate::metre::Tempo { at_quarters, bpm });
        }
        let notes = vec![Note::of_score(60, 80, 0.0, 20.0, 120.0)];
        let bytes = to_bytes(&Score { notes, metre, pedal: Vec::new() }, None);
        let smf = Smf::parse(&bytes).unwrap();
        let mut tick = 0;
        let mut tempos = Vec::new();
        for event in &smf.tracks[0] {
            tick += event.delta.as_int();
            if let TrackEventKind::Meta(MetaMessage::Tempo(t)) = event.kind {
                tempos.push((tick, t.as_int()));
            }
        }
        assert_eq!(tempos, vec![(0, 500_000), (8 * 480, 666_667), (16 * 480, 500_000)]);
    }
}
