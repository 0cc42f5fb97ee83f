//! Stages meet only through artifacts: no crate may use a stage crate's library, not
//! another stage and not a tool (`bench` runs the stage binaries instead). What they share
//! lives in the floor crates (`music`, `artifacts`, `lstm`, `config`, …), and the network
//! (`lstm`) knows neither MIDI (`music`) nor the pipeline's settings (`config`). Read from
//! `cargo metadata`, so a new dependency fails here, in CI.

use pipeline_tests::repo_root;
use serde_json::Value;
use std::process::Command;

/// The stage crates: each reads and writes artifacts, and no crate may depend on one.
const STAGES: [&str; 5] = ["extract", "encode", "train", "compose", "evaluate"];

/// Floor crates and what each must not depend on.
const FORBIDDEN: [(&str, &[&str]); 1] = [("lstm", &["music", "config"])];

/// Every workspace crate's normal and build dependencies, as (crate, dependency) pairs; a
/// test (dev-dependency) may run a stage, so those are left out.
fn workspace_dependencies() -> Vec<(String, String)> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut pairs = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap_or_default();
        for dependency in package["dependencies"].as_array().unwrap() {
            if dependency["kind"] != "dev" {
                pairs.push((name.to_owned(), dependency["name"].as_str().unwrap_or_default().to_owned()));
            }
        }
    }
    pairs
}

#[test]
fn no_crate_depends_on_a_stage_crate() {
    let pairs = workspace_dependencies();
    for stage in STAGES {
        assert!(pairs.iter().any(|(name, _)| name == stage), "{stage} is a workspace crate with dependencies");
    }
    let offences: Vec<String> = pairs
        .iter()
        .filter(|(_, dependency)| STAGES.contains(&dependency.as_str()))
        .map(|(name, dependency)| format!("{name} depends on {dependency}"))
        .collect();
    assert!(offences.is_empty(), "stages meet only through artifacts: {offences:?}");
}

#[test]
fn floor_crates_stay_below_what_they_must_not_know() {
    let pairs = workspace_dependencies();
    let offences: Vec<String> = pairs
        .iter()
        .filter(|(name, dependency)| {
            FORBIDDEN.iter().any(|(floor, forbidden)| name == floor && forbidden.contains(&dependency.as_str()))
        })
        .map(|(name, dependency)| format!("{name} depends on {dependency}"))
        .collect();
    assert!(offences.is_empty(), "a floor crate reaches up: {offences:?}");
}
