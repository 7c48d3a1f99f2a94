//! `fergpu train`, `cv` and `sweep`: the settings from defaults, a recipe file and the flags
//! given, or from a run folder on `--resume`; a stop handler; the library's run.

use super::{cluster, CvArgs, Outcome, SweepArgs, TrainArgs};
use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::experiment::plan::PlanKind;
use crate::experiment::{load_grid, runner};
use crate::run::{self, ExperimentFolder, RunFolder, Start};
use crate::settings::{Settings, RESUMABLE};
use std::path::{Path, PathBuf};

/// Status of a process ended by a second Ctrl-C (128 + SIGINT).
const EXIT_NOW: i32 = 130;

/// Stops `cancel`'s holders on Ctrl-C, SIGTERM or SIGHUP: the first asks the run to finish
/// its batch and save; a second exits at once.
fn install_stop_handler(cancel: &Cancel) {
    let cancel = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        // The handler cannot tell which signal came; the message names both.
        if cancel.request() > 0 {
            eprintln!("\nsecond Ctrl-C / SIGTERM: exiting now");
            std::process::exit(EXIT_NOW);
        }
        eprintln!(
            "\nCtrl-C / SIGTERM: finishing the current batch and saving (press Ctrl-C again to \
             exit now)"
        );
    });
}

/// Defaults, then the recipe file if any, then the flags given on the command line.
fn settings_from(
    cli: &Settings,
    config: Option<&Path>,
    matches: &clap::ArgMatches,
) -> Result<Settings> {
    let mut s = Settings::default();
    if let Some(path) = config {
        s.load_file(path)?;
    }
    s.apply_command_line(cli, &Settings::given_on_command_line(matches))?;
    s.validate()?;
    Ok(s)
}

/// A run folder's saved settings with the flags that may change on resume; any other flag
/// is an error rather than silently ignored.
fn resumed_settings(dir: &Path, cli: &Settings, matches: &clap::ArgMatches) -> Result<Settings> {
    let folder = RunFolder::new(dir);
    let mut saved = folder.read_settings().map_err(|e| match e {
        Error::Io { .. } => Error::Config(format!(
            "cannot resume {}: {e} (a run folder holds config.json and checkpoints)",
            dir.display()
        )),
        other => other,
    })?;
    let given = Settings::given_on_command_line(matches);
    if let Some(k) = given.iter().find(|k| !RESUMABLE.contains(&k.field)) {
        let allowed: Vec<String> = RESUMABLE
            .iter()
            .map(|f| format!("--{}", f.replace('_', "-")))
            .collect();
        return Err(Error::Config(format!(
            "{} cannot change when resuming: {} was started with {} = {} (its config.json). Only \
             {} may change; to train with other settings, start a new run with --out (e.g. \
             --config {} to begin from its settings)",
            k.flag(),
            dir.display(),
            k.field,
            saved.get(*k),
            allowed.join(", "),
            folder.config_path().display()
        )));
    }
    saved.apply_command_line(cli, &given)?;
    saved.validate()?;
    Ok(saved)
}

/// `fergpu train`.
pub(super) fn train(a: TrainArgs, matches: &clap::ArgMatches) -> Result<Outcome> {
    let (mut settings, start) = match &a.resume {
        Some(dir) => (resumed_settings(dir, &a.settings, matches)?, Start::Resume),
        None => (
            settings_from(&a.settings, a.config.as_deref(), matches)?,
            Start::New {
                overwrite: a.overwrite,
            },
        ),
    };
    // A default folder is created now, so that two runs started in the same second never
    // share one; it is removed again if the run fails before writing anything.
    let claimed = match settings.run.out {
        Some(_) => None,
        None => {
            let folder = RunFolder::claim_timestamped(RUNS.as_ref(), &settings.model_name())?;
            settings.run.out = Some(folder.path().to_path_buf());
            Some(folder)
        }
    };
    let cancel = Cancel::new();
    install_stop_handler(&cancel);
    let outcome = run::train(&settings, start, &cancel).inspect_err(|_| {
        if let Some(folder) = &claimed {
            // Only an empty folder goes; a run that wrote files keeps them.
            let _ = std::fs::remove_dir(folder.path());
        }
    })?;
    Ok(if outcome.interrupted {
        Outcome::Interrupted
    } else {
        Outcome::Done
    })
}

/// The folder of runs without `--out`.
const RUNS: &str = "runs";

/// `fergpu cv`.
pub(super) fn cv(a: CvArgs, matches: &clap::ArgMatches) -> Result<Outcome> {
    if let Some(index) = a.stage.task {
        let cancel = Cancel::new();
        install_stop_handler(&cancel);
        return cluster::task(PlanKind::Cv, index, &a.settings, matches, &cancel);
    }
    if a.stage.collect {
        return cluster::collect(PlanKind::Cv, &a.settings, matches);
    }
    let settings = settings_from(&a.settings, a.config.as_deref(), matches)?;
    if a.stage.plan {
        let cv = cv_config(&a, &settings);
        let dir = PathBuf::from(RUNS).join(format!("cv-{}", settings.model_name()));
        return cluster::plan_cv(&cv, settings, dir);
    }
    let cancel = Cancel::new();
    install_stop_handler(&cancel);
    let all = settings.data.load_all()?;
    // A default folder is created now (never shared with a cv started in the same second).
    let (dir, claimed) = match &settings.run.out {
        Some(dir) => (dir.clone(), false),
        None => {
            let name = format!("cv-{}", settings.model_name());
            let f = RunFolder::claim_timestamped(RUNS.as_ref(), &name)?;
            (f.path().to_path_buf(), true)
        }
    };
    let folder = ExperimentFolder::new(dir);
    let cv = cv_config(&a, &settings);
    let results =
        runner::cross_validate(&settings, &cv, &all, &folder, &cancel).inspect_err(|_| {
            if claimed {
                // Only an empty folder goes (a plan refused before any fold ran).
                let _ = std::fs::remove_dir(folder.path());
            }
        })?;
    if !results.is_empty() {
        print!("{}", runner::cv_text(&results));
        eprintln!("wrote {}", folder.cv_html_path().display());
    }
    if results.len() < a.folds {
        eprintln!(
            "interrupted after {} of {} folds; continue the cross-validation (finished folds \
             are kept, a stopped one resumes) with the same command:\n  {}",
            results.len(),
            a.folds,
            continue_command(folder.path())
        );
        return Ok(Outcome::Interrupted);
    }
    Ok(Outcome::Done)
}

/// How `fergpu cv`'s flags fold the data.
fn cv_config(a: &CvArgs, settings: &Settings) -> runner::CvConfig {
    runner::CvConfig {
        folds: a.folds,
        shuffle: a.shuffle.then_some(settings.run.seed),
        stratified: a.stratified,
        rows: a.rows.clone(),
        val: a.cv_val.clone(),
    }
}

/// This process's command line, with `--out DIR` added when it was not given (a default
/// folder is new each time): the command that continues an experiment in `dir`. Arguments
/// a shell would split or expand are single-quoted, control characters escaped.
fn continue_command(dir: &Path) -> String {
    let mut args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if !args.iter().any(|a| a == "--out" || a.starts_with("--out=")) {
        args.push("--out".into());
        args.push(dir.display().to_string());
    }
    let quoted: Vec<String> = args.iter().map(|a| shell_word(a)).collect();
    format!("fergpu {}", quoted.join(" "))
}

/// `word` as one shell word: as it is when it holds only safe characters, else quoted.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        let quoted = word.replace('\'', "'\\''");
        format!("'{}'", crate::report::printable(&quoted))
    }
}

/// `fergpu sweep`.
pub(super) fn sweep(a: SweepArgs, matches: &clap::ArgMatches) -> Result<Outcome> {
    if !a.adapters.is_empty() && (a.stage.plan || a.stage.task.is_some() || a.stage.collect) {
        return Err(Error::Config(
            "--adapters runs a sweep's configurations side by side on this machine; a planned \
             sweep gives each task its device with --adapter instead"
                .into(),
        ));
    }
    if let Some(index) = a.stage.task {
        let cancel = Cancel::new();
        install_stop_handler(&cancel);
        return cluster::task(PlanKind::Sweep, index, &a.settings, matches, &cancel);
    }
    if a.stage.collect {
        return cluster::collect(PlanKind::Sweep, &a.settings, matches);
    }
    let grid = a
        .grid
        .as_deref()
        .expect("clap requires the grid without --task/--collect");
    let specs = load_grid(grid)?;
    let settings = settings_from(&a.settings, a.config.as_deref(), matches)?;
    let stem = grid
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "grid".into());
    let default_dir = PathBuf::from(RUNS).join(format!("sweep-{stem}"));
    if a.stage.plan {
        return cluster::plan_sweep(&specs, settings, default_dir);
    }
    let folder = ExperimentFolder::new(settings.run.out.clone().unwrap_or(default_dir));
    let cancel = Cancel::new();
    install_stop_handler(&cancel);
    let splits = settings.data.load()?;
    let results = runner::sweep(&settings, &specs, &splits, &folder, &a.adapters, &cancel)?;
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
    eprintln!("wrote {}", folder.results_html_path().display());
    if results.len() < specs.len() {
        eprintln!(
            "{} of {} runs finished; continue the sweep (finished runs are kept, stopped ones \
             resume) with the same command:\n  {}",
            results.len(),
            specs.len(),
            continue_command(folder.path())
        );
        return Ok(Outcome::Interrupted);
    }
    Ok(Outcome::Done)
}
