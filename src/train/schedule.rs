//! Learning-rate schedules and the per-epoch [`Scheduler`] that follows one.
//!
//! Epochs are counted from 0; the learning rate of an epoch is fixed for the whole epoch
//! and changes only in [`Scheduler::end_epoch`].

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
    /// Multiply the rate by `factor` (never below `min_lr`) once the validation loss has
    /// not improved (strictly decreased) for `patience` epochs in a row (Keras'
    /// `ReduceLROnPlateau` without cooldown).
    Plateau {
        /// Epochs without improvement before a reduction (≥ 1).
        patience: usize,
        /// Factor applied at each reduction (in (0, 1)).
        factor: f64,
        /// Floor of the rate (≥ 0).
        min_lr: f64,
    },
}

const SYNTAX: &str = "expected constant, step[:every=N,gamma=G], cosine[:epochs=N,min_lr=L] or \
                      plateau[:patience=N,factor=F,min_lr=L]";

impl LrSchedule {
    /// Parses `constant`, `step:every=10,gamma=0.5`, `cosine:epochs=50,min_lr=1e-5` or
    /// `plateau:patience=3,factor=0.5,min_lr=1e-6`. Omitted parameters take the defaults:
    /// step every 10 epochs by 0.5; cosine over the run's epochs down to 0; plateau with
    /// patience 3, factor 0.5, floor 1e-6. Errors with [`Error::Config`] on an unknown
    /// name or parameter or an out-of-range value.
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
                patience,
                factor,
                min_lr,
            } => write!(
                f,
                "plateau:patience={patience},factor={factor},min_lr={min_lr}"
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
    /// Lowest validation loss seen (plateau); `None` before the first epoch.
    best_loss: Option<f64>,
    /// Epochs since the best validation loss (plateau).
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
            best_loss: None,
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

    /// Ends the current epoch with its validation loss and moves to the next. Only
    /// [`LrSchedule::Plateau`] looks at the loss; a NaN or infinite loss counts as no
    /// improvement.
    pub fn end_epoch(&mut self, val_loss: f64) {
        self.epoch += 1;
        if let LrSchedule::Plateau {
            patience,
            factor,
            min_lr,
        } = self.schedule
        {
            let improved =
                val_loss.is_finite() && self.best_loss.is_none_or(|best| val_loss < best);
            if improved {
                self.best_loss = Some(val_loss);
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
