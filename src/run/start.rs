//! Starting a run: every check that can fail runs before the run folder is touched, then the
//! folder is taken, and the trainer is built fresh or from the last checkpoint.

use super::{ResumeState, Run, RunFolder, RunJob, Start, Weights};
use crate::backend::{Backend, OptimizerConfig};
use crate::checkpoint::Checkpoint;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::{DeviceSet, Evaluator};
use crate::model::{ModelSpec, Plan};
use crate::report::progress::Progress;
use crate::report::EpochRecord;
use crate::run::RunRecord;
use crate::settings::Settings;
use crate::train::{EarlyStopping, LrSchedule, Scheduler, Trainer, TrainerOptions};
use std::time::Duration;

/// What a resumed run picks up from its folder.
struct Resumed {
    ck: Checkpoint,
    state: ResumeState,
}

impl<'a, 'b, B: Backend> Run<'a, 'b, B> {
    /// Checks the splits, the model and the batch against the device, takes the folder, and
    /// builds the trainer (fresh, or from the folder's last checkpoint).
    pub(super) fn start(be: &'b B, device: &str, job: RunJob<'a>) -> Result<Self> {
        let RunJob {
            settings,
            splits,
            start,
            cancel,
        } = job;
        let folder = match &settings.run.out {
            Some(dir) => RunFolder::new(dir),
            None => RunFolder::timestamped(&settings.model_name()),
        };
        check_splits(settings, &splits.train, &splits.val, &splits.test)?;
        // Another run writing the folder now is the first thing to say (with its process).
        folder.check_not_locked()?;
        let resumed = match start {
            Start::Resume => Some(resume_point(&folder)?),
            Start::New { overwrite } => {
                if folder.holds_run() && !overwrite {
                    return Err(Error::Config(format!(
                        "{dir} already holds a run; resume it with `fergpu train --resume {dir}`, \
                         train into another --out folder, or pass --overwrite to replace it",
                        dir = folder.path().display()
                    )));
                }
                None
            }
        };
        let spec = model_of(settings, resumed.as_ref().map(|r| &r.ck))?;
        let batch = settings.run.batch_size.min(splits.train.len().max(1));
        Plan::new(&spec, 1)?.check_batch(batch, &be.memory_limits(), device)?;
        if let Some(r) = &resumed {
            let done = r.state.train.epoch;
            if settings.schedule.epochs < done {
                return Err(Error::Config(format!(
                    "--epochs {} is fewer than the {done} epochs {} has already run",
                    settings.schedule.epochs,
                    folder.path().display()
                )));
            }
        }

        // From here on the folder is ours.
        folder.create()?;
        let lock = folder.lock()?;
        if matches!(start, Start::New { overwrite: true }) {
            folder.clear_run()?;
        }
        let progress = Progress::new(settings.run.quiet);
        let opts = TrainerOptions {
            batch,
            class_weight: settings.loss.class_weight,
            label_smoothing: settings.loss.label_smoothing as f32,
            seed: settings.run.seed,
            augment: settings.augment.augment,
            warp: settings.augment.warp(),
            optimizer: OptimizerConfig {
                kind: settings.optimizer.optimizer,
                momentum: settings.optimizer.momentum,
                nesterov: settings.optimizer.nesterov,
                weight_decay: settings.optimizer.weight_decay,
                eps: settings.optimizer.adam_eps,
                ..OptimizerConfig::default()
            },
            warmup_epochs: settings.schedule.warmup,
            // A live bar shows the running loss and accuracy: one small readback a second.
            live_stats: progress.is_live().then_some(Duration::from_secs(1)),
        };
        let max_eval = splits.val.len().max(splits.test.len());
        // Where training stands: fresh weights, or the checkpoint and state of a resumed run.
        let (trainer, history) = match resumed {
            None => {
                let plan = Plan::new(&spec, 1)?;
                let params = plan.init_params(settings.run.seed);
                let trainer = Trainer::new(be, spec.clone(), &params, &splits.train, &opts)?;
                let schedule = LrSchedule::parse(&settings.schedule.lr_schedule)?;
                let history = History {
                    scheduler: Scheduler::new(
                        schedule,
                        settings.optimizer.lr,
                        settings.schedule.epochs,
                    ),
                    early: EarlyStopping::new(settings.schedule.patience),
                    records: Vec::new(),
                    seconds_before: 0.0,
                    last_good: Weights {
                        params,
                        running: plan.init_running(),
                    },
                    best: None,
                };
                (trainer, history)
            }
            Some(Resumed { ck, state }) => {
                let optimizer = ck.optimizer.as_ref().expect("checked by resume_point");
                let trainer = Trainer::resume(
                    be,
                    spec.clone(),
                    &ck.params,
                    &ck.running,
                    &splits.train,
                    &opts,
                    optimizer,
                    state.train.clone(),
                )?;
                let mut records = folder.read_metrics()?;
                records.truncate(state.train.epoch);
                let best = (state.early.best().is_some())
                    .then(|| folder.load_best().map(|b| Weights::of(&b)))
                    .transpose()?;
                eprintln!(
                    "resuming {} at epoch {} batch {}",
                    folder.path().display(),
                    state.train.epoch + 1,
                    state.train.next_batch
                );
                let history = History {
                    scheduler: state.scheduler,
                    early: state.early,
                    records,
                    seconds_before: state.seconds,
                    last_good: Weights::of(&ck),
                    best,
                };
                (trainer, history)
            }
        };
        let mut run = Run {
            be,
            settings,
            splits,
            cancel,
            folder,
            _lock: lock,
            progress,
            device: device.to_string(),
            evaluator: Evaluator::new(be, &spec, &history.last_good.params, max_eval)?,
            trainer,
            val: DeviceSet::new(be, &splits.val),
            scheduler: history.scheduler,
            early: history.early,
            records: history.records,
            seconds_before: history.seconds_before,
            last_good: history.last_good,
            best: history.best,
        };
        run.write_config()?;
        Ok(run)
    }

    /// `config.json`, rewritten on resume too: `--resume DIR --epochs N` changes the run's
    /// length, and the device may differ.
    fn write_config(&mut self) -> Result<()> {
        let record = RunRecord {
            adapter: self.device.clone(),
            fergpu_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: option_env!("FERGPU_GIT_COMMIT").unwrap_or("unknown").into(),
            train_images: self.splits.train.len(),
            val_images: self.splits.val.len(),
            test_images: self.splits.test.len(),
            parameters: self.trainer.plan().num_params,
        };
        let mut settings = self.settings.clone();
        settings.run.out = Some(self.folder.path().to_path_buf());
        self.folder.write_config(&settings, &record)
    }
}

/// Every split must have images; an empty one is named with the flag that selects it.
fn check_splits(s: &Settings, train: &Dataset, val: &Dataset, test: &Dataset) -> Result<()> {
    let d = &s.data;
    for (what, flag, splits, set) in [
        ("training", "--train-split", &d.train_split, train),
        ("validation", "--val-split", &d.val_split, val),
        ("test", "--test-split", &d.test_split, test),
    ] {
        if set.is_empty() {
            let names: Vec<&str> = splits.iter().map(|u| u.name()).collect();
            return Err(Error::Config(format!(
                "the {what} split ({}) has no images in this data; choose splits that have \
                 rows with {flag} (Training, PublicTest, PrivateTest)",
                names.join(",")
            )));
        }
    }
    Ok(())
}

/// The folder's last checkpoint and resume state; a folder without them cannot resume.
fn resume_point(folder: &RunFolder) -> Result<Resumed> {
    let path = folder.last_checkpoint_path();
    if !folder.can_resume() {
        return Err(Error::Config(format!(
            "{} has no checkpoint to resume from ({} is missing)",
            folder.path().display(),
            path.display()
        )));
    }
    let ck = folder.load_last()?;
    let bad = |problem: &str| Error::BadCheckpoint {
        path: path.clone(),
        problem: problem.into(),
    };
    if ck.optimizer.is_none() {
        return Err(bad("no optimizer state to resume from"));
    }
    let state: ResumeState = serde_json::from_str(
        ck.train_state
            .as_deref()
            .ok_or_else(|| bad("no training state to resume from"))?,
    )
    .map_err(|e| bad(&format!("training state: {e}")))?;
    Ok(Resumed { ck, state })
}

/// The model to train: the settings' (a preset or a model file), or on resume the
/// checkpoint's, which must be the same model the settings name.
fn model_of(settings: &Settings, resumed: Option<&Checkpoint>) -> Result<ModelSpec> {
    let m = &settings.model;
    let named = ModelSpec::resolve(&m.model, m.activation, m.dense_activation);
    let Some(ck) = resumed else {
        return named;
    };
    match named {
        Ok(spec) if spec.layers != ck.spec.layers => Err(Error::Config(format!(
            "the last checkpoint holds model '{}', but the run's config.json names '{}' (with \
             other layers); the folder mixes two runs: start a new run with --out",
            ck.spec.name, m.model
        ))),
        // The same model, or a model file that is gone: the checkpoint knows the layers.
        _ => Ok(ck.spec.clone()),
    }
}

/// The part of a [`Run`] that differs between a fresh start and a resumed one.
struct History {
    scheduler: Scheduler,
    early: EarlyStopping,
    records: Vec<EpochRecord>,
    seconds_before: f64,
    last_good: Weights,
    best: Option<Weights>,
}
