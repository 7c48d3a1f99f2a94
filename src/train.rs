//! The training step and epoch, generic over the backend.
//!
//! One step is gather → forward → softmax/cross-entropy → backward → Adam, recorded by the
//! backend and submitted once. Loss and accuracy accumulate on the device and are read once
//! per epoch (or per evaluation), never per batch.

use crate::augment::{self, Augment};
use crate::backend::{stats, Backend};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::metrics::Confusion;
use crate::model::network::{Adam, Network};
use crate::model::{ModelSpec, Plan};
use crate::rng::Rng;
use crate::shape::NUM_CLASSES;
use std::time::{Duration, Instant};

/// How classes are weighted in the training loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeight {
    /// Every class weighs 1.
    None,
    /// `n / (7·count_c)`, scikit-learn's "balanced": rare classes weigh more.
    Balanced,
    /// Each class's share of the training set, `count_c / n` — the notebook's weights.
    Frequency,
}

impl ClassWeight {
    /// Parses `none`, `balanced` or `frequency`.
    pub fn parse(s: &str) -> Result<ClassWeight> {
        match s {
            "none" => Ok(ClassWeight::None),
            "balanced" => Ok(ClassWeight::Balanced),
            "frequency" => Ok(ClassWeight::Frequency),
            _ => Err(Error::Config(format!(
                "--class-weight '{s}': expected none, balanced or frequency"
            ))),
        }
    }

    /// The per-class weights `(7)` for a training set with these class counts. A class with
    /// no images gets weight 0 under `balanced` (it never occurs, so it never matters).
    pub fn weights(self, counts: &[usize; NUM_CLASSES]) -> [f32; NUM_CLASSES] {
        let n: usize = counts.iter().sum();
        let mut w = [1f32; NUM_CLASSES];
        for (c, w) in w.iter_mut().enumerate() {
            *w = match self {
                ClassWeight::None => 1.0,
                ClassWeight::Balanced if counts[c] == 0 => 0.0,
                ClassWeight::Balanced => n as f32 / (NUM_CLASSES * counts[c]) as f32,
                ClassWeight::Frequency => counts[c] as f32 / n.max(1) as f32,
            };
        }
        w
    }
}

/// A data set resident on the device, with an identity order for evaluation.
pub struct DeviceSet<B: Backend> {
    /// Pixels and labels.
    pub images: B::Images,
    /// `0..n` `(n)`, the order in which evaluation visits the images.
    pub identity: B::Indices,
    /// Images.
    pub n: usize,
    /// Labels on the host `(n)`, for per-image reports.
    pub labels: Vec<u8>,
}

impl<B: Backend> DeviceSet<B> {
    /// Uploads `ds` once.
    pub fn new(be: &B, ds: &Dataset) -> DeviceSet<B> {
        let identity: Vec<u32> = (0..ds.len() as u32).collect();
        DeviceSet {
            images: be.upload_images(&ds.pixels, &ds.labels),
            identity: be.upload_indices(&identity),
            n: ds.len(),
            labels: ds.labels.clone(),
        }
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

/// Where training stands, saved in checkpoints so an interrupted run resumes exactly.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: usize,
    /// Batches of the current epoch already trained.
    pub next_batch: usize,
    /// The shuffle generator's state before the current epoch's shuffle.
    pub epoch_rng: [u64; 4],
    /// Statistics accumulated so far in the current epoch `(4)`.
    pub partial: [f32; stats::LEN],
}

impl TrainState {
    /// The state before the first epoch of a run seeded with `seed`.
    pub fn new(seed: u64) -> TrainState {
        // The shuffle stream is separate from the weight-init stream of the same seed.
        let rng = Rng::new(seed ^ 0x5348_5546_464c_4521);
        TrainState {
            epoch: 0,
            next_batch: 0,
            epoch_rng: rng.state(),
            partial: [0.0; stats::LEN],
        }
    }
}

/// How an epoch ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochOutcome {
    /// Mean class-weighted training loss over the batches run.
    pub loss: f64,
    /// Training accuracy over the batches run.
    pub accuracy: f64,
    /// Images trained on in this call.
    pub images: usize,
    /// True when `keep_going` asked to stop before the epoch's end.
    pub interrupted: bool,
}

/// A model being trained on one backend: the network, Adam, the training set on the device.
pub struct Trainer<'b, B: Backend> {
    /// The backend.
    pub be: &'b B,
    /// The model's buffers.
    pub net: Network<B>,
    /// Optimizer state.
    pub adam: Adam<B>,
    /// The model description.
    pub spec: ModelSpec,
    /// Where training stands.
    pub state: TrainState,
    train: DeviceSet<B>,
    order: B::Indices,     // (n_train) this epoch's permutation
    weights: B::Tensor,    // (7) class weights of the training loss
    ones: B::Tensor,       // (7) uniform weights for evaluation
    stats: B::Tensor,      // (4) see backend::stats
    confusion: B::Indices, // (7, 7)
    batch: usize,
    live_every: Option<Duration>,
    augment: Augment,
}

/// What [`Trainer::run_epoch`] tells its callback after each batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchDone {
    /// Images trained so far in this call.
    pub images: usize,
    /// Running training loss and accuracy of the epoch, when they were read back after this
    /// batch (see [`Trainer::set_live_stats`]).
    pub running: Option<(f64, f64)>,
}

impl<'b, B: Backend> Trainer<'b, B> {
    /// Uploads the training set and the parameters `(P)`; `batch` is the largest batch.
    pub fn new(
        be: &'b B,
        spec: ModelSpec,
        params: &[f32],
        batch: usize,
        train: &Dataset,
        class_weight: ClassWeight,
        seed: u64,
    ) -> Result<Trainer<'b, B>> {
        if train.is_empty() {
            return Err(Error::Config("the training split has no images".into()));
        }
        if train.len() > augment::ROW_MASK as usize + 1 {
            return Err(Error::Config(format!(
                "the training split has {} images; at most {} fit the order buffer",
                train.len(),
                augment::ROW_MASK as usize + 1
            )));
        }
        let plan = Plan::new(&spec, batch)?;
        let weights = class_weight.weights(&train.class_counts());
        Ok(Trainer {
            be,
            adam: Adam::new(be, plan.num_params),
            net: Network::new(be, plan, params),
            spec,
            state: TrainState::new(seed),
            order: be.zeros_indices(train.len()),
            train: DeviceSet::new(be, train),
            weights: be.upload(&weights),
            ones: be.upload(&[1.0; NUM_CLASSES]),
            stats: be.zeros(stats::LEN),
            confusion: be.zeros_indices(NUM_CLASSES * NUM_CLASSES),
            batch,
            live_every: None,
            augment: Augment::NONE,
        })
    }

    /// Images in the training set.
    pub fn train_len(&self) -> usize {
        self.train.n
    }

    /// Batches per epoch (the last one may be smaller).
    pub fn batches_per_epoch(&self) -> usize {
        self.train.n.div_ceil(self.batch)
    }

    /// The largest batch.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// One step on images `order[offset..offset + batch]`.
    fn step(&mut self, offset: usize, batch: usize, lr: f32) {
        let be = self.be;
        let net = &mut self.net;
        be.gather_batch(
            &mut net.x,
            &mut net.labels,
            &self.train.images,
            &self.order,
            offset,
            batch,
        );
        net.forward(be, batch);
        net.loss_forward(be, &mut self.stats, &self.weights, batch);
        net.backward(be, &self.weights, batch);
        self.adam.step(be, net, lr);
        be.submit();
    }

    /// The epoch's running loss and accuracy, read back when `live_every` has passed since
    /// `last`.
    fn live_stats(&self, last: &mut Instant) -> Option<(f64, f64)> {
        let every = self.live_every?;
        if last.elapsed() < every {
            return None;
        }
        *last = Instant::now();
        let s = self.be.download(&self.stats);
        let samples = s[stats::SAMPLES].max(1.0) as f64;
        Some((
            s[stats::LOSS_SUM] as f64 / samples,
            s[stats::CORRECT] as f64 / samples,
        ))
    }

    /// Reads the running loss and accuracy back at most once per `every` during
    /// [`Trainer::run_epoch`] (for a live progress bar); `None`, the default, never does, so a
    /// GPU epoch has no readback before its end.
    pub fn set_live_stats(&mut self, every: Option<Duration>) {
        self.live_every = every;
    }

    /// Draws `augment` for every training image each epoch, from the shuffle's generator
    /// (so a resumed run redraws the same augmentation); the default draws none.
    pub fn set_augment(&mut self, augment: Augment) {
        self.augment = augment;
    }

    /// Trains the rest of the current epoch at learning rate `lr`. `keep_going` is called
    /// after each batch is submitted; returning false stops after that batch, with the state
    /// saved so that [`Trainer::run_epoch`] continues the same epoch later.
    pub fn run_epoch(
        &mut self,
        lr: f32,
        keep_going: &mut dyn FnMut(BatchDone) -> bool,
    ) -> EpochOutcome {
        let n = self.train.n;
        let mut rng = Rng::from_state(self.state.epoch_rng);
        let mut perm: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut perm);
        self.augment.draw(&mut rng, &mut perm);
        self.be.write_indices(&mut self.order, &perm);
        self.be.write(&mut self.stats, &self.state.partial);
        let start = self.state.next_batch;
        let mut done = 0;
        let mut interrupted = false;
        let mut last_peek = Instant::now();
        for b in start..self.batches_per_epoch() {
            let offset = b * self.batch;
            let batch = self.batch.min(n - offset);
            self.step(offset, batch, lr);
            done += batch;
            self.state.next_batch = b + 1;
            let running = self.live_stats(&mut last_peek);
            let info = BatchDone {
                images: done,
                running,
            };
            if !keep_going(info) && b + 1 < self.batches_per_epoch() {
                interrupted = true;
                break;
            }
        }
        let s = self.be.download(&self.stats);
        self.state.partial.copy_from_slice(&s[..stats::LEN]);
        if !interrupted {
            self.state = TrainState {
                epoch: self.state.epoch + 1,
                next_batch: 0,
                epoch_rng: rng.state(),
                partial: [0.0; stats::LEN],
            };
        }
        let samples = s[stats::SAMPLES].max(1.0) as f64;
        EpochOutcome {
            loss: s[stats::LOSS_SUM] as f64 / samples,
            accuracy: s[stats::CORRECT] as f64 / samples,
            images: done,
            interrupted,
        }
    }

    /// Loss, accuracy and confusion matrix over `set` (unweighted loss); the probabilities
    /// `(n, 7)` too when `keep_probs`.
    pub fn evaluate(&mut self, set: &DeviceSet<B>, keep_probs: bool) -> EvalResult {
        evaluate(
            self.be,
            &mut self.net,
            set,
            &mut self.stats,
            &mut self.confusion,
            &self.ones,
            keep_probs,
        )
    }

    /// The parameters `(P)` on the host.
    pub fn params(&self) -> Vec<f32> {
        self.be.download(&self.net.params)
    }

    /// Replaces the parameters `(P)` (e.g. to restore the last good ones).
    pub fn set_params(&mut self, params: &[f32]) {
        self.be.write(&mut self.net.params, params);
    }

    /// Adam's moments and step count on the host.
    pub fn optimizer_state(&self) -> crate::checkpoint::OptimizerState {
        crate::checkpoint::OptimizerState {
            m: self.be.download(&self.adam.m),
            v: self.be.download(&self.adam.v),
            t: self.adam.t,
        }
    }

    /// Restores Adam's moments and step count.
    pub fn set_optimizer_state(&mut self, s: &crate::checkpoint::OptimizerState) {
        self.be.write(&mut self.adam.m, &s.m);
        self.be.write(&mut self.adam.v, &s.v);
        self.adam.t = s.t;
    }
}

/// One pass of `net` over `set` in batches of the network's size: softmax statistics and the
/// confusion matrix accumulate on the device and are read once at the end (plus the
/// probabilities per batch when `keep_probs`). `stats (4)` and `confusion (7, 7)` are scratch.
pub fn evaluate<B: Backend>(
    be: &B,
    net: &mut Network<B>,
    set: &DeviceSet<B>,
    stats_buf: &mut B::Tensor,
    confusion: &mut B::Indices,
    ones: &B::Tensor,
    keep_probs: bool,
) -> EvalResult {
    be.write(stats_buf, &[0.0; stats::LEN]);
    be.write_indices(confusion, &[0; NUM_CLASSES * NUM_CLASSES]);
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
        net.loss_forward(be, stats_buf, ones, batch);
        be.confusion_accumulate(confusion, &net.probs, &net.labels, batch, NUM_CLASSES);
        be.submit();
        if let Some(p) = probs.as_mut() {
            p.extend_from_slice(&be.download(&net.probs)[..batch * NUM_CLASSES]);
        }
    }
    let s = be.download(stats_buf);
    let confusion = Confusion::from_flat(&be.download_indices(confusion));
    let samples = s[stats::SAMPLES].max(1.0) as f64;
    EvalResult {
        loss: s[stats::LOSS_SUM] as f64 / samples,
        accuracy: confusion.accuracy(),
        confusion,
        probs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_weights_follow_their_definitions() {
        let counts = [10, 0, 20, 30, 10, 20, 10];
        let f = ClassWeight::Frequency.weights(&counts);
        assert!((f[3] - 0.3).abs() < 1e-6 && f[1] == 0.0);
        let b = ClassWeight::Balanced.weights(&counts);
        assert!((b[0] - 100.0 / 70.0).abs() < 1e-5 && b[1] == 0.0);
        assert_eq!(ClassWeight::None.weights(&counts), [1.0; 7]);
        assert!(ClassWeight::parse("equal").is_err());
    }
}
