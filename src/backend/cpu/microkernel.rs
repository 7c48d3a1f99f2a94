//! The register-blocked matrix products behind the Winograd convolutions' batched products.
//!
//! A Winograd convolution spends its multiplications in many small products of shape
//! `(out_c × in_c) · (in_c × tiles)`, with `in_c` as small as 32. The `gemm` crate packs
//! both operands on every call, which at these sizes costs as much as the product (measured
//! on a 2-core AVX-512 machine: 70–98 GFLOP/s for it against 120–150 GFLOP/s for this
//! kernel on one core, shapes 32×32·32×4608 to 512×512·512×128). Here the callers lay the
//! operands out the way the kernel reads them, so nothing is packed:
//!
//! `c (m, n) = a_t (k, m)ᵀ · b (k, n)`, or `c += …`, every matrix row-major with its own row
//! stride. One register block is `MR` rows of `c` by 32 (or 16) columns: per step of `k` it
//! loads two (one) vectors of `b`, broadcasts `MR` consecutive values of `a_t` and issues
//! `2·MR` (`MR`) fused multiply-adds into accumulators that stay in registers for all of
//! `k`. Callers pad `m` to a multiple of [`MR`] and `n` to a multiple of [`NR_TAIL`] (zeros
//! in the padding), so there are no edge cases.
//!
//! The instruction set is chosen once, when the backend starts ([`Isa::detect`]): AVX-512
//! intrinsics where the CPU has them; elsewhere the same blocking in portable Rust, compiled
//! for AVX2 + FMA when the CPU has those (LLVM vectorises the fixed-size accumulator
//! arrays), else for the baseline target.

/// Rows of `c` per register block.
pub const MR: usize = 8;
/// Columns of `c` per register block (two 16-lane vectors).
pub const NR: usize = 32;
/// The narrower block that finishes a row whose length is an odd multiple of 16.
pub const NR_TAIL: usize = 16;

/// The instruction set the kernels run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX-512F and VL (and FMA): explicit 512-bit intrinsics.
    Avx512,
    /// x86-64 with AVX2 and FMA: portable code compiled for them.
    Avx2,
    /// Anything else: portable code for the baseline target (on aarch64 NEON is baseline).
    Portable,
}

impl Isa {
    /// The best instruction set this CPU has.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Its name, for profiles.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }
}

/// A row-major matrix view with a row stride (`ld ≥ cols`).
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    /// The elements; row `r` starts at `r·ld`.
    pub data: &'a [f32],
    /// Row stride.
    pub ld: usize,
}

/// `c (m, n) = a_t (k, m)ᵀ · b (k, n)`, or `c += a_t ᵀ·b` when `accumulate`; `c` has row
/// stride `ldc`. Needs `m % MR == 0` and `n % NR_TAIL == 0`; panics when a matrix does not
/// fit its slice.
#[allow(clippy::too_many_arguments)]
pub fn gemm_tn(
    isa: Isa,
    c: &mut [f32],
    ldc: usize,
    a_t: Strided<'_>,
    b: Strided<'_>,
    mnk: (usize, usize, usize),
    accumulate: bool,
) {
    gemm::<false>(isa, c, ldc, a_t, b, mnk, accumulate)
}

/// `c (m, n) = a (m, k) · b (k, n)`, or `c += a·b` when `accumulate`: [`gemm_tn`] with its
/// left operand read by rows (each register block broadcasts one value from each of `MR`
/// rows of `a` per step of `k`). Same padding and checks.
#[allow(clippy::too_many_arguments)]
pub fn gemm_nn(
    isa: Isa,
    c: &mut [f32],
    ldc: usize,
    a: Strided<'_>,
    b: Strided<'_>,
    mnk: (usize, usize, usize),
    accumulate: bool,
) {
    gemm::<true>(isa, c, ldc, a, b, mnk, accumulate)
}

/// [`gemm_tn`] (`NN` false: `a` is `(k, m)`) or [`gemm_nn`] (`NN` true: `a` is `(m, k)`).
#[allow(clippy::too_many_arguments)]
fn gemm<const NN: bool>(
    isa: Isa,
    c: &mut [f32],
    ldc: usize,
    a: Strided<'_>,
    b: Strided<'_>,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
) {
    assert!(m % MR == 0 && n % NR_TAIL == 0, "({m}, {n}) not padded");
    let a_cols = if NN { k } else { m };
    assert!(
        a.ld >= a_cols && b.ld >= n && ldc >= n,
        "row strides too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n, "c does not fit ({m}, {n})");
    if k == 0 {
        if !accumulate {
            for row in c.chunks_mut(ldc).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    let a_rows = if NN { m } else { k };
    assert!(
        a.data.len() >= (a_rows - 1) * a.ld + a_cols,
        "a does not fit"
    );
    assert!(b.data.len() >= (k - 1) * b.ld + n, "b does not fit");
    let (a_, b_, c_) = (a.data.as_ptr(), b.data.as_ptr(), c.as_mut_ptr());
    let dims = Dims {
        k,
        lda: a.ld,
        ldb: b.ld,
        ldc,
        accumulate,
    };
    // Where row i of c starts in a.
    let a_row = |i: usize| if NN { i * a.ld } else { i };
    // SAFETY: every block reads rows < k of b (columns < n) and of a_t (columns < m), or
    // rows < m of a (columns < k), and writes rows < m, columns < n of c, all checked
    // against the slices above; c is a unique borrow and cannot alias the shared a and b.
    // The target-feature functions run only when `Isa::detect` found their features.
    unsafe {
        for j in (0..n - n % NR).step_by(NR) {
            for i in (0..m).step_by(MR) {
                let at = (a_.add(a_row(i)), b_.add(j), c_.add(i * ldc + j));
                block::<2, NN>(isa, at, &dims);
            }
        }
        if n % NR != 0 {
            let j = n - NR_TAIL;
            for i in (0..m).step_by(MR) {
                let at = (a_.add(a_row(i)), b_.add(j), c_.add(i * ldc + j));
                block::<1, NN>(isa, at, &dims);
            }
        }
    }
}

/// What every register block shares.
struct Dims {
    k: usize,
    lda: usize,
    ldb: usize,
    ldc: usize,
    accumulate: bool,
}

/// One `MR × 16·V` block at `(a, b, c)` on `isa`.
///
/// # Safety
/// The block's reads and writes must lie inside the operands, and `isa`'s features present.
#[inline(always)]
unsafe fn block<const V: usize, const NN: bool>(
    isa: Isa,
    at: (*const f32, *const f32, *mut f32),
    d: &Dims,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::block::<V, NN>(at, d),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => portable_avx2::<V, NN>(at, d),
        _ => portable::<V, NN, false>(at, d),
    }
}

/// Element `(r, p)` of the block's left operand: `a_t[p][r]`, or `a[r][p]` when `NN`.
///
/// # Safety
/// The element must lie inside the operand.
#[inline(always)]
unsafe fn a_at<const NN: bool>(a: *const f32, lda: usize, r: usize, p: usize) -> f32 {
    if NN {
        *a.add(r * lda + p)
    } else {
        *a.add(p * lda + r)
    }
}

/// The portable block compiled for AVX2 + FMA.
///
/// # Safety
/// As [`block`]; the CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn portable_avx2<const V: usize, const NN: bool>(
    at: (*const f32, *const f32, *mut f32),
    d: &Dims,
) {
    portable::<V, NN, true>(at, d)
}

/// The block in portable Rust: `MR × 16·V` accumulators in an array, fused multiply-adds
/// when `FMA` (only where the target has them: elsewhere `mul_add` is a library call).
///
/// # Safety
/// As [`block`].
#[inline(always)]
unsafe fn portable<const V: usize, const NN: bool, const FMA: bool>(
    (a, b, c): (*const f32, *const f32, *mut f32),
    d: &Dims,
) {
    let mut acc = [[[0f32; NR_TAIL]; V]; MR];
    for p in 0..d.k {
        let brow = b.add(p * d.ldb);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let av = a_at::<NN>(a, d.lda, r, p);
            for (v, acc_v) in acc_r.iter_mut().enumerate() {
                for (l, x) in acc_v.iter_mut().enumerate() {
                    let bv = *brow.add(v * NR_TAIL + l);
                    *x = if FMA {
                        av.mul_add(bv, *x)
                    } else {
                        *x + av * bv
                    };
                }
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let crow = c.add(r * d.ldc);
        for (v, acc_v) in acc_r.iter().enumerate() {
            for (l, &x) in acc_v.iter().enumerate() {
                let dst = crow.add(v * NR_TAIL + l);
                *dst = if d.accumulate { *dst + x } else { x };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{a_at, Dims, MR};
    use std::arch::x86_64::*;

    /// One `MR × 16·V` block with AVX-512 intrinsics: `MR·V` accumulator registers.
    ///
    /// # Safety
    /// As [`super::block`]; the CPU must have AVX-512F.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn block<const V: usize, const NN: bool>(
        (a, b, c): (*const f32, *const f32, *mut f32),
        d: &Dims,
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; MR];
        for p in 0..d.k {
            let brow = b.add(p * d.ldb);
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(brow.add(16 * v));
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(a_at::<NN>(a, d.lda, r, p));
                for (x, &bv) in acc_r.iter_mut().zip(&bv) {
                    *x = _mm512_fmadd_ps(av, bv, *x);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            let crow = c.add(r * d.ldc);
            for (v, &x) in acc_r.iter().enumerate() {
                let dst = crow.add(16 * v);
                let x = if d.accumulate {
                    _mm512_add_ps(_mm512_loadu_ps(dst), x)
                } else {
                    x
                };
                _mm512_storeu_ps(dst, x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a_t (k, m)ᵀ · b (k, n)` in f64 loops.
    fn reference(a_t: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| a_t[p * m + i] as f64 * b[p * n + j] as f64)
                    .sum();
            }
        }
        c
    }

    /// Every instruction set this machine has, plus the baseline.
    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        if Isa::detect() != Isa::Portable {
            v.push(Isa::Avx2);
        }
        if Isa::detect() == Isa::Avx512 {
            v.push(Isa::Avx512);
        }
        v
    }

    #[test]
    fn every_isa_matches_loops_with_tails_strides_and_accumulation() {
        // n = 48: one 32-wide block and a 16-wide tail; strides wider than the rows.
        let (m, n, k) = (16, 48, 37);
        let a_t: Vec<f32> = (0..k * (m + 3))
            .map(|i| ((i * 7) % 11) as f32 - 5.0)
            .collect();
        let b: Vec<f32> = (0..k * (n + 5))
            .map(|i| ((i * 5) % 13) as f32 - 6.0)
            .collect();
        let a_dense: Vec<f32> = (0..k)
            .flat_map(|p| a_t[p * (m + 3)..p * (m + 3) + m].to_vec())
            .collect();
        let b_dense: Vec<f32> = (0..k)
            .flat_map(|p| b[p * (n + 5)..p * (n + 5) + n].to_vec())
            .collect();
        let want = reference(&a_dense, &b_dense, m, n, k);
        for isa in isas() {
            let ldc = n + 2;
            let mut c = vec![1.0f32; m * ldc];
            let a = Strided {
                data: &a_t,
                ld: m + 3,
            };
            let bb = Strided {
                data: &b,
                ld: n + 5,
            };
            gemm_tn(isa, &mut c, ldc, a, bb, (m, n, k), false);
            for i in 0..m {
                for j in 0..n {
                    assert_eq!(c[i * ldc + j] as f64, want[i * n + j], "{isa:?} ({i}, {j})");
                }
                // The padding between rows is not touched.
                assert_eq!(c[i * ldc + n], 1.0, "{isa:?}");
            }
            gemm_tn(isa, &mut c, ldc, a, bb, (m, n, k), true);
            assert_eq!(c[ldc + 3] as f64, 2.0 * want[n + 3], "{isa:?}");
        }
    }

    #[test]
    fn gemm_nn_reads_its_left_operand_by_rows() {
        let (m, n, k) = (24, 48, 19);
        let lda = k + 2;
        // a (m, k) with row stride lda; a_dense_t (k, m) the same values for the reference.
        let a: Vec<f32> = (0..m * lda).map(|i| ((i * 3) % 17) as f32 - 8.0).collect();
        let a_dense_t: Vec<f32> = (0..k * m).map(|x| a[(x % m) * lda + x / m]).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
        let want = reference(&a_dense_t, &b, m, n, k);
        for isa in isas() {
            let mut c = vec![1.0f32; m * n];
            let (av, bv) = (Strided { data: &a, ld: lda }, Strided { data: &b, ld: n });
            gemm_nn(isa, &mut c, n, av, bv, (m, n, k), false);
            let got: Vec<f64> = c.iter().map(|&x| x as f64).collect();
            assert_eq!(got, want, "{isa:?}");
            gemm_nn(isa, &mut c, n, av, bv, (m, n, k), true);
            assert_eq!(c[n + 5] as f64, 2.0 * want[n + 5], "{isa:?}");
        }
    }

    #[test]
    #[should_panic(expected = "not padded")]
    fn unpadded_shapes_panic() {
        gemm_tn(
            Isa::Portable,
            &mut [0.0; 64],
            8,
            Strided {
                data: &[0.0; 8],
                ld: 7,
            },
            Strided {
                data: &[0.0; 8],
                ld: 8,
            },
            (7, 8, 1),
            false,
        );
    }
}
