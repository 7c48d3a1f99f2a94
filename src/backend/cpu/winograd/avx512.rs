//! F(4×4, 3×3)'s input and output transforms on 16 tiles at a time in explicit AVX-512
//! registers.
//!
//! The portable lane arrays of [`super::transform`] compile to a mix of 256- and 512-bit
//! operations here, and a 64-byte value stored in two halves then loaded whole cannot be
//! forwarded from the store buffer: the load waits for both stores to reach the cache. In
//! the 6 × 6 transforms, whose 36 intermediate vectors do not fit the 32 registers, that
//! stall was most of their time. Written with intrinsics, every spill is one 512-bit store
//! and load. Same formulas as `Tiles<6, 4>`; the tests compare the two.

use std::arch::x86_64::*;

#[inline(always)]
unsafe fn k(x: f32) -> __m512 {
    _mm512_set1_ps(x)
}

/// `F·d·Fᵀ` of 16 tiles for the 1-D `f: F (P × N)`: element `(r, s)` of `d` at
/// `src + (r·N + s)·ld`, element `(i, j)` of the result to `dst + (i·P + j)·dst_ld`.
// `i` picks element `i` of every column, which no iterator over `cols` says more plainly.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn two_d<const N: usize, const P: usize>(
    f: impl Fn([__m512; N]) -> [__m512; P],
    (src, ld): (*const f32, usize),
    (dst, dst_ld): (*mut f32, usize),
) {
    // Column s of F·d, for every s; then row i of that times Fᵀ.
    let cols: [[__m512; P]; N] = std::array::from_fn(|s| {
        f(std::array::from_fn(|r| {
            _mm512_loadu_ps(src.add((r * N + s) * ld))
        }))
    });
    for i in 0..P {
        let row = f(std::array::from_fn(|s| cols[s][i]));
        for (j, x) in row.into_iter().enumerate() {
            _mm512_storeu_ps(dst.add((i * P + j) * dst_ld), x);
        }
    }
}

/// `Bᵀ·d` of F(4×4): `Tiles::<6, 4>::bt`.
#[inline(always)]
unsafe fn bt(d: [__m512; 6]) -> [__m512; 6] {
    let even = _mm512_fnmadd_ps(d[2], k(4.0), d[4]);
    let odd = _mm512_fnmadd_ps(d[1], k(4.0), d[3]);
    let even2 = _mm512_sub_ps(d[4], d[2]);
    let odd2 = _mm512_mul_ps(_mm512_sub_ps(d[3], d[1]), k(2.0));
    [
        _mm512_fnmadd_ps(d[2], k(5.0), _mm512_fmadd_ps(d[0], k(4.0), d[4])),
        _mm512_add_ps(even, odd),
        _mm512_sub_ps(even, odd),
        _mm512_add_ps(even2, odd2),
        _mm512_sub_ps(even2, odd2),
        _mm512_fnmadd_ps(d[3], k(5.0), _mm512_fmadd_ps(d[1], k(4.0), d[5])),
    ]
}

/// `Bᵀ·d·B` of 16 tiles: element `(r, s)` of the windows at `src + (r·6 + s)·ld`, element
/// `(i, j)` of the result to `dst + (i·6 + j)·dst_ld`, 16 lanes each.
///
/// # Safety
/// The CPU has AVX-512F; the 36 vectors read and written lie inside their buffers.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn input_f4(src: *const f32, ld: usize, dst: *mut f32, dst_ld: usize) {
    // SAFETY: the caller's.
    two_d::<6, 6>(|x| unsafe { bt(x) }, (src, ld), (dst, dst_ld))
}

/// `Aᵀ·m` of F(4×4): `Tiles::<6, 4>::at`.
#[inline(always)]
unsafe fn at(m: [__m512; 6]) -> [__m512; 4] {
    let (sum12, diff12) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
    let (sum34, diff34) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
    [
        _mm512_add_ps(_mm512_add_ps(m[0], sum12), sum34),
        _mm512_fmadd_ps(diff34, k(2.0), diff12),
        _mm512_fmadd_ps(sum34, k(4.0), sum12),
        _mm512_add_ps(_mm512_fmadd_ps(diff34, k(8.0), diff12), m[5]),
    ]
}

/// `Aᵀ·m·A` of 16 tiles: element `(r, s)` at `src + (r·6 + s)·ld`, element `(i, j)` of the
/// 4 × 4 result to `dst + (i·4 + j)·dst_ld`, 16 lanes each.
///
/// # Safety
/// The CPU has AVX-512F; the 36 vectors read and 16 written lie inside their buffers.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn output_f4(src: *const f32, ld: usize, dst: *mut f32, dst_ld: usize) {
    // SAFETY: the caller's.
    two_d::<6, 4>(|x| unsafe { at(x) }, (src, ld), (dst, dst_ld))
}

#[cfg(test)]
mod tests {
    use super::super::super::microkernel::Isa;
    use super::super::transform::{load, store, two_d, Tiles, Transforms, L, V};

    /// Distinct, irregular values.
    fn data(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 + seed * 11) % 101) as f32 / 7.0 - 7.0)
            .collect()
    }

    /// `got` equals `want` up to the rounding of a few fused multiply-adds, relative to
    /// the largest magnitude (values that cancel to near zero keep their terms' rounding).
    fn close(what: &str, got: &[f32], want: &[f32]) {
        let scale = want.iter().fold(1f32, |m, w| m.max(w.abs()));
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-6 * scale, "{what} [{k}]: {g} vs {w}");
        }
    }

    /// Each intrinsic 2-D transform against the portable formulas through `two_d!`, with
    /// row strides wider than 16 lanes.
    #[test]
    fn the_intrinsic_transforms_are_the_portable_ones() {
        if Isa::detect() != Isa::Avx512 {
            return;
        }
        type T = Tiles<6, 4>;
        let (ld, out_ld) = (3 * L, 5 * L);
        let src = data(36 * ld, 1);
        let mut got = vec![0.0; 36 * out_ld];
        let mut want = vec![0.0; 36 * out_ld];
        // SAFETY: AVX-512F is present; 36 vectors at strides `ld` and `out_ld` fit.
        unsafe { super::input_f4(src.as_ptr(), ld, got.as_mut_ptr(), out_ld) };
        two_d!(
            T::bt,
            6,
            6,
            |r, s| load(&src, (r * 6 + s) * ld),
            |i, j, x| store(&mut want, (i * 6 + j) * out_ld, x)
        );
        close("Bᵀ·d·B", &got, &want);
        // SAFETY: as above; 16 vectors written.
        unsafe { super::output_f4(src.as_ptr(), ld, got.as_mut_ptr(), out_ld) };
        two_d!(
            T::at,
            6,
            4,
            |r, s| load(&src, (r * 6 + s) * ld),
            |i, j, x| store(&mut want, (i * 4 + j) * out_ld, x)
        );
        close("Aᵀ·m·A", &got[..16 * out_ld], &want[..16 * out_ld]);
    }
}
