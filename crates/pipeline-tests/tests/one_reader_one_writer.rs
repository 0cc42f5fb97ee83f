//! Every file a binary reads goes through `artifacts::read_capped` (regular files only,
//! checked before opening, under a size cap) and every file it writes through
//! `artifacts::write_if_changed` (atomic, created new under a random name, never replacing
//! an input): a crate outside `artifacts` that opens, reads or writes a file by itself
//! fails here. Tests are free to; so is a line on the list below, each with its reason.

use pipeline_tests::repo_root;

/// Calls that read or write a file's bytes directly.
const DIRECT: [&str; 7] =
    ["fs::read(", "read_to_string(", "File::open(", "File::create(", "fs::write(", "OpenOptions", "fs::copy("];

/// (file, call): allowed, and why.
const ALLOWED: [(&str, &str, &str); 1] = [(
    "crates/bench/src/lib.rs",
    "File::open(",
    "evicting a file from the page cache opens it to advise the kernel, reading no byte",
)];

/// Crates whose code may: the floor that does it for everyone, and the test helpers.
const EXEMPT: [&str; 3] = ["artifacts", "test-support", "pipeline-tests"];

fn rust_files(folder: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn no_binary_reads_or_writes_a_file_but_through_the_artifacts_crate() {
    let root = repo_root();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let krate = entry.unwrap().path();
        if !EXEMPT.iter().any(|e| krate.ends_with(e)) {
            rust_files(&krate.join("src"), &mut files);
        }
    }
    assert!(files.len() > 20, "the sources were found");
    let mut offences = Vec::new();
    for file in &files {
        let name = file.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(file).unwrap();
        // A file's unit tests come last, after `#[cfg(test)]`.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (number, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for call in DIRECT {
                let allowed = ALLOWED.iter().any(|(f, c, _)| *f == name && *c == call);
                if line.contains(call) && !allowed {
                    offences.push(format!("{name}:{}: {}", number + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "read with artifacts::read_capped, write with artifacts::write_if_changed: {offences:#?}"
    );
}
