//! Extraction of MIDI files crafted to be odd or broken (`test_support::odd_midi`): each is
//! read or rejected as its table entry says, alone and as part of a folder whose summary
//! counts every rejection. Runs everywhere: the files are made here, not read from outside.

use test_support::odd_midi::{self, Expect};

#[test]
fn every_crafted_file_is_read_or_rejected_as_expected() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for file in odd_midi::all() {
        let path = dir.path().join(file.name);
        std::fs::write(&path, &file.bytes).unwrap();
        let outcome = match extract::extract_file(&path, &Default::default()) {
            Ok((_, music::Score { notes, .. }, _)) => {
                assert!(notes.iter().all(|n| n.duration_seconds > 0.0 && (21..=108).contains(&n.pitch)));
                Expect::Notes(notes.len())
            }
            Err(reason) => {
                assert!(!reason.contains('\n'), "{}: a reason is one line: {reason:?}", file.name);
                match file.expect {
                    Expect::Rejected(start) if reason.starts_with(start) => file.expect,
                    _ => {
                        failures.push(format!("{}: rejected: {reason}", file.name));
                        continue;
                    }
                }
            }
        };
        if outcome != file.expect {
            failures.push(format!("{}: {outcome:?}, expected {:?}", file.name, file.expect));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_folder_of_crafted_files_is_extracted_with_every_rejection_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("midi");
    std::fs::create_dir(&input).unwrap();
    let files = odd_midi::all();
    for file in &files {
        std::fs::write(input.join(file.name), &file.bytes).unwrap();
    }
    let rejected = files.iter().filter(|f| matches!(f.expect, Expect::Rejected(_))).count();
    let notes: usize = files.iter().map(|f| if let Expect::Notes(n) = f.expect { n } else { 0 }).sum();
    let report = extract::run(&Default::default(), &input, &dir.path().join("notes.bin")).unwrap();
    assert_eq!((report.files_read, report.files_skipped), (files.len() - rejected, rejected));
    assert_eq!(report.notes, notes);
    assert_eq!(report.skipped.values().map(Vec::len).sum::<usize>(), rejected);
}

#[test]
fn a_rest_of_any_length_is_shortened_to_the_configured_maximum() {
    let bytes = [odd_midi::header(0, 1, 1), odd_midi::track(&odd_midi::huge_rest())].concat();
    let limits = config::ExtractConfig::default();
    let (music::Score { notes, .. }, facts) = music::midi_in::read_midi(&bytes, &limits.read_options()).unwrap();
    assert_eq!(notes.len(), 2);
    let rest = notes[1].onset_seconds - (notes[0].onset_seconds + notes[0].duration_seconds);
    assert!((rest - limits.max_rest_seconds).abs() < 1e-6, "a rest of {rest} s");
    assert!(notes[1].onset_quarters > notes[0].onset_quarters && notes[1].onset_quarters < 10.0);
    assert_eq!(facts.rests_shortened, 1);
}

#[cfg(unix)]
#[test]
fn names_that_are_not_utf8_stay_apart_and_special_files_are_counted() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("midi");
    std::fs::create_dir(&input).unwrap();
    let plain = odd_midi::all().into_iter().find(|f| f.name == "plain-two-notes.mid").unwrap().bytes;
    for name in [&b"a\xff.mid"[..], b"a\xfe.mid"] {
        std::fs::write(input.join(std::ffi::OsStr::from_bytes(name)), &plain).unwrap();
    }
    // A FIFO and a link loop with MIDI names: rejected with a reason and counted.
    assert!(std::process::Command::new("mkfifo").arg(input.join("pipe.mid")).status().unwrap().success());
    std::os::unix::fs::symlink("loop.mid", input.join("loop.mid")).unwrap();
    let report = extract::run(&Default::default(), &input, &dir.path().join("notes.bin")).unwrap();
    assert_eq!((report.files_read, report.files_skipped), (2, 2), "{:?}", report.skipped);
    let (notes, _) = artifacts::read_input::<artifacts::NotesArtifact>(&dir.path().join("notes.bin")).unwrap();
    let names: Vec<&str> = notes.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(names, ["a\\xfe.mid", "a\\xff.mid"]);
}
