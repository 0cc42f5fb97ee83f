use clap::Parser;
use std::path::PathBuf;

/// Stage 5: measures the model on the held-out pieces (cross-entropy, perplexity, accuracy,
/// per note and per second), compares the generated music with the held-out pieces
/// (pitch classes, rhythm, dynamics, polyphony, repetition), and reports how much of it
/// was copied from the training set. Writes evaluation.json and evaluation.md.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    config: stage_cli::ConfigArgs,
    #[command(flatten)]
    digest: stage_cli::DigestFlag,
    /// The data set artifact written by `encode`.
    #[arg(long, default_value = "artifacts/dataset.bin", value_name = "FILE")]
    dataset: PathBuf,
    /// The model artifact written by `train`.
    #[arg(long, default_value = "artifacts/model.bin", value_name = "FILE")]
    model: PathBuf,
    /// The notes artifact written by `extract`.
    #[arg(long, default_value = "artifacts/notes.bin", value_name = "FILE")]
    notes: PathBuf,
    /// The report to write; evaluation.md and the pictures go beside it.
    #[arg(long, default_value = "artifacts/evaluation.json", value_name = "FILE")]
    output: PathBuf,
    /// Generated MIDI files to evaluate.
    generated: Vec<PathBuf>,
}

fn main() -> std::process::ExitCode {
    stage_cli::init_logging();
    let args = Args::parse();
    stage_cli::exit_with((|| -> Result<(), Box<dyn std::error::Error>> {
        let config = args.config.load(Vec::new())?;
        if args.digest.print_if_asked(&config, config::Section::Evaluate) {
            return Ok(());
        }
        lstm::set_cpu_threads(config.runtime.threads);
        let inputs = evaluate::Inputs {
            dataset: &args.dataset,
            model: &args.model,
            notes: &args.notes,
            generated: &args.generated,
        };
        evaluate::run(&config, inputs, &args.output)?;
        Ok(())
    })())
}
