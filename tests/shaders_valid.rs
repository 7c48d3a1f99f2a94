//! Every WGSL shader parses and validates with naga; every declared entry point exists and
//! binds, by name, exactly the buffers its declaration lists, with the declared access, and
//! has a workgroup size the host can reflect; every Rust uniform struct has the layout of the
//! WGSL struct it mirrors; and one name leads from each `Backend` method to its entry point,
//! its CPU function and its parity test. No GPU needed.

use fergpu::backend::gpu::bindings::{Access, BufferSlot};
use fergpu::backend::gpu::kernels::{
    self, files_of_uniform, resolve_bindings, shader_files, shader_source, KernelSpec, Role,
    KERNELS,
};
use fergpu::backend::gpu::uniforms::UniformLayout;
use naga::proc::Layouter;
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, Scalar, ScalarKind, TypeInner};

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
    for name in shader_files() {
        validated(name, shader_source(name));
    }
    // Every file in shaders/ is some kernel's (a file no declaration names is never built).
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    for entry in std::fs::read_dir(dir).expect("shaders/") {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".wgsl") {
            assert!(
                shader_files().contains(&name.as_str()),
                "{name} is not declared"
            );
        }
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
        assert!(shader_files().contains(&name), "{name} missing");
    }
}

#[test]
fn every_shader_opens_with_a_header_comment() {
    for name in shader_files() {
        let header: Vec<&str> = shader_source(name)
            .lines()
            .take_while(|l| l.starts_with("//"))
            .collect();
        let text = header.join("\n");
        assert!(header.len() >= 8, "{name}: header too short");
        for word in ["Layout", "Bindings", "Dispatch"] {
            assert!(text.contains(word), "{name}: header lacks {word}");
        }
    }
}

/// Checks `spec` against `source`: the declared buffers resolve by name with their access
/// ([`resolve_bindings`]), and the entry point uses exactly those variables and its uniform
/// (a declared buffer it never touches would bind nothing; a used one left out would not be
/// bound at all).
fn check_declaration(spec: &KernelSpec, source: &str) -> Result<(), String> {
    let (module, info) = validated(spec.file, source);
    let reflected = resolve_bindings(spec, &module)?;
    let (index, ep) = module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, e)| e.name == spec.entry)
        .ok_or(format!("{}: no entry point {}", spec.file, spec.entry))?;
    if ep.stage != naga::ShaderStage::Compute {
        return Err(format!("{} is not a compute entry point", spec.entry));
    }
    let ep_info = info.get_entry_point(index);
    let mut declared: Vec<u32> = reflected.buffers.clone();
    declared.push(reflected.uniform);
    for (handle, var) in module.global_variables.iter() {
        let Some(binding) = &var.binding else {
            continue;
        };
        let used = !ep_info[handle].is_empty();
        let listed = declared.contains(&binding.binding);
        let name = var.name.as_deref().unwrap_or("?");
        if used && !listed {
            return Err(format!(
                "{} uses `{name}` (binding {}), which its declaration does not bind",
                spec.entry, binding.binding
            ));
        }
        if listed && !used {
            return Err(format!(
                "{} declares `{name}` but never uses it",
                spec.entry
            ));
        }
    }
    Ok(())
}

#[test]
fn every_entry_point_binds_exactly_its_declared_buffers_by_name() {
    for k in KERNELS {
        check_declaration(k, k.source).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// `spec` with its buffer slots replaced by `buffers`.
fn redeclared(spec: &KernelSpec, buffers: Vec<BufferSlot>) -> KernelSpec {
    KernelSpec {
        buffers: buffers.leak(),
        ..*spec
    }
}

#[test]
fn a_buffer_bound_under_the_wrong_name_is_caught() {
    let bn = KERNELS
        .iter()
        .find(|k| k.entry == "batchnorm_backward")
        .expect("declared");
    check_declaration(bn, bn.source).expect("the real declaration matches");
    let slot = |name, access| BufferSlot { name, access };
    let (r, w) = (Access::Read, Access::ReadWrite);
    let with = |slots: Vec<BufferSlot>| check_declaration(&redeclared(bn, slots), bn.source);
    // A misspelt name: the shader has no such variable.
    let e = with(vec![
        slot("d_x", w),
        slot("grads", w),
        slot("dy", r),
        slot("x", r),
        slot("saved_in", r),
        slot("params", r),
    ])
    .unwrap_err();
    assert!(
        e.contains("`d_x`, which the shader does not declare"),
        "{e}"
    );
    // The output's name given to an input and back: the access gives it away.
    let e = with(vec![
        slot("dy", w),
        slot("grads", w),
        slot("dx", r),
        slot("x", r),
        slot("saved_in", r),
        slot("params", r),
    ])
    .unwrap_err();
    assert!(e.contains("`dy` is declared ReadWrite"), "{e}");
    // Another entry point's buffer: a variable of the file that this kernel never uses.
    let e = with(vec![
        slot("dx", w),
        slot("grads", w),
        slot("dy", r),
        slot("x", r),
        slot("saved", w),
        slot("params", r),
    ])
    .unwrap_err();
    assert!(
        e.contains("uses `saved_in`") || e.contains("declares `saved`"),
        "{e}"
    );
    // A used buffer left out.
    let e = with(vec![
        slot("dx", w),
        slot("grads", w),
        slot("dy", r),
        slot("x", r),
    ])
    .unwrap_err();
    assert!(e.contains("which its declaration does not bind"), "{e}");
    // Renaming the WGSL variable without the declaration is caught too.
    let renamed = bn.source.replace("saved_in", "saved_stats");
    let e = check_declaration(bn, &renamed).unwrap_err();
    assert!(
        e.contains("`saved_in`, which the shader does not declare"),
        "{e}"
    );
}

#[test]
fn kernels_with_variants_are_declared_in_pairs() {
    for k in KERNELS {
        if let Role::Register(g) | Role::Tiled(g) = k.role {
            let register = g
                .kernel(fergpu::backend::gpu::tiles::Variant::Register)
                .spec();
            assert_eq!(register.entry, g.name());
            assert_eq!(
                register.bindings, k.bindings,
                "{}: a variant binds the same buffers",
                k.entry
            );
            assert_eq!(register.uniform.name, k.uniform.name, "{}", k.entry);
        }
    }
}

#[test]
fn each_backend_method_names_its_entry_point_cpu_function_and_parity_test() {
    // The methods, from the declarations: each kernel that is a method's GPU side.
    let trait_methods: Vec<&str> = KERNELS
        .iter()
        .filter(|k| matches!(k.role, Role::Method | Role::Register(_)))
        .map(|k| k.entry)
        .collect();
    assert_eq!(trait_methods.len(), 24, "{trait_methods:?}");
    let backend =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/backend/mod.rs"))
            .expect("src/backend/mod.rs");
    let parity =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/gpu_parity.rs"))
            .expect("tests/gpu_parity.rs");
    for m in trait_methods {
        assert!(
            backend.contains(&format!("    fn {m}(")),
            "the Backend trait has no method {m}"
        );
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
    for name in shader_files() {
        for (n, line) in shader_source(name).lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for written in ["@workgroup_size(", "nwg.x * "] {
                if let Some(at) = code.find(written) {
                    let next = code[at + written.len()..].chars().next();
                    assert!(
                        next.is_some_and(|c| c.is_ascii_uppercase()),
                        "{name}:{}: `{written}` takes a named const: {line}",
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
    for u in kernels::uniforms() {
        for file in files_of_uniform(u.name) {
            compare_layout(&u, shader_source(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}

#[test]
fn every_uniform_binding_has_a_rust_mirror() {
    for file in shader_files() {
        let module = naga::front::wgsl::parse_str(shader_source(file)).expect("validated above");
        for (_, v) in module.global_variables.iter() {
            if v.space != AddressSpace::Uniform {
                continue;
            }
            let name = module.types[v.ty].name.as_deref().unwrap_or("?");
            assert!(
                files_of_uniform(name).contains(&file),
                "{file}: uniform struct {name} has no Rust mirror declared for it"
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
    let uniforms = kernels::uniforms();
    let pool = uniforms.iter().find(|u| u.name == "Pool").expect("Pool");
    let source = shader_source(files_of_uniform("Pool")[0]);
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
