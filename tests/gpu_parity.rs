//! Op-level parity: every `Backend` method on the GPU against the CPU reference, on seeded
//! random inputs with odd shapes (batch 3, 5 channels, 7×9 images, sizes that are not
//! multiples of any workgroup or tile size), on two GPU backends: one folding grids at the
//! device's limit and one folding at 3 workgroups per dimension, so every kernel's 2-D
//! indexing runs too. One test dispatches more than 65,535 workgroups for real.
//!
//! Buffers are allocated longer than the op's shape and pre-filled with the same random
//! values on both backends, so writes past the shape, or missing writes, show up as
//! mismatches.
//!
//! With no GPU adapter the tests print a note and pass, unless `CI` or `FERGPU_REQUIRE_GPU=1`
//! is set, where they fail.

mod common;

use common::{assert_close, conv_case, random_vec, ConvCase};
use fergpu::augment::{self, AreaRange, ImageWarp, Warp};
use fergpu::backend::cpu::CpuBackend;
use fergpu::backend::gpu::adapter::{format_adapters, list_adapters, AdapterRequest};
use fergpu::backend::gpu::GpuBackend;
use fergpu::backend::{
    stats, Activation, Backend, BatchNorm, Dropout, OptimizerConfig, OptimizerKind, OptimizerStep,
};
use fergpu::device::{run_on, DeviceChoice, Job};
use fergpu::rng::Rng;
use fergpu::shape::{
    BatchNormShape, Conv2dShape, DenseShape, GlobalAvgPoolShape, PoolShape, IMAGE_PIXELS,
};
use fergpu::Error;
use std::sync::OnceLock;

/// Opens the best adapter, folding grids at `max_dim` workgroups per dimension if given.
fn open(max_dim: Option<usize>) -> Option<GpuBackend> {
    match GpuBackend::new(&AdapterRequest::Auto, None) {
        Ok(mut g) => {
            if let Some(d) = max_dim {
                g.set_max_dispatch_dim(d);
            }
            Some(g)
        }
        Err(e) if common::gpu_required() => {
            panic!("a GPU is required (CI / FERGPU_REQUIRE_GPU): {e}")
        }
        Err(e) => {
            eprintln!("note: skipping GPU parity tests, no GPU adapter: {e}");
            None
        }
    }
}

/// The GPU backends under test: device-limit folding, and folding at 3 workgroups.
fn gpus() -> Vec<&'static GpuBackend> {
    static NATIVE: OnceLock<Option<GpuBackend>> = OnceLock::new();
    static FOLDED: OnceLock<Option<GpuBackend>> = OnceLock::new();
    let native = NATIVE.get_or_init(|| open(None)).as_ref();
    let folded = FOLDED.get_or_init(|| open(Some(3))).as_ref();
    native.into_iter().chain(folded).collect()
}

fn cpu() -> CpuBackend {
    CpuBackend::new(1)
}

/// Runs `f` on the CPU reference and on every GPU backend and hands each GPU result to
/// `compare(gpu, cpu)`; then checks the GPU raised no error.
fn parity<T>(f: impl Fn(&dyn ErasedOps) -> T, compare: impl Fn(&T, &T)) {
    let cpu = cpu();
    let want = f(&Ops(&cpu));
    for g in gpus() {
        let got = f(&Ops(g));
        compare(&got, &want);
        g.check().expect("the GPU reported an error");
    }
}

/// Host-in, host-out versions of every op, object-safe so a test body is written once: each
/// uploads its inputs, runs the op (after the ops whose outputs it reads, on the same
/// backend), and downloads what the op wrote. Named like the `Backend` methods.
trait ErasedOps {
    fn conv2d_forward(&self, c: &ConvCase) -> Vec<f32>;
    fn conv2d_backward_input(&self, c: &ConvCase) -> Vec<f32>;
    fn conv2d_backward_weight(&self, c: &ConvCase) -> Vec<f32>;
    fn maxpool_forward(&self, c: &PoolCase) -> (Vec<f32>, Vec<u32>);
    fn maxpool_backward(&self, c: &PoolCase) -> Vec<f32>;
    fn dense_forward(&self, c: &DenseCase) -> Vec<f32>;
    fn dense_backward_input(&self, c: &DenseCase) -> Vec<f32>;
    fn dense_backward_weight(&self, c: &DenseCase) -> Vec<f32>;
    fn activation_forward(&self, c: &ActCase) -> Vec<f32>;
    fn activation_backward(&self, c: &ActCase) -> Vec<f32>;
    fn softmax_cross_entropy_forward(&self, c: &LossCase) -> (Vec<f32>, Vec<f32>);
    fn softmax_cross_entropy_backward(&self, c: &LossCase) -> Vec<f32>;
    fn confusion_accumulate(&self, c: &LossCase) -> Vec<u32>;
    fn optimizer_step(&self, c: &OptimizerCase) -> [Vec<f32>; 3];
    fn gather_batch(&self, c: &GatherCase) -> (Vec<f32>, Vec<u32>);
    fn gather_batch_warped(&self, c: &GatherCase, warp: &[u32]) -> (Vec<f32>, Vec<u32>);
    fn memory(&self, a: &[f32], b: &[f32], idx: &[u32]) -> (Vec<f32>, Vec<f32>, Vec<u32>);
    fn copy(&self, a: &[f32], b: &[f32]) -> Vec<f32>;
    fn batchnorm_forward_train(&self, c: &BnCase) -> [Vec<f32>; 3];
    fn batchnorm_forward_eval(&self, c: &BnCase) -> Vec<f32>;
    fn batchnorm_backward(&self, c: &BnCase) -> [Vec<f32>; 2];
    fn dropout_forward(&self, c: &DropCase) -> Vec<f32>;
    fn dropout_backward(&self, c: &DropCase) -> Vec<f32>;
    fn globalavgpool_forward(&self, c: &GapCase) -> Vec<f32>;
    fn globalavgpool_backward(&self, c: &GapCase) -> Vec<f32>;
    fn conv2d_forward_act(&self, c: &ConvCase, act: Activation) -> Vec<f32>;
    fn scale_add(&self, acc: &[f32], xs: &[Vec<f32>], len: usize) -> Vec<f32>;
}

/// Inputs of the batch-norm ops: x and dy `(batch, c, hw)` + slack (one channel constant),
/// params `(…)` with γ and β at the layer's offsets, running `(…)` with the running mean and
/// variance at theirs, and junk to prefill the outputs.
struct BnCase {
    s: BatchNormShape,
    bn: BatchNorm,
    x: Vec<f32>,
    dy: Vec<f32>,
    params: Vec<f32>,
    running: Vec<f32>,
    junk: Vec<f32>,
}

/// Inputs of dropout: x and dy `(len + 5)`, of which the ops touch `len`, and the key.
struct DropCase {
    d: Dropout,
    x: Vec<f32>,
    dy: Vec<f32>,
    len: usize,
}

/// Inputs of global average pooling: x `(batch, c, hw)` and dy `(batch, c)`, plus slack.
struct GapCase {
    s: GlobalAvgPoolShape,
    x: Vec<f32>,
    dy: Vec<f32>,
    junk: Vec<f32>,
}

struct Ops<'a, B: Backend>(&'a B);

/// Inputs of the two pooling ops: x `(batch, c, in_h, in_w)` + 3 with ties, dy
/// `(batch, c, out_h, out_w)` + 3, and junk to prefill the outputs.
struct PoolCase {
    s: PoolShape,
    x: Vec<f32>,
    dy: Vec<f32>,
    junk: Vec<f32>,
}

/// Inputs of the three dense ops (same layout idea as [`ConvCase`]).
struct DenseCase {
    s: DenseShape,
    w_off: usize,
    b_off: usize,
    params: Vec<f32>,
    x: Vec<f32>,
    dy: Vec<f32>,
    junk: Vec<f32>,
}

/// Inputs of the activation ops: x and dy `(len + 7)`, of which the ops touch `len`.
struct ActCase {
    act: Activation,
    x: Vec<f32>,
    dy: Vec<f32>,
    len: usize,
}

/// Inputs of the loss ops: logits `(batch, classes)`, labels `(batch)`, weights `(classes)`,
/// label smoothing, a running stats buffer `(4)` and confusion `(classes, classes)`.
struct LossCase {
    batch: usize,
    classes: usize,
    smoothing: f32,
    logits: Vec<f32>,
    labels: Vec<u32>,
    weights: Vec<f32>,
    stats: Vec<f32>,
    confusion: Vec<u32>,
}

/// Inputs of the optimizer: params, grads, m, v and the decay mask `(n)`, and two steps'
/// scalars.
struct OptimizerCase {
    p: Vec<f32>,
    g: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    decay: Vec<f32>,
    steps: [OptimizerStep; 2],
}

/// Inputs of the gather: `n` images, an order `(len)` with repeats, and a prefilled x.
struct GatherCase {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    order: Vec<u32>,
    offset: usize,
    batch: usize,
    x_junk: Vec<f32>,
}

impl<B: Backend> ErasedOps for Ops<'_, B> {
    fn conv2d_forward(&self, c: &ConvCase) -> Vec<f32> {
        let be = self.0;
        let (params, x) = (be.upload(&c.params), be.upload(&c.x));
        let mut y = be.upload(&c.junk[..c.s.output_len() + 5]);
        be.conv2d_forward(&mut y, &x, &params, c.w_off, c.b_off, &c.s);
        be.submit();
        be.download(&y)
    }

    fn conv2d_backward_input(&self, c: &ConvCase) -> Vec<f32> {
        let be = self.0;
        let (params, dy) = (be.upload(&c.params), be.upload(&c.dy));
        let mut dx = be.upload(&c.junk[..c.s.input_len() + 5]);
        be.conv2d_backward_input(&mut dx, &dy, &params, c.w_off, &c.s);
        be.submit();
        be.download(&dx)
    }

    fn conv2d_backward_weight(&self, c: &ConvCase) -> Vec<f32> {
        let be = self.0;
        let (x, dy) = (be.upload(&c.x), be.upload(&c.dy));
        let mut grads = be.upload(&c.junk[..c.params.len()]);
        be.conv2d_backward_weight(&mut grads, c.w_off, c.b_off, &dy, &x, &c.s);
        be.submit();
        be.download(&grads)
    }

    fn maxpool_forward(&self, c: &PoolCase) -> (Vec<f32>, Vec<u32>) {
        let be = self.0;
        let x = be.upload(&c.x);
        let mut y = be.upload(&c.junk[..c.s.output_len() + 3]);
        let mut arg = be.upload_indices(&vec![7; c.s.output_len() + 3]);
        be.maxpool_forward(&mut y, &mut arg, &x, &c.s);
        (be.download(&y), be.download_indices(&arg))
    }

    fn maxpool_backward(&self, c: &PoolCase) -> Vec<f32> {
        let be = self.0;
        let (x, dy) = (be.upload(&c.x), be.upload(&c.dy));
        let mut y = be.upload(&c.junk[..c.s.output_len() + 3]);
        let mut arg = be.upload_indices(&vec![7; c.s.output_len() + 3]);
        let mut dx = be.upload(&c.junk[..c.s.input_len() + 3]);
        // The backward pass routes through this backend's own argmax.
        be.maxpool_forward(&mut y, &mut arg, &x, &c.s);
        be.maxpool_backward(&mut dx, &dy, &arg, &c.s);
        be.download(&dx)
    }

    fn dense_forward(&self, c: &DenseCase) -> Vec<f32> {
        let be = self.0;
        let (params, x) = (be.upload(&c.params), be.upload(&c.x));
        let mut y = be.upload(&c.junk[..c.s.output_len() + 5]);
        be.dense_forward(&mut y, &x, &params, c.w_off, c.b_off, &c.s);
        be.download(&y)
    }

    fn dense_backward_input(&self, c: &DenseCase) -> Vec<f32> {
        let be = self.0;
        let (params, dy) = (be.upload(&c.params), be.upload(&c.dy));
        let mut dx = be.upload(&c.junk[..c.s.input_len() + 5]);
        be.dense_backward_input(&mut dx, &dy, &params, c.w_off, &c.s);
        be.download(&dx)
    }

    fn dense_backward_weight(&self, c: &DenseCase) -> Vec<f32> {
        let be = self.0;
        let (x, dy) = (be.upload(&c.x), be.upload(&c.dy));
        let mut grads = be.upload(&c.junk[..c.params.len()]);
        be.dense_backward_weight(&mut grads, c.w_off, c.b_off, &dy, &x, &c.s);
        be.download(&grads)
    }

    fn activation_forward(&self, c: &ActCase) -> Vec<f32> {
        let be = self.0;
        let x = be.upload(&c.x);
        // The output starts as a copy of dy: elements past `len` must keep it.
        let mut y = be.upload(&c.dy);
        be.activation_forward(&mut y, &x, c.act, c.len);
        be.download(&y)
    }

    fn activation_backward(&self, c: &ActCase) -> Vec<f32> {
        let be = self.0;
        let (x, dy) = (be.upload(&c.x), be.upload(&c.dy));
        // Outputs start as copies of dy: elements past `len` must keep them.
        let mut y = be.upload(&be.download(&dy));
        let mut dx = be.upload(&be.download(&dy));
        // The derivative is taken from this backend's own forward output.
        be.activation_forward(&mut y, &x, c.act, c.len);
        be.activation_backward(&mut dx, &dy, &y, c.act, c.len);
        be.download(&dx)
    }

    fn softmax_cross_entropy_forward(&self, c: &LossCase) -> (Vec<f32>, Vec<f32>) {
        let be = self.0;
        let n = c.batch * c.classes;
        let logits = be.upload(&c.logits);
        let labels = be.upload_indices(&c.labels);
        let weights = be.upload(&c.weights);
        let mut stats = be.upload(&c.stats);
        let mut probs = be.upload(&c.logits[..n]);
        // Twice: the statistics accumulate.
        for _ in 0..2 {
            be.softmax_cross_entropy_forward(
                &mut probs,
                &mut stats,
                &logits,
                &labels,
                &weights,
                c.smoothing,
                c.batch,
                c.classes,
            );
        }
        be.submit();
        (be.download(&probs), be.download(&stats))
    }

    fn softmax_cross_entropy_backward(&self, c: &LossCase) -> Vec<f32> {
        let be = self.0;
        let n = c.batch * c.classes;
        let logits = be.upload(&c.logits);
        let labels = be.upload_indices(&c.labels);
        let weights = be.upload(&c.weights);
        let mut stats = be.upload(&c.stats);
        let mut probs = be.upload(&c.logits[..n]);
        let mut d = be.upload(&c.logits[..n]);
        // From this backend's own probabilities.
        be.softmax_cross_entropy_forward(
            &mut probs,
            &mut stats,
            &logits,
            &labels,
            &weights,
            c.smoothing,
            c.batch,
            c.classes,
        );
        be.softmax_cross_entropy_backward(
            &mut d,
            &probs,
            &labels,
            &weights,
            c.smoothing,
            c.batch,
            c.classes,
        );
        be.submit();
        be.download(&d)
    }

    fn confusion_accumulate(&self, c: &LossCase) -> Vec<u32> {
        let be = self.0;
        let n = c.batch * c.classes;
        let logits = be.upload(&c.logits);
        let labels = be.upload_indices(&c.labels);
        let weights = be.upload(&c.weights);
        let mut stats = be.upload(&c.stats);
        let mut probs = be.upload(&c.logits[..n]);
        let mut confusion = be.upload_indices(&c.confusion);
        // Twice: the counts accumulate.
        for _ in 0..2 {
            be.softmax_cross_entropy_forward(
                &mut probs,
                &mut stats,
                &logits,
                &labels,
                &weights,
                c.smoothing,
                c.batch,
                c.classes,
            );
            be.confusion_accumulate(&mut confusion, &probs, &labels, c.batch, c.classes);
        }
        be.submit();
        be.download_indices(&confusion)
    }

    fn optimizer_step(&self, c: &OptimizerCase) -> [Vec<f32>; 3] {
        let be = self.0;
        let (mut p, g) = (be.upload(&c.p), be.upload(&c.g));
        let (mut m, mut v) = (be.upload(&c.m), be.upload(&c.v));
        let decay = be.upload(&c.decay);
        for step in &c.steps {
            be.optimizer_step(&mut p, &g, &mut m, &mut v, &decay, step);
        }
        [be.download(&p), be.download(&m), be.download(&v)]
    }

    fn gather_batch(&self, c: &GatherCase) -> (Vec<f32>, Vec<u32>) {
        let be = self.0;
        let images = be.upload_images(&c.pixels, &c.labels);
        let order = be.upload_indices(&c.order);
        let mut x = be.upload(&c.x_junk);
        let mut labels = be.upload_indices(&vec![99; c.batch + 2]);
        be.gather_batch(&mut x, &mut labels, &images, &order, c.offset, c.batch);
        be.submit();
        (be.download(&x), be.download_indices(&labels))
    }

    fn gather_batch_warped(&self, c: &GatherCase, warp: &[u32]) -> (Vec<f32>, Vec<u32>) {
        let be = self.0;
        let images = be.upload_images(&c.pixels, &c.labels);
        let order = be.upload_indices(&c.order);
        let warp = be.upload_indices(warp);
        let mut x = be.upload(&c.x_junk);
        let mut labels = be.upload_indices(&vec![99; c.batch + 2]);
        be.gather_batch_warped(
            &mut x,
            &mut labels,
            &images,
            &order,
            &warp,
            c.offset,
            c.batch,
        );
        be.submit();
        (be.download(&x), be.download_indices(&labels))
    }

    fn memory(&self, a: &[f32], b: &[f32], idx: &[u32]) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
        let be = self.0;
        let mut src = be.upload(a);
        let mut early = be.zeros(a.len());
        let mut late = be.zeros(a.len());
        // A write after a recorded op must not be seen by it, and must be seen by later ops.
        be.activation_forward(&mut early, &src, Activation::Linear, a.len());
        be.write(&mut src, b);
        be.activation_forward(&mut late, &src, Activation::Linear, a.len());
        let mut ids = be.zeros_indices(idx.len() + 2);
        be.write_indices(&mut ids, idx);
        let early = be.download(&early);
        let late = be.download(&late);
        // A write with nothing recorded goes straight to the queue.
        be.write(&mut src, &a[..3]);
        let mut all = be.download(&src);
        all.extend(late);
        let up = be.upload_indices(idx);
        let mut ids_all = be.download_indices(&ids);
        ids_all.extend(be.download_indices(&up));
        (early, all, ids_all)
    }

    fn scale_add(&self, acc: &[f32], xs: &[Vec<f32>], len: usize) -> Vec<f32> {
        let be = self.0;
        let mut acc = be.upload(acc);
        // The running mean of xs, as test-time augmentation keeps it: the first add does
        // not read acc.
        for (k, x) in xs.iter().enumerate() {
            let x = be.upload(x);
            let k = k as f32;
            be.scale_add(&mut acc, &x, k / (k + 1.0), 1.0 / (k + 1.0), len);
        }
        be.submit();
        be.download(&acc)
    }

    fn copy(&self, a: &[f32], b: &[f32]) -> Vec<f32> {
        let be = self.0;
        let src = be.upload(a);
        // A copy sees the ops recorded before it, later ops see the copy; it stops at `len`.
        let mut doubled = be.zeros(a.len());
        let mut copied = be.upload(b);
        let mut after = be.zeros(a.len());
        be.activation_forward(&mut doubled, &src, Activation::Relu, a.len());
        be.copy(&mut copied, &doubled, a.len() - 2);
        be.activation_forward(&mut after, &copied, Activation::Linear, a.len());
        be.download(&after)
    }

    fn batchnorm_forward_train(&self, c: &BnCase) -> [Vec<f32>; 3] {
        let be = self.0;
        let (x, params) = (be.upload(&c.x), be.upload(&c.params));
        let mut running = be.upload(&c.running);
        let mut y = be.upload(&c.junk[..c.s.len() + 5]);
        let mut saved = be.upload(&c.junk[..2 * c.s.c]);
        // Twice: the running statistics move twice.
        for _ in 0..2 {
            be.batchnorm_forward_train(&mut y, &mut saved, &mut running, &x, &params, &c.bn, &c.s);
        }
        be.submit();
        [be.download(&y), be.download(&saved), be.download(&running)]
    }

    fn batchnorm_forward_eval(&self, c: &BnCase) -> Vec<f32> {
        let be = self.0;
        let (x, params, running) = (be.upload(&c.x), be.upload(&c.params), be.upload(&c.running));
        let mut y = be.upload(&c.junk[..c.s.len() + 5]);
        be.batchnorm_forward_eval(&mut y, &x, &params, &running, &c.bn, &c.s);
        be.submit();
        be.download(&y)
    }

    fn batchnorm_backward(&self, c: &BnCase) -> [Vec<f32>; 2] {
        let be = self.0;
        let (x, dy, params) = (be.upload(&c.x), be.upload(&c.dy), be.upload(&c.params));
        let mut running = be.upload(&c.running);
        let mut y = be.zeros(c.s.len());
        let mut saved = be.zeros(2 * c.s.c);
        let mut dx = be.upload(&c.junk[..c.s.len() + 5]);
        let mut grads = be.upload(&c.junk[..c.params.len()]);
        // From this backend's own batch statistics.
        be.batchnorm_forward_train(&mut y, &mut saved, &mut running, &x, &params, &c.bn, &c.s);
        be.batchnorm_backward(&mut dx, &mut grads, &dy, &x, &saved, &params, &c.bn, &c.s);
        be.submit();
        [be.download(&dx), be.download(&grads)]
    }

    fn dropout_forward(&self, c: &DropCase) -> Vec<f32> {
        let be = self.0;
        let x = be.upload(&c.x);
        // The output starts as a copy of dy: elements past `len` must keep it.
        let mut y = be.upload(&c.dy);
        be.dropout_forward(&mut y, &x, &c.d, c.len);
        be.download(&y)
    }

    fn dropout_backward(&self, c: &DropCase) -> Vec<f32> {
        let be = self.0;
        let dy = be.upload(&c.dy);
        let mut dx = be.upload(&c.x);
        be.dropout_backward(&mut dx, &dy, &c.d, c.len);
        be.download(&dx)
    }

    fn globalavgpool_forward(&self, c: &GapCase) -> Vec<f32> {
        let be = self.0;
        let x = be.upload(&c.x);
        let mut y = be.upload(&c.junk[..c.s.output_len() + 3]);
        be.globalavgpool_forward(&mut y, &x, &c.s);
        be.download(&y)
    }

    fn globalavgpool_backward(&self, c: &GapCase) -> Vec<f32> {
        let be = self.0;
        let dy = be.upload(&c.dy);
        let mut dx = be.upload(&c.junk[..c.s.input_len() + 3]);
        be.globalavgpool_backward(&mut dx, &dy, &c.s);
        be.download(&dx)
    }

    fn conv2d_forward_act(&self, c: &ConvCase, act: Activation) -> Vec<f32> {
        let be = self.0;
        let (params, x) = (be.upload(&c.params), be.upload(&c.x));
        let mut pre = be.upload(&c.junk[..c.s.output_len() + 5]);
        let mut y = be.upload(&c.junk[..c.s.output_len() + 5]);
        be.conv2d_forward_act(&mut y, &mut pre, &x, &params, c.w_off, c.b_off, &c.s, act);
        be.submit();
        be.download(&y)
    }
}

/// Values on a coarse grid (multiples of 1/4 in [-2, 2)), so windows and rows have ties.
fn with_ties(len: usize, seed: u64) -> Vec<f32> {
    random_vec(len, -2.0, 2.0, seed)
        .into_iter()
        .map(|v| (v * 4.0).floor() / 4.0)
        .collect()
}

/// The convolution cases: an odd shape, one wider than a 32-row tile with a kernel of 2, the
/// first layer of the padded presets (48×48, "same"), whose weight gradient takes the
/// split-K path, the odd shape with "same" padding, and a 5×5 kernel padded by 2 over a
/// 4×6 input (taps that see only padding).
fn conv_cases() -> Vec<ConvCase> {
    let odd = Conv2dShape {
        batch: 3,
        in_c: 5,
        in_h: 7,
        in_w: 9,
        out_c: 6,
        k: 3,
        pad: 0,
    };
    let wide = Conv2dShape {
        out_c: 37,
        in_c: 33,
        k: 2,
        ..odd
    };
    let first = Conv2dShape {
        batch: 3,
        in_c: 1,
        in_h: 48,
        in_w: 48,
        out_c: 5,
        k: 3,
        pad: 1,
    };
    let same = Conv2dShape { pad: 1, ..odd };
    let k5_pad2 = Conv2dShape {
        batch: 2,
        in_c: 3,
        in_h: 4,
        in_w: 6,
        out_c: 5,
        k: 5,
        pad: 2,
    };
    [odd, wide, first, same, k5_pad2]
        .into_iter()
        .enumerate()
        .map(|(i, s)| conv_case(s, 10 + i as u64))
        .collect()
}

// Sums of ≤ 300 products of values ≤ 1 in another order: float error ≲ 1e-5 relative to the
// sum of magnitudes, for every convolution op below.

#[test]
fn conv2d_forward_matches_the_reference() {
    for (i, c) in conv_cases().iter().enumerate() {
        parity(
            |o| o.conv2d_forward(c),
            |got, want| assert_close(&format!("conv {i} forward"), got, want, 1e-4, 1e-4),
        );
    }
}

#[test]
fn conv2d_backward_input_matches_the_reference() {
    for (i, c) in conv_cases().iter().enumerate() {
        parity(
            |o| o.conv2d_backward_input(c),
            |got, want| assert_close(&format!("conv {i} d_input"), got, want, 1e-4, 1e-4),
        );
    }
}

#[test]
fn conv2d_backward_weight_matches_the_reference() {
    for (i, c) in conv_cases().iter().enumerate() {
        // The split-K weight gradient (case 2) sums 6,348 products, hence the larger bound.
        let atol = if i == 2 { 2e-3 } else { 1e-4 };
        parity(
            |o| o.conv2d_backward_weight(c),
            |got, want| assert_close(&format!("conv {i} grads"), got, want, atol, 1e-4),
        );
    }
}

#[test]
fn conv2d_forward_act_matches_the_reference_for_every_activation() {
    let cases = conv_cases();
    for (i, act) in Activation::ALL.into_iter().enumerate() {
        // Each activation on another case, the padded ones included.
        let c = &cases[i % cases.len()];
        parity(
            |o| o.conv2d_forward_act(c, act),
            |got, want| {
                let what = format!("conv {} forward + {}", i % cases.len(), act.name());
                assert_close(&what, got, want, 1e-4, 1e-4)
            },
        );
    }
}

/// Pools of size 2 and 3 over 7×9 planes (both drop a trailing row or column), with ties.
fn pool_cases() -> Vec<PoolCase> {
    [2usize, 3]
        .into_iter()
        .enumerate()
        .map(|(i, size)| {
            let s = PoolShape {
                batch: 3,
                c: 5,
                in_h: 7,
                in_w: 9,
                size,
            };
            PoolCase {
                s,
                x: with_ties(s.input_len() + 3, 20 + i as u64),
                dy: random_vec(s.output_len() + 3, -1.0, 1.0, 30 + i as u64),
                junk: random_vec(s.input_len() + 3, 5.0, 6.0, 40),
            }
        })
        .collect()
}

#[test]
fn maxpool_forward_matches_the_reference_and_breaks_ties_alike() {
    for c in pool_cases() {
        parity(
            |o| o.maxpool_forward(&c),
            |got, want| {
                // A maximum is a selection: exact.
                assert_close("maxpool forward", &got.0, &want.0, 0.0, 0.0);
                assert_eq!(got.1, want.1, "maxpool argmax (size {})", c.s.size);
            },
        );
    }
}

#[test]
fn maxpool_backward_matches_the_reference() {
    for c in pool_cases() {
        parity(
            |o| o.maxpool_backward(&c),
            // Routing a gradient is a copy: exact.
            |got, want| assert_close("maxpool backward", got, want, 0.0, 0.0),
        );
    }
}

fn dense_case() -> DenseCase {
    let s = DenseShape {
        batch: 3,
        in_f: 37,
        out_f: 33,
    };
    let w_off = 5;
    let b_off = w_off + s.weight_len() + 2;
    let n = b_off + s.out_f + 3;
    DenseCase {
        s,
        w_off,
        b_off,
        params: random_vec(n, -0.5, 0.5, 50),
        x: random_vec(s.input_len() + 4, -1.0, 1.0, 51),
        dy: random_vec(s.output_len() + 4, -1.0, 1.0, 52),
        junk: random_vec(n + 16, 5.0, 6.0, 53),
    }
}

// Sums of ≤ 37 products of values ≤ 1 in another order, for every dense op below.

#[test]
fn dense_forward_matches_the_reference() {
    let c = dense_case();
    parity(
        |o| o.dense_forward(&c),
        |got, want| assert_close("dense forward", got, want, 1e-5, 1e-5),
    );
}

#[test]
fn dense_backward_input_matches_the_reference() {
    let c = dense_case();
    parity(
        |o| o.dense_backward_input(&c),
        |got, want| assert_close("dense d_input", got, want, 1e-5, 1e-5),
    );
}

#[test]
fn dense_backward_weight_matches_the_reference() {
    let c = dense_case();
    parity(
        |o| o.dense_backward_weight(&c),
        |got, want| assert_close("dense grads", got, want, 1e-5, 1e-5),
    );
}

/// One case per activation over 1001 elements of 1008-long buffers.
fn act_cases() -> Vec<ActCase> {
    let n = 1001;
    let x = random_vec(n + 7, -4.0, 4.0, 60);
    let dy = random_vec(n + 7, -1.0, 1.0, 61);
    Activation::ALL
        .into_iter()
        .map(|act| ActCase {
            act,
            x: x.clone(),
            dy: dy.clone(),
            len: n,
        })
        .collect()
}

// GPU exp/tanh are a few ulp from Rust's libm; outputs are O(1)..O(4).

#[test]
fn activation_forward_matches_the_reference() {
    for c in act_cases() {
        let what = format!("{} forward", c.act.name());
        parity(
            |o| o.activation_forward(&c),
            |got, want| assert_close(&what, got, want, 2e-6, 2e-5),
        );
    }
}

#[test]
fn activation_backward_matches_the_reference() {
    for c in act_cases() {
        let what = format!("{} backward", c.act.name());
        parity(
            |o| o.activation_backward(&c),
            |got, want| assert_close(&what, got, want, 2e-6, 2e-5),
        );
    }
}

/// Batches of 5 and 70 over 7 classes, with ties, one row far apart (a probability
/// underflows to 0) and one all-equal row, without and with label smoothing; stats and
/// confusion start non-zero.
fn loss_cases() -> Vec<LossCase> {
    [(5usize, 0.0), (70, 0.0), (5, 0.1), (70, 0.25)]
        .into_iter()
        .enumerate()
        .map(|(i, (batch, smoothing))| {
            let i = i % 2;
            let classes = 7;
            let mut rng = Rng::new(70 + i as u64);
            let mut logits = with_ties(batch * classes + 3, 71 + i as u64);
            logits[classes..2 * classes].copy_from_slice(&[90.0, -90.0, 0.0, 3.0, 90.0, 1.0, 2.0]);
            logits[2 * classes..3 * classes].fill(0.5);
            LossCase {
                batch,
                classes,
                smoothing,
                logits,
                labels: (0..batch + 2).map(|_| rng.below(classes) as u32).collect(),
                weights: random_vec(classes, 0.5, 2.0, 72),
                stats: vec![1.5, 2.0, 3.0, 0.5],
                confusion: (0..classes * classes)
                    .map(|_| rng.below(4) as u32)
                    .collect(),
            }
        })
        .collect()
}

// exp and ln of O(1)..O(90) values: a few ulp; the loss sum adds ≤ 140 of them.

#[test]
fn softmax_cross_entropy_forward_matches_the_reference() {
    for c in loss_cases() {
        parity(
            |o| o.softmax_cross_entropy_forward(&c),
            |got, want| {
                assert_close("probs", &got.0, &want.0, 1e-6, 1e-5);
                assert_close("stats", &got.1, &want.1, 1e-4, 1e-5);
                assert_eq!(
                    got.1[stats::CORRECT],
                    want.1[stats::CORRECT],
                    "correct count"
                );
            },
        );
    }
}

#[test]
fn softmax_cross_entropy_backward_matches_the_reference() {
    for c in loss_cases() {
        parity(
            |o| o.softmax_cross_entropy_backward(&c),
            |got, want| assert_close("d_logits", got, want, 1e-6, 1e-5),
        );
    }
}

#[test]
fn confusion_accumulate_matches_the_reference() {
    for c in loss_cases() {
        parity(
            |o| o.confusion_accumulate(&c),
            |got, want| assert_eq!(got, want, "confusion counts"),
        );
    }
}

/// Every rule: adam and adamw with weight decay, sgd plain, with momentum, and with Nesterov
/// momentum and weight decay; steps 3 and 4, half the parameters masked from decay.
#[test]
fn optimizer_step_matches_the_reference() {
    let n = 1001;
    let adam = OptimizerConfig {
        weight_decay: 0.01,
        ..fergpu::settings::Settings::default().optimizer.config()
    };
    let sgd = OptimizerConfig {
        kind: OptimizerKind::Sgd,
        ..fergpu::settings::Settings::default().optimizer.config()
    };
    let configs = [
        adam,
        OptimizerConfig {
            kind: OptimizerKind::Adamw,
            ..adam
        },
        sgd,
        OptimizerConfig {
            momentum: 0.9,
            ..sgd
        },
        OptimizerConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            ..sgd
        },
    ];
    for config in configs {
        let c = OptimizerCase {
            p: random_vec(n, -1.0, 1.0, 80),
            g: random_vec(n, -0.1, 0.1, 81),
            m: random_vec(n, -0.01, 0.01, 82),
            v: random_vec(n, 0.0, 1e-3, 83),
            decay: (0..n).map(|i| (i % 2) as f32).collect(),
            steps: [3, 4].map(|t| OptimizerStep::new(&config, 1e-2, t)),
        };
        let what = format!("{config:?}");
        parity(
            |o| o.optimizer_step(&c),
            |got, want| {
                // Same operation order; sqrt and division are correctly rounded or within
                // 1 ulp.
                assert_close(&format!("params, {what}"), &got[0], &want[0], 1e-7, 1e-6);
                assert_close(&format!("m, {what}"), &got[1], &want[1], 1e-9, 1e-6);
                assert_close(&format!("v, {what}"), &got[2], &want[2], 1e-12, 1e-6);
            },
        );
    }
}

#[test]
fn gather_batch_matches_the_reference() {
    let n = 10;
    let mut rng = Rng::new(90);
    let c = GatherCase {
        pixels: (0..n * IMAGE_PIXELS)
            .map(|_| rng.below(256) as u8)
            .collect(),
        labels: (0..n).map(|_| rng.below(7) as u8).collect(),
        // Repeated rows, some plain and some packed with a flip and a shift (up to the most
        // an entry holds, so the sign extension and the edge clamps are both exercised).
        order: (0..13)
            .map(|i| {
                let row = rng.below(n) as u32;
                let dx = rng.below(15) as i32 - 7;
                let dy = rng.below(15) as i32 - 7;
                if i % 3 == 0 {
                    row
                } else {
                    augment::pack(row, i % 2 == 0, dx, dy)
                }
            })
            .collect(),
        offset: 4,
        batch: 8,
        x_junk: random_vec(9 * IMAGE_PIXELS + 1, 5.0, 6.0, 91),
    };
    parity(
        |o| o.gather_batch(&c),
        |got, want| {
            // The same single multiply by the f32 nearest 1/255: bit-identical.
            assert_close("gathered x", &got.0, &want.0, 0.0, 0.0);
            assert_eq!(got.1, want.1, "gathered labels");
        },
    );
}

#[test]
fn gather_batch_warped_matches_the_reference() {
    let n = 10;
    let mut rng = Rng::new(92);
    let len = 13;
    let c = GatherCase {
        pixels: (0..n * IMAGE_PIXELS)
            .map(|_| rng.below(256) as u8)
            .collect(),
        labels: (0..n).map(|_| rng.below(7) as u8).collect(),
        // Every entry flipped or not and shifted by up to the most an entry holds.
        order: (0..len)
            .map(|i| {
                let row = rng.below(n) as u32;
                let dx = rng.below(15) as i32 - 7;
                let dy = rng.below(15) as i32 - 7;
                augment::pack(row, i % 2 == 0, dx, dy)
            })
            .collect(),
        offset: 4,
        batch: 8,
        x_junk: random_vec(9 * IMAGE_PIXELS + 1, 5.0, 6.0, 93),
    };
    // The widest ranges the settings allow (zoom 0.5–1.5, any angle, large rectangles), so
    // negative positions, the edge clamps and every rounding are exercised; one position
    // keeps the identity.
    let wide = Warp {
        scale: augment::MAX_SCALE,
        rotate: augment::MAX_ROTATE,
        erase: 0.7,
        erase_area: AreaRange {
            min: 0.05,
            max: 0.6,
        },
    };
    let mut warp = wide.draw(&mut rng, len);
    let identity = ImageWarp::IDENTITY.words();
    warp[5 * augment::WARP_WORDS..6 * augment::WARP_WORDS].copy_from_slice(&identity);
    parity(
        |o| o.gather_batch_warped(&c, &warp),
        |got, want| {
            // Integer arithmetic and one multiply by the same f32: bit-identical.
            assert_close("warped x", &got.0, &want.0, 0.0, 0.0);
            assert_eq!(got.1, want.1, "gathered labels");
        },
    );
}

#[test]
fn memory_ops_round_trip_and_writes_keep_their_order() {
    let a = random_vec(37, -1.0, 1.0, 100);
    let b = random_vec(37, -1.0, 1.0, 101);
    let idx: Vec<u32> = (0..11).map(|i| i * 7 + 3).collect();
    parity(
        |o| o.memory(&a, &b, &idx),
        |got, want| {
            // Copies only: exact.
            assert_eq!(got, want);
        },
    );
}

#[test]
fn copy_matches_the_reference_and_keeps_its_order() {
    let a = random_vec(37, -1.0, 1.0, 100);
    let b = random_vec(37, -1.0, 1.0, 101);
    parity(
        |o| o.copy(&a, &b),
        |got, want| {
            // Copies and relu only: exact.
            assert_eq!(got, want);
        },
    );
}

#[test]
fn scale_add_matches_the_reference() {
    // 1001 of 1008 elements; the accumulator starts with NaNs (never read by the first add)
    // and its tail must keep its values.
    let len = 1001;
    let mut acc = random_vec(len + 7, 5.0, 6.0, 120);
    acc[..10].fill(f32::NAN);
    let xs: Vec<Vec<f32>> = (0..10)
        .map(|k| random_vec(len + 7, -8.0, 8.0, 121 + k))
        .collect();
    parity(
        |o| o.scale_add(&acc, &xs, len),
        // Two roundings a step, in the same order: a few ulp of values up to 8.
        |got, want| assert_close("running mean", got, want, 1e-6, 1e-6),
    );
}

#[test]
fn a_grid_beyond_65535_workgroups_folds_into_two_dimensions() {
    let Some(&gpu) = gpus().first() else {
        return;
    };
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    // Relu over more elements than one grid row of 256-wide workgroups can cover.
    let len = max * 256 + 1000;
    let x = random_vec(len, -1.0, 1.0, 110);
    let xt = gpu.upload(&x);
    let mut yt = gpu.zeros(len);
    gpu.activation_forward(&mut yt, &xt, Activation::Relu, len);
    let got = gpu.download(&yt);
    let want: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
    // Relu is exact.
    assert_close("relu over a 2-D grid", &got, &want, 0.0, 0.0);
    gpu.check().expect("the GPU reported an error");
}

// ---- batch normalisation, dropout, global average pooling --------------------------------

/// Batch norm after a conv (5 channels of 7×9, more channels than the folded grid's 3
/// workgroups per row), after a dense layer (37 features over a batch of 3), and over 600
/// values per channel (more than a workgroup's 256 invocations). Channel 1 is constant (zero
/// variance) in each.
fn bn_cases() -> Vec<BnCase> {
    [(3, 5, 63), (3, 37, 1), (2, 3, 300)]
        .into_iter()
        .enumerate()
        .map(|(i, (batch, c, hw))| {
            let s = BatchNormShape { batch, c, hw };
            let seed = 120 + 10 * i as u64;
            let bn = BatchNorm {
                w_off: 3,
                b_off: 3 + c + 2,
                mean_off: 1,
                var_off: 1 + c + 4,
                momentum: 0.1,
                eps: 1e-5,
            };
            let mut x = random_vec(s.len() + 5, -1.0, 1.0, seed);
            for b in 0..batch {
                x[(b * c + 1) * hw..(b * c + 2) * hw].fill(0.7);
            }
            let mut params = random_vec(bn.b_off + c + 3, -1.0, 1.0, seed + 1);
            params[bn.w_off..bn.w_off + c].copy_from_slice(&random_vec(c, 0.5, 1.5, seed + 2));
            let mut running = random_vec(bn.var_off + c + 2, -1.0, 1.0, seed + 3);
            running[bn.var_off..bn.var_off + c].copy_from_slice(&random_vec(c, 0.5, 2.0, seed + 4));
            BnCase {
                s,
                bn,
                x,
                dy: random_vec(s.len() + 5, -1.0, 1.0, seed + 5),
                params,
                running,
                junk: random_vec(s.len().max(params_len(c)) + 16, 5.0, 6.0, seed + 6),
            }
        })
        .collect()
}

/// Length of a [`bn_cases`] parameter buffer for `c` channels.
fn params_len(c: usize) -> usize {
    3 + c + 2 + c + 3
}

// Sums of ≤ 600 values in another order (the CPU in f64, the GPU in f32 with the corrected
// two-pass mean): the statistics agree to ~1e-6 relative, and the constant channel's
// x − μ is exactly 0 on both (1/√eps ≈ 316 would magnify any rounding left in μ).

#[test]
fn batchnorm_forward_train_matches_the_reference() {
    for (i, c) in bn_cases().iter().enumerate() {
        parity(
            |o| o.batchnorm_forward_train(c),
            |got, want| {
                assert_close(&format!("bn {i} y"), &got[0], &want[0], 1e-5, 1e-5);
                assert_close(&format!("bn {i} saved"), &got[1], &want[1], 1e-6, 1e-5);
                assert_close(&format!("bn {i} running"), &got[2], &want[2], 1e-6, 1e-5);
            },
        );
    }
}

#[test]
fn batchnorm_forward_eval_matches_the_reference() {
    for (i, c) in bn_cases().iter().enumerate() {
        parity(
            |o| o.batchnorm_forward_eval(c),
            // The same per-channel expression on both: rounding only.
            |got, want| assert_close(&format!("bn {i} eval"), got, want, 1e-6, 1e-6),
        );
    }
}

#[test]
fn batchnorm_backward_matches_the_reference() {
    for (i, c) in bn_cases().iter().enumerate() {
        parity(
            |o| o.batchnorm_backward(c),
            |got, want| {
                assert_close(&format!("bn {i} d_input"), &got[0], &want[0], 1e-5, 1e-5);
                assert_close(&format!("bn {i} grads"), &got[1], &want[1], 1e-5, 1e-5);
            },
        );
    }
}

/// Dropout over 1001 elements at three rates, with a seed and a step that use both of
/// their words.
fn drop_cases() -> Vec<DropCase> {
    let n = 1001;
    [0.1f32, 0.5, 0.8]
        .into_iter()
        .enumerate()
        .map(|(i, rate)| DropCase {
            d: Dropout {
                rate,
                seed: 0xfeed_0000_0001 + i as u64,
                step: (1 << 32) + 17,
                layer: 6 + i as u32,
            },
            x: random_vec(n + 5, -1.0, 1.0, 140 + i as u64),
            dy: random_vec(n + 5, -1.0, 1.0, 150 + i as u64),
            len: n,
        })
        .collect()
}

#[test]
fn dropout_forward_matches_the_reference() {
    for c in drop_cases() {
        parity(
            |o| o.dropout_forward(&c),
            // The same integer hash draws the same mask; the scaling is one multiply: exact.
            |got, want| assert_eq!(got, want, "dropout mask or scaling at rate {}", c.d.rate),
        );
    }
}

#[test]
fn dropout_backward_matches_the_reference() {
    for c in drop_cases() {
        parity(
            |o| o.dropout_backward(&c),
            |got, want| assert_eq!(got, want, "dropout backward at rate {}", c.d.rate),
        );
    }
}

fn gap_case() -> GapCase {
    let s = GlobalAvgPoolShape {
        batch: 3,
        c: 5,
        hw: 63,
    };
    GapCase {
        s,
        x: random_vec(s.input_len() + 3, -1.0, 1.0, 160),
        dy: random_vec(s.output_len() + 3, -1.0, 1.0, 161),
        junk: random_vec(s.input_len() + 3, 5.0, 6.0, 162),
    }
}

#[test]
fn globalavgpool_forward_matches_the_reference() {
    let c = gap_case();
    parity(
        |o| o.globalavgpool_forward(&c),
        // Means of 63 values summed in another order.
        |got, want| assert_close("gap forward", got, want, 1e-6, 1e-5),
    );
}

#[test]
fn globalavgpool_backward_matches_the_reference() {
    let c = gap_case();
    parity(
        |o| o.globalavgpool_backward(&c),
        // One division, the same on both: exact.
        |got, want| assert_close("gap backward", got, want, 0.0, 0.0),
    );
}

// ---- errors and device choice --------------------------------------------------------------

#[test]
fn an_unmet_adapter_request_is_a_typed_error_naming_what_exists() {
    let Some(&gpu) = gpus().first() else {
        return;
    };
    let listed = list_adapters(None);
    assert!(listed.iter().any(|a| a.name == gpu.adapter().name));
    assert!(format_adapters(&listed).contains(&gpu.adapter().name));
    match GpuBackend::new(&AdapterRequest::Name("no such adapter 0xfe".into()), None) {
        Err(Error::NoAdapter { wanted, found }) => {
            assert_eq!(wanted, "no such adapter 0xfe");
            assert!(found.contains(&gpu.adapter().name), "{found}");
        }
        other => panic!("expected NoAdapter, got {other:?}"),
    }
}

#[test]
fn a_buffer_too_large_to_bind_is_a_gpu_error_not_a_panic() {
    if gpus().is_empty() {
        return;
    }
    // A device of its own: once it reported an error it is not trusted again.
    let gpu = open(None).expect("opened above");
    let limit = gpu.limits().max_storage_buffer_binding_size as usize;
    if limit > 1 << 30 {
        eprintln!("note: binding limit {limit} too large to exceed cheaply; skipped");
        return;
    }
    let images = gpu.upload_images(&[7; IMAGE_PIXELS], &[3]);
    let order = gpu.upload_indices(&[0]);
    let mut x = gpu.zeros(limit / 4 + 1);
    let mut labels = gpu.zeros_indices(1);
    gpu.gather_batch(&mut x, &mut labels, &images, &order, 0, 1);
    gpu.submit();
    let err = gpu
        .check()
        .expect_err("an oversized binding must be reported");
    assert!(matches!(err, Error::Gpu(_)), "{err:?}");
    assert!(err.to_string().contains("--batch-size"), "{err}");
    // The device still answers (the invalid launch was never recorded).
    assert_eq!(gpu.download_indices(&labels), vec![0]);
}

/// Reports the device it ran on and a round-tripped value.
struct Echo;

impl Job for Echo {
    type Output = (String, f32);
    fn run<B: Backend>(self, be: &B, device: &str) -> fergpu::Result<(String, f32)> {
        let t = be.upload(&[1.0, 2.5]);
        Ok((device.to_string(), be.download(&t)[1]))
    }
}

fn choice(adapter: &str, api: Option<&str>) -> DeviceChoice {
    DeviceChoice {
        adapter: adapter.into(),
        gpu_backend: api.map(String::from),
        threads: 1,
        ..DeviceChoice::default()
    }
}

#[test]
fn device_choice_runs_jobs_on_the_cpu_or_the_chosen_adapter() {
    let (name, v) = run_on(&choice("cpu", None), Echo).unwrap();
    assert!(name.starts_with("CPU reference"), "{name}");
    assert_eq!(v, 2.5);
    assert!(matches!(
        run_on(&choice("auto", Some("cuda")), Echo),
        Err(Error::Config(_))
    ));
    let Some(&gpu) = gpus().first() else {
        return;
    };
    let (name, v) = run_on(&choice("auto", None), Echo).unwrap();
    if gpu.adapter().kind() == "software" {
        // auto prefers the CPU backend to a software adapter (far slower than it).
        assert!(name.starts_with("CPU reference"), "{name}");
    } else {
        assert!(name.starts_with(&gpu.adapter().name), "{name}");
    }
    assert_eq!(v, 2.5);
    let (name, _) = run_on(&choice(&gpu.adapter().index.to_string(), None), Echo).unwrap();
    assert!(name.starts_with(&gpu.adapter().name), "{name}");
    assert!(matches!(
        run_on(&choice("no such adapter 0xfe", None), Echo),
        Err(Error::NoAdapter { .. })
    ));
}
