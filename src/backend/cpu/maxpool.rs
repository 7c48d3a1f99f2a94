//! Max pooling (`shaders/maxpool.wgsl`), one image plane per task.
//!
//! argmax stores the flat index `row·in_w + col` inside the input plane; the first maximum
//! in row-major window order wins ties (a later element must be strictly greater).

use crate::shape::PoolShape;
use rayon::prelude::*;

/// `out, argmax (batch, c, out_h, out_w)` from `input (batch, c, in_h, in_w)`.
pub fn maxpool_forward(out: &mut [f32], argmax: &mut [u32], input: &[f32], s: &PoolShape) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let planes = s.batch * s.c;
    let in_plane = s.in_h * s.in_w;
    out[..planes * oh * ow]
        .par_chunks_mut(oh * ow)
        .zip(argmax[..planes * oh * ow].par_chunks_mut(oh * ow))
        .enumerate()
        .for_each(|(p, (out, arg))| {
            let plane = &input[p * in_plane..(p + 1) * in_plane]; // (in_h, in_w)
            for oy in 0..oh {
                for ox in 0..ow {
                    let (v, i) = if s.size == 2 {
                        window_max_2x2(plane, oy, ox, s.in_w)
                    } else {
                        window_max(plane, oy, ox, s)
                    };
                    out[oy * ow + ox] = v;
                    arg[oy * ow + ox] = i as u32;
                }
            }
        });
}

/// [`window_max`] for the 2×2 windows every preset uses, unrolled: the same comparisons in
/// the same order, so the same tie rule.
#[inline]
fn window_max_2x2(plane: &[f32], oy: usize, ox: usize, in_w: usize) -> (f32, usize) {
    let a = 2 * oy * in_w + 2 * ox;
    let mut best = (plane[a], a);
    for i in [a + 1, a + in_w, a + in_w + 1] {
        if plane[i] > best.0 {
            best = (plane[i], i);
        }
    }
    best
}

/// The maximum of window `(oy, ox)` of one plane `(in_h, in_w)` and its flat index.
fn window_max(plane: &[f32], oy: usize, ox: usize, s: &PoolShape) -> (f32, usize) {
    let first = oy * s.size * s.in_w + ox * s.size;
    let mut best = (plane[first], first);
    for y in oy * s.size..(oy + 1) * s.size {
        for x in ox * s.size..(ox + 1) * s.size {
            let i = y * s.in_w + x;
            if plane[i] > best.0 {
                best = (plane[i], i);
            }
        }
    }
    best
}

/// `d_input (batch, c, in_h, in_w)` from `d_out, argmax (batch, c, out_h, out_w)`: each
/// window's gradient goes to the element it chose, every other element gets zero (windows do
/// not overlap, so no element receives two gradients; elements of floor-dropped rows and
/// columns belong to no window). Scattering from the outputs costs one store per window,
/// where reading from the inputs would cost a division per element.
pub fn maxpool_backward(d_input: &mut [f32], d_out: &[f32], argmax: &[u32], s: &PoolShape) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let in_plane = s.in_h * s.in_w;
    d_input[..s.input_len()]
        .par_chunks_mut(in_plane)
        .enumerate()
        .for_each(|(p, d_in)| {
            let d_out = &d_out[p * oh * ow..(p + 1) * oh * ow]; // (out_h, out_w)
            let arg = &argmax[p * oh * ow..(p + 1) * oh * ow]; // (out_h, out_w)
            d_in.fill(0.0);
            for (&g, &i) in d_out.iter().zip(arg) {
                d_in[i as usize] = g;
            }
        });
}
