//! Property test: real piano files, damaged at random (truncated, bytes flipped, inserted
//! or deleted), must give notes or a reason — never a panic, and never a case that runs
//! past a deadline (each case runs under proptest's timeout, in a child process).
//!
//! The seeds are the bundled corpus's files (always there) and, where the shared corpus is
//! beside the checkout, three of its files too. CI runs 1,000 cases; set
//! PROPTEST_CASES=100000 for a long run.

use music::ReadOptions;
use proptest::prelude::*;

fn seeds() -> Vec<Vec<u8>> {
    let bundled = test_support::repo_root().join("data");
    let mut files: Vec<_> = std::fs::read_dir(&bundled)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "mid"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the bundled corpus in {} has MIDI files", bundled.display());
    if let Some(piano) = test_support::corpus("piano", "mutated_files (adds real-world seeds)") {
        let folder = piano.join("classical-piano-composer/midi_songs");
        files.extend(["8.mid", "0fithos.mid", "AT.mid"].iter().map(|name| folder.join(name)));
    }
    files.iter().map(|path| std::fs::read(path).unwrap()).collect()
}

#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Damage::Flip(at, mask)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| Damage::Insert(at, bytes)),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| Damage::Delete(at, len)),
    ]
}

fn apply(bytes: &mut Vec<u8>, damage: &Damage) {
    let len = bytes.len().max(1);
    match damage {
        Damage::Truncate(at) => bytes.truncate(at % len),
        Damage::Flip(at, mask) if !bytes.is_empty() => bytes[at % len] ^= mask,
        Damage::Insert(at, new) => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Damage::Delete(at, count) if !bytes.is_empty() => {
            let at = at % len;
            let end = (at + count).min(bytes.len());
            bytes.drain(at..end);
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(1000),
        failure_persistence: None,
        // A case that takes longer than this is a hang: parsing one damaged file takes
        // milliseconds.
        timeout: 10_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_files_give_notes_or_a_reason(which in any::<prop::sample::Index>(), damages in prop::collection::vec(damage(), 1..6)) {
        thread_local!(static SEEDS: Vec<Vec<u8>> = seeds());
        let mut bytes = SEEDS.with(|s| s[which.index(s.len())].clone());
        for d in &damages {
            apply(&mut bytes, d);
        }
        match music::midi_in::notes_of_midi(&bytes, &ReadOptions::default()) {
            Ok(notes) => prop_assert!(notes.iter().all(|n| n.duration_seconds > 0.0 && (21..=108).contains(&n.pitch))),
            Err(reason) => prop_assert!(!reason.is_empty() && !reason.contains('\n')),
        }
    }
}
