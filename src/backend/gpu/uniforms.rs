//! Every shader's uniform parameters as a `#[repr(C)]` Pod struct that mirrors its WGSL struct
//! field for field: same name, same field names in the same order, `f32` fields as `f32`,
//! padding spelled out. The recorder copies the struct's bytes into the dispatch's uniform
//! slot as they are.
//!
//! [`Uniform`] lists each struct's fields with their `offset_of!` offsets and names the WGSL
//! struct it mirrors; `tests/shaders_valid.rs` compares that list with naga's layout of the
//! WGSL struct in every file whose kernels declare it (`kernels.rs`), by size, member names,
//! offsets and scalar types, so a field added on one side only fails the test. What each field means is documented once, in the shader's struct.

use std::mem::{offset_of, size_of};

/// A Rust mirror of one WGSL uniform struct (declared alike in each file that binds it).
pub trait Uniform: bytemuck::Pod {
    /// Where the WGSL struct is declared and how this struct lays it out.
    const LAYOUT: UniformLayout;
}

/// What [`Uniform`] says about one struct, for the layout test.
#[derive(Clone, Copy, Debug)]
pub struct UniformLayout {
    /// Name of the WGSL struct (and of the Rust struct).
    pub name: &'static str,
    /// `size_of` the Rust struct in bytes.
    pub size: usize,
    /// `(field name, byte offset, scalar type)` of every field, in declaration order.
    pub fields: &'static [(&'static str, usize, &'static str)],
}

/// Declares a uniform struct (fields `u32` or `f32`, visible to the crate's launch builders)
/// and its [`Uniform`] impl, so the field list the layout test reads is the struct itself.
macro_rules! uniform {
    (
        $(#[$doc:meta])*
        $name:ident {
            $($field:ident: $ty:ident),* $(,)?
        }
    ) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $(pub(crate) $field: $ty),*
        }

        impl Uniform for $name {
            const LAYOUT: UniformLayout = UniformLayout {
                name: stringify!($name),
                size: size_of::<$name>(),
                fields: &[$((stringify!($field), offset_of!($name, $field), stringify!($ty))),*],
            };
        }
    };
}

uniform! {
    /// `conv2d.wgsl` `Conv`: shapes, parameter offsets, split-K and tiling of the three
    /// convolution GEMMs and the split-K reduction.
    Conv {
        batch: u32,
        in_c: u32,
        in_h: u32,
        in_w: u32,
        out_c: u32,
        out_h: u32,
        out_w: u32,
        k: u32,
        w_off: u32,
        b_off: u32,
        splits: u32,
        chunk: u32,
        tiles_m: u32,
        tiles_n: u32,
        n_tiles: u32,
        pad: u32,
        act: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

uniform! {
    /// `maxpool.wgsl` `Pool`: the pooling shape.
    Pool {
        batch: u32,
        c: u32,
        in_h: u32,
        in_w: u32,
        size: u32,
        out_h: u32,
        out_w: u32,
        _pad: u32,
    }
}

uniform! {
    /// `dense.wgsl` `Mm`: `C[m, n] = Σ_k A[m, k]·B[k, n]` with the strides and offsets of one
    /// dense entry point, and its tiling.
    Mm {
        m: u32,
        n: u32,
        k: u32,
        ones_col: u32,
        a_off: u32,
        a_sm: u32,
        a_sk: u32,
        b_off: u32,
        b_sk: u32,
        b_sn: u32,
        c_off: u32,
        c_sm: u32,
        bias_off: u32,
        bias_dst: u32,
        tiles_n: u32,
        n_tiles: u32,
    }
}

uniform! {
    /// `activation.wgsl` `Act`: element count and [`crate::backend::Activation::code`].
    Act {
        len: u32,
        code: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

uniform! {
    /// `softmax_xent.wgsl` `Loss`: batch, class count and label smoothing.
    Loss {
        batch: u32,
        classes: u32,
        smoothing: f32,
        _pad: u32,
    }
}

uniform! {
    /// `optimizer.wgsl` `Optim`: the parameter count and one step's scalars
    /// ([`crate::backend::OptimizerStep`]).
    Optim {
        len: u32,
        kind: u32,
        nesterov: u32,
        _pad0: u32,
        lr: f32,
        weight_decay: f32,
        lr_decay: f32,
        momentum: f32,
        beta1: f32,
        one_minus_beta1: f32,
        beta2: f32,
        one_minus_beta2: f32,
        eps: f32,
        step_size: f32,
        bias2_sqrt: f32,
        _pad1: u32,
    }
}

uniform! {
    /// `data.wgsl` `Gather`: which entries of the order to gather, and the image size.
    Gather {
        batch: u32,
        offset: u32,
        pixels: u32,
        side: u32,
    }
}

uniform! {
    /// `batchnorm.wgsl` `Norm`: the shape `(batch, c, hw)`, where γ, β and the running
    /// statistics are, and the layer's constants ([`crate::backend::BatchNorm`]).
    Norm {
        batch: u32,
        c: u32,
        hw: u32,
        w_off: u32,
        b_off: u32,
        mean_off: u32,
        var_off: u32,
        momentum: f32,
        eps: f32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

uniform! {
    /// `dropout.wgsl` `Drop`: element count, keep threshold, scale and the mask's key
    /// ([`crate::backend::Dropout`]).
    Drop {
        len: u32,
        threshold: u32,
        scale: f32,
        layer: u32,
        step_lo: u32,
        step_hi: u32,
        seed_lo: u32,
        seed_hi: u32,
    }
}

uniform! {
    /// `globalavgpool.wgsl` `Gap`: the shape `(batch, c, hw)`.
    Gap {
        batch: u32,
        c: u32,
        hw: u32,
        _pad: u32,
    }
}

uniform! {
    /// `accumulate.wgsl` `Accum`: element count and the two scales of `acc ← α·acc + β·x`.
    Accum {
        len: u32,
        _pad: u32,
        alpha: f32,
        beta: f32,
    }
}
