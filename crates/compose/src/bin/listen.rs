use clap::Parser;
use std::path::PathBuf;

/// Renders MIDI files to WAV with a General MIDI SoundFont (pure Rust, nothing else to
/// install): `music.mid` becomes `music.wav` beside it.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    #[command(flatten)]
    config: stage_cli::ConfigArgs,
    /// The SoundFont (.sf2) to use [default: `compose.soundfont`, else one installed in the usual places].
    #[arg(long, value_name = "FILE")]
    soundfont: Option<PathBuf>,
    /// MIDI files to render.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn main() -> std::process::ExitCode {
    stage_cli::init_logging();
    let args = Args::parse();
    stage_cli::exit_with((|| -> Result<(), Box<dyn std::error::Error>> {
        let config = args.config.load(Vec::new())?;
        let configured = args.soundfont.map_or(config.compose.soundfont.clone(), |p| p.display().to_string());
        compose::audio::render_beside(&args.files, &configured)?;
        Ok(())
    })())
}
