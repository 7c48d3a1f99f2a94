//! Device buffers: the GPU backend's tensor, index and data-set types, and how they are made.
//!
//! Every buffer gets a process-unique id so recorded bind groups can be cached by the buffers
//! they bind (wgpu keeps a buffer alive while a cached bind group or a queued command uses
//! it, so ids are never reused while it matters).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use wgpu::util::DeviceExt;

/// Next buffer id; 0 is never handed out.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Usages of every tensor and index buffer: bound as storage, filled by copies and uploads,
/// read back by copies.
const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

/// A device buffer with its cache id.
#[derive(Debug)]
pub(crate) struct Buf {
    pub(crate) raw: wgpu::Buffer,
    pub(crate) id: u64,
    /// Dropped with the buffer: lets the bind group cache drop entries of dead buffers.
    alive: Arc<()>,
    /// A 4-byte stand-in for a buffer the device could not make (the reason is recorded):
    /// launches that bind it are skipped, so that no kernel ever indexes past it.
    pub(crate) stand_in: bool,
}

impl Buf {
    /// A zero-filled storage buffer of at least `bytes` bytes (wgpu zero-initialises new
    /// buffers; a binding needs at least 4 bytes, so empty buffers get 4).
    pub(crate) fn zeroed(device: &wgpu::Device, bytes: u64, label: &str) -> Buf {
        let raw = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: padded(bytes),
            usage: STORAGE,
            mapped_at_creation: false,
        });
        Buf::wrap(raw)
    }

    /// A storage buffer holding `bytes`, zero-padded to a multiple of 4 (at least 4).
    pub(crate) fn init(device: &wgpu::Device, bytes: &[u8], label: &str) -> Buf {
        let size = padded(bytes.len() as u64) as usize;
        let contents = if size == bytes.len() {
            std::borrow::Cow::Borrowed(bytes)
        } else {
            let mut v = bytes.to_vec();
            v.resize(size, 0);
            std::borrow::Cow::Owned(v)
        };
        let raw = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &contents,
            usage: STORAGE,
        });
        Buf::wrap(raw)
    }

    /// A 4-byte stand-in for a buffer that could not be made (see [`Buf::stand_in`]).
    pub(crate) fn stand_in(device: &wgpu::Device, label: &str) -> Buf {
        Buf {
            stand_in: true,
            ..Buf::zeroed(device, 4, label)
        }
    }

    fn wrap(raw: wgpu::Buffer) -> Buf {
        Buf {
            raw,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
            stand_in: false,
        }
    }

    /// A token that dies with this buffer.
    pub(crate) fn token(&self) -> Weak<()> {
        Arc::downgrade(&self.alive)
    }
}

/// `bytes` rounded up to a multiple of 4, and at least 4.
pub(crate) fn padded(bytes: u64) -> u64 {
    bytes.div_ceil(4).max(1) * 4
}

/// An `f32` buffer on the device: the GPU backend's [`crate::backend::Backend::Tensor`].
#[derive(Debug)]
pub struct GpuTensor {
    pub(crate) buf: Buf,
    len: usize,
}

impl GpuTensor {
    pub(crate) fn new(buf: Buf, len: usize) -> GpuTensor {
        GpuTensor { buf, len }
    }
    /// Elements in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A `u32` buffer on the device: the GPU backend's [`crate::backend::Backend::Indices`].
#[derive(Debug)]
pub struct GpuIndices {
    pub(crate) buf: Buf,
    len: usize,
}

impl GpuIndices {
    pub(crate) fn new(buf: Buf, len: usize) -> GpuIndices {
        GpuIndices { buf, len }
    }
    /// Elements in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A data set resident on the device: the GPU backend's [`crate::backend::Backend::Images`].
/// Pixels `(n, 48·48)` and labels `(n)` are `u8`, packed four to a little-endian `u32` word.
#[derive(Debug)]
pub struct GpuImages {
    pub(crate) pixels: Buf,
    pub(crate) labels: Buf,
    n: usize,
}

impl GpuImages {
    pub(crate) fn new(pixels: Buf, labels: Buf, n: usize) -> GpuImages {
        GpuImages { pixels, labels, n }
    }
    /// Images in the set.
    pub fn len(&self) -> usize {
        self.n
    }
    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}
