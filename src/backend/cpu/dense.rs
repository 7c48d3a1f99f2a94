//! Fully connected layers (`shaders/dense.wgsl`) as three matrix products on the whole batch.

use super::gemm::{matmul, MatRef};
use super::simd::multiversion_fn;
use crate::shape::DenseShape;
use ::gemm::Parallelism;
use rayon::prelude::*;

/// Lanes of [`dot`]'s partial sums: four 16-float vectors, so that four independent adds
/// are in flight.
const DOT_LANES: usize = 64;

/// `out (batch, out_f) = input (batch, in_f) · weightᵀ (in_f, out_f) + bias (out_f)`.
pub fn dense_forward(
    out: &mut [f32],
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    s: &DenseShape,
    par: Parallelism,
) {
    let out = &mut out[..s.output_len()];
    if s.out_f == 1 && s.in_f > 0 {
        // One dot product per image, images split over the workers (the matrix product
        // would run a one-column kernel; this reads the input at memory speed).
        let input = &input[..s.input_len()];
        let each = |(o, x): (&mut f32, &[f32])| *o = bias[0] + dot(x, &weight[..s.in_f]);
        match par {
            Parallelism::None => out
                .iter_mut()
                .zip(input.chunks_exact(s.in_f))
                .for_each(each),
            _ => out
                .par_iter_mut()
                .zip(input.par_chunks_exact(s.in_f))
                .for_each(each),
        }
        return;
    }
    for row in out.chunks_exact_mut(s.out_f) {
        row.copy_from_slice(bias);
    }
    let input = MatRef::row_major(input, s.batch, s.in_f);
    let weight_t = MatRef::row_major(weight, s.out_f, s.in_f).t(); // (in_f, out_f)
    matmul(out, input, weight_t, true, par);
}

multiversion_fn! {
    /// `Σ_i x[i]·w[i]` over equal-length `x` and `w`, in [`DOT_LANES`] partial sums added
    /// at the end (a value that is not finite in `x` makes the sum NaN or infinite, whatever
    /// `w` holds, as in the matrix product).
    fn dot(x: &[f32], w: &[f32]) -> f32 {
        let mut acc = [0.0f32; DOT_LANES];
        let (xs, ws) = (x.chunks_exact(DOT_LANES), w.chunks_exact(DOT_LANES));
        let tail: f32 = xs.remainder().iter().zip(ws.remainder()).map(|(a, b)| a * b).sum();
        for (xc, wc) in xs.zip(ws) {
            for l in 0..DOT_LANES {
                acc[l] += xc[l] * wc[l];
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

/// `d_input (batch, in_f) = d_out (batch, out_f) · weight (out_f, in_f)`.
pub fn dense_backward_input(
    d_input: &mut [f32],
    d_out: &[f32],
    weight: &[f32],
    s: &DenseShape,
    par: Parallelism,
) {
    let d_out = MatRef::row_major(d_out, s.batch, s.out_f);
    let weight = MatRef::row_major(weight, s.out_f, s.in_f);
    matmul(&mut d_input[..s.input_len()], d_out, weight, false, par);
}

/// `d_weight (out_f, in_f) = d_outᵀ (out_f, batch) · input (batch, in_f)` and
/// `d_bias (out_f) = Σ_b d_out[b]`, overwritten.
pub fn dense_backward_weight(
    d_weight: &mut [f32],
    d_bias: &mut [f32],
    d_out: &[f32],
    input: &[f32],
    s: &DenseShape,
    par: Parallelism,
) {
    let d_out = &d_out[..s.output_len()];
    let d_out_t = MatRef::row_major(d_out, s.batch, s.out_f).t(); // (out_f, batch)
    let input = MatRef::row_major(input, s.batch, s.in_f);
    matmul(d_weight, d_out_t, input, false, par);
    d_bias.fill(0.0);
    for row in d_out.chunks_exact(s.out_f) {
        for (db, &g) in d_bias.iter_mut().zip(row) {
            *db += g;
        }
    }
}
