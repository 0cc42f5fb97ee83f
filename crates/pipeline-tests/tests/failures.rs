//! What a user sees when files are damaged, foreign or cannot be written: one clear line,
//! exit status 1 (never a panic), no partial file, nothing earlier overwritten.

use pipeline_tests::{describe, release_bin, repo_root, run_stage, tiny_project};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::Command;

fn prepare(dir: &Path) {
    let steps: [(&str, &[&str]); 3] = [
        ("extract", &["--input", "midi", "--output", "notes.bin"]),
        ("encode", &["--input", "notes.bin", "--output", "dataset.bin"]),
        ("train", &["--input", "dataset.bin", "--output", "model.bin"]),
    ];
    pipeline_tests::run_stages(dir, &steps);
}

/// Asserts a clean failure (exit 1, not a panic's 101) whose message has every `needle`.
fn assert_refused(output: std::process::Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(!stderr.contains("panicked"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "missing {needle:?} in: {stderr}");
    }
}

#[test]
fn every_reader_refuses_damaged_and_foreign_artifacts() {
    let project = tiny_project(2);
    let dir = project.path();
    prepare(dir);
    // (stage, its flag for the artifact, the artifact it reads, the stage that writes that)
    let readers = [
        ("encode", "--input", "notes.bin", "extract"),
        ("train", "--input", "dataset.bin", "encode"),
        ("compose", "--input", "model.bin", "train"),
        ("compose", "--dataset", "dataset.bin", "encode"),
    ];
    for (stage, flag, artifact, producer) in readers {
        let good = std::fs::read(dir.join(artifact)).unwrap();
        let noise: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let mut other_version = good.clone();
        other_version[9] = 99; // the header's format version (bincode varint) follows magic and kind
        let foreign = if artifact == "notes.bin" { "dataset.bin" } else { "notes.bin" };
        let cases: [(&str, Vec<u8>); 5] = [
            ("truncated", good[..good.len() / 2].to_vec()),
            ("empty", Vec::new()),
            ("random", noise),
            ("other version", other_version),
            ("other kind", std::fs::read(dir.join(foreign)).unwrap()),
        ];
        for (case, bytes) in cases {
            let broken = format!("broken-{artifact}");
            std::fs::write(dir.join(&broken), bytes).unwrap();
            let mut args = vec!["--input", "model.bin", "--dataset", "dataset.bin", "--output", "out.any"];
            if stage != "compose" {
                args = vec!["--input", "x", "--output", "out.any"];
            }
            let position = args.iter().position(|a| *a == flag).unwrap();
            args[position + 1] = &broken;
            let output = run_stage(stage, dir, &args);
            assert_refused(output, &[&broken, &format!("`{producer}`")]);
            assert!(!dir.join("out.any").exists(), "{stage} on {case} {artifact} left an output");
        }
    }

    // A length field claiming about 2^64 elements: refused without trying to allocate them.
    let good = std::fs::read(dir.join("notes.bin")).unwrap();
    let (_, payload_start) = artifacts::read_header(&good).unwrap();
    let mut huge = good[..payload_start].to_vec();
    huge.extend([253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]); // varint u64 for the file list's length
    huge.extend(&good[payload_start + 1..]);
    std::fs::write(dir.join("huge.bin"), huge).unwrap();
    assert_refused(
        run_stage("encode", dir, &["--input", "huge.bin", "--output", "out.any"]),
        &["huge.bin", "`extract`"],
    );
}

#[test]
fn an_unwritable_output_is_a_clear_error_and_the_old_file_survives() {
    let project = tiny_project(2);
    let dir = project.path();
    prepare(dir);
    // The output's folder is a file: nothing can be created there, even by root.
    std::fs::write(dir.join("blocker"), b"").unwrap();
    assert_refused(run_stage("extract", dir, &["--input", "midi", "--output", "blocker/notes.bin"]), &["blocker"]);

    // A full disk, simulated with a file-size limit: the write fails part-way.
    let before = std::fs::read(dir.join("notes.bin")).unwrap();
    std::fs::copy(pipeline_tests::bundled_midi()[3].as_path(), dir.join("midi/extra.mid")).unwrap();
    let script = format!(
        "ulimit -f 1; trap '' XFSZ; exec {} --input midi --output notes.bin",
        release_bin().join("extract").display()
    );
    let output = Command::new("sh").arg("-c").arg(&script).current_dir(dir).output().unwrap();
    assert_refused(output, &["notes.bin"]);
    assert_eq!(std::fs::read(dir.join("notes.bin")).unwrap(), before, "the earlier notes.bin is intact");
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn make_with_parallel_jobs_builds_the_same_files() {
    let project = tiny_project(2);
    let dir = project.path();
    release_bin();
    let make = |jobs: &str, art: &str| {
        Command::new("make")
            .current_dir(repo_root())
            .args([jobs, &format!("ART={}", dir.join(art).display())])
            .arg(format!("CONFIG={}", dir.join("pipeline.toml").display()))
            .arg(format!("DATA={}", dir.join("midi").display()))
            .output()
            .unwrap()
    };
    let serial = make("-j1", "serial");
    assert!(serial.status.success(), "{}", describe(&serial));
    let parallel = make("-j8", "parallel");
    assert!(parallel.status.success(), "{}", describe(&parallel));
    for name in ["notes.bin", "dataset.bin", "generated_music.mid"] {
        let a = std::fs::read(dir.join("serial").join(name)).unwrap();
        let b = std::fs::read(dir.join("parallel").join(name)).unwrap();
        assert!(a == b, "{name} differs between make -j1 and make -j8");
    }
}

#[test]
fn no_output_may_destroy_an_input_or_a_device_and_damage_is_named() {
    let project = tiny_project(2);
    let dir = project.path();
    prepare(dir);
    let notes = std::fs::read(dir.join("notes.bin")).unwrap();
    assert_refused(
        run_stage("encode", dir, &["--input", "notes.bin", "--output", "./notes.bin"]),
        &["it is the input"],
    );
    assert_eq!(std::fs::read(dir.join("notes.bin")).unwrap(), notes, "the input is intact");
    assert_refused(
        run_stage("train", dir, &["--input", "dataset.bin", "--output", "dataset.bin"]),
        &["refusing to write dataset.bin"],
    );
    assert_refused(
        run_stage("compose", dir, &["--input", "model.bin", "--dataset", "dataset.bin", "--output", "model.bin"]),
        &["it is the input"],
    );
    // A device is never replaced by a regular file, and a config is never read from one.
    assert_refused(
        run_stage("encode", dir, &["--input", "notes.bin", "--output", "/dev/null"]),
        &["not a regular file"],
    );
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    assert_refused(run_stage("train", dir, &["--config", "/dev/zero"]), &["/dev/zero", "not a regular file"]);

    // One flipped bit in the middle of dataset.bin: refused as damaged, naming the stage.
    let mut dataset = std::fs::read(dir.join("dataset.bin")).unwrap();
    let middle = dataset.len() / 2;
    dataset[middle] ^= 0x10;
    std::fs::write(dir.join("flipped.bin"), &dataset).unwrap();
    assert_refused(
        run_stage("train", dir, &["--input", "flipped.bin", "--output", "m.bin"]),
        &["flipped.bin", "damaged", "`encode`"],
    );
    let inspect = run_stage("inspect", dir, &["flipped.bin"]);
    assert_eq!(inspect.status.code(), Some(1), "inspect fails on a damaged file: {}", describe(&inspect));
    assert!(String::from_utf8_lossy(&inspect.stdout).contains("unreadable"));
    assert!(run_stage("inspect", dir, &["dataset.bin"]).status.success());
}
