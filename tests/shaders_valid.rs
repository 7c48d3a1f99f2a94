//! Every WGSL shader parses and validates with naga, and every registry entry point exists
//! with the workgroup size and bindings the host builds its layouts from. No GPU needed.

use fergpu::backend::gpu::kernels::{shader_source, Slot, KERNELS, SHADERS};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, StorageAccess};

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
        "adam.wgsl",
        "data.wgsl",
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
        assert_eq!(
            ep.workgroup_size,
            [k.workgroup, 1, 1],
            "{}: workgroup size differs from the registry",
            k.entry
        );
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
fn entry_points_are_named_like_the_backend_methods() {
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
        "adam_step",
    ];
    for m in trait_methods {
        assert!(KERNELS.iter().any(|k| k.entry == m), "no entry point {m}");
    }
}
