//! The backend a page computes on: the browser's WebGPU adapter through fergpu's GPU backend,
//! or, where the browser has no WebGPU, fergpu's CPU reference backend compiled to wasm (one
//! thread, on the page's).

use fergpu::backend::cpu::CpuBackend;
use fergpu::backend::gpu::kernels::BuildOptions;
use fergpu::backend::gpu::GpuBackend;
use fergpu::backend::Backend;
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

/// An opened backend. A page opens one for its whole life, so the backend is leaked to
/// `'static` and the trainers and evaluators that borrow it can live in exported objects.
#[derive(Clone, Copy)]
pub enum Device {
    /// fergpu's GPU backend on the browser's WebGPU adapter.
    Gpu(&'static GpuBackend),
    /// fergpu's CPU reference backend, single-threaded in wasm.
    Cpu(&'static CpuBackend),
}

impl Device {
    /// The CPU reference backend on the page's thread.
    pub fn cpu() -> Device {
        Device::Cpu(Box::leak(Box::new(CpuBackend::new(1))))
    }

    /// The device's name: the adapter's and its kind ("software" for SwiftShader), or the
    /// CPU backend's. Browsers may hide the adapter's name.
    pub fn name(self) -> String {
        match self {
            Device::Gpu(be) => {
                let a = be.adapter();
                let name = if a.name.trim().is_empty() {
                    "the browser's WebGPU adapter"
                } else {
                    a.name.as_str()
                };
                format!("{name} ({})", a.kind())
            }
            Device::Cpu(be) => be.name(),
        }
    }
}

/// The backend the page opened, and why it is not WebGPU when it is not.
#[wasm_bindgen]
pub struct Engine {
    pub(crate) dev: Device,
    fallback: Option<String>,
}

/// Opens the browser's WebGPU adapter and builds every compute pipeline (the browser compiles
/// the WGSL itself); without WebGPU, or when `gpu` is false, the CPU backend, with the reason
/// in [`Engine::fallback_reason`]. Never fails: the CPU backend is always there.
#[wasm_bindgen(js_name = openEngine)]
pub async fn open_engine(gpu: bool) -> Engine {
    if !gpu {
        return Engine {
            dev: Device::cpu(),
            fallback: Some("the CPU backend was asked for".into()),
        };
    }
    if !has_webgpu() {
        return Engine {
            dev: Device::cpu(),
            fallback: Some(
                "this browser has no WebGPU (navigator.gpu is missing): it may be too old, or \
                 WebGPU may be turned off; fergpu runs on the CPU instead"
                    .into(),
            ),
        };
    }
    match GpuBackend::open_browser(BuildOptions::default()).await {
        Ok(be) => Engine {
            dev: Device::Gpu(Box::leak(Box::new(be))),
            fallback: None,
        },
        Err(e) => Engine {
            dev: Device::cpu(),
            fallback: Some(format!(
                "WebGPU could not be used ({e}); fergpu runs on the CPU"
            )),
        },
    }
}

/// Whether `navigator.gpu` exists.
fn has_webgpu() -> bool {
    let Some(window) = web_sys::window() else {
        return false;
    };
    let gpu = js_sys::Reflect::get(&window.navigator(), &"gpu".into());
    gpu.is_ok_and(|g| !g.is_undefined() && !g.is_null())
}

/// One message of the shader report, for the page and the tests.
#[derive(Serialize)]
struct Message {
    what: String,
    kind: &'static str,
    text: String,
}

/// What compiling every shader on the device gave.
#[derive(Serialize)]
struct ShaderReport {
    modules: usize,
    pipelines: usize,
    messages: Vec<Message>,
}

#[wasm_bindgen]
impl Engine {
    /// `"webgpu"` or `"cpu"`.
    pub fn backend(&self) -> String {
        match self.dev {
            Device::Gpu(_) => "webgpu".into(),
            Device::Cpu(_) => "cpu".into(),
        }
    }

    /// The device's name: the adapter's, or the CPU backend's.
    #[wasm_bindgen(js_name = deviceName)]
    pub fn device_name(&self) -> String {
        self.dev.name()
    }

    /// Why the page is not on WebGPU (`undefined` when it is).
    #[wasm_bindgen(js_name = fallbackReason)]
    pub fn fallback_reason(&self) -> Option<String> {
        self.fallback.clone()
    }

    /// Compiles every shader module and builds every entry point's pipeline again, each in
    /// error scopes, with the browser's compiler; resolves to JSON `{modules, pipelines,
    /// messages: [{what, kind, text}]}` (no messages: all compiled clean). On the CPU backend
    /// it rejects: there is nothing to compile.
    #[wasm_bindgen(js_name = shaderReport)]
    pub fn shader_report(&self) -> js_sys::Promise {
        let dev = self.dev;
        future_to_promise(async move {
            let Device::Gpu(be) = dev else {
                return Err(crate::js_error("the shader report needs WebGPU"));
            };
            let (modules, pipelines, messages) = be.shader_report().await;
            let report = ShaderReport {
                modules,
                pipelines,
                messages: messages
                    .into_iter()
                    .map(|m| Message {
                        what: m.what,
                        kind: m.kind,
                        text: m.text,
                    })
                    .collect(),
            };
            Ok(serde_json::to_string(&report)
                .expect("report serializes")
                .into())
        })
    }
}
