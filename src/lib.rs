//! fergpu: facial-expression classifiers on FER2013, trained through WGSL compute shaders on
//! any GPU wgpu reaches (Vulkan, Metal, DX12), with a CPU reference backend that implements
//! every op too.
//!
//! Module map:
//! - [`data`]: CSV reading and validation, splits, generated demo faces;
//! - [`augment`]: training-time flips and shifts, packed into the order buffer;
//! - [`shape`]: every layer's sizes, the single source of truth;
//! - [`backend`]: the op-level [`backend::Backend`] trait, the CPU reference and the GPU backend;
//! - [`model`]: layer lists, presets, the flat parameter layout, the generic network;
//! - [`train`], [`eval`], [`checkpoint`]: the training loop, evaluation, safetensors files;
//! - [`metrics`], [`report`]: confusion matrices, per-class scores, plots and HTML tables;
//! - [`experiment`]: cross-validation folds, sweeps, schedules, early stopping;
//! - [`predict`]: faces found in photos and folders, cropped as FER2013 crops them, classified;
//! - [`export`]: checkpoints as ONNX models for other runtimes.

#![warn(missing_docs)]

pub mod augment;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod metrics;
pub mod model;
pub mod predict;
pub mod report;
pub mod rng;
pub mod run;
pub mod shape;
pub mod train;

pub use error::{Error, Result};
