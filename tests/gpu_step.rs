//! Whole-step parity: the seed CNN and the MLP, from the same initial weights on the same
//! batches, train on the GPU as on the CPU reference. One step gives the same loss,
//! gradients and updated weights; twenty steps give the same loss curve. The CNN trains with
//! Adam, the MLP with SGD (Nesterov momentum and weight decay); both with class weights and
//! label smoothing.
//!
//! Batches are gathered on the device from a data set uploaded once, losses accumulate in a
//! device statistics buffer, and every step ends with `submit`, as in training. The last step
//! uses a smaller batch than the buffers were sized for, as a data set's last batch does.
//! A third test counts the real training loop's traffic: one submission per batch, one
//! readback per epoch, no images sent after the upload; a fourth, that scale, rotation and
//! erasing add one upload of the warp per epoch and nothing per batch.
//!
//! With no GPU adapter the tests print a note and pass, unless `CI` or `FERGPU_REQUIRE_GPU=1`
//! is set, where they fail.

mod common;

use common::assert_close;
use fergpu::augment::{Augment, Warp, WARP_WORDS};
use fergpu::backend::cpu::CpuBackend;
use fergpu::backend::gpu::adapter::AdapterRequest;
use fergpu::backend::gpu::GpuBackend;
use fergpu::backend::{stats, Activation, Backend, OptimizerConfig, OptimizerKind};
use fergpu::model::network::{Mode, Network, Optimizer};
use fergpu::model::{ModelSpec, Plan};
use fergpu::rng::Rng;
use fergpu::shape::{IMAGE_PIXELS, NUM_CLASSES};
use fergpu::train::{Trainer, TrainerOptions};

const LR: f32 = 1e-3;
/// Label smoothing of the steps' loss.
const SMOOTHING: f32 = 0.1;

fn gpu() -> Option<GpuBackend> {
    match GpuBackend::new(&AdapterRequest::Auto, None) {
        Ok(g) => Some(g),
        Err(e) if common::gpu_required() => {
            panic!("a GPU is required (CI / FERGPU_REQUIRE_GPU): {e}")
        }
        Err(e) => {
            eprintln!("note: skipping GPU step tests, no GPU adapter: {e}");
            None
        }
    }
}

/// A small seeded data set: pixels `(n, 48·48)`, labels `(n)`, a visiting order `(n)` and
/// class weights `(7)`. Each image is a smooth gradient plus noise, so activations vary.
struct Data {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    order: Vec<u32>,
    weights: Vec<f32>,
}

fn data(n: usize, seed: u64) -> Data {
    let mut rng = Rng::new(seed);
    let mut pixels = Vec::with_capacity(n * IMAGE_PIXELS);
    for _ in 0..n {
        let (a, b) = (rng.range(0.0, 3.0), rng.range(0.0, 3.0));
        for p in 0..IMAGE_PIXELS {
            let (y, x) = ((p / 48) as f32, (p % 48) as f32);
            let v = a * y + b * x + rng.range(0.0, 60.0);
            pixels.push(v.min(255.0) as u8);
        }
    }
    let labels = (0..n).map(|_| rng.below(NUM_CLASSES) as u8).collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    rng.shuffle(&mut order);
    let weights = (0..NUM_CLASSES).map(|_| rng.range(0.5, 2.0)).collect();
    Data {
        pixels,
        labels,
        order,
        weights,
    }
}

/// What a short training run leaves: per-step mean loss, the first step's gradients and
/// updated parameters, and the final parameters.
struct Trace {
    losses: Vec<f32>,
    first_grads: Vec<f32>,
    first_params: Vec<f32>,
    last_params: Vec<f32>,
}

/// `steps` optimizer steps of `plan` from `params` on `d`, the last one at batch
/// `plan.batch − 1`.
fn train<B: Backend>(
    be: &B,
    plan: &Plan,
    params: &[f32],
    d: &Data,
    steps: usize,
    config: OptimizerConfig,
) -> Trace {
    let mut net = Network::new(be, plan.clone(), params);
    let mut opt = Optimizer::new(be, plan, config);
    let images = be.upload_images(&d.pixels, &d.labels);
    let order = be.upload_indices(&d.order);
    let weights = be.upload(&d.weights);
    let mut st = be.zeros(stats::LEN);
    let mut trace = Trace {
        losses: vec![],
        first_grads: vec![],
        first_params: vec![],
        last_params: vec![],
    };
    let mut seen = (0.0, 0.0);
    for step in 0..steps {
        let batch = if step + 1 == steps {
            plan.batch - 1
        } else {
            plan.batch
        };
        let offset = (step * plan.batch) % (d.order.len() - plan.batch);
        be.gather_batch(&mut net.x, &mut net.labels, &images, &order, offset, batch);
        net.forward(
            be,
            batch,
            Mode::Train {
                seed: 1,
                step: step as u64,
            },
        );
        net.loss_forward(be, &mut st, &weights, SMOOTHING, batch);
        net.backward(be, &weights, SMOOTHING, batch);
        if step == 0 {
            trace.first_grads = be.download(&net.grads);
        }
        opt.step(be, &mut net, LR as f64);
        be.submit();
        // The running sums; this step's mean loss is the increase over the weight added.
        let s = be.download(&st);
        let (loss, weight) = (s[stats::LOSS_SUM] as f64, s[stats::WEIGHT_SUM] as f64);
        trace
            .losses
            .push(((loss - seen.0) / (weight - seen.1)) as f32);
        seen = (loss, weight);
        if step == 0 {
            trace.first_params = be.download(&net.params);
        }
    }
    trace.last_params = be.download(&net.params);
    trace
}

/// Runs `spec` at `batch` for `steps` steps with `config` on both backends and compares.
fn step_parity(spec: &ModelSpec, batch: usize, steps: usize, seed: u64, config: OptimizerConfig) {
    let Some(gpu) = gpu() else {
        return;
    };
    let plan = Plan::new(spec, batch).expect("a valid model");
    let params = plan.init_params(seed);
    let d = data(4 * batch + 3, seed + 1);
    let t0 = std::time::Instant::now();
    let want = train(&CpuBackend::new(2), &plan, &params, &d, steps, config);
    let t1 = std::time::Instant::now();
    let got = train(&gpu, &plan, &params, &d, steps, config);
    eprintln!(
        "{} batch {batch}, {steps} steps: CPU {:.2} s, GPU ({}) {:.2} s",
        spec.name,
        (t1 - t0).as_secs_f64(),
        gpu.adapter().name,
        t1.elapsed().as_secs_f64()
    );
    gpu.check().expect("the GPU reported an error");

    // The first loss goes through the whole forward pass: each layer's sums differ from the
    // reference only in summation order, a relative error far below 1e-4.
    assert_close("first loss", &got.losses[..1], &want.losses[..1], 0.0, 1e-4);
    // Gradients sum thousands of products through every layer back: compare them relative
    // to the largest gradient, as float error scales with the magnitudes summed.
    let scale = want.first_grads.iter().fold(0f32, |m, g| m.max(g.abs()));
    assert!(scale > 0.0, "the reference gradients are all zero");
    assert_close(
        "first grads",
        &got.first_grads,
        &want.first_grads,
        1e-4 * scale,
        1e-3,
    );
    // The first step's bound follows from the gradients' actual disagreement δ. Adam's first
    // step moves a weight by lr·g/(|g| + ε) (m̂ = g, v̂ = g²): a gradient error δ moves it by
    // at most lr·δ/ε, and never by more than 2·lr. SGD with Nesterov momentum μ moves it by
    // lr·(1 + μ)·(g + λp) (the buffer starts at g + λp): an error of lr·(1 + μ)·δ.
    let delta = got
        .first_grads
        .iter()
        .zip(&want.first_grads)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let p_tol = match config.kind {
        OptimizerKind::Sgd => LR * (1.0 + config.momentum as f32) * delta,
        _ => LR * (delta / config.eps as f32).min(2.0),
    } + 1e-6;
    assert_close(
        "first params",
        &got.first_params,
        &want.first_params,
        p_tol,
        1e-5,
    );
    // Over the steps the differences compound but stay small against the loss itself.
    assert_close("loss curve", &got.losses, &want.losses, 1e-4, 2e-3);
    // A loose net over the whole run (the loss curve above is the finer check): no weight may
    // drift apart by more than 2·lr per step, Adam's largest step.
    let drift = 2.0 * LR * steps as f32;
    assert_close(
        "last params",
        &got.last_params,
        &want.last_params,
        drift,
        0.0,
    );
}

#[test]
fn seed_cnn_steps_match_the_reference() {
    step_parity(
        &ModelSpec::cnn(Activation::Relu, Activation::Selu),
        4,
        20,
        7,
        fergpu::settings::Settings::default().optimizer.config(),
    );
}

#[test]
fn mlp_steps_match_the_reference() {
    let sgd = OptimizerConfig {
        kind: OptimizerKind::Sgd,
        momentum: 0.9,
        nesterov: true,
        weight_decay: 5e-4,
        ..fergpu::settings::Settings::default().optimizer.config()
    };
    step_parity(&ModelSpec::mlp(Activation::Relu), 8, 20, 8, sgd);
}

/// The training loop's traffic: each batch (gather, forward, loss, backward, optimizer) is one
/// command buffer, the epoch reads back once (its statistics), and the only host→device
/// writes are the epoch's shuffled order and the zeroed statistics: the images stay on the
/// device.
#[test]
fn an_epoch_submits_once_per_batch_and_reads_back_once() {
    let Some(gpu) = gpu() else {
        return;
    };
    let spec = ModelSpec::mlp(Activation::Relu);
    // 100 images at batch 32: three full batches and a last one of 4.
    let ds = fergpu::data::synth::generate(100, 5);
    let params = Plan::new(&spec, 1).expect("mlp").init_params(5);
    let opts = TrainerOptions {
        batch: 32,
        seed: 5,
        ..fergpu::settings::Settings::default().trainer_options()
    };
    let mut tr = Trainer::new(&gpu, spec, &params, &ds, &opts).expect("a trainer on the GPU");
    let before = gpu.traffic();
    let out = tr.run_epoch(1e-3, &mut |_| true);
    let after = gpu.traffic();
    gpu.check().expect("the GPU reported an error");
    assert!(out.loss.is_finite() && out.images == 100, "{out:?}");
    let batches = tr.batches_per_epoch();
    assert_eq!(batches, 4);
    assert_eq!(
        after.readbacks - before.readbacks,
        1,
        "one readback per epoch"
    );
    // The readback's copy is submitted with it: one more command buffer.
    assert_eq!(
        after.submissions - before.submissions,
        batches + 1,
        "one submission per batch"
    );
    let order_and_stats = 4 * ds.len() as u64 + 4 * stats::LEN as u64;
    assert_eq!(after.bytes_written - before.bytes_written, order_and_stats);
}

/// With scale, rotation and erasing on, an epoch uploads the order and the warp once, at its
/// start, and nothing per batch: the augmentation is computed on the device.
#[test]
fn an_epoch_with_a_warp_uploads_it_once_and_no_images() {
    let Some(gpu) = gpu() else {
        return;
    };
    let spec = ModelSpec::mlp(Activation::Relu);
    let ds = fergpu::data::synth::generate(100, 6);
    let params = Plan::new(&spec, 1).expect("mlp").init_params(6);
    let opts = TrainerOptions {
        batch: 32,
        seed: 6,
        augment: Augment::parse("flip,shift=2").unwrap(),
        warp: Warp {
            scale: 0.2,
            rotate: 15.0,
            erase: 0.5,
            ..Warp::NONE
        },
        ..fergpu::settings::Settings::default().trainer_options()
    };
    let mut tr = Trainer::new(&gpu, spec, &params, &ds, &opts).expect("a trainer on the GPU");
    let before = gpu.traffic();
    let out = tr.run_epoch(1e-3, &mut |_| true);
    let after = gpu.traffic();
    gpu.check().expect("the GPU reported an error");
    assert!(out.loss.is_finite() && out.images == 100, "{out:?}");
    assert_eq!(after.readbacks - before.readbacks, 1);
    let n = ds.len() as u64;
    let order_warp_and_stats = 4 * n + 4 * WARP_WORDS as u64 * n + 4 * stats::LEN as u64;
    assert_eq!(
        after.bytes_written - before.bytes_written,
        order_warp_and_stats
    );
}
