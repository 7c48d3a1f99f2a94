//! The training settings: one type, [`Settings`], for every way a run is configured.
//!
//! The same type is
//! - the command line: it derives [`clap::Args`], so each field is a flag of the same name
//!   (`batch_size` is `--batch-size`), with its default and help text written once, here;
//! - `config.json` in a run folder: its serialization ([`crate::run::folder`]);
//! - a recipe file (`fergpu train --config FILE.toml|json`): the serialization, or any part
//!   of it ([`Settings::load_file`]);
//! - a sweep's `[grid]`, `[fixed]` and `[[run]]` entries: overrides by key
//!   ([`Settings::set`]), through the same mechanism as recipe files and the command line.
//!
//! A key is a field name (`lr`), unique across the sections, or `section.field`
//! (`optimizer.lr`). Values are checked twice: by type when they are set (serde), and by
//! range in [`Settings::validate`], the one place that knows each setting's allowed values.
//!
//! Adding a setting means adding a field to one of the section types below (with its flag
//! attributes and doc comment) and the code that uses it; the command line, recipe files,
//! sweeps, `config.json` and resume pick it up from the type.

use crate::augment::{self, AreaRange, Augment, Warp};
use crate::backend::{Activation, OptimizerConfig, OptimizerKind};
use crate::data::{csv, synth, Dataset, Usage};
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::train::schedule::LrSchedule;
use crate::train::{ClassWeight, TrainerOptions};
use clap::parser::ValueSource;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Every setting of a training run, in sections. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the data comes from and how it splits.
    #[command(flatten)]
    pub data: DataSettings,
    /// The network.
    #[command(flatten)]
    pub model: ModelSettings,
    /// The optimizer.
    #[command(flatten)]
    pub optimizer: OptimizerSettings,
    /// The training loss.
    #[command(flatten)]
    pub loss: LossSettings,
    /// How long training runs and how the learning rate moves.
    #[command(flatten)]
    pub schedule: ScheduleSettings,
    /// Training-time augmentation.
    #[command(flatten)]
    pub augment: AugmentSettings,
    /// Batches, seed, run folder, output.
    #[command(flatten)]
    pub run: RunSettings,
    /// The device that runs it.
    #[command(flatten)]
    pub device: DeviceChoice,
}

/// Where the data comes from and how it splits.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Data")]
pub struct DataSettings {
    /// FER2013 CSV (`icml_face_data.csv` or `fer2013.csv` layout; gzip is read too; `-` or
    /// `/dev/stdin` reads a pipe).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Train on N generated faces instead of a file.
    #[arg(long, value_name = "N")]
    pub synthetic: Option<usize>,
    /// Skip malformed rows (and report how many) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Splits to train on (comma-separated Usage values).
    #[arg(long, default_value = "Training", value_delimiter = ',', value_parser = parse_usage)]
    pub train_split: Vec<Usage>,
    /// Splits to validate on each epoch (checkpoint choice, schedules, early stopping).
    #[arg(long, default_value = "PrivateTest", value_delimiter = ',', value_parser = parse_usage)]
    pub val_split: Vec<Usage>,
    /// Splits to test on once, at the end.
    #[arg(long, default_value = "PublicTest", value_delimiter = ',', value_parser = parse_usage)]
    pub test_split: Vec<Usage>,
    /// Use only the first N rows of each split (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
}

/// The network.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Model")]
pub struct ModelSettings {
    /// mlp | cnn | vgg | compact | a model file (.json or .toml layer list).
    #[arg(long, default_value = "cnn")]
    pub model: String,
    /// Hidden activation of the presets: relu | elu | selu | sigmoid | tanh.
    #[arg(long, default_value = "relu", value_parser = parse_activation)]
    pub activation: Activation,
    /// Activation of the cnn's Dense 64 layer (the notebook used selu).
    #[arg(long, default_value = "selu", value_parser = parse_activation)]
    pub dense_activation: Activation,
}

/// The optimizer.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Optimizer")]
pub struct OptimizerSettings {
    /// Base learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Weight decay λ of the conv and dense weights (biases are not decayed): L2, added to the
    /// gradient, for adam and sgd; decoupled (p ← p·(1 − lr·λ)) for adamw. As PyTorch's
    /// `weight_decay`.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// adam | adamw | sgd, with PyTorch's update formulas (torch.optim.Adam, AdamW, SGD).
    #[arg(long, default_value = "adam", value_parser = parse_optimizer)]
    pub optimizer: OptimizerKind,
    /// SGD's momentum μ (0: plain SGD). Adam's β₁ = 0.9 plays this part for adam and adamw.
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f64,
    /// SGD: Nesterov momentum (needs --momentum > 0).
    #[arg(long)]
    pub nesterov: bool,
    /// Adam's ε, added to the bias-corrected √v̂ (1e-7 as the notebook's Keras; PyTorch's
    /// default is 1e-8).
    #[arg(long, default_value_t = 1e-7)]
    pub adam_eps: f64,
    /// Keep an exponential moving average of the weights (and batch norms' running
    /// statistics) with this decay per step, e.g. 0.999, and validate, checkpoint and test the
    /// average instead of the raw weights; 0 (the default) keeps none. The decay warms up as
    /// min(DECAY, (1 + t)/(10 + t)) at step t, so early averages do not cling to the
    /// initial weights.
    #[arg(long, value_name = "DECAY", default_value_t = 0.0)]
    pub ema: f64,
}

impl OptimizerSettings {
    /// The optimizer these settings ask for (Adam's β fixed at
    /// [`OptimizerConfig::ADAM_BETAS`]).
    pub fn config(&self) -> OptimizerConfig {
        let (beta1, beta2) = OptimizerConfig::ADAM_BETAS;
        OptimizerConfig {
            kind: self.optimizer,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            beta1,
            beta2,
            eps: self.adam_eps,
        }
    }
}

/// The training loss.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Loss")]
pub struct LossSettings {
    /// none | balanced | frequency (the notebook's: each class's share of Training).
    #[arg(long, default_value = "none", value_parser = parse_class_weight)]
    pub class_weight: ClassWeight,
    /// Label smoothing ε (PyTorch's): the target is (1 − ε)·one-hot + ε/7, each class's term
    /// weighted by its own class weight. Training loss only; validation and test report the
    /// plain cross-entropy.
    #[arg(long, value_name = "EPS", default_value_t = 0.0)]
    pub label_smoothing: f64,
}

/// How long training runs and how the learning rate moves.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Schedule")]
pub struct ScheduleSettings {
    /// Epochs.
    #[arg(long, default_value_t = 12)]
    pub epochs: usize,
    /// constant | step[:every=10,gamma=0.5] | cosine[:min_lr=0] |
    /// plateau[:metric=loss|acc,patience=3,factor=0.5] (metric: the validation loss or
    /// accuracy it follows).
    #[arg(long, default_value = "constant")]
    pub lr_schedule: String,
    /// Stop when validation accuracy has not improved for N epochs.
    #[arg(long, value_name = "N")]
    pub patience: Option<usize>,
    /// Epochs of linear learning-rate warm-up, ramped per step: with S batches per epoch, step
    /// t (from 1) trains at min(1, t/(N·S)) times the schedule's rate, whatever the schedule.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warmup: usize,
}

/// Training-time augmentation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Augmentation")]
pub struct AugmentSettings {
    /// Training-time augmentation, redrawn each epoch: none | flip (mirror half the images) |
    /// shift=N (move by up to N ≤ 7 pixels each way, edges repeated) | flip,shift=N.
    #[arg(long, default_value = "none", value_parser = parse_augment)]
    pub augment: Augment,
    /// Zoom each training image about its centre by a factor drawn uniformly in 1−S..1+S
    /// (S ≤ 0.5; 0: off), redrawn each epoch; corners repeat the edge pixels.
    #[arg(long, default_value_t = 0.0, value_name = "S")]
    pub scale: f64,
    /// Rotate each training image about its centre by an angle drawn uniformly in −N..N
    /// degrees (N ≤ 180; 0: off), bilinear, redrawn each epoch; corners repeat the edges.
    #[arg(long, default_value_t = 0.0, value_name = "N")]
    pub rotate: f64,
    /// Random erasing: with probability P (0..1; 0: off) replace a rectangle of each training
    /// image by noise, after the other augmentations.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub erase: f64,
    /// The erased rectangle's area as a share of the image, drawn in MIN-MAX (0 < MIN ≤ MAX
    /// ≤ 1); its aspect ratio is drawn in 0.3..3.3.
    #[arg(long, default_value = "0.02-0.4", value_name = "MIN-MAX", value_parser = parse_area_range)]
    pub erase_area: AreaRange,
}

impl AugmentSettings {
    /// The scale, rotation and erasing these settings draw.
    pub fn warp(&self) -> Warp {
        Warp {
            scale: self.scale,
            rotate: self.rotate,
            erase: self.erase,
            erase_area: self.erase_area,
        }
    }
}

/// Batches, seed, run folder, output.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Run")]
pub struct RunSettings {
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Seed of initial weights, shuffles and augmentation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run folder (train: runs/<timestamp>-<model>; cv and sweep: the experiment's folder).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print only one summary line per epoch.
    #[arg(long)]
    pub quiet: bool,
}

crate::flags::defaults_from_flags!(
    DataSettings,
    ModelSettings,
    OptimizerSettings,
    LossSettings,
    ScheduleSettings,
    AugmentSettings,
    RunSettings,
);

fn parse_usage(s: &str) -> std::result::Result<Usage, String> {
    Usage::from_name(s).ok_or_else(|| format!("'{s}' is not Training, PublicTest or PrivateTest"))
}

fn parse_activation(s: &str) -> std::result::Result<Activation, String> {
    Activation::from_name(s)
        .ok_or_else(|| format!("'{s}' is not relu, elu, selu, sigmoid, tanh or linear"))
}

fn parse_optimizer(s: &str) -> std::result::Result<OptimizerKind, String> {
    OptimizerKind::from_name(s).ok_or_else(|| format!("'{s}' is not adam, adamw or sgd"))
}

fn parse_augment(s: &str) -> std::result::Result<Augment, String> {
    Augment::parse(s).map_err(|e| e.to_string())
}

fn parse_area_range(s: &str) -> std::result::Result<AreaRange, String> {
    AreaRange::parse(s).map_err(|e| e.to_string())
}

fn parse_class_weight(s: &str) -> std::result::Result<ClassWeight, String> {
    ClassWeight::parse(s).map_err(|e| e.to_string())
}

/// The settings that may change when a run is resumed (`--resume DIR`): how long it runs,
/// where (the device settings, autotuning included) and how quietly. Anything else would make the resumed run a different run.
pub const RESUMABLE: [&str; 6] = [
    "epochs",
    "quiet",
    "adapter",
    "gpu_backend",
    "threads",
    "autotune",
];

pub use crate::device::{max_threads, MAX_THREADS_PER_CORE};

/// The smallest learning rate accepted: the smallest normal `f32` (the kernels take the rate
/// as an `f32`; anything smaller would learn nothing, silently).
pub const MIN_LR: f64 = f32::MIN_POSITIVE as f64;

/// A setting's place: its section and field name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    /// The section, e.g. `optimizer`.
    pub section: &'static str,
    /// The field, e.g. `lr`; also the flag (`--lr`) and the short key.
    pub field: &'static str,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.section, self.field)
    }
}

impl Key {
    /// The command-line flag of this setting (`--batch-size`).
    pub fn flag(&self) -> String {
        format!("--{}", self.field.replace('_', "-"))
    }
}

impl Settings {
    /// How a trainer trains with these settings (`live_stats` off: the caller that shows a
    /// live bar turns it on). The defaults of [`TrainerOptions`] are [`Settings::default`]'s.
    pub fn trainer_options(&self) -> TrainerOptions {
        TrainerOptions {
            batch: self.run.batch_size,
            class_weight: self.loss.class_weight,
            label_smoothing: self.loss.label_smoothing as f32,
            seed: self.run.seed,
            augment: self.augment.augment,
            warp: self.augment.warp(),
            optimizer: self.optimizer.config(),
            warmup_epochs: self.schedule.warmup,
            ema: self.optimizer.ema,
            live_stats: None,
        }
    }

    /// Every setting, section by section, in declaration order.
    pub fn keys() -> &'static [Key] {
        static KEYS: std::sync::OnceLock<Vec<Key>> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| {
            let tree = serde_json::to_value(Settings::default()).expect("settings serialize");
            let mut keys = Vec::new();
            for (section, fields) in tree.as_object().expect("sections") {
                for field in fields.as_object().expect("fields").keys() {
                    keys.push(Key {
                        section: leak(section),
                        field: leak(field),
                    });
                }
            }
            keys
        })
    }

    /// The setting named `key`: a field name (`lr`) or `section.field` (`optimizer.lr`).
    pub fn key(key: &str) -> Result<Key> {
        let found = match key.split_once('.') {
            Some((s, f)) => Settings::keys()
                .iter()
                .find(|k| k.section == s && k.field == f),
            None => Settings::keys().iter().find(|k| k.field == key),
        };
        found.copied().ok_or_else(|| {
            let known: Vec<&str> = Settings::keys().iter().map(|k| k.field).collect();
            Error::Config(format!(
                "unknown setting '{key}'; known: {}",
                known.join(", ")
            ))
        })
    }

    /// The value of one setting as JSON.
    pub fn get(&self, key: Key) -> Value {
        let tree = serde_json::to_value(self).expect("settings serialize");
        tree[key.section][key.field].clone()
    }

    /// Sets one setting by key (see [`Settings::key`]) to a JSON value of its type. The
    /// value is type-checked here; ranges are checked by [`Settings::validate`].
    pub fn set(&mut self, key: &str, value: Value) -> Result<()> {
        let k = Settings::key(key)?;
        let mut tree = serde_json::to_value(&*self).expect("settings serialize");
        tree[k.section][k.field] = value.clone();
        *self = serde_json::from_value(tree).map_err(|e| {
            Error::Config(if value.is_null() {
                // How JSON writes NaN and the infinities.
                format!(
                    "setting '{}' is not a number (NaN or infinite); it must be a finite one",
                    k.field
                )
            } else {
                format!("setting '{}' = {value}: {e}", k.field)
            })
        })?;
        Ok(())
    }

    /// Applies a tree of settings: objects under a section name set that section's fields,
    /// any other entry sets the setting of that name. `source` names the file for errors.
    /// A setting given twice (`epochs` and `[schedule] epochs`) is an error naming both
    /// spellings: which would win is not the file's to leave open.
    pub fn apply_tree(&mut self, tree: &Map<String, Value>, source: &str) -> Result<()> {
        let in_file = |e: Error| Error::Config(format!("{source}: {e}"));
        let sections: Vec<&str> = Settings::keys().iter().map(|k| k.section).collect();
        let mut entries = Vec::new();
        for (name, value) in tree {
            match value {
                Value::Object(fields) if sections.contains(&name.as_str()) => {
                    entries.extend(fields.iter().map(|(f, v)| (format!("{name}.{f}"), v)));
                }
                _ => entries.push((name.clone(), value)),
            }
        }
        let mut seen: Vec<(Key, &str)> = Vec::new();
        for (name, value) in &entries {
            let key = Settings::key(name).map_err(in_file)?;
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
                return Err(in_file(Error::Config(format!(
                    "'{first}' and '{name}' are the same setting; write it once"
                ))));
            }
            seen.push((key, name));
            self.set(name, (*value).clone()).map_err(in_file)?;
        }
        Ok(())
    }

    /// Reads a recipe file (`.toml`, else JSON) over these settings: the whole
    /// serialization, or only the settings it names (a run's `config.json` works too). An
    /// unknown key is an error naming it and the file.
    pub fn load_file(&mut self, path: &Path) -> Result<()> {
        let text = crate::files::read_text(path)?;
        self.load_text(&text, path)
    }

    /// [`Settings::load_file`] of a recipe's text already read (a page's dropped file);
    /// `path` names it in errors and, by its extension, says whether it is TOML.
    pub fn load_text(&mut self, text: &str, path: &Path) -> Result<()> {
        let source = path.display().to_string();
        let tree: Value = if path.extension().is_some_and(|e| e == "toml") {
            let table: toml::Table =
                toml::from_str(text).map_err(|e| Error::Config(format!("{source}: {e}")))?;
            serde_json::to_value(table).expect("TOML is JSON-representable")
        } else {
            serde_json::from_str(text).map_err(|e| Error::Config(format!("{source}: {e}")))?
        };
        // A run's config.json holds its settings under "settings", beside what it recorded.
        let tree = match tree.get("settings") {
            Some(settings @ Value::Object(_)) => settings.clone(),
            _ => tree,
        };
        let Value::Object(map) = tree else {
            return Err(Error::Config(format!(
                "{source}: expected a table of settings"
            )));
        };
        self.apply_tree(&map, &source)
    }

    /// The settings given on the command line (`matches` of the subcommand whose flags
    /// `cli` was parsed from), in key order.
    pub fn given_on_command_line(matches: &clap::ArgMatches) -> Vec<Key> {
        Settings::keys()
            .iter()
            .filter(|k| {
                matches!(
                    matches.try_get_raw(k.field),
                    Ok(Some(_)) if matches.value_source(k.field) == Some(ValueSource::CommandLine)
                )
            })
            .copied()
            .collect()
    }

    /// Overrides these settings with those given on the command line.
    pub fn apply_command_line(&mut self, cli: &Settings, given: &[Key]) -> Result<()> {
        for k in given {
            let value = cli.get(*k);
            if value.is_null() {
                // A flag JSON cannot hold (`--lr nan`): the range check names the flag and
                // what it allows.
                cli.validate()?;
            }
            self.set(&k.to_string(), value)?;
        }
        Ok(())
    }

    /// Checks every value's range; the message names the setting, its flag and what is
    /// allowed.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, got: &dyn std::fmt::Display, allowed: &str| {
            let flag = format!("--{}", field.replace('_', "-"));
            Err(Error::Config(format!(
                "{flag} {got}: {field} must be {allowed}"
            )))
        };
        let d = &self.data;
        d.validate()?;
        for (field, splits) in [
            ("train_split", &d.train_split),
            ("val_split", &d.val_split),
            ("test_split", &d.test_split),
        ] {
            if splits.is_empty() {
                return bad(
                    field,
                    &"(none)",
                    "one or more of Training, PublicTest, PrivateTest",
                );
            }
        }
        let s = &self.schedule;
        if s.epochs == 0 || s.epochs > 100_000 {
            return bad("epochs", &s.epochs, "between 1 and 100000");
        }
        if let Some(p) = s.patience {
            if p == 0 || p > 100_000 {
                return bad("patience", &p, "between 1 and 100000 epochs");
            }
        }
        LrSchedule::parse(&s.lr_schedule)?;
        if s.warmup > 100_000 {
            return bad("warmup", &s.warmup, "between 0 and 100000 epochs");
        }
        let lr = self.optimizer.lr;
        // The rate reaches the kernels as an f32: it must be a normal, finite one there.
        if !(lr.is_finite() && lr > 0.0 && (MIN_LR..=f32::MAX as f64).contains(&lr)) {
            return bad(
                "lr",
                &lr,
                "a finite number > 0 that a 32-bit float holds (1.2e-38 to 3.4e38)",
            );
        }
        let wd = self.optimizer.weight_decay;
        if !(0.0..1.0).contains(&wd) {
            return bad("weight_decay", &wd, "a number in [0, 1)");
        }
        let o = &self.optimizer;
        if !(0.0..1.0).contains(&o.ema) {
            return bad(
                "ema",
                &o.ema,
                "a decay in [0, 1), e.g. 0.999 (0: no average)",
            );
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return bad("momentum", &o.momentum, "a number in [0, 1)");
        }
        if o.momentum > 0.0 && o.optimizer != OptimizerKind::Sgd {
            return bad(
                "momentum",
                &o.momentum,
                "0 unless --optimizer sgd (Adam's β₁ is its momentum)",
            );
        }
        if o.nesterov && !(o.optimizer == OptimizerKind::Sgd && o.momentum > 0.0) {
            return Err(Error::Config(
                "--nesterov needs --optimizer sgd and --momentum > 0 (as PyTorch's SGD)".into(),
            ));
        }
        if !(o.adam_eps.is_finite() && o.adam_eps > 0.0 && o.adam_eps <= 1.0) {
            return bad("adam_eps", &o.adam_eps, "a number in (0, 1]");
        }
        let ls = self.loss.label_smoothing;
        if !(0.0..=1.0).contains(&ls) {
            return bad("label_smoothing", &ls, "a number in [0, 1]");
        }
        let b = self.run.batch_size;
        if b == 0 || b > 65_536 {
            return bad("batch_size", &b, "between 1 and 65536");
        }
        let a = &self.augment;
        if !(0.0..=augment::MAX_SCALE).contains(&a.scale) {
            return bad(
                "scale",
                &a.scale,
                &format!(
                    "between 0 and {} (zoom factors 1−S..1+S; 0: off)",
                    augment::MAX_SCALE
                ),
            );
        }
        if !(0.0..=augment::MAX_ROTATE).contains(&a.rotate) {
            return bad(
                "rotate",
                &a.rotate,
                &format!("between 0 and {} degrees (0: off)", augment::MAX_ROTATE),
            );
        }
        if !(0.0..=1.0).contains(&a.erase) {
            return bad("erase", &a.erase, "a probability between 0 and 1 (0: off)");
        }
        if !a.erase_area.is_valid() {
            return bad(
                "erase_area",
                &a.erase_area.name(),
                "MIN-MAX with 0 < MIN ≤ MAX ≤ 1 (shares of the image)",
            );
        }
        self.device.validate()
    }

    /// The model's short name for folder names (`cnn`, or a model file's stem).
    pub fn model_name(&self) -> String {
        let m = &self.model.model;
        Path::new(m)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| m.clone())
    }
}

/// Key names live as long as the program (the settings type is fixed at compile time).
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// The three splits of a run.
#[derive(Clone, Debug, Default)]
pub struct Splits {
    /// Trained on.
    pub train: Dataset,
    /// Validated on each epoch.
    pub val: Dataset,
    /// Tested on at the end.
    pub test: Dataset,
}

impl DataSettings {
    /// Checks where the data comes from: a file or a number of generated faces (not both),
    /// at most [`synth::MAX_ROWS`] of them; the message names the flag and the range.
    pub fn validate(&self) -> Result<()> {
        match (&self.data, self.synthetic) {
            (Some(_), Some(_)) => Err(Error::Config(
                "--data and --synthetic both given: use a file or generated faces, not both".into(),
            )),
            (None, Some(n)) if n == 0 || n > synth::MAX_ROWS => Err(Error::Config(format!(
                "--synthetic {n}: synthetic must be between 1 and {}",
                synth::MAX_ROWS
            ))),
            _ => Ok(()),
        }
    }

    /// Reads (or generates) the data and splits it; prints one line about what was loaded.
    pub fn load(&self) -> Result<Splits> {
        Ok(self.split(&self.load_all()?))
    }

    /// The train, validation and test splits of `all` (each limited to `limit` rows).
    pub fn split(&self, all: &Dataset) -> Splits {
        let take = |splits: &[Usage]| {
            let mut rows = all.rows_of(splits);
            if self.limit > 0 {
                rows.truncate(self.limit);
            }
            all.subset(&rows)
        };
        Splits {
            train: take(&self.train_split),
            val: take(&self.val_split),
            test: take(&self.test_split),
        }
    }

    /// Reads (or generates) every row, after [`DataSettings::validate`].
    pub fn load_all(&self) -> Result<Dataset> {
        self.validate()?;
        match (&self.data, self.synthetic) {
            (Some(path), _) => {
                let opts = csv::LoadOptions {
                    skip_bad_rows: self.skip_bad_rows,
                };
                let (ds, rep) = csv::load(path, &opts)?;
                eprintln!(
                    "loaded {} rows from {} in {:.1} s{}",
                    rep.rows,
                    path.display(),
                    rep.seconds,
                    match rep.skipped.first() {
                        None => String::new(),
                        Some(first) => format!(
                            " ({} bad rows skipped, first: {})",
                            rep.bad_rows,
                            crate::report::printable(&first.to_string())
                        ),
                    }
                );
                Ok(ds)
            }
            (None, Some(n)) => Ok(synth::generate(n, 0x5EED)),
            (None, None) => Err(Error::Config(
                "no data: give --data FILE.csv (FER2013, e.g. icml_face_data.csv) or --synthetic N"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_flags_defaults() {
        let s = Settings::default();
        assert_eq!(s.model.model, "cnn");
        assert_eq!(s.run.batch_size, 32);
        assert_eq!(s.optimizer.lr, 1e-3);
        assert_eq!(s.data.train_split, vec![Usage::Training]);
        assert_eq!(s.data.val_split, vec![Usage::PrivateTest]);
        assert_eq!(s.device.adapter, "auto");
        assert_eq!(s.schedule.patience, None);
        s.validate().unwrap();
    }

    #[test]
    fn field_names_are_unique_across_sections() {
        let keys = Settings::keys();
        for (i, a) in keys.iter().enumerate() {
            assert!(
                keys[i + 1..].iter().all(|b| b.field != a.field),
                "'{}' is in two sections",
                a.field
            );
        }
        assert!(keys.len() >= 20);
    }

    #[test]
    fn set_by_short_or_dotted_key_type_checks_and_rejects_unknown_keys() {
        let mut s = Settings::default();
        s.set("lr", 0.5.into()).unwrap();
        s.set("run.batch_size", 7.into()).unwrap();
        s.set("patience", 3.into()).unwrap();
        s.set("augment", "flip,shift=2".into()).unwrap();
        assert_eq!(s.optimizer.lr, 0.5);
        assert_eq!(s.run.batch_size, 7);
        assert_eq!(s.schedule.patience, Some(3));
        assert!(s.augment.augment.flip);
        let e = s.set("lr", "fast".into()).unwrap_err().to_string();
        assert!(e.contains("'lr'"), "{e}");
        let e = s.set("kernal", 5.into()).unwrap_err().to_string();
        assert!(e.contains("unknown setting 'kernal'"), "{e}");
        assert!(s.set("model.lr", 1.into()).is_err());
    }

    #[test]
    fn validate_names_the_flag_and_the_allowed_range() {
        let mut s = Settings::default();
        s.optimizer.lr = -1.0;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("--lr") && e.contains("> 0"), "{e}");
        let mut s = Settings::default();
        s.schedule.patience = Some(0);
        assert!(s.validate().unwrap_err().to_string().contains("--patience"));
        let mut s = Settings::default();
        s.device.threads = 100_000;
        assert!(s.validate().unwrap_err().to_string().contains("--threads"));
        for lr in [0.0, f64::NAN, f64::INFINITY, 1e-300, 1e300] {
            let mut s = Settings::default();
            s.optimizer.lr = lr;
            let e = s.validate().unwrap_err().to_string();
            assert!(e.starts_with(&format!("--lr {lr}: ")), "{e}");
        }
        for lr in [1e-12, 1e30] {
            let mut s = Settings::default();
            s.optimizer.lr = lr;
            s.validate().unwrap();
        }
        let mut s = Settings::default();
        let e = s.set("lr", Value::Null).unwrap_err().to_string();
        assert!(e.contains("'lr' is not a number (NaN or infinite)"), "{e}");
    }

    #[test]
    fn augmentation_settings_are_set_by_key_and_validated_with_their_ranges() {
        let mut s = Settings::default();
        assert_eq!(s.augment.warp(), Warp::NONE);
        s.set("scale", 0.2.into()).unwrap();
        s.set("rotate", 15.into()).unwrap(); // a whole number is a float setting too
        s.set("augment.erase", 0.5.into()).unwrap();
        s.set("erase_area", "0.05-0.3".into()).unwrap();
        s.validate().unwrap();
        let w = s.augment.warp();
        assert_eq!((w.scale, w.rotate, w.erase), (0.2, 15.0, 0.5));
        assert_eq!((w.erase_area.min, w.erase_area.max), (0.05, 0.3));
        let e = s.set("erase_area", 0.3.into()).unwrap_err().to_string();
        assert!(e.contains("'erase_area'"), "{e}");
        for (key, value, flag, allowed) in [
            (
                "scale",
                serde_json::json!(0.6),
                "--scale",
                "between 0 and 0.5",
            ),
            (
                "scale",
                serde_json::json!(-0.1),
                "--scale",
                "between 0 and 0.5",
            ),
            (
                "rotate",
                serde_json::json!(200),
                "--rotate",
                "between 0 and 180",
            ),
            (
                "erase",
                serde_json::json!(1.5),
                "--erase",
                "between 0 and 1",
            ),
            (
                "erase_area",
                "0.5-0.2".into(),
                "--erase-area",
                "0 < MIN ≤ MAX ≤ 1",
            ),
            (
                "erase_area",
                "0-0.2".into(),
                "--erase-area",
                "0 < MIN ≤ MAX ≤ 1",
            ),
        ] {
            let mut s = Settings::default();
            s.set(key, value).unwrap();
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(flag) && e.contains(allowed), "{key}: {e}");
        }
    }

    #[test]
    fn optimizer_settings_are_validated_with_their_rules() {
        for (key, value, flag) in [
            ("weight_decay", serde_json::json!(-0.1), "--weight-decay"),
            ("weight_decay", serde_json::json!(1.5), "--weight-decay"),
            ("momentum", serde_json::json!(0.9), "--momentum"), // with adam
            ("nesterov", serde_json::json!(true), "--nesterov"), // with adam
            ("adam_eps", serde_json::json!(0.0), "--adam-eps"),
            (
                "label_smoothing",
                serde_json::json!(1.5),
                "--label-smoothing",
            ),
        ] {
            let mut s = Settings::default();
            s.set(key, value.clone()).unwrap();
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{key} = {value}: {e}");
        }
        let mut s = Settings::default();
        s.set("optimizer", "sgd".into()).unwrap();
        s.set("momentum", 0.9.into()).unwrap();
        s.set("nesterov", true.into()).unwrap();
        s.validate().unwrap();
        s.set("momentum", 0.0.into()).unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("--nesterov"));
        s.set("momentum", 1.0.into()).unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("--momentum"));
    }

    #[test]
    fn a_tree_sets_sections_and_bare_keys_alike() {
        let mut s = Settings::default();
        let tree = serde_json::json!({
            "optimizer": {"lr": 0.01},
            "epochs": 3,
            "data": {"synthetic": 50},
        });
        s.apply_tree(tree.as_object().unwrap(), "recipe.toml")
            .unwrap();
        assert_eq!(s.optimizer.lr, 0.01);
        assert_eq!(s.schedule.epochs, 3);
        assert_eq!(s.data.synthetic, Some(50));
        let bad = serde_json::json!({"model": {"kernal": 5}});
        let e = s
            .apply_tree(bad.as_object().unwrap(), "recipe.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("recipe.toml") && e.contains("kernal"), "{e}");
    }

    #[test]
    fn a_setting_spelled_twice_in_one_tree_is_an_error_naming_both() {
        for tree in [
            serde_json::json!({"epochs": 3, "schedule": {"epochs": 4}}),
            serde_json::json!({"lr": 0.1, "optimizer.lr": 0.2}),
        ] {
            let e = Settings::default()
                .apply_tree(tree.as_object().unwrap(), "r.toml")
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("r.toml: '") && e.contains("are the same setting"),
                "{e}"
            );
            assert!(e.contains("epochs") || e.contains("lr"), "{e}");
        }
    }

    #[test]
    fn serialization_round_trips() {
        let mut s = Settings::default();
        s.schedule.patience = Some(4);
        s.data.data = Some("x.csv".into());
        s.augment.rotate = 12.5;
        s.augment.erase_area = AreaRange {
            min: 0.1,
            max: 0.25,
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Settings>(&json).unwrap(), s);
        let toml = toml::to_string(&s).unwrap();
        assert_eq!(toml::from_str::<Settings>(&toml).unwrap(), s);
    }
}
