//! Evaluation of a checkpoint: accuracy, loss, the labelled confusion matrix, per-class
//! precision/recall/F1, and per-image predictions; with test-time augmentation ([`Tta`]),
//! the same figures for logits averaged over several views, reported beside the plain ones.

use crate::augment;
use crate::backend::gpu::context::block_on;
use crate::backend::{stats, Activation, Backend};
use crate::checkpoint::Checkpoint;
use crate::data::{Dataset, EMOTIONS};
use crate::error::{Error, Result};
use crate::metrics::{argmax, Confusion};
use crate::model::network::{Mode, Network, OpVisitor, Watch};
use crate::model::{ModelSpec, Op, Plan};
use crate::shape::{DenseShape, NUM_CLASSES};
use std::fmt::Write as _;
use std::path::Path;

/// The largest batch of evaluation-only passes; smaller where the device's buffers are
/// smaller ([`eval_batch`]).
pub const EVAL_BATCH: usize = 256;

/// How far a `crops` view of [`Tta`] shifts the image, in pixels along each axis.
pub const TTA_SHIFT: i32 = 2;

/// Every view test-time augmentation uses, as `(flip, dx, dy)` of an order entry
/// ([`augment::pack`]: mirror first, then read source pixel `(y + dy, x + dx)` with the edges
/// repeated). A mode's views are the first [`Tta::views`] of these, so each mode starts with
/// the views of the one before it.
const VIEWS: [(bool, i32, i32); 10] = {
    let s = TTA_SHIFT;
    [
        (false, 0, 0), // the image as it is
        (true, 0, 0),  // mirrored
        (false, -s, -s),
        (true, -s, -s),
        (false, s, -s),
        (true, s, -s),
        (false, -s, s),
        (true, -s, s),
        (false, s, s),
        (true, s, s),
    ]
};

/// Test-time augmentation: the views whose logits are averaged (an unweighted mean) before
/// the softmax. Results with it are always reported beside, never instead of, the plain
/// ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Tta {
    /// One view: the image as it is (plain evaluation).
    #[default]
    None,
    /// Two views: the image and its mirror image.
    Flip,
    /// Ten views: five positions (the image, and the image moved by [`TTA_SHIFT`] pixels
    /// towards each corner: `(dx, dy)` = (±2, ±2), edges repeated, so each shows a 46×46
    /// corner crop at full size) × {as it is, mirrored}. The first two are `flip`'s.
    Crops,
}

impl Tta {
    /// Every mode, in order of their view counts.
    pub const ALL: [Tta; 3] = [Tta::None, Tta::Flip, Tta::Crops];

    /// `none`, `flip` or `crops`.
    pub fn name(self) -> &'static str {
        match self {
            Tta::None => "none",
            Tta::Flip => "flip",
            Tta::Crops => "crops",
        }
    }

    /// Parses `none`, `flip` or `crops`.
    pub fn parse(s: &str) -> Result<Tta> {
        Tta::ALL
            .into_iter()
            .find(|t| t.name() == s.trim())
            .ok_or_else(|| Error::Config(format!("--tta '{s}': expected none, flip or crops")))
    }

    /// The views, `(flip, dx, dy)` as [`augment::pack`] reads them, the image as it is first.
    pub fn views(self) -> &'static [(bool, i32, i32)] {
        let n = match self {
            Tta::None => 1,
            Tta::Flip => 2,
            Tta::Crops => VIEWS.len(),
        };
        &VIEWS[..n]
    }

    /// The augmented modes an evaluator built with this one reports, in order: each mode
    /// above `none` up to this one (a pass over `crops`' views passes over `flip`'s first).
    pub fn reported(self) -> Vec<Tta> {
        let n = self.views().len();
        Tta::ALL[1..]
            .iter()
            .copied()
            .filter(|t| t.views().len() <= n)
            .collect()
    }
}

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
    /// With test-time augmentation, the same figures for each augmented mode the evaluator
    /// reports ([`Tta::reported`]), computed from the mean of the views' logits (their own
    /// `tta` empty); the figures above stay the plain, one-view ones. Empty without.
    pub tta: Vec<(Tta, EvalResult)>,
}

impl EvalResult {
    /// The result of augmented mode `tta`, if this pass computed it.
    pub fn with_tta(&self, tta: Tta) -> Option<&EvalResult> {
        self.tta.iter().find(|(t, _)| *t == tta).map(|(_, r)| r)
    }
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
/// pass accumulates into; with test-time augmentation, the views' orders and the buffers of
/// the averaged logits.
pub struct Evaluator<'b, B: Backend> {
    be: &'b B,
    net: Network<B>,
    stats: B::Tensor,      // (4) see backend::stats
    confusion: B::Indices, // (7, 7) rows true, columns predicted
    ones: B::Tensor,       // (7) uniform class weights
    tta: Tta,
    /// Images the view orders cover (sets evaluated with TTA hold at most this many).
    max_images: usize,
    /// `(V, max_images)` order entries, view-major: view `v` of image `i` at
    /// `v·max_images + i` ([`augment::pack`]); `None` without TTA.
    views: Option<B::Indices>,
    mean: B::Tensor,       // (batch, 7) running mean of the views' logits
    mean_probs: B::Tensor, // (batch, 7) softmax of the mean
    /// Per reported mode ([`Tta::reported`]): its stats `(4)` and confusion `(7, 7)`.
    tta_sums: Vec<(Tta, B::Tensor, B::Indices)>,
    /// Watches every op's output for NaN and infinities.
    check: FiniteCheck<B>,
}

/// Watches every op's output for NaN and infinities during evaluation passes. Each image's
/// values of an op are multiplied by zeros and summed (a dense op of one output with zero
/// weights): 0 when they are all finite, NaN when any is not (0·∞ and 0·NaN are NaN, and no
/// sum of zeros overflows). The results are added into one flag per op and batch position,
/// which stays NaN once it is. Ops run one by one while watched (a convolution's ReLU
/// apart from it), so a NaN that a ReLU or a max pool would drop is still seen where it
/// arises. Ops that give finite values from finite inputs on every backend (ReLU and
/// linear activations, max pooling, evaluation's dropout, which copies) cannot be the
/// first to give one, so their outputs are not read.
struct FiniteCheck<B: Backend> {
    zeros: B::Tensor,      // (widest + 1) weights and bias, all 0
    product: B::Tensor,    // (batch) one op's products
    flags: Vec<B::Tensor>, // per op (batch): 0, or NaN once the op gave a non-finite value
    /// Per op: values per image, and the op described (`dense 120`).
    ops: Vec<(usize, String)>,
    /// Per op: whether it can make a value that is not a number from inputs that are.
    watched: Vec<bool>,
    /// The most values per image of any op.
    widest: usize,
    /// The largest batch.
    batch: usize,
    /// The model's name, for messages.
    model: String,
}

impl<B: Backend> FiniteCheck<B> {
    fn new(be: &B, spec: &ModelSpec, plan: &Plan) -> FiniteCheck<B> {
        let ops: Vec<(usize, String)> = plan
            .ops
            .iter()
            .map(|op| (op.output_len() / plan.batch, op.describe()))
            .collect();
        let widest = ops.iter().map(|(n, _)| *n).max().unwrap_or(0);
        let watched = plan
            .ops
            .iter()
            .map(|op| {
                !matches!(
                    op,
                    Op::Pool { .. }
                        | Op::Dropout { .. }
                        | Op::Act {
                            act: Activation::Relu | Activation::Linear,
                            ..
                        }
                )
            })
            .collect();
        FiniteCheck {
            watched,
            zeros: be.zeros(widest + 1),
            product: be.zeros(plan.batch),
            flags: ops.iter().map(|_| be.zeros(plan.batch)).collect(),
            ops,
            widest,
            batch: plan.batch,
            model: spec.name.clone(),
        }
    }

    /// Clears the flags before a pass.
    fn reset(&mut self, be: &B) {
        let zeros = vec![0.0; self.batch];
        for f in &mut self.flags {
            be.write(f, &zeros);
        }
    }

    /// Adds op `i`'s `output (batch, per image)` to its flags.
    fn observe(&mut self, be: &B, i: usize, output: &B::Tensor, batch: usize) {
        if !self.watched[i] {
            return;
        }
        let shape = DenseShape {
            batch,
            in_f: self.ops[i].0,
            out_f: 1,
        };
        be.dense_forward(
            &mut self.product,
            output,
            &self.zeros,
            0,
            self.widest,
            &shape,
        );
        be.scale_add(&mut self.flags[i], &self.product, 1.0, 1.0, batch);
    }

    /// After a pass: the first op (in model order) that gave a non-finite value, as an
    /// error naming it.
    async fn verdict(&self, be: &B) -> Result<()> {
        for (i, flag) in self.flags.iter().enumerate() {
            if be.download_async(flag).await.iter().any(|x| !x.is_finite()) {
                return Err(Error::NonFinite(format!(
                    "layer op {} ({}) of model '{}' gives NaN or infinite values, so its \
                     predictions are not numbers: its weights are too large for 32-bit floats \
                     (or damaged)",
                    i + 1,
                    self.ops[i].1,
                    crate::report::printable(&self.model)
                )));
            }
        }
        Ok(())
    }
}

/// A [`FiniteCheck`] over a batch of `batch` images, as a folded pass's watch.
struct Watching<'c, B: Backend> {
    check: &'c mut FiniteCheck<B>,
    batch: usize,
}

impl<B: Backend> Watch<B> for Watching<'_, B> {
    fn observe(&mut self, be: &B, i: usize, output: &B::Tensor) {
        self.check.observe(be, i, output, self.batch);
    }

    fn flags(&mut self, i: usize) -> &mut B::Tensor {
        &mut self.check.flags[i]
    }
}

impl<'b, B: Backend> Evaluator<'b, B> {
    /// Builds the network of `spec` with `params (P)` and the initial running statistics
    /// ([`Evaluator::set_params`] replaces both), in batches that fit the device, for sets of
    /// at most `max_images` images.
    pub fn new(
        be: &'b B,
        spec: &ModelSpec,
        params: &[f32],
        max_images: usize,
    ) -> Result<Evaluator<'b, B>> {
        Evaluator::with_tta(be, spec, params, max_images, Tta::None)
    }

    /// [`Evaluator::new`] with test-time augmentation `tta`: each pass reports the plain
    /// figures and, apart, those of every mode of [`Tta::reported`].
    pub fn with_tta(
        be: &'b B,
        spec: &ModelSpec,
        params: &[f32],
        max_images: usize,
        tta: Tta,
    ) -> Result<Evaluator<'b, B>> {
        let batch = eval_batch(be, spec, max_images)?;
        Evaluator::build(be, spec, params, batch, max_images, tta)
    }

    /// Builds the network of `spec` with `params (P)` at exactly `batch` images per batch
    /// (benchmarks compare it with training at that batch; the caller checks it fits).
    pub fn with_batch(
        be: &'b B,
        spec: &ModelSpec,
        params: &[f32],
        batch: usize,
    ) -> Result<Evaluator<'b, B>> {
        Evaluator::build(be, spec, params, batch, 0, Tta::None)
    }

    fn build(
        be: &'b B,
        spec: &ModelSpec,
        params: &[f32],
        batch: usize,
        max_images: usize,
        tta: Tta,
    ) -> Result<Evaluator<'b, B>> {
        let plan = Plan::new(spec, batch)?;
        let views = (tta != Tta::None).then(|| {
            let entries: Vec<u32> = tta
                .views()
                .iter()
                .flat_map(|&(flip, dx, dy)| {
                    (0..max_images as u32).map(move |i| augment::pack(i, flip, dx, dy))
                })
                .collect();
            be.upload_indices(&entries)
        });
        let tta_sums = tta
            .reported()
            .into_iter()
            .map(|t| {
                let st = be.zeros(stats::LEN);
                (t, st, be.zeros_indices(NUM_CLASSES * NUM_CLASSES))
            })
            .collect();
        let check = FiniteCheck::new(be, spec, &plan);
        Ok(Evaluator {
            be,
            check,
            net: Network::new(be, plan, params),
            stats: be.zeros(stats::LEN),
            confusion: be.zeros_indices(NUM_CLASSES * NUM_CLASSES),
            ones: be.upload(&[1.0; NUM_CLASSES]),
            tta,
            max_images,
            views,
            mean: be.zeros(batch * NUM_CLASSES),
            mean_probs: be.zeros(batch * NUM_CLASSES),
            tta_sums,
        })
    }

    /// Images per evaluation batch.
    pub fn batch(&self) -> usize {
        self.net.plan.batch
    }

    /// Takes the parameters `(P)` and running statistics `(S)` from device tensors (a
    /// trainer's), without a round trip through the host.
    pub fn load_params(&mut self, params: &B::Tensor, running: &B::Tensor) {
        let plan = &self.net.plan;
        let (p, s) = (plan.num_params, plan.num_running);
        self.be.copy(&mut self.net.params, params, p);
        self.be.copy(&mut self.net.running, running, s);
    }

    /// Takes the parameters `(P)` and running statistics `(S)` from the host (a
    /// checkpoint's).
    pub fn set_params(&mut self, params: &[f32], running: &[f32]) {
        assert_eq!(
            running.len(),
            self.net.plan.num_running,
            "running statistics"
        );
        self.be.write(&mut self.net.params, params);
        self.be.write(&mut self.net.running, running);
    }

    /// One pass over `set`: softmax statistics and the confusion matrix accumulate on the
    /// device and are read once at the end (plus the probabilities per batch when
    /// `keep_probs`). With test-time augmentation each batch runs once per view; the first
    /// view (the image as it is) gives the plain figures, and after the last view of each
    /// reported mode the running mean of the logits gives that mode's.
    ///
    /// Every op's output is watched for NaN and infinities ([`FiniteCheck`]): a model whose
    /// values stop being numbers is an [`Error::NonFinite`] naming the first op that gave
    /// one, never an accuracy.
    pub fn evaluate(&mut self, set: &DeviceSet<B>, keep_probs: bool) -> Result<EvalResult> {
        block_on(self.evaluate_async(set, keep_probs))
    }

    /// [`Evaluator::evaluate`] awaiting its read-backs, as a browser must.
    ///
    /// The pass folds each batch norm into the convolution before it
    /// ([`Network::forward_watched`]); when its watch sees a value that is not a number, the
    /// set runs again op by op, whose watch names the op that made it (and whose figures
    /// stand, should the folded pass's rounding alone have overflowed).
    pub async fn evaluate_async(
        &mut self,
        set: &DeviceSet<B>,
        keep_probs: bool,
    ) -> Result<EvalResult> {
        match self.pass(set, keep_probs, true).await {
            Err(Error::NonFinite(_)) => self.pass(set, keep_probs, false).await,
            other => other,
        }
    }

    /// One pass over `set`, batch norms folded into their convolutions when `fold`.
    async fn pass(
        &mut self,
        set: &DeviceSet<B>,
        keep_probs: bool,
        fold: bool,
    ) -> Result<EvalResult> {
        let Evaluator {
            be,
            check,
            net,
            stats,
            confusion,
            ones,
            tta,
            max_images,
            views,
            mean,
            mean_probs,
            tta_sums,
        } = self;
        let (be, max_images) = (*be, *max_images);
        assert!(
            views.is_none() || set.n <= max_images,
            "a set of {} images, but the views cover {max_images}",
            set.n
        );
        be.write(stats, &[0.0; stats::LEN]);
        be.write_indices(confusion, &[0; NUM_CLASSES * NUM_CLASSES]);
        check.reset(be);
        for (_, st, conf) in tta_sums.iter_mut() {
            be.write(st, &[0.0; stats::LEN]);
            be.write_indices(conf, &[0; NUM_CLASSES * NUM_CLASSES]);
        }
        let new_probs = || keep_probs.then(|| Vec::with_capacity(set.n * NUM_CLASSES));
        let mut probs = new_probs();
        let mut tta_probs: Vec<Option<Vec<f32>>> = tta_sums.iter().map(|_| new_probs()).collect();
        let n_views = tta.views().len();
        let max_batch = net.plan.batch;
        for offset in (0..set.n).step_by(max_batch) {
            let batch = max_batch.min(set.n - offset);
            for v in 0..n_views {
                let (order, start) = match views {
                    Some(o) => (&*o, v * max_images + offset),
                    None => (&set.identity, offset),
                };
                be.gather_batch(
                    &mut net.x,
                    &mut net.labels,
                    &set.images,
                    order,
                    start,
                    batch,
                );
                if fold {
                    net.forward_watched(be, batch, &mut Watching { check, batch });
                } else {
                    let watch: OpVisitor<'_, B> = &mut |i, out| check.observe(be, i, out, batch);
                    net.forward_each(be, batch, Mode::Eval, watch);
                }
                if v == 0 {
                    net.loss_forward(be, stats, ones, 0.0, batch);
                    be.confusion_accumulate(confusion, &net.probs, &net.labels, batch, NUM_CLASSES);
                }
                if n_views == 1 {
                    continue;
                }
                let k = v as f32;
                let len = batch * NUM_CLASSES;
                be.scale_add(mean, net.logits(), k / (k + 1.0), 1.0 / (k + 1.0), len);
                for ((t, st, conf), p) in tta_sums.iter_mut().zip(&mut tta_probs) {
                    if t.views().len() != v + 1 {
                        continue;
                    }
                    be.softmax_cross_entropy_forward(
                        mean_probs,
                        st,
                        mean,
                        &net.labels,
                        ones,
                        0.0,
                        batch,
                        NUM_CLASSES,
                    );
                    be.confusion_accumulate(conf, mean_probs, &net.labels, batch, NUM_CLASSES);
                    if let Some(p) = p.as_mut() {
                        be.submit();
                        p.extend_from_slice(&be.download_async(mean_probs).await[..len]);
                    }
                }
            }
            be.submit();
            // The plain probabilities: only the first view's loss op writes net.probs.
            if let Some(p) = probs.as_mut() {
                let got = be.download_async(&net.probs).await;
                p.extend_from_slice(&got[..batch * NUM_CLASSES]);
            }
        }
        let mut tta = Vec::new();
        for ((t, st, conf), p) in tta_sums.iter().zip(tta_probs) {
            tta.push((*t, read_result(be, st, conf, p).await));
        }
        check.verdict(be).await?;
        Ok(EvalResult {
            tta,
            ..read_result(be, stats, confusion, probs).await
        })
    }
}

/// Reads one pass's statistics `(4)` and confusion `(7, 7)` back into a result.
async fn read_result<B: Backend>(
    be: &B,
    stats: &B::Tensor,
    confusion: &B::Indices,
    probs: Option<Vec<f32>>,
) -> EvalResult {
    let s = be.download_async(stats).await;
    let confusion = Confusion::from_flat(&be.download_indices_async(confusion).await);
    let samples = s[stats::SAMPLES].max(1.0) as f64;
    EvalResult {
        loss: s[stats::LOSS_SUM] as f64 / samples,
        accuracy: confusion.accuracy(),
        confusion,
        probs,
        tta: Vec::new(),
    }
}

/// `e` as an error of the checkpoint at `path` when its model gave NaN or infinite values
/// ([`Error::NonFinite`]); any other error as it is.
pub fn blame_checkpoint(path: &Path, e: Error) -> Error {
    match e {
        Error::NonFinite(problem) => Error::BadCheckpoint {
            path: path.into(),
            problem: format!("{problem}; use another checkpoint"),
        },
        other => other,
    }
}

/// Runs the checkpoint's model over `ds` on `be`; probabilities `(n, 7)` kept when asked.
pub fn evaluate_checkpoint<B: Backend>(
    be: &B,
    ck: &Checkpoint,
    ds: &Dataset,
    keep_probs: bool,
) -> Result<EvalResult> {
    evaluate_checkpoint_with_tta(be, ck, ds, keep_probs, Tta::None)
}

/// [`evaluate_checkpoint`] with test-time augmentation `tta` (see [`Evaluator::with_tta`]).
pub fn evaluate_checkpoint_with_tta<B: Backend>(
    be: &B,
    ck: &Checkpoint,
    ds: &Dataset,
    keep_probs: bool,
    tta: Tta,
) -> Result<EvalResult> {
    if ds.is_empty() {
        return Err(Error::Config("the evaluation split has no images".into()));
    }
    let mut ev = Evaluator::with_tta(be, &ck.spec, &ck.params, ds.len(), tta)?;
    ev.set_params(&ck.params, &ck.running);
    let set = DeviceSet::new(be, ds);
    ev.evaluate(&set, keep_probs)
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

/// One line per test-time augmentation mode of `r` (none without): `{what} with TTA flip (2
/// views averaged): … accuracy … loss … macro-F1 …`, labelled so it is never read as the
/// plain result.
pub fn tta_lines(r: &EvalResult, what: &str) -> String {
    let mut s = String::new();
    for (t, rr) in &r.tta {
        let _ = writeln!(
            s,
            "{what} with TTA {} ({} views averaged): {} images  accuracy {:.2}%  loss {:.4}  macro-F1 {:.4}",
            t.name(),
            t.views().len(),
            rr.confusion.total(),
            100.0 * rr.accuracy,
            rr.loss,
            rr.confusion.macro_f1()
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
    crate::files::write_output(path, out.as_bytes())
}
