//! End to end on a software Vulkan adapter (lavapipe in CI): train the MLP preset through the
//! library (`run::train_on`) and through the binary (`fergpu train --adapter software`), then
//! evaluate the same checkpoint on the GPU and on the CPU reference: the predictions must be
//! the same, except for near-ties.
//!
//! Near-tie margin: an image counts as a tie when the CPU reference's two highest
//! probabilities are less than [`TIE_MARGIN`] apart. The two backends' probabilities differ
//! only by summation order (the op parity tests bound that by ~1e-5 absolute for this
//! model), so a gap 100× larger cannot flip the arg-max; closer calls may legitimately go
//! either way and are left out of the comparison (and counted, so the test cannot pass by
//! calling everything a tie).
//!
//! With no software adapter the tests print a note and pass, unless `CI` or
//! `FERGPU_REQUIRE_GPU=1` is set, where they fail.

mod common;

use fergpu::backend::cpu::CpuBackend;
use fergpu::backend::gpu::adapter::AdapterRequest;
use fergpu::backend::gpu::GpuBackend;
use fergpu::backend::Backend;
use fergpu::cancel::Cancel;
use fergpu::checkpoint::Checkpoint;
use fergpu::data::synth;
use fergpu::data::{Dataset, Usage};
use fergpu::eval::evaluate_checkpoint;
use fergpu::metrics::argmax;
use fergpu::run::{train_on, Start};
use fergpu::settings::{Settings, Splits};
use fergpu::shape::NUM_CLASSES;
use std::path::Path;
use std::process::Command;

/// Probability gap below which the top two classes count as tied (see the module docs).
const TIE_MARGIN: f32 = 1e-3;

/// `n` generated faces split by their Usage, as `fergpu train --synthetic` splits them.
fn splits(n: usize) -> Splits {
    let all = synth::generate(n, 0x5EED);
    Splits {
        train: all.split(&[Usage::Training]),
        val: all.split(&[Usage::PrivateTest]),
        test: all.split(&[Usage::PublicTest]),
    }
}

/// Compares per-image predictions `(n, 7)` of the GPU against the CPU reference: the same
/// arg-max wherever the reference has no near-tie, and probabilities within 1e-4.
fn assert_same_predictions(gpu: &[f32], cpu: &[f32]) {
    assert_eq!(gpu.len(), cpu.len());
    let n = cpu.len() / NUM_CLASSES;
    let (mut ties, mut differ) = (0, Vec::new());
    for (i, (g, c)) in gpu
        .chunks_exact(NUM_CLASSES)
        .zip(cpu.chunks_exact(NUM_CLASSES))
        .enumerate()
    {
        let mut sorted = c.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] < TIE_MARGIN {
            ties += 1;
            continue;
        }
        if argmax(g) != argmax(c) {
            differ.push((i, argmax(g), argmax(c)));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {n} predictions differ (GPU, CPU): {:?}",
        differ.len(),
        &differ[..differ.len().min(5)]
    );
    assert!(ties * 10 <= n, "{ties} of {n} images are near-ties");
    let worst = gpu
        .iter()
        .zip(cpu)
        .map(|(g, c)| (g - c).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-4, "probabilities differ by up to {worst}");
}

/// The predicted-label column of a `--predictions` CSV.
fn predicted(path: &Path) -> Vec<usize> {
    let text = std::fs::read_to_string(path).expect("predictions file");
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("index,true,predicted"));
    lines
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect()
}

/// The probabilities `(n, 7)` of a `--predictions` CSV.
fn probabilities(path: &Path) -> Vec<f32> {
    let text = std::fs::read_to_string(path).expect("predictions file");
    text.lines()
        .skip(1)
        .flat_map(|l| {
            l.split(',')
                .skip(3)
                .map(|v| v.parse::<f32>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn fergpu(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_fergpu"))
        .args(args)
        .output()
        .expect("run fergpu");
    eprintln!(
        "fergpu {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn library_training_on_the_software_adapter_then_gpu_and_cpu_agree_on_its_checkpoint() {
    if !common::have_software_adapter("end-to-end GPU") {
        return;
    }
    let dir = common::scratch("e2e-library");
    let mut cfg = Settings::default();
    cfg.model.model = "mlp".into();
    cfg.schedule.epochs = 2;
    cfg.run.batch_size = 32;
    cfg.run.seed = 3;
    cfg.data.synthetic = Some(400);
    cfg.device.adapter = "software".into();
    cfg.run.out = Some(dir.clone());
    cfg.run.quiet = true;
    let data = splits(400);
    let outcome = train_on(&cfg, &data, Start::New { overwrite: false }, &Cancel::new())
        .expect("training on the software adapter");
    assert_eq!(outcome.records.len(), 2, "both epochs ran");
    for r in &outcome.records {
        assert!(r.train_loss.is_finite() && r.val_loss.is_finite(), "{r:?}");
    }
    // The second epoch learned something from the first: the training loss went down.
    assert!(
        outcome.records[1].train_loss < outcome.records[0].train_loss,
        "{:?}",
        outcome.records
    );

    let ck = Checkpoint::load(&dir.join("checkpoint-last.safetensors")).expect("checkpoint");
    let test: &Dataset = &data.test;
    let gpu = GpuBackend::new(&AdapterRequest::Software, None).expect("software adapter");
    let on_gpu = evaluate_checkpoint(&gpu, &ck, test, true).expect("eval on the GPU");
    gpu.check().expect("the GPU reported an error");
    let on_cpu = evaluate_checkpoint(&CpuBackend::new(2), &ck, test, true).expect("eval on CPU");
    assert_same_predictions(
        on_gpu.probs.as_ref().unwrap(),
        on_cpu.probs.as_ref().unwrap(),
    );
    assert!((on_gpu.loss - on_cpu.loss).abs() <= 1e-4 * on_cpu.loss.abs().max(1.0));
    assert_eq!(on_gpu.confusion.total(), test.len() as u64);
}

#[test]
fn cli_train_and_eval_on_the_software_adapter_match_the_cpu_reference() {
    if !common::have_software_adapter("end-to-end GPU") {
        return;
    }
    let dir = common::scratch("e2e-cli");
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let out = fergpu(&[
        "train",
        "--adapter",
        "software",
        "--synthetic",
        "300",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--quiet",
        "--out",
        run_s,
    ]);
    assert!(out.status.success(), "fergpu train failed");
    let ck = run.join("checkpoint-last.safetensors");
    let ck_s = ck.to_str().unwrap();
    let mut preds = Vec::new();
    for adapter in ["software", "cpu"] {
        let p = dir.join(format!("predictions-{adapter}.csv"));
        let out = fergpu(&[
            "eval",
            "--adapter",
            adapter,
            "--checkpoint",
            ck_s,
            "--synthetic",
            "300",
            "--split",
            "Training",
            "--predictions",
            p.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "fergpu eval --adapter {adapter} failed"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("ccuracy"), "no accuracy in: {stdout}");
        preds.push(p);
    }
    // The CSV rounds probabilities to 6 decimals; labels agree except near-ties.
    assert_eq!(predicted(&preds[0]).len(), predicted(&preds[1]).len());
    assert_same_predictions(&probabilities(&preds[0]), &probabilities(&preds[1]));
}

#[test]
fn cli_request_for_an_absent_adapter_kind_fails_and_names_what_exists() {
    if !common::have_software_adapter("end-to-end GPU") {
        return;
    }
    // The software adapter is there; a name no adapter has cannot be met.
    let dir = common::scratch("e2e-unmet");
    let out = fergpu(&[
        "train",
        "--out",
        dir.join("run").to_str().unwrap(),
        "--adapter",
        "no-such-gpu-xyz",
        "--synthetic",
        "50",
        "--model",
        "mlp",
        "--epochs",
        "1",
    ]);
    assert!(!out.status.success(), "an unmet --adapter must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-gpu-xyz"), "{err}");
    assert!(
        err.to_lowercase().contains("llvmpipe") || err.contains("software"),
        "{err}"
    );
}

/// Evaluation picks its batch from the device: the seed CNN's first conv output is 1.03 MiB
/// per image, so lavapipe's 128 MiB binding limit holds 123 images, not the 256 of a full
/// evaluation batch. `fergpu eval` of 130 images works there, and a training batch that
/// cannot fit is refused before anything runs, naming the largest that does.
#[test]
fn evaluation_batches_fit_the_software_adapter_and_too_large_training_batches_are_refused() {
    if !common::have_software_adapter("end-to-end GPU") {
        return;
    }
    let dir = common::scratch("e2e-batch");
    let spec = fergpu::model::ModelSpec::cnn(
        fergpu::backend::Activation::Relu,
        fergpu::backend::Activation::Selu,
    );
    let params = fergpu::model::Plan::new(&spec, 1).unwrap().init_params(2);
    let ck = Checkpoint {
        spec,
        params,
        running: vec![],
        optimizer: None,
        train_state: None,
    };
    let ck_path = dir.join("cnn.safetensors");
    ck.save(&ck_path).unwrap();
    let data = dir.join("faces.csv");
    let ds = synth::generate(1300, 77);
    fergpu::data::csv::write(&data, &ds).unwrap();
    let out = fergpu(&[
        "eval",
        "--adapter",
        "software",
        "--checkpoint",
        ck_path.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--split",
        "Training",
        "--limit",
        "130",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("130 images"), "{stdout}");

    let out = fergpu(&[
        "train",
        "--adapter",
        "software",
        "--synthetic",
        "800",
        "--batch-size",
        "512",
        "--out",
        dir.join("run").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--batch-size 512 does not fit")
            && stderr.contains("the largest batch that fits is 123"),
        "{stderr}"
    );
    assert!(
        !dir.join("run").exists(),
        "nothing written for a refused batch"
    );
}
