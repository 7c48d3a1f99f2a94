// batchnorm.wgsl: batch normalisation over channels — training forward (batch statistics,
// running statistics updated), evaluation forward (running statistics), and the training
// backward through the batch statistics.
//
// Layout (f32, row-major): input x, output y, dy, dx (batch, c, hw) — a conv output with
// hw = h·w, or a dense output (batch, features) with c = features and hw = 1; element
// (b, ch, j) is at b·c·hw + ch·hw + j. γ (c) at params[w_off..], β (c) at params[b_off..]
// (their gradients at the same offsets of grads); running mean and variance (c) at
// running[mean_off..], running[var_off..]; saved (2, c) = [batch mean, 1/√(var + eps)].
// n = batch·hw values per channel.
//
// Bindings (group 0):
//   0 p           uniform Norm      shapes, offsets, momentum, eps (host: gpu/uniforms.rs
//                                   Norm, filled by gpu/ops.rs batchnorm_*)
//   forward_train: 1 y read_write, 2 saved read_write, 3 running read_write, 4 x read,
//                  5 params read
//   forward_eval:  1 y, 4 x, 5 params, 6 running_in read
//   backward:      7 dx read_write, 8 grads read_write, 9 dy read, 4 x, 10 saved_in read,
//                  5 params
//
// Dispatch:
//   batchnorm_forward_train, batchnorm_backward: one workgroup of WG = 256 per channel
//     (ch = wid.y·nwg.x + wid.x, the grid folded into 2-D by shape::dispatch_2d). Invocation
//     l visits the channel's values l, l + WG, …; its partial sums meet in workgroup memory
//     and are added by a fixed tree (deterministic; no atomics). Forward: a first mean μ₀,
//     then the deviations d = x − μ₀ and their squares (two passes; f32 sums, so the mean is
//     corrected by Σd/n and the variance is (Σd² − (Σd)²/n)/n, the corrected two-pass
//     algorithm), then invocation 0 writes saved and the running statistics (unbiased
//     variance, n/(n − 1)) and all write y = (x − μ)·(γ·r) + β.
//     Backward: dβ = Σ dy and dγ = r·Σ dy·(x − μ) (invocation 0 writes them to grads), then
//     dx = γ·r·(dy − dβ/n − (x − μ)·r·dγ/n).
//   batchnorm_forward_eval: workgroups of EVAL_WG = 256 folded into 2-D,
//     lin = gid.y * (nwg.x * EVAL_WG) + gid.x, one element per invocation, bounds-checked.

struct Norm {
    batch: u32,
    c: u32,
    hw: u32,
    w_off: u32,     // γ in params and grads
    b_off: u32,     // β in params and grads
    mean_off: u32,  // running mean in running
    var_off: u32,   // running variance in running
    momentum: f32,  // weight of the batch's statistics in the running ones
    eps: f32,       // added to the variance
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Norm;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> saved: array<f32>;
@group(0) @binding(3) var<storage, read_write> running: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> params: array<f32>;
@group(0) @binding(6) var<storage, read> running_in: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;
@group(0) @binding(8) var<storage, read_write> grads: array<f32>;
@group(0) @binding(9) var<storage, read> dy: array<f32>;
@group(0) @binding(10) var<storage, read> saved_in: array<f32>;

const WG: u32 = 256u;      // forward_train, backward: one workgroup per channel
const EVAL_WG: u32 = 256u; // forward_eval: one element per invocation

var<workgroup> part: array<f32, WG>;
var<workgroup> part2: array<f32, WG>;

// Where the channel's e-th value (image e / hw, pixel e % hw) lies.
fn at(ch: u32, e: u32) -> u32 {
    return (e / p.hw) * (p.c * p.hw) + ch * p.hw + e % p.hw;
}

// Adds part[0..WG] into part[0] and part2[0..WG] into part2[0] by halving strides (a fixed
// order); every invocation of the workgroup must call it.
fn reduce(l: u32) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (l < stride) {
            part[l] += part[l + stride];
            part2[l] += part2[l + stride];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn batchnorm_forward_train(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) l: u32) {
    let ch = wid.y * nwg.x + wid.x;
    if (ch >= p.c) {
        return; // the whole workgroup: ch is uniform
    }
    let n = p.batch * p.hw;
    var s = 0.0;
    for (var e = l; e < n; e += WG) {
        s += x[at(ch, e)];
    }
    part[l] = s;
    reduce(l);
    let mean0 = part[0] / f32(n);
    workgroupBarrier(); // part[0] is read by all before it is overwritten
    var sd = 0.0;
    var q = 0.0;
    for (var e = l; e < n; e += WG) {
        let d = x[at(ch, e)] - mean0;
        sd += d;
        q += d * d;
    }
    part[l] = sd;
    part2[l] = q;
    reduce(l);
    // The corrected two-pass estimate: Σd/n is what rounding left in the first mean (a
    // constant channel gets exactly its value back, and then exactly zero variance).
    let mean = mean0 + part[0] / f32(n);
    let variance = max(part2[0] - part[0] * part[0] / f32(n), 0.0) / f32(n);
    let r = 1.0 / sqrt(variance + p.eps);
    if (l == 0u) {
        saved[ch] = mean;
        saved[p.c + ch] = r;
        let unbiased = variance * f32(n) / f32(n - 1u);
        let m = p.momentum;
        running[p.mean_off + ch] = (1.0 - m) * running[p.mean_off + ch] + m * mean;
        running[p.var_off + ch] = (1.0 - m) * running[p.var_off + ch] + m * unbiased;
    }
    let a = params[p.w_off + ch] * r;
    let b = params[p.b_off + ch];
    for (var e = l; e < n; e += WG) {
        let i = at(ch, e);
        y[i] = (x[i] - mean) * a + b;
    }
}

@compute @workgroup_size(EVAL_WG)
fn batchnorm_forward_eval(@builtin(global_invocation_id) gid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * (nwg.x * EVAL_WG) + gid.x;
    if (i >= p.batch * p.c * p.hw) {
        return;
    }
    let ch = (i / p.hw) % p.c;
    let a = params[p.w_off + ch] * (1.0 / sqrt(running_in[p.var_off + ch] + p.eps));
    y[i] = (x[i] - running_in[p.mean_off + ch]) * a + params[p.b_off + ch];
}

@compute @workgroup_size(WG)
fn batchnorm_backward(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) l: u32) {
    let ch = wid.y * nwg.x + wid.x;
    if (ch >= p.c) {
        return; // the whole workgroup: ch is uniform
    }
    let n = p.batch * p.hw;
    let mean = saved_in[ch];
    let r = saved_in[p.c + ch];
    var s1 = 0.0;
    var s2 = 0.0;
    for (var e = l; e < n; e += WG) {
        let i = at(ch, e);
        let g = dy[i];
        s1 += g;
        s2 += g * (x[i] - mean);
    }
    part[l] = s1;
    part2[l] = s2;
    reduce(l);
    let d_beta = part[0];
    let d_gamma = part2[0] * r;
    if (l == 0u) {
        grads[p.b_off + ch] = d_beta;
        grads[p.w_off + ch] = d_gamma;
    }
    let a = params[p.w_off + ch] * r;
    let db = d_beta / f32(n);
    let dg = r * d_gamma / f32(n);
    for (var e = l; e < n; e += WG) {
        let i = at(ch, e);
        dx[i] = a * (dy[i] - db - (x[i] - mean) * dg);
    }
}
