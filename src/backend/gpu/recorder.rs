//! Recording a batch: one command encoder per batch, per-dispatch uniforms, cached bind
//! groups, and submission with a bounded number of batches in flight.
//!
//! Uniforms: every dispatch gets its own 256-byte-aligned slot in a page of uniform memory
//! (pages of [`PAGE`] bytes, kept between batches). The slots are filled on the host while
//! recording and written with one `write_buffer` per page right before the batch's submit;
//! a single reused uniform buffer would be wrong, because every `write_buffer` of a
//! submission lands before any of its dispatches runs. Since a training step records the same
//! dispatches in the same order every batch, slot `i` binds the same buffers every time and
//! its bind group comes from the cache.

use super::buffers::Buf;
use super::context::Context;
use super::kernels::{Kernel, Pipelines};
use std::collections::{HashMap, VecDeque};
use std::sync::Weak;

/// Bytes per uniform page.
const PAGE: u64 = 64 * 1024;
/// Submissions allowed in flight before `submit` waits for the oldest.
const IN_FLIGHT: usize = 2;
/// Cached bind groups kept before the cache is emptied (it holds buffers alive).
const MAX_CACHED: usize = 4096;
/// New cache entries between sweeps for entries whose buffers were dropped.
const SWEEP_EVERY: usize = 256;
/// Most storage buffers a kernel binds.
const MAX_BUFFERS: usize = 6;

/// A bind group's identity: kernel, uniform slot, and the ids of the buffers it binds.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct BindKey {
    kernel: Kernel,
    page: u32,
    offset: u32,
    buffers: [u64; MAX_BUFFERS],
}

/// One batch's recording state.
pub(crate) struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    /// Uniform pages `(PAGE bytes)` on the device, and their host copies.
    pages: Vec<(wgpu::Buffer, Vec<u8>)>,
    /// Next free slot: page index and byte offset.
    cursor: (usize, u64),
    /// Bytes per uniform slot (the device's uniform offset alignment, at least 256).
    slot: u64,
    /// Bind groups with tokens of the buffers they bind (a cached bind group keeps its
    /// buffers alive, so entries whose tensors the caller dropped are swept out).
    cache: HashMap<BindKey, (wgpu::BindGroup, Vec<Weak<()>>)>,
    /// Entries added since the last sweep.
    added: usize,
    in_flight: VecDeque<wgpu::SubmissionIndex>,
    /// Command buffers submitted so far (see `GpuBackend::traffic`).
    pub(crate) submissions: usize,
}

impl Recorder {
    /// An empty recorder for `ctx`'s device.
    pub(crate) fn new(ctx: &Context) -> Recorder {
        let slot = u64::from(ctx.limits.min_uniform_buffer_offset_alignment).max(256);
        Recorder {
            encoder: None,
            pages: Vec::new(),
            cursor: (0, 0),
            slot,
            cache: HashMap::new(),
            added: 0,
            in_flight: VecDeque::new(),
            submissions: 0,
        }
    }

    /// Whether commands are recorded but not yet submitted.
    pub(crate) fn pending(&self) -> bool {
        self.encoder.is_some()
    }

    /// The open command encoder, started if needed.
    pub(crate) fn encoder(&mut self, ctx: &Context) -> &mut wgpu::CommandEncoder {
        self.encoder.get_or_insert_with(|| {
            ctx.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("fergpu batch"),
                })
        })
    }

    /// Copies `bytes` (a uniform struct's) into the next free slot; returns `(page, offset)`.
    fn push_uniform(&mut self, ctx: &Context, bytes: &[u8]) -> (usize, u64) {
        assert!(
            bytes.len() as u64 <= self.slot,
            "uniform larger than a slot"
        );
        let (mut page, mut offset) = self.cursor;
        if offset + self.slot > PAGE {
            (page, offset) = (page + 1, 0);
        }
        if page == self.pages.len() {
            let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("fergpu uniforms"),
                size: PAGE,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.pages.push((buffer, vec![0; PAGE as usize]));
        }
        let at = offset as usize;
        self.pages[page].1[at..at + bytes.len()].copy_from_slice(bytes);
        self.cursor = (page, offset + self.slot);
        (page, offset)
    }

    /// Records one dispatch of `kernel` with parameters `uniform` (the bytes of its
    /// [`super::uniforms::Uniform`] struct) over `buffers` (in the registry's binding order,
    /// the uniform left out), as `groups` workgroups `(x, y)`.
    pub(crate) fn dispatch(
        &mut self,
        ctx: &Context,
        pipelines: &Pipelines,
        kernel: Kernel,
        uniform: &[u8],
        buffers: &[&Buf],
        groups: (u32, u32),
    ) {
        let spec = kernel.spec();
        assert_eq!(
            buffers.len() + 1,
            spec.bindings.len(),
            "{}: wrong number of buffers",
            spec.entry
        );
        let (page, offset) = self.push_uniform(ctx, uniform);
        let mut ids = [0u64; MAX_BUFFERS];
        for (id, b) in ids.iter_mut().zip(buffers) {
            *id = b.id;
        }
        let key = BindKey {
            kernel,
            page: page as u32,
            offset: offset as u32,
            buffers: ids,
        };
        if !self.cache.contains_key(&key) {
            self.added += 1;
            if self.added >= SWEEP_EVERY {
                self.added = 0;
                self.cache
                    .retain(|_, (_, tokens)| tokens.iter().all(|t| t.strong_count() > 0));
            }
            if self.cache.len() >= MAX_CACHED {
                self.cache.clear();
            }
        }
        let size = std::num::NonZeroU64::new(self.slot);
        let uniform_buffer = &self.pages[page].0;
        let bind_group = self.cache.entry(key).or_insert_with(|| {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: spec.bindings[0].0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: uniform_buffer,
                    offset,
                    size,
                }),
            }];
            for (&(binding, _), b) in spec.bindings[1..].iter().zip(buffers) {
                entries.push(wgpu::BindGroupEntry {
                    binding,
                    resource: b.raw.as_entire_binding(),
                });
            }
            let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(spec.entry),
                layout: pipelines.layout(kernel),
                entries: &entries,
            });
            (bind_group, buffers.iter().map(|b| b.token()).collect())
        });
        let bind_group = bind_group.0.clone();
        let encoder = self.encoder(ctx);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(spec.entry),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipelines.pipeline(kernel));
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    }

    /// Submits the recorded batch (uniforms first), if any; then, if more than
    /// [`IN_FLIGHT`] batches are queued, waits for the oldest.
    pub(crate) fn submit(&mut self, ctx: &Context) {
        let Some(encoder) = self.encoder.take() else {
            return;
        };
        let (last_page, used) = self.cursor;
        for (i, (buffer, host)) in self.pages.iter().enumerate().take(last_page + 1) {
            let len = if i == last_page { used } else { PAGE };
            if len > 0 {
                ctx.queue.write_buffer(buffer, 0, &host[..len as usize]);
            }
        }
        self.cursor = (0, 0);
        self.submissions += 1;
        self.in_flight
            .push_back(ctx.queue.submit([encoder.finish()]));
        while self.in_flight.len() > IN_FLIGHT {
            let oldest = self.in_flight.pop_front().expect("non-empty");
            ctx.wait_for(oldest);
        }
        ctx.poll();
    }

    /// Forgets the in-flight submissions (after a full wait, they are all done).
    pub(crate) fn settled(&mut self) {
        self.in_flight.clear();
    }
}
