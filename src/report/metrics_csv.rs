//! `metrics.csv`: one row per epoch, written after every epoch and read back on resume.

use crate::error::{Error, Result};
use crate::files::write_atomic;
use std::path::Path;

/// The header of `metrics.csv`, in field order.
pub const METRICS_HEADER: &str = "epoch,train_loss,train_acc,val_loss,val_acc,seconds,images_per_s";

/// What one epoch measured. Accuracies are shares in `[0, 1]`, not percentages.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean cross-entropy over the epoch's training batches.
    pub train_loss: f64,
    /// Share of training images classified right during the epoch.
    pub train_acc: f64,
    /// Cross-entropy on the validation split after the epoch (NaN when there is none).
    pub val_loss: f64,
    /// Accuracy on the validation split after the epoch (NaN when there is none).
    pub val_acc: f64,
    /// Wall-clock seconds the epoch took.
    pub seconds: f64,
    /// Training throughput.
    pub images_per_s: f64,
    /// Learning rate used during the epoch. Not a `metrics.csv` column (the file keeps the
    /// issue's seven columns); NaN when read back from one.
    #[serde(skip_serializing, default = "not_recorded")]
    pub lr: f64,
}

fn not_recorded() -> f64 {
    f64::NAN
}

/// Writes `records` to `path` atomically, header [`METRICS_HEADER`] first. Floats are
/// written in their shortest exact form, so [`read_metrics_csv`] gives back equal values
/// (NaN is written as `NaN`), all but `lr`, which is not written.
pub fn write_metrics_csv(path: &Path, records: &[EpochRecord]) -> Result<()> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    let io = |e: csv::Error| Error::io(path, std::io::Error::other(e.to_string()));
    w.write_record(METRICS_HEADER.split(',')).map_err(io)?;
    for r in records {
        w.serialize(r).map_err(io)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    write_atomic(path, &bytes)
}

/// Reads a `metrics.csv` written by [`write_metrics_csv`] (to resume a run). A header-only
/// file gives no records; a wrong header or a malformed row is a typed error naming the line.
pub fn read_metrics_csv(path: &Path) -> Result<Vec<EpochRecord>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(file);
    let header = r.headers().map_err(|e| bad_data(path, e))?;
    let found: Vec<&str> = header.iter().collect();
    if found.join(",") != METRICS_HEADER {
        return Err(Error::BadData {
            path: path.into(),
            problem: format!(
                "not a fergpu metrics file: header is '{}', expected '{METRICS_HEADER}'",
                found.join(",")
            ),
        });
    }
    let mut out = Vec::new();
    for row in r.deserialize::<EpochRecord>() {
        out.push(row.map_err(|e| bad_row(path, e))?);
    }
    Ok(out)
}

fn bad_data(path: &Path, e: csv::Error) -> Error {
    Error::BadData {
        path: path.into(),
        problem: e.to_string(),
    }
}

fn bad_row(path: &Path, e: csv::Error) -> Error {
    match e.position() {
        Some(pos) => Error::BadRow {
            path: path.into(),
            line: pos.line(),
            problem: match e.kind() {
                csv::ErrorKind::Deserialize { err, .. } => err.to_string(),
                _ => e.to_string(),
            },
        },
        None => bad_data(path, e),
    }
}
