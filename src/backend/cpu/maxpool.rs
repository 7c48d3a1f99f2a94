//! Max pooling (`shaders/maxpool.wgsl`), one image plane per task.
//!
//! argmax stores the flat index `row·in_w + col` inside the input plane; the first maximum
//! in row-major window order wins ties (a later element must be strictly greater).

use super::planes_per_task;
use super::simd::multiversion_fn;
use crate::shape::PoolShape;
use rayon::prelude::*;

/// `out, argmax (batch, c, out_h, out_w)` from `input (batch, c, in_h, in_w)`.
pub fn maxpool_forward(out: &mut [f32], argmax: &mut [u32], input: &[f32], s: &PoolShape) {
    let (oh, ow) = (s.out_h(), s.out_w());
    let planes = s.batch * s.c;
    let in_plane = s.in_h * s.in_w;
    let per_task = planes_per_task(in_plane);
    out[..planes * oh * ow]
        .par_chunks_mut(per_task * oh * ow)
        .zip(argmax[..planes * oh * ow].par_chunks_mut(per_task * oh * ow))
        .enumerate()
        .for_each(|(k, (out, arg))| {
            let input = &input[k * per_task * in_plane..]; // (planes, in_h, in_w)
            if s.size == 2 {
                pool_planes_2x2(out, arg, input, s);
                return;
            }
            for (p, (out, arg)) in out
                .chunks_mut(oh * ow)
                .zip(arg.chunks_mut(oh * ow))
                .enumerate()
            {
                let plane = &input[p * in_plane..(p + 1) * in_plane]; // (in_h, in_w)
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (v, i) = window_max(plane, oy, ox, s);
                        out[oy * ow + ox] = v;
                        arg[oy * ow + ox] = i as u32;
                    }
                }
            }
        });
}

multiversion_fn! {
    /// 2×2 pooling of consecutive planes: `out, arg (planes, out_h, out_w)` from `input
    /// (planes, in_h, in_w, …)`, a row of outputs at a time ([`pool_row_2x2`]).
    fn pool_planes_2x2(out: &mut [f32], arg: &mut [u32], input: &[f32], s: &PoolShape) {
        let (oh, ow, in_plane) = (s.out_h(), s.out_w(), s.in_h * s.in_w);
        let planes = out.chunks_mut(oh * ow).zip(arg.chunks_mut(oh * ow));
        for (p, (out, arg)) in planes.enumerate() {
            let plane = &input[p * in_plane..(p + 1) * in_plane]; // (in_h, in_w)
            for oy in 0..oh {
                let top = 2 * oy * s.in_w;
                let rows = (&plane[top..top + 2 * ow], &plane[top + s.in_w..][..2 * ow]);
                let cells = oy * ow..(oy + 1) * ow;
                pool_row_2x2(&mut out[cells.clone()], &mut arg[cells], rows, top, s.in_w);
            }
        }
    }
}

/// One output row of 2×2 windows, `out, arg (ow)`, from the two image rows under it,
/// `rows = (top, bottom)` (`2·ow` values each; `top` starts at flat index `first` of the
/// plane, `bottom` one row of `in_w` later). [`window_max`]'s comparisons in its order (a
/// later element must be strictly greater, so the first maximum wins ties and a NaN never
/// does), written without branches so that the loop vectorises (inlined into
/// [`pool_planes_2x2`]'s copy for each instruction set).
#[inline(always)]
fn pool_row_2x2(
    out: &mut [f32],
    arg: &mut [u32],
    rows: (&[f32], &[f32]),
    first: usize,
    in_w: usize,
) {
    let (first, in_w) = (first as u32, in_w as u32);
    let cells = out.iter_mut().zip(arg.iter_mut());
    let windows = rows.0.chunks_exact(2).zip(rows.1.chunks_exact(2));
    for (ox, ((o, a), (t, b))) in cells.zip(windows).enumerate() {
        let at = first + 2 * ox as u32;
        let (mut best, mut i) = (t[0], at);
        if t[1] > best {
            (best, i) = (t[1], at + 1);
        }
        if b[0] > best {
            (best, i) = (b[0], at + in_w);
        }
        if b[1] > best {
            (best, i) = (b[1], at + in_w + 1);
        }
        *o = best;
        *a = i;
    }
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
        .with_min_len(planes_per_task(in_plane))
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
