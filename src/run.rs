//! A whole training run: data, model, epochs, validation, checkpoints, run folder, resume.
//!
//! The run folder holds `config.json`, `metrics.csv`, `curves.png`/`.svg`,
//! `confusion.html`/`.png`, `checkpoint-last.safetensors` (with optimizer and resume state),
//! `checkpoint-best.safetensors` and `summary.json`. Every file is written atomically, so an
//! interrupted or failed run keeps its last good state.

use crate::augment::Augment;
use crate::backend::{Activation, Backend};
use crate::checkpoint::Checkpoint;
use crate::data::{csv, synth, Dataset, Usage};
use crate::device::{run_on, DeviceChoice, Job};
use crate::error::{Error, Result};
use crate::experiment::early_stop::EarlyStopping;
use crate::experiment::schedule::{LrSchedule, Scheduler};
use crate::model::{ModelSpec, Plan};
use crate::report::progress::Progress;
use crate::report::{self, EpochRecord};
use crate::train::{ClassWeight, DeviceSet, TrainState, Trainer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Where the data comes from and how it splits.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataConfig {
    /// A FER2013 CSV (`.csv` or `.csv.gz`); `None` with `synthetic`.
    pub data: Option<PathBuf>,
    /// Generate this many faces instead of reading a file.
    pub synthetic: Option<usize>,
    /// Skip malformed rows instead of failing.
    pub skip_bad_rows: bool,
    /// Splits trained on (default Training).
    pub train_split: Vec<Usage>,
    /// Splits validated on each epoch (default PrivateTest).
    pub val_split: Vec<Usage>,
    /// Splits tested on at the end (default PublicTest).
    pub test_split: Vec<Usage>,
    /// Use only the first N rows of each split (quick experiments); 0 = all.
    pub limit: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            data: None,
            synthetic: None,
            skip_bad_rows: false,
            train_split: vec![Usage::Training],
            val_split: vec![Usage::PrivateTest],
            test_split: vec![Usage::PublicTest],
            limit: 0,
        }
    }
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

impl DataConfig {
    /// Reads (or generates) the data and splits it; prints one line about what was loaded.
    pub fn load(&self) -> Result<Splits> {
        let all = self.load_all()?;
        let take = |splits: &[Usage]| {
            let mut rows = all.rows_of(splits);
            if self.limit > 0 {
                rows.truncate(self.limit);
            }
            all.subset(&rows)
        };
        Ok(Splits {
            train: take(&self.train_split),
            val: take(&self.val_split),
            test: take(&self.test_split),
        })
    }

    /// Reads (or generates) every row.
    pub fn load_all(&self) -> Result<Dataset> {
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
                    if rep.skipped.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({} bad rows skipped, first: {})",
                            rep.skipped.len(),
                            rep.skipped[0]
                        )
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

/// Every setting of a training run; saved as `config.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// `mlp`, `cnn`, or a model file.
    pub model: String,
    /// Hidden activation of the conv (cnn) or dense (mlp) layers.
    pub activation: Activation,
    /// Activation of the cnn's Dense 64.
    pub dense_activation: Activation,
    /// Epochs to train.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Class weighting of the loss.
    pub class_weight: ClassWeight,
    /// Seed of the initial weights and the shuffles.
    pub seed: u64,
    /// Stop when validation accuracy has not improved for this many epochs.
    pub patience: Option<usize>,
    /// Learning-rate schedule (`constant`, `step:every=10,gamma=0.5`, `cosine`, `plateau`).
    pub lr_schedule: String,
    /// Training-time flips and shifts (none by default, as the notebook).
    #[serde(default)]
    pub augment: Augment,
    /// The data.
    pub data: DataConfig,
    /// The device.
    pub device: DeviceChoice,
    /// The run folder.
    pub out: PathBuf,
    /// Print only the per-epoch summary lines.
    pub quiet: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: "cnn".into(),
            activation: Activation::Relu,
            dense_activation: Activation::Selu,
            epochs: 12,
            batch_size: 32,
            lr: 1e-3,
            class_weight: ClassWeight::None,
            seed: 1,
            patience: None,
            lr_schedule: "constant".into(),
            augment: Augment::NONE,
            data: DataConfig::default(),
            device: DeviceChoice::default(),
            out: PathBuf::from("runs/run"),
            quiet: false,
        }
    }
}

/// What a finished (or stopped) run reports.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOutcome {
    /// The summary written to `summary.json` (absent when the run was interrupted).
    pub summary: Option<report::Summary>,
    /// Every epoch's record.
    pub records: Vec<EpochRecord>,
    /// The run folder.
    pub out: PathBuf,
    /// True when Ctrl-C stopped the run before its end.
    pub interrupted: bool,
}

/// The resumable state stored in `checkpoint-last.safetensors`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct ResumeState {
    train: TrainState,
    scheduler: Scheduler,
    early: EarlyStopping,
    seconds: f64,
}

/// Ctrl-C presses seen; the training loop stops after the current batch once this is > 0.
pub static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// Installs the Ctrl-C handler: the first press asks the run to stop after its current batch
/// and save; the second exits at once.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTS.fetch_add(1, Ordering::SeqCst) > 0 {
            eprintln!("\nsecond Ctrl-C: exiting now");
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: finishing the current batch and saving (press again to exit now)");
    });
}

/// Trains as `cfg` says, writing the run folder. Resumes when `cfg.out` holds a
/// `checkpoint-last.safetensors` with resume state and `resume` is set.
pub fn train(cfg: &TrainConfig, resume: bool) -> Result<RunOutcome> {
    let splits = cfg.data.load()?;
    train_on(cfg, &splits, resume)
}

/// [`train`] on splits already in memory (cross-validation folds, sweeps).
pub fn train_on(cfg: &TrainConfig, splits: &Splits, resume: bool) -> Result<RunOutcome> {
    run_on(
        &cfg.device,
        RunJob {
            cfg,
            splits,
            resume,
        },
    )
}

struct RunJob<'a> {
    cfg: &'a TrainConfig,
    splits: &'a Splits,
    resume: bool,
}

impl Job for RunJob<'_> {
    type Output = RunOutcome;
    fn run<B: Backend>(self, be: &B, device: &str) -> Result<RunOutcome> {
        Run::start(be, device, self.cfg, self.splits, self.resume)?.go()
    }
}

/// One run in progress.
struct Run<'a, 'b, B: Backend> {
    cfg: &'a TrainConfig,
    splits: &'a Splits,
    device: String,
    trainer: Trainer<'b, B>,
    val: DeviceSet<B>,
    scheduler: Scheduler,
    /// Also the record of the best validation accuracy and its epoch.
    early: EarlyStopping,
    records: Vec<EpochRecord>,
    seconds_before: f64,
    last_good: Vec<f32>,
}

impl<'a, 'b, B: Backend> Run<'a, 'b, B> {
    fn start(
        be: &'b B,
        device: &str,
        cfg: &'a TrainConfig,
        splits: &'a Splits,
        resume: bool,
    ) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.epochs == 0 {
            return Err(Error::Config(
                "--batch-size and --epochs must be at least 1".into(),
            ));
        }
        if splits.val.is_empty() {
            return Err(Error::Config("the validation split has no images".into()));
        }
        std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
        let last = cfg.out.join("checkpoint-last.safetensors");
        let resumed = if resume {
            Some(Checkpoint::load(&last)?)
        } else {
            None
        };
        let spec = match &resumed {
            Some(ck) => ck.spec.clone(),
            None => ModelSpec::resolve(&cfg.model, cfg.activation, cfg.dense_activation)?,
        };
        let params = match &resumed {
            Some(ck) => ck.params.clone(),
            None => Plan::new(&spec, 1)?.init_params(cfg.seed),
        };
        let batch = cfg.batch_size.min(splits.train.len().max(1));
        let mut trainer = Trainer::new(
            be,
            spec,
            &params,
            batch,
            &splits.train,
            cfg.class_weight,
            cfg.seed,
        )?;
        let schedule = LrSchedule::parse(&cfg.lr_schedule)?;
        let mut run = Run {
            cfg,
            splits,
            device: device.to_string(),
            val: DeviceSet::new(be, &splits.val),
            scheduler: Scheduler::new(schedule, cfg.lr, cfg.epochs),
            early: EarlyStopping::new(cfg.patience),
            records: Vec::new(),
            seconds_before: 0.0,
            last_good: params,
            trainer: {
                trainer.state = TrainState::new(cfg.seed);
                trainer.set_augment(cfg.augment);
                trainer
            },
        };
        if let Some(ck) = resumed {
            run.restore(&ck, &last)?;
        }
        // Rewritten on resume too: `--resume DIR --epochs N` changes the run's length.
        run.write_config()?;
        Ok(run)
    }

    fn restore(&mut self, ck: &Checkpoint, path: &Path) -> Result<()> {
        let bad = |problem: &str| Error::BadCheckpoint {
            path: path.into(),
            problem: problem.into(),
        };
        let opt = ck
            .optimizer
            .as_ref()
            .ok_or_else(|| bad("no optimizer state to resume from"))?;
        let state: ResumeState = serde_json::from_str(
            ck.train_state
                .as_deref()
                .ok_or_else(|| bad("no training state to resume from"))?,
        )
        .map_err(|e| bad(&format!("training state: {e}")))?;
        self.trainer.set_optimizer_state(opt);
        self.trainer.state = state.train;
        self.scheduler = state.scheduler;
        self.early = state.early;
        self.seconds_before = state.seconds;
        let metrics = self.cfg.out.join("metrics.csv");
        if metrics.exists() {
            self.records = report::read_metrics_csv(&metrics)?;
            self.records.truncate(self.trainer.state.epoch);
        }
        eprintln!(
            "resuming {} at epoch {} batch {}",
            self.cfg.out.display(),
            self.trainer.state.epoch + 1,
            self.trainer.state.next_batch
        );
        Ok(())
    }

    fn write_config(&self) -> Result<()> {
        let json = serde_json::json!({
            "config": self.cfg,
            "adapter": self.device,
            "fergpu_version": env!("CARGO_PKG_VERSION"),
            "git_commit": option_env!("FERGPU_GIT_COMMIT").unwrap_or("unknown"),
            "train_images": self.splits.train.len(),
            "val_images": self.splits.val.len(),
            "test_images": self.splits.test.len(),
            "parameters": self.trainer.net.plan.num_params,
        });
        let text = serde_json::to_string_pretty(&json).expect("config json");
        report::write_atomic(&self.cfg.out.join("config.json"), text.as_bytes())
    }

    fn go(mut self) -> Result<RunOutcome> {
        let mut progress = Progress::new(self.cfg.quiet);
        eprintln!(
            "training {} ({} parameters) on {}: {} train / {} val / {} test images, batch {}",
            self.trainer.spec.name,
            self.trainer.net.plan.num_params,
            self.device,
            self.splits.train.len(),
            self.splits.val.len(),
            self.splits.test.len(),
            self.trainer.batch_size()
        );
        // A live bar shows the running loss and accuracy: one small readback a second.
        let live = progress.is_live().then_some(Duration::from_secs(1));
        self.trainer.set_live_stats(live);
        let t_run = Instant::now();
        while self.trainer.state.epoch < self.cfg.epochs {
            let epoch = self.trainer.state.epoch + 1;
            let lr = self.scheduler.lr();
            let t0 = Instant::now();
            progress.start_epoch(epoch, self.cfg.epochs, self.trainer.batches_per_epoch());
            let outcome = self.trainer.run_epoch(lr as f32, &mut |done| {
                let (loss, acc) = done.running.unzip();
                progress.batch(done.images, loss, acc);
                INTERRUPTS.load(Ordering::SeqCst) == 0
            });
            let seconds = t0.elapsed().as_secs_f64();
            if !outcome.loss.is_finite() {
                return Err(self.diverged(epoch, lr));
            }
            if outcome.interrupted {
                self.save_last(t_run.elapsed().as_secs_f64())?;
                eprintln!(
                    "interrupted in epoch {epoch}; saved {}. Resume with: fergpu train --resume {}",
                    self.cfg.out.join("checkpoint-last.safetensors").display(),
                    self.cfg.out.display()
                );
                return Ok(self.outcome(None, true));
            }
            let val = self.trainer.evaluate(&self.val, false);
            let record = EpochRecord {
                epoch,
                train_loss: outcome.loss,
                train_acc: outcome.accuracy,
                val_loss: val.loss,
                val_acc: val.accuracy,
                seconds,
                images_per_s: outcome.images as f64 / seconds.max(1e-9),
                lr,
            };
            progress.finish_epoch(&record);
            self.records.push(record);
            let decision = self.early.observe(epoch, val.accuracy);
            self.scheduler.end_epoch(val.loss);
            self.last_good = self.trainer.params();
            if decision.improved {
                self.checkpoint(false)
                    .save(&self.cfg.out.join("checkpoint-best.safetensors"))?;
            }
            self.save_last(t_run.elapsed().as_secs_f64())?;
            if INTERRUPTS.load(Ordering::SeqCst) > 0 && epoch < self.cfg.epochs {
                eprintln!(
                    "interrupted after epoch {epoch}; resume with: fergpu train --resume {}",
                    self.cfg.out.display()
                );
                return Ok(self.outcome(None, true));
            }
            if decision.stop {
                eprintln!(
                    "early stopping: validation accuracy has not improved for {} epochs (best {:.2}% at epoch {})",
                    self.cfg.patience.unwrap_or(0),
                    100.0 * self.early.best().unwrap_or(f64::NAN),
                    self.best_epoch()
                );
                break;
            }
        }
        let summary = self.finish(t_run.elapsed().as_secs_f64())?;
        Ok(self.outcome(Some(summary), false))
    }

    /// 1-based epoch of the best validation accuracy (0 before any epoch ended).
    fn best_epoch(&self) -> usize {
        self.early.best_epoch().unwrap_or(0)
    }

    fn outcome(&self, summary: Option<report::Summary>, interrupted: bool) -> RunOutcome {
        RunOutcome {
            summary,
            records: self.records.clone(),
            out: self.cfg.out.clone(),
            interrupted,
        }
    }

    /// Restores the last good weights, saves them, and explains the divergence.
    fn diverged(&mut self, epoch: usize, lr: f64) -> Error {
        self.trainer.set_params(&self.last_good);
        let saved = self
            .checkpoint(false)
            .save(&self.cfg.out.join("checkpoint-last-good.safetensors"));
        Error::Diverged(format!(
            "the training loss became NaN or infinite in epoch {epoch} (learning rate {lr:e}). \
             The learning rate is the likely cause: try a smaller --lr (e.g. {:e}) or \
             --lr-schedule. The last good weights (end of epoch {}) are {}",
            lr / 10.0,
            epoch - 1,
            match saved {
                Ok(()) => format!(
                    "in {}",
                    self.cfg
                        .out
                        .join("checkpoint-last-good.safetensors")
                        .display()
                ),
                Err(e) => format!("not saved: {e}"),
            }
        ))
    }

    fn checkpoint(&self, with_state: bool) -> Checkpoint {
        Checkpoint {
            spec: self.trainer.spec.clone(),
            params: self.trainer.params(),
            optimizer: with_state.then(|| self.trainer.optimizer_state()),
            train_state: None,
        }
    }

    fn save_last(&self, seconds: f64) -> Result<()> {
        let state = ResumeState {
            train: self.trainer.state.clone(),
            scheduler: self.scheduler.clone(),
            early: self.early.clone(),
            seconds: self.seconds_before + seconds,
        };
        let mut ck = self.checkpoint(true);
        ck.train_state = Some(serde_json::to_string(&state).expect("state json"));
        ck.save(&self.cfg.out.join("checkpoint-last.safetensors"))?;
        self.write_curves()
    }

    fn write_curves(&self) -> Result<()> {
        let out = &self.cfg.out;
        report::write_metrics_csv(&out.join("metrics.csv"), &self.records)?;
        if !self.records.is_empty() {
            let title = format!("{} on {}", self.trainer.spec.name, self.device);
            report::write_curves(
                &out.join("curves.png"),
                &out.join("curves.svg"),
                &self.records,
                &title,
            )?;
        }
        Ok(())
    }

    /// Tests the best checkpoint and writes the confusion reports and summary.
    fn finish(&mut self, seconds: f64) -> Result<report::Summary> {
        let best = Checkpoint::load(&self.cfg.out.join("checkpoint-best.safetensors"))?;
        self.trainer.set_params(&best.params);
        let test_split = if self.splits.test.is_empty() {
            &self.splits.val
        } else {
            &self.splits.test
        };
        let set = DeviceSet::new(self.trainer.be, test_split);
        let test = self.trainer.evaluate(&set, false);
        let title = format!(
            "{} — test accuracy {:.2}% (best validation epoch {})",
            self.trainer.spec.name,
            100.0 * test.accuracy,
            self.best_epoch()
        );
        let out = &self.cfg.out;
        report::write_atomic(
            &out.join("confusion.html"),
            report::confusion_html(&test.confusion, &title).as_bytes(),
        )?;
        report::write_confusion_png(&out.join("confusion.png"), &test.confusion, &title)?;
        let summary = report::Summary::new(
            &test.confusion,
            test.loss,
            &self.records,
            self.seconds_before + seconds,
            &self.device,
        );
        report::write_summary_json(&out.join("summary.json"), &summary)?;
        eprintln!(
            "{}",
            crate::eval::report_text(&test, "test (best validation checkpoint)")
        );
        eprintln!("run folder: {}", out.display());
        Ok(summary)
    }
}
