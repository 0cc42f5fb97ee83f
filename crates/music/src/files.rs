//! Which files are MIDI files: the one rule that `extract`, `make` and the tools share.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why no list of MIDI files could be made.
#[derive(Debug)]
pub enum FindError {
    NoFolder(PathBuf),
    Io(PathBuf, std::io::Error),
    NoMidiFiles(PathBuf),
}

impl fmt::Display for FindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FindError::NoFolder(p) => write!(f, "input folder {} does not exist", p.display()),
            FindError::Io(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            FindError::NoMidiFiles(p) => write!(f, "no .mid, .midi or .rmi files found under {}", p.display()),
        }
    }
}

impl std::error::Error for FindError {}

/// All `.mid`/`.midi` files under `folder` (recursively, any letter case), sorted.
///
/// Symbolic links to folders are not followed, so a link loop cannot make this hang.
pub fn find_midi_files(folder: &Path) -> Result<Vec<PathBuf>, FindError> {
    if !folder.is_dir() {
        return Err(FindError::NoFolder(folder.to_path_buf()));
    }
    let mut found = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| FindError::Io(dir.clone(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| FindError::Io(dir.clone(), e))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(|e| FindError::Io(path.clone(), e))?;
            if file_type.is_dir() {
                pending.push(path);
            } else if is_midi_name(&path) {
                // Links, FIFOs and devices with a MIDI name are kept here, so extraction
                // rejects them with a reason and the summary counts them.
                found.push(path);
            }
        }
    }
    if found.is_empty() {
        return Err(FindError::NoMidiFiles(folder.to_path_buf()));
    }
    found.sort();
    Ok(found)
}

/// Whether a file name says MIDI: `.mid`, `.midi` or `.rmi`, any letter case.
pub fn is_midi_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["mid", "midi", "rmi"].iter().any(|ext| e.eq_ignore_ascii_case(ext)))
}
