//! fergpu in the browser: the fergpu library compiled to `wasm32-unknown-unknown`, running its
//! WGSL kernels on the page's WebGPU adapter (or, without one, its CPU reference backend on
//! the page's thread), with the bindings the page (`web/static/app.js`) calls.
//!
//! - [`engine`]: opening a backend (WebGPU, else the CPU) and the shader report;
//! - [`classify`]: a checkpoint loaded for recognition — photos, camera frames, crops;
//! - [`training`]: data (a streamed FER2013 CSV or generated faces), training a model batch
//!   by batch without blocking the page, evaluation, checkpoints and ONNX downloads;
//! - [`parity`]: the browser's own checks of every op family and of whole training steps,
//!   WebGPU against the CPU reference, for the tests in `web/tests/`.
//!
//! Every result the GPU produces is awaited (`Backend::download_async`): a browser cannot
//! block. Calls that take a while return promises; the page shows progress between them.

#![warn(missing_docs)]

pub mod classify;
pub mod engine;
pub mod parity;
pub mod training;

use wasm_bindgen::prelude::*;

/// Sends Rust panics to the browser console with their message, before the module traps.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("fergpu panicked: {info}").into());
    }));
}

/// A fergpu error as a JavaScript `Error` with the same actionable message.
pub(crate) fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// The message when the page calls into an object that is still busy with a previous call.
pub(crate) fn busy(what: &str) -> JsValue {
    js_error(format!(
        "the {what} is still busy with a previous call; await it first"
    ))
}
