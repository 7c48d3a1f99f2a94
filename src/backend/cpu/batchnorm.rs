//! Batch normalisation (`shaders/batchnorm.wgsl`): statistics per channel over the batch,
//! normalisation, and the backward pass through the batch statistics.
//!
//! The buffers are `(batch, c, hw)`: one contiguous plane of `hw` values per image and
//! channel (`hw = 1` after a dense layer). Each pass sums every plane on its own (planes in
//! parallel, each plane's sum in a fixed order, so the result does not depend on the thread
//! count), then adds the planes of a channel in image order, in `f64`. The element-wise
//! passes use per-channel constants, so both backends evaluate the same expressions:
//! `out = (x − μ)·(γ·r) + β`, `d_input = γ·r·(dy − dβ/n − (x − μ)·r·dγ/n)`.

use super::simd::multiversion_fn;
use super::CHUNK;
use crate::backend::Activation;
use crate::shape::BatchNormShape;
use rayon::prelude::*;

multiversion_fn! {
    /// Sum of `v` in `f64`, through eight `f64` lanes (vectorisable). Exact for the sums of
    /// up to 2²⁹ equal `f32` values, so a constant channel has exactly its value as mean and
    /// exactly zero deviations.
    pub(super) fn sum(v: &[f32]) -> f64 {
        sum2(v, v, |x, _| x as f64)
    }
}

multiversion_fn! {
    /// `Σ (x − μ)²` over `v`, each square in `f32`, summed as [`sum`] does.
    fn sum_sq_dev(v: &[f32], mu: f32) -> f64 {
        sum2(v, v, |x, _| ((x - mu) * (x - mu)) as f64)
    }
}

multiversion_fn! {
    /// `Σ g·(x − μ)` over `(g, x)`, each product in `f32`, summed as [`sum`] does.
    fn sum_prod_dev(g: &[f32], x: &[f32], mu: f32) -> f64 {
        sum2(g, x, |g, x| (g * (x - mu)) as f64)
    }
}

/// `Σ f(a_i, b_i)` over two equally long slices, as [`sum`].
#[inline(always)]
fn sum2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((l, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *l += f(x, y);
        }
    }
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| f(x, y))
        .sum();
    lanes.iter().sum::<f64>() + tail
}

multiversion_fn! {
    /// `o = act((x − μ)·a + b)` element by element, `k = (μ, a, b)` (no activation: `None`):
    /// the same expressions as the batch norm then the activation on their own, relu
    /// written out so that it vectorises.
    fn normalize(o: &mut [f32], x: &[f32], k: (f32, f32, f32), act: Option<Activation>) {
        let (mu, a, b) = k;
        let each = o.iter_mut().zip(x);
        match act {
            None => each.for_each(|(o, &x)| *o = (x - mu) * a + b),
            Some(Activation::Relu) => each.for_each(|(o, &x)| *o = ((x - mu) * a + b).max(0.0)),
            Some(act) => each.for_each(|(o, &x)| *o = act.apply((x - mu) * a + b)),
        }
    }
}

multiversion_fn! {
    /// `d = a·(g − dβ/n − (x − μ)·dγ/n)` element by element, `k = [a, dβ/n, dγ/n, μ]`
    /// (`dγ/n` already times `r`).
    fn backward_elem(d: &mut [f32], g: &[f32], x: &[f32], k: [f32; 4]) {
        let [a, db, dg, mu] = k;
        for ((d, &g), &x) in d.iter_mut().zip(g).zip(x) {
            *d = a * (g - db - (x - mu) * dg);
        }
    }
}

/// Planes per parallel task: about [`CHUNK`] elements.
fn planes_per_task(s: &BatchNormShape) -> usize {
    (CHUNK / s.hw.max(1)).max(1)
}

/// Per-channel sums `(c)` of `f(plane, channel)` over every plane of the batch.
fn channel_sums(s: &BatchNormShape, f: impl Fn(usize, usize) -> f64 + Sync) -> Vec<f64> {
    let planes: Vec<f64> = (0..s.batch * s.c)
        .into_par_iter()
        .with_min_len(planes_per_task(s))
        .map(|p| f(p, p % s.c))
        .collect();
    let mut sums = vec![0f64; s.c];
    for per_image in planes.chunks_exact(s.c) {
        for (t, &v) in sums.iter_mut().zip(per_image) {
            *t += v;
        }
    }
    sums
}

/// Writes `out[b, c, ·] = f(plane, c, input[b, c, ·])` plane by plane, in parallel.
fn per_plane(
    out: &mut [f32],
    s: &BatchNormShape,
    f: impl Fn(usize, usize, &mut [f32]) + Sync + Send,
) {
    out[..s.len()]
        .par_chunks_mut(s.hw)
        .with_min_len(planes_per_task(s))
        .enumerate()
        .for_each(|(p, o)| f(p, p % s.c, o));
}

/// Training forward (see `Backend::batchnorm_forward_train`): `out (batch, c, hw)`,
/// `saved (2, c)` = mean and 1/√(var + eps), running mean and variance `(c)` updated;
/// γ, β `(c)`; with `act`, `out` is the activation of the batch norm's output
/// (`Backend::batchnorm_act_forward_train`).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train(
    out: &mut [f32],
    saved: &mut [f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    input: &[f32],
    gamma: &[f32],
    beta: &[f32],
    momentum: f32,
    eps: f32,
    s: &BatchNormShape,
    act: Option<Activation>,
) {
    let (n, hw) = (s.count(), s.hw);
    assert!(
        n >= 2,
        "batch norm needs at least 2 values per channel, got {n}"
    );
    let plane = |p: usize| &input[p * hw..(p + 1) * hw];
    let mean: Vec<f32> = channel_sums(s, |p, _| sum(plane(p)))
        .iter()
        .map(|&t| (t / n as f64) as f32)
        .collect();
    // Two passes: the squared deviations from the mean, not E[x²] − μ², which cancels.
    let var: Vec<f32> = channel_sums(s, |p, c| sum_sq_dev(plane(p), mean[c]))
        .iter()
        .map(|&t| (t / n as f64) as f32)
        .collect();
    let (saved_mean, saved_r) = saved[..2 * s.c].split_at_mut(s.c);
    for c in 0..s.c {
        let r = 1.0 / (var[c] + eps).sqrt();
        saved_mean[c] = mean[c];
        saved_r[c] = r;
        let unbiased = var[c] * n as f32 / (n - 1) as f32;
        running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean[c];
        running_var[c] = (1.0 - momentum) * running_var[c] + momentum * unbiased;
    }
    let scale: Vec<f32> = (0..s.c).map(|c| gamma[c] * saved_r[c]).collect();
    per_plane(out, s, |p, c, o| {
        normalize(o, plane(p), (mean[c], scale[c], beta[c]), act)
    });
}

/// Evaluation forward: `out = (x − mean)·(γ/√(var + eps)) + β` with the running statistics.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_eval(
    out: &mut [f32],
    input: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    eps: f32,
    s: &BatchNormShape,
) {
    let hw = s.hw;
    let scale: Vec<f32> = (0..s.c)
        .map(|c| gamma[c] * (1.0 / (running_var[c] + eps).sqrt()))
        .collect();
    per_plane(out, s, |p, c, o| {
        let k = (running_mean[c], scale[c], beta[c]);
        normalize(o, &input[p * hw..(p + 1) * hw], k, None)
    });
}

/// Backward of the training forward: `d_input (batch, c, hw)`, `d_gamma`, `d_beta (c)`
/// overwritten, from `d_out`, `input (batch, c, hw)`, `saved (2, c)` and γ `(c)`.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    d_input: &mut [f32],
    d_gamma: &mut [f32],
    d_beta: &mut [f32],
    d_out: &[f32],
    input: &[f32],
    saved: &[f32],
    gamma: &[f32],
    s: &BatchNormShape,
) {
    let (n, hw) = (s.count(), s.hw);
    let (mean, r) = saved[..2 * s.c].split_at(s.c);
    fn plane(v: &[f32], p: usize, hw: usize) -> &[f32] {
        &v[p * hw..(p + 1) * hw]
    }
    let sum_dy = channel_sums(s, |p, _| sum(plane(d_out, p, hw)));
    let sum_dy_xc = channel_sums(s, |p, c| {
        sum_prod_dev(plane(d_out, p, hw), plane(input, p, hw), mean[c])
    });
    for c in 0..s.c {
        d_beta[c] = sum_dy[c] as f32;
        d_gamma[c] = (sum_dy_xc[c] * r[c] as f64) as f32;
    }
    // dx = γ·r·(dy − dβ/n − (x − μ)·r·dγ/n), with per-channel constants.
    let k: Vec<[f32; 4]> = (0..s.c)
        .map(|c| {
            [
                gamma[c] * r[c],
                d_beta[c] / n as f32,
                r[c] * d_gamma[c] / n as f32,
                mean[c],
            ]
        })
        .collect();
    per_plane(d_input, s, |p, c, d| {
        backward_elem(d, plane(d_out, p, hw), plane(input, p, hw), k[c])
    });
}
