//! `summary.json`: the few numbers a run is judged by, for people and for sweep tables.

use super::EpochRecord;
use crate::data::EMOTIONS;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::metrics::Confusion;
use std::path::Path;

/// Test-set scores of one class.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassSummary {
    /// Emotion name, e.g. `"Happy"`.
    pub emotion: String,
    /// Of the images predicted as this class, the share that are.
    pub precision: f64,
    /// Of the images of this class, the share predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Test images of this class.
    pub support: u64,
}

/// The contents of `summary.json`. Accuracies are shares in `[0, 1]`. JSON has no NaN, so a
/// NaN (e.g. a diverged loss) is written as `null` and cannot be read back.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Accuracy on the test split.
    pub test_accuracy: f64,
    /// Mean cross-entropy on the test split.
    pub test_loss: f64,
    /// Unweighted mean of the per-class F1 scores on the test split.
    pub macro_f1: f64,
    /// Per-class scores, in label order.
    pub per_class: Vec<ClassSummary>,
    /// The test confusion matrix, `counts[true][predicted]`.
    pub confusion: Confusion,
    /// 1-based epoch with the best validation accuracy (0 when no epoch had one).
    pub best_epoch: usize,
    /// Validation accuracy of that epoch (NaN when no epoch had one).
    pub best_val_accuracy: f64,
    /// Epochs actually run (fewer than asked when stopped early).
    pub epochs_run: usize,
    /// Wall-clock seconds of the whole run.
    pub wall_seconds: f64,
    /// The adapter that ran it, e.g. `"NVIDIA GeForce RTX 4090 (Vulkan)"` or `"cpu"`.
    pub adapter: String,
    /// The same test split with test-time augmentation (logits averaged over each mode's
    /// views, `fergpu::eval::Tta`), kept apart from the plain figures above, which never
    /// include it. Absent from summaries written before fergpu measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tta: Option<TtaSummary>,
}

/// Test-split scores with test-time augmentation, one entry per mode.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TtaSummary {
    /// Two views: the image and its mirror image.
    pub flip: TtaScores,
    /// Ten views: five positions (as it is, and moved 2 pixels towards each corner) × {as it
    /// is, mirrored}.
    pub crops: TtaScores,
}

/// The scores of one test-time augmentation mode on the test split.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TtaScores {
    /// Accuracy of the averaged logits.
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1 scores.
    pub macro_f1: f64,
    /// Mean cross-entropy of the softmax of the averaged logits.
    pub loss: f64,
}

impl TtaScores {
    /// The scores of a confusion matrix and mean loss.
    pub fn new(confusion: &Confusion, loss: f64) -> TtaScores {
        TtaScores {
            accuracy: confusion.accuracy(),
            macro_f1: confusion.macro_f1(),
            loss,
        }
    }
}

impl Summary {
    /// Builds the summary from the test confusion matrix and loss, the epoch history (for the
    /// best epoch), the run's wall time and adapter name.
    pub fn new(
        test: &Confusion,
        test_loss: f64,
        history: &[EpochRecord],
        wall_seconds: f64,
        adapter: &str,
    ) -> Summary {
        let per_class = test
            .class_scores()
            .iter()
            .zip(EMOTIONS)
            .map(|(s, name)| ClassSummary {
                emotion: name.to_string(),
                precision: s.precision,
                recall: s.recall,
                f1: s.f1,
                support: s.support,
            })
            .collect();
        // The first epoch wins ties, as early stopping keeps the first best checkpoint.
        let best = history.iter().filter(|r| r.val_acc.is_finite()).fold(
            None::<&EpochRecord>,
            |best, r| match best {
                Some(b) if b.val_acc >= r.val_acc => Some(b),
                _ => Some(r),
            },
        );
        Summary {
            test_accuracy: test.accuracy(),
            test_loss,
            macro_f1: test.macro_f1(),
            per_class,
            confusion: test.clone(),
            best_epoch: best.map_or(0, |r| r.epoch),
            best_val_accuracy: best.map_or(f64::NAN, |r| r.val_acc),
            epochs_run: history.len(),
            wall_seconds,
            adapter: adapter.to_string(),
            tta: None,
        }
    }
}

/// Writes `s` to `path` as pretty-printed JSON, atomically.
pub fn write_summary_json(path: &Path, s: &Summary) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(s)
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a `summary.json` written by [`write_summary_json`] (for sweep and CV tables).
pub fn read_summary_json(path: &Path) -> Result<Summary> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadData {
        path: path.into(),
        problem: format!("not a fergpu summary.json: {e}"),
    })
}
