//! The GPU backend: every [`Backend`] op as a WGSL compute dispatch through wgpu.
//!
//! - [`adapter`]: what `--adapter` / `--gpu-backend` ask for, and the adapter listing;
//! - `context`: the opened device, error capture, and every wait/poll on the device;
//! - [`kernels`]: every entry point declared once, the shader registry, and the pipelines
//!   built from the declarations once per device;
//! - [`bindings`]: the buffers each kernel binds, by name;
//! - [`work`]: what each kernel computes, for profiles;
//! - `recorder`: one command encoder per batch, per-dispatch uniform slots, bind group cache;
//! - [`uniforms`]: each shader's uniform struct, mirrored as a `#[repr(C)]` Pod struct;
//! - `ops`: one function per entry point: the kernel, its uniform and its grid for a shape;
//! - `buffers`: the tensor, index and data-set types;
//! - [`tiles`]: the GEMM-shaped launches' variants (register-only or workgroup-memory tiled
//!   kernels with a tile configuration) and the default choice;
//! - [`autotune`]: choosing variants by measurement, cached on disk per adapter and shape;
//! - [`timing`]: timing sessions (GPU timestamps or wall clock) and host-side step times,
//!   for `fergpu profile` and autotuning.
//!
//! A training step records all its dispatches into one encoder; [`Backend::submit`] hands it
//! to the queue. Nothing is read back per batch: loss statistics accumulate in a device
//! buffer that the caller downloads once per epoch. Errors the device raises (validation, out
//! of memory, device lost) are collected and reported by [`Backend::check`] as
//! [`crate::Error::Gpu`]; a failed download returns NaNs and records why.

pub mod adapter;
pub mod autotune;
pub mod bindings;
mod buffers;
pub(crate) mod context;
pub mod kernels;
mod ops;
mod recorder;
pub mod tiles;
pub mod timing;
pub mod uniforms;
pub mod work;

pub use buffers::{GpuImages, GpuIndices, GpuTensor};

use self::adapter::{AdapterRequest, AdapterSummary, GpuApi};
use self::autotune::{Autotune, Choice, Tuner};
use self::bindings::{self as bind, Bindings};
use self::buffers::Buf;
use self::context::Context;
use self::kernels::{BuildOptions, Pipelines};
use self::ops::Launch;
use self::recorder::{Dispatch, Recorder};
use self::tiles::{Gemm, GemmShape, TuneKey, Variant};
use self::timing::{HostTimes, TimedDispatch, Timer};
use super::{Activation, Backend, BatchNorm, Dropout, MemoryLimits, OptimizerStep};
use crate::augment::WARP_WORDS;
use crate::shape::{
    dispatch_2d, BatchNormShape, Conv2dShape, DenseShape, GlobalAvgPoolShape, PoolShape,
    IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES,
};
use crate::Result;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Timed repetitions of each variant when autotuning (after one untimed warm-up).
const TUNE_REPS: usize = 3;
/// A variant whose warm-up run takes this many times the best time so far is not timed
/// further (on slow adapters the losers would dominate the tuning time).
const TUNE_GIVE_UP: f64 = 4.0;

/// How a [`GpuBackend`] is opened beyond the adapter: autotuning and shader building.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuOptions {
    /// How the GEMM-shaped launches choose their variant (`--autotune`).
    pub autotune: Autotune,
    /// The autotune cache's folder (`None`: [`autotune::cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// How shader modules and pipelines are built.
    pub build: BuildOptions,
}

/// Host↔device traffic a [`GpuBackend`] has issued since it was opened. Tests use it to check
/// that a training step is one submission and that nothing is read back per batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Command buffers submitted to the queue.
    pub submissions: usize,
    /// Downloads (each waits for the device).
    pub readbacks: usize,
    /// Bytes written into existing buffers by `write`/`write_indices` (uploads that create a
    /// buffer and the per-dispatch uniforms are not counted).
    pub bytes_written: u64,
    /// Bytes of per-dispatch uniforms written (only the slots that changed since the last
    /// submission are).
    pub uniform_bytes: u64,
}

/// The GPU backend; see the module docs.
pub struct GpuBackend {
    ctx: Context,
    pipelines: Pipelines,
    rec: Mutex<Recorder>,
    /// Split-K partial sums of the conv weight gradients, grown on demand.
    partials: Mutex<Option<GpuTensor>>,
    /// Workgroups allowed per dispatch dimension (the device's limit).
    max_dim: usize,
    /// Downloads so far (see [`Traffic`]).
    readbacks: AtomicUsize,
    /// Bytes written into existing buffers so far (see [`Traffic`]).
    written: AtomicU64,
    /// The variant every GEMM-shaped launch uses, when a test forces one.
    forced: Option<Variant>,
    /// Variant choices by shape, and the autotune cache.
    tuner: Mutex<Tuner>,
    /// The plan op the current calls run for ([`Backend::label_op`]; `usize::MAX`: none).
    op: AtomicUsize,
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuBackend")
            .field("adapter", &self.ctx.summary)
            .finish()
    }
}

impl GpuBackend {
    /// Opens the adapter `req` asks for (through `api`, or any API), requesting the adapter's
    /// own limits, and builds every pipeline. `AdapterRequest::Cpu` is not a GPU adapter and
    /// is an error here ([`crate::device::run_on`] handles it).
    ///
    /// Autotuning is off ([`tiles::default_variant`]): a library user asks for it with
    /// [`GpuBackend::with_options`].
    pub fn new(req: &AdapterRequest, api: Option<GpuApi>) -> Result<GpuBackend> {
        let opts = GpuOptions {
            autotune: Autotune::Off,
            ..GpuOptions::default()
        };
        GpuBackend::with_options(req, api, &opts)
    }

    /// Opens the adapter `req` asks for (through `api`, or any API) as [`GpuBackend::new`]
    /// does, with `opts`.
    pub fn with_options(
        req: &AdapterRequest,
        api: Option<GpuApi>,
        opts: &GpuOptions,
    ) -> Result<GpuBackend> {
        let ctx = Context::open(req, api)?;
        let pipelines = ctx.scoped("building the compute pipelines", || {
            Pipelines::new(&ctx.device, opts.build)
        })?;
        GpuBackend::assemble(ctx, pipelines, opts)
    }

    /// Opens the browser's WebGPU adapter (`navigator.gpu`) and builds every pipeline,
    /// awaiting the device and the pipelines' error scopes as a browser requires (the
    /// browser compiles the WGSL with its own compiler, e.g. Chromium's Tint). Autotuning is
    /// off: a page has no cache folder, and the default variants need no measuring.
    pub async fn open_browser(build: BuildOptions) -> Result<GpuBackend> {
        let ctx = Context::open_browser().await?;
        let pipelines = ctx
            .scoped_async("building the compute pipelines", || {
                Pipelines::new(&ctx.device, build)
            })
            .await?;
        let opts = GpuOptions {
            autotune: Autotune::Off,
            cache_dir: None,
            build,
        };
        GpuBackend::assemble(ctx, pipelines, &opts)
    }

    /// The backend around an opened device and its pipelines.
    fn assemble(ctx: Context, pipelines: Pipelines, opts: &GpuOptions) -> Result<GpuBackend> {
        let rec = Mutex::new(Recorder::new(&ctx));
        let max_dim = ctx.limits.max_compute_workgroups_per_dimension as usize;
        let tuner = Tuner::new(&ctx.summary, opts.autotune, opts.cache_dir.as_deref());
        let be = GpuBackend {
            ctx,
            pipelines,
            rec,
            partials: Mutex::new(None),
            max_dim,
            readbacks: AtomicUsize::new(0),
            written: AtomicU64::new(0),
            forced: None,
            tuner: Mutex::new(tuner),
            op: AtomicUsize::new(usize::MAX),
        };
        be.check()?;
        Ok(be)
    }

    /// Compiles every shader module and builds every entry point's pipeline again on this
    /// device, each in its own error scopes, and returns the modules and pipelines built and
    /// every message the device's compiler or validation gave (none: all compiled clean). In a
    /// browser the WGSL goes to the browser's own compiler (Chromium's Tint).
    pub async fn shader_report(&self) -> (usize, usize, Vec<kernels::ShaderMessage>) {
        kernels::diagnose(&self.ctx.device, &self.ctx.limits).await
    }

    /// The adapter in use.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.ctx.summary
    }

    /// The device's limits, as requested from the adapter.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.ctx.limits
    }

    /// Host↔device traffic so far.
    pub fn traffic(&self) -> Traffic {
        let rec = self.rec();
        Traffic {
            submissions: rec.submissions,
            readbacks: self.readbacks.load(Ordering::Relaxed),
            bytes_written: self.written.load(Ordering::Relaxed),
            uniform_bytes: rec.uniform_bytes,
        }
    }

    /// Folds grids into 2-D at `max_dim` workgroups per dimension instead of the device's
    /// limit (at most that limit). Tests use a tiny value to run every kernel's 2-D indexing
    /// on small shapes.
    pub fn set_max_dispatch_dim(&mut self, max_dim: usize) {
        let limit = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        self.max_dim = max_dim.clamp(1, limit);
    }

    /// Makes every GEMM-shaped launch use `variant` (`None`: choose as the options say), so
    /// that tests can run each variant and tile configuration. Panics if the device cannot
    /// run it ([`Variant::fits`]).
    pub fn set_variant(&mut self, variant: Option<Variant>) {
        if let Some(v) = variant {
            assert!(v.fits(&self.ctx.limits), "{v} exceeds this device's limits");
        }
        self.forced = variant;
    }

    /// Whether the device writes timestamps ([`Timer::Timestamps`] is available).
    pub fn has_timestamps(&self) -> bool {
        self.ctx.timestamps
    }

    /// Starts timing every dispatch recorded from now on with `timer` (work recorded before
    /// is submitted first). [`Timer::Timestamps`] needs [`GpuBackend::has_timestamps`].
    pub fn start_timing(&self, timer: Timer) {
        assert!(
            timer == Timer::Wall || self.ctx.timestamps,
            "{} has no timestamp queries",
            self.ctx.summary.name
        );
        self.rec().start_timing(&self.ctx, timer);
    }

    /// Ends the timing [`GpuBackend::start_timing`] began: submits what is recorded, waits,
    /// and returns every dispatch timed, in recording order.
    pub fn finish_timing(&self) -> Vec<TimedDispatch> {
        self.rec().finish_timing(&self.ctx)
    }

    /// Submits everything recorded and waits until the device has finished it.
    pub fn sync(&self) {
        let mut rec = self.rec();
        rec.submit(&self.ctx);
        self.ctx.wait();
        rec.settled();
    }

    /// Host-side time spent per submission so far (see [`HostTimes`]).
    pub fn host_times(&self) -> HostTimes {
        self.rec().host
    }

    /// The variant chosen so far for each GEMM-shaped launch shape, and where it came from.
    pub fn choices(&self) -> Vec<(TuneKey, Choice)> {
        self.tuner().choices()
    }

    /// Whether launches are autotuned on this adapter (`--autotune` resolved), and the
    /// notes autotuning made (an ignored cache file, …).
    pub fn autotune_state(&self) -> (bool, Vec<String>) {
        let t = self.tuner();
        (t.measuring, t.notes.clone())
    }

    fn rec(&self) -> MutexGuard<'_, Recorder> {
        self.rec.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tuner(&self) -> MutexGuard<'_, Tuner> {
        self.tuner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The variant of the launch `key`: forced, already chosen, known without measuring
    /// (default or cached), or measured now by running `run` with each variant the device
    /// can run, on the launch's own buffers (every GEMM method writes its outputs from its
    /// inputs, so running it again changes nothing).
    fn choose(&self, key: TuneKey, run: &dyn Fn(Variant)) -> Variant {
        if let Some(v) = self.forced {
            return self.tuner().force(&key, v).variant;
        }
        if let Some(c) = self.tuner().get(&key) {
            return c.variant;
        }
        if let Some(c) = self.tuner().known(&key, &self.ctx.limits) {
            return c.variant;
        }
        if self.rec().timing() {
            // A profile is timing its own dispatches: measuring now would mix the two.
            return self.tuner().fallback(&key, &self.ctx.limits).variant;
        }
        self.tuner().announce();
        let timer = if self.ctx.timestamps {
            Timer::Timestamps
        } else {
            Timer::Wall
        };
        let mut times = Vec::new();
        let mut best = f64::INFINITY;
        for v in Variant::all() {
            if !v.fits(&self.ctx.limits) {
                continue;
            }
            let timed = |reps: usize| {
                self.start_timing(timer);
                for _ in 0..reps {
                    run(v);
                }
                let per_rep = self.finish_timing();
                // A launch may be two dispatches (split-K and its reduction).
                let n = per_rep.len() / reps;
                per_rep
                    .chunks(n.max(1))
                    .map(|c| c.iter().map(TimedDispatch::micros).sum::<f64>())
                    .fold(f64::INFINITY, f64::min)
            };
            let warm = timed(1);
            let t = if warm > TUNE_GIVE_UP * best {
                warm
            } else {
                timed(TUNE_REPS)
            };
            best = best.min(t);
            times.push((v, t));
        }
        self.tuner().measured(&key, &times).variant
    }

    /// `conv2d_forward` with `act` in its epilogue (`Linear`: none), in the variant chosen for
    /// its shape.
    #[allow(clippy::too_many_arguments)]
    fn conv_forward(
        &self,
        out: &GpuTensor,
        input: &GpuTensor,
        params: &GpuTensor,
        w_off: usize,
        b_off: usize,
        s: &Conv2dShape,
        act: Activation,
    ) {
        assert!(out.len() >= s.output_len() && input.len() >= s.input_len());
        assert!(params.len() >= w_off + s.weight_len() && params.len() >= b_off + s.out_c);
        let key = TuneKey::new(Gemm::Conv2dForward, GemmShape::Conv(*s));
        let buffers = bind::ConvGemm {
            dst: &out.buf,
            src: &input.buf,
            aux: &params.buf,
        };
        self.launch_gemm(key, buffers, |v| match v {
            Variant::Register => ops::conv2d_forward(s, w_off, b_off, act),
            Variant::Tiled(c) => ops::conv2d_forward_tiled(s, w_off, b_off, act, c),
        });
    }

    /// Records a GEMM-shaped op over `buffers` in the variant autotuning picks for `key`
    /// (timing each the first time a shape meets the adapter); `launch` is each variant's
    /// dispatch.
    fn launch_gemm<B: Bindings>(
        &self,
        key: TuneKey,
        buffers: B,
        launch: impl Fn(Variant) -> Launch<B::Uniform>,
    ) {
        let run = |v: Variant| self.launch(&launch(v), buffers);
        run(self.choose(key, &run));
    }

    /// Records `launch` over `buffers` (the binding set its kernel declares, by name), its
    /// grid folded into 2-D as needed. A buffer the device cannot bind, or a stand-in for one
    /// it could not make, is reported (once per launch) and the launch is skipped, so no
    /// invalid work is ever submitted.
    fn launch<B: Bindings>(&self, launch: &Launch<B::Uniform>, buffers: B) {
        kernels::check_binding_set::<B>(launch.kernel);
        let buffers = buffers.buffers();
        if buffers.iter().any(|b| b.stand_in) {
            return; // the allocation failure is recorded already
        }
        let kernel = launch.kernel;
        let limit = self.ctx.limits.max_storage_buffer_binding_size;
        if let Some(big) = buffers.iter().find(|b| b.raw.size() > limit) {
            self.ctx.errors.push(format!(
                "{}: a {} MiB buffer exceeds what {} can bind at once ({} MiB); use a smaller \
                 --batch-size or a smaller model, or another adapter (`fergpu adapters`)",
                kernel.spec().entry,
                big.raw.size() >> 20,
                self.ctx.summary.name,
                limit >> 20
            ));
            return;
        }
        let (pipeline, wg) = match launch.tiles {
            Some(cfg) => (
                self.pipelines.tiled(&self.ctx.device, kernel, cfg),
                cfg.workgroup(),
            ),
            None => (
                self.pipelines.pipeline(kernel).clone(),
                self.pipelines.workgroup(kernel),
            ),
        };
        let groups = launch.grid.workgroups(wg);
        let (x, y) = dispatch_2d(groups, 1, self.max_dim);
        let limit = self.ctx.limits.max_compute_workgroups_per_dimension;
        assert!(y <= limit, "{:?} does not fit a 2-D grid", launch.grid);
        let op = self.op.load(Ordering::Relaxed);
        let d = Dispatch {
            kernel,
            pipeline: &pipeline,
            tiles: launch.tiles,
            uniform: bytemuck::bytes_of(&launch.uniform),
            buffers: &buffers,
            groups: (x, y),
            op: (op != usize::MAX).then_some(op),
        };
        self.rec().dispatch(&self.ctx, &self.pipelines, &d);
    }

    /// Whether a buffer of `bytes` can exist on this device; if not, the reason is recorded
    /// for `check` and the caller makes a 4-byte stand-in (ops on it are skipped or
    /// bounds-checked by the device, so nothing crashes before the error is reported).
    fn fits(&self, bytes: u64, label: &str) -> bool {
        let limit = self.ctx.limits.max_buffer_size;
        if bytes <= limit {
            return true;
        }
        self.ctx.errors.push(format!(
            "a {} MiB {label} buffer exceeds the largest buffer {} allows ({} MiB); use a \
             smaller --batch-size, a smaller model or data set, or another adapter",
            bytes >> 20,
            self.ctx.summary.name,
            limit >> 20
        ));
        false
    }

    fn buf_zeroed(&self, bytes: u64, label: &str) -> Buf {
        if self.fits(bytes, label) {
            Buf::zeroed(&self.ctx.device, bytes, label)
        } else {
            Buf::stand_in(&self.ctx.device, label)
        }
    }

    fn buf_init(&self, bytes: &[u8], label: &str) -> Buf {
        if self.fits(bytes.len() as u64, label) {
            Buf::init(&self.ctx.device, bytes, label)
        } else {
            Buf::stand_in(&self.ctx.device, label)
        }
    }

    fn new_tensor(&self, len: usize) -> GpuTensor {
        GpuTensor::new(self.buf_zeroed(4 * len as u64, "tensor"), len)
    }

    /// Writes `bytes` at the start of `dst`, ordered after every op recorded so far.
    fn write_bytes(&self, dst: &Buf, bytes: &[u8]) {
        if bytes.is_empty() || (bytes.len() as u64) > dst.raw.size() {
            return; // empty, or a stand-in for a buffer that could not be made (reported)
        }
        self.written
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let mut rec = self.rec();
        if rec.pending() {
            // A queue write would land before the recorded ops: copy in the encoder instead.
            let staging = self.buf_init(bytes, "staging");
            let size = bytes.len() as u64;
            rec.encoder(&self.ctx)
                .copy_buffer_to_buffer(&staging.raw, 0, &dst.raw, 0, size);
        } else {
            self.ctx.queue.write_buffer(&dst.raw, 0, bytes);
        }
    }

    /// Submits everything recorded plus a copy of `src`'s first `bytes` bytes, and resolves
    /// to them (None when the device failed; the reason is recorded for `check`), through
    /// the one read-back seam, [`Context::read_back`].
    async fn read_bytes(&self, src: &Buf, bytes: u64) -> Option<Vec<u8>> {
        let size = buffers::padded(bytes);
        if size > src.raw.size() {
            return None; // a stand-in for a buffer that could not be made (reported)
        }
        self.readbacks.fetch_add(1, Ordering::Relaxed);
        let staging = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            // Not held across the wait: in a browser other work may record meanwhile.
            let mut rec = self.rec();
            rec.encoder(&self.ctx)
                .copy_buffer_to_buffer(&src.raw, 0, &staging, 0, size);
            rec.submit(&self.ctx);
        }
        let data = self.ctx.read_back(&staging, size).await;
        self.rec().settled();
        data.map(|mut d| {
            d.truncate(bytes as usize);
            d
        })
    }

    /// The split-K scratch buffer, at least `len` elements long.
    fn partials(&self, len: usize) -> MutexGuard<'_, Option<GpuTensor>> {
        let mut p = self.partials.lock().unwrap_or_else(|p| p.into_inner());
        if p.as_ref().is_none_or(|t| t.len() < len) {
            // Queued ops keep the old buffer alive until they have run.
            *p = Some(self.new_tensor(len));
        }
        p
    }
}

/// `u8` bytes packed four to a little-endian `u32` word, as `data.wgsl` reads them.
fn pack_bytes(bytes: &[u8]) -> Vec<u8> {
    // Little-endian words of consecutive bytes are the bytes themselves, zero-padded.
    let mut v = bytes.to_vec();
    v.resize(bytes.len().div_ceil(4) * 4, 0);
    v
}

impl Backend for GpuBackend {
    type Tensor = GpuTensor;
    type Indices = GpuIndices;
    type Images = GpuImages;

    fn name(&self) -> String {
        let s = &self.ctx.summary;
        format!("{} ({}, {:?})", s.name, s.kind(), s.backend)
    }

    fn zeros(&self, len: usize) -> GpuTensor {
        self.new_tensor(len)
    }

    fn upload(&self, data: &[f32]) -> GpuTensor {
        let buf = self.buf_init(bytemuck::cast_slice(data), "tensor");
        GpuTensor::new(buf, data.len())
    }

    fn write(&self, dst: &mut GpuTensor, data: &[f32]) {
        assert!(data.len() <= dst.len(), "write past the end of a tensor");
        self.write_bytes(&dst.buf, bytemuck::cast_slice(data));
    }

    fn download(&self, src: &GpuTensor) -> Vec<f32> {
        context::block_on(self.download_async(src))
    }

    async fn download_async(&self, src: &GpuTensor) -> Vec<f32> {
        match self.read_bytes(&src.buf, 4 * src.len() as u64).await {
            Some(bytes) => bytemuck::pod_collect_to_vec(&bytes),
            None => vec![f32::NAN; src.len()],
        }
    }

    fn copy(&self, dst: &mut GpuTensor, src: &GpuTensor, len: usize) {
        assert!(
            len <= dst.len() && len <= src.len(),
            "copy past the end of a tensor"
        );
        if len == 0 || 4 * len as u64 > dst.buf.raw.size().min(src.buf.raw.size()) {
            return; // nothing, or a stand-in for a buffer that could not be made (reported)
        }
        self.rec().encoder(&self.ctx).copy_buffer_to_buffer(
            &src.buf.raw,
            0,
            &dst.buf.raw,
            0,
            4 * len as u64,
        );
    }

    fn memory_limits(&self) -> MemoryLimits {
        let l = &self.ctx.limits;
        MemoryLimits {
            max_buffer_bytes: l.max_buffer_size.min(l.max_storage_buffer_binding_size),
            total_bytes: None,
        }
    }

    fn zeros_indices(&self, len: usize) -> GpuIndices {
        GpuIndices::new(self.buf_zeroed(4 * len as u64, "indices"), len)
    }

    fn upload_indices(&self, data: &[u32]) -> GpuIndices {
        let buf = self.buf_init(bytemuck::cast_slice(data), "indices");
        GpuIndices::new(buf, data.len())
    }

    fn write_indices(&self, dst: &mut GpuIndices, data: &[u32]) {
        assert!(
            data.len() <= dst.len(),
            "write past the end of an index buffer"
        );
        self.write_bytes(&dst.buf, bytemuck::cast_slice(data));
    }

    fn download_indices(&self, src: &GpuIndices) -> Vec<u32> {
        context::block_on(self.download_indices_async(src))
    }

    async fn download_indices_async(&self, src: &GpuIndices) -> Vec<u32> {
        match self.read_bytes(&src.buf, 4 * src.len() as u64).await {
            Some(bytes) => bytemuck::pod_collect_to_vec(&bytes),
            None => vec![u32::MAX; src.len()],
        }
    }

    fn upload_images(&self, pixels: &[u8], labels: &[u8]) -> GpuImages {
        assert_eq!(
            pixels.len(),
            labels.len() * IMAGE_PIXELS,
            "pixels are not (n, 48·48)"
        );
        assert!(
            labels.iter().all(|&l| (l as usize) < NUM_CLASSES),
            "a label is not in 0..{NUM_CLASSES}"
        );
        GpuImages::new(
            self.buf_init(&pack_bytes(pixels), "pixels"),
            self.buf_init(&pack_bytes(labels), "labels"),
            labels.len(),
        )
    }

    fn submit(&self) {
        self.rec().submit(&self.ctx);
    }

    fn check(&self) -> Result<()> {
        self.ctx.errors.check()
    }

    fn gather_batch(
        &self,
        x: &mut GpuTensor,
        labels: &mut GpuIndices,
        images: &GpuImages,
        order: &GpuIndices,
        offset: usize,
        batch: usize,
    ) {
        assert!(offset + batch <= order.len(), "batch runs past the order");
        assert!(x.len() >= batch * IMAGE_PIXELS && labels.len() >= batch);
        self.launch(
            &ops::gather_batch(batch, offset, IMAGE_SIDE),
            bind::GatherBatch {
                x: &x.buf,
                labels: &labels.buf,
                pixels: &images.pixels,
                all_labels: &images.labels,
                order: &order.buf,
            },
        );
    }

    fn gather_batch_warped(
        &self,
        x: &mut GpuTensor,
        labels: &mut GpuIndices,
        images: &GpuImages,
        order: &GpuIndices,
        warp: &GpuIndices,
        offset: usize,
        batch: usize,
    ) {
        assert!(offset + batch <= order.len(), "batch runs past the order");
        assert!(
            warp.len() >= (offset + batch) * WARP_WORDS,
            "batch runs past the warp"
        );
        assert!(x.len() >= batch * IMAGE_PIXELS && labels.len() >= batch);
        self.launch(
            &ops::gather_batch_warped(batch, offset, IMAGE_SIDE),
            bind::GatherBatchWarped {
                x: &x.buf,
                labels: &labels.buf,
                pixels: &images.pixels,
                all_labels: &images.labels,
                order: &order.buf,
                warp: &warp.buf,
            },
        );
    }

    fn conv2d_forward(
        &self,
        out: &mut GpuTensor,
        input: &GpuTensor,
        params: &GpuTensor,
        w_off: usize,
        b_off: usize,
        s: &Conv2dShape,
    ) {
        self.conv_forward(out, input, params, w_off, b_off, s, Activation::Linear);
    }

    fn conv2d_backward_input(
        &self,
        d_input: &mut GpuTensor,
        d_out: &GpuTensor,
        params: &GpuTensor,
        w_off: usize,
        s: &Conv2dShape,
    ) {
        assert!(d_input.len() >= s.input_len() && d_out.len() >= s.output_len());
        assert!(params.len() >= w_off + s.weight_len());
        let key = TuneKey::new(Gemm::Conv2dBackwardInput, GemmShape::Conv(*s));
        let buffers = bind::ConvGemm {
            dst: &d_input.buf,
            src: &d_out.buf,
            aux: &params.buf,
        };
        self.launch_gemm(key, buffers, |v| match v {
            Variant::Register => ops::conv2d_backward_input(s, w_off),
            Variant::Tiled(c) => ops::conv2d_backward_input_tiled(s, w_off, c),
        });
    }

    fn conv2d_backward_weight(
        &self,
        grads: &mut GpuTensor,
        w_off: usize,
        b_off: usize,
        d_out: &GpuTensor,
        input: &GpuTensor,
        s: &Conv2dShape,
    ) {
        assert!(d_out.len() >= s.output_len() && input.len() >= s.input_len());
        assert!(grads.len() >= w_off + s.weight_len() && grads.len() >= b_off + s.out_c);
        let run = |v: Variant| {
            let weight = match v {
                Variant::Register => ops::conv2d_backward_weight(s, w_off, b_off),
                Variant::Tiled(c) => ops::conv2d_backward_weight_tiled(s, w_off, b_off, c),
            };
            let partials_len = ops::split_k_partials_len(&weight.uniform);
            let product = |dst| bind::ConvGemm {
                dst,
                src: &d_out.buf,
                aux: &input.buf,
            };
            if partials_len == 0 {
                self.launch(&weight, product(&grads.buf));
                return;
            }
            // partials (splits, out_c, patch_len + 1), summed over splits into grads.
            let partials = self.partials(partials_len);
            let partials = &partials.as_ref().expect("allocated").buf;
            self.launch(&weight, product(partials));
            let reduce = bind::ConvReduce {
                dst: &grads.buf,
                src: partials,
            };
            self.launch(&ops::conv2d_backward_weight_reduce(&weight), reduce);
        };
        let key = TuneKey::new(Gemm::Conv2dBackwardWeight, GemmShape::Conv(*s));
        run(self.choose(key, &run));
    }

    fn maxpool_forward(
        &self,
        out: &mut GpuTensor,
        argmax: &mut GpuIndices,
        input: &GpuTensor,
        s: &PoolShape,
    ) {
        assert!(out.len() >= s.output_len() && argmax.len() >= s.output_len());
        assert!(input.len() >= s.input_len());
        self.launch(
            &ops::maxpool_forward(s),
            bind::MaxpoolForward {
                y: &out.buf,
                argmax_out: &argmax.buf,
                x: &input.buf,
            },
        );
    }

    fn maxpool_backward(
        &self,
        d_input: &mut GpuTensor,
        d_out: &GpuTensor,
        argmax: &GpuIndices,
        s: &PoolShape,
    ) {
        assert!(d_input.len() >= s.input_len() && d_out.len() >= s.output_len());
        assert!(argmax.len() >= s.output_len());
        self.launch(
            &ops::maxpool_backward(s),
            bind::MaxpoolBackward {
                dx: &d_input.buf,
                dy: &d_out.buf,
                argmax_in: &argmax.buf,
            },
        );
    }

    fn dense_forward(
        &self,
        out: &mut GpuTensor,
        input: &GpuTensor,
        params: &GpuTensor,
        w_off: usize,
        b_off: usize,
        s: &DenseShape,
    ) {
        assert!(out.len() >= s.output_len() && input.len() >= s.input_len());
        assert!(params.len() >= w_off + s.weight_len() && params.len() >= b_off + s.out_f);
        let key = TuneKey::new(Gemm::DenseForward, GemmShape::Dense(*s));
        let buffers = bind::DenseGemm {
            dst: &out.buf,
            a: &input.buf,
            bsrc: &params.buf,
        };
        self.launch_gemm(key, buffers, |v| match v {
            Variant::Register => ops::dense_forward(s, w_off, b_off),
            Variant::Tiled(c) => ops::dense_forward_tiled(s, w_off, b_off, c),
        });
    }

    fn dense_backward_input(
        &self,
        d_input: &mut GpuTensor,
        d_out: &GpuTensor,
        params: &GpuTensor,
        w_off: usize,
        s: &DenseShape,
    ) {
        assert!(d_input.len() >= s.input_len() && d_out.len() >= s.output_len());
        assert!(params.len() >= w_off + s.weight_len());
        let key = TuneKey::new(Gemm::DenseBackwardInput, GemmShape::Dense(*s));
        let buffers = bind::DenseGemm {
            dst: &d_input.buf,
            a: &d_out.buf,
            bsrc: &params.buf,
        };
        self.launch_gemm(key, buffers, |v| match v {
            Variant::Register => ops::dense_backward_input(s, w_off),
            Variant::Tiled(c) => ops::dense_backward_input_tiled(s, w_off, c),
        });
    }

    fn dense_backward_weight(
        &self,
        grads: &mut GpuTensor,
        w_off: usize,
        b_off: usize,
        d_out: &GpuTensor,
        input: &GpuTensor,
        s: &DenseShape,
    ) {
        assert!(d_out.len() >= s.output_len() && input.len() >= s.input_len());
        assert!(grads.len() >= w_off + s.weight_len() && grads.len() >= b_off + s.out_f);
        let key = TuneKey::new(Gemm::DenseBackwardWeight, GemmShape::Dense(*s));
        let buffers = bind::DenseGemm {
            dst: &grads.buf,
            a: &d_out.buf,
            bsrc: &input.buf,
        };
        self.launch_gemm(key, buffers, |v| match v {
            Variant::Register => ops::dense_backward_weight(s, w_off, b_off),
            Variant::Tiled(c) => ops::dense_backward_weight_tiled(s, w_off, b_off, c),
        });
    }

    fn activation_forward(
        &self,
        out: &mut GpuTensor,
        input: &GpuTensor,
        act: Activation,
        len: usize,
    ) {
        assert!(out.len() >= len && input.len() >= len);
        let buffers = bind::ActivationForward {
            dst: &out.buf,
            a: &input.buf,
        };
        self.launch(&ops::activation_forward(len, act), buffers);
    }

    fn activation_backward(
        &self,
        d_input: &mut GpuTensor,
        d_out: &GpuTensor,
        y: &GpuTensor,
        act: Activation,
        len: usize,
    ) {
        assert!(d_input.len() >= len && d_out.len() >= len && y.len() >= len);
        self.launch(
            &ops::activation_backward(len, act),
            bind::ActivationBackward {
                dst: &d_input.buf,
                a: &d_out.buf,
                yv: &y.buf,
            },
        );
    }

    fn softmax_cross_entropy_forward(
        &self,
        probs: &mut GpuTensor,
        stats: &mut GpuTensor,
        logits: &GpuTensor,
        labels: &GpuIndices,
        class_weights: &GpuTensor,
        smoothing: f32,
        batch: usize,
        classes: usize,
    ) {
        assert!(probs.len() >= batch * classes && logits.len() >= batch * classes);
        assert!(stats.len() >= super::stats::LEN && labels.len() >= batch);
        assert!(class_weights.len() >= classes);
        self.launch(
            &ops::softmax_cross_entropy_forward(batch, classes, smoothing),
            bind::LossForward {
                probs_out: &probs.buf,
                stats: &stats.buf,
                logits: &logits.buf,
                labels: &labels.buf,
                weights: &class_weights.buf,
            },
        );
    }

    fn softmax_cross_entropy_backward(
        &self,
        d_logits: &mut GpuTensor,
        probs: &GpuTensor,
        labels: &GpuIndices,
        class_weights: &GpuTensor,
        smoothing: f32,
        batch: usize,
        classes: usize,
    ) {
        assert!(d_logits.len() >= batch * classes && probs.len() >= batch * classes);
        assert!(labels.len() >= batch && class_weights.len() >= classes);
        self.launch(
            &ops::softmax_cross_entropy_backward(batch, classes, smoothing),
            bind::LossBackward {
                d_logits: &d_logits.buf,
                probs: &probs.buf,
                labels: &labels.buf,
                weights: &class_weights.buf,
            },
        );
    }

    fn confusion_accumulate(
        &self,
        confusion: &mut GpuIndices,
        probs: &GpuTensor,
        labels: &GpuIndices,
        batch: usize,
        classes: usize,
    ) {
        assert!(confusion.len() >= classes * classes && probs.len() >= batch * classes);
        assert!(labels.len() >= batch);
        self.launch(
            &ops::confusion_accumulate(batch, classes),
            bind::Confusion {
                confusion: &confusion.buf,
                probs: &probs.buf,
                labels: &labels.buf,
            },
        );
    }

    fn optimizer_step(
        &self,
        params: &mut GpuTensor,
        grads: &GpuTensor,
        m: &mut GpuTensor,
        v: &mut GpuTensor,
        decay: &GpuTensor,
        step: &OptimizerStep,
    ) {
        let n = params.len();
        assert!(
            grads.len() == n && m.len() == n && v.len() == n && decay.len() == n,
            "optimizer buffers differ in length"
        );
        self.launch(
            &ops::optimizer_step(step, n),
            bind::OptimizerStep {
                params: &params.buf,
                grads: &grads.buf,
                m: &m.buf,
                v: &v.buf,
                decay: &decay.buf,
            },
        );
    }

    fn batchnorm_forward_train(
        &self,
        out: &mut GpuTensor,
        saved: &mut GpuTensor,
        running: &mut GpuTensor,
        input: &GpuTensor,
        params: &GpuTensor,
        bn: &BatchNorm,
        s: &BatchNormShape,
    ) {
        assert!(out.len() >= s.len() && input.len() >= s.len() && saved.len() >= 2 * s.c);
        assert!(params.len() >= bn.w_off.max(bn.b_off) + s.c);
        assert!(running.len() >= bn.mean_off.max(bn.var_off) + s.c);
        self.launch(
            &ops::batchnorm_forward_train(s, bn),
            bind::BatchnormForwardTrain {
                y: &out.buf,
                saved: &saved.buf,
                running: &running.buf,
                x: &input.buf,
                params: &params.buf,
            },
        );
    }

    fn batchnorm_forward_eval(
        &self,
        out: &mut GpuTensor,
        input: &GpuTensor,
        params: &GpuTensor,
        running: &GpuTensor,
        bn: &BatchNorm,
        s: &BatchNormShape,
    ) {
        assert!(out.len() >= s.len() && input.len() >= s.len());
        assert!(params.len() >= bn.w_off.max(bn.b_off) + s.c);
        assert!(running.len() >= bn.mean_off.max(bn.var_off) + s.c);
        self.launch(
            &ops::batchnorm_forward_eval(s, bn),
            bind::BatchnormForwardEval {
                y: &out.buf,
                x: &input.buf,
                params: &params.buf,
                running_in: &running.buf,
            },
        );
    }

    fn batchnorm_backward(
        &self,
        d_input: &mut GpuTensor,
        grads: &mut GpuTensor,
        d_out: &GpuTensor,
        input: &GpuTensor,
        saved: &GpuTensor,
        params: &GpuTensor,
        bn: &BatchNorm,
        s: &BatchNormShape,
    ) {
        assert!(d_input.len() >= s.len() && d_out.len() >= s.len() && input.len() >= s.len());
        assert!(saved.len() >= 2 * s.c);
        assert!(params.len() >= bn.w_off.max(bn.b_off) + s.c);
        assert!(grads.len() >= bn.w_off.max(bn.b_off) + s.c);
        self.launch(
            &ops::batchnorm_backward(s, bn),
            bind::BatchnormBackward {
                dx: &d_input.buf,
                grads: &grads.buf,
                dy: &d_out.buf,
                x: &input.buf,
                saved_in: &saved.buf,
                params: &params.buf,
            },
        );
    }

    fn dropout_forward(&self, out: &mut GpuTensor, input: &GpuTensor, d: &Dropout, len: usize) {
        assert!(out.len() >= len && input.len() >= len);
        let buffers = bind::Dropout {
            dst: &out.buf,
            src: &input.buf,
        };
        self.launch(&ops::dropout_forward(d, len), buffers);
    }

    fn dropout_backward(
        &self,
        d_input: &mut GpuTensor,
        d_out: &GpuTensor,
        d: &Dropout,
        len: usize,
    ) {
        assert!(d_input.len() >= len && d_out.len() >= len);
        let buffers = bind::Dropout {
            dst: &d_input.buf,
            src: &d_out.buf,
        };
        self.launch(&ops::dropout_backward(d, len), buffers);
    }

    fn globalavgpool_forward(
        &self,
        out: &mut GpuTensor,
        input: &GpuTensor,
        s: &GlobalAvgPoolShape,
    ) {
        assert!(out.len() >= s.output_len() && input.len() >= s.input_len());
        let buffers = bind::GlobalavgpoolForward {
            y: &out.buf,
            x: &input.buf,
        };
        self.launch(&ops::globalavgpool_forward(s), buffers);
    }

    fn globalavgpool_backward(
        &self,
        d_input: &mut GpuTensor,
        d_out: &GpuTensor,
        s: &GlobalAvgPoolShape,
    ) {
        assert!(d_input.len() >= s.input_len() && d_out.len() >= s.output_len());
        let buffers = bind::GlobalavgpoolBackward {
            dx: &d_input.buf,
            dy: &d_out.buf,
        };
        self.launch(&ops::globalavgpool_backward(s), buffers);
    }

    fn conv2d_forward_act(
        &self,
        out: &mut GpuTensor,
        _pre: &mut GpuTensor,
        input: &GpuTensor,
        params: &GpuTensor,
        w_off: usize,
        b_off: usize,
        s: &Conv2dShape,
        act: Activation,
    ) {
        // One kernel: the activation in the convolution's epilogue; `pre` is not needed.
        self.conv_forward(out, input, params, w_off, b_off, s, act);
    }

    fn batchnorm_act_forward_train(
        &self,
        out: &mut GpuTensor,
        pre: &mut GpuTensor,
        saved: &mut GpuTensor,
        running: &mut GpuTensor,
        input: &GpuTensor,
        params: &GpuTensor,
        bn: &BatchNorm,
        s: &BatchNormShape,
        act: Activation,
    ) {
        // Two kernels, as by default, but the profile names the activation's by its own op:
        // the network runs this for a batch norm and the activation op right after it.
        self.batchnorm_forward_train(pre, saved, running, input, params, bn, s);
        let op = self.op.load(Ordering::Relaxed);
        if op != usize::MAX {
            self.op.store(op + 1, Ordering::Relaxed);
        }
        self.activation_forward(out, pre, act, s.len());
    }

    fn batchnorm_act_backward(
        &self,
        d_input: &mut GpuTensor,
        scratch: &mut GpuTensor,
        grads: &mut GpuTensor,
        d_out: &GpuTensor,
        y: &GpuTensor,
        input: &GpuTensor,
        saved: &GpuTensor,
        params: &GpuTensor,
        bn: &BatchNorm,
        s: &BatchNormShape,
        act: Activation,
    ) {
        // Two kernels, as by default, the activation's named by its own op (the one after
        // the batch norm's, which labels the call) as in the forward.
        let op = self.op.load(Ordering::Relaxed);
        if op != usize::MAX {
            self.op.store(op + 1, Ordering::Relaxed);
        }
        self.activation_backward(scratch, d_out, y, act, s.len());
        self.op.store(op, Ordering::Relaxed);
        self.batchnorm_backward(d_input, grads, scratch, input, saved, params, bn, s);
    }

    fn label_op(&self, op: Option<usize>) {
        self.op.store(op.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    fn scale_add(&self, acc: &mut GpuTensor, x: &GpuTensor, alpha: f32, beta: f32, len: usize) {
        assert!(acc.len() >= len && x.len() >= len);
        let buffers = bind::ScaleAdd {
            acc: &acc.buf,
            x: &x.buf,
        };
        self.launch(&ops::scale_add(len, alpha, beta), buffers);
    }
}
