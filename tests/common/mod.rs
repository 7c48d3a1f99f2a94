//! Helpers shared by the integration tests: seeded random data and tolerant comparison.
#![allow(dead_code)]

use fergpu::rng::Rng;
use fergpu::shape::Conv2dShape;

/// `len` values uniform in `[lo, hi)` from `seed`.
pub fn random_vec(len: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.range(lo, hi)).collect()
}

/// Asserts `|got − want| ≤ atol + rtol·|want|` element-wise. On failure, reports how many
/// elements differ, the worst index and the first few mismatching pairs, then panics.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut bad = Vec::new();
    let mut worst = (0usize, 0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let tol = atol + rtol * w.abs();
        let excess = if err.is_nan() {
            f32::INFINITY
        } else {
            err - tol
        };
        if excess > 0.0 || g.is_nan() != w.is_nan() {
            if bad.is_empty() || excess > worst.1 {
                worst = (i, excess);
            }
            bad.push(i);
        }
    }
    if !bad.is_empty() {
        let first: Vec<String> = bad
            .iter()
            .take(5)
            .map(|&i| format!("[{i}] got {} want {}", got[i], want[i]))
            .collect();
        panic!(
            "{what}: {} of {} elements differ (atol {atol}, rtol {rtol}); worst at [{}] got {} want {}; first: {}",
            bad.len(),
            got.len(),
            worst.0,
            got[worst.0],
            want[worst.0],
            first.join(", ")
        );
    }
}

/// Inputs of the three convolution ops. Buffers: x `(batch, in_c, in_h, in_w)` + slack,
/// dy `(batch, out_c, out_h, out_w)` + slack, params/grads `(w_off + weight + bias + slack)`
/// with the weight at 7 and the bias after a gap of 3, and junk to prefill the outputs.
pub struct ConvCase {
    pub s: Conv2dShape,
    pub w_off: usize,
    pub b_off: usize,
    pub params: Vec<f32>,
    pub x: Vec<f32>,
    pub dy: Vec<f32>,
    pub junk: Vec<f32>,
}

/// A [`ConvCase`] of shape `s`, its values seeded from `seed`.
pub fn conv_case(s: Conv2dShape, seed: u64) -> ConvCase {
    let w_off = 7;
    let b_off = w_off + s.weight_len() + 3;
    let n = b_off + s.out_c + 4;
    ConvCase {
        s,
        w_off,
        b_off,
        params: random_vec(n, -0.5, 0.5, seed),
        x: random_vec(s.input_len() + 11, -1.0, 1.0, seed + 1),
        dy: random_vec(s.output_len() + 11, -1.0, 1.0, seed + 2),
        junk: random_vec(
            n.max(s.input_len()).max(s.output_len()) + 16,
            5.0,
            6.0,
            seed + 3,
        ),
    }
}

/// Whether a missing adapter must fail the test (under CI or `FERGPU_REQUIRE_GPU=1`).
pub fn gpu_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var("FERGPU_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// Whether a software adapter exists; panics without one when one is required, else notes
/// that the `what` tests are skipped.
pub fn have_software_adapter(what: &str) -> bool {
    let found = fergpu::backend::gpu::adapter::list_adapters(None);
    if found.iter().any(|a| a.device_type == wgpu::DeviceType::Cpu) {
        return true;
    }
    assert!(
        !gpu_required(),
        "a software adapter is required; found {found:?}"
    );
    eprintln!("note: skipping {what} tests, no software adapter ({found:?})");
    false
}

/// An empty folder `name` under Cargo's scratch folder for integration tests.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}
