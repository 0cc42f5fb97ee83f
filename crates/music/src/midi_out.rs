//! Writing notes as a standard MIDI file that any player opens.

use crate::Note;
use midly::num::{u4, u7, u15, u24, u28};
use midly::{Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind};

/// Ticks per quarter note in the files we write: divisible by 2, 3, 4, 5, 8 and 16, so
/// every common note value lands on a whole tick.
pub const TICKS_PER_QUARTER: u16 = 480;

/// A format-0 MIDI file: one track on channel 1, program 0 (acoustic grand piano), the
/// tempo set to `tempo_bpm`, each note placed by its quarter notes (its seconds, channel and
/// program are not read: [`Note::at_steady_tempo`] makes notes that agree with this file).
/// Notes of zero length after rounding to ticks are skipped; pitch and velocity are
/// clamped into MIDI's range.
pub fn to_bytes(notes: &[Note], tempo_bpm: f64) -> Vec<u8> {
    let channel = u4::new(0);
    let ticks = |quarters: f64| (quarters * f64::from(TICKS_PER_QUARTER)).round().max(0.0) as u64;
    // (tick, 0 = off / 1 = on so offs sort first at a tick, pitch, velocity)
    let mut changes: Vec<(u64, u8, u8, u8)> = Vec::with_capacity(notes.len() * 2);
    for note in notes {
        let (start, end) = (ticks(note.onset_quarters), ticks(note.onset_quarters + note.duration_quarters));
        if end > start {
            changes.push((start, 1, note.pitch.min(127), note.velocity.clamp(1, 127)));
            changes.push((end, 0, note.pitch.min(127), 0));
        }
    }
    changes.sort_unstable();

    let micros_per_quarter = (60_000_000.0 / tempo_bpm).round().clamp(1.0, f64::from(0xFF_FFFF)) as u32;
    let meta = |message| TrackEventKind::Meta(message);
    let mut track: Vec<TrackEvent<'static>> = vec![
        TrackEvent { delta: u28::new(0), kind: meta(MetaMessage::TrackName(b"Piano")) },
        TrackEvent { delta: u28::new(0), kind: meta(MetaMessage::Tempo(u24::new(micros_per_quarter))) },
        TrackEvent {
            delta: u28::new(0),
            kind: TrackEventKind::Midi { channel, message: MidiMessage::ProgramChange { program: u7::new(0) } },
        },
    ];
    let mut now = 0u64;
    for (tick, on, pitch, velocity) in changes {
        let key = u7::new(pitch);
        let message = if on == 1 {
            MidiMessage::NoteOn { key, vel: u7::new(velocity) }
        } else {
            MidiMessage::NoteOff { key, vel: u7::new(0) }
        };
        // Deltas are 28 bits: 155 hours at 480 ticks per quarter and 120 BPM. Our stages
        // never make such a gap, so clamping is a guard, not a rule.
        let delta = (tick - now).min(0x0FFF_FFFF) as u32;
        track.push(TrackEvent { delta: u28::new(delta), kind: TrackEventKind::Midi { channel, message } });
        now = tick;
    }
    track.push(TrackEvent { delta: u28::new(0), kind: meta(MetaMessage::EndOfTrack) });

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

    #[test]
    fn written_file_reads_back_with_midly() {
        let notes = vec![
            Note::of_score(60, 90, 0.0, 0.5, 100.0),
            Note::of_score(60, 80, 0.5, 0.5, 100.0),
            Note::of_score(64, 70, 0.5, 1.0, 100.0),
        ];
        let bytes = to_bytes(&notes, 100.0);
        let smf = Smf::parse(&bytes).unwrap();
        assert_eq!(smf.header.timing, Timing::Metrical(u15::new(480)));
        let mut tick = 0;
        let mut seen = Vec::new();
        for event in &smf.tracks[0] {
            tick += event.delta.as_int();
            match event.kind {
                TrackEventKind::Meta(MetaMessage::Tempo(t)) => assert_eq!(t.as_int(), 600_000),
                TrackEventKind::Midi { message: MidiMessage::NoteOn { key, vel }, .. } => {
                    seen.push((tick, key.as_int(), vel.as_int()))
                }
                _ => {}
            }
        }
        // The repeated C4 is released before it is struck again at tick 240.
        assert_eq!(seen, vec![(0, 60, 90), (240, 60, 80), (240, 64, 70)]);
    }
}
