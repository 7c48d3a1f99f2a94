//! Element-wise ops: activations, Adam, and the batch gather.

use crate::augment;
use crate::backend::{Activation, AdamStep};
use crate::shape::IMAGE_PIXELS;
use rayon::prelude::*;

/// Elements per parallel task: large enough that task overhead is negligible.
const CHUNK: usize = 1 << 14;

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

/// The factor a pixel byte is multiplied by: the `f32` nearest 1/255. Both backends compute
/// `f32(byte) * PIXEL_SCALE` (a multiply, not a division), so gathered batches are
/// bit-identical.
pub const PIXEL_SCALE: f32 = 1.0 / 255.0;

/// `x (batch, 48·48)` and `labels (batch)` from images `order[offset..offset + batch]` of
/// `pixels (n, 48·48)` and `all_labels (n)`; each order entry is a row index packed with an
/// optional flip and shift (see [`crate::augment::pack`]).
pub fn gather_batch(
    x: &mut [f32],
    labels: &mut [u32],
    pixels: &[u8],
    all_labels: &[u8],
    order: &[u32],
    offset: usize,
    batch: usize,
) {
    let rows = &order[offset..offset + batch];
    x[..batch * IMAGE_PIXELS]
        .par_chunks_mut(IMAGE_PIXELS)
        .zip(rows.par_iter())
        .for_each(|(x, &entry)| {
            let (r, flip, dx, dy) = augment::unpack(entry);
            let src = &pixels[r as usize * IMAGE_PIXELS..(r as usize + 1) * IMAGE_PIXELS];
            if entry == r {
                for (x, &p) in x.iter_mut().zip(src) {
                    *x = f32::from(p) * PIXEL_SCALE;
                }
            } else {
                for (px, x) in x.iter_mut().enumerate() {
                    let p = src[augment::source_pixel(px, flip, dx, dy)];
                    *x = f32::from(p) * PIXEL_SCALE;
                }
            }
        });
    for (l, &entry) in labels[..batch].iter_mut().zip(rows) {
        *l = u32::from(all_labels[(entry & augment::ROW_MASK) as usize]);
    }
}
