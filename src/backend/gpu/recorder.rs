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
use super::tiles::TileConfig;
use super::timing::{HostTimes, Session, TimedDispatch, Timer};
use std::collections::{HashMap, VecDeque};
use std::sync::Weak;
use web_time::Instant;

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

/// One dispatch to record.
pub(crate) struct Dispatch<'a> {
    /// The entry point (its bind group layout, and what a profile calls it).
    pub(crate) kernel: Kernel,
    /// Its pipeline (a tiled kernel's for one configuration).
    pub(crate) pipeline: &'a wgpu::ComputePipeline,
    /// The tile configuration of a tiled kernel.
    pub(crate) tiles: Option<TileConfig>,
    /// The bytes of its [`super::uniforms::Uniform`] struct.
    pub(crate) uniform: &'a [u8],
    /// Its storage buffers, in its binding set's field order (the uniform left out).
    pub(crate) buffers: &'a [&'a Buf],
    /// Workgroups `(x, y)`.
    pub(crate) groups: (u32, u32),
    /// The plan op it runs for (profiles name its layer).
    pub(crate) op: Option<usize>,
}

/// One batch's recording state.
pub(crate) struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    /// When the first command of the open encoder was recorded.
    encode_started: Option<Instant>,
    /// Uniform pages `(PAGE bytes)` on the device, their host copies being filled, and what
    /// was last written to the device (unchanged pages are not written again: a training
    /// step's uniforms are mostly the same every step).
    pages: Vec<(wgpu::Buffer, Vec<u8>, Vec<u8>)>,
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
    /// Host time spent per submission, summed.
    pub(crate) host: HostTimes,
    /// Uniform bytes written to the device so far (see `GpuBackend::traffic`).
    pub(crate) uniform_bytes: u64,
    /// The open timing session, if any.
    session: Option<Session>,
}

impl Recorder {
    /// An empty recorder for `ctx`'s device.
    pub(crate) fn new(ctx: &Context) -> Recorder {
        let slot = u64::from(ctx.limits.min_uniform_buffer_offset_alignment).max(256);
        Recorder {
            encoder: None,
            encode_started: None,
            pages: Vec::new(),
            cursor: (0, 0),
            slot,
            cache: HashMap::new(),
            added: 0,
            in_flight: VecDeque::new(),
            submissions: 0,
            host: HostTimes::default(),
            uniform_bytes: 0,
            session: None,
        }
    }

    /// Whether commands are recorded but not yet submitted.
    pub(crate) fn pending(&self) -> bool {
        self.encoder.is_some()
    }

    /// The open command encoder, started if needed.
    pub(crate) fn encoder(&mut self, ctx: &Context) -> &mut wgpu::CommandEncoder {
        if self.encoder.is_none() {
            self.encode_started = Some(Instant::now());
        }
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
            self.pages
                .push((buffer, vec![0; PAGE as usize], vec![0; PAGE as usize]));
        }
        let at = offset as usize;
        self.pages[page].1[at..at + bytes.len()].copy_from_slice(bytes);
        self.cursor = (page, offset + self.slot);
        (page, offset)
    }

    /// Records dispatch `d`. Inside a timing session its compute pass also writes timestamps,
    /// or (wall timing) it is submitted and waited for at once.
    pub(crate) fn dispatch(&mut self, ctx: &Context, pipelines: &Pipelines, d: &Dispatch<'_>) {
        if self.session.as_ref().is_some_and(Session::full) {
            self.drain_timestamps(ctx);
        }
        let Dispatch {
            kernel,
            uniform,
            buffers,
            groups,
            ..
        } = *d;
        let spec = kernel.spec();
        let at = pipelines.bindings(kernel);
        assert_eq!(
            buffers.len(),
            at.buffers.len(),
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
                binding: at.uniform,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: uniform_buffer,
                    offset,
                    size,
                }),
            }];
            for (&binding, b) in at.buffers.iter().zip(buffers) {
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
        self.encoder(ctx);
        let submission = self.submissions;
        let encoder = self.encoder.as_mut().expect("started above");
        let workgroups = u64::from(groups.0) * u64::from(groups.1);
        let timestamp_writes = self
            .session
            .as_mut()
            .and_then(|s| s.note(kernel, d.tiles, uniform, d.op, workgroups, submission));
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(spec.entry),
            timestamp_writes,
        });
        pass.set_pipeline(d.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
        drop(pass);
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.timer == Timer::Wall)
        {
            let start = Instant::now();
            self.submit(ctx);
            ctx.wait();
            self.settled();
            let end = Instant::now();
            self.session.as_mut().expect("open").wall(start, end);
        }
    }

    /// Opens a timing session (see [`super::timing`]); `Timer::Timestamps` needs a device
    /// with timestamp queries. Work recorded before it is submitted first.
    pub(crate) fn start_timing(&mut self, ctx: &Context, timer: Timer) {
        self.submit(ctx);
        self.session = Some(Session::new(ctx, timer, self.submissions));
    }

    /// Whether a timing session is open.
    pub(crate) fn timing(&self) -> bool {
        self.session.is_some()
    }

    /// Closes the timing session: submits what is recorded, waits for it, and returns every
    /// dispatch timed since [`Recorder::start_timing`] (empty without a session).
    pub(crate) fn finish_timing(&mut self, ctx: &Context) -> Vec<TimedDispatch> {
        self.drain_timestamps(ctx);
        self.session
            .take()
            .map(Session::into_records)
            .unwrap_or_default()
    }

    /// Submits what is recorded with the resolve of the session's timestamps, waits, and
    /// reads them back.
    fn drain_timestamps(&mut self, ctx: &Context) {
        let Some(session) = self.session.take() else {
            return;
        };
        let mut session = session;
        if session.pending() {
            session.resolve(self.encoder(ctx));
        }
        self.submit(ctx);
        ctx.wait();
        self.settled();
        session.read(ctx);
        self.session = Some(session);
    }

    /// Submits the recorded batch (uniforms first), if any; then, if more than
    /// [`IN_FLIGHT`] batches are queued, waits for the oldest.
    pub(crate) fn submit(&mut self, ctx: &Context) {
        let Some(encoder) = self.encoder.take() else {
            return;
        };
        let start = Instant::now();
        if let Some(began) = self.encode_started.take() {
            self.host.encode += start.duration_since(began);
        }
        let (last_page, used) = self.cursor;
        let mut uniform_bytes = 0;
        for (i, (buffer, host, written)) in self.pages.iter_mut().enumerate().take(last_page + 1) {
            let len = if i == last_page { used } else { PAGE } as usize;
            // Only the runs of slots that changed since the last write: most of a training
            // step's uniforms are the same every step (the gather's offset and the
            // optimizer's step are not).
            let slot = self.slot as usize;
            let same = |host: &[u8], written: &[u8], at: usize| {
                let to = (at + slot).min(len);
                host[at..to] == written[at..to]
            };
            let mut at = 0;
            while at < len {
                if same(host, written, at) {
                    at += slot;
                    continue;
                }
                let mut to = at + slot;
                while to < len && !same(host, written, to) {
                    to += slot;
                }
                let to = to.min(len);
                ctx.queue.write_buffer(buffer, at as u64, &host[at..to]);
                written[at..to].copy_from_slice(&host[at..to]);
                uniform_bytes += (to - at) as u64;
                at = to;
            }
        }
        self.uniform_bytes += uniform_bytes;
        self.cursor = (0, 0);
        self.submissions += 1;
        self.in_flight
            .push_back(ctx.queue.submit([encoder.finish()]));
        let submitted = Instant::now();
        self.host.submit += submitted.duration_since(start);
        while self.in_flight.len() > IN_FLIGHT {
            let oldest = self.in_flight.pop_front().expect("non-empty");
            ctx.wait_for(oldest);
        }
        ctx.poll();
        self.host.throttled += submitted.elapsed();
        self.host.submissions += 1;
    }

    /// Forgets the in-flight submissions (after a full wait, they are all done).
    pub(crate) fn settled(&mut self) {
        self.in_flight.clear();
    }
}
