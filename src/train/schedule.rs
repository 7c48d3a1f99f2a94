//! Learning-rate schedules, the per-epoch [`Scheduler`] that follows one, and the per-step
//! linear [`Warmup`] that scales any of them.
//!
//! Epochs are counted from 0; a schedule's rate for an epoch is fixed for the whole epoch and
//! changes only in [`Scheduler::end_epoch`]. Warm-up multiplies it, step by step, on the host;
//! the product is the rate handed to the optimizer, the same on every backend.

use std::fmt;

use crate::{Error, Result};

/// How the learning rate changes over a run.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// `base · gamma^⌊epoch / every⌋` (PyTorch's `StepLR`).
    Step {
        /// Epochs between reductions (≥ 1).
        every: usize,
        /// Factor applied at each reduction (> 0).
        gamma: f64,
    },
    /// Half a cosine from the base rate at epoch 0 down to `min_lr` at epoch `epochs`, and
    /// `min_lr` after (PyTorch's `CosineAnnealingLR` with `T_max = epochs`).
    Cosine {
        /// Length of the descent in epochs; 0 means the run's total epochs.
        epochs: usize,
        /// Rate reached at the end of the descent (≥ 0).
        min_lr: f64,
    },
    /// Multiply the rate by `factor` (never below `min_lr`) once the validation metric has
    /// not improved (loss strictly decreased, or accuracy strictly increased) for `patience`
    /// epochs in a row (Keras' `ReduceLROnPlateau` without cooldown, `min_delta = 0`).
    Plateau {
        /// The validation metric followed (the loss when a schedule does not say).
        #[serde(default)]
        metric: PlateauMetric,
        /// Epochs without improvement before a reduction (≥ 1).
        patience: usize,
        /// Factor applied at each reduction (in (0, 1)).
        factor: f64,
        /// Floor of the rate (≥ 0).
        min_lr: f64,
    },
}

/// The validation metric a [`LrSchedule::Plateau`] follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlateauMetric {
    /// The validation loss, which must decrease (mode `min`).
    #[default]
    Loss,
    /// The validation accuracy, which must increase (mode `max`).
    Acc,
}

impl PlateauMetric {
    /// `loss` or `acc`, as in a schedule's text.
    pub fn name(self) -> &'static str {
        match self {
            PlateauMetric::Loss => "loss",
            PlateauMetric::Acc => "acc",
        }
    }
}

const SYNTAX: &str = "expected constant, step[:every=N,gamma=G], cosine[:epochs=N,min_lr=L] or \
                      plateau[:metric=loss|acc,patience=N,factor=F,min_lr=L]";

impl LrSchedule {
    /// Parses `constant`, `step:every=10,gamma=0.5`, `cosine:epochs=50,min_lr=1e-5` or
    /// `plateau:metric=acc,patience=3,factor=0.5,min_lr=1e-6`. Omitted parameters take the
    /// defaults: step every 10 epochs by 0.5; cosine over the run's epochs down to 0; plateau
    /// on the validation loss with patience 3, factor 0.5, floor 1e-6. Errors with
    /// [`Error::Config`] on an unknown name or parameter or an out-of-range value.
    pub fn parse(s: &str) -> Result<LrSchedule> {
        let s = s.trim();
        let (name, params) = match s.split_once(':') {
            Some((name, params)) => (name.trim(), params),
            None => (s, ""),
        };
        let mut p = Params::parse(s, params)?;
        let schedule = match name.to_ascii_lowercase().as_str() {
            "constant" => LrSchedule::Constant,
            "step" => LrSchedule::Step {
                every: p.count("every", 10, 1)?,
                gamma: p.real("gamma", 0.5, |g| g > 0.0, "> 0")?,
            },
            "cosine" => LrSchedule::Cosine {
                epochs: p.count("epochs", 0, 0)?,
                min_lr: p.real("min_lr", 0.0, |m| m >= 0.0, "≥ 0")?,
            },
            "plateau" => LrSchedule::Plateau {
                metric: match p.take("metric") {
                    None | Some("loss") => PlateauMetric::Loss,
                    Some("acc") => PlateauMetric::Acc,
                    Some(other) => {
                        return Err(bad(
                            s,
                            &format!("metric must be loss or acc, got '{other}'"),
                        ))
                    }
                },
                patience: p.count("patience", 3, 1)?,
                factor: p.real("factor", 0.5, |f| f > 0.0 && f < 1.0, "in (0, 1)")?,
                min_lr: p.real("min_lr", 1e-6, |m| m >= 0.0, "≥ 0")?,
            },
            _ => return Err(bad(s, &format!("unknown schedule '{name}'"))),
        };
        p.finish()?;
        Ok(schedule)
    }
}

impl std::str::FromStr for LrSchedule {
    type Err = Error;

    /// Same as [`LrSchedule::parse`].
    fn from_str(s: &str) -> Result<LrSchedule> {
        LrSchedule::parse(s)
    }
}

/// The canonical text form, which [`LrSchedule::parse`] reads back.
impl fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LrSchedule::Constant => write!(f, "constant"),
            LrSchedule::Step { every, gamma } => write!(f, "step:every={every},gamma={gamma}"),
            LrSchedule::Cosine { epochs, min_lr } => {
                write!(f, "cosine:epochs={epochs},min_lr={min_lr}")
            }
            LrSchedule::Plateau {
                metric,
                patience,
                factor,
                min_lr,
            } => write!(
                f,
                "plateau:metric={},patience={patience},factor={factor},min_lr={min_lr}",
                metric.name()
            ),
        }
    }
}

fn bad(s: &str, problem: &str) -> Error {
    Error::Config(format!("learning-rate schedule '{s}': {problem}; {SYNTAX}"))
}

/// `key=value` pairs of a schedule, consumed one by one so leftovers can be reported.
struct Params<'a> {
    whole: &'a str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Params<'a> {
    fn parse(whole: &'a str, params: &'a str) -> Result<Params<'a>> {
        let mut pairs = Vec::new();
        for item in params.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| bad(whole, &format!("'{item}' is not key=value")))?;
            let k = k.trim();
            if pairs.iter().any(|&(seen, _)| seen == k) {
                return Err(bad(whole, &format!("'{k}' given twice")));
            }
            pairs.push((k, v.trim()));
        }
        Ok(Params { whole, pairs })
    }

    fn take(&mut self, key: &str) -> Option<&'a str> {
        let i = self.pairs.iter().position(|&(k, _)| k == key)?;
        Some(self.pairs.remove(i).1)
    }

    fn count(&mut self, key: &str, default: usize, min: usize) -> Result<usize> {
        let Some(v) = self.take(key) else {
            return Ok(default);
        };
        match v.parse::<usize>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(bad(
                self.whole,
                &format!("{key} must be a whole number ≥ {min}, got '{v}'"),
            )),
        }
    }

    fn real(&mut self, key: &str, default: f64, ok: fn(f64) -> bool, rule: &str) -> Result<f64> {
        let Some(v) = self.take(key) else {
            return Ok(default);
        };
        match v.parse::<f64>() {
            Ok(x) if x.is_finite() && ok(x) => Ok(x),
            _ => Err(bad(
                self.whole,
                &format!("{key} must be a number {rule}, got '{v}'"),
            )),
        }
    }

    fn finish(self) -> Result<()> {
        match self.pairs.first() {
            None => Ok(()),
            Some((k, _)) => Err(bad(self.whole, &format!("unknown parameter '{k}'"))),
        }
    }
}

/// Follows an [`LrSchedule`] through a run: [`Scheduler::lr`] for the current epoch,
/// [`Scheduler::end_epoch`] after each epoch's validation.
///
/// The whole state is serializable, so a run resumed from a checkpoint continues with
/// exactly the rates it would have had. (No field is ever infinite or NaN, so JSON holds
/// it.)
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scheduler {
    schedule: LrSchedule,
    base_lr: f64,
    /// Length of the cosine descent, resolved from the run's epochs when 0.
    cosine_epochs: usize,
    /// Epochs finished so far, i.e. the index of the current epoch.
    epoch: usize,
    /// Plateau's current rate (reductions compound, so it is kept, not recomputed).
    plateau_lr: f64,
    /// Best value of the plateau's metric so far (lowest loss or highest accuracy); `None`
    /// before the first epoch. (Named `best_loss` in states saved before plateau could
    /// follow accuracy.)
    #[serde(alias = "best_loss")]
    best: Option<f64>,
    /// Epochs since the best value (plateau).
    wait: usize,
}

impl Scheduler {
    /// A scheduler at epoch 0 of a run of `total_epochs` epochs starting at `base_lr`.
    pub fn new(schedule: LrSchedule, base_lr: f64, total_epochs: usize) -> Scheduler {
        let cosine_epochs = match schedule {
            LrSchedule::Cosine { epochs: 0, .. } => total_epochs.max(1),
            LrSchedule::Cosine { epochs, .. } => epochs,
            _ => 0,
        };
        Scheduler {
            schedule,
            base_lr,
            cosine_epochs,
            epoch: 0,
            plateau_lr: base_lr,
            best: None,
            wait: 0,
        }
    }

    /// The schedule being followed.
    pub fn schedule(&self) -> LrSchedule {
        self.schedule
    }

    /// Index of the current epoch (epochs finished so far).
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// The learning rate for the current epoch.
    pub fn lr(&self) -> f64 {
        match self.schedule {
            LrSchedule::Constant => self.base_lr,
            LrSchedule::Step { every, gamma } => {
                self.base_lr * gamma.powi((self.epoch / every) as i32)
            }
            LrSchedule::Cosine { min_lr, .. } => {
                let t = (self.epoch as f64 / self.cosine_epochs as f64).min(1.0);
                min_lr + (self.base_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
            LrSchedule::Plateau { .. } => self.plateau_lr,
        }
    }

    /// Ends the current epoch with its validation loss and accuracy and moves to the next.
    /// Only [`LrSchedule::Plateau`] looks at them (at its metric); a NaN or infinite value
    /// counts as no improvement.
    pub fn end_epoch(&mut self, val_loss: f64, val_acc: f64) {
        self.epoch += 1;
        if let LrSchedule::Plateau {
            metric,
            patience,
            factor,
            min_lr,
        } = self.schedule
        {
            let (value, better): (f64, fn(f64, f64) -> bool) = match metric {
                PlateauMetric::Loss => (val_loss, |new, best| new < best),
                PlateauMetric::Acc => (val_acc, |new, best| new > best),
            };
            let improved = value.is_finite() && self.best.is_none_or(|best| better(value, best));
            if improved {
                self.best = Some(value);
                self.wait = 0;
                return;
            }
            self.wait += 1;
            if self.wait >= patience {
                self.plateau_lr = (self.plateau_lr * factor).max(min_lr);
                self.wait = 0;
            }
        }
    }
}

/// Linear warm-up over the first `epochs` epochs, per optimizer step: with `S` batches per
/// epoch and `W = epochs·S` warm-up steps, step `t` (1-based, counted over the whole run)
/// trains at `min(1, t / W)` times the schedule's rate for its epoch. The first step takes
/// `1/W` of it, step `W` and every later one all of it; `epochs = 0` is no warm-up. The
/// schedule itself runs on unchanged (its epochs are not shifted), so warm-up composes with
/// any schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Warmup {
    /// `W`, the steps of the ramp.
    steps: u64,
}

impl Warmup {
    /// Warm-up over `epochs` epochs of `batches_per_epoch` steps.
    pub fn new(epochs: usize, batches_per_epoch: usize) -> Warmup {
        Warmup {
            steps: (epochs as u64).saturating_mul(batches_per_epoch as u64),
        }
    }

    /// The factor of step `t` (1-based): `min(1, t / W)`, 1 without warm-up.
    pub fn factor(&self, t: u64) -> f64 {
        if t >= self.steps {
            1.0
        } else {
            t as f64 / self.steps as f64
        }
    }
}
