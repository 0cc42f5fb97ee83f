use clap::Parser;
use std::path::PathBuf;

/// Stage 3 of the pipeline: trains the LSTM (embedding → stacked LSTM → linear layer) to
/// predict the next token of the data set (dataset.bin), with cross-entropy loss and Adam,
/// and writes the model artifact (model.bin) with its training history.
///
/// With `train.init = "models/piano.bin"` training starts from that model's weights
/// (fine-tuning) instead of random ones.
///
/// Progress is saved to <output>.checkpoint every `train.checkpoint_steps` steps and
/// `train.checkpoint_seconds` seconds, on Ctrl-C or SIGTERM (after the current step), and
/// when `train.max_minutes` runs out; running train again with the same data and the same
/// settings that shape the weights resumes from it (more epochs or minutes continue it).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    config: stage_cli::ConfigArgs,
    #[command(flatten)]
    digest: stage_cli::DigestFlag,
    /// The data set artifact written by `encode`.
    #[arg(long, default_value = "artifacts/dataset.bin", value_name = "FILE")]
    input: PathBuf,
    /// The model artifact to write.
    #[arg(long, default_value = "artifacts/model.bin", value_name = "FILE")]
    output: PathBuf,
    /// Override `train.epochs`.
    #[arg(long)]
    epochs: Option<usize>,
    /// Override `runtime.threads` (0 = one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Override `train.max_minutes`: stop after the step that crosses this many minutes.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Leave Adam's moments out of the written model (a third of the size): for a model
    /// that others start from with `train.init`, which begins with a fresh optimizer.
    #[arg(long)]
    weights_only: bool,
}

fn main() -> std::process::ExitCode {
    stage_cli::init_logging();
    let args = Args::parse();
    let flags = [
        stage_cli::flag_override("train.epochs", args.epochs),
        stage_cli::flag_override("runtime.threads", args.threads),
        stage_cli::flag_override("train.max_minutes", args.max_minutes),
    ];
    stage_cli::exit_with((|| -> Result<(), Box<dyn std::error::Error>> {
        let config = args.config.load(flags.into_iter().flatten().collect())?;
        if args.digest.print_if_asked(&config, config::Section::Train) {
            return Ok(());
        }
        lstm::set_cpu_threads(config.runtime.threads);
        lstm::keep_freed_memory();
        let interrupt = train::interrupt_on_signals()?;
        train::run(&config, &args.input, &args.output, args.weights_only, &interrupt)?;
        Ok(())
    })())
}
