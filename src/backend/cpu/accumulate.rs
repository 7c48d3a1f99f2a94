//! A scaled add into an accumulator (`shaders/accumulate.wgsl`), in chunks of [`CHUNK`]
//! elements per parallel task.

use super::CHUNK;
use rayon::prelude::*;

/// `acc[i] = alpha·acc[i] + beta·x[i]` for `i < len`; when `alpha` is 0 the old `acc` is not
/// read (`acc[i] = beta·x[i]`), so a NaN left in it does not leak.
pub fn scale_add(acc: &mut [f32], x: &[f32], alpha: f32, beta: f32, len: usize) {
    acc[..len]
        .par_chunks_mut(CHUNK)
        .zip(x[..len].par_chunks(CHUNK))
        .for_each(|(a, x)| {
            for (a, &x) in a.iter_mut().zip(x) {
                let kept = if alpha != 0.0 { alpha * *a } else { 0.0 };
                *a = kept + beta * x;
            }
        });
}
