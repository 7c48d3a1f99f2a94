//! The run folder and the experiment folder: every file a run or an experiment writes and
//! reads. No other module knows their names.
//!
//! A run folder holds `config.json` (the [`Settings`] and where they ran), `metrics.csv`,
//! `curves.png`/`.svg`, `confusion.html`/`.png`, `checkpoint-last.safetensors` (with
//! optimizer and resume state), `checkpoint-best.safetensors`, `summary.json`, and while a
//! run writes it, `run.lock`. Every file is written atomically (a unique temporary file in
//! the same folder, renamed over the old one), so an interrupted or failed run keeps its last
//! good state.
//!
//! An experiment folder (`fergpu cv`, `fergpu sweep`) holds one run folder per fold or
//! configuration and the tables that compare them.

use super::origin::ExperimentPart;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::metrics::Confusion;
use crate::report::{self, EpochRecord, Summary};
use crate::settings::Settings;
use serde_json::Value;
use std::path::{Path, PathBuf};

const CONFIG: &str = "config.json";
const METRICS: &str = "metrics.csv";
const CURVES_PNG: &str = "curves.png";
const CURVES_SVG: &str = "curves.svg";
const CONFUSION_HTML: &str = "confusion.html";
const CONFUSION_PNG: &str = "confusion.png";
const CHECKPOINT_LAST: &str = "checkpoint-last.safetensors";
const CHECKPOINT_BEST: &str = "checkpoint-best.safetensors";
const CHECKPOINT_LAST_GOOD: &str = "checkpoint-last-good.safetensors";
const SUMMARY: &str = "summary.json";
const LOCK: &str = "run.lock";

const EXPERIMENT: &str = "experiment.json";
const CV_CSV: &str = "cv.csv";
const CV_HTML: &str = "cv.html";
const RESULTS_CSV: &str = "results.csv";
const RESULTS_HTML: &str = "results.html";

/// The most default folders [`RunFolder::claim_timestamped`] gives out in one second.
const MAX_SAME_SECOND: usize = 10_000;

/// What `config.json` records besides the settings (fields an older fergpu did not write
/// read as their defaults).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunRecord {
    /// The adapter (or CPU backend) that ran it.
    pub adapter: String,
    /// fergpu's version.
    pub fergpu_version: String,
    /// The git commit fergpu was built from (`unknown` outside a checkout).
    pub git_commit: String,
    /// Images in the training split.
    pub train_images: usize,
    /// Images in the validation split.
    pub val_images: usize,
    /// Images in the test split.
    pub test_images: usize,
    /// The model's parameter count.
    pub parameters: usize,
    /// [`super::origin::data_fingerprint`] of the three splits (`None` in folders written
    /// before fergpu recorded it).
    pub data_fingerprint: Option<String>,
    /// The cross-validation fold or sweep run this run is (`None`: a run of its own).
    pub experiment: Option<ExperimentPart>,
}

/// The whole of `config.json`.
#[derive(serde::Serialize)]
struct ConfigFile<'a> {
    settings: &'a Settings,
    #[serde(flatten)]
    record: &'a RunRecord,
}

/// One run's folder; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFolder {
    dir: PathBuf,
}

impl RunFolder {
    /// The folder at `dir` (nothing is read or written yet).
    pub fn new(dir: impl Into<PathBuf>) -> RunFolder {
        RunFolder { dir: dir.into() }
    }

    /// A new, empty folder `<parent>/<UTC timestamp>-<name>` (the default of a run or
    /// experiment without `--out`: `parent` is `runs`), created here so that runs started
    /// in the same second never share one: the second gets `-2`, the third `-3`, ….
    pub fn claim_timestamped(parent: &Path, name: &str) -> Result<RunFolder> {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let base = format!("{}-{name}", utc_stamp());
        for n in 1..=MAX_SAME_SECOND {
            let dir = match n {
                1 => parent.join(&base),
                n => parent.join(format!("{base}-{n}")),
            };
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(RunFolder::new(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&dir, e)),
            }
        }
        Err(Error::Config(format!(
            "{}: {MAX_SAME_SECOND} folders named {base}* already exist; give --out",
            parent.display()
        )))
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// True when a run has written here (its settings, metrics or a checkpoint).
    pub fn holds_run(&self) -> bool {
        [CONFIG, METRICS, CHECKPOINT_LAST, CHECKPOINT_BEST]
            .iter()
            .any(|f| self.file(f).exists())
    }

    /// True when a run here finished (its summary exists).
    pub fn is_finished(&self) -> bool {
        self.file(SUMMARY).exists()
    }

    /// True when a run here can be resumed (its last checkpoint exists).
    pub fn can_resume(&self) -> bool {
        self.file(CHECKPOINT_LAST).exists()
    }

    /// Creates the folder (and its parents).
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))
    }

    /// Checks that the folder is a folder or does not exist yet (a file named by `--out`
    /// is an error saying so, before anything is written).
    pub fn check_is_folder(&self) -> Result<()> {
        check_folder_path(&self.dir)
    }

    /// Removes temporary files that writers killed before they could rename them left
    /// here (the caller holds the lock; see [`crate::files::remove_stale_temps`]).
    pub fn remove_stale_temps(&self) {
        crate::files::remove_stale_temps(&self.dir);
    }

    /// Removes the files of the run this folder holds (for `--overwrite`; the caller holds
    /// the lock).
    pub fn clear_run(&self) -> Result<()> {
        for name in [
            CONFIG,
            METRICS,
            CURVES_PNG,
            CURVES_SVG,
            CONFUSION_HTML,
            CONFUSION_PNG,
            CHECKPOINT_LAST,
            CHECKPOINT_BEST,
            CHECKPOINT_LAST_GOOD,
            SUMMARY,
        ] {
            let path = self.file(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&path, e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Takes the folder for one writer: `run.lock` holds this process's id until the
    /// returned guard is dropped. Another live run's lock is an error naming its process; a
    /// lock left by a process that no longer exists is taken over.
    pub fn lock(&self) -> Result<RunLock> {
        RunLock::take(self.file(LOCK))
    }

    /// The error [`RunFolder::lock`] would give because another run writes this folder now,
    /// if one does; reads only (for checks made before the folder is touched).
    pub fn check_not_locked(&self) -> Result<()> {
        RunLock::probe(&self.file(LOCK))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `config.json`: the settings and the run's record.
    pub fn write_config(&self, settings: &Settings, record: &RunRecord) -> Result<()> {
        let file = ConfigFile { settings, record };
        let mut text = serde_json::to_vec_pretty(&file).expect("settings serialize");
        text.push(b'\n');
        crate::files::write_atomic(&self.file(CONFIG), &text)
    }

    /// The settings saved in `config.json`, with the run folder set to this one. Reads the
    /// current layout (`"settings"`, in sections) and the one before sections (`"config"`,
    /// every setting at the top or under `data` and `device`).
    pub fn read_settings(&self) -> Result<Settings> {
        let path = self.file(CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let bad = |problem: String| Error::BadData {
            path: path.clone(),
            problem,
        };
        let json: Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let tree = json
            .get("settings")
            .or_else(|| json.get("config"))
            .and_then(Value::as_object)
            .ok_or_else(|| bad("not a fergpu config.json (no \"settings\")".into()))?;
        let mut settings = Settings::default();
        settings
            .apply_tree(tree, &path.display().to_string())
            .map_err(|e| {
                bad(format!(
                    "{e}. The file may come from another fergpu version; start a new run, or \
                     fix the setting in the file"
                ))
            })?;
        settings.run.out = Some(self.dir.clone());
        Ok(settings)
    }

    /// What `config.json` records besides the settings.
    pub fn read_record(&self) -> Result<RunRecord> {
        let path = self.file(CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::BadData {
            path: path.clone(),
            problem: format!("not a fergpu config.json: {e}"),
        })
    }

    /// `config.json`'s path (for messages; `--config` reads it as a recipe).
    pub fn config_path(&self) -> PathBuf {
        self.file(CONFIG)
    }

    /// The last checkpoint's path (for messages).
    pub fn last_checkpoint_path(&self) -> PathBuf {
        self.file(CHECKPOINT_LAST)
    }

    /// The best checkpoint's path (for messages).
    pub fn best_checkpoint_path(&self) -> PathBuf {
        self.file(CHECKPOINT_BEST)
    }

    /// The last good weights' path, written when training diverged (for messages).
    pub fn last_good_path(&self) -> PathBuf {
        self.file(CHECKPOINT_LAST_GOOD)
    }

    /// Saves the checkpoint a run resumes from.
    pub fn save_last(&self, ck: &Checkpoint) -> Result<()> {
        ck.save(&self.last_checkpoint_path())
    }

    /// Reads the checkpoint a run resumes from.
    pub fn load_last(&self) -> Result<Checkpoint> {
        Checkpoint::load(&self.last_checkpoint_path())
    }

    /// Saves the weights of the best validation epoch.
    pub fn save_best(&self, ck: &Checkpoint) -> Result<()> {
        ck.save(&self.best_checkpoint_path())
    }

    /// Reads the weights of the best validation epoch.
    pub fn load_best(&self) -> Result<Checkpoint> {
        Checkpoint::load(&self.best_checkpoint_path())
    }

    /// Saves the last good weights of a run that diverged.
    pub fn save_last_good(&self, ck: &Checkpoint) -> Result<()> {
        ck.save(&self.last_good_path())
    }

    /// Writes `metrics.csv`, one row per epoch.
    pub fn write_metrics(&self, records: &[EpochRecord]) -> Result<()> {
        report::write_metrics_csv(&self.file(METRICS), records)
    }

    /// Reads `metrics.csv`; no file is no epochs.
    pub fn read_metrics(&self) -> Result<Vec<EpochRecord>> {
        let path = self.file(METRICS);
        if path.exists() {
            report::read_metrics_csv(&path)
        } else {
            Ok(Vec::new())
        }
    }

    /// Draws the learning curves (`curves.png`, `curves.svg`).
    pub fn write_curves(&self, records: &[EpochRecord], title: &str) -> Result<()> {
        report::write_curves(
            &self.file(CURVES_PNG),
            &self.file(CURVES_SVG),
            records,
            title,
        )
    }

    /// Writes the test confusion matrix as `confusion.html` and `confusion.png`.
    pub fn write_confusion(&self, confusion: &Confusion, title: &str) -> Result<()> {
        crate::files::write_atomic(
            &self.file(CONFUSION_HTML),
            report::confusion_html(confusion, title).as_bytes(),
        )?;
        report::write_confusion_png(&self.file(CONFUSION_PNG), confusion, title)
    }

    /// Writes `summary.json`, which marks the run finished.
    pub fn write_summary(&self, summary: &Summary) -> Result<()> {
        report::write_summary_json(&self.file(SUMMARY), summary)
    }

    /// Reads `summary.json`.
    pub fn read_summary(&self) -> Result<Summary> {
        report::read_summary_json(&self.file(SUMMARY))
    }
}

/// A run folder taken by one writer; dropping it frees the folder.
///
/// On Unix the lock is the operating system's (`flock` on `run.lock`), so it dies with its
/// process: a lock file left by a killed run is free, whoever holds that process id now,
/// and two runs can never both take over a stale lock. The file holds the holder's process
/// id for messages. Elsewhere the file's existence is the lock, and a lock whose process is
/// gone is taken over.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    /// Open while the lock is held (the OS lock lives on it).
    #[cfg(unix)]
    _file: std::fs::File,
}

/// The error for a folder another run holds.
fn held_by(path: &Path, pid: Option<u32>) -> Error {
    let who = match pid {
        Some(pid) => format!("process {pid}"),
        None => "a process that has not written its id yet".to_string(),
    };
    Error::Config(format!(
        "{} is being written by another fergpu run ({who}); wait for it to end, or train into \
         another --out folder",
        path.parent().unwrap_or(Path::new(".")).display()
    ))
}

/// The process id written in a lock file.
fn lock_holder(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
}

impl RunLock {
    #[cfg(unix)]
    fn take(path: PathBuf) -> Result<RunLock> {
        use std::io::Write;
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::io::AsRawFd;
        // A few rounds: a lock file can be removed by its holder between our open and our
        // lock, and then the file we locked is no longer the one at `path`.
        for _ in 0..8 {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            // SAFETY: flock on a descriptor this function owns; it only sets a lock.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    return Err(Error::io(&path, e));
                }
                // The holder writes its id right after locking; give it a moment.
                let mut pid = lock_holder(&path);
                for _ in 0..20 {
                    if pid.is_some() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    pid = lock_holder(&path);
                }
                return Err(held_by(&path, pid));
            }
            let same = match (file.metadata(), std::fs::metadata(&path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                continue;
            }
            let written = file
                .set_len(0)
                .and_then(|()| writeln!(file, "{}", std::process::id()))
                .and_then(|()| file.flush());
            written.map_err(|e| Error::io(&path, e))?;
            return Ok(RunLock { path, _file: file });
        }
        Err(Error::Config(format!(
            "{}: cannot take the run folder's lock (it keeps changing)",
            path.display()
        )))
    }

    /// Whether another run holds the lock at `path` now (its error if so), without taking
    /// it or writing anything.
    #[cfg(unix)]
    fn probe(path: &Path) -> Result<()> {
        use std::os::unix::io::AsRawFd;
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(path, e)),
        };
        // SAFETY: flock on a descriptor this function owns; closing it frees the lock.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Err(held_by(path, lock_holder(path)));
            }
            return Err(Error::io(path, e));
        }
        Ok(())
    }

    #[cfg(not(unix))]
    fn probe(path: &Path) -> Result<()> {
        match lock_holder(path) {
            Some(pid) if process_alive(pid) => Err(held_by(path, Some(pid))),
            _ => Ok(()),
        }
    }

    #[cfg(not(unix))]
    fn take(path: PathBuf) -> Result<RunLock> {
        use std::io::Write;
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match lock_holder(&path) {
                        Some(pid) if process_alive(pid) => return Err(held_by(&path, Some(pid))),
                        // Left by a run that no longer exists (killed): take it over.
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::Config(format!(
            "{}: cannot take the run folder's lock",
            path.display()
        )))
    }
}

impl Drop for RunLock {
    /// Removes the file while still holding the lock (a process that opened it meanwhile
    /// sees that the file it locked is gone, and opens the new one).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a process with this id exists (assumed where it cannot be asked).
#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}

/// A folder of runs: `fergpu cv`'s folds, `fergpu sweep`'s configurations, and their tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExperimentFolder {
    dir: PathBuf,
}

impl ExperimentFolder {
    /// The folder at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> ExperimentFolder {
        ExperimentFolder { dir: dir.into() }
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates the folder (and its parents).
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))
    }

    /// Takes the folder for an experiment of `kind` (`cv`, `sweep`) with `plan` (see
    /// [`ExperimentPart::plan`]): creates it and records both in `experiment.json`, or
    /// checks that the experiment already recorded there is this one. A file, a training
    /// run's folder (its tables and folders would mix with the run's files) and another
    /// experiment's folder are refused, naming what is there.
    pub fn claim(&self, kind: &str, plan: &str) -> Result<()> {
        check_folder_path(&self.dir)?;
        let shown = self.dir.display();
        if RunFolder::new(&self.dir).holds_run() {
            return Err(Error::Config(format!(
                "{shown} holds a training run (its config.json and checkpoints); `fergpu {kind}` \
                 writes one run folder per {} and its tables into --out: choose another folder",
                if kind == "cv" { "fold" } else { "run" }
            )));
        }
        let path = self.dir.join(EXPERIMENT);
        let want = serde_json::json!({
            "kind": kind,
            "plan": plan,
            "fergpu_version": env!("CARGO_PKG_VERSION"),
        });
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let had: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if had != want {
                    let describe = |v: &Value| {
                        format!(
                            "a {} ({}) of fergpu {}",
                            v["kind"].as_str().unwrap_or("?"),
                            v["plan"].as_str().unwrap_or(""),
                            v["fergpu_version"].as_str().unwrap_or("?")
                        )
                    };
                    return Err(Error::Config(format!(
                        "{shown} holds {}, and this is {}; choose another --out folder (or \
                         remove {shown} to start over)",
                        describe(&had),
                        describe(&want)
                    )));
                }
                crate::files::remove_stale_temps(&self.dir);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.create()?;
                let mut text = serde_json::to_vec_pretty(&want).expect("json");
                text.push(b'\n');
                crate::files::write_atomic(&path, &text)
            }
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Checks, reading only, that the folder was claimed for the experiment of `kind` with
    /// `plan` (by [`ExperimentFolder::claim`]): what a task of a planned experiment does
    /// before it trains, writing nothing outside its own run folder.
    pub fn check_claimed(&self, kind: &str, plan: &str) -> Result<()> {
        let path = self.dir.join(EXPERIMENT);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let had: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if had["kind"] != kind || had["plan"] != plan {
            return Err(Error::Config(format!(
                "{} records a {} ({}), not this {kind}: the plan and the folder disagree; plan \
                 the experiment again into a new --out folder",
                path.display(),
                had["kind"].as_str().unwrap_or("?"),
                had["plan"].as_str().unwrap_or("")
            )));
        }
        Ok(())
    }

    /// The run folder of cross-validation fold `k` (1-based): `fold-<k>`.
    pub fn fold(&self, k: usize) -> RunFolder {
        RunFolder::new(self.dir.join(format!("fold-{k}")))
    }

    /// The run folder of the sweep configuration `name`.
    pub fn run(&self, name: &str) -> RunFolder {
        RunFolder::new(self.dir.join(name))
    }

    /// Writes the cross-validation tables `cv.csv` and `cv.html`.
    pub fn write_cv(&self, csv: &str, html: &str) -> Result<()> {
        crate::files::write_atomic(&self.dir.join(CV_CSV), csv.as_bytes())?;
        crate::files::write_atomic(&self.dir.join(CV_HTML), html.as_bytes())
    }

    /// `cv.html`'s path (for messages).
    pub fn cv_html_path(&self) -> PathBuf {
        self.dir.join(CV_HTML)
    }

    /// Writes a sweep's tables `results.csv` and `results.html`.
    pub fn write_results(&self, csv: &str, html: &str) -> Result<()> {
        crate::files::write_atomic(&self.dir.join(RESULTS_CSV), csv.as_bytes())?;
        crate::files::write_atomic(&self.dir.join(RESULTS_HTML), html.as_bytes())
    }

    /// `results.html`'s path (for messages).
    pub fn results_html_path(&self) -> PathBuf {
        self.dir.join(RESULTS_HTML)
    }
}

/// A folder path named by `--out` must be a folder or not exist yet.
fn check_folder_path(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(Error::Config(format!(
            "--out {}: a file, not a folder; name a folder (it is created if missing)",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// The current UTC time as `YYYYMMDD-HHMMSS`.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> RunFolder {
        let dir = std::env::temp_dir().join(format!("fergpu-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let f = RunFolder::new(dir);
        f.create().unwrap();
        f
    }

    #[test]
    fn a_second_lock_is_refused_while_the_first_lives_and_free_after() {
        let f = tmp("lock");
        let held = f.lock().unwrap();
        let e = f.lock().unwrap_err().to_string();
        assert!(e.contains(&std::process::id().to_string()), "{e}");
        drop(held);
        let _again = f.lock().unwrap();
    }

    #[test]
    fn a_stale_lock_is_taken_over() {
        let f = tmp("stale");
        // No process has id u32::MAX - 1 (pids are far smaller).
        std::fs::write(f.path().join(LOCK), format!("{}\n", u32::MAX - 1)).unwrap();
        f.check_not_locked().unwrap();
        let _l = f.lock().unwrap();
        assert!(f.check_not_locked().is_err());
    }

    /// A killed run's lock file may name a process id that a live process has since
    /// taken (here: this test's parent, which is alive); the folder is free all the same.
    #[test]
    #[cfg(unix)]
    fn a_lock_file_whose_process_id_was_reused_is_free() {
        let f = tmp("reused");
        let parent = std::os::unix::process::parent_id();
        std::fs::write(f.path().join(LOCK), format!("{parent}\n")).unwrap();
        f.check_not_locked().unwrap();
        let held = f.lock().unwrap();
        let e = f.lock().unwrap_err().to_string();
        assert!(
            e.contains(&format!("process {}", std::process::id())),
            "{e}"
        );
        drop(held);
        assert!(
            !f.path().join(LOCK).exists(),
            "the lock file goes with its lock"
        );
    }

    /// Many writers racing for one folder (a stale lock file in it): exactly one holds it
    /// at a time.
    #[test]
    fn racing_writers_never_hold_a_folder_together() {
        let f = tmp("race");
        let holders = std::sync::atomic::AtomicUsize::new(0);
        let most = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..50 {
            std::fs::write(f.path().join(LOCK), format!("{}\n", u32::MAX - 1)).unwrap();
            let barrier = std::sync::Barrier::new(4);
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| {
                        barrier.wait();
                        if let Ok(lock) = f.lock() {
                            let now = holders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            most.fetch_max(now + 1, std::sync::atomic::Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(2));
                            holders.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            drop(lock);
                        }
                    });
                }
            });
        }
        assert_eq!(most.into_inner(), 1);
    }

    #[test]
    fn config_round_trips_through_the_folder() {
        let f = tmp("config");
        let mut s = Settings::default();
        s.optimizer.lr = 0.02;
        s.schedule.patience = Some(2);
        let rec = RunRecord {
            adapter: "cpu".into(),
            fergpu_version: "0".into(),
            git_commit: "x".into(),
            train_images: 1,
            val_images: 2,
            test_images: 3,
            parameters: 4,
            data_fingerprint: Some("00ff".into()),
            experiment: None,
        };
        f.write_config(&s, &rec).unwrap();
        let back = f.read_settings().unwrap();
        s.run.out = Some(f.path().to_path_buf());
        assert_eq!(back, s);
        assert_eq!(f.read_record().unwrap(), rec);
        assert!(f.holds_run() && !f.is_finished() && !f.can_resume());
    }

    #[test]
    fn timestamped_folders_are_created_and_never_shared() {
        let parent = tmp("stamped").path().join("runs");
        let firsts: Vec<RunFolder> = (0..3)
            .map(|_| RunFolder::claim_timestamped(&parent, "cnn").unwrap())
            .collect();
        let name = |f: &RunFolder| f.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name(&firsts[0]).ends_with("-cnn"), "{}", name(&firsts[0]));
        assert_eq!(name(&firsts[0]).len(), "YYYYMMDD-HHMMSS-cnn".len());
        for f in &firsts {
            assert!(f.path().is_dir() && f.path().starts_with(&parent));
        }
        let names: std::collections::BTreeSet<String> = firsts.iter().map(name).collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn an_experiment_folder_is_claimed_once_per_plan_and_never_over_a_run() {
        let f = tmp("experiment");
        let e = ExperimentFolder::new(f.path().join("cv"));
        e.claim("cv", "2 folds").unwrap();
        e.claim("cv", "2 folds").unwrap();
        let err = e.claim("cv", "3 folds").unwrap_err().to_string();
        assert!(
            err.contains("holds a cv (2 folds)") && err.contains("this is a cv (3 folds)"),
            "{err}"
        );
        let err = e.claim("sweep", "").unwrap_err().to_string();
        assert!(err.contains("this is a sweep"), "{err}");
        let run = RunFolder::new(f.path().join("run"));
        run.create().unwrap();
        std::fs::write(run.config_path(), "{}").unwrap();
        let err = ExperimentFolder::new(run.path())
            .claim("cv", "2 folds")
            .unwrap_err();
        assert!(err.to_string().contains("holds a training run"), "{err}");
        let file = f.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = ExperimentFolder::new(&file).claim("sweep", "").unwrap_err();
        assert!(err.to_string().contains("a file, not a folder"), "{err}");
    }
}
