//! Experiments: k-fold splits against scikit-learn's (worked out by hand), sweep grids and
//! the shipped notebook sweep, early stopping on scripted accuracies, every learning-rate
//! schedule's sequence (plateau on loss or accuracy), the per-step warm-up, and `fergpu sweep`
//! / `fergpu cv` end to end on tiny data.

mod support;

use fergpu::augment::Augment;
use fergpu::cancel::Cancel;
use fergpu::data::{synth, Usage};
use fergpu::experiment::runner::apply_settings;
use fergpu::experiment::{kfold, load_grid, parse_grid, stratified_kfold, Fold, SettingValue};
use fergpu::metrics::Confusion;
use fergpu::report::read_summary_json;
use fergpu::run::{train_on, ExperimentFolder, Start};
use fergpu::settings::{Settings, Splits};
use fergpu::train::{EarlyStopping, LrSchedule, Scheduler, Trainer, TrainerOptions, Warmup};
use std::path::Path;
use support::{fergpu, fresh_dir, run_ok, write_synth_csv};

// ---------------------------------------------------------------- folds

fn tests_of(folds: &[Fold]) -> Vec<Vec<usize>> {
    folds.iter().map(|f| f.test.clone()).collect()
}

/// Every fold's train and test lists are disjoint, sorted and cover `0..n`, and the test
/// lists together cover every row exactly once.
fn assert_partition(folds: &[Fold], n: usize) {
    let mut seen = vec![0; n];
    for f in folds {
        assert!(f.test.windows(2).all(|w| w[0] < w[1]), "{f:?}");
        assert!(f.train.windows(2).all(|w| w[0] < w[1]), "{f:?}");
        let mut both: Vec<usize> = f.train.iter().chain(&f.test).copied().collect();
        both.sort();
        assert_eq!(both, (0..n).collect::<Vec<_>>(), "{f:?}");
        for &r in &f.test {
            seen[r] += 1;
        }
    }
    assert!(seen.iter().all(|&s| s == 1), "test folds overlap: {seen:?}");
}

#[test]
fn kfold_matches_scikit_learn_by_hand() {
    // KFold(n_splits=3).split(range(10)): the first 10 % 3 = 1 fold gets one extra row.
    let folds = kfold(10, 3, None).unwrap();
    assert_eq!(
        tests_of(&folds),
        [vec![0, 1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]]
    );
    assert_eq!(folds[1].train, [0, 1, 2, 3, 7, 8, 9]);
    assert_partition(&folds, 10);

    // The notebook's KFold(n_splits=6), on 14 rows: sizes 3, 3, 2, 2, 2, 2.
    let folds = kfold(14, 6, None).unwrap();
    assert_eq!(
        tests_of(&folds),
        [
            vec![0, 1, 2],
            vec![3, 4, 5],
            vec![6, 7],
            vec![8, 9],
            vec![10, 11],
            vec![12, 13]
        ]
    );
    assert_partition(&folds, 14);

    assert!(kfold(10, 1, None).is_err());
    assert!(kfold(3, 4, None).is_err());
}

#[test]
fn shuffled_kfold_is_a_partition_fixed_by_the_seed() {
    let a = kfold(50, 4, Some(7)).unwrap();
    assert_partition(&a, 50);
    assert_eq!(a, kfold(50, 4, Some(7)).unwrap(), "same seed, same folds");
    assert_ne!(
        a,
        kfold(50, 4, Some(8)).unwrap(),
        "another seed, other folds"
    );
    assert_ne!(
        a,
        kfold(50, 4, None).unwrap(),
        "shuffled differs from contiguous"
    );
    let sizes: Vec<usize> = a.iter().map(|f| f.test.len()).collect();
    assert_eq!(sizes, [13, 13, 12, 12], "same sizes as unshuffled");
}

#[test]
fn stratified_kfold_matches_scikit_learn_by_hand_and_keeps_class_shares() {
    // StratifiedKFold(3) on these labels: per class, 2/1/1 rows to each fold, filled in row
    // order, so class 0's rows 0,1 | 4,5 | 8,9 and classes 1 and 2 one per fold.
    let labels = [0, 0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2];
    let folds = stratified_kfold(&labels, 3, None).unwrap();
    assert_eq!(
        tests_of(&folds),
        [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9, 10, 11]]
    );

    // On generated labels (FER2013's skewed shares), every fold holds each class's share.
    let ds = synth::generate(700, 61);
    for shuffle in [None, Some(3)] {
        let folds = stratified_kfold(&ds.labels, 5, shuffle).unwrap();
        assert_partition(&folds, ds.len());
        for c in 0..7u8 {
            let total = ds.labels.iter().filter(|&&l| l == c).count();
            let per_fold: Vec<usize> = folds
                .iter()
                .map(|f| f.test.iter().filter(|&&r| ds.labels[r] == c).count())
                .collect();
            let (lo, hi) = (
                per_fold.iter().min().unwrap(),
                per_fold.iter().max().unwrap(),
            );
            assert!(hi - lo <= 1, "class {c}: {per_fold:?}");
            assert_eq!(per_fold.iter().sum::<usize>(), total);
        }
        let sizes: Vec<usize> = folds.iter().map(|f| f.test.len()).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
    }
    assert_eq!(
        stratified_kfold(&ds.labels, 5, Some(3)).unwrap(),
        stratified_kfold(&ds.labels, 5, Some(3)).unwrap()
    );
}

// ---------------------------------------------------------------- grids

fn str_setting<'a>(spec: &'a fergpu::experiment::RunSpec, key: &str) -> &'a str {
    spec.get(key).and_then(SettingValue::as_str).unwrap()
}

#[test]
fn grid_expands_to_the_cartesian_product_then_the_explicit_runs() {
    let text = r#"
[grid]
activation = ["relu", "elu"]
batch_size = [32, 512]
lr = 1e-3
[fixed]
model = "mlp"
epochs = 2
[[run]]
name = "slow"
lr = 1e-6
[[run]]
activation = "selu"
"#;
    let runs = parse_grid(text, "test.toml").unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "activation-relu_batch_size-32",
            "activation-relu_batch_size-512",
            "activation-elu_batch_size-32",
            "activation-elu_batch_size-512",
            "slow",
            "activation-selu",
        ]
    );
    let combos: Vec<(&str, usize)> = runs[..4]
        .iter()
        .map(|r| {
            (
                str_setting(r, "activation"),
                r.get("batch_size").unwrap().as_usize().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        combos,
        [("relu", 32), ("relu", 512), ("elu", 32), ("elu", 512)]
    );
    for r in &runs {
        assert_eq!(
            str_setting(r, "model"),
            "mlp",
            "fixed applies to {}",
            r.name
        );
        assert_eq!(r.get("epochs").unwrap().as_usize(), Some(2));
    }
    assert_eq!(runs[0].get("lr").unwrap().as_f64(), Some(1e-3));
    assert_eq!(runs[4].get("lr").unwrap().as_f64(), Some(1e-6));
    assert!(runs[4].get("activation").is_none());

    // Mistakes are errors naming the file, the line and the setting.
    let err = parse_grid(
        "[grid]\nactivation = [\"relu\"]\nbatchsize = [1]\n",
        "g.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("g.toml:3") && err.contains("batchsize"),
        "{err}"
    );
    let err = parse_grid("[[run]]\nname = \"a\"\n[[run]]\nname = \"a\"\n", "g.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("names two runs"), "{err}");
    assert!(parse_grid("[grid]\nactivation = \"softplus\"\n", "g").is_err());
}

#[test]
fn a_sweep_can_vary_augmentation_and_rejects_a_bad_one() {
    let runs = parse_grid("[grid]\naugment = [\"none\", \"flip,shift=3\"]\n", "a.toml").unwrap();
    let base = Settings::default();
    let folder = ExperimentFolder::new("s");
    let cfgs: Vec<Settings> = runs
        .iter()
        .map(|r| apply_settings(&base, r, &folder).unwrap())
        .collect();
    assert_eq!(cfgs[0].augment.augment, Augment::NONE);
    assert_eq!(
        cfgs[1].augment.augment,
        Augment {
            flip: true,
            shift: 3
        }
    );
    // config.json keeps the spelling, and a config written before augmentation existed reads
    // back as none.
    let json = serde_json::to_value(&cfgs[1]).unwrap();
    assert_eq!(json["augment"]["augment"], "flip,shift=3");
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("augment");
    let back: Settings = serde_json::from_value(old).unwrap();
    assert_eq!(back.augment.augment, Augment::NONE);
    // A bad value is refused as the file is read, naming the file, its line and the value.
    let err = parse_grid("[grid]\naugment = [\"rotate\"]\n", "a.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rotate") && err.contains("a.toml:2"), "{err}");
}

#[test]
fn scale_rotation_and_erasing_round_trip_through_sweeps_recipes_and_config_json() {
    let text = "[fixed]\nscale = 0.2\n[grid]\nrotate = [0, 15]\nerase_area = [\"0.02-0.2\", \"0.1-0.4\"]\n";
    let runs = parse_grid(text, "w.toml").unwrap();
    assert_eq!(runs.len(), 4);
    let folder = ExperimentFolder::new("s");
    let cfgs: Vec<Settings> = runs
        .iter()
        .map(|r| apply_settings(&Settings::default(), r, &folder).unwrap())
        .collect();
    let got: Vec<(f64, f64, String)> = cfgs
        .iter()
        .map(|c| {
            (
                c.augment.scale,
                c.augment.rotate,
                c.augment.erase_area.name(),
            )
        })
        .collect();
    for want in [(0.2, 0.0, "0.02-0.2"), (0.2, 15.0, "0.1-0.4")] {
        assert!(
            got.iter().any(|g| (g.0, g.1, g.2.as_str()) == want),
            "{want:?} not in {got:?}"
        );
    }
    // config.json keeps every field, and reads back the same settings.
    let json = serde_json::to_value(&cfgs[3]).unwrap();
    assert_eq!(
        json["augment"]["erase_area"],
        cfgs[3].augment.erase_area.name()
    );
    assert_eq!(serde_json::from_value::<Settings>(json).unwrap(), cfgs[3]);
    // A recipe file sets them by section or by bare key.
    let dir = fresh_dir("warp-recipe");
    let recipe = dir.join("r.toml");
    std::fs::write(
        &recipe,
        "rotate = 10\n[augment]\naugment = \"flip,shift=2\"\nerase = 0.5\nerase_area = \"0.05-0.3\"\n",
    )
    .unwrap();
    let mut s = Settings::default();
    s.load_file(&recipe).unwrap();
    s.validate().unwrap();
    assert_eq!(s.augment.rotate, 10.0);
    assert_eq!(s.augment.erase, 0.5);
    assert_eq!(s.augment.erase_area.name(), "0.05-0.3");
    assert_eq!(s.augment.augment.name(), "flip,shift=2");
    // An out-of-range value is refused as the sweep file is read, with the allowed range.
    let err = parse_grid("[grid]\nrotate = [10, 270]\n", "w.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("w.toml:2") && err.contains("--rotate") && err.contains("180"),
        "{err}"
    );
    let err = parse_grid("[grid]\nerase_area = [\"0.3\"]\n", "w.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("MIN-MAX"), "{err}");
}

#[test]
fn the_notebook_sweep_is_its_nine_experiments() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/notebook_sweep.toml");
    let runs = load_grid(&path).unwrap();
    assert_eq!(runs.len(), 9);
    let mut names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 9, "names are unique");
    let mut seen = std::collections::BTreeSet::new();
    let base = Settings::default();
    let folder = ExperimentFolder::new("sweep");
    for r in &runs {
        assert_eq!(str_setting(r, "model"), "cnn");
        assert_eq!(str_setting(r, "dense_activation"), "selu");
        assert_eq!(str_setting(r, "class_weight"), "frequency");
        let cfg = apply_settings(&base, r, &folder).unwrap();
        assert!(["elu", "relu", "selu"].contains(&cfg.model.activation.name()));
        assert!([32, 512].contains(&cfg.run.batch_size));
        assert!([1e-3, 1e-6].contains(&cfg.optimizer.lr));
        assert!([12, 50, 100].contains(&cfg.schedule.epochs));
        assert_eq!(
            cfg.run.out.as_deref(),
            Some(Path::new("sweep").join(&r.name).as_path())
        );
        seen.insert(cfg.model.activation.name().to_string());
        seen.insert(format!("b{}", cfg.run.batch_size));
        seen.insert(format!("lr{:e}", cfg.optimizer.lr));
        seen.insert(format!("e{}", cfg.schedule.epochs));
    }
    for value in [
        "elu", "relu", "selu", "b32", "b512", "lr1e-3", "lr1e-6", "e12", "e50", "e100",
    ] {
        assert!(seen.contains(value), "no run uses {value}");
    }
}

// ---------------------------------------------------------------- early stopping

#[test]
fn early_stopping_stops_after_patience_epochs_without_improvement() {
    // Epochs 1..: best 0.50 at epoch 2; 3 (equal), 4, 5 do not improve → stop at 5.
    let accs = [0.30, 0.50, 0.50, 0.45, 0.49, 0.70];
    let mut es = EarlyStopping::new(Some(3));
    let mut stopped_at = None;
    let mut improved = Vec::new();
    for (i, &a) in accs.iter().enumerate() {
        let d = es.observe(i + 1, a);
        improved.push(d.improved);
        if d.stop {
            stopped_at = Some(i + 1);
            break;
        }
    }
    assert_eq!(stopped_at, Some(5));
    assert_eq!(improved, [true, true, false, false, false]);
    assert_eq!(es.best_epoch(), Some(2));
    assert_eq!(es.best(), Some(0.50));

    // A new best resets the count; NaN never improves; no patience never stops.
    let mut es = EarlyStopping::new(Some(2));
    let stops: Vec<bool> = [0.1, 0.1, 0.2, f64::NAN, 0.2]
        .iter()
        .enumerate()
        .map(|(i, &a)| es.observe(i + 1, a).stop)
        .collect();
    assert_eq!(stops, [false, false, false, false, true]);
    let mut never = EarlyStopping::new(None);
    assert!((1..50).all(|e| !never.observe(e, 0.1).stop));
}

#[test]
fn a_run_with_patience_stops_early_and_keeps_its_best_epoch() {
    // At a learning rate of 1e-12 the weights barely move, so validation accuracy stays flat:
    // epoch 1 is the best and patience 2 stops the run after epoch 3 of 10.
    let ds = synth::generate(200, 62);
    let splits = Splits {
        train: ds.split(&[Usage::Training]),
        val: ds.split(&[Usage::PrivateTest]),
        test: ds.split(&[Usage::PublicTest]),
    };
    let mut cfg = Settings::default();
    cfg.model.model = "mlp".into();
    cfg.schedule.epochs = 10;
    cfg.optimizer.lr = 1e-12;
    cfg.schedule.patience = Some(2);
    cfg.device.adapter = "cpu".into();
    cfg.run.out = Some(fresh_dir("patience").join("run"));
    cfg.run.quiet = true;
    let out = train_on(
        &cfg,
        &splits,
        Start::New { overwrite: false },
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(out.records.len(), 3, "{:?}", out.records);
    let summary = out.summary.unwrap();
    assert_eq!(summary.best_epoch, 1);
    assert_eq!(summary.epochs_run, 3);
}

// ---------------------------------------------------------------- schedules

/// The rates of `epochs` epochs of `schedule` from `base`, feeding `val_losses` in turn.
fn rates(schedule: &str, base: f64, epochs: usize, val_losses: &[f64]) -> Vec<f64> {
    let mut s = Scheduler::new(LrSchedule::parse(schedule).unwrap(), base, epochs);
    (0..epochs)
        .map(|e| {
            let lr = s.lr();
            s.end_epoch(val_losses.get(e).copied().unwrap_or(1.0), f64::NAN);
            lr
        })
        .collect()
}

fn assert_rates(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "got {got:?}, want {want:?}");
    }
}

#[test]
fn each_schedule_gives_its_learning_rate_sequence() {
    assert_rates(&rates("constant", 0.1, 4, &[]), &[0.1; 4]);
    // StepLR(step_size=2, gamma=0.5)
    assert_rates(
        &rates("step:every=2,gamma=0.5", 1.0, 6, &[]),
        &[1.0, 1.0, 0.5, 0.5, 0.25, 0.25],
    );
    // Defaults: every 10 epochs by half.
    let r = rates("step", 1.0, 12, &[]);
    assert_rates(&r[9..], &[1.0, 0.5, 0.5]);
    // CosineAnnealingLR(T_max=4): 1, (1+cos(π/4))/2, 1/2, (1-cos(π/4))/2, then the floor.
    let c = std::f64::consts::FRAC_1_SQRT_2;
    assert_rates(
        &rates("cosine:epochs=4", 1.0, 6, &[]),
        &[1.0, (1.0 + c) / 2.0, 0.5, (1.0 - c) / 2.0, 0.0, 0.0],
    );
    // Over the run's own length, down to a floor of 0.1: 1, 0.1 + 0.9/2, then 0.1.
    assert_rates(&rates("cosine:min_lr=0.1", 1.0, 2, &[]), &[1.0, 0.55]);
    // ReduceLROnPlateau(patience=2, factor=0.5, min_lr=0.2) on these validation losses.
    let losses = [1.0, 0.9, 0.95, 0.95, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9];
    assert_rates(
        &rates("plateau:patience=2,factor=0.5,min_lr=0.2", 1.0, 10, &losses),
        &[1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2],
    );

    for s in [
        "constant",
        "step:every=3,gamma=0.1",
        "cosine:epochs=5,min_lr=0.001",
        "plateau:metric=acc,patience=5,factor=0.75",
        "plateau:patience=2",
    ] {
        let parsed = LrSchedule::parse(s).unwrap();
        assert_eq!(LrSchedule::parse(&parsed.to_string()).unwrap(), parsed);
    }
    for bad in [
        "linear",
        "step:every=0",
        "plateau:factor=2",
        "plateau:metric=f1",
        "cosine:warmup=3",
    ] {
        assert!(LrSchedule::parse(bad).is_err(), "{bad} accepted");
    }
}

/// The rates of `epochs` epochs of a plateau schedule on accuracy, feeding `val_accs` in turn
/// (and a loss that always improves, which it must ignore).
fn rates_on_accuracy(schedule: &str, base: f64, val_accs: &[f64]) -> Vec<f64> {
    let mut s = Scheduler::new(LrSchedule::parse(schedule).unwrap(), base, val_accs.len());
    val_accs
        .iter()
        .enumerate()
        .map(|(e, &acc)| {
            let lr = s.lr();
            s.end_epoch(1.0 / (e + 1) as f64, acc);
            lr
        })
        .collect()
}

/// The `schedules` part of `tests/fixtures/torch_reference.json` (PyTorch's schedulers, see
/// `tests/fixtures/torch_reference.py`).
fn torch_schedules() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/torch_reference.json"
    );
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect(path)).expect("JSON");
    all["schedules"].clone()
}

/// A JSON array of numbers, `null` read as NaN.
fn numbers(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::NAN))
        .collect()
}

#[test]
fn plateau_can_follow_validation_accuracy() {
    // ReduceLROnPlateau(mode="max", patience=2, factor=0.5, min_lr=0.2, threshold=0) on these
    // accuracies: no strict rise in epochs 3–4 (equal is not better) halves the rate for
    // epoch 5; a NaN is no improvement.
    let accs = [0.3, 0.4, 0.4, 0.35, 0.5, 0.45, f64::NAN, 0.5, 0.49, 0.6];
    assert_rates(
        &rates_on_accuracy(
            "plateau:metric=acc,patience=2,factor=0.5,min_lr=0.2",
            1.0,
            &accs,
        ),
        &[1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2],
    );
    // PyTorch's ReduceLROnPlateau(mode="max") on the same accuracies gives the same rates.
    let torch = &torch_schedules()["plateau_acc"];
    assert_rates(
        &rates_on_accuracy(
            torch["schedule"].as_str().unwrap(),
            torch["base_lr"].as_f64().unwrap(),
            &numbers(&torch["val_accs"]),
        ),
        &numbers(&torch["lrs"]),
    );
    // The loss mode ignores accuracy: the loss above always improves, so no reduction.
    assert_rates(
        &rates_on_accuracy("plateau:patience=1,factor=0.5", 1.0, &[0.5, 0.4, 0.3]),
        &[1.0; 3],
    );
    // metric=acc with the issue's example parameters reads back as written.
    let p = LrSchedule::parse("plateau:metric=acc,factor=0.75,patience=5").unwrap();
    assert_eq!(
        p.to_string(),
        "plateau:metric=acc,patience=5,factor=0.75,min_lr=0.000001"
    );
}

#[test]
fn warmup_ramps_each_step_linearly_over_its_epochs() {
    // W = 2 epochs of 4 steps: 1/8, 2/8, …, 8/8, then 1.
    let w = Warmup::new(2, 4);
    let factors: Vec<f64> = (1..=10).map(|t| w.factor(t)).collect();
    let want: Vec<f64> = (1..=10).map(|t| (t as f64 / 8.0).min(1.0)).collect();
    assert_rates(&factors, &want);
    assert_eq!(Warmup::new(0, 4).factor(1), 1.0, "no warm-up");
    // PyTorch's LinearLR(start_factor=1/W, total_iters=W − 1), stepped per batch.
    let torch = &torch_schedules()["warmup"];
    let base = torch["base_lr"].as_f64().unwrap();
    let w = Warmup::new(1, torch["steps"].as_u64().unwrap() as usize);
    let ours: Vec<f64> = (1..=12).map(|t| base * w.factor(t)).collect();
    assert_rates(&ours, &numbers(&torch["lrs"]));
}

/// The trainer scales each step's rate by the warm-up, counting steps across epochs and
/// across the short last batch, over whatever rate the schedule gives each epoch.
#[test]
fn a_trainer_warms_up_per_step_over_the_scheduled_rate() {
    let ds = synth::generate(70, 64).split(&[Usage::Training]);
    let be = fergpu::backend::cpu::CpuBackend::new(1);
    let spec = fergpu::model::ModelSpec::mlp(fergpu::backend::Activation::Relu);
    let params = fergpu::model::Plan::new(&spec, 1).unwrap().init_params(3);
    let opts = TrainerOptions {
        batch: 16,
        warmup_epochs: 2,
        ..fergpu::settings::Settings::default().trainer_options()
    };
    let mut tr = Trainer::new(&be, spec, &params, &ds, &opts).unwrap();
    let s = tr.batches_per_epoch();
    assert!(
        !ds.len().is_multiple_of(16) && s >= 2,
        "a short last batch: {} images",
        ds.len()
    );
    let mut got = Vec::new();
    for epoch in 0..3 {
        let lr = 1e-3 * 0.5f64.powi(epoch); // a step schedule
        tr.run_epoch(lr, &mut |done| {
            got.push(done.lr);
            true
        });
    }
    let want: Vec<f64> = (0..3 * s)
        .map(|k| {
            let lr = 1e-3 * 0.5f64.powi((k / s) as i32);
            lr * ((k + 1) as f64 / (2 * s) as f64).min(1.0)
        })
        .collect();
    assert_rates(&got, &want);
}

#[test]
fn a_run_trains_each_epoch_at_its_scheduled_rate() {
    let ds = synth::generate(120, 63);
    let splits = Splits {
        train: ds.split(&[Usage::Training]),
        val: ds.split(&[Usage::PrivateTest]),
        test: ds.split(&[Usage::PublicTest]),
    };
    let mut cfg = Settings::default();
    cfg.model.model = "mlp".into();
    cfg.schedule.epochs = 3;
    cfg.optimizer.lr = 1e-3;
    cfg.schedule.lr_schedule = "step:every=1,gamma=0.5".into();
    cfg.device.adapter = "cpu".into();
    cfg.run.out = Some(fresh_dir("schedule-run").join("run"));
    cfg.run.quiet = true;
    let out = train_on(
        &cfg,
        &splits,
        Start::New { overwrite: false },
        &Cancel::new(),
    )
    .unwrap();
    let lrs: Vec<f64> = out.records.iter().map(|r| r.lr).collect();
    assert_rates(&lrs, &[1e-3, 5e-4, 2.5e-4]);
}

// ---------------------------------------------------------------- sweep and cv commands

/// A table cell equals a summary.json number. serde_json's default float parser may miss
/// the written value by one unit in the last place, so "equal" allows that much.
fn assert_same(cell: &str, summary: f64) {
    let v: f64 = cell.parse().unwrap();
    assert!(
        (v - summary).abs() <= 4.0 * f64::EPSILON * summary.abs(),
        "table has {v}, summary.json {summary}"
    );
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn sweep_writes_a_results_table_equal_to_its_runs_and_skips_them_when_rerun() {
    let dir = fresh_dir("sweep");
    let data = dir.join("faces.csv");
    write_synth_csv(&data, 300, 64);
    let grid = dir.join("tiny.toml");
    std::fs::write(
        &grid,
        "[grid]\nactivation = [\"relu\", \"tanh\"]\n[fixed]\nmodel = \"mlp\"\nepochs = 1\n",
    )
    .unwrap();
    let out = dir.join("sweep");
    let sweep = || {
        run_ok(
            fergpu(["sweep", "--adapter", "cpu", "--quiet", "--data"])
                .arg(&data)
                .arg("--out")
                .arg(&out)
                .arg(&grid),
        )
    };
    let (stdout, _) = sweep();
    let names = ["activation-relu", "activation-tanh"];
    for name in names {
        assert!(stdout.contains(name), "{stdout}");
    }

    let mut reader = csv::Reader::from_path(out.join("results.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    let html = std::fs::read_to_string(out.join("results.html")).unwrap();
    for (row, name) in rows.iter().zip(names) {
        assert_eq!(&row[col("name")], name);
        assert_eq!(&row[col("activation")], &name["activation-".len()..]);
        assert_eq!(&row[col("model")], "mlp");
        let s = read_summary_json(&out.join(name).join("summary.json")).unwrap();
        assert_same(&row[col("test_acc")], s.test_accuracy);
        assert_same(&row[col("macro_f1")], s.macro_f1);
        assert_eq!(
            row[col("best_epoch")].parse::<usize>().unwrap(),
            s.best_epoch
        );
        assert_same(&row[col("seconds")], s.wall_seconds);
        let counts: Vec<u64> = row[col("confusion")]
            .split(' ')
            .map(|c| c.parse().unwrap())
            .collect();
        let flat: Vec<u64> = s.confusion.counts.iter().flatten().copied().collect();
        assert_eq!(counts, flat);
        assert!(
            html.contains(&format!(">{name}<")),
            "{name} not in results.html"
        );
        assert!(
            html.contains(&format!("{:.2}%", 100.0 * s.test_accuracy)),
            "accuracy of {name} not in results.html"
        );
    }
    assert!(html.contains("sortBy"), "results.html is sortable");

    // Rerun: both runs are found finished and left alone; the table is the same.
    let before: Vec<_> = names
        .iter()
        .map(|n| mtime(&out.join(n).join("checkpoint-last.safetensors")))
        .collect();
    let table = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let (_, stderr) = sweep();
    assert_eq!(
        stderr.matches("already finished, skipped").count(),
        2,
        "{stderr}"
    );
    let after: Vec<_> = names
        .iter()
        .map(|n| mtime(&out.join(n).join("checkpoint-last.safetensors")))
        .collect();
    assert_eq!(before, after, "finished runs were trained again");
    assert_eq!(
        std::fs::read_to_string(out.join("results.csv")).unwrap(),
        table
    );
}

#[test]
fn cv_trains_one_run_per_fold_and_reports_mean_and_std() {
    let dir = fresh_dir("cv");
    let data = dir.join("faces.csv");
    let ds = write_synth_csv(&data, 300, 65);
    let out = dir.join("cv");
    let (stdout, _) = run_ok(
        fergpu([
            "cv",
            "--folds",
            "3",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--adapter",
            "cpu",
            "--quiet",
            "--data",
        ])
        .arg(&data)
        .arg("--out")
        .arg(&out),
    );
    // Training + PrivateTest rows take part, contiguous folds as KFold.
    let n = ds.rows_of(&[Usage::Training, Usage::PrivateTest]).len();
    let folds = kfold(n, 3, None).unwrap();
    let mut reader = csv::Reader::from_path(out.join("cv.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3 + 2, "3 folds, mean and std");
    let mut accs = Vec::new();
    let mut summed = Confusion::default();
    for (i, row) in rows[..3].iter().enumerate() {
        let s =
            read_summary_json(&out.join(format!("fold-{}", i + 1)).join("summary.json")).unwrap();
        assert_eq!(&row[0], (i + 1).to_string());
        assert_eq!(row[1].parse::<usize>().unwrap(), folds[i].train.len());
        assert_eq!(row[2].parse::<usize>().unwrap(), folds[i].test.len());
        assert_eq!(s.confusion.total() as usize, folds[i].test.len());
        assert_same(&row[3], s.test_accuracy);
        assert_same(&row[4], s.macro_f1);
        accs.push(s.test_accuracy);
        summed.merge(&s.confusion);
    }
    let mean = accs.iter().sum::<f64>() / 3.0;
    let var = accs.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / 2.0;
    assert_eq!(&rows[3][0], "mean");
    assert!((rows[3][3].parse::<f64>().unwrap() - mean).abs() < 1e-12);
    assert!((rows[4][3].parse::<f64>().unwrap() - var.sqrt()).abs() < 1e-12);
    let line = format!(
        "mean accuracy {:.2}% ± {:.2}",
        100.0 * mean,
        100.0 * var.sqrt()
    );
    assert!(stdout.contains(&line), "no '{line}' in:\n{stdout}");
    let html = std::fs::read_to_string(out.join("cv.html")).unwrap();
    assert!(html.contains("3-fold cross-validation"));
    // The summed matrix, cell by cell in row-major order.
    let cells: Vec<u64> = html
        .split("data-count=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
        .collect();
    let flat: Vec<u64> = summed.counts.iter().flatten().copied().collect();
    assert_eq!(cells, flat, "cv.html's summed confusion matrix");
    assert_eq!(summed.total() as usize, n, "every row tested once");
}

/// `--adapters cpu,cpu` runs two configurations side by side; the results are those of the
/// same sweep run one configuration at a time.
#[test]
fn sweep_lanes_side_by_side_give_the_sequential_results() {
    let dir = fresh_dir("sweep-lanes");
    let data = dir.join("faces.csv");
    write_synth_csv(&data, 200, 66);
    let grid = dir.join("three.toml");
    std::fs::write(
        &grid,
        "[grid]\nseed = [1, 2, 3]\n[fixed]\nmodel = \"mlp\"\nepochs = 1\n",
    )
    .unwrap();
    let sweep = |out: &str, lanes: &[&str]| {
        let out = dir.join(out);
        run_ok(
            fergpu([
                "sweep",
                "--adapter",
                "cpu",
                "--threads",
                "1",
                "--quiet",
                "--data",
            ])
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .args(lanes)
            .arg(&grid),
        );
        let mut reader = csv::Reader::from_path(out.join("results.csv")).unwrap();
        let header = reader.headers().unwrap().clone();
        let keep: Vec<usize> = ["name", "seed", "test_acc", "macro_f1", "confusion"]
            .iter()
            .map(|k| header.iter().position(|h| h == *k).unwrap())
            .collect();
        reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                keep.iter().map(|&i| r[i].to_string()).collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let one = sweep("sequential", &[]);
    let two = sweep("lanes", &["--adapters", "cpu,cpu"]);
    assert_eq!(one.len(), 3);
    assert_eq!(one, two);
}

/// `cv --stratified --shuffle --seed` tests each fold on the class counts of the library's
/// stratified folds of the rows that take part (plain KFold's counts differ).
#[test]
fn cv_stratified_shuffled_uses_the_stratified_folds() {
    let dir = fresh_dir("cv-strat");
    let data = dir.join("faces.csv");
    let ds = write_synth_csv(&data, 200, 67);
    let out = dir.join("cv");
    run_ok(
        fergpu([
            "cv",
            "--folds",
            "2",
            "--stratified",
            "--shuffle",
            "--seed",
            "5",
            "--model",
            "mlp",
            "--epochs",
            "1",
            "--adapter",
            "cpu",
            "--quiet",
            "--data",
        ])
        .arg(&data)
        .arg("--out")
        .arg(&out),
    );
    let taking_part = ds.split(&[Usage::Training, Usage::PrivateTest]);
    let folds = stratified_kfold(&taking_part.labels, 2, Some(5)).unwrap();
    for (i, fold) in folds.iter().enumerate() {
        let s =
            read_summary_json(&out.join(format!("fold-{}", i + 1)).join("summary.json")).unwrap();
        // Each fold's test confusion matrix holds exactly its rows' classes.
        let mut want = [0u64; 7];
        for &r in &fold.test {
            want[taking_part.labels[r] as usize] += 1;
        }
        let got: Vec<u64> = s
            .confusion
            .counts
            .iter()
            .map(|row| row.iter().sum())
            .collect();
        assert_eq!(got, want, "fold {}", i + 1);
    }
}
