//! Helpers for the end-to-end tests in `tests/`: they run the real stage binaries and the
//! real Makefile on a tiny config and a few files of the bundled corpus, as a user would.
//!
//! Reads: `data/*.mid`, the Makefile, the release binaries (built once per test run with
//! `cargo build --release --bins`). Writes: only temporary folders.
//!
//! Key design decision: the tests drive processes, not library calls, so they check what a
//! user sees: exit codes, the messages on stderr, the files left on disk, and which stages
//! `make` reran.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// The folder cargo builds into, as cargo and the Makefile name it: `CARGO_TARGET_DIR`
/// where that is set (relative to the repository root), else `target`.
pub fn target_dir() -> String {
    std::env::var("CARGO_TARGET_DIR").ok().filter(|dir| !dir.is_empty()).unwrap_or_else(|| "target".to_owned())
}

/// The release binaries' folder, with every binary of the workspace built (once per
/// process) with the Makefile's `CARGO_FLAGS` from the environment, so that a test run of
/// the CUDA build (`make cuda-check`) tests CUDA binaries.
pub fn release_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let flags = std::env::var("CARGO_FLAGS").unwrap_or_default();
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--locked", "--bins"])
            .args(flags.split_whitespace())
            .current_dir(repo_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the stage binaries failed");
        repo_root().join(target_dir()).join("release")
    })
}

/// Runs a stage binary with `args` in `dir`.
pub fn run_stage(stage: &str, dir: &Path, args: &[&str]) -> Output {
    Command::new(release_bin().join(stage)).args(args).current_dir(dir).output().expect("stage binary runs")
}

/// Runs stages one after another in `dir`; panics with a stage's output if it fails.
pub fn run_stages(dir: &Path, steps: &[(&str, &[&str])]) {
    for (stage, args) in steps {
        let output = run_stage(stage, dir, args);
        assert!(output.status.success(), "{stage} failed: {}", describe(&output));
    }
}

/// A config that trains in about a second: small model, short windows, few tokens. The
/// file is also what `.ci/run` uses for its check of the output with an independent reader.
pub const TINY_CONFIG: &str = include_str!("../tiny-pipeline.toml");

/// A temporary project folder with `pipeline.toml` = [`TINY_CONFIG`] and `midi/` holding
/// the first `files` pieces of the bundled corpus.
pub fn tiny_project(files: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary folder");
    std::fs::write(dir.path().join("pipeline.toml"), TINY_CONFIG).unwrap();
    let midi = dir.path().join("midi");
    std::fs::create_dir(&midi).unwrap();
    for source in bundled_midi().iter().take(files) {
        std::fs::copy(source, midi.join(source.file_name().unwrap())).unwrap();
    }
    dir
}

/// The bundled corpus's MIDI files, sorted.
pub fn bundled_midi() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mid"))
        .collect();
    files.sort();
    files
}

/// stdout and stderr of a finished process, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
