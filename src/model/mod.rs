//! Models: layer lists ([`ModelSpec`]), the notebook's presets and the modern ones (`vgg`,
//! `compact`), and the resolved [`Plan`] (every op's shape, every parameter's offset in the
//! one flat parameter buffer, and every running statistic's offset in the second, untrained
//! buffer).
//!
//! The network itself ([`network::Network`]) is generic over the backend.

pub mod network;

use crate::backend::{Activation, BatchNorm};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::shape::{
    BatchNormShape, Conv2dShape, DenseShape, GlobalAvgPoolShape, PoolShape, IMAGE_SIDE, NUM_CLASSES,
};
use std::path::Path;

/// One layer of a model description. The input is always `(1, 48, 48)`; the last layer must
/// be a Dense with 7 units and no activation (softmax is part of the loss).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum LayerSpec {
    /// 2-D convolution, `kernel`×`kernel`, stride 1, zero `padding`, then `activation`.
    Conv2d {
        /// Output channels.
        filters: usize,
        /// Kernel side (default 3).
        #[serde(default = "default_kernel")]
        kernel: usize,
        /// Zero padding (default valid: none); left out of the JSON when valid, so models
        /// without padding read and write as before.
        #[serde(default, skip_serializing_if = "Padding::is_valid")]
        padding: Padding,
        /// Activation after the convolution (default relu).
        #[serde(default = "default_activation")]
        activation: Activation,
    },
    /// Max pooling with a `size`×`size` window and stride (default 2).
    #[serde(alias = "maxpool2d")]
    MaxPool {
        /// Window side and stride.
        #[serde(default = "default_pool")]
        size: usize,
    },
    /// Flattens `(C, H, W)` to `C·H·W` features in channel, row, column order (a no-op on
    /// NCHW buffers).
    Flatten,
    /// Fully connected layer, then `activation`.
    Dense {
        /// Output features.
        units: usize,
        /// Activation after the layer (default linear).
        #[serde(default = "default_linear")]
        activation: Activation,
    },
    /// Batch normalisation: over each channel of a `(C, H, W)` input (PyTorch's
    /// `BatchNorm2d`), or each feature of a flat one (`BatchNorm1d`). Training normalises
    /// with the batch's statistics and keeps running ones; evaluation uses the running ones.
    BatchNorm {
        /// Weight of each batch's statistics in the running ones (default 0.1, as PyTorch).
        #[serde(default = "default_momentum")]
        momentum: f32,
        /// Added to the variance before its square root (default 1e-5, as PyTorch).
        #[serde(default = "default_eps")]
        eps: f32,
    },
    /// Dropout: during training each value is zeroed with probability `rate` and the others
    /// are scaled by `1/(1 − rate)`; evaluation passes everything through.
    Dropout {
        /// Share of values dropped, in [0, 1) (default 0.5, as PyTorch).
        #[serde(default = "default_rate")]
        rate: f32,
    },
    /// An activation function as a layer of its own (e.g. after a batch norm).
    Activation {
        /// The function.
        activation: Activation,
    },
    /// Global average pooling: `(C, H, W)` → `C` features, each the mean of its channel.
    GlobalAvgPool,
}

/// Zero padding of a convolution's input, on every side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Padding {
    /// None (`"valid"`): the output shrinks by `kernel − 1`.
    #[default]
    Valid,
    /// `kernel / 2` pixels (`"same"`): the output keeps the input's size; odd kernels only.
    Same,
    /// This many pixels (a number), fewer than the kernel's side.
    Pixels(usize),
}

impl Padding {
    /// True for [`Padding::Valid`].
    pub fn is_valid(&self) -> bool {
        *self == Padding::Valid
    }

    /// Pixels added on each side for a `k`×`k` kernel; an error for `same` with an even
    /// kernel, or a padding at least as wide as the kernel.
    pub fn pixels(self, k: usize) -> std::result::Result<usize, String> {
        match self {
            Padding::Valid => Ok(0),
            Padding::Same if k % 2 == 1 => Ok(k / 2),
            Padding::Same => Err(format!(
                "padding \"same\" needs an odd kernel (kernel / 2 zeros on each side keep the \
                 size only then), not {k}; use an odd kernel or a number of pixels"
            )),
            Padding::Pixels(n) if n < k => Ok(n),
            Padding::Pixels(n) => Err(format!(
                "padding {n} is not smaller than the kernel {k} (the outer outputs would see \
                 nothing but zeros)"
            )),
        }
    }
}

impl serde::Serialize for Padding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Padding::Valid => s.serialize_str("valid"),
            Padding::Same => s.serialize_str("same"),
            Padding::Pixels(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Padding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Pixels(u64),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("padding must be \"valid\", \"same\" or a number of pixels")
        })? {
            Raw::Name(n) if n == "valid" => Ok(Padding::Valid),
            Raw::Name(n) if n == "same" => Ok(Padding::Same),
            Raw::Name(n) => Err(serde::de::Error::custom(format!(
                "padding \"{n}\": expected \"valid\", \"same\" or a number of pixels"
            ))),
            Raw::Pixels(n) => Ok(Padding::Pixels(n as usize)),
        }
    }
}

fn default_kernel() -> usize {
    3
}
fn default_pool() -> usize {
    2
}
fn default_activation() -> Activation {
    Activation::Relu
}
fn default_linear() -> Activation {
    Activation::Linear
}
fn default_momentum() -> f32 {
    0.1
}
fn default_eps() -> f32 {
    1e-5
}
fn default_rate() -> f32 {
    0.5
}

/// A model: a name and a layer list. Stored in checkpoint metadata as JSON.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    /// A short name (`mlp`, `cnn`, or the model file's).
    pub name: String,
    /// The layers, input first.
    pub layers: Vec<LayerSpec>,
}

impl ModelSpec {
    /// The notebook's MLP: Flatten, Dense 120, Dense 84 (hidden activation `act`), Dense 7.
    pub fn mlp(act: Activation) -> ModelSpec {
        ModelSpec {
            name: "mlp".into(),
            layers: vec![
                LayerSpec::Flatten,
                LayerSpec::Dense {
                    units: 120,
                    activation: act,
                },
                LayerSpec::Dense {
                    units: 84,
                    activation: act,
                },
                LayerSpec::Dense {
                    units: NUM_CLASSES,
                    activation: Activation::Linear,
                },
            ],
        }
    }

    /// The notebook's CNN: Conv 128, pool, Conv 128, pool, Conv 64, pool, Conv 64 (all 3×3,
    /// activation `act`), Flatten, Dense 64 (`dense_act`; the notebook used selu), Dense 7.
    pub fn cnn(act: Activation, dense_act: Activation) -> ModelSpec {
        let conv = |filters| LayerSpec::Conv2d {
            filters,
            kernel: 3,
            padding: Padding::Valid,
            activation: act,
        };
        let pool = LayerSpec::MaxPool { size: 2 };
        ModelSpec {
            name: "cnn".into(),
            layers: vec![
                conv(128),
                pool.clone(),
                conv(128),
                pool.clone(),
                conv(64),
                pool,
                conv(64),
                LayerSpec::Flatten,
                LayerSpec::Dense {
                    units: 64,
                    activation: dense_act,
                },
                LayerSpec::Dense {
                    units: NUM_CLASSES,
                    activation: Activation::Linear,
                },
            ],
        }
    }

    /// Khaireddin & Chen's VGG variant for FER2013 (2021), adapted to 48×48: four stages of
    /// [conv 3×3 same → batch norm → `act`] × 2 with 64, 128, 256, 512 channels, each stage
    /// ending in a 2×2 max pool (48 → 24 → 12 → 6 → 3), then Flatten (512·3·3), Dense 4096,
    /// `act`, dropout 0.5, Dense 4096, `act`, dropout 0.5, Dense 7.
    pub fn vgg(act: Activation) -> ModelSpec {
        ModelSpec {
            name: "vgg".into(),
            layers: bn_stages(&[64, 128, 256, 512], act)
                .into_iter()
                .chain([
                    LayerSpec::Flatten,
                    dense(4096, act),
                    LayerSpec::Dropout { rate: 0.5 },
                    dense(4096, act),
                    LayerSpec::Dropout { rate: 0.5 },
                    dense(NUM_CLASSES, Activation::Linear),
                ])
                .collect(),
        }
    }

    /// A small batch-normalised network for CPUs and small GPUs: four stages of
    /// [conv 3×3 same → batch norm → `act`] × 2 with 32, 64, 128, 256 channels, each stage
    /// ending in a 2×2 max pool, then Flatten (256·3·3), Dense 256 → batch norm → `act` →
    /// dropout 0.5 → Dense 7. About 120 M multiply-adds per image.
    pub fn compact(act: Activation) -> ModelSpec {
        ModelSpec {
            name: "compact".into(),
            layers: bn_stages(&[32, 64, 128, 256], act)
                .into_iter()
                .chain([
                    LayerSpec::Flatten,
                    dense(256, Activation::Linear),
                    batch_norm(),
                    LayerSpec::Activation { activation: act },
                    LayerSpec::Dropout { rate: 0.5 },
                    dense(NUM_CLASSES, Activation::Linear),
                ])
                .collect(),
        }
    }

    /// A preset by name (`mlp`, `cnn`, `vgg`, `compact`), or a model file (`.json` or
    /// `.toml`) with a `layers` list such as `[[layers]] type = "conv2d"  filters = 32`.
    /// `act` is the hidden activation of every preset; `dense_act` the CNN's Dense 64's.
    pub fn resolve(name_or_path: &str, act: Activation, dense_act: Activation) -> Result<Self> {
        match name_or_path {
            "mlp" => Ok(ModelSpec::mlp(act)),
            "cnn" => Ok(ModelSpec::cnn(act, dense_act)),
            "vgg" => Ok(ModelSpec::vgg(act)),
            "compact" => Ok(ModelSpec::compact(act)),
            path if !Path::new(path).exists() => Err(Error::BadModel(format!(
                "--model {path}: not a preset (mlp, cnn, vgg, compact) and no such model file (a .json or \
                 .toml layer list)"
            ))),
            path => ModelSpec::from_file(Path::new(path)),
        }
    }

    /// Reads a model file (JSON or TOML by extension) and validates it.
    pub fn from_file(path: &Path) -> Result<ModelSpec> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |e: String| Error::BadModel(format!("{}: {e}", path.display()));
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            name: Option<String>,
            layers: Vec<LayerSpec>,
        }
        let file: File = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| bad(e.to_string()))?
        } else {
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?
        };
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let spec = ModelSpec {
            name: file.name.or(stem).unwrap_or_else(|| "custom".into()),
            layers: file.layers,
        };
        Plan::new(&spec, 1).map_err(|e| match e {
            Error::BadModel(problem) => bad(problem),
            other => other,
        })?;
        Ok(spec)
    }
}

/// A dense layer of `units` with activation `act`.
fn dense(units: usize, act: Activation) -> LayerSpec {
    LayerSpec::Dense {
        units,
        activation: act,
    }
}

/// A batch norm with PyTorch's momentum and eps.
fn batch_norm() -> LayerSpec {
    LayerSpec::BatchNorm {
        momentum: default_momentum(),
        eps: default_eps(),
    }
}

/// VGG-style stages: per entry of `channels`, [conv 3×3 same (no activation) → batch norm →
/// `act`] twice, then a 2×2 max pool.
fn bn_stages(channels: &[usize], act: Activation) -> Vec<LayerSpec> {
    let block = |filters| {
        [
            LayerSpec::Conv2d {
                filters,
                kernel: 3,
                padding: Padding::Same,
                activation: Activation::Linear,
            },
            batch_norm(),
            LayerSpec::Activation { activation: act },
        ]
    };
    channels
        .iter()
        .flat_map(|&c| {
            block(c)
                .into_iter()
                .chain(block(c))
                .chain([LayerSpec::MaxPool { size: 2 }])
        })
        .collect()
}

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
    /// Resolves `spec` for input `(batch, 1, 48, 48)`. A layer that does not fit is
    /// [`Error::BadModel`].
    pub fn new(spec: &ModelSpec, batch: usize) -> Result<Plan> {
        assert!(batch > 0);
        check_sizes(spec, batch, &ModelLimits::of_machine())?;
        let plan = Plan {
            batch,
            ops: vec![],
            params: vec![],
            num_params: 0,
            running: vec![],
            num_running: 0,
        };
        let mut b = PlanBuilder {
            batch,
            chw: (1, IMAGE_SIDE, IMAGE_SIDE),
            flat: None,
            plan,
        };
        let (mut convs, mut denses, mut norms) = (0, 0, 0);
        for (i, layer) in spec.layers.iter().enumerate() {
            let at = |m: String| Error::BadModel(format!("layer {} ({layer:?}): {m}", i + 1));
            match *layer {
                LayerSpec::Conv2d {
                    filters,
                    kernel,
                    padding,
                    activation,
                } => {
                    convs += 1;
                    let pad = padding.pixels(kernel).map_err(at)?;
                    b.conv(filters, kernel, pad, activation, convs)
                        .map_err(at)?
                }
                LayerSpec::MaxPool { size } => b.pool(size).map_err(at)?,
                LayerSpec::Flatten => b.flatten(),
                LayerSpec::Dense { units, activation } => {
                    denses += 1;
                    b.dense(units, activation, denses).map_err(at)?
                }
                LayerSpec::BatchNorm { momentum, eps } => {
                    norms += 1;
                    b.batch_norm(momentum, eps, norms).map_err(at)?
                }
                LayerSpec::Dropout { rate } => b.dropout(rate, i).map_err(at)?,
                LayerSpec::Activation { activation } => {
                    let len = b.features() * batch;
                    b.act(activation, len)
                }
                LayerSpec::GlobalAvgPool => b.global_avg_pool().map_err(at)?,
            }
        }
        match spec.layers.last() {
            Some(LayerSpec::Dense {
                units: NUM_CLASSES,
                activation: Activation::Linear,
            }) => Ok(b.plan),
            _ => Err(Error::BadModel(format!(
                "the last layer must be Dense with {NUM_CLASSES} units and activation linear \
                 (softmax belongs to the loss)"
            ))),
        }
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

/// Checks that every layer's parameters and output fit `limits`, before any size of the
/// model is computed in `usize` or allocated: a model file or checkpoint asking for
/// `units = 1000000000` is refused here, naming the layer and the limit, instead of
/// overflowing or asking the allocator for terabytes. The arithmetic saturates in `u128`, so
/// no layer's numbers can overflow it. Shapes that do not fit (a kernel larger than its
/// input, a Dense without Flatten) stop the check and are left to the plan builder's
/// messages.
fn check_sizes(spec: &ModelSpec, batch: usize, limits: &ModelLimits) -> Result<()> {
    let side = IMAGE_SIDE as u128;
    let (mut c, mut h, mut w) = (1u128, side, side);
    let mut flat: Option<u128> = None;
    let mut params = 0u128;
    let mib = |bytes: u128| bytes >> 20;
    for (i, layer) in spec.layers.iter().enumerate() {
        // (parameters, output floats per image) of this layer.
        let (layer_params, out) = match *layer {
            LayerSpec::Conv2d {
                filters,
                kernel,
                padding,
                ..
            } => {
                let (f, k) = (filters as u128, kernel as u128);
                let Ok(pad) = padding.pixels(kernel) else {
                    return Ok(()); // the plan names the problem
                };
                let (ph, pw) = (h + 2 * pad as u128, w + 2 * pad as u128);
                if flat.is_some() || f == 0 || k == 0 || k > ph || k > pw {
                    return Ok(());
                }
                let weights = f.saturating_mul(c).saturating_mul(k * k);
                (c, h, w) = (f, ph - k + 1, pw - k + 1);
                (weights.saturating_add(f), f.saturating_mul(h * w))
            }
            // Per channel (or feature): a scale and a shift; the output keeps the shape.
            LayerSpec::BatchNorm { .. } => {
                let n = flat.unwrap_or(c);
                (n.saturating_mul(2), flat.unwrap_or(c.saturating_mul(h * w)))
            }
            LayerSpec::Dropout { .. } | LayerSpec::Activation { .. } => {
                (0, flat.unwrap_or(c.saturating_mul(h * w)))
            }
            LayerSpec::GlobalAvgPool => {
                if flat.is_some() {
                    return Ok(());
                }
                flat = Some(c);
                (0, c)
            }
            LayerSpec::MaxPool { size } => {
                let s = size as u128;
                if flat.is_some() || s == 0 || s > h || s > w {
                    return Ok(());
                }
                (h, w) = (h / s, w / s);
                (0, c.saturating_mul(h * w))
            }
            LayerSpec::Flatten => {
                let n = flat.unwrap_or(c.saturating_mul(h * w));
                flat = Some(n);
                (0, n)
            }
            LayerSpec::Dense { units, .. } => {
                let (Some(inputs), u) = (flat, units as u128) else {
                    return Ok(());
                };
                flat = Some(u);
                (u.saturating_mul(inputs).saturating_add(u), u)
            }
        };
        let at = || format!("layer {} ({layer:?})", i + 1);
        params = params.saturating_add(layer_params);
        if params > u128::from(limits.max_params) {
            return Err(Error::BadModel(format!(
                "{} brings the model to {params} parameters, over the {} this machine can \
                 train ({} MiB of memory; training keeps about {HOST_FLOATS_PER_PARAM} floats \
                 per parameter: weights, gradients, Adam's moments, checkpoints); use fewer \
                 units or filters",
                at(),
                limits.max_params,
                limits.memory_bytes >> 20
            )));
        }
        if out > u128::from(limits.max_floats_per_image) {
            return Err(Error::BadModel(format!(
                "{} outputs {out} floats ({} MiB) per image, over the {} MiB one buffer may \
                 take on this machine (a quarter of its {} MiB); use fewer units or filters",
                at(),
                mib(4 * out),
                mib(4 * u128::from(limits.max_floats_per_image)),
                limits.memory_bytes >> 20
            )));
        }
        // The plan's shapes are in `usize` at `batch` images; keep them far from overflow.
        if out.saturating_mul(batch as u128) > (usize::MAX / 16) as u128 {
            return Err(Error::BadModel(format!(
                "{} at a batch of {batch} images: {out} floats per image are too many for one \
                 buffer; use a smaller batch",
                at()
            )));
        }
    }
    Ok(())
}

/// Walks a layer list tracking the current `(C, H, W)` (or flat feature count).
struct PlanBuilder {
    batch: usize,
    chw: (usize, usize, usize),
    flat: Option<usize>,
    plan: Plan,
}

impl PlanBuilder {
    fn plan(&mut self) -> &mut Plan {
        &mut self.plan
    }

    fn add_param(
        &mut self,
        name: String,
        shape: Vec<usize>,
        fans: Option<(usize, usize)>,
    ) -> usize {
        let plan = self.plan();
        let offset = plan.num_params;
        let t = ParamTensor {
            name,
            offset,
            shape,
            glorot_fans: fans,
            decay: fans.is_some(),
            fill: 0.0,
        };
        plan.num_params += t.len();
        plan.params.push(t);
        offset
    }

    /// Adds a tensor of `len` elements starting at `fill` to the parameters (trained, never
    /// decayed) or to the running statistics; returns its offset there.
    fn add_filled(&mut self, name: String, len: usize, fill: f32, running: bool) -> usize {
        let plan = self.plan();
        let (list, total) = if running {
            (&mut plan.running, &mut plan.num_running)
        } else {
            (&mut plan.params, &mut plan.num_params)
        };
        let offset = *total;
        *total += len;
        list.push(ParamTensor {
            name,
            offset,
            shape: vec![len],
            glorot_fans: None,
            decay: false,
            fill,
        });
        offset
    }

    /// Values per image at this point: the flat features, or `C·H·W`.
    fn features(&self) -> usize {
        let (c, h, w) = self.chw;
        self.flat.unwrap_or(c * h * w)
    }

    fn act(&mut self, act: Activation, len: usize) {
        if act != Activation::Linear {
            self.plan().ops.push(Op::Act { act, len });
        }
    }

    fn conv(
        &mut self,
        filters: usize,
        k: usize,
        pad: usize,
        act: Activation,
        n: usize,
    ) -> Result<(), String> {
        if self.flat.is_some() {
            return Err("a convolution cannot follow Flatten".into());
        }
        let (c, h, w) = self.chw;
        if filters == 0 {
            return Err("a convolution needs at least 1 filter".into());
        }
        if k == 0 {
            return Err("the kernel side must be at least 1".into());
        }
        if k > h + 2 * pad || k > w + 2 * pad {
            return Err(format!(
                "kernel {k}×{k} is larger than its {h}×{w} input padded by {pad}"
            ));
        }
        let shape = Conv2dShape {
            batch: self.batch,
            in_c: c,
            in_h: h,
            in_w: w,
            out_c: filters,
            k,
            pad,
        };
        let fans = (c * k * k, filters * k * k);
        let w_off = self.add_param(
            format!("conv{n}.weight"),
            vec![filters, c, k, k],
            Some(fans),
        );
        let b_off = self.add_param(format!("conv{n}.bias"), vec![filters], None);
        self.plan().ops.push(Op::Conv {
            shape,
            w_off,
            b_off,
        });
        self.chw = (filters, shape.out_h(), shape.out_w());
        self.act(act, shape.output_len());
        Ok(())
    }

    fn pool(&mut self, size: usize) -> Result<(), String> {
        if self.flat.is_some() {
            return Err("pooling cannot follow Flatten".into());
        }
        let (c, h, w) = self.chw;
        if size == 0 {
            return Err("the pool size must be at least 1".into());
        }
        if size > h || size > w {
            return Err(format!("pool size {size} is larger than its {h}×{w} input"));
        }
        let shape = PoolShape {
            batch: self.batch,
            c,
            in_h: h,
            in_w: w,
            size,
        };
        self.plan().ops.push(Op::Pool { shape });
        self.chw = (c, shape.out_h(), shape.out_w());
        Ok(())
    }

    fn flatten(&mut self) {
        let (c, h, w) = self.chw;
        self.flat = Some(self.flat.unwrap_or(c * h * w));
    }

    fn dense(&mut self, units: usize, act: Activation, n: usize) -> Result<(), String> {
        let in_f = self.flat.ok_or("Dense needs a Flatten before it")?;
        if units == 0 {
            return Err("Dense needs at least one unit".into());
        }
        let shape = DenseShape {
            batch: self.batch,
            in_f,
            out_f: units,
        };
        let w_off = self.add_param(
            format!("dense{n}.weight"),
            vec![units, in_f],
            Some((in_f, units)),
        );
        let b_off = self.add_param(format!("dense{n}.bias"), vec![units], None);
        self.plan().ops.push(Op::Dense {
            shape,
            w_off,
            b_off,
        });
        self.flat = Some(units);
        self.act(act, shape.output_len());
        Ok(())
    }

    fn batch_norm(&mut self, momentum: f32, eps: f32, n: usize) -> Result<(), String> {
        if !(0.0..=1.0).contains(&momentum) {
            return Err(format!("momentum {momentum} is not in [0, 1]"));
        }
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(format!("eps {eps} is not a positive number"));
        }
        let shape = match self.flat {
            Some(features) => BatchNormShape {
                batch: self.batch,
                c: features,
                hw: 1,
            },
            None => BatchNormShape {
                batch: self.batch,
                c: self.chw.0,
                hw: self.chw.1 * self.chw.2,
            },
        };
        let c = shape.c;
        let bn = BatchNorm {
            w_off: self.add_filled(format!("bn{n}.weight"), c, 1.0, false),
            b_off: self.add_filled(format!("bn{n}.bias"), c, 0.0, false),
            mean_off: self.add_filled(format!("bn{n}.running_mean"), c, 0.0, true),
            var_off: self.add_filled(format!("bn{n}.running_var"), c, 1.0, true),
            momentum,
            eps,
        };
        self.plan().ops.push(Op::BatchNorm { shape, bn });
        Ok(())
    }

    /// Dropout of layer `layer` (its index in the layer list); a rate of 0 is no op at all.
    fn dropout(&mut self, rate: f32, layer: usize) -> Result<(), String> {
        if !(0.0..1.0).contains(&rate) {
            return Err(format!("dropout rate {rate} is not in [0, 1)"));
        }
        if rate > 0.0 {
            let len = self.features() * self.batch;
            let layer = layer as u32;
            self.plan().ops.push(Op::Dropout { rate, layer, len });
        }
        Ok(())
    }

    fn global_avg_pool(&mut self) -> Result<(), String> {
        if self.flat.is_some() {
            return Err("global average pooling cannot follow Flatten".into());
        }
        let (c, h, w) = self.chw;
        let shape = GlobalAvgPoolShape {
            batch: self.batch,
            c,
            hw: h * w,
        };
        self.plan().ops.push(Op::GlobalAvgPool { shape });
        self.flat = Some(c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn flat_dense(units: usize) -> ModelSpec {
        ModelSpec {
            name: "x".into(),
            layers: vec![
                LayerSpec::Flatten,
                LayerSpec::Dense {
                    units,
                    activation: Activation::Relu,
                },
                LayerSpec::Dense {
                    units: NUM_CLASSES,
                    activation: Activation::Linear,
                },
            ],
        }
    }

    #[test]
    fn oversized_layers_are_refused_naming_the_layer_and_the_limit() {
        let gib = ModelLimits::of_memory(1 << 30);
        // 1 GiB trains at most 2^30 / 48 parameters: 22,369,621.
        assert_eq!(gib.max_params, 22_369_621);
        for units in [1_000_000_000, 1 << 63, usize::MAX] {
            let e = check_sizes(&flat_dense(units), 1, &gib)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("layer 2 (Dense") && e.contains("22369621") && e.contains("1024 MiB"),
                "{e}"
            );
            // On this machine too, before anything is allocated (and without overflow).
            let e = Plan::new(&flat_dense(units), 1).unwrap_err().to_string();
            assert!(e.contains("layer 2") && e.contains("parameters"), "{e}");
        }
        check_sizes(&flat_dense(9000), 1, &gib).unwrap();
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

    #[test]
    fn parameters_that_do_not_fit_the_device_are_named_with_its_limit() {
        use crate::backend::MemoryLimits;
        let plan = Plan::new(&flat_dense(1000), 1).unwrap();
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
    fn model_files_parse_from_toml_and_json() {
        let dir = std::env::temp_dir().join(format!("fergpu-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml_path = dir.join("small.toml");
        std::fs::write(
            &toml_path,
            "[[layers]]\ntype = \"conv2d\"\nfilters = 4\n[[layers]]\ntype = \"maxpool\"\n\
             [[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"dense\"\nunits = 7\n",
        )
        .unwrap();
        let spec = ModelSpec::from_file(&toml_path).unwrap();
        assert_eq!(spec.name, "small");
        assert_eq!(spec.layers.len(), 4);
        let json_path = dir.join("m.json");
        std::fs::write(&json_path, serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(
            ModelSpec::from_file(&json_path).unwrap().layers,
            spec.layers
        );
        std::fs::write(&json_path, "{\"layers\": [{\"type\": \"lstm\"}]}").unwrap();
        assert!(matches!(
            ModelSpec::from_file(&json_path),
            Err(Error::BadModel(_))
        ));
        // A layer that does not fit: "model:" once, then the file, then the layer.
        std::fs::write(
            &json_path,
            "{\"layers\": [{\"type\": \"flatten\"}, {\"type\": \"dense\", \"units\": 0}]}",
        )
        .unwrap();
        let e = ModelSpec::from_file(&json_path).unwrap_err().to_string();
        assert_eq!(e.matches("model:").count(), 1, "{e}");
        assert!(
            e.starts_with("model: ") && e.contains("m.json: layer 2"),
            "{e}"
        );
        let e = ModelSpec::resolve("cnnn", Activation::Relu, Activation::Relu)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--model cnnn: not a preset (mlp, cnn, vgg, compact)"),
            "{e}"
        );
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
