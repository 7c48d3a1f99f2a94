//! Running experiments: one training run per cross-validation fold (`fergpu cv`) or per
//! sweep configuration (`fergpu sweep`), each into its own run folder, with the tables that
//! compare them.

use super::folds::{cv_summary, kfold, stratified_kfold};
use super::grid::RunSpec;
use super::results::{results_html, write_results_csv, RunResult};
use crate::augment::Augment;
use crate::backend::Activation;
use crate::data::{Dataset, Usage};
use crate::error::{Error, Result};
use crate::metrics::Confusion;
use crate::report::{self, escape_html, read_summary_json, Summary};
use crate::run::{train_on, Splits, TrainConfig, INTERRUPTS};
use crate::train::ClassWeight;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
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

/// Trains one model per fold of `all` into `base.out/fold-<k>` and writes `cv.csv` and
/// `cv.html` there. Returns the per-fold results (fewer than `folds` if interrupted).
pub fn cross_validate(base: &TrainConfig, cv: &CvConfig, all: &Dataset) -> Result<Vec<FoldResult>> {
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
    std::fs::create_dir_all(&base.out).map_err(|e| Error::io(&base.out, e))?;
    let mut results = Vec::new();
    for (i, fold) in folds.iter().enumerate() {
        let test = data.subset(&fold.test);
        let splits = Splits {
            train: data.subset(&fold.train),
            val: fixed_val.clone().unwrap_or_else(|| test.clone()),
            test,
        };
        let mut cfg = base.clone();
        cfg.out = base.out.join(format!("fold-{}", i + 1));
        eprintln!(
            "fold {}/{}: training on {} rows, testing on {}",
            i + 1,
            folds.len(),
            splits.train.len(),
            splits.test.len()
        );
        let Some(summary) = run_or_resume(&cfg, &splits)? else {
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
        report::write_atomic(&base.out.join("cv.csv"), cv_csv(&results).as_bytes())?;
        report::write_atomic(&base.out.join("cv.html"), cv_html(&results).as_bytes())?;
    }
    Ok(results)
}

/// Trains `cfg` on `splits` unless its folder already holds a finished run; resumes a run
/// left with a checkpoint. `None` when Ctrl-C stopped it.
fn run_or_resume(cfg: &TrainConfig, splits: &Splits) -> Result<Option<Summary>> {
    let done = cfg.out.join("summary.json");
    if done.exists() {
        eprintln!("{}: already finished, skipped", cfg.out.display());
        return read_summary_json(&done).map(Some);
    }
    let resume = cfg.out.join("checkpoint-last.safetensors").exists();
    let outcome = train_on(cfg, splits, resume)?;
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

/// A sweep's base settings overridden by one [`RunSpec`], into `dir/<name>`.
pub fn apply_settings(base: &TrainConfig, spec: &RunSpec, dir: &Path) -> Result<TrainConfig> {
    let mut cfg = base.clone();
    cfg.out = dir.join(&spec.name);
    for (key, value) in &spec.settings {
        let bad = || {
            Error::Config(format!(
                "run '{}': setting {key} = {value} is not valid",
                spec.name
            ))
        };
        let act = || {
            value
                .as_str()
                .and_then(Activation::from_name)
                .ok_or_else(bad)
        };
        match key.as_str() {
            "name" => {}
            "model" => cfg.model = value.as_str().ok_or_else(bad)?.to_string(),
            "activation" => cfg.activation = act()?,
            "dense_activation" => cfg.dense_activation = act()?,
            "lr" => cfg.lr = value.as_f64().ok_or_else(bad)?,
            "batch_size" => cfg.batch_size = value.as_usize().ok_or_else(bad)?,
            "epochs" => cfg.epochs = value.as_usize().ok_or_else(bad)?,
            "class_weight" => {
                cfg.class_weight = ClassWeight::parse(value.as_str().ok_or_else(bad)?)?
            }
            "seed" => cfg.seed = value.as_u64().ok_or_else(bad)?,
            "lr_schedule" => cfg.lr_schedule = value.as_str().ok_or_else(bad)?.to_string(),
            "patience" => cfg.patience = Some(value.as_usize().ok_or_else(bad)?),
            "augment" => cfg.augment = Augment::parse(value.as_str().ok_or_else(bad)?)?,
            other => {
                return Err(Error::Config(format!(
                    "run '{}': unknown setting '{other}'",
                    spec.name
                )))
            }
        }
    }
    Ok(cfg)
}

/// Runs every configuration of a sweep into `dir/<name>` (skipping finished ones, resuming
/// interrupted ones), spreading them over `adapters` (one run per adapter at a time; empty:
/// `base.device` for all), and writes `results.csv` and `results.html`.
pub fn sweep(
    base: &TrainConfig,
    specs: &[RunSpec],
    splits: &Splits,
    dir: &Path,
    adapters: &[String],
) -> Result<Vec<RunResult>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let configs: Vec<TrainConfig> = specs
        .iter()
        .map(|s| apply_settings(base, s, dir))
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
                if INTERRUPTS.load(Ordering::SeqCst) > 0 {
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
                let r = run_or_resume(&cfg, splits);
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
    write_results_csv(&dir.join("results.csv"), &results)?;
    let title = format!("Sweep: {} of {} runs", results.len(), specs.len());
    report::write_atomic(
        &dir.join("results.html"),
        results_html(&title, &results).as_bytes(),
    )?;
    Ok(results)
}
