//! The model in the box: the `compact` network trained on FER2013 by
//! `assets/recipes/compact.toml`, stored as f32 weights in [`PATH`] and embedded in the
//! binary, so that `fergpu predict`, `eval` and `export` work before anything is trained.
//! Its provenance (recipe, seed, commit, results) is in the file's metadata; what it is fit
//! for is `docs/MODEL_CARD.md`.

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use std::path::{Path, PathBuf};

/// Where the shipped weights live in the repository.
pub const PATH: &str = "assets/model/fer2013-compact.safetensors";

/// The shipped weights, compiled in.
static BYTES: &[u8] = include_bytes!("../assets/model/fer2013-compact.safetensors");

/// The shipped model's checkpoint.
pub fn checkpoint() -> Result<Checkpoint> {
    Checkpoint::from_bytes(BYTES, Path::new(PATH))
}

/// Where the shipped weights come from (JSON, written by `fergpu export --weights`): the
/// run's settings, record and summary under `run`.
pub fn provenance() -> serde_json::Value {
    Checkpoint::provenance(BYTES)
        .and_then(|p| serde_json::from_str(&p).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// What the shipped model is, in a few words: `compact, FER2013 PublicTest 68.12%, seed 2`.
pub fn describe() -> String {
    let p = provenance();
    let run = &p["run"];
    let model = run["settings"]["model"]["model"]
        .as_str()
        .unwrap_or("compact");
    let mut s = format!("{model} trained on FER2013");
    if let Some(acc) = run["summary"]["test_accuracy"].as_f64() {
        s.push_str(&format!(", PublicTest {:.2}%", 100.0 * acc));
    }
    if let Some(seed) = run["settings"]["run"]["seed"].as_u64() {
        s.push_str(&format!(", seed {seed}"));
    }
    s
}

/// Where a command's model comes from: `--checkpoint FILE`, or the shipped one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A checkpoint file.
    File(PathBuf),
    /// The model shipped in the binary.
    Shipped,
}

impl ModelSource {
    /// `--checkpoint` when given, else the shipped model.
    pub fn from_flag(checkpoint: Option<PathBuf>) -> ModelSource {
        checkpoint.map_or(ModelSource::Shipped, ModelSource::File)
    }

    /// The checkpoint; for the shipped model, says so on stderr in one line first.
    pub fn load(&self) -> Result<Checkpoint> {
        match self {
            ModelSource::File(path) => Checkpoint::load(path),
            ModelSource::Shipped => {
                eprintln!(
                    "no --checkpoint given: using the shipped model ({}; docs/MODEL_CARD.md)",
                    describe()
                );
                checkpoint()
            }
        }
    }

    /// The checkpoint file, for a model read from one (outputs must not overwrite it).
    pub fn file(&self) -> Option<&Path> {
        match self {
            ModelSource::File(path) => Some(path),
            ModelSource::Shipped => None,
        }
    }

    /// The files this model is read from, named for [`crate::files::check_output`]: the
    /// `--checkpoint` file, or none for the shipped model.
    pub fn inputs(&self) -> Vec<(&'static str, &Path)> {
        self.file()
            .map(|f| ("the --checkpoint file", f))
            .into_iter()
            .collect()
    }

    /// The path errors about the model name: the file, or [`PATH`].
    pub fn path(&self) -> &Path {
        self.file().unwrap_or(Path::new(PATH))
    }
}
