//! Property test: real piano files, damaged at random (truncated, bytes flipped, inserted
//! or deleted), must give notes or a reason — never a panic or a hang.
//!
//! CI runs 1,000 cases; set PROPTEST_CASES=100000 for a long run.

use config::ExtractConfig;
use proptest::prelude::*;
use std::path::PathBuf;

fn seeds() -> Vec<Vec<u8>> {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/piano/classical-piano-composer/midi_songs");
    assert!(folder.is_dir(), "{} is missing: the shared MIDI corpus must be beside the checkout", folder.display());
    ["8.mid", "0fithos.mid", "AT.mid"].iter().map(|name| std::fs::read(folder.join(name)).unwrap()).collect()
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
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_files_give_notes_or_a_reason(which in 0..3usize, damages in prop::collection::vec(damage(), 1..6)) {
        thread_local!(static SEEDS: Vec<Vec<u8>> = seeds());
        let mut bytes = SEEDS.with(|s| s[which].clone());
        for d in &damages {
            apply(&mut bytes, d);
        }
        match extract::notes_of_midi(&bytes, &ExtractConfig::default()) {
            Ok(notes) => prop_assert!(notes.iter().all(|n| n.duration_seconds > 0.0 && n.pitch < 128)),
            Err(reason) => prop_assert!(!reason.is_empty() && !reason.contains('\n')),
        }
    }
}
