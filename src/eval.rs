//! Evaluation of a checkpoint: accuracy, loss, the labelled confusion matrix, per-class
//! precision/recall/F1, and per-image predictions.

use crate::backend::Backend;
use crate::checkpoint::Checkpoint;
use crate::data::{Dataset, EMOTIONS};
use crate::error::{Error, Result};
use crate::metrics::{argmax, Confusion};
use crate::model::network::Network;
use crate::model::Plan;
use crate::shape::NUM_CLASSES;
use crate::train::{evaluate, DeviceSet, EvalResult};
use std::fmt::Write as _;
use std::path::Path;

/// Batch size of evaluation-only passes (memory for the seed CNN: about 90 MB per buffer).
pub const EVAL_BATCH: usize = 128;

/// Runs the checkpoint's model over `ds` on `be`; probabilities `(n, 7)` kept when asked.
pub fn evaluate_checkpoint<B: Backend>(
    be: &B,
    ck: &Checkpoint,
    ds: &Dataset,
    keep_probs: bool,
) -> Result<EvalResult> {
    if ds.is_empty() {
        return Err(Error::Config("the evaluation split has no images".into()));
    }
    let plan = Plan::new(&ck.spec, EVAL_BATCH.min(ds.len()))?;
    let mut net = Network::new(be, plan, &ck.params);
    let set = DeviceSet::new(be, ds);
    let mut stats = be.zeros(crate::backend::stats::LEN);
    let mut confusion = be.zeros_indices(NUM_CLASSES * NUM_CLASSES);
    let ones = be.upload(&[1.0; NUM_CLASSES]);
    Ok(evaluate(
        be,
        &mut net,
        &set,
        &mut stats,
        &mut confusion,
        &ones,
        keep_probs,
    ))
}

/// The confusion matrix as a text table with emotion names (rows true, columns predicted).
pub fn confusion_text(c: &Confusion) -> String {
    let mut s = format!("{:>12}", "true \\ pred");
    for name in EMOTIONS {
        let _ = write!(s, "{name:>9}");
    }
    s.push('\n');
    for (t, row) in c.counts.iter().enumerate() {
        let _ = write!(s, "{:>12}", EMOTIONS[t]);
        for n in row {
            let _ = write!(s, "{n:>9}");
        }
        s.push('\n');
    }
    s
}

/// The whole evaluation report: accuracy, loss, confusion table, per-class scores, macro-F1.
pub fn report_text(r: &EvalResult, what: &str) -> String {
    let c = &r.confusion;
    let mut s = format!(
        "{what}: {} images  accuracy {:.2}%  loss {:.4}  macro-F1 {:.4}\n\nconfusion matrix (rows true, columns predicted):\n{}\n",
        c.total(),
        100.0 * r.accuracy,
        r.loss,
        c.macro_f1(),
        confusion_text(c)
    );
    let _ = writeln!(
        s,
        "{:>12}{:>11}{:>9}{:>9}{:>9}",
        "class", "precision", "recall", "F1", "support"
    );
    for (i, sc) in c.class_scores().iter().enumerate() {
        let _ = writeln!(
            s,
            "{:>12}{:>11.4}{:>9.4}{:>9.4}{:>9}",
            EMOTIONS[i], sc.precision, sc.recall, sc.f1, sc.support
        );
    }
    s
}

/// Writes `index,true,predicted,p_Angry,…,p_Neutral` per image (labels as numbers).
pub fn write_predictions(path: &Path, labels: &[u8], probs: &[f32]) -> Result<()> {
    assert_eq!(probs.len(), labels.len() * NUM_CLASSES);
    let mut out = String::from("index,true,predicted");
    for name in EMOTIONS {
        let _ = write!(out, ",p_{name}");
    }
    out.push('\n');
    for (i, (&label, p)) in labels
        .iter()
        .zip(probs.chunks_exact(NUM_CLASSES))
        .enumerate()
    {
        let _ = write!(out, "{i},{label},{}", argmax(p));
        for v in p {
            let _ = write!(out, ",{v:.6}");
        }
        out.push('\n');
    }
    crate::report::write_atomic(path, out.as_bytes())
}
