//! The README's fidelity figures, checked: the 387 files of the real piano corpus
//! (`../shared/data/piano`, or under `PIANOLA_CORPUS`), encoded with the `performance` and
//! `beats` encodings and decoded again, keep their notes; and the pieces played without a
//! click are told from the scores. Skipped with a line where the corpus is missing, unless
//! `PIANOLA_REQUIRE_CORPUS` is set.

use artifacts::NotesArtifact;
use config::PipelineConfig;

/// What the extract stage finds in `folder` of the real corpus, as the pipeline runs it;
/// `None` where the corpus is missing (after `test_support::corpus`'s line).
fn extracted(folder: &str, test: &str, config: &PipelineConfig) -> Option<NotesArtifact> {
    let input = test_support::corpus(folder, test)?;
    let dir = tempfile::tempdir().unwrap();
    let notes_path = dir.path().join("notes.bin");
    extract::run(config, &input, &notes_path).unwrap();
    Some(artifacts::read_input::<NotesArtifact>(&notes_path).unwrap().0)
}

#[test]
fn the_performance_encoding_keeps_the_real_corpus_notes() {
    let config = PipelineConfig::default();
    let Some(notes) = extracted("piano", "the_performance_encoding_keeps_the_real_corpus_notes", &config) else {
        return;
    };
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
    let mut config = PipelineConfig::default();
    config.encode.encoding = config::EncodingName::Beats;
    let Some(notes) = extracted("piano", "the_beats_encoding_keeps_the_real_corpus_in_beats_and_seconds", &config)
    else {
        return;
    };
    let dataset = encode::encode(&config, &notes).unwrap();
    assert_eq!(dataset.vocabulary.len(), 459);
    let fidelity = encode::measure_fidelity(&dataset, &notes);
    let in_quarters = fidelity.in_quarters.expect("beats keeps quarter notes");
    assert!(in_quarters.f1 >= 0.99, "F1 in quarter notes {:.4}: {:?}", in_quarters.f1, in_quarters.counts);
    assert!(fidelity.total.f1 >= 0.95, "F1 in seconds {:.4}: {:?}", fidelity.total.f1, fidelity.total.counts);
    // No piece of piano-midi.de, all sequenced from scores, is taken for one played without
    // a click (what is named comes from the tutorial corpus's arrangements).
    let grid = encode::measure_grid(&notes);
    assert!(grid.unmetered.iter().all(|(path, _)| !path.starts_with("piano-midi-de/")), "{:?}", grid.unmetered);
    assert!(grid.onsets_on_grid >= 0.9, "{:.3} of the onsets on the grid", grid.onsets_on_grid);
}

/// The ten MAESTRO performances among the odd files, played without a click, are each
/// named as such: their onsets sit on the grid about as often as chance puts them there.
#[test]
fn performances_without_a_click_are_named_unmetered() {
    let test = "performances_without_a_click_are_named_unmetered";
    let Some(notes) = extracted("oddities", test, &PipelineConfig::default()) else {
        return;
    };
    let performances: Vec<&str> =
        notes.files.iter().map(|f| f.path.as_str()).filter(|path| path.contains("Maestro")).collect();
    assert_eq!(performances.len(), 10, "{performances:?}");
    let grid = encode::measure_grid(&notes);
    for path in performances {
        let named = grid.unmetered.iter().any(|(unmetered, _)| unmetered == path);
        assert!(named, "{path} not named: {:?}", grid.unmetered);
    }
}
