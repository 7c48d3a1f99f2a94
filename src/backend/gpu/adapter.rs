//! Choosing an adapter: what the user asked for, what exists, and the one-line summaries the
//! CLI prints (`fergpu adapters`, "using adapter …").

use crate::{Error, Result};
use std::fmt;

/// Which adapter the user wants (`--adapter`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdapterRequest {
    /// The best one found: discrete, then integrated, then virtual/other, then software.
    Auto,
    /// A discrete GPU.
    Discrete,
    /// An integrated GPU.
    Integrated,
    /// A software rasterizer reported as a CPU device (llvmpipe/lavapipe, WARP, SwiftShader).
    Software,
    /// The CPU reference backend; not a GPU adapter (the caller builds `CpuBackend`).
    Cpu,
    /// The adapter at this position of [`list_adapters`].
    Index(usize),
    /// The first adapter whose name contains this text (case-insensitive).
    Name(String),
}

impl AdapterRequest {
    /// Parses `auto`, `discrete`, `integrated`, `software`, `cpu`, an index, or a name.
    pub fn parse(s: &str) -> AdapterRequest {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "" | "auto" => AdapterRequest::Auto,
            "discrete" => AdapterRequest::Discrete,
            "integrated" => AdapterRequest::Integrated,
            "software" => AdapterRequest::Software,
            "cpu" => AdapterRequest::Cpu,
            other => match other.parse::<usize>() {
                Ok(i) => AdapterRequest::Index(i),
                Err(_) => AdapterRequest::Name(t.to_string()),
            },
        }
    }
}

impl fmt::Display for AdapterRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdapterRequest::Auto => f.write_str("auto"),
            AdapterRequest::Discrete => f.write_str("discrete"),
            AdapterRequest::Integrated => f.write_str("integrated"),
            AdapterRequest::Software => f.write_str("software"),
            AdapterRequest::Cpu => f.write_str("cpu"),
            AdapterRequest::Index(i) => write!(f, "{i}"),
            AdapterRequest::Name(n) => f.write_str(n),
        }
    }
}

/// A graphics API to restrict adapters to (`--gpu-api`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GpuApi {
    /// Vulkan (Linux, Windows, Android).
    Vulkan,
    /// Metal (macOS, iOS).
    Metal,
    /// Direct3D 12 (Windows).
    Dx12,
    /// OpenGL / GLES (fallback).
    Gl,
}

impl GpuApi {
    /// Parses `vulkan`, `metal`, `dx12` or `gl` (case-insensitive).
    pub fn parse(s: &str) -> Result<GpuApi> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Ok(GpuApi::Vulkan),
            "metal" => Ok(GpuApi::Metal),
            "dx12" | "d3d12" => Ok(GpuApi::Dx12),
            "gl" | "gles" | "opengl" => Ok(GpuApi::Gl),
            other => Err(Error::Config(format!(
                "unknown GPU API '{other}': expected vulkan, metal, dx12 or gl"
            ))),
        }
    }

    /// The wgpu backend set of this API.
    pub(crate) fn backends(self) -> wgpu::Backends {
        match self {
            GpuApi::Vulkan => wgpu::Backends::VULKAN,
            GpuApi::Metal => wgpu::Backends::METAL,
            GpuApi::Dx12 => wgpu::Backends::DX12,
            GpuApi::Gl => wgpu::Backends::GL,
        }
    }
}

/// One adapter as listed to the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Position in [`list_adapters`] (what `--adapter N` selects).
    pub index: usize,
    /// The adapter's name ("NVIDIA GeForce RTX 4090", "llvmpipe (LLVM 15.0.7, 256 bits)").
    pub name: String,
    /// Discrete, integrated, virtual, CPU (software) or other.
    pub device_type: wgpu::DeviceType,
    /// The graphics API wgpu reaches it through.
    pub backend: wgpu::Backend,
    /// Driver name and version, as far as the driver tells.
    pub driver: String,
}

impl AdapterSummary {
    fn new(index: usize, info: &wgpu::AdapterInfo) -> AdapterSummary {
        let driver = [info.driver.as_str(), info.driver_info.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        AdapterSummary {
            index,
            name: info.name.clone(),
            device_type: info.device_type,
            backend: info.backend,
            driver,
        }
    }

    /// "discrete", "integrated", "virtual", "software" or "other".
    pub fn kind(&self) -> &'static str {
        match self.device_type {
            wgpu::DeviceType::DiscreteGpu => "discrete",
            wgpu::DeviceType::IntegratedGpu => "integrated",
            wgpu::DeviceType::VirtualGpu => "virtual",
            wgpu::DeviceType::Cpu => "software",
            wgpu::DeviceType::Other => "other",
        }
    }
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} ({}, {:?}",
            self.index,
            self.name,
            self.kind(),
            self.backend
        )?;
        if !self.driver.is_empty() {
            write!(f, ", driver {}", self.driver)?;
        }
        f.write_str(")")
    }
}

/// A wgpu instance over `backends`.
fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter reachable through `api`, in a fixed order (the indices of
/// [`list_adapters`]). Without an API, the native ones (Vulkan, Metal, DX12) are asked
/// first and GL only when none of them has an adapter: probing GL opens a display
/// connection, which prints warnings on headless machines and is never the better choice.
pub(crate) fn enumerate(api: Option<GpuApi>) -> Vec<wgpu::Adapter> {
    let ask = |b| super::context::block_on(instance(b).enumerate_adapters(b));
    match api {
        Some(api) => ask(api.backends()),
        None => {
            let native = ask(wgpu::Backends::PRIMARY);
            if native.is_empty() {
                ask(wgpu::Backends::GL)
            } else {
                native
            }
        }
    }
}

/// The browser's WebGPU adapter (`navigator.gpu.requestAdapter`, high-performance
/// preference), or `None` when the browser gives none.
pub(crate) async fn browser_adapter() -> Option<wgpu::Adapter> {
    let options = wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    };
    instance(wgpu::Backends::BROWSER_WEBGPU)
        .request_adapter(&options)
        .await
        .ok()
}

/// Every adapter wgpu finds through `api` (or, without one, through the native APIs, else
/// GL), in index order. This is what `fergpu adapters` prints (see [`format_adapters`]).
pub fn list_adapters(api: Option<GpuApi>) -> Vec<AdapterSummary> {
    list_adapters_of(&enumerate(api))
}

/// The `fergpu adapters` listing: one line per adapter (`[index] name (kind, API, driver)`),
/// or a line saying none was found and what to do.
pub fn format_adapters(list: &[AdapterSummary]) -> String {
    if list.is_empty() {
        return "no GPU adapter found (no Vulkan, Metal, DX12 or GL driver answered); \
                fergpu will use the CPU reference (`--adapter cpu`)\n"
            .to_string();
    }
    list.iter().map(|s| format!("{s}\n")).collect()
}

/// The summaries of `adapters`, indexed by position.
pub(crate) fn list_adapters_of(adapters: &[wgpu::Adapter]) -> Vec<AdapterSummary> {
    adapters
        .iter()
        .enumerate()
        .map(|(i, a)| AdapterSummary::new(i, &a.get_info()))
        .collect()
}

/// Lower is better for `Auto`: device type first, then native APIs before GL.
fn auto_rank(s: &AdapterSummary) -> (u8, u8) {
    let kind = match s.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    (kind, u8::from(s.backend == wgpu::Backend::Gl))
}

/// The index (into `found`) of the adapter `req` asks for, or `NoAdapter` naming what exists.
pub(crate) fn choose(req: &AdapterRequest, found: &[AdapterSummary]) -> Result<usize> {
    let of_type = |t: wgpu::DeviceType| {
        found
            .iter()
            .filter(|s| s.device_type == t)
            .min_by_key(|s| auto_rank(s))
            .map(|s| s.index)
    };
    let pick = match req {
        AdapterRequest::Auto => found.iter().min_by_key(|s| auto_rank(s)).map(|s| s.index),
        AdapterRequest::Discrete => of_type(wgpu::DeviceType::DiscreteGpu),
        AdapterRequest::Integrated => of_type(wgpu::DeviceType::IntegratedGpu),
        AdapterRequest::Software => of_type(wgpu::DeviceType::Cpu),
        AdapterRequest::Cpu => {
            return Err(Error::Config(
                "adapter 'cpu' is the CPU reference backend, not a GPU adapter".into(),
            ))
        }
        AdapterRequest::Index(i) => found.get(*i).map(|s| s.index),
        AdapterRequest::Name(n) => {
            let n = n.to_lowercase();
            found
                .iter()
                .filter(|s| s.name.to_lowercase().contains(&n))
                .min_by_key(|s| auto_rank(s))
                .map(|s| s.index)
        }
    };
    pick.ok_or_else(|| Error::NoAdapter {
        wanted: req.to_string(),
        found: if found.is_empty() {
            "  (none: no Vulkan, Metal, DX12 or GL driver answered)".to_string()
        } else {
            found
                .iter()
                .map(|s| format!("  {s}"))
                .collect::<Vec<_>>()
                .join("\n")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(index: usize, name: &str, t: wgpu::DeviceType, b: wgpu::Backend) -> AdapterSummary {
        AdapterSummary {
            index,
            name: name.into(),
            device_type: t,
            backend: b,
            driver: String::new(),
        }
    }

    fn machine() -> Vec<AdapterSummary> {
        use wgpu::{Backend as B, DeviceType as T};
        vec![
            summary(0, "llvmpipe (LLVM 15)", T::Cpu, B::Gl),
            summary(1, "llvmpipe (LLVM 15)", T::Cpu, B::Vulkan),
            summary(2, "Intel(R) UHD 630", T::IntegratedGpu, B::Vulkan),
            summary(3, "NVIDIA RTX 4090", T::DiscreteGpu, B::Vulkan),
        ]
    }

    #[test]
    fn parse_reads_keywords_indices_and_names() {
        assert_eq!(AdapterRequest::parse(" Auto "), AdapterRequest::Auto);
        assert_eq!(AdapterRequest::parse("software"), AdapterRequest::Software);
        assert_eq!(AdapterRequest::parse("CPU"), AdapterRequest::Cpu);
        assert_eq!(AdapterRequest::parse("2"), AdapterRequest::Index(2));
        assert_eq!(
            AdapterRequest::parse("RTX 4090"),
            AdapterRequest::Name("RTX 4090".into())
        );
        assert_eq!(GpuApi::parse("Vulkan").unwrap(), GpuApi::Vulkan);
        assert!(GpuApi::parse("cuda").is_err());
    }

    #[test]
    fn auto_prefers_discrete_then_integrated_then_software() {
        let m = machine();
        assert_eq!(choose(&AdapterRequest::Auto, &m).unwrap(), 3);
        assert_eq!(choose(&AdapterRequest::Auto, &m[..3]).unwrap(), 2);
        // Software: the native API before GL.
        assert_eq!(choose(&AdapterRequest::Auto, &m[..2]).unwrap(), 1);
        assert_eq!(choose(&AdapterRequest::Integrated, &m).unwrap(), 2);
        assert_eq!(choose(&AdapterRequest::Name("llvm".into()), &m).unwrap(), 1);
        assert_eq!(choose(&AdapterRequest::Index(0), &m).unwrap(), 0);
    }

    #[test]
    fn listing_has_one_line_per_adapter() {
        let text = format_adapters(&machine());
        assert_eq!(text.lines().count(), 4);
        assert!(text
            .lines()
            .nth(3)
            .unwrap()
            .starts_with("[3] NVIDIA RTX 4090 (discrete"));
        assert!(format_adapters(&[]).contains("--adapter cpu"));
    }

    #[test]
    fn unmet_requests_name_what_was_found() {
        let m = machine();
        match choose(&AdapterRequest::Discrete, &m[..2]) {
            Err(Error::NoAdapter { wanted, found }) => {
                assert_eq!(wanted, "discrete");
                assert!(found.contains("llvmpipe"), "{found}");
            }
            other => panic!("expected NoAdapter, got {other:?}"),
        }
        assert!(matches!(
            choose(&AdapterRequest::Index(9), &m),
            Err(Error::NoAdapter { .. })
        ));
        assert!(matches!(
            choose(&AdapterRequest::Auto, &[]),
            Err(Error::NoAdapter { .. })
        ));
        assert!(matches!(
            choose(&AdapterRequest::Cpu, &m),
            Err(Error::Config(_))
        ));
    }
}
