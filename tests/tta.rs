//! Test-time augmentation: the averaged views against the definition written out here (each
//! view built on the host, its logits from a plain forward pass, averaged in `f64`), the
//! plain figures untouched by it, the GPU against the CPU reference, and where its figures
//! go: `summary.json`'s `tta` beside `test_accuracy`, and `fergpu eval --tta` printing both,
//! labelled.
//!
//! With no GPU adapter the GPU test prints a note and passes, unless `CI` or
//! `FERGPU_REQUIRE_GPU=1` is set, where it fails.

mod common;
mod support;

use common::assert_close;
use fergpu::backend::cpu::{CpuBackend, PIXEL_SCALE};
use fergpu::backend::gpu::adapter::AdapterRequest;
use fergpu::backend::gpu::GpuBackend;
use fergpu::backend::{Activation, Backend};
use fergpu::cancel::Cancel;
use fergpu::checkpoint::Checkpoint;
use fergpu::data::{synth, Dataset, Usage};
use fergpu::eval::{evaluate_checkpoint, evaluate_checkpoint_with_tta, Tta, TTA_SHIFT};
use fergpu::model::network::{Mode, Network};
use fergpu::model::{ModelSpec, Plan};
use fergpu::report::read_summary_json;
use fergpu::run::{train_on, Start};
use fergpu::settings::{Settings, Splits};
use fergpu::shape::{IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES};
use support::{fergpu, fresh_dir, run, run_ok, text, write_synth_csv};

/// An untrained MLP (Glorot weights give every image its own logits) as a checkpoint.
fn checkpoint(seed: u64) -> Checkpoint {
    let spec = ModelSpec::mlp(Activation::Relu);
    let params = Plan::new(&spec, 1).unwrap().init_params(seed);
    Checkpoint {
        spec,
        params,
        running: vec![],
        optimizer: None,
        train_state: None,
    }
}

/// View `(flip, dx, dy)` of a 48×48 image, from the definition: mirror x, then read source
/// pixel `(y + dy, x + dx)` with both clamped to the image.
fn view(img: &[u8], flip: bool, dx: i32, dy: i32) -> Vec<u8> {
    let last = IMAGE_SIDE as i32 - 1;
    let mut out = Vec::with_capacity(IMAGE_PIXELS);
    for y in 0..=last {
        for x in 0..=last {
            let mx = if flip { last - x } else { x };
            let sx = (mx + dx).clamp(0, last);
            let sy = (y + dy).clamp(0, last);
            out.push(img[(sy * IMAGE_SIDE as i32 + sx) as usize]);
        }
    }
    out
}

/// The logits `(7)` of one image through a plain forward pass at batch 1.
fn logits(be: &CpuBackend, net: &mut Network<CpuBackend>, img: &[u8]) -> Vec<f64> {
    let x: Vec<f32> = img.iter().map(|&p| f32::from(p) * PIXEL_SCALE).collect();
    be.write(&mut net.x, &x);
    net.forward(be, 1, Mode::Eval);
    net.logits()[..NUM_CLASSES]
        .iter()
        .map(|&v| v as f64)
        .collect()
}

#[test]
fn the_views_are_the_documented_ones() {
    let s = TTA_SHIFT;
    assert_eq!(Tta::None.views(), &[(false, 0, 0)]);
    assert_eq!(Tta::Flip.views(), &[(false, 0, 0), (true, 0, 0)]);
    let crops = Tta::Crops.views();
    assert_eq!(crops.len(), 10);
    assert_eq!(&crops[..2], Tta::Flip.views(), "flip's views come first");
    for flip in [false, true] {
        for (dx, dy) in [(0, 0), (-s, -s), (s, -s), (-s, s), (s, s)] {
            assert!(crops.contains(&(flip, dx, dy)), "{flip} {dx} {dy}");
        }
    }
    assert_eq!(Tta::Crops.reported(), [Tta::Flip, Tta::Crops]);
    assert_eq!(Tta::Flip.reported(), [Tta::Flip]);
    assert!(Tta::None.reported().is_empty());
    for t in Tta::ALL {
        assert_eq!(Tta::parse(t.name()).unwrap(), t);
    }
    assert!(Tta::parse("ten").is_err());
}

#[test]
fn tta_averages_the_logits_of_its_views_and_leaves_the_plain_result_alone() {
    let be = CpuBackend::new(2);
    let ck = checkpoint(21);
    let ds = synth::generate(40, 22);
    let n = ds.len();

    // The definition: every view's logits from a plain forward pass, averaged in f64.
    let mut net = Network::new(&be, Plan::new(&ck.spec, 1).unwrap(), &ck.params);
    let mut want_probs = Vec::new();
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for i in 0..n {
        let img = &ds.pixels[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS];
        let mut mean = [0.0f64; NUM_CLASSES];
        for &(flip, dx, dy) in Tta::Crops.views() {
            for (m, l) in mean
                .iter_mut()
                .zip(logits(&be, &mut net, &view(img, flip, dx, dy)))
            {
                *m += l / 10.0;
            }
        }
        let max = mean.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + mean.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        want_probs.extend(mean.iter().map(|v| (v - lse).exp() as f32));
        let y = ds.labels[i] as usize;
        loss += lse - mean[y];
        let predicted = (0..NUM_CLASSES).find(|&c| mean[c] == max).unwrap();
        correct += usize::from(predicted == y);
    }

    let r = evaluate_checkpoint_with_tta(&be, &ck, &ds, true, Tta::Crops).unwrap();
    let crops = r.with_tta(Tta::Crops).expect("crops reported");
    // A running mean in f32 against the f64 mean: a few ulp of logits of O(1).
    assert_close(
        "crops probabilities",
        crops.probs.as_ref().unwrap(),
        &want_probs,
        1e-6,
        1e-5,
    );
    assert!((crops.loss - loss / n as f64).abs() < 1e-5, "crops loss");
    assert_eq!(crops.confusion.total(), n as u64);
    assert_eq!(crops.accuracy, correct as f64 / n as f64);

    // The plain figures are exactly a plain evaluation's, bit for bit.
    let plain = evaluate_checkpoint(&be, &ck, &ds, true).unwrap();
    assert!(plain.tta.is_empty());
    assert_eq!(r.probs, plain.probs);
    assert_eq!(r.loss.to_bits(), plain.loss.to_bits());
    assert_eq!(r.confusion, plain.confusion);
    // flip, the first two of crops' views, equals an evaluator built for flip alone.
    let flip = evaluate_checkpoint_with_tta(&be, &ck, &ds, true, Tta::Flip).unwrap();
    assert_eq!(flip.tta.len(), 1);
    assert_eq!(flip.with_tta(Tta::Flip), r.with_tta(Tta::Flip));
    assert_ne!(
        crops.probs, plain.probs,
        "the views changed nothing: are they applied?"
    );
}

#[test]
fn tta_on_the_gpu_matches_the_reference() {
    let gpu = match GpuBackend::new(&AdapterRequest::Auto, None) {
        Ok(g) => g,
        Err(e)
            if std::env::var_os("CI").is_some()
                || std::env::var("FERGPU_REQUIRE_GPU").is_ok_and(|v| v == "1") =>
        {
            panic!("a GPU is required (CI / FERGPU_REQUIRE_GPU): {e}")
        }
        Err(e) => {
            eprintln!("note: skipping the GPU TTA test, no GPU adapter: {e}");
            return;
        }
    };
    let ck = checkpoint(23);
    let ds = synth::generate(30, 24);
    let on_gpu = evaluate_checkpoint_with_tta(&gpu, &ck, &ds, true, Tta::Crops).unwrap();
    gpu.check().expect("the GPU reported an error");
    let on_cpu =
        evaluate_checkpoint_with_tta(&CpuBackend::new(2), &ck, &ds, true, Tta::Crops).unwrap();
    // Dense sums over 2304 pixels in another order, then the same running mean.
    let results = |r: &fergpu::eval::EvalResult| {
        let mut all = vec![r.probs.clone().unwrap()];
        all.extend(r.tta.iter().map(|(_, t)| t.probs.clone().unwrap()));
        all
    };
    for (i, (g, c)) in results(&on_gpu).iter().zip(results(&on_cpu)).enumerate() {
        assert_close(&format!("probabilities {i}"), g, &c, 1e-5, 1e-4);
    }
    assert!((on_gpu.loss - on_cpu.loss).abs() < 1e-5);
}

/// A run's summary keeps the plain test figures and puts TTA's beside them, each equal to
/// evaluating the best checkpoint that way; an older summary without `tta` still reads.
#[test]
fn a_run_reports_plain_and_tta_test_figures_apart() {
    let all = synth::generate(300, 25);
    let splits = Splits {
        train: all.split(&[Usage::Training]),
        val: all.split(&[Usage::PrivateTest]),
        test: all.split(&[Usage::PublicTest]),
    };
    let dir = fresh_dir("tta-run");
    let mut cfg = Settings::default();
    cfg.model.model = "mlp".into();
    cfg.schedule.epochs = 2;
    cfg.device.adapter = "cpu".into();
    cfg.run.out = Some(dir.join("run"));
    cfg.run.quiet = true;
    let out = train_on(
        &cfg,
        &splits,
        Start::New { overwrite: false },
        &Cancel::new(),
    )
    .unwrap();
    let summary = read_summary_json(&out.out.join("summary.json")).unwrap();
    assert_eq!(Some(&summary), out.summary.as_ref());
    let ck = Checkpoint::load(&out.out.join("checkpoint-best.safetensors")).unwrap();
    let be = CpuBackend::new(0);
    let r = evaluate_checkpoint_with_tta(&be, &ck, &splits.test, false, Tta::Crops).unwrap();
    assert_eq!(summary.test_accuracy, r.accuracy);
    assert_eq!(summary.test_loss, r.loss);
    let tta = summary.tta.as_ref().expect("summary.json has tta");
    for (t, scores) in [(Tta::Flip, &tta.flip), (Tta::Crops, &tta.crops)] {
        let want = r.with_tta(t).unwrap();
        assert_eq!(scores.accuracy, want.accuracy, "{}", t.name());
        assert_eq!(scores.macro_f1, want.confusion.macro_f1(), "{}", t.name());
        assert_eq!(scores.loss, want.loss, "{}", t.name());
    }

    // summary.json names the fields apart; one written before TTA (no "tta") still reads.
    let mut json = support::read_json(&out.out.join("summary.json"));
    assert!(json["tta"]["crops"]["accuracy"].is_number());
    assert!(json["test_accuracy"].is_number());
    json.as_object_mut().unwrap().remove("tta");
    let old = dir.join("old-summary.json");
    std::fs::write(&old, json.to_string()).unwrap();
    assert_eq!(read_summary_json(&old).unwrap().tta, None);
}

#[test]
fn eval_with_tta_prints_plain_and_augmented_results_labelled() {
    let dir = fresh_dir("tta-cli");
    let data = dir.join("faces.csv");
    let ds: Dataset = write_synth_csv(&data, 200, 26);
    let ck = dir.join("mlp.safetensors");
    checkpoint(27).save(&ck).unwrap();
    let preds = dir.join("p.csv");
    let eval = |tta: &str| {
        let mut cmd = fergpu([
            "eval",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--split",
            "Training",
            "--adapter",
            "cpu",
            "--predictions",
            preds.to_str().unwrap(),
            "--tta",
            tta,
        ]);
        run_ok(&mut cmd)
    };
    let n = ds.split(&[Usage::Training]).len();
    let (stdout, stderr) = eval("crops");
    assert!(
        stdout.contains("Training (mlp), no TTA:")
            && stdout.contains("Training (mlp), TTA crops (10 views averaged):"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("confusion matrix").count(), 2, "{stdout}");
    assert!(stderr.contains("predictions (TTA crops)"), "{stderr}");
    assert_eq!(support::csv_rows(&preds).len(), n + 1);
    // Without --tta the output is as it always was: one report, no label.
    let (stdout, _) = eval("none");
    assert!(!stdout.contains("TTA"), "{stdout}");
    assert_eq!(stdout.matches("confusion matrix").count(), 1, "{stdout}");
    let out = run(&mut fergpu([
        "eval",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--synthetic",
        "50",
        "--tta",
        "tencrop",
    ]));
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success() && stderr.contains("none, flip or crops"),
        "{stderr}"
    );
}
