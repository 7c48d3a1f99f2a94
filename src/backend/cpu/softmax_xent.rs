//! Softmax, class-weighted cross-entropy with label smoothing, and the confusion matrix
//! (`shaders/softmax_xent.wgsl`).

use crate::backend::stats;
use crate::metrics::argmax;

/// Softmax of `logits (batch, classes)` into `probs (batch, classes)`; accumulates into
/// `stats (4)` the label-smoothed, class-weighted loss of each sample,
/// `(1 − ε)·w[y]·(−log p[y]) + (ε/C)·Σ_c w[c]·(−log p[c])`. Each log-probability is
/// `x − max − ln Σ exp(x − max)`, which stays finite however far apart the logits are (a
/// probability of exactly 0 never reaches `ln`).
#[allow(clippy::too_many_arguments)]
pub fn softmax_cross_entropy_forward(
    probs: &mut [f32],
    stats: &mut [f32],
    logits: &[f32],
    labels: &[u32],
    class_weights: &[f32],
    smoothing: f32,
    batch: usize,
    classes: usize,
) {
    let share = smoothing / classes as f32; // ε/C
    let (mut loss, mut correct, mut weights) = (0.0f32, 0u32, 0.0f32);
    for b in 0..batch {
        let x = &logits[b * classes..(b + 1) * classes]; // (classes)
        let p = &mut probs[b * classes..(b + 1) * classes]; // (classes)
        let y = label(labels, b, classes);
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for (pc, &xc) in p.iter_mut().zip(x) {
            *pc = (xc - max).exp();
            sum += *pc;
        }
        for pc in p.iter_mut() {
            *pc /= sum;
        }
        let w = class_weights[y];
        let log_sum = sum.ln();
        // Σ_c w[c]·(−log p[c]): the smoothing's share, spread over every class.
        let spread: f32 = x
            .iter()
            .zip(class_weights)
            .map(|(&xc, &wc)| wc * -(xc - max - log_sum))
            .sum();
        loss += (1.0 - smoothing) * (w * -(x[y] - max - log_sum)) + share * spread;
        weights += w;
        correct += (argmax(p) == y) as u32;
    }
    stats[stats::LOSS_SUM] += loss;
    stats[stats::CORRECT] += correct as f32;
    stats[stats::SAMPLES] += batch as f32;
    stats[stats::WEIGHT_SUM] += weights;
}

/// `d_logits[b,c] = (w[y]/batch)·(1 − ε)·(p[b,c] − [c = y]) + (ε/(C·batch))·(W·p[b,c] − w[c])`
/// with `y = y_b` and `W = Σ_c w[c]`, all `(batch, classes)`: the gradient of the mean over
/// the batch of [`softmax_cross_entropy_forward`]'s loss.
#[allow(clippy::too_many_arguments)]
pub fn softmax_cross_entropy_backward(
    d_logits: &mut [f32],
    probs: &[f32],
    labels: &[u32],
    class_weights: &[f32],
    smoothing: f32,
    batch: usize,
    classes: usize,
) {
    let spread = smoothing / (classes * batch) as f32; // ε/(C·batch)
    let total: f32 = class_weights[..classes].iter().sum(); // W
    for b in 0..batch {
        let y = label(labels, b, classes);
        let scale = class_weights[y] / batch as f32 * (1.0 - smoothing);
        let p = &probs[b * classes..(b + 1) * classes];
        let d = &mut d_logits[b * classes..(b + 1) * classes];
        for (c, (dc, &pc)) in d.iter_mut().zip(p).enumerate() {
            let hit = if c == y { 1.0 } else { 0.0 };
            *dc = scale * (pc - hit) + spread * (total * pc - class_weights[c]);
        }
    }
}

/// Adds one count per sample to `confusion (classes, classes)` at `[label, argmax probs]`.
pub fn confusion_accumulate(
    confusion: &mut [u32],
    probs: &[f32],
    labels: &[u32],
    batch: usize,
    classes: usize,
) {
    for b in 0..batch {
        let y = label(labels, b, classes);
        let predicted = argmax(&probs[b * classes..(b + 1) * classes]);
        confusion[y * classes + predicted] += 1;
    }
}

/// The label of sample `b`, checked against the class count.
fn label(labels: &[u32], b: usize, classes: usize) -> usize {
    let y = labels[b] as usize;
    assert!(
        y < classes,
        "label {y} of sample {b} is not below {classes}"
    );
    y
}
