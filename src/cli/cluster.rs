//! `fergpu sweep|cv` with `--plan`, `--task [I]` or `--collect`: an experiment run by a
//! scheduler, one task per array index (see [`crate::experiment::plan`]).

use super::Outcome;
use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::experiment::plan::{absolute, Plan, PlanKind, K8S_FILE, SLURM_FILE};
use crate::experiment::runner::{cv_text, CvConfig};
use crate::experiment::tasks::{self, Collected};
use crate::experiment::RunSpec;
use crate::run::ExperimentFolder;
use crate::settings::{Key, Settings};
use std::path::{Path, PathBuf};

/// The settings a task may set beside its plan's: where and how it runs, nothing that
/// changes what it computes.
const TASK_FLAGS: [&str; 5] = ["adapter", "gpu_backend", "threads", "autotune", "quiet"];

/// The experiment folder `--out` names; the staged commands need one.
fn experiment_dir(settings: &Settings, what: &str) -> Result<PathBuf> {
    let dir = settings.run.out.as_deref().ok_or_else(|| {
        Error::Config(format!(
            "{what} needs --out, the experiment's folder (where --plan wrote plan.json)"
        ))
    })?;
    absolute(dir)
}

/// Settings ready to plan: the experiment folder and the data file as absolute paths (a
/// scheduler starts each task in a folder of its own).
fn plannable(mut settings: Settings, default_dir: PathBuf) -> Result<(Settings, PathBuf)> {
    let dir = absolute(settings.run.out.as_deref().unwrap_or(&default_dir))?;
    settings.run.out = Some(dir.clone());
    if let Some(data) = &settings.data.data {
        if data != Path::new("-") && data != Path::new("/dev/stdin") {
            settings.data.data = Some(absolute(data)?);
        } else {
            return Err(Error::Config(
                "--plan: the tasks read the data themselves, from a file; --data - (a stream) \
                 cannot be planned"
                    .into(),
            ));
        }
    }
    Ok((settings, dir))
}

/// This program, for the scheduler files to start.
fn this_program() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::io(Path::new("fergpu"), e))?;
    Ok(std::fs::canonicalize(&exe).unwrap_or(exe))
}

/// Says what `--plan` wrote and the commands that run it.
fn announce(plan: &Plan, dir: &Path) {
    let command = plan.kind.command();
    let d = dir.display();
    eprintln!(
        "planned {} tasks (0 to {}) in {d}; run them on a cluster with\n  sbatch {d}/{SLURM_FILE}\n\
         or `kubectl apply -f {d}/{K8S_FILE}` (set its image first), or one by one with\n  \
         fergpu {command} --out {d} --task I\nthen write the tables with\n  fergpu {command} \
         --out {d} --collect",
        plan.tasks.len(),
        plan.tasks.len() - 1
    );
}

/// `fergpu sweep GRID --plan`.
pub(super) fn plan_sweep(
    specs: &[RunSpec],
    settings: Settings,
    default_dir: PathBuf,
) -> Result<Outcome> {
    let (settings, dir) = plannable(settings, default_dir)?;
    let folder = ExperimentFolder::new(&dir);
    let plan = tasks::plan_sweep(&settings, specs, &folder, &this_program()?)?;
    announce(&plan, &dir);
    Ok(Outcome::Done)
}

/// `fergpu cv --plan`.
pub(super) fn plan_cv(cv: &CvConfig, settings: Settings, default_dir: PathBuf) -> Result<Outcome> {
    let (settings, dir) = plannable(settings, default_dir)?;
    let all = settings.data.load_all()?;
    let folder = ExperimentFolder::new(&dir);
    let plan = tasks::plan_cv(&settings, cv, &all, &folder, &this_program()?)?;
    announce(&plan, &dir);
    Ok(Outcome::Done)
}

/// Refuses the settings flags given beside `--task` or `--collect` that the plan owns.
fn check_given(given: &[Key], allowed: &[&str], stage: &str) -> Result<Vec<Key>> {
    let mut keep = Vec::new();
    for k in given {
        if k.field == "out" {
            continue;
        }
        if !allowed.contains(&k.field) {
            let allowed: Vec<String> = allowed
                .iter()
                .map(|f| format!("--{}", f.replace('_', "-")))
                .collect();
            return Err(Error::Config(format!(
                "{}: the plan sets every training setting; with {stage} only {} may be given",
                k.flag(),
                if allowed.is_empty() {
                    "--out".to_string()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        keep.push(*k);
    }
    Ok(keep)
}

/// `fergpu sweep|cv --out DIR --task [I]`.
pub(super) fn task(
    kind: PlanKind,
    index: Option<usize>,
    cli: &Settings,
    matches: &clap::ArgMatches,
    cancel: &Cancel,
) -> Result<Outcome> {
    let dir = experiment_dir(cli, "--task")?;
    let given = Settings::given_on_command_line(matches);
    let device = check_given(&given, &TASK_FLAGS, "--task")?;
    let plan = Plan::read(&dir, kind)?;
    let index = crate::experiment::plan::task_index(index, |k| std::env::var(k).ok())?;
    let folder = ExperimentFolder::new(&dir);
    let adjust = |cfg: &mut Settings| cfg.apply_command_line(cli, &device);
    let name = &plan.task(index)?.name;
    match tasks::run_task(&plan, index, &folder, &adjust, cancel)? {
        Some(s) => {
            println!(
                "task {index} ({name}): test {:.2}%  macro-F1 {:.4}  best epoch {}",
                100.0 * s.test_accuracy,
                s.macro_f1,
                s.best_epoch
            );
            Ok(Outcome::Done)
        }
        None => {
            eprintln!(
                "task {index} ({name}) stopped after saving; it resumes when started again \
                 (re-queued, or `fergpu {} --out {} --task {index}`)",
                kind.command(),
                dir.display()
            );
            Ok(Outcome::Interrupted)
        }
    }
}

/// `fergpu sweep|cv --out DIR --collect`.
pub(super) fn collect(
    kind: PlanKind,
    cli: &Settings,
    matches: &clap::ArgMatches,
) -> Result<Outcome> {
    let dir = experiment_dir(cli, "--collect")?;
    check_given(
        &Settings::given_on_command_line(matches),
        &["quiet"],
        "--collect",
    )?;
    let plan = Plan::read(&dir, kind)?;
    let folder = ExperimentFolder::new(&dir);
    let c = tasks::collect(&plan)?;
    tasks::write_tables(&plan, &c, &folder)?;
    print_results(&plan, &c);
    if c.unfinished.is_empty() {
        return Ok(Outcome::Done);
    }
    let list: Vec<String> = c
        .unfinished
        .iter()
        .map(|(i, name, why)| format!("  task {i} ({name}): {why}"))
        .collect();
    Err(Error::Config(format!(
        "{} of {} tasks finished; the tables hold those. Not counted:\n{}\nsubmit the plan \
         again (finished tasks are skipped, stopped ones resume), then collect again",
        c.finished.len(),
        plan.tasks.len(),
        list.join("\n")
    )))
}

/// The finished tasks, as the local command prints them.
fn print_results(plan: &Plan, c: &Collected) {
    match plan.kind {
        PlanKind::Sweep => {
            // Best first, as the local sweep prints them.
            let mut sorted: Vec<_> = c.finished.iter().collect();
            sorted.sort_by(|x, y| y.1.test_accuracy.total_cmp(&x.1.test_accuracy));
            for (i, s) in sorted {
                println!(
                    "{:<40} test {:>6.2}%  macro-F1 {:.4}  best epoch {:>3}  {:>7.1} s",
                    plan.tasks[*i].name,
                    100.0 * s.test_accuracy,
                    s.macro_f1,
                    s.best_epoch,
                    s.wall_seconds
                );
            }
        }
        PlanKind::Cv => {
            let results = tasks::fold_results(plan, c);
            if !results.is_empty() {
                print!("{}", cv_text(&results));
            }
        }
    }
}
