// conv2d.wgsl: 2-D convolution (stride 1, square k×k kernel, `pad` zeros on every side,
// NCHW) as implicit GEMM.
//
// Layout (f32, row-major): input x (batch, in_c, in_h, in_w); weight w (out_c, in_c, k, k) at
// params[w_off..]; bias (out_c) at params[b_off..]; output y (batch, out_c, out_h, out_w),
// out_h = in_h + 2·pad − k + 1. The im2col matrix is never stored: tap (c, i, j) of output
// pixel (oy, ox) reads x[b, c, oy+i−pad, ox+j−pad], or 0 where that falls on the padding
// (u32 arithmetic: a coordinate left of or above the image wraps to a huge value and fails
// the same `< in_w` / `< in_h` test as one past the right or bottom edge).
//
// Bindings (group 0):
//   0 p    uniform Conv     shapes, offsets, tiling (host: gpu/uniforms.rs Conv, filled by
//                           gpu/ops.rs conv2d_*)
//   1 dst  read_write f32   forward: y · backward_input: dx · backward_weight: grads, or the
//                           split-K partials (splits, out_c, patch_v+1) · reduce: grads
//   2 src  read f32         forward: x · backward_input: dy · backward_weight: dy · reduce: partials
//   3 aux  read f32         forward, backward_input: params · backward_weight: x
//
// GEMM views; one invocation computes a 4×4 register block of C, the 64 invocations of a
// workgroup (8×8) a 32×32 tile. Rows of the block are 8 apart and so are its columns, so
// neighbouring invocations read neighbouring addresses. No shared memory, no barriers.
//   conv2d_forward:          C[o, n]  = bias[o] + Σ_q w[o, q]·X[q, n]
//                            n = (b, oy, ox) over batch·out_h·out_w, q = (c, i, j) over in_c·k·k
//   conv2d_backward_input:   C[c, n]  = Σ_(i,j,o) w[o, c, i, j]·dy[b, o, y+pad−i, x+pad−j]
//                            n = (b, y, x) over batch·in_h·in_w; taps outside dy count zero
//   conv2d_backward_weight:  C[o, q]  = Σ_t dy[b, o, t]·X[q, t], t = (b, oy, ox), plus one
//                            extra column q = patch_v whose X is 1 (the bias gradient). The
//                            reduction over t is cut into `splits` chunks of `chunk` (split-K);
//                            with one split the block goes straight to grads, otherwise each
//                            chunk writes its own slice and conv2d_backward_weight_reduce sums
//                            the slices in a fixed order (deterministic; no float atomics).
//
// Dispatch: workgroups of WG = 64 (reduce: REDUCE_WG = 256; the host reads both from the
// @workgroup_size attributes) in a grid folded into 2-D by shape::dispatch_2d;
// lin = gid.y * (nwg.x * WG) + gid.x. GEMM kernels get one workgroup per tile and number
// tiles linearly (tile = lin / WG, backward_weight: split-major); invocations past the last
// tile return. The reduce kernel gets one invocation per gradient, bounds-checked.

struct Conv {
    batch: u32,
    in_c: u32,
    in_h: u32,
    in_w: u32,
    out_c: u32,
    out_h: u32,
    out_w: u32,
    k: u32,
    w_off: u32,    // weight offset in params / grads
    b_off: u32,    // bias offset in params / grads
    splits: u32,   // backward_weight: number of split-K chunks (1: write grads directly)
    chunk: u32,    // backward_weight: reduction length of one chunk
    tiles_m: u32,  // 32-row tiles of C
    tiles_n: u32,  // 32-column tiles of C
    n_tiles: u32,  // tiles_m · tiles_n (· splits for backward_weight)
    pad: u32,      // zero rows and columns on each side of the input
}

@group(0) @binding(0) var<uniform> p: Conv;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read> aux: array<f32>;

const WG: u32 = 64u;         // GEMM entry points: 8×8 invocations, one 32×32 tile of C
const REDUCE_WG: u32 = 256u; // conv2d_backward_weight_reduce
const TILE: u32 = 32u;

// The four rows (or columns) of an invocation's block, 8 apart.
fn spread(first: u32) -> vec4<u32> {
    return vec4<u32>(first, first + 8u, first + 16u, first + 24u);
}

@compute @workgroup_size(WG)
fn conv2d_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let lin = gid.y * (nwg.x * WG) + gid.x;
    let tile = lin / WG;
    if (tile >= p.n_tiles) {
        return;
    }
    let li = lin % WG;
    let ohw = p.out_h * p.out_w;
    let hw = p.in_h * p.in_w;
    let n_cols = p.batch * ohw;
    let patch_v = p.in_c * p.k * p.k;

    // Rows: output channels; out-of-range rows read row out_c−1 and are never stored.
    let os = spread((tile / p.tiles_n) * TILE + li / 8u);
    let wrow = vec4<u32>(p.w_off) + min(os, vec4<u32>(p.out_c - 1u)) * patch_v;
    // Columns: output pixels (b, oy, ox).
    let ns = spread((tile % p.tiles_n) * TILE + li % 8u);
    let nc = min(ns, vec4<u32>(n_cols - 1u));
    let b = nc / ohw;
    let pix = nc % ohw;
    let oy = pix / p.out_w;
    let ox = pix % p.out_w;
    let pad = vec4<u32>(p.pad);

    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var q = 0u;
    for (var c = 0u; c < p.in_c; c++) {
        for (var i = 0u; i < p.k; i++) {
            let iy = oy + vec4<u32>(i) - pad;
            let row_ok = iy < vec4<u32>(p.in_h);
            let row = b * (p.in_c * hw) + vec4<u32>(c * hw) + iy * p.in_w;
            for (var j = 0u; j < p.k; j++) {
                let ix = ox + vec4<u32>(j) - pad;
                let ok = row_ok & (ix < vec4<u32>(p.in_w));
                let xi = select(vec4<u32>(0u), row + ix, ok);
                let xv = select(vec4<f32>(0.0),
                                vec4<f32>(src[xi.x], src[xi.y], src[xi.z], src[xi.w]), ok);
                let wi = wrow + vec4<u32>(q);
                let wv = vec4<f32>(aux[wi.x], aux[wi.y], aux[wi.z], aux[wi.w]);
                a0 = fma(vec4<f32>(wv.x), xv, a0);
                a1 = fma(vec4<f32>(wv.y), xv, a1);
                a2 = fma(vec4<f32>(wv.z), xv, a2);
                a3 = fma(vec4<f32>(wv.w), xv, a3);
                q++;
            }
        }
    }
    let ybase = b * (p.out_c * ohw) + pix;
    let n_ok = ns < vec4<u32>(n_cols);
    forward_store(a0, os.x, ybase, n_ok, ohw);
    forward_store(a1, os.y, ybase, n_ok, ohw);
    forward_store(a2, os.z, ybase, n_ok, ohw);
    forward_store(a3, os.w, ybase, n_ok, ohw);
}

// One row of a forward block: output channel o at the four pixels ybase (+ o·out_h·out_w).
fn forward_store(acc: vec4<f32>, o: u32, ybase: vec4<u32>, n_ok: vec4<bool>, ohw: u32) {
    if (o >= p.out_c) {
        return;
    }
    let v = acc + vec4<f32>(aux[p.b_off + o]);
    let yi = ybase + vec4<u32>(o * ohw);
    if (n_ok.x) { dst[yi.x] = v.x; }
    if (n_ok.y) { dst[yi.y] = v.y; }
    if (n_ok.z) { dst[yi.z] = v.z; }
    if (n_ok.w) { dst[yi.w] = v.w; }
}

@compute @workgroup_size(WG)
fn conv2d_backward_input(@builtin(global_invocation_id) gid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>) {
    let lin = gid.y * (nwg.x * WG) + gid.x;
    let tile = lin / WG;
    if (tile >= p.n_tiles) {
        return;
    }
    let li = lin % WG;
    let ohw = p.out_h * p.out_w;
    let hw = p.in_h * p.in_w;
    let kk = p.k * p.k;
    let n_cols = p.batch * hw;

    // Rows: input channels c; w[o, c, i, j] = w_off + o·in_c·kk + c·kk + i·k + j.
    let cs = spread((tile / p.tiles_n) * TILE + li / 8u);
    let wcol = vec4<u32>(p.w_off) + min(cs, vec4<u32>(p.in_c - 1u)) * kk;
    let w_stride = p.in_c * kk;
    // Columns: input pixels (b, y, x).
    let ns = spread((tile % p.tiles_n) * TILE + li % 8u);
    let nc = min(ns, vec4<u32>(n_cols - 1u));
    let b = nc / hw;
    let pix = nc % hw;
    let y = pix / p.in_w;
    let x = pix % p.in_w;
    let dbase = b * (p.out_c * ohw);

    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var i = 0u; i < p.k; i++) {
        // u32 wraps, so y + pad < i gives a huge yy and fails the bound like yy ≥ out_h does.
        let yy = y + vec4<u32>(p.pad) - vec4<u32>(i);
        for (var j = 0u; j < p.k; j++) {
            let xx = x + vec4<u32>(p.pad) - vec4<u32>(j);
            let ok = (yy < vec4<u32>(p.out_h)) & (xx < vec4<u32>(p.out_w));
            let di = select(vec4<u32>(0u), dbase + yy * p.out_w + xx, ok);
            let wi0 = wcol + vec4<u32>(i * p.k + j);
            for (var o = 0u; o < p.out_c; o++) {
                let dk = di + vec4<u32>(o * ohw);
                let dv = select(vec4<f32>(0.0),
                                vec4<f32>(src[dk.x], src[dk.y], src[dk.z], src[dk.w]), ok);
                let wi = wi0 + vec4<u32>(o * w_stride);
                let wv = vec4<f32>(aux[wi.x], aux[wi.y], aux[wi.z], aux[wi.w]);
                a0 = fma(vec4<f32>(wv.x), dv, a0);
                a1 = fma(vec4<f32>(wv.y), dv, a1);
                a2 = fma(vec4<f32>(wv.z), dv, a2);
                a3 = fma(vec4<f32>(wv.w), dv, a3);
            }
        }
    }
    let xbase = b * (p.in_c * hw) + pix;
    let n_ok = ns < vec4<u32>(n_cols);
    input_store(a0, cs.x, xbase, n_ok, hw);
    input_store(a1, cs.y, xbase, n_ok, hw);
    input_store(a2, cs.z, xbase, n_ok, hw);
    input_store(a3, cs.w, xbase, n_ok, hw);
}

// One row of a backward_input block: channel c at the four pixels xbase (+ c·in_h·in_w).
fn input_store(acc: vec4<f32>, c: u32, xbase: vec4<u32>, n_ok: vec4<bool>, hw: u32) {
    if (c >= p.in_c) {
        return;
    }
    let xi = xbase + vec4<u32>(c * hw);
    if (n_ok.x) { dst[xi.x] = acc.x; }
    if (n_ok.y) { dst[xi.y] = acc.y; }
    if (n_ok.z) { dst[xi.z] = acc.z; }
    if (n_ok.w) { dst[xi.w] = acc.w; }
}

@compute @workgroup_size(WG)
fn conv2d_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>) {
    let lin = gid.y * (nwg.x * WG) + gid.x;
    let tile_all = lin / WG;
    if (tile_all >= p.n_tiles) {
        return;
    }
    let li = lin % WG;
    let per_split = p.tiles_m * p.tiles_n;
    let split = tile_all / per_split;
    let tile = tile_all % per_split;
    let ohw = p.out_h * p.out_w;
    let hw = p.in_h * p.in_w;
    let kk = p.k * p.k;
    let patch_v = p.in_c * kk;

    // Rows: output channels o; dy[b, o, t] = b·out_c·ohw + o·ohw + t.
    let os = spread((tile / p.tiles_n) * TILE + li / 8u);
    let drow = min(os, vec4<u32>(p.out_c - 1u)) * ohw;
    // Columns: patch_v entries q = (c, i, j), and q = patch_v for the bias (X = 1 there).
    let qs = spread((tile % p.tiles_n) * TILE + li % 8u);
    let is_bias = qs == vec4<u32>(patch_v);
    let qc = min(qs, vec4<u32>(patch_v - 1u));
    let c = qc / kk;
    let r = qc % kk;
    let ri = r / p.k;
    let rj = r % p.k;
    let pad = vec4<u32>(p.pad);

    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    let total = p.batch * ohw;
    var t = min(split * p.chunk, total);
    let t_end = min(t + p.chunk, total);
    var b = t / ohw;
    var oy = (t % ohw) / p.out_w;
    var ox = t % p.out_w;
    // Walk the chunk one output row at a time so the inner loop only increments addresses.
    while (t < t_end) {
        let run = min(p.out_w - ox, t_end - t);
        let dbase = b * (p.out_c * ohw) + oy * p.out_w + ox;
        // This output row's input row for each column's tap, and where that row starts.
        let iy = vec4<u32>(oy) + ri - pad;
        let row_ok = iy < vec4<u32>(p.in_h);
        let xrow = vec4<u32>(b * (p.in_c * hw)) + c * hw + iy * p.in_w;
        let xcol = vec4<u32>(ox) + rj - pad;
        for (var u = 0u; u < run; u++) {
            let di = drow + vec4<u32>(dbase + u);
            let dv = vec4<f32>(src[di.x], src[di.y], src[di.z], src[di.w]);
            let ix = xcol + vec4<u32>(u);
            let ok = row_ok & (ix < vec4<u32>(p.in_w));
            let xi = select(vec4<u32>(0u), xrow + ix, ok);
            let xv = select(select(vec4<f32>(0.0),
                                   vec4<f32>(aux[xi.x], aux[xi.y], aux[xi.z], aux[xi.w]), ok),
                            vec4<f32>(1.0), is_bias);
            a0 = fma(vec4<f32>(dv.x), xv, a0);
            a1 = fma(vec4<f32>(dv.y), xv, a1);
            a2 = fma(vec4<f32>(dv.z), xv, a2);
            a3 = fma(vec4<f32>(dv.w), xv, a3);
        }
        t += run;
        ox = 0u;
        oy += 1u;
        if (oy == p.out_h) {
            oy = 0u;
            b += 1u;
        }
    }
    let q_ok = qs <= vec4<u32>(patch_v);
    weight_store(a0, os.x, qs, q_ok, split);
    weight_store(a1, os.y, qs, q_ok, split);
    weight_store(a2, os.z, qs, q_ok, split);
    weight_store(a3, os.w, qs, q_ok, split);
}

// Where gradient (o, q) goes in grads: the weight for q < patch_v, the bias for q = patch_v.
fn grad_index(o: u32, q: u32, patch_v: u32) -> u32 {
    if (q == patch_v) {
        return p.b_off + o;
    }
    return p.w_off + o * patch_v + q;
}

// One row of a backward_weight block: straight to grads with one split, otherwise to this
// split's slice of the partials (splits, out_c, patch_v + 1).
fn weight_store(acc: vec4<f32>, o: u32, qs: vec4<u32>, q_ok: vec4<bool>, split: u32) {
    if (o >= p.out_c) {
        return;
    }
    let patch_v = p.in_c * p.k * p.k;
    var idx: vec4<u32>;
    if (p.splits == 1u) {
        idx = vec4<u32>(grad_index(o, qs.x, patch_v), grad_index(o, qs.y, patch_v),
                        grad_index(o, qs.z, patch_v), grad_index(o, qs.w, patch_v));
    } else {
        idx = vec4<u32>((split * p.out_c + o) * (patch_v + 1u)) + qs;
    }
    if (q_ok.x) { dst[idx.x] = acc.x; }
    if (q_ok.y) { dst[idx.y] = acc.y; }
    if (q_ok.z) { dst[idx.z] = acc.z; }
    if (q_ok.w) { dst[idx.w] = acc.w; }
}

// Sums the split-K partials (splits, out_c, patch_v + 1) over splits, in split order, into
// grads. One invocation per (o, q); workgroups of REDUCE_WG.
@compute @workgroup_size(REDUCE_WG)
fn conv2d_backward_weight_reduce(@builtin(global_invocation_id) gid: vec3<u32>,
                                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.y * (nwg.x * REDUCE_WG) + gid.x;
    let patch_v = p.in_c * p.k * p.k;
    let slice = p.out_c * (patch_v + 1u);
    if (e >= slice) {
        return;
    }
    var sum = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        sum += src[s * slice + e];
    }
    dst[grad_index(e / (patch_v + 1u), e % (patch_v + 1u), patch_v)] = sum;
}
