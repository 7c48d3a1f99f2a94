//! Per-op timings of the CPU backend, for `fergpu profile --adapter cpu`.
//!
//! While recording is on, every [`super::CpuBackend`] op is timed on the host around its
//! call (the ops run one after another, so the times add up to the step) and described the
//! way a GPU profile describes its dispatch: the op (the kernel entry point of the same
//! name), the plan op it ran for ([`crate::backend::Backend::label_op`]), its shape, the
//! algorithm, and its work (floating-point operations of the direct algorithm, so GFLOP/s
//! compare across algorithms, and the bytes of its ideal traffic). Off, an op costs one
//! atomic load.

use crate::backend::Activation;
use crate::shape::{BatchNormShape, Conv2dShape, DenseShape, GlobalAvgPoolShape, PoolShape};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// One op the CPU backend ran while recording.
#[derive(Clone, Debug, PartialEq)]
pub struct OpRecord {
    /// The op: the [`crate::backend::Backend`] method and kernel entry point.
    pub op: &'static str,
    /// The plan op it ran for, when one was labelled.
    pub layer: Option<usize>,
    /// Its shape, written as GPU profiles write it (`32x48x48->32 k3 p1 b64`).
    pub shape: String,
    /// How it was computed (`winograd F(4x4,3x3)`, `im2col+gemm`, …), `-` for plain loops.
    pub algorithm: String,
    /// Wall-clock nanoseconds.
    pub nanos: u64,
    /// Floating-point operations of the direct algorithm (GEMM-shaped ops).
    pub flop: Option<f64>,
    /// Bytes of its ideal traffic (every input read and every output written once).
    pub bytes: f64,
}

/// What an op is, before it is timed.
#[derive(Clone, Debug, PartialEq)]
pub struct Work {
    /// The op.
    pub op: &'static str,
    /// Its shape.
    pub shape: String,
    /// Its algorithm.
    pub algorithm: String,
    /// Floating-point operations (GEMM-shaped ops).
    pub flop: Option<f64>,
    /// Floats of ideal traffic.
    pub floats: f64,
}

impl Work {
    /// The same op with `act` run in its epilogue: its shape ends in `+relu` etc.
    pub fn with_act(mut self, act: Option<Activation>) -> Work {
        if let Some(a) = act.filter(|&a| a != Activation::Linear) {
            self.shape.push_str(&format!(" +{}", a.name()));
        }
        self
    }
}

/// The recorder a backend holds.
#[derive(Debug, Default)]
pub(super) struct Recorder {
    on: AtomicBool,
    layer: Mutex<Option<usize>>,
    records: Mutex<Vec<OpRecord>>,
}

impl Recorder {
    /// Starts recording (dropping anything recorded before).
    pub fn start(&self) {
        self.records.lock().unwrap().clear();
        self.on.store(true, Ordering::SeqCst);
    }

    /// Stops recording and hands over the records, in call order.
    pub fn finish(&self) -> Vec<OpRecord> {
        self.on.store(false, Ordering::SeqCst);
        std::mem::take(&mut self.records.lock().unwrap())
    }

    /// Remembers which plan op the following calls run for.
    pub fn label(&self, op: Option<usize>) {
        *self.layer.lock().unwrap() = op;
    }

    /// Runs `f`; while recording, times it and records it as `work()` describes it.
    pub fn time<R>(&self, work: impl FnOnce() -> Work, f: impl FnOnce() -> R) -> R {
        if !self.on.load(Ordering::Relaxed) {
            return f();
        }
        let t0 = Instant::now();
        let r = f();
        let nanos = t0.elapsed().as_nanos() as u64;
        let w = work();
        let layer = *self.layer.lock().unwrap();
        self.records.lock().unwrap().push(OpRecord {
            op: w.op,
            layer,
            shape: w.shape,
            algorithm: w.algorithm,
            nanos,
            flop: w.flop,
            bytes: 4.0 * w.floats,
        });
        r
    }
}

/// A convolution op: `conv2d_forward`, `conv2d_backward_input` or
/// `conv2d_backward_weight`.
pub fn conv(op: &'static str, s: &Conv2dShape, algorithm: &str) -> Work {
    let shape = s.label();
    let (x, y) = (s.input_len() as f64, s.output_len() as f64);
    let params = (s.weight_len() + s.out_c) as f64;
    let macs = s.forward_macs() as f64;
    let flop = match op {
        // The bias gradient's sum is one add per output.
        "conv2d_backward_weight" => 2.0 * macs + y,
        _ => 2.0 * macs,
    };
    Work {
        op,
        shape,
        algorithm: algorithm.to_string(),
        flop: Some(flop),
        floats: x + y + params,
    }
}

/// A dense op as the GEMM it is: `(m, n, k)`.
pub fn dense(op: &'static str, s: &DenseShape) -> Work {
    let (b, i, o) = (s.batch, s.in_f, s.out_f);
    let (m, n, k) = match op {
        "dense_forward" => (b, o, i),
        "dense_backward_input" => (b, i, o),
        _ => (o, i, b),
    };
    let f = |v: usize| v as f64;
    Work {
        op,
        shape: format!("GEMM {m}x{n}x{k}"),
        algorithm: "gemm".into(),
        flop: Some(2.0 * f(m) * f(n) * f(k)),
        floats: f(m) * f(k) + f(k) * f(n) + f(m) * f(n),
    }
}

/// A max-pooling op.
pub fn pool(op: &'static str, s: &PoolShape) -> Work {
    let out = (s.batch * s.c * s.out_h() * s.out_w()) as f64;
    plain(
        op,
        format!("{}x{}x{} /{} b{}", s.c, s.in_h, s.in_w, s.size, s.batch),
        s.input_len() as f64 + 2.0 * out,
    )
}

/// A batch-normalisation op reading and writing `passes` times its tensor.
pub fn batchnorm(op: &'static str, s: &BatchNormShape, passes: f64) -> Work {
    plain(
        op,
        format!("{}x{} b{}", s.c, s.hw, s.batch),
        passes * s.len() as f64,
    )
}

/// A global-average-pooling op.
pub fn globalavgpool(op: &'static str, s: &GlobalAvgPoolShape) -> Work {
    let len = (s.batch * s.c * s.hw) as f64;
    plain(
        op,
        format!("{}x{} b{}", s.c, s.hw, s.batch),
        len + (s.batch * s.c) as f64,
    )
}

/// An op of plain loops (`algorithm` `-`) moving `floats` floats.
pub fn plain(op: &'static str, shape: String, floats: f64) -> Work {
    Work {
        op,
        shape,
        algorithm: "-".into(),
        flop: None,
        floats,
    }
}
