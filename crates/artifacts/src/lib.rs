//! The files the pipeline's stages hand to each other, defined once.
//!
//! `extract` writes [`NotesArtifact`] (`notes.bin`), `encode` reads it and writes
//! [`DatasetArtifact`] (`dataset.bin`), `train` reads that and writes [`ModelArtifact`]
//! (`model.bin`), and `compose` reads the last two. Every one of these files is
//! `header ‖ payload`, both encoded with bincode 2 (serde), and this crate is the only code
//! that reads or writes them.
//!
//! Key design decision: the [`Header`] is decoded *on its own, before the payload*. Its
//! layout never changes, so a reader can always tell what a file is (kind, format version,
//! producer) and refuse a stale or foreign file with a message that names the stage to
//! rerun, instead of failing somewhere inside a payload whose layout has since changed.
//!
//! Writes are atomic (temporary file in the same folder, then rename) and skipped when the
//! bytes on disk are already identical, so `make` sees an unchanged mtime and stops the
//! rebuild chain there.

mod dataset;
mod model;
mod notes;

pub use dataset::{Augmentation, DatasetArtifact, EncodedPiece, Encoding, Split, Vocabulary};
pub use model::{AdamState, CheckpointArtifact, EpochRecord, Hyperparameters, ModelArtifact, NamedTensor};
pub use notes::{ExtractedFile, Note, NotesArtifact, RejectedFile, parse_pitch_name, pitch_name};

use serde::{Serialize, de::DeserializeOwned};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// First bytes of every artifact: identifies the file as ours whatever its kind.
pub const MAGIC: [u8; 8] = *b"PIANOLA\0";

/// Largest payload a reader will decode. bincode checks every length field against it,
/// so a corrupted length claiming gigabytes fails cleanly instead of allocating.
const PAYLOAD_LIMIT: usize = 1 << 31;
/// Largest header a reader will decode. Headers hold a handful of input names and digests
/// (a whole MIDI corpus is one digest, its file list lives in the payload), so they stay
/// far below this whatever the size of the data.
const HEADER_LIMIT: usize = 1 << 16;

/// A 32-byte BLAKE3 digest, of a file's bytes or of a config section.
pub type Digest = [u8; 32];

/// Deletes a file if it exists (a finished run's checkpoint, say); other errors are reported.
pub fn remove_if_present(path: &Path) -> Result<(), ArtifactError> {
    match fs::remove_file(path) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            Err(ArtifactError::Io { path: path.to_path_buf(), source })
        }
        _ => Ok(()),
    }
}

/// Hashes bytes; the one hash function used for content and config hashes.
pub fn digest(bytes: &[u8]) -> Digest {
    *blake3::hash(bytes).as_bytes()
}

/// Hashes any serializable value through its bincode encoding, which is canonical
/// (field order, fixed-width floats), so equal values always hash equally.
pub fn digest_of<T: Serialize>(value: &T) -> Digest {
    let bytes = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("bincode encodes plain data into a Vec without error");
    digest(&bytes)
}

/// Lower-case hex, for logs and the inspect output.
pub fn hex(digest: &Digest) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an artifact holds. Each kind is produced by exactly one stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ArtifactKind {
    Notes,
    Dataset,
    Model,
    Checkpoint,
}

impl ArtifactKind {
    /// The stage binary that writes this kind: what to rerun when a file is stale.
    pub fn producing_stage(self) -> &'static str {
        match self {
            ArtifactKind::Notes => "extract",
            ArtifactKind::Dataset => "encode",
            ArtifactKind::Model | ArtifactKind::Checkpoint => "train",
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ArtifactKind::Notes => "notes",
            ArtifactKind::Dataset => "dataset",
            ArtifactKind::Model => "model",
            ArtifactKind::Checkpoint => "training checkpoint",
        };
        f.write_str(name)
    }
}

/// A payload type that is stored as an artifact.
///
/// `FORMAT_VERSION` must be bumped whenever the payload's serialized layout changes;
/// readers refuse any other version rather than misread it.
pub trait Artifact: Serialize + DeserializeOwned {
    const KIND: ArtifactKind;
    const FORMAT_VERSION: u32;
}

/// The hash of one input that an artifact was made from, named for the logs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputDigest {
    pub name: String,
    pub digest: Digest,
}

/// The fixed-layout prefix of every artifact.
///
/// Invariant: the field order and types never change; everything that may change lives in
/// the payload, guarded by `format_version`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    pub magic: [u8; 8],
    pub kind: ArtifactKind,
    pub format_version: u32,
    /// `"<crate> <version>"` of the binary that wrote the file.
    pub producer: String,
    /// Hash of the producing stage's config section (with the global seed).
    pub config_digest: Digest,
    /// Hashes of the artifacts or source files it was made from.
    pub inputs: Vec<InputDigest>,
}

/// Why an artifact could not be read or written. Every message names the file and, for
/// a stale or foreign file, the stage that rewrites it.
#[derive(Debug)]
pub enum ArtifactError {
    Io { path: PathBuf, source: std::io::Error },
    NotAnArtifact { path: PathBuf, expected: ArtifactKind },
    WrongKind { path: PathBuf, expected: ArtifactKind, found: ArtifactKind },
    WrongVersion { path: PathBuf, kind: ArtifactKind, expected: u32, found: u32 },
    Corrupt { path: PathBuf, kind: ArtifactKind, detail: String },
}

impl fmt::Display for ArtifactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ArtifactError::NotAnArtifact { path, expected } => write!(
                f,
                "{}: not a pipeline artifact (expected a {expected} artifact); rerun `{}` to recreate it",
                path.display(),
                expected.producing_stage()
            ),
            ArtifactError::WrongKind { path, expected, found } => write!(
                f,
                "{}: is a {found} artifact, expected a {expected} artifact; pass the file `{}` writes, or rerun `{}`",
                path.display(),
                expected.producing_stage(),
                expected.producing_stage()
            ),
            ArtifactError::WrongVersion { path, kind, expected, found } => write!(
                f,
                "{}: {kind} artifact has format version {found}, this build reads version {expected}; rerun `{}` to recreate it",
                path.display(),
                kind.producing_stage()
            ),
            ArtifactError::Corrupt { path, kind, detail } => write!(
                f,
                "{}: {kind} artifact is damaged ({detail}); rerun `{}` to recreate it",
                path.display(),
                kind.producing_stage()
            ),
        }
    }
}

impl std::error::Error for ArtifactError {}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<PAYLOAD_LIMIT>()
}

/// Encodes header and payload into the exact bytes of an artifact file.
pub fn to_bytes<A: Artifact>(payload: &A, producer: &str, config_digest: Digest, inputs: Vec<InputDigest>) -> Vec<u8> {
    let header = Header {
        magic: MAGIC,
        kind: A::KIND,
        format_version: A::FORMAT_VERSION,
        producer: producer.to_owned(),
        config_digest,
        inputs,
    };
    let mut bytes = bincode::serde::encode_to_vec(&header, bincode_config())
        .expect("bincode encodes plain data into a Vec without error");
    bincode::serde::encode_into_std_write(payload, &mut bytes, bincode_config())
        .expect("bincode encodes plain data into a Vec without error");
    bytes
}

/// Decodes only the header of an artifact's bytes, and the offset where the payload starts.
pub fn read_header(bytes: &[u8]) -> Option<(Header, usize)> {
    let config = bincode::config::standard().with_limit::<HEADER_LIMIT>();
    let (header, used): (Header, usize) = bincode::serde::decode_from_slice(bytes, config).ok()?;
    (header.magic == MAGIC).then_some((header, used))
}

/// Decodes an artifact of type `A` from bytes read from `path` (used in messages only).
pub fn from_bytes<A: Artifact>(bytes: &[u8], path: &Path) -> Result<(Header, A), ArtifactError> {
    let path_buf = || path.to_path_buf();
    let Some((header, offset)) = read_header(bytes) else {
        return Err(ArtifactError::NotAnArtifact { path: path_buf(), expected: A::KIND });
    };
    if header.kind != A::KIND {
        return Err(ArtifactError::WrongKind { path: path_buf(), expected: A::KIND, found: header.kind });
    }
    if header.format_version != A::FORMAT_VERSION {
        return Err(ArtifactError::WrongVersion {
            path: path_buf(),
            kind: A::KIND,
            expected: A::FORMAT_VERSION,
            found: header.format_version,
        });
    }
    let corrupt = |detail: String| ArtifactError::Corrupt { path: path_buf(), kind: A::KIND, detail };
    let (payload, used): (A, usize) =
        bincode::serde::decode_from_slice(&bytes[offset..], bincode_config()).map_err(|e| corrupt(e.to_string()))?;
    if offset + used != bytes.len() {
        return Err(corrupt(format!("{} unexpected trailing bytes", bytes.len() - offset - used)));
    }
    Ok((header, payload))
}

/// Reads and checks an artifact of type `A`.
pub fn read<A: Artifact>(path: &Path) -> Result<(Header, A), ArtifactError> {
    let bytes = read_file(path)?;
    from_bytes(&bytes, path)
}

/// Reads and checks an artifact of type `A`, and names it as an input for the header of
/// the artifact made from it: `(payload, its file name and BLAKE3 digest)`.
pub fn read_input<A: Artifact>(path: &Path) -> Result<(A, InputDigest), ArtifactError> {
    let bytes = read_file(path)?;
    let (_, payload) = from_bytes(&bytes, path)?;
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok((payload, InputDigest { name, digest: digest(&bytes) }))
}

/// Reads a whole file, with the path in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ArtifactError> {
    fs::read(path).map_err(|source| ArtifactError::Io { path: path.to_path_buf(), source })
}

/// Whether [`write_if_changed`] replaced the file or found it already identical.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    Unchanged,
}

/// Writes `bytes` to `path` atomically, unless the file already holds exactly these bytes.
///
/// The bytes go to a temporary file in the same folder, are flushed to disk, and are then
/// renamed over `path`; a crash at any point leaves either the old file or the new one,
/// never a half-written file with a fresh mtime. An unchanged file keeps its mtime.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<WriteOutcome, ArtifactError> {
    let io_err = |source| ArtifactError::Io { path: path.to_path_buf(), source };
    if let Ok(existing) = fs::read(path)
        && existing == bytes
    {
        return Ok(WriteOutcome::Unchanged);
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&folder).map_err(io_err)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = folder.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&temp);
        return Err(io_err(source));
    }
    Ok(WriteOutcome::Written)
}

/// The stage report that goes beside `artifact`: `notes.bin` → `notes.report.json`.
pub fn report_path(artifact: &Path) -> PathBuf {
    let stem = artifact.file_stem().map_or_else(|| "artifact".into(), |s| s.to_string_lossy().into_owned());
    artifact.with_file_name(format!("{stem}.report.json"))
}

/// Writes a stage's machine-readable report as pretty JSON beside `artifact`, atomically.
pub fn write_report<T: Serialize>(artifact: &Path, report: &T) -> Result<WriteOutcome, ArtifactError> {
    let mut text = serde_json::to_string_pretty(report).expect("reports are plain data and always serialize");
    text.push('\n');
    write_if_changed(&report_path(artifact), text.as_bytes())
}

/// Encodes and writes an artifact atomically; see [`write_if_changed`].
pub fn write<A: Artifact>(
    path: &Path,
    payload: &A,
    producer: &str,
    config_digest: Digest,
    inputs: Vec<InputDigest>,
) -> Result<WriteOutcome, ArtifactError> {
    write_if_changed(path, &to_bytes(payload, producer, config_digest, inputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_notes() -> NotesArtifact {
        NotesArtifact {
            files: vec![ExtractedFile {
                path: "a/b.mid".into(),
                content_digest: digest(b"midi"),
                notes: vec![Note {
                    pitch: 60,
                    velocity: 90,
                    channel: 0,
                    program: 0,
                    onset_seconds: 0.5,
                    duration_seconds: 0.25,
                    onset_quarters: 1.0,
                    duration_quarters: 0.5,
                }],
            }],
            rejected: vec![RejectedFile { path: "bad.mid".into(), reason: "truncated".into() }],
        }
    }

    #[test]
    fn round_trips_header_and_payload() {
        let notes = sample_notes();
        let bytes = to_bytes(&notes, "extract 0.1.0", digest(b"cfg"), vec![]);
        let (header, back) = from_bytes::<NotesArtifact>(&bytes, Path::new("x")).unwrap();
        assert_eq!(header.kind, ArtifactKind::Notes);
        assert_eq!(header.producer, "extract 0.1.0");
        assert_eq!(back, notes);
    }

    #[test]
    fn refuses_wrong_kind_and_names_the_stage() {
        let bytes = to_bytes(&sample_notes(), "extract", digest(b""), vec![]);
        let err = from_bytes::<DatasetArtifact>(&bytes, Path::new("dataset.bin")).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ArtifactError::WrongKind { .. }), "{message}");
        assert!(message.contains("dataset.bin") && message.contains("`encode`"), "{message}");
    }

    #[test]
    fn refuses_other_format_version() {
        let mut header = Header {
            magic: MAGIC,
            kind: ArtifactKind::Notes,
            format_version: NotesArtifact::FORMAT_VERSION + 1,
            producer: "future".into(),
            config_digest: [0; 32],
            inputs: vec![],
        };
        let mut bytes = bincode::serde::encode_to_vec(&header, bincode_config()).unwrap();
        bincode::serde::encode_into_std_write(sample_notes(), &mut bytes, bincode_config()).unwrap();
        let err = from_bytes::<NotesArtifact>(&bytes, Path::new("notes.bin")).unwrap_err();
        assert!(err.to_string().contains("rerun `extract`"), "{err}");
        header.format_version = NotesArtifact::FORMAT_VERSION;
        assert!(matches!(err, ArtifactError::WrongVersion { found, .. } if found == header.format_version + 1));
    }

    #[test]
    fn truncated_and_random_bytes_are_errors_not_panics() {
        let bytes = to_bytes(&sample_notes(), "extract", digest(b""), vec![]);
        for cut in 0..bytes.len() {
            assert!(from_bytes::<NotesArtifact>(&bytes[..cut], Path::new("n")).is_err(), "cut at {cut}");
        }
        let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        assert!(from_bytes::<ModelArtifact>(&noise, Path::new("n")).is_err());
    }

    #[test]
    fn unchanged_bytes_leave_the_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.bin");
        assert_eq!(write_if_changed(&path, b"abc").unwrap(), WriteOutcome::Written);
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(write_if_changed(&path, b"abc").unwrap(), WriteOutcome::Unchanged);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
        assert_eq!(write_if_changed(&path, b"abcd").unwrap(), WriteOutcome::Written);
        assert_eq!(fs::read(&path).unwrap(), b"abcd");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file may remain");
    }
}
