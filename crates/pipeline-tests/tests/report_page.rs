//! The run's page, `artifacts/index.html`, checked in a real browser (headless Chromium):
//! no console messages, every picture decoded, every internal link resolving to a file, the
//! audio player loading a recording as long as the piece (to within a second), the figures
//! of the stages' JSON reports on it, and no sideways scrolling on a phone's width.
//!
//! Needs a Chromium-family browser (`PIANOLA_BROWSER`, else `chromium` on the PATH) and a
//! SoundFont for the recording; without either the test says that it skipped, unless
//! `PIANOLA_REQUIRE_BROWSER` / `PIANOLA_REQUIRE_SOUNDFONT` is set (CI sets both). Screenshots
//! at a laptop's and a phone's width go to `target/report-page/`.

use pipeline_tests::{describe, repo_root, run_stages, tiny_project};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Loads the page in a frame of `width` pixels and writes what the browser saw into
/// `<pre id="result">` as JSON, for `--dump-dom` to print. Test code, never shipped.
const CHECKER: &str = r#"<!doctype html><html><head><meta charset="utf-8"></head><body>
<pre id="result">pending</pre>
<iframe id="page" src="artifacts/index.html" style="width:WIDTHpx;height:900px;border:0"></iframe>
<script>
const frame = document.getElementById('page');
const exists = url => new Promise(resolve => {
  const request = new XMLHttpRequest();
  request.onload = () => resolve(true);
  request.onerror = () => resolve(false);
  try { request.open('GET', url); request.send(); } catch (e) { resolve(false); }
});
const duration = audio => new Promise(resolve => {
  if (audio.readyState >= 1) return resolve(audio.duration);
  audio.addEventListener('loadedmetadata', () => resolve(audio.duration));
  audio.addEventListener('error', () => resolve(-1));
  audio.load();
});
frame.addEventListener('load', async () => {
  const page = frame.contentDocument;
  const images = [...page.images].map(i => ({src: i.getAttribute('src'), width: i.naturalWidth, height: i.naturalHeight}));
  const links = [];
  for (const a of page.querySelectorAll('a[href]')) {
    const href = a.getAttribute('href');
    if (/^[a-z]+:/i.test(href) || href.startsWith('#')) continue;
    links.push({href, exists: await exists(a.href)});
  }
  const audio = [];
  for (const element of page.querySelectorAll('audio')) {
    audio.push({src: element.getAttribute('src'), duration: await duration(element)});
  }
  const scrollWidth = page.documentElement.scrollWidth;
  document.getElementById('result').textContent =
    JSON.stringify({images, links, audio, scrollWidth, text: page.body.innerText});
});
</script></body></html>"#;

#[test]
fn the_run_page_shows_the_run_in_a_real_browser() {
    let test = "the_run_page_shows_the_run_in_a_real_browser";
    let Some(browser) = test_support::browser(test) else { return };
    let config = config::PipelineConfig::load(&repo_root().join("pipeline.toml"), &[]).unwrap();
    let soundfont = test_support::soundfont(test, || compose::audio::find_soundfont(&config.compose.soundfont));
    let started = Instant::now();

    let project = tiny_project(2);
    let dir = project.path();
    let mut compose_args = vec!["--input", "artifacts/model.bin", "--dataset", "artifacts/dataset.bin"];
    compose_args.extend(["--output", "artifacts/generated_music.mid"]);
    let use_soundfont = soundfont.as_ref().map(|s| format!("compose.soundfont={}", s.display()));
    if let Some(setting) = &use_soundfont {
        compose_args.extend(["--wav", "--set", setting]);
    }
    let steps: [(&str, &[&str]); 5] = [
        ("extract", &["--input", "midi", "--output", "artifacts/notes.bin"]),
        ("encode", &["--input", "artifacts/notes.bin", "--output", "artifacts/dataset.bin"]),
        ("train", &["--input", "artifacts/dataset.bin", "--output", "artifacts/model.bin"]),
        ("compose", &compose_args),
        ("report", &["--artifacts", "artifacts"]),
    ];
    run_stages(dir, &steps);

    let seen = look_at_page(&browser, dir, 1100);
    let console = &seen.console;
    assert!(console.is_empty(), "the page wrote to the browser's console:\n{}", console.join("\n"));
    let images = seen.result["images"].as_array().unwrap();
    let sources: Vec<&str> = images.iter().map(|i| i["src"].as_str().unwrap()).collect();
    assert!(sources.contains(&"./training_curve.svg") && sources.contains(&"./generated_music.svg"), "{sources:?}");
    for image in images {
        assert!(image["width"].as_u64() > Some(0) && image["height"].as_u64() > Some(0), "not decoded: {image}");
    }
    let links = seen.result["links"].as_array().unwrap();
    assert!(links.iter().any(|l| l["href"] == "./generated_music.mid"), "no link to the music: {links:?}");
    for link in links {
        assert_eq!(link["exists"], true, "a link to nothing: {link}");
    }

    let report = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("artifacts").join(name)).unwrap()).unwrap()
    };
    let piece = report("generated_music.mid.report.json");
    let audio = seen.result["audio"].as_array().unwrap();
    if soundfont.is_some() {
        assert_eq!(audio.len(), 1, "one player for the one recording: {audio:?}");
        let (heard, written) = (audio[0]["duration"].as_f64().unwrap(), piece["seconds"].as_f64().unwrap());
        assert!((heard - written).abs() <= 1.0, "the recording lasts {heard} s, the piece {written} s");
    } else {
        assert!(audio.is_empty() && seen.text().contains("fluid-soundfont-gm"), "without a recording, how to get one");
    }

    // The figures on the page are the reports' figures.
    let (notes, dataset, model) =
        (report("notes.report.json"), report("dataset.report.json"), report("model.report.json"));
    let best = model["history"].as_array().unwrap().iter().find(|e| e["epoch"] == model["best_epoch"]).unwrap();
    let expected = [
        format!("{} files read", notes["files_read"]),
        format!("{} notes", notes["notes"]),
        format!("a dictionary of {} tokens", dataset["vocabulary_size"]),
        format!("{} parameters", model["parameters"]),
        format!("best validation loss {:.3}", best["validation_loss"].as_f64().unwrap()),
        model["stopped"].as_str().unwrap().to_owned(),
        format!("{} notes in {:.1} s", piece["notes"], piece["seconds"].as_f64().unwrap()),
    ];
    for figure in &expected {
        assert!(seen.text().contains(figure.as_str()), "the page lacks \"{figure}\":\n{}", seen.text());
    }

    let phone = look_at_page(&browser, dir, 390);
    let width = phone.result["scrollWidth"].as_u64().unwrap();
    assert!(width <= 390, "on a phone's 390 pixels the page is {width} wide: it scrolls sideways");

    let shots = repo_root().join("target/report-page");
    std::fs::create_dir_all(&shots).unwrap();
    for (name, width) in [("laptop.png", 1100), ("phone.png", 390)] {
        let shot = shots.join(name);
        let _ = std::fs::remove_file(&shot);
        let output = browse(
            &browser,
            &page_url(dir, "artifacts/index.html"),
            &[format!("--screenshot={}", shot.display()), format!("--window-size={width},2400")],
        );
        let png = std::fs::read(&shot).unwrap_or_else(|_| panic!("no screenshot: {}", describe(&output)));
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a blank screenshot");
    }
    // Beside the figures, where the CI log shows it.
    eprintln!("browser test: {:.1} s, screenshots in {}", started.elapsed().as_secs_f64(), shots.display());
}

/// What the browser saw: the checker's JSON and the page's console messages.
struct Seen {
    result: Value,
    console: Vec<String>,
}

impl Seen {
    fn text(&self) -> &str {
        self.result["text"].as_str().unwrap_or_default()
    }
}

fn look_at_page(browser: &Path, dir: &Path, width: u32) -> Seen {
    let checker = dir.join(format!("check-{width}.html"));
    std::fs::write(&checker, CHECKER.replace("WIDTH", &width.to_string())).unwrap();
    let output = browse(
        browser,
        &page_url(dir, checker.file_name().unwrap().to_str().unwrap()),
        &[
            "--allow-file-access-from-files".into(),
            "--enable-logging=stderr".into(),
            "--v=0".into(),
            "--virtual-time-budget=20000".into(),
            "--dump-dom".into(),
        ],
    );
    let dom = String::from_utf8_lossy(&output.stdout);
    let json = dom
        .split_once("<pre id=\"result\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(json, _)| json.replace("&lt;", "<").replace("&gt;", ">").replace("&nbsp;", " ").replace("&amp;", "&"))
        .unwrap_or_else(|| panic!("the checker wrote nothing: {}", describe(&output)));
    let result: Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("checker output {json:?}: {e}; {}", describe(&output)));
    // Chromium logs each console message of a page as `…:CONSOLE…] "text", source: URL (line)`.
    let console = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.contains(":CONSOLE") && line.contains("index.html"))
        .map(str::to_owned)
        .collect();
    Seen { result, console }
}

fn page_url(dir: &Path, name: &str) -> String {
    format!("file://{}", dir.join(name).display())
}

/// Runs the browser headless on `url` with `flags`, for at most two minutes. Its output
/// goes to files, not pipes, so a chatty browser can never block on a full pipe.
fn browse(browser: &Path, url: &str, flags: &[String]) -> std::process::Output {
    let scratch = tempfile::tempdir().unwrap();
    let (stdout, stderr) = (scratch.path().join("stdout"), scratch.path().join("stderr"));
    // No sandbox: CI runs as root, where Chromium's sandbox refuses to start; shared memory
    // in a temporary file: containers often have a tiny /dev/shm.
    let mut child = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .args(["--hide-scrollbars", "--mute-audio"])
        .arg(format!("--user-data-dir={}", scratch.path().join("profile").display()))
        .args(flags)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("the browser starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::process::Output { status, stdout: std::fs::read(stdout).unwrap(), stderr: std::fs::read(stderr).unwrap() }
}

/// Clicks every link of the page, each in a fresh frame, and reports whether any click ran
/// script (a hostile file name sets the checker's title) and how many links it clicked.
const CLICKER: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>clean</title></head><body>
<pre id="result">pending</pre>
<script>
const load = () => new Promise(resolve => {
  const frame = document.createElement('iframe');
  frame.addEventListener('load', () => resolve(frame), {once: true});
  frame.src = 'artifacts/index.html';
  document.body.appendChild(frame);
});
const pause = ms => new Promise(resolve => setTimeout(resolve, ms));
(async () => {
  const first = await load();
  const count = first.contentDocument.querySelectorAll('a[href]').length;
  const hrefs = [...first.contentDocument.querySelectorAll('a[href]')].map(a => a.getAttribute('href'));
  for (let i = 0; i < count; i++) {
    const frame = await load();
    frame.contentDocument.querySelectorAll('a[href]')[i].click();
    await pause(200);
  }
  document.getElementById('result').textContent = JSON.stringify({title: document.title, count, hrefs});
})();
</script></body></html>"#;

#[test]
fn hostile_file_names_run_no_script_when_their_links_are_clicked() {
    let test = "hostile_file_names_run_no_script_when_their_links_are_clicked";
    let Some(browser) = test_support::browser(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    std::fs::create_dir(&artifacts).unwrap();
    // Each name, were it pasted into the page as it is, would set the checker's title.
    let names = [
        "javascript:parent.parent.document.title='PWNED1'.mid",
        "x\" onclick=\"parent.parent.document.title='PWNED2'.mid",
        "<img src=x onerror=parent.parent.document.title='PWNED3'>.mid",
    ];
    for name in names {
        std::fs::write(artifacts.join(name), b"MThd").unwrap();
        std::fs::write(artifacts.join(format!("{name}.report.json")), r#"{"notes": 3, "seconds": 1.0}"#).unwrap();
    }
    run_stages(dir.path(), &[("report", &["--artifacts", "artifacts"])]);
    std::fs::write(dir.path().join("click.html"), CLICKER).unwrap();
    let output = browse(
        &browser,
        &page_url(dir.path(), "click.html"),
        &["--allow-file-access-from-files".into(), "--virtual-time-budget=30000".into(), "--dump-dom".into()],
    );
    let dom = String::from_utf8_lossy(&output.stdout);
    let json = dom
        .split_once("<pre id=\"result\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(json, _)| json.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
        .unwrap_or_else(|| panic!("the clicker wrote nothing: {}", describe(&output)));
    let result: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json:?}: {e}"));
    assert!(result["count"].as_u64() >= Some(names.len() as u64), "a link for each piece: {result}");
    assert_eq!(result["title"], "clean", "a click ran script from a file name: {result}");
}
