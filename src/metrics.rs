//! Confusion matrices and the scores derived from them.

use crate::shape::NUM_CLASSES;

/// A 7×7 confusion matrix: `counts[true][predicted]`, as the notebook's tables.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Confusion {
    /// `counts[t][p]`: images of true class `t` predicted as `p`.
    pub counts: [[u64; NUM_CLASSES]; NUM_CLASSES],
}

/// Precision, recall and F1 of one class.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassScore {
    /// Of the images predicted as this class, the share that are.
    pub precision: f64,
    /// Of the images of this class, the share predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// Images of this class.
    pub support: u64,
}

impl Confusion {
    /// From the row-major `u32` counts a backend accumulates, `(classes, classes)`.
    pub fn from_flat(flat: &[u32]) -> Confusion {
        assert_eq!(flat.len(), NUM_CLASSES * NUM_CLASSES);
        let mut c = Confusion::default();
        for t in 0..NUM_CLASSES {
            for p in 0..NUM_CLASSES {
                c.counts[t][p] = flat[t * NUM_CLASSES + p] as u64;
            }
        }
        c
    }

    /// Records one prediction.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth][predicted] += 1;
    }

    /// Adds another matrix's counts (e.g. summing folds).
    pub fn merge(&mut self, other: &Confusion) {
        for t in 0..NUM_CLASSES {
            for p in 0..NUM_CLASSES {
                self.counts[t][p] += other.counts[t][p];
            }
        }
    }

    /// Images counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Share of images on the diagonal (0 for an empty matrix).
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..NUM_CLASSES).map(|i| self.counts[i][i]).sum();
        ratio(correct, self.total())
    }

    /// Precision, recall, F1 and support per class.
    pub fn class_scores(&self) -> [ClassScore; NUM_CLASSES] {
        let mut out = [ClassScore::default(); NUM_CLASSES];
        for (c, score) in out.iter_mut().enumerate() {
            let tp = self.counts[c][c];
            let predicted: u64 = (0..NUM_CLASSES).map(|t| self.counts[t][c]).sum();
            let support: u64 = self.counts[c].iter().sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            *score = ClassScore {
                precision,
                recall,
                f1,
                support,
            };
        }
        out
    }

    /// Unweighted mean of the per-class F1 scores.
    pub fn macro_f1(&self) -> f64 {
        self.class_scores().iter().map(|s| s.f1).sum::<f64>() / NUM_CLASSES as f64
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Index of the largest value; the first one wins ties (the rule every backend follows).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_of_a_hand_worked_matrix() {
        let mut c = Confusion::default();
        // class 0: 3 right, 1 predicted as 1; class 1: 2 right; one class-2 image predicted 0.
        for _ in 0..3 {
            c.add(0, 0);
        }
        c.add(0, 1);
        c.add(1, 1);
        c.add(1, 1);
        c.add(2, 0);
        assert_eq!(c.total(), 7);
        assert!((c.accuracy() - 5.0 / 7.0).abs() < 1e-12);
        let s = c.class_scores();
        assert!((s[0].precision - 0.75).abs() < 1e-12);
        assert!((s[0].recall - 0.75).abs() < 1e-12);
        assert!((s[1].precision - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s[1].recall, 1.0);
        assert_eq!(s[2].f1, 0.0);
        assert_eq!(s[0].support, 4);
    }

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }
}
