//! Planned experiments, stage by stage (see [`super::plan`]): [`plan_sweep`] and
//! [`plan_cv`] write the plan, [`run_task`] trains one task of it, [`collect`] gathers the
//! finished tasks' results for the same tables a local `sweep` or `cv` writes.

use super::grid::RunSpec;
use super::plan::{Plan, PlanKind, PlanTask};
use super::runner::{
    apply_settings, cv_csv, cv_html, run_or_resume, run_result, write_sweep_tables, CvConfig,
    CvJobs, FoldResult,
};
use crate::cancel::Cancel;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::report::Summary;
use crate::run::origin::{check_reuse, Reuse};
use crate::run::{ExperimentFolder, ExperimentPart, Origin, RunFolder};
use crate::settings::{DataSettings, Settings, Splits};
use std::path::Path;

/// Writes the plan of a sweep of `specs` over `base` into `folder` (claimed for a sweep), with
/// the scheduler files that start `exe`; trains nothing. Each distinct data setting is
/// loaded once, to record what each task will train on.
pub fn plan_sweep(
    base: &Settings,
    specs: &[RunSpec],
    folder: &ExperimentFolder,
    exe: &Path,
) -> Result<Plan> {
    folder.claim("sweep", "")?;
    let mut loaded: Vec<(DataSettings, Splits)> = Vec::new();
    let mut tasks = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let cfg = apply_settings(base, spec, folder)?;
        let at = match loaded.iter().position(|(d, _)| *d == cfg.data) {
            Some(at) => at,
            None => {
                loaded.push((cfg.data.clone(), cfg.data.load()?));
                loaded.len() - 1
            }
        };
        let part = ExperimentPart {
            kind: "sweep".into(),
            plan: String::new(),
            part: spec.name.clone(),
        };
        tasks.push(task(
            i,
            spec.name.clone(),
            cfg,
            &loaded[at].1,
            part,
            Some(spec),
        ));
    }
    finish(PlanKind::Sweep, base, None, tasks, folder, exe)
}

/// Writes the plan of a cross-validation of `all` (one task per fold) into `folder`
/// (claimed for this folding), with the scheduler files that start `exe`; trains nothing.
pub fn plan_cv(
    base: &Settings,
    cv: &CvConfig,
    all: &Dataset,
    folder: &ExperimentFolder,
    exe: &Path,
) -> Result<Plan> {
    let jobs = CvJobs::new(base, cv, all, folder)?;
    folder.claim("cv", &cv.plan())?;
    let tasks = (0..jobs.len())
        .map(|i| {
            let job = jobs.job(i);
            task(
                i,
                format!("fold-{}", i + 1),
                job.cfg,
                &job.splits,
                job.part,
                None,
            )
        })
        .collect();
    finish(PlanKind::Cv, base, Some(cv.clone()), tasks, folder, exe)
}

/// Task `i` of a plan: its run's settings and what it trains on.
fn task(
    i: usize,
    name: String,
    settings: Settings,
    splits: &Splits,
    part: ExperimentPart,
    spec: Option<&RunSpec>,
) -> PlanTask {
    let origin = Origin::new(splits, Some(part.clone()));
    PlanTask {
        task: i,
        name,
        settings,
        images: origin.images,
        data_fingerprint: origin.data_fingerprint,
        part,
        spec: spec.cloned(),
    }
}

/// The plan of `tasks`, written into `folder`.
fn finish(
    kind: PlanKind,
    base: &Settings,
    cv: Option<CvConfig>,
    tasks: Vec<PlanTask>,
    folder: &ExperimentFolder,
    exe: &Path,
) -> Result<Plan> {
    let plan = Plan {
        kind,
        fergpu_version: env!("CARGO_PKG_VERSION").into(),
        base: base.clone(),
        cv,
        tasks,
    };
    plan.write(folder.path(), exe)?;
    Ok(plan)
}

/// Trains task `index` of `plan` into its run folder in `folder`, as the local command
/// would: skipped when it finished already (with the plan's settings and data), resumed when
/// it stopped. `adjust` sets what may differ from the plan on the machine the task lands on
/// (the device flags). The data is loaded and must still be the plan's. `None` when
/// `cancel` stopped it.
pub fn run_task(
    plan: &Plan,
    index: usize,
    folder: &ExperimentFolder,
    adjust: &dyn Fn(&mut Settings) -> Result<()>,
    cancel: &Cancel,
) -> Result<Option<Summary>> {
    let task = plan.task(index)?;
    let experiment = match plan.kind {
        PlanKind::Sweep => String::new(),
        PlanKind::Cv => task.part.plan.clone(),
    };
    folder.check_claimed(plan.kind.command(), &experiment)?;
    let splits = match (plan.kind, &plan.cv) {
        (PlanKind::Sweep, _) => task.settings.data.load()?,
        (PlanKind::Cv, Some(cv)) => {
            let all = plan.base.data.load_all()?;
            CvJobs::new(&plan.base, cv, &all, folder)?.job(index).splits
        }
        (PlanKind::Cv, None) => {
            return Err(Error::Config(
                "the plan is a cross-validation without its folding; plan it again".into(),
            ))
        }
    };
    let origin = Origin::new(&splits, Some(task.part.clone()));
    if origin != task.origin() {
        return Err(Error::Config(format!(
            "task {index}: the data is not what the plan recorded ({:?} images, fingerprint {}; \
             now {:?}, {}): the data file changed since the experiment was planned; plan it \
             again into a new --out folder",
            task.images, task.data_fingerprint, origin.images, origin.data_fingerprint
        )));
    }
    let mut cfg = task.settings.clone();
    adjust(&mut cfg)?;
    cfg.validate()?;
    eprintln!(
        "task {index} of {}: {} ({})",
        plan.tasks.len(),
        task.name,
        task.part
    );
    run_or_resume(&cfg, &run_folder(task), &splits, task.part.clone(), cancel)
}

/// A task's run folder.
fn run_folder(task: &PlanTask) -> RunFolder {
    RunFolder::new(
        task.settings
            .run
            .out
            .clone()
            .expect("a planned run has its folder"),
    )
}

/// What [`collect`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Collected {
    /// The finished tasks' numbers and summaries, in task order.
    pub finished: Vec<(usize, Summary)>,
    /// The others: task number, name, and why it is not counted.
    pub unfinished: Vec<(usize, String, String)>,
}

/// Reads each task's run folder, writing nothing: a task counts when its run finished with
/// the plan's settings and data.
pub fn collect(plan: &Plan) -> Result<Collected> {
    let mut c = Collected {
        finished: Vec::new(),
        unfinished: Vec::new(),
    };
    for task in &plan.tasks {
        let run = run_folder(task);
        let why = if !run.config_path().exists() {
            Some("not started".to_string())
        } else if !run.is_finished() {
            Some(format!(
                "started, not finished (running, stopped or failed: see logs/task-{}.out)",
                task.task
            ))
        } else {
            let hint = "it is not counted";
            check_reuse(
                &run,
                &task.settings,
                &task.origin(),
                Reuse::Experiment,
                hint,
            )
            .err()
            .map(|e| e.to_string())
        };
        match why {
            Some(why) => c.unfinished.push((task.task, task.name.clone(), why)),
            None => c.finished.push((task.task, run.read_summary()?)),
        }
    }
    Ok(c)
}

/// Writes the tables a local run of `plan` writes (`results.csv`/`.html` for a sweep,
/// `cv.csv`/`.html` for a cross-validation) from the finished tasks.
pub fn write_tables(plan: &Plan, c: &Collected, folder: &ExperimentFolder) -> Result<()> {
    match plan.kind {
        PlanKind::Sweep => {
            let results: Vec<_> = c
                .finished
                .iter()
                .filter_map(|(i, summary)| {
                    let spec = plan.tasks[*i].spec.as_ref()?;
                    Some(run_result(spec, summary.clone()))
                })
                .collect();
            write_sweep_tables(folder, &results, plan.tasks.len())
        }
        PlanKind::Cv => {
            let results = fold_results(plan, c);
            if results.is_empty() {
                return Ok(());
            }
            folder.write_cv(&cv_csv(&results), &cv_html(&results))
        }
    }
}

/// The finished folds of a cross-validation plan, as the local `cv` reports them.
pub fn fold_results(plan: &Plan, c: &Collected) -> Vec<FoldResult> {
    c.finished
        .iter()
        .map(|(i, summary)| {
            let t = &plan.tasks[*i];
            FoldResult {
                fold: i + 1,
                train_rows: t.images[0],
                test_rows: t.images[2],
                summary: summary.clone(),
            }
        })
        .collect()
}
