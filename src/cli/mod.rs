//! The `fergpu` command line: the flags of every command (clap) and one function per command
//! that calls the library. `src/main.rs` only parses, calls [`run`] and prints errors.
//!
//! The training commands (`train`, `cv`, `sweep`) take every flag of
//! [`crate::settings::Settings`]; see [`training`].

mod cluster;
mod tools;
mod training;

use crate::data::Usage;
use crate::device::DeviceChoice;
use crate::error::Result;
use crate::eval::Tta;
use crate::settings::{AugmentSettings, DataSettings, Settings};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Facial-expression (FER2013) training and evaluation on any GPU through WGSL compute
/// shaders, with a CPU reference backend.
#[derive(Parser)]
#[command(name = "fergpu", version, about, long_about = None)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command.
#[derive(Subcommand)]
pub enum Command {
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
    /// Write rows of a data file as PNG images named `<row>_<emotion>.png`, and augmented
    /// copies of them with the training augmentation flags.
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
    /// Time one training step's GPU dispatches: one row per kernel (layer, shape, variant,
    /// µs, GFLOP/s, GB/s, share), then the host's time per step and the device's idle gap.
    Profile(ProfileArgs),
}

/// `fergpu train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Every training setting, as flags.
    #[command(flatten)]
    pub settings: Settings,
    /// A recipe: settings from a TOML or JSON file (e.g. assets/recipes/*.toml, or a run's
    /// config.json); flags given here override it.
    #[arg(long, value_name = "FILE", help_heading = "Run")]
    pub config: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint (weights, optimizer state,
    /// shuffle position), with its saved settings; `--epochs N` extends it to N epochs, and
    /// the device flags and --quiet may change.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "config"], help_heading = "Run")]
    pub resume: Option<PathBuf>,
    /// Replace the run already in the --out folder (by default a folder that holds a run is
    /// refused, so that nothing is lost).
    #[arg(long, conflicts_with = "resume", help_heading = "Run")]
    pub overwrite: bool,
}

/// `fergpu eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// A checkpoint written by `fergpu train` (default: the shipped model,
    /// docs/MODEL_CARD.md).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// The data.
    #[command(flatten)]
    pub data: DataSettings,
    /// The split to evaluate.
    #[arg(long, default_value = "PublicTest", value_parser = parse_usage)]
    pub split: Usage,
    /// Write one row per image: index, true, predicted, the 7 probabilities (with --tta, of
    /// the averaged logits).
    #[arg(long, value_name = "OUT.csv")]
    pub predictions: Option<PathBuf>,
    /// Test-time augmentation: none | flip (the image and its mirror) | crops (5 positions,
    /// centre and moved 2 pixels towards each corner, × mirrored: 10 views). Logits are
    /// averaged over the views; the plain result is printed too, each labelled.
    #[arg(long, default_value = "none", value_parser = parse_tta)]
    pub tta: Tta,
    /// Evaluate the moving average of the weights a run kept with --ema (in its
    /// checkpoint-last) instead of the weights themselves.
    #[arg(long)]
    pub average: bool,
    /// The device.
    #[command(flatten)]
    pub device: DeviceChoice,
}

/// `fergpu synth`.
#[derive(Args)]
pub struct SynthArgs {
    /// Output CSV (`.gz` to compress).
    #[arg(long)]
    pub out: PathBuf,
    /// Rows to generate.
    #[arg(long, default_value_t = 3000)]
    pub rows: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `fergpu adapters`.
#[derive(Args)]
pub struct AdaptersArgs {
    /// Restrict to one API: vulkan | metal | dx12 | gl.
    #[arg(long)]
    pub gpu_backend: Option<String>,
}

/// `fergpu info`.
#[derive(Args)]
pub struct InfoArgs {
    /// FER2013 CSV.
    #[arg(long)]
    pub data: PathBuf,
}

/// `fergpu export-images`.
#[derive(Args)]
pub struct ExportArgs {
    /// FER2013 CSV.
    #[arg(long)]
    pub data: PathBuf,
    /// Only this split.
    #[arg(long, value_parser = parse_usage)]
    pub split: Option<Usage>,
    /// At most N images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// With any augmentation flag, each image is also written augmented, `--copies` times, as
    /// training draws it (`<row>_<emotion>_aug<k>.png`), to look at what training sees.
    #[command(flatten)]
    pub augment: AugmentSettings,
    /// Seed of the augmentation drawn for the written copies.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Augmented copies written of each image (with an augmentation flag).
    #[arg(long, default_value_t = 4, value_name = "K")]
    pub copies: usize,
}

/// `fergpu bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Models to time (mlp, cnn, vgg, compact or model files).
    #[arg(long, default_value = "mlp,cnn", value_delimiter = ',')]
    pub models: Vec<String>,
    /// Batch sizes to time.
    #[arg(long, default_value = "32,512", value_delimiter = ',')]
    pub batch_sizes: Vec<usize>,
    /// Timed training steps per model and batch size.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Repetitions of each kernel timing.
    #[arg(long, default_value_t = 5)]
    pub kernel_reps: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The device.
    #[command(flatten)]
    pub device: DeviceChoice,
}

/// `fergpu profile`.
#[derive(Args)]
pub struct ProfileArgs {
    /// The model: mlp | cnn | vgg | compact | a model file.
    #[arg(long, default_value = "cnn")]
    pub model: String,
    /// Images per training step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Steps timed end to end, and steps whose dispatches are timed.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// How dispatches are timed: timestamps (GPU timestamp queries; the default where the
    /// adapter has them) | wall (each dispatch submitted alone and waited for: upper bounds).
    #[arg(long, value_enum)]
    pub timer: Option<crate::backend::gpu::timing::Timer>,
    /// Keep wgpu's runtime bounds checks in the convolution and dense shaders (built without
    /// them by default), to measure what that saves.
    #[arg(long)]
    pub bounds_checks: bool,
    /// Skip zero-filling the tiled kernels' workgroup memory at the start of each workgroup
    /// (they write every element before reading it; zero-filled by default), to measure
    /// what that saves.
    #[arg(long)]
    pub skip_workgroup_zeroing: bool,
    /// Run every convolution and dense kernel as this variant instead of choosing per shape:
    /// `register` or `tiled BMxBNxBK/TMxTN` (e.g. `tiled 64x64x8/4x4`; see `TILE_CONFIGS` in
    /// src/backend/gpu/tiles.rs for the ones autotuning tries).
    #[arg(long, value_name = "VARIANT")]
    pub variant: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The device (a GPU adapter).
    #[command(flatten)]
    pub device: DeviceChoice,
}

/// `fergpu predict`.
#[derive(Args)]
pub struct PredictArgs {
    /// A checkpoint written by `fergpu train` (default: the shipped model,
    /// docs/MODEL_CARD.md).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Photos (PNG, JPEG, BMP) and folders (walked recursively).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// One JSON object per image instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write one CSV row per face: image, face, crop, box, score, emotion, 7 probabilities.
    #[arg(long, value_name = "OUT.csv")]
    pub csv: Option<PathBuf>,
    /// Also write each photo with its face boxes and labels drawn into this folder.
    #[arg(long, value_name = "DIR")]
    pub annotate: Option<PathBuf>,
    /// Classify each image's centred square instead of the faces found in it (for photos
    /// that are already cropped faces; automatic for 48×48 to 64×64 images).
    #[arg(long)]
    pub whole_image: bool,
    /// The device.
    #[command(flatten)]
    pub device: DeviceChoice,
}

/// `fergpu export`.
#[derive(Args)]
pub struct ExportModelArgs {
    /// A checkpoint written by `fergpu train` (default: the shipped model).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// The ONNX file to write.
    #[arg(long, value_name = "OUT.onnx", required_unless_present = "weights")]
    pub onnx: Option<PathBuf>,
    /// End the graph with a softmax: output `probabilities` instead of `logits`.
    #[arg(long)]
    pub softmax: bool,
    /// Write the weights alone (no optimizer or training state) as a checkpoint to ship,
    /// with where they come from in its metadata: the run folder's settings, seed, commit
    /// and test results (`config.json`, `summary.json`) when the checkpoint lies in one.
    #[arg(long, value_name = "OUT.safetensors")]
    pub weights: Option<PathBuf>,
    /// With --weights: store them as 16-bit floats (half the size).
    #[arg(long, requires = "weights")]
    pub f16: bool,
}

/// `fergpu cv`.
#[derive(Args)]
pub struct CvArgs {
    /// Number of folds.
    #[arg(long, default_value_t = 6)]
    pub folds: usize,
    /// Shuffle rows before folding (with --seed).
    #[arg(long)]
    pub shuffle: bool,
    /// Keep class shares equal across folds.
    #[arg(long)]
    pub stratified: bool,
    /// Rows that take part in the folds.
    #[arg(long, default_value = "Training,PrivateTest", value_delimiter = ',', value_parser = parse_usage)]
    pub rows: Vec<Usage>,
    /// Validation split for checkpoint choice and early stopping, kept out of the folds.
    #[arg(long, default_value = "PublicTest", value_delimiter = ',', value_parser = parse_usage)]
    pub cv_val: Vec<Usage>,
    /// Every training setting, as flags (--out: the experiment's folder, default
    /// runs/<timestamp>-cv-<model>).
    #[command(flatten)]
    pub settings: Settings,
    /// A recipe file (TOML or JSON) for every fold; flags given here override it.
    #[arg(long, value_name = "FILE", help_heading = "Run")]
    pub config: Option<PathBuf>,
    /// Plan, run one task, or collect (for clusters).
    #[command(flatten)]
    pub stage: Stage,
}

/// The stages of an experiment run by a scheduler (Slurm job arrays, Kubernetes indexed
/// Jobs): plan it, train one task per array index, collect the results. Without any of
/// them the command runs every task itself.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Cluster")]
pub struct Stage {
    /// Write the experiment's plan into --out (every task numbered from 0, with its
    /// settings and its data's identity), a Slurm batch script and a Kubernetes indexed
    /// Job, and train nothing.
    #[arg(long, conflicts_with_all = ["task", "collect"])]
    pub plan: bool,
    /// Train task I of the plan in --out into its own run folder (default: the scheduler's
    /// $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX). A finished task is skipped, a
    /// stopped one resumes. Only the device flags (--adapter, --gpu-backend, --threads,
    /// --autotune) and --quiet may be given beside it.
    #[arg(long, value_name = "I", num_args = 0..=1, conflicts_with = "collect")]
    pub task: Option<Option<usize>>,
    /// Write the tables (as a local run's) from the plan's finished tasks in --out and list
    /// the others; reads the run folders only.
    #[arg(long)]
    pub collect: bool,
}

/// `fergpu sweep`.
#[derive(Args)]
pub struct SweepArgs {
    /// The grid file (TOML), e.g. assets/notebook_sweep.toml (not with --task or --collect,
    /// which read the plan).
    #[arg(required_unless_present_any = ["task", "collect"])]
    pub grid: Option<PathBuf>,
    /// Settings shared by every run unless the grid sets them (--out: the sweep's folder,
    /// default runs/sweep-<grid name>; rerunning skips finished runs).
    #[command(flatten)]
    pub settings: Settings,
    /// A recipe file (TOML or JSON) for every run; the grid and flags given here override it.
    #[arg(long, value_name = "FILE", help_heading = "Run")]
    pub config: Option<PathBuf>,
    /// Run configurations side by side, one per adapter (e.g. `0,1`).
    #[arg(long, value_delimiter = ',')]
    pub adapters: Vec<String>,
    /// Plan, run one task, or collect (for clusters).
    #[command(flatten)]
    pub stage: Stage,
}

fn parse_tta(s: &str) -> std::result::Result<Tta, String> {
    Tta::parse(s).map_err(|e| e.to_string())
}

fn parse_usage(s: &str) -> std::result::Result<Usage, String> {
    Usage::from_name(s).ok_or_else(|| format!("'{s}' is not Training, PublicTest or PrivateTest"))
}

/// How a command ended when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It did everything it was asked.
    Done,
    /// A stop request (Ctrl-C, SIGTERM) ended it after saving; it can be continued.
    Interrupted,
}

/// Runs the command `cli` holds; `matches` are the whole command line's, so that the
/// training commands can tell the flags given from the defaults.
pub fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<Outcome> {
    let sub = |name: &str| {
        matches
            .subcommand_matches(name)
            .expect("the parsed subcommand has matches")
    };
    match cli.command {
        Command::Train(a) => training::train(a, sub("train")),
        Command::Cv(a) => training::cv(a, sub("cv")),
        Command::Sweep(a) => training::sweep(a, sub("sweep")),
        Command::Eval(a) => tools::eval(a),
        Command::Synth(a) => tools::synth(a),
        Command::Adapters(a) => tools::adapters(a),
        Command::Info(a) => tools::info(a),
        Command::ExportImages(a) => tools::export_images(a),
        Command::Bench(a) => tools::bench(a),
        Command::Predict(a) => tools::predict(a),
        Command::Export(a) => tools::export(a),
        Command::Profile(a) => tools::profile(a),
    }
}
