//! The GPU backend: every [`Backend`] op as a WGSL compute dispatch through wgpu.
//!
//! - [`adapter`]: what `--adapter` / `--gpu-backend` ask for, and the adapter listing;
//! - `context`: the opened device, error capture, and every wait/poll on the device;
//! - [`kernels`]: the shader registry and the pipelines, built once per device;
//! - `recorder`: one command encoder per batch, per-dispatch uniform slots, bind group cache;
//! - [`uniforms`]: each shader's uniform struct, mirrored as a `#[repr(C)]` Pod struct;
//! - `ops`: one function per entry point: the kernel, its uniform and its grid for a shape;
//! - `buffers`: the tensor, index and data-set types.
//!
//! A training step records all its dispatches into one encoder; [`Backend::submit`] hands it
//! to the queue. Nothing is read back per batch: loss statistics accumulate in a device
//! buffer that the caller downloads once per epoch. Errors the device raises (validation, out
//! of memory, device lost) are collected and reported by [`Backend::check`] as
//! [`crate::Error::Gpu`]; a failed download returns NaNs and records why.

pub mod adapter;
mod buffers;
pub(crate) mod context;
pub mod kernels;
mod ops;
mod recorder;
pub mod uniforms;

pub use buffers::{GpuImages, GpuIndices, GpuTensor};

use self::adapter::{AdapterRequest, AdapterSummary, GpuApi};
use self::buffers::Buf;
use self::context::Context;
use self::kernels::Pipelines;
use self::ops::Launch;
use self::recorder::Recorder;
use self::uniforms::Uniform;
use super::{Activation, Backend, BatchNorm, Dropout, MemoryLimits, OptimizerStep};
use crate::augment::WARP_WORDS;
use crate::shape::{
    dispatch_2d, BatchNormShape, Conv2dShape, DenseShape, GlobalAvgPoolShape, PoolShape,
    IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES,
};
use crate::Result;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

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
    pub fn new(req: &AdapterRequest, api: Option<GpuApi>) -> Result<GpuBackend> {
        let ctx = Context::open(req, api)?;
        let pipelines = ctx.scoped("building the compute pipelines", || {
            Pipelines::new(&ctx.device)
        })?;
        let rec = Mutex::new(Recorder::new(&ctx));
        let max_dim = ctx.limits.max_compute_workgroups_per_dimension as usize;
        let be = GpuBackend {
            ctx,
            pipelines,
            rec,
            partials: Mutex::new(None),
            max_dim,
            readbacks: AtomicUsize::new(0),
            written: AtomicU64::new(0),
        };
        be.check()?;
        Ok(be)
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
        Traffic {
            submissions: self.rec().submissions,
            readbacks: self.readbacks.load(Ordering::Relaxed),
            bytes_written: self.written.load(Ordering::Relaxed),
        }
    }

    /// Folds grids into 2-D at `max_dim` workgroups per dimension instead of the device's
    /// limit (at most that limit). Tests use a tiny value to run every kernel's 2-D indexing
    /// on small shapes.
    pub fn set_max_dispatch_dim(&mut self, max_dim: usize) {
        let limit = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        self.max_dim = max_dim.clamp(1, limit);
    }

    fn rec(&self) -> MutexGuard<'_, Recorder> {
        self.rec.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `launch` over `buffers` (in the registry's binding order), its grid folded
    /// into 2-D as needed. A buffer the device cannot bind is reported (once per launch) and
    /// the launch is skipped, so no invalid work is ever submitted.
    fn launch<U: Uniform>(&self, launch: &Launch<U>, buffers: &[&Buf]) {
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
        let groups = launch.grid.workgroups(self.pipelines.workgroup(kernel));
        let (x, y) = dispatch_2d(groups, 1, self.max_dim);
        let limit = self.ctx.limits.max_compute_workgroups_per_dimension;
        assert!(y <= limit, "{:?} does not fit a 2-D grid", launch.grid);
        let uniform = bytemuck::bytes_of(&launch.uniform);
        self.rec()
            .dispatch(&self.ctx, &self.pipelines, kernel, uniform, buffers, (x, y));
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
        let bytes = if self.fits(bytes, label) { bytes } else { 4 };
        Buf::zeroed(&self.ctx.device, bytes, label)
    }

    fn buf_init(&self, bytes: &[u8], label: &str) -> Buf {
        if self.fits(bytes.len() as u64, label) {
            Buf::init(&self.ctx.device, bytes, label)
        } else {
            Buf::zeroed(&self.ctx.device, 4, label)
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

    /// Submits everything recorded plus a copy of `src`'s first `bytes` bytes, and returns
    /// them (None when the device failed; the reason is recorded for `check`).
    fn read_bytes(&self, src: &Buf, bytes: u64) -> Option<Vec<u8>> {
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
        let mut rec = self.rec();
        rec.encoder(&self.ctx)
            .copy_buffer_to_buffer(&src.raw, 0, &staging, 0, size);
        rec.submit(&self.ctx);
        let data = self.ctx.read_mapped(&staging, size);
        rec.settled();
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
        match self.read_bytes(&src.buf, 4 * src.len() as u64) {
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
        match self.read_bytes(&src.buf, 4 * src.len() as u64) {
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
            &[
                &x.buf,
                &labels.buf,
                &images.pixels,
                &images.labels,
                &order.buf,
            ],
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
            &[
                &x.buf,
                &labels.buf,
                &images.pixels,
                &images.labels,
                &order.buf,
                &warp.buf,
            ],
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
        assert!(out.len() >= s.output_len() && input.len() >= s.input_len());
        assert!(params.len() >= w_off + s.weight_len() && params.len() >= b_off + s.out_c);
        self.launch(
            &ops::conv2d_forward(s, w_off, b_off),
            &[&out.buf, &input.buf, &params.buf],
        );
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
        self.launch(
            &ops::conv2d_backward_input(s, w_off),
            &[&d_input.buf, &d_out.buf, &params.buf],
        );
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
        let weight = ops::conv2d_backward_weight(s, w_off, b_off);
        let partials_len = ops::split_k_partials_len(&weight.uniform);
        if partials_len == 0 {
            self.launch(&weight, &[&grads.buf, &d_out.buf, &input.buf]);
            return;
        }
        // partials (splits, out_c, patch_len + 1), summed over splits into grads.
        let partials = self.partials(partials_len);
        let partials = &partials.as_ref().expect("allocated").buf;
        self.launch(&weight, &[partials, &d_out.buf, &input.buf]);
        self.launch(
            &ops::conv2d_backward_weight_reduce(&weight),
            &[&grads.buf, partials],
        );
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
            &[&out.buf, &argmax.buf, &input.buf],
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
            &[&d_input.buf, &d_out.buf, &argmax.buf],
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
        self.launch(
            &ops::dense_forward(s, w_off, b_off),
            &[&out.buf, &input.buf, &params.buf],
        );
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
        self.launch(
            &ops::dense_backward_input(s, w_off),
            &[&d_input.buf, &d_out.buf, &params.buf],
        );
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
        self.launch(
            &ops::dense_backward_weight(s, w_off, b_off),
            &[&grads.buf, &d_out.buf, &input.buf],
        );
    }

    fn activation_forward(
        &self,
        out: &mut GpuTensor,
        input: &GpuTensor,
        act: Activation,
        len: usize,
    ) {
        assert!(out.len() >= len && input.len() >= len);
        self.launch(&ops::activation_forward(len, act), &[&out.buf, &input.buf]);
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
            &[&d_input.buf, &d_out.buf, &y.buf],
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
            &[
                &probs.buf,
                &stats.buf,
                &logits.buf,
                &labels.buf,
                &class_weights.buf,
            ],
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
            &[&d_logits.buf, &probs.buf, &labels.buf, &class_weights.buf],
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
            &[&confusion.buf, &probs.buf, &labels.buf],
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
            &[&params.buf, &grads.buf, &m.buf, &v.buf, &decay.buf],
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
            &[&out.buf, &saved.buf, &running.buf, &input.buf, &params.buf],
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
            &[&out.buf, &input.buf, &params.buf, &running.buf],
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
            &[
                &d_input.buf,
                &grads.buf,
                &d_out.buf,
                &input.buf,
                &saved.buf,
                &params.buf,
            ],
        );
    }

    fn dropout_forward(&self, out: &mut GpuTensor, input: &GpuTensor, d: &Dropout, len: usize) {
        assert!(out.len() >= len && input.len() >= len);
        self.launch(&ops::dropout_forward(d, len), &[&out.buf, &input.buf]);
    }

    fn dropout_backward(
        &self,
        d_input: &mut GpuTensor,
        d_out: &GpuTensor,
        d: &Dropout,
        len: usize,
    ) {
        assert!(d_input.len() >= len && d_out.len() >= len);
        self.launch(&ops::dropout_backward(d, len), &[&d_input.buf, &d_out.buf]);
    }

    fn globalavgpool_forward(
        &self,
        out: &mut GpuTensor,
        input: &GpuTensor,
        s: &GlobalAvgPoolShape,
    ) {
        assert!(out.len() >= s.output_len() && input.len() >= s.input_len());
        self.launch(&ops::globalavgpool_forward(s), &[&out.buf, &input.buf]);
    }

    fn globalavgpool_backward(
        &self,
        d_input: &mut GpuTensor,
        d_out: &GpuTensor,
        s: &GlobalAvgPoolShape,
    ) {
        assert!(d_input.len() >= s.input_len() && d_out.len() >= s.output_len());
        self.launch(&ops::globalavgpool_backward(s), &[&d_input.buf, &d_out.buf]);
    }

    fn scale_add(&self, acc: &mut GpuTensor, x: &GpuTensor, alpha: f32, beta: f32, len: usize) {
        assert!(acc.len() >= len && x.len() >= len);
        self.launch(&ops::scale_add(len, alpha, beta), &[&acc.buf, &x.buf]);
    }
}
