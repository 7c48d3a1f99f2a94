//! The forward and weight gradient of a 3×3 convolution with few input channels — the first
//! layer of every preset, on one grey channel — computed directly, 16 output columns per
//! vector, in AVX-512 intrinsics.
//!
//! As im2col + GEMM that layer is a product of inner dimension 9: the GEMM's packing and
//! the passes over the output (bias first, activation after) cost more than its 9
//! multiply-adds per output. Here every output channel's 16 values are built in one
//! register: the bias plus `9·in_c` fused multiply-adds of input vectors (read from the
//! padded image, in L1), activated and stored once, one output plane after another
//! (64×1×48×48 → 32: 1.2 → 0.92 ms on two cores; → 128: 3.1 → 2.0 ms; docs/RESULTS.md).

use super::activation::{watch_image, BadImages, Fused};
use super::microkernel::Isa;
use super::{scratch, Workers};
use crate::shape::Conv2dShape;

/// Output columns per vector.
const L: usize = 16;
/// The most input channels the direct forward takes (with more, im2col's product has a long
/// enough inner dimension).
const MAX_IN_C: usize = 4;

/// Whether [`conv2d_forward`] runs `s` on `isa`: a 3×3 kernel, at most [`MAX_IN_C`] input
/// channels, padding at most 2, and AVX-512 (written in its intrinsics: the same loops in
/// portable lane arrays compiled to mixed-width code slower than im2col, measured).
pub fn applies(s: &Conv2dShape, isa: Isa) -> bool {
    cfg!(target_arch = "x86_64")
        && isa == Isa::Avx512
        && s.k == 3
        && s.in_c <= MAX_IN_C
        && s.pad <= 2
}

/// `out (batch, out_c, out_h, out_w) = act(conv(input (batch, in_c, in_h, in_w), weight
/// (out_c, in_c, 3, 3)) + bias)`, each image by one worker, the images whose output is not
/// all finite marked in `bad`. Needs [`applies`] with the CPU's instruction set.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward(
    w: &Workers,
    out: &mut [f32],
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    (act, bad): (Option<Fused>, BadImages<'_>),
    s: &Conv2dShape,
) {
    assert!(applies(s, Isa::detect()), "direct convolution of {s:?}");
    let (oh, ow) = (s.out_h(), s.out_w());
    let (hp, wp) = padded_sides(s);
    let dims = (s.in_c, s.out_c, oh, ow, wp, hp);
    let in_img = s.in_c * s.in_h * s.in_w;
    w.per_image(out, s.out_c * oh * ow, s.batch, |images, out, scr, _| {
        let padded = scratch(&mut scr.cols, s.in_c * hp * wp); // (in_c, hp, wp)
        padded.fill(0.0);
        for (b, out_b) in images.zip(out.chunks_exact_mut(s.out_c * oh * ow)) {
            pad_image(padded, &input[b * in_img..(b + 1) * in_img], s);
            // SAFETY: `applies` found AVX-512F on this CPU; `image` checks its buffers.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx512::image(out_b, padded, weight, bias, dims, act)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (dims, act, &padded, weight, bias);
            watch_image(bad, b, out_b);
        }
    });
}

/// `d_weight (out_c, in_c, 3, 3)` and `d_bias (out_c)` of `s`, overwritten: each worker
/// adds its images' `Σ dy·x` into its `acc` scratch (per output and input channel, nine
/// vector accumulators over the output plane, then summed across their lanes), and the
/// workers' sums are added in worker order, so the result does not depend on scheduling.
/// Needs [`applies`] with the CPU's instruction set.
pub fn conv2d_backward_weight(
    w: &Workers,
    d_weight: &mut [f32],
    d_bias: &mut [f32],
    d_out: &[f32],
    input: &[f32],
    s: &Conv2dShape,
) {
    assert!(applies(s, Isa::detect()), "direct convolution of {s:?}");
    let (oh, ow) = (s.out_h(), s.out_w());
    let (hp, wp) = padded_sides(s);
    let dims = (s.in_c, s.out_c, oh, ow, wp, hp);
    let (in_img, out_img) = (s.in_c * s.in_h * s.in_w, s.out_c * oh * ow);
    let acc_len = s.weight_len() + s.out_c;
    let workers = w.per_worker(s.batch, |images, scr, _| {
        let acc = scratch(&mut scr.acc, acc_len); // d_weight (out_c, in_c·9) ++ d_bias (out_c)
        acc.fill(0.0);
        let (acc_w, acc_b) = acc.split_at_mut(s.weight_len());
        let padded = scratch(&mut scr.cols, s.in_c * hp * wp); // (in_c, hp, wp)
        padded.fill(0.0);
        for b in images {
            pad_image(padded, &input[b * in_img..(b + 1) * in_img], s);
            let dy = &d_out[b * out_img..(b + 1) * out_img]; // (out_c, oh·ow)
                                                             // SAFETY: `applies` found AVX-512F on this CPU; `weight_image` checks its buffers.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx512::weight_image(acc_w, padded, dy, dims)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (dims, &acc_w, dy);
            for (db, plane) in acc_b.iter_mut().zip(dy.chunks_exact(oh * ow)) {
                *db += super::batchnorm::sum(plane) as f32;
            }
        }
    });
    w.sum_weight_grads(workers, d_weight, d_bias);
}

/// The sides `(hp, wp)` of an image with its zero padding and `L` more zeros on the right of
/// every row, so that a vector of 16 columns never reads past its row.
fn padded_sides(s: &Conv2dShape) -> (usize, usize) {
    (s.in_h + 2 * s.pad, s.in_w + 2 * s.pad + L)
}

/// Copies image `x (in_c, in_h, in_w)` into the inside of `padded (in_c, hp, wp)`
/// ([`padded_sides`]), whose border stays zero.
fn pad_image(padded: &mut [f32], x: &[f32], s: &Conv2dShape) {
    let (hp, wp) = padded_sides(s);
    for (c, plane) in x.chunks_exact(s.in_h * s.in_w).enumerate() {
        for (y, row) in plane.chunks_exact(s.in_w).enumerate() {
            let at = (c * hp + y + s.pad) * wp + s.pad;
            padded[at..at + s.in_w].copy_from_slice(row);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::activation::act_lanes;
    use super::{Fused, L};
    use crate::backend::Activation;
    use std::arch::x86_64::*;

    /// One image: `out (co, oh, ow)` from `padded (ci, hp, wp)`; per 16 output columns and
    /// output channel, one accumulator of `9·ci` fused multiply-adds over input vectors
    /// read from `padded` (L1-resident), a masked store for the row's last columns.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn image(
        out: &mut [f32],
        padded: &[f32],
        weight: &[f32],
        bias: &[f32],
        (ci, co, oh, ow, wp, hp): (usize, usize, usize, usize, usize, usize),
        act: Option<Fused>,
    ) {
        let taps = 9 * ci;
        assert!(out.len() >= co * oh * ow && weight.len() >= co * taps && bias.len() >= co);
        // The last vector read, (ci − 1, oh + 1, ow − 1 + 2 .. + 16), lies inside `padded`.
        assert!(padded.len() >= ((ci - 1) * hp + oh + 1) * wp + ow + 1 + L);
        let relu = act.filter(|a| a.act == Activation::Relu);
        let other = act.filter(|a| a.act != Activation::Relu);
        let zero = _mm512_setzero_ps();
        // Channel by channel, so that each output plane is written in order (row by row
        // over all channels wrote to `co` planes at once: 2.5× slower with 128 of them).
        for (o, &b) in bias.iter().enumerate().take(co) {
            let w = weight.as_ptr().add(o * taps);
            for y in 0..oh {
                for x0 in (0..ow).step_by(L) {
                    let n = L.min(ow - x0);
                    let mask: __mmask16 = if n == L { 0xffff } else { (1u16 << n) - 1 };
                    let src = padded.as_ptr().add(y * wp + x0);
                    let mut acc = _mm512_set1_ps(b);
                    for c in 0..ci {
                        for t in 0..9 {
                            let x = _mm512_loadu_ps(src.add((c * hp + t / 3) * wp + t % 3));
                            acc = _mm512_fmadd_ps(_mm512_set1_ps(*w.add(c * 9 + t)), x, acc);
                        }
                    }
                    if let Some(a) = relu {
                        let r = _mm512_max_ps(acc, zero);
                        acc = if a.watched {
                            let d = _mm512_sub_ps(acc, acc);
                            let not_finite = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(d, d);
                            _mm512_mask_mov_ps(r, not_finite, acc)
                        } else {
                            r
                        };
                    }
                    if other.is_some() {
                        let mut lanes = [0f32; L];
                        _mm512_storeu_ps(lanes.as_mut_ptr(), acc);
                        act_lanes(&mut lanes, other);
                        acc = _mm512_loadu_ps(lanes.as_ptr());
                    }
                    let at = out.as_mut_ptr().add((o * oh + y) * ow + x0);
                    _mm512_mask_storeu_ps(at, mask, acc);
                }
            }
        }
    }

    /// Adds one image's `Σ dy·x` to `acc (co, ci·9)`: per output channel `o` and input
    /// channel `c`, nine accumulators, each the 16-column products of `dy[o]` with the input
    /// under one tap, over every row (the row's last columns masked in both), then summed
    /// across their lanes.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_image(
        acc: &mut [f32],
        padded: &[f32],
        dy: &[f32],
        (ci, co, oh, ow, wp, hp): (usize, usize, usize, usize, usize, usize),
    ) {
        assert!(acc.len() >= co * ci * 9 && dy.len() >= co * oh * ow);
        assert!(padded.len() >= ((ci - 1) * hp + oh + 1) * wp + ow + 1 + L);
        for o in 0..co {
            let d_plane = dy.as_ptr().add(o * oh * ow);
            for c in 0..ci {
                let mut sums = [_mm512_setzero_ps(); 9];
                for y in 0..oh {
                    for x0 in (0..ow).step_by(L) {
                        let n = L.min(ow - x0);
                        let mask: __mmask16 = if n == L { 0xffff } else { (1u16 << n) - 1 };
                        let d = _mm512_maskz_loadu_ps(mask, d_plane.add(y * ow + x0));
                        let src = padded.as_ptr().add((c * hp + y) * wp + x0);
                        for (t, sum) in sums.iter_mut().enumerate() {
                            let x = _mm512_maskz_loadu_ps(mask, src.add(t / 3 * wp + t % 3));
                            *sum = _mm512_fmadd_ps(d, x, *sum);
                        }
                    }
                }
                for (t, sum) in sums.iter().enumerate() {
                    acc[(o * ci + c) * 9 + t] += _mm512_reduce_add_ps(*sum);
                }
            }
        }
    }
}
