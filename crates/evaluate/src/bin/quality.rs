use clap::Parser;
use std::path::{Path, PathBuf};

/// Compares generated MIDI files with real pieces they were not trained on: the seven
/// histogram overlaps (pitch class, pitch, interval, inter-onset, duration, velocity,
/// polyphony), repetition, pulse, notes per second, and the longest run copied from the
/// training pieces in any transposition, and how the sets use the sustain pedal. Writes
/// quality.json and quality.md.
///
/// Every file is read as extract reads it (with `[extract]` of the config: sustain applied).
/// A set is a folder searched recursively, or with its --…-list a file of paths in it.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    config: stage_cli::ConfigArgs,
    /// The real pieces to compare with (e.g. ../shared/data/piano/piano-midi-de).
    #[arg(long, value_name = "FOLDER")]
    reference: PathBuf,
    /// Only these files of --reference, one path a line (e.g. ../shared/splits/piano-midi-de.valid.txt).
    #[arg(long, value_name = "FILE")]
    reference_list: Option<PathBuf>,
    /// The pieces the model was trained on, for the longest copied run.
    #[arg(long, value_name = "FOLDER")]
    training: Option<PathBuf>,
    /// Only these files of --training, one path a line.
    #[arg(long, value_name = "FILE")]
    training_list: Option<PathBuf>,
    /// Seconds of each reference piece whose repetition and pulse are measured, to compare
    /// like with like (the length of the generated pieces).
    #[arg(long, default_value_t = 60.0, value_parser = positive_seconds)]
    excerpt_seconds: f64,
    /// Sets of real excerpts to measure beside the generated set (0 = none): each as many
    /// random excerpts of --training pieces as there are generated files, excerpt-seconds
    /// long, drawn with the config's seed. They show what real music of the corpus scores
    /// at this sample size.
    #[arg(long, default_value_t = 20)]
    real_draws: usize,
    /// The report to write; quality.md goes beside it.
    #[arg(long, default_value = "artifacts/quality.json", value_name = "FILE")]
    output: PathBuf,
    /// Generated MIDI files.
    #[arg(required = true)]
    generated: Vec<PathBuf>,
}

type Pieces = Vec<evaluate::quality::Piece>;

/// The largest list of files read: a million paths.
const MAX_LIST_BYTES: u64 = 64 << 20;

/// A finite number of seconds above zero (not NaN, not infinite, not a denormal).
fn positive_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if seconds.is_normal() && seconds > 0.0 && seconds <= 1e6 {
        Ok(seconds)
    } else {
        Err(format!("must be a number of seconds in (0, 1000000], got {text}"))
    }
}

fn read_set(folder: &Path, list: Option<&Path>, limits: &config::ExtractConfig) -> Result<Pieces, String> {
    let files = match list {
        Some(list) => artifacts::read_capped(list, MAX_LIST_BYTES)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|e| format!("{}: {e}", list.display()))?
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| folder.join(line.trim()))
            .collect(),
        None => music::files::find_midi_files(folder).map_err(|e| e.to_string())?,
    };
    read_files(&files, limits)
}

fn read_files(files: &[PathBuf], limits: &config::ExtractConfig) -> Result<Pieces, String> {
    files
        .iter()
        .map(|path| {
            let heard = evaluate::read_midi_file(path, limits)?;
            let bar_starts = heard.written.bars().iter().map(|bar| bar.start_quarters).collect();
            Ok(evaluate::quality::Piece {
                name: path.display().to_string(),
                notes: heard.notes,
                pedal: heard.pedal,
                bar_starts,
            })
        })
        .collect()
}

fn main() -> std::process::ExitCode {
    stage_cli::init_logging();
    let args = Args::parse();
    stage_cli::exit_with((|| -> Result<(), Box<dyn std::error::Error>> {
        let config = args.config.load(Vec::new())?;
        let generated = read_files(&args.generated, &config.extract)?;
        let reference = read_set(&args.reference, args.reference_list.as_deref(), &config.extract)?;
        let training = match &args.training {
            Some(folder) => read_set(folder, args.training_list.as_deref(), &config.extract)?,
            None => Vec::new(),
        };
        // Nothing read is overwritten: the generated pieces, the lists, every real piece.
        let mut read: Vec<&Path> = args.generated.iter().map(PathBuf::as_path).collect();
        read.extend(args.reference_list.as_deref().into_iter().chain(args.training_list.as_deref()));
        read.extend(reference.iter().chain(&training).map(|piece| Path::new(&piece.name)));
        let markdown_path = args.output.with_extension("md");
        for output in [&args.output, &markdown_path] {
            artifacts::refuse_input_as_output(output, &read)?;
        }
        let mut rng = seeded_rng::SeededRng::new(config.seed, "real excerpts");
        let real = (args.real_draws, &mut rng);
        let report = evaluate::quality::compare(&generated, &reference, &training, args.excerpt_seconds, real);
        let markdown = evaluate::quality::markdown(&report);
        let json = serde_json::to_string_pretty(&report)? + "\n";
        artifacts::write_if_changed(&args.output, json.as_bytes())?;
        artifacts::write_if_changed(&markdown_path, markdown.as_bytes())?;
        print!("{markdown}");
        Ok(())
    })())
}
