//! Every WGSL shader parses and validates with naga; every registry entry point exists with
//! the bindings the host builds its layouts from and a workgroup size the host can reflect;
//! every Rust uniform struct has the layout of the WGSL struct it mirrors; and one name leads
//! from each `Backend` method to its entry point, its CPU function and its parity test. No
//! GPU needed.

use fergpu::backend::gpu::kernels::{self, shader_source, Slot, KERNELS, SHADERS};
use fergpu::backend::gpu::uniforms::{UniformLayout, UNIFORMS};
use naga::proc::Layouter;
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, Scalar, ScalarKind, StorageAccess, TypeInner};

/// Parses and validates one shader, panicking with naga's message on failure.
fn validated(name: &str, source: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::default())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    (module, info)
}

#[test]
fn every_shader_parses_and_validates() {
    for s in SHADERS {
        validated(s.name, s.source);
    }
    let expected = [
        "conv2d.wgsl",
        "maxpool.wgsl",
        "dense.wgsl",
        "activation.wgsl",
        "softmax_xent.wgsl",
        "optimizer.wgsl",
        "data.wgsl",
        "batchnorm.wgsl",
        "dropout.wgsl",
        "globalavgpool.wgsl",
        "conv2d_tiled.wgsl",
        "dense_tiled.wgsl",
        "accumulate.wgsl",
    ];
    for name in expected {
        assert!(SHADERS.iter().any(|s| s.name == name), "{name} missing");
    }
}

#[test]
fn every_shader_opens_with_a_header_comment() {
    for s in SHADERS {
        let header: Vec<&str> = s
            .source
            .lines()
            .take_while(|l| l.starts_with("//"))
            .collect();
        let text = header.join("\n");
        assert!(header.len() >= 8, "{}: header too short", s.name);
        for word in ["Layout", "Bindings", "Dispatch"] {
            assert!(text.contains(word), "{}: header lacks {word}", s.name);
        }
    }
}

/// The slot a global variable of the shader needs in the bind group layout.
fn slot_of(space: AddressSpace) -> Option<Slot> {
    match space {
        AddressSpace::Uniform => Some(Slot::Uniform),
        AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => {
            Some(Slot::ReadWrite)
        }
        AddressSpace::Storage { .. } => Some(Slot::Read),
        _ => None,
    }
}

#[test]
fn every_entry_point_matches_its_registry_layout() {
    for k in KERNELS {
        let source = shader_source(k.file);
        let (module, info) = validated(k.file, source);
        let (index, ep) = module
            .entry_points
            .iter()
            .enumerate()
            .find(|(_, e)| e.name == k.entry)
            .unwrap_or_else(|| panic!("{}: no entry point {}", k.file, k.entry));
        assert_eq!(ep.stage, naga::ShaderStage::Compute, "{}", k.entry);
        let ep_info = info.get_entry_point(index);
        for (handle, var) in module.global_variables.iter() {
            let used = !ep_info[handle].is_empty();
            let (Some(binding), Some(slot)) = (&var.binding, slot_of(var.space)) else {
                continue;
            };
            assert_eq!(binding.group, 0, "{}: only group 0 is used", k.entry);
            let listed = k.bindings.iter().find(|(b, _)| *b == binding.binding);
            if used {
                let (_, listed_slot) = listed.unwrap_or_else(|| {
                    panic!(
                        "{}: binding {} used but not in the layout",
                        k.entry, binding.binding
                    )
                });
                assert_eq!(
                    *listed_slot, slot,
                    "{}: binding {}",
                    k.entry, binding.binding
                );
            }
        }
        // Every listed binding is a global the entry point really uses (else wgpu would
        // accept a layout that silently binds nothing).
        for &(b, _) in k.bindings {
            let used = module.global_variables.iter().any(|(h, v)| {
                v.binding.as_ref().is_some_and(|rb| rb.binding == b) && !ep_info[h].is_empty()
            });
            assert!(
                used,
                "{}: layout binding {b} is unused by the shader",
                k.entry
            );
        }
    }
}

#[test]
fn each_backend_method_names_its_entry_point_cpu_function_and_parity_test() {
    let trait_methods = [
        "gather_batch",
        "conv2d_forward",
        "conv2d_backward_input",
        "conv2d_backward_weight",
        "maxpool_forward",
        "maxpool_backward",
        "dense_forward",
        "dense_backward_input",
        "dense_backward_weight",
        "activation_forward",
        "activation_backward",
        "softmax_cross_entropy_forward",
        "softmax_cross_entropy_backward",
        "confusion_accumulate",
        "optimizer_step",
        "gather_batch_warped",
        "batchnorm_forward_train",
        "batchnorm_forward_eval",
        "batchnorm_backward",
        "dropout_forward",
        "dropout_backward",
        "globalavgpool_forward",
        "globalavgpool_backward",
        "scale_add",
    ];
    let parity =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gpu_parity.rs"))
            .expect("tests/gpu_parity.rs");
    for m in trait_methods {
        let k = KERNELS
            .iter()
            .find(|k| k.entry == m)
            .unwrap_or_else(|| panic!("no entry point {m}"));
        // The CPU twin lives in the module named after the shader file, under the same name.
        let module = k.file.trim_end_matches(".wgsl");
        let path = format!("{}/src/backend/cpu/{module}.rs", env!("CARGO_MANIFEST_DIR"));
        let cpu = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            cpu.contains(&format!("pub fn {m}(")),
            "{path} has no fn {m}"
        );
        let test = format!("fn {m}_matches_the_reference");
        assert!(parity.contains(&test), "tests/gpu_parity.rs has no {test}…");
    }
}

#[test]
fn workgroup_sizes_are_declared_once_as_named_constants() {
    for k in KERNELS {
        if k.kernel.is_tiled() {
            // The tiles set it: `override WG = (BM / TM) * (BN / TN)`, 1-D.
            let module = kernels::parse(k.file);
            let ep = module
                .entry_points
                .iter()
                .find(|e| e.name == k.entry)
                .unwrap();
            let overrides = ep.workgroup_size_overrides.expect("an override size");
            assert!(overrides[0].is_some() && overrides[1].is_none() && overrides[2].is_none());
            assert_eq!(ep.workgroup_size[1..], [1, 1], "{}", k.entry);
            continue;
        }
        // The host reflects a 1-D size (this panics otherwise).
        let wg = kernels::workgroup_size(&kernels::parse(k.file), k.entry);
        assert!(wg.is_power_of_two(), "{}: workgroup size {wg}", k.entry);
    }
    // The attribute and the index arithmetic name a `const`, never repeat a number.
    for s in SHADERS {
        for (n, line) in s.source.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for written in ["@workgroup_size(", "nwg.x * "] {
                if let Some(at) = code.find(written) {
                    let next = code[at + written.len()..].chars().next();
                    assert!(
                        next.is_some_and(|c| c.is_ascii_uppercase()),
                        "{}:{}: `{written}` takes a named const: {line}",
                        s.name,
                        n + 1
                    );
                }
            }
        }
    }
}

/// `"u32"` or `"f32"` for a 4-byte scalar type, as the Rust mirrors spell their fields.
fn scalar_name(inner: &TypeInner) -> Option<&'static str> {
    match *inner {
        TypeInner::Scalar(Scalar {
            kind: ScalarKind::Uint,
            width: 4,
        }) => Some("u32"),
        TypeInner::Scalar(Scalar {
            kind: ScalarKind::Float,
            width: 4,
        }) => Some("f32"),
        _ => None,
    }
}

/// Compares a Rust uniform's layout with the WGSL struct of the same name in `source`:
/// size, and each member's name, offset and scalar type, in order. Also requires that the
/// struct is what the shader's uniform binding holds.
fn compare_layout(u: &UniformLayout, source: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let mut layouter = Layouter::default();
    layouter
        .update(module.to_ctx())
        .map_err(|e| format!("layout: {e}"))?;
    let (ty, members, span) = module
        .types
        .iter()
        .find_map(|(h, t)| match &t.inner {
            TypeInner::Struct { members, span } if t.name.as_deref() == Some(u.name) => {
                Some((h, members, *span))
            }
            _ => None,
        })
        .ok_or(format!("no WGSL struct {}", u.name))?;
    let bound = module
        .global_variables
        .iter()
        .any(|(_, v)| v.space == AddressSpace::Uniform && v.ty == ty);
    if !bound {
        return Err(format!("{} is not the shader's uniform", u.name));
    }
    if layouter[ty].size != span || span as usize != u.size {
        return Err(format!(
            "{}: WGSL size {span} bytes, Rust size {} bytes",
            u.name, u.size
        ));
    }
    let wgsl: Vec<(String, usize, &str)> = members
        .iter()
        .map(|m| {
            let name = m.name.clone().unwrap_or_default();
            let scalar = scalar_name(&module.types[m.ty].inner).unwrap_or("not a u32/f32");
            (name, m.offset as usize, scalar)
        })
        .collect();
    let rust: Vec<(String, usize, &str)> = u
        .fields
        .iter()
        .map(|&(name, offset, ty)| (name.to_string(), offset, ty))
        .collect();
    if wgsl != rust {
        return Err(format!(
            "{}: fields differ\n  WGSL: {wgsl:?}\n  Rust: {rust:?}",
            u.name
        ));
    }
    Ok(())
}

#[test]
fn every_rust_uniform_has_the_layout_of_its_wgsl_struct() {
    for u in UNIFORMS {
        for file in u.files {
            compare_layout(u, shader_source(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}

#[test]
fn every_uniform_binding_has_a_rust_mirror() {
    for s in SHADERS {
        let module = naga::front::wgsl::parse_str(s.source).expect("validated above");
        for (_, v) in module.global_variables.iter() {
            if v.space != AddressSpace::Uniform {
                continue;
            }
            let name = module.types[v.ty].name.as_deref().unwrap_or("?");
            assert!(
                UNIFORMS
                    .iter()
                    .any(|u| u.name == name && u.files.contains(&s.name)),
                "{}: uniform struct {name} has no Rust mirror in gpu/uniforms.rs",
                s.name
            );
        }
    }
}

/// Asserts `r` is an error whose message contains `why`.
fn assert_fails(r: Result<(), String>, why: &str) {
    match r {
        Err(e) => assert!(e.contains(why), "expected `{why}`, got: {e}"),
        Ok(()) => panic!("the layout check passed; expected `{why}`"),
    }
}

#[test]
fn the_layout_check_fails_when_a_field_is_added_on_one_side_only() {
    // Pool: its last field is padding the shader never reads, so the edits below still parse.
    let pool = UNIFORMS.iter().find(|u| u.name == "Pool").expect("Pool");
    let source = shader_source(pool.files[0]);
    compare_layout(pool, source).expect("the real pair matches");

    // A field only in WGSL (where the padding was: the size stays 32 bytes).
    let wgsl_only = source.replacen("    _pad: u32,\n", "    extra: u32,\n", 1);
    assert_ne!(wgsl_only, source);
    assert_fails(compare_layout(pool, &wgsl_only), "fields differ");
    // A field only in WGSL, growing the struct.
    let grown = source.replacen("    _pad: u32,\n", "    _pad: u32,\n    extra: u32,\n", 1);
    assert_fails(compare_layout(pool, &grown), "size");

    // A field only in Rust.
    let mut fields = pool.fields.to_vec();
    fields.push(("extra", pool.size, "u32"));
    let rust_only = UniformLayout {
        fields: fields.leak(),
        size: pool.size + 4,
        ..*pool
    };
    assert_fails(compare_layout(&rust_only, source), "size");
    // An f32 where the shader has a u32.
    let mut fields = pool.fields.to_vec();
    fields[0].2 = "f32";
    let retyped = UniformLayout {
        fields: fields.leak(),
        ..*pool
    };
    assert_fails(compare_layout(&retyped, source), "fields differ");
}

#[test]
fn every_tile_configuration_specializes_and_validates_for_every_tiled_kernel() {
    use fergpu::backend::gpu::tiles::TILE_CONFIGS;
    for k in KERNELS.iter().filter(|k| k.kernel.is_tiled()) {
        let source = shader_source(k.file);
        let (module, info) = validated(k.file, source);
        for cfg in TILE_CONFIGS {
            let constants: naga::back::PipelineConstants = cfg
                .constants()
                .iter()
                .map(|&(name, v)| (name.to_string(), v))
                .collect();
            let (m, _) = naga::back::pipeline_constants::process_overrides(
                &module,
                &info,
                Some((naga::ShaderStage::Compute, k.entry)),
                &constants,
            )
            .unwrap_or_else(|e| panic!("{} with {cfg}: {e}", k.entry));
            let ep = m.entry_points.iter().find(|e| e.name == k.entry).unwrap();
            assert_eq!(
                ep.workgroup_size,
                [cfg.workgroup(), 1, 1],
                "{} with {cfg}",
                k.entry
            );
        }
    }
}
