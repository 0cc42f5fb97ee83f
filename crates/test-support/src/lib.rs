//! For tests only: what the tests need from outside the repository, and what they can make.
//!
//! Two things a test may need are not in the repository: the real MIDI corpus that sits
//! beside a checkout as `../shared/data` (or wherever `PIANOLA_CORPUS` points), and a
//! General MIDI SoundFont. [`corpus`] and [`soundfont`] find them. Where one is missing
//! the test prints one line saying what it skipped and why, and returns early, so a fresh
//! clone's `make test` passes; where `PIANOLA_REQUIRE_CORPUS=1` or
//! `PIANOLA_REQUIRE_SOUNDFONT=1` is set (CI sets both) a missing one fails the test instead.
//! The same holds for a browser ([`browser`], `PIANOLA_REQUIRE_BROWSER`), which the test of
//! the run's page uses, and for MuseScore ([`musescore`], `PIANOLA_REQUIRE_MUSESCORE`),
//! which the test of the written score uses.
//!
//! Everything the tests need that the repository can hold, they make themselves:
//! [`odd_midi`] writes small MIDI files that are odd or broken in the ways real files are,
//! so the robustness tests run everywhere.
//!
//! Key design decision: the skip line is written straight to the process's stderr, not
//! through `eprintln!`, which the test harness captures and shows only for failures; a
//! skip that nobody sees would pass for a check.

pub mod odd_midi;

use std::io::Write;
use std::path::PathBuf;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `folder` of the real MIDI corpus (`piano` or `oddities`): under `PIANOLA_CORPUS` when
/// set, else under `../shared/data` beside the checkout. `None` (after a one-line note on
/// stderr naming `test`) when it is missing, unless `PIANOLA_REQUIRE_CORPUS` is set, which
/// turns the absence into a panic.
pub fn corpus(folder: &str, test: &str) -> Option<PathBuf> {
    let root = match std::env::var_os("PIANOLA_CORPUS") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join("../shared/data"),
    };
    let path = root.join(folder);
    if path.is_dir() {
        return Some(path);
    }
    let why = format!("no MIDI corpus at {} (set PIANOLA_CORPUS to the folder holding {folder}/)", path.display());
    missing(test, &why, "PIANOLA_REQUIRE_CORPUS")
}

/// A General MIDI SoundFont: `PIANOLA_SOUNDFONT` when set, else what `find` (the product's
/// own search, given the configured `compose.soundfont`) finds. `None` (after a one-line
/// note) when there is none, unless `PIANOLA_REQUIRE_SOUNDFONT` is set.
pub fn soundfont(test: &str, find: impl FnOnce() -> Result<PathBuf, String>) -> Option<PathBuf> {
    let found = match std::env::var_os("PIANOLA_SOUNDFONT") {
        Some(path) if PathBuf::from(&path).is_file() => Ok(PathBuf::from(path)),
        Some(path) => Err(format!("PIANOLA_SOUNDFONT={} is not a file", PathBuf::from(path).display())),
        None => find(),
    };
    match found {
        Ok(path) => Some(path),
        Err(why) => missing(test, &why, "PIANOLA_REQUIRE_SOUNDFONT"),
    }
}

/// A Chromium-family browser for tests that look at a page the way a user does:
/// `PIANOLA_BROWSER` when set, else the first of `chromium`, `chromium-browser`,
/// `google-chrome`, `google-chrome-stable` on the `PATH`. `None` (after a one-line note)
/// when there is none, unless `PIANOLA_REQUIRE_BROWSER` is set. A test tool only: the
/// product never needs a browser.
pub fn browser(test: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PIANOLA_BROWSER").map(PathBuf::from) {
        if path.is_file() {
            return Some(path);
        }
        return missing(test, &format!("PIANOLA_BROWSER={} is not a file", path.display()), "PIANOLA_REQUIRE_BROWSER");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file());
    match found {
        Some(browser) => Some(browser),
        None => missing(
            test,
            "no Chromium on the PATH (Debian: apt-get install chromium; or set PIANOLA_BROWSER)",
            "PIANOLA_REQUIRE_BROWSER",
        ),
    }
}

/// MuseScore 3 as a command that converts a file headless: `xvfb-run -a mscore3` (Debian's
/// `musescore3` and `xvfb`), or `PIANOLA_MUSESCORE` (a MuseScore binary that needs no
/// display, run as it is). `None`, with the skip line, where neither is there.
pub fn musescore(test: &str) -> Option<Vec<PathBuf>> {
    if let Some(path) = std::env::var_os("PIANOLA_MUSESCORE").map(PathBuf::from) {
        if path.is_file() {
            return Some(vec![path]);
        }
        let why = format!("PIANOLA_MUSESCORE={} is not a file", path.display());
        return missing(test, &why, "PIANOLA_REQUIRE_MUSESCORE");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let find = |name: &str| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|c| c.is_file());
    match (find("xvfb-run"), find("mscore3").or_else(|| find("musescore3"))) {
        (Some(xvfb), Some(mscore)) => Some(vec![xvfb, "-a".into(), mscore]),
        _ => missing(
            test,
            "no MuseScore 3 and xvfb-run on the PATH (Debian: apt-get install musescore3 xvfb; or set PIANOLA_MUSESCORE)",
            "PIANOLA_REQUIRE_MUSESCORE",
        ),
    }
}

/// Whether the environment variable `name` asks for a requirement (set, and not `0` or empty).
fn required(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn missing<T>(test: &str, why: &str, require: &str) -> Option<T> {
    assert!(!required(require), "{test}: {why}; {require} is set, so this fails instead of skipping");
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
    None
}
