//! `fergpu export`: a checkpoint in a format other runtimes read.
//!
//! - [`onnx`]: an ONNX model (browsers through onnxruntime-web, phones, onnxruntime, tract);
//! - [`proto`]: the protobuf encoding it is written in, by hand (no code generator, no
//!   runtime dependency).

pub mod onnx;
pub mod proto;

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use std::path::{Path, PathBuf};

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

/// Reads the checkpoint at `checkpoint` and writes it as ONNX to `out` (atomically); with
/// `softmax` the graph outputs probabilities instead of logits. A bad checkpoint is
/// [`crate::Error::BadCheckpoint`], an unwritable `out` [`crate::Error::Io`].
pub fn export_onnx(checkpoint: &Path, out: &Path, softmax: bool) -> Result<Exported> {
    let ck = Checkpoint::load(checkpoint)?;
    let bytes = onnx::model_bytes(&ck, softmax);
    crate::report::write_atomic(out, &bytes)?;
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
