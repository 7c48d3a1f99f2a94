//! GPU backend (in progress).
pub mod kernels;
