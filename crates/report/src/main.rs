use clap::Parser;
use std::path::PathBuf;

/// Writes `index.html` in the artifacts folder: one page that shows the whole run — the data
/// read, the encoding, the model and its training (with the curve), each artifact's kind,
/// version and digest, and every generated piece with its piano roll, statistics, a player
/// for its WAV (after `make listen`) and, after `make evaluate` or `make quality`, how it
/// compares with real pieces. It opens from `file://` with no network; `make` refreshes it.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// The folder the stages wrote to; the page goes there.
    #[arg(long, value_name = "FOLDER", default_value = "artifacts")]
    artifacts: PathBuf,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    stage_cli::init_logging();
    stage_cli::exit_with(report::write_page(&args.artifacts).map(drop))
}
