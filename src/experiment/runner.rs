//! Running experiments: one training run per cross-validation fold (`fergpu cv`) or per
//! sweep configuration (`fergpu sweep`), each into its own run folder, with the tables that
//! compare them.

use super::folds::{cv_summary, kfold, stratified_kfold};
use super::grid::RunSpec;
use super::results::{results_csv, results_html, RunResult};
use crate::cancel::Cancel;
use crate::data::{Dataset, Usage};
use crate::error::{Error, Result};
use crate::metrics::Confusion;
use crate::report::{self, escape_html, Summary};
use crate::run::{train_on, ExperimentFolder, RunFolder, Start};
use crate::settings::{Settings, Splits};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// How `fergpu cv` splits the data.
#[derive(Clone, Debug)]
pub struct CvConfig {
    /// Number of folds (≥ 2).
    pub folds: usize,
    /// Shuffle rows before folding, with this seed (scikit-learn's `shuffle=True`).
    pub shuffle: Option<u64>,
    /// Keep each class's share in every fold (`StratifiedKFold`).
    pub stratified: bool,
    /// Rows that take part (default Training + PrivateTest).
    pub rows: Vec<Usage>,
    /// Split used for validation (checkpoint choice, early stopping) in every fold; kept out
    /// of the folds. Default PublicTest. When it is one of `rows` or has no rows, each fold's
    /// held-out part is used for validation too.
    pub val: Vec<Usage>,
}

/// One fold's result.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldResult {
    /// 1-based fold number.
    pub fold: usize,
    /// Rows trained on and held out.
    pub train_rows: usize,
    /// Rows held out (tested on).
    pub test_rows: usize,
    /// The run's summary (test = the held-out fold).
    pub summary: Summary,
}

/// Trains one model per fold of `all` into the experiment folder's `fold-<k>` folders and
/// writes the cross-validation tables there. Returns the per-fold results (fewer than
/// `folds` if `cancel` stopped it).
pub fn cross_validate(
    base: &Settings,
    cv: &CvConfig,
    all: &Dataset,
    folder: &ExperimentFolder,
    cancel: &Cancel,
) -> Result<Vec<FoldResult>> {
    let rows = all.rows_of(&cv.rows);
    let data = all.subset(&rows);
    let folds = if cv.stratified {
        stratified_kfold(&data.labels, cv.folds, cv.shuffle)?
    } else {
        kfold(data.len(), cv.folds, cv.shuffle)?
    };
    let fixed_val = if cv.val.iter().any(|u| cv.rows.contains(u)) {
        None
    } else {
        Some(all.split(&cv.val)).filter(|v| !v.is_empty())
    };
    folder.create()?;
    let mut results = Vec::new();
    for (i, fold) in folds.iter().enumerate() {
        let test = data.subset(&fold.test);
        let splits = Splits {
            train: data.subset(&fold.train),
            val: fixed_val.clone().unwrap_or_else(|| test.clone()),
            test,
        };
        let mut cfg = base.clone();
        let run = folder.fold(i + 1);
        cfg.run.out = Some(run.path().to_path_buf());
        eprintln!(
            "fold {}/{}: training on {} rows, testing on {}",
            i + 1,
            folds.len(),
            splits.train.len(),
            splits.test.len()
        );
        let Some(summary) = run_or_resume(&cfg, &run, &splits, cancel)? else {
            break;
        };
        eprintln!(
            "fold {}: test accuracy {:.2}%  macro-F1 {:.4}",
            i + 1,
            100.0 * summary.test_accuracy,
            summary.macro_f1
        );
        results.push(FoldResult {
            fold: i + 1,
            train_rows: splits.train.len(),
            test_rows: splits.test.len(),
            summary,
        });
    }
    if !results.is_empty() {
        folder.write_cv(&cv_csv(&results), &cv_html(&results))?;
    }
    Ok(results)
}

/// Trains `cfg` on `splits` into `run` unless it already holds a finished run; resumes a
/// run left with a checkpoint, and starts over one that never saved one (the experiment owns
/// its folders). `None` when `cancel` stopped it.
fn run_or_resume(
    cfg: &Settings,
    run: &RunFolder,
    splits: &Splits,
    cancel: &Cancel,
) -> Result<Option<Summary>> {
    if run.is_finished() {
        eprintln!("{}: already finished, skipped", run.path().display());
        return run.read_summary().map(Some);
    }
    let start = if run.can_resume() {
        Start::Resume
    } else {
        Start::New { overwrite: true }
    };
    let outcome = train_on(cfg, splits, start, cancel)?;
    Ok(outcome.summary.filter(|_| !outcome.interrupted))
}

/// Mean and standard deviation lines for accuracy and macro-F1.
pub fn cv_text(results: &[FoldResult]) -> String {
    let mut s = String::from("fold  train  test  accuracy  macro-F1\n");
    for r in results {
        let _ = writeln!(
            s,
            "{:>4} {:>6} {:>5}  {:>7.2}%  {:>8.4}",
            r.fold,
            r.train_rows,
            r.test_rows,
            100.0 * r.summary.test_accuracy,
            r.summary.macro_f1
        );
    }
    let accs: Vec<f64> = results.iter().map(|r| r.summary.test_accuracy).collect();
    let f1s: Vec<f64> = results.iter().map(|r| r.summary.macro_f1).collect();
    let (am, asd) = cv_summary(&accs);
    let (fm, fsd) = cv_summary(&f1s);
    let _ = writeln!(
        s,
        "mean accuracy {:.2}% ± {:.2}  mean macro-F1 {fm:.4} ± {fsd:.4}",
        100.0 * am,
        100.0 * asd
    );
    s
}

/// `cv.csv`: one row per fold, then `mean` and `std` rows.
pub fn cv_csv(results: &[FoldResult]) -> String {
    let mut s = String::from("fold,train_rows,test_rows,test_acc,macro_f1,best_epoch,seconds\n");
    for r in results {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{}",
            r.fold,
            r.train_rows,
            r.test_rows,
            r.summary.test_accuracy,
            r.summary.macro_f1,
            r.summary.best_epoch,
            r.summary.wall_seconds
        );
    }
    let accs: Vec<f64> = results.iter().map(|r| r.summary.test_accuracy).collect();
    let f1s: Vec<f64> = results.iter().map(|r| r.summary.macro_f1).collect();
    let (am, asd) = cv_summary(&accs);
    let (fm, fsd) = cv_summary(&f1s);
    let _ = writeln!(s, "mean,,,{am},{fm},,");
    let _ = writeln!(s, "std,,,{asd},{fsd},,");
    s
}

/// `cv.html`: the per-fold table and the confusion matrix summed over folds.
pub fn cv_html(results: &[FoldResult]) -> String {
    let mut total = Confusion::default();
    let mut rows = String::new();
    for r in results {
        total.merge(&r.summary.confusion);
        let _ = writeln!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}%</td><td>{:.4}</td><td>{}</td><td>{:.1} s</td></tr>",
            r.fold,
            r.train_rows,
            r.test_rows,
            100.0 * r.summary.test_accuracy,
            r.summary.macro_f1,
            r.summary.best_epoch,
            r.summary.wall_seconds
        );
    }
    let title = escape_html(&format!("{}-fold cross-validation", results.len()));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
         <style>body{{font-family:'DejaVu Sans',Verdana,sans-serif;margin:2em;color:#222}}\
         table.folds td,table.folds th{{padding:0.2em 0.8em;text-align:right;border-bottom:1px solid #ddd}}</style>\n\
         </head>\n<body>\n<h1>{title}</h1>\n<pre>{}</pre>\n<table class=\"folds\">\n\
         <tr><th>fold</th><th>train rows</th><th>test rows</th><th>accuracy</th><th>macro-F1</th>\
         <th>best epoch</th><th>time</th></tr>\n{rows}</table>\n\
         <h2>Confusion matrix summed over folds (rows true, columns predicted)</h2>\n{}\n</body>\n</html>\n",
        escape_html(&cv_text(results)),
        report::confusion_table_fragment(&total)
    )
}

/// A sweep's base settings overridden by one [`RunSpec`], into its folder in `folder`.
pub fn apply_settings(
    base: &Settings,
    spec: &RunSpec,
    folder: &ExperimentFolder,
) -> Result<Settings> {
    let mut cfg = base.clone();
    cfg.run.out = Some(folder.run(&spec.name).path().to_path_buf());
    let in_run = |e: Error| Error::Config(format!("run '{}': {e}", spec.name));
    for (key, value) in &spec.settings {
        cfg.set(key, value.to_json()).map_err(in_run)?;
    }
    cfg.validate().map_err(in_run)?;
    Ok(cfg)
}

/// Runs every configuration of a sweep into its folder in `folder` (skipping finished ones,
/// resuming interrupted ones), spreading them over `adapters` (one run per adapter at a time;
/// empty: `base.device` for all), and writes the results tables.
pub fn sweep(
    base: &Settings,
    specs: &[RunSpec],
    splits: &Splits,
    folder: &ExperimentFolder,
    adapters: &[String],
    cancel: &Cancel,
) -> Result<Vec<RunResult>> {
    folder.create()?;
    let configs: Vec<Settings> = specs
        .iter()
        .map(|s| apply_settings(base, s, folder))
        .collect::<Result<_>>()?;
    let lanes: Vec<String> = if adapters.is_empty() {
        vec![base.device.adapter.clone()]
    } else {
        adapters.to_vec()
    };
    let next = Mutex::new(0usize);
    let done: Mutex<BTreeMap<usize, Result<Option<Summary>>>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for lane in &lanes {
            scope.spawn(|| loop {
                if cancel.is_requested() {
                    return;
                }
                let i = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                let Some(cfg) = configs.get(i) else { return };
                let mut cfg = cfg.clone();
                cfg.device.adapter = lane.clone();
                eprintln!("sweep run {}/{}: {}", i + 1, configs.len(), specs[i].name);
                let run = folder.run(&specs[i].name);
                let r = run_or_resume(&cfg, &run, splits, cancel);
                let failed = r.is_err();
                done.lock().unwrap().insert(i, r);
                if failed {
                    return;
                }
            });
        }
    });
    let mut results = Vec::new();
    for (i, r) in done.into_inner().unwrap() {
        if let Some(summary) = r? {
            results.push(RunResult {
                name: specs[i].name.clone(),
                settings: specs[i].settings.clone(),
                test_acc: summary.test_accuracy,
                macro_f1: summary.macro_f1,
                best_epoch: summary.best_epoch,
                seconds: summary.wall_seconds,
                confusion: summary.confusion,
            });
        }
    }
    let title = format!("Sweep: {} of {} runs", results.len(), specs.len());
    folder.write_results(&results_csv(&results), &results_html(&title, &results))?;
    Ok(results)
}
