//! The CPU reference backend: every [`Backend`] op as plain Rust over `Vec<f32>`.
//!
//! Layout: tensors are flat row-major NCHW `Vec<f32>` exactly as the trait documents them
//! (`(batch, c, h, w)` for images, `(batch, features)` for dense layers); layer weights are
//! slices `params[w_off..]` of the one flat parameter buffer. Index buffers are `Vec<u32>`.
//!
//! Speed: a convolution written as six nested loops runs at well under 1 GFLOP/s, which would
//! make the seed CNN (≈0.4 GFLOP per training image, 90 % of it in the 128→128 conv) far too
//! slow to train on a laptop. Unrolling each image's patches into a matrix (im2col) turns the
//! convolution and both of its gradients into dense matrix products, which the `gemm` crate
//! runs with cache blocking and SIMD micro-kernels near the core's peak; see `cpu/conv2d.rs`.
//! Dense layers are matrix products too. Work is spread over a dedicated rayon pool of the
//! backend's threads: convolutions give each worker a contiguous run of images and its own
//! scratch buffers (kept between calls, so the hot path does not allocate), element-wise ops
//! split the buffer into chunks.
//!
//! The small ops (pooling, activations, loss, the optimizer, dropout) are the plain loops of
//! the trait docs and are the definition the WGSL shaders are tested against; batch
//! normalisation and global average pooling sum each image's channel plane on its own, in
//! parallel.
//!
//! One module per shader file, named after it (`conv2d` ↔ `shaders/conv2d.wgsl`, …), and in
//! it one function per entry point, named like the entry point and the [`Backend`] method
//! (`conv2d::conv2d_forward`); `gemm` is the matrix-product helper behind conv2d and dense.

mod accumulate;
mod activation;
mod conv2d;
mod data;
mod dense;
mod direct;
mod gemm;
mod maxpool;
mod optimizer;
mod softmax_xent;
// Added with batch normalisation, dropout and global average pooling.
mod batchnorm;
mod dropout;
mod globalavgpool;
// The fast convolutions, per-instruction-set loops and the per-op profile.
mod microkernel;
pub mod record;
mod simd;
mod winograd;

pub use data::{PIXEL_SCALE, WARPED_PIXEL_SCALE};
pub use microkernel::Isa;
pub use record::OpRecord;
pub use winograd::Tile;

use activation::{BadImages, Fused};
use std::sync::atomic::{AtomicBool, Ordering};

/// Elements per parallel task of the element-wise ops: large enough that task overhead is
/// negligible.
const CHUNK: usize = 1 << 14;

/// Planes of `plane_len` elements per parallel task: about [`CHUNK`] elements (small planes
/// would otherwise cost more to schedule than to process).
fn planes_per_task(plane_len: usize) -> usize {
    (CHUNK / plane_len.max(1)).max(1)
}

use super::{Activation, Backend, BatchNorm, Dropout, MemoryLimits, OptimizerStep};
use crate::shape::{
    BatchNormShape, Conv2dShape, DenseShape, GlobalAvgPoolShape, PoolShape, IMAGE_PIXELS,
    NUM_CLASSES,
};
use ::gemm::Parallelism;
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Mutex;

/// A data set held in host memory: the CPU backend's [`Backend::Images`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuImages {
    /// Pixels `(n, 48·48)`, row-major, 0..=255.
    pub pixels: Vec<u8>,
    /// Labels `(n)`, 0..7.
    pub labels: Vec<u8>,
}

/// Per-worker scratch space, grown on first use and reused afterwards.
#[derive(Debug, Default)]
struct Scratch {
    /// im2col matrix of a group of images `(patch_len, n·out_h·out_w)`, or its gradient;
    /// Winograd: the transformed input tiles.
    cols: Vec<f32>,
    /// Weight-gradient accumulator `(out_c·patch_len + out_c)`.
    acc: Vec<f32>,
    /// Output gradients of a group of images side by side `(out_c, n·out_h·out_w)`;
    /// Winograd: the products (or the transformed output gradients).
    group: Vec<f32>,
    /// Winograd weight gradient: the sums over tiles in the transformed domain.
    sums: Vec<f32>,
    /// Winograd: one channel's windows, tile-major.
    win: Vec<f32>,
    /// Winograd weight gradient: the group's input, then its output gradient, channels
    /// innermost `(n, h, w, c_pad)`.
    block: Vec<f32>,
}

/// The first `len` elements of `buf`, growing it (zero-filled) when it is shorter.
fn scratch(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// The thread pool, one scratch slot per thread, and scratch shared by all of them.
struct Workers {
    pool: rayon::ThreadPool,
    threads: usize,
    scratch: Vec<Mutex<Scratch>>,
    /// Written before the workers start and read by all (Winograd's transformed filters).
    shared: Mutex<Vec<f32>>,
    /// Evaluation's transformed filters, kept between batches ([`winograd::FilterMemo`]).
    memo: Mutex<winograd::FilterMemo>,
}

impl Workers {
    /// How many workers share a batch of `batch` images, and the `gemm` parallelism each
    /// worker's products get (the threads left over when the batch is smaller than the pool).
    fn split(&self, batch: usize) -> (usize, usize, Parallelism) {
        let workers = self.threads.min(batch).max(1);
        let chunk = batch.div_ceil(workers).max(1);
        let workers = batch.div_ceil(chunk).max(1);
        (workers, chunk, gemm::parallelism(self.threads / workers))
    }

    /// Runs `f(images, out_chunk, scratch, parallelism)` on each worker, where `out_chunk`
    /// is the part of `out (batch, per_image)` that belongs to the contiguous `images`.
    fn per_image<F>(&self, out: &mut [f32], per_image: usize, batch: usize, f: F)
    where
        F: Fn(Range<usize>, &mut [f32], &mut Scratch, Parallelism) + Sync,
    {
        let (_, chunk, par) = self.split(batch);
        self.pool.install(|| {
            out[..batch * per_image]
                .par_chunks_mut(chunk * per_image)
                .enumerate()
                .for_each(|(w, out)| {
                    let images = w * chunk..w * chunk + out.len() / per_image;
                    f(images, out, &mut self.scratch[w].lock().unwrap(), par);
                });
        });
    }

    /// Overwrites `d_weight` and `d_bias` with the sum of the first `workers` workers' `acc`
    /// scratch (`d_weight ++ d_bias`, as a weight gradient leaves it), added in worker order
    /// so that the result does not depend on scheduling.
    fn sum_weight_grads(&self, workers: usize, d_weight: &mut [f32], d_bias: &mut [f32]) {
        d_weight.fill(0.0);
        d_bias.fill(0.0);
        for scr in self.scratch.iter().take(workers) {
            let scr = scr.lock().unwrap();
            let (acc_w, acc_b) = scr.acc[..d_weight.len() + d_bias.len()].split_at(d_weight.len());
            for (d, &v) in d_weight.iter_mut().zip(acc_w) {
                *d += v;
            }
            for (d, &v) in d_bias.iter_mut().zip(acc_b) {
                *d += v;
            }
        }
    }

    /// Runs `f(images, scratch, parallelism)` on each worker; returns how many workers ran
    /// (their scratch slots `0..workers` hold the results).
    fn per_worker<F>(&self, batch: usize, f: F) -> usize
    where
        F: Fn(Range<usize>, &mut Scratch, Parallelism) + Sync,
    {
        let (workers, chunk, par) = self.split(batch);
        self.pool.install(|| {
            (0..workers).into_par_iter().for_each(|w| {
                let images = w * chunk..((w + 1) * chunk).min(batch);
                f(images, &mut self.scratch[w].lock().unwrap(), par);
            });
        });
        workers
    }
}

/// The machine's physical memory in bytes, where the OS tells it.
pub fn physical_memory_bytes() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads system configuration values.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && page > 0 {
            return Some(pages as u64 * page as u64);
        }
    }
    None
}

/// How the CPU backend computes its convolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// im2col + GEMM for every convolution: the reference the fast paths are tested against.
    Im2col,
    /// Winograd ([`winograd`]) for the 3×3 stride-1 convolutions with at least
    /// [`WINOGRAD_MIN_CHANNELS`] channels on each side, the tile chosen per shape
    /// ([`Tile::for_output`]); im2col for the others. The default.
    Winograd,
    /// As `Winograd`, but always with this tile (for measuring each tile's speed and error).
    WinogradTile(Tile),
}

/// The fewest input and output channels a convolution needs to run as Winograd: below it
/// the transforms cost more than the multiplications they save (the first layer of every
/// preset has one input channel).
pub const WINOGRAD_MIN_CHANNELS: usize = 8;

/// The environment variable that overrides the default [`ConvAlgorithm`]:
/// `im2col | winograd | f2 | f3 | f4`.
pub const CONV_ENV: &str = "FERGPU_CPU_CONV";

impl ConvAlgorithm {
    /// Parses `im2col`, `winograd`, `f2`, `f3` or `f4`.
    pub fn parse(s: &str) -> Option<ConvAlgorithm> {
        match s.trim().to_ascii_lowercase().as_str() {
            "im2col" => Some(ConvAlgorithm::Im2col),
            "winograd" => Some(ConvAlgorithm::Winograd),
            "f2" => Some(ConvAlgorithm::WinogradTile(Tile::F2)),
            "f3" => Some(ConvAlgorithm::WinogradTile(Tile::F3)),
            "f4" => Some(ConvAlgorithm::WinogradTile(Tile::F4)),
            _ => None,
        }
    }

    /// [`CONV_ENV`] when set, else [`ConvAlgorithm::Winograd`]; an unknown value is an
    /// error naming the variable and what it may be.
    pub fn from_env() -> crate::Result<ConvAlgorithm> {
        match std::env::var(CONV_ENV) {
            Err(_) => Ok(ConvAlgorithm::Winograd),
            Ok(v) => ConvAlgorithm::parse(&v).ok_or_else(|| {
                crate::Error::Config(format!(
                    "{CONV_ENV}={v}: expected im2col, winograd, f2, f3 or f4"
                ))
            }),
        }
    }
}

/// How one convolution (all three of its ops) runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    /// im2col + GEMM ([`conv2d`]); its forward and weight gradient directly ([`direct`])
    /// where the input has at most 4 channels and the CPU AVX-512.
    Im2col,
    /// Winograd with this tile.
    Winograd(Tile),
}

impl ConvPath {
    /// Its name in profiles.
    pub fn name(self) -> &'static str {
        match self {
            ConvPath::Im2col => "im2col+gemm",
            ConvPath::Winograd(t) => t.name(),
        }
    }
}

/// What a CPU backend starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuOptions {
    /// Worker threads (0: one per available core).
    pub threads: usize,
    /// How convolutions are computed.
    pub conv: ConvAlgorithm,
}

/// The CPU reference backend; see the module docs.
pub struct CpuBackend {
    workers: Workers,
    conv: ConvAlgorithm,
    isa: Isa,
    rec: record::Recorder,
}

/// Starts the pool of `threads` workers (with `stack_size` bytes of stack each when given);
/// an error naming `--threads` when the operating system cannot start them.
fn start_pool(threads: usize, stack_size: Option<usize>) -> crate::Result<rayon::ThreadPool> {
    let mut builder = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("fergpu-cpu-{i}"));
    if let Some(bytes) = stack_size {
        builder = builder.stack_size(bytes);
    }
    // A browser's wasm32 starts no threads: the calling thread is the pool's one worker
    // (`CpuBackend::try_new` asks for one there), so `install` runs every op inline.
    #[cfg(target_arch = "wasm32")]
    let builder = builder.num_threads(1).use_current_thread();
    builder.build().map_err(|e| {
        crate::Error::Config(format!(
            "cannot start the CPU backend's {threads} threads ({e}); ask for fewer with \
             --threads, or free some of the machine's processes or memory"
        ))
    })
}

impl CpuBackend {
    /// A backend running on `threads` threads (0: one per available core). Panics when the
    /// threads cannot start; the commands use [`CpuBackend::try_new`].
    pub fn new(threads: usize) -> CpuBackend {
        CpuBackend::try_new(threads).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A backend running on `threads` threads (0: one per available core) with the
    /// convolution algorithm [`ConvAlgorithm::from_env`] says, or [`crate::Error::Config`]
    /// naming `--threads` when the threads cannot start (or the variable is not understood).
    pub fn try_new(threads: usize) -> crate::Result<CpuBackend> {
        let conv = ConvAlgorithm::from_env()?;
        CpuBackend::with_options(CpuOptions { threads, conv })
    }

    /// A backend started with `opts`, or [`crate::Error::Config`] naming `--threads` when
    /// the threads cannot start.
    pub fn with_options(opts: CpuOptions) -> crate::Result<CpuBackend> {
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            opts.threads
        };
        // One worker, on the calling thread, in a browser (see `start_pool`).
        let threads = if cfg!(target_arch = "wasm32") {
            1
        } else {
            threads
        };
        let pool = start_pool(threads, None)?;
        let scratch = (0..threads).map(|_| Mutex::default()).collect();
        Ok(CpuBackend {
            workers: Workers {
                pool,
                threads,
                scratch,
                shared: Mutex::default(),
                memo: Mutex::default(),
            },
            conv: opts.conv,
            isa: Isa::detect(),
            rec: record::Recorder::default(),
        })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.workers.threads
    }

    /// The instruction set the Winograd products run on.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// How this backend runs convolution `s`: Winograd when the algorithm allows it and `s`
    /// is 3×3 with padding at most 2 (its input gradient is then a convolution padded by
    /// `2 − pad`) and at least [`WINOGRAD_MIN_CHANNELS`] channels in and out; else im2col.
    pub fn conv_path(&self, s: &Conv2dShape) -> ConvPath {
        let fits = s.k == 3
            && s.pad <= 2
            && s.in_c >= WINOGRAD_MIN_CHANNELS
            && s.out_c >= WINOGRAD_MIN_CHANNELS;
        match self.conv {
            ConvAlgorithm::Winograd if fits => {
                ConvPath::Winograd(Tile::for_output(s.out_h(), s.out_w()))
            }
            ConvAlgorithm::WinogradTile(t) if fits => ConvPath::Winograd(t),
            _ => ConvPath::Im2col,
        }
    }

    /// Starts timing every op (see [`record`]), dropping what was recorded before.
    pub fn start_recording(&self) {
        self.rec.start();
    }

    /// Stops timing ops and returns what was recorded, in call order.
    pub fn finish_recording(&self) -> Vec<OpRecord> {
        self.rec.finish()
    }

    /// Runs `f` inside the backend's thread pool.
    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.workers.pool.install(f)
    }

    /// `gemm` parallelism for a product on the whole batch.
    fn par(&self) -> Parallelism {
        gemm::parallelism(self.workers.threads)
    }

    /// [`Backend::conv2d_forward`] with `act` applied to the output in the same pass (and
    /// the watch's marks of images not all finite): `weight (out_c, in_c, k, k)` and `bias
    /// (out_c)`. With `pool` (Winograd paths only), `out` is the output's 2×2 max pool.
    #[allow(clippy::too_many_arguments)]
    fn conv_forward(
        &self,
        out: &mut [f32],
        input: &[f32],
        weight: &[f32],
        bias: &[f32],
        s: &Conv2dShape,
        act: (Option<Fused>, BadImages<'_>),
        pool: bool,
    ) {
        assert_eq!(weight.len(), s.weight_len(), "conv weight length");
        assert_eq!(bias.len(), s.bias_len(), "conv bias length");
        let path = self.conv_path(s);
        // The im2col path's forward runs directly where the input has few channels.
        let direct = path == ConvPath::Im2col && direct::applies(s, self.isa);
        let name = if direct { "direct" } else { path.name() };
        let w = &self.workers;
        self.rec.time(
            || record::conv("conv2d_forward", s, name).with_act(act.0.map(|a| a.act)),
            || match path {
                ConvPath::Winograd(tile) => winograd::conv2d_forward(
                    w, self.isa, tile, out, input, weight, bias, act, pool, s,
                ),
                ConvPath::Im2col if direct => {
                    assert!(!pool, "pooled by the Winograd forward only");
                    direct::conv2d_forward(w, out, input, weight, bias, act, s)
                }
                ConvPath::Im2col => {
                    assert!(!pool, "pooled by the Winograd forward only");
                    conv2d::conv2d_forward(w, out, input, weight, bias, act, s)
                }
            },
        );
    }

    /// Evaluation's convolution with the batch norm after it folded in and the watched
    /// `act` in its epilogue (then its 2×2 max pool when `pool`), the images whose output is
    /// not all finite set to NaN in `flags (batch)`.
    #[allow(clippy::too_many_arguments)]
    fn watched_forward(
        &self,
        (out, flags): (&mut [f32], &mut [f32]),
        input: &[f32],
        (params, running): (&[f32], &[f32]),
        (w_off, b_off): (usize, usize),
        (s, bn): (&Conv2dShape, &BatchNorm),
        act: Activation,
        pool: bool,
    ) {
        let (weight, bias) = fold_batchnorm(params, running, w_off, b_off, s, bn);
        let watched = Fused { act, watched: true };
        let bad: Vec<AtomicBool> = (0..s.batch).map(|_| AtomicBool::new(false)).collect();
        self.conv_forward(
            out,
            input,
            &weight,
            &bias,
            s,
            (Some(watched), Some(&bad)),
            pool,
        );
        for (f, b) in flags[..s.batch].iter_mut().zip(&bad) {
            if b.load(Ordering::Relaxed) {
                *f = f32::NAN;
            }
        }
    }

    /// [`Backend::batchnorm_forward_train`] with `act` applied to the output in the same pass.
    #[allow(clippy::too_many_arguments)]
    fn bn_forward_train(
        &self,
        out: &mut [f32],
        saved: &mut [f32],
        running: &mut [f32],
        input: &[f32],
        params: &[f32],
        bn: &BatchNorm,
        s: &BatchNormShape,
        act: Option<Activation>,
    ) {
        let gamma = &params[bn.w_off..bn.w_off + s.c];
        let beta = &params[bn.b_off..bn.b_off + s.c];
        let (mean, var) = weight_and_bias(running, bn.mean_off, s.c, bn.var_off, s.c);
        self.rec.time(
            || record::batchnorm("batchnorm_forward_train", s, 3.0).with_act(act),
            || {
                self.install(|| {
                    let (m, e) = (bn.momentum, bn.eps);
                    batchnorm::batchnorm_forward_train(
                        out, saved, mean, var, input, gamma, beta, m, e, s, act,
                    )
                })
            },
        );
    }
}

/// Convolution `s`'s weight `(out_c, in_c, k, k)` and bias `(out_c)` in `params`.
fn conv_params<'a>(
    params: &'a [f32],
    w_off: usize,
    b_off: usize,
    s: &Conv2dShape,
) -> (&'a [f32], &'a [f32]) {
    (
        &params[w_off..w_off + s.weight_len()],
        &params[b_off..b_off + s.bias_len()],
    )
}

/// The evaluation-mode batch norm after a convolution, folded into its weights: with
/// `g = γ/√(var + eps)` per output channel, `weight' = g·weight` `(out_c, in_c, k, k)` and
/// `bias' = g·(bias − mean) + β` `(out_c)`, so that `conv'(x) = bn(conv(x))` up to rounding.
fn fold_batchnorm(
    params: &[f32],
    running: &[f32],
    w_off: usize,
    b_off: usize,
    s: &Conv2dShape,
    bn: &BatchNorm,
) -> (Vec<f32>, Vec<f32>) {
    let c = s.out_c;
    let gamma = &params[bn.w_off..bn.w_off + c];
    let beta = &params[bn.b_off..bn.b_off + c];
    let mean = &running[bn.mean_off..bn.mean_off + c];
    let var = &running[bn.var_off..bn.var_off + c];
    let g: Vec<f32> = (0..c)
        .map(|o| gamma[o] * (1.0 / (var[o] + bn.eps).sqrt()))
        .collect();
    let (weight, bias) = conv_params(params, w_off, b_off, s);
    // Filled row by row into one allocation (a `flat_map` collect grows the vector as it
    // goes, element by element).
    let mut scaled = vec![0.0; weight.len()];
    let rows = scaled.chunks_exact_mut(s.weight_len() / c);
    for ((dst, row), &g) in rows.zip(weight.chunks_exact(s.weight_len() / c)).zip(&g) {
        for (d, &w) in dst.iter_mut().zip(row) {
            *d = w * g;
        }
    }
    let bias = bias
        .iter()
        .zip(&g)
        .zip(mean.iter().zip(beta))
        .map(|((b, g), (m, beta))| g * (b - m) + beta)
        .collect();
    (scaled, bias)
}

impl Default for CpuBackend {
    /// One thread per available core.
    fn default() -> CpuBackend {
        CpuBackend::new(0)
    }
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBackend")
            .field("threads", &self.workers.threads)
            .field("conv", &self.conv)
            .field("isa", &self.isa)
            .finish()
    }
}

impl Backend for CpuBackend {
    type Tensor = Vec<f32>;
    type Indices = Vec<u32>;
    type Images = CpuImages;

    fn name(&self) -> String {
        let n = self.workers.threads;
        format!(
            "CPU reference ({n} thread{})",
            if n == 1 { "" } else { "s" }
        )
    }

    fn zeros(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }

    fn upload(&self, data: &[f32]) -> Vec<f32> {
        data.to_vec()
    }

    fn write(&self, dst: &mut Vec<f32>, data: &[f32]) {
        dst[..data.len()].copy_from_slice(data);
    }

    fn download(&self, src: &Vec<f32>) -> Vec<f32> {
        src.clone()
    }

    fn copy(&self, dst: &mut Vec<f32>, src: &Vec<f32>, len: usize) {
        self.rec.time(
            || record::plain("copy", format!("{len}"), 2.0 * len as f64),
            || dst[..len].copy_from_slice(&src[..len]),
        );
    }

    fn memory_limits(&self) -> MemoryLimits {
        let total = physical_memory_bytes();
        MemoryLimits {
            // One buffer may take a quarter of the machine: a batch has several of that size.
            max_buffer_bytes: total.map_or(u64::MAX, |t| t / 4),
            total_bytes: total,
        }
    }

    fn zeros_indices(&self, len: usize) -> Vec<u32> {
        vec![0; len]
    }

    fn upload_indices(&self, data: &[u32]) -> Vec<u32> {
        data.to_vec()
    }

    fn write_indices(&self, dst: &mut Vec<u32>, data: &[u32]) {
        dst[..data.len()].copy_from_slice(data);
    }

    fn download_indices(&self, src: &Vec<u32>) -> Vec<u32> {
        src.clone()
    }

    fn upload_images(&self, pixels: &[u8], labels: &[u8]) -> CpuImages {
        assert_eq!(
            pixels.len(),
            labels.len() * IMAGE_PIXELS,
            "pixels are not (n, 48·48)"
        );
        assert!(
            labels.iter().all(|&l| (l as usize) < NUM_CLASSES),
            "a label is not in 0..{NUM_CLASSES}"
        );
        CpuImages {
            pixels: pixels.to_vec(),
            labels: labels.to_vec(),
        }
    }

    fn submit(&self) {}

    fn gather_batch(
        &self,
        x: &mut Vec<f32>,
        labels: &mut Vec<u32>,
        images: &CpuImages,
        order: &Vec<u32>,
        offset: usize,
        batch: usize,
    ) {
        let (pixels, all_labels) = (&images.pixels, &images.labels);
        self.rec.time(
            || gather_work("gather_batch", batch),
            || {
                self.install(|| {
                    data::gather_batch(x, labels, pixels, all_labels, order, offset, batch)
                })
            },
        );
    }

    fn gather_batch_warped(
        &self,
        x: &mut Vec<f32>,
        labels: &mut Vec<u32>,
        images: &CpuImages,
        order: &Vec<u32>,
        warp: &Vec<u32>,
        offset: usize,
        batch: usize,
    ) {
        let (pixels, all_labels) = (&images.pixels, &images.labels);
        self.rec.time(
            || gather_work("gather_batch_warped", batch),
            || {
                self.install(|| {
                    data::gather_batch_warped(
                        x, labels, pixels, all_labels, order, warp, offset, batch,
                    )
                })
            },
        );
    }

    fn conv2d_forward(
        &self,
        out: &mut Vec<f32>,
        input: &Vec<f32>,
        params: &Vec<f32>,
        w_off: usize,
        b_off: usize,
        s: &Conv2dShape,
    ) {
        let (weight, bias) = conv_params(params, w_off, b_off, s);
        self.conv_forward(out, input, weight, bias, s, (None, None), false);
    }

    fn conv2d_forward_act(
        &self,
        out: &mut Vec<f32>,
        _pre: &mut Vec<f32>,
        input: &Vec<f32>,
        params: &Vec<f32>,
        w_off: usize,
        b_off: usize,
        s: &Conv2dShape,
        act: Activation,
    ) {
        let (weight, bias) = conv_params(params, w_off, b_off, s);
        self.conv_forward(
            out,
            input,
            weight,
            bias,
            s,
            (Some(Fused::plain(act)), None),
            false,
        );
    }

    fn conv2d_bn_forward_eval(
        &self,
        out: &mut Vec<f32>,
        _pre: &mut Vec<f32>,
        input: &Vec<f32>,
        params: &Vec<f32>,
        running: &Vec<f32>,
        w_off: usize,
        b_off: usize,
        s: &Conv2dShape,
        bn: &BatchNorm,
        bs: &BatchNormShape,
    ) {
        assert_eq!(
            (bs.c, bs.len()),
            (s.out_c, s.output_len()),
            "batch norm after conv"
        );
        let (weight, bias) = fold_batchnorm(params, running, w_off, b_off, s, bn);
        self.conv_forward(out, input, &weight, &bias, s, (None, None), false);
    }

    fn conv2d_bn_act_forward_eval(
        &self,
        out: &mut Vec<f32>,
        flags: &mut Vec<f32>,
        input: &Vec<f32>,
        params: &Vec<f32>,
        running: &Vec<f32>,
        at: (usize, usize),
        s: &Conv2dShape,
        bn: &BatchNorm,
        bs: &BatchNormShape,
        act: Activation,
    ) -> bool {
        assert_eq!(
            (bs.c, bs.len()),
            (s.out_c, s.output_len()),
            "batch norm after conv"
        );
        self.watched_forward(
            (out, flags),
            input,
            (params, running),
            at,
            (s, bn),
            act,
            false,
        );
        true
    }

    fn conv2d_bn_act_pool_forward_eval(
        &self,
        out: &mut Vec<f32>,
        flags: &mut Vec<f32>,
        input: &Vec<f32>,
        params: &Vec<f32>,
        running: &Vec<f32>,
        at: (usize, usize),
        (s, bn, bs, ps): (&Conv2dShape, &BatchNorm, &BatchNormShape, &PoolShape),
        act: Activation,
    ) -> bool {
        assert_eq!(
            (bs.c, bs.len(), ps.input_len()),
            (s.out_c, s.output_len(), s.output_len()),
            "batch norm and pool after conv"
        );
        // Pooled as it goes by the Winograd forward only.
        if !matches!(self.conv_path(s), ConvPath::Winograd(_)) || ps.size != 2 {
            return false;
        }
        self.watched_forward(
            (out, flags),
            input,
            (params, running),
            at,
            (s, bn),
            act,
            true,
        );
        true
    }

    fn conv2d_backward_input(
        &self,
        d_input: &mut Vec<f32>,
        d_out: &Vec<f32>,
        params: &Vec<f32>,
        w_off: usize,
        s: &Conv2dShape,
    ) {
        let weight = &params[w_off..w_off + s.weight_len()];
        let path = self.conv_path(s);
        let w = &self.workers;
        self.rec.time(
            || record::conv("conv2d_backward_input", s, path.name()),
            || match path {
                ConvPath::Winograd(tile) => {
                    winograd::conv2d_backward_input(w, self.isa, tile, d_input, d_out, weight, s)
                }
                ConvPath::Im2col => conv2d::conv2d_backward_input(w, d_input, d_out, weight, s),
            },
        );
    }

    fn conv2d_backward_weight(
        &self,
        grads: &mut Vec<f32>,
        w_off: usize,
        b_off: usize,
        d_out: &Vec<f32>,
        input: &Vec<f32>,
        s: &Conv2dShape,
    ) {
        let (d_weight, d_bias) = weight_and_bias(grads, w_off, s.weight_len(), b_off, s.out_c);
        let path = self.conv_path(s);
        let direct = path == ConvPath::Im2col && direct::applies(s, self.isa);
        let name = if direct { "direct" } else { path.name() };
        let w = &self.workers;
        self.rec.time(
            || record::conv("conv2d_backward_weight", s, name),
            || match path {
                ConvPath::Winograd(tile) => winograd::conv2d_backward_weight(
                    w, self.isa, tile, d_weight, d_bias, d_out, input, s,
                ),
                ConvPath::Im2col if direct => {
                    direct::conv2d_backward_weight(w, d_weight, d_bias, d_out, input, s)
                }
                ConvPath::Im2col => {
                    conv2d::conv2d_backward_weight(w, d_weight, d_bias, d_out, input, s)
                }
            },
        );
    }

    fn maxpool_forward(
        &self,
        out: &mut Vec<f32>,
        argmax: &mut Vec<u32>,
        input: &Vec<f32>,
        s: &PoolShape,
    ) {
        self.rec.time(
            || record::pool("maxpool_forward", s),
            || self.install(|| maxpool::maxpool_forward(out, argmax, input, s)),
        );
    }

    fn maxpool_backward(
        &self,
        d_input: &mut Vec<f32>,
        d_out: &Vec<f32>,
        argmax: &Vec<u32>,
        s: &PoolShape,
    ) {
        self.rec.time(
            || record::pool("maxpool_backward", s),
            || self.install(|| maxpool::maxpool_backward(d_input, d_out, argmax, s)),
        );
    }

    fn dense_forward(
        &self,
        out: &mut Vec<f32>,
        input: &Vec<f32>,
        params: &Vec<f32>,
        w_off: usize,
        b_off: usize,
        s: &DenseShape,
    ) {
        let weight = &params[w_off..w_off + s.weight_len()];
        let bias = &params[b_off..b_off + s.bias_len()];
        let par = self.par();
        self.rec.time(
            || record::dense("dense_forward", s),
            || self.install(|| dense::dense_forward(out, input, weight, bias, s, par)),
        );
    }

    fn dense_backward_input(
        &self,
        d_input: &mut Vec<f32>,
        d_out: &Vec<f32>,
        params: &Vec<f32>,
        w_off: usize,
        s: &DenseShape,
    ) {
        let weight = &params[w_off..w_off + s.weight_len()];
        let par = self.par();
        self.rec.time(
            || record::dense("dense_backward_input", s),
            || self.install(|| dense::dense_backward_input(d_input, d_out, weight, s, par)),
        );
    }

    fn dense_backward_weight(
        &self,
        grads: &mut Vec<f32>,
        w_off: usize,
        b_off: usize,
        d_out: &Vec<f32>,
        input: &Vec<f32>,
        s: &DenseShape,
    ) {
        let (d_weight, d_bias) = weight_and_bias(grads, w_off, s.weight_len(), b_off, s.out_f);
        let par = self.par();
        self.rec.time(
            || record::dense("dense_backward_weight", s),
            || {
                self.install(|| {
                    dense::dense_backward_weight(d_weight, d_bias, d_out, input, s, par)
                })
            },
        );
    }

    fn activation_forward(
        &self,
        out: &mut Vec<f32>,
        input: &Vec<f32>,
        act: Activation,
        len: usize,
    ) {
        self.rec.time(
            || elementwise("activation_forward", act, len, 2.0),
            || self.install(|| activation::activation_forward(out, input, act, len)),
        );
    }

    fn activation_backward(
        &self,
        d_input: &mut Vec<f32>,
        d_out: &Vec<f32>,
        y: &Vec<f32>,
        act: Activation,
        len: usize,
    ) {
        self.rec.time(
            || elementwise("activation_backward", act, len, 3.0),
            || self.install(|| activation::activation_backward(d_input, d_out, y, act, len)),
        );
    }

    fn softmax_cross_entropy_forward(
        &self,
        probs: &mut Vec<f32>,
        stats: &mut Vec<f32>,
        logits: &Vec<f32>,
        labels: &Vec<u32>,
        class_weights: &Vec<f32>,
        smoothing: f32,
        batch: usize,
        classes: usize,
    ) {
        self.rec.time(
            || loss_work("softmax_cross_entropy_forward", batch, classes),
            || {
                softmax_xent::softmax_cross_entropy_forward(
                    probs,
                    stats,
                    logits,
                    labels,
                    class_weights,
                    smoothing,
                    batch,
                    classes,
                )
            },
        );
    }

    fn softmax_cross_entropy_backward(
        &self,
        d_logits: &mut Vec<f32>,
        probs: &Vec<f32>,
        labels: &Vec<u32>,
        class_weights: &Vec<f32>,
        smoothing: f32,
        batch: usize,
        classes: usize,
    ) {
        self.rec.time(
            || loss_work("softmax_cross_entropy_backward", batch, classes),
            || {
                softmax_xent::softmax_cross_entropy_backward(
                    d_logits,
                    probs,
                    labels,
                    class_weights,
                    smoothing,
                    batch,
                    classes,
                )
            },
        );
    }

    fn confusion_accumulate(
        &self,
        confusion: &mut Vec<u32>,
        probs: &Vec<f32>,
        labels: &Vec<u32>,
        batch: usize,
        classes: usize,
    ) {
        self.rec.time(
            || loss_work("confusion_accumulate", batch, classes),
            || softmax_xent::confusion_accumulate(confusion, probs, labels, batch, classes),
        );
    }

    fn optimizer_step(
        &self,
        params: &mut Vec<f32>,
        grads: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        decay: &Vec<f32>,
        step: &OptimizerStep,
    ) {
        let len = params.len();
        self.rec.time(
            || record::plain("optimizer_step", format!("{len} params"), 7.0 * len as f64),
            || self.install(|| optimizer::optimizer_step(params, grads, m, v, decay, step)),
        );
    }

    fn scale_add(&self, acc: &mut Vec<f32>, x: &Vec<f32>, alpha: f32, beta: f32, len: usize) {
        assert!(acc.len() >= len && x.len() >= len);
        self.rec.time(
            || record::plain("scale_add", format!("{len}"), 3.0 * len as f64),
            || self.install(|| accumulate::scale_add(acc, x, alpha, beta, len)),
        );
    }

    fn batchnorm_forward_train(
        &self,
        out: &mut Vec<f32>,
        saved: &mut Vec<f32>,
        running: &mut Vec<f32>,
        input: &Vec<f32>,
        params: &Vec<f32>,
        bn: &BatchNorm,
        s: &BatchNormShape,
    ) {
        self.bn_forward_train(out, saved, running, input, params, bn, s, None);
    }

    fn batchnorm_act_forward_train(
        &self,
        out: &mut Vec<f32>,
        _pre: &mut Vec<f32>,
        saved: &mut Vec<f32>,
        running: &mut Vec<f32>,
        input: &Vec<f32>,
        params: &Vec<f32>,
        bn: &BatchNorm,
        s: &BatchNormShape,
        act: Activation,
    ) {
        self.bn_forward_train(out, saved, running, input, params, bn, s, Some(act));
    }

    fn batchnorm_forward_eval(
        &self,
        out: &mut Vec<f32>,
        input: &Vec<f32>,
        params: &Vec<f32>,
        running: &Vec<f32>,
        bn: &BatchNorm,
        s: &BatchNormShape,
    ) {
        let gamma = &params[bn.w_off..bn.w_off + s.c];
        let beta = &params[bn.b_off..bn.b_off + s.c];
        let mean = &running[bn.mean_off..bn.mean_off + s.c];
        let var = &running[bn.var_off..bn.var_off + s.c];
        self.rec.time(
            || record::batchnorm("batchnorm_forward_eval", s, 2.0),
            || {
                self.install(|| {
                    batchnorm::batchnorm_forward_eval(out, input, gamma, beta, mean, var, bn.eps, s)
                })
            },
        );
    }

    fn batchnorm_backward(
        &self,
        d_input: &mut Vec<f32>,
        grads: &mut Vec<f32>,
        d_out: &Vec<f32>,
        input: &Vec<f32>,
        saved: &Vec<f32>,
        params: &Vec<f32>,
        bn: &BatchNorm,
        s: &BatchNormShape,
    ) {
        let gamma = &params[bn.w_off..bn.w_off + s.c];
        let (d_gamma, d_beta) = weight_and_bias(grads, bn.w_off, s.c, bn.b_off, s.c);
        self.rec.time(
            || record::batchnorm("batchnorm_backward", s, 5.0),
            || {
                self.install(|| {
                    batchnorm::batchnorm_backward(
                        d_input,
                        d_gamma,
                        d_beta,
                        d_out,
                        input,
                        saved,
                        gamma,
                        s,
                        batchnorm::After::Nothing,
                    )
                })
            },
        );
    }

    fn batchnorm_act_backward(
        &self,
        d_input: &mut Vec<f32>,
        _scratch: &mut Vec<f32>,
        grads: &mut Vec<f32>,
        d_out: &Vec<f32>,
        y: &Vec<f32>,
        input: &Vec<f32>,
        saved: &Vec<f32>,
        params: &Vec<f32>,
        bn: &BatchNorm,
        s: &BatchNormShape,
        act: Activation,
    ) {
        let gamma = &params[bn.w_off..bn.w_off + s.c];
        let beta = &params[bn.b_off..bn.b_off + s.c];
        let (d_gamma, d_beta) = weight_and_bias(grads, bn.w_off, s.c, bn.b_off, s.c);
        // On long planes a relu's mask is found again from the input, with the parameters
        // and statistics the forward used (they do not change between a step's forward and
        // backward), in place of reading `y`: 5 tensor passes instead of 7.
        let (act_y, passes) = match act {
            Activation::Relu if s.hw >= batchnorm::RELU_FROM_INPUT => {
                (batchnorm::After::Relu(beta), 5.0)
            }
            _ => (batchnorm::After::Activation(act, &y[..s.len()]), 7.0),
        };
        self.rec.time(
            || record::batchnorm("batchnorm_backward", s, passes).with_act(Some(act)),
            || {
                self.install(|| {
                    batchnorm::batchnorm_backward(
                        d_input, d_gamma, d_beta, d_out, input, saved, gamma, s, act_y,
                    )
                })
            },
        );
    }

    fn dropout_forward(&self, out: &mut Vec<f32>, input: &Vec<f32>, d: &Dropout, len: usize) {
        self.rec.time(
            || record::plain("dropout_forward", format!("{len}"), 2.0 * len as f64),
            || self.install(|| dropout::dropout_forward(out, input, d, len)),
        );
    }

    fn dropout_backward(&self, d_input: &mut Vec<f32>, d_out: &Vec<f32>, d: &Dropout, len: usize) {
        self.rec.time(
            || record::plain("dropout_backward", format!("{len}"), 2.0 * len as f64),
            || self.install(|| dropout::dropout_backward(d_input, d_out, d, len)),
        );
    }

    fn globalavgpool_forward(&self, out: &mut Vec<f32>, input: &Vec<f32>, s: &GlobalAvgPoolShape) {
        self.rec.time(
            || record::globalavgpool("globalavgpool_forward", s),
            || self.install(|| globalavgpool::globalavgpool_forward(out, input, s)),
        );
    }

    fn globalavgpool_backward(
        &self,
        d_input: &mut Vec<f32>,
        d_out: &Vec<f32>,
        s: &GlobalAvgPoolShape,
    ) {
        self.rec.time(
            || record::globalavgpool("globalavgpool_backward", s),
            || self.install(|| globalavgpool::globalavgpool_backward(d_input, d_out, s)),
        );
    }

    fn label_op(&self, op: Option<usize>) {
        self.rec.label(op);
    }
}

/// A batch gather: u8 pixels in, f32 out, plus the order and the labels.
fn gather_work(op: &'static str, batch: usize) -> record::Work {
    let pixels = (batch * IMAGE_PIXELS) as f64;
    let side = crate::shape::IMAGE_SIDE;
    record::plain(
        op,
        format!("{batch}x{side}x{side}"),
        (5.0 * pixels + 12.0 * batch as f64) / 4.0,
    )
}

/// An activation op over `len` elements, moving `passes` tensors.
fn elementwise(op: &'static str, act: Activation, len: usize, passes: f64) -> record::Work {
    record::plain(op, format!("{len} {}", act.name()), passes * len as f64)
}

/// A loss op over `(batch, classes)` logits.
fn loss_work(op: &'static str, batch: usize, classes: usize) -> record::Work {
    record::plain(
        op,
        format!("{batch}x{classes}"),
        (2 * batch * classes + batch) as f64,
    )
}

/// The disjoint weight `(w_len)` and bias `(b_len)` slices of a gradient buffer, in either
/// order.
fn weight_and_bias(
    grads: &mut [f32],
    w_off: usize,
    w_len: usize,
    b_off: usize,
    b_len: usize,
) -> (&mut [f32], &mut [f32]) {
    assert!(
        w_off + w_len <= b_off || b_off + b_len <= w_off,
        "weight [{w_off}, +{w_len}) and bias [{b_off}, +{b_len}) overlap"
    );
    if w_off < b_off {
        let (lo, hi) = grads.split_at_mut(b_off);
        (&mut lo[w_off..w_off + w_len], &mut hi[..b_len])
    } else {
        let (lo, hi) = grads.split_at_mut(w_off);
        (&mut hi[..w_len], &mut lo[b_off..b_off + b_len])
    }
}

#[cfg(test)]
mod tests {
    /// Threads the operating system cannot start (here: stacks larger than any address
    /// space) are an error naming --threads, not a panic.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_pool_that_cannot_start_is_an_error_naming_the_flag() {
        let e = super::start_pool(2, Some(usize::MAX >> 2)).unwrap_err();
        assert!(
            matches!(&e, crate::Error::Config(m) if m.contains("--threads")),
            "{e}"
        );
        super::start_pool(2, None).unwrap();
    }
}
