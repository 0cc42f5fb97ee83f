use clap::Parser;
use std::io::Write;
use std::path::PathBuf;

/// Prints what pipeline artifacts are and what made them: kind, format version, producing
/// stage, the digests of the config section and of every input, and a summary. Exits with
/// a failure when a file is not an artifact or its contents cannot be read (damage, another
/// format version), after printing what it could.
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
            Ok(description) => {
                if !description.payload_readable {
                    status = std::process::ExitCode::FAILURE;
                }
                // A closed pipe (`inspect … | head`) ends the output quietly.
                if write!(stdout, "{}{}", if i > 0 { "\n" } else { "" }, description.text).is_err() {
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
