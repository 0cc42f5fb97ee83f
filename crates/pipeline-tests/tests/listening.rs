//! `listen` renders generated music to a WAV file of the right length that is not silent.
//!
//! Needs a General MIDI SoundFont: `PIANOLA_SOUNDFONT`, else `compose.soundfont` of the
//! repository's `pipeline.toml`, else one installed in the usual places (`make test`
//! installs Debian's fluid-soundfont-gm where it can). Without one the test says that it
//! skipped, unless `PIANOLA_REQUIRE_SOUNDFONT` is set.

use pipeline_tests::{describe, run_stage, tiny_project};

#[test]
fn generated_music_renders_to_an_audible_wav_of_the_right_length() {
    let config = config::PipelineConfig::load(&pipeline_tests::repo_root().join("pipeline.toml"), &[]).unwrap();
    let Some(soundfont) =
        test_support::soundfont("generated_music_renders_to_an_audible_wav_of_the_right_length", || {
            compose::audio::find_soundfont(&config.compose.soundfont)
        })
    else {
        return;
    };
    let project = tiny_project(2);
    let dir = project.path();
    let use_soundfont = format!("compose.soundfont={}", soundfont.display());
    let steps: [(&str, &[&str]); 4] = [
        ("extract", &["--input", "midi", "--output", "notes.bin"]),
        ("encode", &["--input", "notes.bin", "--output", "dataset.bin"]),
        ("train", &["--input", "dataset.bin", "--output", "model.bin"]),
        (
            "compose",
            &[
                "--input",
                "model.bin",
                "--dataset",
                "dataset.bin",
                "--output",
                "music.mid",
                "--wav",
                "--set",
                &use_soundfont,
            ],
        ),
    ];
    pipeline_tests::run_stages(dir, &steps);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("music.mid.report.json")).unwrap()).unwrap();
    let music_seconds = report["seconds"].as_f64().unwrap();

    let mut reader = hound::WavReader::open(dir.join("music.wav")).unwrap();
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.sample_rate), (2, compose::audio::SAMPLE_RATE));
    let seconds = reader.duration() as f64 / f64::from(spec.sample_rate);
    assert!(
        seconds >= music_seconds && seconds <= music_seconds + 3.0,
        "{seconds} s of audio for {music_seconds} s of music"
    );
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let rms = (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt();
    assert!(rms > 100.0, "the audio is (nearly) silent: RMS {rms:.1}, SoundFont {}", soundfont.display());

    // The same through the `listen` binary, onto a copy.
    std::fs::copy(dir.join("music.mid"), dir.join("again.mid")).unwrap();
    let output = run_stage("listen", dir, &["again.mid", "--set", &use_soundfont]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(std::fs::read(dir.join("again.wav")).unwrap(), std::fs::read(dir.join("music.wav")).unwrap());
}

#[test]
fn hostile_midi_files_render_within_bounds_or_are_refused() {
    let Some(soundfont) = test_support::soundfont("hostile_midi_files_render_within_bounds_or_are_refused", || {
        compose::audio::find_soundfont("")
    }) else {
        return;
    };
    use test_support::odd_midi::{event, header, huge_rest, track, track_claiming};
    let dir = tempfile::tempdir().unwrap();
    let set = format!("compose.soundfont={}", soundfont.display());
    // A rest of 4.5·10⁹ seconds: shortened to extract.max_rest_seconds before rendering.
    std::fs::write(dir.path().join("rest.mid"), [header(0, 1, 1), track(&huge_rest())].concat()).unwrap();
    let output = run_stage("listen", dir.path(), &["rest.mid", "--set", &set]);
    assert!(output.status.success(), "{}", describe(&output));
    let wav = hound::WavReader::open(dir.path().join("rest.wav")).unwrap();
    let seconds = f64::from(wav.duration()) / f64::from(wav.spec().sample_rate);
    assert!(seconds < 200.0, "{seconds} s rendered");

    // A track claiming 4 GB: the notes that are there are rendered; nothing panics.
    let note = [event(0, &[0x90, 60, 80]), event(96, &[0x80, 60, 0])].concat();
    std::fs::write(dir.path().join("claims.mid"), [header(0, 1, 96), track_claiming(&note, u32::MAX)].concat())
        .unwrap();
    let output = run_stage("listen", dir.path(), &["claims.mid", "--set", &set]);
    assert!(output.status.success(), "{}", describe(&output));
    // Not MIDI at all: one line, exit 1.
    std::fs::write(dir.path().join("text.mid"), b"hello").unwrap();
    let output = run_stage("listen", dir.path(), &["text.mid", "--set", &set]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
}
