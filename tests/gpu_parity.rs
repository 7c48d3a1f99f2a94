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

use common::{assert_close, random_vec};
use fergpu::augment;
use fergpu::backend::cpu::CpuBackend;
use fergpu::backend::gpu::adapter::{format_adapters, list_adapters, AdapterRequest};
use fergpu::backend::gpu::GpuBackend;
use fergpu::backend::{stats, Activation, AdamStep, Backend};
use fergpu::device::{run_on, DeviceChoice, Job};
use fergpu::rng::Rng;
use fergpu::shape::{Conv2dShape, DenseShape, PoolShape, IMAGE_PIXELS};
use fergpu::Error;
use std::sync::OnceLock;

/// Whether a missing GPU must fail the tests.
fn gpu_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var("FERGPU_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// Opens the best adapter, folding grids at `max_dim` workgroups per dimension if given.
fn open(max_dim: Option<usize>) -> Option<GpuBackend> {
    match GpuBackend::new(&AdapterRequest::Auto, None) {
        Ok(mut g) => {
            if let Some(d) = max_dim {
                g.set_max_dispatch_dim(d);
            }
            Some(g)
        }
        Err(e) if gpu_required() => panic!("a GPU is required (CI / FERGPU_REQUIRE_GPU): {e}"),
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

/// Host-in, host-out versions of every op, object-safe so a test body is written once (each uploads its inputs, runs the op, downloads).
trait ErasedOps {
    fn conv(&self, c: &ConvCase) -> [Vec<f32>; 3];
    fn pool(&self, s: &PoolShape, x: &[f32], dy: &[f32], junk: &[f32]) -> PoolOut;
    fn dense(&self, c: &DenseCase) -> [Vec<f32>; 3];
    fn act(&self, act: Activation, x: &[f32], dy: &[f32], len: usize) -> [Vec<f32>; 2];
    fn loss(&self, c: &LossCase) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<u32>);
    fn adam(&self, p: &[f32], g: &[f32], m: &[f32], v: &[f32], s: &AdamStep) -> [Vec<f32>; 3];
    fn gather(&self, c: &GatherCase) -> (Vec<f32>, Vec<u32>);
    fn memory(&self, a: &[f32], b: &[f32], idx: &[u32]) -> (Vec<f32>, Vec<f32>, Vec<u32>);
}

struct Ops<'a, B: Backend>(&'a B);

/// Inputs of the three convolution ops. Buffers: x `(batch, in_c, in_h, in_w)` + slack,
/// dy `(batch, out_c, out_h, out_w)` + slack, params/grads `(w_off + weight + bias + slack)`.
struct ConvCase {
    s: Conv2dShape,
    w_off: usize,
    b_off: usize,
    params: Vec<f32>,
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

/// Inputs of the loss ops: logits `(batch, classes)`, labels `(batch)`, weights `(classes)`,
/// a running stats buffer `(4)` and confusion `(classes, classes)`.
struct LossCase {
    batch: usize,
    classes: usize,
    logits: Vec<f32>,
    labels: Vec<u32>,
    weights: Vec<f32>,
    stats: Vec<f32>,
    confusion: Vec<u32>,
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

/// Pooling results: y, argmax, dx.
type PoolOut = (Vec<f32>, Vec<u32>, Vec<f32>);

impl<B: Backend> ErasedOps for Ops<'_, B> {
    fn conv(&self, c: &ConvCase) -> [Vec<f32>; 3] {
        let be = self.0;
        let s = &c.s;
        let params = be.upload(&c.params);
        let x = be.upload(&c.x);
        let dy = be.upload(&c.dy);
        let mut y = be.upload(&c.junk[..s.output_len() + 5]);
        let mut dx = be.upload(&c.junk[..s.input_len() + 5]);
        let mut grads = be.upload(&c.junk[..c.params.len()]);
        be.conv2d_forward(&mut y, &x, &params, c.w_off, c.b_off, s);
        be.conv2d_backward_input(&mut dx, &dy, &params, c.w_off, s);
        be.conv2d_backward_weight(&mut grads, c.w_off, c.b_off, &dy, &x, s);
        be.submit();
        [be.download(&y), be.download(&dx), be.download(&grads)]
    }

    fn pool(&self, s: &PoolShape, x: &[f32], dy: &[f32], junk: &[f32]) -> PoolOut {
        let be = self.0;
        let x = be.upload(x);
        let dy = be.upload(dy);
        let mut y = be.upload(&junk[..s.output_len() + 3]);
        let mut arg = be.upload_indices(&vec![7; s.output_len() + 3]);
        let mut dx = be.upload(&junk[..s.input_len() + 3]);
        be.maxpool_forward(&mut y, &mut arg, &x, s);
        be.maxpool_backward(&mut dx, &dy, &arg, s);
        (be.download(&y), be.download_indices(&arg), be.download(&dx))
    }

    fn dense(&self, c: &DenseCase) -> [Vec<f32>; 3] {
        let be = self.0;
        let s = &c.s;
        let params = be.upload(&c.params);
        let x = be.upload(&c.x);
        let dy = be.upload(&c.dy);
        let mut y = be.upload(&c.junk[..s.output_len() + 5]);
        let mut dx = be.upload(&c.junk[..s.input_len() + 5]);
        let mut grads = be.upload(&c.junk[..c.params.len()]);
        be.dense_forward(&mut y, &x, &params, c.w_off, c.b_off, s);
        be.dense_backward_input(&mut dx, &dy, &params, c.w_off, s);
        be.dense_backward_weight(&mut grads, c.w_off, c.b_off, &dy, &x, s);
        [be.download(&y), be.download(&dx), be.download(&grads)]
    }

    fn act(&self, act: Activation, x: &[f32], dy: &[f32], len: usize) -> [Vec<f32>; 2] {
        let be = self.0;
        let x = be.upload(x);
        let dy = be.upload(dy);
        // Outputs start as copies of dy: elements past `len` must keep them.
        let mut y = be.upload(&be.download(&dy));
        let mut dx = be.upload(&be.download(&dy));
        be.activation_forward(&mut y, &x, act, len);
        be.activation_backward(&mut dx, &dy, &y, act, len);
        [be.download(&y), be.download(&dx)]
    }

    fn loss(&self, c: &LossCase) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<u32>) {
        let be = self.0;
        let n = c.batch * c.classes;
        let logits = be.upload(&c.logits);
        let labels = be.upload_indices(&c.labels);
        let weights = be.upload(&c.weights);
        let mut stats = be.upload(&c.stats);
        let mut probs = be.upload(&c.logits[..n]);
        let mut d = be.upload(&c.logits[..n]);
        let mut confusion = be.upload_indices(&c.confusion);
        // Twice: the statistics and the confusion counts accumulate.
        for _ in 0..2 {
            be.softmax_cross_entropy_forward(
                &mut probs, &mut stats, &logits, &labels, &weights, c.batch, c.classes,
            );
            be.confusion_accumulate(&mut confusion, &probs, &labels, c.batch, c.classes);
        }
        be.softmax_cross_entropy_backward(&mut d, &probs, &labels, &weights, c.batch, c.classes);
        be.submit();
        (
            be.download(&probs),
            be.download(&stats),
            be.download(&d),
            be.download_indices(&confusion),
        )
    }

    fn adam(&self, p: &[f32], g: &[f32], m: &[f32], v: &[f32], s: &AdamStep) -> [Vec<f32>; 3] {
        let be = self.0;
        let (mut p, g, mut m, mut v) = (be.upload(p), be.upload(g), be.upload(m), be.upload(v));
        be.adam_step(&mut p, &g, &mut m, &mut v, s);
        be.adam_step(&mut p, &g, &mut m, &mut v, s);
        [be.download(&p), be.download(&m), be.download(&v)]
    }

    fn gather(&self, c: &GatherCase) -> (Vec<f32>, Vec<u32>) {
        let be = self.0;
        let images = be.upload_images(&c.pixels, &c.labels);
        let order = be.upload_indices(&c.order);
        let mut x = be.upload(&c.x_junk);
        let mut labels = be.upload_indices(&vec![99; c.batch + 2]);
        be.gather_batch(&mut x, &mut labels, &images, &order, c.offset, c.batch);
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
        // A copy sees the ops recorded before it, later ops see the copy; it stops at `len`.
        let mut doubled = be.zeros(a.len());
        let mut copied = be.upload(b);
        let mut after = be.zeros(a.len());
        be.activation_forward(&mut doubled, &src, Activation::Relu, a.len());
        be.copy(&mut copied, &doubled, a.len() - 2);
        be.activation_forward(&mut after, &copied, Activation::Linear, a.len());
        all.extend(be.download(&after));
        let up = be.upload_indices(idx);
        let mut ids_all = be.download_indices(&ids);
        ids_all.extend(be.download_indices(&up));
        (early, all, ids_all)
    }
}

/// Values on a coarse grid (multiples of 1/4 in [-2, 2)), so windows and rows have ties.
fn with_ties(len: usize, seed: u64) -> Vec<f32> {
    random_vec(len, -2.0, 2.0, seed)
        .into_iter()
        .map(|v| (v * 4.0).floor() / 4.0)
        .collect()
}

fn conv_case(s: Conv2dShape, seed: u64) -> ConvCase {
    let w_off = 7;
    let b_off = w_off + s.weight_len() + 3;
    let n = b_off + s.out_c + 4;
    ConvCase {
        s,
        w_off,
        b_off,
        params: random_vec(n, -0.5, 0.5, seed),
        x: random_vec(s.input_len() + 11, -1.0, 1.0, seed + 1),
        dy: random_vec(s.output_len() + 11, -1.0, 1.0, seed + 2),
        junk: random_vec(
            n.max(s.input_len()).max(s.output_len()) + 16,
            5.0,
            6.0,
            seed + 3,
        ),
    }
}

#[test]
fn conv2d_ops_match_the_reference() {
    let odd = Conv2dShape {
        batch: 3,
        in_c: 5,
        in_h: 7,
        in_w: 9,
        out_c: 6,
        k: 3,
    };
    // More than one 32-row tile of channels, and a kernel of 2.
    let wide = Conv2dShape {
        out_c: 37,
        in_c: 33,
        k: 2,
        ..odd
    };
    // The first CNN layer's shape: the weight gradient takes the split-K path.
    let first = Conv2dShape {
        batch: 3,
        in_c: 1,
        in_h: 48,
        in_w: 48,
        out_c: 5,
        k: 3,
    };
    for (i, s) in [odd, wide, first].into_iter().enumerate() {
        let c = conv_case(s, 10 + i as u64);
        parity(
            |o| o.conv(&c),
            |got, want| {
                // Sums of ≤ 300 products of values ≤ 1 in another order: float error ≲ 1e-5
                // relative to the sum of magnitudes; the split-K weight gradient sums 6,348
                // products, hence the larger bound there.
                let atol = if i == 2 { 2e-3 } else { 1e-4 };
                assert_close(&format!("conv {i} forward"), &got[0], &want[0], 1e-4, 1e-4);
                assert_close(&format!("conv {i} d_input"), &got[1], &want[1], 1e-4, 1e-4);
                assert_close(&format!("conv {i} grads"), &got[2], &want[2], atol, 1e-4);
            },
        );
    }
}

#[test]
fn maxpool_ops_match_the_reference_and_break_ties_alike() {
    for (i, size) in [2usize, 3].into_iter().enumerate() {
        let s = PoolShape {
            batch: 3,
            c: 5,
            in_h: 7,
            in_w: 9,
            size,
        };
        let x = with_ties(s.input_len() + 3, 20 + i as u64);
        let dy = random_vec(s.output_len() + 3, -1.0, 1.0, 30 + i as u64);
        let junk = random_vec(s.input_len() + 3, 5.0, 6.0, 40);
        parity(
            |o| o.pool(&s, &x, &dy, &junk),
            |got, want| {
                // A maximum is a selection and routing a gradient a copy: exact.
                assert_close("maxpool forward", &got.0, &want.0, 0.0, 0.0);
                assert_eq!(got.1, want.1, "maxpool argmax (size {size})");
                assert_close("maxpool backward", &got.2, &want.2, 0.0, 0.0);
            },
        );
    }
}

#[test]
fn dense_ops_match_the_reference() {
    let s = DenseShape {
        batch: 3,
        in_f: 37,
        out_f: 33,
    };
    let w_off = 5;
    let b_off = w_off + s.weight_len() + 2;
    let n = b_off + s.out_f + 3;
    let c = DenseCase {
        s,
        w_off,
        b_off,
        params: random_vec(n, -0.5, 0.5, 50),
        x: random_vec(s.input_len() + 4, -1.0, 1.0, 51),
        dy: random_vec(s.output_len() + 4, -1.0, 1.0, 52),
        junk: random_vec(n + 16, 5.0, 6.0, 53),
    };
    parity(
        |o| o.dense(&c),
        |got, want| {
            // Sums of ≤ 37 products of values ≤ 1 in another order.
            assert_close("dense forward", &got[0], &want[0], 1e-5, 1e-5);
            assert_close("dense d_input", &got[1], &want[1], 1e-5, 1e-5);
            assert_close("dense grads", &got[2], &want[2], 1e-5, 1e-5);
        },
    );
}

#[test]
fn activations_match_the_reference() {
    let n = 1001;
    let x = random_vec(n + 7, -4.0, 4.0, 60);
    let dy = random_vec(n + 7, -1.0, 1.0, 61);
    for act in Activation::ALL {
        parity(
            |o| o.act(act, &x, &dy, n),
            |got, want| {
                // GPU exp/tanh are a few ulp from Rust's libm; outputs are O(1)..O(4).
                let what = act.name();
                assert_close(&format!("{what} forward"), &got[0], &want[0], 2e-6, 2e-5);
                assert_close(&format!("{what} backward"), &got[1], &want[1], 2e-6, 2e-5);
            },
        );
    }
}

#[test]
fn softmax_cross_entropy_and_confusion_match_the_reference() {
    for (i, batch) in [5usize, 70].into_iter().enumerate() {
        let classes = 7;
        let mut rng = Rng::new(70 + i as u64);
        let mut logits = with_ties(batch * classes + 3, 71 + i as u64);
        // One row far apart (a probability underflows to 0) and one all-equal row.
        logits[classes..2 * classes].copy_from_slice(&[90.0, -90.0, 0.0, 3.0, 90.0, 1.0, 2.0]);
        logits[2 * classes..3 * classes].fill(0.5);
        let c = LossCase {
            batch,
            classes,
            logits,
            labels: (0..batch + 2).map(|_| rng.below(classes) as u32).collect(),
            weights: random_vec(classes, 0.5, 2.0, 72),
            stats: vec![1.5, 2.0, 3.0, 0.5],
            confusion: (0..classes * classes)
                .map(|_| rng.below(4) as u32)
                .collect(),
        };
        parity(
            |o| o.loss(&c),
            |got, want| {
                // exp and ln of O(1)..O(90) values: a few ulp; the loss sum adds ≤ 140 of them.
                assert_close("probs", &got.0, &want.0, 1e-6, 1e-5);
                assert_close("stats", &got.1, &want.1, 1e-4, 1e-5);
                assert_eq!(
                    got.1[stats::CORRECT],
                    want.1[stats::CORRECT],
                    "correct count"
                );
                assert_close("d_logits", &got.2, &want.2, 1e-6, 1e-5);
                assert_eq!(got.3, want.3, "confusion counts");
            },
        );
    }
}

#[test]
fn adam_matches_the_reference() {
    let n = 1001;
    let p = random_vec(n, -1.0, 1.0, 80);
    let g = random_vec(n, -0.1, 0.1, 81);
    let m = random_vec(n, -0.01, 0.01, 82);
    let v = random_vec(n, 0.0, 1e-3, 83);
    let step = AdamStep::new(1e-3, 0.9, 0.999, 1e-7, 3);
    parity(
        |o| o.adam(&p, &g, &m, &v, &step),
        |got, want| {
            // Same operation order; sqrt and division are correctly rounded or within 1 ulp.
            assert_close("adam params", &got[0], &want[0], 1e-7, 1e-6);
            assert_close("adam m", &got[1], &want[1], 1e-9, 1e-6);
            assert_close("adam v", &got[2], &want[2], 1e-12, 1e-6);
        },
    );
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
        |o| o.gather(&c),
        |got, want| {
            // The same single multiply by the f32 nearest 1/255: bit-identical.
            assert_close("gathered x", &got.0, &want.0, 0.0, 0.0);
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
    assert!(name.starts_with(&gpu.adapter().name), "{name}");
    assert_eq!(v, 2.5);
    let (name, _) = run_on(&choice(&gpu.adapter().index.to_string(), None), Echo).unwrap();
    assert!(name.starts_with(&gpu.adapter().name), "{name}");
    assert!(matches!(
        run_on(&choice("no such adapter 0xfe", None), Echo),
        Err(Error::NoAdapter { .. })
    ));
}
