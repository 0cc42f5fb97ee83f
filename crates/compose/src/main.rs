use clap::Parser;
use std::path::PathBuf;

/// Stage 4 of the pipeline: generates new music with the trained model (model.bin),
/// starting from a random window of a training piece of the data set (dataset.bin), the
/// opening of a MIDI file (--primer), or the model alone (no data set: e.g.
/// `compose --input models/piano.bin`), and writes it as a standard MIDI file for piano.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    config: stage_cli::ConfigArgs,
    #[command(flatten)]
    digest: stage_cli::DigestFlag,
    /// The model artifact written by `train`.
    #[arg(long, default_value = "artifacts/model.bin", value_name = "FILE")]
    input: PathBuf,
    /// The data set artifact the primer window is drawn from [default: artifacts/dataset.bin
    /// if it exists; else the piece starts from the model alone].
    #[arg(long, value_name = "FILE")]
    dataset: Option<PathBuf>,
    /// Start from the model alone, even where artifacts/dataset.bin exists (`beats` and
    /// `performance` models: a first bar, or a moderate loudness; `names` models have no
    /// such start).
    #[arg(long, conflicts_with_all = ["dataset", "primer"])]
    no_dataset: bool,
    /// Start from the opening of this MIDI file (its first `compose.primer_seconds`)
    /// instead of a random window of the data set.
    #[arg(long, value_name = "FILE.mid")]
    primer: Option<PathBuf>,
    /// Override `compose.outputs`: how many pieces to write.
    #[arg(long)]
    outputs: Option<usize>,
    /// Override `compose.seconds`: length of music in seconds (0 = use tokens); a `beats`
    /// piece ends at the phrase end nearest it (`compose.ending`).
    #[arg(long)]
    seconds: Option<f64>,
    /// Override `compose.top_k`.
    #[arg(long)]
    top_k: Option<usize>,
    /// Override `compose.top_p`.
    #[arg(long)]
    top_p: Option<f64>,
    /// The MIDI file to write.
    #[arg(long, default_value = "artifacts/generated_music.mid", value_name = "FILE")]
    output: PathBuf,
    /// Override `compose.temperature`.
    #[arg(long)]
    temperature: Option<f64>,
    /// Override `compose.tokens`: elements to generate.
    #[arg(long)]
    tokens: Option<usize>,
    /// Override the global `seed` for this run only (a different piece from the same model).
    #[arg(long)]
    seed: Option<u64>,
    /// Also render the music to a WAV file beside the MIDI file, with the SoundFont of
    /// `compose.soundfont` (or one installed in the usual places).
    #[arg(long)]
    wav: bool,
}

fn main() -> std::process::ExitCode {
    stage_cli::init_logging();
    let args = Args::parse();
    let flags = [
        stage_cli::flag_override("compose.temperature", args.temperature),
        stage_cli::flag_override("compose.tokens", args.tokens),
        stage_cli::flag_override("seed", args.seed),
        stage_cli::flag_override("compose.outputs", args.outputs),
        stage_cli::flag_override("compose.seconds", args.seconds),
        stage_cli::flag_override("compose.top_k", args.top_k),
        stage_cli::flag_override("compose.top_p", args.top_p),
    ];
    stage_cli::exit_with((|| -> Result<(), Box<dyn std::error::Error>> {
        let config = args.config.load(flags.into_iter().flatten().collect())?;
        if args.digest.print_if_asked(&config, config::Section::Compose) {
            return Ok(());
        }
        lstm::set_cpu_threads(config.runtime.threads);
        let default_dataset = PathBuf::from("artifacts/dataset.bin");
        let start = match (&args.primer, &args.dataset) {
            (Some(primer), _) => compose::Start::Primer(primer),
            (None, Some(dataset)) => compose::Start::Dataset(dataset),
            (None, None) if default_dataset.exists() && !args.no_dataset => compose::Start::Dataset(&default_dataset),
            (None, None) => {
                if !args.no_dataset {
                    tracing::info!("compose: no data set given and none at {}", default_dataset.display());
                }
                tracing::info!("compose: starting from the model alone");
                compose::Start::Opening
            }
        };
        let written = compose::run(&config, &args.input, start, &args.output)?;
        if args.wav {
            compose::audio::render_beside(&written, &config.compose.soundfont)?;
        }
        Ok(())
    })())
}
