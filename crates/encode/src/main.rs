use clap::Parser;
use std::path::PathBuf;

/// Stage 2 of the pipeline: turns the notes of every piece (notes.bin) into token
/// sequences, builds the dictionary, splits the pieces into training and validation sets,
/// and writes the data set artifact (dataset.bin).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    config: stage_cli::ConfigArgs,
    #[command(flatten)]
    digest: stage_cli::DigestFlag,
    /// The notes artifact written by `extract`.
    #[arg(long, default_value = "artifacts/notes.bin", value_name = "FILE")]
    input: PathBuf,
    /// The data set artifact to write.
    #[arg(long, default_value = "artifacts/dataset.bin", value_name = "FILE")]
    output: PathBuf,
    /// Override `encode.seq_len`: tokens per training window.
    #[arg(long)]
    seq_len: Option<usize>,
}

fn main() -> std::process::ExitCode {
    stage_cli::init_logging();
    let args = Args::parse();
    let flags = stage_cli::flag_override("encode.seq_len", args.seq_len).into_iter().collect();
    stage_cli::exit_with((|| -> Result<(), Box<dyn std::error::Error>> {
        let config = args.config.load(flags)?;
        if args.digest.print_if_asked(&config, config::Section::Encode) {
            return Ok(());
        }
        encode::run(&config, &args.input, &args.output)?;
        Ok(())
    })())
}
