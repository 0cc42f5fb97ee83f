//! A corpus with as many files as a real collection runs through every stage: the
//! artifacts' headers must stay small however many files there are (a header listing every
//! input once made `encode` refuse the `notes.bin` of any corpus past ~520 files).

use pipeline_tests::{TINY_CONFIG, run_stages};
use test_support::odd_midi::{event, header, track};

/// A short phrase of sixteen quarter notes, different for every `index`.
fn piece(index: usize) -> Vec<u8> {
    let mut events = Vec::new();
    for step in 0..16u8 {
        let pitch = 48 + ((index * 7 + usize::from(step) * 5) % 36) as u8;
        events.extend(event(0, &[0x90, pitch, 70]));
        events.extend(event(96, &[0x80, pitch, 0]));
    }
    events.extend(event(0, &[0xff, 0x2f, 0x00]));
    [header(0, 1, 96), track(&events)].concat()
}

#[test]
fn two_thousand_files_with_long_names_go_through_the_whole_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.toml"), TINY_CONFIG).unwrap();
    let midi = dir.path().join("midi");
    std::fs::create_dir(&midi).unwrap();
    for index in 0..2000 {
        // MAESTRO-style names, 120 characters each.
        let stem = format!("MIDI-Unprocessed_SMF_02_R1_2004_01-05_ORIG_MID--AUDIO_02_R1_2004_05_Track{index:05}_wav");
        let name = format!("{stem:_<115}.midi");
        assert_eq!(name.len(), 120);
        std::fs::write(midi.join(name), piece(index)).unwrap();
    }
    run_stages(
        dir.path(),
        &[
            ("extract", &["--input", "midi", "--output", "notes.bin"]),
            ("encode", &["--input", "notes.bin", "--output", "dataset.bin"]),
            ("train", &["--input", "dataset.bin", "--output", "model.bin", "--epochs", "1"]),
            ("compose", &["--input", "model.bin", "--dataset", "dataset.bin", "--output", "music.mid"]),
        ],
    );
    let (notes, _) = artifacts::read_input::<artifacts::NotesArtifact>(&dir.path().join("notes.bin")).unwrap();
    assert_eq!(notes.files.len(), 2000);
    assert!(dir.path().join("music.mid").is_file());
}
