//! `report`: one page that shows the whole run, `artifacts/index.html`.
//!
//! Reads the artifacts folder: the stages' reports (`notes.report.json`,
//! `dataset.report.json`, `model.report.json`), the headers of `notes.bin`, `dataset.bin`
//! and `model.bin` (as `inspect` prints them), `training_curve.svg`, every generated piece
//! (`<name>.mid` with its `.mid.report.json`, piano roll `<name>.svg` and, after `make
//! listen` or `compose --wav`, `<name>.wav`), and when present `evaluation.json` and
//! `quality.json`. Writes `index.html` beside them, atomically.
//!
//! Key design decision: the page is plain HTML with inline styles and no script, and it
//! links the pictures, MIDI and WAV files beside it by relative paths, so it opens from
//! `file://` on a phone or a laptop with no network. Every figure on it is read from a
//! stage's JSON report, so the reports stay the one source of truth, and this crate
//! depends on no stage crate. What is missing or older than the music it would describe
//! (no WAV yet, an evaluation of an earlier piece) is said on the page, never shown as
//! current.

mod html;

use html::{Page, escape};
use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The page's file name inside the artifacts folder.
pub const PAGE: &str = "index.html";

/// Writes `folder/index.html` from what `folder` holds; returns the page's path. A folder
/// that does not exist is an error (a mistyped `--artifacts` must not get a page of blanks).
pub fn write_page(folder: &Path) -> Result<PathBuf, artifacts::ArtifactError> {
    let path = folder.join(PAGE);
    if !folder.is_dir() {
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder: run the pipeline first");
        return Err(artifacts::ArtifactError::Io { path: folder.to_path_buf(), source: missing });
    }
    let outcome = artifacts::write_if_changed(&path, page(folder).as_bytes())?;
    stage_cli::log_outcome(&path, outcome);
    Ok(path)
}

/// The page for `folder`, as HTML text. Deterministic: the same files give the same page.
pub fn page(folder: &Path) -> String {
    let mut page = Page::new("pianola — the run");
    let report = |name: &str| read_json(&folder.join(name));
    what_ran(&mut page, folder, report("notes.report.json"), report("dataset.report.json"));
    training(&mut page, folder, report("model.report.json"));
    artifact_table(&mut page, folder);
    let evaluation = report("evaluation.json");
    for piece in generated_pieces(folder) {
        generated_piece(&mut page, folder, &piece, evaluation.as_ref());
    }
    if let Some(quality) = report("quality.json") {
        quality_section(&mut page, &quality);
    }
    page.finish()
}

/// A JSON file's contents, or `None` when it is missing or not JSON.
fn read_json(path: &Path) -> Option<Value> {
    let bytes = artifacts::read_capped(path, 64 << 20).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A JSON number formatted with `decimals` places, or "?" where the report lacks it.
fn number(value: &Value, decimals: usize) -> String {
    value.as_f64().map_or_else(|| "?".into(), |v| format!("{v:.decimals$}"))
}

/// A JSON string or number as text, or "?".
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => escape(s),
        Value::Number(n) => n.to_string(),
        _ => "?".into(),
    }
}

fn what_ran(page: &mut Page, folder: &Path, notes: Option<Value>, dataset: Option<Value>) {
    page.heading("What ran");
    let mut list = String::new();
    match notes {
        Some(n) => {
            let minutes = n["seconds_of_music"].as_f64().map_or_else(|| "?".into(), |s| format!("{:.1}", s / 60.0));
            let _ = write!(
                list,
                "<li><b>Data</b>: <code>{}</code> — <span id=\"files-read\">{}</span> files read, \
                 <span id=\"files-skipped\">{}</span> skipped, <span id=\"notes\">{}</span> notes, \
                 {minutes} minutes of music, {} to {}</li>",
                text(&n["input"]),
                text(&n["files_read"]),
                text(&n["files_skipped"]),
                text(&n["notes"]),
                text(&n["lowest_pitch"]),
                text(&n["highest_pitch"]),
            );
            if let Some(skipped) = n["skipped"].as_object().filter(|s| !s.is_empty()) {
                list.push_str("<li>Skipped:<ul>");
                for (reason, files) in skipped {
                    let names: Vec<String> = files.as_array().into_iter().flatten().map(text).collect();
                    let _ = write!(list, "<li>{}: {}</li>", escape(reason), names.join(", "));
                }
                list.push_str("</ul></li>");
            }
        }
        None => list.push_str(&missing(folder, "notes.report.json", "extract")),
    }
    match dataset {
        Some(d) => {
            let _ = write!(
                list,
                "<li><b>Encoding</b>: <code>{}</code>, a dictionary of {} tokens; {} training and {} validation \
                 pieces ({} and {} tokens), windows of {} tokens every {}; round trip F1 {}</li>",
                text(&d["encoding"]),
                text(&d["vocabulary_size"]),
                text(&d["train_pieces"]),
                text(&d["validation_pieces"]),
                text(&d["train_tokens"]),
                text(&d["validation_tokens"]),
                text(&d["seq_len"]),
                text(&d["stride"]),
                number(&d["fidelity"]["total"]["f1"], 3),
            );
        }
        None => list.push_str(&missing(folder, "dataset.report.json", "encode")),
    }
    page.raw(&format!("<ul>{list}</ul>"));
}

/// A list item saying that a report is missing and which stage writes it.
fn missing(folder: &Path, name: &str, stage: &str) -> String {
    format!(
        "<li>No <code>{}</code> yet: run <code>{stage}</code> (or <code>make</code>).</li>",
        escape(&folder.join(name).display().to_string())
    )
}

fn training(page: &mut Page, folder: &Path, model: Option<Value>) {
    page.heading("Training");
    let Some(m) = model else {
        page.raw(&format!("<ul>{}</ul>", missing(folder, "model.report.json", "train")));
        return;
    };
    let history = m["history"].as_array().cloned().unwrap_or_default();
    let best = history.iter().find(|e| e["epoch"] == m["best_epoch"]);
    let best_text = best.map_or_else(
        || "no validation loss (no validation pieces)".to_string(),
        |e| {
            format!(
                "best validation loss <span id=\"best-validation-loss\">{}</span> nats per token in epoch {}",
                number(&e["validation_loss"], 3),
                text(&e["epoch"])
            )
        },
    );
    let started = m["initialised_from"].as_str().map_or_else(
        || "from random weights".to_string(),
        |from| format!("from the weights of <code>{}</code>", escape(from)),
    );
    page.raw(&format!(
        "<ul><li><b>Model</b>: <span id=\"parameters\">{}</span> parameters on {}, {} threads; {started}</li>\
         <li><b>Training</b>: {} epochs in {} s; {best_text}</li><li><b>Stopped</b>: {}</li></ul>",
        text(&m["parameters"]),
        text(&m["device"]),
        text(&m["threads"]),
        history.len(),
        number(&m["seconds"], 1),
        text(&m["stopped"]),
    ));
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|e| {
            vec![
                text(&e["epoch"]),
                number(&e["train_loss"], 3),
                number(&e["validation_loss"], 3),
                number(&e["validation_accuracy"], 3),
                number(&e["seconds"], 1),
            ]
        })
        .collect();
    page.table(&["epoch", "train loss", "validation loss", "validation accuracy", "seconds"], &rows);
    page.picture(folder, "training_curve.svg", "The training curve: loss per step and per epoch, train and validation");
}

fn artifact_table(page: &mut Page, folder: &Path) {
    page.heading("Artifacts");
    let mut rows = Vec::new();
    let mut details = String::new();
    for name in ["notes.bin", "dataset.bin", "model.bin"] {
        let path = folder.join(name);
        let Ok(bytes) = artifacts::read_file(&path) else { continue };
        let Some((header, _)) = artifacts::read_header(&bytes) else { continue };
        rows.push(vec![
            format!("<code>{name}</code>"),
            header.kind.to_string(),
            header.format_version.to_string(),
            escape(&header.producer),
            format!("{:.1} MB", bytes.len() as f64 / 1e6),
            format!("<code>{}</code>", &artifacts::hex(&header.payload_digest)[..16]),
        ]);
        if let Ok(description) = inspect::describe_bytes(&path, &bytes) {
            let _ = write!(details, "<pre>{}</pre>", escape(&description.text));
        }
    }
    page.table(&["file", "kind", "format version", "made by", "size", "payload BLAKE3"], &rows);
    if !details.is_empty() {
        page.raw(&format!("<details><summary>As <code>make inspect</code> prints them</summary>{details}</details>"));
    }
}

/// The MIDI files in `folder` that have a compose report beside them, numbered outputs
/// in their order (`generated_music.mid`, `generated_music_2.mid`, …, `_10` after `_9`).
fn generated_pieces(folder: &Path) -> Vec<String> {
    let mut pieces: Vec<String> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".mid.report.json").map(|s| format!("{s}.mid")))
        .filter(|name| folder.join(name).is_file())
        .collect();
    let number = |name: &str| -> (String, u64) {
        let stem = name.trim_end_matches(".mid");
        match stem.rsplit_once('_') {
            Some((base, n)) if n.bytes().all(|b| b.is_ascii_digit()) => (base.to_owned(), n.parse().unwrap_or(0)),
            _ => (stem.to_owned(), 1),
        }
    };
    pieces.sort_by_key(|name| number(name));
    pieces
}

fn generated_piece(page: &mut Page, folder: &Path, midi: &str, evaluation: Option<&Value>) {
    let stem = midi.trim_end_matches(".mid");
    let id = escape(stem);
    page.heading(&format!("Generated: {}", escape(midi)));
    let made = modified(&folder.join(midi));
    if let Some(r) = read_json(&folder.join(format!("{midi}.report.json"))) {
        page.raw(&format!(
            "<p class=\"figures\"><span id=\"{id}-notes\">{}</span> notes in <span id=\"{id}-seconds\">{}</span> s, \
             {} notes per second, up to {} at once, from {} to {}; in <span id=\"{id}-meter\">{}</span> at {}, \
             {} % of onsets on the sixteenth / eighth-triplet grid. <a href=\"{}\">Download the MIDI file</a>.</p>",
            text(&r["notes"]),
            number(&r["seconds"], 1),
            number(&r["notes_per_second"], 1),
            text(&r["max_polyphony"]),
            text(&r["lowest_pitch"]),
            text(&r["highest_pitch"]),
            text(&r["meter"]),
            text(&r["tempo"]),
            r["onsets_on_grid"].as_f64().map_or_else(|| "?".into(), |share| format!("{:.0}", share * 100.0)),
            html::href(midi),
        ));
    }
    page.picture(folder, &format!("{stem}.svg"), &format!("Piano roll of {midi}"));
    let wav = format!("{stem}.wav");
    let fresh = |file: &Path| matches!((modified(file), made), (Some(a), Some(b)) if a >= b);
    if fresh(&folder.join(&wav)) {
        page.raw(&format!("<audio controls preload=\"metadata\" src=\"{}\"></audio>", html::href(&wav)));
    } else {
        page.raw(
            "<p class=\"note\">No recording of this piece yet: run <code>make listen</code> (or <code>compose \
             --wav</code>). It needs a General MIDI SoundFont: <code>apt-get install fluid-soundfont-gm</code> \
             on Debian or Ubuntu, or set <code>compose.soundfont</code>.</p>",
        );
    }
    let Some(evaluation) = evaluation else { return };
    let entry =
        evaluation["generated"].as_array().into_iter().flatten().find(|g| {
            g["file"].as_str().and_then(|f| Path::new(f).file_name()).is_some_and(|f| f.to_str() == Some(midi))
        });
    let Some(entry) = entry else { return };
    // The figures describe the piece only if they were made from these very bytes.
    let current = artifacts::read_file(&folder.join(midi)).map(|bytes| artifacts::hex(&artifacts::digest(&bytes)));
    if entry["blake3"].as_str() != current.as_deref().ok() {
        page.raw("<p class=\"note\">The evaluation is of an earlier piece: run <code>make evaluate</code>.</p>");
        return;
    }
    let rows: Vec<Vec<String>> = entry["music"]["against_validation"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| vec![text(&s["statistic"]), number(&s["overlap"], 2), number(&s["kl_divergence"], 2)])
        .collect();
    page.raw("<p>Against the validation pieces (<code>make evaluate</code>; overlap 1 = identical):</p>");
    page.table(&["statistic", "overlap", "KL divergence"], &rows);
    let copied = &entry["longest_copied_notes"];
    page.raw(&format!(
        "<p>Memorisation: the longest run of notes copied from the training pieces is {} notes (from <code>{}</code>); \
         {} of its 8-note patterns occur there{}.</p>",
        text(&copied["length"]),
        text(&copied["source"]),
        number(&entry["copied_ngram_share"], 3),
        if entry["flagged_as_copy"] == Value::Bool(true) { " — <b>flagged as a copy</b>" } else { "" },
    ));
    page.picture(folder, "evaluation_pitch_classes.svg", "Pitch classes, generated against validation");
    page.picture(folder, "evaluation_inter_onset.svg", "Inter-onset intervals, generated against validation");
}

fn quality_section(page: &mut Page, quality: &Value) {
    page.heading("Music quality (make quality)");
    page.raw(&format!(
        "<p>{} pieces composed by the model alone against {} real pieces it never saw; mean overlap of the \
         seven histograms <b>{}</b> (lowest {}).</p>",
        text(&quality["generated_pieces"]),
        text(&quality["reference_pieces"]),
        number(&quality["mean_overlap"], 3),
        number(&quality["lowest_overlap"], 3),
    ));
    // Real excerpts of the training pieces at the same sample size, where measured: the
    // scale the generated figures are read on.
    let real = &quality["real_excerpts"];
    let spread_to = |s: &Value, decimals| {
        format!(
            "{} – {} – {}",
            number(&s["min"], decimals),
            number(&s["median"], decimals),
            number(&s["max"], decimals)
        )
    };
    let spread = |s: &Value| spread_to(s, 2);
    let mut overlaps: Vec<Vec<String>> = quality["overlaps"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, pair)| vec![text(&pair[0]), number(&pair[1], 2), spread(&real["overlaps"][i][1])])
        .collect();
    overlaps.push(vec!["mean".into(), number(&quality["mean_overlap"], 2), spread(&real["mean_overlap"])]);
    if real.is_object() {
        page.raw(&format!(
            "<p>Beside them, {} sets of {} random excerpts of the training pieces, as long as the generated \
             pieces, compared the same way (lowest – median – highest): what real music of the corpus scores \
             at this sample size.</p>",
            text(&real["draws"]),
            text(&real["pieces_per_draw"])
        ));
        page.table(&["histogram", "overlap", "real excerpts"], &overlaps);
    } else {
        let plain: Vec<Vec<String>> = overlaps.into_iter().map(|row| row[..2].to_vec()).collect();
        page.table(&["histogram", "overlap"], &plain);
    }
    let mut rows = vec![
        vec!["repetition".into(), number(&quality["repetition"], 2), number(&quality["reference_repetition"], 2)],
        vec!["pulse".into(), number(&quality["pulse"], 2), number(&quality["reference_pulse"], 2)],
        vec![
            "notes per second".into(),
            number(&quality["notes_per_second"], 1),
            number(&quality["reference_notes_per_second"], 1),
        ],
        vec![
            "onsets on the sixteenth / triplet grid".into(),
            number(&quality["onsets_on_grid"], 2),
            number(&quality["reference_onsets_on_grid"], 2),
        ],
    ];
    let mut keys = vec![("repetition", 2), ("pulse", 2), ("notes_per_second", 1), ("onsets_on_grid", 2)];
    // How the sets use the sustain pedal (a quality.json from before these figures has none).
    if quality["pedal"].is_object() {
        for (label, figure, real_key, decimals) in [
            ("pieces that press the sustain pedal", "pieces_with_pedal", "pieces_with_pedal", 2),
            ("pedal presses a minute (pieces that pedal)", "presses_per_minute", "pedal_presses_per_minute", 0),
            ("share of the time the pedal is down (pieces that pedal)", "down_share", "pedal_down_share", 2),
        ] {
            let (generated, reference) = (&quality["pedal"][figure], &quality["reference_pedal"][figure]);
            rows.push(vec![label.into(), number(generated, decimals), number(reference, decimals)]);
            keys.push((real_key, decimals));
        }
    }
    if real.is_object() {
        for (row, (key, decimals)) in rows.iter_mut().zip(keys) {
            row.push(spread_to(&real[key], decimals));
        }
        page.table(&["", "generated", "reference openings", "real excerpts"], &rows);
    } else {
        page.table(&["", "generated", "reference openings"], &rows);
    }
    page.raw(&format!(
        "<p>Longest run copied from a training piece in any transposition: {} notes.</p>",
        text(&quality["longest_copy_notes"])
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quality_section_reads_the_generated_figures_on_the_real_excerpts_scale() {
        let folder = tempfile::tempdir().unwrap();
        let spread = |min: f64, median: f64, max: f64| serde_json::json!({"min": min, "median": median, "max": max});
        let overlaps: Vec<_> = ["pitch class", "pitch", "interval", "inter-onset", "duration", "velocity", "polyphony"]
            .iter()
            .map(|name| serde_json::json!([name, 0.8]))
            .collect();
        let mut quality = serde_json::json!({
            "generated_pieces": 4, "reference_pieces": 29, "mean_overlap": 0.8, "lowest_overlap": 0.8,
            "overlaps": overlaps, "repetition": 0.6, "reference_repetition": 0.62, "pulse": 0.3,
            "reference_pulse": 0.39, "notes_per_second": 11.0, "reference_notes_per_second": 8.5,
            "longest_copy_notes": 9,
        });
        std::fs::write(folder.path().join("quality.json"), quality.to_string()).unwrap();
        let plain = page(folder.path());
        assert!(plain.contains("reference openings") && !plain.contains("real excerpts"), "{plain}");

        let real_overlaps: Vec<_> =
            overlaps_named(&quality).into_iter().map(|n| serde_json::json!([n, spread(0.7, 0.8, 0.9)])).collect();
        quality["real_excerpts"] = serde_json::json!({
            "draws": 20, "pieces_per_draw": 4, "seconds": 60.0, "overlaps": real_overlaps,
            "mean_overlap": spread(0.72, 0.79, 0.87), "lowest_overlap": spread(0.5, 0.68, 0.8),
            "repetition": spread(0.35, 0.54, 0.74), "pulse": spread(0.2, 0.3, 0.5), "notes_per_second": spread(7.9, 9.8, 17.1),
        });
        std::fs::write(folder.path().join("quality.json"), quality.to_string()).unwrap();
        let with_real = page(folder.path());
        assert!(with_real.contains("20 sets of 4 random excerpts"), "{with_real}");
        assert!(with_real.contains("0.72 – 0.79 – 0.87") && with_real.contains("7.9 – 9.8 – 17.1"), "{with_real}");
        assert!(!with_real.contains("sustain pedal"), "no pedal figures, no pedal rows");

        quality["pedal"] =
            serde_json::json!({"pieces_with_pedal": 0.56, "presses_per_minute": 29.0, "down_share": 0.32});
        quality["reference_pedal"] =
            serde_json::json!({"pieces_with_pedal": 0.31, "presses_per_minute": 64.0, "down_share": 0.62});
        quality["real_excerpts"]["onsets_on_grid"] = spread(0.89, 0.94, 0.99);
        quality["real_excerpts"]["pieces_with_pedal"] = spread(0.0, 0.38, 0.62);
        quality["real_excerpts"]["pedal_presses_per_minute"] = spread(9.0, 46.0, 110.0);
        quality["real_excerpts"]["pedal_down_share"] = spread(0.13, 0.48, 0.77);
        std::fs::write(folder.path().join("quality.json"), quality.to_string()).unwrap();
        let pedalled = page(folder.path());
        let row = pedalled.split("pieces that press the sustain pedal").nth(1).unwrap_or_default();
        assert!(row.contains("0.56") && row.contains("0.31") && row.contains("0.00 – 0.38 – 0.62"), "{pedalled}");
        assert!(pedalled.contains("9 – 46 – 110"), "{pedalled}");
    }

    fn overlaps_named(quality: &Value) -> Vec<String> {
        quality["overlaps"].as_array().unwrap().iter().map(|pair| pair[0].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn a_folder_without_reports_gets_a_page_that_says_what_to_run() {
        let folder = tempfile::tempdir().unwrap();
        let page = page(folder.path());
        for stage in ["extract", "encode", "train"] {
            assert!(page.contains(&format!("run <code>{stage}</code>")), "{page}");
        }
        assert!(!page.contains("<img"), "no pictures that do not exist");
    }

    #[test]
    fn a_missing_folder_is_an_error_and_nothing_is_created() {
        let folder = tempfile::tempdir().unwrap();
        let missing = folder.path().join("not-there");
        assert!(write_page(&missing).is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn damaged_reports_are_shown_as_unknown_not_a_panic() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join("notes.report.json"), r#"{"files_read": "x", "skipped": 5}"#).unwrap();
        std::fs::write(folder.path().join("model.report.json"), "not json").unwrap();
        std::fs::write(folder.path().join("x.mid.report.json"), "{}").unwrap();
        std::fs::write(folder.path().join("x.mid"), b"").unwrap();
        let page = page(folder.path());
        assert!(page.contains("<span id=\"files-read\">x</span>") && page.contains("Generated: x.mid"), "{page}");
    }

    #[test]
    fn hostile_file_names_become_text_and_relative_links_never_markup_or_script() {
        let folder = tempfile::tempdir().unwrap();
        let names = [
            "javascript:alert(1).mid",
            "\"><script>alert(2)<!--.mid",
            "x' onmouseover='alert(3).mid",
            "data:text,html.mid",
        ];
        for name in names {
            std::fs::write(folder.path().join(name), b"").unwrap();
            std::fs::write(folder.path().join(format!("{name}.report.json")), r#"{"notes": 3}"#).unwrap();
            let stem = name.trim_end_matches(".mid");
            std::fs::write(folder.path().join(format!("{stem}.svg")), "<svg/>").unwrap();
            std::fs::write(folder.path().join(format!("{stem}.wav")), b"RIFF").unwrap();
        }
        let page = page(folder.path());
        assert!(!page.contains("<script") && !page.contains(" onmouseover='"), "{page}");
        let mut links = 0;
        for attribute in ["href=\"", "src=\""] {
            for value in page.split(attribute).skip(1).map(|rest| rest.split('"').next().unwrap()) {
                links += 1;
                assert!(value.starts_with("./") && !value.contains(':') && !value.contains('\''), "{value}");
            }
        }
        assert!(links >= 3 * names.len(), "every piece links its MIDI file, picture and recording: {links}");
    }
}
