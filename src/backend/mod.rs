//! The op-level backend trait: one method per kernel entry point.
//!
//! [`cpu::CpuBackend`] is the readable reference; [`gpu::GpuBackend`] records the same ops as
//! WGSL compute dispatches. The network and the training step are generic over [`Backend`], so
//! one step runs on both and can be compared end to end.
//!
//! Conventions:
//! - outputs come first in argument lists; every output is fully overwritten (never
//!   accumulated into) unless the method says "accumulates";
//! - layer weights live in one flat parameter buffer (and gradients in a twin of it), so ops
//!   that read or write weights take the whole buffer plus element offsets;
//! - buffers are allocated for the largest batch; ops touch only the first `shape`-many
//!   elements, so a smaller last batch reuses them;
//! - wrong shapes or lengths are bugs and panic (assert); they are never user errors.
//! - GPU backends may queue work: [`Backend::submit`] ends a batch's recording, and any
//!   `download_*` waits for the queued work first.

pub mod cpu;
pub mod gpu;

use crate::shape::{BatchNormShape, Conv2dShape, DenseShape, GlobalAvgPoolShape, PoolShape};

/// Element-wise activation functions. Each derivative is computed from the activation's
/// *output* `y`, so backward never needs the pre-activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `max(x, 0)`; derivative 1 where `y > 0`, else 0.
    Relu,
    /// `x` for `x > 0`, else `α(eˣ − 1)` with α = 1; derivative `y + α` where `y ≤ 0`.
    Elu,
    /// `λ·x` for `x > 0`, else `λα(eˣ − 1)` (λ ≈ 1.0507, α ≈ 1.67326); derivative `y + λα`
    /// where `y ≤ 0`.
    Selu,
    /// `1 / (1 + e⁻ˣ)`; derivative `y(1 − y)`.
    Sigmoid,
    /// `tanh x`; derivative `1 − y²`.
    Tanh,
    /// Identity (a layer with no activation); derivative 1.
    Linear,
}

/// SELU's scale λ (Klambauer et al. 2017), as Keras and PyTorch use.
pub const SELU_SCALE: f32 = 1.050_701;
/// SELU's α.
pub const SELU_ALPHA: f32 = 1.673_263_2;
/// ELU's α (Keras default).
pub const ELU_ALPHA: f32 = 1.0;

impl Activation {
    /// Every activation, in the order of [`Activation::code`].
    pub const ALL: [Activation; 6] = [
        Activation::Relu,
        Activation::Elu,
        Activation::Selu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Linear,
    ];

    /// A stable small integer for shader uniforms (0 relu, 1 elu, 2 selu, 3 sigmoid, 4 tanh,
    /// 5 linear).
    pub fn code(self) -> u32 {
        Activation::ALL.iter().position(|&a| a == self).unwrap() as u32
    }

    /// Lowercase name, as on the command line and in model files.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Elu => "elu",
            Activation::Selu => "selu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Linear => "linear",
        }
    }

    /// Parses a lowercase name (`relu`, `elu`, `selu`, `sigmoid`, `tanh`, `linear`).
    pub fn from_name(s: &str) -> Option<Activation> {
        Activation::ALL
            .into_iter()
            .find(|a| a.name() == s.trim().to_ascii_lowercase())
    }

    /// The activation of one value (the scalar definition both backends follow).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Elu => {
                if x > 0.0 {
                    x
                } else {
                    ELU_ALPHA * x.exp_m1()
                }
            }
            Activation::Selu => {
                if x > 0.0 {
                    SELU_SCALE * x
                } else {
                    SELU_SCALE * SELU_ALPHA * x.exp_m1()
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            Activation::Linear => x,
        }
    }

    /// The derivative dy/dx expressed through the output `y = apply(x)`.
    pub fn derivative_from_output(self, y: f32) -> f32 {
        match self {
            Activation::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Elu => {
                if y > 0.0 {
                    1.0
                } else {
                    y + ELU_ALPHA
                }
            }
            Activation::Selu => {
                if y > 0.0 {
                    SELU_SCALE
                } else {
                    y + SELU_SCALE * SELU_ALPHA
                }
            }
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Tanh => 1.0 - y * y,
            Activation::Linear => 1.0,
        }
    }
}

/// The update rule of [`Backend::optimizer_step`], each with PyTorch's formulas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// `torch.optim.Adam`: weight decay is L2, added to the gradient.
    Adam,
    /// `torch.optim.AdamW`: weight decay is decoupled, applied to the parameter.
    Adamw,
    /// `torch.optim.SGD` with dampening 0: optional (Nesterov) momentum, L2 weight decay added
    /// to the gradient.
    Sgd,
}

impl OptimizerKind {
    /// Every rule, in the order of [`OptimizerKind::code`].
    pub const ALL: [OptimizerKind; 3] = [
        OptimizerKind::Adam,
        OptimizerKind::Adamw,
        OptimizerKind::Sgd,
    ];

    /// A stable small integer for shader uniforms (0 adam, 1 adamw, 2 sgd; `optimizer.wgsl`).
    pub fn code(self) -> u32 {
        OptimizerKind::ALL.iter().position(|&k| k == self).unwrap() as u32
    }

    /// Lowercase name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Adam => "adam",
            OptimizerKind::Adamw => "adamw",
            OptimizerKind::Sgd => "sgd",
        }
    }

    /// Parses `adam`, `adamw` or `sgd`.
    pub fn from_name(s: &str) -> Option<OptimizerKind> {
        OptimizerKind::ALL
            .into_iter()
            .find(|k| k.name() == s.trim().to_ascii_lowercase())
    }
}

/// An optimizer's hyperparameters, fixed for a run (the learning rate is not among them: it
/// is a per-step value, see [`OptimizerStep`]). In `f64`, as PyTorch holds them in Python
/// floats; [`OptimizerStep::new`] rounds what the kernels use to `f32`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerConfig {
    /// The update rule.
    pub kind: OptimizerKind,
    /// SGD's momentum μ (0: plain SGD, PyTorch's default).
    pub momentum: f64,
    /// SGD: Nesterov momentum (needs μ > 0).
    pub nesterov: bool,
    /// Weight decay λ, applied where the decay mask is 1 (L2 for adam and sgd, decoupled for
    /// adamw).
    pub weight_decay: f64,
    /// Adam's first-moment decay β₁.
    pub beta1: f64,
    /// Adam's second-moment decay β₂.
    pub beta2: f64,
    /// Adam's ε, added to the bias-corrected `√v̂`.
    pub eps: f64,
}

impl OptimizerConfig {
    /// Adam's moment decays (β₁, β₂) = (0.9, 0.999), Keras' and PyTorch's: fixed, not a
    /// setting.
    pub const ADAM_BETAS: (f64, f64) = (0.9, 0.999);
}

/// One optimizer step's scalars, as the kernels use them (`f32`, computed on the host in
/// `f64` like PyTorch's Python-float scalars, so both backends do the same arithmetic).
///
/// With `g` the gradient, `p` the parameter, `λᵢ = weight_decay·decay[i]` (the decay mask)
/// and `t` the 1-based step, PyTorch's `torch.optim` formulas in its order of operations:
/// - adam: `g ← g + λᵢp`; `m ← β₁m + (1−β₁)g`; `v ← β₂v + (1−β₂)g²`;
///   `p ← p − step_size·m / (√v / bias2_sqrt + ε)` with `step_size = lr/(1−β₁ᵗ)` and
///   `bias2_sqrt = √(1−β₂ᵗ)`: that is `p −= lr·m̂/(√v̂ + ε)` with `m̂ = m/(1−β₁ᵗ)`,
///   `v̂ = v/(1−β₂ᵗ)`;
/// - adamw: `p ← p·(1 − lr·λᵢ)`, then adam's update without decay in the gradient;
/// - sgd: `g ← g + λᵢp`; with momentum μ > 0, `b ← μb + g` (the buffer `b` lives in `m`;
///   starting from zero, the first step gives `b = g`, as PyTorch's), then `g ← g + μb`
///   (Nesterov) or `g ← b`; finally `p ← p − lr·g`. `v` is not touched.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerStep {
    /// The update rule.
    pub kind: OptimizerKind,
    /// SGD: Nesterov momentum.
    pub nesterov: bool,
    /// This step's learning rate (schedule and warm-up applied).
    pub lr: f32,
    /// λ, for the L2 term of adam and sgd.
    pub weight_decay: f32,
    /// `lr·λ`, adamw's decoupled decay.
    pub lr_decay: f32,
    /// SGD's μ.
    pub momentum: f32,
    /// β₁.
    pub beta1: f32,
    /// `1 − β₁`, rounded once from `f64`.
    pub one_minus_beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// `1 − β₂`, rounded once from `f64` (in `f32`, `1 − 0.999` is 1.3e-5 off).
    pub one_minus_beta2: f32,
    /// ε.
    pub eps: f32,
    /// Adam: `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
    /// Adam: `√(1 − β₂ᵗ)`.
    pub bias2_sqrt: f32,
}

impl OptimizerStep {
    /// The scalars of step `t` (1-based) at learning rate `lr`.
    pub fn new(c: &OptimizerConfig, lr: f64, t: u64) -> OptimizerStep {
        assert!(t >= 1, "optimizer steps count from 1");
        let t = i32::try_from(t).unwrap_or(i32::MAX);
        OptimizerStep {
            kind: c.kind,
            nesterov: c.nesterov,
            lr: lr as f32,
            weight_decay: c.weight_decay as f32,
            lr_decay: (lr * c.weight_decay) as f32,
            momentum: c.momentum as f32,
            beta1: c.beta1 as f32,
            one_minus_beta1: (1.0 - c.beta1) as f32,
            beta2: c.beta2 as f32,
            one_minus_beta2: (1.0 - c.beta2) as f32,
            eps: c.eps as f32,
            step_size: (lr / (1.0 - c.beta1.powi(t))) as f32,
            bias2_sqrt: (1.0 - c.beta2.powi(t)).sqrt() as f32,
        }
    }
}

/// Where one batch-normalisation layer keeps its tensors, and its constants (PyTorch's
/// defaults: momentum 0.1, eps 1e-5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm {
    /// Offset of the scale γ `(c)` in the parameter (and gradient) buffer.
    pub w_off: usize,
    /// Offset of the shift β `(c)` in the parameter (and gradient) buffer.
    pub b_off: usize,
    /// Offset of the running mean `(c)` in the running-statistics buffer.
    pub mean_off: usize,
    /// Offset of the running variance `(c)` in the running-statistics buffer.
    pub var_off: usize,
    /// Weight of the batch's statistics in the running ones.
    pub momentum: f32,
    /// Added to the variance before the square root.
    pub eps: f32,
}

/// One dropout layer's mask for one training step. Element `i` of the layer's input is kept
/// when `dropout_hash(seed, step, layer, i) < threshold()`, so the mask is a pure function of
/// the key: both backends draw the same one, backward redraws it instead of storing it, and a
/// resumed run (whose step count is saved) draws the masks of the run it continues.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Share of elements dropped, in (0, 1).
    pub rate: f32,
    /// The run's seed.
    pub seed: u64,
    /// The optimizer's step count before this step (0 for the first step of a run).
    pub step: u64,
    /// The layer's index in the model's layer list.
    pub layer: u32,
}

impl Dropout {
    /// Hashes below this keep their element: `(1 − rate)·2³²`, rounded down.
    pub fn threshold(&self) -> u32 {
        assert!(
            self.rate > 0.0 && self.rate < 1.0,
            "dropout rate {} not in (0, 1)",
            self.rate
        );
        ((1.0 - self.rate as f64) * 4_294_967_296.0) as u32
    }

    /// Kept elements are scaled by `1/(1 − rate)` ("inverted" dropout), so evaluation needs
    /// no rescaling.
    pub fn scale(&self) -> f32 {
        1.0 / (1.0 - self.rate)
    }

    /// Whether element `i` is kept.
    pub fn keeps(&self, i: usize) -> bool {
        dropout_hash(self.seed, self.step, self.layer, i as u32) < self.threshold()
    }
}

/// One round of Chris Wellons' `lowbias32` integer hash (a bijection of `u32`).
pub fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The counter-based hash behind dropout masks: `lowbias32` rounds over the element index,
/// then the layer, the step's two words and the seed's two words, each mixed in by XOR.
/// `shaders/dropout.wgsl` computes the same integer operations.
pub fn dropout_hash(seed: u64, step: u64, layer: u32, element: u32) -> u32 {
    let mut h = lowbias32(element);
    for word in [
        layer,
        step as u32,
        (step >> 32) as u32,
        seed as u32,
        (seed >> 32) as u32,
    ] {
        h = lowbias32(h ^ word);
    }
    h
}

/// What a device can hold, for sizing batches before anything is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Bytes of the largest buffer one op may bind (a GPU adapter's storage-binding and
    /// buffer-size limits; on the CPU a share of the machine's memory).
    pub max_buffer_bytes: u64,
    /// Bytes all buffers together may take, when the device says (the machine's memory for
    /// the CPU; wgpu does not report a GPU's memory, so `None` there).
    pub total_bytes: Option<u64>,
}

/// Index of each field in the loss statistics buffer `(4)` that
/// [`Backend::softmax_cross_entropy_forward`] accumulates into.
pub mod stats {
    /// Sum over samples of the class-weighted, label-smoothed cross-entropy
    /// `(1 − ε)·w[y]·(−log p[y]) + (ε/C)·Σ_c w[c]·(−log p[c])` (`w[y]·(−log p[y])` when
    /// ε = 0).
    pub const LOSS_SUM: usize = 0;
    /// Count of samples whose arg-max probability is the label.
    pub const CORRECT: usize = 1;
    /// Count of samples seen.
    pub const SAMPLES: usize = 2;
    /// Sum over samples of the class weights `w[y]` (the weighted mean's denominator).
    pub const WEIGHT_SUM: usize = 3;
    /// Length of the statistics buffer.
    pub const LEN: usize = 4;
}

/// The op-level compute backend. Each op method is one kernel entry point of the same name in
/// `shaders/<family>.wgsl`, one function of that name in the CPU module named after the
/// shader file (`cpu/<family>.rs`), and one test `<method>_matches_the_reference` in
/// `tests/gpu_parity.rs` (`tests/shaders_valid.rs` checks all four line up).
pub trait Backend {
    /// A device buffer of `f32`.
    type Tensor;
    /// A device buffer of `u32` (labels, argmax indices, permutations, confusion counts).
    type Indices;
    /// A whole data set resident on the device: `u8` pixels (packed four to a `u32` word on
    /// the GPU) and `u8` labels, uploaded once.
    type Images;

    /// A short human-readable name of the device ("CPU reference (2 threads)", adapter name).
    fn name(&self) -> String;

    // ---- memory -------------------------------------------------------------------------

    /// A zero-filled tensor of `len` elements.
    fn zeros(&self, len: usize) -> Self::Tensor;
    /// A tensor holding a copy of `data`.
    fn upload(&self, data: &[f32]) -> Self::Tensor;
    /// Overwrites the first `data.len()` elements of `dst`.
    fn write(&self, dst: &mut Self::Tensor, data: &[f32]);
    /// Copies the whole tensor back to the host (waits for queued work).
    fn download(&self, src: &Self::Tensor) -> Vec<f32>;
    /// [`Backend::download`] as a future, for callers that must not block: in a browser the
    /// GPU's results arrive only after control returns to the event loop. Natively it
    /// resolves as soon as it is polled (the CPU backend's at once).
    fn download_async(&self, src: &Self::Tensor) -> impl std::future::Future<Output = Vec<f32>> {
        std::future::ready(self.download(src))
    }
    /// Copies the first `len` elements of `src` into `dst` on the device, ordered after every
    /// op recorded so far (e.g. the trainer's parameters into an evaluator's network).
    fn copy(&self, dst: &mut Self::Tensor, src: &Self::Tensor, len: usize);
    /// A zero-filled index buffer of `len` elements.
    fn zeros_indices(&self, len: usize) -> Self::Indices;
    /// An index buffer holding a copy of `data`.
    fn upload_indices(&self, data: &[u32]) -> Self::Indices;
    /// Overwrites the first `data.len()` elements of `dst`.
    fn write_indices(&self, dst: &mut Self::Indices, data: &[u32]);
    /// Copies the whole index buffer back to the host (waits for queued work).
    fn download_indices(&self, src: &Self::Indices) -> Vec<u32>;
    /// [`Backend::download_indices`] as a future (see [`Backend::download_async`]).
    fn download_indices_async(
        &self,
        src: &Self::Indices,
    ) -> impl std::future::Future<Output = Vec<u32>> {
        std::future::ready(self.download_indices(src))
    }
    /// Uploads a data set once: `pixels` is `(n, 48·48)` u8, `labels` is `(n)` in 0..7.
    fn upload_images(&self, pixels: &[u8], labels: &[u8]) -> Self::Images;
    /// How much memory this device gives one buffer and all buffers together (see
    /// [`MemoryLimits`]); callers size batches from it before allocating anything.
    fn memory_limits(&self) -> MemoryLimits;
    /// Ends the recording of a batch's work and hands it to the device (no-op on the CPU).
    fn submit(&self);
    /// Reports any error the device raised so far (validation, out of memory, device lost)
    /// as [`crate::Error::Gpu`] with what to do about it. Ops cannot fail one by one, so
    /// callers check this after downloads (once per epoch, and at the end). Always `Ok` on
    /// the CPU.
    fn check(&self) -> crate::Result<()> {
        Ok(())
    }

    // ---- data ---------------------------------------------------------------------------

    /// Gathers one batch: for `i < batch`, image `r` of `images`, where `order[offset + i]`
    /// packs `r` with a flip and shift ([`crate::augment::pack`]; a bare `r` reads the image
    /// as it is), goes to `x[i]` scaled by 1/255, and its label to `labels[i]`.
    /// Buffers: x `(batch, 1, 48, 48)`, labels `(batch)`, order `(n)`.
    fn gather_batch(
        &self,
        x: &mut Self::Tensor,
        labels: &mut Self::Indices,
        images: &Self::Images,
        order: &Self::Indices,
        offset: usize,
        batch: usize,
    );
    /// [`Backend::gather_batch`] with each image also scaled, rotated and partly erased: the
    /// image at order position `k = offset + i` is sampled as `warp[k·4..k·4 + 4]` says (an
    /// [`crate::augment::ImageWarp`]: bilinear in integer fixed point after the entry's flip,
    /// then its shift, edges repeated, then a rectangle of noise), and `x[i]` is the
    /// integer sample times `PIXEL_SCALE / 65536` (see [`crate::augment`] for the arithmetic,
    /// exact on every backend). Buffers: x `(batch, 1, 48, 48)`, labels `(batch)`, order
    /// `(n)`, warp `(n, 4)`.
    #[allow(clippy::too_many_arguments)]
    fn gather_batch_warped(
        &self,
        x: &mut Self::Tensor,
        labels: &mut Self::Indices,
        images: &Self::Images,
        order: &Self::Indices,
        warp: &Self::Indices,
        offset: usize,
        batch: usize,
    );

    // ---- convolution --------------------------------------------------------------------

    /// `out[b,o,y,x] = bias[o] + Σ_{c,i,j} input[b,c,y+i−pad,x+j−pad]·weight[o,c,i,j]`, input
    /// pixels outside the image counting zero (see [`Conv2dShape`]).
    /// weight `(out_c, in_c, k, k)` at `params[w_off..]`, bias `(out_c)` at `params[b_off..]`.
    fn conv2d_forward(
        &self,
        out: &mut Self::Tensor,
        input: &Self::Tensor,
        params: &Self::Tensor,
        w_off: usize,
        b_off: usize,
        s: &Conv2dShape,
    );
    /// `d_input[b,c,y,x] = Σ_{o,i,j} d_out[b,o,y+pad−i,x+pad−j]·weight[o,c,i,j]` (terms inside
    /// the output only). d_input `(batch, in_c, in_h, in_w)`, d_out `(batch, out_c, out_h, out_w)`.
    fn conv2d_backward_input(
        &self,
        d_input: &mut Self::Tensor,
        d_out: &Self::Tensor,
        params: &Self::Tensor,
        w_off: usize,
        s: &Conv2dShape,
    );
    /// `d_weight[o,c,i,j] = Σ_{b,y,x} d_out[b,o,y,x]·input[b,c,y+i−pad,x+j−pad]` (zero outside
    /// the image) written to
    /// `grads[w_off..]`, and `d_bias[o] = Σ_{b,y,x} d_out[b,o,y,x]` to `grads[b_off..]`.
    fn conv2d_backward_weight(
        &self,
        grads: &mut Self::Tensor,
        w_off: usize,
        b_off: usize,
        d_out: &Self::Tensor,
        input: &Self::Tensor,
        s: &Conv2dShape,
    );

    // ---- pooling ------------------------------------------------------------------------

    /// Max over each window; `argmax` records the chosen element (see [`PoolShape`]).
    fn maxpool_forward(
        &self,
        out: &mut Self::Tensor,
        argmax: &mut Self::Indices,
        input: &Self::Tensor,
        s: &PoolShape,
    );
    /// Routes each `d_out` element to its argmax position; every other element of `d_input`
    /// is zero (dropped floor rows/columns included). Written as a gather, deterministic.
    fn maxpool_backward(
        &self,
        d_input: &mut Self::Tensor,
        d_out: &Self::Tensor,
        argmax: &Self::Indices,
        s: &PoolShape,
    );

    // ---- dense --------------------------------------------------------------------------

    /// `out[b,o] = bias[o] + Σ_i input[b,i]·weight[o,i]`.
    fn dense_forward(
        &self,
        out: &mut Self::Tensor,
        input: &Self::Tensor,
        params: &Self::Tensor,
        w_off: usize,
        b_off: usize,
        s: &DenseShape,
    );
    /// `d_input[b,i] = Σ_o d_out[b,o]·weight[o,i]`.
    fn dense_backward_input(
        &self,
        d_input: &mut Self::Tensor,
        d_out: &Self::Tensor,
        params: &Self::Tensor,
        w_off: usize,
        s: &DenseShape,
    );
    /// `d_weight[o,i] = Σ_b d_out[b,o]·input[b,i]` to `grads[w_off..]`,
    /// `d_bias[o] = Σ_b d_out[b,o]` to `grads[b_off..]`.
    fn dense_backward_weight(
        &self,
        grads: &mut Self::Tensor,
        w_off: usize,
        b_off: usize,
        d_out: &Self::Tensor,
        input: &Self::Tensor,
        s: &DenseShape,
    );

    // ---- activations --------------------------------------------------------------------

    /// `out[i] = act(input[i])` for `i < len`.
    fn activation_forward(
        &self,
        out: &mut Self::Tensor,
        input: &Self::Tensor,
        act: Activation,
        len: usize,
    );
    /// `d_input[i] = d_out[i]·act'(…)` computed from the forward output `y`, for `i < len`.
    fn activation_backward(
        &self,
        d_input: &mut Self::Tensor,
        d_out: &Self::Tensor,
        y: &Self::Tensor,
        act: Activation,
        len: usize,
    );

    // ---- loss ---------------------------------------------------------------------------

    /// Numerically stable softmax of `logits (batch, classes)` into `probs (batch, classes)`,
    /// and *accumulates* into `stats (4)` (see [`stats`]): each sample's class-weighted,
    /// label-smoothed cross-entropy
    /// `ℓ = (1 − ε)·w[y]·(−log p[y]) + (ε/C)·Σ_c w[c]·(−log p[c])` summed (`C = classes`,
    /// ε = `smoothing`), correct predictions (first maximum wins ties), samples, and `w[y]`
    /// summed. `class_weights (classes)`, `labels (batch)`.
    ///
    /// `ℓ` is PyTorch's `CrossEntropyLoss(weight=w, label_smoothing=ε)` of one sample: the
    /// target `(1 − ε)·onehot(y) + ε/C`, each class's term weighted by its own `w[c]`.
    #[allow(clippy::too_many_arguments)]
    fn softmax_cross_entropy_forward(
        &self,
        probs: &mut Self::Tensor,
        stats: &mut Self::Tensor,
        logits: &Self::Tensor,
        labels: &Self::Indices,
        class_weights: &Self::Tensor,
        smoothing: f32,
        batch: usize,
        classes: usize,
    );
    /// Gradient of the batch loss `L = (1/batch)·Σ_b ℓ_b` (Keras' weighted sum over batch
    /// size; PyTorch's mean divides by `Σ_b w[y_b]` instead, the same when the weights are
    /// 1): `d_logits[b,c] = (w[y]/batch)·(1 − ε)·(p[b,c] − [c = y]) +
    /// (ε/(C·batch))·(W·p[b,c] − w[c])` with `y = y_b`, `W = Σ_c w[c]`.
    #[allow(clippy::too_many_arguments)]
    fn softmax_cross_entropy_backward(
        &self,
        d_logits: &mut Self::Tensor,
        probs: &Self::Tensor,
        labels: &Self::Indices,
        class_weights: &Self::Tensor,
        smoothing: f32,
        batch: usize,
        classes: usize,
    );
    /// *Accumulates* the confusion matrix `confusion (classes, classes)`, rows true label,
    /// columns predicted (first maximum of `probs (batch, classes)`).
    fn confusion_accumulate(
        &self,
        confusion: &mut Self::Indices,
        probs: &Self::Tensor,
        labels: &Self::Indices,
        batch: usize,
        classes: usize,
    );

    // ---- optimizer ----------------------------------------------------------------------

    /// One optimizer step over every parameter at once (see [`OptimizerStep`] for the
    /// formulas): params, grads, m, v and decay are all `(P)`; `decay (P)` is the
    /// weight-decay mask (1 decays, 0 does not; `Plan::decay_mask`). Writes params, m and v.
    fn optimizer_step(
        &self,
        params: &mut Self::Tensor,
        grads: &Self::Tensor,
        m: &mut Self::Tensor,
        v: &mut Self::Tensor,
        decay: &Self::Tensor,
        step: &OptimizerStep,
    );

    // ---- accumulation -------------------------------------------------------------------

    /// `acc[i] = alpha·acc[i] + beta·x[i]` for `i < len` (*accumulates* into `acc` unless
    /// `alpha` is 0, in which case the old `acc` is not read: `acc[i] = beta·x[i]`). With
    /// `alpha = k/(k+1)`, `beta = 1/(k+1)` it keeps the running mean of `k + 1` tensors, as
    /// test-time augmentation does for its views' logits.
    fn scale_add(
        &self,
        acc: &mut Self::Tensor,
        x: &Self::Tensor,
        alpha: f32,
        beta: f32,
        len: usize,
    );

    // ---- batch normalisation ------------------------------------------------------------

    /// Training mode. Per channel `c`, over its `n = batch·hw` values (see
    /// [`BatchNormShape`]): the batch mean `μ = Σx/n` and biased variance `σ² = Σ(x − μ)²/n`;
    /// `out = γ·(x − μ)·r + β` with `r = 1/√(σ² + eps)`; `saved (2, c)` ← `[μ, r]` for
    /// backward; and the running statistics move towards the batch's:
    /// `mean ← (1 − momentum)·mean + momentum·μ`,
    /// `var ← (1 − momentum)·var + momentum·σ²·n/(n − 1)` (unbiased, as PyTorch).
    /// γ, β `(c)` at `params[bn.w_off..]`, `params[bn.b_off..]`; running mean and variance
    /// `(c)` at `running[bn.mean_off..]`, `running[bn.var_off..]`. Needs `n ≥ 2`.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_forward_train(
        &self,
        out: &mut Self::Tensor,
        saved: &mut Self::Tensor,
        running: &mut Self::Tensor,
        input: &Self::Tensor,
        params: &Self::Tensor,
        bn: &BatchNorm,
        s: &BatchNormShape,
    );
    /// Evaluation mode: `out = γ·(x − mean)/√(var + eps) + β` with the running statistics.
    fn batchnorm_forward_eval(
        &self,
        out: &mut Self::Tensor,
        input: &Self::Tensor,
        params: &Self::Tensor,
        running: &Self::Tensor,
        bn: &BatchNorm,
        s: &BatchNormShape,
    );
    /// Backward of the training mode, through the batch statistics. Per channel, with
    /// `x̂ = (x − μ)·r` from `saved (2, c)`: `dβ = Σ dy` to `grads[bn.b_off..]`,
    /// `dγ = Σ dy·x̂` to `grads[bn.w_off..]`, and
    /// `d_input = γ·r·(dy − dβ/n − x̂·dγ/n)`.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_backward(
        &self,
        d_input: &mut Self::Tensor,
        grads: &mut Self::Tensor,
        d_out: &Self::Tensor,
        input: &Self::Tensor,
        saved: &Self::Tensor,
        params: &Self::Tensor,
        bn: &BatchNorm,
        s: &BatchNormShape,
    );

    // ---- dropout ------------------------------------------------------------------------

    /// `out[i] = input[i]·scale` where `d` keeps element `i`, else 0, for `i < len`
    /// (see [`Dropout`]).
    fn dropout_forward(
        &self,
        out: &mut Self::Tensor,
        input: &Self::Tensor,
        d: &Dropout,
        len: usize,
    );
    /// `d_input[i] = d_out[i]·scale` where `d` keeps element `i`, else 0, for `i < len`: the
    /// forward's mask, redrawn from its key.
    fn dropout_backward(
        &self,
        d_input: &mut Self::Tensor,
        d_out: &Self::Tensor,
        d: &Dropout,
        len: usize,
    );

    // ---- global average pooling ---------------------------------------------------------

    /// `out[b,c] = Σ_p input[b,c,p] / hw` (see [`GlobalAvgPoolShape`]).
    fn globalavgpool_forward(
        &self,
        out: &mut Self::Tensor,
        input: &Self::Tensor,
        s: &GlobalAvgPoolShape,
    );
    /// `d_input[b,c,p] = d_out[b,c] / hw`.
    fn globalavgpool_backward(
        &self,
        d_input: &mut Self::Tensor,
        d_out: &Self::Tensor,
        s: &GlobalAvgPoolShape,
    );

    // ---- fused ops ----------------------------------------------------------------------

    /// [`Backend::conv2d_forward`] then [`Backend::activation_forward`] over its output:
    /// `out = act(conv(input) + bias)`, `(batch, out_c, out_h, out_w)`. `pre` (the same
    /// shape) is scratch for the convolution's output before the activation: what it holds
    /// afterwards is unspecified (a backend that fuses the two never writes it), so nothing
    /// may read it; the activation's backward takes `out`. By default the two ops, in order.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_forward_act(
        &self,
        out: &mut Self::Tensor,
        pre: &mut Self::Tensor,
        input: &Self::Tensor,
        params: &Self::Tensor,
        w_off: usize,
        b_off: usize,
        s: &Conv2dShape,
        act: Activation,
    ) {
        self.conv2d_forward(pre, input, params, w_off, b_off, s);
        self.activation_forward(out, pre, act, s.output_len());
    }

    /// [`Backend::batchnorm_forward_train`] then [`Backend::activation_forward`] over its
    /// output: `out = act(bn(input))`, `(batch, c, hw)`; `saved` and `running` as the batch
    /// norm's. `pre` (the same shape) is scratch for the batch norm's output: what it holds
    /// afterwards is unspecified, so nothing may read it (the batch norm's backward takes its
    /// input and `saved`, the activation's takes `out`). By default the two ops, in order.
    /// The network labels the call with the batch norm's op ([`Backend::label_op`]); the
    /// activation is the op right after it, which a backend that runs two kernels names.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_act_forward_train(
        &self,
        out: &mut Self::Tensor,
        pre: &mut Self::Tensor,
        saved: &mut Self::Tensor,
        running: &mut Self::Tensor,
        input: &Self::Tensor,
        params: &Self::Tensor,
        bn: &BatchNorm,
        s: &BatchNormShape,
        act: Activation,
    ) {
        self.batchnorm_forward_train(pre, saved, running, input, params, bn, s);
        self.activation_forward(out, pre, act, s.len());
    }

    /// [`Backend::activation_backward`] then [`Backend::batchnorm_backward`]: the backward
    /// of [`Backend::batchnorm_act_forward_train`]. `d_out` is the gradient of the
    /// activation's output `y (batch, c, hw)`; `d_input`, `grads` as the batch norm's
    /// backward; `scratch` (the same shape) holds the gradient between the two ops, and what
    /// it holds afterwards is unspecified (the network passes the batch norm's own output,
    /// which nothing reads after the forward). By default the two ops, in order.
    #[allow(clippy::too_many_arguments)]
    fn batchnorm_act_backward(
        &self,
        d_input: &mut Self::Tensor,
        scratch: &mut Self::Tensor,
        grads: &mut Self::Tensor,
        d_out: &Self::Tensor,
        y: &Self::Tensor,
        input: &Self::Tensor,
        saved: &Self::Tensor,
        params: &Self::Tensor,
        bn: &BatchNorm,
        s: &BatchNormShape,
        act: Activation,
    ) {
        self.activation_backward(scratch, d_out, y, act, s.len());
        self.batchnorm_backward(d_input, grads, scratch, input, saved, params, bn, s);
    }

    /// Evaluation mode's convolution and the batch norm after it at once:
    /// `out = γ·(conv(input) + bias − mean)/√(var + eps) + β`, `(batch, out_c, out_h, out_w)`.
    /// `pre` (the same shape) is scratch for the convolution's output: what it holds
    /// afterwards is unspecified (a backend that folds the batch norm into the convolution's
    /// weights never writes it). Weight and bias as [`Backend::conv2d_forward`]; γ, β, mean
    /// and variance as [`Backend::batchnorm_forward_eval`]. By default the two ops, in order.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_bn_forward_eval(
        &self,
        out: &mut Self::Tensor,
        pre: &mut Self::Tensor,
        input: &Self::Tensor,
        params: &Self::Tensor,
        running: &Self::Tensor,
        w_off: usize,
        b_off: usize,
        s: &Conv2dShape,
        bn: &BatchNorm,
        bs: &BatchNormShape,
    ) {
        self.conv2d_forward(pre, input, params, w_off, b_off, s);
        self.batchnorm_forward_eval(out, pre, params, running, bn, bs);
    }

    /// Evaluation mode's convolution, the batch norm after it and the activation after that
    /// at once, for a pass whose outputs are watched for values that are not numbers:
    /// `out = act(bn(conv(input)))` where the batch norm's output is finite, and that output
    /// itself where it is not (NaN and ±∞ pass the activation unchanged, where ReLU would turn
    /// NaN and −∞ into 0), so that a watch over `out` sees every one the batch norm gave.
    /// The watch is done in the same pass, while the values are at hand: `flags (batch)`
    /// gets NaN for every image whose `out` holds a value that is not finite, and keeps what
    /// it held for the others, so that the caller need not read `out` again.
    /// Arguments as [`Backend::conv2d_bn_forward_eval`], with no scratch. Returns whether it
    /// ran: by default it does not, writing nothing (the activation kernels drop NaN), and the
    /// caller runs [`Backend::conv2d_bn_forward_eval`] and the activation on their own.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_bn_act_forward_eval(
        &self,
        _out: &mut Self::Tensor,
        _flags: &mut Self::Tensor,
        _input: &Self::Tensor,
        _params: &Self::Tensor,
        _running: &Self::Tensor,
        _at: (usize, usize),
        _s: &Conv2dShape,
        _bn: &BatchNorm,
        _bs: &BatchNormShape,
        _act: Activation,
    ) -> bool {
        false
    }

    /// [`Backend::conv2d_bn_act_forward_eval`] and the max pool after it at once: `out` is
    /// the pool's output `(batch, out_c, out_h / size, out_w / size)` over the activation's
    /// output (which is never written), the values the two ops in order give; `flags` as
    /// there, for the activation's output. For a watched evaluation pass, which reads
    /// neither the activation's output nor the pool's argmax. Returns whether it ran: by
    /// default it does not, writing nothing, and the caller runs the ops on their own.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_bn_act_pool_forward_eval(
        &self,
        _out: &mut Self::Tensor,
        _flags: &mut Self::Tensor,
        _input: &Self::Tensor,
        _params: &Self::Tensor,
        _running: &Self::Tensor,
        _at: (usize, usize),
        _shapes: (&Conv2dShape, &BatchNorm, &BatchNormShape, &PoolShape),
        _act: Activation,
    ) -> bool {
        false
    }

    // ---- profiling ----------------------------------------------------------------------

    /// Says which op of the model's plan the calls that follow run (`None`: none, e.g. the
    /// loss or the optimizer), so that a profile can name each kernel's layer (`fergpu
    /// profile`). Not an op: it computes nothing, and does nothing by default.
    fn label_op(&self, _op: Option<usize>) {}
}
