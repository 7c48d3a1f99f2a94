//! Compiling a plain loop once per instruction set.
//!
//! The crate is built for the baseline x86-64 target (SSE2), where the element-wise and
//! reduction loops of batch norm and the activations get 4-lane (2 for `f64`) vectors.
//! [`multiversion_fn!`] compiles a function's body three times — for AVX-512, for AVX2 +
//! FMA, and for the baseline — and picks at run time the one the CPU can run, so the same
//! loops get 16-lane (8 for `f64`) vectors on an AVX-512 machine. The body is the same
//! source in every copy: what it computes, and in which order it adds, does not change with
//! the instruction set (Rust never fuses a multiply and an add unless asked to).

/// Defines `fn $name(args…) -> R` that runs `$body` compiled for the best instruction set
/// [`super::Isa::detect`] finds.
macro_rules! multiversion_fn {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($p:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($p: $t),*) $(-> $r)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($p: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512($($p: $t),*) $(-> $r)? {
                body($($p),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2($($p: $t),*) $(-> $r)? {
                body($($p),*)
            }
            match $crate::backend::cpu::Isa::detect() {
                // SAFETY: `Isa::detect` found these features on this CPU.
                #[cfg(target_arch = "x86_64")]
                $crate::backend::cpu::Isa::Avx512 => unsafe { avx512($($p),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                $crate::backend::cpu::Isa::Avx2 => unsafe { avx2($($p),*) },
                _ => body($($p),*),
            }
        }
    };
}
pub(crate) use multiversion_fn;
