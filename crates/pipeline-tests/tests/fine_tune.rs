//! Starting from a trained model: `train.init` fine-tunes another model's weights on new
//! data, refusing one that does not fit with a message naming both; `compose` writes music
//! from a model alone, with no data set.

use pipeline_tests::{describe, run_stage, run_stages, tiny_project};
use std::path::Path;

const PERFORMANCE: [&str; 4] = ["--set", "encode.encoding=performance", "--set", "encode.transpose=[0]"];

fn encode(dir: &Path, output: &str, extra: &[&str]) {
    let args = [&["--input", "notes.bin", "--output", output, "--seq-len", "16"][..], extra].concat();
    run_stages(dir, &[("encode", &args)]);
}

/// A tiny project with `dataset.bin` in the performance encoding and `model` trained on it.
fn performance_model(model: &str) -> tempfile::TempDir {
    let project = tiny_project(3);
    let dir = project.path();
    run_stages(dir, &[("extract", &["--input", "midi", "--output", "notes.bin"])]);
    encode(dir, "dataset.bin", &PERFORMANCE);
    run_stages(dir, &[("train", &["--input", "dataset.bin", "--output", model])]);
    project
}

#[test]
fn a_model_fine_tunes_from_another_and_records_where_it_started() {
    let project = performance_model("base.bin");
    let dir = project.path();

    // Fine-tuning: same encoding and shape, another seed for the data.
    let init = ["--set", "train.init=base.bin"];
    let tuned = run_stage(
        "train",
        dir,
        &[&["--input", "dataset.bin", "--output", "tuned.bin", "--epochs", "1"][..], &init].concat(),
    );
    assert!(tuned.status.success(), "{}", describe(&tuned));
    assert!(String::from_utf8_lossy(&tuned.stderr).contains("starting from the weights of base.bin"));
    let base_digest = artifacts::digest(&std::fs::read(dir.join("base.bin")).unwrap());
    let (header, model) = artifacts::read::<artifacts::ModelArtifact>(&dir.join("tuned.bin")).unwrap();
    let from = model.initialised_from.expect("the model records where its weights came from");
    assert_eq!((from.name.as_str(), from.digest), ("base.bin", base_digest));
    assert!(header.inputs.iter().any(|input| input.digest == base_digest), "the header lists the initial model");
    assert_eq!(model.history.len(), 1, "the history is this model's own training");
    assert_eq!(model.optimizer.step as usize, model.history.len() * steps_per_epoch(dir), "a fresh optimizer");

    // A config's own paths are read from its folder, whatever folder the stage runs in;
    // a missing one is named as resolved.
    let config = dir.join("pipeline.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replacen("[train]", "[train]\ninit = \"base.bin\"", 1)).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config_arg = config.to_str().unwrap();
    let dataset = dir.join("dataset.bin");
    let output = dir.join("from-elsewhere.bin");
    let args = ["--config", config_arg, "--input", dataset.to_str().unwrap(), "--output", output.to_str().unwrap()];
    let moved = run_stage("train", elsewhere.path(), &[&args[..], &["--epochs", "1"]].concat());
    assert!(moved.status.success(), "{}", describe(&moved));
    let (_, model) = artifacts::read::<artifacts::ModelArtifact>(&output).unwrap();
    assert_eq!(model.initialised_from.map(|from| from.digest), Some(base_digest));
    std::fs::write(&config, text.replacen("[train]", "[train]\ninit = \"gone.bin\"", 1)).unwrap();
    let missing = run_stage("train", elsewhere.path(), &args);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success() && stderr.contains(&dir.join("gone.bin").display().to_string()), "{stderr}");
    std::fs::write(&config, text).unwrap();

    // Another network shape, another encoding: refused, naming both sides.
    let wider = run_stage(
        "train",
        dir,
        &[&["--input", "dataset.bin", "--output", "wider.bin", "--set", "train.hidden=24"][..], &init].concat(),
    );
    let stderr = String::from_utf8_lossy(&wider.stderr);
    assert!(!wider.status.success() && stderr.contains("train.hidden = 16, this config says 24"), "{stderr}");
    encode(dir, "names.bin", &[]);
    let other = run_stage("train", dir, &[&["--input", "names.bin", "--output", "other.bin"][..], &init].concat());
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success() && stderr.contains("encoding") && stderr.contains("base.bin"), "{stderr}");
}

/// Training steps in one epoch of `dataset.bin` at the tiny config's batch size.
fn steps_per_epoch(dir: &Path) -> usize {
    let (_, dataset) = artifacts::read::<artifacts::DatasetArtifact>(&dir.join("dataset.bin")).unwrap();
    dataset.windows(artifacts::Split::Train).len().div_ceil(8)
}

#[test]
fn a_model_composes_alone_with_no_data_set() {
    let project = performance_model("model.bin");
    let dir = project.path();
    // As a user runs it outside the project: no data set, no pipeline.toml.
    std::fs::remove_file(dir.join("dataset.bin")).unwrap();
    std::fs::rename(dir.join("pipeline.toml"), dir.join("elsewhere.toml")).unwrap();
    let output = run_stage("compose", dir, &["--input", "model.bin", "--output", "alone.mid", "--seconds", "3"]);
    assert!(output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("starting from the model alone") && stderr.contains("every setting at its default"));
    std::fs::rename(dir.join("elsewhere.toml"), dir.join("pipeline.toml")).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("alone.mid.report.json")).unwrap()).unwrap();
    assert!(report["notes"].as_u64().unwrap() > 0, "{report}");

    // The original encoding has no neutral first token: the message says what to pass.
    encode(dir, "names.bin", &[]);
    run_stages(dir, &[("train", &["--input", "names.bin", "--output", "names-model.bin"])]);
    let output = run_stage("compose", dir, &["--input", "names-model.bin", "--output", "x.mid"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("pass --dataset"), "{stderr}");
}

#[test]
fn a_dense_primer_starts_the_piece_with_its_first_notes() {
    let project = performance_model("model.bin");
    let dir = project.path();
    // 6,000 notes in the first two seconds: 24 keys struck on each of 250 steps.
    let notes: Vec<music::Note> = (0..250)
        .flat_map(|step| {
            (0..24).map(move |k| music::Note::of_score(36 + k * 2, 70, f64::from(step) / 64.0, 0.01, 120.0))
        })
        .collect();
    let score = music::Score { notes, ..Default::default() };
    std::fs::write(dir.join("dense.mid"), music::midi_out::to_bytes(&score, None)).unwrap();
    let args = ["--input", "model.bin", "--dataset", "dataset.bin", "--primer", "dense.mid", "--seconds", "3"];
    let output = run_stage("compose", dir, &[&args[..], &["--output", "dense-out.mid"]].concat());
    assert!(output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = format!("the first {} start the piece", compose::MAX_PRIMER_NOTES);
    assert!(stderr.contains("6000 notes in its first") && stderr.contains(&first), "{stderr}");
}
