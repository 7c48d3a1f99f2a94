//! Checkpoints as safetensors files that PyTorch can load.
//!
//! Tensors are named by layer in PyTorch layout (`conv1.weight [out, in, kh, kw]`,
//! `dense1.weight [out, in]`, biases `[out]`, batch norms' `bn1.weight`, `bn1.bias`,
//! `bn1.running_mean`, `bn1.running_var` `[c]`); the flatten is in channel, row, column
//! order, as `torch.flatten` of an NCHW tensor. The model description is stored as JSON in the file's
//! metadata under `fergpu.model`, so `eval` needs no model flags. A checkpoint written during
//! training also carries Adam's moments (`optimizer.m`, `optimizer.v`, flat `(P)`) and the
//! trainer's resumable state (`fergpu.train_state`, JSON). Files are written atomically.

use crate::error::{Error, Result};
use crate::model::{ModelSpec, Plan};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

const FORMAT_KEY: &str = "fergpu.format";
const FORMAT: &str = "fergpu-checkpoint-1";
const MODEL_KEY: &str = "fergpu.model";
const STATE_KEY: &str = "fergpu.train_state";

/// Adam's state, flat in the parameter layout.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    /// First moments `(P)`.
    pub m: Vec<f32>,
    /// Second moments `(P)`.
    pub v: Vec<f32>,
    /// Steps taken.
    pub t: u64,
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
        }
        if let Some(state) = &self.train_state {
            meta.insert(STATE_KEY.to_string(), state.clone());
        }
        let views = tensors.iter().map(|(name, shape, data)| {
            let view = safetensors::tensor::TensorView::new(
                Dtype::F32,
                shape.clone(),
                bytemuck::cast_slice(data),
            )
            .expect("tensor view of matching length");
            (name.clone(), view)
        });
        let bytes =
            safetensors::serialize(views, Some(meta)).map_err(|e| Error::BadCheckpoint {
                path: path.into(),
                problem: e.to_string(),
            })?;
        crate::report::write_atomic(path, &bytes)
    }

    /// Reads a checkpoint written by [`Checkpoint::save`]. A truncated or foreign file, or
    /// one whose tensors do not match its model, is [`Error::BadCheckpoint`].
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |problem: String| Error::BadCheckpoint {
            path: path.into(),
            problem,
        };
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            bad(format!(
                "not a readable safetensors file ({e}); is it truncated or another format?"
            ))
        })?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!(
                "a safetensors file, but not a fergpu checkpoint (no '{FORMAT_KEY}' metadata)"
            )));
        }
        let spec: ModelSpec = serde_json::from_str(
            meta.get(MODEL_KEY)
                .ok_or_else(|| bad(format!("metadata '{MODEL_KEY}' is missing")))?,
        )
        .map_err(|e| bad(format!("metadata '{MODEL_KEY}': {e}")))?;
        let plan = Plan::new(&spec, 1).map_err(|e| bad(e.to_string()))?;
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .map_err(|_| bad(format!("tensor '{name}' is missing")))?;
            if t.dtype() != Dtype::F32 || t.shape() != shape {
                return Err(bad(format!(
                    "tensor '{name}' is {:?} {:?}, the model needs F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
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
                Some(OptimizerState {
                    m,
                    v,
                    t: step
                        .parse()
                        .map_err(|_| bad(format!("optimizer step '{step}' is not a number")))?,
                })
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
            }),
            train_state: Some("{\"epoch\":2}".into()),
        };
        let path = tmp("a.safetensors");
        ck.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), ck);
        let leftovers = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .to_string_lossy()
                    .ends_with(".tmp")
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
