//! Stages meet only through artifacts: no crate may use a stage crate's library, not
//! another stage and not a tool (`bench` runs the stage binaries instead). What they share
//! lives in the floor crates (`music`, `artifacts`, `lstm`, `config`, …), the network
//! (`lstm`) knows neither MIDI (`music`) nor the pipeline's settings (`config`), and the
//! matrix products under it (`products`) know nothing of the rest. Read from `cargo
//! metadata`, so a new dependency fails here, in CI. Inside the floor crates the modules
//! form no circle either: each module's `crate::` paths, read from its source.

use pipeline_tests::repo_root;
use serde_json::Value;
use std::process::Command;

/// The stage crates: each reads and writes artifacts, and no crate may depend on one.
const STAGES: [&str; 5] = ["extract", "encode", "train", "compose", "evaluate"];

/// Floor crates and what each must not depend on.
const FORBIDDEN: [(&str, &[&str]); 2] = [
    ("lstm", &["music", "config"]),
    ("products", &["lstm", "music", "config", "artifacts", "candle-core", "candle-nn", "seeded-rng"]),
];

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

/// The modules of a crate (one `.rs` file each under `src/`, `lib.rs` aside: the root
/// declares and re-exports them) and, for each, the modules its code names by `crate::`.
fn module_uses(krate: &str) -> Vec<(String, Vec<String>)> {
    let src = repo_root().join("crates").join(krate).join("src");
    let mut modules: Vec<(String, String)> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs") && !p.ends_with("lib.rs") && !p.ends_with("main.rs"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    modules.sort();
    let names: Vec<String> = modules.iter().map(|(name, _)| name.clone()).collect();
    modules
        .into_iter()
        .map(|(name, text)| {
            // Code only: `crate::x` in a comment is a link for the reader, not a dependency.
            let code: String = text
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n")
                .replace("crate::{", "crate::{ ");
            let used = names
                .iter()
                .filter(|other| **other != name)
                .filter(|other| {
                    code.contains(&format!("crate::{other}"))
                        || code.split("crate::{").skip(1).any(|group| {
                            group
                                .split('}')
                                .next()
                                .unwrap_or("")
                                .split([',', ' ', ':'])
                                .any(|item| item == other.as_str())
                        })
                })
                .cloned()
                .collect();
            (name, used)
        })
        .collect()
}

#[test]
fn the_modules_of_the_floor_crates_form_no_circle() {
    for krate in ["products", "lstm"] {
        let uses = module_uses(krate);
        assert!(uses.len() > 1, "{krate} has modules");
        // Peel off modules that use no module left; whatever remains lies on a circle.
        let mut left = uses.clone();
        while let Some(index) = left.iter().position(|(_, used)| used.iter().all(|u| !left.iter().any(|(n, _)| n == u)))
        {
            left.remove(index);
        }
        assert!(left.is_empty(), "modules of {krate} that use each other in a circle: {left:?}");
    }
}
