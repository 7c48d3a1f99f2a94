//! Each op's uniform parameters and launch geometry: the host side of `shaders/*.wgsl`.
//!
//! Uniforms are written as `u32` words in the order of the WGSL structs (f32 fields as their
//! bits); each builder names its struct. Launch sizes come from `shape::dispatch_2d`, so grids
//! larger than the device's per-dimension limit fold into a second dimension.

use crate::backend::AdamStep;
use crate::shape::{Conv2dShape, DenseShape, PoolShape};

/// Workgroup size of the register-tiled GEMM kernels (conv2d, dense): 8×8 invocations.
pub(crate) const GEMM_WG: usize = 64;
/// Side of the C tile one GEMM workgroup computes.
const TILE: usize = 32;
/// `dense.wgsl` `NO_BIAS`.
const NO_BIAS: u32 = u32::MAX;
/// Split-K target: enough workgroups to fill a large GPU for the weight gradients.
const SPLIT_TARGET_GROUPS: usize = 1024;
/// Split-K: shortest reduction chunk worth a partial sum of its own.
const MIN_CHUNK: usize = 256;

/// A size as a shader `u32`; larger sizes are a bug of the caller (buffers that big cannot
/// be bound anyway).
pub(crate) fn u(n: usize) -> u32 {
    u32::try_from(n).unwrap_or_else(|_| panic!("size {n} does not fit a u32 shader index"))
}

/// Invocations of a GEMM launch: 64 per 32×32 tile.
pub(crate) fn gemm_invocations(n_tiles: u32) -> usize {
    n_tiles as usize * GEMM_WG
}

/// `conv2d.wgsl` `Conv` for a forward pass.
pub(crate) fn conv_forward(s: &Conv2dShape, w_off: usize, b_off: usize) -> [u32; 16] {
    let tiles_m = s.out_c.div_ceil(TILE);
    let tiles_n = (s.batch * s.out_h() * s.out_w()).div_ceil(TILE);
    conv_uniform(s, w_off, b_off, 1, 0, tiles_m, tiles_n, tiles_m * tiles_n)
}

/// `conv2d.wgsl` `Conv` for the input gradient (rows: input channels, columns: input pixels).
pub(crate) fn conv_backward_input(s: &Conv2dShape, w_off: usize) -> [u32; 16] {
    let tiles_m = s.in_c.div_ceil(TILE);
    let tiles_n = (s.batch * s.in_h * s.in_w).div_ceil(TILE);
    conv_uniform(s, w_off, 0, 1, 0, tiles_m, tiles_n, tiles_m * tiles_n)
}

/// `conv2d.wgsl` `Conv` for the weight gradient, and the split count: the reduction over
/// `batch·out_h·out_w` is cut into chunks so that small layers still fill the device.
pub(crate) fn conv_backward_weight(s: &Conv2dShape, w_off: usize, b_off: usize) -> [u32; 16] {
    let tiles_m = s.out_c.div_ceil(TILE);
    let tiles_n = (s.patch_len() + 1).div_ceil(TILE);
    let total = s.batch * s.out_h() * s.out_w();
    let wanted = SPLIT_TARGET_GROUPS.div_ceil(tiles_m * tiles_n);
    let most = total.div_ceil(MIN_CHUNK).max(1);
    let chunk = total.div_ceil(wanted.clamp(1, most));
    let splits = total.div_ceil(chunk);
    conv_uniform(
        s,
        w_off,
        b_off,
        splits,
        chunk,
        tiles_m,
        tiles_n,
        tiles_m * tiles_n * splits,
    )
}

/// Elements of the split-K partials `(splits, out_c, patch_len + 1)` of a weight-gradient
/// uniform; 0 when it writes the gradients directly.
pub(crate) fn conv_partials_len(s: &Conv2dShape, uniform: &[u32; 16]) -> usize {
    let splits = uniform[10] as usize;
    if splits == 1 {
        0
    } else {
        splits * s.out_c * (s.patch_len() + 1)
    }
}

/// Invocations of the split-K reduction: one per weight and bias gradient.
pub(crate) fn conv_reduce_invocations(s: &Conv2dShape) -> usize {
    s.out_c * (s.patch_len() + 1)
}

#[allow(clippy::too_many_arguments)]
fn conv_uniform(
    s: &Conv2dShape,
    w_off: usize,
    b_off: usize,
    splits: usize,
    chunk: usize,
    tiles_m: usize,
    tiles_n: usize,
    n_tiles: usize,
) -> [u32; 16] {
    [
        u(s.batch),
        u(s.in_c),
        u(s.in_h),
        u(s.in_w),
        u(s.out_c),
        u(s.out_h()),
        u(s.out_w()),
        u(s.k),
        u(w_off),
        u(b_off),
        u(splits),
        u(chunk),
        u(tiles_m),
        u(tiles_n),
        u(n_tiles),
        0,
    ]
}

/// `maxpool.wgsl` `Pool`.
pub(crate) fn pool(s: &PoolShape) -> [u32; 8] {
    [
        u(s.batch),
        u(s.c),
        u(s.in_h),
        u(s.in_w),
        u(s.size),
        u(s.out_h()),
        u(s.out_w()),
        0,
    ]
}

/// `dense.wgsl` `Mm`: `C[m, n] = Σ_k A[m, k]·B[k, n]` with the strides of one entry point.
struct Mm {
    m: usize,
    n: usize,
    k: usize,
    ones_col: bool,
    a: (usize, usize, usize),
    b: (usize, usize, usize),
    c: (usize, usize),
    bias_off: u32,
    bias_dst: usize,
}

impl Mm {
    fn words(&self) -> [u32; 16] {
        let tiles_n = self.n.div_ceil(TILE);
        let n_tiles = self.m.div_ceil(TILE) * tiles_n;
        [
            u(self.m),
            u(self.n),
            u(self.k),
            u32::from(self.ones_col),
            u(self.a.0),
            u(self.a.1),
            u(self.a.2),
            u(self.b.0),
            u(self.b.1),
            u(self.b.2),
            u(self.c.0),
            u(self.c.1),
            self.bias_off,
            u(self.bias_dst),
            u(tiles_n),
            u(n_tiles),
        ]
    }
}

/// `dense_forward`: A = x `(batch, in_f)`, B = wᵀ, C = y `(batch, out_f)` plus the bias.
pub(crate) fn dense_forward(s: &DenseShape, w_off: usize, b_off: usize) -> [u32; 16] {
    Mm {
        m: s.batch,
        n: s.out_f,
        k: s.in_f,
        ones_col: false,
        a: (0, s.in_f, 1),
        b: (w_off, 1, s.in_f),
        c: (0, s.out_f),
        bias_off: u(b_off),
        bias_dst: 0,
    }
    .words()
}

/// `dense_backward_input`: A = dy `(batch, out_f)`, B = w `(out_f, in_f)`, C = dx.
pub(crate) fn dense_backward_input(s: &DenseShape, w_off: usize) -> [u32; 16] {
    Mm {
        m: s.batch,
        n: s.in_f,
        k: s.out_f,
        ones_col: false,
        a: (0, s.out_f, 1),
        b: (w_off, s.in_f, 1),
        c: (0, s.in_f),
        bias_off: NO_BIAS,
        bias_dst: 0,
    }
    .words()
}

/// `dense_backward_weight`: A = dyᵀ `(out_f, batch)`, B = x `(batch, in_f)` plus a column of
/// ones whose sums are the bias gradient, C = dw in grads.
pub(crate) fn dense_backward_weight(s: &DenseShape, w_off: usize, b_off: usize) -> [u32; 16] {
    Mm {
        m: s.out_f,
        n: s.in_f + 1,
        k: s.batch,
        ones_col: true,
        a: (0, 1, s.out_f),
        b: (0, s.in_f, 1),
        c: (w_off, s.in_f),
        bias_off: NO_BIAS,
        bias_dst: b_off,
    }
    .words()
}

/// The tile count (word 15) of a `Mm` uniform.
pub(crate) fn mm_tiles(words: &[u32; 16]) -> u32 {
    words[15]
}

/// The tile count (word 14) of a `Conv` uniform.
pub(crate) fn conv_tiles(words: &[u32; 16]) -> u32 {
    words[14]
}

/// `activation.wgsl` `Act`.
pub(crate) fn activation(len: usize, code: u32) -> [u32; 4] {
    [u(len), code, 0, 0]
}

/// `softmax_xent.wgsl` `Loss`.
pub(crate) fn loss(batch: usize, classes: usize) -> [u32; 4] {
    [u(batch), u(classes), 0, 0]
}

/// `adam.wgsl` `AdamParams`.
pub(crate) fn adam(step: &AdamStep, len: usize) -> [u32; 8] {
    [
        step.lr_t.to_bits(),
        step.beta1.to_bits(),
        step.beta2.to_bits(),
        step.eps.to_bits(),
        u(len),
        0,
        0,
        0,
    ]
}

/// `data.wgsl` `Gather` for square images of `side × side` pixels.
pub(crate) fn gather(batch: usize, offset: usize, side: usize) -> [u32; 4] {
    [u(batch), u(offset), u(side * side), u(side)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(batch: usize, in_c: usize, side: usize, out_c: usize) -> Conv2dShape {
        Conv2dShape {
            batch,
            in_c,
            in_h: side,
            in_w: side,
            out_c,
            k: 3,
        }
    }

    #[test]
    fn split_k_chunks_cover_the_reduction_exactly_once() {
        for s in [
            conv(32, 1, 48, 128),
            conv(32, 128, 23, 128),
            conv(3, 5, 9, 4),
        ] {
            let w = conv_backward_weight(&s, 0, 0);
            let (splits, chunk) = (w[10] as usize, w[11] as usize);
            let total = s.batch * s.out_h() * s.out_w();
            assert!(splits >= 1 && chunk >= 1);
            assert!(splits * chunk >= total, "chunks miss part of {total}");
            assert!((splits - 1) * chunk < total, "an empty split");
            assert_eq!(w[14] as usize, w[12] as usize * w[13] as usize * splits);
        }
        // A tiny layer needs no split: its gradients are written directly.
        let w = conv_backward_weight(&conv(1, 1, 4, 1), 0, 0);
        assert_eq!(w[10], 1);
    }

    #[test]
    fn dense_uniforms_count_tiles_of_the_product() {
        let s = DenseShape {
            batch: 3,
            in_f: 70,
            out_f: 33,
        };
        // forward: 3×33 output → 1×2 tiles; backward weight: 33×71 → 2×3 tiles.
        assert_eq!(mm_tiles(&dense_forward(&s, 0, 0)), 2);
        assert_eq!(mm_tiles(&dense_backward_weight(&s, 0, 0)), 6);
        assert_eq!(mm_tiles(&dense_backward_input(&s, 0)), 3);
    }
}
