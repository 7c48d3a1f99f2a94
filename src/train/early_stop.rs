//! Early stopping on validation accuracy.

/// What [`EarlyStopping::observe`] concluded about one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// This epoch's accuracy is the best so far (strictly above every earlier one): the
    /// caller keeps this epoch's weights as the best.
    pub improved: bool,
    /// Stop training after this epoch.
    pub stop: bool,
}

/// Stops a run once validation accuracy has gone `patience` epochs in a row without
/// strictly exceeding its best (Keras' `EarlyStopping(monitor="val_accuracy")` with
/// `min_delta=0`).
///
/// The state is serializable so a resumed run keeps counting where it left off. (No field
/// is ever infinite or NaN, so JSON holds it.)
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EarlyStopping {
    /// `None` never stops. `Some(0)` acts as `Some(1)`: stop at the first epoch that does
    /// not improve.
    patience: Option<usize>,
    /// Best accuracy so far; `None` before any finite accuracy was seen.
    best: Option<f64>,
    /// The caller's epoch number of `best`.
    best_epoch: usize,
    /// Epochs observed since `best`.
    wait: usize,
}

impl EarlyStopping {
    /// A fresh tracker; `patience = None` only tracks the best epoch and never stops.
    pub fn new(patience: Option<usize>) -> EarlyStopping {
        EarlyStopping {
            patience,
            best: None,
            best_epoch: 0,
            wait: 0,
        }
    }

    /// Records epoch `epoch`'s validation accuracy (epoch numbers are the caller's, 0- or
    /// 1-based, and are only stored). A NaN accuracy never improves.
    pub fn observe(&mut self, epoch: usize, val_acc: f64) -> Decision {
        let improved = val_acc.is_finite() && self.best.is_none_or(|best| val_acc > best);
        if improved {
            self.best = Some(val_acc);
            self.best_epoch = epoch;
            self.wait = 0;
        } else {
            self.wait += 1;
        }
        let stop = self.patience.is_some_and(|p| self.wait >= p.max(1));
        Decision { improved, stop }
    }

    /// The best accuracy seen, `None` before the first finite one.
    pub fn best(&self) -> Option<f64> {
        self.best
    }

    /// The epoch number (as given to [`EarlyStopping::observe`]) of [`EarlyStopping::best`],
    /// `None` before it exists.
    pub fn best_epoch(&self) -> Option<usize> {
        self.best.map(|_| self.best_epoch)
    }

    /// Epochs observed since the best one.
    pub fn wait(&self) -> usize {
        self.wait
    }

    /// The patience this tracker was made with.
    pub fn patience(&self) -> Option<usize> {
        self.patience
    }
}
