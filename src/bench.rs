//! `fergpu bench`: training and evaluation images/s per model and batch size, and GFLOP/s
//! of the convolution and dense kernels (the seed CNN's at batch 32, the MLP's at 512, and
//! every other model's asked for at the first batch size), on any backend. On a GPU each
//! kernel runs the variant its shape gets (`--autotune`); `fergpu profile` says which.
//!
//! Timings are wall-clock around work that ends in a download (which waits for the device),
//! after warm-up steps, on generated data.

use crate::backend::{Activation, Backend};
use crate::data::synth;
use crate::error::Result;
use crate::eval::{DeviceSet, Evaluator};
use crate::model::{ModelSpec, Op, Plan};
use crate::train::{Trainer, TrainerOptions};
use std::time::Instant;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Models (`mlp`, `cnn` or files).
    pub models: Vec<String>,
    /// Batch sizes.
    pub batch_sizes: Vec<usize>,
    /// Timed training steps per (model, batch size); evaluation covers as many images.
    pub steps: usize,
    /// Repetitions of each kernel timing.
    pub kernel_reps: usize,
}

/// One measured line.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BenchRow {
    /// What was measured (`train cnn b32`, `conv2d_forward 128x23x23->128 b32`).
    pub what: String,
    /// Images per second (training or evaluation rows).
    pub images_per_s: Option<f64>,
    /// Billions of floating-point operations per second (kernel rows; 2 per multiply-add).
    pub gflops: Option<f64>,
    /// Milliseconds per step or per kernel call.
    pub ms: f64,
}

/// Runs every measurement on `be`.
pub fn run<B: Backend>(be: &B, cfg: &BenchConfig) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    for model in &cfg.models {
        let spec = ModelSpec::resolve(model, Activation::Relu, Activation::Selu)?;
        for &batch in &cfg.batch_sizes {
            rows.extend(model_rows(be, &spec, batch, cfg.steps)?);
        }
    }
    let cnn = ModelSpec::cnn(Activation::Relu, Activation::Selu);
    rows.extend(kernel_rows(be, &Plan::new(&cnn, 32)?, cfg.kernel_reps));
    let mlp = ModelSpec::mlp(Activation::Relu);
    rows.extend(kernel_rows(be, &Plan::new(&mlp, 512)?, cfg.kernel_reps));
    // Every other model asked for (the vgg and compact presets, model files): its layers at
    // the first batch size.
    let batch = cfg.batch_sizes.first().copied().unwrap_or(32);
    for model in cfg
        .models
        .iter()
        .filter(|m| !["mlp", "cnn"].contains(&m.as_str()))
    {
        let spec = ModelSpec::resolve(model, Activation::Relu, Activation::Selu)?;
        rows.extend(kernel_rows(be, &Plan::new(&spec, batch)?, cfg.kernel_reps));
    }
    Ok(rows)
}

/// Training and evaluation throughput of one model at one batch size.
fn model_rows<B: Backend>(
    be: &B,
    spec: &ModelSpec,
    batch: usize,
    steps: usize,
) -> Result<Vec<BenchRow>> {
    let warm = 2;
    let ds = synth::generate(batch * (steps + warm), 7);
    let params = Plan::new(spec, 1)?.init_params(1);
    let opts = TrainerOptions {
        batch,
        ..crate::settings::Settings::default().trainer_options()
    };
    let mut tr = Trainer::new(be, spec.clone(), &params, &ds, &opts)?;
    let mut step = 0;
    tr.run_epoch(1e-4, &mut |_| {
        step += 1;
        step < warm
    });
    let t0 = Instant::now();
    let out = tr.run_epoch(1e-4, &mut |_| true);
    let secs = t0.elapsed().as_secs_f64();
    let set = DeviceSet::new(be, &ds);
    let mut ev = Evaluator::with_batch(be, spec, &params, batch)?;
    ev.load_params(tr.params_tensor(), tr.running_tensor());
    ev.evaluate(&set, false)?;
    let t1 = Instant::now();
    ev.evaluate(&set, false)?;
    let eval_secs = t1.elapsed().as_secs_f64();
    let name = format!("{} b{batch}", spec.name);
    Ok(vec![
        BenchRow {
            what: format!("train {name}"),
            images_per_s: Some(out.images as f64 / secs),
            gflops: None,
            ms: 1e3 * secs * batch as f64 / out.images as f64,
        },
        BenchRow {
            what: format!("eval {name}"),
            images_per_s: Some(set.len() as f64 / eval_secs),
            gflops: None,
            ms: 1e3 * eval_secs * batch as f64 / set.len() as f64,
        },
    ])
}

/// GFLOP/s of each distinct conv and dense op of `plan`: forward and both backwards, as
/// training runs them (the input gradient only after the first layer).
fn kernel_rows<B: Backend>(be: &B, plan: &Plan, reps: usize) -> Vec<BenchRow> {
    let mut rows = Vec::new();
    let params = be.upload(&plan.init_params(3));
    let mut grads = be.zeros(plan.num_params);
    let mut sync = be.zeros(1);
    for (i, op) in plan.ops.iter().enumerate() {
        // Training never asks for the image's gradient (`Network::backward`), so the first
        // layer's input-gradient kernel is not timed: on the 1-channel first conv it would
        // fill one of 32 tile rows and dominate the bench for nothing.
        let first = i == 0;
        let (label, macs, input_len, out_len) = match op {
            Op::Conv { shape: s, .. } => (
                format!(
                    "{}x{}x{}->{}{} b{}",
                    s.in_c,
                    s.in_h,
                    s.in_w,
                    s.out_c,
                    if s.pad > 0 {
                        format!(" pad{}", s.pad)
                    } else {
                        String::new()
                    },
                    s.batch
                ),
                s.forward_macs(),
                s.input_len(),
                s.output_len(),
            ),
            Op::Dense { shape: s, .. } => (
                format!("{}->{} b{}", s.in_f, s.out_f, s.batch),
                s.forward_macs(),
                s.input_len(),
                s.output_len(),
            ),
            _ => continue,
        };
        if macs < 1_000_000 {
            continue; // too small to time meaningfully
        }
        let x = be.upload(&vec![0.5; input_len]);
        let mut y = be.upload(&vec![0.25; out_len]);
        let mut dx = be.zeros(input_len);
        let mut time = |name: &str, f: &mut dyn FnMut()| {
            f();
            be.submit();
            be.download(&sync);
            let t0 = Instant::now();
            for _ in 0..reps {
                f();
                be.submit();
            }
            be.write(&mut sync, &[0.0]);
            be.download(&sync);
            let secs = t0.elapsed().as_secs_f64() / reps as f64;
            rows.push(BenchRow {
                what: format!("{name} {label}"),
                images_per_s: None,
                gflops: Some(2.0 * macs as f64 / secs / 1e9),
                ms: 1e3 * secs,
            });
        };
        match *op {
            Op::Conv {
                shape,
                w_off,
                b_off,
            } => {
                time("conv2d_forward", &mut || {
                    be.conv2d_forward(&mut y, &x, &params, w_off, b_off, &shape)
                });
                if !first {
                    time("conv2d_backward_input", &mut || {
                        be.conv2d_backward_input(&mut dx, &y, &params, w_off, &shape)
                    });
                }
                time("conv2d_backward_weight", &mut || {
                    be.conv2d_backward_weight(&mut grads, w_off, b_off, &y, &x, &shape)
                });
            }
            Op::Dense {
                shape,
                w_off,
                b_off,
            } => {
                time("dense_forward", &mut || {
                    be.dense_forward(&mut y, &x, &params, w_off, b_off, &shape)
                });
                if !first {
                    time("dense_backward_input", &mut || {
                        be.dense_backward_input(&mut dx, &y, &params, w_off, &shape)
                    });
                }
                time("dense_backward_weight", &mut || {
                    be.dense_backward_weight(&mut grads, w_off, b_off, &y, &x, &shape)
                });
            }
            _ => {}
        }
    }
    rows
}

/// The rows as an aligned table.
pub fn table(device: &str, rows: &[BenchRow]) -> String {
    let mut s = format!(
        "device: {device}\n{:<44}{:>12}{:>10}{:>11}\n",
        "measurement", "images/s", "GFLOP/s", "ms"
    );
    for r in rows {
        let ips = r
            .images_per_s
            .map(|v| format!("{v:.1}"))
            .unwrap_or_default();
        let gf = r.gflops.map(|v| format!("{v:.2}")).unwrap_or_default();
        s.push_str(&format!("{:<44}{ips:>12}{gf:>10}{:>11.3}\n", r.what, r.ms));
    }
    s
}
