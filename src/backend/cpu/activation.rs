//! Element-wise activations and their derivatives (`shaders/activation.wgsl`), in chunks
//! of [`CHUNK`] elements per parallel task. Each chunk's loop is compiled per instruction
//! set ([`multiversion_fn!`]), relu written out so that it vectorises.

use super::simd::multiversion_fn;
use super::CHUNK;
use crate::backend::Activation;
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// An activation applied in a convolution's epilogue. A `watched` one leaves a value that is
/// not finite as it is (NaN and ±∞ pass unchanged; every finite value gets `act`), so that a
/// watch over the output still sees what the activation would have dropped (ReLU turns NaN
/// and −∞ into 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fused {
    /// The activation.
    pub act: Activation,
    /// Whether values that are not finite pass unchanged.
    pub watched: bool,
}

impl Fused {
    /// `act` for finite values and for every value when not `watched`.
    pub fn plain(act: Activation) -> Fused {
        Fused {
            act,
            watched: false,
        }
    }

    /// `act(v)`, or `v` when watched and `v` is not finite.
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        if self.watched && !v.is_finite() {
            return v;
        }
        match self.act {
            Activation::Linear => v,
            Activation::Relu => v.max(0.0),
            a => a.apply(v),
        }
    }
}

/// Per image of a batch, whether a watched op's output holds a value that is not finite;
/// each worker sets its own images'.
pub type BadImages<'a> = Option<&'a [AtomicBool]>;

/// Marks image `img` in `bad` when `out` (its output) holds a value that is not finite.
pub(super) fn watch_image(bad: BadImages<'_>, img: usize, out: &[f32]) {
    if let Some(bad) = bad {
        if !all_finite(out) {
            bad[img].store(true, Ordering::Relaxed);
        }
    }
}

/// `act` on each of 16 lanes, the activation chosen once for all of them (a watched ReLU
/// keeps the values that are not finite, as [`Fused::apply`]).
#[inline(always)]
pub(super) fn act_lanes(v: &mut [f32; 16], act: Option<Fused>) {
    match act {
        None => {}
        Some(Fused {
            act: Activation::Relu,
            watched,
        }) => v.iter_mut().for_each(|x| {
            let r = x.max(0.0);
            *x = if watched && !x.is_finite() { *x } else { r };
        }),
        Some(a) => v.iter_mut().for_each(|x| *x = a.apply(*x)),
    }
}

/// Lanes of [`all_finite`]'s partial sums.
const WATCH_LANES: usize = 64;

multiversion_fn! {
    /// Whether every value of `v` is finite: `x·0` is 0 for those and NaN for the others,
    /// so a sum of them (in [`WATCH_LANES`] partial sums, which vectorise) is 0 or NaN.
    fn all_finite(v: &[f32]) -> bool {
        let mut acc = [0.0f32; WATCH_LANES];
        let chunks = v.chunks_exact(WATCH_LANES);
        let tail: f32 = chunks.remainder().iter().map(|x| x * 0.0).sum();
        for c in chunks {
            for l in 0..WATCH_LANES {
                acc[l] += c[l] * 0.0;
            }
        }
        acc.iter().sum::<f32>() + tail == 0.0
    }
}

/// `out[i] = act(input[i])` for `i < len`.
pub fn activation_forward(out: &mut [f32], input: &[f32], act: Activation, len: usize) {
    out[..len]
        .par_chunks_mut(CHUNK)
        .zip(input[..len].par_chunks(CHUNK))
        .for_each(|(o, x)| forward_chunk(o, x, act));
}

multiversion_fn! {
    /// One chunk of [`activation_forward`].
    fn forward_chunk(o: &mut [f32], x: &[f32], act: Activation) {
        match act {
            Activation::Relu => o.iter_mut().zip(x).for_each(|(o, &x)| *o = x.max(0.0)),
            _ => o.iter_mut().zip(x).for_each(|(o, &x)| *o = act.apply(x)),
        }
    }
}

/// `d_input[i] = d_out[i]·act'(y[i])` for `i < len`, the derivative taken from the output.
pub fn activation_backward(
    d_input: &mut [f32],
    d_out: &[f32],
    y: &[f32],
    act: Activation,
    len: usize,
) {
    d_input[..len]
        .par_chunks_mut(CHUNK)
        .zip(d_out[..len].par_chunks(CHUNK))
        .zip(y[..len].par_chunks(CHUNK))
        .for_each(|((d, g), y)| backward_chunk(d, g, y, act));
}

multiversion_fn! {
    /// One chunk of [`activation_backward`]; relu's derivative is 1 where `y > 0`, so the
    /// product is `g` or `g·0` (which keeps the sign of a zero and NaN as the definition
    /// does).
    pub(super) fn backward_chunk(d: &mut [f32], g: &[f32], y: &[f32], act: Activation) {
        let each = d.iter_mut().zip(g).zip(y);
        match act {
            Activation::Relu => each.for_each(|((d, &g), &y)| {
                *d = g * if y > 0.0 { 1.0 } else { 0.0 };
            }),
            _ => each.for_each(|((d, &g), &y)| *d = g * act.derivative_from_output(y)),
        }
    }
}
