//! Model descriptions: the layer list ([`ModelSpec`], [`LayerSpec`]), model files, and the
//! presets (the notebook's `mlp` and `cnn`, and the modern `vgg` and `compact`).

use super::Plan;
use crate::backend::Activation;
use crate::error::{Error, Result};
use crate::shape::NUM_CLASSES;
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
        let text = crate::files::read_text(path).map_err(|e| match e {
            Error::BadData { .. } => Error::BadModel(e.to_string()),
            other => other,
        })?;
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
        let name = file.name.or(stem).unwrap_or_else(|| "custom".into());
        let spec = ModelSpec {
            // A label printed in reports: escape sequences in it are written out.
            name: crate::report::printable(&name).into_owned(),
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

#[cfg(test)]
impl ModelSpec {
    /// A flatten, a ReLU dense layer of `units` and the 7-way output: a model whose size is
    /// one number, for the tests of size limits.
    pub(crate) fn flat_dense(units: usize) -> ModelSpec {
        ModelSpec {
            name: "x".into(),
            layers: vec![
                LayerSpec::Flatten,
                dense(units, Activation::Relu),
                dense(NUM_CLASSES, Activation::Linear),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
