//! Starting a run: every check that can fail runs before the run folder is touched, then the
//! folder is taken, and the trainer is built fresh or from the last checkpoint.

use super::origin::{check_reuse, data_fingerprint, Reuse};
use super::{History, ResumeState, Run, RunFolder, RunJob, Start, Weights};
use crate::backend::{Backend, MemoryLimits};
use crate::checkpoint::Checkpoint;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::{DeviceSet, Evaluator};
use crate::model::{ModelSpec, Plan};
use crate::report::progress::Progress;
use crate::run::RunRecord;
use crate::settings::{Settings, Splits};
use crate::train::{EarlyStopping, LrSchedule, Scheduler, Trainer, TrainerOptions};
use std::time::Duration;

/// What a resumed run picks up from its folder.
struct Resumed {
    ck: Checkpoint,
    state: ResumeState,
    /// The best epoch's checkpoint, once an epoch has ended.
    best: Option<Checkpoint>,
}

impl<'a, 'b, B: Backend> Run<'a, 'b, B> {
    /// Checks the splits, the model and the batch against the device, takes the folder, and
    /// builds the trainer (fresh, or from the folder's last checkpoint).
    pub(super) fn start(be: &'b B, device: &str, job: RunJob<'a>) -> Result<Self> {
        let RunJob {
            settings,
            splits,
            origin,
            start,
            cancel,
        } = job;
        let folder = match &settings.run.out {
            Some(dir) => RunFolder::new(dir),
            None => RunFolder::claim_timestamped("runs".as_ref(), &settings.model_name())?,
        };
        let Checked {
            spec,
            batch,
            resumed,
        } = check_start(
            settings,
            splits,
            origin,
            start,
            &folder,
            &be.memory_limits(),
            device,
        )?;

        // From here on the folder is ours.
        folder.create()?;
        let lock = folder.lock()?;
        folder.remove_stale_temps();
        if matches!(start, Start::New { overwrite: true }) {
            folder.clear_run()?;
        }
        let progress = Progress::new(settings.run.quiet);
        let opts = TrainerOptions {
            batch,
            // A live bar shows the running loss and accuracy: one small readback a second.
            live_stats: progress.is_live().then_some(Duration::from_secs(1)),
            ..settings.trainer_options()
        };
        // Where training stands: fresh weights, or the checkpoint and state of a resumed run.
        let (trainer, history) = match resumed {
            None => fresh(be, &spec, settings, splits, &opts)?,
            Some(r) => resume(be, &spec, &folder, splits, &opts, r)?,
        };
        let max_eval = splits.val.len().max(splits.test.len());
        let mut run = Run {
            be,
            settings,
            splits,
            origin,
            cancel,
            folder,
            _lock: lock,
            progress,
            device: device.to_string(),
            evaluator: Evaluator::new(be, &spec, &history.last_good.params, max_eval)?,
            trainer,
            val: DeviceSet::new(be, &splits.val),
            history,
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
            data_fingerprint: Some(data_fingerprint(self.splits)),
            experiment: self.origin.experiment.clone(),
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
    let t = &state.train;
    let finite = state.seconds.is_finite() && t.partial.iter().all(|x| x.is_finite());
    if !finite || state.seconds < 0.0 {
        return Err(bad(
            "training state holds a NaN, infinite or negative number",
        ));
    }
    let best = match state.early.best() {
        Some(_) => Some(folder.load_best()?),
        None => None,
    };
    Ok(Resumed { ck, state, best })
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

/// What the checks before a run found: the model, the batch, and where to resume (`None`
/// for a new run).
struct Checked {
    spec: ModelSpec,
    batch: usize,
    resumed: Option<Resumed>,
}

/// Every check that can fail before the run folder is touched: the splits, `--out` naming
/// a file, another run holding the folder, a run already there (new runs) or the resume
/// point (resumed ones), the model, the batch against the device's `limits`, and what a
/// resumed run continues from ([`check_resumed`]).
fn check_start(
    settings: &Settings,
    splits: &Splits,
    origin: &super::Origin,
    start: Start,
    folder: &RunFolder,
    limits: &MemoryLimits,
    device: &str,
) -> Result<Checked> {
    check_splits(settings, &splits.train, &splits.val, &splits.test)?;
    folder.check_is_folder()?;
    // Another run writing the folder now is the first thing to say (with its process).
    folder.check_not_locked()?;
    let resumed = match start {
        Start::Resume => Some(resume_point(folder)?),
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
    Plan::new(&spec, 1)?.check_batch(batch, limits, device)?;
    if let Some(r) = &resumed {
        check_resumed(settings, splits, origin, folder, &spec, batch, r)?;
    }
    Ok(Checked {
        spec,
        batch,
        resumed,
    })
}

/// A resumed run continues the run its folder records: the same settings (`--epochs` may
/// grow), data, experiment and fergpu version ([`check_reuse`]); its best checkpoint holds
/// its model; and its position lies within the epochs and batches asked for.
fn check_resumed(
    settings: &Settings,
    splits: &Splits,
    origin: &super::Origin,
    folder: &RunFolder,
    spec: &ModelSpec,
    batch: usize,
    r: &Resumed,
) -> Result<()> {
    check_reuse(
        folder,
        settings,
        origin,
        Reuse::Resume,
        "a run cannot resume on other data or settings. A fold of `fergpu cv` or a run of \
         `fergpu sweep` is continued by running that command again (it resumes the run); \
         otherwise start a new run with --out",
    )?;
    if let Some(best) = &r.best {
        if best.spec.layers != spec.layers {
            return Err(Error::Config(format!(
                "{} holds model '{}', but the run trains '{}' (other layers); the folder mixes \
                 two runs: start a new run with --out",
                folder.best_checkpoint_path().display(),
                best.spec.name,
                spec.name
            )));
        }
    }
    let done = r.state.train.epoch;
    if settings.schedule.epochs < done {
        return Err(Error::Config(format!(
            "--epochs {} is fewer than the {done} epochs {} has already run",
            settings.schedule.epochs,
            folder.path().display()
        )));
    }
    let batches = splits.train.len().div_ceil(batch);
    if r.state.train.next_batch > batches {
        return Err(Error::BadCheckpoint {
            path: folder.last_checkpoint_path(),
            problem: format!(
                "its training state stands at batch {} of an epoch of {batches} batches; the \
                 file is damaged or belongs to other data",
                r.state.train.next_batch
            ),
        });
    }
    Ok(())
}

/// A new run's trainer, on freshly initialised weights, and its empty history.
fn fresh<'b, B: Backend>(
    be: &'b B,
    spec: &ModelSpec,
    settings: &Settings,
    splits: &Splits,
    opts: &TrainerOptions,
) -> Result<(Trainer<'b, B>, History)> {
    let plan = Plan::new(spec, 1)?;
    let params = plan.init_params(settings.run.seed);
    let trainer = Trainer::new(be, spec.clone(), &params, &splits.train, opts)?;
    let schedule = LrSchedule::parse(&settings.schedule.lr_schedule)?;
    let history = History {
        scheduler: Scheduler::new(schedule, settings.optimizer.lr, settings.schedule.epochs),
        early: EarlyStopping::new(settings.schedule.patience),
        records: Vec::new(),
        seconds_before: 0.0,
        last_good: Weights {
            params,
            running: plan.init_running(),
        },
        best: None,
    };
    Ok((trainer, history))
}

/// A resumed run's trainer, from the folder's last checkpoint, and the history it had.
fn resume<'b, B: Backend>(
    be: &'b B,
    spec: &ModelSpec,
    folder: &RunFolder,
    splits: &Splits,
    opts: &TrainerOptions,
    Resumed { ck, state, best }: Resumed,
) -> Result<(Trainer<'b, B>, History)> {
    let optimizer = ck.optimizer.as_ref().expect("checked by resume_point");
    let trainer = Trainer::resume(
        be,
        spec.clone(),
        &ck.params,
        &ck.running,
        &splits.train,
        opts,
        optimizer,
        state.train.clone(),
    )?;
    let mut records = folder.read_metrics()?;
    records.truncate(state.train.epoch);
    let best = best.as_ref().map(Weights::of);
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
    Ok((trainer, history))
}
