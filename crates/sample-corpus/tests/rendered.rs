//! The bundled MIDI files are exactly what their scores render to: `make corpus` on a fresh
//! clone changes no byte of `data/`.

#[test]
fn every_bundled_midi_file_is_its_score_rendered() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    let mut scores: Vec<_> = std::fs::read_dir(data.join("scores"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "score"))
        .collect();
    scores.sort();
    assert!(scores.len() >= 9, "the bundled corpus has its scores");
    for path in scores {
        let score = sample_corpus::parse_score(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let rendered = music::midi_out::to_bytes(&score.to_music(), None);
        let midi = data.join(path.file_stem().unwrap()).with_extension("mid");
        assert!(std::fs::read(&midi).unwrap() == rendered, "{} differs from its score", midi.display());
    }
}
