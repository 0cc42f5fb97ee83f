//! The device a user asks for. `runtime.device = "auto"` runs wherever the binaries start:
//! on a CUDA build with no usable GPU (`make cuda-check` without one, as in CI) it says why
//! in one line and uses the CPU. An accelerator asked for by name that this build or this
//! machine lacks is one clear error naming the cause, never a panic.

use pipeline_tests::{describe, run_stage, run_stages, tiny_project};

/// Set by `make cuda-check` where it links and runs against the stand-in driver library.
fn expect_cpu_fallback() -> bool {
    std::env::var_os("PIANOLA_EXPECT_CPU_FALLBACK").is_some()
}

#[test]
fn auto_runs_everywhere_and_a_missing_accelerator_is_one_clear_error() {
    let project = tiny_project(2);
    let dir = project.path();
    let steps: [(&str, &[&str]); 2] = [
        ("extract", &["--input", "midi", "--output", "notes.bin"]),
        ("encode", &["--input", "notes.bin", "--output", "dataset.bin"]),
    ];
    run_stages(dir, &steps);

    let auto = ["--set", "runtime.device=auto"];
    let train = run_stage("train", dir, &[&["--input", "dataset.bin", "--output", "model.bin"][..], &auto].concat());
    let compose = run_stage(
        "compose",
        dir,
        &[&["--input", "model.bin", "--dataset", "dataset.bin", "--output", "out.mid"][..], &auto].concat(),
    );
    for (stage, output) in [("train", &train), ("compose", &compose)] {
        assert!(output.status.success(), "{stage} with device auto: {}", describe(output));
        if expect_cpu_fallback() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("CUDA is built in but unusable here") && stderr.contains("using the CPU"),
                "{stderr}"
            );
        }
    }

    for device in ["cuda", "metal"] {
        let setting = format!("runtime.device={device}");
        let asked = run_stage("train", dir, &["--input", "dataset.bin", "--output", "named.bin", "--set", &setting]);
        if asked.status.success() {
            continue; // this build has the device and the machine answers on it
        }
        let stderr = String::from_utf8_lossy(&asked.stderr);
        assert_eq!(asked.status.code(), Some(1), "{}", describe(&asked));
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains(&format!("runtime.device = \"{device}\"")), "{stderr}");
        if device == "cuda" && expect_cpu_fallback() {
            assert!(stderr.contains("no NVIDIA driver with a device answers here"), "{stderr}");
        }
        assert!(!dir.join("named.bin").exists(), "a failed run left its output");
    }
}
