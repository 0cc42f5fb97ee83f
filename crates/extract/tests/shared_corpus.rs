//! Extraction over the real MIDI files in `../shared/data` beside the checkout (or under
//! `PIANOLA_CORPUS`). Those files are not part of the repository: where they are missing
//! each test says in one line that it skipped, unless `PIANOLA_REQUIRE_CORPUS` is set (CI
//! sets it), which makes their absence a failure.

use std::collections::HashMap;

/// `path → notes` from a corpus's MANIFEST.tsv (as counted by an independent parser).
fn manifest_notes(folder: &std::path::Path) -> HashMap<String, usize> {
    let text = std::fs::read_to_string(folder.join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let column = |name| header.iter().position(|h| *h == name).unwrap();
    let (path, parse, notes) = (column("path"), column("parse"), column("notes"));
    lines
        .map(|line| line.split('\t').collect::<Vec<_>>())
        .filter(|fields| fields[parse] == "ok")
        .map(|fields| (fields[path].to_string(), fields[notes].parse().unwrap_or(0)))
        .collect()
}

#[test]
fn every_piano_file_is_read_with_the_expected_note_count() {
    let Some(folder) = test_support::corpus("piano", "every_piano_file_is_read_with_the_expected_note_count") else {
        return;
    };
    let expected = manifest_notes(&folder);
    let files = music::files::find_midi_files(&folder).unwrap();
    assert_eq!(files.len(), 387, "the piano corpus has 387 files (three end in upper-case .MID)");
    let (mut ours_total, mut theirs_total) = (0usize, 0usize);
    let mut far = Vec::new();
    for path in files {
        let name = path.strip_prefix(&folder).unwrap().to_string_lossy().replace('\\', "/");
        let (_, music::Score { notes, .. }, _) =
            extract::extract_file(&path, &Default::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let theirs = expected[&name];
        // Differences come from documented rules: the same pitch struck on the same channel
        // again (often a unison doubling in another track) ends the sounding note, so the
        // two note-ons make one note, as a synthesizer plays them; zero-length notes are
        // dropped. The manifest's parser counts every note-on.
        assert!(
            notes.len().abs_diff(theirs) <= theirs / 5,
            "{name}: {} notes, the manifest says {theirs}",
            notes.len()
        );
        if notes.len().abs_diff(theirs) > 10.max(theirs / 50) {
            far.push(format!("{name}: {} vs {theirs}", notes.len()));
        }
        assert!(notes.windows(2).all(|w| w[0].onset_seconds <= w[1].onset_seconds), "{name}: notes not sorted");
        assert!(notes.iter().all(|n| n.duration_seconds > 0.0 && n.velocity > 0 && n.channel != 9));
        ours_total += notes.len();
        theirs_total += theirs;
    }
    assert!(far.len() <= 5, "note counts off by more than 2 %: {far:#?}");
    assert!(ours_total.abs_diff(theirs_total) * 100 <= theirs_total, "{ours_total} vs {theirs_total} notes in all");
}

/// Every file of the robustness corpus that extract rejects, with the start of the reason.
/// Every other file there must be read. Deliberate choices:
/// - A RIFF `.rmi` wrapper is unwrapped and read (midly__Beethoven.rmi), as players do.
/// - Truncated files and trailing garbage: the notes before the damage are kept.
/// - Undefined status bytes (test-illegal-message-*): the track is read up to that byte,
///   as midly's non-strict mode does; in these tiny files no note comes before it, so
///   they are rejected (Python's mido rejects five of them outright).
const REJECTED: &[(&str, &str)] = &[
    (
        "jazz-soft-test-midi-files/jazzsoft__test-2-tracks-type-2.mid",
        "format 2 (independent sequences) is not supported",
    ),
    ("jazz-soft-test-midi-files/jazzsoft__test-all-gm-percussion.mid", "no notes: only drums"),
    ("jazz-soft-test-midi-files/jazzsoft__test-control-7c-omni-mode-off.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-control-7d-omni-mode-on.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-control-7e-mono-mode-on.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-control-7f-poly-mode-on.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-empty-file.mid", "not a readable MIDI file"),
    ("jazz-soft-test-midi-files/jazzsoft__test-empty.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-illegal-message-all.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-illegal-message-f1-xx.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-illegal-message-f2-xx-xx.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-illegal-message-f3-xx.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-illegal-message-f4.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-illegal-message-f5.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-illegal-message-f6.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-illegal-message-f8.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-illegal-message-f9.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-illegal-message-fa.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-illegal-message-fb.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-illegal-message-fc.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-illegal-message-fd.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-illegal-message-fe.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-not-a-midi-file.mid", "not a readable MIDI file"),
    ("jazz-soft-test-midi-files/jazzsoft__test-silence-all-notes-off.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-silence-end-of-track.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-silence-text-metaevent.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-sysex-7e-06-01-id-request.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-sysex-7e-09-01-gm1-enable.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-sysex-7e-09-02-gm-disable.mid", "no notes"),
    ("jazz-soft-test-midi-files/jazzsoft__test-sysex-7e-09-03-gm2-enable.mid", "no notes"),
    ("miditok/miditok__MIDIs_one_track_empty.mid", "no notes"),
    ("midly/midly__SysExTest.mid", "no notes"),
    // Pitches 1–3: below the piano's lowest key, dropped like every note off the keyboard.
    ("note-seq/note-seq__example_event_order.mid", "no notes on the 88 piano keys"),
];

#[test]
fn every_odd_file_is_read_or_rejected_as_the_table_says() {
    let Some(folder) = test_support::corpus("oddities", "every_odd_file_is_read_or_rejected_as_the_table_says") else {
        return;
    };
    let files = music::files::find_midi_files(&folder).unwrap();
    assert_eq!(files.len(), 143, "the robustness corpus has 143 files (one .rmi)");
    let mut rejected_seen = 0;
    for path in &files {
        let name = path.strip_prefix(&folder).unwrap().to_string_lossy().replace('\\', "/");
        let expected = REJECTED.iter().find(|(file, _)| *file == name).map(|(_, reason)| *reason);
        match (extract::extract_file(path, &Default::default()), expected) {
            (Ok((_, music::Score { notes, .. }, _)), None) => assert!(!notes.is_empty(), "{name}"),
            (Err(reason), Some(start)) => {
                assert!(reason.starts_with(start) && !reason.contains('\n'), "{name}: reason {reason:?}");
                rejected_seen += 1;
            }
            (Ok((_, music::Score { notes, .. }, _)), Some(start)) => {
                panic!("{name}: read {} notes, expected a rejection ({start})", notes.len())
            }
            (Err(reason), None) => panic!("{name}: rejected ({reason}), expected it to be read"),
        }
    }
    assert_eq!(rejected_seen, REJECTED.len(), "every file in the table exists");
}
