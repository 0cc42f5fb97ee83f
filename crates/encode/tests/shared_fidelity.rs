//! The README's fidelity figure, checked: the 387 files of the real piano corpus
//! (`../shared/data/piano`, or under `PIANOLA_CORPUS`), encoded with the default
//! `performance` encoding and decoded again, keep their notes with F1 ≥ 0.99. Skipped with a
//! line where the corpus is missing, unless `PIANOLA_REQUIRE_CORPUS` is set.

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
