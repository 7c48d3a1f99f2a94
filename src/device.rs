//! Choosing the backend a command runs on, from `--adapter` and `--gpu-backend`.
//!
//! Work that must run on "whichever backend" is a [`Job`]: one generic method, called once
//! with the chosen backend. That keeps every command generic over [`Backend`] without trait
//! objects.

use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::adapter::{AdapterRequest, GpuApi};
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

/// Runs `job` on the backend `choice` selects: `cpu` is the CPU reference; `auto` takes the
/// best GPU adapter (discrete, integrated, then software) and falls back to the CPU reference
/// when none can be opened, saying which in one line on stderr; anything else must match an
/// adapter or is [`crate::Error::NoAdapter`].
pub fn run_on<J: Job>(choice: &DeviceChoice, job: J) -> Result<J::Output> {
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
        AdapterRequest::Auto => match GpuBackend::with_options(&req, api, &opts) {
            Ok(gpu) => {
                eprintln!("fergpu: using GPU adapter {}", gpu.adapter());
                if gpu.adapter().kind() == "software" {
                    // Measured on lavapipe: the seed CNN trains ~100× slower than on the
                    // CPU reference (docs/RESULTS.md).
                    eprintln!(
                        "fergpu: no hardware GPU found; this software driver runs shaders on \
                         the CPU and is usually much slower than `--adapter cpu`"
                    );
                }
                run_gpu(&gpu, job)
            }
            Err(e) => {
                let reason = e.to_string();
                let first = reason.lines().next().unwrap_or_default();
                eprintln!("fergpu: no usable GPU adapter ({first}); using the CPU reference");
                run_cpu(choice, job)
            }
        },
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
    let cpu = CpuBackend::new(choice.threads);
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
