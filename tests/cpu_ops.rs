//! The CPU reference backend, op by op, against naive loop definitions written here.
//!
//! Forward ops are compared with plain nested loops accumulated in `f64` on seeded random
//! inputs with deliberately odd shapes (batch 3, 5 channels, 7×9 images, a 3×3 valid
//! convolution, pools that drop a trailing row or column). Backward ops are compared with
//! central finite differences of a scalar loss `L = Σ r·f(x)` (`r` random and fixed), taken
//! through the same `f64` reference forward: the backend's forward is proven equal to that
//! reference by the forward tests, and differencing in `f64` keeps the check free of `f32`
//! cancellation noise, so tolerances can be tight.
//!
//! Finite-difference step and tolerances, once for every test below:
//! - conv, dense and max pooling are linear in the perturbed variable (pooling piecewise, with
//!   every window's values at least 0.01 apart, wider than 2·eps), so the central difference
//!   is exact up to `f64` rounding, ~1e-16·|L|/eps ≈ 1e-11 with eps = 1e-3;
//! - activations and softmax-CE are smooth away from 0 (inputs are kept ≥ 0.05 from the kinks
//!   of relu/elu/selu); the truncation error is eps²·|f'''|/6 ≈ 1e-9 with eps = 1e-4, and
//!   rounding ~1e-16/1e-4 = 1e-12;
//! - what remains is the backend's own `f32` rounding: a sum of n products of O(1) terms
//!   carries a relative error of a few n·2⁻²⁴ at worst (n ≤ 135 here, ≈ 1e-5), so the
//!   comparisons use atol 1e-5 and rtol 1e-4, which still fail on any wrong index, missing
//!   term or sign.

mod common;

use common::{assert_close, random_vec};
use fergpu::augment::{self, EraseRect, ImageWarp};
use fergpu::backend::cpu::{CpuBackend, PIXEL_SCALE};
use fergpu::backend::{
    dropout_hash, stats, Activation, Backend, BatchNorm, Dropout, OptimizerConfig, OptimizerKind,
    OptimizerStep,
};
use fergpu::rng::Rng;
use fergpu::shape::{
    BatchNormShape, Conv2dShape, DenseShape, GlobalAvgPoolShape, PoolShape, IMAGE_PIXELS,
    IMAGE_SIDE,
};

/// Tolerances for `f32` results against `f64` references (see the module docs).
const ATOL: f32 = 1e-5;
const RTOL: f32 = 1e-4;

/// The odd convolution every conv test uses: batch 3, 5→4 channels, 7×9, valid 3×3.
const CONV: Conv2dShape = Conv2dShape {
    batch: 3,
    in_c: 5,
    in_h: 7,
    in_w: 9,
    out_c: 4,
    k: 3,
    pad: 0,
};

/// The same with "same" padding: one ring of zeros, output 7×9.
const CONV_SAME: Conv2dShape = Conv2dShape { pad: 1, ..CONV };

/// A 5×5 kernel padded by 2 over a 4×6 input, smaller than the kernel: some taps of every
/// output see only padding, and the corner outputs see mostly padding.
const CONV_K5_PAD2: Conv2dShape = Conv2dShape {
    batch: 2,
    in_c: 2,
    in_h: 4,
    in_w: 6,
    out_c: 3,
    k: 5,
    pad: 2,
};

/// A first layer: one channel, so 9-tap patches (a matrix product with an inner dimension
/// of 9), and output rows of 19, not a multiple of any SIMD width.
const CONV_ONE_CHANNEL: Conv2dShape = Conv2dShape {
    batch: 3,
    in_c: 1,
    in_h: 6,
    in_w: 21,
    out_c: 4,
    k: 3,
    pad: 0,
};

/// An odd dense layer: batch 3, 13→6 features.
const DENSE: DenseShape = DenseShape {
    batch: 3,
    in_f: 13,
    out_f: 6,
};

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// `Σ r_i·y_i` in f64: the scalar loss whose gradient with respect to `y` is `r`.
fn dot(r: &[f64], y: &[f64]) -> f64 {
    r.iter().zip(y).map(|(a, b)| a * b).sum()
}

/// Central differences `(L(x + eps·e_i) − L(x − eps·e_i)) / 2eps` for every `i`.
fn finite_diff(x: &[f64], eps: f64, loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let keep = x[i];
            x[i] = keep + eps;
            let up = loss(&x);
            x[i] = keep - eps;
            let down = loss(&x);
            x[i] = keep;
            (up - down) / (2.0 * eps)
        })
        .collect()
}

// ---- naive references -------------------------------------------------------------------

/// `out[b,o,y,x] = bias[o] + Σ_{c,i,j} input[b,c,y+i−pad,x+j−pad]·weight[o,c,i,j]`, six
/// loops; taps outside the input add nothing (zero padding).
fn conv_ref(input: &[f64], weight: &[f64], bias: &[f64], s: &Conv2dShape) -> Vec<f64> {
    let (k, pad) = (s.k, s.pad as isize);
    let (oh, ow) = (s.in_h + 2 * s.pad + 1 - k, s.in_w + 2 * s.pad + 1 - k);
    let mut out = vec![0.0; s.batch * s.out_c * oh * ow];
    for b in 0..s.batch {
        for o in 0..s.out_c {
            for y in 0..oh {
                for x in 0..ow {
                    let mut acc = bias[o];
                    for c in 0..s.in_c {
                        for i in 0..k {
                            for j in 0..k {
                                let iy = (y + i) as isize - pad;
                                let ix = (x + j) as isize - pad;
                                if iy < 0
                                    || ix < 0
                                    || iy >= s.in_h as isize
                                    || ix >= s.in_w as isize
                                {
                                    continue;
                                }
                                let (iy, ix) = (iy as usize, ix as usize);
                                let xi = ((b * s.in_c + c) * s.in_h + iy) * s.in_w + ix;
                                let wi = ((o * s.in_c + c) * k + i) * k + j;
                                acc += input[xi] * weight[wi];
                            }
                        }
                    }
                    out[((b * s.out_c + o) * oh + y) * ow + x] = acc;
                }
            }
        }
    }
    out
}

/// Max over each `size`×`size` window (stride `size`, trailing rows/columns dropped) and the
/// plane index of the first maximum in row-major window order.
fn pool_ref(input: &[f32], s: &PoolShape) -> (Vec<f32>, Vec<u32>) {
    let (oh, ow) = (s.in_h / s.size, s.in_w / s.size);
    let mut out = Vec::new();
    let mut arg = Vec::new();
    for p in 0..s.batch * s.c {
        let plane = &input[p * s.in_h * s.in_w..(p + 1) * s.in_h * s.in_w];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<(f32, usize)> = None;
                for i in 0..s.size {
                    for j in 0..s.size {
                        let idx = (oy * s.size + i) * s.in_w + ox * s.size + j;
                        if best.is_none_or(|(v, _)| plane[idx] > v) {
                            best = Some((plane[idx], idx));
                        }
                    }
                }
                let (v, idx) = best.unwrap();
                out.push(v);
                arg.push(idx as u32);
            }
        }
    }
    (out, arg)
}

/// The pooled values in f64 (for finite differences), same windows as [`pool_ref`].
fn pool_values_f64(input: &[f64], s: &PoolShape) -> Vec<f64> {
    let (oh, ow) = (s.in_h / s.size, s.in_w / s.size);
    let mut out = Vec::new();
    for p in 0..s.batch * s.c {
        let plane = &input[p * s.in_h * s.in_w..(p + 1) * s.in_h * s.in_w];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = f64::NEG_INFINITY;
                for i in 0..s.size {
                    for j in 0..s.size {
                        best = best.max(plane[(oy * s.size + i) * s.in_w + ox * s.size + j]);
                    }
                }
                out.push(best);
            }
        }
    }
    out
}

/// `out[b,o] = bias[o] + Σ_i input[b,i]·weight[o,i]`.
fn dense_ref(input: &[f64], weight: &[f64], bias: &[f64], s: &DenseShape) -> Vec<f64> {
    let mut out = vec![0.0; s.batch * s.out_f];
    for b in 0..s.batch {
        for o in 0..s.out_f {
            let mut acc = bias[o];
            for i in 0..s.in_f {
                acc += input[b * s.in_f + i] * weight[o * s.in_f + i];
            }
            out[b * s.out_f + o] = acc;
        }
    }
    out
}

/// Each activation from its textbook formula, in f64, independent of `Activation::apply`.
fn act_ref(act: Activation, x: f64) -> f64 {
    const SELU_LAMBDA: f64 = 1.050_700_987_355_480_5;
    const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
    match act {
        Activation::Relu => {
            if x > 0.0 {
                x
            } else {
                0.0
            }
        }
        Activation::Elu => {
            if x > 0.0 {
                x
            } else {
                x.exp() - 1.0
            }
        }
        Activation::Selu => {
            if x > 0.0 {
                SELU_LAMBDA * x
            } else {
                SELU_LAMBDA * SELU_ALPHA * (x.exp() - 1.0)
            }
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::Linear => x,
    }
}

/// Per-sample `w[y]·(−log softmax(x)[y])` and the probabilities, in f64 (log-sum-exp form).
fn softmax_ce_ref(
    logits: &[f64],
    labels: &[u32],
    weights: &[f64],
    smoothing: f64,
    classes: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut losses = Vec::new();
    let mut probs = Vec::new();
    for (x, &y) in logits.chunks(classes).zip(labels) {
        let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        probs.extend(x.iter().map(|v| (v - lse).exp()));
        // The smoothed target (1 − ε)·onehot(y) + ε/C, each class weighted by its own weight.
        let spread: f64 = x.iter().zip(weights).map(|(v, w)| w * (lse - v)).sum();
        losses.push(
            (1.0 - smoothing) * weights[y as usize] * (lse - x[y as usize])
                + smoothing / classes as f64 * spread,
        );
    }
    (losses, probs)
}

/// Index of the first maximum.
fn first_max(v: &[f32]) -> usize {
    let mut best = 0;
    for i in 1..v.len() {
        if v[i] > v[best] {
            best = i;
        }
    }
    best
}

/// A flat parameter buffer `(pad + a + pad + b + pad)` holding `first` then `second` at
/// non-zero offsets; returns the buffer and both offsets. Random padding makes a read from
/// the wrong offset visible.
fn params_with(first: &[f32], second: &[f32], seed: u64) -> (Vec<f32>, usize, usize) {
    let pad = random_vec(7, -5.0, 5.0, seed);
    let mut p = pad.clone();
    let off_a = p.len();
    p.extend_from_slice(first);
    p.extend_from_slice(&pad);
    let off_b = p.len();
    p.extend_from_slice(second);
    p.extend_from_slice(&pad);
    (p, off_a, off_b)
}

// ---- convolution --------------------------------------------------------------------------

fn conv_inputs(s: &Conv2dShape, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        random_vec(s.input_len(), -1.0, 1.0, seed),
        random_vec(s.weight_len(), -0.5, 0.5, seed + 1),
        random_vec(s.bias_len(), -0.5, 0.5, seed + 2),
    )
}

/// Few input channels (the first layer's one, up to 4): the direct forward, with each
/// padding, rows shorter than, as long as and longer than a 16-column vector, and the
/// ReLU in the same pass, and the weight gradient; two threads, images split between them.
#[test]
fn the_direct_forward_and_weight_gradient_of_few_channels_match_the_loops() {
    for (in_c, side, pad) in [(1, 5, 1), (1, 18, 0), (3, 16, 1), (4, 35, 2), (2, 48, 1)] {
        let s = Conv2dShape {
            batch: 3,
            in_c,
            in_h: side,
            in_w: side + 3,
            out_c: 5,
            k: 3,
            pad,
        };
        let cpu = CpuBackend::new(2);
        let (x, w, b) = conv_inputs(&s, 12 + side as u64);
        let (params, w_off, b_off) = params_with(&w, &b, 13);
        let want = conv_ref(&to_f64(&x), &to_f64(&w), &to_f64(&b), &s);
        let name = format!("direct forward, {s:?}");
        let mut out = cpu.zeros(s.output_len());
        cpu.conv2d_forward(&mut out, &x, &params, w_off, b_off, &s);
        assert_close(&name, &out, &to_f32(&want), ATOL, RTOL);
        let mut act = vec![f32::NAN; s.output_len()];
        cpu.conv2d_forward_act(
            &mut act,
            &mut out,
            &x,
            &params,
            w_off,
            b_off,
            &s,
            Activation::Relu,
        );
        let relu: Vec<f64> = want.iter().map(|v| v.max(0.0)).collect();
        assert_close(
            &(name.clone() + " + relu"),
            &act,
            &to_f32(&relu),
            ATOL,
            RTOL,
        );
        // The weight gradient, also direct: Σ dy·x per tap, and Σ dy per output channel.
        let dy = random_vec(s.output_len(), -1.0, 1.0, 14);
        let mut grads = vec![f32::NAN; params.len()];
        cpu.conv2d_backward_weight(&mut grads, w_off, b_off, &dy, &x, &s);
        let (want_w, want_b) = conv_weight_grad_ref(&to_f64(&x), &to_f64(&dy), &s);
        let got_w = &grads[w_off..w_off + s.weight_len()];
        assert_close(
            &(name.clone() + " d_weight"),
            got_w,
            &to_f32(&want_w),
            1e-4,
            1e-4,
        );
        let got_b = &grads[b_off..b_off + s.out_c];
        assert_close(&(name + " d_bias"), got_b, &to_f32(&want_b), 1e-4, 1e-4);
    }
}

/// `d_weight (out_c, in_c, k, k)` and `d_bias (out_c)` of a convolution for `d_out`, in f64
/// loops: `Σ_{b,y,x} dy[b, o, y, x]·input[b, c, y + i − pad, x + j − pad]` and `Σ dy`.
fn conv_weight_grad_ref(input: &[f64], dy: &[f64], s: &Conv2dShape) -> (Vec<f64>, Vec<f64>) {
    let (k, oh, ow) = (s.k, s.out_h(), s.out_w());
    let mut dw = vec![0.0; s.weight_len()];
    let mut db = vec![0.0; s.out_c];
    for b in 0..s.batch {
        for o in 0..s.out_c {
            for y in 0..oh {
                for x in 0..ow {
                    let g = dy[((b * s.out_c + o) * oh + y) * ow + x];
                    db[o] += g;
                    for c in 0..s.in_c {
                        for i in 0..k {
                            for j in 0..k {
                                let iy = (y + i).wrapping_sub(s.pad);
                                let ix = (x + j).wrapping_sub(s.pad);
                                if iy < s.in_h && ix < s.in_w {
                                    let xi = ((b * s.in_c + c) * s.in_h + iy) * s.in_w + ix;
                                    dw[((o * s.in_c + c) * k + i) * k + j] += g * input[xi];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (dw, db)
}

#[test]
fn conv2d_forward_matches_six_loops() {
    assert_eq!((CONV.out_h(), CONV.out_w()), (5, 7));
    assert_eq!((CONV_SAME.out_h(), CONV_SAME.out_w()), (7, 9));
    assert_eq!((CONV_K5_PAD2.out_h(), CONV_K5_PAD2.out_w()), (4, 6));
    for s in [CONV, CONV_ONE_CHANNEL, CONV_SAME, CONV_K5_PAD2] {
        let cpu = CpuBackend::new(1);
        let (x, w, b) = conv_inputs(&s, 10);
        // Bias before weight in the buffer: the op must honour both offsets, in either order.
        let (params, b_off, w_off) = params_with(&b, &w, 11);
        let mut out = cpu.zeros(s.output_len());
        cpu.conv2d_forward(&mut out, &x, &params, w_off, b_off, &s);
        let want = conv_ref(&to_f64(&x), &to_f64(&w), &to_f64(&b), &s);
        let name = format!("conv forward, {} channels, pad {}", s.in_c, s.pad);
        assert_close(&name, &out, &to_f32(&want), ATOL, RTOL);
    }
}

#[test]
fn conv2d_backward_input_matches_finite_differences() {
    for s in [CONV, CONV_SAME, CONV_K5_PAD2] {
        conv2d_backward_input_case(s);
    }
}

fn conv2d_backward_input_case(s: Conv2dShape) {
    let cpu = CpuBackend::new(1);
    let (x, w, b) = conv_inputs(&s, 20);
    let r = random_vec(s.output_len(), -1.0, 1.0, 23);
    let (params, w_off, _) = params_with(&w, &b, 24);
    let mut d_in = vec![f32::NAN; s.input_len()];
    cpu.conv2d_backward_input(&mut d_in, &r, &params, w_off, &s);

    let (w64, b64, r64) = (to_f64(&w), to_f64(&b), to_f64(&r));
    let fd = finite_diff(&to_f64(&x), 1e-3, |x| {
        dot(&r64, &conv_ref(x, &w64, &b64, &s))
    });
    let name = format!("conv d_input, pad {}", s.pad);
    assert_close(&name, &d_in, &to_f32(&fd), ATOL, RTOL);
}

#[test]
fn conv2d_backward_weight_and_bias_match_finite_differences() {
    for s in [CONV, CONV_ONE_CHANNEL, CONV_SAME, CONV_K5_PAD2] {
        conv2d_backward_weight_case(s);
    }
}

fn conv2d_backward_weight_case(s: Conv2dShape) {
    let cpu = CpuBackend::new(1);
    let (x, w, b) = conv_inputs(&s, 30);
    let r = random_vec(s.output_len(), -1.0, 1.0, 33);
    // Stale values in the gradient buffer must be overwritten, not added to.
    let (mut grads, w_off, b_off) =
        params_with(&vec![9.0; s.weight_len()], &vec![9.0; s.bias_len()], 34);
    let pad_before = grads.clone();
    cpu.conv2d_backward_weight(&mut grads, w_off, b_off, &r, &x, &s);

    let (x64, w64, b64, r64) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&r));
    let fd_w = finite_diff(&w64, 1e-3, |w| dot(&r64, &conv_ref(&x64, w, &b64, &s)));
    let fd_b = finite_diff(&b64, 1e-3, |b| dot(&r64, &conv_ref(&x64, &w64, b, &s)));
    let got_w = &grads[w_off..w_off + s.weight_len()];
    let got_b = &grads[b_off..b_off + s.bias_len()];
    let c = format!("{}, pad {}", s.in_c, s.pad);
    assert_close(
        &format!("conv d_weight, {c} ch"),
        got_w,
        &to_f32(&fd_w),
        ATOL,
        RTOL,
    );
    assert_close(
        &format!("conv d_bias, {c} ch"),
        got_b,
        &to_f32(&fd_b),
        ATOL,
        RTOL,
    );
    // Nothing outside the two slices is touched.
    assert_eq!(grads[..w_off], pad_before[..w_off]);
    assert_eq!(
        grads[b_off + s.bias_len()..],
        pad_before[b_off + s.bias_len()..]
    );
}

#[test]
fn conv2d_smaller_batch_touches_only_its_part_of_the_buffers() {
    // Buffers sized for batch 3, op run for batch 2: the tail of `out` keeps its values.
    let big = CONV;
    let s = Conv2dShape { batch: 2, ..CONV };
    let cpu = CpuBackend::new(2);
    let (x, w, b) = conv_inputs(&big, 40);
    let (params, w_off, b_off) = params_with(&w, &b, 41);
    let mut out = vec![7.0; big.output_len()];
    cpu.conv2d_forward(&mut out, &x, &params, w_off, b_off, &s);
    let want = conv_ref(&to_f64(&x[..s.input_len()]), &to_f64(&w), &to_f64(&b), &s);
    assert_close(
        "conv forward, batch 2",
        &out[..s.output_len()],
        &to_f32(&want),
        ATOL,
        RTOL,
    );
    assert!(out[s.output_len()..].iter().all(|&v| v == 7.0));
}

// ---- max pooling --------------------------------------------------------------------------

/// Pools over 7×9 planes that drop trailing rows and/or columns: size 2 drops row 6 and
/// column 8; size 3 on 8×7 drops rows 6–7 and column 6.
fn odd_pools() -> [PoolShape; 2] {
    [
        PoolShape {
            batch: 3,
            c: 5,
            in_h: 7,
            in_w: 9,
            size: 2,
        },
        PoolShape {
            batch: 2,
            c: 3,
            in_h: 8,
            in_w: 7,
            size: 3,
        },
    ]
}

/// Distinct values at least 0.01 apart in a seeded random order: no ties, and a
/// finite-difference step of 1e-3 never changes which element is a window's maximum.
fn distinct_values(len: usize, seed: u64) -> Vec<f32> {
    let mut v: Vec<f32> = (0..len).map(|i| i as f32 * 0.01 - 1.0).collect();
    Rng::new(seed).shuffle(&mut v);
    v
}

#[test]
fn maxpool_forward_matches_loops_and_drops_trailing_rows_and_columns() {
    let cpu = CpuBackend::new(2);
    for (n, s) in odd_pools().iter().enumerate() {
        let x = random_vec(s.input_len(), -1.0, 1.0, 50 + n as u64);
        let mut out = cpu.zeros(s.output_len());
        let mut arg = cpu.zeros_indices(s.output_len());
        cpu.maxpool_forward(&mut out, &mut arg, &x, s);
        let (want, want_arg) = pool_ref(&x, s);
        assert_eq!(out, want, "pool {n} values");
        assert_eq!(arg, want_arg, "pool {n} argmax");
    }
    // A huge value in a dropped row or column must never be chosen.
    let s = odd_pools()[0];
    let mut x = random_vec(s.input_len(), -1.0, 1.0, 52);
    for p in 0..s.batch * s.c {
        let plane = &mut x[p * s.in_h * s.in_w..(p + 1) * s.in_h * s.in_w];
        plane[6 * s.in_w + 3] = 100.0; // last row
        plane[2 * s.in_w + 8] = 100.0; // last column
    }
    let mut out = cpu.zeros(s.output_len());
    let mut arg = cpu.zeros_indices(s.output_len());
    cpu.maxpool_forward(&mut out, &mut arg, &x, &s);
    assert!(out.iter().all(|&v| v < 1.0));
}

#[test]
fn maxpool_backward_matches_finite_differences() {
    let cpu = CpuBackend::new(2);
    for (n, s) in odd_pools().iter().enumerate() {
        let x = distinct_values(s.input_len(), 60 + n as u64);
        let r = random_vec(s.output_len(), -1.0, 1.0, 62 + n as u64);
        let mut out = cpu.zeros(s.output_len());
        let mut arg = cpu.zeros_indices(s.output_len());
        cpu.maxpool_forward(&mut out, &mut arg, &x, s);
        let mut d_in = vec![f32::NAN; s.input_len()];
        cpu.maxpool_backward(&mut d_in, &r, &arg, s);

        let r64 = to_f64(&r);
        let fd = finite_diff(&to_f64(&x), 1e-3, |x| dot(&r64, &pool_values_f64(x, s)));
        assert_close(
            &format!("pool {n} d_input"),
            &d_in,
            &to_f32(&fd),
            ATOL,
            RTOL,
        );
    }
}

#[test]
fn maxpool_ties_pick_the_first_maximum_in_row_major_order() {
    let cpu = CpuBackend::new(1);
    // One 5×5 plane, size 2: windows (0,0), (0,1), (1,0), (1,1); row 4 and column 4 dropped.
    let s = PoolShape {
        batch: 1,
        c: 1,
        in_h: 5,
        in_w: 5,
        size: 2,
    };
    #[rustfmt::skip]
    let x = vec![
        3.0, 3.0,   1.0, 2.0,   9.0,
        3.0, 3.0,   2.0, 0.0,   9.0,
        -1.0, 5.0,  4.0, 4.0,   9.0,
        5.0, 5.0,   4.0, 4.0,   9.0,
        9.0, 9.0,   9.0, 9.0,   9.0,
    ];
    let mut out = cpu.zeros(4);
    let mut arg = cpu.zeros_indices(4);
    cpu.maxpool_forward(&mut out, &mut arg, &x, &s);
    // Constant window → its top-left; (0,1): 2.0 at (0,3) before 2.0 at (1,2);
    // (1,0): 5.0 at (2,1) before (3,0) and (3,1); constant 4.0 window → (2,2).
    assert_eq!(out, [3.0, 2.0, 5.0, 4.0]);
    assert_eq!(arg, [0, 3, 2 * 5 + 1, 2 * 5 + 2]);

    let d_out = vec![1.0, 2.0, 3.0, 4.0];
    let mut d_in = vec![f32::NAN; 25];
    cpu.maxpool_backward(&mut d_in, &d_out, &arg, &s);
    let mut want = vec![0.0; 25];
    want[0] = 1.0;
    want[3] = 2.0;
    want[11] = 3.0;
    want[12] = 4.0;
    assert_eq!(d_in, want, "gradient goes to the chosen element only");

    // A whole constant plane (negative zero included): every window picks its top-left.
    for value in [0.0f32, -0.0, -2.5] {
        let x = vec![value; 25];
        cpu.maxpool_forward(&mut out, &mut arg, &x, &s);
        assert_eq!(arg, [0, 2, 10, 12], "constant {value}");
    }
}

// ---- dense --------------------------------------------------------------------------------

fn dense_inputs(s: &DenseShape, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        random_vec(s.input_len(), -1.0, 1.0, seed),
        random_vec(s.weight_len(), -0.5, 0.5, seed + 1),
        random_vec(s.bias_len(), -0.5, 0.5, seed + 2),
    )
}

#[test]
fn dense_forward_matches_loops() {
    let s = DENSE;
    let cpu = CpuBackend::new(1);
    let (x, w, b) = dense_inputs(&s, 70);
    let (params, b_off, w_off) = params_with(&b, &w, 73);
    let mut out = vec![f32::NAN; s.output_len()];
    cpu.dense_forward(&mut out, &x, &params, w_off, b_off, &s);
    let want = dense_ref(&to_f64(&x), &to_f64(&w), &to_f64(&b), &s);
    assert_close("dense forward", &out, &to_f32(&want), ATOL, RTOL);
}

#[test]
fn a_one_output_dense_layer_is_a_dot_product_per_image_that_keeps_non_finite_values() {
    // One output takes the dot-product path: lengths around its 64-lane blocks, and a tail.
    for in_f in [1, 63, 64, 65, 200, 1000] {
        let s = DenseShape {
            batch: 5,
            in_f,
            out_f: 1,
        };
        let (mut x, w, b) = dense_inputs(&s, 74 + in_f as u64);
        let (params, b_off, w_off) = params_with(&b, &w, 75);
        let want = dense_ref(&to_f64(&x), &to_f64(&w), &to_f64(&b), &s);
        for threads in [1, 2] {
            let cpu = CpuBackend::new(threads);
            let mut out = vec![f32::NAN; s.output_len()];
            cpu.dense_forward(&mut out, &x, &params, w_off, b_off, &s);
            assert_close(
                &format!("one output, in_f {in_f}"),
                &out,
                &to_f32(&want),
                ATOL,
                RTOL,
            );
        }
        // Zero weights (the evaluation's watch for values that are not numbers): images 1
        // and 3 hold an infinity and a NaN, at the end of a block or in the tail.
        x[2 * in_f - 1] = f32::INFINITY;
        x[3 * in_f + in_f / 2] = f32::NAN;
        let zeros = vec![0.0; in_f + 1];
        let mut out = vec![1.0; s.batch];
        CpuBackend::new(2).dense_forward(&mut out, &x, &zeros, 0, in_f, &s);
        let flagged: Vec<bool> = out.iter().map(|v| v.is_nan()).collect();
        assert_eq!(
            flagged,
            [false, true, false, true, false],
            "in_f {in_f}: {out:?}"
        );
        assert!(out.iter().all(|&v| v.is_nan() || v == 0.0), "{out:?}");
    }
}

#[test]
fn dense_backward_input_matches_finite_differences() {
    let s = DENSE;
    let cpu = CpuBackend::new(1);
    let (x, w, b) = dense_inputs(&s, 80);
    let r = random_vec(s.output_len(), -1.0, 1.0, 83);
    let (params, w_off, _) = params_with(&w, &b, 84);
    let mut d_in = vec![f32::NAN; s.input_len()];
    cpu.dense_backward_input(&mut d_in, &r, &params, w_off, &s);

    let (x64, w64, b64, r64) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&r));
    let fd_x = finite_diff(&x64, 1e-3, |x| dot(&r64, &dense_ref(x, &w64, &b64, &s)));
    assert_close("dense d_input", &d_in, &to_f32(&fd_x), ATOL, RTOL);
}

#[test]
fn dense_backward_weight_and_bias_match_finite_differences() {
    let s = DENSE;
    let cpu = CpuBackend::new(1);
    let (x, w, b) = dense_inputs(&s, 80);
    let r = random_vec(s.output_len(), -1.0, 1.0, 83);
    let (mut grads, gw_off, gb_off) =
        params_with(&vec![9.0; s.weight_len()], &vec![9.0; s.bias_len()], 85);
    cpu.dense_backward_weight(&mut grads, gw_off, gb_off, &r, &x, &s);

    let (x64, w64, b64, r64) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&r));
    let fd_w = finite_diff(&w64, 1e-3, |w| dot(&r64, &dense_ref(&x64, w, &b64, &s)));
    let fd_b = finite_diff(&b64, 1e-3, |b| dot(&r64, &dense_ref(&x64, &w64, b, &s)));
    let got_w = &grads[gw_off..gw_off + s.weight_len()];
    let got_b = &grads[gb_off..gb_off + s.bias_len()];
    assert_close("dense d_weight", got_w, &to_f32(&fd_w), ATOL, RTOL);
    assert_close("dense d_bias", got_b, &to_f32(&fd_b), ATOL, RTOL);
}

// ---- activations --------------------------------------------------------------------------

/// Inputs in [−4, 4] kept at least 0.05 away from 0, the kink of relu, elu and selu.
fn activation_inputs(len: usize, seed: u64) -> Vec<f32> {
    random_vec(len, -4.0, 4.0, seed)
        .into_iter()
        .map(|x| {
            if x.abs() < 0.05 {
                x.signum() * 0.05 + x
            } else {
                x
            }
        })
        .collect()
}

#[test]
fn activation_forward_matches_formulas() {
    let cpu = CpuBackend::new(2);
    // Longer than one parallel chunk (16,384) so the split path runs; `len` stops short of
    // the buffer, whose tail must keep its values.
    let len = 40_000;
    let x = activation_inputs(len + 5, 90);
    for act in Activation::ALL {
        let mut out = vec![7.0; len + 5];
        cpu.activation_forward(&mut out, &x, act, len);
        let want: Vec<f32> = x[..len]
            .iter()
            .map(|&v| act_ref(act, v as f64) as f32)
            .collect();
        // exp/tanh in f32 are within a few ulp of the f64 value: 1e-6 relative.
        assert_close(act.name(), &out[..len], &want, 1e-6, 1e-6);
        assert_eq!(out[len..], [7.0; 5], "{} wrote past len", act.name());
    }
}

#[test]
fn activation_backward_matches_finite_differences() {
    let cpu = CpuBackend::new(2);
    let len = 97;
    let x = activation_inputs(len, 100);
    let r = random_vec(len, -1.0, 1.0, 101);
    let r64 = to_f64(&r);
    for act in Activation::ALL {
        let mut y = cpu.zeros(len);
        cpu.activation_forward(&mut y, &x, act, len);
        let mut d_in = vec![f32::NAN; len];
        cpu.activation_backward(&mut d_in, &r, &y, act, len);
        let fd = finite_diff(&to_f64(&x), 1e-4, |x| {
            x.iter().zip(&r64).map(|(&v, g)| g * act_ref(act, v)).sum()
        });
        assert_close(act.name(), &d_in, &to_f32(&fd), ATOL, RTOL);
    }
}

// ---- softmax + cross-entropy ----------------------------------------------------------

const CLASSES: usize = 7;

fn labels_for(batch: usize, seed: u64) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..batch).map(|_| r.below(CLASSES) as u32).collect()
}

#[test]
fn softmax_cross_entropy_forward_matches_reference_and_accumulates_stats() {
    let cpu = CpuBackend::new(1);
    let batch = 5;
    let logits = random_vec(batch * CLASSES, -3.0, 3.0, 110);
    let labels = labels_for(batch, 111);
    let unweighted = vec![1.0; CLASSES];
    let weighted = random_vec(CLASSES, 0.5, 2.0, 112);
    for (weights, eps) in [(unweighted, 0.0), (weighted.clone(), 0.0), (weighted, 0.2)] {
        let (losses, probs_ref) = softmax_ce_ref(
            &to_f64(&logits),
            &labels,
            &to_f64(&weights),
            eps as f64,
            CLASSES,
        );
        let mut probs = vec![f32::NAN; batch * CLASSES];
        // Stats start non-zero: the op adds to them.
        let start = [1.5f32, 2.0, 3.0, 4.25];
        let mut st = start.to_vec();
        cpu.softmax_cross_entropy_forward(
            &mut probs, &mut st, &logits, &labels, &weights, eps, batch, CLASSES,
        );
        assert_close("probs", &probs, &to_f32(&probs_ref), 1e-6, 1e-5);
        let correct = (0..batch)
            .filter(|&b| first_max(&logits[b * CLASSES..(b + 1) * CLASSES]) == labels[b] as usize)
            .count();
        let w_sum: f64 = labels.iter().map(|&y| weights[y as usize] as f64).sum();
        let want = [
            start[0] as f64 + losses.iter().sum::<f64>(),
            start[1] as f64 + correct as f64,
            start[2] as f64 + batch as f64,
            start[3] as f64 + w_sum,
        ];
        assert_close("stats", &st, &to_f32(&want), ATOL, RTOL);

        // A second batch adds again.
        cpu.softmax_cross_entropy_forward(
            &mut probs, &mut st, &logits, &labels, &weights, eps, batch, CLASSES,
        );
        let twice: Vec<f64> = (0..stats::LEN)
            .map(|i| 2.0 * want[i] - start[i] as f64)
            .collect();
        assert_close("stats twice", &st, &to_f32(&twice), ATOL, RTOL);
    }
}

#[test]
fn softmax_cross_entropy_forward_counts_ties_as_the_first_maximum() {
    let cpu = CpuBackend::new(1);
    // Classes 2 and 4 tie for the maximum: only label 2 counts as correct.
    let mut row = vec![0.0f32; CLASSES];
    row[2] = 1.0;
    row[4] = 1.0;
    let logits: Vec<f32> = [row.clone(), row].concat();
    let labels = vec![2u32, 4];
    let mut probs = cpu.zeros(2 * CLASSES);
    let mut st = cpu.zeros(stats::LEN);
    let weights = vec![1.0; CLASSES];
    cpu.softmax_cross_entropy_forward(
        &mut probs, &mut st, &logits, &labels, &weights, 0.0, 2, CLASSES,
    );
    assert_eq!(st[stats::CORRECT], 1.0);
    assert_eq!(st[stats::SAMPLES], 2.0);
}

#[test]
fn softmax_cross_entropy_is_stable_for_logits_of_plus_minus_100() {
    let cpu = CpuBackend::new(1);
    #[rustfmt::skip]
    let logits: Vec<f32> = vec![
        100.0, -100.0, -100.0, -100.0, -100.0, -100.0, -100.0, // label 1: loss ≈ 200
        100.0, 100.0, -100.0, -100.0, -100.0, -100.0, -100.0,  // label 0: loss ln 2
        -100.0, -100.0, -100.0, -100.0, -100.0, -100.0, 100.0, // label 6: loss ≈ 0
        100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0,       // label 3: loss ln 7
    ];
    let labels = vec![1u32, 0, 6, 3];
    let weights = vec![1.0; CLASSES];
    let batch = labels.len();
    let mut probs = cpu.zeros(batch * CLASSES);
    let mut st = cpu.zeros(stats::LEN);
    cpu.softmax_cross_entropy_forward(
        &mut probs, &mut st, &logits, &labels, &weights, 0.0, batch, CLASSES,
    );
    assert!(probs
        .iter()
        .all(|p| p.is_finite() && (0.0..=1.0).contains(p)));
    for (b, row) in probs.chunks(CLASSES).enumerate() {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "row {b} sums to {sum}");
    }
    let (losses, _) = softmax_ce_ref(&to_f64(&logits), &labels, &[1.0; CLASSES], 0.0, CLASSES);
    assert!((losses[0] - 200.0).abs() < 1e-9 && (losses[1] - 2f64.ln()).abs() < 1e-12);
    let total: f64 = losses.iter().sum();
    assert!(st[stats::LOSS_SUM].is_finite());
    assert!(
        (st[stats::LOSS_SUM] as f64 - total).abs() < 1e-4 * total,
        "loss {} want {total}",
        st[stats::LOSS_SUM]
    );
    assert_eq!(
        st[stats::CORRECT],
        2.0,
        "rows 1 (tie, label 0) and 2 are correct"
    );

    let mut d = vec![f32::NAN; batch * CLASSES];
    cpu.softmax_cross_entropy_backward(&mut d, &probs, &labels, &weights, 0.0, batch, CLASSES);
    assert!(d.iter().all(|g| g.is_finite()));
    // With label smoothing too: every −log p[c], 200 for the far classes, stays finite.
    let mut st = cpu.zeros(stats::LEN);
    cpu.softmax_cross_entropy_forward(
        &mut probs, &mut st, &logits, &labels, &weights, 0.1, batch, CLASSES,
    );
    assert!(st[stats::LOSS_SUM].is_finite());
    cpu.softmax_cross_entropy_backward(&mut d, &probs, &labels, &weights, 0.1, batch, CLASSES);
    assert!(d.iter().all(|g| g.is_finite()));
}

#[test]
fn softmax_cross_entropy_backward_matches_finite_differences() {
    let cpu = CpuBackend::new(1);
    let batch = 3;
    let logits = random_vec(batch * CLASSES, -3.0, 3.0, 120);
    let labels = labels_for(batch, 121);
    let weighted = random_vec(CLASSES, 0.5, 2.0, 122);
    for (n, (weights, eps)) in [
        (vec![1.0; CLASSES], 0.0),
        (weighted.clone(), 0.0),
        (vec![1.0; CLASSES], 0.1),
        (weighted, 0.3),
    ]
    .into_iter()
    .enumerate()
    {
        let mut probs = cpu.zeros(batch * CLASSES);
        let mut st = cpu.zeros(stats::LEN);
        cpu.softmax_cross_entropy_forward(
            &mut probs, &mut st, &logits, &labels, &weights, eps, batch, CLASSES,
        );
        let mut d = vec![f32::NAN; batch * CLASSES];
        cpu.softmax_cross_entropy_backward(&mut d, &probs, &labels, &weights, eps, batch, CLASSES);
        // The batch loss is the weighted sum over the batch size (Keras' reduction).
        let w64 = to_f64(&weights);
        let fd = finite_diff(&to_f64(&logits), 1e-4, |x| {
            softmax_ce_ref(x, &labels, &w64, eps as f64, CLASSES)
                .0
                .iter()
                .sum::<f64>()
                / batch as f64
        });
        assert_close(&format!("d_logits {n}"), &d, &to_f32(&fd), 1e-6, RTOL);
    }
}

/// Label smoothing with and without class weights against PyTorch's
/// `cross_entropy(weight=w, label_smoothing=ε)`: the summed loss is the statistics' loss sum,
/// the gradient of the sum over the batch size is `d_logits`, and PyTorch's mean (which
/// divides by `Σ w[y]`) is the loss sum over the statistics' weight sum.
#[test]
fn softmax_cross_entropy_matches_pytorch_label_smoothing() {
    let cpu = CpuBackend::new(1);
    for case in torch_reference()["label_smoothing"].as_array().unwrap() {
        let eps = case["label_smoothing"].as_f64().unwrap() as f32;
        let weights = floats(&case["weights"]);
        let logits = floats(&case["logits"]);
        let labels: Vec<u32> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|y| y.as_u64().unwrap() as u32)
            .collect();
        let batch = labels.len();
        let what = format!("ε {eps}, weights {:?}", &weights[..2]);
        let mut probs = cpu.zeros(batch * CLASSES);
        let mut st = cpu.zeros(stats::LEN);
        cpu.softmax_cross_entropy_forward(
            &mut probs, &mut st, &logits, &labels, &weights, eps, batch, CLASSES,
        );
        let sum = case["loss_sum"].as_f64().unwrap() as f32;
        let mean = case["loss_mean"].as_f64().unwrap() as f32;
        // A row with logits ±90 makes terms of 180: absolute error scales with them.
        assert_close(&format!("loss sum, {what}"), &st[..1], &[sum], 1e-4, 1e-5);
        let ours = st[stats::LOSS_SUM] / st[stats::WEIGHT_SUM];
        assert_close(&format!("loss mean, {what}"), &[ours], &[mean], 1e-4, 1e-5);
        let mut d = vec![f32::NAN; batch * CLASSES];
        cpu.softmax_cross_entropy_backward(&mut d, &probs, &labels, &weights, eps, batch, CLASSES);
        let want: Vec<f32> = floats(&case["grad_of_sum"])
            .iter()
            .map(|g| g / batch as f32)
            .collect();
        assert_close(&format!("d_logits, {what}"), &d, &want, 1e-6, 1e-5);
    }
}

#[test]
fn confusion_accumulate_adds_true_rows_and_first_max_columns() {
    let cpu = CpuBackend::new(1);
    let batch = 40;
    let mut probs = random_vec(batch * CLASSES, 0.0, 1.0, 130);
    // Sample 0 ties classes 1 and 5: the first, 1, is the prediction.
    probs[..CLASSES].copy_from_slice(&[0.1, 0.4, 0.0, 0.0, 0.1, 0.4, 0.0]);
    let labels = labels_for(batch, 131);
    let mut want = vec![3u32; CLASSES * CLASSES]; // starts non-zero: the op adds
    let mut conf = want.clone();
    for b in 0..batch {
        let p = first_max(&probs[b * CLASSES..(b + 1) * CLASSES]);
        want[labels[b] as usize * CLASSES + p] += 1;
    }
    cpu.confusion_accumulate(&mut conf, &probs, &labels, batch, CLASSES);
    assert_eq!(conf, want);
    assert_eq!(conf.iter().sum::<u32>(), 3 * 49 + batch as u32);
    assert_eq!(
        conf[labels[0] as usize * CLASSES + 1],
        want[labels[0] as usize * CLASSES + 1]
    );
}

// ---- data and optimizer -------------------------------------------------------------------

#[test]
fn gather_batch_scales_bytes_by_one_over_255_in_order() {
    let cpu = CpuBackend::new(2);
    let n = 5;
    let mut r = Rng::new(140);
    let mut pixels: Vec<u8> = (0..n * IMAGE_PIXELS).map(|_| r.below(256) as u8).collect();
    pixels[0] = 0;
    pixels[1] = 255;
    let labels: Vec<u8> = (0..n).map(|i| (i * 3 % 7) as u8).collect();
    let images = cpu.upload_images(&pixels, &labels);
    let order = cpu.upload_indices(&[4, 0, 2, 1, 3]);
    let (offset, batch) = (1, 3);
    let mut x = vec![-1.0; (batch + 1) * IMAGE_PIXELS]; // room for one more image
    let mut y = vec![99u32; batch + 1];
    cpu.gather_batch(&mut x, &mut y, &images, &order, offset, batch);

    let rows = [0usize, 2, 1];
    assert_eq!(y, [0, 6, 3, 99]);
    let want: Vec<f32> = rows
        .iter()
        .flat_map(|&r| &pixels[r * IMAGE_PIXELS..(r + 1) * IMAGE_PIXELS])
        .map(|&p| (p as f64 / 255.0) as f32)
        .collect();
    // The multiply by the f32 nearest 1/255 may differ from the division by one ulp.
    assert_close("x", &x[..batch * IMAGE_PIXELS], &want, 0.0, 1.2e-7);
    assert_eq!((x[0], x[1]), (0.0, 1.0));
    assert_eq!(x[5], f32::from(pixels[5]) * PIXEL_SCALE);
    assert!(x[batch * IMAGE_PIXELS..].iter().all(|&v| v == -1.0));
}

#[test]
fn gather_batch_flips_and_shifts_with_repeated_edges() {
    let cpu = CpuBackend::new(2);
    let n = 3;
    let mut r = Rng::new(141);
    let pixels: Vec<u8> = (0..n * IMAGE_PIXELS).map(|_| r.below(256) as u8).collect();
    let labels: Vec<u8> = vec![4, 1, 6];
    let images = cpu.upload_images(&pixels, &labels);
    // (row, flip, dx, dy): plain, mirrored, shifted right/up, mirrored and shifted by the most.
    let entries = [
        (2, false, 0, 0),
        (0, true, 0, 0),
        (1, false, 3, -2),
        (2, true, -7, 7),
    ];
    let order: Vec<u32> = entries
        .iter()
        .map(|&(row, f, dx, dy)| augment::pack(row, f, dx, dy))
        .collect();
    let order = cpu.upload_indices(&order);
    let mut x = vec![-1.0; entries.len() * IMAGE_PIXELS];
    let mut y = vec![99u32; entries.len()];
    cpu.gather_batch(&mut x, &mut y, &images, &order, 0, entries.len());

    assert_eq!(y, [6, 4, 1, 6]);
    let side = IMAGE_SIDE as i64;
    for (i, &(row, flip, dx, dy)) in entries.iter().enumerate() {
        for yy in 0..side {
            for xx in 0..side {
                // Written out from the definition: mirror x, then shift, then clamp to the image.
                let mx = if flip { side - 1 - xx } else { xx };
                let sx = (mx + dx as i64).max(0).min(side - 1);
                let sy = (yy + dy as i64).max(0).min(side - 1);
                let want = pixels[row as usize * IMAGE_PIXELS + (sy * side + sx) as usize];
                let got = x[i * IMAGE_PIXELS + (yy * side + xx) as usize];
                assert_eq!(
                    got,
                    f32::from(want) * PIXEL_SCALE,
                    "entry {i} at ({yy}, {xx})"
                );
            }
        }
    }
    // Spot checks that do not go through the loop above.
    let img = |i: usize| &x[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS];
    assert_eq!(img(1)[0], f32::from(pixels[47]) * PIXEL_SCALE); // top-left ← top-right
    assert_eq!(img(2)[0], f32::from(pixels[IMAGE_PIXELS + 3]) * PIXEL_SCALE); // row clamped
}

/// One warped entry of the tests below: row, flip, shift, zoom, angle in degrees, erasing.
type WarpEntry = (u32, bool, i32, i32, f64, f64, EraseRect);

/// Gathers `entries` with `gather_batch_warped` on the CPU, from offset 1 of a longer order.
fn gather_warped(pixels: &[u8], labels: &[u8], entries: &[WarpEntry], key: u32) -> Vec<f32> {
    let cpu = CpuBackend::new(2);
    let images = cpu.upload_images(pixels, labels);
    let mut order = vec![0];
    let mut warp = ImageWarp::IDENTITY.words().to_vec();
    for &(row, flip, dx, dy, scale, degrees, rect) in entries {
        order.push(augment::pack(row, flip, dx, dy));
        warp.extend(ImageWarp::new(scale, degrees, rect, key).words());
    }
    let (order, warp) = (cpu.upload_indices(&order), cpu.upload_indices(&warp));
    let mut x = vec![-1.0; entries.len() * IMAGE_PIXELS];
    let mut y = vec![99u32; entries.len()];
    cpu.gather_batch_warped(&mut x, &mut y, &images, &order, &warp, 1, entries.len());
    let want: Vec<u32> = entries
        .iter()
        .map(|e| u32::from(labels[e.0 as usize]))
        .collect();
    assert_eq!(y, want, "labels");
    x
}

#[test]
fn gather_batch_warped_scales_rotates_and_erases_by_their_definitions() {
    let n = 3;
    let mut r = Rng::new(142);
    let pixels: Vec<u8> = (0..n * IMAGE_PIXELS).map(|_| r.below(256) as u8).collect();
    let labels: Vec<u8> = vec![5, 0, 3];
    let none = EraseRect::default();
    let rect = EraseRect {
        x: 30,
        y: 2,
        w: 9,
        h: 20,
    };
    let entries: [WarpEntry; 7] = [
        (0, false, 0, 0, 1.2, 0.0, none),    // zoom in
        (1, false, 0, 0, 0.8, 0.0, none),    // zoom out: corners repeat the edges
        (2, false, 0, 0, 1.0, 15.0, none),   // turn counter-clockwise
        (0, false, 0, 0, 1.0, -40.0, none),  // and clockwise
        (1, true, 3, -2, 0.9, 25.0, none),   // mirror, zoom, turn, then shift
        (2, true, -7, 7, 1.1, -170.0, rect), // everything, and a rectangle erased
        (0, false, 0, 0, 1.0, 0.0, rect),    // erasing alone
    ];
    let key = 0x5eed_cafe;
    let x = gather_warped(&pixels, &labels, &entries, key);

    // Written out from the definition in f64: mirror x, then src = c + shift + R·(p − c)/s
    // about the centre c = 23.5 with y down (positive angles turn the picture
    // counter-clockwise), then bilinear between the four pixels around src, rows and columns
    // clamped to the image; erased pixels are the noise bytes.
    let side = IMAGE_SIDE as i64;
    let c = (side - 1) as f64 / 2.0;
    for (i, &(row, flip, dx, dy, scale, degrees, rect)) in entries.iter().enumerate() {
        let img = &pixels[row as usize * IMAGE_PIXELS..][..IMAGE_PIXELS];
        let at = |r: f64, c: f64| {
            let r = (r as i64).clamp(0, side - 1);
            let c = (c as i64).clamp(0, side - 1);
            f64::from(img[(r * side + c) as usize])
        };
        let (sin, cos) = degrees.to_radians().sin_cos();
        for yy in 0..side {
            for xx in 0..side {
                let px = (yy * side + xx) as usize;
                let got = x[i * IMAGE_PIXELS + px];
                let erased = (rect.x as i64..(rect.x + rect.w) as i64).contains(&xx)
                    && (rect.y as i64..(rect.y + rect.h) as i64).contains(&yy);
                if erased {
                    let noise = augment::erase_noise(key, px as u32);
                    assert_eq!(got, f32::from(noise) * PIXEL_SCALE, "entry {i} at {px}");
                    continue;
                }
                let mx = if flip { side - 1 - xx } else { xx } as f64 - c;
                let my = yy as f64 - c;
                let sx = c + dx as f64 + (cos * mx - sin * my) / scale;
                let sy = c + dy as f64 + (sin * mx + cos * my) / scale;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let want = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1.0))
                    + fy * ((1.0 - fx) * at(y0 + 1.0, x0) + fx * at(y0 + 1.0, x0 + 1.0));
                // Positions are rounded to 1/256 pixel (and the matrix to 2⁻¹⁶), at most
                // ≈ 0.003 pixel off along each axis: up to ≈ 1.5 grey levels between random
                // neighbours. A wrong sign, centre or order is off by tens of levels.
                let want = (want / 255.0) as f32;
                assert!(
                    (got - want).abs() <= 0.006,
                    "entry {i} at ({yy}, {xx}): got {got}, want {want}"
                );
            }
        }
    }
    // Interpolation happened: a zoomed image has values between the bytes.
    let between = x[..IMAGE_PIXELS]
        .iter()
        .filter(|&&v| (v * 255.0 - (v * 255.0).round()).abs() > 0.01)
        .count();
    assert!(between > IMAGE_PIXELS / 2, "{between}");
}

#[test]
fn gather_batch_warped_without_a_warp_is_the_plain_gather_and_a_quarter_turn_is_exact() {
    let n = 2;
    let mut r = Rng::new(143);
    let pixels: Vec<u8> = (0..n * IMAGE_PIXELS).map(|_| r.below(256) as u8).collect();
    let labels: Vec<u8> = vec![2, 6];
    let none = EraseRect::default();
    let plain: [WarpEntry; 3] = [
        (1, false, 0, 0, 1.0, 0.0, none),
        (0, true, 0, 0, 1.0, 0.0, none),
        (1, true, -7, 4, 1.0, 0.0, none),
    ];
    let x = gather_warped(&pixels, &labels, &plain, 0);
    let cpu = CpuBackend::new(2);
    let images = cpu.upload_images(&pixels, &labels);
    let order: Vec<u32> = plain
        .iter()
        .map(|e| augment::pack(e.0, e.1, e.2, e.3))
        .collect();
    let mut x_plain = vec![0.0; plain.len() * IMAGE_PIXELS];
    let mut y = vec![0u32; plain.len()];
    cpu.gather_batch(
        &mut x_plain,
        &mut y,
        &images,
        &cpu.upload_indices(&order),
        0,
        3,
    );
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(
        bits(&x) == bits(&x_plain),
        "the identity warp is not the plain gather"
    );

    // A quarter turn counter-clockwise: the top-right corner comes to the top-left, so output
    // (row, col) is source (col, 47 − row), exactly (cos 90° rounds to 0 in fixed point).
    let quarter = gather_warped(&pixels, &labels, &[(0, false, 0, 0, 1.0, 90.0, none)], 0);
    let side = IMAGE_SIDE;
    for row in 0..side {
        for col in 0..side {
            let want = f32::from(pixels[col * side + (side - 1 - row)]) * PIXEL_SCALE;
            assert_eq!(quarter[row * side + col], want, "({row}, {col})");
        }
    }
}

/// The PyTorch reference values of `tests/fixtures/torch_reference.json` (made by
/// `tests/fixtures/torch_reference.py`).
fn torch_reference() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/torch_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect(path)).expect("reference JSON")
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

/// Each rule against `torch.optim` itself: five steps at a changing learning rate, a decayed
/// weight and an undecayed bias, gradients of 0, 1e-8 and −3e-9 among them.
#[test]
fn optimizer_step_matches_pytorch() {
    let cpu = CpuBackend::new(1);
    for case in torch_reference()["optimizers"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let config = OptimizerConfig {
            kind: OptimizerKind::from_name(case["optimizer"].as_str().unwrap()).unwrap(),
            momentum: case["momentum"].as_f64().unwrap(),
            nesterov: case["nesterov"].as_bool().unwrap(),
            weight_decay: case["weight_decay"].as_f64().unwrap(),
            eps: case["eps"].as_f64().unwrap(),
            ..fergpu::settings::Settings::default().optimizer.config()
        };
        let mut params = floats(&case["p0"]);
        let decay = floats(&case["decay"]);
        let (mut m, mut v) = (cpu.zeros(params.len()), cpu.zeros(params.len()));
        let lrs = case["lrs"].as_array().unwrap();
        let grads = case["grads"].as_array().unwrap();
        let want = case["params_after_each_step"].as_array().unwrap();
        for (t, ((lr, g), want)) in lrs.iter().zip(grads).zip(want).enumerate() {
            let step = OptimizerStep::new(&config, lr.as_f64().unwrap(), t as u64 + 1);
            cpu.optimizer_step(&mut params, &floats(g), &mut m, &mut v, &decay, &step);
            // PyTorch rounds its scalars and orders a few operations differently (m by
            // lerp): a few f32 ulps of the parameters.
            assert_close(
                &format!("{name}, step {}", t + 1),
                &params,
                &floats(want),
                2e-7,
                1e-6,
            );
        }
    }
}

/// The same formulas written out in `f64` over 20,000 parameters (more than one parallel
/// chunk), every rule, half the parameters masked from decay.
#[test]
fn optimizer_step_matches_the_formulas_written_out() {
    let cpu = CpuBackend::new(2);
    let n = 20_000;
    let sgd = OptimizerConfig {
        kind: OptimizerKind::Sgd,
        ..fergpu::settings::Settings::default().optimizer.config()
    };
    let configs = [
        fergpu::settings::Settings::default().optimizer.config(),
        OptimizerConfig {
            weight_decay: 0.05,
            ..fergpu::settings::Settings::default().optimizer.config()
        },
        OptimizerConfig {
            kind: OptimizerKind::Adamw,
            weight_decay: 0.05,
            ..fergpu::settings::Settings::default().optimizer.config()
        },
        sgd,
        OptimizerConfig {
            momentum: 0.9,
            weight_decay: 1e-3,
            ..sgd
        },
        OptimizerConfig {
            momentum: 0.8,
            nesterov: true,
            weight_decay: 1e-3,
            ..sgd
        },
    ];
    let decay: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
    for c in configs {
        let p0 = random_vec(n, -1.0, 1.0, 150);
        let mut params = p0.clone();
        let (mut m, mut v) = (cpu.zeros(n), cpu.zeros(n));
        let mut want_p = to_f64(&p0);
        let (mut want_m, mut want_v) = (vec![0.0f64; n], vec![0.0f64; n]);
        for t in 1..=4u64 {
            let lr = 1e-3 * t as f64; // a warm-up's rising rate
            let mut grads = random_vec(n, -2.0, 2.0, 150 + t);
            grads[0] = 0.0; // v = 0: Adam's step must be exactly 0, not NaN
            grads[1] = 1e-8; // tiny: ε in the denominator dominates √v̂
            grads[2] = -3e-9;
            let step = OptimizerStep::new(&c, lr, t);
            cpu.optimizer_step(&mut params, &grads, &mut m, &mut v, &decay, &step);
            let (b1, b2, t32) = (c.beta1, c.beta2, t as i32);
            for i in 0..n {
                let wd = c.weight_decay * decay[i] as f64;
                let mut g = grads[i] as f64;
                match c.kind {
                    OptimizerKind::Adamw => want_p[i] *= 1.0 - lr * wd,
                    _ => g += wd * want_p[i],
                }
                if c.kind == OptimizerKind::Sgd {
                    if c.momentum != 0.0 {
                        want_m[i] = c.momentum * want_m[i] + g;
                        g = if c.nesterov {
                            g + c.momentum * want_m[i]
                        } else {
                            want_m[i]
                        };
                    }
                    want_p[i] -= lr * g;
                } else {
                    want_m[i] = b1 * want_m[i] + (1.0 - b1) * g;
                    want_v[i] = b2 * want_v[i] + (1.0 - b2) * g * g;
                    let m_hat = want_m[i] / (1.0 - b1.powi(t32));
                    let v_hat = want_v[i] / (1.0 - b2.powi(t32));
                    want_p[i] -= lr * m_hat / (v_hat.sqrt() + c.eps);
                }
            }
            let what = format!("{:?} step {t}", c);
            // SGD's buffer sums gradients of up to 2 (with μ ≈ 1): it can cancel to near zero
            // and keep an absolute f32 error of a few 1e-7; Adam's m is (1 − β₁)-scaled.
            let m_atol = if c.kind == OptimizerKind::Sgd {
                1e-6
            } else {
                1e-7
            };
            assert_close(&format!("m, {what}"), &m, &to_f32(&want_m), m_atol, 1e-5);
            assert_close(&format!("v, {what}"), &v, &to_f32(&want_v), 1e-9, 1e-5);
            // Each step moves a parameter by ≤ ~lr·O(1); f32 params carry 6e-8 of rounding.
            assert_close(
                &format!("params, {what}"),
                &params,
                &to_f32(&want_p),
                2e-7,
                1e-6,
            );
        }
        if c.weight_decay == 0.0 {
            assert_eq!(params[0], p0[0], "zero gradient, no decay: no step");
        }
        if c.kind == OptimizerKind::Adam && c.weight_decay == 0.0 {
            // A steady 1e-8 gradient (m̂ ≈ g, v̂ ≈ g²) moves a parameter by lr·g/(|g| + ε) a
            // step, ~0.09·lr with ε = 1e-7: ~9e-4 over these steps' rates (1e-2 in all);
            // without ε it would be 1e-2.
            let moved = (params[1] - p0[1]).abs() as f64;
            assert!(moved < 0.1 * 1e-2, "ε ignored: moved {moved}");
        }
    }
}

// ---- accumulation -----------------------------------------------------------------------

#[test]
fn scale_add_keeps_a_running_mean_and_ignores_what_it_overwrites() {
    let cpu = CpuBackend::new(2);
    // Longer than one parallel chunk; `len` stops short of the buffer.
    let len = 20_000;
    let xs: Vec<Vec<f32>> = (0..4)
        .map(|k| random_vec(len + 3, -4.0, 4.0, 200 + k))
        .collect();
    let mut acc = vec![f32::NAN; len + 3];
    acc[len..].copy_from_slice(&[7.0; 3]);
    for (k, x) in xs.iter().enumerate() {
        let k = k as f32;
        cpu.scale_add(&mut acc, x, k / (k + 1.0), 1.0 / (k + 1.0), len);
    }
    let want: Vec<f32> = (0..len)
        .map(|i| (xs.iter().map(|x| x[i] as f64).sum::<f64>() / 4.0) as f32)
        .collect();
    // Four steps of two roundings each on values up to 4.
    assert_close("running mean", &acc[..len], &want, 1e-6, 1e-6);
    assert_eq!(acc[len..], [7.0; 3], "wrote past len");
    // A plain scaled add.
    let mut a = vec![1.0f32, 2.0, 3.0];
    cpu.scale_add(&mut a, &vec![10.0, 20.0, 30.0], 0.5, 2.0, 2);
    assert_eq!(a, [20.5, 41.0, 3.0]);
}

// ---- threads ------------------------------------------------------------------------------

#[test]
fn two_threads_give_the_same_conv_and_dense_results_as_one() {
    let one = CpuBackend::new(1);
    let two = CpuBackend::new(2);
    // batch 1 hands both threads to gemm inside one image; batch 3 splits images 2 + 1;
    // batch 4 splits 2 + 2, which regroups the weight-gradient sum.
    for batch in [1, 3, 4] {
        let s = Conv2dShape {
            batch,
            in_c: 5,
            in_h: 17,
            in_w: 19,
            out_c: 24,
            k: 3,
            pad: batch % 2,
        };
        let (x, w, b) = conv_inputs(&s, 160 + batch as u64);
        let (params, w_off, b_off) = params_with(&w, &b, 170);
        let d_out = random_vec(s.output_len(), -1.0, 1.0, 171);
        let run = |cpu: &CpuBackend| {
            let mut out = cpu.zeros(s.output_len());
            cpu.conv2d_forward(&mut out, &x, &params, w_off, b_off, &s);
            let mut d_in = cpu.zeros(s.input_len());
            cpu.conv2d_backward_input(&mut d_in, &d_out, &params, w_off, &s);
            let mut grads = cpu.zeros(params.len());
            cpu.conv2d_backward_weight(&mut grads, w_off, b_off, &d_out, &x, &s);
            (out, d_in, grads)
        };
        let (o1, i1, g1) = run(&one);
        let (o2, i2, g2) = run(&two);
        assert_eq!(o1, o2, "conv forward, batch {batch}");
        assert_eq!(i1, i2, "conv d_input, batch {batch}");
        // Each worker sums its own images' weight gradients and the workers' sums are added
        // in worker order: deterministic for a given thread count (checked bit-exact below),
        // but the grouping differs from one thread's running sum, so 1 vs 2 threads agree
        // only to rounding.
        assert_close(
            &format!("conv d_weight, batch {batch}"),
            &g2,
            &g1,
            1e-5,
            1e-5,
        );
        assert_eq!(run(&two).2, g2, "two-thread d_weight is deterministic");
    }

    let s = DenseShape {
        batch: 64,
        in_f: 300,
        out_f: 120,
    };
    let (x, w, b) = dense_inputs(&s, 180);
    let (params, w_off, b_off) = params_with(&w, &b, 183);
    let d_out = random_vec(s.output_len(), -1.0, 1.0, 184);
    let run = |cpu: &CpuBackend| {
        let mut out = cpu.zeros(s.output_len());
        cpu.dense_forward(&mut out, &x, &params, w_off, b_off, &s);
        let mut d_in = cpu.zeros(s.input_len());
        cpu.dense_backward_input(&mut d_in, &d_out, &params, w_off, &s);
        let mut grads = cpu.zeros(params.len());
        cpu.dense_backward_weight(&mut grads, w_off, b_off, &d_out, &x, &s);
        (out, d_in, grads)
    };
    let (o1, i1, g1) = run(&one);
    let (o2, i2, g2) = run(&two);
    assert_eq!(o1, o2, "dense forward");
    assert_eq!(i1, i2, "dense d_input");
    assert_eq!(g1, g2, "dense d_weight");
}

#[test]
fn conv2d_backward_over_image_groups_equals_image_by_image() {
    // Batch 11 makes the backward passes run several groups of images per worker, the last
    // one short (1 thread: 4 + 4 + 3; 2 threads: 4 + 2 and 4 + 1).
    let s = Conv2dShape {
        batch: 11,
        in_c: 3,
        in_h: 9,
        in_w: 8,
        out_c: 6,
        k: 3,
        pad: 1,
    };
    let one = Conv2dShape { batch: 1, ..s };
    let (x, w, b) = conv_inputs(&s, 190);
    let (params, w_off, b_off) = params_with(&w, &b, 191);
    let d_out = random_vec(s.output_len(), -1.0, 1.0, 192);
    for threads in [1, 2] {
        let cpu = CpuBackend::new(threads);
        let mut d_in = cpu.zeros(s.input_len());
        cpu.conv2d_backward_input(&mut d_in, &d_out, &params, w_off, &s);
        let mut grads = cpu.zeros(params.len());
        cpu.conv2d_backward_weight(&mut grads, w_off, b_off, &d_out, &x, &s);

        let mut want_in = Vec::new();
        let mut want_grads = vec![0.0f32; params.len()];
        for i in 0..s.batch {
            let x_i = x[i * one.input_len()..(i + 1) * one.input_len()].to_vec();
            let d_i = d_out[i * one.output_len()..(i + 1) * one.output_len()].to_vec();
            let mut d_in_i = cpu.zeros(one.input_len());
            cpu.conv2d_backward_input(&mut d_in_i, &d_i, &params, w_off, &one);
            want_in.extend_from_slice(&d_in_i);
            let mut g_i = cpu.zeros(params.len());
            cpu.conv2d_backward_weight(&mut g_i, w_off, b_off, &d_i, &x_i, &one);
            for (acc, g) in want_grads.iter_mut().zip(&g_i) {
                *acc += g;
            }
        }
        assert_close(
            &format!("d_input, {threads} threads"),
            &d_in,
            &want_in,
            1e-5,
            1e-5,
        );
        assert_close(
            &format!("d_weight and d_bias, {threads} threads"),
            &grads,
            &want_grads,
            1e-5,
            1e-4,
        );
    }
}

// ---- batch normalisation ----------------------------------------------------------------

/// Batch norm after a conv (batch 3, 5 channels of 7×9) and after a dense layer (batch 4,
/// 6 features: statistics over 4 values each).
const BN_CONV: BatchNormShape = BatchNormShape {
    batch: 3,
    c: 5,
    hw: 63,
};
const BN_DENSE: BatchNormShape = BatchNormShape {
    batch: 4,
    c: 6,
    hw: 1,
};
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// The training forward in f64, straight from the definition: per channel the mean and
/// biased variance over `batch·hw` values, then `γ·(x − μ)/√(σ² + eps) + β`. Returns the
/// output and each channel's `(mean, biased variance)`.
fn bn_train_ref(
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    s: &BatchNormShape,
) -> (Vec<f64>, Vec<(f64, f64)>) {
    let at = |b: usize, c: usize, j: usize| (b * s.c + c) * s.hw + j;
    let n = (s.batch * s.hw) as f64;
    let mut out = vec![0.0; s.len()];
    let mut stats = Vec::new();
    for c in 0..s.c {
        let (mut sum, mut sq) = (0.0, 0.0);
        for b in 0..s.batch {
            for j in 0..s.hw {
                sum += x[at(b, c, j)];
            }
        }
        let mean = sum / n;
        for b in 0..s.batch {
            for j in 0..s.hw {
                sq += (x[at(b, c, j)] - mean).powi(2);
            }
        }
        let var = sq / n;
        for b in 0..s.batch {
            for j in 0..s.hw {
                let i = at(b, c, j);
                out[i] = gamma[c] * (x[i] - mean) / (var + BN_EPS).sqrt() + beta[c];
            }
        }
        stats.push((mean, var));
    }
    (out, stats)
}

/// Offsets of one batch norm's tensors: γ, β at 3 and 3 + c + 2 of the parameters, the
/// running mean and variance at 1 and 1 + c + 4 of the running buffer (padding between, so a
/// wrong offset reads or writes junk that the tests see).
fn bn_layer(c: usize) -> BatchNorm {
    BatchNorm {
        w_off: 3,
        b_off: 3 + c + 2,
        mean_off: 1,
        var_off: 1 + c + 4,
        momentum: BN_MOMENTUM as f32,
        eps: BN_EPS as f32,
    }
}

/// Inputs of one batch norm: x `(batch, c, hw)` (channel 2 constant: zero variance, when
/// `flat_channel`), params `(w_off + …)` with γ in [0.5, 1.5] and β in [−0.5, 0.5], running
/// `(mean_off + …)` with means in [−1, 1] and variances in [0.5, 2], the rest junk.
struct BnCase {
    s: BatchNormShape,
    bn: BatchNorm,
    x: Vec<f32>,
    params: Vec<f32>,
    running: Vec<f32>,
}

fn bn_case(s: BatchNormShape, seed: u64, flat_channel: bool) -> BnCase {
    let bn = bn_layer(s.c);
    let mut x = random_vec(s.len(), -1.0, 1.0, seed);
    if flat_channel {
        for b in 0..s.batch {
            x[(b * s.c + 2) * s.hw..(b * s.c + 3) * s.hw].fill(0.7);
        }
    }
    let mut params = random_vec(bn.b_off + s.c + 3, 5.0, 6.0, seed + 1);
    params[bn.w_off..bn.w_off + s.c].copy_from_slice(&random_vec(s.c, 0.5, 1.5, seed + 2));
    params[bn.b_off..bn.b_off + s.c].copy_from_slice(&random_vec(s.c, -0.5, 0.5, seed + 3));
    let mut running = random_vec(bn.var_off + s.c + 2, 5.0, 6.0, seed + 4);
    running[bn.mean_off..bn.mean_off + s.c].copy_from_slice(&random_vec(s.c, -1.0, 1.0, seed + 5));
    running[bn.var_off..bn.var_off + s.c].copy_from_slice(&random_vec(s.c, 0.5, 2.0, seed + 6));
    BnCase {
        s,
        bn,
        x,
        params,
        running,
    }
}

impl BnCase {
    fn gamma(&self) -> &[f32] {
        &self.params[self.bn.w_off..self.bn.w_off + self.s.c]
    }
    fn beta(&self) -> &[f32] {
        &self.params[self.bn.b_off..self.bn.b_off + self.s.c]
    }
}

#[test]
fn batchnorm_forward_train_matches_the_definition_and_updates_the_running_statistics() {
    for (s, flat) in [(BN_CONV, true), (BN_DENSE, false), (BN_DENSE, true)] {
        let c = bn_case(s, 200, flat);
        let cpu = CpuBackend::new(2);
        let mut out = vec![7.0; s.len() + 3];
        let mut saved = vec![7.0; 2 * s.c];
        let mut running = c.running.clone();
        cpu.batchnorm_forward_train(
            &mut out,
            &mut saved,
            &mut running,
            &c.x,
            &c.params,
            &c.bn,
            &s,
        );
        let (want, stats) = bn_train_ref(&to_f64(&c.x), &to_f64(c.gamma()), &to_f64(c.beta()), &s);
        let what = format!("bn train forward, hw {}", s.hw);
        assert_close(&what, &out[..s.len()], &to_f32(&want), ATOL, RTOL);
        assert_eq!(out[s.len()..], [7.0; 3], "{what}: wrote past the batch");
        let n = (s.batch * s.hw) as f64;
        let m = BN_MOMENTUM;
        let (mut want_mean, mut want_var) = (vec![], vec![]);
        let (mut want_saved_mean, mut want_r) = (vec![], vec![]);
        for (ch, &(mean, var)) in stats.iter().enumerate() {
            let (rm, rv) = (
                c.running[c.bn.mean_off + ch] as f64,
                c.running[c.bn.var_off + ch] as f64,
            );
            // The running variance is the unbiased estimate, n/(n − 1) times the biased one.
            want_mean.push(((1.0 - m) * rm + m * mean) as f32);
            want_var.push(((1.0 - m) * rv + m * var * n / (n - 1.0)) as f32);
            want_saved_mean.push(mean as f32);
            want_r.push((1.0 / (var + BN_EPS).sqrt()) as f32);
        }
        let (mo, vo) = (c.bn.mean_off, c.bn.var_off);
        assert_close(&what, &running[mo..mo + s.c], &want_mean, 1e-6, 1e-5);
        assert_close(&what, &running[vo..vo + s.c], &want_var, 1e-6, 1e-5);
        assert_close(&what, &saved[..s.c], &want_saved_mean, 1e-6, 1e-5);
        assert_close(&what, &saved[s.c..], &want_r, 1e-6, 1e-5);
        // Only the two running tensors moved.
        for (i, (&a, &b)) in running.iter().zip(&c.running).enumerate() {
            let inside = (mo..mo + s.c).contains(&i) || (vo..vo + s.c).contains(&i);
            assert!(inside || a == b, "{what}: running[{i}] changed");
        }
        if flat {
            // Zero variance: x − μ is exactly 0, so the output is β, finite.
            for b in 0..s.batch {
                let plane = &out[(b * s.c + 2) * s.hw..(b * s.c + 3) * s.hw];
                assert!(plane.iter().all(|&v| v == c.beta()[2]), "{what}: {plane:?}");
            }
        }
    }
}

#[test]
fn batchnorm_forward_eval_uses_the_running_statistics() {
    for s in [BN_CONV, BN_DENSE] {
        let c = bn_case(s, 210, false);
        let cpu = CpuBackend::new(2);
        let mut out = vec![7.0; s.len() + 3];
        cpu.batchnorm_forward_eval(&mut out, &c.x, &c.params, &c.running, &c.bn, &s);
        let mut want = vec![0f32; s.len()];
        for (i, w) in want.iter_mut().enumerate() {
            let ch = (i / s.hw) % s.c;
            let mean = c.running[c.bn.mean_off + ch] as f64;
            let var = c.running[c.bn.var_off + ch] as f64;
            let (g, b) = (c.gamma()[ch] as f64, c.beta()[ch] as f64);
            *w = (g * (c.x[i] as f64 - mean) / (var + BN_EPS).sqrt() + b) as f32;
        }
        let what = format!("bn eval forward, hw {}", s.hw);
        assert_close(&what, &out[..s.len()], &want, ATOL, RTOL);
        assert_eq!(out[s.len()..], [7.0; 3], "{what}: wrote past the batch");
    }
}

/// The gradient through the batch statistics: the mean and the variance depend on every
/// input, so each `d_input` element gathers terms from its whole channel. A channel of
/// constant values (zero variance) is included: its gradient stays finite (eps keeps
/// 1/√(σ² + eps) bounded) and matches the finite differences too.
#[test]
fn batchnorm_backward_matches_finite_differences_through_the_batch_statistics() {
    for s in [BN_CONV, BN_DENSE] {
        let c = bn_case(s, 220, true);
        let cpu = CpuBackend::new(2);
        let r = random_vec(s.len(), -1.0, 1.0, 223);
        let mut out = cpu.zeros(s.len());
        let mut saved = cpu.zeros(2 * s.c);
        let mut running = c.running.clone();
        cpu.batchnorm_forward_train(
            &mut out,
            &mut saved,
            &mut running,
            &c.x,
            &c.params,
            &c.bn,
            &s,
        );
        let mut d_in = vec![f32::NAN; s.len() + 2];
        // Stale values in the gradient slots must be overwritten; the rest stays.
        let mut grads = vec![9.0; c.params.len()];
        cpu.batchnorm_backward(
            &mut d_in, &mut grads, &r, &c.x, &saved, &c.params, &c.bn, &s,
        );
        assert!(
            d_in[..s.len()].iter().all(|v| v.is_finite()),
            "d_input not finite"
        );

        let (x64, g64, b64, r64) = (
            to_f64(&c.x),
            to_f64(c.gamma()),
            to_f64(c.beta()),
            to_f64(&r),
        );
        let loss = |x: &[f64], g: &[f64], b: &[f64]| dot(&r64, &bn_train_ref(x, g, b, &s).0);
        let fd_x = finite_diff(&x64, 1e-4, |x| loss(x, &g64, &b64));
        let fd_g = finite_diff(&g64, 1e-4, |g| loss(&x64, g, &b64));
        let fd_b = finite_diff(&b64, 1e-4, |b| loss(&x64, &g64, b));
        let what = format!("bn backward, hw {}", s.hw);
        // d_input subtracts per-channel means of dy: a difference of O(1) terms, so its
        // absolute error is that of the terms (≈ 1e-6 · r ≈ 3e-4 on the constant channel).
        assert_close(
            &format!("{what} d_input"),
            &d_in[..s.len()],
            &to_f32(&fd_x),
            1e-4,
            RTOL,
        );
        let (w, b) = (c.bn.w_off, c.bn.b_off);
        assert_close(
            &format!("{what} d_gamma"),
            &grads[w..w + s.c],
            &to_f32(&fd_g),
            ATOL,
            RTOL,
        );
        assert_close(
            &format!("{what} d_beta"),
            &grads[b..b + s.c],
            &to_f32(&fd_b),
            ATOL,
            RTOL,
        );
        for (i, &v) in grads.iter().enumerate() {
            let inside = (w..w + s.c).contains(&i) || (b..b + s.c).contains(&i);
            assert!(inside || v == 9.0, "{what}: grads[{i}] touched");
        }
    }
}

#[test]
fn batchnorm_over_one_value_per_channel_is_refused() {
    // A dense batch norm on a batch of one image: the variance would be 0/0 and the
    // unbiased estimate n/(n − 1) divides by zero. The model refuses to train such a batch
    // (see tests/layers_models.rs); the op itself asserts rather than return NaN.
    let s = BatchNormShape {
        batch: 1,
        ..BN_DENSE
    };
    let c = bn_case(BN_DENSE, 230, false);
    let result = std::panic::catch_unwind(|| {
        let cpu = CpuBackend::new(1);
        let (mut out, mut saved, mut running) = (vec![0.0; 6], vec![0.0; 12], c.running.clone());
        cpu.batchnorm_forward_train(
            &mut out,
            &mut saved,
            &mut running,
            &c.x,
            &c.params,
            &c.bn,
            &s,
        );
    });
    let msg = result.expect_err("batch norm over 1 value must not run");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("at least 2 values per channel"), "{msg}");
}

// ---- dropout --------------------------------------------------------------------------------

#[test]
fn dropout_forward_keeps_by_the_hash_scales_and_drops_the_share_asked() {
    let cpu = CpuBackend::new(2);
    // Longer than a parallel chunk; `len` stops short of the buffer.
    let len = 40_000;
    let x = random_vec(len + 3, 0.5, 1.5, 240);
    for rate in [0.1f32, 0.5, 0.9] {
        let d = Dropout {
            rate,
            seed: 0x1234_5678_9abc,
            step: 7,
            layer: 3,
        };
        let mut out = vec![7.0; len + 3];
        cpu.dropout_forward(&mut out, &x, &d, len);
        let threshold = ((1.0 - rate as f64) * 2f64.powi(32)) as u64;
        let mut kept = 0;
        for i in 0..len {
            let keep = (dropout_hash(d.seed, d.step, d.layer, i as u32) as u64) < threshold;
            let want = if keep { x[i] / (1.0 - rate) } else { 0.0 };
            assert!(
                (out[i] - want).abs() <= 1e-6 * want.abs(),
                "[{i}] {} vs {want}",
                out[i]
            );
            kept += keep as usize;
        }
        assert_eq!(out[len..], [7.0; 3], "wrote past len");
        // Binomial: the kept share is within 5 standard deviations of 1 − rate.
        let share = kept as f64 / len as f64;
        let sd = (rate as f64 * (1.0 - rate as f64) / len as f64).sqrt();
        assert!(
            (share - (1.0 - rate as f64)).abs() < 5.0 * sd,
            "rate {rate}: kept {share}"
        );
    }
}

#[test]
fn dropout_masks_change_with_every_part_of_the_key() {
    let cpu = CpuBackend::new(1);
    let len = 4096;
    let x = vec![1.0; len];
    let base = Dropout {
        rate: 0.5,
        seed: 9,
        step: 0,
        layer: 4,
    };
    let mask = |d: Dropout| {
        let mut out = vec![0.0; len];
        cpu.dropout_forward(&mut out, &x, &d, len);
        out.iter().map(|&v| v != 0.0).collect::<Vec<bool>>()
    };
    let m0 = mask(base);
    assert_eq!(m0, mask(base), "the same key draws the same mask");
    let others = [
        Dropout { seed: 10, ..base },
        Dropout {
            seed: 9 | 1 << 40,
            ..base
        },
        Dropout { step: 1, ..base },
        Dropout {
            step: 1 << 33,
            ..base
        },
        Dropout { layer: 5, ..base },
    ];
    for d in others {
        let m = mask(d);
        let same = m.iter().zip(&m0).filter(|(a, b)| a == b).count();
        // Independent masks agree on about half the elements (sd 32 of 4096).
        assert!(
            (same as i64 - 2048).abs() < 200,
            "{d:?}: {same} of {len} agree"
        );
    }
}

#[test]
fn dropout_backward_matches_finite_differences() {
    let cpu = CpuBackend::new(1);
    let len = 301;
    let d = Dropout {
        rate: 0.3,
        seed: 5,
        step: 11,
        layer: 2,
    };
    let x = random_vec(len, -1.0, 1.0, 250);
    let r = random_vec(len, -1.0, 1.0, 251);
    let mut d_in = vec![f32::NAN; len];
    cpu.dropout_backward(&mut d_in, &r, &d, len);
    // The forward in f64: the mask from the key, scaled by 1/(1 − rate).
    let scale = 1.0 / (1.0 - d.rate as f64);
    let f = |x: &[f64]| -> Vec<f64> {
        x.iter()
            .enumerate()
            .map(|(i, &v)| if d.keeps(i) { v * scale } else { 0.0 })
            .collect()
    };
    let r64 = to_f64(&r);
    let fd = finite_diff(&to_f64(&x), 1e-3, |x| dot(&r64, &f(x)));
    assert_close("dropout d_input", &d_in, &to_f32(&fd), ATOL, RTOL);
    assert!(d_in.contains(&0.0) && d_in.iter().any(|&v| v != 0.0));
}

// ---- global average pooling -------------------------------------------------------------

const GAP: GlobalAvgPoolShape = GlobalAvgPoolShape {
    batch: 3,
    c: 5,
    hw: 63,
};

fn gap_ref(x: &[f64], s: &GlobalAvgPoolShape) -> Vec<f64> {
    (0..s.batch * s.c)
        .map(|p| x[p * s.hw..(p + 1) * s.hw].iter().sum::<f64>() / s.hw as f64)
        .collect()
}

#[test]
fn globalavgpool_forward_matches_the_mean_of_each_plane() {
    let cpu = CpuBackend::new(2);
    let x = random_vec(GAP.input_len(), -1.0, 1.0, 260);
    let mut out = vec![7.0; GAP.output_len() + 2];
    cpu.globalavgpool_forward(&mut out, &x, &GAP);
    let want = gap_ref(&to_f64(&x), &GAP);
    assert_close(
        "gap forward",
        &out[..GAP.output_len()],
        &to_f32(&want),
        ATOL,
        RTOL,
    );
    assert_eq!(out[GAP.output_len()..], [7.0; 2]);
}

#[test]
fn globalavgpool_backward_matches_finite_differences() {
    let cpu = CpuBackend::new(2);
    let x = random_vec(GAP.input_len(), -1.0, 1.0, 270);
    let r = random_vec(GAP.output_len(), -1.0, 1.0, 271);
    let mut d_in = vec![f32::NAN; GAP.input_len()];
    cpu.globalavgpool_backward(&mut d_in, &r, &GAP);
    let r64 = to_f64(&r);
    let fd = finite_diff(&to_f64(&x), 1e-3, |x| dot(&r64, &gap_ref(x, &GAP)));
    assert_close("gap d_input", &d_in, &to_f32(&fd), ATOL, RTOL);
}
