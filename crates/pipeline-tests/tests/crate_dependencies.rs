//! Stages meet only through artifacts: no stage crate may use another stage crate's
//! library. What they share lives in the floor crates (`music`, `artifacts`, `lstm`,
//! `config`, …). Read from `cargo metadata`, so a new dependency fails here, in CI.

use pipeline_tests::repo_root;
use serde_json::Value;
use std::process::Command;

/// The stage crates: each reads and writes artifacts, and none may depend on another.
const STAGES: [&str; 5] = ["extract", "encode", "train", "compose", "evaluate"];

#[test]
fn no_stage_crate_depends_on_another() {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let mut found = 0;
    let mut offences = Vec::new();
    for package in packages.iter().filter(|p| STAGES.contains(&p["name"].as_str().unwrap_or_default())) {
        found += 1;
        // Normal and build dependencies; a test (dev-dependency) may run another stage.
        for dependency in package["dependencies"].as_array().unwrap() {
            let name = dependency["name"].as_str().unwrap_or_default();
            if STAGES.contains(&name) && dependency["kind"] != "dev" {
                offences.push(format!("{} depends on {name}", package["name"].as_str().unwrap()));
            }
        }
    }
    assert_eq!(found, STAGES.len(), "every stage crate is in the workspace");
    assert!(offences.is_empty(), "stage crates must meet only through artifacts: {offences:?}");
}
