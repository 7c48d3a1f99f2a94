//! `fergpu export --weights OUT [--f16]`: a run's checkpoint as weights to ship, with where
//! they come from (the run's settings, seed, commit and test results) in the metadata, read
//! back by every command that takes a checkpoint.

use fergpu::checkpoint::Checkpoint;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn fergpu(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fergpu"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fergpu {args:?}:\n{text}");
    text
}

/// A fresh folder `name` under the temporary folder with `d.csv` (400 generated faces) and
/// `run/`, the MLP trained on it for 2 epochs, seed 7, with `extra` flags.
fn trained_mlp(name: &str, extra: &[&str]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fergpu-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    fergpu(
        &dir,
        &["synth", "--out", "d.csv", "--rows", "400", "--seed", "5"],
    );
    let mut train = vec![
        "train",
        "--data",
        "d.csv",
        "--model",
        "mlp",
        "--epochs",
        "2",
        "--seed",
        "7",
        "--adapter",
        "cpu",
        "--quiet",
        "--out",
        "run",
    ];
    train.extend(extra);
    fergpu(&dir, &train);
    dir
}

#[test]
fn shipped_weights_carry_their_runs_provenance_and_evaluate_like_the_checkpoint() {
    let dir = trained_mlp("export-weights", &[]);
    let said = fergpu(
        &dir,
        &[
            "export",
            "--checkpoint",
            "run/checkpoint-best.safetensors",
            "--weights",
            "m.safetensors",
            "--f16",
        ],
    );
    assert!(
        said.contains("f16 weights") && !said.contains("without"),
        "{said}"
    );
    let bytes = std::fs::read(dir.join("m.safetensors")).unwrap();
    let p: Value = serde_json::from_str(&Checkpoint::provenance(&bytes).unwrap()).unwrap();
    assert_eq!(p["storage"], "f16");
    assert_eq!(p["checkpoint"], "checkpoint-best.safetensors");
    assert_eq!(p["run"]["settings"]["run"]["seed"], 7);
    assert_eq!(p["run"]["settings"]["model"]["model"], "mlp");
    assert!(p["run"]["record"]["git_commit"].is_string());
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        p["run"]["summary"]["test_accuracy"],
        summary["test_accuracy"]
    );
    // Half the f32 checkpoint's size; the same predictions to f16's rounding.
    let full = std::fs::metadata(dir.join("run/checkpoint-best.safetensors"))
        .unwrap()
        .len();
    assert!(
        (bytes.len() as u64) < full * 6 / 10,
        "{} vs {full}",
        bytes.len()
    );
    let ck = Checkpoint::load(&dir.join("run/checkpoint-best.safetensors")).unwrap();
    let shipped = Checkpoint::load(&dir.join("m.safetensors")).unwrap();
    let worst = ck
        .params
        .iter()
        .zip(&shipped.params)
        .map(|(a, b)| (a - b).abs() / a.abs().max(1e-3))
        .fold(0f32, f32::max);
    assert!(worst < 1e-3, "worst relative change {worst}");
    let eval = |ck: &str| {
        fergpu(
            &dir,
            &[
                "eval",
                "--checkpoint",
                ck,
                "--data",
                "d.csv",
                "--adapter",
                "cpu",
            ],
        )
        .lines()
        .find(|l| l.contains("accuracy"))
        .and_then(|l| l.split("accuracy ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string()
    };
    // The accuracy; the loss may move in its last digits with f16's rounding.
    assert_eq!(
        eval("run/checkpoint-best.safetensors"),
        eval("m.safetensors")
    );
    // Also as f32, and never over its own input.
    fergpu(
        &dir,
        &[
            "export",
            "--checkpoint",
            "m.safetensors",
            "--weights",
            "m32.safetensors",
        ],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_fergpu"))
        .current_dir(&dir)
        .args([
            "export",
            "--checkpoint",
            "m.safetensors",
            "--weights",
            "m.safetensors",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The accuracy line `fergpu eval` prints, from its output.
fn accuracy_line(text: &str) -> String {
    text.lines()
        .find(|l| l.contains("accuracy"))
        .unwrap_or_else(|| panic!("no accuracy in:\n{text}"))
        .to_string()
}

#[test]
fn eval_average_evaluates_the_moving_average_a_run_kept_and_refuses_a_checkpoint_without_one() {
    let dir = trained_mlp("eval-average", &["--ema", "0.9"]);
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--data", "d.csv", "--adapter", "cpu", "--split"];
        args.extend(["PrivateTest", "--checkpoint"]);
        args.extend(extra);
        accuracy_line(&fergpu(&dir, &args))
    };
    let last_raw = eval(&["run/checkpoint-last.safetensors"]);
    let last_avg = eval(&["run/checkpoint-last.safetensors", "--average"]);
    // Validation, and so checkpoint-best, uses the average: with the best epoch the last,
    // checkpoint-best is checkpoint-last's average.
    let metrics = std::fs::read_to_string(dir.join("run/metrics.csv")).unwrap();
    let val: Vec<f64> = metrics
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(4).unwrap().parse().unwrap())
        .collect();
    if val[1] >= val[0] {
        assert_eq!(last_avg, eval(&["run/checkpoint-best.safetensors"]));
    }
    assert_ne!(last_raw, last_avg, "the average is not the weights");
    // checkpoint-best holds weights only: no average to take.
    let out = Command::new(env!("CARGO_BIN_EXE_fergpu"))
        .current_dir(&dir)
        .args(["eval", "--data", "d.csv", "--adapter", "cpu", "--average"])
        .args(["--checkpoint", "run/checkpoint-best.safetensors"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--average") && stderr.contains("--ema"),
        "{stderr}"
    );
}
