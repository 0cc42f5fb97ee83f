//! `precision = "auto"`: train and compose time both precisions, take the faster, say so
//! in the log and in their reports, and a resumed training run keeps the choice it began
//! with.

use pipeline_tests::{describe, run_stage, run_stages, tiny_project};
use std::path::Path;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Checks a report's `precision` trial: the rates measured, and a choice that follows
/// them (bfloat16 only when faster by the margin).
fn check_trial(trial: &serde_json::Value, unit: &str) {
    assert_eq!(trial["unit"], unit, "{trial}");
    let chosen = trial["chosen"].as_str().unwrap();
    match (trial["f32_per_second"].as_f64(), trial["bf16_per_second"].as_f64()) {
        (Some(f32), Some(bf16)) => {
            assert!(f32 > 0.0 && bf16 > 0.0, "{trial}");
            let bf16_wins = bf16 >= f32 * lstm::BF16_MARGIN;
            assert_eq!(chosen, if bf16_wins { "bf16" } else { "f32" }, "{trial}");
        }
        // No bfloat16 here: float32 without a race, and the reason given.
        _ => {
            assert_eq!(chosen, "f32", "{trial}");
            assert!(trial["bf16_unavailable"].as_str().is_some_and(|why| !why.is_empty()), "{trial}");
        }
    }
}

#[test]
fn auto_times_both_precisions_and_reports_its_choice_in_train_and_compose() {
    let project = tiny_project(2);
    let dir = project.path();
    for (stage, args) in [
        ("extract", vec!["--input", "midi", "--output", "notes.bin"]),
        ("encode", vec!["--input", "notes.bin", "--output", "dataset.bin"]),
        ("train", vec!["--input", "dataset.bin", "--output", "model.bin", "--set", "train.precision=auto"]),
        (
            "compose",
            vec![
                "--input",
                "model.bin",
                "--dataset",
                "dataset.bin",
                "--output",
                "piece.mid",
                "--set",
                "compose.precision=auto",
            ],
        ),
    ] {
        let output = run_stage(stage, dir, &args);
        assert!(output.status.success(), "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let timed = matches!(stage, "train" | "compose");
        assert_eq!(stderr.contains(&format!("{stage}: products in")), timed, "{stage} logs its choice: {stderr}");
    }
    let train = json(&dir.join("model.report.json"));
    assert!(train["precision"]["summary"].as_str().unwrap().contains("train.precision = \"auto\""), "{train}");
    check_trial(&train["precision"]["trial"], "targets");
    // Compose's figures, in tokens a second; where this processor has no bfloat16 (as
    // training found), the same reason instead.
    let compose = json(&dir.join("piece.mid.report.json"));
    let summary = compose["precision"].as_str().unwrap();
    let figures = train["precision"]["trial"]["bf16_unavailable"].as_str().unwrap_or("tokens");
    assert!(summary.contains("compose.precision = \"auto\"") && summary.contains(figures), "{compose}");
}

#[test]
fn a_resumed_auto_run_keeps_the_precision_its_checkpoint_began_with() {
    let project = tiny_project(2);
    let dir = project.path();
    run_stages(
        dir,
        &[
            ("extract", &["--input", "midi", "--output", "notes.bin"]),
            ("encode", &["--input", "notes.bin", "--output", "dataset.bin"]),
        ],
    );
    let flags = ["--input", "dataset.bin", "--output", "model.bin", "--epochs", "40", "--set", "train.precision=auto"];
    // 0.0005 minutes = 30 ms: a few steps, then a checkpoint.
    let cut = run_stage("train", dir, &[&flags[..], &["--max-minutes", "0.0005"]].concat());
    assert!(cut.status.success() && dir.join("model.bin.checkpoint").exists(), "{}", describe(&cut));
    let first = json(&dir.join("model.report.json"))["precision"]["trial"]["chosen"].as_str().unwrap().to_owned();

    let more = run_stage("train", dir, &[&flags[..], &["--max-minutes", "0"]].concat());
    let stderr = String::from_utf8_lossy(&more.stderr);
    assert!(more.status.success() && stderr.contains("resuming from"), "{stderr}");
    let report = json(&dir.join("model.report.json"));
    let summary = report["precision"]["summary"].as_str().unwrap();
    assert!(summary.contains("as chosen when the checkpointed run began"), "not timed again: {report}");
    let name = if first == "bf16" { "bfloat16" } else { "float32" };
    assert!(summary.starts_with(name), "began in {first}, resumed as {summary}");
}
