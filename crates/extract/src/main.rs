use clap::Parser;
use std::path::PathBuf;

/// Stage 1 of the pipeline: reads every .mid/.midi file under a folder (recursively) and
/// writes their notes, with tempo applied, to a versioned artifact (notes.bin).
///
/// Files that cannot be used are skipped with a one-line reason and counted in the summary.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    config: stage_cli::ConfigArgs,
    #[command(flatten)]
    digest: stage_cli::DigestFlag,
    /// Folder of MIDI files [default: `extract.input` in the config].
    #[arg(long, value_name = "DIR")]
    input: Option<PathBuf>,
    /// Print the folder this run would read (`--input`, else `extract.input`) and exit:
    /// how `make` learns the default folder without parsing `pipeline.toml` itself.
    #[arg(long)]
    print_input: bool,
    /// Print the MIDI files this run would read, one a line with its content's digest, and
    /// exit: `make` compares the list with the last run's, so a file added, removed or
    /// changed reruns extract (by extract's own rule for what a MIDI file is), and a file
    /// only touched does not.
    #[arg(long)]
    print_inputs: bool,
    /// The notes artifact to write.
    #[arg(long, default_value = "artifacts/notes.bin", value_name = "FILE")]
    output: PathBuf,
}

fn main() -> std::process::ExitCode {
    stage_cli::init_logging();
    let args = Args::parse();
    stage_cli::exit_with((|| -> Result<(), Box<dyn std::error::Error>> {
        let mut config = args.config.load(Vec::new())?;
        if let Some(input) = args.input {
            config.extract.input = input;
        }
        if args.print_input {
            println!("{}", config.extract.input.display());
            return Ok(());
        }
        if args.print_inputs {
            print!("{}", extract::input_listing(&config.extract.input, config.extract.max_file_bytes)?);
            return Ok(());
        }
        if args.digest.print_if_asked(&config, config::Section::Extract) {
            return Ok(());
        }
        extract::run(&config, &config.extract.input, &args.output)?;
        Ok(())
    })())
}
