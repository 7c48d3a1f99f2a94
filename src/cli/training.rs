//! `fergpu train`, `cv` and `sweep`: the settings from defaults, a recipe file and the flags
//! given, or from a run folder on `--resume`; a stop handler; the library's run.

use super::{CvArgs, Outcome, SweepArgs, TrainArgs};
use crate::cancel::Cancel;
use crate::error::{Error, Result};
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
    if settings.run.out.is_none() {
        let folder = RunFolder::timestamped(&settings.model_name());
        settings.run.out = Some(folder.path().to_path_buf());
    }
    let cancel = Cancel::new();
    install_stop_handler(&cancel);
    let outcome = run::train(&settings, start, &cancel)?;
    Ok(if outcome.interrupted {
        Outcome::Interrupted
    } else {
        Outcome::Done
    })
}

/// `fergpu cv`.
pub(super) fn cv(a: CvArgs, matches: &clap::ArgMatches) -> Result<Outcome> {
    let settings = settings_from(&a.settings, a.config.as_deref(), matches)?;
    let folder = ExperimentFolder::new(settings.run.out.clone().unwrap_or_else(|| {
        RunFolder::timestamped(&format!("cv-{}", settings.model_name()))
            .path()
            .to_path_buf()
    }));
    let cancel = Cancel::new();
    install_stop_handler(&cancel);
    let all = settings.data.load_all()?;
    let cv = runner::CvConfig {
        folds: a.folds,
        shuffle: a.shuffle.then_some(settings.run.seed),
        stratified: a.stratified,
        rows: a.rows,
        val: a.cv_val,
    };
    let results = runner::cross_validate(&settings, &cv, &all, &folder, &cancel)?;
    if results.is_empty() {
        return Err(Error::Config("no fold finished".into()));
    }
    print!("{}", runner::cv_text(&results));
    eprintln!("wrote {}", folder.cv_html_path().display());
    if results.len() < a.folds {
        eprintln!(
            "interrupted after {} of {} folds; run the same command again to continue",
            results.len(),
            a.folds
        );
        return Ok(Outcome::Interrupted);
    }
    Ok(Outcome::Done)
}

/// `fergpu sweep`.
pub(super) fn sweep(a: SweepArgs, matches: &clap::ArgMatches) -> Result<Outcome> {
    let specs = load_grid(&a.grid)?;
    let settings = settings_from(&a.settings, a.config.as_deref(), matches)?;
    let stem = a
        .grid
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "grid".into());
    let folder = ExperimentFolder::new(
        settings
            .run
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(format!("sweep-{stem}"))),
    );
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
            "{} of {} runs finished; run the same command again to continue",
            results.len(),
            specs.len()
        );
        return Ok(Outcome::Interrupted);
    }
    Ok(Outcome::Done)
}
