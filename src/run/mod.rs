//! A whole training run: data, model, epochs, validation, checkpoints, run folder, resume.
//!
//! [`train`] reads the data and runs; [`train_on`] runs on splits already in memory (folds,
//! sweeps). Everything that can be checked is checked before the folder is touched
//! (`start`); the epoch loop ([`Run::go`]) then trains, validates, records, and saves; the
//! run folder's files belong to [`folder::RunFolder`].

pub mod folder;
pub mod origin;
mod start;

pub use folder::{ExperimentFolder, RunFolder, RunLock, RunRecord};
pub use origin::{ExperimentPart, Origin};

use crate::backend::Backend;
use crate::cancel::Cancel;
use crate::checkpoint::Checkpoint;
use crate::device::{run_on, Job};
use crate::error::{Error, Result};
use crate::eval::{DeviceSet, EvalResult, Evaluator, Tta};
use crate::report::progress::Progress;
use crate::report::summary::{TtaScores, TtaSummary};
use crate::report::{self, EpochRecord};
use crate::settings::{Settings, Splits};
use crate::train::{EarlyStopping, EpochOutcome, Scheduler, TrainState, Trainer};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How a run begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A new run. A folder that already holds a run is refused unless `overwrite`.
    New {
        /// Replace a run already in the folder.
        overwrite: bool,
    },
    /// Continue the run in the folder from its last checkpoint.
    Resume,
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
    /// True when a stop request ended the run before its end.
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

/// Trains as `settings` say, writing the run folder `settings.run.out` (a timestamped one
/// under `runs/` when unset). `cancel` stops the run cleanly after the current batch.
pub fn train(settings: &Settings, start: Start, cancel: &Cancel) -> Result<RunOutcome> {
    settings.validate()?;
    let splits = settings.data.load()?;
    train_on(settings, &splits, start, cancel)
}

/// [`train`] on splits already in memory.
pub fn train_on(
    settings: &Settings,
    splits: &Splits,
    start: Start,
    cancel: &Cancel,
) -> Result<RunOutcome> {
    train_part(settings, splits, None, start, cancel)
}

/// [`train_on`] as `part` of an experiment (a cross-validation fold, a sweep run) when
/// given: `config.json` records it, only the experiment may resume the run, and a stopped
/// run leaves the advice on continuing to the experiment.
pub fn train_part(
    settings: &Settings,
    splits: &Splits,
    part: Option<ExperimentPart>,
    start: Start,
    cancel: &Cancel,
) -> Result<RunOutcome> {
    settings.validate()?;
    let origin = Origin::new(splits, part);
    run_on(
        &settings.device,
        RunJob {
            settings,
            splits,
            origin: &origin,
            start,
            cancel,
        },
    )
}

struct RunJob<'a> {
    settings: &'a Settings,
    splits: &'a Splits,
    origin: &'a Origin,
    start: Start,
    cancel: &'a Cancel,
}

impl Job for RunJob<'_> {
    type Output = RunOutcome;
    fn run<B: Backend>(self, be: &B, device: &str) -> Result<RunOutcome> {
        Run::start(be, device, self)?.go()
    }
}

/// One run in progress; built by `start.rs`.
struct Run<'a, 'b, B: Backend> {
    be: &'b B,
    settings: &'a Settings,
    splits: &'a Splits,
    origin: &'a Origin,
    cancel: &'a Cancel,
    folder: RunFolder,
    /// Held for the whole run: no other run writes this folder meanwhile.
    _lock: RunLock,
    progress: Progress,
    device: String,
    trainer: Trainer<'b, B>,
    evaluator: Evaluator<'b, B>,
    val: DeviceSet<B>,
    /// Where the run stands beyond the trainer's weights and optimizer.
    history: History,
}

/// Where a run stands beyond the trainer: what a fresh run starts empty and a resumed one
/// reads back from its folder.
struct History {
    scheduler: Scheduler,
    /// Also the record of the best validation accuracy and its epoch.
    early: EarlyStopping,
    records: Vec<EpochRecord>,
    /// Wall time of the run's earlier sessions (before a resume).
    seconds_before: f64,
    /// Weights at the end of the last finished epoch (restored on divergence).
    last_good: Weights,
    /// Weights of the best validation epoch so far (what the run is tested with).
    best: Option<Weights>,
}

/// A model's values on the host: parameters `(P)` and batch norms' running statistics `(S)`.
#[derive(Clone, Debug, PartialEq)]
struct Weights {
    params: Vec<f32>,
    running: Vec<f32>,
}

impl Weights {
    /// A checkpoint's weights.
    fn of(ck: &Checkpoint) -> Weights {
        Weights {
            params: ck.params.clone(),
            running: ck.running.clone(),
        }
    }
}

impl<B: Backend> Run<'_, '_, B> {
    /// The epoch loop: train, validate, record, save; until the last epoch, early stopping,
    /// or a stop request. Then the test pass.
    fn go(mut self) -> Result<RunOutcome> {
        self.announce();
        let epochs = self.settings.schedule.epochs;
        let t_run = Instant::now();
        while self.trainer.state().epoch < epochs {
            let epoch = self.trainer.state().epoch + 1;
            let lr = self.history.scheduler.lr();
            let t0 = Instant::now();
            let batches = self.trainer.batches_per_epoch();
            self.progress.start_epoch(epoch, epochs, batches);
            let trained = self.train_epoch(lr);
            if !trained.loss.is_finite() {
                return Err(self.diverged(epoch, lr, "the training loss became NaN or infinite"));
            }
            if trained.interrupted {
                self.save_last(t_run.elapsed())?;
                return Ok(self.stopped(&format!("interrupted in epoch {epoch}")));
            }
            let val = match self.validate() {
                Ok(val) => val,
                Err(Error::NonFinite(what)) => {
                    let what = format!("on the validation images, {what}");
                    return Err(self.diverged(epoch, lr, &what));
                }
                Err(e) => return Err(e),
            };
            let record = epoch_record(epoch, lr, &trained, &val, t0.elapsed());
            self.progress.finish_epoch(&record);
            self.history.records.push(record);
            let decision = self.history.early.observe(epoch, val.accuracy);
            self.history.scheduler.end_epoch(val.loss, val.accuracy);
            self.save_epoch(decision.improved, t_run.elapsed())?;
            if self.cancel.is_requested() && epoch < epochs {
                return Ok(self.stopped(&format!("interrupted after epoch {epoch}")));
            }
            if decision.stop {
                self.announce_early_stop();
                break;
            }
        }
        let summary = self.finish(t_run.elapsed())?;
        Ok(self.outcome(Some(summary), false))
    }

    fn announce(&self) {
        eprintln!(
            "training {} ({} parameters) on {}: {} train / {} val / {} test images, batch {}",
            self.trainer.spec().name,
            self.trainer.plan().num_params,
            self.device,
            self.splits.train.len(),
            self.splits.val.len(),
            self.splits.test.len(),
            self.trainer.batch_size()
        );
        let (all, used) = (self.trainer.train_len(), self.trainer.images_per_epoch());
        if used < all {
            eprintln!(
                "note: {all} training images leave 1 for a last batch, which the model's batch \
                 norm cannot normalise alone; each epoch trains on {used} (a different image \
                 is left out each epoch)"
            );
        }
    }

    /// Trains the rest of the current epoch, updating the progress after each batch and
    /// stopping early when asked.
    fn train_epoch(&mut self, lr: f64) -> EpochOutcome {
        let (cancel, progress) = (self.cancel, &mut self.progress);
        self.trainer.run_epoch(lr, &mut |done| {
            let (loss, acc) = done.running.unzip();
            progress.batch(done.images, loss, acc);
            !cancel.is_requested()
        })
    }

    /// The current weights (their moving average, where the run keeps one) on the
    /// validation split.
    fn validate(&mut self) -> Result<EvalResult> {
        let (params, running) = self.trainer.evaluated_tensors();
        self.evaluator.load_params(params, running);
        self.evaluator.evaluate(&self.val, false)
    }

    /// After an epoch: the best checkpoint when it improved (the weights validated: their
    /// average, where the run keeps one), then the resumable state.
    fn save_epoch(&mut self, improved: bool, elapsed: Duration) -> Result<()> {
        self.history.last_good = self.weights();
        if improved {
            let validated = match self.trainer.average() {
                Some((params, running)) => Weights {
                    params: self.be.download(params),
                    running: self.be.download(running),
                },
                None => self.history.last_good.clone(),
            };
            self.folder.save_best(&self.checkpoint(&validated, false))?;
            self.history.best = Some(validated);
        }
        self.save_last(elapsed)
    }

    /// Says how to continue a run stopped (and saved) before its end: a run of its own
    /// with `train --resume`; a part of an experiment by running the experiment again,
    /// which its caller says.
    fn stopped(&self, what: &str) -> RunOutcome {
        let saved = self.folder.last_checkpoint_path();
        match &self.origin.experiment {
            None => eprintln!(
                "{what}; saved {}. Resume with: fergpu train --resume {}",
                saved.display(),
                self.folder.path().display()
            ),
            Some(part) => eprintln!("{what} ({part}); saved {}", saved.display()),
        }
        self.outcome(None, true)
    }

    fn announce_early_stop(&self) {
        eprintln!(
            "early stopping: validation accuracy has not improved for {} epochs (best {:.2}% at \
             epoch {})",
            self.settings.schedule.patience.unwrap_or(0),
            100.0 * self.history.early.best().unwrap_or(f64::NAN),
            self.best_epoch()
        );
    }

    /// 1-based epoch of the best validation accuracy (0 before any epoch ended).
    fn best_epoch(&self) -> usize {
        self.history.early.best_epoch().unwrap_or(0)
    }

    fn outcome(&self, summary: Option<report::Summary>, interrupted: bool) -> RunOutcome {
        RunOutcome {
            summary,
            records: self.history.records.clone(),
            out: self.folder.path().to_path_buf(),
            interrupted,
        }
    }

    /// Restores the last good weights, saves them, and explains the divergence: `what`
    /// became NaN or infinite in `epoch`, trained at rate `lr`.
    fn diverged(&mut self, epoch: usize, lr: f64, what: &str) -> Error {
        self.trainer.restore_params(&self.history.last_good.params);
        self.trainer
            .restore_running(&self.history.last_good.running);
        let saved = self
            .folder
            .save_last_good(&self.checkpoint(&self.history.last_good, false));
        // A tenth, to one digit; only a rate --lr accepts is suggested (never NaN, never
        // below the smallest).
        let smaller = format!("{:.0e}", lr / 10.0);
        let example = match smaller.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= crate::settings::MIN_LR => format!(" (e.g. {smaller})"),
            _ => String::new(),
        };
        Error::Diverged(format!(
            "in epoch {epoch} (learning rate {lr:e}), {what}. \
             The learning rate is the likely cause: try a smaller --lr{example} or \
             --lr-schedule. The last good weights (end of epoch {}) are {}",
            epoch - 1,
            match saved {
                Ok(()) => format!("in {}", self.folder.last_good_path().display()),
                Err(e) => format!("not saved: {e}"),
            }
        ))
    }

    /// The trainer's weights on the host.
    fn weights(&self) -> Weights {
        Weights {
            params: self.trainer.params(),
            running: self.trainer.running(),
        }
    }

    /// A checkpoint of `weights`, with the optimizer's state when `with_state`.
    fn checkpoint(&self, weights: &Weights, with_state: bool) -> Checkpoint {
        Checkpoint {
            spec: self.trainer.spec().clone(),
            params: weights.params.clone(),
            running: weights.running.clone(),
            optimizer: with_state.then(|| self.trainer.optimizer_state()),
            train_state: None,
        }
    }

    /// Saves `checkpoint-last` with everything a resume needs, then the metrics and curves.
    fn save_last(&self, elapsed: Duration) -> Result<()> {
        let state = ResumeState {
            train: self.trainer.state().clone(),
            scheduler: self.history.scheduler.clone(),
            early: self.history.early.clone(),
            seconds: self.history.seconds_before + elapsed.as_secs_f64(),
        };
        let mut ck = self.checkpoint(&self.weights(), true);
        ck.train_state = Some(serde_json::to_string(&state).expect("state json"));
        self.folder.save_last(&ck)?;
        self.folder.write_metrics(&self.history.records)?;
        if !self.history.records.is_empty() {
            let title = format!("{} on {}", self.trainer.spec().name, self.device);
            self.folder.write_curves(&self.history.records, &title)?;
        }
        Ok(())
    }

    /// Tests the best validation epoch's weights (kept in memory, so another process
    /// touching the folder cannot change the result), plain and with test-time augmentation
    /// (flip and crops, in one pass over the crops' views), and writes the reports and
    /// summary.
    fn finish(&mut self, elapsed: Duration) -> Result<report::Summary> {
        let best = self
            .history
            .best
            .as_ref()
            .unwrap_or(&self.history.last_good);
        let set = DeviceSet::new(self.be, &self.splits.test);
        let spec = self.trainer.spec();
        let mut tester = Evaluator::with_tta(self.be, spec, &best.params, set.len(), Tta::Crops)?;
        tester.set_params(&best.params, &best.running);
        let test = tester.evaluate(&set, false)?;
        let title = format!(
            "{} — test accuracy {:.2}% (best validation epoch {})",
            self.trainer.spec().name,
            100.0 * test.accuracy,
            self.best_epoch()
        );
        self.folder.write_confusion(&test.confusion, &title)?;
        let scores = |t: Tta| {
            let r = test
                .with_tta(t)
                .expect("a crops pass reports flip and crops");
            TtaScores::new(&r.confusion, r.loss)
        };
        let summary = report::Summary {
            tta: Some(TtaSummary {
                flip: scores(Tta::Flip),
                crops: scores(Tta::Crops),
            }),
            ..report::Summary::new(
                &test.confusion,
                test.loss,
                &self.history.records,
                self.history.seconds_before + elapsed.as_secs_f64(),
                &self.device,
            )
        };
        self.folder.write_summary(&summary)?;
        eprintln!(
            "{}{}",
            crate::eval::report_text(&test, "test (best validation checkpoint), no TTA"),
            crate::eval::tta_lines(&test, "test")
        );
        eprintln!("run folder: {}", self.folder.path().display());
        Ok(summary)
    }
}

/// One epoch's line of `metrics.csv`.
fn epoch_record(
    epoch: usize,
    lr: f64,
    trained: &EpochOutcome,
    val: &EvalResult,
    took: Duration,
) -> EpochRecord {
    let seconds = took.as_secs_f64();
    EpochRecord {
        epoch,
        train_loss: trained.loss,
        train_acc: trained.accuracy,
        val_loss: val.loss,
        val_acc: val.accuracy,
        seconds,
        images_per_s: trained.images as f64 / seconds.max(1e-9),
        lr,
    }
}
