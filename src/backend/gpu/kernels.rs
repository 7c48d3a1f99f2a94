//! The kernel registry: every WGSL file (loaded with `include_str!`, nowhere else), every
//! entry point with its bind group layout, and the pipelines built from them once per device.
//!
//! Workgroup sizes are declared once, in the WGSL: `const WG: u32 = 64u;` used by
//! `@workgroup_size(WG)` and by the kernel's own index arithmetic. The host reads each entry
//! point's size from naga's reflection of the module ([`workgroup_size`]) when it builds the
//! pipelines, and sizes every dispatch from that. We keep the size in the shader rather than
//! declaring it in Rust and passing a WGSL `override`, because today it is not a free
//! parameter: the GEMM kernels' 8×8 invocations × 4×4 blocks = 32×32 tiles, and the loss
//! kernel's workgroup arrays, are written for one size, so the shader should state it and
//! stay complete on its own (naga validates every file without a pipeline-constant pass, and
//! `EntryPoint::workgroup_size` is known without one).
//!
//! The tiled kernels (`conv2d_tiled.wgsl`, `dense_tiled.wgsl`) are the exception: their tile
//! sizes are free parameters, so they are `override` constants that the host sets per
//! pipeline from a [`TileConfig`] (one pipeline per kernel and configuration, built on first
//! use and kept), and the workgroup size follows from them in the shader
//! (`override WG = (BM / TM) * (BN / TN)`); the host knows it from the configuration.
//!
//! The registry is public so `tests/shaders_valid.rs` can check, without a GPU, that each
//! shader parses and validates with naga, that each entry point exists with the bindings
//! listed here, and that each uniform struct of [`super::uniforms`] matches its WGSL struct.

use super::tiles::TileConfig;
use std::collections::HashMap;
use std::sync::Mutex;

/// One WGSL source file of `shaders/`.
#[derive(Clone, Copy, Debug)]
pub struct ShaderFile {
    /// File name inside `shaders/`.
    pub name: &'static str,
    /// The WGSL text.
    pub source: &'static str,
}

/// Every shader file, embedded at compile time.
pub const SHADERS: &[ShaderFile] = &[
    ShaderFile {
        name: "conv2d.wgsl",
        source: include_str!("../../../shaders/conv2d.wgsl"),
    },
    ShaderFile {
        name: "maxpool.wgsl",
        source: include_str!("../../../shaders/maxpool.wgsl"),
    },
    ShaderFile {
        name: "dense.wgsl",
        source: include_str!("../../../shaders/dense.wgsl"),
    },
    ShaderFile {
        name: "activation.wgsl",
        source: include_str!("../../../shaders/activation.wgsl"),
    },
    ShaderFile {
        name: "softmax_xent.wgsl",
        source: include_str!("../../../shaders/softmax_xent.wgsl"),
    },
    ShaderFile {
        name: "optimizer.wgsl",
        source: include_str!("../../../shaders/optimizer.wgsl"),
    },
    ShaderFile {
        name: "data.wgsl",
        source: include_str!("../../../shaders/data.wgsl"),
    },
    ShaderFile {
        name: "batchnorm.wgsl",
        source: include_str!("../../../shaders/batchnorm.wgsl"),
    },
    ShaderFile {
        name: "dropout.wgsl",
        source: include_str!("../../../shaders/dropout.wgsl"),
    },
    ShaderFile {
        name: "globalavgpool.wgsl",
        source: include_str!("../../../shaders/globalavgpool.wgsl"),
    },
    ShaderFile {
        name: "conv2d_tiled.wgsl",
        source: include_str!("../../../shaders/conv2d_tiled.wgsl"),
    },
    ShaderFile {
        name: "dense_tiled.wgsl",
        source: include_str!("../../../shaders/dense_tiled.wgsl"),
    },
    ShaderFile {
        name: "accumulate.wgsl",
        source: include_str!("../../../shaders/accumulate.wgsl"),
    },
];

/// What a binding slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A uniform buffer (the dispatch's parameters), always binding 0.
    Uniform,
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer (outputs, atomics).
    ReadWrite,
}

/// Every compute entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `conv2d.wgsl` `conv2d_forward`.
    Conv2dForward,
    /// `conv2d.wgsl` `conv2d_backward_input`.
    Conv2dBackwardInput,
    /// `conv2d.wgsl` `conv2d_backward_weight` (split-K partials, or grads with one split).
    Conv2dBackwardWeight,
    /// `conv2d.wgsl` `conv2d_backward_weight_reduce` (sums split-K partials).
    Conv2dBackwardWeightReduce,
    /// `maxpool.wgsl` `maxpool_forward`.
    MaxpoolForward,
    /// `maxpool.wgsl` `maxpool_backward`.
    MaxpoolBackward,
    /// `dense.wgsl` `dense_forward`.
    DenseForward,
    /// `dense.wgsl` `dense_backward_input`.
    DenseBackwardInput,
    /// `dense.wgsl` `dense_backward_weight`.
    DenseBackwardWeight,
    /// `activation.wgsl` `activation_forward`.
    ActivationForward,
    /// `activation.wgsl` `activation_backward`.
    ActivationBackward,
    /// `softmax_xent.wgsl` `softmax_cross_entropy_forward`.
    SoftmaxCrossEntropyForward,
    /// `softmax_xent.wgsl` `softmax_cross_entropy_backward`.
    SoftmaxCrossEntropyBackward,
    /// `softmax_xent.wgsl` `confusion_accumulate`.
    ConfusionAccumulate,
    /// `optimizer.wgsl` `optimizer_step`.
    OptimizerStep,
    /// `data.wgsl` `gather_batch`.
    GatherBatch,
    /// `data.wgsl` `gather_batch_warped`.
    GatherBatchWarped,
    /// `batchnorm.wgsl` `batchnorm_forward_train`.
    BatchnormForwardTrain,
    /// `batchnorm.wgsl` `batchnorm_forward_eval`.
    BatchnormForwardEval,
    /// `batchnorm.wgsl` `batchnorm_backward`.
    BatchnormBackward,
    /// `dropout.wgsl` `dropout_forward`.
    DropoutForward,
    /// `dropout.wgsl` `dropout_backward`.
    DropoutBackward,
    /// `globalavgpool.wgsl` `globalavgpool_forward`.
    GlobalavgpoolForward,
    /// `globalavgpool.wgsl` `globalavgpool_backward`.
    GlobalavgpoolBackward,
    /// `conv2d_tiled.wgsl` `conv2d_forward_tiled`.
    Conv2dForwardTiled,
    /// `conv2d_tiled.wgsl` `conv2d_backward_input_tiled`.
    Conv2dBackwardInputTiled,
    /// `conv2d_tiled.wgsl` `conv2d_backward_weight_tiled` (split-K partials, or grads with one
    /// split; the partials are summed by [`Kernel::Conv2dBackwardWeightReduce`]).
    Conv2dBackwardWeightTiled,
    /// `dense_tiled.wgsl` `dense_forward_tiled`.
    DenseForwardTiled,
    /// `dense_tiled.wgsl` `dense_backward_input_tiled`.
    DenseBackwardInputTiled,
    /// `dense_tiled.wgsl` `dense_backward_weight_tiled`.
    DenseBackwardWeightTiled,
    /// `accumulate.wgsl` `scale_add`.
    ScaleAdd,
}

/// An entry point's file, name and bind group layout (its workgroup size is the shader's,
/// read by [`workgroup_size`]).
#[derive(Clone, Copy, Debug)]
pub struct KernelSpec {
    /// The kernel.
    pub kernel: Kernel,
    /// Its file in [`SHADERS`].
    pub file: &'static str,
    /// Entry point name.
    pub entry: &'static str,
    /// `(binding, slot)` of group 0, in the order the host passes buffers.
    pub bindings: &'static [(u32, Slot)],
}

use Slot::{Read as R, ReadWrite as W, Uniform as U};

/// uniform, one output, two inputs: the GEMM-shaped kernels.
const OUT_IN_IN: &[(u32, Slot)] = &[(0, U), (1, W), (2, R), (3, R)];

/// Every kernel, in [`Kernel`] order.
pub const KERNELS: &[KernelSpec] = &[
    spec(
        Kernel::Conv2dForward,
        "conv2d.wgsl",
        "conv2d_forward",
        OUT_IN_IN,
    ),
    spec(
        Kernel::Conv2dBackwardInput,
        "conv2d.wgsl",
        "conv2d_backward_input",
        OUT_IN_IN,
    ),
    spec(
        Kernel::Conv2dBackwardWeight,
        "conv2d.wgsl",
        "conv2d_backward_weight",
        OUT_IN_IN,
    ),
    spec(
        Kernel::Conv2dBackwardWeightReduce,
        "conv2d.wgsl",
        "conv2d_backward_weight_reduce",
        &[(0, U), (1, W), (2, R)],
    ),
    spec(
        Kernel::MaxpoolForward,
        "maxpool.wgsl",
        "maxpool_forward",
        &[(0, U), (1, W), (2, W), (3, R)],
    ),
    spec(
        Kernel::MaxpoolBackward,
        "maxpool.wgsl",
        "maxpool_backward",
        &[(0, U), (4, W), (5, R), (6, R)],
    ),
    spec(
        Kernel::DenseForward,
        "dense.wgsl",
        "dense_forward",
        OUT_IN_IN,
    ),
    spec(
        Kernel::DenseBackwardInput,
        "dense.wgsl",
        "dense_backward_input",
        OUT_IN_IN,
    ),
    spec(
        Kernel::DenseBackwardWeight,
        "dense.wgsl",
        "dense_backward_weight",
        OUT_IN_IN,
    ),
    spec(
        Kernel::ActivationForward,
        "activation.wgsl",
        "activation_forward",
        &[(0, U), (1, W), (2, R)],
    ),
    spec(
        Kernel::ActivationBackward,
        "activation.wgsl",
        "activation_backward",
        OUT_IN_IN,
    ),
    spec(
        Kernel::SoftmaxCrossEntropyForward,
        "softmax_xent.wgsl",
        "softmax_cross_entropy_forward",
        &[(0, U), (1, W), (2, W), (3, R), (4, R), (5, R)],
    ),
    spec(
        Kernel::SoftmaxCrossEntropyBackward,
        "softmax_xent.wgsl",
        "softmax_cross_entropy_backward",
        &[(0, U), (6, W), (7, R), (4, R), (5, R)],
    ),
    spec(
        Kernel::ConfusionAccumulate,
        "softmax_xent.wgsl",
        "confusion_accumulate",
        &[(0, U), (8, W), (7, R), (4, R)],
    ),
    spec(
        Kernel::OptimizerStep,
        "optimizer.wgsl",
        "optimizer_step",
        &[(0, U), (1, W), (2, R), (3, W), (4, W), (5, R)],
    ),
    spec(
        Kernel::GatherBatch,
        "data.wgsl",
        "gather_batch",
        &[(0, U), (1, W), (2, W), (3, R), (4, R), (5, R)],
    ),
    spec(
        Kernel::GatherBatchWarped,
        "data.wgsl",
        "gather_batch_warped",
        &[(0, U), (1, W), (2, W), (3, R), (4, R), (5, R), (6, R)],
    ),
    spec(
        Kernel::BatchnormForwardTrain,
        "batchnorm.wgsl",
        "batchnorm_forward_train",
        &[(0, U), (1, W), (2, W), (3, W), (4, R), (5, R)],
    ),
    spec(
        Kernel::BatchnormForwardEval,
        "batchnorm.wgsl",
        "batchnorm_forward_eval",
        &[(0, U), (1, W), (4, R), (5, R), (6, R)],
    ),
    spec(
        Kernel::BatchnormBackward,
        "batchnorm.wgsl",
        "batchnorm_backward",
        &[(0, U), (7, W), (8, W), (9, R), (4, R), (10, R), (5, R)],
    ),
    spec(
        Kernel::DropoutForward,
        "dropout.wgsl",
        "dropout_forward",
        &[(0, U), (1, W), (2, R)],
    ),
    spec(
        Kernel::DropoutBackward,
        "dropout.wgsl",
        "dropout_backward",
        &[(0, U), (1, W), (2, R)],
    ),
    spec(
        Kernel::GlobalavgpoolForward,
        "globalavgpool.wgsl",
        "globalavgpool_forward",
        &[(0, U), (1, W), (2, R)],
    ),
    spec(
        Kernel::GlobalavgpoolBackward,
        "globalavgpool.wgsl",
        "globalavgpool_backward",
        &[(0, U), (3, W), (4, R)],
    ),
    spec(
        Kernel::Conv2dForwardTiled,
        "conv2d_tiled.wgsl",
        "conv2d_forward_tiled",
        OUT_IN_IN,
    ),
    spec(
        Kernel::Conv2dBackwardInputTiled,
        "conv2d_tiled.wgsl",
        "conv2d_backward_input_tiled",
        OUT_IN_IN,
    ),
    spec(
        Kernel::Conv2dBackwardWeightTiled,
        "conv2d_tiled.wgsl",
        "conv2d_backward_weight_tiled",
        OUT_IN_IN,
    ),
    spec(
        Kernel::DenseForwardTiled,
        "dense_tiled.wgsl",
        "dense_forward_tiled",
        OUT_IN_IN,
    ),
    spec(
        Kernel::DenseBackwardInputTiled,
        "dense_tiled.wgsl",
        "dense_backward_input_tiled",
        OUT_IN_IN,
    ),
    spec(
        Kernel::DenseBackwardWeightTiled,
        "dense_tiled.wgsl",
        "dense_backward_weight_tiled",
        OUT_IN_IN,
    ),
    spec(
        Kernel::ScaleAdd,
        "accumulate.wgsl",
        "scale_add",
        &[(0, U), (1, W), (2, R)],
    ),
];

const fn spec(
    kernel: Kernel,
    file: &'static str,
    entry: &'static str,
    bindings: &'static [(u32, Slot)],
) -> KernelSpec {
    KernelSpec {
        kernel,
        file,
        entry,
        bindings,
    }
}

impl Kernel {
    /// This kernel's registry entry.
    pub fn spec(self) -> &'static KernelSpec {
        &KERNELS[self as usize]
    }
}

/// The source of shader file `name`.
pub fn shader_source(name: &str) -> &'static str {
    SHADERS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("shader {name} is not in the registry"))
        .source
}

/// Shader file `name` parsed by naga's WGSL front end (the one wgpu uses). The shaders are
/// compiled in and validated by `tests/shaders_valid.rs`, so a parse error is a bug.
pub fn parse(name: &str) -> naga::Module {
    let source = shader_source(name);
    naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)))
}

/// Invocations per workgroup of entry point `entry` of `module`, as its `@workgroup_size`
/// declares it (the one place it is written). Panics unless the size is a 1-D constant: the
/// host folds every grid into 2-D itself (`shape::dispatch_2d`).
pub fn workgroup_size(module: &naga::Module, entry: &str) -> u32 {
    let ep = module
        .entry_points
        .iter()
        .find(|e| e.name == entry)
        .unwrap_or_else(|| panic!("no entry point {entry}"));
    assert!(
        ep.workgroup_size_overrides.is_none(),
        "{entry}: the workgroup size must be a const, not an override"
    );
    let [x, y, z] = ep.workgroup_size;
    assert!(
        x > 0 && y == 1 && z == 1,
        "{entry}: workgroups must be 1-D, not {x}×{y}×{z}"
    );
    x
}

/// The shader files whose kernels index buffers only through the op's shape, which the host
/// checks against the buffers' lengths before every launch (`GpuBackend`'s asserts), and
/// fixed-size arrays only through loop counters bounded by the tile sizes: the GEMM kernels.
/// Their modules can be built without wgpu's runtime bounds checks and loop-bounding
/// counters ([`BuildOptions::bounds_checks`]). The others keep them: `data.wgsl` and
/// `maxpool.wgsl` follow indices read from device buffers, and the rest are cheap.
pub const UNCHECKED_FILES: &[&str] = &[
    "conv2d.wgsl",
    "dense.wgsl",
    "conv2d_tiled.wgsl",
    "dense_tiled.wgsl",
];

/// How the shader modules and pipelines are built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// Keep wgpu's runtime checks in every module (`true`), or build the [`UNCHECKED_FILES`]
    /// without bounds checks and loop-bounding counters (`false`, the default): otherwise, on
    /// Vulkan, naga clamps every index into the tiled kernels' workgroup and register arrays
    /// and adds a counter to every loop, inner product loops included.
    pub bounds_checks: bool,
    /// Skip zero-filling the tiled kernels' workgroup memory at the start of every workgroup
    /// (`true`: safe, since each copies its whole tiles before the barrier that precedes
    /// every read, see `conv2d_tiled.wgsl`), or zero-fill it as wgpu does by default
    /// (`false`, the default: on lavapipe skipping it saved nothing measurable; `fergpu
    /// profile --skip-workgroup-zeroing` measures it on a GPU). The other kernels always get
    /// it.
    pub skip_workgroup_zeroing: bool,
}

impl Kernel {
    /// Whether this is a workgroup-memory kernel whose tile sizes (and so its workgroup
    /// size) are `override` constants set per pipeline from a [`TileConfig`].
    pub fn is_tiled(self) -> bool {
        matches!(
            self,
            Kernel::Conv2dForwardTiled
                | Kernel::Conv2dBackwardInputTiled
                | Kernel::Conv2dBackwardWeightTiled
                | Kernel::DenseForwardTiled
                | Kernel::DenseBackwardInputTiled
                | Kernel::DenseBackwardWeightTiled
        )
    }
}

/// One kernel's compiled state.
struct Entry {
    /// The pipeline of a kernel with a fixed workgroup size; tiled kernels have one per
    /// configuration, in [`Pipelines::tiled`].
    pipeline: Option<wgpu::ComputePipeline>,
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    /// Invocations per workgroup, reflected from the shader (0 for tiled kernels).
    workgroup: u32,
    /// The shader file's module, by index into [`Pipelines::modules`].
    module: usize,
}

/// Every kernel's pipeline, bind group layout and workgroup size, built once per device; the
/// tiled kernels' pipelines built on first use, once per configuration.
pub(crate) struct Pipelines {
    /// How they are built.
    opts: BuildOptions,
    /// Indexed by `Kernel as usize`.
    entries: Vec<Entry>,
    /// One module per shader file, in [`SHADERS`] order.
    modules: Vec<wgpu::ShaderModule>,
    /// Pipelines of the tiled kernels, by kernel and configuration.
    tiled: Mutex<HashMap<(Kernel, TileConfig), wgpu::ComputePipeline>>,
}

impl Pipelines {
    /// Compiles every shader module once and builds one pipeline per entry point of fixed
    /// workgroup size.
    pub(crate) fn new(device: &wgpu::Device, opts: BuildOptions) -> Pipelines {
        let modules: Vec<wgpu::ShaderModule> = SHADERS
            .iter()
            .map(|s| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(s.name),
                    source: wgpu::ShaderSource::Wgsl(s.source.into()),
                };
                if opts.bounds_checks || !UNCHECKED_FILES.contains(&s.name) {
                    device.create_shader_module(desc)
                } else {
                    let mut checks = wgpu::ShaderRuntimeChecks::checked();
                    checks.bounds_checks = false;
                    checks.force_loop_bounding = false;
                    // SAFETY: the kernels of these files read and write buffers only at
                    // indices bounded by the op's shape (clamped with `min` or guarded), which
                    // `GpuBackend` asserts against every bound buffer's length before recording
                    // a launch; their workgroup and private arrays are indexed by loop counters
                    // bounded by the tile sizes (see the files' headers). Every loop ends: each
                    // counts up by a positive step (1, `WG`, `BK`, or a run of at least one
                    // pixel) to a bound fixed before it starts. tests/gpu_parity.rs and
                    // tests/gpu_variants.rs run every kernel of these files, unchecked, with
                    // buffers longer than the shape prefilled with junk.
                    unsafe { device.create_shader_module_trusted(desc, checks) }
                }
            })
            .collect();
        let entries = KERNELS
            .iter()
            .enumerate()
            .map(|(i, k)| {
                assert_eq!(k.kernel as usize, i, "KERNELS out of Kernel order");
                let module = SHADERS.iter().position(|s| s.name == k.file).unwrap();
                let (layout, pipeline_layout) = layouts(device, k);
                let (pipeline, workgroup) = if k.kernel.is_tiled() {
                    (None, 0)
                } else {
                    let pipeline = build(device, &pipeline_layout, &modules[module], k, &[], true);
                    (Some(pipeline), workgroup_size(&parse(k.file), k.entry))
                };
                Entry {
                    pipeline,
                    layout,
                    pipeline_layout,
                    workgroup,
                    module,
                }
            })
            .collect();
        Pipelines {
            opts,
            entries,
            modules,
            tiled: Mutex::new(HashMap::new()),
        }
    }

    /// The pipeline of `k`, a kernel of fixed workgroup size.
    pub(crate) fn pipeline(&self, k: Kernel) -> &wgpu::ComputePipeline {
        self.entries[k as usize]
            .pipeline
            .as_ref()
            .unwrap_or_else(|| panic!("{:?} is tiled: it needs a configuration", k))
    }

    /// The pipeline of the tiled kernel `k` with tiles `cfg`, built on first use.
    pub(crate) fn tiled(
        &self,
        device: &wgpu::Device,
        k: Kernel,
        cfg: TileConfig,
    ) -> wgpu::ComputePipeline {
        assert!(k.is_tiled(), "{k:?} has no tile configurations");
        cfg.check().unwrap_or_else(|e| panic!("{e}"));
        let mut built = self.tiled.lock().unwrap_or_else(|p| p.into_inner());
        built
            .entry((k, cfg))
            .or_insert_with(|| {
                let e = &self.entries[k as usize];
                let constants = cfg.constants();
                build(
                    device,
                    &e.pipeline_layout,
                    &self.modules[e.module],
                    k.spec(),
                    &constants,
                    !self.opts.skip_workgroup_zeroing,
                )
            })
            .clone()
    }

    /// The bind group layout of `k`.
    pub(crate) fn layout(&self, k: Kernel) -> &wgpu::BindGroupLayout {
        &self.entries[k as usize].layout
    }

    /// Invocations per workgroup of `k`, a kernel of fixed workgroup size.
    pub(crate) fn workgroup(&self, k: Kernel) -> u32 {
        let wg = self.entries[k as usize].workgroup;
        assert!(
            wg > 0,
            "{k:?} is tiled: its workgroup is its configuration's"
        );
        wg
    }
}

/// One entry point's explicit bind group layout and pipeline layout.
fn layouts(device: &wgpu::Device, k: &KernelSpec) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = k
        .bindings
        .iter()
        .map(|&(binding, slot)| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match slot {
                    Slot::Uniform => wgpu::BufferBindingType::Uniform,
                    Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Slot::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(k.entry),
        entries: &entries,
    });
    let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(k.entry),
        bind_group_layouts: &[Some(&bgl)],
        immediate_size: 0,
    });
    (bgl, layout)
}

/// The pipeline of entry point `k` with `override` values `constants`, its workgroup memory
/// zero-filled at the start of each workgroup if `zero_fill` (see
/// [`BuildOptions::skip_workgroup_zeroing`]).
fn build(
    device: &wgpu::Device,
    layout: &wgpu::PipelineLayout,
    module: &wgpu::ShaderModule,
    k: &KernelSpec,
    constants: &[(&str, f64)],
    zero_fill: bool,
) -> wgpu::ComputePipeline {
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(k.entry),
        layout: Some(layout),
        module,
        entry_point: Some(k.entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants,
            zero_initialize_workgroup_memory: zero_fill,
        },
        cache: None,
    })
}
