//! Extraction over the real MIDI files in `../shared/data` (beside the checkout).
//!
//! These files are not part of the repository; a missing folder fails the test with a
//! message rather than skipping it, so a green run always means the files were checked.

use std::collections::HashMap;
use std::path::PathBuf;

fn shared_data(folder: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data").join(folder);
    assert!(
        path.is_dir(),
        "{} is missing: these tests need the shared MIDI corpus beside the checkout (../shared/data)",
        path.display()
    );
    path
}

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
    let folder = shared_data("piano");
    let expected = manifest_notes(&folder);
    let files = extract::find_midi_files(&folder).unwrap();
    assert_eq!(files.len(), 387, "the piano corpus has 387 files (three end in upper-case .MID)");
    let (mut ours_total, mut theirs_total) = (0usize, 0usize);
    let mut far = Vec::new();
    for path in files {
        let name = path.strip_prefix(&folder).unwrap().to_string_lossy().replace('\\', "/");
        let (_, notes) = extract::extract_file(&path, u64::MAX).unwrap_or_else(|e| panic!("{name}: {e}"));
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

#[test]
fn every_odd_file_is_read_or_rejected_with_a_one_line_reason() {
    let folder = shared_data("oddities");
    let files = extract::find_midi_files(&folder).unwrap();
    assert!(files.len() >= 140, "found only {} files", files.len());
    let (mut read, mut rejected) = (0, 0);
    for path in &files {
        match extract::extract_file(path, 16 << 20) {
            Ok((_, notes)) => {
                assert!(!notes.is_empty());
                read += 1;
            }
            Err(reason) => {
                assert!(!reason.is_empty() && !reason.contains('\n'), "{}: reason {reason:?}", path.display());
                rejected += 1;
            }
        }
    }
    // Most of these files are valid MIDI with odd features; some have no notes or are broken.
    assert!(read >= 100 && rejected >= 10, "read {read}, rejected {rejected}");
}
