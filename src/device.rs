//! Choosing the backend a command runs on, from `--adapter` and `--gpu-backend`.
//!
//! Work that must run on "whichever backend" is a [`Job`]: one generic method, called once
//! with the chosen backend. That keeps every command generic over [`Backend`] without trait
//! objects.

use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::adapter::{self, AdapterRequest, AdapterSummary, GpuApi};
use crate::backend::gpu::autotune::Autotune;
use crate::backend::gpu::kernels::BuildOptions;
use crate::backend::gpu::{GpuBackend, GpuOptions};
use crate::backend::Backend;
use crate::error::{Error, Result};

/// Work generic over the backend.
pub trait Job {
    /// What the work returns.
    type Output;
    /// Runs the work on `be`; `device` is the one-line description of what was chosen.
    fn run<B: Backend>(self, be: &B, device: &str) -> Result<Self::Output>;
}

/// Which device runs the work (`--adapter`, `--gpu-backend`, `--threads`, `--autotune`); the
/// `device` section of [`crate::settings::Settings`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Device")]
pub struct DeviceChoice {
    /// auto | discrete | integrated | software | cpu | <index> | <name substring>.
    #[arg(long, default_value = "auto")]
    pub adapter: String,
    /// Restrict wgpu to one API: vulkan | metal | dx12 | gl.
    #[arg(long)]
    pub gpu_backend: Option<String>,
    /// Threads of the CPU backend (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Choose each convolution and dense kernel by timing the candidates, once per adapter
    /// and layer shape, kept in the user's cache folder: auto (on for hardware GPUs, off on
    /// software ones) | on | off | refresh (time again).
    #[arg(long, value_enum, default_value = "auto")]
    pub autotune: Autotune,
}

crate::flags::defaults_from_flags!(DeviceChoice);

/// The most CPU threads a run may ask for, as a multiple of the machine's cores: more only
/// adds switching, and a mistyped `--threads 100000` would try to start that many.
pub const MAX_THREADS_PER_CORE: usize = 4;

/// The most threads `--threads` accepts on this machine.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores * MAX_THREADS_PER_CORE
}

impl DeviceChoice {
    /// Checks `--threads` against this machine and that `--gpu-backend` names an API; the
    /// message names the flag and what is allowed. [`crate::settings::Settings::validate`]
    /// and [`run_on`] call it, so every command's device flags are checked before any work.
    pub fn validate(&self) -> Result<()> {
        let most = max_threads();
        if self.threads > most {
            return Err(Error::Config(format!(
                "--threads {}: threads must be at most {most} ({MAX_THREADS_PER_CORE} per core \
                 of this machine; 0: one per core)",
                self.threads
            )));
        }
        if let Some(api) = &self.gpu_backend {
            GpuApi::parse(api).map_err(|e| Error::Config(format!("--gpu-backend {api}: {e}")))?;
        }
        Ok(())
    }
}

/// Keeps graphics drivers from printing what reads as fergpu's own error: without
/// `XDG_RUNTIME_DIR` (ssh sessions, containers, services), looking for GPU adapters makes
/// libwayland, which Mesa's Vulkan drivers load, print `error: XDG_RUNTIME_DIR is invalid or
/// not set in the environment.`. No Wayland display can be reached then anyway, so
/// `WAYLAND_DISPLAY` is pointed at an absolute path that does not exist: the connection
/// fails as before, silently. Nothing is changed when a display could be reached
/// (`XDG_RUNTIME_DIR` set, or `WAYLAND_DISPLAY` or `WAYLAND_SOCKET` already absolute or
/// given). Call it first in `main`, before any thread starts.
pub fn quiet_display_probes() {
    let runtime_ok =
        std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_absolute());
    let display_absolute =
        std::env::var_os("WAYLAND_DISPLAY").is_some_and(|d| std::path::Path::new(&d).is_absolute());
    if runtime_ok || display_absolute || std::env::var_os("WAYLAND_SOCKET").is_some() {
        return;
    }
    std::env::set_var("WAYLAND_DISPLAY", "/nonexistent/fergpu-no-wayland-display");
}

/// What `--adapter auto` runs on, given the adapters found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AutoPick<'a> {
    /// A hardware GPU adapter (discrete, integrated, virtual or other).
    Gpu(&'a AdapterSummary),
    /// The CPU reference: no adapter was found, or the best one is a software driver
    /// (lavapipe, WARP, SwiftShader), which runs the shaders on the CPU far slower than the
    /// CPU backend (docs/RESULTS.md: 212 s against 43 s an epoch); `passed_over` names it.
    Cpu {
        /// The software adapter auto did not take.
        passed_over: Option<&'a AdapterSummary>,
    },
}

/// The choice of `--adapter auto` among `found`.
fn auto_pick(found: &[AdapterSummary]) -> AutoPick<'_> {
    match adapter::choose(&AdapterRequest::Auto, found) {
        Ok(i) if found[i].device_type == wgpu::DeviceType::Cpu => AutoPick::Cpu {
            passed_over: Some(&found[i]),
        },
        Ok(i) => AutoPick::Gpu(&found[i]),
        Err(_) => AutoPick::Cpu { passed_over: None },
    }
}

/// Runs `job` on the backend `choice` selects, after checking `choice`
/// ([`DeviceChoice::validate`]): `cpu` is the CPU reference; `auto` takes the best hardware
/// GPU adapter (discrete, integrated, then virtual or other) and otherwise the CPU
/// reference, which is faster than a software adapter (one it passes over is named; ask
/// for it with `software`), saying which in one line on stderr; anything else must match an
/// adapter or is [`crate::Error::NoAdapter`].
pub fn run_on<J: Job>(choice: &DeviceChoice, job: J) -> Result<J::Output> {
    choice.validate()?;
    let req = AdapterRequest::parse(&choice.adapter);
    let api = choice
        .gpu_backend
        .as_deref()
        .map(GpuApi::parse)
        .transpose()?;
    let opts = GpuOptions {
        autotune: choice.autotune,
        ..GpuOptions::default()
    };
    match req {
        AdapterRequest::Cpu => run_cpu(choice, job),
        AdapterRequest::Auto => {
            let found = adapter::list_adapters(api);
            let opened = match auto_pick(&found) {
                AutoPick::Gpu(s) => {
                    GpuBackend::with_options(&AdapterRequest::Index(s.index), api, &opts)
                }
                AutoPick::Cpu {
                    passed_over: Some(s),
                } => {
                    eprintln!(
                        "fergpu: passing over the software adapter {s}: it runs the shaders on \
                         the CPU, far slower than fergpu's CPU backend (`--adapter software` \
                         uses it anyway)"
                    );
                    return run_cpu(choice, job);
                }
                AutoPick::Cpu { passed_over: None } => Err(Error::NoAdapter {
                    wanted: "auto".into(),
                    found: "no hardware GPU adapter".into(),
                }),
            };
            match opened {
                Ok(gpu) => {
                    eprintln!("fergpu: using GPU adapter {}", gpu.adapter());
                    run_gpu(&gpu, job)
                }
                Err(e) => {
                    let reason = e.to_string();
                    let first = reason.lines().next().unwrap_or_default();
                    eprintln!("fergpu: no usable GPU adapter ({first}); using the CPU reference");
                    run_cpu(choice, job)
                }
            }
        }
        _ => {
            let gpu = GpuBackend::with_options(&req, api, &opts)?;
            eprintln!("fergpu: using GPU adapter {}", gpu.adapter());
            run_gpu(&gpu, job)
        }
    }
}

/// Opens the GPU adapter `choice` selects (`auto`: the best one) with its autotune mode and
/// shaders built as `build` says, for work that only a GPU can do (`fergpu profile`);
/// `--adapter cpu` is an error that says so.
pub fn open_gpu(choice: &DeviceChoice, what: &str, build: BuildOptions) -> Result<GpuBackend> {
    let req = AdapterRequest::parse(&choice.adapter);
    if req == AdapterRequest::Cpu {
        return Err(Error::Config(format!(
            "--adapter cpu: {what} needs a GPU adapter (`fergpu adapters` lists them; \
             `--adapter software` is Mesa's lavapipe where installed)"
        )));
    }
    let api = choice
        .gpu_backend
        .as_deref()
        .map(GpuApi::parse)
        .transpose()?;
    let opts = GpuOptions {
        autotune: choice.autotune,
        build,
        ..GpuOptions::default()
    };
    let gpu = GpuBackend::with_options(&req, api, &opts)?;
    eprintln!("fergpu: using GPU adapter {}", gpu.adapter());
    Ok(gpu)
}

fn run_cpu<J: Job>(choice: &DeviceChoice, job: J) -> Result<J::Output> {
    let cpu = CpuBackend::try_new(choice.threads)?;
    let name = cpu.name();
    job.run(&cpu, &name)
}

/// Runs `job` on `gpu`; an error the device raised wins over the job's own result (a job
/// that saw NaNs from a lost device should report the device, not a divergence).
fn run_gpu<J: Job>(gpu: &GpuBackend, job: J) -> Result<J::Output> {
    let name = gpu.name();
    let out = job.run(gpu, &name);
    gpu.check()?;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(index: usize, name: &str, t: wgpu::DeviceType) -> AdapterSummary {
        AdapterSummary {
            index,
            name: name.into(),
            device_type: t,
            backend: wgpu::Backend::Vulkan,
            driver: String::new(),
        }
    }

    #[test]
    fn auto_prefers_the_cpu_backend_to_a_software_adapter_and_names_it() {
        use wgpu::DeviceType as T;
        let lavapipe = summary(0, "llvmpipe (LLVM 15)", T::Cpu);
        let igpu = summary(1, "Intel UHD 630", T::IntegratedGpu);
        assert_eq!(
            auto_pick(std::slice::from_ref(&lavapipe)),
            AutoPick::Cpu {
                passed_over: Some(&lavapipe)
            }
        );
        let both = [lavapipe.clone(), igpu.clone()];
        assert_eq!(auto_pick(&both), AutoPick::Gpu(&both[1]));
        assert_eq!(auto_pick(&[]), AutoPick::Cpu { passed_over: None });
        // Asked for by name, the software adapter is still chosen.
        assert_eq!(
            adapter::choose(&AdapterRequest::Software, &both).unwrap(),
            0
        );
    }

    #[test]
    fn device_flags_are_checked_against_this_machine() {
        let mut c = DeviceChoice::default();
        c.validate().unwrap();
        c.threads = max_threads();
        c.validate().unwrap();
        c.threads = 100_000;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("--threads 100000") && e.contains(&format!("at most {}", max_threads())),
            "{e}"
        );
        let c = DeviceChoice {
            gpu_backend: Some("cuda".into()),
            ..DeviceChoice::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--gpu-backend cuda"));
    }
}
