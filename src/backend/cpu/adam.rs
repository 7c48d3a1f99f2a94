//! One Adam step over the whole flat parameter buffer (`shaders/adam.wgsl`).

use super::CHUNK;
use crate::backend::AdamStep;
use rayon::prelude::*;

/// One Adam step (see [`AdamStep`]) over `params, grads, m, v`, all the same length.
pub fn adam_step(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamStep) {
    let n = params.len();
    assert!(
        grads.len() == n && m.len() == n && v.len() == n,
        "Adam buffers differ in length"
    );
    params
        .par_chunks_mut(CHUNK)
        .zip(grads.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                *m = s.beta1 * *m + (1.0 - s.beta1) * g;
                *v = s.beta2 * *v + (1.0 - s.beta2) * g * g;
                *p -= s.lr_t * *m / (v.sqrt() + s.eps);
            }
        });
}
