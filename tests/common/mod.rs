//! Helpers shared by the integration tests: seeded random data and tolerant comparison.
#![allow(dead_code)]

use fergpu::rng::Rng;

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
