//! The storage buffers each kernel binds, by name: one struct per binding set, whose field
//! names are the WGSL variables' names. A launch hands its buffers over as such a struct
//! (`bind::BatchnormBackward { dx, grads, dy, x, saved_in, params }`), never as a list in
//! binding order, so two buffers of the same length cannot be swapped by position; the
//! binding numbers come from naga's reflection of the shader (by name, see
//! [`super::kernels::resolve_bindings`]), and `tests/shaders_valid.rs` checks every
//! declared name, and its access, against the WGSL.
//!
//! A binding set belongs to one uniform struct (the shader file's) and is shared by the
//! kernels that bind the same variables: the register and tiled variants of one GEMM, the
//! forward and backward dropout.

use super::buffers::Buf;
use super::uniforms::{Accum, Act, Conv, Drop, Gap, Gather, Loss, Mm, Norm, Optim, Pool, Uniform};

/// How a kernel uses one storage buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`: outputs, atomics.
    ReadWrite,
}

/// One named storage binding of a binding set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferSlot {
    /// The WGSL variable's name (and the Rust field's).
    pub name: &'static str,
    /// How the kernel uses it.
    pub access: Access,
}

/// A binding set: a struct of named buffers (see the module docs).
pub(crate) trait Bindings: Copy {
    /// The uniform struct the kernels of this set bind beside the buffers.
    type Uniform: Uniform;
    /// The struct's name (what a kernel declaration names).
    const NAME: &'static str;
    /// Its fields, in declaration order.
    const SLOTS: &'static [BufferSlot];
    /// The buffers, in [`Bindings::SLOTS`] order.
    fn buffers(&self) -> Vec<&Buf>;
}

/// Declares binding sets: `Name(Uniform) { field: Access, … }`.
macro_rules! bindings {
    ($(
        $(#[$doc:meta])*
        $name:ident($uniform:ty) { $($field:ident: $access:ident),+ $(,)? }
    )*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub(crate) struct $name<'a> {
            $(pub(crate) $field: &'a Buf),+
        }

        impl Bindings for $name<'_> {
            type Uniform = $uniform;
            const NAME: &'static str = stringify!($name);
            const SLOTS: &'static [BufferSlot] = &[$(BufferSlot {
                name: stringify!($field),
                access: Access::$access,
            }),+];
            fn buffers(&self) -> Vec<&Buf> {
                vec![$(self.$field),+]
            }
        }
    )*};
}

bindings! {
    /// The convolution GEMMs (`conv2d.wgsl`, `conv2d_tiled.wgsl`): C in `dst`, the operands
    /// in `src` and `aux` (forward: input, params; input gradient: d_out, params; weight
    /// gradient: d_out, input).
    ConvGemm(Conv) { dst: ReadWrite, src: Read, aux: Read }
    /// The split-K reduction: the gradients in `dst`, the partial sums in `src`.
    ConvReduce(Conv) { dst: ReadWrite, src: Read }
    /// `maxpool_forward`.
    MaxpoolForward(Pool) { y: ReadWrite, argmax_out: ReadWrite, x: Read }
    /// `maxpool_backward`.
    MaxpoolBackward(Pool) { dx: ReadWrite, dy: Read, argmax_in: Read }
    /// The dense GEMMs (`dense.wgsl`, `dense_tiled.wgsl`): C in `dst`, A in `a`, B in `bsrc`.
    DenseGemm(Mm) { dst: ReadWrite, a: Read, bsrc: Read }
    /// `activation_forward`: `dst = f(a)`.
    ActivationForward(Act) { dst: ReadWrite, a: Read }
    /// `activation_backward`: `dst = a·f'(yv)` (`a` the output's gradient, `yv` the output).
    ActivationBackward(Act) { dst: ReadWrite, a: Read, yv: Read }
    /// `softmax_cross_entropy_forward`.
    LossForward(Loss) {
        probs_out: ReadWrite,
        stats: ReadWrite,
        logits: Read,
        labels: Read,
        weights: Read,
    }
    /// `softmax_cross_entropy_backward`.
    LossBackward(Loss) { d_logits: ReadWrite, probs: Read, labels: Read, weights: Read }
    /// `confusion_accumulate`.
    Confusion(Loss) { confusion: ReadWrite, probs: Read, labels: Read }
    /// `optimizer_step`.
    OptimizerStep(Optim) { params: ReadWrite, grads: Read, m: ReadWrite, v: ReadWrite, decay: Read }
    /// `gather_batch`.
    GatherBatch(Gather) {
        x: ReadWrite,
        labels: ReadWrite,
        pixels: Read,
        all_labels: Read,
        order: Read,
    }
    /// `gather_batch_warped`: as [`GatherBatch`], plus each image's warp.
    GatherBatchWarped(Gather) {
        x: ReadWrite,
        labels: ReadWrite,
        pixels: Read,
        all_labels: Read,
        order: Read,
        warp: Read,
    }
    /// `batchnorm_forward_train`.
    BatchnormForwardTrain(Norm) {
        y: ReadWrite,
        saved: ReadWrite,
        running: ReadWrite,
        x: Read,
        params: Read,
    }
    /// `batchnorm_forward_eval`.
    BatchnormForwardEval(Norm) { y: ReadWrite, x: Read, params: Read, running_in: Read }
    /// `batchnorm_backward`.
    BatchnormBackward(Norm) {
        dx: ReadWrite,
        grads: ReadWrite,
        dy: Read,
        x: Read,
        saved_in: Read,
        params: Read,
    }
    /// `dropout_forward` and `dropout_backward`: `dst = mask·src` (scaled).
    Dropout(Drop) { dst: ReadWrite, src: Read }
    /// `globalavgpool_forward`.
    GlobalavgpoolForward(Gap) { y: ReadWrite, x: Read }
    /// `globalavgpool_backward`.
    GlobalavgpoolBackward(Gap) { dx: ReadWrite, dy: Read }
    /// `scale_add`: `acc ← α·acc + β·x`.
    ScaleAdd(Accum) { acc: ReadWrite, x: Read }
}
