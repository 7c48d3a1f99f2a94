//! What one dispatch computes, for a profile: its shape in words, and the floating-point
//! operations and memory traffic of its ideal schedule (each operand read once and each
//! result written once; caches can only do better, extra passes only worse). Each kernel's
//! declaration (`kernels.rs`) names its function here, which reads the kernel's uniform.

use super::uniforms::{Accum, Act, Conv, Drop, Gap, Gather, Loss, Mm, Norm, Optim, Pool};
use crate::backend::Activation;
use crate::shape::Conv2dShape;

/// What one dispatch computes (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Work {
    /// The shape, e.g. `128x23x23->128 k3 b32` or `GEMM 32x64x576`.
    pub shape: String,
    /// Floating-point operations (2 per multiply-add); `None` for kernels that mostly move
    /// data.
    pub flop: Option<f64>,
    /// Bytes read and written.
    pub bytes: f64,
}

fn f(n: u32) -> f64 {
    f64::from(n)
}

/// A `Work` of `floats` 4-byte values moved.
fn work(shape: String, flop: Option<f64>, floats: f64) -> Work {
    Work {
        shape,
        flop,
        bytes: 4.0 * floats,
    }
}

/// A convolution's sizes: `(shape, x, y, grads, macs)` — input and output elements, weight
/// and bias gradients, and the forward multiply-adds.
fn conv_sizes(c: &Conv) -> (String, f64, f64, f64, f64) {
    let n = |v: u32| v as usize;
    let shape = Conv2dShape {
        batch: n(c.batch),
        in_c: n(c.in_c),
        in_h: n(c.in_h),
        in_w: n(c.in_w),
        out_c: n(c.out_c),
        k: n(c.k),
        pad: n(c.pad),
    }
    .label();
    let x = f(c.batch) * f(c.in_c) * f(c.in_h) * f(c.in_w);
    let y = f(c.batch) * f(c.out_c) * f(c.out_h) * f(c.out_w);
    let patch = f(c.in_c) * f(c.k) * f(c.k);
    let grads = f(c.out_c) * (patch + 1.0);
    (shape, x, y, grads, y * patch)
}

/// `conv2d_forward` (and its tiled variant): the product, the bias, the fused activation.
pub(crate) fn conv_forward(c: &Conv) -> Work {
    let (shape, x, y, grads, macs) = conv_sizes(c);
    let shape = match Activation::ALL.iter().find(|a| a.code() == c.act) {
        Some(a) if *a != Activation::Linear => format!("{shape} +{}", a.name()),
        _ => shape,
    };
    work(shape, Some(2.0 * macs), x + grads + y)
}

/// `conv2d_backward_input` (and its tiled variant).
pub(crate) fn conv_backward_input(c: &Conv) -> Work {
    let (shape, x, y, grads, macs) = conv_sizes(c);
    work(shape, Some(2.0 * macs), y + grads + x)
}

/// `conv2d_backward_weight` (and its tiled variant): the product and the bias column, into
/// `splits` partial sums.
pub(crate) fn conv_backward_weight(c: &Conv) -> Work {
    let (shape, x, y, grads, macs) = conv_sizes(c);
    let shape = if c.splits > 1 {
        format!("{shape} {} splits", c.splits)
    } else {
        shape
    };
    work(shape, Some(2.0 * (macs + y)), y + x + f(c.splits) * grads)
}

/// `conv2d_backward_weight_reduce`: the partial sums added up.
pub(crate) fn conv_reduce(c: &Conv) -> Work {
    let (shape, _, _, grads, _) = conv_sizes(c);
    let splits = f(c.splits);
    work(
        format!("{shape} {} splits", c.splits),
        Some(splits * grads),
        (splits + 1.0) * grads,
    )
}

/// The dense GEMMs (and their tiled variants).
pub(crate) fn gemm(m: &Mm) -> Work {
    let (mm, nn, kk) = (f(m.m), f(m.n), f(m.k));
    work(
        format!("GEMM {}x{}x{}", m.m, m.n, m.k),
        Some(2.0 * mm * nn * kk),
        mm * kk + kk * nn + mm * nn,
    )
}

/// Max pooling, forward or backward: the input, and the output and its argmax.
pub(crate) fn pool(p: &Pool) -> Work {
    let input = f(p.batch) * f(p.c) * f(p.in_h) * f(p.in_w);
    let out = f(p.batch) * f(p.c) * f(p.out_h) * f(p.out_w);
    let shape = format!("{}x{}x{} /{} b{}", p.c, p.in_h, p.in_w, p.size, p.batch);
    work(shape, None, input + 2.0 * out)
}

fn activation(a: &Act, passes: f64) -> Work {
    let name = Activation::ALL
        .iter()
        .find(|x| x.code() == a.code)
        .map_or("?", |x| x.name());
    work(format!("{} {name}", a.len), None, passes * f(a.len))
}

/// `activation_forward`: one read, one write.
pub(crate) fn activation_forward(a: &Act) -> Work {
    activation(a, 2.0)
}

/// `activation_backward`: two reads, one write.
pub(crate) fn activation_backward(a: &Act) -> Work {
    activation(a, 3.0)
}

/// The loss kernels: the logits (or probabilities) and their gradient, and the labels.
pub(crate) fn loss(l: &Loss) -> Work {
    let logits = f(l.batch) * f(l.classes);
    work(
        format!("{}x{}", l.batch, l.classes),
        None,
        2.0 * logits + f(l.batch),
    )
}

/// `optimizer_step`: Adam reads parameters, gradients and both moments and writes three
/// back.
pub(crate) fn optimizer(a: &Optim) -> Work {
    work(format!("{} params", a.len), None, 7.0 * f(a.len))
}

/// `scale_add`: two reads, one write.
pub(crate) fn scale_add(a: &Accum) -> Work {
    work(format!("{}", a.len), None, 3.0 * f(a.len))
}

/// The gathers: u8 pixels in, f32 out, plus the order and the labels.
pub(crate) fn gather(g: &Gather) -> Work {
    let pixels = f(g.batch) * f(g.pixels);
    Work {
        shape: format!("{}x{}x{}", g.batch, g.side, g.side),
        flop: None,
        bytes: 5.0 * pixels + 12.0 * f(g.batch),
    }
}

fn batchnorm(n: &Norm, passes: f64) -> Work {
    let len = f(n.batch) * f(n.c) * f(n.hw);
    work(format!("{}x{} b{}", n.c, n.hw, n.batch), None, passes * len)
}

/// `batchnorm_forward_train`: the statistics' pass, then normalising.
pub(crate) fn batchnorm_forward_train(n: &Norm) -> Work {
    batchnorm(n, 3.0)
}

/// `batchnorm_forward_eval`: one read, one write.
pub(crate) fn batchnorm_forward_eval(n: &Norm) -> Work {
    batchnorm(n, 2.0)
}

/// `batchnorm_backward`: the sums' pass over dy and x, then dx.
pub(crate) fn batchnorm_backward(n: &Norm) -> Work {
    batchnorm(n, 4.0)
}

/// Dropout, forward or backward: one read, one write.
pub(crate) fn dropout(d: &Drop) -> Work {
    work(format!("{}", d.len), None, 2.0 * f(d.len))
}

/// Global average pooling, forward or backward: the planes and their means.
pub(crate) fn globalavgpool(g: &Gap) -> Work {
    let len = f(g.batch) * f(g.c) * f(g.hw);
    work(
        format!("{}x{} b{}", g.c, g.hw, g.batch),
        None,
        len + f(g.batch) * f(g.c),
    )
}
