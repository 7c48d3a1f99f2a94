//! Evaluation of a checkpoint: accuracy, loss, the labelled confusion matrix, per-class
//! precision/recall/F1, and per-image predictions.

use crate::backend::{stats, Backend};
use crate::checkpoint::Checkpoint;
use crate::data::{Dataset, EMOTIONS};
use crate::error::{Error, Result};
use crate::metrics::{argmax, Confusion};
use crate::model::network::Network;
use crate::model::{ModelSpec, Plan};
use crate::shape::NUM_CLASSES;
use std::fmt::Write as _;
use std::path::Path;

/// The largest batch of evaluation-only passes; smaller where the device's buffers are
/// smaller ([`eval_batch`]).
pub const EVAL_BATCH: usize = 256;

/// A data set resident on the device, with an identity order for evaluation.
pub struct DeviceSet<B: Backend> {
    images: B::Images,    // (n, 48·48) u8 pixels and (n) labels
    identity: B::Indices, // (n) 0..n, the order in which evaluation visits the images
    n: usize,
}

impl<B: Backend> DeviceSet<B> {
    /// Uploads `ds` once.
    pub fn new(be: &B, ds: &Dataset) -> DeviceSet<B> {
        let identity: Vec<u32> = (0..ds.len() as u32).collect();
        DeviceSet {
            images: be.upload_images(&ds.pixels, &ds.labels),
            identity: be.upload_indices(&identity),
            n: ds.len(),
        }
    }

    /// Images in the set.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the set has no images.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// Loss, accuracy and confusion of one pass over a set.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalResult {
    /// Mean cross-entropy (unweighted).
    pub loss: f64,
    /// Share predicted right.
    pub accuracy: f64,
    /// Rows true, columns predicted.
    pub confusion: Confusion,
    /// Probabilities `(n, 7)` when asked for.
    pub probs: Option<Vec<f32>>,
}

/// The batch for evaluating `spec` over `n` images on `be`: [`EVAL_BATCH`], fewer when the
/// set is smaller or when the model's largest per-image buffer would not fit the device
/// (e.g. lavapipe binds at most 128 MiB). An error when not even one image fits.
pub fn eval_batch<B: Backend>(be: &B, spec: &ModelSpec, n: usize) -> Result<usize> {
    let plan = Plan::new(spec, 1)?;
    let limits = be.memory_limits();
    let fits = plan.largest_batch(&limits);
    if fits == 0 {
        plan.check_batch(1, &limits, &be.name())?;
    }
    Ok(EVAL_BATCH.min(fits).min(n.max(1)))
}

/// A model set up for evaluation: its network at the evaluation batch size and the buffers a
/// pass accumulates into.
pub struct Evaluator<'b, B: Backend> {
    be: &'b B,
    net: Network<B>,
    stats: B::Tensor,      // (4) see backend::stats
    confusion: B::Indices, // (7, 7) rows true, columns predicted
    ones: B::Tensor,       // (7) uniform class weights
}

impl<'b, B: Backend> Evaluator<'b, B> {
    /// Builds the network of `spec` with `params (P)`, in batches that fit the device, for
    /// sets of at most `max_images` images.
    pub fn new(
        be: &'b B,
        spec: &ModelSpec,
        params: &[f32],
        max_images: usize,
    ) -> Result<Evaluator<'b, B>> {
        let batch = eval_batch(be, spec, max_images)?;
        Evaluator::with_batch(be, spec, params, batch)
    }

    /// Builds the network of `spec` with `params (P)` at exactly `batch` images per batch
    /// (benchmarks compare it with training at that batch; the caller checks it fits).
    pub fn with_batch(
        be: &'b B,
        spec: &ModelSpec,
        params: &[f32],
        batch: usize,
    ) -> Result<Evaluator<'b, B>> {
        let plan = Plan::new(spec, batch)?;
        Ok(Evaluator {
            be,
            net: Network::new(be, plan, params),
            stats: be.zeros(stats::LEN),
            confusion: be.zeros_indices(NUM_CLASSES * NUM_CLASSES),
            ones: be.upload(&[1.0; NUM_CLASSES]),
        })
    }

    /// Images per evaluation batch.
    pub fn batch(&self) -> usize {
        self.net.plan.batch
    }

    /// Takes the parameters `(P)` from a device tensor (a trainer's), without a round trip
    /// through the host.
    pub fn load_params(&mut self, params: &B::Tensor) {
        let len = self.net.plan.num_params;
        self.be.copy(&mut self.net.params, params, len);
    }

    /// Takes the parameters `(P)` from the host.
    pub fn set_params(&mut self, params: &[f32]) {
        self.be.write(&mut self.net.params, params);
    }

    /// One pass over `set`: softmax statistics and the confusion matrix accumulate on the
    /// device and are read once at the end (plus the probabilities per batch when
    /// `keep_probs`).
    pub fn evaluate(&mut self, set: &DeviceSet<B>, keep_probs: bool) -> EvalResult {
        let (be, net) = (self.be, &mut self.net);
        be.write(&mut self.stats, &[0.0; stats::LEN]);
        be.write_indices(&mut self.confusion, &[0; NUM_CLASSES * NUM_CLASSES]);
        let mut probs = keep_probs.then(|| Vec::with_capacity(set.n * NUM_CLASSES));
        let max_batch = net.plan.batch;
        for offset in (0..set.n).step_by(max_batch) {
            let batch = max_batch.min(set.n - offset);
            be.gather_batch(
                &mut net.x,
                &mut net.labels,
                &set.images,
                &set.identity,
                offset,
                batch,
            );
            net.forward(be, batch);
            net.loss_forward(be, &mut self.stats, &self.ones, 0.0, batch);
            be.confusion_accumulate(
                &mut self.confusion,
                &net.probs,
                &net.labels,
                batch,
                NUM_CLASSES,
            );
            be.submit();
            if let Some(p) = probs.as_mut() {
                p.extend_from_slice(&be.download(&net.probs)[..batch * NUM_CLASSES]);
            }
        }
        let s = be.download(&self.stats);
        let confusion = Confusion::from_flat(&be.download_indices(&self.confusion));
        let samples = s[stats::SAMPLES].max(1.0) as f64;
        EvalResult {
            loss: s[stats::LOSS_SUM] as f64 / samples,
            accuracy: confusion.accuracy(),
            confusion,
            probs,
        }
    }
}

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
    let mut ev = Evaluator::new(be, &ck.spec, &ck.params, ds.len())?;
    let set = DeviceSet::new(be, ds);
    Ok(ev.evaluate(&set, keep_probs))
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
