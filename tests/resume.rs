//! Resume equivalence on the CPU backend: a run stopped (mid-epoch or between epochs) and
//! resumed ends with the same weights, batch norms' running statistics, optimizer moments
//! and step count, bit for bit, as a run that was never stopped; its metrics agree too. With
//! Adam, with SGD (Nesterov momentum, weight decay) under a warm-up and a plateau schedule on
//! validation accuracy, and with a model with batch norm and dropout, whose masks are keyed
//! by the step count.

mod support;

use fergpu::augment::Augment;
use fergpu::backend::OptimizerKind;
use fergpu::cancel::Cancel;
use fergpu::checkpoint::Checkpoint;
use fergpu::data::{synth, Usage};
use fergpu::report::read_metrics_csv;
use fergpu::run::{train_on, Start};
use fergpu::settings::{Settings, Splits};
use fergpu::train::ClassWeight;
use std::path::{Path, PathBuf};
use support::{fergpu, fresh_dir, run, run_ok, text, write_synth_csv};

const NEW: Start = Start::New { overwrite: false };
const RESUME: Start = Start::Resume;

fn splits() -> Splits {
    let ds = synth::generate(300, 31);
    Splits {
        train: ds.split(&[Usage::Training]),
        val: ds.split(&[Usage::PrivateTest]),
        test: ds.split(&[Usage::PublicTest]),
    }
}

/// A 3-epoch MLP run whose learning rate changes (plateau schedule), whose loss is
/// class-weighted and whose images are flipped and shifted (augmentation drawn from the
/// shuffle's generator), so every piece of resumable state matters.
fn config(out: PathBuf, epochs: usize) -> Settings {
    let mut s = Settings::default();
    s.model.model = "mlp".into();
    s.schedule.epochs = epochs;
    s.run.batch_size = 16;
    s.run.seed = 9;
    s.loss.class_weight = ClassWeight::Balanced;
    s.schedule.lr_schedule = "plateau:patience=1,factor=0.5".into();
    s.schedule.patience = Some(5);
    s.augment.augment = Augment::parse("flip,shift=2").unwrap();
    s.device.adapter = "cpu".into();
    s.run.out = Some(out);
    s.run.quiet = true;
    s
}

/// [`config`] with SGD, Nesterov momentum and weight decay, a warm-up of 2 epochs (so the
/// stop falls inside it), a plateau schedule on validation accuracy and label smoothing.
fn config_sgd(out: PathBuf, epochs: usize) -> Settings {
    let mut s = config(out, epochs);
    s.optimizer.optimizer = OptimizerKind::Sgd;
    s.optimizer.lr = 0.02;
    s.optimizer.momentum = 0.9;
    s.optimizer.nesterov = true;
    s.optimizer.weight_decay = 5e-4;
    s.schedule.warmup = 2;
    s.schedule.lr_schedule = "plateau:metric=acc,patience=1,factor=0.5".into();
    s.loss.label_smoothing = 0.1;
    s
}

/// No stop request.
fn go() -> Cancel {
    Cancel::new()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Asserts two run folders hold bit-identical last and best checkpoints (weights, Adam
/// moments and step count) and the same per-epoch losses and accuracies.
fn assert_same_runs(a: &Path, b: &Path) {
    for name in ["checkpoint-last.safetensors", "checkpoint-best.safetensors"] {
        let x = Checkpoint::load(&a.join(name)).unwrap();
        let y = Checkpoint::load(&b.join(name)).unwrap();
        assert_eq!(x.spec, y.spec, "{name}");
        assert!(
            bits(&x.running) == bits(&y.running),
            "{name}: running statistics differ"
        );
        assert!(
            bits(&x.params) == bits(&y.params),
            "{name}: weights differ in {} of {} values",
            x.params
                .iter()
                .zip(&y.params)
                .filter(|(p, q)| p.to_bits() != q.to_bits())
                .count(),
            x.params.len()
        );
        match (&x.optimizer, &y.optimizer) {
            (Some(ox), Some(oy)) => {
                assert_eq!(ox.t, oy.t, "{name}: Adam step count");
                assert!(bits(&ox.m) == bits(&oy.m), "{name}: Adam first moments");
                assert!(bits(&ox.v) == bits(&oy.v), "{name}: Adam second moments");
                let avg = |o: &fergpu::checkpoint::OptimizerState| {
                    o.average
                        .as_ref()
                        .map(|a| (bits(&a.params), bits(&a.running)))
                };
                assert!(avg(ox) == avg(oy), "{name}: the weights' averages differ");
            }
            (None, None) => {}
            _ => panic!("{name}: only one run saved Adam's state"),
        }
    }
    let strip = |dir: &Path| -> Vec<(usize, u64, u64, u64, u64)> {
        read_metrics_csv(&dir.join("metrics.csv"))
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.epoch,
                    r.train_loss.to_bits(),
                    r.train_acc.to_bits(),
                    r.val_loss.to_bits(),
                    r.val_acc.to_bits(),
                )
            })
            .collect()
    };
    assert_eq!(strip(a), strip(b), "metrics differ");
}

#[test]
fn stopped_mid_epoch_then_resumed_equals_uninterrupted_bit_for_bit() {
    let s = splits();
    let dir = fresh_dir("resume-mid");
    let whole = train_on(&config(dir.join("whole"), 3), &s, NEW, &go()).unwrap();
    assert!(!whole.interrupted);

    // A Ctrl-C already pending: the run stops after its first batch and saves.
    let cfg = config(dir.join("parts"), 3);
    let stop = Cancel::new();
    stop.request();
    let first = train_on(&cfg, &s, NEW, &stop);
    let first = first.unwrap();
    assert!(first.interrupted && first.summary.is_none());
    assert!(first.records.is_empty(), "stopped inside epoch 1");
    let saved = Checkpoint::load(&dir.join("parts/checkpoint-last.safetensors")).unwrap();
    assert_eq!(
        saved.optimizer.as_ref().unwrap().t,
        1,
        "one Adam step taken"
    );
    let state: serde_json::Value =
        serde_json::from_str(saved.train_state.as_ref().unwrap()).unwrap();
    assert_eq!(state["train"]["epoch"], 0);
    assert_eq!(state["train"]["next_batch"], 1);

    let rest = train_on(&cfg, &s, RESUME, &go()).unwrap();
    assert!(!rest.interrupted);
    assert_eq!(rest.records.len(), 3);
    assert_same_runs(&whole.out, &rest.out);
    let (a, b) = (whole.summary.unwrap(), rest.summary.unwrap());
    assert_eq!(a.confusion, b.confusion);
    assert_eq!(a.best_epoch, b.best_epoch);
}

/// [`config`] with every augmentation on: flips and shifts in the order, and scale,
/// rotation and erasing drawn into the warp buffer after them.
fn warped_config(out: PathBuf, epochs: usize) -> Settings {
    let mut s = config(out, epochs);
    s.augment.scale = 0.2;
    s.augment.rotate = 15.0;
    s.augment.erase = 0.5;
    s
}

#[test]
fn with_scale_rotation_and_erasing_a_resumed_run_equals_uninterrupted_bit_for_bit() {
    let s = splits();
    let dir = fresh_dir("resume-warp");
    let whole = train_on(&warped_config(dir.join("whole"), 2), &s, NEW, &go()).unwrap();

    // Stopped after the first batch, then resumed in the middle of epoch 1's draws.
    let cfg = warped_config(dir.join("parts"), 2);
    let stop = Cancel::new();
    stop.request();
    let first = train_on(&cfg, &s, NEW, &stop).unwrap();
    assert!(first.interrupted && first.records.is_empty());
    let rest = train_on(&cfg, &s, RESUME, &go()).unwrap();
    assert_eq!(rest.records.len(), 2);
    assert_same_runs(&whole.out, &rest.out);

    // The warp really reached training: without it the same seed ends elsewhere.
    let plain = train_on(&config(dir.join("plain"), 2), &s, NEW, &go()).unwrap();
    let last = |dir: &Path| {
        Checkpoint::load(&dir.join("checkpoint-last.safetensors"))
            .unwrap()
            .params
    };
    assert!(bits(&last(&whole.out)) != bits(&last(&plain.out)));
}

/// A model with batch norm over conv planes and over dense features, and dropout: conv 3×3
/// same (4) → batch norm → relu → 4×4 pool → global average pool → dense 16 → batch norm →
/// relu → dropout 0.5 → dense 7.
const BN_MODEL: &str = r#"
[[layers]]
type = "conv2d"
filters = 4
padding = "same"
activation = "linear"
[[layers]]
type = "batchnorm"
[[layers]]
type = "activation"
activation = "relu"
[[layers]]
type = "maxpool"
size = 4
[[layers]]
type = "globalavgpool"
[[layers]]
type = "dense"
units = 16
[[layers]]
type = "batchnorm"
[[layers]]
type = "activation"
activation = "relu"
[[layers]]
type = "dropout"
rate = 0.5
[[layers]]
type = "dense"
units = 7
"#;

#[test]
fn a_batch_norm_and_dropout_model_resumes_mid_epoch_bit_for_bit() {
    let s = splits();
    let dir = fresh_dir("resume-bn");
    let model = dir.join("bn.toml");
    std::fs::write(&model, BN_MODEL).unwrap();
    let cfg = |out: &str| {
        let mut c = config(dir.join(out), 2);
        c.model.model = model.to_str().unwrap().into();
        c
    };
    let whole = train_on(&cfg("whole"), &s, NEW, &go()).unwrap();
    let stop = Cancel::new();
    stop.request();
    let first = train_on(&cfg("parts"), &s, NEW, &stop).unwrap();
    assert!(first.interrupted);
    let saved = Checkpoint::load(&dir.join("parts/checkpoint-last.safetensors")).unwrap();
    // The running statistics moved in the one step taken, and were saved.
    assert!(saved.running.iter().any(|&v| v != 0.0 && v != 1.0));
    let rest = train_on(&cfg("parts"), &s, RESUME, &go()).unwrap();
    assert_eq!(rest.records.len(), 2);
    assert_same_runs(&whole.out, &rest.out);
    assert_eq!(
        whole.summary.unwrap().confusion,
        rest.summary.unwrap().confusion
    );
}

#[test]
fn a_run_keeping_a_weight_average_resumes_mid_epoch_bit_for_bit_and_tests_the_average() {
    let s = splits();
    let dir = fresh_dir("resume-ema");
    let model = dir.join("bn.toml");
    std::fs::write(&model, BN_MODEL).unwrap();
    let cfg = |out: &str| {
        let mut c = config(dir.join(out), 2);
        c.model.model = model.to_str().unwrap().into();
        c.optimizer.ema = 0.9;
        c
    };
    let whole = train_on(&cfg("whole"), &s, NEW, &go()).unwrap();
    let stop = Cancel::new();
    stop.request();
    let first = train_on(&cfg("parts"), &s, NEW, &stop).unwrap();
    assert!(first.interrupted);
    let saved = Checkpoint::load(&dir.join("parts/checkpoint-last.safetensors")).unwrap();
    let avg = saved.optimizer.as_ref().unwrap().average.clone();
    let avg = avg.expect("the last checkpoint keeps the average");
    assert_ne!(
        bits(&avg.params),
        bits(&saved.params),
        "the average lags the weights"
    );
    assert_eq!(avg.running.len(), saved.running.len());
    let rest = train_on(&cfg("parts"), &s, RESUME, &go()).unwrap();
    assert_same_runs(&whole.out, &rest.out);
    // The best checkpoint holds the average the run validated, not the raw weights.
    let best = Checkpoint::load(&whole.out.join("checkpoint-best.safetensors")).unwrap();
    let last = Checkpoint::load(&whole.out.join("checkpoint-last.safetensors")).unwrap();
    let last_avg = last.optimizer.unwrap().average.unwrap();
    let best_epoch = whole.summary.as_ref().unwrap().best_epoch;
    if best_epoch == 2 {
        assert!(bits(&best.params) == bits(&last_avg.params));
        assert!(bits(&best.running) == bits(&last_avg.running));
    }
    assert!(bits(&best.params) != bits(&last.params));
}

#[test]
fn sgd_with_warmup_and_plateau_on_accuracy_resumes_bit_for_bit() {
    let s = splits();
    let dir = fresh_dir("resume-sgd");
    let whole = train_on(&config_sgd(dir.join("whole"), 3), &s, NEW, &go()).unwrap();
    let cfg = config_sgd(dir.join("parts"), 3);
    // Stopped after the first batch (inside the warm-up), then extended to 3 epochs after
    // stopping again at the end of epoch 1.
    let stop = Cancel::new();
    stop.request();
    assert!(train_on(&cfg, &s, NEW, &stop).unwrap().interrupted);
    let one = train_on(&config_sgd(dir.join("parts"), 1), &s, RESUME, &go()).unwrap();
    assert_eq!(one.records.len(), 1);
    let rest = train_on(&cfg, &s, RESUME, &go()).unwrap();
    assert_eq!(rest.records.len(), 3);
    assert_same_runs(&whole.out, &rest.out);
    // The momentum buffer is saved as the first moment; SGD leaves the second at zero.
    let last = Checkpoint::load(&rest.out.join("checkpoint-last.safetensors")).unwrap();
    let opt = last.optimizer.unwrap();
    assert!(opt.m.iter().any(|&m| m != 0.0) && opt.v.iter().all(|&v| v == 0.0));
}

#[test]
fn stopped_between_epochs_then_resumed_equals_uninterrupted_bit_for_bit() {
    let s = splits();
    let dir = fresh_dir("resume-between");
    let whole = train_on(&config(dir.join("whole"), 3), &s, NEW, &go()).unwrap();
    // One epoch, then the same folder extended to three.
    let one = train_on(&config(dir.join("parts"), 1), &s, NEW, &go()).unwrap();
    assert_eq!(one.records.len(), 1);
    let rest = train_on(&config(dir.join("parts"), 3), &s, RESUME, &go()).unwrap();
    assert_eq!(rest.records.len(), 3);
    assert_same_runs(&whole.out, &rest.out);
}

/// The command line: `train --epochs 1`, then `train --resume DIR --epochs 3`, against a
/// straight 3-epoch run.
#[test]
fn cli_resume_extends_a_run_to_the_same_weights() {
    let dir = fresh_dir("resume-cli");
    let data = dir.join("faces.csv");
    write_synth_csv(&data, 300, 32);
    let train = |out: &Path, epochs: &str| {
        run_ok(&mut fergpu([
            "train",
            "--data",
            data.to_str().unwrap(),
            "--model",
            "mlp",
            "--batch-size",
            "16",
            "--epochs",
            epochs,
            "--adapter",
            "cpu",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]))
    };
    train(&dir.join("whole"), "3");
    train(&dir.join("parts"), "1");
    let (_, stderr) = run_ok(&mut fergpu([
        "train",
        "--resume",
        dir.join("parts").to_str().unwrap(),
        "--epochs",
        "3",
        "--quiet",
    ]));
    assert!(stderr.contains("resuming"), "{stderr}");
    assert!(stderr.contains("at epoch 2"), "{stderr}");
    assert_same_runs(&dir.join("whole"), &dir.join("parts"));
    let parts = dir.join("parts");
    assert_eq!(
        support::read_json(&parts.join("summary.json"))["epochs_run"],
        3
    );
    // The saved settings follow the extension, so a later `--resume` keeps 3 epochs.
    assert_eq!(
        support::read_json(&parts.join("config.json"))["settings"]["schedule"]["epochs"],
        3
    );
}

#[test]
fn resuming_a_folder_without_a_run_is_a_clear_error() {
    let dir = fresh_dir("resume-empty");
    let out = run(&mut fergpu([
        "train",
        "--resume",
        dir.to_str().unwrap(),
        "--adapter",
        "cpu",
    ]));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("config.json"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A write that fails mid-run (a full disk, here a folder squatting on the temporary file's
/// name) stops the run with an error naming the file, and leaves the last good checkpoint
/// and metrics readable, so the run resumes once the problem is gone.
#[test]
fn a_failed_save_keeps_the_last_good_checkpoint_and_the_run_resumes() {
    let s = splits();
    let dir = fresh_dir("resume-disk");
    let whole = train_on(&config(dir.join("whole"), 3), &s, NEW, &go()).unwrap();
    let out = dir.join("parts");
    train_on(&config(out.clone(), 1), &s, NEW, &go()).unwrap();
    // Temporary files are named per writing process.
    let blocker = out.join(format!(
        "checkpoint-last.safetensors.{}.tmp",
        std::process::id()
    ));
    std::fs::create_dir(&blocker).unwrap();
    let err = train_on(&config(out.clone(), 3), &s, RESUME, &go())
        .unwrap_err()
        .to_string();
    assert!(err.contains("checkpoint-last.safetensors"), "{err}");
    let last = Checkpoint::load(&out.join("checkpoint-last.safetensors")).unwrap();
    let state: serde_json::Value =
        serde_json::from_str(last.train_state.as_ref().unwrap()).unwrap();
    assert_eq!(state["train"]["epoch"], 1, "still the end of epoch 1");
    assert_eq!(read_metrics_csv(&out.join("metrics.csv")).unwrap().len(), 1);

    std::fs::remove_dir(&blocker).unwrap();
    train_on(&config(out.clone(), 3), &s, RESUME, &go()).unwrap();
    assert_same_runs(&whole.out, &out);
}
