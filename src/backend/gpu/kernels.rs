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
//! Each entry point is declared once, in [`kernels!`] below: its WGSL file and entry name,
//! its uniform struct, its buffers by name (a binding set of [`super::bindings`]), what it
//! is to the host (a `Backend` method's kernel, a variant of one, or a step another launch
//! needs) and the function that counts its work for a profile ([`super::work`]). The
//! [`Kernel`] enum, the shader registry, the bind group layouts (binding numbers reflected
//! from the WGSL by name, [`resolve_bindings`]), the recorder's bind groups, the profile's
//! rows and `tests/shaders_valid.rs` all read that declaration.
//!
//! The registry is public so `tests/shaders_valid.rs` can check, without a GPU, that each
//! shader parses and validates with naga, that each declared buffer is a variable of that
//! name the entry point uses with the declared access (and that it uses no other), and that
//! each uniform struct of [`super::uniforms`] matches its WGSL struct.

use super::bindings::{self as bind, Access, Bindings, BufferSlot};
use super::tiles::{Gemm, TileConfig, Variant};
use super::uniforms::{Uniform, UniformLayout};
use super::work::{self, Work};
use std::collections::HashMap;
use std::sync::Mutex;

/// What an entry point is to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The GPU side of the `Backend` method named like the entry point.
    Method,
    /// The register-only kernel of a GEMM-shaped `Backend` method (named like it), which has
    /// workgroup-memory variants.
    Register(Gemm),
    /// The workgroup-memory variant of a GEMM-shaped method: its tile sizes (and so its
    /// workgroup size) are `override` constants set per pipeline from a [`TileConfig`].
    Tiled(Gemm),
    /// A dispatch another launch needs (the split-K reduction).
    Step,
}

/// One compute entry point, as [`kernels!`] declares it.
#[derive(Clone, Copy, Debug)]
pub struct KernelSpec {
    /// The kernel.
    pub kernel: Kernel,
    /// Its file in `shaders/`.
    pub file: &'static str,
    /// The file's WGSL text.
    pub source: &'static str,
    /// Entry point name.
    pub entry: &'static str,
    /// The uniform struct it binds (the one `var<uniform>` of its file).
    pub uniform: UniformLayout,
    /// The name of its binding set in [`super::bindings`].
    pub bindings: &'static str,
    /// Its storage buffers by name, in the binding set's field order.
    pub buffers: &'static [BufferSlot],
    /// What it is to the host.
    pub role: Role,
    /// Its work, from the bytes of its uniform struct (for a profile).
    pub work: fn(&[u8]) -> Work,
}

/// The `U` whose bytes start `bytes` (a dispatch's uniform).
fn decode<U: Uniform>(bytes: &[u8]) -> U {
    bytemuck::pod_read_unaligned(&bytes[..std::mem::size_of::<U>()])
}

/// Declares every kernel entry point, once: `Name: "file.wgsl" entry(BindingSet) role,
/// work_fn;`. Generates [`Kernel`] and [`KERNELS`].
macro_rules! kernels {
    ($(
        $(#[$doc:meta])*
        $kernel:ident: $file:literal $entry:ident($bind:ident) $role:expr, $work:path;
    )*) => {
        /// Every compute entry point (declared in [`KERNELS`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kernel {
            $($(#[$doc])* $kernel,)*
        }

        /// Every kernel's declaration, in [`Kernel`] order.
        pub const KERNELS: &[KernelSpec] = &[$(KernelSpec {
            kernel: Kernel::$kernel,
            file: $file,
            source: include_str!(concat!("../../../shaders/", $file)),
            entry: stringify!($entry),
            uniform: <<bind::$bind<'static> as Bindings>::Uniform as Uniform>::LAYOUT,
            bindings: <bind::$bind<'static> as Bindings>::NAME,
            buffers: <bind::$bind<'static> as Bindings>::SLOTS,
            role: $role,
            work: |u| $work(&decode(u)),
        }),*];
    };
}

use Gemm as G;
use Role::{Method, Register, Step, Tiled};

kernels! {
    /// `conv2d_forward`: convolution + bias (+ a fused activation) as a GEMM.
    Conv2dForward: "conv2d.wgsl" conv2d_forward(ConvGemm)
        Register(G::Conv2dForward), work::conv_forward;
    /// `conv2d_backward_input`.
    Conv2dBackwardInput: "conv2d.wgsl" conv2d_backward_input(ConvGemm)
        Register(G::Conv2dBackwardInput), work::conv_backward_input;
    /// `conv2d_backward_weight` (split-K partials, or grads with one split).
    Conv2dBackwardWeight: "conv2d.wgsl" conv2d_backward_weight(ConvGemm)
        Register(G::Conv2dBackwardWeight), work::conv_backward_weight;
    /// `conv2d_backward_weight_reduce` (sums split-K partials).
    Conv2dBackwardWeightReduce: "conv2d.wgsl" conv2d_backward_weight_reduce(ConvReduce)
        Step, work::conv_reduce;
    /// `maxpool_forward`.
    MaxpoolForward: "maxpool.wgsl" maxpool_forward(MaxpoolForward) Method, work::pool;
    /// `maxpool_backward`.
    MaxpoolBackward: "maxpool.wgsl" maxpool_backward(MaxpoolBackward) Method, work::pool;
    /// `dense_forward`.
    DenseForward: "dense.wgsl" dense_forward(DenseGemm) Register(G::DenseForward), work::gemm;
    /// `dense_backward_input`.
    DenseBackwardInput: "dense.wgsl" dense_backward_input(DenseGemm)
        Register(G::DenseBackwardInput), work::gemm;
    /// `dense_backward_weight`.
    DenseBackwardWeight: "dense.wgsl" dense_backward_weight(DenseGemm)
        Register(G::DenseBackwardWeight), work::gemm;
    /// `activation_forward`.
    ActivationForward: "activation.wgsl" activation_forward(ActivationForward)
        Method, work::activation_forward;
    /// `activation_backward`.
    ActivationBackward: "activation.wgsl" activation_backward(ActivationBackward)
        Method, work::activation_backward;
    /// `softmax_cross_entropy_forward`.
    SoftmaxCrossEntropyForward: "softmax_xent.wgsl" softmax_cross_entropy_forward(LossForward)
        Method, work::loss;
    /// `softmax_cross_entropy_backward`.
    SoftmaxCrossEntropyBackward: "softmax_xent.wgsl"
        softmax_cross_entropy_backward(LossBackward) Method, work::loss;
    /// `confusion_accumulate`.
    ConfusionAccumulate: "softmax_xent.wgsl" confusion_accumulate(Confusion) Method, work::loss;
    /// `optimizer_step`.
    OptimizerStep: "optimizer.wgsl" optimizer_step(OptimizerStep) Method, work::optimizer;
    /// `gather_batch`.
    GatherBatch: "data.wgsl" gather_batch(GatherBatch) Method, work::gather;
    /// `gather_batch_warped`.
    GatherBatchWarped: "data.wgsl" gather_batch_warped(GatherBatchWarped) Method, work::gather;
    /// `batchnorm_forward_train`.
    BatchnormForwardTrain: "batchnorm.wgsl" batchnorm_forward_train(BatchnormForwardTrain)
        Method, work::batchnorm_forward_train;
    /// `batchnorm_forward_eval`.
    BatchnormForwardEval: "batchnorm.wgsl" batchnorm_forward_eval(BatchnormForwardEval)
        Method, work::batchnorm_forward_eval;
    /// `batchnorm_backward`.
    BatchnormBackward: "batchnorm.wgsl" batchnorm_backward(BatchnormBackward)
        Method, work::batchnorm_backward;
    /// `dropout_forward`.
    DropoutForward: "dropout.wgsl" dropout_forward(Dropout) Method, work::dropout;
    /// `dropout_backward`.
    DropoutBackward: "dropout.wgsl" dropout_backward(Dropout) Method, work::dropout;
    /// `globalavgpool_forward`.
    GlobalavgpoolForward: "globalavgpool.wgsl" globalavgpool_forward(GlobalavgpoolForward)
        Method, work::globalavgpool;
    /// `globalavgpool_backward`.
    GlobalavgpoolBackward: "globalavgpool.wgsl" globalavgpool_backward(GlobalavgpoolBackward)
        Method, work::globalavgpool;
    /// `conv2d_forward_tiled`.
    Conv2dForwardTiled: "conv2d_tiled.wgsl" conv2d_forward_tiled(ConvGemm)
        Tiled(G::Conv2dForward), work::conv_forward;
    /// `conv2d_backward_input_tiled`.
    Conv2dBackwardInputTiled: "conv2d_tiled.wgsl" conv2d_backward_input_tiled(ConvGemm)
        Tiled(G::Conv2dBackwardInput), work::conv_backward_input;
    /// `conv2d_backward_weight_tiled` (split-K partials, or grads with one split; the
    /// partials are summed by [`Kernel::Conv2dBackwardWeightReduce`]).
    Conv2dBackwardWeightTiled: "conv2d_tiled.wgsl" conv2d_backward_weight_tiled(ConvGemm)
        Tiled(G::Conv2dBackwardWeight), work::conv_backward_weight;
    /// `dense_forward_tiled`.
    DenseForwardTiled: "dense_tiled.wgsl" dense_forward_tiled(DenseGemm)
        Tiled(G::DenseForward), work::gemm;
    /// `dense_backward_input_tiled`.
    DenseBackwardInputTiled: "dense_tiled.wgsl" dense_backward_input_tiled(DenseGemm)
        Tiled(G::DenseBackwardInput), work::gemm;
    /// `dense_backward_weight_tiled`.
    DenseBackwardWeightTiled: "dense_tiled.wgsl" dense_backward_weight_tiled(DenseGemm)
        Tiled(G::DenseBackwardWeight), work::gemm;
    /// `scale_add`.
    ScaleAdd: "accumulate.wgsl" scale_add(ScaleAdd) Method, work::scale_add;
}

impl Kernel {
    /// This kernel's declaration.
    pub fn spec(self) -> &'static KernelSpec {
        &KERNELS[self as usize]
    }

    /// Whether this is a workgroup-memory kernel whose tile sizes (and so its workgroup
    /// size) are `override` constants set per pipeline from a [`TileConfig`].
    pub fn is_tiled(self) -> bool {
        matches!(self.spec().role, Role::Tiled(_))
    }

    /// Whether this is a GEMM-shaped kernel, whose launches have variants (register or tiled).
    pub fn has_variants(self) -> bool {
        matches!(self.spec().role, Role::Register(_) | Role::Tiled(_))
    }

    /// What `bytes`, this kernel's uniform struct, asks it to compute.
    pub fn work(self, bytes: &[u8]) -> Work {
        (self.spec().work)(bytes)
    }
}

impl Gemm {
    /// The method's (and register kernel's) name.
    pub fn name(self) -> &'static str {
        self.kernel(Variant::Register).spec().entry
    }

    /// The kernel that runs `variant` of this method.
    pub fn kernel(self, variant: Variant) -> Kernel {
        let role = match variant {
            Variant::Register => Role::Register(self),
            Variant::Tiled(_) => Role::Tiled(self),
        };
        KERNELS
            .iter()
            .find(|k| k.role == role)
            .unwrap_or_else(|| panic!("no kernel declared as {role:?}"))
            .kernel
    }
}

/// Every shader file, once each, in the order the declarations first name them.
pub fn shader_files() -> Vec<&'static str> {
    let mut files: Vec<&'static str> = Vec::new();
    for k in KERNELS {
        if !files.contains(&k.file) {
            files.push(k.file);
        }
    }
    files
}

/// Where an entry point's uniform and buffers are bound, reflected from its module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reflected {
    /// The binding of its `var<uniform>`.
    pub uniform: u32,
    /// The binding of each declared buffer, in [`KernelSpec::buffers`] order.
    pub buffers: Vec<u32>,
}

/// The binding numbers of `spec`'s uniform and buffers in `module` (its file, parsed): each
/// declared buffer must be a group-0 storage variable of that name with the declared access,
/// and the file's one uniform variable must hold the declared uniform struct. An error says
/// which name does not match; `tests/shaders_valid.rs` also checks that the entry point uses
/// exactly these variables.
pub fn resolve_bindings(spec: &KernelSpec, module: &naga::Module) -> Result<Reflected, String> {
    let what = |m: String| format!("{} ({}): {m}", spec.entry, spec.file);
    let global = |name: &str| {
        module
            .global_variables
            .iter()
            .find(|(_, v)| v.name.as_deref() == Some(name))
            .map(|(_, v)| v)
    };
    let mut buffers = Vec::with_capacity(spec.buffers.len());
    for slot in spec.buffers {
        let var = global(slot.name).ok_or_else(|| {
            what(format!(
                "binds `{}`, which the shader does not declare",
                slot.name
            ))
        })?;
        let access = match var.space {
            naga::AddressSpace::Storage { access }
                if access.contains(naga::StorageAccess::STORE) =>
            {
                Access::ReadWrite
            }
            naga::AddressSpace::Storage { .. } => Access::Read,
            other => {
                return Err(what(format!(
                    "`{}` is {other:?}, not a storage buffer",
                    slot.name
                )))
            }
        };
        if access != slot.access {
            return Err(what(format!(
                "`{}` is declared {:?} but the shader has it {access:?}",
                slot.name, slot.access
            )));
        }
        let binding = var
            .binding
            .as_ref()
            .filter(|b| b.group == 0)
            .ok_or_else(|| what(format!("`{}` is not bound in group 0", slot.name)))?;
        buffers.push(binding.binding);
    }
    let uniform = module
        .global_variables
        .iter()
        .find(|(_, v)| v.space == naga::AddressSpace::Uniform)
        .map(|(_, v)| v)
        .ok_or_else(|| what("the shader has no uniform".into()))?;
    let name = module.types[uniform.ty].name.as_deref().unwrap_or("?");
    if name != spec.uniform.name {
        return Err(what(format!(
            "the shader's uniform is {name}, the declaration says {}",
            spec.uniform.name
        )));
    }
    let uniform = uniform
        .binding
        .as_ref()
        .filter(|b| b.group == 0)
        .ok_or_else(|| what("the uniform is not bound in group 0".into()))?
        .binding;
    Ok(Reflected { uniform, buffers })
}

/// Every uniform struct some kernel binds, once each.
pub fn uniforms() -> Vec<UniformLayout> {
    let mut all: Vec<UniformLayout> = Vec::new();
    for k in KERNELS {
        if !all.iter().any(|u| u.name == k.uniform.name) {
            all.push(k.uniform);
        }
    }
    all
}

/// The shader files that declare the uniform struct `name`.
pub fn files_of_uniform(name: &str) -> Vec<&'static str> {
    let mut files: Vec<&'static str> = Vec::new();
    for k in KERNELS.iter().filter(|k| k.uniform.name == name) {
        if !files.contains(&k.file) {
            files.push(k.file);
        }
    }
    files
}

/// Panics unless `B` is the binding set `kernel` declares: a launch hands its buffers over
/// as the declared struct, nothing else.
pub(crate) fn check_binding_set<B: Bindings>(kernel: Kernel) {
    let spec = kernel.spec();
    assert_eq!(
        spec.bindings,
        B::NAME,
        "{} binds bindings::{}, not bindings::{}",
        spec.entry,
        spec.bindings,
        B::NAME
    );
}

/// The source of shader file `name`.
pub fn shader_source(name: &str) -> &'static str {
    KERNELS
        .iter()
        .find(|k| k.file == name)
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
    /// Where its uniform and buffers are bound, reflected by name.
    bindings: Reflected,
}

/// Every kernel's pipeline, bind group layout and workgroup size, built once per device; the
/// tiled kernels' pipelines built on first use, once per configuration.
pub(crate) struct Pipelines {
    /// How they are built.
    opts: BuildOptions,
    /// Indexed by `Kernel as usize`.
    entries: Vec<Entry>,
    /// One module per shader file, in [`shader_files`] order.
    modules: Vec<wgpu::ShaderModule>,
    /// Pipelines of the tiled kernels, by kernel and configuration.
    tiled: Mutex<HashMap<(Kernel, TileConfig), wgpu::ComputePipeline>>,
}

impl Pipelines {
    /// Compiles every shader module once and builds one pipeline per entry point of fixed
    /// workgroup size.
    pub(crate) fn new(device: &wgpu::Device, opts: BuildOptions) -> Pipelines {
        let files = shader_files();
        let modules: Vec<wgpu::ShaderModule> = files
            .iter()
            .map(|&name| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl(shader_source(name).into()),
                };
                if opts.bounds_checks || !UNCHECKED_FILES.contains(&name) {
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
        // Each file parsed once by naga, for the binding numbers and workgroup sizes.
        let parsed: Vec<naga::Module> = files.iter().map(|f| parse(f)).collect();
        let entries = KERNELS
            .iter()
            .enumerate()
            .map(|(i, k)| {
                assert_eq!(k.kernel as usize, i, "KERNELS out of Kernel order");
                let module = files.iter().position(|&f| f == k.file).expect("listed");
                // tests/shaders_valid.rs checks every declaration, so a mismatch is a bug.
                let bindings =
                    resolve_bindings(k, &parsed[module]).unwrap_or_else(|e| panic!("{e}"));
                let (layout, pipeline_layout) = layouts(device, k, &bindings);
                let (pipeline, workgroup) = if k.kernel.is_tiled() {
                    (None, 0)
                } else {
                    let pipeline = build(device, &pipeline_layout, &modules[module], k, &[], true);
                    (Some(pipeline), workgroup_size(&parsed[module], k.entry))
                };
                Entry {
                    pipeline,
                    layout,
                    pipeline_layout,
                    workgroup,
                    module,
                    bindings,
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

    /// Where `k`'s uniform and buffers are bound.
    pub(crate) fn bindings(&self, k: Kernel) -> &Reflected {
        &self.entries[k as usize].bindings
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

/// What a device's shader compiler said about one module or entry point: an error, a
/// warning or a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShaderMessage {
    /// The shader file, or `file:entry` for an entry point's pipeline (with its tile
    /// configuration for a tiled kernel).
    pub what: String,
    /// "error", "warning" or "info".
    pub kind: &'static str,
    /// The compiler's or validation's text, with the line when the compiler gave one.
    pub text: String,
}

/// Compiles every shader file (with runtime checks, as a browser always does) and builds
/// every entry point's pipeline (each tiled kernel in every configuration `limits` allow),
/// each inside validation and out-of-memory error scopes; returns every message the
/// compiler (`getCompilationInfo` in a browser) or the scopes reported. Awaited, as a
/// browser must; the number of modules and pipelines built comes back beside the messages.
pub(crate) async fn diagnose(
    device: &wgpu::Device,
    limits: &wgpu::Limits,
) -> (usize, usize, Vec<ShaderMessage>) {
    let mut out = Vec::new();
    let files = shader_files();
    let mut modules = Vec::new();
    for &name in &files {
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(shader_source(name).into()),
        });
        for m in module.get_compilation_info().await.messages {
            let line = m.location.map(|l| format!(" (line {})", l.line_number));
            out.push(ShaderMessage {
                what: name.to_string(),
                kind: match m.message_type {
                    wgpu::CompilationMessageType::Error => "error",
                    wgpu::CompilationMessageType::Warning => "warning",
                    wgpu::CompilationMessageType::Info => "info",
                },
                text: format!("{}{}", m.message, line.unwrap_or_default()),
            });
        }
        if let Some(e) = scope.pop().await {
            out.push(scope_message(name.to_string(), &e));
        }
        modules.push(module);
    }
    let mut pipelines = 0;
    for k in KERNELS {
        let m = files.iter().position(|&f| f == k.file).expect("listed");
        let bindings = resolve_bindings(k, &parse(k.file)).unwrap_or_else(|e| panic!("{e}"));
        let configs: Vec<Option<TileConfig>> = if k.kernel.is_tiled() {
            Variant::all()
                .into_iter()
                .filter(|v| v.fits(limits))
                .filter_map(|v| match v {
                    Variant::Tiled(c) => Some(Some(c)),
                    Variant::Register => None,
                })
                .collect()
        } else {
            vec![None]
        };
        for cfg in configs {
            let what = match cfg {
                Some(c) => format!("{}:{} {c}", k.file, k.entry),
                None => format!("{}:{}", k.file, k.entry),
            };
            let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let (_, layout) = layouts(device, k, &bindings);
            let constants = cfg.map(TileConfig::constants);
            let constants = constants.as_ref().map_or(&[][..], |c| &c[..]);
            build(device, &layout, &modules[m], k, constants, true);
            pipelines += 1;
            for e in [validation.pop().await, oom.pop().await]
                .into_iter()
                .flatten()
            {
                out.push(scope_message(what.clone(), &e));
            }
        }
    }
    (modules.len(), pipelines, out)
}

/// An error caught by an error scope, as a message about `what`.
fn scope_message(what: String, e: &wgpu::Error) -> ShaderMessage {
    ShaderMessage {
        what,
        kind: "error",
        text: e.to_string(),
    }
}

/// One entry point's explicit bind group layout (its uniform and buffers at the reflected
/// bindings) and pipeline layout.
fn layouts(
    device: &wgpu::Device,
    k: &KernelSpec,
    at: &Reflected,
) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let uniform = entry(at.uniform, wgpu::BufferBindingType::Uniform);
    let buffers = k.buffers.iter().zip(&at.buffers).map(|(slot, &binding)| {
        let read_only = slot.access == Access::Read;
        entry(binding, wgpu::BufferBindingType::Storage { read_only })
    });
    let entries: Vec<wgpu::BindGroupLayoutEntry> =
        std::iter::once(uniform).chain(buffers).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(
        expected = "batchnorm_backward binds bindings::BatchnormBackward, not \
                               bindings::Dropout"
    )]
    fn a_launch_with_another_kernels_buffers_is_refused() {
        check_binding_set::<bind::Dropout<'_>>(Kernel::BatchnormBackward);
    }

    #[test]
    fn a_launch_with_its_declared_buffers_passes() {
        check_binding_set::<bind::BatchnormBackward<'_>>(Kernel::BatchnormBackward);
        check_binding_set::<bind::ConvGemm<'_>>(Kernel::Conv2dForwardTiled);
    }

    #[test]
    fn every_gemm_method_has_a_register_and_a_tiled_kernel() {
        for g in Gemm::ALL {
            assert_eq!(g.kernel(Variant::Register).spec().role, Role::Register(g));
            let tiled = g.kernel(Variant::Tiled(crate::backend::gpu::tiles::DEFAULT_TILES));
            assert!(tiled.is_tiled() && tiled.has_variants());
        }
    }
}
