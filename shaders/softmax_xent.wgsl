// softmax_xent.wgsl: softmax + class-weighted cross-entropy with label smoothing (PyTorch's
// CrossEntropyLoss(weight, label_smoothing) per sample), its gradient, and the confusion
// matrix.
//
// Layout (row-major): logits, probs, d_logits (batch, classes) f32; labels (batch) u32;
// class_weights (classes) f32; stats (4) f32 = [loss_sum, correct, samples, weight_sum]
// (backend::stats); confusion (classes, classes) u32, rows true label, columns predicted.
//
// Bindings (group 0):
//   0 p              uniform Loss            batch, classes, smoothing ε (host:
//                                            gpu/uniforms.rs Loss, filled by gpu/ops.rs)
//   forward:   1 probs_out read_write f32, 2 stats read_write f32, 3 logits read f32,
//              4 labels read u32, 5 weights read f32
//   backward:  6 d_logits read_write f32, 7 probs read f32, 4 labels, 5 weights
//   confusion: 8 confusion read_write atomic<u32>, 7 probs, 4 labels
//
// Dispatch and work per invocation (the host reads each workgroup size from @workgroup_size):
//   softmax_cross_entropy_forward: ONE workgroup of FWD_WG = 64, dispatched (1, 1, 1).
//     Invocation l handles rows l, l + FWD_WG, …; its partial sums go to workgroup memory and
//     invocation 0 adds them in index order, so the statistics are deterministic; then it
//     accumulates into stats. A sample's loss is (1 − ε)·w[y]·(−log p[y]) +
//     (ε/C)·Σ_c w[c]·(−log p[c]); each −log p[c] is computed as −(x[c] − max − ln Σ exp(x −
//     max)), finite for any logits.
//   softmax_cross_entropy_backward: workgroups of BWD_WG = 256 folded into 2-D by
//     shape::dispatch_2d, lin = gid.y * (nwg.x * BWD_WG) + gid.x; one element (b, c) per
//     invocation: (w[y]/batch)·(1 − ε)·(p − [c = y]) + (ε/(C·batch))·(W·p − w[c]),
//     W = Σ_c w[c].
//   confusion_accumulate: same folding with workgroups of CONFUSION_WG = 64, one sample per
//     invocation; the counts are integers, so atomicAdd order does not matter.

struct Loss {
    batch: u32,
    classes: u32,
    smoothing: f32,   // label smoothing ε in [0, 1] (0 for confusion_accumulate)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Loss;
@group(0) @binding(1) var<storage, read_write> probs_out: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read> labels: array<u32>;
@group(0) @binding(5) var<storage, read> weights: array<f32>;
@group(0) @binding(6) var<storage, read_write> d_logits: array<f32>;
@group(0) @binding(7) var<storage, read> probs: array<f32>;
@group(0) @binding(8) var<storage, read_write> confusion: array<atomic<u32>>;

const FWD_WG: u32 = 64u;
const BWD_WG: u32 = 256u;
const CONFUSION_WG: u32 = 64u;

var<workgroup> part_loss: array<f32, FWD_WG>;
var<workgroup> part_correct: array<f32, FWD_WG>;
var<workgroup> part_weight: array<f32, FWD_WG>;

@compute @workgroup_size(FWD_WG)
fn softmax_cross_entropy_forward(@builtin(local_invocation_index) l: u32) {
    var loss = 0.0;
    var correct = 0.0;
    var wsum = 0.0;
    for (var b = l; b < p.batch; b += FWD_WG) {
        let row = b * p.classes;
        var mx = logits[row];
        for (var c = 1u; c < p.classes; c++) {
            mx = max(mx, logits[row + c]);
        }
        var sum = 0.0;
        for (var c = 0u; c < p.classes; c++) {
            let e = exp(logits[row + c] - mx);
            probs_out[row + c] = e;
            sum += e;
        }
        // First maximum of the probabilities (as metrics::argmax), computed after division.
        var best = 0u;
        var best_p = probs_out[row] / sum;
        probs_out[row] = best_p;
        for (var c = 1u; c < p.classes; c++) {
            let pc = probs_out[row + c] / sum;
            probs_out[row + c] = pc;
            if (pc > best_p) {
                best_p = pc;
                best = c;
            }
        }
        let y = labels[b];
        let w = weights[y];
        let log_sum = log(sum);
        // Σ_c w[c]·(−log p[c]): the smoothing's share, spread over every class.
        var spread = 0.0;
        for (var c = 0u; c < p.classes; c++) {
            spread += weights[c] * -(logits[row + c] - mx - log_sum);
        }
        loss += (1.0 - p.smoothing) * (w * -(logits[row + y] - mx - log_sum))
            + p.smoothing / f32(p.classes) * spread;
        wsum += w;
        correct += select(0.0, 1.0, best == y);
    }
    part_loss[l] = loss;
    part_correct[l] = correct;
    part_weight[l] = wsum;
    workgroupBarrier();
    if (l == 0u) {
        var tl = 0.0;
        var tc = 0.0;
        var tw = 0.0;
        for (var i = 0u; i < FWD_WG; i++) {
            tl += part_loss[i];
            tc += part_correct[i];
            tw += part_weight[i];
        }
        stats[0] += tl;
        stats[1] += tc;
        stats[2] += f32(p.batch);
        stats[3] += tw;
    }
}

@compute @workgroup_size(BWD_WG)
fn softmax_cross_entropy_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * (nwg.x * BWD_WG) + gid.x;
    if (i >= p.batch * p.classes) {
        return;
    }
    let b = i / p.classes;
    let c = i % p.classes;
    let y = labels[b];
    var total = 0.0;
    for (var k = 0u; k < p.classes; k++) {
        total += weights[k];
    }
    let scale = weights[y] / f32(p.batch) * (1.0 - p.smoothing);
    let spread = p.smoothing / f32(p.classes * p.batch);
    d_logits[i] = scale * (probs[i] - select(0.0, 1.0, c == y))
        + spread * (total * probs[i] - weights[c]);
}

@compute @workgroup_size(CONFUSION_WG)
fn confusion_accumulate(@builtin(global_invocation_id) gid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = gid.y * (nwg.x * CONFUSION_WG) + gid.x;
    if (b >= p.batch) {
        return;
    }
    let row = b * p.classes;
    var best = 0u;
    var best_p = probs[row];
    for (var c = 1u; c < p.classes; c++) {
        if (probs[row + c] > best_p) {
            best_p = probs[row + c];
            best = c;
        }
    }
    atomicAdd(&confusion[labels[b] * p.classes + best], 1u);
}
