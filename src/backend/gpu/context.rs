//! The device: adapter, logical device, queue, limits, error capture, and waiting. This is
//! the only module that polls the device, and [`Context::read_back`] the one place results
//! come back from it.
//!
//! Reading back is asynchronous: a mapped buffer resolves only after the device has done the
//! work, and in a browser only after control returns to the event loop, where nothing may
//! block. So `read_back` is an `async fn`, and everything that reads results (losses,
//! predictions, parameters, timestamps) goes through it. Native code drives it with
//! [`block_on`], which polls the device until the map is done (as fergpu always did); code
//! that runs in a browser awaits it ([`crate::backend::Backend::download_async`]).

use super::adapter::{self, AdapterRequest, AdapterSummary, GpuApi};
use crate::{Error, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
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
        block_on(Context::open_adapter(
            &adapters[index],
            found[index].clone(),
        ))
    }

    /// Opens the browser's WebGPU adapter (`navigator.gpu`), awaiting what a browser cannot
    /// block on; [`Error::NoAdapter`] when the browser has none.
    pub(crate) async fn open_browser() -> Result<Context> {
        let adapter = adapter::browser_adapter()
            .await
            .ok_or_else(|| Error::NoAdapter {
                wanted: "WebGPU".into(),
                found: "  (none: this browser has no WebGPU adapter; it may be turned off, or \
                    the GPU or its driver is blocked)"
                    .into(),
            })?;
        let summary = adapter::list_adapters_of(std::slice::from_ref(&adapter)).remove(0);
        Context::open_adapter(&adapter, summary).await
    }

    /// Opens the logical device of `adapter` (summarised by `summary`) with the adapter's
    /// own limits, and routes its errors into the context's [`ErrorSink`].
    async fn open_adapter(adapter: &wgpu::Adapter, summary: AdapterSummary) -> Result<Context> {
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
        let (device, queue) = adapter.request_device(&desc).await.map_err(|e| {
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
        block_on(self.scoped_async(what, f))
    }

    /// [`Context::scoped`] for a browser, where the scopes' results arrive only after control
    /// returns to the event loop.
    pub(crate) async fn scoped_async<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = validation.pop().await;
        let o = oom.pop().await;
        match v.or(o) {
            Some(e) => Err(Error::Gpu(format!(
                "{what}: {}",
                describe(&e, &self.summary.name)
            ))),
            None => Ok(out),
        }
    }

    /// Maps `staging` (already filled by a submitted copy) and resolves to its first `bytes`
    /// bytes, or to `None` (with the reason recorded) if the device failed meanwhile. The one
    /// read-back seam (see the module docs).
    pub(crate) async fn read_back(&self, staging: &wgpu::Buffer, bytes: u64) -> Option<Vec<u8>> {
        let (mapped, result) = oneshot();
        staging.map_async(wgpu::MapMode::Read, ..bytes, move |r| mapped.send(r));
        // Natively nothing runs the map's callback until the device is polled: wait for it
        // here, so the await below finds the result (or, on a lost device, none). In a
        // browser polling does nothing and the await yields to the event loop instead.
        #[cfg(not(target_arch = "wasm32"))]
        let result = {
            self.wait();
            result.now()
        };
        #[cfg(target_arch = "wasm32")]
        let result = result.await;
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

/// Runs `future` to its end on this thread: how native code drives the GPU's futures
/// ([`Context::read_back`], opening a device, error scopes). A browser cannot block: there
/// a future that is not ready at once is a bug of the caller, which must await it instead.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    #[cfg(not(target_arch = "wasm32"))]
    {
        pollster::block_on(future)
    }
    #[cfg(target_arch = "wasm32")]
    {
        let mut future = std::pin::pin!(future);
        let mut cx = TaskContext::from_waker(Waker::noop());
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => out,
            Poll::Pending => panic!(
                "a GPU result was waited for synchronously in a browser; await the async \
                 form (Backend::download_async) instead"
            ),
        }
    }
}

/// A one-shot channel from a callback to a future: [`Sender::send`] sets the value once and
/// wakes whoever awaits the [`Receiver`].
fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
    }));
    (Sender(slot.clone()), Receiver(slot))
}

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

struct Sender<T>(Arc<Mutex<Slot<T>>>);

struct Receiver<T>(Arc<Mutex<Slot<T>>>);

impl<T> Sender<T> {
    fn send(self, value: T) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.value = Some(value);
        if let Some(w) = slot.waker.take() {
            w.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The value if it was sent already, without waiting.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    fn now(&self) -> Option<T> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .value
            .take()
    }
}

impl<T> Future for Receiver<T> {
    /// `None` when the sender was dropped without sending (the callback will never run).
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<T>> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = slot.value.take() {
            return Poll::Ready(Some(v));
        }
        if Arc::strong_count(&self.0) == 1 {
            return Poll::Ready(None); // the sender is gone
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sent_value_is_there_at_once_and_a_dropped_sender_ends_the_wait() {
        let (tx, rx) = oneshot();
        assert_eq!(rx.now(), None);
        tx.send(7);
        assert_eq!(block_on(rx), Some(7));
        let (tx, rx) = oneshot::<u8>();
        drop(tx);
        assert_eq!(block_on(rx), None);
    }

    #[test]
    fn a_value_sent_from_another_thread_wakes_the_waiting_future() {
        let (tx, rx) = oneshot();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send("mapped");
        });
        assert_eq!(block_on(rx), Some("mapped"));
        t.join().unwrap();
    }
}
