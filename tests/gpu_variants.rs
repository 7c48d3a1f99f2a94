//! Every variant of the GEMM-shaped launches against the CPU reference: the register-only
//! kernels and the workgroup-memory kernels with each tile configuration of
//! `tiles::TILE_CONFIGS`, forced one at a time (`GpuBackend::set_variant`), on odd shapes
//! (sizes that are no multiple of any tile, reductions that end mid-step, padding, split-K,
//! several tiles each way), with buffers longer than the shapes prefilled with junk so that
//! stray or missing writes show. Each variant also runs on a backend that folds grids at 3
//! workgroups per dimension, once with wgpu's runtime bounds checks kept, and once with the
//! tiled kernels' workgroup memory left unfilled.
//!
//! With no GPU adapter the tests print a note and pass, unless `CI` or `FERGPU_REQUIRE_GPU=1`
//! is set, where they fail.

mod common;

use common::{assert_close, conv_case, random_vec, ConvCase};
use fergpu::backend::cpu::CpuBackend;
use fergpu::backend::gpu::adapter::AdapterRequest;
use fergpu::backend::gpu::kernels::BuildOptions;
use fergpu::backend::gpu::tiles::Variant;
use fergpu::backend::gpu::{GpuBackend, GpuOptions};
use fergpu::backend::{Activation, Backend};
use fergpu::shape::{Conv2dShape, DenseShape};

/// The best adapter with `build`, or `None` (with a note) when there is none and none is
/// required.
fn open(build: BuildOptions) -> Option<GpuBackend> {
    let opts = GpuOptions {
        autotune: fergpu::backend::gpu::autotune::Autotune::Off,
        build,
        ..GpuOptions::default()
    };
    match GpuBackend::with_options(&AdapterRequest::Auto, None, &opts) {
        Ok(g) => Some(g),
        Err(e) if common::gpu_required() => {
            panic!("a GPU is required (CI / FERGPU_REQUIRE_GPU): {e}")
        }
        Err(e) => {
            eprintln!("note: skipping GPU variant tests, no GPU adapter: {e}");
            None
        }
    }
}

/// Odd shapes: a small one; one with more rows and columns than the largest tile and a
/// reduction (19·9 = 171) that ends mid-step, padded; the first layer of the padded presets
/// (one input channel, 48×48, split-K weight gradient); a 5×5 kernel padded by 2 over a 4×6
/// input (taps that see only padding); and a 1×1 kernel.
fn conv_cases() -> Vec<ConvCase> {
    let shapes = [
        (3, 5, 7, 9, 6, 3, 0),
        (2, 19, 13, 11, 133, 3, 1),
        (3, 1, 48, 48, 5, 3, 1),
        (2, 3, 4, 6, 5, 5, 2),
        (2, 9, 5, 5, 7, 1, 0),
    ];
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, (batch, in_c, in_h, in_w, out_c, k, pad))| {
            let s = Conv2dShape {
                batch,
                in_c,
                in_h,
                in_w,
                out_c,
                k,
                pad,
            };
            conv_case(s, 100 + 10 * i as u64)
        })
        .collect()
}

/// Forward, input gradient and weight gradient of `c` on `be`, each from its own prefilled
/// output buffer.
fn conv_ops<B: Backend>(be: &B, c: &ConvCase) -> Results {
    let (params, x, dy) = (be.upload(&c.params), be.upload(&c.x), be.upload(&c.dy));
    let mut y = be.upload(&c.junk[..c.s.output_len() + 5]);
    be.conv2d_forward(&mut y, &x, &params, c.w_off, c.b_off, &c.s);
    // The activation fused into the epilogue, on the same output (the last 5 keep the junk).
    let mut pre = be.upload(&c.junk[..c.s.output_len() + 5]);
    let mut y_act = be.upload(&c.junk[..c.s.output_len() + 5]);
    let act = Activation::ALL[c.s.out_c % Activation::ALL.len()];
    be.conv2d_forward_act(
        &mut y_act, &mut pre, &x, &params, c.w_off, c.b_off, &c.s, act,
    );
    let mut dx = be.upload(&c.junk[..c.s.input_len() + 5]);
    be.conv2d_backward_input(&mut dx, &dy, &params, c.w_off, &c.s);
    let mut grads = be.upload(&c.junk[..c.params.len()]);
    be.conv2d_backward_weight(&mut grads, c.w_off, c.b_off, &dy, &x, &c.s);
    be.submit();
    vec![
        be.download(&y),
        be.download(&dx),
        be.download(&grads),
        be.download(&y_act),
    ]
}

/// A dense layer's inputs (same layout idea as [`ConvCase`]).
struct DenseCase {
    s: DenseShape,
    w_off: usize,
    b_off: usize,
    params: Vec<f32>,
    x: Vec<f32>,
    dy: Vec<f32>,
    junk: Vec<f32>,
}

/// A small layer, and one wider and longer than the largest tile with odd sizes.
fn dense_cases() -> Vec<DenseCase> {
    [(3, 37, 33), (70, 150, 131)]
        .into_iter()
        .enumerate()
        .map(|(i, (batch, in_f, out_f))| {
            let s = DenseShape { batch, in_f, out_f };
            let w_off = 5;
            let b_off = w_off + s.weight_len() + 2;
            let n = b_off + s.out_f + 3;
            let seed = 200 + 10 * i as u64;
            DenseCase {
                s,
                w_off,
                b_off,
                params: random_vec(n, -0.5, 0.5, seed),
                x: random_vec(s.input_len() + 4, -1.0, 1.0, seed + 1),
                dy: random_vec(s.output_len() + 4, -1.0, 1.0, seed + 2),
                junk: random_vec(
                    n.max(s.input_len()).max(s.output_len()) + 16,
                    5.0,
                    6.0,
                    seed + 3,
                ),
            }
        })
        .collect()
}

fn dense_ops<B: Backend>(be: &B, c: &DenseCase) -> Results {
    let (params, x, dy) = (be.upload(&c.params), be.upload(&c.x), be.upload(&c.dy));
    let mut y = be.upload(&c.junk[..c.s.output_len() + 5]);
    be.dense_forward(&mut y, &x, &params, c.w_off, c.b_off, &c.s);
    let mut dx = be.upload(&c.junk[..c.s.input_len() + 5]);
    be.dense_backward_input(&mut dx, &dy, &params, c.w_off, &c.s);
    let mut grads = be.upload(&c.junk[..c.params.len()]);
    be.dense_backward_weight(&mut grads, c.w_off, c.b_off, &dy, &x, &c.s);
    be.submit();
    vec![be.download(&y), be.download(&dx), be.download(&grads)]
}

const OPS: [&str; 4] = [
    "forward",
    "backward_input",
    "backward_weight",
    "forward_act",
];

/// The results of a case: forward, input gradient, weight gradient (and for convolutions the
/// forward pass with an activation fused in).
type Results = Vec<Vec<f32>>;

/// Every case with the CPU reference's results.
struct Cases {
    conv: Vec<(ConvCase, Results)>,
    dense: Vec<(DenseCase, Results)>,
}

/// Runs every case with `variant` forced on `gpu` and compares with the reference.
fn check_variant(gpu: &mut GpuBackend, variant: Variant, cases: &Cases) {
    gpu.set_variant(Some(variant));
    for (i, (c, want)) in cases.conv.iter().enumerate() {
        let got = conv_ops(gpu, c);
        for (o, (g, w)) in got.iter().zip(want).enumerate() {
            // Sums of up to 6,912 products (the split-K weight gradient of case 2) of values
            // ≤ 1 in another order.
            let atol = if o == 2 && i == 2 { 2e-3 } else { 2e-4 };
            let what = format!("{variant}: conv case {i} {}", OPS[o]);
            assert_close(&what, g, w, atol, 1e-4);
        }
    }
    for (i, (c, want)) in cases.dense.iter().enumerate() {
        let got = dense_ops(gpu, c);
        for (o, (g, w)) in got.iter().zip(want).enumerate() {
            let what = format!("{variant}: dense case {i} {}", OPS[o]);
            assert_close(&what, g, w, 1e-4, 1e-4);
        }
    }
    gpu.check().expect("the GPU reported an error");
}

/// The CPU reference's results of every case.
fn references() -> Cases {
    let cpu = CpuBackend::new(1);
    let conv = conv_cases()
        .into_iter()
        .map(|c| {
            let want = conv_ops(&cpu, &c);
            (c, want)
        })
        .collect();
    let dense = dense_cases()
        .into_iter()
        .map(|c| {
            let want = dense_ops(&cpu, &c);
            (c, want)
        })
        .collect();
    Cases { conv, dense }
}

#[test]
fn every_variant_and_tile_configuration_matches_the_reference() {
    let Some(mut gpu) = open(BuildOptions::default()) else {
        return;
    };
    let cases = references();
    for v in Variant::all() {
        if v.fits(gpu.limits()) {
            check_variant(&mut gpu, v, &cases);
        } else {
            eprintln!("note: {v} exceeds this adapter's limits, not run");
        }
    }
}

#[test]
fn the_tiled_variants_need_no_zero_filled_workgroup_memory() {
    let Some(mut gpu) = open(BuildOptions {
        skip_workgroup_zeroing: true,
        ..BuildOptions::default()
    }) else {
        return;
    };
    let cases = references();
    let limits = gpu.limits().clone();
    for v in Variant::all()[1..].iter().filter(|v| v.fits(&limits)) {
        check_variant(&mut gpu, *v, &cases);
    }
}

#[test]
fn every_variant_folds_its_grid_into_two_dimensions() {
    let Some(mut gpu) = open(BuildOptions::default()) else {
        return;
    };
    gpu.set_max_dispatch_dim(3);
    let cases = references();
    let limits = gpu.limits().clone();
    for v in Variant::all().into_iter().filter(|v| v.fits(&limits)) {
        check_variant(&mut gpu, v, &cases);
    }
}

#[test]
fn the_variants_agree_with_runtime_bounds_checks_kept() {
    let Some(mut gpu) = open(BuildOptions {
        bounds_checks: true,
        skip_workgroup_zeroing: false,
    }) else {
        return;
    };
    let cases = references();
    let tiled = Variant::all()[1..]
        .iter()
        .copied()
        .find(|v| v.fits(gpu.limits()))
        .expect("a tile configuration fits");
    for v in [Variant::Register, tiled] {
        check_variant(&mut gpu, v, &cases);
    }
}
