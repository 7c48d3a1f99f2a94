//! A model resolved at a batch size ([`Plan`]): its ops with their shapes, the flat
//! parameter layout, the running statistics' layout, and what a batch needs in memory.

use super::{ModelLimits, ModelSpec};
use crate::backend::{Activation, BatchNorm};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::shape::{
    BatchNormShape, Conv2dShape, DenseShape, GlobalAvgPoolShape, PoolShape, NUM_CLASSES,
};

/// One op of a resolved model, at a given batch size.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A convolution; weight at `params[w_off..]`, bias at `params[b_off..]`.
    Conv {
        /// Shape at the plan's batch size.
        shape: Conv2dShape,
        /// Weight offset in the flat parameter buffer.
        w_off: usize,
        /// Bias offset.
        b_off: usize,
    },
    /// A max pooling.
    Pool {
        /// Shape at the plan's batch size.
        shape: PoolShape,
    },
    /// A dense layer.
    Dense {
        /// Shape at the plan's batch size.
        shape: DenseShape,
        /// Weight offset in the flat parameter buffer.
        w_off: usize,
        /// Bias offset.
        b_off: usize,
    },
    /// An element-wise activation over `len` elements.
    Act {
        /// The function.
        act: Activation,
        /// Elements at the plan's batch size.
        len: usize,
    },
    /// A batch normalisation; γ, β in the parameters, running statistics in the running
    /// buffer, at the offsets of `bn`.
    BatchNorm {
        /// Shape at the plan's batch size.
        shape: BatchNormShape,
        /// Offsets and constants.
        bn: BatchNorm,
    },
    /// A dropout over `len` elements.
    Dropout {
        /// Share dropped, in (0, 1).
        rate: f32,
        /// The layer's index in the model's layer list (part of the mask's key).
        layer: u32,
        /// Elements at the plan's batch size.
        len: usize,
    },
    /// A global average pooling.
    GlobalAvgPool {
        /// Shape at the plan's batch size.
        shape: GlobalAvgPoolShape,
    },
}

impl Op {
    /// Elements of this op's output at the plan's batch size.
    pub fn output_len(&self) -> usize {
        match self {
            Op::Conv { shape, .. } => shape.output_len(),
            Op::Pool { shape } => shape.output_len(),
            Op::Dense { shape, .. } => shape.output_len(),
            Op::Act { len, .. } => *len,
            Op::BatchNorm { shape, .. } => shape.len(),
            Op::Dropout { len, .. } => *len,
            Op::GlobalAvgPool { shape } => shape.output_len(),
        }
    }

    /// The op and its output per image, e.g. `conv 128×46×46` or `dense 64`.
    pub fn describe(&self) -> String {
        match self {
            Op::Conv { shape, .. } => {
                format!("conv {}×{}×{}", shape.out_c, shape.out_h(), shape.out_w())
            }
            Op::Pool { shape } => {
                format!("maxpool {}×{}×{}", shape.c, shape.out_h(), shape.out_w())
            }
            Op::Dense { shape, .. } => format!("dense {}", shape.out_f),
            Op::Act { act, .. } => act.name().to_string(),
            Op::BatchNorm { shape, .. } if shape.hw == 1 => format!("batchnorm {}", shape.c),
            Op::BatchNorm { shape, .. } => format!("batchnorm {}×{}", shape.c, shape.hw),
            Op::Dropout { rate, .. } => format!("dropout {rate}"),
            Op::GlobalAvgPool { shape } => format!("globalavgpool {}", shape.c),
        }
    }

    /// The same op at another batch size.
    pub fn with_batch(&self, batch: usize, old_batch: usize) -> Op {
        match self.clone() {
            Op::Conv {
                shape,
                w_off,
                b_off,
            } => Op::Conv {
                shape: Conv2dShape { batch, ..shape },
                w_off,
                b_off,
            },
            Op::Pool { shape } => Op::Pool {
                shape: PoolShape { batch, ..shape },
            },
            Op::Dense {
                shape,
                w_off,
                b_off,
            } => Op::Dense {
                shape: DenseShape { batch, ..shape },
                w_off,
                b_off,
            },
            Op::Act { act, len } => Op::Act {
                act,
                len: len / old_batch * batch,
            },
            Op::BatchNorm { shape, bn } => Op::BatchNorm {
                shape: BatchNormShape { batch, ..shape },
                bn,
            },
            Op::Dropout { rate, layer, len } => Op::Dropout {
                rate,
                layer,
                len: len / old_batch * batch,
            },
            Op::GlobalAvgPool { shape } => Op::GlobalAvgPool {
                shape: GlobalAvgPoolShape { batch, ..shape },
            },
        }
    }
}

/// One named parameter tensor in the flat buffer, in PyTorch layout.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamTensor {
    /// Name, e.g. `conv1.weight`, `dense2.bias`.
    pub name: String,
    /// Offset in the flat buffer.
    pub offset: usize,
    /// Shape: conv weight `[out, in, kh, kw]`, dense weight `[out, in]`, bias `[out]`.
    pub shape: Vec<usize>,
    /// Glorot-uniform fan-in + fan-out for weights; `None` for biases (initialised to zero).
    pub glorot_fans: Option<(usize, usize)>,
    /// Whether weight decay applies: conv and dense weights yes; biases (and normalisation
    /// parameters) no.
    pub decay: bool,
    /// The initial value of every element when `glorot_fans` is `None`: 0 for biases, batch
    /// norm shifts and running means; 1 for batch norm scales and running variances.
    pub fill: f32,
}

impl ParamTensor {
    /// Elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True for an empty tensor (never, for valid models).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A model resolved at a batch size: its ops with shapes, the flat parameter layout, and the
/// layout of the running statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Batch size the shapes are given at.
    pub batch: usize,
    /// Ops in forward order (activations are ops of their own; Flatten is none).
    pub ops: Vec<Op>,
    /// Parameter tensors in layer order.
    pub params: Vec<ParamTensor>,
    /// Total parameters (length of the flat buffer).
    pub num_params: usize,
    /// Running statistics `(S)` in layer order (`bnN.running_mean`, `bnN.running_var`): a
    /// second flat buffer, kept apart from the parameters because no optimizer (and no
    /// weight decay) may touch it; batch norm updates it in training mode.
    pub running: Vec<ParamTensor>,
    /// Total running statistics (length of the second buffer; 0 without batch norm).
    pub num_running: usize,
}

impl Plan {
    /// Resolves `spec` for input `(batch, 1, 48, 48)`. A layer that does not fit, or whose
    /// size exceeds what this machine can train ([`ModelLimits::of_machine`]), is
    /// [`Error::BadModel`].
    pub fn new(spec: &ModelSpec, batch: usize) -> Result<Plan> {
        Plan::with_limits(spec, batch, &ModelLimits::of_machine())
    }

    /// [`Plan::new`] against `limits`: every layer's size is checked against them as the plan
    /// is built, before anything of the model's size is computed in `usize` or allocated.
    pub fn with_limits(spec: &ModelSpec, batch: usize, limits: &ModelLimits) -> Result<Plan> {
        super::builder::build(spec, batch, limits)
    }

    /// Elements of the logits, `(batch, 7)`.
    pub fn logits_len(&self) -> usize {
        self.batch * NUM_CLASSES
    }

    /// Multiply-adds of one forward pass at the plan's batch size (convs and denses).
    pub fn forward_macs(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Conv { shape, .. } => shape.forward_macs(),
                Op::Dense { shape, .. } => shape.forward_macs(),
                _ => 0,
            })
            .sum()
    }

    /// Floats per image of the largest buffer a [`network::Network`] binds (an op's output,
    /// or the input image), and of all its per-image buffers together (every op's output, the
    /// pooling argmaxes, the two gradient buffers, the input). Plan at any batch size.
    pub fn floats_per_image(&self) -> (usize, usize) {
        let per = |op: &Op| op.output_len() / self.batch;
        let largest = self.ops.iter().map(per).max().unwrap_or(0);
        let outs: usize = self.ops.iter().map(per).sum();
        let argmax: usize = self
            .ops
            .iter()
            .filter(|op| matches!(op, Op::Pool { .. }))
            .map(per)
            .sum();
        let input = crate::shape::IMAGE_PIXELS;
        (
            largest.max(input),
            outs + argmax + 2 * largest + input + NUM_CLASSES,
        )
    }

    /// The largest batch whose buffers fit `limits`: each buffer within the largest one
    /// binding allows, and all of them within half the device's memory where it is known
    /// (the rest is for parameters, optimizer state and the data set). 0 when not even one
    /// image fits.
    pub fn largest_batch(&self, limits: &crate::backend::MemoryLimits) -> usize {
        if !self.params_fit(limits) {
            return 0;
        }
        let (largest, all) = self.floats_per_image();
        let by_buffer = limits.max_buffer_bytes / (4 * largest as u64).max(1);
        let by_total = limits
            .total_bytes
            .map_or(u64::MAX, |t| t / 2 / (4 * all as u64).max(1));
        by_buffer.min(by_total).min(usize::MAX as u64) as usize
    }

    /// The op whose output is the largest buffer per image, as `(index, elements per image)`.
    pub fn largest_op(&self) -> Option<(usize, usize)> {
        self.ops
            .iter()
            .map(|op| op.output_len() / self.batch)
            .enumerate()
            .max_by_key(|&(i, len)| (len, std::cmp::Reverse(i)))
    }

    /// Checks that a batch of `batch` images fits `limits` (see [`Plan::largest_batch`]);
    /// otherwise the error names the largest buffer, the limit, `device` and the largest
    /// batch that fits.
    pub fn check_batch(
        &self,
        batch: usize,
        limits: &crate::backend::MemoryLimits,
        device: &str,
    ) -> Result<()> {
        let fits = self.largest_batch(limits);
        if batch <= fits {
            return Ok(());
        }
        if !self.params_fit(limits) {
            let bytes = 4 * self.num_params as u64;
            return Err(Error::Config(format!(
                "the model's {} parameters do not fit {device}: they take {} MiB, and with \
                 their gradients and Adam's two moments {} MiB, over the {} MiB one buffer may \
                 take there{}; use a smaller model or another device",
                self.num_params,
                bytes >> 20,
                (4 * bytes) >> 20,
                limits.max_buffer_bytes >> 20,
                match limits.total_bytes {
                    Some(t) => format!(" (or half of its {} MiB in all)", t >> 20),
                    None => String::new(),
                }
            )));
        }
        let mib = |floats: usize| (4 * floats * batch) as f64 / (1 << 20) as f64;
        let what = match self.largest_op() {
            Some((i, len)) => format!(
                "the output of layer op {} ({}) would take {:.0} MiB",
                i + 1,
                self.ops[i].describe(),
                mib(len)
            ),
            None => "the buffers would not fit".into(),
        };
        let hint = if fits == 0 {
            "not even one image fits; use a smaller model or another device".to_string()
        } else {
            format!("the largest batch that fits is {fits}")
        };
        Err(Error::Config(format!(
            "--batch-size {batch} does not fit {device}: {what}, over the {} MiB one buffer may \
             take there{}; {hint}",
            limits.max_buffer_bytes >> 20,
            match limits.total_bytes {
                Some(t) => format!(" (or half of its {} MiB in all)", t >> 20),
                None => String::new(),
            }
        )))
    }

    /// Whether some batch norm takes its statistics over a single value per image (after a
    /// dense layer, or over a 1×1 plane): such a layer cannot train on a batch of one image
    /// (its variance would be 0/0), so training batches need at least two.
    pub fn needs_two_per_batch(&self) -> bool {
        self.ops
            .iter()
            .any(|op| matches!(op, Op::BatchNorm { shape, .. } if shape.hw == 1))
    }

    /// The initial running statistics `(S)`: means 0, variances 1 (as PyTorch).
    pub fn init_running(&self) -> Vec<f32> {
        let mut flat = vec![0f32; self.num_running];
        for t in &self.running {
            flat[t.offset..t.offset + t.len()].fill(t.fill);
        }
        flat
    }

    /// Whether the parameter buffer fits one buffer of `limits`, and it with its gradients
    /// and Adam's two moments half the device's memory where that is known.
    fn params_fit(&self, limits: &crate::backend::MemoryLimits) -> bool {
        let bytes = 4 * self.num_params as u64;
        bytes <= limits.max_buffer_bytes && limits.total_bytes.is_none_or(|t| 4 * bytes <= t / 2)
    }

    /// Per-parameter weight-decay factors `(P)`: 1 where [`ParamTensor::decay`], else 0.
    pub fn decay_mask(&self) -> Vec<f32> {
        let mut mask = vec![0f32; self.num_params];
        for t in self.params.iter().filter(|t| t.decay) {
            mask[t.offset..t.offset + t.len()].fill(1.0);
        }
        mask
    }

    /// Keras-style initial parameters: Glorot-uniform weights, zero biases, from `seed`;
    /// batch norm scales 1 and shifts 0 (as PyTorch).
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut flat = vec![0f32; self.num_params];
        for t in &self.params {
            let values = &mut flat[t.offset..t.offset + t.len()];
            match t.glorot_fans {
                Some((fan_in, fan_out)) => {
                    let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
                    for w in values {
                        *w = rng.range(-limit, limit);
                    }
                }
                None => values.fill(t.fill),
            }
        }
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LayerSpec, Padding};

    #[test]
    fn seed_cnn_has_the_notebooks_parameter_count() {
        let plan = Plan::new(&ModelSpec::cnn(Activation::Relu, Activation::Selu), 1).unwrap();
        // Keras summary: conv 1,280 + 147,584 + 73,792 + 36,928; dense 16,448 + 455.
        assert_eq!(
            plan.num_params,
            1280 + 147_584 + 73_792 + 36_928 + 16_448 + 455
        );
        let mlp = Plan::new(&ModelSpec::mlp(Activation::Relu), 1).unwrap();
        assert_eq!(
            mlp.num_params,
            2304 * 120 + 120 + 120 * 84 + 84 + 84 * 7 + 7
        );
    }

    #[test]
    fn bad_models_are_errors_not_panics() {
        let spec = |layers| ModelSpec {
            name: "x".into(),
            layers,
        };
        let dense7 = LayerSpec::Dense {
            units: 7,
            activation: Activation::Linear,
        };
        assert!(Plan::new(&spec(vec![dense7.clone()]), 1).is_err()); // no flatten
        assert!(Plan::new(&spec(vec![LayerSpec::Flatten]), 1).is_err()); // wrong last layer
        let big = LayerSpec::Conv2d {
            filters: 1,
            kernel: 49,
            padding: Padding::Valid,
            activation: Activation::Relu,
        };
        assert!(Plan::new(&spec(vec![big, LayerSpec::Flatten, dense7]), 1).is_err());
    }

    #[test]
    fn parameters_that_do_not_fit_the_device_are_named_with_its_limit() {
        use crate::backend::MemoryLimits;
        let plan = Plan::new(&ModelSpec::flat_dense(1000), 1).unwrap();
        let small = MemoryLimits {
            max_buffer_bytes: 4 << 20,
            total_bytes: None,
        };
        // 2,312,007 parameters take 8 MiB: over one 4 MiB buffer.
        assert_eq!(plan.largest_batch(&small), 0);
        let e = plan
            .check_batch(1, &small, "tiny GPU")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2312007 parameters do not fit tiny GPU") && e.contains("4 MiB"),
            "{e}"
        );
        let half = MemoryLimits {
            max_buffer_bytes: u64::MAX,
            total_bytes: Some(60 << 20),
        };
        assert_eq!(plan.largest_batch(&half), 0, "4 × 8.8 MiB is over 30 MiB");
    }

    #[test]
    fn shape_messages_say_what_is_wrong() {
        let conv = |filters, kernel| ModelSpec {
            name: "c".into(),
            layers: vec![
                LayerSpec::Conv2d {
                    filters,
                    kernel,
                    padding: Padding::Valid,
                    activation: Activation::Relu,
                },
                LayerSpec::Flatten,
                LayerSpec::Dense {
                    units: NUM_CLASSES,
                    activation: Activation::Linear,
                },
            ],
        };
        let msg = |spec| Plan::new(&spec, 1).unwrap_err().to_string();
        assert!(msg(conv(0, 3)).contains("at least 1 filter"));
        assert!(msg(conv(4, 0)).contains("kernel side must be at least 1"));
        assert!(msg(conv(4, 49)).contains("kernel 49×49 is larger than its 48×48 input"));
    }

    #[test]
    fn the_largest_batch_follows_the_largest_buffer_and_the_memory() {
        use crate::backend::MemoryLimits;
        let plan = Plan::new(&ModelSpec::cnn(Activation::Relu, Activation::Selu), 1).unwrap();
        // conv1's output, 128×46×46 floats, is the largest buffer per image.
        assert_eq!(plan.floats_per_image().0, 128 * 46 * 46);
        let lavapipe = MemoryLimits {
            max_buffer_bytes: 128 << 20,
            total_bytes: None,
        };
        assert_eq!(plan.largest_batch(&lavapipe), 123);
        assert!(plan.check_batch(123, &lavapipe, "lavapipe").is_ok());
        let e = plan
            .check_batch(124, &lavapipe, "lavapipe")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--batch-size 124") && e.contains("largest batch that fits is 123"),
            "{e}"
        );
        let small_machine = MemoryLimits {
            max_buffer_bytes: u64::MAX,
            total_bytes: Some(64 << 20),
        };
        let (_, all) = plan.floats_per_image();
        assert_eq!(plan.largest_batch(&small_machine), (32 << 20) / (4 * all));
    }
}
