//! Element-wise activations and their derivatives (`shaders/activation.wgsl`), in chunks
//! of [`CHUNK`] elements per parallel task.

use super::CHUNK;
use crate::backend::Activation;
use rayon::prelude::*;

/// `out[i] = act(input[i])` for `i < len`.
pub fn activation_forward(out: &mut [f32], input: &[f32], act: Activation, len: usize) {
    out[..len]
        .par_chunks_mut(CHUNK)
        .zip(input[..len].par_chunks(CHUNK))
        .for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                *o = act.apply(x);
            }
        });
}

/// `d_input[i] = d_out[i]·act'(y[i])` for `i < len`, the derivative taken from the output.
pub fn activation_backward(
    d_input: &mut [f32],
    d_out: &[f32],
    y: &[f32],
    act: Activation,
    len: usize,
) {
    d_input[..len]
        .par_chunks_mut(CHUNK)
        .zip(d_out[..len].par_chunks(CHUNK))
        .zip(y[..len].par_chunks(CHUNK))
        .for_each(|((d, g), y)| {
            for ((d, &g), &y) in d.iter_mut().zip(g).zip(y) {
                *d = g * act.derivative_from_output(y);
            }
        });
}
