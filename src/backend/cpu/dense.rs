//! Fully connected layers (`shaders/dense.wgsl`) as three matrix products on the whole batch;
//! a layer of one output as one dot product per image.

use super::gemm::{matmul, MatRef};
use super::simd::multiversion_fn;
use crate::shape::DenseShape;
use ::gemm::Parallelism;
use rayon::prelude::*;

/// Lanes of [`dot`]'s running sums.
const DOT_LANES: usize = 32;

multiversion_fn! {
    /// `Σ_i x[i]·w[i]`: lane `l` of [`DOT_LANES`] running sums adds the products `l`,
    /// `l + 32`, …; then the lanes in order and the tail. Every instruction set adds in this
    /// order. A NaN or an infinity in `x` gives NaN even where `w` is zero (0·∞ is NaN).
    fn dot(x: &[f32], w: &[f32]) -> f32 {
        assert_eq!(x.len(), w.len());
        let mut acc = [0f32; DOT_LANES];
        let (xs, ws) = (x.chunks_exact(DOT_LANES), w.chunks_exact(DOT_LANES));
        let (x_tail, w_tail) = (xs.remainder(), ws.remainder());
        for (xc, wc) in xs.zip(ws) {
            for l in 0..DOT_LANES {
                acc[l] += xc[l] * wc[l];
            }
        }
        let mut sum = acc.iter().sum::<f32>();
        for (a, b) in x_tail.iter().zip(w_tail) {
            sum += a * b;
        }
        sum
    }
}

/// `out (batch, out_f) = input (batch, in_f) · weightᵀ (in_f, out_f) + bias (out_f)`. With
/// one output (the evaluator's watch for values that are not numbers reads every op's output
/// that way) each image is one [`dot`], images spread over the pool it runs in: a matrix
/// product of one column would run a narrow kernel over the widest activations.
pub fn dense_forward(
    out: &mut [f32],
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    s: &DenseShape,
    par: Parallelism,
) {
    let out = &mut out[..s.output_len()];
    if s.out_f == 1 {
        let (weight, bias) = (&weight[..s.in_f], bias[0]);
        let rows = input[..s.input_len()].par_chunks_exact(s.in_f);
        out.par_iter_mut()
            .zip(rows)
            .for_each(|(o, row)| *o = bias + dot(row, weight));
        return;
    }
    for row in out.chunks_exact_mut(s.out_f) {
        row.copy_from_slice(bias);
    }
    let input = MatRef::row_major(input, s.batch, s.in_f);
    let weight_t = MatRef::row_major(weight, s.out_f, s.in_f).t(); // (in_f, out_f)
    matmul(out, input, weight_t, true, par);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One output: each image's dot product with the weights plus the bias, to the rounding
    /// of a sum in another order, and NaN for an image holding a NaN or an infinity even
    /// with zero weights (how the evaluator's watch uses it).
    #[test]
    fn one_output_is_each_images_dot_product_and_keeps_what_is_not_finite() {
        let s = DenseShape {
            batch: 5,
            in_f: 1000,
            out_f: 1,
        };
        let input: Vec<f32> = (0..s.input_len())
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let weight: Vec<f32> = (0..s.in_f).map(|i| ((i % 13) as f32 - 6.0) / 5.0).collect();
        let mut out = vec![0.0; s.batch];
        dense_forward(&mut out, &input, &weight, &[0.25], &s, Parallelism::None);
        for (b, &o) in out.iter().enumerate() {
            let row = &input[b * s.in_f..(b + 1) * s.in_f];
            let want: f64 = 0.25
                + row
                    .iter()
                    .zip(&weight)
                    .map(|(&x, &w)| x as f64 * w as f64)
                    .sum::<f64>();
            assert!(
                (o as f64 - want).abs() < 1e-3,
                "image {b}: {o} against {want}"
            );
        }

        let mut input = input;
        input[s.in_f + 999] = f32::INFINITY; // image 1, in the tail past the lanes
        input[3 * s.in_f + 5] = f32::NAN; // image 3
        input[4 * s.in_f] = f32::NEG_INFINITY; // image 4
        let zeros = vec![0.0; s.in_f];
        dense_forward(&mut out, &input, &zeros, &[0.0], &s, Parallelism::None);
        let finite: Vec<bool> = out.iter().map(|o| o.is_finite()).collect();
        assert_eq!(finite, [true, false, true, false, false]);
        assert_eq!(out[0], 0.0);
    }
}
