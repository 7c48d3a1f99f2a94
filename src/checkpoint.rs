//! Checkpoints as safetensors files that PyTorch can load.
//!
//! Tensors are named by layer in PyTorch layout (`conv1.weight [out, in, kh, kw]`,
//! `dense1.weight [out, in]`, biases `[out]`, batch norms' `bn1.weight`, `bn1.bias`,
//! `bn1.running_mean`, `bn1.running_var` `[c]`); the flatten is in channel, row, column
//! order, as `torch.flatten` of an NCHW tensor. The model description is stored as JSON in the file's
//! metadata under `fergpu.model`, so `eval` needs no model flags. A checkpoint written during
//! training also carries Adam's moments (`optimizer.m`, `optimizer.v`, flat `(P)`) and the
//! trainer's resumable state (`fergpu.train_state`, JSON), and, for runs that keep one, the
//! weights' moving average (`average.params (P)`, `average.running (S)`). Files are written
//! atomically.

use crate::error::{Error, Result};
use crate::model::{ModelSpec, Plan};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

const FORMAT_KEY: &str = "fergpu.format";
const FORMAT: &str = "fergpu-checkpoint-1";
const MODEL_KEY: &str = "fergpu.model";
const STATE_KEY: &str = "fergpu.train_state";
/// Metadata of a shipped checkpoint: where its weights come from (JSON, see
/// [`Checkpoint::save_weights`]).
pub const PROVENANCE_KEY: &str = "fergpu.provenance";

/// How a checkpoint's weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// 32-bit floats, exactly as trained (every checkpoint a run writes).
    F32,
    /// 16-bit floats (IEEE half, rounded to nearest): half the size, for shipping a model;
    /// read back as the nearest `f32`.
    F16,
}

/// The most optimizer steps a checkpoint may record: 100,000 epochs (the most `--epochs`
/// allows) of 10⁷ batches each, far past any real run, far below where counting overflows.
pub const MAX_OPTIMIZER_STEPS: u64 = 1 << 40;

/// The optimizer's state, flat in the parameter layout: Adam's moments (or SGD's momentum),
/// the step count, and the weights' moving average where the run keeps one.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    /// First moments `(P)`.
    pub m: Vec<f32>,
    /// Second moments `(P)`.
    pub v: Vec<f32>,
    /// Steps taken.
    pub t: u64,
    /// The exponential moving average of the weights (`--ema`), if kept.
    pub average: Option<Average>,
}

/// A model's weights averaged over training steps: parameters `(P)` and batch norms'
/// running statistics `(S)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Average {
    /// Averaged parameters `(P)`.
    pub params: Vec<f32>,
    /// Averaged running statistics `(S)`.
    pub running: Vec<f32>,
}

/// Everything a checkpoint holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The model.
    pub spec: ModelSpec,
    /// Parameters, flat `(P)` in the layout of `Plan::new(&spec, _)`.
    pub params: Vec<f32>,
    /// Batch norms' running statistics, flat `(S)` in the layout of the plan's `running`
    /// (empty for models without batch norm).
    pub running: Vec<f32>,
    /// Adam's state, when saved by a training run.
    pub optimizer: Option<OptimizerState>,
    /// The trainer's resumable state (opaque JSON), when saved by a training run.
    pub train_state: Option<String>,
}

impl Checkpoint {
    /// Writes the checkpoint to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::files::write_atomic(path, &self.to_bytes(path)?)
    }

    /// The checkpoint as the bytes of a safetensors file (what [`Checkpoint::save`] writes;
    /// a page offers them as a download). `path` only names the file in errors.
    pub fn to_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        self.file_bytes(path, Storage::F32, None)
    }

    /// Writes the weights only (no optimizer or training state) to `path`, stored as
    /// `storage`, with `provenance` (JSON: recipe, seed, commit, accuracy) in the metadata
    /// under [`PROVENANCE_KEY`]: a model to ship.
    pub fn save_weights(&self, path: &Path, storage: Storage, provenance: &str) -> Result<()> {
        let weights = Checkpoint {
            optimizer: None,
            train_state: None,
            ..self.clone()
        };
        let bytes = weights.file_bytes(path, storage, Some(provenance))?;
        crate::files::write_output(path, &bytes)
    }

    /// The file's bytes with the weights stored as `storage` and `provenance` in the
    /// metadata (`path` names it in errors).
    fn file_bytes(
        &self,
        path: &Path,
        storage: Storage,
        provenance: Option<&str>,
    ) -> Result<Vec<u8>> {
        let plan = Plan::new(&self.spec, 1)?;
        assert_eq!(self.params.len(), plan.num_params);
        assert_eq!(self.running.len(), plan.num_running);
        let params = plan.params.iter().map(|t| (t, &self.params));
        let running = plan.running.iter().map(|t| (t, &self.running));
        let mut tensors: Vec<(String, Vec<usize>, &[f32])> = params
            .chain(running)
            .map(|(t, flat)| {
                (
                    t.name.clone(),
                    t.shape.clone(),
                    &flat[t.offset..t.offset + t.len()],
                )
            })
            .collect();
        let mut meta = HashMap::new();
        meta.insert(FORMAT_KEY.to_string(), FORMAT.to_string());
        meta.insert(
            "fergpu.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        );
        meta.insert(
            MODEL_KEY.to_string(),
            serde_json::to_string(&self.spec).expect("spec json"),
        );
        if let Some(opt) = &self.optimizer {
            tensors.push(("optimizer.m".into(), vec![opt.m.len()], &opt.m));
            tensors.push(("optimizer.v".into(), vec![opt.v.len()], &opt.v));
            meta.insert("fergpu.optimizer_step".to_string(), opt.t.to_string());
            if let Some(avg) = &opt.average {
                tensors.push(("average.params".into(), vec![avg.params.len()], &avg.params));
                if !avg.running.is_empty() {
                    let shape = vec![avg.running.len()];
                    tensors.push(("average.running".into(), shape, &avg.running));
                }
            }
        }
        if let Some(state) = &self.train_state {
            meta.insert(STATE_KEY.to_string(), state.clone());
        }
        if let Some(p) = provenance {
            meta.insert(PROVENANCE_KEY.to_string(), p.to_string());
        }
        let encoded: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .into_iter()
            .map(|(name, shape, data)| (name, shape, encode(data, storage)))
            .collect();
        let dtype = match storage {
            Storage::F32 => Dtype::F32,
            Storage::F16 => Dtype::F16,
        };
        let views = encoded.iter().map(|(name, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(dtype, shape.clone(), bytes)
                .expect("tensor view of matching length");
            (name.clone(), view)
        });
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::BadCheckpoint {
            path: path.into(),
            problem: e.to_string(),
        })
    }

    /// The provenance a shipped checkpoint at `path` records ([`Checkpoint::save_weights`]),
    /// if any.
    pub fn provenance(bytes: &[u8]) -> Option<String> {
        let (_, header) = SafeTensors::read_metadata(bytes).ok()?;
        header.metadata().as_ref()?.get(PROVENANCE_KEY).cloned()
    }

    /// Reads a checkpoint written by [`Checkpoint::save`]. A truncated or foreign file, or
    /// one whose tensors do not match its model, is [`Error::BadCheckpoint`].
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Checkpoint::from_bytes(&bytes, path)
    }

    /// Reads a checkpoint from the bytes of its file (a page's dropped file, the shipped
    /// model); `path` only names the file in errors. The checks are [`Checkpoint::load`]'s;
    /// weights stored as F16 ([`Storage::F16`]) are widened to `f32`.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
        let bad = |problem: String| Error::BadCheckpoint {
            path: path.into(),
            problem,
        };
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            bad(format!(
                "not a readable safetensors file ({e}); is it truncated or another format?"
            ))
        })?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!(
                "a safetensors file, but not a fergpu checkpoint (no '{FORMAT_KEY}' metadata)"
            )));
        }
        let mut spec: ModelSpec = serde_json::from_str(
            meta.get(MODEL_KEY)
                .ok_or_else(|| bad(format!("metadata '{MODEL_KEY}' is missing")))?,
        )
        .map_err(|e| bad(format!("metadata '{MODEL_KEY}': {e}")))?;
        // The name is a label printed in reports: escape sequences in it are written out.
        spec.name = crate::report::printable(&spec.name).into_owned();
        let plan = Plan::new(&spec, 1).map_err(|e| bad(e.to_string()))?;
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .map_err(|_| bad(format!("tensor '{name}' is missing")))?;
            let ok_type = matches!(t.dtype(), Dtype::F32 | Dtype::F16);
            if !ok_type || t.shape() != shape {
                return Err(bad(format!(
                    "tensor '{name}' is {:?} {:?}, the model needs F32 (or F16) {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(decode(t.data(), t.dtype()))
        };
        // Numbers that are not finite would evaluate to a confident-looking accuracy and
        // prediction, or poison a resumed run: refuse them here, naming the tensor.
        let finite = |name: &str, values: &[f32]| match values.iter().position(|x| !x.is_finite()) {
            None => Ok(()),
            Some(i) => Err(bad(format!(
                "tensor '{name}' holds {} (element {i} of {}): the run that wrote it diverged or \
                 the file is damaged; use another checkpoint (e.g. checkpoint-best, or one saved \
                 before the divergence)",
                values[i],
                values.len()
            ))),
        };
        let mut params = vec![0f32; plan.num_params];
        for t in &plan.params {
            let values = read(&t.name, &t.shape)?;
            finite(&t.name, &values)?;
            params[t.offset..t.offset + t.len()].copy_from_slice(&values);
        }
        let mut running = vec![0f32; plan.num_running];
        for t in &plan.running {
            let values = read(&t.name, &t.shape)?;
            finite(&t.name, &values)?;
            // A running variance below zero would take the square root of a negative number.
            if t.name.ends_with("running_var") {
                if let Some(i) = values.iter().position(|&v| v < 0.0) {
                    return Err(bad(format!(
                        "tensor '{}' holds a negative variance ({}, element {i}); the file is \
                         damaged",
                        t.name, values[i]
                    )));
                }
            }
            running[t.offset..t.offset + t.len()].copy_from_slice(&values);
        }
        let optimizer = match meta.get("fergpu.optimizer_step") {
            Some(step) => {
                let m = read("optimizer.m", &[plan.num_params])?;
                let v = read("optimizer.v", &[plan.num_params])?;
                finite("optimizer.m", &m)?;
                finite("optimizer.v", &v)?;
                if let Some(i) = v.iter().position(|&x| x < 0.0) {
                    return Err(bad(format!(
                        "tensor 'optimizer.v' holds a negative second moment ({}, element {i}); \
                         the file is damaged",
                        v[i]
                    )));
                }
                let t: u64 = step
                    .parse()
                    .map_err(|_| bad(format!("optimizer step '{step}' is not a number")))?;
                if t > MAX_OPTIMIZER_STEPS {
                    return Err(bad(format!(
                        "optimizer step {t} is over the {MAX_OPTIMIZER_STEPS} a run can take; the \
                         file is damaged"
                    )));
                }
                let average = match st.tensor("average.params") {
                    Err(_) => None,
                    Ok(_) => {
                        let params = read("average.params", &[plan.num_params])?;
                        finite("average.params", &params)?;
                        let running = if plan.num_running == 0 {
                            Vec::new()
                        } else {
                            read("average.running", &[plan.num_running])?
                        };
                        finite("average.running", &running)?;
                        Some(Average { params, running })
                    }
                };
                Some(OptimizerState { m, v, t, average })
            }
            None => None,
        };
        Ok(Checkpoint {
            spec,
            params,
            running,
            optimizer,
            train_state: meta.get(STATE_KEY).cloned(),
        })
    }
}

/// `values` as little-endian bytes of `storage`.
fn encode(values: &[f32], storage: Storage) -> Vec<u8> {
    match storage {
        Storage::F32 => bytemuck::cast_slice(values).to_vec(),
        Storage::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

/// Little-endian F32 or F16 `bytes` as `f32`s.
fn decode(bytes: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Activation;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fergpu-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn round_trip_keeps_every_bit_and_the_optimizer() {
        let spec = ModelSpec::cnn(Activation::Relu, Activation::Selu);
        let plan = Plan::new(&spec, 1).unwrap();
        let params = plan.init_params(3);
        let n = params.len();
        let ck = Checkpoint {
            spec,
            params,
            running: vec![],
            optimizer: Some(OptimizerState {
                m: vec![0.5; n],
                v: vec![0.25; n],
                t: 17,
                average: Some(Average {
                    params: vec![0.125; n],
                    running: vec![],
                }),
            }),
            train_state: Some("{\"epoch\":2}".into()),
        };
        let path = tmp("a.safetensors");
        ck.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), ck);
        // This file's own temporary files only: the other tests write beside it meanwhile.
        let leftovers = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with("a.safetensors.") && name.ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0, "a temporary file was left behind");
    }

    #[test]
    fn non_finite_numbers_are_refused_at_load_naming_the_tensor() {
        let spec = ModelSpec::mlp(Activation::Relu);
        let plan = Plan::new(&spec, 1).unwrap();
        let good = plan.init_params(2);
        let n = good.len();
        let path = tmp("nan.safetensors");
        let dense2_bias = plan
            .params
            .iter()
            .find(|t| t.name == "dense2.bias")
            .unwrap();
        for (what, bad) in [("NaN", f32::NAN), ("inf", f32::INFINITY)] {
            let mut params = good.clone();
            params[dense2_bias.offset + 3] = bad;
            Checkpoint {
                spec: spec.clone(),
                params,
                running: vec![],
                optimizer: None,
                train_state: None,
            }
            .save(&path)
            .unwrap();
            let e = Checkpoint::load(&path).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "tensor 'dense2.bias' holds {what} (element 3 of 84)"
                )),
                "{e}"
            );
        }
        let mut state = OptimizerState {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 1,
            average: None,
        };
        state.v[5] = -1.0;
        let ck = Checkpoint {
            spec: spec.clone(),
            params: good.clone(),
            running: vec![],
            optimizer: Some(state.clone()),
            train_state: None,
        };
        ck.save(&path).unwrap();
        let e = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(e.contains("negative second moment"), "{e}");
        state.v[5] = 0.0;
        state.m[7] = f32::NAN;
        Checkpoint {
            optimizer: Some(state),
            ..ck
        }
        .save(&path)
        .unwrap();
        let e = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(e.contains("'optimizer.m' holds NaN"), "{e}");
    }

    #[test]
    fn shipped_weights_in_f16_read_back_to_the_nearest_half_with_their_provenance() {
        let spec = ModelSpec::compact(Activation::Relu);
        let plan = Plan::new(&spec, 1).unwrap();
        let mut running = plan.init_running();
        running
            .iter_mut()
            .enumerate()
            .for_each(|(i, r)| *r += i as f32 * 1e-3);
        let ck = Checkpoint {
            spec,
            params: plan.init_params(4),
            running,
            optimizer: Some(OptimizerState {
                m: vec![0.0; plan.num_params],
                v: vec![0.0; plan.num_params],
                t: 3,
                average: None,
            }),
            train_state: Some("{}".into()),
        };
        let path = tmp("ship.safetensors");
        let provenance = r#"{"recipe":"compact.toml","seed":2}"#;
        ck.save_weights(&path, Storage::F16, provenance).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        // Half the size of the f32 weights, plus the header.
        assert!(
            bytes.len() < 2 * plan.num_params + 64 * 1024,
            "{}",
            bytes.len()
        );
        assert_eq!(Checkpoint::provenance(&bytes).as_deref(), Some(provenance));
        let back = Checkpoint::load(&path).unwrap();
        assert!(back.optimizer.is_none() && back.train_state.is_none());
        for (got, want) in back
            .params
            .iter()
            .zip(&ck.params)
            .chain(back.running.iter().zip(&ck.running))
        {
            assert_eq!(*got, half::f16::from_f32(*want).to_f32());
            assert!(
                (got - want).abs() <= want.abs() * 4.9e-4 + 6e-8,
                "{got} vs {want}"
            );
        }
        // An ordinary checkpoint records no provenance.
        ck.save(&path).unwrap();
        assert_eq!(Checkpoint::provenance(&std::fs::read(&path).unwrap()), None);
    }

    #[test]
    fn truncated_and_foreign_files_are_clear_errors() {
        let spec = ModelSpec::mlp(Activation::Relu);
        let params = Plan::new(&spec, 1).unwrap().init_params(1);
        let path = tmp("b.safetensors");
        Checkpoint {
            spec,
            params,
            running: vec![],
            optimizer: None,
            train_state: None,
        }
        .save(&path)
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let x = [1f32, 2.0];
        let view =
            safetensors::tensor::TensorView::new(Dtype::F32, vec![2], bytemuck::cast_slice(&x))
                .unwrap();
        std::fs::write(&path, safetensors::serialize([("w", view)], None).unwrap()).unwrap();
        let err = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(err.contains("not a fergpu checkpoint"), "{err}");
        std::fs::write(&path, b"hello").unwrap();
        assert!(matches!(
            Checkpoint::load(&path),
            Err(Error::BadCheckpoint { .. })
        ));
    }
}
