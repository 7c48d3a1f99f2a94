//! Planned experiments without a scheduler: `--plan` writes the plan, the Slurm script and
//! the Kubernetes Job; `--task I` trains one task (from the flag or the scheduler's
//! variables), idempotently, resuming a killed one, refusing a second copy while one runs;
//! `--collect` writes the same tables as the local command. The real Slurm cluster is
//! `tests/slurm.rs`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn fergpu() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fergpu"));
    c.env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX");
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    fergpu()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("fergpu runs")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "fergpu {args:?} failed:\n{text}");
    text
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(!out.status.success(), "fergpu {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh folder with 600 generated faces in `d.csv` and a 4-run grid (mlp, 1 epoch, one
/// thread each, CPU backend).
fn setup(name: &str, epochs: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fergpu-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ok(
        &dir,
        &["synth", "--out", "d.csv", "--rows", "600", "--seed", "3"],
    );
    std::fs::write(
        dir.join("grid.toml"),
        format!(
            "[fixed]\nmodel = \"mlp\"\nepochs = {epochs}\nthreads = 1\nadapter = \"cpu\"\n\
             quiet = true\n[grid]\nlr = [0.001, 0.01]\nbatch_size = [16, 32]\n"
        ),
    )
    .unwrap();
    dir
}

/// A results table without its `seconds` column (wall time differs between runs).
fn without_seconds(csv: &str) -> Vec<Vec<String>> {
    let rows: Vec<Vec<String>> = csv
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    let col = rows[0]
        .iter()
        .position(|h| h == "seconds")
        .expect("a seconds column");
    rows.into_iter()
        .map(|mut r| {
            r.remove(col);
            r
        })
        .collect()
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_planned_sweep_run_task_by_task_collects_the_local_sweeps_results() {
    let dir = setup("sweep", 1);
    let said = ok(
        &dir,
        &[
            "sweep",
            "grid.toml",
            "--data",
            "d.csv",
            "--out",
            "exp",
            "--plan",
        ],
    );
    assert!(said.contains("planned 4 tasks (0 to 3)"), "{said}");
    // The plan: four numbered tasks with their full settings, the data's identity.
    let plan: Value = serde_json::from_str(&read(dir.join("exp/plan.json"))).unwrap();
    let tasks = plan["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 4);
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(t["task"], i);
        assert!(t["data_fingerprint"].as_str().unwrap().len() == 16);
        let data = t["settings"]["data"]["data"].as_str().unwrap();
        assert!(Path::new(data).is_absolute(), "{data}");
    }
    // Nothing trained yet: collect lists every task, by number.
    let e = fails(&dir, &["sweep", "--out", "exp", "--collect"]);
    assert!(
        e.contains("0 of 4 tasks finished") && e.contains("task 3 ("),
        "{e}"
    );
    // The tasks, in any order, one from Slurm's variable and one from Kubernetes'.
    ok(&dir, &["sweep", "--out", "exp", "--task", "2"]);
    ok(&dir, &["sweep", "--out", "exp", "--task", "0"]);
    let env_task = |var: &str, i: &str| {
        let out = fergpu()
            .current_dir(&dir)
            .env(var, i)
            .args(["sweep", "--out", "exp", "--task"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    env_task("SLURM_ARRAY_TASK_ID", "1");
    env_task("JOB_COMPLETION_INDEX", "3");
    // A finished task run again is skipped, its result kept.
    let again = ok(&dir, &["sweep", "--out", "exp", "--task", "2"]);
    assert!(again.contains("already finished, skipped"), "{again}");
    ok(&dir, &["sweep", "--out", "exp", "--collect"]);
    ok(
        &dir,
        &["sweep", "grid.toml", "--data", "d.csv", "--out", "local"],
    );
    assert_eq!(
        without_seconds(&read(dir.join("exp/results.csv"))),
        without_seconds(&read(dir.join("local/results.csv"))),
        "the planned sweep's table is the local one's"
    );
    assert!(dir.join("exp/results.html").exists());
    // Only device flags go beside --task; numbers out of range are named.
    let e = fails(
        &dir,
        &["sweep", "--out", "exp", "--task", "1", "--lr", "0.5"],
    );
    assert!(
        e.contains("--lr: the plan sets every training setting"),
        "{e}"
    );
    let e = fails(&dir, &["sweep", "--out", "exp", "--task", "4"]);
    assert!(e.contains("the plan has tasks 0 to 3"), "{e}");
    let e = fails(&dir, &["cv", "--out", "exp", "--task", "0"]);
    assert!(
        e.contains("a plan of `fergpu sweep`, not `fergpu cv`"),
        "{e}"
    );
    let e = fails(&dir, &["sweep", "--out", "nowhere", "--task", "0"]);
    assert!(e.contains("holds no plan"), "{e}");
}

#[test]
fn the_scheduler_files_run_every_task_and_ask_for_a_gpu_only_when_the_runs_do() {
    let dir = setup("files", 1);
    ok(
        &dir,
        &[
            "sweep",
            "grid.toml",
            "--data",
            "d.csv",
            "--out",
            "cpu",
            "--plan",
        ],
    );
    let script = read(dir.join("cpu/slurm.sbatch"));
    let exp = dir.join("cpu");
    for line in [
        "#SBATCH --array=0-3".to_string(),
        "#SBATCH --requeue".to_string(),
        "#SBATCH --cpus-per-task=1".to_string(),
        format!("#SBATCH --output={}/logs/task-%a.out", exp.display()),
        format!("--out {} --task \"$SLURM_ARRAY_TASK_ID\"", exp.display()),
    ] {
        assert!(script.contains(&line), "{line} missing:\n{script}");
    }
    assert!(!script.contains("--gres"), "{script}");
    assert!(
        exp.join("logs").is_dir(),
        "Slurm does not make the log folder"
    );
    let job: Value = serde_json::from_str(&read(exp.join("k8s-job.json"))).unwrap();
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    assert_eq!(job["spec"]["completions"], 4);
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        command[1..],
        ["sweep", "--out", exp.to_str().unwrap(), "--task"]
    );
    assert_eq!(
        container["volumeMounts"][0]["mountPath"],
        exp.to_str().unwrap()
    );
    let volume = &job["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(volume["name"], container["volumeMounts"][0]["name"]);
    assert!(container["resources"].get("limits").is_none());
    // Runs on a named GPU ask both schedulers for one.
    let grid = read(dir.join("grid.toml")).replace("\"cpu\"", "\"discrete\"");
    std::fs::write(dir.join("gpu.toml"), grid).unwrap();
    ok(
        &dir,
        &[
            "sweep", "gpu.toml", "--data", "d.csv", "--out", "gpu", "--plan",
        ],
    );
    assert!(read(dir.join("gpu/slurm.sbatch")).contains("#SBATCH --gres=gpu:1"));
    let job: Value = serde_json::from_str(&read(dir.join("gpu/k8s-job.json"))).unwrap();
    let limits = &job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"];
    assert_eq!(limits["nvidia.com/gpu"], 1);
}

#[test]
fn a_planned_cross_validation_collects_the_local_cvs_table() {
    let dir = setup("cv", 1);
    let common = [
        "--data",
        "d.csv",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--folds",
        "3",
        "--threads",
        "1",
        "--adapter",
        "cpu",
        "--quiet",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["cv".into()];
        v.extend(common.iter().map(|s| s.to_string()));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let args = with(&["--out", "exp", "--plan"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&dir, &args);
    for i in ["2", "0", "1"] {
        ok(&dir, &["cv", "--out", "exp", "--task", i]);
    }
    ok(&dir, &["cv", "--out", "exp", "--collect"]);
    let local = with(&["--out", "local"]);
    let local: Vec<&str> = local.iter().map(String::as_str).collect();
    ok(&dir, &local);
    assert_eq!(
        without_seconds(&read(dir.join("exp/cv.csv"))),
        without_seconds(&read(dir.join("local/cv.csv")))
    );
}

/// Starts task `i` of the plan in `dir/exp` as a child process.
fn spawn_task(dir: &Path, i: &str) -> Child {
    fergpu()
        .current_dir(dir)
        .args(["sweep", "--out", "exp", "--task", i])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `path` exists (or fails after a minute).
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} never came",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_task_killed_mid_run_resumes_to_the_same_results_and_never_runs_twice_at_once() {
    let dir = setup("kill", 20);
    ok(
        &dir,
        &[
            "sweep",
            "grid.toml",
            "--data",
            "d.csv",
            "--out",
            "exp",
            "--plan",
        ],
    );
    let plan: Value = serde_json::from_str(&read(dir.join("exp/plan.json"))).unwrap();
    let name = plan["tasks"][1]["name"].as_str().unwrap().to_string();
    let run = dir.join("exp").join(&name);
    let mut first = spawn_task(&dir, "1");
    // Once it has saved an epoch, a second copy of the task is refused: the run's lock.
    wait_for(&run.join("checkpoint-last.safetensors"));
    let e = fails(&dir, &["sweep", "--out", "exp", "--task", "1"]);
    assert!(e.contains("run.lock") || e.contains("another"), "{e}");
    // Killed as a scheduler kills (no chance to save), then run again: it resumes.
    first.kill().unwrap();
    first.wait().unwrap();
    let e = fails(&dir, &["sweep", "--out", "exp", "--collect"]);
    assert!(
        e.contains(&format!("task 1 ({name}): started, not finished")),
        "{e}"
    );
    for i in ["0", "1", "2", "3"] {
        ok(&dir, &["sweep", "--out", "exp", "--task", i]);
    }
    ok(&dir, &["sweep", "--out", "exp", "--collect"]);
    ok(
        &dir,
        &["sweep", "grid.toml", "--data", "d.csv", "--out", "local"],
    );
    assert_eq!(
        without_seconds(&read(dir.join("exp/results.csv"))),
        without_seconds(&read(dir.join("local/results.csv")))
    );
}

#[test]
fn a_task_refuses_data_that_changed_since_the_plan() {
    let dir = setup("data", 1);
    ok(
        &dir,
        &[
            "sweep",
            "grid.toml",
            "--data",
            "d.csv",
            "--out",
            "exp",
            "--plan",
        ],
    );
    std::fs::remove_file(dir.join("d.csv")).unwrap();
    ok(
        &dir,
        &["synth", "--out", "d.csv", "--rows", "600", "--seed", "4"],
    );
    let e = fails(&dir, &["sweep", "--out", "exp", "--task", "0"]);
    assert!(
        e.contains("the data file changed since the experiment was planned"),
        "{e}"
    );
}
