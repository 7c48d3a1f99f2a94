//! Experiments as plans a scheduler runs, one task per array index.
//!
//! `fergpu sweep … --plan` and `fergpu cv … --plan` write the experiment's folder with
//! [`PLAN_FILE`]: every task (a sweep configuration, a cross-validation fold) numbered from
//! 0, with its full settings and the identity of the data it trains on (images per split and
//! their fingerprint), and beside it a Slurm batch script ([`SLURM_FILE`]: one array task per
//! plan task) and a Kubernetes indexed Job ([`K8S_FILE`]). `--task I` trains task I into its
//! own run folder, as the local command would (a finished task is skipped only if its
//! settings and data match the plan, a stopped one resumes, the run folder's lock keeps a
//! re-queued copy from running twice at once); `--collect` writes the local command's tables
//! from the finished tasks, reading only, and lists the others.
//!
//! A task writes only inside its own run folder, so many tasks can share one experiment
//! folder on a network file system.

use super::grid::RunSpec;
use super::runner::CvConfig;
use crate::error::{Error, Result};
use crate::run::{ExperimentPart, Origin};
use crate::settings::Settings;
use std::path::{Path, PathBuf};

/// The plan's file in the experiment folder.
pub const PLAN_FILE: &str = "plan.json";
/// The Slurm batch script, beside the plan.
pub const SLURM_FILE: &str = "slurm.sbatch";
/// The Kubernetes indexed Job (JSON, which `kubectl apply -f` takes as it takes YAML).
pub const K8S_FILE: &str = "k8s-job.json";
/// The folder of the scheduler's per-task logs.
pub const LOGS: &str = "logs";
/// The environment variables a scheduler numbers array tasks with: Slurm's job arrays, then
/// Kubernetes' indexed Jobs.
pub const TASK_ENV: [&str; 2] = ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"];
/// The most tasks a plan may hold (a sweep refuses larger grids before this).
const MAX_TASKS: usize = 100_000;

/// What kind of experiment a plan runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanKind {
    /// `fergpu sweep`: one task per configuration.
    Sweep,
    /// `fergpu cv`: one task per fold.
    Cv,
}

impl PlanKind {
    /// The command's name.
    pub fn command(self) -> &'static str {
        match self {
            PlanKind::Sweep => "sweep",
            PlanKind::Cv => "cv",
        }
    }
}

/// One task of a plan.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanTask {
    /// Its number, from 0 (the array index).
    pub task: usize,
    /// Its run folder's name inside the experiment folder (`fold-2`, a sweep run's name).
    pub name: String,
    /// Every setting of its run (its folder included).
    pub settings: Settings,
    /// Images in its training, validation and test splits.
    pub images: [usize; 3],
    /// The fingerprint of those splits ([`crate::run::origin::data_fingerprint`]).
    pub data_fingerprint: String,
    /// The part of the experiment it is.
    pub part: ExperimentPart,
    /// A sweep run's grid entry (its settings are the results table's columns).
    pub spec: Option<RunSpec>,
}

impl PlanTask {
    /// What the task's run is about to train on and for.
    pub fn origin(&self) -> Origin {
        Origin {
            images: self.images,
            data_fingerprint: self.data_fingerprint.clone(),
            experiment: Some(self.part.clone()),
        }
    }
}

/// A whole plan, as [`PLAN_FILE`] holds it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// What it runs.
    pub kind: PlanKind,
    /// The fergpu that wrote it (tasks refuse a plan of another version).
    pub fergpu_version: String,
    /// The shared settings of a cross-validation (each fold's are derived from them).
    pub base: Settings,
    /// A cross-validation's folding.
    pub cv: Option<CvConfig>,
    /// The tasks, numbered from 0.
    pub tasks: Vec<PlanTask>,
}

impl Plan {
    /// Writes the plan and the scheduler files into `dir` (and its `logs` folder), for the
    /// program at `exe`.
    pub fn write(&self, dir: &Path, exe: &Path) -> Result<()> {
        assert!(!self.tasks.is_empty(), "a plan has tasks");
        let logs = dir.join(LOGS);
        std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
        let mut json = serde_json::to_vec_pretty(self).expect("a plan serializes");
        json.push(b'\n');
        crate::files::write_atomic(&dir.join(PLAN_FILE), &json)?;
        let script = slurm_script(self, dir, exe);
        crate::files::write_atomic(&dir.join(SLURM_FILE), script.as_bytes())?;
        set_executable(&dir.join(SLURM_FILE));
        let mut job = serde_json::to_vec_pretty(&k8s_job(self, dir, exe)).expect("json");
        job.push(b'\n');
        crate::files::write_atomic(&dir.join(K8S_FILE), &job)
    }

    /// Reads the plan in experiment folder `dir`; a folder without one, or with a plan of
    /// another fergpu or kind, is an error saying what to do.
    pub fn read(dir: &Path, kind: PlanKind) -> Result<Plan> {
        let path = dir.join(PLAN_FILE);
        let bad = |why: String| Error::Config(format!("{}: {why}", path.display()));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Config(format!(
                    "{} holds no plan ({PLAN_FILE}); write one first with `fergpu {} … --out \
                     {} --plan`",
                    dir.display(),
                    kind.command(),
                    dir.display()
                )))
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let plan: Plan =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a fergpu plan: {e}")))?;
        if plan.kind != kind {
            return Err(bad(format!(
                "a plan of `fergpu {}`, not `fergpu {}`",
                plan.kind.command(),
                kind.command()
            )));
        }
        if plan.fergpu_version != env!("CARGO_PKG_VERSION") {
            return Err(bad(format!(
                "written by fergpu {}, this is {}; plan the experiment again with this fergpu",
                plan.fergpu_version,
                env!("CARGO_PKG_VERSION")
            )));
        }
        if plan.tasks.is_empty() || plan.tasks.len() > MAX_TASKS {
            return Err(bad(format!("{} tasks", plan.tasks.len())));
        }
        if plan.tasks.iter().enumerate().any(|(i, t)| t.task != i) {
            return Err(bad("its tasks are not numbered 0, 1, 2, …".into()));
        }
        Ok(plan)
    }

    /// Task `index`, or an error naming the plan's range.
    pub fn task(&self, index: usize) -> Result<&PlanTask> {
        self.tasks.get(index).ok_or_else(|| {
            Error::Config(format!(
                "--task {index}: the plan has tasks 0 to {}",
                self.tasks.len() - 1
            ))
        })
    }
}

/// The task number: `given`, else the first of [`TASK_ENV`] that is set (a scheduler's
/// array index); an error when neither says, or when the variable is not a number.
pub fn task_index(given: Option<usize>, env: impl Fn(&str) -> Option<String>) -> Result<usize> {
    if let Some(i) = given {
        return Ok(i);
    }
    for name in TASK_ENV {
        if let Some(v) = env(name) {
            return v.trim().parse().map_err(|_| {
                Error::Config(format!("{name}={v:?} is not a task number (0, 1, 2, …)"))
            });
        }
    }
    Err(Error::Config(format!(
        "--task needs a number, or one of {} set by the scheduler",
        TASK_ENV.join(", ")
    )))
}

/// Whether the plan's runs ask for a GPU: an adapter named as a discrete or integrated GPU,
/// by index or by name. `auto`, `cpu` and `software` do not (they run wherever they land).
pub fn wants_gpu(settings: &Settings) -> bool {
    !matches!(
        settings.device.adapter.as_str(),
        "auto" | "cpu" | "software"
    )
}

/// A shell word: as it is when it holds only safe characters, else single-quoted.
fn shell(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The CPU threads each task asks the scheduler for: the runs' `--threads`, or 2 when
/// they take one per core (0).
fn cpus_per_task(plan: &Plan) -> usize {
    match plan.tasks[0].settings.device.threads {
        0 => 2,
        n => n,
    }
}

/// The Slurm batch script: one array task per plan task, each `fergpu … --task
/// $SLURM_ARRAY_TASK_ID`; re-queue-safe, since a task resumes where it stopped.
pub fn slurm_script(plan: &Plan, dir: &Path, exe: &Path) -> String {
    let n = plan.tasks.len();
    let command = plan.kind.command();
    let dir_s = dir.display().to_string();
    let mut s = format!(
        "#!/bin/bash\n\
         # fergpu {command}: {n} tasks, one per array index (task numbers are plan.json's).\n\
         # Submit with `sbatch {script}`; when the tasks are done, tabulate them with\n\
         # `fergpu {command} --out {dir} --collect`. A task that fails or is pre-empted can be\n\
         # submitted again (or re-queued): it resumes from its last checkpoint, and a\n\
         # finished one is skipped.\n\
         #SBATCH --job-name=fergpu-{command}\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --output={logs}/task-%a.out\n\
         #SBATCH --requeue\n\
         #SBATCH --cpus-per-task={cpus}\n",
        script = shell(&dir.join(SLURM_FILE).display().to_string()),
        dir = shell(&dir_s),
        last = n - 1,
        logs = dir.join(LOGS).display(),
        cpus = cpus_per_task(plan),
    );
    if wants_gpu(&plan.tasks[0].settings) {
        s.push_str("#SBATCH --gres=gpu:1\n");
    }
    s.push_str(&format!(
        "set -eu\nexec {} {command} --out {} --task \"$SLURM_ARRAY_TASK_ID\"\n",
        shell(&exe.display().to_string()),
        shell(&dir_s)
    ));
    s
}

/// The Kubernetes indexed Job: `completions` = the tasks, each pod running `fergpu …
/// --task` (the index comes from `JOB_COMPLETION_INDEX`), the experiment folder mounted at
/// its own path from the persistent volume claim `fergpu-experiment`. The image is a
/// placeholder to replace with one holding fergpu (and a GPU driver when the runs ask for a
/// GPU).
pub fn k8s_job(plan: &Plan, dir: &Path, exe: &Path) -> serde_json::Value {
    let n = plan.tasks.len();
    let command = plan.kind.command();
    let mut resources = serde_json::json!({
        "requests": { "cpu": cpus_per_task(plan).to_string() }
    });
    if wants_gpu(&plan.tasks[0].settings) {
        resources["limits"] = serde_json::json!({ "nvidia.com/gpu": 1 });
    }
    let dir_s = dir.display().to_string();
    serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": format!("fergpu-{command}") },
        "spec": {
            "completionMode": "Indexed",
            "completions": n,
            "parallelism": n,
            "backoffLimitPerIndex": 3,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "fergpu",
                        "image": "fergpu:latest",
                        "command": [exe.display().to_string(), command, "--out", dir_s.clone(), "--task"],
                        "resources": resources,
                        "volumeMounts": [{ "name": "experiment", "mountPath": dir_s }]
                    }],
                    "volumes": [{
                        "name": "experiment",
                        "persistentVolumeClaim": { "claimName": "fergpu-experiment" }
                    }]
                }
            }
        }
    })
}

/// Makes the batch script executable (best effort: `sbatch` does not need it).
fn set_executable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// `path` made absolute against the current folder (a scheduler starts tasks elsewhere).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_number_comes_from_the_flag_then_the_schedulers_variables() {
        let none = |_: &str| None;
        assert_eq!(task_index(Some(3), none).unwrap(), 3);
        let slurm = |k: &str| (k == "SLURM_ARRAY_TASK_ID").then(|| "2".to_string());
        assert_eq!(task_index(None, slurm).unwrap(), 2);
        let k8s = |k: &str| (k == "JOB_COMPLETION_INDEX").then(|| "5\n".to_string());
        assert_eq!(task_index(None, k8s).unwrap(), 5);
        let e = task_index(None, none).unwrap_err().to_string();
        assert!(
            e.contains("SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX"),
            "{e}"
        );
        let bad = |_: &str| Some("x1".to_string());
        let e = task_index(None, bad).unwrap_err().to_string();
        assert!(e.contains("\"x1\" is not a task number"), "{e}");
    }

    #[test]
    fn only_an_adapter_named_as_a_gpu_asks_the_scheduler_for_one() {
        let mut s = Settings::default();
        for (adapter, gpu) in [
            ("auto", false),
            ("cpu", false),
            ("software", false),
            ("discrete", true),
            ("integrated", true),
            ("0", true),
            ("NVIDIA", true),
        ] {
            s.device.adapter = adapter.into();
            assert_eq!(wants_gpu(&s), gpu, "{adapter}");
        }
    }
}
