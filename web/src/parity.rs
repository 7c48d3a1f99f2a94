//! The browser's own parity checks: every op family on odd shapes, and one training step of
//! the notebook CNN and of `compact` on a tiny batch, on the page's WebGPU device against
//! fergpu's CPU reference (compiled into the same wasm module), with the tolerances of the
//! native parity tests (`tests/gpu_parity.rs`, `tests/gpu_step.rs`). `web/tests/` runs them
//! in headless Chromium, where the browser's own compiler (Tint) built every kernel.
//!
//! Each check runs the same generic code on both backends and downloads what it wrote; the
//! comparison is `tests/common`'s: `|got − want| ≤ atol + rtol·|want|` element-wise.

use crate::engine::{Device, Engine};
use fergpu::backend::cpu::CpuBackend;
use fergpu::backend::{stats, Activation, Backend, BatchNorm, Dropout, OptimizerStep};
use fergpu::model::network::{Mode, Network, Optimizer};
use fergpu::model::{ModelSpec, Plan};
use fergpu::rng::Rng;
use fergpu::settings::Settings;
use fergpu::shape::{
    BatchNormShape, Conv2dShape, DenseShape, GlobalAvgPoolShape, PoolShape, IMAGE_PIXELS,
    NUM_CLASSES,
};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

/// The learning rate of the training steps compared.
const STEP_LR: f32 = 1e-3;

/// One output of one op: its values and the tolerance it is compared with.
struct Out {
    name: String,
    values: Vec<f32>,
    atol: f32,
    rtol: f32,
}

/// One comparison's verdict.
#[derive(Serialize)]
struct Verdict {
    name: String,
    ok: bool,
    elements: usize,
    /// The worst mismatch and how many elements differ, when it failed.
    detail: String,
}

/// `len` values uniform in `[lo, hi)` from `seed` (`tests/common`'s `random_vec`).
fn random_vec(len: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.range(lo, hi)).collect()
}

/// Compares `got` with `want` as `tests/common`'s `assert_close` does.
fn compare(name: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> Verdict {
    let mut bad = 0;
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let excess = if err.is_nan() {
            f32::INFINITY
        } else {
            err - (atol + rtol * w.abs())
        };
        if excess > 0.0 || g.is_nan() != w.is_nan() {
            bad += 1;
            if worst.is_none_or(|(_, e)| excess > e) {
                worst = Some((i, excess));
            }
        }
    }
    let detail = match (got.len() == want.len(), worst) {
        (false, _) => format!("lengths differ: {} against {}", got.len(), want.len()),
        (true, Some((i, _))) => format!(
            "{bad} of {} differ (atol {atol}, rtol {rtol}); worst [{i}] got {} want {}",
            got.len(),
            got[i],
            want[i]
        ),
        (true, None) => String::new(),
    };
    Verdict {
        name: name.to_string(),
        ok: detail.is_empty(),
        elements: got.len(),
        detail,
    }
}

/// Runs every op family on `be`, each output prefilled with junk past the op's shape (so
/// missing or stray writes show), and downloads what each wrote.
async fn families<B: Backend>(be: &B) -> Vec<Out> {
    let mut out = Vec::new();
    conv(be, &mut out).await;
    pool(be, &mut out).await;
    dense(be, &mut out).await;
    elementwise(be, &mut out).await;
    loss(be, &mut out).await;
    batchnorm(be, &mut out).await;
    gap_and_gather(be, &mut out).await;
    out
}

/// Adds an output to `out`.
async fn push<B: Backend>(out: &mut Vec<Out>, be: &B, name: &str, t: &B::Tensor, tol: (f32, f32)) {
    be.submit();
    out.push(Out {
        name: name.to_string(),
        values: be.download_async(t).await,
        atol: tol.0,
        rtol: tol.1,
    });
}

/// Convolutions: an odd 3×3 valid one, a padded 5×5 one; forward (plain and with an
/// activation), input and weight gradients.
async fn conv<B: Backend>(be: &B, out: &mut Vec<Out>) {
    let shapes = [
        Conv2dShape {
            batch: 3,
            in_c: 5,
            in_h: 7,
            in_w: 9,
            out_c: 6,
            k: 3,
            pad: 0,
        },
        Conv2dShape {
            batch: 2,
            in_c: 3,
            in_h: 4,
            in_w: 6,
            out_c: 5,
            k: 5,
            pad: 2,
        },
    ];
    for (i, s) in shapes.iter().enumerate() {
        let seed = 10 + i as u64;
        let (w_off, b_off) = (7, 7 + s.weight_len() + 3);
        let n = b_off + s.out_c + 4;
        let params = be.upload(&random_vec(n, -0.5, 0.5, seed));
        let x = be.upload(&random_vec(s.input_len() + 11, -1.0, 1.0, seed + 1));
        let dy = be.upload(&random_vec(s.output_len() + 11, -1.0, 1.0, seed + 2));
        let junk = random_vec(
            n.max(s.input_len()).max(s.output_len()) + 16,
            5.0,
            6.0,
            seed + 3,
        );
        let tol = (1e-4, 1e-4);
        let mut y = be.upload(&junk);
        be.conv2d_forward(&mut y, &x, &params, w_off, b_off, s);
        push(out, be, &format!("conv {i} forward"), &y, tol).await;
        let mut pre = be.upload(&junk);
        be.conv2d_forward_act(
            &mut y,
            &mut pre,
            &x,
            &params,
            w_off,
            b_off,
            s,
            Activation::Elu,
        );
        push(out, be, &format!("conv {i} forward + elu"), &y, tol).await;
        let mut dx = be.upload(&junk);
        be.conv2d_backward_input(&mut dx, &dy, &params, w_off, s);
        push(out, be, &format!("conv {i} d_input"), &dx, tol).await;
        let mut grads = be.upload(&junk[..n]);
        be.conv2d_backward_weight(&mut grads, w_off, b_off, &dy, &x, s);
        push(out, be, &format!("conv {i} grads"), &grads, tol).await;
    }
}

/// Max pools of size 2 and 3 over 7×9 planes (both drop a trailing row or column), with ties.
async fn pool<B: Backend>(be: &B, out: &mut Vec<Out>) {
    for size in [2, 3] {
        let s = PoolShape {
            batch: 3,
            c: 5,
            in_h: 7,
            in_w: 9,
            size,
        };
        let mut x = random_vec(s.input_len() + 5, -1.0, 1.0, 20 + size as u64);
        x[..4].fill(0.25); // a tie in the first window
        let x = be.upload(&x);
        let mut y = be.upload(&random_vec(s.output_len() + 5, 5.0, 6.0, 1));
        let mut arg = be.zeros_indices(s.output_len() + 5);
        be.maxpool_forward(&mut y, &mut arg, &x, &s);
        push(out, be, &format!("maxpool {size} forward"), &y, (0.0, 0.0)).await;
        let dy = be.upload(&random_vec(s.output_len(), -1.0, 1.0, 30));
        let mut dx = be.upload(&random_vec(s.input_len() + 5, 5.0, 6.0, 2));
        be.maxpool_backward(&mut dx, &dy, &arg, &s);
        push(
            out,
            be,
            &format!("maxpool {size} backward"),
            &dx,
            (0.0, 0.0),
        )
        .await;
    }
}

/// A dense layer of odd sizes: forward, input and weight gradients.
async fn dense<B: Backend>(be: &B, out: &mut Vec<Out>) {
    let s = DenseShape {
        batch: 5,
        in_f: 37,
        out_f: 11,
    };
    let (w_off, b_off) = (3, 3 + s.weight_len() + 2);
    let n = b_off + s.out_f + 3;
    let params = be.upload(&random_vec(n, -0.5, 0.5, 40));
    let x = be.upload(&random_vec(s.input_len() + 3, -1.0, 1.0, 41));
    let dy = be.upload(&random_vec(s.output_len() + 3, -1.0, 1.0, 42));
    let junk = random_vec(n + s.input_len() + 16, 5.0, 6.0, 43);
    let tol = (1e-5, 1e-5);
    let mut y = be.upload(&junk[..s.output_len() + 4]);
    be.dense_forward(&mut y, &x, &params, w_off, b_off, &s);
    push(out, be, "dense forward", &y, tol).await;
    let mut dx = be.upload(&junk[..s.input_len() + 4]);
    be.dense_backward_input(&mut dx, &dy, &params, w_off, &s);
    push(out, be, "dense d_input", &dx, tol).await;
    let mut grads = be.upload(&junk[..n]);
    be.dense_backward_weight(&mut grads, w_off, b_off, &dy, &x, &s);
    push(out, be, "dense grads", &grads, tol).await;
}

/// Every activation forward and backward, dropout forward and backward, `scale_add`, and an
/// Adam step, over 1,001 elements.
async fn elementwise<B: Backend>(be: &B, out: &mut Vec<Out>) {
    let len = 1001;
    let x = be.upload(&random_vec(len + 3, -3.0, 3.0, 50));
    let dy = be.upload(&random_vec(len + 3, -1.0, 1.0, 51));
    let junk = random_vec(len + 3, 5.0, 6.0, 52);
    for act in Activation::ALL {
        let mut y = be.upload(&junk);
        be.activation_forward(&mut y, &x, act, len);
        push(
            out,
            be,
            &format!("{} forward", act.name()),
            &y,
            (2e-6, 2e-5),
        )
        .await;
        let mut dx = be.upload(&junk);
        be.activation_backward(&mut dx, &dy, &y, act, len);
        push(
            out,
            be,
            &format!("{} backward", act.name()),
            &dx,
            (2e-6, 2e-5),
        )
        .await;
    }
    let d = Dropout {
        rate: 0.3,
        seed: 7,
        step: 3,
        layer: 2,
    };
    let mut y = be.upload(&junk);
    be.dropout_forward(&mut y, &x, &d, len);
    push(out, be, "dropout forward", &y, (0.0, 1e-6)).await;
    be.dropout_backward(&mut y, &dy, &d, len);
    push(out, be, "dropout backward", &y, (0.0, 1e-6)).await;
    let mut acc = be.upload(&junk);
    be.scale_add(&mut acc, &x, 0.25, 0.75, len);
    push(out, be, "scale_add", &acc, (1e-6, 1e-6)).await;
    let config = Settings::default().optimizer.config();
    let step = OptimizerStep::new(&config, 1e-3, 3);
    let mut params = be.upload(&random_vec(len, -1.0, 1.0, 53));
    let mut m = be.upload(&random_vec(len, -0.1, 0.1, 54));
    let mut v = be.upload(&random_vec(len, 0.0, 0.01, 55));
    let decay = be.upload(&vec![1.0; len]);
    let grads = be.upload(&random_vec(len, -1.0, 1.0, 56));
    be.optimizer_step(&mut params, &grads, &mut m, &mut v, &decay, &step);
    push(out, be, "adam params", &params, (1e-7, 1e-6)).await;
    push(out, be, "adam m", &m, (1e-9, 1e-6)).await;
    push(out, be, "adam v", &v, (1e-12, 1e-6)).await;
}

/// Softmax cross-entropy forward (with logits of ±100) and backward with class weights and
/// label smoothing, and the confusion counts.
async fn loss<B: Backend>(be: &B, out: &mut Vec<Out>) {
    let batch = 9;
    let mut logits = random_vec(batch * NUM_CLASSES + 3, -4.0, 4.0, 60);
    logits[3] = 100.0;
    logits[NUM_CLASSES + 1] = -100.0;
    let logits = be.upload(&logits);
    let labels: Vec<u32> = (0..batch as u32 + 2)
        .map(|i| i % NUM_CLASSES as u32)
        .collect();
    let labels = be.upload_indices(&labels);
    let weights = be.upload(&random_vec(NUM_CLASSES, 0.5, 2.0, 61));
    let junk = random_vec(batch * NUM_CLASSES + 3, 5.0, 6.0, 62);
    let mut probs = be.upload(&junk);
    let mut st = be.zeros(stats::LEN);
    be.softmax_cross_entropy_forward(
        &mut probs,
        &mut st,
        &logits,
        &labels,
        &weights,
        0.1,
        batch,
        NUM_CLASSES,
    );
    push(out, be, "softmax probs", &probs, (1e-6, 1e-5)).await;
    push(out, be, "softmax stats", &st, (1e-4, 1e-5)).await;
    let mut d = be.upload(&junk);
    be.softmax_cross_entropy_backward(&mut d, &probs, &labels, &weights, 0.1, batch, NUM_CLASSES);
    push(out, be, "softmax d_logits", &d, (1e-6, 1e-5)).await;
    let mut conf = be.zeros_indices(NUM_CLASSES * NUM_CLASSES);
    be.confusion_accumulate(&mut conf, &probs, &labels, batch, NUM_CLASSES);
    be.submit();
    let counts = be.download_indices_async(&conf).await;
    out.push(Out {
        name: "confusion".into(),
        values: counts.iter().map(|&c| c as f32).collect(),
        atol: 0.0,
        rtol: 0.0,
    });
}

/// Batch normalisation over an odd shape: training forward (statistics and running
/// update), evaluation forward, backward.
async fn batchnorm<B: Backend>(be: &B, out: &mut Vec<Out>) {
    let s = BatchNormShape {
        batch: 3,
        c: 5,
        hw: 7 * 9,
    };
    let c = s.c;
    let bn = BatchNorm {
        w_off: 3,
        b_off: 3 + c + 2,
        mean_off: 2,
        var_off: 2 + c + 1,
        momentum: 0.1,
        eps: 1e-5,
    };
    let mut params = random_vec(bn.b_off + c + 3, -1.0, 1.0, 70);
    params[bn.w_off..bn.w_off + c].copy_from_slice(&random_vec(c, 0.5, 1.5, 71));
    let mut running = random_vec(bn.var_off + c + 2, -1.0, 1.0, 72);
    running[bn.var_off..bn.var_off + c].copy_from_slice(&random_vec(c, 0.5, 2.0, 73));
    let params_buf = be.upload(&params);
    let mut running = be.upload(&running);
    let x = be.upload(&random_vec(s.len() + 5, -1.0, 1.0, 74));
    let dy = be.upload(&random_vec(s.len() + 5, -1.0, 1.0, 75));
    let junk = random_vec(s.len() + 16, 5.0, 6.0, 76);
    let mut y = be.upload(&junk);
    let mut saved = be.upload(&junk[..2 * c + 3]);
    be.batchnorm_forward_train(&mut y, &mut saved, &mut running, &x, &params_buf, &bn, &s);
    push(out, be, "batchnorm train y", &y, (1e-5, 1e-5)).await;
    push(out, be, "batchnorm saved", &saved, (1e-6, 1e-5)).await;
    push(out, be, "batchnorm running", &running, (1e-6, 1e-5)).await;
    let mut ye = be.upload(&junk);
    be.batchnorm_forward_eval(&mut ye, &x, &params_buf, &running, &bn, &s);
    push(out, be, "batchnorm eval y", &ye, (1e-6, 1e-6)).await;
    let mut dx = be.upload(&junk);
    let mut grads = be.upload(&junk[..params.len()]);
    be.batchnorm_backward(&mut dx, &mut grads, &dy, &x, &saved, &params_buf, &bn, &s);
    push(out, be, "batchnorm d_input", &dx, (1e-5, 1e-5)).await;
    push(out, be, "batchnorm grads", &grads, (1e-5, 1e-5)).await;
}

/// Global average pooling forward and backward, and gathering a batch of images.
async fn gap_and_gather<B: Backend>(be: &B, out: &mut Vec<Out>) {
    let s = GlobalAvgPoolShape {
        batch: 3,
        c: 5,
        hw: 7 * 9,
    };
    let x = be.upload(&random_vec(s.input_len() + 3, -1.0, 1.0, 80));
    let mut y = be.upload(&random_vec(s.output_len() + 3, 5.0, 6.0, 81));
    be.globalavgpool_forward(&mut y, &x, &s);
    push(out, be, "globalavgpool forward", &y, (1e-6, 1e-5)).await;
    let dy = be.upload(&random_vec(s.output_len(), -1.0, 1.0, 82));
    let mut dx = be.upload(&random_vec(s.input_len() + 3, 5.0, 6.0, 83));
    be.globalavgpool_backward(&mut dx, &dy, &s);
    push(out, be, "globalavgpool backward", &dx, (0.0, 0.0)).await;
    let n = 5;
    let mut rng = Rng::new(84);
    let pixels: Vec<u8> = (0..n * IMAGE_PIXELS)
        .map(|_| rng.below(256) as u8)
        .collect();
    let labels: Vec<u8> = (0..n as u8).map(|i| i % NUM_CLASSES as u8).collect();
    let images = be.upload_images(&pixels, &labels);
    let order = be.upload_indices(&[4, fergpu::augment::pack(2, true, 1, -2), 0, 3]);
    let mut xb = be.upload(&random_vec(3 * IMAGE_PIXELS + 3, 5.0, 6.0, 85));
    let mut lb = be.zeros_indices(4);
    be.gather_batch(&mut xb, &mut lb, &images, &order, 1, 3);
    push(out, be, "gather batch", &xb, (0.0, 0.0)).await;
}

/// One training step of `spec` at `batch` from seeded weights on generated faces (dropout
/// keyed by seed 11, step 0, as a trainer's first step): the loss statistics, the gradients,
/// the running statistics and the updated parameters, with `tests/layers_models.rs`'s
/// tolerances. A parameter tolerance of 0 is derived from the gradients' disagreement (see
/// `parity_report`), as `tests/gpu_step.rs` does.
async fn one_step<B: Backend>(
    be: &B,
    spec: &ModelSpec,
    batch: usize,
    params_atol: f32,
) -> Vec<Out> {
    let plan = Plan::new(spec, batch).expect("a preset is a valid model");
    let params = plan.init_params(12);
    let ds = fergpu::data::synth::generate(batch, 13);
    let mut net = Network::new(be, plan.clone(), &params);
    let mut opt = Optimizer::new(be, &plan, Settings::default().optimizer.config());
    let images = be.upload_images(&ds.pixels, &ds.labels);
    let order = be.upload_indices(&(0..batch as u32).collect::<Vec<_>>());
    let weights = be.upload(&[1.0; NUM_CLASSES]);
    let mut st = be.zeros(stats::LEN);
    be.gather_batch(&mut net.x, &mut net.labels, &images, &order, 0, batch);
    net.forward(be, batch, Mode::Train { seed: 11, step: 0 });
    net.loss_forward(be, &mut st, &weights, 0.0, batch);
    net.backward(be, &weights, 0.0, batch);
    be.submit();
    let grads = be.download_async(&net.grads).await;
    opt.step(be, &mut net, f64::from(STEP_LR));
    be.submit();
    let loss = be.download_async(&st).await;
    let running = be.download_async(&net.running).await;
    let updated = be.download_async(&net.params).await;
    // Batch statistics over a few values per feature make some gradients large: compare
    // them relative to the largest, as float error scales with the magnitudes summed.
    let scale = grads.iter().fold(0f32, |m, g| m.max(g.abs()));
    let name = |what: &str| format!("{} step {what}", spec.name);
    let mut out = vec![
        Out {
            name: name("loss"),
            values: loss,
            atol: 0.0,
            rtol: 1e-4,
        },
        Out {
            name: name("grads"),
            values: grads,
            atol: 1e-4 * scale,
            rtol: 1e-3,
        },
        Out {
            name: name("params"),
            values: updated,
            atol: params_atol,
            rtol: 1e-5,
        },
    ];
    if plan.num_running > 0 {
        out.push(Out {
            name: name("running statistics"),
            values: running[..plan.num_running].to_vec(),
            atol: 1e-5,
            rtol: 1e-4,
        });
    }
    out
}

/// Everything the browser compares, on one backend.
async fn everything<B: Backend>(be: &B) -> Vec<Out> {
    let mut out = families(be).await;
    let cnn = ModelSpec::cnn(Activation::Relu, Activation::Selu);
    out.extend(one_step(be, &cnn, 2, 0.0).await);
    // tests/layers_models.rs: batch 3 (batch norm over 3 values per dense feature); Adam's
    // first step moves each weight by about lr, either way for a gradient within float
    // error of 0.
    let compact = ModelSpec::compact(Activation::Relu);
    out.extend(one_step(be, &compact, 3, 2.1e-3).await);
    out
}

#[wasm_bindgen]
impl Engine {
    /// Runs every op family on odd shapes and one training step of `cnn` and of `compact`
    /// (batches 2 and 3) on this engine's WebGPU device and on the CPU reference; resolves to the
    /// JSON text of `[{name, ok, elements, detail}]`, one verdict per output compared.
    #[wasm_bindgen(js_name = parityReport)]
    pub fn parity_report(&self) -> js_sys::Promise {
        let dev = self.dev;
        future_to_promise(async move {
            let Device::Gpu(gpu) = dev else {
                return Err(crate::js_error("the parity checks need WebGPU"));
            };
            let cpu = CpuBackend::new(1);
            let want = everything(&cpu).await;
            let got = everything(gpu).await;
            let mut verdicts = Vec::new();
            // The largest gradient disagreement of the last step compared: it bounds the
            // step's parameter update as tests/gpu_step.rs derives.
            let mut delta = 0f32;
            for (g, w) in got.iter().zip(&want) {
                let mut atol = w.atol;
                if g.name.ends_with("step grads") {
                    delta = g
                        .values
                        .iter()
                        .zip(&w.values)
                        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                }
                if g.name.ends_with("step params") && atol == 0.0 {
                    let eps = Settings::default().optimizer.config().eps as f32;
                    atol = STEP_LR * (delta / eps).min(2.0) + 1e-6;
                }
                verdicts.push(compare(&g.name, &g.values, &w.values, atol, w.rtol));
            }
            if let Err(e) = gpu.check() {
                verdicts.push(Verdict {
                    name: "device errors".into(),
                    ok: false,
                    elements: 0,
                    detail: e.to_string(),
                });
            }
            Ok(serde_json::to_string(&verdicts)
                .expect("verdicts serialize")
                .into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The browser compares these outputs; natively, every check must at least run on the
    /// CPU reference (a wrong buffer length panics here instead of hanging a page).
    #[test]
    fn every_check_runs_on_the_cpu_reference() {
        let out = pollster::block_on(everything(&CpuBackend::new(1)));
        assert!(out.len() >= 40, "{} outputs", out.len());
        for o in &out {
            assert!(!o.values.is_empty(), "{} is empty", o.name);
            assert!(
                o.values.iter().all(|v| v.is_finite()),
                "{} is not finite",
                o.name
            );
        }
        let same = compare("self", &out[0].values, &out[0].values, 0.0, 0.0);
        assert!(same.ok);
        let shifted: Vec<f32> = out[0].values.iter().map(|v| v + 1.0).collect();
        assert!(!compare("shifted", &shifted, &out[0].values, 1e-3, 0.0).ok);
    }
}
