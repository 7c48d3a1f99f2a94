//! The `fergpu` command line: parse flags, call the library, report errors.

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use fergpu::augment::Augment;
use fergpu::backend::Activation;
use fergpu::checkpoint::Checkpoint;
use fergpu::data::{csv, synth, Usage};
use fergpu::device::{run_on, DeviceChoice, Job};
use fergpu::run::{DataConfig, TrainConfig};
use fergpu::train::ClassWeight;
use std::path::PathBuf;

/// Facial-expression (FER2013) training and evaluation on any GPU through WGSL compute
/// shaders, with a CPU reference backend.
#[derive(Parser)]
#[command(name = "fergpu", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model and write a run folder (metrics, curves, confusion matrix, checkpoints).
    Train(TrainArgs),
    /// Evaluate a checkpoint: accuracy, loss, confusion matrix, per-class precision/recall/F1.
    Eval(EvalArgs),
    /// Write generated demo faces as a FER2013-format CSV.
    Synth(SynthArgs),
    /// List the GPU adapters wgpu finds.
    Adapters(AdaptersArgs),
    /// Print rows and per-class counts per split, and any bad rows.
    Info(InfoArgs),
    /// Write rows of a data file as PNG images named `<row>_<emotion>.png`.
    ExportImages(ExportArgs),
    /// Measure training/evaluation images/s and conv/dense GFLOP/s on a device.
    Bench(BenchArgs),
    /// Predict the emotions of the faces in photos and folders of photos.
    ///
    /// Faces are found with the SeetaFace detector, each cropped as FER2013 crops its faces,
    /// converted to grayscale, resized to 48×48 and classified; the box, the top emotion and
    /// all 7 probabilities are printed per face. Images of 48×48 to 64×64 pixels (and every
    /// image with --whole-image) are taken as already-cropped faces: their centred square is
    /// classified. A file that cannot be read is reported by name, the others are still
    /// predicted, and the exit status is 1.
    Predict(PredictArgs),
    /// K-fold cross-validation: one model per fold, mean ± std of accuracy and macro-F1.
    Cv(CvArgs),
    /// Train every configuration of a grid file, with a results table.
    Sweep(SweepArgs),
    /// Export a checkpoint as an ONNX model (opset 13; input `image` float [N, 1, 48, 48] in
    /// 0..1, output `logits` or, with --softmax, `probabilities` [N, 7]).
    Export(ExportModelArgs),
}

/// Where the data comes from.
#[derive(Args, Clone)]
struct DataArgs {
    /// FER2013 CSV (`icml_face_data.csv` or `fer2013.csv` layout; `.gz` is read too).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Train on N generated faces instead of a file.
    #[arg(long, value_name = "N", conflicts_with = "data")]
    synthetic: Option<usize>,
    /// Skip malformed rows (and report how many) instead of stopping at the first.
    #[arg(long)]
    skip_bad_rows: bool,
    /// Splits to train on (comma-separated Usage values).
    #[arg(long, default_value = "Training", value_delimiter = ',', value_parser = parse_usage)]
    train_split: Vec<Usage>,
    /// Splits to validate on each epoch.
    #[arg(long, default_value = "PrivateTest", value_delimiter = ',', value_parser = parse_usage)]
    val_split: Vec<Usage>,
    /// Splits to test on at the end.
    #[arg(long, default_value = "PublicTest", value_delimiter = ',', value_parser = parse_usage)]
    test_split: Vec<Usage>,
    /// Use only the first N rows of each split (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
}

impl DataArgs {
    fn config(&self) -> DataConfig {
        DataConfig {
            data: self.data.clone(),
            synthetic: self.synthetic,
            skip_bad_rows: self.skip_bad_rows,
            train_split: self.train_split.clone(),
            val_split: self.val_split.clone(),
            test_split: self.test_split.clone(),
            limit: self.limit,
        }
    }
}

/// Which device runs the work.
#[derive(Args, Clone)]
struct DeviceArgs {
    /// auto | discrete | integrated | software | cpu | <index> | <name substring>.
    #[arg(long, default_value = "auto")]
    adapter: String,
    /// Restrict wgpu to one API: vulkan | metal | dx12 | gl.
    #[arg(long)]
    gpu_backend: Option<String>,
    /// Threads of the CPU backend (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

impl DeviceArgs {
    fn choice(&self) -> DeviceChoice {
        DeviceChoice {
            adapter: self.adapter.clone(),
            gpu_backend: self.gpu_backend.clone(),
            threads: self.threads,
        }
    }
}

/// The model and how it is trained.
#[derive(Args, Clone)]
struct ModelArgs {
    /// mlp | cnn | a model file (.json or .toml layer list).
    #[arg(long, default_value = "cnn")]
    model: String,
    /// Hidden activation: relu | elu | selu | sigmoid | tanh.
    #[arg(long, default_value = "relu", value_parser = parse_activation)]
    activation: Activation,
    /// Activation of the cnn's Dense 64 layer (the notebook used selu).
    #[arg(long, default_value = "selu", value_parser = parse_activation)]
    dense_activation: Activation,
    /// Epochs.
    #[arg(long, default_value_t = 12)]
    epochs: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// none | balanced | frequency (the notebook's: each class's share of Training).
    #[arg(long, default_value = "none", value_parser = parse_class_weight)]
    class_weight: ClassWeight,
    /// Seed of initial weights and shuffles.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop when validation accuracy has not improved for N epochs.
    #[arg(long)]
    patience: Option<usize>,
    /// constant | step[:every=10,gamma=0.5] | cosine[:min_lr=0] | plateau[:patience=3,factor=0.5].
    #[arg(long, default_value = "constant")]
    lr_schedule: String,
    /// Training-time augmentation, redrawn each epoch: none | flip (mirror half the images) |
    /// shift=N (move by up to N ≤ 7 pixels each way, edges repeated) | flip,shift=N.
    #[arg(long, default_value = "none", value_parser = parse_augment)]
    augment: Augment,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Run folder (default runs/<timestamp>-<model>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint (weights, Adam state, shuffle
    /// position), with its saved settings; `--epochs N` here extends the run to N epochs.
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Print only one summary line per epoch.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct EvalArgs {
    /// A checkpoint written by `fergpu train`.
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// The split to evaluate.
    #[arg(long, default_value = "PublicTest", value_parser = parse_usage)]
    split: Usage,
    /// Write one row per image: index, true, predicted, the 7 probabilities.
    #[arg(long, value_name = "OUT.csv")]
    predictions: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Args)]
struct SynthArgs {
    /// Output CSV (`.gz` to compress).
    #[arg(long)]
    out: PathBuf,
    /// Rows to generate.
    #[arg(long, default_value_t = 3000)]
    rows: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct AdaptersArgs {
    /// Restrict to one API: vulkan | metal | dx12 | gl.
    #[arg(long)]
    gpu_backend: Option<String>,
}

#[derive(Args)]
struct InfoArgs {
    /// FER2013 CSV.
    #[arg(long)]
    data: PathBuf,
}

#[derive(Args)]
struct ExportArgs {
    /// FER2013 CSV.
    #[arg(long)]
    data: PathBuf,
    /// Only this split.
    #[arg(long, value_parser = parse_usage)]
    split: Option<Usage>,
    /// At most N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct BenchArgs {
    /// Models to time (mlp, cnn or model files).
    #[arg(long, default_value = "mlp,cnn", value_delimiter = ',')]
    models: Vec<String>,
    /// Batch sizes to time.
    #[arg(long, default_value = "32,512", value_delimiter = ',')]
    batch_sizes: Vec<usize>,
    /// Timed training steps per model and batch size.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Repetitions of each kernel timing.
    #[arg(long, default_value_t = 5)]
    kernel_reps: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Args)]
struct PredictArgs {
    /// A checkpoint written by `fergpu train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Photos (PNG, JPEG, BMP) and folders (walked recursively).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// One JSON object per image instead of text.
    #[arg(long)]
    json: bool,
    /// Also write one CSV row per face: image, face, crop, box, score, emotion, 7 probabilities.
    #[arg(long, value_name = "OUT.csv")]
    csv: Option<PathBuf>,
    /// Also write each photo with its face boxes and labels drawn into this folder.
    #[arg(long, value_name = "DIR")]
    annotate: Option<PathBuf>,
    /// Classify each image's centred square instead of the faces found in it (for photos
    /// that are already cropped faces; automatic for 48×48 to 64×64 images).
    #[arg(long)]
    whole_image: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(Args)]
struct ExportModelArgs {
    /// A checkpoint written by `fergpu train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The ONNX file to write.
    #[arg(long, value_name = "OUT.onnx")]
    onnx: PathBuf,
    /// End the graph with a softmax: output `probabilities` instead of `logits`.
    #[arg(long)]
    softmax: bool,
}

#[derive(Args)]
struct CvArgs {
    /// Number of folds.
    #[arg(long, default_value_t = 6)]
    folds: usize,
    /// Shuffle rows before folding (with --seed).
    #[arg(long)]
    shuffle: bool,
    /// Keep class shares equal across folds.
    #[arg(long)]
    stratified: bool,
    /// Rows that take part in the folds.
    #[arg(long, default_value = "Training,PrivateTest", value_delimiter = ',', value_parser = parse_usage)]
    rows: Vec<Usage>,
    /// Validation split for checkpoint choice and early stopping, kept out of the folds.
    #[arg(long, default_value = "PublicTest", value_delimiter = ',', value_parser = parse_usage)]
    cv_val: Vec<Usage>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Output folder (default runs/<timestamp>-cv-<model>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print only one summary line per epoch.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct SweepArgs {
    /// The grid file (TOML), e.g. assets/notebook_sweep.toml.
    grid: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Run configurations side by side, one per adapter (e.g. `0,1`).
    #[arg(long, value_delimiter = ',')]
    adapters: Vec<String>,
    /// Output folder (default runs/sweep-<grid name>); rerunning skips finished runs.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print only one summary line per epoch.
    #[arg(long)]
    quiet: bool,
}

fn parse_usage(s: &str) -> Result<Usage, String> {
    Usage::from_name(s).ok_or_else(|| format!("'{s}' is not Training, PublicTest or PrivateTest"))
}

fn parse_activation(s: &str) -> Result<Activation, String> {
    Activation::from_name(s)
        .ok_or_else(|| format!("'{s}' is not relu, elu, selu, sigmoid, tanh or linear"))
}

fn parse_augment(s: &str) -> Result<Augment, String> {
    Augment::parse(s).map_err(|e| e.to_string())
}

fn parse_class_weight(s: &str) -> Result<ClassWeight, String> {
    ClassWeight::parse(s).map_err(|e| e.to_string())
}

fn main() {
    restore_default_sigpipe();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // `--resume DIR --epochs N` extends a run; without `--epochs` the saved count stands.
    let epochs_given = matches
        .subcommand_matches("train")
        .and_then(|m| m.value_source("epochs"))
        == Some(clap::parser::ValueSource::CommandLine);
    if let Err(e) = dispatch(cli, epochs_given) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Rust ignores SIGPIPE, so `println!` into a closed pipe (`fergpu eval … | head`) panics.
/// A command-line tool should end quietly instead, as `cat` does: restore the default action.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread starts; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn dispatch(cli: Cli, epochs_given: bool) -> Result<()> {
    match cli.command {
        Command::Train(a) => train(a, epochs_given),
        Command::Eval(a) => eval(a),
        Command::Synth(a) => {
            let ds = synth::generate(a.rows, a.seed);
            csv::write(&a.out, &ds)?;
            eprintln!("wrote {} generated faces to {}", ds.len(), a.out.display());
            Ok(())
        }
        Command::Adapters(a) => adapters(a),
        Command::Info(a) => info(a),
        Command::ExportImages(a) => export_images(a),
        Command::Bench(a) => bench(a),
        Command::Predict(a) => predict(a),
        Command::Cv(a) => cv(a),
        Command::Sweep(a) => sweep(a),
        Command::Export(a) => {
            let done = fergpu::export::export_onnx(&a.checkpoint, &a.onnx, a.softmax)?;
            eprintln!("{done}");
            Ok(())
        }
    }
}

fn train_config(a: &TrainArgs) -> TrainConfig {
    base_config(&a.model, &a.data, &a.device, a.out.clone(), a.quiet, "")
}

/// The training settings shared by `train`, `cv` and `sweep`.
fn base_config(
    m: &ModelArgs,
    data: &DataArgs,
    device: &DeviceArgs,
    out: Option<PathBuf>,
    quiet: bool,
    prefix: &str,
) -> TrainConfig {
    let model_name = std::path::Path::new(&m.model)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| m.model.clone());
    TrainConfig {
        model: m.model.clone(),
        activation: m.activation,
        dense_activation: m.dense_activation,
        epochs: m.epochs,
        batch_size: m.batch_size,
        lr: m.lr,
        class_weight: m.class_weight,
        seed: m.seed,
        patience: m.patience,
        lr_schedule: m.lr_schedule.clone(),
        augment: m.augment,
        data: data.config(),
        device: device.choice(),
        out: out.unwrap_or_else(|| default_run_dir(&format!("{prefix}{model_name}"))),
        quiet,
    }
}

/// Exit status of a run stopped by Ctrl-C after saving (128 + SIGINT, as shells report it),
/// so scripts can tell it from a finished run.
const INTERRUPTED_STATUS: i32 = 130;

fn train(a: TrainArgs, epochs_given: bool) -> Result<()> {
    fergpu::run::install_interrupt_handler();
    let (cfg, resume) = match &a.resume {
        Some(dir) => {
            let mut cfg = saved_config(dir)?;
            if epochs_given {
                cfg.epochs = a.model.epochs;
            }
            (cfg, true)
        }
        None => (train_config(&a), false),
    };
    let outcome = fergpu::run::train(&cfg, resume)?;
    if outcome.interrupted {
        std::process::exit(INTERRUPTED_STATUS);
    }
    Ok(())
}

/// The settings a run folder was started with (`config.json`).
fn saved_config(dir: &std::path::Path) -> Result<TrainConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot resume, no config.json", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let mut cfg: TrainConfig = serde_json::from_value(json["config"].clone())
        .with_context(|| format!("{}: not a fergpu run configuration", path.display()))?;
    cfg.out = dir.to_path_buf();
    Ok(cfg)
}

/// `runs/<UTC timestamp>-<model>`.
fn default_run_dir(model: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    PathBuf::from(format!(
        "runs/{year:04}{month:02}{day:02}-{:02}{:02}{:02}-{model}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}

struct EvalJob<'a> {
    ck: &'a Checkpoint,
    ds: &'a fergpu::data::Dataset,
    keep_probs: bool,
}

impl Job for EvalJob<'_> {
    type Output = fergpu::train::EvalResult;
    fn run<B: fergpu::backend::Backend>(
        self,
        be: &B,
        device: &str,
    ) -> fergpu::Result<Self::Output> {
        eprintln!("evaluating on {device}");
        fergpu::eval::evaluate_checkpoint(be, self.ck, self.ds, self.keep_probs)
    }
}

fn eval(a: EvalArgs) -> Result<()> {
    let ck = Checkpoint::load(&a.checkpoint)?;
    let mut data = a.data.config();
    data.limit = 0;
    let all = data.load_all()?;
    let mut rows = all.rows_of(&[a.split]);
    if a.data.limit > 0 {
        rows.truncate(a.data.limit);
    }
    let ds = all.subset(&rows);
    if ds.is_empty() {
        bail!("the data has no {} rows to evaluate", a.split.name());
    }
    let job = EvalJob {
        ck: &ck,
        ds: &ds,
        keep_probs: a.predictions.is_some(),
    };
    let r = run_on(&a.device.choice(), job)?;
    // The file first: it is the costly result, and stdout may be a pipe that closes early.
    if let (Some(path), Some(probs)) = (&a.predictions, &r.probs) {
        fergpu::eval::write_predictions(path, &ds.labels, probs)?;
        eprintln!("wrote predictions to {}", path.display());
    }
    println!(
        "{}",
        fergpu::eval::report_text(&r, &format!("{} ({})", a.split.name(), ck.spec.name))
    );
    Ok(())
}

fn adapters(a: AdaptersArgs) -> Result<()> {
    use fergpu::backend::gpu::adapter::{format_adapters, list_adapters, GpuApi};
    let api = a.gpu_backend.as_deref().map(GpuApi::parse).transpose()?;
    print!("{}", format_adapters(&list_adapters(api)));
    Ok(())
}

fn info(a: InfoArgs) -> Result<()> {
    let (ds, rep) = csv::load(
        &a.data,
        &csv::LoadOptions {
            skip_bad_rows: true,
        },
    )?;
    println!(
        "{}: {} rows read in {:.1} s",
        a.data.display(),
        rep.rows,
        rep.seconds
    );
    println!("{}", fergpu::report::images::info_text(&ds));
    if !rep.skipped.is_empty() {
        println!("{} bad rows:", rep.skipped.len());
        for e in rep.skipped.iter().take(20) {
            println!("  {e}");
        }
        if rep.skipped.len() > 20 {
            println!("  … and {} more", rep.skipped.len() - 20);
        }
    }
    Ok(())
}

fn export_images(a: ExportArgs) -> Result<()> {
    let (ds, _) = csv::load(&a.data, &csv::LoadOptions::default())?;
    let mut rows = match a.split {
        Some(s) => ds.rows_of(&[s]),
        None => (0..ds.len()).collect(),
    };
    if let Some(n) = a.limit {
        rows.truncate(n);
    }
    let n = fergpu::report::images::export_images(&ds, &rows, &a.out)?;
    eprintln!("wrote {n} images to {}", a.out.display());
    Ok(())
}

fn bench(a: BenchArgs) -> Result<()> {
    struct BenchJob(fergpu::bench::BenchConfig, bool);
    impl Job for BenchJob {
        type Output = ();
        fn run<B: fergpu::backend::Backend>(self, be: &B, device: &str) -> fergpu::Result<()> {
            eprintln!("benchmarking on {device}");
            let rows = fergpu::bench::run(be, &self.0)?;
            if self.1 {
                let json = serde_json::json!({ "device": device, "rows": rows });
                println!("{json:#}");
            } else {
                print!("{}", fergpu::bench::table(device, &rows));
            }
            Ok(())
        }
    }
    let cfg = fergpu::bench::BenchConfig {
        models: a.models,
        batch_sizes: a.batch_sizes,
        steps: a.steps.max(1),
        kernel_reps: a.kernel_reps.max(1),
    };
    run_on(&a.device.choice(), BenchJob(cfg, a.json))?;
    Ok(())
}

fn predict(a: PredictArgs) -> Result<()> {
    let cfg = fergpu::predict::PredictConfig {
        checkpoint: a.checkpoint,
        inputs: a.images,
        json: a.json,
        csv: a.csv,
        annotate: a.annotate,
        whole_image: a.whole_image,
        device: a.device.choice(),
    };
    let summary = fergpu::predict::run(&cfg)?;
    if summary.failed > 0 {
        bail!(
            "{} of the inputs could not be read or written (named above)",
            summary.failed
        );
    }
    Ok(())
}

fn cv(a: CvArgs) -> Result<()> {
    use fergpu::experiment::runner;
    fergpu::run::install_interrupt_handler();
    let cfg = base_config(&a.model, &a.data, &a.device, a.out, a.quiet, "cv-");
    let all = cfg.data.load_all()?;
    let cv_cfg = runner::CvConfig {
        folds: a.folds,
        shuffle: a.shuffle.then_some(cfg.seed),
        stratified: a.stratified,
        rows: a.rows,
        val: a.cv_val,
    };
    let results = runner::cross_validate(&cfg, &cv_cfg, &all)?;
    if results.is_empty() {
        bail!("no fold finished");
    }
    print!("{}", runner::cv_text(&results));
    eprintln!("wrote {}", cfg.out.join("cv.html").display());
    if results.len() < a.folds {
        bail!(
            "interrupted after {} of {} folds; run the same command again to continue",
            results.len(),
            a.folds
        );
    }
    Ok(())
}

fn sweep(a: SweepArgs) -> Result<()> {
    use fergpu::experiment::{load_grid, runner};
    fergpu::run::install_interrupt_handler();
    let specs = load_grid(&a.grid)?;
    let stem = a
        .grid
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "grid".into());
    let dir = a
        .out
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("sweep-{stem}")));
    let cfg = base_config(&a.model, &a.data, &a.device, Some(dir.clone()), a.quiet, "");
    let splits = cfg.data.load()?;
    let results = runner::sweep(&cfg, &specs, &splits, &dir, &a.adapters)?;
    let mut sorted: Vec<_> = results.iter().collect();
    sorted.sort_by(|x, y| y.test_acc.total_cmp(&x.test_acc));
    for r in sorted {
        println!(
            "{:<40} test {:>6.2}%  macro-F1 {:.4}  best epoch {:>3}  {:>7.1} s",
            r.name,
            100.0 * r.test_acc,
            r.macro_f1,
            r.best_epoch,
            r.seconds
        );
    }
    eprintln!("wrote {}", dir.join("results.html").display());
    if results.len() < specs.len() {
        bail!(
            "{} of {} runs finished; run the same command again to continue",
            results.len(),
            specs.len()
        );
    }
    Ok(())
}
