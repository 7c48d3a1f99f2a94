//! How large a model this machine can train ([`ModelLimits`]), checked layer by layer while
//! the plan is built (`builder.rs`), with the layer sizes of `shape.rs` in checked arithmetic.

/// Floats the host keeps per parameter while training: the weights, their gradients and
/// Adam's two moments (on the CPU backend the device is the host), the last good and the
/// best weights, and a checkpoint's weights and moments while it is written, with room to
/// spare.
pub const HOST_FLOATS_PER_PARAM: u64 = 12;

/// How large a model a machine can hold, derived from its memory. [`Plan::new`] refuses a
/// model beyond these before it computes or allocates anything of the model's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelLimits {
    /// The most parameters.
    pub max_params: u64,
    /// The most floats one layer may output per image.
    pub max_floats_per_image: u64,
    /// The memory the limits were derived from, in bytes (for messages).
    pub memory_bytes: u64,
}

impl ModelLimits {
    /// The limits of a machine with `bytes` of memory: every parameter with its
    /// [`HOST_FLOATS_PER_PARAM`] copies in it, and one layer's output for one image in a
    /// quarter of it (what the CPU backend lets one buffer take).
    pub fn of_memory(bytes: u64) -> ModelLimits {
        ModelLimits {
            max_params: bytes / (4 * HOST_FLOATS_PER_PARAM),
            max_floats_per_image: bytes / 4 / 4,
            memory_bytes: bytes,
        }
    }

    /// The limits of this machine (of 64 GiB where the OS does not tell its memory).
    pub fn of_machine() -> ModelLimits {
        let bytes = crate::backend::cpu::physical_memory_bytes().unwrap_or(64 << 30);
        ModelLimits::of_memory(bytes)
    }
}

impl ModelLimits {
    /// Checks one layer: `params` the model's parameters up to and including it, `out` its
    /// output floats per image, each `None` when it overflows `usize` (over any limit). At a
    /// batch of `batch` images the plan's shapes must stay far from overflow too.
    pub(super) fn check_layer(
        &self,
        params: Option<usize>,
        out: Option<usize>,
        batch: usize,
    ) -> std::result::Result<(), String> {
        let count =
            |n: Option<usize>| n.map_or(format!("more than {}", usize::MAX), |n| n.to_string());
        if params.is_none_or(|p| p as u64 > self.max_params) {
            return Err(format!(
                "brings the model to {} parameters, over the {} this machine can train ({} MiB \
                 of memory; training keeps about {HOST_FLOATS_PER_PARAM} floats per parameter: \
                 weights, gradients, Adam's moments, checkpoints); use fewer units or filters",
                count(params),
                self.max_params,
                self.memory_bytes >> 20
            ));
        }
        if out.is_none_or(|o| o as u64 > self.max_floats_per_image) {
            let mib = out.map_or(u128::MAX, |o| 4 * o as u128) >> 20;
            return Err(format!(
                "outputs {} floats ({mib} MiB) per image, over the {} MiB one buffer may take on \
                 this machine (a quarter of its {} MiB); use fewer units or filters",
                count(out),
                (4 * u128::from(self.max_floats_per_image)) >> 20,
                self.memory_bytes >> 20
            ));
        }
        let out = out.unwrap_or(usize::MAX);
        if out.checked_mul(batch).is_none_or(|n| n > usize::MAX / 16) {
            return Err(format!(
                "at a batch of {batch} images: {out} floats per image are too many for one \
                 buffer; use a smaller batch"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Activation;
    use crate::error::Result;
    use crate::model::{LayerSpec, ModelSpec, Padding, Plan};
    use crate::shape::NUM_CLASSES;

    /// The size check alone: the plan built against `limits`.
    fn check_sizes(spec: &ModelSpec, batch: usize, limits: &ModelLimits) -> Result<()> {
        Plan::with_limits(spec, batch, limits).map(|_| ())
    }
    #[test]
    fn oversized_layers_are_refused_naming_the_layer_and_the_limit() {
        let gib = ModelLimits::of_memory(1 << 30);
        // 1 GiB trains at most 2^30 / 48 parameters: 22,369,621.
        assert_eq!(gib.max_params, 22_369_621);
        for units in [1_000_000_000, 1 << 63, usize::MAX] {
            let e = check_sizes(&ModelSpec::flat_dense(units), 1, &gib)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("layer 2 (Dense") && e.contains("22369621") && e.contains("1024 MiB"),
                "{e}"
            );
            // On this machine too, before anything is allocated (and without overflow).
            let e = Plan::new(&ModelSpec::flat_dense(units), 1)
                .unwrap_err()
                .to_string();
            assert!(e.contains("layer 2") && e.contains("parameters"), "{e}");
        }
        check_sizes(&ModelSpec::flat_dense(9000), 1, &gib).unwrap();
        // A wide output with few parameters: the per-image output is what is too large.
        let wide = |filters| ModelSpec {
            name: "w".into(),
            layers: vec![
                LayerSpec::Conv2d {
                    filters,
                    kernel: 1,
                    padding: Padding::Valid,
                    activation: Activation::Relu,
                },
                LayerSpec::MaxPool { size: 48 },
                LayerSpec::Flatten,
                LayerSpec::Dense {
                    units: NUM_CLASSES,
                    activation: Activation::Linear,
                },
            ],
        };
        let e = check_sizes(&wide(40_000), 1, &gib).unwrap_err().to_string();
        assert!(
            e.contains("layer 1 (Conv2d") && e.contains("per image") && e.contains("256 MiB"),
            "{e}"
        );
        let e = check_sizes(&wide(1 << 62), 1, &ModelLimits::of_memory(u64::MAX))
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer 1"), "{e}");
        check_sizes(&wide(1000), 1, &gib).unwrap();
        // A batch that would overflow the shapes' arithmetic.
        let e = check_sizes(&wide(1000), usize::MAX / 2, &gib)
            .unwrap_err()
            .to_string();
        assert!(e.contains("smaller batch"), "{e}");
    }
}
