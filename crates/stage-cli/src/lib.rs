//! What the four stage binaries share, so each `main.rs` stays a few lines long.
//!
//! - [`ConfigArgs`]: the `--config` and `--set section.key=value` flags every stage takes,
//!   flattened into each binary's clap struct, and [`ConfigArgs::load`].
//! - [`init_logging`]: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
//! - [`Progress`]: a progress bar with rate and ETA on a terminal, periodic log lines elsewhere.
//! - [`exit_with`]: turns a stage's `Result` into a one-line `error: …` and exit code 1.
//!
//! Key design decision: a redrawn progress bar only when stderr is a terminal; anywhere else
//! (CI logs, `make … 2> log`, batch jobs) progress is ordinary `tracing` lines at most every
//! few seconds, since a bar's carriage returns turn a log file into noise.

use config::{ConfigError, PipelineConfig};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The config file a stage reads when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "pipeline.toml";

/// The config flags every stage takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// The pipeline config file [default: pipeline.toml in the current folder if there is
    /// one, else every setting at its default].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one config value for this run, e.g. `--set train.epochs=5`
    /// (repeatable; the value is TOML or a bare string).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub overrides: Vec<String>,
}

impl ConfigArgs {
    /// Loads the config with the `--set` overrides, then `extra` (a stage's own flags,
    /// already written as `section.key=value`), which win over `--set`.
    ///
    /// Without `--config` and without a `pipeline.toml` in the current folder (a binary run
    /// outside the project), every setting has its default, and a log line says so.
    pub fn load(&self, extra: Vec<String>) -> Result<PipelineConfig, ConfigError> {
        let mut overrides = self.overrides.clone();
        overrides.extend(extra);
        let default = PathBuf::from(DEFAULT_CONFIG);
        match &self.config {
            Some(path) => PipelineConfig::load(path, &overrides),
            None if default.exists() => PipelineConfig::load(&default, &overrides),
            None => {
                tracing::info!("no {DEFAULT_CONFIG} here and no --config: every setting at its default");
                PipelineConfig::from_toml("", &default, &overrides)
            }
        }
    }
}

/// The flag by which `make` asks a stage whether its settings changed.
#[derive(clap::Args, Debug, Clone)]
pub struct DigestFlag {
    /// Print the digest of the settings this stage's output depends on (its section of the
    /// config, with `seed` and `[runtime]` where they matter) and exit without running.
    /// `make` compares it with the last run's to decide whether the stage is stale.
    #[arg(long)]
    pub print_config_digest: bool,
}

impl DigestFlag {
    /// With `--print-config-digest`: prints `section`'s digest of `config` and says so
    /// (`true`: the stage should stop here).
    pub fn print_if_asked(&self, config: &PipelineConfig, section: config::Section) -> bool {
        if self.print_config_digest {
            println!("{}", artifacts::hex(&config.section_digest(section)));
        }
        self.print_config_digest
    }
}

/// Turns an optional stage flag into an override, e.g. `("train.epochs", Some(5))`.
pub fn flag_override<T: std::fmt::Display>(key: &str, value: Option<T>) -> Option<String> {
    value.map(|v| format!("{key}={v}"))
}

/// Sends `tracing` output to stderr; `RUST_LOG` filters it (default: `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Reports a stage's failure on one line and sets the exit code.
pub fn exit_with<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Shows how far a loop has come, with its rate and ETA: a progress bar when stderr is a
/// terminal, else a log line at most every few seconds (CI, `make` output piped to a file).
pub struct Progress {
    what: &'static str,
    unit: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last_report: Instant,
    interval: Duration,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A progress reporter for `total` `unit`s of `what` (e.g. "train", "batches").
    pub fn new(what: &'static str, unit: &'static str, total: u64) -> Self {
        let now = Instant::now();
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = indicatif::ProgressStyle::with_template(&format!(
                "{what:>8} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}}){{msg}}"
            ))
            .expect("the template is valid")
            .progress_chars("=> ");
            indicatif::ProgressBar::new(total).with_style(style)
        });
        Progress { what, unit, total, done: 0, started: now, last_report: now, interval: Duration::from_secs(5), bar }
    }

    /// Records `n` more units done. `detail` is shown after the counts (e.g. the running
    /// loss); it is only computed when something is shown.
    pub fn advance(&mut self, n: u64, detail: impl FnOnce() -> String) {
        self.done += n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
            if bar.is_hidden() || self.last_report.elapsed() >= Duration::from_millis(200) {
                bar.set_message(detail());
                self.last_report = Instant::now();
            }
            if self.done >= self.total {
                bar.finish_and_clear();
            }
            return;
        }
        if self.last_report.elapsed() < self.interval || self.done >= self.total {
            return;
        }
        self.last_report = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = self.done as f64 / elapsed.max(1e-9);
        let eta = (self.total - self.done) as f64 / rate.max(1e-9);
        tracing::info!(
            "{}: {}/{} {} ({:.0} {}/s, ETA {:.0} s){}",
            self.what,
            self.done,
            self.total,
            self.unit,
            rate,
            self.unit,
            eta,
            detail()
        );
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// One log line saying where an artifact is and whether this run changed it.
pub fn log_outcome(output: &std::path::Path, outcome: artifacts::WriteOutcome) {
    match outcome {
        artifacts::WriteOutcome::Written => tracing::info!("wrote {}", output.display()),
        artifacts::WriteOutcome::Unchanged => {
            tracing::info!("{} is unchanged (identical bytes): later stages stay fresh", output.display())
        }
    }
}
