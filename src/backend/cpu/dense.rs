//! Fully connected layers (`shaders/dense.wgsl`) as three matrix products on the whole batch.

use super::gemm::{matmul, MatRef};
use crate::shape::DenseShape;
use ::gemm::Parallelism;

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
