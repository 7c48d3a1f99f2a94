//! Shape arithmetic: the single source of truth for every layer's sizes.
//!
//! CPU code, GPU shader uniforms, the model's parameter layout and the tests all call these
//! functions; nothing else computes an output size. Tensors are NCHW (batch, channel, row,
//! column), row-major, as PyTorch stores them, so Flatten is a no-op on the buffer.

/// A 2-D convolution: square `k`×`k` kernel, stride 1, `pad` rows and columns of zeros on
/// every side of the input (0: "valid"; `k/2` for an odd `k`: "same"), NCHW.
///
/// Buffers: input `(batch, in_c, in_h, in_w)`, weight `(out_c, in_c, k, k)`, bias `(out_c)`,
/// output `(batch, out_c, out_h, out_w)`. Output pixel `(y, x)` sees input pixels
/// `(y + i − pad, x + j − pad)` for `i, j < k`; those outside the input count as zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dShape {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels.
    pub in_c: usize,
    /// Input rows.
    pub in_h: usize,
    /// Input columns.
    pub in_w: usize,
    /// Output channels (filters).
    pub out_c: usize,
    /// Kernel side.
    pub k: usize,
    /// Zero rows and columns added on each side of the input.
    pub pad: usize,
}

impl Conv2dShape {
    /// The shape as a profile names it on every backend: `32x48x48->32 k3 p1 b64` (input
    /// channels, rows and columns, output channels, kernel side, padding when there is any,
    /// batch).
    pub fn label(&self) -> String {
        let pad = if self.pad > 0 {
            format!(" p{}", self.pad)
        } else {
            String::new()
        };
        format!(
            "{}x{}x{}->{} k{}{pad} b{}",
            self.in_c, self.in_h, self.in_w, self.out_c, self.k, self.batch
        )
    }

    /// Output rows: `in_h + 2·pad − k + 1`. Panics if the kernel does not fit the padded
    /// input (a model bug).
    pub fn out_h(&self) -> usize {
        self.try_out_h().unwrap_or_else(|| {
            panic!(
                "conv kernel {} taller than input {} padded by {}",
                self.k, self.in_h, self.pad
            )
        })
    }
    /// Output columns: `in_w + 2·pad − k + 1`.
    pub fn out_w(&self) -> usize {
        self.try_out_w().unwrap_or_else(|| {
            panic!(
                "conv kernel {} wider than input {} padded by {}",
                self.k, self.in_w, self.pad
            )
        })
    }
    /// [`Conv2dShape::out_h`], or `None` when the kernel does not fit the padded input or
    /// the padded input overflows `usize`.
    pub fn try_out_h(&self) -> Option<usize> {
        conv_side(self.in_h, self.k, self.pad)
    }
    /// [`Conv2dShape::out_w`], or `None` as [`Conv2dShape::try_out_h`].
    pub fn try_out_w(&self) -> Option<usize> {
        conv_side(self.in_w, self.k, self.pad)
    }
    /// Elements of the input, `batch·in_c·in_h·in_w`.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_c * self.in_h * self.in_w
    }
    /// Elements of the output, `batch·out_c·out_h·out_w`.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_c * self.out_h() * self.out_w()
    }
    /// [`Conv2dShape::output_len`], or `None` when the kernel does not fit or the product
    /// overflows `usize` (model files and checkpoints can ask for anything).
    pub fn try_output_len(&self) -> Option<usize> {
        product(&[self.batch, self.out_c, self.try_out_h()?, self.try_out_w()?])
    }
    /// Elements of the weight, `out_c·in_c·k·k`.
    pub fn weight_len(&self) -> usize {
        self.out_c * self.in_c * self.k * self.k
    }
    /// Elements of the weight and the bias, `out_c·(in_c·k·k + 1)`, or `None` on overflow.
    pub fn try_param_len(&self) -> Option<usize> {
        product(&[self.out_c, self.in_c, self.k, self.k])?.checked_add(self.out_c)
    }
    /// Elements of the bias, `out_c`.
    pub fn bias_len(&self) -> usize {
        self.out_c
    }
    /// Rows of the implicit im2col matrix's reduction dimension, `in_c·k·k`.
    pub fn patch_len(&self) -> usize {
        self.in_c * self.k * self.k
    }
    /// Multiply-adds of one forward pass.
    pub fn forward_macs(&self) -> usize {
        self.output_len() * self.patch_len()
    }
}

/// A convolution's output side, `input + 2·pad − k + 1`; `None` when the kernel is larger
/// than the padded input or that overflows.
fn conv_side(input: usize, k: usize, pad: usize) -> Option<usize> {
    let padded = input.checked_add(pad.checked_mul(2)?)?;
    Some(padded.checked_sub(k)? + 1)
}

/// The product of `dims`, or `None` when it overflows `usize`.
pub fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Max pooling with a square `size`×`size` window and stride `size`; trailing rows and
/// columns that do not fill a window are dropped (floor), as Keras' `MaxPool2D`.
///
/// Buffers: input `(batch, c, in_h, in_w)`, output and argmax `(batch, c, out_h, out_w)`;
/// argmax holds the flat index of the chosen element inside its input image plane
/// (`row·in_w + col`). Ties pick the first maximum in row-major window order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolShape {
    /// Images in the batch.
    pub batch: usize,
    /// Channels.
    pub c: usize,
    /// Input rows.
    pub in_h: usize,
    /// Input columns.
    pub in_w: usize,
    /// Window side and stride.
    pub size: usize,
}

impl PoolShape {
    /// Output rows, `in_h / size` (floor).
    pub fn out_h(&self) -> usize {
        assert!(
            self.in_h >= self.size,
            "pool window {} taller than input {}",
            self.size,
            self.in_h
        );
        self.in_h / self.size
    }
    /// Output columns, `in_w / size` (floor).
    pub fn out_w(&self) -> usize {
        assert!(
            self.in_w >= self.size,
            "pool window {} wider than input {}",
            self.size,
            self.in_w
        );
        self.in_w / self.size
    }
    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.batch * self.c * self.in_h * self.in_w
    }
    /// Elements of the output (and of argmax).
    pub fn output_len(&self) -> usize {
        self.batch * self.c * self.out_h() * self.out_w()
    }
}

/// A fully connected layer: `out = input · weightᵀ + bias`.
///
/// Buffers: input `(batch, in_f)`, weight `(out_f, in_f)` (PyTorch layout), bias `(out_f)`,
/// output `(batch, out_f)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DenseShape {
    /// Rows in the batch.
    pub batch: usize,
    /// Input features.
    pub in_f: usize,
    /// Output features.
    pub out_f: usize,
}

impl DenseShape {
    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_f
    }
    /// Elements of the output.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_f
    }
    /// Elements of the weight.
    pub fn weight_len(&self) -> usize {
        self.out_f * self.in_f
    }
    /// Elements of the weight and the bias, `out_f·(in_f + 1)`, or `None` on overflow.
    pub fn try_param_len(&self) -> Option<usize> {
        self.out_f.checked_mul(self.in_f)?.checked_add(self.out_f)
    }
    /// Elements of the bias.
    pub fn bias_len(&self) -> usize {
        self.out_f
    }
    /// Multiply-adds of one forward pass.
    pub fn forward_macs(&self) -> usize {
        self.batch * self.in_f * self.out_f
    }
}

/// Batch normalisation over the channels of `(batch, c, hw)`: a conv output `(batch, c, h, w)`
/// with `hw = h·w`, or a dense output `(batch, features)` with `c = features` and `hw = 1`.
/// Each channel's statistics are taken over its `batch·hw` values.
///
/// Buffers: input and output `(batch, c, hw)`; weight γ, bias β, running mean and running
/// variance `(c)` each; the saved batch statistics `(2, c)` (mean, then 1/√(var + eps)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchNormShape {
    /// Images in the batch.
    pub batch: usize,
    /// Channels (or features).
    pub c: usize,
    /// Values per channel per image: rows·columns, or 1 after a dense layer.
    pub hw: usize,
}

impl BatchNormShape {
    /// Elements of the input (and output), `batch·c·hw`.
    pub fn len(&self) -> usize {
        self.batch * self.c * self.hw
    }
    /// True when the batch holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Values each channel's statistics are taken over, `batch·hw`.
    pub fn count(&self) -> usize {
        self.batch * self.hw
    }
}

/// Global average pooling: the mean of each channel's plane, `(batch, c, h·w)` → `(batch, c)`.
///
/// Buffers: input `(batch, c, hw)`, output `(batch, c)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GlobalAvgPoolShape {
    /// Images in the batch.
    pub batch: usize,
    /// Channels.
    pub c: usize,
    /// Pixels per plane, rows·columns.
    pub hw: usize,
}

impl GlobalAvgPoolShape {
    /// Elements of the input, `batch·c·hw`.
    pub fn input_len(&self) -> usize {
        self.batch * self.c * self.hw
    }
    /// Elements of the output, `batch·c`.
    pub fn output_len(&self) -> usize {
        self.batch * self.c
    }
}

/// Side of a FER2013 image.
pub const IMAGE_SIDE: usize = 48;
/// Pixels in a FER2013 image, 48×48.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Number of emotion classes.
pub const NUM_CLASSES: usize = 7;

/// Splits `n` work items into a 2-D grid of workgroups of `wg` invocations each, so that no
/// dimension exceeds `max_dim` (wgpu's default limit is 65,535 per dimension).
///
/// Returns `(x, y)` workgroup counts; the shader recovers the linear index as
/// `gid.y * (x * wg) + gid.x` and must bounds-check it against `n`.
pub fn dispatch_2d(n: usize, wg: usize, max_dim: usize) -> (u32, u32) {
    let groups = n.div_ceil(wg).max(1);
    if groups <= max_dim {
        return (groups as u32, 1);
    }
    let y = groups.div_ceil(max_dim);
    let x = groups.div_ceil(y);
    (x as u32, y as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_cnn_sizes_follow_valid_conv_and_floor_pool() {
        let c = Conv2dShape {
            batch: 2,
            in_c: 1,
            in_h: 48,
            in_w: 48,
            out_c: 128,
            k: 3,
            pad: 0,
        };
        assert_eq!((c.out_h(), c.out_w()), (46, 46));
        let same = Conv2dShape { pad: 1, ..c };
        assert_eq!((same.out_h(), same.out_w()), (48, 48));
        let five = Conv2dShape { k: 5, pad: 1, ..c };
        assert_eq!((five.out_h(), five.out_w()), (46, 46));
        let p = PoolShape {
            batch: 2,
            c: 128,
            in_h: 21,
            in_w: 21,
            size: 2,
        };
        assert_eq!((p.out_h(), p.out_w()), (10, 10));
    }

    #[test]
    fn dispatch_2d_covers_every_item_within_the_limit() {
        for &(n, wg, max) in &[(1, 64, 65535), (64 * 65535 + 1, 64, 65535), (40, 1, 7)] {
            let (x, y) = dispatch_2d(n, wg, max);
            assert!(x as usize <= max && y as usize <= max);
            assert!(x as usize * y as usize * wg >= n);
        }
        assert_eq!(dispatch_2d(10, 64, 65535), (1, 1));
    }
}
