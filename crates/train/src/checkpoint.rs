//! Stopping and resuming: where a run's checkpoint lives, whether a later run may resume
//! it, and the signals that ask a run to stop.

use artifacts::{CheckpointArtifact, Digest};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Where the checkpoint of a run writing `output` lives: beside it, `<output>.checkpoint`.
pub fn checkpoint_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".checkpoint");
    PathBuf::from(name)
}

/// The checkpoint at `path` if a run with `identity` (see
/// [`config::PipelineConfig::training_identity`]) on the data set with `dataset_digest` may
/// resume it. Anything else there is reported, naming what differs, and left to be
/// overwritten: a checkpoint is never resumed under settings that would change its weights.
pub fn load_resumable(
    path: &Path,
    identity: &[(String, String)],
    dataset_digest: &Digest,
) -> Option<CheckpointArtifact> {
    if !path.exists() {
        return None;
    }
    let checkpoint = match artifacts::read::<CheckpointArtifact>(path) {
        Ok((header, checkpoint)) if header.inputs.iter().any(|input| input.digest == *dataset_digest) => checkpoint,
        Ok(_) => {
            tracing::warn!("{} was made on another data set: starting afresh", path.display());
            return None;
        }
        Err(e) => {
            tracing::warn!("cannot resume: {e}; starting afresh");
            return None;
        }
    };
    let changed = changed_settings(&checkpoint.settings, identity);
    if !changed.is_empty() {
        tracing::warn!("{} was made with other settings ({}): starting afresh", path.display(), changed.join(", "));
        return None;
    }
    tracing::info!(
        "resuming from {}: epoch {}, {} batches done, {:.1} minutes trained",
        path.display(),
        checkpoint.epoch,
        checkpoint.batches_done,
        checkpoint.trained_seconds / 60.0
    );
    Some(checkpoint)
}

/// The precision the run checkpointed at `path` computes in, as its settings recorded it
/// (`train.precision` is settled before a run begins, so it is `"f32"` or `"bf16"`); `None`
/// when there is no readable checkpoint there.
pub fn recorded_precision(path: &Path) -> Option<lstm::Precision> {
    if !path.exists() {
        return None;
    }
    let (_, checkpoint) = artifacts::read::<CheckpointArtifact>(path).ok()?;
    let (_, value) = checkpoint.settings.iter().find(|(key, _)| key == "train.precision")?;
    match value.as_str() {
        "\"f32\"" => Some(lstm::Precision::F32),
        "\"bf16\"" => Some(lstm::Precision::Bf16),
        _ => None,
    }
}

/// `key was → now` for every setting that differs between two identities.
fn changed_settings(was: &[(String, String)], now: &[(String, String)]) -> Vec<String> {
    let value = |list: &[(String, String)], key: &str| list.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let mut keys: Vec<&String> = was.iter().chain(now).map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let (before, after) = (value(was, key), value(now, key));
            (before != after).then(|| {
                let show = |v: Option<String>| v.unwrap_or_else(|| "(unset)".into());
                format!("{key} {} → {}", show(before), show(after))
            })
        })
        .collect()
}

/// Sets the returned flag on Ctrl-C (SIGINT) or SIGTERM, so training can finish its step,
/// save a checkpoint and stop. A second Ctrl-C stops the process at once.
pub fn interrupt_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Order matters: the shutdown check sees the flag as it was before this signal.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(signal, Arc::clone(&flag))?;
    }
    Ok(flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn names_each_changed_setting_with_both_values() {
        let was = pairs(&[("seed", "42"), ("train.hidden", "256"), ("train.init", "\"\"")]);
        let now = pairs(&[("seed", "42"), ("train.hidden", "512"), ("train.init", "\"\"")]);
        assert_eq!(changed_settings(&was, &now), vec!["train.hidden 256 → 512"]);
        assert!(changed_settings(&was, &was).is_empty());
        let fewer = pairs(&[("seed", "42"), ("train.hidden", "256")]);
        assert_eq!(changed_settings(&was, &fewer), vec!["train.init \"\" → (unset)"]);
    }
}
