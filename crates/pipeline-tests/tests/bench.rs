//! `make bench` measures the stages as a user runs them: a smoke run on the bundled pieces
//! checks that the extract and encode binaries were timed (warm, and cold where the OS can
//! evict files), that every figure has its samples and a spread in order, and that the
//! counts are the stages' own. Speeds themselves are never asserted here (`make bench`
//! prints them).

use pipeline_tests::{describe, release_bin, repo_root};
use serde_json::Value;
use std::process::Command;

fn check_timing(timing: &Value, what: &str) {
    assert!(timing["samples"].as_u64().unwrap() >= 10, "{what}: fewer than 10 samples");
    for spread in ["seconds", "per_second"] {
        let (min, median, max) = (
            timing[spread]["min"].as_f64().unwrap(),
            timing[spread]["median"].as_f64().unwrap(),
            timing[spread]["max"].as_f64().unwrap(),
        );
        assert!(0.0 < min && min <= median && median <= max, "{what} {spread}: {min} {median} {max}");
    }
}

#[test]
fn bench_times_the_stage_binaries_with_their_spread() {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("bench.json");
    let output = Command::new(release_bin().join("bench"))
        .args(["--only", "extract", "--only", "encode", "--corpus"])
        .arg(repo_root().join("data"))
        .arg("--output")
        .arg(&json)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let extract = &report["extract"];
    assert_eq!(extract["files"], 9);
    assert_eq!(extract["notes"], 3590, "the bundled pieces' notes, as extract counts them");
    check_timing(&extract["parse_in_memory"], "parse");
    check_timing(&extract["stage_warm"], "extract stage, warm");
    if cfg!(target_os = "linux") {
        check_timing(&extract["stage_cold"], "extract stage, cold");
    }
    check_timing(&report["encode"]["stage"], "encode stage");
    // Defaults: the nine pieces, each moved into C (no transposed copies).
    assert!(report["encode"]["tokens"].as_u64().unwrap() > 10_000, "{}", report["encode"]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("stage, warm cache") && table.contains("encode"), "{table}");
    // Speed figures name the machine they were measured on.
    let cpu = report["cpu"].as_str().unwrap();
    assert!(!cpu.is_empty() && table.contains(&format!("processor: {cpu}")), "{table}");
}
