use bench::{
    BaseModelFigures, BenchReport, EncodeFigures, ExtractFigures, GenerationFigures, PrecisionSteps, Shapes,
    TrainingFigures,
};
use clap::Parser;
use lstm::Precision;
use std::path::PathBuf;

/// Measures how fast every stage runs on this machine: extract (notes/s over a folder of
/// MIDI files: parsing in memory, and the extract binary with the page cache warm and
/// cold), encode (tokens/s, the encode binary), training (targets/s of this project's fused
/// LSTM and of candle-nn's LSTM at the seed config, H = 256 and 512, against the roofline
/// of the measured matmul rate; and of the fused LSTM at the base model's own shapes, with
/// its dropout) and generation (tokens/s, one stream and 16 at H = 512).
/// Every figure is min / median / max of at least 10 samples after a warm-up. Prints a
/// table and writes the figures as JSON; a few minutes. The extract and encode binaries
/// must sit beside this one (`cargo build --release --bins`; `make bench` builds them).
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
    /// Timed training steps per configuration (min, median and max are reported).
    #[arg(long, default_value_t = bench::SAMPLES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    steps: usize,
    /// The model whose shapes (and dropout) training is also timed at (`training` part).
    #[arg(long, default_value = "models/piano-beats.bin", value_name = "FILE")]
    base_model: PathBuf,
    /// Skip candle-nn's LSTM (its H = 512 steps take seconds each).
    #[arg(long)]
    no_candle_nn: bool,
    /// Run only these parts (repeatable); all by default.
    #[arg(long, value_enum)]
    only: Vec<Part>,
    /// Measure nothing; serve training steps of the seed config on request instead: read
    /// lines `HIDDEN f32|bf16` on standard input and answer each with one step's seconds
    /// (`make bench-peers` interleaves them with PyTorch's steps).
    #[arg(long, conflicts_with = "only")]
    steps_on_request: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Part {
    /// Extract: parsing alone, and the stage binary (warm and cold page cache).
    Extract,
    /// Encode: the stage binary on extract's output (so extract runs too).
    Encode,
    Training,
    Generation,
}

impl Args {
    fn runs(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

/// Sequences per training step.
const BATCH: usize = 64;
/// Tokens generated per stream in each generation sample.
const GENERATED_TOKENS: usize = 400;

fn main() -> std::process::ExitCode {
    stage_cli::init_logging();
    let args = Args::parse();
    lstm::set_cpu_threads(args.threads);
    // The allocator policy the train stage runs under, so the figures are its figures.
    lstm::keep_freed_memory();
    stage_cli::exit_with(run(&args))
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.steps_on_request {
        return Ok(bench::serve_training_steps(std::io::stdin().lock(), std::io::stdout().lock(), BATCH)?);
    }
    let config = config::PipelineConfig::default();
    let threads = candle_core::utils::get_num_threads();
    let (extract, encode) =
        if args.runs(Part::Extract) || args.runs(Part::Encode) { stages(args, &config) } else { (None, None) };
    let seed = bench::seed_config(512);
    let shapes = Shapes {
        vocab_size: seed.vocab_size,
        embedding: seed.embedding,
        layers: seed.layers,
        batch: BATCH,
        seq_len: seed.seq_len,
        generated_tokens: GENERATED_TOKENS,
    };
    let matmul_gflops = if args.runs(Part::Training) { bench::matmul_rate()? } else { 0.0 };
    let matmul_bf16_gflops = if args.runs(Part::Training) { bench::matmul_rate_bf16() } else { None };
    let mut training = Vec::new();
    for hidden in [256, 512].into_iter().filter(|_| args.runs(Part::Training)) {
        let hp = bench::seed_config(hidden);
        let mut trainers = vec!["fused"];
        if products::bf16::available() {
            trainers.push("fused bf16");
        }
        if !args.no_candle_nn {
            trainers.push("candle-nn");
        }
        for trainer in trainers {
            tracing::info!("bench: training with {trainer} at H = {hidden}");
            let rate_before = bench::matmul_rate()?;
            let step = match trainer {
                "fused" => bench::train_fused(&hp, BATCH, args.steps, Precision::F32)?,
                "fused bf16" => bench::train_fused(&hp, BATCH, args.steps, Precision::Bf16)?,
                _ => bench::train_candle_nn(&hp, BATCH, args.steps)?,
            };
            // The higher of the rates around the run: a slow moment must not flatter the ratio.
            let rate = rate_before.max(bench::matmul_rate()?);
            training.push(TrainingFigures {
                hidden,
                trainer: trainer.to_string(),
                step,
                matmul_gflops: rate,
                roofline_targets_per_second: rate * 1e9 / (6.0 * bench::matmul_weights(&hp) as f64),
            });
        }
    }
    let precisions =
        if products::bf16::available() { vec![Precision::F32, Precision::Bf16] } else { vec![Precision::F32] };
    let base_model = if args.runs(Part::Training) { base_model(args, &precisions)? } else { None };
    let mut generation = Vec::new();
    for streams in [1, 16].into_iter().filter(|_| args.runs(Part::Generation)) {
        for &precision in &precisions {
            tracing::info!("bench: generating {streams} stream(s) at H = 512 in {precision:?}");
            let hp = bench::seed_config(512);
            let run = bench::generate(&hp, streams, GENERATED_TOKENS, precision)?;
            let weight_bytes_per_step = bench::generation_weight_bytes(&hp, precision);
            let read_gb_per_second = bench::read_bandwidth(weight_bytes_per_step);
            generation.push(GenerationFigures {
                hidden: 512,
                streams,
                precision: precision.pick("f32", "bf16").to_owned(),
                run,
                weight_bytes_per_step,
                read_gb_per_second,
                ceiling_tokens_per_second: read_gb_per_second * 1e9 / weight_bytes_per_step as f64 * streams as f64,
            });
        }
    }
    let cpu = bench::processor();
    let report = BenchReport {
        cpu,
        threads,
        shapes,
        extract,
        encode,
        matmul_gflops,
        matmul_bf16_gflops,
        training,
        base_model,
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

/// Training steps at the shapes of `--base-model`, in each precision; `None`, logged, where
/// the model cannot be read.
fn base_model(args: &Args, precisions: &[Precision]) -> Result<Option<BaseModelFigures>, Box<dyn std::error::Error>> {
    let hp = match artifacts::read::<artifacts::ModelArtifact>(&args.base_model) {
        Ok((_, model)) => model.hyperparameters,
        Err(why) => {
            tracing::warn!("bench: training at a base model's shapes not timed: {why}");
            return Ok(None);
        }
    };
    let mut steps = Vec::new();
    for &precision in precisions {
        tracing::info!("bench: training at the shapes of {} in {precision:?}", args.base_model.display());
        let step = bench::train_fused(&hp, BATCH, args.steps, precision)?;
        steps.push(PrecisionSteps { precision: precision.pick("f32", "bf16").to_owned(), step });
    }
    Ok(Some(BaseModelFigures {
        model: args.base_model.display().to_string(),
        hyperparameters: hp,
        batch: BATCH,
        steps,
    }))
}

/// Extract (parsing in memory, then the binary warm and cold) and the encode binary on
/// extract's output; what cannot be measured is logged and left out, never guessed.
fn stages(args: &Args, config: &config::PipelineConfig) -> (Option<ExtractFigures>, Option<EncodeFigures>) {
    tracing::info!("bench: extracting {}", args.corpus.display());
    let Some((files, mut extract)) = bench::parse_in_memory(&args.corpus, &config.extract) else {
        tracing::warn!("no MIDI files under {}: extract and encode skipped", args.corpus.display());
        return (None, None);
    };
    let work = std::env::temp_dir().join(format!("pianola-bench-{}", std::process::id()));
    let stages = match bench::Stages::beside_this_binary(work) {
        Ok(stages) => stages,
        Err(why) => {
            tracing::warn!("bench: stage binaries not timed: {why}");
            extract.missing.push(why);
            return (Some(extract), None);
        }
    };
    if let Err(why) = stages.extract(&args.corpus, &files, &mut extract) {
        tracing::warn!("bench: {why}");
        extract.missing.push(why);
        return (Some(extract), None);
    }
    let encode = if args.runs(Part::Encode) {
        tracing::info!("bench: encoding {} notes", extract.notes);
        stages.encode().map_err(|why| tracing::warn!("bench: {why}")).ok()
    } else {
        None
    };
    (Some(extract), encode)
}
