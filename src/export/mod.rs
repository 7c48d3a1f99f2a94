//! `fergpu export`: a checkpoint in a format other runtimes read.
//!
//! - [`onnx`]: an ONNX model (browsers through onnxruntime-web, phones, onnxruntime, tract);
//! - [`proto`]: the protobuf encoding it is written in, by hand (no code generator, no
//!   runtime dependency).

pub mod onnx;
pub mod proto;

use crate::checkpoint::{Checkpoint, Storage};
use crate::error::Result;
use crate::run::RunFolder;
use crate::shipped::ModelSource;
use std::path::{Path, PathBuf};

/// Writes the weights of the checkpoint at `checkpoint` alone to `out` as `storage`, with
/// their provenance in the metadata ([`provenance`]); never over the checkpoint. Returns a
/// line saying what was written.
pub fn export_weights(checkpoint: &Path, out: &Path, storage: Storage) -> Result<String> {
    crate::files::check_output(out, "--weights", &[("the --checkpoint file", checkpoint)])?;
    let ck = Checkpoint::load(checkpoint)?;
    let meta = provenance(checkpoint, storage)?;
    ck.save_weights(out, storage, &meta.to_string())?;
    let size = std::fs::metadata(out).map_or(0, |m| m.len());
    Ok(format!(
        "wrote {} ({} model, {} weights, {:.1} MB){}",
        out.display(),
        ck.spec.name,
        match storage {
            Storage::F32 => "f32",
            Storage::F16 => "f16",
        },
        size as f64 / 1e6,
        if meta["run"].is_null() {
            " without a run folder's provenance (the checkpoint lies in none)"
        } else {
            ""
        }
    ))
}

/// Where the weights at `checkpoint` come from, as JSON: the checkpoint's file name and the
/// storage, and, when it lies in a run folder, that run's settings (recipe and seed), record
/// (commit, version, data) and summary (test results, best epoch) under `run`.
pub fn provenance(checkpoint: &Path, storage: Storage) -> Result<serde_json::Value> {
    let name = checkpoint
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let folder = RunFolder::new(checkpoint.parent().unwrap_or(Path::new(".")));
    let run = if folder.config_path().exists() {
        serde_json::json!({
            "settings": folder.read_settings()?,
            "record": folder.read_record()?,
            "summary": folder.read_summary().ok(),
        })
    } else {
        serde_json::Value::Null
    };
    Ok(serde_json::json!({
        "checkpoint": name,
        "storage": format!("{storage:?}").to_lowercase(),
        "run": run,
    }))
}

/// What [`export_onnx`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    /// The ONNX file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: usize,
    /// The model's name (`mlp`, `cnn`, a model file's).
    pub model: String,
    /// The graph's output: [`onnx::LOGITS`] or [`onnx::PROBABILITIES`].
    pub output: &'static str,
}

impl std::fmt::Display for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {} ({} model, opset {}, {:.1} MB): input '{}' float [N, 1, 48, 48] in 0..1, \
             output '{}' float [N, 7]",
            self.path.display(),
            self.model,
            onnx::OPSET,
            self.bytes as f64 / 1e6,
            onnx::INPUT,
            self.output
        )
    }
}

/// Reads `model`'s checkpoint (a file, or the shipped model) and writes it as ONNX to `out`
/// (atomically, or straight into a special file such as `/dev/stdout`; never over the
/// checkpoint); with `softmax` the graph outputs probabilities instead of logits. A bad
/// checkpoint is [`crate::Error::BadCheckpoint`], an unwritable `out` [`crate::Error::Io`].
pub fn export_onnx(model: &ModelSource, out: &Path, softmax: bool) -> Result<Exported> {
    let read = model.inputs();
    crate::files::check_output(out, "--onnx", &read)?;
    let ck = model.load()?;
    let bytes = onnx::model_bytes(&ck, softmax);
    crate::files::write_output(out, &bytes)?;
    Ok(Exported {
        path: out.to_path_buf(),
        bytes: bytes.len(),
        model: ck.spec.name,
        output: if softmax {
            onnx::PROBABILITIES
        } else {
            onnx::LOGITS
        },
    })
}
