// dense_tiled.wgsl: the strided matrix product of dense.wgsl (same math, same uniform, same
// bindings, same outputs), with block tiles staged through workgroup memory. dense.wgsl keeps
// the register-only kernel; the host picks one per layer shape (gpu/tiles.rs, gpu/autotune.rs).
//
// Layout (f32, row-major), as dense.wgsl: input x (batch, in_f); weight w (out_f, in_f) at
// params[w_off..]; bias (out_f) at params[b_off..]; output y (batch, out_f). Every entry point
// computes C[m, n] = Σ_k A[m, k]·B[k, n] with
//   A[m, k] = a[a_off + m·a_sm + k·a_sk],  B[k, n] = bsrc[b_off + k·b_sk + n·b_sn],
//   C[m, n] → dst[c_off + m·c_sm + n]  (dense_forward: plus bias[n] = bsrc[bias_off + n];
//   dense_backward_weight: the column n = n_real has B = 1, its sums go to dst[bias_dst + m]).
//
// Bindings (group 0), as dense.wgsl:
//   0 p     uniform Mm        sizes, strides, offsets, tiling (host: gpu/uniforms.rs Mm,
//                             filled by gpu/ops.rs dense_*_tiled for one TileConfig)
//   1 dst   read_write f32    y, dx, or grads
//   2 a     read f32          x or dy
//   3 bsrc  read f32          params or x
//
// Tiles: as conv2d_tiled.wgsl (pipeline-overridable BM, BN, BK, TM, TN; WG = (BM/TM)·(BN/TN);
// per BK-step copies of the A and B tiles into workgroup memory between two barriers; a TM×TN
// register block per invocation from vec4 reads). Copies walk the matrix along whichever
// index has unit stride (k or m for A, n or k for B), so global reads are contiguous for
// every entry point's layout.
//
// Dispatch: workgroups of WG, one per tile, folded into 2-D by shape::dispatch_2d;
// tile = wid.y · nwg.x + wid.x (uniform across the workgroup); workgroups past the last tile
// return.

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

override BM: u32 = 64u;
override BN: u32 = 64u;
override BK: u32 = 8u;
override TM: u32 = 4u;
override TN: u32 = 4u;
override WG: u32 = (BM / TM) * (BN / TN);
const NO_BIAS: u32 = 0xffffffffu;

var<workgroup> a_tile: array<vec4<f32>, BK * (BM / 4u + 1u)>;
var<workgroup> b_tile: array<vec4<f32>, BK * (BN / 4u + 1u)>;

fn a_put(kk: u32, m: u32, v: f32) {
    a_tile[kk * (BM / 4u + 1u) + m / 4u][m % 4u] = v;
}

fn b_put(kk: u32, n: u32, v: f32) {
    b_tile[kk * (BN / 4u + 1u) + n / 4u][n % 4u] = v;
}

// A[m, k], 0 outside the matrix.
fn a_at(m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) {
        return 0.0;
    }
    return a[p.a_off + m * p.a_sm + k * p.a_sk];
}

// B[k, n] (1 in the bias-gradient column), 0 outside the matrix.
fn b_at(k: u32, n: u32) -> f32 {
    let n_real = p.n - p.ones_col;
    if (k >= p.k || n >= p.n) {
        return 0.0;
    }
    if (n == n_real) {
        return 1.0;
    }
    return bsrc[p.b_off + k * p.b_sk + n * p.b_sn];
}

// acc[i·2 + j4] += A rows × B columns of this invocation's block over the BK staged steps.
fn multiply(acc: ptr<function, array<vec4<f32>, 16>>, li: u32) {
    let tx = li % (BN / TN);
    let ty = li / (BN / TN);
    for (var kk = 0u; kk < BK; kk++) {
        var av: array<vec4<f32>, 2>;
        var bv: array<vec4<f32>, 2>;
        for (var i4 = 0u; i4 < TM / 4u; i4++) {
            av[i4] = a_tile[kk * (BM / 4u + 1u) + i4 * (BM / TM) + ty];
        }
        for (var j4 = 0u; j4 < TN / 4u; j4++) {
            bv[j4] = b_tile[kk * (BN / 4u + 1u) + j4 * (BN / TN) + tx];
        }
        for (var i = 0u; i < TM; i++) {
            let av_i = vec4<f32>(av[i / 4u][i % 4u]);
            for (var j4 = 0u; j4 < TN / 4u; j4++) {
                (*acc)[i * 2u + j4] = fma(av_i, bv[j4], (*acc)[i * 2u + j4]);
            }
        }
    }
}

// The product tile of workgroup `tile`, stored to dst.
fn matmul_tile(tile: u32, li: u32) {
    let m0 = (tile / p.tiles_n) * BM;
    let n0 = (tile % p.tiles_n) * BN;
    var acc: array<vec4<f32>, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var e = li; e < BM * BK; e += WG) {
            if (p.a_sk == 1u) {
                a_put(e % BK, e / BK, a_at(m0 + e / BK, k0 + e % BK));
            } else {
                a_put(e / BM, e % BM, a_at(m0 + e % BM, k0 + e / BM));
            }
        }
        for (var e = li; e < BK * BN; e += WG) {
            if (p.b_sn == 1u) {
                b_put(e / BN, e % BN, b_at(k0 + e / BN, n0 + e % BN));
            } else {
                b_put(e % BK, e / BK, b_at(k0 + e % BK, n0 + e / BK));
            }
        }
        workgroupBarrier();
        multiply(&acc, li);
        workgroupBarrier();
    }

    let n_real = p.n - p.ones_col;
    for (var j4 = 0u; j4 < TN / 4u; j4++) {
        for (var c = 0u; c < 4u; c++) {
            let col = n0 + (j4 * (BN / TN) + li % (BN / TN)) * 4u + c;
            if (col >= p.n) {
                continue;
            }
            var bias = 0.0;
            if (p.bias_off != NO_BIAS) {
                bias = bsrc[p.bias_off + col];
            }
            for (var i = 0u; i < TM; i++) {
                let row = m0 + ((i / 4u) * (BM / TM) + li / (BN / TN)) * 4u + i % 4u;
                if (row >= p.m) {
                    continue;
                }
                var idx = p.c_off + row * p.c_sm + col;
                if (p.ones_col == 1u && col == n_real) {
                    idx = p.bias_dst + row;
                }
                dst[idx] = acc[i * 2u + j4][c] + bias;
            }
        }
    }
}

@compute @workgroup_size(WG)
fn dense_forward_tiled(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) li: u32) {
    let tile = wid.y * nwg.x + wid.x;
    if (tile < p.n_tiles) {
        matmul_tile(tile, li);
    }
}

@compute @workgroup_size(WG)
fn dense_backward_input_tiled(@builtin(workgroup_id) wid: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) li: u32) {
    let tile = wid.y * nwg.x + wid.x;
    if (tile < p.n_tiles) {
        matmul_tile(tile, li);
    }
}

@compute @workgroup_size(WG)
fn dense_backward_weight_tiled(@builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) li: u32) {
    let tile = wid.y * nwg.x + wid.x;
    if (tile < p.n_tiles) {
        matmul_tile(tile, li);
    }
}
