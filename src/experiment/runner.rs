//! Running experiments: one training run per cross-validation fold (`fergpu cv`) or per
//! sweep configuration (`fergpu sweep`), each into its own run folder, with the tables that
//! compare them.

use super::folds::{cv_summary, kfold, stratified_kfold, Fold};
use super::grid::RunSpec;
use super::results::{results_csv, results_html, RunResult};
use crate::cancel::Cancel;
use crate::data::{Dataset, Usage};
use crate::error::{Error, Result};
use crate::metrics::Confusion;
use crate::report::{self, escape_html, Summary};
use crate::run::origin::{check_reuse, Reuse};
use crate::run::{train_part, ExperimentFolder, ExperimentPart, Origin, RunFolder, Start};
use crate::settings::{Settings, Splits};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// How `fergpu cv` splits the data.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// of the folds. Default PublicTest. When it is one of `rows`, each fold's held-out part
    /// is used for validation too; a split without rows is an error.
    pub val: Vec<Usage>,
}

impl CvConfig {
    /// The plan in words, as each fold's `config.json` records it: `3 folds, contiguous,
    /// rows Training,PrivateTest, validation PublicTest`.
    pub fn plan(&self) -> String {
        let names = |u: &[Usage]| u.iter().map(|u| u.name()).collect::<Vec<_>>().join(",");
        let order = match self.shuffle {
            Some(seed) => format!("shuffled with seed {seed}"),
            None => "contiguous".to_string(),
        };
        let val = if self.validates_on_folds() {
            "validation on each held-out fold".to_string()
        } else {
            format!("validation {}", names(&self.val))
        };
        format!(
            "{} folds, {order}{}, rows {}, {val}",
            self.folds,
            if self.stratified { ", stratified" } else { "" },
            names(&self.rows)
        )
    }

    /// True when the validation split is among the rows folded: each fold then validates on
    /// its held-out part.
    fn validates_on_folds(&self) -> bool {
        self.val.iter().any(|u| self.rows.contains(u))
    }
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
    let jobs = CvJobs::new(base, cv, all, folder)?;
    folder.claim("cv", &cv.plan())?;
    let mut results = Vec::new();
    for i in 0..jobs.len() {
        let job = jobs.job(i);
        eprintln!(
            "fold {}/{}: training on {} rows, testing on {}",
            i + 1,
            jobs.len(),
            job.splits.train.len(),
            job.splits.test.len()
        );
        let run = folder.fold(i + 1);
        let Some(summary) = run_or_resume(&job.cfg, &run, &job.splits, job.part, cancel)? else {
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
            train_rows: job.splits.train.len(),
            test_rows: job.splits.test.len(),
            summary,
        });
    }
    if !results.is_empty() {
        folder.write_cv(&cv_csv(&results), &cv_html(&results))?;
    }
    Ok(results)
}

/// One fold's run, ready to train: its settings (its folder, and the splits its
/// `config.json` names), its splits, and what part of the experiment it is.
pub struct FoldJob {
    /// The fold's settings.
    pub cfg: Settings,
    /// Training (the other folds), validation and test (the held-out fold) images.
    pub splits: Splits,
    /// `fold k` of this cross-validation.
    pub part: ExperimentPart,
}

/// The folds of a cross-validation, computed once from the data and the folding; each
/// fold's [`FoldJob`] is made when asked for (the local `cv` and each `--task` alike).
pub struct CvJobs<'a> {
    base: &'a Settings,
    cv: &'a CvConfig,
    folder: &'a ExperimentFolder,
    /// The rows that take part, in order.
    data: Dataset,
    folds: Vec<Fold>,
    /// The validation split kept out of the folds (`None`: each held-out fold validates).
    fixed_val: Option<Dataset>,
}

impl<'a> CvJobs<'a> {
    /// Folds `all` as `cv` says; a `--cv-val` split without rows is an error.
    pub fn new(
        base: &'a Settings,
        cv: &'a CvConfig,
        all: &Dataset,
        folder: &'a ExperimentFolder,
    ) -> Result<CvJobs<'a>> {
        let rows = all.rows_of(&cv.rows);
        let data = all.subset(&rows);
        let folds = if cv.stratified {
            stratified_kfold(&data.labels, cv.folds, cv.shuffle)?
        } else {
            kfold(data.len(), cv.folds, cv.shuffle)?
        };
        let fixed_val = if cv.validates_on_folds() {
            None
        } else {
            let val = all.split(&cv.val);
            if val.is_empty() {
                let names: Vec<&str> = cv.val.iter().map(|u| u.name()).collect();
                return Err(Error::Config(format!(
                    "--cv-val {}: the data has no rows of it to validate on; choose a split it \
                     has with --cv-val (one of --rows validates each fold on its held-out part)",
                    names.join(",")
                )));
            }
            Some(val)
        };
        Ok(CvJobs {
            base,
            cv,
            folder,
            data,
            folds,
            fixed_val,
        })
    }

    /// Number of folds.
    pub fn len(&self) -> usize {
        self.folds.len()
    }

    /// Whether there are no folds (never: at least two are required).
    pub fn is_empty(&self) -> bool {
        self.folds.is_empty()
    }

    /// Fold `i` (0-based) as a run.
    pub fn job(&self, i: usize) -> FoldJob {
        let fold = &self.folds[i];
        let test = self.data.subset(&fold.test);
        let splits = Splits {
            train: self.data.subset(&fold.train),
            val: self.fixed_val.clone().unwrap_or_else(|| test.clone()),
            test,
        };
        let (cv, mut cfg) = (self.cv, self.base.clone());
        cfg.run.out = Some(self.folder.fold(i + 1).path().to_path_buf());
        // What the fold's config.json says its splits come from.
        cfg.data.train_split = cv.rows.clone();
        cfg.data.test_split = cv.rows.clone();
        cfg.data.val_split = if self.fixed_val.is_some() {
            cv.val.clone()
        } else {
            cv.rows.clone()
        };
        let part = ExperimentPart {
            kind: "cv".into(),
            plan: cv.plan(),
            part: format!("fold {}", i + 1),
        };
        FoldJob { cfg, splits, part }
    }
}

/// Trains `cfg` on `splits` into `run`, as `part` of the experiment, unless it already
/// holds that run finished; resumes it when it was stopped, and starts over a run that
/// never saved a checkpoint (the experiment owns its folders). A run there made with other
/// settings, data or plan is an error listing the differences ([`check_reuse`]), never
/// reused. `None` when `cancel` stopped it.
pub(super) fn run_or_resume(
    cfg: &Settings,
    run: &RunFolder,
    splits: &Splits,
    part: ExperimentPart,
    cancel: &Cancel,
) -> Result<Option<Summary>> {
    let origin = Origin::new(splits, Some(part.clone()));
    let recorded = run.config_path().exists();
    if recorded && (run.is_finished() || run.can_resume()) {
        let hint = format!(
            "it is not reused. Run the {} with the settings it was started with, or into \
             another --out folder (or remove {} to train it again)",
            if part.kind == "cv" {
                "cross-validation"
            } else {
                "sweep"
            },
            run.path().display()
        );
        check_reuse(run, cfg, &origin, Reuse::Experiment, &hint)?;
    }
    if recorded && run.is_finished() {
        eprintln!("{}: already finished, skipped", run.path().display());
        return run.read_summary().map(Some);
    }
    let start = if recorded && run.can_resume() {
        Start::Resume
    } else {
        Start::New { overwrite: true }
    };
    let outcome = train_part(cfg, splits, Some(part), start, cancel)?;
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
    folder.claim("sweep", "")?;
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
                let part = ExperimentPart {
                    kind: "sweep".into(),
                    plan: String::new(),
                    part: specs[i].name.clone(),
                };
                let r = run_or_resume(&cfg, &run, splits, part, cancel);
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
            results.push(run_result(&specs[i], summary));
        }
    }
    write_sweep_tables(folder, &results, specs.len())?;
    Ok(results)
}

/// A sweep run's row of the results table.
pub fn run_result(spec: &RunSpec, summary: Summary) -> RunResult {
    RunResult {
        name: spec.name.clone(),
        settings: spec.settings.clone(),
        test_acc: summary.test_accuracy,
        macro_f1: summary.macro_f1,
        best_epoch: summary.best_epoch,
        seconds: summary.wall_seconds,
        confusion: summary.confusion,
    }
}

/// `results.csv` and `results.html` of `results`, `of` runs planned.
pub fn write_sweep_tables(
    folder: &ExperimentFolder,
    results: &[RunResult],
    of: usize,
) -> Result<()> {
    let title = format!("Sweep: {} of {of} runs", results.len());
    folder.write_results(&results_csv(results), &results_html(&title, results))
}
