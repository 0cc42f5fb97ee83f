//! `evaluate` on the tiny pipeline: its loss is the training stage's validation loss, and a
//! training piece offered as "generated" music is reported as a copy of itself.

use pipeline_tests::{describe, run_stage, tiny_project};

/// A tiny project with notes.bin, dataset.bin, model.bin and music.mid made by the stages.
fn evaluated_project() -> tempfile::TempDir {
    let project = tiny_project(3);
    let dir = project.path();
    let steps: [(&str, &[&str]); 4] = [
        ("extract", &["--input", "midi", "--output", "notes.bin"]),
        ("encode", &["--input", "notes.bin", "--output", "dataset.bin"]),
        ("train", &["--input", "dataset.bin", "--output", "model.bin"]),
        ("compose", &["--input", "model.bin", "--dataset", "dataset.bin", "--output", "music.mid"]),
    ];
    pipeline_tests::run_stages(dir, &steps);
    project
}

#[test]
fn evaluation_agrees_with_training_and_catches_a_copy() {
    let project = evaluated_project();
    let dir = project.path();
    let (_, dataset) = artifacts::read::<artifacts::DatasetArtifact>(&dir.join("dataset.bin")).unwrap();
    let training_piece = dataset.pieces.iter().find(|p| p.split == artifacts::Split::Train).unwrap().source.clone();
    let copy = format!("midi/{training_piece}");
    let args = [
        "--dataset",
        "dataset.bin",
        "--model",
        "model.bin",
        "--notes",
        "notes.bin",
        "--output",
        "eval.json",
        "music.mid",
        &copy,
    ];
    let output = run_stage("evaluate", dir, &args);
    assert!(output.status.success(), "{}", describe(&output));

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
    let (_, model) = artifacts::read::<artifacts::ModelArtifact>(&dir.join("model.bin")).unwrap();
    // The model holds the weights of its best epoch, their logits divided by the
    // temperature fitted on the same validation pieces (train.calibrate).
    let best = model.history.iter().find(|e| e.epoch == model.weights_epoch).unwrap();
    let calibration = model.calibration.expect("train calibrates by default");
    let trained = f64::from(best.validation_loss.unwrap());
    assert!((trained - calibration.validation_loss_before).abs() < 1e-3, "{trained} {calibration:?}");
    assert!(calibration.validation_loss_after <= calibration.validation_loss_before + 1e-9, "{calibration:?}");
    let evaluated = report["model"]["nats_per_token"].as_f64().unwrap();
    let calibrated = calibration.validation_loss_after;
    assert!((calibrated - evaluated).abs() < 1e-3, "train says {calibrated}, evaluate says {evaluated}");

    let copied = &report["generated"][1];
    assert_eq!(copied["copied_ngram_share"].as_f64(), Some(1.0), "{copied}");
    assert_eq!(copied["flagged_as_copy"].as_bool(), Some(true));
    assert_eq!(copied["longest_copied_notes"]["source"].as_str(), Some(training_piece.as_str()));
    assert_eq!(copied["longest_copied_notes"]["position"].as_u64(), Some(0));
    let overlap = copied["music"]["against_validation"][0]["overlap"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&overlap));
    assert!(std::fs::read_to_string(dir.join("eval.md")).unwrap().contains("## Memorisation"));
}

#[test]
fn notes_a_data_set_was_not_made_from_are_refused() {
    let project = evaluated_project();
    let dir = project.path();
    // Another extraction: two of the three files.
    std::fs::remove_file(dir.join("midi").join(pipeline_tests::bundled_midi()[0].file_name().unwrap())).unwrap();
    pipeline_tests::run_stages(dir, &[("extract", &["--input", "midi", "--output", "other.bin"])]);
    let args = ["--dataset", "dataset.bin", "--model", "model.bin", "--notes", "other.bin", "music.mid"];
    let output = run_stage("evaluate", dir, &args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(stderr.contains("dataset.bin was not made from other.bin") && stderr.contains("`encode`"), "{stderr}");
}
