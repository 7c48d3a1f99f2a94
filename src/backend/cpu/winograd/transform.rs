//! The Winograd transforms, 16 tiles (or channels) at a time as the lanes of fixed-size
//! arrays, and the moves between image rows and tile-major buffers around them.
//!
//! Every function here is `#[inline(always)]` and called from the per-group functions of
//! [`super`], which [`multiversion!`] compiles once per instruction set: there the lane
//! arrays become 512-bit (AVX-512) or 256-bit (AVX2) vector registers.
//!
//! Tile-major buffers keep one element of every tile's window side by side:
//! `win (α², tp)`, element `(i, j)` of tile `t`'s window at `win[(i·α + j)·tp + t]`, so a
//! transform reads and writes whole vectors. [`gather_windows`] fills one from an image's
//! rows (each window row is a run of `α` consecutive pixels, the next tile's starts `m`
//! later) and [`scatter_tiles`] writes `m × m` output tiles back into rows.

use super::super::microkernel::Isa;
use super::rows::{join_row, split_row, Epilogue};
use super::Grid;

/// Lanes: tiles (or channels) transformed together.
pub const L: usize = 16;

/// The transform matrices of one tile size: `α × α` input, `α × 3` filter, `m × α` output.
/// They define what [`Transforms`]' written-out formulas compute; only the tests read them.
#[cfg_attr(not(test), allow(dead_code))]
pub struct Mats<const A: usize, const M: usize> {
    /// `Bᵀ`: `V = Bᵀ·d·B`.
    pub bt: [[f32; A]; A],
    /// `G`: `U = G·w·Gᵀ`.
    pub g: [[f32; 3]; A],
    /// `Aᵀ`: `y = Aᵀ·M·A`.
    pub at: [[f32; A]; M],
    /// `A` (`Aᵀ` transposed): the output gradient's transform `A·dy·Aᵀ`.
    pub a: [[f32; M]; A],
    /// `Gᵀ` (`G` transposed): the weight gradient's `Gᵀ·M·G`.
    pub gt: [[f32; A]; 3],
}

/// F(2×2, 3×3), interpolation points 0, ±1 (Lavin & Gray's matrices).
#[cfg_attr(not(test), allow(dead_code))]
pub const F2: Mats<4, 2> = Mats {
    bt: [
        [1.0, 0.0, -1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, -1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0, -1.0],
    ],
    g: [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ],
    at: [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]],
    a: [[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0]],
    gt: [
        [1.0, 0.5, 0.5, 0.0],
        [0.0, 0.5, -0.5, 0.0],
        [0.0, 0.5, 0.5, 1.0],
    ],
};

/// F(3×3, 3×3), interpolation points 0, ±1, 2 (Toom-Cook as in Lavin & Gray's `wincnn`:
/// the normalisation in `G`, so that `Bᵀ` is of integers).
#[cfg_attr(not(test), allow(dead_code))]
pub const F3: Mats<5, 3> = Mats {
    bt: [
        [2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 1.0, 0.0],
        [0.0, 2.0, -3.0, 1.0, 0.0],
        [0.0, -1.0, 0.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0],
    ],
    g: [
        [0.5, 0.0, 0.0],
        [-0.5, -0.5, -0.5],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 6.0, 1.0 / 3.0, 2.0 / 3.0],
        [0.0, 0.0, 1.0],
    ],
    at: [
        [1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 1.0],
    ],
    a: [
        [1.0, 0.0, 0.0],
        [1.0, 1.0, 1.0],
        [1.0, -1.0, 1.0],
        [1.0, 2.0, 4.0],
        [0.0, 0.0, 1.0],
    ],
    gt: [
        [0.5, -0.5, -1.0 / 6.0, 1.0 / 6.0, 0.0],
        [0.0, -0.5, 1.0 / 6.0, 1.0 / 3.0, 0.0],
        [0.0, -0.5, -1.0 / 6.0, 2.0 / 3.0, 1.0],
    ],
};

/// F(4×4, 3×3), interpolation points 0, ±1, ±2 (Lavin & Gray's matrices).
#[cfg_attr(not(test), allow(dead_code))]
pub const F4: Mats<6, 4> = Mats {
    bt: [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ],
    g: [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ],
    at: [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ],
    a: [
        [1.0, 0.0, 0.0, 0.0],
        [1.0, 1.0, 1.0, 1.0],
        [1.0, -1.0, 1.0, -1.0],
        [1.0, 2.0, 4.0, 8.0],
        [1.0, -2.0, 4.0, -8.0],
        [0.0, 0.0, 0.0, 1.0],
    ],
    gt: [
        [
            1.0 / 4.0,
            -1.0 / 6.0,
            -1.0 / 6.0,
            1.0 / 24.0,
            1.0 / 24.0,
            0.0,
        ],
        [0.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 12.0, -1.0 / 12.0, 0.0],
        [0.0, -1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0, 1.0],
    ],
};

/// The tile of `α × α` inputs and `m × m` outputs, as a type.
pub struct Tiles<const A: usize, const M: usize>;

/// The five 1-D transforms of a tile, written out term by term on lane vectors (a loop over
/// [`Mats`]' coefficients is too deep for the compiler to unroll, and would then test every
/// coefficient for zero at run time); the tests check each against its matrix.
pub trait Transforms<const A: usize, const M: usize> {
    /// The matrices the formulas implement.
    #[cfg_attr(not(test), allow(dead_code))]
    const MATS: Mats<A, M>;
    /// `Bᵀ·x`: input.
    fn bt(x: &[V; A]) -> [V; A];
    /// `Aᵀ·x`: output.
    fn at(x: &[V; A]) -> [V; M];
    /// `A·x`: output gradient.
    fn a(x: &[V; M]) -> [V; A];
    /// `G·x`: filter.
    fn g(x: &[V; 3]) -> [V; A];
    /// `Gᵀ·x`: weight gradient.
    fn gt(x: &[V; A]) -> [V; 3];
}

impl Transforms<4, 2> for Tiles<4, 2> {
    const MATS: Mats<4, 2> = F2;

    #[inline(always)]
    fn bt(d: &[V; 4]) -> [V; 4] {
        [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
    }

    #[inline(always)]
    fn at(m: &[V; 4]) -> [V; 2] {
        [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
    }

    #[inline(always)]
    fn a(d: &[V; 2]) -> [V; 4] {
        [d[0], d[0] + d[1], d[0] - d[1], -d[1]]
    }

    #[inline(always)]
    fn g(w: &[V; 3]) -> [V; 4] {
        let (sum, alt) = ((w[0] + w[2]) * 0.5, w[1] * 0.5);
        [w[0], sum + alt, sum - alt, w[2]]
    }

    #[inline(always)]
    fn gt(m: &[V; 4]) -> [V; 3] {
        let (sum, diff) = ((m[1] + m[2]) * 0.5, (m[1] - m[2]) * 0.5);
        [m[0] + sum, diff, sum + m[3]]
    }
}

impl Transforms<5, 3> for Tiles<5, 3> {
    const MATS: Mats<5, 3> = F3;

    #[inline(always)]
    fn bt(d: &[V; 5]) -> [V; 5] {
        let p = d[3] - d[1];
        let q = d[3] - d[2];
        [
            (d[0] - d[2]) * 2.0 + p,
            q - d[1] * 2.0,
            q + (d[1] - d[2]) * 2.0,
            p,
            (d[4] - d[2]) - p * 2.0,
        ]
    }

    #[inline(always)]
    fn at(m: &[V; 5]) -> [V; 3] {
        let (sum, diff) = (m[1] + m[2], m[1] - m[2]);
        [
            m[0] + sum + m[3],
            diff + m[3] * 2.0,
            sum + m[3] * 4.0 + m[4],
        ]
    }

    #[inline(always)]
    fn a(d: &[V; 3]) -> [V; 5] {
        let even = d[0] + d[2];
        [
            d[0],
            even + d[1],
            even - d[1],
            d[0] + d[1] * 2.0 + d[2] * 4.0,
            d[2],
        ]
    }

    #[inline(always)]
    fn g(w: &[V; 3]) -> [V; 5] {
        let sum = w[0] + w[2];
        [
            w[0] * 0.5,
            (sum + w[1]) * -0.5,
            (sum - w[1]) * (-1.0 / 6.0),
            (w[0] + w[1] * 2.0 + w[2] * 4.0) * (1.0 / 6.0),
            w[2],
        ]
    }

    #[inline(always)]
    fn gt(m: &[V; 5]) -> [V; 3] {
        let half = m[1] * 0.5;
        let (sixth2, sixth3) = (m[2] * (1.0 / 6.0), m[3] * (1.0 / 6.0));
        [
            m[0] * 0.5 - half - sixth2 + sixth3,
            sixth2 - half + m[3] * (1.0 / 3.0),
            m[3] * (2.0 / 3.0) - half - sixth2 + m[4],
        ]
    }
}

impl Transforms<6, 4> for Tiles<6, 4> {
    const MATS: Mats<6, 4> = F4;

    #[inline(always)]
    fn bt(d: &[V; 6]) -> [V; 6] {
        let even = d[4] - d[2] * 4.0;
        let odd = d[3] - d[1] * 4.0;
        let even2 = d[4] - d[2];
        let odd2 = (d[3] - d[1]) * 2.0;
        [
            d[0] * 4.0 - d[2] * 5.0 + d[4],
            even + odd,
            even - odd,
            even2 + odd2,
            even2 - odd2,
            d[1] * 4.0 - d[3] * 5.0 + d[5],
        ]
    }

    #[inline(always)]
    fn at(m: &[V; 6]) -> [V; 4] {
        let (sum12, diff12) = (m[1] + m[2], m[1] - m[2]);
        let (sum34, diff34) = (m[3] + m[4], m[3] - m[4]);
        [
            m[0] + sum12 + sum34,
            diff12 + diff34 * 2.0,
            sum12 + sum34 * 4.0,
            diff12 + diff34 * 8.0 + m[5],
        ]
    }

    #[inline(always)]
    fn a(d: &[V; 4]) -> [V; 6] {
        let (even1, odd1) = (d[0] + d[2], d[1] + d[3]);
        let (even2, odd2) = (d[0] + d[2] * 4.0, d[1] * 2.0 + d[3] * 8.0);
        [
            d[0],
            even1 + odd1,
            even1 - odd1,
            even2 + odd2,
            even2 - odd2,
            d[3],
        ]
    }

    #[inline(always)]
    fn g(w: &[V; 3]) -> [V; 6] {
        let (sum, alt) = (w[0] + w[2], w[1]);
        let (sum2, alt2) = (
            w[0] * (1.0 / 24.0) + w[2] * (1.0 / 6.0),
            w[1] * (1.0 / 12.0),
        );
        [
            w[0] * 0.25,
            (sum + alt) * (-1.0 / 6.0),
            (sum - alt) * (-1.0 / 6.0),
            sum2 + alt2,
            sum2 - alt2,
            w[2],
        ]
    }

    #[inline(always)]
    fn gt(m: &[V; 6]) -> [V; 3] {
        let (sum12, diff12) = (m[1] + m[2], m[2] - m[1]);
        let (sum34, diff34) = (m[3] + m[4], m[3] - m[4]);
        [
            m[0] * 0.25 - sum12 * (1.0 / 6.0) + sum34 * (1.0 / 24.0),
            diff12 * (1.0 / 6.0) + diff34 * (1.0 / 12.0),
            (sum34 - sum12) * (1.0 / 6.0) + m[5],
        ]
    }
}

/// 16 lanes of `f32`, with lane-wise `+`, `−`, negation and scaling (each a loop over the
/// lanes, which the compiler turns into one vector instruction).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct V(pub [f32; L]);

macro_rules! lanewise {
    ($tr:ident, $f:ident, $op:tt) => {
        impl std::ops::$tr for V {
            type Output = V;
            #[inline(always)]
            fn $f(mut self, rhs: V) -> V {
                for l in 0..L {
                    self.0[l] $op rhs.0[l];
                }
                self
            }
        }
    };
}
lanewise!(Add, add, +=);
lanewise!(Sub, sub, -=);

impl std::ops::Mul<f32> for V {
    type Output = V;
    #[inline(always)]
    fn mul(mut self, k: f32) -> V {
        for l in 0..L {
            self.0[l] *= k;
        }
        self
    }
}

impl std::ops::Neg for V {
    type Output = V;
    #[inline(always)]
    fn neg(mut self) -> V {
        for l in 0..L {
            self.0[l] = -self.0[l];
        }
        self
    }
}

/// The 16 lanes at `src[at..]`.
#[inline(always)]
pub fn load(src: &[f32], at: usize) -> V {
    V(src[at..at + L].try_into().expect("16 lanes"))
}

/// Stores `v` at `dst[at..]`.
#[inline(always)]
pub fn store(dst: &mut [f32], at: usize, v: &V) {
    dst[at..at + L].copy_from_slice(&v.0);
}

/// The 2-D transform `F·d·Fᵀ` of an `N × N` matrix of lane vectors, where `$f` applies the
/// 1-D `F (P × N)`: element `(r, s)` of `d` is `$load` (with `r`, `s` bound), and each of
/// the `P × P` results `v` (with `i`, `j` bound) goes to `$store`. A macro, not a function
/// taking closures: the compiler does not always inline closures this large, and a call per
/// element, with vectors passed through memory, costs more than the arithmetic.
macro_rules! two_d {
    ($f:path, $n:expr, $p:expr, |$r:ident, $s:ident| $load:expr, |$i:ident, $j:ident, $v:ident| $store:expr) => {{
        // t (P × N) = F·d, column by column; then each row of t times Fᵀ.
        let mut t = [[V::default(); $n]; $p];
        let mut col = [V::default(); $n];
        for $s in 0..$n {
            for $r in 0..$n {
                col[$r] = $load;
            }
            let c = $f(&col);
            for k in 0..$p {
                t[k][$s] = c[k];
            }
        }
        for $i in 0..$p {
            let row = $f(&t[$i]);
            for $j in 0..$p {
                let $v = &row[$j];
                $store;
            }
        }
    }};
}
pub(crate) use two_d;

/// Fills `win (W², tp)` with the `W × W` windows, every `S` pixels, of the `tiles` tiles of
/// one channel: tile `t` is tile `t mod th·tw` of image `t / (th·tw)`, whose plane `(h, w)`
/// is `plane(img)`, padded by `pad` zeros before and as many as needed after. Lanes
/// `tiles..tp` are not written.
#[inline(always)]
pub fn gather_windows<'a, const W: usize, const S: usize>(
    isa: Isa,
    win: &mut [f32],
    tp: usize,
    plane: impl Fn(usize) -> &'a [f32],
    (h, w, pad): (usize, usize, usize),
    (th, tw): (usize, usize),
    tiles: usize,
) {
    for img in 0..tiles / (th * tw) {
        let src = plane(img);
        for ty in 0..th {
            let first = (img * th + ty) * tw;
            for i in 0..W {
                // Padded row ty·S + i is image row ty·S + i − pad, or padding.
                let row = match (ty * S + i).checked_sub(pad) {
                    Some(y) if y < h => &src[y * w..(y + 1) * w],
                    _ => &[],
                };
                split_row::<W, S>(isa, &mut win[i * W * tp + first..], tp, (row, pad), tw);
            }
        }
    }
}

/// Zeroes lanes `tiles..tp` of every row of `win (rows, tp)`, which [`gather_windows`] does
/// not write.
#[inline(always)]
pub fn zero_tail(win: &mut [f32], rows: usize, tp: usize, tiles: usize) {
    if tiles < tp {
        for r in 0..rows {
            win[r * tp + tiles..(r + 1) * tp].fill(0.0);
        }
    }
}

/// Writes `y (M², tp)` (element `(i, j)` of tile `t` at `y[(i·M + j)·tp + t]`) into the
/// output planes: tile `t` of image `t / tiles_per_image` covers rows `ty·M..`, columns
/// `tx·M..` of `plane(img) (oh, ow)`, clipped to it; each value `v` is written as `e(v)`.
#[inline(always)]
pub fn scatter_tiles<'a, const M: usize>(
    isa: Isa,
    y: &[f32],
    tp: usize,
    mut plane: impl FnMut(usize) -> &'a mut [f32],
    g: &Grid,
    tiles: usize,
    e: Epilogue,
) {
    for img in 0..tiles / g.tiles() {
        let dst = plane(img);
        for ty in 0..g.th {
            let first = (img * g.th + ty) * g.tw;
            for i in 0..M.min(g.oh - ty * M) {
                let row = &mut dst[(ty * M + i) * g.ow..(ty * M + i + 1) * g.ow];
                join_row::<M>(isa, row, &y[i * M * tp + first..], tp, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lane vectors `x[k]` with distinct, irregular values.
    fn lanes<const N: usize>(seed: usize) -> [V; N] {
        std::array::from_fn(|k| {
            V(std::array::from_fn(|l| {
                ((seed + 7 * k + 3 * l) % 11) as f32 - 5.0
            }))
        })
    }

    /// `mat (P × N) · x`, lane by lane, in f64.
    fn product<const N: usize, const P: usize>(mat: &[[f32; N]; P], x: &[V; N]) -> [[f64; L]; P] {
        std::array::from_fn(|i| {
            std::array::from_fn(|l| (0..N).map(|k| mat[i][k] as f64 * x[k].0[l] as f64).sum())
        })
    }

    /// `got` equals `want` up to f32 rounding of a few terms.
    fn check<const P: usize>(what: &str, got: [V; P], want: [[f64; L]; P]) {
        for (g, w) in got.iter().zip(&want) {
            for (&g, &w) in g.0.iter().zip(w) {
                assert!(
                    (g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{what}: {g} vs {w}"
                );
            }
        }
    }

    /// The transposed `(P × N)` of `(N × P)`.
    fn transpose<const N: usize, const P: usize>(m: &[[f32; P]; N]) -> [[f32; N]; P] {
        std::array::from_fn(|i| std::array::from_fn(|j| m[j][i]))
    }

    fn formulas_match_matrices<const A: usize, const M: usize>()
    where
        Tiles<A, M>: Transforms<A, M>,
    {
        let m = Tiles::<A, M>::MATS;
        assert_eq!(m.a, transpose(&m.at), "A is Aᵀ transposed");
        assert_eq!(m.gt, transpose(&m.g), "Gᵀ is G transposed");
        check(
            "Bᵀ",
            Tiles::<A, M>::bt(&lanes(1)),
            product(&m.bt, &lanes(1)),
        );
        check(
            "Aᵀ",
            Tiles::<A, M>::at(&lanes(2)),
            product(&m.at, &lanes(2)),
        );
        check("A", Tiles::<A, M>::a(&lanes(3)), product(&m.a, &lanes(3)));
        check("G", Tiles::<A, M>::g(&lanes(4)), product(&m.g, &lanes(4)));
        check(
            "Gᵀ",
            Tiles::<A, M>::gt(&lanes(5)),
            product(&m.gt, &lanes(5)),
        );
    }

    #[test]
    fn the_written_out_formulas_are_the_matrices() {
        formulas_match_matrices::<4, 2>();
        formulas_match_matrices::<5, 3>();
        formulas_match_matrices::<6, 4>();
    }

    /// 1-D Winograd on a 3-tap filter: `Aᵀ·((G·w) ⊙ (Bᵀ·d))` is the valid correlation of `d`
    /// with `w`, exactly for small integers (the matrices' fractions are exact in f32 sums
    /// of this size up to rounding of 1/6 and 1/12, hence the tolerance).
    fn minimal_filtering<const A: usize, const M: usize>()
    where
        Tiles<A, M>: Transforms<A, M>,
    {
        let d: [V; A] = lanes(6);
        let w: [V; 3] = lanes(7);
        let (u, v) = (Tiles::<A, M>::g(&w), Tiles::<A, M>::bt(&d));
        let prod: [V; A] =
            std::array::from_fn(|k| V(std::array::from_fn(|l| u[k].0[l] * v[k].0[l])));
        let y = Tiles::<A, M>::at(&prod);
        let want: [[f64; L]; M] = std::array::from_fn(|i| {
            std::array::from_fn(|l| {
                (0..3)
                    .map(|j| d[i + j].0[l] as f64 * w[j].0[l] as f64)
                    .sum()
            })
        });
        check("F(m, 3)", y, want);
    }

    #[test]
    fn each_tile_computes_the_correlation_it_stands_for() {
        minimal_filtering::<4, 2>();
        minimal_filtering::<5, 3>();
        minimal_filtering::<6, 4>();
    }
}
