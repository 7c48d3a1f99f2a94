//! One optimizer step over the whole flat parameter buffer (`shaders/optimizer.wgsl`).

use super::CHUNK;
use crate::backend::{OptimizerKind, OptimizerStep};
use rayon::prelude::*;

/// One step of adam, adamw or sgd (see [`OptimizerStep`] for the formulas) over
/// `params, grads, m, v, decay`, all `(P)`.
pub fn optimizer_step(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    decay: &[f32],
    s: &OptimizerStep,
) {
    let n = params.len();
    assert!(
        grads.len() == n && m.len() == n && v.len() == n && decay.len() == n,
        "optimizer buffers differ in length"
    );
    params
        .par_chunks_mut(CHUNK)
        .zip(grads.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(decay.par_chunks(CHUNK))
        .for_each(|((((p, g), m), v), d)| {
            for ((((p, &g), m), v), &d) in p.iter_mut().zip(g).zip(m).zip(v).zip(d) {
                update(p, g, m, v, d, s);
            }
        });
}

/// One parameter's update, written in the shader's order of operations.
fn update(p: &mut f32, mut g: f32, m: &mut f32, v: &mut f32, decay: f32, s: &OptimizerStep) {
    if s.kind == OptimizerKind::Adamw {
        *p *= 1.0 - s.lr_decay * decay;
    } else {
        g += s.weight_decay * decay * *p;
    }
    if s.kind == OptimizerKind::Sgd {
        // PyTorch keeps no momentum buffer when μ = 0.
        if s.momentum != 0.0 {
            let b = s.momentum * *m + g;
            *m = b;
            g = if s.nesterov { g + s.momentum * b } else { b };
        }
        *p -= s.lr * g;
    } else {
        *m = s.beta1 * *m + s.one_minus_beta1 * g;
        *v = s.beta2 * *v + s.one_minus_beta2 * g * g;
        *p -= s.step_size * *m / (v.sqrt() / s.bias2_sqrt + s.eps);
    }
}
