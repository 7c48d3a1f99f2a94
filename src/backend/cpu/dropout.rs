//! Dropout (`shaders/dropout.wgsl`): each element's mask bit is a hash of its key
//! ([`crate::backend::Dropout`]), computed where it is needed, in chunks of [`CHUNK`]
//! elements per parallel task.

use super::CHUNK;
use crate::backend::{dropout_hash, Dropout};
use rayon::prelude::*;

/// `dst[i] = src[i]·scale` where `d` keeps element `i`, else 0, for `i < len`.
fn masked(dst: &mut [f32], src: &[f32], d: &Dropout, len: usize) {
    let (threshold, scale) = (d.threshold(), d.scale());
    dst[..len]
        .par_chunks_mut(CHUNK)
        .zip(src[..len].par_chunks(CHUNK))
        .enumerate()
        .for_each(|(t, (o, x))| {
            for (k, (o, &x)) in o.iter_mut().zip(x).enumerate() {
                let i = (t * CHUNK + k) as u32;
                let kept = dropout_hash(d.seed, d.step, d.layer, i) < threshold;
                *o = if kept { x * scale } else { 0.0 };
            }
        });
}

/// `out[i] = input[i]·scale` where `d` keeps element `i`, else 0, for `i < len`.
pub fn dropout_forward(out: &mut [f32], input: &[f32], d: &Dropout, len: usize) {
    masked(out, input, d, len);
}

/// `d_input[i] = d_out[i]·scale` where `d` keeps element `i`, else 0: the same mask.
pub fn dropout_backward(d_input: &mut [f32], d_out: &[f32], d: &Dropout, len: usize) {
    masked(d_input, d_out, d, len);
}
