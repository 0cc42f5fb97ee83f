//! The whole pipeline on damaged and hostile MIDI files, under a memory ceiling: every stage
//! ends with its output or a one-line error (exit 0 or 1), never a panic, a signal or an
//! allocation past the ceiling. "Every size is bounded" is checked here, not assumed.

use pipeline_tests::{TINY_CONFIG, bundled_midi, describe, release_bin};
use std::process::Command;
use test_support::odd_midi::{self, header, huge_rest, track};

/// Address space each stage may use (`ulimit -v`, in KiB): far above what the tiny
/// pipeline needs, far below what an unbounded allocation would ask for.
const MEMORY_CEILING_KIB: u64 = 3 << 20;

/// A small deterministic random stream (xorshift64), so a failing case can be rerun.
struct Stream(u64);

impl Stream {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// `bytes` with a few random truncations, flips, insertions and deletions.
fn damaged(mut bytes: Vec<u8>, stream: &mut Stream) -> Vec<u8> {
    for _ in 0..1 + stream.below(4) {
        let at = stream.below(bytes.len());
        match stream.below(4) {
            0 => bytes.truncate(at.max(14)),
            1 if !bytes.is_empty() => bytes[at] ^= 1 + stream.below(255) as u8,
            2 => {
                let insert: Vec<u8> = (0..1 + stream.below(8)).map(|_| stream.below(256) as u8).collect();
                bytes.splice(at..at, insert);
            }
            _ => {
                let end = (at + 1 + stream.below(32)).min(bytes.len());
                bytes.drain(at..end);
            }
        }
    }
    bytes
}

#[test]
fn every_stage_ends_cleanly_on_damaged_files_under_a_memory_ceiling() {
    let originals: Vec<Vec<u8>> = bundled_midi().iter().map(|p| std::fs::read(p).unwrap()).collect();
    let mut stream = Stream(0x9e37_79b9_7f4a_7c15);
    let bin = release_bin();
    let mut composed = 0;
    for case in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pipeline.toml"), TINY_CONFIG).unwrap();
        let midi = dir.path().join("midi");
        std::fs::create_dir(&midi).unwrap();
        for (index, original) in originals.iter().enumerate().take(4) {
            std::fs::write(midi.join(format!("{index}.mid")), damaged(original.clone(), &mut stream)).unwrap();
        }
        std::fs::write(midi.join("rest.mid"), [header(0, 1, 1), track(&huge_rest())].concat()).unwrap();
        let hostile = odd_midi::all();
        let odd = &hostile[stream.below(hostile.len())];
        std::fs::write(midi.join(odd.name), &odd.bytes).unwrap();

        let stages = [
            ("extract", "--input midi --output notes.bin"),
            ("encode", "--input notes.bin --output dataset.bin"),
            ("train", "--input dataset.bin --output model.bin --epochs 1"),
            ("compose", "--input model.bin --dataset dataset.bin --output music.mid"),
        ];
        for (stage, args) in stages {
            let script = format!("ulimit -v {MEMORY_CEILING_KIB}; exec {} {args}", bin.join(stage).display());
            let output = Command::new("sh").arg("-c").arg(&script).current_dir(dir.path()).output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                matches!(output.status.code(), Some(0 | 1)) && !stderr.contains("panicked"),
                "case {case}, {stage}: {}",
                describe(&output)
            );
            if output.status.code() != Some(0) {
                assert!(stderr.lines().any(|l| l.starts_with("error: ")), "case {case}, {stage}: {stderr}");
                break;
            }
            composed += usize::from(stage == "compose");
        }
    }
    // Damage usually leaves enough readable notes: most cases must reach the music.
    assert!(composed >= 8, "only {composed} of 12 cases went through all four stages");
}
