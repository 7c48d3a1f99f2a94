//! Softmax, class-weighted cross-entropy and the confusion matrix (`shaders/softmax_xent.wgsl`).

use crate::backend::stats;
use crate::metrics::argmax;

/// Softmax of `logits (batch, classes)` into `probs (batch, classes)`; accumulates into
/// `stats (4)`. The log-probability of the label is `x − max − ln Σ exp(x − max)`, which stays
/// finite however far apart the logits are (a probability of exactly 0 never reaches `ln`).
pub fn softmax_cross_entropy_forward(
    probs: &mut [f32],
    stats: &mut [f32],
    logits: &[f32],
    labels: &[u32],
    class_weights: &[f32],
    batch: usize,
    classes: usize,
) {
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
        loss += w * -(x[y] - max - sum.ln());
        weights += w;
        correct += (argmax(p) == y) as u32;
    }
    stats[stats::LOSS_SUM] += loss;
    stats[stats::CORRECT] += correct as f32;
    stats[stats::SAMPLES] += batch as f32;
    stats[stats::WEIGHT_SUM] += weights;
}

/// `d_logits[b,c] = w[y_b]·(p[b,c] − [c = y_b]) / batch`, all `(batch, classes)`.
pub fn softmax_cross_entropy_backward(
    d_logits: &mut [f32],
    probs: &[f32],
    labels: &[u32],
    class_weights: &[f32],
    batch: usize,
    classes: usize,
) {
    for b in 0..batch {
        let y = label(labels, b, classes);
        let scale = class_weights[y] / batch as f32;
        let p = &probs[b * classes..(b + 1) * classes];
        let d = &mut d_logits[b * classes..(b + 1) * classes];
        for (c, (dc, &pc)) in d.iter_mut().zip(p).enumerate() {
            *dc = scale * (pc - if c == y { 1.0 } else { 0.0 });
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
