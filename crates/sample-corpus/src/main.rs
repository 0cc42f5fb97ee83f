use clap::Parser;
use std::path::PathBuf;

/// The largest score file read: the bundled ones are a few kilobytes.
const MAX_SCORE_BYTES: u64 = 1 << 20;

/// Renders the sample corpus: every `<name>.score` in the scores folder becomes
/// `<name>.mid` in the output folder. Run by `make corpus`; the results are committed.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Folder of `.score` files.
    #[arg(long, default_value = "data/scores")]
    scores: PathBuf,
    /// Folder the MIDI files are written to.
    #[arg(long, default_value = "data")]
    output: PathBuf,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let run = || -> Result<(), String> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&args.scores)
            .map_err(|e| format!("{}: {e}", args.scores.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|e| e == "score"))
            .collect();
        paths.sort();
        let mut total = 0;
        for path in paths {
            let bytes =
                artifacts::read_capped(&path, MAX_SCORE_BYTES).map_err(|e| format!("{}: {e}", path.display()))?;
            let text = String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
            let score = sample_corpus::parse_score(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let bytes = music::midi_out::to_bytes(&score.to_music(), None);
            let name = path.file_stem().expect("a .score file has a stem");
            let target = args.output.join(name).with_extension("mid");
            artifacts::write_if_changed(&target, &bytes).map_err(|e| e.to_string())?;
            println!("{:>5} notes  {}  ({}, {})", score.notes.len(), target.display(), score.title, score.composer);
            total += score.notes.len();
        }
        println!("{total:>5} notes in all");
        Ok(())
    };
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
