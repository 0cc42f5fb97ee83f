//! The four stage binaries, run one after another as a user runs them.

use pipeline_tests::{describe, run_stage, tiny_project};
use std::path::Path;

/// Runs extract → encode → train → compose in `dir`; panics with the output on failure.
fn run_pipeline(dir: &Path) {
    let steps: [(&str, &[&str]); 4] = [
        ("extract", &["--input", "midi", "--output", "out/notes.bin"]),
        ("encode", &["--input", "out/notes.bin", "--output", "out/dataset.bin"]),
        ("train", &["--input", "out/dataset.bin", "--output", "out/model.bin"]),
        ("compose", &["--input", "out/model.bin", "--dataset", "out/dataset.bin", "--output", "out/music.mid"]),
    ];
    pipeline_tests::run_stages(dir, &steps);
}

#[test]
fn four_binaries_make_a_playable_midi_file_reproducibly() {
    let project = tiny_project(3);
    let dir = project.path();
    run_pipeline(dir);

    let bytes = std::fs::read(dir.join("out/music.mid")).unwrap();
    let smf = midly::Smf::parse(&bytes).expect("the generated file is valid MIDI");
    let (mut notes, mut tempo, mut program) = (0, false, None);
    for event in &smf.tracks[0] {
        match event.kind {
            midly::TrackEventKind::Midi { message: midly::MidiMessage::NoteOn { vel, .. }, .. } if vel > 0 => {
                notes += 1
            }
            midly::TrackEventKind::Midi { message: midly::MidiMessage::ProgramChange { program: p }, .. } => {
                program = Some(p.as_int())
            }
            midly::TrackEventKind::Meta(midly::MetaMessage::Tempo(_)) => tempo = true,
            _ => {}
        }
    }
    assert!(notes >= 24, "24 generated elements give at least 24 notes, got {notes}");
    assert!(tempo, "the tempo is set");
    assert_eq!(program, Some(0), "piano");

    // Reports and pictures beside the artifacts; inspect names what made each artifact.
    for report in ["notes", "dataset", "model", "music.mid"] {
        let text = std::fs::read_to_string(dir.join(format!("out/{report}.report.json"))).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(json.is_object() && !json.as_object().unwrap().is_empty(), "{report}: {text}");
    }
    let music = std::fs::read_to_string(dir.join("out/music.mid.report.json")).unwrap();
    assert!(music.contains(&format!("\"notes\": {notes}")), "{music}");
    for picture in ["training_curve.svg", "music.svg"] {
        let svg = std::fs::read_to_string(dir.join("out").join(picture)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{picture}");
    }
    let output = run_stage("inspect", dir, &["out/notes.bin", "out/dataset.bin", "out/model.bin"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", describe(&output));
    for needle in
        ["notes artifact", "producer: extract", "dataset artifact", "model artifact", "producer: train", "epochs"]
    {
        assert!(text.contains(needle), "inspect output lacks {needle:?}: {text}");
    }

    let (_, model) = artifacts::read::<artifacts::ModelArtifact>(&dir.join("out/model.bin")).unwrap();
    assert_eq!(model.history.len(), 2);
    assert!(model.history.iter().all(|e| e.train_loss.is_finite() && e.validation_loss.is_some()));

    // Same inputs, same seed: identical artifacts, byte for byte (the epochs' timings are
    // in the report, not in model.bin).
    let files = ["notes.bin", "dataset.bin", "model.bin", "music.mid"];
    let read_all =
        || -> Vec<Vec<u8>> { files.iter().map(|f| std::fs::read(dir.join("out").join(f)).unwrap()).collect() };
    let first = read_all();
    std::fs::remove_dir_all(dir.join("out")).unwrap();
    run_pipeline(dir);
    for (name, (a, b)) in files.iter().zip(first.iter().zip(&read_all())) {
        assert!(a == b, "{name} differs between two runs");
    }
}

#[test]
fn every_binary_explains_itself() {
    let dir = std::env::temp_dir();
    for stage in ["extract", "encode", "train", "compose"] {
        let output = run_stage(stage, &dir, &["--help"]);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success() && text.contains("--config") && text.contains("--set"), "{stage}: {text}");
    }
}

#[test]
fn bad_input_gives_one_clear_message() {
    let project = tiny_project(1);
    let dir = project.path();
    let stderr = |output: std::process::Output| {
        assert!(!output.status.success(), "expected a failure: {}", describe(&output));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    std::fs::create_dir(dir.join("empty")).unwrap();
    let message = stderr(run_stage("extract", dir, &["--input", "empty", "--output", "n.bin"]));
    assert!(message.contains("no .mid or .midi files") && message.contains("empty"), "{message}");

    let message = stderr(run_stage("extract", dir, &["--input", "nowhere", "--output", "n.bin"]));
    assert!(message.contains("nowhere"), "{message}");

    let message = stderr(run_stage("extract", dir, &["--input", "midi", "--set", "extract.inptu=x"]));
    assert!(message.contains("inptu"), "{message}");

    std::fs::write(dir.join("bad.toml"), "[train]\nepochs = 0\n").unwrap();
    let message = stderr(run_stage("train", dir, &["--config", "bad.toml"]));
    assert!(message.contains("train.epochs"), "{message}");

    // A file of the wrong kind names the stage that writes the right one.
    let ok = run_stage("extract", dir, &["--input", "midi", "--output", "n.bin"]);
    assert!(ok.status.success(), "{}", describe(&ok));
    let message = stderr(run_stage("train", dir, &["--input", "n.bin", "--output", "m.bin"]));
    assert!(message.contains("n.bin") && message.contains("`encode`"), "{message}");

    // No piece fills a window of 100,000 tokens: the message states the counts.
    let message = stderr(run_stage("encode", dir, &["--input", "n.bin", "--output", "d.bin", "--seq-len", "100000"]));
    assert!(message.contains("too little data") && message.contains("100001"), "{message}");
    assert!(!dir.join("d.bin").exists() && !dir.join("m.bin").exists(), "a failed stage leaves no output");

    // A broken MIDI file is skipped with its reason and counted, not fatal.
    std::fs::write(dir.join("midi/broken.mid"), b"MThd\0\0\0\x06\0\x01").unwrap();
    let output = run_stage("extract", dir, &["--input", "midi", "--output", "n.bin"]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(log.contains("skipped broken.mid") && log.contains("read 1 files, skipped 1"), "{log}");
}

#[test]
fn the_performance_encoding_runs_end_to_end_with_a_short_primer() {
    let project = tiny_project(3);
    let dir = project.path();
    let performance =
        ["--set", "encode.encoding=performance", "--set", "encode.in_c=false", "--set", "encode.transpose=[-1, 0, 1]"];
    let steps: [(&str, Vec<&str>); 4] = [
        ("extract", vec!["--input", "midi", "--output", "notes.bin"]),
        (
            "encode",
            [&["--input", "notes.bin", "--output", "dataset.bin", "--seq-len", "16"][..], &performance].concat(),
        ),
        ("train", vec!["--input", "dataset.bin", "--output", "model.bin"]),
        (
            "compose",
            vec![
                "--input",
                "model.bin",
                "--dataset",
                "dataset.bin",
                "--output",
                "music.mid",
                "--seconds",
                "4",
                "--set",
                "compose.tokens=3000",
                "--outputs",
                "2",
            ],
        ),
    ];
    let steps: Vec<(&str, &[&str])> = steps.iter().map(|(stage, args)| (*stage, args.as_slice())).collect();
    pipeline_tests::run_stages(dir, &steps);
    let (_, dataset) = artifacts::read::<artifacts::DatasetArtifact>(&dir.join("dataset.bin")).unwrap();
    assert_eq!(dataset.vocabulary.len(), 388);
    assert!(dataset.pieces.iter().any(|p| p.augmentation.is_some()));

    for file in ["music.mid", "music_2.mid"] {
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(artifacts::report_path(&dir.join(file))).unwrap()).unwrap();
        let seconds = report["seconds"].as_f64().unwrap();
        assert!(seconds > 0.0 && seconds <= 4.0 + 10.0, "{file}: {seconds} s of music for a 4 s request");
        midly::Smf::parse(&std::fs::read(dir.join(file)).unwrap()).expect("valid MIDI");
    }
    assert_ne!(std::fs::read(dir.join("music.mid")).unwrap(), std::fs::read(dir.join("music_2.mid")).unwrap());

    // A primer of half a second gives fewer tokens than a training window: still fine.
    let primer = pipeline_tests::bundled_midi()[0].display().to_string();
    let args = [
        "--input",
        "model.bin",
        "--primer",
        &primer,
        "--set",
        "compose.primer_seconds=0.5",
        "--output",
        "primed.mid",
        "--seconds",
        "2",
    ];
    let output = run_stage("compose", dir, &args);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("tokens from its first 0.5 s"), "{}", describe(&output));
}

/// The time signatures, tempos (quarter notes a minute) and copyright texts (where compose
/// writes its provenance) of a MIDI file.
fn metre_of_file(path: &Path) -> (Vec<(u8, u8)>, Vec<f64>, Vec<String>) {
    let bytes = std::fs::read(path).unwrap();
    let smf = midly::Smf::parse(&bytes).expect("valid MIDI");
    let (mut signatures, mut tempos, mut texts) = (Vec::new(), Vec::new(), Vec::new());
    for event in &smf.tracks[0] {
        match event.kind {
            midly::TrackEventKind::Meta(midly::MetaMessage::TimeSignature(n, power, _, _)) => {
                signatures.push((n, 1u8 << power))
            }
            midly::TrackEventKind::Meta(midly::MetaMessage::Tempo(micros)) => {
                tempos.push(60_000_000.0 / f64::from(micros.as_int()))
            }
            midly::TrackEventKind::Meta(midly::MetaMessage::Copyright(text)) => {
                texts.push(String::from_utf8_lossy(text).into_owned())
            }
            _ => {}
        }
    }
    (signatures, tempos, texts)
}

#[test]
fn the_beats_encoding_writes_bars_in_the_metre_asked_for() {
    let project = tiny_project(9);
    let dir = project.path();
    let beats = ["--set", "encode.encoding=beats", "--seq-len", "32"];
    let steps: [(&str, Vec<&str>); 3] = [
        ("extract", vec!["--input", "midi", "--output", "notes.bin"]),
        ("encode", [&["--input", "notes.bin", "--output", "dataset.bin"][..], &beats].concat()),
        ("train", vec!["--input", "dataset.bin", "--output", "model.bin"]),
    ];
    let steps: Vec<(&str, &[&str])> = steps.iter().map(|(stage, args)| (*stage, args.as_slice())).collect();
    pipeline_tests::run_stages(dir, &steps);
    // The bundled scores keep their bars through the round trip, and say so.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dataset.report.json")).unwrap()).unwrap();
    assert!(report["fidelity"]["in_quarters"]["f1"].as_f64().unwrap() >= 0.99, "{}", report["fidelity"]);

    let compose = |extra: &[&str]| {
        let args =
            [&["--input", "model.bin", "--no-dataset", "--seconds", "8", "--output", "music.mid"][..], extra].concat();
        run_stage("compose", dir, &args)
    };
    let waltz = compose(&["--set", "compose.meter=3/4", "--set", "compose.tempo_bpm=90"]);
    assert!(waltz.status.success(), "{}", describe(&waltz));
    let (signatures, tempos, texts) = metre_of_file(&dir.join("music.mid"));
    assert_eq!(signatures, [(3, 4)], "one metre, the one asked for");
    assert!(tempos.len() == 1 && (tempos[0] - 90.0).abs() < 0.01, "{tempos:?}");
    assert!(texts.iter().any(|t| t.contains("seed 7") && t.contains("model model.bin (payload ")), "{texts:?}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("music.mid.report.json")).unwrap()).unwrap();
    assert_eq!(written["meter"], "3/4");
    assert_eq!(written["tempo"], "90 BPM");
    assert!((0.0..=1.0).contains(&written["onsets_on_grid"].as_f64().unwrap()), "{written}");
    // Every onset on the encoding's grid of twelve steps a quarter note.
    let onsets = onsets_in_quarters(&dir.join("music.mid"));
    assert!(!onsets.is_empty() && onsets.iter().all(|q| (q * 12.0 - (q * 12.0).round()).abs() < 1e-6), "{onsets:?}");

    // A metre no bar token holds, and a performance model asked for a metre, are refused by name.
    let odd = compose(&["--set", "compose.meter=9/4"]);
    assert!(
        !odd.status.success() && String::from_utf8_lossy(&odd.stderr).contains("compose.meter"),
        "{}",
        describe(&odd)
    );
    let piano = pipeline_tests::repo_root().join("models/piano.bin").display().to_string();
    let args = ["--input", &piano, "--no-dataset", "--set", "compose.meter=3/4", "--output", "p.mid"];
    let performance = run_stage("compose", dir, &args);
    let why = String::from_utf8_lossy(&performance.stderr);
    assert!(!performance.status.success() && why.contains("compose.meter") && why.contains("performance"), "{why}");

    // A key asked for: the piece is moved into its scale, and says so. Over a minute: a
    // handful of notes fits several scales equally, and `Scale::best_fit` breaks the tie by
    // the fewest accidentals, which a transposition does not keep (seven notes asked for
    // E♭ major read as G minor).
    for (asked, scale) in [("E♭ major", ["E♭ major", "C minor"]), ("f# minor", ["A major", "F♯ minor"])] {
        let key = format!("compose.key={asked}");
        let minute = ["--seconds", "60", "--tokens", "2000"];
        let args =
            [&["--input", "model.bin", "--no-dataset", "--output", "music.mid", "--set", &key][..], &minute].concat();
        let keyed = run_stage("compose", dir, &args);
        assert!(keyed.status.success(), "{}", describe(&keyed));
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("music.mid.report.json")).unwrap()).unwrap();
        assert!(scale.contains(&written["key"].as_str().unwrap()), "{asked}: {written}");
    }
    let unknown = compose(&["--set", "compose.key=H major"]);
    assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("compose.key"));
}

/// The onsets of a MIDI file in quarter notes: ticks over ticks per quarter.
fn onsets_in_quarters(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap();
    let mut ticks = 0u64;
    let mut onsets = Vec::new();
    let smf = midly::Smf::parse(&bytes).unwrap();
    let per_quarter = match smf.header.timing {
        midly::Timing::Metrical(t) => f64::from(t.as_int()),
        _ => panic!("metrical timing"),
    };
    for event in &smf.tracks[0] {
        ticks += u64::from(event.delta.as_int());
        if let midly::TrackEventKind::Midi { message: midly::MidiMessage::NoteOn { vel, .. }, .. } = event.kind
            && vel > 0
        {
            onsets.push(ticks as f64 / per_quarter);
        }
    }
    onsets
}
