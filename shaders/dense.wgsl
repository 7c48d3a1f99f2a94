// dense.wgsl: fully connected layers as one strided, register-tiled matrix product.
//
// Layout (f32, row-major): input x (batch, in_f); weight w (out_f, in_f) at params[w_off..];
// bias (out_f) at params[b_off..]; output y (batch, out_f).
//
// All three entry points compute C[m, n] = Σ_k A[m, k]·B[k, n] with
//   A[m, k] = a[a_off + m·a_sm + k·a_sk],  B[k, n] = bsrc[b_off + k·b_sk + n·b_sn],
//   C[m, n] → dst[c_off + m·c_sm + n];
// the host (gpu/ops.rs dense_*) picks the strides:
//   dense_forward:          A = x (batch×in_f), B = wᵀ, C = y, plus bias[n] = bsrc[bias_off + n]
//   dense_backward_input:   A = dy (batch×out_f), B = w, C = dx
//   dense_backward_weight:  A = dyᵀ (out_f×batch), B = x, C = dw in grads, plus one extra
//                           column n = n_real whose B is 1: its sums Σ_b dy[b, o] are the bias
//                           gradient, stored at dst[bias_dst + m]
//
// Bindings (group 0):
//   0 p     uniform Mm        sizes, strides, offsets, tiling (host: gpu/uniforms.rs Mm,
//                             filled by gpu/ops.rs dense_*)
//   1 dst   read_write f32    y, dx, or grads
//   2 a     read f32          x or dy
//   3 bsrc  read f32          params or x
//
// One invocation computes a 4×4 register block (rows and columns 8 apart), a workgroup of 64
// (8×8) a 32×32 tile of C; no shared memory, no barriers.
// Dispatch: workgroups of WG = 64 (the host reads it from @workgroup_size), one per tile,
// folded into 2-D by shape::dispatch_2d; lin = gid.y * (nwg.x * WG) + gid.x, tile = lin / WG;
// invocations past the last tile return.

struct Mm {
    m: u32,
    n: u32,          // columns of C, the bias column included
    k: u32,
    ones_col: u32,   // 1: the last column of C is the bias-gradient column (B = 1 there)
    a_off: u32,
    a_sm: u32,
    a_sk: u32,
    b_off: u32,
    b_sk: u32,
    b_sn: u32,
    c_off: u32,
    c_sm: u32,
    bias_off: u32,   // forward: bias offset in bsrc; NO_BIAS otherwise
    bias_dst: u32,   // backward_weight: bias gradient offset in dst
    tiles_n: u32,
    n_tiles: u32,
}

@group(0) @binding(0) var<uniform> p: Mm;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> bsrc: array<f32>;

const WG: u32 = 64u;
const TILE: u32 = 32u;
const NO_BIAS: u32 = 0xffffffffu;

fn spread(first: u32) -> vec4<u32> {
    return vec4<u32>(first, first + 8u, first + 16u, first + 24u);
}

// The product block of invocation `lin`, stored to dst.
fn matmul_block(lin: u32) {
    let tile = lin / WG;
    if (tile >= p.n_tiles) {
        return;
    }
    let li = lin % WG;
    let n_real = p.n - p.ones_col;
    let ms = spread((tile / p.tiles_n) * TILE + li / 8u);
    let arow = vec4<u32>(p.a_off) + min(ms, vec4<u32>(p.m - 1u)) * p.a_sm;
    let ns = spread((tile % p.tiles_n) * TILE + li % 8u);
    let is_ones = (ns == vec4<u32>(n_real)) & vec4<bool>(p.ones_col == 1u);
    let bcol = vec4<u32>(p.b_off) + min(ns, vec4<u32>(n_real - 1u)) * p.b_sn;

    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var k = 0u; k < p.k; k++) {
        let ai = arow + vec4<u32>(k * p.a_sk);
        let av = vec4<f32>(a[ai.x], a[ai.y], a[ai.z], a[ai.w]);
        let bi = bcol + vec4<u32>(k * p.b_sk);
        let bv = select(vec4<f32>(bsrc[bi.x], bsrc[bi.y], bsrc[bi.z], bsrc[bi.w]),
                        vec4<f32>(1.0), is_ones);
        c0 = fma(vec4<f32>(av.x), bv, c0);
        c1 = fma(vec4<f32>(av.y), bv, c1);
        c2 = fma(vec4<f32>(av.z), bv, c2);
        c3 = fma(vec4<f32>(av.w), bv, c3);
    }
    var bias = vec4<f32>(0.0);
    if (p.bias_off != NO_BIAS) {
        let bi = vec4<u32>(p.bias_off) + min(ns, vec4<u32>(n_real - 1u));
        bias = vec4<f32>(bsrc[bi.x], bsrc[bi.y], bsrc[bi.z], bsrc[bi.w]);
    }
    let n_ok = ns < vec4<u32>(p.n);
    store_row(c0 + bias, ms.x, ns, n_ok, is_ones);
    store_row(c1 + bias, ms.y, ns, n_ok, is_ones);
    store_row(c2 + bias, ms.z, ns, n_ok, is_ones);
    store_row(c3 + bias, ms.w, ns, n_ok, is_ones);
}

fn store_row(v: vec4<f32>, m: u32, ns: vec4<u32>, n_ok: vec4<bool>, is_ones: vec4<bool>) {
    if (m >= p.m) {
        return;
    }
    let row = p.c_off + m * p.c_sm;
    let ci = select(vec4<u32>(row) + ns, vec4<u32>(p.bias_dst + m), is_ones);
    if (n_ok.x) { dst[ci.x] = v.x; }
    if (n_ok.y) { dst[ci.y] = v.y; }
    if (n_ok.z) { dst[ci.z] = v.z; }
    if (n_ok.w) { dst[ci.w] = v.w; }
}

@compute @workgroup_size(WG)
fn dense_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    matmul_block(gid.y * (nwg.x * WG) + gid.x);
}

@compute @workgroup_size(WG)
fn dense_backward_input(@builtin(global_invocation_id) gid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>) {
    matmul_block(gid.y * (nwg.x * WG) + gid.x);
}

@compute @workgroup_size(WG)
fn dense_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>) {
    matmul_block(gid.y * (nwg.x * WG) + gid.x);
}
