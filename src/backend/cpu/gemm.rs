//! A safe, bounds-checked front for the `gemm` crate's matrix product.
//!
//! `gemm::gemm` takes raw pointers and strides; [`MatRef`] carries a slice with its shape and
//! strides, so a transposed operand is a view (strides swapped), never a copy, and every
//! access the kernel can make is checked against the slice once, before the call.

use ::gemm::Parallelism;

/// A read-only strided matrix view: element `(r, c)` is `data[r·rs + c·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// The row-major `(rows, cols)` matrix at the start of `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> MatRef<'a> {
        let m = MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        };
        m.check();
        m
    }

    /// The transpose, as a view.
    pub fn t(self) -> MatRef<'a> {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Panics unless the last element lies inside `data`.
    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(
                last < self.data.len(),
                "matrix ({}, {}) does not fit a buffer of {}",
                self.rows,
                self.cols,
                self.data.len()
            );
        }
    }
}

/// `dst (m, n) = a (m, k) · b (k, n)`, or `dst += a·b` when `accumulate`; `dst` is row-major
/// at the start of its slice.
pub fn matmul(
    dst: &mut [f32],
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    parallelism: Parallelism,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ: {k} vs {}", b.rows);
    assert!(dst.len() >= m * n, "destination too small for ({m}, {n})");
    a.check();
    b.check();
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: every index the kernel forms, `r·rs + c·cs` for r < rows and c < cols, was
    // bounds-checked above for `a`, `b` and the row-major `dst`; `dst` is a unique borrow and
    // cannot alias the shared borrows `a` and `b`.
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0, // alpha: weight of the old dst (read only when accumulating)
            1.0, // beta: weight of a·b
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `gemm`'s parallelism for `threads` threads of the current rayon pool.
pub fn parallelism(threads: usize) -> Parallelism {
    if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_views_multiply_like_the_definition() {
        // a (2, 3), b stored as bᵀ (2, 3) so b is (3, 2).
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bt = [1.0, 0.0, -1.0, 2.0, 1.0, 0.5];
        let mut dst = [10.0; 4];
        matmul(
            &mut dst,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&bt, 2, 3).t(),
            false,
            Parallelism::None,
        );
        assert_eq!(dst, [-2.0, 5.5, -2.0, 16.0]);
        matmul(
            &mut dst,
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&bt, 2, 3).t(),
            true,
            Parallelism::None,
        );
        assert_eq!(dst, [-4.0, 11.0, -4.0, 32.0]);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_view_larger_than_its_buffer_panics() {
        MatRef::row_major(&[0.0; 5], 2, 3);
    }
}
