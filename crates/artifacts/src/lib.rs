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

pub use dataset::{DatasetArtifact, EncodedPiece, Split};
// The values the artifacts store are the music crate's own types.
pub use model::{
    AdamState, BestWeights, Calibration, CheckpointArtifact, EpochRecord, EpochTiming, Hyperparameters, ModelArtifact,
    NamedTensor,
};
pub use music::{Augmentation, Encoding, Metre, Note, PedalPress, Vocabulary, parse_pitch_name, pitch_name};
pub use notes::{ExtractedFile, NotesArtifact, RejectedFile};

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

    /// What the payload's types cannot say (every weight finite, every token id in the
    /// dictionary): checked on every read, the error a one-line description.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The hash of one input that an artifact was made from, named for the logs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputDigest {
    pub name: String,
    pub digest: Digest,
}

/// The fixed-layout prefix of every artifact.
///
/// Invariant: the field order and types never change (the payload digest, the last field,
/// came with every kind's format version of December 2026; an older file's header reads
/// as the wrong version); everything that may change lives in the payload, guarded by
/// `format_version`.
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
    /// BLAKE3 of the payload's bytes, checked on every read: a file changed or damaged
    /// after it was written is refused, not misread.
    pub payload_digest: Digest,
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
    OutputIsInput { output: PathBuf, input: PathBuf },
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
            ArtifactError::OutputIsInput { output, input } => write!(
                f,
                "refusing to write {}: it is the input {}; choose another output",
                output.display(),
                input.display()
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
    let payload = bincode::serde::encode_to_vec(payload, bincode_config())
        .expect("bincode encodes plain data into a Vec without error");
    let header = Header {
        magic: MAGIC,
        kind: A::KIND,
        format_version: A::FORMAT_VERSION,
        producer: producer.to_owned(),
        config_digest,
        inputs,
        payload_digest: digest(&payload),
    };
    let mut bytes = bincode::serde::encode_to_vec(&header, bincode_config())
        .expect("bincode encodes plain data into a Vec without error");
    bytes.extend_from_slice(&payload);
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
    let (header, offset) = checked_header::<A>(bytes, path)?;
    let corrupt = |detail: String| ArtifactError::Corrupt { path: path.to_path_buf(), kind: A::KIND, detail };
    if digest(&bytes[offset..]) != header.payload_digest {
        return Err(corrupt("its contents do not match the checksum written with them".into()));
    }
    let (payload, used): (A, usize) =
        bincode::serde::decode_from_slice(&bytes[offset..], bincode_config()).map_err(|e| corrupt(e.to_string()))?;
    if offset + used != bytes.len() {
        return Err(corrupt(format!("{} unexpected trailing bytes", bytes.len() - offset - used)));
    }
    payload.check().map_err(corrupt)?;
    Ok((header, payload))
}

/// The header at the start of `bytes` and where the payload starts, if it is an artifact of
/// kind `A` in this format version; else the error that says what it is instead.
fn checked_header<A: Artifact>(bytes: &[u8], path: &Path) -> Result<(Header, usize), ArtifactError> {
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
    Ok((header, offset))
}

/// The whole file of an artifact of kind `A`, read only once its first bytes hold the
/// header of one: a large file of another kind (a 2 GiB file named as `train.init`) is
/// refused from its first 64 KiB, not read whole first.
fn read_artifact_file<A: Artifact>(path: &Path) -> Result<Vec<u8>, ArtifactError> {
    use std::io::Read;
    let io = |source| ArtifactError::Io { path: path.to_path_buf(), source };
    let mut opening = Vec::new();
    open_regular(path).map_err(io)?.take(HEADER_LIMIT as u64).read_to_end(&mut opening).map_err(io)?;
    checked_header::<A>(&opening, path)?;
    read_file(path)
}

/// Reads and checks an artifact of type `A`.
pub fn read<A: Artifact>(path: &Path) -> Result<(Header, A), ArtifactError> {
    let bytes = read_artifact_file::<A>(path)?;
    from_bytes(&bytes, path)
}

/// Reads and checks an artifact of type `A`, and names it as an input for the header of
/// the artifact made from it: `(payload, its file name and BLAKE3 digest)`.
pub fn read_input<A: Artifact>(path: &Path) -> Result<(A, InputDigest), ArtifactError> {
    read_with_digest(path).map(|(_, payload, input)| (payload, input))
}

/// [`read_input`], with the artifact's own header too.
pub fn read_with_digest<A: Artifact>(path: &Path) -> Result<(Header, A, InputDigest), ArtifactError> {
    let bytes = read_artifact_file::<A>(path)?;
    let (header, payload) = from_bytes(&bytes, path)?;
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok((header, payload, InputDigest { name, digest: digest(&bytes) }))
}

/// Reads a whole artifact file, with the path in the error; see [`read_capped`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, ArtifactError> {
    read_capped(path, (HEADER_LIMIT + PAYLOAD_LIMIT) as u64)
        .map_err(|source| ArtifactError::Io { path: path.to_path_buf(), source })
}

/// Reads a whole file of at most `cap` bytes. Anything but a regular file (a folder, a
/// device such as `/dev/zero`, a FIFO) is refused before reading, and so is a larger file;
/// a file that reports no size but keeps giving bytes (`/proc`) is cut off at `cap`.
pub fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let file = open_regular(path)?;
    let metadata = file.metadata()?;
    let too_large = || Error::new(ErrorKind::InvalidData, format!("larger than the {cap} bytes read at most"));
    if metadata.len() > cap {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Opens `path` for reading if it is a regular file (or a link to one). Checked before
/// opening, as opening a FIFO blocks until something writes to it, and again on the open
/// file, in case the name was swapped in between.
fn open_regular(path: &Path) -> std::io::Result<fs::File> {
    let not_regular = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
    if !fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let file = fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// Refuses an output that is one of the stage's `inputs` (the same file under any name),
/// before anything is read or written: replacing an input would destroy it.
pub fn refuse_input_as_output(output: &Path, inputs: &[&Path]) -> Result<(), ArtifactError> {
    let Ok(written) = fs::metadata(output) else { return Ok(()) };
    for input in inputs {
        if fs::metadata(input).is_ok_and(|read| same_file(&read, &written)) {
            return Err(ArtifactError::OutputIsInput { output: output.to_path_buf(), input: input.to_path_buf() });
        }
    }
    Ok(())
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    // Without inode numbers: the same length and modification time is taken as the same file.
    (a.len(), a.modified().ok()) == (b.len(), b.modified().ok())
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
/// Only a regular file is replaced: a device, a FIFO or a folder at `path` is an error. A
/// symbolic link to a regular file is itself replaced by the new file; the file it pointed
/// to is left as it was. The temporary file is created new (`O_EXCL`) under a name with a
/// random part, so nothing planted in the folder beforehand — a link at a guessable name —
/// can redirect the write.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<WriteOutcome, ArtifactError> {
    let io_err = |source| ArtifactError::Io { path: path.to_path_buf(), source };
    match fs::metadata(path) {
        Ok(existing) if !existing.is_file() => {
            let refusal = "not a regular file: an output replaces only a regular file (or a link to one)";
            return Err(io_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, refusal)));
        }
        Ok(existing) if existing.len() == bytes.len() as u64 && same_bytes(path, bytes).map_err(io_err)? => {
            return Ok(WriteOutcome::Unchanged);
        }
        _ => {}
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&folder).map_err(io_err)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    remove_orphaned_temporaries(&folder, &file_name);
    let (temp, mut file) = create_temporary(&folder, &file_name).map_err(io_err)?;
    let result = (|| {
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

/// A new file `.<file_name>.tmp-<pid>-<random>` in `folder`, created only if no entry of
/// that name exists (a link included). The random part comes from the standard library's
/// per-process random hash keys, so another user cannot guess the name in advance.
fn create_temporary(folder: &Path, file_name: &str) -> std::io::Result<(PathBuf, fs::File)> {
    use std::hash::{BuildHasher, Hasher};
    let mut last_error = None;
    for attempt in 0u64..16 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(attempt);
        let temp = folder.join(format!(".{file_name}.tmp-{}-{:016x}", std::process::id(), hasher.finish()));
        match fs::OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.expect("sixteen attempts failed"))
}

/// Deletes the temporary files that runs killed part-way through writing `file_name` left
/// in `folder` (`.<file_name>.tmp-<pid>-<random>` of a process that no longer runs). Where there is
/// no `/proc` to ask whether a process runs, they are left alone.
fn remove_orphaned_temporaries(folder: &Path, file_name: &str) {
    let prefix = format!(".{file_name}.tmp-");
    let Ok(entries) = fs::read_dir(folder) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        let pid = rest.split_once('-').map_or(rest, |(pid, _)| pid);
        let running = Path::new("/proc").join(pid);
        if pid.bytes().all(|b| b.is_ascii_digit()) && Path::new("/proc/self").exists() && !running.exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether the file at `path` holds exactly `bytes`, read a block at a time and stopped at
/// the first difference, so a large old file costs no more memory than a block.
fn same_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut block = vec![0u8; 1 << 16];
    let mut offset = 0;
    loop {
        let read = file.read(&mut block)?;
        if read == 0 {
            return Ok(offset == bytes.len());
        }
        if offset + read > bytes.len() || block[..read] != bytes[offset..offset + read] {
            return Ok(false);
        }
        offset += read;
    }
}

/// The stage report that goes beside `artifact`: `notes.bin` → `notes.report.json`, and for
/// every other kind of file the whole name, `music.mid` → `music.mid.report.json`, so the
/// report of a MIDI file named like an artifact (`model.mid`) never replaces that
/// artifact's report (`model.report.json`).
pub fn report_path(artifact: &Path) -> PathBuf {
    let name = artifact.file_name().map_or_else(|| "artifact".into(), |s| s.to_string_lossy().into_owned());
    let stem = name.strip_suffix(".bin").unwrap_or(&name);
    artifact.with_file_name(format!("{stem}.report.json"))
}

/// Writes a stage's machine-readable report as pretty JSON beside `artifact`, atomically.
pub fn write_report<T: Serialize>(artifact: &Path, report: &T) -> Result<WriteOutcome, ArtifactError> {
    let mut text = serde_json::to_string_pretty(report).expect("reports are plain data and always serialize");
    text.push('\n');
    write_if_changed(&report_path(artifact), text.as_bytes())
}

/// Writes a stage's output and its report so that a report never describes an output that
/// is not there: the old report goes first, then `write_output` writes the output, then
/// the report is written. When the report cannot be written the new output is removed too,
/// so `make` sees the stage unfinished and reruns it, rather than a fresh output with no
/// report or an old one.
pub fn write_with_report<T: Serialize>(
    output: &Path,
    report: &T,
    write_output: impl FnOnce() -> Result<WriteOutcome, ArtifactError>,
) -> Result<WriteOutcome, ArtifactError> {
    remove_if_present(&report_path(output))?;
    let outcome = write_output()?;
    if let Err(error) = write_report(output, report) {
        let _ = fs::remove_file(output);
        return Err(error);
    }
    Ok(outcome)
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
    #[cfg(unix)]
    use std::os::unix::fs::FileTypeExt;

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
                metre: Metre::default(),
                pedal: vec![PedalPress { onset_quarters: 1.0, duration_quarters: 2.5 }],
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
            payload_digest: [0; 32],
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
    #[test]
    fn every_flipped_bit_of_the_payload_is_found() {
        let bytes = to_bytes(&sample_notes(), "extract", digest(b""), vec![]);
        let (_, offset) = read_header(&bytes).unwrap();
        for position in offset..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[position] ^= 1 << (position % 8);
            let err = from_bytes::<NotesArtifact>(&damaged, Path::new("notes.bin")).unwrap_err();
            assert!(matches!(err, ArtifactError::Corrupt { .. }), "byte {position}: {err}");
            assert!(err.to_string().contains("rerun `extract`"), "{err}");
        }
    }

    fn tiny_model() -> ModelArtifact {
        ModelArtifact {
            hyperparameters: Hyperparameters {
                vocab_size: 2,
                embedding: 1,
                hidden: 1,
                layers: 1,
                dropout: 0.0,
                seq_len: 2,
            },
            encoding: Encoding::Names { chord_window_quarters: 0.0 },
            vocabulary: Vocabulary::from_tokens(["C4".to_string(), "D4".to_string()]),
            weights: vec![NamedTensor { name: "w".into(), shape: vec![2], data: vec![0.5, -0.5] }],
            optimizer: AdamState::default(),
            initialised_from: None,
            weights_epoch: 0,
            history: vec![],
            calibration: None,
        }
    }

    #[test]
    fn a_model_with_a_non_finite_weight_or_a_wrong_shape_is_refused() {
        assert!(
            from_bytes::<ModelArtifact>(&to_bytes(&tiny_model(), "train", [0; 32], vec![]), Path::new("m")).is_ok()
        );
        let mut nan = tiny_model();
        nan.weights[0].data[1] = f32::NAN;
        let err = from_bytes::<ModelArtifact>(&to_bytes(&nan, "train", [0; 32], vec![]), Path::new("m")).unwrap_err();
        assert!(err.to_string().contains("weight w holds NaN"), "{err}");
        let mut short = tiny_model();
        short.weights[0].shape = vec![3];
        let err = from_bytes::<ModelArtifact>(&to_bytes(&short, "train", [0; 32], vec![]), Path::new("m")).unwrap_err();
        assert!(err.to_string().contains("for shape [3]"), "{err}");
    }

    #[test]
    fn a_token_outside_the_dictionary_is_refused() {
        let dataset = DatasetArtifact {
            encoding: Encoding::Names { chord_window_quarters: 0.0 },
            vocabulary: Vocabulary::from_tokens(["C4".to_string()]),
            seq_len: 1,
            stride: 1,
            pieces: vec![EncodedPiece {
                source: "a".into(),
                split: Split::Train,
                augmentation: None,
                tokens: vec![0, 1],
            }],
        };
        let err =
            from_bytes::<DatasetArtifact>(&to_bytes(&dataset, "encode", [0; 32], vec![]), Path::new("d")).unwrap_err();
        assert!(err.to_string().contains("token id 1 is outside its dictionary of 1"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_are_read_or_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_capped(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let fifo = dir.path().join("fifo.bin");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(read_capped(&fifo, 1 << 20).unwrap_err().to_string().contains("not a regular file"));
        let err = write_if_changed(&fifo, b"abc").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(write_if_changed(Path::new("/dev/null"), b"abc").is_err(), "a device is never replaced");
        assert!(fs::metadata("/dev/null").unwrap().file_type().is_char_device());

        let big = dir.path().join("big");
        fs::write(&big, vec![7u8; 100]).unwrap();
        assert!(read_capped(&big, 99).unwrap_err().to_string().contains("larger than the 99 bytes"));
        assert_eq!(read_capped(&big, 100).unwrap().len(), 100);
    }

    #[test]
    fn an_output_that_is_an_input_is_refused_under_any_name() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("notes.bin");
        fs::write(&input, b"x").unwrap();
        let same = dir.path().join(".").join("notes.bin");
        let err = refuse_input_as_output(&same, &[&input]).unwrap_err();
        assert!(err.to_string().contains("it is the input"), "{err}");
        assert!(refuse_input_as_output(&dir.path().join("dataset.bin"), &[&input]).is_ok());
    }
    #[test]
    fn a_large_file_of_another_kind_is_refused_from_its_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.bin");
        // Sparse: 3 GiB that take no disk, beyond what the whole-file read would accept.
        fs::File::create(&big).unwrap().set_len(3 << 30).unwrap();
        let err = read::<NotesArtifact>(&big).unwrap_err();
        assert!(matches!(err, ArtifactError::NotAnArtifact { .. }), "{err}");
    }

    #[test]
    fn a_report_never_describes_an_output_that_is_not_there() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("notes.bin");
        write_with_report(&output, &"first", || write_if_changed(&output, b"one")).unwrap();
        assert_eq!(fs::read_to_string(report_path(&output)).unwrap(), "\"first\"\n");
        // The output cannot be written (a folder in its way): the old report is gone too.
        fs::remove_file(&output).unwrap();
        fs::create_dir(&output).unwrap();
        assert!(write_with_report(&output, &"second", || write_if_changed(&output, b"two")).is_err());
        assert!(!report_path(&output).exists(), "no report of an output that was not written");
        // The report cannot be written (a folder appears in its way while the output is
        // written): the new output goes, so the stage is seen unfinished.
        fs::remove_dir(&output).unwrap();
        let written = write_with_report(&output, &"third", || {
            let outcome = write_if_changed(&output, b"three");
            fs::create_dir(report_path(&output)).unwrap();
            outcome
        });
        assert!(written.is_err());
        assert!(!output.exists(), "no output without its report");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_planted_where_the_temporary_file_might_go_redirects_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        // Where a writer that named its temporary file by process id alone would write.
        let guess = dir.path().join(format!(".model.bin.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &guess).unwrap();
        for bytes in [&b"first"[..], b"second"] {
            write_if_changed(&dir.path().join("model.bin"), bytes).unwrap();
            assert_eq!(fs::read(dir.path().join("model.bin")).unwrap(), bytes);
        }
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // Only the planted link is left beside the artifact: no temporary file stays behind.
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_killed_writer_s_temporary_file_is_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        // No process has this id: it is above the kernel's largest.
        let orphan = dir.path().join(".model.bin.tmp-4294967295");
        let other = dir.path().join(".notes.bin.tmp-4294967295");
        let named_randomly = dir.path().join(".model.bin.tmp-4294967295-00ff00ff00ff00ff");
        for file in [&orphan, &other, &named_randomly] {
            fs::write(file, b"half").unwrap();
        }
        write_if_changed(&dir.path().join("model.bin"), b"whole").unwrap();
        assert!(!orphan.exists() && !named_randomly.exists(), "the orphans are removed");
        assert!(other.exists(), "another artifact's temporary file is not this write's business");
    }
}
