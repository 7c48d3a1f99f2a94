//! fergpu: facial-expression classifiers on FER2013, trained through WGSL compute shaders on
//! any GPU wgpu reaches (Vulkan, Metal, DX12), with a CPU reference backend that implements
//! every op too.
//!
//! Module map:
//! - [`data`]: CSV reading and validation, splits, generated demo faces;
//! - [`augment`]: training-time flips and shifts (packed into the order buffer), scale,
//!   rotation and random erasing (a per-image warp buffer), exact on every backend;
//! - [`shape`]: every layer's sizes, the single source of truth;
//! - [`backend`]: the op-level [`backend::Backend`] trait, the CPU reference and the GPU backend;
//! - [`model`]: layer lists, presets, the flat parameter layout, the generic network;
//! - [`train`]: the training step and epoch, learning-rate schedules, early stopping;
//! - [`eval`]: evaluation passes in batches that fit the device, reports;
//! - [`checkpoint`]: safetensors files PyTorch can read;
//! - [`files`]: atomic writes of every file fergpu leaves behind;
//! - [`settings`]: every training setting, one type for flags, recipes, sweeps and resume;
//! - [`run`]: a whole run (the epoch loop, resume) and the run folder that owns its files;
//! - [`experiment`]: cross-validation folds and sweeps above single runs;
//! - [`cli`]: the command line; `src/main.rs` only parses and calls it;
//! - [`metrics`], [`report`]: confusion matrices, per-class scores, plots and HTML tables;
//! - [`predict`]: faces found in photos and folders, cropped as FER2013 crops them, classified;
//! - [`export`]: checkpoints as ONNX models for other runtimes;
//! - [`shipped`]: the trained model in the box, used when no checkpoint is given;
//! - [`bench`](mod@bench), [`profile`]: images/s and kernel GFLOP/s on any backend; a training
//!   step's GPU time kernel by kernel.
//!
//! The library compiles for `wasm32-unknown-unknown` too (the web app, `web/`): there the
//! command line ([`cli`], native only) is left out, the CPU backend runs on the page's one
//! thread, and results from the GPU are awaited (`Backend::download_async`).
//!
//! Imports go one way: cli → experiment → run → settings → train/eval → model → backend →
//! shape/data. Stopping is a [`cancel::Cancel`] value handed down, not a global.

#![warn(missing_docs)]

pub mod augment;
pub mod backend;
pub mod bench;
pub mod cancel;
pub mod checkpoint;
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod files;
mod flags;
pub mod metrics;
pub mod model;
pub mod predict;
pub mod profile;
pub mod report;
pub mod rng;
pub mod run;
pub mod settings;
pub mod shape;
pub mod shipped;
pub mod train;

pub use error::{Error, Result};
