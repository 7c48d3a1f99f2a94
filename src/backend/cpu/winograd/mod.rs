//! Winograd convolution F(m×m, 3×3) for the 3×3 stride-1 convolutions: forward, input
//! gradient and weight gradient (Lavin & Gray 2016).
//!
//! The output is cut into `m × m` tiles. Each tile needs an `α × α` window of the input
//! (`α = m + 2`); in the transformed domain the 3×3 convolution of that window is an
//! element-wise product, and summing over input channels makes it `α²` independent matrix
//! products, one per element `ξ` of the `α × α` tile:
//!
//! ```text
//! V[ξ][c][t] = (Bᵀ·d_{c,t}·B)[ξ]          input transform   (α², in_c, tiles)
//! U[ξ][c][o] = (G·w_{o,c}·Gᵀ)[ξ]          filter transform  (α², in_c, out_c)
//! M[ξ]       = U[ξ]ᵀ · V[ξ]               α² products       (α², out_c, tiles)
//! y_{o,t}    = Aᵀ·M[·][o][t]·A (+ bias)   output transform  (m × m per tile)
//! ```
//!
//! A tile of `m × m` outputs costs `α²` multiplications per channel pair instead of `9·m²`:
//! 2.25× fewer for F(2×2, 3×3), 3.24× for F(3×3, 3×3), 4× for F(4×4, 3×3). The input
//! gradient is the same convolution of the output gradient with the filter turned by 180°
//! and its channels swapped, padded by `2 − pad`. The weight gradient is the adjoint: for
//! every tile, `dw_{o,c} += Gᵀ·((A·dy_{o,t}·Aᵀ) ⊙ (Bᵀ·d_{c,t}·B))·G`, and since `G` does not
//! depend on the tile, the `α²` element-wise products are summed over tiles first, which is
//! again `α²` matrix products `Ŷ[ξ] (out_c, tiles) · X̂[ξ]ᵀ (tiles, in_c)`, then
//! transformed once.
//!
//! The transforms, the batched products ([`super::microkernel`]) and the inverse transforms
//! are separate steps over per-worker scratch buffers. Each worker takes a contiguous run of
//! images and works through it a group of images at a time, a group being about
//! [`GROUP_TILES`] tiles, so that its transformed tiles stay in the core's cache between the
//! steps. The transforms ([`transform`]) run 16 tiles (or 16 channels) at a time as the
//! lanes of fixed-size arrays, which the compiler turns into vector instructions; each
//! per-group function is compiled once per instruction set ([`multiversion!`]). With
//! AVX-512, F(4×4)'s 6 × 6 transforms run in explicit intrinsics instead ([`avx512`]): the
//! lane arrays' code spilled there in a way that stalled; F(3×3) runs channels innermost
//! only, where its 5 × 5 transforms need no intrinsics. The filter transform is shared by
//! the workers, each transforming a run of input channels; evaluation keeps it from one
//! batch to the next ([`memo`]).
//!
//! Rounding: the transforms' coefficients (up to 8 in F(4×4)'s `Aᵀ`, 1/24 in its `G`) make
//! the result differ from the direct sum by more than the direct sum's own rounding; the
//! measured error is in `docs/RESULTS.md` and the parity tests (`tests/cpu_winograd.rs`)
//! bound it.

#[cfg(target_arch = "x86_64")]
mod avx512;
mod memo;
mod rows;
mod transform;

use super::activation::{act_lanes, watch_image, BadImages, Fused};
use super::microkernel::{gemm_nn, gemm_tn, Isa, Strided, MR, NR_TAIL};
use super::{scratch, Scratch, Workers};
use crate::shape::Conv2dShape;
pub use memo::FilterMemo;
use memo::MemoKey;
use rayon::prelude::*;
use rows::transpose;
use rows::Epilogue;
use std::ops::Range;
use transform::{
    gather_windows, load, scatter_tiles, store, two_d, zero_tail, Tiles, Transforms, L, V,
};

/// Tiles per group of images a worker transforms, multiplies and transforms back before the
/// next (at least one image).
pub const GROUP_TILES: usize = 128;

/// Defines `fn $name<const A, const M>(isa, args…)`, which runs `$body` compiled for
/// `isa`: for AVX-512 or AVX2 + FMA through a `#[target_feature]` copy (the transforms'
/// lane arrays become 512- or 256-bit vectors), else for the baseline target.
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident<A, M>($($p:ident: $t:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        fn $name<const A: usize, const M: usize>(isa: Isa, $($p: $t),*)
        where
            Tiles<A, M>: Transforms<A, M>,
        {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<const A: usize, const M: usize>($($p: $t),*)
            where
                Tiles<A, M>: Transforms<A, M>,
            $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512<const A: usize, const M: usize>($($p: $t),*)
            where
                Tiles<A, M>: Transforms<A, M>,
            {
                body::<A, M>($($p),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2<const A: usize, const M: usize>($($p: $t),*)
            where
                Tiles<A, M>: Transforms<A, M>,
            {
                body::<A, M>($($p),*)
            }
            match isa {
                // SAFETY: `Isa::detect` found these features on this CPU.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { avx512::<A, M>($($p),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { avx2::<A, M>($($p),*) },
                _ => body::<A, M>($($p),*),
            }
        }
    };
}

/// A Winograd tile size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tile {
    /// F(2×2, 3×3): 4×4 input tiles, 2.25× fewer multiplications, transforms of 0 and ±1.
    F2,
    /// F(3×3, 3×3): 5×5 input tiles, 3.24× fewer multiplications, coefficients up to 4.
    F3,
    /// F(4×4, 3×3): 6×6 input tiles, 4× fewer multiplications, coefficients up to 8.
    F4,
}

impl Tile {
    /// Outputs per tile side, `m`.
    pub fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F3 => 3,
            Tile::F4 => 4,
        }
    }

    /// Input tile side, `α = m + 2`.
    pub fn alpha(self) -> usize {
        self.m() + 2
    }

    /// Its name in profiles.
    pub fn name(self) -> &'static str {
        match self {
            Tile::F2 => "winograd F(2x2,3x3)",
            Tile::F3 => "winograd F(3x3,3x3)",
            Tile::F4 => "winograd F(4x4,3x3)",
        }
    }

    /// Multiplications per output channel pair to cover an `oh × ow` output with this tile
    /// (the partial tiles at the edges counted whole).
    fn cost(self, oh: usize, ow: usize) -> usize {
        oh.div_ceil(self.m()) * ow.div_ceil(self.m()) * self.alpha() * self.alpha()
    }

    /// The tile for an `oh × ow` output: of F(2×2) and F(4×4) the one with fewer
    /// multiplications (F(2×2) on a tie: it rounds less), unless F(3×3) needs at least a
    /// fifth fewer than it. F(3×3)'s transforms are portable lane arrays, dearer per
    /// multiplication than F(4×4)'s AVX-512 ones: on a 21×21 output, where it needs 5% fewer,
    /// it measured 6% slower; on 6×6 (31% fewer) 10–20% faster (`examples/conv_bench.rs`,
    /// docs/RESULTS.md).
    pub fn for_output(oh: usize, ow: usize) -> Tile {
        let best = if Tile::F4.cost(oh, ow) < Tile::F2.cost(oh, ow) {
            Tile::F4
        } else {
            Tile::F2
        };
        if 5 * Tile::F3.cost(oh, ow) <= 4 * best.cost(oh, ow) {
            Tile::F3
        } else {
            best
        }
    }
}

/// Where a convolution's tiles lie: its `oh × ow` output in `th × tw` tiles of `m × m` (the
/// last row and column of tiles may reach past the output; their extra outputs are
/// dropped, and the inputs they read past the image are zero).
#[derive(Clone, Copy, Debug)]
pub struct Grid {
    /// Output rows.
    pub oh: usize,
    /// Output columns.
    pub ow: usize,
    /// Tile rows.
    pub th: usize,
    /// Tile columns.
    pub tw: usize,
}

impl Grid {
    fn new(tile: Tile, s: &Conv2dShape) -> Grid {
        let (m, oh, ow) = (tile.m(), s.out_h(), s.out_w());
        Grid {
            oh,
            ow,
            th: oh.div_ceil(m),
            tw: ow.div_ceil(m),
        }
    }

    /// Tiles per image.
    pub fn tiles(&self) -> usize {
        self.th * self.tw
    }

    /// Images per group of about [`GROUP_TILES`] tiles (at least one, at most `images`).
    fn group_images(&self, images: usize) -> usize {
        (GROUP_TILES / self.tiles()).clamp(1, images.max(1))
    }
}

/// `n` rounded up to a multiple of `to`.
fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

multiversion! {
    /// The filter transform of a forward convolution (`flip`: false) of `weight (out_c,
    /// in_c, 3, 3)`, or of its input gradient (`flip`: true: the filter turned by 180° with
    /// `in_c` and `out_c` swapped), for the computed convolution's input channels `chans`
    /// (of `ci`; `co` output channels, `co_pad` padded): `rows[ξ] (chans, co_pad)` is that
    /// part of `u[ξ]`, where `u (α², ci, co_pad)`; padded columns are zeroed. Lanes over 16
    /// output channels.
    fn filter_transform<A, M>(
        rows: &mut [&mut [f32]],
        weight: &[f32],
        chans: Range<usize>,
        dims: (usize, usize, usize),
        flip: bool,
    ) {
        let (ci, co, co_pad) = dims;
        let mut taps = [V::default(); 9];
        for c in chans.clone() {
            let row = (c - chans.start) * co_pad;
            for r in rows.iter_mut() {
                r[row + co..row + co_pad].fill(0.0);
            }
            for o0 in (0..co).step_by(L) {
                for (l, o) in (o0..co.min(o0 + L)).enumerate() {
                    for (k, tap) in taps.iter_mut().enumerate() {
                        tap.0[l] = if flip {
                            weight[(c * co + o) * 9 + 8 - k]
                        } else {
                            weight[(o * ci + c) * 9 + k]
                        };
                    }
                }
                let lanes = L.min(co - o0);
                // Whole vectors by a fixed-size copy (a copy of a run-time number of values
                // is a call to `memcpy` per element).
                two_d!(Tiles::<A, M>::g, 3, A, |i, j| taps[i * 3 + j], |i, j, v| {
                    let at = row + o0;
                    if lanes == L {
                        store(rows[i * A + j], at, v)
                    } else {
                        rows[i * A + j][at..at + lanes].copy_from_slice(&v.0[..lanes])
                    }
                });
            }
        }
    }
}

/// [`filter_transform`] into `u (α², ci, co_pad)` on every worker, each taking a run of
/// input channels (its rows of every `u[ξ]`).
fn filter_transform_parallel<const A: usize, const M: usize>(
    w: &Workers,
    isa: Isa,
    u: &mut [f32],
    weight: &[f32],
    dims: (usize, usize, usize),
    flip: bool,
) where
    Tiles<A, M>: Transforms<A, M>,
{
    let (ci, _, co_pad) = dims;
    let per = ci.div_ceil(w.threads.min(ci).max(1)).max(1);
    let parts = ci.div_ceil(per);
    // parts[p][ξ]: rows p·per.. of u[ξ].
    let mut parts: Vec<Vec<&mut [f32]>> = (0..parts).map(|_| Vec::with_capacity(A * A)).collect();
    for mut rest in u.chunks_mut(ci * co_pad) {
        for part in parts.iter_mut() {
            let n = (per * co_pad).min(rest.len());
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(n);
            part.push(head);
            rest = tail;
        }
    }
    w.pool.install(|| {
        parts.into_par_iter().enumerate().for_each(|(p, mut rows)| {
            let chans = p * per..((p + 1) * per).min(ci);
            filter_transform::<A, M>(isa, &mut rows, weight, chans, dims, flip);
        });
    });
}

multiversion! {
    /// One group's input transform: `v (α², ci, tp)` from the group's images `input (n, ci,
    /// h, w)` (`dims`: `ci`, `h`, `w`, the padding, and the group's tiles), one channel at a
    /// time through the tile-major buffer `win (α², tp)`.
    fn input_transform<A, M>(
        isa: Isa,
        v: &mut [f32],
        win: &mut [f32],
        input: &[f32],
        g: &Grid,
        dims: (usize, usize, usize, usize, usize),
    ) {
        let (ci, h, w, pad, tiles) = dims;
        let tp = round_up(tiles, L);
        zero_tail(win, A * A, tp, tiles);
        for ch in 0..ci {
            let planes = |img: usize| &input[(img * ci + ch) * h * w..][..h * w];
            gather_windows::<A, M>(isa, win, tp, planes, (h, w, pad), (g.th, g.tw), tiles);
            #[cfg(target_arch = "x86_64")]
            if A == 6 && isa == Isa::Avx512 {
                assert!(win.len() >= 36 * tp && v.len() >= 36 * ci * tp, "buffers too short");
                for t0 in (0..tp).step_by(L) {
                    // SAFETY: AVX-512F is present (`isa`); vector (r, s) at `(r·6 + s)·tp + t0`
                    // of `win` and (i, j) at `((i·6 + j)·ci + ch)·tp + t0` of `v` lie inside
                    // them (assert above, `t0 + 16 ≤ tp`, `ch < ci`).
                    unsafe {
                        let dst = v.as_mut_ptr().add(ch * tp + t0);
                        avx512::input_f4(win.as_ptr().add(t0), tp, dst, ci * tp)
                    };
                }
                continue;
            }
            for t0 in (0..tp).step_by(L) {
                two_d!(
                    Tiles::<A, M>::bt,
                    A,
                    A,
                    |r, s| load(win, (r * A + s) * tp + t0),
                    |i, j, x| store(v, ((i * A + j) * ci + ch) * tp + t0, x)
                );
            }
        }
    }
}

multiversion! {
    /// One group's output transform: for every output channel, `act(Aᵀ·m·A + bias)` of
    /// every tile through the tile-major buffer `y (m², tp)`, written into `out (n, co, oh,
    /// ow)`; `m (α², co_pad, tp)`.
    fn output_transform<A, M>(
        isa: Isa,
        out: &mut [f32],
        y: &mut [f32],
        m: &[f32],
        g: &Grid,
        dims: (usize, usize, usize),
        epilogue: (Option<&[f32]>, Option<Fused>),
    ) {
        let (co, co_pad, tiles) = dims;
        let tp = round_up(tiles, L);
        let plane = g.oh * g.ow;
        #[cfg(target_arch = "x86_64")]
        let fast = A == 6 && isa == Isa::Avx512;
        #[cfg(not(target_arch = "x86_64"))]
        let fast = false;
        if fast {
            assert!(m.len() >= 36 * co_pad * tp && y.len() >= 16 * tp && co <= co_pad);
        }
        for o in 0..co {
            if fast {
                #[cfg(target_arch = "x86_64")]
                for t0 in (0..tp).step_by(L) {
                    // SAFETY: AVX-512F is present (`isa`); vector (r, s) at `((r·6 + s)·co_pad
                    // + o)·tp + t0` of `m` and (i, j) at `(i·4 + j)·tp + t0` of `y` lie inside
                    // them (assert above, `t0 + 16 ≤ tp`, `o < co`).
                    unsafe {
                        let src = m.as_ptr().add(o * tp + t0);
                        avx512::output_f4(src, co_pad * tp, y.as_mut_ptr().add(t0), tp)
                    };
                }
            } else {
                for t0 in (0..tp).step_by(L) {
                    two_d!(
                        Tiles::<A, M>::at,
                        A,
                        M,
                        |r, s| load(m, ((r * A + s) * co_pad + o) * tp + t0),
                        |i, j, x| store(y, (i * M + j) * tp + t0, x)
                    );
                }
            }
            let b = epilogue.0.map_or(0.0, |b| b[o]);
            let mut rest = &mut out[..];
            let planes = |img: usize| {
                let skip = if img == 0 { o * plane } else { (co - 1) * plane };
                let (_, tail) = std::mem::take(&mut rest).split_at_mut(skip);
                let (head, tail) = tail.split_at_mut(plane);
                rest = tail;
                head
            };
            let e = Epilogue { bias: b, act: epilogue.1 };
            scatter_tiles::<M>(isa, y, tp, planes, g, tiles, e);
        }
    }
}

/// The buffers and shape of one Winograd convolution as [`run_conv`] sees it: `s` is the
/// convolution actually computed (for an input gradient, the flipped one).
struct ConvJob<'a> {
    s: Conv2dShape,
    tile: Tile,
    isa: Isa,
    bias: Option<&'a [f32]>,
    act: Option<Fused>,
    /// Where a watched forward marks the images whose output is not all finite.
    bad: BadImages<'a>,
    /// Whether `out` is the 2×2 max pool of the convolution's output (which is then only
    /// ever in scratch, a group at a time).
    pool: bool,
}

/// `out (batch, out_c, out_h, out_w) = act(conv(input) + bias)` for a 3×3 stride-1 `s`
/// with filter `weight (out_c, in_c, 3, 3)`, by `tile`; the images whose output is not all
/// finite marked in `bad`, each group's while it is in cache. With `pool`, `out (batch,
/// out_c, out_h / 2, out_w / 2)` is its 2×2 max pool instead, each group pooled in scratch
/// (after the watch has seen it whole).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward(
    w: &Workers,
    isa: Isa,
    tile: Tile,
    out: &mut [f32],
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    (act, bad): (Option<Fused>, BadImages<'_>),
    pool: bool,
    s: &Conv2dShape,
) {
    let job = ConvJob {
        s: *s,
        tile,
        isa,
        bias: Some(bias),
        act,
        bad,
        pool,
    };
    run_conv(w, &job, out, input, weight, false);
}

/// `d_input (batch, in_c, in_h, in_w)` of a 3×3 stride-1 `s`: the convolution of
/// `d_out (batch, out_c, out_h, out_w)` with the filter turned by 180° and its channels
/// swapped, padded by `2 − pad`, by `tile`.
pub fn conv2d_backward_input(
    w: &Workers,
    isa: Isa,
    tile: Tile,
    d_input: &mut [f32],
    d_out: &[f32],
    weight: &[f32],
    s: &Conv2dShape,
) {
    let flipped = Conv2dShape {
        batch: s.batch,
        in_c: s.out_c,
        in_h: s.out_h(),
        in_w: s.out_w(),
        out_c: s.in_c,
        k: 3,
        pad: 2 - s.pad,
    };
    let job = ConvJob {
        s: flipped,
        tile,
        isa,
        bias: None,
        act: None,
        bad: None,
        pool: false,
    };
    run_conv(w, &job, d_input, d_out, weight, true);
}

/// The Winograd convolution of `job.s` (filter `weight`, turned and transposed when `flip`).
fn run_conv(
    w: &Workers,
    job: &ConvJob<'_>,
    out: &mut [f32],
    input: &[f32],
    weight: &[f32],
    flip: bool,
) {
    match job.tile {
        Tile::F2 => run_conv_with::<4, 2>(w, job, out, input, weight, flip),
        Tile::F3 => run_conv_with::<5, 3>(w, job, out, input, weight, flip),
        Tile::F4 => run_conv_with::<6, 4>(w, job, out, input, weight, flip),
    }
}

fn run_conv_with<const A: usize, const M: usize>(
    w: &Workers,
    job: &ConvJob<'_>,
    out: &mut [f32],
    input: &[f32],
    weight: &[f32],
    flip: bool,
) where
    Tiles<A, M>: Transforms<A, M>,
{
    let s = &job.s;
    assert_eq!(s.k, 3, "Winograd F(m×m, 3×3) needs a 3×3 kernel");
    let g = Grid::new(job.tile, s);
    let (ci, co) = (s.in_c, s.out_c);
    let co_pad = round_up(co, MR.max(NR_TAIL));
    let (dims, len) = ((ci, co, co_pad), A * A * ci * co_pad);
    let fill = |u: &mut [f32]| filter_transform_parallel::<A, M>(w, job.isa, u, weight, dims, flip);
    let (mut u_buf, mut memo) = (w.shared.lock().unwrap(), w.memo.lock().unwrap());
    // u (α², in_c, out_c padded). A watched forward is evaluation's: its weights are the
    // same every batch, so their transform is memoised (exactly: see `memo`).
    let u: &[f32] = if job.bad.is_some() {
        let key = MemoKey {
            alpha: A,
            ci,
            co,
            flip,
        };
        memo.get_or_fill(key, weight, len, fill)
    } else {
        let u = scratch(&mut u_buf, len);
        fill(u);
        u
    };
    let out_img = if job.pool {
        co * (g.oh / 2) * (g.ow / 2)
    } else {
        co * g.oh * g.ow
    };
    w.per_image(out, out_img, s.batch, |images, out, scr, _| {
        let first = images.start;
        let per_group = g.group_images(images.len());
        for g0 in images.clone().step_by(per_group) {
            let n = per_group.min(images.end - g0);
            let dst = &mut out[(g0 - first) * out_img..(g0 - first + n) * out_img];
            forward_group::<A, M>(job, &g, u, co_pad, (g0, n), input, dst, scr);
        }
    });
}

/// Whether a Winograd forward (or input gradient) runs channels innermost
/// ([`forward_minor`]) rather than tiles innermost ([`forward_major`]). The first reads its
/// input more cheaply and writes its output more dearly (an extra transposition), so it is
/// faster where the input has more channels than the output, and with F(2×2)'s small tiles
/// (measured per layer with `examples/conv_bench.rs`, docs/RESULTS.md). F(3×3) always runs
/// channels innermost: its 5 × 5 transforms have no intrinsics for the tiles-innermost path.
fn channels_innermost(tile: Tile, s: &Conv2dShape) -> bool {
    tile != Tile::F4 || s.in_c > s.out_c
}

/// One group of `n` images from image `g0`: transform, `α²` products, transform back into
/// `dst (n, co, oh, ow)`, each image's output watched while it is in cache.
#[allow(clippy::too_many_arguments)]
fn forward_group<const A: usize, const M: usize>(
    job: &ConvJob<'_>,
    g: &Grid,
    u: &[f32],
    co_pad: usize,
    (g0, n): (usize, usize),
    input: &[f32],
    dst: &mut [f32],
    scr: &mut Scratch,
) where
    Tiles<A, M>: Transforms<A, M>,
{
    let isa = job.isa;
    // A pooled forward pools in the channel-minor layout (then transposes a quarter).
    if job.pool || channels_innermost(job.tile, &job.s) {
        forward_minor::<A, M>(isa, isa, job, g, u, co_pad, (g0, n), input, dst, scr);
    } else {
        forward_major::<A, M>(job, g, u, co_pad, (g0, n), input, dst, scr);
    }
}

/// [`forward_group`] with tiles innermost: each input channel's windows gathered
/// tile-major and transformed 16 tiles per vector into `v (α², ci, tp)`, the `α²` products
/// `m[ξ] (co_pad, tp) = u[ξ]ᵀ·v[ξ]` ([`gemm_tn`]), then per output channel the inverse
/// transform of 16 tiles per vector scattered into the image rows.
#[allow(clippy::too_many_arguments)]
fn forward_major<const A: usize, const M: usize>(
    job: &ConvJob<'_>,
    g: &Grid,
    u: &[f32],
    co_pad: usize,
    (g0, n): (usize, usize),
    input: &[f32],
    dst: &mut [f32],
    scr: &mut Scratch,
) where
    Tiles<A, M>: Transforms<A, M>,
{
    let s = &job.s;
    let (ci, co) = (s.in_c, s.out_c);
    let tiles = n * g.tiles();
    let tp = round_up(tiles, L);
    let in_img = ci * s.in_h * s.in_w;
    let images = &input[g0 * in_img..(g0 + n) * in_img]; // (n, in_c, in_h, in_w)
    let win = scratch(&mut scr.win, A * A * tp); // (α², tiles padded)
    let v = scratch(&mut scr.cols, A * A * ci * tp); // (α², in_c, tiles padded)
    let dims = (ci, s.in_h, s.in_w, s.pad, tiles);
    input_transform::<A, M>(job.isa, job.isa, v, win, images, g, dims);
    let m = scratch(&mut scr.group, A * A * co_pad * tp); // (α², out_c padded, tiles padded)
    for xi in 0..A * A {
        let a_t = Strided {
            data: &u[xi * ci * co_pad..(xi + 1) * ci * co_pad],
            ld: co_pad,
        };
        let b = Strided {
            data: &v[xi * ci * tp..(xi + 1) * ci * tp],
            ld: tp,
        };
        let c = &mut m[xi * co_pad * tp..(xi + 1) * co_pad * tp];
        gemm_tn(job.isa, c, tp, a_t, b, (co_pad, tp, ci), false);
    }
    let epilogue = (job.bias, job.act);
    let dims = (co, co_pad, tiles);
    output_transform::<A, M>(job.isa, job.isa, dst, win, m, g, dims, epilogue);
    for (k, img) in dst.chunks_exact(co * g.oh * g.ow).enumerate() {
        watch_image(job.bad, g0 + k, img);
    }
}

multiversion! {
    /// [`forward_group`] with channels innermost: the group's input windows transformed 16
    /// channels per vector into `xt (α², tp, ci_pad)` ([`channel_minor`]), the `α²`
    /// products `mt[ξ] (tp, co_pad) = xt[ξ]·u[ξ]` ([`gemm_nn`]), then per tile and 16
    /// output channels `act(Aᵀ·m·A + bias)` into `yn (n, oh, ow, co_pad)`
    /// ([`output_minor`]), watched, pooled when `job.pool`, transposed into `dst`.
    fn forward_minor<A, M>(
        isa: Isa,
        job: &ConvJob<'_>,
        g: &Grid,
        u: &[f32],
        co_pad: usize,
        group: (usize, usize),
        input: &[f32],
        dst: &mut [f32],
        scr: &mut Scratch,
    ) {
        let (s, (g0, n)) = (&job.s, group);
        let (ci, co) = (s.in_c, s.out_c);
        let ci_pad = round_up(ci, L);
        let tiles = n * g.tiles();
        let tp = round_up(tiles, L);
        let in_img = ci * s.in_h * s.in_w;
        let x = &input[g0 * in_img..(g0 + n) * in_img]; // (n, in_c, in_h, in_w)
        let xt = scratch(&mut scr.cols, A * A * tp * ci_pad); // (α², tiles padded, in_c padded)
        let xn = scratch(&mut scr.block, n * s.in_h * s.in_w * ci_pad); // (n, in_h, in_w, ci_pad)
        let geometry = (ci, s.in_h, s.in_w, s.pad);
        channel_minor::<A, M, true>(isa, xt, xn, x, g, geometry, (n, tiles, ci_pad));
        let mt = scratch(&mut scr.group, A * A * tp * co_pad); // (α², tiles padded, out_c padded)
        for xi in 0..A * A {
            let a = Strided {
                data: &xt[xi * tp * ci_pad..(xi + 1) * tp * ci_pad],
                ld: ci_pad,
            };
            let b = Strided {
                data: &u[xi * ci * co_pad..(xi + 1) * ci * co_pad],
                ld: co_pad,
            };
            let c = &mut mt[xi * tp * co_pad..(xi + 1) * tp * co_pad];
            gemm_nn(isa, c, co_pad, a, b, (tp, co_pad, ci), false);
        }
        let yn = scratch(&mut scr.block, n * g.oh * g.ow * co_pad); // (n, oh, ow, co_pad)
        output_minor::<A, M>(isa, yn, mt, g, (co, co_pad, tiles), (job.bias, job.act));
        // The watch sees the whole output (padded channels hold act(0), finite).
        for (k, img) in yn.chunks_exact(g.oh * g.ow * co_pad).enumerate() {
            watch_image(job.bad, g0 + k, img);
        }
        if !job.pool {
            channel_major(isa, dst, yn, (n, co, co_pad, g.oh * g.ow));
            return;
        }
        // The 2×2 max pool of 16 channels per vector, then a quarter of the transposition.
        let (ph, pw) = (g.oh / 2, g.ow / 2);
        let yp = scratch(&mut scr.cols, n * ph * pw * co_pad); // (n, ph, pw, co_pad), in xt's place
        pool_minor(yp, yn, (n, g.oh, g.ow, co_pad));
        channel_major(isa, dst, yp, (n, co, co_pad, ph * pw));
    }
}

/// `yp (n, h / 2, w / 2, c_pad)`: the 2×2 max pool of `yn (n, h, w, c_pad)` (odd last rows
/// and columns dropped), 16 channels per vector, each lane by the comparisons of
/// `maxpool::maxpool_forward` in its order (a later value must be strictly greater), so the
/// two give the same values.
#[inline(always)]
fn pool_minor(yp: &mut [f32], yn: &[f32], (n, h, w, c_pad): (usize, usize, usize, usize)) {
    let (ph, pw) = (h / 2, w / 2);
    for img in 0..n {
        for py in 0..ph {
            for px in 0..pw {
                let at = |dy: usize, dx: usize| ((img * h + 2 * py + dy) * w + 2 * px + dx) * c_pad;
                let to = ((img * ph + py) * pw + px) * c_pad;
                for c0 in (0..c_pad).step_by(L) {
                    let mut best = load(yn, at(0, 0) + c0);
                    for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                        let v = load(yn, at(dy, dx) + c0);
                        for (b, &x) in best.0.iter_mut().zip(&v.0) {
                            if x > *b {
                                *b = x;
                            }
                        }
                    }
                    store(yp, to + c0, &best);
                }
            }
        }
    }
}

/// The output transform with channels as lanes: for every tile `t` and 16 channels,
/// `act(Aᵀ·m·A + bias)` from `mt (α², tp, co_pad)` into the tile's pixels of `yn (n, oh,
/// ow, co_pad)` (those inside the output). Lanes past `co` get bias 0.
#[inline(always)]
fn output_minor<const A: usize, const M: usize>(
    isa: Isa,
    yn: &mut [f32],
    mt: &[f32],
    g: &Grid,
    (co, co_pad, tiles): (usize, usize, usize),
    (bias, act): (Option<&[f32]>, Option<Fused>),
) where
    Tiles<A, M>: Transforms<A, M>,
{
    let tp = round_up(tiles, L);
    #[cfg(target_arch = "x86_64")]
    let fast = A == 6 && isa == Isa::Avx512;
    #[cfg(not(target_arch = "x86_64"))]
    let fast = {
        let _ = isa;
        false
    };
    if fast {
        assert!(mt.len() >= 36 * tp * co_pad, "products too short");
    }
    let mut tile = [0f32; 16 * L]; // one tile's M × M outputs (M² ≤ 16), 16 channels each
    for c0 in (0..co_pad).step_by(L) {
        let mut b = V::default();
        if let Some(bias) = bias {
            for (l, x) in b.0.iter_mut().enumerate().take(co.saturating_sub(c0)) {
                *x = bias[c0 + l];
            }
        }
        for t in 0..tiles {
            let src = t * co_pad + c0;
            if fast {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F is present (`isa`); vector (r, s) at `(r·6 + s)·tp·co_pad
                // + src` lies inside `mt` (assert above, `t < tp`, `c0 + 16 ≤ co_pad`), and
                // the 16 written inside `tile`.
                unsafe {
                    let dst = tile.as_mut_ptr();
                    avx512::output_f4(mt.as_ptr().add(src), tp * co_pad, dst, L)
                };
            } else {
                two_d!(
                    Tiles::<A, M>::at,
                    A,
                    M,
                    |r, s| load(mt, (r * A + s) * tp * co_pad + src),
                    |i, j, v| store(&mut tile, (i * M + j) * L, v)
                );
            }
            let (img, k) = (t / g.tiles(), t % g.tiles());
            let (y0, x0) = ((k / g.tw) * M, (k % g.tw) * M);
            for i in 0..M.min(g.oh - y0) {
                for j in 0..M.min(g.ow - x0) {
                    let v = finish(load(&tile, (i * M + j) * L), &b, act);
                    let at = ((img * g.oh + y0 + i) * g.ow + x0 + j) * co_pad + c0;
                    store(yn, at, &v);
                }
            }
        }
    }
}

/// `act(v + b)`, lane by lane ([`act_lanes`]).
#[inline(always)]
fn finish(mut v: V, b: &V, act: Option<Fused>) -> V {
    for (x, &bl) in v.0.iter_mut().zip(&b.0) {
        *x += bl;
    }
    act_lanes(&mut v.0, act);
    v
}

/// `dst (n, c, hw)` from `src (n, hw, c_pad)` ([`transpose`] per image).
#[inline(always)]
fn channel_major(
    isa: Isa,
    dst: &mut [f32],
    src: &[f32],
    (n, c, c_pad, hw): (usize, usize, usize, usize),
) {
    for img in 0..n {
        let from = &src[img * hw * c_pad..(img + 1) * hw * c_pad];
        let to = &mut dst[img * c * hw..(img + 1) * c * hw];
        transpose(isa, to, hw, from, c_pad, (hw, c));
    }
}

/// `d_weight (out_c, in_c, 3, 3)` and `d_bias (out_c)` of a 3×3 stride-1 `s`, overwritten:
/// per worker, `Σ_t Ŷ[ξ]·X̂[ξ]ᵀ` over its tiles in the transformed domain, then `Gᵀ·…·G`
/// into the worker's accumulator; the accumulators are added in worker order, so the result
/// does not depend on scheduling.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weight(
    w: &Workers,
    isa: Isa,
    tile: Tile,
    d_weight: &mut [f32],
    d_bias: &mut [f32],
    d_out: &[f32],
    input: &[f32],
    s: &Conv2dShape,
) {
    let workers = match tile {
        Tile::F2 => weight_workers::<4, 2>(w, isa, tile, d_out, input, s),
        Tile::F3 => weight_workers::<5, 3>(w, isa, tile, d_out, input, s),
        Tile::F4 => weight_workers::<6, 4>(w, isa, tile, d_out, input, s),
    };
    w.sum_weight_grads(workers, d_weight, d_bias);
}

/// Each worker's share of [`conv2d_backward_weight`], left in its `acc` scratch as
/// `d_weight (out_c, in_c, 3, 3) ++ d_bias (out_c)`; returns how many workers ran.
fn weight_workers<const A: usize, const M: usize>(
    w: &Workers,
    isa: Isa,
    tile: Tile,
    d_out: &[f32],
    input: &[f32],
    s: &Conv2dShape,
) -> usize
where
    Tiles<A, M>: Transforms<A, M>,
{
    assert_eq!(s.k, 3, "Winograd F(m×m, 3×3) needs a 3×3 kernel");
    let g = Grid::new(tile, s);
    let (ci, co) = (s.in_c, s.out_c);
    let pads = (round_up(ci, L), round_up(co, L));
    let out_img = co * g.oh * g.ow;
    w.per_worker(s.batch, |images, scr, _| {
        let mut sums = std::mem::take(&mut scr.sums);
        let sums_len = A * A * pads.1 * pads.0;
        scratch(&mut sums, sums_len).fill(0.0); // (α², out_c, in_c) padded
        let mut d_bias = vec![0f64; co];
        let per_group = g.group_images(images.len());
        for g0 in images.clone().step_by(per_group) {
            let n = per_group.min(images.end - g0);
            let group = (g0, n);
            weight_group::<A, M>(isa, isa, &g, s, pads, group, (input, d_out), &mut sums, scr);
            let planes = d_out[g0 * out_img..(g0 + n) * out_img].chunks_exact(g.oh * g.ow);
            for (p, plane) in planes.enumerate() {
                // Vectorised, in f64 (a plain `iter().sum()` is one chain of scalar adds:
                // 15% of the weight gradient of a 48×48 layer, measured).
                d_bias[p % co] += super::batchnorm::sum(plane);
            }
        }
        let acc = scratch(&mut scr.acc, s.weight_len() + co);
        let (acc_w, acc_b) = acc.split_at_mut(s.weight_len());
        weight_transform::<A, M>(isa, acc_w, &sums[..sums_len], (ci, co, pads.0, pads.1));
        for (a, &d) in acc_b.iter_mut().zip(&d_bias) {
            *a = d as f32;
        }
        scr.sums = sums;
    })
}

multiversion! {
    /// One group of `n` images from image `g0` of the weight gradient: pad the input and
    /// cut the output gradient to whole tiles, transform both (`X̂ (α², tp, ci_pad)`,
    /// `Ŷ (α², tp, co_pad)`, [`channel_minor`]) and add the `α²` products `Ŷ[ξ]ᵀ·X̂[ξ]`
    /// into `sums (α², co_pad, ci_pad)`.
    fn weight_group<A, M>(
        isa: Isa,
        g: &Grid,
        s: &Conv2dShape,
        pads: (usize, usize),
        group: (usize, usize),
        tensors: (&[f32], &[f32]),
        sums: &mut [f32],
        scr: &mut Scratch,
    ) {
        let ((ci_pad, co_pad), (g0, n), (input, d_out)) = (pads, group, tensors);
        let (ci, co) = (s.in_c, s.out_c);
        let tiles = n * g.tiles();
        let tp = round_up(tiles, L);
        let xt = scratch(&mut scr.cols, A * A * tp * ci_pad); // (α², tiles padded, in_c padded)
        let in_img = ci * s.in_h * s.in_w;
        let x = &input[g0 * in_img..(g0 + n) * in_img]; // (n, in_c, in_h, in_w)
        let xn = scratch(&mut scr.block, n * s.in_h * s.in_w * ci_pad); // (n, in_h, in_w, ci_pad)
        let geometry = (ci, s.in_h, s.in_w, s.pad);
        channel_minor::<A, M, true>(isa, xt, xn, x, g, geometry, (n, tiles, ci_pad));
        let out_img = co * g.oh * g.ow;
        let dy = &d_out[g0 * out_img..(g0 + n) * out_img]; // (n, out_c, oh, ow)
        let yt = scratch(&mut scr.group, A * A * tp * co_pad); // (α², tiles padded, out_c padded)
        let yn = scratch(&mut scr.block, n * g.oh * g.ow * co_pad); // (n, oh, ow, co_pad)
        let geometry = (co, g.oh, g.ow, 0);
        channel_minor::<A, M, false>(isa, yt, yn, dy, g, geometry, (n, tiles, co_pad));
        for xi in 0..A * A {
            let a_t = Strided {
                data: &yt[xi * tp * co_pad..(xi + 1) * tp * co_pad],
                ld: co_pad,
            };
            let b = Strided {
                data: &xt[xi * tp * ci_pad..(xi + 1) * tp * ci_pad],
                ld: ci_pad,
            };
            let c = &mut sums[xi * co_pad * ci_pad..(xi + 1) * co_pad * ci_pad];
            gemm_tn(isa, c, ci_pad, a_t, b, (co_pad, ci_pad, tp), true);
        }
    }
}

/// The weight gradient's operands, tile-major with channels innermost, by way of a
/// channel-minor copy of the group's tensor `x (n, c, h, w)`: `xn (n, h, w, c_pad)`
/// (padded channels zero), then for every tile and 16 channels the window's vectors (16
/// channels each, zero outside the tensor) transformed and stored whole into `dst (α², tp,
/// c_pad)` at `((ξ·tp + t)·c_pad + c0)`; tiles `tiles..tp` are zero. `INPUT`: input windows
/// (`α × α` every `m`, padded by `pad`, `Bᵀ·d·B`), else output-gradient tiles (`m × m`,
/// `A·dy·Aᵀ`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn channel_minor<const A: usize, const M: usize, const INPUT: bool>(
    isa: Isa,
    dst: &mut [f32],
    xn: &mut [f32],
    x: &[f32],
    g: &Grid,
    (c, h, w, pad): (usize, usize, usize, usize),
    (n, tiles, c_pad): (usize, usize, usize),
) where
    Tiles<A, M>: Transforms<A, M>,
{
    let hw = h * w;
    // (c, hw) → (hw, c_pad) per image, the padded channels zero.
    for img in 0..n {
        let src = &x[img * c * hw..(img + 1) * c * hw];
        let out = &mut xn[img * hw * c_pad..(img + 1) * hw * c_pad];
        transpose(isa, out, c_pad, src, hw, (c, hw));
        if c < c_pad {
            for row in out.chunks_exact_mut(c_pad) {
                row[c..].fill(0.0);
            }
        }
    }
    let tp = round_up(tiles, L);
    for xi in 0..A * A {
        dst[(xi * tp + tiles) * c_pad..(xi + 1) * tp * c_pad].fill(0.0);
    }
    let zero = V::default();
    for t in 0..tiles {
        let (img, k) = (t / g.tiles(), t % g.tiles());
        let (y0, x0) = ((k / g.tw) * M, (k % g.tw) * M);
        let base = img * hw;
        // Element (r, s) of the tile's window: its offset in `xn`, or None outside.
        let at = |r: usize, s: usize| -> Option<usize> {
            let y = (y0 + r).checked_sub(pad).filter(|&y| y < h)?;
            let x = (x0 + s).checked_sub(pad).filter(|&x| x < w)?;
            Some((base + y * w + x) * c_pad)
        };
        for c0 in (0..c_pad).step_by(L) {
            let window = |r: usize, s: usize| at(r, s).map_or(zero, |p| load(xn, p + c0));
            let to = |i: usize, j: usize| ((i * A + j) * tp + t) * c_pad + c0;
            if INPUT {
                two_d!(Tiles::<A, M>::bt, A, A, |r, s| window(r, s), |i, j, v| {
                    store(dst, to(i, j), v)
                });
            } else {
                two_d!(
                    Tiles::<A, M>::a,
                    M,
                    A,
                    |r, s| window(r, s),
                    |i, j, v| store(dst, to(i, j), v)
                );
            }
        }
    }
}

multiversion! {
    /// `d_weight[o, c] = Gᵀ·sums[·][o][c]·G` for every channel pair: `sums (α², co_pad,
    /// ci_pad)` in, `d_weight (co, ci, 3, 3)` out.
    fn weight_transform<A, M>(
        d_weight: &mut [f32],
        sums: &[f32],
        dims: (usize, usize, usize, usize),
    ) {
        let (ci, co, ci_pad, co_pad) = dims;
        let mut taps = [V::default(); 9];
        for o in 0..co {
            for c0 in (0..ci).step_by(L) {
                two_d!(
                    Tiles::<A, M>::gt,
                    A,
                    3,
                    |i, j| load(sums, ((i * A + j) * co_pad + o) * ci_pad + c0),
                    |i, j, x| taps[i * 3 + j] = *x
                );
                for l in 0..L.min(ci - c0) {
                    let dst = &mut d_weight[(o * ci + c0 + l) * 9..(o * ci + c0 + l + 1) * 9];
                    for (w, tap) in dst.iter_mut().zip(&taps) {
                        *w = tap.0[l];
                    }
                }
            }
        }
    }
}
