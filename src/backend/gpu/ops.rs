//! One function per kernel entry point, named like it: what to dispatch for one op (the
//! kernel, its uniform struct, and how much work), from the op's shape. The host side of
//! `shaders/*.wgsl`; `GpuBackend` adds the buffers and records the dispatch.
//!
//! Work is counted in invocations for kernels that do one item per invocation, or in whole
//! workgroups for the GEMM kernels (one per 32×32 tile of C; the tiled kernels' `*_tiled`
//! launches, one per tile of their configuration) and the loss's single workgroup;
//! the workgroup size itself is the shader's (see [`super::kernels`]). Grids larger than the
//! device's per-dimension limit fold into a second dimension (`shape::dispatch_2d`).

use super::kernels::Kernel;
use super::tiles::TileConfig;
use super::uniforms::{Accum, Act, Conv, Drop, Gap, Gather, Loss, Mm, Norm, Optim, Pool, Uniform};
use crate::backend::{Activation, BatchNorm, Dropout, OptimizerStep};
use crate::shape::{BatchNormShape, Conv2dShape, DenseShape, GlobalAvgPoolShape, PoolShape};

/// Side of the C tile one GEMM workgroup computes (`conv2d.wgsl`, `dense.wgsl` `TILE`).
pub(crate) const TILE: usize = 32;
/// `dense.wgsl` `NO_BIAS`.
const NO_BIAS: u32 = u32::MAX;
/// Split-K target: enough workgroups to fill a large GPU for the weight gradients.
const SPLIT_TARGET_GROUPS: usize = 1024;
/// Split-K: shortest reduction chunk worth a partial sum of its own.
const MIN_CHUNK: usize = 256;

/// How much work a dispatch covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grid {
    /// One invocation per item; invocations past the last item return.
    Invocations(usize),
    /// Whole workgroups: a GEMM's tiles, or one workgroup that loops over everything.
    Workgroups(usize),
}

impl Grid {
    /// Workgroups needed with `wg` invocations per workgroup.
    pub(crate) fn workgroups(self, wg: u32) -> usize {
        match self {
            Grid::Invocations(n) => n.div_ceil(wg as usize),
            Grid::Workgroups(n) => n,
        }
    }
}

/// One dispatch: the kernel, its uniform, and its grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Launch<U: Uniform> {
    /// The entry point.
    pub(crate) kernel: Kernel,
    /// Its parameters, the struct its shader binds at binding 0.
    pub(crate) uniform: U,
    /// How much work.
    pub(crate) grid: Grid,
    /// The tile configuration of a tiled kernel (its pipeline); `None` for the others.
    pub(crate) tiles: Option<TileConfig>,
}

impl<U: Uniform> Launch<U> {
    /// A launch of `kernel`, whose shader file must be one that declares `U`.
    fn new(kernel: Kernel, uniform: U, grid: Grid) -> Launch<U> {
        check_uniform::<U>(kernel);
        assert!(!kernel.is_tiled(), "{kernel:?} needs a tile configuration");
        Launch {
            kernel,
            uniform,
            grid,
            tiles: None,
        }
    }

    /// A launch of the tiled `kernel` with tiles `cfg`: one workgroup per `grid` item.
    fn tiled(kernel: Kernel, uniform: U, grid: Grid, cfg: TileConfig) -> Launch<U> {
        assert!(kernel.is_tiled(), "{kernel:?} has no tile configurations");
        check_uniform::<U>(kernel);
        assert!(
            matches!(grid, Grid::Workgroups(_)),
            "tiled grids count tiles"
        );
        Launch {
            kernel,
            uniform,
            grid,
            tiles: Some(cfg),
        }
    }
}

/// Panics unless `kernel` is declared with the uniform struct `U`.
fn check_uniform<U: Uniform>(kernel: Kernel) {
    let spec = kernel.spec();
    assert_eq!(
        spec.uniform.name,
        U::LAYOUT.name,
        "{} binds {}, not {}",
        spec.entry,
        spec.uniform.name,
        U::LAYOUT.name
    );
}

/// A size as a shader `u32`; larger sizes are a bug of the caller (buffers that big cannot
/// be bound anyway).
fn u(n: usize) -> u32 {
    u32::try_from(n).unwrap_or_else(|_| panic!("size {n} does not fit a u32 shader index"))
}

// ---- data ---------------------------------------------------------------------------------

/// `gather_batch` of `batch` square images of `side × side` pixels from `order[offset..]`:
/// one invocation per gathered pixel.
pub(crate) fn gather_batch(batch: usize, offset: usize, side: usize) -> Launch<Gather> {
    let uniform = Gather {
        batch: u(batch),
        offset: u(offset),
        pixels: u(side * side),
        side: u(side),
    };
    Launch::new(
        Kernel::GatherBatch,
        uniform,
        Grid::Invocations(batch * side * side),
    )
}

/// `gather_batch_warped`: as [`gather_batch`], one invocation per gathered pixel, each also
/// reading its image's warp.
pub(crate) fn gather_batch_warped(batch: usize, offset: usize, side: usize) -> Launch<Gather> {
    let plain = gather_batch(batch, offset, side);
    Launch::new(Kernel::GatherBatchWarped, plain.uniform, plain.grid)
}

// ---- convolution --------------------------------------------------------------------------

/// A `Conv` of shape `s` with every tiling and split field zero, filled in by the entry
/// points below.
fn conv(s: &Conv2dShape, w_off: usize, b_off: usize) -> Conv {
    Conv {
        batch: u(s.batch),
        in_c: u(s.in_c),
        in_h: u(s.in_h),
        in_w: u(s.in_w),
        out_c: u(s.out_c),
        out_h: u(s.out_h()),
        out_w: u(s.out_w()),
        k: u(s.k),
        w_off: u(w_off),
        b_off: u(b_off),
        splits: 1,
        chunk: 0,
        tiles_m: 0,
        tiles_n: 0,
        n_tiles: 0,
        pad: u(s.pad),
        act: Activation::Linear.code(),
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    }
}

/// A GEMM launch over `rows × cols` of C in 32×32 tiles, one workgroup per tile (per split).
fn conv_gemm(kernel: Kernel, mut uniform: Conv, rows: usize, cols: usize) -> Launch<Conv> {
    let (tiles_m, tiles_n) = (rows.div_ceil(TILE), cols.div_ceil(TILE));
    let n_tiles = tiles_m * tiles_n * uniform.splits as usize;
    uniform.tiles_m = u(tiles_m);
    uniform.tiles_n = u(tiles_n);
    uniform.n_tiles = u(n_tiles);
    Launch::new(kernel, uniform, Grid::Workgroups(n_tiles))
}

/// `conv2d_forward`: C `(out_c, batch·out_h·out_w)`, then `act` (`Linear`: none).
pub(crate) fn conv2d_forward(
    s: &Conv2dShape,
    w_off: usize,
    b_off: usize,
    act: Activation,
) -> Launch<Conv> {
    let cols = s.batch * s.out_h() * s.out_w();
    let uniform = Conv {
        act: act.code(),
        ..conv(s, w_off, b_off)
    };
    conv_gemm(Kernel::Conv2dForward, uniform, s.out_c, cols)
}

/// `conv2d_backward_input`: C `(in_c, batch·in_h·in_w)`.
pub(crate) fn conv2d_backward_input(s: &Conv2dShape, w_off: usize) -> Launch<Conv> {
    let cols = s.batch * s.in_h * s.in_w;
    conv_gemm(Kernel::Conv2dBackwardInput, conv(s, w_off, 0), s.in_c, cols)
}

/// `conv2d_backward_weight`: C `(out_c, patch_len + 1)` (the last column is the bias), with
/// the reduction over `batch·out_h·out_w` cut into `splits` chunks of `chunk` so that small
/// layers still fill the device. With one split it writes the gradients directly; otherwise
/// it writes [`split_k_partials_len`] partial sums that
/// [`conv2d_backward_weight_reduce`] adds up.
pub(crate) fn conv2d_backward_weight(s: &Conv2dShape, w_off: usize, b_off: usize) -> Launch<Conv> {
    let (rows, cols) = (s.out_c, s.patch_len() + 1);
    let tiles = rows.div_ceil(TILE) * cols.div_ceil(TILE);
    let mut uniform = conv(s, w_off, b_off);
    (uniform.splits, uniform.chunk) = split_k(s, tiles, 1);
    conv_gemm(Kernel::Conv2dBackwardWeight, uniform, rows, cols)
}

/// `(splits, chunk)` of a weight-gradient launch with `tiles` tiles per split: enough
/// splits to reach [`SPLIT_TARGET_GROUPS`] workgroups, none shorter than [`MIN_CHUNK`], and
/// chunks a multiple of `step` (a tiled kernel's reduction steps).
fn split_k(s: &Conv2dShape, tiles: usize, step: usize) -> (u32, u32) {
    let total = s.batch * s.out_h() * s.out_w();
    let wanted = SPLIT_TARGET_GROUPS.div_ceil(tiles);
    let most = total.div_ceil(MIN_CHUNK).max(1);
    let chunk = total.div_ceil(wanted.clamp(1, most)).next_multiple_of(step);
    (u(total.div_ceil(chunk)), u(chunk))
}

/// Elements of the split-K partials `(splits, out_c, patch_len + 1)` a weight-gradient
/// launch writes; 0 when it writes the gradients directly (one split).
pub(crate) fn split_k_partials_len(weight: &Conv) -> usize {
    if weight.splits == 1 {
        0
    } else {
        weight.splits as usize * gradient_len(weight)
    }
}

/// Weight and bias gradients of a convolution: `out_c · (in_c·k·k + 1)`.
fn gradient_len(c: &Conv) -> usize {
    c.out_c as usize * (c.in_c as usize * (c.k * c.k) as usize + 1)
}

/// `conv2d_backward_weight_reduce` after the split-K launch `weight`: one invocation per
/// weight and bias gradient, summing its partials in split order.
pub(crate) fn conv2d_backward_weight_reduce(weight: &Launch<Conv>) -> Launch<Conv> {
    assert!(matches!(
        weight.kernel,
        Kernel::Conv2dBackwardWeight | Kernel::Conv2dBackwardWeightTiled
    ));
    let grid = Grid::Invocations(gradient_len(&weight.uniform));
    Launch::new(Kernel::Conv2dBackwardWeightReduce, weight.uniform, grid)
}

// ---- tiled convolution (conv2d_tiled.wgsl) ------------------------------------------------

/// A tiled launch over `rows × cols` of C in `cfg`'s tiles, one workgroup per tile (per
/// split); `uniform` is the register launch's, re-tiled.
fn conv_tiled(
    kernel: Kernel,
    mut uniform: Conv,
    rows: usize,
    cols: usize,
    cfg: TileConfig,
) -> Launch<Conv> {
    let (tiles_m, tiles_n) = (
        rows.div_ceil(cfg.bm as usize),
        cols.div_ceil(cfg.bn as usize),
    );
    let n_tiles = tiles_m * tiles_n * uniform.splits as usize;
    uniform.tiles_m = u(tiles_m);
    uniform.tiles_n = u(tiles_n);
    uniform.n_tiles = u(n_tiles);
    Launch::tiled(kernel, uniform, Grid::Workgroups(n_tiles), cfg)
}

/// `conv2d_forward_tiled`: C `(out_c, batch·out_h·out_w)` in `cfg`'s tiles, then `act`.
pub(crate) fn conv2d_forward_tiled(
    s: &Conv2dShape,
    w_off: usize,
    b_off: usize,
    act: Activation,
    cfg: TileConfig,
) -> Launch<Conv> {
    let cols = s.batch * s.out_h() * s.out_w();
    let uniform = Conv {
        act: act.code(),
        ..conv(s, w_off, b_off)
    };
    conv_tiled(Kernel::Conv2dForwardTiled, uniform, s.out_c, cols, cfg)
}

/// `conv2d_backward_input_tiled`: C `(in_c, batch·in_h·in_w)` in `cfg`'s tiles.
pub(crate) fn conv2d_backward_input_tiled(
    s: &Conv2dShape,
    w_off: usize,
    cfg: TileConfig,
) -> Launch<Conv> {
    let cols = s.batch * s.in_h * s.in_w;
    let kernel = Kernel::Conv2dBackwardInputTiled;
    conv_tiled(kernel, conv(s, w_off, 0), s.in_c, cols, cfg)
}

/// `conv2d_backward_weight_tiled`: C `(out_c, patch_len + 1)` in `cfg`'s tiles, split-K as
/// [`conv2d_backward_weight`] says (chunks a multiple of `cfg.bk`); its partials are summed
/// by the same [`conv2d_backward_weight_reduce`].
pub(crate) fn conv2d_backward_weight_tiled(
    s: &Conv2dShape,
    w_off: usize,
    b_off: usize,
    cfg: TileConfig,
) -> Launch<Conv> {
    let (rows, cols) = (s.out_c, s.patch_len() + 1);
    let tiles = rows.div_ceil(cfg.bm as usize) * cols.div_ceil(cfg.bn as usize);
    let mut uniform = conv(s, w_off, b_off);
    (uniform.splits, uniform.chunk) = split_k(s, tiles, cfg.bk as usize);
    conv_tiled(Kernel::Conv2dBackwardWeightTiled, uniform, rows, cols, cfg)
}

// ---- pooling ------------------------------------------------------------------------------

fn pool(s: &PoolShape) -> Pool {
    Pool {
        batch: u(s.batch),
        c: u(s.c),
        in_h: u(s.in_h),
        in_w: u(s.in_w),
        size: u(s.size),
        out_h: u(s.out_h()),
        out_w: u(s.out_w()),
        _pad: 0,
    }
}

/// `maxpool_forward`: one invocation per output element.
pub(crate) fn maxpool_forward(s: &PoolShape) -> Launch<Pool> {
    let grid = Grid::Invocations(s.output_len());
    Launch::new(Kernel::MaxpoolForward, pool(s), grid)
}

/// `maxpool_backward`: one invocation per input element (a gather).
pub(crate) fn maxpool_backward(s: &PoolShape) -> Launch<Pool> {
    let grid = Grid::Invocations(s.input_len());
    Launch::new(Kernel::MaxpoolBackward, pool(s), grid)
}

// ---- dense --------------------------------------------------------------------------------

/// A dense GEMM `C (m, n) = A (m, k) · B (k, n)` with the tiling fields filled in, one
/// workgroup per 32×32 tile of C.
fn dense_gemm(kernel: Kernel, mut uniform: Mm) -> Launch<Mm> {
    let tiles_n = (uniform.n as usize).div_ceil(TILE);
    let n_tiles = (uniform.m as usize).div_ceil(TILE) * tiles_n;
    uniform.tiles_n = u(tiles_n);
    uniform.n_tiles = u(n_tiles);
    Launch::new(kernel, uniform, Grid::Workgroups(n_tiles))
}

/// `dense_forward`: A = x `(batch, in_f)`, B = wᵀ, C = y `(batch, out_f)` plus the bias.
pub(crate) fn dense_forward(s: &DenseShape, w_off: usize, b_off: usize) -> Launch<Mm> {
    let uniform = Mm {
        m: u(s.batch),
        n: u(s.out_f),
        k: u(s.in_f),
        ones_col: 0,
        a_off: 0,
        a_sm: u(s.in_f),
        a_sk: 1,
        b_off: u(w_off),
        b_sk: 1,
        b_sn: u(s.in_f),
        c_off: 0,
        c_sm: u(s.out_f),
        bias_off: u(b_off),
        bias_dst: 0,
        tiles_n: 0,
        n_tiles: 0,
    };
    dense_gemm(Kernel::DenseForward, uniform)
}

/// `dense_backward_input`: A = dy `(batch, out_f)`, B = w `(out_f, in_f)`, C = dx.
pub(crate) fn dense_backward_input(s: &DenseShape, w_off: usize) -> Launch<Mm> {
    let uniform = Mm {
        m: u(s.batch),
        n: u(s.in_f),
        k: u(s.out_f),
        ones_col: 0,
        a_off: 0,
        a_sm: u(s.out_f),
        a_sk: 1,
        b_off: u(w_off),
        b_sk: u(s.in_f),
        b_sn: 1,
        c_off: 0,
        c_sm: u(s.in_f),
        bias_off: NO_BIAS,
        bias_dst: 0,
        tiles_n: 0,
        n_tiles: 0,
    };
    dense_gemm(Kernel::DenseBackwardInput, uniform)
}

/// `dense_backward_weight`: A = dyᵀ `(out_f, batch)`, B = x `(batch, in_f)` plus a column of
/// ones whose sums are the bias gradient, C = dw in grads.
pub(crate) fn dense_backward_weight(s: &DenseShape, w_off: usize, b_off: usize) -> Launch<Mm> {
    let uniform = Mm {
        m: u(s.out_f),
        n: u(s.in_f + 1),
        k: u(s.batch),
        ones_col: 1,
        a_off: 0,
        a_sm: 1,
        a_sk: u(s.out_f),
        b_off: 0,
        b_sk: u(s.in_f),
        b_sn: 1,
        c_off: u(w_off),
        c_sm: u(s.in_f),
        bias_off: NO_BIAS,
        bias_dst: u(b_off),
        tiles_n: 0,
        n_tiles: 0,
    };
    dense_gemm(Kernel::DenseBackwardWeight, uniform)
}

// ---- tiled dense (dense_tiled.wgsl) -------------------------------------------------------

/// The register launch `l` as the tiled `kernel` in `cfg`'s tiles, one workgroup per tile.
fn dense_tiled(kernel: Kernel, l: Launch<Mm>, cfg: TileConfig) -> Launch<Mm> {
    let mut uniform = l.uniform;
    let tiles_n = (uniform.n as usize).div_ceil(cfg.bn as usize);
    let n_tiles = (uniform.m as usize).div_ceil(cfg.bm as usize) * tiles_n;
    uniform.tiles_n = u(tiles_n);
    uniform.n_tiles = u(n_tiles);
    Launch::tiled(kernel, uniform, Grid::Workgroups(n_tiles), cfg)
}

/// `dense_forward_tiled`: [`dense_forward`]'s product in `cfg`'s tiles.
pub(crate) fn dense_forward_tiled(
    s: &DenseShape,
    w_off: usize,
    b_off: usize,
    cfg: TileConfig,
) -> Launch<Mm> {
    let kernel = Kernel::DenseForwardTiled;
    dense_tiled(kernel, dense_forward(s, w_off, b_off), cfg)
}

/// `dense_backward_input_tiled`: [`dense_backward_input`]'s product in `cfg`'s tiles.
pub(crate) fn dense_backward_input_tiled(
    s: &DenseShape,
    w_off: usize,
    cfg: TileConfig,
) -> Launch<Mm> {
    let kernel = Kernel::DenseBackwardInputTiled;
    dense_tiled(kernel, dense_backward_input(s, w_off), cfg)
}

/// `dense_backward_weight_tiled`: [`dense_backward_weight`]'s product (bias column
/// included) in `cfg`'s tiles.
pub(crate) fn dense_backward_weight_tiled(
    s: &DenseShape,
    w_off: usize,
    b_off: usize,
    cfg: TileConfig,
) -> Launch<Mm> {
    let kernel = Kernel::DenseBackwardWeightTiled;
    dense_tiled(kernel, dense_backward_weight(s, w_off, b_off), cfg)
}

// ---- activations --------------------------------------------------------------------------

fn act(len: usize, a: Activation) -> Act {
    Act {
        len: u(len),
        code: a.code(),
        _pad0: 0,
        _pad1: 0,
    }
}

/// `activation_forward` over the first `len` elements, one per invocation.
pub(crate) fn activation_forward(len: usize, a: Activation) -> Launch<Act> {
    let grid = Grid::Invocations(len);
    Launch::new(Kernel::ActivationForward, act(len, a), grid)
}

/// `activation_backward` over the first `len` elements, one per invocation.
pub(crate) fn activation_backward(len: usize, a: Activation) -> Launch<Act> {
    let grid = Grid::Invocations(len);
    Launch::new(Kernel::ActivationBackward, act(len, a), grid)
}

// ---- loss ---------------------------------------------------------------------------------

fn loss(batch: usize, classes: usize, smoothing: f32) -> Loss {
    Loss {
        batch: u(batch),
        classes: u(classes),
        smoothing,
        _pad: 0,
    }
}

/// `softmax_cross_entropy_forward`: one workgroup, which sums the statistics in a fixed
/// order (see `softmax_xent.wgsl`).
pub(crate) fn softmax_cross_entropy_forward(
    batch: usize,
    classes: usize,
    smoothing: f32,
) -> Launch<Loss> {
    let uniform = loss(batch, classes, smoothing);
    Launch::new(
        Kernel::SoftmaxCrossEntropyForward,
        uniform,
        Grid::Workgroups(1),
    )
}

/// `softmax_cross_entropy_backward`: one invocation per logit.
pub(crate) fn softmax_cross_entropy_backward(
    batch: usize,
    classes: usize,
    smoothing: f32,
) -> Launch<Loss> {
    let grid = Grid::Invocations(batch * classes);
    Launch::new(
        Kernel::SoftmaxCrossEntropyBackward,
        loss(batch, classes, smoothing),
        grid,
    )
}

/// `confusion_accumulate`: one invocation per sample.
pub(crate) fn confusion_accumulate(batch: usize, classes: usize) -> Launch<Loss> {
    let grid = Grid::Invocations(batch);
    Launch::new(Kernel::ConfusionAccumulate, loss(batch, classes, 0.0), grid)
}

// ---- optimizer ----------------------------------------------------------------------------

/// `optimizer_step` over `len` parameters, one per invocation.
pub(crate) fn optimizer_step(s: &OptimizerStep, len: usize) -> Launch<Optim> {
    let uniform = Optim {
        len: u(len),
        kind: s.kind.code(),
        nesterov: u32::from(s.nesterov),
        _pad0: 0,
        lr: s.lr,
        weight_decay: s.weight_decay,
        lr_decay: s.lr_decay,
        momentum: s.momentum,
        beta1: s.beta1,
        one_minus_beta1: s.one_minus_beta1,
        beta2: s.beta2,
        one_minus_beta2: s.one_minus_beta2,
        eps: s.eps,
        step_size: s.step_size,
        bias2_sqrt: s.bias2_sqrt,
        _pad1: 0,
    };
    Launch::new(Kernel::OptimizerStep, uniform, Grid::Invocations(len))
}

// ---- accumulation -------------------------------------------------------------------------

/// `scale_add` over the first `len` elements, one per invocation.
pub(crate) fn scale_add(len: usize, alpha: f32, beta: f32) -> Launch<Accum> {
    let uniform = Accum {
        len: u(len),
        _pad: 0,
        alpha,
        beta,
    };
    Launch::new(Kernel::ScaleAdd, uniform, Grid::Invocations(len))
}

// ---- batch normalisation ------------------------------------------------------------------

fn norm(s: &BatchNormShape, bn: &BatchNorm) -> Norm {
    Norm {
        batch: u(s.batch),
        c: u(s.c),
        hw: u(s.hw),
        w_off: u(bn.w_off),
        b_off: u(bn.b_off),
        mean_off: u(bn.mean_off),
        var_off: u(bn.var_off),
        momentum: bn.momentum,
        eps: bn.eps,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    }
}

/// `batchnorm_forward_train`: one workgroup per channel.
pub(crate) fn batchnorm_forward_train(s: &BatchNormShape, bn: &BatchNorm) -> Launch<Norm> {
    let grid = Grid::Workgroups(s.c);
    Launch::new(Kernel::BatchnormForwardTrain, norm(s, bn), grid)
}

/// `batchnorm_forward_eval`: one invocation per element.
pub(crate) fn batchnorm_forward_eval(s: &BatchNormShape, bn: &BatchNorm) -> Launch<Norm> {
    let grid = Grid::Invocations(s.len());
    Launch::new(Kernel::BatchnormForwardEval, norm(s, bn), grid)
}

/// `batchnorm_backward`: one workgroup per channel.
pub(crate) fn batchnorm_backward(s: &BatchNormShape, bn: &BatchNorm) -> Launch<Norm> {
    let grid = Grid::Workgroups(s.c);
    Launch::new(Kernel::BatchnormBackward, norm(s, bn), grid)
}

// ---- dropout ------------------------------------------------------------------------------

fn drop(d: &Dropout, len: usize) -> Drop {
    Drop {
        len: u(len),
        threshold: d.threshold(),
        scale: d.scale(),
        layer: d.layer,
        step_lo: d.step as u32,
        step_hi: (d.step >> 32) as u32,
        seed_lo: d.seed as u32,
        seed_hi: (d.seed >> 32) as u32,
    }
}

/// `dropout_forward` over the first `len` elements, one per invocation.
pub(crate) fn dropout_forward(d: &Dropout, len: usize) -> Launch<Drop> {
    let grid = Grid::Invocations(len);
    Launch::new(Kernel::DropoutForward, drop(d, len), grid)
}

/// `dropout_backward` over the first `len` elements, one per invocation.
pub(crate) fn dropout_backward(d: &Dropout, len: usize) -> Launch<Drop> {
    let grid = Grid::Invocations(len);
    Launch::new(Kernel::DropoutBackward, drop(d, len), grid)
}

// ---- global average pooling ---------------------------------------------------------------

fn gap(s: &GlobalAvgPoolShape) -> Gap {
    Gap {
        batch: u(s.batch),
        c: u(s.c),
        hw: u(s.hw),
        _pad: 0,
    }
}

/// `globalavgpool_forward`: one invocation per output element.
pub(crate) fn globalavgpool_forward(s: &GlobalAvgPoolShape) -> Launch<Gap> {
    let grid = Grid::Invocations(s.output_len());
    Launch::new(Kernel::GlobalavgpoolForward, gap(s), grid)
}

/// `globalavgpool_backward`: one invocation per input element.
pub(crate) fn globalavgpool_backward(s: &GlobalAvgPoolShape) -> Launch<Gap> {
    let grid = Grid::Invocations(s.input_len());
    Launch::new(Kernel::GlobalavgpoolBackward, gap(s), grid)
}

#[cfg(test)]
mod tests {
    use super::super::kernels;
    use super::*;

    fn conv(batch: usize, in_c: usize, side: usize, out_c: usize) -> Conv2dShape {
        Conv2dShape {
            batch,
            in_c,
            in_h: side,
            in_w: side,
            out_c,
            k: 3,
            pad: 0,
        }
    }

    #[test]
    fn split_k_chunks_cover_the_reduction_exactly_once() {
        for s in [
            conv(32, 1, 48, 128),
            conv(32, 128, 23, 128),
            conv(3, 5, 9, 4),
        ] {
            let w = conv2d_backward_weight(&s, 0, 0);
            let u = &w.uniform;
            let (splits, chunk) = (u.splits as usize, u.chunk as usize);
            let total = s.batch * s.out_h() * s.out_w();
            assert!(splits >= 1 && chunk >= 1);
            assert!(splits * chunk >= total, "chunks miss part of {total}");
            assert!((splits - 1) * chunk < total, "an empty split");
            assert_eq!(
                u.n_tiles as usize,
                (u.tiles_m * u.tiles_n) as usize * splits
            );
            assert_eq!(w.grid, Grid::Workgroups(u.n_tiles as usize));
            // One split writes the gradients directly; more write (splits, out_c, patch + 1).
            let partials = if splits == 1 {
                0
            } else {
                splits * s.out_c * (s.patch_len() + 1)
            };
            assert_eq!(split_k_partials_len(u), partials);
            let reduce = conv2d_backward_weight_reduce(&w);
            assert_eq!(
                reduce.uniform, w.uniform,
                "the reduction reads the same shape"
            );
            assert_eq!(
                reduce.grid,
                Grid::Invocations(s.out_c * (s.patch_len() + 1))
            );
        }
        // A tiny layer needs no split: its gradients are written directly.
        let w = conv2d_backward_weight(&conv(1, 1, 4, 1), 0, 0);
        assert_eq!(w.uniform.splits, 1);
        assert_eq!(split_k_partials_len(&w.uniform), 0);
    }

    #[test]
    fn dense_launches_count_tiles_of_the_product() {
        let s = DenseShape {
            batch: 3,
            in_f: 70,
            out_f: 33,
        };
        // forward: 3×33 output → 1×2 tiles; backward weight: 33×71 → 2×3 tiles.
        let tiles = |l: Launch<Mm>| (l.uniform.n_tiles, l.grid);
        assert_eq!(tiles(dense_forward(&s, 0, 0)), (2, Grid::Workgroups(2)));
        assert_eq!(
            tiles(dense_backward_weight(&s, 0, 0)),
            (6, Grid::Workgroups(6))
        );
        assert_eq!(tiles(dense_backward_input(&s, 0)), (3, Grid::Workgroups(3)));
    }

    /// The value of the WGSL `const name: u32` of `module`, if it is a plain literal.
    fn const_u32(module: &naga::Module, name: &str) -> Option<u32> {
        let (_, c) = module
            .constants
            .iter()
            .find(|(_, c)| c.name.as_deref() == Some(name))?;
        match module.global_expressions[c.init] {
            naga::Expression::Literal(naga::Literal::U32(v)) => Some(v),
            _ => None,
        }
    }

    #[test]
    fn the_gemm_tile_is_the_shaders_tile() {
        for file in ["conv2d.wgsl", "dense.wgsl"] {
            let module = kernels::parse(file);
            assert_eq!(
                const_u32(&module, "TILE"),
                Some(TILE as u32),
                "{file}: TILE"
            );
        }
        // One invocation per 4×4 block of a tile: (TILE/4)² invocations per workgroup.
        for k in [
            Kernel::Conv2dForward,
            Kernel::Conv2dBackwardInput,
            Kernel::Conv2dBackwardWeight,
            Kernel::DenseForward,
            Kernel::DenseBackwardInput,
            Kernel::DenseBackwardWeight,
        ] {
            let module = kernels::parse(k.spec().file);
            let wg = kernels::workgroup_size(&module, k.spec().entry);
            assert_eq!(wg as usize, (TILE / 4) * (TILE / 4), "{}", k.spec().entry);
        }
    }

    #[test]
    fn grids_count_workgroups_of_the_shaders_size() {
        assert_eq!(Grid::Invocations(257).workgroups(256), 2);
        assert_eq!(Grid::Invocations(256).workgroups(256), 1);
        assert_eq!(Grid::Workgroups(5).workgroups(64), 5);
    }
}
