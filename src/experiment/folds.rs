//! Cross-validation folds (k-fold and stratified k-fold) and their summary.
//!
//! Unshuffled [`kfold`] matches scikit-learn's `KFold` index for index. Shuffling uses
//! fergpu's own [`Rng`] (xoshiro256**), not NumPy's generator, so shuffled folds are
//! reproducible from the seed but differ from scikit-learn's for the same seed.

use crate::rng::Rng;
use crate::{Error, Result};

/// One cross-validation split: row indices to train on and to test on.
///
/// Both lists are sorted ascending (as scikit-learn returns them), disjoint, and together
/// cover `0..n` exactly.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fold {
    /// Rows to train on, ascending.
    pub train: Vec<usize>,
    /// Rows held out, ascending.
    pub test: Vec<usize>,
}

/// `k` folds over rows `0..n`, like scikit-learn's `KFold(n_splits=k)`.
///
/// Test folds are contiguous runs of the (optionally shuffled) row order; the first `n % k`
/// folds get `n / k + 1` rows and the rest `n / k`, so n = 10, k = 3 gives test folds
/// `0..4`, `4..7`, `7..10`. With `shuffle = Some(seed)` the rows are first permuted by
/// `Rng::new(seed)` (not scikit-learn's RNG: same fold sizes, different members).
///
/// Errors with [`Error::Config`] unless `2 ≤ k ≤ n`.
pub fn kfold(n: usize, k: usize, shuffle: Option<u64>) -> Result<Vec<Fold>> {
    check_k(n, k)?;
    let mut order: Vec<usize> = (0..n).collect();
    if let Some(seed) = shuffle {
        Rng::new(seed).shuffle(&mut order);
    }
    // fold_of[row] = the fold that holds `row` out
    let mut fold_of = vec![0usize; n];
    let mut start = 0;
    for f in 0..k {
        let size = n / k + usize::from(f < n % k);
        for &row in &order[start..start + size] {
            fold_of[row] = f;
        }
        start += size;
    }
    Ok(folds_from_assignment(&fold_of, k))
}

/// `k` folds that keep each class's share of `labels` in every test fold.
///
/// Built like scikit-learn's `StratifiedKFold`: walking the labels sorted by class, the
/// i-th sample is allotted to fold `i % k`, which fixes how many of each class every fold
/// gets (per class, fold counts differ by at most 1, and fold sizes by at most 1); then
/// each class's rows, in row order (or permuted by `Rng::new(seed)` when shuffled), fill
/// fold 0's quota, then fold 1's, and so on. Unshuffled this follows scikit-learn's
/// algorithm; shuffled assignments are not scikit-learn's (different RNG), and exact
/// agreement with scikit-learn is not promised.
///
/// Errors with [`Error::Config`] unless `2 ≤ k ≤ labels.len()`, or when every class has
/// fewer than `k` rows (scikit-learn refuses that too).
pub fn stratified_kfold(labels: &[u8], k: usize, shuffle: Option<u64>) -> Result<Vec<Fold>> {
    let n = labels.len();
    check_k(n, k)?;
    let mut counts = [0usize; 256];
    for &l in labels {
        counts[l as usize] += 1;
    }
    if counts.iter().all(|&c| c < k) {
        let largest = counts.iter().max().copied().unwrap_or(0);
        return Err(Error::Config(format!(
            "stratified {k}-fold cross-validation needs at least {k} rows of some class; \
             the largest class has {largest}. Use fewer folds"
        )));
    }
    // quota[f][c] = rows of class c that fold f holds out
    let mut quota = vec![[0usize; 256]; k];
    let mut i = 0;
    for (c, &count) in counts.iter().enumerate() {
        for _ in 0..count {
            quota[i % k][c] += 1;
            i += 1;
        }
    }
    let mut rng = shuffle.map(Rng::new);
    let mut fold_of = vec![0usize; n];
    for c in 0..256 {
        if counts[c] == 0 {
            continue;
        }
        let mut slots: Vec<usize> = (0..k)
            .flat_map(|f| std::iter::repeat_n(f, quota[f][c]))
            .collect();
        if let Some(rng) = rng.as_mut() {
            rng.shuffle(&mut slots);
        }
        let rows = labels.iter().enumerate().filter(|&(_, &l)| l as usize == c);
        for ((row, _), f) in rows.zip(slots) {
            fold_of[row] = f;
        }
    }
    Ok(folds_from_assignment(&fold_of, k))
}

/// Mean and sample standard deviation (divisor `n − 1`, as `numpy.std(ddof=1)` and
/// `pandas.Series.std`) of per-fold accuracies. One fold gives a standard deviation of 0.
///
/// Panics on an empty slice (a caller bug: cross-validation has at least 2 folds).
pub fn cv_summary(fold_accs: &[f64]) -> (f64, f64) {
    assert!(!fold_accs.is_empty(), "cv_summary of no folds");
    let n = fold_accs.len() as f64;
    let mean = fold_accs.iter().sum::<f64>() / n;
    if fold_accs.len() == 1 {
        return (mean, 0.0);
    }
    let ss: f64 = fold_accs.iter().map(|a| (a - mean) * (a - mean)).sum();
    (mean, (ss / (n - 1.0)).sqrt())
}

fn check_k(n: usize, k: usize) -> Result<()> {
    if k < 2 || k > n {
        return Err(Error::Config(format!(
            "cross-validation needs 2 ≤ folds ≤ number of rows; got {k} folds for {n} rows"
        )));
    }
    Ok(())
}

/// Turns `fold_of[row]` into `k` folds with ascending train and test lists.
fn folds_from_assignment(fold_of: &[usize], k: usize) -> Vec<Fold> {
    (0..k)
        .map(|f| {
            let (test, train): (Vec<usize>, Vec<usize>) =
                (0..fold_of.len()).partition(|&row| fold_of[row] == f);
            Fold { train, test }
        })
        .collect()
}
