// conv2d_tiled.wgsl: the three convolution GEMMs of conv2d.wgsl (same math, same uniform,
// same bindings, same outputs, `pad` honoured alike), with block tiles staged through
// workgroup memory. conv2d.wgsl keeps the register-only kernels (they win on CPU emulations
// such as lavapipe, where barriers and workgroup memory are slow); the host picks one per
// layer shape (gpu/tiles.rs, gpu/autotune.rs).
//
// Layout (f32, row-major), as conv2d.wgsl: input x (batch, in_c, in_h, in_w); weight w
// (out_c, in_c, k, k) at params[w_off..]; bias (out_c) at params[b_off..]; output y
// (batch, out_c, out_h, out_w); split-K partials (splits, out_c, patch_v + 1), summed by
// conv2d.wgsl's conv2d_backward_weight_reduce.
//
// Bindings (group 0), as conv2d.wgsl:
//   0 p    uniform Conv     shapes, offsets, tiling (host: gpu/uniforms.rs Conv, filled by
//                           gpu/ops.rs conv2d_*_tiled for one TileConfig)
//   1 dst  read_write f32   forward: y · backward_input: dx · backward_weight: grads or partials
//   2 src  read f32         forward: x · backward_input: dy · backward_weight: dy
//   3 aux  read f32         forward, backward_input: params · backward_weight: x
//
// GEMM views (C = A·B), reduction order chosen so the hoisted index arithmetic stays cheap:
//   conv2d_forward_tiled:         C[o, n] = act(bias[o] + Σ_q w[o, q]·X[q, n]), q = (c, i, j)
//   conv2d_backward_input_tiled:  C[c, n] = Σ_q w[o, c, i, j]·dy[b, o, y+pad−i, x+pad−j],
//                                 q = (o, i, j), n = (b, y, x)
//   conv2d_backward_weight_tiled: C[o, q] = Σ_t dy[b, o, t]·X[q, t] over this split's chunk of
//                                 t = (b, oy, ox), plus the bias column q = patch_v (X = 1)
//
// Tiles (pipeline-overridable constants BM, BN, BK, TM, TN; the host builds one pipeline per
// gpu/tiles.rs TileConfig and checks its rules: TM, TN ∈ {4, 8}; WG a multiple of BM, BN and
// BK; BM·BK and BK·BN multiples of WG). A workgroup of WG = (BM/TM)·(BN/TN) invocations
// computes a BM×BN tile of C, BK reduction steps at a time: each step it copies the A tile
// (BM×BK) and the B tile (BK×BN) into workgroup memory (zero outside the matrices, so every
// element is written before it is read), waits at a barrier, and every invocation adds its
// TM×TN register block from vec4 reads of the tiles; a second barrier guards the next copy.
// Invocation li = ty·NX + tx (NX = BN/TN, MY = BM/TM) owns rows (i4·MY + ty)·4 + 0..3 and
// columns (j4·NX + tx)·4 + 0..3 of the tile, so neighbouring invocations read neighbouring
// vec4s of the B tile and write neighbouring columns of C. Index arithmetic is hoisted: the
// B column an invocation copies is the same every step (WG is a multiple of BN), so its pixel
// (or tap) is decoded once, and the next step's BK reduction indices are decoded by the first
// BK invocations into a double-buffered table while the current tiles are copied.
//
// Dispatch: workgroups of WG, one per tile (backward_weight: per tile and split, split-major),
// folded into 2-D by shape::dispatch_2d; tile = wid.y · nwg.x + wid.x is uniform across the
// workgroup (so are the barriers); workgroups past the last tile return.

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
    tiles_m: u32,  // BM-row tiles of C
    tiles_n: u32,  // BN-column tiles of C
    n_tiles: u32,  // tiles_m · tiles_n (· splits for backward_weight)
    pad: u32,      // zero rows and columns on each side of the input
    act: u32,      // forward: activation applied after the bias (5: none; see `activate`)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Conv;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read> aux: array<f32>;

// The forward epilogue's activation, p.act (backend::Activation::code; 5, linear, for a
// convolution without one): the same functions as activation.wgsl's `activate`, so that a
// fused convolution and activation compute what the two kernels compute one after the other.
const SELU_SCALE: f32 = 1.0507009873554805;
const SELU_ALPHA: f32 = 1.6732632423543772;
const ELU_ALPHA: f32 = 1.0;

fn activate(x: f32) -> f32 {
    switch p.act {
        case 0u: { return max(x, 0.0); }
        case 1u: { return select(ELU_ALPHA * (exp(x) - 1.0), x, x > 0.0); }
        case 2u: { return select(SELU_SCALE * SELU_ALPHA * (exp(x) - 1.0), SELU_SCALE * x, x > 0.0); }
        case 3u: { return 1.0 / (1.0 + exp(-x)); }
        case 4u: { return tanh(clamp(x, -15.0, 15.0)); }
        default: { return x; }
    }
}

override BM: u32 = 64u;   // rows of the C tile
override BN: u32 = 64u;   // columns of the C tile
override BK: u32 = 8u;    // reduction steps per copy
override TM: u32 = 4u;    // rows of an invocation's register block (4 or 8)
override TN: u32 = 4u;    // columns of an invocation's register block (4 or 8)
override WG: u32 = (BM / TM) * (BN / TN);

// The tiles, k-major, each row of BM (BN) values padded by one vec4 so that copies along k
// fall on different banks.
var<workgroup> a_tile: array<vec4<f32>, BK * (BM / 4u + 1u)>;
var<workgroup> b_tile: array<vec4<f32>, BK * (BN / 4u + 1u)>;
// Decoded reduction indices of the current and the next step (halves of BK entries).
var<workgroup> k_tab: array<vec4<u32>, 2u * BK>;

fn a_put(kk: u32, m: u32, v: f32) {
    a_tile[kk * (BM / 4u + 1u) + m / 4u][m % 4u] = v;
}

fn b_put(kk: u32, n: u32, v: f32) {
    b_tile[kk * (BN / 4u + 1u) + n / 4u][n % 4u] = v;
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
            let a = vec4<f32>(av[i / 4u][i % 4u]);
            for (var j4 = 0u; j4 < TN / 4u; j4++) {
                (*acc)[i * 2u + j4] = fma(a, bv[j4], (*acc)[i * 2u + j4]);
            }
        }
    }
}

// Row i of this invocation's block, as an offset inside the tile.
fn block_row(i: u32, li: u32) -> u32 {
    return ((i / 4u) * (BM / TM) + li / (BN / TN)) * 4u + i % 4u;
}

// Column c of vec4 group j4 of this invocation's block, as an offset inside the tile.
fn block_col(j4: u32, c: u32, li: u32) -> u32 {
    return (j4 * (BN / TN) + li % (BN / TN)) * 4u + c;
}

// ---- forward -----------------------------------------------------------------------------

// Tap q = (c, i, j) of the forward reduction: (offset of x[c, i, j] from a window's corner,
// i, j, 1 if q is inside the reduction).
fn forward_tap(q: u32, patch_v: u32, hw: u32) -> vec4<u32> {
    let kk = p.k * p.k;
    let i = (q % kk) / p.k;
    let j = q % p.k;
    return vec4<u32>((q / kk) * hw + i * p.in_w + j, i, j, select(0u, 1u, q < patch_v));
}

@compute @workgroup_size(WG)
fn conv2d_forward_tiled(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) li: u32) {
    let tile = wid.y * nwg.x + wid.x;
    if (tile >= p.n_tiles) {
        return;
    }
    let m0 = (tile / p.tiles_n) * BM;
    let n0 = (tile % p.tiles_n) * BN;
    let ohw = p.out_h * p.out_w;
    let hw = p.in_h * p.in_w;
    let n_cols = p.batch * ohw;
    let patch_v = p.in_c * p.k * p.k;

    // The B column this invocation copies every step: output pixel (b, oy, ox), and the
    // corner of its window in x (u32 wraps where the window starts in the padding; such taps
    // fail the bounds test below).
    let bn = li % BN;
    let n_ok = n0 + bn < n_cols;
    let n = min(n0 + bn, n_cols - 1u);
    let b = n / ohw;
    let oy = (n % ohw) / p.out_w;
    let ox = n % p.out_w;
    let corner = b * p.in_c * hw + (oy - p.pad) * p.in_w + (ox - p.pad);

    var acc: array<vec4<f32>, 16>;
    if (li < BK) {
        k_tab[li] = forward_tap(li, patch_v, hw);
    }
    workgroupBarrier();
    var cur = 0u;
    for (var k0 = 0u; k0 < patch_v; k0 += BK) {
        // A: w[o, q], q fastest across invocations (contiguous reads).
        for (var e = li; e < BM * BK; e += WG) {
            let o = m0 + e / BK;
            let q = k0 + e % BK;
            var v = 0.0;
            if (o < p.out_c && q < patch_v) {
                v = aux[p.w_off + o * patch_v + q];
            }
            a_put(e % BK, e / BK, v);
        }
        // B: X[q, n] of this invocation's column.
        for (var kk = li / BN; kk < BK; kk += WG / BN) {
            let t = k_tab[cur + kk];
            let iy = oy + t.y - p.pad;
            let ix = ox + t.z - p.pad;
            var v = 0.0;
            if (n_ok && t.w != 0u && iy < p.in_h && ix < p.in_w) {
                v = src[corner + t.x];
            }
            b_put(kk, bn, v);
        }
        if (li < BK) {
            k_tab[BK - cur + li] = forward_tap(k0 + BK + li, patch_v, hw);
        }
        workgroupBarrier();
        multiply(&acc, li);
        workgroupBarrier();
        cur = BK - cur;
    }

    for (var j4 = 0u; j4 < TN / 4u; j4++) {
        for (var c = 0u; c < 4u; c++) {
            let col = n0 + block_col(j4, c, li);
            if (col >= n_cols) {
                continue;
            }
            let ybase = (col / ohw) * p.out_c * ohw + col % ohw;
            for (var i = 0u; i < TM; i++) {
                let o = m0 + block_row(i, li);
                if (o < p.out_c) {
                    dst[ybase + o * ohw] = activate(acc[i * 2u + j4][c] + aux[p.b_off + o]);
                }
            }
        }
    }
}

// ---- backward input ----------------------------------------------------------------------

// Tap q = (o, i, j) of the input-gradient reduction: (offset of dy[o, −i, −j] from a
// pixel's dy[b, 0, y+pad, x+pad] (u32, wrapping), (i << 16) | j, offset of w[o, 0, i, j]
// from w_off, 1 if q is inside the reduction).
fn input_tap(q: u32, q_len: u32) -> vec4<u32> {
    let kk = p.k * p.k;
    let o = q / kk;
    let r = q % kk;
    let i = r / p.k;
    let j = r % p.k;
    let dy_off = o * p.out_h * p.out_w - i * p.out_w - j;
    return vec4<u32>(dy_off, (i << 16u) | j, o * p.in_c * kk + r, select(0u, 1u, q < q_len));
}

@compute @workgroup_size(WG)
fn conv2d_backward_input_tiled(@builtin(workgroup_id) wid: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) li: u32) {
    let tile = wid.y * nwg.x + wid.x;
    if (tile >= p.n_tiles) {
        return;
    }
    let m0 = (tile / p.tiles_n) * BM;
    let n0 = (tile % p.tiles_n) * BN;
    let ohw = p.out_h * p.out_w;
    let hw = p.in_h * p.in_w;
    let kk_len = p.k * p.k;
    let n_cols = p.batch * hw;
    let q_len = p.out_c * kk_len;

    // The B column this invocation copies every step: input pixel (b, y, x), and where
    // dy[b, 0, y+pad, x+pad] would be.
    let bn = li % BN;
    let n_ok = n0 + bn < n_cols;
    let n = min(n0 + bn, n_cols - 1u);
    let b = n / hw;
    let y = (n % hw) / p.in_w;
    let x = n % p.in_w;
    let corner = b * p.out_c * ohw + (y + p.pad) * p.out_w + (x + p.pad);

    var acc: array<vec4<f32>, 16>;
    if (li < BK) {
        k_tab[li] = input_tap(li, q_len);
    }
    workgroupBarrier();
    var cur = 0u;
    for (var k0 = 0u; k0 < q_len; k0 += BK) {
        // A: w[o, c, i, j] for row c and tap q, q fastest across invocations.
        for (var e = li; e < BM * BK; e += WG) {
            let c = m0 + e / BK;
            let t = k_tab[cur + e % BK];
            var v = 0.0;
            if (c < p.in_c && t.w != 0u) {
                v = aux[p.w_off + c * kk_len + t.z];
            }
            a_put(e % BK, e / BK, v);
        }
        // B: dy[b, o, y+pad−i, x+pad−j] of this invocation's column (u32 wraps below zero).
        for (var kk = li / BN; kk < BK; kk += WG / BN) {
            let t = k_tab[cur + kk];
            let yy = y + p.pad - (t.y >> 16u);
            let xx = x + p.pad - (t.y & 0xffffu);
            var v = 0.0;
            if (n_ok && t.w != 0u && yy < p.out_h && xx < p.out_w) {
                v = src[corner + t.x];
            }
            b_put(kk, bn, v);
        }
        if (li < BK) {
            k_tab[BK - cur + li] = input_tap(k0 + BK + li, q_len);
        }
        workgroupBarrier();
        multiply(&acc, li);
        workgroupBarrier();
        cur = BK - cur;
    }

    for (var j4 = 0u; j4 < TN / 4u; j4++) {
        for (var c = 0u; c < 4u; c++) {
            let col = n0 + block_col(j4, c, li);
            if (col >= n_cols) {
                continue;
            }
            let xbase = (col / hw) * p.in_c * hw + col % hw;
            for (var i = 0u; i < TM; i++) {
                let ch = m0 + block_row(i, li);
                if (ch < p.in_c) {
                    dst[xbase + ch * hw] = acc[i * 2u + j4][c];
                }
            }
        }
    }
}

// ---- backward weight ---------------------------------------------------------------------

// Output pixel t = (b, oy, ox) of the weight-gradient reduction: (dy[b, 0, oy, ox]'s index,
// the corner of its window in x (u32, wrapping), (oy << 16) | ox, 1 if t < t_end).
fn weight_pixel(t: u32, t_end: u32) -> vec4<u32> {
    let ohw = p.out_h * p.out_w;
    let tc = min(t, p.batch * ohw - 1u);
    let b = tc / ohw;
    let oy = (tc % ohw) / p.out_w;
    let ox = tc % p.out_w;
    let corner = b * p.in_c * p.in_h * p.in_w + (oy - p.pad) * p.in_w + (ox - p.pad);
    return vec4<u32>(b * p.out_c * ohw + oy * p.out_w + ox, corner, (oy << 16u) | ox,
                     select(0u, 1u, t < t_end));
}

// Where gradient (o, q) goes in grads: the weight for q < patch_v, the bias for q = patch_v.
fn grad_index(o: u32, q: u32, patch_v: u32) -> u32 {
    if (q == patch_v) {
        return p.b_off + o;
    }
    return p.w_off + o * patch_v + q;
}

@compute @workgroup_size(WG)
fn conv2d_backward_weight_tiled(@builtin(workgroup_id) wid: vec3<u32>,
                                @builtin(num_workgroups) nwg: vec3<u32>,
                                @builtin(local_invocation_index) li: u32) {
    let tile_all = wid.y * nwg.x + wid.x;
    if (tile_all >= p.n_tiles) {
        return;
    }
    let per_split = p.tiles_m * p.tiles_n;
    let split = tile_all / per_split;
    let tile = tile_all % per_split;
    let m0 = (tile / p.tiles_n) * BM;
    let n0 = (tile % p.tiles_n) * BN;
    let ohw = p.out_h * p.out_w;
    let hw = p.in_h * p.in_w;
    let kk_len = p.k * p.k;
    let patch_v = p.in_c * kk_len;
    let total = p.batch * ohw;
    let t_begin = min(split * p.chunk, total);
    let t_end = min(t_begin + p.chunk, total);

    // The B column this invocation copies every step: tap q = (c, i, j), or the bias column.
    let bn = li % BN;
    let q = n0 + bn;
    let q_ok = q <= patch_v;
    let is_bias = q == patch_v;
    let qc = min(q, patch_v - 1u);
    let qi = (qc % kk_len) / p.k;
    let qj = qc % p.k;
    let q_off = (qc / kk_len) * hw + qi * p.in_w + qj;

    var acc: array<vec4<f32>, 16>;
    if (li < BK) {
        k_tab[li] = weight_pixel(t_begin + li, t_end);
    }
    workgroupBarrier();
    var cur = 0u;
    for (var k0 = t_begin; k0 < t_end; k0 += BK) {
        // A: dy[b, o, oy, ox] for row o and pixel t, t fastest across invocations.
        for (var e = li; e < BM * BK; e += WG) {
            let o = m0 + e / BK;
            let t = k_tab[cur + e % BK];
            var v = 0.0;
            if (o < p.out_c && t.w != 0u) {
                v = src[t.x + o * ohw];
            }
            a_put(e % BK, e / BK, v);
        }
        // B: X[q, t] of this invocation's column (1 in the bias column).
        for (var kk = li / BN; kk < BK; kk += WG / BN) {
            let t = k_tab[cur + kk];
            let iy = (t.z >> 16u) + qi - p.pad;
            let ix = (t.z & 0xffffu) + qj - p.pad;
            var v = 0.0;
            if (t.w != 0u && q_ok) {
                if (is_bias) {
                    v = 1.0;
                } else if (iy < p.in_h && ix < p.in_w) {
                    v = aux[t.y + q_off];
                }
            }
            b_put(kk, bn, v);
        }
        if (li < BK) {
            k_tab[BK - cur + li] = weight_pixel(k0 + BK + li, t_end);
        }
        workgroupBarrier();
        multiply(&acc, li);
        workgroupBarrier();
        cur = BK - cur;
    }

    // Straight to grads with one split, otherwise to this split's slice of the partials.
    for (var i = 0u; i < TM; i++) {
        let o = m0 + block_row(i, li);
        if (o >= p.out_c) {
            continue;
        }
        for (var j4 = 0u; j4 < TN / 4u; j4++) {
            for (var c = 0u; c < 4u; c++) {
                let col = n0 + block_col(j4, c, li);
                if (col > patch_v) {
                    continue;
                }
                var idx = (split * p.out_c + o) * (patch_v + 1u) + col;
                if (p.splits == 1u) {
                    idx = grad_index(o, col, patch_v);
                }
                dst[idx] = acc[i * 2u + j4][c];
            }
        }
    }
}
