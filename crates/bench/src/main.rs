use bench::{BenchReport, GenerationFigures, TrainingFigures};
use clap::Parser;
use std::path::PathBuf;

/// Measures how fast every stage runs on this machine: extract (notes/s, files/s over a
/// folder of MIDI files), encode (tokens/s), training (targets/s of this project's fused
/// LSTM and of candle-nn's LSTM at the seed config, H = 256 and 512, against the roofline
/// of the measured matmul rate) and generation (tokens/s, one stream and 16 at H = 512).
/// Prints a table and writes the figures as JSON. Medians after a warm-up; a few minutes.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// MIDI files to extract and encode (`extract` part).
    #[arg(long, default_value = "../shared/data/piano", value_name = "FOLDER")]
    corpus: PathBuf,
    /// Where to write the figures.
    #[arg(long, default_value = "artifacts/bench.json", value_name = "FILE")]
    output: PathBuf,
    /// Threads for the matrix products and extraction (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Timed training steps per configuration (the median is reported).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Skip candle-nn's LSTM (its H = 512 steps take seconds each).
    #[arg(long)]
    no_candle_nn: bool,
    /// Run only these parts (repeatable); all by default.
    #[arg(long, value_enum)]
    only: Vec<Part>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Part {
    /// Extract (and, for encode, the notes it needs).
    Extract,
    Encode,
    Training,
    Generation,
}

impl Args {
    fn runs(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

fn main() -> std::process::ExitCode {
    stage_cli::init_logging();
    let args = Args::parse();
    lstm::set_cpu_threads(args.threads);
    stage_cli::exit_with(run(&args))
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = config::PipelineConfig::default();
    let threads = candle_core::utils::get_num_threads();
    tracing::info!("bench: {threads} threads; extracting {}", args.corpus.display());
    let wants_notes = args.runs(Part::Extract) || args.runs(Part::Encode);
    let extracted = if wants_notes { bench::extract(&args.corpus, &config.extract) } else { None };
    if extracted.is_none() && wants_notes {
        tracing::warn!("no MIDI files under {}: extract and encode skipped", args.corpus.display());
    }
    let encode =
        extracted.as_ref().filter(|_| args.runs(Part::Encode)).and_then(|(_, notes)| bench::encode(&config, notes));
    let matmul_gflops = if args.runs(Part::Training) { bench::matmul_rate()? } else { 0.0 };
    let batch = 64;
    let mut training = Vec::new();
    for hidden in [256, 512].into_iter().filter(|_| args.runs(Part::Training)) {
        let hp = bench::seed_config(hidden);
        let targets = (batch * hp.seq_len) as f64;
        let mut trainers = vec!["fused"];
        if !args.no_candle_nn {
            trainers.push("candle-nn");
        }
        for trainer in trainers {
            tracing::info!("bench: training with {trainer} at H = {hidden}");
            let rate_before = bench::matmul_rate()?;
            let seconds = match trainer {
                "fused" => bench::train_fused(&hp, batch, args.steps)?,
                _ => bench::train_candle_nn(&hp, batch, args.steps.min(3))?,
            };
            // The higher of the rates around the run: a slow moment must not flatter the ratio.
            let rate = rate_before.max(bench::matmul_rate()?);
            training.push(TrainingFigures {
                hidden,
                trainer: trainer.to_string(),
                seconds_per_step: seconds,
                targets_per_second: targets / seconds,
                matmul_gflops: rate,
                roofline_targets_per_second: rate * 1e9 / (6.0 * bench::matmul_weights(&hp) as f64),
            });
        }
    }
    let mut generation = Vec::new();
    for streams in [1, 16].into_iter().filter(|_| args.runs(Part::Generation)) {
        let hp = bench::seed_config(512);
        let tokens_per_second = bench::generate(&hp, streams, 400)?;
        generation.push(GenerationFigures { hidden: 512, streams, tokens_per_second });
    }
    let report = BenchReport {
        threads,
        extract: extracted.map(|(figures, _)| figures),
        encode,
        matmul_gflops,
        training,
        generation,
    };
    print!("{}", bench::table(&report));
    if let Some(parent) = args.output.parent() {
        std::fs::create_dir_all(parent)?;
    }
    artifacts::write_if_changed(&args.output, serde_json::to_string_pretty(&report)?.as_bytes())?;
    tracing::info!("bench: figures written to {}", args.output.display());
    Ok(())
}
