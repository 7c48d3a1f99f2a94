//! Moves between image rows and tile-major runs, the transposition around the transforms.
//!
//! Along a row, tile `tx`'s window starts `m` pixels after tile `tx − 1`'s, so filling the
//! tile-major buffers is a strided read (every `m`-th pixel, `α` times at offsets `0..α`)
//! and emptying them a strided write. The portable loops move one value at a time; with
//! AVX-512 a block of 16 tiles is read as `m` (or `2m`) vectors and sorted with two-source
//! permutes (`vpermt2ps`), several times fewer instructions. Both are exact copies.

use super::super::activation::Fused;
use super::super::microkernel::Isa;
use crate::backend::Activation;

/// What is done to each value on its way out: `act(v + bias)`.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue {
    /// Added first.
    pub bias: f32,
    /// Then applied (`None`: the identity); a watched one leaves values that are not finite
    /// as they are.
    pub act: Option<Fused>,
}

impl Epilogue {
    /// `act(v + bias)` for one value.
    #[inline(always)]
    fn apply(self, v: f32) -> f32 {
        let v = v + self.bias;
        self.act.map_or(v, |a| a.apply(v))
    }
}

/// `dst[j·ld + tx] = x[tx·S + j]` for `j < W`, `tx < tw`, where `x` is the image row `row`
/// preceded by `lead` zeros and followed by as many as needed: the rows of `tw` windows of
/// width `W` every `S` pixels (`S` 2 or 4, `W` from `S` to `S + 2`) that lie on one image
/// row, tile-major, the convolution's zero padding included (an empty `row` is a row of
/// padding). `S` 3 (F(3×3)'s tiles, which run channels innermost) takes the portable loop.
#[inline(always)]
pub fn split_row<const W: usize, const S: usize>(
    isa: Isa,
    dst: &mut [f32],
    ld: usize,
    (row, lead): (&[f32], usize),
    tw: usize,
) {
    const { assert!((S >= 2 && S <= 4) && W >= S && W <= S + 2) };
    if tw == 0 {
        return;
    }
    assert!(
        dst.len() >= (W - 1) * ld + tw,
        "tile-major buffer too short"
    );
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && S != 3 {
        // SAFETY: the CPU has AVX-512F (`Isa::detect`); reads are masked to `row`, writes to
        // `dst[j·ld..j·ld + tw]`, inside `dst` by the assert above.
        unsafe { avx512::split_row::<W, S>(dst.as_mut_ptr(), ld, (row, lead), tw) };
        return;
    }
    let _ = isa;
    let at = |x: usize| match x.checked_sub(lead) {
        Some(k) if k < row.len() => row[k],
        _ => 0.0,
    };
    for tx in 0..tw {
        for j in 0..W {
            dst[j * ld + tx] = at(tx * S + j);
        }
    }
}

/// `row[tx·M + j] = e(src[j·ld + tx])` for `j < M` and every column of `row` (the last
/// tile may be cut off by the row's end): `M × 1` output tiles back into an image row.
/// With AVX-512 for `M` 2 and 4; `M` 3 (F(3×3)'s tiles, which run channels innermost) takes
/// the portable loop.
#[inline(always)]
pub fn join_row<const M: usize>(isa: Isa, row: &mut [f32], src: &[f32], ld: usize, e: Epilogue) {
    let tw = row.len().div_ceil(M);
    if tw == 0 {
        return;
    }
    assert!(
        src.len() >= (M - 1) * ld + tw,
        "tile-major buffer too short"
    );
    let simple = e
        .act
        .is_none_or(|a| matches!(a.act, Activation::Relu | Activation::Linear));
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && simple && M != 3 {
        // SAFETY: the CPU has AVX-512F; reads are masked to `src[j·ld..j·ld + tw]`, writes
        // to `row`. The watched ReLU is its own copy, so that the others' code is as it was
        // (a branch on it inside the loop cost training ~2%, measured).
        if e.act.is_some_and(|a| a.watched) {
            unsafe { avx512::join_row::<M, true>(row, src, ld, e) };
        } else {
            unsafe { avx512::join_row::<M, false>(row, src, ld, e) };
        }
        return;
    }
    let _ = simple;
    let _ = isa;
    for (x, o) in row.iter_mut().enumerate() {
        *o = e.apply(src[(x % M) * ld + x / M]);
    }
}

/// `dst[j·ldd + i] = src[i·lds + j]` for `i < rows`, `j < cols`: 16 × 16 blocks by
/// [`transpose16`] (row blocks of `src` outermost), then the edges one by one.
pub fn transpose(
    isa: Isa,
    dst: &mut [f32],
    ldd: usize,
    src: &[f32],
    lds: usize,
    (rows, cols): (usize, usize),
) {
    let (r16, c16) = (rows / 16 * 16, cols / 16 * 16);
    for i0 in (0..r16).step_by(16) {
        for j0 in (0..c16).step_by(16) {
            transpose16(
                isa,
                &mut dst[j0 * ldd + i0..],
                ldd,
                &src[i0 * lds + j0..],
                lds,
            );
        }
    }
    for i in 0..rows {
        let first = if i < r16 { c16 } else { 0 };
        for j in first..cols {
            dst[j * ldd + i] = src[i * lds + j];
        }
    }
}

/// `dst[j·ldd + i] = src[i·lds + j]` for `i, j < 16`: one 16 × 16 block transposed.
#[inline(always)]
pub fn transpose16(isa: Isa, dst: &mut [f32], ldd: usize, src: &[f32], lds: usize) {
    assert!(
        src.len() >= 15 * lds + 16 && dst.len() >= 15 * ldd + 16,
        "block outside"
    );
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the CPU has AVX-512F; the 16 rows of 16 read and written lie inside the
        // slices (assert above).
        unsafe { avx512::transpose16(dst.as_mut_ptr(), ldd, src.as_ptr(), lds) };
        return;
    }
    let _ = isa;
    for i in 0..16 {
        for j in 0..16 {
            dst[j * ldd + i] = src[i * lds + j];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Epilogue;
    use crate::backend::Activation;
    use std::arch::x86_64::*;

    /// The mask of the first `n` (≤ 16, saturating) lanes.
    #[inline(always)]
    fn first(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// `[j, j + step, j + 2·step, …]` as permute indices.
    #[inline(always)]
    unsafe fn strided(j: i32, step: i32) -> __m512i {
        _mm512_add_epi32(
            _mm512_set1_epi32(j),
            _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(step),
            ),
        )
    }

    /// 16 values `x[at..at + 16]` of the row `x`: `row` after `lead` zeros, zeros past its
    /// end.
    #[inline(always)]
    unsafe fn load((row, lead): (&[f32], usize), at: usize) -> __m512 {
        // Lanes k with lead ≤ at + k < lead + len are inside the row.
        let start = at as isize - lead as isize;
        let lo = (-start).clamp(0, 16) as usize;
        let hi = (row.len() as isize - start).clamp(0, 16) as usize;
        if lo >= hi {
            return _mm512_setzero_ps();
        }
        let mask = first(hi) & !first(lo);
        // Masked-off lanes are not read, so the address may lie before the row's start.
        _mm512_maskz_loadu_ps(mask, row.as_ptr().wrapping_offset(start))
    }

    /// Every `m`-th of `64` (m = 4) or `32` (m = 2) values from `r`, starting at `j`.
    #[inline(always)]
    unsafe fn pick<const M: usize>(r: &[__m512; 4], j: usize) -> __m512 {
        let idx = strided(j as i32, M as i32);
        if M == 4 {
            let lo = _mm512_permutex2var_ps(r[0], idx, r[1]);
            let hi = _mm512_permutex2var_ps(r[2], idx, r[3]);
            _mm512_shuffle_f32x4::<0x44>(lo, hi)
        } else {
            _mm512_permutex2var_ps(r[0], idx, r[1])
        }
    }

    /// See [`super::split_row`].
    // `#[inline]` so that every codegen unit calling it may inline it (`#[inline(always)]`
    // is not allowed with `#[target_feature]`); left to the partitioning, the same source
    // measured 10% slower as a whole step when these stayed calls.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn split_row<const W: usize, const S: usize>(
        dst: *mut f32,
        ld: usize,
        row: (&[f32], usize),
        tw: usize,
    ) {
        let m = S;
        for tx0 in (0..tw).step_by(16) {
            let mask = first(tw - tx0);
            // Offsets 0..m from the block's first pixel, then m..A from m pixels on.
            for (shift, js) in [(0, 0..m), (m, 0..W - m)] {
                if js.is_empty() {
                    continue;
                }
                let at = tx0 * m + shift;
                let r = [
                    load(row, at),
                    load(row, at + 16),
                    load(row, at + 32),
                    load(row, at + 48),
                ];
                for j in js {
                    let v = if m == 4 {
                        pick::<4>(&r, j)
                    } else {
                        pick::<2>(&r, j)
                    };
                    _mm512_mask_storeu_ps(dst.add((shift + j) * ld + tx0), mask, v);
                }
            }
        }
    }

    /// `[a0, b0, a1, b1, …]` from the lower (`HI` false) or upper halves of `a` and `b`.
    #[inline(always)]
    unsafe fn zip<const HI: bool>(a: __m512, b: __m512) -> __m512 {
        let base = if HI { 8 } else { 0 };
        let idx = _mm512_setr_epi32(
            base,
            16 + base,
            base + 1,
            17 + base,
            base + 2,
            18 + base,
            base + 3,
            19 + base,
            base + 4,
            20 + base,
            base + 5,
            21 + base,
            base + 6,
            22 + base,
            base + 7,
            23 + base,
        );
        _mm512_permutex2var_ps(a, idx, b)
    }

    /// Pairs of `a` and pairs of `b` alternately: `[a0, a1, b0, b1, a2, a3, b2, b3, …]`
    /// from the lower (`HI` false) or upper halves.
    #[inline(always)]
    unsafe fn zip_pairs<const HI: bool>(a: __m512, b: __m512) -> __m512 {
        let base = if HI { 8 } else { 0 };
        let idx = _mm512_setr_epi32(
            base,
            base + 1,
            16 + base,
            17 + base,
            base + 2,
            base + 3,
            18 + base,
            19 + base,
            base + 4,
            base + 5,
            20 + base,
            21 + base,
            base + 6,
            base + 7,
            22 + base,
            23 + base,
        );
        _mm512_permutex2var_ps(a, idx, b)
    }

    /// See [`super::join_row`] (identity or relu only; a watched relu keeps the values that
    /// are not finite, found as those whose `v − v` is NaN).
    // `#[inline]` so that every codegen unit calling it may inline it (`#[inline(always)]`
    // is not allowed with `#[target_feature]`); left to the partitioning, the same source
    // measured 10% slower as a whole step when these stayed calls.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn join_row<const M: usize, const WATCHED: bool>(
        row: &mut [f32],
        src: &[f32],
        ld: usize,
        e: Epilogue,
    ) {
        let tw = row.len().div_ceil(M);
        let bias = _mm512_set1_ps(e.bias);
        let relu = e.act.is_some_and(|a| a.act == Activation::Relu);
        for tx0 in (0..tw).step_by(16) {
            let mut y = [_mm512_setzero_ps(); 4];
            for (j, y) in y.iter_mut().enumerate().take(M) {
                let run = &src[j * ld..j * ld + tw];
                let mut v = _mm512_add_ps(load((run, 0), tx0), bias);
                if relu {
                    let r = _mm512_max_ps(v, _mm512_setzero_ps());
                    v = if WATCHED {
                        let d = _mm512_sub_ps(v, v);
                        let not_finite = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(d, d);
                        _mm512_mask_mov_ps(r, not_finite, v)
                    } else {
                        r
                    };
                }
                *y = v;
            }
            let out = if M == 4 {
                let (lo01, hi01) = (zip::<false>(y[0], y[1]), zip::<true>(y[0], y[1]));
                let (lo23, hi23) = (zip::<false>(y[2], y[3]), zip::<true>(y[2], y[3]));
                [
                    zip_pairs::<false>(lo01, lo23),
                    zip_pairs::<true>(lo01, lo23),
                    zip_pairs::<false>(hi01, hi23),
                    zip_pairs::<true>(hi01, hi23),
                ]
            } else {
                let z = _mm512_setzero_ps();
                [zip::<false>(y[0], y[1]), zip::<true>(y[0], y[1]), z, z]
            };
            let base = tx0 * M;
            for (q, v) in out.iter().enumerate().take(M) {
                let at = base + 16 * q;
                let n = row.len().saturating_sub(at);
                if n > 0 {
                    _mm512_mask_storeu_ps(row.as_mut_ptr().add(at), first(n), *v);
                }
            }
        }
    }

    /// See [`super::transpose16`]: unpack pairs of rows, then pairs of pairs, then swap
    /// 128-bit quarters twice.
    // `#[inline]` so that every codegen unit calling it may inline it (`#[inline(always)]`
    // is not allowed with `#[target_feature]`); left to the partitioning, the same source
    // measured 10% slower as a whole step when these stayed calls.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose16(dst: *mut f32, ldd: usize, src: *const f32, lds: usize) {
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, r) in r.iter_mut().enumerate() {
            *r = _mm512_loadu_ps(src.add(i * lds));
        }
        let mut t = [_mm512_setzero_ps(); 16];
        for k in 0..8 {
            t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
            t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
        }
        let pd = _mm512_castps_pd;
        let ps = _mm512_castpd_ps;
        for k in 0..4 {
            let (a, b, c, d) = (t[4 * k], t[4 * k + 1], t[4 * k + 2], t[4 * k + 3]);
            r[4 * k] = ps(_mm512_unpacklo_pd(pd(a), pd(c)));
            r[4 * k + 1] = ps(_mm512_unpackhi_pd(pd(a), pd(c)));
            r[4 * k + 2] = ps(_mm512_unpacklo_pd(pd(b), pd(d)));
            r[4 * k + 3] = ps(_mm512_unpackhi_pd(pd(b), pd(d)));
        }
        for h in 0..2 {
            for k in 0..4 {
                let (a, b) = (r[8 * h + k], r[8 * h + 4 + k]);
                t[8 * h + k] = _mm512_shuffle_f32x4::<0x88>(a, b);
                t[8 * h + 4 + k] = _mm512_shuffle_f32x4::<0xdd>(a, b);
            }
        }
        for k in 0..8 {
            r[k] = _mm512_shuffle_f32x4::<0x88>(t[k], t[8 + k]);
            r[8 + k] = _mm512_shuffle_f32x4::<0xdd>(t[k], t[8 + k]);
        }
        for (j, r) in r.iter().enumerate() {
            _mm512_storeu_ps(dst.add(j * ldd), *r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The instruction sets to compare: the portable loops always, AVX-512 where present.
    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        if Isa::detect() == Isa::Avx512 {
            v.push(Isa::Avx512);
        }
        v
    }

    fn split_case<const W: usize, const S: usize>(tw: usize, lead: usize, len: usize) {
        let row: Vec<f32> = (1..=len).map(|x| x as f32).collect();
        let ld = tw + 5;
        let x = |k: usize| {
            if k >= lead && k - lead < len {
                (k - lead + 1) as f32
            } else {
                0.0
            }
        };
        for isa in isas() {
            let mut dst = vec![-1.0; W * ld];
            split_row::<W, S>(isa, &mut dst, ld, (&row, lead), tw);
            for j in 0..W {
                for tx in 0..ld {
                    let want = if tx < tw { x(tx * S + j) } else { -1.0 };
                    let at = format!("{isa:?} W {W} S {S} tw {tw} lead {lead} j {j} tx {tx}");
                    assert_eq!(dst[j * ld + tx], want, "{at}");
                }
            }
        }
    }

    #[test]
    fn split_row_reads_every_window_row_with_its_zero_padding() {
        for tw in [1, 3, 12, 16, 17, 33] {
            // Rows shorter, as long as and longer than the windows, after 0 to 2 zeros.
            for (lead, len) in [(1, tw * 2), (0, tw * 4), (2, tw * 4 + 3), (1, 0), (0, 70)] {
                split_case::<4, 2>(tw, lead, len);
                split_case::<6, 4>(tw, lead, len);
                split_case::<5, 3>(tw, lead, len);
                split_case::<2, 2>(tw, lead, len);
                split_case::<4, 4>(tw, lead, len);
            }
        }
    }

    fn join_case<const M: usize>(len: usize, e: Epilogue) {
        let tw = len.div_ceil(M);
        let ld = tw + 3;
        // Every 7th value not finite: NaN, +∞, −∞ in turn.
        let odd = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        let src: Vec<f32> = (0..M * ld)
            .map(|i| {
                if i % 7 == 3 {
                    odd[i / 7 % 3]
                } else {
                    i as f32 - 40.0
                }
            })
            .collect();
        for isa in isas() {
            let mut row = vec![f32::NAN; len + 4];
            join_row::<M>(isa, &mut row[..len], &src, ld, e);
            for x in 0..len {
                let want = e.apply(src[(x % M) * ld + x / M]);
                let same = row[x] == want || (row[x].is_nan() && want.is_nan());
                assert!(same, "{isa:?} M {M} len {len} x {x}: {} for {want}", row[x]);
            }
            assert!(
                row[len..].iter().all(|v| v.is_nan()),
                "{isa:?} wrote past the row"
            );
        }
    }

    #[test]
    fn transpose_covers_the_blocks_and_the_edges() {
        for (rows, cols) in [(16, 16), (35, 20), (3, 40), (32, 7)] {
            let (lds, ldd) = (cols + 3, rows + 5);
            let src: Vec<f32> = (0..rows * lds).map(|x| x as f32).collect();
            for isa in isas() {
                let mut dst = vec![-1.0; cols * ldd];
                transpose(isa, &mut dst, ldd, &src, lds, (rows, cols));
                for j in 0..cols {
                    for i in 0..ldd {
                        let want = if i < rows { src[i * lds + j] } else { -1.0 };
                        assert_eq!(dst[j * ldd + i], want, "{isa:?} {rows}×{cols} ({j}, {i})");
                    }
                }
            }
        }
    }

    #[test]
    fn transpose16_swaps_rows_and_columns() {
        let (lds, ldd) = (19, 23);
        let src: Vec<f32> = (0..16 * lds).map(|x| x as f32).collect();
        for isa in isas() {
            let mut dst = vec![-1.0; 16 * ldd];
            transpose16(isa, &mut dst, ldd, &src, lds);
            for j in 0..16 {
                for i in 0..ldd {
                    let want = if i < 16 { src[i * lds + j] } else { -1.0 };
                    assert_eq!(dst[j * ldd + i], want, "{isa:?} ({j}, {i})");
                }
            }
        }
    }

    #[test]
    fn join_row_writes_each_column_once_with_its_epilogue() {
        for len in [1, 2, 5, 21, 48, 63, 64, 65, 97] {
            let acts = [Activation::Relu, Activation::Tanh, Activation::Linear];
            let fused = acts
                .into_iter()
                .flat_map(|act| [false, true].map(|watched| Some(Fused { act, watched })));
            for act in fused.chain([None]) {
                let e = Epilogue { bias: 0.5, act };
                join_case::<2>(len, e);
                join_case::<3>(len, e);
                join_case::<4>(len, e);
            }
        }
    }
}
