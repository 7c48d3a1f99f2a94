//! Timing dispatches: a session the recorder keeps open while `fergpu profile` or autotuning
//! measures, in which every dispatch is timed by GPU timestamps (its compute pass writes one
//! at its start and one at its end, `Features::TIMESTAMP_QUERY`), or, where the adapter has
//! no timestamps or they are not wanted, submitted alone and waited for on the host.
//!
//! Timestamps go to a query set of `QUERIES` entries, resolved and read back when the
//! session ends or the set is full (the only waits timestamps add). Host-side figures of
//! every submission (encoding, submitting, waiting for the device to catch up) are counted
//! always, in [`HostTimes`].

use super::context::{block_on, Context};
use super::kernels::Kernel;
use super::tiles::TileConfig;
use super::work::Work;
use std::time::Duration;
use web_time::Instant;

/// Query slots of a session: two per dispatch, so 2,048 dispatches between read-backs.
pub(crate) const QUERIES: u32 = wgpu::QUERY_SET_MAX_QUERIES;

/// How the dispatches of a timing session are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Timer {
    /// GPU timestamps at the start and end of each dispatch's compute pass: the kernel's own
    /// time on the device, dispatches still queued back to back.
    Timestamps,
    /// Each dispatch submitted alone and waited for, timed on the host: the kernel's time
    /// plus the submission's and the wake-up's latency (an upper bound; for adapters without
    /// timestamp queries).
    Wall,
}

impl Timer {
    /// A line saying what the figures mean.
    pub fn describe(self) -> &'static str {
        match self {
            Timer::Timestamps => "GPU timestamps around each dispatch (device time)",
            Timer::Wall => {
                "host wall clock, each dispatch submitted alone and waited for (device time \
                 plus submit and wake-up latency: an upper bound)"
            }
        }
    }
}

/// One timed dispatch.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedDispatch {
    /// The kernel.
    pub kernel: Kernel,
    /// Its tile configuration, for a tiled kernel.
    pub tiles: Option<TileConfig>,
    /// The bytes of its uniform struct (its shape; see [`super::uniforms`]).
    pub uniform: Vec<u8>,
    /// The plan op it ran for ([`crate::backend::Backend::label_op`]).
    pub op: Option<usize>,
    /// Workgroups dispatched.
    pub workgroups: u64,
    /// The submission it was part of, counted from the session's start.
    pub submission: usize,
    /// Start and end, in ns from the session's first timestamp (device clock) or from the
    /// session's start (host clock).
    pub start_ns: f64,
    /// See `start_ns`.
    pub end_ns: f64,
}

impl TimedDispatch {
    /// Its duration in µs.
    pub fn micros(&self) -> f64 {
        (self.end_ns - self.start_ns) / 1e3
    }
}

/// Host-side time spent per submission, summed since the backend opened (or the last
/// reset): the cost of recording and handing over work, and of waiting for the device when
/// the host ran too far ahead.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostTimes {
    /// Submissions counted.
    pub submissions: usize,
    /// From the first command recorded into an encoder to its submission.
    pub encode: Duration,
    /// Writing the uniforms and submitting.
    pub submit: Duration,
    /// Blocked after submitting until an older submission finished (the bound on batches in
    /// flight).
    pub throttled: Duration,
}

/// The query set and buffers of a timestamp session.
struct Queries {
    set: wgpu::QuerySet,
    /// `(QUERIES)` u64 ticks, resolved from the set.
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Queries written since the last read-back.
    used: u32,
    /// Nanoseconds per tick.
    period: f64,
    /// The first timestamp of the session, in ticks (times are relative to it).
    origin: Option<u64>,
}

/// An open timing session.
pub(crate) struct Session {
    pub(crate) timer: Timer,
    queries: Option<Queries>,
    records: Vec<TimedDispatch>,
    /// Records still waiting for their timestamps (the last ones).
    unresolved: usize,
    started: Instant,
    /// The recorder's submission count when the session started.
    pub(crate) first_submission: usize,
}

impl Session {
    /// Opens a session timing with `timer` (which must be `Wall` unless the device has
    /// timestamp queries); `submissions` is the recorder's count so far.
    pub(crate) fn new(ctx: &Context, timer: Timer, submissions: usize) -> Session {
        let queries = (timer == Timer::Timestamps).then(|| {
            assert!(
                ctx.timestamps,
                "the device was opened without timestamp queries"
            );
            let bytes = u64::from(QUERIES) * 8;
            Queries {
                set: ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("fergpu timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: QUERIES,
                }),
                resolve: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("fergpu timestamps resolved"),
                    size: bytes,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                readback: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("fergpu timestamps readback"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                used: 0,
                period: f64::from(ctx.queue.get_timestamp_period()),
                origin: None,
            }
        });
        Session {
            timer,
            queries,
            records: Vec::new(),
            unresolved: 0,
            started: Instant::now(),
            first_submission: submissions,
        }
    }

    /// Whether the query set has no room for another dispatch.
    pub(crate) fn full(&self) -> bool {
        self.queries.as_ref().is_some_and(|q| q.used + 2 > QUERIES)
    }

    /// The timestamp writes of the next dispatch's pass (timestamp sessions), after noting
    /// the dispatch. `submission` is the recorder's count of submissions so far.
    pub(crate) fn note(
        &mut self,
        kernel: Kernel,
        tiles: Option<TileConfig>,
        uniform: &[u8],
        op: Option<usize>,
        workgroups: u64,
        submission: usize,
    ) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        self.records.push(TimedDispatch {
            kernel,
            tiles,
            uniform: uniform.to_vec(),
            op,
            workgroups,
            submission: submission - self.first_submission,
            start_ns: 0.0,
            end_ns: 0.0,
        });
        self.unresolved += 1;
        let q = self.queries.as_mut()?;
        let at = q.used;
        q.used += 2;
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &q.set,
            beginning_of_pass_write_index: Some(at),
            end_of_pass_write_index: Some(at + 1),
        })
    }

    /// Wall sessions: the last dispatch ran from `start` to `end` (host clock).
    pub(crate) fn wall(&mut self, start: Instant, end: Instant) {
        let last = self.records.last_mut().expect("a noted dispatch");
        last.start_ns = start.duration_since(self.started).as_nanos() as f64;
        last.end_ns = end.duration_since(self.started).as_nanos() as f64;
        self.unresolved = 0;
    }

    /// Timestamp sessions: records the resolve of every query written so far at the end of
    /// `encoder` (which the caller then submits and waits for before [`Session::read`]).
    pub(crate) fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        if let Some(q) = &self.queries {
            if q.used > 0 {
                encoder.resolve_query_set(&q.set, 0..q.used, &q.resolve, 0);
                encoder.copy_buffer_to_buffer(&q.resolve, 0, &q.readback, 0, u64::from(q.used) * 8);
            }
        }
    }

    /// Timestamp sessions: reads the resolved timestamps back (after the submission holding
    /// [`Session::resolve`] finished) into the dispatches waiting for them, and frees the
    /// query set for more. A failed read leaves NaN times (and the reason recorded).
    pub(crate) fn read(&mut self, ctx: &Context) {
        let Some(q) = self.queries.as_mut() else {
            return;
        };
        if q.used == 0 {
            return;
        }
        let ticks: Vec<u64> = match block_on(ctx.read_back(&q.readback, u64::from(q.used) * 8)) {
            Some(bytes) => bytemuck::pod_collect_to_vec(&bytes),
            None => vec![u64::MAX; q.used as usize],
        };
        let origin = *q.origin.get_or_insert(ticks[0]);
        let ns = |t: u64| {
            if t == u64::MAX {
                f64::NAN
            } else {
                t.wrapping_sub(origin) as i64 as f64 * q.period
            }
        };
        let first = self.records.len() - self.unresolved;
        for (r, pair) in self.records[first..].iter_mut().zip(ticks.chunks(2)) {
            r.start_ns = ns(pair[0]);
            r.end_ns = ns(pair[1]);
        }
        self.unresolved = 0;
        q.used = 0;
    }

    /// Whether some dispatches still wait for their timestamps.
    pub(crate) fn pending(&self) -> bool {
        self.unresolved > 0 && self.queries.as_ref().is_some_and(|q| q.used > 0)
    }

    /// The timed dispatches, in recording order.
    pub(crate) fn into_records(self) -> Vec<TimedDispatch> {
        self.records
    }
}

impl TimedDispatch {
    /// What this dispatch computes (its kernel's declared work, from its uniform struct).
    pub fn work(&self) -> Work {
        self.kernel.work(&self.uniform)
    }
}
