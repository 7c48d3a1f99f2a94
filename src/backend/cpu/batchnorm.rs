//! Batch normalisation (`shaders/batchnorm.wgsl`): statistics per channel over the batch,
//! normalisation, and the backward pass through the batch statistics.
//!
//! The buffers are `(batch, c, hw)`: one contiguous plane of `hw` values per image and
//! channel (`hw = 1` after a dense layer). Each pass sums every plane on its own (planes in
//! parallel, each plane's sum in a fixed order, so the result does not depend on the thread
//! count), then adds the planes of a channel in image order, in `f64`. The element-wise
//! passes use per-channel constants, so both backends evaluate the same expressions:
//! `out = (x − μ)·(γ·r) + β`, `d_input = γ·r·(dy − dβ/n − (x − μ)·r·dγ/n)`.

use super::activation::backward_chunk as activation_backward_plane;
use super::planes_per_task;
use super::simd::multiversion_fn;
use crate::backend::Activation;
use crate::shape::BatchNormShape;
use rayon::prelude::*;

multiversion_fn! {
    /// Sum of `v` in `f64`, through 8 or 32 `f64` lanes ([`sum2`]). Exact for the sums of
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

/// Planes at least this long are summed through four 8-lane `f64` vectors, so that four
/// adds are in flight (one accumulator waits on its own previous add for every 8 values);
/// shorter ones through one, whose single reduction costs less.
const LONG_PLANE: usize = 256;

/// `Σ f(a_i, b_i)` over two equally long slices, as [`sum`]: 32 partial sums for a slice of
/// at least [`LONG_PLANE`] values, else 8 (the order depends on the length only).
#[inline(always)]
fn sum2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    if a.len() >= LONG_PLANE {
        sum2_lanes::<32>(a, b, f)
    } else {
        sum2_lanes::<8>(a, b, f)
    }
}

/// [`sum2`] through `N` partial sums, added in lane order, then the tail in order.
#[inline(always)]
fn sum2_lanes<const N: usize>(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) -> f64 {
    let mut lanes = [0f64; N];
    let (mut ca, mut cb) = (a.chunks_exact(N), b.chunks_exact(N));
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

multiversion_fn! {
    /// [`backward_elem`] with `g` read from `d` and overwritten.
    fn backward_elem_in_place(d: &mut [f32], x: &[f32], k: [f32; 4]) {
        let [a, db, dg, mu] = k;
        for (d, &x) in d.iter_mut().zip(x) {
            *d = a * (*d - db - (x - mu) * dg);
        }
    }
}

/// `g·[z > 0]` with `z = (x − μ)·a + b`: the gradient `g` of a relu's output taken back
/// through it, the mask found from the batch norm's input `x` as the forward computed its
/// output (`normalize`, same expression): `y = max(z, 0) > 0` exactly when `z > 0`, NaN
/// included. The same product as [`backward_chunk`](super::activation::backward_chunk).
#[inline(always)]
fn through_relu(g: f32, x: f32, (mu, a, b): (f32, f32, f32)) -> f32 {
    g * if (x - mu) * a + b > 0.0 { 1.0 } else { 0.0 }
}

multiversion_fn! {
    /// `(Σ g, Σ g·(x − μ))` over a plane, `g` = `d_out` through the relu ([`through_relu`],
    /// `z = (x − μ)·a + b`): [`sum`] and [`sum_prod_dev`] of the masked gradient, without
    /// writing it.
    fn relu_sums(d_out: &[f32], x: &[f32], z: (f32, f32, f32)) -> (f64, f64) {
        let mu = z.0;
        (
            sum2(d_out, x, |g, x| through_relu(g, x, z) as f64),
            sum2(d_out, x, |g, x| (through_relu(g, x, z) * (x - mu)) as f64),
        )
    }
}

multiversion_fn! {
    /// [`backward_elem`] of `g` = `d_out` through the relu ([`through_relu`]).
    fn backward_elem_relu(d: &mut [f32], d_out: &[f32], x: &[f32], k: [f32; 4], z: (f32, f32, f32)) {
        let [a, db, dg, mu] = k;
        for ((d, &g), &x) in d.iter_mut().zip(d_out).zip(x) {
            *d = a * (through_relu(g, x, z) - db - (x - mu) * dg);
        }
    }
}

/// The shortest planes whose relu mask the backward finds again from the input
/// ([`After::Relu`]); on shorter ones (dense layers: one value per plane) the per-plane work
/// costs more than the tensor it saves reading (measured: 0.43 → 0.77 ms on 256 × 64).
pub const RELU_FROM_INPUT: usize = 64;

/// What the gradient given to [`batchnorm_backward`] is the gradient of.
#[derive(Clone, Copy)]
pub enum After<'a> {
    /// The batch norm's output.
    Nothing,
    /// Its output through this activation, which gave `y (batch, c, hw)`.
    Activation(Activation, &'a [f32]),
    /// Its output through a relu, whose mask is found again from the input and β `(c)`
    /// instead of read from the relu's output: one tensor less to read, and the masked
    /// gradient is never written.
    Relu(&'a [f32]),
}

/// Adds per-plane values `(batch·c)` into per-channel totals `(c)` in image order.
fn add_planes(planes: impl Iterator<Item = f64>, c: usize) -> Vec<f64> {
    let mut sums = vec![0f64; c];
    for (p, v) in planes.enumerate() {
        sums[p % c] += v;
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
        .with_min_len(planes_per_task(s.hw))
        .enumerate()
        .for_each(|(p, o)| f(p, p % s.c, o));
}

/// Per-plane statistics: the plane's sum `Σx` (f64), the plane's own mean `c` rounded to
/// f32, and `Σ (x − c)²`, from one read of the plane (the second loop finds it in cache).
fn plane_moments(v: &[f32]) -> (f64, f32, f64) {
    let total = sum(v);
    let centre = (total / v.len() as f64) as f32;
    (total, centre, sum_sq_dev(v, centre))
}

/// Mean and (biased) variance `(c)` of every channel, the batch read once: each plane's
/// squared deviations are taken from its own mean (`c_p`, in cache), then moved to the
/// channel's mean `μ` exactly, in f64:
/// `Σ (x − μ)² = Σ_p [Σ (x − c_p)² + 2·(c_p − μ)·(Σx − hw·c_p) + hw·(c_p − μ)²]`.
/// Deviations, never `E[x²] − μ²` (which cancels); a constant channel has exactly its
/// value as mean and exactly zero variance.
fn statistics<'a>(
    s: &BatchNormShape,
    plane: impl Fn(usize) -> &'a [f32] + Sync,
) -> (Vec<f32>, Vec<f32>) {
    let (n, hw) = (s.count() as f64, s.hw as f64);
    let planes: Vec<(f64, f32, f64)> = (0..s.batch * s.c)
        .into_par_iter()
        .with_min_len(planes_per_task(s.hw))
        .map(|p| plane_moments(plane(p)))
        .collect();
    let mean: Vec<f64> = add_planes(planes.iter().map(|m| m.0), s.c)
        .iter()
        .map(|&t| ((t / n) as f32) as f64)
        .collect();
    let m2 = add_planes(
        planes.iter().enumerate().map(|(p, &(total, centre, sq))| {
            let (c, mu) = (centre as f64, mean[p % s.c]);
            sq + 2.0 * (c - mu) * (total - hw * c) + hw * (c - mu) * (c - mu)
        }),
        s.c,
    );
    let var = m2.iter().map(|&t| (t.max(0.0) / n) as f32).collect();
    (mean.iter().map(|&m| m as f32).collect(), var)
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
    let (mean, var) = statistics(s, plane);
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
/// overwritten, from `d_out`, `input (batch, c, hw)`, `saved (2, c)` and γ `(c)`. When the
/// batch norm's output went through an activation ([`After`]), `d_out` is the gradient of
/// the activation's output (`Backend::batchnorm_act_backward`): each plane's gradient
/// through the activation is taken first, with the same expressions as the activation's
/// own backward, so the results are those of the two ops.
///
/// Two passes over the batch: one for the per-channel sums `Σ dy` and `Σ dy·(x − μ)` (both
/// from one read of each plane; the second loop finds it in cache), one for `d_input`.
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
    after: After<'_>,
) {
    let (n, hw) = (s.count(), s.hw);
    let (mean, r) = saved[..2 * s.c].split_at(s.c);
    fn plane(v: &[f32], p: usize, hw: usize) -> &[f32] {
        &v[p * hw..(p + 1) * hw]
    }
    // The forward's (μ, γ·r, β) of channel c, for a relu's mask.
    let z = |c: usize, beta: &[f32]| (mean[c], gamma[c] * r[c], beta[c]);
    // Per plane: (Σ dy, Σ dy·(x − μ)), dy being d_out or its gradient through the activation
    // (left in d_input when read from the activation's output).
    let sums: Vec<(f64, f64)> = d_input[..s.len()]
        .par_chunks_mut(hw)
        .with_min_len(planes_per_task(s.hw))
        .enumerate()
        .map(|(p, d)| {
            let (x, c, g) = (plane(input, p, hw), p % s.c, plane(d_out, p, hw));
            let dy = match after {
                After::Relu(beta) => return relu_sums(g, x, z(c, beta)),
                After::Activation(act, y) => {
                    activation_backward_plane(d, g, plane(y, p, hw), act);
                    &*d
                }
                After::Nothing => g,
            };
            (sum(dy), sum_prod_dev(dy, x, mean[c]))
        })
        .collect();
    let sum_dy = add_planes(sums.iter().map(|v| v.0), s.c);
    let sum_dy_xc = add_planes(sums.iter().map(|v| v.1), s.c);
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
        let (x, g) = (plane(input, p, hw), plane(d_out, p, hw));
        match after {
            After::Relu(beta) => backward_elem_relu(d, g, x, k[c], z(c, beta)),
            After::Activation(..) => backward_elem_in_place(d, x, k[c]),
            After::Nothing => backward_elem(d, g, x, k[c]),
        }
    });
}
