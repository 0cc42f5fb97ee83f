use clap::Parser;
use std::io::Write;
use std::path::PathBuf;

/// Prints what pipeline artifacts are and what made them: kind, format version, producing
/// stage, the digests of the config section and of every input, and a summary.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Artifact files (notes.bin, dataset.bin, model.bin, model.bin.checkpoint).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut status = std::process::ExitCode::SUCCESS;
    let mut stdout = std::io::stdout().lock();
    for (i, file) in args.files.iter().enumerate() {
        match inspect::describe(file) {
            Ok(text) => {
                // A closed pipe (`inspect … | head`) ends the output quietly.
                if write!(stdout, "{}{text}", if i > 0 { "\n" } else { "" }).is_err() {
                    return status;
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                status = std::process::ExitCode::FAILURE;
            }
        }
    }
    status
}
