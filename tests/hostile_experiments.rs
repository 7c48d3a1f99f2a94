//! Nothing silently wrong in experiments: a run folder records what made it (settings,
//! data fingerprint and image counts, fold plan, fergpu version), and `cv`, `sweep` and
//! `train --resume` reuse a folder only when all of that matches, naming every difference
//! otherwise. An interrupted `cv` says how to continue the experiment; `--cv-val` without
//! rows is an error; default folders never collide; `--out` never lands on a file or on a
//! training run's folder.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::{fergpu, fresh_dir, read_json, run, run_ok, spawn_until, text, write_synth_csv};

/// Runs `cmd`, asserts it failed with an error message (no panic) and returns its stderr.
fn refused(cmd: &mut Command) -> String {
    let out = run(cmd);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{cmd:?}:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("error: ") && !stderr.contains("panicked"),
        "{stderr}"
    );
    stderr
}

/// Every file under `dir` (recursively) with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                files.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    files
}

/// `fergpu cv` of the MLP for one epoch on the CPU, two folds unless `args` say otherwise.
fn cv(data: &Path, out: &Path, args: &[&str]) -> Command {
    let mut cmd = fergpu(["cv", "--model", "mlp", "--epochs", "1", "--adapter", "cpu"]);
    cmd.arg("--quiet")
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out);
    if !args.contains(&"--folds") {
        cmd.args(["--folds", "2"]);
    }
    cmd.args(args);
    cmd
}

/// `fergpu sweep` of `grid` on the CPU.
fn sweep(grid: &Path, data: &Path, out: &Path, args: &[&str]) -> Command {
    let mut cmd = fergpu(["sweep", "--adapter", "cpu", "--quiet", "--data"]);
    cmd.arg(data).arg("--out").arg(out).args(args).arg(grid);
    cmd
}

#[test]
fn a_sweep_rerun_with_other_settings_is_refused_and_leaves_every_file_alone() {
    let dir = fresh_dir("hx-sweep");
    let data = dir.join("d.csv");
    write_synth_csv(&data, 200, 3);
    let grid = dir.join("g.toml");
    let out = dir.join("S");
    std::fs::write(
        &grid,
        "[grid]\nlr = [0.1, 0.0001]\n[fixed]\nmodel = \"mlp\"\nepochs = 1\n",
    )
    .unwrap();
    run_ok(&mut sweep(&grid, &data, &out, &[]));
    let before = tree(&out);
    std::fs::write(
        &grid,
        "[grid]\nlr = [0.1, 0.0001]\n[fixed]\nmodel = \"mlp\"\nepochs = 2\n",
    )
    .unwrap();
    let e = refused(&mut sweep(&grid, &data, &out, &[]));
    assert!(
        e.contains("lr-0.1 holds a run that is not this one: epochs 1 there, 2 here"),
        "{e}"
    );
    assert_eq!(tree(&out), before, "a refused sweep changes nothing");

    // A stopped run (no summary yet) is not resumed with other settings either.
    std::fs::write(
        &grid,
        "[grid]\nlr = [0.1, 0.0001]\n[fixed]\nmodel = \"mlp\"\nepochs = 1\n",
    )
    .unwrap();
    std::fs::remove_file(out.join("lr-0.1/summary.json")).unwrap();
    let config = std::fs::read(out.join("lr-0.1/config.json")).unwrap();
    let e = refused(&mut sweep(&grid, &data, &out, &["--optimizer", "sgd"]));
    assert!(e.contains("optimizer \"adam\" there, \"sgd\" here"), "{e}");
    assert_eq!(
        std::fs::read(out.join("lr-0.1/config.json")).unwrap(),
        config
    );

    // The same sweep again resumes it, on the same data reached by another path.
    let moved = dir.join("moved.csv");
    std::fs::copy(&data, &moved).unwrap();
    let (_, stderr) = run_ok(&mut sweep(&grid, &moved, &out, &[]));
    assert!(
        stderr.contains("lr-1e-4: already finished, skipped"),
        "{stderr}"
    );
    assert!(out.join("lr-0.1/summary.json").exists());
    // Other data (one row fewer) is another experiment.
    let text = std::fs::read_to_string(&data).unwrap();
    let cut: Vec<&str> = text.lines().collect();
    std::fs::write(&moved, cut[..cut.len() - 1].join("\n") + "\n").unwrap();
    let e = refused(&mut sweep(&grid, &moved, &out, &[]));
    assert!(e.contains("fingerprint") && e.contains("images"), "{e}");
}

#[test]
fn cv_reuses_a_fold_only_for_the_same_plan_and_settings() {
    let dir = fresh_dir("hx-cv");
    let data = dir.join("d.csv");
    write_synth_csv(&data, 200, 4);
    let out = dir.join("C");
    run_ok(&mut cv(&data, &out, &[]));
    let before = tree(&out);
    let e = refused(&mut cv(&data, &out, &["--folds", "3"]));
    assert!(
        e.contains("holds a cv (2 folds, contiguous") && e.contains("this is a cv (3 folds"),
        "{e}"
    );
    let e = refused(&mut cv(&data, &out, &["--lr", "0.01"]));
    assert!(
        e.contains("fold-1 holds a run that is not this one: lr 0.001 there, 0.01 here"),
        "{e}"
    );
    assert_eq!(tree(&out), before);
    let (_, stderr) = run_ok(&mut cv(&data, &out, &[]));
    assert_eq!(
        stderr.matches("already finished, skipped").count(),
        2,
        "{stderr}"
    );
    // A fold is not a run of its own: train --resume refuses it, naming the experiment.
    let e = refused(fergpu(["train", "--adapter", "cpu", "--resume"]).arg(out.join("fold-1")));
    assert!(
        e.contains("it is fold 1 of a cross-validation (2 folds")
            && e.contains("running that command again"),
        "{e}"
    );
    assert_eq!(tree(&out), before);
    // Each fold says where its splits come from.
    let config = read_json(&out.join("fold-1/config.json"));
    assert_eq!(config["settings"]["data"]["val_split"][0], "PublicTest");
    assert_eq!(config["experiment"]["part"], "fold 1");
}

#[test]
fn cv_without_validation_rows_is_an_error_naming_the_flag() {
    let dir = fresh_dir("hx-cv-val");
    let ds = fergpu::data::synth::generate(150, 5);
    let rows: Vec<usize> = (0..ds.len())
        .filter(|&r| ds.usage[r] != fergpu::data::Usage::PublicTest)
        .collect();
    let data = dir.join("no-public.csv");
    fergpu::data::csv::write(&data, &ds.subset(&rows)).unwrap();
    let out = dir.join("C");
    let e = refused(&mut cv(&data, &out, &[]));
    assert!(
        e.contains("--cv-val PublicTest: the data has no rows of it"),
        "{e}"
    );
    assert!(!out.join("fold-1").exists());
    // Validating on the held-out folds is a choice that can be made.
    run_ok(&mut cv(&data, &out, &["--cv-val", "Training"]));
}

#[test]
fn resume_refuses_changed_data_and_names_the_counts() {
    let dir = fresh_dir("hx-resume-data");
    let data = dir.join("d.csv");
    write_synth_csv(&data, 200, 6);
    let out = dir.join("run");
    run_ok(
        fergpu([
            "train",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--adapter",
            "cpu",
            "--quiet",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out),
    );
    let text = std::fs::read_to_string(&data).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&data, lines[..60].join("\n") + "\n").unwrap();
    let before = tree(&out);
    let e = refused(fergpu(["train", "--epochs", "2", "--resume"]).arg(&out));
    assert!(
        e.contains("training/validation/test images, this data")
            && e.contains("fingerprint")
            && e.contains("cannot resume on other data"),
        "{e}"
    );
    assert_eq!(tree(&out), before);
}

/// A cross-validation of the seed CNN on one thread, slow enough to be stopped in fold 1.
fn slow_cv(out: &Path, log: &Path) -> std::process::Child {
    let mut cmd = fergpu([
        "cv",
        "--folds",
        "2",
        "--synthetic",
        "150",
        "--model",
        "cnn",
        "--epochs",
        "1",
        "--batch-size",
        "40",
        "--adapter",
        "cpu",
        "--threads",
        "1",
        "--quiet",
    ]);
    cmd.arg("--out").arg(out);
    spawn_until(&mut cmd, log, "training cnn", "fold 1 starting")
}

#[test]
#[cfg(unix)]
fn an_interrupted_cv_says_how_to_continue_the_experiment_and_the_same_command_does() {
    let dir = fresh_dir("hx-cv-stop");
    let out = dir.join("C");
    let log = dir.join("cv.log");
    let mut child = slow_cv(&out, &log);
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(
        !log.contains("train --resume") && !log.contains("no fold finished"),
        "{log}"
    );
    assert!(
        log.contains("interrupted after 0 of 2 folds")
            && log.contains("fergpu cv --folds 2 --synthetic 150")
            && log.contains(&format!("--out {}", out.display())),
        "{log}"
    );
    let again: Vec<String> = log
        .lines()
        .find(|l| l.trim_start().starts_with("fergpu cv"))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect();
    let (_, stderr) = run_ok(&mut fergpu(&again));
    assert!(stderr.contains("resuming"), "{stderr}");
    assert!(out.join("cv.csv").exists() && out.join("fold-2/summary.json").exists());
}

/// `fergpu train` of the MLP for one epoch without `--out`, in `cwd`.
fn train_in(cwd: &Path) -> Command {
    let mut cmd = fergpu([
        "train",
        "--synthetic",
        "60",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--adapter",
        "cpu",
        "--quiet",
    ]);
    cmd.current_dir(cwd);
    cmd
}

/// Waits for every process in `children` and asserts each succeeded, with its stderr.
fn all_succeed(children: Vec<std::process::Child>) {
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn runs_started_together_without_out_get_their_own_folders() {
    let dir = fresh_dir("hx-stamp");
    let children: Vec<std::process::Child> = (0..3)
        .map(|_| {
            train_in(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    all_succeed(children);
    let runs: Vec<PathBuf> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 3, "{runs:?}");
    for r in &runs {
        assert!(r.join("summary.json").exists(), "{r:?}");
    }
    // Two cross-validations started together get their own folders too.
    let cvs: Vec<std::process::Child> = ["0.001", "0.01"]
        .iter()
        .map(|lr| {
            let mut cmd = fergpu([
                "cv",
                "--folds",
                "2",
                "--synthetic",
                "60",
                "--model",
                "mlp",
                "--epochs",
                "1",
                "--adapter",
                "cpu",
                "--quiet",
                "--lr",
                lr,
            ]);
            cmd.current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    all_succeed(cvs);
    let mut lrs: Vec<f64> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("cv.csv").exists())
        .map(|p| {
            read_json(&p.join("fold-1/config.json"))["settings"]["optimizer"]["lr"]
                .as_f64()
                .unwrap()
        })
        .collect();
    lrs.sort_by(f64::total_cmp);
    assert_eq!(lrs, [0.001, 0.01]);
    // A run refused before training leaves no empty default folder.
    refused(train_in(&dir).args(["--lr", "nan"]));
    let mut missing_model = fergpu(["train", "--synthetic", "60", "--adapter", "cpu"]);
    refused(
        missing_model
            .args(["--model", "missing.toml"])
            .current_dir(&dir),
    );
    let mut too_many_folds = fergpu(["cv", "--synthetic", "60", "--adapter", "cpu"]);
    refused(too_many_folds.args(["--folds", "1000"]).current_dir(&dir));
    assert_eq!(std::fs::read_dir(dir.join("runs")).unwrap().count(), 5);
}

#[test]
fn out_must_be_a_folder_and_experiments_never_write_into_a_training_run() {
    let dir = fresh_dir("hx-out");
    let file = dir.join("notes.txt");
    std::fs::write(&file, "mine").unwrap();
    let e = refused(train_in(&dir).arg("--out").arg(&file));
    assert!(e.contains("notes.txt: a file, not a folder"), "{e}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");

    let run = dir.join("run");
    run_ok(train_in(&dir).arg("--out").arg(&run));
    let before = tree(&run);
    let data = dir.join("d.csv");
    write_synth_csv(&data, 120, 7);
    let e = refused(&mut cv(&data, &run, &[]));
    assert!(e.contains("holds a training run"), "{e}");
    // Also when the folder comes from the run's own config.json (its run.out).
    let e = refused(
        fergpu(["cv", "--folds", "2", "--adapter", "cpu", "--config"]).arg(run.join("config.json")),
    );
    assert!(e.contains("holds a training run"), "{e}");
    let grid = dir.join("g.toml");
    std::fs::write(
        &grid,
        "[grid]\nseed = [1, 2]\n[fixed]\nmodel = \"mlp\"\nepochs = 1\n",
    )
    .unwrap();
    let e = refused(&mut sweep(&grid, &data, &run, &[]));
    assert!(e.contains("holds a training run"), "{e}");
    let e = refused(
        fergpu(["sweep", "--adapter", "cpu", "--config"])
            .arg(run.join("config.json"))
            .arg(&grid),
    );
    assert!(e.contains("holds a training run"), "{e}");
    assert_eq!(tree(&run), before, "the run's folder is untouched");
}

#[test]
fn one_setting_in_two_spellings_is_an_error_naming_both() {
    use fergpu::experiment::parse_grid;
    for (text, words) in [
        (
            "[grid]\nlr = [0.1, 0.0001]\n[fixed]\n\"optimizer.lr\" = 0.5\n",
            "g.toml:4: optimizer.lr: set in [fixed], and in [grid] as 'lr'",
        ),
        (
            "[fixed]\nepochs = 2\n\"schedule.epochs\" = 3\nmodel = \"mlp\"\n[grid]\nseed = [1]\n",
            "g.toml:3: [fixed] schedule.epochs: the same setting as 'epochs' (line 2)",
        ),
        (
            "[grid]\nlr = [0.1]\n\"optimizer.lr\" = [0.2]\n",
            "g.toml:3: [grid] optimizer.lr: the same setting as 'lr' (line 2)",
        ),
        (
            "[[run]]\nbatch_size = 8\n\"run.batch_size\" = 16\n",
            "[[run]] #1 run.batch_size: the same setting as 'batch_size'",
        ),
    ] {
        let e = parse_grid(text, "g.toml").unwrap_err().to_string();
        assert!(e.contains(words), "{text}\n{e}");
    }
    // A [[run]] overrides [fixed] in whichever spelling: its own value is the one trained.
    let runs = parse_grid(
        "[fixed]\n\"optimizer.lr\" = 0.5\n[[run]]\nname = \"fast\"\nlr = 0.1\n",
        "g.toml",
    )
    .unwrap();
    let mut s = fergpu::settings::Settings::default();
    for (k, v) in &runs[0].settings {
        s.set(k, v.to_json()).unwrap();
    }
    assert_eq!(s.optimizer.lr, 0.1, "{:?}", runs[0].settings);
    assert_eq!(runs[0].settings.len(), 1, "{:?}", runs[0].settings);

    let dir = fresh_dir("hx-spelling");
    let recipe = dir.join("r.toml");
    std::fs::write(&recipe, "epochs = 2\n[schedule]\nepochs = 3\n").unwrap();
    let e = refused(
        fergpu(["train", "--synthetic", "60", "--adapter", "cpu", "--config"])
            .arg(&recipe)
            .arg("--out")
            .arg(dir.join("run")),
    );
    assert!(
        e.contains("r.toml: 'epochs' and 'schedule.epochs' are the same setting"),
        "{e}"
    );
    assert!(!dir.join("run").exists());
}
