//! Choosing the backend a command runs on, from `--adapter` and `--gpu-backend`.
//!
//! Work that must run on "whichever backend" is a [`Job`]: one generic method, called once
//! with the chosen backend. That keeps every command generic over [`Backend`] without trait
//! objects.

use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::error::Result;

/// Work generic over the backend.
pub trait Job {
    /// What the work returns.
    type Output;
    /// Runs the work on `be`; `device` is the one-line description of what was chosen.
    fn run<B: Backend>(self, be: &B, device: &str) -> Result<Self::Output>;
}

/// What the user asked for on the command line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceChoice {
    /// `auto|discrete|integrated|software|cpu|<index>|<name substring>`.
    pub adapter: String,
    /// `vulkan|metal|dx12|gl`, or none for every API wgpu supports here.
    pub gpu_backend: Option<String>,
    /// CPU threads for the CPU backend (0: all cores).
    pub threads: usize,
}

impl Default for DeviceChoice {
    fn default() -> Self {
        DeviceChoice {
            adapter: "auto".into(),
            gpu_backend: None,
            threads: 0,
        }
    }
}

/// Runs `job` on the backend `choice` selects.
pub fn run_on<J: Job>(choice: &DeviceChoice, job: J) -> Result<J::Output> {
    let cpu = CpuBackend::new(choice.threads);
    let name = cpu.name();
    job.run(&cpu, &name)
}
