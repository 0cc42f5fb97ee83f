//! Small MIDI files, odd or broken in the ways files from the wild are, each with what
//! extract must make of it. Written byte by byte here (not with a MIDI library, which would
//! refuse to write most of them), so the robustness tests need nothing outside the repository.

/// One crafted file and what reading it must give.
pub struct OddFile {
    /// A file name saying what is odd about it.
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub expect: Expect,
}

/// What extract must make of an [`OddFile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Read, giving this many notes.
    Notes(usize),
    /// Rejected with a reason that starts with this.
    Rejected(&'static str),
}

/// A MIDI variable-length quantity.
pub fn vlq(mut value: u32) -> Vec<u8> {
    let mut bytes = vec![(value & 0x7f) as u8];
    value >>= 7;
    while value > 0 {
        bytes.insert(0, 0x80 | (value & 0x7f) as u8);
        value >>= 7;
    }
    bytes
}

/// The `MThd` chunk: format, number of tracks, division (ticks per quarter, or SMPTE).
pub fn header(format: u16, tracks: u16, division: u16) -> Vec<u8> {
    let mut bytes = b"MThd\0\0\0\x06".to_vec();
    for field in [format, tracks, division] {
        bytes.extend(field.to_be_bytes());
    }
    bytes
}

/// An `MTrk` chunk whose length field says `events.len()`.
pub fn track(events: &[u8]) -> Vec<u8> {
    track_claiming(events, events.len() as u32)
}

/// An `MTrk` chunk whose length field says `claimed`, whatever `events` holds.
pub fn track_claiming(events: &[u8], claimed: u32) -> Vec<u8> {
    let mut bytes = b"MTrk".to_vec();
    bytes.extend(claimed.to_be_bytes());
    bytes.extend_from_slice(events);
    bytes
}

/// `delta` ticks, then a channel message.
pub fn event(delta: u32, message: &[u8]) -> Vec<u8> {
    let mut bytes = vlq(delta);
    bytes.extend_from_slice(message);
    bytes
}

const END_OF_TRACK: [u8; 3] = [0xff, 0x2f, 0x00];
/// 500,000 µs per quarter: 120 beats per minute.
const TEMPO_120: [u8; 6] = [0xff, 0x51, 0x03, 0x07, 0xa1, 0x20];

/// Middle C, then E above it, each a quarter note (96 ticks), on `channel`.
fn two_notes_on(channel: u8, low: u8, high: u8) -> Vec<u8> {
    let (on, off) = (0x90 | channel, 0x80 | channel);
    [
        event(0, &TEMPO_120),
        event(0, &[on, low, 80]),
        event(96, &[off, low, 0]),
        event(0, &[on, high, 80]),
        event(96, &[off, high, 0]),
        event(0, &END_OF_TRACK),
    ]
    .concat()
}

fn two_notes() -> Vec<u8> {
    two_notes_on(0, 60, 64)
}

/// The largest delta time a MIDI file can hold (2²⁸ − 1 ticks).
pub const LARGEST_DELTA: u32 = 0x0fff_ffff;

/// A note, a rest of [`LARGEST_DELTA`] ticks at the slowest tempo, a note.
pub fn huge_rest() -> Vec<u8> {
    [
        event(0, &[0xff, 0x51, 0x03, 0xff, 0xff, 0xff]),
        event(0, &[0x90, 60, 80]),
        event(1, &[0x80, 60, 0]),
        event(LARGEST_DELTA, &[0x90, 64, 80]),
        event(1, &[0x80, 64, 0]),
        event(0, &END_OF_TRACK),
    ]
    .concat()
}

fn format_0(events: &[u8]) -> Vec<u8> {
    [header(0, 1, 96), track(events)].concat()
}

/// Every crafted file with its expected outcome.
pub fn all() -> Vec<OddFile> {
    let plain = format_0(&two_notes());
    let mut files = vec![
        OddFile { name: "plain-two-notes.mid", bytes: plain.clone(), expect: Expect::Notes(2) },
        OddFile {
            name: "format-1-tempo-track-apart.mid",
            bytes: [
                header(1, 2, 96),
                track(&[event(0, &TEMPO_120), event(0, &END_OF_TRACK)].concat()),
                track(&two_notes()[TEMPO_120.len() + 1..]),
            ]
            .concat(),
            expect: Expect::Notes(2),
        },
        OddFile {
            name: "format-2-independent-sequences.mid",
            bytes: [header(2, 2, 96), track(&two_notes()), track(&two_notes())].concat(),
            expect: Expect::Rejected("format 2"),
        },
        OddFile {
            name: "riff-wrapper.rmi",
            bytes: {
                let mut data = b"data".to_vec();
                data.extend((plain.len() as u32).to_le_bytes());
                data.extend(&plain);
                let mut riff = b"RIFF".to_vec();
                riff.extend(((data.len() + 4) as u32).to_le_bytes());
                riff.extend(b"RMID");
                riff.extend(data);
                riff
            },
            expect: Expect::Notes(2),
        },
        OddFile {
            name: "running-status.mid",
            // One note-on status byte, then data bytes alone: the status runs on.
            bytes: format_0(
                &[
                    event(0, &[0x90, 60, 80]),
                    event(96, &[60, 0]),
                    event(0, &[64, 80]),
                    event(96, &[64, 0]),
                    event(0, &END_OF_TRACK),
                ]
                .concat(),
            ),
            expect: Expect::Notes(2),
        },
        OddFile {
            name: "running-status-across-meta.mid",
            // A meta event cancels running status (the SMF rule midly follows): the data
            // bytes after it are damage, and the track is read up to there, keeping the
            // whole note before it.
            bytes: format_0(
                &[
                    event(0, &[0x90, 60, 80]),
                    event(96, &[60, 0]),
                    event(0, &[0xff, 0x01, 0x02, b'h', b'i']),
                    event(0, &[64, 80]),
                    event(96, &[64, 0]),
                    event(0, &END_OF_TRACK),
                ]
                .concat(),
            ),
            expect: Expect::Notes(1),
        },
        OddFile {
            name: "velocity-zero-note-offs.mid",
            bytes: format_0(
                &[
                    event(0, &[0x90, 60, 80]),
                    event(96, &[0x90, 60, 0]),
                    event(0, &[0x90, 64, 80]),
                    event(96, &[0x90, 64, 0]),
                    event(0, &END_OF_TRACK),
                ]
                .concat(),
            ),
            expect: Expect::Notes(2),
        },
        OddFile {
            name: "smpte-timing.mid",
            // 25 frames per second, 40 ticks a frame: 1,000 ticks a second.
            bytes: [header(0, 1, 0xe728), track(&two_notes())].concat(),
            expect: Expect::Notes(2),
        },
        OddFile {
            name: "length-field-too-long.mid",
            bytes: [header(0, 1, 96), track_claiming(&two_notes(), 10_000)].concat(),
            expect: Expect::Notes(2),
        },
        OddFile {
            name: "trailing-garbage.mid",
            bytes: [plain.clone(), b"\x00\x13garbage after the last track".to_vec()].concat(),
            expect: Expect::Notes(2),
        },
        OddFile {
            name: "truncated-in-second-note.mid",
            // Cut inside the second note-off: the first note is whole; the second starts where
            // the readable track ends, so it has no length and is dropped.
            bytes: plain[..plain.len() - 5].to_vec(),
            expect: Expect::Notes(1),
        },
        OddFile {
            name: "key-never-released.mid",
            bytes: format_0(
                &[event(0, &[0x90, 60, 80]), event(96, &[0x90, 64, 80]), event(96, &END_OF_TRACK)].concat(),
            ),
            expect: Expect::Notes(2),
        },
        OddFile {
            name: "zero-length-note.mid",
            bytes: format_0(
                &[
                    event(0, &[0x90, 60, 80]),
                    event(0, &[0x80, 60, 0]),
                    event(0, &[0x90, 64, 80]),
                    event(96, &[0x80, 64, 0]),
                    event(0, &END_OF_TRACK),
                ]
                .concat(),
            ),
            expect: Expect::Notes(1),
        },
        OddFile {
            name: "a-rest-of-a-hundred-and-forty-years.mid",
            // One tick a quarter at the slowest tempo (16.8 s a quarter), then the largest
            // delta a file can hold: 4.5·10⁹ seconds of silence between two notes.
            bytes: [header(0, 1, 1), track(&huge_rest())].concat(),
            expect: Expect::Notes(2),
        },
        OddFile {
            name: "only-a-tempo.mid",
            bytes: format_0(&[event(0, &TEMPO_120), event(0, &END_OF_TRACK)].concat()),
            expect: Expect::Rejected("no notes"),
        },
        OddFile {
            name: "drums-only.mid",
            bytes: format_0(&two_notes_on(9, 36, 38)),
            expect: Expect::Rejected("no notes: only drums"),
        },
        OddFile {
            name: "below-the-keyboard.mid",
            bytes: format_0(&two_notes_on(0, 2, 5)),
            expect: Expect::Rejected("no notes on the 88 piano keys"),
        },
        OddFile { name: "empty.mid", bytes: Vec::new(), expect: Expect::Rejected("not a readable MIDI file") },
        OddFile {
            name: "not-midi-at-all.mid",
            bytes: b"<html>this is a web page saved as .mid</html>".to_vec(),
            expect: Expect::Rejected("not a readable MIDI file"),
        },
        OddFile { name: "header-only.mid", bytes: header(0, 1, 96), expect: Expect::Rejected("no notes") },
    ];
    files.sort_by_key(|f| f.name);
    files
}
