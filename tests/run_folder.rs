//! What `fergpu train` leaves in its run folder, checked file by file on a short MLP run on
//! the CPU backend: settings, per-epoch metrics, curves, confusion reports that agree with
//! `fergpu eval`, the summary and both checkpoints. Also: output that is not a terminal has
//! no progress-bar escape codes.

mod support;

use fergpu::backend::cpu::CpuBackend;
use fergpu::checkpoint::Checkpoint;
use fergpu::data::{csv, Usage, EMOTIONS};
use fergpu::eval::evaluate_checkpoint;
use fergpu::metrics::Confusion;
use std::path::{Path, PathBuf};
use support::{csv_rows, fergpu, fresh_dir, read_json, run_ok, write_synth_csv};

const EPOCHS: usize = 3;

/// Trains the MLP for [`EPOCHS`] epochs on 400 generated faces; returns the data file, the
/// run folder and the command's stdout + stderr.
fn short_run(name: &str, extra: &[&str]) -> (PathBuf, PathBuf, String) {
    let dir = fresh_dir(name);
    let data = dir.join("faces.csv");
    write_synth_csv(&data, 400, 21);
    let out = dir.join("run");
    let mut args = vec![
        "train".to_string(),
        "--data".into(),
        data.display().to_string(),
        "--model".into(),
        "mlp".into(),
        "--epochs".into(),
        EPOCHS.to_string(),
        "--batch-size".into(),
        "16".into(),
        "--seed".into(),
        "7".into(),
        "--adapter".into(),
        "cpu".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (stdout, stderr) = run_ok(&mut fergpu(&args));
    (data, out, format!("{stdout}{stderr}"))
}

#[test]
fn a_short_run_leaves_every_file_readable_and_consistent() {
    let (data, out, output) = short_run("runfolder", &[]);
    assert_plain(&output);
    for e in 1..=EPOCHS {
        assert!(
            output.contains(&format!("epoch {e}/{EPOCHS}  train loss")),
            "no summary line for epoch {e}:\n{output}"
        );
    }
    check_config(&out);
    let val_accs = check_metrics(&out);
    check_images(&out);
    let test = test_split(&data);
    let eval = evaluate_checkpoint(
        &CpuBackend::new(0),
        &Checkpoint::load(&out.join("checkpoint-best.safetensors")).unwrap(),
        &test,
        false,
    )
    .unwrap();
    assert_eq!(eval.confusion.total(), test.len() as u64);
    assert_eq!(
        confusion_from_html(&out.join("confusion.html")),
        eval.confusion
    );
    assert_eq!(eval_cli_confusion(&data, &out), eval.confusion);
    check_summary(&out, &eval.confusion, &val_accs);
    check_checkpoints(&out);
}

#[test]
fn quiet_runs_print_the_epoch_lines_and_nothing_that_redraws() {
    let (_, out, output) = short_run("runquiet", &["--quiet"]);
    assert_plain(&output);
    let epoch_lines = output.lines().filter(|l| l.starts_with("epoch ")).count();
    assert_eq!(epoch_lines, EPOCHS, "{output}");
    assert!(out.join("summary.json").exists());
}

/// No escape sequences and no carriage returns: a bar redraws with those.
fn assert_plain(output: &str) {
    assert!(!output.contains("\x1b["), "escape codes in:\n{output}");
    assert!(!output.contains('\r'), "carriage return in:\n{output}");
}

fn check_config(out: &Path) {
    let config = read_json(&out.join("config.json"));
    let c = &config["settings"];
    for (section, key) in [
        ("model", "model"),
        ("model", "activation"),
        ("model", "dense_activation"),
        ("schedule", "epochs"),
        ("run", "batch_size"),
        ("optimizer", "lr"),
        ("loss", "class_weight"),
        ("run", "seed"),
        ("schedule", "patience"),
        ("schedule", "lr_schedule"),
        ("data", "data"),
        ("device", "adapter"),
        ("run", "out"),
        ("run", "quiet"),
    ] {
        assert!(
            c[section].get(key).is_some(),
            "config.json has no settings.{section}.{key}"
        );
    }
    assert_eq!(c["model"]["model"], "mlp");
    assert_eq!(c["schedule"]["epochs"], EPOCHS);
    assert_eq!(c["run"]["batch_size"], 16);
    assert_eq!(c["run"]["seed"], 7);
    assert_eq!(c["optimizer"]["lr"], 1e-3);
    assert_eq!(c["model"]["activation"], "relu");
    assert_eq!(c["loss"]["class_weight"], "none");
    assert_eq!(c["schedule"]["lr_schedule"], "constant");
    assert_eq!(c["device"]["adapter"], "cpu");
    assert_eq!(c["data"]["train_split"][0], "Training");
    let adapter = config["adapter"].as_str().unwrap();
    assert!(adapter.contains("CPU"), "adapter {adapter}");
    assert_eq!(config["fergpu_version"], env!("CARGO_PKG_VERSION"));
    assert!(config["git_commit"].is_string());
    assert!(config["train_images"].as_u64().unwrap() > 0);
    assert!(config["parameters"].as_u64().unwrap() > 0);
    // The run folder reads its own settings back.
    let back = fergpu::run::RunFolder::new(out).read_settings().unwrap();
    assert_eq!(back.model.model, "mlp");
    assert_eq!(back.run.batch_size, 16);
}

/// Checks `metrics.csv` and returns the validation accuracy of each epoch.
fn check_metrics(out: &Path) -> Vec<f64> {
    let rows = csv_rows(&out.join("metrics.csv"));
    assert_eq!(
        rows[0].join(","),
        "epoch,train_loss,train_acc,val_loss,val_acc,seconds,images_per_s"
    );
    assert_eq!(rows.len(), 1 + EPOCHS, "one row per epoch: {rows:?}");
    let mut val_accs = Vec::new();
    for (i, row) in rows[1..].iter().enumerate() {
        assert_eq!(row.len(), 7, "{row:?}");
        assert_eq!(row[0], (i + 1).to_string());
        let v: Vec<f64> = row[1..].iter().map(|x| x.parse().unwrap()).collect();
        let [train_loss, train_acc, val_loss, val_acc, seconds, ips] = v[..] else {
            unreachable!()
        };
        assert!(train_loss.is_finite() && train_loss > 0.0, "{row:?}");
        assert!(val_loss.is_finite() && val_loss > 0.0, "{row:?}");
        assert!((0.0..=1.0).contains(&train_acc), "{row:?}");
        assert!((0.0..=1.0).contains(&val_acc), "{row:?}");
        assert!(seconds > 0.0 && ips > 0.0, "{row:?}");
        val_accs.push(val_acc);
    }
    val_accs
}

fn check_images(out: &Path) {
    let curves = image::open(out.join("curves.png")).unwrap();
    assert_eq!(
        (curves.width(), curves.height()),
        fergpu::report::plot::CURVES_SIZE
    );
    let confusion = image::open(out.join("confusion.png")).unwrap();
    assert_eq!(
        (confusion.width(), confusion.height()),
        fergpu::report::confusion_png::CONFUSION_SIZE
    );
    // Not a blank canvas: the plots put ink on a good share of pixels.
    let rgb = confusion.to_rgb8();
    let inked = rgb.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(
        inked > rgb.pixels().len() / 10,
        "confusion.png is nearly blank"
    );
    let svg = std::fs::read_to_string(out.join("curves.svg")).unwrap();
    assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..80]);
    assert!(svg.trim_end().ends_with("</svg>"));
    for word in ["Accuracy", "Loss", "Training", "Validation", "Epoch"] {
        assert!(svg.contains(word), "curves.svg lacks '{word}'");
    }
}

/// The PublicTest rows of the data file: the default test split.
fn test_split(data: &Path) -> fergpu::data::Dataset {
    let (all, _) = csv::load(data, &csv::LoadOptions::default()).unwrap();
    all.split(&[Usage::PublicTest])
}

/// The counts of `confusion.html`, read from each cell's `data-true`, `data-pred` and
/// `data-count` attributes.
fn confusion_from_html(path: &Path) -> Confusion {
    let html = std::fs::read_to_string(path).unwrap();
    let attr = |cell: &str, name: &str| -> String {
        let start = cell.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        cell[start..].split('"').next().unwrap().to_string()
    };
    let class = |name: String| EMOTIONS.iter().position(|&e| e == name).unwrap();
    let mut c = Confusion::default();
    let cells: Vec<&str> = html.split("<td data-true=").skip(1).collect();
    assert_eq!(
        cells.len(),
        49,
        "confusion.html should have 7×7 count cells"
    );
    for cell in cells {
        let cell = format!("data-true={cell}");
        let t = class(attr(&cell, "data-true"));
        let p = class(attr(&cell, "data-pred"));
        c.counts[t][p] = attr(&cell, "data-count").parse().unwrap();
    }
    // The shown numbers are the same counts.
    for name in EMOTIONS {
        assert!(html.contains(&format!(">{name}</th>")), "no {name} heading");
    }
    c
}

/// The confusion matrix `fergpu eval` prints for the best checkpoint on PublicTest.
fn eval_cli_confusion(data: &Path, out: &Path) -> Confusion {
    let ckpt = out.join("checkpoint-best.safetensors");
    let (stdout, _) = run_ok(&mut fergpu([
        "eval",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--split",
        "PublicTest",
        "--adapter",
        "cpu",
    ]));
    let mut c = Confusion::default();
    let mut seen = 0;
    for line in stdout.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() == 8 {
            if let Some(t) = EMOTIONS.iter().position(|&e| e == cols[0]) {
                if let Ok(row) = cols[1..]
                    .iter()
                    .map(|x| x.parse::<u64>())
                    .collect::<Result<Vec<_>, _>>()
                {
                    c.counts[t].copy_from_slice(&row);
                    seen += 1;
                }
            }
        }
    }
    assert_eq!(seen, 7, "no 7-row confusion table in:\n{stdout}");
    c
}

fn check_summary(out: &Path, confusion: &Confusion, val_accs: &[f64]) {
    let s = read_json(&out.join("summary.json"));
    for key in [
        "test_accuracy",
        "test_loss",
        "macro_f1",
        "per_class",
        "confusion",
        "best_epoch",
        "best_val_accuracy",
        "epochs_run",
        "wall_seconds",
        "adapter",
    ] {
        assert!(s.get(key).is_some(), "summary.json has no {key}");
    }
    let acc = s["test_accuracy"].as_f64().unwrap();
    assert!((acc - confusion.accuracy()).abs() < 1e-12);
    assert!((s["macro_f1"].as_f64().unwrap() - confusion.macro_f1()).abs() < 1e-12);
    let per_class = s["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 7);
    let scores = confusion.class_scores();
    for (i, c) in per_class.iter().enumerate() {
        assert_eq!(c["emotion"], EMOTIONS[i]);
        for (key, want) in [
            ("precision", scores[i].precision),
            ("recall", scores[i].recall),
            ("f1", scores[i].f1),
        ] {
            assert!((c[key].as_f64().unwrap() - want).abs() < 1e-12, "{key} {c}");
        }
        assert_eq!(c["support"], scores[i].support);
    }
    // The first epoch with the highest validation accuracy.
    let best = val_accs
        .iter()
        .enumerate()
        .fold(0, |b, (i, &a)| if a > val_accs[b] { i } else { b });
    assert_eq!(s["best_epoch"], best + 1);
    assert_eq!(s["epochs_run"], EPOCHS);
    assert!(s["wall_seconds"].as_f64().unwrap() > 0.0);
}

fn check_checkpoints(out: &Path) {
    let last = Checkpoint::load(&out.join("checkpoint-last.safetensors")).unwrap();
    let best = Checkpoint::load(&out.join("checkpoint-best.safetensors")).unwrap();
    assert_eq!(last.spec, best.spec);
    assert_eq!(last.params.len(), best.params.len());
    assert!(last.params.iter().all(|p| p.is_finite()));
    let adam = last
        .optimizer
        .expect("checkpoint-last carries Adam's state");
    assert_eq!(adam.m.len(), last.params.len());
    assert!(adam.t > 0);
    assert!(
        last.train_state.is_some(),
        "checkpoint-last carries resume state"
    );
}
