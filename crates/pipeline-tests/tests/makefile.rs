//! The Makefile reruns exactly the stale stages, and its dry run (`make -n`) and question
//! mode (`make -q`) say so beforehand (the repository's real Makefile, run with `ART`,
//! `CONFIG` and `DATA` pointing into a temporary project).

use pipeline_tests::{bundled_midi, describe, release_bin, repo_root, target_dir, tiny_project};
use std::path::Path;
use std::process::Command;

const STAGES: [&str; 4] = ["extract", "encode", "train", "compose"];

/// Runs `make` for the project in `dir`, with `flags` (e.g. `-n`); returns the output.
fn make_with(dir: &Path, flags: &[&str]) -> std::process::Output {
    release_bin();
    let mut command = Command::new("make");
    command
        .current_dir(repo_root())
        .args(flags)
        .arg(format!("ART={}", dir.join("artifacts").display()))
        .arg(format!("CONFIG={}", dir.join("pipeline.toml").display()))
        .arg(format!("DATA={}", dir.join("midi").display()));
    command.output().expect("make runs")
}

fn make(dir: &Path) -> std::process::Output {
    make_with(dir, &[])
}

/// Which stages' binaries a `make` run echoed (or, with `-n`, would run).
fn stages_echoed(output: &std::process::Output) -> Vec<&'static str> {
    assert!(output.status.success(), "make failed: {}", describe(output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    STAGES
        .into_iter()
        .filter(|stage| stdout.lines().any(|l| l.starts_with(&format!("{}/release/{stage} ", target_dir()))))
        .collect()
}

/// Which stages `make` ran, having checked that `make -n` listed exactly those first, and
/// that afterwards `make -q` finds everything fresh.
fn stages_run(dir: &Path) -> Vec<&'static str> {
    let predicted = stages_echoed(&make_with(dir, &["-n"]));
    let ran = stages_echoed(&make(dir));
    assert_eq!(predicted, ran, "`make -n` listed other stages than `make` ran");
    let question = make_with(dir, &["-q"]);
    assert_eq!(question.status.code(), Some(0), "`make -q` after make: {}", describe(&question));
    ran
}

fn edit_config(dir: &Path, from: &str, to: &str) {
    let path = dir.join("pipeline.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "the tiny config has `{from}`");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn make_reruns_only_stale_stages() {
    let project = tiny_project(2);
    let dir = project.path();
    assert_eq!(stages_run(dir), STAGES, "a fresh project runs every stage");
    assert!(dir.join("artifacts/generated_music.mid").is_file());
    assert!(dir.join("artifacts/index.html").is_file(), "make draws the run's page");

    // (a) Nothing changed: nothing runs.
    assert_eq!(stages_run(dir), Vec::<&str>::new());

    // (b) Only [compose] changed.
    edit_config(dir, "temperature = 1.0", "temperature = 0.8");
    assert_eq!(stages_run(dir), ["compose"]);

    // (c) Only [train] changed: the model and then the music are stale. (A setting that
    // changes every weight: with more epochs the best epoch, and so the music, may stay.)
    edit_config(dir, "dropout = 0.1", "dropout = 0.2");
    assert_eq!(stages_run(dir), ["train", "compose"]);

    // A comment is not a change, nor is another spelling of the same settings: the stage
    // binaries, not the Makefile, read the config.
    edit_config(dir, "[train]", "[train] # shorter run");
    assert_eq!(stages_run(dir), Vec::<&str>::new());
    edit_config(dir, "encoding = \"names\"", "'encoding' = 'seed'");
    edit_config(dir, "[compose]", "[compose]\nmax_held = 12");
    assert_eq!(stages_run(dir), Vec::<&str>::new());
    // A dotted key is the same setting as its section's key, and its change is a change.
    edit_config(dir, "[runtime]\nthreads = 1", "runtime.threads = 1");
    assert_eq!(stages_run(dir), Vec::<&str>::new());
    edit_config(dir, "runtime.threads = 1", "runtime.threads = 2");
    assert_eq!(stages_run(dir), ["train", "compose"]);
    // A config the stages cannot read makes them run, and fail with the reason.
    edit_config(dir, "runtime.threads = 2", "runtime.threads = 'many'");
    let output = make(dir);
    assert!(!output.status.success(), "make succeeded on a broken config");
    assert!(String::from_utf8_lossy(&output.stderr).contains("runtime.threads"), "{}", describe(&output));
    edit_config(dir, "runtime.threads = 'many'", "runtime.threads = 2");
    assert_eq!(stages_run(dir), Vec::<&str>::new());

    // (d) A new MIDI file: every stage.
    let new_piece = &bundled_midi()[2];
    std::fs::copy(new_piece, dir.join("midi").join(new_piece.file_name().unwrap())).unwrap();
    assert_eq!(stages_run(dir), STAGES);

    // (e) A file touched but not changed: the inputs are judged by content, nothing runs.
    let touched = dir.join("midi").join(new_piece.file_name().unwrap());
    let later = std::time::SystemTime::now();
    std::fs::File::options().write(true).open(&touched).unwrap().set_modified(later).unwrap();
    assert_eq!(stages_run(dir), Vec::<&str>::new());
    // …and one byte changed (a note's velocity, in the last track's last note-on) is a change.
    let mut bytes = std::fs::read(&touched).unwrap();
    let note_on = bytes.iter().rposition(|&b| b & 0xf0 == 0x90).expect("a note-on");
    bytes[note_on + 2] = if bytes[note_on + 2] == 64 { 65 } else { 64 };
    std::fs::write(&touched, bytes).unwrap();
    assert_eq!(stages_run(dir), STAGES);
}

#[test]
fn make_takes_its_variables_as_text_never_as_commands() {
    let project = tiny_project(2);
    let dir = project.path();
    // Commands run by make or its shell would run in the repository's folder.
    let marker = |n: u32| repo_root().join(format!("PWNED{n}"));
    // A folder whose name is make and shell syntax: make's $(shell), a backtick command,
    // a command substitution, quotes and spaces; each would leave a marker file if run.
    let name = "a$(shell touch PWNED1) `touch PWNED2` $(touch PWNED3) 'q' \"d\"";
    let data = dir.join(name);
    std::fs::rename(dir.join("midi"), &data).unwrap();
    release_bin();
    let output = Command::new("make")
        .current_dir(repo_root())
        .arg(format!("ART={}", dir.join("artifacts").display()))
        .arg(format!("CONFIG={}", dir.join("pipeline.toml").display()))
        .arg(format!("DATA={}", data.display()))
        .output()
        .expect("make runs");
    assert!(output.status.success(), "{}", describe(&output));
    assert!(dir.join("artifacts/generated_music.mid").is_file());
    for n in 1..=3 {
        assert!(!marker(n).exists(), "PWNED{n}: make or the shell ran a command from DATA");
    }
    // A path make must name targets with is refused, not half used.
    let output = Command::new("make").current_dir(repo_root()).args(["-n", "ART=a b"]).output().unwrap();
    assert!(!output.status.success() && String::from_utf8_lossy(&output.stderr).contains("ART must be a plain path"));
}
