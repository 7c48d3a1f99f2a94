//! The training step and epoch, generic over the backend, and what drives them from epoch to
//! epoch: learning-rate [`schedule`]s and [`early_stop`]ping.
//!
//! One step is gather → forward → softmax/cross-entropy → backward → optimizer, recorded by the
//! backend and submitted once. Loss and accuracy accumulate on the device and are read once
//! per epoch, never per batch.

pub mod early_stop;
pub mod schedule;

pub use early_stop::{Decision, EarlyStopping};
pub use schedule::{LrSchedule, PlateauMetric, Scheduler, Warmup};

use crate::augment::{self, Augment, Warp};
use crate::backend::gpu::context::block_on;
use crate::backend::{stats, Backend, OptimizerConfig};
use crate::checkpoint::{Average, OptimizerState};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::network::{Mode, Network, Optimizer};
use crate::model::{ModelSpec, Plan};
use crate::rng::Rng;
use crate::shape::NUM_CLASSES;
use std::time::Duration;
use web_time::Instant;

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

/// An epoch begun by [`Trainer::begin_epoch`]: its generator after the epoch's draws (the
/// next epoch's starts there) and the images trained since it began.
#[derive(Debug)]
pub struct EpochRun {
    rng: Rng,
    images: usize,
}

/// How a [`Trainer`] trains; fixed when it is built. Its defaults are the settings':
/// [`crate::settings::Settings::trainer_options`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainerOptions {
    /// The largest batch (the last batch of an epoch may be smaller).
    pub batch: usize,
    /// Class weighting of the training loss.
    pub class_weight: ClassWeight,
    /// Label smoothing ε of the training loss (PyTorch's `label_smoothing`; see
    /// [`Backend::softmax_cross_entropy_forward`]); 0 for none.
    pub label_smoothing: f32,
    /// Seed of the shuffles and augmentation (the weights come already initialised).
    pub seed: u64,
    /// Augmentation drawn for every training image each epoch, from the shuffle's generator
    /// (so a resumed run redraws the same augmentation).
    pub augment: Augment,
    /// Scale, rotation and erasing drawn for every training image each epoch, after the
    /// flips and shifts, from the same generator (see [`crate::augment`]).
    pub warp: Warp,
    /// The optimizer's rule and hyperparameters.
    pub optimizer: OptimizerConfig,
    /// Epochs of linear warm-up of the learning rate, per step (see [`Warmup`]); 0 for none.
    pub warmup_epochs: usize,
    /// Decay per step of the weights' exponential moving average (see [`Trainer::average`]);
    /// 0 keeps none.
    pub ema: f64,
    /// Read the running loss and accuracy back at most once per this long during
    /// [`Trainer::run_epoch`] (for a live progress bar); `None` never does, so a GPU epoch has
    /// no readback before its end.
    pub live_stats: Option<Duration>,
}

/// A model being trained on one backend: the network, the optimizer, the training set on the
/// device.
pub struct Trainer<'b, B: Backend> {
    be: &'b B,
    net: Network<B>,
    opt: Optimizer<B>,
    spec: ModelSpec,
    state: TrainState,
    opts: TrainerOptions,
    images: B::Images,  // (n_train, 48·48) u8 pixels and (n_train) labels
    n: usize,           // training images
    order: B::Indices,  // (n_train) this epoch's permutation, augmentation packed in
    weights: B::Tensor, // (7) class weights of the training loss
    stats: B::Tensor,   // (4) see backend::stats
    /// `(n_train, 4)` this epoch's [`augment::ImageWarp`]s, when `opts.warp` is active.
    warp: Option<B::Indices>,
    /// The weights' moving average, when `opts.ema > 0`: parameters `(P)` and running
    /// statistics `(S)`.
    average: Option<(B::Tensor, B::Tensor)>,
}

/// The decay of the weights' average at step `t` (1-based, the step just taken): `decay`,
/// warmed up as `min(decay, (1 + t)/(10 + t))` so that the first steps' average does not
/// cling to the initial weights (TensorFlow's `ExponentialMovingAverage` with
/// `num_updates`).
pub fn ema_decay(decay: f64, t: u64) -> f64 {
    decay.min((1.0 + t as f64) / (10.0 + t as f64))
}

/// What [`Trainer::run_epoch`] tells its callback after each batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchDone {
    /// Images trained so far in this call.
    pub images: usize,
    /// Running training loss and accuracy of the epoch, when they were read back after this
    /// batch (see [`TrainerOptions::live_stats`]).
    pub running: Option<(f64, f64)>,
    /// The learning rate this batch's step used: the epoch's rate times the warm-up factor.
    pub lr: f64,
}

impl<'b, B: Backend> Trainer<'b, B> {
    /// Uploads the training set and the parameters `(P)`, with fresh optimizer state, before
    /// the first epoch.
    pub fn new(
        be: &'b B,
        spec: ModelSpec,
        params: &[f32],
        train: &Dataset,
        opts: &TrainerOptions,
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
        let plan = Plan::new(&spec, opts.batch)?;
        if opts.batch < 2 && plan.needs_two_per_batch() {
            return Err(Error::Config(format!(
                "--batch-size {}: model '{}' has a batch norm over single values per image \
                 (after a dense layer), whose statistics need at least 2 images per training \
                 batch; use --batch-size 2 or more{}",
                opts.batch,
                spec.name,
                if train.len() < 2 {
                    " and a training split of at least 2 images"
                } else {
                    ""
                }
            )));
        }
        let weights = opts.class_weight.weights(&train.class_counts());
        let net = Network::new(be, plan, params);
        let average =
            (opts.ema > 0.0).then(|| (be.upload(params), be.upload(&net.plan.init_running())));
        Ok(Trainer {
            be,
            opt: Optimizer::new(be, &net.plan, opts.optimizer),
            net,
            spec,
            state: TrainState::new(opts.seed),
            opts: *opts,
            images: be.upload_images(&train.pixels, &train.labels),
            n: train.len(),
            order: be.zeros_indices(train.len()),
            warp: opts
                .warp
                .is_active()
                .then(|| be.zeros_indices(train.len() * augment::WARP_WORDS)),
            weights: be.upload(&weights),
            stats: be.zeros(stats::LEN),
            average,
        })
    }

    /// A trainer that continues where a checkpoint left off: its parameters `(P)`, running
    /// statistics `(S)`, the optimizer's state and the trainer's state (epoch, batch, shuffle
    /// generator, partial statistics).
    #[allow(clippy::too_many_arguments)]
    pub fn resume(
        be: &'b B,
        spec: ModelSpec,
        params: &[f32],
        running: &[f32],
        train: &Dataset,
        opts: &TrainerOptions,
        optimizer: &OptimizerState,
        state: TrainState,
    ) -> Result<Trainer<'b, B>> {
        let mut t = Trainer::new(be, spec, params, train, opts)?;
        t.restore_running(running);
        be.write(&mut t.opt.m, &optimizer.m);
        be.write(&mut t.opt.v, &optimizer.v);
        t.opt.t = optimizer.t;
        t.state = state;
        if let Some((avg_params, avg_running)) = &mut t.average {
            // A run that kept no average yet starts it from the weights it resumes with.
            let (p, r) = match &optimizer.average {
                Some(a) => (&a.params[..], &a.running[..]),
                None => (params, running),
            };
            be.write(avg_params, p);
            be.write(avg_running, r);
        }
        Ok(t)
    }

    /// The model description.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The model at the trainer's batch size.
    pub fn plan(&self) -> &Plan {
        &self.net.plan
    }

    /// Where training stands.
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// Images in the training set.
    pub fn train_len(&self) -> usize {
        self.n
    }

    /// Images trained on per epoch: all of them, except that a model whose batch norm needs
    /// two images per batch ([`Plan::needs_two_per_batch`]) leaves out the single image a
    /// last batch would hold (a different one each epoch, as the order is shuffled).
    pub fn images_per_epoch(&self) -> usize {
        if self.n % self.opts.batch == 1 && self.net.plan.needs_two_per_batch() {
            self.n - 1
        } else {
            self.n
        }
    }

    /// Batches per epoch (the last one may be smaller).
    pub fn batches_per_epoch(&self) -> usize {
        self.images_per_epoch().div_ceil(self.opts.batch)
    }

    /// The largest batch.
    pub fn batch_size(&self) -> usize {
        self.opts.batch
    }

    /// One step on images `order[offset..offset + batch]` at the epoch's rate `lr`, scaled by
    /// the warm-up for this step; returns the rate the step used.
    fn step(&mut self, offset: usize, batch: usize, lr: f64) -> f64 {
        let warmup = Warmup::new(self.opts.warmup_epochs, self.batches_per_epoch());
        let lr = lr * warmup.factor(self.opt.t + 1);
        let be = self.be;
        let net = &mut self.net;
        match &self.warp {
            None => be.gather_batch(
                &mut net.x,
                &mut net.labels,
                &self.images,
                &self.order,
                offset,
                batch,
            ),
            Some(warp) => be.gather_batch_warped(
                &mut net.x,
                &mut net.labels,
                &self.images,
                &self.order,
                warp,
                offset,
                batch,
            ),
        }
        let mode = Mode::Train {
            seed: self.opts.seed,
            step: self.opt.t,
        };
        net.forward(be, batch, mode);
        let smoothing = self.opts.label_smoothing;
        net.loss_forward(be, &mut self.stats, &self.weights, smoothing, batch);
        net.backward(be, &self.weights, smoothing, batch);
        self.opt.step(be, net, lr);
        if let Some((avg_params, avg_running)) = &mut self.average {
            let d = ema_decay(self.opts.ema, self.opt.t) as f32;
            be.scale_add(avg_params, &net.params, d, 1.0 - d, net.plan.num_params);
            if net.plan.num_running > 0 {
                be.scale_add(avg_running, &net.running, d, 1.0 - d, net.plan.num_running);
            }
        }
        be.submit();
        lr
    }

    /// The epoch's running loss and accuracy, read back when the live interval has passed
    /// since `last`.
    fn live_stats(&self, last: &mut Instant) -> Option<(f64, f64)> {
        let every = self.opts.live_stats?;
        if last.elapsed() < every {
            return None;
        }
        *last = Instant::now();
        Some(block_on(self.running_stats_async()))
    }

    /// The running training loss and accuracy of the current epoch so far, awaited (a page
    /// shows them while it trains; natively see [`TrainerOptions::live_stats`]).
    pub async fn running_stats_async(&self) -> (f64, f64) {
        let s = self.be.download_async(&self.stats).await;
        let samples = s[stats::SAMPLES].max(1.0) as f64;
        (
            s[stats::LOSS_SUM] as f64 / samples,
            s[stats::CORRECT] as f64 / samples,
        )
    }

    /// Trains the rest of the current epoch at learning rate `lr` (scaled by the warm-up in its
    /// first steps, see [`TrainerOptions::warmup_epochs`]). `keep_going` is called
    /// after each batch is submitted; returning false stops after that batch, with the state
    /// saved so that [`Trainer::run_epoch`] continues the same epoch later.
    ///
    /// It is [`Trainer::begin_epoch`], [`Trainer::train_batch`] until the epoch ends or
    /// `keep_going` says stop, and [`Trainer::finish_epoch`]; a browser calls those itself,
    /// yielding to its event loop between batches.
    pub fn run_epoch(
        &mut self,
        lr: f64,
        keep_going: &mut dyn FnMut(BatchDone) -> bool,
    ) -> EpochOutcome {
        let mut epoch = self.begin_epoch();
        let mut last_peek = Instant::now();
        while let Some(mut info) = self.train_batch(&mut epoch, lr) {
            info.running = self.live_stats(&mut last_peek);
            if !keep_going(info) {
                break;
            }
        }
        self.finish_epoch(epoch)
    }

    /// Starts (or, after an interruption, continues) the current epoch: draws its shuffle and
    /// augmentation from the epoch's generator, uploads them, and restores the statistics
    /// accumulated so far.
    pub fn begin_epoch(&mut self) -> EpochRun {
        let n = self.n;
        let mut rng = Rng::from_state(self.state.epoch_rng);
        let mut perm: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut perm);
        self.opts.augment.draw(&mut rng, &mut perm);
        self.be.write_indices(&mut self.order, &perm);
        if let Some(warp) = &mut self.warp {
            // After the flips and shifts, so runs without a warp draw what they always drew.
            let words = self.opts.warp.draw(&mut rng, n);
            self.be.write_indices(warp, &words);
        }
        self.be.write(&mut self.stats, &self.state.partial);
        EpochRun { rng, images: 0 }
    }

    /// Records and submits the epoch's next batch at the epoch's rate `lr` (scaled by the
    /// warm-up); `None` when the epoch has no batch left. Nothing is read back.
    pub fn train_batch(&mut self, epoch: &mut EpochRun, lr: f64) -> Option<BatchDone> {
        let b = self.state.next_batch;
        if b >= self.batches_per_epoch() {
            return None;
        }
        let offset = b * self.opts.batch;
        let batch = self.opts.batch.min(self.images_per_epoch() - offset);
        let step_lr = self.step(offset, batch, lr);
        epoch.images += batch;
        self.state.next_batch = b + 1;
        Some(BatchDone {
            images: epoch.images,
            running: None,
            lr: step_lr,
        })
    }

    /// Ends [`Trainer::begin_epoch`]'s epoch: reads the statistics back (the epoch's one
    /// read-back) and, when every batch ran, moves to the next epoch; otherwise the state is
    /// kept so that the same epoch continues later.
    pub fn finish_epoch(&mut self, epoch: EpochRun) -> EpochOutcome {
        block_on(self.finish_epoch_async(epoch))
    }

    /// [`Trainer::finish_epoch`] awaiting the read-back, as a browser must.
    pub async fn finish_epoch_async(&mut self, epoch: EpochRun) -> EpochOutcome {
        let s = self.be.download_async(&self.stats).await;
        self.state.partial.copy_from_slice(&s[..stats::LEN]);
        let interrupted = self.state.next_batch < self.batches_per_epoch();
        if !interrupted {
            self.state = TrainState {
                epoch: self.state.epoch + 1,
                next_batch: 0,
                epoch_rng: epoch.rng.state(),
                partial: [0.0; stats::LEN],
            };
        }
        let samples = s[stats::SAMPLES].max(1.0) as f64;
        EpochOutcome {
            loss: s[stats::LOSS_SUM] as f64 / samples,
            accuracy: s[stats::CORRECT] as f64 / samples,
            images: epoch.images,
            interrupted,
        }
    }

    /// The parameters `(P)` on the device (e.g. for an evaluator to copy).
    pub fn params_tensor(&self) -> &B::Tensor {
        &self.net.params
    }

    /// The parameters `(P)` on the host.
    pub fn params(&self) -> Vec<f32> {
        self.be.download(&self.net.params)
    }

    /// [`Trainer::params`], awaited.
    pub async fn params_async(&self) -> Vec<f32> {
        self.be.download_async(&self.net.params).await
    }

    /// Replaces the parameters `(P)`, e.g. to roll back to the last good ones after a
    /// divergence.
    pub fn restore_params(&mut self, params: &[f32]) {
        self.be.write(&mut self.net.params, params);
    }

    /// The running statistics `(S)` on the device (e.g. for an evaluator to copy).
    pub fn running_tensor(&self) -> &B::Tensor {
        &self.net.running
    }

    /// The running statistics `(S)` on the host.
    pub fn running(&self) -> Vec<f32> {
        self.be.download(&self.net.running)
    }

    /// [`Trainer::running`], awaited.
    pub async fn running_async(&self) -> Vec<f32> {
        self.be.download_async(&self.net.running).await
    }

    /// Replaces the running statistics `(S)` (on resume, or with the parameters after a
    /// divergence).
    pub fn restore_running(&mut self, running: &[f32]) {
        self.be.write(&mut self.net.running, running);
    }

    /// The weights' moving average on the device, parameters `(P)` and running statistics
    /// `(S)`, when the trainer keeps one ([`TrainerOptions::ema`]): after step `t` it is
    /// `avg ← d·avg + (1 − d)·w` with `d = ema_decay(ema, t)`, starting from the initial
    /// weights.
    pub fn average(&self) -> Option<(&B::Tensor, &B::Tensor)> {
        self.average.as_ref().map(|(p, r)| (p, r))
    }

    /// The weights the model is evaluated with: the moving average where one is kept, else
    /// the parameters and running statistics themselves (on the device).
    pub fn evaluated_tensors(&self) -> (&B::Tensor, &B::Tensor) {
        self.average()
            .unwrap_or((&self.net.params, &self.net.running))
    }

    /// The optimizer's moments, step count and weights' average on the host.
    pub fn optimizer_state(&self) -> OptimizerState {
        OptimizerState {
            m: self.be.download(&self.opt.m),
            v: self.be.download(&self.opt.v),
            t: self.opt.t,
            average: self.average.as_ref().map(|(p, r)| Average {
                params: self.be.download(p),
                running: self.be.download(r),
            }),
        }
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
