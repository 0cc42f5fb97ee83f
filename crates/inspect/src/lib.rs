//! `inspect`: tells a user what an artifact file is and what made it.
//!
//! Reads any artifact (`notes.bin`, `dataset.bin`, `model.bin`, `model.bin.checkpoint`);
//! writes nothing. Prints the header — kind, format version, producer, the digest of the
//! config section and of every input — and a few lines about the payload.
//!
//! Key design decision: the header is printed even when the payload cannot be read (an
//! older format version, damage past the header), because "what is this file and which
//! stage made it" is exactly what a user needs to know then.

use artifacts::{
    ArtifactKind, CheckpointArtifact, DatasetArtifact, Header, ModelArtifact, NotesArtifact, Split, from_bytes, hex,
    read_file, read_header,
};
use std::fmt::Write;
use std::path::Path;

/// What [`describe`] found: the text to print, and whether the whole file could be read.
pub struct Description {
    pub text: String,
    /// `false` when the header was read but the payload was not (another format version,
    /// damage): the text says why, and `inspect` exits with a failure.
    pub payload_readable: bool,
}

/// The description of the artifact at `path`, or why it is not one.
pub fn describe(path: &Path) -> Result<Description, String> {
    let bytes = read_file(path).map_err(|e| e.to_string())?;
    describe_bytes(path, &bytes)
}

/// [`describe`] for an artifact's bytes already read from `path` (named in the text).
pub fn describe_bytes(path: &Path, bytes: &[u8]) -> Result<Description, String> {
    let (header, _) = read_header(bytes).ok_or_else(|| format!("{}: not a pipeline artifact", path.display()))?;
    let mut out = describe_header(path, &header, bytes.len());
    let summary = match header.kind {
        ArtifactKind::Notes => from_bytes::<NotesArtifact>(bytes, path).map(|(_, a)| notes(&a)),
        ArtifactKind::Dataset => from_bytes::<DatasetArtifact>(bytes, path).map(|(_, a)| dataset(&a)),
        ArtifactKind::Model => from_bytes::<ModelArtifact>(bytes, path).map(|(_, a)| model(&a)),
        ArtifactKind::Checkpoint => from_bytes::<CheckpointArtifact>(bytes, path).map(|(_, a)| checkpoint(&a)),
    };
    let payload_readable = summary.is_ok();
    match summary {
        Ok(text) => out.push_str(&text),
        Err(e) => {
            let _ = writeln!(out, "payload:  unreadable: {e}");
        }
    }
    Ok(Description { text: out, payload_readable })
}

fn describe_header(path: &Path, header: &Header, size: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} ({size} bytes)", path.display());
    let _ = writeln!(out, "kind:     {} artifact, format version {}", header.kind, header.format_version);
    let _ = writeln!(out, "producer: {} (stage `{}`)", header.producer, header.kind.producing_stage());
    let _ = writeln!(out, "config:   {}", hex(&header.config_digest));
    let _ = writeln!(out, "inputs:   {}", header.inputs.len());
    for input in header.inputs.iter().take(10) {
        let _ = writeln!(out, "  {} {}", hex(&input.digest), input.name);
    }
    if header.inputs.len() > 10 {
        let _ = writeln!(out, "  … and {} more", header.inputs.len() - 10);
    }
    out
}

fn notes(a: &NotesArtifact) -> String {
    let notes: usize = a.files.iter().map(|f| f.notes.len()).sum();
    format!("payload:  {} files read, {} rejected, {notes} notes\n", a.files.len(), a.rejected.len())
}

fn dataset(a: &DatasetArtifact) -> String {
    let side = |split| a.pieces.iter().filter(|p| p.split == split).count();
    let tokens: usize = a.pieces.iter().map(|p| p.tokens.len()).sum();
    format!(
        "payload:  encoding {}, dictionary of {}, {} pieces ({} train, {} validation), {tokens} tokens, windows of {} every {}\n",
        a.encoding.name(),
        a.vocabulary.len(),
        a.pieces.len(),
        side(Split::Train),
        side(Split::Validation),
        a.seq_len,
        a.stride
    )
}

fn model(a: &ModelArtifact) -> String {
    let hp = &a.hyperparameters;
    let parameters: usize = a.weights.iter().map(|w| w.data.len()).sum();
    let mut out = format!(
        "payload:  {parameters} parameters: vocabulary {}, embedding {}, {}×LSTM {}, dropout {}, windows of {}; encoding {}\n",
        hp.vocab_size,
        hp.embedding,
        hp.layers,
        hp.hidden,
        hp.dropout,
        hp.seq_len,
        a.encoding.name()
    );
    if let Some(from) = &a.initialised_from {
        let _ = writeln!(out, "started:  from the weights of {} ({})", from.name, artifacts::hex(&from.digest));
    }
    if let Some(last) = a.history.last() {
        let validation = last.validation_loss.map_or("none".to_string(), |v| format!("{v:.3}"));
        let _ = writeln!(
            out,
            "training: {} epochs, {} Adam steps; last epoch: train loss {:.3}, validation loss {validation}",
            a.history.len(),
            a.optimizer.step,
            last.train_loss
        );
    }
    if let Some(c) = a.calibration {
        let _ = writeln!(
            out,
            "calibrated: the epoch-{} weights' logits divided by {:.3}; validation loss {:.4} -> {:.4}",
            a.weights_epoch, c.temperature, c.validation_loss_before, c.validation_loss_after
        );
    }
    out
}

fn checkpoint(a: &CheckpointArtifact) -> String {
    format!("resumes:  epoch {} after {} batches\n{}", a.epoch, a.batches_done, model(&a.model))
}
