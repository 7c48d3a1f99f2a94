//! Convolution as im2col + GEMM (the GPU twin is `shaders/conv2d.wgsl`).
//!
//! For one image, im2col unrolls every k×k patch of the input into a column of
//! `cols (patch_len, out_h·out_w)`, with row `(c·k + i)·k + j` holding
//! `input[c, y+i−pad, x+j−pad]` (zero where that falls on the padding) at column
//! `y·out_w + x`. The convolution is then one matrix product
//! `out (out_c, out_h·out_w) = weight (out_c, patch_len) · cols`, and both gradients are
//! products with the same matrix: `d_weight += d_out · colsᵀ` and
//! `d_cols = weightᵀ · d_out`, which col2im folds back onto the input (overlapping patches
//! add up). The batch is split into one contiguous run of images per worker thread.

use super::activation::{watch_image, BadImages, Fused};
use super::gemm::{matmul, MatRef};
use super::{scratch, Workers};
use crate::shape::Conv2dShape;
use std::ops::Range;

/// Images per group in the backward passes: one product over a group of images has a
/// GROUP× longer inner (weight gradient) or outer (input gradient) dimension than one per
/// image, which keeps the GEMM nearer its peak.
const GROUP: usize = 4;

/// The output columns `x0..x1` whose input column `x + j − pad` lies inside `0..in_w`; the
/// others see zero padding.
fn inside(j: usize, s: &Conv2dShape, ow: usize) -> (usize, usize) {
    let x0 = s.pad.saturating_sub(j).min(ow);
    let x1 = (s.in_w + s.pad).saturating_sub(j).min(ow).max(x0);
    (x0, x1)
}

/// `cols (patch_len, out_h·out_w)` from one image `input (in_c, in_h, in_w)`; row `r` of
/// `cols` starts at `r·ld` (`ld ≥ out_h·out_w`, larger when images sit side by side).
/// Taps that fall on the zero padding are written as zeros.
fn im2col(cols: &mut [f32], ld: usize, input: &[f32], s: &Conv2dShape) {
    let (oh, ow, k) = (s.out_h(), s.out_w(), s.k);
    for c in 0..s.in_c {
        let plane = &input[c * s.in_h * s.in_w..(c + 1) * s.in_h * s.in_w];
        for i in 0..k {
            for j in 0..k {
                let row = ((c * k + i) * k + j) * ld;
                let (x0, x1) = inside(j, s, ow);
                for y in 0..oh {
                    let dst = &mut cols[row + y * ow..row + (y + 1) * ow];
                    // u32-style wrap: a row above the image becomes huge and fails the bound.
                    let iy = (y + i).wrapping_sub(s.pad);
                    if iy >= s.in_h || x0 == x1 {
                        dst.fill(0.0);
                        continue;
                    }
                    dst[..x0].fill(0.0);
                    dst[x1..].fill(0.0);
                    let src = iy * s.in_w + x0 + j - s.pad;
                    dst[x0..x1].copy_from_slice(&plane[src..src + (x1 - x0)]);
                }
            }
        }
    }
}

/// Adds `cols (patch_len, out_h·out_w)` (row `r` at `r·ld`) back onto one image
/// `d_input (in_c, in_h, in_w)`, which must be zeroed first; the transpose of [`im2col`]
/// (taps on the padding have nowhere to go and are dropped).
fn col2im(d_input: &mut [f32], cols: &[f32], ld: usize, s: &Conv2dShape) {
    let (oh, ow, k) = (s.out_h(), s.out_w(), s.k);
    for c in 0..s.in_c {
        let plane = &mut d_input[c * s.in_h * s.in_w..(c + 1) * s.in_h * s.in_w];
        for i in 0..k {
            for j in 0..k {
                let row = ((c * k + i) * k + j) * ld;
                let (x0, x1) = inside(j, s, ow);
                if x0 == x1 {
                    continue;
                }
                for y in 0..oh {
                    let iy = (y + i).wrapping_sub(s.pad);
                    if iy >= s.in_h {
                        continue;
                    }
                    let dst = iy * s.in_w + x0 + j - s.pad;
                    let src = &cols[row + y * ow + x0..row + y * ow + x1];
                    for (d, &v) in plane[dst..dst + (x1 - x0)].iter_mut().zip(src) {
                        *d += v;
                    }
                }
            }
        }
    }
}

/// `out (batch, out_c, out_h, out_w) = act(conv(input (batch, in_c, in_h, in_w), weight) +
/// bias)`; weight `(out_c, patch_len)`, bias `(out_c)`; no activation when `act` is `None`.
/// The activation runs on each image's output right after its product, while it is in cache,
/// and so does the watch that marks in `bad` the images whose output is not all finite.
pub fn conv2d_forward(
    w: &Workers,
    out: &mut [f32],
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    (act, bad): (Option<Fused>, BadImages<'_>),
    s: &Conv2dShape,
) {
    let (hw, p) = (s.out_h() * s.out_w(), s.patch_len());
    let in_img = s.in_c * s.in_h * s.in_w;
    let weight = MatRef::row_major(weight, s.out_c, p);
    w.per_image(out, s.out_c * hw, s.batch, |images, out, scr, par| {
        let cols = scratch(&mut scr.cols, p * hw); // (patch_len, out_h·out_w)
        for (b, out_b) in images.zip(out.chunks_exact_mut(s.out_c * hw)) {
            im2col(cols, hw, &input[b * in_img..(b + 1) * in_img], s);
            for (row, &bo) in out_b.chunks_exact_mut(hw).zip(bias) {
                row.fill(bo);
            }
            matmul(out_b, weight, MatRef::row_major(cols, p, hw), true, par);
            if let Some(a) = act {
                out_b.iter_mut().for_each(|v| *v = a.apply(*v));
            }
            watch_image(bad, b, out_b);
        }
    });
}

/// Copies `d_out` of images `images` (each `(out_c, out_h·out_w)`) side by side into
/// `group (out_c, n·out_h·out_w)`, `n = images.len()`.
fn gather_group(group: &mut [f32], d_out: &[f32], images: Range<usize>, s: &Conv2dShape) {
    let hw = s.out_h() * s.out_w();
    let ld = images.len() * hw;
    for (g, b) in images.enumerate() {
        let img = &d_out[b * s.out_c * hw..(b + 1) * s.out_c * hw];
        for (c, row) in img.chunks_exact(hw).enumerate() {
            group[c * ld + g * hw..c * ld + (g + 1) * hw].copy_from_slice(row);
        }
    }
}

/// The runs of at most [`GROUP`] images that make up `images`.
fn groups(images: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    images
        .clone()
        .step_by(GROUP)
        .map(move |b| b..(b + GROUP).min(images.end))
}

/// `d_input (batch, in_c, in_h, in_w)` from `d_out (batch, out_c, out_h, out_w)` and
/// weight `(out_c, patch_len)`: per group of images, `d_cols = weightᵀ · d_out`, then
/// col2im of each image's column block.
pub fn conv2d_backward_input(
    w: &Workers,
    d_input: &mut [f32],
    d_out: &[f32],
    weight: &[f32],
    s: &Conv2dShape,
) {
    let (hw, p) = (s.out_h() * s.out_w(), s.patch_len());
    let weight_t = MatRef::row_major(weight, s.out_c, p).t(); // (patch_len, out_c)
    let in_img = s.in_c * s.in_h * s.in_w;
    w.per_image(d_input, in_img, s.batch, |images, d_in, scr, par| {
        let first = images.start;
        for group in groups(images) {
            let (n, ld) = (group.len(), group.len() * hw);
            let d_out_g = scratch(&mut scr.group, s.out_c * ld); // (out_c, n·out_h·out_w)
            gather_group(d_out_g, d_out, group.clone(), s);
            let d_cols = scratch(&mut scr.cols, p * ld); // (patch_len, n·out_h·out_w)
            matmul(
                d_cols,
                weight_t,
                MatRef::row_major(d_out_g, s.out_c, ld),
                false,
                par,
            );
            for g in 0..n {
                let b = group.start + g - first;
                let d_in_b = &mut d_in[b * in_img..(b + 1) * in_img];
                d_in_b.fill(0.0);
                col2im(d_in_b, &d_cols[g * hw..], ld, s);
            }
        }
    });
}

/// `d_weight (out_c, patch_len) = Σ_b d_out_b · cols_bᵀ` and `d_bias (out_c) = Σ d_out`,
/// overwritten. Each worker sums its images, a group at a time (one product with a
/// GROUP× longer inner dimension), into its own accumulator; the accumulators are then added
/// in worker order, so the result does not depend on scheduling.
pub fn conv2d_backward_weight(
    w: &Workers,
    d_weight: &mut [f32],
    d_bias: &mut [f32],
    d_out: &[f32],
    input: &[f32],
    s: &Conv2dShape,
) {
    let (hw, p) = (s.out_h() * s.out_w(), s.patch_len());
    let (in_img, out_img) = (s.in_c * s.in_h * s.in_w, s.out_c * hw);
    let acc_len = s.out_c * p + s.out_c;
    let workers = w.per_worker(s.batch, |images, scr, par| {
        let acc = scratch(&mut scr.acc, acc_len); // d_weight (out_c, patch_len) ++ d_bias (out_c)
        acc.fill(0.0);
        let (acc_w, acc_b) = acc.split_at_mut(s.out_c * p);
        for group in groups(images) {
            let ld = group.len() * hw;
            let cols = scratch(&mut scr.cols, p * ld); // (patch_len, n·out_h·out_w)
            for (g, b) in group.clone().enumerate() {
                im2col(
                    &mut cols[g * hw..],
                    ld,
                    &input[b * in_img..(b + 1) * in_img],
                    s,
                );
            }
            let d_out_g = scratch(&mut scr.group, s.out_c * ld); // (out_c, n·out_h·out_w)
            gather_group(d_out_g, d_out, group.clone(), s);
            let cols_t = MatRef::row_major(cols, p, ld).t(); // (n·out_h·out_w, patch_len)
            matmul(
                acc_w,
                MatRef::row_major(d_out_g, s.out_c, ld),
                cols_t,
                true,
                par,
            );
            for b in group {
                let d_out_b = &d_out[b * out_img..(b + 1) * out_img]; // (out_c, out_h·out_w)
                for (db, row) in acc_b.iter_mut().zip(d_out_b.chunks_exact(hw)) {
                    // Vectorised, in f64: `iter().sum()` is one chain of scalar adds.
                    *db += super::batchnorm::sum(row) as f32;
                }
            }
        }
    });
    w.sum_weight_grads(
        workers,
        &mut d_weight[..s.out_c * p],
        &mut d_bias[..s.out_c],
    );
}
