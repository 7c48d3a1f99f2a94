//! Every shader through the compilers of the other platforms wgpu reaches, without their
//! hardware: naga's Metal (MSL) and DX12 (HLSL) writers produce every module without error,
//! and its SPIR-V (the Vulkan path) passes the Khronos validator `spirv-val` (Debian's
//! `spirv-tools`). The tiled kernels are written once per tile configuration, their `override`
//! constants resolved as pipeline creation resolves them. The browser's own compiler
//! (Chromium's Tint) is checked by `web/tests/`.
//!
//! Without `spirv-val` the SPIR-V part prints a note and passes, unless `CI` or
//! `FERGPU_REQUIRE_GPU=1` is set, where it fails.

mod common;

use fergpu::backend::gpu::kernels::{shader_files, shader_source, KERNELS};
use fergpu::backend::gpu::tiles::Variant;
use naga::back::{hlsl, msl, spv, PipelineConstants};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use std::borrow::Cow;
use std::process::Command;

/// Each shader file with the override values it is built with: none for fixed kernels, each
/// tile configuration's for the tiled ones.
fn builds() -> Vec<(&'static str, String, PipelineConstants)> {
    let tiled: Vec<&str> = KERNELS
        .iter()
        .filter(|k| k.kernel.is_tiled())
        .map(|k| k.file)
        .collect();
    let mut out = Vec::new();
    for file in shader_files() {
        if !tiled.contains(&file) {
            out.push((file, String::new(), PipelineConstants::default()));
            continue;
        }
        for v in Variant::all() {
            let Variant::Tiled(cfg) = v else { continue };
            let constants = cfg
                .constants()
                .iter()
                .map(|&(k, v)| (k.to_string(), v))
                .collect();
            out.push((file, format!(" {cfg}"), constants));
        }
    }
    out
}

/// The module of `file`, validated, with `constants` substituted for its overrides.
fn resolved(file: &str, constants: &PipelineConstants) -> (naga::Module, naga::valid::ModuleInfo) {
    let source = shader_source(file);
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(source)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::default())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(source)));
    let (m, i) = naga::back::pipeline_constants::process_overrides(&module, &info, None, constants)
        .unwrap_or_else(|e| panic!("{file}: overrides {constants:?}: {e}"));
    (Cow::into_owned(m), Cow::into_owned(i))
}

#[test]
fn every_shader_compiles_to_metal_shading_language() {
    for (file, cfg, constants) in builds() {
        let (module, info) = resolved(file, &constants);
        let (text, translation) = msl::write_string(
            &module,
            &info,
            &msl::Options::default(),
            &msl::PipelineOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{file}{cfg}: MSL: {e}"));
        for (ep, name) in module
            .entry_points
            .iter()
            .zip(&translation.entry_point_names)
        {
            assert!(name.is_ok(), "{file}{cfg}: MSL entry {}: {name:?}", ep.name);
        }
        assert!(
            text.contains("kernel void"),
            "{file}{cfg}: no kernel in the MSL"
        );
    }
}

#[test]
fn every_shader_compiles_to_hlsl() {
    for (file, cfg, constants) in builds() {
        let (module, info) = resolved(file, &constants);
        let mut text = String::new();
        let options = hlsl::Options::default();
        let pipeline = hlsl::PipelineOptions { entry_point: None };
        let reflection = hlsl::Writer::new(&mut text, &options, &pipeline)
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{file}{cfg}: HLSL: {e}"));
        assert_eq!(
            reflection.entry_point_names.len(),
            module.entry_points.len(),
            "{file}{cfg}"
        );
        for (ep, name) in module
            .entry_points
            .iter()
            .zip(&reflection.entry_point_names)
        {
            assert!(
                name.is_ok(),
                "{file}{cfg}: HLSL entry {}: {name:?}",
                ep.name
            );
            assert!(
                text.contains("[numthreads("),
                "{file}{cfg}: no compute entry in the HLSL"
            );
        }
    }
}

#[test]
fn every_shaders_spirv_passes_spirv_val() {
    if Command::new("spirv-val").arg("--version").output().is_err() {
        assert!(
            !common::gpu_required(),
            "spirv-val is required under CI (apt-get install spirv-tools)"
        );
        eprintln!(
            "note: skipping the SPIR-V validation, no spirv-val (apt-get install spirv-tools)"
        );
        return;
    }
    let dir = common::scratch("spirv");
    for (i, (file, cfg, constants)) in builds().into_iter().enumerate() {
        let (module, info) = resolved(file, &constants);
        let words = spv::write_vec(&module, &info, &spv::Options::default(), None)
            .unwrap_or_else(|e| panic!("{file}{cfg}: SPIR-V: {e}"));
        let path = dir.join(format!("{i}-{file}.spv"));
        std::fs::write(&path, bytemuck::cast_slice::<u32, u8>(&words)).unwrap();
        let out = Command::new("spirv-val")
            .args(["--target-env", "vulkan1.0"])
            .arg(&path)
            .output()
            .expect("spirv-val runs");
        assert!(
            out.status.success(),
            "{file}{cfg}: spirv-val: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
