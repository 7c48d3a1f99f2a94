//! Typed errors a user can act on. Wrong shapes are bugs and panic instead.

use std::path::PathBuf;

/// Everything that can go wrong because of the user's files, flags or machine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or written. The reason is part of the message, so
    /// it is not also returned by `source()` (a chain printer would show it twice).
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: std::io::Error,
    },
    /// A data row is malformed. `line` is 1-based and counts the header as line 1.
    #[error("{path}:{line}: {problem}")]
    BadRow {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line number in the file (the header is line 1).
        line: u64,
        /// What is wrong with the row.
        problem: String,
    },
    /// The data file as a whole is unusable (empty, no header, missing column, not CSV).
    #[error("{path}: {problem}")]
    BadData {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A model description is invalid (unknown layer, shape that does not fit).
    #[error("model: {0}")]
    BadModel(String),
    /// A checkpoint is truncated, foreign or does not match the model.
    #[error("checkpoint {path}: {problem}")]
    BadCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The requested GPU adapter does not exist; `found` lists what does.
    #[error("no adapter matches '{wanted}'. Adapters found:\n{found}\nUse `fergpu adapters` to list them, or `--adapter cpu` for the CPU reference")]
    NoAdapter {
        /// What the user asked for.
        wanted: String,
        /// One line per adapter found.
        found: String,
    },
    /// The GPU failed: validation error, out of memory, device lost.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// Training diverged.
    #[error("{0}")]
    Diverged(String),
    /// A model's values stopped being numbers (NaN or infinite) in some layer; the message
    /// names the first op that gave one.
    #[error("{0}")]
    NonFinite(String),
    /// A flag or setting is invalid.
    #[error("{0}")]
    Config(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, reason: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Error;

    /// `main` prints an error with its chain of sources; the OS reason must appear once.
    #[test]
    fn an_io_error_names_its_reason_in_the_message_and_not_again_as_a_source() {
        let reason = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = Error::io("model.safetensors", reason);
        assert_eq!(e.to_string(), "model.safetensors: No such file");
        assert!(std::error::Error::source(&e).is_none());
    }
}
