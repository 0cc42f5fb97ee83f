//! Interrupted training resumes from its checkpoint and ends with exactly the weights of
//! a run that was never interrupted.

use pipeline_tests::{describe, release_bin, run_stage, tiny_project};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Long enough to be interrupted, with a checkpoint after every step.
const TRAIN_FLAGS: [&str; 4] = ["--set", "train.checkpoint_steps=1", "--epochs", "40"];
/// Settings whose state a resumed run must pick up where it was (a learning-rate schedule:
/// warm-up, decay on plateaus; a moving average of the weights): every run here trains with them.
const STATEFUL_FLAGS: [&str; 6] =
    ["--set", "train.warmup_epochs=1.5", "--set", "train.plateau_decay=0.7", "--set", "train.ema_decay=0.9"];

fn prepare(dir: &Path) {
    for (stage, args) in [
        ("extract", vec!["--input", "midi", "--output", "notes.bin"]),
        ("encode", vec!["--input", "notes.bin", "--output", "dataset.bin"]),
    ] {
        let output = run_stage(stage, dir, &args);
        assert!(output.status.success(), "{}", describe(&output));
    }
}

fn train(dir: &Path, output: &str) -> std::process::Output {
    let mut args = vec!["--input", "dataset.bin", "--output", output];
    args.extend(TRAIN_FLAGS);
    args.extend(STATEFUL_FLAGS);
    run_stage("train", dir, &args)
}

/// A model file's bytes: a resumed run must write exactly the file an unbroken run writes.
fn model_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Starts training into `output`, waits for its first checkpoint plus `delay`, then stops
/// it with `signal` ("KILL" or "INT"). Returns the stopped process's output.
fn interrupt(dir: &Path, output: &str, delay: Duration, signal: &str) -> std::process::Output {
    let mut args = vec!["--input", "dataset.bin", "--output", output];
    args.extend(TRAIN_FLAGS);
    args.extend(STATEFUL_FLAGS);
    let mut child = Command::new(release_bin().join("train"))
        .args(&args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let checkpoint = dir.join(format!("{output}.checkpoint"));
    let started = Instant::now();
    while !checkpoint.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(delay);
    assert!(child.try_wait().unwrap().is_none(), "training finished before it could be interrupted");
    let status = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    child.wait_with_output().unwrap()
}

#[test]
fn killed_and_interrupted_runs_resume_to_the_uninterrupted_weights() {
    let project = tiny_project(2);
    let dir = project.path();
    prepare(dir);
    let reference = train(dir, "reference.bin");
    assert!(reference.status.success(), "{}", describe(&reference));
    let expected = model_bytes(&dir.join("reference.bin"));
    assert!(!dir.join("reference.bin.checkpoint").exists(), "a finished run removes its checkpoint");
    // Every run here writes its curve beside its model, in this one folder.
    let curve = || std::fs::read_to_string(dir.join("training_curve.svg")).unwrap();
    let expected_curve = curve();

    // SIGKILL at a point that differs from run to run: no chance to clean up.
    let delay = Duration::from_millis(u64::from(std::process::id() % 97) + 5);
    let killed = interrupt(dir, "killed.bin", delay, "KILL");
    assert!(!killed.status.success());
    assert!(!dir.join("killed.bin").exists(), "a killed run leaves no model");
    let resumed = train(dir, "killed.bin");
    assert!(resumed.status.success(), "{}", describe(&resumed));
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("resuming from"), "{}", describe(&resumed));
    assert!(model_bytes(&dir.join("killed.bin")) == expected, "resumed after SIGKILL: weights differ");
    assert!(curve() == expected_curve, "the resumed run's curve draws every step, the killed run's too");

    // Ctrl-C: the step finishes, a checkpoint is saved, and the message says so.
    let stopped = interrupt(dir, "stopped.bin", Duration::from_millis(20), "INT");
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(!stopped.status.success() && stderr.contains("interrupted: progress saved to"), "{stderr}");
    assert!(dir.join("stopped.bin.checkpoint").exists());
    let resumed = train(dir, "stopped.bin");
    assert!(resumed.status.success(), "{}", describe(&resumed));
    assert!(model_bytes(&dir.join("stopped.bin")) == expected, "resumed after Ctrl-C: weights differ");
    assert!(curve() == expected_curve, "the resumed run's curve draws every step, the stopped run's too");
}

#[test]
fn a_checkpoint_for_settings_that_change_the_weights_is_not_resumed_and_the_message_says_which() {
    let project = tiny_project(2);
    let dir = project.path();
    prepare(dir);
    let stopped = interrupt(dir, "model.bin", Duration::from_millis(5), "INT");
    assert!(!stopped.status.success());
    let output = run_stage(
        "train",
        dir,
        &["--input", "dataset.bin", "--output", "model.bin", "--epochs", "2", "--set", "train.learning_rate=0.01"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.contains("starting afresh"), "{stderr}");
    assert!(stderr.contains("train.learning_rate 0.002 → 0.01"), "the message names the setting: {stderr}");
    let (_, model) = artifacts::read::<artifacts::ModelArtifact>(&dir.join("model.bin")).unwrap();
    assert_eq!(model.history.len(), 2);
}

#[test]
fn more_epochs_or_other_threads_resume_the_checkpoint() {
    let project = tiny_project(2);
    let dir = project.path();
    prepare(dir);
    let reference_flags = ["--input", "dataset.bin", "--output", "reference.bin", "--epochs", "41"];
    let reference = run_stage("train", dir, &[&reference_flags[..], &STATEFUL_FLAGS].concat());
    assert!(reference.status.success(), "{}", describe(&reference));
    let stopped = interrupt(dir, "model.bin", Duration::from_millis(5), "INT");
    assert!(!stopped.status.success());
    let output = run_stage(
        "train",
        dir,
        &[
            &["--input", "dataset.bin", "--output", "model.bin", "--epochs", "41", "--threads", "2"][..],
            &STATEFUL_FLAGS,
        ]
        .concat(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stderr.contains("resuming from"), "{stderr}");
    // The same model; only the header's config digest differs (the thread count is a setting).
    let payload = |name: &str| artifacts::read::<artifacts::ModelArtifact>(&dir.join(name)).unwrap().1;
    assert!(payload("model.bin") == payload("reference.bin"), "resumed on other threads: weights differ");
}

#[test]
fn a_run_stopped_by_its_time_budget_continues_when_the_budget_grows() {
    // Also with the state carried from window to window: the checkpoint, taken part-way
    // through an epoch, must hand every window's stored state to the resumed run.
    for carry in ["train.carry_state=false", "train.carry_state=true"] {
        let project = tiny_project(2);
        let dir = project.path();
        prepare(dir);
        let flags = ["--input", "dataset.bin", "--epochs", "40", "--set", carry];
        let reference = run_stage("train", dir, &[&flags[..], &["--output", "reference.bin"]].concat());
        assert!(reference.status.success(), "{}", describe(&reference));

        // 0.0005 minutes = 30 ms: a few steps of the first epoch.
        let budget =
            run_stage("train", dir, &[&flags[..], &["--output", "model.bin", "--max-minutes", "0.0005"]].concat());
        let stderr = String::from_utf8_lossy(&budget.stderr);
        assert!(budget.status.success() && stderr.contains("reached train.max_minutes"), "{carry}: {stderr}");
        let (_, cut) = artifacts::read::<artifacts::ModelArtifact>(&dir.join("model.bin")).unwrap();
        assert!(cut.history.len() < 40, "{carry}: stopped early: {} epochs", cut.history.len());
        assert!(dir.join("model.bin.checkpoint").exists(), "the checkpoint stays, to continue from");

        let more = run_stage("train", dir, &[&flags[..], &["--output", "model.bin", "--max-minutes", "0"]].concat());
        let stderr = String::from_utf8_lossy(&more.stderr);
        assert!(more.status.success() && stderr.contains("resuming from"), "{carry}: {stderr}");
        // The same model; only the header's config digest differs (the thread count is a setting).
        let payload = |name: &str| artifacts::read::<artifacts::ModelArtifact>(&dir.join(name)).unwrap().1;
        assert!(payload("model.bin") == payload("reference.bin"), "{carry}: resumed: weights differ");
        assert!(!dir.join("model.bin.checkpoint").exists(), "a completed run removes its checkpoint");
    }
}
