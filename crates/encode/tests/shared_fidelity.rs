//! The README's fidelity figures, checked: the 387 files of the real piano corpus
//! (`../shared/data/piano`, or under `PIANOLA_CORPUS`), encoded with the `performance` and
//! `beats` encodings and decoded again, keep their notes. Skipped with a line where the
//! corpus is missing, unless `PIANOLA_REQUIRE_CORPUS` is set.

use config::PipelineConfig;

#[test]
fn the_performance_encoding_keeps_the_real_corpus_notes() {
    let Some(piano) = test_support::corpus("piano", "the_performance_encoding_keeps_the_real_corpus_notes") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let notes_path = dir.path().join("notes.bin");
    let config = PipelineConfig::default();
    extract::run(&config, &piano, &notes_path).unwrap();
    let (notes, _) = artifacts::read_input::<artifacts::NotesArtifact>(&notes_path).unwrap();
    assert_eq!(notes.files.len(), 387);
    let dataset = encode::encode(&config, &notes).unwrap();
    let fidelity = encode::measure_fidelity(&dataset, &notes);
    assert!(fidelity.total.f1 >= 0.99, "F1 {:.4}: {:?}", fidelity.total.f1, fidelity.total.counts);
    assert_eq!(fidelity.pieces.len(), 387, "every piece is checked");
}

/// The `beats` encoding keeps the scores of the real corpus: onsets and durations in quarter
/// notes with F1 ≥ 0.99, and in seconds (its tempo tokens follow the tempo map to within
/// 30 ms of drift) with F1 ≥ 0.95.
#[test]
fn the_beats_encoding_keeps_the_real_corpus_in_beats_and_seconds() {
    let Some(piano) = test_support::corpus("piano", "the_beats_encoding_keeps_the_real_corpus_in_beats_and_seconds")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let notes_path = dir.path().join("notes.bin");
    let mut config = PipelineConfig::default();
    config.encode.encoding = config::EncodingName::Beats;
    extract::run(&config, &piano, &notes_path).unwrap();
    let (notes, _) = artifacts::read_input::<artifacts::NotesArtifact>(&notes_path).unwrap();
    let dataset = encode::encode(&config, &notes).unwrap();
    assert_eq!(dataset.vocabulary.len(), 459);
    let fidelity = encode::measure_fidelity(&dataset, &notes);
    let in_quarters = fidelity.in_quarters.expect("beats keeps quarter notes");
    assert!(in_quarters.f1 >= 0.99, "F1 in quarter notes {:.4}: {:?}", in_quarters.f1, in_quarters.counts);
    assert!(fidelity.total.f1 >= 0.95, "F1 in seconds {:.4}: {:?}", fidelity.total.f1, fidelity.total.counts);
}
