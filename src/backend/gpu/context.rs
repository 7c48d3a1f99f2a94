//! The device: adapter, logical device, queue, limits, error capture, and waiting. This is
//! the only module that polls the device.

use super::adapter::{self, AdapterRequest, AdapterSummary, GpuApi};
use crate::{Error, Result};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// At most this many GPU errors are kept (a broken kernel repeats its error every batch).
const MAX_ERRORS: usize = 8;
/// How long one poll waits before looking whether the device was lost meanwhile.
const POLL_SLICE: Duration = Duration::from_secs(2);

/// GPU errors reported asynchronously (validation, out of memory, device lost), kept until
/// [`Context::check`] reports them.
#[derive(Clone, Default)]
pub(crate) struct ErrorSink {
    inner: Arc<Mutex<Sink>>,
}

#[derive(Default)]
struct Sink {
    messages: Vec<String>,
    dropped: usize,
    lost: bool,
}

impl ErrorSink {
    /// Records one error message.
    pub(crate) fn push(&self, message: String) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if s.messages.len() < MAX_ERRORS {
            s.messages.push(message);
        } else {
            s.dropped += 1;
        }
    }

    fn mark_lost(&self, message: String) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).lost = true;
        self.push(message);
    }

    fn lost(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).lost
    }

    /// `Err` with every recorded message if any error happened. Errors stay recorded: a device
    /// that failed once is not trusted again.
    pub(crate) fn check(&self) -> Result<()> {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if s.messages.is_empty() {
            return Ok(());
        }
        let mut text = s.messages.join("\n");
        if s.dropped > 0 {
            text.push_str(&format!("\n(and {} more errors)", s.dropped));
        }
        Err(Error::Gpu(text))
    }
}

/// An actionable message for an error wgpu reports.
fn describe(e: &wgpu::Error, adapter: &str) -> String {
    match e {
        wgpu::Error::OutOfMemory { .. } => format!(
            "out of GPU memory on {adapter}: use a smaller --batch-size or model, close other \
             GPU programs, or pick another adapter (`fergpu adapters`)"
        ),
        wgpu::Error::Validation { description, .. } => format!(
            "wgpu rejected a command on {adapter} (a fergpu bug; please report it with this \
             message): {description}"
        ),
        wgpu::Error::Internal { description, .. } => format!(
            "the driver of {adapter} failed internally: {description}; update the driver or \
             pick another adapter (`fergpu adapters`, `--adapter cpu`)"
        ),
    }
}

/// An opened device and what it allows.
pub(crate) struct Context {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) summary: AdapterSummary,
    pub(crate) limits: wgpu::Limits,
    pub(crate) errors: ErrorSink,
    /// Whether the device was opened with `Features::TIMESTAMP_QUERY` (the adapter has it):
    /// compute passes can then write timestamps (`fergpu profile`, autotuning).
    pub(crate) timestamps: bool,
}

impl Context {
    /// Opens the adapter `req` asks for through `api`, with the adapter's own limits.
    pub(crate) fn open(req: &AdapterRequest, api: Option<GpuApi>) -> Result<Context> {
        let adapters = adapter::enumerate(api);
        let found = adapter::list_adapters_of(&adapters);
        let index = adapter::choose(req, &found)?;
        let adapter = &adapters[index];
        let summary = found[index].clone();
        // The adapter's limits rather than the WebGPU defaults: the data set and the large
        // layers need big storage bindings.
        let limits = adapter.limits();
        // Timestamps at the start and end of compute passes are all the profile needs (each
        // dispatch has its own pass), so the inside-encoder/inside-pass features are not
        // asked for. Requested only where the adapter has it.
        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let desc = wgpu::DeviceDescriptor {
            label: Some("fergpu"),
            required_features: if timestamps {
                wgpu::Features::TIMESTAMP_QUERY
            } else {
                wgpu::Features::empty()
            },
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::Gpu(format!(
                "cannot open {summary}: {e}; pick another adapter (`fergpu adapters`) or \
                 `--adapter cpu`"
            ))
        })?;
        let errors = ErrorSink::default();
        let (sink, name) = (errors.clone(), summary.name.clone());
        device.on_uncaptured_error(Arc::new(move |e| sink.push(describe(&e, &name))));
        let (sink, name) = (errors.clone(), summary.name.clone());
        device.set_device_lost_callback(move |reason, message| {
            // Dropping the device at the end of a run reports Destroyed: not an error.
            if reason != wgpu::DeviceLostReason::Destroyed {
                sink.mark_lost(format!(
                    "lost the GPU device {name} ({reason:?}: {message}); the driver may have \
                     reset it after a long dispatch or a crash: try a smaller --batch-size, \
                     update the driver, or use `--adapter cpu`"
                ));
            }
        });
        Ok(Context {
            device,
            queue,
            summary,
            limits,
            errors,
            timestamps,
        })
    }

    /// Blocks until submission `index` has finished, so that the host never runs more than a
    /// few batches ahead of the device (bounded staging memory, prompt error reports).
    pub(crate) fn wait_for(&self, index: wgpu::SubmissionIndex) {
        self.wait_on(Some(index));
    }

    /// Lets wgpu run finished callbacks and free retired resources, without blocking.
    pub(crate) fn poll(&self) {
        if let Err(e) = self.device.poll(wgpu::PollType::Poll) {
            self.errors.push(format!("polling the GPU failed: {e}"));
        }
    }

    /// Runs `f` inside a validation and an out-of-memory error scope and returns the first
    /// error either caught, as an actionable [`Error::Gpu`].
    pub(crate) fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        match v.or(o) {
            Some(e) => Err(Error::Gpu(format!(
                "{what}: {}",
                describe(&e, &self.summary.name)
            ))),
            None => Ok(out),
        }
    }

    /// Maps `staging` (already filled by a submitted copy) and returns its first `bytes`
    /// bytes, or `None` (with the reason recorded) if the device failed meanwhile.
    pub(crate) fn read_mapped(&self, staging: &wgpu::Buffer, bytes: u64) -> Option<Vec<u8>> {
        let done: Arc<Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>> =
            Arc::default();
        let flag = done.clone();
        staging.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
            *flag.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        });
        self.wait();
        let result = done.lock().unwrap_or_else(|p| p.into_inner()).take();
        match result {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                self.errors
                    .push(format!("reading results back from the GPU failed: {e}"));
                return None;
            }
            None => {
                self.errors.push(
                    "the GPU never finished the work whose results were read back".to_string(),
                );
                return None;
            }
        }
        let data = match staging.get_mapped_range(..bytes) {
            Ok(view) => view.to_vec(),
            Err(e) => {
                self.errors
                    .push(format!("reading results back from the GPU failed: {e}"));
                return None;
            }
        };
        staging.unmap();
        Some(data)
    }

    /// Blocks until every submitted command buffer has finished (and map callbacks ran),
    /// without hanging on a lost device: the wait is sliced and gives up once the device is
    /// reported lost.
    pub(crate) fn wait(&self) {
        self.wait_on(None);
    }

    /// Waits for `index` (or for everything submitted), sliced as [`Context::wait`] says.
    fn wait_on(&self, index: Option<wgpu::SubmissionIndex>) {
        loop {
            let poll = self.device.poll(wgpu::PollType::Wait {
                submission_index: index.clone(),
                timeout: Some(POLL_SLICE),
            });
            match poll {
                Ok(_) => return,
                Err(wgpu::PollError::Timeout) if !self.errors.lost() => continue,
                Err(wgpu::PollError::Timeout) => return,
                Err(e) => {
                    self.errors.push(format!("waiting for the GPU failed: {e}"));
                    return;
                }
            }
        }
    }
}
